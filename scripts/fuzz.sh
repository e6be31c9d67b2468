#!/usr/bin/env bash
# Runs the libFuzzer targets built by `make fuzz-build` (docs/reliability.md, "Fuzzing").
#
#   scripts/fuzz.sh smoke SECONDS     every target SECONDS from the checked-in corpus only (new
#                                     inputs go to a scratch dir and are dropped); fails on the
#                                     first crash, leak, timeout or invariant failure
#   scripts/fuzz.sh campaign SECONDS  every target SECONDS, growing build/fuzz/corpus/<target>
#                                     (seeded from fuzz/corpus); FUZZ_PARALLEL targets at a time
#
# FUZZ_TARGETS (space-separated short names) restricts the run. FUZZ_RUNS=N stops each target
# after N executions (libFuzzer's -runs), SECONDS still capping it: the 10-million campaign is
# `FUZZ_RUNS=10000000 scripts/fuzz.sh campaign 14400`. Each run's log is
# build/fuzz/logs/<target>.log, a crash input build/fuzz/artifacts/<target>/crash-*; the table
# of executions and coverage (libFuzzer's final cov/ft and stat::number_of_executed_units) is
# printed and written to build/fuzz/<mode>.md.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: scripts/fuzz.sh smoke|campaign SECONDS}
SECONDS_EACH=${2:?usage: scripts/fuzz.sh smoke|campaign SECONDS}
ALL="payload npy prefill client http config calibration gzip trace trace_import space"
TARGETS=${FUZZ_TARGETS:-$ALL}
PARALLEL=${FUZZ_PARALLEL:-1}
BIN=build/fuzz/fuzz
mkdir -p build/fuzz/logs build/fuzz/artifacts

run_one() {
  local t=$1 work
  if [ "$MODE" = smoke ]; then
    work=$(mktemp -d)
  else
    work=build/fuzz/corpus/$t
    mkdir -p "$work"
    cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null
  fi
  mkdir -p build/fuzz/artifacts/"$t"
  # 8 KiB inputs reach every shape at the small geometries; -timeout flags a hang (a slow input
  # is a bug too), -rss_limit_mb a runaway allocation.
  "$BIN/${t}_fuzz" -max_total_time="$SECONDS_EACH" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/"$t"/ "$work" fuzz/corpus/"$t" \
    > build/fuzz/logs/"$t".log 2>&1
  local rc=$?
  [ "$MODE" = smoke ] && rm -rf "$work"
  return $rc
}

start=$(date +%s)
failed=()
pids=()
names=()
for t in $TARGETS; do
  [ -x "$BIN/${t}_fuzz" ] || { echo "fuzz: $BIN/${t}_fuzz missing (make fuzz-build)" >&2; exit 2; }
  run_one "$t" &
  pids+=($!)
  names+=("$t")
  if [ ${#pids[@]} -ge "$PARALLEL" ]; then
    wait "${pids[0]}" || failed+=("${names[0]}")
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed+=("${names[$i]}"); done
elapsed=$(($(date +%s) - start))

table=build/fuzz/$MODE.md
{
  echo "| target | seconds | executions | exec/s | cov | ft | corpus |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for t in $TARGETS; do
    log=build/fuzz/logs/$t.log
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    line=$(grep -E '^#[0-9]+' "$log" | grep -E 'DONE|cov:' | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$line")
    rate=$([ -n "$secs" ] && [ "${secs:-0}" -gt 0 ] && echo $((${execs:-0} / secs)) || echo "")
    echo "| $t | ${secs:-?} | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} |"
  done
} > "$table"
cat "$table"
echo "fuzz $MODE: ${#failed[@]} failed, ${elapsed} s in all (${SECONDS_EACH} s per target, $PARALLEL at a time)"
if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    echo "--- $t (build/fuzz/logs/$t.log):" >&2
    grep -E 'invariant failed|ERROR|runtime error|Test unit written' build/fuzz/logs/"$t".log >&2
    # The input itself, so that a failure on a CI machine can be replayed anywhere:
    #   base64 -d > crash && build/fuzz/fuzz/<target>_fuzz crash
    for a in build/fuzz/artifacts/"$t"/*; do
      [ -f "$a" ] && [ "$(stat -c %s "$a")" -le 16384 ] && echo "$(basename "$a") base64: $(base64 -w0 "$a")" >&2
    done
  done
  exit 1
fi
