"""Distortion pairs at matched MSE, after the classic demonstration that equal MSE can mean very different
perceived quality (Wang and Bovik, "Mean squared error: love it or leave it?", IEEE Signal Processing
Magazine 26(1), 2009, Fig. 2; Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error
visibility to structural similarity", IEEE TIP 13(4), 2004, Fig. 2).

Those figures distort one image (Einstein; Boat) in several ways at the same MSE and show that a mean
luminance shift and a contrast stretch look nearly like the original while blur, JPEG blocking and impulsive
(salt-and-pepper) noise look clearly degraded. This module rebuilds that
construction on 8-bit RGB patches:

* ``far`` kinds (judged far from the reference): ``blur`` (Gaussian, std ``sigma`` px), ``jpeg`` (PIL/libjpeg
  re-encoding at integer quality ``q``, default 4:2:0 chroma subsampling), ``impulse`` (salt-and-pepper: a
  fraction ``density`` of the pixels set to black or white in all channels).
* ``close`` kinds (judged close): ``luminance_shift`` (the same offset ``delta`` added to the three channels)
  and ``contrast_stretch`` (``m + gain (x - m)`` around the per-channel patch mean ``m``, ``gain > 1``).

A pair is built far-first: the far distortion's parameter is searched so that its PSNR lands near a drawn
target (within :data:`FAR_PSNR_SLACK_DB`), then the close distortion's parameter is searched so that its MSE is
the nearest achievable to the far one's. Both are measured on the final 8-bit images, the very pixels the
BAPPS reader returns; a pair is accepted only if ``|MSE_close / MSE_far - 1| <= MSE_RTOL``. Continuous
outputs (shift, stretch, blur) are quantised to 8 bits with a fixed per-pixel dither shared by the pair, so
that a shift of a fraction of a grey level is representable (pixels round up or down so that the mean
shift is exact) and the MSE can be matched finely; the dither is below one grey level.

The residual MSE mismatch (well inside the tolerance) has no preferred sign: which of the two a PSNR
ranking calls closer is decided by that residual alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "CLOSE_KINDS",
    "FAR_KINDS",
    "MSE_RTOL",
    "PSNR_RANGE_DB",
    "FAR_PSNR_SLACK_DB",
    "MatchedPair",
    "PairNoise",
    "mse",
    "psnr_db",
    "apply",
    "matched_pair",
]

CLOSE_KINDS = ("luminance_shift", "contrast_stretch")
FAR_KINDS = ("blur", "jpeg", "impulse")
MSE_RTOL = 1e-4  # stated tolerance: |MSE_close / MSE_far - 1| <= 0.01 % (0.0004 dB)
PSNR_RANGE_DB = (24.0, 30.0)  # far target PSNR, uniform: clearly visible, not destroyed, on 64x64 patches
FAR_PSNR_SLACK_DB = 1.0  # a far distortion that cannot get this close to its target rejects the patch
_SEARCH_STEPS = 24
# parameter ranges searched (MSE grows with the parameter over each range)
_RANGES = {
    "luminance_shift": (0.0, 1.0),
    "contrast_stretch": (1.0, 8.0),
    "blur": (0.0, 8.0),
    "impulse": (0.0, 1.0),
}
_JPEG_QUALITIES = (1, 95)  # the integer range searched


def _u8(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{name}: expected a uint8 [H, W, 3] array, got {a.dtype} {a.shape}")
    return a


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """MSE of two 8-bit images on the [0, 1] scale (float64)."""
    a, b = _u8(a, "a"), _u8(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {a.shape}, got {b.shape}")
    d = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    return float(np.mean(d * d))


def psnr_db(m: float) -> float:
    return float(10.0 * np.log10(1.0 / max(m, 1e-10)))


def _quantize(y: np.ndarray, dither: np.ndarray) -> np.ndarray:
    """[0, 1] float [H, W, 3] -> uint8 with per-pixel thresholds ``dither`` in [0, 1) ([H, W])."""
    return np.clip(np.floor(y * 255.0 + dither[..., None]), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PairNoise:
    """Per-pair randomness: quantisation dither, impulse positions and polarity."""

    dither: np.ndarray  # [H, W] in [0, 1)
    impulse_u: np.ndarray  # [H, W] in [0, 1): a pixel is hit when u < density
    impulse_salt: np.ndarray  # [H, W] bool: white (else black)
    shift_sign: float  # +1 brighter, -1 darker

    @staticmethod
    def draw(rng: np.random.Generator, ref: np.ndarray) -> PairNoise:
        h, w = ref.shape[:2]
        dither = rng.uniform(size=(h, w))
        u = rng.uniform(size=(h, w))
        salt = rng.uniform(size=(h, w)) < 0.5
        sign = 1.0 if ref.mean() < 127.5 else -1.0  # towards the side with more headroom (less clipping)
        return PairNoise(dither, u, salt, sign)


def apply(ref: np.ndarray, kind: str, param: float, noise: PairNoise | None) -> np.ndarray:
    """Distortion ``kind`` of the uint8 ``ref`` at ``param`` (delta, gain, sigma, quality or density)."""
    ref = _u8(ref, "ref")
    x = ref.astype(np.float64) / 255.0
    if kind == "luminance_shift":
        return _quantize(x + noise.shift_sign * param, noise.dither)
    if kind == "contrast_stretch":
        m = x.mean(axis=(0, 1), keepdims=True)
        return _quantize(m + param * (x - m), noise.dither)
    if kind == "blur":
        from scipy.ndimage import gaussian_filter  # imported here: a cached set needs no scipy (0.4 s of import)

        return _quantize(gaussian_filter(x, sigma=(param, param, 0.0), mode="reflect"), noise.dither)
    if kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(ref).save(buf, format="JPEG", quality=int(param))
        buf.seek(0)
        with Image.open(buf) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    if kind == "impulse":
        y = ref.copy()
        hit = noise.impulse_u < param
        y[hit] = np.where(noise.impulse_salt[hit], 255, 0)[:, None].astype(np.uint8)
        return y
    raise ValueError(f"kind: expected one of {CLOSE_KINDS + FAR_KINDS}, got {kind!r}")


def _nearest_mse(fn: Callable[[float], np.ndarray], ref: np.ndarray, lo: float, hi: float, target: float):
    """Bisection on a parameter whose MSE grows with it; returns the evaluated ``(param, image, mse)`` whose
    MSE is nearest ``target``."""
    best = None

    def consider(p: float) -> float:
        nonlocal best
        img = fn(p)
        m = mse(ref, img)
        if best is None or abs(m - target) < abs(best[2] - target):
            best = (p, img, m)
        return m

    consider(lo)
    if consider(hi) >= target:
        for _ in range(_SEARCH_STEPS):
            mid = 0.5 * (lo + hi)
            if consider(mid) < target:
                lo = mid
            else:
                hi = mid
    return best


def _nearest_jpeg(ref: np.ndarray, target: float):
    """Integer quality whose MSE is nearest ``target``: bisection (MSE falls with quality, not strictly
    everywhere), then the neighbours of the crossing."""
    tried: dict[int, tuple] = {}

    def at(q: int) -> float:
        if q not in tried:
            img = apply(ref, "jpeg", q, None)
            tried[q] = (float(q), img, mse(ref, img))
        return tried[q][2]

    lo, hi = _JPEG_QUALITIES[0], _JPEG_QUALITIES[-1]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid) > target:
            lo = mid
        else:
            hi = mid
    for q in range(max(_JPEG_QUALITIES[0], lo - 2), min(_JPEG_QUALITIES[-1], hi + 2) + 1):
        at(q)
    return min(tried.values(), key=lambda t: abs(t[2] - target))


def _search(ref: np.ndarray, kind: str, target: float, noise: PairNoise):
    if kind == "jpeg":
        return _nearest_jpeg(ref, target)
    lo, hi = _RANGES[kind]
    return _nearest_mse(lambda p: apply(ref, kind, p, noise), ref, lo, hi, target)


@dataclass(frozen=True)
class MatchedPair:
    far: np.ndarray  # uint8 [H, W, 3]
    close: np.ndarray
    far_param: float
    close_param: float
    far_mse: float
    close_mse: float
    target_psnr_db: float

    @property
    def rel_mismatch(self) -> float:
        return abs(self.close_mse / self.far_mse - 1.0)


def matched_pair(
    ref: np.ndarray, far_kind: str, close_kind: str, target_psnr_db: float, rng: np.random.Generator
) -> MatchedPair | None:
    """A (far, close) pair of distortions of ``ref`` at matched MSE, or ``None`` when this patch cannot give
    one (far PSNR further than :data:`FAR_PSNR_SLACK_DB` from the target, or MSE mismatch above
    :data:`MSE_RTOL`: e.g. a flat patch that blur hardly changes)."""
    ref = _u8(ref, "ref")
    if far_kind not in FAR_KINDS:
        raise ValueError(f"far_kind: expected one of {FAR_KINDS}, got {far_kind!r}")
    if close_kind not in CLOSE_KINDS:
        raise ValueError(f"close_kind: expected one of {CLOSE_KINDS}, got {close_kind!r}")
    noise = PairNoise.draw(rng, ref)
    target = 10.0 ** (-target_psnr_db / 10.0)
    far_p, far, far_m = _search(ref, far_kind, target, noise)
    if far_m <= 0.0 or abs(psnr_db(far_m) - target_psnr_db) > FAR_PSNR_SLACK_DB:
        return None
    close_p, close, close_m = _search(ref, close_kind, far_m, noise)
    if abs(close_m / far_m - 1.0) > MSE_RTOL:
        return None
    return MatchedPair(far, close, far_p, close_p, far_m, close_m, target_psnr_db)
