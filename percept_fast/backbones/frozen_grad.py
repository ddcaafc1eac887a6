"""Input gradient of a frozen sequential trunk (Conv2d / ReLU / MaxPool2d): the perceptual loss' backward.

A perceptual loss differentiates the features of a *frozen* network w.r.t. its input image only. Autograd of the
eager trunk keeps, for that, every convolution's input (which an input gradient never needs: a convolution's
input gradient depends on its weight only), every ReLU output and every max-pool's int64 indices, and runs the
forward eagerly. :class:`FrozenTrunkInputGrad` keeps only what the chain rule needs:

- ReLU: its output decides the mask. A ReLU whose output is a tap (returned anyway, and saved by the distance op)
  costs nothing; any other keeps a bool mask (1 byte an element instead of 4), or its float output when a max-pool
  reads it.
- MaxPool2d: the window argmax, recomputed in the backward from the pool's input (a ReLU output, kept as above)
  by the same ``max_pool2d_with_indices`` autograd would have used (on CPU over a channels_last copy: the same
  indices, several times faster than ATen's NCHW kernel).
- Conv2d: nothing; the input gradient is ``conv_transpose2d(g, W)`` with the output padding that restores the
  input size (what ``convolution_backward`` computes for the input).

The forward runs without autograd: on CPU float32 through the backbone's frozen TorchScript copy (oneDNN,
prepacked weights; see :mod:`percept_fast.backbones.base`), which returns every ReLU output needed, else eagerly
under ``no_grad``. The gradient equals autograd's up to float32 rounding (the same operations; oneDNN may pick
another algorithm), except at ties inside a max-pool window, which both route to one position. The trunk is
piecewise linear, so a double backward through it is exact too (its second derivative is 0 almost everywhere):
the backward is written in differentiable ops of the incoming gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import max_pool

__all__ = ["FrozenTrunkInputGrad", "relu_ends", "supports_input_grad_trunk"]

_LAYERS = (nn.Conv2d, nn.ReLU, nn.MaxPool2d)


def supports_input_grad_trunk(layers: Sequence[nn.Module]) -> bool:
    """True when every layer is a Conv2d (zeros padding), ReLU or MaxPool2d whose input is a ReLU output."""
    prev = None
    for layer in layers:
        if type(layer) not in _LAYERS:
            return False
        if isinstance(layer, nn.Conv2d) and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
            return False
        if isinstance(layer, nn.MaxPool2d) and (not isinstance(prev, nn.ReLU) or layer.return_indices):
            return False
        prev = layer
    return True


def relu_ends(layers: Sequence[nn.Module]) -> list[int]:
    """Indices of the ReLUs in ``layers``."""
    return [i for i, layer in enumerate(layers) if isinstance(layer, nn.ReLU)]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class FrozenTrunkInputGrad(torch.autograd.Function):
    """``apply(x, layers, tap_ends, run_relus)`` -> the tap outputs (``layers[e]`` for ``e`` in ``tap_ends``) of the
    scaled input ``x``, differentiable w.r.t. ``x`` only (the layers' parameters are constants).

    ``run_relus(x)``, optional: a no-grad forward returning the outputs of every ReLU up to the last tap (in order),
    e.g. the frozen TorchScript copy (:func:`relu_ends` gives their indices); ``None`` runs ``layers`` eagerly.
    ``conv_input_grad(i, g)``, optional: the input gradient of convolution ``layers[i]`` for its output gradient
    ``g``, used instead of ``F.conv_transpose2d`` with ``layers[i].weight`` when the backward records no graph (e.g.
    :class:`~percept_fast.backbones.packed_trunk.PackedTrunk`'s prepacked oneDNN calls; not differentiable, so a
    double backward takes the ``F`` path).

    Layout: the saved outputs and the gradients keep the forward's layout. A channels_last ``x`` runs the whole
    trunk, and its backward, in channels_last (on CPU oneDNN's direct convolutions and ATen's max-pool are faster
    there than in NCHW, which oneDNN reorders to a blocked layout at every call)."""

    @staticmethod
    def forward(ctx, x, layers, tap_ends, run_relus: Callable | None = None, conv_input_grad: Callable | None = None):
        end = tap_ends[-1]
        layers = list(layers)[: end + 1]
        relu_idx = relu_ends(layers)
        if run_relus is not None:
            outs = dict(zip(relu_idx, run_relus(x)))
        else:
            outs, h = {}, x
            for i, layer in enumerate(layers):
                if isinstance(layer, nn.MaxPool2d):
                    h = max_pool(layer, h)
                elif isinstance(layer, nn.ReLU) and i > 0 and isinstance(layers[i - 1], nn.Conv2d):
                    h = torch.relu_(h)  # the convolution's output is read by nothing else
                else:
                    h = layer(h)
                if i in relu_idx:
                    outs[i] = h
        taps = set(tap_ends)
        pool_inputs = {i - 1 for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)}
        # what the backward reads at each ReLU: its output (a tap, or the input of a pool) or a bool mask
        kept, kinds = [], {}
        for i in relu_idx:
            if i in taps or i in pool_inputs:
                kinds[i] = ("float", len(kept))
                kept.append(outs[i])
            else:
                kinds[i] = ("mask", len(kept))
                kept.append(outs[i] > 0)
        in_sizes = []  # the input size of every conv / pool (output padding of the transposed convolutions)
        h_size = tuple(x.shape[2:])
        for i, layer in enumerate(layers):
            in_sizes.append(h_size)
            if i in outs:
                h_size = tuple(outs[i].shape[2:])
            elif isinstance(layer, nn.Conv2d):
                h_size = _conv_out(h_size, layer)
            elif isinstance(layer, nn.MaxPool2d):
                h_size = _pool_out(h_size, layer)
        ctx.save_for_backward(*kept)
        ctx.layers, ctx.kinds, ctx.in_sizes, ctx.tap_ends = layers, kinds, in_sizes, list(tap_ends)
        ctx.conv_input_grad = conv_input_grad
        result = tuple(outs[e] for e in tap_ends)
        return result

    @staticmethod
    def backward(ctx, *grads):
        kept = ctx.saved_tensors
        tap_grad = dict(zip(ctx.tap_ends, grads))
        # owned: g was made here (not a gradient autograd handed in), so it may be updated in place; in place is
        # also sound under create_graph: no op below saves its output for its own backward
        g, owned = None, False
        for i in range(len(ctx.layers) - 1, -1, -1):
            layer = ctx.layers[i]
            tg = tap_grad.get(i)
            if tg is not None:
                if g is None:
                    g, owned = tg, False
                elif owned and g.shape == tg.shape:
                    g = g.add_(tg)
                else:
                    g, owned = g + tg, True
            if g is None:
                continue  # nothing flows back from above this layer yet
            if isinstance(layer, nn.ReLU):
                kind, j = ctx.kinds[i]
                if kind == "float" and owned and not g.requires_grad:
                    # in place: no fresh full-size buffer (its first touch page-faults: ~10 % of this pass at 224 px)
                    g = torch.ops.aten.threshold_backward.grad_input(g, kept[j], 0.0, grad_input=g)
                elif kind == "float":
                    g = torch.ops.aten.threshold_backward(g, kept[j], 0.0)
                elif owned:
                    g = g.mul_(kept[j])  # bool mask: in place is 2x faster than an out-of-place mul (no new buffer)
                else:
                    g = g * kept[j]
            elif isinstance(layer, nn.Conv2d):
                if ctx.conv_input_grad is not None and not torch.is_grad_enabled():
                    g = ctx.conv_input_grad(i, g)
                else:
                    g = _conv_input_grad(g, layer, ctx.in_sizes[i])
            else:  # MaxPool2d: its input is the ReLU output before it (kept as a float)
                inp = kept[ctx.kinds[i - 1][1]]
                k, s, p, d = (
                    _pair(layer.kernel_size),
                    _pair(layer.stride or layer.kernel_size),
                    _pair(layer.padding),
                    _pair(layer.dilation),
                )
                g = _max_pool_input_grad(g, inp, k, s, p, d, layer.ceil_mode)
            owned = True
        return g, None, None, None, None


def _conv_out(size, conv: nn.Conv2d) -> tuple[int, int]:
    k, s, p, d = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation)
    return tuple((n + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, n in enumerate(size))


def _pool_out(size, pool: nn.MaxPool2d) -> tuple[int, int]:
    k, s = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
    p, d = _pair(pool.padding), _pair(pool.dilation)
    out = []
    for i, n in enumerate(size):
        num = n + 2 * p[i] - d[i] * (k[i] - 1) - 1
        o = (-(-num // s[i]) if pool.ceil_mode else num // s[i]) + 1
        if pool.ceil_mode and (o - 1) * s[i] >= n + p[i]:
            o -= 1
        out.append(o)
    return tuple(out)


def _max_pool_input_grad(g: torch.Tensor, inp: torch.Tensor, k, s, p, d, ceil_mode: bool) -> torch.Tensor:
    """dL/d(input) of a max-pool for dL/d(output) ``g``: the window argmax of ``inp`` recomputed, then the scatter.

    On CPU the argmax is taken from a channels_last copy of ``inp``: ATen's NCHW CPU max-pool is 5-17x slower than
    its channels_last one (measured with torch 2.14: 8x64x15x15, 0.60 against 0.035 ms), and the indices (flat
    positions within each plane) are the same whatever the layout, so the gradient is bit for bit the same."""
    src = inp
    if inp.device.type == "cpu" and inp.dim() == 4 and inp.is_contiguous():
        src = inp.contiguous(memory_format=torch.channels_last)
    _, idx = torch.ops.aten.max_pool2d_with_indices(src, k, s, p, d, ceil_mode)
    if src is not inp:
        idx = idx.contiguous()
    return torch.ops.aten.max_pool2d_with_indices_backward(g, inp, k, s, p, d, ceil_mode, idx)


def _transposed_output_padding(in_size, out_size, conv: nn.Conv2d) -> tuple[int, int]:
    """The output padding that makes the transposed convolution of a ``conv`` output of ``out_size`` (H, W) restore
    the input size ``in_size`` (what ``convolution_backward`` computes for the input)."""
    k, s, p, d = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation)
    return tuple(in_size[i] - ((out_size[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + 1) for i in range(2))


def _conv_input_grad(g: torch.Tensor, conv: nn.Conv2d, in_size) -> torch.Tensor:
    """dL/d(input) of a convolution for dL/d(output) ``g``: the transposed convolution with the same weight."""
    out_pad = _transposed_output_padding(in_size, g.shape[2:], conv)
    return F.conv_transpose2d(
        g, conv.weight, None, _pair(conv.stride), _pair(conv.padding), out_pad, conv.groups, _pair(conv.dilation)
    )
