"""``percept-fast dist | dirs | pairs``: the command-line side of :mod:`percept_fast.imagesets.jobs`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("dist", "dirs", "pairs")

EPILOG = """\
Metric: --metric names the backbone (alex, vgg, squeeze, resnet18/34/50/..., vit_b_16, ...; default alex) and
--distance the feature distance (lpips by default: with the lpips package's shipped linear weights for
alex/vgg/squeeze, that is lpips.LPIPS(net=...); style; meanpool). Nothing is downloaded: without
--backbone-weights PATH (a local torchvision-layout state dict) the backbone is randomly initialised (seeded),
a notice says so and the summary records it.

Images: decoded as lpips' loader does (RGB; grayscale replicated, alpha dropped); --size N resizes every image to
N x N (PIL bicubic, as lpips' BAPPS loader); the default 0 keeps the stored size, as lpips' scripts do, so
compared images must have one size. Decoding runs in --workers DataLoader processes.

Bad input (unreadable/non-image files, unmatched names in dirs, a size that differs): --on-error stop (default)
reports the file and writes nothing; skip reports it, leaves it out and goes on (listed under "errors" in the
summary). Outputs are written atomically at the end.

Summary: one JSON object on stdout (and in --summary PATH): the configuration, images/s, the mean (pairs: the
mean over i < j, lpips' diversity, with its standard error), the files (pairs: in matrix order) and the errors.

Sharding: torchrun --nproc_per_node=N -m percept_fast.cli dirs|pairs ... splits whole batches over the processes
(gloo on CPU, nccl on CUDA); the results equal a single-process run with the same thread count.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default="alex", help="backbone (alex | vgg | squeeze | resnet50 | ...), default alex")
    p.add_argument("--distance", default="lpips", choices=("lpips", "style", "meanpool"), help="default lpips")
    p.add_argument(
        "--lin-weights",
        default="auto",
        help="'auto' (lpips' shipped weights for alex/vgg/squeeze with --distance lpips), 'none', or a file path",
    )
    p.add_argument("--backbone-weights", default=None, metavar="PATH", help="local backbone weights (torchvision)")
    p.add_argument("--layers", default=None, help="comma-separated tap names/indices (default: all taps)")
    p.add_argument("--size", type=int, default=0, help="resize every image to SIZE x SIZE (0: keep, the default)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available else cpu)")
    p.add_argument("--backend", default="auto", help="ops backend: auto | torch | cpu | triton | cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of a randomly initialised backbone")
    p.add_argument("--summary", type=Path, default=None, help="also write the JSON summary to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _batched(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=32, help="images per backbone batch (default 32)")
    p.add_argument(
        "--workers", type=int, default=None, help="DataLoader processes decoding images (default: min(4, CPUs - 1))"
    )
    p.add_argument("--on-error", default="stop", choices=("stop", "skip"), help="bad input: stop (default) or skip")


def add_parsers(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    d = sub.add_parser(
        "dist", help="distance between two images", description="Distance between two images.", epilog=EPILOG
    )
    d.formatter_class = fmt
    d.add_argument("image0", type=Path)
    d.add_argument("image1", type=Path)
    _common(d)
    r = sub.add_parser(
        "dirs",
        help="distances between the files of the same name in two folders",
        description="Distances between the images of the same file name in DIR0 and DIR1 (CSV name,distance).",
        epilog=EPILOG,
    )
    r.formatter_class = fmt
    r.add_argument("dir0", type=Path)
    r.add_argument("dir1", type=Path)
    r.add_argument("--out", type=Path, default=None, help="CSV file (name,distance)")
    _common(r)
    _batched(r)
    a = sub.add_parser(
        "pairs",
        help="all-pairs distance matrix of a folder and its mean (diversity)",
        description="N x N distance matrix of the images in DIR (.npy, files in name order) and its mean over i < j.",
        epilog=EPILOG,
    )
    a.formatter_class = fmt
    a.add_argument("dir", type=Path)
    a.add_argument("--out", type=Path, default=None, help=".npy file for the N x N matrix (float32)")
    a.add_argument("--tile", type=int, default=256, help="images per side of a matrix tile (default 256)")
    a.add_argument(
        "--max-feature-mib",
        type=float,
        default=4096.0,
        help="refuse runs whose kept features exceed this (default 4096)",
    )
    _common(a)
    _batched(a)


def _config(args):
    import torch

    from .jobs import JobConfig

    layers = None
    if args.layers:
        layers = tuple(int(x) if x.strip().lstrip("-").isdigit() else x.strip() for x in args.layers.split(","))
    workers = getattr(args, "workers", 0)
    if workers is None:
        workers = max(0, min(4, (os.cpu_count() or 1) - 1))
    return JobConfig(
        metric=args.metric,
        distance=args.distance,
        lin_weights=args.lin_weights,
        backbone_weights=None if args.backbone_weights is None else str(args.backbone_weights),
        layers=layers,
        size=args.size or None,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        batch_size=getattr(args, "batch_size", 32),
        workers=workers,
        backend=args.backend,
        on_error=getattr(args, "on_error", "stop"),
        seed=args.seed,
        tile=getattr(args, "tile", 256),
        max_feature_mib=getattr(args, "max_feature_mib", 4096.0),
        progress=not args.no_progress,
    )


def run(args) -> int:
    """Runs a parsed ``dist | dirs | pairs`` command; prints the JSON summary (rank 0). Returns the exit code."""
    from .. import _io
    from .files import ImageError
    from .jobs import init_distributed, rank_world, run_dirs, run_dist, run_pairs

    rank, world = rank_world()
    prog = f"percept-fast {args.command}"
    try:
        if args.size < 0:
            raise ValueError(f"--size: expected >= 0, got {args.size}")
        if args.command == "dist" and world > 1:
            raise ValueError("dist compares two images: run it without torchrun")
        cfg = _config(args)
        cfg.device = init_distributed(cfg.device)
        if cfg.backbone_weights is None and rank == 0:
            print(
                f"NOTICE: no --backbone-weights: the {cfg.metric} backbone is RANDOMLY INITIALISED (seed {cfg.seed}); "
                "the distances are not those of the pretrained metric (nothing is downloaded).",
                file=sys.stderr,
            )
        if args.command == "dist":
            summary = run_dist(cfg, args.image0, args.image1)
        elif args.command == "dirs":
            summary = run_dirs(cfg, args.dir0, args.dir1, args.out)
        else:
            summary = run_pairs(cfg, args.dir, args.out)
        if rank == 0:
            text = json.dumps(summary, indent=2, default=str)
            if args.summary is not None:
                _io.atomic_write_text(args.summary, text + "\n")
            print(text)
            for e in summary.get("errors", []):
                print(f"{prog}: skipped {e['error']}", file=sys.stderr)
        return 0
    except (ImageError, FileNotFoundError, ValueError, TypeError) as e:
        if rank == 0:
            print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
