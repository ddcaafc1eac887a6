"""Polynomial-fit baseline predictor (no spin, no drag model).

Design notes: docs/estimation.md, section `robot_rt.estimation.polyfit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _physics
from .common import PlaneCrossing, UpdateResult, check_measurement, check_positive, check_time

__all__ = ["PolyfitConfig", "PolyfitPredictor"]


@dataclass(frozen=True)
class PolyfitConfig:
    sigma_m: float = 0.005  # measurement noise used for the prior weighting
    sigma_accel_mps2: float = 6.0  # prior std of the fitted acceleration around (0, 0, -g)
    window_s: float = 0.25  # at most this much of the current segment is fitted
    gate_m: float = 0.05  # residual gate for outliers
    n_reinit: int = 4  # consecutive consistent rejects -> new track
    max_gap_s: float = 0.2  # longer gap -> new track
    history_s: float = 0.5  # detections older than newest - history_s are dropped as too late
    min_points: int = 3  # points needed in a segment before it is used for prediction


def _fit_segment(ts, ps, t_ref, sigma_m, sigma_a, a_prior):
    """Weighted LSQ with a prior on the acceleration; returns p0[3], v0[3], a[3] at ``t_ref``."""
    tau = ts - t_ref
    w = 1.0 / sigma_m
    A = np.empty((len(tau) + 1, 3))
    A[:-1, 0] = w
    A[:-1, 1] = tau * w
    A[:-1, 2] = 0.5 * tau * tau * w
    A[-1] = (0.0, 0.0, 1.0 / sigma_a)
    b = np.empty((len(tau) + 1, 3))
    b[:-1] = ps * w
    b[-1] = np.asarray(a_prior) / sigma_a
    # normal equations (3x3, well conditioned with the prior row): one solve for the three axes
    coef = np.linalg.solve(A.T @ A, A.T @ b)
    return coef[0], coef[1], coef[2]


class PolyfitPredictor:
    """Baseline hitting-plane predictor; same ``update`` / ``predict_plane_crossing`` interface as the UKF."""

    def __init__(self, params=None, config: PolyfitConfig | None = None, **overrides):
        cfg = config or PolyfitConfig()
        if overrides:
            cfg = PolyfitConfig(**{**cfg.__dict__, **overrides})
        for name in ("sigma_m", "sigma_accel_mps2", "window_s", "gate_m", "max_gap_s", "history_s"):
            check_positive(getattr(cfg, name), f"config.{name}")
        if int(cfg.n_reinit) < 2 or int(cfg.min_points) < 2:
            raise ValueError("config.n_reinit and config.min_points: expected integers >= 2")
        self.config = cfg
        self.model = _physics.PhysicsModel(params)
        self.g = self.model.gravity_mps2
        self.contact_z = self.model.contact_z_m
        self.e, self.k = self.model.spinless_bounce_ratios()
        self.a_prior = np.array([0.0, 0.0, -self.g])
        self.reset()

    # ------------------------------------------------------------------ track management
    def reset(self):
        self._t = []  # capture times of the track, sorted
        self._p = []
        self._t_bounce = -math.inf  # start of the current segment
        self._rejects = []  # consecutive rejected (t, p)
        self.n_tracks = 0
        self._last_arrival = -math.inf
        self._cache_key = None
        self._cache = None
        self._version = 0  # bumped whenever the stored detections change

    def _start_track(self, pts):
        pts = sorted(pts, key=lambda q: q[0])
        self._t = [q[0] for q in pts]
        self._p = [q[1] for q in pts]
        self._t_bounce = -math.inf
        self._rejects = []
        self.n_tracks += 1
        self._version += 1

    @property
    def initialized(self) -> bool:
        return len(self._t) >= self.config.min_points

    def _segment(self, upto=None):
        ts = np.asarray(self._t)
        ps = np.asarray(self._p)
        t_new = ts[-1] if upto is None else upto
        m = (ts > self._t_bounce) & (ts >= t_new - self.config.window_s)
        if upto is not None:
            m &= ts <= upto
        return ts[m], ps[m]

    def _fit(self):
        """(t_ref, p, v, a) of the current motion model, or None (cached until the data change)."""
        key = (self._version, self._t_bounce)
        if self._cache_key != key:
            self._cache = self._fit_uncached()
            self._cache_key = key
        return self._cache

    def _fit_uncached(self):
        cfg = self.config
        ts, ps = self._segment()
        if len(ts) >= cfg.min_points:
            p0, v0, a = _fit_segment(ts, ps, ts[-1], cfg.sigma_m, cfg.sigma_accel_mps2, self.a_prior)
            return ts[-1], p0, v0, a
        if math.isfinite(self._t_bounce):  # few points after a bounce: pre-bounce fit through the bounce
            ts_all = np.asarray(self._t)
            ps_all = np.asarray(self._p)
            m = (ts_all <= self._t_bounce) & (ts_all >= self._t_bounce - cfg.window_s)
            if m.sum() >= cfg.min_points:
                tr = ts_all[m][-1]
                p0, v0, a = _fit_segment(ts_all[m], ps_all[m], tr, cfg.sigma_m, cfg.sigma_accel_mps2, self.a_prior)
                dt = self._t_bounce - tr
                pb = p0 + v0 * dt + 0.5 * a * dt * dt
                vb = v0 + a * dt
                vb = np.array([self.k * vb[0], self.k * vb[1], -self.e * vb[2]])
                ab = np.array([a[0], a[1], -self.g])
                return self._t_bounce, pb, vb, ab
        return None

    def _extrapolate(self, fit, t):
        """Position at capture time ``t`` (constant acceleration, with a table bounce); also the bounce time."""
        tr, p, v, a = fit
        dt = t - tr
        tb = self._time_to_contact(p, v, a)
        if tb is not None and tb < dt:
            pb, vb, ab = self._bounce(p, v, a, tb)
            d2 = dt - tb
            return pb + vb * d2 + 0.5 * ab * d2 * d2, tr + tb
        return p + v * dt + 0.5 * a * dt * dt, None

    def _time_to_contact(self, p, v, a):
        # z(tau) = contact_z, descending, over the table
        c = p[2] - self.contact_z
        roots = _quad_roots(0.5 * a[2], v[2], c)
        for tau in roots:
            if tau >= -1e-3 and (v[2] + a[2] * tau) < 0:
                x = p[0] + v[0] * tau + 0.5 * a[0] * tau * tau
                y = p[1] + v[1] * tau + 0.5 * a[1] * tau * tau
                if self.model.over_table(x, y):
                    return max(tau, 0.0)
                return None
        return None

    def _bounce(self, p, v, a, tb):
        pb = p + v * tb + 0.5 * a * tb * tb
        vb = v + a * tb
        vb = np.array([self.k * vb[0], self.k * vb[1], -self.e * vb[2]])
        return pb, vb, np.array([a[0], a[1], -self.g])

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
        cfg = self.config
        if not self._t:
            self._start_track([(t, p)])
            return UpdateResult("initialised")
        t_new = self._t[-1]
        if t < t_new - cfg.history_s:
            return UpdateResult("too_late")
        if t - t_new > cfg.max_gap_s:
            self._start_track([(t, p)])
            return UpdateResult("reinitialised")
        fit = self._fit()
        if fit is None:  # still initialising: accept, then prune inconsistent points
            self._insert(t, p)
            self._prune_init()
            return UpdateResult("pending")
        pred, t_b = self._extrapolate(fit, t)
        gate = cfg.gate_m * (2.0 if t_b is not None else 1.0)
        if np.linalg.norm(p - pred) > gate:
            self._rejects.append((t, p))
            if len(self._rejects) >= cfg.n_reinit and _consistent(self._rejects[-cfg.n_reinit :], cfg.gate_m):
                self._start_track(self._rejects[-cfg.n_reinit :])
                return UpdateResult("reinitialised")
            return UpdateResult("gated")
        self._rejects = []
        if t_b is not None and t > t_new:
            self._t_bounce = t_b
        self._insert(t, p)
        return UpdateResult("accepted")

    def _insert(self, t, p):
        self._version += 1
        i = int(np.searchsorted(self._t, t, side="right"))
        self._t.insert(i, t)
        self._p.insert(i, p)
        # keep memory bounded
        while len(self._t) > 2 and self._t[0] < self._t[-1] - 2 * self.config.history_s - self.config.window_s:
            self._t.pop(0)
            self._p.pop(0)

    def _prune_init(self):
        ts = np.asarray(self._t)
        ps = np.asarray(self._p)
        if len(ts) < 3:
            return
        while len(ts) >= 3:
            p0, v0, a = _fit_segment(ts, ps, ts[-1], self.config.sigma_m, 0.5, self.a_prior)
            tau = (ts - ts[-1])[:, None]
            r = np.linalg.norm(ps - (p0 + v0 * tau + 0.5 * a * tau * tau), axis=1)
            j = int(np.argmax(r))
            if r[j] <= self.config.gate_m:
                break
            ts = np.delete(ts, j)
            ps = np.delete(ps, j, axis=0)
        self._t = list(ts)
        self._p = list(ps)
        self._version += 1

    def state(self):
        """Fitted (t_ref, position, velocity, acceleration) or None."""
        return self._fit()

    def predict_position(self, t_s) -> np.ndarray | None:
        fit = self._fit()
        if fit is None:
            return None
        return self._extrapolate(fit, float(t_s))[0]

    def predict_plane_crossing(self, x_plane_m: float) -> PlaneCrossing | None:
        check_positive(abs(float(x_plane_m)) + 1.0, "x_plane_m")
        fit = self._fit()
        if fit is None:
            return None
        tr, p, v, a = fit
        if p[0] >= x_plane_m:
            return None
        tb = self._time_to_contact(p, v, a)
        tx = _first_root(0.5 * a[0], v[0], p[0] - x_plane_m)
        if tx is None:
            return None
        if tb is not None and tb < tx:
            pb, vb, ab = self._bounce(p, v, a, tb)
            t2 = _first_root(0.5 * ab[0], vb[0], pb[0] - x_plane_m)
            if t2 is None:
                return None
            pos = pb + vb * t2 + 0.5 * ab * t2 * t2
            return PlaneCrossing(tr + tb + t2, pos, vb + ab * t2)
        return PlaneCrossing(tr + tx, p + v * tx + 0.5 * a * tx * tx, v + a * tx)


def _quad_roots(a, b, c):
    """Real roots of a*t^2 + b*t + c = 0, ascending."""
    if abs(a) < 1e-12:
        return [] if abs(b) < 1e-12 else [-c / b]
    d = b * b - 4 * a * c
    if d < 0:
        return []
    s = math.sqrt(d)
    q = -0.5 * (b + math.copysign(s, b))
    r = [q / a, c / q] if q != 0 else [-b / (2 * a)]
    return sorted(r)


def _first_root(a, b, c):
    for r in _quad_roots(a, b, c):
        if r >= 0:
            return r
    return None


def _consistent(pts, gate_m):
    """True when the points lie on one straight line in time (a new ball), within ``gate_m``."""
    ts = np.array([q[0] for q in pts])
    ps = np.array([q[1] for q in pts])
    if np.ptp(ts) <= 0:
        return False
    A = np.stack([np.ones_like(ts), ts - ts[-1]], axis=1)
    coef, *_ = np.linalg.lstsq(A, ps, rcond=None)
    r = np.linalg.norm(ps - A @ coef, axis=1)
    speed = np.linalg.norm(coef[1])
    return bool(np.all(r < gate_m) and speed < 40.0)
