"""How well the paddle's speed along its normal at contact is predicted by the shot policy's own command k
steps (10 ms each) before the contact: the shipped UKF shot policy, NumPy physics, serves of seed 5.

    python speed_predictability.py N
"""

import sys
import time

import numpy as np

import robot_rt.envs.core as core
from robot_rt.envs.shot_model import rally_shot_policy
from robot_rt.envs.vector import TableTennisVectorEnv

N = int(sys.argv[1]) if len(sys.argv) > 1 else 64
K = 12  # steps of command history kept
env = TableTennisVectorEnv(N, max_episode_steps=1500, backend="numpy")
pol = rally_shot_policy(N, tracker="ukf")
ring = np.zeros((K, N, 3))  # the commanded paddle velocity J_p qd of the last K calls
calls_made = [0]
original_solution = pol.common_scale_solution


def recording_solution(jac, task, z):
    qd = original_solution(jac, task, z)
    ring[calls_made[0] % K] = np.einsum("nij,nj->ni", jac[:, :3, :], qd)
    calls_made[0] += 1
    return qd


pol.common_scale_solution = recording_solution
contacts = []
original_contact = core.paddle_contact


def recording_contact(ball, paddle_pos, paddle_normal, paddle_vel, side, radius, restitution, friction):
    contacts.append((ball.copy(), paddle_normal * side[:, None], paddle_vel.copy()))
    return original_contact(ball, paddle_pos, paddle_normal, paddle_vel, side, radius, restitution, friction)


core.paddle_contact = recording_contact
obs, _ = env.reset(seed=list(range(5 * 10**6, 5 * 10**6 + N)))
pol.reset()
rows = []
t0 = time.time()
for _ in range(1500):
    action = pol(obs)
    before = env.world.ball.copy()
    contacts.clear()
    obs, _, _, _, info = env.step(np.asarray(action, dtype=np.float64))
    hit = np.nonzero(np.asarray(info["hit"]))[0]
    if not hit.size:
        continue
    for ball, normal, velocity in contacts:
        for j in range(len(ball)):
            i = int(hit[np.argmin(np.linalg.norm(before[hit, :3] - ball[j, :3], axis=1))])
            history = [float(ring[(calls_made[0] - 1 - d) % K, i] @ normal[j]) for d in range(K)]
            rows.append([float(velocity[j] @ normal[j])] + history)
print(f"{time.time() - t0:.0f} s, {len(rows)} contacts")
rows = np.array(rows)
speed = rows[:, 0]
print(f"executed paddle speed along the normal: mean {speed.mean():.3f} sd {speed.std():.3f} m/s")
for d in range(K):
    x = rows[:, 1 + d]
    design = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(design, speed, rcond=None)
    resid = speed - design @ coef
    print(
        f"command {d:2d} steps before: mean {x.mean():.3f} m/s, R2 {1 - resid.var() / speed.var():.3f}, "
        f"residual sd {resid.std():.3f}"
    )
