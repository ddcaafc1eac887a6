"""Reader for the BAPPS data set (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features
as a Perceptual Metric") in its on-disk layout::

    <root>/2afc/{train,val}/<subset>/{ref,p0,p1}/<id>.png   images
    <root>/2afc/{train,val}/<subset>/judge/<id>.npy          p = fraction of humans preferring p1
    <root>/jnd/val/<subset>/{p0,p1}/<id>.png                 images
    <root>/jnd/val/<subset>/same/<id>.npy                    fraction of humans judging p0, p1 the same

Subsets of the real data set: 2AFC train ``traditional, cnn, mix``; 2AFC val ``traditional, cnn,
superres, deblur, color, frameinterp``; JND val ``traditional, cnn``. A root may hold any subset of
these (or other names); :func:`list_subsets` reports what is present.

Images are returned as float32 tensors ``[3, H, W]`` in ``[0, 1]``; with ``load_size`` they are
resized with PIL bicubic to ``load_size x load_size`` as the lpips package does (64 by default there).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "TWOAFC_SUBSETS",
    "JND_SUBSETS",
    "IMAGE_EXTS",
    "BAPPSError",
    "TwoAFCDataset",
    "JNDDataset",
    "list_subsets",
    "load_image",
    "data_fingerprint",
    "write_item",
]

TWOAFC_SUBSETS: dict[str, tuple[str, ...]] = {
    "train": ("traditional", "cnn", "mix"),
    "val": ("traditional", "cnn", "superres", "deblur", "color", "frameinterp"),
}
JND_SUBSETS: dict[str, tuple[str, ...]] = {"val": ("traditional", "cnn")}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")

_KIND_DIRS = {"2afc": (("ref", "p0", "p1"), "judge"), "jnd": (("p0", "p1"), "same")}


class BAPPSError(ValueError):
    """A BAPPS directory is missing, incomplete or inconsistent."""


def _check_kind(kind: str) -> None:
    if kind not in _KIND_DIRS:
        raise ValueError(f"kind: expected '2afc' or 'jnd', got {kind!r}")


def list_subsets(root: str | os.PathLike, kind: str, split: str = "val") -> list[str]:
    """Names of the subsets present under ``root/kind/split`` (sorted; known BAPPS subsets first in their
    canonical order). Returns ``[]`` when the directory does not exist."""
    _check_kind(kind)
    base = Path(root) / kind / split
    if not base.is_dir():
        return []
    present = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    canon = (TWOAFC_SUBSETS if kind == "2afc" else JND_SUBSETS).get(split, ())
    return [s for s in canon if s in present] + [s for s in present if s not in canon]


def load_image(path: str | os.PathLike, load_size: int | None = None) -> torch.Tensor:
    """Load an image as float32 ``[3, H, W]`` in ``[0, 1]`` (RGB), optionally bicubic-resized to a square."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if load_size is not None and im.size != (load_size, load_size):
                im = im.resize((load_size, load_size), Image.BICUBIC)
            arr = np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise BAPPSError(f"missing image file: {path}") from None
    except OSError as e:
        raise BAPPSError(f"cannot read image file {path}: {e}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32).div_(255.0)


def _load_scalar(path: Path) -> float:
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BAPPSError(f"missing judgement file: {path}") from None
    except (OSError, ValueError) as e:
        raise BAPPSError(f"cannot read judgement file {path}: {e}") from None
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size != 1:
        raise BAPPSError(f"judgement file {path}: expected a single value, got shape {a.shape}")
    v = float(a[0])
    if not np.isfinite(v) or v < 0.0 or v > 1.0:
        raise BAPPSError(f"judgement file {path}: expected a fraction in [0, 1], got {v}")
    return v


def _stems(d: Path, exts: Sequence[str]) -> dict[str, Path]:
    if not d.is_dir():
        raise BAPPSError(f"missing directory: {d}")
    out: dict[str, Path] = {}
    for p in d.iterdir():
        if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."):
            if p.stem in out:
                raise BAPPSError(f"duplicate entries for id {p.stem!r} in {d}")
            out[p.stem] = p
    return out


class _BAPPSBase(Dataset):
    kind = ""

    def __init__(
        self,
        root: str | os.PathLike,
        subset: str,
        split: str = "val",
        load_size: int | None = 64,
        preload: bool = False,
    ):
        if load_size is not None and (not isinstance(load_size, int) or load_size <= 0):
            raise ValueError(f"load_size: expected a positive int or None, got {load_size!r}")
        self.root = Path(root)
        self.subset = subset
        self.split = split
        self.load_size = load_size
        if not self.root.is_dir():
            raise BAPPSError(f"BAPPS root is not a directory: {self.root}")
        self.dir = self.root / self.kind / split / subset
        if not self.dir.is_dir():
            present = list_subsets(self.root, self.kind, split)
            raise BAPPSError(
                f"missing directory: {self.dir} (subsets present under {self.root / self.kind / split}: {present or 'none'})"
            )
        img_dirs, judge_dir = _KIND_DIRS[self.kind]
        lists = {name: _stems(self.dir / name, IMAGE_EXTS) for name in img_dirs}
        lists[judge_dir] = _stems(self.dir / judge_dir, (".npy",))
        ids = set(lists[img_dirs[0]])
        for name, files in lists.items():
            if set(files) != ids:
                only_a = sorted(ids - set(files))[:5]
                only_b = sorted(set(files) - ids)[:5]
                raise BAPPSError(
                    f"mismatched file lists in {self.dir}: {img_dirs[0]}/ and {name}/ differ "
                    f"(e.g. missing in {name}/: {only_a}, extra in {name}/: {only_b})"
                )
        if not ids:
            raise BAPPSError(f"no images found in {self.dir / img_dirs[0]}")
        self.ids = sorted(ids)
        self._paths = {name: [files[i] for i in self.ids] for name, files in lists.items()}
        self._img_dirs = img_dirs
        self._judge_dir = judge_dir
        self.judgements = np.array([_load_scalar(p) for p in self._paths[judge_dir]], dtype=np.float64)
        self._cache: dict[int, dict] | None = {} if preload else None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < len(self.ids):
            raise IndexError(f"index {idx} out of range for {len(self.ids)} items")
        if self._cache is not None and idx in self._cache:
            return self._cache[idx]
        item = {name: load_image(self._paths[name][idx], self.load_size) for name in self._img_dirs}
        item[self._judge_dir] = torch.tensor(self.judgements[idx], dtype=torch.float32)
        item["index"] = idx
        if self._cache is not None:
            self._cache[idx] = item
        return item

    def fingerprint(self) -> str:
        """Hash of the file names, sizes and modification times (cheap; identifies the data for caches)."""
        h = hashlib.sha256()
        h.update(f"{self.kind}/{self.split}/{self.subset}/{self.load_size}".encode())
        for name in (*self._img_dirs, self._judge_dir):
            for p in self._paths[name]:
                st = p.stat()
                h.update(f"{name}/{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]


class TwoAFCDataset(_BAPPSBase):
    """2AFC triplets of one subset: items ``{'ref', 'p0', 'p1': [3,H,W] in [0,1], 'judge': p, 'index'}``,
    with ``p`` the fraction of humans who preferred ``p1`` (judged it closer to ``ref``)."""

    kind = "2afc"


class JNDDataset(_BAPPSBase):
    """JND pairs of one subset: items ``{'p0', 'p1': [3,H,W] in [0,1], 'same': s, 'index'}``, with ``s`` the
    fraction of humans who judged the two patches identical."""

    kind = "jnd"


def data_fingerprint(datasets: Sequence[_BAPPSBase]) -> str:
    h = hashlib.sha256()
    for ds in datasets:
        h.update(ds.fingerprint().encode())
    return h.hexdigest()[:16]


def _to_uint8(img) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
        if img.ndim == 3 and img.shape[0] == 3:
            img = img.transpose(1, 2, 0)
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"img: expected [H, W, 3] (or a [3, H, W] tensor), got shape {a.shape}")
    return a


def write_item(root: str | os.PathLike, kind: str, subset: str, item_id: str, split: str = "val", **parts) -> None:
    """Write one item in the BAPPS layout: ``kind='2afc'`` takes ``ref, p0, p1`` images and ``judge``;
    ``kind='jnd'`` takes ``p0, p1`` and ``same``. Images: uint8 or [0, 1] float ``[H, W, 3]`` arrays or
    ``[3, H, W]`` tensors."""
    _check_kind(kind)
    img_dirs, judge_dir = _KIND_DIRS[kind]
    if set(parts) != {*img_dirs, judge_dir}:
        raise ValueError(f"parts: expected {sorted({*img_dirs, judge_dir})}, got {sorted(parts)}")
    d = Path(root) / kind / split / subset
    for name in img_dirs:
        (d / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_to_uint8(parts[name])).save(d / name / f"{item_id}.png")
    (d / judge_dir).mkdir(parents=True, exist_ok=True)
    np.save(d / judge_dir / f"{item_id}.npy", np.array([float(parts[judge_dir])], dtype=np.float32))
