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
