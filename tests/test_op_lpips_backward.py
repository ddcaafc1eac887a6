"""lpips_distance backward: the fused kernels (C++ CPU, Triton interpreter; CUDA/Triton on a GPU) against autograd of
the plain-PyTorch reference, gradcheck in float64, edge cases (zero vectors, eps, NaN/Inf, overflow, x == y)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch
from helpers.tensors import GRAD_LAYOUTS, interpret_floats_as_fp32, interpreter_env, make_features
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from percept_fast.ops import available_backends, lpips_distance
from percept_fast.ops.lpips_distance import lpips_layer_backward, lpips_layer_reference

HAVE_CPU = "cpu" in available_backends("cpu", "lpips_backward")
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="percept_fast._C not built (or built before lpips_backward)")


def leaf(t):
    """A leaf that keeps t's strides (expanded inputs stay expanded: the op sees stride 0)."""
    if t.stride(0) == 0:
        base = t[:1].clone().requires_grad_()
        return base, base.expand_as(t)
    t = t.detach().clone() if t.is_contiguous() else t.detach()
    t = t if t.is_leaf and t._base is None else t
    t.requires_grad_()
    return t, t


def grad_rtol(dtype):
    """Tolerance relative to the natural size of a gradient entry (natural_scale)."""
    if dtype == torch.float64:
        return 1e-10
    if dtype == torch.float32:
        return 2e-5
    return 2e-2  # half / bfloat16 storage of the gradient (fp32 maths)


def natural_scale(fx, fy, w, gout, spatial, eps=1e-10):
    """Per-pixel size of the gradient's terms, |g| max(w) (1/n(x) + 1/n(y)) (``[B, 1, H, W]``), and that of the
    weight's, 4 sum |g|: rounding errors are relative to these, not to the (possibly cancelled) result."""
    x, y = fx.double(), fy.double()
    B, C, H, W = x.shape
    g = gout.double().abs().reshape(B, 1, H, W) if spatial else gout.double().abs().reshape(B, 1, 1, 1) / (H * W)
    wmax = 1.0 if w is None else float(w.double().abs().max())
    inv = 1 / (x.norm(dim=1, keepdim=True) + eps) + 1 / (y.norm(dim=1, keepdim=True) + eps)
    return g * wmax * inv, 4 * float(g.expand(B, 1, H, W).sum())


def compare_with_reference(backend, shape, dtype, layout_x, layout_y, weighted, spatial, normalize, zero_frac, seed):
    """Fused gradients (fx, fy, weight) vs autograd of the reference for a random upstream gradient."""
    fx0 = make_features(shape, dtype, layout_x, seed, zero_frac=zero_frac)
    fy0 = make_features(shape, dtype, layout_y, seed + 1, zero_frac=zero_frac)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    w0 = torch.rand(shape[1], dtype=acc, generator=torch.Generator().manual_seed(seed)) if weighted else None
    gx_leaf, fx = leaf(fx0)
    gy_leaf, fy = leaf(fy0)
    leaves = [gx_leaf, gy_leaf]
    w = None
    if weighted:
        w = w0.clone().requires_grad_()
        leaves.append(w)
    out = lpips_distance(fx, fy, w, spatial=spatial, normalize=normalize, backend=backend, check_finite=False)
    gout = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed + 2))
    got = torch.autograd.grad(out, leaves, gout)
    # the reference on the same (rounded) values: 'lpips' at an exactly-zero vector is NaN under plain autograd, so
    # there the analytic limit (lpips_layer_backward, itself checked against autograd below) is the reference
    if normalize == "lpips" and zero_frac > 0:
        want = lpips_layer_backward(fx0, fy0, w0, 1e-10, 0, spatial, gout)
        want = [want[0], want[1]] + ([want[2]] if weighted else [])
        if layout_x == "expanded_b":
            want[0] = want[0].sum(0, keepdim=True)
        if layout_y == "expanded_b":
            want[1] = want[1].sum(0, keepdim=True)
    else:
        rx, rxs = leaf(fx0)
        ry, rys = leaf(fy0)
        rleaves = [rx, ry] + ([w0.clone().requires_grad_()] if weighted else [])
        ref = lpips_layer_reference(rxs, rys, rleaves[2] if weighted else None, 1e-10, normalize, spatial)
        want = torch.autograd.grad(ref, rleaves, gout)
    feat_scale, w_scale = natural_scale(fx0, fy0, w0, gout, spatial)
    rtol = grad_rtol(dtype)
    for name, a, b in zip(("fx", "fy", "weight"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if name == "weight":
            scale = torch.full_like(b, w_scale, dtype=torch.float64)
        else:
            scale = feat_scale.expand(fx0.shape)
            if scale.shape != a.shape:  # an expanded input's gradient sums over the batch
                scale = scale.sum(0, keepdim=True)
        # equal infinities agree (half precision overflows at 1/eps, the gradient at a zero vector; an expanded
        # input's sum of such may be NaN in both)
        same = (a == b) | (torch.isnan(a) & torch.isnan(b))
        err = torch.where(same, 0.0, (a.double() - b.double()).abs())
        assert bool((err <= rtol * scale + 1e-30).all()), (name, float((err / scale).max()))


# ------------------------------------------------------------------------------------------------- CPU


@needs_cpu
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 3),
    C=st.sampled_from([1, 2, 3, 8, 13, 64, 200]),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    layout_x=st.sampled_from(GRAD_LAYOUTS),
    layout_y=st.sampled_from(GRAD_LAYOUTS),
    weighted=st.booleans(),
    spatial=st.booleans(),
    normalize=st.sampled_from(["lpips", "stable"]),
    zero_frac=st.sampled_from([0.0, 0.0, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_cpu_backward_matches_reference(
    B, C, H, W, dtype, layout_x, layout_y, weighted, spatial, normalize, zero_frac, seed
):
    compare_with_reference(
        "cpu", (B, C, H, W), dtype, layout_x, layout_y, weighted, spatial, normalize, zero_frac, seed
    )


@needs_cpu
@pytest.mark.parametrize(
    "shape,layout",
    [((2, 64, 55, 55), "contiguous"), ((2, 384, 13, 13), "channels_last"), ((1, 512, 14, 14), "sliced_c")],
)
def test_cpu_backward_backbone_shapes(shape, layout):
    """Shapes of real taps (several tasks per sample, several threads): the row and pixel paths."""
    compare_with_reference("cpu", shape, torch.float32, layout, "contiguous", True, False, "lpips", 0.0, 3)
    compare_with_reference("cpu", shape, torch.float32, "contiguous", layout, True, True, "stable", 0.1, 4)


@needs_cpu
@pytest.mark.parametrize("shape", [(2, 3, 20, 20), (2, 5, 20, 20), (2, 200, 16, 17), (1, 512, 9, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cpu_backward_rows_of_larger_planes(shape, dtype):
    """Rows shorter than their plane prefetch the runs kPrefetchChannels channels ahead (lpips_backward_cpu.cpp):
    fewer channels than that (3), just more (5), many channels with short rows, and a plane one row covers."""
    compare_with_reference("cpu", shape, dtype, "contiguous", "contiguous", True, False, "lpips", 0.0, 5)
    compare_with_reference("cpu", shape, dtype, "contiguous", "contiguous", False, True, "stable", 0.1, 6)


@needs_cpu
@pytest.mark.parametrize("hw", [(1, 2), (2, 2), (3, 3), (3, 5), (4, 4), (1, 15)])
@pytest.mark.parametrize("C", [1, 7, 384])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cpu_backward_small_plane_flat_path(hw, C, dtype):
    """Planes of at most 16 pixels with adjacent channels and a frozen (or no) weight run as one flat run per sample
    (lpips_backward_cpu.cpp bwd_sample_flat): the input gradients equal autograd of the reference, with zero vectors
    and a NaN pixel among the inputs, spatial or not; identical inputs give exactly zero."""
    shape = (3, C, *hw)
    fx0 = make_features(shape, dtype, "contiguous", 11, zero_frac=0.2)
    fy0 = make_features(shape, dtype, "contiguous", 12)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    for weight in (None, torch.rand(C, dtype=acc, generator=torch.Generator().manual_seed(C))):
        for spatial in (False, True):
            fx, fy = fx0.clone().requires_grad_(), fy0.clone().requires_grad_()
            out = lpips_distance(fx, fy, weight, spatial=spatial, normalize="stable", backend="cpu")
            gout = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(3))
            got = torch.autograd.grad(out, [fx, fy], gout)
            rx, ry = fx0.clone().requires_grad_(), fy0.clone().requires_grad_()
            ref = lpips_layer_reference(rx, ry, weight, 1e-10, "stable", spatial)
            want = torch.autograd.grad(ref, [rx, ry], gout)
            feat_scale, _ = natural_scale(fx0, fy0, weight, gout, spatial)
            for a, b in zip(got, want):
                assert a.dtype == b.dtype and a.shape == b.shape
                err = (a.double() - b.double()).abs()
                assert bool((err <= grad_rtol(dtype) * feat_scale.expand(shape) + 1e-30).all())
    # a NaN/Inf pixel poisons that pixel's gradients in both inputs (as autograd of the reference)
    bad = fx0.clone()
    bad[1, C // 2, 0, -1] = float("nan")
    fx, fy = bad.requires_grad_(), fy0.clone().requires_grad_()
    gx, gy = torch.autograd.grad(
        lpips_distance(fx, fy, None, backend="cpu", check_finite=False, spatial=True).sum(), [fx, fy]
    )
    assert bool(gx[1, :, 0, -1].isnan().all()) and bool(gy[1, :, 0, -1].isnan().all())
    assert not bool(gx[0].isnan().any()) and not bool(gx[1, :, 0, 0].isnan().any())
    same = fy0.clone().requires_grad_()
    g_same = torch.autograd.grad(lpips_distance(same, fy0.clone(), backend="cpu").sum(), [same])[0]
    assert torch.equal(g_same, torch.zeros_like(g_same))


@needs_cpu
@pytest.mark.parametrize("normalize", ["lpips", "stable"])
@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_w"])
def test_gradcheck_fused_cpu(normalize, spatial, layout):
    fx = make_features((2, 3, 3, 4), torch.float64, layout, 0).detach().requires_grad_()
    fy = make_features((2, 3, 3, 4), torch.float64, "contiguous", 1).requires_grad_()
    w = (torch.rand(3, dtype=torch.float64) + 0.1).requires_grad_()

    def f(a, b, ww):
        return lpips_distance(a, b, ww, spatial=spatial, normalize=normalize, backend="cpu", eps=1e-6)

    assert torch.autograd.gradcheck(f, (fx, fy, w))
    assert torch.autograd.gradcheck(lambda a, b: f(a, b, None), (fx, fy))


@needs_cpu
def test_double_backward_uses_differentiable_formula():
    fx = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    fy = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(3, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda a, b, ww: lpips_distance(a, b, ww, normalize="stable", backend="cpu"), (fx, fy, w)
    )


@needs_cpu
def test_only_needed_gradients_are_computed():
    """A loss against a fixed target: fy and the weight need no gradient; the backward op writes dd/dfx only."""
    fx = torch.randn(2, 16, 5, 5, requires_grad=True)
    fy, w = torch.randn(2, 16, 5, 5), torch.rand(16)
    out = lpips_distance(fx, fy, w, backend="cpu")
    (g,) = torch.autograd.grad(out.sum(), (fx,))
    gx, gy, gw = torch.ops.percept_fast.lpips_layer_backward(
        fx.detach(), fy, w, torch.ones(2), 1e-10, 0, False, "cpu", True, False, False
    )
    assert gy.numel() == 0 and gw.numel() == 0 and torch.equal(gx, g)
    assert gx.stride() == fx.stride()
    fcl = fx.detach().contiguous(memory_format=torch.channels_last)
    gx_cl = torch.ops.percept_fast.lpips_layer_backward(fcl, fy, w, torch.ones(2), 1e-10, 0, False, "cpu", 1, 0, 0)[0]
    assert gx_cl.is_contiguous(memory_format=torch.channels_last)  # the gradient keeps the features' layout
    torch.testing.assert_close(gx_cl, g)


@needs_cpu
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_w"])
def test_identical_inputs_give_exactly_zero_gradients(layout):
    x = make_features((2, 40, 6, 7), torch.float32, layout, 5, zero_frac=0.2).detach().requires_grad_()
    y = x.detach().clone().requires_grad_()
    w = torch.rand(40, requires_grad=True)
    for normalize in ("lpips", "stable"):
        gs = torch.autograd.grad(lpips_distance(x, y, w, normalize=normalize, backend="cpu").sum(), (x, y, w))
        assert all(bool((g == 0).all()) for g in gs)


@needs_cpu
def test_zero_vector_and_eps():
    """'lpips': at x = 0 the Jacobian of x/(|x|+eps) is I/eps (the custom op's limit; autograd of the reference is
    NaN there); 'stable': finite everywhere and equal to autograd of the reference."""
    fy = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    for eps in (1e-10, 1e-3, 0.5):
        fx = torch.randn(1, 4, 2, 2, dtype=torch.float64)
        fx[0, :, 0, 0] = 0
        a = fx.clone().requires_grad_()
        (g,) = torch.autograd.grad(lpips_distance(a, fy, eps=eps, backend="cpu").sum(), (a,))
        v = fy[0, :, 0, 0] / (fy[0, :, 0, 0].norm() + eps)
        torch.testing.assert_close(g[0, :, 0, 0], 2 * (0 - v) / 4 / eps)
        # elsewhere: autograd of the reference, eps included
        b = fx.clone().requires_grad_()
        (h,) = torch.autograd.grad(lpips_layer_reference(b, fy, None, eps).sum(), (b,))
        torch.testing.assert_close(g[..., 1:, :], h[..., 1:, :], rtol=1e-10, atol=1e-12)
        a = fx.clone().requires_grad_()
        (g,) = torch.autograd.grad(lpips_distance(a, fy, eps=eps, normalize="stable", backend="cpu").sum(), (a,))
        b = fx.clone().requires_grad_()
        (h,) = torch.autograd.grad(lpips_layer_reference(b, fy, None, eps, "stable").sum(), (b,))
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-12)
    # tiny but non-zero vectors (subnormal squares): finite, and the 'stable' ones equal the reference
    fx = torch.full((1, 4, 1, 1), 1e-30, dtype=torch.float32, requires_grad=True)
    (g,) = torch.autograd.grad(lpips_distance(fx, fy[..., :1, :1].float(), backend="cpu").sum(), (fx,))
    assert torch.isfinite(g).all()


@needs_cpu
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nonfinite_inputs_give_nan_gradients_like_reference(bad, layout):
    fx = make_features((2, 6, 3, 4), torch.float32, layout, 1).detach().clone()
    fx[1, 2, 1, 1] = bad
    fy = make_features((2, 6, 3, 4), torch.float32, "contiguous", 2)
    w = torch.rand(6)
    a, b = fx.clone().requires_grad_(), fy.clone().requires_grad_()
    got = torch.autograd.grad(lpips_distance(a, b, w, backend="cpu", check_finite=False).sum(), (a, b))
    a, b = fx.clone().requires_grad_(), fy.clone().requires_grad_()
    want = torch.autograd.grad(lpips_layer_reference(a, b, w).sum(), (a, b))
    for g, h in zip(got, want):
        assert torch.equal(torch.isnan(g), torch.isnan(h))
        assert torch.isnan(g[1, :, 1, 1]).all() and int(torch.isnan(g).sum()) == 6
        torch.testing.assert_close(g.nan_to_num(0.0), h.nan_to_num(0.0), rtol=1e-4, atol=1e-6)


@needs_cpu
def test_overflowed_norm_gives_zero_gradient():
    """Squares that overflow float32: the forward takes that vector as 0 (the reference's x / inf), the backward gives
    it zero gradient and the other input the gradient of d = |v|^2."""
    huge = make_features((2, 6, 3, 4), torch.float32, "contiguous", 1) * 1e30
    small = make_features((2, 6, 3, 4), torch.float32, "contiguous", 2)
    a, b = huge.clone().requires_grad_(), small.clone().requires_grad_()
    ga, gb = torch.autograd.grad(lpips_distance(a, b, backend="cpu").sum(), (a, b))
    assert bool((ga == 0).all())
    b2 = small.clone().requires_grad_()
    (want,) = torch.autograd.grad(lpips_layer_reference(torch.zeros_like(huge), b2).sum(), (b2,))
    torch.testing.assert_close(gb, want, rtol=1e-4, atol=1e-7)


@needs_cpu
def test_backward_op_registration_and_compile():
    fx, fy, w = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5), torch.rand(8)
    ex = torch.library.opcheck(
        torch.ops.percept_fast.lpips_layer_backward.default,
        (fx, fy, w, torch.randn(2), 1e-10, 0, False, "cpu", True, True, True),
    )
    assert all(v == "SUCCESS" for v in ex.values()), ex
    ex = torch.library.opcheck(
        torch.ops.percept_fast.lpips_layer_backward.default,
        (fx, fy, None, torch.randn(2, 1, 5, 5), 1e-10, 1, True, "cpu", True, False, False),
    )
    assert all(v == "SUCCESS" for v in ex.values()), ex
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm.code)
        return make_boxed_func(gm)

    compiled = torch.compile(
        lambda a, b: lpips_distance(a, b, w, backend="cpu", check_finite=False).sum(),
        backend=aot_autograd(fw_compiler=keep, bw_compiler=keep),
    )
    a = fx.clone().requires_grad_()
    compiled(a, fy).backward()
    b = fx.clone().requires_grad_()
    lpips_layer_reference(b, fy, w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    assert any("percept_fast.lpips_layer_backward" in code for code in graphs), graphs  # the fused op, traced


# ------------------------------------------------------------------------------- one autograd node, every layer


def _run_both(fxs, fys, ws, gouts, kw, wanted, single):
    """Outputs and gradients of lpips_distance through the one-node fast path (_LayersCPU) and through the plain path
    (one custom op per layer, the fast path switched off); the leaves are rebuilt for each run."""
    ld = importlib.import_module("percept_fast.ops.lpips_distance")  # the module (the package exports the function)

    results = []
    for fused in (True, False):
        leaves, fx_in, fy_in, w_in = [], [], [], []
        for src, dst, want in ((fxs, fx_in, wanted[0]), (fys, fy_in, wanted[1]), (ws, w_in, wanted[2])):
            for i, t in enumerate(src):
                if t is None or not want[i]:
                    dst.append(t)
                    continue
                lf, v = leaf(t)
                leaves.append(lf)
                dst.append(v)
        args = (fx_in[0], fy_in[0], w_in[0]) if single else (fx_in, fy_in, w_in)
        orig = ld._fused_ok
        if not fused:
            ld._fused_ok = lambda tensors: False
        try:
            out = lpips_distance(*args, backend="cpu", check_finite=False, **kw)
        finally:
            ld._fused_ok = orig
        outs = list(out) if isinstance(out, list) else [out]
        if fused:
            assert any(type(o.grad_fn).__name__ == "_LayersCPUBackward" for o in outs), [o.grad_fn for o in outs]
        used = [(o, g) for o, g in zip(outs, gouts) if g is not None and o.requires_grad]
        grads = [None] * len(leaves)  # nothing differentiable receives a gradient
        if used:
            grads = torch.autograd.grad([o for o, _ in used], leaves, [g for _, g in used], allow_unused=True)
        results.append(([o.detach() for o in outs], [o.requires_grad for o in outs], grads))
    return results


@needs_cpu
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 4),
    B=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    combine=st.sampled_from(["sum", "per_layer", "spatial", "single", "single_spatial"]),
    normalize=st.sampled_from(["lpips", "stable"]),
    data=st.data(),
)
def test_fused_layers_equal_per_layer_ops(n, B, dtype, combine, normalize, data):
    """The one-node path of every layer's forward and backward (_LayersCPU) gives bit for bit the outputs and the
    gradients (features, weights) of the per-layer custom ops over random shapes, dtypes, layouts, weights, which
    inputs need a gradient, and spatial maps that receive no gradient."""
    if combine.startswith("single"):
        n = 1
    seed = data.draw(st.integers(0, 2**16), label="seed")
    fxs, fys, ws = [], [], []
    for i in range(n):
        shape = (
            B,
            data.draw(st.sampled_from([1, 3, 8, 64])),
            data.draw(st.integers(1, 6)),
            data.draw(st.integers(1, 6)),
        )
        lx, ly = data.draw(st.sampled_from(GRAD_LAYOUTS)), data.draw(st.sampled_from(GRAD_LAYOUTS))
        fxs.append(make_features(shape, dtype, lx, seed + 3 * i, zero_frac=0.2))
        fys.append(make_features(shape, dtype, ly, seed + 3 * i + 1))
        wdt = data.draw(st.sampled_from([None, dtype, torch.float32]))
        g = torch.Generator().manual_seed(seed + 3 * i + 2)
        ws.append(None if wdt is None else torch.rand(shape[1], generator=g).to(wdt))
    wanted = [[data.draw(st.booleans()) for _ in range(n)] for _ in range(3)]
    if not any(wanted[0] + wanted[1] + [w is not None and r for w, r in zip(ws, wanted[2])]):
        wanted[0][0] = True
    kw = {"normalize": normalize}
    if combine == "per_layer":
        kw["per_layer"] = True
    if combine in ("spatial", "single_spatial"):
        kw["spatial"] = True
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    g = torch.Generator().manual_seed(seed + 99)
    if "spatial" in combine:  # a map without upstream gradient: its layer is skipped (as autograd skips its node)
        gouts = [torch.randn(B, 1, f.shape[2], f.shape[3], generator=g, dtype=acc) for f in fxs]
        if n > 1 and data.draw(st.booleans()):
            gouts[data.draw(st.integers(0, n - 1))] = None
    else:
        gouts = [torch.randn((B, n) if combine == "per_layer" else (B,), generator=g, dtype=acc)]
    (out_f, req_f, grad_f), (out_p, req_p, grad_p) = _run_both(
        fxs, fys, ws, gouts, kw, wanted, combine.startswith("single")
    )
    assert all(torch.equal(a, b) for a, b in zip(out_f, out_p)) and req_f == req_p
    assert len(grad_f) == len(grad_p)
    for a, b in zip(grad_f, grad_p):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)) and torch.equal(a.isnan(), b.isnan())


@needs_cpu
def test_fused_layers_double_backward_and_errors():
    """Double backward through the one-node path (float64 gradgradcheck), and its checks: every layer is checked
    before any kernel runs, and NaN/Inf found by the kernel names the layer."""
    fxs = [
        torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(2, 5, 1, 2, dtype=torch.float64),
    ]
    fys = [
        torch.randn(2, 3, 2, 3, dtype=torch.float64),
        torch.randn(2, 5, 1, 2, dtype=torch.float64, requires_grad=True),
    ]
    w = (torch.rand(3, dtype=torch.float64) + 0.1).requires_grad_()
    assert type(lpips_distance(fxs, fys, [w, None], backend="cpu").grad_fn).__name__ == "_LayersCPUBackward"
    assert torch.autograd.gradgradcheck(
        lambda a, b, c, d, ww: lpips_distance([a, c], [b, d], [ww, None], normalize="stable", backend="cpu"),
        (fxs[0], fys[0], fxs[1], fys[1], w),
    )
    bad = fys[1].detach().clone()
    bad[1, 2, 0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"fy\[1\] contains NaN or Inf"):
        lpips_distance(fxs, [fys[0], bad], backend="cpu")
    with pytest.raises(ValueError, match=r"fy contains NaN or Inf"):
        lpips_distance(fxs[1], bad, backend="cpu")
    with pytest.raises(ValueError, match=r"weight\[0\] must be non-negative"):
        lpips_distance(fxs, fys, [-w.detach(), None], backend="cpu")
    with pytest.raises(ValueError, match=r"fx\[1\] and fy\[1\] must have the same shape"):
        lpips_distance(fxs, [fys[0], fys[1][:, :4]], backend="cpu")


# ---------------------------------------------------------------------------------------------- triton

TRITON_CASES = [
    ((2, 3, 5, 7), torch.float64, "channels_last", "contiguous", True, False, "lpips", 0.3),
    ((1, 20, 3, 4), torch.float32, "sliced_c", "expanded_b", True, True, "stable", 0.0),
    ((2, 5, 2, 3), torch.bfloat16, "transposed_hw", "contiguous", False, False, "lpips", 0.0),
    ((1, 1, 1, 1), torch.float16, "contiguous", "contiguous", True, True, "lpips", 0.0),
]


def _triton_cases() -> None:
    """Runs in a subprocess with TRITON_INTERPRET=1 set before triton is imported (the interpreter needs that)."""
    from percept_fast.ops import _common as cm

    assert cm.triton_interpret() and "triton" in available_backends("cpu")
    interpret_floats_as_fp32()  # as compiled: the float64 case then fails if eps reaches the kernel as one fp32
    for case in TRITON_CASES:
        compare_with_reference("triton", *case, seed=11)
    fx = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    fy = torch.randn(2, 3, 3, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (torch.rand(3, dtype=torch.float64) + 0.1).requires_grad_()
    for normalize, spatial in (("lpips", False), ("stable", True)):
        assert torch.autograd.gradcheck(
            lambda a, b, ww, spatial=spatial, normalize=normalize: lpips_distance(
                a, b, ww, spatial=spatial, normalize=normalize, backend="triton", eps=1e-6
            ),
            (fx, fy, w),
        )
    bad = torch.randn(2, 4, 2, 3)
    bad[1, 2, 1, 0] = float("inf")
    a = bad.clone().requires_grad_()
    (g,) = torch.autograd.grad(
        lpips_distance(a, torch.randn(2, 4, 2, 3), backend="triton", check_finite=False).sum(), (a,)
    )
    assert torch.isnan(g[1, :, 1, 0]).all() and int(torch.isnan(g).sum()) == 4
    x = torch.randn(2, 6, 3, 3, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    assert all(bool((t == 0).all()) for t in torch.autograd.grad(lpips_distance(x, y, backend="triton").sum(), (x, y)))
    print("TRITON_BWD_OK")


def test_triton_interpreter_backward():
    pytest.importorskip("triton")
    env = interpreter_env()
    code = f"import runpy; runpy.run_path({__file__!r})['_triton_cases']()"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0 and "TRITON_BWD_OK" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]


# ------------------------------------------------------------------------------------------------- gpu


def _gpu_compare(backend, shape, dtype, layout, weighted, spatial, normalize, seed):
    fx = make_features(shape, dtype, layout, seed, "cuda", zero_frac=0.1).detach().requires_grad_()
    fy = make_features(shape, dtype, "contiguous", seed + 1, "cuda").requires_grad_()
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    w = torch.rand(shape[1], dtype=acc, device="cuda").requires_grad_() if weighted else None
    leaves = (fx, fy) + ((w,) if weighted else ())
    out = lpips_distance(fx, fy, w, spatial=spatial, normalize=normalize, backend=backend)
    gout = torch.randn_like(out)
    got = torch.autograd.grad(out, leaves, gout)
    # the fused CPU backward on the same values is the reference here (it is checked against autograd above)
    cx, cy = fx.detach().cpu().requires_grad_(), fy.detach().cpu().requires_grad_()
    cw = w.detach().cpu().requires_grad_() if weighted else None
    cl = (cx, cy) + ((cw,) if weighted else ())
    want = torch.autograd.grad(
        lpips_distance(cx, cy, cw, spatial=spatial, normalize=normalize, backend="cpu"), cl, gout.cpu()
    )
    feat_scale, w_scale = natural_scale(cx, cy, cw, gout.cpu(), spatial)
    for a, b in zip(got, want):
        scale = feat_scale.expand(b.shape) if b.dim() == 4 else torch.full_like(b, w_scale, dtype=torch.float64)
        err = (a.cpu().double() - b.double()).abs()
        # GPU reductions run in another order: float32 over 512 channels differs by a few more ulps
        assert bool((err <= 4 * grad_rtol(dtype) * scale + 1e-30).all()), float((err / scale).max())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_c"])
def test_gpu_backward_matches_cpu(backend, dtype, layout):
    if backend not in available_backends("cuda", "lpips_backward" if backend == "cuda" else None):
        pytest.skip(f"{backend} not available")
    for i, shape in enumerate([(1, 1, 1, 1), (3, 7, 5, 9), (4, 64, 55, 55), (2, 512, 7, 7)]):
        for weighted, spatial, normalize in ((True, False, "lpips"), (False, True, "stable")):
            _gpu_compare(backend, shape, dtype, layout, weighted, spatial, normalize, 10 + i)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_backward_gradcheck_and_zero(backend):
    if backend not in available_backends("cuda", "lpips_backward" if backend == "cuda" else None):
        pytest.skip(f"{backend} not available")
    fx = torch.randn(2, 3, 3, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    fy = torch.randn(2, 3, 3, 4, dtype=torch.float64, device="cuda").contiguous(memory_format=torch.channels_last)
    fy.requires_grad_()
    w = (torch.rand(3, dtype=torch.float64, device="cuda") + 0.1).requires_grad_()
    for spatial in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, b, ww, spatial=spatial: lpips_distance(a, b, ww, spatial=spatial, backend=backend, eps=1e-6),
            (fx, fy, w),
        )
    x = torch.randn(2, 64, 9, 9, device="cuda", requires_grad=True)
    y = x.detach().clone().requires_grad_()
    assert all(bool((t == 0).all()) for t in torch.autograd.grad(lpips_distance(x, y, backend=backend).sum(), (x, y)))
