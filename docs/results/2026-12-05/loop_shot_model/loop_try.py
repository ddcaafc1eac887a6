"""The shot policy (UKF tracker) through the real-time loop against the 'real_player' human model, with the shipped
shot model fitted in the env against the default human ('shot-ukf') or the one fitted for the loop ('shot-loop-ukf':
against the human model an i-S2R run learned from the real player's ball tracks, the env's robot on the loop's
trajectory). tools/loop_gap_ablation.py's 'base' condition: the kinematic sim-server, a stop recovered at once for
diagnosis (none happened in these runs); N rallies, SEED seeds them.

    python docs/results/2026-12-05/loop_shot_model/loop_try.py shot-ukf|shot-loop-ukf N SEED [--out FILE.json]
        [--in-exponent K]   (the exponent of P(in) in the shot model's value, robot_rt.envs.shot_model; default 1)
"""

import argparse
import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(root / "tools"))
from loop_gap_ablation import run_condition  # noqa: E402

from robot_rt.envs.shot_model import rally_shot_policy  # noqa: E402
from robot_rt.robot import load_robot  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=("shot-ukf", "shot-loop-ukf"))
    ap.add_argument("balls", type=int)
    ap.add_argument("seed", type=int)
    ap.add_argument("--out", default=None, help="append the result (one JSON object per line) to this file")
    ap.add_argument("--in-exponent", type=float, default=1.0)
    args = ap.parse_args()
    variant = "loop" if args.which == "shot-loop-ukf" else "env"
    c = run_condition(
        lambda: rally_shot_policy(1, tracker="ukf", variant=variant, shot_in_exponent=args.in_exponent),
        "base",
        load_robot(),
        args.balls,
        args.seed,
    )
    print(
        f"{args.which} k={args.in_exponent:g} (seed {args.seed}, {args.balls} rallies): return rate {c['return_rate']:.2f} "
        f"{c['return_rate_ci95']}, mean rally {c['mean_rally_length']:.2f} {c['mean_rally_length_ci95']}, "
        f"{c['outcomes']}, {c['safety_events']}, recoveries {c['recoveries']}, {c['wall_s']:.0f} s",
        flush=True,
    )
    if args.out:
        with open(args.out, "a") as f:
            f.write(
                json.dumps(
                    {"which": args.which, "in_exponent": args.in_exponent, "seed": args.seed, "balls": args.balls, **c}
                )
                + "\n"
            )
