"""End-to-end 2AFC scoring throughput: our pipeline vs the lpips package, same weights, same triplets.

Ours: the score runner's model (``percept_fast.score.runner.DistanceModel`` around
``PerceptualMetric(backbone, lin_weights='lpips', backend=<fast>, backbone_weights=<file>)``): one backbone
pass over ``cat([ref, p0, p1])`` (reference features computed once per triplet), then one per-layer
``distance_from_features`` call for each of ``d0`` and ``d1`` (total = sum of the layers), i.e. it also
delivers the per-layer distances. ``ours`` is the runner's default memory layout (NCHW for AlexNet,
channels_last otherwise on CPU); the next row is the same model in the other layout; ``ours-before`` is the
default model with the eager trunk (no frozen copy: for alex and vgg the frozen copy is the oneDNN-prepacked
``PackedTrunk`` since 2026-12-05, a TorchScript copy for squeeze) and the ops' own NaN/Inf scans. The ``path``
column says which layout each ran in and whether the frozen trunk served it.

lpips: ``lpips.LPIPS(net=..., version='0.1', pnet_rand=True)`` (shipped linear weights; no download) whose
backbone slices are given the *same* random backbone weights as ours, evaluated as
``lpips.score_2afc_dataset`` does: ``d0 = model(ref, p0)``, ``d1 = model(ref, p1)`` under inference mode.

Method: one process, so the same torch thread count (``--threads``; recorded) for every row; the same
preloaded ``[0, 1]`` triplets (``normalize=True`` / ``normalize_input=True``); every model's distances are
checked against lpips' (max abs difference <= 1e-5, reported) before timing; one warm-up run each; then the
timed runs are interleaved one at a time in a rotating order (so load from other processes hits all alike).
Reported: best (the least disturbed) and median wall time and process CPU time (all threads; far less noisy
on a shared machine) as triplets/s and speed-ups over lpips, peak extra memory (the process's peak RSS
above the RSS before one run, measured separately after the timing: a lower bound when freed memory is
reused), and the 1-minute load average before and after each case. Writes
``bench/results/bench_e2e_lpips.json`` and prints a table.

    .venv/bin/python bench/bench_e2e_lpips.py --threads 2        # alex, squeeze, vgg at 64 px; alex, squeeze at 224
    .venv/bin/python bench/bench_e2e_lpips.py --threads 2 --nets alex,squeeze,vgg --sizes 224   # vgg at 224 too
    .venv/bin/python bench/bench_e2e_lpips.py --quick            # alex at 64 px only, few triplets
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, peak_memory, print_table, write_json  # noqa: E402


def _lpips_model(net: str, seed: int):
    import lpips

    torch.manual_seed(seed)
    m = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
    # lpips' slices keep torchvision's layer indices: net.sliceK.<idx>.* == torchvision features.<idx>.*
    sd = {}
    for k, v in m.net.state_dict().items():
        _, idx, rest = k.split(".", 2)
        sd[f"features.{idx}.{rest}"] = v.clone()
    return m, sd


def run_case(
    net: str, size: int, n: int, batch: int, backend: str, repeats: int, rounds: int = 2, seed: int = 0
) -> list[dict]:
    from percept_fast.score.runner import DistanceModel, MetricSpec

    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(n, 3, size, size, generator=g)
    p0 = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    p1 = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    lp, sd = _lpips_model(net, seed)
    with tempfile.TemporaryDirectory() as tmp:
        wpath = str(Path(tmp) / f"{net}.pth")
        torch.save(sd, wpath)
        spec = MetricSpec(name=net, lin_weights="lpips", backbone_weights=wpath)
        ours = DistanceModel(spec, backend=backend)  # the score runner's model, its default memory layout
        ours_alt = DistanceModel(spec, backend=backend, channels_last=not ours.channels_last)
        # the same model as it ran before the frozen trunk and the cheap feature NaN/Inf check (same-run baseline)
        ours_before = DistanceModel(spec, backend=backend)
    ours_before.metric.backbone.frozen_inference = False
    ours_before.metric._fast_finite = False
    alt = "ours-nchw" if ours.channels_last else "ours-channels_last"

    def run_ours(model):
        out = []
        for s in range(0, n, batch):
            d = model.triplet(ref[s : s + batch], p0[s : s + batch], p1[s : s + batch])
            out.append(torch.from_numpy(np.stack([d["d0"], d["d1"]], 1)))
        return torch.cat(out)

    @torch.inference_mode()
    def run_lpips():
        out = []
        for s in range(0, n, batch):
            r, a, b = ref[s : s + batch], p0[s : s + batch], p1[s : s + batch]
            d0 = lp(r, a, normalize=True).flatten()
            d1 = lp(r, b, normalize=True).flatten()
            out.append(torch.stack([d0, d1], 1))
        return torch.cat(out).double()

    want = run_lpips()
    models = {"ours": ours, alt: ours_alt, "ours-before": ours_before}
    diffs = {"lpips": 0.0}
    for m in models.values():
        m.metric.backbone.__dict__.pop("_frozen_cache", None)  # so that the check run shows which path serves
    for name, m in models.items():
        got = run_ours(m)
        diffs[name] = float((got - want).abs().max())
        if diffs[name] > 1e-5:  # the parity tolerance of tests/test_lpips_parity.py
            raise RuntimeError(f"{net}@{size} {name}: distances differ from lpips' (max abs {diffs[name]:.3g})")
    paths = {"lpips": "nchw, eager"}
    for name, m in models.items():
        frozen = bool(m.metric.backbone.__dict__.get("_frozen_cache"))  # built by the check run iff it served it
        paths[name] = f"{'channels_last' if m.channels_last else 'nchw'}, {'frozen' if frozen else 'eager'}"

    fns = {
        "lpips": run_lpips,
        "ours": lambda: run_ours(ours),
        alt: lambda: run_ours(ours_alt),
        "ours-before": lambda: run_ours(ours_before),
    }
    names = list(fns)
    load_before = os.getloadavg()[0]
    for fn in fns.values():
        fn()  # warm-up (the frozen copies were already built by the check above)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    # one timed run per impl at a time, rotating the order, so that load from other processes affects all alike.
    # CPU time (process_time, all threads) is reported too: on a shared machine it is far less noisy.
    for r in range(rounds * repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    load_after = os.getloadavg()[0]
    mem = {k: peak_memory(fn)["peak_extra_bytes"] for k, fn in fns.items()}
    best = {k: min(v) for k, v in wall.items()}
    med = {k: statistics.median(v) for k, v in wall.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    base = {
        "net": net,
        "size": size,
        "triplets": n,
        "batch": batch,
        "backend": backend,
        "threads": torch.get_num_threads(),
        "timed_runs": rounds * repeats,
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_after,
    }
    rows = []
    for k in names:
        rows.append(
            {
                **base,
                "impl": k,
                "path": paths[k],
                "seconds": best[k],
                "seconds_median": med[k],
                "triplets_per_s": n / best[k],
                "speedup": best["lpips"] / best[k],
                "speedup_median": med["lpips"] / med[k],
                "cpu_seconds": best_cpu[k],
                "cpu_triplets_per_s": n / best_cpu[k],
                "speedup_cpu_time": best_cpu["lpips"] / best_cpu[k],
                "peak_extra_bytes": mem[k],
                "max_abs_diff_vs_lpips": diffs[k],
            }
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="alex at 64 px, 128 triplets, 2 repeats")
    p.add_argument("--nets", default=None, help="comma-separated (default alex,squeeze,vgg)")
    p.add_argument("--sizes", default=None, help="comma-separated image sizes (default 64,224)")
    p.add_argument(
        "--triplets",
        type=int,
        default=None,
        help="triplets per case (default 128 at 64 px, 32 at 224; a quarter for vgg)",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--backend", default="auto")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per round (default 3, vgg 1)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of interleaved timed runs (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for every row (default: torch's)")
    p.add_argument("--out", default=None, help="results directory (default bench/results)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    nets = (args.nets or ("alex" if args.quick else "alex,squeeze,vgg")).split(",")
    sizes = [int(s) for s in (args.sizes or ("64" if args.quick else "64,224")).split(",")]
    repeats = 2 if args.quick else 3
    rows = []
    for size in sizes:
        for net in nets:
            if size > 128 and net == "vgg" and args.nets is None:
                continue  # VGG16 at 224 px takes minutes per repeat on a 2-core CPU; ask for it explicitly
            n = args.triplets or (128 if size <= 64 else 32) // (4 if net == "vgg" else 1)
            print(f"{net} @ {size}px, {n} triplets ...", file=sys.stderr, flush=True)
            reps = 1 if net == "vgg" and args.repeats is None else (args.repeats or repeats)
            case = run_case(net, size, n, args.batch, args.backend, reps, args.rounds)
            rows.extend(case)
            r = next(r for r in case if r["impl"] == "ours")
            print(
                f"  ours ({r['path']}) {r['triplets_per_s']:.1f} triplets/s, {r['speedup']:.2f}x lpips "
                f"(median {r['speedup_median']:.2f}x; CPU time: {r['cpu_triplets_per_s']:.1f} triplets/s, "
                f"{r['speedup_cpu_time']:.2f}x; load {r['load_average_1min_before']:.2f})",
                file=sys.stderr,
                flush=True,
            )
    payload = {
        "benchmark": "bench_e2e_lpips",
        "device": "cpu",
        "machine": machine_info("cpu"),
        "command": " ".join(["bench/bench_e2e_lpips.py", *(sys.argv[1:] if argv is None else argv)]),
        "threads": torch.get_num_threads(),
        "timing": "best and median of interleaved timed runs after one warm-up each (wall and process CPU time)",
        "peak_memory": "peak RSS above the RSS before one run (VmHWM after clear_refs; a lower bound)",
        "load_average_1min": os.getloadavg()[0],
        "results": rows,
    }
    path = write_json("bench_e2e_lpips", payload, args.out)
    print_table(
        f"2AFC end-to-end throughput, CPU, {torch.get_num_threads()} threads (ours: ref features once per triplet "
        "+ fast ops; lpips: 2 calls per triplet); best of interleaved runs, median in brackets",
        [
            "net",
            "size",
            "impl",
            "path",
            "triplets/s",
            "speedup",
            "CPU-time triplets/s",
            "speedup (CPU time)",
            "peak extra mem",
            "max |d - d_lpips|",
            "load",
        ],
        [
            [
                r["net"],
                r["size"],
                r["impl"],
                r["path"],
                f"{r['triplets_per_s']:.1f}",
                f"{r['speedup']:.2f}x ({r['speedup_median']:.2f}x)",
                f"{r['cpu_triplets_per_s']:.1f}",
                f"{r['speedup_cpu_time']:.2f}x",
                "-" if r["peak_extra_bytes"] is None else f"{r['peak_extra_bytes'] / 2**20:.1f} MiB",
                f"{r['max_abs_diff_vs_lpips']:.1e}",
                f"{r['load_average_1min_before']:.2f}",
            ]
            for r in rows
        ],
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
