"""Pools GoalsEye runs that differ only in their seeds (e.g. seeds run as separate processes) into one result.

    python tools/merge_goalseye_runs.py runs/ge_a runs/ge_b --out docs/results/DATE/goalseye

Reads each RUN/results.json, checks that only the seeds differ (and do not overlap), and writes OUT/results.json
(per-seed curves, pooled over all seeds with Wilson intervals: `robot_rt.learning.goalseye.merge_results`) and
OUT/success_20cm.png, OUT/success_30cm.png. Files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot_rt._io import atomic_write_json  # noqa: E402
from robot_rt.learning.goalseye import final_landings_from_checkpoint, merge_results, plot_final_landings  # noqa: E402
from robot_rt.learning.plots import plot_goalseye_curves  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (each with results.json)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--landings-from-checkpoints",
        action="store_true",
        help="runs recorded before results.json kept the final landings: evaluate their final checkpoints again",
    )
    args = ap.parse_args(argv)
    runs = []
    for run in args.runs:
        path = run / "results.json"
        if not path.is_file():
            ap.error(f"runs: {path} does not exist")
        results = json.loads(path.read_text())
        if args.landings_from_checkpoints:
            for key, curve in results["per_seed"].items():
                if curve and curve[-1].get("landings") is None:
                    seed, _, condition = key.partition("/")
                    again = final_landings_from_checkpoint(run, results["config"], int(seed[4:]), condition)
                    if again["success_30cm"] != curve[-1]["success_30cm"]:
                        ap.error(f"{run} {key}: the checkpoint's evaluation differs from the recorded one")
                    curve[-1]["landings"] = again["landings"]
        runs.append(results)
    try:
        merged = merge_results(runs)
    except ValueError as err:
        ap.error(str(err))
    merged["merged_from"] = [str(r) for r in args.runs]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", merged)
    for radius in (20, 30):
        plot_goalseye_curves(merged, radius, args.out / f"success_{radius}cm.png")
    plot_final_landings(merged, lambda name: args.out / name)
    for condition, points in merged["pooled"].items():
        if points:
            last = points[-1]
            lo, hi = last["ci_30cm"]
            print(
                f"{condition:15s} {last['attempts']:6d} attempts: 30 cm {100 * last['rate_30cm']:.1f} % "
                f"[{100 * lo:.1f}, {100 * hi:.1f}]  20 cm {100 * last['rate_20cm']:.1f} %  (n={last['n']})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
