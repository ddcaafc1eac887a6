"""``percept-fast`` command line.

``percept-fast score`` computes the Perceptual Score (2AFC agreement and JND mAP, per subset, per layer,
both subset averages, bootstrap CIs) of deep-feature metrics and the PSNR/SSIM baselines on a BAPPS
directory, or, without ``--data``, on the embedded default set (real photos shipped in matplotlib with
synthetic distortions: a matched-MSE subset and a graded one, synthetic ordinal judgements; see
``percept_fast/data/default_set.py``).

Run it sharded over processes with ``torchrun --nproc_per_node=N -m percept_fast.cli score ...``.

``percept-fast dist A B``, ``dirs DIR0 DIR1 --out d.csv`` and ``pairs DIR --out m.npy``: distances between two
images, between the files of the same name in two folders, and the all-pairs matrix of a folder (its mean: the
diversity); see :mod:`percept_fast.imagesets`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser", "run_score"]

DEFAULT_METRICS = "alex,vgg,squeeze,psnr,ssim"

RANDOM_INIT_NOTICE = (
    "NOTICE: no --backbone-weights given for {names}: these backbones are RANDOMLY INITIALISED (seeded, "
    "seed={seed}), so their scores are not those of the pretrained metrics (nothing is downloaded). "
    "The lpips package's shipped linear-layer weights are used where applicable; PSNR/SSIM baselines are "
    "included for reference. Pass --backbone-weights NAME=PATH (torchvision-layout state dicts) for real scores."
)

SCORE_EPILOG = """\
Backbone weights: nothing is ever downloaded. Without --backbone-weights the deep metrics use seeded,
randomly initialised backbones (a notice is printed and recorded in results.json) together with the lpips
package's shipped linear-layer weights; such scores are meaningless as perceptual scores and are reported
only so that the pipeline runs end to end offline. PSNR and SSIM baselines are included (unless
--no-baselines).

Default data: without --data, an embedded 2AFC/JND set is built once into a cache directory from a real
photograph shipped with matplotlib (grace_hopper.jpg). Subset matched_mse: blur / JPEG / impulse noise
against luminance shift / contrast stretch at matched MSE, the latter preferred (the published ordering of
Wang & Bovik 2009 and the SSIM paper, 2004); subset graded: two strengths of the same distortion, the weaker
preferred (a monotonicity sanity check). Its judgements are SYNTHETIC and ordinal, not human data.

Outputs in --out: results.json, scores.csv, per_layer.csv, 2afc_subsets.png, 2afc_layers.png (and jnd_*.png),
all written atomically. Per-triplet distances are cached (--cache-dir, default <out>/cache) after every batch;
rerunning the same command after a kill continues where it stopped.

Sharding: torchrun --nproc_per_node=N -m percept_fast.cli score ... splits the triplets (whole batches,
round-robin) over the processes (gloo on CPU, nccl on GPU) and gathers them; the result equals a
single-process run.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="percept-fast", description="Fast deep-feature perceptual distances and the Perceptual Score."
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "score",
        help="Perceptual Score (2AFC / JND) on BAPPS or the embedded default set",
        description="Perceptual Score (2AFC / JND mAP) of deep metrics and PSNR/SSIM baselines.",
        epilog=SCORE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--data", type=Path, default=None, help="BAPPS root (2afc/, jnd/); default: the embedded set")
    s.add_argument("--split", default="val", help="2AFC split (val|train), default val")
    s.add_argument("--subsets", default=None, help="comma-separated subsets to score (default: all present)")
    s.add_argument("--no-jnd", action="store_true", help="skip the JND part")
    s.add_argument("--metric", default=DEFAULT_METRICS, help=f"comma-separated metrics (default {DEFAULT_METRICS})")
    s.add_argument("--distance", default="lpips", choices=("lpips", "style", "meanpool"), help="deep-feature distance")
    s.add_argument(
        "--lin-weights",
        default="auto",
        help="'auto' (default, as PerceptualMetric: the lpips package's shipped weights for alex/vgg/squeeze with "
        "--distance lpips, none otherwise), 'lpips' (the same, spelled out), 'none', or a file path",
    )
    s.add_argument(
        "--backbone-weights",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="local backbone weights (torchvision layout); NAME= selects the metric, repeatable",
    )
    s.add_argument("--layers", default=None, help="comma-separated tap names/indices (default: all taps)")
    s.add_argument("--no-baselines", action="store_true", help="do not add psnr,ssim automatically")
    s.add_argument("--out", type=Path, default=Path("runs/score"), help="output directory (default runs/score)")
    s.add_argument("--cache-dir", type=Path, default=None, help="distance cache (default <out>/cache)")
    s.add_argument("--no-cache", action="store_true", help="do not read or write the distance cache")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--workers", type=int, default=0, help="DataLoader worker processes decoding images (default 0)")
    s.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available else cpu)")
    s.add_argument("--backend", default="auto", help="ops backend: auto | torch | cpu | triton | cuda")
    s.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (0 = none)")
    s.add_argument("--seed", type=int, default=0, help="seed for random-init backbones and the bootstrap")
    s.add_argument("--load-size", type=int, default=64, help="resize patches to this size (0 = native), default 64")
    s.add_argument(
        "--default-per-subset",
        type=int,
        default=None,
        help="matched_mse triplets of the embedded set (graded: half of them on the same references, JND: two "
        "pairs per graded triplet); default 120",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    s.add_argument("--quiet", action="store_true", help="no table")
    from .imagesets.cli import add_parsers

    add_parsers(sub)
    return p


def _parse_backbone_weights(items: list[str], names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" in item and not Path(item).exists():
            name, path = item.split("=", 1)
        else:
            deep = [n for n in names if n not in ("psnr", "ssim")]
            if len(deep) != 1:
                raise ValueError(
                    f"--backbone-weights {item!r}: give NAME=PATH when scoring several deep metrics ({deep})"
                )
            name, path = deep[0], item
        if name not in names:
            raise ValueError(f"--backbone-weights: metric {name!r} is not in --metric {names}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--backbone-weights: file not found: {path}")
        out[name] = path
    return out


def _specs(args) -> list:
    from .score.runner import BASELINES, LPIPS_LIN_NETS, MetricSpec

    names = [m.strip() for m in args.metric.split(",") if m.strip()]
    if not names:
        raise ValueError("--metric: expected at least one metric")
    if len(set(names)) != len(names):
        raise ValueError(f"--metric: duplicate names in {names}")
    if not args.no_baselines:
        names += [b for b in BASELINES if b not in names]
    bw = _parse_backbone_weights(args.backbone_weights, names)
    layers = None
    if args.layers:
        layers = tuple(int(x) if x.strip().lstrip("-").isdigit() else x.strip() for x in args.layers.split(","))
    lin = None if args.lin_weights in (None, "none", "") else args.lin_weights
    if lin == "auto":
        lin = "lpips"  # per metric below: lpips' weights where it ships them (alex/vgg/squeeze), else none
    if lin not in (None, "lpips") and not Path(lin).is_file():
        raise FileNotFoundError(f"--lin-weights: file not found: {lin}")
    specs = []
    for n in names:
        if n in BASELINES:
            specs.append(MetricSpec(name=n))
            continue
        this_lin = lin if args.distance == "lpips" else None
        if this_lin == "lpips" and n not in LPIPS_LIN_NETS:
            this_lin = None  # lpips ships linear weights only for alex/vgg/squeeze
        specs.append(
            MetricSpec(
                name=n,
                distance=args.distance,
                lin_weights=this_lin,
                backbone_weights=bw.get(n),
                layers=layers,
                seed=args.seed,
            )
        )
    return specs


def _data_root(args, rank: int, world: int, log) -> tuple[Path, bool]:
    if args.data is not None:
        return args.data, False
    from .data import default_set

    kw = {}
    if args.default_per_subset is not None:
        kw["per_subset"] = args.default_per_subset
    if rank == 0:
        t = time.perf_counter()
        root = default_set.build_default_set(**kw)
        log(
            f"embedded default set: {root} (built/checked in {time.perf_counter() - t:.1f} s; synthetic ordinal judgements)"
        )
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if rank != 0:
        root = default_set.build_default_set(**kw)
    return root, True


def run_score(args) -> dict:
    """Run ``score`` with parsed ``args``; returns the results dict (rank 0; other ranks return {})."""
    import numpy as np
    import torch

    from . import _io
    from .score import plots
    from .score.bapps import data_fingerprint
    from .score.runner import (
        DistanceModel,
        FeatureReuse,
        compute_distances,
        count_image_uses,
        env_rank_world,
        load_datasets,
        score_results,
    )

    rank, world = env_rank_world()
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive int, got {args.batch_size}")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap: expected >= 0, got {args.bootstrap}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if world > 1:
        import torch.distributed as dist

        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))  # nccl collectives use the current device
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if rank == 0 else (lambda msg: None)
    t_start = time.perf_counter()
    specs = _specs(args)
    root, embedded = _data_root(args, rank, world, log)
    subsets = [s.strip() for s in args.subsets.split(",")] if args.subsets else None
    if subsets is None and embedded:
        subsets = list(_embedded_set().SUBSETS)  # the table's order: matched_mse first
    load_size = args.load_size or None
    data = load_datasets(Path(root), args.split, subsets, load_size, jnd=not args.no_jnd)
    all_ds = data["2afc"] + data["jnd"]
    n_items = sum(len(d) for d in all_ds)
    uses = None
    if n_items <= 20000 and args.workers == 0:  # keep decoded patches in memory across metrics (small sets only)
        for d in all_ds:
            d._cache = {}
        # images repeated across items (the embedded set reuses its references) go through a backbone once
        uses = count_image_uses(all_ds)
    fp = data_fingerprint(all_ds)
    random_names = [s.name for s in specs if s.random_init]
    notice = RANDOM_INIT_NOTICE.format(names=", ".join(random_names), seed=args.seed) if random_names else None
    if notice:
        log(notice)
    cache_root = None if args.no_cache else (args.cache_dir or args.out / "cache")

    bar = None
    if rank == 0 and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=n_items * len(specs), unit="item", desc="score", file=sys.stderr, dynamic_ncols=True)

    results: dict = {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "root": str(root),
            "embedded_default_set": embedded,
            "judgements": "synthetic ordinal (not human data)" if embedded else "as stored in the BAPPS directory",
            "about": _embedded_set().ABOUT if embedded else None,
            "split": args.split,
            "load_size": load_size,
            "fingerprint": fp,
            "2afc_subsets": {d.subset: len(d) for d in data["2afc"]},
            # best achievable 2AFC score given the judgements: mean(max(p, 1 - p)) (the "human" ceiling)
            "2afc_ceiling": _ceiling(data["2afc"]),
            "jnd_subsets": {d.subset: len(d) for d in data["jnd"]},
        },
        "config": {
            "device": device,
            "backend": args.backend,
            "batch_size": args.batch_size,
            "bootstrap": args.bootstrap,
            "seed": args.seed,
            "world_size": world,
            "aggregations": {
                "subset_mean": "unweighted mean of the per-subset scores",
                "pooled": "score over all items of all subsets pooled together",
            },
        },
        "notice": notice,
        "metrics": {},
    }
    for spec in specs:
        t0 = time.perf_counter()
        reuse = FeatureReuse(uses) if uses is not None and not spec.is_baseline else None
        model = DistanceModel(spec, device=device, backend=args.backend, reuse=reuse)
        mres: dict = {"spec": spec.asdict(), "layers": model.layer_names, "n_cached": 0, "n_computed": 0}
        for kind in ("2afc", "jnd"):
            if not data[kind]:
                continue
            per: dict = {}
            for ds in data[kind]:
                cdir = None
                if cache_root is not None:
                    cdir = Path(cache_root) / f"{spec.label}-{spec.key()}-{fp}" / f"{kind}_{ds.split}_{ds.subset}"
                dist_ = compute_distances(
                    model,
                    ds,
                    args.batch_size,
                    cdir,
                    rank,
                    world,
                    progress=(bar.update if bar is not None else None),
                    workers=args.workers,
                )
                if bar is not None:
                    bar.update(dist_.n_cached)
                mres["n_cached"] += dist_.n_cached
                mres["n_computed"] += dist_.n_computed
                per[ds.subset] = (ds.judgements, dist_)
            if rank == 0:
                mres[kind] = score_results(kind, per, model.layer_names, args.bootstrap, args.seed)
                if embedded and kind == "2afc" and "matched_mse" in per:
                    ds = next(d for d in data[kind] if d.subset == "matched_mse")
                    y, dm = per["matched_mse"]
                    by_kind = _embedded_set().matched_mse_by_kind(root, ds.ids, dm.arrays["d0"], dm.arrays["d1"], y)
                    mres[kind]["matched_mse_by_kind"] = by_kind
        if reuse is not None:  # images the backbone saw / images the computed items hold
            mres["backbone_images"] = {"computed": reuse.n_computed, "of": reuse.n_images}
        mres["seconds"] = time.perf_counter() - t0
        results["metrics"][spec.label] = mres
        del model
    if bar is not None:
        bar.close()
    results["seconds"] = time.perf_counter() - t_start
    if rank != 0:
        return {}
    _write_outputs(results, args.out, _io, None if args.no_plots else plots, np)
    if not args.quiet:
        _print_table(results)
    log(f"wrote {args.out}/results.json, scores.csv, per_layer.csv and plots ({results['seconds']:.1f} s)")
    return results


def _embedded_set():
    from .data import default_set

    return default_set


def _ceiling(datasets) -> dict:
    import numpy as np

    if not datasets:
        return {}
    per = {d.subset: np.maximum(d.judgements, 1.0 - d.judgements) for d in datasets}
    out = {k: float(v.mean()) for k, v in per.items()}
    out["subset_mean"] = float(np.mean(list(out.values())))
    out["pooled"] = float(np.concatenate(list(per.values())).mean())
    return out


def _write_outputs(results: dict, out: Path, _io, plots, np) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _io.write_json(out / "results.json", results)
    rows, lrows = [], []
    for label, m in results["metrics"].items():
        for kind in ("2afc", "jnd"):
            if kind not in m:
                continue
            r = m[kind]
            entries = [(s, e) for s, e in r["subsets"].items()] + [
                ("subset_mean", r["subset_mean"]),
                ("pooled", r["pooled"]),
            ]
            for s, e in entries:
                ci = e["ci"] or [float("nan"), float("nan")]
                rows.append(
                    {
                        "metric": label,
                        "task": kind,
                        "subset": s,
                        "score": e["score"],
                        "ci_low": ci[0],
                        "ci_high": ci[1],
                        "n": e["n"],
                    }
                )
            for lname, lr in r.get("per_layer", {}).items():
                for s, v in lr.items():
                    lrows.append({"metric": label, "task": kind, "layer": lname, "subset": s, "score": v})
    _io.write_csv(out / "scores.csv", rows, ["metric", "task", "subset", "score", "ci_low", "ci_high", "n"])
    _io.write_csv(out / "per_layer.csv", lrows, ["metric", "task", "layer", "subset", "score"])
    for kind in ("2afc", "jnd") if plots is not None else ():
        plots.plot_subsets(results, kind, out / f"{kind}_subsets.png")
        plots.plot_layers(results, kind, out / f"{kind}_layers.png")
    if plots is not None:
        plots.plot_matched_mse_by_kind(results, out / "2afc_matched_mse_by_kind.png")


def _print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, width=max(100, min(200, Console().width)))
    for kind, title in (("2afc", "2AFC score"), ("jnd", "JND mAP")):
        metrics = [m for m, r in results["metrics"].items() if kind in r]
        if not metrics:
            continue
        subsets = list(results["metrics"][metrics[0]][kind]["subsets"])
        t = Table(title=f"{title} (95% bootstrap CI for the averages)")
        t.add_column("metric")
        for s in subsets:
            t.add_column(s, justify="right")
        t.add_column("subset_mean", justify="right")
        t.add_column("pooled", justify="right")
        for m in metrics:
            r = results["metrics"][m][kind]
            cells = [f"{r['subsets'][s]['score']:.3f}" for s in subsets]
            for agg in ("subset_mean", "pooled"):
                e = r[agg]
                cells.append(f"{e['score']:.3f}" + (f" [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" if e["ci"] else ""))
            name = m + (" (random init)" if results["metrics"][m]["spec"]["random_init_backbone"] else "")
            t.add_row(name, *cells)
        ceil = results["data"].get("2afc_ceiling") if kind == "2afc" else None
        if ceil:
            t.add_row(
                "(ceiling)", *[f"{ceil[s]:.3f}" for s in subsets], f"{ceil['subset_mean']:.3f}", f"{ceil['pooled']:.3f}"
            )
        console.print(t)
    by_kind = {
        m: r["2afc"]["matched_mse_by_kind"]
        for m, r in results["metrics"].items()
        if "matched_mse_by_kind" in r.get("2afc", {})
    }
    if by_kind:
        combos = list(next(iter(by_kind.values())))
        t = Table(title="2AFC score on matched_mse per pair kind (close vs far)")
        t.add_column("metric")
        for c in combos:
            t.add_column(c.replace(" vs ", "\nvs ").replace("_", " "), justify="right")
        for m, bk in by_kind.items():
            t.add_row(m, *[f"{bk[c]['score']:.3f}" if c in bk else "-" for c in combos])
        t.add_row("(n)", *[str(next(iter(by_kind.values()))[c]["n"]) for c in combos])
        console.print(t)
    if results["data"].get("about"):
        console.print(results["data"]["about"], markup=False, highlight=False)
    if results.get("notice"):
        console.print(f"[yellow]{results['notice']}[/yellow]")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .imagesets.cli import COMMANDS, run

    if args.command in COMMANDS:
        return run(args)
    if args.command == "score":
        from .score.bapps import BAPPSError

        try:
            run_score(args)
        except (BAPPSError, FileNotFoundError, ValueError) as e:
            print(f"percept-fast score: error: {e}", file=sys.stderr)
            return 2
        finally:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
