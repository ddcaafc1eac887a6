"""Saturation diagnostics of the shot policy: per step near the swing, the common-scale excess and which joint."""

import sys

import numpy as np

from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.shot_model import shipped_shot_model
from robot_rt.envs.vector import TableTennisVectorEnv

n = int(sys.argv[1]) if len(sys.argv) > 1 else 128
model = shipped_shot_model()
pol = BatchedScriptedPolicy(n, params=ScriptedParams.from_vector(model.fitted_params), shot_model=model)
orig = pol.resolved_rate
rec = []


def rr(q, target, normal, swing, speed_cap=None):
    out = orig(q, target, normal, swing, speed_cap)
    # recompute unscaled
    tl = pol.plan_t - pol.t
    rec.append(
        (
            tl.copy(),
            np.abs(out).max(axis=1) / 1,
            (np.abs(out) / pol.v_max).argmax(axis=1),
            np.abs(out / pol.v_max).max(axis=1),
        )
    )
    return out


pol.resolved_rate = rr
env = TableTennisVectorEnv(n, max_episode_steps=1500)
obs, _ = env.reset(seed=list(range(5 * 10**6, 5 * 10**6 + n)))
pol.reset()
print("vmax", pol.v_max, "amax", env.unwrapped.world.a_max if hasattr(env, "unwrapped") else None)
for _ in range(600):
    obs, r, term, trunc, info = env.step(np.asarray(pol(obs), dtype=np.float64))
tl = np.concatenate([r[0] for r in rec])
sat = np.concatenate([r[3] for r in rec])
j = np.concatenate([r[2] for r in rec])
for lo, hi in [(0.3, 1), (0.2, 0.3), (0.1, 0.2), (0.05, 0.1), (0.0, 0.05)]:
    m = (tl >= lo) & (tl < hi)
    s = sat[m] > 0.999
    print(
        f"time_left [{lo},{hi}): steps {m.sum()}, saturated {s.mean():.2f}, joints {np.bincount(j[m][s], minlength=8)}"
    )
