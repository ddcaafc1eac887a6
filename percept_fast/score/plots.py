"""PNG plots of a score run (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import save_figure

__all__ = ["plot_subsets", "plot_layers", "plot_matched_mse_by_kind"]


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
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(subsets) + 2), 5.0), dpi=110)
    for i, m in enumerate(metrics):
        r = results["metrics"][m][kind]
        entries = [r["subsets"][s] for s in subsets[:-2]] + [r["subset_mean"], r["pooled"]]
        vals = np.array([e["score"] for e in entries])
        err = None
        if all(e["ci"] is not None for e in entries):
            lo = np.array([e["ci"][0] for e in entries])
            hi = np.array([e["ci"][1] for e in entries])
            err = np.vstack([np.maximum(vals - lo, 0), np.maximum(hi - vals, 0)])
        random_init = results["metrics"][m].get("spec", {}).get("random_init_backbone")
        label = f"{m} (random init)" if random_init else m
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=label)
    ceil = results.get("data", {}).get("2afc_ceiling") if kind == "2afc" else None
    if ceil:
        for xi, sname in zip(x, subsets):
            ax.hlines(ceil[sname], xi - 0.45, xi + 0.45, colors="k", linestyles="--", lw=1)
        ax.plot([], [], "k--", lw=1, label="ceiling (judgements)")
    if kind == "2afc":
        ax.axhline(0.5, color="0.4", ls=":", lw=1, label="chance")
    ax.set_xticks(x, subsets, rotation=20, ha="right")
    ax.set_ylabel("2AFC score" if kind == "2afc" else "JND mAP")
    ax.set_ylim(0, 1.04)  # room for a ceiling line at 1
    synthetic = " - synthetic judgements" if results.get("data", {}).get("embedded_default_set") else ""
    ax.set_title(f"{kind.upper()} per subset (bars: 95% bootstrap CI){synthetic}")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: never over a bar
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


def plot_matched_mse_by_kind(results: dict, path: Path) -> Path | None:
    """Heat map of the embedded set's matched_mse 2AFC score per metric (rows) and pair kind (columns):
    which distortion kinds a metric confuses at equal MSE (0.5 = chance, 1 = the published ordering)."""
    by_kind = {
        m: r["2afc"]["matched_mse_by_kind"]
        for m, r in results["metrics"].items()
        if "matched_mse_by_kind" in r.get("2afc", {})
    }
    if not by_kind:
        return None
    plt = _plt()
    metrics = list(by_kind)
    combos = list(by_kind[metrics[0]])
    vals = np.array([[by_kind[m][c]["score"] if c in by_kind[m] else np.nan for c in combos] for m in metrics])
    fig, ax = plt.subplots(figsize=(1.3 * len(combos) + 2.5, 0.45 * len(metrics) + 2.2), dpi=110)
    im = ax.imshow(vals, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    for i in range(len(metrics)):
        for j in range(len(combos)):
            ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(np.arange(len(combos)), [c.replace(" vs ", "\nvs ").replace("_", " ") for c in combos], fontsize=7)
    ax.set_yticks(np.arange(len(metrics)), metrics, fontsize=8)
    n = by_kind[metrics[0]][combos[0]]["n"]
    ax.set_title(f"matched_mse 2AFC per pair kind (close vs far, ~{n} triplets each; synthetic judgements)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="2AFC score (0.5 = chance)")
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
