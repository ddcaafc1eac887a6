"""NumPy reference of the ball-flight equations (the backends' ground truth; float64, vectorised over balls).

Design notes: docs/ballistics.md, section `robot_rt.ballistics.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .params import BallParams, pack_params

__all__ = [
    "KIND_NONE",
    "KIND_TABLE",
    "KIND_NET",
    "KIND_FLOOR",
    "KIND_PLANE",
    "KIND_NAMES",
    "MAX_CONTACTS_PER_STEP",
    "ContactEvent",
    "acceleration",
    "derivative",
    "rk4_step",
    "table_bounce",
    "floor_bounce",
    "net_bounce",
    "advance_step",
    "simulate_batch_reference",
]

KIND_NONE, KIND_TABLE, KIND_NET, KIND_FLOOR, KIND_PLANE = 0, 1, 2, 3, 4
KIND_NAMES = {KIND_TABLE: "table", KIND_NET: "net", KIND_FLOOR: "floor", KIND_PLANE: "plane"}
MAX_CONTACTS_PER_STEP = 4
ROOT_MAX_ITER = 40
ROOT_TOL_M = 1e-12

# indices into the packed parameter vector (params.PARAM_NAMES)
_G, _KD, _KM, _DECAY, _R, _ET, _MUT, _EF, _MUF, _EN, _NT, _TZ, _THL, _THW, _NTOP, _NHL = range(16)


@dataclass
class ContactEvent:
    """A contact located inside a step: time, surface and the ball state just before/after the rebound."""

    t_s: float
    kind: str
    state_before: np.ndarray
    state_after: np.ndarray
    ball: int = 0


def _pk(params, table=None) -> np.ndarray:
    if isinstance(params, np.ndarray):
        return params
    return pack_params(params, table)


def derivative(state: np.ndarray, params: BallParams | np.ndarray | None = None) -> np.ndarray:
    """d/dt of the 9-state (``[..., 9]``)."""
    pk = _pk(params)
    y = np.asarray(state, dtype=np.float64)
    vx, vy, vz = y[..., 3], y[..., 4], y[..., 5]
    wx, wy, wz = y[..., 6], y[..., 7], y[..., 8]
    speed = np.sqrt(vx * vx + vy * vy + vz * vz)
    kd, km = pk[_KD], pk[_KM]
    ax = km * (wy * vz - wz * vy) - speed * (kd * vx)
    ay = km * (wz * vx - wx * vz) - speed * (kd * vy)
    az = (km * (wx * vy - wy * vx) - pk[_G]) - speed * (kd * vz)
    lam = pk[_DECAY]
    return np.stack([vx, vy, vz, ax, ay, az, -lam * wx, -lam * wy, -lam * wz], axis=-1)


def acceleration(state: np.ndarray, params: BallParams | np.ndarray | None = None) -> np.ndarray:
    """Linear acceleration of the ball centre (``[..., 3]``, m/s^2): gravity, quadratic drag, Magnus."""
    return derivative(state, params)[..., 3:6]


def rk4_step(state: np.ndarray, dt_s, params: BallParams | np.ndarray | None = None) -> np.ndarray:
    """One classic RK4 step of free flight (no contacts). ``dt_s`` is a scalar or one step per ball."""
    pk = _pk(params)
    y = np.asarray(state, dtype=np.float64)
    h = np.asarray(dt_s, dtype=np.float64)
    if h.ndim:
        h = h[..., None]
    k1 = derivative(y, pk)
    k2 = derivative(y + (0.5 * h) * k1, pk)
    k3 = derivative(y + (0.5 * h) * k2, pk)
    k4 = derivative(y + h * k3, pk)
    return y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _nakashima(y: np.ndarray, e: float, mu: float, r: float, z_contact: float) -> np.ndarray:
    out = np.array(y, dtype=np.float64, copy=True)
    vx, vy, vz = y[..., 3], y[..., 4], y[..., 5]
    wx, wy = y[..., 6], y[..., 7]
    vtx = vx - r * wy
    vty = vy + r * wx
    vt = np.sqrt(vtx * vtx + vty * vty)
    alpha = np.minimum(mu * (1.0 + e) * np.abs(vz) / np.maximum(vt, 1e-30), 0.4)
    out[..., 2] = z_contact
    out[..., 3] = vx - alpha * vtx
    out[..., 4] = vy - alpha * vty
    out[..., 5] = -e * vz
    out[..., 6] = wx - (1.5 * alpha / r) * vty
    out[..., 7] = wy + (1.5 * alpha / r) * vtx
    return out


def table_bounce(state: np.ndarray, params: BallParams | np.ndarray | None = None, table=None) -> np.ndarray:
    """Rebound on the table top (Nakashima et al. 2010); the position is put on the surface (z = z_t + r)."""
    pk = _pk(params, table)
    return _nakashima(state, pk[_ET], pk[_MUT], pk[_R], pk[_TZ] + pk[_R])


def floor_bounce(state: np.ndarray, params: BallParams | np.ndarray | None = None, table=None) -> np.ndarray:
    """Rebound on the floor (same model, floor restitution/friction); z is put at r."""
    pk = _pk(params, table)
    return _nakashima(state, pk[_EF], pk[_MUF], pk[_R], pk[_R])


def net_bounce(state: np.ndarray, params: BallParams | np.ndarray | None = None, table=None) -> np.ndarray:
    """Net hit: vx -> -e_net vx, (vy, vz) scaled by the tangential retention; x is put at +-r."""
    pk = _pk(params, table)
    out = np.array(state, dtype=np.float64, copy=True)
    s = np.where(out[..., 0] >= 0.0, 1.0, -1.0)
    out[..., 0] = s * pk[_R]
    out[..., 3] = -pk[_EN] * out[..., 3]
    out[..., 4] = pk[_NT] * out[..., 4]
    out[..., 5] = pk[_NT] * out[..., 5]
    return out


def _gap(y: np.ndarray, kind: int, pk: np.ndarray, side: np.ndarray, plane_x: float) -> np.ndarray:
    if kind == KIND_TABLE:
        return y[..., 2] - (pk[_TZ] + pk[_R])
    if kind == KIND_FLOOR:
        return y[..., 2] - pk[_R]
    if kind == KIND_NET:
        return side * y[..., 0] - pk[_R]
    return side * (plane_x - y[..., 0])  # KIND_PLANE


def _geometry_ok(y: np.ndarray, kind: int, pk: np.ndarray) -> np.ndarray:
    if kind == KIND_TABLE:
        return (np.abs(y[..., 0]) <= pk[_THL]) & (np.abs(y[..., 1]) <= pk[_THW])
    if kind == KIND_NET:
        return (np.abs(y[..., 1]) <= pk[_NHL]) & (y[..., 2] <= pk[_NTOP]) & (y[..., 2] > pk[_TZ])
    return np.ones(y.shape[:-1], dtype=bool)


def _root_find(y0, h, g0, g1, kind, pk, side, plane_x):
    """Illinois regula falsi for tau in (0, h] with g(RK4(y0, tau)) = 0, g0 > 0 >= g1 (all lanes)."""
    a = np.zeros_like(h)
    fa = g0.copy()
    b = h.copy()
    fb = g1.copy()
    last = np.zeros(h.shape, dtype=np.int8)
    c = b.copy()
    done = np.abs(fb) <= ROOT_TOL_M
    for _ in range(ROOT_MAX_ITER):
        if done.all():
            break
        cn = (a * fb - b * fa) / (fb - fa)
        cn = np.clip(cn, a, b)
        fc = _gap(rk4_step(y0, cn, pk), kind, pk, side, plane_x)
        upd = ~done
        c = np.where(upd, cn, c)
        conv = upd & (np.abs(fc) <= ROOT_TOL_M)
        neg = upd & ~conv & (fc <= 0.0)
        pos = upd & ~conv & (fc > 0.0)
        b = np.where(neg, cn, b)
        fb = np.where(neg, fc, fb)
        fa = np.where(neg & (last == -1), 0.5 * fa, fa)
        a = np.where(pos, cn, a)
        fa = np.where(pos, fc, fa)
        fb = np.where(pos & (last == 1), 0.5 * fb, fb)
        last = np.where(neg, -1, np.where(pos, 1, last)).astype(np.int8)
        done = done | conv | (upd & ((b - a) <= 1e-15))
    return c


_BOUNCE = {KIND_TABLE: table_bounce, KIND_FLOOR: floor_bounce, KIND_NET: net_bounce}


def _project(y: np.ndarray, kind: int, pk: np.ndarray, side: np.ndarray, plane_x: float) -> np.ndarray:
    if kind == KIND_PLANE:
        y = y.copy()
        y[..., 0] = plane_x
        return y
    return y


def advance_step(y, h, pk, plane_x=np.nan, stop_kind=KIND_NONE, t0=None):
    """Advance balls ``y [N, 9]`` by ``h`` (scalar) with contacts located inside the step.

    Returns ``(y_new, stopped, t_stop, y_stop, events)``: lanes whose first event is ``stop_kind`` stop at the
    (pre-rebound) crossing state ``y_stop`` at time ``t0 + t_stop``; ``events`` is a list of
    ``(lane_idx, t_in_step, kind, y_before, y_after)`` arrays, one entry per contact round.
    """
    n = y.shape[0]
    y = np.array(y, dtype=np.float64, copy=True)
    rem = np.full(n, float(h))
    elapsed = np.zeros(n)
    stopped = np.zeros(n, dtype=bool)
    t_stop = np.full(n, np.nan)
    y_stop = np.full_like(y, np.nan)
    events = []
    lanes = np.arange(n)
    kinds = [KIND_TABLE, KIND_NET, KIND_FLOOR]
    if stop_kind == KIND_PLANE:
        kinds.append(KIND_PLANE)
    y_start = y.copy()
    for rnd in range(MAX_CONTACTS_PER_STEP + 1):
        if lanes.size == 0:
            break
        y0 = y[lanes]
        hh = rem[lanes]
        y1 = rk4_step(y0, hh, pk)
        if rnd == MAX_CONTACTS_PER_STEP:
            y[lanes] = y1
            break
        best_tau = np.full(lanes.size, np.inf)
        best_kind = np.zeros(lanes.size, dtype=np.int64)
        sx = np.where(y0[:, 0] >= 0.0, 1.0, -1.0)
        sp = np.sign(plane_x - y0[:, 0]) if stop_kind == KIND_PLANE else sx
        for kind in kinds:
            side = sp if kind == KIND_PLANE else sx
            g0 = _gap(y0, kind, pk, side, plane_x)
            g1 = _gap(y1, kind, pk, side, plane_x)
            cand = (g0 > 0.0) & (g1 <= 0.0)
            if not cand.any():
                continue
            ci = np.nonzero(cand)[0]
            tau = _root_find(y0[ci], hh[ci], g0[ci], g1[ci], kind, pk, side[ci], plane_x)
            yc = rk4_step(y0[ci], tau, pk)
            ok = _geometry_ok(yc, kind, pk) & (tau < best_tau[ci])
            best_tau[ci[ok]] = tau[ok]
            best_kind[ci[ok]] = kind
        hit = best_kind != KIND_NONE
        free = ~hit
        y[lanes[free]] = y1[free]
        if not hit.any():
            break
        hi = np.nonzero(hit)[0]
        li = lanes[hi]
        tau = best_tau[hi]
        yb = rk4_step(y0[hi], tau, pk)
        ya = np.empty_like(yb)
        knd = best_kind[hi]
        for kind in np.unique(knd):
            m = knd == kind
            if kind == KIND_PLANE:
                ya[m] = _project(yb[m], KIND_PLANE, pk, None, plane_x)
            else:
                if kind == KIND_TABLE:
                    yb[m, 2] = pk[_TZ] + pk[_R]
                elif kind == KIND_FLOOR:
                    yb[m, 2] = pk[_R]
                else:
                    yb[m, 0] = np.where(yb[m, 0] >= 0, 1.0, -1.0) * pk[_R]
                ya[m] = _BOUNCE[kind](yb[m], pk)
        elapsed[li] += tau
        stop = knd == stop_kind
        if stop.any():
            si = li[stop]
            stopped[si] = True
            t_stop[si] = elapsed[si]
            ys = yb[stop].copy()
            if stop_kind == KIND_PLANE:
                ys = ya[stop]
            y_stop[si] = ys
            y[si] = ys
        go = ~stop
        if go.any():
            events.append((li[go], elapsed[li[go]], knd[go], yb[go], ya[go]))
            y[li[go]] = ya[go]
            rem[li[go]] = np.maximum(rem[li[go]] - tau[go], 0.0)
        lanes = li[go]
    # resting contact: a lane that started on the table/floor and ended below it (a rebound too small to
    # leave the surface within the step) is put back on the surface with vz >= 0.
    _rest_clamp(y_start, y, pk, stopped)
    return y, stopped, t_stop, y_stop, events


def _rest_clamp(y_start, y, pk, stopped):
    zt = pk[_TZ] + pk[_R]
    over = (np.abs(y[:, 0]) <= pk[_THL]) & (np.abs(y[:, 1]) <= pk[_THW])
    m = ~stopped & over & (y_start[:, 2] >= zt) & (y[:, 2] < zt)
    if m.any():
        y[m, 2] = zt
        y[m, 5] = np.maximum(y[m, 5], 0.0)
    m = ~stopped & (y[:, 2] < pk[_R])
    if m.any():
        y[m, 2] = pk[_R]
        y[m, 5] = np.maximum(y[m, 5], 0.0)


@dataclass
class BatchEvents:
    count: np.ndarray  # [N] int32
    t_s: np.ndarray  # [N, K]
    kind: np.ndarray  # [N, K] int32
    state: np.ndarray  # [N, K, 9] state after the contact
    records: list = field(default_factory=list)


def n_steps_for(horizon_s: float, dt_s: float) -> int:
    if horizon_s == 0.0:
        return 0
    return max(1, int(np.ceil(horizon_s / dt_s - 1e-9)))


def simulate_batch_reference(
    states,
    horizon_s: float,
    dt_s: float,
    pk: np.ndarray,
    *,
    record_every: int = 0,
    max_events: int = 0,
    plane_x: float = np.nan,
    stop_kind: int = KIND_NONE,
    keep_records: bool = False,
):
    """Vectorised reference flight of ``[N, 9]`` float64 balls (inputs assumed validated).

    Returns a dict: ``final`` [N,9]; ``samples`` [N,S,9] and ``samples_t`` [S] when ``record_every`` > 0
    (sample 0 is the initial state, then every ``record_every`` steps); ``event_count`` [N] and, for
    ``max_events`` > 0, the first ``max_events`` contacts (``event_t`` [N,K], ``event_kind`` [N,K],
    ``event_state`` [N,K,9] after the rebound); ``t_stop`` [N] / ``stop_state`` [N,9] for a ``stop_kind``.
    """
    y = np.array(states, dtype=np.float64, copy=True)
    n = y.shape[0]
    n_steps = n_steps_for(horizon_s, dt_s)
    out = {}
    if record_every > 0:
        idx = list(range(0, n_steps + 1, record_every))
        out["samples_t"] = np.array([min(k * dt_s, horizon_s) for k in idx])
        samples = np.empty((n, len(idx), 9))
        samples[:, 0] = y
        out["samples"] = samples
    count = np.zeros(n, dtype=np.int32)
    k_ev = max(int(max_events), 0)
    ev_t = np.full((n, k_ev), np.nan)
    ev_kind = np.zeros((n, k_ev), dtype=np.int32)
    ev_state = np.full((n, k_ev, 9), np.nan)
    t_stop = np.full(n, np.nan)
    stop_state = np.full((n, 9), np.nan)
    alive = np.arange(n)
    records = []
    for k in range(n_steps):
        if alive.size == 0:
            break
        t0 = k * dt_s
        h = dt_s if k < n_steps - 1 else horizon_s - t0
        yn, stopped, ts, ys, events = advance_step(y[alive], h, pk, plane_x, stop_kind)
        y[alive] = yn
        for lanes, tin, knd, yb, ya in events:
            gl = alive[lanes]
            for j in range(gl.size):
                b = gl[j]
                c = count[b]
                if c < k_ev:
                    ev_t[b, c] = t0 + tin[j]
                    ev_kind[b, c] = knd[j]
                    ev_state[b, c] = ya[j]
                count[b] = c + 1
                if keep_records:
                    records.append(
                        ContactEvent(t0 + tin[j], KIND_NAMES[int(knd[j])], yb[j].copy(), ya[j].copy(), int(b))
                    )
        if stopped.any():
            gs = alive[stopped]
            t_stop[gs] = t0 + ts[stopped]
            stop_state[gs] = ys[stopped]
            alive = alive[~stopped]
        if record_every > 0 and (k + 1) % record_every == 0:
            out["samples"][:, (k + 1) // record_every] = y
    out["final"] = y
    out["event_count"] = count
    if k_ev:
        out["event_t"] = ev_t
        out["event_kind"] = ev_kind
        out["event_state"] = ev_state
    if stop_kind != KIND_NONE:
        out["t_stop"] = t_stop
        out["stop_state"] = stop_state
    if keep_records:
        out["records"] = records
    return out
