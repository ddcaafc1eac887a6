"""Unscented Kalman filter for the ball state ``[x, y, z, vx, vy, vz, wx, wy, wz]`` from 3-D detections.

Design notes: docs/estimation.md, section `robot_rt.estimation.ukf`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace

import numpy as np

from . import _physics
from .common import (
    CHI2_3DOF,
    PlaneCrossing,
    UpdateResult,
    check_measurement,
    check_positive,
    check_probability,
    check_time,
)

__all__ = ["UKFConfig", "BallUKF", "fit_ballistic_arc"]

_N = 9


@dataclass(frozen=True)
class UKFConfig:
    sigma_m: float = 0.005  # detection noise std per axis
    accel_noise_psd: float = 0.02  # white-noise acceleration PSD [(m/s^2)^2 s]: drag/lift model mismatch
    spin_noise_psd: float = 20.0  # spin random walk PSD [(rad/s)^2 / s]
    bounce_vel_sigma_mps: float = 0.12  # contact model mismatch, per velocity axis
    bounce_spin_sigma_radps: float = 15.0  # contact model mismatch, per spin axis
    init_spin_sigma_radps: float = 80.0  # prior std of the spin components perpendicular to the velocity
    init_spin_parallel_sigma_radps: float = 30.0  # prior std along the velocity (corkscrew; unobservable in flight)
    init_accel_sigma_mps2: float = 3.0  # unknown (spin-dependent) acceleration during initialisation
    n_init: int = 4
    init_window_s: float = 0.05
    gate_probability: float = 0.9999
    n_reinit: int = 4
    max_gap_s: float = 0.2
    history_s: float = 0.25
    max_step_s: float = 0.005
    alpha: float = 1.0
    beta: float = 2.0
    kappa: float = 0.0


def fit_ballistic_arc(ts, ps, model, sigma_m, gate_m, min_points, sigma_a=3.0):
    """Fit position/velocity at the newest inlier time to detections of one ballistic arc.

    Acceleration is the physics' spinless flight acceleration at the fitted velocity (two passes); the
    worst detection is removed while its residual exceeds ``gate_m``. Returns ``(t_ref, x9, P9)`` or None.
    """
    ts = np.asarray(ts, dtype=np.float64)
    ps = np.asarray(ps, dtype=np.float64)
    while len(ts) >= min_points:
        t_ref = ts[-1]
        tau = ts - t_ref
        A = np.stack([np.ones_like(tau), tau], axis=1)
        a = np.array([0.0, 0.0, -model.gravity_mps2])
        for _ in range(2):
            coef, *_ = np.linalg.lstsq(A, ps - 0.5 * tau[:, None] ** 2 * a, rcond=None)
            s0 = np.concatenate([coef[0], coef[1], np.zeros(3)])
            a = model.derivative(s0[None])[0, 3:6]
        r = np.linalg.norm(ps - (A @ coef + 0.5 * tau[:, None] ** 2 * a), axis=1)
        j = int(np.argmax(r))
        if r[j] > gate_m:
            ts = np.delete(ts, j)
            ps = np.delete(ps, j, axis=0)
            continue
        speed = float(np.linalg.norm(coef[1]))
        if speed > 40.0 or np.ptp(ts) <= 0:
            return None
        C = np.linalg.inv(A.T @ A) * sigma_m**2  # cov of (p0, v0) per axis
        # unknown spin-dependent acceleration: position/velocity error of a over the fitted span
        span = float(np.ptp(ts))
        C = 2.0 * C + np.diag([(0.25 * sigma_a * span**2) ** 2, (0.5 * sigma_a * span) ** 2])
        P = np.zeros((_N, _N))
        for k in range(3):
            P[np.ix_([k, 3 + k], [k, 3 + k])] = C
        return t_ref, s0, P
    return None


class BallUKF:
    """Ball state estimator (UKF over position, velocity and spin). See docs/estimation.md, `robot_rt.estimation.ukf`.

    ``update(t_capture_s, position_m, t_arrival_s=None)`` feeds one detection (any order within
    ``history_s``); ``predict(t_s)`` returns ``(mean, cov)`` at a time at or after the state time without
    changing the filter; ``predict_plane_crossing(x_plane_m)`` returns the predicted crossing of the
    hitting plane (physics ``time_to_plane`` on the mean, optionally the (t, y, z) covariance from the
    sigma points).
    """

    def __init__(self, params=None, config: UKFConfig | None = None, *, backend: str = "auto", **overrides):
        cfg = config or UKFConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        for name in (
            "sigma_m",
            "init_spin_sigma_radps",
            "init_spin_parallel_sigma_radps",
            "init_window_s",
            "max_gap_s",
            "history_s",
            "max_step_s",
            "alpha",
        ):
            check_positive(getattr(cfg, name), f"config.{name}")
        for name in ("accel_noise_psd", "spin_noise_psd", "bounce_vel_sigma_mps", "bounce_spin_sigma_radps"):
            check_positive(getattr(cfg, name), f"config.{name}", allow_zero=True)
        gp = check_probability(cfg.gate_probability, "config.gate_probability")
        if gp not in CHI2_3DOF:
            raise ValueError(f"config.gate_probability: expected one of {sorted(CHI2_3DOF)}, got {gp}")
        if int(cfg.n_init) < 3 or int(cfg.n_reinit) < 3:
            raise ValueError("config.n_init / config.n_reinit: expected integers >= 3")
        self.config = cfg
        self.model = _physics.PhysicsModel(params, backend=backend)
        self._gate = CHI2_3DOF[gp]
        lam = cfg.alpha**2 * (_N + cfg.kappa) - _N
        self._gamma = math.sqrt(_N + lam)
        wm = np.full(2 * _N + 1, 0.5 / (_N + lam))
        wc = wm.copy()
        wm[0] = lam / (_N + lam)
        wc[0] = wm[0] + (1 - cfg.alpha**2 + cfg.beta)
        self._wm, self._wc = wm, wc
        self._R = np.eye(3) * cfg.sigma_m**2
        self.reset()

    # ------------------------------------------------------------------ state handling
    def reset(self):
        """Forget everything (tracks, history, counters)."""
        # the filter state is a tuple of immutable values (arrays are never modified in place)
        self._s = _FilterState(None, None, None, (), (), -math.inf, 0)
        self._hist_keys: list[tuple] = []  # (t, x, y, z) sorted
        self._hist_snap: list[_FilterState] = []  # state before processing that detection
        self._last_arrival = -math.inf
        self.n_replayed = 0

    @property
    def initialized(self) -> bool:
        return self._s.x is not None

    @property
    def time_s(self) -> float | None:
        return self._s.t

    @property
    def state(self) -> np.ndarray | None:
        return None if self._s.x is None else self._s.x.copy()

    @property
    def covariance(self) -> np.ndarray | None:
        return None if self._s.P is None else self._s.P.copy()

    @property
    def n_tracks(self) -> int:
        """Number of tracks started so far (1 after the first initialisation; +1 per re-initialisation)."""
        return self._s.n_tracks

    # ------------------------------------------------------------------ public API
    def update(self, t_capture_s, position_m, t_arrival_s=None) -> UpdateResult:
        t, p = check_measurement(t_capture_s, position_m)
        if t_arrival_s is not None:
            ta = check_time(t_arrival_s, "t_arrival_s")
            if ta < t - 1e-9:
                raise ValueError(f"t_arrival_s: a detection cannot arrive ({ta}) before its capture ({t})")
            if ta < self._last_arrival - 1e-9:
                raise ValueError(f"t_arrival_s: arrival times must be non-decreasing, got {ta} < {self._last_arrival}")
            self._last_arrival = ta
        key = (t, float(p[0]), float(p[1]), float(p[2]))
        if self._hist_keys and t < self._hist_keys[-1][0] - self.config.history_s:
            return UpdateResult("too_late")
        i = bisect.bisect_right(self._hist_keys, key)
        n_later = len(self._hist_keys) - i
        if n_later:
            self._s = self._hist_snap[i]
            later = self._hist_keys[i:]
            del self._hist_keys[i:]
            del self._hist_snap[i:]
        else:
            later = []
        res = self._process_and_record(key)
        for k in later:
            self._process_and_record(k)
        self.n_replayed += n_later
        self._prune()
        if n_later:
            res = UpdateResult(res.status, n_later, res.mahalanobis2)
        return res

    def predict(self, t_s) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance at ``t_s`` (>= the state time); does not change the filter."""
        if not self.initialized:
            raise RuntimeError("predict: the filter has no track yet (feed detections first)")
        t = float(t_s)
        if not math.isfinite(t):
            raise ValueError(f"t_s: expected a finite time, got {t}")
        if t < self._s.t - 1e-9:
            raise ValueError(f"t_s: can only predict forward from the state time {self._s.t}, got {t}")
        x, P, _ = self._propagate(self._s.x, self._s.P, max(0.0, t - self._s.t))
        return x, P

    def predict_plane_crossing(self, x_plane_m: float, with_covariance: bool = False) -> PlaneCrossing | None:
        """Predicted crossing of ``x = x_plane_m`` from the current state (physics ``time_to_plane``).

        Returns None without a track or when the ball does not reach the plane.
        """
        xp = float(x_plane_m)
        if not math.isfinite(xp):
            raise ValueError(f"x_plane_m: expected a finite plane position in metres, got {xp}")
        if not self.initialized:
            return None
        x = self._s.x
        if with_covariance:
            pts = self._sigma_points(x, self._s.P)
        else:
            pts = x[None]
        tau, st = self.model.time_to_plane(pts, xp)
        if not np.isfinite(tau[0]):
            return None
        cov = None
        if with_covariance:
            ok = np.isfinite(tau)
            if ok.all():
                z = np.stack([tau, st[:, 1], st[:, 2]], axis=1)
                m = self._wm @ z
                d = z - m
                cov = (self._wc[:, None] * d).T @ d
        return PlaneCrossing(self._s.t + float(tau[0]), st[0, :3].copy(), st[0, 3:6].copy(), st[0, 6:9].copy(), cov)

    # ------------------------------------------------------------------ internals
    def _prune(self):
        if not self._hist_keys:
            return
        t_min = self._hist_keys[-1][0] - self.config.history_s
        j = bisect.bisect_left(self._hist_keys, (t_min,))
        if j > 0:
            del self._hist_keys[:j]
            del self._hist_snap[:j]

    def _process_and_record(self, key):
        self._hist_keys.append(key)
        self._hist_snap.append(self._s)
        res, self._s = self._process(self._s, key[0], np.array(key[1:]))
        return res

    def _process(self, s: _FilterState, t: float, p: np.ndarray):
        """Pure function: (state, detection) -> (result, new state)."""
        cfg = self.config
        if s.x is not None and t - s.t_last > cfg.max_gap_s:
            s = _FilterState(None, None, None, (), (), -math.inf, s.n_tracks)  # track lost: start over
        if s.x is None:
            pend = tuple(q for q in s.pending if q[0] >= t - cfg.init_window_s) + ((t, p),)
            if len(pend) >= cfg.n_init:
                fit = fit_ballistic_arc(
                    [q[0] for q in pend],
                    [q[1] for q in pend],
                    self.model,
                    cfg.sigma_m,
                    max(5 * cfg.sigma_m, 0.02),
                    cfg.n_init,
                    cfg.init_accel_sigma_mps2,
                )
                if fit is not None:
                    return UpdateResult("initialised" if s.n_tracks == 0 else "reinitialised"), self._new_track(
                        fit, s.n_tracks + 1
                    )
            return UpdateResult("pending"), _FilterState(None, None, None, pend, (), -math.inf, s.n_tracks)
        x, P, _ = self._propagate(s.x, s.P, t - s.t)
        S = P[:3, :3] + self._R
        y = p - x[:3]
        Si = np.linalg.inv(S)
        d2 = float(y @ Si @ y)
        if d2 > self._gate:
            rej = s.rejects + ((t, p),)
            rej = rej[-cfg.n_reinit :]
            if len(rej) >= cfg.n_reinit and rej[-1][0] - rej[0][0] <= cfg.n_reinit * 0.05:
                fit = fit_ballistic_arc(
                    [q[0] for q in rej],
                    [q[1] for q in rej],
                    self.model,
                    cfg.sigma_m,
                    max(5 * cfg.sigma_m, 0.02),
                    cfg.n_reinit,
                    cfg.init_accel_sigma_mps2,
                )
                if fit is not None:
                    return UpdateResult("reinitialised", 0, d2), self._new_track(fit, s.n_tracks + 1)
            return UpdateResult("gated", 0, d2), _FilterState(s.t, s.x, s.P, (), rej, s.t_last, s.n_tracks)
        K = P[:, :3] @ Si
        x = x + K @ y
        P = P - K @ S @ K.T
        P = 0.5 * (P + P.T)
        return UpdateResult("accepted", 0, d2), _FilterState(t, x, P, (), (), t, s.n_tracks)

    def _new_track(self, fit, n_tracks):
        t_ref, x, P = fit
        P = P.copy()
        # spin prior (mean 0): isotropic perpendicular to the flight direction u, its own std along u
        u = x[3:6] / max(np.linalg.norm(x[3:6]), 1e-6)
        sp, sa = self.config.init_spin_sigma_radps, self.config.init_spin_parallel_sigma_radps
        P[6:9, 6:9] = sp**2 * np.eye(3) + (sa**2 - sp**2) * np.outer(u, u)
        return _FilterState(t_ref, x, P, (), (), t_ref, n_tracks)

    def _sigma_points(self, x, P):
        try:
            L = np.linalg.cholesky(P)
        except np.linalg.LinAlgError:
            w, V = np.linalg.eigh(0.5 * (P + P.T))
            L = V * np.sqrt(np.clip(w, 1e-12, None))
        L = self._gamma * L
        return np.concatenate([x[None], x + L.T, x - L.T], axis=0)

    def _propagate(self, x, P, dt):
        """UKF time update over ``dt`` >= 0 with table-contact handling; returns (x, P, bounced)."""
        if dt <= 0:
            return x, P, False
        cfg = self.config
        chi = self._sigma_points(x, P)
        n = max(1, math.ceil(dt / cfg.max_step_s - 1e-9))
        h = dt / n
        bounced = False
        zc = self.model.contact_z_m
        for _ in range(n):
            nxt = self.model.flight_step(chi, h)
            if chi[0, 2] > zc and nxt[0, 2] <= zc and chi[0, 5] < 0 and self.model.over_table(nxt[0, 0], nxt[0, 1]):
                tc = self._contact_time(chi[0], h)
                chi = self.model.flight_step(chi, tc) if tc > 0 else chi
                chi = self._align_and_bounce(chi)
                nxt = self.model.flight_step(chi, h - tc) if h - tc > 0 else chi
                bounced = True
            chi = nxt
        xm = self._wm @ chi
        d = chi - xm
        Pn = (self._wc[:, None] * d).T @ d
        Pn = Pn + self._process_noise(dt)
        if bounced:
            bv, bw = cfg.bounce_vel_sigma_mps**2, cfg.bounce_spin_sigma_radps**2
            Pn = Pn + np.diag([0, 0, 0, bv, bv, bv, bw, bw, bw])
        return xm, 0.5 * (Pn + Pn.T), bounced

    def _contact_time(self, s0, h):
        """Time in (0, h] at which the flight of ``s0`` reaches the contact height (secant on RK4)."""
        zc = self.model.contact_z_m
        lo, hi = 0.0, h
        zlo = s0[2] - zc
        zhi = self.model.flight_step(s0[None], h)[0, 2] - zc
        t = h
        for _ in range(4):
            if zlo == zhi:
                break
            t = lo - zlo * (hi - lo) / (zhi - zlo)
            t = min(max(t, lo), hi)
            z = self.model.flight_step(s0[None], t)[0, 2] - zc
            if abs(z) < 1e-7:
                break
            if z > 0:
                lo, zlo = t, z
            else:
                hi, zhi = t, z
        return t

    def _align_and_bounce(self, chi):
        """Map every sigma point through the table contact at the centre point's contact instant."""
        zc = self.model.contact_z_m
        vz = chi[:, 5]
        tau = np.where(vz < -0.05, (chi[:, 2] - zc) / np.where(vz < -0.05, -vz, 1.0), 0.0)
        tau = np.clip(tau, -0.02, 0.02)[:, None]
        a = self.model.derivative(chi)
        pre = chi.copy()
        pre[:, 0:3] += chi[:, 3:6] * tau + 0.5 * a[:, 3:6] * tau**2
        pre[:, 3:6] += a[:, 3:6] * tau
        pre[:, 2] = zc
        post = self.model.table_bounce(pre)
        a2 = self.model.derivative(post)
        out = post.copy()
        out[:, 0:3] += post[:, 3:6] * (-tau) + 0.5 * a2[:, 3:6] * tau**2
        out[:, 3:6] -= a2[:, 3:6] * tau
        return out

    def _process_noise(self, dt):
        qa, qw = self.config.accel_noise_psd, self.config.spin_noise_psd
        Q = np.zeros((_N, _N))
        for k in range(3):
            Q[k, k] = qa * dt**3 / 3
            Q[k, 3 + k] = Q[3 + k, k] = qa * dt**2 / 2
            Q[3 + k, 3 + k] = qa * dt
            Q[6 + k, 6 + k] = qw * dt
        return Q


@dataclass(frozen=True)
class _FilterState:
    t: float | None
    x: np.ndarray | None
    P: np.ndarray | None
    pending: tuple
    rejects: tuple
    t_last: float
    n_tracks: int
