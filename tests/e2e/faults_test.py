#!/usr/bin/python3
"""Every exit of the vLLM PD flow, table-driven, against stub engines written here (not the
eldr emulator): each status class, timeout, reset and malformed body on each leg, before and
after the first byte. After every case the router must still be up, the client must have a
clear answer, and every in-flight count must be back at zero. Also: no prefill is sent when no
decoder is available (a NIXL prefill would strand KV blocks), a decoder answering 5xx gets
its circuit opened instead of attracting traffic, and the first requests after an engine restart
succeed although every connection the router pooled to the old process is dead.

The stub prefill answers in vLLM >= 0.22's shape (tests/fixtures/engines) and records what it
received; the stub decode records whether a request carried the ELDR hooks' eldr_sig or an
Authorization header.

Usage: faults_test.py path/to/eldr      (stdlib only; run by ctest)
"""
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

from harness import MODEL, TMP, check, log_of, metrics, run, start
from harness import wait_idle as idle

ELDR = os.path.abspath(sys.argv[1])
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "engines")
PROMPT_OK = open(os.path.join(FIXTURES, "qwen3-30b-a3b.vllm-0.22-completion.json")).read()


class Stub:
    """One engine stub on its own port; `mode` decides the next answers."""

    def __init__(self, role):
        self.role = role
        self.mode = "ok"
        self.posts = 0
        self.eldr_sig_seen = 0
        self.auth = []
        self.probes = []  # Authorization of each health probe
        stub = self

        self.conns = []  # every accepted connection, so restart() can cut the kept-alive ones

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                stub.conns.append(self.connection)

            def log_message(self, *a):
                pass

            def do_GET(self):
                stub.probes.append(self.headers.get("Authorization"))
                self._send(200, b'{"status":"ok"}')

            def _send(self, status, body, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(n) or b"{}")
                stub.posts += 1
                stub.auth.append(self.headers.get("Authorization"))
                if "eldr_sig" in (req.get("kv_transfer_params") or {}):
                    stub.eldr_sig_seen += 1
                m = stub.mode
                if m.startswith("status:"):
                    code = int(m.split(":")[1])
                    msg = ("This model's maximum context length is 32768 tokens" if code == 400
                           else f"stub {stub.role} answered {code}")
                    self._send(code, json.dumps({"error": {
                        "message": msg, "type": "BadRequestError", "param": None,
                        "code": code}}).encode())
                elif m == "timeout":
                    time.sleep(2.5)
                    self.close_connection = True
                elif m == "reset":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                elif m == "slow-ok":  # concurrent requests each need a connection, later pooled
                    time.sleep(0.3)
                    self._answer(req, "ok")
                elif m == "malformed":
                    self._send(200, b"this is not json")
                elif m == "truncated":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.write(b'{"choices":[')
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                else:
                    self._answer(req, m)

            def _answer(self, req, m):
                if stub.role == "prefill":
                    body = PROMPT_OK
                    if m == "hooks":
                        j = json.loads(open(os.path.join(
                            FIXTURES, "qwen3-30b-a3b.eldr-hooks.json")).read())
                        body = json.dumps(j)
                    self._send(200, body.encode())
                else:
                    self._decode(req, m)

            def _decode(self, req, m):
                if not req.get("stream"):
                    self._send(200, json.dumps({
                        "id": "cmpl-x", "object": "text_completion", "created": int(time.time()),
                        "model": req.get("model"), "choices": [{
                            "index": 0, "text": "a b c", "finish_reason": "length"}],
                        "usage": {"prompt_tokens": 32, "completion_tokens": 3,
                                  "total_tokens": 35}}).encode())
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def chunk(data):
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                ev = b'data: {"id":"cmpl-x","choices":[{"index":0,"text":"a"}]}\n\n'
                chunk(ev)
                if m == "midstream-reset":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if m == "stall":
                    time.sleep(2.5)
                    self.close_connection = True
                    return
                chunk(ev)
                chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.handler = H
        self._serve(0)

    def _serve(self, port):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self.handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def restart(self):
        """An engine restart on the same port: every connection to the old process is cut (the
        router's pooled ones go stale), then a new server listens."""
        self.server.shutdown()
        self.server.server_close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns = []
        self._serve(self.port)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


def start_proxy(name, prefill, decode, extra_config=None, env=None):
    cfg = {"listen": "127.0.0.1:0", "prefill": [s.url for s in prefill],
           "decode": [s.url for s in decode], "policy": "jsq", "health_interval_ms": 0,
           "prefill_timeout_ms": 1000, "first_byte_timeout_ms": 1000, "idle_timeout_ms": 1000,
           "connect_timeout_ms": 500, "failure_threshold": 3, "open_ms": 60000,
           "admin_token": "t", "log_level": "info"}
    cfg.update(extra_config or {})
    path = os.path.join(TMP, name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return start(ELDR, ["serve", "-c", path], name, env=env)


def post(port, body, stream=False, timeout=20):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    b = {"model": MODEL, "prompt": "hello there", "max_tokens": 3}
    b.update(body or {})
    if stream:
        b["stream"] = True
    c.request("POST", "/v1/completions", body=json.dumps(b),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()  # http.client decodes chunked framing; a cut stream raises
    c.close()
    return r.status, data


def main():
    pre, dec = Stub("prefill"), Stub("decode")
    # The table provokes a failure per case on a single worker of each leg: circuits that never
    # open keep every case independent (failures count in a sliding window, so successes in
    # between would not reset them).
    proc, port = start_proxy("table", [pre], [dec], {"failure_threshold": 100})

    # (leg, mode, stream, expected client status or a predicate on (status, body))
    cases = [
        ("prefill", "status:400", False, lambda s, b: s == 400 and b"context length" in b),
        ("prefill", "status:404", False, lambda s, b: s == 404),
        ("prefill", "status:422", True, lambda s, b: s == 422),
        ("prefill", "status:500", False, lambda s, b: s in (502, 503) and b"500" in b),
        ("prefill", "status:503", True, lambda s, b: s in (502, 503)),
        ("prefill", "timeout", False, lambda s, b: s in (502, 503, 504) and b"timed out" in b),
        ("prefill", "reset", False, lambda s, b: s in (502, 503)),
        ("prefill", "malformed", False, lambda s, b: s == 502 and b"malformed" in b),
        ("prefill", "truncated", False, lambda s, b: s in (502, 503)),
        ("decode", "status:400", False, lambda s, b: s == 400),
        ("decode", "status:404", True, lambda s, b: s == 404),
        ("decode", "status:500", False, lambda s, b: s == 500),
        ("decode", "timeout", True, lambda s, b: s in (502, 504)),
        ("decode", "reset", False, lambda s, b: s == 502),
        ("decode", "midstream-reset", True,
         lambda s, b: s == 200 and b"failed mid-stream" in b),
        ("decode", "stall", True, lambda s, b: s == 200 and b"failed mid-stream" in b),
    ]
    print("every fault of each leg, one at a time")
    for leg, mode, stream, ok in cases:
        stub = pre if leg == "prefill" else dec
        stub.mode = mode
        dec_before = dec.posts
        try:
            st, body = post(port, {}, stream)
        except Exception as e:  # noqa: BLE001 - a cut connection is a failure here
            st, body = -1, repr(e).encode()
        stub.mode = "ok"
        check(ok(st, body), f"{leg} {mode} (stream={stream}) -> client gets {st}")
        check(proc.poll() is None, f"{leg} {mode}: the router is still up")
        check(idle(port), f"{leg} {mode}: in-flight counts back at zero")
        if leg == "prefill" and mode.startswith("status:4"):
            check(dec.posts == dec_before, f"{leg} {mode}: no decode leg after a prefill 4xx")
        for _ in range(2):
            post(port, {})
    st, _ = post(port, {})
    check(st == 200, "a normal request succeeds after the whole table")
    proc.terminate()
    check(proc.wait(timeout=20) == 0, "router exits 0 on SIGTERM after the fault table")

    print("a decoder answering 5xx gets its circuit opened, and then no prefill is sent")
    pre, dec = Stub("prefill"), Stub("decode")
    proc, port = start_proxy("circuit", [pre], [dec],
                             {"failure_threshold": 3, "breaker_window_ms": 60000})
    dec.mode = "status:500"
    for _ in range(3):
        post(port, {})
    m = metrics(port)
    check(m[f'eldr_worker_available{{role="decode",worker="{dec.url}"}}'] == 0,
          "three 500s open the decoder's circuit")
    before = pre.posts
    st, body = post(port, {})
    check(st == 503 and b"no decode worker" in body, "no decoder available -> 503")
    check(pre.posts == before, "no prefill was sent without a decoder to take the KV")
    check(idle(port), "in-flight zero")
    proc.terminate()
    check(proc.wait(timeout=20) == 0, "router exits 0 on SIGTERM")

    print("a 5xx decoder does not attract the traffic (jsq, two decoders)")
    pre2, good, bad = Stub("prefill"), Stub("decode"), Stub("decode")
    bad.mode = "status:500"
    proc2, port2 = start_proxy("two", [pre2], [good, bad])
    codes = [post(port2, {})[0] for _ in range(20)]
    check(bad.posts <= 3 and good.posts >= 17,
          f"the failing decoder got {bad.posts} of 20 requests, the good one {good.posts}")
    check(codes.count(200) >= 17, f"{codes.count(200)} of 20 requests succeeded")
    proc2.terminate()
    proc2.wait(timeout=20)

    print("an engine restarted on its port: the pooled connections to the old process are stale")
    pre5, dec5 = Stub("prefill"), Stub("decode")
    proc5, port5 = start_proxy("restart", [pre5], [dec5], {"threads": 1})
    pre5.mode = dec5.mode = "slow-ok"
    pool = [threading.Thread(target=post, args=(port5, {}, i % 2 == 0)) for i in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    pre5.mode = dec5.mode = "ok"
    check(len(pre5.conns) >= 2 and len(dec5.conns) >= 2,
          f"4 concurrent requests left {len(pre5.conns)} prefill and {len(dec5.conns)} decode "
          "connections to pool")
    pre5.restart()
    dec5.restart()
    time.sleep(0.2)
    for stream in (False, True):
        st, body = post(port5, {}, stream)
        check(st == 200 and b"failed" not in body,
              f"the first request after the restart (stream={stream}) succeeds: {st} {body[:120]}")
    check(idle(port5), "in-flight zero after the restart")
    proc5.terminate()
    proc5.wait(timeout=20)

    retries_and_deadlines()

    print("engines with --api-key, and the ELDR hooks' eldr_sig never reaches decode")
    pre3, dec3 = Stub("prefill"), Stub("decode")
    pre3.mode = "hooks"
    proc3, port3 = start_proxy("key", [pre3], [dec3], {"health_interval_ms": 100},
                               env={"ELDR_UPSTREAM_API_KEY": "k-123"})
    st, _ = post(port3, {})
    check(st == 200, "request through key-protected engines succeeds")
    # Probes every 100 ms; a loaded machine may take longer to send the first ones.
    t_end = time.time() + 10
    while not (pre3.probes and dec3.probes) and time.time() < t_end:
        time.sleep(0.05)
    legs = pre3.auth + dec3.auth + pre3.probes + dec3.probes
    check(all(a == "Bearer k-123" for a in legs) and pre3.auth and dec3.auth and pre3.probes,
          "every leg and health probe carries Authorization: Bearer <key> from "
          "ELDR_UPSTREAM_API_KEY")
    check(dec3.eldr_sig_seen == 0, "no eldr_sig reached the decode engine")
    m = metrics(port3)
    check(m.get(f'eldr_prefill_signatures_total{{role="prefill",worker="{pre3.url}",'
                f'source="eldr-hooks"}}') == 1, "the hooks' signature was decoded and counted")
    proc3.terminate()
    proc3.wait(timeout=20)

    print("a prefill without routed experts is counted, warned about, and --check says so")
    pre4, dec4 = Stub("prefill"), Stub("decode")
    global PROMPT_OK
    saved = PROMPT_OK
    j = json.loads(PROMPT_OK)
    del j["choices"][0]["routed_experts"]
    PROMPT_OK = json.dumps(j)
    proc4, port4 = start_proxy("none", [pre4], [dec4])
    for _ in range(3):
        post(port4, {})
    m = metrics(port4)
    check(m.get(f'eldr_prefill_signatures_total{{role="prefill",worker="{pre4.url}",'
                f'source="none"}}') == 3, "three answers without a signature counted")
    proc4.terminate()
    proc4.wait(timeout=20)
    log = log_of("none")
    check(log.count("event=no_signature") == 1 and "--enable-return-routed-experts" in log,
          "one rate-limited warning naming the cause and the fix")
    cfg = os.path.join(TMP, "none.json")  # written by start_proxy
    r = subprocess.run([ELDR, "serve", "-c", cfg, "--check"], capture_output=True, text=True)
    check(r.returncode != 0 and "0 of 1" in r.stdout, "--check exits non-zero: no signature")
    PROMPT_OK = saved
    r = subprocess.run([ELDR, "serve", "-c", cfg, "--check"], capture_output=True, text=True)
    check(r.returncode == 0 and "1 of 1" in r.stdout and " vllm " in r.stdout,
          "--check exits 0 and names the source when the prefill returns routed experts")


def post_h(port, body, headers, stream=False, timeout=20):
    """post() with extra request headers; returns (status, body bytes, response headers)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    b = {"model": MODEL, "prompt": "hello there", "max_tokens": 3}
    b.update(body or {})
    if stream:
        b["stream"] = True
    h = {"Content-Type": "application/json"}
    h.update(headers)
    c.request("POST", "/v1/completions", body=json.dumps(b), headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data, r


def retries_and_deadlines():
    print("retries by status class, with backoff, never after the first byte")
    p1, p2 = Stub("prefill"), Stub("prefill")
    d1, d2 = Stub("decode"), Stub("decode")
    retry_cfg = {"max_retries": 2, "retry_initial_backoff_ms": 100, "retry_jitter_factor": 0,
                 "failure_threshold": 1000}
    proc, port = start_proxy("retry", [p1, p2], [d1, d2], retry_cfg)
    # A prefill 503 goes to the other prefill worker after a backoff.
    p1.mode = "status:503"
    codes = [post(port, {"prompt": f"retry prompt {i}"})[0] for i in range(8)]
    m = metrics(port)
    check(codes == [200] * 8, f"every request succeeds through the healthy prefill: {codes}")
    check(p1.posts >= 1 and m.get("eldr_prefill_retries_total") == p1.posts,
          f"each of the {p1.posts} prefill 503s was retried once on the other worker")
    check(m.get("eldr_retry_backoff_seconds_count") == p1.posts and
          m.get("eldr_retry_backoff_seconds_sum", 0) >= 0.1 * p1.posts - 1e-9,
          "each retry waited the 100 ms initial backoff")
    # Both prefill workers 503: each is tried once (distinct workers), then 503.
    p2.mode = "status:503"
    before = p1.posts + p2.posts
    st, body = post(port, {})
    check(st == 503 and b"answered 503" in body and p1.posts + p2.posts - before == 2,
          f"two prefill 503s -> 503 after trying both workers ({st})")
    # A 4xx is the request's fault: never retried.
    p1.mode = p2.mode = "status:400"
    before = p1.posts + p2.posts
    st, _ = post(port, {})
    check(st == 400 and p1.posts + p2.posts - before == 1, "a prefill 400 is not retried")
    p1.mode = p2.mode = "ok"
    # A decoder answering 503 before any byte: the other decoder takes the request.
    d1.mode = "status:503"
    r0 = metrics(port).get("eldr_decode_retries_total", 0)
    d1_before = d1.posts
    # JSQ breaks ties at random: 24 requests leave d1 untried with probability 2^-24 (with 8,
    # 1/256, it happened once).
    codes = [post(port, {"prompt": f"decode retry {i}"}, stream=(i % 2 == 0))[0]
             for i in range(24)]
    m = metrics(port)
    failed = d1.posts - d1_before
    check(codes == [200] * 24, f"decode 503s are retried on the other decoder: {codes}")
    check(failed >= 1 and m.get("eldr_decode_retries_total") - r0 == failed,
          f"each of the {failed} decode 503s was retried")
    # A decode 500 may have consumed the KV: relayed, not retried.
    d1.mode = d2.mode = "status:500"
    before = d1.posts + d2.posts
    st, _ = post(port, {})
    check(st == 500 and d1.posts + d2.posts - before == 1, "a decode 500 is not retried")
    # After the first byte reached the client: never a retry.
    d1.mode = d2.mode = "midstream-reset"
    before = d1.posts + d2.posts
    st, body = post(port, {}, stream=True)
    check(st == 200 and b"failed mid-stream" in body and d1.posts + d2.posts - before == 1,
          "a stream cut after its first byte ends with an SSE error, never retried")
    d1.mode = d2.mode = "ok"
    check(idle(port), "in-flight zero after the retries")
    proc.terminate()
    check(proc.wait(timeout=20) == 0, "router exits 0")

    print("the request deadline: X-Eldr-Deadline-Ms and request_timeout_ms")
    pre, dec = Stub("prefill"), Stub("decode")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    mport = probe.getsockname()[1]
    probe.close()
    # idle_timeout_ms beyond the stall below, so that only the deadline can end that stream.
    proc, port = start_proxy("deadline", [pre], [dec],
                             {"failure_threshold": 1000, "metrics_port": mport,
                              "idle_timeout_ms": 10000})
    c = http.client.HTTPConnection("127.0.0.1", mport, timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    page = r.read()
    check(r.status == 200 and b"eldr_build_info" in page, "metrics_port serves /metrics")
    c.request("GET", "/v1/models")
    r = c.getresponse()
    r.read()
    check(r.status == 404, "metrics_port serves nothing else (404)")
    c.request("POST", "/metrics", body=b"{}")
    r = c.getresponse()
    r.read()
    check(r.status == 405 and r.getheader("Allow") == "GET", "POST /metrics there -> 405")
    c.close()
    for bad in ["abc", "0", "-1", "10ms", "99999999999"]:
        st, body, _ = post_h(port, {}, {"X-Eldr-Deadline-Ms": bad})
        check(st == 400 and b"X-Eldr-Deadline-Ms" in body, f"X-Eldr-Deadline-Ms: {bad} -> 400")
    check(pre.posts == 0, "a bad deadline header reaches no engine")
    st, _, _ = post_h(port, {}, {"X-Eldr-Deadline-Ms": "5000"})
    check(st == 200, "a request within its deadline succeeds")
    # Before the first byte (the prefill hangs longer than the deadline, which is shorter than
    # prefill_timeout_ms): 504 with a JSON error, and the worker is not blamed.
    pre.mode = "timeout"
    st, body, r = post_h(port, {}, {"X-Eldr-Deadline-Ms": "300", "X-Request-Id": "dl-1"})
    pre.mode = "ok"
    err = json.loads(body).get("error", {}) if st == 504 else {}
    check(st == 504 and err.get("type") == "timeout" and "300 ms" in err.get("message", "") and
          r.getheader("X-Request-Id") == "dl-1",
          f"a deadline passing during prefill -> 504 timeout JSON ({st} {body[:120]!r})")
    m = metrics(port)
    check(m.get(f'eldr_worker_errors_total{{role="prefill",worker="{pre.url}"}}', 0) == 0,
          "the deadline's cut is not counted against the prefill worker")
    # After the first byte (the decode stream stalls for 2.5 s after it): an SSE error event
    # with code 504 and a proper end of the chunked body.
    dec.mode = "stall"
    try:
        st, body, _ = post_h(port, {}, {"X-Eldr-Deadline-Ms": "1500"}, stream=True)
    except Exception as e:  # noqa: BLE001 - a cut body is the failure this checks for
        st, body = -1, repr(e).encode()
    dec.mode = "ok"
    events = [json.loads(line[6:]) for line in body.decode(errors="replace").splitlines()
              if line.startswith("data: {")]
    last = events[-1].get("error", {}) if events else {}
    check(st == 200 and len(events) == 2 and last.get("code") == 504 and
          last.get("type") == "timeout",
          f"a deadline passing mid-stream -> SSE error event 504, body ended ({body[-160:]!r})")
    check(idle(port), "in-flight zero after the deadlines")
    m = metrics(port)
    check(m.get("eldr_request_deadline_exceeded_total") == 2, "both deadlines counted")
    check(m.get('eldr_responses_total{code="504"}') == 1, "one 504 answered")
    proc.terminate()
    check(proc.wait(timeout=20) == 0, "router exits 0")

    # The operator's limit, and a header cannot extend it.
    pre, dec = Stub("prefill"), Stub("decode")
    proc, port = start_proxy("timeout", [pre], [dec], {"request_timeout_ms": 300})
    pre.mode = "timeout"
    st, body, _ = post_h(port, {}, {"X-Eldr-Deadline-Ms": "60000"})
    pre.mode = "ok"
    check(st == 504 and b"300 ms" in body,
          f"request_timeout_ms bounds the request whatever the header says ({st})")
    proc.terminate()
    check(proc.wait(timeout=20) == 0, "router exits 0")


if __name__ == "__main__":
    run(main, "fault")
