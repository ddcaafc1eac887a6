"""The shot policy (UKF tracker) in the loop-model env (the env's robot on the real-time loop's trajectory,
robot_rt.bridge.loop_model, which predicted the loop's figures for this policy: 0.81 / 2.79 against 0.82 / 2.81
measured through the loop) against a human model, with the env shot model or the loop one; the same serves for each.

    python docs/results/2026-12-05/loop_shot_model/env_check.py --human real_player --episodes 256 --out env_check.json
    (--model FILE evaluates another shot model file as 'file')
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

root = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(root / "tools"))
from mujoco_gap import _rates  # noqa: E402

from robot_rt.bridge.loop_model import LoopTrajectoryPolicy, drive_robot  # noqa: E402
from robot_rt.envs import HumanBehaviorModel  # noqa: E402
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams  # noqa: E402
from robot_rt.envs.shot_model import ShotModel, shipped_shot_model  # noqa: E402
from robot_rt.envs.vector import TableTennisVectorEnv  # noqa: E402
from robot_rt.robot import load_robot  # noqa: E402


def run(model: ShotModel, human: HumanBehaviorModel, episodes: int, n: int, seed: int, in_exponent=1.0) -> dict:
    robot = load_robot()
    env = TableTennisVectorEnv(n, human=human, robot=drive_robot(robot), max_episode_steps=1500)
    inner = BatchedScriptedPolicy(
        n, params=ScriptedParams.preset("rally"), shot_model=model, tracker=model.tracker, shot_in_exponent=in_exponent
    )
    pol = LoopTrajectoryPolicy(inner, robot, n)
    obs, _ = env.reset(seed=seed)
    per_env = -(-episodes // n)
    done, auto = np.zeros(n, dtype=np.int64), np.zeros(n, bool)
    rallies, outcomes = [], []
    while np.any(done < per_env):
        if auto.any():
            pol.reset(auto)
        obs, _, term, trunc, info = env.step(pol(obs))
        counting = done < per_env
        for i in np.nonzero((term | trunc) & counting)[0]:
            outcomes.append(str(info["outcome"][i]) if term[i] else "truncated")
            rallies.append(int(info["rally_length"][i]))
        done += term | trunc
        auto = term | trunc
    env.close()
    return {**_rates(rallies, outcomes), "rally_lengths": rallies}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--human", default="real_player", help="'real_player', 'default' or a HumanBehaviorModel JSON")
    ap.add_argument("--episodes", type=int, default=256)
    ap.add_argument("--envs", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="also evaluate this shot model file")
    ap.add_argument("--in-exponent", type=float, default=1.0, help="robot_rt.envs.shot_model's k (default 1)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.human in ("real_player", "default"):
        human = getattr(HumanBehaviorModel, args.human)()
    else:
        human = HumanBehaviorModel.load(args.human)
    models = {"env": shipped_shot_model("ukf", "env")}
    if args.model:
        models["file"] = ShotModel.load(args.model)
    else:
        models["loop"] = shipped_shot_model("ukf", "loop")
    report = {
        "human": args.human,
        "in_exponent": args.in_exponent,
        "episodes": args.episodes,
        "seed": args.seed,
        "rows": {},
    }
    for name, model in models.items():
        t0 = time.time()
        r = run(model, human, args.episodes, args.envs, args.seed, args.in_exponent)
        report["rows"][name] = r
        print(
            f"{name}: return rate {r['return_rate']:.3f} {np.round(r['return_rate_ci95'], 3).tolist()}, mean rally "
            f"{r['mean_rally_length']:.2f} {np.round(r['mean_rally_length_ci95'], 2).tolist()}, {r['outcomes']}, "
            f"{time.time() - t0:.0f} s",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
