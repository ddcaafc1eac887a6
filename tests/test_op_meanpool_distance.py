"""meanpool_distance / meanpool_distance_matrix: every backend against the plain-PyTorch reference."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers.tensors import LAYOUTS, interpreter_env, make_features
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from percept_fast.ops import _common as cm
from percept_fast.ops import available_backends, meanpool_distance, meanpool_distance_matrix
from percept_fast.ops.meanpool_distance import meanpool_backward, meanpool_reference

HAVE_CPU = "cpu" in available_backends("cpu", "meanpool_forward")
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="percept_fast._C not built")
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def tol(dtype):
    return dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=5e-5, atol=2e-6)


def test_reference_formula_float64():
    fx, fy = torch.randn(3, 7, 4, 5, dtype=torch.float64), torch.randn(3, 7, 4, 5, dtype=torch.float64)
    m, k = fx.mean((2, 3)), fy.mean((2, 3))
    u = m / (m.norm(dim=1, keepdim=True) + 1e-10)
    v = k / (k.norm(dim=1, keepdim=True) + 1e-10)
    torch.testing.assert_close(meanpool_reference(fx, fy), ((u - v) ** 2).sum(1) / 7)


@needs_cpu
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 3),
    C=st.integers(1, 24),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    dtype=st.sampled_from(DTYPES),
    layout_x=st.sampled_from(LAYOUTS),
    layout_y=st.sampled_from(LAYOUTS),
    normalize=st.sampled_from(["lpips", "stable"]),
    offset=st.sampled_from([0.0, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_cpu_matches_reference(B, C, H, W, dtype, layout_x, layout_y, normalize, offset, seed):
    fx = make_features((B, C, H, W), dtype, layout_x, seed, offset=offset)
    fy = make_features((B, C, H, W), dtype, layout_y, seed + 1, offset=offset)
    got = meanpool_distance(fx, fy, normalize=normalize, backend="cpu")
    assert got.dtype == cm.out_dtype(dtype) and got.shape == (B,)
    torch.testing.assert_close(got, meanpool_reference(fx, fy, 1e-10, normalize), **tol(dtype))


@needs_cpu
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 64, 55, 55), (3, 512, 7, 7), (1, 3, 1, 2000)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_larger_shapes(shape, layout):
    fx, fy = (
        make_features(shape, torch.float32, layout, 1, offset=0.3),
        make_features(shape, torch.float32, layout, 2, offset=0.3),
    )
    want = meanpool_reference(fx.double(), fy.double()).float()  # float64 reference: checks the fp32 accumulation
    torch.testing.assert_close(meanpool_distance(fx, fy, backend="cpu"), want, rtol=1e-4, atol=1e-7)


@needs_cpu
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (3, 70, 6, 11), (1, 4, 37, 41)])  # lane tails, >64 planes, >1 block
@pytest.mark.parametrize("layouts", [("contiguous", "contiguous"), ("contiguous", "channels_last")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_cpu_plane_pair_path(shape, layouts, dtype):
    """Both maps with unit-stride planes go through one fused pass (plane_sums_pair); a mixed pair
    takes the per-map path: both equal the float64 reference."""
    fx, fy = (
        make_features(shape, dtype, layouts[0], 4, offset=0.2),
        make_features(shape, dtype, layouts[1], 5, offset=0.2),
    )
    want = meanpool_reference(fx.double(), fy.double())
    got = meanpool_distance(fx, fy, backend="cpu")
    assert got.dtype == cm.out_dtype(dtype)
    t = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got.double(), want, **t)
    torch.testing.assert_close(meanpool_distance(fy, fx, backend="cpu"), got)  # symmetric


@needs_cpu
@pytest.mark.parametrize(
    "hw", [(1, 1), (1, 2), (1, 3), (2, 2), (3, 3), (1, 7), (3, 5), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8)]
)
@pytest.mark.parametrize("C", [1, 5, 130])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_small_plane_sums(hw, C, dtype):
    """Adjacent planes of P <= 16 (and 5x5..8x8) pixels are summed by compile-time-P kernels, >64 planes included."""
    shape = (3, C, *hw)
    fx, fy = (
        make_features(shape, dtype, "contiguous", 7, offset=0.2),
        make_features(shape, dtype, "contiguous", 8, offset=0.2),
    )
    want = meanpool_reference(fx.double(), fy.double())
    got = meanpool_distance(fx, fy, backend="cpu")
    t = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got.double(), want, **t)
    assert torch.equal(meanpool_distance(fx, fx.clone(), backend="cpu"), torch.zeros(3, dtype=cm.out_dtype(dtype)))


@needs_cpu
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 9),
    C=st.integers(1, 40),
    P=st.one_of(st.integers(8, 140), st.integers(140, 530)),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    layouts=st.sampled_from([("contiguous", "contiguous"), ("contiguous", "sliced_c"), ("sliced_c", "sliced_c")]),
    seed=st.integers(0, 2**16),
)
def test_cpu_row_segmented_planes(B, C, P, dtype, layouts, seed):
    """Planes of 8..511 pixels are summed 8 at a time as rows of 8 (segmented_sums8), adjacent (channel stride P) or
    not (a channel slice): both equal the float64 reference, and a map against its copy in the other layout gives
    exactly 0 (the additions run in one order whatever the plane stride)."""
    shape = (B, C, 1, P)
    fx = make_features(shape, dtype, layouts[0], seed, offset=0.3)
    fy = make_features(shape, dtype, layouts[1], seed + 1, offset=0.3)
    want = meanpool_reference(fx.double(), fy.double())
    torch.testing.assert_close(meanpool_distance(fx, fy, backend="cpu").double(), want, rtol=1e-4, atol=1e-7)
    other = make_features(shape, dtype, layouts[1], 0)
    other.copy_(fx)
    assert other.stride() != fx.stride() or layouts[0] == layouts[1]
    zero = torch.zeros(B, dtype=cm.out_dtype(dtype))
    assert torch.equal(meanpool_distance(fx, other, backend="cpu"), zero)


@needs_cpu
@pytest.mark.parametrize("hw", [(3, 3), (4, 4), (7, 7)])
@pytest.mark.parametrize("C", [1, 7, 8, 9, 64, 203])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_fixed_plane_sums(hw, C, dtype):
    """3x3, 4x4 and 7x7 planes with both maps adjacent are summed 8 planes at a time with the rows unrolled (fixed_plane_sums),
    the last C % 8 one by one: equal to the float64 reference in both task layouts (per sample, B >= 4 per thread;
    blocks of planes, B small), 0 against a copy, and 0 against a copy in a channel-sliced layout (the other path,
    taken by both maps of that call)."""
    for B, seed in ((2, 1), (17, 2)):
        shape = (B, C, *hw)
        fx = make_features(shape, dtype, "contiguous", seed, offset=0.3)
        fy = make_features(shape, dtype, "contiguous", seed + 10, offset=0.3)
        want = meanpool_reference(fx.double(), fy.double())
        got = meanpool_distance(fx, fy, backend="cpu").double()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
        zero = torch.zeros(B, dtype=cm.out_dtype(dtype))
        assert torch.equal(meanpool_distance(fx, fx.clone(), backend="cpu"), zero)
        other = make_features(shape, dtype, "sliced_c", 0)
        other.copy_(fx)
        assert torch.equal(meanpool_distance(fx, other, backend="cpu"), zero)


@needs_cpu
def test_cpu_threaded_small_planes():
    fx, fy = torch.randn(64, 2048, 2, 2) + 0.1, torch.randn(64, 2048, 2, 2) + 0.1
    want = meanpool_reference(fx.double(), fy.double()).float()
    torch.testing.assert_close(meanpool_distance(fx, fy, backend="cpu"), want, rtol=1e-4, atol=1e-7)


@needs_cpu
@pytest.mark.parametrize("chw", [(5, 2, 2), (70, 3, 3), (9, 4, 4), (3, 7, 7), (33, 1, 40)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_per_sample_tasks(chw, dtype):
    """With >= 4 samples per thread each task sums one sample's planes of both maps and finalises it; fewer samples
    split into plane blocks: both equal the float64 reference (and each other)."""
    B = 4 * (os.cpu_count() or 1)
    fx, fy = (
        make_features((B, *chw), dtype, "contiguous", 9, offset=0.2),
        make_features((B, *chw), dtype, "contiguous", 10, offset=0.2),
    )
    got = meanpool_distance(fx, fy, backend="cpu")
    t = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got.double(), meanpool_reference(fx.double(), fy.double()), **t)
    torch.testing.assert_close(meanpool_distance(fx[:1], fy[:1], backend="cpu"), got[:1])


@needs_cpu
@pytest.mark.parametrize("shape", [(2, 5, 2, 2), (2, 5, 6, 7), (3, 70, 1, 1)])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_cpu_fused_finite_check(shape, layout, dtype, bad):
    """The kernel flags NaN/Inf from the sample's distance (NaN), then the sums and planes: same ValueError."""
    B, C, H, W = shape
    for which in ("fx", "fy"):
        t = {"fx": make_features(shape, dtype, layout, 1), "fy": make_features(shape, dtype, layout, 2)}
        t[which][B - 1, C - 1, H - 1, W // 2] = bad
        with pytest.raises(ValueError, match=f"{which} contains NaN or Inf"):
            meanpool_distance(t["fx"], t["fy"], backend="cpu")
        got = meanpool_distance(t["fx"], t["fy"], backend="cpu", check_finite=False)  # not checked: NaN through
        assert torch.isfinite(got[: B - 1]).all() and torch.isnan(got[B - 1])
        if dtype != torch.float16:  # requires_grad: through the custom op, same check
            with pytest.raises(ValueError, match=f"{which} contains NaN or Inf"):
                meanpool_distance(t["fx"].clone().requires_grad_(), t["fy"], backend="cpu")


@needs_cpu
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_w"])
def test_cpu_finite_overflow_is_not_an_error(layout):
    """Finite float32 values whose sum overflows: the plane is re-read, finds no NaN/Inf, no error (NaN distance)."""
    fx = make_features((2, 3, 4, 4), torch.float32, layout, 1).abs() + 3e38
    fy = make_features((2, 3, 4, 4), torch.float32, layout, 2)
    assert meanpool_distance(fx, fy, backend="cpu").shape == (2,)


@needs_cpu
def test_direct_call_matches_custom_op():
    fx, fy = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    direct = meanpool_distance(fx, fy, backend="cpu")
    assert torch.equal(direct, torch.ops.percept_fast.meanpool_distance.default(fx, fy, 1e-10, 0, "cpu", True))
    a = fx.clone().requires_grad_()
    out = meanpool_distance(a, fy, backend="cpu")
    assert out.grad_fn is not None and torch.equal(out.detach(), direct)


@needs_cpu
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_c"])
def test_identical_and_zero_inputs(layout):
    fx = make_features((2, 9, 4, 4), torch.float32, layout, 3)
    assert torch.equal(meanpool_distance(fx, fx.clone(), backend="cpu"), torch.zeros(2))
    z = torch.zeros(2, 9, 4, 4)
    for normalize in ("lpips", "stable"):
        got = meanpool_distance(z, fx, normalize=normalize, backend="cpu")
        torch.testing.assert_close(got, meanpool_reference(z, fx, 1e-10, normalize))
        torch.testing.assert_close(got, torch.full((2,), 1.0 / 9), rtol=1e-5, atol=1e-7)


@needs_cpu
@pytest.mark.parametrize("normalize", ["lpips", "stable"])
def test_gradcheck_custom_op_cpu(normalize):
    fx = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    fy = torch.randn(2, 4, 3, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: meanpool_distance(a, b, normalize=normalize, eps=1e-6, backend="cpu"), (fx, fy)
    )


@pytest.mark.parametrize("normalize", ["lpips", "stable"])
def test_gradcheck_torch_path_and_analytic_backward(normalize):
    fx = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    fy = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: meanpool_distance(a, b, normalize=normalize, backend="torch"), (fx, fy)
    )
    g = torch.randn(2, dtype=torch.float64)
    want = torch.autograd.grad(meanpool_reference(fx, fy, 1e-10, normalize), (fx, fy), g)
    got = meanpool_backward(fx.detach(), fy.detach(), 1e-10, 0 if normalize == "lpips" else 1, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_grads_low_precision(dtype):
    fx = make_features((2, 6, 3, 3), dtype, "channels_last", 4).requires_grad_()
    fy = make_features((2, 6, 3, 3), dtype, "contiguous", 5).requires_grad_()
    got = torch.autograd.grad(meanpool_distance(fx, fy, backend="cpu").sum(), (fx, fy))
    want = torch.autograd.grad(meanpool_reference(fx, fy).sum(), (fx, fy))
    for a, b in zip(got, want):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-4)


@needs_cpu
def test_stable_gradient_finite_at_zero_mean():
    fx = torch.zeros(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    fy = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    for backend in ("torch", "cpu"):
        (g,) = torch.autograd.grad(
            meanpool_distance(fx, fy, normalize="stable", eps=1e-3, backend=backend).sum(), (fx,)
        )
        assert torch.isfinite(g).all()
    (g,) = torch.autograd.grad(meanpool_distance(fx, fy, eps=1e-3, backend="cpu").sum(), (fx,))
    k = fy.mean((2, 3))[0]
    v = k / (k.norm() + 1e-3)
    torch.testing.assert_close(g[0, :, 0, 0], 2 * (0 - v) / 3 / 1e-3 / 4)


@needs_cpu
def test_torch_compile_and_opcheck():
    fx, fy = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    compiled = torch.compile(
        lambda a, b: meanpool_distance(a, b, backend="cpu", check_finite=False) + 1.0, backend="eager"
    )
    torch.testing.assert_close(compiled(fx, fy), meanpool_reference(fx, fy) + 1.0)
    res = torch.library.opcheck(
        torch.ops.percept_fast.meanpool_distance.default,
        (fx, fy, 1e-10, 0, "cpu"),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )
    assert all(v == "SUCCESS" for v in res.values()), res


@pytest.mark.parametrize("normalize", ["lpips", "stable"])
def test_distance_matrix_matches_pairwise(normalize):
    N, M = 5, 3
    fx = torch.randn(N, 6, 3, 4, dtype=torch.float64)
    fy = torch.randn(M, 6, 2, 5, dtype=torch.float64)  # spatial sizes may differ: only the means matter
    want = torch.stack(
        [
            torch.cat([meanpool_reference(fx[i : i + 1], fy[j : j + 1], 1e-10, normalize) for j in range(M)])
            for i in range(N)
        ]
    )
    torch.testing.assert_close(meanpool_distance_matrix(fx, fy, normalize=normalize), want)
    d = meanpool_distance_matrix(fx, fx)
    assert d.min() >= 0 and torch.diagonal(d).abs().max() < 1e-12


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(fx=torch.randn(2, 3)), ValueError, "fx must have 4 dimensions"),
        (dict(fy=torch.randn(2, 3, 4, 5)), ValueError, "same shape"),
        (dict(fy=torch.randn(2, 3, 4, 4, dtype=torch.float16)), TypeError, "same dtype"),
        (dict(fx=torch.ones(2, 3, 4, 4, dtype=torch.int64)), TypeError, "fx must be float32"),
        (dict(fy=torch.full((2, 3, 4, 4), float("nan"))), ValueError, "fy contains NaN or Inf"),
        (dict(fx=torch.randn(2, 0, 4, 4), fy=torch.randn(2, 0, 4, 4)), ValueError, "fx is empty"),
        (dict(fx=[torch.randn(2, 3, 4, 4)]), TypeError, "both be tensors or both be lists"),
        (dict(fx=[torch.randn(2, 3, 4, 4)], fy=[]), ValueError, "non-empty lists of equal length"),
        (dict(per_layer=True), ValueError, "per_layer=True needs lists"),
        (dict(check_finite=1), TypeError, "check_finite must be a bool"),
        (dict(backend="numpy"), ValueError, "backend must be one of"),
        (dict(backend="cuda"), ValueError, "backend='cuda' needs CUDA tensors"),
        (dict(normalize=None), ValueError, "normalize must be one of"),
        (dict(eps=-1.0), ValueError, "eps must be finite and > 0"),
    ],
)
def test_bad_input_errors(kwargs, exc, match):
    args = dict(fx=torch.randn(2, 3, 4, 4), fy=torch.randn(2, 3, 4, 4))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        meanpool_distance(**args)


def test_matrix_bad_input():
    with pytest.raises(ValueError, match="same channel count"):
        meanpool_distance_matrix(torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 4))


def _triton_cases() -> None:
    """Runs in a subprocess with TRITON_INTERPRET=1 set before triton is imported."""
    assert cm.triton_interpret() and "triton" in available_backends("cpu", "meanpool_forward")
    for shape, dtype, layout in [
        ((2, 3, 5, 7), torch.float32, "channels_last"),
        ((1, 1, 1, 1), torch.float16, "contiguous"),
        ((2, 40, 3, 4), torch.bfloat16, "sliced_c"),
        ((1, 5, 2, 3), torch.float64, "transposed_hw"),
    ]:
        fx, fy = (
            make_features(shape, dtype, layout, 7, offset=0.2),
            make_features(shape, dtype, "contiguous", 8, offset=0.2),
        )
        for normalize in ("lpips", "stable"):
            got = meanpool_distance(fx, fy, normalize=normalize, backend="triton")
            torch.testing.assert_close(got, meanpool_reference(fx, fy, 1e-10, normalize), **tol(dtype))
        a = fx.detach().clone().requires_grad_()
        (g,) = torch.autograd.grad(meanpool_distance(a, fy, backend="triton").sum(), (a,))
        h = meanpool_backward(fx, fy, 1e-10, 0, torch.ones(shape[0]))[0]
        torch.testing.assert_close(g.float(), h.float(), rtol=1e-2, atol=1e-4)
    print("TRITON_CASES_OK")


def test_triton_interpreter_matches_reference():
    pytest.importorskip("triton")
    env = interpreter_env()
    code = f"import runpy; runpy.run_path({__file__!r})['_triton_cases']()"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "TRITON_CASES_OK" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_c", "transposed_hw"])
def test_gpu_backends_match_reference(backend, dtype, layout):
    if backend not in available_backends("cuda", "meanpool_forward"):
        pytest.skip(f"{backend} not available")
    for i, shape in enumerate([(1, 1, 1, 1), (3, 7, 5, 9), (4, 64, 55, 55), (2, 2048, 7, 7), (2, 3, 1, 3000)]):
        fx = make_features(shape, dtype, layout, 10 + i, "cuda", offset=0.3)
        fy = make_features(shape, dtype, "contiguous", 20 + i, "cuda", offset=0.3)
        for normalize in ("lpips", "stable"):
            got = meanpool_distance(fx, fy, normalize=normalize, backend=backend)
            want = meanpool_reference(fx.double(), fy.double(), 1e-10, normalize).to(got.dtype)
            torch.testing.assert_close(got, want, rtol=1e-4 if dtype != torch.float64 else 1e-9, atol=1e-7)
        assert torch.equal(
            meanpool_distance(fx, fx, backend=backend), torch.zeros(shape[0], device="cuda", dtype=got.dtype)
        )
    fx = torch.randn(2, 4, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    fy = torch.randn(2, 4, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: meanpool_distance(a, b, eps=1e-6, backend=backend), (fx, fy))
