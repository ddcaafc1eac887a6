r"""The Perceptual Score maths: 2AFC agreement, JND mAP, subset averaging and bootstrap confidence intervals.

2AFC (two-alternative forced choice). For a triplet (ref, p0, p1) with metric distances
:math:`d_0 = d(\mathrm{ref}, p_0)`, :math:`d_1 = d(\mathrm{ref}, p_1)` and human judgement :math:`p`
(the fraction of people who preferred :math:`p_1`), the score is the expected agreement with a random
human

.. math:: s = [d_0 < d_1]\,(1 - p) + [d_1 < d_0]\,p + \tfrac12 [d_0 = d_1].

JND (just noticeable difference). Pairs (p0, p1) with :math:`same` = fraction of people who judged them
identical. Sorting by distance, :math:`same` is treated as (fractional) positives and the score is the
VOC average precision of that ranking, exactly as ``lpips.score_jnd_dataset`` / ``lpips.voc_ap``.

Averaging over subsets, two modes (both reported):

* ``subset_mean``: the unweighted mean of the per-subset scores (how the LPIPS paper reports "2AFC avg").
* ``pooled``: the score over all triplets of all subsets pooled together (subsets weighted by their size).
  For JND, ``pooled`` is the mAP of the single ranking over all pairs.

Confidence intervals: percentile bootstrap, resampling items with replacement *within* each subset
(stratified), with a seeded ``numpy.random.Generator`` so the same seed gives the same interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "AGGREGATIONS",
    "twoafc_scores",
    "twoafc_score",
    "voc_ap",
    "jnd_map",
    "aggregate",
    "bootstrap_ci",
    "bootstrap_aggregate_ci",
]

AGGREGATIONS = ("subset_mean", "pooled")


def _as_1d(name: str, a, n: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name}: expected length {n}, got {a.shape[0]}")
    if np.isnan(a).any():
        raise ValueError(f"{name}: contains NaN")
    return a


def twoafc_scores(d0, d1, judge) -> np.ndarray:
    """Per-triplet 2AFC agreement ``(d0<d1)*(1-p) + (d1<d0)*p + 0.5*(d0==d1)`` (1-D arrays, same length)."""
    d0 = _as_1d("d0", d0)
    d1 = _as_1d("d1", d1, d0.shape[0])
    p = _as_1d("judge", judge, d0.shape[0])
    if ((p < 0) | (p > 1)).any():
        raise ValueError("judge: expected fractions in [0, 1]")
    return (d0 < d1) * (1.0 - p) + (d1 < d0) * p + (d0 == d1) * 0.5


def twoafc_score(d0, d1, judge) -> float:
    """Mean 2AFC agreement over triplets."""
    return float(np.mean(twoafc_scores(d0, d1, judge)))


def voc_ap(rec, prec) -> float:
    """VOC average precision (area under the precision envelope), the same sum as ``lpips.voc_ap``
    (non-07 metric), vectorised."""
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    # precision envelope: running maximum from the right
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def jnd_map(ds, sames) -> float:
    """JND mAP as ``lpips.score_jnd_dataset``: rank pairs by distance, ``same`` fractions as positives."""
    ds = _as_1d("ds", ds)
    sames = _as_1d("sames", sames, ds.shape[0])
    if ds.shape[0] == 0:
        raise ValueError("ds: expected at least one pair")
    order = np.argsort(ds)  # same (default) sort as lpips
    s = sames[order]
    tps = np.cumsum(s)
    fps = np.cumsum(1.0 - s)
    fns = np.sum(s) - tps
    with np.errstate(invalid="ignore", divide="ignore"):
        precs = tps / (tps + fps)
        recs = tps / (tps + fns)
    return voc_ap(recs, precs)


def _score_fn(kind: str):
    if kind == "2afc":
        return None  # per-item mean
    if kind == "jnd":
        return jnd_map
    raise ValueError(f"kind: expected '2afc' or 'jnd', got {kind!r}")


def aggregate(per_subset: Mapping[str, Sequence[np.ndarray]], kind: str) -> dict[str, float]:
    """Scores per subset plus both averages.

    ``per_subset[name]`` is ``(scores,)`` for 2AFC (per-triplet agreements) or ``(ds, sames)`` for JND.
    Returns ``{subset: score, ..., 'subset_mean': ..., 'pooled': ...}``.
    """
    fn = _score_fn(kind)
    if not per_subset:
        raise ValueError("per_subset: expected at least one subset")
    out: dict[str, float] = {}
    for name, arrays in per_subset.items():
        out[name] = float(np.mean(arrays[0])) if fn is None else fn(*arrays)
    out["subset_mean"] = float(np.mean([out[name] for name in per_subset]))
    pooled = [
        np.concatenate([np.asarray(a[j]) for a in per_subset.values()])
        for j in range(len(next(iter(per_subset.values()))))
    ]
    out["pooled"] = float(np.mean(pooled[0])) if fn is None else fn(*pooled)
    return out


def bootstrap_ci(
    arrays: Sequence[np.ndarray] | np.ndarray,
    kind: str = "2afc",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap CI of one subset's score (2AFC mean or JND mAP), resampling items."""
    if isinstance(arrays, np.ndarray):
        arrays = (arrays,)
    res = bootstrap_aggregate_ci({"_": arrays}, kind, n_boot=n_boot, seed=seed, alpha=alpha)
    return res["_"]


def bootstrap_aggregate_ci(
    per_subset: Mapping[str, Sequence[np.ndarray]],
    kind: str,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float]]:
    """Stratified percentile bootstrap CIs for each subset and for both averages (keys as :func:`aggregate`;
    with one subset only that subset's key is returned). Deterministic for a given ``seed``."""
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot: expected a positive int, got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a value in (0, 1), got {alpha!r}")
    fn = _score_fn(kind)
    rng = np.random.default_rng(seed)
    names = list(per_subset)
    samples: dict[str, np.ndarray] = {}
    idx_all: dict[str, np.ndarray] = {}
    for name in names:
        arrays = [np.asarray(a, dtype=np.float64) for a in per_subset[name]]
        n = arrays[0].shape[0]
        if n == 0:
            raise ValueError(f"per_subset[{name!r}]: empty")
        idx = rng.integers(0, n, size=(n_boot, n))
        idx_all[name] = idx
        if fn is None:
            samples[name] = arrays[0][idx].mean(axis=1)
        else:
            samples[name] = np.array([fn(*(a[i] for a in arrays)) for i in idx])
    q = (100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0))

    def ci(x: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(x, q)
        return float(lo), float(hi)

    out = {name: ci(samples[name]) for name in names}
    if len(names) > 1:
        out["subset_mean"] = ci(np.mean([samples[name] for name in names], axis=0))
        if fn is None:
            tot = sum(np.asarray(per_subset[n][0], dtype=np.float64)[idx_all[n]].sum(axis=1) for n in names)
            out["pooled"] = ci(tot / sum(idx_all[n].shape[1] for n in names))
        else:
            pooled = []
            for b in range(n_boot):
                parts = [[np.asarray(a, dtype=np.float64)[idx_all[n][b]] for a in per_subset[n]] for n in names]
                pooled.append(fn(*(np.concatenate([p[j] for p in parts]) for j in range(len(parts[0])))))
            out["pooled"] = ci(np.array(pooled))
    return out
