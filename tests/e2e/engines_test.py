#!/usr/bin/python3
"""`eldr serve` with policy eldr in front of emulated engines of every shape the real engines
answer in (`eldr emulate --engine vllm-0.22|vllm-0.21|sglang|eldr-hooks`, an emulator that does
not share the proxy's parsing code). For each shape: every request completes, ELDR routes by
signature (eldr_policy_fallbacks_total stays 0; SGLang: 0 once a prompt has been seen), the
prefill worker's signature source is the expected one, no eldr_sig reaches a decode engine, a
4xx from the prefill engine reaches the client with the router up, in-flight counts return to
zero, and `eldr serve --check` reports the source. One set-up runs with --api-key engines.

Usage: engines_test.py path/to/eldr      (stdlib only; run by ctest)
"""
import json
import os
import socket
import subprocess
import sys
import time

from harness import MODEL, TMP, check, metrics, run
from harness import request as _request
from harness import start as _start
from harness import wait_idle as idle

ELDR = os.path.abspath(sys.argv[1])


def start(args, name, env=None):
    return _start(ELDR, args, name, env)


def request(port, path, body=None, headers=None, method="POST"):
    return _request(port, method, path, body, headers)


def emulator(name, role, backend, *extra):
    return start(["emulate", "--role", role, "--backend", backend, "--listen", "127.0.0.1:0",
                  "--time-scale", "0.1", *extra], name)


def completion(port, prompt, stream, chat=False):
    body = {"model": MODEL, "max_tokens": 4, "stream": stream}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    st, data = request(port, "/v1/chat/completions" if chat else "/v1/completions", body)
    if st != 200:
        return False
    if stream:
        events = [e for e in data.decode().split("\n\n") if e.startswith("data: ")]
        return events and events[-1] == "data: [DONE]" and '"error"' not in data.decode()
    return json.loads(data)["usage"]["completion_tokens"] == 4


def setup(name, engine, backend, space, *extra, env=None, key=None, config=None):
    auth = ["--api-key", key] if key else []
    _, pp = emulator(f"{name}-p", "prefill", backend, "--engine", engine, *auth, *extra)
    dps = [emulator(f"{name}-d{i}", "decode", backend, *auth)[1] for i in range(2)]
    cfg = {"listen": "127.0.0.1:0", "backend": backend, "model": MODEL, "policy": "eldr",
           "space": space, "prefill": [f"http://127.0.0.1:{pp}"],
           "decode": [f"http://127.0.0.1:{p}" for p in dps], "health_interval_ms": 200}
    cfg.update(config or {})
    path = os.path.join(TMP, name + ".yaml")
    with open(path, "w") as f:
        json.dump(cfg, f)
    _, port = start(["serve", "-c", path], name, env=env)
    return port, pp, dps, path


def main():
    space = os.path.join(TMP, "space.json")
    subprocess.run([ELDR, "emulate", "--write-space", space, "-k", "2"], check=True,
                   capture_output=True)
    shapes = [("vllm-0.22", "vllm", "vllm"), ("vllm-0.21", "vllm", "vllm-0.21"),
              ("eldr-hooks", "vllm", "eldr-hooks"), ("sglang", "sglang", "sglang")]
    for engine, backend, source in shapes:
        print(f"engine {engine} ({backend} flow)")
        port, pp, dps, cfg = setup(engine, engine, backend, space)
        prompts = [f"{engine} prompt {i} " + "theta iota " * (i + 3) for i in range(6)]
        ok = 0
        fallbacks = []
        for rep in range(2):  # SGLang routes a repeat by the signature its first prefill left
            for i, pr in enumerate(prompts):
                ok += completion(port, pr, stream=i % 2 == 0, chat=i % 3 == 2)
                if backend == "sglang":
                    time.sleep(0.2)  # the prefill leg may end just after the decode leg
            fallbacks.append(metrics(port)["eldr_policy_fallbacks_total"])
        check(ok == 12, f"{engine}: 12 of 12 requests complete ({ok})")
        m = metrics(port)
        if backend == "sglang":
            check(fallbacks[0] <= len(prompts) and fallbacks[1] == fallbacks[0],
                  f"{engine}: no fallback once a prompt has been seen ({fallbacks})")
        else:
            check(fallbacks[1] == 0, f"{engine}: no fallback to load balancing ({fallbacks[1]})")
        got = m.get(f'eldr_prefill_signatures_total{{role="prefill",'
                    f'worker="http://127.0.0.1:{pp}",source="{source}"}}', 0)
        check(got == 12, f"{engine}: 12 prefill answers with source {source} ({got})")
        sig = sum(metrics(p).get("eldr_emu_eldr_sig_received_total", 0) for p in dps)
        check(sig == 0, f"{engine}: no eldr_sig reached a decode engine ({sig})")
        check(idle(port), f"{engine}: in-flight counts back at zero")
        r = subprocess.run([ELDR, "serve", "-c", cfg, "--listen", "127.0.0.1:0", "--check"],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0 and f" {source} " in r.stdout and "1 of 1" in r.stdout,
              f"{engine}: --check reports a usable {source} signature")

    print("vLLM 0.21 with a prefix cache: -1 rows are filled from the signature cache")
    # Chunks of one 16-token block, the engine's block: every cached block is then known.
    port, pp, dps, _ = setup("cached", "vllm-0.21", "vllm", space,
                             config={"cache": {"chunk_blocks": 1}})
    ids = list(range(1000, 1000 + 300))
    for _ in range(2):
        st, _ = request(port, "/v1/completions", {"model": MODEL, "prompt": ids, "max_tokens": 2})
        check(st == 200, "token-id prompt completes")
    m = metrics(port)
    check(m["eldr_policy_fallbacks_total"] == 0, "no fallback")
    check(m["eldr_partial_signatures_total"] == 0,
          "the repeat's cached prefix came from the signature cache (no partial signature)")
    check(m["eldr_signature_cache_hit_tokens_total"] > 0, "the signature cache was hit")

    print("vLLM 0.22 honouring routed_experts_prompt_start")
    port, pp, dps, _ = setup("start", "vllm-0.22", "vllm", space, "--honour-prompt-start")
    for _ in range(2):
        st, _ = request(port, "/v1/completions", {"model": MODEL, "prompt": ids, "max_tokens": 2})
        check(st == 200, "token-id prompt completes")
    m = metrics(port)
    check(m["eldr_policy_fallbacks_total"] == 0 and
          m[f'eldr_prefill_signatures_rejected_total{{role="prefill",'
            f'worker="http://127.0.0.1:{pp}"}}'] == 0,
          "the trimmed rows were labelled from the asked start, nothing rejected")

    print("engines started with --api-key")
    port, pp, dps, _ = setup("key", "vllm-0.22", "vllm", space, key="k-42",
                             env={"ELDR_UPSTREAM_API_KEY": "k-42"})
    check(completion(port, "keyed prompt", True), "a request through key-protected engines")
    check(metrics(port)["eldr_policy_fallbacks_total"] == 0, "and it was routed by signature")
    st, _ = request(pp, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1})
    check(st == 401, "the engine itself refuses a request without the key")

    print("SGLang: a pair with a failed leg is replaced by another pair (retries)")
    # A prefill answering 500 and a decoder nobody listens on, next to a healthy pair: health
    # probes off and the breaker out of reach, so every request may draw a broken leg first.
    _, p_bad = emulator("sr-p500", "prefill", "sglang", "--engine", "sglang", "--fault",
                        "error500")
    _, p_ok = emulator("sr-p", "prefill", "sglang", "--engine", "sglang")
    _, d_ok = emulator("sr-d", "decode", "sglang")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    d_dead = probe.getsockname()[1]
    probe.close()
    cfg = {"listen": "127.0.0.1:0", "backend": "sglang", "model": MODEL, "policy": "rr",
           "prefill": [f"http://127.0.0.1:{p_bad}", f"http://127.0.0.1:{p_ok}"],
           "decode": [f"http://127.0.0.1:{d_dead}", f"http://127.0.0.1:{d_ok}"],
           "health_interval_ms": 0, "failure_threshold": 1000, "max_retries": 2,
           "retry_initial_backoff_ms": 10, "retry_jitter_factor": 0}
    path = os.path.join(TMP, "sglang-retry.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    _, port = start(["serve", "-c", path], "sglang-retry")
    ok = sum(completion(port, f"retry prompt {i} " + "kappa " * i, stream=i % 2 == 0)
             for i in range(16))
    m = metrics(port)
    # A 500 that arrives after the pair was already given up (the dead decoder failed first) is
    # not the prefill's fault: only the failures counted against it need a retry each.
    bad_errors = m.get(f'eldr_worker_errors_total{{role="prefill",worker="http://127.0.0.1:{p_bad}"}}',
                       0)
    check(ok == 16, f"SGLang: 16 of 16 requests complete through the healthy pair ({ok})")
    check(m.get("eldr_decode_retries_total", 0) >= 1,
          f"the dead decoder's pairs were retried ({m.get('eldr_decode_retries_total')})")
    check(m.get("eldr_prefill_retries_total", 0) == bad_errors and bad_errors >= 1,
          f"each prefill 500 counted against the worker was retried on another pair "
          f"({m.get('eldr_prefill_retries_total')} of {bad_errors})")
    cancelled = metrics(d_ok).get("eldr_emu_cancelled_total", 0)
    check(cancelled >= 1,
          f"a decode leg waiting for a failed prefill's KV was ended ({cancelled} cancelled)")
    check(m.get('eldr_responses_total{code="200"}') == 16 and
          m.get('eldr_responses_total{code="502"}', 0) == 0,
          "one 200 per request, nothing else answered")
    check(idle(port), "SGLang retries: in-flight counts back at zero")

    print("a prefill 4xx reaches the client and the router stays up")
    port, pp, dps, _ = setup("e400", "vllm-0.22", "vllm", space, "--fault", "error400")
    st, body = request(port, "/v1/completions", {"model": MODEL, "prompt": "long", "max_tokens": 2})
    check(st == 400 and b"context length" in body, "400 relayed with the engine's message")
    st, _ = request(port, "/health", method="GET")
    check(st == 200, "router still up")
    check(idle(port), "in-flight counts back at zero")


if __name__ == "__main__":
    run(main, "engine-shape")
