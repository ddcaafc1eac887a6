"""Pools `robot-rt train is2r` runs that differ only in their seeds into one result.

    python tools/merge_is2r_runs.py runs/is2r_s0 runs/is2r_s1 runs/is2r_s2 --out docs/results/DATE/is2r

Reads each RUN/results.json, checks that only the seeds differ, and writes OUT/results.json (per method and
iteration: every seed's evaluation rallies pooled, mean with a 95 % bootstrap interval, median, histogram, the
per-seed means, and the paired difference i-S2R - S2R+FT: `robot_rt.learning.is2r.merge_results`) and
OUT/rally_length.png. Files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot_rt._io import atomic_write_json  # noqa: E402
from robot_rt.learning.is2r import merge_results, plot_results  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (each with results.json)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    runs = []
    for run in args.runs:
        path = run / "results.json"
        if not path.is_file():
            ap.error(f"runs: {path} does not exist")
        runs.append(json.loads(path.read_text()))
    try:
        merged = merge_results(runs)
    except ValueError as err:
        ap.error(str(err))
    merged["merged_from"] = [str(r) for r in args.runs]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", merged)
    plot_results(merged, args.out / "rally_length.png")
    diff = {d["iteration"]: d for d in merged["paired_difference_is2r_minus_ft"]}
    for label, rows in merged["methods"].items():
        for r in rows:
            print(
                f"{label:7s} iteration {r['iteration']}: rally mean {r['mean']:.2f} "
                f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}], median {r['median']:.1f}, n={r['n_balls']}, "
                f"seeds {[round(m, 2) for m in r['seed_means']]}, sim diag. {r['sim_vs_real_player_model']['mean']:.2f}"
            )
    for i, d in sorted(diff.items()):
        print(f"i-S2R - S2R+FT iteration {i}: {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]")
    print(f"wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
