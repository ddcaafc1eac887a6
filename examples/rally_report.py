"""Figures and one JSON for the rally results: learning curves of `robot-rt train bgs` runs (the mean policy's
fitness per generation with its 95 % band over slots) and rally-length histograms of `examples/evaluate_rally.py`
results, next to the ceiling of 20 and the target of 15.

    python examples/rally_report.py --eval runs/eval_rally.json --run runs/bgs_rally_s0 --out OUT_DIR

Writes OUT_DIR/rally_report.json, OUT_DIR/learning_curves.png and OUT_DIR/rally_histogram.png (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from robot_rt._io import atomic_write_json
from robot_rt.learning.plots import plot_fitness_curves, plot_rally_histograms


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--eval", action="append", required=True, help="evaluate_rally.py JSON (repeatable)")
    p.add_argument("--run", action="append", default=[], help="robot-rt train bgs run directory (repeatable)")
    p.add_argument("--baseline-fitness", type=float, default=None, help="scripted base's fitness (dashed line)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    policies, evals = [], []
    for path in args.eval:
        data = json.loads(Path(path).read_text())
        evals.append(data)
        for pol in data["policies"]:
            name = pol["policy"]
            if name.endswith(".pt"):  # RUN/policy.pt: the run's name, else the file's
                path = Path(name)
                name = f"{path.parent.name if path.stem == 'policy' else path.stem} (neural)"
            label = f"{name}, {len(data['seeds'])} x {data['episodes_per_seed']} serves"
            policies.append(dict(pol, label=label))
    ceiling = evals[0]["ceiling_rally_mean"]
    curves, runs = {}, []
    for run in args.run:
        run = Path(run)
        config = json.loads((run / "config.json").read_text())
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        curve = [
            {
                "global_step": r["env_steps"],
                "fitness_centre": r["fitness_centre"],
                "fitness_centre_ci95": r.get("fitness_centre_ci95"),
            }
            for r in log
        ]
        label = f"{run.name} (seed {config.get('seed')})"
        curves[label] = curve
        steps = [0] + [r["env_steps"] for r in log]
        wall = sum((b - a) / r["steps_per_s"] for a, b, r in zip(steps, steps[1:], log))
        runs.append({"run": str(run), "config": config, "curve": curve, "wall_s": wall, "env_steps": steps[-1]})
    baselines = {}
    if args.baseline_fitness is not None:
        baselines["scripted base (generation 0)"] = (args.baseline_fitness, None)
    if curves:
        plot_fitness_curves(
            curves,
            baselines,
            out / "learning_curves.png",
            title="BGS residual on the scripted rally preset: mean policy's continuation (95 % band over slots)",
            ylabel="continuation: P(a ball the robot faces comes back)",
        )
    plot_rally_histograms(policies, out / "rally_histogram.png", ceiling, title="Rally vs the default human model")
    report = {
        "ceiling_rally_mean": ceiling,
        "target_rally_mean": 15,
        "load_average_1min_at_report": os.getloadavg()[0],
        "evaluations": evals,
        "training_runs": runs,
        "summary": [
            {
                "policy": pol["policy"],
                "label": pol["label"],
                "rally_mean": pol["pooled"]["rally_mean"],
                "rally_mean_ci95": pol["pooled"]["rally_mean_ci95"],
                "seed_means": pol["pooled"]["seed_means"],
                "robot_return_rate": pol["pooled"]["robot_return_rate"],
                "human_answered_share": pol["pooled"]["human_answered_share"],
            }
            for pol in policies
        ],
    }
    atomic_write_json(out / "rally_report.json", report)
    for s in report["summary"]:
        lo, hi = s["rally_mean_ci95"]
        print(f"{s['label']}: mean rally {s['rally_mean']:.2f} [{lo:.2f}, {hi:.2f}] (ceiling {ceiling:.0f})")
    return report


if __name__ == "__main__":
    main()
