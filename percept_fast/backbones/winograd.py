"""A 3x3 stride-1 convolution by Winograd's minimal filtering F(m x m, 3x3), m = 2 or 3, CPU float32, channels_last.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). For an ``n x n`` input tile ``d``
(``n = m + 2``; tiles step by ``m``) and a 3x3 kernel ``g``, the ``m x m`` output tile of their correlation is::

    Y = A^T [ (G g G^T) .* (B^T d B) ] A

F(2, 3) (points 0, 1, -1, inf)::

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

F(3, 3) (points 0, 1, -1, 2, inf; Toom-Cook: ``A^T``, ``G`` Vandermonde, ``B^T`` the inverse transposed, its rows
scaled to integers and ``G``'s by the inverse factors)::

    B^T = [[2, -1, -2, 1, 0], [0, 2, 1, -1, 0], [0, -2, 3, -1, 0], [0, -1, 0, 1, 0], [0, 2, -1, -2, 1]]
    G   = [[1/2, 0, 0], [1/2, 1/2, 1/2], [1/6, -1/6, 1/6], [1/6, 1/3, 2/3], [0, 0, 1]]
    A^T = [[1, 1, 1, 1, 0], [0, 1, -1, 2, 0], [0, 1, 1, 4, 1]]

Summed over input channels, each of the ``n^2`` positions ``xi`` of the transformed tile is a matrix product
``V[xi] (tiles x C_in) @ U[xi]^T (C_in x C_out)``: ``n^2 / m^2`` multiply-adds per output pixel and channel pair (4
for F(2, 3), 2.8 for F(3, 3)) where the direct convolution takes 9. The products run as one grouped 1x1 oneDNN
convolution (group ``xi``, weight ``U`` packed once per input shape); the transforms around them are C++ loops over
channels (``csrc/percept_fast/winograd_cpu.cpp``). The input gradient of such a convolution (padding ``p``) is the
same kind of convolution of the output gradient with the kernel flipped and its channels swapped, padding ``2 - p``
(:func:`input_grad_conv`).

Non-finite inputs spread further than in the direct convolution: a NaN or Inf input pixel reaches every output of
the tiles whose input tile holds it (F(3, 3): up to 12 outputs where the direct convolution has 9), and an Inf can
become NaN (Inf - Inf inside the transforms). The metric checks its inputs for them (``check_finite``).

Rounding differs from the direct convolution's (other sums; the transforms add and subtract inputs): 1e-6 to 3e-6 of
the output's scale in float32 (``tests/test_winograd.py`` bounds it against float64). Used by
:class:`percept_fast.backbones.packed_trunk.PackedTrunk` on layers where it is faster (:func:`tile_size`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Winograd3x3", "input_grad_conv", "suits", "tile_size", "winograd_reference"]

_G = {
    2: [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
    3: [[1 / 2, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 6, -1 / 6, 1 / 6], [1 / 6, 1 / 3, 2 / 3], [0, 0, 1]],
}
_BT = {
    2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    3: [[2, -1, -2, 1, 0], [0, 2, 1, -1, 0], [0, -2, 3, -1, 0], [0, -1, 0, 1, 0], [0, 2, -1, -2, 1]],
}
_AT = {2: [[1, 1, 1, 0], [0, 1, -1, -1]], 3: [[1, 1, 1, 1, 0], [0, 1, -1, 2, 0], [0, 1, 1, 4, 1]]}


def _matrix(rows, device=None) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, device=device)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def suits(layer: nn.Conv2d) -> bool:
    """A plain 3x3, stride-1, undilated, ungrouped convolution with zeros padding of at most 2 (Winograd applies)."""
    pad = layer.padding
    return (
        isinstance(layer, nn.Conv2d)
        and _pair(layer.kernel_size) == (3, 3)
        and _pair(layer.stride) == (1, 1)
        and _pair(layer.dilation) == (1, 1)
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and not isinstance(pad, str)
        and all(0 <= p <= 2 for p in _pair(pad))
    )


def _tiles(out_hw: Sequence[int], m: int) -> tuple[int, int]:
    return tuple(-(-int(v) // m) for v in out_hw)


def tile_size(c_in: int, c_out: int, out_hw: Sequence[int]) -> int | None:
    """The output tile ``m`` (2 or 3) for which Winograd beats oneDNN's direct convolution on CPU, or None
    (``bench/bench_winograd.py``, one thread: 1.3-1.9x on VGG's and AlexNet's 3x3 layers from 64 channels). It needs
    enough channels for the products to run at oneDNN's full rate (3 -> 64 channels: 0.2x; 32 -> 32: 0.9x); of the two
    tiles, the one with fewer products per output pixel counting the cropped ones (``n^2 / (m^2 filled)``: a 3x3 map
    is 4 F(2, 3) tiles with 7 of 16 outputs wasted, 0.8-0.9x, or one F(3, 3) tile), where that is under 5."""
    if min(c_in, c_out) < 64:
        return None
    h, w = (int(v) for v in out_hw)
    cost = {}
    for m in (2, 3):
        th, tw = _tiles((h, w), m)
        cost[m] = (m + 2) ** 2 * th * tw / (h * w)  # products per output pixel, cropped outputs included
    m = min(cost, key=cost.get)
    return m if cost[m] < 5.0 else None


class Winograd3x3:
    """The convolution of ``weight`` [C_out, C_in, 3, 3] (``padding``) on inputs of shape ``in_shape`` [N, C_in, H, W]
    with output tiles of ``m`` x ``m``: ``self(x, bias=None, relu=False)`` -> [N, C_out, H_out, W_out] channels_last
    (ReLU fused when asked).

    The three steps run on chunks of whole tile rows (of all images' ``N * T_h`` rows; a 1x1 convolution does not care
    where a tile sits) of about ``chunk_tiles`` tiles: their transforms stay in cache between the steps, and buffers
    of that size come from the allocator's cache, not from fresh pages each call (the whole layer's transformed input
    is 4x the input: 134 MB of traffic and page faults at 16x128x32x32, which made it slower than the direct
    convolution), while each chunk's products stay large enough for oneDNN's full rate (128-256 tiles were best from
    64 to 512 channels, ``bench/bench_winograd.py --sweep``)."""

    def __init__(
        self,
        weight: torch.Tensor,
        padding: Sequence[int],
        in_shape: Sequence[int],
        m: int = 2,
        chunk_tiles: int = 192,
    ):
        if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
            raise ValueError(f"weight: expected [C_out, C_in, 3, 3], got {tuple(weight.shape)}")
        if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"weight: expected a CPU float32/float64 tensor, got {weight.dtype} on {weight.device}")
        if any(p < 0 for p in _pair(padding)):
            raise ValueError(f"padding: expected >= 0, got {tuple(_pair(padding))}")
        if m not in (2, 3):
            raise ValueError(f"m: expected 2 or 3 (output tile side), got {m!r}")
        n, c, h, w = (int(v) for v in in_shape)
        if c != weight.shape[1]:
            raise ValueError(f"in_shape: expected {weight.shape[1]} channels, got {c}")
        self.m, self.pad = m, _pair(padding)
        self.c_in, self.c_out = c, int(weight.shape[0])
        self.in_shape = (n, c, h, w)
        self.out_hw = (h + 2 * self.pad[0] - 2, w + 2 * self.pad[1] - 2)
        if min(self.out_hw) < 1:
            raise ValueError(f"in_shape: {h}x{w} too small for a 3x3 kernel with padding {self.pad}")
        self.tiles = _tiles(self.out_hw, m)
        rows, tw = n * self.tiles[0], self.tiles[1]
        self.chunk_rows = max(1, min(rows, round(int(chunk_tiles) / tw)))
        self.positions = (m + 2) ** 2
        with torch.no_grad():
            g = _matrix(_G[m], weight.device)
            u = torch.einsum("ai,kcij,bj->abkc", g, weight.detach().double(), g)  # [n, n, C_out, C_in]
            u = u.reshape(self.positions * self.c_out, self.c_in, 1, 1).float()  # channel xi * C_out + k: group xi
            self.packed = {}  # chunk rows -> u packed for a chunk [1, n^2 C_in, rows, T_w]
            for r in {self.chunk_rows, rows % self.chunk_rows or self.chunk_rows}:
                self.packed[r] = torch.ops.mkldnn._reorder_convolution_weight(
                    u, [0, 0], [1, 1], [1, 1], self.positions, [1, self.positions * c, r, tw]
                )

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        from percept_fast import _C

        if tuple(x.shape) != self.in_shape or x.dtype != torch.float32 or x.device.type != "cpu":
            raise ValueError(
                f"x: expected a CPU float32 tensor of shape {self.in_shape}, got {x.dtype} {tuple(x.shape)} on "
                f"{x.device}"
            )
        if bias is not None and (
            bias.shape != (self.c_out,) or bias.dtype != torch.float32 or bias.device.type != "cpu"
        ):
            raise ValueError(
                f"bias: expected a CPU float32 [{self.c_out}], got {bias.dtype} {tuple(bias.shape)} on {bias.device}"
            )
        if x.requires_grad and torch.is_grad_enabled():
            raise ValueError("x: requires grad, but Winograd3x3 is not differentiable (run it under torch.no_grad())")
        x = x.contiguous(memory_format=torch.channels_last)
        if bias is not None:
            bias = bias.contiguous()  # (kept alive here: the C++ reads it through its pointer)
        bias_ptr = 0 if bias is None else bias.data_ptr()
        n, c, h, w = self.in_shape
        (th, tw), (ho, wo), threads = self.tiles, self.out_hw, torch.get_num_threads()
        y = x.new_empty(n, ho, wo, self.c_out).permute(0, 3, 1, 2)  # channels_last
        rows, step, xi = n * th, self.chunk_rows, self.positions
        conv = torch.ops.mkldnn._convolution_pointwise
        for r0 in range(0, rows, step):
            r = min(step, rows - r0)
            v = x.new_empty(1, r, tw, xi * c).permute(0, 3, 1, 2)  # channels_last [1, n^2 C, r, T_w]
            _C.winograd_input_transform(
                x.data_ptr(), n, h, w, c, *self.pad, self.m, th, tw, r0, r0 + r, v.data_ptr(), threads
            )
            mt = conv(v, self.packed[r], None, [0, 0], [1, 1], [1, 1], xi, "none", [], "")
            mt = mt.contiguous(memory_format=torch.channels_last)  # (it is: oneDNN keeps the input's format)
            _C.winograd_output_transform(
                mt.data_ptr(), n, th, tw, self.c_out, bias_ptr, bool(relu), ho, wo, self.m, r0, r0 + r,
                y.data_ptr(), threads,
            )  # fmt: skip
        return y


def input_grad_conv(weight: torch.Tensor, padding: Sequence[int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """The weight and padding of the convolution that maps dL/d(output) of a 3x3 stride-1 convolution (``weight``
    [C_out, C_in, 3, 3], ``padding``) to dL/d(input): the kernel flipped, its channels swapped, padding ``2 - p``."""
    p = _pair(padding)
    return weight.detach().flip(2, 3).transpose(0, 1).contiguous(), (2 - p[0], 2 - p[1])


def winograd_reference(x: torch.Tensor, weight: torch.Tensor, padding: Sequence[int], m: int = 2) -> torch.Tensor:
    """F(m x m, 3x3) in plain PyTorch (float64 transforms, einsum products): the maths :class:`Winograd3x3` runs, for
    the tests (``F.conv2d`` is the other reference)."""
    ph, pw = _pair(padding)
    n, c, h, w = x.shape
    ho, wo = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = _tiles((ho, wo), m)
    size = m + 2
    xp = torch.zeros(n, c, m * th + 2, m * tw + 2, dtype=torch.float64)
    xp[:, :, ph : ph + h, pw : pw + w] = x.double()[:, :, : m * th + 2 - ph, : m * tw + 2 - pw]
    d = xp.unfold(2, size, m).unfold(3, size, m)  # [N, C, T_h, T_w, n, n]
    bt, at, g = _matrix(_BT[m]), _matrix(_AT[m]), _matrix(_G[m])
    v = torch.einsum("ai,ncpqij,bj->ncpqab", bt, d, bt)
    u = torch.einsum("ai,kcij,bj->kcab", g, weight.double(), g)
    prod = torch.einsum("ncpqab,kcab->nkpqab", v, u)
    y = torch.einsum("ia,nkpqab,jb->nkpiqj", at, prod, at).reshape(n, -1, m * th, m * tw)
    return y[:, :, :ho, :wo]
