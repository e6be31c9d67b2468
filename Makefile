# The two commands of the README:
#   make run   install deps, build Release, run the main job on its embedded default
#   make test  install deps, build, run every test
JOBS ?= $(shell nproc)
.PHONY: deps build run demo matrix test test-asan tsan-e2e thread-safety soak bench perf-proxy \
  e2e-tpot fuzz-build fuzz fuzz-smoke format clean

deps:
	./scripts/install-deps.sh

build: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

run: build
	./build/release/tools/eldr/eldr simulate

# The paper's matrix and ablations over 5 seeds (mean and range; roughly half an hour on 2 cores),
# with per-seed JSON and CSV rows and plots in build/results.
matrix: build
	mkdir -p build/results
	./build/release/tools/eldr/eldr simulate --matrix paper --seeds 5 --seed 11 \
	  --json build/results/matrix.json --csv build/results/matrix.csv | tee build/results/matrix.txt
	./build/release/tools/eldr/eldr simulate --json build/results/default.json \
	  --requests-csv build/results/default_requests.csv > /dev/null
	/usr/bin/python3 python/plot_results.py build/results/matrix.json build/results \
	  build/results/default_requests.csv

# Fit on the shipped GPT-OSS-20B traces and replay them through every policy.
demo: build
	./scripts/demo.sh build/release/tools/eldr/eldr

test: build
	ctest --preset release -j $(JOBS)

test-asan: deps
	cmake --preset asan >/dev/null
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j $(JOBS)

# The proxy's end-to-end suites under ThreadSanitizer (in CI, after make test-asan: about 9 min
# on 2 cores). halt_on_error: a race report aborts the process, which the suites' liveness and
# shutdown checks catch.
tsan-e2e: deps
	cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DELDR_SANITIZE=thread \
	  -DELDR_BUILD_TESTS=OFF -DELDR_BUILD_BENCH=OFF "-DCMAKE_CXX_FLAGS=-Wno-error=tsan -Wno-tsan" \
	  >/dev/null
	cmake --build build/tsan --target eldr -j $(JOBS)
	for t in e2e faults engines capture; do \
	  TSAN_OPTIONS="halt_on_error=1 $${TSAN_OPTIONS:-}" \
	    /usr/bin/python3 tests/e2e/$${t}_test.py build/tsan/tools/eldr/eldr || exit 1; \
	done

# clang's -Wthread-safety (and -beta) as errors over the libraries, tools and tests: every member
# guarded by an eldr::Mutex (eldr/mutex.h) is checked at compile time (docs/reliability.md,
# "Thread-safety lane"; about 9 min on 2 cores from a clean build/thread-safety).
thread-safety:
	ELDR_CLANG_DEPS=1 ./scripts/install-deps.sh
	cmake --preset thread-safety >/dev/null
	cmake --build --preset thread-safety -j $(JOBS)

# The router over emulated engines at a steady rate with a fault mix, sampling RSS, fds, threads
# and the in-flight gauges each second (tests/soak/soak.py; docs/reliability.md, "Soak"). Fails on
# resource growth, a gauge not back at zero, or a request without a well-formed answer.
SOAK_SECONDS ?= 3600
SOAK_RATE ?= 20
SOAK_OUT ?= build/soak
soak: build
	/usr/bin/python3 tests/soak/soak.py build/release/tools/eldr/eldr --seconds $(SOAK_SECONDS) \
	  --rate $(SOAK_RATE) --out $(SOAK_OUT)
	/usr/bin/python3 scripts/plot_soak.py $(SOAK_OUT)/soak.csv $(SOAK_OUT)/soak.png

bench: build
	./build/release/bench/eldr_bench

# Proxy overhead and throughput against nginx (docs/perf.md; installs nginx and wrk).
perf-proxy: build
	ELDR_PERF_DEPS=1 ./scripts/install-deps.sh
	./scripts/perf_proxy.sh build/release/tools/eldr/eldr

# ELDR vs the baselines through the real proxy and emulated engines, next to the simulator
# (~4 min; docs/perf.md).
e2e-tpot: build
	./scripts/e2e_tpot.sh build/release/tools/eldr/eldr

# libFuzzer (clang, ASan+UBSan) on every parser of outside input (docs/reliability.md, "Fuzzing").
# Only the fuzz targets are built: clang 14 cannot build the Beast coroutine files with -g under
# the sanitizers ("Cannot represent a difference across sections"), and none of them is needed.
#   make fuzz-smoke              every target FUZZ_SMOKE_SECONDS from the checked-in corpus (CI)
#   make fuzz FUZZ_SECONDS=3600  the long campaign, FUZZ_PARALLEL targets at a time, growing
#                                build/fuzz/corpus; the table lands in build/fuzz/campaign.md;
#                                FUZZ_RUNS=10000000 stops each target at 10 M executions
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_PARALLEL ?= 1
FUZZ_RUNS ?=
fuzz-build:
	ELDR_FUZZ_DEPS=1 ./scripts/install-deps.sh
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS) --target fuzz_targets

fuzz: fuzz-build
	FUZZ_PARALLEL=$(FUZZ_PARALLEL) FUZZ_RUNS=$(FUZZ_RUNS) ./scripts/fuzz.sh campaign $(FUZZ_SECONDS)

fuzz-smoke: fuzz-build
	FUZZ_PARALLEL=$(FUZZ_PARALLEL) ./scripts/fuzz.sh smoke $(FUZZ_SMOKE_SECONDS)

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf build
