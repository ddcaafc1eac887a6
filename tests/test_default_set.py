"""The embedded default set: matched-MSE distortions (tolerance, judgement rule, determinism), the graded
subset, and the per-subset report of ``percept-fast score`` on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from percept_fast.cli import main
from percept_fast.data import default_set, matched_mse
from percept_fast.score.bapps import JNDDataset, TwoAFCDataset, list_subsets
from percept_fast.score.baselines import psnr
from percept_fast.score.score import twoafc_score

# one triplet per (far, close) combination: the smallest balanced matched_mse subset
N_SMALL = len(matched_mse.FAR_KINDS) * len(matched_mse.CLOSE_KINDS)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return default_set.build_default_set(tmp_path_factory.mktemp("set") / "a", seed=5, per_subset=N_SMALL, n_jnd=3)


def _photo_patch(seed: int) -> np.ndarray:
    from PIL import Image

    with Image.open(default_set.source_photos()[0]) as im:
        ref, _ = default_set._crop(im.convert("RGB"), np.random.default_rng(seed))
    return np.round(ref * 255.0).astype(np.uint8)


def _mse01(a: torch.Tensor, b: torch.Tensor) -> float:
    """MSE of two [3, H, W] reader tensors, independent of matched_mse.mse."""
    return float((a.double() - b.double()).pow(2).mean())


def _affine_residual(ref: torch.Tensor, img: torch.Tensor) -> float:
    """RMS residual of the best per-channel affine fit img ~ a + b ref: a luminance shift or a contrast stretch
    is affine in the reference up to the 8-bit dither (and clipping); blur, JPEG and impulse noise are not."""
    res = []
    for c in range(3):
        x = ref[c].flatten().double().numpy()
        y = img[c].flatten().double().numpy()
        design = np.stack([np.ones_like(x), x], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        res.append(np.mean((y - design @ coef) ** 2))
    return float(np.sqrt(np.mean(res)))


# ------------------------------------------------------------------------------------------------ layout


def test_subsets_and_manifest(small_set):
    assert set(list_subsets(small_set, "2afc", "val")) == set(default_set.SUBSETS)
    assert list_subsets(small_set, "jnd", "val") == [default_set.JND_SUBSET]
    man = json.loads((small_set / "manifest.json").read_text())
    assert "SYNTHETIC ORDINAL" in man["description"] and "not human data" in man["description"]
    readme = (small_set / "README.txt").read_text()
    assert "Wang and Bovik" in readme and "not human data" in readme
    rows = man["2afc"]["matched_mse"]
    assert len(rows) == N_SMALL
    combos = {(r["far"], r["close"]) for r in rows}
    assert combos == {(f, c) for f in matched_mse.FAR_KINDS for c in matched_mse.CLOSE_KINDS}
    n_graded = default_set.graded_count(N_SMALL)
    assert n_graded == N_SMALL // 2
    assert [r["family"] for r in man["2afc"]["graded"]] == list(default_set.FAMILIES[:n_graded])  # cycled
    assert len(TwoAFCDataset(small_set, "graded")) == n_graded
    assert len(JNDDataset(small_set, default_set.JND_SUBSET)) == 3


def test_graded_and_jnd_reuse_the_matched_mse_images(small_set):
    """graded triplet i is on matched_mse's reference i; JND pair j is graded triplet j // 2's reference and its
    p0 (even j) or p1, with same = exp(-s / JND_TAU) of that patch's strength; graded's judgement follows its rule."""
    mm = TwoAFCDataset(small_set, "matched_mse", load_size=None)
    gr = TwoAFCDataset(small_set, "graded", load_size=None)
    jnd = JNDDataset(small_set, default_set.JND_SUBSET, load_size=None)
    man = json.loads((small_set / "manifest.json").read_text())
    for i, row in enumerate(man["2afc"]["graded"]):
        assert torch.equal(gr[i]["ref"], mm[i]["ref"])
        assert not torch.equal(gr[i]["p0"], gr[i]["p1"])
        expect = 1.0 / (1.0 + np.exp(-(row["s0"] - row["s1"]) / default_set.TEMPERATURE))
        assert float(gr.judgements[i]) == pytest.approx(expect, rel=1e-6)
    for j, row in enumerate(man["jnd"][default_set.JND_SUBSET]):
        t, which = j // 2, f"p{j % 2}"
        assert torch.equal(jnd[j]["p0"], gr[t]["ref"])
        assert torch.equal(jnd[j]["p1"], gr[t][which])
        s = man["2afc"]["graded"][t]["s0" if which == "p0" else "s1"]
        assert row["s"] == s
        assert float(jnd.judgements[j]) == pytest.approx(np.exp(-s / default_set.JND_TAU), rel=1e-6)


def test_counts_are_validated(tmp_path):
    n_graded = default_set.graded_count(4)
    with pytest.raises(ValueError, match="n_jnd"):
        default_set.build_default_set(tmp_path / "x", per_subset=4, n_jnd=2 * n_graded + 1)
    with pytest.raises(ValueError, match="per_subset"):
        default_set.build_default_set(tmp_path / "x", per_subset=0)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ matched MSE


def test_matched_mse_within_tolerance_on_the_stored_images(small_set):
    ds = TwoAFCDataset(small_set, "matched_mse", load_size=None)
    man = json.loads((small_set / "manifest.json").read_text())["2afc"]["matched_mse"]
    lo_db, hi_db = matched_mse.PSNR_RANGE_DB
    for i in range(len(ds)):
        it = ds[i]
        m0, m1 = _mse01(it["ref"], it["p0"]), _mse01(it["ref"], it["p1"])
        assert abs(m0 / m1 - 1.0) <= matched_mse.MSE_RTOL * (1 + 1e-6), (i, m0, m1)
        far_mse = man[i]["far_mse"]
        assert far_mse == pytest.approx(m1 if man[i]["close_is"] == "p0" else m0, rel=1e-6)
        psnr_db = 10 * np.log10(1 / far_mse)
        slack = matched_mse.FAR_PSNR_SLACK_DB
        assert lo_db - slack <= psnr_db <= hi_db + slack
        assert abs(psnr_db - man[i]["target_psnr_db"]) <= slack


def test_judgement_rule_close_kind_is_preferred(small_set):
    """Judge = 1 exactly when p1 holds the close distortion, checked from the pixels: the preferred image is
    the one that is (nearly) affine in the reference."""
    ds = TwoAFCDataset(small_set, "matched_mse", load_size=None)
    man = json.loads((small_set / "manifest.json").read_text())["2afc"]["matched_mse"]
    positions = set()
    for i in range(len(ds)):
        it = ds[i]
        p = float(ds.judgements[i])
        assert p in (0.0, 1.0)  # unanimous synthetic votes
        assert p == (1.0 if man[i]["close_is"] == "p1" else 0.0)
        r0, r1 = _affine_residual(it["ref"], it["p0"]), _affine_residual(it["ref"], it["p1"])
        assert (r1 < r0) == (p == 1.0), (i, man[i]["far"], man[i]["close"], r0, r1)
        positions.add(man[i]["close_is"])
    assert positions == {"p0", "p1"}  # the close distortion is not always on the same side


def test_psnr_is_at_chance_by_construction(small_set):
    """PSNR's two distances differ by less than the tolerance allows (0.01 % of MSE = 0.0004 dB)."""
    ds = TwoAFCDataset(small_set, "matched_mse", load_size=None)
    tol_db = 10 * np.log10(1 + matched_mse.MSE_RTOL)
    for i in range(len(ds)):
        it = ds[i]
        d = psnr(it["ref"][None].double(), it["p0"][None].double()) - psnr(
            it["ref"][None].double(), it["p1"][None].double()
        )
        assert abs(float(d)) <= tol_db * (1 + 1e-6)


@pytest.mark.parametrize("far", matched_mse.FAR_KINDS)
@pytest.mark.parametrize("close", matched_mse.CLOSE_KINDS)
def test_matched_pair_unit(far, close):
    ref = _photo_patch(11)
    pair = matched_mse.matched_pair(ref, far, close, 27.0, np.random.default_rng(0))
    assert pair is not None
    assert pair.far.dtype == np.uint8 and pair.far.shape == ref.shape
    assert pair.far_mse == matched_mse.mse(ref, pair.far) and pair.close_mse == matched_mse.mse(ref, pair.close)
    assert pair.rel_mismatch <= matched_mse.MSE_RTOL
    assert abs(matched_mse.psnr_db(pair.far_mse) - 27.0) <= matched_mse.FAR_PSNR_SLACK_DB


def test_flat_patch_cannot_be_blurred_to_the_target():
    flat = np.full((64, 64, 3), 120, dtype=np.uint8)
    assert matched_mse.matched_pair(flat, "blur", "luminance_shift", 26.0, np.random.default_rng(0)) is None
    with pytest.raises(ValueError, match="far_kind"):
        matched_mse.matched_pair(flat, "luminance_shift", "blur", 26.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="ref"):
        matched_mse.matched_pair(flat.astype(np.float32), "blur", "luminance_shift", 26.0, np.random.default_rng(0))


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(["luminance_shift", "contrast_stretch", "blur", "impulse"]), seed=st.integers(0, 10**6))
def test_mse_grows_with_the_parameter(kind, seed):
    """The searches rely on MSE growing with each continuous parameter over its range."""
    ref = _photo_patch(seed % 97)
    noise = matched_mse.PairNoise.draw(np.random.default_rng(seed), ref)
    lo, hi = matched_mse._RANGES[kind]
    params = np.linspace(lo, hi, 9) if kind != "blur" else np.linspace(lo, 3.0, 9)
    mses = [matched_mse.mse(ref, matched_mse.apply(ref, kind, float(p), noise)) for p in params]
    assert all(b >= a - 1e-12 for a, b in zip(mses, mses[1:])), mses


def test_dithered_luminance_shift_is_exact_on_average():
    ref = np.full((64, 64, 3), 100, dtype=np.uint8)
    noise = matched_mse.PairNoise.draw(np.random.default_rng(3), ref)
    out = matched_mse.apply(ref, "luminance_shift", 3.3 / 255.0, noise)
    diff = out.astype(np.float64) - ref
    assert set(np.unique(diff)) == {3.0, 4.0}  # a fraction of a grey level: some pixels up, some down
    assert diff.mean() == pytest.approx(3.3, abs=0.05)
    assert (diff[..., 0] == diff[..., 1]).all() and (diff[..., 1] == diff[..., 2]).all()  # no colour shift


# ------------------------------------------------------------------------------------------------ determinism


def test_deterministic_build(small_set, tmp_path):
    again = default_set.build_default_set(tmp_path / "b", seed=5, per_subset=N_SMALL, n_jnd=3)
    files = sorted(p.relative_to(small_set) for p in small_set.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:
        assert (small_set / f).read_bytes() == (again / f).read_bytes(), f
    other = default_set.build_default_set(tmp_path / "c", seed=6, per_subset=N_SMALL, n_jnd=3)
    a = (small_set / "2afc/val/matched_mse/p0/000000.png").read_bytes()
    assert a != (other / "2afc/val/matched_mse/p0/000000.png").read_bytes()


def test_cache_key_follows_the_construction(monkeypatch, tmp_path):
    monkeypatch.setenv("PERCEPT_FAST_CACHE", str(tmp_path))
    a = default_set.default_set_dir()
    monkeypatch.setattr(matched_mse, "MSE_RTOL", 1e-2)
    assert default_set.default_set_dir() != a  # a changed rule never reuses an old build


# ------------------------------------------------------------------------------------------------ report


def test_score_report_per_subset(small_set, tmp_path, monkeypatch, capsys):
    """``percept-fast score`` on the embedded set: both subsets in results, CSV, table and plot; the printed
    output says the judgements are synthetic; PSNR's score is what its distances give."""
    monkeypatch.setenv("PERCEPT_FAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "o"
    args = ["score", "--no-progress", "--metric", "psnr", "--default-per-subset", str(N_SMALL), "--out", str(out)]
    assert main([*args, "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["embedded_default_set"] is True
    assert res["data"]["about"] == default_set.ABOUT
    assert list(res["data"]["2afc_subsets"]) == list(default_set.SUBSETS)
    assert res["data"]["2afc_ceiling"]["matched_mse"] == 1.0  # unanimous judgements
    for metric in ("psnr", "ssim"):
        assert set(res["metrics"][metric]["2afc"]["subsets"]) == set(default_set.SUBSETS)
    for word in ("matched_mse", "graded", "SYNTHETIC ORDINAL JUDGEMENTS", "not", "Wang & Bovik 2009", "(ceiling)"):
        assert word in printed, word
    rows = (out / "scores.csv").read_text().splitlines()
    assert any(r.startswith("psnr,2afc,matched_mse,") for r in rows)
    assert any(r.startswith("ssim,2afc,graded,") for r in rows)
    assert (out / "2afc_subsets.png").stat().st_size > 0
    assert (out / "2afc_matched_mse_by_kind.png").stat().st_size > 0
    assert "per pair kind" in printed
    # the per-kind scores partition the subset's triplets: their n-weighted mean is the subset score
    for metric in ("psnr", "ssim"):
        r = res["metrics"][metric]["2afc"]
        by_kind = r["matched_mse_by_kind"]
        assert len(by_kind) == N_SMALL and all(v["n"] == 1 for v in by_kind.values())
        mean = sum(v["score"] * v["n"] for v in by_kind.values()) / sum(v["n"] for v in by_kind.values())
        assert mean == pytest.approx(r["subsets"]["matched_mse"]["score"], abs=1e-12)
    root = res["data"]["root"]
    ds = TwoAFCDataset(root, "matched_mse")
    refs = torch.stack([ds[i]["ref"] for i in range(len(ds))])
    d0 = -psnr(refs, torch.stack([ds[i]["p0"] for i in range(len(ds))])).double().numpy()
    d1 = -psnr(refs, torch.stack([ds[i]["p1"] for i in range(len(ds))])).double().numpy()
    expect = twoafc_score(d0, d1, ds.judgements)
    assert res["metrics"]["psnr"]["2afc"]["subsets"]["matched_mse"]["score"] == pytest.approx(expect, abs=1e-12)


def test_matched_mse_by_kind_groups_and_checks_ids(small_set):
    man = json.loads((small_set / "manifest.json").read_text())["2afc"]["matched_mse"]
    ids = [r["id"] for r in man]
    judge = np.array([r["p"] for r in man])
    # distances that always pick p0: right exactly where the close distortion is p0
    out = default_set.matched_mse_by_kind(small_set, ids, np.zeros(len(ids)), np.ones(len(ids)), judge)
    for r in man:
        assert out[f"{r['close']} vs {r['far']}"]["score"] == (1.0 if r["close_is"] == "p0" else 0.0)
    with pytest.raises(ValueError, match="ids"):
        default_set.matched_mse_by_kind(small_set, ["999999"], [0.0], [1.0], [1.0])
