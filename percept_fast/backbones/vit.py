"""Vision Transformer feature extractor of any patch size / width / depth / heads.

Parameter names follow torchvision's ``VisionTransformer`` (``conv_proj``, ``class_token``,
``encoder.pos_embedding``, ``encoder.layers.encoder_layer_{i}.{ln_1, self_attention.in_proj_weight, ...,
ln_2, mlp.0, mlp.3}``), so torchvision state dicts load by key (``heads.*`` and the final ``encoder.ln.*``
are ignored: the taps are block outputs before the final norm). timm-layout state dicts
(``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2,
mlp.fc1, mlp.fc2}``; ``norm``/``fc_norm``/``head`` ignored) are mapped by :func:`timm_to_torchvision`;
``load_weights`` detects the layout. Unsupported timm variants (layer scale, register tokens,
``no_embed_class``, q/k norms with parameters) fail with the unexpected keys named.

Taps: the tokens after the chosen blocks with the class token dropped, reshaped to
``[B, C, H / p, W / p]``. Input height and width must be multiples of the patch size. When the token grid
differs from the one the position embeddings were trained for (``image_size / patch_size``), the grid part
of the embeddings is resampled bicubically (``align_corners=False``, antialiased, as timm's
``resample_abs_pos_embed``); at the native size nothing is resampled, so the output equals torchvision's.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone

__all__ = ["ViTFeatures", "VIT_PRESETS", "timm_to_torchvision"]

# name -> (patch_size, hidden_dim, depth, num_heads, mlp_dim)
VIT_PRESETS = {
    "vit_ti_16": (16, 192, 12, 3, 768),
    "vit_s_16": (16, 384, 12, 6, 1536),
    "vit_s_32": (32, 384, 12, 6, 1536),
    "vit_b_16": (16, 768, 12, 12, 3072),
    "vit_b_32": (32, 768, 12, 12, 3072),
    "vit_l_16": (16, 1024, 24, 16, 4096),
    "vit_l_32": (32, 1024, 24, 16, 4096),
    "vit_h_14": (14, 1280, 32, 16, 5120),
}

_TIMM_BLOCK = [
    ("norm1.", "ln_1."),
    ("attn.qkv.weight", "self_attention.in_proj_weight"),
    ("attn.qkv.bias", "self_attention.in_proj_bias"),
    ("attn.proj.", "self_attention.out_proj."),
    ("norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.0."),
    ("mlp.fc2.", "mlp.3."),
]


def timm_to_torchvision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``VisionTransformer`` state dict to torchvision's keys (unknown keys kept as they are)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        nk = k
        if k == "cls_token":
            nk = "class_token"
        elif k == "pos_embed":
            nk = "encoder.pos_embedding"
        elif k.startswith("patch_embed.proj."):
            nk = "conv_proj." + k[len("patch_embed.proj.") :]
        elif k.startswith("norm."):
            nk = "encoder.ln." + k[len("norm.") :]
        elif k.startswith(("fc_norm.", "head.")):
            nk = "heads." + k  # classifier parts: ignored by ViTFeatures
        else:
            m = re.match(r"^blocks\.(\d+)\.(.*)$", k)
            if m:
                rest = m.group(2)
                for a, b in _TIMM_BLOCK:
                    if rest.startswith(a):
                        rest = b + rest[len(a) :]
                        break
                else:
                    rest = "timm_unsupported." + rest
                nk = f"encoder.layers.encoder_layer_{m.group(1)}.{rest}"
        out[nk] = v
    return out


def _is_timm(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("blocks.", "patch_embed.")) or k in ("cls_token", "pos_embed") for k in state_dict)


class _SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names (packed q/k/v projection)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if qkv_bias else None
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class _EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, qkv_bias: bool = True, eps: float = 1e-6):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.self_attention = _SelfAttention(dim, heads, qkv_bias)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp_dim, dim), nn.Dropout(0.0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Encoder(nn.Module):
    def __init__(self, seq_len: int, depth: int, dim: int, heads: int, mlp_dim: int, qkv_bias: bool, eps: float):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_len, dim).normal_(std=0.02))
        self.layers = nn.Sequential(
            OrderedDict((f"encoder_layer_{i}", _EncoderBlock(dim, heads, mlp_dim, qkv_bias, eps)) for i in range(depth))
        )


def _default_taps(depth: int, n: int = 4) -> list[int]:
    return sorted({max(0, depth * (k + 1) // n - 1) for k in range(n)})


class ViTFeatures(Backbone):
    """ViT trunk; taps are the token maps after the blocks listed in ``taps`` (0-based block indices).

    ``taps=None`` taps four evenly spaced blocks ending with the last one (e.g. 2, 5, 8, 11 for depth 12).
    ``image_size`` fixes the native token grid of the position embeddings (``image_size // patch_size``).
    ``class_token=False`` builds a ViT without class token (then all tokens have position embeddings).
    """

    ignored_prefixes = ("heads.", "encoder.ln.")

    def __init__(
        self,
        patch_size: int = 16,
        hidden_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int | None = None,
        *,
        image_size: int = 224,
        taps: Sequence[int] | None = None,
        class_token: bool = True,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        input_mean: Sequence[float] | None = IMAGENET_MEAN,
        input_std: Sequence[float] | None = IMAGENET_STD,
    ):
        super().__init__(input_mean, input_std)
        for name, val in (
            ("patch_size", patch_size),
            ("hidden_dim", hidden_dim),
            ("depth", depth),
            ("num_heads", num_heads),
        ):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name}: expected a positive int, got {val!r}")
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim: {hidden_dim} is not divisible by num_heads={num_heads}")
        if image_size % patch_size:
            raise ValueError(f"image_size: {image_size} is not a multiple of patch_size={patch_size}")
        mlp_dim = 4 * hidden_dim if mlp_dim is None else int(mlp_dim)
        taps = _default_taps(depth) if taps is None else [int(t) for t in taps]
        if not taps or any(not 0 <= t < depth for t in taps) or sorted(set(taps)) != taps:
            raise ValueError(f"taps: expected increasing block indices in [0, {depth}), got {taps}")
        self.patch_size, self.hidden_dim, self.depth, self.num_heads = patch_size, hidden_dim, depth, num_heads
        self.image_size = image_size
        self.grid = image_size // patch_size
        self.block_taps = taps
        self.tap_names = [f"block{t}" for t in taps]
        self.channels = [hidden_dim] * len(taps)
        self.num_prefix = 1 if class_token else 0

        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        if class_token:
            self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        else:
            self.class_token = None
        self.encoder = _Encoder(
            self.grid**2 + self.num_prefix, depth, hidden_dim, num_heads, mlp_dim, qkv_bias, norm_eps
        )

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> ViTFeatures:
        if name not in VIT_PRESETS:
            raise ValueError(f"name: unknown ViT preset {name!r}; known: {sorted(VIT_PRESETS)}")
        p, d, depth, h, m = VIT_PRESETS[name]
        return cls(p, d, depth, h, m, **kwargs)

    @property
    def min_input_size(self) -> int:
        return self.patch_size

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return timm_to_torchvision(state_dict) if _is_timm(state_dict) else dict(state_dict)

    def _pos_embedding(self, gh: int, gw: int, dtype: torch.dtype) -> torch.Tensor:
        pos = self.encoder.pos_embedding
        if gh == self.grid and gw == self.grid:
            return pos.to(dtype)
        prefix, grid = pos[:, : self.num_prefix], pos[:, self.num_prefix :]
        g = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2).float()
        g = F.interpolate(g, size=(gh, gw), mode="bicubic", align_corners=False, antialias=True)
        g = g.permute(0, 2, 3, 1).reshape(1, gh * gw, -1).to(pos.dtype)
        return torch.cat([prefix, g], dim=1).to(dtype)

    def _forward_taps(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"x: height and width must be multiples of the patch size {p}, got {h}x{w}")
        gh, gw = h // p, w // p
        t = self.conv_proj(x).flatten(2).transpose(1, 2)
        if self.class_token is not None:
            t = torch.cat([self.class_token.to(t.dtype).expand(b, -1, -1), t], dim=1)
        t = t + self._pos_embedding(gh, gw, t.dtype)
        out = []
        last_block = self.block_taps[last]
        for i, layer in enumerate(self.encoder.layers):
            t = layer(t)
            if i in self.block_taps:
                out.append(t[:, self.num_prefix :].transpose(1, 2).reshape(b, self.hidden_dim, gh, gw))
            if i == last_block:
                break
        return out
