"""Cross-entropy search of the scripted policy's parameters for the rally against the default human model: how
`robot_rt.envs.scripted.RALLY_PRESET` was found (docs/envs.md, `robot_rt.envs.scripted`, rally preset).

Objective: the per-ball continuation c = (sum of the human model's return probabilities of the robot's returns that
reach the human, `TableTennisWorld.answer_probability`) / (balls the robot faced whose fate is known); the mean
rally is about (first-ball return rate) / (1 - c). Each generation plays every candidate on the same serves (slot j
of every candidate: episode seed g * 100000 + j, common random numbers); the first candidate is the current mean.

    nice -n 10 .venv/bin/python tools/tune_scripted_rally.py --gens 25 --pop 16 --per 32 --steps 1000 --sigma 0.05
    # the real_player preset (for the real-time loop: the jerk-limited commands the loop can execute)
    .venv/bin/python tools/tune_scripted_rally.py --human real_player --jerk-limit --gens 12 --out runs/tune_rp.json
    # for the real-time loop: the env's robot on the loop's own trajectory (robot_rt.bridge.loop_model)
    .venv/bin/python tools/tune_scripted_rally.py --human real_player --loop-model --gens 10 --pop 12 --per 16 \
        --steps 800 --out runs/tune_loop.json

(measured 2026-12-03 on the shared 2-core machine: 25-100 s per generation; the preset is this run's mean after 10
generations with aim_x_m set to -0.6 from a sweep of aim_x_m, aim_dx_m, extra_elevation_rad, return_speed_mps.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_json
from robot_rt.bridge.loop_model import LoopTrajectoryPolicy, drive_robot
from robot_rt.envs import HumanBehaviorModel
from robot_rt.envs.jerk_limit import JerkLimitedPolicy
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.robot import load_robot

ROBOT_FAILURES = ("missed", "out", "limit")


def evaluate(
    candidates,
    per: int,
    steps: int,
    seed: int,
    human: str = "default",
    jerk_limit: bool = False,
    loop_model: bool = False,
):
    """(continuation c, robot return rate r, human answer rate h, balls faced) per candidate [K] each, against the
    human model `human` ('default' | 'real_player'); `jerk_limit`: the commands pass through the robot's jerk limits
    as in the real-time loop (robot_rt.envs.jerk_limit); `loop_model`: the env's robot moves along the loop's own
    safety-filter trajectory (robot_rt.bridge.loop_model)."""
    k = len(candidates)
    n = k * per
    model = HumanBehaviorModel.real_player() if human == "real_player" else HumanBehaviorModel.default()
    robot = load_robot()
    env_robot = drive_robot(robot) if loop_model else robot
    env = TableTennisVectorEnv(n, human=model, robot=env_robot, max_episode_steps=steps + 10, num_threads=1)
    pol = BatchedScriptedPolicy(n, robot=robot, params=np.repeat(np.stack(candidates), per, axis=0))
    if jerk_limit:
        pol = JerkLimitedPolicy(pol, robot, n)
    if loop_model:
        pol = LoopTrajectoryPolicy(pol, robot, n)
    obs, _ = env.reset(seed=[seed * 100000 + (i % per) for i in range(n)])
    pol.reset()
    answered, arrivals, lost = np.zeros(n), np.zeros(n), np.zeros(n)
    reset_next = np.zeros(n, dtype=bool)
    for _ in range(steps):
        if reset_next.any():
            pol.reset(reset_next)
        obs, _r, term, trunc, info = env.step(pol(obs))
        p = env.world.answer_probability
        reached = np.isfinite(p) & ~reset_next
        answered += np.where(reached, p, 0.0)
        arrivals += reached
        lost += term & ~reset_next & np.isin(info["outcome"], ROBOT_FAILURES)
        reset_next = term | trunc
    env.close()

    def per_candidate(x):
        return x.reshape(k, per).sum(axis=1)

    faced = per_candidate(arrivals + lost)
    c = per_candidate(answered) / np.maximum(faced, 1)
    r = per_candidate(arrivals) / np.maximum(faced, 1)
    h = per_candidate(answered) / np.maximum(per_candidate(arrivals), 1)
    return c, r, h, faced


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gens", type=int, default=25)
    ap.add_argument("--pop", type=int, default=16, help="candidates per generation (the mean included)")
    ap.add_argument("--per", type=int, default=32, help="environments (serves) per candidate")
    ap.add_argument("--steps", type=int, default=1000, help="policy steps per generation (10 s)")
    ap.add_argument("--sigma", type=float, default=0.05, help="initial std, as a share of each parameter's range")
    ap.add_argument(
        "--start",
        default="default",
        help="ScriptedParams preset to start from, or a result JSON of this tool (its mean)",
    )
    ap.add_argument("--human", choices=("default", "real_player"), default="default", help="the human model")
    ap.add_argument(
        "--jerk-limit", action="store_true", help="commands through the robot's jerk limits (robot_rt.envs.jerk_limit)"
    )
    ap.add_argument(
        "--loop-model",
        action="store_true",
        help="the env's robot follows the real-time loop's trajectory (robot_rt.bridge.loop_model)",
    )
    ap.add_argument("--out", default="runs/tune_scripted_rally.json")
    a = ap.parse_args(argv)
    names = ScriptedParams.names()
    lo, hi = ScriptedParams.bounds()
    span = hi - lo
    if a.start.endswith(".json"):  # a previous run's result: continue from its mean
        start = ScriptedParams.from_vector(json.loads(Path(a.start).read_text())["mean"]).to_vector()
    else:
        start = ScriptedParams.preset(a.start).to_vector()
    z = (start - lo) / span
    sig = np.full_like(z, a.sigma)
    rng = np.random.default_rng(0)
    history = []
    for g in range(a.gens):
        t0 = time.time()
        zs = np.vstack([z, np.clip(z + sig * rng.standard_normal((a.pop - 1, len(z))), 0.0, 1.0)])
        c, r, h, faced = evaluate(
            [np.clip(lo + v * span, lo, hi) for v in zs],
            a.per,
            a.steps,
            seed=g,
            human=a.human,
            jerk_limit=a.jerk_limit,
            loop_model=a.loop_model,
        )
        elite = zs[np.argsort(-c)[: max(2, a.pop // 4)]]
        z = 0.5 * z + 0.5 * elite.mean(axis=0)
        sig = np.maximum(0.5 * sig + 0.5 * elite.std(axis=0), 0.01)
        history.append(
            {
                "generation": g,
                "mean_c": float(c[0]),
                "mean_r": float(r[0]),
                "mean_h": float(h[0]),
                "best_c": float(c.max()),
                "balls_faced": int(faced[0]),
                "wall_s": time.time() - t0,
            }
        )
        print(f"gen {g}: mean c {c[0]:.3f} (r {r[0]:.3f}, h {h[0]:.3f}, {int(faced[0])} balls), best c {c.max():.3f}")
        result = {"names": list(names), "mean": np.clip(lo + z * span, lo, hi).tolist(), "history": history}
        atomic_write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
