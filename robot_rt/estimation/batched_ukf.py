"""One `BallUKF` per environment behind the batched tracker's interface (`BatchedBallTracker`), so that a batched
policy can plan its contacts from the physics filter (drag, Magnus lift, spin, table bounce) instead of the
constant-acceleration fit. Design notes: docs/estimation.md, section `robot_rt.estimation.batched_ukf`."""

from __future__ import annotations

import numpy as np

from robot_rt.ballistics import BallParams, TableGeometry, pack_params
from robot_rt.ballistics.params import PARAM_NAMES
from robot_rt.ballistics.reference import rk4_step

from .batched import BatchedBallTracker, BatchedCrossing, _check_positive, plane_crossings
from .ukf import BallUKF, UKFConfig

__all__ = ["TRACKERS", "BatchedUKFTracker", "make_batched_tracker"]

TRACKERS = ("fit", "ukf")
_SAME_CAPTURE_S = 1e-5  # capture times in the same or a neighbouring bucket are one detection shown again (the
# observation's float32 ages move a capture time by ~1e-8 s between steps; frames are >= 5 ms apart)
_FED_KEEP = 64  # capture times remembered per environment before the old ones are pruned
_TRACKING = (
    "accepted",
    "initialised",
    "reinitialised",
)  # BatchedBallTracker (constant-acceleration fit), BatchedUKFTracker

_IDX = {name: i for i, name in enumerate(PARAM_NAMES)}


class BatchedUKFTracker:
    """Ball tracks of `num_envs` environments, one unscented Kalman filter each (`robot_rt.estimation.ukf`).

    `update(detections [N, K, 5], t_now_s [N])` feeds each environment's detections newer than the last one fed
    (rows (x, y, z, age_s, valid), capture time t_now - age, in capture order); `state()` gives the filters' states
    [N, 9] at their newest accepted detection and `valid` [N]; `predict_plane_crossing` flies those states to a
    plane with the ball physics (the same batched flight as `BatchedBallTracker`). A track is valid while its newest
    detection was accepted (not gated or pending a re-initialisation) and is at most `config.max_gap_s` old."""

    def __init__(
        self,
        num_envs: int,
        params: BallParams | None = None,
        table: TableGeometry | None = None,
        config: UKFConfig | None = None,
        *,
        horizon_s: float = 1.0,
        plane_dt_s: float = 2e-3,
        backend: str = "auto",
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
        self.n = int(num_envs)
        self.params = params if params is not None else BallParams()
        self.table = table if table is not None else TableGeometry()
        self.config = config if config is not None else UKFConfig()
        self.horizon_s = _check_positive(horizon_s, "horizon_s")
        self.plane_dt_s = _check_positive(plane_dt_s, "plane_dt_s")
        self.backend = backend
        pk = pack_params(self.params, self.table)
        self._pk = pk
        self.g = float(pk[_IDX["gravity_mps2"]])  # what BatchedScriptedPolicy.choose_hit_point reads
        self.radius_m = float(self.params.radius_m)
        self.contact_z_m = float(self.table.surface_height_m) + self.radius_m
        self.filters = [BallUKF(self.params, self.config, backend=backend) for _ in range(self.n)]
        self._fed: list[set] = [set() for _ in range(self.n)]  # capture times fed (in _SAME_CAPTURE_S units)
        self.accepted = np.zeros(self.n, dtype=bool)  # the newest detection fed was accepted by the filter
        self._states = np.zeros((self.n, 9))  # each filter's mean and its time (NaN: no track), kept at update
        self._t_ref = np.full(self.n, np.nan)
        self.t_now = np.zeros(self.n)

    def reset(self, mask=None) -> None:
        """Forgets the tracks of the environments where `mask` [N] bool is True (all when None)."""
        m = np.ones(self.n, dtype=bool) if mask is None else np.asarray(mask)
        if m.shape != (self.n,) or m.dtype != np.bool_:
            raise ValueError(f"mask: expected a bool array of shape ({self.n},), got {m.dtype} {m.shape}")
        for i in np.nonzero(m)[0]:
            self.filters[i].reset()
        for i in np.nonzero(m)[0]:
            self._fed[i] = set()
        self.accepted[m] = False
        self._states[m] = 0.0
        self._t_ref[m] = np.nan
        self.t_now[m] = 0.0

    def update(self, detections, t_now_s) -> None:
        """Feeds each environment's detections (rows (x, y, z, age_s, valid), capture time t_now - age) that were not
        fed before, in capture order; a late arrival older than detections already fed is replayed into place by the
        filter (`BallUKF.update`)."""
        det = np.asarray(detections, dtype=np.float64)
        if det.ndim != 3 or det.shape[0] != self.n or det.shape[2] != 5:
            raise ValueError(f"detections: expected shape ({self.n}, K, 5), got {det.shape}")
        t_now = np.broadcast_to(np.asarray(t_now_s, dtype=np.float64), (self.n,))
        if not (np.all(np.isfinite(det)) and np.all(np.isfinite(t_now))):
            raise ValueError("detections, t_now_s: expected finite values")
        self.t_now = t_now.copy()
        t_cap = t_now[:, None] - det[:, :, 3]
        keys = np.round(t_cap / _SAME_CAPTURE_S).astype(np.int64)  # one capture time, however often it is shown
        valid = det[:, :, 4] > 0.5
        for i in np.nonzero(valid.any(axis=1))[0]:
            fed = self._fed[i]
            rows = [j for j in np.nonzero(valid[i])[0] if not {keys[i, j] - 1, keys[i, j], keys[i, j] + 1} & fed]
            if not rows:
                continue
            f = self.filters[i]
            for j in sorted(rows, key=lambda j: t_cap[i, j]):
                status = f.update(float(t_cap[i, j]), det[i, j, :3]).status
                self.accepted[i] = status in _TRACKING
                fed.add(int(keys[i, j]))
            # the filter changes only here (and at reset): keep its mean and time for fit_state()
            if f.initialized:
                self._states[i], self._t_ref[i] = f.state, f.time_s
            else:  # pending a (re-)initialisation: no track
                self._states[i], self._t_ref[i] = 0.0, np.nan
            if len(fed) > _FED_KEEP:  # forget captures too old to be shown again
                oldest = int(np.round((t_now[i] - self.config.history_s) / _SAME_CAPTURE_S))
                self._fed[i] = {k for k in fed if k >= oldest}

    def fit_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(states [N, 9] at their own times, those times [N], valid [N])."""
        t_ref = self._t_ref
        valid = (
            self.accepted
            & np.isfinite(t_ref)
            & (self.t_now - np.nan_to_num(t_ref, nan=-np.inf) <= self.config.max_gap_s)
        )
        return self._states.copy(), np.nan_to_num(t_ref), valid

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """States [N, 9] at the last update time ("now", as `BatchedBallTracker.state`): each valid filter's mean
        flown from its newest accepted detection to now (RK4 in steps of at most `config.max_step_s`; a flight that
        meets the table in between takes the filter's own prediction, bounce included), and valid [N]."""
        states, t_ref, valid = self.fit_state()
        out = states.copy()
        dt = np.where(valid, np.maximum(self.t_now - t_ref, 0.0), 0.0)
        idx = np.nonzero(dt > 0.0)[0]
        if idx.size:
            substeps = max(1, int(np.ceil(dt[idx].max() / self.config.max_step_s - 1e-9)))
            h = dt[idx] / substeps
            y = states[idx]
            bounced = np.zeros(idx.size, dtype=bool)
            for _ in range(substeps):
                nxt = rk4_step(y, h, self._pk)
                bounced |= (y[:, 2] > self.contact_z_m) & (nxt[:, 2] <= self.contact_z_m) & (y[:, 5] < 0.0)
                y = nxt
            out[idx] = y
            for i in idx[bounced]:  # the filter's own flight through the bounce (rare: a bounce within ~20 ms)
                out[i] = self.filters[i].predict(self.t_now[i])[0]
        return out, valid

    def predict_plane_crossing(self, x_plane_m) -> BatchedCrossing:
        """Next crossing of x = `x_plane_m` (scalar or [N]) from the filters' states: absolute time [N],
        position/velocity/spin [N, 3], found [N] (as `BatchedBallTracker.predict_plane_crossing`)."""
        return plane_crossings(self, x_plane_m)


def make_batched_tracker(kind: str, num_envs: int, **kwargs):
    """A batched ball tracker by name: 'fit' (`BatchedBallTracker`, keyword arguments its own) or 'ukf'
    (`BatchedUKFTracker`; keyword arguments go to `UKFConfig`)."""
    if kind == "fit":
        return BatchedBallTracker(num_envs, **kwargs)
    if kind == "ukf":
        return BatchedUKFTracker(num_envs, config=UKFConfig(**kwargs))
    raise ValueError(f"tracker: expected one of {TRACKERS}, got {kind!r}")
