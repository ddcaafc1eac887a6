"""PNG plots of a score run (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import save_figure

__all__ = ["plot_subsets", "plot_layers"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_subsets(results: dict, kind: str, path: Path) -> Path | None:
    """Grouped bars: one group per subset (+ subset_mean, pooled), one bar per metric, bootstrap CI whiskers."""
    metrics = [m for m, r in results["metrics"].items() if kind in r]
    if not metrics:
        return None
    plt = _plt()
    subsets = list(results["metrics"][metrics[0]][kind]["subsets"]) + ["subset_mean", "pooled"]
    x = np.arange(len(subsets))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(subsets) + 2), 4.2), dpi=110)
    for i, m in enumerate(metrics):
        r = results["metrics"][m][kind]
        entries = [r["subsets"][s] for s in subsets[:-2]] + [r["subset_mean"], r["pooled"]]
        vals = np.array([e["score"] for e in entries])
        err = None
        if all(e["ci"] is not None for e in entries):
            lo = np.array([e["ci"][0] for e in entries])
            hi = np.array([e["ci"][1] for e in entries])
            err = np.vstack([np.maximum(vals - lo, 0), np.maximum(hi - vals, 0)])
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=m)
    ceil = results.get("data", {}).get("2afc_ceiling") if kind == "2afc" else None
    if ceil:
        for xi, sname in zip(x, subsets):
            ax.hlines(ceil[sname], xi - 0.45, xi + 0.45, colors="k", linestyles="--", lw=1)
        ax.plot([], [], "k--", lw=1, label="ceiling (judgements)")
    ax.set_xticks(x, subsets, rotation=20, ha="right")
    ax.set_ylabel("2AFC score" if kind == "2afc" else "JND mAP")
    ax.set_ylim(0, 1)
    ax.set_title(f"{kind.upper()} per subset (bars: 95% bootstrap CI)")
    ax.legend(fontsize=7, ncol=min(len(metrics), 4))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def plot_layers(results: dict, kind: str, path: Path, agg: str = "subset_mean") -> Path | None:
    """Per-layer score (``agg`` over subsets) of each deep metric, one line per metric."""
    metrics = [m for m, r in results["metrics"].items() if kind in r and "per_layer" in r[kind]]
    if not metrics:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.0), dpi=110)
    for m in metrics:
        layers = results["metrics"][m][kind]["per_layer"]
        names = list(layers)
        ax.plot(np.arange(len(names)), [layers[n][agg] for n in names], marker="o", label=m)
        total = results["metrics"][m][kind][agg]["score"]
        ax.axhline(total, ls=":", lw=0.8, color=ax.lines[-1].get_color())
    names0 = list(results["metrics"][metrics[0]][kind]["per_layer"])
    if all(list(results["metrics"][m][kind]["per_layer"]) == names0 for m in metrics):
        ax.set_xticks(np.arange(len(names0)), names0, rotation=20, ha="right")
    ax.set_xlabel("tapped layer (dotted: all layers)")
    ax.set_ylabel(("2AFC score" if kind == "2afc" else "JND mAP") + f" ({agg})")
    ax.set_title(f"{kind.upper()} per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
