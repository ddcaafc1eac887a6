"""AlexNet, VGG16 and SqueezeNet1.1 feature extractors with exactly the taps of lpips.

The layers live in ``self.features``, an ``nn.Sequential`` with torchvision's indices, so that the
``features.*`` keys of a torchvision state dict (``torchvision.models.alexnet().state_dict()`` saved to a
file) load by name; ``classifier.*`` keys are ignored. Taps (lpips/pretrained_networks.py):

- AlexNet: ``relu1..relu5`` after ``features[1], [4], [7], [9], [11]`` (64, 192, 384, 256, 256 channels).
- VGG16: ``relu1_2, relu2_2, relu3_3, relu4_3, relu5_3`` after ``features[3], [8], [15], [22], [29]``
  (64, 128, 256, 512, 512).
- SqueezeNet1.1: 7 taps after ``features[1], [4], [7], [9], [10], [11], [12]``
  (64, 128, 256, 384, 384, 512, 512).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, max_pool
from .frozen_grad import FrozenTrunkInputGrad, relu_ends, supports_input_grad_trunk

__all__ = ["AlexNetFeatures", "VGG16Features", "SqueezeNet11Features", "Fire"]


class _SequentialTaps(Backbone):
    ignored_prefixes = ("classifier.",)
    input_grad_format = "packed"
    # measured (one thread, metric forward against lpips): alex 64 px 1.22x -> 1.60x, vgg 224 px 1.39x -> 1.54x
    # over the 'mkldnn' TorchScript copy
    frozen_format = "packed"
    tap_ends: list[int]  # index into self.features of the last layer of each tap

    def _forward_taps(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        out = []
        end = self.tap_ends[last]
        ends = set(self.tap_ends[: last + 1])
        for i, layer in enumerate(self.features):
            x = max_pool(layer, x) if isinstance(layer, nn.MaxPool2d) else layer(x)
            if i in ends:
                out.append(x)
            if i == end:
                break
        return out

    @property
    def min_input_size(self) -> int:
        return self._min_size

    def _input_grad_taps(self, x: torch.Tensor, last: int) -> list[torch.Tensor] | None:
        layers = list(self.features)[: self.tap_ends[last] + 1]
        if not supports_input_grad_trunk(layers):
            return None
        if x.device.type == "cpu" and self.input_grad_format in ("channels_last", "packed") and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():  # the frozen copy returning every ReLU output (CPU float32), else eager in the Function
            runner = self._frozen_runner(x, last, ends=relu_ends(layers), fmt=self.input_grad_format)
        conv_input_grad = getattr(runner, "conv_input_grad", None)  # a PackedTrunk's prepacked transposed convs
        return list(FrozenTrunkInputGrad.apply(x, layers, self.tap_ends[: last + 1], runner, conv_input_grad))

    def _frozen_trunk(self, last: int) -> tuple[nn.Module, list[int]]:
        end = self.tap_ends[last]
        return nn.Sequential(*list(self.features)[: end + 1]), list(self.tap_ends[: last + 1])

    def _frozen_tap_ends(self, last: int) -> list[int]:
        return list(self.tap_ends[: last + 1])  # without building the nn.Sequential of _frozen_trunk (~15 us)


class AlexNetFeatures(_SequentialTaps):
    """AlexNet (torchvision layout) up to ``relu5``; lpips' ``alex`` trunk."""

    tap_names = ["relu1", "relu2", "relu3", "relu4", "relu5"]
    channels = [64, 192, 384, 256, 256]
    tap_ends = [1, 4, 7, 9, 11]
    _min_size = 31

    def __init__(
        self, input_mean: Sequence[float] | None = IMAGENET_MEAN, input_std: Sequence[float] | None = IMAGENET_STD
    ):
        super().__init__(input_mean, input_std)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
        )


class VGG16Features(_SequentialTaps):
    """VGG16 (torchvision layout, no batch norm) up to ``relu5_3``; lpips' ``vgg`` trunk."""

    tap_names = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    channels = [64, 128, 256, 512, 512]
    tap_ends = [3, 8, 15, 22, 29]
    _min_size = 16

    def __init__(
        self, input_mean: Sequence[float] | None = IMAGENET_MEAN, input_std: Sequence[float] | None = IMAGENET_STD
    ):
        super().__init__(input_mean, input_std)
        cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
        layers: list[nn.Module] = []
        c_in = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU()]
                c_in = v
        self.features = nn.Sequential(*layers)


class Fire(nn.Module):
    """SqueezeNet Fire module (torchvision names: squeeze, expand1x1, expand3x3)."""

    def __init__(self, c_in: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU()
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU()
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet11Features(_SequentialTaps):
    """SqueezeNet 1.1 (torchvision layout) features; lpips' ``squeeze`` trunk with its 7 slices."""

    tap_names = ["relu1", "relu2", "relu3", "relu4", "relu5", "relu6", "relu7"]
    channels = [64, 128, 256, 384, 384, 512, 512]
    tap_ends = [1, 4, 7, 9, 10, 11, 12]
    _min_size = 17
    # Fire's 1x1 convs and concats: oneDNN's blocked-layout reorders cost more than they save (see base)
    frozen_format = "channels_last"

    def __init__(
        self, input_mean: Sequence[float] | None = IMAGENET_MEAN, input_std: Sequence[float] | None = IMAGENET_STD
    ):
        super().__init__(input_mean, input_std)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(64, 16, 64, 64),
            Fire(128, 16, 64, 64),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(128, 32, 128, 128),
            Fire(256, 32, 128, 128),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            Fire(512, 64, 256, 256),
        )
