"""The embedded default 2AFC/JND set: real photographs that ship inside an installed package, with graded
synthetic distortions and **synthetic ordinal judgements** (not human data).

Source photos: matplotlib's ``mpl-data/sample_data/grace_hopper.jpg`` (a real photograph, 512x600, shipped in
every matplotlib wheel; matplotlib is a dependency of this project). Reference patches are random crops of
64 to 256 pixels (random position, optional horizontal mirror), resized to 64x64 with Lanczos, so the
references cover faces, fabric, insignia, background and edges at several scales.

2AFC subsets (``2afc/val/<family>``), one per distortion family; both distorted patches of a triplet apply
the *same* family (same noise pattern / colour direction) to the reference at two strengths
``s0, s1`` in [0.05, 1]:

* ``blur``: Gaussian blur, radius ``0.3 + 2.7 s`` px
* ``noise``: additive Gaussian noise, std ``0.01 + 0.19 s``
* ``jpeg``: JPEG re-encoding, quality ``round(90 - 85 s)``
* ``color``: chromatic shift along a random zero-mean RGB direction, magnitude ``0.3 s``
* ``contrast``: contrast reduction towards the patch mean by a factor ``1 - 0.8 s``
* ``pixelate``: box down-sampling by ``1 + 7 s`` and bilinear up-sampling

Judgement (synthetic, ordinal): the less distorted patch is preferred, with the fraction preferring ``p1``
``p = sigmoid((s0 - s1) / 0.1)``: a large strength gap gives a near-unanimous synthetic vote, a small gap a
split one. This encodes only "less distortion of the same kind looks closer to the reference"; it says
nothing about how humans trade off different kinds of distortion, so scores on this set are a sanity check
of a metric's monotonicity, not a replacement for BAPPS.

JND subset (``jnd/val/mixed``): ``p0`` is the reference patch, ``p1`` the patch distorted by a random family at
strength ``s`` in [0, 0.6]; ``same = exp(-s / 0.1)`` (synthetic).

The set is built at run time from the installed photo into a cache directory (``PERCEPT_FAST_CACHE`` or
``$XDG_CACHE_HOME/percept_fast`` or ``~/.cache/percept_fast``), deterministically from the seed, in the BAPPS
on-disk layout so that :mod:`percept_fast.score.bapps` reads it like the real data.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "FAMILIES",
    "DEFAULT_SEED",
    "DEFAULT_PER_SUBSET",
    "DEFAULT_JND",
    "source_photos",
    "cache_root",
    "build_default_set",
    "default_set_dir",
    "distort",
]

FAMILIES = ("blur", "noise", "jpeg", "color", "contrast", "pixelate")
DEFAULT_SEED = 0
DEFAULT_PER_SUBSET = 40
DEFAULT_JND = 64
PATCH = 64
VERSION = 1
TEMPERATURE = 0.1
JND_TAU = 0.1


def source_photos() -> list[Path]:
    """Real photographs shipped with installed packages (matplotlib's sample data)."""
    import matplotlib

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        raise FileNotFoundError(
            f"the embedded default set needs matplotlib's sample photo, not found at {p} "
            "(reinstall matplotlib, or pass --data with a BAPPS directory)"
        )
    return [p]


def cache_root() -> Path:
    env = os.environ.get("PERCEPT_FAST_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "percept_fast"


def _to_img(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8))


def _to_arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def distort(ref: np.ndarray, family: str, s: float, aux: dict) -> np.ndarray:
    """Apply distortion ``family`` at strength ``s`` in [0, 1] to ``ref`` (``[H, W, 3]`` float in [0, 1]).
    ``aux`` carries the per-triplet randomness shared by both strengths (noise pattern, colour direction)."""
    if family == "blur":
        return _to_arr(_to_img(ref).filter(ImageFilter.GaussianBlur(radius=0.3 + 2.7 * s)))
    if family == "noise":
        return np.clip(ref + (0.01 + 0.19 * s) * aux["noise"], 0.0, 1.0)
    if family == "jpeg":
        buf = io.BytesIO()
        _to_img(ref).save(buf, format="JPEG", quality=int(round(90 - 85 * s)))
        buf.seek(0)
        with Image.open(buf) as im:
            return _to_arr(im)
    if family == "color":
        return np.clip(ref + 0.3 * s * aux["direction"], 0.0, 1.0)
    if family == "contrast":
        m = ref.mean(axis=(0, 1), keepdims=True)
        return m + (1.0 - 0.8 * s) * (ref - m)
    if family == "pixelate":
        h, w = ref.shape[:2]
        f = 1.0 + 7.0 * s
        small = _to_img(ref).resize((max(1, round(w / f)), max(1, round(h / f))), Image.BOX)
        return _to_arr(small.resize((w, h), Image.BILINEAR))
    raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")


def _aux(rng: np.random.Generator) -> dict:
    d = rng.normal(size=3)
    d -= d.mean()
    d /= np.linalg.norm(d) + 1e-12
    return {"noise": rng.normal(size=(PATCH, PATCH, 3)), "direction": d.reshape(1, 1, 3)}


def _crop(photo: Image.Image, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    w, h = photo.size
    size = int(rng.integers(PATCH, min(256, w, h) + 1))
    x = int(rng.integers(0, w - size + 1))
    y = int(rng.integers(0, h - size + 1))
    flip = bool(rng.integers(0, 2))
    im = photo.crop((x, y, x + size, y + size)).resize((PATCH, PATCH), Image.LANCZOS)
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return _to_arr(im), [x, y, size, flip]


def _save_png(a: np.ndarray, path: Path) -> None:
    _to_img(a).save(path, format="PNG")


def _config_key(seed: int, per_subset: int, n_jnd: int, photos: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(f"v{VERSION}/{seed}/{per_subset}/{n_jnd}/{PATCH}/{FAMILIES}".encode())
    for p in photos:
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:12]


def default_set_dir(seed: int = DEFAULT_SEED, per_subset: int = DEFAULT_PER_SUBSET, n_jnd: int = DEFAULT_JND) -> Path:
    return cache_root() / f"default_set_{_config_key(seed, per_subset, n_jnd, source_photos())}"


def build_default_set(
    root: str | os.PathLike | None = None,
    seed: int = DEFAULT_SEED,
    per_subset: int = DEFAULT_PER_SUBSET,
    n_jnd: int = DEFAULT_JND,
) -> Path:
    """Build the embedded set (or reuse a complete earlier build) and return its BAPPS root.

    The build goes to a temporary sibling directory that is renamed into place when complete, so an
    interrupted build is never mistaken for a finished one and concurrent builders cannot collide.
    """
    if not isinstance(per_subset, int) or per_subset < 1:
        raise ValueError(f"per_subset: expected a positive int, got {per_subset!r}")
    if not isinstance(n_jnd, int) or n_jnd < 0:
        raise ValueError(f"n_jnd: expected a non-negative int, got {n_jnd!r}")
    photos = source_photos()
    final = Path(root) if root is not None else default_set_dir(seed, per_subset, n_jnd)
    if (final / "manifest.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _build(tmp, seed, per_subset, n_jnd, photos)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "manifest.json").is_file():  # someone else's complete build is fine
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _build(out: Path, seed: int, per_subset: int, n_jnd: int, photos: list[Path]) -> None:
    rng = np.random.default_rng(seed)
    imgs = []
    for p in photos:
        with Image.open(p) as im:
            imgs.append(im.convert("RGB"))
    manifest: dict = {
        "description": "Embedded default set: real photos (installed package sample data) with graded synthetic "
        "distortions and SYNTHETIC ORDINAL judgements (less distortion preferred, p = sigmoid((s0 - s1) / "
        f"{TEMPERATURE})); not human data. See percept_fast/data/default_set.py.",
        "version": VERSION,
        "seed": seed,
        "photos": [p.name for p in photos],
        "2afc": {},
        "jnd": {},
    }
    for fam in FAMILIES:
        d = out / "2afc" / "val" / fam
        for sub in ("ref", "p0", "p1", "judge"):
            (d / sub).mkdir(parents=True)
        rows = []
        for i in range(per_subset):
            k = int(rng.integers(0, len(imgs)))
            ref, crop = _crop(imgs[k], rng)
            s0, s1 = (float(v) for v in rng.uniform(0.05, 1.0, size=2))
            aux = _aux(rng)
            p = float(1.0 / (1.0 + np.exp(-(s0 - s1) / TEMPERATURE)))
            name = f"{i:06d}"
            _save_png(ref, d / "ref" / f"{name}.png")
            _save_png(distort(ref, fam, s0, aux), d / "p0" / f"{name}.png")
            _save_png(distort(ref, fam, s1, aux), d / "p1" / f"{name}.png")
            np.save(d / "judge" / f"{name}.npy", np.array([p], dtype=np.float32))
            rows.append({"id": name, "photo": photos[k].name, "crop_xy_size_flip": crop, "s0": s0, "s1": s1, "p": p})
        manifest["2afc"][fam] = rows
    if n_jnd > 0:
        d = out / "jnd" / "val" / "mixed"
        for sub in ("p0", "p1", "same"):
            (d / sub).mkdir(parents=True)
        rows = []
        for i in range(n_jnd):
            k = int(rng.integers(0, len(imgs)))
            ref, crop = _crop(imgs[k], rng)
            fam = FAMILIES[int(rng.integers(0, len(FAMILIES)))]
            s = float(rng.uniform(0.0, 0.6))
            aux = _aux(rng)
            same = float(np.exp(-s / JND_TAU))
            name = f"{i:06d}"
            _save_png(ref, d / "p0" / f"{name}.png")
            _save_png(distort(ref, fam, s, aux), d / "p1" / f"{name}.png")
            np.save(d / "same" / f"{name}.npy", np.array([same], dtype=np.float32))
            rows.append({"id": name, "photo": photos[k].name, "family": fam, "s": s, "same": same})
        manifest["jnd"]["mixed"] = rows
    (out / "README.txt").write_text(manifest["description"] + "\n")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
