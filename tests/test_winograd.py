"""Winograd F(2x2, 3x3) and F(3x3, 3x3) convolution (percept_fast/backbones/winograd.py, csrc/percept_fast/winograd_cpu.cpp) against
F.conv2d in float64 and against its own plain-PyTorch transcription, over random shapes, paddings, odd sizes, bias,
ReLU and input layouts; its input-gradient convolution against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from percept_fast.backbones.winograd import Winograd3x3, input_grad_conv, suits, tile_size, winograd_reference

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN")


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c_in=st.integers(1, 40),
    c_out=st.integers(1, 40),
    h=st.integers(1, 13),
    w=st.integers(1, 13),
    pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    bias=st.booleans(),
    relu=st.booleans(),
    channels_last=st.booleans(),
    m=st.sampled_from([2, 3]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_conv2d(n, c_in, c_out, h, w, pad, bias, relu, channels_last, m, seed):
    if h + 2 * pad[0] < 3 or w + 2 * pad[1] < 3:
        return  # no output
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, 3, 3, generator=g)
    b = torch.randn(c_out, generator=g) if bias else None
    ref = F.conv2d(x.double(), weight.double(), None if b is None else b.double(), padding=pad)
    if relu:
        ref = ref.relu()
    y = Winograd3x3(weight, pad, x.shape, m=m, chunk_tiles=int(seed % 7) + 1)(x, b, relu=relu)  # (chunks: 1+ rows)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    scale = float(ref.abs().max()) if ref.abs().max() > 0 else 1.0
    assert float((y.double() - ref).abs().max()) <= 4e-6 * scale * (1 + c_in) ** 0.5


@pytest.mark.parametrize("m", [2, 3])
def test_the_plain_pytorch_transcription_is_the_convolution(m):
    g = torch.Generator().manual_seed(0)
    for shape, pad in (((2, 5, 7, 6), (1, 1)), ((1, 3, 4, 9), (0, 2)), ((2, 4, 3, 3), (2, 0)), ((1, 2, 5, 8), (1, 0))):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        weight = torch.randn(6, shape[1], 3, 3, generator=g, dtype=torch.float64)
        ref = F.conv2d(x, weight, padding=pad)
        assert _rel_err(winograd_reference(x, weight, pad, m=m), ref) < 1e-13
        y = Winograd3x3(weight.float(), pad, shape, m=m)(x.float())
        assert _rel_err(y, winograd_reference(x, weight, pad, m=m)) < 1e-5


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("shape", [(4, 128, 16, 16), (2, 256, 8, 8), (3, 130, 9, 11), (4, 192, 3, 3)])
def test_backbone_sized_layers(shape, m):
    """Layers of the size the packed trunk sends here (VGG at 64-224 px): error well within float32's reach."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g).relu()  # (post-ReLU features, as in a trunk)
    weight = torch.randn(shape[1], shape[1], 3, 3, generator=g) * (2.0 / (9 * shape[1])) ** 0.5
    b = torch.randn(shape[1], generator=g) * 0.1
    ref = F.conv2d(x.double(), weight.double(), b.double(), padding=1)
    y = Winograd3x3(weight, (1, 1), shape, m=m)(x, b)
    direct = F.conv2d(x, weight, b, padding=1)
    assert _rel_err(y, ref) < 1e-5
    assert _rel_err(y, ref) < 50 * max(_rel_err(direct, ref), 1e-7)  # the direct convolution's order (16-21x seen)


@pytest.mark.parametrize("m", [2, 3])
def test_input_grad_conv_is_autograds_input_gradient(m):
    g = torch.Generator().manual_seed(2)
    for pad in ((1, 1), (0, 2), (2, 0)):
        x = torch.randn(2, 9, 8, 7, dtype=torch.float64, generator=g, requires_grad=True)
        weight = torch.randn(5, 9, 3, 3, dtype=torch.float64, generator=g)
        y = F.conv2d(x, weight, padding=pad)
        grad_out = torch.randn(y.shape, dtype=torch.float64, generator=g)
        (ref,) = torch.autograd.grad(y, x, grad_out)
        w_t, pad_t = input_grad_conv(weight, pad)
        assert _rel_err(F.conv2d(grad_out, w_t, padding=pad_t), ref) < 1e-13
        got = Winograd3x3(w_t.float(), pad_t, grad_out.shape, m=m)(grad_out.float())
        assert _rel_err(got, ref) < 1e-5


def test_bad_input_is_refused_by_name():
    conv = Winograd3x3(torch.randn(4, 3, 3, 3), (1, 1), (1, 3, 8, 8))
    with pytest.raises(ValueError, match="x: expected a CPU float32 tensor of shape"):
        conv(torch.randn(1, 3, 8, 9))
    with pytest.raises(ValueError, match="x: expected"):
        conv(torch.randn(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="bias: expected a CPU float32"):
        conv(torch.randn(1, 3, 8, 8), torch.randn(5))
    with pytest.raises(ValueError, match="weight: expected"):
        Winograd3x3(torch.randn(4, 3, 5, 5), (1, 1), (1, 3, 8, 8))
    with pytest.raises(ValueError, match="in_shape"):
        Winograd3x3(torch.randn(4, 3, 3, 3), (0, 0), (1, 3, 2, 8))
    with pytest.raises(ValueError, match="bias: expected a CPU float32"):
        conv(torch.randn(1, 3, 8, 8), torch.full((8,), 1.0)[::2].to("meta"))
    with pytest.raises(ValueError, match="weight: expected a CPU float32/float64"):
        Winograd3x3(torch.randn(4, 3, 3, 3).long(), (1, 1), (1, 3, 8, 8))
    with pytest.raises(ValueError, match="padding: expected >= 0"):
        Winograd3x3(torch.randn(4, 3, 3, 3), (-1, 1), (1, 3, 8, 8))
    with pytest.raises(ValueError, match="x: requires grad"):
        conv(torch.randn(1, 3, 8, 8, requires_grad=True))
    with pytest.raises(ValueError, match="m: expected 2 or 3"):
        Winograd3x3(torch.randn(4, 3, 3, 3), (1, 1), (1, 3, 8, 8), m=4)


def test_a_strided_bias_is_read_correctly():
    """(A review found the contiguous copy of a strided bias freed before the C++ read it.)"""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 64, 9, 9, generator=g)
    weight = torch.randn(128, 64, 3, 3, generator=g)
    bias = torch.full((256,), 100.0)[::2]
    for m in (2, 3):
        y = Winograd3x3(weight, (1, 1), x.shape, m=m)(x, bias)
        ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
        assert _rel_err(y, ref) < 1e-5


def test_which_layers_qualify():
    assert suits(torch.nn.Conv2d(8, 8, 3, padding=1))
    assert not suits(torch.nn.Conv2d(8, 8, 3, padding=1, stride=2))
    assert not suits(torch.nn.Conv2d(8, 8, 5, padding=2))
    assert not suits(torch.nn.Conv2d(8, 8, 3, padding=1, groups=2))
    assert not suits(torch.nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"))
    assert not suits(torch.nn.Conv2d(8, 8, 3, padding="same"))
    assert tile_size(3, 64, (64, 64)) is None and tile_size(32, 32, (32, 32)) is None  # too few channels
    assert tile_size(256, 384, (3, 3)) == 3  # one F(3, 3) tile, not four F(2, 3) tiles with 7 of 16 outputs cropped
    assert tile_size(512, 512, (2, 2)) == 2 and tile_size(512, 512, (4, 4)) == 2
