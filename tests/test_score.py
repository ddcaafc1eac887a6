"""Perceptual Score maths: 2AFC formula, JND mAP vs lpips' own implementation, bootstrap CIs, baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from percept_fast.score.baselines import gaussian_window, psnr, ssim
from percept_fast.score.score import (
    aggregate,
    bootstrap_aggregate_ci,
    bootstrap_ci,
    jnd_map,
    twoafc_score,
    twoafc_scores,
    voc_ap,
)

lpips = pytest.importorskip("lpips")


# ------------------------------------------------------------------------------------------------ 2AFC


def test_twoafc_formula_cases_and_ties():
    d0 = np.array([0.1, 0.5, 0.3, 0.3, 0.2])
    d1 = np.array([0.4, 0.2, 0.3, 0.3, 0.2])
    p = np.array([0.2, 0.8, 0.0, 1.0, 0.6])
    s = twoafc_scores(d0, d1, p)
    # d0<d1: agree with the 1-p who preferred p0; d1<d0: agree with the p who preferred p1; tie: 0.5
    np.testing.assert_allclose(s, [0.8, 0.8, 0.5, 0.5, 0.5])
    assert twoafc_score(d0, d1, p) == pytest.approx(np.mean([0.8, 0.8, 0.5, 0.5, 0.5]))


def test_twoafc_matches_lpips_formula_random():
    rng = np.random.default_rng(1)
    d0 = rng.integers(0, 5, 500).astype(float)  # many ties
    d1 = rng.integers(0, 5, 500).astype(float)
    p = rng.uniform(size=500)
    ref = (d0 < d1) * (1.0 - p) + (d1 < d0) * p + (d1 == d0) * 0.5  # lpips.score_2afc_dataset's line
    np.testing.assert_array_equal(twoafc_scores(d0, d1, p), ref)


def test_twoafc_score_against_lpips_function():
    rng = np.random.default_rng(2)
    n = 37
    d0, d1, p = rng.uniform(size=n), rng.uniform(size=n), rng.uniform(size=n)

    class Loader:
        def load_data(self):
            for s in range(0, n, 8):
                yield {
                    "ref": torch.arange(s, min(s + 8, n)),
                    "p0": torch.zeros(1),
                    "p1": torch.ones(1),
                    "judge": torch.from_numpy(p[s : s + 8]),
                }

    def func(ref, px):
        return torch.from_numpy((d0 if float(px.flatten()[0]) == 0 else d1)[ref.numpy()])

    expect, _ = lpips.score_2afc_dataset(Loader(), func)
    assert twoafc_score(d0, d1, p) == pytest.approx(expect, abs=1e-12)


def test_twoafc_input_errors():
    with pytest.raises(ValueError, match="d1"):
        twoafc_scores([0.1, 0.2], [0.1], [0.5, 0.5])
    with pytest.raises(ValueError, match="judge"):
        twoafc_scores([0.1], [0.2], [1.5])
    with pytest.raises(ValueError, match="d0"):
        twoafc_scores([[0.1]], [0.2], [0.5])


# ------------------------------------------------------------------------------------------------ JND


@pytest.mark.parametrize("seed", range(6))
def test_voc_ap_equals_lpips(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    rec = np.sort(rng.uniform(size=n))
    prec = rng.uniform(size=n)
    assert voc_ap(rec, prec) == pytest.approx(lpips.voc_ap(rec, prec), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_jnd_map_equals_lpips_score_jnd_dataset(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 200))
    ds = rng.uniform(size=n)
    sames = rng.choice([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], size=n) if seed % 2 else rng.uniform(size=n)

    class Loader:
        def load_data(self):
            for s in range(0, n, 16):
                yield {"p0": torch.arange(s, min(s + 16, n)), "p1": None, "same": torch.from_numpy(sames[s : s + 16])}

    expect, info = lpips.score_jnd_dataset(Loader(), lambda a, b: torch.from_numpy(ds[a.numpy()]))
    np.testing.assert_array_equal(info["ds"], ds)
    assert jnd_map(ds, sames) == pytest.approx(expect, abs=1e-12)


def test_jnd_map_perfect_and_reversed_ranking():
    ds = np.arange(10.0)
    sames = np.array([1.0] * 5 + [0.0] * 5)
    assert jnd_map(ds, sames) == pytest.approx(1.0)  # all "same" pairs ranked closest
    assert jnd_map(-ds, sames) < 0.6


# ------------------------------------------------------------------------------------------------ aggregation


def test_aggregate_subset_mean_vs_pooled():
    a = np.ones(10)  # subset a: perfect
    b = np.zeros(30)  # subset b: all wrong
    r = aggregate({"a": (a,), "b": (b,)}, "2afc")
    assert r["a"] == 1.0 and r["b"] == 0.0
    assert r["subset_mean"] == pytest.approx(0.5)
    assert r["pooled"] == pytest.approx(10 / 40)


def test_aggregate_jnd_pooled_is_map_of_union():
    rng = np.random.default_rng(3)
    d1, s1, d2, s2 = rng.uniform(size=20), rng.uniform(size=20), rng.uniform(size=30), rng.uniform(size=30)
    r = aggregate({"x": (d1, s1), "y": (d2, s2)}, "jnd")
    assert r["x"] == pytest.approx(jnd_map(d1, s1))
    assert r["subset_mean"] == pytest.approx((jnd_map(d1, s1) + jnd_map(d2, s2)) / 2)
    assert r["pooled"] == pytest.approx(jnd_map(np.r_[d1, d2], np.r_[s1, s2]))


# ------------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(4)
    s = rng.uniform(size=300)
    lo, hi = bootstrap_ci(s, "2afc", n_boot=500, seed=7)
    assert lo < s.mean() < hi
    assert (lo, hi) == bootstrap_ci(s, "2afc", n_boot=500, seed=7)
    assert (lo, hi) != bootstrap_ci(s, "2afc", n_boot=500, seed=8)


def test_bootstrap_ci_narrower_with_more_data():
    rng = np.random.default_rng(5)
    small = rng.uniform(size=50)
    big = rng.uniform(size=5000)
    w_small = np.diff(bootstrap_ci(small, "2afc", n_boot=400, seed=0))[0]
    w_big = np.diff(bootstrap_ci(big, "2afc", n_boot=400, seed=0))[0]
    assert w_big < w_small / 4  # ~1/sqrt(100) = 1/10 in theory


def test_bootstrap_ci_jnd_and_aggregates():
    rng = np.random.default_rng(6)
    per = {k: (rng.uniform(size=n), rng.uniform(size=n)) for k, n in (("a", 40), ("b", 80))}
    point = aggregate(per, "jnd")
    cis = bootstrap_aggregate_ci(per, "jnd", n_boot=200, seed=1)
    assert set(cis) == {"a", "b", "subset_mean", "pooled"}
    for k, (lo, hi) in cis.items():
        assert lo <= hi
        assert lo - 0.05 <= point[k] <= hi + 0.05  # percentile CI of a non-linear statistic: near the estimate
    assert cis == bootstrap_aggregate_ci(per, "jnd", n_boot=200, seed=1)


def test_bootstrap_errors():
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.ones(3), n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(np.ones(3), alpha=1.5)


# ------------------------------------------------------------------------------------------------ baselines


def _ssim_naive(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """Straightforward per-window SSIM (Wang et al. 2004), one channel, valid windows."""
    g = gaussian_window(win, sigma).numpy()
    w = np.outer(g, g)
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            a = x[i : i + win, j : j + win]
            b = y[i : i + win, j : j + win]
            ma, mb = (w * a).sum(), (w * b).sum()
            va = (w * (a - ma) ** 2).sum()
            vb = (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_naive_implementation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 17, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(2, 3, 20, 17, generator=g, dtype=torch.float64)).clamp(0, 1)
    got = ssim(x, y)
    for b in range(2):
        expect = np.mean([_ssim_naive(x[b, c].numpy(), y[b, c].numpy()) for c in range(3)])
        assert float(got[b]) == pytest.approx(expect, abs=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_ssim_matches_naive_implementation_random_shapes(seed):
    """Non-square images, channel counts, float32/float64 and images smaller than the 11-pixel window (the
    window shrinks to the largest odd size that fits), against the per-window formula."""
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 24, size=2))
    b, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    dtype = (torch.float32, torch.float64)[seed % 2]
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(b, c, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    win = min(11, h if h % 2 else h - 1, w if w % 2 else w - 1)
    got = ssim(x.to(dtype), y.to(dtype))
    assert got.dtype == dtype and got.shape == (b,)
    xs, ys = x.to(dtype).double(), y.to(dtype).double()
    for i in range(b):
        expect = np.mean([_ssim_naive(xs[i, k].numpy(), ys[i, k].numpy(), win=win) for k in range(c)])
        tol = 1e-10 if dtype == torch.float64 else 1e-6
        assert float(got[i]) == pytest.approx(expect, abs=tol)


def test_ssim_known_values():
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    a, b = 0.2, 0.7  # constant images: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    xa, xb = torch.full((1, 3, 16, 16), a, dtype=torch.float64), torch.full((1, 3, 16, 16), b, dtype=torch.float64)
    assert float(ssim(xa, xb)) == pytest.approx((2 * a * b + 1e-4) / (a * a + b * b + 1e-4), rel=1e-9)
    assert float(ssim(x, 1 - x)) < 0.2


def test_psnr_known_values_and_errors():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.full((2, 3, 8, 8), 0.1)
    np.testing.assert_allclose(psnr(x, y).numpy(), [20.0, 20.0], rtol=1e-5)  # 10 log10(1 / 0.01)
    assert float(psnr(x, x)[0]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="y"):
        psnr(x, y[:, :, :4])
    with pytest.raises(TypeError, match="x"):
        ssim(x.long(), y)
