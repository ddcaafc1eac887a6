"""Learned landing model of the scripted policy: where its return lands, from the lob target it aims at and the
predicted contact, fitted on its own self-practice shots; inverted per ball to choose the lob target that lands the
ball where the policy wants it.

Design notes: docs/envs.md, section `robot_rt.envs.landing_model`.

The scripted policy aims a drag-free lob at a target T (`lob_directions`), but the ball does not land there: the
contact law (friction, spin), the executed paddle speed and drag move it, and landing x moves only about 0.25 m per
m of target x. Most of that error is predictable from what the policy knows at contact. With the plan's contact
point p and incoming velocity v (the tracker's prediction at the hitting point), the model is a ridge regression on
the quadratic monomials of z = standardise(T, p, v) (8 inputs, 45 features):

    L(T, p, v) = A^T phi(z)        (L: the landing point on the table plane, x and y; A: [45, 2])

`command(desired, p, v)` inverts it for T by damped Newton steps (finite-difference Jacobian in T, steps capped
at 0.5 m, T kept inside the targets the model was fitted on). The model belongs to the parameters it was fitted
with (`fitted_params`): every `ScriptedParams` value except the aim (the wanted landing, which the model's command
replaces the fixed corrections aim_dx_m, aim_dy_m for) must match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_json, read_json_file

FORMAT_VERSION = 1
N_INPUTS = 8  # target x, y; contact point x, y, z; incoming velocity x, y, z
AIM_PARAMS = ("aim_x_m", "aim_y_m", "aim_dx_m", "aim_dy_m")  # what the model replaces: not part of the match
_NEWTON_STEPS = 4
_MAX_STEP_M = 0.5
_FD_STEP_M = 1e-3
# collect_shots keeps the shots that land in this window of the table plane (the human's half is x in [-1.37, 0])
LANDING_WINDOW_X_M = (-4.0, 0.5)
LANDING_WINDOW_HALF_Y_M = 3.0

__all__ = ["LandingModel", "collect_shots", "quadratic_features", "rally_policy", "shipped_rally_model"]


def quadratic_features(z: np.ndarray) -> np.ndarray:
    """[N, 1 + m + m (m + 1) / 2]: 1, z_i, and z_i z_j (i <= j) of standardised inputs z [N, m]."""
    n, m = z.shape
    i, j = np.triu_indices(m)
    return np.concatenate([np.ones((n, 1)), z, z[:, i] * z[:, j]], axis=1)


def check_fitted_params(fitted_params: np.ndarray, params, what: str) -> None:
    """Raises ValueError when `params` (`ScriptedParams` vector(s) [P] or [N, P]) differ from `fitted_params` in
    anything but the aim (`AIM_PARAMS`): a model fitted on a policy's shots holds only for that policy."""
    from robot_rt.envs.scripted import ScriptedParams, with_legacy_defaults

    names = ScriptedParams.names()
    fitted = with_legacy_defaults(np.asarray(fitted_params, dtype=np.float64))
    mat = np.atleast_2d(np.asarray(params, dtype=np.float64))
    if fitted.shape != (len(names),) or mat.shape[1] != len(names):
        raise ValueError(f"params: expected {len(names)} ScriptedParams values, got {mat.shape[1]}")
    for j, k in enumerate(names):
        if k not in AIM_PARAMS and not np.allclose(mat[:, j], fitted[j], rtol=0, atol=1e-9):
            raise ValueError(
                f"{what}: fitted with {k} = {fitted[j]:g}, the policy has {mat[:, j].tolist()[:4]} "
                f"(a {what} holds only for the parameters it was fitted with, aim apart)"
            )


def check_model_arrays(model, specs) -> None:
    """Converts each array field `name` of `model` (a fitted model dataclass) to float64, checking its shape and that
    it is finite (`specs`: (name, shape) pairs), and checks `model.fitted_params` (a finite ScriptedParams vector);
    ValueError names the field."""
    for name, shape in specs:
        a = np.asarray(getattr(model, name), dtype=np.float64)
        if a.shape != shape or not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: expected {shape} finite values, got shape {a.shape}")
        setattr(model, name, a)
    model.fitted_params = np.asarray(model.fitted_params, dtype=np.float64)
    if model.fitted_params.ndim != 1 or not np.all(np.isfinite(model.fitted_params)):
        raise ValueError("fitted_params: expected a finite ScriptedParams vector")


def ridge_fit(phi: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Coefficients of the ridge regression of `y` on the features `phi` (a leading column of ones): penalty `ridge`
    per sample on every coefficient but the intercept."""
    reg = ridge * len(phi) * np.eye(phi.shape[1])
    reg[0, 0] = 0.0  # no penalty on the intercept
    return np.linalg.solve(phi.T @ phi + reg, phi.T @ y)


def check_rows(value, name: str, shape_tail: tuple) -> np.ndarray:
    """`value` as a float64 array [N, *shape_tail] of finite values, else ValueError naming `name`."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
        raise ValueError(f"{name}: expected shape [N, {', '.join(map(str, shape_tail))}], got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or Inf")
    return a


@dataclass
class LandingModel:
    """Quadratic ridge model of the landing point (see the module docstring). Arrays: `mean`, `std` [8] (the
    standardisation of the inputs), `coef` [45, 2]; `target_low`, `target_high` [2] (the fitted targets' range:
    `command` stays inside it); `fitted_params` [P] (the `ScriptedParams` vector of the shots); `heldout_rmse_m` [2]
    (x, y residuals on the shots held out of the fit) and `samples` (shots fitted)."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    target_low: np.ndarray
    target_high: np.ndarray
    fitted_params: np.ndarray
    heldout_rmse_m: np.ndarray
    samples: int

    def __post_init__(self) -> None:
        check_model_arrays(
            self,
            (
                ("mean", (N_INPUTS,)),
                ("std", (N_INPUTS,)),
                ("coef", (quadratic_features(np.zeros((1, N_INPUTS))).shape[1], 2)),
                ("target_low", (2,)),
                ("target_high", (2,)),
                ("heldout_rmse_m", (2,)),
            ),
        )
        if np.any(self.std <= 0):
            raise ValueError("std: expected positive standard deviations")
        if np.any(self.target_low >= self.target_high):
            raise ValueError("target_low: expected below target_high")

    # ------------------------------------------------------------------------------------------ model
    def _phi(self, target, plan_p, plan_v) -> np.ndarray:
        z = (np.concatenate([target, plan_p, plan_v], axis=1) - self.mean) / self.std
        return quadratic_features(z)

    def predict(self, target, plan_p, plan_v) -> np.ndarray:
        """Landing points [N, 2] of lobs aimed at `target` [N, 2] from contacts at `plan_p` with incoming velocity
        `plan_v` [N, 3]."""
        t = check_rows(target, "target", (2,))
        p = check_rows(plan_p, "plan_p", (3,))
        v = check_rows(plan_v, "plan_v", (3,))
        if not (len(t) == len(p) == len(v)):
            raise ValueError(f"target, plan_p, plan_v: expected the same N, got {len(t)}, {len(p)}, {len(v)}")
        return self._phi(t, p, v) @ self.coef

    def command(self, desired, plan_p, plan_v) -> np.ndarray:
        """Lob targets [N, 2] whose predicted landing is `desired` [N, 2] (damped Newton from T = desired, steps
        capped at 0.5 m, T clipped into [target_low, target_high]; where the desired point cannot be reached the
        closest point the iteration finds)."""
        d = check_rows(desired, "desired", (2,))
        p = check_rows(plan_p, "plan_p", (3,))
        v = check_rows(plan_v, "plan_v", (3,))
        t = np.clip(d, self.target_low, self.target_high)
        eye = np.eye(2)
        for _ in range(_NEWTON_STEPS):
            base = self._phi(t, p, v) @ self.coef
            jac = np.stack(
                [(self._phi(t + _FD_STEP_M * eye[k], p, v) @ self.coef - base) / _FD_STEP_M for k in (0, 1)], axis=2
            )
            det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
            ok = np.abs(det) > 1e-6
            r = d - base
            inv = (
                np.stack([np.stack([jac[:, 1, 1], -jac[:, 0, 1]], 1), np.stack([-jac[:, 1, 0], jac[:, 0, 0]], 1)], 1)
                / np.where(ok, det, 1.0)[:, None, None]
            )
            step = np.where(ok[:, None], np.einsum("nij,nj->ni", inv, r), 0.0)
            t = np.clip(t + np.clip(step, -_MAX_STEP_M, _MAX_STEP_M), self.target_low, self.target_high)
        return t

    def check_params(self, params: np.ndarray) -> None:
        """Raises ValueError when a policy's `ScriptedParams` vector(s) [P] or [N, P] differ from the fitted ones in
        anything but the aim."""
        check_fitted_params(self.fitted_params, params, "landing_model")

    # ------------------------------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, shots: dict, fitted_params, ridge: float = 1e-3, heldout: float = 0.25, seed: int = 0):
        """Fits on `shots` (`collect_shots`' dict: target [N, 2], plan_p, plan_v [N, 3], landing [N, 2]); the share
        `heldout` of the shots (a random subset) is left out to measure the residuals, then the model is refitted
        on all of them."""
        t = check_rows(shots["target"], "shots['target']", (2,))
        p = check_rows(shots["plan_p"], "shots['plan_p']", (3,))
        v = check_rows(shots["plan_v"], "shots['plan_v']", (3,))
        y = check_rows(shots["landing"], "shots['landing']", (2,))
        n = len(t)
        if not (len(p) == len(v) == len(y) == n) or n < 100:
            raise ValueError(f"shots: expected at least 100 shots with matching lengths, got {n}")
        if not (0 < heldout < 1) or not (ridge >= 0):
            raise ValueError("heldout: expected a share in (0, 1); ridge: expected >= 0")
        x = np.concatenate([t, p, v], axis=1)
        mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
        phi = quadratic_features((x - mean) / std)
        order = np.random.default_rng(seed).permutation(n)
        test, train = order[: int(heldout * n)], order[int(heldout * n) :]
        coef = ridge_fit(phi[train], y[train], ridge)
        rmse = np.sqrt(np.mean((phi[test] @ coef - y[test]) ** 2, axis=0))
        coef = ridge_fit(phi, y, ridge)
        return cls(mean, std, coef, t.min(axis=0), t.max(axis=0), np.asarray(fitted_params), rmse, n)

    # ------------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": "robot_rt.envs.landing_model",
            "features": "quadratic monomials of standardised (target x, y, plan_p x, y, z, plan_v x, y, z)",
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "coef": self.coef.tolist(),
            "target_low": self.target_low.tolist(),
            "target_high": self.target_high.tolist(),
            "fitted_params": self.fitted_params.tolist(),
            "heldout_rmse_m": self.heldout_rmse_m.tolist(),
            "samples": int(self.samples),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> LandingModel:
        if not isinstance(data, dict) or data.get("kind") != "robot_rt.envs.landing_model":
            raise ValueError(f"{source}: not a landing model (kind 'robot_rt.envs.landing_model')")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        try:
            return cls(
                **{
                    k: np.asarray(data[k], dtype=np.float64)
                    for k in ("mean", "std", "coef", "target_low", "target_high", "fitted_params", "heldout_rmse_m")
                },
                samples=int(data["samples"]),
            )
        except KeyError as err:
            raise ValueError(f"{source}: missing field {err}") from err

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LandingModel:
        data = read_json_file(path, "landing model")
        return cls.from_dict(data, source=str(path))


SHIPPED_RALLY_MODEL = Path(__file__).with_name("data") / "landing_model_rally.json"


def shipped_rally_model() -> LandingModel:
    """The landing model of the rally preset fitted by `tools/fit_landing_model.py` (docs/envs.md)."""
    return LandingModel.load(SHIPPED_RALLY_MODEL)


def collect_shots(
    params,
    episodes: int,
    steps: int,
    seed: int,
    target_low=(-1.2, -0.6),
    target_high=(0.6, 0.6),
) -> dict:
    """Self-practice shots of the scripted policy with `params` in the rally env (default human): `episodes`
    environments for `steps` policy steps (autoreset), each ball aimed at its own random lob target (the aim, aim_d
    included, plus an offset uniform in [target_low, target_high]). Per paddle contact: the target, the plan's
    contact point and incoming velocity at that step, and where the return meets the table plane (z = table top +
    ball radius) on an unbounded plane without a net (a flight from the ball's state after the contact), so long and
    wide returns count where they would land; shots landing outside the window x in (-4, 0.5) m, |y| < 3 m (edge
    hits, balls sent backwards: 0.7 % of the shipped model's shots) are dropped. Returns arrays keyed target,
    plan_p, plan_v, landing."""
    from robot_rt.ballistics import TableGeometry
    from robot_rt.ballistics.api import landing_point_batch

    from .scripted import BatchedScriptedPolicy, ScriptedParams
    from .vector import TableTennisVectorEnv

    params = params if isinstance(params, ScriptedParams) else ScriptedParams.from_vector(params)
    rng = np.random.default_rng(seed)
    env = TableTennisVectorEnv(episodes, max_episode_steps=6000)
    policy = BatchedScriptedPolicy(episodes, params=params)
    low, high = np.asarray(target_low, dtype=np.float64), np.asarray(target_high, dtype=np.float64)
    # the policy adds (aim_dx, aim_dy) to a goal; goals are passed so that the target it aims at is aim + offset
    bias = np.array([params.aim_dx_m, params.aim_dy_m])
    aim = np.array([params.aim_x_m, params.aim_y_m]) + bias
    targets = aim + rng.uniform(low, high, (episodes, 2))
    obs, _ = env.reset(seed=list(range(seed, seed + episodes)))
    world = env.world
    rows_t, rows_p, rows_v, after = [], [], [], []
    try:
        for _ in range(steps):
            plan_p, plan_v, aimed = policy.plan_p.copy(), policy.plan_v.copy(), targets.copy()
            obs, _, terminated, truncated, info = env.step(policy(obs, goals=targets - bias))
            hit = np.nonzero(np.asarray(info["hit"]))[0]
            rows_t.append(aimed[hit])
            rows_p.append(plan_p[hit])
            rows_v.append(plan_v[hit])
            after.append(world.ball[hit].copy())
            new = np.asarray(info["new_ball"]) | terminated | truncated
            targets[new] = aim + rng.uniform(low, high, (int(new.sum()), 2))
    finally:
        env.close()
    states = np.concatenate(after)
    plane = TableGeometry(length_m=12.0, width_m=6.0, net_height_m=0.0, room_half_length_m=7.0, room_half_width_m=3.5)
    land = landing_point_batch(np.ascontiguousarray(states), table=plane, horizon_s=3.0)
    xy = np.asarray(land.state)[:, :2]
    found = np.asarray(land.found) & np.all(np.isfinite(xy), axis=1)
    # shots that went nowhere near the table (edge hits, balls sent backwards) are not what a target steers
    found &= (xy[:, 0] > LANDING_WINDOW_X_M[0]) & (xy[:, 0] < LANDING_WINDOW_X_M[1])
    found &= np.abs(xy[:, 1]) < LANDING_WINDOW_HALF_Y_M
    return {
        "target": np.concatenate(rows_t)[found],
        "plan_p": np.concatenate(rows_p)[found],
        "plan_v": np.concatenate(rows_v)[found],
        "landing": np.asarray(land.state)[found, :2],
    }


# the rally with the shipped model: the wanted landing 0.15 m deeper than the rally preset's aim (its lob target
# aim + aim_d: x -1.0 m), where the human answers more often and the model keeps the returns on the table (a sweep
# on serves of seeds 5 and 6: 0, 0.05, 0.1, 0.15, 0.2 m deeper gave mean rallies of 4.46, 4.88, 5.12, 5.25, 4.83)
RALLY_LANDING_DEEPER_M = 0.15
# and moved sideways so that the return reaches the human's hitting plane nearer its centre
# (BatchedScriptedPolicy.centered_landing): 0 / 0.5 / 1 / 1.5 / 2 / 2.5 / 3 on the serves of seeds 5 and 6 (512)
# gave mean rallies of 5.32 / 5.39 / 5.51 / 5.70 / 5.84 / 5.78 / 5.49 (the line alone, 1, under-corrects: the
# arrivals' lateral spread is mostly placement noise, and the human's next ball starts halfway towards the arrival)
RALLY_ARRIVAL_CENTERING = 2.0


def rally_policy(num_envs: int, **kwargs):
    """The scripted rally preset steered by the shipped landing model, its wanted landing `RALLY_LANDING_DEEPER_M`
    deeper than the preset's aim and centred towards the human's hitting plane (`RALLY_ARRIVAL_CENTERING`;
    `examples/evaluate_rally.py --policy scripted-rally-landing`). Keyword arguments go to BatchedScriptedPolicy."""
    import dataclasses

    from .scripted import BatchedScriptedPolicy, ScriptedParams

    rally = ScriptedParams.preset("rally")
    # the preset aims its lob at (aim + aim_d); with the model that point is the wanted landing, moved deeper
    wanted_x = rally.aim_x_m + rally.aim_dx_m - RALLY_LANDING_DEEPER_M
    params = dataclasses.replace(rally, aim_x_m=wanted_x, aim_y_m=rally.aim_y_m + rally.aim_dy_m)
    kwargs.setdefault("arrival_centering", RALLY_ARRIVAL_CENTERING)
    return BatchedScriptedPolicy(num_envs, params=params, landing_model=shipped_rally_model(), **kwargs)
