"""robot_rt's native extension modules and compute backends in one place (docs/architecture.md, "Backends").

`native(name)` imports an extension module once (None when it is not built); `BACKENDS` declares each
component's backends as data; `resolve_backend` turns `backend=` (default 'auto' everywhere) into a backend
that works here, or raises `ValueError` (bad value, wrong device) or `BackendUnavailableError` (not built).
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "backend_module",
    "native",
    "native_error",
    "resolve_backend",
]


class BackendUnavailableError(RuntimeError):
    """The backend asked for is not built or cannot run on this machine (a RuntimeError: code catching those
    keeps working)."""


# Component -> its backends, the reference ('numpy') first. 'auto' is accepted everywhere (resolve_backend).
BACKENDS: dict[str, tuple[str, ...]] = {
    "ballistics": ("numpy", "cpu", "cuda", "triton"),  # simulate_batch, time_to_plane_batch, landing_point_batch
    "ballistics.single_ball": ("numpy", "cpu"),  # simulate, time_to_plane, landing_point
    "estimation": ("numpy", "cpu"),  # PhysicsModel (the UKF's process model), BatchedBallTracker
    "envs": ("numpy", "cpu", "cuda"),  # TableTennisWorld and the envs on it
}

# (component, backend) -> the extension module it runs in and the functions it needs from it (a module built
# before a function was added lacks it; the backend then counts as unavailable).
NATIVE: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("ballistics", "cpu"): ("_ballistics", ()),
    ("ballistics", "cuda"): ("_ballistics_cuda", ()),
    ("ballistics.single_ball", "cpu"): ("_ballistics", ()),
    ("estimation", "cpu"): ("_ballistics", ("rk4_step", "derivative")),
    ("envs", "cpu"): ("_envs", ()),
    ("envs", "cuda"): ("_envs_cuda", ()),
}

# Components whose backend follows the input's device: a CUDA tensor runs on 'cuda' / 'triton', CPU data on
# 'cpu' / 'numpy'. The others take NumPy state and 'cuda' means "step on the GPU".
FOLLOWS_INPUT_DEVICE = frozenset({"ballistics"})


@functools.cache
def _load(name: str) -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module(f"robot_rt.{name}"), ""
    except ImportError as exc:  # not built (no compiler / no nvcc) or cannot load
        return None, f"{type(exc).__name__}: {exc}"


def native(name: str) -> ModuleType | None:
    """The extension module `robot_rt.<name>` (e.g. '_envs'), imported once; None when it is not built."""
    return _load(name)[0]


def backend_module(component: str, backend: str) -> ModuleType | None:
    """The extension module that `backend` of `component` runs in (None for 'numpy' and 'triton')."""
    entry = NATIVE.get((component, backend))
    return None if entry is None else native(entry[0])


def native_error(name: str) -> str:
    """Why `native(name)` is None ('' when it loaded)."""
    return _load(name)[1]


@functools.cache
def _triton_error() -> str:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - missing or broken: either way the backend is unavailable
        return f"{type(exc).__name__}: {exc}"
    return ""


def triton_interpret() -> bool:
    """True when Triton runs in its interpreter (TRITON_INTERPRET=1), which takes CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _cuda_device_present(module: ModuleType) -> bool:
    if hasattr(module, "device_count"):
        try:
            return bool(module.device_count() > 0)
        except Exception:  # noqa: BLE001 - no driver / no device
            return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - pragma: no cover
        return False


def _unavailable(component: str, backend: str) -> str:
    """Why `backend` cannot run for `component` on this machine ('' when it can)."""
    if backend == "numpy":
        return ""
    if backend == "triton":
        return _triton_error()
    name, functions = NATIVE[(component, backend)]
    module = native(name)
    if module is None:
        how = "it is built only when nvcc is found" if backend == "cuda" else "run `bash tools/setup.sh`"
        return f"the native module robot_rt.{name} is not built ({native_error(name)}; {how})"
    missing = [f for f in functions if not hasattr(module, f)]
    if missing:
        return f"robot_rt.{name} lacks {', '.join(missing)} (a stale build: run `bash tools/setup.sh`)"
    if backend == "cuda" and not _cuda_device_present(module):
        return "no CUDA device is available"
    return ""


def available_backends(component: str, device: str | None = None) -> list[str]:
    """The backends of `component` that run on this machine, for input on `device` ('cpu' | 'cuda'; None: any)."""
    out = []
    for backend in BACKENDS[component]:
        if _unavailable(component, backend):
            continue
        if device is not None and component in FOLLOWS_INPUT_DEVICE and _device_mismatch(backend, device):
            continue
        out.append(backend)
    return out


def _device_mismatch(backend: str, device: str, arg: str = "the input") -> str:
    if backend in ("numpy", "cpu") and device == "cuda":
        return f"backend={backend!r} needs {arg} on the CPU, got a CUDA tensor"
    if backend == "cuda" and device != "cuda":
        return f"backend='cuda' needs {arg} as a CUDA torch tensor"
    if backend == "triton" and device != "cuda" and not triton_interpret():
        return f"backend='triton' needs {arg} as a CUDA torch tensor (or TRITON_INTERPRET=1)"
    return ""


def resolve_backend(component: str, backend: str = "auto", device: str = "cpu", arg: str = "the input") -> str:
    """The backend to run `component` with.

    'auto' picks the fastest one that works: for input on a CUDA device 'cuda', else 'triton' (components that
    follow the input's device); otherwise 'cpu' when its native module is built, else 'numpy'. A named backend
    is checked: `ValueError` for an unknown name or one that does not take input on `device`,
    `BackendUnavailableError` when it is not built here (the message says what to do). `arg` names the input
    in the messages (e.g. 'states').
    """
    choices = ("auto", *BACKENDS[component])
    if not isinstance(backend, str) or backend not in choices:
        raise ValueError(f"backend: expected one of {choices} for {component}, got {backend!r}")
    on_cuda = component in FOLLOWS_INPUT_DEVICE and device == "cuda"
    if backend == "auto":
        if on_cuda:
            return "cuda" if not _unavailable(component, "cuda") else "triton"
        return "cpu" if not _unavailable(component, "cpu") else "numpy"
    if component in FOLLOWS_INPUT_DEVICE and (mismatch := _device_mismatch(backend, device, arg)):
        raise ValueError(mismatch)
    if why := _unavailable(component, backend):
        raise BackendUnavailableError(
            f"backend={backend!r} is unavailable for {component}: {why}; backend='auto' picks one that runs here"
        )
    return backend
