#!/usr/bin/env bash
# Proxy overhead and throughput (docs/perf.md): `make perf-proxy`.
#   1. added latency at a fixed open-loop rate (eldr bench): each leg direct, then through
#      eldr serve, and through nginx doing the same two exchanges (nginx-pd, below);
#   2. closed-loop throughput (wrk): the engines direct, nginx in front of decode only
#      (nginx-1hop), nginx-pd, and eldr serve.
# The emulators run at --time-scale 0 (instant answers), so what is measured is the HTTP path.
# Every request carries the same 64-word prompt: its prefill answer is a 33 KB .npy payload of
# Qwen3-30B-A3B routed experts, the same for eldr and for nginx-pd.
#
# nginx-pd is nginx doing a PD request's two upstream exchanges without any routing logic: an
# auth_request subrequest POSTs the prefill body (fixed, the same prompt) to the prefill engine
# and reads its answer, then the request is proxied to the decode engine. It is the
# like-for-like reference for a proxy that must make both exchanges; nginx-1hop is the cost of a
# plain proxy hop.
#
# Needs nginx (with auth_request, as Debian's nginx-light has) and wrk:
# ELDR_PERF_DEPS=1 scripts/install-deps.sh.
# PIN=1: the proxy under test (eldr or nginx) alone on CPU 0, load generator and engines on CPU 1.
# PIN=2: the proxy and the load generator on CPU 0, the engines on CPU 1: direct legs and proxied
#        legs then cross between CPUs the same number of times (see docs/perf.md).
# BUSY_POLL=N passes --busy-poll-us N to eldr serve.
set -euo pipefail
ELDR=${1:-build/release/tools/eldr/eldr}
RATE=${RATE:-1000}
N=${N:-20000}
WRK_S=${WRK_S:-10}
OUT=${OUT:-build/perf}
NGINX_PORT=${NGINX_PORT:-18080}
NGINX_PD_PORT=${NGINX_PD_PORT:-18081}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PROXY_CPU=() LOAD_CPU=() ENGINE_CPU=()
case "${PIN:-0}" in
  1) PROXY_CPU=(taskset -c 0) LOAD_CPU=(taskset -c 1) ENGINE_CPU=(taskset -c 1) ;;
  2) PROXY_CPU=(taskset -c 0) LOAD_CPU=(taskset -c 0) ENGINE_CPU=(taskset -c 1) ;;
esac
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port() { sed 's/[^0-9]//g' "$1"; }
wait_file() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "no $1" >&2; exit 1; }

PROMPT=$(seq -s ' ' -f 'w%g' 1 64)
echo "$PROMPT" > "$OUT/prompt.txt"
PREFILL_BODY="{\"model\":\"qwen3-30b-a3b\",\"prompt\":\"$PROMPT\",\"max_tokens\":1,\"stream\":false,\"kv_transfer_params\":{\"do_remote_decode\":true},\"return_token_ids\":true}"

rm -f "$OUT"/*.ready
"${ENGINE_CPU[@]}" "$ELDR" emulate --role prefill --time-scale 0 --ready-file "$OUT/p.ready" >/dev/null 2>&1 & pids+=($!)
"${ENGINE_CPU[@]}" "$ELDR" emulate --role decode --time-scale 0 --ready-file "$OUT/d.ready" >/dev/null 2>&1 & pids+=($!)
"$ELDR" emulate --write-space "$OUT/space1.json" -k 1 2>/dev/null
wait_file "$OUT/p.ready"; wait_file "$OUT/d.ready"
P=$(port "$OUT/p.ready"); D=$(port "$OUT/d.ready")
"${PROXY_CPU[@]}" "$ELDR" serve --listen 127.0.0.1:0 --threads 1 --prefill "http://127.0.0.1:$P" \
  --decode "http://127.0.0.1:$D" --space "$OUT/space1.json" --log-level warn \
  --busy-poll-us "${BUSY_POLL:-0}" --ready-file "$OUT/x.ready" >/dev/null 2>&1 & pids+=($!)
wait_file "$OUT/x.ready"; X=$(port "$OUT/x.ready")

have_nginx=0
if command -v nginx >/dev/null && command -v wrk >/dev/null; then
  have_nginx=1
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
  upstream prefill { server 127.0.0.1:$P; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://decode;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
  server {
    listen 127.0.0.1:$NGINX_PD_PORT;
    location = /_prefill {
      internal;
      proxy_pass http://prefill/v1/completions;
      proxy_method POST;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Content-Type application/json;
      proxy_set_body '$PREFILL_BODY';
    }
    location / {
      auth_request /_prefill;
      proxy_pass http://decode;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGX
  "${PROXY_CPU[@]}" nginx -c "$OUT/nginx.conf" -g 'daemon off;' 2>"$OUT/nginx_start.log" & pids+=($!)
  sleep 0.5
  if ! kill -0 "${pids[3]}" 2>/dev/null; then
    echo "nginx did not start (another one on ports $NGINX_PORT/$NGINX_PD_PORT?):" >&2
    cat "$OUT/nginx_start.log" >&2
    exit 1
  fi
fi

B=(--rate "$RATE" --requests "$N" --prompts "$OUT/prompt.txt" --quiet)
run_bench() {  # name url [args...]
  local name=$1 url=$2
  shift 2
  echo "== $name"
  "${LOAD_CPU[@]}" "$ELDR" bench -u "$url" "${B[@]}" "$@" --json "$OUT/$name.json" | grep -E "^requests|^TTFT|^E2E"
}
run_bench direct_prefill "http://127.0.0.1:$P" --no-stream --max-tokens 1 \
  --extra-body '{"kv_transfer_params":{"do_remote_decode":true},"return_token_ids":true}'
run_bench direct_decode "http://127.0.0.1:$D" --max-tokens 2
proxy_cpu0=$(awk '{print $14+$15}' "/proc/${pids[2]}/stat")
run_bench eldr "http://127.0.0.1:$X" --max-tokens 2
proxy_cpu1=$(awk '{print $14+$15}' "/proc/${pids[2]}/stat")
curl -s "http://127.0.0.1:$X/metrics" > "$OUT/proxy_metrics.txt"
if [ "$have_nginx" = 1 ]; then
  run_bench nginx_1hop "http://127.0.0.1:$NGINX_PORT" --max-tokens 2
  ngx_worker=$(pgrep -P "${pids[3]}" | head -1)
  ngx_cpu0=$(awk '{print $14+$15}' "/proc/$ngx_worker/stat")
  run_bench nginx_pd "http://127.0.0.1:$NGINX_PD_PORT" --max-tokens 2
  ngx_cpu1=$(awk '{print $14+$15}' "/proc/$ngx_worker/stat")
  echo "nginx-pd CPU per request at this rate: $(( (ngx_cpu1 - ngx_cpu0) * 1000000 / $(getconf CLK_TCK) / N )) us"
fi
/usr/bin/python3 - "$OUT" "$N" "$proxy_cpu0" "$proxy_cpu1" "$(getconf CLK_TCK)" <<'PY'
import json, os, sys
o, n, c0, c1, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
J = lambda name: json.load(open(f"{o}/{name}.json"))
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
p, d, x = J("direct_prefill"), J("direct_decode"), J("eldr")
direct = p["e2e_ms"]["p50"] + d["ttft_ms"]["p50"]
pl, dl = leg_mean("prefill"), leg_mean("decode")
print(f"means: client TTFT {x['ttft_ms']['mean']:.3f} ms = legs timed inside eldr (prefill {pl:.3f} "
      f"+ decode first byte {dl:.3f}) + eldr's own share {x['ttft_ms']['mean'] - pl - dl:.3f} ms")
print(f"eldr CPU per request at this rate: {(c1 - c0) / tck / n * 1e6:.0f} us")
print(f"TTFT P50: direct legs {direct:.3f} ms (prefill {p['e2e_ms']['p50']:.3f} + decode "
      f"{d['ttft_ms']['p50']:.3f})")
print(f"  through eldr     {x['ttft_ms']['p50']:.3f} ms -> added {x['ttft_ms']['p50'] - direct:.3f} ms; "
      f"failed {x['failed']}")
if os.path.exists(f"{o}/nginx_pd.json"):
    g, h = J("nginx_pd"), J("nginx_1hop")
    print(f"  through nginx-pd {g['ttft_ms']['p50']:.3f} ms -> added {g['ttft_ms']['p50'] - direct:.3f} ms; "
          f"failed {g['failed']}")
    print(f"  decode through nginx-1hop {h['ttft_ms']['p50']:.3f} ms -> one nginx hop adds "
          f"{h['ttft_ms']['p50'] - d['ttft_ms']['p50']:.3f} ms")
PY

if [ "$have_nginx" = 1 ]; then
  cat > "$OUT/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"qwen3-30b-a3b","prompt":"$PROMPT","max_tokens":2}'
wrk.headers["Content-Type"] = "application/json"
LUA
  cat > "$OUT/prefill.lua" <<LUA
wrk.method = "POST"
wrk.body = '$PREFILL_BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
  declare -A rps
  for target in "prefill-direct:$P:prefill" "decode-direct:$D:post" "nginx-1hop:$NGINX_PORT:post" \
                "nginx-pd:$NGINX_PD_PORT:post" "eldr:$X:post"; do
    IFS=: read -r name tport lua <<< "$target"
    r=$("${LOAD_CPU[@]}" wrk -t1 -c32 -d"${WRK_S}s" -s "$OUT/$lua.lua" "http://127.0.0.1:$tport/v1/completions")
    rps[$name]=$(echo "$r" | awk '/Requests\/sec/ {print $2}')
    echo "== wrk, 32 connections, ${WRK_S} s: $name: ${rps[$name]} req/s$(echo "$r" | grep -o 'Non-2xx.*' | sed 's/^/, /')"
  done
  /usr/bin/python3 -c "
e, pd, one = ${rps[eldr]}, ${rps[nginx-pd]}, ${rps[nginx-1hop]}
p, d = ${rps[prefill-direct]}, ${rps[decode-direct]}
print(f'eldr / nginx-pd = {e / pd:.2f}x; eldr / nginx-1hop = {e / one:.2f}x; '
      f'engines alone could serve at most {1 / (1 / p + 1 / d):.0f} PD req/s (prefill and decode in series on their CPU)')
"
fi
