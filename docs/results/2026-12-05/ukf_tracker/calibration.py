"""Is the shot model's P(in) calibrated on the policy's own shots? The shot policy (fit or UKF tracker) on the 128
tuning serves of seed 5: at each paddle contact, the model's P(in) of the target it chose, against whether that return
landed on the human's half (an 'out' ending: not; reaching the human's plane: yes).

    python docs/results/2026-12-05/ukf_tracker/calibration.py fit|ukf
"""

import sys

import numpy as np

from robot_rt.envs.shot_model import _sigmoid, rally_shot_policy
from robot_rt.envs.vector import TableTennisVectorEnv

tracker, n = sys.argv[1], 128
env = TableTennisVectorEnv(n, max_episode_steps=6000)
policy = rally_shot_policy(n, tracker=tracker)
obs, _ = env.reset(seed=list(range(5 * 10**6, 5 * 10**6 + n)))
policy.reset()
model = policy.shot_model
rows, pending = [], np.full(n, -1)
active = np.ones(n, bool)
while active.any():
    action = policy(obs)
    planned = np.isfinite(policy.plan_t) & np.isfinite(policy.shot_target[:, 0])
    p_in = np.full(n, np.nan)
    if planned.any():
        inputs = model._checked(
            policy.shot_target[planned],
            policy.plan_p[planned],
            policy.plan_v[planned],
            policy.incoming_spin.estimate[planned],
        )
        p_in[planned] = _sigmoid((model._phi(*inputs) @ model._coef_all)[:, 0])
    obs, _, terminated, truncated, info = env.step(action)
    world = env.world
    for i in np.nonzero(np.all(np.isfinite(world.arrival_ball), axis=1) & (pending >= 0))[0]:
        rows[pending[i]][1], pending[i] = 1, -1
    for i in np.nonzero(np.asarray(info["hit"]) & active)[0]:
        pending[i] = len(rows)
        rows.append([p_in[i], None])
    for i in np.nonzero((terminated | truncated) & (pending >= 0))[0]:
        rows[pending[i]][1], pending[i] = (0 if info["outcome"][i] == "out" else None), -1
    active &= ~(terminated | truncated)
env.close()
rows = [r for r in rows if r[1] is not None and np.isfinite(r[0])]
p, y = np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=float)
print(f"{tracker}: {len(p)} shots, mean predicted P(in) {p.mean():.3f}, landed {y.mean():.3f}")
for lo, hi in ((0.0, 0.9), (0.9, 0.95), (0.95, 0.98), (0.98, 1.01)):
    s = (p >= lo) & (p < hi)
    if s.any():
        print(f"  P(in) in [{lo}, {hi}): {s.sum()} shots, predicted {p[s].mean():.3f}, landed {y[s].mean():.3f}")
