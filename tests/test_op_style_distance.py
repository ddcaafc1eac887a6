"""style_distance / style_distance_matrix: every backend against the plain-PyTorch reference."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch
from helpers.tensors import LAYOUTS, interpreter_env, make_features
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from percept_fast.ops import available_backends
from percept_fast.ops.style_distance import (
    choose_method,
    gram_normalizer,
    style_distance,
    style_distance_matrix,
    style_distance_matrix_reference,
    style_distance_reference,
)

sdmod = importlib.import_module("percept_fast.ops.style_distance")  # the module (the package exports the function)
HAVE_CPU = "cpu" in available_backends("cpu")
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="percept_fast._C not built")


def exact(x, y, normalize="chw"):
    """float64 value of the definition on the (already rounded) inputs: both Grams explicitly, per sample."""
    out = []
    for a, b in zip(x.double(), y.double()):
        C, H, W = a.shape
        n = {"chw": C * H * W, "hw": H * W, "none": 1}[normalize]
        A, Bm = a.reshape(C, -1), b.reshape(C, -1)
        out.append(((A @ A.T / n - Bm @ Bm.T / n) ** 2).sum() / C**2)
    return torch.stack(out)


def close(got, want, dtype, rtol=None, atol=1e-30):
    want = want.to(got.dtype)
    r = rtol if rtol is not None else (1e-10 if dtype == torch.float64 else 2e-5)
    torch.testing.assert_close(got, want, rtol=r, atol=atol)


def cancellation_atol(x, y, normalize, want):
    """fp32 accumulation error of G0 - G1 is ~eps32 |G|, so the error of d = |G0-G1|^2 / (C n)^2 scales with
    sqrt(d * scale), scale = (|G0|^2 + |G1|^2) / (C n)^2 = d(x, 0) + d(y, 0): matters when x and y are close."""
    zeros = torch.zeros_like(x)
    scale = exact(x, zeros, normalize) + exact(y, zeros, normalize)
    return float((2e-5 * torch.sqrt(want.abs() * scale)).max())


# ------------------------------------------------------------------------------------------ reference


@pytest.mark.parametrize("normalize", ["chw", "hw", "none"])
def test_reference_is_the_definition(normalize):
    x, y = make_features((3, 5, 4, 6), torch.float64, seed=1), make_features((3, 5, 4, 6), torch.float64, seed=2)
    close(style_distance_reference(x, y, normalize), exact(x, y, normalize), torch.float64)
    # normalisations differ by the documented factors n^2
    base = style_distance_reference(x, y, "none")
    n = gram_normalizer(normalize, 5, 4, 6)
    close(style_distance_reference(x, y, normalize) * n * n, base, torch.float64)


def test_method_choice_and_normalizer():
    assert choose_method(C=512, P=49) == "kernel" and choose_method(C=64, P=3136) == "diff"
    assert choose_method(C=100, P=50) == "diff" and choose_method(C=101, P=50) == "kernel"
    assert gram_normalizer("chw", 2, 3, 4) == 24.0 and gram_normalizer("hw", 2, 3, 4) == 12.0
    assert gram_normalizer("none", 2, 3, 4) == 1.0


# ------------------------------------------------------------------------------------------- cpu backend


@needs_cpu
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 3),
    C=st.integers(1, 150),
    H=st.integers(1, 12),
    W=st.integers(1, 12),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    layouts=st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS)),
    method=st.sampled_from(["auto", "diff", "kernel"]),
    normalize=st.sampled_from(["chw", "hw", "none"]),
    seed=st.integers(0, 10_000),
)
def test_cpu_matches_reference(B, C, H, W, dtype, layouts, method, normalize, seed):
    shape = (B, C, H, W)
    x, y = make_features(shape, dtype, layouts[0], seed), make_features(shape, dtype, layouts[1], seed + 1)
    got = style_distance(x, y, normalize=normalize, method=method, backend="cpu")
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and got.shape == (B,)
    want = exact(x, y, normalize)
    atol = 1e-30 if dtype == torch.float64 else cancellation_atol(x, y, normalize, want)
    close(got, want, dtype, atol=atol)
    close(got, style_distance(x, y, normalize=normalize, backend="torch"), dtype, atol=2 * atol)


def _cpu_has_avx512f() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


@needs_cpu
@pytest.mark.skipif(not _cpu_has_avx512f(), reason="the AVX-512 kernels run only on a CPU with AVX-512F")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 3),
    C=st.integers(1, 150),
    H=st.integers(1, 24),
    W=st.integers(1, 24),
    layouts=st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS)),
    method=st.sampled_from(["diff", "kernel"]),
    same=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_the_avx512_kernels_give_the_avx2_kernels_bits(B, C, H, W, layouts, method, same, seed):
    """fp32 products on an AVX-512 CPU take the 8 x 32 kernel on pairs of panels; each element is the same chain of
    multiply-adds as in the 4 x 16 kernel, so the results are bitwise those of PERCEPT_FAST_CPU_ISA=avx2 (and x == y
    is still exactly 0). Shapes straddle the 16-row panels, odd panel counts and the 64-row tiles."""
    import os

    shape = (B, C, H, W)
    x = make_features(shape, torch.float32, layouts[0], seed)
    y = x if same else make_features(shape, torch.float32, layouts[1], seed + 1)
    before = os.environ.pop("PERCEPT_FAST_CPU_ISA", None)
    try:
        wide = style_distance(x, y, method=method, backend="cpu")
        os.environ["PERCEPT_FAST_CPU_ISA"] = "avx2"
        narrow = style_distance(x, y, method=method, backend="cpu")
    finally:
        os.environ.pop("PERCEPT_FAST_CPU_ISA", None)
        if before is not None:
            os.environ["PERCEPT_FAST_CPU_ISA"] = before
    assert torch.equal(wide, narrow)
    if same:
        assert torch.all(wide == 0)


@needs_cpu
@pytest.mark.parametrize(
    "shape", [(2, 256, 4, 4), (2, 3, 30, 30), (1, 130, 9, 9), (3, 64, 8, 8), (2, 70, 1, 1), (1, 1, 1, 1)]
)
@pytest.mark.parametrize("method", ["diff", "kernel"])
def test_both_regimes_and_tile_edges(shape, method):
    # H*W < C (kernel identity natural) and H*W >= C (fused difference natural), each forced both ways;
    # sizes straddle the 16-row panels and 64-row tiles.
    x, y = make_features(shape, torch.float32, "channels_last", 3), make_features(shape, torch.float32, "sliced_c", 4)
    close(style_distance(x, y, method=method, backend="cpu"), exact(x, y), torch.float32)


@needs_cpu
@pytest.mark.parametrize("shape", [(2, 64, 20, 30), (1, 40, 50, 90), (3, 9, 17, 300)])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_single_tile_long_contraction(shape, layout, dtype):
    # C <= 64 is one tile, whose contraction blocks are packed as they are used (per sample, or per chunk when
    # samples are fewer than threads); several blocks and chunks, every layout, against the definition
    x, y = make_features(shape, dtype, layout, 11), make_features(shape, dtype, "contiguous", 12)
    got = style_distance(x, y, method="diff", backend="cpu")
    close(
        got, exact(x, y), dtype, atol=1e-30 if dtype == torch.float64 else cancellation_atol(x, y, "chw", exact(x, y))
    )
    assert torch.equal(style_distance(x, x.contiguous(), method="diff", backend="cpu"), torch.zeros_like(got))


@needs_cpu
def test_reused_buffers_do_not_leak_between_calls():
    """The CPU backend keeps its packed copies, partial tiles and scratch per calling thread across calls
    (style_distance_cpu.cpp, Workspace): a call after larger and smaller ones of every path (few samples with a long
    contraction, few samples tile pairs, one sample per thread; both methods, fp32 and fp64) gives the bits it gave
    first, and each matches the definition."""
    shapes = [(1, 256, 56, 56), (2, 128, 20, 20), (1, 64, 90, 90), (1, 96, 70, 70), (5, 200, 7, 7), (3, 16, 5, 5)]
    cases = [
        (shape, dtype, method)
        for shape in shapes
        for dtype in (torch.float32, torch.float64)
        for method in ("diff", "kernel")
    ]
    first = {}
    for rnd in range(2):
        for shape, dtype, method in cases if rnd == 0 else cases[::-1]:
            x = make_features(shape, dtype, "contiguous", 100 + shapes.index(shape))
            y = make_features(shape, dtype, "contiguous", 200 + shapes.index(shape))
            got = style_distance(x, y, method=method, backend="cpu")
            key = (shape, dtype, method)
            if rnd == 0:
                close(got, exact(x, y), dtype)
                first[key] = got
            else:
                assert torch.equal(got, first[key]), key


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("method", ["diff", "kernel"])
def test_identical_inputs_give_exact_zero(dtype, method):
    for shape in [(2, 96, 7, 7), (2, 20, 17, 9)]:
        x = make_features(shape, dtype, "channels_last", 5)
        got = style_distance(x, x.contiguous(), method=method, backend="cpu")
        assert torch.equal(got, torch.zeros_like(got))


@needs_cpu
def test_nearby_inputs_accuracy():
    # 'diff' forms D per chunk and keeps its relative accuracy; 'kernel' cancels three O(||G||^2) terms, so
    # its error is absolute, ~eps * ||G||_F^2 / C^2 (documented in the module docstring).
    x = make_features((2, 40, 6, 6), torch.float32, seed=9)
    y = x + 1e-3 * make_features((2, 40, 6, 6), torch.float32, seed=10)
    want = exact(x, y)
    scale = exact(x, torch.zeros_like(x))  # ||G0||_F^2 / (n^2 C^2)
    got = style_distance(x, y, method="diff", backend="cpu")
    assert (got > 0).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=0)
    got = style_distance(x, y, method="kernel", backend="cpu")
    assert ((got.double() - want).abs() <= 1e-6 * scale).all()


@needs_cpu
def test_multi_layer_sum_and_per_layer():
    shapes = [(2, 8, 12, 12), (2, 64, 3, 3), (2, 16, 5, 7)]
    xs = [make_features(s, torch.float32, seed=i) for i, s in enumerate(shapes)]
    ys = [make_features(s, torch.float32, seed=10 + i) for i, s in enumerate(shapes)]
    per = style_distance(xs, ys, normalize="hw", per_layer=True, backend="cpu")
    assert per.shape == (2, 3)
    for i in range(3):
        close(per[:, i], exact(xs[i], ys[i], "hw"), torch.float32)
    close(style_distance(xs, ys, normalize="hw", backend="cpu"), per.sum(1), torch.float32)
    close(style_distance_reference(xs, ys, "hw", per_layer=True), per, torch.float32)
    assert style_distance(xs[0], ys[0], per_layer=True, backend="cpu").shape == (2, 1)


@needs_cpu
@pytest.mark.parametrize(
    "shape, layouts",
    [
        ((1, 200, 8, 8), ("contiguous", "contiguous")),
        # contraction 10000: 4 chunks of 2500; two tiles of rows. One sample on more threads than chunks: the sample
        # packed first, (pair, chunk) items; on as many or fewer: every pair of a chunk from blocks packed in cache
        ((1, 70, 100, 100), ("channels_last", "contiguous")),
        ((1, 16, 64, 129), ("contiguous", "sliced_c")),
        # contraction 3136 (4 chunks of 784, blocks of 196) over four tiles of rows (vgg16 relu3_3 at 224 px)
        ((1, 256, 56, 56), ("contiguous", "contiguous")),
        # 13 tiles of rows: too many pair tiles for the per-sample blocks path (kBlocksBytes), so samples in
        # parallel pack whole samples; one sample: tile pairs in parallel
        ((1, 800, 3, 3), ("channels_last", "contiguous")),
    ],
)
def test_threads_do_not_change_the_result(shape, layouts):
    # few samples -> tile pairs or contraction chunks in parallel; many samples -> samples in parallel; with 1, 2 and 8
    # threads (torch's pool, which the kernels follow when built with OpenMP): the same bits
    from percept_fast import _C

    x, y = make_features(shape, torch.float32, layouts[0], seed=1), make_features(shape, torch.float32, layouts[1], 2)
    one = style_distance(x, y, method="diff", backend="cpu")
    close(one, exact(x, y), torch.float32)
    many = style_distance(x.expand(9, -1, -1, -1), y.expand(9, -1, -1, -1), method="diff", backend="cpu")
    assert torch.equal(many, one.expand(9))
    assert torch.equal(style_distance(x, x.contiguous(), method="diff", backend="cpu"), torch.zeros(1))
    if _C.openmp and not os.environ.get("PF_NUM_THREADS"):
        before = torch.get_num_threads()
        try:
            for n in (1, 2, 8):
                torch.set_num_threads(n)
                assert _C.num_threads() == n
                assert torch.equal(style_distance(x, y, method="diff", backend="cpu"), one), n
                got = style_distance(x.expand(3, -1, -1, -1), y.expand(3, -1, -1, -1), method="diff", backend="cpu")
                assert torch.equal(got, one.expand(3)), n
        finally:
            torch.set_num_threads(before)


@needs_cpu
@pytest.mark.parametrize("method", ["diff", "kernel"])
@pytest.mark.parametrize(
    "shape",
    [
        (3, 64, 15, 15),  # one tile, contraction 225: 28 transposes of 8 x 8 and a 1-entry tail
        (2, 20, 7, 9),  # 20 rows: one full 8-row group per panel, then scalar rows; 63 entries
        (2, 130, 5, 5),  # three tiles (a partial one), short contraction
        (1, 48, 70, 70),  # long contraction: the split path, packing in chunks
        (2, 5, 3, 3),  # fewer rows than a transpose
    ],
)
def test_packing_paths_give_the_same_bits(shape, method):
    """The packing of a sample is data movement only: the 8 x 8 register transposes (contiguous NCHW), the
    contiguous-rows copy (channels_last) and the offset-table loops (sliced, transposed) must give identical bits."""
    ref = None
    for layout in LAYOUTS:
        x, y = make_features(shape, torch.float32, layout, 11), make_features(shape, torch.float32, layout, 12)
        got = style_distance(x, y, method=method, backend="cpu", check_finite=False)
        if ref is None:
            ref = got
            close(got, exact(x, y), torch.float32, atol=cancellation_atol(x, y, "chw", exact(x, y)))
        assert torch.equal(got, ref), (layout, got, ref)


# -------------------------------------------------------------------------------------------- gradients


@needs_cpu
@pytest.mark.parametrize("method", ["diff", "kernel"])
def test_gradcheck_cpu_float64(method):
    x = torch.randn(2, 5, 3, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: style_distance(a, b, method=method, backend="cpu"), (x, y))
    x2 = torch.randn(2, 3, 3, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x2.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: style_distance(a, y[:, :3], normalize="hw", method=method, backend="cpu"), (x2,)
    )


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ["diff", "kernel"])
def test_gradients_match_reference_autograd(dtype, method):
    shapes = [(2, 12, 4, 5), (2, 40, 2, 3)]
    xs = [make_features(s, dtype, "channels_last", i).requires_grad_() for i, s in enumerate(shapes)]
    ys = [make_features(s, dtype, seed=5 + i).requires_grad_() for i, s in enumerate(shapes)]
    w = torch.tensor([0.7, 1.3])
    (style_distance(xs, ys, method=method, backend="cpu") * w).sum().backward()
    got = [t.grad.clone() for t in xs + ys]
    for t in xs + ys:
        t.grad = None
    (style_distance_reference(xs, ys) * w).sum().backward()
    for g, t in zip(got, xs + ys):
        assert g.dtype == dtype and g.shape == t.shape
        scale = float(t.grad.float().abs().max())
        tol = dict(rtol=1e-4, atol=1e-5 * scale) if dtype == torch.float32 else dict(rtol=2e-2, atol=1e-2 * scale)
        torch.testing.assert_close(g.float(), t.grad.float(), **tol)


@needs_cpu
def test_grad_only_one_input_and_opcheck():
    x = make_features((2, 6, 3, 3), torch.float32, seed=3).requires_grad_()
    y = make_features((2, 6, 3, 3), torch.float32, seed=4)
    (g,) = torch.autograd.grad(style_distance(x, y, backend="cpu").sum(), (x,))
    x2 = x.detach().clone().requires_grad_()
    (h,) = torch.autograd.grad(style_distance_reference(x2, y).sum(), (x2,))
    torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-5 * float(h.abs().max()))
    torch.library.opcheck(torch.ops.percept_fast.style_distance_layer.default, (x, y, 54.0, "diff", "cpu"))
    quick = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.percept_fast.style_cross_sq.default, (x, y[:1], "cpu"), test_utils=quick)
    torch.library.opcheck(torch.ops.percept_fast.style_self_sq.default, (x, "cpu"), test_utils=quick)


# ---------------------------------------------------------------------------------------- distance matrix


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("method", ["auto", "gram", "kernel"])
def test_matrix_matches_pairwise(backend, method):
    if backend == "cpu" and not HAVE_CPU:
        pytest.skip("percept_fast._C not built")
    for shape_x, shape_y, dtype in [
        ((3, 6, 5, 4), (4, 6, 5, 4), torch.float32),
        ((2, 40, 2, 3), (3, 40, 2, 3), torch.float16),
        ((2, 4, 3, 3), (1, 4, 3, 3), torch.float64),
    ]:
        x, y = make_features(shape_x, dtype, "channels_last", 1), make_features(shape_y, dtype, seed=2)
        kw = {} if backend == "torch" else {"method": method}
        got = style_distance_matrix(x, y, normalize="hw", backend=backend, **kw)
        assert got.shape == (shape_x[0], shape_y[0])
        want = torch.stack([exact(x[i : i + 1].expand_as(y), y, "hw") for i in range(shape_x[0])])
        close(got, want, dtype, rtol=1e-9 if dtype == torch.float64 else 1e-4)


def test_matrix_multi_layer_and_diagonal():
    xs = [make_features((3, 5, 4, 4), torch.float32, seed=1), make_features((3, 9, 2, 2), torch.float32, seed=2)]
    ys = [t.flip(0) for t in xs]
    per = style_distance_matrix(xs, ys, per_layer=True)
    assert per.shape == (3, 3, 2)
    # the GEMM expansion's error is absolute (~eps * ||G||^2): identical pairs come out ~1e-9, not 0
    ref = style_distance_matrix_reference(xs, ys, per_layer=True)
    torch.testing.assert_close(per, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))
    m = style_distance_matrix(xs, xs, method="gram")
    torch.testing.assert_close(torch.diagonal(m), torch.zeros(3), atol=1e-6 * float(m.max()), rtol=0)
    torch.testing.assert_close(m, m.T, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_matrix_gradcheck(backend):
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 4, 3, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    methods = ("gram", "kernel") if backend != "torch" else ("auto",)
    for method in methods:
        fn = lambda a, b, m=method: style_distance_matrix(a, b, normalize="hw", method=m, backend=backend)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, y))


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_cross_kernels(dtype):
    # the fused ||X_n^T Y_m||^2 kernels ('kernel' method of the matrix) against explicit products
    mod = sdmod.cpu_module()
    x, y = make_features((3, 70, 9, 9), dtype, "channels_last", 1), make_features((2, 70, 9, 9), dtype, "sliced_c", 2)
    X, Y = x.double().reshape(3, 70, 81), y.double().reshape(2, 70, 81)
    want = (torch.einsum("ncp,mcq->nmpq", X, Y) ** 2).sum((2, 3))
    out = torch.empty(6, dtype=torch.float64)
    mod.style_cross_sq(sdmod.tensor_arg(x), sdmod.tensor_arg(y), False, out.data_ptr())
    torch.testing.assert_close(out.reshape(3, 2), want, rtol=1e-5, atol=0)
    out = torch.empty(3, dtype=torch.float64)
    mod.style_cross_sq(sdmod.tensor_arg(x), sdmod.tensor_arg(x), True, out.data_ptr())
    want = (torch.bmm(X.transpose(1, 2), X) ** 2).sum((1, 2))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((torch.randn(2, 3, 4), torch.randn(2, 3, 4)), {}, ValueError, "must have 4 dimensions"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 5)), {}, ValueError, "same shape"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4).half()), {}, TypeError, "same dtype"),
        ((torch.ones(2, 3, 4, 4, dtype=torch.int32),) * 2, {}, TypeError, "float32, float16 or bfloat16"),
        ((torch.full((1, 2, 2, 2), float("nan")), torch.zeros(1, 2, 2, 2)), {}, ValueError, "NaN or Inf"),
        ((torch.zeros(0, 2, 2, 2),) * 2, {}, ValueError, "empty"),
        ((torch.zeros(1, 2, 2, 2),) * 2, {"normalize": "c"}, ValueError, "normalize must be one of"),
        ((torch.zeros(1, 2, 2, 2),) * 2, {"method": "gram"}, ValueError, "method must be one of"),
        ((torch.zeros(1, 2, 2, 2),) * 2, {"backend": "gpu"}, ValueError, "backend must be one of"),
        ((torch.zeros(1, 2, 2, 2),) * 2, {"backend": "cuda"}, ValueError, "needs CUDA tensors"),
        ((torch.zeros(1, 2, 2, 2),) * 2, {"per_layer": 1}, TypeError, "per_layer must be a bool"),
        (([torch.zeros(1, 2, 2, 2)], []), {}, ValueError, "same length"),
        (([], []), {}, ValueError, "non-empty"),
        ((torch.zeros(1, 2, 2, 2), [torch.zeros(1, 2, 2, 2)]), {}, TypeError, "both be tensors"),
        (("a", "b"), {}, TypeError, "must be tensors"),
        (([torch.zeros(1, 2, 2, 2), torch.zeros(2, 2, 2, 2)],) * 2, {}, ValueError, "same batch size"),
    ],
)
def test_bad_input_is_a_clear_error(args, kwargs, exc, match, monkeypatch):
    called = []
    monkeypatch.setitem(sdmod._LAYER_SUM, "cpu", lambda *a: called.append(a))
    with pytest.raises(exc, match=match):
        style_distance(*args, **kwargs)
    assert not called  # raised before any kernel


def test_matrix_bad_input():
    with pytest.raises(ValueError, match=r"same \[C, H, W\]"):
        style_distance_matrix(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="method must be one of"):
        style_distance_matrix(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), method="diff")
    with pytest.raises(TypeError, match="same dtype"):
        style_distance_matrix(torch.randn(2, 3, 4, 4), torch.randn(1, 3, 4, 4).double())


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        style_distance(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2), backend="triton")


# ---------------------------------------------------------------------------------------------- triton
# The Triton interpreter needs TRITON_INTERPRET=1 before triton is first imported (its standard library is
# jitted at import), so these checks run in a fresh interpreter: this file executed as a script.

TRITON_CASES = [
    ((2, 70, 3, 3), torch.float32, ("channels_last", "contiguous"), "kernel"),
    ((2, 70, 3, 3), torch.float16, ("sliced_c", "contiguous"), "diff"),
    ((1, 9, 10, 7), torch.bfloat16, ("transposed_hw", "sliced_w"), "diff"),
    ((2, 33, 5, 4), torch.float32, ("contiguous", "channels_last"), "kernel"),
    ((2, 20, 9, 8), torch.float32, ("sliced_w", "contiguous"), "diff"),
]


def _triton_interpreter_checks() -> int:
    n = 0
    for shape, dtype, layouts, method in TRITON_CASES:
        x, y = make_features(shape, dtype, layouts[0], 1), make_features(shape, dtype, layouts[1], 2)
        close(style_distance(x, y, method=method, backend="triton"), exact(x, y), dtype)
        z = style_distance(x, x.contiguous(), method=method, backend="triton")
        assert torch.equal(z, torch.zeros_like(z)), (shape, dtype, method, z)
        if dtype == torch.float32:
            a = x.detach().clone().requires_grad_()
            (g,) = torch.autograd.grad(style_distance(a, y, method=method, backend="triton").sum(), (a,))
            b = x.detach().clone().requires_grad_()
            (h,) = torch.autograd.grad(style_distance_reference(b, y).sum(), (b,))
            torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-5 * float(h.abs().max()))
        n += 1
    # split-K path of the 'diff' kernel (partial D tiles summed over contraction splits)
    sdmod._FORCE_SPLITS = 3
    try:
        for shape, dtype, layouts, method in TRITON_CASES:
            if method == "diff":
                x, y = make_features(shape, dtype, layouts[0], 3), make_features(shape, dtype, layouts[1], 4)
                close(style_distance(x, y, method=method, backend="triton"), exact(x, y), dtype)
                z = style_distance(x, x.contiguous(), method=method, backend="triton")
                assert torch.equal(z, torch.zeros_like(z)), (shape, dtype, "split", z)
    finally:
        sdmod._FORCE_SPLITS = None
    x, y = (
        make_features((2, 40, 3, 2), torch.float32, "channels_last", 1),
        make_features((3, 40, 3, 2), torch.bfloat16, seed=2).float(),
    )
    got = style_distance_matrix(x, y, method="kernel", backend="triton")
    close(got, style_distance_matrix_reference(x, y), torch.float32, rtol=1e-4)
    return n + 1


def test_triton_interpreter_matches_reference():
    pytest.importorskip("triton")
    env = interpreter_env()
    r = subprocess.run(
        [sys.executable, __file__, "--triton-interpreter"], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"triton interpreter checks passed: {len(TRITON_CASES) + 1}" in r.stdout


def test_triton_with_late_interpreter_flag_is_a_clear_error(monkeypatch):
    triton = pytest.importorskip("triton")  # noqa: F841  (imported without the interpreter flag here)
    if sdmod.triton_interpret() or torch.cuda.is_available():
        pytest.skip("needs a process that imported triton without TRITON_INTERPRET")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1 set before triton is imported"):
        style_distance(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2), backend="triton")


# ------------------------------------------------------------------------------------------------- gpu


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_c", "transposed_hw"])
def test_gpu_backends_match_reference(backend, dtype, layout, no_tf32):
    if backend not in available_backends("cuda"):
        pytest.skip(f"{backend} not available")
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("triton backend takes fp32/fp16/bf16")
    shapes = [(1, 1, 1, 1), (3, 7, 5, 9), (4, 64, 27, 27), (2, 512, 7, 7), (2, 130, 1, 300), (2, 70, 64, 64)]
    for i, shape in enumerate(shapes):  # the last one takes the split-K path of 'diff' (few tiles, long rows)
        x = make_features(shape, dtype, layout, 10 + i, "cuda")
        y = make_features(shape, dtype, "contiguous", 20 + i, "cuda")
        for method, force in (("diff", None), ("kernel", None), ("diff", 3)):
            sdmod._FORCE_SPLITS = force
            try:
                got = style_distance(x, y, normalize="hw", method=method, backend=backend)
                close(got, exact(x, y, "hw").cuda(), dtype, rtol=None if dtype == torch.float64 else 1e-4)
                z = style_distance(x, x.contiguous(), method=method, backend=backend)
                if backend == "triton":  # compiled tl.dot: not bit-symmetric (see the module docstring)
                    assert z.abs().max().item() <= 1e-6 * max(1.0, got.abs().max().item())
                else:
                    assert torch.equal(z, torch.zeros_like(z))
            finally:
                sdmod._FORCE_SPLITS = None


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_gradients(backend, no_tf32):
    if backend not in available_backends("cuda"):
        pytest.skip(f"{backend} not available")
    if backend == "cuda":
        x = torch.randn(2, 5, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
        y = torch.randn(2, 5, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
        for method in ("diff", "kernel"):
            assert torch.autograd.gradcheck(
                lambda a, b, m=method: style_distance(a, b, method=m, backend=backend), (x, y)
            )
    x = torch.randn(3, 48, 6, 5, device="cuda", requires_grad=True)
    y = torch.randn(3, 48, 6, 5, device="cuda")
    for method in ("diff", "kernel"):
        (g,) = torch.autograd.grad(style_distance(x, y, method=method, backend=backend).sum(), (x,))
        (h,) = torch.autograd.grad(style_distance_reference(x, y).sum(), (x,))
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-5 * float(h.abs().max()))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_matrix(backend, no_tf32):
    if backend not in available_backends("cuda"):
        pytest.skip(f"{backend} not available")
    x, y = (
        make_features((3, 64, 4, 4), torch.float32, seed=1, device="cuda"),
        make_features((5, 64, 4, 4), torch.float32, seed=2, device="cuda"),
    )
    for method in ("gram", "kernel"):
        got = style_distance_matrix(x, y, method=method, backend=backend)
        close(got, style_distance_matrix_reference(x, y), torch.float32, rtol=1e-4)


if __name__ == "__main__" and "--triton-interpreter" in sys.argv:
    print(f"triton interpreter checks passed: {_triton_interpreter_checks()}")
