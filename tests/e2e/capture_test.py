#!/usr/bin/python3
"""The operator's loop end to end (issue: your model, your traffic): an emulated cluster behind
`eldr serve --capture`, traffic with labels, `eldr fit` on the capture, `POST /admin/reload` of
the fitted space, and `eldr simulate --trace` on the capture. Both PD flows (vLLM NIXL and SGLang
bootstrap) write records; a capture path that cannot be opened refuses to start.

Usage: capture_test.py path/to/eldr      (stdlib only; run by ctest)
"""
import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import time

from harness import MODEL, TMP, check, metrics, promtool_check, request, wait_idle, log_of
from harness import start as _start
from harness import run

ELDR = os.path.abspath(sys.argv[1])
LABELS = ["code", "math", "legal", "medical"]


def start(args, name):
    return _start(ELDR, args, name)


def emulators(backend, n_decode, tag):
    extra = ["--backend", backend, "--time-scale", "0.05"]
    pp, dp = [], []
    for i in range(1):
        _, port = start(["emulate", "--role", "prefill", "--listen", "127.0.0.1:0", *extra],
                        f"{tag}-prefill{i}")
        pp.append(port)
    for i in range(n_decode):
        _, port = start(["emulate", "--role", "decode", "--listen", "127.0.0.1:0", *extra],
                        f"{tag}-decode{i}")
        dp.append(port)
    return pp, dp


def proxy(name, pp, dp, *extra):
    return start(["serve", "--listen", "127.0.0.1:0",
                  "--prefill", ",".join(f"http://127.0.0.1:{p}" for p in pp),
                  "--decode", ",".join(f"http://127.0.0.1:{p}" for p in dp),
                  "--health-interval-ms", "0", *extra], name)


def traffic(port, n, tag, model=MODEL):
    ok = 0
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        body = {"model": model, "prompt": f"{label} question {i} about {label} things",
                "max_tokens": 4 + i % 5, "stream": i % 2 == 0}
        st, data = request(port, "POST", "/v1/completions", body,
                           headers={"X-Eldr-Label": label, "X-Request-Id": f"{tag}-{i}"})
        # A stream counts only when whole: the emulator once lost its last events and [DONE]
        # when its final token came while it was writing the one before.
        whole = st == 200 and (not body["stream"] or data.rstrip().endswith(b"data: [DONE]"))
        # Every answer names the model the client asked for, as vLLM echoes it.
        if whole:
            events = ([json.loads(line[6:]) for line in data.decode().splitlines()
                       if line.startswith("data: {")] if body["stream"] else [json.loads(data)])
            names = {e.get("model") for e in events}
            whole = names == {model}
            if not whole:
                print(f"  request {tag}-{i} asked for {model!r}, answered as {names}")
        ok += whole
    return ok


def read_capture(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


SEEN = set()  # sample names seen on any router's /metrics in this test


def checked_metrics(port, what):
    """promtool on the page, and its sample names remembered for the dashboard check."""
    SEEN.update(k.split("{")[0] for k in metrics(port))
    return promtool_check(port, what)


def check_dashboard():
    """Every metric the shipped Grafana dashboard queries exists on some router page."""
    import re
    mon = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "monitoring")
    with open(os.path.join(mon, "grafana-eldr.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v.get("query", "") for v in dash["templating"]["list"]]
    used = set(re.findall(r"\b((?:eldr|process)_[a-z_]+)\b", " ".join(exprs)))
    missing = sorted(used - SEEN)
    check(len(used) > 20 and not missing,
          f"the Grafana dashboard's {len(used)} metrics all exist" +
          (f"; missing: {missing}" if missing else ""))
    import shutil
    tool = shutil.which("promtool")
    if tool:
        r = subprocess.run([tool, "check", "config", os.path.join(mon, "prometheus.yml")],
                           capture_output=True, text=True)
        check(r.returncode == 0, "docs/monitoring/prometheus.yml passes promtool check config")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def main():
    cap = os.path.join(TMP, "capture.jsonl.gz")
    print("vLLM flow: serve --capture, labelled traffic")
    pp, dp = emulators("vllm", 4, "v")
    proc, port = proxy("proxy-capture", pp, dp, "--policy", "jsq", "--capture", cap,
                       "--admin-token", "s3cret")
    n = 48
    check(traffic(port, n, "v") == n, f"{n} requests answered 200")
    check(wait_idle(port), "idle after traffic")
    m = metrics(port)
    checked_metrics(port, "capture's /metrics")
    check(m.get('eldr_capture_records_total{outcome="dropped_queue"}') == 0 and
          m.get('eldr_capture_records_total{outcome="no_signature"}') == 0,
          "capture metrics: nothing dropped, every request had a signature")
    # An invalid label is refused with a clear 400, and the count of good records is unchanged.
    st, body = request(port, "POST", "/v1/completions",
                       {"model": MODEL, "prompt": "x", "max_tokens": 1},
                       headers={"X-Eldr-Label": "x" * 200})
    check(st == 400 and b"X-Eldr-Label" in body, "an oversized X-Eldr-Label -> 400 naming it")

    print("the fitted space goes back in by hot reload while the capture keeps running")
    space = os.path.join(TMP, "captured-space.json")
    # The capture is read while the router still holds it open (what a refit job does): the
    # writer flushes a batch at least every second, so wait for the file to hold every record.
    deadline = time.time() + 10
    rows = []
    while time.time() < deadline:
        if os.path.getsize(cap) > 0:
            try:
                rows = [r for r in read_capture(cap) if "prefill" in r]
            except (EOFError, OSError):
                rows = []
        if len(rows) >= n:
            break
        time.sleep(0.1)
    check(len(rows) == n, f"the capture holds {n} records while the router runs (got {len(rows)})")
    fit = subprocess.run([ELDR, "fit", "-i", cap, "-o", space, "-k", "4", "--seed", "3"],
                         capture_output=True, text=True)
    check(fit.returncode == 0, "eldr fit reads the live capture unchanged: " + fit.stderr[-300:])
    check("no decode counts" in fit.stdout and "every layer" in fit.stdout,
          "fit says it cannot measure rho and uses every layer")
    st, body = request(port, "POST", "/admin/reload", {"space": space},
                       headers={"Authorization": "Bearer s3cret"})
    check(st == 200, f"POST /admin/reload of the fitted space -> 200 ({body[:200]!r})")
    check(traffic(port, 8, "after") == 8, "traffic after the reload is served")
    check(stop(proc) == 0, "the router exits cleanly on SIGTERM")

    print("shadow mode: route by jsq, report what ELDR on the fitted space would do")
    _, sport = proxy("proxy-shadow", pp, dp, "--policy", "shadow", "--shadow-of", "jsq",
                     "--space", space)
    ns = 24
    check(traffic(sport, ns, "shadow") == ns, f"{ns} requests answered 200 in shadow mode")
    check(wait_idle(sport), "idle after shadow traffic")
    m = metrics(sport)
    agree = m.get('eldr_shadow_decisions_total{outcome="agree"}', -1)
    disagree = m.get('eldr_shadow_decisions_total{outcome="disagree"}', -1)
    none = m.get('eldr_shadow_decisions_total{outcome="no_choice"}', -1)
    check(agree >= 0 and disagree >= 0 and agree + disagree == ns and none == 0,
          f"every decision has a shadow choice: agree {agree}, disagree {disagree}, none {none}")
    check(m.get("eldr_shadow_predicted_change_ratio") == 0 and
          all(v == 0 for k, v in m.items() if k.startswith("eldr_shadow_in_flight")),
          "the shadow estimate and shadow in-flight counts are back at zero when idle")
    check(m.get("eldr_policy_fallbacks_total") == 0, "jsq routed every request (no fallback)")
    checked_metrics(sport, "shadow mode's /metrics")

    print("access log and per-decoder client-side histograms")
    _, lport = proxy("proxy-access", pp, dp, "--policy", "rr", "--access-log", "json",
                     "--expert-estimate")
    check(traffic(lport, 6, "acc") == 6, "6 requests (3 streaming) served")
    request(lport, "POST", "/v1/completions", b"{bad", headers={"X-Request-Id": "acc-bad"})
    check(wait_idle(lport), "idle")
    lines = [json.loads(l) for l in log_of("proxy-access").splitlines() if l.startswith("{")]
    by = {l["id"]: l for l in lines}
    ok = len(lines) == 7 and all(
        by[f"acc-{i}"]["status"] == 200 and by[f"acc-{i}"]["decode"].startswith("http://") and
        by[f"acc-{i}"]["output_tokens"] == 4 + i % 5 and by[f"acc-{i}"]["stream"] == (i % 2 == 0) and
        by[f"acc-{i}"]["source"] == "vllm" and by[f"acc-{i}"]["ts"][-5] in "+-"
        for i in range(6))
    check(ok, f"one JSON access-log line per request with its fields ({lines[:1]})")
    check(by.get("acc-bad", {}).get("status") == 400, "a rejected request is logged with its 400")
    m = metrics(lport)
    ttft = sum(v for k, v in m.items() if k.startswith("eldr_decode_ttft_seconds_count"))
    tpot = sum(v for k, v in m.items() if k.startswith("eldr_decode_tpot_seconds_count"))
    dur = sum(v for k, v in m.items() if k.startswith("eldr_request_duration_seconds_count"))
    check(any(k.startswith("eldr_decode_expected_distinct_experts{") for k in m),
          "--expert-estimate exports each decode worker's estimate")
    check(ttft == 3 and tpot == 3 and dur == 6,
          f"per-decoder TTFT/TPOT for the 3 streams, duration for all 6 ({ttft}, {tpot}, {dur})")
    checked_metrics(lport, "the access-log router's /metrics")

    print("client API keys")
    keys = os.path.join(TMP, "keys.txt")
    with open(keys, "w") as f:
        f.write("# team a\nkey-one\n\n  key-two  \n")
    _, kport = proxy("proxy-keys", pp, dp, "--policy", "rr", "--api-keys-file", keys)
    body = {"model": MODEL, "prompt": "auth", "max_tokens": 1}
    c = http.client.HTTPConnection("127.0.0.1", kport, timeout=30)
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    check(r.status == 401 and "Bearer" in (r.getheader("WWW-Authenticate") or "") and
          b"missing API key" in r.read(), "no key -> 401 with WWW-Authenticate")
    c.close()
    st, _ = request(kport, "POST", "/v1/completions", body,
                    headers={"Authorization": "Bearer key-three"})
    check(st == 401, "an unknown key -> 401")
    st, _ = request(kport, "POST", "/v1/completions", body,
                    headers={"Authorization": "bearer key-two"})
    check(st == 200, "a listed key (any case of Bearer) -> 200")
    st, _ = request(kport, "GET", "/v1/models", headers={"Authorization": "Bearer key-one"})
    check(st == 200, "/v1/models with a key -> 200")
    check(request(kport, "GET", "/v1/models")[0] == 401, "/v1/models without a key -> 401")
    check(request(kport, "GET", "/liveness")[0] == 200 and request(kport, "GET", "/metrics")[0] == 200,
          "probes and /metrics stay open")

    print("the live domain baseline: label pools sized by the capture's label mix")
    _, dport = proxy("proxy-domain", pp, dp, "--policy", "domain", "--label-shares-from", cap)
    check(traffic(dport, 8, "domain") == 8, "8 labelled requests served by the domain policy")
    check(metrics(dport).get("eldr_policy_fallbacks_total") == 0, "no fallback for known labels")
    st, _ = request(dport, "POST", "/v1/completions", {"model": MODEL, "prompt": "x",
                                                       "max_tokens": 1})
    check(st == 200 and metrics(dport).get("eldr_policy_fallbacks_total") == 1,
          "an unlabelled request is balanced and counted as a fallback")

    print("/v1/models: the served model name, and GET /v1/models/{id}")
    st, body = request(dport, "GET", "/v1/models")
    check(st == 200 and json.loads(body)["data"][0]["id"] == MODEL, "a preset model lists as is")
    _, nport = proxy("proxy-named", pp, dp, "--policy", "rr", "--served-model-name", "my-moe")
    st, body = request(nport, "GET", "/v1/models")
    check(st == 200 and json.loads(body)["data"][0]["id"] == "my-moe",
          "--served-model-name is what /v1/models lists")
    st, body = request(nport, "GET", "/v1/models/my-moe")
    check(st == 200 and json.loads(body)["id"] == "my-moe", "GET /v1/models/my-moe -> 200")
    st, body = request(nport, "GET", "/v1/models/other")
    check(st == 404 and b"does not exist" in body, "GET /v1/models/other -> 404")
    st, _ = request(nport, "POST", "/v1/models/my-moe", {})
    check(st == 405, "POST /v1/models/{id} -> 405")

    print("online refit: runs, swaps and keeps serving; a refit that cannot run keeps the space")
    auth = {"Authorization": "Bearer s3cret"}
    _, rport = proxy("proxy-refit", pp, dp, "--policy", "eldr", "--space", space, "--refit",
                     "--refit-interval-s", "3600", "--refit-min-requests", "16",
                     "--admin-token", "s3cret")
    version = lambda: json.loads(request(rport, "GET", "/admin/workers", headers=auth)[1])["version"]
    v0 = version()
    check(traffic(rport, 8, "refit-a") == 8, "8 requests served")
    st, body = request(rport, "POST", "/admin/refit", {"now": True}, headers=auth)
    out = json.loads(body)
    check(st == 200 and "need 16" in out.get("result", "") and version() == v0,
          f"too few requests: the refit is skipped and the space kept ({out.get('result')})")
    check(traffic(rport, 24, "refit-b") == 24, "24 more requests served")
    st, body = request(rport, "POST", "/admin/refit", {"now": True}, headers=auth)
    out = json.loads(body)
    check(st == 200 and out.get("result") == "swapped" and version() == v0 + 1,
          f"a refit on 32 requests swaps the space in ({out})")
    check(traffic(rport, 8, "refit-c") == 8, "traffic after the swap is served")
    m = metrics(rport)
    check(m.get('eldr_refits_total{outcome="swapped"}') == 1 and
          m.get('eldr_refits_total{outcome="skipped"}') == 1 and
          m.get("eldr_policy_fallbacks_total") == 0,
          "refit metrics count one swap and one skip; ELDR never fell back")
    st, body = request(rport, "POST", "/admin/refit", {"pause": True, "now": True}, headers=auth)
    check(st == 200 and json.loads(body)["paused"] and "paused" in json.loads(body)["result"] and
          version() == v0 + 1, "paused: no refit runs")
    st, _ = request(rport, "POST", "/admin/refit", {"pause": "yes"}, headers=auth)
    check(st == 400, "a non-boolean pause -> 400")
    saved = os.path.join(TMP, "refitted-space.json")
    st, _ = request(rport, "POST", "/admin/space", {"save": saved}, headers=auth)
    with open(saved) as f:
        sj = json.load(f)
    check(st == 200 and sj["format"] == "eldr.signature_space" and len(sj["centroids"]) == 4,
          "POST /admin/space saves the live (refitted) space")
    st, _ = request(rport, "POST", "/admin/reload", {"space": saved}, headers=auth)
    check(st == 200, "the saved space reloads")
    # A refit that fails keeps the old space: a window of one repeated prompt (a load test)
    # would deal identical centroids to every decoder.
    # (A window of 600 s: under ThreadSanitizer the 20 requests may take longer than the default.)
    _, fport = proxy("proxy-refit-fail", pp, dp, "--policy", "eldr", "--space", space, "--refit",
                     "--refit-interval-s", "3600", "--refit-min-requests", "16",
                     "--refit-window-s", "600", "--admin-token", "s3cret")
    fver = lambda: json.loads(request(fport, "GET", "/admin/workers", headers=auth)[1])["version"]
    f0 = fver()
    same = [request(fport, "POST", "/v1/completions",
                    {"model": MODEL, "prompt": "the same load-test prompt", "max_tokens": 2})[0]
            for _ in range(20)]
    st, body = request(fport, "POST", "/admin/refit", {"now": True}, headers=auth)
    out = json.loads(body) if st == 200 else {}
    check(same == [200] * 20 and "degenerate" in out.get("result", "") and fver() == f0,
          f"a refit on 20 copies of one prompt is degenerate and the space is kept ({out})")
    check(traffic(fport, 8, "after-fail") == 8 and
          metrics(fport).get('eldr_refits_total{outcome="failed"}') == 1 and
          metrics(fport).get("eldr_policy_fallbacks_total") == 0,
          "after the failed refit ELDR keeps routing on the old space (1 failed, no fallback)")
    _, aport = proxy("proxy-refit-auto", pp, dp, "--policy", "eldr-plus", "--space", space,
                     "--refit", "--refit-interval-s", "0.3", "--refit-min-requests", "16")
    check(traffic(aport, 24, "auto") == 24, "24 requests served with the refit loop running")
    deadline = time.time() + 10
    while time.time() < deadline and metrics(aport).get('eldr_refits_total{outcome="swapped"}',
                                                        0) < 1:
        time.sleep(0.1)
    check(metrics(aport).get('eldr_refits_total{outcome="swapped"}', 0) >= 1,
          "the background loop refits on its own interval")
    checked_metrics(aport, "refit's /metrics")
    check(traffic(aport, 8, "auto2") == 8, "and the router keeps serving")

    rows = read_capture(cap)
    check(json.loads(gzip.open(cap, "rt").readline())["format"] == "eldr.calibration",
          "the file starts with a calibration header")
    check(len(rows) == n + 8 + 1, f"{n + 8} records and one header after shutdown (got {len(rows)})")
    recs = [r for r in rows if "prefill" in r]
    by_id = {r["id"]: r for r in recs}
    check(all(f"v-{i}" in by_id for i in range(n)), "every request id is recorded once")
    check(all(by_id[f"v-{i}"]["label"] == LABELS[i % 4] for i in range(n)),
          "labels from X-Eldr-Label are recorded")
    check(all(by_id[f"v-{i}"]["output_tokens"] == 4 + i % 5 for i in range(n)),
          "output tokens match max_tokens, streaming and not")
    check(all(r["prompt_tokens"] > 0 and r["arrival_us"] > 1.6e15 and
              r["decoder"].startswith("http://127.0.0.1:") for r in recs),
          "prompt length, arrival time and decoder are recorded")
    arrivals = [by_id[f"v-{i}"]["arrival_us"] for i in range(n)]
    check(arrivals == sorted(arrivals), "arrival times follow the order the requests were sent")

    print("simulate --trace on the capture: the operator's own traffic under every policy")
    sim = subprocess.run([ELDR, "simulate", "--trace", cap, "--decode", "4", "--prefill", "1",
                          "--seeds", "2", "--policies", "rr,jsq,eldr,eldr-plus"],
                         capture_output=True, text=True)
    check(sim.returncode == 0, "simulate replays the capture: " + sim.stderr[-400:])
    check("recorded arrivals" in sim.stdout and "eldr-plus" in sim.stdout,
          "the table names the recorded arrivals and every policy")
    check("drawn from each request's prompt counts" in sim.stderr,
          "it says the decode picks are drawn from the prompt counts")

    print("SGLang flow writes records too")
    cap2 = os.path.join(TMP, "capture-sglang.jsonl.gz")
    pp2, dp2 = emulators("sglang", 2, "s")
    proc2, port2 = proxy("proxy-capture-sglang", pp2, dp2, "--backend", "sglang", "--policy", "rr",
                         "--capture", cap2)
    check(traffic(port2, 12, "s") == 12, "12 requests answered 200 (SGLang)")
    check(wait_idle(port2), "idle after traffic (SGLang)")
    check(stop(proc2) == 0, "the SGLang router exits cleanly")
    recs2 = [r for r in read_capture(cap2) if "prefill" in r]
    check(len(recs2) == 12 and all(r["output_tokens"] > 0 for r in recs2),
          f"12 SGLang records with output lengths (got {len(recs2)})")
    check(all(sum(map(sum, r.get("decode", [[]]))) == (r["output_tokens"] - 1) * 48 * 8
              for r in recs2),
          "every SGLang record carries the generated tokens' decode counts ((out - 1) x 48 x 8)")

    print("SGLang decode counts: what the client sees, and the same rows decoded here")
    cap3 = os.path.join(TMP, "capture-sglang-decode.jsonl.gz")
    proc3, port3 = proxy("proxy-capture-sglang-decode", pp2, dp2, "--backend", "sglang",
                         "--policy", "rr", "--capture", cap3)
    prompt = "code question about decode rows and what they hold"
    plain, asked = [], []
    for i, stream in enumerate([False, True, False, True]):
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 5, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        st, out = request(port3, "POST", "/v1/completions", body,
                          headers={"X-Request-Id": f"sd-plain-{i}"})
        plain.append((st, out))
        body["return_routed_experts"] = True
        st, out = request(port3, "POST", "/v1/completions", body,
                          headers={"X-Request-Id": f"sd-asked-{i}"})
        asked.append((st, out, stream))
    check(all(st == 200 and b"routed_experts" not in out for st, out in plain),
          "a client that did not ask gets no routed experts (the router took them out again)")
    check(all(st == 200 and b"data: [DONE]" in out for st, out in plain[1::2]),
          "the streams the router rewrote still end with [DONE]")

    def own_counts(out, stream):
        """Decode-row counts from the client's own copy: base64 int32 [rows, 48, 8]."""
        import array
        import base64
        docs = ([json.loads(l[6:]) for l in out.decode().split("\n\n")
                 if l.startswith("data: {")] if stream else [json.loads(out)])
        b64 = [d["sglext"]["routed_experts"] for d in docs if d.get("sglext")]
        usage = [d["usage"] for d in docs if d.get("usage")]
        rows = array.array("i", base64.b64decode(b64[-1]))
        skip = usage[-1]["prompt_tokens"] * 48 * 8  # the prompt rows, never computed on decode
        counts = [[0] * 128 for _ in range(48)]
        for i, e in enumerate(rows[skip:]):
            counts[(i // 8) % 48][e] += 1
        return counts
    check(wait_idle(port3), "idle after the decode-count traffic")
    check(stop(proc3) == 0, "the router exits cleanly")
    recs3 = {r["id"]: r for r in read_capture(cap3) if "prefill" in r}
    same = [recs3.get(f"sd-asked-{i}", {}).get("decode") == own_counts(out, stream)
            for i, (st, out, stream) in enumerate(asked)]
    check(len(recs3) == 8 and all(same),
          f"each record's decode counts equal the rows the client decoded itself ({same})")
    check(all(recs3[f"sd-plain-{i}"]["decode"] == recs3[f"sd-asked-{i}"]["decode"]
              for i in range(4)),
          "asked by the router or by the client, the same prompt gives the same decode counts")
    # (The 12 varied prompts of the first SGLang capture: 8 copies of one prompt would give every
    # expert an IDF weight of 0.)
    fit3 = subprocess.run([ELDR, "fit", "-i", cap2, "-o", os.path.join(TMP, "sd.json"), "-k", "2"],
                          capture_output=True, text=True)
    check(fit3.returncode == 0 and "no decode counts" not in fit3.stdout and
          "rho         peak" in fit3.stdout,
          "fit on a capture with decode counts measures rho and masks layers: " +
          fit3.stdout[-300:] + fit3.stderr[-300:])

    sim3 = subprocess.run([ELDR, "simulate", "--trace", cap2, "--decode", "2", "--prefill", "1",
                           "--seeds", "1", "--policies", "rr,eldr"], capture_output=True, text=True)
    check(sim3.returncode == 0 and "12 with decode counts" in sim3.stderr and
          "drawn from each request's decode counts" in sim3.stderr,
          "simulate --trace draws decode picks from the recorded decode counts: " +
          sim3.stderr[-300:])

    print("vLLM 0.21 decode engines return the generated rows: non-streamed records carry them")
    cap4 = os.path.join(TMP, "capture-vllm021.jsonl.gz")
    extra = ["--backend", "vllm", "--engine", "vllm-0.21", "--time-scale", "0.05"]
    _, p4 = start(["emulate", "--role", "prefill", "--listen", "127.0.0.1:0", *extra], "v21-p")
    _, d4 = start(["emulate", "--role", "decode", "--listen", "127.0.0.1:0", *extra], "v21-d")
    proc4, port4 = proxy("proxy-capture-v21", [p4], [d4], "--policy", "rr", "--capture", cap4,
                         "--signature-source", "vllm-0.21")
    check(traffic(port4, 8, "v21") == 8, "8 requests (4 streamed) answered 200")
    check(wait_idle(port4), "idle")
    m4 = metrics(port4)
    checked_metrics(port4, "vLLM 0.21 capture's /metrics")
    check(stop(proc4) == 0, "the router exits cleanly")
    recs4 = {r["id"]: r for r in read_capture(cap4) if "prefill" in r}
    check(len(recs4) == 8 and
          all(("decode" in recs4[f"v21-{i}"]) == (i % 2 == 1) for i in range(8)) and
          all(sum(map(sum, recs4[f"v21-{i}"]["decode"])) ==
              (recs4[f"v21-{i}"]["output_tokens"] - 1) * 48 * 8 for i in range(1, 8, 2)),
          "non-streamed records carry the generated tokens' counts, streamed ones none")
    check(m4.get('eldr_capture_decode_total{outcome="recorded"}') == 4 and
          m4.get('eldr_capture_decode_total{outcome="absent"}') == 4 and
          m4.get('eldr_capture_decode_total{outcome="rejected"}') == 0,
          "eldr_capture_decode_total counts 4 recorded and 4 absent")

    print("a capture path that cannot be opened is a start-up error")
    bad = subprocess.run([ELDR, "serve", "--listen", "127.0.0.1:0", "--prefill",
                          f"http://127.0.0.1:{pp[0]}", "--decode", f"http://127.0.0.1:{dp[0]}",
                          "--policy", "rr", "--capture", os.path.join(TMP, "no", "dir", "c.gz")],
                         capture_output=True, text=True, timeout=30)
    check(bad.returncode != 0 and "capture" in bad.stderr and "no/dir" in bad.stderr,
          "serve refuses an unopenable capture path, naming it")
    bad = subprocess.run([ELDR, "serve", "--prefill", "http://127.0.0.1:1", "--decode",
                          "http://127.0.0.1:2", "--policy", "rr", "--capture", cap,
                          "--capture-fraction", "1.5"], capture_output=True, text=True, timeout=30)
    check(bad.returncode != 0 and "capture_fraction" in bad.stderr,
          "--capture-fraction 1.5 is refused, naming the key")

    own_model()
    check_dashboard()


def own_model():
    """A model that is no preset, end to end: emulators and the router on its config.json, a
    capture, then fit, reload and simulate on the capture without the config (the header
    describes the model)."""
    print("a model that is no preset: serve --model DIR, then fit and simulate on its capture")
    mdir = os.path.join(TMP, "My_MoE")
    os.makedirs(mdir, exist_ok=True)
    # Qwen2-MoE rules: layer i is MoE iff (i + 1) % 2 == 0 and not in mlp_only_layers: 1, 3, 5.
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump({"model_type": "qwen2_moe", "num_hidden_layers": 8, "num_experts": 16,
                   "num_experts_per_tok": 2, "moe_intermediate_size": 64,
                   "intermediate_size": 256, "hidden_size": 128,
                   "shared_expert_intermediate_size": 256, "decoder_sparse_step": 2,
                   "mlp_only_layers": [7], "torch_dtype": "bfloat16", "vocab_size": 1000}, f)
    extra = ["--backend", "vllm", "--model", mdir, "--time-scale", "0.05"]
    _, p5 = start(["emulate", "--role", "prefill", "--listen", "127.0.0.1:0", *extra], "my-p")
    dps = [start(["emulate", "--role", "decode", "--listen", "127.0.0.1:0", *extra],
                 f"my-d{i}")[1] for i in range(2)]
    cap5 = os.path.join(TMP, "capture-my-moe.jsonl.gz")
    proc5, port5 = proxy("proxy-my-moe", [p5], dps, "--model", mdir, "--policy", "jsq",
                         "--capture", cap5, "--admin-token", "s3cret")
    check(traffic(port5, 16, "my", "My_MoE") == 16, "16 requests to My_MoE answered 200")
    check(wait_idle(port5), "idle after the My_MoE traffic")
    head = json.loads(gzip.open(cap5, "rt").readline()) if wait_records(cap5, 16) else {}
    geo = head.get("geometry", {})
    check(head.get("model") == "my-moe" and geo.get("experts") == 16 and geo.get("top_k") == 2
          and geo.get("moe_layer_ids") == [1, 3, 5],
          f"the capture's header describes the model, interleaved layer map included ({geo})")
    space5 = os.path.join(TMP, "my-moe-space.json")
    fit5 = subprocess.run([ELDR, "fit", "-i", cap5, "-o", space5, "-k", "2", "--seed", "3"],
                          capture_output=True, text=True)
    check(fit5.returncode == 0 and "requests of My_MoE" in fit5.stderr and
          "layer mask  3 of 3 layers" in fit5.stdout,
          "eldr fit on the capture, without -m, fits My_MoE's 3 MoE layers: " +
          fit5.stdout[-300:] + fit5.stderr[-300:])
    st, body = request(port5, "POST", "/admin/reload", {"space": space5},
                       headers={"Authorization": "Bearer s3cret"})
    check(st == 200, f"POST /admin/reload of My_MoE's fitted space -> 200 ({body[:200]!r})")
    check(traffic(port5, 4, "my-after", "My_MoE") == 4, "4 more requests served after the reload")
    check(stop(proc5) == 0, "the My_MoE router exits cleanly")
    proc6, port6 = proxy("proxy-my-moe-eldr", [p5], dps, "--model", mdir, "--policy", "eldr",
                         "--space", space5)
    check(traffic(port6, 8, "my-eldr", "My_MoE") == 8, "ELDR on My_MoE's space serves 8 requests")
    check(wait_idle(port6), "idle after the ELDR traffic")
    m6 = metrics(port6)
    check(m6.get("eldr_policy_fallbacks_total") == 0 and
          sum(v for k, v in m6.items() if k.startswith("eldr_prefill_signatures_total")) == 8,
          "ELDR routed every My_MoE request on its signature (no fallback)")
    check(stop(proc6) == 0, "the ELDR router exits cleanly")
    # The config is gone: the capture alone names and describes the model.
    os.rename(mdir, mdir + ".moved")
    sim5 = subprocess.run([ELDR, "simulate", "--trace", cap5, "--decode", "2", "--prefill", "1",
                           "--seeds", "1", "--policies", "rr,eldr"], capture_output=True, text=True)
    check(sim5.returncode == 0 and "of My_MoE, 1P2D, 20 records," in sim5.stderr and
          "cost model: derived for My_MoE" in sim5.stdout + sim5.stderr,
          "simulate --trace replays the capture with the config moved away, on a derived cost "
          "model: " + sim5.stdout[-300:] + sim5.stderr[-300:])


def wait_records(path, n, seconds=10):
    """True once the (gzip, batch-flushed) capture at `path` holds n records."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if len([r for r in read_capture(path) if "prefill" in r]) >= n:
                return True
        except (EOFError, OSError):
            pass
        time.sleep(0.1)
    return False


if __name__ == "__main__":
    run(main, "capture, shadow, refit and operator")
