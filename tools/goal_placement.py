"""Goal placement of the scripted policy, with and without a landing model (robot_rt.envs.landing_model).

    python tools/fit_landing_model.py --preset default --target-low -1.8 -0.9 --target-high 0.6 0.9 \
        --out runs/landing_model_default.json
    python tools/goal_placement.py --preset default --landing-model runs/landing_model_default.json --out goals.json

One goal episode per environment (TableTennisGoalVectorEnv) on held-out goals drawn from the GoalsEye evaluation's
region (x in [-1.2, -0.3] m, |y| <= 0.6 m; goal seed `--seed`, serves seed * 10^6 + i): the share of returns that
land within 30 cm and 20 cm of their goal (Wilson 95 %), and the median distance (a ball that does not land on the
human's half counts as a miss). Results go to OUT (JSON, written atomically) and a table to stdout.
"""

from __future__ import annotations

import argparse

import numpy as np

from robot_rt._io import atomic_write_json
from robot_rt.envs.landing_model import LandingModel
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.vector import TableTennisGoalVectorEnv
from robot_rt.learning.stats import wilson_interval


def placement(params, model, goals: np.ndarray, seed: int) -> dict:
    n = len(goals)
    env = TableTennisGoalVectorEnv(n, max_episode_steps=600)
    policy = BatchedScriptedPolicy(n, params=params, landing_model=model)
    env.reset(seed=[seed * 10**6 + i for i in range(n)])
    env.world.goal[:] = goals
    obs = env._observation()
    done = np.zeros(n, dtype=bool)
    dist = np.full(n, np.inf)
    while not done.all():
        obs, _, terminated, truncated, info = env.step(policy(obs))
        ended = (terminated | truncated) & ~done
        dist[ended] = np.asarray(info["distance_to_goal_m"])[ended]
        done |= ended
    env.close()
    out = {}
    for radius in (0.3, 0.2):
        k = int(np.sum(dist <= radius))
        out[f"within_{round(radius * 100)}cm"] = k / n
        out[f"within_{round(radius * 100)}cm_ci95"] = list(wilson_interval(k, n))
    out["median_distance_m"] = float(np.median(dist))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default", choices=("default", "rally"))
    ap.add_argument("--landing-model", help="a LandingModel JSON fitted for the preset (also measured without it)")
    ap.add_argument("--goals", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    params = ScriptedParams.preset(args.preset)
    rng = np.random.default_rng(args.seed)
    goals = np.stack([rng.uniform(-1.2, -0.3, args.goals), rng.uniform(-0.6, 0.6, args.goals)], axis=1)
    rows = {"plain": placement(params, None, goals, args.seed)}
    if args.landing_model:
        rows["landing_model"] = placement(params, LandingModel.load(args.landing_model), goals, args.seed)
    print("| policy | within 30 cm [95 % CI] | within 20 cm | median distance |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        lo, hi = r["within_30cm_ci95"]
        print(
            f"| {name} | {r['within_30cm']:.3f} [{lo:.3f}, {hi:.3f}] | {r['within_20cm']:.3f} | {r['median_distance_m']:.3f} m |"
        )
    atomic_write_json(
        args.out,
        dict(preset=args.preset, landing_model=args.landing_model, goals=args.goals, seed=args.seed, rows=rows),
    )


if __name__ == "__main__":
    main()
