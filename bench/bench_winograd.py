"""Winograd F(2x2, 3x3) against the direct convolution, per 3x3 layer of VGG-16 and AlexNet (CPU, float32).

Rows: every 3x3 stride-1 layer of the LPIPS trunks at 64 px (batch 16: the prediction's and the target's 8 images,
as a perceptual loss's forward runs them) and 224 px (batch 8), forward (conv + ReLU) and input gradient (the
transposed convolution a loss's backward runs, batch halved: the prediction's only). Columns, all in one process
and timed interleaved (process CPU time, best of ``--rounds``):

- ``eager``: ``F.conv2d`` + ``relu`` (``F.conv_transpose2d`` for the gradient), NCHW, as lpips calls them;
- ``compile``: ``torch.compile`` (inductor) of the same formula (it packs oneDNN weights, channels_last);
- ``direct``: oneDNN with prepacked weights, channels_last, fused ReLU (what ``PackedTrunk`` ran before Winograd);
- ``f2``, ``f3``: :class:`percept_fast.backbones.winograd.Winograd3x3` with output tiles of 2x2 and 3x3; ``PackedTrunk``
  uses the one :func:`~percept_fast.backbones.winograd.tile_size` picks (the ``used`` column; ``-``: the direct
  convolution), and the speed-ups are that one's (or the better one's, in brackets, where it picks none).

Reported: ms, speed-ups over eager / compile / direct, the achieved rate of the direct formula (GFLOP/s: 2 N H W C K 9
flops, the machine's convolution rate) and Winograd's extra memory (its chunk buffers: transformed tiles in and out,
bytes; the output is the same as the direct convolution's). ``--sweep`` times chunk sizes instead.

    .venv/bin/python bench/bench_winograd.py --out docs/results/DATE/winograd
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info  # noqa: E402

from percept_fast._io import atomic_write_text  # noqa: E402
from percept_fast.backbones.winograd import Winograd3x3, input_grad_conv, tile_size  # noqa: E402

# (net, C_in, C_out, H at 64 px): the 3x3 stride-1 convolutions of lpips' trunks (H at 224 px = H * 3.5)
VGG = [(64, 64, 64), (64, 128, 32), (128, 128, 32), (128, 256, 16), (256, 256, 16), (256, 512, 8), (512, 512, 8),
       (512, 512, 4)]  # fmt: skip
ALEX = [(192, 384, 3), (384, 256, 3), (256, 256, 3)]  # 13x13 at 224 px


def cases(sizes):
    for size in sizes:
        scale, batch = size / 64, 16 if size <= 64 else 8
        for net, layers in (("vgg", VGG), ("alex", ALEX)):
            for c_in, c_out, h in layers:
                hh = 13 if net == "alex" and size == 224 else round(h * scale)
                yield {"net": net, "size": size, "batch": batch, "c_in": c_in, "c_out": c_out, "hw": hh}


def best_cpu_ms(fns: dict, rounds: int) -> dict:
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for k, fn in fns.items():  # interleaved: load from other processes hits all alike
            t0 = time.process_time()
            fn()
            best[k] = min(best[k], (time.process_time() - t0) * 1e3)
    return best


def run_case(case: dict, mode: str, rounds: int, compile_: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    n, c_in, c_out, hw = case["batch"], case["c_in"], case["c_out"], case["hw"]
    weight = torch.randn(c_out, c_in, 3, 3, generator=g) * (2.0 / (9 * c_in)) ** 0.5
    bias = torch.randn(c_out, generator=g) * 0.1
    if mode == "fwd":
        x = torch.randn(n, c_in, hw, hw, generator=g).relu()
        w_run, b_run, pad, relu = weight, bias, (1, 1), True
        eager_fn = lambda a: F.conv2d(a, weight, bias, padding=1).relu()  # noqa: E731
    else:  # the input gradient of the layer, for the prediction's half of the batch
        n = max(1, n // 2)
        x = torch.randn(n, c_out, hw, hw, generator=g)
        (w_run, pad), b_run, relu = input_grad_conv(weight, (1, 1)), None, False
        eager_fn = lambda a: F.conv_transpose2d(a, weight, None, 1, 1)  # noqa: E731
    x_cl = x.contiguous(memory_format=torch.channels_last)
    packed = torch.ops.mkldnn._reorder_convolution_weight(w_run, list(pad), [1, 1], [1, 1], 1, list(x.shape))
    direct = lambda: torch.ops.mkldnn._convolution_pointwise(  # noqa: E731
        x_cl, packed, b_run, list(pad), [1, 1], [1, 1], 1, "relu" if relu else "none", [], ""
    )
    winos = {m: Winograd3x3(w_run, pad, x.shape, m=m) for m in (2, 3)}
    fns = {"eager": lambda: eager_fn(x), "direct": direct}
    for m, conv in winos.items():
        fns[f"f{m}"] = lambda conv=conv: conv(x_cl, b_run, relu=relu)
    if compile_:
        compiled = torch.compile(eager_fn)
        fns["compile"] = lambda: compiled(x_cl)
    with torch.no_grad():
        ms = best_cpu_ms(fns, rounds)
        d = direct()
        err = {m: float((conv(x_cl, b_run, relu=relu) - d).abs().max() / d.abs().max()) for m, conv in winos.items()}
    out_c = w_run.shape[0]
    used = tile_size(w_run.shape[1], out_c, (hw, hw))
    m = used if used is not None else min((2, 3), key=lambda k: ms[f"f{k}"])
    wino, t = winos[m], ms[f"f{m}"]
    flops = 2 * n * hw * hw * w_run.shape[0] * w_run.shape[1] * 9
    row = {
        **case,
        "mode": mode,
        "batch": n,
        "ms": ms,
        "used_m": used,
        "m": m,
        "speedup_vs_eager": ms["eager"] / t,
        "speedup_vs_direct": ms["direct"] / t,
        "direct_gflops": flops / ms["direct"] / 1e6,
        "winograd_extra_bytes": wino.chunk_rows
        * wino.tiles[1]
        * wino.positions
        * (w_run.shape[0] + w_run.shape[1])
        * 4,
        "output_bytes": n * out_c * hw * hw * 4,
        "max_rel_diff_vs_direct": err,
    }
    if compile_:
        row["speedup_vs_compile"] = ms["compile"] / t
    return row


def sweep(rounds: int) -> list[dict]:
    rows = []
    for case in cases([64, 224]):
        if case["net"] != "vgg":
            continue
        g = torch.Generator().manual_seed(0)
        x = torch.randn(case["batch"], case["c_in"], case["hw"], case["hw"], generator=g)
        x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(case["c_out"], case["c_in"], 3, 3, generator=g)
        convs = {t: Winograd3x3(weight, (1, 1), x.shape, chunk_tiles=t) for t in (64, 128, 192, 256, 384)}
        fns = {t: (lambda conv=conv, x=x: conv(x)) for t, conv in convs.items()}
        ms = best_cpu_ms(fns, rounds)
        rows.append({**case, "ms_by_chunk_tiles": ms})
        print(case, {k: round(v, 2) for k, v in ms.items()}, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="64,224")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    p.add_argument("--sweep", action="store_true", help="time chunk sizes (chunk_tiles) instead")
    p.add_argument("--out", default="bench_results")
    p.add_argument("--name", default="bench_winograd_cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": args.threads, **machine_info("cpu")}
    if args.sweep:
        rows = sweep(args.rounds)
        atomic_write_text(out / f"{args.name}_sweep.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
        return 0
    rows = []
    lines = [
        "| net | px | mode | N | C_in->C_out | HxW | eager ms | compile ms | direct ms | f2 ms | f3 ms | used | "
        "vs eager | vs compile | vs direct | direct GFLOP/s | extra MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases([int(s) for s in args.sizes.split(",")]):
        for mode in ("fwd", "input_grad"):
            r = run_case(case, mode, args.rounds, not args.no_compile)
            rows.append(r)
            ms = r["ms"]

            def ratio(key, r=r):
                text = f"{r[key]:.2f}x" if key in r else "-"
                return text if r["used_m"] is not None else f"({text})"

            line = (
                f"| {r['net']} | {r['size']} | {mode} | {r['batch']} | {r['c_in']}->{r['c_out']} | {r['hw']}x{r['hw']} | "
                f"{ms['eager']:.2f} | {ms.get('compile', float('nan')):.2f} | {ms['direct']:.2f} | {ms['f2']:.2f} | "
                f"{ms['f3']:.2f} | {r['used_m'] or '-'} | {ratio('speedup_vs_eager')} | {ratio('speedup_vs_compile')} | "
                f"{ratio('speedup_vs_direct')} | {r['direct_gflops']:.0f} | {r['winograd_extra_bytes'] / 2**20:.1f} |"
            )
            lines.append(line)
            print(line, flush=True)
    atomic_write_text(out / f"{args.name}.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    atomic_write_text(out / f"{args.name}.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
