"""Shared benchmark utilities for the percept_fast ops (timing, peak memory, copy bandwidth, JSON + table).

- :func:`time_fn`: median (and min) wall time over repeats after warm-up; synchronises CUDA.
- :func:`peak_memory`: extra peak memory of one call above what was resident before it.
  CUDA: ``torch.cuda.max_memory_allocated`` delta. CPU: the process's peak RSS (``VmHWM``) delta, after
  resetting the high-water mark through ``/proc/self/clear_refs`` (Linux >= 4.0); falls back to a
  ``resource.getrusage`` ru_maxrss delta (which can under-report when an earlier step peaked higher).
- :func:`copy_bandwidth`: the machine's copy bandwidth (bytes read + written per second of a large
  tensor copy), the floor against which the kernels' effective bandwidth is reported.
- :func:`read_floor_call`: reads a case's inputs once (on the CPU one ``torch.dot`` of an fp32/fp64 pair, both read
  together; else ``x.sum()`` of every input); timed in the same rounds as the kernels, it is the floor of an op that
  reads each input once.
- :func:`compiled`: ``torch.compile`` (inductor) of a callable, the competitor next to eager PyTorch.
- :func:`write_json`: ``bench/results/<name>.json`` written atomically; :func:`print_table`: rich table.
- :func:`bench_backends`: every backend of one case against the reference (best of ``rounds``);
  :func:`run_layer_op_bench`: a whole per-element op benchmark over the backbone layer shapes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], Any],
    *,
    device: torch.device | str = "cpu",
    repeats: int = 10,
    warmup: int = 2,
    min_time_s: float = 0.0,
) -> dict[str, float]:
    """Median/min/mean seconds of ``fn()`` over ``repeats`` runs (at least ``min_time_s`` total) after ``warmup``."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start_all) < min_time_s:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * max(1, repeats):
            break
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "mean_s": statistics.fmean(times),
        "repeats": len(times),
    }


def _read_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], Any], *, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Extra peak memory (bytes) of one ``fn()`` call above the memory resident just before it."""
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del out
        return {"peak_extra_bytes": int(peak - base), "method": "torch.cuda.max_memory_allocated"}
    rss = _read_status_kib("VmRSS")
    if rss is not None and _reset_peak_rss():
        out = fn()
        hwm = _read_status_kib("VmHWM") or rss
        del out
        return {"peak_extra_bytes": int(max(0, hwm - rss) * 1024), "method": "VmHWM delta (clear_refs)"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del out
    return {"peak_extra_bytes": int(max(0, after - before) * 1024), "method": "ru_maxrss delta (lower bound)"}


def copy_bandwidth(
    *, device: torch.device | str = "cpu", nbytes: int = 512 * 2**20, repeats: int = 5
) -> dict[str, float]:
    """Copy bandwidth in bytes/s (bytes read + bytes written) of ``dst.copy_(src)`` for ``nbytes`` buffers."""
    device = torch.device(device)
    n = nbytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device=device, repeats=repeats, warmup=1)
    return {"bytes_per_s": 2.0 * n * 4 / t["median_s"], "buffer_bytes": float(n * 4), "median_s": t["median_s"]}


def compiled(fn: Callable[..., Any], **kwargs) -> Callable[..., Any]:
    """``torch.compile(fn, fullgraph=True, **kwargs)`` after a dynamo reset (each case compiles its own graph)."""
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, **kwargs)


def load_note() -> str:
    """``uptime``'s load averages and the CPU count, for the JSON of a run on a possibly shared machine."""
    try:
        la = os.getloadavg()
    except OSError:  # pragma: no cover
        return "load average unavailable"
    return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} CPUs"


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    device = torch.device(device)
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load": load_note(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_json(name: str, payload: dict[str, Any], results_dir: Path | str | None = None) -> Path:
    """Writes ``<results_dir>/<name>.json`` atomically (percept_fast._io: temp file, fsync, os.replace)."""
    from percept_fast._io import atomic_write_text

    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    text = json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n"
    return atomic_write_text(out_dir / f"{name}.json", text)


def fmt_ratio(ratio: float | None) -> str:
    """``1.23x``, or ``-`` where there is no ratio (e.g. no torch.compile column)."""
    return "-" if ratio is None else f"{ratio:.2f}x"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Prints a rich table (plain text when rich is missing)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print(title)
        print(" | ".join(columns))
        for r in rows:
            print(" | ".join(str(c) for c in r))
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c not in ("layer", "shape", "backend", "dtype") else "left")
    for r in rows:
        table.add_row(*[str(c) for c in r])
    Console(width=max(160, Console().width)).print(table)


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small shapes and few repeats (smoke run)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device to benchmark on")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case (median reported)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "all"])
    p.add_argument("--out", default=None, help="results directory (default bench/results)")
    return p


def bench_backends(
    call: Callable[[str], Any],
    backends: Sequence[str],
    *,
    bytes_moved: float,
    copy_bw: float,
    device: torch.device | str = "cpu",
    repeats: int = 5,
    warmup: int = 1,
    reference: str = "torch",
    measure_memory: bool = True,
    rounds: int = 1,
    floor: Callable[[], Any] | None = None,
) -> list[dict[str, Any]]:
    """Times ``call(backend)`` for every backend; adds the ratio against ``reference`` and against ``'compile'``
    (when it is one of the backends; same run), the effective bandwidth (``bytes_moved`` / time), its fraction of
    the copy bandwidth ``copy_bw``, the time against the bandwidth floor (``bytes_moved / copy_bw``), the time
    against the read floor (``floor()``, timed in the same rounds: ``time_over_read_floor``) and the extra peak
    memory of one call.

    With ``rounds`` > 1 every backend (and the floor) is timed in each of ``rounds`` rounds over all backends and
    its best round is kept: bursts of load from other processes on a shared machine then hit every backend alike
    instead of whichever happened to run during a burst. Peak memory is measured once, in the first round."""
    if rounds < 1:
        raise ValueError(f"rounds: expected a positive int, got {rounds!r}")
    best: dict[str, dict[str, Any]] = {}
    memory: dict[str, dict[str, Any]] = {}
    names = list(backends) + (["read_floor"] if floor is not None else [])
    for rnd in range(rounds):
        for be in names:
            fn = floor if be == "read_floor" else (lambda be=be: call(be))
            t = time_fn(fn, device=device, repeats=repeats, warmup=warmup)
            if be not in best or t["median_s"] < best[be]["median_s"]:
                best[be] = t
            if measure_memory and rnd == 0 and be != "read_floor":
                memory[be] = peak_memory(fn, device=device)
    floor_s = bytes_moved / copy_bw if copy_bw > 0 else float("nan")
    read_s = best["read_floor"]["median_s"] if floor is not None else float("nan")
    rows: list[dict[str, Any]] = []
    for be in backends:
        t = best[be]
        row: dict[str, Any] = {"backend": be, **t}
        row["effective_bytes_per_s"] = bytes_moved / t["median_s"]
        row["fraction_of_copy_bw"] = row["effective_bytes_per_s"] / copy_bw if copy_bw > 0 else float("nan")
        row["time_over_bw_floor"] = t["median_s"] / floor_s
        row["read_floor_s"] = read_s
        row["time_over_read_floor"] = t["median_s"] / read_s
        row.update(memory.get(be, {}))
        if rounds > 1:
            row["rounds"] = rounds
        rows.append(row)
    ref = next((r for r in rows if r["backend"] == reference), None)
    comp = next((r for r in rows if r["backend"] == "compile"), None)
    for r in rows:
        r["speedup_vs_ref"] = ref["median_s"] / r["median_s"] if ref else float("nan")
        r["speedup_vs_compile"] = comp["median_s"] / r["median_s"] if comp else None  # --no-compile
    return rows


# Feature-map shapes (C, H, W) of the backbone layers the per-element ops are benchmarked on, per input size.
LAYER_SHAPES = {
    224: {
        "alex.conv1": (64, 55, 55),
        "alex.conv2": (192, 27, 27),
        "alex.conv3": (384, 13, 13),
        "alex.conv5": (256, 13, 13),
        "vgg.conv1_2": (64, 224, 224),
        "vgg.conv2_2": (128, 112, 112),
        "vgg.conv3_3": (256, 56, 56),
        "vgg.conv4_3": (512, 28, 28),
        "vgg.conv5_3": (512, 14, 14),
        "resnet50.layer1": (256, 56, 56),
        "resnet50.layer2": (512, 28, 28),
        "resnet50.layer3": (1024, 14, 14),
        "resnet50.layer4": (2048, 7, 7),
    },
    64: {
        "alex.conv1": (64, 15, 15),
        "alex.conv2": (192, 7, 7),
        "alex.conv3": (384, 3, 3),
        "vgg.conv1_2": (64, 64, 64),
        "vgg.conv3_3": (256, 16, 16),
        "vgg.conv5_3": (512, 4, 4),
        "resnet50.layer1": (256, 16, 16),
        "resnet50.layer4": (2048, 2, 2),
    },
}
QUICK_LAYERS = {64: ["alex.conv1", "vgg.conv3_3", "resnet50.layer4"], 224: ["alex.conv3", "resnet50.layer4"]}


def run_layer_op_bench(
    op_name: str,
    forward_key: str,
    make_call: Callable[[torch.Tensor, torch.Tensor], Callable[[str], Any]],
    description: str,
    argv=None,
    default_rounds: int = 3,
    make_grad_call: Callable[[torch.Tensor, torch.Tensor], Callable[[str], Any]] | None = None,
) -> int:
    """The benchmark of a two-input per-element op (lpips_distance, meanpool_distance) over LAYER_SHAPES: every
    backend that has ``forward_key``, the eager torch reference (``'torch'``) and ``torch.compile`` of it
    (``'compile'``, inductor), next to the read floor of the same inputs. ``make_call(fx, fy)`` returns
    ``call(backend)`` (``backend='compile'``: the compiled reference). Writes
    ``bench_op_<op_name>[_grad][_quick]_<device>.json`` and prints a table.

    ``make_grad_call`` (optional) adds ``--grad``: ``call(backend)`` then runs the forward and returns the gradient
    w.r.t. ``fx`` (the op as a loss against a fixed ``fy``), which reads both inputs twice and writes one gradient;
    the read floor stays one read of each input."""
    import sys

    from percept_fast.ops import available_backends

    p = base_parser(description)
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64; 8 with --quick)")
    p.add_argument("--channels-last", action="store_true", help="channels_last inputs instead of NCHW")
    p.add_argument("--max-input-mib", type=float, default=None, help="skip cases whose inputs exceed this")
    p.add_argument(
        "--rounds", type=int, default=default_rounds, help="timing rounds over all backends; the best is kept"
    )
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile column")
    if make_grad_call is not None:
        p.add_argument(
            "--grad", action="store_true", help="time forward + the gradient w.r.t. the first input (a loss)"
        )
    p.add_argument(
        "--layers",
        default=None,
        help="only these cases, comma-separated layer@res (e.g. alex.conv3@64,vgg.conv1_2@64) or a resolution (64)",
    )
    args = p.parse_args(argv)
    grad = bool(getattr(args, "grad", False))
    only = set(args.layers.split(",")) if args.layers else None
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    batch = args.batch or (8 if args.quick else 64)
    repeats = args.repeats or (3 if args.quick else (5 if device.type == "cpu" else 20))
    max_mib = args.max_input_mib or (512.0 if device.type == "cpu" else 16384.0)
    dtypes = ["float32", "float16", "bfloat16"] if args.dtype == "all" else [args.dtype]
    fused = [b for b in available_backends(device, forward_key) if b != "torch"]
    backends = fused + ["torch"] + ([] if args.no_compile else ["compile"])
    copy = copy_bandwidth(device=device, nbytes=(128 if args.quick else 512) * 2**20)
    print(f"copy bandwidth on {device}: {copy['bytes_per_s'] / 1e9:.2f} GB/s (read + write); backends {backends}")
    print(load_note())

    results, table, skipped = [], [], []
    for res in (64, 224):
        for layer, (C, H, W) in LAYER_SHAPES[res].items():
            if args.quick and layer not in QUICK_LAYERS[res]:
                continue
            if only is not None and f"{layer}@{res}" not in only and str(res) not in only:
                continue
            for dt_name in dtypes:
                dtype = getattr(torch, dt_name)
                shape = (batch, C, H, W)
                elt = torch.tensor([], dtype=dtype).element_size()
                nbytes = 2 * batch * C * H * W * elt
                if nbytes / 2**20 > max_mib:
                    skipped.append(f"{layer}@{res} {dt_name} ({nbytes / 2**20:.0f} MiB)")
                    continue
                g = torch.Generator(device=device).manual_seed(0)
                fx = torch.randn(shape, generator=g, device=device).to(dtype)
                fy = torch.randn(shape, generator=g, device=device).to(dtype)
                if args.channels_last:
                    fx = fx.contiguous(memory_format=torch.channels_last)
                    fy = fy.contiguous(memory_format=torch.channels_last)
                call = (make_grad_call if grad else make_call)(fx, fy)

                # correctness guard: every backend agrees with the reference on this input (and compiles first)
                ref = call("torch")
                for be in backends:
                    if be != "torch":
                        torch.testing.assert_close(call(be), ref, rtol=1e-4, atol=1e-4)
                rows = bench_backends(
                    call,
                    backends,
                    bytes_moved=nbytes,
                    copy_bw=copy["bytes_per_s"],
                    device=device,
                    repeats=repeats,
                    rounds=args.rounds,
                    floor=lambda fx=fx, fy=fy: read_floor_call(fx, fy),
                )
                for r in rows:
                    r.update(layer=layer, input_res=res, shape=list(shape), dtype=dt_name, bytes_moved=nbytes)
                    results.append(r)
                    table.append(
                        [
                            f"{layer}@{res}",
                            "x".join(map(str, shape)),
                            dt_name,
                            r["backend"],
                            f"{r['median_s'] * 1e3:.3f}",
                            f"{r['speedup_vs_ref']:.2f}x",
                            fmt_ratio(r["speedup_vs_compile"]),
                            f"{r['read_floor_s'] * 1e3:.3f}",
                            f"{r['time_over_read_floor']:.2f}",
                            f"{r['effective_bytes_per_s'] / 1e9:.2f}",
                            f"{100 * r['fraction_of_copy_bw']:.0f}%",
                            fmt_bytes(r.get("peak_extra_bytes", 0)),
                        ]
                    )
                del fx, fy, ref, call
    print_table(
        f"{op_name}{' forward + grad(fx)' if grad else ''} on {device} "
        f"({'channels_last' if args.channels_last else 'NCHW'}, batch {batch})",
        [
            "layer",
            "shape",
            "dtype",
            "backend",
            "ms",
            "vs eager",
            "vs compile",
            "read floor ms",
            "t/read floor",
            "GB/s",
            "of copy BW",
            "peak extra",
        ],
        table,
    )
    if skipped:
        print("skipped (inputs over --max-input-mib):", ", ".join(skipped))
    payload = {
        "op": op_name,
        "device": str(device),
        "machine": machine_info(device),
        "copy_bandwidth": copy,
        "batch": batch,
        "channels_last": args.channels_last,
        "check_finite": False,
        "quick": args.quick,
        "rounds": args.rounds,
        "mode": "forward + gradient w.r.t. fx (fy fixed)" if grad else "forward",
        "columns": {
            "torch": "eager plain-PyTorch reference (backend='torch')",
            "compile": "torch.compile(fullgraph=True) of the same call with backend='torch' (inductor)",
            "read_floor_s": "time of one sum over each input, same rounds (reads every input once)",
            "speedup_vs_ref": "eager time / this time",
            "speedup_vs_compile": "compiled time / this time",
        },
        "skipped": skipped,
        "results": results,
    }
    suffix = (
        ("_grad" if grad else "") + ("_quick" if args.quick else "") + ("_cuda" if device.type == "cuda" else "_cpu")
    )
    path = write_json(f"bench_op_{op_name}{suffix}", payload, args.out)
    print(f"wrote {path}")
    return 0


def _memory_order_view(t: torch.Tensor) -> torch.Tensor | None:
    """t's elements as a 1-D view in memory order (contiguous or channels_last), else None."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)  # (a view: no copy)
    return None


def read_floor_call(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Reads every tensor once: the read floor of an op over these inputs. On the CPU a pair of same-sized fp32/fp64
    tensors is read by one ``torch.dot`` (both inputs streamed together); anything else by a ``sum`` per input (fp32
    accumulation). One sum per input reads one stream at a time, which on a 2-vCPU Xeon took 1.1-1.8x as long as the
    dot over the same bytes (64x256x56x56 fp32 pair: 20.4 vs 13.7 ms), so that fused kernels read "faster than the
    floor"."""
    if len(tensors) == 2 and tensors[0].device.type == "cpu":
        x, y = tensors
        if x.dtype == y.dtype and x.dtype in (torch.float32, torch.float64) and x.numel() == y.numel():
            fx, fy = _memory_order_view(x), _memory_order_view(y)
            if fx is not None and fy is not None:
                return [torch.dot(fx, fy)]
    return [t.sum(dtype=torch.float32) for t in tensors]
