#!/usr/bin/env bash
# Proxy overhead and throughput (docs/perf.md): `make perf-proxy`.
#   1. added latency at a fixed open-loop rate: eldr bench against the prefill emulator, the
#      decode emulator and eldr serve in front of both (instant emulators: --time-scale 0);
#   2. closed-loop throughput with wrk: eldr serve vs nginx proxying the same decode emulator.
# Needs nginx and wrk (ELDR_PERF_DEPS=1 scripts/install-deps.sh).
# PIN=1 gives the proxy under test (eldr serve or nginx) CPU 0 and everything else (load
# generator, emulators) CPU 1, as when the router has a host of its own.
set -euo pipefail
ELDR=${1:-build/release/tools/eldr/eldr}
RATE=${RATE:-1000}
N=${N:-20000}
OUT=${OUT:-build/perf}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PROXY_CPU=() REST_CPU=()
if [ "${PIN:-0}" = 1 ]; then PROXY_CPU=(taskset -c 0) REST_CPU=(taskset -c 1); fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port() { sed 's/[^0-9]//g' "$1"; }
wait_file() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "no $1" >&2; exit 1; }

rm -f "$OUT"/*.ready
"${REST_CPU[@]}" "$ELDR" emulate --role prefill --time-scale 0 --ready-file "$OUT/p.ready" >/dev/null 2>&1 & pids+=($!)
"${REST_CPU[@]}" "$ELDR" emulate --role decode --time-scale 0 --ready-file "$OUT/d.ready" >/dev/null 2>&1 & pids+=($!)
"$ELDR" emulate --write-space "$OUT/space1.json" -k 1 2>/dev/null
wait_file "$OUT/p.ready"; wait_file "$OUT/d.ready"
P=$(port "$OUT/p.ready"); D=$(port "$OUT/d.ready")
"${PROXY_CPU[@]}" "$ELDR" serve --listen 127.0.0.1:0 --threads 1 --prefill "http://127.0.0.1:$P" \
  --decode "http://127.0.0.1:$D" --space "$OUT/space1.json" --log-level warn \
  --ready-file "$OUT/x.ready" >/dev/null 2>&1 & pids+=($!)
wait_file "$OUT/x.ready"; X=$(port "$OUT/x.ready")

B=(--rate "$RATE" --requests "$N" --prompt-words 64 --quiet)
echo "== prefill leg direct (non-streaming, max_tokens 1, kv_transfer_params)"
"${REST_CPU[@]}" "$ELDR" bench -u "http://127.0.0.1:$P" "${B[@]}" --no-stream --max-tokens 1 \
  --extra-body '{"kv_transfer_params":{"do_remote_decode":true},"return_token_ids":true}' \
  --json "$OUT/direct_prefill.json"
echo "== decode leg direct (streaming, 2 tokens)"
"${REST_CPU[@]}" "$ELDR" bench -u "http://127.0.0.1:$D" "${B[@]}" --max-tokens 2 --json "$OUT/direct_decode.json"
echo "== through eldr serve (both legs, streaming, 2 tokens)"
"${REST_CPU[@]}" "$ELDR" bench -u "http://127.0.0.1:$X" "${B[@]}" --max-tokens 2 --json "$OUT/proxy.json"
curl -s "http://127.0.0.1:$X/metrics" > "$OUT/proxy_metrics.txt"
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
m = {}
for line in open(f"{o}/proxy_metrics.txt"):
    if line.startswith("#") or not line.strip():
        continue
    k, v = line.rsplit(" ", 1)
    m[k] = float(v)
def leg_mean(role):
    s = sum(v for k, v in m.items() if k.startswith(f'eldr_upstream_latency_seconds_sum{{role="{role}"'))
    c = sum(v for k, v in m.items() if k.startswith(f'eldr_upstream_latency_seconds_count{{role="{role}"'))
    return 1000 * s / c
x = json.load(open(f"{o}/proxy.json"))
pl, dl = leg_mean("prefill"), leg_mean("decode")
print(f"means: client TTFT {x['ttft_ms']['mean']:.3f} ms = legs timed inside the proxy "
      f"(prefill {pl:.3f} + decode first byte {dl:.3f}) + the proxy's own share "
      f"{x['ttft_ms']['mean'] - pl - dl:.3f} ms")
p = json.load(open(f"{o}/direct_prefill.json"))
d = json.load(open(f"{o}/direct_decode.json"))
x = json.load(open(f"{o}/proxy.json"))
direct = p["e2e_ms"]["p50"] + d["ttft_ms"]["p50"]
print(f"TTFT P50: direct legs {direct:.3f} ms (prefill {p['e2e_ms']['p50']:.3f} + decode "
      f"{d['ttft_ms']['p50']:.3f}), through eldr {x['ttft_ms']['p50']:.3f} ms "
      f"-> added {x['ttft_ms']['p50'] - direct:.3f} ms; failed {x['failed']}")
PY

if command -v nginx >/dev/null && command -v wrk >/dev/null; then
  cat > "$OUT/nginx.conf" <<NGX
worker_processes 1;
pid $OUT/nginx.pid;
error_log $OUT/nginx_error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx_body;
  proxy_temp_path $OUT/nginx_proxy;
  upstream decode { server 127.0.0.1:$D; keepalive 64; }
  server {
    listen 127.0.0.1:${NGINX_PORT:-18080};
    location / {
      proxy_pass http://decode;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGX
  "${PROXY_CPU[@]}" nginx -c "$OUT/nginx.conf" -g 'daemon off;' & pids+=($!)
  sleep 0.5
  cat > "$OUT/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"m","prompt":"w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17","max_tokens":2}'
wrk.headers["Content-Type"] = "application/json"
LUA
  echo "== decode leg through nginx (open loop, streaming, 2 tokens): a reference proxy hop"
  "${REST_CPU[@]}" "$ELDR" bench -u "http://127.0.0.1:${NGINX_PORT:-18080}" "${B[@]}" --max-tokens 2 \
    --json "$OUT/nginx_decode.json"
  /usr/bin/python3 - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
d = json.load(open(f"{o}/direct_decode.json"))
n = json.load(open(f"{o}/nginx_decode.json"))
print(f"TTFT P50: decode direct {d['ttft_ms']['p50']:.3f} ms, through nginx "
      f"{n['ttft_ms']['p50']:.3f} ms -> one nginx hop adds {n['ttft_ms']['p50'] - d['ttft_ms']['p50']:.3f} ms")
PY
  for target in "decode emulator direct:$D" "nginx -> decode:${NGINX_PORT:-18080}" "eldr serve -> prefill+decode:$X"; do
    echo "== wrk, 32 connections, 10 s: ${target%%:*}"
    "${REST_CPU[@]}" wrk -t1 -c32 -d10s -s "$OUT/post.lua" "http://127.0.0.1:${target##*:}/v1/completions" |
      grep -E "Requests/sec|Latency|Non-2xx" || true
  done
fi
