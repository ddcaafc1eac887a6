"""Reader of the crash-safe run log written by the control loop (format: docs/runlog.md).

A version-2 file is a 24-byte header followed by chunks, each `header (32 bytes) + payload`. Every header field
is under a CRC-32 (zlib): `header_crc` covers the header itself (so its payload length is trusted before the
payload is read) and `chunk_crc` the header fields and the payload. `read_runlog` never stops at a bad chunk: it
scans forward for the next chunk sync marker whose CRCs hold (resynchronisation) and reports what it skipped in
`RunLog.damage`: the file offset, the bytes and chunks skipped and exactly which ticks were lost (tick numbers
count up by one per loop tick from 1, so the ticks lost are those between the last good tick before and the
first good tick after). Duplicated or out-of-order chunks (sequence number not increasing) are skipped and
reported too, so the ticks read are always a subset of those written, each once. After a crash (`kill -9`) the
last chunk may be partial: it is reported as a truncated tail (`RunLog.truncated_bytes`), not as damage to the
ticks before it. A file that is not a readable run log raises `RunLogError` (a ValueError naming the byte
offset); no other exception escapes for any content of the file. Version-1 files (no header CRCs) are read
with the same resynchronisation; their chunk header is checked by the payload CRC and the record framing.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rt._native import native

FILE_MAGIC = b"RRTLOG01"
VERSION = 2  # the version this module's writer (csrc/robot_rt/control/runlog.cpp) produces
FILE_HEADER = struct.Struct("<8sIIII")  # magic, version, header size (24), reserved (0), crc32 of the 20 bytes before
CHUNK_HEADER = struct.Struct(
    "<IIIIQII"
)  # sync, payload bytes, record count, flags (0), chunk seq, chunk crc, header crc
CHUNK_MAGIC = 0x43545252  # b"RRTC": the chunk sync marker
CHUNK_SYNC = struct.pack("<I", CHUNK_MAGIC)
FILE_HEADER_V1 = struct.Struct("<8sII")  # magic, version, header size (16)
CHUNK_HEADER_V1 = struct.Struct("<IIIIQ")  # magic, payload bytes, crc32(payload), record count, chunk seq
MAX_CHUNK_PAYLOAD = 64 << 20  # the writer's chunks hold about 256 KiB
RECORD_HEADER = struct.Struct("<HHI")  # type, reserved, body bytes
RECORD_META, RECORD_TICK, RECORD_BALL, RECORD_EVENT = 1, 2, 3, 4
MAX_DOF = 16
TICK_FIXED = struct.Struct("<qqqQIi")  # deadline_ns, wake_ns, done_ns, tick, flags, dof
BALL_DTYPE = np.dtype(
    [
        ("tick", "<u8"),
        ("stamp_ns", "<i8"),
        ("camera_id", "<u4"),
        ("frame", "<u4"),
        ("position_m", "<f8", (3,)),
        ("confidence", "<f8"),
    ]
)
EVENT_DTYPE = np.dtype([("stamp_ns", "<i8"), ("tick", "<u8"), ("code", "<i4"), ("joint", "<i4"), ("value", "<f8")])
TICK_ARRAYS = (
    "measured_position",
    "measured_velocity",
    "target_position",
    "command_position",
    "command_velocity",
    "command_acceleration",
)


class RunLogError(ValueError):
    """The file is not a readable run log. `offset` is the byte offset of the problem, `path` the file."""

    def __init__(self, path: str | Path, offset: int, message: str):
        self.path = str(path)
        self.offset = int(offset)
        super().__init__(f"path: run log {path}: at byte offset {offset}: {message}")


@dataclass(frozen=True)
class Damage:
    """One stretch of the log that could not be read (or a gap in the chunk sequence) and the ticks it cost.

    Ticks are numbered from 1, one per loop tick, so the lost ticks are exactly `first_lost_tick` ..
    `last_lost_tick` (inclusive): those between the last tick read before the damage and the first read after.
    `last_lost_tick` is None when nothing was read after the damage (lost through the end of the run, count
    unknown); both are None when no tick was lost (e.g. a duplicated chunk).
    """

    offset: int  # file offset where the damage starts
    skipped_bytes: int  # bytes skipped there (0 for a chunk missing without a trace)
    skipped_chunks: int | None  # chunk sequence numbers missing there (None: unknown, at the end of the file)
    duplicate_chunks: int  # intact chunks skipped because their sequence number did not increase
    reason: str  # e.g. 'bad chunk header checksum', 'bad chunk checksum', 'bad chunk sync marker', ...
    first_lost_tick: int | None
    last_lost_tick: int | None
    at_end: bool  # nothing readable follows (an unreadable or truncated tail)

    @property
    def lost_ticks(self) -> int | None:
        """Number of ticks lost here (None: unknown, lost through the end of the run)."""
        if self.first_lost_tick is None:
            return 0
        return None if self.last_lost_tick is None else self.last_lost_tick - self.first_lost_tick + 1

    def describe(self) -> str:
        if self.first_lost_tick is None:
            ticks = "no tick lost"
        elif self.last_lost_tick is None:
            ticks = f"ticks {self.first_lost_tick}.. lost (through the end of the run)"
        else:
            ticks = f"ticks {self.first_lost_tick}..{self.last_lost_tick} lost ({self.lost_ticks})"
        chunks = "?" if self.skipped_chunks is None else str(self.skipped_chunks)
        extra = f", {self.duplicate_chunks} duplicate chunk(s) skipped" if self.duplicate_chunks else ""
        return (
            f"offset {self.offset}: {self.reason}: {self.skipped_bytes} bytes, {chunks} chunk(s) skipped{extra}; "
            f"{ticks}"
        )


def tick_dtype(dof: int) -> np.dtype:
    fields = [
        ("deadline_ns", "<i8"),
        ("wake_ns", "<i8"),
        ("done_ns", "<i8"),
        ("tick", "<u8"),
        ("flags", "<u4"),
        ("dof", "<i4"),
    ]
    fields += [(name, "<f8", (dof,)) for name in TICK_ARRAYS]
    return np.dtype(fields)


@dataclass
class RunLog:
    path: str
    version: int
    meta: dict
    ticks: np.ndarray  # structured array, fields of tick_dtype(dof)
    balls: np.ndarray  # structured array, BALL_DTYPE
    events: np.ndarray  # structured array, EVENT_DTYPE
    chunks: int  # intact chunks read
    file_bytes: int
    truncated_bytes: int  # bytes after the last intact chunk (0 for a cleanly closed log)
    stop_reason: str  # how the file ends: 'end of file' | 'incomplete chunk' (crash tail) | 'unreadable tail: ...'
    event_names: dict = field(default_factory=dict)
    damage: list[Damage] = field(default_factory=list)  # unreadable stretches and chunk-sequence gaps, file order
    dropped_tick_ranges: list[tuple[int, int]] = field(default_factory=list)  # gaps in intact chunks (ring full)

    @property
    def lost_tick_ranges(self) -> list[tuple[int, int | None]]:
        """Ticks lost to damage, as inclusive (first, last) ranges; last None = through the end of the run."""
        return [(d.first_lost_tick, d.last_lost_tick) for d in self.damage if d.first_lost_tick is not None]

    @property
    def lost_ticks(self) -> int | None:
        """Ticks lost to damage (None when some were lost through the end of the run: count unknown)."""
        counts = [d.lost_ticks for d in self.damage]
        return None if any(c is None for c in counts) else sum(counts)

    @property
    def skipped_bytes(self) -> int:
        return sum(d.skipped_bytes for d in self.damage)

    @property
    def dof(self) -> int:
        return int(self.meta.get("dof", self.ticks["dof"][0] if len(self.ticks) else 0))

    @property
    def clean(self) -> bool:
        """True when the log is intact and ends at a chunk boundary with the loop's stop event (orderly shutdown)."""
        stop = self.event_names.get("loop_stop")
        return (
            self.truncated_bytes == 0
            and not self.damage
            and stop is not None
            and bool(np.any(self.events["code"] == stop))
        )

    def event_list(self) -> list[tuple[int, int, str, int, float]]:
        """Events as (stamp_ns, tick, name, joint, value)."""
        names = {v: k for k, v in self.event_names.items()}
        return [
            (
                int(e["stamp_ns"]),
                int(e["tick"]),
                names.get(int(e["code"]), f"code{int(e['code'])}"),
                int(e["joint"]),
                float(e["value"]),
            )
            for e in self.events
        ]


def _default_event_names() -> dict:
    control = native("_control")  # reading a log does not need the native module
    return {} if control is None else dict(control.EVENT_CODES)


@dataclass
class _Chunk:
    offset: int
    end: int
    seq: int
    records: list[tuple[int, int, int]]  # (type, body offset, body bytes)
    meta: dict | None
    first_tick: int | None
    last_tick: int | None


class _Bad(Exception):
    """A chunk that fails a check (internal: turned into Damage by the reader)."""

    def __init__(self, reason: str, skip_to: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.skip_to = skip_to  # where the next chunk starts when the header is trusted


class _Truncated(Exception):
    """The file ends inside this chunk (a partial last chunk: crash tail)."""


def _frame_records(data: bytes, start: int, end: int, count: int) -> tuple[list, dict | None, int | None, int | None]:
    """Splits a payload into its records, checking that they exactly fill it and that each body fits its type."""
    records = []
    meta = None
    first_tick = last_tick = None
    pos = start
    for _ in range(count):
        if pos + RECORD_HEADER.size > end:
            raise _Bad("bad record framing: fewer records than the chunk's record count", end)
        rtype, reserved, body = RECORD_HEADER.unpack_from(data, pos)
        at = pos + RECORD_HEADER.size
        if reserved != 0 or at + body > end:
            raise _Bad("bad record framing: record runs past the chunk", end)
        if rtype == RECORD_TICK:
            if body < TICK_FIXED.size:
                raise _Bad("bad record framing: short tick record", end)
            tick, _flags, dof = struct.unpack_from("<QIi", data, at + 24)
            if not 1 <= dof <= MAX_DOF or body != TICK_FIXED.size + 8 * len(TICK_ARRAYS) * dof:
                raise _Bad("bad record framing: tick record size does not match its dof", end)
            if last_tick is not None and tick <= last_tick:
                raise _Bad("bad record framing: tick numbers not increasing", end)
            first_tick = tick if first_tick is None else first_tick
            last_tick = tick
        elif rtype == RECORD_BALL:
            if body != BALL_DTYPE.itemsize:
                raise _Bad("bad record framing: ball record size", end)
        elif rtype == RECORD_EVENT:
            if body != EVENT_DTYPE.itemsize:
                raise _Bad("bad record framing: event record size", end)
        elif rtype == RECORD_META:
            try:
                meta = json.loads(data[at : at + body].decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise _Bad("bad meta record (not UTF-8 JSON)", end) from None
            if not isinstance(meta, dict):
                raise _Bad("bad meta record (not a JSON object)", end)
        else:
            raise _Bad(f"bad record framing: unknown record type {rtype}", end)
        records.append((rtype, at, body))
        pos = at + body
    if pos != end:
        raise _Bad("bad record framing: bytes after the last record", end)
    return records, meta, first_tick, last_tick


def _parse_chunk_v2(data: bytes, pos: int) -> _Chunk:
    n = len(data)
    if pos + CHUNK_HEADER.size > n:
        raise _Truncated
    sync, nbytes, count, flags, seq, chunk_crc, header_crc = CHUNK_HEADER.unpack_from(data, pos)
    if sync != CHUNK_MAGIC:
        raise _Bad("bad chunk sync marker")
    if zlib.crc32(data[pos : pos + CHUNK_HEADER.size - 4]) != header_crc:
        raise _Bad("bad chunk header checksum")
    if flags != 0 or nbytes > MAX_CHUNK_PAYLOAD or count > nbytes // RECORD_HEADER.size:
        raise _Bad("bad chunk header values")
    start = pos + CHUNK_HEADER.size
    end = start + nbytes
    if end > n:
        raise _Truncated  # the header is intact, the payload was cut short
    view = memoryview(data)
    if zlib.crc32(view[start:end], zlib.crc32(view[pos : pos + 24])) != chunk_crc:
        raise _Bad("bad chunk checksum", end)
    records, meta, first, last = _frame_records(data, start, end, count)
    return _Chunk(pos, end, seq, records, meta, first, last)


def _parse_chunk_v1(data: bytes, pos: int) -> _Chunk:
    n = len(data)
    if pos + CHUNK_HEADER_V1.size > n:
        raise _Truncated
    magic, nbytes, crc, count, seq = CHUNK_HEADER_V1.unpack_from(data, pos)
    if magic != CHUNK_MAGIC:
        raise _Bad("bad chunk sync marker")
    start = pos + CHUNK_HEADER_V1.size
    end = start + nbytes
    if end > n:
        # Version 1 does not protect the length: a cut-short last chunk and a corrupt length look alike; it is a
        # truncated tail only when no other chunk follows.
        if data.find(CHUNK_SYNC, pos + 1) < 0:
            raise _Truncated
        raise _Bad("bad chunk length")
    if zlib.crc32(memoryview(data)[start:end]) != crc:
        raise _Bad("bad chunk checksum")
    records, meta, first, last = _frame_records(data, start, end, count)
    return _Chunk(pos, end, seq, records, meta, first, last)


def _file_header(path: Path, data: bytes) -> tuple[int, int]:
    """(version, offset of the first chunk); RunLogError when the file header is not a valid run log header."""
    if len(data) < FILE_HEADER_V1.size:
        raise RunLogError(path, 0, f"too short to be a run log ({len(data)} bytes)")
    magic, version, header_size = FILE_HEADER_V1.unpack_from(data, 0)
    if magic != FILE_MAGIC:
        raise RunLogError(path, 0, f"not a robot_rt run log (magic {magic!r})")
    if version == 1:
        if header_size != FILE_HEADER_V1.size:
            raise RunLogError(path, 12, f"bad file header size {header_size} for version 1 (expected 16)")
        return 1, header_size
    if version != VERSION:
        raise RunLogError(path, 8, f"run log version {version}: this reader knows versions 1 and {VERSION}")
    if len(data) < FILE_HEADER.size:
        raise RunLogError(path, 0, f"too short for a version {VERSION} file header ({len(data)} bytes)")
    _, _, header_size, reserved, crc = FILE_HEADER.unpack_from(data, 0)
    if zlib.crc32(data[: FILE_HEADER.size - 4]) != crc:
        raise RunLogError(path, FILE_HEADER.size - 4, "file header checksum mismatch (corrupt header)")
    if header_size != FILE_HEADER.size or reserved != 0:
        raise RunLogError(path, 12, f"bad file header (size {header_size}, reserved {reserved})")
    return version, header_size


def read_runlog(path: str | Path) -> RunLog:
    """Reads a run log, skipping and reporting damaged chunks (`RunLog.damage`).

    Raises FileNotFoundError when there is no such file and RunLogError (a ValueError with `.offset`) when the
    file is not a run log or its file header is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: run log not found: {path}")
    data = path.read_bytes()
    version, pos = _file_header(path, data)
    scan = _scan_chunks(data, pos, _parse_chunk_v2 if version == 2 else _parse_chunk_v1)
    chunks = scan.chunks
    meta: dict = next((c.meta for c in chunks if c.meta is not None), {})
    event_codes = meta.get("event_codes")
    event_names = dict(event_codes) if isinstance(event_codes, dict) else _default_event_names()
    damage = _damage_between_chunks(scan, len(data), _run_ticks(data, chunks, event_names.get("loop_stop")))
    tick_offsets, ball_offsets, event_offsets, tick_dof = _record_offsets(data, chunks)
    buf = np.frombuffer(data, dtype=np.uint8)
    meta_dof = meta.get("dof", 0)
    ticks = _gather(buf, tick_offsets, tick_dtype(tick_dof or (meta_dof if isinstance(meta_dof, int) else 0)))
    return RunLog(
        path=str(path),
        version=version,
        meta=meta,
        ticks=ticks,
        balls=_gather(buf, ball_offsets, BALL_DTYPE),
        events=_gather(buf, event_offsets, EVENT_DTYPE),
        chunks=len(chunks),
        file_bytes=len(data),
        truncated_bytes=len(data) - scan.tail_start,
        stop_reason=scan.tail_reason,
        event_names=event_names,
        damage=damage,
        dropped_tick_ranges=_dropped_tick_ranges(ticks, damage),
    )


@dataclass
class _ChunkScan:
    """The intact chunks of a file in order, and what lies between them."""

    chunks: list[_Chunk]
    # Unreadable stretches between intact chunks: (start, end, reason, duplicate chunk count)
    holes: list[tuple[int, int, str, int]]
    tail_start: int  # where the unreadable or truncated tail begins (the file size when there is none)
    tail_reason: str


def _scan_chunks(data: bytes, pos: int, parse) -> _ChunkScan:
    """Walks the chunks from `pos`; after a damaged chunk it resynchronises at the next sync marker."""
    n = len(data)
    chunks: list[_Chunk] = []
    holes: list[tuple[int, int, str, int]] = []
    bad_start: int | None = None
    bad_reason = ""
    tail_start = n
    tail_reason = "end of file"
    while pos < n:
        try:
            chunk = parse(data, pos)
        except _Truncated:
            if bad_start is not None:
                holes.append((bad_start, pos, bad_reason, 0))
                bad_start = None
            tail_start, tail_reason = pos, "incomplete chunk"
            break
        except _Bad as bad:
            if bad_start is None:
                bad_start, bad_reason = pos, bad.reason
            nxt = data.find(CHUNK_SYNC, bad.skip_to if bad.skip_to is not None else pos + 1)
            if nxt < 0:
                break
            pos = nxt
            continue
        if bad_start is not None:
            holes.append((bad_start, pos, bad_reason, 0))
            bad_start = None
        if chunks and chunk.seq <= chunks[-1].seq:
            holes.append((pos, chunk.end, f"duplicate or out-of-order chunk (sequence {chunk.seq})", 1))
        else:
            chunks.append(chunk)
        pos = chunk.end
    if bad_start is not None:
        tail_start, tail_reason = bad_start, f"unreadable tail: {bad_reason}"
    return _ChunkScan(chunks, holes, tail_start, tail_reason)


def _run_ticks(data: bytes, chunks: list[_Chunk], stop_code: int | None) -> int | None:
    """The run's tick count from its loop_stop event: it bounds the ticks lost after the last tick read."""
    run_ticks = None
    for chunk in chunks:
        for rtype, at, _body in chunk.records:
            if rtype == RECORD_EVENT and struct.unpack_from("<i", data, at + 16)[0] == stop_code:
                value = struct.unpack_from("<d", data, at + 24)[0]
                if value == value and 0 <= value < 2**62:
                    run_ticks = int(value)
    return run_ticks


def _damage_between_chunks(scan: _ChunkScan, n: int, run_ticks: int | None) -> list[Damage]:
    """Damage between consecutive intact chunks (and before the first / after the last one)."""
    chunks, holes, tail_start, tail_reason = scan.chunks, scan.holes, scan.tail_start, scan.tail_reason
    damage: list[Damage] = []
    hole_i = 0
    last_tick_before = 0  # ticks count from 1
    for i in range(len(chunks) + 1):
        boundary = chunks[i].offset if i < len(chunks) else n
        in_between = []
        while hole_i < len(holes) and holes[hole_i][0] < boundary:
            in_between.append(holes[hole_i])
            hole_i += 1
        at_end = i == len(chunks)
        if at_end and tail_start < n:
            in_between.append((tail_start, n, tail_reason, 0))
        expected_seq = chunks[i - 1].seq + 1 if i > 0 else 0
        seq_gap = None if at_end else chunks[i].seq - expected_seq
        if i > 0 and chunks[i - 1].last_tick is not None:
            last_tick_before = chunks[i - 1].last_tick
        if not in_between and not seq_gap:
            continue
        if at_end and tail_reason == "incomplete chunk" and all(h[0] == tail_start for h in in_between):
            # a crash tail alone: reported by truncated_bytes / stop_reason, not as damage to earlier ticks
            continue
        first_after = next((c.first_tick for c in chunks[i:] if c.first_tick is not None), None)
        if first_after is None and run_ticks is not None:
            first_after = run_ticks + 1
        if first_after is None:
            lost = (last_tick_before + 1, None)
        elif first_after > last_tick_before + 1:
            lost = (last_tick_before + 1, first_after - 1)
        else:
            lost = (None, None)
        reasons = list(dict.fromkeys(h[2] for h in in_between if h[3] == 0))
        duplicates = sum(h[3] for h in in_between)
        if seq_gap and not reasons:
            reasons.append("missing chunks (sequence gap)")
        if not reasons:
            reasons.append("duplicate or out-of-order chunk")
        damage.append(
            Damage(
                offset=in_between[0][0] if in_between else boundary,
                skipped_bytes=sum(h[1] - h[0] for h in in_between),
                skipped_chunks=seq_gap if seq_gap is None else max(seq_gap, 0),
                duplicate_chunks=duplicates,
                reason="; ".join(reasons),
                first_lost_tick=lost[0],
                last_lost_tick=lost[1],
                at_end=at_end,
            )
        )
    return damage


def _record_offsets(data: bytes, chunks: list[_Chunk]) -> tuple[list[int], list[int], list[int], int | None]:
    """File offsets of the tick (of the first tick's dof), ball and event records, and that dof."""
    tick_offsets: list[int] = []
    ball_offsets: list[int] = []
    event_offsets: list[int] = []
    tick_dof = None
    for chunk in chunks:
        for rtype, at, _body in chunk.records:
            if rtype == RECORD_TICK:
                dof = struct.unpack_from("<i", data, at + 36)[0]
                if tick_dof is None:
                    tick_dof = dof
                if dof == tick_dof:
                    tick_offsets.append(at)
            elif rtype == RECORD_BALL:
                ball_offsets.append(at)
            elif rtype == RECORD_EVENT:
                event_offsets.append(at)
    return tick_offsets, ball_offsets, event_offsets, tick_dof


def _gather(buf: np.ndarray, offsets: list[int], dtype: np.dtype) -> np.ndarray:
    """The records at `offsets` as one structured array (a copy, independent of the file's bytes)."""
    if not offsets:
        return np.zeros(0, dtype=dtype)
    idx = np.asarray(offsets, dtype=np.int64)[:, None] + np.arange(dtype.itemsize, dtype=np.int64)[None, :]
    return buf[idx].copy().view(dtype).reshape(-1)


def _dropped_tick_ranges(ticks: np.ndarray, damage: list[Damage]) -> list[tuple[int, int]]:
    """Gaps between consecutive ticks that no damage explains: records the writer dropped (ring full)."""
    dropped: list[tuple[int, int]] = []
    if len(ticks) > 1:
        numbers = ticks["tick"].astype(np.int64)
        lost_spans = [(d.first_lost_tick, d.last_lost_tick) for d in damage if d.first_lost_tick is not None]
        for k in np.flatnonzero(np.diff(numbers) > 1):
            gap = (int(numbers[k]) + 1, int(numbers[k + 1]) - 1)
            if not any(first <= gap[0] and (last is None or gap[1] <= last) for first, last in lost_spans):
                dropped.append(gap)
    return dropped
