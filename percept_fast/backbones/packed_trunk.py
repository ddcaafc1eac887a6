"""A frozen Conv2d / ReLU / MaxPool2d trunk on CPU with oneDNN-prepacked weights, channels_last activations.

What a perceptual loss runs on CPU float32 (:mod:`percept_fast.backbones.frozen_grad`): the forward of the
prediction's and the target's trunks without autograd, and the prediction's input gradient (a transposed
convolution per convolution). Through ``F.conv2d`` / ``F.conv_transpose2d`` oneDNN reorders the weight into its
blocked layout at every call (a transient copy of the weight each time: at alex 64 px those copies are most of the
step's peak memory) and runs the ReLU as a separate pass. Here each weight is reordered once per input shape
(``torch.ops.mkldnn._reorder_convolution_weight`` / ``_reorder_convolution_transpose_weight``, what inductor's CPU
convolution fusion packs) and a convolution followed by a ReLU is one oneDNN call with a fused ReLU
(``mkldnn._convolution_pointwise(..., 'relu')``). Max-pools run ATen's channels_last kernel.

The values are those of the eager ops (the same oneDNN convolutions: compared exactly in
``tests/test_metric_loss.py``); the packed weights are copies, rebuilt when a parameter changes (the owner's
cache key) or for a new input shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .frozen_grad import _pool_out

__all__ = ["PackedTrunk", "packed_trunk_available"]


def packed_trunk_available(x: torch.Tensor, layers: Sequence[nn.Module]) -> bool:
    """True when :class:`PackedTrunk` can serve ``x`` through ``layers`` (CPU float32 4-d, oneDNN present, plain
    convolutions: zeros padding, no string padding)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or not torch.backends.mkldnn.is_available():
        return False
    for layer in layers:
        p = next(iter(layer.parameters()), None)
        if p is not None and (p.device.type != "cpu" or p.dtype != torch.float32):
            return False
        if isinstance(layer, nn.Conv2d) and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
            return False
    return True


def _pair(v) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


class PackedTrunk:
    """``layers`` (Conv2d / ReLU / MaxPool2d, as :func:`frozen_grad.supports_input_grad_trunk`) packed for inputs of
    shape ``in_shape`` ``[B, C, H, W]``.

    ``forward(x, ends)``: the outputs of ``layers[e]`` for ``e`` in ``ends`` (channels_last), without autograd.
    ``conv_input_grad(i, g)``: dL/d(input) of convolution ``layers[i]`` for dL/d(output) ``g`` (channels_last)."""

    def __init__(self, layers: Sequence[nn.Module], in_shape: Sequence[int]):
        self.layers = list(layers)
        self.in_shape = tuple(in_shape)
        self.fwd: dict[int, torch.Tensor] = {}
        self.bwd: dict[int, tuple[torch.Tensor, list[int]]] = {}
        self._bwd_args: dict[int, tuple[list[int], list[int]]] = {}
        mk = torch.ops.mkldnn
        shape = list(in_shape)
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                if isinstance(layer, nn.Conv2d):
                    k, s = _pair(layer.kernel_size), _pair(layer.stride)
                    p, d = _pair(layer.padding), _pair(layer.dilation)
                    w = layer.weight.detach()
                    out_hw = [(shape[2 + j] + 2 * p[j] - d[j] * (k[j] - 1) - 1) // s[j] + 1 for j in range(2)]
                    out_shape = [shape[0], layer.out_channels, *out_hw]
                    # the output padding that restores this input size in the transposed convolution
                    out_pad = [
                        shape[2 + j] - ((out_hw[j] - 1) * s[j] - 2 * p[j] + d[j] * (k[j] - 1) + 1) for j in range(2)
                    ]
                    self.fwd[i] = mk._reorder_convolution_weight(w, p, s, d, layer.groups, shape)
                    self._bwd_args[i] = (out_pad, out_shape)  # packed at the first backward (inference needs none)
                    shape = out_shape
                elif isinstance(layer, nn.MaxPool2d):
                    shape = [shape[0], shape[1], *_pool_out(tuple(shape[2:]), layer)]

    def forward(self, x: torch.Tensor, ends: Sequence[int]) -> list[torch.Tensor]:
        mk = torch.ops.mkldnn
        ends = set(ends)
        out = []
        h = x.contiguous(memory_format=torch.channels_last)
        i, n = 0, len(self.layers)
        with torch.no_grad():
            while i < n:
                layer = self.layers[i]
                if isinstance(layer, nn.Conv2d):
                    # fuse the ReLU that follows, unless the convolution's own output is wanted
                    fuse = i + 1 < n and isinstance(self.layers[i + 1], nn.ReLU) and i not in ends
                    b = None if layer.bias is None else layer.bias.detach()
                    h = mk._convolution_pointwise(
                        h, self.fwd[i], b, _pair(layer.padding), _pair(layer.stride), _pair(layer.dilation),
                        layer.groups, "relu" if fuse else "none", [], "",
                    )  # fmt: skip
                    if fuse:
                        i += 1  # the ReLU ran inside
                elif isinstance(layer, nn.ReLU):
                    h = torch.relu(h)
                else:
                    h = layer(h)
                if i in ends:
                    out.append(h)
                i += 1
        return out

    def runner(self, ends: Sequence[int]) -> _Runner:
        """A frozen-copy style runner: ``runner(x)`` -> the outputs of ``ends``; ``runner.conv_input_grad``."""
        return _Runner(self, list(ends))

    def conv_input_grad(self, i: int, g: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        if i not in self.bwd:
            out_pad, out_shape = self._bwd_args[i]
            with torch.no_grad():
                self.bwd[i] = (
                    torch.ops.mkldnn._reorder_convolution_transpose_weight(
                        layer.weight.detach(), _pair(layer.padding), out_pad, _pair(layer.stride),
                        _pair(layer.dilation), layer.groups, out_shape,
                    ),
                    out_pad,
                )  # fmt: skip
        w, out_pad = self.bwd[i]
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            g.contiguous(memory_format=torch.channels_last), w, None, _pair(layer.padding), out_pad,
            _pair(layer.stride), _pair(layer.dilation), layer.groups, "none", [], "",
        )  # fmt: skip


class _Runner:
    def __init__(self, trunk: PackedTrunk, ends: list[int]):
        self.trunk, self.ends = trunk, ends
        self.conv_input_grad = trunk.conv_input_grad

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.forward(x, self.ends)
