"""PerceptualMetric / perceptual_distance: maths against a plain re-implementation, API, validation."""

from __future__ import annotations

import warnings

import pytest
import torch

from percept_fast import PerceptualMetric, perceptual_distance
from percept_fast import metric as metric_mod
from percept_fast.backbones import AlexNetFeatures, ResNetFeatures, ViTFeatures


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small inputs gain nothing from intra-op threads, and on a busy 2-core machine they cost a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pair(b=2, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)


def _small_resnet():
    torch.manual_seed(0)
    net = ResNetFeatures(10, width=0.25).eval()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def _small_vit():
    torch.manual_seed(0)
    return ViTFeatures(8, 24, 3, 2, image_size=32, taps=[0, 2]).eval()


# ------------------------------------------------------------------------- plain re-implementations
def _plain_lpips(f0, f1, weights, eps=1e-10):
    out = []
    for i, (a, b) in enumerate(zip(f0, f1)):
        a = a.double()
        b = b.double()
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + eps)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + eps)
        d = (na - nb) ** 2
        if weights is not None:
            d = d * weights[i].double().view(1, -1, 1, 1)
        out.append(d.sum(1).mean((1, 2)))
    return torch.stack(out, 1)


def _plain_meanpool(f0, f1, eps=1e-10):
    out = []
    for a, b in zip(f0, f1):
        ma, mb = a.double().mean((2, 3)), b.double().mean((2, 3))
        ua = ma / (ma.norm(dim=1, keepdim=True) + eps)
        ub = mb / (mb.norm(dim=1, keepdim=True) + eps)
        out.append(((ua - ub) ** 2).sum(1) / a.shape[1])
    return torch.stack(out, 1)


def _plain_style(f0, f1):
    out = []
    for a, b in zip(f0, f1):
        bsz, c, h, w = a.shape
        ga = a.double().flatten(2) @ a.double().flatten(2).transpose(1, 2) / (c * h * w)
        gb = b.double().flatten(2) @ b.double().flatten(2).transpose(1, 2) / (c * h * w)
        out.append(((ga - gb) ** 2).sum((1, 2)) / c**2)
    return torch.stack(out, 1)


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("distance", ["lpips", "meanpool", "style"])
@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_matches_plain_formula(kind, distance, backend):
    net = _small_resnet() if kind == "resnet" else _small_vit()
    lin = None
    if distance == "lpips":
        g = torch.Generator().manual_seed(2)
        lin = [torch.rand(c, generator=g) for c in net.channels]
    m = PerceptualMetric(net, distance=distance, lin_weights=lin, backend=backend)
    x0, x1 = _pair(3, 32, 32)
    with torch.no_grad():
        got = m(x0, x1, per_layer=True)
        total = m(x0, x1)
        f0 = net(2 * x0 - 1)
        f1 = net(2 * x1 - 1)
    ref = {
        "lpips": lambda: _plain_lpips(f0, f1, lin),
        "meanpool": lambda: _plain_meanpool(f0, f1),
        "style": lambda: _plain_style(f0, f1),
    }[distance]()
    assert got.shape == (3, len(net.channels)) and total.shape == (3,)
    assert (ref > 0).all()
    torch.testing.assert_close(got.double(), ref, rtol=2e-4, atol=1e-7)
    torch.testing.assert_close(total.double(), ref.sum(1), rtol=2e-4, atol=1e-7)


def test_properties_identity_symmetry_features():
    m = PerceptualMetric("alex", backbone_weights="random", lin_weights="lpips")
    x0, x1 = _pair(3)
    with torch.no_grad():
        d01, d10, d00 = m(x0, x1), m(x1, x0), m(x0, x0)
        f0, f1 = m.features(x0), m.features(x1)
        via = m.distance_from_features(f0, f1, per_layer=True)
    assert torch.equal(d00, torch.zeros(3))
    torch.testing.assert_close(d01, d10, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(via.sum(1), d01, rtol=1e-5, atol=1e-7)
    assert [f.shape[1] for f in f0] == [64, 192, 384, 256, 256]
    assert m.layer_names == ["relu1", "relu2", "relu3", "relu4", "relu5"]


def test_normalize_input_convention():
    net = _small_resnet()
    x0, x1 = _pair(2, 32, 32)
    with torch.no_grad():
        a = PerceptualMetric(net)(x0, x1)
        b = PerceptualMetric(net, normalize_input=False)(2 * x0 - 1, 2 * x1 - 1)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"normalize_input=False"):
        PerceptualMetric(net)(2 * x0 - 1, x1)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        PerceptualMetric(net, normalize_input=False)(x0 * 3, x1)


def test_layer_selection_and_lin_subsets():
    net = _small_resnet()
    g = torch.Generator().manual_seed(3)
    lin = [torch.rand(c, generator=g) for c in net.channels]
    x0, x1 = _pair(2, 32, 32)
    full = PerceptualMetric(net, lin_weights=lin)
    sub = PerceptualMetric(net, layers=["layer1", 3], lin_weights=lin)  # full list: subset by taps
    sub2 = PerceptualMetric(net, layers=[1, 3], lin_weights=[lin[1], lin[3].view(1, -1, 1, 1)])  # one per layer
    with torch.no_grad():
        cols = full(x0, x1, per_layer=True)
        s1, s2 = sub(x0, x1, per_layer=True), sub2(x0, x1, per_layer=True)
    torch.testing.assert_close(s1, cols[:, [1, 3]], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(s2, s1, rtol=0, atol=0)
    assert sub.layer_names == ["layer1", "layer3"]
    with pytest.raises(ValueError, match="linear weights"):
        PerceptualMetric(net, layers=[1, 3], lin_weights=lin[:3])
    with pytest.raises(ValueError, match="tapped channels"):
        PerceptualMetric(net, layers=[1, 3], lin_weights=[lin[3], lin[1]])


def test_functional_matches_module_and_caches(tmp_path):
    net = AlexNetFeatures()
    path = tmp_path / "alex.pth"
    torch.save(net.state_dict(), path)
    x0, x1 = _pair(2)
    metric_mod._CACHE.clear()
    with torch.no_grad():
        a = perceptual_distance(x0, x1, "alex", lin_weights="lpips", backbone_weights=path)
        b = PerceptualMetric("alex", lin_weights="lpips", backbone_weights=path)(x0, x1)
        c = perceptual_distance(x0, x1, "alex", lin_weights="lpips", backbone_weights=str(path), per_layer=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(c.sum(1), a, rtol=1e-6, atol=1e-8)
    assert len(metric_mod._CACHE) == 1  # the Path and the str name the same file: one cached metric
    # a module backbone works too (not cached)
    with torch.no_grad():
        d = perceptual_distance(x0, x1, net, lin_weights="lpips")
    # a module backbone runs eagerly (NCHW); the metric's own frozen copy channels_last: float32 rounding apart
    torch.testing.assert_close(d, a, rtol=1e-5, atol=1e-7)
    assert len(metric_mod._CACHE) == 1
    # float64 inputs: the cached metric runs in float64
    with torch.no_grad():
        e = perceptual_distance(x0.double(), x1.double(), "alex", lin_weights="lpips", backbone_weights=path)
    assert e.dtype == torch.float64
    torch.testing.assert_close(e.float(), a, rtol=1e-4, atol=1e-6)


def test_plain_module_backbone():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 4, 3, stride=2, padding=1)

        def forward(self, x):
            a = torch.relu(self.c1(x))
            return [a, self.c2(a)]

    torch.manual_seed(0)
    bb = Two()
    x0, x1 = _pair(2, 16, 16)
    m = PerceptualMetric(bb, layers=[1], lin_weights=[torch.ones(4)])
    with torch.no_grad():
        got = m(x0, x1)
        ref = _plain_lpips([bb(2 * x0 - 1)[1]], [bb(2 * x1 - 1)[1]], None).sum(1)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-8)

    class Bad(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="list of feature maps"):
        PerceptualMetric(Bad())(x0, x1)


def test_gradients_and_frozen_backbone():
    m = PerceptualMetric(_small_resnet(), lin_weights=[torch.rand(c) for c in [16, 16, 32, 64, 128]])
    assert not any(p.requires_grad for p in m.parameters())
    x0, x1 = _pair(2, 32, 32)
    x0.requires_grad_(True)
    d = m(x0, x1).sum()
    d.backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all() and x0.grad.abs().sum() > 0
    trainable = PerceptualMetric(_small_resnet(), requires_grad=True)
    assert all(p.requires_grad for p in trainable.parameters())


@pytest.mark.parametrize("name", ["alex", "vgg", "squeeze"])
def test_frozen_backbone_path_equals_eager(name):
    """Gradient-free CPU inference runs the frozen TorchScript trunk for NCHW and channels_last inputs (in the
    backbone's frozen_format); it equals the eager reference, is rebuilt after a weight edit or a move to
    channels_last weights (the score runner's setup), and its input gradient equals eager autograd's."""
    torch.manual_seed(3)
    fast = PerceptualMetric(name, backbone_weights="random")
    eager = PerceptualMetric(name, backbone_weights="random", frozen_backbone=False)
    eager.load_state_dict(fast.state_dict())
    x0, x1 = _pair(3, 64, 48, seed=5)
    cache = fast.backbone.__dict__
    with torch.inference_mode():
        fa, fb = fast.features(x0), eager.features(x0)
        assert cache.get("_frozen_cache") and not eager.backbone.__dict__.get("_frozen_cache")
        for a, b in zip(fa, fb):  # (vgg's 3x3 layers run by Winograd there: 1e-6 to 3e-6 of the scale)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max())))
        torch.testing.assert_close(fast(x0, x1, per_layer=True), eager(x0, x1, per_layer=True), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # in-place weight edit: the frozen copy is rebuilt
        for m in (fast, eager):
            m.backbone.features[0].weight.mul_(1.5)
        torch.testing.assert_close(fast(x0, x1), eager(x0, x1), rtol=1e-5, atol=1e-6)
    cache.pop("_frozen_cache")
    xg = x0.clone().requires_grad_(True)
    fast(xg, x1).sum().backward()  # a loss: the frozen copy serves the fixed side (and alex/vgg's input gradient)
    xe = x0.clone().requires_grad_(True)
    eager(xe, x1).sum().backward()
    assert xg.grad.abs().sum() > 0 and cache.get("_frozen_cache")
    # alex/vgg's input gradient runs channels_last convolutions, eager autograd NCHW ones: float32 rounding can flip
    # a ReLU or a pool window at a near-tie differently (test_metric_loss.py), so robust statistics
    diff = (xg.grad - xe.grad).abs()
    assert float(diff.median()) < 1e-5 * float(xe.grad.abs().max())
    assert float(diff.norm() / xe.grad.norm()) < 2e-2
    want = eager(x0, x1, per_layer=True).detach()
    cl = x0.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # channels_last inputs take the frozen trunk too
        torch.testing.assert_close(fast(cl, x1, per_layer=True), want, rtol=1e-5, atol=1e-6)
        assert cache.get("_frozen_cache")
        fast.backbone.to(memory_format=torch.channels_last)  # new weight tensors: rebuilt

        def inference_copy():  # the inference copy's cache entry
            bb = fast.backbone
            if bb.frozen_format == "packed":
                shape = (2 * cl.shape[0], *cl.shape[1:])  # the metric's one pass over both batches
                return cache["_frozen_cache"][("packed", bb.num_taps - 1, shape)][1]
            return cache["_frozen_cache"][(bb.num_taps - 1, None, bb.frozen_format)][1]

        old = inference_copy()
        torch.testing.assert_close(fast(cl, x1, per_layer=True), want, rtol=1e-5, atol=1e-6)
        assert inference_copy() is not old
        fmt = torch.channels_last if fast.backbone.frozen_format != "mkldnn" else torch.contiguous_format
        for x in (x0, cl):  # the taps come back in the frozen copy's layout whatever the input's
            assert all(f.is_contiguous(memory_format=fmt) for f in fast.features(x))
    state = fast.backbone.__getstate__()
    assert "_frozen_cache" not in state and "_frozen_cache" in fast.backbone.__dict__


def test_feature_finiteness_precheck():
    """distance_from_features proves finiteness with one sum per map; NaN/Inf still raise naming the map, and
    huge finite maps (the sum overflows) still give a finite distance."""
    m = PerceptualMetric(AlexNetFeatures())
    with torch.no_grad():
        f0, f1 = m.features(_pair(2)[0]), m.features(_pair(2)[1])
    assert metric_mod._features_finite(f0) and metric_mod._features_finite(f1)
    for bad in (float("nan"), float("inf")):
        g = [f.clone() for f in f1]
        g[2][1, 5, 1, 1] = bad
        assert not metric_mod._features_finite(g)
        with pytest.raises(ValueError, match=r"fy\[2\] contains NaN or Inf"):
            m.distance_from_features(f0, g)
    huge = [f * 1e35 + 1e35 for f in f0]
    assert not metric_mod._features_finite(huge)  # overflowing sum: the op's exact scan decides
    assert torch.isfinite(m.distance_from_features(huge, f1)).all()


def test_train_mode_keeps_backbone_frozen():
    m = PerceptualMetric(_small_resnet())
    m.train()
    assert m.training and not m.backbone.training
    bn = m.backbone.bn1
    before = bn.running_mean.clone()
    with torch.no_grad():
        m(*_pair(2, 32, 32))
    assert torch.equal(bn.running_mean, before)


def test_input_validation():
    m = PerceptualMetric(AlexNetFeatures())
    x0, x1 = _pair(2)
    cases = [
        ((x0.numpy(), x1), TypeError, "x0: expected a torch.Tensor"),
        ((x0[0], x1[0]), ValueError, r"x0: expected shape \[B, 3, H, W\]"),
        ((torch.rand(2, 4, 64, 64), x1), ValueError, r"\[B, 3, H, W\]"),
        (((x0 * 255).to(torch.uint8), x1), TypeError, "floating"),
        ((x0, x1[:1]), ValueError, "same shape"),
        ((x0, x1.double()), TypeError, "same dtype"),
        ((x0[:, :, :20, :20], x1[:, :, :20, :20]), ValueError, "too small"),
        ((x0[:0], x1[:0]), ValueError, "empty"),
        ((x0 + 0.5, x1), ValueError, r"values must lie in \[0, 1\]"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            m(*args)
    bad = x1.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="x1: contains NaN"):
        m(x0, bad)
    bad[1, 0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        m.features(bad)
    # check_input=False skips the value checks but not the shape checks
    lax = PerceptualMetric(AlexNetFeatures(), check_input=False)
    with torch.no_grad():
        assert lax(x0 + 0.5, x1).shape == (2,)
    with pytest.raises(ValueError, match="shape"):
        lax(x0[0], x1[0])
    with pytest.raises(ValueError, match="multiples of the patch size"):
        PerceptualMetric(_small_vit())(*_pair(1, 36, 36))


def test_feature_validation():
    m = PerceptualMetric(AlexNetFeatures())
    f = m.features(_pair(1)[0])
    with pytest.raises(ValueError, match="5 feature maps"):
        m.distance_from_features(f[:3], f[:3])
    with pytest.raises(ValueError, match="same number"):
        m.distance_from_features(f, f[:4])
    with pytest.raises(TypeError, match="list of feature maps"):
        m.distance_from_features(f[0], f[0])
    with pytest.raises(TypeError, match="per_layer"):
        m.distance_from_features(f, f, per_layer=1)


def test_constructor_validation(tmp_path):
    with pytest.raises(ValueError, match="distance"):
        PerceptualMetric(AlexNetFeatures(), distance="l2")
    with pytest.raises(ValueError, match="only used with distance='lpips'"):
        PerceptualMetric(AlexNetFeatures(), distance="style", lin_weights="lpips")
    with pytest.raises(ValueError, match="lpips backbones"):
        PerceptualMetric(_small_resnet(), lin_weights="lpips")
    with pytest.raises(ValueError, match="unknown name"):
        PerceptualMetric("alexnet2")
    with pytest.raises(ValueError, match="distance_kwargs"):
        PerceptualMetric(AlexNetFeatures(), distance_kwargs={"backend": "torch"})
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        PerceptualMetric("alex", backbone_weights=tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="nolin.pth"):
        PerceptualMetric(AlexNetFeatures(), lin_weights=tmp_path / "nolin.pth")
    with pytest.warns(UserWarning, match="random weights"):
        PerceptualMetric("squeeze")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PerceptualMetric("squeeze", backbone_weights="random")


def test_backbone_weights_from_file_and_kwargs(tmp_path):
    src = ResNetFeatures(18, width=0.25)
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    m = PerceptualMetric("resnet18", backbone_weights=path, backbone_kwargs={"width": 0.25}, distance="meanpool")
    assert torch.equal(m.backbone.conv1.weight, src.conv1.weight)
    with pytest.raises(ValueError, match="shape mismatch"):
        PerceptualMetric("resnet18", backbone_weights=path)  # width 1 does not fit


def test_half_inputs_cast_to_metric_dtype():
    m = PerceptualMetric(_small_resnet())
    x0, x1 = _pair(2, 32, 32)
    with torch.no_grad():
        a = m(x0, x1)
        b = m(x0.half(), x1.half())
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(no_tf32):
    m = PerceptualMetric("alex", lin_weights="lpips", backbone_weights="random")
    x0, x1 = _pair(4)
    with torch.no_grad():
        ref = m(x0, x1, per_layer=True)
        mc = m.to("cuda")
        got = mc(x0.cuda(), x1.cuda(), per_layer=True)
        f = mc.features(torch.cat([x0, x1]).cuda())
        via = mc.distance_from_features([t[:4] for t in f], [t[4:] for t in f])
        with pytest.raises(ValueError, match="device"):
            mc(x0, x1)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(via.cpu(), ref.sum(1), rtol=1e-3, atol=1e-5)
    for distance in ("style", "meanpool"):
        m2 = PerceptualMetric("resnet18", distance=distance, backbone_weights="random", backbone_kwargs={"width": 0.5})
        with torch.no_grad():
            r = m2(x0, x1)
            g = m2.to("cuda")(x0.cuda(), x1.cuda())
        torch.testing.assert_close(g.cpu(), r, rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------------------ the default is LPIPS
@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_default_lin_weights_are_lpips(net):
    """PerceptualMetric(net) is LPIPS: the lin weights shipped in the lpips package, without being asked for;
    lin_weights=None is lpips' unweighted baseline; the other distances and backbones have none."""
    pytest.importorskip("lpips")
    from percept_fast.weights import load_lpips_lin_weights, lpips_lin_weights_path

    shipped = load_lpips_lin_weights(lpips_lin_weights_path(net))
    m = PerceptualMetric(net, backbone_weights="random")
    assert len(m.lin_weights) == len(shipped)
    for got, want in zip(m.lin_weights, shipped):
        assert torch.equal(got.detach(), want)
    sub = PerceptualMetric(net, layers=[0, 2], backbone_weights="random")  # a subset keeps the matching weights
    assert all(torch.equal(a.detach(), shipped[i]) for a, i in zip(sub.lin_weights, [0, 2]))
    assert len(PerceptualMetric(net, lin_weights=None, backbone_weights="random").lin_weights) == 0
    for distance in ("style", "meanpool"):
        assert len(PerceptualMetric(net, distance=distance, backbone_weights="random").lin_weights) == 0
    assert len(PerceptualMetric(_small_resnet()).lin_weights) == 0


def test_default_lin_weights_without_lpips_package_is_a_clear_error(monkeypatch):
    def missing(net, version="0.1"):
        raise FileNotFoundError("the 'lpips' package is not installed")

    monkeypatch.setattr(metric_mod, "lpips_lin_weights_path", missing)
    with pytest.raises(FileNotFoundError, match=r"lin_weights: the default 'auto'.*lin_weights=None"):
        PerceptualMetric("alex", backbone_weights="random")
    with pytest.raises(FileNotFoundError, match="not installed"):
        PerceptualMetric("alex", lin_weights="lpips", backbone_weights="random")
    assert len(PerceptualMetric("alex", lin_weights=None, backbone_weights="random").lin_weights) == 0


def test_spatial_maps():
    """spatial=True: lpips-style maps at the input size, each layer's map bilinearly upsampled (align_corners=False)
    and summed; per_layer stacks them; features + image_size give the same maps."""
    net = _small_resnet()
    g = torch.Generator().manual_seed(4)
    lin = [torch.rand(c, generator=g) for c in net.channels]
    m = PerceptualMetric(net, lin_weights=lin, spatial=True)
    x0, x1 = _pair(2, 32, 48)
    with torch.no_grad():
        maps = m(x0, x1)
        per = m(x0, x1, per_layer=True)
        f0, f1 = net(2 * x0 - 1), net(2 * x1 - 1)
        via = m.distance_from_features(m.features(x0), m.features(x1), image_size=(32, 48))
    want = 0
    for a, b, w in zip(f0, f1, lin):
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        d = ((na - nb) ** 2 * w.view(1, -1, 1, 1)).sum(1, keepdim=True)
        want = want + torch.nn.Upsample(size=(32, 48), mode="bilinear", align_corners=False)(d)
    assert maps.shape == (2, 1, 32, 48) and per.shape == (2, len(lin), 32, 48)
    torch.testing.assert_close(maps, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(per.sum(1, keepdim=True), maps, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(via, maps, rtol=0, atol=0)
    with pytest.raises(ValueError, match="image_size: required with spatial=True"):
        m.distance_from_features(m.features(x0), m.features(x1))
    with pytest.raises(ValueError, match="spatial: maps exist only for distance='lpips'"):
        PerceptualMetric(net, distance="style", spatial=True)
    with pytest.raises(TypeError, match="spatial: expected a bool"):
        PerceptualMetric(net, spatial=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial": True}, "use its argument spatial"),
        ({"weight": torch.ones(3)}, "use its argument lin_weights"),
        ({"backend": "torch"}, "use its argument backend"),
        ({"per_layer": True}, r"use its argument per_layer \(of forward"),
        ({"check_finite": False}, "use its argument check_input"),
        ({"return_per_layer": True}, r"not an option of the 'lpips' distance \(options: \('eps', 'normalize'\)\)"),
        ({"method": "diff"}, "not an option of the 'lpips' distance"),
    ],
)
def test_distance_kwargs_errors_name_real_arguments(kwargs, match):
    with pytest.raises(ValueError, match=r"distance_kwargs: .*" + match):
        PerceptualMetric(_small_resnet(), distance_kwargs=kwargs)


def test_distance_kwargs_reach_the_op():
    net = _small_resnet()
    x0, x1 = _pair(2, 32, 32)
    with torch.no_grad():
        a = PerceptualMetric(net, distance="style", distance_kwargs={"normalize": "hw", "method": "kernel"})(x0, x1)
        b = PerceptualMetric(net, distance="style", distance_kwargs={"normalize": "hw", "method": "diff"})(x0, x1)
        c = PerceptualMetric(net, distance="style")(x0, x1)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=0)
    assert not torch.allclose(a, c)


def test_cpu_autocast_is_honoured():
    """Under CPU autocast the backbone runs in bfloat16 (eagerly: the frozen float32 trunk would ignore autocast);
    the distance stays float32 and close to the float32 one."""
    m = PerceptualMetric("alex", backbone_weights="random", lin_weights=None)
    x0, x1 = _pair(2)
    with torch.no_grad():
        ref = m(x0, x1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = m.features(x0)
            got = m(x0, x1)
    assert all(f.dtype == torch.bfloat16 for f in feats)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=5e-2, atol=1e-3)
