"""``PerceptualMetric``: deep-feature perceptual distance between two images (module and functional form).

A backbone's tapped feature maps compared by a distance op of :mod:`percept_fast.ops` (``'lpips'`` by default,
with lpips' shipped lin weights for alex/vgg/squeeze: ``lpips.LPIPS(net=...)``; ``'style'``; ``'meanpool'``).
Conventions, weights and checks: ``docs/percept_fast.md#perceptualmetric``. Nothing is downloaded.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .backbones import AlexNetFeatures, Backbone, SqueezeNet11Features, VGG16Features, build_backbone, canonical_name
from .ops import _common as ops_common
from .ops import lpips_distance, meanpool_distance, style_distance
from .weights import LPIPS_NETS, load_into, load_lpips_lin_weights, load_state_dict_file, lpips_lin_weights_path

__all__ = ["PerceptualMetric", "perceptual_distance", "DISTANCES"]

DISTANCES = ("lpips", "style", "meanpool")
_OPS = {"lpips": lpips_distance, "style": style_distance, "meanpool": meanpool_distance}
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_RANGE_TOL = 1e-5
# op arguments the metric sets itself -> the metric's argument that controls them
_RESERVED = {
    "weight": "lin_weights",
    "backend": "backend",
    "per_layer": "per_layer (of forward / distance_from_features)",
    "spatial": "spatial",
    "check_finite": "check_input",
}


def _op_options(distance: str) -> tuple[str, ...]:
    """The keyword arguments of the distance op that ``distance_kwargs`` may set."""
    params = inspect.signature(_OPS[distance]).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _RESERVED)


def _features_finite(fs: Sequence[torch.Tensor]) -> bool:
    """True when every map is finite, proven by a finite sum (one read, no [B, C, H, W] bool temporary: the ops'
    ``isfinite(x).all()`` scan cost 8x the lpips kernel itself on AlexNet taps). A non-finite sum (NaN/Inf
    inside, or an overflow of large finite values) gives False and the op's exact scan decides."""
    for f in fs:
        if not isinstance(f, torch.Tensor) or not f.is_floating_point() or f.numel() == 0:
            return False  # let the op report it
        if not bool(torch.isfinite(f.sum(dtype=torch.float64 if f.dtype == torch.float64 else torch.float32))):
            return False
    return True


def _upsample_sum(maps: Sequence[torch.Tensor], size: tuple[int, int], per_layer: bool) -> torch.Tensor:
    """lpips' ``spatial=True`` output: every layer's ``[B, 1, h, w]`` map bilinearly upsampled to ``size``
    (``nn.Upsample(size, mode='bilinear', align_corners=False)``), summed over layers in order (``[B, 1, H, W]``),
    or stacked (``[B, L, H, W]``) with ``per_layer``."""
    up = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
    if per_layer:
        return torch.cat(up, dim=1)
    total = up[0]
    for u in up[1:]:
        total = total + u
    return total


def _backbone_lpips_name(backbone) -> str | None:
    if isinstance(backbone, str):
        key = canonical_name(backbone)
        return key if key in LPIPS_NETS else None
    for cls, key in ((AlexNetFeatures, "alex"), (VGG16Features, "vgg"), (SqueezeNet11Features, "squeeze")):
        if type(backbone) is cls:
            return key
    return None


class PerceptualMetric(nn.Module):
    """Perceptual distance ``d(x0, x1)`` per image pair from deep features (see the module docstring).

    Args:
        backbone: ``'alex'`` | ``'vgg'`` | ``'squeeze'`` | ``'resnet<depth>'`` | ``'vit_b_16'`` | ... (see
            :func:`percept_fast.backbones.build_backbone`) or an ``nn.Module``. A :class:`Backbone` applies
            its own input scaling; any other module receives the ``[-1, 1]`` images and must return a list
            (or tuple) of ``[B, C, H, W]`` maps.
        layers: taps to use (indices or tap names, in network order); ``None`` uses all.
        distance: ``'lpips'`` | ``'style'`` | ``'meanpool'``.
        lin_weights: only for ``'lpips'``: ``'auto'`` (default: ``'lpips'`` for the alex/vgg/squeeze backbones,
            so the metric is LPIPS, else ``None``), ``None`` (every channel weighted 1: lpips' ``lpips=False``
            baseline), ``'lpips'`` (the v0.1 weights shipped in the installed ``lpips`` package, read from its
            files), a path to a file with ``lin<i>.model.<j>.weight`` keys, or a list of ``[C]`` /
            ``[1, C, 1, 1]`` tensors. A file with one weight per backbone tap is subset to ``layers``; otherwise
            there must be one per selected layer.
        normalize_input: ``True``: inputs in ``[0, 1]`` (mapped to ``[-1, 1]``); ``False``: inputs in ``[-1, 1]``.
        backend: passed to the distance op (``'auto'`` | ``'torch'`` | ``'cpu'`` | ``'triton'`` | ``'cuda'``).
        spatial: (lpips only) return lpips-style distance maps ``[B, 1, H, W]`` at the input size (every
            layer's map bilinearly upsampled, ``align_corners=False``, and summed), as ``lpips.LPIPS(spatial=True)``.
        backbone_weights: local file (or state dict) with the backbone's weights in torchvision layout (timm
            layout for ViTs); ``'random'`` keeps the random initialisation; ``None`` keeps it too but, for a
            backbone given by name, warns, because a random backbone is rarely what is meant. A module
            backbone keeps its own weights unless ``backbone_weights`` is given.
        backbone_kwargs: extra arguments for the named backbone (e.g. ``{'width': 0.5}``, ``{'taps': [3, 7]}``).
        distance_kwargs: extra keyword arguments for the distance op (lpips / meanpool: ``eps``, ``normalize``;
            style: ``normalize``, ``method``), e.g. ``{'normalize': 'stable'}``.
        check_input: validate shape, dtype, device, finiteness and value range of the images (one
            reduction per image tensor) and the features' finiteness (the op's ``check_finite``); ``False`` skips
            the value checks (the shape checks stay). Eager CPU tensors raise ``ValueError`` at once; on CUDA and
            under torch.compile the checks are device-side asserts (no host synchronisation).
        requires_grad: make the backbone and lin weights trainable (default: frozen). The backbone stays in
            eval mode whatever ``train()`` says unless this is set.
        frozen_backbone: for a backbone built by name, run gradient-free CPU float32 inference (NCHW or
            channels_last inputs) through a frozen TorchScript copy of its trunk (alex/vgg/squeeze: oneDNN
            prepacked convolutions, ~1.3x faster AlexNet and VGG16, ~1.1x SqueezeNet over eager channels_last;
            features equal to float32 rounding; see :mod:`percept_fast.backbones.base`); and, used as a loss (only
            the images need a gradient), differentiate the frozen alex/vgg trunk with
            :mod:`percept_fast.backbones.frozen_grad` (keeps only ReLU outputs / masks; the same gradient to float32
            rounding). ``False`` keeps eager PyTorch and autograd. Autocast and torch.compile always run eagerly.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "alex",
        layers: Sequence[int | str] | None = None,
        distance: str = "lpips",
        lin_weights: str | os.PathLike | Sequence[torch.Tensor] | None = "auto",
        normalize_input: bool = True,
        backend: str = "auto",
        *,
        spatial: bool = False,
        backbone_weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
        backbone_kwargs: Mapping[str, object] | None = None,
        distance_kwargs: Mapping[str, object] | None = None,
        check_input: bool = True,
        requires_grad: bool = False,
        frozen_backbone: bool = True,
    ):
        super().__init__()
        if not isinstance(distance, str) or distance not in DISTANCES:
            raise ValueError(f"distance: expected one of {DISTANCES}, got {distance!r}")
        if not isinstance(normalize_input, bool):
            raise TypeError(f"normalize_input: expected a bool, got {type(normalize_input).__name__}")
        if not isinstance(backend, str):
            raise TypeError(f"backend: expected a str, got {type(backend).__name__}")
        self.distance = distance
        self.normalize_input = normalize_input
        self.backend = backend
        self.check_input = bool(check_input)
        self.train_backbone = bool(requires_grad)
        if not isinstance(spatial, bool):
            raise TypeError(f"spatial: expected a bool, got {type(spatial).__name__}")
        if spatial and distance != "lpips":
            raise ValueError(f"spatial: maps exist only for distance='lpips', got distance={distance!r}")
        self.spatial = spatial
        self.distance_kwargs = dict(distance_kwargs or {})
        allowed = _op_options(distance)
        for key in self.distance_kwargs:
            if key in _RESERVED:
                raise ValueError(f"distance_kwargs: {key!r} is set by the metric; use its argument {_RESERVED[key]}")
            if key not in allowed:
                raise ValueError(
                    f"distance_kwargs: {key!r} is not an option of the {distance!r} distance (options: {allowed})"
                )
        self._op = _OPS[distance]

        # ---- backbone
        lpips_name = _backbone_lpips_name(backbone)
        if not isinstance(frozen_backbone, bool):
            raise TypeError(f"frozen_backbone: expected a bool, got {type(frozen_backbone).__name__}")
        if isinstance(backbone, str):
            self.backbone_name = canonical_name(backbone)
            net = build_backbone(backbone, **dict(backbone_kwargs or {}))
            if isinstance(net, Backbone):
                net.frozen_inference = frozen_backbone
                net.frozen_input_grad = frozen_backbone
            if backbone_weights is None:
                warnings.warn(
                    f"PerceptualMetric: backbone {backbone!r} has random weights; pass backbone_weights=<local "
                    "torchvision state-dict file> (or backbone_weights='random' to silence this)",
                    UserWarning,
                    stacklevel=2,
                )
        elif isinstance(backbone, nn.Module):
            if backbone_kwargs:
                raise ValueError("backbone_kwargs: only used with a backbone name, not with an nn.Module")
            self.backbone_name = type(backbone).__name__
            net = backbone
        else:
            raise TypeError(f"backbone: expected a name or an nn.Module, got {type(backbone).__name__}")
        if backbone_weights is not None and not (isinstance(backbone_weights, str) and backbone_weights == "random"):
            if isinstance(net, Backbone):
                net.load_weights(backbone_weights)
            elif isinstance(backbone_weights, Mapping):
                load_into(net, backbone_weights)
            else:
                load_into(net, load_state_dict_file(backbone_weights), source=backbone_weights)
        self.backbone = net
        if isinstance(net, Backbone):
            self.taps: list[int] | None = net.resolve_taps(layers)
            self.layer_names = [net.tap_names[i] for i in self.taps]
            channels: list[int] | None = [net.channels[i] for i in self.taps]
            all_channels: list[int] | None = list(net.channels)
        else:
            if layers is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
                raise TypeError("layers: a plain nn.Module backbone takes integer indices into its output list")
            self.taps = None if layers is None else [int(i) for i in layers]
            self.layer_names = None if layers is None else [str(i) for i in layers]
            channels = all_channels = None
        self._module_layers = None if isinstance(net, Backbone) else self.taps

        # ---- linear weights
        if isinstance(lin_weights, str) and lin_weights == "auto":  # LPIPS where lpips ships weights
            lin_weights = "lpips" if distance == "lpips" and lpips_name is not None else None
            self._lin_source = "auto"
        else:
            self._lin_source = "user"
        self.lin_weights = nn.ParameterList()
        if lin_weights is not None:
            if distance != "lpips":
                raise ValueError(f"lin_weights: only used with distance='lpips', got distance={distance!r}")
            ws = self._load_lin(lin_weights, lpips_name, channels, all_channels)
            for w in ws:
                self.lin_weights.append(nn.Parameter(w.detach().to(torch.float32).reshape(-1).clone()))
        for p in self.parameters():
            p.requires_grad_(self.train_backbone)
        self.eval()

    # ----------------------------------------------------------------------------------------- setup
    def _load_lin(self, lin_weights, lpips_name, channels, all_channels) -> list[torch.Tensor]:
        if isinstance(lin_weights, str) and lin_weights == "lpips":
            if lpips_name is None:
                raise ValueError(
                    f"lin_weights='lpips' exists only for the lpips backbones {sorted(LPIPS_NETS)}, "
                    f"got backbone {self.backbone_name!r}; pass a lin-weights file instead"
                )
            try:
                lin_weights = lpips_lin_weights_path(lpips_name)
            except FileNotFoundError as e:
                if self._lin_source != "auto":
                    raise
                raise FileNotFoundError(
                    f"lin_weights: the default 'auto' gives LPIPS, whose linear weights are read from the installed "
                    f"lpips package ({e}); pass lin_weights=None for the unweighted baseline (lpips' lpips=False) "
                    "or lin_weights=<file>"
                ) from e
        if isinstance(lin_weights, (str, os.PathLike)):
            ws = load_lpips_lin_weights(lin_weights)
            source = repr(str(lin_weights))
        elif isinstance(lin_weights, (list, tuple)) and all(isinstance(w, torch.Tensor) for w in lin_weights):
            ws = []
            for i, w in enumerate(lin_weights):
                if not w.is_floating_point():
                    raise TypeError(f"lin_weights[{i}]: expected a floating tensor, got {w.dtype}")
                if w.dim() not in (1, 4) or (w.dim() == 4 and (w.shape[0], w.shape[2], w.shape[3]) != (1, 1, 1)):
                    raise ValueError(f"lin_weights[{i}]: expected shape [C] or [1, C, 1, 1], got {tuple(w.shape)}")
                ws.append(w.reshape(-1))
            source = "lin_weights"
        else:
            raise TypeError(
                f"lin_weights: expected None, 'lpips', a file path or a list of tensors, got {type(lin_weights).__name__}"
            )
        if channels is None:  # plain module backbone: cannot check channels before a forward
            return ws
        if all_channels is not None and len(ws) == len(all_channels) and len(ws) != len(channels):
            ws = [ws[i] for i in self.taps]  # one weight per backbone tap: keep the selected ones
        if len(ws) != len(channels):
            raise ValueError(
                f"{source}: {len(ws)} linear weights, but {len(channels)} layers are selected "
                f"({self.layer_names}) of {len(all_channels)} backbone taps"
            )
        bad = [f"{n}: {w.numel()} vs {c}" for n, w, c in zip(self.layer_names, ws, channels) if w.numel() != c]
        if bad:
            raise ValueError(f"{source}: linear weights do not match the tapped channels ({'; '.join(bad)})")
        for i, w in enumerate(ws):
            if not bool(torch.isfinite(w).all()):
                raise ValueError(f"{source}: linear weight {i} contains NaN or Inf")
        return ws

    def train(self, mode: bool = True) -> PerceptualMetric:
        super().train(mode)
        if not self.train_backbone:
            self.backbone.eval()  # a frozen metric keeps batch-norm statistics fixed
        return self

    @property
    def num_layers(self) -> int | None:
        return None if self.taps is None else len(self.taps)

    # ------------------------------------------------------------------------------------- validation
    def _param_like(self) -> torch.Tensor | None:
        for t in self.backbone.parameters():
            return t
        for t in self.backbone.buffers():
            if t is not None:
                return t
        return None

    def _check_image(self, x: object, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{name}: expected shape [B, 3, H, W], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: the batch is empty (shape {tuple(x.shape)})")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"{name}: expected a floating image tensor (float32/float16/bfloat16/float64), got {x.dtype}; "
                "convert uint8 images with x.float() / 255"
            )
        min_size = getattr(self.backbone, "min_input_size", 1)
        if min(x.shape[2], x.shape[3]) < min_size:
            raise ValueError(
                f"{name}: images of {x.shape[2]}x{x.shape[3]} are too small for backbone {self.backbone_name!r} "
                f"(needs at least {min_size}x{min_size})"
            )
        ref = self._param_like()
        if ref is not None and ref.device != x.device:
            raise ValueError(f"{name}: expected a tensor on {ref.device} (the metric's device), got {x.device}")
        if self.check_input:
            lo, hi = (0.0, 1.0) if self.normalize_input else (-1.0, 1.0)
            mn, mx = torch.aminmax(x.detach())
            if not ops_common.host_checks(x):  # CUDA / torch.compile: a device-side assert, no host sync
                ok = (mn >= lo - _RANGE_TOL) & (mx <= hi + _RANGE_TOL)  # False for NaN too
                torch._assert_async(ok, f"{name}: values must be finite and lie in [{lo:g}, {hi:g}]")
                return x
            mn, mx = float(mn), float(mx)
            if not (mn >= lo - _RANGE_TOL and mx <= hi + _RANGE_TOL):  # also catches NaN
                if not bool(torch.isfinite(x).all()):
                    raise ValueError(f"{name}: contains NaN or Inf")
                hint = "" if self.normalize_input else " (or use normalize_input=True for [0, 1] images)"
                if self.normalize_input and mn >= -1.0 - _RANGE_TOL:
                    hint = " (for [-1, 1] images use normalize_input=False)"
                raise ValueError(f"{name}: values must lie in [{lo:g}, {hi:g}], got [{mn:.4g}, {mx:.4g}]{hint}")
        return x

    # ------------------------------------------------------------------------------------------- core
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_input and not isinstance(self.backbone, Backbone):
            x = 2 * x - 1  # a Backbone folds this into its input scaling (unit_input, one pass)
        ref = self._param_like()
        if (
            ref is not None
            and ref.is_floating_point()
            and x.dtype != ref.dtype
            and not torch.is_autocast_enabled(x.device.type)
        ):
            x = x.to(ref.dtype)
        return x

    def _extract(self, x: torch.Tensor, frozen_format: str | None = None) -> list[torch.Tensor]:
        if isinstance(self.backbone, Backbone):
            return self.backbone(x, self.taps, unit_input=self.normalize_input, frozen_format=frozen_format)
        out = self.backbone(x)
        if isinstance(out, torch.Tensor) or not isinstance(out, (list, tuple)):
            raise TypeError(f"backbone: a module backbone must return a list of feature maps, got {type(out).__name__}")
        out = list(out)
        if self._module_layers is not None:
            try:
                out = [out[i] for i in self._module_layers]
            except IndexError as e:
                raise ValueError(f"layers: {self._module_layers} out of range for {len(out)} backbone outputs") from e
        return out

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Tapped feature maps of the images ``x`` (``[B, 3, H, W]``, see ``normalize_input``), one per layer."""
        x = self._check_image(x, "x")
        return self._extract(self._prepare(x))

    def distance_from_features(
        self,
        f0: Sequence[torch.Tensor],
        f1: Sequence[torch.Tensor],
        per_layer: bool = False,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Distance ``[B]`` (``[B, L]`` with ``per_layer``) between two lists of tapped maps from ``features``.

        With ``spatial``: maps ``[B, 1, H, W]`` (``[B, L, H, W]`` with ``per_layer``) at ``image_size`` ``(H, W)``,
        the size of the images the features came from (required then)."""
        if not isinstance(per_layer, bool):
            raise TypeError(f"per_layer: expected a bool, got {type(per_layer).__name__}")
        for name, f in (("f0", f0), ("f1", f1)):
            if isinstance(f, torch.Tensor) or not isinstance(f, (list, tuple)):
                raise TypeError(
                    f"{name}: expected the list of feature maps returned by features(), got {type(f).__name__}"
                )
        if len(f0) != len(f1):
            raise ValueError(f"f0, f1: expected the same number of layers, got {len(f0)} and {len(f1)}")
        n = self.num_layers
        if n is not None and len(f0) != n:
            raise ValueError(f"f0, f1: expected {n} feature maps (layers {self.layer_names}), got {len(f0)}")
        if len(self.lin_weights) and len(self.lin_weights) != len(f0):
            raise ValueError(f"f0, f1: {len(f0)} feature maps but {len(self.lin_weights)} linear weights")
        if self.spatial:
            if image_size is None:
                raise ValueError("image_size: required with spatial=True (the maps are upsampled to the image size)")
            if not isinstance(image_size, (tuple, list, torch.Size)) or len(image_size) != 2:
                raise ValueError(f"image_size: expected (H, W), got {image_size!r}")
        f0, f1 = list(f0), list(f1)
        kw = dict(self.distance_kwargs)
        kw["backend"] = self.backend
        # the op's NaN/Inf check: off with check_input=False; left to the lpips C++ kernel, which checks in its own
        # pass (no extra read); on other eager CPU tensors, first proven finite by one sum per map (cheaper than the
        # op's scan on the reference backend)
        check = self.check_input
        if (
            check
            and not self._kernel_checks_finite(f0[0])
            and ops_common.host_checks(f0[0])
            and _features_finite(f0)
            and _features_finite(f1)
        ):
            check = False
        kw["check_finite"] = check
        if len(self.lin_weights):
            kw["weight"] = [w.to(device=f.device) for w, f in zip(self.lin_weights, f0)]
        if self.spatial:
            maps = self._op(f0, f1, spatial=True, **kw)
            return _upsample_sum(maps, tuple(image_size), per_layer)
        return self._op(f0, f1, per_layer=per_layer, **kw)

    def _kernel_checks_finite(self, f: object) -> bool:
        """True when the distance op runs the lpips C++ kernel on ``f``'s device, which checks the features for
        NaN/Inf during its own pass (no extra read; ``ValueError`` naming the map, as the op's scan)."""
        return (
            self.distance == "lpips"
            and self.backend in ("auto", "cpu")
            and isinstance(f, torch.Tensor)
            and f.device.type == "cpu"
            and hasattr(ops_common.cpu_module(), "lpips_forward")
        )

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, per_layer: bool = False) -> torch.Tensor:
        """Distance between image batches ``x0`` and ``x1`` (same shape ``[B, 3, H, W]``): ``[B]`` or ``[B, L]``
        (with ``spatial``: ``[B, 1, H, W]`` or ``[B, L, H, W]`` maps)."""
        x0 = self._check_image(x0, "x0")
        x1 = self._check_image(x1, "x1")
        if x0.shape != x1.shape:
            raise ValueError(f"x0, x1: expected the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        if x0.dtype != x1.dtype:
            raise TypeError(f"x0, x1: expected the same dtype, got {x0.dtype} and {x1.dtype}")
        b = x0.shape[0]
        grad0, grad1 = self._needs_trunk_graph(x0), self._needs_trunk_graph(x1)
        if grad0 != grad1:
            # a loss against a fixed target (the usual training use): only one side needs the trunk's autograd
            # graph. The other runs without one (the frozen fast path on CPU), and the backward runs the trunk
            # for one batch instead of two (one shared pass would differentiate the target's half too).
            moving_x = self._prepare(x0 if grad0 else x1)
            fmt = None  # the target's features in the layout of the prediction's (one fused-kernel path for both)
            if isinstance(self.backbone, Backbone) and self.backbone._input_grad_only(moving_x):
                fmt = self.backbone.input_grad_format
            with torch.no_grad():
                fixed = self._extract(self._prepare(x1 if grad0 else x0), frozen_format=fmt)
            moving = self._extract(moving_x)
            f0, f1 = (moving, fixed) if grad0 else (fixed, moving)
            return self.distance_from_features(f0, f1, per_layer=per_layer, image_size=tuple(x0.shape[2:]))
        # one backbone pass over both batches (batch norm is in eval mode, so samples do not interact)
        feats = self._extract(self._prepare(torch.cat([x0, x1], dim=0)))
        return self.distance_from_features(
            [f[:b] for f in feats], [f[b:] for f in feats], per_layer=per_layer, image_size=tuple(x0.shape[2:])
        )

    def _needs_trunk_graph(self, x: torch.Tensor) -> bool:
        """True when autograd must record the backbone's pass over ``x`` (grad mode, and ``x`` or a backbone
        parameter requires grad)."""
        if not torch.is_grad_enabled():
            return False
        return x.requires_grad or any(p.requires_grad for p in self.backbone.parameters())

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, layers={self.layer_names}, distance={self.distance!r}, "
            f"lin_weights={len(self.lin_weights) or None}, normalize_input={self.normalize_input}, backend={self.backend!r}"
            + (", spatial=True" if self.spatial else "")
        )


# ------------------------------------------------------------------------------------------ functional
_CACHE: OrderedDict[tuple, PerceptualMetric] = OrderedDict()
_CACHE_SIZE = 4


def _freeze(v):
    if isinstance(v, (torch.Tensor, nn.Module)):
        raise TypeError("not cacheable")
    if isinstance(v, Mapping):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if isinstance(v, str) and v not in ("auto", "lpips", "random") and Path(v).is_file():
        st = Path(v).stat()
        return (str(Path(v).resolve()), st.st_mtime_ns, st.st_size)
    hash(v)
    return v


def perceptual_distance(
    x0: torch.Tensor,
    x1: torch.Tensor,
    backbone: str | nn.Module = "alex",
    layers: Sequence[int | str] | None = None,
    distance: str = "lpips",
    lin_weights: str | os.PathLike | Sequence[torch.Tensor] | None = "auto",
    normalize_input: bool = True,
    backend: str = "auto",
    per_layer: bool = False,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`PerceptualMetric` (same arguments; ``kwargs`` go to its constructor).

    Metrics built from names and file paths are cached (the last 4 configurations, keyed by the arguments,
    the files' modification times and the input's device and dtype), so repeated calls do not reload weights.
    A module backbone or tensor weights are wrapped anew on every call.
    """
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0: expected a torch.Tensor, got {type(x0).__name__}")
    try:
        key = _freeze((backbone, layers, distance, lin_weights, normalize_input, backend, kwargs))
        key = key + (str(x0.device), x0.dtype)
    except TypeError:  # unhashable configuration (module backbone, tensors): no caching
        key = None
    metric = _CACHE.get(key) if key is not None else None
    if metric is None:
        metric = PerceptualMetric(backbone, layers, distance, lin_weights, normalize_input, backend, **kwargs)
        metric = metric.to(x0.device)
        if x0.dtype == torch.float64:
            metric = metric.to(x0.dtype)
        if key is not None:
            _CACHE[key] = metric
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return metric(x0, x1, per_layer=per_layer)
