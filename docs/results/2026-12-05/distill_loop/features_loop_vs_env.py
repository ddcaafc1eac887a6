"""The distilled policy's features through the real-time loop (12 rallies against 'real_player', the 'base' condition)
against those in the loop-model env (32 serves of seed 0, same human): the columns that differ most, over the rows
with a tracked incoming ball, in units of the env's standard deviation.

    python docs/results/2026-12-05/distill_loop/features_loop_vs_env.py
"""

import sys
from pathlib import Path

import numpy as np

root = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(root / "tools"))
from loop_gap_ablation import run_condition  # noqa: E402

from robot_rt.bridge.loop_model import LoopTrajectoryPolicy, drive_robot  # noqa: E402
from robot_rt.envs import HumanBehaviorModel  # noqa: E402
from robot_rt.envs.vector import TableTennisVectorEnv  # noqa: E402
from robot_rt.learning.distill import load_distilled  # noqa: E402
from robot_rt.robot import load_robot  # noqa: E402

POLICY = Path(__file__).with_name("policy.pt")
NAMES = (
    [f"q{i}" for i in range(8)]
    + [f"qd{i}" for i in range(8)]
    + ["ball_x", "ball_y", "ball_z", "ball_vx", "ball_vy", "ball_vz", "valid", "cross_dt"]
    + ["cross_x", "cross_y", "cross_z", "cross_vx", "cross_vy", "cross_vz", "found"]
    + ["newest_x", "newest_y", "newest_z", "newest_age", "newest_valid", "spin_x", "spin_y", "spin_z", "spin_valid"]
)
rows = {"loop": [], "env": []}


class Recording:
    def __init__(self, key, n=1):
        self.policy, self.key, self.robot = load_distilled(POLICY, n), key, load_robot()

    def __call__(self, obs):
        obs = np.asarray(obs, dtype=np.float64)
        single = obs.ndim == 1
        actions, feats = self.policy.act(obs[None] if single else obs)
        rows[self.key].append(feats.copy())
        return actions[0] if single else actions

    def reset(self, mask=None):
        self.policy.reset(mask)


robot = load_robot()
run_condition(lambda: Recording("loop"), "base", robot, 12, 5)
n = 32
env = TableTennisVectorEnv(n, human=HumanBehaviorModel.real_player(), robot=drive_robot(robot), max_episode_steps=1500)
policy = LoopTrajectoryPolicy(Recording("env", n), robot, n)
obs, _ = env.reset(seed=0)
for _ in range(1500):
    obs, _, terminated, truncated, _ = env.step(policy(obs))
    if (terminated | truncated).any():
        policy.reset(terminated | truncated)
env.close()
loop, ref = np.concatenate(rows["loop"]), np.concatenate(rows["env"])


def tracked_incoming(x):
    return (x[:, NAMES.index("valid")] > 0.5) & (x[:, NAMES.index("ball_vx")] > 0)


print(
    f"rows: loop {len(loop)}, env {len(ref)}; all rows: tracker valid {loop[:, 22].mean():.2f} (loop) vs "
    f"{ref[:, 22].mean():.2f} (env)"
)
loop, ref = loop[tracked_incoming(loop)], ref[tracked_incoming(ref)]
sd = ref.std(axis=0) + 1e-6
for k in np.argsort(-np.abs(loop.mean(axis=0) - ref.mean(axis=0)) / sd)[:10]:
    print(
        f"{NAMES[k]:12s} loop mean {loop[:, k].mean():7.3f} sd {loop[:, k].std():6.3f} | "
        f"env mean {ref[:, k].mean():7.3f} sd {ref[:, k].std():6.3f}"
    )
