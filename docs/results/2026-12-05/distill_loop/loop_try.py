"""A distilled policy file through the real-time loop against the 'real_player' human model
(tools/loop_gap_ablation.py's 'base' condition: the kinematic sim-server, a stop recovered at once for diagnosis).

    python docs/results/2026-12-05/distill_loop/loop_try.py POLICY.pt N SEED [--out FILE.jsonl] [--torch-threads K]
"""

import argparse
import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(root / "tools"))
from loop_gap_ablation import run_condition  # noqa: E402

from robot_rt.learning.distill import load_distilled  # noqa: E402
from robot_rt.robot import load_robot  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy")
    ap.add_argument("balls", type=int)
    ap.add_argument("seed", type=int)
    ap.add_argument("--out", default=None, help="append the result (one JSON object per line) to this file")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = ap.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    c = run_condition(lambda: load_distilled(args.policy, 1), "base", load_robot(), args.balls, args.seed)
    print(
        f"{args.policy} (seed {args.seed}, {args.balls} rallies): return rate {c['return_rate']:.2f} "
        f"{c['return_rate_ci95']}, mean rally {c['mean_rally_length']:.2f} {c['mean_rally_length_ci95']}, "
        f"{c['outcomes']}, {c['safety_events']}, recoveries {c['recoveries']}, {c['wall_s']:.0f} s",
        flush=True,
    )
    if args.out:
        with open(args.out, "a") as f:
            row = {"policy": args.policy, "seed": args.seed, "balls": args.balls, "torch_threads": args.torch_threads}
            f.write(json.dumps({**row, **c}) + "\n")
