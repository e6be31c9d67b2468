#!/usr/bin/env bash
# ELDR vs round-robin measured end to end through the real proxy against emulated engines, next to
# the simulator's prediction for the same set-up (docs/perf.md): `make e2e-tpot`.
# Set-up: 2 prefill + 4 decode emulators (real time), Qwen3-30B-A3B geometry, task workload,
# Poisson arrivals at RATE req/s for DURATION s, MAX_TOKENS output tokens per request.
set -euo pipefail
ELDR=${1:-build/release/tools/eldr/eldr}
MODEL=${MODEL:-qwen3-30b-a3b}
RATE=${RATE:-10}
DURATION=${DURATION:-60}
MAX_TOKENS=${MAX_TOKENS:-512}
POLICIES=${POLICIES:-rr jsq eldr}
SEED=${SEED:-1}
OUT=${OUT:-build/e2e-tpot}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
N=$(/usr/bin/python3 -c "print(int($RATE * $DURATION))")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port() { sed 's/[^0-9]//g' "$1"; }
wait_file() { for _ in $(seq 600); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "no $1" >&2; exit 1; }

"$ELDR" emulate -m "$MODEL" --seed "$SEED" --write-space "$OUT/space.json" -k 4 2>/dev/null
echo "policy,ttft_p50_ms,tpot_p50_ms,tpot_p90_ms,tpot_mean_ms,ok,failed" > "$OUT/e2e.csv"
for policy in $POLICIES; do
  # Fresh engines per policy: every run starts from empty batches.
  rm -f "$OUT"/*.ready
  for i in 0 1; do
    "$ELDR" emulate -m "$MODEL" --seed "$SEED" --role prefill --ready-file "$OUT/p$i.ready" \
      >/dev/null 2>&1 & pids+=($!)
  done
  for i in 0 1 2 3; do
    "$ELDR" emulate -m "$MODEL" --seed "$SEED" --role decode --max-batch 512 \
      --ready-file "$OUT/d$i.ready" >/dev/null 2>&1 & pids+=($!)
  done
  for f in p0 p1 d0 d1 d2 d3; do wait_file "$OUT/$f.ready"; done
  P="http://127.0.0.1:$(port "$OUT/p0.ready"),http://127.0.0.1:$(port "$OUT/p1.ready")"
  D=""
  for i in 0 1 2 3; do D="$D,http://127.0.0.1:$(port "$OUT/d$i.ready")"; done
  "$ELDR" serve --listen 127.0.0.1:0 -m "$MODEL" --prefill "$P" --decode "${D#,}" \
    --policy "$policy" --space "$OUT/space.json" --log-level warn \
    --ready-file "$OUT/x.ready" >/dev/null 2>&1 & pids+=($!)
  wait_file "$OUT/x.ready"
  echo "== $policy: $N requests at $RATE req/s, $MAX_TOKENS tokens each"
  "$ELDR" bench -u "http://127.0.0.1:$(port "$OUT/x.ready")" -m "$MODEL" -r "$RATE" -n "$N" \
    --max-tokens "$MAX_TOKENS" --seed "$SEED" --quiet --json "$OUT/$policy.json"
  /usr/bin/python3 - "$OUT/$policy.json" "$policy" >> "$OUT/e2e.csv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]},{r['ttft_ms']['p50']:.1f},{r['tpot_ms']['p50']:.2f},{r['tpot_ms']['p90']:.2f},"
      f"{r['tpot_ms']['mean']:.2f},{r['ok']},{r['failed']}")
PY
  cleanup
  pids=()
done
echo "== end to end through eldr serve"
cat "$OUT/e2e.csv"
echo "== simulator prediction, same set-up"
"$ELDR" simulate -m "$MODEL" -w task --prefill 2 --decode 4 --rate "$RATE" \
  --duration "$DURATION" --policies "$(echo $POLICIES | tr ' ' ',')" --seed "$SEED" \
  --json "$OUT/sim.json" | tail -n 12
