"""Shot model of the scripted policy: whether its return lands on the human's half and where it reaches the human's
hitting plane, from the lob target it aims at, the predicted contact, the incoming velocity and the incoming spin
estimated from the ball's flight; fitted on the policy's own self-practice shots. The policy picks, per ball, the lob
target with the highest expected chance that the human answers.

Design notes: docs/envs.md, section `robot_rt.envs.shot_model`.

Why: against the default human the rally is bounded by placement. The landing model (`landing_model.py`) puts the
ball at a wanted landing point, but the human answers from the ball's state on its hitting plane (x = -1.7 m), and
with the landing model those arrivals spread 0.15 m sideways and 0.09 m in height, 0.07 m below the height the human
likes best (`ReturnModel`). Half of that spread is the incoming spin, which the landing model does not see. So this
model predicts the arrival itself, and sees the spin estimate:

    z = standardise(T, p, v, w)            T lob target [2], p contact [3], v incoming velocity [3], w spin estimate [3]
    P(in | z)      = sigmoid(c^T phi(z))   (logistic ridge on the quadratic monomials phi, 78 features)
    arrival(z)     = A^T phi(z)            (y, z, speed at the hitting plane; ridge, fitted on the shots that got there)
    value(T)       = P(in)^k * E[human's answer probability | arrival ~ N(arrival(z), diag(residual sd^2))]

The expectation is closed-form for the return model's Gaussian factors: a factor exp(-(u - c)^2 / (2 s^2)) with u ~
N(m, r^2) has mean s / sqrt(s^2 + r^2) exp(-(m - c)^2 / (2 (s^2 + r^2))); the pace factor is taken at the predicted
speed. `best_target` maximises value(T) over the fitted targets' box: a grid, then two finer local grids around the
best (the previous step's choice is a candidate too, so the choice is stable).

The exponent k (`in_exponent`, 1 by default: the chance that the exchange goes on) weighs the return's landing
against its placement: k > 1 is risk aversion, for play against a human other than the one the model was fitted
against. Check it where the policy is to play: against the real player k = 3 gained 0.13 in the loop-model env and
lost 0.45 through the real-time loop (docs/envs.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_json, read_json_file
from robot_rt.estimation.batched_ukf import TRACKERS

from .human_model import ReturnModel
from .landing_model import check_fitted_params, check_model_arrays, check_rows, quadratic_features, ridge_fit
from .scripted import check_in_exponent

FORMAT_VERSION = 1
KIND = "robot_rt.envs.shot_model"
N_INPUTS = 11  # target x, y; contact point x, y, z; incoming velocity x, y, z; spin estimate x, y, z
ARRIVAL_NAMES = ("y_m", "z_m", "speed_mps")
_GRID = (9, 7)  # coarse grid over the targets' box (x, y)
_REFINE_ROUNDS = 2  # local 3 x 3 grids, each a third of the previous spacing
# the model's array fields, in file order
_ARRAY_FIELDS = (
    "mean",
    "std",
    "coef_in",
    "coef_arrival",
    "coef_log_var",
    "log_var_offset",
    "arrival_sd",
    "target_low",
    "target_high",
    "fitted_params",
)
_VAR_FLOOR = 1e-6  # m^2 (and (m/s)^2): keeps log(r^2) finite for a residual of zero


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


__all__ = [
    "ShotModel",
    "check_in_exponent",
    "collect_shot_data",
    "rally_shot_policy",
    "shipped_shot_model",
    "shot_model_policy",
]


def _expected_gaussian_factor(mean, centre: float, width: float, spread) -> np.ndarray:
    """E[exp(-(u - centre)^2 / (2 width^2))] for u ~ N(mean, spread^2)."""
    var = width * width + spread * spread
    return width / np.sqrt(var) * np.exp(-0.5 * (mean - centre) ** 2 / var)


@dataclass
class ShotModel:
    """See the module docstring. Arrays: `mean`, `std` [11] (the inputs' standardisation), `coef_in` [78] (logistic),
    `coef_arrival` [78, 3] (arrival y, z, speed), `coef_log_var` [78, 3] and `log_var_offset` [3] (the arrival's
    residual variance per shot: exp(phi^T coef_log_var + log_var_offset), the offset calibrated on held-out shots),
    `arrival_sd` [3] (held-out residual sd of the arrival over all shots),
    `target_low`, `target_high` [2] (the fitted targets' box: `best_target` stays inside it), `fitted_params` [P] (the
    `ScriptedParams` vector of the shots, aim apart); `returns` the human's return model the value is computed for;
    `heldout` (metrics on the shots held out of the fit) and `samples` (shots fitted); `tracker` the ball tracker the
    shots were planned with (`BatchedScriptedPolicy(tracker=...)`: 'fit' or 'ukf'), which the policy must use too;
    `human` the name of the human model the shots were played against and `loop_model` whether the env's robot moved
    along the real-time loop's trajectory (`collect_shot_data`), both as recorded by `tools/fit_shot_model.py`."""

    mean: np.ndarray
    std: np.ndarray
    coef_in: np.ndarray
    coef_arrival: np.ndarray
    coef_log_var: np.ndarray
    log_var_offset: np.ndarray
    arrival_sd: np.ndarray
    target_low: np.ndarray
    target_high: np.ndarray
    fitted_params: np.ndarray
    returns: ReturnModel = field(default_factory=ReturnModel)
    heldout: dict = field(default_factory=dict)
    samples: int = 0
    tracker: str = "fit"
    human: str = "default"
    loop_model: bool = False

    def __post_init__(self) -> None:
        n_feat = quadratic_features(np.zeros((1, N_INPUTS))).shape[1]
        n_out = len(ARRIVAL_NAMES)
        shapes = {
            "mean": (N_INPUTS,),
            "std": (N_INPUTS,),
            "coef_in": (n_feat,),
            "coef_arrival": (n_feat, n_out),
            "coef_log_var": (n_feat, n_out),
            "log_var_offset": (n_out,),
            "arrival_sd": (n_out,),
            "target_low": (2,),
            "target_high": (2,),
        }
        check_model_arrays(self, shapes.items())
        if self.tracker not in TRACKERS:
            raise ValueError(f"tracker: expected one of {TRACKERS}, got {self.tracker!r}")
        if np.any(self.std <= 0) or np.any(self.arrival_sd < 0):
            raise ValueError("std, arrival_sd: expected positive standard deviations")
        if np.any(self.target_low >= self.target_high):
            raise ValueError("target_low: expected below target_high")
        if not isinstance(self.returns, ReturnModel):
            raise TypeError(f"returns: expected a ReturnModel, got {type(self.returns).__name__}")
        # every output at once: logit of P(in), arrival y, z, speed, their log residual variances
        self._coef_all = np.concatenate([self.coef_in[:, None], self.coef_arrival, self.coef_log_var], axis=1)

    # ------------------------------------------------------------------------------------------ model
    def _phi(self, target, plan_p, plan_v, spin) -> np.ndarray:
        z = (np.concatenate([target, plan_p, plan_v, spin], axis=1) - self.mean) / self.std
        return quadratic_features(z)

    def _checked(self, target, plan_p, plan_v, spin):
        t = check_rows(target, "target", (2,))
        p = check_rows(plan_p, "plan_p", (3,))
        v = check_rows(plan_v, "plan_v", (3,))
        w = check_rows(spin, "spin", (3,))
        if not (len(t) == len(p) == len(v) == len(w)):
            raise ValueError(
                f"target, plan_p, plan_v, spin: expected the same N, got {len(t)}, {len(p)}, {len(v)}, {len(w)}"
            )
        return t, p, v, w

    def predict(self, target, plan_p, plan_v, spin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P(the return lands on the human's half) [N], predicted arrival [N, 3]: y, z, speed at the human's
        hitting plane, and the sd [N, 3] expected around it) for lobs aimed at `target` [N, 2] from contacts
        `plan_p` [N, 3] with incoming velocity `plan_v` [N, 3] and spin estimate `spin` [N, 3] (rad/s)."""
        outs = self._phi(*self._checked(target, plan_p, plan_v, spin)) @ self._coef_all
        return _sigmoid(outs[:, 0]), outs[:, 1:4], self._sd(outs[:, 4:7])

    def _sd(self, log_var: np.ndarray) -> np.ndarray:
        return np.exp(0.5 * np.clip(log_var + self.log_var_offset, -30.0, 10.0))

    def _value_of(self, outs: np.ndarray, in_exponent: float = 1.0) -> np.ndarray:
        """The value from the outputs [..., 7] (logit, arrival y, z, speed, their log variances)."""
        r = self.returns
        arrival, sd = outs[..., 1:4], self._sd(outs[..., 4:7])
        lateral = _expected_gaussian_factor(arrival[..., 0], r.reach_center_y_m, r.reach_half_width_m, sd[..., 0])
        height = _expected_gaussian_factor(arrival[..., 1], r.comfortable_height_m, r.height_tolerance_m, sd[..., 1])
        pace = _sigmoid(r.speed_limit_mps - arrival[..., 2])
        p_in = _sigmoid(outs[..., 0])
        if in_exponent != 1.0:
            p_in = p_in**in_exponent
        return p_in * r.max_return_probability * lateral * height * pace

    def value(self, target, plan_p, plan_v, spin, in_exponent: float = 1.0) -> np.ndarray:
        """The value [N]: P(in)^in_exponent x E[return probability at the predicted arrival]; with the default
        exponent 1, the expected chance that the human answers."""
        k = check_in_exponent(in_exponent)
        return self._value_of(self._phi(*self._checked(target, plan_p, plan_v, spin)) @ self._coef_all, k)

    def best_target(
        self, plan_p, plan_v, spin, previous=None, in_exponent: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lob targets [N, 2] with the highest `value`, their values [N]) for contacts `plan_p`, incoming velocities
        `plan_v` and spin estimates `spin` [N, 3]; `previous` [N, 2] (optional, NaN rows ignored): last step's
        choices, kept as candidates; `in_exponent`: the exponent k of P(in) in the value (module docstring). A coarse
        grid over [target_low, target_high], then `_REFINE_ROUNDS` local 3 x 3 grids around the best, each a third
        of the spacing before."""
        k = check_in_exponent(in_exponent)
        _, p, v, w = self._checked(np.zeros((len(np.atleast_2d(plan_p)), 2)), plan_p, plan_v, spin)
        n = len(p)
        lo, hi = self.target_low, self.target_high
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], _GRID[0]), np.linspace(lo[1], hi[1], _GRID[1]), indexing="ij")
        cand = np.broadcast_to(np.stack([gx.ravel(), gy.ravel()], axis=1), (n, _GRID[0] * _GRID[1], 2))
        if previous is not None:
            prev = np.asarray(previous, dtype=np.float64)
            if prev.shape != (n, 2):
                raise ValueError(f"previous: expected shape ({n}, 2), got {prev.shape}")
            prev = np.where(np.isfinite(prev), np.clip(prev, lo, hi), cand[:, :1, :].reshape(n, 2))
            cand = np.concatenate([cand, prev[:, None, :]], axis=1)
        quadratics = self._target_quadratics(p, v, w)
        best, best_value = self._best_of(cand, quadratics, k)
        spacing = (hi - lo) / (np.array(_GRID) - 1)
        offsets = np.stack(np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij"), axis=-1).reshape(-1, 2)
        for _ in range(_REFINE_ROUNDS):
            spacing = spacing / 3.0
            local = np.clip(best[:, None, :] + offsets[None] * spacing, lo, hi)
            best, best_value = self._best_of(local, quadratics, k)
        return best, best_value

    def _best_of(self, cand: np.ndarray, quadratics, in_exponent: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        # the model's outputs are quadratic in the target (the other inputs fixed): their coefficients per ball come
        # from 6 evaluations around the box's centre, and the candidates cost a few multiplications each
        n, k = cand.shape[:2]
        a, b, quad, centre = quadratics
        d = cand - centre  # [n, k, 2]
        outs = (
            a[:, None, :]
            + np.einsum("nkj,noj->nko", d, b)
            + d[..., 0:1] ** 2 * quad[:, None, :, 0]
            + d[..., 1:2] ** 2 * quad[:, None, :, 1]
            + (d[..., 0:1] * d[..., 1:2]) * quad[:, None, :, 2]
        )  # [n, k, 7]: logit of P(in), arrival y, z, speed, their log variances
        values = self._value_of(outs, in_exponent)
        j = np.argmax(values, axis=1)
        rows = np.arange(n)
        return cand[rows, j], values[rows, j]

    def _target_quadratics(self, p, v, w):
        """Per ball, the outputs (`_value_of`'s 7) as f(T) = a + b.d + q0 d0^2 + q1 d1^2 + q2 d0 d1 with d = T -
        centre (exact: they are quadratic in T): a [n, 7], b [n, 7, 2], q [n, 7, 3], centre [2]."""
        n = len(p)
        centre = 0.5 * (self.target_low + self.target_high)
        h = 0.5 * (self.target_high - self.target_low)
        probes = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [1, 1]], dtype=np.float64) * h
        targets = (centre + probes)[None].repeat(n, axis=0).reshape(-1, 2)
        rep = lambda x: np.repeat(x, len(probes), axis=0)  # noqa: E731
        phi = self._phi(targets, rep(p), rep(v), rep(w))
        f = (phi @ self._coef_all).reshape(n, len(probes), -1)
        f0, fxp, fxm, fyp, fym, fxy = (f[:, i] for i in range(6))
        bx, by = (fxp - fxm) / (2 * h[0]), (fyp - fym) / (2 * h[1])
        qx, qy = (fxp + fxm - 2 * f0) / (2 * h[0] ** 2), (fyp + fym - 2 * f0) / (2 * h[1] ** 2)
        qxy = (fxy - f0 - bx * h[0] - by * h[1] - qx * h[0] ** 2 - qy * h[1] ** 2) / (h[0] * h[1])
        return f0, np.stack([bx, by], axis=2), np.stack([qx, qy, qxy], axis=2), centre

    def check_params(self, params: np.ndarray) -> None:
        """Raises ValueError when a policy's `ScriptedParams` vector(s) differ from the fitted ones, aim apart."""
        check_fitted_params(self.fitted_params, params, "shot_model")

    # ------------------------------------------------------------------------------------------ fit
    @classmethod
    def fit(
        cls,
        shots: dict,
        fitted_params,
        returns: ReturnModel | None = None,
        ridge: float = 1e-3,
        heldout: float = 0.25,
        seed: int = 0,
    ) -> ShotModel:
        """Fits on `shots` (`collect_shot_data`'s dict: target [N, 2], plan_p, plan_v, spin [N, 3], landed_in [N]
        bool, arrival [N, 3] (y, z, speed; NaN where the return did not get there)); the share `heldout` (a random
        subset) is left out to measure the residuals and the classifier's log loss, then everything is refitted."""
        if not isinstance(shots, dict):
            raise TypeError(f"shots: expected a dict (collect_shot_data's), got {type(shots).__name__}")
        missing = [k for k in ("target", "plan_p", "plan_v", "spin", "landed_in", "arrival") if k not in shots]
        if missing:
            raise ValueError(f"shots: missing {missing} (collect_shot_data's keys)")
        t = check_rows(shots["target"], "shots['target']", (2,))
        p = check_rows(shots["plan_p"], "shots['plan_p']", (3,))
        v = check_rows(shots["plan_v"], "shots['plan_v']", (3,))
        w = check_rows(shots["spin"], "shots['spin']", (3,))
        landed = np.asarray(shots["landed_in"], dtype=bool)
        arrival = np.asarray(shots["arrival"], dtype=np.float64)
        n = len(t)
        if not (len(p) == len(v) == len(w) == len(landed) == len(arrival) == n) or n < 200:
            raise ValueError(f"shots: expected at least 200 shots with matching lengths, got {n}")
        if arrival.shape != (n, len(ARRIVAL_NAMES)):
            raise ValueError(f"shots['arrival']: expected shape ({n}, 3), got {arrival.shape}")
        got_there = landed & np.all(np.isfinite(arrival), axis=1)
        if got_there.sum() < 100 or (~landed).sum() < 10:
            raise ValueError("shots: expected at least 100 returns that reached the human and 10 that did not land in")
        if not (0 < heldout < 1) or not (ridge >= 0):
            raise ValueError("heldout: expected a share in (0, 1); ridge: expected >= 0")
        x = np.concatenate([t, p, v, w], axis=1)
        mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
        phi = quadratic_features((x - mean) / std)
        order = np.random.default_rng(seed).permutation(n)
        test = np.zeros(n, dtype=bool)
        test[order[: int(heldout * n)]] = True
        if (got_there & test).sum() < 20 or (got_there & ~test).sum() < 50:
            raise ValueError(
                f"heldout: {heldout} of {n} shots leaves {(got_there & test).sum()} held-out and "
                f"{(got_there & ~test).sum()} fitted returns that reached the human (need >= 20 and >= 50)"
            )
        coef_in = _logistic_ridge(phi[~test], landed[~test], ridge)
        prob = 1.0 / (1.0 + np.exp(-np.clip(phi[test] @ coef_in, -40, 40)))
        eps = 1e-9
        log_loss = float(-np.mean(landed[test] * np.log(prob + eps) + (~landed[test]) * np.log(1 - prob + eps)))
        base_rate = float(landed[~test].mean())
        base_loss = float(-np.mean(landed[test] * np.log(base_rate) + (~landed[test]) * np.log(1 - base_rate)))
        fit_rows, test_rows = got_there & ~test, got_there & test
        coef_arrival = ridge_fit(phi[fit_rows], arrival[fit_rows], ridge)
        resid_fit = phi[fit_rows] @ coef_arrival - arrival[fit_rows]
        resid_test = phi[test_rows] @ coef_arrival - arrival[test_rows]
        coef_log_var = ridge_fit(phi[fit_rows], np.log(resid_fit**2 + _VAR_FLOOR), ridge)
        # the log-variance fit's level is biased (E[log r^2] < log E[r^2]): calibrated on the held-out shots
        var_test = np.exp(phi[test_rows] @ coef_log_var)
        log_var_offset = np.log(np.mean(resid_test**2 / var_test, axis=0))
        sd_test = np.sqrt(var_test * np.exp(log_var_offset))
        quartiles = []
        for k in range(len(ARRIVAL_NAMES)):
            edges = np.quantile(sd_test[:, k], [0.0, 0.25, 0.5, 0.75, 1.0])
            bins = np.clip(np.searchsorted(edges, sd_test[:, k], side="right") - 1, 0, 3)
            quartiles.append(
                {
                    "predicted_sd": [float(sd_test[bins == b, k].mean()) for b in range(4)],
                    "actual_sd": [float(np.sqrt(np.mean(resid_test[bins == b, k] ** 2))) for b in range(4)],
                }
            )
        metrics = {
            "in_log_loss": log_loss,
            "in_log_loss_constant": base_loss,
            "landed_in_share": float(landed.mean()),
            "arrival_sd_no_model": np.std(arrival[test_rows], axis=0).tolist(),
            "arrival_sd_by_predicted_quartile": dict(zip(ARRIVAL_NAMES, quartiles)),
        }
        arrival_sd = np.std(resid_test, axis=0)
        coef_in = _logistic_ridge(phi, landed, ridge)
        coef_arrival = ridge_fit(phi[got_there], arrival[got_there], ridge)
        resid = phi[got_there] @ coef_arrival - arrival[got_there]
        coef_log_var = ridge_fit(phi[got_there], np.log(resid**2 + _VAR_FLOOR), ridge)
        return cls(
            mean,
            std,
            coef_in,
            coef_arrival,
            coef_log_var,
            log_var_offset,
            arrival_sd,
            t.min(axis=0),
            t.max(axis=0),
            np.asarray(fitted_params, dtype=np.float64),
            returns or ReturnModel(),
            metrics,
            n,
        )

    # ------------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "features": "quadratic monomials of standardised (target x, y, plan_p x, y, z, plan_v x, y, z, spin x, y, z)",
            "arrival": list(ARRIVAL_NAMES),
            **{k: getattr(self, k).tolist() for k in _ARRAY_FIELDS},
            "returns": dict(self.returns.__dict__),
            "heldout": self.heldout,
            "samples": int(self.samples),
            "tracker": self.tracker,
            "human": self.human,
            "loop_model": bool(self.loop_model),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> ShotModel:
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise ValueError(f"{source}: not a shot model (kind {KIND!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        try:
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in _ARRAY_FIELDS}
            returns = ReturnModel(**data["returns"])
            return cls(
                **arrays,
                returns=returns,
                heldout=dict(data.get("heldout", {})),
                samples=int(data["samples"]),
                tracker=str(data.get("tracker", "fit")),  # files before the option were all planned with 'fit'
                human=str(data.get("human", "default")),  # files before these options: the default human, the env
                loop_model=bool(data.get("loop_model", False)),
            )
        except KeyError as err:
            raise ValueError(f"{source}: missing field {err}") from err
        except TypeError as err:
            raise ValueError(f"{source}: {err}") from err

    def save(self, path) -> object:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> ShotModel:
        return cls.from_dict(read_json_file(path, "shot model"), source=str(path))


def _logistic_ridge(phi: np.ndarray, label: np.ndarray, ridge: float, iterations: int = 25) -> np.ndarray:
    """Logistic regression with an L2 penalty (intercept free) by Newton's method (IRLS)."""
    y = label.astype(np.float64)
    reg = ridge * len(phi) * np.eye(phi.shape[1])
    reg[0, 0] = 1e-9 * len(phi)
    coef = np.zeros(phi.shape[1])
    rate = np.clip(y.mean(), 1e-3, 1 - 1e-3)
    coef[0] = np.log(rate / (1 - rate))
    for _ in range(iterations):
        prob = 1.0 / (1.0 + np.exp(-np.clip(phi @ coef, -40, 40)))
        grad = phi.T @ (prob - y) + reg @ coef
        hess = (phi * (prob * (1 - prob))[:, None]).T @ phi + reg
        step = np.linalg.solve(hess, grad)
        coef -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return coef


def collect_shot_data(
    params,
    episodes: int,
    steps: int,
    seed: int,
    target_low=(-1.2, -0.6),
    target_high=(0.6, 0.6),
    tracker: str = "fit",
    human=None,
    env_robot=None,
    wrap_policy=None,
) -> dict:
    """Self-practice shots of the scripted policy with `params` in the rally env, each ball aimed at its own random
    lob target (the aim, aim_d included, plus an offset uniform in [target_low, target_high]), as
    `landing_model.collect_shots` plays them. Per paddle contact: the target, the plan's contact point and incoming
    velocity at that step, the spin estimate (`features.IncomingSpinEstimator`), whether the return landed on the
    human's half, and its state where it reached the human's hitting plane (y, z, speed; NaN where it did not).
    Contacts whose outcome the episode cap cut are dropped. `tracker`: the policy's ball tracker ('fit', 'ukf').
    `human`: the HumanBehaviorModel that serves and answers (None: the default human), e.g. one fitted to a real
    player's ball tracks (`robot_rt.learning.is2r.refit_human`). `env_robot` (the env's RobotDescription; None: the
    policy's) and `wrap_policy` (a function of the scripted policy, as a one-argument env policy with `reset(mask)`,
    returning the env policy to play) let the shots be the ones played through the real-time loop:
    `tools/fit_shot_model.py --loop-model` passes `robot_rt.bridge.loop_model`'s `drive_robot` and
    `LoopTrajectoryPolicy`. The policy is reset at every autoreset (the loop model needs it; the shipped 'fit' and
    'ukf' files were collected before that, when only the ball tracker's own restart separated the episodes).
    Returns arrays keyed target, plan_p, plan_v, spin, landed_in, arrival."""
    from .human_model import HumanBehaviorModel
    from .scripted import BatchedScriptedPolicy, ScriptedParams
    from .vector import TableTennisVectorEnv

    if human is not None and not isinstance(human, HumanBehaviorModel):
        raise TypeError(f"human: expected a HumanBehaviorModel or None, got {type(human).__name__}")

    params = params if isinstance(params, ScriptedParams) else ScriptedParams.from_vector(params)
    for name, value in (("episodes", episodes), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    low, high = np.asarray(target_low, dtype=np.float64), np.asarray(target_high, dtype=np.float64)
    if low.shape != (2,) or high.shape != (2,) or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(
            f"target_low, target_high: expected two finite (x, y) offsets, got {target_low}, {target_high}"
        )
    if np.any(low > high):
        raise ValueError(f"target_low: expected <= target_high per axis, got {low.tolist()} and {high.tolist()}")
    rng = np.random.default_rng(seed)
    scripted = BatchedScriptedPolicy(episodes, params=params, estimate_spin=True, tracker=tracker)
    aimed_policy = _AimedPolicy(scripted)
    policy = aimed_policy if wrap_policy is None else wrap_policy(aimed_policy)
    env = TableTennisVectorEnv(episodes, human=human, robot=env_robot, max_episode_steps=100_000)
    bias = np.array([params.aim_dx_m, params.aim_dy_m])  # the policy adds it to a goal
    aim = np.array([params.aim_x_m, params.aim_y_m]) + bias
    targets = aim + rng.uniform(low, high, (episodes, 2))
    obs, _ = env.reset(seed=list(range(seed, seed + episodes)))
    world = env.world
    rows: list[list] = []  # [target, plan_p, plan_v, spin, landed_in, arrival]
    pending = np.full(episodes, -1)  # the row of each environment's return in flight
    restarted = np.zeros(episodes, dtype=bool)
    try:
        for _ in range(steps):
            if restarted.any():
                policy.reset(restarted)
            aimed_policy.goals = targets - bias
            action = policy(obs)
            plan_p, plan_v, spin, aimed = (
                scripted.plan_p.copy(),
                scripted.plan_v.copy(),
                scripted.incoming_spin.estimate.copy(),
                targets.copy(),
            )
            obs, _, terminated, truncated, info = env.step(action)
            arrived = np.nonzero(np.all(np.isfinite(world.arrival_ball), axis=1) & (pending >= 0))[0]
            for w in arrived:
                ball = world.arrival_ball[w]
                rows[pending[w]][4:] = [True, np.array([ball[1], ball[2], np.linalg.norm(ball[3:6])])]
                pending[w] = -1
            for w in np.nonzero(np.asarray(info["hit"]))[0]:
                if pending[w] >= 0:  # a second touch of the same return: its fate is not this row's
                    rows[pending[w]] = None
                pending[w] = len(rows)
                rows.append([aimed[w], plan_p[w], plan_v[w], spin[w], None, None])
            for w in np.nonzero((terminated | truncated) & (pending >= 0))[0]:
                if terminated[w] and info["outcome"][w] == "out":
                    rows[pending[w]][4:] = [False, np.full(3, np.nan)]
                else:  # cut by the cap, or ended otherwise (a limit) before the return's fate was known
                    rows[pending[w]] = None
                pending[w] = -1
            new = np.asarray(info["new_ball"]) | terminated | truncated
            targets[new] = aim + rng.uniform(low, high, (int(new.sum()), 2))
            restarted = terminated | truncated
    finally:
        env.close()
    done = [r for r in rows if r is not None and r[4] is not None]
    return {
        "target": np.array([r[0] for r in done]),
        "plan_p": np.array([r[1] for r in done]),
        "plan_v": np.array([r[2] for r in done]),
        "spin": np.array([r[3] for r in done]),
        "landed_in": np.array([r[4] for r in done], dtype=bool),
        "arrival": np.array([r[5] for r in done]),
    }


class _AimedPolicy:
    """`policy(obs, goals=self.goals)` as a one-argument env policy (for wrappers that call policy(obs))."""

    def __init__(self, policy):
        self.policy, self.goals = policy, None
        self.robot = policy.robot

    def __call__(self, obs):
        return self.policy(obs, goals=self.goals)

    def reset(self, mask=None) -> None:
        self.policy.reset(mask)


SHIPPED_RALLY_SHOT_MODEL = Path(__file__).with_name("data") / "shot_model_rally.json"
SHIPPED_RALLY_SHOT_MODEL_UKF = Path(__file__).with_name("data") / "shot_model_rally_ukf.json"
SHIPPED_RALLY_SHOT_MODEL_LOOP_UKF = Path(__file__).with_name("data") / "shot_model_rally_loop_ukf.json"
SHOT_MODEL_VARIANTS = ("env", "loop")


def shipped_shot_model(tracker: str = "fit", variant: str = "env") -> ShotModel:
    """The shot model of the rally preset fitted by `tools/fit_shot_model.py` (docs/envs.md) for the policy's ball
    tracker ('fit': the constant-acceleration fit, 'ukf': the physics filter). `variant` 'env': fitted in the env
    against the default human; 'loop' (tracker 'ukf' only): fitted against a human model learned from the real
    player's ball tracks, with the env's robot on the real-time loop's trajectory, for play through the loop."""
    if tracker not in TRACKERS:
        raise ValueError(f"tracker: expected one of {TRACKERS}, got {tracker!r}")
    if variant not in SHOT_MODEL_VARIANTS:
        raise ValueError(f"variant: expected one of {SHOT_MODEL_VARIANTS}, got {variant!r}")
    if variant == "loop":
        if tracker != "ukf":
            raise ValueError(f"tracker: the 'loop' shot model is fitted for tracker 'ukf', got {tracker!r}")
        return ShotModel.load(SHIPPED_RALLY_SHOT_MODEL_LOOP_UKF)
    return ShotModel.load(SHIPPED_RALLY_SHOT_MODEL if tracker == "fit" else SHIPPED_RALLY_SHOT_MODEL_UKF)


def rally_shot_policy(num_envs: int, tracker: str = "fit", variant: str = "env", **kwargs):
    """The scripted rally preset aiming each ball where the shipped shot model expects the human to answer most
    often (`examples/evaluate_rally.py --policy scripted-rally-shot`, `scripted-rally-shot-ukf` with tracker='ukf';
    variant='loop' for play through the real-time loop, see `shipped_shot_model`). Keyword arguments go to
    BatchedScriptedPolicy."""
    from .scripted import BatchedScriptedPolicy, ScriptedParams

    model = shipped_shot_model(tracker, variant)
    return BatchedScriptedPolicy(
        num_envs, params=ScriptedParams.preset("rally"), shot_model=model, tracker=model.tracker, **kwargs
    )


def shot_model_policy(num_envs: int, path, **kwargs):
    """The scripted policy with the parameters the shot model in `path` (a `tools/fit_shot_model.py` file) was
    fitted with, its tracker, aiming by that model. Keyword arguments go to BatchedScriptedPolicy."""
    from .scripted import BatchedScriptedPolicy, ScriptedParams

    model = ShotModel.load(path)
    return BatchedScriptedPolicy(
        num_envs,
        params=ScriptedParams.from_vector(model.fitted_params),
        shot_model=model,
        tracker=model.tracker,
        **kwargs,
    )
