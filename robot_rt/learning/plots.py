"""Figures of the learning loops (matplotlib, Agg backend: no display needed; files written atomically)."""

from __future__ import annotations

import io
from pathlib import Path

from robot_rt._io import atomic_write_bytes

_STYLE = {"demos+practice": ("tab:blue", "o"), "demos-only": ("tab:orange", "s"), "practice-only": ("tab:green", "^")}


def plot_goalseye_curves(results: dict, radius_cm: int, path: str | Path) -> Path:
    """Success within `radius_cm` against the number of extra attempts, one line per condition: the rate pooled
    over seeds with its Wilson 95% band, and each seed's rate as faint markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if radius_cm not in (20, 30):
        raise ValueError(f"radius_cm: expected 20 or 30, got {radius_cm!r}")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for condition, points in results["pooled"].items():
        if not points:
            continue
        color, marker = _STYLE.get(condition, ("tab:gray", "x"))
        x = [p["attempts"] for p in points]
        y = [100 * p[f"rate_{radius_cm}cm"] for p in points]
        lo = [100 * p[f"ci_{radius_cm}cm"][0] for p in points]
        hi = [100 * p[f"ci_{radius_cm}cm"][1] for p in points]
        ax.plot(x, y, marker=marker, color=color, label=f"{condition} (n={points[-1]['n']}/point)")
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)
        for key, curve in results["per_seed"].items():
            if key.endswith("/" + condition):
                ax.scatter(
                    [p["attempts"] for p in curve],
                    [100 * p[f"rate_{radius_cm}cm"] for p in curve],
                    color=color,
                    marker=marker,
                    alpha=0.3,
                    s=14,
                )
    ax.set_xlabel("extra episodes (self-practice attempts, or scripted play for demos-only)")
    ax.set_ylabel(f"success within {radius_cm} cm (%)")
    seeds = results["config"]["seeds"]
    ax.set_title(f"GoalsEye (simulation): held-out goals, seeds {seeds}, Wilson 95% bands", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _png(fig, path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_fitness_curves(
    curves: dict, baselines: dict, path: str | Path, title: str = "", ylabel: str = "fitness"
) -> Path:
    """ES learning curves: for each label, the mean policy's fitness per generation against env steps with its 95 %
    band (`fitness_centre`, `fitness_centre_ci95` of each record); `baselines` {label: (value, (lo, hi))} as
    horizontal lines with their bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for label, curve in curves.items():
        x = [c["global_step"] / 1e6 for c in curve]
        line = ax.plot(x, [c["fitness_centre"] for c in curve], marker=".", label=label)[0]
        ci = [c.get("fitness_centre_ci95") for c in curve]
        if all(b is not None for b in ci):
            ax.fill_between(x, [b[0] for b in ci], [b[1] for b in ci], color=line.get_color(), alpha=0.15, linewidth=0)
    for k, (label, (value, band)) in enumerate(baselines.items()):
        color = ("tab:gray", "tab:red", "tab:purple")[k % 3]
        ax.axhline(value, color=color, linestyle="--", linewidth=1, label=label)
        if band is not None:
            ax.axhspan(band[0], band[1], color=color, alpha=0.08)
    ax.set_xlabel("env steps (millions)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, path)


def plot_rally_histograms(policies: list[dict], path: str | Path, ceiling: float, title: str = "") -> Path:
    """Rally-length histograms (share of rallies per length) of `examples/evaluate_rally.py` results, one bar set
    per policy, with each mean and its 95 % interval in the legend and the ceiling in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=110)
    width = 0.8 / max(len(policies), 1)
    for k, pol in enumerate(policies):
        t = pol["pooled"]
        hist = np.asarray(t["rally_histogram"], dtype=np.float64)
        share = hist / hist.sum()
        lo, hi = t["rally_mean_ci95"]
        ax.bar(
            np.arange(len(share)) + (k - (len(policies) - 1) / 2) * width,
            share,
            width=width,
            label=f"{pol.get('label', pol['policy'])}: mean {t['rally_mean']:.2f} [{lo:.2f}, {hi:.2f}]",
        )
    ax.set_xlabel("rally length (robot returns landed)")
    ax.set_ylabel("share of rallies")
    ax.set_title(f"{title} (ceiling {ceiling:.0f}, target 15)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, path)
