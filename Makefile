# The two commands of the README:
#   make run   install deps, build Release, run the main job on its embedded default
#   make test  install deps, build, run every test
JOBS ?= $(shell nproc)
.PHONY: deps build run test test-asan bench format clean

deps:
	./scripts/install-deps.sh

build: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

run: build
	./scripts/demo.sh build/release/tools/eldr/eldr

test: build
	ctest --preset release -j $(JOBS)

test-asan: deps
	cmake --preset asan >/dev/null
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j $(JOBS)

bench: build
	./build/release/bench/eldr_bench

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf build
