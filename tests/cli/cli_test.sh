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
expect_error "tau must be in \[0, 2\]" "$ELDR" route -s "$T/k4.json" -i "$DATA/heldout.jsonl" --tau -1
# Serve flags are judged as the config is: no sentinel value slips through.
expect_error "threads must be in" "$ELDR" serve --threads -1 --prefill http://127.0.0.1:1 \
  --decode http://127.0.0.1:2 --policy jsq --check
expect_error "tau must be in \[0, 2\]" "$ELDR" serve --tau 5 --prefill http://127.0.0.1:1 \
  --decode http://127.0.0.1:2 --policy jsq --check
expect_error "plus_slack must be" "$ELDR" serve --plus-slack -1 --prefill http://127.0.0.1:1 \
  --decode http://127.0.0.1:2 --policy jsq --check
expect_error "max_in_flight must be" "$ELDR" serve --max-in-flight 0 --prefill http://127.0.0.1:1 \
  --decode http://127.0.0.1:2 --policy jsq --check
expect_error "max_retries must be" "$ELDR" serve --max-retries -1 --prefill http://127.0.0.1:1 \
  --decode http://127.0.0.1:2 --policy jsq --check
expect_error "retry_jitter_factor must be" "$ELDR" serve --retry-jitter-factor 2 \
  --prefill http://127.0.0.1:1 --decode http://127.0.0.1:2 --policy jsq --check
expect_error "request_timeout_ms must be" "$ELDR" serve --request-timeout-ms -5 \
  --prefill http://127.0.0.1:1 --decode http://127.0.0.1:2 --policy jsq --check
expect_error "breaker_success_threshold must be" "$ELDR" serve --breaker-success-threshold 0 \
  --prefill http://127.0.0.1:1 --decode http://127.0.0.1:2 --policy jsq --check
expect_error "timeouts must be" "$ELDR" serve --client-timeout-ms 0 \
  --prefill http://127.0.0.1:1 --decode http://127.0.0.1:2 --policy jsq --check

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
expect_error "eldr-plus:TAU.:SLACK.:SQRT_SLACK" "$ELDR" simulate -d 1 --policies jsq:2
expect_error "not a number" "$ELDR" simulate -d 1 --policies eldr:x
expect_error "seeds must be" "$ELDR" simulate -d 1 --seeds 0
expect_error "calibration-trace needs --trace" "$ELDR" simulate -d 1 --calibration-trace x
expect_error "unknown model" "$ELDR" simulate -m llama-3 -d 1
expect_error "rate and duration" "$ELDR" simulate -r 0 -d 1
expect_error "cannot fill k" "$ELDR" simulate -d 1 --calibration 5
expect_error "unknown policy" "$ELDR" simulate -d 1 --calibration 100 --policies rr,fastest
# --refit: each eldr / eldr-plus policy also runs refitted, on the same run; --mix-drift drifts the mix.
"$ELDR" simulate -m gpt-oss-20b -r 20 -d 12 --calibration 200 --seeds 1 --policies jsq,eldr:0.2,eldr-plus \
  --refit --refit-interval 4 --refit-window 4 --refit-min 32 --mix-drift 0.5 --json "$T/refit.json" \
  >"$T/refit" 2>&1 && ok || bad "simulate --refit failed: $(cat "$T/refit")"
for p in jsq eldr:0.2 eldr:0.2+refit eldr-plus eldr-plus+refit; do
  grep -q "^$p " "$T/refit" && ok || bad "simulate --refit output lacks $p"
done
grep -q "^  eldr-plus+refit  *[0-9]* refits swapped, [0-9]* refused" "$T/refit" && ok \
  || bad "simulate --refit lacks the refit counts: $(cat "$T/refit")"
grep -q "domain mix drifts by 0.5: legal" "$T/refit" && ok || bad "simulate lacks the drift line"
/usr/bin/python3 - "$T/refit.json" <<'PY' && ok || bad "simulate --refit --json rows"
import json, sys
rows = json.load(open(sys.argv[1]))
v = {(r["policy"], r["variant"]) for r in rows}
assert v == {("jsq", ""), ("eldr", "eldr:0.2"), ("eldr", "eldr:0.2+refit"), ("eldr-plus", ""),
             ("eldr-plus", "eldr-plus+refit")}, v
PY
expect_error "no eldr or eldr-plus" "$ELDR" simulate -d 1 --policies rr,jsq --refit
expect_error "refit-interval" "$ELDR" simulate -d 1 --refit --refit-interval 0
expect_error "min_requests must be" "$ELDR" simulate -d 1 --refit --refit-min 1
expect_error "mix_drift must be in" "$ELDR" simulate -d 1 --calibration 100 --mix-drift 1.5
expect_error "single simulations" "$ELDR" simulate --matrix paper --refit
expect_error "single simulations" "$ELDR" simulate --matrix paper --oracle-signatures
# --oracle-signatures (research): routes on each request's decode picks, and says so.
"$ELDR" simulate -m gpt-oss-20b -r 20 -d 6 --calibration 200 --seeds 1 --policies jsq,eldr \
  --oracle-signatures >"$T/oracle" 2>&1 && grep -q "own decode picks" "$T/oracle" \
  && grep -q "^eldr " "$T/oracle" && ok || bad "simulate --oracle-signatures: $(cat "$T/oracle")"
expect_error "a trace has its own mix" "$ELDR" simulate --trace "$DATA/trace-96.eldrtrace" -d 1 \
  --mix-drift 0.3

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

# Trace import tells the truth about its inputs: directory links are followed (once, cycles
# included), x_examples.json beside x_examples.json.gz is read once, ids the reader would refuse
# are refused with the file named, a cut gzip is corrupt, and the report counts what was skipped.
I="$T/inputs"  # this block's files
mkdir -p "$I/tree/a" "$I/ext"
/usr/bin/python3 - "$I" <<'PY'
import gzip, json, random, sys
random.seed(2)
def req(dataset, n, bad=None):
    toks = [{"token_%d" % (50 + t): {"layer_%d" % l: {"selected_experts": random.sample(range(32), 4)}
                                     for l in range(24)}} for t in range(n)]
    if bad:
        toks[3]["token_53"]["layer_5"]["selected_experts"] = bad
    return json.dumps({"dataset": dataset, "router_data": toks})
t = sys.argv[1]
for i in range(3):
    open("%s/tree/a/A%d_examples.json" % (t, i), "w").write(req("gpqa_main", 60))
with gzip.open("%s/tree/a/G_examples.json.gz" % t, "wt") as f: f.write(req("gpqa_main", 60))
for i in range(2):  # reached only through the link tree/linked -> ext
    open("%s/ext/E%d_examples.json" % (t, i), "w").write(req("mmlu_x", 60))
open("%s/tree/summary_examples.json" % t, "w").write(json.dumps([{"dataset": "gpqa_main"}]))
open("%s/tree/short_examples.json" % t, "w").write(req("gpqa_main", 20))
open("%s/rep.json" % t, "w").write(req("gpqa_main", 60, bad=[7, 9, 7, 1]))
open("%s/range.json" % t, "w").write(req("gpqa_main", 60, bad=[7, 9, 32, 1]))
PY
ln -s ../ext "$I/tree/linked"
ln -s .. "$I/tree/a/loop"  # a cycle
ln -s A0_examples.json "$I/tree/a/Z_examples.json"  # one file under two names
gzip -dk "$I/tree/a/G_examples.json.gz"  # G_examples.json beside G_examples.json.gz
timeout 60 "$ELDR" trace import -i "$I/tree" -o "$I/imp.eldrtrace" >"$I/imp.out" 2>&1 \
  && ok || bad "import with links: $(cat "$I/imp.out")"
grep -q "wrote .*: 6 requests" "$I/imp.out" && ok || bad "import links/duplicates: $(cat "$I/imp.out")"
grep -q "1 .json beside a .json.gz of the same name: read the .json.gz only" "$I/imp.out" \
  && ok || bad "import: no duplicate report: $(cat "$I/imp.out")"
grep -q "read 8 (1 .json.gz, 7 .json)" "$I/imp.out" && ok || bad "import: files read: $(cat "$I/imp.out")"
grep -q "skipped 4 files" "$I/imp.out" && ok || bad "import: files skipped: $(cat "$I/imp.out")"
grep -q "1 names of a file already found under another name: read once" "$I/imp.out" \
  && ok || bad "import: file link: $(cat "$I/imp.out")"
grep -q "1 not per-request traces.*summary_examples.json" "$I/imp.out" \
  && ok || bad "import: aggregate not reported: $(cat "$I/imp.out")"
grep -q "1 too short.*short_examples.json" "$I/imp.out" \
  && ok || bad "import: short request not reported: $(cat "$I/imp.out")"
grep -q "directory links to a directory already walked" "$I/imp.out" \
  && ok || bad "import: link cycle not reported: $(cat "$I/imp.out")"
"$ELDR" trace stats "$I/imp.eldrtrace" >"$I/imp.st" 2>&1 && ok || bad "stats: $(cat "$I/imp.st")"
grep -q "label shares over the file (6 requests): gpqa 66.7% (4), mmlu 33.3% (2)" "$I/imp.st" \
  && ok || bad "stats: file label shares: $(cat "$I/imp.st")"
grep -q "label shares over the file (6 requests): gpqa 50.0% (3), mmlu 50.0% (3)" "$T/st" \
  && ok || bad "stats: file label shares: $(cat "$T/st")"
grep -q "select [0-9.-]*% fewer distinct experts" "$I/imp.st" && ok || bad "stats: $(cat "$I/imp.st")"
mkdir -p "$I/rep" "$I/range" "$I/one" "$I/cut" "$I/notrailer"
cp "$I/rep.json" "$I/rep/R_examples.json"
expect_error "R_examples.json: token 3 ('token_53') layer 5: expert 7 repeated" \
  "$ELDR" trace import -i "$I/rep" -o "$I/x.eldrtrace"
cp "$I/range.json" "$I/range/R_examples.json"
expect_error "R_examples.json: token 3 ('token_53') layer 5: expert id 32 outside \[0, 32)" \
  "$ELDR" trace import -i "$I/range" -o "$I/x.eldrtrace"
expect_error "prefix-tokens must be >= 0" "$ELDR" trace import -i "$I/tree" -o "$I/x.eldrtrace" \
  --prefix-tokens -1
[ ! -e "$I/x.eldrtrace" ] && ok || bad "a failed import left an output file"
# A gzip cut short, and one that lacks only its 8-byte trailer, are corrupt, not partial data.
gz="$I/tree/a/G_examples.json.gz"
head -c $(($(stat -c %s "$gz") / 2)) "$gz" >"$I/cut/C_examples.json.gz"
expect_error "C_examples.json.gz: corrupt gzip: truncated" \
  "$ELDR" trace import -i "$I/cut" -o "$I/x.eldrtrace"
head -c $(($(stat -c %s "$gz") - 8)) "$gz" >"$I/notrailer/C_examples.json.gz"
expect_error "C_examples.json.gz: corrupt gzip" \
  "$ELDR" trace import -i "$I/notrailer" -o "$I/x.eldrtrace"
# One label: the same-label reduction is not a number.
cp "$I"/tree/a/A*_examples.json "$I/tree/a/G_examples.json" "$I/one/"
"$ELDR" trace import -i "$I/one" -o "$I/one.eldrtrace" >/dev/null 2>&1 && ok || bad "one-label import"
"$ELDR" trace stats "$I/one.eldrtrace" >"$I/one.st" 2>&1 && ok || bad "stats: $(cat "$I/one.st")"
grep -q "select n/a" "$I/one.st" && ok || bad "stats with one label: $(cat "$I/one.st")"
grep -q "label shares over the file (4 requests): gpqa 100.0% (4)" "$I/one.st" \
  && ok || bad "stats with one label: $(cat "$I/one.st")"

# route never has a request in flight twice: fewer requests than K x --per-decoder is refused;
# exactly enough, replayed over many passes, runs.
head -20 "$DATA/heldout.jsonl" >"$I/h19.jsonl"  # header + 19 requests
expect_error "has 19 requests with decode counts, fewer than the 32 kept in flight" \
  "$ELDR" route -s "$T/space.json" -i "$I/h19.jsonl"
grep -q -- "use --per-decoder 2 or less" "$T/err" && ok || bad "route: no remedy: $(cat "$T/err")"
"$ELDR" route -s "$T/space.json" -i "$I/h19.jsonl" --per-decoder 2 --arrivals 500 >"$I/r19" 2>&1 \
  && ok || bad "route with 19 requests, 16 in flight: $(cat "$I/r19")"
head -17 "$DATA/heldout.jsonl" >"$I/h16.jsonl"  # exactly 16 = 8 x 2
"$ELDR" route -s "$T/space.json" -i "$I/h16.jsonl" --per-decoder 2 --arrivals 300 >"$I/r16" 2>&1 \
  && ok || bad "route with as many requests as in flight: $(cat "$I/r16")"
# Errors name only the command's own options, and say each context once.
route_opts=$("$ELDR" route --help | grep -o -- '--[a-z-]*' | sort -u)
for args in "--per-decoder 0" "--arrivals 0" "--per-decoder 9"; do
  # shellcheck disable=SC2086
  "$ELDR" route -s "$T/space.json" -i "$I/h19.jsonl" $args 2>"$T/err" >/dev/null
  grep -q -- "--" "$T/err" && ok || bad "route error names no option: $(cat "$T/err")"
  for o in $(grep -o -- '--[a-z-]*' "$T/err" | sort -u); do
    echo "$route_opts" | grep -qx -- "$o" && ok || bad "route error names $o: $(cat "$T/err")"
  done
done
expect_error "decoders must be >= 1" "$ELDR" fit -i "$DATA/calib.jsonl" -o "$T/x.json" -k 0
expect_error "eldr fit: INVALID_ARGUMENT: 128 calibration requests cannot fill k" \
  "$ELDR" fit -i "$DATA/heldout.jsonl" -o "$T/x.json" -k 1000
"$ELDR" simulate -d 1 --calibration 5 >/dev/null 2>"$T/err"
grep -q "cannot fill k" "$T/err" && ! grep -q "fit: fit:" "$T/err" \
  && ok || bad "repeated context: $(cat "$T/err")"
expect_error "eldr trace: INVALID_ARGUMENT: $T/cut.eldrtrace: truncated" \
  "$ELDR" trace stats "$T/cut.eldrtrace"

# --model takes a Hugging Face config.json (tests/fixtures/models/, docs/models.md): a preset's
# config simulates as the preset; a model that is no preset (interleaved dense layers) fits from
# calibration counts of its MoE layers.
MODELS="$(cd "$(dirname "$0")/../fixtures/models" && pwd)"
"$ELDR" simulate -m "$MODELS/gpt-oss-120b/config.json" -w language -r 20 -d 2 --calibration 200 \
  --seeds 1 --policies jsq,eldr >"$T/hf_sim" 2>&1 && ok || bad "simulate a config.json: $(cat "$T/hf_sim")"
grep -q "^eldr " "$T/hf_sim" && grep -q "GPT-OSS-120B\|gpt-oss-120b" "$T/hf_sim" \
  && ok || bad "simulate a config.json output: $(cat "$T/hf_sim")"
expect_error "model config '$T/none/config.json' not found" \
  "$ELDR" simulate -m "$T/none/config.json" -d 1
mkdir -p "$T/My_MoE"
# Qwen2-MoE rules: layer i is MoE iff (i + 1) % 2 == 0 and i is not in mlp_only_layers: 1, 3, 5.
cat >"$T/My_MoE/config.json" <<'JSON'
{"model_type": "qwen2_moe", "num_hidden_layers": 8, "num_experts": 16, "num_experts_per_tok": 2,
 "moe_intermediate_size": 64, "intermediate_size": 256, "hidden_size": 128,
 "shared_expert_intermediate_size": 256, "decoder_sparse_step": 2, "mlp_only_layers": [7],
 "torch_dtype": "bfloat16", "vocab_size": 1000}
JSON
/usr/bin/python3 - "$T" <<'PY'
import json, random, sys
random.seed(3)
def table(hot):  # [3 MoE layers][16 experts], biased to a label's hot experts
    rows = []
    for l in range(3):
        c = [0] * 16
        for _ in range(40):
            e = random.choice(hot) if random.random() < 0.7 else random.randrange(16)
            c[(e + l) % 16] += 1
        rows.append(c)
    return rows
with open(sys.argv[1] + "/my_calib.jsonl", "w") as f:
    for i in range(64):
        lab, hot = ("code", [0, 1, 2, 3]) if i % 2 else ("math", [8, 9, 10, 11])
        f.write(json.dumps({"id": "r%d" % i, "label": lab, "prefill": table(hot),
                            "decode": table(hot)}) + "\n")
with open(sys.argv[1] + "/my_calib_4.jsonl", "w") as f:  # 4 layers: the dense layer 7 too
    f.write(json.dumps({"id": "r0", "prefill": table([0]) + [[0] * 16]}) + "\n")
PY
"$ELDR" fit -m "$T/My_MoE/config.json" -i "$T/my_calib.jsonl" -k 4 -o "$T/my_space.json" \
  >"$T/my_fit" 2>&1 && ok || bad "fit a config.json model: $(cat "$T/my_fit")"
grep -q "layer mask .* of 3 layers" "$T/my_fit" && ok || bad "fit a config.json model: $(cat "$T/my_fit")"
grep -q '"model":"my-moe"' "$T/my_space.json" && grep -q '"L":3,"e":16' "$T/my_space.json" \
  && ok || bad "fitted space of a config.json model: $(head -c 300 "$T/my_space.json")"
"$ELDR" fit -m "$T/My_MoE" -i "$T/my_calib.jsonl" -k 4 -o "$T/my_space2.json" -q \
  && cmp -s "$T/my_space.json" "$T/my_space2.json" && ok || bad "fit -m DIR differs from -m DIR/config.json"
# The summary says when the ELDR artifact could not load the file (docs/formats.md).
"$ELDR" fit -m "$T/My_MoE" -i "$T/my_calib.jsonl" -k 4 -o "$T/my_count.json" --transform count \
  >"$T/my_count" 2>&1 || bad "fit --transform count: $(cat "$T/my_count")"
if grep -q "layer mask  3 of 3" "$T/my_count"; then ! grep -q "^compat" "$T/my_count"; else
  grep -q "^compat      eldr only: the ELDR artifact reads a 'count' space only over every layer" \
    "$T/my_count"; fi && ok || bad "fit count summary's compat line: $(cat "$T/my_count")"
"$ELDR" fit -m "$T/My_MoE" -i "$T/my_calib.jsonl" -k 4 -o "$T/my_count2.json" --transform count \
  --all-layers >"$T/my_count2" 2>&1 && ! grep -q "^compat" "$T/my_count2" && ok \
  || bad "fit count --all-layers loads in the artifact: $(cat "$T/my_count2")"
"$ELDR" fit -i "$DATA/calib.jsonl" -k 4 -o "$T/masked_count.json" --transform count >"$T/mc" 2>&1 \
  && grep -q "layer mask  [0-9]* of 24" "$T/mc" && ! grep -q "layer mask  24 of 24" "$T/mc" \
  && grep -q "^compat      eldr only: the ELDR artifact reads a 'count' space only over every layer" \
  "$T/mc" && ok || bad "a greedy-masked count fit says the artifact cannot load it: $(cat "$T/mc")"
"$ELDR" fit -m "$T/My_MoE" -i "$T/my_calib.jsonl" -k 4 -o "$T/my_bin.json" --transform binary \
  >"$T/my_bin" 2>&1 && grep -q "^compat      eldr only: the ELDR artifact has no 'binary'" \
  "$T/my_bin" && ok || bad "fit binary summary's compat line: $(cat "$T/my_bin")"
expect_error "'prefill' must be a list of 3 layers (My_MoE has 3 MoE layers)" \
  "$ELDR" fit -m "$T/My_MoE/config.json" -i "$T/my_calib_4.jsonl" -o "$T/x.json"
printf '{"num_hidden_layers": 8, "num_experts": 16, "num_experts_per_tok": 32}\n' >"$T/bad.json"
expect_error "$T/bad.json: config field 'num_experts_per_tok' is 32, more than the 16 routed" \
  "$ELDR" fit -m "$T/bad.json" -i "$T/my_calib.jsonl" -o "$T/x.json"
[ ! -e "$T/x.json" ] && ok || bad "a failed fit left an output file"

# A model without published latencies simulates on parameters derived from its geometry and a
# hardware profile, the assumptions printed with the result (docs/calibration.md, "Models without
# published latencies"); an unknown profile is refused with the known ones named.
"$ELDR" simulate -m "$MODELS/Llama-4-Maverick-17B-128E-Instruct/config.json" -r 20 -d 2 \
  --calibration 200 --seeds 1 --policies rr,eldr >"$T/derived" 2>&1 \
  && ok || bad "simulate a model without published latencies: $(cat "$T/derived")"
grep -q "^cost model: derived for Llama-4-Maverick-17B-128E-Instruct on mi300x (AMD Instinct MI300X: 5.3 TB/s peak HBM x 60.4% = 3.20 TB/s effective)" "$T/derived" \
  && grep -q "^cost model: t0 and t_tok = Qwen3-30B-A3B's calibration x 48/48 layers" "$T/derived" \
  && grep -q "^eldr " "$T/derived" && ok || bad "derived cost model output: $(cat "$T/derived")"
"$ELDR" simulate -m "$T/My_MoE" -r 20 -d 2 --calibration 200 --seeds 1 --decode 4 \
  --policies rr,eldr --hardware h200 >"$T/derived2" 2>&1 \
  && grep -q "^cost model: derived for My_MoE on h200 (NVIDIA H200 SXM: 4.8 TB/s" "$T/derived2" \
  && grep -q "x 1.104 (bandwidth ratio mi300x / h200)" "$T/derived2" \
  && ok || bad "simulate --hardware h200: $(cat "$T/derived2")"
expect_error "--hardware: unknown hardware profile 'nope'; known profiles: mi300x, h100-sxm, h200, b200" \
  "$ELDR" simulate -d 1 --hardware nope
expect_error "--matrix paper reproduces the published set-up" \
  "$ELDR" simulate --matrix paper --hardware b200

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
