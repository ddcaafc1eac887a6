"""Prediction API: ``simulate``, ``time_to_plane``, ``landing_point`` and their batched forms.

Backends (``backend=``): ``'numpy'`` (the float64 reference in ``reference.py``), ``'cpu'`` (C++ header
``ball_physics.hpp`` on threads, extension ``robot_rt._ballistics``), ``'cuda'`` (CUDA C++ kernel from the
same header, ``robot_rt._ballistics_cuda``), ``'triton'`` (``triton_kernel.py``). ``'auto'`` picks ``'cuda'``
(else ``'triton'``) for CUDA tensors and ``'cpu'`` (else ``'numpy'``) otherwise. Batched results keep the
input's array type, device and dtype (the C++/CUDA/Triton paths compute in the input dtype).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from robot_rt import _native

from . import reference as ref
from ._validate import check_scalar, check_state_array, packed, table_or_default
from .params import BallParams, TableGeometry

__all__ = [
    "Trajectory",
    "PlaneCrossing",
    "BatchSimulation",
    "BatchCrossing",
    "simulate",
    "simulate_batch",
    "time_to_plane",
    "time_to_plane_batch",
    "landing_point",
    "landing_point_batch",
    "available_backends",
]

MAX_DT_S = 0.05
MAX_STEPS = 10_000_000


def available_backends() -> list[str]:
    """The batched functions' backends that run on this machine (for input on any device)."""
    return _native.available_backends("ballistics")


@dataclass
class Trajectory:
    """Single-ball trajectory on the step grid: ``t_s`` [T], ``states`` [T, 9], and the contacts."""

    t_s: np.ndarray
    states: np.ndarray
    events: list


class PlaneCrossing(NamedTuple):
    """State when the ball crosses the plane (or, for ``landing_point``, touches the table)."""

    t_s: float
    position: np.ndarray
    velocity: np.ndarray
    spin: np.ndarray


@dataclass
class BatchSimulation:
    """Result of ``simulate_batch`` (arrays of the input's type/device; ``None`` when not requested)."""

    final_state: object  # [N, 9]
    event_count: object  # [N] int32
    samples_t_s: np.ndarray | None = None  # [S]
    samples: object = None  # [N, S, 9]
    event_t_s: object = None  # [N, K]
    event_kind: object = None  # [N, K] int32, reference.KIND_*
    event_state: object = None  # [N, K, 9] after the rebound


@dataclass
class BatchCrossing:
    """Result of ``time_to_plane_batch`` / ``landing_point_batch``: ``t_s`` is NaN where ``found`` is False."""

    t_s: object  # [N]
    state: object  # [N, 9]
    found: object  # [N] bool


def _to_numpy64(arr) -> np.ndarray:
    if isinstance(arr, np.ndarray):
        return np.asarray(arr, dtype=np.float64)
    return arr.detach().cpu().numpy().astype(np.float64)


def _check_common(horizon_s, dt_s):
    h = check_scalar(horizon_s, "horizon_s", nonnegative=True)
    d = check_scalar(dt_s, "dt_s", positive=True, upper=MAX_DT_S)
    if h / d > MAX_STEPS:
        raise ValueError(f"horizon_s / dt_s must be <= {MAX_STEPS} steps, got {h / d:.0f}")
    return h, d


def _resolve_batch_backend(backend: str, kind: str, arr) -> str:
    device = "cuda" if kind == "torch" and arr.device.type == "cuda" else "cpu"
    return _native.resolve_backend("ballistics", backend, device, arg="states")


def _single_ball_core(backend: str):
    """The C++ core for one ball, or None when ``backend`` resolves to the NumPy reference."""
    return _native.backend_module("ballistics.single_ball", _native.resolve_backend("ballistics.single_ball", backend))


# --------------------------------------------------------------------------------------------- single ball


def simulate(
    state,
    horizon_s: float,
    dt_s: float,
    params: BallParams | None = None,
    table: TableGeometry | None = None,
    *,
    backend: str = "auto",
) -> Trajectory:
    """Fly one ball for ``horizon_s`` with step ``dt_s``: states on the grid t = 0, dt, ..., horizon plus contacts.

    ``backend='numpy'`` uses the reference, otherwise the C++ core (float64) when built.
    """
    tg = table_or_default(table)
    _, arr = check_state_array(state, "state", tg, batched=False)
    h, d = _check_common(horizon_s, dt_s)
    pk = packed(params, table)
    y = _to_numpy64(arr).reshape(1, 9)
    core = _single_ball_core(backend)
    if core is None:
        out = ref.simulate_batch_reference(y, h, d, pk, record_every=1, keep_records=True)
        return Trajectory(out["samples_t"], out["samples"][0], out["records"])
    t, states, ev_t, ev_kind, ev_before, ev_after = core.simulate_one(y[0], h, d, pk)
    events = [
        ref.ContactEvent(float(ev_t[i]), ref.KIND_NAMES[int(ev_kind[i])], ev_before[i], ev_after[i], 0)
        for i in range(len(ev_t))
    ]
    return Trajectory(t, states, events)


def _single_stop(state, x_plane, stop_kind, params, table, dt_s, horizon_s, backend):
    core = _single_ball_core(backend)
    if core is None:
        tg = table_or_default(table)
        _, arr = check_state_array(state, "state", tg, batched=False)
        h, d = _check_common(horizon_s, dt_s)
        pk = packed(params, table)
        out = ref.simulate_batch_reference(
            _to_numpy64(arr).reshape(1, 9), h, d, pk, plane_x=x_plane, stop_kind=stop_kind
        )
        t = out["t_stop"][0]
        if not np.isfinite(t):
            return None
        s = out["stop_state"][0]
        return PlaneCrossing(float(t), s[0:3].copy(), s[3:6].copy(), s[6:9].copy())
    if params is None and table is None:
        pk = _DEFAULT_PK
        room = _DEFAULT_ROOM
    else:
        pk = packed(params, table)
        tg = table_or_default(table)
        room = (tg.room_half_length_m, tg.room_half_width_m, tg.room_height_m)
    if type(state) is not np.ndarray:  # torch tensors, lists: validate here, then hand NumPy to C++
        _, arr = check_state_array(state, "state", table_or_default(table), batched=False)
        state = _to_numpy64(arr)
    # The C++ entry point validates state (shape, dtype, finiteness, room), horizon and step itself.
    r = core.stop_one(state, x_plane, stop_kind, dt_s, horizon_s, pk, room)
    if r is None:
        return None
    t, s = r
    return PlaneCrossing(t, s[0:3], s[3:6], s[6:9])


_DEFAULT_PK = packed(None, None)
_DEFAULT_ROOM = (TableGeometry().room_half_length_m, TableGeometry().room_half_width_m, TableGeometry().room_height_m)


def time_to_plane(
    state,
    x_plane_m: float,
    params: BallParams | None = None,
    table: TableGeometry | None = None,
    *,
    dt_s: float = 1e-3,
    horizon_s: float = 1.0,
    backend: str = "auto",
) -> PlaneCrossing | None:
    """When and where the ball next crosses the plane x = ``x_plane_m`` (after any bounce), or None within ``horizon_s``.

    The crossing time is root-found inside the RK4 step (see ``reference``); contacts before it are applied.
    """
    x_plane = check_scalar(x_plane_m, "x_plane_m")
    return _single_stop(state, x_plane, ref.KIND_PLANE, params, table, dt_s, horizon_s, backend)


def landing_point(
    state,
    params: BallParams | None = None,
    table: TableGeometry | None = None,
    *,
    dt_s: float = 1e-3,
    horizon_s: float = 2.0,
    backend: str = "auto",
) -> PlaneCrossing | None:
    """When and where the ball next touches the table top (state just before the rebound), or None."""
    return _single_stop(state, float("nan"), ref.KIND_TABLE, params, table, dt_s, horizon_s, backend)


# --------------------------------------------------------------------------------------------- batched


def _run_batch(
    states, horizon_s, dt_s, params, table, backend, *, record_every=0, max_events=0, plane_x=float("nan"), stop_kind=0
):
    tg = table_or_default(table)
    kind, arr = check_state_array(states, "states", tg, batched=True)
    h, d = _check_common(horizon_s, dt_s)
    if isinstance(record_every, bool) or not isinstance(record_every, (int, np.integer)) or record_every < 0:
        raise ValueError(f"record_every must be an int >= 0, got {record_every!r}")
    if isinstance(max_events, bool) or not isinstance(max_events, (int, np.integer)) or max_events < 0:
        raise ValueError(f"max_events must be an int >= 0, got {max_events!r}")
    pk = packed(params, table)
    be = _resolve_batch_backend(backend, kind, arr)
    kw = dict(
        record_every=int(record_every), max_events=int(max_events), plane_x=float(plane_x), stop_kind=int(stop_kind)
    )
    if be == "numpy":
        host = arr.detach().cpu().numpy() if kind == "torch" else arr
        out = ref.simulate_batch_reference(np.asarray(host, np.float64), h, d, pk, **kw)
        return _convert_back(out, kind, arr)
    if be == "cpu":
        from .backend_cpu import run_cpu

        return run_cpu(arr, kind, h, d, pk, **kw)
    if be == "cuda":
        from .backend_cuda import run_cuda

        return run_cuda(arr, h, d, pk, **kw)
    from .triton_kernel import run_triton

    if kind == "numpy":  # CPU arrays under TRITON_INTERPRET=1
        import torch

        out = run_triton(torch.from_numpy(np.ascontiguousarray(arr)), h, d, pk, **kw)
        return {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in out.items()}
    return run_triton(arr, h, d, pk, **kw)


def _convert_back(out: dict, kind: str, arr) -> dict:
    """Cast the float64 reference outputs to the input's type/dtype/device."""
    if kind == "numpy":
        res = {}
        for k, v in out.items():
            if isinstance(v, np.ndarray) and v.dtype == np.float64 and k != "samples_t":
                res[k] = v.astype(arr.dtype, copy=False)
            else:
                res[k] = v
        return res
    import torch

    res = {}
    for k, v in out.items():
        if k == "samples_t" or not isinstance(v, np.ndarray):
            res[k] = v
        elif v.dtype == np.float64:
            res[k] = torch.from_numpy(v).to(device=arr.device, dtype=arr.dtype)
        else:
            res[k] = torch.from_numpy(v).to(device=arr.device)
    return res


def simulate_batch(
    states,
    horizon_s: float,
    dt_s: float,
    params: BallParams | None = None,
    table: TableGeometry | None = None,
    *,
    backend: str = "auto",
    record_every: int = 0,
    max_events: int = 0,
) -> BatchSimulation:
    """Fly ``[N, 9]`` balls (NumPy or torch, CPU or CUDA) for ``horizon_s`` with step ``dt_s``.

    Returns the final states; with ``record_every`` = k > 0 also every k-th grid state ([N, S, 9], sample 0 is
    the input); with ``max_events`` = K > 0 the first K contacts per ball. ``event_count`` counts all contacts.
    """
    out = _run_batch(states, horizon_s, dt_s, params, table, backend, record_every=record_every, max_events=max_events)
    return BatchSimulation(
        final_state=out["final"],
        event_count=out["event_count"],
        samples_t_s=out.get("samples_t"),
        samples=out.get("samples"),
        event_t_s=out.get("event_t"),
        event_kind=out.get("event_kind"),
        event_state=out.get("event_state"),
    )


def _found(t, kind):
    if kind == "numpy" or isinstance(t, np.ndarray):
        return np.isfinite(t)
    import torch

    return torch.isfinite(t)


def time_to_plane_batch(
    states,
    x_plane_m: float,
    params: BallParams | None = None,
    table: TableGeometry | None = None,
    *,
    dt_s: float = 1e-3,
    horizon_s: float = 1.0,
    backend: str = "auto",
) -> BatchCrossing:
    """Batched ``time_to_plane``: ``t_s`` [N] (NaN: no crossing within the horizon) and the state there [N, 9]."""
    x_plane = check_scalar(x_plane_m, "x_plane_m")
    out = _run_batch(states, horizon_s, dt_s, params, table, backend, plane_x=x_plane, stop_kind=ref.KIND_PLANE)
    return BatchCrossing(out["t_stop"], out["stop_state"], _found(out["t_stop"], None))


def landing_point_batch(
    states,
    params: BallParams | None = None,
    table: TableGeometry | None = None,
    *,
    dt_s: float = 1e-3,
    horizon_s: float = 2.0,
    backend: str = "auto",
) -> BatchCrossing:
    """Batched ``landing_point``: first table contact per ball (state just before the rebound)."""
    out = _run_batch(states, horizon_s, dt_s, params, table, backend, stop_kind=ref.KIND_TABLE)
    return BatchCrossing(out["t_stop"], out["stop_state"], _found(out["t_stop"], None))
