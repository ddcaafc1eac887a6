"""Diagnosis: is the distilled policy lost through the loop between rallies? The loop serves the next ball 0.8 s after
a rally ends with the robot wherever the last rally left it; the env restarts every episode at home, so the network
never learned to get back into position with no ball in play. Here the shot policy (UKF, env shot model) acts while
the distilled policy's tracker has no ball (feature 'valid' 0), the distilled policy otherwise; both see every
observation. Through the real-time loop against 'real_player', tools/loop_gap_ablation.py's 'base' condition.

    python docs/results/2026-12-05/distill_loop/hybrid_try.py POLICY.pt N SEED [--out FILE.jsonl]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

root = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(root / "tools"))
from loop_gap_ablation import run_condition  # noqa: E402

from robot_rt.envs.shot_model import rally_shot_policy  # noqa: E402
from robot_rt.learning.distill import load_distilled  # noqa: E402
from robot_rt.robot import load_robot  # noqa: E402

VALID_COLUMN = 22  # FeatureExtractor: q [8], qd [8], ball [6], valid


class Hybrid:
    def __init__(self, path):
        self.net, self.scripted = load_distilled(path, 1), rally_shot_policy(1, tracker="ukf")
        self.robot = self.scripted.robot
        self.net_steps = 0
        self.steps = 0

    def __call__(self, obs):
        obs = np.asarray(obs, dtype=np.float64)
        scripted = np.asarray(self.scripted(obs[None]), dtype=np.float64)[0]
        learned, feats = self.net.act(obs[None])
        self.steps += 1
        if feats[0, VALID_COLUMN] > 0.5:
            self.net_steps += 1
            return learned[0]
        return scripted

    def reset(self, mask=None):
        self.net.reset(mask)
        self.scripted.reset(mask)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy")
    ap.add_argument("balls", type=int)
    ap.add_argument("seed", type=int)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    made = []

    def factory():
        made.append(Hybrid(args.policy))
        return made[-1]

    c = run_condition(factory, "base", load_robot(), args.balls, args.seed)
    share = made[-1].net_steps / max(made[-1].steps, 1)
    print(
        f"hybrid {args.policy} (seed {args.seed}, {args.balls} rallies): return rate {c['return_rate']:.2f} "
        f"{c['return_rate_ci95']}, mean rally {c['mean_rally_length']:.2f} {c['mean_rally_length_ci95']}, "
        f"{c['outcomes']}, network acted on {share:.2f} of the steps, {c['safety_events']}, {c['wall_s']:.0f} s",
        flush=True,
    )
    if args.out:
        with open(args.out, "a") as f:
            f.write(
                json.dumps({"policy": "hybrid " + args.policy, "seed": args.seed, "network_share": share, **c}) + "\n"
            )
