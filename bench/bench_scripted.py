"""Benchmark of the batched scripted policy (`robot_rt.envs.scripted.BatchedScriptedPolicy`) against the
single-env `HeuristicPolicy` (its reference: same controller, Python UKF per env), measured in the same run.

1. Throughput for N = 1, 64, 256, 1024 environments (--sizes): env-steps/s of the policy alone (its calls
   inside a rollout of `TableTennisVectorEnv`, so tracks, bounces and predictions are real) and of env +
   policy, wall and per CPU-second of this process; the HeuristicPolicy's policy-alone env-steps/s (one env)
   and the ratio.
2. TableTennis-v0 with the default and the 'real player' human models: return rate (returns / (returns +
   missed + out + limit endings), Wilson 95% interval), mean/max rally length per episode, outcome histogram;
   --episodes episodes of the batched policy (one batched env, each env plays ceil(episodes / N) episodes)
   and --ref-episodes of the HeuristicPolicy.
3. TableTennisGoal-v0 with the env's random goals: landed rate, success within 20 / 30 cm, median distance.

Targets (issue): >= 10k policy env-steps/s at >= 256 envs; a return rate at least the HeuristicPolicy's.

    .venv/bin/python bench/bench_scripted.py            # full run
    .venv/bin/python bench/bench_scripted.py --quick    # smoke run
Writes bench/results/scripted.json (atomically) and prints tables.
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from robot_rt._io import atomic_write_json
from robot_rt.envs import HumanBehaviorModel, TableTennisEnv, TableTennisGoalEnv
from robot_rt.envs.heuristic import HeuristicPolicy
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.vector import TableTennisGoalVectorEnv, TableTennisVectorEnv
from robot_rt.learning.stats import wilson_interval as wilson

FAILURES = ("missed", "out", "limit")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------ throughput
def throughput(n: int, steps: int, warmup: int = 20) -> dict:
    env = TableTennisVectorEnv(n, max_episode_steps=1500)
    pol = BatchedScriptedPolicy(n)
    obs, _ = env.reset(seed=0)
    auto = np.zeros(n, bool)
    t_pol = c_pol = 0.0
    for k in range(warmup + steps):
        if k == warmup:
            w0, c0 = time.perf_counter(), time.process_time()
            t_pol = c_pol = 0.0
        if auto.any():
            pol.reset(auto)
        a0, ac = time.perf_counter(), time.process_time()
        action = pol(obs)
        t_pol += time.perf_counter() - a0
        c_pol += time.process_time() - ac
        obs, _, term, trunc, _ = env.step(action)
        auto = term | trunc
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {
        "num_envs": n,
        "steps": steps,
        "policy_env_steps_per_s": n * steps / t_pol,
        "policy_env_steps_per_cpu_s": n * steps / max(c_pol, 1e-9),
        "env_policy_env_steps_per_s": n * steps / wall,
        "env_policy_env_steps_per_cpu_s": n * steps / max(cpu, 1e-9),
        "policy_ms_per_call": 1e3 * t_pol / steps,
        "peak_rss_mib": peak_rss_mib(),
    }


def heuristic_throughput(steps: int) -> dict:
    env, pol = TableTennisEnv(), HeuristicPolicy()
    obs, _ = env.reset(seed=0)
    t_pol = c_pol = 0.0
    for _ in range(steps):
        a0, ac = time.perf_counter(), time.process_time()
        action = pol(obs)
        t_pol += time.perf_counter() - a0
        c_pol += time.process_time() - ac
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            obs, _ = env.reset()
            pol.reset()
    return {"policy_env_steps_per_s": steps / t_pol, "policy_env_steps_per_cpu_s": steps / max(c_pol, 1e-9)}


# ------------------------------------------------------------------------------------------ rally
def _rally_summary(name, policy_name, rallies, returns, failures, outcomes, seconds) -> dict:
    balls = returns + failures
    return {
        "policy": policy_name,
        "human_model": name,
        "episodes": len(rallies),
        "balls": balls,
        "returns": returns,
        "return_rate": returns / max(balls, 1),
        "return_rate_ci95": wilson(returns, balls),
        "mean_rally_length": float(np.mean(rallies)),
        "max_rally_length": int(np.max(rallies)),
        "outcomes": outcomes,
        "seconds": seconds,
    }


def rally_batched(human: HumanBehaviorModel, episodes: int, n: int, seed: int = 0) -> dict:
    per_env = math.ceil(episodes / n)
    env = TableTennisVectorEnv(n, human=human, max_episode_steps=1500)
    pol = BatchedScriptedPolicy(n)
    obs, _ = env.reset(seed=seed)
    done_count = np.zeros(n, dtype=np.int64)
    auto = np.zeros(n, bool)
    rallies, outcomes = [], {}
    returns = failures = 0
    start = time.perf_counter()
    while np.any(done_count < per_env):
        if auto.any():
            pol.reset(auto)
        obs, _, term, trunc, info = env.step(pol(obs))
        counting = done_count < per_env
        returns += int((info["landed"] & counting).sum())
        ended = (term | trunc) & counting
        for i in np.nonzero(ended)[0]:
            o = str(info["outcome"][i]) if term[i] else "truncated"
            outcomes[o] = outcomes.get(o, 0) + 1
            failures += int(o in FAILURES)
            rallies.append(int(info["rally_length"][i]))
        done_count += term | trunc
        auto = term | trunc
    return _rally_summary(
        human.name, "batched_scripted", rallies, returns, failures, outcomes, time.perf_counter() - start
    )


def rally_heuristic(human: HumanBehaviorModel, episodes: int) -> dict:
    env, pol = TableTennisEnv(human=human), HeuristicPolicy()
    rallies, outcomes = [], {}
    returns = failures = 0
    start = time.perf_counter()
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        pol.reset()
        for _ in range(1500):
            obs, _, term, trunc, info = env.step(pol(obs))
            returns += int(info["landed"])
            if term or trunc:
                break
        o = str(info["outcome"]) if term else "truncated"
        outcomes[o] = outcomes.get(o, 0) + 1
        failures += int(o in FAILURES)
        rallies.append(int(info["rally_length"]))
    return _rally_summary(human.name, "heuristic", rallies, returns, failures, outcomes, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------ goal
def _goal_summary(policy_name, landed, dist) -> dict:
    e = len(landed)
    d = np.asarray(dist)
    s20, s30 = int(np.sum(d <= 0.2)), int(np.sum(d <= 0.3))
    return {
        "policy": policy_name,
        "episodes": e,
        "landed_rate": float(np.mean(landed)),
        "success_20cm": s20 / e,
        "success_20cm_ci95": wilson(s20, e),
        "success_30cm": s30 / e,
        "success_30cm_ci95": wilson(s30, e),
        "median_distance_m": float(np.median(d[np.isfinite(d)])) if np.isfinite(d).any() else None,
    }


def goal_batched(episodes: int, seed: int = 0) -> dict:
    env = TableTennisGoalVectorEnv(episodes, max_episode_steps=300)
    pol = BatchedScriptedPolicy(episodes)
    obs, _ = env.reset(seed=seed)
    finished = np.zeros(episodes, bool)
    landed = np.zeros(episodes, bool)
    dist = np.full(episodes, np.inf)
    for _ in range(300):
        obs, _, term, trunc, info = env.step(pol(obs))
        end = (term | trunc) & ~finished
        landed[end] = info["has_landed"][end]
        dist[end] = info["distance_to_goal_m"][end]
        finished |= end
        if finished.all():
            break
    return _goal_summary("batched_scripted", landed, dist)


def goal_heuristic(episodes: int) -> dict:
    env, pol = TableTennisGoalEnv(), HeuristicPolicy()
    landed, dist = [], []
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        pol.reset()
        for _ in range(300):
            obs, _, term, trunc, info = env.step(pol(obs))
            if term or trunc:
                break
        landed.append(bool(info["has_landed"]))
        dist.append(info["distance_to_goal_m"])
    return _goal_summary("heuristic", np.array(landed), dist)


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 256, 1024])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per throughput case")
    parser.add_argument("--episodes", type=int, default=512, help="rally / goal episodes of the batched policy")
    parser.add_argument("--rally-envs", type=int, default=256)
    parser.add_argument("--ref-episodes", type=int, default=20, help="episodes of the HeuristicPolicy")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "scripted.json")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.steps, args.episodes, args.rally_envs, args.ref_episodes = [1, 64, 256], 30, 64, 64, 3
    console = Console(width=200)
    through = [throughput(n, args.steps if n > 1 else max(args.steps, 100)) for n in args.sizes]
    heur_tp = heuristic_throughput(max(60, args.steps // 2))
    for r in through:
        r["ratio_vs_heuristic"] = r["policy_env_steps_per_s"] / heur_tp["policy_env_steps_per_s"]
    humans = [HumanBehaviorModel.default(), HumanBehaviorModel.real_player()]
    rally = []
    for h in humans:
        rally.append(rally_batched(h, args.episodes, args.rally_envs))
        rally.append(rally_heuristic(h, args.ref_episodes))
    goal = [goal_batched(args.episodes), goal_heuristic(args.ref_episodes)]
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": _cpus()},
        "params": dict(zip(ScriptedParams.names(), ScriptedParams().to_vector().tolist())),
        "throughput": through,
        "heuristic_throughput": heur_tp,
        "rally": rally,
        "goal": goal,
        "peak_rss_mib": peak_rss_mib(),
    }
    atomic_write_json(args.out, results)

    t = Table(title="policy throughput (env-steps/s; CPU-s: per second of this process's CPU time)")
    for col in ("envs", "policy", "policy /CPU-s", "env+policy", "env+policy /CPU-s", "ms/call", "x heuristic"):
        t.add_column(col)
    for r in through:
        t.add_row(
            str(r["num_envs"]),
            f"{r['policy_env_steps_per_s']:,.0f}",
            f"{r['policy_env_steps_per_cpu_s']:,.0f}",
            f"{r['env_policy_env_steps_per_s']:,.0f}",
            f"{r['env_policy_env_steps_per_cpu_s']:,.0f}",
            f"{r['policy_ms_per_call']:.2f}",
            f"{r['ratio_vs_heuristic']:.0f}",
        )
    t.add_row("heuristic (1)", f"{heur_tp['policy_env_steps_per_s']:,.0f}", "", "", "", "", "1")
    console.print(t)
    t = Table(title="TableTennis-v0 rallies")
    for col in ("policy", "human", "episodes", "balls", "return rate (95% CI)", "mean rally", "max", "outcomes"):
        t.add_column(col)
    for r in rally:
        lo, hi = r["return_rate_ci95"]
        t.add_row(
            r["policy"],
            r["human_model"],
            str(r["episodes"]),
            str(r["balls"]),
            f"{r['return_rate']:.3f} ({lo:.2f}-{hi:.2f})",
            f"{r['mean_rally_length']:.2f}",
            str(r["max_rally_length"]),
            str(r["outcomes"]),
        )
    console.print(t)
    t = Table(title="TableTennisGoal-v0 (random goals)")
    for col in ("policy", "episodes", "landed", "<=20 cm (95% CI)", "<=30 cm (95% CI)", "median distance m"):
        t.add_column(col)
    for g in goal:
        t.add_row(
            g["policy"],
            str(g["episodes"]),
            f"{g['landed_rate']:.3f}",
            f"{g['success_20cm']:.3f} ({g['success_20cm_ci95'][0]:.2f}-{g['success_20cm_ci95'][1]:.2f})",
            f"{g['success_30cm']:.3f} ({g['success_30cm_ci95'][0]:.2f}-{g['success_30cm_ci95'][1]:.2f})",
            f"{g['median_distance_m']}",
        )
    console.print(t)
    print(f"peak RSS {results['peak_rss_mib']:.0f} MiB; wrote {args.out}")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
