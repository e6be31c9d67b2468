"""Shared pieces of the end-to-end tests (stdlib only): eldr processes started on free ports,
HTTP calls, /metrics parsing, the idle check and the pass/fail bookkeeping."""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

FAILURES = []
PROCS = []
MODEL = "qwen3-30b-a3b"  # the emulators' served model name
TMP = tempfile.mkdtemp(prefix="eldr-e2e-")


def check(cond, what):
    print(("  ok   " if cond else "  FAIL ") + what)
    if not cond:
        FAILURES.append(what)
    return cond


def start(eldr, args, name, env=None):
    """Starts `eldr args...`, waits for its ready file, returns (process, port)."""
    ready = os.path.join(TMP, name + ".ready")
    log = open(os.path.join(TMP, name + ".log"), "w")
    p = subprocess.Popen([eldr] + args + ["--ready-file", ready], stdout=log, stderr=log,
                         env=dict(os.environ, **(env or {})))
    PROCS.append(p)
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(ready) and os.path.getsize(ready) > 0:
            with open(ready) as f:
                return p, json.load(f)["port"]
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited: " + open(os.path.join(TMP, name + ".log")).read())
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start")


def log_of(name):
    return open(os.path.join(TMP, name + ".log")).read()


def request(port, method, path, body=None, headers=None, timeout=60):
    """One HTTP exchange; `body` is bytes or a JSON-able value. Returns (status, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, out


def metrics(port):
    """/metrics as {sample name with labels: value}."""
    _, body = request(port, "GET", "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, val = line.rpartition(" ")
            out[key] = float(val)
    return out


def promtool_check(port, what):
    """`promtool check metrics` on the /metrics page: clean, or the problems it names."""
    import shutil
    tool = shutil.which("promtool")
    if tool is None:
        return check(False, f"{what}: promtool not found (scripts/install-deps.sh installs it)")
    _, body = request(port, "GET", "/metrics")
    r = subprocess.run([tool, "check", "metrics"], input=body, capture_output=True)
    problems = (r.stdout + r.stderr).decode().strip()
    return check(r.returncode == 0 and not problems, f"{what}: promtool check metrics is clean" +
                 (f" ({problems[:400]})" if problems else ""))


def wait_idle(port, timeout=20):
    """True once no request is active and every worker's in-flight count is zero."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = metrics(port)
        if m.get("eldr_active_requests", 1) == 0 and all(
                v == 0 for k, v in m.items() if k.startswith("eldr_worker_in_flight")):
            return True
        time.sleep(0.05)
    return False


def run(main, label):
    """Runs `main`, kills what it started, prints the verdict and exits 1 on any failure."""
    try:
        main()
    except Exception as e:  # noqa: BLE001 - recorded as a failure
        FAILURES.append(f"exception: {e!r}")
        print("EXCEPTION", repr(e))
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
        for p in PROCS:
            p.wait()
    if FAILURES:
        print(f"{len(FAILURES)} failure(s); logs in {TMP}")
        for f in FAILURES:
            print("  -", f)
        sys.exit(1)
    print(f"all {label} checks passed")
