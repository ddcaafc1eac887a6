"""Backbones: torchvision state dicts load by key and the taps equal torchvision's own forward."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from percept_fast.backbones import (
    AlexNetFeatures,
    ResNetFeatures,
    SqueezeNet11Features,
    VGG16Features,
    ViTFeatures,
    build_backbone,
    resnet_blocks,
)
from percept_fast.weights import load_into, load_lpips_lin_weights, load_state_dict_file, lpips_lin_weights_path

tvm = pytest.importorskip("torchvision.models")
from torchvision.models.vision_transformer import VisionTransformer  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small inputs gain nothing from intra-op threads, and on a busy 2-core machine they cost a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _images(b=2, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


# ----------------------------------------------------------------------------- lpips trunks
LPIPS_TRUNKS = [
    (AlexNetFeatures, tvm.alexnet, [1, 4, 7, 9, 11], [64, 192, 384, 256, 256]),
    (VGG16Features, tvm.vgg16, [3, 8, 15, 22, 29], [64, 128, 256, 512, 512]),
    (SqueezeNet11Features, tvm.squeezenet1_1, [1, 4, 7, 9, 10, 11, 12], [64, 128, 256, 384, 384, 512, 512]),
]


_TV_CACHE: dict = {}


def _tv_model(ctor):
    """A torchvision model whose ``features`` have torchvision's own (random) initialisation; the large,
    unused classifier stays on the meta device (not allocated), which keeps the test fast."""
    if ctor not in _TV_CACHE:
        torch.manual_seed(0)
        with torch.device("meta"):
            m = ctor()
        m.features.to_empty(device="cpu")
        for mod in m.features.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.reset_parameters()
        _TV_CACHE[ctor] = m.eval()
    return _TV_CACHE[ctor]


def _small_head(sd):
    """The torchvision state dict with tiny stand-ins for its classifier tensors: same keys."""
    return {k: (torch.zeros(2) if k.startswith("classifier.") else v) for k, v in sd.items()}


@pytest.mark.parametrize("cls,ctor,ends,channels", LPIPS_TRUNKS, ids=["alex", "vgg", "squeeze"])
def test_lpips_trunk_matches_torchvision(tmp_path, cls, ctor, ends, channels):
    tv = _tv_model(ctor)
    path = tmp_path / "tv.pth"
    torch.save(_small_head(tv.state_dict()), path)  # classifier.* keys are ignored by the feature extractor
    ours = cls().load_weights(path).eval()
    assert ours.channels == channels
    x = _images()
    with torch.no_grad():
        feats = ours(x)
        # torchvision's own forward, sliced where lpips slices it, after lpips' ScalingLayer
        shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
        scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
        h = (x - shift) / scale
        ref = []
        for i, layer in enumerate(tv.features):
            h = layer(h)
            if i in ends:
                ref.append(h)
            if i == ends[-1]:
                break
    assert len(feats) == len(ref) == len(channels)
    for f, r, c in zip(feats, ref, channels):
        assert f.shape == r.shape and f.shape[1] == c
        torch.testing.assert_close(f, r, rtol=0, atol=0)
    # a subset of taps stops early and returns the same maps
    with torch.no_grad():
        sub = ours(x, [0, 2])
    torch.testing.assert_close(sub[1], feats[2], rtol=0, atol=0)


def test_lpips_trunk_state_dict_keys_are_torchvision_features():
    for cls, ctor, _, _ in LPIPS_TRUNKS:
        tv_keys = {k for k in _tv_model(ctor).state_dict() if k.startswith("features.")}
        assert set(cls().state_dict()) == tv_keys


# ----------------------------------------------------------------------------------- ResNet
def _tv_resnet_taps(m, x):
    h = m.relu(m.bn1(m.conv1(x)))
    out = [h]
    h = m.maxpool(h)
    for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
        h = layer(h)
        out.append(h)
    return out


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext_small"])
def test_resnet_matches_torchvision(tmp_path, name):
    torch.manual_seed(0)
    if name == "resnext_small":  # grouped bottlenecks (the resnext / wide_resnet code path), kept small
        from torchvision.models.resnet import Bottleneck, ResNet

        tv = ResNet(Bottleneck, [1, 2, 1, 1], groups=4, width_per_group=8).eval()
    else:
        tv = getattr(tvm, name)().eval()
    _randomise_bn(tv)
    if name == "resnet18":  # through a file; the larger ones as an in-memory state dict
        weights = tmp_path / f"{name}.pth"
        torch.save(tv.state_dict(), weights)
    else:
        weights = tv.state_dict()
    if name == "resnext_small":
        ours = ResNetFeatures(blocks=[1, 2, 1, 1], block="bottleneck", groups=4, width_per_group=8)
        ours = ours.load_weights(weights).eval()
    else:
        ours = build_backbone(name, weights=weights).eval()
    x = _images(2, 32, 32)
    with torch.no_grad():
        feats = ours(x)
        ref = _tv_resnet_taps(tv, ours.scale_input(x))
    assert ours.tap_names == ["stem", "layer1", "layer2", "layer3", "layer4"]
    for f, r, c in zip(feats, ref, ours.channels):
        assert f.shape[1] == c
        torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet34", "resnet152", "wide_resnet50_2", "resnext101_32x8d", "resnext101_64x4d"])
def test_resnet_variant_keys_match_torchvision(name):
    # every key and shape of torchvision's model (minus fc) - built on the meta device, nothing is allocated
    with torch.device("meta"):
        tv = {k: tuple(v.shape) for k, v in getattr(tvm, name)().state_dict().items() if not k.startswith("fc.")}
        ours = {k: tuple(v.shape) for k, v in build_backbone(name).state_dict().items()}
    assert ours == tv


@pytest.mark.parametrize(
    "depth,width,blocks,kind",
    [
        (6, 1.0, [1, 1], "basic"),
        (10, 1.0, [1, 1, 1, 1], "basic"),
        (18, 0.5, [2, 2, 2, 2], "basic"),
        (26, 0.5, [2, 3, 5, 2], "basic"),
        (50, 0.25, [3, 4, 6, 3], "bottleneck"),
        (101, 0.125, [3, 4, 23, 3], "bottleneck"),
    ],
)
def test_resnet_depths_forward(depth, width, blocks, kind):
    torch.manual_seed(0)
    net = ResNetFeatures(depth, width=width).eval()
    assert net.blocks == blocks and net.block_type == kind
    exp = 1 if kind == "basic" else 4
    base = int(round(64 * width))
    assert net.channels == [base] + [base * 2**i * exp for i in range(len(blocks))]
    # the number of convolutions on the main path + stem + classifier is the depth
    convs = sum(1 for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and "downsample" not in n)
    assert convs + 1 == depth
    with torch.no_grad():
        feats = net(_images(1, 32, 32))
    assert len(feats) == len(blocks) + 1
    for i, (f, c) in enumerate(zip(feats, net.channels)):
        assert f.shape == (1, c, 32 // 2 ** max(1, i + (i > 0)), 32 // 2 ** max(1, i + (i > 0)))
        assert torch.isfinite(f).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(6, 400))
def test_resnet_depth_rule(depth):
    per = 2 if depth < 50 else 3
    if (depth - 2) % per:
        with pytest.raises(ValueError, match="nearest valid depths"):
            resnet_blocks(depth)
        return
    kind, blocks = resnet_blocks(depth)
    assert kind == ("basic" if depth < 50 else "bottleneck")
    assert all(b >= 1 for b in blocks) and 1 <= len(blocks) <= 4
    assert 2 + per * sum(blocks) == depth


def test_resnet_canonical_tables():
    # torchvision's definitions (and ResNet-200 of the original paper)
    assert resnet_blocks(18) == ("basic", [2, 2, 2, 2])
    assert resnet_blocks(34) == ("basic", [3, 4, 6, 3])
    assert resnet_blocks(152) == ("bottleneck", [3, 8, 36, 3])
    assert resnet_blocks(200) == ("bottleneck", [3, 24, 36, 3])
    with pytest.raises(ValueError, match="depth"):
        resnet_blocks(4)
    with pytest.raises(TypeError):
        resnet_blocks(18.0)


# -------------------------------------------------------------------------------------- ViT
def _tv_vit(image_size, patch, layers, heads, dim, mlp):
    torch.manual_seed(0)
    m = VisionTransformer(image_size, patch, layers, heads, dim, mlp).eval()
    with torch.no_grad():  # torchvision zero-initialises some of these; make them matter
        m.class_token.normal_()
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return m


def _tv_vit_taps(m, x, taps):
    got = {}
    hooks = [m.encoder.layers[i].register_forward_hook(lambda mod, i_, o, k=i: got.__setitem__(k, o)) for i in taps]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return [got[i] for i in taps]


def _to_timm(sd):
    """torchvision ViT keys -> timm's VisionTransformer keys (written out by hand from timm's names)."""
    out = {}
    for k, v in sd.items():
        if k == "class_token":
            out["cls_token"] = v
        elif k == "encoder.pos_embedding":
            out["pos_embed"] = v
        elif k.startswith("conv_proj."):
            out["patch_embed.proj." + k.split(".", 1)[1]] = v
        elif k.startswith("encoder.ln."):
            out["norm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("heads.head."):
            out["head." + k.rsplit(".", 1)[1]] = v
        else:
            i, rest = k[len("encoder.layers.encoder_layer_") :].split(".", 1)
            rest = {
                "ln_1.weight": "norm1.weight",
                "ln_1.bias": "norm1.bias",
                "self_attention.in_proj_weight": "attn.qkv.weight",
                "self_attention.in_proj_bias": "attn.qkv.bias",
                "self_attention.out_proj.weight": "attn.proj.weight",
                "self_attention.out_proj.bias": "attn.proj.bias",
                "ln_2.weight": "norm2.weight",
                "ln_2.bias": "norm2.bias",
                "mlp.0.weight": "mlp.fc1.weight",
                "mlp.0.bias": "mlp.fc1.bias",
                "mlp.3.weight": "mlp.fc2.weight",
                "mlp.3.bias": "mlp.fc2.bias",
            }[rest]
            out[f"blocks.{i}.{rest}"] = v
    return out


VIT_CONFIGS = [
    # image, patch, depth, heads, dim, mlp, taps
    (32, 8, 3, 2, 32, 64, [0, 2]),
    (35, 7, 5, 5, 60, 100, [1, 2, 4]),
    (24, 3, 2, 1, 12, 20, None),
]


@pytest.mark.parametrize("fmt", ["torchvision", "timm"])
@pytest.mark.parametrize("cfg", VIT_CONFIGS, ids=lambda c: f"p{c[1]}d{c[4]}")
def test_vit_matches_torchvision(tmp_path, cfg, fmt):
    image, patch, depth, heads, dim, mlp, taps = cfg
    tv = _tv_vit(image, patch, depth, heads, dim, mlp)
    sd = tv.state_dict()
    if fmt == "timm":
        sd = _to_timm(sd)
        assert not any(k.startswith("encoder.") for k in sd)
    path = tmp_path / "vit.pt"
    torch.save(sd, path)
    ours = ViTFeatures(patch, dim, depth, heads, mlp, image_size=image, taps=taps).load_weights(path).eval()
    taps = ours.block_taps
    assert taps == (taps if cfg[6] is None else cfg[6])
    x = _images(2, image, image)
    with torch.no_grad():
        feats = ours(x)
    ref = _tv_vit_taps(tv, ours.scale_input(x), taps)
    g = image // patch
    for f, r in zip(feats, ref):
        assert f.shape == (2, dim, g, g)
        # drop the class token, tokens in row-major order -> [B, C, H/p, W/p]
        torch.testing.assert_close(f, r[:, 1:].transpose(1, 2).reshape(2, dim, g, g), rtol=1e-4, atol=1e-5)


def test_vit_other_sizes_and_errors():
    net = ViTFeatures(8, 32, 2, 4, image_size=32, taps=[1]).eval()
    with torch.no_grad():
        (f,) = net(_images(1, 48, 24))  # resampled position embeddings
    assert f.shape == (1, 32, 6, 3) and torch.isfinite(f).all()
    with pytest.raises(ValueError, match="multiples of the patch size"):
        net(_images(1, 30, 32))
    with pytest.raises(ValueError, match="divisible"):
        ViTFeatures(8, 30, 2, 4)
    with pytest.raises(ValueError, match="taps"):
        ViTFeatures(8, 32, 2, 4, taps=[2])
    nocls = ViTFeatures(4, 16, 2, 2, image_size=16, class_token=False).eval()
    assert nocls.encoder.pos_embedding.shape == (1, 16, 16)
    with torch.no_grad():
        assert nocls(_images(1, 16, 16))[-1].shape == (1, 16, 4, 4)


def test_vit_preset_keys_match_torchvision():
    # key names and shapes of the full-size preset equal torchvision's vit_b_32 (minus the head / final norm)
    with torch.device("meta"):
        tv = {k: tuple(v.shape) for k, v in tvm.vit_b_32().state_dict().items()}
        ours = {k: tuple(v.shape) for k, v in build_backbone("vit_b_32").state_dict().items()}
    assert ours == {k: s for k, s in tv.items() if not k.startswith(("heads.", "encoder.ln."))}


# ---------------------------------------------------------------------------- weight loading
def test_load_errors_name_path_and_keys(tmp_path):
    net = AlexNetFeatures()
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        net.load_weights(tmp_path / "nope.pth")
    sd = net.state_dict()
    bad = dict(sd)
    del bad["features.3.weight"]
    bad["features.99.weight"] = torch.zeros(1)
    p = tmp_path / "bad.pth"
    torch.save(bad, p)
    with pytest.raises(ValueError, match="bad.pth") as e:
        net.load_weights(p)
    assert "features.3.weight" in str(e.value) and "features.99.weight" in str(e.value)
    wrong = dict(sd)
    wrong["features.0.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(wrong, p)
    with pytest.raises(ValueError, match="shape mismatch"):
        net.load_weights(p)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_state_dict_file(tmp_path / "junk.pth")


def test_load_unwraps_containers(tmp_path):
    src = SqueezeNet11Features()
    p = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, p)
    dst = SqueezeNet11Features().load_weights(p)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def _write_safetensors(path, tensors):
    """A safetensors file written by hand from the format's spec (8-byte LE header size, JSON, LE data)."""
    import json
    import struct

    names = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k, t in tensors.items():
        b = t.detach().contiguous().numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_safetensors(tmp_path):
    src = AlexNetFeatures()
    p = tmp_path / "w.safetensors"
    _write_safetensors(p, src.state_dict())
    dst = AlexNetFeatures().load_weights(p)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    odd = {"a": torch.arange(6, dtype=torch.int64).reshape(2, 3), "h": torch.randn(3).half(), "e": torch.zeros(0, 2)}
    _write_safetensors(p, odd)
    got = load_state_dict_file(p)
    for k, v in odd.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v)
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(ValueError, match="w.safetensors"):
        load_state_dict_file(p)
    try:  # the reference implementation reads our hand-written file identically, when installed
        from safetensors.torch import load_file
    except ImportError:
        return
    _write_safetensors(p, odd)
    ref = load_file(str(p))
    assert all(torch.equal(ref[k], odd[k]) for k in odd)


@pytest.mark.parametrize("net,n", [("alex", 5), ("vgg", 5), ("squeeze", 7)])
def test_lpips_lin_weights_shipped(net, n):
    path = lpips_lin_weights_path(net)
    ws = load_lpips_lin_weights(path, channels=build_backbone(net).channels)
    assert len(ws) == n
    raw = torch.load(path, map_location="cpu", weights_only=True)
    for i, w in enumerate(ws):
        assert torch.equal(w, raw[f"lin{i}.model.1.weight"].reshape(-1))
        assert (w >= 0).all()  # lpips clamps its lin weights to be non-negative


def test_lpips_lin_weights_errors(tmp_path):
    p = tmp_path / "lin.pth"
    torch.save({"lin0.model.1.weight": torch.ones(1, 4, 1, 1), "lin2.model.1.weight": torch.ones(1, 4, 1, 1)}, p)
    with pytest.raises(ValueError, match="lin1"):
        load_lpips_lin_weights(p)
    torch.save({"lin0.model.0.weight": torch.ones(1, 4, 1, 1)}, p)  # saved without dropout: index 0
    assert load_lpips_lin_weights(p)[0].shape == (4,)
    with pytest.raises(ValueError, match="channel"):
        load_lpips_lin_weights(p, channels=[5])
    torch.save({"lin0.model.1.weight": torch.ones(4)}, p)
    with pytest.raises(ValueError, match=r"\[1, C, 1, 1\]"):
        load_lpips_lin_weights(p)
    torch.save({"other": torch.ones(4)}, p)
    with pytest.raises(ValueError, match="no LPIPS"):
        load_lpips_lin_weights(p)
    with pytest.raises(ValueError, match="lpips backbones|ships"):
        lpips_lin_weights_path("resnet18")


def test_load_into_plain_module():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    load_into(b, a.state_dict())
    assert torch.equal(a.weight, b.weight)
    with pytest.raises(ValueError, match="missing keys: bias"):
        load_into(b, {"weight": a.weight})


def test_tap_selection():
    net = AlexNetFeatures()
    assert net.resolve_taps(None) == [0, 1, 2, 3, 4]
    assert net.resolve_taps(["relu2", -1]) == [1, 4]
    for bad, exc in (
        ([5], ValueError),
        (["relu9"], ValueError),
        ([2, 1], ValueError),
        ([1, 1], ValueError),
        ([1.5], TypeError),
    ):
        with pytest.raises(exc, match="layers"):
            net.resolve_taps(bad)
    with pytest.raises(ValueError, match="unknown name"):
        build_backbone("resnet_foo")


@pytest.mark.parametrize("stats", ["imagenet", "half", "none"])
def test_unit_input_scaling_equals_two_steps(stats):
    """scale_input(x, unit_input=True) folds lpips' 2x - 1 into the ScalingLayer (one multiply-add): equal to the
    two steps up to float32 rounding (float64 rounding in float64), keeps the layout, and is differentiable."""
    kw = {"imagenet": {}, "half": {"input_mean": (0.5,) * 3, "input_std": (0.5,) * 3}, "none": {}}[stats]
    net = AlexNetFeatures(None, None) if stats == "none" else AlexNetFeatures(**kw)
    x = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net.scale_input(x, unit_input=True), net.scale_input(2 * x - 1), rtol=0, atol=1e-6)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert net.scale_input(cl, unit_input=True).is_contiguous(memory_format=torch.channels_last)
    for unit in (True, False):  # memory_format= writes the result in another layout, same values
        want = net.scale_input(x, unit)
        for src, fmt in ((x, torch.channels_last), (cl, torch.contiguous_format), (x[:, :, ::2], torch.channels_last)):
            got = net.scale_input(src, unit, memory_format=fmt)
            assert got.is_contiguous(memory_format=fmt)
            torch.testing.assert_close(got, net.scale_input(src, unit), rtol=0, atol=0)
        xg = x.clone().requires_grad_(True)
        got = net.scale_input(xg, unit, memory_format=torch.channels_last)  # autograd: no out= write
        assert got.is_contiguous(memory_format=torch.channels_last)
        got.sum().backward()
        assert xg.grad is not None
        torch.testing.assert_close(got.detach(), want, rtol=0, atol=0)
    net64, x64 = net.double(), x.double().requires_grad_(True)
    got = net64.scale_input(x64, unit_input=True)
    torch.testing.assert_close(got, net64.scale_input(2 * x64 - 1), rtol=0, atol=1e-14)
    got.sum().backward()
    slope = 2.0 if net64.scale is None else 2.0 / net64.scale
    torch.testing.assert_close(x64.grad, torch.ones_like(x64) * slope)
    x = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(1))
    net = net.float()
    with torch.no_grad():  # and the whole forward
        a = net(x, unit_input=True)
        b = net(2 * x - 1)
    for fa, fb in zip(a, b):
        torch.testing.assert_close(fa, fb, rtol=1e-5, atol=1e-6)


def test_frozen_format_of_lpips_trunks():
    """The frozen copy's memory format per trunk (measured, see backbones.base): oneDNN-prepacked weights with
    channels_last activations for alex and vgg, channels_last for squeeze."""
    assert AlexNetFeatures.frozen_format == VGG16Features.frozen_format == "packed"
    assert SqueezeNet11Features.frozen_format == "channels_last"


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other has NaN."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(
    "pool",
    [
        torch.nn.MaxPool2d(3, stride=2),
        torch.nn.MaxPool2d(3, stride=2, padding=1),
        torch.nn.MaxPool2d(3, stride=2, ceil_mode=True),
        torch.nn.MaxPool2d(2),
        torch.nn.MaxPool2d(3, stride=1, padding=1, dilation=2),
    ],
    ids=str,
)
def test_max_pool_helper_equals_the_module(dtype, pool):
    """backbones.max_pool (channels_last on CPU without autograd) gives the module's values bit for bit, in NCHW;
    with a gradient to record it is the module itself (and the gradient equals autograd's)."""
    from percept_fast.backbones.base import max_pool

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 17, 14, generator=g).clamp_min(0).to(dtype)  # tied zeros, as after a ReLU
    x[1, 2, 4, 5] = float("nan")
    x[2, 0, :3, :3] = 1.5  # tied positive values
    seen = []  # the layout the pool ran on: channels_last without autograd, the input's own with it
    hook = pool.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].is_contiguous()))
    with torch.no_grad():
        got = max_pool(pool, x)
    want = pool(x)
    hook.remove()
    assert seen == [False, True]
    assert got.is_contiguous() and got.dtype == dtype
    assert _same_values(got, want)
    assert _same_values(max_pool(pool, x.transpose(2, 3)), pool(x.transpose(2, 3)))  # a non-contiguous input
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    go = torch.randn(want.shape, generator=g).to(dtype)
    max_pool(pool, a).backward(go)
    pool(b).backward(go)
    assert _same_values(a.grad, b.grad)
