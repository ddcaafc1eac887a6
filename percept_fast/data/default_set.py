"""The embedded default 2AFC/JND set: real photographs that ship inside an installed package, synthetic
distortions and **synthetic ordinal judgements** (not human data). Two 2AFC subsets:

``matched_mse`` (can a metric tell kinds of distortion apart at equal MSE?). Each triplet holds one "far"
distortion (blur, JPEG, impulse noise) and one "close" distortion (mean luminance shift, contrast stretch) of
the reference at matched MSE (``|MSE_close / MSE_far - 1| <= 0.01 %`` on the stored 8-bit images; far PSNR
drawn uniformly in [24, 30] dB; :mod:`percept_fast.data.matched_mse`). The six (far, close) combinations are
equally frequent, and the close one is ``p0`` or ``p1`` at random. Judgement: the close distortion is
preferred, unanimously (``p = 1`` if it is ``p1``, else ``0``). Source of the rule: the published ordering of
Wang and Bovik, "Mean squared error: love it or leave it?", IEEE Signal Processing Magazine 26(1), 2009
(Fig. 2) and Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4), 2004 (Fig. 2): at equal MSE a luminance shift and a contrast stretch
look nearly like the original while blur, JPEG blocking and impulsive noise look clearly worse. Since MSE is equal by
construction, PSNR is at chance here (its choice follows the residual mismatch).

``graded`` (monotonicity sanity check; half as many triplets as ``matched_mse``, on the reference patches of its
first triplets). Both distorted patches of a triplet apply the *same* family (same noise pattern / colour
direction) at two strengths ``s0, s1`` in [0.05, 1]; families cycle over:

* ``blur``: Gaussian blur, radius ``0.3 + 2.7 s`` px
* ``noise``: additive Gaussian noise, std ``0.01 + 0.19 s``
* ``jpeg``: JPEG re-encoding, quality ``round(90 - 85 s)``
* ``color``: chromatic shift along a random zero-mean RGB direction, magnitude ``0.3 s``
* ``contrast``: contrast reduction towards the patch mean by a factor ``1 - 0.8 s``
* ``pixelate``: box down-sampling by ``1 + 7 s`` and bilinear up-sampling

Judgement: the less distorted patch is preferred, with the fraction preferring ``p1``
``p = sigmoid((s0 - s1) / 0.1)``: a large strength gap gives a near-unanimous synthetic vote, a small gap a
split one. Every metric that grows with distortion strength is near the ceiling here.

Limits: the judgements are rules, not observations. ``matched_mse`` encodes one published ordinal finding
(demonstrated on a few grey-scale images, not a psychophysical data set) as unanimous votes on 64x64 colour
patches; ``graded`` encodes only "less distortion of the same kind looks closer". Neither says how much
closer, nor how humans trade off other kinds of distortion; scores on this set are a demonstration and a
sanity check, not a replacement for BAPPS.

Shared images (version 3): ``graded`` triplet ``i`` uses the reference patch of ``matched_mse`` triplet ``i``, and
every JND pair is a ``graded`` reference with one of its two distorted patches, so that a backbone sees each
distinct image once (the scoring runner reuses the features of an image that occurs several times; see
:mod:`percept_fast.score.runner`). This keeps the default run short (the target is under 30 s on a 2-core CPU; measured times in
``docs/percept_fast.md``); the subsets' items are therefore not independent across subsets (each subset's
score and CI are computed on its own items; the ``pooled`` CI treats the items as independent).

Source photo: matplotlib's ``mpl-data/sample_data/grace_hopper.jpg`` (a real photograph, 512x600, shipped in
every matplotlib wheel; matplotlib is a dependency of this project). Reference patches are random crops of
64 to 256 pixels (random position, optional horizontal mirror), resized to 64x64 with Lanczos, so the
references cover faces, fabric, insignia, background and edges at several scales. A ``matched_mse`` crop
that cannot reach its target (e.g. a flat patch that blur hardly changes) is redrawn.

JND subset (``jnd/val/graded``): two pairs per ``graded`` triplet, ``p0`` its reference patch and ``p1`` one of its
two distorted patches (strength ``s`` in [0.05, 1]); ``same = exp(-s / 0.2)`` (synthetic).

The set is built at run time from the installed photo into a cache directory (``PERCEPT_FAST_CACHE`` or
``$XDG_CACHE_HOME/percept_fast`` or ``~/.cache/percept_fast``), deterministically from the seed, in the BAPPS
on-disk layout so that :mod:`percept_fast.score.bapps` reads it like the real data. ``manifest.json`` holds
every triplet's parameters and measured MSEs, ``README.txt`` the rules above.
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

from . import matched_mse

__all__ = [
    "ABOUT",
    "SUBSETS",
    "JND_SUBSET",
    "FAMILIES",
    "DEFAULT_SEED",
    "DEFAULT_PER_SUBSET",
    "graded_count",
    "DEFAULT_JND",
    "source_photos",
    "cache_root",
    "build_default_set",
    "default_set_dir",
    "distort",
    "matched_mse_by_kind",
]

SUBSETS = ("matched_mse", "graded")  # 2AFC subsets, in table order
JND_SUBSET = "graded"
FAMILIES = ("blur", "noise", "jpeg", "color", "contrast", "pixelate")  # of the graded subsets
DEFAULT_SEED = 0
DEFAULT_PER_SUBSET = 120  # matched_mse triplets; graded: half of them (rounded up); JND: two per graded triplet
DEFAULT_JND = None  # None: two pairs per graded triplet (all of its distorted patches)
PATCH = 64
VERSION = 3
MAX_ATTEMPTS = 200  # crops drawn for one matched_mse triplet before giving up
TEMPERATURE = 0.1
JND_TAU = 0.2

ABOUT = (
    "Embedded default set: real photo patches, synthetic distortions, SYNTHETIC ORDINAL JUDGEMENTS (rules, not "
    "human data).\n"
    f"  matched_mse: one far distortion (blur / JPEG / impulse noise) and one close distortion (luminance shift / "
    f"contrast stretch) per triplet at matched MSE (within {100 * matched_mse.MSE_RTOL:g} %); the close one is "
    "judged closer, following the published ordering of Wang & Bovik 2009 (IEEE Signal Processing Magazine, "
    "Fig. 2) and Wang et al. 2004 (SSIM paper, Fig. 2). PSNR can only guess here: the MSEs are equal.\n"
    "  graded: two strengths of the same distortion, the weaker judged closer: a monotonicity sanity check "
    "(any metric that grows with distortion strength is near the ceiling); on the reference patches of "
    "matched_mse, and the JND pairs reuse its images.\n"
    "  Rules, sources and limits: percept_fast/data/default_set.py (and README.txt in the set)."
)


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


def _to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)


def graded_count(per_subset: int) -> int:
    """Triplets of ``graded`` for ``per_subset`` triplets of ``matched_mse``: half of them, rounded up."""
    return (per_subset + 1) // 2


def _counts(per_subset: int, n_jnd: int | None) -> tuple[int, int, int]:
    if not isinstance(per_subset, int) or isinstance(per_subset, bool) or per_subset < 1:
        raise ValueError(f"per_subset: expected a positive int, got {per_subset!r}")
    n_graded = graded_count(per_subset)
    if n_jnd is None:
        n_jnd = 2 * n_graded
    if not isinstance(n_jnd, int) or isinstance(n_jnd, bool) or not 0 <= n_jnd <= 2 * n_graded:
        raise ValueError(f"n_jnd: expected an int in [0, {2 * n_graded}] (two pairs per graded triplet), got {n_jnd!r}")
    return per_subset, n_graded, n_jnd


def _config_key(seed: int, per_subset: int, n_jnd: int, photos: list[Path]) -> str:
    h = hashlib.sha256()
    mm = (matched_mse.MSE_RTOL, matched_mse.PSNR_RANGE_DB, matched_mse.FAR_PSNR_SLACK_DB)
    consts = (TEMPERATURE, JND_TAU)
    h.update(f"v{VERSION}/{seed}/{per_subset}/{n_jnd}/{PATCH}/{SUBSETS}/{FAMILIES}/{mm}/{consts}".encode())
    for p in photos:
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:12]


def default_set_dir(
    seed: int = DEFAULT_SEED, per_subset: int = DEFAULT_PER_SUBSET, n_jnd: int | None = DEFAULT_JND
) -> Path:
    per_subset, _, n_jnd = _counts(per_subset, n_jnd)
    return cache_root() / f"default_set_{_config_key(seed, per_subset, n_jnd, source_photos())}"


def build_default_set(
    root: str | os.PathLike | None = None,
    seed: int = DEFAULT_SEED,
    per_subset: int = DEFAULT_PER_SUBSET,
    n_jnd: int | None = DEFAULT_JND,
) -> Path:
    """Build the embedded set (or reuse a complete earlier build) and return its BAPPS root.

    ``per_subset`` triplets of ``matched_mse``, :func:`graded_count` of ``graded`` on the same references, and
    ``n_jnd`` JND pairs (at most two per graded triplet; None: all of them).

    The build goes to a temporary sibling directory that is renamed into place when complete, so an
    interrupted build is never mistaken for a finished one and concurrent builders cannot collide.
    """
    per_subset, _, n_jnd = _counts(per_subset, n_jnd)
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


def _save_u8(a: np.ndarray, path: Path) -> None:
    Image.fromarray(a).save(path, format="PNG")


def _subset_dir(out: Path, kind: str, subset: str, parts: tuple[str, ...]) -> Path:
    d = out / kind / "val" / subset
    for sub in parts:
        (d / sub).mkdir(parents=True)
    return d


def _build_matched_mse(
    out: Path, rng: np.random.Generator, imgs: list, photos: list[Path], n: int
) -> tuple[list[dict], list[np.ndarray]]:
    """Rows of the manifest and the ``uint8`` reference patches (reused by ``graded``)."""
    d = _subset_dir(out, "2afc", "matched_mse", ("ref", "p0", "p1", "judge"))
    combos = [(far, close) for close in matched_mse.CLOSE_KINDS for far in matched_mse.FAR_KINDS]
    rows, refs = [], []
    for i in range(n):
        far_kind, close_kind = combos[i % len(combos)]  # every combination equally often
        pair, attempts = None, 0
        while pair is None:
            attempts += 1
            if attempts > MAX_ATTEMPTS:
                raise RuntimeError(f"matched_mse: no patch out of {MAX_ATTEMPTS} gave a {far_kind}/{close_kind} pair")
            k = int(rng.integers(0, len(imgs)))
            ref, crop = _crop(imgs[k], rng)
            ref8 = np.round(ref * 255.0).astype(np.uint8)  # exact: the crop is 8-bit already
            target = float(rng.uniform(*matched_mse.PSNR_RANGE_DB))
            pair = matched_mse.matched_pair(ref8, far_kind, close_kind, target, rng)
        close_is_p1 = bool(rng.integers(0, 2))
        p0, p1 = (pair.far, pair.close) if close_is_p1 else (pair.close, pair.far)
        p = 1.0 if close_is_p1 else 0.0  # the close distortion is preferred, unanimously
        name = f"{i:06d}"
        _save_u8(ref8, d / "ref" / f"{name}.png")
        _save_u8(p0, d / "p0" / f"{name}.png")
        _save_u8(p1, d / "p1" / f"{name}.png")
        np.save(d / "judge" / f"{name}.npy", np.array([p], dtype=np.float32))
        rows.append(
            {
                "id": name,
                "photo": photos[k].name,
                "crop_xy_size_flip": crop,
                "far": far_kind,
                "close": close_kind,
                "close_is": "p1" if close_is_p1 else "p0",
                "far_param": pair.far_param,
                "close_param": pair.close_param,
                "target_psnr_db": target,
                "far_mse": pair.far_mse,
                "close_mse": pair.close_mse,
                "far_psnr_db": matched_mse.psnr_db(pair.far_mse),
                "attempts": attempts,
                "p": p,
            }
        )
        refs.append(ref8)
    return rows, refs


def _build_graded(out: Path, rng: np.random.Generator, refs: list[np.ndarray], n: int) -> tuple[list[dict], list]:
    """``graded`` triplet ``i`` on ``refs[i]`` (the references of ``matched_mse``); returns the manifest rows and
    ``(ref, [(p0, s0), (p1, s1)])`` per triplet for the JND pairs."""
    d = _subset_dir(out, "2afc", "graded", ("ref", "p0", "p1", "judge"))
    rows, images = [], []
    for i in range(n):
        fam = FAMILIES[i % len(FAMILIES)]
        ref8 = refs[i]
        ref = ref8.astype(np.float64) / 255.0
        s0, s1 = (float(v) for v in rng.uniform(0.05, 1.0, size=2))
        aux = _aux(rng)
        p = float(1.0 / (1.0 + np.exp(-(s0 - s1) / TEMPERATURE)))
        name = f"{i:06d}"
        p0, p1 = (_to_u8(distort(ref, fam, v, aux)) for v in (s0, s1))
        _save_u8(ref8, d / "ref" / f"{name}.png")
        _save_u8(p0, d / "p0" / f"{name}.png")
        _save_u8(p1, d / "p1" / f"{name}.png")
        np.save(d / "judge" / f"{name}.npy", np.array([p], dtype=np.float32))
        rows.append({"id": name, "ref": f"matched_mse/{name}", "family": fam, "s0": s0, "s1": s1, "p": p})
        images.append((ref8, [(p0, s0), (p1, s1)]))
    return rows, images


def _build_jnd(out: Path, graded: list, graded_rows: list[dict], n: int) -> list[dict]:
    """JND pair ``j``: the reference of ``graded`` triplet ``j // 2`` and its ``p0`` (even ``j``) or ``p1``."""
    d = _subset_dir(out, "jnd", JND_SUBSET, ("p0", "p1", "same"))
    rows = []
    for j in range(n):
        t, which = j // 2, j % 2
        ref8, dist = graded[t]
        img, s = dist[which]
        same = float(np.exp(-s / JND_TAU))
        name = f"{j:06d}"
        _save_u8(ref8, d / "p0" / f"{name}.png")
        _save_u8(img, d / "p1" / f"{name}.png")
        np.save(d / "same" / f"{name}.npy", np.array([same], dtype=np.float32))
        rows.append(
            {
                "id": name,
                "graded": f"{graded_rows[t]['id']}/p{which}",
                "family": graded_rows[t]["family"],
                "s": s,
                "same": same,
            }
        )
    return rows


def _build(out: Path, seed: int, per_subset: int, n_jnd: int, photos: list[Path]) -> None:
    rng = np.random.default_rng(seed)
    imgs = []
    for p in photos:
        with Image.open(p) as im:
            imgs.append(im.convert("RGB"))
    mm_rows, refs = _build_matched_mse(out, rng, imgs, photos, per_subset)
    graded_rows, graded = _build_graded(out, rng, refs, graded_count(per_subset))
    manifest: dict = {
        "description": ABOUT,
        "version": VERSION,
        "seed": seed,
        "photos": [p.name for p in photos],
        "matched_mse": {
            "mse_rtol": matched_mse.MSE_RTOL,
            "psnr_range_db": list(matched_mse.PSNR_RANGE_DB),
            "far_kinds": list(matched_mse.FAR_KINDS),
            "close_kinds": list(matched_mse.CLOSE_KINDS),
        },
        "2afc": {"matched_mse": mm_rows, "graded": graded_rows},
        "jnd": {JND_SUBSET: _build_jnd(out, graded, graded_rows, n_jnd)} if n_jnd > 0 else {},
    }
    (out / "README.txt").write_text(ABOUT + "\n\n" + (__doc__ or "").strip() + "\n")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def matched_mse_by_kind(root: str | os.PathLike, ids: list[str], d0, d1, judge) -> dict[str, dict]:
    """2AFC score on the ``matched_mse`` subset of ``root`` per (close, far) combination, e.g.
    ``'luminance_shift vs blur'``, from a metric's distances ``d0, d1`` of the items ``ids`` (in that order)."""
    from ..score.score import twoafc_scores

    rows = {r["id"]: r for r in json.loads((Path(root) / "manifest.json").read_text())["2afc"]["matched_mse"]}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ValueError(f"ids: not in the matched_mse manifest of {root}: {missing[:5]}")
    agree = twoafc_scores(d0, d1, judge)
    groups: dict[str, list[float]] = {}
    for close in matched_mse.CLOSE_KINDS:
        for far in matched_mse.FAR_KINDS:
            groups[f"{close} vs {far}"] = []
    for i, a in zip(ids, agree):
        groups[f"{rows[i]['close']} vs {rows[i]['far']}"].append(float(a))
    return {k: {"score": float(np.mean(v)), "n": len(v)} for k, v in groups.items() if v}
