"""Image files for ``percept-fast dist | dirs | pairs``: listing, decoding, resizing, bad-input reports.

Decoding follows lpips' own loader (``lpips.load_image``, OpenCV's ``IMREAD_COLOR``): every image becomes 8-bit
RGB, grayscale replicated to three channels, an alpha channel dropped (not composited), 16-bit images scaled to
8 bits. ``size``: ``None`` keeps the stored size (lpips' scripts do not resize); an int resizes to
``size x size`` with PIL bicubic, as lpips' BAPPS loader (and ``percept-fast score --load-size``) does.

Decoding runs in :class:`torch.utils.data.DataLoader` workers: a dataset item is ``(index, uint8 [3, H, W] or
None, error message or None)``, so one bad file never kills a worker; the caller decides to skip or stop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "IMAGE_EXTS",
    "ImageError",
    "list_images",
    "match_names",
    "decode_image",
    "ImageFiles",
    "collate_items",
    "image_loader",
]

# extensions lpips' loader decodes with OpenCV, plus what PIL reads commonly
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageError(ValueError):
    """An input image or folder cannot be used; the message names the file (or folder) and the reason."""


def list_images(folder: str | os.PathLike, what: str = "DIR") -> list[Path]:
    """The image files (by extension, hidden files left out) directly in ``folder``, sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageError(f"{what}: not a directory: {d}")
    files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and _is_image_name(p))
    if not files:
        raise ImageError(f"{what}: no image files ({', '.join(IMAGE_EXTS)}) in {d}")
    return files


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS


def match_names(files0: Sequence[Path], files1: Sequence[Path]) -> tuple[list[str], list[str], list[str]]:
    """``(common, only_in_0, only_in_1)`` file names (sorted), matching by the full file name as lpips' script."""
    n0 = {p.name for p in files0}
    n1 = {p.name for p in files1}
    return sorted(n0 & n1), sorted(n0 - n1), sorted(n1 - n0)


def decode_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """``uint8 [3, H, W]`` RGB of the image at ``path`` (see the module docstring); raises :class:`ImageError`
    naming the file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: scale to 8 bits
                arr = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
                im = Image.fromarray(np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
            rgb = im.convert("RGB")  # gray replicated, alpha dropped, palette expanded
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.BICUBIC)
            arr = np.asarray(rgb, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot decode as an image ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{path}: decoded to an unusable shape {arr.shape}")
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class ImageFiles(Dataset):
    """Decodes ``paths[i]`` (resized to ``size``) in a DataLoader worker; see the module docstring for items."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: int | None = None):
        self.paths = [Path(p) for p in paths]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, decode_image(self.paths[i], self.size), None
        except ImageError as e:
            return i, None, str(e)


def collate_items(items):
    """Keeps a batch as lists (images of different sizes cannot be stacked; the caller groups them)."""
    idx = [it[0] for it in items]
    imgs = [it[1] for it in items]
    errs = [it[2] for it in items]
    return idx, imgs, errs


def image_loader(
    dataset: Dataset, batch_indices: Sequence[Sequence[int]], workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """A DataLoader over the given batches of ``dataset`` (decoding in ``workers`` processes, in order)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[list(b) for b in batch_indices],
        num_workers=workers,
        collate_fn=collate_items,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
