"""How far can the scripted shot policy go with a perfect ball estimate? An upper bound of its mean rally (issue 13).

    python tools/rally_oracle_bound.py --rows shot-ukf,shot-truth --episodes 256 --seeds 0,1,2 \
        --out docs/results/2026-12-06/oracle_bound
    python tools/rally_oracle_bound.py --attribution --rows shot-truth,rally-truth --episodes 256 --seeds 0 \
        --out docs/results/2026-12-06/oracle_bound
    python tools/rally_oracle_bound.py --table --out docs/results/2026-12-06/oracle_bound   # markdown tables

PRIVILEGED, ANALYSIS ONLY. The 'truth' rows replace the policy's ball tracker by `TruthTracker`, which is fed the
env's own ball state (`TableTennisWorld.ball`: position, velocity, spin) before every policy call, and its incoming
spin estimator by `TruthSpin` (the true spin of the incoming ball, held from its flight over the human's half, as the
estimator holds its own before the bounce). The contact plan (plane crossing, velocity, time) is then the ball's
true flight, flown with the same physics the world uses: no camera noise, no latency, no filter error. Nothing of
this is available to a deployable policy; it measures what the controller, the contact law and the shot model leave
when the estimate is perfect.

Rows (`--rows`, comma-separated):
* `shot-ukf`: `rally_shot_policy(n, tracker='ukf')` (`evaluate_rally.py --policy scripted-rally-shot-ukf`);
* `shot-truth`: the same policy (the same shot model, fitted on UKF plans) with `TruthTracker` and `TruthSpin`
  calibrated to the spin estimator's units (`calibrate_spin`: the estimator's expected value given the true incoming
  ball, fitted on other serves; the shot model was fitted on the estimator's biased values);
* `shot-truth-estspin`: `TruthTracker` only; the shot model's spin input is the policy's own estimate;
* `shot-truth-rawspin`: `TruthTracker` and the raw true spin (the estimator's bias then misleads the shot model);
* `rally-ukf`, `rally-truth`: the scripted 'rally' preset (no shot model) with the UKF tracker / `TruthTracker`.

Every row plays the same serves (seed s: serves s * 10^6 + i, as evaluate_rally.py) with the same 60 s cap. Per row:
the mean rally (percentile bootstrap 95 %), the robot's return rate r (returns landed / balls faced), the share h of
landed returns the human answered, outcomes, the arrival states at the human's hitting plane (`world.arrival_ball`,
x = -1.7 m) with the three `ReturnModel` factors, the mean answer probability, and the rally r / (1 - r h) implies.
Contact diagnostics of every robot contact: the common scale of the resolved-rate law (a joint at its velocity
limit) over the 50 ms before it, and the planned crossing height of missed balls.

`--attribution` plays the rows on the NumPy physics (`backend='numpy'`, the reference of the native step) with the
paddle contact recorded (ball state at contact, paddle normal and velocity), and replays every contact through the
env's contact law and ball flight (`robot_rt.envs.core.paddle_contact`, `robot_rt.ballistics`; the executed replay
reproduces the env's arrivals) with the true ball at contact and the executed paddle velocity, changing only the
paddle normal:
* the policy's own normal (executed), and the plan's normal (the controller's orientation error removed);
* oracle aim: the normal solved (`solve_arrival_normal`, Gauss-Newton through the env's own laws, several starts)
  to send the ball through the human's best point (y, z) = (0, 1.05 m), knowing the contact ball and the paddle
  velocity exactly: what this contact allows at best (a wider search with steeper lobs is kept where better);
* the same aim solved without knowing the executed paddle speed (its value predicted from the plan), then also
  without knowing the contact point (the planned crossing moved by the mean offset), then also with the
  controller's orientation error: what each unknown of the execution costs once the aim is otherwise perfect;
* oracle aim with the paddle 30 % faster / slower along its normal: whether the paddle's speed (capped by the joint
  velocity limits) bounds what the aim can reach.

Writes OUT/oracle_bound.json (or OUT/attribution.json), atomically, after every row; `--table` prints their markdown
tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot_rt._io import atomic_write_json  # noqa: E402

ROWS = ("shot-ukf", "shot-truth", "shot-truth-estspin", "shot-truth-rawspin", "rally-ukf", "rally-truth")
SCALE_WINDOW = 5  # policy calls (50 ms) before a contact over which the common scale is recorded


# ----------------------------------------------------------------------------------------------- privileged trackers
class TruthTracker:
    """PRIVILEGED, ANALYSIS ONLY: a batched tracker (the interface `BatchedScriptedPolicy` reads of
    `BatchedUKFTracker`) whose state is the env's true ball state, fed by `feed(ball [N, 9], phase [N])` before each
    policy call (`TruthFeed` does it). Valid while the ball is in play (incoming or returning); its crossings are
    flown by the same batched flight as the other trackers' (`robot_rt.estimation.batched.plane_crossings`), with
    the world's ball parameters."""

    def __init__(self, num_envs: int, params=None, table=None, horizon_s: float = 1.0, plane_dt_s: float = 1e-3):
        from robot_rt.ballistics import BallParams, TableGeometry, pack_params
        from robot_rt.ballistics.params import PARAM_NAMES

        self.n = int(num_envs)
        self.params = params if params is not None else BallParams()
        self.table = table if table is not None else TableGeometry()
        self.horizon_s = float(horizon_s)
        self.plane_dt_s = float(plane_dt_s)
        self.backend = "auto"
        pk = pack_params(self.params, self.table)
        self.g = float(pk[PARAM_NAMES.index("gravity_mps2")])
        self.radius_m = float(self.params.radius_m)
        self.contact_z_m = float(self.table.surface_height_m) + self.radius_m
        self._states = np.zeros((self.n, 9))
        self._valid = np.zeros(self.n, dtype=bool)
        self.t_now = np.zeros(self.n)
        self.fed = False

    def feed(self, ball, phase) -> None:
        from robot_rt.envs.core import PHASE_INCOMING, PHASE_RETURNING

        self._states = np.array(ball, dtype=np.float64).reshape(self.n, 9)
        phase = np.asarray(phase)
        self._valid = ((phase == PHASE_INCOMING) | (phase == PHASE_RETURNING)) & np.all(
            np.isfinite(self._states), axis=1
        )
        self.fed = True

    def reset(self, mask=None) -> None:
        m = np.ones(self.n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        self._valid[m] = False
        self.t_now[m] = 0.0

    def update(self, detections, t_now_s) -> None:
        """The policy's clock only: the detections are not used."""
        if not self.fed:
            raise RuntimeError("TruthTracker: feed() the true ball state before every policy call (TruthFeed)")
        self.t_now = np.broadcast_to(np.asarray(t_now_s, dtype=np.float64), (self.n,)).copy()
        self.fed = False  # the next call needs a fresh feed

    def fit_state(self):
        return self._states.copy(), self.t_now.copy(), self._valid.copy()

    def state(self):
        return self._states.copy(), self._valid.copy()

    def predict_plane_crossing(self, x_plane_m):
        from robot_rt.estimation.batched import plane_crossings

        return plane_crossings(self, x_plane_m)


class TruthSpin:
    """PRIVILEGED, ANALYSIS ONLY: `IncomingSpinEstimator`'s interface holding the true spin of the incoming ball,
    taken while it flies over the human's half (x < 0: before its bounce on the robot's half, as the estimator takes
    its own before the bounce; a new incoming ball replaces it).

    `calibration` (optional, [7, 3], `calibrate_spin`): the estimate is then [spin, velocity, 1] @ calibration, the
    true state mapped to the estimator's expected value (the estimator is biased, +60 rad/s in wy on average; the
    shot model was fitted on its values): the estimate without its noise. Without it, the raw true spin."""

    def __init__(self, num_envs: int, calibration=None):
        self.n = int(num_envs)
        self.calibration = None if calibration is None else np.asarray(calibration, dtype=np.float64).reshape(7, 3)
        self.estimate = np.zeros((self.n, 3))
        self.valid = np.zeros(self.n, dtype=bool)
        self.true_spin = np.zeros((self.n, 3))  # held true spin and velocity (the calibration's inputs)
        self.true_velocity = np.zeros((self.n, 3))
        self._ball = np.zeros((self.n, 9))
        self._phase = np.zeros(self.n, dtype=np.int64)

    def feed(self, ball, phase) -> None:
        self._ball = np.array(ball, dtype=np.float64).reshape(self.n, 9)
        self._phase = np.asarray(phase).copy()

    def reset(self, mask) -> None:
        self.estimate[mask] = 0.0
        self.valid[mask] = False
        self.true_spin[mask] = 0.0
        self.true_velocity[mask] = 0.0

    def update(self, detections, t_now):
        from robot_rt.envs.core import PHASE_INCOMING

        take = (self._phase == PHASE_INCOMING) & (self._ball[:, 0] < 0.0) & (self._ball[:, 3] > 0)
        self.true_spin[take] = self._ball[take, 6:9]
        self.true_velocity[take] = self._ball[take, 3:6]
        if self.calibration is None:
            self.estimate[take] = self._ball[take, 6:9]
        else:
            self.estimate[take] = spin_features(self._ball[take, 6:9], self._ball[take, 3:6]) @ self.calibration
        self.valid |= take
        return self.estimate, self.valid


def spin_features(spin: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    return np.concatenate([spin, velocity, np.ones((len(spin), 1))], axis=1)


def calibrate_spin(episodes: int = 128, seed: int = 9, steps: int = 1500) -> dict:
    """The spin estimator's expected value given the true incoming ball: least squares of its held estimate on
    [true spin, true velocity, 1] (both held over the human's half), over the balls of the UKF shot policy on serves
    seed * 10^6 + i, taken when the ball is 0.1 s from the robot's planned contact. Returns the [7, 3] matrix, the
    per-axis R^2 and the number of balls."""
    from robot_rt.envs.shot_model import rally_shot_policy
    from robot_rt.envs.vector import TableTennisVectorEnv

    env = TableTennisVectorEnv(episodes, max_episode_steps=6000)
    try:
        policy = rally_shot_policy(episodes, tracker="ukf")
        shadow = TruthSpin(episodes)
        obs, _ = env.reset(seed=list(range(seed * 10**6, seed * 10**6 + episodes)))
        policy.reset()
        resetting = np.zeros(episodes, dtype=bool)
        x, y = [], []
        for _ in range(steps):
            shadow.feed(env.world.ball, env.world.phase)
            t_call = policy.t.copy()
            action = policy(obs)
            shadow.update(None, None)
            lead = policy.plan_t - policy.params[:, 1] - t_call  # to the planned crossing (plan_t less the offset)
            take = (np.abs(np.nan_to_num(lead, nan=9.0) - 0.1) < 0.005) & shadow.valid & policy.incoming_spin.valid
            take &= ~resetting
            if take.any():
                x.append(spin_features(shadow.true_spin[take], shadow.true_velocity[take]))
                y.append(policy.incoming_spin.estimate[take].copy())
            obs, _, terminated, truncated, _ = env.step(action)
            if resetting.any():
                policy.reset(resetting)
                shadow.reset(resetting)
            resetting = terminated | truncated
    finally:
        env.close()
    x, y = np.concatenate(x), np.concatenate(y)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    r2 = 1.0 - resid.var(axis=0) / np.maximum(y.var(axis=0), 1e-12)
    raw_r2 = [float(np.corrcoef(x[:, j], y[:, j])[0, 1] ** 2) for j in range(3)]
    return {
        "matrix": coef.tolist(),
        "r2": r2.tolist(),
        "r2_true_spin_alone_per_axis": raw_r2,
        "bias_est_minus_true_radps": (y - x[:, :3]).mean(axis=0).tolist(),
        "residual_sd_radps": resid.std(axis=0).tolist(),
        "balls": int(len(x)),
        "serves": f"{seed} * 10^6 + [0, {episodes}), {steps} steps",
    }


class TruthFeed:
    """A batched policy whose `TruthTracker` (and `TruthSpin`, unless `spin` is None) are fed `env.world`'s true ball
    before each call (PRIVILEGED, ANALYSIS ONLY); `inner` is the `BatchedScriptedPolicy`. `spin`: 'calibrated' (the
    true state through `spin_calibration`, `TruthSpin`), 'raw' (the true spin) or None (the policy's own
    estimator)."""

    def __init__(self, inner, env, spin: str | None = "calibrated", spin_calibration=None):
        if spin not in ("calibrated", "raw", None):
            raise ValueError(f"spin: expected 'calibrated', 'raw' or None, got {spin!r}")
        if spin == "calibrated" and spin_calibration is None:
            raise ValueError("spin='calibrated' needs spin_calibration (calibrate_spin()['matrix'])")
        self.inner = inner
        self.env = env
        self.truth = TruthTracker(inner.n, params=env.world.params, table=env.world.table)
        inner.tracker = self.truth
        self.spin = None
        if spin is not None and inner.incoming_spin is not None:
            self.spin = TruthSpin(inner.n, calibration=spin_calibration if spin == "calibrated" else None)
            inner.incoming_spin = self.spin

    def reset(self, mask=None) -> None:
        self.inner.reset(mask)

    def __call__(self, obs):
        w = self.env.world
        self.truth.feed(w.ball, w.phase)
        if self.spin is not None:
            self.spin.feed(w.ball, w.phase)
        return self.inner(obs)


def make_row_policy(row: str, n: int, env, spin_calibration=None):
    """(policy to play, the BatchedScriptedPolicy inside it) for a row of `ROWS`."""
    from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
    from robot_rt.envs.shot_model import rally_shot_policy

    if row not in ROWS:
        raise ValueError(f"row: expected one of {ROWS}, got {row!r}")
    if row.startswith("shot-"):
        inner = rally_shot_policy(n, tracker="ukf")
    else:
        inner = BatchedScriptedPolicy(n, params=ScriptedParams.preset("rally"), tracker="ukf")
    if row.endswith("-ukf"):
        return inner, inner
    spin = {"shot-truth": "calibrated", "shot-truth-rawspin": "raw"}.get(row)
    return TruthFeed(inner, env, spin=spin, spin_calibration=spin_calibration), inner


# ----------------------------------------------------------------------------------------------- play and record
class _ScaleProbe:
    """Records the common scale of `BatchedScriptedPolicy.common_scale_solution` (the largest |qd| / v_max before
    scaling; > 1: a joint at its velocity limit slows the whole paddle) of the last `SCALE_WINDOW` calls."""

    def __init__(self, policy):
        self.policy = policy
        self.original = policy.common_scale_solution
        self.ring = np.ones((SCALE_WINDOW, policy.n))
        self.argmax = np.zeros((SCALE_WINDOW, policy.n), dtype=np.int64)
        self.k = 0
        policy.common_scale_solution = self

    def __call__(self, jac, task, z):
        qd = self.original(jac, task, z)
        # the unscaled solution: qd * scale where the scale applied (the largest ratio) exceeded 1
        jjt = jac @ np.swapaxes(jac, 1, 2) + 1e-3 * np.eye(6)
        x = np.linalg.solve(jjt, (task - np.einsum("nij,nj->ni", jac, z))[..., None])[..., 0]
        raw = z + np.einsum("nji,nj->ni", jac, x)
        ratio = np.abs(raw) / self.policy.v_max
        self.ring[self.k % SCALE_WINDOW] = ratio.max(axis=1)
        self.argmax[self.k % SCALE_WINDOW] = ratio.argmax(axis=1)
        self.k += 1
        return qd


def _plan_contact(policy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plan of the policy's last call: (lob target xy [N, 2], paddle normal [N, 3], swing speed [N]) recomputed
    from its stored plan as `BatchedScriptedPolicy.__call__` computes them."""
    from robot_rt.envs.scripted import lob_directions

    p = policy._p
    if policy.shot_model is not None:
        target = policy.shot_target.copy()
    else:
        target = np.stack([p["aim_x_m"] + p["aim_dx_m"], p["aim_y_m"] + p["aim_dy_m"]], axis=1)
    target = np.where(np.isfinite(target), target, 0.0)
    d_out = lob_directions(policy.plan_p, target, p["return_speed_mps"], p["extra_elevation_rad"])
    normal, swing = policy.contact_plan(policy.plan_v, d_out)
    return target, normal, swing


def play(env, policy, inner, seeds, record_contacts: bool = False) -> dict:
    """One episode per environment (as `robot_rt.learning.rollout.play_episodes`), recording the arrivals at the
    human's hitting plane, the answer probabilities and contact diagnostics (and with `record_contacts`, NumPy
    backend only, the paddle contacts' inputs)."""
    import robot_rt.envs.core as core

    seeds = [int(s) for s in seeds]
    n = env.num_envs
    obs, _ = env.reset(seed=seeds)
    policy.reset()
    probe = _ScaleProbe(inner)
    active = np.ones(n, dtype=bool)
    rally = np.zeros(n, dtype=np.int64)
    hits = np.zeros(n, dtype=np.int64)
    outcome = np.empty(n, dtype=object)
    arrivals, arrival_env, answer_p = [], [], []
    contacts = []  # per contact: env, step, scale max over the window, its joint, plan
    missed_plan = []  # per missed ball: planned crossing height, whether a plan existed
    calls: list = []
    original = core.paddle_contact
    if record_contacts:
        if env.world.backend != "numpy":
            raise ValueError("record_contacts: needs the NumPy backend (the native step does not call Python)")

        def recording(ball, paddle_pos, paddle_normal, paddle_vel, side, radius, restitution, friction):
            calls.append((ball.copy(), paddle_normal * side[:, None], paddle_vel.copy(), paddle_pos.copy()))
            return original(ball, paddle_pos, paddle_normal, paddle_vel, side, radius, restitution, friction)

        core.paddle_contact = recording
    step = 0
    try:
        while active.any():
            action = policy(obs)
            target, normal, swing = _plan_contact(inner)
            plan_t, plan_p, plan_v = inner.plan_t.copy(), inner.plan_p.copy(), inner.plan_v.copy()
            t_call = inner.t - inner.dt  # the call's clock (the policy advanced it)
            before = env.world.ball.copy()
            calls.clear()
            obs, _, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float64))
            step += 1
            w = env.world
            arrived = np.nonzero(np.all(np.isfinite(w.arrival_ball), axis=1) & active)[0]
            if arrived.size:
                arrivals.append(w.arrival_ball[arrived].copy())
                arrival_env.append(arrived)
                answer_p.append(w.answer_probability[arrived].copy())
            hit = np.nonzero(np.asarray(info["hit"]) & active)[0]
            if hit.size:
                rec = dict(zip(hit.tolist(), [None] * hit.size))
                if record_contacts and calls:
                    # the worlds whose episode is over play on (autoreset) and their contacts call the hook too: each
                    # contact is matched to the nearest ball of every world that hit in this step, kept if active
                    anyhit = np.nonzero(np.asarray(info["hit"]))[0]
                    for c in calls:
                        for j in range(len(c[0])):
                            i = int(anyhit[np.argmin(np.linalg.norm(before[anyhit, :3] - c[0][j, :3], axis=1))])
                            if i in rec:
                                rec[i] = (c[0][j], c[1][j], c[2][j], c[3][j])
                for i, cin in rec.items():
                    contacts.append(
                        {
                            "env": i,
                            "step": step,
                            "scale_max": float(probe.ring[:, i].max()),
                            "scale_joint": int(probe.argmax[np.argmax(probe.ring[:, i]), i]),
                            "saturated_calls": int((probe.ring[:, i] > 1.0).sum()),
                            "plan_p": plan_p[i],
                            "plan_v": plan_v[i],
                            "plan_dt": float(plan_t[i] - t_call[i]),
                            "target": target[i],
                            "normal_plan": normal[i],
                            "swing_plan": float(swing[i]),
                            "contact": cin,
                        }
                    )
            hits += np.asarray(info["hit"], dtype=np.int64) & active
            ended = (terminated | truncated) & active
            for i in np.nonzero(ended & (np.asarray(info["outcome"]) == "missed"))[0]:
                missed_plan.append(
                    {
                        "planned": bool(np.isfinite(plan_t[i])),
                        "plan_z": float(plan_p[i, 2]),
                        "plan_y": float(plan_p[i, 1]),
                        "ball_z": float(before[i, 2]),
                    }
                )
            rally[ended] = np.asarray(info["rally_length"])[ended]
            outcome[ended] = np.asarray(info["outcome"])[ended]
            active &= ~ended
    finally:
        core.paddle_contact = original
        inner.common_scale_solution = probe.original
    episodes = [
        {"seed": s, "rally_length": int(rally[i]), "outcome": str(outcome[i]), "hits": int(hits[i])}
        for i, s in enumerate(seeds)
    ]
    return {
        "episodes": episodes,
        "arrivals": np.concatenate(arrivals) if arrivals else np.zeros((0, 9)),
        "arrival_env": np.concatenate(arrival_env) if arrival_env else np.zeros(0, dtype=np.int64),
        "answer_p": np.concatenate(answer_p) if answer_p else np.zeros(0),
        "contacts": contacts,
        "missed_plan": missed_plan,
        "steps": step,
    }


# ----------------------------------------------------------------------------------------------- summaries
def factors(arrivals: np.ndarray) -> dict:
    """The `ReturnModel` factors of arrival states [M, 9] (lateral, height, pace; the product times 0.95 is the
    answer probability)."""
    from robot_rt.envs.human_model import ReturnModel

    m = ReturnModel()
    lateral = np.exp(-0.5 * ((arrivals[:, 1] - m.reach_center_y_m) / m.reach_half_width_m) ** 2)
    height = np.exp(-0.5 * ((arrivals[:, 2] - m.comfortable_height_m) / m.height_tolerance_m) ** 2)
    speed = np.linalg.norm(arrivals[:, 3:6], axis=1)
    pace = 1.0 / (1.0 + np.exp(-(m.speed_limit_mps - speed)))
    return {"lateral": lateral, "height": height, "pace": pace, "speed": speed}


def arrival_summary(arrivals: np.ndarray) -> dict:
    if len(arrivals) == 0:
        return {"n": 0}
    f = factors(arrivals)
    y, z = arrivals[:, 1], arrivals[:, 2]
    return {
        "n": int(len(arrivals)),
        "y_mean_m": float(y.mean()),
        "y_sd_m": float(y.std()),
        "z_mean_m": float(z.mean()),
        "z_sd_m": float(z.std()),
        "abs_y_lt_0.1_share": float(np.mean(np.abs(y) < 0.1)),
        "abs_dz_lt_0.05_share": float(np.mean(np.abs(z - 1.05) < 0.05)),
        "speed_mean_mps": float(f["speed"].mean()),
        "speed_p10_p90_mps": [float(np.quantile(f["speed"], 0.1)), float(np.quantile(f["speed"], 0.9))],
        "factor_lateral_mean": float(f["lateral"].mean()),
        "factor_height_mean": float(f["height"].mean()),
        "factor_pace_mean": float(f["pace"].mean()),
        "answer_probability_mean": float((0.95 * f["lateral"] * f["height"] * f["pace"]).mean()),
    }


def rally_figures(episodes: list[dict]) -> dict:
    """Mean rally (bootstrap 95 %) and r, h counted as evaluate_rally.py counts them (its `_rally_shape`)."""
    from robot_rt.learning.rollout import episode_summary

    s = episode_summary(episodes)
    rally = np.array([e["rally_length"] for e in episodes])
    out = [e["outcome"] for e in episodes]
    landed = int(rally.sum())
    decided = sum(int(r) - (o == "none") for r, o in zip(rally, out) if r > 0)
    answered = sum(int(r) - (o in ("returned", "none")) for r, o in zip(rally, out) if r > 0)
    faced = landed + sum(o in ("missed", "out", "limit") for o in out)
    r = landed / faced if faced else float("nan")
    h = answered / decided if decided else float("nan")
    return {
        "episodes": len(episodes),
        "rally_mean": s["rally_mean"],
        "rally_mean_ci95": s["rally_mean_ci95"],
        "rally_median": float(np.median(rally)),
        "first_ball_return_rate": s["first_ball_return_rate"],
        "outcomes": s["outcomes"],
        "balls_faced": faced,
        "returns_landed": landed,
        "robot_return_rate_r": r,
        "human_answered_share_h": h,
        "rally_implied_r_over_1_minus_rh": r / (1 - r * h) if np.isfinite(r * h) else None,
    }


def contact_summary(contacts: list[dict], missed: list[dict]) -> dict:
    if not contacts:
        return {"contacts": 0}
    scale = np.array([c["scale_max"] for c in contacts])
    joint = np.array([c["scale_joint"] for c in contacts])
    sat = scale > 1.0
    miss_z = np.array([m["plan_z"] for m in missed if m["planned"]])
    return {
        "contacts": len(contacts),
        "saturated_share_50ms": float(sat.mean()),
        "scale_median_50ms": float(np.median(scale)),
        "scale_p90_50ms": float(np.quantile(scale, 0.9)),
        "saturating_joint_counts": np.bincount(joint[sat], minlength=8).tolist() if sat.any() else [0] * 8,
        "missed": len(missed),
        "missed_with_plan": int(len(miss_z)),
        "missed_plan_z_quantiles_10_50_90": np.quantile(miss_z, [0.1, 0.5, 0.9]).tolist() if len(miss_z) else None,
    }


def paired_difference(a: list[dict], b: list[dict], n_boot: int = 4000, seed: int = 0) -> dict:
    """Mean rally b - a on the same serves (percentile bootstrap 95 % over serves)."""
    ra = np.array([e["rally_length"] for e in a], dtype=np.float64)
    rb = np.array([e["rally_length"] for e in b], dtype=np.float64)
    d = rb - ra
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    return {
        "mean": float(d.mean()),
        "ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
        "longer": int((d > 0).sum()),
        "shorter": int((d < 0).sum()),
        "equal": int((d == 0).sum()),
    }


# ----------------------------------------------------------------------------------------------- attribution
def fly_to_human(out_states: np.ndarray, params=None, table=None) -> dict:
    """Flights of balls just after the paddle [M, 9], judged as the world judges a return: its first contact other
    than the net must be the table on the human's half (x < 0) to land; and the state where it then reaches the
    human's hitting plane x = -1.7 m (NaN where it does not land or does not get there within 2 s)."""
    from robot_rt.ballistics import BallParams, TableGeometry, reference, simulate_batch
    from robot_rt.envs.human_model import ReturnModel

    params = params or BallParams()
    table = table or TableGeometry()
    m = len(out_states)
    sim = simulate_batch(out_states, 2.0, 1e-3, params, table, max_events=4)
    count = np.minimum(np.asarray(sim.event_count), 4)
    kind = np.asarray(sim.event_kind)
    where = np.asarray(sim.event_state)[:, :, :3]
    recorded = np.arange(kind.shape[1])[None, :] < count[:, None]
    not_net = recorded & (kind != reference.KIND_NET)
    has = not_net.any(axis=1)
    first = np.argmax(not_net, axis=1)
    rows = np.arange(m)
    landed = has & (kind[rows, first] == reference.KIND_TABLE) & (where[rows, first, 0] < 0)
    cross = _to_plane(out_states, ReturnModel.hitting_plane_x_m, params, table)
    arrival = np.where(landed[:, None], cross, np.nan)
    return {
        "landed": landed,
        "arrival": arrival,
        "landing_xy": np.where(landed[:, None], where[rows, first, :2], np.nan),
    }


def _to_plane(states: np.ndarray, x_plane: float, params, table) -> np.ndarray:
    from robot_rt.ballistics import time_to_plane_batch

    r = time_to_plane_batch(states, x_plane, params, table, dt_s=1e-3, horizon_s=2.0)
    out = np.asarray(r.state, dtype=np.float64).copy()
    out[~np.isfinite(np.asarray(r.t_s))] = np.nan
    return out


def _predictable(features: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares prediction of `target` [M] from `features` [M, k] (with a constant) and its R^2."""
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(x, target, rcond=None)
    pred = x @ coef
    return pred, float(1.0 - np.var(target - pred) / max(np.var(target), 1e-12))


def _rotate_like(v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unit vectors v [M, 3] turned by the rotation that takes unit a to unit b (per row, Rodrigues)."""
    axis = np.cross(a, b)
    s = np.linalg.norm(axis, axis=1, keepdims=True)
    c = np.sum(a * b, axis=1, keepdims=True)
    k = np.where(s > 1e-12, axis / np.maximum(s, 1e-12), 0.0)
    return v * c + np.cross(k, v) * s + k * np.sum(k * v, axis=1, keepdims=True) * (1 - c)


def attribution(contacts: list[dict], config, radius_m: float, params=None, table=None) -> dict:
    """Replays of the recorded contacts (the true ball at contact, the executed paddle velocity) with the paddle
    normal aimed by a solver that knows more or less of the contact (module docstring): what is left when the aim is
    perfect, and what each unknown of the execution costs."""
    from robot_rt.envs.human_model import ReturnModel

    rec = [c for c in contacts if c["contact"] is not None]
    if not rec:
        return {"contacts": 0}
    ball = np.array([c["contact"][0] for c in rec])
    n_act = np.array([c["contact"][1] for c in rec])
    v_act = np.array([c["contact"][2] for c in rec])
    n_plan = np.array([c["normal_plan"] for c in rec])
    s_plan = np.array([c["swing_plan"] for c in rec])
    plan_p = np.array([c["plan_p"] for c in rec])
    plan_v = np.array([c["plan_v"] for c in rec])
    scale = np.array([c["scale_max"] for c in rec])
    m = len(rec)
    kw = dict(config=config, radius_m=radius_m, params=params, table=table)
    s_act = np.sum(v_act * n_act, axis=1)
    tangential = v_act - s_act[:, None] * n_act
    # what the planner could know of the paddle's speed along its normal at contact: its prediction from the plan
    # (planned swing speed, normal, crossing point, incoming velocity); the rest is the execution's spread
    plan_features = np.concatenate([s_plan[:, None], n_plan, plan_p, plan_v], axis=1)
    s_pred, s_r2 = _predictable(plan_features, s_act)
    v_pred = v_act + (s_pred - s_act)[:, None] * n_act
    # where the planner expects the contact: the planned crossing moved by the mean offset of the actual contacts
    # along the true flight (drag-free over ~10 ms), with the true spin
    dx = ball[:, 0] - plan_p[:, 0]
    tau = float(np.median(dx)) / plan_v[:, 0]
    g = np.array([0.0, 0.0, -9.81])
    ball_pred = np.concatenate(
        [plan_p + plan_v * tau[:, None] + 0.5 * g * (tau**2)[:, None], plan_v + g * tau[:, None], ball[:, 6:9]], axis=1
    )
    target = np.tile([ReturnModel.reach_center_y_m, ReturnModel.comfortable_height_m], (m, 1))
    n_oracle = solve_arrival_normal(ball, v_act, target, n_act, **kw)
    n_speed = solve_arrival_normal(ball, v_pred, target, n_act, **kw)
    n_timing = solve_arrival_normal(ball_pred, v_pred, target, n_act, **kw)
    faster = v_act + (0.3 * s_act)[:, None] * n_act
    n_faster = solve_arrival_normal(ball, faster, target, n_act, **kw)
    slower = v_act - (0.3 * s_act)[:, None] * n_act
    n_slower = solve_arrival_normal(ball, slower, target, n_act, **kw)
    # a wider search for steeper lobs (tilted starts up to 0.6 rad): the best of both per ball
    n_wide = solve_arrival_normal(ball, v_act, target, n_act, starts=(0.25, 0.35, 0.45, 0.6), **kw)
    p_near, p_wide = (_answer(ball, nn, v_act, **kw) for nn in (n_oracle, n_wide))
    n_wide = np.where((p_wide > p_near)[:, None], n_wide, n_oracle)
    cases = {
        "executed (the policy's normal, actual paddle velocity)": (n_act, v_act),
        "the policy with its orientation error removed (planned normal)": (n_plan, v_act),
        "oracle aim: normal solved knowing the contact ball and paddle velocity": (n_oracle, v_act),
        "aim with the paddle speed unknown (solved for its plan-predicted value)": (n_speed, v_act),
        "aim with the speed and the contact point unknown (planned crossing + mean offset)": (n_timing, v_act),
        "as above, plus the controller's orientation error": (_rotate_like(n_timing, n_plan, n_act), v_act),
        "oracle aim, wider search (steeper lobs tried too)": (n_wide, v_act),
        "oracle aim with the paddle 30 % faster along its normal": (n_faster, faster),
        "oracle aim with the paddle 30 % slower along its normal": (n_slower, slower),
    }
    rows = {}
    for name, (normal, vel) in cases.items():
        arrival, out = arrival_of_shot(ball, normal, vel, **kw)
        f = fly_to_human(out, params, table)
        ok = f["landed"] & np.all(np.isfinite(f["arrival"]), axis=1)
        s = arrival_summary(f["arrival"][ok])
        s["landed_share"] = float(f["landed"].mean())
        # per contact: P(land) x mean answer probability, the chance that this ball comes back from the human
        s["continuation_per_contact"] = s["landed_share"] * s.get("answer_probability_mean", 0.0)
        s["target_reached_share_2cm"] = float(np.mean(ok & np.all(np.abs(arrival[:, 1:3] - target) < 0.02, axis=1)))
        lx = f["landing_xy"][ok, 0]
        s["landing_x_p5_p50_m"] = [float(np.quantile(lx, 0.05)), float(np.median(lx))] if ok.any() else None
        rows[name] = s
    angle = np.degrees(np.arccos(np.clip(np.sum(n_act * n_plan, axis=1), -1, 1)))
    return {
        "contacts": m,
        "normal_error_deg": {"median": float(np.median(angle)), "p90": float(np.quantile(angle, 0.9))},
        "paddle_speed_along_normal_mps": {
            "actual_mean": float(s_act.mean()),
            "actual_sd": float(s_act.std()),
            "planned_mean": float(s_plan.mean()),
            "planned_sd": float(s_plan.std()),
            "predicted_from_plan_r2": s_r2,
            "unpredicted_sd": float(np.std(s_act - s_pred)),
            "corr_with_common_scale": float(np.corrcoef(s_act, scale)[0, 1]),
        },
        "common_scale_50ms": {"median": float(np.median(scale)), "share_above_1": float(np.mean(scale > 1))},
        "paddle_tangential_speed_mps_mean": float(np.linalg.norm(tangential, axis=1).mean()),
        "contact_vs_plan_point_m": {
            "dx_median": float(np.median(dx)),
            "dx_sd": float(np.std(dx)),
            "dz_sd": float(np.std(ball[:, 2] - plan_p[:, 2])),
        },
        "incoming_spin_at_contact_radps": {
            "mean": ball[:, 6:9].mean(axis=0).tolist(),
            "sd": ball[:, 6:9].std(axis=0).tolist(),
        },
        "replays": rows,
    }


def arrival_of_shot(ball, normal, paddle_vel, config, radius_m, params=None, table=None) -> np.ndarray:
    """The state [M, 9] where balls at contact `ball` [M, 9], hit by a paddle with unit normal `normal` [M, 3]
    (towards the ball) moving at `paddle_vel` [M, 3], reach the human's hitting plane (NaN: not within 2 s)."""
    from robot_rt.envs.core import paddle_contact
    from robot_rt.envs.human_model import ReturnModel

    m = len(ball)
    out = paddle_contact(
        ball,
        np.zeros((m, 3)),
        normal,
        paddle_vel,
        np.ones(m),
        radius_m,
        config.paddle_restitution,
        config.paddle_friction,
    )
    return _to_plane(out, ReturnModel.hitting_plane_x_m, params, table), out


ELEVATION_STARTS_RAD = (0.0, -0.08, 0.08, 0.16)


def _answer(ball, normal, paddle_vel, config, radius_m, params=None, table=None) -> np.ndarray:
    """The answer probability [M] of each shot's arrival (-1 where it does not land on the human's half)."""
    from robot_rt.envs.human_model import ReturnModel

    _, out = arrival_of_shot(ball, normal, paddle_vel, config, radius_m, params, table)
    f = fly_to_human(out, params, table)
    ok = f["landed"] & np.all(np.isfinite(f["arrival"]), axis=1)
    return np.where(ok, ReturnModel().return_probability(np.nan_to_num(f["arrival"])), -1.0)


def solve_arrival_normal(
    ball, paddle_vel, target_yz, normal0, config, radius_m, params=None, table=None, starts=ELEVATION_STARTS_RAD
) -> np.ndarray:
    """`_solve_arrival_once` from `normal0` tilted about its horizontal tangent by each of `starts` (rad; the map
    from normal to arrival folds, so one start can end on a local optimum), keeping per ball the solution whose
    flight (with these inputs: what the solver knows) lands and has the highest `ReturnModel` answer probability."""
    from robot_rt.envs.shot import tangent_basis

    best = np.array(normal0, dtype=np.float64)
    best_p = np.full(len(ball), -1.0)
    # e2 = n x e1 with e1 horizontal: the tilt in elevation
    _, e2 = tangent_basis(best / np.linalg.norm(best, axis=1, keepdims=True))
    for tilt in starts:
        start = np.asarray(normal0, dtype=np.float64) + np.tan(tilt) * e2
        normal = _solve_arrival_once(ball, paddle_vel, target_yz, start, config, radius_m, params, table)
        p = _answer(ball, normal, paddle_vel, config, radius_m, params, table)
        better = p > best_p
        best[better], best_p[better] = normal[better], p[better]
    return best


def _solve_arrival_once(
    ball,
    paddle_vel,
    target_yz,
    normal0,
    config,
    radius_m,
    params=None,
    table=None,
    iterations: int = 6,
    max_step_rad: float = 0.1,
    fd_rad: float = 1e-3,
) -> np.ndarray:
    """Paddle normals [M, 3] that send balls `ball` [M, 9] (their state at contact), hit by a paddle moving at
    `paddle_vel` [M, 3], through the human's hitting plane at (y, z) = `target_yz` [M, 2]: damped Gauss-Newton on
    two tangent angles of the normal from `normal0`, forward-difference Jacobian, through the env's contact law and
    ball flight (as `robot_rt.envs.shot.solve_shot_normal` does for a landing point)."""
    from robot_rt.envs.shot import solve_shot_normal, tangent_basis

    m = len(ball)
    normal = np.array(normal0, dtype=np.float64)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    # a start whose flight does not land on the human's half is first aimed at the middle of it (landing point
    # solver, the paddle's speed along the normal only), so that the search below starts on a bouncing flight
    _, out = arrival_of_shot(ball, normal, paddle_vel, config, radius_m, params, table)
    f = fly_to_human(out, params, table)
    bad = ~(f["landed"] & np.all(np.isfinite(f["arrival"]), axis=1))
    if bad.any():
        speed = np.sum(paddle_vel[bad] * normal[bad], axis=1)
        mid = np.tile([-0.9, 0.0], (int(bad.sum()), 1))
        fixed, _ = solve_shot_normal(
            ball[bad],
            speed,
            mid,
            normal[bad],
            restitution=config.paddle_restitution,
            friction=config.paddle_friction,
            params=params,
            table=table,
            iterations=6,
        )
        normal[bad] = fixed
    for _ in range(iterations):
        e1, e2 = tangent_basis(normal)
        probes = np.concatenate([normal, normal + fd_rad * e1, normal + fd_rad * e2])
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        arr, _ = arrival_of_shot(
            np.tile(ball, (3, 1)), probes, np.tile(paddle_vel, (3, 1)), config, radius_m, params, table
        )
        yz = arr[:, 1:3]
        base, d1, d2 = yz[:m], yz[m : 2 * m], yz[2 * m :]
        jac = np.stack([(d1 - base) / fd_rad, (d2 - base) / fd_rad], axis=2)
        resid = base - target_yz
        finite = np.all(np.isfinite(jac), axis=(1, 2)) & np.all(np.isfinite(resid), axis=1)
        jac = np.where(finite[:, None, None], jac, 0.0)
        resid = np.where(finite[:, None], resid, 0.0)
        jtj = np.swapaxes(jac, 1, 2) @ jac + 1e-4 * np.eye(2)
        step = -np.linalg.solve(jtj, np.swapaxes(jac, 1, 2) @ resid[..., None])[..., 0]
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, max_step_rad / np.maximum(norm, 1e-12))
        step = np.nan_to_num(step)
        # backtracking: a step is taken (halved up to 4 times) only where the new flight still lands on the human's
        # half and reaches the plane (the other solution flies through the plane without a bounce)
        done = np.zeros(m, dtype=bool)
        new = normal.copy()
        for scale in (1.0, 0.5, 0.25, 0.125, 0.0625):
            cand = normal + scale * (step[:, :1] * e1 + step[:, 1:] * e2)
            cand /= np.linalg.norm(cand, axis=1, keepdims=True)
            _, out = arrival_of_shot(ball, cand, paddle_vel, config, radius_m, params, table)
            f = fly_to_human(out, params, table)
            ok = ~done & f["landed"] & np.all(np.isfinite(f["arrival"]), axis=1)
            new[ok] = cand[ok]
            done |= ok
            if done.all():
                break
        normal = new
    return normal


# ----------------------------------------------------------------------------------------------- main
def run_row(
    row: str, episodes: int, seed: int, max_steps: int, numpy_backend: bool = False, spin_calibration=None
) -> dict:
    from robot_rt.envs.vector import TableTennisVectorEnv

    env = TableTennisVectorEnv(episodes, max_episode_steps=max_steps, backend="numpy" if numpy_backend else "auto")
    try:
        policy, inner = make_row_policy(row, episodes, env, spin_calibration)
        t0 = time.time()
        res = play(env, policy, inner, range(seed * 10**6, seed * 10**6 + episodes), record_contacts=numpy_backend)
        res["wall_s"] = time.time() - t0
        res["config"] = env.world.config
        res["radius_m"] = env.world.params.radius_m
        res["params"], res["table"] = env.world.params, env.world.table
    finally:
        env.close()
    return res


def markdown_tables(folder: Path) -> str:
    """Markdown tables of OUT/oracle_bound.json and OUT/attribution.json (those present)."""
    from robot_rt._io import read_json_file

    lines = []
    main_path, attr_path = folder / "oracle_bound.json", folder / "attribution.json"
    if main_path.exists():
        res = read_json_file(main_path, "oracle_bound.json")
        lines += [
            f"Serves: seeds {res['seeds']} x {res['episodes_per_seed']} (the same serves in every row), cap "
            f"{res['max_episode_steps']} steps.",
            "",
            "| row | mean rally [95 % CI] | paired vs UKF [95 % CI] | r | h | r / (1 - r h) | missed / out / limit / "
            "cut | balls faced |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, e in res["rows"].items():
            p = e["pooled"]
            o = p["outcomes"]
            lo, hi = p["rally_mean_ci95"]
            paired = next((v for k, v in e.items() if k.startswith("paired_vs_")), None)
            pd = (
                "-" if paired is None else f"{paired['mean']:+.2f} [{paired['ci95'][0]:+.2f}, {paired['ci95'][1]:+.2f}]"
            )
            lines.append(
                f"| {name} | {p['rally_mean']:.2f} [{lo:.2f}, {hi:.2f}] | {pd} | {p['robot_return_rate_r']:.3f} | "
                f"{p['human_answered_share_h']:.3f} | {p['rally_implied_r_over_1_minus_rh']:.2f} | "
                f"{o.get('missed', 0)} / {o.get('out', 0)} / {o.get('limit', 0)} / {o.get('none', 0)} | "
                f"{p['balls_faced']} |"
            )
        lines += [
            "",
            "Arrivals at the human's hitting plane (x = -1.7 m), all landed returns of the row:",
            "",
            "| row | arrivals | y mean / sd (m) | z mean / sd (m) | share abs(y) < 0.1 m | share abs(z - 1.05) < 0.05 m | "
            "speed mean [p10, p90] (m/s) | lateral / height / pace factor | mean answer p |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, e in res["rows"].items():
            a = e["arrival"]
            lines.append(
                f"| {name} | {a['n']} | {a['y_mean_m']:+.3f} / {a['y_sd_m']:.3f} | {a['z_mean_m']:.3f} / "
                f"{a['z_sd_m']:.3f} | {a['abs_y_lt_0.1_share']:.2f} | {a['abs_dz_lt_0.05_share']:.2f} | "
                f"{a['speed_mean_mps']:.2f} [{a['speed_p10_p90_mps'][0]:.2f}, {a['speed_p10_p90_mps'][1]:.2f}] | "
                f"{a['factor_lateral_mean']:.3f} / {a['factor_height_mean']:.3f} / {a['factor_pace_mean']:.3f} | "
                f"{a['answer_probability_mean']:.3f} |"
            )
        lines += [
            "",
            "| row | contacts | a joint at its velocity limit in the last 50 ms | common scale median / p90 | "
            "saturating joint (counts by joint index) | missed balls: planned crossing height p10 / p50 / p90 (m) |",
            "|---|---|---|---|---|---|",
        ]
        for name, e in res["rows"].items():
            c = e["contact_diagnostics"]
            q = c["missed_plan_z_quantiles_10_50_90"]
            qs = "-" if q is None else " / ".join(f"{v:.2f}" for v in q)
            lines.append(
                f"| {name} | {c['contacts']} | {c['saturated_share_50ms']:.3f} | {c['scale_median_50ms']:.2f} / "
                f"{c['scale_p90_50ms']:.2f} | {c['saturating_joint_counts']} | {qs} ({c['missed_with_plan']} of "
                f"{c['missed']} planned) |"
            )
    if attr_path.exists():
        res = read_json_file(attr_path, "attribution.json")
        for name, e in res["rows"].items():
            at = e.get("attribution", {})
            if not at.get("contacts"):
                continue
            s = at["paddle_speed_along_normal_mps"]
            lines += [
                "",
                f"Contact replays, row `{name}` (NumPy physics, seeds {res['seeds']} x {res['episodes_per_seed']}, "
                f"{at['contacts']} contacts; in the env: mean rally {e['pooled']['rally_mean']:.2f}, r "
                f"{e['pooled']['robot_return_rate_r']:.3f}, h {e['pooled']['human_answered_share_h']:.3f}):",
                "",
                "| replay | landed | y sd (m) | z mean / sd (m) | reached (0, 1.05) +- 2 cm | lateral / height factor | "
                "mean answer p | landed x mean answer p | landing x p5 / p50 (m) |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for rname, r in at["replays"].items():
                lx = r.get("landing_x_p5_p50_m")
                lines.append(
                    f"| {rname} | {r['landed_share']:.3f} | {r.get('y_sd_m', float('nan')):.3f} | "
                    f"{r.get('z_mean_m', float('nan')):.3f} / {r.get('z_sd_m', float('nan')):.3f} | "
                    f"{r['target_reached_share_2cm']:.2f} | {r.get('factor_lateral_mean', float('nan')):.3f} / "
                    f"{r.get('factor_height_mean', float('nan')):.3f} | {r.get('answer_probability_mean', float('nan')):.3f} | "
                    f"{r['continuation_per_contact']:.3f} | {'-' if lx is None else f'{lx[0]:.2f} / {lx[1]:.2f}'} |"
                )
            lines += [
                "",
                f"Paddle speed along its normal at contact {s['actual_mean']:.2f} +- {s['actual_sd']:.2f} m/s (planned "
                f"swing {s['planned_mean']:.2f} +- {s['planned_sd']:.2f}; R^2 of its prediction from the plan "
                f"{s['predicted_from_plan_r2']:.2f}, unpredicted sd {s['unpredicted_sd']:.3f} m/s); normal error "
                f"median {at['normal_error_deg']['median']:.2f} deg (p90 {at['normal_error_deg']['p90']:.2f}); "
                f"common scale median {at['common_scale_50ms']['median']:.2f}, above 1 on "
                f"{100 * at['common_scale_50ms']['share_above_1']:.0f} % of contacts; contact x - planned crossing x "
                f"{at['contact_vs_plan_point_m']['dx_median']:+.3f} m (sd {at['contact_vs_plan_point_m']['dx_sd']:.3f}).",
            ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="shot-ukf,shot-truth", help=f"comma-separated, of {ROWS}")
    ap.add_argument("--episodes", type=int, default=256, help="serves per seed")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-episode-steps", type=int, default=6000)
    ap.add_argument("--calibration-seed", type=int, default=9, help="serves of the spin calibration (shot-truth)")
    ap.add_argument("--calibration-episodes", type=int, default=128)
    ap.add_argument("--attribution", action="store_true", help="NumPy physics, contact replays (attribution.json)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--table", action="store_true", help="print the markdown tables of OUT's JSON files and exit")
    args = ap.parse_args(argv)
    if args.table:
        text = markdown_tables(Path(args.out))
        print(text)
        return {"table": text}
    rows = [r for r in args.rows.split(",") if r]
    for r in rows:
        if r not in ROWS:
            raise ValueError(f"--rows: expected names of {ROWS}, got {r!r}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out_dir = Path(args.out)
    path = out_dir / ("attribution.json" if args.attribution else "oracle_bound.json")
    result = {
        "command": "python tools/rally_oracle_bound.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "episodes_per_seed": args.episodes,
        "seeds": seeds,
        "max_episode_steps": args.max_episode_steps,
        "backend": "numpy" if args.attribution else "auto",
        "load_average_1min_start": os.getloadavg()[0],
        "rows": {},
    }
    cal = None
    if "shot-truth" in rows:
        t0 = time.time()
        calibration = calibrate_spin(args.calibration_episodes, args.calibration_seed)
        calibration["wall_s"] = time.time() - t0
        result["spin_calibration"] = calibration
        cal = calibration["matrix"]
        print(
            f"spin calibration: R^2 {np.round(calibration['r2'], 3).tolist()} on {calibration['balls']} balls",
            flush=True,
        )
    played: dict = {}
    for row in rows:
        eps, arr, contacts, missed, walls = [], [], [], [], []
        per_seed = []
        for s in seeds:
            res = run_row(
                row, args.episodes, s, args.max_episode_steps, numpy_backend=args.attribution, spin_calibration=cal
            )
            eps += res["episodes"]
            arr.append(res["arrivals"])
            contacts += res["contacts"]
            missed += res["missed_plan"]
            walls.append(res["wall_s"])
            fig = rally_figures(res["episodes"])
            per_seed.append({"seed": s, "wall_s": res["wall_s"], **fig})
            print(
                f"{row} seed {s}: rally {fig['rally_mean']:.2f} {np.round(fig['rally_mean_ci95'], 2).tolist()} "
                f"r {fig['robot_return_rate_r']:.3f} h {fig['human_answered_share_h']:.3f} {fig['outcomes']} "
                f"({res['wall_s']:.0f} s)",
                flush=True,
            )
            last = res
        played[row] = eps
        arrivals = np.concatenate(arr)
        entry = {
            "pooled": rally_figures(eps),
            "per_seed": per_seed,
            "arrival": arrival_summary(arrivals),
            "contact_diagnostics": contact_summary(contacts, missed),
            "wall_s": float(sum(walls)),
            "rally_lengths": [e["rally_length"] for e in eps],
            "outcomes_per_serve": [e["outcome"] for e in eps],
        }
        if args.attribution:
            entry["attribution"] = attribution(
                contacts, last["config"], last["radius_m"], last["params"], last["table"]
            )
        if not row.endswith("-ukf"):
            base = row.split("-")[0] + "-ukf"
            if base in played and len(played[base]) == len(eps):
                entry[f"paired_vs_{base}"] = paired_difference(played[base], eps)
        result["rows"][row] = entry
        result["load_average_1min_end"] = os.getloadavg()[0]
        atomic_write_json(path, result)
        p = entry["pooled"]
        a = entry["arrival"]
        print(
            f"== {row}: rally {p['rally_mean']:.2f} {np.round(p['rally_mean_ci95'], 2).tolist()} r "
            f"{p['robot_return_rate_r']:.3f} h {p['human_answered_share_h']:.3f} implied "
            f"{p['rally_implied_r_over_1_minus_rh']:.2f} {p['outcomes']}; arrival y {a.get('y_mean_m', 0):.3f}"
            f"+-{a.get('y_sd_m', 0):.3f} z {a.get('z_mean_m', 0):.3f}+-{a.get('z_sd_m', 0):.3f} factors "
            f"{a.get('factor_lateral_mean', 0):.3f}/{a.get('factor_height_mean', 0):.3f}/"
            f"{a.get('factor_pace_mean', 0):.3f}",
            flush=True,
        )
    return result


if __name__ == "__main__":
    main()
