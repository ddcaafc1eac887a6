"""Simulated ball tracker and serve generator (seeded) for tests and benchmarks.

Design notes: docs/estimation.md, section `robot_rt.estimation.tracker`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from robot_rt.ballistics import BallParams, TableGeometry, reference, simulate_batch

from .common import check_positive, check_probability

__all__ = ["Serve", "ServeGenerator", "TrackerConfig", "SimulatedTracker", "Detections"]


@dataclass
class Serve:
    """A true ball flight: dense grid ``t_s`` [T] / ``states`` [T, 9] (t = 0 at the serve), contacts and the
    crossing of the hitting plane."""

    t_s: np.ndarray
    states: np.ndarray
    event_t_s: np.ndarray  # contact times (table/net/floor) before the crossing
    event_states: np.ndarray  # [K, 9] state right after each contact
    crossing_t_s: float
    crossing_state: np.ndarray
    kind: str
    params: BallParams
    x_plane_m: float

    @property
    def initial_state(self) -> np.ndarray:
        return self.states[0]

    @property
    def bounce_t_s(self) -> np.ndarray:
        return self.event_t_s

    def state_at(self, t_s) -> np.ndarray:
        """True states at times ``t_s`` (any shape, within the grid): RK4 from the last grid point or contact."""
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        if np.any(t < self.t_s[0] - 1e-12) or np.any(t > self.t_s[-1] + 1e-12):
            raise ValueError(f"t_s: expected times within [{self.t_s[0]}, {self.t_s[-1]}] s of the serve")
        k = np.clip(np.searchsorted(self.t_s, t, side="right") - 1, 0, len(self.t_s) - 1)
        base_t = self.t_s[k].copy()
        base = self.states[k].copy()
        for te, se in zip(self.event_t_s, self.event_states):
            m = (te > base_t) & (te <= t)
            base_t[m] = te
            base[m] = se
        out = reference.rk4_step(base, t - base_t, self.params)
        return out.reshape(np.shape(t_s) + (9,)) if np.ndim(t_s) else out[0]


_JITTER_FIELDS = {  # multiplicative std of the per-serve parameter perturbation (times param_jitter)
    "drag_coefficient": 1.0,
    "lift_coefficient_slope": 2.0,
    "table_restitution": 0.3,
    "table_friction": 2.0,
}


class ServeGenerator:
    """Seeded generator of incoming balls with spin (see docs/estimation.md, `robot_rt.estimation.tracker`).

    ``param_jitter`` (e.g. 0.05) perturbs drag (5 %), lift (10 %), restitution (1.5 %) and table friction
    (10 %) per group of serves; ``serve_fraction`` is the share of ITTF serves (two bounces) vs drives.
    """

    def __init__(
        self,
        seed: int = 0,
        x_plane_m: float = 1.6,
        params: BallParams | None = None,
        table: TableGeometry | None = None,
        param_jitter: float = 0.0,
        serve_fraction: float = 0.3,
        spin_max_radps: float = 150.0,
        dt_s: float = 2e-3,
        n_param_groups: int = 8,
    ):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        self.x_plane_m = float(x_plane_m)
        if not (1.37 < self.x_plane_m < 3.0):
            raise ValueError(f"x_plane_m: expected a plane on the robot side in (1.37, 3.0) m, got {self.x_plane_m}")
        self.params = params if params is not None else BallParams()
        if not isinstance(self.params, BallParams):
            raise TypeError(f"params: expected a BallParams or None, got {type(params).__name__}")
        self.table = table if table is not None else TableGeometry()
        self.param_jitter = check_positive(param_jitter, "param_jitter", allow_zero=True)
        self.serve_fraction = check_probability(serve_fraction, "serve_fraction")
        self.spin_max_radps = check_positive(spin_max_radps, "spin_max_radps")
        self.dt_s = check_positive(dt_s, "dt_s")
        self.n_param_groups = max(1, int(n_param_groups))
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ sampling
    def _candidates(self, n: int, kind: str) -> np.ndarray:
        """Initial states aimed (drag-free estimate, corrected for the Magnus term) at a first bounce."""
        r = self.rng
        s = np.zeros((n, 9))
        if kind == "drive":
            s[:, 0] = r.uniform(-2.0, -1.45, n)
            s[:, 2] = r.uniform(0.85, 1.2, n)
            vx = r.uniform(4.0, 10.0, n)
            x_land = r.uniform(0.3, 1.2, n)
        else:
            s[:, 0] = r.uniform(-1.7, -1.45, n)
            s[:, 2] = r.uniform(1.0, 1.25, n)
            vx = r.uniform(3.5, 7.0, n)
            x_land = r.uniform(-1.25, -0.8, n)
        s[:, 1] = r.uniform(-0.6, 0.6, n)
        y_target = r.uniform(-0.6, 0.6, n)
        s[:, 3] = vx
        s[:, 4] = (y_target - s[:, 1]) * vx / (1.37 + 0.7 - s[:, 0])
        # spin: top/back spin (wy > 0: topspin for a ball flying towards +x), side spin (wz), a little wx
        wmax = self.spin_max_radps
        mag = r.uniform(0.15, 1.0, n) * wmax
        sign = np.where(r.random(n) < 0.5, 1.0, -1.0)
        s[:, 6] = r.uniform(-0.2, 0.2, n) * wmax
        s[:, 7] = sign * mag
        s[:, 8] = r.uniform(-0.7, 0.7, n) * wmax * (r.random(n) < 0.5)
        # vertical speed to reach the contact height at x_land: constant-acceleration estimate
        T = (x_land - s[:, 0]) / (0.85 * vx)
        g_eff = self.params.gravity_mps2 + self.params.magnus_k * s[:, 7] * vx
        z_c = self.table.surface_height_m + self.params.radius_m
        s[:, 5] = (z_c - s[:, 2] + 0.5 * g_eff * T * T) / T + r.normal(0.0, 0.15, n)
        return s

    def _group_params(self) -> list[BallParams]:
        if self.param_jitter == 0:
            return [self.params]
        out = []
        for _ in range(self.n_param_groups):
            kw = {}
            for name, rel in _JITTER_FIELDS.items():
                v = getattr(self.params, name) * (1.0 + rel * self.param_jitter * self.rng.standard_normal())
                if name == "table_restitution":
                    v = min(v, 0.98)
                kw[name] = max(v, 0.0)
            out.append(dataclasses.replace(self.params, **kw))
        return out

    def sample(self, n: int) -> list[Serve]:
        """Draw ``n`` valid serves (rejection sampling; every serve crosses the hitting plane)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        groups = self._group_params()
        out: list[Serve] = []
        n_serve_total = int(round(n * self.serve_fraction))
        for kind, total in (("serve", n_serve_total), ("drive", n - n_serve_total)):
            per_group = math.ceil(total / len(groups)) if total else 0
            done = 0
            for prm in groups:
                want = min(per_group, total - done)
                got: list[Serve] = []
                for _attempt in range(30):
                    if len(got) >= want:
                        break
                    m = max(8, min(400, int(1.6 * (want - len(got)))))
                    cand = self._candidates(m, kind)
                    got.extend(self._accept(cand, np.array([kind] * m), prm)[: want - len(got)])
                if len(got) < want:  # pragma: no cover - sampling ranges are wide enough
                    raise RuntimeError(f"ServeGenerator: could only draw {len(got)} of {want} {kind}s")
                out.extend(got)
                done += want
        order = self.rng.permutation(len(out))
        return [out[i] for i in order]

    def fly(self, states) -> list[Serve]:
        """Serves from given initial states ``[N, 9]`` (kind ``'any'``); raises if one does not cross the
        hitting plane at a reachable height without touching the net or the floor first."""
        st = np.asarray(states, dtype=np.float64)
        if st.ndim == 1:
            st = st[None]
        if st.ndim != 2 or st.shape[1] != 9 or not np.all(np.isfinite(st)):
            raise ValueError(f"states: expected finite [N, 9] initial states, got shape {st.shape}")
        out = []
        for row in st:
            got = self._accept(row[None], np.array(["any"]), self.params)
            if not got:
                raise ValueError(f"states: {row.tolist()} does not reach the hitting plane cleanly")
            out.extend(got)
        return out

    def _accept(self, cand: np.ndarray, kinds: np.ndarray, prm: BallParams) -> list[Serve]:
        """Fly the candidates once (dense grid with contacts) and keep the valid ones."""
        horizon = 1.4
        sim = simulate_batch(cand, horizon, self.dt_s, prm, self.table, backend="auto", max_events=4, record_every=1)
        tg = np.asarray(sim.samples_t_s)
        xs = np.asarray(sim.samples)[:, :, 0]
        res = []
        for i in range(len(cand)):
            k = np.nonzero(xs[i] >= self.x_plane_m)[0]
            if len(k) == 0 or k[0] == 0:
                continue
            k = int(k[0])
            ne = min(int(sim.event_count[i]), 4)
            et = np.asarray(sim.event_t_s[i])[:ne]
            ek = np.asarray(sim.event_kind[i])[:ne]
            es = np.asarray(sim.event_state[i])[:ne]
            before = et < tg[k]
            if np.any(ek[before] != reference.KIND_TABLE):
                continue
            xb = es[before, 0]
            if kinds[i] == "drive" and not (len(xb) == 1 and 0.1 < xb[0] < 1.37):
                continue
            if kinds[i] == "serve" and not (len(xb) == 2 and xb[0] < -0.1 and 0.1 < xb[1] < 1.37):
                continue
            last = min(k + int(round(0.06 / self.dt_s)) + 1, len(tg))
            keep_ev = et <= tg[last - 1]
            serve = Serve(
                t_s=tg[:last].copy(),
                states=np.asarray(sim.samples[i])[:last].copy(),
                event_t_s=et[keep_ev].copy(),
                event_states=es[keep_ev].copy(),
                crossing_t_s=float("nan"),
                crossing_state=np.full(9, np.nan),
                kind=str(kinds[i]),
                params=prm,
                x_plane_m=self.x_plane_m,
            )
            # crossing time: bisection on the exact flight between the bracketing grid points
            lo, hi = float(tg[k - 1]), float(tg[k])
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                if serve.state_at(mid)[0] < self.x_plane_m:
                    lo = mid
                else:
                    hi = mid
            serve.crossing_t_s = 0.5 * (lo + hi)
            serve.crossing_state = serve.state_at(serve.crossing_t_s)
            if not (0.8 < serve.crossing_state[2] < 1.8):
                continue
            res.append(serve)
        return res


@dataclass(frozen=True)
class TrackerConfig:
    rate_hz: float = 200.0
    noise_sigma_m: float = 0.005
    drop_prob: float = 0.03  # independent frame drops
    burst_prob: float = 0.0  # per frame: start of an occlusion of burst_len_frames
    burst_len_frames: int = 6
    outlier_prob: float = 0.01  # the ball's detection replaced by a wrong blob 5-30 cm away
    false_rate: float = 0.02  # expected clutter detections per frame (anywhere in the scene)
    latency_s: float = 0.012  # mean processing latency
    latency_jitter_s: float = 0.003  # exponential extra latency (causes out-of-order arrival)
    t_start_s: float = 0.0  # first frame not before this time (serve clock)
    t_stop_after_crossing_s: float = 0.02  # frames until this long after the plane crossing


@dataclass
class Detections:
    """Detections sorted by arrival: capture/arrival times [M], positions [M, 3], truth labels [M]."""

    t_capture_s: np.ndarray
    t_arrival_s: np.ndarray
    position_m: np.ndarray
    is_false: np.ndarray
    ball_id: np.ndarray

    def __len__(self) -> int:
        return len(self.t_capture_s)

    def __iter__(self):
        for i in range(len(self)):
            yield float(self.t_capture_s[i]), self.position_m[i], float(self.t_arrival_s[i])

    def sorted_by_capture(self) -> Detections:
        o = np.lexsort((self.position_m[:, 2], self.position_m[:, 1], self.position_m[:, 0], self.t_capture_s))
        return self._take(o)

    def _take(self, o) -> Detections:
        return Detections(
            self.t_capture_s[o], self.t_arrival_s[o], self.position_m[o], self.is_false[o], self.ball_id[o]
        )

    @staticmethod
    def concatenate(parts) -> Detections:
        d = Detections(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Detections)))
        return d._take(np.argsort(d.t_arrival_s, kind="stable"))


class SimulatedTracker:
    """Turns true trajectories into detections (see docs/estimation.md, `robot_rt.estimation.tracker`). Seeded."""

    def __init__(self, config: TrackerConfig | None = None, seed: int = 0, **overrides):
        cfg = config or TrackerConfig()
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        check_positive(cfg.rate_hz, "rate_hz")
        if cfg.rate_hz > 2000:
            raise ValueError(f"rate_hz: expected at most 2000 Hz, got {cfg.rate_hz}")
        check_positive(cfg.noise_sigma_m, "noise_sigma_m", allow_zero=True)
        for name in ("drop_prob", "burst_prob", "outlier_prob"):
            check_probability(getattr(cfg, name), name)
        for name in ("false_rate", "latency_s", "latency_jitter_s", "t_stop_after_crossing_s"):
            check_positive(getattr(cfg, name), name, allow_zero=True)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        self.config = cfg
        self.rng = np.random.default_rng(seed)

    def observe(self, serve: Serve, t_offset_s: float = 0.0, ball_id: int = 0) -> Detections:
        """Detections of ``serve`` on a clock where the serve starts at ``t_offset_s``."""
        if not isinstance(serve, Serve):
            raise TypeError(f"serve: expected a Serve, got {type(serve).__name__}")
        cfg, r = self.config, self.rng
        period = 1.0 / cfg.rate_hz
        t0 = max(cfg.t_start_s, float(serve.t_s[0]))
        t1 = min(serve.crossing_t_s + cfg.t_stop_after_crossing_s, float(serve.t_s[-1]))
        frames = t0 + r.uniform(0, period) + np.arange(0.0, max(t1 - t0, 0.0), period)
        frames = frames[frames <= t1]
        nf = len(frames)
        visible = r.random(nf) >= cfg.drop_prob
        if cfg.burst_prob > 0:
            starts = np.nonzero(r.random(nf) < cfg.burst_prob)[0]
            for s in starts:
                visible[s : s + int(cfg.burst_len_frames)] = False
        ft = frames[visible]
        pos = serve.state_at(ft)[:, :3] if len(ft) else np.zeros((0, 3))
        pos = pos + r.normal(0.0, cfg.noise_sigma_m, pos.shape) if cfg.noise_sigma_m > 0 else pos.copy()
        is_false = np.zeros(len(ft), dtype=bool)
        out_m = r.random(len(ft)) < cfg.outlier_prob
        if out_m.any():
            d = r.normal(size=(out_m.sum(), 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            pos[out_m] += d * r.uniform(0.05, 0.30, (out_m.sum(), 1))
            is_false[out_m] = True
        # clutter
        n_cl = r.poisson(cfg.false_rate * nf) if nf else 0
        ct = frames[r.integers(0, nf, n_cl)] if n_cl else np.zeros(0)
        cp = np.stack(
            [r.uniform(-2.5, 2.5, n_cl), r.uniform(-1.2, 1.2, n_cl), r.uniform(0.5, 2.0, n_cl)], axis=1
        ).reshape(-1, 3)
        tc = np.concatenate([ft, ct]) + t_offset_s
        p = np.concatenate([pos, cp])
        fl = np.concatenate([is_false, np.ones(n_cl, dtype=bool)])
        lat = cfg.latency_s + (r.exponential(cfg.latency_jitter_s, len(tc)) if cfg.latency_jitter_s > 0 else 0.0)
        ta = tc + lat
        o = np.argsort(ta, kind="stable")
        return Detections(tc[o], ta[o], p[o], fl[o], np.full(len(tc), ball_id, dtype=np.int64)[o])
