"""A policy in the loop-model env played as the real-time loop plays it: continuous rallies, the next serve
0.8 s (or --delay/--jitter) after a rally ends with the robot where it was left (WorldConfig.keep_robot_pose),
the loop model's trajectory going on across rallies; the policy (not the trajectory) is reset after each rally, as
the loop's adapter resets it once the ball is gone. Reports the mean rally of the rallies that ended, per env.

    python docs/results/2026-12-05/between_rallies/continuous_eval.py POLICY [--human H] [--envs 64] [--seconds 60]

POLICY: a distilled policy file, or 'shot-loop' / 'shot-env' (the UKF shot policy, rally_shot_policy variant).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from robot_rt.sim.rally import HUMAN_CHOICES, resolve_human


def make_policy(name: str, n: int):
    if name.startswith("shot-"):
        from robot_rt.envs.shot_model import rally_shot_policy

        return rally_shot_policy(n, tracker="ukf", variant=name.split("-", 1)[1])
    from robot_rt.learning.distill import load_distilled

    return load_distilled(name, n)


def run(policy_name, human, n, seconds, delay, jitter, seed):
    """robot_rt.bridge.loop_model.play_as_the_loop (this script's loop, moved into the package; `jitter` must be 0)."""
    from robot_rt.bridge.loop_model import play_as_the_loop
    from robot_rt.learning.is2r import bootstrap_ci

    if jitter:
        raise ValueError("jitter: play_as_the_loop serves at a fixed interval")
    t0 = time.time()
    out = play_as_the_loop(
        make_policy(policy_name, n), n, int(round(seconds / 0.01)), human=human, serve_interval_s=delay, seed=seed
    )
    r = np.asarray(out["rally_lengths"], dtype=float)
    return {
        "policy": policy_name,
        "envs": n,
        "seconds": seconds,
        "serve_delay_s": delay,
        "serve_delay_jitter_s": jitter,
        "seed": seed,
        "rallies": len(r),
        "mean_rally": float(r.mean()) if len(r) else float("nan"),
        "mean_rally_ci95": bootstrap_ci(r) if len(r) else [float("nan")] * 2,
        "outcomes": out["outcomes"],
        "wall_s": time.time() - t0,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy")
    ap.add_argument("--human", default="real_player")
    ap.add_argument("--envs", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--delay", type=float, default=0.8)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="append the result (one JSON line) to this file")
    args = ap.parse_args()
    human = resolve_human(args.human if args.human in HUMAN_CHOICES else Path(args.human))
    row = run(args.policy, human, args.envs, args.seconds, args.delay, args.jitter, args.seed)
    row["human"] = args.human
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
