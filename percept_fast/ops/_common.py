"""Shared plumbing of the percept_fast distance ops: validation, backend resolution, native-module access.

Backends ``'torch'`` (reference) | ``'cpu'`` (``percept_fast._C``) | ``'triton'`` | ``'cuda'``
(``percept_fast._C_cuda``) | ``'auto'``; value checks and graph readiness: ``docs/percept_fast.md#ops``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from types import ModuleType

import torch

BACKENDS = ("auto", "torch", "cpu", "triton", "cuda")

# dtype codes shared with csrc/percept_fast/common.h (enum DType).
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
# fp32/fp16/bf16 are the supported feature dtypes; float64 is accepted too (exact gradchecks).
SUPPORTED_DTYPES = tuple(DTYPE_CODES)


class BackendUnavailableError(RuntimeError):
    """The requested backend is not built / not importable / not usable for the input's device."""


# ----------------------------------------------------------------------------------------------- native
# Plain module-level imports (no importlib at call time: resolve_backend runs inside torch.compile traces). The C++
# module is built with the package; the CUDA module only where nvcc was found, and Triton is optional. torch is
# imported (above) before _C: _C's OpenMP library is then the one torch loaded (one pool for both, common.h).

try:
    from .. import _C as _CPU_MODULE
except ImportError as _exc:  # not built (no compiler) or failed to load
    _CPU_MODULE, _CPU_WHY = None, f"{type(_exc).__name__}: {_exc}"
else:
    _CPU_WHY = ""

try:
    from .. import _C_cuda as _CUDA_MODULE
except ImportError as _exc:  # built only where nvcc was found (and loads only with a CUDA runtime)
    _CUDA_MODULE, _CUDA_WHY = None, f"{type(_exc).__name__}: {_exc}"
else:
    _CUDA_WHY = ""

try:
    import triton as _TRITON
except ImportError as _exc:
    _TRITON, _TRITON_WHY = None, f"{type(_exc).__name__}: {_exc}"
else:
    _TRITON_WHY = ""


def cpu_module() -> ModuleType | None:
    """``percept_fast._C`` or None when it is not built."""
    return _CPU_MODULE


def cuda_module() -> ModuleType | None:
    """``percept_fast._C_cuda`` or None when it is not built (or cannot load)."""
    return _CUDA_MODULE


def triton_module() -> ModuleType | None:
    """``triton`` or None when it is not installed."""
    return _TRITON


def triton_interpret() -> bool:
    """True when Triton runs in its interpreter (``TRITON_INTERPRET=1``), which accepts CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def triton_available(device: torch.device) -> bool:
    if _TRITON is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and triton_interpret())


def _has(mod: ModuleType | None, native_fn: str | None) -> bool:
    return mod is not None and (native_fn is None or hasattr(mod, native_fn))


def available_backends(device: torch.device | str = "cpu", native_fn: str | None = None) -> list[str]:
    """Backends usable for tensors on ``device`` (the reference ``'torch'`` always is); ``native_fn``: see
    :func:`resolve_backend`."""
    device = torch.device(device)
    out = ["torch"]
    if device.type == "cpu" and _has(cpu_module(), native_fn):
        out.append("cpu")
    if triton_available(device):
        out.append("triton")
    if device.type == "cuda" and _has(cuda_module(), native_fn) and torch.cuda.is_available():
        out.append("cuda")
    return out


def resolve_backend(backend: str, device: torch.device, op: str = "op", native_fn: str | None = None) -> str:
    """Maps ``backend`` (incl. ``'auto'``) to a concrete backend usable on ``device``; raises clearly otherwise.

    ``native_fn``: the function the op needs from ``percept_fast._C`` / ``_C_cuda`` (a module built before
    the op was added lacks it; the backend then counts as unavailable)."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cpu":
            return "cpu" if _has(cpu_module(), native_fn) else "torch"
        if device.type == "cuda":
            if _has(cuda_module(), native_fn):
                return "cuda"
            if _TRITON is not None:
                return "triton"
        return "torch"
    if backend == "torch":
        return backend
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"{op}: backend='cpu' needs CPU tensors, got tensors on {device}")
        if not _has(cpu_module(), native_fn):
            why = _CPU_WHY or f"it has no {native_fn} (stale build)"
            raise BackendUnavailableError(
                f"{op}: backend='cpu' unavailable: percept_fast._C is not usable ({why}); run `bash tools/setup.sh`"
            )
        return backend
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"{op}: backend='cuda' needs CUDA tensors, got tensors on {device}")
        if not _has(cuda_module(), native_fn):
            why = _CUDA_WHY or f"it has no {native_fn} (stale build)"
            raise BackendUnavailableError(
                f"{op}: backend='cuda' unavailable: percept_fast._C_cuda is not usable ({why}); it needs nvcc at build time"
            )
        return backend
    # triton
    if _TRITON is None:
        raise BackendUnavailableError(f"{op}: backend='triton' unavailable: {_TRITON_WHY}")
    if device.type == "cpu" and not triton_interpret():
        raise ValueError(f"{op}: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: backend='triton' does not support tensors on {device}")
    return backend


# ------------------------------------------------------------------------------------------- validation


def check_tensor(
    t: object,
    name: str,
    *,
    ndim: int | Sequence[int] = 4,
    op: str = "op",
    check_finite: bool = True,
    allow_empty: bool = False,
) -> torch.Tensor:
    """A floating feature tensor of a supported dtype, the given rank, non-empty and (optionally) finite."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if t.dim() not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{op}: {name} must have {want} dimensions ([B, C, H, W]), got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{op}: {name} must be float32, float16 or bfloat16 (or float64), got {t.dtype}")
    if t.numel() == 0 and not allow_empty:
        raise ValueError(f"{op}: {name} is empty (shape {tuple(t.shape)}); every dimension must be >= 1")
    if check_finite:
        check_finite_values(t, name, op=op)
    return t


def host_checks(t: torch.Tensor) -> bool:
    """Whether a value check may read its result on the host: an eager CPU tensor (nothing to wait for, no trace).
    Otherwise (CUDA tensors, torch.compile / export traces) checks are device-side asserts (:func:`assert_values`)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def assert_values(ok: torch.Tensor, message: str, like: torch.Tensor) -> None:
    """Raises ``ValueError(message)`` when the 0-dim bool ``ok`` is False: at once for eager CPU tensors, else
    through ``torch._assert_async`` (no host synchronisation: a CUDA device-side assert, or the compiled graph's
    own check, which raises a ``RuntimeError`` with the same message)."""
    if host_checks(like):
        if not bool(ok):
            raise ValueError(message)
    else:
        torch._assert_async(ok, message)


def check_finite_values(t: torch.Tensor, name: str, *, op: str = "op") -> None:
    """NaN/Inf scan (one extra read of ``t``; the CPU kernels do it in their own pass instead, see
    :func:`raise_input_flags`). Device-side (no sync) on CUDA and under torch.compile (:func:`assert_values`)."""
    if t.numel() > 0:
        assert_values(torch.isfinite(t).all(), f"{op}: {name} contains NaN or Inf", t)


def check_pair(fx: torch.Tensor, fy: torch.Tensor, names: tuple[str, str] = ("fx", "fy"), *, op: str = "op") -> None:
    """Same shape, dtype and device."""
    a, b = names
    if fx.shape != fy.shape:
        raise ValueError(f"{op}: {a} and {b} must have the same shape, got {tuple(fx.shape)} and {tuple(fy.shape)}")
    check_same_kind(fx, fy, names, op=op)


def check_same_kind(fx: torch.Tensor, fy: torch.Tensor, names: tuple[str, str] = ("fx", "fy"), *, op: str = "op"):
    a, b = names
    if fx.dtype != fy.dtype:
        raise TypeError(f"{op}: {a} and {b} must have the same dtype, got {fx.dtype} and {fy.dtype}")
    if fx.device != fy.device:
        raise ValueError(f"{op}: {a} and {b} must be on the same device, got {fx.device} and {fy.device}")


def check_weight(
    weight: object,
    channels: int,
    like: torch.Tensor,
    name: str = "weight",
    *,
    op: str = "op",
    nonnegative: bool = False,
    check_values: bool = True,
) -> torch.Tensor | None:
    """Per-channel weight of shape [C] or [1, C, 1, 1] (as lpips' lin layers); returns it flattened to [C].

    ``check_values=False`` skips the finite / non-negative scan (two small tensor ops, ~15 us) for a caller whose
    kernel checks the values itself (:func:`raise_input_flags`)."""
    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(weight).__name__}")
    if tuple(weight.shape) not in ((channels,), (1, channels, 1, 1)):
        raise ValueError(
            f"{op}: {name} must have shape [{channels}] or [1, {channels}, 1, 1], got {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating tensor, got {weight.dtype}")
    if weight.device != like.device:
        raise ValueError(f"{op}: {name} must be on {like.device} like the features, got {weight.device}")
    if check_values:
        assert_values(torch.isfinite(weight).all(), f"{op}: {name} contains NaN or Inf", weight)
        if nonnegative:
            assert_values((weight >= 0).all(), f"{op}: {name} must be non-negative (lpips' lin weights are)", weight)
    return weight.reshape(channels)


def check_flag(value: object, name: str, *, op: str = "op") -> bool:
    """A bool argument (``per_layer``, ``spatial``, ``check_finite``): ``TypeError`` naming it otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a bool, got {type(value).__name__}")
    return value


def check_eps(eps: object, *, op: str = "op") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{op}: eps must be a float, got {type(eps).__name__}")
    eps = float(eps)
    if not (eps > 0.0 and eps < float("inf")):
        raise ValueError(f"{op}: eps must be finite and > 0, got {eps}")
    return eps


def split_f64(value: float) -> tuple[float, float]:
    """``value`` as two float32-exact halves, ``hi + lo == value`` to about 2**-48 relative (for |value| >= 2e-31).

    Triton passes every Python float to a compiled kernel as an fp32 scalar (the interpreter keeps it a Python
    float), so a float64 kernel that took ``eps`` directly would compute with eps rounded to fp32, a relative error
    of ~1e-8 that a zero feature vector (norm = eps) carries into its gradient. The kernel rebuilds the value as
    ``cast(hi) + cast(lo)`` in its accumulation type: exact enough for float64, ``hi`` itself for float32.
    """
    if not abs(value) < _FP32_MAX:  # beyond float32: nothing to split (the kernel sees inf, as before)
        return value, 0.0
    if 0.0 < abs(value) < _FP32_MIN_NORMAL:
        raise ValueError(
            f"eps must be at least {_FP32_MIN_NORMAL:.4g} (the smallest normal float32) for backend='triton', "
            f"got {value!r}; use backend='cpu'/'cuda'/'torch' for a smaller eps"
        )
    hi = _F32.unpack(_F32.pack(value))[0]
    return hi, _F32.unpack(_F32.pack(value - hi))[0]


_F32 = struct.Struct("f")
_FP32_MAX = 3.4028234663852886e38
_FP32_MIN_NORMAL = 1.1754943508222875e-38


def out_dtype(dtype: torch.dtype) -> torch.dtype:
    """Distances are accumulated and returned in float32 (float64 for float64 inputs)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------- kernel-side validation

# InputFlags of the CPU kernels (csrc/percept_fast/common.h): the kernels check the values during their own pass
# over the inputs (no extra read) and return which argument held a bad one.
NONFINITE_X, NONFINITE_Y, NONFINITE_WEIGHT, NEGATIVE_WEIGHT = 1, 2, 4, 8


def raise_input_flags(flags: int, names: Sequence[str], *, op: str = "op", check_finite: bool = True) -> None:
    """Raises the ValueError :func:`check_tensor` / :func:`check_weight` would have raised for the kernel's ``flags``
    (``names``: the features', then the weight's). Weight flags always raise; NaN/Inf features only with
    ``check_finite``. Called before the kernel's output is returned, which is then dropped."""
    if flags & NONFINITE_WEIGHT:
        raise ValueError(f"{op}: {names[2]} contains NaN or Inf")
    if flags & NEGATIVE_WEIGHT:
        raise ValueError(f"{op}: {names[2]} must be non-negative (lpips' lin weights are)")
    if check_finite:
        for bit, name in ((NONFINITE_X, names[0]), (NONFINITE_Y, names[1])):
            if flags & bit:
                raise ValueError(f"{op}: {name} contains NaN or Inf")


def direct_call_ok(*tensors: torch.Tensor | None) -> bool:
    """True when calling an op's forward function directly is equivalent to calling its ``torch.library`` custom
    op: no autograd to record, no torch.compile / dispatch-mode tracing, no functorch transform, plain tensors.
    The custom op's dispatch costs ~20 us a call, as much as the kernel of a small layer."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0:
        return False
    if torch._C._is_torch_function_mode_enabled() or torch._C._are_functorch_transforms_active():
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or (grad and t.requires_grad)):
            return False
    return True


# ------------------------------------------------------------------------------------------- native args


def tensor_arg(t: torch.Tensor) -> tuple[int, tuple[int, ...], tuple[int, ...], int]:
    """(data_ptr, sizes, strides (elements), dtype_code) of a tensor of rank <= 4, padded on the left to 4-D."""
    if t.dim() > 4:
        raise ValueError(f"tensor_arg: rank {t.dim()} > 4")
    pad = 4 - t.dim()
    sizes = (1,) * pad + tuple(t.shape)
    strides = (0,) * pad + tuple(t.stride())
    return t.data_ptr(), sizes, strides, DTYPE_CODES[t.dtype]


def cuda_stream(t: torch.Tensor) -> int:
    """The raw handle of the current CUDA stream of ``t``'s device (what the CUDA launchers take)."""
    return torch.cuda.current_stream(t.device).cuda_stream
