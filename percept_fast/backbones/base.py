"""Common base of the feature extractors: input scaling (lpips' ScalingLayer), tap selection, weight loading,
and frozen TorchScript CPU inference (``docs/percept_fast.md#backbones``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..weights import load_into, load_state_dict_file
from .frozen_grad import supports_input_grad_trunk
from .packed_trunk import PackedTrunk, packed_trunk_available
from .pooling import max_pool

__all__ = ["Backbone", "IMAGENET_MEAN", "IMAGENET_STD", "LPIPS_SHIFT", "LPIPS_SCALE", "max_pool"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# lpips.ScalingLayer literals (== 2 * IMAGENET_MEAN - 1 and 2 * IMAGENET_STD)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class Backbone(nn.Module):
    """Feature extractor returning a list of tapped feature maps ``[B, C_l, H_l, W_l]``.

    Subclasses set ``tap_names`` and ``channels`` and implement ``_forward_taps(x, last)`` returning the
    first ``last + 1`` taps of the already scaled input ``x``.

    ``input_mean`` / ``input_std`` are the per-channel statistics of the network's training data on the
    ``[0, 1]`` scale (ImageNet by default; e.g. ``(0.5,) * 3`` for models trained on ``[-1, 1]`` inputs);
    ``None`` for both disables the scaling.
    """

    tap_names: list[str]
    channels: list[int]
    # prefixes of torchvision/timm state-dict keys that belong to parts a feature extractor does not use
    ignored_prefixes: tuple[str, ...] = ()
    # run a frozen TorchScript copy for gradient-free CPU float32 inference (see the module docstring);
    # off by default so that a bare backbone stays bit-identical to torchvision's eager forward
    frozen_inference: bool = False
    # memory format of the frozen copy: 'mkldnn' (optimize_for_inference), 'channels_last' (freeze only) or 'packed'
    # (packed_trunk.PackedTrunk: oneDNN-prepacked weights, fused conv+ReLU, channels_last; plain conv/ReLU/pool
    # trunks, else the 'channels_last' copy serves)
    frozen_format: str = "mkldnn"
    # input gradient of a frozen trunk (a perceptual loss) through frozen_grad.FrozenTrunkInputGrad where the trunk
    # supports it; off by default (a bare backbone keeps torchvision's autograd), on in PerceptualMetric
    frozen_input_grad: bool = False
    # layout of that input-gradient path on CPU (None: the input's): 'channels_last' runs the frozen trunk's forward,
    # its saved outputs and its backward in channels_last; 'packed' does so with oneDNN-prepacked weights
    # (packed_trunk.PackedTrunk, for plain Conv2d / ReLU / MaxPool2d trunks)
    input_grad_format: str | None = None

    def __init__(
        self, input_mean: Sequence[float] | None = IMAGENET_MEAN, input_std: Sequence[float] | None = IMAGENET_STD
    ):
        super().__init__()
        if (input_mean is None) != (input_std is None):
            raise ValueError("input_mean, input_std: give both or neither")
        if input_mean is None:
            self.register_buffer("shift", None, persistent=False)
            self.register_buffer("scale", None, persistent=False)
            return
        if len(input_mean) != 3 or len(input_std) != 3:
            raise ValueError(
                f"input_mean, input_std: expected 3 values each, got {len(input_mean)} and {len(input_std)}"
            )
        if any(s <= 0 for s in input_std):
            raise ValueError(f"input_std: expected positive values, got {tuple(input_std)}")
        if tuple(input_mean) == IMAGENET_MEAN and tuple(input_std) == IMAGENET_STD:
            shift, scale = LPIPS_SHIFT, LPIPS_SCALE
        else:
            shift = tuple(2.0 * m - 1.0 for m in input_mean)
            scale = tuple(2.0 * s for s in input_std)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32)[None, :, None, None], persistent=False)

    # ------------------------------------------------------------------ taps
    @property
    def num_taps(self) -> int:
        return len(self.tap_names)

    def resolve_taps(self, layers: Sequence[int | str] | None) -> list[int]:
        """Tap indices from ``layers`` (ints, negative allowed, or tap names); ``None`` selects all."""
        if layers is None:
            return list(range(self.num_taps))
        if isinstance(layers, (int, str)):
            layers = [layers]
        out = []
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, (int, str)):
                raise TypeError(f"layers: expected tap indices or names, got {layer!r}")
            if isinstance(layer, str):
                if layer not in self.tap_names:
                    raise ValueError(f"layers: unknown tap {layer!r}; {type(self).__name__} taps are {self.tap_names}")
                idx = self.tap_names.index(layer)
            else:
                if not -self.num_taps <= layer < self.num_taps:
                    raise ValueError(f"layers: tap index {layer} out of range for {self.num_taps} taps")
                idx = layer % self.num_taps
            out.append(idx)
        if not out:
            raise ValueError("layers: expected at least one tap")
        if len(set(out)) != len(out):
            raise ValueError(f"layers: duplicate taps in {list(layers)}")
        if out != sorted(out):
            raise ValueError(f"layers: taps must be in network order, got {list(layers)}")
        return out

    # ------------------------------------------------------------------ forward
    def scale_input(
        self, x: torch.Tensor, unit_input: bool = False, *, memory_format: torch.memory_format | None = None
    ) -> torch.Tensor:
        """lpips' ScalingLayer: ``(x - shift) / scale`` (identity when the backbone has no statistics).

        ``unit_input``: ``x`` is in ``[0, 1]``; ``2 * x - 1`` is folded into the scaling (one pass).
        ``memory_format``: layout of the result (default: ``x``'s); the change of layout rides on the scaling pass.
        """
        out = None
        if memory_format is not None and not x.is_contiguous(memory_format=memory_format):
            if torch.is_grad_enabled() and x.requires_grad:  # out= does not record autograd
                return self.scale_input(x, unit_input).contiguous(memory_format=memory_format)
            out = torch.empty_like(x, memory_format=memory_format)
        if not unit_input:
            if self.shift is None:
                return x if out is None else out.copy_(x)
            return torch.div(x - self.shift.to(x.dtype), self.scale.to(x.dtype), out=out)
        if self.shift is None:
            return torch.sub(2 * x, 1, out=out)
        mult, add = self._unit_affine(x.dtype)
        return torch.addcmul(add, x, mult, out=out)

    def _unit_affine(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mult, add)`` in ``dtype`` with ``(2x - 1 - shift) / scale == x * mult + add``, from float64 constants so
        that they add no rounding of their own; cached (7 small tensor ops a call otherwise) for the buffers' current
        values (data pointers and version counters: ``.to()``, ``load_state_dict`` and in-place edits rebuild it)."""
        try:
            key = (self.shift.data_ptr(), self.shift._version, self.scale.data_ptr(), self.scale._version)
        except RuntimeError:  # inference-mode buffers track no version: edits could not be seen
            key = None
        cacheable = key is not None and not torch.compiler.is_compiling() and not torch.is_inference_mode_enabled()
        if cacheable:
            hit = self.__dict__.setdefault("_affine_cache", {}).get(dtype)
            if hit is not None and hit[0] == key:
                return hit[1]
        scale = self.scale.to(torch.float64)
        mult = (2.0 / scale).to(dtype)
        add = ((-1.0 - self.shift.to(torch.float64)) / scale).to(dtype)
        if cacheable:
            self.__dict__["_affine_cache"][dtype] = (key, (mult, add))
        return mult, add

    def forward(
        self,
        x: torch.Tensor,
        taps: Sequence[int] | None = None,
        *,
        unit_input: bool = False,
        frozen_format: str | None = None,
    ) -> list[torch.Tensor]:
        """Tapped features of ``x`` (``[B, 3, H, W]`` in ``[-1, 1]``, or in ``[0, 1]`` with ``unit_input``);
        ``taps`` selects (sorted) tap indices.

        ``frozen_format``: the layout of the frozen CPU copy, when that serves (default ``frozen_format`` of the
        class); :class:`~percept_fast.metric.PerceptualMetric` passes ``input_grad_format`` for a loss' target, so
        that both sides' features share one layout.

        The network runs only up to the last requested tap.
        """
        idx = list(range(self.num_taps)) if taps is None else list(taps)
        if not idx:
            return []
        if frozen_format not in (None, "mkldnn", "channels_last", "packed"):
            raise ValueError(
                f"frozen_format: expected None, 'mkldnn', 'channels_last' or 'packed', got {frozen_format!r}"
            )
        frozen = self._frozen_runner(x, max(idx), fmt=frozen_format)
        if frozen is None:
            xs = self.scale_input(x, unit_input)
            feats = self._input_grad_taps(xs, max(idx)) if self._input_grad_only(x) else None
            if feats is None:
                feats = self._forward_taps(xs, max(idx))
        else:  # the scaling writes the frozen copy's input layout (oneDNN's reorder from NCHW is the cheaper one)
            fmt = frozen_format or self.frozen_format
            mf = torch.channels_last if fmt in ("channels_last", "packed") else torch.contiguous_format
            feats = frozen(self.scale_input(x, unit_input, memory_format=mf))
        return [feats[i] for i in idx]

    # ------------------------------------------------------------------ frozen input gradient
    def _input_grad_only(self, x: torch.Tensor) -> bool:
        """True when autograd needs the gradient w.r.t. ``x`` only (a perceptual loss of a frozen backbone) and
        ``frozen_input_grad`` is on: the trunk may then run :mod:`percept_fast.backbones.frozen_grad`."""
        if not self.frozen_input_grad or self.training or not torch.is_grad_enabled() or not x.requires_grad:
            return False
        if torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type):
            return False  # torch.compile traces the eager modules; autocast must see the eager ops to apply
        return not any(p.requires_grad for p in self.parameters())

    def _input_grad_taps(self, x: torch.Tensor, last: int) -> list[torch.Tensor] | None:
        """Taps ``0..last`` of the scaled input ``x``, differentiable w.r.t. ``x`` only; None: not supported (the
        eager trunk and autograd serve)."""
        return None

    # ------------------------------------------------------------------ frozen inference
    def _frozen_trunk(self, last: int) -> tuple[nn.Module, list[int]] | None:
        """``(sequential trunk up to tap last, indices of its tap layers)`` for the frozen path, or None."""
        return None

    def _frozen_tap_ends(self, last: int) -> list[int]:
        """``_frozen_trunk(last)[1]`` (a subclass may give it without building the trunk's ``nn.Sequential``)."""
        return self._frozen_trunk(last)[1]

    def _frozen_runner(self, x: torch.Tensor, last: int, ends: list[int] | None = None, fmt: str | None = None):
        """The frozen copy of the trunk up to tap ``last`` returning its taps (or the outputs of the layers ``ends``),
        in the layout ``fmt`` ('mkldnn', 'channels_last' or 'packed'; default ``frozen_format``), or None when it cannot
        serve ``x``. A 'packed' runner also has ``conv_input_grad(i, g)`` (:class:`PackedTrunk`)."""
        if not self.frozen_inference or self.training or self.__dict__.get("_frozen_failed", False):
            return None
        if torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type):
            return None  # torch.compile traces the eager modules; autocast must see the eager ops to apply
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
            return None
        grad = torch.is_grad_enabled()
        if grad and x.requires_grad:
            return None  # autograd needs the eager graph
        params = list(self.parameters())
        if grad and any(p.requires_grad for p in params):
            return None
        if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
            return None
        # version counters catch in-place edits (load_state_dict, p.data.mul_); data pointers catch .to()
        try:
            key = (last, tuple((p.data_ptr(), p._version) for p in params))
        except RuntimeError:  # inference-mode parameters track no version: edits could not be seen
            return None
        fmt = self.frozen_format if fmt is None else fmt
        if fmt == "packed":
            trunk = self._packed_trunk(last, x, key)
            if trunk is not None:
                return trunk.runner(list(ends) if ends is not None else self._frozen_tap_ends(last))
            fmt = "channels_last"  # a trunk PackedTrunk cannot run: the TorchScript copy in the same layout
        slot = (last, None if ends is None else tuple(ends), fmt)
        hit = self._frozen_cache_hit(slot, key)
        if hit is not None:
            return hit
        spec = self._frozen_trunk(last)
        if spec is None:
            return None
        if ends is not None:
            spec = (spec[0], list(ends))
        try:
            runner = _build_frozen(*spec, channels_last=fmt == "channels_last")
        except Exception:  # pragma: no cover - TorchScript unavailable/unsupported: the eager path is exact
            self.__dict__["_frozen_failed"] = True
            return None
        self.__dict__["_frozen_cache"][slot] = (key, runner)
        return runner

    def _frozen_cache_hit(self, slot, key):
        """The frozen cache's entry ``slot`` if it was built for the parameters' versions ``key``, else None."""
        hit = self.__dict__.setdefault("_frozen_cache", {}).get(slot)
        return hit[1] if hit is not None and hit[0] == key else None

    # at most this many input shapes keep packed weights (each holds two oneDNN copies of the trunk's weights)
    _packed_shapes = 2

    def _packed_trunk(self, last: int, x: torch.Tensor, key) -> PackedTrunk | None:
        """The :class:`~percept_fast.backbones.packed_trunk.PackedTrunk` of the trunk up to tap ``last`` for inputs of
        ``x``'s shape, cached with the frozen copies (``key``: the parameters' versions), or None when the trunk is not
        a plain Conv2d / ReLU / MaxPool2d sequence or oneDNN is missing."""
        slot = ("packed", last, tuple(x.shape))
        hit = self._frozen_cache_hit(slot, key)
        if hit is not None:
            return hit
        spec = self._frozen_trunk(last)
        if spec is None:
            return None
        layers = list(spec[0])
        if not supports_input_grad_trunk(layers) or not packed_trunk_available(x, layers):
            return None
        cache = self.__dict__["_frozen_cache"]
        cache.pop(slot, None)
        packed = [k for k in cache if isinstance(k, tuple) and k and k[0] == "packed"]
        for old in packed[: max(0, len(packed) - self._packed_shapes + 1)]:  # oldest first (insertion order)
            del cache[old]
        cache[slot] = (key, PackedTrunk(layers, slot[2]))
        return cache[slot][1]

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_frozen_cache", None)  # a derived copy of the weights: rebuilt on demand
        state.pop("_affine_cache", None)  # derived from the buffers: rebuilt on demand
        return state

    def _forward_taps(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ weights
    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a foreign state dict (e.g. timm layout) to this module's keys; identity by default."""
        return dict(state_dict)

    def load_weights(self, weights: str | os.PathLike | Mapping[str, torch.Tensor]) -> Backbone:
        """Load torchvision-layout (or, for ViT, timm-layout) weights from a local file or a state dict.

        Classifier heads are ignored; anything else that does not fit raises ``ValueError`` naming the
        file and the keys. Returns ``self``.
        """
        if isinstance(weights, Mapping):
            sd, source = dict(weights), None
        else:
            sd, source = load_state_dict_file(weights), weights
        sd = self.convert_state_dict(sd)
        load_into(self, sd, source=source, ignore_prefixes=self.ignored_prefixes)
        return self


class _TapRunner(nn.Module):
    """A sequential trunk returning the outputs of its tap layers (TorchScript-able)."""

    def __init__(self, trunk: nn.Module, ends: list[int]):
        super().__init__()
        self.trunk = trunk
        self.ends = ends

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        i = 0
        for layer in self.trunk:
            x = layer(x)
            if i in self.ends:
                out.append(x)
            i += 1
        return out


def _build_frozen(trunk: nn.Module, ends: list[int], channels_last: bool = False):
    """Frozen TorchScript copy of ``trunk`` (weights copied; the original is untouched): channels_last weights and
    ``torch.jit.freeze`` only, or NCHW weights and ``optimize_for_inference`` (oneDNN prepacked, blocked layouts)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.inference_mode(False), torch.no_grad():
        trunk = copy.deepcopy(trunk).to(memory_format=fmt)
        layers = list(trunk)
        for i, layer in enumerate(layers):
            # a ReLU right after a convolution whose output nothing else reads can write in place (saves a buffer;
            # optimize_for_inference fuses that pair anyway)
            if isinstance(layer, nn.ReLU) and i > 0 and isinstance(layers[i - 1], nn.Conv2d) and i - 1 not in ends:
                layer.inplace = True
        runner = _TapRunner(trunk, list(ends)).eval()
        for p in runner.parameters():
            p.requires_grad_(False)
        frozen = torch.jit.freeze(torch.jit.script(runner))
        return frozen if channels_last else torch.jit.optimize_for_inference(frozen)
