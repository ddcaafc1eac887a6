"""Where the shot policy's (UKF tracker, env shot model) outs end, against the real player: in the plain env and in
the loop-model env (robot_rt.bridge.loop_model), 64 environments x 1500 steps, serves of seed 0. The ball's state at
the 'out' tells the kind: beyond the human's hitting plane (x <= -1.69 m) below the table's height without having
landed (long), on the robot's side (net), elsewhere off the table.

    python docs/results/2026-12-05/loop_shot_model/outs.py plain|loop
"""

import sys

import numpy as np

from robot_rt.bridge.loop_model import LoopTrajectoryPolicy, drive_robot
from robot_rt.envs import HumanBehaviorModel
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.shot_model import shipped_shot_model
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.robot import load_robot

loop = sys.argv[1] == "loop"
n, steps, robot = 64, 1500, load_robot()
env = TableTennisVectorEnv(
    n, human=HumanBehaviorModel.real_player(), robot=drive_robot(robot) if loop else robot, max_episode_steps=1500
)
inner = BatchedScriptedPolicy(
    n, params=ScriptedParams.preset("rally"), shot_model=shipped_shot_model("ukf"), tracker="ukf"
)
policy = LoopTrajectoryPolicy(inner, robot, n) if loop else inner
obs, _ = env.reset(seed=0)
ended, kinds, aimed = np.zeros(n, bool), {}, []
target = np.full((n, 2), np.nan)
for _ in range(steps):
    if ended.any():
        policy.reset(ended)
    obs, _, term, trunc, info = env.step(policy(obs))
    hit = np.asarray(info["hit"])
    target[hit] = inner.shot_target[hit]
    for i in np.nonzero(term & (info["outcome"] == "out"))[0]:
        b = env.world.ball[i]
        if b[0] > 0:
            kind = "net / robot's side"
        elif b[0] < -1.69 and b[2] < 0.76:
            kind = "long: past the human's plane below the table, not landed"
        elif b[0] < -1.69:
            kind = "long: past the human's plane in the air"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0) + 1
        aimed.append(target[i].copy())
    ended = term | trunc
aimed = np.array(aimed)
aimed = aimed[np.all(np.isfinite(aimed), axis=1)]
print(sys.argv[1], kinds)
print(
    "their lob targets: x quantiles 10/50/90 %",
    np.round(np.quantile(aimed[:, 0], [0.1, 0.5, 0.9]), 2).tolist(),
    "(the fitted box ends at x =",
    round(float(inner.shot_model.target_high[0]), 2),
    ")",
)
