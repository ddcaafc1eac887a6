"""PackedTrunk (oneDNN-prepacked weights, channels_last) against the eager ops it replaces: every layer output of its
forward against the eager trunk's, every transposed convolution against F.conv_transpose2d, over random trunks
(kernel, stride, padding, dilation, groups, bias, ceil-mode pools, batch and image sizes); the backbone's cache of
packed trunks; the loss path using it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from percept_fast.backbones.frozen_grad import FrozenTrunkInputGrad, relu_ends
from percept_fast.backbones.packed_trunk import PackedTrunk, packed_trunk_available

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
CL = torch.channels_last


@st.composite
def trunks(draw):
    """A random Conv2d / ReLU (/ MaxPool2d) trunk and an input it accepts."""
    c = c0 = draw(st.integers(1, 6))
    h, w = h0, w0 = draw(st.integers(9, 30)), draw(st.integers(9, 30))
    layers: list[nn.Module] = []
    for block in range(draw(st.integers(1, 3))):
        groups = draw(st.sampled_from([1, 2])) if c % 2 == 0 else 1
        c_out = groups * draw(st.integers(1, 8))
        k, d = draw(st.integers(1, 5)), draw(st.integers(1, 2))
        p, s = draw(st.integers(0, k // 2 * d)), draw(st.integers(1, 3))
        if (min(h, w) + 2 * p - d * (k - 1) - 1) // s + 1 < 2:
            break
        conv = nn.Conv2d(c, c_out, k, stride=s, padding=p, dilation=d, groups=groups, bias=draw(st.booleans()))
        layers += [conv, nn.ReLU()]
        h, w = ((n + 2 * p - d * (k - 1) - 1) // s + 1 for n in (h, w))
        c = c_out
        if block < 2 and min(h, w) >= 4 and draw(st.booleans()):
            pk = draw(st.integers(2, 3))
            pool = nn.MaxPool2d(pk, stride=draw(st.integers(1, 2)), ceil_mode=draw(st.booleans()))
            layers.append(pool)
            h, w = pool(torch.zeros(1, 1, h, w)).shape[2:]
    if not layers:
        layers = [nn.Conv2d(c0, 3, 1), nn.ReLU()]
    trunk = nn.Sequential(*layers).eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk, (draw(st.integers(1, 3)), c0, h0, w0)


def eager_outputs(trunk, x):
    outs, h = [], x
    for layer in trunk:
        h = layer(h)
        outs.append(h)
    return outs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trunks(), st.integers(0, 2**31 - 1))
def test_packed_trunk_equals_the_eager_ops(spec, seed):
    trunk, shape = spec
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trunk.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    x = torch.randn(shape, generator=g)
    want = eager_outputs(trunk, x)
    layers = list(trunk)
    packed = PackedTrunk(layers, tuple(x.shape))
    ends = list(range(len(layers)))
    got = packed.forward(x.contiguous(memory_format=CL), [e for e in ends if not isinstance(layers[e], nn.Conv2d)])
    want_kept = [w for e, w in zip(ends, want) if not isinstance(layers[e], nn.Conv2d)]
    for a, b in zip(got, want_kept, strict=True):
        assert a.shape == b.shape and a.is_contiguous(memory_format=CL)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max())))
    # every transposed convolution (the input gradient): a linear map, compared directly
    inputs = [x] + want[:-1]
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Conv2d):
            continue
        grad = torch.randn(want[i].shape, generator=g)
        k, s, p, d = layer.kernel_size, layer.stride, layer.padding, layer.dilation
        size = inputs[i].shape[2:]
        out_pad = [size[j] - ((grad.shape[2 + j] - 1) * s[j] - 2 * p[j] + d[j] * (k[j] - 1) + 1) for j in range(2)]
        ref = F.conv_transpose2d(grad, layer.weight, None, s, p, out_pad, layer.groups, d)
        out = packed.conv_input_grad(i, grad.contiguous(memory_format=CL))
        assert out.shape == inputs[i].shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * max(1.0, float(ref.abs().max())))


def test_available_only_for_plain_cpu_float32_trunks():
    layers = [nn.Conv2d(3, 4, 3), nn.ReLU()]
    x = torch.zeros(1, 3, 8, 8)
    assert packed_trunk_available(x, layers)
    assert not packed_trunk_available(x.double(), layers)
    assert not packed_trunk_available(x[0], layers)
    assert not packed_trunk_available(x, [nn.Conv2d(3, 4, 3, padding_mode="reflect"), nn.ReLU()])
    assert not packed_trunk_available(x, [nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU()])
    assert not packed_trunk_available(x, [nn.Conv2d(3, 4, 3).double(), nn.ReLU()])


def test_frozen_trunk_gradient_through_packed_trunk_equals_the_eager_path():
    """FrozenTrunkInputGrad with the packed runner and transposed convolutions against the same Function running the
    layers eagerly (float32, channels_last, the same oneDNN convolutions); under create_graph the F path serves."""
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 8, 3, padding=1), nn.ReLU(),
    ).eval()  # fmt: skip
    for p in layers.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 33, 29).contiguous(memory_format=CL)
    taps = [1, 4, 6]
    packed = PackedTrunk(list(layers), tuple(x.shape))
    runner = packed.runner(relu_ends(list(layers)))
    a = x.clone().requires_grad_()
    outs = FrozenTrunkInputGrad.apply(a, list(layers), taps, runner, runner.conv_input_grad)
    b = x.clone().requires_grad_()
    want = FrozenTrunkInputGrad.apply(b, list(layers), taps, None)
    ws = [torch.randn(o.shape) for o in want]
    sum((o * w).sum() for o, w in zip(outs, ws)).backward()
    sum((o * w).sum() for o, w in zip(want, ws)).backward()
    for o, w in zip(outs, want):
        torch.testing.assert_close(o, w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * float(b.grad.abs().max()))
    # double backward: the packed transposed convolutions are not differentiable, the Function falls back
    c = x.clone().requires_grad_()
    outs = FrozenTrunkInputGrad.apply(c, list(layers), taps, runner, runner.conv_input_grad)
    (gc,) = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, ws)), c, create_graph=True)
    assert gc.requires_grad
    torch.testing.assert_close(gc.detach(), a.grad, rtol=1e-4, atol=1e-5 * float(b.grad.abs().max()))


def test_backbone_caches_packed_trunks_per_shape_and_rebuilds_after_an_edit():
    from percept_fast.metric import PerceptualMetric

    m = PerceptualMetric("alex", backbone_weights="random")
    bb = m.backbone
    assert bb.input_grad_format == "packed"
    cache = bb.__dict__.setdefault("_frozen_cache", {})

    def packed_slots():
        return [k for k in cache if k[0] == "packed"]

    def loss(shape):
        x = torch.rand(shape, requires_grad=True)
        m(x, torch.rand(shape)).sum().backward()
        return x.grad

    g1 = loss((2, 3, 64, 64))
    assert len(packed_slots()) == 1
    first = cache[packed_slots()[0]][1]
    loss((2, 3, 64, 64))
    assert cache[packed_slots()[0]][1] is first  # reused
    loss((1, 3, 64, 64))
    loss((2, 3, 72, 64))
    assert len(packed_slots()) == bb._packed_shapes  # the oldest shape was dropped
    with torch.no_grad():
        bb.features[0].weight.mul_(2.0)  # an in-place edit: the packed copies are rebuilt
    g2 = loss((2, 3, 64, 64))
    assert not torch.allclose(g1, g2)
    eager = PerceptualMetric("alex", backbone_weights="random", frozen_backbone=False)
    eager.load_state_dict(m.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    t = torch.rand(2, 3, 64, 64)
    m(x, t).sum().backward()
    y = x.detach().clone().requires_grad_()
    eager(y, t).sum().backward()
    diff = (x.grad - y.grad).abs()
    assert float(diff.median()) < 1e-5 * float(y.grad.abs().max())
    assert float(diff.norm() / y.grad.norm()) < 2e-2
    assert "_frozen_cache" not in bb.__getstate__()


@pytest.mark.parametrize(
    "c_in,k,s,p,hw",
    [
        (3, 11, 4, 2, (64, 64)),  # AlexNet's first layer
        (3, 11, 4, 2, (67, 71)),
        (2, (3, 5), (2, 3), (1, 2), (17, 23)),
        (3, 1, 3, 0, (10, 11)),  # kernel smaller than the stride
        (4, 4, 2, 0, (30, 30)),
    ],
)
def test_strided_first_layer_input_grad_by_phases(c_in, k, s, p, hw):
    """A strided convolution of few input channels takes its input gradient as one stride-1 convolution of the
    output gradient and a pixel shuffle (packed_trunk._Phases): equal to the transposed convolution."""
    from percept_fast.backbones.packed_trunk import _Phases

    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, 16, k, stride=s, padding=p).eval()
    conv.weight.requires_grad_(False)
    assert _Phases.suits(conv)
    x = torch.randn(2, c_in, *hw)
    packed = PackedTrunk([conv, nn.ReLU()], tuple(x.shape))
    y = conv(x)
    g = torch.randn(y.shape)
    out = packed.conv_input_grad(0, g)
    kk, ss, pp = conv.kernel_size, conv.stride, conv.padding
    out_pad = [hw[j] - ((y.shape[2 + j] - 1) * ss[j] - 2 * pp[j] + kk[j]) for j in range(2)]
    ref = F.conv_transpose2d(g, conv.weight, None, ss, pp, out_pad)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("hw", [(16, 16), (13, 11)])
def test_wide_3x3_layers_run_by_winograd_and_equal_the_eager_ops(hw):
    """Layers of 64+ channels (VGG's, AlexNet's last three) run by Winograd F(2x2, 3x3) forward and backward
    (percept_fast/backbones/winograd.py): the same values as the eager ops to float32 rounding; winograd=False keeps
    oneDNN's direct convolutions."""
    g = torch.Generator().manual_seed(3)
    layers = [
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 96, 3, padding=1, bias=False), nn.ReLU(),
    ]  # fmt: skip
    with torch.no_grad():
        for layer in layers:
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
                p.requires_grad_(False)
    x = torch.randn(2, 3, *hw, generator=g)
    want = eager_outputs(nn.Sequential(*layers), x)
    packed = PackedTrunk(layers, tuple(x.shape))
    assert sorted(packed.wino) == [2, 5, 7]  # not the 3-channel first layer
    assert not PackedTrunk(layers, tuple(x.shape), winograd=False).wino
    ends = [1, 3, 4, 6, 8]
    for a, i in zip(packed.forward(x, ends), ends, strict=True):
        b = want[i]
        assert a.shape == b.shape and a.is_contiguous(memory_format=CL)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
    inputs = [x] + want[:-1]
    for i in (2, 5, 7):
        grad = torch.randn(want[i].shape, generator=g)
        ref = F.conv_transpose2d(grad, layers[i].weight, None, 1, 1)
        out = packed.conv_input_grad(i, grad)
        assert out.shape == inputs[i].shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
