"""PerceptualMetric as a training loss: the gradient w.r.t. the input images equals the lpips package's (same
weights), through every path (frozen-trunk input gradient, eager autograd, one shared pass, trainable lin weights)."""

from __future__ import annotations

import pytest
import torch

from percept_fast.backbones.frozen_grad import FrozenTrunkInputGrad, supports_input_grad_trunk
from percept_fast.metric import PerceptualMetric

lpips = pytest.importorskip("lpips")


def models(net: str, dtype: torch.dtype, **kw):
    """lpips.LPIPS with random trunk weights (seeded) and ours with the same weights; both frozen."""
    torch.manual_seed(0)
    lp = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
    for p in lp.parameters():
        p.requires_grad_(False)
    sd = {}
    for k, v in lp.net.state_dict().items():
        _, idx, rest = k.split(".", 2)
        sd[f"features.{idx}.{rest}"] = v.clone()
    ours = PerceptualMetric(net, lin_weights="lpips", backbone_weights=sd, **kw).to(dtype)
    return lp.to(dtype), ours


def images(size: int, batch: int, dtype: torch.dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g, dtype=torch.float64)
    t = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), t.to(dtype)


def input_grad(fn, x, t):
    pred = x.clone().requires_grad_()
    loss = fn(pred, t).mean()
    loss.backward()
    return loss.detach(), pred.grad


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
@pytest.mark.parametrize("frozen", [True, False])
def test_loss_gradient_equals_lpips_float64(net, frozen):
    lp, ours = models(net, torch.float64, frozen_backbone=frozen)
    x, t = images(48, 2, torch.float64)
    l_want, g_want = input_grad(lambda a, b: lp(a, b, normalize=True), x, t)
    l_got, g_got = input_grad(ours, x, t)
    torch.testing.assert_close(l_got, l_want, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-9 * float(g_want.abs().max()))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_loss_gradient_float32_as_accurate_as_lpips(net):
    """float32: our gradient is as close to the float64 truth as lpips' own float32 gradient, and agrees with eager
    autograd's.

    The trunk is piecewise linear: where a pre-activation or two values of a max-pool window lie within float32
    rounding of each other, the rounding decides the ReLU's side or the window's argmax, and the gradient of that
    receptive field follows. Our path runs channels_last convolutions (lpips and eager autograd NCHW ones: another
    summation order), so such a flip can differ (measured: vgg at 64 px, one ReLU of relu3_3 and one pool window,
    0.7 % of the gradient's norm). Hence robust statistics: the median error at float32's rounding level (~1e-6 of
    the largest entry here) and the norm of the error under 2 %. The algebra itself is compared exactly in float64
    (test_loss_gradient_equals_lpips_float64, test_frozen_trunk_function_matches_autograd)."""
    lp64, _ = models(net, torch.float64)
    lp, ours = models(net, torch.float32)
    _, eager = models(net, torch.float32, frozen_backbone=False)
    x, t = images(64, 3, torch.float32)
    _, truth = input_grad(lambda a, b: lp64(a, b, normalize=True), x.double(), t.double())
    _, g_lp = input_grad(lambda a, b: lp(a, b, normalize=True), x, t)
    _, g_ours = input_grad(ours, x, t)
    _, g_eager = input_grad(eager, x, t)
    scale = float(truth.abs().max())

    def errors(g, ref):
        d = (g.double() - ref.double()).abs()
        return float(d.median()) / scale, float(d.norm() / ref.double().norm())

    med_lp, norm_lp = errors(g_lp, truth)
    assert med_lp < 1e-5 and norm_lp < 1e-4, (med_lp, norm_lp)
    for g in (g_ours, g_eager):
        med, norm = errors(g, truth)
        assert med <= 2 * med_lp + 1e-6, (med, med_lp)
        assert norm < 2e-2, norm
    med, norm = errors(g_ours, g_eager)
    assert med < 1e-5 and norm < 2e-2, (med, norm)


def test_frozen_trunk_path_is_taken_and_keeps_only_relu_outputs():
    _, ours = models("alex", torch.float32)
    x, t = images(64, 2, torch.float32)
    pred = x.clone().requires_grad_()
    feats = ours.features(pred)
    assert all(f.grad_fn is not None and "FrozenTrunkInputGrad" in type(f.grad_fn).__name__ for f in feats)
    # alex: every ReLU is a tap, so the Function keeps nothing beyond the taps (returned anyway)
    saved = feats[0].grad_fn.saved_tensors
    assert len(saved) == 5 and all(any(s.data_ptr() == f.data_ptr() for f in feats) for s in saved)
    # vgg: the taps plus a bool mask per other ReLU
    _, vgg = models("vgg", torch.float32)
    fv = vgg.features(pred)
    kinds = sorted(str(s.dtype) for s in fv[0].grad_fn.saved_tensors)
    assert kinds.count("torch.bool") == 8 and kinds.count("torch.float32") == 5
    # not taken: without a gradient, or with a trainable backbone (autograd must see the parameters)
    with torch.no_grad():
        assert ours.features(pred)[0].grad_fn is None
    _, trainable = models("alex", torch.float32, requires_grad=True)
    assert "FrozenTrunkInputGrad" not in type(trainable.features(pred)[0].grad_fn).__name__


def test_loss_path_runs_channels_last_on_cpu():
    """alex/vgg on CPU: the prediction's trunk (forward, saved outputs, backward) and the target's frozen pass run
    channels_last, so both sides reach the fused distance in one layout; the gradient returns in the input's shape."""
    _, ours = models("vgg", torch.float32)
    bb = ours.backbone
    assert bb.input_grad_format == "packed"
    x, t = images(32, 2, torch.float32)
    pred = x.clone().requires_grad_()
    cl = torch.channels_last
    assert all(f.is_contiguous(memory_format=cl) for f in bb(pred, unit_input=True))
    with torch.no_grad():
        assert all(f.is_contiguous(memory_format=cl) for f in bb(t, unit_input=True, frozen_format="packed"))
        assert all(f.is_contiguous() for f in bb(t, unit_input=True, frozen_format="mkldnn"))  # NCHW taps
    ours(pred, t).sum().backward()
    assert pred.grad.shape == x.shape and torch.isfinite(pred.grad).all()
    with pytest.raises(ValueError, match="frozen_format"):
        bb(t, unit_input=True, frozen_format="nhwc")


def test_every_loss_path_matches_lpips():
    """Fixed target on either side, both sides differentiable (one shared pass), per-layer output, trainable lin
    weights: gradients equal lpips' (float64)."""
    lp, ours = models("alex", torch.float64)
    x, t = images(40, 2, torch.float64)
    a, b = x.clone().requires_grad_(), t.clone().requires_grad_()
    lp(a, b, normalize=True).sum().backward()
    c, d = x.clone().requires_grad_(), t.clone().requires_grad_()
    ours(c, d).sum().backward()  # both need a gradient: one pass over cat([x0, x1])
    torch.testing.assert_close(c.grad, a.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(d.grad, b.grad, rtol=1e-9, atol=1e-12)
    e = t.clone().requires_grad_()
    ours(x, e).sum().backward()  # the fixed side first
    torch.testing.assert_close(e.grad, b.grad, rtol=1e-9, atol=1e-12)
    f = x.clone().requires_grad_()
    per_layer = ours(f, t, per_layer=True)
    assert per_layer.shape == (2, 5)
    (per_layer * torch.arange(1.0, 6.0, dtype=torch.float64)).sum().backward()
    g = x.clone().requires_grad_()
    lp_layers = lp(g, t, normalize=True, retPerLayer=True)[1]
    sum((k + 1.0) * r.sum() for k, r in enumerate(lp_layers)).backward()
    torch.testing.assert_close(f.grad, g.grad, rtol=1e-9, atol=1e-12)
    # trainable lin weights: the fused op's weight gradient equals lpips' lin-layer gradient
    lp_t, ours_t = models("alex", torch.float64)
    for lin in lp_t.lins:
        lin.model[-1].weight.requires_grad_(True)
    for w in ours_t.lin_weights:
        w.requires_grad_(True)
    lp_t(x, t, normalize=True).sum().backward()
    ours_t(x, t).sum().backward()
    for lin, w in zip(lp_t.lins, ours_t.lin_weights):
        torch.testing.assert_close(w.grad, lin.model[-1].weight.grad.reshape(-1), rtol=1e-9, atol=1e-14)


def test_double_backward_through_frozen_trunk():
    """The trunk is piecewise linear: the frozen-trunk path's Hessian-vector product equals eager autograd's."""
    _, ours = models("alex", torch.float64, distance_kwargs={"normalize": "stable"})
    _, eager = models("alex", torch.float64, frozen_backbone=False, distance_kwargs={"normalize": "stable"})
    x, t = images(36, 2, torch.float64)
    v = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    hv = []
    for m in (ours, eager):
        a = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(m(a, t).sum(), a, create_graph=True)
        (h,) = torch.autograd.grad((g * v).sum(), a)
        hv.append(h)
    torch.testing.assert_close(hv[0], hv[1], rtol=1e-8, atol=1e-12)


def test_supported_trunks():
    from torch import nn

    assert supports_input_grad_trunk([nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 1)])
    assert not supports_input_grad_trunk([nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)])  # pool input must be a ReLU output
    assert not supports_input_grad_trunk([nn.Conv2d(3, 4, 3, padding_mode="reflect"), nn.ReLU()])
    assert not supports_input_grad_trunk([nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_frozen_trunk_function_matches_autograd(ceil_mode, layout):
    """Strides, padding, dilation, groups, ceil-mode pools, taps in the middle, an unused tap gradient; NCHW and
    channels_last (the layout of the CPU loss path of alex/vgg)."""
    from torch import nn

    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=3, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, ceil_mode=ceil_mode),
        nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=4),
        nn.ReLU(),
        nn.Conv2d(12, 6, 1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=ceil_mode),
        nn.Conv2d(6, 5, 3, stride=2, padding=1),
        nn.ReLU(),
    ).double()
    for p in layers.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 37, 41, dtype=torch.float64)
    taps = [1, 6, 9]
    a = x.clone().requires_grad_()
    if layout == "channels_last":
        cl = torch.channels_last
        outs = FrozenTrunkInputGrad.apply(a.contiguous(memory_format=cl), list(layers), taps, None)
        assert all(o.is_contiguous(memory_format=cl) for o in outs)
        assert len(outs[0].grad_fn.saved_tensors) == 4  # taps 1 (a pool input), 6, 9 and ReLU 4's bool mask
    else:
        outs = FrozenTrunkInputGrad.apply(a, list(layers), taps, None)
    b = x.clone().requires_grad_()
    h, want = b, []
    for i, layer in enumerate(layers):
        h = layer(h)
        if i in taps:
            want.append(h)
    for o, w in zip(outs, want):
        torch.testing.assert_close(o, w)
    ws = [torch.randn_like(o) for o in outs]
    (outs[0] * ws[0]).sum().add((outs[2] * ws[2]).sum()).backward()  # tap 6's gradient is None
    (want[0] * ws[0]).sum().add((want[2] * ws[2]).sum()).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert torch.autograd.gradcheck(
        lambda z: FrozenTrunkInputGrad.apply(z.contiguous(memory_format=fmt), list(layers), taps, None),
        (a.detach()[:1, :, :20, :20].clone().requires_grad_(),),
    )
    # a second-order gradient through the in-place updates of the backward (create_graph)
    assert torch.autograd.gradgradcheck(
        lambda z: FrozenTrunkInputGrad.apply(z.contiguous(memory_format=fmt), list(layers), taps, None),
        (a.detach()[:1, :, :16, :16].clone().requires_grad_(),),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(
    "shape,k,s,p,d,ceil_mode",
    [
        ((2, 5, 15, 15), 3, 2, 0, 1, False),
        ((3, 4, 16, 13), 3, 2, 0, 1, True),
        ((1, 7, 12, 12), 2, 2, 0, 1, False),
        ((2, 3, 11, 9), 3, 2, 1, 1, False),
        ((2, 3, 14, 14), 3, 1, 1, 2, True),
    ],
)
def test_max_pool_input_grad_bitwise_equals_autograd(dtype, shape, k, s, p, d, ceil_mode):
    """The backward's pool gradient (argmax from a channels_last copy on CPU) equals autograd's NCHW max-pool
    backward bit for bit: ReLU-like inputs (many tied zeros), exact ties between positive values, a NaN."""
    from percept_fast.backbones.frozen_grad import _max_pool_input_grad

    g = torch.Generator().manual_seed(sum(shape) + k)
    x = torch.randn(shape, generator=g).clamp_min(0).to(dtype)  # ~half the entries are tied zeros
    x[0, 0, 1, :4] = 0.75  # a tie between positive values inside one window
    x[-1, -1, 2, 3] = float("nan")
    ref_in = x.clone().requires_grad_()
    out = torch.nn.functional.max_pool2d(ref_in, k, s, p, d, ceil_mode)
    go = torch.randn(out.shape, generator=g).to(dtype)
    out.backward(go)
    got = _max_pool_input_grad(go, x, [k, k], [s, s], [p, p], [d, d], ceil_mode)
    assert got.is_contiguous() and got.dtype == dtype
    assert torch.equal(got, ref_in.grad)
