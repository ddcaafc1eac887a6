"""The work behind ``percept-fast dist | dirs | pairs``: distances between two images, between the files of the
same name in two folders, and between all pairs of images in one folder (the N x N matrix and its mean, lpips'
"diversity").

Throughput: images are decoded (and resized) in DataLoader workers as ``uint8`` (4x less to move than float),
pinned on CUDA, converted on the device; every image goes through the backbone once, in batches of
``batch_size``. ``pairs`` keeps every image's tapped feature maps and fills the matrix tile by tile (``tile``
images a side, upper triangle only, mirrored) with the all-pairs ops (:func:`~percept_fast.ops.lpips_distance_matrix`,
``meanpool_distance_matrix``, ``style_distance_matrix``): one GEMM per layer and tile instead of a backbone
pass per pair. The diagonal is 0 by definition.

Sharding (``torchrun``, gloo on CPU, nccl on CUDA): whole batches go round-robin to the ranks, so every batch
is the one a single process would form and the results are identical (given the same thread count). ``dirs``
gathers the distances on rank 0; ``pairs`` gathers the features on every rank, deals the matrix tiles
round-robin and gathers them on rank 0, which writes the outputs.

Bad input (unreadable or non-image files, an image whose size differs from the others when it must not):
``on_error='stop'`` raises :class:`~percept_fast.imagesets.files.ImageError` before anything is written;
``'skip'`` reports the file (``errors`` in the summary), leaves it out and goes on. Outputs are written
atomically (temporary file, ``os.replace``) at the end, so a failed or killed run leaves no partial file.
"""

from __future__ import annotations

import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .files import ImageError, ImageFiles, decode_image, image_loader, list_images, match_names

__all__ = ["JobConfig", "FeatureModel", "run_dist", "run_dirs", "run_pairs", "ON_ERROR"]

ON_ERROR = ("stop", "skip")
_SKIP_HINT = " (--on-error skip leaves such files out and goes on)"
LPIPS_LIN_NETS = ("alex", "vgg", "squeeze")


@dataclass
class JobConfig:
    """Options shared by the three commands (the CLI's flags)."""

    metric: str = "alex"
    distance: str = "lpips"
    lin_weights: str | None = "auto"
    backbone_weights: str | None = None
    layers: tuple | None = None
    size: int | None = None
    device: str = "cpu"
    batch_size: int = 32
    workers: int = 0
    backend: str = "auto"
    on_error: str = "stop"
    seed: int = 0
    tile: int = 256
    max_feature_mib: float = 4096.0
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def validate(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"--on-error: expected one of {ON_ERROR}, got {self.on_error!r}")
        for name in ("batch_size", "tile"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected a positive int, got {v!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"--workers: expected an int >= 0, got {self.workers!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"--size: expected a positive int (or 0 for the stored size), got {self.size!r}")
        if self.backbone_weights is not None and not Path(self.backbone_weights).is_file():
            raise FileNotFoundError(f"--backbone-weights: file not found: {self.backbone_weights}")


class FeatureModel:
    """The metric of a job: tapped features of ``uint8`` image batches, per-pair distances and all-pairs tiles."""

    def __init__(self, cfg: JobConfig):
        from ..metric import PerceptualMetric

        self.cfg = cfg
        self.device = torch.device(cfg.device)
        lin = cfg.lin_weights
        if lin == "auto":
            lin = "lpips" if cfg.distance == "lpips" and cfg.metric in LPIPS_LIN_NETS else None
        if lin in ("none", ""):
            lin = None
        self.lin_weights = lin
        self.random_init = cfg.backbone_weights is None
        # seeded per metric name (as percept-fast score), so every rank builds the same random backbone
        torch.manual_seed(cfg.seed + zlib.crc32(cfg.metric.encode()))
        metric = PerceptualMetric(
            backbone=cfg.metric,
            layers=list(cfg.layers) if cfg.layers else None,
            distance=cfg.distance,
            lin_weights=lin,
            normalize_input=True,
            backend=cfg.backend,
            backbone_weights=cfg.backbone_weights if cfg.backbone_weights is not None else "random",
        )
        self.metric = metric.to(self.device).eval()
        # channels_last convolutions are faster on CPU (oneDNN) except for AlexNet's 11x11/4 stem (see score.runner)
        self.channels_last = self.device.type == "cpu" and cfg.metric != "alex"
        if self.channels_last:
            self.metric.backbone.to(memory_format=torch.channels_last)

    def to_input(self, imgs: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, 3, H, W]`` -> float in ``[0, 1]`` on the device, in the model's memory layout."""
        x = imgs.to(self.device, non_blocking=True).to(torch.float32).div_(255.0)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def features(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        # one layout whatever the backbone's path (alex/vgg's frozen copy returns channels_last maps) and however the
        # features travel (gathered between ranks or not): the all-pairs ops then sum in one order, so one process
        # and several give the same matrix bit for bit
        return [f.contiguous() for f in self.metric.features(self.to_input(imgs))]

    @torch.inference_mode()
    def pair_distance(self, f0: Sequence[torch.Tensor], f1: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.metric.distance_from_features(list(f0), list(f1))

    @torch.inference_mode()
    def matrix(self, fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor]) -> torch.Tensor:
        """All-pairs distances ``[N, M]`` between two lists of tapped maps (the fused all-pairs ops)."""
        from ..ops import lpips_distance_matrix, meanpool_distance_matrix, style_distance_matrix

        m = self.metric
        kw = dict(m.distance_kwargs)
        fx, fy = list(fx), list(fy)
        if m.distance == "lpips":
            w = [t.to(fx[0].device) for t in m.lin_weights] if len(m.lin_weights) else None
            return lpips_distance_matrix(fx, fy, w, check_finite=False, **kw)
        if m.distance == "meanpool":
            total = None
            for a, b in zip(fx, fy):
                d = meanpool_distance_matrix(a, b, check_finite=False, **kw)
                total = d if total is None else total + d
            return total
        return style_distance_matrix(fx, fy, backend=m.backend, check_finite=False, **kw)


# ------------------------------------------------------------------------------------------- helpers


def rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str) -> str:
    """Joins the torchrun process group when ``WORLD_SIZE > 1``; returns this rank's device."""
    rank, world = rank_world()
    if world <= 1:
        return device
    import torch.distributed as dist

    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def _all_gather(obj):
    _, world = rank_world()
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _batches(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]


class _Errors:
    """Bad inputs of a run: raised at once (``stop``) or collected (``skip``), reported on rank 0's stderr."""

    def __init__(self, cfg: JobConfig):
        self.cfg = cfg
        self.items: list[dict] = []

    def add(self, file: str | os.PathLike, message: str) -> None:
        # one process stops at once; with several, every rank stops together after the gather (in merged)
        if self.cfg.on_error == "stop" and rank_world()[1] == 1:
            raise ImageError(message + _SKIP_HINT)
        self.items.append({"file": str(file), "error": message})

    def merged(self) -> list[dict]:
        out = sorted((e for part in _all_gather(self.items) for e in part), key=lambda e: e["file"])
        if out and self.cfg.on_error == "stop":
            raise ImageError(out[0]["error"] + (f" (and {len(out) - 1} more)" if len(out) > 1 else "") + _SKIP_HINT)
        return out


def _progress(cfg: JobConfig, total: int, desc: str):
    rank, _ = rank_world()
    if not cfg.progress or rank != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True)


def _stored_size(path: Path) -> tuple[int, int] | None:
    """``(H, W)`` from the file header (no decoding), None when unreadable (the decoder reports it later)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:  # noqa: BLE001 - any failure is reported by the decoder with the file name
        return None


def _summary(cfg: JobConfig, model: FeatureModel, command: str, t0: float, n_images: int, **extra) -> dict:
    seconds = time.perf_counter() - t0
    return {
        "command": command,
        "metric": cfg.metric,
        "distance": cfg.distance,
        "lin_weights": model.lin_weights,
        "backbone_weights": cfg.backbone_weights,
        "random_init_backbone": model.random_init,
        "layers": model.metric.layer_names,
        "size": cfg.size,
        "device": str(model.device),
        "batch_size": cfg.batch_size,
        "workers": cfg.workers,
        "world_size": rank_world()[1],
        "on_error": cfg.on_error,
        "n_images": n_images,
        "seconds": seconds,
        "images_per_s": n_images / seconds if seconds > 0 else float("nan"),
        **extra,
    }


# ---------------------------------------------------------------------------------------------- dist


def run_dist(cfg: JobConfig, path0: str | os.PathLike, path1: str | os.PathLike) -> dict:
    """Distance between two image files (errors always stop: there is nothing else to do)."""
    cfg.validate()
    t0 = time.perf_counter()
    a = decode_image(path0, cfg.size)
    b = decode_image(path1, cfg.size)
    if a.shape != b.shape:
        raise ImageError(
            f"{path0} is {a.shape[1]}x{a.shape[2]} but {path1} is {b.shape[1]}x{b.shape[2]}: LPIPS compares "
            "images of one size; pass --size N to resize both"
        )
    model = FeatureModel(cfg)
    f = model.features(torch.stack([a, b]))
    d = float(model.pair_distance([x[:1] for x in f], [x[1:] for x in f])[0])
    return _summary(cfg, model, "dist", t0, 2, image0=str(path0), image1=str(path1), distance=d)


# ---------------------------------------------------------------------------------------------- dirs


def _name_list(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def run_dirs(cfg: JobConfig, dir0: str | os.PathLike, dir1: str | os.PathLike, out: str | os.PathLike | None) -> dict:
    """Distances between the files of the same name in ``dir0`` and ``dir1``; CSV ``name,distance`` to ``out``."""
    from .. import _io

    cfg.validate()
    rank, world = rank_world()
    t0 = time.perf_counter()
    files0, files1 = list_images(dir0, "DIR0"), list_images(dir1, "DIR1")
    names, only0, only1 = match_names(files0, files1)
    unmatched = []
    if only0:
        unmatched.append(f"only in {dir0}: {_name_list(only0)}")
    if only1:
        unmatched.append(f"only in {dir1}: {_name_list(only1)}")
    if unmatched and (cfg.on_error == "stop" or not names):
        raise ImageError("unmatched file names (the folders must hold the same names): " + "; ".join(unmatched))
    if unmatched:
        cfg.log("percept-fast dirs: skipping unmatched file names: " + "; ".join(unmatched))
    n = len(names)
    paths = [Path(dir0) / s for s in names] + [Path(dir1) / s for s in names]
    model = FeatureModel(cfg)
    errors = _Errors(cfg)
    batches = _batches(n, cfg.batch_size)
    mine = batches[rank::world]
    loader = image_loader(
        ImageFiles(paths, cfg.size),
        [b + [i + n for i in b] for b in mine],
        cfg.workers,
        model.device.type == "cuda",
    )
    bar = _progress(cfg, 2 * n, "dirs")
    results: dict[int, float] = {}
    for idx, imgs, errs in loader:
        k = len(idx) // 2
        groups: dict[tuple, list[int]] = {}
        for j in range(k):
            i = idx[j]
            bad = [(paths[idx[j + s * k]], errs[j + s * k]) for s in (0, 1) if errs[j + s * k] is not None]
            for p, msg in bad:
                errors.add(p, msg)
            if bad:
                continue
            a, b = imgs[j], imgs[j + k]
            if a.shape != b.shape:
                errors.add(
                    paths[i],
                    f"{paths[i]} is {a.shape[1]}x{a.shape[2]} but {paths[i + n]} is {b.shape[1]}x{b.shape[2]}: "
                    "pass --size N to resize both",
                )
                continue
            groups.setdefault(tuple(a.shape), []).append(j)
        for js in groups.values():
            f = model.features(torch.stack([imgs[j] for j in js] + [imgs[j + k] for j in js]))
            m = len(js)
            d = model.pair_distance([x[:m] for x in f], [x[m:] for x in f]).to("cpu", torch.float64)
            for j, v in zip(js, d.tolist()):
                results[idx[j]] = v
        if bar is not None:
            bar.update(len(idx) * world)  # the other ranks work on batches of the same size meanwhile
    if bar is not None:
        bar.close()
    merged: dict[int, float] = {}
    for part in _all_gather(results):
        merged.update(part)
    err_list = errors.merged()
    order = sorted(merged)
    dists = np.array([merged[i] for i in order], dtype=np.float64)
    if rank == 0 and out is not None:
        _io.write_csv(out, [{"name": names[i], "distance": repr(merged[i])} for i in order], ["name", "distance"])
    return _summary(
        cfg,
        model,
        "dirs",
        t0,
        2 * n,
        dir0=str(dir0),
        dir1=str(dir1),
        out=None if out is None else str(out),
        n_pairs=len(order),
        mean=float(dists.mean()) if len(dists) else float("nan"),
        std=float(dists.std()) if len(dists) else float("nan"),
        unmatched={"only_in_dir0": only0, "only_in_dir1": only1},
        errors=err_list,
    )


# --------------------------------------------------------------------------------------------- pairs


def _feature_bytes(feats: Sequence[torch.Tensor]) -> int:
    return sum(f[0].numel() * 4 for f in feats)


def run_pairs(cfg: JobConfig, folder: str | os.PathLike, out: str | os.PathLike | None) -> dict:
    """All-pairs distance matrix of the images in ``folder`` (``.npy`` to ``out``), its mean over the pairs
    ``i < j`` (the diversity) and the standard error of that mean as lpips' script reports it."""
    from .. import _io

    cfg.validate()
    rank, world = rank_world()
    t0 = time.perf_counter()
    files = list_images(folder, "DIR")
    n = len(files)
    ref_file, ref_size = None, None
    if cfg.size is None:  # stored sizes: every image must have the first readable one's (no decode needed)
        for p in files:
            s = _stored_size(p)
            if s is not None:
                ref_file, ref_size = p, s
                break
    model = FeatureModel(cfg)
    errors = _Errors(cfg)
    batches = _batches(n, cfg.batch_size)
    loader = image_loader(ImageFiles(files, cfg.size), batches[rank::world], cfg.workers, model.device.type == "cuda")
    bar = _progress(cfg, n, "features")
    kept: list[int] = []
    parts: list[list[torch.Tensor]] = []
    per_image = None
    for idx, imgs, errs in loader:
        good = []
        for i, img, msg in zip(idx, imgs, errs):
            if msg is not None:
                errors.add(files[i], msg)
            elif ref_size is not None and tuple(img.shape[1:]) != ref_size:
                errors.add(
                    files[i],
                    f"{files[i]} is {img.shape[1]}x{img.shape[2]}, the other images {ref_size[0]}x{ref_size[1]} "
                    f"(as {ref_file.name}): pass --size N to resize every image",
                )
            else:
                good.append((i, img))
        if good:
            f = model.features(torch.stack([img for _, img in good]))
            if per_image is None:
                per_image = _feature_bytes(f)
                need = per_image * n / 2**20
                if need > cfg.max_feature_mib:
                    raise ValueError(
                        f"--max-feature-mib: the features of {n} images need {need:.0f} MiB "
                        f"({per_image / 2**20:.2f} MiB each), more than {cfg.max_feature_mib:.0f}: lower --size, "
                        "choose fewer --layers or raise --max-feature-mib"
                    )
            for x in f:
                if not bool(torch.isfinite(x.sum())):
                    raise ValueError(f"features of {[str(files[i]) for i, _ in good]} are not finite")
            kept += [i for i, _ in good]
            # sharded: numpy arrays (plain pickles) for the gather; one process keeps the tensors where they are
            parts.append([x.to("cpu", torch.float32).numpy() if world > 1 else x.to(torch.float32) for x in f])
        if bar is not None:
            bar.update(len(idx) * world)
    if bar is not None:
        bar.close()
    # every rank gets every image's features (sorted by index), so that any rank can fill any tile
    gathered = _all_gather((kept, parts))
    order, layers = [], None
    for k, ps in gathered:
        order += k
        if ps:
            cat = [torch.cat([torch.as_tensor(p[li]) for p in ps]) for li in range(len(ps[0]))]
            layers = cat if layers is None else [torch.cat([a, b]) for a, b in zip(layers, cat)]
    err_list = errors.merged()
    if not order:
        raise ImageError(f"DIR: no usable image in {folder} (all {n} were skipped)")
    perm = torch.tensor(np.argsort(np.asarray(order), kind="stable"))
    feats = [f[perm.to(f.device)].to(model.device) for f in layers]
    order = sorted(order)
    m = len(order)
    tiles = [(i, j) for i in range(0, m, cfg.tile) for j in range(i, m, cfg.tile)]
    bar = _progress(cfg, len(tiles), "matrix")
    mine = {}
    for i, j in tiles[rank::world]:
        fi = [f[i : i + cfg.tile] for f in feats]
        fj = [f[j : j + cfg.tile] for f in feats]
        mine[(i, j)] = model.matrix(fi, fj).to("cpu", torch.float64).numpy()
        if bar is not None:
            bar.update(world)
    if bar is not None:
        bar.close()
    D = np.zeros((m, m), dtype=np.float64)
    for part in _all_gather(mine):
        for (i, j), blk in part.items():
            D[i : i + blk.shape[0], j : j + blk.shape[1]] = blk
    D = np.triu(D, 1)
    D = D + D.T  # the upper triangle mirrored; the diagonal is 0 by definition
    iu = np.triu_indices(m, 1)
    vals = D[iu]
    if rank == 0 and out is not None:
        _io.atomic_write_bytes(out, _npy_bytes(D.astype(np.float32)))
    return _summary(
        cfg,
        model,
        "pairs",
        t0,
        n,
        dir=str(folder),
        out=None if out is None else str(out),
        n_kept=m,
        n_pairs=len(vals),
        mean=float(vals.mean()) if len(vals) else float("nan"),
        stderr=float(vals.std() / math.sqrt(len(vals))) if len(vals) else float("nan"),
        files=[files[i].name for i in order],
        errors=err_list,
    )


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()
