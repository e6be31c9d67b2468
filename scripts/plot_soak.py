#!/usr/bin/python3
"""Plots a soak run's samples (tests/soak/soak.py's soak.csv): the router's RSS, open fds,
threads and in-flight gauges over time, one panel each, to a small PNG.

Usage: /usr/bin/python3 scripts/plot_soak.py build/soak/soak.csv docs/img/soak.png
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        cols = f.readline().strip().split(",")
    d = np.genfromtxt(src, delimiter=",", skip_header=1)
    c = {name: d[:, i] for i, name in enumerate(cols)}
    t = c["t"] / 60.0
    fig, ax = plt.subplots(4, 1, figsize=(7, 6.4), sharex=True, dpi=80)
    ax[0].plot(t, c["rss_kb"] / 1024, lw=0.8, color="tab:blue")
    ax[0].set_ylabel("RSS (MiB)")
    ax[0].set_ylim(bottom=0)
    ax[1].plot(t, c["fds"], lw=0.6, color="tab:orange")
    ax[1].set_ylabel("open fds")
    ax[1].set_ylim(bottom=0)
    ax[2].plot(t, c["threads"], lw=0.8, color="tab:green")
    ax[2].set_ylabel("threads")
    ax[2].set_ylim(0, max(c["threads"]) + 2)
    ax[3].plot(t, c["active"], lw=0.5, label="active requests", color="tab:red")
    ax[3].plot(t, c["inflight_decode"], lw=0.5, label="decode in flight", color="tab:purple")
    ax[3].plot(t, c["inflight_prefill"], lw=0.5, label="prefill in flight", color="tab:gray")
    ax[3].plot(t, c["admission_queue"], lw=0.5, label="admission queue", color="black")
    ax[3].set_ylabel("in flight")
    ax[3].legend(loc="upper right", fontsize=7, ncol=2)
    ax[3].set_xlabel("minutes")
    for a in ax:
        a.grid(alpha=0.3)
    fig.suptitle(f"eldr serve soak: {c['sent'][-1]:.0f} requests over {t[-1]:.0f} min",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main()
