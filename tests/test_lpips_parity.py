"""Exact parity with the lpips package (v0.1, alex / vgg / squeeze).

``lpips.LPIPS(net=..., pretrained=True, pnet_rand=True, version='0.1')`` has a randomly initialised
backbone and the linear-layer weights shipped in the package. Its backbone weights are copied into ours,
our metric reads the same shipped lin weights itself (by default, or ``lin_weights='lpips'``), and the
distances (total and per layer) must agree to 1e-5 on random images (1e-7 for the default metric). The lpips model is built with every network path
blocked (and a fresh, empty ``TORCH_HOME``), which checks that this configuration downloads nothing.
"""

from __future__ import annotations

import copy
import socket
import urllib.request
import warnings

import pytest
import torch

from percept_fast.metric import PerceptualMetric, perceptual_distance
from percept_fast.ops import available_backends
from percept_fast.weights import load_lpips_lin_weights, lpips_lin_weights_path

lpips = pytest.importorskip("lpips")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small inputs gain nothing from intra-op threads, and on a busy 2-core machine they cost a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


NETS = ["alex", "vgg", "squeeze"]
TOL = 1e-5


class _NetworkUsed(AssertionError):
    pass


@pytest.fixture(scope="module")
def offline_lpips(tmp_path_factory):
    """lpips models built with the network blocked; returns {net: (model, backbone state dict in torchvision keys)}."""
    home = tmp_path_factory.mktemp("torch_home")
    mp = pytest.MonkeyPatch()
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise _NetworkUsed(f"network access attempted: {args[:2]!r}")

    mp.setenv("TORCH_HOME", str(home))
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(urllib.request, "urlopen", refuse)
    mp.setattr(torch.hub, "load_state_dict_from_url", refuse)
    mp.setattr(torch.hub, "download_url_to_file", refuse)
    models = {}
    try:
        for net in NETS:
            torch.manual_seed(10 + NETS.index(net))
            with warnings.catch_warnings():  # torchvision's deprecation notes on lpips' `pretrained=False`
                warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
                m = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, version="0.1", verbose=False).eval()
            # lpips.net.slice<k>.<idx>.* holds torchvision's features[<idx>]
            sd = {}
            for k, v in m.net.state_dict().items():
                _, idx, rest = k.split(".", 2)
                sd[f"features.{idx}.{rest}"] = v.clone()
            models[net] = (m, sd)
    finally:
        mp.undo()
    assert attempts == [], attempts
    assert not any(home.rglob("*")), "lpips wrote into TORCH_HOME (a download cache)"
    return models


def _images(b=3, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)


def _backends():
    out = ["torch"]
    if "cpu" in available_backends("cpu"):
        out.append("cpu")
    return out


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("net", NETS)
def test_parity_with_lpips(offline_lpips, net, backend):
    ref_model, sd = offline_lpips[net]
    ours = PerceptualMetric(net, lin_weights="lpips", backbone_weights=sd, backend=backend)
    x0, x1 = _images()
    # a pair with a small perturbation as well (distances near 0 are where normalisation rounding shows)
    x1[0] = (x0[0] + 0.01 * torch.randn_like(x0[0])).clamp(0, 1)
    with torch.no_grad():
        ref, ref_layers = ref_model(x0, x1, retPerLayer=True, normalize=True)
        got = ours(x0, x1)
        got_layers = ours(x0, x1, per_layer=True)
    ref = ref.reshape(-1)
    ref_layers = torch.stack([r.reshape(-1) for r in ref_layers], dim=1)
    assert got.shape == ref.shape == (3,)
    assert got_layers.shape == ref_layers.shape == (3, len(ref_model.chns))
    assert (ref > 0).all()
    assert (got - ref).abs().max().item() <= TOL, (got, ref)
    assert (got_layers - ref_layers).abs().max().item() <= TOL
    # and lpips' default [-1, 1] input convention
    with torch.no_grad():
        ref_pm = ref_model(2 * x0 - 1, 2 * x1 - 1).reshape(-1)
        got_pm = PerceptualMetric(
            net, lin_weights="lpips", backbone_weights=sd, normalize_input=False, backend=backend
        )(2 * x0 - 1, 2 * x1 - 1)
    assert (got_pm - ref_pm).abs().max().item() <= TOL


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("net", NETS)
def test_default_metric_is_lpips(offline_lpips, net, backend):
    """``PerceptualMetric(net)`` with nothing but the trunk weights is ``lpips.LPIPS(net=net)``: distances and
    per-layer distances to 1e-7, and with ``spatial=True`` lpips' upsampled maps to 1e-6 (absolute; the distances
    are O(0.1), the maps O(1))."""
    ref_model, sd = offline_lpips[net]
    ref_spatial = copy.deepcopy(ref_model)
    ref_spatial.spatial = True  # lpips.LPIPS(spatial=True): what its forward reads
    x0, x1 = _images(3, 64, 48, seed=21)
    x1[0] = (x0[0] + 0.01 * torch.randn_like(x0[0])).clamp(0, 1)
    ours = PerceptualMetric(net, backbone_weights=sd, backend=backend)
    ours_spatial = PerceptualMetric(net, backbone_weights=sd, backend=backend, spatial=True)
    with torch.no_grad():
        ref, ref_layers = ref_model(x0, x1, retPerLayer=True, normalize=True)
        ref_map = ref_spatial(x0, x1, normalize=True)
        got, got_layers = ours(x0, x1), ours(x0, x1, per_layer=True)
        got_map = ours_spatial(x0, x1)
    ref_layers = torch.stack([r.reshape(-1) for r in ref_layers], dim=1)
    assert (got - ref.reshape(-1)).abs().max().item() <= 1e-7
    assert (got_layers - ref_layers).abs().max().item() <= 1e-7
    assert got_map.shape == ref_map.shape == (3, 1, 64, 48)
    assert (got_map - ref_map).abs().max().item() <= 1e-6


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("net", NETS)
def test_parity_frozen_trunk(offline_lpips, net, layout):
    """Gradient-free inference in either layout (channels_last weights and inputs: the score runner's CPU setup
    for vgg/squeeze) is served by the frozen trunk, and its per-layer distances equal lpips'."""
    ref_model, sd = offline_lpips[net]
    ours = PerceptualMetric(net, lin_weights="lpips", backbone_weights=sd)
    x0, x1 = _images(4, 64, 64, seed=11)
    with torch.inference_mode():
        _, ref_layers = ref_model(x0, x1, retPerLayer=True, normalize=True)
        if layout == "channels_last":
            ours.backbone.to(memory_format=torch.channels_last)
            x0, x1 = (x.contiguous(memory_format=torch.channels_last) for x in (x0, x1))
        got = ours(x0, x1, per_layer=True)
    assert ours.backbone.__dict__.get("_frozen_cache"), "the frozen trunk did not serve this call"
    ref_layers = torch.stack([r.reshape(-1) for r in ref_layers], dim=1)
    assert (got - ref_layers).abs().max().item() <= TOL


def test_parity_functional_and_features(offline_lpips):
    ref_model, sd = offline_lpips["alex"]
    x0, x1 = _images(2, 48, 80, seed=3)  # non-square
    with torch.no_grad():
        ref = ref_model(x0, x1, normalize=True).reshape(-1)
        got = perceptual_distance(x0, x1, "alex", lin_weights="lpips", backbone_weights=sd)
        m = PerceptualMetric("alex", lin_weights="lpips", backbone_weights=sd)
        f = m.features(torch.cat([x0, x1]))
        via_features = m.distance_from_features([t[:2] for t in f], [t[2:] for t in f])
    assert (got - ref).abs().max().item() <= TOL
    assert (via_features - ref).abs().max().item() <= TOL


def test_lin_weights_equal_lpips_modules(offline_lpips):
    for net in NETS:
        ref_model, _ = offline_lpips[net]
        ws = load_lpips_lin_weights(lpips_lin_weights_path(net))
        assert len(ws) == len(ref_model.lins)
        for w, lin in zip(ws, ref_model.lins):
            assert torch.equal(w, lin.model[-1].weight.detach().reshape(-1))


def test_parity_layer_subset(offline_lpips):
    """layers=[...] with the shipped weights keeps the matching lin layers: equals lpips' per-layer columns."""
    ref_model, sd = offline_lpips["squeeze"]
    x0, x1 = _images(2, seed=5)
    m = PerceptualMetric("squeeze", layers=[1, "relu4", 6], lin_weights="lpips", backbone_weights=sd)
    with torch.no_grad():
        _, ref_layers = ref_model(x0, x1, retPerLayer=True, normalize=True)
        got = m(x0, x1, per_layer=True)
    ref = torch.stack([ref_layers[i].reshape(-1) for i in (1, 3, 6)], dim=1)
    assert (got - ref).abs().max().item() <= TOL


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("net", NETS)
def test_parity_with_lpips_cuda(offline_lpips, net, no_tf32):
    """On the GPU (both models on CUDA, TF32 off; backend='auto' picks the CUDA kernel when built)."""
    ref_model, sd = offline_lpips[net]
    ref_model = copy.deepcopy(ref_model).cuda()
    x0, x1 = (t.cuda() for t in _images(4, 64, 64, seed=7))
    for backend in ["auto"] + [b for b in ("cuda", "triton") if b in available_backends("cuda")]:
        ours = PerceptualMetric(net, lin_weights="lpips", backbone_weights=sd, backend=backend).cuda()
        with torch.no_grad():
            ref, ref_layers = ref_model(x0, x1, retPerLayer=True, normalize=True)
            got = ours(x0, x1, per_layer=True)
        ref_layers = torch.stack([r.reshape(-1) for r in ref_layers], dim=1)
        assert (got - ref_layers).abs().max().item() <= TOL, backend
        assert (got.sum(1) - ref.reshape(-1)).abs().max().item() <= TOL, backend
