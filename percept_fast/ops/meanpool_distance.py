"""Meanpool distance: spatial mean -> unit-normalise over channels -> squared distance / C.

``meanpool_distance`` (per sample, ``[B]``) and ``meanpool_distance_matrix`` (all pairs). Maths, gradient and
kernels: ``docs/percept_fast.md#meanpool_distance``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _common as cm
from .lpips_distance import NORMALIZE_MODES, _norm_backward, normalize_features

__all__ = ["meanpool_distance", "meanpool_distance_matrix", "meanpool_reference"]

OP = "meanpool_distance"


def meanpool_reference(
    fx: torch.Tensor, fy: torch.Tensor, eps: float = 1e-10, normalize: str = "lpips"
) -> torch.Tensor:
    """Plain-PyTorch reference (float32 compute; float64 for float64 inputs)."""
    cdt = cm.out_dtype(fx.dtype)
    u = normalize_features(fx.to(cdt).mean(dim=(2, 3)), eps, normalize, dim=1)
    v = normalize_features(fy.to(cdt).mean(dim=(2, 3)), eps, normalize, dim=1)
    return ((u - v) ** 2).sum(dim=1) / fx.shape[1]


# ----------------------------------------------------------------------------------------------- triton

try:  # Triton is optional: the kernel below is only defined (and JIT-wrapped lazily) when it imports
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover
    triton = None

_TRITON_KERNELS: dict[bool, object] = {}
# no FMA contraction (x == y must give exactly 0: symmetric rounding)
_NO_FMA: dict = {"enable_fp_fusion": False}


if triton is not None:

    def _meanpool_kernel(
        X,
        Y,
        MX,
        MY,
        C,
        H,
        W,
        sxb,
        sxc,
        sxh,
        sxw,
        syb,
        syc,
        syh,
        syw,
        ACC64: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BLOCK_P: tl.constexpr,
    ):
        pid_c = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        P = H * W
        offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        oc = offs_c.to(tl.int64)
        acc_t = tl.float64 if ACC64 else tl.float32
        ax = tl.zeros([BLOCK_C], dtype=acc_t)
        ay = tl.zeros([BLOCK_C], dtype=acc_t)
        for p0 in range(0, P, BLOCK_P):
            offs_p = p0 + tl.arange(0, BLOCK_P)
            mask_p = offs_p < P
            hh = (offs_p // W).to(tl.int64)
            ww = (offs_p % W).to(tl.int64)
            m = mask_c[:, None] & mask_p[None, :]
            xv = tl.load(X + (b * sxb + oc[:, None] * sxc + hh[None, :] * sxh + ww[None, :] * sxw), mask=m, other=0.0)
            yv = tl.load(Y + (b * syb + oc[:, None] * syc + hh[None, :] * syh + ww[None, :] * syw), mask=m, other=0.0)
            ax += tl.sum(xv.to(acc_t), axis=1)
            ay += tl.sum(yv.to(acc_t), axis=1)
        tl.store(MX + b * C + offs_c, ax / P, mask=mask_c)
        tl.store(MY + b * C + offs_c, ay / P, mask=mask_c)


def _triton_kernel():
    key = cm.triton_interpret()
    if key not in _TRITON_KERNELS:
        _TRITON_KERNELS[key] = triton.jit(_meanpool_kernel)
    return _TRITON_KERNELS[key]


def _finalize_torch(mx, my, eps, mode):
    n = "lpips" if mode == 0 else "stable"
    u = normalize_features(mx, eps, n, dim=1)
    v = normalize_features(my, eps, n, dim=1)
    return ((u - v) ** 2).sum(dim=1) / mx.shape[1]


def _forward_triton(fx, fy, eps, mode, check_finite=False, layer=-1):
    B, C, H, W = fx.shape
    cdt = cm.out_dtype(fx.dtype)
    mx = torch.empty(B, C, dtype=cdt, device=fx.device)
    my = torch.empty(B, C, dtype=cdt, device=fx.device)
    block_c = min(32, max(1, 1 << (C - 1).bit_length()))
    block_p = 32 if cm.triton_interpret() else 128
    _triton_kernel()[(-(-C // block_c), B)](
        fx,
        fy,
        mx,
        my,
        C,
        H,
        W,
        *fx.stride(),
        *fy.stride(),
        ACC64=cdt == torch.float64,
        BLOCK_C=block_c,
        BLOCK_P=block_p,
        **_NO_FMA,
    )
    return _finalize_torch(mx, my, eps, mode)


def _forward_cpu(fx, fy, eps, mode, check_finite=False, layer=-1):
    # the kernel reports NaN/Inf features found in its own pass (see meanpool_distance)
    out = torch.empty(fx.shape[0], dtype=cm.out_dtype(fx.dtype))
    flags = cm.cpu_module().meanpool_forward(cm.tensor_arg(fx), cm.tensor_arg(fy), float(eps), mode, out.data_ptr())
    if flags:
        names = ("fx", "fy", "") if layer < 0 else (f"fx[{layer}]", f"fy[{layer}]", "")
        cm.raise_input_flags(flags, names, op=OP, check_finite=check_finite)
    return out


def _forward_cuda(fx, fy, eps, mode, check_finite=False, layer=-1):
    B, C, _, _ = fx.shape
    cdt = cm.out_dtype(fx.dtype)
    mod = cm.cuda_module()
    with torch.cuda.device(fx.device):
        out = torch.empty(B, dtype=cdt, device=fx.device)
        ws = torch.empty(
            mod.meanpool_workspace_numel(cm.tensor_arg(fx), cm.tensor_arg(fy)), dtype=cdt, device=fx.device
        )
        mod.meanpool_forward(
            cm.tensor_arg(fx),
            cm.tensor_arg(fy),
            float(eps),
            mode,
            out.data_ptr(),
            ws.data_ptr(),
            ws.numel(),
            cm.cuda_stream(fx),
        )
    return out


_FORWARDS = {"cpu": _forward_cpu, "triton": _forward_triton, "cuda": _forward_cuda}


@torch.library.custom_op("percept_fast::meanpool_distance", mutates_args=())
def _meanpool_op(
    fx: torch.Tensor,
    fy: torch.Tensor,
    eps: float,
    mode: int,
    backend: str,
    check_finite: bool = False,
    layer: int = -1,
) -> torch.Tensor:
    return _FORWARDS[backend](fx, fy, eps, mode, check_finite, layer)


@_meanpool_op.register_fake
def _meanpool_fake(fx, fy, eps, mode, backend, check_finite=False, layer=-1):
    return fx.new_empty((fx.shape[0],), dtype=cm.out_dtype(fx.dtype))


def meanpool_backward(fx, fy, eps, mode, grad):
    """Analytic gradients (fx, fy) (see the module docstring)."""
    cdt = cm.out_dtype(fx.dtype)
    B, C, H, W = fx.shape
    mx = fx.to(cdt).mean(dim=(2, 3))
    my = fy.to(cdt).mean(dim=(2, 3))
    sx2 = (mx * mx).sum(1, keepdim=True)
    sy2 = (my * my).sum(1, keepdim=True)
    sx, sy = sx2.sqrt(), sy2.sqrt()
    if mode == 0:
        nx, ny = sx + eps, sy + eps
    else:
        nx, ny = (sx2 + eps * eps).sqrt(), (sy2 + eps * eps).sqrt()
    gu = (2.0 / C) * grad.to(cdt).reshape(B, 1) * (mx / nx - my / ny)
    gmx = _norm_backward(gu, mx, nx, sx, mode) / (H * W)
    gmy = -_norm_backward(gu, my, ny, sy, mode) / (H * W)
    gx = gmx[:, :, None, None].expand(B, C, H, W).to(fx.dtype)
    gy = gmy[:, :, None, None].expand(B, C, H, W).to(fy.dtype)
    return gx, gy


def _setup_context(ctx, inputs, output):
    fx, fy, eps, mode = inputs[:4]
    ctx.save_for_backward(fx, fy)
    ctx.eps, ctx.mode = eps, mode


def _backward(ctx, grad):
    fx, fy = ctx.saved_tensors
    gx, gy = meanpool_backward(fx, fy, ctx.eps, ctx.mode, grad)
    need = ctx.needs_input_grad
    return (gx if need[0] else None), (gy if need[1] else None), None, None, None, None, None


_meanpool_op.register_autograd(_backward, setup_context=_setup_context)


def _check_normalize(normalize):
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"{OP}: normalize must be one of {tuple(NORMALIZE_MODES)}, got {normalize!r}")
    return NORMALIZE_MODES[normalize]


def _layer(fx, fy, eps, normalize, mode, backend, check_finite, layer):
    na, nb = ("fx", "fy") if layer < 0 else (f"fx[{layer}]", f"fy[{layer}]")
    cm.check_tensor(fx, na, op=OP, check_finite=False)
    cm.check_tensor(fy, nb, op=OP, check_finite=False)
    cm.check_pair(fx, fy, (na, nb), op=OP)
    be = cm.resolve_backend(backend, fx.device, OP, native_fn="meanpool_forward")
    if be != "cpu" and check_finite:  # the C++ kernel checks the values in its own pass (no extra read)
        cm.check_finite_values(fx, na, op=OP)
        cm.check_finite_values(fy, nb, op=OP)
    if be == "torch":
        return meanpool_reference(fx, fy, eps, normalize)
    if be == "cpu" and cm.direct_call_ok(fx, fy):  # nothing for autograd / tracing to see: skip the op's dispatch
        return _forward_cpu(fx, fy, eps, mode, check_finite, layer)
    return _meanpool_op(fx, fy, eps, mode, be, check_finite, layer)


def meanpool_distance(
    fx: torch.Tensor | Sequence[torch.Tensor],
    fy: torch.Tensor | Sequence[torch.Tensor],
    *,
    eps: float = 1e-10,
    normalize: str = "lpips",
    per_layer: bool = False,
    backend: str = "auto",
    check_finite: bool = True,
) -> torch.Tensor:
    """Meanpool distance ``[B]`` between ``[B, C, H, W]`` feature maps (maths: ``docs/percept_fast/ops.md``).

    Args:
        fx, fy: features (float32/float16/bfloat16, or float64), same shape/dtype/device, any strides; or
            equal-length lists of such (one per layer, same ``B``): the distances are summed over layers.
        eps: normalisation epsilon (> 0). normalize: ``'lpips'`` or ``'stable'``.
        per_layer: with lists, return ``[B, L]`` per-layer distances instead of their sum.
        backend: ``'auto'`` | ``'torch'`` | ``'cpu'`` | ``'triton'`` | ``'cuda'``.
        check_finite: reject NaN/Inf inputs (``ValueError`` naming the input). The C++ kernel does it in its own
            pass (free); other backends need one extra read of the inputs, a device-side assert (no host
            synchronisation) on CUDA and under torch.compile.

    Returns:
        ``[B]`` (or ``[B, L]``) float32 (float64 for float64 inputs).
    """
    mode = _check_normalize(normalize)
    eps = cm.check_eps(eps, op=OP)
    cm.check_flag(per_layer, "per_layer", op=OP)
    cm.check_flag(check_finite, "check_finite", op=OP)
    if isinstance(fx, torch.Tensor) and isinstance(fy, torch.Tensor):
        if per_layer:
            raise ValueError(f"{OP}: per_layer=True needs lists of per-layer features (fx, fy are tensors)")
        return _layer(fx, fy, eps, normalize, mode, backend, check_finite, -1)
    if not isinstance(fx, (list, tuple)) or not isinstance(fy, (list, tuple)):
        raise TypeError(f"{OP}: fx and fy must both be tensors or both be lists/tuples of tensors")
    if len(fx) != len(fy) or len(fx) == 0:
        raise ValueError(f"{OP}: fx and fy must be non-empty lists of equal length, got {len(fx)} and {len(fy)}")
    outs = []
    for i, (a, b) in enumerate(zip(fx, fy)):
        outs.append(_layer(a, b, eps, normalize, mode, backend, check_finite, i))
        if outs[-1].shape[0] != outs[0].shape[0]:
            raise ValueError(f"{OP}: every layer must have the same batch size; fx[{i}] has {outs[-1].shape[0]}")
    if per_layer:
        return torch.stack(outs, dim=1)
    total = outs[0]
    for o in outs[1:]:
        total = total + o
    return total


def meanpool_distance_matrix(
    fx: torch.Tensor, fy: torch.Tensor, *, eps: float = 1e-10, normalize: str = "lpips", check_finite: bool = True
) -> torch.Tensor:
    """All-pairs meanpool distances ``[N, M]`` (one GEMM on the normalised means, clamped at 0, / C)."""
    op = OP + "_matrix"
    _check_normalize(normalize)
    eps = cm.check_eps(eps, op=op)
    cm.check_tensor(fx, "fx", op=op, check_finite=check_finite)
    cm.check_tensor(fy, "fy", op=op, check_finite=check_finite)
    cm.check_same_kind(fx, fy, op=op)
    if fx.shape[1] != fy.shape[1]:
        raise ValueError(f"{op}: fx and fy must have the same channel count, got {fx.shape[1]} and {fy.shape[1]}")
    cdt = cm.out_dtype(fx.dtype)
    u = normalize_features(fx.to(cdt).mean(dim=(2, 3)), eps, normalize, dim=1)
    v = normalize_features(fy.to(cdt).mean(dim=(2, 3)), eps, normalize, dim=1)
    d = (u * u).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2.0 * (u @ v.T)
    return d.clamp_min(0.0) / fx.shape[1]
