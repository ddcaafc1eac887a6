"""Summary of several `examples/sb3_sac_her_goal.py` runs (seeds): a table, summary.json and a learning-curve PNG.

    python tools/sb3_sac_her_report.py RUN_DIR [RUN_DIR ...] --out OUT_DIR

Each run evaluates the zero action (the scripted controller alone), the initial and the trained policy on the same
held-out (serve, goal) pairs; the changes are paired per pair, their intervals bootstrapped over pairs.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_bytes, atomic_write_json, read_json_file
from robot_rt.learning.stats import bootstrap_ci, wilson_interval

KEYS = ("landed", "success_30cm", "success_20cm")


def _rate(per_episode) -> dict:
    x = np.asarray(per_episode, dtype=np.int64)
    return {"rate": float(x.mean()), "ci95": list(wilson_interval(int(x.sum()), len(x))), "n": len(x)}


def summarise(runs: dict[str, dict]) -> dict:
    out = {"runs": {}, "mean_over_runs": {}}
    for name, r in runs.items():
        row = {"seed": r["args"]["seed"], "level": r["args"].get("level", "joint"), "timesteps": r["timesteps"]}
        row["train_wall_s"] = r["train_wall_s"]
        for stage in ("zero_action", "before", "after"):
            if stage in r:
                row[stage] = {k: _rate(r[stage][f"{k}_per_episode"]) for k in KEYS}
        if "zero_action" in r:
            row["after_minus_zero_action"] = {}
            for k in KEYS:
                d = np.subtract(r["after"][f"{k}_per_episode"], r["zero_action"][f"{k}_per_episode"], dtype=float)
                row["after_minus_zero_action"][k] = {"mean": float(d.mean()), "ci95": bootstrap_ci(d)}
        out["runs"][name] = row
    rows = [r for r in out["runs"].values() if "after_minus_zero_action" in r]
    for k in KEYS:
        if rows:
            out["mean_over_runs"][k] = {
                "after": float(np.mean([r["after"][k]["rate"] for r in rows])),
                "zero_action": float(np.mean([r["zero_action"][k]["rate"] for r in rows])),
                "after_minus_zero_action": float(np.mean([r["after_minus_zero_action"][k]["mean"] for r in rows])),
            }
    return out


def plot_curves(runs: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, r in runs.items():
        curve = [c for c in r["curve"] if c["success_rate_recent"] is not None]
        line = ax.plot(
            [c["wall_s"] / 60 for c in curve],
            [100 * c["success_rate_recent"] for c in curve],
            lw=1,
            label=f"{name}: training (exploring), last 100 balls",
        )[0]
        after = r["after"]
        lo, hi = after["success_30cm_ci95"]
        x = r["train_wall_s"] / 60
        ax.errorbar(
            [x],
            [100 * after["success_30cm"]],
            yerr=[[100 * (after["success_30cm"] - lo)], [100 * (hi - after["success_30cm"])]],
            fmt="o",
            color=line.get_color(),
            capsize=3,
            label=f"{name}: trained, deterministic ({after['episodes']} held-out pairs)",
        )
    first = next(iter(runs.values()))
    if "zero_action" in first:
        z = first["zero_action"]
        ax.axhline(100 * z["success_30cm"], color="k", ls="--", lw=1, label="scripted controller alone (zero action)")
        lo, hi = z["success_30cm_ci95"]
        ax.axhspan(100 * lo, 100 * hi, color="k", alpha=0.07)
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("returns within 30 cm of the goal (%)")
    level = first["args"].get("level", "joint")
    ax.set_title(f"stable-baselines3 SAC + HER, level '{level}' (Wilson 95 % intervals)", fontsize=9)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def table(summary: dict) -> str:
    lines = [
        "| run | balls trained | wall (s) | zero action 30 cm | trained 30 cm | paired change 30 cm | trained 20 cm "
        "| paired change 20 cm | landed (zero -> trained) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(r):
        return f"{100 * r['rate']:.1f} % [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"

    def change(c):
        return f"{100 * c['mean']:+.1f} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]"

    for name, r in summary["runs"].items():
        if "after_minus_zero_action" not in r:
            continue
        d = r["after_minus_zero_action"]
        lines.append(
            f"| {name} | {r['timesteps']:,} | {r['train_wall_s']:.0f} | {pct(r['zero_action']['success_30cm'])} | "
            f"{pct(r['after']['success_30cm'])} | {change(d['success_30cm'])} | {pct(r['after']['success_20cm'])} | "
            f"{change(d['success_20cm'])} | {100 * r['zero_action']['landed']['rate']:.1f} % -> "
            f"{100 * r['after']['landed']['rate']:.1f} % |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="output directories of examples/sb3_sac_her_goal.py")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    runs = {}
    for d in args.runs:
        path = Path(d) / "results.json"
        if not path.is_file():
            print(f"runs: {path} does not exist", file=sys.stderr)
            return 2
        runs[Path(d).name] = read_json_file(path, "results")
    out = Path(args.out)
    summary = summarise(runs)
    atomic_write_json(out / "summary.json", summary)
    plot_curves(runs, out / "success_30cm.png")
    text = table(summary)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
