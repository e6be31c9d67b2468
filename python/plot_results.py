#!/usr/bin/python3
"""Plots eldr simulate results (--json) with Debian's python3-matplotlib.

Usage: /usr/bin/python3 python/plot_results.py results.json OUT_DIR [requests.csv]
Writes, per (model, workload): TPOT P50 and P99 vs rate per policy, and distinct experts per
MoE layer per decode step (and per request, where recorded) vs rate; plus one overview of
ELDR's, ELDR-plus's and Domain's change against the best load balancer per cell.

Results may hold several seeds (`eldr simulate --matrix paper --seeds N`): every figure is
computed per seed (a change against the best load balancer at the same rate and seed), then
plotted as the mean over seeds with min-max error bars. Rows without a "seed" field (older
files) count as one seed. ELDR's tau variants of the main experiment are told apart by their
"variant" field ("" is the run at the matrix's --tau).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LB = ("rr", "random", "jsq", "p2c")
STYLE = {"rr": "C0", "random": "C1", "jsq": "C2", "p2c": "C3", "domain": "C4", "eldr": "C5",
         "eldr-plus": "C6"}
# Line styles of the main experiment's variants (ELDR at other taus); unknown ones are dash-dot.
VARIANT_LINE = {"": "-", "tau=0.2": "--", "tau=0.3": ":"}
# The overview's policies (main runs, variant "").
OVERVIEW = ("eldr", "eldr-plus", "domain")


def seed_of(row):
    return row.get("seed", 1)


def spread(values):
    """(mean, mean - min, max - mean) of a non-empty list."""
    mean = sum(values) / len(values)
    return mean, mean - min(values), max(values) - mean


def series_keys(cell):
    """(policy, variant) of every series of a cell, in STYLE order, then variants."""
    keys = {(r["policy"], r.get("variant", "")) for r in cell}
    order = list(STYLE)
    return sorted(keys, key=lambda k: (order.index(k[0]) if k[0] in order else len(order),
                                       k[1]))


def label_of(policy, variant):
    return policy if not variant else f"{policy} {variant}"


def best_lb(cell):
    """{(rate, seed): (best P50, best P99)} over the load balancers of a cell's main runs."""
    best = {}
    for r in cell:
        if r["policy"] in LB and not r.get("variant", ""):
            key = (r["rate_qps"], seed_of(r))
            b50, b99 = best.get(key, (float("inf"), float("inf")))
            best[key] = (min(b50, r["tpot_p50_ms"]), min(b99, r["tpot_p99_ms"]))
    return best


def change_vs_lb(cell, policy, best):
    """Per seed, the mean over rates of the change in TPOT P50 and P99 against the best load
    balancer at that rate and seed: ([p50 per seed], [p99 per seed])."""
    per_seed = {}
    for r in cell:
        if r["policy"] != policy or r.get("variant", ""):
            continue
        key = (r["rate_qps"], seed_of(r))
        if key not in best:
            continue
        b50, b99 = best[key]
        per_seed.setdefault(seed_of(r), []).append(
            (100 * (r["tpot_p50_ms"] / b50 - 1), 100 * (r["tpot_p99_ms"] / b99 - 1)))
    p50 = [sum(d[0] for d in v) / len(v) for v in per_seed.values()]
    p99 = [sum(d[1] for d in v) / len(v) for v in per_seed.values()]
    return p50, p99


def plot_cell(model, workload, cell, out):
    metrics = [("tpot_p50_ms", "TPOT P50 (ms)"), ("tpot_p99_ms", "TPOT P99 (ms)"),
               ("distinct_experts_per_step", "distinct experts / layer / step")]
    if any("distinct_experts_per_request" in r for r in cell):
        metrics.append(("distinct_experts_per_request", "distinct experts / layer, per request"))
    seeds = len({seed_of(r) for r in cell})
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
    for policy, variant in series_keys(cell):
        rows = [r for r in cell if r["policy"] == policy and r.get("variant", "") == variant]
        by_rate = {}
        for r in rows:
            by_rate.setdefault(r["rate_qps"], []).append(r)
        rates = sorted(by_rate)
        style = dict(color=STYLE.get(policy, "k"), linestyle=VARIANT_LINE.get(variant, "-."),
                     marker="o", markersize=4, capsize=3, elinewidth=1)
        for i, (ax, (field, _)) in enumerate(zip(axes, metrics)):
            pts = [(rate, spread([r[field] for r in by_rate[rate] if field in r])) for rate in rates
                   if any(field in r for r in by_rate[rate])]
            if not pts:
                continue
            ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts],
                        yerr=[[p[1][1] for p in pts], [p[1][2] for p in pts]],
                        label=label_of(policy, variant) if i == 0 else None, **style)
    for ax, (_, title) in zip(axes, metrics):
        ax.set_xlabel("request rate (qps)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    note = f"mean over {seeds} seeds, bars: min-max" if seeds > 1 else "one seed"
    fig.suptitle(f"{model}, {workload} workload (simulated; {note})")
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"{model}_{workload}.png"), dpi=110)
    plt.close(fig)


def plot_overview(overview, out):
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    width = 0.8 / len(OVERVIEW)
    for q, ax in enumerate(axes):
        for i, policy in enumerate(OVERVIEW):
            xs, means, lo, hi = [], [], [], []
            for j, (_, changes) in enumerate(overview):
                values = changes.get(policy, ([], []))[q]
                if not values:
                    continue
                m, below, above = spread(values)
                xs.append(j + (i - (len(OVERVIEW) - 1) / 2) * width)
                means.append(m)
                lo.append(below)
                hi.append(above)
            if xs:
                ranged = any(lo) or any(hi)  # one seed: no error bars
                ax.bar(xs, means, width, yerr=[lo, hi] if ranged else None, capsize=3,
                       color=STYLE[policy], label=policy)
        ax.set_ylabel(f"TPOT P{50 if q == 0 else 99} vs best LB (%)")
        ax.axhline(0, color="k", lw=0.8)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(overview)), [o[0] for o in overview], fontsize=8)
    axes[0].legend()
    seeds = max((len(v[0]) for _, c in overview for v in c.values()), default=1)
    note = f"mean over {seeds} seeds, bars: min-max" if seeds > 1 else "one seed"
    axes[0].set_title("Mean over rates of the change in TPOT against the best load balancer at "
                      f"each rate and seed\n(simulated; {note})")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overview.png"), dpi=110)
    plt.close(fig)


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
        plot_cell(model, workload, cell, out)
        best = best_lb(cell)
        changes = {}
        for policy in OVERVIEW:
            p50, p99 = change_vs_lb(cell, policy, best)
            if p50:
                changes[policy] = (p50, p99)
        overview.append((f"{model}\n{workload}", changes))
    plot_overview(overview, out)
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
    plt.close(fig)


if __name__ == "__main__":
    main()
