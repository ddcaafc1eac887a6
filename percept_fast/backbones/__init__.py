"""Feature extractors returning a list of tapped feature maps (see :class:`Backbone`).

``build_backbone(name, weights=None, **kwargs)`` builds one by name:

- ``'alex'`` / ``'alexnet'``, ``'vgg'`` / ``'vgg16'``, ``'squeeze'`` / ``'squeezenet1_1'``: lpips' trunks
  with lpips' taps;
- ``'resnet<depth>'`` (any valid depth, see :mod:`.resnet`), ``'wide_resnet50_2'``, ``'wide_resnet101_2'``,
  ``'resnext50_32x4d'``, ``'resnext101_32x8d'``, ``'resnext101_64x4d'``;
- ``'vit_ti_16'``, ``'vit_s_16'``, ``'vit_s_32'``, ``'vit_b_16'``, ``'vit_b_32'``, ``'vit_l_16'``,
  ``'vit_l_32'``, ``'vit_h_14'`` (any other configuration: ``ViTFeatures(patch_size, hidden_dim, ...)``).

``weights`` is a local file (or a state dict) in torchvision layout (timm layout for ViTs too); without it
the weights are random (PyTorch's default initialisation). Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from .base import IMAGENET_MEAN, IMAGENET_STD, LPIPS_SCALE, LPIPS_SHIFT, Backbone
from .lpips_nets import AlexNetFeatures, SqueezeNet11Features, VGG16Features
from .resnet import ResNetFeatures, resnet_blocks
from .vit import VIT_PRESETS, ViTFeatures, timm_to_torchvision

__all__ = [
    "Backbone",
    "AlexNetFeatures",
    "VGG16Features",
    "SqueezeNet11Features",
    "ResNetFeatures",
    "ViTFeatures",
    "VIT_PRESETS",
    "build_backbone",
    "canonical_name",
    "resnet_blocks",
    "timm_to_torchvision",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LPIPS_SHIFT",
    "LPIPS_SCALE",
]

_ALIASES = {
    "alex": "alex",
    "alexnet": "alex",
    "vgg": "vgg",
    "vgg16": "vgg",
    "squeeze": "squeeze",
    "squeezenet": "squeeze",
    "squeezenet1_1": "squeeze",
}
_RESNET_VARIANTS = {
    "wide_resnet50_2": dict(depth=50, width_per_group=128),
    "wide_resnet101_2": dict(depth=101, width_per_group=128),
    "resnext50_32x4d": dict(depth=50, groups=32, width_per_group=4),
    "resnext101_32x8d": dict(depth=101, groups=32, width_per_group=8),
    "resnext101_64x4d": dict(depth=101, groups=64, width_per_group=4),
}


def canonical_name(name: str) -> str:
    """Canonical backbone name (``'alexnet'`` -> ``'alex'``, ...); ``ValueError`` for unknown names."""
    if not isinstance(name, str):
        raise TypeError(f"backbone: expected a name or an nn.Module, got {type(name).__name__}")
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key in _RESNET_VARIANTS or key in VIT_PRESETS or re.fullmatch(r"resnet\d+", key):
        return key
    raise ValueError(
        f"backbone: unknown name {name!r}; expected one of {sorted(set(_ALIASES))}, 'resnet<depth>', "
        f"{sorted(_RESNET_VARIANTS)} or {sorted(VIT_PRESETS)}"
    )


def build_backbone(
    name: str, weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None, **kwargs
) -> Backbone:
    """Build a backbone by name (see the module docstring) and load ``weights`` when given."""
    key = canonical_name(name)
    if key == "alex":
        net: Backbone = AlexNetFeatures(**kwargs)
    elif key == "vgg":
        net = VGG16Features(**kwargs)
    elif key == "squeeze":
        net = SqueezeNet11Features(**kwargs)
    elif key in _RESNET_VARIANTS:
        net = ResNetFeatures(**{**_RESNET_VARIANTS[key], **kwargs})
    elif key in VIT_PRESETS:
        net = ViTFeatures.from_preset(key, **kwargs)
    else:
        net = ResNetFeatures(depth=int(key[len("resnet") :]), **kwargs)
    if weights is not None:
        net.load_weights(weights)
    return net
