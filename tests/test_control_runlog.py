"""Run log: crash safety (kill -9 of the writing process), damage detection and resynchronisation, the lost-tick
report, the format (every chunk header field under a CRC), version-1 files, deadline-miss ticks, and a fuzzed
reader that never raises anything but RunLogError."""

import functools
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from helpers.robot import wait_ticks, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_rt.control.runlog import (
    CHUNK_HEADER,
    CHUNK_HEADER_V1,
    CHUNK_MAGIC,
    FILE_HEADER,
    FILE_HEADER_V1,
    FILE_MAGIC,
    RunLogError,
    read_runlog,
)

_control = pytest.importorskip("robot_rt._control")

CHILD = textwrap.dedent(
    """
    import math, signal, sys, time
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
    signal.pause()  # until killed
    """
)


def chunk_spans(data: bytes) -> list[tuple[int, int]]:
    """(offset, end) of every chunk of an intact version-2 log, walking the headers (payload_bytes)."""
    spans, offset = [], FILE_HEADER.size
    while offset + CHUNK_HEADER.size <= len(data):
        nbytes = CHUNK_HEADER.unpack_from(data, offset)[1]
        end = offset + CHUNK_HEADER.size + nbytes
        if end > len(data):
            break
        spans.append((offset, end))
        offset = end
    return spans


def reseal(data: bytearray, offset: int) -> None:
    """Recomputes both CRCs of the chunk at `offset` (a forger's edit, or a writer bug, with valid checksums)."""
    _, nbytes, *_ = CHUNK_HEADER.unpack_from(data, offset)
    start = offset + CHUNK_HEADER.size
    chunk_crc = zlib.crc32(bytes(data[start : start + nbytes]), zlib.crc32(bytes(data[offset : offset + 24])))
    struct.pack_into("<I", data, offset + 24, chunk_crc)
    struct.pack_into("<I", data, offset + 28, zlib.crc32(bytes(data[offset : offset + 28])))


def test_log_survives_kill_9(tmp_path):
    path = tmp_path / "crash.rrlog"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        wait_until(lambda: path.exists() and len(chunk_spans(path.read_bytes())) >= 8, what="8 chunks in the log")
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
    assert log.damage == []  # a crash is not damage: at most a truncated tail
    assert log.meta["robot"] == "gantry_arm_8dof" and log.meta["dof"] == 8
    ticks = log.ticks["tick"].astype(np.int64)
    assert len(ticks) > 100
    assert ticks[0] == 1 and np.all(np.diff(ticks) == 1), "every tick up to the last complete chunk"
    assert np.all(np.isfinite(log.ticks["command_position"]))
    assert log.stop_reason in ("end of file", "incomplete chunk")


@functools.cache
def _clean_log_bytes(rate_hz: float = 1000.0, seconds: float = 0.3, flush_s: float = 0.05) -> bytes:
    import tempfile
    from pathlib import Path

    from robot_rt.control.loop import RealTimeLoop

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ok.rrlog"
        with RealTimeLoop(log_path=path, rate_hz=rate_hz, log_flush_interval_s=flush_s) as loop:
            wait_ticks(loop, round(seconds * rate_hz))
        return path.read_bytes()


def _clean_log(tmp_path, **kwargs):
    path = tmp_path / "ok.rrlog"
    path.write_bytes(_clean_log_bytes(**kwargs))
    return path


def test_format_every_chunk_header_field_is_under_a_crc(tmp_path):
    data = _clean_log(tmp_path).read_bytes()
    magic, version, size, reserved, crc = FILE_HEADER.unpack_from(data, 0)
    assert (magic, version, size, reserved) == (FILE_MAGIC, 2, 24, 0)
    assert crc == zlib.crc32(data[:20])
    spans = chunk_spans(data)
    assert spans[-1][1] == len(data)
    for seq, (offset, end) in enumerate(spans):
        sync, nbytes, count, flags, chunk_seq, chunk_crc, header_crc = CHUNK_HEADER.unpack_from(data, offset)
        assert (sync, flags, chunk_seq) == (CHUNK_MAGIC, 0, seq)
        assert data[offset : offset + 4] == b"RRTC"
        assert header_crc == zlib.crc32(data[offset : offset + 28])
        assert chunk_crc == zlib.crc32(data[offset : offset + 24] + data[offset + 32 : end])
        # the record count is what the records are
        pos, records = offset + 32, 0
        while pos < end:
            pos += 8 + struct.unpack_from("<I", data, pos + 4)[0]
            records += 1
        assert pos == end and records == count
    # each header field, changed alone, is caught by the header CRC: the chunk is skipped, nothing else is lost
    offset = spans[2][0]
    for field_offset in (0, 4, 8, 12, 16, 20, 24, 28):
        bad = bytearray(data)
        bad[offset + field_offset] ^= 0x01
        path = tmp_path / f"field{field_offset}.rrlog"
        path.write_bytes(bytes(bad))
        log = read_runlog(path)
        reason = "sync marker" if field_offset == 0 else "header checksum"
        assert len(log.damage) == 1 and reason in log.damage[0].reason and log.damage[0].offset == offset
        assert log.chunks == len(spans) - 1


def test_clean_log_and_partial_tail(tmp_path):
    path = _clean_log(tmp_path)
    full = read_runlog(path)
    assert full.clean and full.truncated_bytes == 0 and full.stop_reason == "end of file" and full.damage == []
    assert full.version == 2 and full.lost_ticks == 0 and full.dropped_tick_ranges == []
    data = path.read_bytes()
    spans = chunk_spans(data)
    # a crash in the middle of a chunk write leaves a partial chunk: a truncated tail, not damage
    last_offset, last_end = spans[-1]
    for cut in (last_offset + 5, last_offset + CHUNK_HEADER.size, last_end - 1):
        part = tmp_path / f"cut{cut}.rrlog"
        part.write_bytes(data[:cut])
        log = read_runlog(part)
        assert log.stop_reason == "incomplete chunk" and log.truncated_bytes == cut - last_offset
        assert log.damage == [] and not log.clean
        assert log.chunks == len(spans) - 1
    # cutting the file anywhere keeps every chunk before the cut
    for cut in (len(data) - 1, len(data) // 2, FILE_HEADER.size + 5):
        cut_path = tmp_path / f"cut{cut}.rrlog"
        cut_path.write_bytes(data[:cut])
        part = read_runlog(cut_path)
        assert part.chunks < full.chunks and part.damage == []
        n = len(part.ticks)
        if n:
            np.testing.assert_array_equal(part.ticks["tick"], full.ticks["tick"][:n])
            np.testing.assert_array_equal(part.ticks["command_position"], full.ticks["command_position"][:n])


def _ticks_of_chunk(data: bytes, span: tuple[int, int]) -> list[int]:
    ticks, pos = [], span[0] + CHUNK_HEADER.size
    while pos < span[1]:
        rtype, _, body = struct.unpack_from("<HHI", data, pos)
        if rtype == 2:
            ticks.append(struct.unpack_from("<Q", data, pos + 8 + 24)[0])
        pos += 8 + body
    return ticks


def _check_single_chunk_loss(tmp_path, data: bytes, bad: bytes, index: int, reason: str):
    full = read_runlog(_clean_log(tmp_path))
    path = tmp_path / "bad.rrlog"
    path.write_bytes(bad)
    log = read_runlog(path)
    spans = chunk_spans(data)
    lost = _ticks_of_chunk(data, spans[index])
    assert lost, "the damaged chunk held ticks"
    assert log.chunks == len(spans) - 1  # resynchronised: every other chunk read
    assert len(log.damage) == 1
    d = log.damage[0]
    assert reason in d.reason
    assert (
        d.offset == spans[index][0] and d.skipped_chunks == 1 and d.skipped_bytes == spans[index][1] - spans[index][0]
    )
    assert (d.first_lost_tick, d.last_lost_tick) == (lost[0], lost[-1]) and d.lost_ticks == len(lost)
    assert log.lost_tick_ranges == [(lost[0], lost[-1])] and log.lost_ticks == len(lost)
    keep = ~np.isin(full.ticks["tick"], lost)
    np.testing.assert_array_equal(log.ticks, full.ticks[keep])
    assert not log.clean
    return log


@pytest.mark.parametrize("where", ["payload", "header"])
def test_flipped_byte_loses_one_chunk_and_names_its_ticks(tmp_path, where):
    data = _clean_log(tmp_path).read_bytes()
    spans = chunk_spans(data)
    bad = bytearray(data)
    at = spans[3][0] + (CHUNK_HEADER.size + 100 if where == "payload" else 17)
    bad[at] ^= 0x40
    reason = "bad chunk checksum" if where == "payload" else "bad chunk header checksum"
    _check_single_chunk_loss(tmp_path, data, bytes(bad), 3, reason)


@pytest.mark.parametrize("change", ["decrement", "x1000", "minus_one", "forged_decrement"])
def test_record_count_damage_is_detected_and_replay_reports_it(tmp_path, change, capsys):
    """The issue's cases: a decremented record count (silently dropped a tick) and x1000 (struct.error)."""
    data = _clean_log(tmp_path).read_bytes()
    spans = chunk_spans(data)
    bad = bytearray(data)
    offset = spans[2][0]
    count = struct.unpack_from("<I", bad, offset + 8)[0]
    new = {"decrement": count - 1, "x1000": count * 1000, "minus_one": 0xFFFFFFFF, "forged_decrement": count - 1}
    struct.pack_into("<I", bad, offset + 8, new[change])
    reason = "bad chunk header checksum"
    if change == "forged_decrement":  # CRCs recomputed: the record framing still catches it
        reseal(bad, offset)
        reason = "bad record framing"
    log = _check_single_chunk_loss(tmp_path, data, bytes(bad), 2, reason)

    from robot_rt.cli import main

    rc = main(["replay", str(tmp_path / "bad.rrlog"), "--json", "--no-plots"])
    captured = capsys.readouterr()
    assert rc == 3  # read, with damage
    summary = json.loads(captured.out)
    assert summary["lost_ticks"] == log.lost_ticks and summary["lost_tick_ranges"] == [list(log.lost_tick_ranges[0])]
    assert f"offset {offset}" in captured.err and "Traceback" not in captured.err


def test_duplicated_removed_and_swapped_chunks(tmp_path):
    data = _clean_log(tmp_path).read_bytes()
    full = read_runlog(_clean_log(tmp_path))
    spans = chunk_spans(data)
    chunk = [data[a:b] for a, b in spans]
    head = data[: FILE_HEADER.size]
    # duplicated: skipped, no tick lost, the records read once
    dup = tmp_path / "dup.rrlog"
    dup.write_bytes(head + b"".join(chunk[:4] + [chunk[3]] + chunk[4:]))
    log = read_runlog(dup)
    np.testing.assert_array_equal(log.ticks, full.ticks)
    assert len(log.damage) == 1 and log.damage[0].duplicate_chunks == 1 and log.lost_ticks == 0
    # removed without a trace: the chunk sequence gap reports it
    removed = tmp_path / "removed.rrlog"
    removed.write_bytes(head + b"".join(chunk[:4] + chunk[5:]))
    log = read_runlog(removed)
    lost = _ticks_of_chunk(data, spans[4])
    assert len(log.damage) == 1 and log.damage[0].skipped_chunks == 1 and log.damage[0].skipped_bytes == 0
    assert "sequence gap" in log.damage[0].reason and log.lost_tick_ranges == [(lost[0], lost[-1])]
    # swapped: the later one is read, the earlier one (out of order) skipped and its ticks reported lost
    swapped = tmp_path / "swapped.rrlog"
    swapped.write_bytes(head + b"".join(chunk[:3] + [chunk[4], chunk[3]] + chunk[5:]))
    log = read_runlog(swapped)
    lost = _ticks_of_chunk(data, spans[3])
    assert log.lost_tick_ranges == [(lost[0], lost[-1])]
    assert not np.isin(lost, log.ticks["tick"]).any() and len(log.ticks) == len(full.ticks) - len(lost)


def test_damaged_tail_is_reported_through_the_end(tmp_path):
    data = _clean_log(tmp_path).read_bytes()
    spans = chunk_spans(data)
    # the last two chunks zero-filled (what a power loss can leave): ticks after the last good one are lost
    bad = data[: spans[-2][0]] + bytes(len(data) - spans[-2][0])
    path = tmp_path / "zeros.rrlog"
    path.write_bytes(bad)
    log = read_runlog(path)
    last_good = int(log.ticks["tick"][-1])
    assert len(log.damage) == 1 and log.damage[0].at_end
    assert log.lost_tick_ranges == [(last_good + 1, None)] and log.lost_ticks is None
    assert log.truncated_bytes == len(data) - spans[-2][0] and log.stop_reason.startswith("unreadable tail")


def _v1_from_v2(data: bytes) -> bytes:
    """The same log in the version-1 layout (16-byte file header; chunk header without its own CRC)."""
    out = bytearray(FILE_HEADER_V1.pack(FILE_MAGIC, 1, FILE_HEADER_V1.size))
    for offset, end in chunk_spans(data):
        _, nbytes, count, _, seq, _, _ = CHUNK_HEADER.unpack_from(data, offset)
        payload = data[offset + CHUNK_HEADER.size : end]
        out += CHUNK_HEADER_V1.pack(CHUNK_MAGIC, nbytes, zlib.crc32(payload), count, seq) + payload
    return bytes(out)


def test_version_1_logs_are_still_read(tmp_path):
    data = _clean_log(tmp_path).read_bytes()
    full = read_runlog(_clean_log(tmp_path))
    path = tmp_path / "v1.rrlog"
    v1 = _v1_from_v2(data)
    path.write_bytes(v1)
    log = read_runlog(path)
    assert log.version == 1 and log.clean and log.meta == full.meta
    np.testing.assert_array_equal(log.ticks, full.ticks)
    np.testing.assert_array_equal(log.events, full.events)
    # version 1 has no header CRC, but a wrong record count still fails the framing check and is resynchronised
    bad = bytearray(v1)
    second = FILE_HEADER_V1.size + CHUNK_HEADER_V1.size + CHUNK_HEADER_V1.unpack_from(v1, FILE_HEADER_V1.size)[1]
    third = second + CHUNK_HEADER_V1.size + CHUNK_HEADER_V1.unpack_from(v1, second)[1]
    struct.pack_into("<I", bad, third + 12, CHUNK_HEADER_V1.unpack_from(v1, third)[3] - 1)
    path.write_bytes(bytes(bad))
    log = read_runlog(path)
    assert len(log.damage) == 1 and log.damage[0].offset == third and log.damage[0].lost_ticks > 0
    assert len(log.ticks) == len(full.ticks) - log.damage[0].lost_ticks


def test_reader_errors_name_the_offset(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="path"):
        read_runlog(tmp_path / "missing.rrlog")
    data = _clean_log(tmp_path).read_bytes()
    cases = {
        "junk": (b"not a log at all", "not a robot_rt run log", 0),
        "short": (b"RRTL", "too short", 0),
        "version": (data[:8] + struct.pack("<I", 7) + data[12:], "version 7", 8),
        "header_crc": (data[:13] + b"\x01" + data[14:], "file header checksum", 20),
    }
    from robot_rt.cli import main

    for name, (content, message, offset) in cases.items():
        p = tmp_path / f"{name}.rrlog"
        p.write_bytes(content)
        with pytest.raises(RunLogError, match=message) as info:
            read_runlog(p)
        assert info.value.offset == offset and isinstance(info.value, ValueError)
        assert f"offset {offset}" in str(info.value)
        assert main(["replay", str(p), "--no-plots"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_replay_cli_on_a_damaged_log_prints_no_traceback(tmp_path):
    data = bytearray(_clean_log(tmp_path).read_bytes())
    spans = chunk_spans(bytes(data))
    struct.pack_into("<I", data, spans[2][0] + 8, 1000 * struct.unpack_from("<I", data, spans[2][0] + 8)[0])
    path = tmp_path / "x1000.rrlog"
    path.write_bytes(bytes(data))
    run = subprocess.run(
        [sys.executable, "-m", "robot_rt.cli", "replay", str(path), "--no-plots"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr and "struct.error" not in run.stderr
    assert f"offset {spans[2][0]}" in run.stderr and "lost" in run.stderr


# --------------------------------------------------------------------------- deadline misses
def test_deadline_miss_ticks_in_the_log_equal_the_live_counter(tmp_path):
    """A driver stalled on chosen ticks forces deadline misses; each is flagged on its own tick's record."""
    from robot_rt.control.loop import RealTimeLoop
    from robot_rt.logs.replay import summarize

    path = tmp_path / "miss.rrlog"
    loop = RealTimeLoop(log_path=path, rate_hz=500.0)
    stalls = 0
    with loop:
        for _ in range(4):
            wait_ticks(loop, 25)  # 50 ms of loop time (and the previous stalls have happened)
            loop.driver.inject_stall(2, 0.006)  # 3 periods: certainly past the next deadline
            stalls += 2
        wait_ticks(loop, 25)
    live = loop.counters()["deadline_misses"]
    log = read_runlog(path)
    assert log.clean
    ticks = log.ticks
    miss = (ticks["flags"] & int(log.meta["tick_flags"]["deadline_miss"])) != 0
    period_ns = 2_000_000
    # the flag is exactly the loop's definition: the tick's work ended after the next tick's deadline
    np.testing.assert_array_equal(miss, ticks["done_ns"] > ticks["deadline_ns"] + period_ns)
    stalled = (ticks["done_ns"] - ticks["wake_ns"]) >= 6_000_000  # (plus any tick the machine preempted as long)
    assert stalled.sum() >= stalls and np.all(miss[stalled])
    assert summarize(log)["deadline_miss_ticks"] == live == int(miss.sum()) >= stalls
    events = [e for e in log.event_list() if e[2] == "deadline_miss"]
    assert [e[1] for e in events] == ticks["tick"][miss].tolist()  # the event carries its own tick


# --------------------------------------------------------------------------- fuzzing
def _small_log() -> bytes:
    return _clean_log_bytes(rate_hz=200.0, seconds=0.4, flush_s=0.01)


def _mutate(data: bytes, draw) -> bytes:
    spans = chunk_spans(data)
    kind = draw(
        st.sampled_from(["flip", "flips", "truncate", "duplicate", "remove", "count", "garbage", "swap", "zero_tail"])
    )
    out = bytearray(data)
    if kind in ("flip", "flips"):
        for _ in range(1 if kind == "flip" else draw(st.integers(2, 6))):
            at = draw(st.integers(0, len(out) - 1))
            out[at] ^= draw(st.integers(1, 255))
        return bytes(out)
    if kind == "truncate":
        return bytes(out[: draw(st.integers(0, len(out) - 1))])
    if kind == "zero_tail":
        at = draw(st.integers(FILE_HEADER.size, len(out) - 1))
        return bytes(out[:at]) + bytes(len(out) - at)
    i = draw(st.integers(0, len(spans) - 1))
    a, b = spans[i]
    if kind == "duplicate":
        j = draw(st.integers(0, len(spans) - 1))
        return bytes(out[: spans[j][1]]) + data[a:b] + bytes(out[spans[j][1] :])
    if kind == "remove":
        return bytes(out[:a]) + bytes(out[b:])
    if kind == "swap":
        j = draw(st.integers(0, len(spans) - 1))
        lo, hi = sorted((spans[i], spans[j]))
        if lo == hi:
            return data
        return data[: lo[0]] + data[hi[0] : hi[1]] + data[lo[1] : hi[0]] + data[lo[0] : lo[1]] + data[hi[1] :]
    if kind == "garbage":
        junk = draw(st.binary(min_size=1, max_size=200))
        return bytes(out[:a]) + junk + bytes(out[a:])
    # count: x1000, -1 (0xFFFFFFFF), +-1, 0; resealed (CRCs recomputed) or not
    count = struct.unpack_from("<I", out, a + 8)[0]
    new = draw(st.sampled_from([count * 1000, 0xFFFFFFFF, count - 1, count + 1, 0]))
    struct.pack_into("<I", out, a + 8, new & 0xFFFFFFFF)
    if draw(st.booleans()):
        reseal(out, a)
    return bytes(out)


def _records(log) -> set:
    return {r.tobytes() for r in log.ticks}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzzed_logs_parse_into_a_subset_with_an_exact_lost_tick_report_or_raise_runlogerror(tmp_path_factory, data):
    original = _small_log()
    path = tmp_path_factory.mktemp("fuzz") / "f.rrlog"
    path.write_bytes(original)
    full = read_runlog(path)
    assert len(full.ticks) > 30 and full.chunks > 10
    mutated = _mutate(original, data.draw)
    path.write_bytes(mutated)
    try:
        log = read_runlog(path)
    except RunLogError as err:
        assert 0 <= err.offset < FILE_HEADER.size  # only a damaged file header is fatal
        return
    # a subset of the written records, each once
    numbers = log.ticks["tick"].astype(np.int64)
    assert np.all(np.diff(numbers) > 0)
    assert _records(log) <= _records(full)
    assert len(log.events) <= len(full.events) and {e.tobytes() for e in log.events} <= {
        e.tobytes() for e in full.events
    }
    assert log.dropped_tick_ranges == []  # the writer dropped nothing: every gap is explained by damage
    # the report: every tick missing is in a reported range (or in a crash tail), and no range names a tick read
    everything = set(full.ticks["tick"].tolist())
    missing = everything - set(numbers.tolist())
    last_read = int(numbers[-1]) if len(numbers) else 0
    for first, last in log.lost_tick_ranges:
        assert first is not None
        read_in_range = numbers[(numbers >= first) & ((numbers <= last) if last is not None else True)]
        assert len(read_in_range) == 0, (first, last)
        if last is not None:
            assert set(range(first, last + 1)) <= everything  # never reports ticks that were not written
    for t in missing:
        covered = any(first <= t and (last is None or t <= last) for first, last in log.lost_tick_ranges)
        # a log cut short (crash tail, or cut at a chunk boundary: then its loop_stop event is missing) cannot
        # know how many ticks followed its end
        cut_short = log.stop_reason == "incomplete chunk" or "loop_stop" not in {e[2] for e in log.event_list()}
        crash_tail = cut_short and t > last_read
        assert covered or crash_tail, (t, log.damage, log.stop_reason)
    if mutated != original and len(mutated) == len(original) and not log.damage:
        # an in-place edit that was not detected must not have changed anything that was read
        assert _records(log) == _records(full)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_log_that_cannot_be_written_is_refused_at_start():
    """A run log whose header cannot be written (here a full disk: /dev/full fails every write with ENOSPC) is an
    error when the loop starts, naming log_path, not a run whose record of its stops silently goes nowhere."""
    from robot_rt.control.loop import RealTimeLoop
    from robot_rt.robot import load_robot

    loop = RealTimeLoop(load_robot(), log_path="/dev/full")
    with pytest.raises(RuntimeError, match="log_path.*No space left"):
        loop.start()
    assert not loop.running


def test_a_log_device_that_stops_taking_data_does_not_hang_stop(tmp_path):
    """A run log on a pipe whose reader never reads (a hung mount behaves alike): the writes fail (counted) instead
    of blocking the writer thread, so RealTimeLoop.stop() still returns (before, it joined a writer stuck in write()
    for ever, and neither Ctrl-C nor SIGTERM could end `robot-rt run`)."""
    import threading

    from robot_rt.control.loop import RealTimeLoop
    from robot_rt.control.policies import Sine
    from robot_rt.robot import load_robot

    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read
    try:
        robot = load_robot()
        loop = RealTimeLoop(robot, policy=Sine(robot), log_path=fifo)
        loop.start()
        wait_until(lambda: loop.counters()["log"]["write_errors"] > 0, timeout_s=20, what="the pipe to fill up")
        stopped = threading.Event()
        threading.Thread(target=lambda: (loop.stop(), stopped.set()), daemon=True).start()
        assert stopped.wait(10.0), "RealTimeLoop.stop() hung on the blocked log"
        assert loop.lifecycle == "stopped"
    finally:
        os.close(reader)


def test_a_run_whose_log_is_incomplete_does_not_exit_0(tmp_path):
    """`robot-rt run` that ended as planned but whose run log lost writes (a pipe nobody reads stands in for a full
    disk or a hung device) exits 2 and says so in its summary: the record of what the robot was sent has holes
    (before, the run exited 0 and only printed it)."""
    from robot_rt.cli import main

    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read
    summary_path = tmp_path / "summary.json"
    try:
        argv = ["run", "--robot", "sim", "--duration", "1.5", "--log", str(fifo), "--no-status"]
        code = main([*argv, "--summary", str(summary_path), "--recover", "never"])
    finally:
        os.close(reader)
    summary = json.loads(summary_path.read_text())
    assert summary["log_incomplete"] and summary["exit_code"] == 0  # the run itself ended as planned
    assert code == 2
