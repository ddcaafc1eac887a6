"""The paddle's speed along its normal at contact, and the rally, with the swing capped at FRAC x reach (FRAC 0:
the shipped shot policy), playing the shipped UKF shot model (not refitted) on the NumPy physics.

    python speed_check.py N FRAC [SEED]        # N serves of seed SEED (default 5), one episode each, 15 s cap
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reach_policy import install  # noqa: E402

import robot_rt.envs.core as core  # noqa: E402

N, FRAC = int(sys.argv[1]), float(sys.argv[2])
SEED = int(sys.argv[3]) if len(sys.argv) > 3 else 5
if FRAC > 0:
    install(FRAC)
from robot_rt.envs.shot_model import rally_shot_policy  # noqa: E402
from robot_rt.envs.vector import TableTennisVectorEnv  # noqa: E402

env = TableTennisVectorEnv(N, max_episode_steps=1500, backend="numpy")
pol = rally_shot_policy(N, tracker="ukf")
calls = []
original = core.paddle_contact


def recording(ball, paddle_pos, paddle_normal, paddle_vel, side, radius, restitution, friction):
    calls.append((paddle_normal * side[:, None], paddle_vel.copy()))
    return original(ball, paddle_pos, paddle_normal, paddle_vel, side, radius, restitution, friction)


core.paddle_contact = recording
obs, _ = env.reset(seed=list(range(SEED * 10**6, SEED * 10**6 + N)))
pol.reset()
active = np.ones(N, bool)
rally = np.zeros(N)
outcome = np.empty(N, object)
speeds = []
t0 = time.time()
while active.any():
    obs, _, terminated, truncated, info = env.step(np.asarray(pol(obs), dtype=np.float64))
    for normal, velocity in calls:
        speeds += list(np.sum(normal * velocity, axis=1))
    calls.clear()
    ended = (terminated | truncated) & active
    rally[ended] = np.asarray(info["rally_length"])[ended]
    outcome[ended] = np.asarray(info["outcome"])[ended]
    active &= ~ended
s = np.array(speeds)
names, counts = np.unique(outcome.astype(str), return_counts=True)
print(
    f"frac {FRAC} seed {SEED}: rally {rally.mean():.2f} outcomes {dict(zip(names.tolist(), counts.tolist()))} "
    f"paddle speed along the normal at contact {s.mean():.3f} sd {s.std():.3f} ({s.size} contacts) "
    f"{time.time() - t0:.0f} s"
)
