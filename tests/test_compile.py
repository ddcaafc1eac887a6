"""Graph readiness: torch.compile(fullgraph=True) of every distance op and of PerceptualMetric (a graph break
raises), value checks that do not synchronise (device-side asserts under compile and on CUDA), CUDA graphs.

Most compiles use dynamo's ``'eager'`` backend: it captures the same graph (fullgraph=True still raises on any
break) without inductor's code generation, so the suite stays fast; one test per kind runs inductor end to end.
"""

from __future__ import annotations

import pytest
import torch
from helpers.tensors import make_features

from percept_fast import PerceptualMetric
from percept_fast.backbones import ResNetFeatures
from percept_fast.ops import available_backends, lpips_distance, meanpool_distance, style_distance

BACKENDS = [b for b in ("torch", "cpu") if b in available_backends("cpu", "lpips_forward")]


def _lpips(fx, fy, **kw):
    """lpips_distance with fixed per-channel weights (made inside the traced function: no captured tensors)."""
    return lpips_distance(fx, fy, [torch.linspace(0.1, 1.0, f.shape[1], device=f.device) for f in fx], **kw)


OPS = {
    "lpips": _lpips,
    "meanpool": meanpool_distance,
    "style": style_distance,
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _layers(seed=0):
    shapes = [(2, 8, 7, 6), (2, 16, 3, 3)]
    fx = [make_features(s, torch.float32, "contiguous", seed + i) for i, s in enumerate(shapes)]
    fy = [make_features(s, torch.float32, "channels_last", seed + 10 + i) for i, s in enumerate(shapes)]
    return fx, fy


@pytest.mark.parametrize("check_finite", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(OPS))
def test_op_fullgraph(op, backend, check_finite):
    """One graph for a multi-layer call (per-layer and summed), equal to the eager result."""
    fn = OPS[op]
    fx, fy = _layers()

    def call(a, b):
        kw = dict(backend=backend, check_finite=check_finite)
        return fn(a, b, per_layer=True, **kw), fn(a, b, **kw)

    want = call(fx, fy)
    got = torch.compile(call, fullgraph=True, backend="eager")(fx, fy)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lpips_spatial_fullgraph(backend):
    fx, fy = _layers(3)
    w = [torch.rand(f.shape[1]) for f in fx]

    def call(a, b):
        return lpips_distance(a, b, w, spatial=True, backend=backend)

    got = torch.compile(call, fullgraph=True, backend="eager")(fx, fy)
    for g, e in zip(got, call(fx, fy)):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(OPS))
def test_op_checks_under_compile(op, backend):
    """check_finite=True still rejects NaN inside a compiled graph, naming the input: the C++ kernel raises its
    ValueError from inside the custom op, the other paths a device-side assert (RuntimeError, same message);
    check_finite=False lets the NaN through (no check, no sync)."""
    fn = OPS[op]
    fx, fy = _layers(5)
    fy[1] = fy[1].clone()
    fy[1][1, 2, 1, 1] = float("nan")
    checked = torch.compile(lambda a, b: fn(a, b, backend=backend), fullgraph=True, backend="eager")
    with pytest.raises((ValueError, RuntimeError), match=rf"{op}_distance: fy\[1\] contains NaN or Inf"):
        checked(fx, fy)
    torch._dynamo.reset()
    unchecked = torch.compile(
        lambda a, b: fn(a, b, backend=backend, check_finite=False, per_layer=True), fullgraph=True, backend="eager"
    )
    out = unchecked(fx, fy)
    assert torch.isnan(out[1, 1]) and torch.isfinite(out[0]).all()


@pytest.mark.parametrize("op", list(OPS))
def test_op_inductor(op):
    """inductor end to end (the custom op of the C++ kernel where built, else the reference)."""
    fn = OPS[op]
    fx, fy = _layers(7)
    backend = BACKENDS[-1]
    want = fn(fx, fy, backend=backend, check_finite=True)
    got = torch.compile(lambda a, b: fn(a, b, backend=backend, check_finite=True), fullgraph=True)(fx, fy)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def _small_resnet():
    torch.manual_seed(0)
    return ResNetFeatures(10, width=0.25).eval()


@pytest.mark.parametrize("check_input", [True, False])
@pytest.mark.parametrize("distance", ["lpips", "meanpool", "style"])
def test_metric_fullgraph(distance, check_input):
    m = PerceptualMetric(_small_resnet(), distance=distance, check_input=check_input)
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        want = m(x0, x1, per_layer=True)
        got = torch.compile(m, fullgraph=True, backend="eager")(x0, x1, per_layer=True)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_metric_inductor_lpips_default_and_checks():
    """The default metric (AlexNet, LPIPS weights when the lpips package is installed, the frozen trunk bypassed
    while tracing) compiles with inductor in one graph; its range check still fires inside the graph."""
    m = PerceptualMetric("alex", backbone_weights="random")
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    compiled = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        want = m(x0, x1)
        got = compiled(x0, x1)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        with pytest.raises(RuntimeError, match=r"x0: values must be finite and lie in \[0, 1\]"):
            compiled(x0 * 3, x1)


def test_metric_spatial_fullgraph():
    m = PerceptualMetric(_small_resnet(), lin_weights=None, spatial=True)
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.rand(1, 3, 32, 40, generator=g), torch.rand(1, 3, 32, 40, generator=g)
    with torch.no_grad():
        got = torch.compile(m, fullgraph=True, backend="eager")(x0, x1)
        torch.testing.assert_close(got, m(x0, x1), rtol=1e-6, atol=1e-9)
    assert got.shape == (1, 1, 32, 40)


# ------------------------------------------------------------------------------------------------- gpu


def _cuda_metric(distance, check_input, backend="auto"):
    torch.manual_seed(0)
    net = ResNetFeatures(18, width=0.5) if distance != "lpips" else "alex"
    kw = {"backbone_weights": "random"} if distance == "lpips" else {}
    return PerceptualMetric(net, distance=distance, check_input=check_input, backend=backend, **kw).cuda().eval()


@pytest.mark.gpu
@pytest.mark.parametrize("check_input", [False, True])
@pytest.mark.parametrize("distance", ["lpips", "meanpool", "style"])
def test_cuda_forward_has_no_host_sync(distance, check_input):
    """torch.cuda.set_sync_debug_mode('error') raises on any synchronising call: none in the forward, with the
    checks off and with them on (device-side asserts)."""
    m = _cuda_metric(distance, check_input)
    x0, x1 = torch.rand(4, 3, 64, 64, device="cuda"), torch.rand(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        m(x0, x1)  # warm-up: cuDNN heuristics, workspaces, cached tile tables
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = m(x0, x1)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(out).all()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "torch"])
@pytest.mark.parametrize("distance", ["lpips", "meanpool", "style"])
def test_cuda_graph_capture(distance, backend, no_tf32):
    """The metric's forward (checks on: device-side asserts) is captured in a CUDA graph; a replay on new inputs
    equals an eager call."""
    if backend not in available_backends("cuda"):
        pytest.skip(f"{backend} not available")
    m = _cuda_metric(distance, True, backend)
    g = torch.Generator(device="cuda").manual_seed(0)
    x0 = torch.rand(4, 3, 64, 64, device="cuda", generator=g)
    x1 = torch.rand(4, 3, 64, 64, device="cuda", generator=g)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(3):
            m(x0, x1)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = m(x0, x1, per_layer=True)
    n0, n1 = torch.rand_like(x0), torch.rand_like(x1)
    x0.copy_(n0)
    x1.copy_(n1)
    graph.replay()
    torch.cuda.synchronize()
    with torch.no_grad():
        want = m(n0, n1, per_layer=True)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.parametrize("op", list(OPS))
def test_cuda_fullgraph_inductor(op):
    fn = OPS[op]
    shapes = [(4, 64, 15, 15), (4, 192, 7, 7)]
    fx = [make_features(s, torch.float32, "contiguous", i, "cuda") for i, s in enumerate(shapes)]
    fy = [make_features(s, torch.float32, "channels_last", 10 + i, "cuda") for i, s in enumerate(shapes)]
    want = fn(fx, fy, check_finite=True)
    got = torch.compile(lambda a, b: fn(a, b, check_finite=True), fullgraph=True)(fx, fy)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
