#!/usr/bin/env bash
# Mutation check (docs/reliability.md, "Mutation check"): plants each bug of
# scripts/mutations/*.patch in turn with `git apply`, rebuilds the release tree, runs the test
# suite and records which tests fail, then reverts the patch. A bug that no test catches is
# reported as NOT CAUGHT and makes the script exit 1. Not in CI: each bug costs a rebuild and a
# whole ctest run (about 4 minutes on 2 cores).
#
# Usage: scripts/mutation_check.sh [PATCH...]        (default: every scripts/mutations/*.patch)
#   BUILD=build/release  JOBS=2  OUT=build/mutation  CTEST_ARGS="-R ..." (narrow the suite)
#   SOAK_SECONDS=120: also run the soak (tests/soak/soak.py) that long against each bug
# Needs a clean src/ and include/ (the patches apply to the committed code). Results:
# OUT/results.txt, one line a bug: "NAME: caught by TEST, TEST..." or "NAME: NOT CAUGHT".
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
JOBS=${JOBS:-2}
OUT=${OUT:-build/mutation}
mkdir -p "$OUT"
if ! git diff --quiet HEAD -- src include tools; then
  echo "mutation_check: src/, include/ or tools/ has uncommitted changes; commit or stash them" >&2
  exit 2
fi
patches=("$@")
[ ${#patches[@]} -eq 0 ] && patches=(scripts/mutations/*.patch)
current=""
revert() { [ -n "$current" ] && git apply -R "$current" && current=""; }
trap 'revert; exit 130' INT TERM
: > "$OUT/results.txt"
missed=0
for p in "${patches[@]}"; do
  name=$(basename "$p" .patch)
  git apply "$p" || { echo "$name: does not apply" | tee -a "$OUT/results.txt"; missed=1; continue; }
  current=$p
  start=$(date +%s)
  if ! cmake --build "$BUILD" -j "$JOBS" > "$OUT/$name.build.log" 2>&1; then
    echo "$name: does not build (see $OUT/$name.build.log)" | tee -a "$OUT/results.txt"
    revert
    missed=1
    continue
  fi
  # shellcheck disable=SC2086
  ctest --test-dir "$BUILD" -j "$JOBS" ${CTEST_ARGS:-} > "$OUT/$name.ctest.log" 2>&1
  failed=$(sed -n 's/^[0-9]*:\(.*\)$/\1/p' "$BUILD/Testing/Temporary/LastTestsFailed.log" \
             2>/dev/null | paste -sd, - | sed 's/,/, /g')
  if grep -q "100% tests passed" "$OUT/$name.ctest.log"; then failed=""; fi
  failed=$(echo "$failed" | sed 's/  # GetParam() = "[^"]*"//g')
  if [ -n "${SOAK_SECONDS:-}" ]; then
    if ! /usr/bin/python3 tests/soak/soak.py "$BUILD/tools/eldr/eldr" --seconds "$SOAK_SECONDS" \
         --out "$OUT/$name.soak" > "$OUT/$name.soak.log" 2>&1; then
      failed="${failed:+$failed, }soak ($(grep -m1 FAIL "$OUT/$name.soak.log" | cut -c1-120))"
    fi
  fi
  if [ -n "$failed" ]; then
    echo "$name: caught by $failed ($(( $(date +%s) - start )) s)" | tee -a "$OUT/results.txt"
  else
    echo "$name: NOT CAUGHT ($(( $(date +%s) - start )) s)" | tee -a "$OUT/results.txt"
    missed=1
  fi
  revert
done
trap - INT TERM
cmake --build "$BUILD" -j "$JOBS" > "$OUT/restore.build.log" 2>&1 || echo "rebuild failed" >&2
exit $missed
