"""LPIPS as a training loss, end to end: forward + backward w.r.t. the input images (frozen trunk), ours vs lpips.

Each step is what a super-resolution / VAE / GAN training step asks of the loss::

    pred = x.clone().requires_grad_();  loss = lpips_fn(pred, target).mean();  loss.backward()   # -> pred.grad

Implementations (same trunk weights, same shipped lin weights, every parameter frozen):

- ``lpips``: ``lpips.LPIPS(net=..., version='0.1', pnet_rand=True)`` with the trunk weights copied in, ``normalize=True``
  (``[0, 1]`` images), its parameters set to ``requires_grad=False`` (a frozen loss; lpips ships trainable lin layers).
- ``lpips-compile``: ``torch.compile`` (inductor) of that module.
- ``ours``: ``PerceptualMetric(net, lin_weights='lpips', backbone_weights=<same>)``: the target's pass without autograd
  (frozen trunk on CPU), the prediction's trunk differentiated by ``backbones.frozen_grad`` (alex/vgg: keeps only
  ReLU outputs / masks), the fused lpips forward and backward kernels.
- ``ours-autograd``: the same metric with ``frozen_backbone=False`` (eager trunk, PyTorch autograd; fused lpips ops).
- ``ours-compile``: ``torch.compile`` (inductor) of ``ours``.
- ``convs-only``: not an implementation but a bound: the trunk's convolutions alone (forward over both batches,
  input gradient over the prediction's), per layer the faster of NCHW and channels_last (:func:`convs_only_step`).
  ``lpips / convs-only`` is the largest speed-up over lpips that any implementation built on PyTorch's (oneDNN)
  direct convolutions, as lpips calls them, can reach on this machine. Ours passes it: its 3x3 layers run by
  Winograd (percept_fast/backbones/winograd.py, bench/bench_winograd.py) and AlexNet's strided first-layer input
  gradient another way (packed_trunk._Phases).

``--mode fwd`` times the forward alone (no gradient, ``torch.no_grad``) instead: the evaluation use.

Method: one process for the timings, so every row runs with the same torch thread count (``--threads``,
recorded). On a machine shared with other processes use ``--threads 1``: with more threads than free cores every
parallel region waits for a descheduled thread (measured here at load 5 on 2 cores: a ReLU over 8x64x15x15 took
4.4 ms with 2 threads against 0.03 ms with 1), which measures the load, not the implementation. Before timing, every implementation's input gradient is compared with lpips' (max abs difference
relative to the largest entry; reported; the float64 parity is a test: tests/test_metric_loss.py). One warm-up
step each (compilation included there, not timed), then timed steps interleaved one at a time in a rotating order
(load from other processes hits all alike); best and median wall time and process CPU time (all threads; far
less noisy on a shared machine) are reported, and the 1-minute load average around each case.

Peak memory (CPU): each (case, implementation) runs in a fresh subprocess with ``MALLOC_MMAP_THRESHOLD_=65536``, so
that glibc serves every tensor above 64 KiB by its own mmap and returns it at free: the resident set then follows
the live tensors (including oneDNN's scratchpads and autograd's saved tensors, which a tracemalloc or a
``torch.profiler`` memory trace would miss or mis-attribute), and the peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs`` after one warm-up step) above the RSS before the step is the step's peak extra memory.
With the default dynamic threshold freed blocks stay resident and a warm step shows ~0 (measured). CUDA:
``torch.cuda.max_memory_allocated`` above the allocated memory before the step, in process.

    .venv/bin/python bench/bench_e2e_lpips_loss.py                          # alex, vgg at 64 px (batch 8), 224 px (4)
    .venv/bin/python bench/bench_e2e_lpips_loss.py --quick                  # alex at 64 px, few steps
    .venv/bin/python bench/bench_e2e_lpips_loss.py --device cuda --batch224 64 --sizes 224 --dtype float32,bfloat16
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_bytes, fmt_ratio, machine_info, print_table, write_json  # noqa: E402

IMPLS = ("lpips", "lpips-compile", "ours", "ours-autograd", "ours-compile", "convs-only")
SEED = 0


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def build(net: str, impl: str, device: str, dtype: torch.dtype):
    """The loss function ``f(pred, target) -> [B]`` of ``impl``; every implementation gets the same weights."""
    import lpips

    from percept_fast.metric import PerceptualMetric

    torch.manual_seed(SEED)
    lp = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
    for p in lp.parameters():
        p.requires_grad_(False)
    sd = {}
    for k, v in lp.net.state_dict().items():  # lpips' slices keep torchvision's layer indices
        _, idx, rest = k.split(".", 2)
        sd[f"features.{idx}.{rest}"] = v.clone()
    if impl.startswith("lpips"):
        model = lp.to(device=device, dtype=dtype)
        fn = model if impl == "lpips" else torch.compile(model)
        return lambda a, b: fn(a, b, normalize=True).reshape(a.shape[0])
    m = PerceptualMetric(net, lin_weights="lpips", backbone_weights=sd, frozen_backbone=impl != "ours-autograd").to(
        device=device, dtype=dtype
    )
    return torch.compile(m) if impl == "ours-compile" else m


def convs_only_step(net: str, x: torch.Tensor, t: torch.Tensor, mode: str, device: str, dtype: torch.dtype):
    """The trunk's convolutions alone, as any implementation built on PyTorch's convolutions must run them: the
    forward of every conv layer up to the last tap over both batches (``2B``) and, in ``fwdbwd`` mode, its input
    gradient for the prediction's batch (``convolution_backward``, input only), on inputs prepared once; per layer
    the faster of NCHW and channels_last (timed once beforehand). Nothing else (scaling, ReLU, pooling, the
    distance, Python) is run: the step an implementation would take if all of that were free, so that
    ``lpips / convs-only`` bounds the speed-up over lpips of any implementation using these convolutions."""
    import torch.nn.functional as F
    from torch import nn

    m = build(net, "ours-autograd", device, dtype)
    bb = m.backbone
    layers = list(bb.features)[: bb.tap_ends[-1] + 1]
    b = x.shape[0]
    calls = []
    with torch.no_grad():
        h = bb.scale_input(torch.cat([x, t]), unit_input=True)
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                out = layer(h)
                calls.append((layer, h, torch.randn_like(out[:b])))
            h = layer(h)

    def conv_pair(layer, inp, grad, fmt):
        w = layer.weight.detach().contiguous(memory_format=fmt)
        inp, grad = inp.contiguous(memory_format=fmt), grad.contiguous(memory_format=fmt)
        args = (layer.stride, layer.padding, layer.dilation, False, [0, 0], layer.groups, [True, False, False])

        def run():
            F.conv2d(inp, w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
            if mode == "fwdbwd":
                torch.ops.aten.convolution_backward(grad, inp[:b], w, None, *args)

        return run

    runs = []
    for layer, inp, grad in calls:
        best = None
        for fmt in (torch.contiguous_format, torch.channels_last):
            run = conv_pair(layer, inp, grad, fmt)
            run()
            sync(device)
            t0 = time.perf_counter()
            run()
            sync(device)
            dt = time.perf_counter() - t0
            if best is None or dt < best[0]:
                best = (dt, run)
        runs.append(best[1])

    def step():
        for run in runs:
            run()

    return step


def make_inputs(size: int, batch: int, device: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.rand(batch, 3, size, size, generator=g)
    t = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype)


def make_step(fn, x, t, mode: str):
    if mode == "fwd":

        def step():
            with torch.no_grad():
                return fn(x, t)

        return step

    def step():
        pred = x.clone().requires_grad_()
        fn(pred, t).mean().backward()
        return pred.grad

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def memory_child(spec: dict) -> dict:
    """Runs in a fresh process (see the module docstring): peak extra memory of one step after one warm-up."""
    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    fn = build(spec["net"], spec["impl"], spec["device"], dtype)
    x, t = make_inputs(spec["size"], spec["batch"], spec["device"], dtype)
    step = make_step(fn, x, t, spec["mode"])
    step()
    step()
    gc.collect()
    if spec["device"] == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return {"peak_extra_bytes": int(peak), "method": "torch.cuda.max_memory_allocated"}
    base = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    out = step()
    peak = _status_bytes("VmHWM") - base
    del out
    return {"peak_extra_bytes": int(peak), "method": "VmHWM delta, fresh process, MALLOC_MMAP_THRESHOLD_=65536"}


def measure_memory(spec: dict, timeout_s: float) -> dict:
    if spec["device"] == "cuda":
        return memory_child(spec)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(spec)]
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"peak_extra_bytes": None, "error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"peak_extra_bytes": None, "error": (res.stderr or res.stdout)[-400:]}
    return json.loads(lines[-1])


def run_case(net, size, batch, impls, args, dtype_name) -> list[dict]:
    device, mode = args.device, args.mode
    dtype = getattr(torch, dtype_name)
    x, t = make_inputs(size, batch, device, dtype)
    fns, errors = {}, {}
    for impl in impls:
        if impl == "convs-only":
            continue
        try:
            fns[impl] = build(net, impl, device, dtype)
        except Exception as e:  # a missing optional piece (e.g. compile): reported, the others still run
            errors[impl] = f"{type(e).__name__}: {e}"[:300]
    steps = {k: make_step(f, x, t, mode) for k, f in fns.items()}
    if "convs-only" in impls:
        steps["convs-only"] = convs_only_step(net, x, t, mode, device, dtype)
    # parity (and warm-up, compilation included): every input gradient (or distance) against lpips'
    ref = None
    outs = {}
    for k in list(steps):
        try:
            t0 = time.perf_counter()
            res = steps[k]()
            outs[k] = None if res is None else res.float()
            sync(device)
            outs[k + "@first_s"] = time.perf_counter() - t0
        except Exception as e:
            errors[k] = f"{type(e).__name__}: {e}"[:300]
            del steps[k]
    ref = outs.get("lpips")
    parity = {}
    for k in steps:
        if ref is not None and outs[k] is not None:
            parity[k] = float((outs[k] - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    names = list(steps)
    load_before = os.getloadavg()[0]
    wall = {k: [] for k in names}
    cpu = {k: [] for k in names}
    for r in range(args.rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            steps[k]()
            sync(device)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    load_after = os.getloadavg()[0]
    mem = {}
    if not args.no_memory:
        for k in names:
            if k == "convs-only":
                continue  # a timing bound, not an implementation
            spec = dict(
                net=net,
                size=size,
                batch=batch,
                impl=k,
                device=device,
                dtype=dtype_name,
                mode=mode,
                threads=args.threads,
            )
            mem[k] = measure_memory(spec, args.memory_timeout)
    best = {k: min(v) for k, v in wall.items()}
    med = {k: statistics.median(v) for k, v in wall.items()}
    bcpu = {k: min(v) for k, v in cpu.items()}
    base = {
        "net": net,
        "size": size,
        "batch": batch,
        "dtype": dtype_name,
        "mode": mode,
        "device": device,
        "threads": torch.get_num_threads(),
        "timed_steps": args.rounds,
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_after,
    }
    rows = []
    lp_mem = (mem.get("lpips") or {}).get("peak_extra_bytes")
    for k in names:
        pk = (mem.get(k) or {}).get("peak_extra_bytes")
        row = {
            **base,
            "impl": k,
            "seconds": best[k],
            "seconds_median": med[k],
            "cpu_seconds": bcpu[k],
            "first_step_seconds": outs[k + "@first_s"],
            "images_per_s": batch / best[k],
            "peak_extra_bytes": pk,
            "memory_method": (mem.get(k) or {}).get("method") or (mem.get(k) or {}).get("error"),
            "grad_max_rel_diff_vs_lpips" if mode == "fwdbwd" else "dist_max_rel_diff_vs_lpips": parity.get(k),
        }
        if "lpips" in best:
            row["speedup_vs_lpips"] = best["lpips"] / best[k]
            row["speedup_vs_lpips_median"] = med["lpips"] / med[k]
            row["speedup_vs_lpips_cpu_time"] = bcpu["lpips"] / bcpu[k]
            row["memory_ratio_vs_lpips"] = None if pk is None or not lp_mem else pk / lp_mem
        if "lpips-compile" in best:
            row["speedup_vs_lpips_compile"] = best["lpips-compile"] / best[k]
        rows.append(row)
    for k, e in errors.items():
        rows.append({**base, "impl": k, "error": e})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="alex at 64 px only, 3 timed steps each")
    p.add_argument("--nets", default="alex,vgg")
    p.add_argument("--sizes", default="64,224")
    p.add_argument("--batch64", type=int, default=8, help="batch at sizes <= 128 px (default 8)")
    p.add_argument("--batch224", type=int, default=4, help="batch at larger sizes (default 4)")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--mode", default="fwdbwd", choices=["fwdbwd", "fwd"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", help="comma-separated: float32,bfloat16,...")
    p.add_argument("--rounds", type=int, default=None, help="timed steps per implementation (default 8; quick 3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--memory-timeout", type=float, default=600.0)
    p.add_argument("--name", default=None, help="results file name (default bench_e2e_lpips_loss[_<device>][_fwd])")
    p.add_argument("--out", default=None, help="results directory (default bench/results)")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return 0
    torch.set_num_threads(args.threads)
    if args.quick:
        args.nets, args.sizes = "alex", "64"
    args.rounds = args.rounds or (3 if args.quick else 8)
    impls = [i for i in args.impls.split(",") if i]
    bad = sorted(set(impls) - set(IMPLS))
    if bad:
        p.error(f"--impls: unknown {bad}; choose from {IMPLS}")
    rows = []
    for dtype_name in args.dtype.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
            batch = args.batch64 if size <= 128 else args.batch224
            for net in args.nets.split(","):
                print(f"{net} @ {size}px, batch {batch}, {dtype_name}, {args.mode} ...", file=sys.stderr, flush=True)
                case = run_case(net, size, batch, impls, args, dtype_name)
                rows.extend(case)
                for r in case:
                    if "error" in r:
                        print(f"  {r['impl']}: {r['error']}", file=sys.stderr, flush=True)
                    elif r["impl"] != "lpips" and "speedup_vs_lpips" in r:
                        mr = r.get("memory_ratio_vs_lpips")
                        print(
                            f"  {r['impl']}: {r['speedup_vs_lpips']:.2f}x lpips (CPU time "
                            f"{r['speedup_vs_lpips_cpu_time']:.2f}x), memory "
                            f"{'-' if mr is None else f'{mr:.2f}x'} (load {r['load_average_1min_before']:.1f})",
                            file=sys.stderr,
                            flush=True,
                        )
    name = args.name or "bench_e2e_lpips_loss" + ("" if args.device == "cpu" else f"_{args.device}") + (
        "" if args.mode == "fwdbwd" else "_fwd"
    )
    payload = {
        "benchmark": "bench_e2e_lpips_loss",
        "device": args.device,
        "machine": machine_info(args.device),
        "command": " ".join(["bench/bench_e2e_lpips_loss.py", *(sys.argv[1:] if argv is None else argv)]),
        "threads": torch.get_num_threads(),
        "timing": "best and median of interleaved timed steps after one warm-up step each (wall and process CPU time)",
        "peak_memory": "CPU: VmHWM delta of one step in a fresh process with MALLOC_MMAP_THRESHOLD_=65536 (see the "
        "module docstring); CUDA: max_memory_allocated delta",
        "results": rows,
    }
    path = write_json(name, payload, args.out)
    ok = [r for r in rows if "error" not in r]
    print_table(
        f"LPIPS loss {args.mode}, {args.device}, {torch.get_num_threads()} threads; best of interleaved steps "
        "(median); speed-ups over lpips in the same run",
        [
            "net",
            "size",
            "batch",
            "dtype",
            "impl",
            "ms/step",
            "vs lpips",
            "vs lpips (CPU time)",
            "vs lpips-compile",
            "peak extra mem",
            "mem vs lpips",
            "max rel diff",
            "load",
        ],
        [
            [
                r["net"],
                r["size"],
                r["batch"],
                r["dtype"],
                r["impl"],
                f"{1e3 * r['seconds']:.1f} ({1e3 * r['seconds_median']:.1f})",
                f"{fmt_ratio(r.get('speedup_vs_lpips'))} ({fmt_ratio(r.get('speedup_vs_lpips_median'))})",
                fmt_ratio(r.get("speedup_vs_lpips_cpu_time")),
                fmt_ratio(r.get("speedup_vs_lpips_compile")),
                "-" if r["peak_extra_bytes"] is None else fmt_bytes(r["peak_extra_bytes"]),
                "-" if r.get("memory_ratio_vs_lpips") is None else f"{r['memory_ratio_vs_lpips']:.2f}x",
                "-"
                if r.get("grad_max_rel_diff_vs_lpips", r.get("dist_max_rel_diff_vs_lpips")) is None
                else f"{r.get('grad_max_rel_diff_vs_lpips', r.get('dist_max_rel_diff_vs_lpips')):.1e}",
                f"{r['load_average_1min_before']:.1f}",
            ]
            for r in ok
        ],
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
