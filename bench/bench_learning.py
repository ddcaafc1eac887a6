"""Benchmark of the neural trainers: env-steps/s end to end (rollouts AND updates) of robot-rt's PPO and BGS on the
native batched rally environment, against stable-baselines3 PPO on the same environment, in one run.

Cases (--cases), each timed after one warm-up iteration, interleaved over --rounds (the figure is the median):
  * ppo          : `robot_rt.learning.ppo.PPOTrainer`, its defaults (4096 envs x 32 steps per iteration, MLP 128 over
                   the 8-step history, 4 epochs over 25 % subsets = one visit per sample, minibatch 8192);
  * bgs          : `robot_rt.learning.bgs.BGSTrainer`, its defaults (32 antithetic pairs + the mean, 16 slots each,
                   200 steps per generation: 208k steps; temporal-conv policy, one network per candidate via vmap);
  * sb3_native   : stable-baselines3 PPO on the same native batched env through `robot_rt.envs.sb3.SB3VecEnv`
                   (1024 envs), VecFrameStack(8) for the same 8-step history, the same network (MLP 128 for the
                   policy and the value), n_steps 32, one epoch (the same one visit per sample), batch 8192;
  * sb3_dummy    : stable-baselines3 PPO as its documentation runs it: make_vec_env (DummyVecEnv, one Python env
                   per env, 16 envs), VecFrameStack(8), the same network, n_steps 256, one epoch, batch 4096;
  * env_only     : the floor: the native vector env alone (4096 envs, random actions), no policy, no update.
All cases use one torch thread (see robot_rt.learning.ppo: on this shared 2-core machine torch's OpenMP threads
spin against other processes). env-steps/s = env steps simulated / wall time, including everything the trainer
does; per CPU-second (all threads of this process) is the load-independent view reported next to it. Ratios are
taken against sb3_native and sb3_dummy measured in the same run.

Target (issue 13): >= 50k env-steps/s including the updates on this machine.

    .venv/bin/python bench/bench_learning.py            # full run (~5-10 min on the shared machine)
    .venv/bin/python bench/bench_learning.py --quick    # smoke run
Writes bench/results/learning.json (atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_json  # noqa: E402


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure(run, steps: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "env_steps": steps,
        "wall_s": wall,
        "cpu_s": cpu,
        "env_steps_per_s": steps / wall,
        "env_steps_per_cpu_s": steps / cpu,
        "load_average_1min": os.getloadavg()[0],
    }


class PPOCase:
    def __init__(self, quick: bool):
        from robot_rt.learning.ppo import PPOConfig, PPOTrainer

        self.cfg = PPOConfig(total_steps=10**12, num_envs=1024 if quick else 4096)
        self.trainer = PPOTrainer(self.cfg, None, progress=False)
        self.iterations = 1 if quick else 3
        self.trainer.train_iteration()  # warm-up
        self.config = {k: v for k, v in self.cfg.to_dict().items() if k != "total_steps"}

    def __call__(self) -> dict:
        steps = self.iterations * self.cfg.num_envs * self.cfg.rollout_steps
        row = _measure(lambda: [self.trainer.train_iteration() for _ in range(self.iterations)], steps)
        return row


class BGSCase:
    def __init__(self, quick: bool):
        from robot_rt.learning.bgs import BGSConfig, BGSTrainer

        self.cfg = BGSConfig(generations=10**6, **(dict(directions=8, top_k=4, horizon=100) if quick else {}))
        self.trainer = BGSTrainer(self.cfg, None, progress=False)
        self.generations = 1 if quick else 2
        self.trainer.generation()
        self.config = {k: v for k, v in self.cfg.to_dict().items() if k != "generations"}

    def __call__(self) -> dict:
        steps = self.generations * self.trainer.candidates * self.cfg.slots * self.cfg.horizon
        return _measure(lambda: [self.trainer.generation() for _ in range(self.generations)], steps)


class SB3Case:
    def __init__(self, quick: bool, native: bool):
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import VecFrameStack

        torch.set_num_threads(1)
        if native:
            from robot_rt.envs.sb3 import SB3VecEnv
            from robot_rt.envs.vector import TableTennisVectorEnv

            n_envs, n_steps, batch = (256 if quick else 1024), 32, 8192
            venv = SB3VecEnv(TableTennisVectorEnv(n_envs, max_episode_steps=600))
        else:
            import gymnasium as gym
            from stable_baselines3.common.env_util import make_vec_env

            import robot_rt.envs  # noqa: F401 - registers the ids

            n_envs, n_steps, batch = 16, (64 if quick else 256), 4096

            def factory():
                return gym.make("robot_rt/TableTennis-v0", max_episode_steps=600)

            venv = make_vec_env(factory, n_envs=n_envs, seed=0)
        venv = VecFrameStack(venv, n_stack=8)
        self.model = PPO(
            "MlpPolicy",
            venv,
            n_steps=n_steps,
            batch_size=min(batch, n_envs * n_steps),
            n_epochs=1,
            policy_kwargs={"net_arch": {"pi": [128], "vf": [128]}, "activation_fn": torch.nn.Tanh},
            device="cpu",
            seed=0,
            verbose=0,
        )
        self.per_rollout = n_envs * n_steps
        self.rollouts = 1 if quick else max(1, int(round((131072 if native else 16384) / self.per_rollout)))
        self.model.learn(self.per_rollout)  # warm-up
        self.config = {"n_envs": n_envs, "n_steps": n_steps, "batch_size": batch, "n_epochs": 1, "frame_stack": 8}

    def __call__(self) -> dict:
        steps = self.rollouts * self.per_rollout
        return _measure(lambda: self.model.learn(steps, reset_num_timesteps=False), steps)


class EnvOnlyCase:
    def __init__(self, quick: bool):
        from robot_rt.envs.vector import TableTennisVectorEnv

        self.env = TableTennisVectorEnv(1024 if quick else 4096, max_episode_steps=600)
        self.env.reset(seed=0)
        rng = np.random.default_rng(0)
        self.actions = rng.uniform(-1, 1, (64,) + self.env.action_space.shape) * self.env.single_action_space.high
        self.steps = 16 if quick else 64
        self.config = {"num_envs": self.env.num_envs}

    def __call__(self) -> dict:
        def run():
            for k in range(self.steps):
                self.env.step(self.actions[k % len(self.actions)])

        return _measure(run, self.steps * self.env.num_envs)


CASES = {
    "ppo": lambda q: PPOCase(q),
    "bgs": lambda q: BGSCase(q),
    "sb3_native": lambda q: SB3Case(q, native=True),
    "sb3_dummy": lambda q: SB3Case(q, native=False),
    "env_only": lambda q: EnvOnlyCase(q),
}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    p.add_argument("--out", default=None, help="results directory (default bench/results)")
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            raise ValueError(f"--cases: unknown case {c!r}, expected a subset of {','.join(CASES)}")
    torch.set_num_threads(1)
    runners = {}
    for c in cases:
        try:
            runners[c] = CASES[c](args.quick)
        except ImportError as err:
            print(f"{c}: skipped ({err})")
    samples: dict[str, list[dict]] = {c: [] for c in runners}
    for r in range(args.rounds):
        for c, runner in runners.items():
            row = runner()
            row["peak_rss_mib"] = _peak_rss_mib()
            samples[c].append(row)
            print(
                f"round {r} {c:>10}: {row['env_steps_per_s']:10.0f} env-steps/s, "
                f"{row['env_steps_per_cpu_s']:10.0f} per cpu-s, load {row['load_average_1min']:.1f}"
            )
    results = []
    for c, rows in samples.items():
        results.append(
            {
                "case": c,
                "config": runners[c].config,
                "env_steps_per_s": statistics.median(x["env_steps_per_s"] for x in rows),
                "env_steps_per_cpu_s": statistics.median(x["env_steps_per_cpu_s"] for x in rows),
                "rounds": rows,
            }
        )
    by = {r["case"]: r for r in results}
    for r in results:
        for ref in ("sb3_native", "sb3_dummy"):
            if ref in by:
                r[f"ratio_vs_{ref}"] = r["env_steps_per_s"] / by[ref]["env_steps_per_s"]
                r[f"ratio_vs_{ref}_cpu"] = r["env_steps_per_cpu_s"] / by[ref]["env_steps_per_cpu_s"]
    load = os.getloadavg()
    payload = {
        "benchmark": "learning",
        "env_id": "robot_rt/TableTennis-v0",
        "quick": args.quick,
        "rounds": args.rounds,
        "torch_threads": 1,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "load_average_1_5_15": load,
            "nice": os.nice(0),
            "note": "shared machine: wall figures depend on the other processes' load; see env_steps_per_cpu_s",
        },
        "target": ">= 50000 env-steps/s including the updates",
        "results": results,
    }
    if "ppo" in by:
        payload["target_met_ppo"] = bool(by["ppo"]["env_steps_per_s"] >= 5e4)
    if "bgs" in by:
        payload["target_met_bgs"] = bool(by["bgs"]["env_steps_per_s"] >= 5e4)
    path = write_json("learning", payload, args.out)

    def ratio(r, key):
        return "-" if key not in r else f"{r[key]:.1f}x"

    rows = [
        [
            r["case"],
            f"{r['env_steps_per_s']:.0f}",
            f"{r['env_steps_per_cpu_s']:.0f}",
            ratio(r, "ratio_vs_sb3_native"),
            ratio(r, "ratio_vs_sb3_dummy"),
            ratio(r, "ratio_vs_sb3_dummy_cpu"),
            f"{max(x['peak_rss_mib'] for x in r['rounds']):.0f}",
        ]
        for r in results
    ]
    print_table(
        f"learning: env-steps/s incl. updates (load average {load[0]:.1f}, {os.cpu_count()} cores)",
        [
            "case",
            "env-steps/s",
            "env-steps/cpu-s",
            "vs sb3 native",
            "vs sb3 dummy",
            "vs sb3 dummy (cpu)",
            "peak RSS MiB",
        ],
        rows,
    )
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
