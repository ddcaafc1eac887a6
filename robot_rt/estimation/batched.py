"""Batched ball tracker: one ball track per environment, vectorised over N environments (NumPy).

Design notes: docs/estimation.md, section `robot_rt.estimation.batched`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rt import _native
from robot_rt.ballistics import BallParams, TableGeometry, pack_params, time_to_plane_batch
from robot_rt.ballistics.params import PARAM_NAMES

from ._physics import PhysicsModel

__all__ = ["BatchedBallTracker", "BatchedCrossing"]

_IDX = {name: i for i, name in enumerate(PARAM_NAMES)}


@dataclass
class BatchedCrossing:
    """Predicted hitting-plane crossings [N]: `t_s` absolute (tracker clock), NaN where `found` is False."""

    t_s: np.ndarray
    position_m: np.ndarray
    velocity_mps: np.ndarray
    spin_radps: np.ndarray
    found: np.ndarray


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value}")
    return float(value)


class BatchedBallTracker:
    """Ball tracks of `num_envs` environments from their detection streams (see docs/estimation.md, `robot_rt.estimation.batched`)."""

    def __init__(
        self,
        num_envs: int,
        params: BallParams | None = None,
        table: TableGeometry | None = None,
        *,
        capacity: int = 48,
        window_s: float = 0.2,
        sigma_m: float = 0.005,
        sigma_accel_mps2: float = 3.0,
        gate_m: float = 0.08,
        max_gap_s: float = 0.1,
        min_points: int = 3,
        dedup_tol_s: float = 1e-4,
        estimate_spin: bool = False,
        horizon_s: float = 1.0,
        plane_dt_s: float = 2e-3,
        backend: str = "auto",
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 4:
            raise ValueError(f"capacity: expected an int >= 4, got {capacity!r}")
        if isinstance(min_points, bool) or not isinstance(min_points, (int, np.integer)) or min_points < 2:
            raise ValueError(f"min_points: expected an int >= 2, got {min_points!r}")
        self.n = int(num_envs)
        self.capacity = int(capacity)
        self.window_s = _check_positive(window_s, "window_s")
        self.sigma_m = _check_positive(sigma_m, "sigma_m")
        self.sigma_a = _check_positive(sigma_accel_mps2, "sigma_accel_mps2")
        self.gate_m = _check_positive(gate_m, "gate_m")
        self.max_gap_s = _check_positive(max_gap_s, "max_gap_s")
        self.dedup_tol_s = _check_positive(dedup_tol_s, "dedup_tol_s")
        self.horizon_s = _check_positive(horizon_s, "horizon_s")
        self.plane_dt_s = _check_positive(plane_dt_s, "plane_dt_s")
        self.min_points = int(min_points)
        self.estimate_spin = bool(estimate_spin)
        self.backend = _native.resolve_backend("estimation", backend)
        self.params = params if params is not None else BallParams()
        self.table = table if table is not None else TableGeometry()
        pk = pack_params(self.params, self.table)
        self.g = float(pk[_IDX["gravity_mps2"]])
        self.kd = float(pk[_IDX["drag_k_per_m"]])
        self.km = float(pk[_IDX["magnus_k"]])
        self.radius_m = float(self.params.radius_m)
        self.contact_z_m = float(self.table.surface_height_m) + self.radius_m
        self.half_length_m = 0.5 * float(self.table.length_m)
        self.half_width_m = 0.5 * float(self.table.width_m)
        self.e_bounce, self.k_bounce = PhysicsModel(self.params, self.table, backend="numpy").spinless_bounce_ratios()
        n, k = self.n, self.capacity
        self.buf_t = np.full((n, k), np.nan)
        self.buf_p = np.zeros((n, k, 3))
        self._rows = np.arange(n)[:, None]
        self.head = np.zeros(n, dtype=np.int64)
        self.seg_start = np.full(n, -np.inf)
        self.newest_t = np.full(n, -np.inf)
        self.t_now = np.zeros(n)
        self.n_points = np.zeros(n, dtype=np.int64)
        self.coef = np.zeros((n, 3, 3))  # [env, (p0, v0, a), axis] at t_fit
        self.t_fit = np.zeros(n)
        self.valid = np.zeros(n, dtype=bool)
        self.after_bounce = np.zeros(n, dtype=bool)
        self.spin = np.zeros((n, 3))

    # ------------------------------------------------------------------------------------------ tracks
    def _mask(self, mask) -> np.ndarray:
        if mask is None:
            return np.ones(self.n, dtype=bool)
        m = np.asarray(mask)
        if m.shape != (self.n,) or m.dtype != np.bool_:
            raise ValueError(f"mask: expected a bool array of shape ({self.n},), got {m.dtype} {m.shape}")
        return m

    def reset(self, mask=None) -> None:
        """Forgets the tracks of the environments where `mask` is True (all when None)."""
        m = self._mask(mask)
        self.buf_t[m] = np.nan
        self.head[m] = 0
        self.seg_start[m] = -np.inf
        self.newest_t[m] = -np.inf
        self.n_points[m] = 0
        self.valid[m] = False
        self.after_bounce[m] = False
        self.t_fit[m] = 0.0
        self.coef[m] = 0.0
        self.spin[m] = 0.0

    def update(self, detections, t_now_s) -> None:
        """Ingests observation-format detections [N, H, 5] (x, y, z, age_s, valid) seen at time `t_now_s`
        (scalar or [N], the tracker's clock) and refits every track."""
        det = np.asarray(detections, dtype=np.float64)
        if det.ndim != 3 or det.shape[0] != self.n or det.shape[2] != 5:
            raise ValueError(f"detections: expected shape ({self.n}, H, 5) (x, y, z, age_s, valid), got {det.shape}")
        t_now = self._times(t_now_s)
        if not np.all(np.isfinite(det)):
            raise ValueError("detections: contains NaN or Inf")
        valid = det[..., 4] > 0.5
        self.ingest(t_now[:, None] - det[..., 3], det[..., :3], valid, t_now)

    def _times(self, t_now_s) -> np.ndarray:
        t = np.broadcast_to(np.asarray(t_now_s, dtype=np.float64), (self.n,)).copy()
        if not np.all(np.isfinite(t)):
            raise ValueError("t_now_s: expected finite times")
        return t

    def ingest(self, t_capture_s, position_m, valid, t_now_s) -> None:
        """Ingests detections [N, M] (capture times), [N, M, 3] (positions), [N, M] (bool) at `t_now_s`."""
        tc = np.asarray(t_capture_s, dtype=np.float64)
        pos = np.asarray(position_m, dtype=np.float64)
        ok = np.asarray(valid, dtype=bool)
        if tc.ndim != 2 or tc.shape[0] != self.n or pos.shape != tc.shape + (3,) or ok.shape != tc.shape:
            raise ValueError(
                f"t_capture_s/position_m/valid: expected shapes ({self.n}, M), ({self.n}, M, 3), ({self.n}, M), "
                f"got {tc.shape}, {pos.shape}, {ok.shape}"
            )
        t_now = self._times(t_now_s)
        ok = ok & np.isfinite(tc) & np.all(np.isfinite(pos), axis=-1)
        # duplicates: the observation repeats a detection for a few steps, so it is among the most recently
        # ingested ones of its env (the newest max(16, 2 M) ring entries are compared, not the whole ring)
        width = min(self.capacity, max(16, 2 * tc.shape[1]))
        recent = self.buf_t[self._rows, (self.head[:, None] - 1 - np.arange(width)) % self.capacity]
        dup = np.any(np.abs(tc[:, :, None] - recent[:, None, :]) < self.dedup_tol_s, axis=2)
        fresh = ok & ~dup
        if fresh.any():
            self._segment_breaks(np.where(fresh, tc, np.nan), pos)
            self._insert(np.where(fresh, tc, np.nan), pos, fresh)
        self.t_now = t_now
        self._fit()

    def _segment_breaks(self, tc: np.ndarray, pos: np.ndarray) -> None:
        """New segment starts from the fresh detections (NaN time = not fresh), against the previous fit."""
        fresh = np.isfinite(tc)
        tau = tc - self.t_fit[:, None]
        p0, v0, a = self.coef[:, 0], self.coef[:, 1], self.coef[:, 2]
        pred = p0[:, None] + v0[:, None] * tau[..., None] + 0.5 * a[:, None] * (tau * tau)[..., None]
        resid = np.linalg.norm(pos - pred, axis=-1)
        has_track = np.isfinite(self.newest_t)
        gap = has_track[:, None] & (tc - self.newest_t[:, None] > self.max_gap_s)
        jump = self.valid[:, None] & (resid > self.gate_m)
        # bounce: first time after the newest point that the fitted arc descends through the contact height
        tb = self._bounce_time()
        bounce = self.valid[:, None] & np.isfinite(tb)[:, None] & (tc > tb[:, None])
        broken = fresh & (gap | jump | bounce)
        start = np.where(bounce, tb[:, None], tc)
        start = np.where(broken, start, np.inf)
        first = np.argmin(start, axis=1)
        rows = np.arange(self.n)
        hit = np.isfinite(start[rows, first])
        self.seg_start[hit] = start[rows, first][hit]
        # a pure bounce (not also a jump or a gap) keeps the old fit usable until the new segment is valid
        pure = (bounce & ~gap & ~jump)[rows, first]
        self.after_bounce = np.where(hit, pure, self.after_bounce)
        self.newest_t = np.fmax(self.newest_t, np.nanmax(np.where(fresh, tc, -np.inf), axis=1))

    def _bounce_time(self) -> np.ndarray:
        """Absolute time [N] when the current fit's arc reaches z_c descending over the table (NaN if not)."""
        pz, vz, az = self.coef[:, 0, 2], self.coef[:, 1, 2], self.coef[:, 2, 2]
        c = pz - self.contact_z_m
        t_from = self.newest_t - self.t_fit  # only after the newest fitted point
        with np.errstate(invalid="ignore", divide="ignore"):
            # descending root of 0.5 az tau^2 + vz tau + c = 0 (az < 0): the larger root
            disc = vz * vz - 2.0 * az * c
            root = np.where(az < -1e-9, (-vz - np.sqrt(np.maximum(disc, 0.0))) / az, -c / np.where(vz < 0, vz, np.nan))
            root = np.where(disc >= 0, root, np.nan)
        tau = np.where(np.isfinite(root) & (root >= t_from), root, np.nan)
        x = self.coef[:, 0, 0] + self.coef[:, 1, 0] * tau + 0.5 * self.coef[:, 2, 0] * tau * tau
        y = self.coef[:, 0, 1] + self.coef[:, 1, 1] * tau + 0.5 * self.coef[:, 2, 1] * tau * tau
        over = (np.abs(x) <= self.half_length_m) & (np.abs(y) <= self.half_width_m)
        return np.where(over, self.t_fit + tau, np.nan)

    def _insert(self, tc: np.ndarray, pos: np.ndarray, fresh: np.ndarray) -> None:
        w, j = np.nonzero(fresh)
        if w.size == 0:
            return
        rank = np.arange(w.size) - np.searchsorted(w, w)
        slot = (self.head[w] + rank) % self.capacity
        self.buf_t[w, slot] = tc[w, j]
        self.buf_p[w, slot] = pos[w, j]
        self.head += np.bincount(w, minlength=self.n)

    def _normal_equations(self, tau, use):
        """Normal matrix (inverted) [N, 3, 3] and right-hand side [N, 3 (p0, v0, a), 3 axes] of the weighted
        fit with basis (1, tau, tau^2 / 2), the acceleration prior's precision already on the diagonal."""
        w = use.astype(np.float64) / self.sigma_m**2
        tau = np.where(use, tau, 0.0)
        weighted = np.stack([w, w * tau, 0.5 * w * tau * tau], axis=1)  # [N, 3, K]
        basis = np.stack([np.ones_like(tau), tau, 0.5 * tau * tau], axis=2)  # [N, K, 3]
        mat = weighted @ basis
        mat[:, 2, 2] += 1.0 / self.sigma_a**2
        # a vanishing ridge on p0 and v0 keeps tracks with 0 or 1 point solvable (they are not valid anyway)
        mat[:, 0, 0] += 1e-9
        mat[:, 1, 1] += 1e-6
        return np.linalg.inv(mat), weighted @ self.buf_p

    def _solve(self, inv, rhs, a_prior):
        """Coefficients [N, 3 (p0, v0, a), 3 axes] for the acceleration prior mean `a_prior` [N, 3]."""
        rhs = rhs.copy()
        rhs[:, 2, :] += a_prior / self.sigma_a**2
        return inv @ rhs

    def _fit(self) -> None:
        use = np.isfinite(self.buf_t)
        use &= self.buf_t >= self.seg_start[:, None] - 1e-9
        use &= self.buf_t >= self.t_now[:, None] - self.window_s
        n_points = use.sum(axis=1)
        # reference time: the segment's newest detection (later times are predictions, see state())
        t_ref = np.where(n_points > 0, np.max(np.where(use, self.buf_t, -np.inf), axis=1), self.t_now)
        tau = self.buf_t - t_ref[:, None]
        gravity = np.array([0.0, 0.0, -self.g])
        inv, rhs = self._normal_equations(tau, use)
        coef = self._solve(inv, rhs, gravity)
        v = coef[:, 1]
        coef = self._solve(inv, rhs, gravity - self.kd * np.linalg.norm(v, axis=1, keepdims=True) * v)
        v = coef[:, 1]
        a_gd = gravity - self.kd * np.linalg.norm(v, axis=1, keepdims=True) * v
        if self.estimate_spin:
            speed2 = np.maximum(np.sum(v * v, axis=1, keepdims=True), 1e-6)
            spin = np.cross(v, coef[:, 2] - a_gd) / (self.km * speed2)
        else:
            spin = np.zeros((self.n, 3))
        valid = n_points >= self.min_points
        # right after a bounce the new segment has too few points: the pre-bounce fit stays in use (its
        # predictions go through the bounce), other breaks (new ball, hit) leave the track invalid until then
        keep = self.after_bounce & ~valid & self.valid
        self.after_bounce &= ~valid
        take = ~keep
        self.coef[take] = coef[take]
        self.t_fit[take] = t_ref[take]
        self.spin[take] = spin[take]
        self.valid = valid | keep
        self.n_points = n_points

    # ------------------------------------------------------------------------------------------ outputs
    def fit_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fitted ball states [N, 9] at the fit's reference time (the segment's newest detection), those times
        [N], and valid [N]."""
        out = np.concatenate([self.coef[:, 0], self.coef[:, 1], self.spin], axis=1)
        return out, self.t_fit.copy(), self.valid.copy()

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Estimated ball states [N, 9] at the last update time ("now") and valid [N]: the fit extrapolated
        from its reference time with its constant acceleration, through a table bounce when the arc meets the
        contact height over the table in between (spinless rebound v_xy' = k v_xy, vz' = -e vz, then a = -g e_z)."""
        st, t_ref, valid = self.fit_state()
        tau = np.maximum(self.t_now - t_ref, 0.0)
        p0, v0, a = self.coef[:, 0], self.coef[:, 1], self.coef[:, 2]
        tb = self._bounce_time() - t_ref
        bounced = np.isfinite(tb) & (tb <= tau)
        tb = np.where(bounced, tb, tau)
        p = p0 + v0 * tb[:, None] + 0.5 * a * (tb * tb)[:, None]
        v = v0 + a * tb[:, None]
        rest = (tau - tb)[:, None]
        v_after = v * np.array([self.k_bounce, self.k_bounce, -self.e_bounce])
        a_after = np.array([0.0, 0.0, -self.g])
        p = np.where(bounced[:, None], p + v_after * rest + 0.5 * a_after * rest * rest, p)
        v = np.where(bounced[:, None], v_after + a_after * rest, v)
        st[:, :3], st[:, 3:6] = p, v
        return st, valid

    def predict_plane_crossing(self, x_plane_m) -> BatchedCrossing:
        """Next crossing of x = `x_plane_m` (scalar or [N]) by the ball physics from `state()` (see the
        docs/estimation.md, `robot_rt.estimation.batched`): absolute time [N], position/velocity/spin [N, 3], found [N]."""
        return plane_crossings(self, x_plane_m)


def plane_crossings(tracker, x_plane_m) -> BatchedCrossing:
    """The next crossings of x = `x_plane_m` (scalar or [N]) of a batched tracker's fitted states (`fit_state()`:
    states [N, 9], their times [N], valid [N]), flown by `crossing_batch` with the tracker's `params`, `table`,
    `horizon_s`, `plane_dt_s` and `backend`; shared by `BatchedBallTracker` and `batched_ukf.BatchedUKFTracker`."""
    n = tracker.n
    if np.ndim(x_plane_m) not in (0, 1) or (np.ndim(x_plane_m) == 1 and np.shape(x_plane_m) != (n,)):
        raise ValueError(f"x_plane_m: expected a scalar or shape ({n},), got {np.shape(x_plane_m)}")
    planes = np.broadcast_to(np.asarray(x_plane_m, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(planes)):
        raise ValueError("x_plane_m: expected finite values")
    states, t_ref, valid = tracker.fit_state()
    tau, cross = crossing_batch(
        states, valid, planes, tracker.params, tracker.table, tracker.horizon_s, tracker.plane_dt_s, tracker.backend
    )
    found = np.isfinite(tau)
    return BatchedCrossing(t_ref + tau, cross[:, :3], cross[:, 3:6], cross[:, 6:9], found)


def crossing_batch(states, valid, planes, params, table, horizon_s, dt_s, backend="auto"):
    """(tau_s [N], state at the crossing [N, 9]) of balls `states` [N, 9] with per-ball planes [N]; NaN where
    the ball is not valid or does not reach its plane within `horizon_s` (see docs/estimation.md, `robot_rt.estimation.batched`)."""
    n = states.shape[0]
    tau = np.full(n, np.nan)
    out = np.full((n, 9), np.nan)
    room_l, room_w, room_h = table.room_half_length_m, table.room_half_width_m, table.room_height_m
    ok = valid & np.all(np.isfinite(states), axis=1)
    ok &= (np.abs(states[:, 0]) < room_l) & (np.abs(states[:, 1]) < room_w)
    ok &= (states[:, 2] > params.radius_m) & (states[:, 2] < room_h)
    ok &= (states[:, 0] < planes) & (states[:, 3] > 0)  # past its plane or flying away: no next crossing
    if not ok.any():
        return tau, out
    x1 = float(planes[ok].min())
    uniform = bool(np.all(planes[ok] == x1))
    if not uniform and x1 <= 0.5 * table.length_m + params.radius_m:
        raise ValueError(
            f"x_plane_m: per-environment planes must lie beyond the table end (> {0.5 * table.length_m} m), got {x1}"
        )
    # stage 1: every ball to the nearest plane (balls already past it start stage 2 where they are)
    before = ok & (states[:, 0] < x1)
    t1 = np.zeros(n)
    s1 = states.copy()
    if before.any():
        r = time_to_plane_batch(
            np.ascontiguousarray(states[before]), x1, params, table, dt_s=dt_s, horizon_s=horizon_s, backend=backend
        )
        t1[before] = np.asarray(r.t_s, dtype=np.float64)
        s1[before] = np.asarray(r.state, dtype=np.float64)
    reached = ok & np.isfinite(t1)
    at_plane = reached & (planes == x1)
    tau[at_plane] = t1[at_plane]
    out[at_plane] = s1[at_plane]
    far = np.nonzero(reached & (planes > x1))[0]
    if far.size:
        # stage 2: free flight, moved so that the ball starts (planes - x1) before x1 and clear of table and net
        s2 = s1[far].copy()
        shift_x = planes[far] - x1
        # 2 m sideways, away from the table: outwards for |y| > 1 m, else along vy (so |y| only grows)
        side = np.where(np.abs(s2[:, 1]) > 1.0, s2[:, 1], s2[:, 4])
        shift_y = np.where(side >= 0, 2.0, -2.0)
        s2[:, 0] -= shift_x
        s2[:, 1] += shift_y
        inside = np.all(np.isfinite(s2), axis=1) & (np.abs(s2[:, 0]) < room_l) & (np.abs(s2[:, 1]) < room_w)
        inside &= (s2[:, 2] > params.radius_m) & (s2[:, 2] < room_h)
        if inside.any():
            r = time_to_plane_batch(
                np.ascontiguousarray(s2[inside]),
                x1,
                params,
                table,
                dt_s=dt_s,
                horizon_s=horizon_s,
                backend=backend,
            )
            idx = far[inside]
            t2 = np.asarray(r.t_s, dtype=np.float64)
            st = np.asarray(r.state, dtype=np.float64).copy()
            st[:, 0] += shift_x[inside]
            st[:, 1] -= shift_y[inside]
            tau[idx] = t1[idx] + t2
            out[idx] = np.where(np.isfinite(t2)[:, None], st, np.nan)
    late = ~(tau <= horizon_s)  # the two stages together stay within one horizon
    tau[late] = np.nan
    out[late] = np.nan
    return tau, out
