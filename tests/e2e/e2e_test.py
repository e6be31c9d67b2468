#!/usr/bin/python3
"""End-to-end test of `eldr serve` in front of emulated engines, on loopback ports chosen at run
time: 2 prefill + 4 decode emulators behind one proxy (plus small side set-ups for the faults that
need their own configuration). Every request must complete with an intact stream or a clear
error, and every in-flight count must return to zero.

Usage: e2e_test.py path/to/eldr      (stdlib only; run by ctest)
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from harness import MODEL, TMP, check, metrics, promtool_check, request, run, wait_idle
from harness import start as _start

ELDR = os.path.abspath(sys.argv[1])


def start(args, name):
    return _start(ELDR, args, name)


def emulator(role, name, *extra):
    return start(["emulate", "--role", role, "--listen", "127.0.0.1:0", "--time-scale", "0.25",
                  *extra], name)


def proxy(name, prefill_ports, decode_ports, *extra):
    args = ["serve", "--listen", "127.0.0.1:0",
            "--prefill", ",".join(f"http://127.0.0.1:{p}" for p in prefill_ports),
            "--decode", ",".join(f"http://127.0.0.1:{p}" for p in decode_ports),
            "--health-interval-ms", "200", "--log-level", "info", *extra]
    return start(args, name)


def raw_exchange(port, head, then=None):
    """Sends raw bytes; with `then`, reads a first answer before sending it. Reads to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sk:
        sk.sendall(head)
        first = b""
        if then is not None:
            first = sk.recv(64)
            sk.sendall(then)
        resp = b""
        while True:
            d = sk.recv(65536)
            if not d:
                break
            resp += d
    return first, resp


class Stream:
    """A streaming completion read event by event over a raw socket (so it can be cut)."""

    def __init__(self, port, max_tokens, prompt, chat=False):
        body = {"model": MODEL, "max_tokens": max_tokens, "stream": True}
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        data = json.dumps(body).encode()
        path = "/v1/chat/completions" if chat else "/v1/completions"
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        self.buf = b""
        self.status = None
        self.chunked = False
        self.events = []
        self.done = False  # saw the terminating chunk
        self.body = b""

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _headers(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        self.chunked = hdrs.get("transfer-encoding", "").lower() == "chunked"
        self.length = int(hdrs.get("content-length", "0"))

    def _chunk(self):
        while b"\r\n" not in self.buf:
            self._fill()
        size_line, rest = self.buf.split(b"\r\n", 1)
        n = int(size_line.split(b";")[0], 16)
        while len(rest) < n + 2:
            self._fill()
            size_line, rest = self.buf.split(b"\r\n", 1)
        data, self.buf = rest[:n], rest[n + 2:]
        if n == 0:
            self.done = True
        return data

    def read_events(self, count=None):
        """Reads until `count` more events (or the end of the stream)."""
        if self.status is None:
            self._headers()
            if not self.chunked:
                while len(self.buf) < self.length:
                    self._fill()
                self.body = self.buf[:self.length]
                self.done = True
                return
        want = None if count is None else len(self.events) + count
        pending = b""
        while not self.done and (want is None or len(self.events) < want):
            pending += self._chunk()
            while b"\n\n" in pending:
                ev, pending = pending.split(b"\n\n", 1)
                self.events.append(ev.decode())

    def close(self):
        self.sock.close()

    def token_events(self):
        """Events carrying a token: not the chat role delta, a usage chunk or an error."""
        out = []
        for e in self.events:
            if not e.startswith("data: {") or '"error"' in e:
                continue
            j = json.loads(e[6:])
            c = j.get("choices") or [{}]
            if c[0].get("text") or (c[0].get("delta") or {}).get("content"):
                out.append(j)
        return out

    def error_events(self):
        return [json.loads(e[6:]) for e in self.events if e.startswith("data: {") and
                '"error"' in e]


def intact(s, max_tokens):
    toks = s.token_events()
    return (s.status == 200 and s.done and len(toks) == max_tokens and not s.error_events()
            and s.events[-1] == "data: [DONE]"
            and toks[-1]["choices"][0]["finish_reason"] == "length")


def main():
    subprocess.run([ELDR, "emulate", "--write-space", os.path.join(TMP, "space.json"), "-k", "4"],
                   check=True, capture_output=True)
    prefill = [emulator("prefill", f"p{i}") for i in range(2)]
    decode = [emulator("decode", f"d{i}") for i in range(4)]
    pp = [p for _, p in prefill]
    dp = [p for _, p in decode]
    proxy_proc, port = proxy("proxy", pp, dp, "--space", os.path.join(TMP, "space.json"),
                             "--admin-token", "s3cret", "--max-body-bytes", "1000000")

    print("normal traffic: 48 concurrent requests (stream, non-stream, chat)")
    results = {}

    def worker(i):
        try:
            kind = i % 3
            if kind == 0:
                s = Stream(port, 12, f"prompt {i % 7} " + "alpha beta " * (i % 11 + 3))
                s.read_events()
                s.close()
                results[i] = intact(s, 12)
            elif kind == 1:
                s = Stream(port, 9, f"chat {i} hello there", chat=True)
                s.read_events()
                s.close()
                results[i] = intact(s, 9) and "delta" in s.token_events()[0]["choices"][0]
            else:
                st, body = request(port, "POST", "/v1/completions",
                                   {"model": MODEL, "prompt": f"plain {i} x y z", "max_tokens": 5})
                j = json.loads(body)
                results[i] = st == 200 and j["usage"]["completion_tokens"] == 5 and \
                    j["choices"][0]["text"].count("tok") == 5
        except Exception as e:  # noqa: BLE001 - recorded as a failure
            results[i] = False
            print("   request", i, "raised", e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(all(results.get(i) for i in range(48)), "every request completes with an intact stream")
    check(wait_idle(port), "in-flight counts return to zero")
    m = metrics(port)
    dec = sum(v for k, v in m.items() if k.startswith("eldr_worker_requests_total{role=\"decode\""))
    pre = sum(v for k, v in m.items()
              if k.startswith("eldr_worker_requests_total{role=\"prefill\""))
    check(dec == 48 and pre == 48, f"one prefill and one decode leg per request ({pre}, {dec})")
    check(m['eldr_responses_total{code="200"}'] == 48, "48 responses counted as 200")
    lat = {role: sum(v for k, v in m.items()
                     if k.startswith(f'eldr_upstream_latency_seconds_count{{role="{role}"'))
           for role in ("prefill", "decode")}
    check(lat["prefill"] == 48 and lat["decode"] == 48,
          f"upstream latency observed once per leg ({lat})")
    check(m["eldr_decision_latency_seconds_count"] == 48, "48 routing decisions timed")
    promtool_check(port, "the router's /metrics")
    check(m.get('eldr_build_info{version="0.2.0",policy="eldr",model="qwen3-30b-a3b"}') == 1 and
          m.get("process_resident_memory_bytes", 0) > 1e6 and m.get("process_open_fds", 0) > 3 and
          m.get("process_start_time_seconds", 0) > 1.6e9,
          "build info and process metrics are exported")
    check(m["eldr_policy_fallbacks_total"] == 0, "eldr used its signal (no fallback)")
    check(m["eldr_band_size_count"] == 48, "band sizes recorded")

    print("probes and methods")
    for path, want in [("/liveness", 200), ("/readiness", 200), ("/health", 200)]:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        check(r.status == want, f"GET {path} -> {want} ({r.status})")
    for method, path, allow in [("POST", "/health", "GET"), ("DELETE", "/liveness", "GET"),
                                ("POST", "/metrics", "GET"), ("GET", "/v1/completions", "POST"),
                                ("PUT", "/v1/chat/completions", "POST"),
                                ("GET", "/admin/reload", "POST"),
                                ("PUT", "/admin/workers", "GET, POST, DELETE")]:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request(method, path, body=b"" if method != "GET" else None,
                  headers={"Authorization": "Bearer s3cret"})
        r = c.getresponse()
        body = r.read()
        check(r.status == 405 and r.getheader("Allow") == allow and b"error" in body,
              f"{method} {path} -> 405, Allow: {allow} ({r.status}, {r.getheader('Allow')})")

    print("X-Request-Id is kept across both legs")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/v1/completions", body=json.dumps({"model": MODEL, "prompt": "rid test",
                                                          "max_tokens": 2}),
              headers={"Content-Type": "application/json", "X-Request-Id": "rid-42"})
    r = c.getresponse()
    j = json.loads(r.read())
    c.close()
    check(r.status == 200 and j["id"] == "cmpl-rid-42",
          "the decode engine saw the client's id and the prefill's transfer params matched it")

    print("bad input")
    st, body = request(port, "POST", "/v1/completions", b"{not json")
    check(st == 400 and b"invalid_request_error" in body, "malformed JSON -> 400 OpenAI error")
    st, body = request(port, "POST", "/v1/completions", {"model": MODEL})
    check(st == 400 and b"prompt" in body, "missing prompt -> 400")
    # The limit applies on the declared length, before the body is read.
    _, resp = raw_exchange(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                           b"application/json\r\nContent-Length: 2000000\r\n\r\n{\"prompt\": \"" +
                           b"x" * 1000)
    check(resp.startswith(b"HTTP/1.1 413") and b"request_too_large" in resp,
          "oversized body -> 413 OpenAI error, connection closed")
    body = json.dumps({"model": MODEL, "prompt": "expect " * 400, "max_tokens": 2}).encode()
    first, resp = raw_exchange(
        port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: " +
        str(len(body)).encode() + b"\r\n\r\n", then=body)
    check(first.startswith(b"HTTP/1.1 100 Continue") and b"HTTP/1.1 200" in resp,
          "Expect: 100-continue is answered before the body is sent")
    st, _ = request(port, "GET", "/nope")
    check(st == 404, "unknown path -> 404")

    print("HTTP correctness: request ids, HTTP/1.0 streams, malformed requests")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/v1/completions", json.dumps({"model": MODEL, "prompt": "id please",
                                                     "max_tokens": 2}),
              {"Content-Type": "application/json", "X-Request-Id": "client-id-7"})
    r = c.getresponse()
    r.read()
    check(r.status == 200 and r.getheader("X-Request-Id") == "client-id-7",
          "the client's X-Request-Id is echoed")
    c.request("POST", "/v1/completions", b"{not json", {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    check(r.status == 400 and (r.getheader("X-Request-Id") or "").startswith("eldr-"),
          "an error carries a minted X-Request-Id")
    c.close()
    body = json.dumps({"model": MODEL, "prompt": "old client", "max_tokens": 3,
                       "stream": True}).encode()
    _, resp = raw_exchange(port, b"POST /v1/completions HTTP/1.0\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\nX-Request-Id: s-1\r\n"
                           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    head, _, rest = resp.partition(b"\r\n\r\n")
    check(b" 200 " in head.split(b"\r\n")[0] and b"chunked" not in head.lower() and
          b"connection: close" in head.lower() and b"X-Request-Id: s-1" in head,
          "HTTP/1.0 stream: not chunked, Connection: close, id echoed")
    check(rest.startswith(b"data: ") and b"data: [DONE]" in rest,
          "HTTP/1.0 stream: the SSE events arrive raw and end with the close")
    _, resp = raw_exchange(port, b"GARBAGE\r\n\r\n")
    check(resp.startswith(b"HTTP/1.1 400"), "a malformed request line -> 400, not a silent close")
    _, resp = raw_exchange(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " +
                           b"a" * 70000 + b"\r\n\r\n")
    check(resp.startswith(b"HTTP/1.1 431"), "headers over 60 KiB -> 431")
    _, resp = raw_exchange(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\n")
    check(resp.startswith(b"HTTP/1.1 400") and b"Transfer-Encoding" in resp,
          "Content-Length with Transfer-Encoding -> 400")
    _, resp = raw_exchange(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    check(resp.startswith(b"HTTP/1.1 400"), "a bad chunk size -> 400")

    print("admin API")
    st, _ = request(port, "GET", "/admin/workers")
    check(st == 401, "admin without token -> 401")
    st, _ = request(port, "GET", "/admin/workers", headers={"Authorization": "Bearer wrong"})
    check(st == 401, "admin with a wrong token -> 401")
    auth = {"Authorization": "Bearer s3cret"}
    st, body = request(port, "GET", "/admin/workers", headers=auth)
    check(st == 200 and len(json.loads(body)["workers"]) == 6, "admin lists 6 workers")
    st, _ = request(port, "GET", "/admin/workers", headers={"Authorization": "bEaReR s3cret"})
    check(st == 200, "the Bearer scheme is case-insensitive")
    st, body = request(port, "POST", "/admin/drain",
                       {"role": "decode", "url": f"http://127.0.0.1:{dp[0]}", "drain": "false"},
                       headers=auth)
    check(st == 400 and b"'drain' must be a boolean" in body,
          "a string where a boolean belongs -> 400, nothing drained")
    st, body = request(port, "POST", "/admin/drain", {"role": 7, "url": "x"}, headers=auth)
    check(st == 400 and b"'role' must be a string" in body, "a number where a string belongs -> 400")

    print("admin: drain, remove and add a decode worker")
    d0 = f"http://127.0.0.1:{dp[0]}"
    st, _ = request(port, "POST", "/admin/drain", {"role": "decode", "url": d0}, headers=auth)
    check(st == 200, "drain accepted")
    before = metrics(port)[f'eldr_worker_requests_total{{role="decode",worker="{d0}"}}']
    for i in range(8):
        request(port, "POST", "/v1/completions", {"model": MODEL, "prompt": f"drained {i}",
                                                  "max_tokens": 1})
    after = metrics(port)[f'eldr_worker_requests_total{{role="decode",worker="{d0}"}}']
    check(after == before, "a draining decoder gets no new requests")
    request(port, "POST", "/admin/drain", {"role": "decode", "url": d0, "drain": False},
            headers=auth)
    st, body = request(port, "DELETE", "/admin/workers", {"role": "decode", "url": d0},
                       headers=auth)
    check(st == 200 and len(json.loads(body)["workers"]) == 5 and
          "degraded" in json.loads(body)["policy"],
          "remove: 5 workers left, eldr degrades to jsq (space k != decoders)")
    st, body = request(port, "POST", "/admin/workers", {"role": "decode", "url": d0}, headers=auth)
    check(st == 200 and len(json.loads(body)["workers"]) == 6, "add: back to 6 workers")
    st, body = request(port, "POST", "/admin/workers", {"role": "decode", "url": d0}, headers=auth)
    check(st == 409, "adding a worker twice -> 409")
    st, body = request(port, "POST", "/admin/reload", {}, headers=auth)
    check(st == 200 and json.loads(body)["policy"] == "eldr", "reload restores eldr")

    print("hot reload while streams are in flight")
    streams = [Stream(port, 40, f"reload {i} gamma") for i in range(4)]
    for s in streams:
        s.read_events(2)
    st, body = request(port, "POST", "/admin/reload", {}, headers=auth)
    check(st == 200 and json.loads(body)["version"] >= 1, "reload swaps the space")
    st, body = request(port, "POST", "/admin/reload",
                       {"space": os.path.join(TMP, "missing.json")}, headers=auth)
    check(st == 404, "reload of a missing file -> 404, old space kept")
    for s in streams:
        s.read_events()
        s.close()
    check(all(intact(s, 40) for s in streams), "in-flight streams unaffected by reload")

    print("client disconnect")
    before = sum(metrics(p)["eldr_emu_cancelled_total"] for p in dp)
    s = Stream(port, 3000, "disconnect me please")
    s.read_events(3)
    s.close()
    time.sleep(0.5)
    check(wait_idle(port), "in-flight back to zero after a client disconnect")
    after = sum(metrics(p)["eldr_emu_cancelled_total"] for p in dp)
    check(after == before + 1, "the decode leg was cancelled upstream")
    check(metrics(port)["eldr_client_disconnects_total"] >= 1, "disconnect counted")

    print("decode worker killed mid-stream")
    streams = [Stream(port, 400, f"victim {i} " + "delta " * i) for i in range(8)]
    for s in streams:
        s.read_events(2)
    st, body = request(port, "GET", "/admin/workers", headers=auth)
    busy = [w for w in json.loads(body)["workers"] if w["role"] == "decode" and w["in_flight"] > 0]
    victim_url = busy[0]["url"]
    victim = decode[dp.index(int(victim_url.rsplit(":", 1)[1]))][0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for s in streams:
        s.read_events()
        s.close()
    broken = [s for s in streams if s.error_events()]
    whole = [s for s in streams if intact(s, 400)]
    check(len(broken) == busy[0]["in_flight"] and len(broken) + len(whole) == 8,
          f"streams on the dead decoder end with an error event ({len(broken)}), "
          f"the others complete ({len(whole)})")
    check(all(s.done for s in broken), "broken streams are terminated cleanly (last chunk)")
    check(wait_idle(port), "in-flight back to zero after the decoder died")
    m = metrics(port)
    check(m["eldr_midstream_failures_total"] == len(broken), "mid-stream failures counted")
    ok = 0
    for i in range(16):
        s = Stream(port, 4, f"after kill {i}")
        s.read_events()
        s.close()
        ok += intact(s, 4)
    check(ok == 16, "requests after the kill all complete (dead decoder avoided)")
    dp_alive = [p for (proc, p) in decode if proc.poll() is None]

    print("prefill worker down")
    prefill[0][0].send_signal(signal.SIGKILL)
    prefill[0][0].wait()
    ok = 0
    for i in range(16):
        st, body = request(port, "POST", "/v1/completions",
                           {"model": MODEL, "prompt": f"prefill down {i}", "max_tokens": 3})
        ok += st == 200
    check(ok == 16, "all requests succeed with one prefill worker down")
    check(wait_idle(port), "in-flight zero after prefill failures")

    print("malformed upstream payloads")
    _, bad_port = emulator("prefill", "pbad", "--fault", "malformed")
    _, port2 = proxy("proxy2", [bad_port], dp[1:], "--policy", "jsq")
    st, body = request(port2, "POST", "/v1/completions", {"model": MODEL, "prompt": "x y z"})
    check(st == 502 and b"malformed" in body and b"upstream_error" in body,
          "malformed routed experts -> 502 with a clear message")
    check(metrics(port2)["eldr_malformed_payloads_total"] == 1, "malformed payload counted")
    check(wait_idle(port2), "in-flight zero after a malformed payload")

    print("the other expert encodings (vLLM nested lists, eldr_sig) route on their signal")
    subprocess.run([ELDR, "emulate", "--write-space", os.path.join(TMP, "space3.json"), "-k", "3"],
                   check=True, capture_output=True)
    for fmt, policy in [("vllm-list", "eldr"), ("eldr_sig", "eldr"), ("vllm-npy", "eldr-plus")]:
        _, pport = emulator("prefill", f"p-{fmt}-{policy}", "--experts-format", fmt)
        _, xport = proxy(f"proxy-{fmt}-{policy}", [pport], dp_alive, "--space",
                         os.path.join(TMP, "space3.json"), "--policy", policy)
        ok = 0
        for i in range(6):
            s = Stream(xport, 5, f"{fmt} prompt {i} " + "epsilon " * (i + 2))
            s.read_events()
            s.close()
            ok += intact(s, 5)
        m = metrics(xport)
        check(ok == 6 and m["eldr_policy_fallbacks_total"] == 0 and
              m["eldr_decision_latency_seconds_count"] == 6,
              f"{fmt}, {policy}: all requests complete, none fell back to load balancing")

    print("SGLang bootstrap flow (decode chosen first, signature predicted from the prefix)")
    subprocess.run([ELDR, "emulate", "--write-space", os.path.join(TMP, "space2.json"), "-k", "2"],
                   check=True, capture_output=True)
    _, sp = emulator("prefill", "sg-p", "--backend", "sglang")
    sd = [emulator("decode", f"sg-d{i}", "--backend", "sglang")[1] for i in range(2)]
    _, sgport = proxy("proxy-sglang", [sp], sd, "--backend", "sglang", "--space",
                      os.path.join(TMP, "space2.json"))
    ok = 0
    for i in range(2):
        s = Stream(sgport, 6, "the same sglang prompt " + "zeta " * 40)
        s.read_events()
        s.close()
        ok += intact(s, 6)
        time.sleep(0.3)  # the prefill leg may finish just after the decode leg
    m = metrics(sgport)
    check(ok == 2, "SGLang flow: both requests complete")
    check(m["eldr_policy_fallbacks_total"] == 1,
          "first request balances load, the repeat is routed on its predicted signature")
    check(wait_idle(sgport), "SGLang flow: in-flight zero")

    print("concurrency limit")
    # This proxy also runs the busy-polling event loop.
    proc3, port3 = proxy("proxy3", pp[1:], dp[1:], "--policy", "jsq", "--max-in-flight", "1",
                         "--admission-queue", "0", "--busy-poll-us", "200")
    s = Stream(port3, 300, "holding the only slot")
    s.read_events(1)
    st, body = request(port3, "POST", "/v1/completions", {"model": MODEL, "prompt": "a"})
    check(st == 429 and b"rate_limit_error" in body, "over max_in_flight -> 429")
    s.close()
    check(wait_idle(port3), "busy-polling proxy: in-flight zero after the stream")
    proc3.send_signal(signal.SIGTERM)
    check(proc3.wait(timeout=20) == 0, "the busy-polling proxy exits 0 on SIGTERM")

    print("admission: a bounded FIFO queue in front of max_in_flight")
    _, qport = proxy("proxy-queue", pp[1:], dp[1:], "--policy", "jsq", "--max-in-flight", "1",
                     "--admission-queue", "1", "--admission-timeout-ms", "4000")
    s = Stream(qport, 40, "holding the slot")
    s.read_events(1)
    result = {}

    def waiter():
        result["b"] = request(qport, "POST", "/v1/completions",
                              {"model": MODEL, "prompt": "queued", "max_tokens": 2})
    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.time() + 5
    while time.time() < deadline and metrics(qport).get("eldr_admission_queue_length") != 1:
        time.sleep(0.02)
    c = http.client.HTTPConnection("127.0.0.1", qport, timeout=30)
    c.request("POST", "/v1/completions", json.dumps({"model": MODEL, "prompt": "c",
                                                     "max_tokens": 1}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    check(r.status == 429 and r.getheader("Retry-After") == "4",
          "queue full -> 429 with Retry-After")
    c.close()
    s.read_events()
    s.close()
    t.join(timeout=20)
    check(result.get("b", (0,))[0] == 200, "the queued request gets the freed slot -> 200")
    s = Stream(qport, 4000, "holding the slot for long")
    s.read_events(1)
    t0 = time.time()
    st, body = request(qport, "POST", "/v1/completions",
                       {"model": MODEL, "prompt": "too late", "max_tokens": 1})
    check(st == 503 and b"admission_timeout_ms" in body and 3.5 < time.time() - t0 < 8,
          "a wait beyond admission_timeout_ms -> 503")
    s.close()
    check(wait_idle(qport), "admission: idle again, nothing leaked")
    m = metrics(qport)
    check(m.get('eldr_admission_rejected_total{reason="queue_full"}') == 1 and
          m.get('eldr_admission_rejected_total{reason="timeout"}') == 1 and
          m.get("eldr_admission_queue_length") == 0, "admission metrics count both refusals")

    print("drain deadline: a stream still open ends with an SSE error and a proper end")
    _, eport = emulator("decode", "slow-decode")  # 0.25 time scale: ~tens of ms per token
    proc4, dport4 = proxy("proxy-drain", pp, [eport], "--policy", "rr", "--drain-timeout-ms",
                          "300")
    s = Stream(dport4, 4000, "a long answer")
    s.read_events(2)
    t0 = time.time()
    proc4.send_signal(signal.SIGTERM)
    try:
        s.read_events()
    except EOFError:
        pass
    s.close()
    last = s.events[-1] if s.events else ""
    check(s.done and '"code":503' in last and "shutting down" in last,
          f"the stream ends with a 503 SSE error event and the terminating chunk ({last[:120]})")
    check(proc4.wait(timeout=20) == 0 and time.time() - t0 < 5,
          "the proxy exits 0 soon after drain_timeout_ms")
    proc5, dport5 = proxy("proxy-drain2", pp, [eport], "--policy", "rr", "--drain-timeout-ms",
                          "30000")
    s = Stream(dport5, 4000, "another long answer")
    s.read_events(2)
    proc5.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.time()
    proc5.send_signal(signal.SIGTERM)
    rc = proc5.wait(timeout=10)
    check(rc == 128 + signal.SIGTERM and time.time() - t0 < 2,
          f"a second SIGTERM while draining exits at once (rc {rc})")
    s.close()

    print("graceful shutdown drains in-flight requests")
    s = Stream(port, 60, "draining")
    s.read_events(2)
    proxy_proc.send_signal(signal.SIGTERM)
    s.read_events()
    s.close()
    check(intact(s, 60), "the in-flight stream completes during shutdown")
    check(proxy_proc.wait(timeout=20) == 0, "the proxy exits 0 after draining")


if __name__ == "__main__":
    run(main, "end-to-end")
