#!/usr/bin/env bash
# End-to-end checks of the eldr CLI: the fit/route path on the shipped data, and a clear error
# with a non-zero exit for every kind of bad input.
set -uo pipefail
ELDR=$1
DATA=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0; passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect_error NEEDLE CMD...: the command must exit non-zero and print NEEDLE on stderr.
expect_error() {
  local needle=$1; shift
  if "$@" >"$T/out" 2>"$T/err"; then bad "succeeded: $*"; return; fi
  grep -q -- "$needle" "$T/err" && ok || { bad "no '$needle' in: $(cat "$T/err")"; }
}

"$ELDR" fit -i "$DATA/calib.jsonl" -k 8 -o "$T/space.json" -q && ok || bad "fit failed"
grep -q '"format":"eldr.signature_space"' "$T/space.json" && ok || bad "no format field"
"$ELDR" fit -i "$DATA/calib.jsonl" -k 8 -o "$T/space2.json" -q
cmp -s "$T/space.json" "$T/space2.json" && ok || bad "fit is not deterministic"
"$ELDR" route -s "$T/space.json" -i "$DATA/heldout.jsonl" --arrivals 600 >"$T/route" 2>&1 \
  && ok || bad "route failed: $(cat "$T/route")"
for p in rr random jsq p2c domain eldr; do
  grep -q "^$p " "$T/route" && ok || bad "route output lacks $p"
done

expect_error "cannot open" "$ELDR" fit -i "$T/missing.jsonl" -o "$T/x.json"
printf '{"format":"eldr.calibration","version":1,"model":"gpt-oss-20b"}\n{"prefill": [[1,2]]}\n' >"$T/short.jsonl"
expect_error "line 2" "$ELDR" fit -i "$T/short.jsonl" -o "$T/x.json"
printf 'garbage\n' >"$T/garbage.jsonl"
expect_error "not valid JSON" "$ELDR" fit -i "$T/garbage.jsonl" -o "$T/x.json" -m gpt-oss-20b
expect_error "unknown model" "$ELDR" fit -i "$DATA/calib.jsonl" -o "$T/x.json" -m llama-3
expect_error "calibration data for GPT-OSS-20B, not Qwen3-30B-A3B" "$ELDR" fit -i "$DATA/calib.jsonl" -o "$T/x.json" -m qwen3-30b-a3b
expect_error "cannot fill k" "$ELDR" fit -i "$DATA/heldout.jsonl" -o "$T/x.json" -k 1000
[ ! -e "$T/x.json" ] && ok || bad "a failed fit left an output file"
# A signature space for a different decoder count or model is refused by route.
"$ELDR" fit -i "$DATA/calib.jsonl" -k 4 -o "$T/k4.json" -q
sed 's/"model":"gpt-oss-20b"/"model":"qwen3-30b-a3b"/' "$T/k4.json" >"$T/other.json"
expect_error "fitted for Qwen3-30B-A3B" "$ELDR" route -s "$T/other.json" -i "$DATA/heldout.jsonl"
head -c 300 "$T/k4.json" >"$T/trunc.json"
expect_error "not valid JSON" "$ELDR" route -s "$T/trunc.json" -i "$DATA/heldout.jsonl"
expect_error "unknown policy" "$ELDR" route -s "$T/k4.json" -i "$DATA/heldout.jsonl" --policies foo
expect_error "tau must be finite" "$ELDR" route -s "$T/k4.json" -i "$DATA/heldout.jsonl" --tau -1

# The simulator: a short run prints every policy; bad options are refused clearly.
"$ELDR" simulate -m gpt-oss-120b -w language -r 20 -d 5 --calibration 200 --seeds 2 \
  --json "$T/sim.json" >"$T/sim" 2>&1 && ok || bad "simulate failed: $(cat "$T/sim")"
for p in rr random jsq p2c domain eldr eldr:0.2 eldr:0.3 eldr-plus; do
  grep -q "^$p " "$T/sim" && ok || bad "simulate output lacks $p"
done
grep -q "2 seeds: mean \[min, max\]" "$T/sim" && ok || bad "simulate lacks the seed range"
# Per-seed records: 9 policies x 2 seeds, the tau variants labelled.
/usr/bin/python3 - "$T/sim.json" <<'PY' && ok || bad "simulate --json per-seed rows"
import json, sys
rows = json.load(open(sys.argv[1]))
assert len(rows) == 18, len(rows)
assert sorted({r["seed"] for r in rows}) == [1, 2]
v = {(r["policy"], r["variant"], r["tau"]) for r in rows}
assert ("eldr", "eldr:0.3", 0.3) in v and ("eldr", "", 0.1) in v and ("eldr-plus", "", 0.1) in v, v
assert all(r["distinct_experts_per_request"] > 0 and 0 < r["max_decoder_share"] <= 1 for r in rows)
PY
expect_error "eldr-plus:TAU:SLACK" "$ELDR" simulate -d 1 --policies jsq:2
expect_error "not a number" "$ELDR" simulate -d 1 --policies eldr:x
expect_error "seeds must be" "$ELDR" simulate -d 1 --seeds 0
expect_error "calibration-trace needs --trace" "$ELDR" simulate -d 1 --calibration-trace x
expect_error "unknown model" "$ELDR" simulate -m llama-3 -d 1
expect_error "no published baseline" "$ELDR" simulate -m mixtral-8x7b -d 1
expect_error "rate and duration" "$ELDR" simulate -r 0 -d 1
expect_error "cannot fill k" "$ELDR" simulate -d 1 --calibration 5
expect_error "unknown policy" "$ELDR" simulate -d 1 --calibration 100 --policies rr,fastest

# Trace import from files shaped like the ExpertFingerprinting traces (one gzipped), stats, replay.
mkdir -p "$T/tr/a" "$T/tr/b"
/usr/bin/python3 - "$T/tr" <<'PY'
import gzip, json, random, sys
random.seed(1)
def req(dataset, n):
    return {"dataset": dataset, "router_data": [
        {"token_%d" % (120 + t): {"layer_%d" % l: {"selected_experts": random.sample(range(32), 4)}
                                  for l in range(24)}} for t in range(n)]}
for i in range(6):
    d = "a" if i % 2 else "b"
    body = json.dumps(req("mmlu_test" if i % 2 else "gpqa_main", 60))
    if i % 3 == 0:
        with gzip.open("%s/%s/F%d_examples.json.gz" % (sys.argv[1], d, i), "wt") as f: f.write(body)
    else:
        open("%s/%s/F%d_examples.json" % (sys.argv[1], d, i), "w").write(body)
json.dump({"dataset": "x", "router_data": [{"token_1": {"layer_0": {"selected_experts": [1, 1, 2, 3]}}}]},
          open(sys.argv[1] + "/bad_examples.json", "w"))
PY
expect_error "need 4 selected_experts" "$ELDR" trace import -i "$T/tr" -o "$T/t.eldrtrace"
rm "$T/tr/bad_examples.json"
"$ELDR" trace import -i "$T/tr" -o "$T/t.eldrtrace" >"$T/imp" 2>&1 && ok || bad "import: $(cat "$T/imp")"
grep -q "6 requests" "$T/imp" && ok || bad "import count: $(cat "$T/imp")"
"$ELDR" trace stats "$T/t.eldrtrace" >"$T/st" 2>&1 && ok || bad "stats: $(cat "$T/st")"
grep -q "gpqa 50.0%" "$T/st" && ok || bad "stats labels: $(cat "$T/st")"
"$ELDR" simulate --trace "$DATA/trace-96.eldrtrace" -r 20 -d 5 --decode 4 --seeds 1 \
  --calibration-fraction 0.25 >"$T/rep" 2>&1 && ok || bad "replay: $(cat "$T/rep")"
grep -q "^eldr " "$T/rep" && ok || bad "replay output: $(cat "$T/rep")"
grep -q "pool 3[0-9][0-9] distinct requests replayed without replacement" "$T/rep" \
  && ok || bad "replay pool: $(cat "$T/rep")"
expect_error "use --calibration-fraction" "$ELDR" simulate --trace "$DATA/trace-96.eldrtrace" \
  -d 1 --calibration 100
expect_error "calibration_fraction" "$ELDR" simulate --trace "$DATA/trace-96.eldrtrace" -d 1 \
  --calibration-fraction 1
# Calibrate on one trace, evaluate on another; a trace of another model is refused.
"$ELDR" simulate --trace "$T/t.eldrtrace" --calibration-trace "$DATA/trace-96.eldrtrace" -r 2 \
  -d 5 --decode 4 --seeds 1 --policies jsq,eldr >"$T/cross" 2>&1 && ok || bad "cross: $(cat "$T/cross")"
grep -q "6 calibrat\|calibrating (from" "$T/cross" && ok || bad "cross calibration: $(cat "$T/cross")"
grep -q "small\|overlap" "$T/cross" && ok || bad "no small-pool warning: $(cat "$T/cross")"
mkdir -p "$T/empty"
expect_error "no .*_examples" "$ELDR" trace import -i "$T/empty" -o "$T/none.eldrtrace"
head -c 100 "$DATA/trace-96.eldrtrace" >"$T/cut.eldrtrace"
expect_error "trace" "$ELDR" trace stats "$T/cut.eldrtrace"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
