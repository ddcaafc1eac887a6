"""Run log: crash safety (kill -9 of the writing process), truncation/corruption handling, format."""

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest

from robot_rt.control.runlog import CHUNK_HEADER, FILE_HEADER, read_runlog

_control = pytest.importorskip("robot_rt._control")

CHILD = textwrap.dedent(
    """
    import sys, time, math
    import numpy as np
    from robot_rt.control.loop import RealTimeLoop
    from robot_rt.robot import load_robot
    robot = load_robot()
    def policy(obs):
        q = robot.home.copy()
        q[0] = 0.3 * math.sin(time.monotonic() * 6)
        return q
    loop = RealTimeLoop(robot, policy=policy, log_path=sys.argv[1], log_fsync_interval_s=0.2)
    loop.start()
    print("started", flush=True)
    time.sleep(60)  # killed long before
    """
)


def _chunk_count(path):
    try:
        data = open(path, "rb").read()
    except FileNotFoundError:
        return 0
    offset, n = FILE_HEADER.size, 0
    while offset + CHUNK_HEADER.size <= len(data):
        _, nbytes, *_ = CHUNK_HEADER.unpack_from(data, offset)
        offset += CHUNK_HEADER.size + nbytes
        if offset > len(data):
            break
        n += 1
    return n


def test_log_survives_kill_9(tmp_path):
    path = tmp_path / "crash.rrlog"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while _chunk_count(path) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    log = read_runlog(path)
    assert log.chunks >= 8
    assert not log.clean  # no loop_stop event: the process died
    assert log.meta["robot"] == "gantry_arm_8dof" and log.meta["dof"] == 8
    ticks = log.ticks["tick"].astype(np.int64)
    assert len(ticks) > 100
    assert ticks[0] == 1 and np.all(np.diff(ticks) == 1), "every tick up to the last complete chunk"
    assert np.all(np.isfinite(log.ticks["command_position"]))
    assert log.truncated_bytes >= 0 and log.stop_reason in ("end of file", "incomplete chunk")


def _clean_log(tmp_path):
    from robot_rt.control.loop import RealTimeLoop

    path = tmp_path / "ok.rrlog"
    with RealTimeLoop(log_path=path):
        time.sleep(0.3)
    return path


def test_clean_log_and_partial_tail(tmp_path):
    path = _clean_log(tmp_path)
    full = read_runlog(path)
    assert full.clean and full.truncated_bytes == 0 and full.stop_reason == "end of file"
    data = path.read_bytes()
    # a crash in the middle of a chunk write leaves a partial chunk: it is ignored
    partial = tmp_path / "partial.rrlog"
    extra = struct.pack("<IIIIQ", 0x43545252, 1000, 0, 3, 99) + b"\x00" * 100
    partial.write_bytes(data + extra)
    log = read_runlog(partial)
    assert log.stop_reason == "incomplete chunk" and log.truncated_bytes == len(extra)
    assert len(log.ticks) == len(full.ticks)
    # cutting the file anywhere keeps every chunk before the cut
    for cut in (len(data) - 1, len(data) // 2, FILE_HEADER.size + 5):
        cut_path = tmp_path / f"cut{cut}.rrlog"
        cut_path.write_bytes(data[:cut])
        part = read_runlog(cut_path)
        assert part.chunks < full.chunks
        n = len(part.ticks)
        if n:
            np.testing.assert_array_equal(part.ticks["tick"], full.ticks["tick"][:n])
            np.testing.assert_array_equal(part.ticks["command_position"], full.ticks["command_position"][:n])


def test_corrupt_chunk_stops_reading(tmp_path):
    path = _clean_log(tmp_path)
    data = bytearray(path.read_bytes())
    full = read_runlog(path)
    # flip a byte in the payload of the third chunk
    offset = FILE_HEADER.size
    for _ in range(2):
        _, nbytes, *_ = CHUNK_HEADER.unpack_from(data, offset)
        offset += CHUNK_HEADER.size + nbytes
    data[offset + CHUNK_HEADER.size + 3] ^= 0xFF
    bad = tmp_path / "bad.rrlog"
    bad.write_bytes(bytes(data))
    log = read_runlog(bad)
    assert log.stop_reason == "bad checksum" and log.chunks == 2
    assert len(log.ticks) < len(full.ticks)


def test_chunk_checksums_are_zlib_crc32(tmp_path):
    data = _clean_log(tmp_path).read_bytes()
    magic, version, size = FILE_HEADER.unpack_from(data, 0)
    assert magic == b"RRTLOG01" and version == 1 and size == 16
    offset = size
    while offset < len(data):
        cmagic, nbytes, crc, _, _ = CHUNK_HEADER.unpack_from(data, offset)
        assert cmagic == 0x43545252
        payload = data[offset + CHUNK_HEADER.size : offset + CHUNK_HEADER.size + nbytes]
        assert zlib.crc32(payload) == crc
        offset += CHUNK_HEADER.size + nbytes
    assert offset == len(data)


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        read_runlog(tmp_path / "missing.rrlog")
    p = tmp_path / "junk.rrlog"
    p.write_bytes(b"not a log at all")
    with pytest.raises(ValueError, match="not a robot_rt run log"):
        read_runlog(p)
