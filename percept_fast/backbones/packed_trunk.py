"""A frozen Conv2d / ReLU / MaxPool2d trunk on CPU with oneDNN-prepacked weights, channels_last activations.

What a perceptual loss runs on CPU float32 (:mod:`percept_fast.backbones.frozen_grad`): the forward of the
prediction's and the target's trunks without autograd, and the prediction's input gradient (a transposed
convolution per convolution). Through ``F.conv2d`` / ``F.conv_transpose2d`` oneDNN reorders the weight into its
blocked layout at every call (a transient copy of the weight each time: at alex 64 px those copies are most of the
step's peak memory) and runs the ReLU as a separate pass. Here each weight is reordered once per input shape
(``torch.ops.mkldnn._reorder_convolution_weight`` / ``_reorder_convolution_transpose_weight``, what inductor's CPU
convolution fusion packs) and a convolution followed by a ReLU is one oneDNN call with a fused ReLU
(``mkldnn._convolution_pointwise(..., 'relu')``). Max-pools run ATen's channels_last kernel.

The values are those of the eager ops (the same oneDNN convolutions; ``tests/test_packed_trunk.py`` compares every
layer output and transposed convolution); the packed weights are copies, rebuilt when a parameter changes (the
owner's cache key) or for a new input shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import winograd
from .frozen_grad import _conv_out, _pair, _pool_out, _transposed_output_padding
from .winograd import Winograd3x3

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


class PackedTrunk:
    """``layers`` (Conv2d / ReLU / MaxPool2d, as :func:`frozen_grad.supports_input_grad_trunk`) packed for inputs of
    shape ``in_shape`` ``[B, C, H, W]``.

    ``forward(x, ends)``: the outputs of ``layers[e]`` for ``e`` in ``ends`` (channels_last), without autograd.
    ``conv_input_grad(i, g)``: dL/d(input) of convolution ``layers[i]`` for dL/d(output) ``g`` (channels_last)."""

    def __init__(self, layers: Sequence[nn.Module], in_shape: Sequence[int], winograd: bool = True):
        self.layers = list(layers)
        self.winograd = bool(winograd)  # 3x3 stride-1 layers by Winograd F(m x m, 3x3) where it is faster
        self.wino: dict[int, Winograd3x3] = {}  # conv i's forward by Winograd (instead of self.fwd[i])
        self.fwd: dict[int, torch.Tensor] = {}
        self.bwd: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}  # packed at the first backward only
        self._shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # conv i: (its input, its output)
        shape = tuple(in_shape)
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                if isinstance(layer, nn.Conv2d):
                    out_shape = (shape[0], layer.out_channels, *_conv_out(shape[2:], layer))
                    self._shapes[i] = (shape, out_shape)
                    m = self._winograd_tile(layer, layer.in_channels, layer.out_channels, out_shape[2:])
                    if m is not None:
                        self.wino[i] = Winograd3x3(layer.weight.detach(), _pair(layer.padding), shape, m=m)
                        shape = out_shape
                        continue
                    self.fwd[i] = torch.ops.mkldnn._reorder_convolution_weight(
                        layer.weight.detach(), _pair(layer.padding), _pair(layer.stride), _pair(layer.dilation),
                        layer.groups, shape,
                    )  # fmt: skip
                    shape = out_shape
                elif isinstance(layer, nn.MaxPool2d):
                    shape = (shape[0], shape[1], *_pool_out(shape[2:], layer))

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
                    if i in self.wino:
                        h = self.wino[i](h, b, relu=fuse)
                    else:
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
        if i not in self.bwd:
            self.bwd[i] = self._input_grad_fn(i)
        return self.bwd[i](g.contiguous(memory_format=torch.channels_last))

    def _input_grad_fn(self, i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """``g -> dL/d(input)`` of convolution ``layers[i]`` with its weight packed now: by phases (:class:`_Phases`)
        where that suits the layer, else oneDNN's transposed convolution."""
        layer = self.layers[i]
        in_shape, out_shape = self._shapes[i]
        with torch.no_grad():
            m = self._winograd_tile(layer, layer.out_channels, layer.in_channels, in_shape[2:])
            if m is not None:
                # the input gradient of a 3x3 stride-1 convolution is one too (kernel flipped, channels swapped)
                weight_t, pad_t = winograd.input_grad_conv(layer.weight, layer.padding)
                conv = Winograd3x3(weight_t, pad_t, out_shape, m=m)
                return lambda g: conv(g)
            if _Phases.suits(layer):
                phases = _Phases(layer, in_shape, out_shape)
                packed = phases.pack()
                return lambda g: phases.input_grad(g, packed)
            pad, stride, dil = _pair(layer.padding), _pair(layer.stride), _pair(layer.dilation)
            out_pad = _transposed_output_padding(in_shape[2:], out_shape[2:], layer)
            packed = torch.ops.mkldnn._reorder_convolution_transpose_weight(
                layer.weight.detach(), pad, out_pad, stride, dil, layer.groups, out_shape
            )
        return lambda g: torch.ops.mkldnn._convolution_transpose_pointwise(
            g, packed, None, pad, out_pad, stride, dil, layer.groups, "none", [], ""
        )

    def _winograd_tile(self, layer: nn.Module, c_in: int, c_out: int, out_hw: Sequence[int]) -> int | None:
        """Winograd's output tile for this convolution (2 or 3), or None for oneDNN's direct convolution."""
        if not (self.winograd and winograd.suits(layer)):
            return None
        return winograd.tile_size(c_in, c_out, out_hw)


class _Phases:
    """The input gradient of a strided convolution with few input channels (an image's first layer, e.g. AlexNet's
    11x11 stride-4 convolution of 3 channels) as one stride-1 convolution and a pixel shuffle.

    With stride ``s``, the padded input's row ``m = s a + r`` receives ``sum_t g[a - t] W[r + s t]`` (``t`` over the
    kernel rows of phase ``r``, ``T = ceil(k / s)`` at most): for each phase ``(r, q)`` a stride-1 correlation of the
    output gradient with a ``T x T`` sub-kernel of the weight, flipped. All ``s_h s_w`` phases of all ``C_in``
    channels are the output channels of one convolution (``C_in s_h s_w`` of them: 48 for AlexNet, where oneDNN's
    transposed convolution into 3 channels vectorises poorly: 2.3 -> 0.6 ms at 8x64 px, 13.5 -> 3.3 ms at 4x224 px),
    then interleaved and cropped to the input. The same sums in another order (float32 rounding apart)."""

    @staticmethod
    def suits(layer: nn.Conv2d) -> bool:
        s, d = _pair(layer.stride), _pair(layer.dilation)
        return layer.groups == 1 and d == (1, 1) and max(s) > 1 and layer.in_channels * s[0] * s[1] <= 64

    def __init__(self, layer: nn.Conv2d, in_shape: Sequence[int], out_shape: Sequence[int]):
        self.layer = layer
        self.s, self.p, self.k = _pair(layer.stride), _pair(layer.padding), _pair(layer.kernel_size)
        self.t = [-(-self.k[j] // self.s[j]) for j in range(2)]
        self.in_hw = list(in_shape[2:])
        padded = [self.in_hw[j] + 2 * self.p[j] for j in range(2)]
        self.phases_hw = [-(-padded[j] // self.s[j]) for j in range(2)]  # rows / columns per phase
        g_hw = list(out_shape[2:])
        # left: the full correlation's T - 1; right: up to the phases needed (zeros beyond the gradient)
        self.pad = [self.t[1] - 1, self.phases_hw[1] - g_hw[1], self.t[0] - 1, self.phases_hw[0] - g_hw[0]]
        self.g_padded_shape = [
            out_shape[0],
            out_shape[1],
            g_hw[0] + self.pad[2] + self.pad[3],
            g_hw[1] + self.pad[0] + self.pad[1],
        ]

    def weight(self) -> torch.Tensor:
        """``[C_in s_h s_w, C_out, T_h, T_w]``: output channel ``(c, r, q)`` holds phase ``(r, q)`` of input channel
        ``c``, its taps flipped (a correlation)."""
        w = self.layer.weight.detach()
        (sh, sw), (th, tw), (kh, kw) = self.s, self.t, self.k
        c_out, c_in = w.shape[:2]
        out = w.new_zeros(c_in, sh, sw, c_out, th, tw)
        for r in range(sh):
            for a in range(th):
                u = r + sh * (th - 1 - a)
                if u >= kh:
                    continue
                for q in range(sw):
                    for b in range(tw):
                        v = q + sw * (tw - 1 - b)
                        if v < kw:
                            out[:, r, q, :, a, b] = w[:, :, u, v].t()
        return out.reshape(c_in * sh * sw, c_out, th, tw)

    def pack(self) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            self.weight(), [0, 0], [1, 1], [1, 1], 1, self.g_padded_shape
        )

    def input_grad(self, g: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        gp = F.pad(g, self.pad)
        if gp.shape[2] < self.t[0] or gp.shape[3] < self.t[1]:  # cannot happen for a valid conv; be explicit
            raise RuntimeError("conv_input_grad: gradient smaller than the phase kernel")
        y = torch.ops.mkldnn._convolution_pointwise(
            gp.contiguous(memory_format=torch.channels_last), packed, None, [0, 0], [1, 1], [1, 1], 1, "none", [], ""
        )  # [B, C_in s_h s_w, A_h, A_w]
        b, _, ah, aw = y.shape
        (sh, sw), c_in = self.s, self.layer.in_channels
        full = y.reshape(b, c_in, sh, sw, ah, aw).permute(0, 1, 4, 2, 5, 3).reshape(b, c_in, ah * sh, aw * sw)
        (ph, pw), (h, w) = self.p, self.in_hw
        return full[:, :, ph : ph + h, pw : pw + w]


class _Runner:
    def __init__(self, trunk: PackedTrunk, ends: list[int]):
        self.trunk, self.ends = trunk, ends
        self.conv_input_grad = trunk.conv_input_grad

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.forward(x, self.ends)
