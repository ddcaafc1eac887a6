"""CUDA backend: the C++ header in a CUDA kernel (``robot_rt._ballistics_cuda``), one thread per ball."""

from __future__ import annotations

import numpy as np

from .reference import n_steps_for


def alloc_outputs(arr, horizon_s: float, dt_s: float, record_every: int, max_events: int, stop_kind: int) -> dict:
    """Output tensors on arr's device/dtype (shared by the CUDA and Triton backends)."""
    import torch

    n = arr.shape[0]
    dev, dt = arr.device, arr.dtype
    n_steps = n_steps_for(horizon_s, dt_s)
    out = {
        "final": torch.empty((n, 9), device=dev, dtype=dt),
        "event_count": torch.zeros((n,), device=dev, dtype=torch.int32),
    }
    if record_every > 0:
        s = n_steps // record_every + 1
        out["samples"] = torch.empty((n, s, 9), device=dev, dtype=dt)
        out["samples_t"] = np.minimum(np.arange(s) * record_every * dt_s, horizon_s)
    out["event_t"] = torch.empty((n, max_events), device=dev, dtype=dt)
    out["event_kind"] = torch.empty((n, max_events), device=dev, dtype=torch.int32)
    out["event_state"] = torch.empty((n, max_events, 9), device=dev, dtype=dt)
    out["t_stop"] = torch.empty((n,), device=dev, dtype=dt)
    out["stop_state"] = torch.empty((n, 9), device=dev, dtype=dt)
    return out


def trim_outputs(out: dict, max_events: int, stop_kind: int) -> dict:
    if max_events == 0:
        for k in ("event_t", "event_kind", "event_state"):
            out.pop(k)
    if stop_kind == 0:
        out.pop("t_stop")
        out.pop("stop_state")
    return out


def run_cuda(
    arr,
    horizon_s: float,
    dt_s: float,
    pk: np.ndarray,
    *,
    record_every: int,
    max_events: int,
    plane_x: float,
    stop_kind: int,
) -> dict:
    import torch

    from robot_rt import _ballistics_cuda

    x = arr.detach().contiguous()
    out = alloc_outputs(x, horizon_s, dt_s, record_every, max_events, stop_kind)
    n_samples = out["samples"].shape[1] if record_every > 0 else 0
    with torch.cuda.device(x.device):
        stream = torch.cuda.current_stream(x.device).cuda_stream
        _native_ptr = lambda t: t.data_ptr() if t is not None else 0  # noqa: E731
        _ballistics_cuda.fly_batch(
            x.data_ptr(),
            x.dtype == torch.float64,
            x.shape[0],
            horizon_s,
            dt_s,
            pk,
            plane_x,
            stop_kind,
            record_every,
            n_samples,
            max_events,
            out["final"].data_ptr(),
            out["event_count"].data_ptr(),
            _native_ptr(out.get("samples")),
            out["event_t"].data_ptr(),
            out["event_kind"].data_ptr(),
            out["event_state"].data_ptr(),
            out["t_stop"].data_ptr(),
            out["stop_state"].data_ptr(),
            stream,
        )
    return trim_outputs(out, max_events, stop_kind)
