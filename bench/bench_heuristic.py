"""Return rate and rally length of the scripted heuristic policy on TableTennis-v0 (and goal accuracy on
TableTennisGoal-v0), against the default and the 'real player' human behaviour models.

    .venv/bin/python bench/bench_heuristic.py [--episodes 50] [--quick]

Writes bench/results/heuristic.json (atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from robot_rt._io import atomic_write_json
from robot_rt.envs import HumanBehaviorModel, TableTennisEnv, TableTennisGoalEnv
from robot_rt.envs.heuristic import HeuristicPolicy
from robot_rt.learning.stats import wilson_interval as wilson


def run_rally(human, episodes: int, max_steps: int = 1500) -> dict:
    env, policy = TableTennisEnv(human=human), HeuristicPolicy()
    rallies, balls, returns, outcomes = [], 0, 0, {}
    start = time.perf_counter()
    steps = 0
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        policy.reset()
        for _ in range(max_steps):
            obs, _, terminated, truncated, info = env.step(policy(obs))
            steps += 1
            balls += int(info["new_ball"])
            if terminated or truncated:
                break
        balls += 1
        returns += info["rally_length"]
        rallies.append(info["rally_length"])
        outcomes[info["outcome"]] = outcomes.get(info["outcome"], 0) + 1
    return {
        "human_model": human.name,
        "episodes": episodes,
        "balls": balls,
        "returns": returns,
        "return_rate": returns / balls,
        "return_rate_ci95": wilson(returns, balls),
        "mean_rally_length": float(np.mean(rallies)),
        "median_rally_length": float(np.median(rallies)),
        "max_rally_length": int(np.max(rallies)),
        "outcomes": outcomes,
        "env_steps_per_s": steps / (time.perf_counter() - start),
    }


def run_goal(episodes: int) -> dict:
    env, policy = TableTennisGoalEnv(), HeuristicPolicy()
    hit20 = hit30 = landed = 0
    distances = []
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        policy.reset()
        for _ in range(400):
            obs, _, terminated, truncated, info = env.step(policy(obs))
            if terminated or truncated:
                break
        landed += int(info["has_landed"])
        hit20 += int(info["success_20cm"])
        hit30 += int(info["success_30cm"])
        if info["has_landed"]:
            distances.append(info["distance_to_goal_m"])
    return {
        "episodes": episodes,
        "landed_rate": landed / episodes,
        "success_20cm": hit20 / episodes,
        "success_20cm_ci95": wilson(hit20, episodes),
        "success_30cm": hit30 / episodes,
        "success_30cm_ci95": wilson(hit30, episodes),
        "median_distance_m": float(np.median(distances)) if distances else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="10 episodes")
    parser.add_argument("--out", type=Path, default=Path("bench/results/heuristic.json"))
    args = parser.parse_args()
    episodes = 10 if args.quick else args.episodes
    results = {
        "rally": [
            run_rally(HumanBehaviorModel.default(), episodes),
            run_rally(HumanBehaviorModel.real_player(), episodes),
        ],
        "goal": run_goal(episodes),
    }
    atomic_write_json(args.out, results)
    table = Table(title=f"heuristic policy, {episodes} episodes each")
    for col in ("task / human", "balls", "return rate (95% CI)", "mean rally", "max rally", "outcomes"):
        table.add_column(col)
    for r in results["rally"]:
        lo, hi = r["return_rate_ci95"]
        table.add_row(
            f"rally / {r['human_model']}",
            str(r["balls"]),
            f"{r['return_rate']:.2f} ({lo:.2f}-{hi:.2f})",
            f"{r['mean_rally_length']:.2f}",
            str(r["max_rally_length"]),
            str(r["outcomes"]),
        )
    g = results["goal"]
    table.add_row(
        "goal (GoalsEye task)",
        str(g["episodes"]),
        f"landed {g['landed_rate']:.2f}",
        f"<=20cm {g['success_20cm']:.2f}",
        f"<=30cm {g['success_30cm']:.2f}",
        f"median dist {g['median_distance_m']}",
    )
    Console().print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
