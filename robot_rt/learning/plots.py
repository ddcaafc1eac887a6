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


def plot_landing_scatter(
    goals, landings: list, path: str | Path, radius_m: float = 0.3, title: str = "", links: int = 64
) -> Path:
    """Landing points against their goals on the human's half of the table (top view, x towards the human).

    `goals` [G, 2]; `landings`: one list per run (e.g. per seed) of G entries, [x, y] or None where the ball did not
    land. Landings within `radius_m` of their goal are green, the others orange; a thin line joins the first run's
    first `links` goals to their landings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    goals = np.asarray(goals, dtype=np.float64)
    if goals.ndim != 2 or goals.shape[1] != 2:
        raise ValueError(f"goals: expected shape [G, 2], got {goals.shape}")
    for i, run in enumerate(landings):
        if len(run) != len(goals):
            raise ValueError(f"landings[{i}]: expected {len(goals)} entries (one per goal), got {len(run)}")
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=110)
    half_length, half_width = 1.37, 0.7625  # the ITTF table (learning may not import ballistics: layer rule)
    ax.add_patch(plt.Rectangle((-half_length, -half_width), half_length, 2 * half_width, fill=False, color="k", lw=1))
    ax.axvline(0.0, color="k", lw=2)  # the net
    hits = misses = lost = 0
    for r, run in enumerate(landings):
        for g, land in enumerate(run):
            if land is None:
                lost += 1
                continue
            x, y = land
            ok = np.hypot(x - goals[g, 0], y - goals[g, 1]) <= radius_m
            hits += int(ok)
            misses += int(not ok)
            ax.scatter(x, y, s=7, color="tab:green" if ok else "tab:orange", alpha=0.5, linewidths=0)
            if r == 0 and g < links:
                ax.plot([goals[g, 0], x], [goals[g, 1], y], color="0.6", lw=0.5)
    ax.scatter(goals[:, 0], goals[:, 1], s=10, marker="x", color="k", linewidths=0.8, label="goals")
    ax.scatter([], [], s=12, color="tab:green", label=f"within {100 * radius_m:.0f} cm ({hits})")
    ax.scatter([], [], s=12, color="tab:orange", label=f"farther ({misses})")
    ax.plot([], [], color="0.6", lw=0.5, label=f"goal -> landing ({min(links, len(goals))} of run 0)")
    total = hits + misses + lost
    ax.set_title(
        (title + "\n" if title else "") + f"{hits} of {total} within {100 * radius_m:.0f} cm, {lost} did not land",
        fontsize=9,
    )
    ax.set_xlabel(f"x (m): the net at 0, the human's end line at {-half_length:g}")
    ax.set_ylabel("y (m)")
    ax.set_xlim(-1.6, 0.15)
    ax.set_ylim(-0.95, 0.95)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper left", framealpha=0.8)
    fig.tight_layout()
    return _png(fig, path)
