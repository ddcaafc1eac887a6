"""``percept-fast score`` end to end on tiny synthetic BAPPS directories written by the tests."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from percept_fast.cli import main
from percept_fast.score.bapps import TwoAFCDataset, write_item
from percept_fast.score.baselines import psnr
from percept_fast.score.score import jnd_map, twoafc_score

REPO = Path(__file__).resolve().parents[1]


def _has_metric() -> bool:
    try:
        import percept_fast.metric  # noqa: F401
    except ImportError:
        return False
    return True


needs_metric = pytest.mark.skipif(not _has_metric(), reason="percept_fast.metric not available")


def _tiny_bapps(root: Path, n: int = 7, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for subset in ("traditional", "cnn"):
        for i in range(n):
            ref = rng.uniform(size=(size, size, 3))
            p0 = np.clip(ref + rng.uniform(0.0, 0.3) * rng.normal(size=ref.shape), 0, 1)
            p1 = np.clip(ref + rng.uniform(0.0, 0.3) * rng.normal(size=ref.shape), 0, 1)
            write_item(root, "2afc", subset, f"{i:06d}", ref=ref, p0=p0, p1=p1, judge=rng.choice([0.0, 0.2, 0.6, 1.0]))
    for i in range(n + 2):
        p0 = rng.uniform(size=(size, size, 3))
        p1 = np.clip(p0 + rng.uniform(0, 0.2) * rng.normal(size=p0.shape), 0, 1)
        write_item(root, "jnd", "traditional", f"{i:06d}", p0=p0, p1=p1, same=rng.uniform())
    return root


def _run(args: list[str]) -> dict:
    assert main(["score", "--no-progress", "--quiet", *args]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "results.json").read_text())


def _scores(res: dict) -> dict:
    return {m: {k: r[k] for k in ("2afc", "jnd") if k in r} for m, r in res["metrics"].items()}


def test_score_baselines_end_to_end(tmp_path):
    data = _tiny_bapps(tmp_path / "bapps")
    out = tmp_path / "out"
    res = _run(
        ["--data", str(data), "--metric", "psnr,ssim", "--out", str(out), "--bootstrap", "50", "--load-size", "0"]
    )
    for f in ("results.json", "scores.csv", "per_layer.csv", "2afc_subsets.png", "jnd_subsets.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert (out / "2afc_subsets.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # recompute PSNR's 2AFC score independently from the images
    for subset in ("traditional", "cnn"):
        ds = TwoAFCDataset(data, subset, load_size=None)
        items = [ds[i] for i in range(len(ds))]
        ref, p0, p1 = (torch.stack([it[k] for it in items]) for k in ("ref", "p0", "p1"))
        expect = twoafc_score(-psnr(ref, p0).double().numpy(), -psnr(ref, p1).double().numpy(), ds.judgements)
        assert res["metrics"]["psnr"]["2afc"]["subsets"][subset]["score"] == pytest.approx(expect, abs=1e-12)
    r = res["metrics"]["psnr"]["2afc"]
    assert r["subset_mean"]["score"] == pytest.approx(np.mean([r["subsets"][s]["score"] for s in r["subsets"]]))
    lo, hi = r["pooled"]["ci"]
    assert lo <= r["pooled"]["score"] <= hi
    assert 0.0 <= res["metrics"]["ssim"]["jnd"]["pooled"]["score"] <= 1.0
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["metric"], r["task"], r["subset"]) for r in rows} >= {
        ("psnr", "2afc", "pooled"),
        ("ssim", "jnd", "traditional"),
    }
    assert res["notice"] is None  # no deep metric, nothing random


def test_jnd_score_matches_direct_computation(tmp_path):
    from percept_fast.score.bapps import JNDDataset

    data = _tiny_bapps(tmp_path / "bapps", n=9)
    res = _run(
        [
            "--data",
            str(data),
            "--metric",
            "psnr",
            "--no-baselines",
            "--out",
            str(tmp_path / "o"),
            "--bootstrap",
            "0",
            "--workers",
            "2",
            "--batch-size",
            "4",
        ]
    )
    ds = JNDDataset(data, "traditional")
    items = [ds[i] for i in range(len(ds))]
    p0, p1 = (torch.stack([it[k] for it in items]) for k in ("p0", "p1"))
    expect = jnd_map(-psnr(p0, p1).double().numpy(), ds.judgements)
    assert res["metrics"]["psnr"]["jnd"]["subsets"]["traditional"]["score"] == pytest.approx(expect, abs=1e-12)
    assert list(res["metrics"]) == ["psnr"]


def test_errors_are_clear(tmp_path, capsys):
    assert main(["score", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["score", "--data", str(tmp_path / "empty"), "--metric", "psnr", "--out", str(tmp_path / "o")]) == 2
    assert "no BAPPS subsets" in capsys.readouterr().err
    data = _tiny_bapps(tmp_path / "b", n=2)
    assert (
        main(["score", "--data", str(data), "--metric", "psnr", "--subsets", "deblur", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "deblur" in capsys.readouterr().err


def _chunks(out: Path) -> list[Path]:
    return sorted((out / "cache").rglob("chunk_*.npz"))


def _resume_check(tmp_path: Path, metrics: str, n: int = 8) -> None:
    data = _tiny_bapps(tmp_path / "bapps", n=n)
    common = ["--data", str(data), "--metric", metrics, "--batch-size", "3", "--bootstrap", "20", "--no-plots"]
    full = _run([*common, "--out", str(tmp_path / "full")])
    # simulate a run killed part-way: copy the cache and drop a third of its chunks
    out = tmp_path / "partial"
    shutil.copytree(tmp_path / "full" / "cache", out / "cache")
    chunks = _chunks(out)
    dropped = chunks[::3]
    n_dropped = sum(int(np.load(p)["index"].size) for p in dropped)
    for p in dropped:
        p.unlink()
    res = _run([*common, "--out", str(out)])
    assert sum(m["n_computed"] for m in res["metrics"].values()) == n_dropped
    assert _scores(res) == _scores(full)
    assert len(_chunks(out)) == len(chunks)
    # a third run computes nothing
    res3 = _run([*common, "--out", str(out)])
    assert sum(m["n_computed"] for m in res3["metrics"].values()) == 0
    assert _scores(res3) == _scores(full)


def test_resume_from_partial_cache_baselines(tmp_path):
    _resume_check(tmp_path, "psnr,ssim")


@needs_metric
def test_resume_from_partial_cache_deep(tmp_path):
    _resume_check(tmp_path, "squeeze", n=4)


def test_cache_keyed_by_config(tmp_path):
    data = _tiny_bapps(tmp_path / "bapps", n=3)
    out = tmp_path / "o"
    _run(
        ["--data", str(data), "--metric", "psnr", "--no-baselines", "--out", str(out), "--bootstrap", "0", "--no-plots"]
    )
    res = _run(
        ["--data", str(data), "--metric", "ssim", "--no-baselines", "--out", str(out), "--bootstrap", "0", "--no-plots"]
    )
    assert res["metrics"]["ssim"]["n_cached"] == 0  # another metric does not reuse psnr's distances
    # changing the data invalidates the cache
    write_item(
        data,
        "2afc",
        "cnn",
        "000099",
        ref=np.zeros((32, 32, 3)),
        p0=np.zeros((32, 32, 3)),
        p1=np.ones((32, 32, 3)),
        judge=0.0,
    )
    res = _run(
        ["--data", str(data), "--metric", "ssim", "--no-baselines", "--out", str(out), "--bootstrap", "0", "--no-plots"]
    )
    assert res["metrics"]["ssim"]["n_cached"] == 0


def _torchrun(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={nproc}", "-m", "percept_fast.cli", "score", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_equals_one(tmp_path):
    data = _tiny_bapps(tmp_path / "bapps", n=5)
    metrics = "squeeze,psnr" if _has_metric() else "psnr,ssim"
    common = ["--data", str(data), "--metric", metrics, "--no-baselines", "--batch-size", "2", "--bootstrap", "20"]
    common += ["--no-plots", "--no-progress", "--quiet"]
    # same batches (whole batches are dealt to the ranks) and the same thread count as each torchrun worker,
    # so that the floating-point results are bit-identical
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = _run([*common[:-2], "--out", str(tmp_path / "one")])
    finally:
        torch.set_num_threads(threads)
    p = _torchrun([*common, "--out", str(tmp_path / "two")], nproc=2)
    assert p.returncode == 0, p.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["config"]["world_size"] == 2
    assert _scores(two) == _scores(one)
    # both ranks wrote their share of the cache
    names = {c.name.split("_")[1] for c in _chunks(tmp_path / "two")}
    assert names == {"r0", "r1"}


def test_default_embedded_set_small(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPT_FAST_CACHE", str(tmp_path / "cache"))
    metrics = "squeeze,psnr" if _has_metric() else "psnr"
    res = _run(["--metric", metrics, "--default-per-subset", "3", "--out", str(tmp_path / "o"), "--bootstrap", "10"])
    assert res["data"]["embedded_default_set"] is True
    assert "synthetic" in res["data"]["judgements"]
    assert list(res["data"]["2afc_subsets"]) == ["matched_mse", "graded"]
    assert {"psnr", "ssim"} <= set(res["metrics"])
    if _has_metric():
        assert "RANDOMLY INITIALISED" in res["notice"]
        assert res["metrics"]["squeeze"]["spec"]["random_init_backbone"] is True
        assert len(res["metrics"]["squeeze"]["2afc"]["per_layer"]) == 7
        assert (tmp_path / "o" / "2afc_layers.png").is_file()


@needs_metric
def test_reference_features_computed_once_per_triplet():
    from percept_fast.score.runner import DistanceModel, MetricSpec

    model = DistanceModel(MetricSpec(name="alex", lin_weights="lpips"))
    metric = model.metric
    calls = []
    orig = metric.features

    def counting(x):
        calls.append(x.shape[0])
        return orig(x)

    metric.features = counting
    g = torch.Generator().manual_seed(0)
    ref, p0, p1 = (torch.rand(4, 3, 64, 64, generator=g) for _ in range(3))
    out = model.triplet(ref, p0, p1)
    assert calls == [12]  # one backbone pass over [ref, p0, p1]: 3 images per triplet, not 4
    metric.features = orig
    with torch.inference_mode():
        d0 = metric(ref, p0).double().numpy()
        l1 = metric(ref, p1, per_layer=True).double().numpy()
    np.testing.assert_allclose(out["d0"], d0, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out["l1"], l1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out["l0"].sum(1), out["d0"], rtol=1e-12)


@needs_metric
@pytest.mark.parametrize("seed, pin_bytes", [(0, 2 << 30), (1, 2 << 30), (2, 0), (3, 1 << 20)])
def test_repeated_images_go_through_the_backbone_once(seed, pin_bytes):
    """FeatureReuse: images repeated across batches and inside a batch (random pattern) are computed once, the
    distances equal those of a model without reuse, and nothing is held after the last use (held as views of
    their batch, or copied beyond pin_bytes)."""
    from percept_fast.score.runner import DistanceModel, FeatureReuse, MetricSpec, image_key

    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    pool = torch.rand(9, 3, 32, 32, generator=g)
    batches = []  # triplets drawn from a small pool: many repeats
    for _ in range(4):
        b = int(rng.integers(1, 5))
        batches.append([pool[rng.integers(0, len(pool), size=b)] for _ in range(3)])
    uses: dict[bytes, int] = {}
    for trip in batches:
        for t in trip:
            for img in t:
                uses[image_key(img)] = uses.get(image_key(img), 0) + 1
    spec = MetricSpec(name="squeeze", lin_weights="lpips")
    plain = DistanceModel(spec)
    reuse = FeatureReuse(uses, pin_bytes=pin_bytes)
    shared = DistanceModel(spec, reuse=reuse)
    for ref, p0, p1 in batches:
        want, got = plain.triplet(ref, p0, p1), shared.triplet(ref, p0, p1)
        for k in ("d0", "d1", "l0", "l1"):
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7)
    assert reuse.n_images == sum(3 * len(t[0]) for t in batches)
    assert reuse.n_computed == len(uses)  # each distinct image once
    assert reuse.n_held == 0 and not reuse._pins
    # features(): the whole batch, in order, equal to the backbone's
    reuse2 = FeatureReuse({image_key(pool[0]): 3}, pin_bytes=pin_bytes)
    x = pool[[0, 1, 0]]
    with torch.inference_mode():
        got = reuse2.features(x, plain._backbone)
        want = plain._backbone(x)
        again = reuse2.features(pool[[2, 0]], plain._backbone)
        want2 = plain._backbone(pool[[2, 0]])
    for a, b in zip(got + again, want + want2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert reuse2.n_computed == 3 and reuse2.n_held == 0


def test_image_key_is_content_based():
    from percept_fast.score.runner import image_key

    x = torch.rand(3, 8, 8)
    assert image_key(x) == image_key(x.clone()) == image_key(x.transpose(1, 2).contiguous().transpose(1, 2))
    y = x.clone()
    y[0, 0, 0] += 1e-6
    assert image_key(y) != image_key(x)
    assert image_key(x.double()) != image_key(x)
    assert image_key(x.reshape(3, 4, 16)) != image_key(x)


@needs_metric
def test_non_finite_features_are_reported_once_checked():
    """The runner checks each computed batch of features once (the per-call check of the metric is off in its
    distance calls): a NaN in a backbone map stops the run with a clear error."""
    from percept_fast.score.runner import DistanceModel, MetricSpec

    model = DistanceModel(MetricSpec(name="squeeze", lin_weights="lpips"))
    orig = model.metric.features

    def poisoned(x):
        feats = orig(x)
        feats[2] = feats[2].clone()
        feats[2][0, 0, 0, 0] = float("nan")
        return feats

    model.metric.features = poisoned
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="layer 2 contain NaN"):
        model.triplet(x, x, x)
    model.metric.features = orig
    assert model.metric.check_input is True  # restored after the distance calls
    out = model.triplet(x, x.flip(-1), x)
    assert np.isfinite(out["d0"]).all() and (out["d1"] == 0).all()
