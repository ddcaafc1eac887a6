"""Per return: the wanted landing (random offsets around the rally aim), contact plan, and the human-plane arrival."""

import time

import numpy as np

from robot_rt.envs import core
from robot_rt.envs.landing_model import rally_policy
from robot_rt.envs.vector import TableTennisVectorEnv

arr = {}
orig = core.TableTennisWorld._human_answers


def spy(self, terminated, ev):
    waiting = (self.phase == core.PHASE_WAITING).nonzero()[0]
    for w in waiting:
        arr[int(w)] = self.ball[w].copy()
    return orig(self, terminated, ev)


core.TableTennisWorld._human_answers = spy
n, steps = 512, 3000
rng = np.random.default_rng(1)
policy = rally_policy(n)
aim = np.array([policy._p["aim_x_m"][0], policy._p["aim_y_m"][0]])
env = TableTennisVectorEnv(n, max_episode_steps=6000)
obs, _ = env.reset(seed=list(range(77000, 77000 + n)))
goals = aim + rng.uniform([-0.3, -0.3], [0.3, 0.3], (n, 2))
pending = {}
rows = []
t0 = time.time()
for _ in range(steps):
    plan_p, plan_v, g = policy.plan_p.copy(), policy.plan_v.copy(), goals.copy()
    obs, _, term, trunc, info = env.step(policy(obs, goals=goals))
    for w in np.nonzero(np.asarray(info["hit"]))[0]:
        pending[int(w)] = (g[w].copy(), plan_p[w].copy(), plan_v[w].copy())
    for w, a in list(arr.items()):
        if w in pending:
            gw, pp, pv = pending.pop(w)
            rows.append(np.concatenate([gw, pp, pv, a]))
    arr.clear()
    new = np.asarray(info["new_ball"]) | term | trunc
    goals[new] = aim + rng.uniform([-0.3, -0.3], [0.3, 0.3], (int(new.sum()), 2))
    for w in np.nonzero(term | trunc)[0]:
        pending.pop(int(w), None)
env.close()
R = np.array(rows)
print(len(R), time.time() - t0)
np.save("/tmp/arrival_rows.npy", R)
g, pp, pv, a = R[:, :2], R[:, 2:5], R[:, 5:8], R[:, 8:17]
for name, col in [
    ("goal x", g[:, 0]),
    ("goal y", g[:, 1]),
    ("contact y", pp[:, 1]),
    ("contact z", pp[:, 2]),
    ("vin x", pv[:, 0]),
]:
    print(
        f"corr arrival z vs {name}: {np.corrcoef(col, a[:, 2])[0, 1]:+.3f}   arrival y: {np.corrcoef(col, a[:, 1])[0, 1]:+.3f}"
    )
print("z pct", np.percentile(a[:, 2], [5, 25, 50, 75, 95]))
for lo, hi in [(-1.6, -1.3), (-1.3, -1.2), (-1.2, -1.1), (-1.1, -1.0), (-1.0, -0.9), (-0.9, -0.7)]:
    m = (g[:, 0] >= lo) & (g[:, 0] < hi)
    print(f"goal x in [{lo},{hi}): n {m.sum()}, arrival z median {np.median(a[m, 2]):.3f}")
