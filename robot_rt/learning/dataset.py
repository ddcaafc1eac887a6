"""Append-only episode data sets on disk: NumPy `.npz` chunks plus an fsynced JSON-lines manifest.

Design notes: docs/learning.md, section `robot_rt.learning.dataset`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_bytes, atomic_write_text

SCHEMA_VERSION = 1
STEP_FIELDS = {"observations": np.float32, "features": np.float32, "actions": np.float32}
EPISODE_FIELDS = {
    "episode_length": np.int64,
    "episode_seed": np.int64,
    "commanded_goal": np.float32,
    "landing_point": np.float32,
    "has_landed": np.bool_,
}


@dataclass
class EpisodeBatch:
    """Episodes stored back to back (the in-memory form of one or several chunks; schema in the module doc)."""

    observations: np.ndarray
    features: np.ndarray
    actions: np.ndarray
    episode_length: np.ndarray
    episode_seed: np.ndarray
    commanded_goal: np.ndarray
    landing_point: np.ndarray
    has_landed: np.ndarray

    @property
    def n_episodes(self) -> int:
        return int(self.episode_length.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.actions.shape[0])

    def episode_index(self) -> np.ndarray:
        """The episode each step belongs to, [T]."""
        return np.repeat(np.arange(self.n_episodes), self.episode_length)

    @staticmethod
    def concatenate(batches: list[EpisodeBatch]) -> EpisodeBatch:
        if not batches:
            raise ValueError("batches: expected at least one EpisodeBatch")
        return EpisodeBatch(
            **{k: np.concatenate([getattr(b, k) for b in batches]) for k in (*STEP_FIELDS, *EPISODE_FIELDS)}
        )

    def validate(self) -> EpisodeBatch:
        """Checks the schema; returns self with the dtypes of the schema (raises ValueError naming the field)."""
        for name, dtype in {**STEP_FIELDS, **EPISODE_FIELDS}.items():
            value = np.asarray(getattr(self, name))
            if name != "has_landed" and not np.issubdtype(value.dtype, np.number):
                raise ValueError(f"{name}: expected a numeric array, got dtype {value.dtype}")
            setattr(self, name, value.astype(dtype, copy=False))
        e = self.episode_length.shape[0]
        for name, shape in (
            ("episode_length", (e,)),
            ("episode_seed", (e,)),
            ("commanded_goal", (e, 2)),
            ("landing_point", (e, 2)),
            ("has_landed", (e,)),
        ):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name}: expected shape {shape} (E={e} episodes), got {getattr(self, name).shape}")
        if e == 0:
            raise ValueError("episode_length: expected at least one episode")
        if np.any(self.episode_length < 1):
            raise ValueError("episode_length: expected every episode to have at least one step")
        t = int(self.episode_length.sum())
        for name in STEP_FIELDS:
            value = getattr(self, name)
            if value.ndim != 2 or value.shape[0] != t:
                raise ValueError(
                    f"{name}: expected shape [T, dim] with T = sum(episode_length) = {t}, got {value.shape}"
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name}: contains NaN or Inf")
        for name in ("landing_point", "commanded_goal"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name}: contains NaN or Inf")
        return self


class EpisodeDataset:
    """An append-only episode data set in directory `path` (created if missing; see docs/learning.md, `robot_rt.learning.dataset`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"path: expected a directory for the data set, got a file: {self.path}")
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.jsonl"

    def manifest(self) -> list[dict]:
        """The committed chunks (a torn last line, from a crash, is not part of the data set)."""
        if not self.manifest_path.exists():
            return []
        entries = []
        for line in self.manifest_path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(entry, dict) or "chunk" not in entry:
                break
            entries.append(entry)
        return entries

    def __len__(self) -> int:
        return sum(e["n_episodes"] for e in self.manifest())

    def n_steps(self) -> int:
        return sum(e["n_steps"] for e in self.manifest())

    def append(self, batch: EpisodeBatch, source: str) -> dict:
        """Writes `batch` as a new chunk and commits it to the manifest; returns the manifest entry."""
        if not isinstance(source, str) or not source:
            raise ValueError(f"source: expected a non-empty string, got {source!r}")
        batch.validate()
        entries = self.manifest()
        if entries:
            first = entries[0]
            for key, value in (
                ("obs_dim", batch.observations.shape[1]),
                ("feat_dim", batch.features.shape[1]),
                ("act_dim", batch.actions.shape[1]),
            ):
                if first[key] != value:
                    raise ValueError(f"batch: {key} {value} differs from the data set's {first[key]}")
        self._repair(entries)
        name = f"chunk-{len(entries):06d}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, **{k: getattr(batch, k) for k in (*STEP_FIELDS, *EPISODE_FIELDS)})
        data = buffer.getvalue()
        atomic_write_bytes(self.path / name, data)
        entry = {
            "chunk": name,
            "schema_version": SCHEMA_VERSION,
            "source": source,
            "n_episodes": batch.n_episodes,
            "n_steps": batch.n_steps,
            "sha256": hashlib.sha256(data).hexdigest(),
            "obs_dim": int(batch.observations.shape[1]),
            "feat_dim": int(batch.features.shape[1]),
            "act_dim": int(batch.actions.shape[1]),
        }
        with open(self.manifest_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(self.path)
        return entry

    def _repair(self, entries: list[dict]) -> None:
        """Before an append: cut a torn manifest tail and drop temp files left by a crashed write."""
        if self.manifest_path.exists():
            text = self.manifest_path.read_text(encoding="utf-8")
            good = "".join(json.dumps(e) + "\n" for e in entries)
            if text != good:  # a torn tail (or anything after it) is not part of the data set
                atomic_write_text(self.manifest_path, good)
        for tmp in self.path.glob(".chunk-*.tmp"):
            tmp.unlink(missing_ok=True)

    def read_chunk(self, entry: dict) -> EpisodeBatch:
        path = self.path / entry["chunk"]
        if not path.exists():
            raise FileNotFoundError(f"data set {self.path}: chunk {entry['chunk']} named in the manifest is missing")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError(f"data set {self.path}: chunk {entry['chunk']} does not match its manifest sha256")
        if entry.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"data set {self.path}: chunk {entry['chunk']} has schema_version {entry.get('schema_version')}, "
                f"expected {SCHEMA_VERSION}"
            )
        with np.load(io.BytesIO(data)) as arrays:
            missing = [k for k in (*STEP_FIELDS, *EPISODE_FIELDS) if k not in arrays.files]
            if missing:
                raise ValueError(f"data set {self.path}: chunk {entry['chunk']} lacks fields {missing}")
            return EpisodeBatch(**{k: arrays[k] for k in (*STEP_FIELDS, *EPISODE_FIELDS)}).validate()

    def read(self, sources: tuple[str, ...] | None = None) -> EpisodeBatch | None:
        """All committed episodes (of the given sources), or None when there are none."""
        batches = [self.read_chunk(e) for e in self.manifest() if sources is None or e["source"] in sources]
        return EpisodeBatch.concatenate(batches) if batches else None

    def chunks(self) -> Iterator[tuple[dict, EpisodeBatch]]:
        for entry in self.manifest():
            yield entry, self.read_chunk(entry)


def relabel(batch: EpisodeBatch, landed_only: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hindsight relabelling: every step of an episode gets, as its goal, the landing point that episode
    actually achieved (not the goal it was commanded).

    Returns (features [S, F], goals [S, 2], actions [S, A]) over the steps of the landed episodes (all episodes
    with `landed_only=False`, whose goal is then the (0, 0) placeholder: only useful for inspection). The
    relabelled pair (steps, achieved landing point) is, by construction, a successful demonstration of
    reaching that goal, which is what goal-conditioned behaviour cloning imitates.
    """
    steps = batch.episode_index()
    keep = batch.has_landed[steps] if landed_only else np.ones(batch.n_steps, dtype=bool)
    goals = batch.landing_point[steps[keep]]
    return batch.features[keep], goals.astype(np.float32), batch.actions[keep]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
