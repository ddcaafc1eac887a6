"""Reader of the crash-safe run log written by the control loop (format: docs/runlog.md).

The file is a 16-byte header followed by chunks, each `header (24 bytes) + payload`, where the header holds
the payload length and its CRC-32 (zlib). `read_runlog` walks the chunks and stops at the first one that
is incomplete or fails its checksum: after a crash (`kill -9`) the log is readable up to its last complete
chunk, and `RunLog.truncated_bytes` says how much was left behind.
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
FILE_HEADER = struct.Struct("<8sII")  # magic, version, header size
CHUNK_HEADER = struct.Struct("<IIIIQ")  # magic, payload bytes, crc32, record count, chunk seq
CHUNK_MAGIC = 0x43545252  # b"RRTC"
RECORD_HEADER = struct.Struct("<HHI")  # type, reserved, body bytes
RECORD_META, RECORD_TICK, RECORD_BALL, RECORD_EVENT = 1, 2, 3, 4
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
    chunks: int  # complete chunks read
    file_bytes: int
    truncated_bytes: int  # bytes after the last complete chunk (0 for a cleanly closed log)
    stop_reason: str  # 'end of file' | 'incomplete chunk' | 'bad checksum' | 'bad chunk magic' | ...
    event_names: dict = field(default_factory=dict)

    @property
    def dof(self) -> int:
        return int(self.meta.get("dof", self.ticks["dof"][0] if len(self.ticks) else 0))

    @property
    def clean(self) -> bool:
        """True when the log ends at a chunk boundary with the loop's stop event (orderly shutdown)."""
        stop = self.event_names.get("loop_stop")
        return self.truncated_bytes == 0 and stop is not None and bool(np.any(self.events["code"] == stop))

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


def read_runlog(path: str | Path) -> RunLog:
    """Reads a run log up to its last complete chunk. Raises ValueError when the file is not a run log."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: run log not found: {path}")
    data = path.read_bytes()
    if len(data) < FILE_HEADER.size:
        raise ValueError(f"path: {path} is too short to be a run log ({len(data)} bytes)")
    magic, version, header_size = FILE_HEADER.unpack_from(data, 0)
    if magic != FILE_MAGIC:
        raise ValueError(f"path: {path} is not a robot_rt run log (magic {magic!r})")
    if version != 1:
        raise ValueError(f"path: {path} has run log version {version}, this reader knows version 1")
    offset = header_size
    chunks = 0
    stop_reason = "end of file"
    meta: dict = {}
    tick_offsets: list[int] = []
    tick_dof = None
    ball_offsets: list[int] = []
    event_offsets: list[int] = []
    while offset < len(data):
        if offset + CHUNK_HEADER.size > len(data):
            stop_reason = "incomplete chunk"
            break
        cmagic, nbytes, crc, nrecords, _seq = CHUNK_HEADER.unpack_from(data, offset)
        if cmagic != CHUNK_MAGIC:
            stop_reason = "bad chunk magic"
            break
        start = offset + CHUNK_HEADER.size
        end = start + nbytes
        if end > len(data):
            stop_reason = "incomplete chunk"
            break
        if zlib.crc32(data[start:end]) & 0xFFFFFFFF != crc:
            stop_reason = "bad checksum"
            break
        pos = start
        for _ in range(nrecords):
            rtype, _res, body = RECORD_HEADER.unpack_from(data, pos)
            body_at = pos + RECORD_HEADER.size
            if rtype == RECORD_TICK:
                dof = struct.unpack_from("<i", data, body_at + 36)[0]
                if tick_dof is None:
                    tick_dof = dof
                if dof == tick_dof:
                    tick_offsets.append(body_at)
            elif rtype == RECORD_BALL:
                ball_offsets.append(body_at)
            elif rtype == RECORD_EVENT:
                event_offsets.append(body_at)
            elif rtype == RECORD_META:
                meta = json.loads(data[body_at : body_at + body].decode("utf-8"))
            pos = body_at + body
        chunks += 1
        offset = end
    buf = np.frombuffer(data, dtype=np.uint8)

    def gather(offsets: list[int], dtype: np.dtype) -> np.ndarray:
        if not offsets:
            return np.zeros(0, dtype=dtype)
        idx = np.asarray(offsets, dtype=np.int64)[:, None] + np.arange(dtype.itemsize, dtype=np.int64)[None, :]
        return buf[idx].copy().view(dtype).reshape(-1)

    ticks = gather(tick_offsets, tick_dtype(tick_dof or int(meta.get("dof", 0))))
    return RunLog(
        path=str(path),
        version=version,
        meta=meta,
        ticks=ticks,
        balls=gather(ball_offsets, BALL_DTYPE),
        events=gather(event_offsets, EVENT_DTYPE),
        chunks=chunks,
        file_bytes=len(data),
        truncated_bytes=len(data) - offset,
        stop_reason=stop_reason,
        event_names=dict(meta.get("event_codes") or _default_event_names()),
    )
