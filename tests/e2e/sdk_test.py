#!/usr/bin/python3
"""The official OpenAI Node SDK (tests/sdk) against `eldr serve` in front of emulated engines.

Usage: sdk_test.py path/to/eldr      (run by ctest; needs node and `npm ci --prefix tests/sdk`,
which scripts/install-deps.sh does)
"""
import os
import shutil
import subprocess
import sys

from harness import MODEL, check, run
from harness import start as _start

ELDR = os.path.abspath(sys.argv[1])
SDK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sdk")


def start(args, name):
    return _start(ELDR, args, name)


def main():
    node = shutil.which("node")
    if not check(node is not None, "node is installed (scripts/install-deps.sh)"):
        return
    if not check(os.path.isdir(os.path.join(SDK, "node_modules", "openai")),
                 "the SDK is installed (npm ci --prefix tests/sdk; scripts/install-deps.sh)"):
        return
    _, pport = start(["emulate", "--role", "prefill", "--listen", "127.0.0.1:0",
                      "--time-scale", "0.05"], "sdk-prefill")
    _, dport = start(["emulate", "--role", "decode", "--listen", "127.0.0.1:0",
                      "--time-scale", "0.05"], "sdk-decode")
    _, port = start(["serve", "--listen", "127.0.0.1:0", "--policy", "jsq",
                     "--prefill", f"http://127.0.0.1:{pport}",
                     "--decode", f"http://127.0.0.1:{dport}"], "sdk-proxy")
    r = subprocess.run([node, os.path.join(SDK, "openai_sdk_test.mjs"),
                        f"http://127.0.0.1:{port}/v1", MODEL],
                       capture_output=True, text=True, timeout=120)
    print(r.stdout, end="")
    check(r.returncode == 0, "the OpenAI Node SDK checks pass" + (f": {r.stderr[-500:]}"
                                                                  if r.stderr else ""))


if __name__ == "__main__":
    run(main, "OpenAI Node SDK")
