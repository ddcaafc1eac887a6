"""LPIPS layer distance, fused: normalise over channels, weighted squared difference, spatial mean.

``lpips_distance`` (per sample, ``[B]``; maps with ``spatial=True``) and ``lpips_distance_matrix`` (all pairs).
Maths, gradient and kernels: ``docs/percept_fast.md#lpips_distance``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _common as cm

__all__ = ["lpips_distance", "lpips_distance_matrix", "lpips_layer_reference", "normalize_features"]

OP = "lpips_distance"
NORMALIZE_MODES = {"lpips": 0, "stable": 1}


# --------------------------------------------------------------------------------------------- reference


def normalize_features(x: torch.Tensor, eps: float = 1e-10, normalize: str = "lpips", dim: int = 1) -> torch.Tensor:
    """``x / (sqrt(sum x^2) + eps)`` ('lpips', as lpips.normalize_tensor) or ``x / sqrt(sum x^2 + eps^2)`` ('stable')."""
    if normalize == "lpips":
        norm_factor = torch.sqrt(torch.sum(x**2, dim=dim, keepdim=True))
        return x / (norm_factor + eps)
    return x / torch.sqrt(torch.sum(x**2, dim=dim, keepdim=True) + eps * eps)


def lpips_layer_reference(
    fx: torch.Tensor,
    fy: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1e-10,
    normalize: str = "lpips",
    spatial: bool = False,
) -> torch.Tensor:
    """Plain-PyTorch reference of one layer (differentiable by autograd). Computes in float32 (float64 for float64)."""
    cdt = cm.out_dtype(fx.dtype)
    u = normalize_features(fx.to(cdt), eps, normalize)
    v = normalize_features(fy.to(cdt), eps, normalize)
    d = (u - v) ** 2
    if weight is not None:
        d = d * weight.reshape(1, -1, 1, 1).to(cdt)
    d = d.sum(dim=1, keepdim=True)
    if spatial:
        return d
    return d.mean(dim=(2, 3)).reshape(fx.shape[0])


# ----------------------------------------------------------------------------------------------- triton

try:  # Triton is optional: the kernel below is only defined (and JIT-wrapped lazily) when it imports
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover
    triton = None

_TRITON_KERNELS: dict[tuple[bool, bool], object] = {}
# no FMA contraction (x == y must give exactly 0: symmetric rounding)
_NO_FMA: dict = {"enable_fp_fusion": False}


if triton is not None:

    def _lpips_kernel(
        X,
        Y,
        Wt,
        MAP,
        PART,
        C,
        H,
        W,
        NB,
        sxb,
        sxc,
        sxh,
        sxw,
        syb,
        syc,
        syh,
        syw,
        eps_hi,
        eps_lo,
        MODE: tl.constexpr,
        WEIGHTED: tl.constexpr,
        SPATIAL: tl.constexpr,
        ACC64: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        pid_p = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        P = H * W
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        hh = (offs_p // W).to(tl.int64)
        ww = (offs_p % W).to(tl.int64)
        px = b * sxb + hh * sxh + ww * sxw
        py = b * syb + hh * syh + ww * syw
        acc_t = tl.float64 if ACC64 else tl.float32
        # a Python float reaches a compiled kernel as fp32: eps comes as two fp32 halves (split_f64)
        eps = tl.cast(eps_hi, acc_t) + tl.cast(eps_lo, acc_t)
        axx = tl.zeros([BLOCK_P], dtype=acc_t)
        ayy = tl.zeros([BLOCK_P], dtype=acc_t)
        awxx = tl.zeros([BLOCK_P], dtype=acc_t)
        awyy = tl.zeros([BLOCK_P], dtype=acc_t)
        awxy = tl.zeros([BLOCK_P], dtype=acc_t)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            m = mask_c[:, None] & mask_p[None, :]
            oc = offs_c.to(tl.int64)
            xv = tl.load(X + (oc[:, None] * sxc + px[None, :]), mask=m, other=0.0).to(acc_t)
            yv = tl.load(Y + (oc[:, None] * syc + py[None, :]), mask=m, other=0.0).to(acc_t)
            xx = xv * xv
            yy = yv * yv
            axx += tl.sum(xx, axis=0)
            ayy += tl.sum(yy, axis=0)
            if WEIGHTED:
                wv = tl.load(Wt + offs_c, mask=mask_c, other=0.0).to(acc_t)[:, None]
                awxx += tl.sum(wv * xx, axis=0)
                awyy += tl.sum(wv * yy, axis=0)
                awxy += tl.sum(wv * (xv * yv), axis=0)
            else:
                awxy += tl.sum(xv * yv, axis=0)
        if not WEIGHTED:
            awxx = axx
            awyy = ayy
        if MODE == 0:
            nx = tl.sqrt(axx) + eps
            ny = tl.sqrt(ayy) + eps
        else:
            nx = tl.sqrt(axx + eps * eps)
            ny = tl.sqrt(ayy + eps * eps)
        ix = 1.0 / nx
        iy = 1.0 / ny
        # an overflowed norm (huge finite inputs) zeroes that normalised vector, as the reference's x / inf
        # (lpips_kernel.h: not inf * 0 = NaN)
        tx = tl.where(ix == 0, 0.0, (awxx * ix) * ix)
        ty = tl.where(iy == 0, 0.0, (awyy * iy) * iy)
        txy = tl.where((ix == 0) | (iy == 0), 0.0, (awxy * ix) * iy)
        d = (tx + ty) - (txy + txy)
        d = tl.where(mask_p & ~(d < 0), d, 0.0)  # clamp rounding below 0; NaN stays NaN like the reference
        if SPATIAL:
            tl.store(MAP + b * P + offs_p, d, mask=mask_p)
        tl.store(PART + b * NB + pid_p, tl.sum(d, axis=0))

    def _lpips_bwd_kernel(
        X,
        Y,
        Wt,
        G,
        GX,
        GY,
        GWPART,
        C,
        H,
        W,
        NB,
        sxb,
        sxc,
        sxh,
        sxw,
        syb,
        syc,
        syh,
        syw,
        sgb,
        sgh,
        sgw,
        soxb,
        soxc,
        soxh,
        soxw,
        soyb,
        soyc,
        soyh,
        soyw,
        eps_hi,
        eps_lo,
        MODE: tl.constexpr,
        WEIGHTED: tl.constexpr,
        SPATIAL: tl.constexpr,
        NEED_X: tl.constexpr,
        NEED_Y: tl.constexpr,
        NEED_W: tl.constexpr,
        ACC64: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        # the same maths as lpips_pixel_grad / lpips_channel_grad in csrc/percept_fast/lpips_kernel.h
        pid_p = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        P = H * W
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        hh = (offs_p // W).to(tl.int64)
        ww = (offs_p % W).to(tl.int64)
        px = b * sxb + hh * sxh + ww * sxw
        py = b * syb + hh * syh + ww * syw
        acc_t = tl.float64 if ACC64 else tl.float32
        # a Python float reaches a compiled kernel as fp32: eps comes as two fp32 halves (split_f64)
        eps = tl.cast(eps_hi, acc_t) + tl.cast(eps_lo, acc_t)
        axx = tl.zeros([BLOCK_P], dtype=acc_t)
        ayy = tl.zeros([BLOCK_P], dtype=acc_t)
        awxx = tl.zeros([BLOCK_P], dtype=acc_t)
        awyy = tl.zeros([BLOCK_P], dtype=acc_t)
        awxy = tl.zeros([BLOCK_P], dtype=acc_t)
        poison = tl.zeros([BLOCK_P], dtype=acc_t)  # 0, or NaN where an input is NaN/Inf (x * 0)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            m = mask_c[:, None] & mask_p[None, :]
            oc = offs_c.to(tl.int64)
            xv = tl.load(X + (oc[:, None] * sxc + px[None, :]), mask=m, other=0.0).to(acc_t)
            yv = tl.load(Y + (oc[:, None] * syc + py[None, :]), mask=m, other=0.0).to(acc_t)
            xx = xv * xv
            yy = yv * yv
            axx += tl.sum(xx, axis=0)
            ayy += tl.sum(yy, axis=0)
            poison += tl.sum(xv * 0.0 + yv * 0.0, axis=0)
            if WEIGHTED:
                wv = tl.load(Wt + offs_c, mask=mask_c, other=0.0).to(acc_t)[:, None]
                awxx += tl.sum(wv * xx, axis=0)
                awyy += tl.sum(wv * yy, axis=0)
                awxy += tl.sum(wv * (xv * yv), axis=0)
            else:
                awxy += tl.sum(xv * yv, axis=0)
        if not WEIGHTED:
            awxx = axx
            awyy = ayy
        if MODE == 0:
            nx = tl.sqrt(axx) + eps
            ny = tl.sqrt(ayy) + eps
        else:
            nx = tl.sqrt(axx + eps * eps)
            ny = tl.sqrt(ayy + eps * eps)
        ix = 1.0 / nx
        iy = 1.0 / ny
        if SPATIAL:
            g = tl.load(G + b * sgb + hh * sgh + ww * sgw, mask=mask_p, other=0.0).to(acc_t)
        else:
            g = tl.load(G + b * sgb).to(acc_t) * (tl.full([BLOCK_P], 1.0, dtype=acc_t) / P)
        x_zero = ix == 0
        y_zero = iy == 0
        g2 = (g + g) + poison
        cxx = (g2 * ix) * ix
        cxy = (g2 * ix) * iy
        cyy = (g2 * iy) * iy
        pxx = tl.where(x_zero, 0.0, awxx * ix)
        pyy = tl.where(y_zero, 0.0, awyy * iy)
        pxy_x = tl.where(y_zero, 0.0, awxy * iy)
        pxy_y = tl.where(x_zero, 0.0, awxy * ix)
        if MODE == 0:
            s = tl.sqrt(axx)
            t = tl.sqrt(ayy)
            fx = tl.where(s > 0, 1.0 / tl.where(s > 0, s, 1.0), 0.0)
            fy = tl.where(t > 0, 1.0 / tl.where(t > 0, t, 1.0), 0.0)
            kx = ((g2 * (pxx - pxy_x)) * fx) * (ix * ix)
            ky = ((g2 * (pyy - pxy_y)) * fy) * (iy * iy)
        else:
            kx = (g2 * (pxx - pxy_x)) * ((ix * ix) * ix)
            ky = (g2 * (pyy - pxy_y)) * ((iy * iy) * iy)
        kx = tl.where(x_zero, poison, kx)
        ky = tl.where(y_zero, poison, ky)
        gp = g + poison
        ox = b * soxb + hh * soxh + ww * soxw
        oy = b * soyb + hh * soyh + ww * soyw
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            m = mask_c[:, None] & mask_p[None, :]
            oc = offs_c.to(tl.int64)
            xv = tl.load(X + (oc[:, None] * sxc + px[None, :]), mask=m, other=0.0).to(acc_t)
            yv = tl.load(Y + (oc[:, None] * syc + py[None, :]), mask=m, other=0.0).to(acc_t)
            if WEIGHTED:
                wv = tl.load(Wt + offs_c, mask=mask_c, other=0.0).to(acc_t)[:, None]
            else:
                wv = tl.full([BLOCK_C, 1], 1.0, dtype=acc_t)
            if NEED_X:
                gxv = wv * (cxx[None, :] * xv - cxy[None, :] * yv) - kx[None, :] * xv
                tl.store(GX + (oc[:, None] * soxc + ox[None, :]), gxv.to(GX.dtype.element_ty), mask=m)
            if NEED_Y:
                gyv = wv * (cyy[None, :] * yv - cxy[None, :] * xv) - ky[None, :] * yv
                tl.store(GY + (oc[:, None] * soyc + oy[None, :]), gyv.to(GY.dtype.element_ty), mask=m)
            if NEED_W:
                d = xv * ix[None, :] - yv * iy[None, :]
                part = tl.sum(tl.where(m, gp[None, :] * (d * d), 0.0), axis=1)
                tl.store(GWPART + (b * NB + pid_p) * C + offs_c, part, mask=mask_c)


def _triton_kernel(bwd: bool = False):
    """The Triton kernel (the backward one with ``bwd``), JIT-wrapped lazily so TRITON_INTERPRET set after import
    still takes effect."""
    key = (cm.triton_interpret(), bwd)
    if key not in _TRITON_KERNELS:
        _TRITON_KERNELS[key] = triton.jit(_lpips_bwd_kernel if bwd else _lpips_kernel)
    return _TRITON_KERNELS[key]


def _forward_triton(fx, fy, w, eps, mode, spatial, check_finite=False, layer=-1):
    B, C, H, W = fx.shape
    P = H * W
    cdt = cm.out_dtype(fx.dtype)
    block_p = 64 if cm.triton_interpret() else 128
    block_c = min(16 if cm.triton_interpret() else 8, max(1, 1 << (C - 1).bit_length()))
    nb = -(-P // block_p)
    part = torch.empty(B, nb, dtype=cdt, device=fx.device)
    dmap = torch.empty(B, 1, H, W, dtype=cdt, device=fx.device) if spatial else part
    _triton_kernel()[(nb, B)](
        fx,
        fy,
        w if w is not None else part,
        dmap,
        part,
        C,
        H,
        W,
        nb,
        *fx.stride(),
        *fy.stride(),
        *cm.split_f64(eps),
        MODE=mode,
        WEIGHTED=w is not None,
        SPATIAL=spatial,
        ACC64=cdt == torch.float64,
        BLOCK_P=block_p,
        BLOCK_C=block_c,
        **_NO_FMA,
    )
    if spatial:
        return dmap
    return part.sum(dim=1) / P


# ------------------------------------------------------------------------------------------ native calls


def _names(layer: int) -> tuple[str, str, str]:
    """The argument names of layer ``layer`` in error messages (-1: a single-tensor call)."""
    return ("fx", "fy", "weight") if layer < 0 else (f"fx[{layer}]", f"fy[{layer}]", f"weight[{layer}]")


def _forward_cpu(fx, fy, w, eps, mode, spatial, check_finite=False, layer=-1):
    # the kernel validates the weight (finite, >= 0) and, in its pass, the features (NaN/Inf): see _layer
    B, _, H, W = fx.shape
    cdt = cm.out_dtype(fx.dtype)
    out = torch.empty(B, dtype=cdt)
    dmap = torch.empty(B, 1, H, W, dtype=cdt) if spatial else None
    flags = cm.cpu_module().lpips_forward(
        cm.tensor_arg(fx),
        cm.tensor_arg(fy),
        w.data_ptr() if w is not None else 0,
        float(eps),
        mode,
        out.data_ptr(),
        dmap.data_ptr() if dmap is not None else 0,
    )
    if flags:
        cm.raise_input_flags(flags, _names(layer), op=OP, check_finite=check_finite)
    return dmap if spatial else out


def _forward_cuda(fx, fy, w, eps, mode, spatial, check_finite=False, layer=-1):
    B, _, H, W = fx.shape
    cdt = cm.out_dtype(fx.dtype)
    mod = cm.cuda_module()
    with torch.cuda.device(fx.device):
        out = torch.empty(B, dtype=cdt, device=fx.device)
        dmap = torch.empty(B, 1, H, W, dtype=cdt, device=fx.device) if spatial else None
        ws = torch.empty(mod.lpips_workspace_numel(cm.tensor_arg(fx), cm.tensor_arg(fy)), dtype=cdt, device=fx.device)
        mod.lpips_forward(
            cm.tensor_arg(fx),
            cm.tensor_arg(fy),
            w.data_ptr() if w is not None else 0,
            float(eps),
            mode,
            out.data_ptr(),
            dmap.data_ptr() if dmap is not None else 0,
            ws.data_ptr(),
            ws.numel(),
            cm.cuda_stream(fx),
        )
    return dmap if spatial else out


_FORWARDS = {"cpu": _forward_cpu, "triton": _forward_triton, "cuda": _forward_cuda}


# ------------------------------------------------------------------------------------------ fused backward


def _grad_outputs(fx, need_x, need_y, need_w):
    """The gradient buffers of the fused backward: ``empty_like`` (the features' layout when dense) where wanted,
    else empty ``[0]`` tensors; ``gw`` in the accumulation dtype."""
    none = fx.new_empty(0)
    gx = torch.empty_like(fx) if need_x else none
    gy = torch.empty_like(fx) if need_y else fx.new_empty(0)
    gw = (
        fx.new_empty(fx.shape[1], dtype=cm.out_dtype(fx.dtype))
        if need_w
        else fx.new_empty(0, dtype=cm.out_dtype(fx.dtype))
    )
    return gx, gy, gw


def _upstream(grad, fx, spatial):
    """The upstream gradient as the kernels take it: accumulation dtype, ``[B, 1, H, W]`` (spatial) or
    ``[B, 1, 1, 1]``, strides kept (autograd often hands an expanded, stride-0 gradient)."""
    g = grad.to(cm.out_dtype(fx.dtype))
    return g.reshape(fx.shape[0], 1, fx.shape[2], fx.shape[3]) if spatial else g.reshape(fx.shape[0], 1, 1, 1)


def _empty_arg(t):
    return (0, (0, 0, 0, 0), (0, 0, 0, 0), cm.DTYPE_CODES[t.dtype])


def _backward_cpu(fx, fy, w, grad, eps, mode, spatial, need_x, need_y, need_w):
    gx, gy, gw = _grad_outputs(fx, need_x, need_y, need_w)
    cm.cpu_module().lpips_backward(
        cm.tensor_arg(fx),
        cm.tensor_arg(fy),
        w.data_ptr() if w is not None else 0,
        cm.tensor_arg(_upstream(grad, fx, spatial)),
        float(eps),
        mode,
        bool(spatial),
        cm.tensor_arg(gx) if need_x else _empty_arg(fx),
        cm.tensor_arg(gy) if need_y else _empty_arg(fx),
        gw.data_ptr() if need_w else 0,
    )
    return gx, gy, gw


def _weight_grad_torch(fx, fy, grad, eps, mode, spatial):
    """dd/dw_c = sum_{b,h,w} g (u_c - v_c)^2 in plain PyTorch (the CUDA kernel computes only the feature gradients;
    a trainable lin weight on CUDA costs this extra pass)."""
    cdt = cm.out_dtype(fx.dtype)
    normalize = "lpips" if mode == 0 else "stable"
    diff = normalize_features(fx.to(cdt), eps, normalize) - normalize_features(fy.to(cdt), eps, normalize)
    g = _upstream(grad, fx, spatial)
    if not spatial:
        g = g / (fx.shape[2] * fx.shape[3])
    return (g * diff * diff).sum(dim=(0, 2, 3))


def _backward_cuda(fx, fy, w, grad, eps, mode, spatial, need_x, need_y, need_w):
    gx, gy, _ = _grad_outputs(fx, need_x, need_y, False)
    if need_x or need_y:
        with torch.cuda.device(fx.device):
            cm.cuda_module().lpips_backward(
                cm.tensor_arg(fx),
                cm.tensor_arg(fy),
                w.data_ptr() if w is not None else 0,
                cm.tensor_arg(_upstream(grad, fx, spatial)),
                float(eps),
                mode,
                bool(spatial),
                cm.tensor_arg(gx) if need_x else _empty_arg(fx),
                cm.tensor_arg(gy) if need_y else _empty_arg(fx),
                cm.cuda_stream(fx),
            )
    gw = (
        _weight_grad_torch(fx, fy, grad, eps, mode, spatial)
        if need_w
        else fx.new_empty(0, dtype=cm.out_dtype(fx.dtype))
    )
    return gx, gy, gw


def _backward_triton(fx, fy, w, grad, eps, mode, spatial, need_x, need_y, need_w):
    B, C, H, W = fx.shape
    P = H * W
    cdt = cm.out_dtype(fx.dtype)
    gx, gy, _ = _grad_outputs(fx, need_x, need_y, False)
    block_p = 64 if cm.triton_interpret() else 128
    block_c = min(16 if cm.triton_interpret() else 8, max(1, 1 << (C - 1).bit_length()))
    nb = -(-P // block_p)
    gpart = torch.empty(B * nb, C, dtype=cdt, device=fx.device) if need_w else gx.new_empty(1, dtype=cdt)
    g = _upstream(grad, fx, spatial)
    sgb, _, sgh, sgw = g.stride()
    ox = gx if need_x else fx  # never written when not wanted (NEED_X/NEED_Y are compile-time)
    oy = gy if need_y else fx
    _triton_kernel(bwd=True)[(nb, B)](
        fx,
        fy,
        w if w is not None else g,
        g,
        ox,
        oy,
        gpart,
        C,
        H,
        W,
        nb,
        *fx.stride(),
        *fy.stride(),
        sgb,
        sgh,
        sgw,
        *ox.stride(),
        *oy.stride(),
        *cm.split_f64(eps),
        MODE=mode,
        WEIGHTED=w is not None,
        SPATIAL=spatial,
        NEED_X=need_x,
        NEED_Y=need_y,
        NEED_W=need_w,
        ACC64=cdt == torch.float64,
        BLOCK_P=block_p,
        BLOCK_C=block_c,
        **_NO_FMA,
    )
    gw = gpart.sum(dim=0) if need_w else fx.new_empty(0, dtype=cdt)
    return gx, gy, gw


_BACKWARDS = {"cpu": _backward_cpu, "triton": _backward_triton, "cuda": _backward_cuda}


@torch.library.custom_op("percept_fast::lpips_layer_backward", mutates_args=())
def _lpips_layer_backward_op(
    fx: torch.Tensor,
    fy: torch.Tensor,
    weight: torch.Tensor | None,
    grad: torch.Tensor,
    eps: float,
    mode: int,
    spatial: bool,
    backend: str,
    need_x: bool,
    need_y: bool,
    need_w: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused backward of one layer: ``(dL/dfx, dL/dfy, dL/dweight)``, each an empty ``[0]`` tensor when not wanted
    (``need_*``); recomputed from the inputs, nothing of the forward is kept."""
    return _layer_backward_impl(fx, fy, weight, grad, eps, mode, spatial, backend, need_x, need_y, need_w)


def _layer_backward_impl(fx, fy, weight, grad, eps, mode, spatial, backend, need_x, need_y, need_w):
    """The body of ``percept_fast::lpips_layer_backward`` (also called directly by :class:`_LayersCPU`)."""
    need_w = need_w and weight is not None
    mod = cm.cpu_module() if backend == "cpu" else cm.cuda_module() if backend == "cuda" else None
    if backend != "triton" and not hasattr(mod, "lpips_backward"):  # a native module built before the backward
        gx, gy, gw = lpips_layer_backward(fx, fy, weight, eps, mode, spatial, grad, need_w=need_w)
        ox, oy, ow = _grad_outputs(fx, need_x, need_y, need_w)  # the layouts register_fake promises
        return (ox.copy_(gx) if need_x else ox), (oy.copy_(gy) if need_y else oy), (ow.copy_(gw) if need_w else ow)
    return _BACKWARDS[backend](fx, fy, weight, grad, eps, mode, spatial, need_x, need_y, need_w)


@_lpips_layer_backward_op.register_fake
def _lpips_layer_backward_fake(fx, fy, weight, grad, eps, mode, spatial, backend, need_x, need_y, need_w):
    return _grad_outputs(fx, need_x, need_y, need_w and weight is not None)


# ------------------------------------------------------------------------------------ custom op + autograd


@torch.library.custom_op("percept_fast::lpips_layer", mutates_args=())
def _lpips_layer_op(
    fx: torch.Tensor,
    fy: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    mode: int,
    spatial: bool,
    backend: str,
    check_finite: bool = False,
    layer: int = -1,
) -> torch.Tensor:
    return _FORWARDS[backend](fx, fy, weight, eps, mode, spatial, check_finite, layer)


@_lpips_layer_op.register_fake
def _lpips_layer_fake(fx, fy, weight, eps, mode, spatial, backend, check_finite=False, layer=-1):
    B, _, H, W = fx.shape
    shape = (B, 1, H, W) if spatial else (B,)
    return fx.new_empty(shape, dtype=cm.out_dtype(fx.dtype))


def _norm_backward(gu: torch.Tensor, x: torch.Tensor, n: torch.Tensor, s: torch.Tensor, mode: int) -> torch.Tensor:
    """Gradient w.r.t. x of u = x / n(x) given gu = dL/du (channel dim 1)."""
    dot = (gu * x).sum(dim=1, keepdim=True)
    if mode == 0:  # n = s + eps, dn/dx = x / s; the term vanishes (O(|x|)) at s = 0
        coef = torch.where(s > 0, dot / (n * n * torch.where(s > 0, s, torch.ones_like(s))), torch.zeros_like(s))
    else:  # n = sqrt(s^2 + eps^2), dn/dx = x / n
        coef = dot / (n * n * n)
    return gu / n - coef * x


def lpips_layer_backward(fx, fy, weight, eps, mode, spatial, grad, need_w=True):
    """Analytic gradients (fx, fy, weight) of one layer (see the module docstring)."""
    cdt = cm.out_dtype(fx.dtype)
    x = fx.to(cdt)
    y = fy.to(cdt)
    B, C, H, W = x.shape
    sx2 = (x * x).sum(dim=1, keepdim=True)
    sy2 = (y * y).sum(dim=1, keepdim=True)
    sx, sy = sx2.sqrt(), sy2.sqrt()
    if mode == 0:
        nx, ny = sx + eps, sy + eps
    else:
        nx, ny = (sx2 + eps * eps).sqrt(), (sy2 + eps * eps).sqrt()
    diff = x / nx - y / ny
    g = grad.to(cdt).reshape(B, 1, H, W) if spatial else grad.to(cdt).reshape(B, 1, 1, 1) / (H * W)
    wv = weight.to(cdt).reshape(1, C, 1, 1) if weight is not None else None
    gu = 2.0 * g * diff
    if wv is not None:
        gu = gu * wv
    gx = _norm_backward(gu, x, nx, sx, mode)
    gy = -_norm_backward(gu, y, ny, sy, mode)
    gw = None
    if weight is not None and need_w:
        gw = (g * diff * diff).sum(dim=(0, 2, 3)).to(weight.dtype)
    return gx.to(fx.dtype), gy.to(fy.dtype), gw


def _setup_context(ctx, inputs, output):
    fx, fy, weight, eps, mode, spatial, backend = inputs[:7]
    ctx.save_for_backward(fx, fy, weight)  # the inputs only: the backward recomputes the norms
    ctx.eps, ctx.mode, ctx.spatial, ctx.backend = eps, mode, spatial, backend


def _backward(ctx, grad):
    fx, fy, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_w = bool(need[2]) and weight is not None
    if torch.is_grad_enabled():
        # create_graph=True (double backward): the same maths in differentiable PyTorch ops; the fused op has no
        # derivative of its own. A plain backward (and torch.compile's traced one) runs with grad mode off.
        gx, gy, gw = lpips_layer_backward(fx, fy, weight, ctx.eps, ctx.mode, ctx.spatial, grad, need_w=need_w)
    else:
        gx, gy, gw = _lpips_layer_backward_op(
            fx, fy, weight, grad, ctx.eps, ctx.mode, ctx.spatial, ctx.backend, bool(need[0]), bool(need[1]), need_w
        )
    return (
        gx if need[0] else None,
        gy if need[1] else None,
        gw if need_w else None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


_lpips_layer_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------- public


def _check_normalize(normalize: object) -> int:
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"{OP}: normalize must be one of {tuple(NORMALIZE_MODES)}, got {normalize!r}")
    return NORMALIZE_MODES[normalize]


def _check_layer(fx, fy, weight, backend, check_finite, layer):
    """Validates layer ``layer`` (-1: a single-tensor call) before any kernel runs: ``(backend, weight)``, the weight
    flattened to ``[C]`` (and, off the reference backend, in the accumulation dtype, contiguous)."""
    names = _names(layer)
    cm.check_tensor(fx, names[0], op=OP, check_finite=False)
    cm.check_tensor(fy, names[1], op=OP, check_finite=False)
    cm.check_pair(fx, fy, names[:2], op=OP)
    be = cm.resolve_backend(backend, fx.device, OP, native_fn="lpips_forward")
    cdt = cm.out_dtype(fx.dtype)
    # The C++ kernel checks the values in its own pass (NaN/Inf in the features: no extra read of them) and the
    # weight it receives; that is the weight itself when it already has the accumulation dtype (a cast could turn
    # a tiny negative into -0 or a huge value into Inf). Other backends: checked here, before any kernel runs.
    fused = be == "cpu"
    if check_finite and not fused:
        cm.check_finite_values(fx, names[0], op=OP)
        cm.check_finite_values(fy, names[1], op=OP)
    kernel_checks_w = fused and isinstance(weight, torch.Tensor) and weight.dtype == cdt
    w = cm.check_weight(weight, fx.shape[1], fx, names[2], op=OP, nonnegative=True, check_values=not kernel_checks_w)
    if be != "torch" and w is not None:
        w = w.to(cdt).contiguous()
    return be, w


def _run_layer(fx, fy, w, be, spatial, eps, normalize, mode, check_finite, layer):
    """One checked layer (:func:`_check_layer`) on backend ``be``."""
    if be == "torch":
        return lpips_layer_reference(fx, fy, w, eps, normalize, spatial)
    if be == "cpu" and cm.direct_call_ok(fx, fy, w):  # nothing for autograd / tracing to see: skip the op's dispatch
        return _forward_cpu(fx, fy, w, eps, mode, bool(spatial), check_finite, layer)
    return _lpips_layer_op(fx, fy, w, eps, mode, bool(spatial), be, check_finite, layer)


# how _LayersCPU combines the layers' distances (as lpips_distance does outside it)
_SUM, _STACK, _MAPS = 0, 1, 2
_NARGS = 6  # _LayersCPU.apply's arguments before the tensors


class _LayersCPU(torch.autograd.Function):
    """Every layer's C++ forward and backward in one autograd node: what the custom op ``percept_fast::lpips_layer``
    and the sum / stack of its outputs compute, without a node (and the op's dispatch, ~70 us a layer) per layer.

    ``apply(eps, mode, spatial, combine, check_finite, single, *fx, *fy, *w)`` with the layers already checked
    (:func:`_check_layer`, backend ``'cpu'``); ``combine``: ``_SUM`` (``[B]``, the layers added in order as
    ``lpips_distance`` adds them), ``_STACK`` (``[B, L]``) or ``_MAPS`` (one ``[B, 1, H, W]`` map per layer);
    ``single``: one layer given as tensors (the names in error messages: ``fx``, not ``fx[0]``). Used only
    where :func:`_fused_ok` holds (eager, plain tensors, a gradient wanted). The gradients are the op's: the same
    kernel per layer on the same upstream gradient (a layer whose map receives no gradient is skipped, as autograd
    skips its node); under ``create_graph`` the differentiable formula (:func:`lpips_layer_backward`), as the op."""

    @staticmethod
    def forward(ctx, eps, mode, spatial, combine, check_finite, single, *tensors):
        n = len(tensors) // 3
        fxs, fys, ws = tensors[:n], tensors[n : 2 * n], tensors[2 * n :]
        outs = [
            _forward_cpu(fxs[i], fys[i], ws[i], eps, mode, spatial, check_finite, -1 if single else i) for i in range(n)
        ]
        ctx.save_for_backward(*tensors)
        ctx.eps, ctx.mode, ctx.spatial, ctx.combine = eps, mode, spatial, combine
        ctx.set_materialize_grads(False)
        if combine == _MAPS:  # a map of a layer without any input needing a gradient needs none (as the op's)
            need = ctx.needs_input_grad[_NARGS:]
            ctx.mark_non_differentiable(*(o for i, o in enumerate(outs) if not any(need[i::n])))
            return tuple(outs)
        if combine == _STACK:
            return torch.stack(outs, dim=1)
        total = outs[0]
        for o in outs[1:]:
            total = total + o
        return total

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        n = len(saved) // 3
        need = ctx.needs_input_grad[_NARGS:]
        out = [None] * (_NARGS + 3 * n)
        if ctx.combine == _MAPS:
            layer_grads = grads
        elif grads[0] is None:
            return tuple(out)
        elif ctx.combine == _STACK:
            layer_grads = grads[0].unbind(1)
        else:
            layer_grads = (grads[0],) * n
        create_graph = torch.is_grad_enabled()
        for i in range(n):
            grad = layer_grads[i]
            fx, fy, w = saved[i], saved[n + i], saved[2 * n + i]
            need_x, need_y = bool(need[i]), bool(need[n + i])
            need_w = bool(need[2 * n + i]) and w is not None
            if grad is None or not (need_x or need_y or need_w):
                continue
            if create_graph:  # double backward: the differentiable formula, as the custom op's backward
                gx, gy, gw = lpips_layer_backward(fx, fy, w, ctx.eps, ctx.mode, ctx.spatial, grad, need_w=need_w)
            else:
                gx, gy, gw = _layer_backward_impl(
                    fx, fy, w, grad, ctx.eps, ctx.mode, ctx.spatial, "cpu", need_x, need_y, need_w
                )
            out[_NARGS + i] = gx if need_x else None
            out[_NARGS + n + i] = gy if need_y else None
            out[_NARGS + 2 * n + i] = gw if need_w else None
        return tuple(out)


def _fused_ok(tensors) -> bool:
    """True when :class:`_LayersCPU` may stand for the per-layer custom ops: eager (no torch.compile / dispatch-mode
    tracing, no functorch transform, no torch function mode), plain tensors (or parameters), and a gradient wanted
    (without one the forwards are called directly, :func:`percept_fast.ops._common.direct_call_ok`)."""
    if not torch.is_grad_enabled() or torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0:
        return False
    if torch._C._is_torch_function_mode_enabled() or torch._C._are_functorch_transforms_active():
        return False
    wanted = False
    for t in tensors:
        if t is None:
            continue
        if type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
            return False
        wanted = wanted or t.requires_grad
    return wanted


def _as_layers(fx, fy, weight):
    if isinstance(fx, torch.Tensor) and isinstance(fy, torch.Tensor):
        return None
    if not isinstance(fx, (list, tuple)) or not isinstance(fy, (list, tuple)):
        raise TypeError(f"{OP}: fx and fy must both be tensors or both be lists/tuples of tensors")
    if len(fx) != len(fy) or len(fx) == 0:
        raise ValueError(f"{OP}: fx and fy must be non-empty lists of equal length, got {len(fx)} and {len(fy)}")
    if weight is None:
        weights: Sequence = [None] * len(fx)
    elif isinstance(weight, (list, tuple)):
        if len(weight) != len(fx):
            raise ValueError(f"{OP}: weight must be a list of {len(fx)} weights (or None), got {len(weight)}")
        weights = weight
    else:
        raise TypeError(f"{OP}: with lists of features, weight must be a list of per-layer weights or None")
    return list(zip(fx, fy, weights))


def lpips_distance(
    fx: torch.Tensor | Sequence[torch.Tensor],
    fy: torch.Tensor | Sequence[torch.Tensor],
    weight: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    *,
    spatial: bool = False,
    eps: float = 1e-10,
    normalize: str = "lpips",
    per_layer: bool = False,
    backend: str = "auto",
    check_finite: bool = True,
) -> torch.Tensor | list[torch.Tensor]:
    """LPIPS distance between feature maps (maths: ``docs/percept_fast/ops.md``).

    Args:
        fx, fy: ``[B, C, H, W]`` features (float32/float16/bfloat16, or float64), any strides; or equal-length
            lists of such (one per layer; every layer has the same ``B``).
        weight: per-channel non-negative weights ``[C]`` or ``[1, C, 1, 1]`` (a list of them for lists), or None.
        spatial: return the ``[B, 1, H, W]`` map (a list of maps for lists) instead of its spatial mean.
        eps: normalisation epsilon (> 0).
        normalize: ``'lpips'`` (exactly lpips' normalize_tensor) or ``'stable'`` (no NaN gradient at 0).
        per_layer: with lists, return ``[B, L]`` per-layer distances instead of their sum.
        backend: ``'auto'`` | ``'torch'`` | ``'cpu'`` | ``'triton'`` | ``'cuda'``.
        check_finite: reject NaN/Inf inputs (``ValueError`` naming the input). The C++ kernel does it in its own
            pass (free); other backends need one extra read of the inputs, a device-side assert (no host
            synchronisation) on CUDA and under torch.compile.

    Returns:
        ``[B]`` float32 (float64 for float64 inputs), or maps / ``[B, L]`` as above.
    """
    mode = _check_normalize(normalize)
    eps = cm.check_eps(eps, op=OP)
    cm.check_flag(spatial, "spatial", op=OP)
    cm.check_flag(per_layer, "per_layer", op=OP)
    cm.check_flag(check_finite, "check_finite", op=OP)
    layers = _as_layers(fx, fy, weight)
    if layers is None:
        if per_layer:
            raise ValueError(f"{OP}: per_layer=True needs lists of per-layer features (fx, fy are tensors)")
        be, w = _check_layer(fx, fy, weight, backend, check_finite, -1)
        if be == "cpu" and _fused_ok((fx, fy, w)):
            out = _LayersCPU.apply(eps, mode, bool(spatial), _MAPS if spatial else _SUM, check_finite, True, fx, fy, w)
            return out[0] if spatial else out
        return _run_layer(fx, fy, w, be, spatial, eps, normalize, mode, check_finite, -1)
    if spatial and per_layer:
        raise ValueError(f"{OP}: per_layer=True and spatial=True cannot be combined (the maps differ in size)")
    checked = []  # every layer checked before any kernel runs
    for i, (a, b, w) in enumerate(layers):
        checked.append(_check_layer(a, b, w, backend, check_finite, i))
        if a.shape[0] != layers[0][0].shape[0]:
            raise ValueError(f"{OP}: every layer must have the same batch size; fx[{i}] has {a.shape[0]}")
    fxs, fys, ws = [a for a, _, _ in layers], [b for _, b, _ in layers], [w for _, w in checked]
    if all(be == "cpu" for be, _ in checked) and _fused_ok(fxs + fys + ws):
        combine = _MAPS if spatial else _STACK if per_layer else _SUM
        out = _LayersCPU.apply(eps, mode, bool(spatial), combine, check_finite, False, *fxs, *fys, *ws)
        return list(out) if spatial else out
    outs = [
        _run_layer(a, b, w, be, spatial, eps, normalize, mode, check_finite, i)
        for i, (a, b, (be, w)) in enumerate(zip(fxs, fys, checked))
    ]
    if spatial:
        return outs
    if per_layer:
        return torch.stack(outs, dim=1)
    total = outs[0]
    for o in outs[1:]:
        total = total + o
    return total


def _pairwise_layer(fx, fy, weight, eps, normalize, check_finite, names, wname):
    cm.check_tensor(fx, names[0], op=OP + "_matrix", check_finite=check_finite)
    cm.check_tensor(fy, names[1], op=OP + "_matrix", check_finite=check_finite)
    cm.check_same_kind(fx, fy, names, op=OP + "_matrix")
    if fx.shape[1:] != fy.shape[1:]:
        raise ValueError(
            f"{OP}_matrix: {names[0]} and {names[1]} must agree in [C, H, W], got {tuple(fx.shape)} and {tuple(fy.shape)}"
        )
    w = cm.check_weight(weight, fx.shape[1], fx, wname, op=OP + "_matrix", nonnegative=True)
    cdt = cm.out_dtype(fx.dtype)
    N, C, H, W = fx.shape
    a = normalize_features(fx.to(cdt), eps, normalize)
    b = normalize_features(fy.to(cdt), eps, normalize)
    if w is not None:
        sw = w.to(cdt).sqrt().reshape(1, C, 1, 1)
        a, b = a * sw, b * sw
    a = a.reshape(N, -1)
    b = b.reshape(fy.shape[0], -1)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min(0.0) / (H * W)


def lpips_distance_matrix(
    fx: torch.Tensor | Sequence[torch.Tensor],
    fy: torch.Tensor | Sequence[torch.Tensor],
    weight: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    *,
    eps: float = 1e-10,
    normalize: str = "lpips",
    check_finite: bool = True,
) -> torch.Tensor:
    """All-pairs LPIPS distances ``[N, M]`` between ``fx [N, C, H, W]`` and ``fy [M, C, H, W]`` (or lists of layers).

    ``D[n, m] = lpips_distance(fx[n], fy[m])`` computed through one GEMM per layer
    (``||a||^2 + ||b||^2 - 2 a.b`` on ``a = sqrt(w) * normalise(x)``, clamped at 0). Differentiable by autograd.
    float32 (float64 for float64 inputs); on CUDA the GEMM follows torch's TF32 setting.
    """
    _check_normalize(normalize)
    eps = cm.check_eps(eps, op=OP + "_matrix")
    if isinstance(fx, torch.Tensor) and isinstance(fy, torch.Tensor):
        return _pairwise_layer(fx, fy, weight, eps, normalize, check_finite, ("fx", "fy"), "weight")
    layers = _as_layers(fx, fy, weight)
    total = None
    for i, (a, b, w) in enumerate(layers):
        d = _pairwise_layer(a, b, w, eps, normalize, check_finite, (f"fx[{i}]", f"fy[{i}]"), f"weight[{i}]")
        if total is not None and d.shape != total.shape:
            raise ValueError(f"{OP}_matrix: every layer must have the same N and M; layer {i} gives {tuple(d.shape)}")
        total = d if total is None else total + d
    return total
