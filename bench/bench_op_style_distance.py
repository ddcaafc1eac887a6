"""style_distance: every backend vs the plain-PyTorch reference on AlexNet / VGG-16 / ResNet-50 layer shapes.

Cases: the layer outputs of AlexNet (relu1..relu5), VGG-16 (the lpips taps relu1_2..relu5_3) and ResNet-50
(layer1..layer4) for 64 x 64 and 224 x 224 inputs, random features (two independent tensors per case).

* ``--device cuda``: batch 64, both resolutions, all layers; backends torch (reference: both Grams with
  cuBLAS, subtract), triton, cuda; ``--dtype`` float32 (default; TF32 off, as torch's default), float16,
  bfloat16 or all.
* ``--device cpu`` (default): every layer at both resolutions with batch 64, halved per case until the two
  fp32 inputs and the reference's three C x C Gram tensors each stay under 256 MiB and the reference's flops
  under 1 GFLOP (every layer shape [C, H, W] is kept, only the batch shrinks, so that a small, shared machine
  gets through all 28 cases with torch.compile in minutes; the batch used is in the table and the JSON).
  Backends cpu (C++), torch (reference, vendor BLAS) and compile; 3 repeats per round.
* ``--quick``: batch 4, 64 x 64, one layer per network, 2 repeats (smoke run).

Reported per case and backend (the fused kernels, ``torch``: the eager reference, ``compile``:
``torch.compile(fullgraph=True)`` of the same reference call, inductor): median time (best of ``--rounds``
interleaved rounds), ratio vs eager and vs compile (> 1: faster), time over the read floor (one ``sum`` over each
input, same rounds), achieved GFLOP/s and the extra peak memory of one call. GFLOP/s counts the same
algorithmic work for every backend, ``2 B min(C^2 P, 2 P^2 C)`` (the cheaper of the fused difference
and the kernel identity, P = H*W), so the column compares backends directly (the reference does
``4 B C^2 P`` flops). Writes ``bench/results/bench_op_style_distance_<device>[_quick].json`` and a table.

    .venv/bin/python bench/bench_op_style_distance.py --quick
    .venv/bin/python bench/bench_op_style_distance.py --device cuda --dtype all
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    base_parser,
    bench_backends,
    compiled,
    copy_bandwidth,
    fmt_bytes,
    fmt_ratio,
    load_note,
    machine_info,
    print_table,
    read_floor_call,
    write_json,
)

from percept_fast.ops import available_backends, style_distance  # noqa: E402
from percept_fast.ops.style_distance import choose_method  # noqa: E402

# (network, layer, channels, spatial size at 64 px input, at 224 px input)
LAYERS = [
    ("alexnet", "relu1", 64, 15, 55),
    ("alexnet", "relu2", 192, 7, 27),
    ("alexnet", "relu3", 384, 3, 13),
    ("alexnet", "relu4", 256, 3, 13),
    ("alexnet", "relu5", 256, 3, 13),
    ("vgg16", "relu1_2", 64, 64, 224),
    ("vgg16", "relu2_2", 128, 32, 112),
    ("vgg16", "relu3_3", 256, 16, 56),
    ("vgg16", "relu4_3", 512, 8, 28),
    ("vgg16", "relu5_3", 512, 4, 14),
    ("resnet50", "layer1", 256, 16, 56),
    ("resnet50", "layer2", 512, 8, 28),
    ("resnet50", "layer3", 1024, 4, 14),
    ("resnet50", "layer4", 2048, 2, 7),
]
QUICK = {("alexnet", "relu2"), ("vgg16", "relu3_3"), ("resnet50", "layer4")}
# CPU run: per case, the two fp32 inputs, the reference's three C x C Gram tensors and its flops stay under these.
CPU_LIMITS = {"input_bytes": 256 * 2**20, "gram_bytes": 256 * 2**20, "reference_flops": 1e9}


def cpu_batch(C: int, side: int) -> int:
    """Batch for the CPU run: 64, halved until the inputs, the reference's Grams and its flops fit CPU_LIMITS."""
    B, P = 64, side * side
    while B > 1 and (
        2 * B * C * P * 4 > CPU_LIMITS["input_bytes"]
        or 3 * B * C * C * 4 > CPU_LIMITS["gram_bytes"]
        or 4 * B * C * C * P > CPU_LIMITS["reference_flops"]
    ):
        B //= 2
    return B


def cases(device: str, quick: bool) -> list[tuple[str, str, int, int, int, int]]:
    """(net, layer, input px, B, C, side) for the run."""
    out = []
    for res in (64, 224):
        if quick and res == 224:
            continue
        for net, layer, C, s64, s224 in LAYERS:
            side = s64 if res == 64 else s224
            if quick:
                if (net, layer) in QUICK:
                    out.append((net, layer, res, 4, C, side))
                continue
            out.append((net, layer, res, 64 if device == "cuda" else cpu_batch(C, side), C, side))
    return out


def main(argv=None) -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="timing rounds over all backends; the best is kept")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile column")
    p.add_argument("--cases", default=None, help="only these cases, comma-separated net/layer@px (vgg16/relu3_3@64)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    only = set(args.cases.split(",")) if args.cases else None
    dtypes = [torch.float32, torch.float16, torch.bfloat16] if args.dtype == "all" else [getattr(torch, args.dtype)]
    fused = [b for b in available_backends(device) if b != "torch" and not (device.type == "cpu" and b == "triton")]
    backends = fused + ["torch"] + ([] if args.no_compile else ["compile"])
    repeats = args.repeats or (2 if args.quick else (5 if device.type == "cuda" else 3))
    copy = copy_bandwidth(device=device, nbytes=(128 if args.quick else 512) * 2**20)
    print(load_note(), f"; backends {backends}")
    rows, records = [], []
    for dtype in dtypes:
        for net, layer, res, B, C, side in cases(device.type, args.quick):
            if only is not None and f"{net}/{layer}@{res}" not in only:
                continue
            P = side * side
            g = torch.Generator(device=device).manual_seed(0)
            x = torch.rand((B, C, side, side), generator=g, device=device).to(dtype)
            y = torch.rand((B, C, side, side), generator=g, device=device).to(dtype)
            flops = 2.0 * B * min(C * C * P, 2 * P * P * C)
            method = choose_method(C, P)
            reference = compiled(lambda a, b: style_distance(a, b, backend="torch", check_finite=False))

            def call(be, x=x, y=y, reference=reference):
                if be == "compile":
                    return reference(x, y)
                return style_distance(x, y, backend=be, check_finite=False)

            ref_val = call("torch")
            rel = {}
            for be in backends:
                val = call(be)
                rel[be] = float(((val - ref_val).abs().max() / ref_val.abs().max().clamp_min(1e-30)).item())
            nbytes = 2 * x.numel() * x.element_size()
            results = bench_backends(
                call,
                backends,
                bytes_moved=nbytes,
                copy_bw=copy["bytes_per_s"],
                device=device,
                repeats=repeats,
                rounds=args.rounds,
                floor=lambda x=x, y=y: read_floor_call(x, y),
            )
            for r in results:
                be = r["backend"]
                r["peak_method"] = r.pop("method", None)  # peak_memory's "method" is not the style method
                rec = dict(
                    net=net,
                    layer=layer,
                    input_px=res,
                    B=B,
                    C=C,
                    H=side,
                    W=side,
                    dtype=str(dtype).replace("torch.", ""),
                    method=method,
                    gflops=flops / r["median_s"] / 1e9,
                    max_rel_diff_vs_reference=rel[be],
                    **r,
                )
                records.append(rec)
                rows.append(
                    [
                        f"{net}/{layer}",
                        f"{B}x{C}x{side}x{side} ({res}px)",
                        rec["dtype"],
                        method,
                        be,
                        f"{r['median_s'] * 1e3:.3f}",
                        f"{r['speedup_vs_ref']:.2f}x",
                        fmt_ratio(r["speedup_vs_compile"]),
                        f"{r['time_over_read_floor']:.1f}",
                        f"{rec['gflops']:.1f}",
                        fmt_bytes(r.get("peak_extra_bytes", 0)),
                        f"{rel[be]:.1e}",
                    ]
                )
            del x, y, reference
    payload = dict(
        bench="bench_op_style_distance",
        device=str(device),
        quick=args.quick,
        rounds=args.rounds,
        flops_definition="2*B*min(C^2*P, 2*P^2*C) per call, same for every backend",
        columns={
            "torch": "eager plain-PyTorch reference (both Grams by bmm, subtract, square, sum)",
            "compile": "torch.compile(fullgraph=True) of the same call with backend='torch' (inductor)",
            "read_floor_s": "time of one sum over each input, same rounds",
        },
        machine=machine_info(device),
        copy_bandwidth=copy,
        results=records,
    )
    name = "bench_op_style_distance" + ("_cpu" if device.type == "cpu" else "_cuda") + ("_quick" if args.quick else "")
    path = write_json(name, payload, args.out)
    print_table(
        f"style_distance on {device} ({path})",
        [
            "layer",
            "shape",
            "dtype",
            "method",
            "backend",
            "ms",
            "vs eager",
            "vs compile",
            "t/read floor",
            "GFLOP/s",
            "peak mem",
            "rel diff",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
