#!/usr/bin/python3
"""Soak test: `eldr serve` over emulated engines (3 prefill, 4 decode) at a steady request rate
with a fault mix, for a set time. Each second it samples the router's RSS, open fds and threads
(/proc/PID) and every in-flight gauge of /metrics into a CSV. It fails when

  - RSS grows after warm-up beyond a bound (least-squares slope times the post-warm-up time),
  - open fds or threads at the end (idle) exceed their idle count at the start plus a margin, or
    the peak fds of the second half exceed the first half's peak plus a margin,
  - any in-flight gauge (active requests, admission queue, every worker's in-flight count) is not
    back at zero once the load stops,
  - any request did not get a well-formed answer of the kind its fault allows (below), or the
    router's response counters disagree with what the clients received.

Request kinds (shares of the traffic) and what the client must get:
  stream      /v1/completions, stream      intact SSE: max_tokens token events, [DONE], ended
  plain       /v1/completions              200 JSON, usage.completion_tokens == max_tokens
  chat        /v1/chat/completions, stream intact SSE
  slow        stream read slowly (4 KiB receive buffer, 256 B every 20 ms): intact SSE
  disconnect  stream, the client closes after 1 to 3 events: the router counts a 499
  p400        the prefill answers vLLM's 400 (emu_fault error400): 400 with that error
  p500        every prefill answers 500 (error500): 503 naming the 500 after both attempts
  malformed   the prefill's routed experts are corrupt (malformed): 502 "malformed"
  garbage     the prefill answers 200 with a non-JSON body (garbage): 502 "malformed"
Every `kill_every` seconds one decoder (in turn) is killed with SIGKILL and restarted on its port
3 s later. A normal request (stream, plain, chat, slow, or a disconnect before its first event)
in flight during a kill window (kill to restart + 1 s) may instead
end with an SSE error event after its 200 (stream kinds) or a 502/503/504 JSON error; anything
else, and any cut or malformed answer, is a failure.

Usage: soak.py path/to/eldr [--seconds N] [--rate R] [--out DIR]     (SOAK_SECONDS, SOAK_RATE)
Writes DIR/soak.csv (one row a second), DIR/summary.json and the processes' logs under DIR.
"""
import argparse
import concurrent.futures
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness  # noqa: E402

MODEL = harness.MODEL
KINDS = {  # kind -> share of the traffic
    "stream": 0.30, "plain": 0.14, "chat": 0.10, "slow": 0.10, "disconnect": 0.12,
    "p400": 0.06, "p500": 0.06, "malformed": 0.06, "garbage": 0.06,
}
FAULT_OF = {"p400": "error400", "p500": "error500", "malformed": "malformed",
            "garbage": "garbage"}
NORMAL = ("stream", "plain", "chat", "slow")
KILL_OUTCOMES = ("midstream_error", "http_502", "http_503", "http_504")
EXPECTED = {"stream": "ok", "plain": "ok", "chat": "ok", "slow": "ok",
            "disconnect": "disconnected", "p400": "http_400", "p500": "http_503",
            "malformed": "http_502", "garbage": "http_502"}
# What the error body of a fault kind must say (the documented error).
MESSAGE = {"p400": "maximum context length", "p500": "answered 500", "malformed": "malformed",
           "garbage": "malformed"}


class Answer(Exception):
    pass


class Client:
    """One request over a raw socket, read as the kind asks; returns (outcome, detail)."""

    def __init__(self, port, kind, rng):
        self.port, self.kind = port, kind
        # A disconnect's stream is long, so it is surely still running when the client leaves
        # (a stream finished meanwhile would rightly not be a 499).
        self.max_tokens = {"slow": (48, 64), "disconnect": (150, 250)}.get(kind, (8, 40))
        self.max_tokens = rng.randint(*self.max_tokens)
        topic = rng.randrange(400)  # a finite prompt pool: the caches see hits and misses
        text = f"soak topic {topic} " + "lorem ipsum dolor " * (topic % 23 + 2)
        self.chat = kind == "chat"
        body = {"model": MODEL, "max_tokens": self.max_tokens,
                "stream": kind not in ("plain", "p400", "p500", "malformed", "garbage")}
        if self.chat:
            body["messages"] = [{"role": "user", "content": text}]
        elif rng.random() < 0.5:
            body["prompt"] = text
        else:  # token ids: the signature cache (keyed by their block hashes) sees them
            n = 32 + (topic * 37) % 480
            body["prompt"] = [(topic * 131 + j * 7) % 30000 for j in range(n)]
        if kind in FAULT_OF:
            body["emu_fault"] = FAULT_OF[kind]
        self.stream = body["stream"]
        self.cut_after = rng.randint(1, 3) if kind == "disconnect" else None
        self.data = json.dumps(body).encode()
        self.buf = b""

    def _fill(self, n=65536):
        d = self.sock.recv(n)
        if not d:
            raise Answer("cut")
        self.buf += d
        if self.kind == "slow":
            time.sleep(0.02)

    def _need(self, marker):
        while marker not in self.buf:
            self._fill(256 if self.kind == "slow" else 65536)

    def run(self):
        path = "/v1/chat/completions" if self.chat else "/v1/completions"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.kind == "slow":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(60)
        try:
            self.sock.connect(("127.0.0.1", self.port))
            self.sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.data)}\r\n\r\n".encode() + self.data)
            return self._read()
        except Answer as e:
            return "broken", str(e)
        except (OSError, ValueError) as e:
            return "broken", repr(e)
        finally:
            self.sock.close()

    def _read(self):
        self._need(b"\r\n\r\n")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        chunked = hdrs.get("transfer-encoding", "").lower() == "chunked"
        if not chunked:
            n = int(hdrs.get("content-length", "-1"))
            if n < 0:
                return "broken", "neither chunked nor Content-Length"
            while len(self.buf) < n:
                self._fill()
            return self._whole(status, self.buf[:n])
        if status != 200:
            return "broken", f"chunked {status}"
        events, pending = [], b""
        while True:
            self._need(b"\r\n")
            size_line, rest = self.buf.split(b"\r\n", 1)
            n = int(size_line.split(b";")[0], 16)
            while len(rest) < n + 2:
                self._fill()
                size_line, rest = self.buf.split(b"\r\n", 1)
            data, self.buf = rest[:n], rest[n + 2:]
            if n == 0:
                break
            pending += data
            while b"\n\n" in pending:
                ev, pending = pending.split(b"\n\n", 1)
                events.append(ev.decode())
                if '"error"' in events[-1] and events[-1].startswith("data: {"):
                    self.cut_after = None  # the router ends this stream itself: read it out
                if self.cut_after is not None and len(events) >= self.cut_after:
                    return "disconnected", ""
        return self._events(events, pending)

    def _whole(self, status, body):
        try:
            j = json.loads(body)
        except ValueError:
            return "broken", f"{status} body is not JSON: {body[:80]!r}"
        if status == 200:
            if self.stream:
                return "broken", "a stream answered as one JSON body"
            u = (j.get("usage") or {}).get("completion_tokens")
            ok = u == self.max_tokens and j["choices"][0]["text"].count("tok") == self.max_tokens
            return ("ok", "") if ok else ("broken", f"usage {u} of {self.max_tokens}")
        err = j.get("error") if isinstance(j, dict) else None
        if not isinstance(err, dict) or not isinstance(err.get("message"), str):
            return "broken", f"{status} without an OpenAI error object"
        return f"http_{status}", err["message"]

    def _events(self, events, pending):
        if pending.strip():
            return "broken", f"unterminated event {pending[:80]!r}"
        if self.cut_after is not None and not any('"error"' in e for e in events):
            return "broken", f"stream ended after {len(events)} events, before the cut"
        errors = [e for e in events if e.startswith("data: {") and '"error"' in e]
        if errors:
            return "midstream_error", errors[-1][:200]
        if not events or events[-1] != "data: [DONE]":
            return "broken", "no [DONE] at the end"
        toks = 0
        last = None
        for e in events[:-1]:
            if not e.startswith("data: {"):
                return "broken", f"odd event {e[:80]!r}"
            c = (json.loads(e[6:]).get("choices") or [{}])[0]
            if c.get("text") or (c.get("delta") or {}).get("content"):
                toks += 1
                last = c
        if toks != self.max_tokens or (last or {}).get("finish_reason") != "length":
            return "broken", f"{toks} tokens of {self.max_tokens}"
        return "ok", ""


def fixed_port(rng):
    """A free port below the ephemeral range: a killed decoder's port must stay free for its
    restart, and an ephemeral one may meanwhile be taken as the local end of a connection (to
    itself, even: a connect to a closed ephemeral port can self-connect)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for _ in range(1000):
        p = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port below the ephemeral range")


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        st = dict(l.split(":", 1) for l in f if ":" in l)
    rss_kb = int(st["VmRSS"].split()[0])
    threads = int(st["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb, fds, threads


def gauges(port):
    m = harness.metrics(port)
    g = {"active": m.get("eldr_active_requests", -1),
         "admission_queue": m.get("eldr_admission_queue_length", -1),
         "inflight_prefill": sum(v for k, v in m.items()
                                 if k.startswith('eldr_worker_in_flight{role="prefill"')),
         "inflight_decode": sum(v for k, v in m.items()
                                if k.startswith('eldr_worker_in_flight{role="decode"')),
         "shadow_inflight": sum(v for k, v in m.items() if k.startswith("eldr_shadow_in_flight")),
         "sig_cache_bytes": m.get("eldr_signature_cache_bytes", 0),
         "prefix_memo_bytes": m.get("eldr_prefix_memo_bytes", 0)}
    per_worker = {k: v for k, v in m.items() if k.startswith("eldr_worker_in_flight")}
    return g, per_worker, m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("eldr")
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 3600)))
    ap.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", 20)))
    ap.add_argument("--out", default=os.environ.get("SOAK_OUT", "build/soak"))
    ap.add_argument("--kill-every", type=float, default=0, help="seconds (0: seconds / 8, "
                    "at least 15)")
    ap.add_argument("--warmup", type=float, default=0, help="seconds (0: 20%% of the run, "
                    "at most 300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time-scale", type=float, default=1.0, help="the emulators' --time-scale")
    a = ap.parse_args()
    eldr = os.path.abspath(a.eldr)
    os.makedirs(a.out, exist_ok=True)
    harness.TMP = os.path.abspath(a.out)
    for f in os.listdir(a.out):  # a previous run's ready files would name dead ports
        if f.endswith(".ready"):
            os.remove(os.path.join(a.out, f))
    kill_every = a.kill_every or max(15.0, a.seconds / 8)
    warmup = a.warmup or min(300.0, 0.2 * a.seconds)
    rng = random.Random(a.seed)
    problems = []

    def fail(what):
        print("  FAIL", what, flush=True)
        problems.append(what)

    space = os.path.join(a.out, "space.json")
    subprocess.run([eldr, "emulate", "--write-space", space, "-k", "4"], check=True,
                   capture_output=True)
    emu_args = ["--time-scale", str(a.time_scale)]
    prefill = [harness.start(eldr, ["emulate", "--role", "prefill", "--listen", "127.0.0.1:0",
                                    *emu_args], f"p{i}") for i in range(3)]
    port_rng = random.Random()
    decode = [list(harness.start(eldr, ["emulate", "--role", "decode", "--listen",
                                        f"127.0.0.1:{fixed_port(port_rng)}", *emu_args],
                                 f"d{i}")) for i in range(4)]
    cfg = {"listen": "127.0.0.1:0", "threads": 2, "policy": "eldr", "space": space,
           "prefill": [f"http://127.0.0.1:{p}" for _, p in prefill],
           "decode": [f"http://127.0.0.1:{p}" for _, p in decode],
           "health_interval_ms": 200, "failure_threshold": 5, "open_ms": 2000,
           "cache": {"memory_mb": 4}, "log_level": "warn",
           "capture": os.path.join(a.out, "capture.jsonl.gz"), "capture_max_file_bytes": 1 << 20,
           "capture_max_files": 2}
    cfg_path = os.path.join(a.out, "router.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    router, port = harness.start(eldr, ["serve", "-c", cfg_path], "router")
    pid = router.pid
    time.sleep(1.0)
    rss0, fds0, thr0 = proc_stats(pid)
    m0 = harness.metrics(port)
    print(f"soak: {a.seconds:.0f} s at {a.rate} req/s, router pid {pid} on port {port}; "
          f"idle at start: RSS {rss0 / 1024:.1f} MiB, {fds0} fds, {thr0} threads", flush=True)

    lock = threading.Lock()
    results = []  # (kind, outcome, detail, t_start, t_end)
    kills = []  # [t_kill, t_back]
    stop = threading.Event()
    sent = [0]

    def one(kind, seed):
        t0 = time.time()
        outcome, detail = Client(port, kind, random.Random(seed)).run()
        with lock:
            results.append((kind, outcome, detail, t0, time.time()))

    def killer():
        i = 0
        while not stop.wait(kill_every):
            d = decode[i % len(decode)]
            i += 1
            t_kill = time.time()
            d[0].kill()
            d[0].wait()
            stop.wait(3.0)
            for attempt in range(5):
                try:
                    d[0], _ = harness.start(eldr, ["emulate", "--role", "decode", "--listen",
                                                   f"127.0.0.1:{d[1]}", *emu_args],
                                            f"d{(i - 1) % 4}-r{i}-{attempt}")
                    break
                except RuntimeError as e:
                    time.sleep(1.0)
                    if attempt == 4:
                        fail(f"decoder :{d[1]} could not be restarted: {e}")
                        return
            with lock:
                kills.append([t_kill, time.time() + 1.0])  # + a probe interval and some slack
            print(f"  t={t_kill - t_start:.0f}s decoder :{d[1]} killed and restarted", flush=True)

    csv_path = os.path.join(a.out, "soak.csv")
    cols = ["t", "rss_kb", "fds", "threads", "active", "admission_queue", "inflight_prefill",
            "inflight_decode", "shadow_inflight", "sig_cache_bytes", "prefix_memo_bytes",
            "sent", "answered"]
    csv = open(csv_path, "w")
    csv.write(",".join(cols) + "\n")
    samples = []

    def sampler():
        while sampler_tail.is_set():
            t = time.time() - t_start
            try:
                rss, fds, thr = proc_stats(pid)
                g, _, _ = gauges(port)
            except (OSError, KeyError, ValueError) as e:
                fail(f"sampling at t={t:.0f}s: {e!r}")
                return
            with lock:
                row = [round(t, 1), rss, fds, thr, g["active"], g["admission_queue"],
                       g["inflight_prefill"], g["inflight_decode"], g["shadow_inflight"],
                       g["sig_cache_bytes"], g["prefix_memo_bytes"], sent[0], len(results)]
            samples.append(row)
            csv.write(",".join(str(x) for x in row) + "\n")
            csv.flush()
            time.sleep(max(0.0, 1.0 - ((time.time() - t_start) - t)))

    sampler_tail = threading.Event()
    sampler_tail.set()
    t_start = time.time()
    threads = [threading.Thread(target=sampler, daemon=True),
               threading.Thread(target=killer, daemon=True)]
    for t in threads:
        t.start()
    kinds, weights = list(KINDS), list(KINDS.values())
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=512)
    futures = []
    next_t = t_start
    last_report = t_start
    base = None  # (rss_kb, fds, threads) idle after warm-up: the pools and caches are warm
    while time.time() - t_start < a.seconds:
        if base is None and time.time() - t_start >= warmup:
            concurrent.futures.wait(futures, timeout=120)
            harness.wait_idle(port, timeout=30)
            time.sleep(2.0)
            base = proc_stats(pid)
            print(f"  t={time.time() - t_start:.0f}s idle after warm-up: RSS "
                  f"{base[0] / 1024:.1f} MiB, {base[1]} fds, {base[2]} threads", flush=True)
            next_t = time.time()
        next_t += rng.expovariate(a.rate)
        delay = next_t - time.time()
        if delay > 0:
            time.sleep(delay)
        futures.append(pool.submit(one, rng.choices(kinds, weights)[0], rng.getrandbits(32)))
        sent[0] += 1
        if time.time() - last_report >= 60:
            last_report = time.time()
            with lock:
                s = samples[-1] if samples else None
            if s:
                print(f"  t={s[0]:.0f}s sent {sent[0]} answered {s[12]} RSS {s[1] / 1024:.1f} MiB "
                      f"fds {s[2]} threads {s[3]} active {s[4]:.0f}", flush=True)
    stop.set()
    concurrent.futures.wait(futures, timeout=120)
    pool.shutdown(wait=False, cancel_futures=True)
    threads[1].join(timeout=30)
    load_end = time.time() - t_start
    # Idle: every in-flight gauge back at zero, then the end-of-run resource figures.
    idle = harness.wait_idle(port, timeout=30)
    time.sleep(3.0)  # two more samples at idle
    sampler_tail.clear()
    threads[0].join(timeout=5)
    csv.close()
    g_end, per_worker, m_end = gauges(port)
    rss1, fds1, thr1 = proc_stats(pid)

    print("checks")
    if not idle or any(g_end[k] != 0 for k in ("active", "admission_queue", "inflight_prefill",
                                               "inflight_decode", "shadow_inflight")):
        fail(f"in-flight gauges not back at zero: {g_end}, per worker {per_worker}")
    # Resources. Warm-up excluded from the RSS trend; the bound is on the projected growth over
    # the measured stretch: max(8 MiB, 5% of the RSS at the end of warm-up).
    import numpy as np
    arr = np.array([r[:4] for r in samples if r[0] <= load_end], dtype=float)
    post = arr[arr[:, 0] >= warmup]
    slope_kb_s = float(np.polyfit(post[:, 0], post[:, 1], 1)[0]) if len(post) > 10 else 0.0
    span = float(post[-1, 0] - post[0, 0]) if len(post) > 1 else 0.0
    rss_warm = float(post[0, 1]) if len(post) else float(rss0)
    rss_bound_kb = max(8 * 1024, 0.05 * rss_warm)
    growth_kb = slope_kb_s * span
    half = arr[:, 0] >= (arr[-1, 0] / 2)
    fds_first, fds_second = int(arr[~half, 2].max()), int(arr[half, 2].max())
    thr_max = int(arr[:, 3].max())
    fd_margin, thr_margin = 32, 2
    if base is None:
        base = (rss0, fds0, thr0)
    if growth_kb > rss_bound_kb:
        fail(f"RSS grows {slope_kb_s * 3600 / 1024:.1f} MiB/h after warm-up "
             f"({growth_kb / 1024:.1f} MiB over {span:.0f} s > {rss_bound_kb / 1024:.1f} MiB)")
    if fds1 > base[1] + fd_margin:
        fail(f"open fds at the end (idle) {fds1} > {base[1]} idle after warm-up + {fd_margin}")
    if fds_second > fds_first + fd_margin:
        fail(f"peak fds of the second half {fds_second} > first half's {fds_first} + {fd_margin}")
    if thr1 > thr0 + thr_margin or thr_max > thr0 + thr_margin:
        fail(f"threads {thr1} at the end, {thr_max} at most > {thr0} at the start + {thr_margin}")

    # Every request answered, as its kind allows.
    by = {}
    unexpected = []
    for kind, outcome, detail, t0, t1 in results:
        by.setdefault(kind, {}).setdefault(outcome, 0)
        by[kind][outcome] += 1
        exposed = any(k0 <= t1 and t0 <= k1 for k0, k1 in kills)
        ok = outcome == EXPECTED[kind]
        if ok and kind in MESSAGE and MESSAGE[kind] not in detail:
            ok = False
        if not ok and (kind in NORMAL or kind == "disconnect") and exposed and \
                outcome in KILL_OUTCOMES:
            # A disconnect-to-be whose decoder dies before its first event gets the 502 first.
            ok = not (outcome == "midstream_error" and kind == "plain")
        if not ok:
            unexpected.append((kind, outcome, detail[:160], round(t0 - t_start, 1)))
    if len(results) != sent[0]:
        fail(f"{sent[0]} requests sent, {len(results)} answered")
    if unexpected:
        fail(f"{len(unexpected)} requests got an answer their kind does not allow, e.g. "
             f"{unexpected[:5]}")

    # The router's counters agree with the clients: 200 heads = ok + midstream errors +
    # disconnected streams (their head was sent), 499 = disconnects, each error code.
    def delta(name):
        return m_end.get(name, 0) - m0.get(name, 0)
    outcomes = {}
    for kind, per in by.items():
        for outcome, n in per.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
    want = {"200": outcomes.get("ok", 0) + outcomes.get("midstream_error", 0)
            + outcomes.get("disconnected", 0),
            "499": outcomes.get("disconnected", 0)}
    for o, n in outcomes.items():
        if o.startswith("http_"):
            want[o[5:]] = want.get(o[5:], 0) + n
    for code, n in sorted(want.items()):
        got = delta(f'eldr_responses_total{{code="{code}"}}')
        if got != n:
            fail(f"router counted {got:.0f} responses {code}, the clients {n}")
    got_disc = delta("eldr_client_disconnects_total")
    if got_disc != outcomes.get("disconnected", 0):
        fail(f"router counted {got_disc:.0f} client disconnects, the clients "
             f"{outcomes.get('disconnected', 0)}")
    got_mid = delta("eldr_midstream_failures_total")
    if got_mid != outcomes.get("midstream_error", 0):
        fail(f"router counted {got_mid:.0f} mid-stream failures, the clients saw "
             f"{outcomes.get('midstream_error', 0)}")
    if router.poll() is not None:
        fail("the router exited during the soak")

    summary = {
        "seconds": round(load_end, 1), "rate": a.rate, "sent": sent[0], "answered": len(results),
        "kills": len(kills), "kill_every_s": kill_every, "warmup_s": warmup,
        "by_kind": by, "by_outcome": outcomes, "unexpected": unexpected[:20],
        "router_responses": {k.split('"')[1]: delta(k) for k in m_end
                             if k.startswith("eldr_responses_total") and delta(k)},
        "router_disconnects": got_disc, "router_midstream": got_mid,
        "rss_kb": {"idle_start": rss0, "after_warmup": rss_warm, "end": rss1,
                   "max": int(arr[:, 1].max()), "slope_kb_per_h": round(slope_kb_s * 3600, 1),
                   "bound_kb": rss_bound_kb},
        "idle_after_warmup": {"rss_kb": base[0], "fds": base[1], "threads": base[2]},
        "fds": {"idle_start": fds0, "end": fds1, "max": int(arr[:, 2].max()),
                "max_first_half": fds_first, "max_second_half": fds_second},
        "threads": {"idle_start": thr0, "end": thr1, "max": thr_max},
        "max_active": float(max(r[4] for r in samples)), "problems": problems,
    }
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: summary[k] for k in ("sent", "answered", "kills", "by_outcome",
                                              "rss_kb", "fds", "threads", "max_active")}))
    router.send_signal(signal.SIGTERM)
    try:
        rc = router.wait(timeout=40)
        if rc != 0:
            fail(f"router exited {rc} on SIGTERM")
    except subprocess.TimeoutExpired:
        fail("router did not exit on SIGTERM")
    for p in harness.PROCS:
        if p.poll() is None:
            p.kill()
    for d in decode:
        if d[0].poll() is None:
            d[0].kill()
    if problems:
        print(f"soak: {len(problems)} failure(s); csv {csv_path}, logs in {a.out}")
        for p in problems:
            print("  -", p)
        sys.exit(1)
    print(f"soak passed: {sent[0]} requests over {load_end:.0f} s; csv {csv_path}")


if __name__ == "__main__":
    main()
