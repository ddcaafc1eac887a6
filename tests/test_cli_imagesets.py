"""``percept-fast dist | dirs | pairs`` end to end on small image folders written by the tests.

The reference is the lpips package itself (``lpips.LPIPS(net='alex', pnet_rand=True)``, shipped linear weights,
a random backbone whose weights are saved to a local file and given to ours with ``--backbone-weights``), applied
one pair at a time to the images as lpips' scripts read them (``im2tensor``: ``x / 127.5 - 1``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from percept_fast.cli import main

lpips = pytest.importorskip("lpips")

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def alex(tmp_path_factory):
    """(lpips model, path of its backbone weights in torchvision layout)."""
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        m = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, version="0.1", verbose=False).eval()
    sd = {}
    for k, v in m.net.state_dict().items():  # lpips' slice<k>.<idx>.* is torchvision's features.<idx>.*
        _, idx, rest = k.split(".", 2)
        sd[f"features.{idx}.{rest}"] = v.clone()
    path = tmp_path_factory.mktemp("weights") / "alex.pth"
    torch.save(sd, path)
    return m, str(path)


def _write(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(arr, mode).save(path)
    return path


def _rgb(rng, size=64) -> np.ndarray:
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _lpips(model, a: np.ndarray, b: np.ndarray) -> float:
    with torch.inference_mode():
        return float(model(lpips.im2tensor(a), lpips.im2tensor(b)).item())


def _run(args: list[str], capsys) -> tuple[int, dict | None, str]:
    rc = main([*args, "--no-progress"])
    cap = capsys.readouterr()
    summary = json.loads(cap.out) if rc == 0 else None
    return rc, summary, cap.err


def test_dist_matches_lpips(tmp_path, alex, capsys):
    model, w = alex
    rng = np.random.default_rng(0)
    a, b = _rgb(rng), _rgb(rng)
    pa, pb = _write(tmp_path / "a.png", a), _write(tmp_path / "b.png", b)
    rc, s, err = _run(["dist", str(pa), str(pb), "--backbone-weights", w], capsys)
    assert rc == 0, err
    assert s["distance"] == pytest.approx(_lpips(model, a, b), abs=TOL)
    assert s["random_init_backbone"] is False and s["lin_weights"] == "lpips" and s["command"] == "dist"
    # a size mismatch is named; --size resizes both
    pc = _write(tmp_path / "c.png", _rgb(rng, 48))
    rc, _, err = _run(["dist", str(pa), str(pc), "--backbone-weights", w], capsys)
    assert rc == 2 and "c.png is 48x48" in err and "--size" in err
    rc, s, err = _run(["dist", str(pa), str(pc), "--backbone-weights", w, "--size", "64"], capsys)
    assert rc == 0, err
    c64 = np.asarray(Image.open(pc).convert("RGB").resize((64, 64), Image.BICUBIC))
    assert s["distance"] == pytest.approx(_lpips(model, a, c64), abs=TOL)
    # without weights: a notice, and the summary says the backbone was random
    rc, s, err = _run(["dist", str(pa), str(pb)], capsys)
    assert rc == 0 and "RANDOMLY INITIALISED" in err and s["random_init_backbone"] is True


def _folder(root: Path, names, rng, size=64) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for n in names:
        out[n] = _rgb(rng, size)
        _write(root / n, out[n])
    return out


def test_dirs_matches_lpips_and_reports_unmatched(tmp_path, alex, capsys):
    model, w = alex
    rng = np.random.default_rng(1)
    names = [f"{i:03d}.png" for i in range(5)]
    d0 = _folder(tmp_path / "d0", names + ["extra0.png"], rng)
    d1 = _folder(tmp_path / "d1", names, rng)
    out = tmp_path / "d.csv"
    args = ["dirs", str(tmp_path / "d0"), str(tmp_path / "d1"), "--out", str(out), "--backbone-weights", w]
    rc, _, err = _run([*args, "--batch-size", "2"], capsys)
    assert rc == 2 and "unmatched" in err and "extra0.png" in err
    assert not out.exists()  # nothing written when it stops
    rc, s, err = _run([*args, "--batch-size", "2", "--workers", "2", "--on-error", "skip"], capsys)
    assert rc == 0, err
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == names
    expect = [_lpips(model, d0[n], d1[n]) for n in names]
    np.testing.assert_allclose([float(r["distance"]) for r in rows], expect, atol=TOL, rtol=0)
    assert s["unmatched"]["only_in_dir0"] == ["extra0.png"] and s["n_pairs"] == 5
    assert s["mean"] == pytest.approx(np.mean(expect), abs=TOL)
    assert s["images_per_s"] > 0


def test_pairs_matrix_matches_lpips(tmp_path, alex, capsys):
    model, w = alex
    rng = np.random.default_rng(2)
    names = [f"im{i}.png" for i in range(6)]
    imgs = _folder(tmp_path / "set", names, rng)
    out = tmp_path / "m.npy"
    rc, s, err = _run(
        ["pairs", str(tmp_path / "set"), "--out", str(out), "--backbone-weights", w, "--batch-size", "4"]
        + ["--tile", "4", "--workers", "1"],
        capsys,
    )
    assert rc == 0, err
    D = np.load(out)
    assert D.shape == (6, 6) and s["files"] == names
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    expect = np.zeros((6, 6))
    for i in range(6):
        for j in range(i + 1, 6):
            expect[i, j] = expect[j, i] = _lpips(model, imgs[names[i]], imgs[names[j]])
    np.testing.assert_allclose(D, expect, atol=TOL, rtol=0)
    iu = np.triu_indices(6, 1)
    assert s["mean"] == pytest.approx(expect[iu].mean(), abs=TOL)
    assert s["stderr"] == pytest.approx(expect[iu].std() / np.sqrt(15), abs=TOL)
    assert s["n_pairs"] == 15


@pytest.mark.parametrize("distance", ["meanpool", "style"])
def test_pairs_other_distances_match_the_metric(tmp_path, alex, capsys, distance):
    from percept_fast.metric import PerceptualMetric

    _, w = alex
    rng = np.random.default_rng(3)
    names = [f"{i}.png" for i in range(4)]
    imgs = _folder(tmp_path / "s", names, rng, size=48)
    out = tmp_path / "m.npy"
    rc, _, err = _run(
        ["pairs", str(tmp_path / "s"), "--out", str(out), "--backbone-weights", w, "--distance", distance], capsys
    )
    assert rc == 0, err
    metric = PerceptualMetric("alex", distance=distance, backbone_weights=w).eval()
    x = torch.stack([torch.from_numpy(imgs[n]).permute(2, 0, 1).float() / 255 for n in names])
    expect = np.zeros((4, 4))
    with torch.inference_mode():
        for i in range(4):
            for j in range(i + 1, 4):
                expect[i, j] = expect[j, i] = float(metric(x[i : i + 1], x[j : j + 1])[0])
    # the matrix goes through GEMM identities (||a||^2 + ||b||^2 - 2 a.b), the metric through differences
    np.testing.assert_allclose(np.load(out), expect, rtol=1e-3, atol=1e-4 * expect.max())


def test_bad_inputs_stop_or_skip(tmp_path, alex, capsys):
    model, w = alex
    rng = np.random.default_rng(4)
    d = tmp_path / "mixed"
    imgs = _folder(d, ["a.png", "b.png"], rng)
    gray = rng.integers(0, 256, size=(64, 64), dtype=np.uint8)
    _write(d / "c_gray.png", gray, "L")
    rgba = rng.integers(0, 256, size=(64, 64, 4), dtype=np.uint8)
    _write(d / "d_rgba.png", rgba, "RGBA")
    (d / "e_broken.png").write_bytes(b"this is not a png")
    _write(d / "f_small.png", _rgb(rng, 32))
    (d / "notes.txt").write_text("not an image: ignored by extension")
    out = tmp_path / "m.npy"
    base = ["pairs", str(d), "--out", str(out), "--backbone-weights", w, "--batch-size", "3"]
    rc, _, err = _run(base, capsys)
    assert rc == 2 and "e_broken.png" in err and "cannot decode" in err and "--on-error skip" in err
    assert not out.exists()
    rc, s, err = _run([*base, "--on-error", "skip"], capsys)
    assert rc == 0, err
    assert [e["file"].split("/")[-1] for e in s["errors"]] == ["e_broken.png", "f_small.png"]
    assert "32x32" in s["errors"][1]["error"] and "--size" in s["errors"][1]["error"]
    assert "e_broken.png" in err and "f_small.png" in err
    assert s["files"] == ["a.png", "b.png", "c_gray.png", "d_rgba.png"]
    D = np.load(out)
    # grayscale replicated to RGB, alpha dropped: as lpips' loader (OpenCV IMREAD_COLOR)
    as_rgb = {"c_gray.png": np.repeat(gray[:, :, None], 3, axis=2), "d_rgba.png": rgba[:, :, :3]}
    assert D[0, 2] == pytest.approx(_lpips(model, imgs["a.png"], as_rgb["c_gray.png"]), abs=TOL)
    assert D[1, 3] == pytest.approx(_lpips(model, imgs["b.png"], as_rgb["d_rgba.png"]), abs=TOL)
    # with --size every image is resized, so the small one is kept
    rc, s, err = _run([*base, "--on-error", "skip", "--size", "64"], capsys)
    assert rc == 0 and s["n_kept"] == 5, err
    # empty and missing folders
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(["pairs", str(tmp_path / "empty"), "--out", str(out)], capsys)
    assert rc == 2 and "no image files" in err
    rc, _, err = _run(["dirs", str(tmp_path / "nope"), str(d)], capsys)
    assert rc == 2 and "not a directory" in err
    rc, _, err = _run(["pairs", str(d), "--batch-size", "0"], capsys)
    assert rc == 2 and "--batch-size" in err


def _torchrun(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    # torch.distributed.run is torchrun; run through this interpreter (a copied venv's console scripts may not)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "percept_fast.cli",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_equal_one(tmp_path, alex, capsys):
    _, w = alex
    rng = np.random.default_rng(5)
    names = [f"{i:02d}.png" for i in range(7)]
    _folder(tmp_path / "a", names, rng)
    _folder(tmp_path / "b", names, rng)
    (tmp_path / "a" / "zz_bad.png").write_bytes(b"broken")
    common = ["--backbone-weights", w, "--batch-size", "2", "--workers", "0", "--on-error", "skip", "--no-progress"]
    pairs = ["pairs", str(tmp_path / "a"), "--tile", "3", *common]
    dirs = ["dirs", str(tmp_path / "a"), str(tmp_path / "b"), *common]
    rc1, s1, err = _run([*pairs, "--out", str(tmp_path / "one.npy")], capsys)
    assert rc1 == 0, err
    assert main([*dirs, "--out", str(tmp_path / "one.csv")]) == 0
    capsys.readouterr()
    p = _torchrun([*pairs, "--out", str(tmp_path / "two.npy")], 2)
    assert p.returncode == 0, p.stderr[-3000:]
    s2 = json.loads(p.stdout)
    assert s2["world_size"] == 2 and s2["files"] == s1["files"] and len(s2["errors"]) == 1
    np.testing.assert_array_equal(np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"))
    p = _torchrun([*dirs, "--out", str(tmp_path / "two.csv")], 2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
