"""CPU backend: the C++ header on std::thread workers (``robot_rt._ballistics``), NumPy or torch CPU input."""

from __future__ import annotations

import os

import numpy as np

from robot_rt import _ballistics as _native


def default_threads() -> int:
    env = os.environ.get("ROBOT_RT_NUM_THREADS")
    if env:
        return max(1, int(env))
    return int(_native.hardware_threads())


def run_cpu(
    arr,
    kind: str,
    horizon_s: float,
    dt_s: float,
    pk: np.ndarray,
    *,
    record_every: int,
    max_events: int,
    plane_x: float,
    stop_kind: int,
    n_threads: int | None = None,
) -> dict:
    """Compute in the input dtype; returns arrays of the input's type (torch CPU tensors share no memory with input)."""
    host = arr.detach().numpy() if kind == "torch" else arr
    host = np.ascontiguousarray(host)
    fn = _native.simulate_batch_f32 if host.dtype == np.float32 else _native.simulate_batch_f64
    out = fn(host, horizon_s, dt_s, pk, record_every, max_events, plane_x, stop_kind, n_threads or default_threads())
    out = dict(out)
    if kind == "torch":
        import torch

        out = {k: (v if k == "samples_t" else torch.from_numpy(v)) for k, v in out.items()}
    return out
