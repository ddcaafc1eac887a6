"""Atomic file writes: a temp file in the target's directory, fsync, then os.replace (never half-written)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def _default_file_mode() -> int:
    """0o666 minus the process umask: what open() would give a new file (mkstemp's own is 0o600)."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Writes `data` to a temporary file next to `path`, fsyncs it and renames it over `path` (readers see the old or
    the new file, never half of one). `mode`: the file's permissions (default: 0o666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), _default_file_mode() if mode is None else mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def read_json_file(path: str | Path, what: str):
    """The JSON value in the file `path` (the argument is called `path`); FileNotFoundError naming `what` (e.g.
    'robot description') when there is no such file, ValueError when it is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: {what} file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"path: {path} is not valid JSON ({err})") from err


@contextlib.contextmanager
def atomic_output_path(path: str | Path):
    """Yields a temp path beside `path` for a writer that takes a file name (or opens it itself); when the block
    ends without an exception the file is fsynced and renamed onto `path`, otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fchmod(handle.fileno(), _default_file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path):
    """A binary file object whose content replaces `path` atomically when the block ends without an exception."""
    with atomic_output_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
