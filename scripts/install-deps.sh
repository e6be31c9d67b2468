#!/usr/bin/env bash
# Installs eldr's build and test dependencies from Debian 12 packages. Idempotent: does nothing
# (and needs no network) when everything is already present. Uses sudo when not root.
set -euo pipefail
PKGS=(
  cmake ninja-build g++ make pkg-config
  libboost1.81-dev libboost-json1.81-dev
  libcli11-dev libspdlog-dev libfmt-dev libxxhash-dev libexpected-dev zlib1g-dev
  libyaml-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev
  python3-numpy python3-matplotlib
  prometheus
)
# prometheus: only its promtool, with which the end-to-end tests check every /metrics page.
# Node.js for the OpenAI Node SDK test (tests/sdk): Debian's, unless a node is already installed.
if ! command -v node >/dev/null 2>&1; then PKGS+=(nodejs npm); fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# The SDK test's one npm package, pinned by tests/sdk/package-lock.json.
install_sdk() {
  if [ ! -d "$ROOT/tests/sdk/node_modules/openai" ]; then
    echo "install-deps: npm ci in tests/sdk (the OpenAI Node SDK for the SDK test)"
    npm ci --prefix "$ROOT/tests/sdk" --no-audit --no-fund --loglevel=error
  fi
}
# `make perf` (docs/perf.md proxy figures) also needs nginx and wrk: ELDR_PERF_DEPS=1
if [ "${ELDR_PERF_DEPS:-0}" = 1 ]; then PKGS+=(nginx-light wrk); fi
# `make thread-safety` also needs clang: ELDR_CLANG_DEPS=1 scripts/install-deps.sh
if [ "${ELDR_CLANG_DEPS:-0}" = 1 ]; then PKGS+=(clang); fi
# `make fuzz` also needs clang and its fuzzer runtime: ELDR_FUZZ_DEPS=1 scripts/install-deps.sh
if [ "${ELDR_FUZZ_DEPS:-0}" = 1 ]; then PKGS+=(clang libclang-rt-14-dev); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  install_sdk
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Boost 1.74's -dev packages conflict with 1.81; refuse rather than break a system.
if dpkg-query -W -f='${Status}' libboost1.74-dev 2>/dev/null | grep -q "install ok installed"; then
  echo "install-deps: libboost1.74-dev is installed and conflicts with libboost1.81-dev;" >&2
  echo "remove it first: $SUDO apt-get remove libboost1.74-dev libboost-dev" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_sdk
