"""lpips_distance / lpips_distance_matrix: every backend against the plain-PyTorch reference."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers.tensors import LAYOUTS, interpret_floats_as_fp32, interpreter_env, make_features
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from percept_fast.ops import _common as cm
from percept_fast.ops import available_backends, lpips_distance, lpips_distance_matrix
from percept_fast.ops.lpips_distance import lpips_layer_backward, lpips_layer_reference, normalize_features

HAVE_CPU = "cpu" in available_backends("cpu", "lpips_forward")
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="percept_fast._C not built")
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def tol(dtype):
    return dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)


# ------------------------------------------------------------------------------------------ reference


def test_normalize_matches_lpips_package_exactly():
    lpips = pytest.importorskip("lpips")
    x = torch.randn(3, 17, 5, 6)
    x[0, :, 1, 1] = 0
    assert torch.equal(normalize_features(x, 1e-10, "lpips"), lpips.normalize_tensor(x, eps=1e-10))
    assert torch.equal(normalize_features(x, 1e-3, "lpips"), lpips.normalize_tensor(x, eps=1e-3))


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpu)])
def test_layer_matches_lpips_formula(backend):
    """out = spatial_average(lin((normalize(x) - normalize(y))**2)) as in lpips.LPIPS.forward."""
    lpips = pytest.importorskip("lpips")
    fx, fy = torch.randn(4, 32, 7, 9), torch.randn(4, 32, 7, 9)
    w = torch.rand(1, 32, 1, 1)
    diff = (lpips.normalize_tensor(fx) - lpips.normalize_tensor(fy)) ** 2
    want = lpips.spatial_average(torch.nn.functional.conv2d(diff, w), keepdim=True).reshape(4)
    got = lpips_distance(fx, fy, w, backend=backend)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-6)
    want_map = torch.nn.functional.conv2d(diff, w)
    torch.testing.assert_close(lpips_distance(fx, fy, w, spatial=True, backend=backend), want_map, rtol=2e-5, atol=1e-6)


def test_reference_float64_formula():
    fx, fy = torch.randn(2, 5, 3, 4, dtype=torch.float64), torch.randn(2, 5, 3, 4, dtype=torch.float64)
    w = torch.rand(5, dtype=torch.float64)
    u = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    v = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    want = ((u - v) ** 2 * w.view(1, 5, 1, 1)).sum(1).mean((1, 2))
    torch.testing.assert_close(lpips_layer_reference(fx, fy, w), want)


# ------------------------------------------------------------------------------------------ CPU kernel


@needs_cpu
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 3),
    C=st.integers(1, 24),
    H=st.integers(1, 7),
    W=st.integers(1, 9),
    dtype=st.sampled_from(DTYPES),
    layout_x=st.sampled_from(LAYOUTS),
    layout_y=st.sampled_from(LAYOUTS),
    weighted=st.booleans(),
    normalize=st.sampled_from(["lpips", "stable"]),
    spatial=st.booleans(),
    zero_frac=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_cpu_matches_reference(B, C, H, W, dtype, layout_x, layout_y, weighted, normalize, spatial, zero_frac, seed):
    fx = make_features((B, C, H, W), dtype, layout_x, seed, zero_frac=zero_frac)
    fy = make_features((B, C, H, W), dtype, layout_y, seed + 1, zero_frac=zero_frac)
    w = torch.rand(C, generator=torch.Generator().manual_seed(seed)) * 2 if weighted else None
    want = lpips_layer_reference(fx, fy, w, 1e-10, normalize, spatial)
    got = lpips_distance(fx, fy, w, spatial=spatial, normalize=normalize, backend="cpu")
    assert got.dtype == cm.out_dtype(dtype)
    assert got.shape == ((B, 1, H, W) if spatial else (B,))
    torch.testing.assert_close(got, want, **tol(dtype))


@needs_cpu
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 64, 13, 11), (1, 300, 3, 3), (2, 3, 70, 70)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_larger_shapes(shape, layout):
    fx, fy = make_features(shape, torch.float32, layout, 1), make_features(shape, torch.float32, layout, 2)
    w = torch.rand(shape[1])
    torch.testing.assert_close(
        lpips_distance(fx, fy, w, backend="cpu"), lpips_layer_reference(fx, fy, w), **tol(fx.dtype)
    )


@needs_cpu
@pytest.mark.parametrize("normalize", ["lpips", "stable"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_c"])
def test_identical_inputs_give_exact_zero(normalize, layout):
    fx = make_features((3, 19, 5, 4), torch.float32, layout, 3, zero_frac=0.2)
    w = torch.rand(1, 19, 1, 1)
    out = lpips_distance(fx, fx.clone(), w, normalize=normalize, backend="cpu")
    assert torch.equal(out, torch.zeros(3))
    assert torch.equal(lpips_distance(fx, fx, spatial=True, backend="cpu"), torch.zeros(3, 1, 5, 4))


@needs_cpu
def test_zero_vectors_are_finite_and_match():
    fx = torch.zeros(2, 8, 3, 3)
    fy = torch.randn(2, 8, 3, 3)
    for normalize in ("lpips", "stable"):
        got = lpips_distance(fx, fy, normalize=normalize, backend="cpu")
        torch.testing.assert_close(got, lpips_layer_reference(fx, fy, None, 1e-10, normalize))
        torch.testing.assert_close(got, torch.ones(2), rtol=1e-5, atol=1e-5)  # ||0 - unit||^2 = 1


@needs_cpu
def test_cpu_is_deterministic_across_threads(monkeypatch):
    fx, fy = torch.randn(8, 64, 20, 20), torch.randn(8, 64, 20, 20)
    a = lpips_distance(fx, fy, backend="cpu")
    b = lpips_distance(fx, fy, backend="cpu")
    assert torch.equal(a, b)


@needs_cpu
@pytest.mark.parametrize("hw", [(1, 1), (1, 2), (1, 3), (2, 2), (3, 3), (3, 5), (1, 15), (2, 4), (4, 4)])
@pytest.mark.parametrize("C", [1, 7, 384])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_cpu_small_plane_flat_path(hw, C, dtype, weighted):
    """Planes of P <= 16 pixels with adjacent channels run as one flat run per sample (lanes of lcm(P, 8), a tail
    when C * P is not a multiple of it; fp32 with P dividing 16 in 16 register lanes, other fp32 planes two 8-lane
    chunks at a time in registers, with no full run at all for C = 1 and 7): equal to the reference, map included, and
    exactly 0 on identical inputs."""
    shape = (3, C, *hw)
    fx, fy = make_features(shape, dtype, "contiguous", 5), make_features(shape, dtype, "contiguous", 6)
    w = torch.rand(C, generator=torch.Generator().manual_seed(C)) * 2 if weighted else None
    for normalize in ("lpips", "stable"):
        for spatial in (False, True):
            want = lpips_layer_reference(fx, fy, w, 1e-10, normalize, spatial)
            got = lpips_distance(fx, fy, w, spatial=spatial, normalize=normalize, backend="cpu")
            torch.testing.assert_close(got, want, **tol(dtype))
    assert torch.equal(lpips_distance(fx, fx.clone(), w, backend="cpu"), torch.zeros(3, dtype=cm.out_dtype(dtype)))


@needs_cpu
@pytest.mark.parametrize(
    "hw", [(11, 11), (13, 13), (14, 14), (16, 16), (18, 19), (27, 27), (28, 28), (32, 32), (33, 33)]
)
@pytest.mark.parametrize("C", [2, 3, 5, 6, 64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_prefetched_row_path(hw, C, dtype):
    """Planes of 128-1024 pixels prefetch the next channel pair's planes while summing this pair, a block of
    pixels at a time (lpips_cpu.cpp kPrefetch*): the window's edges (121 and 1089 pixels lie outside it), pixel
    counts that are and are not whole blocks (169, 342, 729 and 256, 784, 1024), odd and even channel counts (the
    last pair and the odd channel are not prefetched), every dtype; equal to the reference and exactly 0 on
    identical inputs."""
    shape = (2, C, *hw)
    fx, fy = make_features(shape, dtype, "contiguous", 7), make_features(shape, dtype, "contiguous", 8)
    w = torch.rand(C, generator=torch.Generator().manual_seed(C)) * 2
    for weight in (None, w):
        want = lpips_layer_reference(fx, fy, weight, 1e-10, "lpips", True)
        got = lpips_distance(fx, fy, weight, spatial=True, backend="cpu")
        torch.testing.assert_close(got, want, **tol(dtype))
    assert torch.equal(lpips_distance(fx, fx.clone(), w, backend="cpu"), torch.zeros(2, dtype=cm.out_dtype(dtype)))


def _assert_cpu_matches_reference(fx, fy, w, dtype):
    """The CPU backend against the reference: unweighted and weighted `w`, both norms, with and without the map."""
    for weight in (None, w):
        for normalize in ("lpips", "stable"):
            for spatial in (False, True):
                want = lpips_layer_reference(fx, fy, weight, 1e-10, normalize, spatial)
                got = lpips_distance(fx, fy, weight, spatial=spatial, normalize=normalize, backend="cpu")
                torch.testing.assert_close(got, want, **tol(dtype))


@needs_cpu
@pytest.mark.parametrize("hw", [(7, 7), (10, 12), (33, 34), (64, 64), (65, 64)])
@pytest.mark.parametrize("C", [1, 3, 4, 6, 9])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_row_path_channel_groups(hw, C, dtype):
    """Contiguous planes outside the prefetch window (under 128 or over 1024 pixels, and 4160 pixels: two rows of
    at most 4096) add four channels per pass, then a pair, then one (C = 1, 3, 4, 6, 9 cover every remainder), and
    end each row with the vectorised per-pixel maths: equal to the reference for both norms, weighted or not, map
    included, and exactly 0 on identical inputs."""
    shape = (2, C, *hw)
    fx = make_features(shape, dtype, "contiguous", 9, zero_frac=0.1)
    fy = make_features(shape, dtype, "contiguous", 10)
    w = torch.rand(C, generator=torch.Generator().manual_seed(C)) * 2
    _assert_cpu_matches_reference(fx, fy, w, dtype)
    assert torch.equal(lpips_distance(fx, fx.clone(), w, backend="cpu"), torch.zeros(2, dtype=cm.out_dtype(dtype)))


@needs_cpu
@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (4, 4), (7, 9), (15, 15), (16, 16), (17, 17)])
@pytest.mark.parametrize("C", [8, 16, 64, 72, 100, 128, 384, 392])
def test_cpu_channels_last_fp32_register_path(hw, C):
    """fp32 channels-last inputs with C a multiple of 8 take the register path (eight pixels' lane sums folded at
    once, the tile ended by finish_row) up to 64 channels, and up to 384 on planes of up to 256 pixels (72, 128 and
    384 channels on 17x17 planes, 100 and 392 channels take the generic one; 1x1 planes the flat one): tiles of 1-16
    pixels, not multiples of 8, both norms, weighted or not, map included; exactly 0 on identical inputs; a NaN is
    reported. (Dropping the last 8 channels of the register path above 64 channels fails 15 of these.)"""
    shape = (3, C, *hw)
    fx = make_features(shape, torch.float32, "channels_last", 11, zero_frac=0.1)
    fy = make_features(shape, torch.float32, "channels_last", 12)
    assert fx.stride(1) == 1 and fy.stride(1) == 1
    w = torch.rand(C, generator=torch.Generator().manual_seed(C)) * 2
    _assert_cpu_matches_reference(fx, fy, w, torch.float32)
    assert torch.equal(lpips_distance(fx, fx.clone(), w, backend="cpu"), torch.zeros(3))
    bad = fx.clone()
    bad[1, C - 1, hw[0] - 1, hw[1] - 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lpips_distance(bad, fy, w, backend="cpu")


@needs_cpu
def test_cpu_threaded_paths_match_reference():
    """Inputs large enough for several worker threads (flat small-plane path and tiled path)."""
    for shape in [(64, 384, 3, 3), (8, 64, 32, 32)]:
        fx, fy, w = torch.randn(shape), torch.randn(shape), torch.rand(shape[1])
        torch.testing.assert_close(lpips_distance(fx, fy, w, backend="cpu"), lpips_layer_reference(fx, fy, w))


@needs_cpu
def test_cpu_worker_pool_concurrent_callers_and_fork():
    """The persistent worker pool serves one call at a time: concurrent Python threads (the GIL is released) fall
    back to fresh threads, and a forked child (no pool workers) still computes."""
    from concurrent.futures import ThreadPoolExecutor

    shapes = [(64, 384, 3, 3), (8, 64, 32, 32), (16, 2048, 2, 2)]
    inputs = [(torch.randn(s), torch.randn(s), torch.rand(s[1])) for s in shapes]
    want = [lpips_layer_reference(a, b, w) for a, b, w in inputs]
    with ThreadPoolExecutor(4) as ex:
        for _ in range(3):
            got = list(ex.map(lambda t: lpips_distance(*t, backend="cpu"), inputs * 4))
            for i, g in enumerate(got):
                torch.testing.assert_close(g, want[i % len(shapes)], rtol=1e-5, atol=1e-6)
    if not hasattr(os, "fork"):
        return
    expected = lpips_distance(*inputs[0], backend="cpu")  # the pool exists now
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only the op (no other torch work), result through the pipe
        try:
            os.write(wfd, lpips_distance(*inputs[0], backend="cpu").numpy().tobytes())
        finally:
            os._exit(0)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 1 << 16):
        data += chunk
    os.close(rfd)
    os.waitpid(pid, 0)
    assert torch.equal(torch.frombuffer(bytearray(data), dtype=torch.float32), expected)


@needs_cpu
def test_cpu_kernels_follow_torch_thread_count():
    """Built with OpenMP, the kernels run on torch's OpenMP pool: torch.set_num_threads applies to them (unless
    PF_NUM_THREADS overrides it), and the results do not depend on the thread count."""
    from percept_fast import _C

    if not _C.openmp or os.environ.get("PF_NUM_THREADS"):
        pytest.skip("built without OpenMP or PF_NUM_THREADS set")
    before = torch.get_num_threads()
    fx, fy, w = torch.randn(16, 256, 16, 16), torch.randn(16, 256, 16, 16), torch.rand(256)
    try:
        torch.set_num_threads(1)
        assert _C.num_threads() == 1
        one = lpips_distance(fx, fy, w, backend="cpu")
        torch.set_num_threads(3)
        assert _C.num_threads() == 3
        torch.testing.assert_close(lpips_distance(fx, fy, w, backend="cpu"), one, rtol=1e-6, atol=1e-7)
    finally:
        torch.set_num_threads(before)


# kernel-side validation: the C++ pass flags NaN/Inf per pixel (sum of squares not finite, then a re-read)
FINITE_LAYOUTS = ["contiguous", "channels_last", "sliced_c", "transposed_hw"]


@needs_cpu
@pytest.mark.parametrize("shape", [(2, 5, 3, 3), (2, 5, 6, 7), (3, 20, 1, 1), (2, 5, 4, 4), (2, 6, 33, 34)])
@pytest.mark.parametrize("layout", FINITE_LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_cpu_fused_finite_check(shape, layout, dtype, bad):
    B, C, H, W = shape
    w = torch.rand(C)
    for which in ("fx", "fy"):
        t = {"fx": make_features(shape, dtype, layout, 1), "fy": make_features(shape, dtype, layout, 2)}
        t[which][B - 1, C - 1, H - 1, W // 2] = bad  # one element, last sample / channel
        with pytest.raises(ValueError, match=f"{which} contains NaN or Inf"):
            lpips_distance(t["fx"], t["fy"], w, backend="cpu")
        with pytest.raises(ValueError, match=f"{which} contains NaN or Inf"):
            lpips_distance(t["fx"], t["fy"], w, spatial=True, backend="cpu")
        got = lpips_distance(t["fx"], t["fy"], w, backend="cpu", check_finite=False)  # not checked: no error
        assert got.shape == (B,) and torch.isfinite(got[: B - 1]).all()
        if bad != bad:  # an unchecked NaN gives NaN, as in the reference (the clamp at 0 must not hide it); an
            # unchecked Inf is treated like an overflowed norm (next test), where the reference gives NaN
            ref = lpips_distance(t["fx"], t["fy"], w, backend="torch", check_finite=False)
            assert torch.isnan(ref[B - 1]) and torch.isnan(got[B - 1])
        # lists name the layer; requires_grad goes through the custom op (same check)
        with pytest.raises(ValueError, match=rf"{which}\[1\] contains NaN or Inf"):
            clean = make_features(shape, dtype, layout, 3)
            lpips_distance([clean, t["fx"]], [clean, t["fy"]], [w, w], backend="cpu")
        a = t["fx"].detach().clone().requires_grad_(which == "fx" and dtype != torch.float16)
        with pytest.raises(ValueError, match=f"{which} contains NaN or Inf"):
            lpips_distance(a, t["fy"], w, backend="cpu")


@needs_cpu
@pytest.mark.parametrize("layout", FINITE_LAYOUTS)
def test_cpu_finite_overflow_is_not_an_error(layout):
    """Finite values whose squares overflow float32 make the sum Inf, but the re-read finds no NaN/Inf: no error."""
    fx = make_features((2, 6, 3, 4), torch.float32, layout, 1) * 1e30
    fy = make_features((2, 6, 3, 4), torch.float32, layout, 2)
    w = torch.rand(6)
    for ww in (None, w):
        out = lpips_distance(fx, fy, ww, backend="cpu")  # check_finite=True
        # and the value is the reference's: the overflowed norm makes fx's normalised vectors 0 (x / inf), so
        # only fy's term remains (not inf * 0 = NaN, not a clamp to 0)
        want = lpips_distance(fx, fy, ww, backend="torch")
        assert torch.isfinite(want).all() and (want > 0).all()
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


@needs_cpu
@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (2, 3, 5, 6)])
def test_cpu_kernel_weight_checks(shape):
    """A float32 weight is checked by the kernel (nothing computed), a float64 one in Python: same errors."""
    fx, fy = torch.randn(shape), torch.randn(shape)
    for wdt in (torch.float32, torch.float64):
        for bad, match in ((float("nan"), "weight contains NaN or Inf"), (float("inf"), "weight contains NaN or Inf")):
            w = torch.tensor([1.0, bad, 1.0], dtype=wdt)
            with pytest.raises(ValueError, match=match):
                lpips_distance(fx, fy, w, backend="cpu", check_finite=False)
        with pytest.raises(ValueError, match="non-negative"):
            lpips_distance(fx, fy, torch.tensor([1.0, -1e-3, 1.0], dtype=wdt), backend="cpu")
        with pytest.raises(ValueError, match=r"weight\[1\] must be non-negative"):
            lpips_distance([fx, fx], [fy, fy], [None, torch.tensor([1.0, -1.0, 1.0], dtype=wdt)], backend="cpu")
        with pytest.raises(ValueError, match=r"weight\[0\] contains NaN"):
            w = torch.tensor([[[[1.0]], [[float("nan")]], [[1.0]]]], dtype=wdt)  # [1, C, 1, 1]
            lpips_distance([fx, fx], [fy, fy], [w, None], backend="cpu")


@needs_cpu
def test_direct_call_matches_custom_op_and_keeps_gradients():
    """Without autograd the CPU forward is called directly (no op dispatch); with it, through the custom op."""
    fx, fy, w = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5), torch.rand(8)
    assert cm.direct_call_ok(fx, fy, w)
    assert not cm.direct_call_ok(fx.clone().requires_grad_(), fy, w)
    with torch.no_grad():
        assert cm.direct_call_ok(fx.clone().requires_grad_(), fy, w)
    direct = lpips_distance(fx, fy, w, backend="cpu")
    op = torch.ops.percept_fast.lpips_layer.default(fx, fy, w, 1e-10, 0, False, "cpu", True, -1)
    assert torch.equal(direct, op)
    a = fx.clone().requires_grad_()
    out = lpips_distance(a, fy, w, backend="cpu")
    assert out.grad_fn is not None and torch.equal(out.detach(), direct)
    (g,) = torch.autograd.grad(out.sum(), a)
    b = fx.clone().requires_grad_()
    (want,) = torch.autograd.grad(lpips_layer_reference(b, fy, w).sum(), b)
    torch.testing.assert_close(g, want)


# ------------------------------------------------------------------------------------------ multi-layer


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpu)])
def test_multi_layer_sum_and_per_layer(backend):
    shapes = [(3, 4, 8, 8), (3, 16, 4, 4), (3, 7, 1, 1)]
    fx = [torch.randn(s) for s in shapes]
    fy = [torch.randn(s) for s in shapes]
    ws = [torch.rand(1, s[1], 1, 1) for s in shapes[:2]] + [None]
    per = torch.stack([lpips_layer_reference(a, b, w) for a, b, w in zip(fx, fy, ws)], dim=1)
    got_per = lpips_distance(fx, fy, ws, backend=backend, per_layer=True)
    assert got_per.shape == (3, 3)
    torch.testing.assert_close(got_per, per, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(lpips_distance(fx, fy, ws, backend=backend), per.sum(1), rtol=2e-5, atol=2e-5)
    maps = lpips_distance(tuple(fx), tuple(fy), ws, spatial=True, backend=backend)
    assert [tuple(m.shape) for m in maps] == [(3, 1, 8, 8), (3, 1, 4, 4), (3, 1, 1, 1)]


# ----------------------------------------------------------------------------------------------- grads


@needs_cpu
@pytest.mark.parametrize("normalize", ["lpips", "stable"])
@pytest.mark.parametrize("spatial", [False, True])
def test_gradcheck_custom_op_cpu(normalize, spatial):
    torch.manual_seed(0)
    fx = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    fy = torch.randn(2, 3, 3, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (torch.rand(3, dtype=torch.float64) + 0.1).requires_grad_()

    def f(a, b, ww):
        return lpips_distance(a, b, ww, spatial=spatial, normalize=normalize, backend="cpu", eps=1e-6)

    assert torch.autograd.gradcheck(f, (fx, fy, w))


@pytest.mark.parametrize("normalize", ["lpips", "stable"])
def test_gradcheck_torch_path(normalize):
    fx = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    fy = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(1, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, ww: lpips_distance(a, b, ww, normalize=normalize, backend="torch"), (fx, fy, w)
    )


@pytest.mark.parametrize("normalize", ["lpips", "stable"])
def test_analytic_backward_matches_autograd_of_reference(normalize):
    fx = torch.randn(2, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    fy = torch.randn(2, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.rand(6, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, dtype=torch.float64)
    out = lpips_layer_reference(fx, fy, w, 1e-10, normalize)
    want = torch.autograd.grad(out, (fx, fy, w), grad)
    got = lpips_layer_backward(
        fx.detach(), fy.detach(), w.detach(), 1e-10, 0 if normalize == "lpips" else 1, False, grad
    )
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h)


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_grads_low_precision_match_reference(dtype):
    fx = make_features((2, 5, 4, 3), dtype, "channels_last", 5).requires_grad_()
    fy = make_features((2, 5, 4, 3), dtype, "contiguous", 6).requires_grad_()
    w = torch.rand(5, requires_grad=True)
    got = torch.autograd.grad(lpips_distance(fx, fy, w, backend="cpu").sum(), (fx, fy, w))
    want = torch.autograd.grad(lpips_layer_reference(fx, fy, w).sum(), (fx, fy, w))
    for g, h in zip(got, want):
        assert g.dtype == h.dtype
        torch.testing.assert_close(g.float(), h.float(), rtol=1e-2, atol=1e-3)


@needs_cpu
def test_gradient_at_zero_vectors():
    """'stable' has finite gradients everywhere (any backend); the custom op returns the limit g_u/eps for 'lpips'."""
    fx = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    fx[0, :, 0, 0] = 0
    fy = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    for backend in ("torch", "cpu"):
        a = fx.clone().requires_grad_()
        (g,) = torch.autograd.grad(lpips_distance(a, fy, normalize="stable", eps=1e-3, backend=backend).sum(), (a,))
        assert torch.isfinite(g).all()
    a = fx.clone().requires_grad_()
    eps = 1e-3
    (g,) = torch.autograd.grad(lpips_distance(a, fy, eps=eps, backend="cpu").sum(), (a,))
    v = fy[0, :, 0, 0] / (fy[0, :, 0, 0].norm() + eps)
    torch.testing.assert_close(g[0, :, 0, 0], 2 * (0 - v) / 4 / eps)  # d/du = 2 (u - v) / (H W), du/dx = I / eps
    a = fx.clone().requires_grad_()
    (g,) = torch.autograd.grad(lpips_distance(a, fy, eps=eps, backend="torch").sum(), (a,))
    assert torch.isnan(g[0, :, 0, 0]).all()  # plain autograd of lpips' formula: NaN (documented)


@needs_cpu
def test_torch_compile_cpu_op():
    fx, fy, w = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5), torch.rand(8)

    def f(a, b):
        return lpips_distance(a, b, w, backend="cpu", check_finite=False) * 2.0

    compiled = torch.compile(f, backend="eager")
    torch.testing.assert_close(compiled(fx, fy), 2.0 * lpips_layer_reference(fx, fy, w))
    ex = torch.library.opcheck(
        torch.ops.percept_fast.lpips_layer.default,
        (fx, fy, w, 1e-10, 0, False, "cpu"),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )
    assert all(v == "SUCCESS" for v in ex.values()), ex


# ---------------------------------------------------------------------------------------------- matrix


@pytest.mark.parametrize("normalize", ["lpips", "stable"])
def test_distance_matrix_matches_pairwise(normalize):
    N, M = 4, 3
    fx, fy = torch.randn(N, 6, 3, 5, dtype=torch.float64), torch.randn(M, 6, 3, 5, dtype=torch.float64)
    fy[1] = fx[2]  # an exact pair -> 0
    w = torch.rand(6, dtype=torch.float64)
    a = fx[:, None].expand(N, M, 6, 3, 5).reshape(N * M, 6, 3, 5)
    b = fy[None].expand(N, M, 6, 3, 5).reshape(N * M, 6, 3, 5)
    want = lpips_layer_reference(a, b, w, 1e-10, normalize).reshape(N, M)
    got = lpips_distance_matrix(fx, fy, w, normalize=normalize)
    torch.testing.assert_close(got, want)
    assert got.min() >= 0 and abs(float(got[2, 1])) < 1e-12
    # multi-layer: sum of per-layer matrices; float32 input
    fx2, fy2 = torch.randn(N, 3, 2, 2), torch.randn(M, 3, 2, 2)
    got2 = lpips_distance_matrix([fx.float(), fx2], [fy.float(), fy2], [w.float(), None], normalize=normalize)
    want2 = want.float() + lpips_distance_matrix(fx2, fy2, None, normalize=normalize)
    torch.testing.assert_close(got2, want2, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(fx=torch.randn(2, 3, 4)), ValueError, "fx must have 4 dimensions"),
        (dict(fy=torch.randn(2, 3, 4, 5)), ValueError, "same shape"),
        (dict(fy=torch.randn(2, 3, 4, 4, dtype=torch.float64)), TypeError, "same dtype"),
        (dict(fx=torch.ones(2, 3, 4, 4, dtype=torch.int32)), TypeError, "fx must be float32"),
        (dict(fx=torch.full((2, 3, 4, 4), float("nan"))), ValueError, "fx contains NaN or Inf"),
        (dict(fy=torch.full((2, 3, 4, 4), float("inf"))), ValueError, "fy contains NaN or Inf"),
        (dict(fx=torch.randn(0, 3, 4, 4), fy=torch.randn(0, 3, 4, 4)), ValueError, "fx is empty"),
        (dict(fx=[1.0]), TypeError, "both be tensors or both be lists"),
        (dict(fx=None), TypeError, "both be tensors or both be lists"),
        (dict(weight=torch.rand(4)), ValueError, r"weight must have shape \[3\]"),
        (dict(weight=-torch.rand(3)), ValueError, "non-negative"),
        (dict(weight=torch.tensor([1.0, float("nan"), 1.0])), ValueError, "weight contains NaN"),
        (dict(backend="gpu"), ValueError, "backend must be one of"),
        (dict(backend="cuda"), ValueError, "backend='cuda' needs CUDA tensors"),
        (dict(normalize="l2"), ValueError, "normalize must be one of"),
        (dict(eps=0.0), ValueError, "eps must be finite and > 0"),
        (dict(eps="1"), TypeError, "eps must be a float"),
        (dict(spatial=1), TypeError, "spatial must be a bool"),
        (dict(per_layer=True), ValueError, "per_layer=True needs lists"),
        (dict(per_layer=1), TypeError, "per_layer must be a bool"),
        (dict(check_finite=None), TypeError, "check_finite must be a bool"),
    ],
)
def test_bad_input_errors(kwargs, exc, match):
    args = dict(fx=torch.randn(2, 3, 4, 4), fy=torch.randn(2, 3, 4, 4))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        lpips_distance(**args)


def test_bad_list_inputs():
    a = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    with pytest.raises(ValueError, match="equal length"):
        lpips_distance(a, a[:1])
    with pytest.raises(ValueError, match=r"fx\[1\] and fy\[1\] must have the same shape"):
        lpips_distance(a, [a[0], torch.randn(2, 5, 3, 2)])
    with pytest.raises(ValueError, match=r"weight\[1\] must have shape"):
        lpips_distance(a, a, [None, torch.rand(3)])
    with pytest.raises(TypeError, match="list of per-layer weights"):
        lpips_distance(a, a, torch.rand(3))
    with pytest.raises(ValueError, match="same batch size"):
        lpips_distance(a, [a[0], a[1]], None) if False else lpips_distance([a[0], a[1][:1]], [a[0], a[1][:1]])
    with pytest.raises(ValueError, match=r"must agree in \[C, H, W\]"):
        lpips_distance_matrix(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 5))


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        lpips_distance(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2), backend="triton")


def test_auto_backend_on_cpu():
    assert cm.resolve_backend("auto", torch.device("cpu")) == ("cpu" if HAVE_CPU else "torch")


# ---------------------------------------------------------------------------------------------- triton


TRITON_CASES = [
    ((2, 3, 5, 7), torch.float32, "channels_last", True, False, "lpips"),
    ((1, 1, 1, 1), torch.float16, "contiguous", False, True, "stable"),
    ((2, 20, 3, 4), torch.bfloat16, "sliced_c", True, True, "lpips"),
    ((1, 5, 2, 3), torch.float64, "transposed_hw", True, False, "stable"),
]


def _triton_cases() -> None:
    """Runs in a subprocess with TRITON_INTERPRET=1 set before triton is imported (the interpreter needs that)."""
    assert cm.triton_interpret() and "triton" in available_backends("cpu", "lpips_forward")
    interpret_floats_as_fp32()  # eps reaches the kernel as a compiled launch passes it
    for shape, dtype, layout, weighted, spatial, normalize in TRITON_CASES:
        fx, fy = make_features(shape, dtype, layout, 7, zero_frac=0.2), make_features(shape, dtype, "contiguous", 8)
        w = torch.rand(shape[1]) if weighted else None
        got = lpips_distance(fx, fy, w, spatial=spatial, normalize=normalize, backend="triton")
        torch.testing.assert_close(got, lpips_layer_reference(fx, fy, w, 1e-10, normalize, spatial), **tol(dtype))
        if not spatial:
            a = fx.detach().clone().requires_grad_()
            (g,) = torch.autograd.grad(lpips_distance(a, fy, w, normalize=normalize, backend="triton").sum(), (a,))
            mode = 0 if normalize == "lpips" else 1
            h = lpips_layer_backward(fx, fy, w, 1e-10, mode, False, torch.ones(shape[0]))[0]
            torch.testing.assert_close(g.float(), h.float(), rtol=1e-2, atol=1e-3)
    assert torch.equal(lpips_distance(fx, fx, backend="triton"), torch.zeros(fx.shape[0], dtype=torch.float64))
    bad = make_features((3, 4, 2, 5), torch.float32, "contiguous", 9)
    bad[1, 2, 1, 3] = float("nan")  # unchecked NaN: that sample is NaN, as the reference's, not clamped to 0
    got = lpips_distance(
        bad, make_features((3, 4, 2, 5), torch.float32, "contiguous", 10), backend="triton", check_finite=False
    )
    assert torch.isnan(got[1]) and torch.isfinite(got[[0, 2]]).all()
    huge = make_features((2, 6, 3, 4), torch.float32, "contiguous", 1) * 1e30  # squares overflow: norm inf, vector 0
    small = make_features((2, 6, 3, 4), torch.float32, "contiguous", 2)
    torch.testing.assert_close(
        lpips_distance(huge, small, backend="triton"),
        lpips_distance(huge, small, backend="torch"),
        rtol=1e-5,
        atol=1e-6,
    )
    # eps travels as two fp32 halves (split_f64): one below float32's normal range is refused, naming eps
    with pytest.raises(ValueError, match="eps must be at least"):
        lpips_distance(small, huge, backend="triton", eps=1e-40)
    print("TRITON_CASES_OK")


def test_triton_interpreter_matches_reference():
    pytest.importorskip("triton")
    env = interpreter_env()
    code = f"import runpy; runpy.run_path({__file__!r})['_triton_cases']()"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "TRITON_CASES_OK" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]


# ------------------------------------------------------------------------------------------------- gpu


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_c", "transposed_hw"])
def test_gpu_backends_match_reference(backend, dtype, layout):
    if backend not in available_backends("cuda", "lpips_forward"):
        pytest.skip(f"{backend} not available")
    for i, shape in enumerate([(1, 1, 1, 1), (3, 7, 5, 9), (4, 64, 55, 55), (2, 512, 7, 7), (2, 3, 1, 300)]):
        fx = make_features(shape, dtype, layout, 10 + i, "cuda", zero_frac=0.1)
        fy = make_features(shape, dtype, "contiguous", 20 + i, "cuda")
        w = torch.rand(shape[1], device="cuda")
        for ww in (None, w):
            for spatial in (False, True):
                for normalize in ("lpips", "stable"):
                    got = lpips_distance(fx, fy, ww, spatial=spatial, normalize=normalize, backend=backend)
                    want = lpips_layer_reference(fx, fy, ww, 1e-10, normalize, spatial)
                    t = tol(dtype) if shape[1] < 100 else dict(rtol=1e-4, atol=1e-4)
                    torch.testing.assert_close(got, want, **t)
        assert torch.equal(lpips_distance(fx, fx, w, backend=backend), torch.zeros(shape[0], device="cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_gradients_and_gradcheck(backend):
    if backend not in available_backends("cuda", "lpips_forward"):
        pytest.skip(f"{backend} not available")
    fx = torch.randn(2, 3, 3, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    fy = torch.randn(2, 3, 3, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    w = (torch.rand(3, dtype=torch.float64, device="cuda") + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, ww: lpips_distance(a, b, ww, backend=backend, eps=1e-6), (fx, fy, w))


@given(st.floats(min_value=1.1754943508222875e-38, max_value=3.0e38, allow_nan=False))
@settings(max_examples=300, deadline=None)
def test_split_f64_rebuilds_the_value(value):
    # the Triton kernels' eps: two fp32-exact halves whose fp64 sum is the value to ~2**-48 (fp32 alone: 2**-24)
    import struct

    hi, lo = cm.split_f64(value)
    for half in (hi, lo):
        assert struct.unpack("f", struct.pack("f", half))[0] == half
    # below ~2e-31 the low half is an fp32 subnormal and keeps fewer bits: never worse than fp32 alone there
    assert abs((hi + lo) - value) <= (2.0**-47 if value >= 2e-31 else 2.0**-24) * value
    assert cm.split_f64(1e39) == (1e39, 0.0)
    with pytest.raises(ValueError, match="eps must be at least"):
        cm.split_f64(1e-39)
