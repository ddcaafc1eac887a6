"""End-to-end 2AFC scoring throughput: our pipeline vs the lpips package, same weights, same triplets.

Ours: ``PerceptualMetric(backbone, lin_weights='lpips', backend=<fast>)`` evaluated as the score runner does:
one backbone pass over ``cat([ref, p0, p1])`` (reference features computed once per triplet), then
``distance_from_features`` for ``d0`` and ``d1``. A second row ("ours+layers") is the runner's full path,
which also computes the per-layer distances.

lpips: ``lpips.LPIPS(net=..., version='0.1', pnet_rand=True)`` (shipped linear weights; no download) whose
backbone slices are given the *same* random backbone weights as ours, evaluated as
``lpips.score_2afc_dataset`` does: ``d0 = model(ref, p0)``, ``d1 = model(ref, p1)``.

Both get the same preloaded ``[0, 1]`` triplets (``normalize=True`` / ``normalize_input=True``); the
distances are checked to agree before timing. Reports triplets/s, the speed-up and peak extra memory;
writes ``bench/results/bench_e2e_lpips.json`` and a table.

    .venv/bin/python bench/bench_e2e_lpips.py            # alex, squeeze, vgg at 64 px; alex, squeeze at 224
    .venv/bin/python bench/bench_e2e_lpips.py --quick    # alex at 64 px only, few triplets
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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


def _ours(net: str, sd: dict, backend: str):
    from percept_fast.metric import PerceptualMetric

    return PerceptualMetric(backbone=net, lin_weights="lpips", backend=backend, backbone_weights=sd).eval()


def run_case(net: str, size: int, n: int, batch: int, backend: str, repeats: int, seed: int = 0) -> list[dict]:
    from percept_fast.score.runner import DistanceModel, MetricSpec

    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(n, 3, size, size, generator=g)
    p0 = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    p1 = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    lp, sd = _lpips_model(net, seed)
    ours = _ours(net, sd, backend)
    runner = DistanceModel(MetricSpec(name=net, lin_weights="lpips"), backend=backend)
    runner.metric = ours  # same module, the runner's per-layer path

    @torch.inference_mode()
    def run_ours():
        out = []
        for s in range(0, n, batch):
            r, a, b = ref[s : s + batch], p0[s : s + batch], p1[s : s + batch]
            k = r.shape[0]
            f = ours.features(torch.cat([r, a, b]))
            fr, f0, f1 = [x[:k] for x in f], [x[k : 2 * k] for x in f], [x[2 * k :] for x in f]
            out.append(torch.stack([ours.distance_from_features(fr, f0), ours.distance_from_features(fr, f1)], 1))
        return torch.cat(out)

    def run_runner():
        for s in range(0, n, batch):
            runner.triplet(ref[s : s + batch], p0[s : s + batch], p1[s : s + batch])

    @torch.inference_mode()
    def run_lpips():
        out = []
        for s in range(0, n, batch):
            r, a, b = ref[s : s + batch], p0[s : s + batch], p1[s : s + batch]
            d0 = lp(r, a, normalize=True).flatten()
            d1 = lp(r, b, normalize=True).flatten()
            out.append(torch.stack([d0, d1], 1))
        return torch.cat(out)

    a, b = run_ours(), run_lpips()
    max_abs = float((a - b).abs().max())
    rel = max_abs / float(b.abs().max())
    if rel > 1e-3:
        raise RuntimeError(f"{net}@{size}: our distances differ from lpips' (max abs {max_abs:.3g}, rel {rel:.3g})")

    def timed(fn):
        fn()  # warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        ts.sort()
        return ts[len(ts) // 2]

    # interleave the measurements so that load from other processes affects all alike
    t_l, t_o, t_r = [], [], []
    for _ in range(2):
        t_l.append(timed(run_lpips))
        t_o.append(timed(run_ours))
        t_r.append(timed(run_runner))
    tl, to, tr = min(t_l), min(t_o), min(t_r)
    mem_l = peak_memory(run_lpips)["peak_extra_bytes"]
    mem_o = peak_memory(run_ours)["peak_extra_bytes"]
    base = {
        "net": net,
        "size": size,
        "triplets": n,
        "batch": batch,
        "backend": backend,
        "max_abs_diff_vs_lpips": max_abs,
    }
    return [
        {**base, "impl": "lpips", "seconds": tl, "triplets_per_s": n / tl, "speedup": 1.0, "peak_extra_bytes": mem_l},
        {
            **base,
            "impl": "ours",
            "seconds": to,
            "triplets_per_s": n / to,
            "speedup": tl / to,
            "peak_extra_bytes": mem_o,
        },
        {
            **base,
            "impl": "ours+layers",
            "seconds": tr,
            "triplets_per_s": n / tr,
            "speedup": tl / tr,
            "peak_extra_bytes": None,
        },
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="alex at 64 px, 128 triplets, 2 repeats")
    p.add_argument("--nets", default=None, help="comma-separated (default alex,squeeze,vgg)")
    p.add_argument("--sizes", default=None, help="comma-separated image sizes (default 64,224)")
    p.add_argument("--triplets", type=int, default=None, help="triplets per case (default 256 at 64 px, 64 at 224)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--backend", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="results directory (default bench/results)")
    args = p.parse_args(argv)
    nets = (args.nets or ("alex" if args.quick else "alex,squeeze,vgg")).split(",")
    sizes = [int(s) for s in (args.sizes or ("64" if args.quick else "64,224")).split(",")]
    repeats = 2 if args.quick else args.repeats
    rows = []
    for size in sizes:
        for net in nets:
            if size > 128 and net == "vgg" and args.nets is None:
                continue  # VGG16 at 224 px takes minutes per repeat on a 2-core CPU; ask for it explicitly
            n = args.triplets or (128 if args.quick else (256 if size <= 64 else 64))
            print(f"{net} @ {size}px, {n} triplets ...", file=sys.stderr, flush=True)
            rows.extend(run_case(net, size, n, args.batch, args.backend, repeats))
    payload = {"benchmark": "bench_e2e_lpips", "device": "cpu", "machine": machine_info("cpu"), "results": rows}
    path = write_json("bench_e2e_lpips", payload, args.out)
    print_table(
        "2AFC end-to-end throughput, CPU (ours: ref features once per triplet + fast ops; lpips: 2 calls per triplet)",
        ["net", "size", "impl", "triplets/s", "speedup", "peak extra mem", "max |d - d_lpips|"],
        [
            [
                r["net"],
                r["size"],
                r["impl"],
                f"{r['triplets_per_s']:.1f}",
                f"{r['speedup']:.2f}x",
                "-" if r["peak_extra_bytes"] is None else f"{r['peak_extra_bytes'] / 2**20:.1f} MiB",
                f"{r['max_abs_diff_vs_lpips']:.1e}",
            ]
            for r in rows
        ],
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
