#!/usr/bin/env bash
# `make demo`: fits a signature space on the shipped GPT-OSS-20B calibration extract (8 decoders), then
# replays the held-out requests through every routing policy.
set -euo pipefail
ELDR=${1:-build/release/tools/eldr/eldr}
cd "$(dirname "$0")/.."
OUT=build/demo
mkdir -p "$OUT"
echo "== eldr fit: GPT-OSS-20B routing traces (data/gptoss20b, Apache-2.0; see data/gptoss20b/SOURCE.md)"
"$ELDR" fit --input data/gptoss20b/calib.jsonl --decoders 8 --output "$OUT/space.json"
echo
echo "== eldr route: held-out requests under every policy"
"$ELDR" route --space "$OUT/space.json" --input data/gptoss20b/heldout.jsonl \
  --calibration data/gptoss20b/calib.jsonl
