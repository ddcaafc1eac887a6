"""Placement oracle for the shot policy (a diagnostic, not a policy): how much would a perfect choice of lob target
gain, and is what limits placement the shot model or the ball estimate?

    python placement_oracle.py shot 32 5          # the shot policy itself (the shipped 'fit' shot model)
    python placement_oracle.py fixed 32 5         # its choice frozen T_DEC s before the contact (clones verified)
    python placement_oracle.py oracle 32 5        # the best of 25 targets, from clones that see the same noise
    python placement_oracle.py oracle 32 5 2      # ... averaged over clones that see 2 other camera-noise draws
    NOISE=0.0025 python placement_oracle.py shot 128 5   # the shot policy with another camera noise (m)

Arguments: mode, environments, serve seeds (serves s x 10^6 + i), and for 'oracle' the number of camera-noise
re-draws (0: the clones see the real world's future noise, a perfect foresight). `T_DEC` (default 0.25 s): the
decision's lead before the planned contact. At the decision each environment's world and policy are cloned once per
candidate target (the shot model's choice plus offsets of -0.4..0.4 m in x and -0.2..0.2 m in y), each clone is
played until its return reaches the human's plane (value: the human's answer probability there) or ends (value 0),
and the best target is kept for the rest of the ball. The clones are exact: with the real noise their predicted
values equal what the real world then does (printed as 'pred errors', max 0.0).

Results (2026-12-05, 32 tuning serves of seed 5): shot 6.75, fixed at 0.25 s 6.34, oracle with the same noise 8.88,
oracle averaged over 2 other noise draws 6.47; 128 serves: shot 6.97, with 2.5 mm camera noise 8.79, with none 8.61.
"""

import copy
import os
import sys
import time

import numpy as np

from robot_rt.envs.core import TableTennisWorld, WorldConfig
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.shot_model import shipped_shot_model
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.learning.rollout import episode_summary

T_DEC = float(os.environ.get("T_DEC", "0.25"))
SKIP = {"_rows"}  # constant index arrays (np.arange(n)): not state


def copy_rows(dst, src, idx, n_src, depth=0):
    """Copies the per-environment state rows `idx` of `src` (world or policy, recursively) into `dst`."""
    for name, val in vars(src).items():
        if name in SKIP:
            continue
        if isinstance(val, np.ndarray) and val.ndim >= 1 and val.shape[0] == n_src:
            d = getattr(dst, name, None)
            if d is None or d.shape[0] != len(idx):
                setattr(dst, name, val[idx].copy())
            else:
                d[...] = val[idx]
        elif isinstance(val, list) and len(val) == n_src and name == "rngs":
            setattr(dst, name, [copy.deepcopy(val[i]) for i in idx])
        elif hasattr(val, "__dict__") and type(val).__module__.startswith("robot_rt") and depth < 3:
            if name in ("robot", "config", "params", "table", "human", "shot_model", "landing_model"):
                continue
            copy_rows(getattr(dst, name), val, idx, n_src, depth + 1)


class OverrideModel:
    """The shot model, except for environments with a finite override target."""

    def __init__(self, model, policy):
        self.model, self.policy = model, policy
        self.override = np.full((policy.n, 2), np.nan)

    def __getattr__(self, k):
        return getattr(self.model, k)

    def best_target(self, p, v, w, previous=None, in_exponent=1.0):
        chosen, value = self.model.best_target(p, v, w, previous=previous, in_exponent=in_exponent)
        ov = self.override[np.isfinite(self.policy.plan_t)]
        has = np.isfinite(ov[:, 0])
        chosen[has] = ov[has]
        return chosen, value


def make_policy(n):
    model = shipped_shot_model()
    pol = BatchedScriptedPolicy(n, params=ScriptedParams.from_vector(model.fitted_params), shot_model=model)
    pol.shot_model = OverrideModel(model, pol)
    return pol


def offsets():
    return np.array([(a, b) for a in (-0.4, -0.2, 0.0, 0.2, 0.4) for b in (-0.2, -0.1, 0.0, 0.1, 0.2)])


def evaluate_clones(world, policy, envs, targets, rekey=None, horizon=200):
    """Values [m, K] of targets [m, K, 2] for environments `envs` [m], from clones of `world` (before this step's
    world step) and `policy` (after this step's call)."""
    m, k = targets.shape[:2]
    idx = np.repeat(envs, k)
    cw = TableTennisWorld(
        len(idx), world.human, world.robot, world.config, world.params, world.table, backend=world.backend
    )
    copy_rows(cw, world, idx, world.n)
    if rekey is not None:
        cw.cam_key[:] = rekey(cw.cam_key)
    cp = make_policy(len(idx))
    cp.set_params(policy.params[idx])
    copy_rows(cp, policy, idx, policy.n)
    cp.shot_model.override[:] = targets.reshape(-1, 2)
    act = policy.last_action[idx]
    vmax = world.robot.velocity_limit
    value = np.full(len(idx), np.nan)
    for _ in range(horizon):
        cw.step(np.clip(act, -1, 1).astype(np.float64) * vmax)
        ap = cw.answer_probability
        open_ = np.isnan(value)
        got = open_ & np.isfinite(ap)
        value[got] = ap[got]
        value[open_ & ~got & cw.terminated] = 0.0
        if not np.isnan(value).any():
            break
        act = cp(cw.observations())
    return np.nan_to_num(value).reshape(m, k)


def play(n, seed0, mode, cand_offsets, rekeys=0):
    cfg = WorldConfig(camera_noise_m=float(os.environ.get("NOISE", "0.005")))
    env = TableTennisVectorEnv(n, max_episode_steps=6000, config=cfg)
    pol = make_policy(n)
    obs, _ = env.reset(seed=list(range(seed0, seed0 + n)))
    pol.reset()
    active = np.ones(n, bool)
    rally = np.zeros(n, int)
    outcome = np.empty(n, object)
    decided = np.zeros(n, bool)
    gains, errs, pred = [], [], np.full(n, np.nan)
    t0 = time.time()
    while active.any():
        pol.last_action = np.asarray(pol(obs), dtype=np.float64).reshape(n, -1)
        has_target = np.isfinite(pol.shot_target[:, 0])
        pol.shot_model.override[~has_target] = np.nan
        decided &= has_target
        lead = pol.plan_t - pol.t
        trig = has_target & ~decided & active & ~env._autoreset & np.isfinite(lead) & (lead <= T_DEC)
        decided |= trig
        new = np.nonzero(trig)[0]
        if mode != "shot" and new.size:
            cand = np.clip(
                pol.shot_target[new][:, None, :] + cand_offsets[None],
                pol.shot_model.target_low,
                pol.shot_model.target_high,
            )
            if rekeys:
                vals = (
                    sum(
                        evaluate_clones(
                            env.world,
                            pol,
                            new,
                            cand,
                            rekey=lambda key, r=r: key ^ np.uint64((0x9E3779B97F4A7C15 * (r + 1)) % 2**63),
                        )
                        for r in range(rekeys)
                    )
                    / rekeys
                )
            else:
                vals = evaluate_clones(env.world, pol, new, cand)
            j = np.argmax(vals, axis=1)
            rows = np.arange(len(new))
            gains.append(vals[rows, j] - vals[:, np.argmin(np.abs(cand_offsets).sum(1))])
            pol.shot_model.override[new] = cand[rows, j]
            pred[new] = vals[rows, j]
        obs, _, term, trunc, info = env.step(pol.last_action)
        apr = env.world.answer_probability
        chk = np.isfinite(pred) & (np.isfinite(apr) | term)
        errs += [abs((apr[i] if np.isfinite(apr[i]) else 0.0) - pred[i]) for i in np.nonzero(chk)[0]]
        pred[chk] = np.nan
        ended = (term | trunc) & active
        rally[ended] = info["rally_length"][ended]
        outcome[ended] = info["outcome"][ended]
        active &= ~ended
    if errs:
        print(f"  pred errors: n {len(errs)}, max {max(errs):.3g}")
    eps = [
        {
            "seed": seed0 + i,
            "rally_length": int(rally[i]),
            "outcome": str(outcome[i]),
            "return": 0.0,
            "length": 0,
            "hits": 0,
        }
        for i in range(n)
    ]
    return eps, (np.concatenate(gains) if gains else np.zeros(0)), time.time() - t0


if __name__ == "__main__":
    mode, n = sys.argv[1], int(sys.argv[2])
    if n in (2, 3, 6, 8, 9, 48):  # copy_rows would take constant arrays of that length (dof, xyz, ...) for state
        raise ValueError(f"environments: {n} equals the length of a constant array; take another number")
    seeds = [int(s) for s in sys.argv[3].split(",")]
    rekeys = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    rallies = []
    for s in seeds:
        eps, g, dt = play(n, s * 10**6, mode, np.zeros((1, 2)) if mode == "fixed" else offsets(), rekeys)
        summary = episode_summary(eps)
        rallies += [e["rally_length"] for e in eps]
        print(
            f"{mode} rekeys={rekeys} seed {s}: rally {summary['rally_mean']:.2f} {summary['rally_mean_ci95']}, "
            f"decisions {g.size}, mean gain {g.mean() if g.size else 0:.3f}, {dt:.0f} s",
            flush=True,
        )
    print("pooled", np.mean(rallies))
