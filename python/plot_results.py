#!/usr/bin/python3
"""Plots eldr simulate results (--json) with Debian's python3-matplotlib.

Usage: /usr/bin/python3 python/plot_results.py results.json OUT_DIR [requests.csv]
Writes, per (model, workload): TPOT P50 and P99 vs rate per policy, and distinct experts per
decode step vs rate; plus one overview of ELDR's and Domain's change against the best load
balancer per cell.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LB = ("rr", "random", "jsq", "p2c")
STYLE = {"rr": "C0", "random": "C1", "jsq": "C2", "p2c": "C3", "domain": "C4", "eldr": "C5"}


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    rows = [r for r in json.load(open(src)) if r["experiment"] in ("main", "single")]
    if not rows:
        sys.exit("no main or single results in " + src)
    cells = sorted({(r["model"], r["workload"]) for r in rows})
    overview = []
    for model, workload in cells:
        cell = [r for r in rows if r["model"] == model and r["workload"] == workload]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for policy in STYLE:
            pts = sorted((r["rate_qps"], r) for r in cell if r["policy"] == policy)
            if not pts:
                continue
            rates = [p[0] for p in pts]
            axes[0].plot(rates, [p[1]["tpot_p50_ms"] for p in pts], "o-", color=STYLE[policy],
                         label=policy)
            axes[1].plot(rates, [p[1]["tpot_p99_ms"] for p in pts], "o-", color=STYLE[policy])
            axes[2].plot(rates, [p[1]["distinct_experts_per_step"] for p in pts], "o-",
                         color=STYLE[policy])
        for ax, title in zip(axes, ("TPOT P50 (ms)", "TPOT P99 (ms)",
                                    "distinct experts / layer / step")):
            ax.set_xlabel("request rate (qps)")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"{model}, {workload} workload (simulated)")
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"{model}_{workload}.png"), dpi=110)
        plt.close(fig)
        by_rate = {}
        for r in cell:
            by_rate.setdefault(r["rate_qps"], {})[r["policy"]] = r
        deltas = {"eldr": [], "domain": []}
        for rate, pol in by_rate.items():
            best = min(pol[p]["tpot_p50_ms"] for p in LB if p in pol)
            for p in deltas:
                if p in pol:
                    deltas[p].append(100 * (pol[p]["tpot_p50_ms"] / best - 1))
        overview.append((f"{model}\n{workload}",
                         {p: sum(v) / len(v) for p, v in deltas.items() if v}))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.38
    for i, policy in enumerate(("domain", "eldr")):
        xs = [j + (i - 0.5) * width for j in range(len(overview))]
        ax.bar(xs, [o[1].get(policy, 0) for o in overview], width, color=STYLE[policy],
               label=policy)
    ax.set_xticks(range(len(overview)), [o[0] for o in overview], fontsize=8)
    ax.set_ylabel("TPOT P50 vs best load balancer (%)")
    ax.axhline(0, color="k", lw=0.8)
    ax.legend()
    ax.set_title("Mean over rates of the change in median TPOT (simulated)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overview.png"), dpi=110)
    if len(sys.argv) > 3:
        plot_cdf(sys.argv[3], out)


def plot_cdf(path, out):
    import csv
    tpot = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            tpot.setdefault(row["policy"], []).append(float(row["tpot_ms"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, values in tpot.items():
        values.sort()
        n = len(values)
        ax.plot(values, [(i + 1) / n for i in range(n)], color=STYLE.get(policy), label=policy)
    ax.set_xlabel("TPOT (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("TPOT CDF (simulated)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "tpot_cdf.png"), dpi=110)


if __name__ == "__main__":
    main()
