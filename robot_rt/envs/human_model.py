"""Human behaviour model: the distribution of balls a human player sends to the robot, and how the human
returns the robot's balls.

Design notes: docs/envs.md, section `robot_rt.envs.human_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_json, read_json_file
from robot_rt.ballistics import BallParams, TableGeometry, reference, simulate, simulate_batch

STATE_NAMES = ("x_m", "y_m", "z_m", "vx_mps", "vy_mps", "vz_mps", "wx_radps", "wy_radps", "wz_radps")
FORMAT_VERSION = 1


@dataclass
class ReturnModel:
    """Probability that the human returns a ball, from the ball's state at the human's hitting plane.

    p = max_return_probability * exp(-0.5 ((y - reach_center_y_m) / reach_half_width_m)^2)
        * exp(-0.5 ((z - comfortable_height_m) / height_tolerance_m)^2) * sigmoid((speed_limit_mps - |v|) / 1 m/s)
    """

    hitting_plane_x_m: float = -1.7
    max_return_probability: float = 0.95
    reach_center_y_m: float = 0.0
    reach_half_width_m: float = 0.7
    comfortable_height_m: float = 1.05
    height_tolerance_m: float = 0.35
    speed_limit_mps: float = 9.0

    def return_probability(self, arrival_state) -> np.ndarray:
        s = np.asarray(arrival_state, dtype=np.float64)
        if s.shape[-1] != 9:
            raise ValueError(f"arrival_state: expected [..., 9] ball states, got shape {s.shape}")
        lateral = np.exp(-0.5 * ((s[..., 1] - self.reach_center_y_m) / self.reach_half_width_m) ** 2)
        height = np.exp(-0.5 * ((s[..., 2] - self.comfortable_height_m) / self.height_tolerance_m) ** 2)
        speed = np.linalg.norm(s[..., 3:6], axis=-1)
        pace = 1.0 / (1.0 + np.exp(-(self.speed_limit_mps - speed)))
        return self.max_return_probability * lateral * height * pace


@dataclass
class HumanBehaviorModel:
    """Gaussian over launch states at x = ``launch_x_m`` (see docs/envs.md, `robot_rt.envs.human_model`), plus a return model."""

    name: str
    mean: np.ndarray  # [9]
    cov: np.ndarray  # [9, 9]
    returns: ReturnModel = field(default_factory=ReturnModel)
    params: BallParams = field(default_factory=BallParams)
    table: TableGeometry = field(default_factory=TableGeometry)

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.cov = np.asarray(self.cov, dtype=np.float64)
        if self.mean.shape != (9,) or not np.all(np.isfinite(self.mean)):
            raise ValueError(f"mean: expected 9 finite values {STATE_NAMES}, got shape {self.mean.shape}")
        if self.cov.shape != (9, 9) or not np.all(np.isfinite(self.cov)):
            raise ValueError(f"cov: expected a finite [9, 9] matrix, got shape {self.cov.shape}")
        if not np.allclose(self.cov, self.cov.T, atol=1e-9):
            raise ValueError("cov: expected a symmetric matrix")
        eig = np.linalg.eigvalsh(self.cov)
        if eig.min() < -1e-9:
            raise ValueError(f"cov: expected a positive semi-definite matrix (smallest eigenvalue {eig.min():.3g})")
        half_length = self.table.length_m / 2
        if not self.mean[0] < -half_length:
            raise ValueError(f"mean[0] (launch x): expected behind the human's end line x < {-half_length} m")
        if not self.mean[3] > 0:
            raise ValueError("mean[3] (vx): expected balls flying towards the robot (vx > 0)")

    @property
    def launch_x_m(self) -> float:
        return float(self.mean[0])

    # ---------------------------------------------------------------------------------------------- sampling
    def is_valid(self, states, backend: str = "auto") -> np.ndarray:
        """True where the ball's first contact is the table, on the robot's half (x > 0), inside the lines."""
        s = np.atleast_2d(np.asarray(states, dtype=np.float64))
        out = simulate_batch(s, 1.5, 2e-3, self.params, self.table, backend=backend, max_events=1)
        kind = np.asarray(out.event_kind)[:, 0]
        first = np.asarray(out.event_state)[:, 0]
        half_l, half_w = self.table.length_m / 2, self.table.width_m / 2
        return (
            (np.asarray(out.event_count) > 0)
            & (kind == reference.KIND_TABLE)
            & (first[:, 0] > 0.0)
            & (first[:, 0] < half_l)
            & (np.abs(first[:, 1]) < half_w)
        )

    def sample(self, n: int, rng: np.random.Generator, *, max_rounds: int = 100) -> np.ndarray:
        """``n`` valid launch states [n, 9], drawn by rejection from the truncated Gaussian."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n: expected a non-negative int, got {n!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        accepted: list[np.ndarray] = []
        have = 0
        chol = np.linalg.cholesky(self.cov + 1e-12 * np.eye(9))
        for _ in range(max_rounds):
            if have >= n:
                break
            batch = max(16, 2 * (n - have))
            cand = self.mean + rng.standard_normal((batch, 9)) @ chol.T
            cand[:, 0] = self.mean[0]  # every ball is described where it crosses the launch plane
            cand = cand[cand[:, 3] > 0.5]
            if len(cand):
                good = cand[self.is_valid(cand)]
                accepted.append(good)
                have += len(good)
        if have < n:
            raise RuntimeError(
                f"HumanBehaviorModel '{self.name}': only {have} of {n} samples landed on the robot's half after "
                f"{max_rounds} rounds; the model's mean/cov describe balls that mostly miss the table"
            )
        return np.concatenate(accepted)[:n]

    def sample_return(self, arrival_state, rng: np.random.Generator) -> np.ndarray | None:
        """The human's answer to a ball arriving at the hitting plane: a new launch state, or None (a miss)."""
        arrival = np.asarray(arrival_state, dtype=np.float64)
        if rng.random() >= float(self.returns.return_probability(arrival)):
            return None
        ball = self.sample(1, rng)[0]
        shifted = ball.copy()
        shifted[1] = 0.5 * ball[1] + 0.5 * float(np.clip(arrival[1], -0.7, 0.7))
        return shifted if self.is_valid(shifted[None])[0] else ball

    def log_density(self, states) -> np.ndarray:
        """Gaussian log-density (untruncated) of launch states ``[..., 9]``, over the 8 free dimensions."""
        s = np.asarray(states, dtype=np.float64)
        free = slice(1, 9)
        d = s[..., free] - self.mean[free]
        cov = self.cov[free, free] + 1e-9 * np.eye(8)
        sol = np.linalg.solve(cov, d[..., None])[..., 0]
        _, logdet = np.linalg.slogdet(cov)
        return -0.5 * (np.sum(d * sol, axis=-1) + logdet + 8 * np.log(2 * np.pi))

    # ---------------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        tracks,
        name: str = "fitted",
        launch_x_m: float = -1.6,
        params: BallParams | None = None,
        noise_sigma_m: float = 0.005,
        min_points: int = 8,
        returns: ReturnModel | None = None,
    ) -> HumanBehaviorModel:
        """Fits the model to ball tracks: a sequence of ``(t_s [T], positions_m [T, 3])`` detections.

        Tracks with fewer than ``min_points`` detections before the first bounce are skipped; at least 3
        usable tracks are needed. The ``fit_report`` attribute of the result lists per-track residuals.
        """
        prm = params if params is not None else BallParams()
        launch_states, report = [], []
        for i, track in enumerate(tracks):
            try:
                t, p = track
            except (TypeError, ValueError) as err:
                raise ValueError(f"tracks[{i}]: expected a (t_s, positions_m) pair") from err
            t = np.asarray(t, dtype=np.float64)
            p = np.asarray(p, dtype=np.float64)
            if t.ndim != 1 or p.shape != (len(t), 3):
                raise ValueError(f"tracks[{i}]: expected t_s [T] and positions_m [T, 3], got {t.shape}, {p.shape}")
            if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
                raise ValueError(f"tracks[{i}]: NaN or Inf in the detections")
            order = np.argsort(t, kind="stable")
            t, p = t[order], p[order]
            seg = _pre_bounce_segment(t, p, TableGeometry().surface_height_m)
            if seg < min_points:
                report.append({"track": i, "used": False, "points": int(seg)})
                continue
            state0, rms = fit_free_flight(t[:seg], p[:seg], prm, noise_sigma_m)
            launch = propagate_to_plane(state0, launch_x_m, prm)
            if launch is None:
                report.append({"track": i, "used": False, "points": int(seg)})
                continue
            launch_states.append(launch)
            report.append({"track": i, "used": True, "points": int(seg), "rms_m": rms})
        if len(launch_states) < 3:
            raise ValueError(f"tracks: need at least 3 usable tracks with >= {min_points} pre-bounce points")
        states = np.stack(launch_states)
        mean = states.mean(axis=0)
        cov = np.cov(states.T) + np.diag([0, 1e-6, 1e-6, 1e-4, 1e-4, 1e-4, 1.0, 1.0, 1.0])
        cov[0, :] = 0.0
        cov[:, 0] = 0.0
        mean[0] = launch_x_m
        model = cls(name=name, mean=mean, cov=cov, returns=returns or ReturnModel(), params=prm)
        model.fit_report = report
        model.fitted_states = states
        return model

    # ---------------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "state_names": list(STATE_NAMES),
            "mean": self.mean.tolist(),
            "cov": self.cov.tolist(),
            "returns": dict(self.returns.__dict__),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> HumanBehaviorModel:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: format_version must be {FORMAT_VERSION}, got {data.get('format_version')!r}")
        for key in ("name", "mean", "cov"):
            if key not in data:
                raise ValueError(f"{source}: missing field '{key}'")
        try:
            returns = ReturnModel(**data.get("returns", {}))
        except TypeError as err:
            raise ValueError(f"{source}: returns: {err}") from err
        return cls(name=str(data["name"]), mean=data["mean"], cov=data["cov"], returns=returns)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> HumanBehaviorModel:
        data = read_json_file(path, "human behaviour model")
        return cls.from_dict(data, source=str(path))

    # ---------------------------------------------------------------------------------------------- shipped
    @classmethod
    def default(cls) -> HumanBehaviorModel:
        """The nominal simulated player: moderate pace, mild topspin."""
        mean = [-1.6, 0.0, 1.0, 6.0, 0.0, 1.6, 0.0, 50.0, 0.0]
        std = [0.0, 0.25, 0.08, 0.6, 0.4, 0.4, 15.0, 35.0, 25.0]
        return cls(name="default", mean=mean, cov=np.diag(np.square(std)))

    def with_spread(self, scale: float) -> HumanBehaviorModel:
        """This player with the spread of its launches scaled by `scale` (covariance x scale^2, same mean and
        return model): a curriculum option for learning, 0 serves the mean ball every time, 1 is this model."""
        if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale >= 0):
            raise ValueError(f"scale: expected a finite number >= 0, got {scale!r}")
        name = self.name if scale == 1 else f"{self.name}*{float(scale):g}"
        return HumanBehaviorModel(
            name=name,
            mean=self.mean.copy(),
            cov=self.cov * float(scale) ** 2,
            returns=self.returns,
            params=self.params,
            table=self.table,
        )

    @classmethod
    def real_player(cls) -> HumanBehaviorModel:
        """A different player ('the real player' of the sim-to-real tests): faster, heavier topspin, sidespin
        to the robot's left, plays more to one side, and a lower, flatter trajectory."""
        mean = [-1.6, -0.15, 0.95, 7.0, 0.25, 1.3, 10.0, 110.0, 40.0]
        std = [0.0, 0.3, 0.06, 0.7, 0.45, 0.35, 20.0, 30.0, 30.0]
        cov = np.diag(np.square(std))
        cov[3, 7] = cov[7, 3] = 0.5 * std[3] * std[7]  # harder hits carry more topspin
        returns = ReturnModel(reach_half_width_m=0.8, max_return_probability=0.97, speed_limit_mps=10.0)
        return cls(name="real_player", mean=mean, cov=cov, returns=returns)


# -------------------------------------------------------------------------------------------------- helpers
def _pre_bounce_segment(t: np.ndarray, p: np.ndarray, table_z_m: float) -> int:
    """Number of leading detections before the first bounce (vertical velocity turning from - to + near the
    table); all of them when there is none."""
    if len(t) < 5:
        return len(t)
    z = p[:, 2]
    for k in range(2, len(t) - 2):
        near = z[k] < table_z_m + 0.08
        if near and z[k] <= z[k - 2] and z[k] <= z[k + 2] and (z[k + 2] - z[k]) > 0.002:
            return k  # detection k may already be after the contact: stop before it
    return len(t)


def _fly(state0: np.ndarray, t0: float, times: np.ndarray, params: BallParams, dt_s: float = 2e-3) -> np.ndarray:
    """Positions at ``times`` (>= t0) of the ball in state ``state0`` at ``t0``: the native trajectory on its
    step grid, then one RK4 step from the preceding grid point to each time."""
    offsets = times - t0
    traj = simulate(state0, float(offsets[-1]) + dt_s, dt_s, params)
    k = np.clip(np.searchsorted(traj.t_s, offsets, side="right") - 1, 0, len(traj.t_s) - 1)
    return reference.rk4_step(traj.states[k], offsets - traj.t_s[k], params)[:, :3]


def fit_free_flight(t: np.ndarray, p: np.ndarray, params: BallParams, noise_sigma_m: float):
    """Robust least-squares fit of the 9-state at ``t[0]`` to positions ``p`` under free flight.

    Returns (state [9], rms residual in m). Spin has a weak zero-mean prior (sigma 80 rad/s): the spin component along the flight direction
    produces no Magnus force and is only known through that prior.
    """
    from scipy.optimize import least_squares

    # initial guess from a parabola: position/velocity from a quadratic fit, no spin
    tau = t - t[0]
    coeffs = [np.polyfit(tau, p[:, k], 2) for k in range(3)]
    guess = np.zeros(9)
    guess[:3] = [c[2] for c in coeffs]
    guess[3:6] = [c[1] for c in coeffs]
    spin_sigma = 80.0

    def residual(x):
        try:
            pos = _fly(x, t[0], t, params)
        except ValueError:  # a trial state outside the room: as bad as it gets
            return np.full(3 * len(t) + 3, 1e3)
        return np.concatenate([((pos - p) / noise_sigma_m).ravel(), x[6:9] / spin_sigma])

    sol = least_squares(residual, guess, loss="huber", f_scale=3.0, x_scale="jac", max_nfev=60)
    pos = _fly(sol.x, t[0], t, params)
    rms = float(np.sqrt(np.mean(np.sum((pos - p) ** 2, axis=1))))
    return sol.x, rms


def propagate_to_plane(state: np.ndarray, x_plane_m: float, params: BallParams, dt_s: float = 1e-3):
    """Carries a free-flight state forwards or backwards in time to where it crosses x = ``x_plane_m``."""
    pk = reference._pk(params)
    y = np.asarray(state, dtype=np.float64).copy()
    if abs(y[3]) < 1e-6:
        return None
    direction = 1.0 if (x_plane_m - y[0]) * y[3] > 0 else -1.0
    for _ in range(3000):
        nxt = reference.rk4_step(y, direction * dt_s, pk)
        if (nxt[0] - x_plane_m) * (y[0] - x_plane_m) <= 0:
            # secant refinement inside the step
            lo, hi = 0.0, dt_s
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                ym = reference.rk4_step(y, direction * mid, pk)
                if (ym[0] - x_plane_m) * (y[0] - x_plane_m) <= 0:
                    hi = mid
                else:
                    lo = mid
            return reference.rk4_step(y, direction * hi, pk)
        y = nxt
    return None
