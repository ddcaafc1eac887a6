"""Python codec of the robot_rt UDP protocol (docs/protocol.md, version 3).

Design notes: docs/protocol.md, section `robot_rt.control.protocol`.
"""

from __future__ import annotations

import hmac
import math
import operator
import struct
import zlib
from hashlib import sha256

# the joint-limits digest of hello / hello_ack (docs/protocol.md, "Joint-limits digest"), re-exported
from robot_rt.robot.description import LIMITS_DIGEST_LABEL, joint_limits_digest, limits_digest  # noqa: F401

MAGIC = b"RRTP"
VERSION = 3  # 3: hello / hello_ack carry the joint-limits digest
HEADER_BYTES = 32
CHECKSUM_BYTES = 4
TAG_BYTES = 32
MAX_JOINTS = 16
MAX_BALLS = 16
BALL_OBSERVATION_BYTES = 40
NONCE_BYTES = 16
JOINT_STATE_HEAD_BYTES = 32
MAX_PAYLOAD_BYTES = max(JOINT_STATE_HEAD_BYTES + 16 * MAX_JOINTS, 8 + BALL_OBSERVATION_BYTES * MAX_BALLS)
MAX_PACKET_BYTES = HEADER_BYTES + MAX_PAYLOAD_BYTES + CHECKSUM_BYTES + TAG_BYTES

FLAG_TAG = 0x0001
KNOWN_FLAGS = FLAG_TAG

TYPES = {
    "hello": 1,
    "heartbeat": 2,
    "joint_state": 3,
    "joint_command": 4,
    "ball_observations": 5,
    "hello_ack": 6,
    "goodbye": 7,
}
TYPE_NAMES = {v: k for k, v in TYPES.items()}

ROLE_CONTROLLER = 1
ROLE_ROBOT_SERVER = 2
ROLE_CAMERA_SUBSCRIBER = 3
ROLE_CAMERA_SERVER = 4

GOODBYE_STOP = 0
GOODBYE_SESSION_LOST = 1
GOODBYE_STOPPED = 2  # the controller ends in a safety stop nobody recovered: the robot counts it as its own stop
GOODBYE_MAX_REASON = 2

STATUS_HOLDING = 0x0001
STATUS_CLAMPED = 0x0002
STATUS_FAULT = 0x0004
STATUS_ESTOP = 0x0008
STATUS_STOP_UNACKNOWLEDGED = 0x0010  # its last own stop was acknowledged by no controller yet
KNOWN_STATUS = STATUS_HOLDING | STATUS_CLAMPED | STATUS_FAULT | STATUS_ESTOP | STATUS_STOP_UNACKNOWLEDGED

MODE_POSITION = 0
MODE_POSITION_VELOCITY = 1

# Decode status names, in the order of the C++ enum (index = numeric value).
STATUS_NAMES = (
    "ok",
    "too_short",
    "too_long",
    "bad_magic",
    "bad_version",
    "bad_length",
    "bad_checksum",
    "missing_tag",
    "unexpected_tag",
    "bad_tag",
    "bad_type",
    "bad_value",
    "buffer_too_small",
)

_HEADER = struct.Struct("<4sBBHIHHQQ")  # magic, version, type, flags, session, payload_len, reserved, seq, stamp
_U16x2_U32 = struct.Struct("<HHI")
_HELLO = struct.Struct("<HHI16sQ")  # role, dof, period_us, nonce, limits_digest
_HELLO_ACK = struct.Struct("<HHIII16s16sQQQ")  # ..., t1, t2, limits_digest
_U64x3 = struct.Struct("<QQQ")
_U32x2 = struct.Struct("<II")
_STATE_HEAD = struct.Struct("<HHIQQQ")
_OBS = struct.Struct("<QIf3d")
assert _HEADER.size == HEADER_BYTES and _OBS.size == BALL_OBSERVATION_BYTES
assert _STATE_HEAD.size == JOINT_STATE_HEAD_BYTES and _HELLO.size == 32 and _HELLO_ACK.size == 72


class ProtocolError(ValueError):
    """A datagram the decoder rejects; `status` names the reason (same names as the C++ decoder)."""

    def __init__(self, status: str, message: str = ""):
        super().__init__(f"{status}: {message}" if message else status)
        self.status = status


def payload_bytes(type_name: str, count: int = 0) -> int:
    """Payload size of a message with `count` joints / observations (0 if the count is out of range)."""
    if type_name == "hello":
        return _HELLO.size
    if type_name == "hello_ack":
        return _HELLO_ACK.size
    if type_name == "heartbeat":
        return 24
    if type_name == "goodbye":
        return 8
    if type_name == "joint_state":
        return JOINT_STATE_HEAD_BYTES + 16 * count if 1 <= count <= MAX_JOINTS else 0
    if type_name == "joint_command":
        return 8 + 16 * count if 1 <= count <= MAX_JOINTS else 0
    if type_name == "ball_observations":
        return 8 + BALL_OBSERVATION_BYTES * count if 0 <= count <= MAX_BALLS else 0
    raise ValueError(f"type: unknown message type {type_name!r}")


# The shortest long-term key a session takes (C++ session::kMinLongTermKeyBytes); b''/None: unauthenticated. A hello
# is tagged with the long-term key over content an eavesdropper can predict: one sniffed hello lets a short key be
# found by trying keys offline.
MIN_LONG_TERM_KEY_BYTES = 16


def long_term_key(key) -> bytes | None:
    """A session's long-term key as bytes (None: unauthenticated); ValueError naming `key` for a non-empty key
    shorter than MIN_LONG_TERM_KEY_BYTES."""
    key = _key_bytes(key)
    if key is not None and len(key) < MIN_LONG_TERM_KEY_BYTES:
        raise ValueError(
            f"key: {len(key)} bytes, expected at least {MIN_LONG_TERM_KEY_BYTES} (one sniffed hello lets a short key "
            "be found offline; e.g. 64 random hex digits) or none (unauthenticated, loopback only)"
        )
    return key


def _key_bytes(key) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"key: expected bytes, str or None, got {type(key).__name__}")
    return bytes(key) or None


def _u32(value, name: str) -> int:
    try:
        value = operator.index(value)  # an integer (NumPy's too), not a float or a string
    except TypeError:
        raise ValueError(f"{name}: expected an integer, got {value!r}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name}: expected 0..2**32-1, got {value}")
    return value


def _nonce(packet: dict, name: str) -> bytes:
    value = packet.get(name, bytes(NONCE_BYTES))
    if not isinstance(value, bytes | bytearray) or len(value) != NONCE_BYTES:
        raise ValueError(f"{name}: expected {NONCE_BYTES} bytes")
    return bytes(value)


def _finite(values, name: str) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name}: expected finite values, got {out}")
    return out


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _joint_payload(packet: dict, head: bytes) -> tuple[bytes, int]:
    position = _finite(packet["position"], "position")
    dof = len(position)
    if not 1 <= dof <= MAX_JOINTS:
        raise ValueError(f"position: expected 1..{MAX_JOINTS} joints, got {dof}")
    velocity = _finite(packet.get("velocity", [0.0] * dof), "velocity")
    if len(velocity) != dof:
        raise ValueError(f"velocity: expected {dof} values, got {len(velocity)}")
    return head + struct.pack(f"<{dof}d{dof}d", *position, *velocity), dof


def encode_payload(packet: dict) -> bytes:
    """The payload bytes of a packet dict (validated like the C++ encoder)."""
    kind = packet["type"]
    if kind == "hello":
        role, dof = int(packet.get("role", 0)), int(packet.get("dof", 0))
        if role not in (1, 2, 3, 4) or not 0 <= dof <= MAX_JOINTS:
            raise ValueError(f"hello: role must be 1..4 and dof 0..{MAX_JOINTS}, got role={role} dof={dof}")
        return _HELLO.pack(
            role, dof, int(packet.get("period_us", 0)), _nonce(packet, "nonce"), int(packet.get("limits_digest", 0))
        )
    if kind == "hello_ack":
        role, dof = int(packet.get("role", 0)), int(packet.get("dof", 0))
        if role not in (1, 2, 3, 4) or not 0 <= dof <= MAX_JOINTS:
            raise ValueError(f"hello_ack: role must be 1..4 and dof 0..{MAX_JOINTS}, got role={role} dof={dof}")
        return _HELLO_ACK.pack(
            role,
            dof,
            int(packet.get("period_us", 0)),
            int(packet.get("client_session_id", 0)),
            0,
            _nonce(packet, "client_nonce"),
            _nonce(packet, "server_nonce"),
            int(packet.get("echo_hello_stamp_ns", 0)),
            int(packet.get("hello_receive_ns", 0)),
            int(packet.get("limits_digest", 0)),
        )
    if kind == "heartbeat":
        return _U64x3.pack(
            int(packet.get("echo_sequence", 0)),
            int(packet.get("echo_stamp_ns", 0)),
            int(packet.get("echo_receive_ns", 0)),
        )
    if kind == "goodbye":
        reason = int(packet.get("reason", GOODBYE_STOP))
        if not 0 <= reason <= GOODBYE_MAX_REASON:
            raise ValueError(f"reason: expected 0..{GOODBYE_MAX_REASON}, got {reason}")
        return _U32x2.pack(reason, 0)
    if kind == "joint_state":
        status = int(packet.get("status", 0))
        if status & ~KNOWN_STATUS:
            raise ValueError(f"status: unknown bits {status:#x}")
        dof = len(packet["position"])
        head = _STATE_HEAD.pack(
            dof & 0xFFFF,
            status,
            _u32(packet.get("robot_stops", 0), "robot_stops"),
            int(packet.get("echo_command_sequence", 0)),
            int(packet.get("echo_command_stamp_ns", 0)),
            int(packet.get("echo_command_receive_ns", 0)),
        )
        return _joint_payload(packet, head)[0]
    if kind == "joint_command":
        mode = int(packet.get("mode", MODE_POSITION))
        if mode not in (MODE_POSITION, MODE_POSITION_VELOCITY):
            raise ValueError(f"mode: expected 0 or 1, got {mode}")
        dof = len(packet["position"])
        acknowledged = _u32(packet.get("robot_stops_acknowledged", 0), "robot_stops_acknowledged")
        payload, dof = _joint_payload(packet, _U16x2_U32.pack(dof & 0xFFFF, mode, acknowledged))
        if mode == MODE_POSITION and any(float(v) != 0.0 for v in packet.get("velocity", [])):
            raise ValueError("velocity: must be zero in position mode")
        return payload
    if kind == "ball_observations":
        observations = list(packet.get("observations", []))
        if len(observations) > MAX_BALLS:
            raise ValueError(f"observations: at most {MAX_BALLS}, got {len(observations)}")
        out = [_U16x2_U32.pack(len(observations), int(packet.get("camera_id", 0)), 0)]
        for o in observations:
            xyz = _finite(o["position_m"], "observations[].position_m")
            confidence = _f32(float(o.get("confidence", 0.0)))
            if len(xyz) != 3 or not (0.0 <= confidence <= 1.0):
                raise ValueError("observations[]: expected position_m of 3 values and confidence in [0, 1]")
            out.append(_OBS.pack(int(o.get("capture_age_ns", 0)), int(o.get("frame_id", 0)), confidence, *xyz))
        return b"".join(out)
    raise ValueError(f"type: expected one of {sorted(TYPES)}, got {kind!r}")


def encode(packet: dict, key: bytes | str | None = None) -> bytes:
    """One datagram: header, payload, CRC-32, and an HMAC-SHA256 tag when `key` is given."""
    payload = encode_payload(packet)
    key = _key_bytes(key)
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        TYPES[packet["type"]],
        FLAG_TAG if key else 0,
        int(packet.get("session_id", 0)),
        len(payload),
        0,
        int(packet.get("sequence", 0)),
        int(packet.get("stamp_ns", 0)),
    )
    body = header + payload
    out = body + struct.pack("<I", zlib.crc32(body))
    if key:
        out += hmac.new(key, out, sha256).digest()
    return out


def seal(body: bytes, key: bytes | str | None = None, flags: int | None = None) -> bytes:
    """Appends a valid checksum (and tag) to arbitrary header+payload bytes: a tool for tests/fuzzing that
    builds packets with valid integrity but semantically bad contents. `flags` rewrites the header's flags."""
    key = _key_bytes(key)
    body = bytearray(body)
    if flags is not None and len(body) >= 8:
        body[6:8] = struct.pack("<H", flags)
    out = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    if key:
        out += hmac.new(key, out, sha256).digest()
    return out


def _check_finite(values, what: str) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ProtocolError("bad_value", f"{what}: non-finite value")


def _decode_payload(kind: str, p: bytes) -> dict:
    size = len(p)
    if kind == "hello":
        if size != _HELLO.size:
            raise ProtocolError("bad_length", f"hello payload must be {_HELLO.size} bytes")
        role, dof, period, nonce, digest = _HELLO.unpack(p)
        if role not in (1, 2, 3, 4) or dof > MAX_JOINTS:
            raise ProtocolError("bad_value", f"hello: role={role} dof={dof}")
        return {"role": role, "dof": dof, "period_us": period, "nonce": nonce, "limits_digest": digest}
    if kind == "hello_ack":
        if size != _HELLO_ACK.size:
            raise ProtocolError("bad_length", f"hello_ack payload must be {_HELLO_ACK.size} bytes")
        role, dof, period, client_session, reserved, client_nonce, server_nonce, t1, t2, digest = _HELLO_ACK.unpack(p)
        if role not in (1, 2, 3, 4) or dof > MAX_JOINTS or reserved:
            raise ProtocolError("bad_value", f"hello_ack: role={role} dof={dof} reserved={reserved}")
        return {
            "role": role,
            "dof": dof,
            "period_us": period,
            "client_session_id": client_session,
            "client_nonce": client_nonce,
            "server_nonce": server_nonce,
            "echo_hello_stamp_ns": t1,
            "hello_receive_ns": t2,
            "limits_digest": digest,
        }
    if kind == "heartbeat":
        if size != _U64x3.size:
            raise ProtocolError("bad_length", f"heartbeat payload must be {_U64x3.size} bytes")
        seq, stamp, receive = _U64x3.unpack(p)
        return {"echo_sequence": seq, "echo_stamp_ns": stamp, "echo_receive_ns": receive}
    if kind == "goodbye":
        if size != _U32x2.size:
            raise ProtocolError("bad_length", f"goodbye payload must be {_U32x2.size} bytes")
        reason, reserved = _U32x2.unpack(p)
        if reason > GOODBYE_MAX_REASON or reserved:
            raise ProtocolError("bad_value", f"goodbye: reason={reason} reserved={reserved}")
        return {"reason": reason}
    if kind == "joint_state":
        if size < JOINT_STATE_HEAD_BYTES:
            raise ProtocolError("bad_length", "joint_state payload shorter than its head")
        dof, status, robot_stops, echo_seq, echo_stamp, echo_receive = _STATE_HEAD.unpack_from(p)
        if not 1 <= dof <= MAX_JOINTS:
            raise ProtocolError("bad_value", f"dof={dof}")
        if size != payload_bytes(kind, dof):
            raise ProtocolError("bad_length", f"joint_state with dof={dof} must be {payload_bytes(kind, dof)} bytes")
        if status & ~KNOWN_STATUS:
            raise ProtocolError("bad_value", "unknown status bits")
        values = struct.unpack_from(f"<{2 * dof}d", p, JOINT_STATE_HEAD_BYTES)
        _check_finite(values, "joint_state")
        return {
            "status": status,
            "robot_stops": robot_stops,
            "echo_command_sequence": echo_seq,
            "echo_command_stamp_ns": echo_stamp,
            "echo_command_receive_ns": echo_receive,
            "position": list(values[:dof]),
            "velocity": list(values[dof:]),
        }
    if kind == "joint_command":
        if size < 8:
            raise ProtocolError("bad_length", "joint_command payload shorter than its head")
        dof, mode, acknowledged = _U16x2_U32.unpack_from(p)
        if not 1 <= dof <= MAX_JOINTS:
            raise ProtocolError("bad_value", f"dof={dof}")
        if size != payload_bytes(kind, dof):
            raise ProtocolError("bad_length", f"joint_command with dof={dof} must be {payload_bytes(kind, dof)} bytes")
        if mode not in (MODE_POSITION, MODE_POSITION_VELOCITY):
            raise ProtocolError("bad_value", f"mode={mode}")
        values = struct.unpack_from(f"<{2 * dof}d", p, 8)
        _check_finite(values, "joint_command")
        if mode == MODE_POSITION and any(v != 0.0 for v in values[dof:]):
            raise ProtocolError("bad_value", "velocity must be zero in position mode")
        return {
            "mode": mode,
            "robot_stops_acknowledged": acknowledged,
            "position": list(values[:dof]),
            "velocity": list(values[dof:]),
        }
    if kind == "ball_observations":
        if size < 8:
            raise ProtocolError("bad_length", "ball_observations payload shorter than its head")
        count, camera_id, reserved = _U16x2_U32.unpack_from(p)
        if count > MAX_BALLS:
            raise ProtocolError("bad_value", f"count={count}")
        if size != payload_bytes(kind, count):
            raise ProtocolError("bad_length", f"{count} observations must be {payload_bytes(kind, count)} bytes")
        if reserved:
            raise ProtocolError("bad_value", "reserved field set")
        observations = []
        for i in range(count):
            age, frame, confidence, x, y, z = _OBS.unpack_from(p, 8 + BALL_OBSERVATION_BYTES * i)
            if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
                raise ProtocolError("bad_value", f"confidence={confidence}")
            _check_finite((x, y, z), "observation position")
            observations.append(
                {"capture_age_ns": age, "frame_id": frame, "confidence": confidence, "position_m": [x, y, z]}
            )
        return {"camera_id": camera_id, "observations": observations}
    raise ProtocolError("bad_type", kind)


def peek(data: bytes) -> dict:
    """The framing checks of `decode` only (size, magic, version, length, checksum) and the header fields:
    {"type_id", "type" (None if unknown), "flags", "session_id", "sequence", "stamp_ns", "payload_len"}.
    Nothing is authenticated: use it to choose the key (or session) that must verify the datagram."""
    data = bytes(data)
    size = len(data)
    if size < HEADER_BYTES + CHECKSUM_BYTES:
        raise ProtocolError("too_short", f"{size} bytes")
    if size > MAX_PACKET_BYTES:
        raise ProtocolError("too_long", f"{size} bytes")
    magic, version, type_id, flags, session, payload_len, _, sequence, stamp = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("bad_magic", repr(magic))
    if version != VERSION:
        raise ProtocolError("bad_version", str(version))
    has_tag = bool(flags & FLAG_TAG)
    body = HEADER_BYTES + payload_len
    if size != body + CHECKSUM_BYTES + (TAG_BYTES if has_tag else 0):
        raise ProtocolError("bad_length", f"{size} bytes for a payload of {payload_len}")
    (crc,) = struct.unpack_from("<I", data, body)
    if crc != zlib.crc32(data[:body]):
        raise ProtocolError("bad_checksum")
    return {
        "type_id": type_id,
        "type": TYPE_NAMES.get(type_id),
        "flags": flags,
        "session_id": session,
        "sequence": sequence,
        "stamp_ns": stamp,
        "payload_len": payload_len,
    }


def peek_server_nonce(data: bytes) -> bytes | None:
    """The server nonce of a hello_ack that passed `peek` (it selects the key), None for anything else."""
    data = bytes(data)
    if len(data) < HEADER_BYTES + _HELLO_ACK.size or data[5] != TYPES["hello_ack"]:
        return None
    if struct.unpack_from("<H", data, 12)[0] != _HELLO_ACK.size:
        return None
    return data[HEADER_BYTES + 32 : HEADER_BYTES + 48]


def decode(data: bytes, key: bytes | str | None = None) -> dict:
    """Validates and decodes one datagram, in the same order of checks as the C++ decoder."""
    data = bytes(data)
    key = _key_bytes(key)
    frame = peek(data)
    flags, payload_len = frame["flags"], frame["payload_len"]
    _, _, type_id, _, session, _, reserved, sequence, stamp = _HEADER.unpack_from(data)
    has_tag = bool(flags & FLAG_TAG)
    body = HEADER_BYTES + payload_len
    if has_tag and not key:
        raise ProtocolError("unexpected_tag")
    if key and not has_tag:
        raise ProtocolError("missing_tag")
    if key:
        expected = hmac.new(key, data[: body + CHECKSUM_BYTES], sha256).digest()
        if not hmac.compare_digest(expected, data[body + CHECKSUM_BYTES :]):
            raise ProtocolError("bad_tag")
    if flags & ~KNOWN_FLAGS or reserved:
        raise ProtocolError("bad_value", "unknown flags or reserved header field set")
    if type_id not in TYPE_NAMES:
        raise ProtocolError("bad_type", str(type_id))
    kind = TYPE_NAMES[type_id]
    packet = {"type": kind, "flags": flags, "session_id": session, "sequence": sequence, "stamp_ns": stamp}
    packet.update(_decode_payload(kind, data[HEADER_BYTES:body]))
    return packet


def try_decode(data: bytes, key: bytes | str | None = None) -> tuple[str, dict | None]:
    """(status name, packet or None), the shape of the C++ binding `decode_packet`."""
    try:
        return "ok", decode(data, key)
    except ProtocolError as err:
        return err.status, None


# ------------------------------------------------------------------------------------------------ key schedule
KEY_LABEL = b"RRTP v3 session keys"
SESSION_KEY_BYTES = 32


CAMERA_KEY_LABEL = b"RRTP camera link key"


def camera_link_key(key: bytes | str | None) -> bytes:
    """The camera link's long-term key derived from the robot link's ``key``: the 64 lowercase hex digits (ASCII) of
    HMAC-SHA256(key, CAMERA_KEY_LABEL); b'' without a key. A camera is provisioned with this key only (`robot-rt
    camera-key`): it authenticates the camera stream but cannot be turned back into the robot link's key, so the
    camera's computer can never open a controller session to the robot (docs/protocol.md, "Keys")."""
    k = long_term_key(key)  # a derived key has only its input's entropy (and a guessed input is the robot's key)
    if not k:
        return b""
    return hmac.new(k, CAMERA_KEY_LABEL, sha256).hexdigest().encode()


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869) with HMAC-SHA256; an empty salt stands for 32 zero bytes."""
    return hmac.new(bytes(salt) or bytes(32), bytes(ikm), sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869) with HMAC-SHA256."""
    if not 0 <= length <= 255 * 32:
        raise ValueError(f"length: expected 0..{255 * 32} bytes, got {length}")
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + bytes(info) + bytes([counter]), sha256).digest()
        out += block
        counter += 1
    return out[:length]


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract then expand."""
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def key_info(client_role: int, server_role: int, client_session_id: int, server_session_id: int) -> bytes:
    """The HKDF info of the key schedule: label, version, roles, both session ids (docs/protocol.md)."""
    return KEY_LABEL + struct.pack("<BHHII", VERSION, client_role, server_role, client_session_id, server_session_id)


def derive_session_keys(
    key: bytes | str | None,
    client_nonce: bytes,
    server_nonce: bytes,
    client_role: int,
    server_role: int,
    client_session_id: int,
    server_session_id: int,
) -> tuple[bytes | None, bytes | None]:
    """(client->server key, server->client key) of one session; (None, None) without a long-term key."""
    key = _key_bytes(key)
    if not key:
        return None, None
    if len(client_nonce) != NONCE_BYTES or len(server_nonce) != NONCE_BYTES:
        raise ValueError(f"client_nonce, server_nonce: expected {NONCE_BYTES} bytes each")
    okm = hkdf(
        bytes(client_nonce) + bytes(server_nonce),
        key,
        key_info(client_role, server_role, client_session_id, server_session_id),
        2 * SESSION_KEY_BYTES,
    )
    return okm[:SESSION_KEY_BYTES], okm[SESSION_KEY_BYTES:]


class SequenceTracker:
    """Receiver-side ordering rule of docs/protocol.md (mirror of protocol::SequenceTracker)."""

    def __init__(self) -> None:
        self.started = False
        self.session_id = 0
        self.last = 0
        self.window = 0
        self.gaps = 0

    def check(self, session_id: int, sequence: int) -> str:
        """'new_session' | 'accept' | 'duplicate' | 'stale'."""
        if not self.started or session_id != self.session_id:
            self.started, self.session_id, self.last, self.window = True, session_id, sequence, 1
            return "new_session"
        if sequence > self.last:
            shift = sequence - self.last
            self.gaps += shift - 1
            self.window = 1 if shift >= 64 else ((self.window << shift) | 1) & ((1 << 64) - 1)
            self.last = sequence
            return "accept"
        back = self.last - sequence
        if back < 64 and (self.window >> back) & 1:
            return "duplicate"
        return "stale"
