"""ResNet feature extractor of any depth and width, in torchvision's layout (v1.5: stride on the 3x3 conv).

Taps: ``stem`` (after conv1/bn1/relu, before the max-pool, like lpips' ``resnet`` ``relu1``) and the output
of every stage ``layer1..layerK``. ``fc.*`` keys of a torchvision state dict are ignored.

Depth rule (``depth`` counts the convolutions on the main path plus the stem conv and the classifier):

- Block type: ``BasicBlock`` (two 3x3 convs) for ``depth < 50``, ``Bottleneck`` (1x1-3x3-1x1, expansion 4)
  for ``depth >= 50``, as torchvision. The number of blocks is ``n = (depth - 2) / 2`` (basic) or
  ``(depth - 2) / 3`` (bottleneck); a depth for which ``n`` is not an integer is rejected with the nearest
  valid depths.
- Blocks per stage: the canonical tables for 10 ``[1,1,1,1]``, 18 ``[2,2,2,2]``, 34 and 50 ``[3,4,6,3]``,
  101 ``[3,4,23,3]``, 152 ``[3,8,36,3]``, 200 ``[3,24,36,3]``. Any other depth with ``n >= 4`` blocks
  spreads them over 4 stages in proportion to ``[3, 4, 6, 3]`` (floor, at least one per stage, the
  leftover blocks go to the stages with the largest remainder ``exact - count``, ties to the deeper
  stage), e.g. 26 -> ``[2, 3, 5, 2]``, 56 -> ``[3, 5, 7, 3]``, 12 -> ``[1, 1, 2, 1]``. With ``n < 4`` (depths 6 and 8) the network has ``n`` stages of
  one block each (and ``n + 1`` taps), e.g. 6 -> ``[1, 1]``.
- Width: stage ``i`` has ``planes_i = round(64 * width) * 2**i`` (the stem has ``round(64 * width)``
  channels); ``groups`` / ``width_per_group`` set the bottleneck's inner width as torchvision
  (``int(planes * width_per_group / 64) * groups``), so ``wide_resnet50_2`` (``width_per_group=128``) and
  ``resnext50_32x4d`` (``groups=32, width_per_group=4``) state dicts load too.
- ``blocks=[...]`` and ``block='basic'|'bottleneck'`` override the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, max_pool

__all__ = ["ResNetFeatures", "BasicBlock", "Bottleneck", "resnet_blocks"]

_TABLE = {
    10: [1, 1, 1, 1],
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
    200: [3, 24, 36, 3],
}
_PROPORTION = [3, 4, 6, 3]


def resnet_blocks(depth: int) -> tuple[str, list[int]]:
    """(block type, blocks per stage) for a ResNet of ``depth`` layers (see the module docstring)."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"depth: expected an int, got {type(depth).__name__}")
    if depth < 6:
        raise ValueError(f"depth: expected >= 6, got {depth}")
    block = "basic" if depth < 50 else "bottleneck"
    per = 2 if block == "basic" else 3
    if (depth - 2) % per:
        valid = [d for d in range(max(6, depth - 3), depth + 4) if (d - 2) % (2 if d < 50 else 3) == 0]
        raise ValueError(
            f"depth: {depth} is not 2 + {per} * n ({block} blocks of {per} convs); nearest valid depths: {valid}"
        )
    n = (depth - 2) // per
    if depth in _TABLE:
        return block, list(_TABLE[depth])
    if n < 4:
        return block, [1] * n
    total = sum(_PROPORTION)
    exact = [n * p / total for p in _PROPORTION]
    counts = [max(1, math.floor(e)) for e in exact]
    left = n - sum(counts)
    # largest remainder first; ties to the deeper stage
    order = sorted(range(4), key=lambda i: (exact[i] - counts[i], i), reverse=True)
    k = 0
    while left > 0:
        counts[order[k % 4]] += 1
        left -= 1
        k += 1
    while left < 0:  # only when the max(1, .) floors overshot: take from the largest stage
        i = max(range(4), key=lambda j: (counts[j], j))
        counts[i] -= 1
        left += 1
    return block, counts


def _conv3x3(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, groups: int = 1, width_per_group: int = 64):
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("groups, width_per_group: BasicBlock supports only groups=1, width_per_group=64")
        self.conv1 = _conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or c_in != planes:
            self.downsample = nn.Sequential(_conv1x1(c_in, planes, stride), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, groups: int = 1, width_per_group: int = 64):
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        c_out = planes * self.expansion
        self.conv1 = _conv1x1(c_in, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, c_out)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(_conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetFeatures(Backbone):
    """ResNet trunk with taps after the stem and after each stage (torchvision key layout)."""

    ignored_prefixes = ("fc.",)

    def __init__(
        self,
        depth: int | None = 50,
        width: float = 1.0,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        blocks: Sequence[int] | None = None,
        block: str | None = None,
        input_mean: Sequence[float] | None = IMAGENET_MEAN,
        input_std: Sequence[float] | None = IMAGENET_STD,
    ):
        super().__init__(input_mean, input_std)
        if blocks is None:
            kind, blocks = resnet_blocks(depth)
        else:
            blocks = [int(b) for b in blocks]
            if not blocks or any(b < 1 for b in blocks):
                raise ValueError(f"blocks: expected a non-empty list of positive ints, got {blocks}")
            kind = "basic" if (depth is not None and depth < 50) else "bottleneck"
        if block is not None:
            if block not in ("basic", "bottleneck"):
                raise ValueError(f"block: expected 'basic' or 'bottleneck', got {block!r}")
            kind = block
        # the depth of the network actually built (main-path convs + stem + classifier)
        depth = 2 + (2 if kind == "basic" else 3) * sum(blocks)
        if not (isinstance(width, (int, float)) and width > 0):
            raise ValueError(f"width: expected a positive multiplier, got {width!r}")
        if groups < 1 or width_per_group < 1:
            raise ValueError(f"groups, width_per_group: expected positive ints, got {groups}, {width_per_group}")
        block_cls = BasicBlock if kind == "basic" else Bottleneck
        base = max(1, int(round(64 * width)))
        self.depth, self.width, self.block_type, self.blocks = depth, width, kind, list(blocks)

        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c_in = base
        self.channels = [base]
        self.tap_names = ["stem"]
        self.stages: list[str] = []
        for i, n in enumerate(blocks):
            planes = base * 2**i
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(block_cls(c_in, planes, stride if j == 0 else 1, groups, width_per_group))
                c_in = planes * block_cls.expansion
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*layers))
            self.stages.append(name)
            self.channels.append(c_in)
            self.tap_names.append(name)

    @property
    def min_input_size(self) -> int:
        """The total stride (stem 2, max-pool 2, each later stage 2): the last stage then sees >= 1 pixel."""
        return 2 ** (len(self.blocks) + 1)

    def _forward_taps(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        out = [x]
        if last == 0:
            return out
        x = max_pool(self.maxpool, x)
        for name in self.stages[:last]:
            x = getattr(self, name)(x)
            out.append(x)
        return out
