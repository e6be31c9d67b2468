#!/usr/bin/env python3
"""Derive eldr calibration JSONL from the GPT-OSS-20B routing traces (ExpertFingerprinting).

The traces hold decode-time routing only (no prefill). Following the traces' SOURCE.md (data/gptoss20b/SOURCE.md), the
first PREFIX decode tokens stand in for the prompt's expert counts ("prefill"), and the remaining
decode tokens give the decode activation ("decode"). The label is the benchmark family.

Output: two files in eldr's calibration format (docs/formats.md), a seeded 75/25 split into a
calibration set and a held-out evaluation set. Standard library only.
Usage: /usr/bin/python3 scripts/extract_gptoss20b_calibration.py TRACES_DIR OUT_DIR
"""
import gzip, json, os, random, sys

LAYERS, EXPERTS, PREFIX = 24, 32, 32


def family(dataset):
    for f in ("mmlu_pro", "mmlu", "gpqa", "sorry_bench", "Polyglot", "tulu3"):
        if dataset.startswith(f):
            return f.lower()
    return dataset


def counts(tokens):
    c = [[0] * EXPERTS for _ in range(LAYERS)]
    for tok in tokens:
        for l in range(LAYERS):
            for e in tok["layer_%d" % l]["selected_experts"]:
                c[l][e] += 1
    return c


def main():
    src, out = sys.argv[1], sys.argv[2]
    rows = []
    for root, _, files in sorted(os.walk(os.path.join(src, "data"))):
        for name in sorted(files):
            if not name.endswith("_examples.json.gz"):
                continue
            path = os.path.join(root, name)
            with gzip.open(path, "rt") as f:
                doc = json.load(f)
            toks = [next(iter(t.values())) for t in doc["router_data"]]
            if len(toks) < PREFIX + 16:
                continue  # too short to give both a prefix and a decode part
            rel = os.path.relpath(path, src)
            rows.append({"id": rel.replace(".json.gz", ""), "label": family(doc["dataset"]),
                         "prefill": counts(toks[:PREFIX]), "decode": counts(toks[PREFIX:])})
            print(len(rows), rel, file=sys.stderr)
    random.Random(1).shuffle(rows)
    cut = (len(rows) * 3) // 4
    header = {"format": "eldr.calibration", "version": 1, "model": "gpt-oss-20b",
              "source": "GPT-OSS-MoE-ExpertFingerprinting @72b368f (Apache-2.0), "
                        "prefill = first %d decode tokens" % PREFIX}
    for fname, part in (("calib.jsonl", rows[:cut]), ("heldout.jsonl", rows[cut:])):
        with open(os.path.join(out, fname), "w") as f:
            f.write(json.dumps(header, separators=(",", ":")) + "\n")
            for r in part:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
