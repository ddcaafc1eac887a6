"""Benchmark of the table-tennis environments: env-steps/s of the batched vector env against gymnasium's
SyncVectorEnv of the single env.

Cases, for 1, 64 and 1024 environments (--sizes):
  * native    : `TableTennisVectorEnv` (robot_rt.envs.vector), all worlds advanced by one C++ call per step
                (physics + camera frames, std::thread workers, --threads, default all cores), the observation
                assembled by a second C++ call, NumPy only for rare events (autoresets, human answers) and infos;
  * numpy_ref : the same vector env on the NumPy reference (backend='numpy': physics, camera, observation);
  * sync      : `gym.make_vec(id, n, vectorization_mode='sync')`, a SyncVectorEnv of n single envs (each a
                1-world TableTennisWorld on the default, native, backend) — the issue's baseline;
  * cuda      : the vector env on the CUDA kernel (only with --cuda and a device).
Actions are uniform in the action space (pre-drawn), episodes end and autoreset as in training (random
actions: mostly misses, some limit violations). env-steps/s = num_envs * steps / wall time of the steps
(reset excluded, autoresets inside the timed steps included). Reports the ratio native / sync measured in
the same run (wall and per CPU-second) and the process's peak RSS after each case.

On a shared machine the wall-clock figure depends on the load (reported with each case); env_steps_per_cpu_s
(steps per second of CPU time used by this process, all its threads together) is the load-independent view:
on an idle machine the wall figure of the threaded native case lies between it and twice it on 2 cores.

Target (issue): >= 100k env-steps/s at 1024 envs on the 2-core CI machine, >= 10x the SyncVectorEnv figure.

    .venv/bin/python bench/bench_envs.py            # full run
    .venv/bin/python bench/bench_envs.py --quick    # smoke run (fewer steps)
Writes bench/results/envs.json (atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_json  # noqa: E402

import robot_rt.envs  # noqa: E402,F401 - registers the ids
from robot_rt._native import available_backends  # noqa: E402
from robot_rt.envs.vector import TableTennisGoalVectorEnv, TableTennisVectorEnv  # noqa: E402


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time_env(env, steps: int, warmup: int, seed: int = 0) -> dict:
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    high = env.single_action_space.high
    actions = rng.uniform(-1, 1, (warmup + steps,) + env.action_space.shape).astype(np.float32) * high
    for k in range(warmup):
        env.step(actions[k])
    ends = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(warmup, warmup + steps):
        _, _, term, trunc, _ = env.step(actions[k])
        ends += int(np.sum(term | trunc))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = env.num_envs
    return {
        "num_envs": n,
        "steps": steps,
        "wall_s": wall,
        "cpu_s": cpu,
        "env_steps_per_s": n * steps / wall,
        "env_steps_per_cpu_s": n * steps / cpu,
        "load_average_1min": os.getloadavg()[0],
        "ms_per_step": 1e3 * wall / steps,
        "episode_ends": ends,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _steps_for(case: str, n: int, quick: bool) -> tuple[int, int]:
    """(timed steps, warm-up steps): about the same wall time per case."""
    budget = {"native": 4e5, "cuda": 4e5, "numpy_ref": 6e3, "sync": 3e4}[case]
    if quick:
        budget /= 8
    steps = int(np.clip(budget / n, 5, 1000))
    return steps, max(2, steps // 10)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    p.add_argument("--sizes", default="1,64,1024", help="comma-separated numbers of environments")
    p.add_argument("--threads", type=int, default=None, help="C++ worker threads (default: all cores)")
    p.add_argument("--goal", action="store_true", help="TableTennisGoal-v0 instead of TableTennis-v0")
    p.add_argument("--cases", default="native,numpy_ref,sync", help="subset of native,numpy_ref,sync,cuda")
    p.add_argument("--cuda", action="store_true", help="add the CUDA backend (needs a device)")
    p.add_argument("--out", default=None, help="results directory (default bench/results)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    cases = [c for c in args.cases.split(",") if c]
    if args.cuda and "cuda" not in cases:
        cases.append("cuda")
    if "cuda" in cases and "cuda" not in available_backends("envs"):
        print("cuda: robot_rt._envs_cuda not built or no CUDA device; skipped")
        cases.remove("cuda")
    env_id = "robot_rt/TableTennisGoal-v0" if args.goal else "robot_rt/TableTennis-v0"
    vec_cls = TableTennisGoalVectorEnv if args.goal else TableTennisVectorEnv
    results = []
    for n in sizes:
        for case in cases:
            steps, warmup = _steps_for(case, n, args.quick)
            if case == "sync":
                env = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
            else:
                backend = {"native": "cpu", "numpy_ref": "numpy", "cuda": "cuda"}[case]
                env = vec_cls(n, backend=backend, num_threads=args.threads, max_episode_steps=None)
            row = {"case": case, **_time_env(env, steps, warmup)}
            env.close()
            results.append(row)
            print(
                f"{case:>9} n={n:5d}: {row['env_steps_per_s']:12.0f} env-steps/s ({row['ms_per_step']:.3f} ms/step), "
                f"{row['env_steps_per_cpu_s']:.0f} per cpu-s, load {row['load_average_1min']:.1f}"
            )
    by = {(r["case"], r["num_envs"]): r for r in results}
    for r in results:
        sync = by.get(("sync", r["num_envs"]))
        r["ratio_vs_sync"] = r["env_steps_per_s"] / sync["env_steps_per_s"] if sync else None
        r["ratio_vs_sync_cpu"] = r["env_steps_per_cpu_s"] / sync["env_steps_per_cpu_s"] if sync else None
        ref = by.get(("numpy_ref", r["num_envs"]))
        r["ratio_vs_numpy_ref"] = r["env_steps_per_s"] / ref["env_steps_per_s"] if ref else None
    load = os.getloadavg()
    payload = {
        "benchmark": "envs",
        "env_id": env_id,
        "quick": args.quick,
        "threads": args.threads or os.cpu_count(),
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "load_average_1_5_15": load,
            "nice": os.nice(0),  # scheduling priority of this run (the wall figures depend on it under load)
        },
        "target": ">= 100000 env-steps/s at 1024 envs and >= 10x SyncVectorEnv",
        "results": results,
    }
    native_1024 = by.get(("native", 1024))
    if native_1024:
        payload["target_met"] = bool(
            native_1024["env_steps_per_s"] >= 1e5 and (native_1024["ratio_vs_sync"] or 0.0) >= 10.0
        )
    path = write_json("envs", payload, args.out)
    rows = [
        [
            r["case"],
            r["num_envs"],
            r["steps"],
            f"{r['env_steps_per_s']:.0f}",
            f"{r['ms_per_step']:.3f}",
            "-" if r["ratio_vs_sync"] is None else f"{r['ratio_vs_sync']:.1f}x",
            "-" if r["ratio_vs_sync_cpu"] is None else f"{r['ratio_vs_sync_cpu']:.1f}x",
            "-" if r["ratio_vs_numpy_ref"] is None else f"{r['ratio_vs_numpy_ref']:.1f}x",
            f"{r['env_steps_per_cpu_s']:.0f}",
            f"{r['load_average_1min']:.1f}",
            r["episode_ends"],
            f"{r['peak_rss_mib']:.0f}",
        ]
        for r in results
    ]
    print_table(
        f"{env_id}: env-steps/s (load average {load[0]:.1f}, {os.cpu_count()} cores)",
        [
            "backend",
            "envs",
            "steps",
            "env-steps/s",
            "ms/step",
            "vs sync",
            "vs sync (cpu)",
            "vs numpy ref",
            "env-steps/cpu-s",
            "load",
            "episode ends",
            "peak RSS MiB",
        ],
        rows,
    )
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
