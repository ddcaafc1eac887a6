"""BAPPS reader: layout, values, resizing, clear errors; the embedded default set."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from percept_fast.score.bapps import BAPPSError, JNDDataset, TwoAFCDataset, list_subsets, write_item


def _write_2afc(root, subset="traditional", n=5, size=16, seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        ref, p0, p1 = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(3))
        judge = float(rng.uniform())
        write_item(root, "2afc", subset, f"{i:06d}", ref=ref, p0=p0, p1=p1, judge=judge)
        items.append((ref, p0, p1, judge))
    return items


def test_reads_2afc_values_and_order(tmp_path):
    items = _write_2afc(tmp_path, n=4)
    ds = TwoAFCDataset(tmp_path, "traditional", load_size=None)
    assert len(ds) == 4
    for i, (ref, p0, p1, judge) in enumerate(items):
        assert p0.shape == ref.shape
        it = ds[i]
        assert it["ref"].dtype == torch.float32 and it["ref"].shape == (3, 16, 16)
        np.testing.assert_allclose(it["ref"].permute(1, 2, 0).numpy() * 255, ref, atol=1e-4)
        np.testing.assert_allclose(it["p1"].permute(1, 2, 0).numpy() * 255, p1, atol=1e-4)
        assert float(it["judge"]) == pytest.approx(judge, abs=1e-6)
        assert it["index"] == i
    with pytest.raises(IndexError):
        ds[4]


def test_load_size_resizes_like_lpips(tmp_path):
    _write_2afc(tmp_path, n=2, size=32)
    ds = TwoAFCDataset(tmp_path, "traditional", load_size=8)
    assert ds[0]["p0"].shape == (3, 8, 8)
    assert float(ds[0]["p0"].min()) >= 0.0 and float(ds[0]["p0"].max()) <= 1.0


def test_jnd_reader(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        write_item(
            tmp_path,
            "jnd",
            "cnn",
            f"{i:06d}",
            p0=rng.uniform(size=(8, 8, 3)),
            p1=rng.uniform(size=(8, 8, 3)),
            same=i / 2,
        )
    ds = JNDDataset(tmp_path, "cnn", load_size=None)
    np.testing.assert_allclose(ds.judgements, [0.0, 0.5, 1.0])
    assert set(ds[1]) == {"p0", "p1", "same", "index"}


def test_list_subsets_canonical_order(tmp_path):
    for s in ("frameinterp", "traditional", "zzz_custom", "cnn"):
        _write_2afc(tmp_path, s, n=1, size=8)
    assert list_subsets(tmp_path, "2afc", "val") == ["traditional", "cnn", "frameinterp", "zzz_custom"]
    assert list_subsets(tmp_path, "jnd", "val") == []
    with pytest.raises(ValueError, match="kind"):
        list_subsets(tmp_path, "3afc")


def test_error_missing_root_and_subset(tmp_path):
    with pytest.raises(BAPPSError, match="not a directory"):
        TwoAFCDataset(tmp_path / "nope", "traditional")
    _write_2afc(tmp_path, "cnn", n=1, size=8)
    with pytest.raises(BAPPSError, match=r"missing directory.*traditional.*present.*cnn"):
        TwoAFCDataset(tmp_path, "traditional")


def test_error_missing_component_dir(tmp_path):
    _write_2afc(tmp_path, n=2, size=8)
    d = tmp_path / "2afc" / "val" / "traditional" / "judge"
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    with pytest.raises(BAPPSError, match=r"missing directory: .*judge"):
        TwoAFCDataset(tmp_path, "traditional")


def test_error_mismatched_file_lists(tmp_path):
    _write_2afc(tmp_path, n=3, size=8)
    os.remove(tmp_path / "2afc" / "val" / "traditional" / "p1" / "000001.png")
    with pytest.raises(BAPPSError, match=r"mismatched file lists.*p1.*000001"):
        TwoAFCDataset(tmp_path, "traditional")


def test_error_bad_judgement(tmp_path):
    _write_2afc(tmp_path, n=2, size=8)
    np.save(tmp_path / "2afc" / "val" / "traditional" / "judge" / "000000.npy", np.array([1.7]))
    with pytest.raises(BAPPSError, match=r"000000.npy.*\[0, 1\]"):
        TwoAFCDataset(tmp_path, "traditional")
    np.save(tmp_path / "2afc" / "val" / "traditional" / "judge" / "000000.npy", np.array([0.1, 0.2]))
    with pytest.raises(BAPPSError, match="single value"):
        TwoAFCDataset(tmp_path, "traditional")


def test_error_corrupt_image_and_empty(tmp_path):
    _write_2afc(tmp_path, n=1, size=8)
    (tmp_path / "2afc" / "val" / "traditional" / "ref" / "000000.png").write_bytes(b"not a png")
    ds = TwoAFCDataset(tmp_path, "traditional")
    with pytest.raises(BAPPSError, match="cannot read image"):
        ds[0]
    for sub in ("ref", "p0", "p1", "judge"):
        (tmp_path / "2afc" / "val" / "empty" / sub).mkdir(parents=True)
    with pytest.raises(BAPPSError, match="no images"):
        TwoAFCDataset(tmp_path, "empty")


def test_fingerprint_changes_with_data(tmp_path):
    _write_2afc(tmp_path, n=2, size=8)
    f1 = TwoAFCDataset(tmp_path, "traditional").fingerprint()
    assert f1 == TwoAFCDataset(tmp_path, "traditional").fingerprint()
    _write_2afc(tmp_path, n=3, size=8, seed=5)
    assert TwoAFCDataset(tmp_path, "traditional").fingerprint() != f1


def test_embedded_default_set_small(tmp_path):
    from percept_fast.data import default_set

    root = default_set.build_default_set(tmp_path / "set", seed=3, per_subset=12, n_jnd=5)
    assert set(list_subsets(root, "2afc", "val")) == set(default_set.SUBSETS)
    man = json.loads((root / "manifest.json").read_text())
    assert "SYNTHETIC" in man["description"]
    ds = TwoAFCDataset(root, "graded")
    assert len(ds) == default_set.graded_count(12) == 6
    rows = man["2afc"]["graded"]
    assert [r["family"] for r in rows] == list(default_set.FAMILIES)
    for i, row in enumerate(rows):
        # the less distorted patch is preferred: p > 0.5 exactly when s1 < s0
        assert (ds.judgements[i] > 0.5) == (row["s1"] < row["s0"])
    assert len(TwoAFCDataset(root, "matched_mse")) == 12
    assert len(JNDDataset(root, default_set.JND_SUBSET)) == 5
    # deterministic: the same seed builds identical files
    root2 = default_set.build_default_set(tmp_path / "set2", seed=3, per_subset=12, n_jnd=5)
    a = (root / "2afc" / "val" / "graded" / "p0" / "000002.png").read_bytes()
    assert a == (root2 / "2afc" / "val" / "graded" / "p0" / "000002.png").read_bytes()


@pytest.mark.parametrize("family", ["blur", "noise", "jpeg", "color", "contrast", "pixelate"])
def test_distortions_are_graded(family):
    from percept_fast.data import default_set

    rng = np.random.default_rng(0)
    ref = np.clip(rng.uniform(size=(64, 64, 3)) * 0.5 + np.linspace(0, 0.5, 64)[None, :, None], 0, 1)
    aux = default_set._aux(rng)
    errs = [np.abs(default_set.distort(ref, family, s, aux) - ref).mean() for s in (0.1, 0.5, 1.0)]
    assert errs[0] < errs[1] < errs[2]
