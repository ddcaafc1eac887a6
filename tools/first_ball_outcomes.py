"""First-ball outcomes of the scripted rally preset for several `min_hit_height_m` values (the hit-point choice).

    python tools/first_ball_outcomes.py --episodes 2048 --seed-offset 100000 --min-hit-height 0 0.78 0.8 0.82 \
        --out first_ball.json

Each value plays the same serves (environment i reset with seed offset + i) until the first ball is decided: the robot
missed it, put it out, hit a limit, or returned it (a new ball from the human, or the human's miss). Every ball the
robot faces is a fresh draw from the human model's launches, so the first-ball failure rate is the robot's failure
rate per ball. Results go to OUT (JSON, written atomically) and a table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter

from robot_rt._io import atomic_write_json
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.learning.rollout import first_ball_outcomes
from robot_rt.learning.stats import wilson_interval


def first_ball_counts(episodes: int, seed_offset: int, min_hit_height_m: float) -> Counter:
    env = TableTennisVectorEnv(episodes, max_episode_steps=600)
    params = dataclasses.replace(ScriptedParams.preset("rally"), min_hit_height_m=min_hit_height_m)
    try:
        outcomes = first_ball_outcomes(
            env, BatchedScriptedPolicy(episodes, params=params), range(seed_offset, seed_offset + episodes)
        )
    finally:
        env.close()
    return Counter("returned" if o in ("none", "returned") else o for o in outcomes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=2048)
    ap.add_argument("--seed-offset", type=int, default=100000)
    ap.add_argument("--min-hit-height", type=float, nargs="+", default=[0.0, 0.8])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = []
    print("| min_hit_height_m | failures [95 % CI] | missed | out | limit |")
    print("|---|---|---|---|---|")
    for z in args.min_hit_height:
        t0 = time.time()
        c = first_ball_counts(args.episodes, args.seed_offset, z)
        failed = c["missed"] + c["out"] + c["limit"]
        lo, hi = wilson_interval(failed, args.episodes)
        rows.append(
            dict(
                min_hit_height_m=z,
                failure_rate=failed / args.episodes,
                failure_rate_ci95=[lo, hi],
                outcomes=dict(c),
                wall_s=time.time() - t0,
            )
        )
        print(
            f"| {z:g} | {failed / args.episodes:.3f} [{lo:.3f}, {hi:.3f}] | {c['missed']} | {c['out']} | {c['limit']} |",
            flush=True,
        )
    atomic_write_json(args.out, dict(episodes=args.episodes, seed_offset=args.seed_offset, rows=rows))


if __name__ == "__main__":
    main()
