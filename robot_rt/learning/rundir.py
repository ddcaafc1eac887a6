"""Run directories of the learning loops: config, checkpoints, a crash-safe log, results and plots.

Design notes: docs/learning.md, section `robot_rt.learning.rundir`.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from robot_rt._io import atomic_write_bytes, atomic_write_json


class RunDir:
    def __init__(self, path: str | Path, config: dict, *, resume: bool = False):
        self.path = Path(path)
        self.config = dict(config)
        config_path = self.path / "config.json"
        if config_path.exists():
            previous = json.loads(config_path.read_text())
            if not resume:
                raise FileExistsError(
                    f"run directory {self.path} already holds a run; pass resume=True (--resume) to continue it "
                    "or choose another --out"
                )
            changed = config_differences(previous, self.config, ignore=("resume",))
            if changed:
                raise ValueError(f"--resume: the run in {self.path} was started with other settings: {changed}")
        else:
            atomic_write_json(config_path, self.config)
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.path / "plots").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ log
    def log(self, **record) -> dict:
        record = {"wall_time_unix_s": time.time(), **record}
        line = json.dumps(record, default=_to_builtin) + "\n"
        with open(self.path / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return record

    def read_log(self) -> list[dict]:
        return read_log(self.path / "log.jsonl")

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, name: str, state: dict) -> Path:
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = atomic_write_bytes(self.path / "checkpoints" / f"{name}.pt", buffer.getvalue())
        atomic_write_json(self.path / "checkpoints" / "latest.json", {"name": name, "path": path.name})
        return path

    def load_checkpoint(self, name: str | None = None) -> dict | None:
        """The checkpoint `name`, or the latest one (None when the run has none yet)."""

        if name is None:
            latest = self.path / "checkpoints" / "latest.json"
            if not latest.exists():
                return None
            name = json.loads(latest.read_text())["name"]
        path = self.path / "checkpoints" / f"{name}.pt"
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {name!r} not found: {path}")
        return load_checkpoint_file(path)

    # ------------------------------------------------------------------ results
    def write_results(self, results: dict, name: str = "results.json") -> Path:
        return atomic_write_json(self.path / name, json.loads(json.dumps(results, default=_to_builtin)))

    def plot_path(self, name: str) -> Path:
        return self.path / "plots" / name


def load_checkpoint_file(path: str | Path) -> dict:
    """Reads a training checkpoint without running code from it: ``torch.load(weights_only=True)`` with NumPy's array
    reconstruction allowed (trainers keep NumPy arrays and generator states). A checkpoint that names any other
    global (a pickled class or function: what a tampered file would use to run code) is refused with
    ``pickle.UnpicklingError``, before anything of it is used."""
    import numpy as np
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file {path}")
    numeric = (np.bool_, np.integer, np.floating, np.complexfloating)
    dtype_classes = [type(np.dtype(t)) for t in np.sctypeDict.values() if issubclass(t, numeric)]
    numpy_arrays = [
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
        np.ndarray,
        np.dtype,
        *sorted(set(dtype_classes), key=str),
    ]
    with torch.serialization.safe_globals(numpy_arrays):
        state = torch.load(path, map_location="cpu", weights_only=True)
    return _plain_numeric_arrays(state, path)


def _plain_numeric_arrays(obj, path: Path):
    """`obj` with every NumPy array rebuilt from its plain numeric dtype: the allowlisted dtype classes can be unpickled
    with any state (an object dtype, object-reference flags on a float64), which a training state never holds."""
    import numpy as np

    if isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.kind not in "biufc" or obj.dtype.hasobject or obj.dtype.fields is not None:
            raise ValueError(f"checkpoint {path}: holds an array of dtype {obj.dtype.str!r}; expected plain numbers")
        clean = np.dtype(obj.dtype.str)
        return np.array(obj, dtype=clean, copy=True) if isinstance(obj, np.ndarray) else clean.type(obj)
    if isinstance(obj, dict):
        return {k: _plain_numeric_arrays(v, path) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        out = [_plain_numeric_arrays(v, path) for v in obj]
        return out if isinstance(obj, list) else tuple(out)
    return obj


def read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line after a crash
    return records


def config_differences(a: dict, b: dict, ignore=()) -> list[str]:
    """The keys (sorted) whose values differ between two run configs, a key missing on one side included, leaving
    out `ignore`: what --resume and the tools that pool seeds check before they combine runs."""
    missing = object()  # a key on one side only differs, whatever its value (None included)
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k, missing) != b.get(k, missing))


def _to_builtin(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
