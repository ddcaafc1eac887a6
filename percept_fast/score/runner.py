"""Evaluation runner behind ``percept-fast score``: per-triplet distances (with a resumable on-disk cache and
optional torch.distributed sharding), then scores, bootstrap CIs and per-layer scores.

Deep metrics compute the reference features **once per triplet**: ``features(cat([ref, p0, p1]))`` is one
backbone pass and ``d0``/``d1`` come from ``distance_from_features`` on the split feature lists. Images that
occur several times in a job (the same pixels in several triplets or subsets, as in the embedded default set,
whose ``graded`` and JND items reuse ``matched_mse``'s references and ``graded``'s distorted patches) go through
the backbone once: :class:`FeatureReuse` keys every image by its content and keeps the features of a repeated
image until its last use.

Cache layout (one directory per metric configuration and data fingerprint)::

    <cache>/<metric-label>-<key>/<kind>_<split>_<subset>/chunk_r<rank>_<first-index>_<n>.npz

Each chunk holds the item indices and their distances (and per-layer distances); chunks are written
atomically after every batch, so a killed run loses at most the batches in flight and a rerun computes only
the indices that no chunk holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._io import save_npz
from . import baselines
from .bapps import JNDDataset, TwoAFCDataset, _BAPPSBase
from .score import aggregate, bootstrap_aggregate_ci, twoafc_scores

__all__ = [
    "MetricSpec",
    "DistanceModel",
    "FeatureReuse",
    "image_key",
    "count_image_uses",
    "build_model",
    "compute_distances",
    "score_results",
    "Dist",
]

BASELINES = {"psnr": baselines.psnr_distance, "ssim": baselines.ssim_distance}
LPIPS_LIN_NETS = ("alex", "vgg", "squeeze")
_NCHW_ON_CPU = frozenset({"alex"})


@dataclass(frozen=True)
class MetricSpec:
    """One metric to score. ``name`` is a backbone name of :class:`percept_fast.metric.PerceptualMetric` or a
    baseline (``psnr``, ``ssim``)."""

    name: str
    distance: str = "lpips"
    lin_weights: str | None = None
    backbone_weights: str | None = None
    layers: tuple | None = None
    seed: int = 0

    @property
    def is_baseline(self) -> bool:
        return self.name in BASELINES

    @property
    def label(self) -> str:
        if self.is_baseline:
            return self.name
        lab = self.name if self.distance == "lpips" else f"{self.name}-{self.distance}"
        if self.distance == "lpips" and self.lin_weights is None:
            lab += "-nolin"
        return lab

    @property
    def random_init(self) -> bool:
        return not self.is_baseline and self.backbone_weights is None

    def key(self) -> str:
        """Hash of everything that changes the distances (weights files by content hash)."""
        d = {"v": 1, "name": self.name}
        if not self.is_baseline:
            d.update(distance=self.distance, layers=list(self.layers) if self.layers else None)
            d["lin"] = _file_or_tag(self.lin_weights)
            d["backbone"] = _file_or_tag(self.backbone_weights)
            if self.random_init:
                d["seed"] = self.seed
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def asdict(self) -> dict:
        d = asdict(self)
        d["label"] = self.label
        d["random_init_backbone"] = self.random_init
        return d


def _file_or_tag(v: str | None) -> str | None:
    if v is None or v == "lpips":
        return v
    p = Path(v)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {v}")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass
class Dist:
    """Distances of one subset: 2AFC ``d0, d1`` (+ ``l0, l1`` per layer) or JND ``d`` (+ ``l``)."""

    arrays: dict[str, np.ndarray]
    n_cached: int = 0
    n_computed: int = 0


def image_key(x: torch.Tensor) -> bytes:
    """Content key of one image tensor: its dtype, shape and bytes (equal keys: the same pixels)."""
    t = x.detach().to("cpu").contiguous()
    h = hashlib.blake2b(f"{t.dtype}{tuple(t.shape)}".encode(), digest_size=16)
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def count_image_uses(datasets: Sequence[_BAPPSBase]) -> dict[bytes, int]:
    """How often each distinct image (by :func:`image_key`) occurs among the items of ``datasets``."""
    uses: dict[bytes, int] = {}
    for ds in datasets:
        for i in range(len(ds)):
            item = ds[i]
            for name in ds._img_dirs:
                k = image_key(item[name])
                uses[k] = uses.get(k, 0) + 1
    return uses


class FeatureReuse:
    """Backbone features of images that occur more than once in a job, computed once and kept until their last
    use (``uses``: occurrences per :func:`image_key`, e.g. from :func:`count_image_uses`).

    ``parts(x, compute, n)`` splits the batch ``x`` (``[N, 3, H, W]``) into ``n`` equal consecutive parts and
    returns each part as *runs*: ``(rows, [per-layer features of those rows])`` covering the part in order,
    calling ``compute`` once, on the distinct images of ``x`` that it does not hold. Runs are views (nothing is
    copied): consecutive rows of one computed batch form one run. A repeated image is held as a view of the batch
    it was computed in, which keeps that batch's features alive until its last use, up to ``pin_bytes`` of such
    batches; beyond that its rows are copied. ``features(x, compute)`` returns the whole batch's features.
    """

    def __init__(self, uses: dict[bytes, int], pin_bytes: int = 2 << 30):
        self._left = {k: n for k, n in uses.items() if n > 1}  # uses still to come of each repeated image
        self._held: dict[bytes, tuple[list[torch.Tensor], int]] = {}  # key -> (features of its batch, row)
        self._pins: dict[int, list] = {}  # id(batch features) -> [bytes, number of held rows]
        self.pin_bytes = int(pin_bytes)
        self.n_images = 0  # images asked for
        self.n_computed = 0  # of which went through the backbone

    @property
    def n_held(self) -> int:
        return len(self._held)

    def features(self, x: torch.Tensor, compute: Callable[[torch.Tensor], list[torch.Tensor]]) -> list[torch.Tensor]:
        runs = self.parts(x, compute, 1)[0]
        if len(runs) == 1:
            return runs[0][1]
        return [torch.cat([r[1][layer] for r in runs]) for layer in range(len(runs[0][1]))]

    def parts(
        self, x: torch.Tensor, compute: Callable[[torch.Tensor], list[torch.Tensor]], n_parts: int
    ) -> list[list[tuple[int, list[torch.Tensor]]]]:
        if n_parts < 1 or x.shape[0] % n_parts:
            raise ValueError(f"n_parts: expected a positive divisor of the batch size {x.shape[0]}, got {n_parts}")
        keys = [image_key(t) for t in x]
        first: dict[bytes, int] = {}  # distinct images not held, in order of first appearance -> row in new
        where: list[int] = []  # their positions in x
        for i, k in enumerate(keys):
            if k not in self._held and k not in first:
                first[k] = len(first)
                where.append(i)
        self.n_images += len(keys)
        self.n_computed += len(first)
        new = compute(x if len(where) == len(keys) else x[where]) if first else None
        source = [(new, first[k]) if k in first else self._held[k] for k in keys]  # (features, row) per row
        size = len(keys) // n_parts
        out = []
        for p in range(n_parts):
            runs: list[tuple[int, list[torch.Tensor]]] = []
            start = p * size
            for i in range(p * size, (p + 1) * size + 1):
                if i < (p + 1) * size and i > start:
                    (fa, ra), (fb, rb) = source[i - 1], source[i]
                    if fa is fb and rb == ra + 1:
                        continue  # extends the run
                if i > start:
                    feats, row = source[start]
                    runs.append((i - start, [f[row : row + i - start] for f in feats]))
                    start = i
            out.append(runs)
        for k in keys:  # one use per occurrence; keep what is still to be used, drop what is not
            left = self._left.get(k)
            if left is None:
                continue
            if left > 1 and k not in self._held and k in first:
                self._hold(k, new, first[k])
            self._left[k] = left - 1
            if left - 1 <= 0:
                self._left.pop(k)
                self._release(k)
        return out

    def _hold(self, k: bytes, feats: list[torch.Tensor], row: int) -> None:
        pin = self._pins.get(id(feats))
        if pin is None:
            nbytes = sum(f.numel() * f.element_size() for f in feats)
            if sum(b for b, _ in self._pins.values()) + nbytes > self.pin_bytes:  # copy this image's rows
                self._held[k] = ([f[row : row + 1].clone() for f in feats], 0)
                return
            pin = self._pins[id(feats)] = [nbytes, 0]
        pin[1] += 1
        self._held[k] = (feats, row)

    def _release(self, k: bytes) -> None:
        held = self._held.pop(k, None)
        if held is None:
            return
        pin = self._pins.get(id(held[0]))
        if pin is not None:
            pin[1] -= 1
            if pin[1] == 0:
                del self._pins[id(held[0])]


class DistanceModel:
    """Uniform interface over deep metrics and baselines for the runner. ``reuse``: a :class:`FeatureReuse` for
    the job's repeated images (None: every image goes through the backbone)."""

    def __init__(
        self,
        spec: MetricSpec,
        device: str | torch.device = "cpu",
        backend: str = "auto",
        channels_last: bool | None = None,
        reuse: FeatureReuse | None = None,
    ):
        self.spec = spec
        self.device = torch.device(device)
        self.reuse = reuse
        # channels_last convolutions are faster on CPU (oneDNN) for squeeze/vgg/resnets; AlexNet's 11x11/4 stem
        # is faster in NCHW (measured CPU time per 64 triplets at 64 px, 1 thread: alex 0.29 s NCHW vs 0.35 s
        # channels_last; squeeze 0.69 vs 0.59; vgg 10.7 vs 9.1). The ops take any memory layout.
        if channels_last is None:
            channels_last = self.device.type == "cpu" and spec.name not in _NCHW_ON_CPU
        self.channels_last = bool(channels_last)
        self.layer_names: list[str] | None = None
        self.metric = None
        if spec.is_baseline:
            self._fn: Callable = BASELINES[spec.name]
            return
        from ..metric import PerceptualMetric  # the metric component

        # random-init backbones are seeded per metric name, so results do not depend on metric order or rank
        torch.manual_seed(spec.seed + zlib.crc32(spec.name.encode()))
        metric = PerceptualMetric(
            backbone=spec.name,
            layers=list(spec.layers) if spec.layers else None,
            distance=spec.distance,
            lin_weights=spec.lin_weights,
            normalize_input=True,  # the BAPPS reader gives [0, 1] images
            backend=backend,
            backbone_weights=spec.backbone_weights if spec.backbone_weights is not None else "random",
        )
        self.metric = metric.to(self.device).eval()
        if self.channels_last:
            self.metric.backbone.to(memory_format=torch.channels_last)
        self.layer_names = _layer_names(metric)
        self.total_is_layer_sum = self._check_layer_sum()

    @torch.inference_mode()
    def _check_layer_sum(self) -> bool:
        """Whether the metric's total distance is the sum of its per-layer distances (true for the lpips,
        style and meanpool ops); then one per-layer call per pair gives both. Checked on random images."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand(2, 3, 64, 64, generator=g).to(self.device)
        y = torch.rand(2, 3, 64, 64, generator=g).to(self.device)
        try:
            fx, fy = self.metric.features(x), self.metric.features(y)
            tot = self.metric.distance_from_features(fx, fy).double()
            per = self.metric.distance_from_features(fx, fy, per_layer=True).double()
        except (ValueError, RuntimeError):  # e.g. a backbone that needs larger inputs: compute both
            return False
        return per.dim() == 2 and bool(torch.allclose(per.sum(1), tot, rtol=1e-4, atol=1e-7))

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _backbone(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.metric.features(self._layout(x.to(self.device)))
        if self.metric.check_input:
            for i, f in enumerate(feats):  # once per computed image (see _dist)
                if not bool(torch.isfinite(f.sum(dtype=torch.float64 if f.dtype == torch.float64 else torch.float32))):
                    if not bool(torch.isfinite(f).all()):  # not just an overflow of the sum
                        raise ValueError(f"backbone features of layer {i} contain NaN or Inf")
        return feats

    def _features(self, x: torch.Tensor, n_parts: int) -> list[list[tuple[int, list[torch.Tensor]]]]:
        """Features of the images ``x`` (on the host) split into ``n_parts`` equal parts (one backbone pass), each
        as runs ``(rows, per-layer features)`` (see :class:`FeatureReuse`); repeated images from ``reuse``."""
        if self.reuse is not None:
            return self.reuse.parts(x, self._backbone, n_parts)
        feats = self._backbone(x)
        b = x.shape[0] // n_parts
        return [[(b, [f[p * b : (p + 1) * b] for f in feats])] for p in range(n_parts)]

    def _dist_runs(self, ra, rb) -> tuple[np.ndarray, np.ndarray]:
        """``_dist`` of two parts given as runs over the same rows: one op call per stretch where both sides are
        one run (no features copied)."""
        tots, pers = [], []
        ia = ib = oa = ob = 0
        while ia < len(ra):
            (na, fa), (nb, fb) = ra[ia], rb[ib]
            k = min(na - oa, nb - ob)
            tot, per = self._dist([f[oa : oa + k] for f in fa], [f[ob : ob + k] for f in fb])
            tots.append(tot)
            pers.append(per)
            oa, ob = oa + k, ob + k
            if oa == na:
                ia, oa = ia + 1, 0
            if ob == nb:
                ib, ob = ib + 1, 0
        if len(tots) == 1:
            return tots[0], pers[0]
        return np.concatenate(tots), np.concatenate(pers)

    def _dist(self, fa, fb) -> tuple[np.ndarray, np.ndarray]:
        m = self.metric
        # _backbone proved every map finite once; the metric would re-check both sides of every call (a sum per
        # map and call: the reference's maps twice per triplet, more with runs), so its check is off here
        check, m.check_input = m.check_input, False
        try:
            per = _np(m.distance_from_features(fa, fb, per_layer=True))
            tot = per.sum(axis=1) if self.total_is_layer_sum else _np(m.distance_from_features(fa, fb))
        finally:
            m.check_input = check
        return tot, per

    @torch.inference_mode()
    def triplet(self, ref: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor) -> dict[str, np.ndarray]:
        if self.metric is None:
            ref, p0, p1 = (t.to(self.device) for t in (ref, p0, p1))
            return {"d0": _np(self._fn(ref, p0)), "d1": _np(self._fn(ref, p1))}
        fr, f0, f1 = self._features(torch.cat([ref, p0, p1]), 3)  # ref features once per triplet
        d0, l0 = self._dist_runs(fr, f0)
        d1, l1 = self._dist_runs(fr, f1)
        return {"d0": d0, "d1": d1, "l0": l0, "l1": l1}

    @torch.inference_mode()
    def pair(self, p0: torch.Tensor, p1: torch.Tensor) -> dict[str, np.ndarray]:
        if self.metric is None:
            p0, p1 = (t.to(self.device) for t in (p0, p1))
            return {"d": _np(self._fn(p0, p1))}
        f0, f1 = self._features(torch.cat([p0, p1]), 2)
        d, per = self._dist_runs(f0, f1)
        return {"d": d, "l": per}


def _layer_names(metric) -> list[str]:
    for attr in ("layer_names", "tap_names"):
        v = getattr(metric, attr, None)
        if isinstance(v, (list, tuple)) and v:
            return [str(x) for x in v]
    bb = getattr(metric, "backbone", None)
    taps = getattr(metric, "taps", None)
    names = getattr(bb, "tap_names", None)
    if names is not None and taps is not None:
        return [names[i] for i in taps]
    if names is not None:
        return list(names)
    return []


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def build_model(spec: MetricSpec, device="cpu", backend="auto", channels_last=None, reuse=None) -> DistanceModel:
    return DistanceModel(spec, device, backend, channels_last, reuse)


# ---------------------------------------------------------------------------------------------- cache


def _load_chunks(d: Path, n: int, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    done = np.zeros(n, dtype=bool)
    arrays: dict[str, np.ndarray] = {}
    if not d.is_dir():
        return arrays, done
    for p in sorted(d.glob("chunk_*.npz")):
        try:
            with np.load(p) as z:
                idx = z["index"]
                part = {k: z[k] for k in keys if k in z.files}
        except Exception:
            continue  # unreadable (should not happen with atomic writes); recompute those items
        if set(part) != set(keys) or idx.size == 0 or idx.max() >= n or idx.min() < 0:
            continue
        for k, v in part.items():
            if k not in arrays:
                arrays[k] = np.full((n, *v.shape[1:]), np.nan)
            if arrays[k].shape[1:] != v.shape[1:]:
                raise ValueError(f"cache {d}: inconsistent chunk shapes for {k!r}; delete the directory")
            arrays[k][idx] = v
        done[idx] = True
    return arrays, done


def _batches(ds: _BAPPSBase, indices: np.ndarray, batch_size: int, workers: int):
    """Yield ``(indices, {'ref'|'p0'|'p1'|...: [B,3,H,W]})`` batches in order; ``workers > 0`` decodes the
    images in DataLoader worker processes."""
    img_keys = ds._img_dirs
    if workers <= 0 or len(indices) == 0:
        for s in range(0, len(indices), batch_size):
            idx = indices[s : s + batch_size]
            items = [ds[int(i)] for i in idx]
            yield idx, {k: torch.stack([it[k] for it in items]) for k in img_keys}
        return
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(
        Subset(ds, [int(i) for i in indices]), batch_size=batch_size, num_workers=workers, shuffle=False
    )
    for s, batch in zip(range(0, len(indices), batch_size), loader):
        idx = indices[s : s + batch_size]
        if not np.array_equal(batch["index"].numpy(), idx):
            raise RuntimeError("internal error: DataLoader returned items out of order")
        yield idx, {k: batch[k] for k in img_keys}


def compute_distances(
    model: DistanceModel,
    ds: _BAPPSBase,
    batch_size: int,
    cache_dir: Path | None,
    rank: int = 0,
    world: int = 1,
    progress: Callable[[int], None] | None = None,
    workers: int = 0,
) -> Dist:
    """Distances for every item of ``ds``: cached chunks are reused, the rest is split into batches dealt
    round-robin to the ranks and (when ``world > 1``) gathered so that every rank returns the full arrays."""
    is_2afc = isinstance(ds, TwoAFCDataset)
    deep = model.metric is not None
    keys = (["d0", "d1"] + (["l0", "l1"] if deep else [])) if is_2afc else (["d"] + (["l"] if deep else []))
    n = len(ds)
    if cache_dir is not None:
        arrays, done = _load_chunks(cache_dir, n, keys)
    else:
        arrays, done = {}, np.zeros(n, dtype=bool)
    if world > 1:
        # all ranks must agree on what is left: take the intersection of what each rank found
        import torch.distributed as dist

        views = [None] * world
        dist.all_gather_object(views, done)
        done = np.logical_and.reduce(views)
    n_cached = int(done.sum())
    remaining = np.flatnonzero(~done)
    # whole batches round-robin over ranks: the batches are the same as in a single-process run
    blocks = [remaining[s : s + batch_size] for s in range(0, len(remaining), batch_size)]
    mine_blocks = blocks[rank::world]
    mine = np.concatenate(mine_blocks) if mine_blocks else np.zeros(0, dtype=np.int64)
    local: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    local_idx: list[np.ndarray] = []
    for idx, batch in _batches(ds, mine, batch_size, workers):
        if is_2afc:
            out = model.triplet(batch["ref"], batch["p0"], batch["p1"])
        else:
            out = model.pair(batch["p0"], batch["p1"])
        for k in keys:
            local[k].append(out[k])
        local_idx.append(idx)
        if cache_dir is not None:
            save_npz(cache_dir / f"chunk_r{rank}_{int(idx[0]):07d}_{len(idx)}.npz", index=idx, **out)
        if progress is not None:
            progress(len(idx))
    part = {"index": np.concatenate(local_idx) if local_idx else np.zeros(0, dtype=np.int64)}
    for k in keys:
        part[k] = np.concatenate(local[k]) if local[k] else None
    parts = [part]
    if world > 1:
        import torch.distributed as dist

        parts = [None] * world
        dist.all_gather_object(parts, part)
        if progress is not None:
            progress(len(remaining) - len(mine))  # the other ranks' share
    for pt in parts:
        if pt["index"].size == 0:
            continue
        for k in keys:
            v = pt[k]
            if k not in arrays:
                arrays[k] = np.full((n, *v.shape[1:]), np.nan)
            arrays[k][pt["index"]] = v
        done[pt["index"]] = True
    if not done.all():
        raise RuntimeError(f"internal error: {int((~done).sum())} items of {ds.dir} have no distance")
    return Dist(arrays=arrays, n_cached=n_cached, n_computed=n - n_cached)


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class SubsetData:
    kind: str  # '2afc' | 'jnd'
    subset: str
    labels: np.ndarray  # judge (2afc) or same (jnd)
    dist: Dist = field(default=None)


def score_results(
    kind: str, subsets: dict[str, tuple[np.ndarray, Dist]], layer_names: list[str] | None, n_boot: int, seed: int
) -> dict:
    """Scores, CIs and per-layer scores of one metric on one kind (2afc/jnd).

    ``subsets[name] = (labels, Dist)``; returns a JSON-ready dict."""
    if kind == "2afc":
        per = {s: (twoafc_scores(d.arrays["d0"], d.arrays["d1"], y),) for s, (y, d) in subsets.items()}
    else:
        per = {s: (d.arrays["d"], y) for s, (y, d) in subsets.items()}
    point = aggregate(per, kind)
    cis = bootstrap_aggregate_ci(per, kind, n_boot=n_boot, seed=seed) if n_boot > 0 else {}
    out: dict = {"subsets": {}, "n": {s: int(len(y)) for s, (y, _) in subsets.items()}}
    for s in subsets:
        out["subsets"][s] = {"score": point[s], "ci": list(cis[s]) if s in cis else None, "n": out["n"][s]}
    for agg in ("subset_mean", "pooled"):
        ci = cis.get(agg) if len(subsets) > 1 else cis.get(next(iter(subsets)))
        out[agg] = {"score": point[agg], "ci": list(ci) if ci else None, "n": int(sum(out["n"].values()))}
    first = next(iter(subsets.values()))[1]
    lk = "l0" if kind == "2afc" else "l"
    if lk in first.arrays:
        nl = first.arrays[lk].shape[1]
        names = layer_names if layer_names and len(layer_names) == nl else [f"layer{i}" for i in range(nl)]
        layers = {}
        for li, lname in enumerate(names):
            if kind == "2afc":
                lper = {
                    s: (twoafc_scores(d.arrays["l0"][:, li], d.arrays["l1"][:, li], y),)
                    for s, (y, d) in subsets.items()
                }
            else:
                lper = {s: (d.arrays["l"][:, li], y) for s, (y, d) in subsets.items()}
            layers[lname] = aggregate(lper, kind)
        out["per_layer"] = layers
    return out


def env_rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def load_datasets(
    root: Path, split: str, subsets: Sequence[str] | None, load_size: int | None, jnd: bool
) -> dict[str, list[_BAPPSBase]]:
    from .bapps import BAPPSError, list_subsets

    out: dict[str, list[_BAPPSBase]] = {"2afc": [], "jnd": []}
    if not Path(root).is_dir():
        raise BAPPSError(f"--data: BAPPS root is not a directory: {root}")
    for kind, cls, sp in (("2afc", TwoAFCDataset, split), ("jnd", JNDDataset, "val")):
        if kind == "jnd" and not jnd:
            continue
        present = list_subsets(root, kind, sp)
        names = present if subsets is None else [s for s in subsets if s in present]
        for s in names:
            out[kind].append(cls(root, s, sp, load_size=load_size))
    if subsets is not None:
        missing = [s for s in subsets if not any(d.subset == s for k in out for d in out[k])]
        if missing:
            raise BAPPSError(f"--subsets: not found under {root}: {missing}")
    if not out["2afc"] and not out["jnd"]:
        raise BAPPSError(
            f"--data: no BAPPS subsets under {root} (expected {root}/2afc/{split}/<subset>/{{ref,p0,p1,judge}} "
            f"or {root}/jnd/val/<subset>/{{p0,p1,same}})"
        )
    return out
