"""Atomic writers of both packages: content, no temp file left, the mode a plain open() would give."""

from __future__ import annotations

import os
import stat

import pytest

import percept_fast._io as pf_io
import robot_rt._io as rr_io


@pytest.mark.parametrize("write", [pf_io.atomic_write_bytes, rr_io.atomic_write_bytes])
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_content_and_mode(tmp_path, write, umask):
    old = os.umask(umask)
    try:
        path = write(tmp_path / "sub" / "out.bin", b"payload")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"payload"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("write", [pf_io.atomic_write_bytes, rr_io.atomic_write_bytes])
def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, write):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
