"""Gram-matrix (style) distance between deep features: ``style_distance`` and ``style_distance_matrix``.

``d = sum_l ||G0_l - G1_l||_F^2 / C_l^2`` with ``G = X X^T / n``, computed without materialising both Grams
(``method='diff'``: C x C tiles of ``X0 X0^T - X1 X1^T``; ``'kernel'``: P x P products). Maths, accuracy,
gradient and backends: ``docs/percept_fast.md#style_distance``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from ._common import (
    check_flag,
    check_pair,
    check_same_kind,
    check_tensor,
    cpu_module,
    cuda_module,
    cuda_stream,
    out_dtype,
    resolve_backend,
    tensor_arg,
    triton_interpret,
)

__all__ = [
    "NORMALIZATIONS",
    "METHODS",
    "style_distance",
    "style_distance_matrix",
    "style_distance_reference",
    "style_distance_matrix_reference",
    "gram_normalizer",
    "choose_method",
]

NORMALIZATIONS = ("chw", "hw", "none")
METHODS = ("auto", "diff", "kernel")
_OP = "style_distance"
_OPM = "style_distance_matrix"


# ---------------------------------------------------------------------------------------------- helpers


def gram_normalizer(normalize: str, C: int, H: int, W: int) -> float:
    """The Gram normalisation ``n`` of ``G = X X^T / n`` for ``normalize`` in :data:`NORMALIZATIONS`."""
    if normalize == "chw":
        return float(C * H * W)
    if normalize == "hw":
        return float(H * W)
    if normalize == "none":
        return 1.0
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")


def choose_method(C: int, P: int) -> str:
    """'kernel' (P x P products, ~2 P^2 C MACs) when C > 2P, else 'diff' (C x C, ~C^2 P MACs)."""
    return "kernel" if C > 2 * P else "diff"


def _check_normalize(normalize: object, op: str) -> str:
    if not isinstance(normalize, str) or normalize not in NORMALIZATIONS:
        raise ValueError(f"{op}: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    return normalize


def _check_method(method: object, op: str, allowed: Sequence[str]) -> str:
    if not isinstance(method, str) or method not in allowed:
        raise ValueError(f"{op}: method must be one of {tuple(allowed)}, got {method!r}")
    return method


def _as_layers(fx, fy, op: str, names=("fx", "fy")) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Accepts two tensors or two equally long sequences of tensors (one per layer)."""
    a, b = names
    if isinstance(fx, torch.Tensor) or isinstance(fy, torch.Tensor):
        if not (isinstance(fx, torch.Tensor) and isinstance(fy, torch.Tensor)):
            raise TypeError(f"{op}: {a} and {b} must both be tensors or both be sequences of tensors")
        return [fx], [fy]
    if not isinstance(fx, (list, tuple)) or not isinstance(fy, (list, tuple)):
        raise TypeError(
            f"{op}: {a} and {b} must be tensors [B, C, H, W] or lists of them, got {type(fx).__name__}, {type(fy).__name__}"
        )
    if len(fx) == 0 or len(fx) != len(fy):
        raise ValueError(f"{op}: {a} and {b} must be non-empty lists of the same length, got {len(fx)} and {len(fy)}")
    return list(fx), list(fy)


def _validate_layers(xs, ys, op: str, *, same_batch: bool, check_finite: bool = True) -> None:
    """Shapes, dtypes, devices; with ``check_finite`` the NaN/Inf scan (device-side on CUDA and under
    torch.compile: no host synchronisation)."""
    first = None
    for i, (x, y) in enumerate(zip(xs, ys)):
        na, nb = (f"fx[{i}]", f"fy[{i}]") if len(xs) > 1 else ("fx", "fy")
        check_tensor(x, na, op=op, check_finite=check_finite)
        check_tensor(y, nb, op=op, check_finite=check_finite)
        if same_batch:
            check_pair(x, y, (na, nb), op=op)
        else:
            check_same_kind(x, y, (na, nb), op=op)
            if x.shape[1:] != y.shape[1:]:
                raise ValueError(
                    f"{op}: {na} and {nb} must have the same [C, H, W], got {tuple(x.shape)} and {tuple(y.shape)}"
                )
        if first is None:
            first = (x, na)
        else:
            x0, n0 = first
            if x.shape[0] != x0.shape[0] or (not same_batch and y.shape[0] != ys[0].shape[0]):
                raise ValueError(
                    f"{op}: every layer must have the same batch size ({n0}: {x0.shape[0]}, {na}: {x.shape[0]})"
                )
            if x.dtype != x0.dtype or x.device != x0.device:
                raise TypeError(f"{op}: every layer must have the same dtype and device as {n0}")


# ------------------------------------------------------------------------------------------- reference


def _reference_layer(x0: torch.Tensor, x1: torch.Tensor, n: float) -> torch.Tensor:
    """Plain PyTorch: both Grams, subtract, square, sum (fp32 / fp64 accumulation)."""
    B, C, H, W = x0.shape
    acc = out_dtype(x0.dtype)
    X0 = x0.reshape(B, C, H * W).to(acc)
    X1 = x1.reshape(B, C, H * W).to(acc)
    G0 = torch.bmm(X0, X0.transpose(1, 2)) / n
    G1 = torch.bmm(X1, X1.transpose(1, 2)) / n
    return ((G0 - G1) ** 2).sum(dim=(1, 2)) / (C * C)


def style_distance_reference(
    fx, fy, normalize: str = "chw", *, per_layer: bool = False, check_finite: bool = True
) -> torch.Tensor:
    """The plain-PyTorch reference of :func:`style_distance` (``backend='torch'``)."""
    xs, ys = _as_layers(fx, fy, _OP)
    _check_normalize(normalize, _OP)
    _validate_layers(xs, ys, _OP, same_batch=True, check_finite=check_finite)
    vals = [_reference_layer(x, y, gram_normalizer(normalize, *x.shape[1:])) for x, y in zip(xs, ys)]
    out = torch.stack(vals, dim=1)
    return out if per_layer else out.sum(dim=1)


def _reference_matrix_layer(x: torch.Tensor, y: torch.Tensor, n: float) -> torch.Tensor:
    N, C, H, W = x.shape
    acc = out_dtype(x.dtype)
    X = x.reshape(N, C, H * W).to(acc)
    Y = y.reshape(y.shape[0], C, H * W).to(acc)
    Gx = torch.bmm(X, X.transpose(1, 2)) / n
    Gy = torch.bmm(Y, Y.transpose(1, 2)) / n
    rows = [((Gx[i][None] - Gy) ** 2).sum(dim=(1, 2)) for i in range(N)]
    return torch.stack(rows, dim=0) / (C * C)


def style_distance_matrix_reference(
    fx, fy, normalize: str = "chw", *, per_layer: bool = False, check_finite: bool = True
) -> torch.Tensor:
    """Plain reference of :func:`style_distance_matrix`: every pair of Grams subtracted explicitly."""
    xs, ys = _as_layers(fx, fy, _OPM)
    _check_normalize(normalize, _OPM)
    _validate_layers(xs, ys, _OPM, same_batch=False, check_finite=check_finite)
    vals = [_reference_matrix_layer(x, y, gram_normalizer(normalize, *x.shape[1:])) for x, y in zip(xs, ys)]
    out = torch.stack(vals, dim=-1)
    return out if per_layer else out.sum(dim=-1)


# ----------------------------------------------------------------------------------------------- triton


try:  # Triton is optional: the kernels below are plain functions, JIT-wrapped on first use (see _jit)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None


def _jit(kernel):
    """``triton.jit(kernel)``, made on first use per interpreter mode (``triton.jit`` reads TRITON_INTERPRET)."""
    return _jit_for(kernel, triton_interpret())


@functools.cache
def _jit_for(kernel, interpret: bool):
    if interpret and type(tl.zeros).__name__ == "JITFunction":
        # triton's standard library (tl.zeros, tl.sum, ...) is jitted when triton is imported: the interpreter
        # only works when TRITON_INTERPRET was set before that import.
        raise RuntimeError(
            "style_distance: backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
        )
    return triton.jit(kernel)


if triton is not None:

    def _diff_kernel(
        x0_ptr,
        x1_ptr,
        pairs_ptr,
        out_ptr,
        C,
        P,
        W,
        s0b,
        s0c,
        s0h,
        s0w,
        s1b,
        s1c,
        s1h,
        s1w,
        NPAIRS,
        KPER,
        ws_ptr,
        BM: tl.constexpr,
        BK: tl.constexpr,
        PREC: tl.constexpr,
        UPCAST: tl.constexpr,
        DIRECT: tl.constexpr,
    ):
        # One program: one sample, one tile pair (I <= J) of D = X0 X0^T - X1 X1^T (rows = channels), one split
        # of the contraction (positions [k_begin, k_end)). DIRECT (one split): square and sum here; otherwise the
        # partial D tile goes to the workspace [B, NPAIRS, splits, BM, BM] (split-K for few, long tiles).
        pid = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        split = tl.program_id(2)
        k_begin = split * KPER
        k_end = tl.minimum(k_begin + KPER, P)
        ti = tl.load(pairs_ptr + 2 * pid)
        tj = tl.load(pairs_ptr + 2 * pid + 1)
        ri = ti * BM + tl.arange(0, BM)
        rj = tj * BM + tl.arange(0, BM)
        mi = ri < C
        mj = rj < C
        base0 = x0_ptr + b * s0b
        base1 = x1_ptr + b * s1b
        acc = tl.zeros((BM, BM), dtype=tl.float32)
        for k0 in range(k_begin, k_end, BK):
            rk = k0 + tl.arange(0, BK)
            mk = rk < k_end
            hk = rk // W
            wk = rk % W
            k0off = hk * s0h + wk * s0w
            k1off = hk * s1h + wk * s1w
            a0 = tl.load(base0 + ri[:, None] * s0c + k0off[None, :], mask=mi[:, None] & mk[None, :], other=0.0)
            b0 = tl.load(base0 + k0off[:, None] + rj[None, :] * s0c, mask=mk[:, None] & mj[None, :], other=0.0)
            a1 = tl.load(base1 + ri[:, None] * s1c + k1off[None, :], mask=mi[:, None] & mk[None, :], other=0.0)
            b1 = tl.load(base1 + k1off[:, None] + rj[None, :] * s1c, mask=mk[:, None] & mj[None, :], other=0.0)
            if UPCAST:
                a0, b0, a1, b1 = a0.to(tl.float32), b0.to(tl.float32), a1.to(tl.float32), b1.to(tl.float32)
            p = tl.dot(a0, b0, input_precision=PREC)
            q = tl.dot(a1, b1, input_precision=PREC)
            acc += p - q
        if DIRECT:
            w = tl.where(ti == tj, 1.0, 2.0)
            s = tl.sum(tl.sum(acc * acc, axis=1), axis=0) * w
            tl.store(out_ptr + b * NPAIRS + pid, s)
        else:
            nsplit = tl.num_programs(2)
            r = tl.arange(0, BM)
            tile = ws_ptr + ((b * NPAIRS + pid) * nsplit + split) * (BM * BM)
            tl.store(tile + r[:, None] * BM + r[None, :], acc)

    def _kernel_kernel(
        x0_ptr,
        x1_ptr,
        pairs_ptr,
        out_ptr,
        C,
        P,
        W,
        s0b,
        s0c,
        s0h,
        s0w,
        s1b,
        s1c,
        s1h,
        s1w,
        NPAIRS,
        BP: tl.constexpr,
        BC: tl.constexpr,
        PREC: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        # One program: one sample, one tile pair (I <= J) of the P x P kernels K_ab = X_a^T X_b.
        pid = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        ti = tl.load(pairs_ptr + 2 * pid)
        tj = tl.load(pairs_ptr + 2 * pid + 1)
        ri = ti * BP + tl.arange(0, BP)
        rj = tj * BP + tl.arange(0, BP)
        mi = ri < P
        mj = rj < P
        i0off = (ri // W) * s0h + (ri % W) * s0w
        i1off = (ri // W) * s1h + (ri % W) * s1w
        j0off = (rj // W) * s0h + (rj % W) * s0w
        j1off = (rj // W) * s1h + (rj % W) * s1w
        base0 = x0_ptr + b * s0b
        base1 = x1_ptr + b * s1b
        a00 = tl.zeros((BP, BP), dtype=tl.float32)
        a11 = tl.zeros((BP, BP), dtype=tl.float32)
        a01 = tl.zeros((BP, BP), dtype=tl.float32)
        a10 = tl.zeros((BP, BP), dtype=tl.float32)
        for c0 in range(0, C, BC):
            rc = c0 + tl.arange(0, BC)
            mc = rc < C
            x0i = tl.load(base0 + i0off[:, None] + rc[None, :] * s0c, mask=mi[:, None] & mc[None, :], other=0.0)
            x1i = tl.load(base1 + i1off[:, None] + rc[None, :] * s1c, mask=mi[:, None] & mc[None, :], other=0.0)
            x0j = tl.load(base0 + rc[:, None] * s0c + j0off[None, :], mask=mc[:, None] & mj[None, :], other=0.0)
            x1j = tl.load(base1 + rc[:, None] * s1c + j1off[None, :], mask=mc[:, None] & mj[None, :], other=0.0)
            if UPCAST:
                x0i, x1i, x0j, x1j = x0i.to(tl.float32), x1i.to(tl.float32), x0j.to(tl.float32), x1j.to(tl.float32)
            a00 = tl.dot(x0i, x0j, a00, input_precision=PREC)
            a11 = tl.dot(x1i, x1j, a11, input_precision=PREC)
            a01 = tl.dot(x0i, x1j, a01, input_precision=PREC)
            a10 = tl.dot(x1i, x0j, a10, input_precision=PREC)
        e = a00 * a00 + a11 * a11 - a01 * a01 - a10 * a10
        w = tl.where(ti == tj, 1.0, 2.0)
        s = tl.sum(tl.sum(e, axis=1), axis=0) * w
        tl.store(out_ptr + b * NPAIRS + pid, s)

    def _cross_sq_kernel(
        x_ptr,
        y_ptr,
        out_ptr,
        C,
        P,
        W,
        sxb,
        sxc,
        sxh,
        sxw,
        syb,
        syc,
        syh,
        syw,
        M,
        NTILES,
        BP: tl.constexpr,
        BC: tl.constexpr,
        PREC: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        # out[n, m, t] = sum over tile t = (I, J) of (X_n^T Y_m)[I, J]^2 (style_distance_matrix, 'kernel').
        pair = tl.program_id(0).to(tl.int64)
        t = tl.program_id(1)
        n = pair // M
        m = pair % M
        nt = tl.cdiv(P, BP)
        ti = t // nt
        tj = t % nt
        ri = ti * BP + tl.arange(0, BP)
        rj = tj * BP + tl.arange(0, BP)
        mi = ri < P
        mj = rj < P
        ioff = (ri // W) * sxh + (ri % W) * sxw
        joff = (rj // W) * syh + (rj % W) * syw
        acc = tl.zeros((BP, BP), dtype=tl.float32)
        for c0 in range(0, C, BC):
            rc = c0 + tl.arange(0, BC)
            mc = rc < C
            xi = tl.load(x_ptr + n * sxb + ioff[:, None] + rc[None, :] * sxc, mask=mi[:, None] & mc[None, :], other=0.0)
            yj = tl.load(y_ptr + m * syb + rc[:, None] * syc + joff[None, :], mask=mc[:, None] & mj[None, :], other=0.0)
            if UPCAST:
                xi, yj = xi.to(tl.float32), yj.to(tl.float32)
            acc = tl.dot(xi, yj, acc, input_precision=PREC)
        s = tl.sum(tl.sum(acc * acc, axis=1), axis=0)
        tl.store(out_ptr + pair * NTILES + t, s)


@functools.cache
def _tile_pairs(ntiles: int, device: str) -> torch.Tensor:
    """Upper-triangle tile pairs (I <= J), flattened int32 [npairs * 2]."""
    idx = torch.triu_indices(ntiles, ntiles)
    return idx.t().contiguous().to(torch.int32).reshape(-1).to(device)


def _triton_upcast(x: torch.Tensor) -> bool:
    # The Triton interpreter (CPU tensors) computes bf16 tl.dot wrongly (numpy has no bf16); there the bf16 tiles
    # are upcast to fp32 before tl.dot (exact: products of bf16 values are exact in fp32 FMA). On GPUs bf16 stays.
    return x.device.type == "cpu" and x.dtype == torch.bfloat16


def _triton_precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact fp32 FMA ('ieee') unless the user allowed TF32 for matmuls, as torch does. fp16/bf16 keep
    # triton's default (the setting only concerns fp32 operands; their products are exact in fp32 anyway).
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


_DIFF_BM, _DIFF_BK = 64, 32
_KER_BP, _KER_BC = 32, 32


# Split-K of the 'diff' regime (few tile pairs with a long contraction, e.g. 64 channels x 224^2 positions):
# aim for this many programs, each with at least _SPLIT_MIN_K positions. Tests may force a split count.
_SPLIT_TARGET_PROGRAMS = 4 * 132
_SPLIT_MIN_K = 1024
_FORCE_SPLITS: int | None = None


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _diff_splits(B: int, npairs: int, P: int, target: int = _SPLIT_TARGET_PROGRAMS) -> int:
    if _FORCE_SPLITS is not None:
        return max(1, min(_FORCE_SPLITS, _cdiv(P, _DIFF_BK)))
    progs = B * npairs
    if progs >= target:
        return 1
    return max(1, min(_cdiv(target, progs), P // _SPLIT_MIN_K))


def _triton_layer_sum(x0: torch.Tensor, x1: torch.Tensor, method: str) -> torch.Tensor:
    """Raw ||X0 X0^T - X1 X1^T||_F^2 per sample, fp32 partials summed in fp64 then cast."""
    k_diff, k_kernel = _jit(_diff_kernel), _jit(_kernel_kernel)
    B, C, H, W = x0.shape
    P = H * W
    if method == "diff":
        bm, bk, rows = _DIFF_BM, _DIFF_BK, C
    else:
        bm, bk, rows = _KER_BP, _KER_BC, P
    nt = -(-rows // bm)
    pairs = _tile_pairs(nt, str(x0.device))
    npairs = pairs.numel() // 2
    part = torch.empty((B, npairs), dtype=torch.float32, device=x0.device)
    common = (C, P, W, *x0.stride(), *x1.stride(), npairs)
    if method == "kernel":
        k_kernel[(npairs, B)](
            x0, x1, pairs, part, *common, bm, bk, _triton_precision(x0.dtype), _triton_upcast(x0), num_warps=4
        )
        return part.to(torch.float64).sum(dim=1).to(out_dtype(x0.dtype))
    splits = _diff_splits(B, npairs, P)
    kper = _cdiv(_cdiv(P, splits), bk) * bk  # positions per split, a multiple of BK
    splits = _cdiv(P, kper)
    ws = part if splits == 1 else torch.empty((B, npairs, splits, bm * bm), dtype=torch.float32, device=x0.device)
    k_diff[(npairs, B, splits)](
        x0,
        x1,
        pairs,
        part,
        *common,
        kper,
        ws,
        bm,
        bk,
        _triton_precision(x0.dtype),
        _triton_upcast(x0),
        splits == 1,
        num_warps=4,
    )
    if splits == 1:
        return part.to(torch.float64).sum(dim=1).to(out_dtype(x0.dtype))
    d = ws.sum(dim=2, dtype=torch.float32)  # full D tiles [B, npairs, BM*BM]
    w = torch.where(pairs[0::2] == pairs[1::2], 1.0, 2.0).to(torch.float64)
    return ((d.to(torch.float64) ** 2).sum(dim=2) * w).sum(dim=1).to(out_dtype(x0.dtype))


# ------------------------------------------------------------------------------------- native backends


def _cpu_layer_sum(x0: torch.Tensor, x1: torch.Tensor, method: str) -> torch.Tensor:
    mod = cpu_module()
    B = x0.shape[0]
    out = torch.empty((B,), dtype=torch.float64)
    mod.style_distance_sum(tensor_arg(x0), tensor_arg(x1), method == "kernel", out.data_ptr())
    return out.to(out_dtype(x0.dtype))


def _cuda_layer_sum(x0: torch.Tensor, x1: torch.Tensor, method: str) -> torch.Tensor:
    mod = cuda_module()
    B, C, H, W = x0.shape
    P = H * W
    kernel = method == "kernel"
    rows = P if kernel else C
    npairs = mod.style_distance_num_pairs(rows, kernel)
    part = torch.empty((B, npairs), dtype=torch.float64, device=x0.device)
    splits, kper, ws = 1, 0, None
    if not kernel:
        sms = torch.cuda.get_device_properties(x0.device).multi_processor_count
        splits = _diff_splits(B, npairs, P, target=4 * sms)
        if splits > 1:
            kper = _cdiv(_cdiv(P, splits), 16) * 16
            splits = _cdiv(P, kper)
    if splits > 1:
        ws = torch.empty((B, npairs, splits, 64 * 64), dtype=out_dtype(x0.dtype), device=x0.device)
    with torch.cuda.device(x0.device):
        mod.style_distance_partials(
            tensor_arg(x0),
            tensor_arg(x1),
            kernel,
            part.data_ptr(),
            cuda_stream(x0),
            kper,
            splits,
            ws.data_ptr() if ws is not None else 0,
        )
    if ws is None:
        return part.sum(dim=1).to(out_dtype(x0.dtype))
    d = ws.sum(dim=2)  # full D tiles [B, npairs, 64*64]
    pairs = _tile_pairs(_cdiv(C, 64), str(x0.device))
    w = torch.where(pairs[0::2] == pairs[1::2], 1.0, 2.0).to(torch.float64)
    return ((d.to(torch.float64) ** 2).sum(dim=2) * w).sum(dim=1).to(out_dtype(x0.dtype))


_LAYER_SUM = {"cpu": _cpu_layer_sum, "triton": _triton_layer_sum, "cuda": _cuda_layer_sum}


# ------------------------------------------------------------------------------------ custom op + autograd


@torch.library.custom_op("percept_fast::style_distance_layer", mutates_args=())
def _style_layer_op(x0: torch.Tensor, x1: torch.Tensor, n: float, method: str, backend: str) -> torch.Tensor:
    """d[b] = ||X0 X0^T - X1 X1^T||_F^2 / (n^2 C^2) for one layer, by a fast backend."""
    C = x0.shape[1]
    raw = _LAYER_SUM[backend](x0, x1, method)
    return raw / (n * n * C * C)


@_style_layer_op.register_fake
def _(x0, x1, n, method, backend):
    return x0.new_empty((x0.shape[0],), dtype=out_dtype(x0.dtype))


def _setup_context(ctx, inputs, output):
    x0, x1, n, method, backend = inputs
    ctx.save_for_backward(x0, x1)
    ctx.n = n
    ctx.method = method


def _d_times(x0: torch.Tensor, x1: torch.Tensor, method: str, want0: bool, want1: bool):
    """(D X0, D X1) with D = X0 X0^T - X1 X1^T, in the accumulation dtype, shapes [B, C, P]."""
    B, C, H, W = x0.shape
    acc = out_dtype(x0.dtype)
    X0 = x0.reshape(B, C, H * W).to(acc)
    X1 = x1.reshape(B, C, H * W).to(acc)
    r0 = r1 = None
    if method == "kernel":
        X0t, X1t = X0.transpose(1, 2), X1.transpose(1, 2)
        if want0:  # D X0 = X0 (X0^T X0) - X1 (X1^T X0)
            r0 = torch.bmm(X0, torch.bmm(X0t, X0)) - torch.bmm(X1, torch.bmm(X1t, X0))
        if want1:  # D X1 = X0 (X0^T X1) - X1 (X1^T X1)
            r1 = torch.bmm(X0, torch.bmm(X0t, X1)) - torch.bmm(X1, torch.bmm(X1t, X1))
    else:
        D = torch.bmm(X0, X0.transpose(1, 2)) - torch.bmm(X1, X1.transpose(1, 2))
        if want0:
            r0 = torch.bmm(D, X0)
        if want1:
            r1 = torch.bmm(D, X1)
    return r0, r1


def _backward(ctx, grad):
    x0, x1 = ctx.saved_tensors
    B, C, H, W = x0.shape
    want0, want1 = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (want0 or want1):
        return None, None, None, None, None
    r0, r1 = _d_times(x0, x1, ctx.method, want0, want1)
    coef = (grad.to(out_dtype(x0.dtype)) * (4.0 / (ctx.n * ctx.n * C * C))).reshape(B, 1, 1)
    g0 = (coef * r0).reshape(B, C, H, W).to(x0.dtype) if want0 else None
    g1 = (-coef * r1).reshape(B, C, H, W).to(x1.dtype) if want1 else None
    return g0, g1, None, None, None


_style_layer_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------- public


def style_distance(
    fx: torch.Tensor | Sequence[torch.Tensor],
    fy: torch.Tensor | Sequence[torch.Tensor],
    *,
    normalize: str = "chw",
    per_layer: bool = False,
    method: str = "auto",
    backend: str = "auto",
    check_finite: bool = True,
) -> torch.Tensor:
    """Gram-matrix (style) distance ``sum_l ||G0_l - G1_l||_F^2 / C_l^2`` per sample (``docs/percept_fast/ops.md``).

    Args:
        fx, fy: features ``[B, C, H, W]`` (any strides, fp32/fp16/bf16, or fp64), or equally long lists of such
            (one per layer, same batch size, dtype and device; ``C, H, W`` may differ between layers).
        normalize: Gram normalisation ``n`` in ``G = X X^T / n``: ``'chw'`` (C*H*W), ``'hw'`` (H*W) or ``'none'``.
        per_layer: return ``[B, L]`` (one column per layer) instead of the sum over layers ``[B]``.
        method: ``'auto'`` | ``'diff'`` (C x C tiles) | ``'kernel'`` (H*W x H*W tiles); same value up to rounding.
        backend: ``'auto'`` | ``'torch'`` (reference) | ``'cpu'`` | ``'triton'`` | ``'cuda'``.
        check_finite: reject NaN/Inf inputs (``ValueError`` naming the input; one extra read of the inputs, a
            device-side assert with no host synchronisation on CUDA and under torch.compile).

    Returns:
        float32 (float64 for float64 inputs) tensor ``[B]`` or ``[B, L]``; differentiable w.r.t. ``fx``, ``fy``.
    """
    xs, ys = _as_layers(fx, fy, _OP)
    _check_normalize(normalize, _OP)
    _check_method(method, _OP, METHODS)
    check_flag(per_layer, "per_layer", op=_OP)
    check_flag(check_finite, "check_finite", op=_OP)
    _validate_layers(xs, ys, _OP, same_batch=True, check_finite=check_finite)
    be = resolve_backend(backend, xs[0].device, _OP)
    if be == "triton" and xs[0].dtype == torch.float64:
        raise TypeError(f"{_OP}: backend='triton' supports float32/float16/bfloat16, got float64")
    vals = []
    for x, y in zip(xs, ys):
        _, C, H, W = x.shape
        n = gram_normalizer(normalize, C, H, W)
        if be == "torch":
            vals.append(_reference_layer(x, y, n))
            continue
        m = choose_method(C, H * W) if method == "auto" else method
        vals.append(_style_layer_op(x, y, n, m, be))
    out = torch.stack(vals, dim=1)
    return out if per_layer else out.sum(dim=1)


# --------------------------------------------------------------------------------------- distance matrix


def choose_matrix_method(N: int, M: int, C: int, P: int) -> str:
    """'gram' ((N+M) C^2 P + N M C^2 MACs) or 'kernel' (N M P^2 C + (N+M) P^2 C MACs), the cheaper."""
    gram = (N + M) * C * C * P + N * M * C * C
    kern = N * M * P * P * C + (N + M) * P * P * C
    return "kernel" if kern < gram else "gram"


def _matrix_layer_fast(x: torch.Tensor, y: torch.Tensor, n: float, method: str, backend: str) -> torch.Tensor:
    N, C, H, W = x.shape
    M = y.shape[0]
    P = H * W
    acc = out_dtype(x.dtype)
    if method == "gram":
        # The Gram GEMMs, the [N, C^2] x [C^2, M] inner products and the norms are plain GEMMs, done with batched
        # matmuls on the input's device (vendor BLAS / cuBLAS) whatever the backend.
        X = x.reshape(N, C, P).to(acc)
        Y = y.reshape(M, C, P).to(acc)
        Gx = torch.bmm(X, X.transpose(1, 2)).reshape(N, C * C)
        Gy = torch.bmm(Y, Y.transpose(1, 2)).reshape(M, C * C)
        cross = Gx @ Gy.t()
        nx = (Gx * Gx).sum(1)
        ny = (Gy * Gy).sum(1)
    else:
        # 'kernel': the backend's fused kernels (the P x P products are never written out)
        cross = _cross_sq_op(x, y, backend)
        nx = _self_sq_op(x, backend)
        ny = _self_sq_op(y, backend)
    d = (nx[:, None] + ny[None, :] - 2.0 * cross) / (n * n * C * C)
    return d.clamp_min(0.0)


def _torch_self_sq(x: torch.Tensor) -> torch.Tensor:
    N, C, H, W = x.shape
    X = x.reshape(N, C, H * W).to(out_dtype(x.dtype))
    K = torch.bmm(X.transpose(1, 2), X)
    return (K * K).sum(dim=(1, 2))


def _native_cross(x: torch.Tensor, y: torch.Tensor, self_only: bool, backend: str) -> torch.Tensor:
    N, M = x.shape[0], y.shape[0]
    rows = N if self_only else N * M
    if backend == "cpu":
        out = torch.empty((rows,), dtype=torch.float64)
        cpu_module().style_cross_sq(tensor_arg(x), tensor_arg(y), self_only, out.data_ptr())
    else:
        mod = cuda_module()
        nt = mod.style_cross_num_tiles(x.shape[2] * x.shape[3], self_only)
        part = torch.empty((rows, nt), dtype=torch.float64, device=x.device)
        with torch.cuda.device(x.device):
            mod.style_cross_sq(tensor_arg(x), tensor_arg(y), self_only, part.data_ptr(), cuda_stream(x))
        out = part.sum(dim=1)
    out = out.to(out_dtype(x.dtype))
    return out if self_only else out.reshape(N, M)


@torch.library.custom_op("percept_fast::style_cross_sq", mutates_args=())
def _cross_sq_op(x: torch.Tensor, y: torch.Tensor, backend: str) -> torch.Tensor:
    """[N, M] = ||X_n^T Y_m||_F^2 (raw), by a fast backend."""
    if backend == "triton":
        return _triton_cross_sq(x, y).to(out_dtype(x.dtype))
    return _native_cross(x, y, False, backend)


@_cross_sq_op.register_fake
def _(x, y, backend):
    return x.new_empty((x.shape[0], y.shape[0]), dtype=out_dtype(x.dtype))


@torch.library.custom_op("percept_fast::style_self_sq", mutates_args=())
def _self_sq_op(x: torch.Tensor, backend: str) -> torch.Tensor:
    """[N] = ||X_n^T X_n||_F^2 (raw); the Triton backend uses a batched matmul for this O(N P^2 C) term."""
    if backend == "triton":
        return _torch_self_sq(x)
    return _native_cross(x, x, True, backend)


@_self_sq_op.register_fake
def _(x, backend):
    return x.new_empty((x.shape[0],), dtype=out_dtype(x.dtype))


def _cross_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])


def _cross_backward(ctx, grad):
    # d/dX_n sum_m g_nm ||X_n^T Y_m||^2 = 2 sum_m g_nm Y_m (Y_m^T X_n); symmetric for Y. Chunked over n so the
    # [n, M, P, P] products stay under ~2^26 elements.
    x, y = ctx.saved_tensors
    N, C, H, W = x.shape
    M, P = y.shape[0], H * W
    acc = out_dtype(x.dtype)
    X, Y, g = x.reshape(N, C, P).to(acc), y.reshape(M, C, P).to(acc), grad.to(acc)
    gx = torch.zeros_like(X) if ctx.needs_input_grad[0] else None
    gy = torch.zeros_like(Y) if ctx.needs_input_grad[1] else None
    step = max(1, (1 << 26) // max(1, M * P * P))
    for i in range(0, N, step):
        Xc, gc = X[i : i + step], g[i : i + step]
        K = torch.einsum("ncp,mcq->nmpq", Xc, Y)  # (X_n^T Y_m)
        if gx is not None:
            gx[i : i + step] = 2.0 * torch.einsum("nm,mcq,nmpq->ncp", gc, Y, K)
        if gy is not None:
            gy += 2.0 * torch.einsum("nm,ncp,nmpq->mcq", gc, Xc, K)
    return (
        gx.reshape(x.shape).to(x.dtype) if gx is not None else None,
        gy.reshape(y.shape).to(y.dtype) if gy is not None else None,
        None,
    )


_cross_sq_op.register_autograd(_cross_backward, setup_context=_cross_setup)


def _self_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _self_backward(ctx, grad):
    # d/dX ||X^T X||_F^2 = 4 X (X^T X)
    (x,) = ctx.saved_tensors
    N, C, H, W = x.shape
    X = x.reshape(N, C, H * W).to(out_dtype(x.dtype))
    gx = 4.0 * grad.to(X.dtype).reshape(N, 1, 1) * torch.bmm(X, torch.bmm(X.transpose(1, 2), X))
    return gx.reshape(x.shape).to(x.dtype), None


_self_sq_op.register_autograd(_self_backward, setup_context=_self_setup)


def _triton_cross_sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    k_cross = _jit(_cross_sq_kernel)
    N, C, H, W = x.shape
    M = y.shape[0]
    P = H * W
    nt = -(-P // _KER_BP)
    part = torch.empty((N * M, nt * nt), dtype=torch.float32, device=x.device)
    k_cross[(N * M, nt * nt)](
        x,
        y,
        part,
        C,
        P,
        W,
        *x.stride(),
        *y.stride(),
        M,
        nt * nt,
        _KER_BP,
        _KER_BC,
        _triton_precision(x.dtype),
        _triton_upcast(x),
        num_warps=4,
    )
    return part.to(torch.float64).sum(dim=1).reshape(N, M)


def style_distance_matrix(
    fx: torch.Tensor | Sequence[torch.Tensor],
    fy: torch.Tensor | Sequence[torch.Tensor],
    *,
    normalize: str = "chw",
    per_layer: bool = False,
    method: str = "auto",
    backend: str = "auto",
    check_finite: bool = True,
) -> torch.Tensor:
    """All-pairs style distances ``[N, M]`` between ``fx`` ``[N, C, H, W]`` and ``fy`` ``[M, C, H, W]``.

    ``d[i, j] = style_distance(fx[i], fy[j])`` computed through GEMM identities (module docstring):
    ``method='gram'`` (flattened Grams), ``'kernel'`` (``||X_i^T Y_j||_F^2``) or ``'auto'`` (fewer MACs).
    Lists of layers are summed (``per_layer=True``: ``[N, M, L]``).  ``backend='torch'`` is the plain reference
    (explicit Gram differences); the other backends share the GEMM-identity path (batched matmuls on the input's
    device), ``'triton'`` computing the ``'kernel'`` cross terms with its own ``tl.dot`` kernel.  Differentiable
    through PyTorch autograd.
    """
    xs, ys = _as_layers(fx, fy, _OPM)
    _check_normalize(normalize, _OPM)
    _check_method(method, _OPM, ("auto", "gram", "kernel"))
    check_flag(per_layer, "per_layer", op=_OPM)
    check_flag(check_finite, "check_finite", op=_OPM)
    _validate_layers(xs, ys, _OPM, same_batch=False, check_finite=check_finite)
    be = resolve_backend(backend, xs[0].device, _OPM)
    if be == "torch":
        return style_distance_matrix_reference(xs, ys, normalize=normalize, per_layer=per_layer, check_finite=False)
    if be == "triton" and xs[0].dtype == torch.float64:
        raise TypeError(f"{_OPM}: backend='triton' supports float32/float16/bfloat16, got float64")
    vals = []
    for x, y in zip(xs, ys):
        N, C, H, W = x.shape
        m = choose_matrix_method(N, y.shape[0], C, H * W) if method == "auto" else method
        vals.append(_matrix_layer_fast(x, y, gram_normalizer(normalize, C, H, W), m, be))
    out = torch.stack(vals, dim=-1)
    return out if per_layer else out.sum(dim=-1)
