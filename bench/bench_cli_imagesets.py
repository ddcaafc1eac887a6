"""Throughput of ``percept-fast dirs`` and ``pairs`` against the lpips package's own scripts, same weights, same files.

lpips' scripts (``lpips_2dirs.py -d0 D0 -d1 D1 -o out.txt``, ``lpips_1dir_allpairs.py -d D -o out.txt
--all-pairs``, run as its README shows, on the CPU: no ``--use_gpu``) are not part of the pip package, so this
bench runs their loop with the package's public functions: ``lpips.LPIPS(net='alex', version='0.1')``, then per
pair ``lpips.im2tensor(lpips.load_image(path))`` for each image (``dirs``: both images of every pair;
``pairs``: the row image once per row, the other for every pair), one ``forward`` per pair, a line written to
the output file. ``lpips.load_image`` decodes PNGs with OpenCV; without ``cv2`` installed an equivalent PIL
decode is used (recorded in the JSON). lpips' backbone is its randomly initialised AlexNet
(``pnet_rand=True``: nothing is downloaded) and ours reads the same weights from a file
(``--backbone-weights``); the distances of the first pairs are checked to agree (1e-5) before timing.

``pairs`` with lpips costs a forward pass per pair (N (N - 1) / 2 of them): it is timed on the first
``--lpips-pairs`` pairs in its order and extrapolated linearly to all pairs (its time per pair does not depend on
N); ours always computes the whole N x N matrix. ``dirs`` is timed in full for both.

Ours: ``percept_fast.cli.main(['dirs' | 'pairs', ...])`` in this process (model built inside, DataLoader
workers decoding, ``--workers``), the same thread count as lpips. Images: random-texture PNGs (smooth noise at
a few scales) written once per case. Each case runs ours, lpips, ours again (the better of ours is kept; lpips'
runs are long) and records the load average. Reported: images/s (``dirs``: 2 N images per run; ``pairs``: N),
seconds, the speed-up and the process's peak RSS so far (a high-water mark over the cases). Writes
``bench/results/bench_cli_imagesets.json`` and prints a table.

    .venv/bin/python bench/bench_cli_imagesets.py                      # N 256,1024 at 64 and 256 px
    .venv/bin/python bench/bench_cli_imagesets.py --n 256 --sizes 64   # one size
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_note, machine_info, print_table, write_json  # noqa: E402


def _textures(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` RGB uint8 images: noise smoothed at a few scales (compresses like photos, unlike white noise)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 3, size, size)
    for s in (4, 16, size // 4):
        base = torch.rand(n, 3, max(2, size // s), max(2, size // s), generator=g)
        out += torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    out = (out - out.amin()) / (out.amax() - out.amin())
    return (out * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _write_folder(d: Path, imgs: np.ndarray) -> list[str]:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    names = [f"{i:05d}.png" for i in range(len(imgs))]
    for name, a in zip(names, imgs):
        Image.fromarray(a).save(d / name)
    return names


def _lpips_model(seed: int, weights_path: Path | None = None):
    import lpips

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        m = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
    if weights_path is not None:
        sd = {}
        for k, v in m.net.state_dict().items():  # lpips' slice<k>.<idx>.* is torchvision's features.<idx>.*
            _, idx, rest = k.split(".", 2)
            sd[f"features.{idx}.{rest}"] = v.clone()
        torch.save(sd, weights_path)
    return m


def _lpips_loader():
    """lpips.load_image (OpenCV) when cv2 is importable, else the same decode with PIL; and its name."""
    import lpips

    try:
        import cv2  # noqa: F401

        return lpips.load_image, "lpips.load_image (OpenCV)"
    except ImportError:
        from PIL import Image

        return (
            lambda p: np.asarray(Image.open(p).convert("RGB"))
        ), "PIL (cv2 not installed; lpips.load_image needs it)"


def _lpips_dirs(model, d0: Path, d1: Path, out: Path, load) -> list[float]:
    import lpips

    dists = []
    with open(out, "w") as f, torch.inference_mode():
        for name in sorted(os.listdir(d0)):
            if (d1 / name).exists():
                a = lpips.im2tensor(load(str(d0 / name)))
                b = lpips.im2tensor(load(str(d1 / name)))
                d = model.forward(a, b)
                f.writelines(f"{name}: {float(d):.6f}\n")
                dists.append(float(d))
    return dists


def _lpips_pairs(model, d: Path, out: Path, load, max_pairs: int) -> tuple[list[float], int]:
    import lpips

    files = sorted(os.listdir(d))
    dists = []
    with open(out, "w") as f, torch.inference_mode():
        for i, name in enumerate(files[:-1]):
            a = lpips.im2tensor(load(str(d / name)))
            for name1 in files[i + 1 :]:
                b = lpips.im2tensor(load(str(d / name1)))
                dist = model.forward(a, b)
                f.writelines(f"({name},{name1}): {float(dist):.6f}\n")
                dists.append(float(dist))
                if len(dists) >= max_pairs:
                    return dists, len(dists)
    return dists, len(dists)


def _ours(args: list[str]) -> tuple[float, dict]:
    import json

    from percept_fast.cli import main

    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        rc = main(args)
    dt = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"percept-fast {' '.join(args)} failed with exit code {rc}")
    return dt, json.loads(buf.getvalue())


def run_case(command: str, n: int, size: int, work: Path, opts) -> dict:
    imgs = _textures(2 * n if command == "dirs" else n, size, seed=n + size)
    d0 = work / f"{command}_{n}_{size}_a"
    names = _write_folder(d0, imgs[:n])
    d1 = None
    if command == "dirs":
        d1 = work / f"{command}_{n}_{size}_b"
        _write_folder(d1, imgs[n:])
    wpath = work / "alex.pth"
    _lpips_model(0, wpath)  # the backbone weights both sides use
    load, loader_name = _lpips_loader()
    common = ["--backbone-weights", str(wpath), "--no-progress", "--batch-size", str(opts.batch_size)]
    common += ["--workers", str(opts.workers)]
    if command == "dirs":
        ours_args = ["dirs", str(d0), str(d1), "--out", str(work / "ours.csv"), *common]
    else:
        ours_args = ["pairs", str(d0), "--out", str(work / "ours.npy"), *common]
    total_pairs = n if command == "dirs" else n * (n - 1) // 2
    load_before = load_note()
    times = []
    t_ours, summary = _ours(ours_args)
    times.append(t_ours)
    # lpips: model construction is part of its script's run
    t0 = time.perf_counter()
    model = _lpips_model(0)
    if command == "dirs":
        ref = _lpips_dirs(model, d0, d1, work / "lpips.txt", load)
        done = len(ref)
    else:
        ref, done = _lpips_pairs(model, d0, work / "lpips.txt", load, opts.lpips_pairs)
    t_lpips_measured = time.perf_counter() - t0
    t_ours2, summary = _ours(ours_args)
    times.append(t_ours2)
    # agreement on the pairs lpips computed
    if command == "dirs":
        import csv

        with open(work / "ours.csv") as f:
            ours_d = [float(r["distance"]) for r in csv.DictReader(f)]
        diff = float(np.max(np.abs(np.asarray(ours_d) - np.asarray(ref))))
    else:
        D = np.load(work / "ours.npy")
        iu = np.triu_indices(n, 1)
        diff = float(np.max(np.abs(D[iu][:done] - np.asarray(ref))))
    if diff > 1e-5:
        raise AssertionError(f"{command} N={n} {size}px: ours and lpips differ by {diff:.2e}")
    t_lpips = t_lpips_measured * total_pairs / done
    images = 2 * n if command == "dirs" else n
    t_best = min(times)
    return {
        "command": command,
        "n": n,
        "size_px": size,
        "images": images,
        "pairs": total_pairs,
        "ours_seconds": t_best,
        "ours_seconds_runs": times,
        "ours_images_per_s": images / t_best,
        "lpips_seconds": t_lpips,
        "lpips_pairs_timed": done,
        "lpips_extrapolated": done < total_pairs,
        "lpips_images_per_s": images / t_lpips,
        "speedup": t_lpips / t_best,
        "max_abs_diff_vs_lpips": diff,
        "lpips_loader": loader_name,
        "load_before": load_before,
        "load_after": load_note(),
        "ours_summary": {k: summary[k] for k in ("world_size", "workers", "batch_size", "device")},
        # the process's high-water mark so far (both sides run in this process; monotone over the cases)
        "peak_rss_mib_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "names": len(names),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", default="256,1024", help="image counts (comma-separated), default 256,1024")
    p.add_argument("--sizes", default="64,256", help="image sizes in px (comma-separated), default 64,256")
    p.add_argument("--commands", default="dirs,pairs", help="dirs,pairs (default both)")
    p.add_argument("--lpips-pairs", type=int, default=400, help="pairs lpips' all-pairs loop is timed on")
    p.add_argument("--batch-size", type=int, default=32, help="ours: --batch-size")
    p.add_argument("--workers", type=int, default=1, help="ours: DataLoader workers (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    p.add_argument("--out", default=None, help="results directory (default bench/results)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, table = [], []
    print(load_note())
    with tempfile.TemporaryDirectory(prefix="bench_imagesets_") as tmp:
        for command in args.commands.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                for n in (int(s) for s in args.n.split(",")):
                    r = run_case(command, n, size, Path(tmp), args)
                    rows.append(r)
                    table.append(
                        [
                            command,
                            str(n),
                            f"{size}px",
                            f"{r['ours_images_per_s']:.1f}",
                            f"{r['lpips_images_per_s']:.2f}" + (" (extrap.)" if r["lpips_extrapolated"] else ""),
                            f"{r['speedup']:.1f}x",
                            f"{r['ours_seconds']:.1f}",
                            f"{r['lpips_seconds']:.1f}",
                            f"{r['max_abs_diff_vs_lpips']:.1e}",
                        ]
                    )
                    print(
                        f"{command} N={n} {size}px: ours {r['ours_images_per_s']:.1f} img/s ({r['ours_seconds']:.1f} s), "
                        f"lpips {r['lpips_images_per_s']:.3g} img/s ({r['lpips_seconds']:.1f} s"
                        f"{', extrapolated' if r['lpips_extrapolated'] else ''}): {r['speedup']:.1f}x ({r['load_after']})",
                        flush=True,
                    )
                    _write(rows, args)  # after every case: a stopped run keeps what it measured
    print_table(
        "percept-fast dirs/pairs vs lpips' scripts (alex, CPU)",
        ["command", "N", "size", "ours img/s", "lpips img/s", "speed-up", "ours s", "lpips s", "max |diff|"],
        table,
    )
    print(f"wrote {_write(rows, args)}")
    return 0


def _write(rows: list[dict], args) -> Path:
    payload = {
        "bench": "bench_cli_imagesets",
        "machine": machine_info("cpu"),
        "torch_threads": torch.get_num_threads(),
        "method": __doc__,
        "results": rows,
    }
    return write_json("bench_cli_imagesets", payload, args.out)


if __name__ == "__main__":
    sys.exit(main())
