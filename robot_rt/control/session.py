"""Session layer of the UDP protocol in Python (docs/protocol.md, "Handshake and sessions").

Design notes: docs/protocol.md, section `robot_rt.control.session`.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field

from . import protocol as P


def random_session_id() -> int:
    while True:
        value = int.from_bytes(os.urandom(4), "little")
        if value:
            return value


def _frame(data: bytes) -> tuple[str, dict | None]:
    try:
        return "ok", P.peek(data)
    except P.ProtocolError as err:
        return err.status, None


def _decode(data: bytes, key: bytes | None) -> tuple[str, dict | None]:
    return P.try_decode(data, key)


@dataclass
class _Session:
    addr: tuple
    client_session_id: int
    client_nonce: bytes
    server_nonce: bytes
    created_ns: int
    keys: tuple  # (client->server, server->client), (None, None) unauthenticated
    last_heard_ns: int = 0
    tracker: P.SequenceTracker = field(default_factory=P.SequenceTracker)


class ServerSessions:
    """Server side: at most `max_sessions` live sessions (one per client address) and `pending_slots` handshakes.

    `receive(data, addr, now_ns)` (now_ns: time.monotonic_ns()) -> (verdict, packet or None, reply bytes or None). The verdicts are those of
    the C++ ServerSession ('ack', 'accepted', 'accepted_new_session', 'goodbye', 'rejected:<status>',
    'hello_refused', 'unexpected_source', 'unexpected_session', 'mismatch', 'duplicate', 'stale', 'limits_mismatch').
    A robot server (server_role ROLE_ROBOT_SERVER) states `limits_digest` (protocol.limits_digest of its joint limits)
    and refuses a controller's hello whose digest differs or is 0: 'limits_mismatch', no handshake kept, the reply a
    hello_ack stating its digest (so the controller learns why). Camera roles send 0 and are not checked.
    `encode(addr, packet)` signs a datagram for the live session of `addr`; the caller fills the sequence.
    """

    def __init__(
        self,
        key: bytes | str | None,
        server_role: int,
        client_role: int,
        dof: int = 0,
        *,
        session_id: int | None = None,
        period_us: int = 0,
        session_timeout_s: float = 0.5,
        max_sessions: int = 1,
        pending_slots: int = 4,
        limits_digest: int = 0,
    ):
        if not session_timeout_s > 0:
            raise ValueError(f"session_timeout_s: expected a positive duration, got {session_timeout_s}")
        if max_sessions < 1 or pending_slots < 1:
            raise ValueError("max_sessions, pending_slots: expected at least 1")
        self.key = P.long_term_key(key)
        self.server_role, self.client_role, self.dof = int(server_role), int(client_role), int(dof)
        self.session_id = random_session_id() if session_id is None else int(session_id)
        self.period_us = int(period_us)
        self.session_timeout_s = float(session_timeout_s)
        self._timeout_ns = int(session_timeout_s * 1e9)
        self.max_sessions = int(max_sessions)
        self.pending_slots = int(pending_slots)
        self.live: dict[tuple, _Session] = {}
        self.pending: list[_Session] = []
        self.limits_digest = int(limits_digest)
        self.counts = {
            "handshakes": 0,
            "sessions": 0,
            "expired": 0,
            "goodbyes": 0,
            "pending_evicted": 0,
            "limits_refused": 0,
        }

    @property
    def robot_link(self) -> bool:
        return self.server_role == P.ROLE_ROBOT_SERVER

    # ------------------------------------------------------------------ lifecycle
    def expire(self, now_ns: int) -> list[tuple]:
        """Ends the live sessions silent for longer than the timeout; returns their addresses."""
        gone = [a for a, s in self.live.items() if now_ns - s.last_heard_ns > self._timeout_ns]
        for a in gone:
            del self.live[a]
            self.counts["expired"] += 1
        return gone

    def end(self, addr) -> None:
        self.live.pop(addr, None)

    def encode(self, addr, packet: dict) -> bytes:
        session = self.live[addr]
        return P.encode(dict(packet, session_id=self.session_id), session.keys[1])

    # ------------------------------------------------------------------ receive
    def receive(self, data: bytes, addr, now_ns: int) -> tuple[str, dict | None, bytes | None]:
        status, frame = _frame(data)
        if status != "ok":
            return f"rejected:{status}", None, None
        self.expire(now_ns)
        if frame["type"] == "hello":
            if addr in self.live or len(self.live) >= self.max_sessions:
                return "hello_refused", None, None  # no crypto, no state, no reply
            status, hello = _decode(data, self.key)
            if status != "ok":
                return f"rejected:{status}", None, None
            if hello["role"] != self.client_role or hello["dof"] != self.dof:
                return "mismatch", hello, None
            if self.robot_link and (hello["limits_digest"] == 0 or hello["limits_digest"] != self.limits_digest):
                # no pending slot (nothing can make this session live); the ack only states our digest
                refusal = self._open_slot(addr, frame["session_id"], hello["nonce"], now_ns)
                self.counts["limits_refused"] += 1
                return "limits_mismatch", hello, _AckReply(self._ack(refusal, hello, now_ns), refusal.keys[1])
            slot = next(
                (
                    s
                    for s in self.pending
                    if s.addr == addr
                    and s.client_session_id == frame["session_id"]
                    and s.client_nonce == hello["nonce"]
                    and now_ns - s.created_ns <= self._timeout_ns
                ),
                None,
            )
            if slot is None:
                self.pending = [s for s in self.pending if now_ns - s.created_ns <= self._timeout_ns]
                if len(self.pending) >= self.pending_slots:
                    self.pending.sort(key=lambda s: s.created_ns)
                    self.pending.pop(0)
                    self.counts["pending_evicted"] += 1
                slot = self._open_slot(addr, frame["session_id"], hello["nonce"], now_ns)
                self.pending.append(slot)
            self.counts["handshakes"] += 1
            return "ack", hello, _AckReply(self._ack(slot, hello, now_ns), slot.keys[1])
        live = self.live.get(addr)
        if live is not None and frame["session_id"] == live.client_session_id:
            status, packet = _decode(data, live.keys[0])
            if status != "ok":
                return f"rejected:{status}", None, None
            verdict = live.tracker.check(frame["session_id"], frame["sequence"])
            if verdict in ("duplicate", "stale"):
                return verdict, None, None
            live.last_heard_ns = now_ns
            if packet["type"] == "goodbye":
                del self.live[addr]
                self.counts["goodbyes"] += 1
                return "goodbye", packet, None
            return "accepted", packet, None
        known = live is not None
        for slot in list(self.pending):
            if slot.addr != addr:
                continue
            known = True
            if slot.client_session_id != frame["session_id"]:
                continue
            if now_ns - slot.created_ns > self._timeout_ns:
                self.pending.remove(slot)
                continue
            if addr in self.live or len(self.live) >= self.max_sessions:
                return "unexpected_session", None, None
            status, packet = _decode(data, slot.keys[0])
            if status != "ok":
                return f"rejected:{status}", None, None
            self.pending.remove(slot)
            if packet["type"] == "goodbye":
                return "unexpected_session", None, None
            slot.tracker.check(frame["session_id"], frame["sequence"])
            slot.last_heard_ns = now_ns
            self.live[addr] = slot
            self.counts["sessions"] += 1
            return "accepted_new_session", packet, None
        return ("unexpected_session" if known else "unexpected_source"), None, None

    def _open_slot(self, addr, client_session_id: int, client_nonce: bytes, now_ns: int) -> _Session:
        """A handshake slot for an authentic hello: a fresh server nonce and the session keys derived from it."""
        server_nonce = os.urandom(P.NONCE_BYTES)
        keys = P.derive_session_keys(
            self.key,
            client_nonce,
            server_nonce,
            self.client_role,
            self.server_role,
            client_session_id,
            self.session_id,
        )
        return _Session(addr, client_session_id, client_nonce, server_nonce, now_ns, keys)

    def _ack(self, slot: _Session, hello: dict, now_ns: int) -> dict:
        return {
            "type": "hello_ack",
            "session_id": self.session_id,
            "role": self.server_role,
            "dof": self.dof,
            "period_us": self.period_us,
            "client_session_id": slot.client_session_id,
            "client_nonce": slot.client_nonce,
            "server_nonce": slot.server_nonce,
            "echo_hello_stamp_ns": hello["stamp_ns"],
            "hello_receive_ns": int(now_ns),
            "limits_digest": self.limits_digest if self.robot_link else 0,
        }


class _AckReply(dict):
    """The hello_ack to send (a packet dict) and the key that signs it; `encode(sequence, stamp_ns)`."""

    def __init__(self, packet: dict, key: bytes | None):
        super().__init__(packet)
        self.key = key

    def encode(self, sequence: int, stamp_ns: int) -> bytes:
        return P.encode(dict(self, sequence=sequence, stamp_ns=stamp_ns), self.key)


class ClientSession:
    """Client side (mirror of the C++ ClientSession): `begin()`, `hello(sequence, stamp_ns)`, `receive(data)`,
    `encode(packet)` for session traffic once established. A controller (server_role ROLE_ROBOT_SERVER) states
    `limits_digest` (the joint limits it enforces) and refuses an ack stating another digest, or any ack while its own
    digest is 0: 'limits_mismatch' (fail closed)."""

    def __init__(
        self, key: bytes | str | None, client_role: int, server_role: int, dof: int = 0, limits_digest: int = 0
    ):
        self.key = P.long_term_key(key)
        self.client_role, self.server_role, self.dof = int(client_role), int(server_role), int(dof)
        self.limits_digest = int(limits_digest)
        self.state = "idle"
        self.nonce = b""
        self.session_id = 0
        self.server_session_id = 0
        self.keys: tuple = (None, None)
        self.tracker = P.SequenceTracker()
        self.ack: dict | None = None

    def begin(self) -> None:
        self.nonce = os.urandom(P.NONCE_BYTES)
        self.session_id = random_session_id()
        self.server_session_id = 0
        self.keys = (None, None)
        self.tracker = P.SequenceTracker()
        self.state = "handshaking"

    def hello(self, sequence: int, stamp_ns: int, period_us: int = 0) -> bytes:
        packet = {
            "type": "hello",
            "session_id": self.session_id,
            "sequence": sequence,
            "stamp_ns": stamp_ns,
            "role": self.client_role,
            "dof": self.dof,
            "period_us": period_us,
            "nonce": self.nonce,
            "limits_digest": self.limits_digest if self.robot_link else 0,
        }
        return P.encode(packet, self.key)

    @property
    def robot_link(self) -> bool:
        return self.server_role == P.ROLE_ROBOT_SERVER

    def encode(self, packet: dict) -> bytes:
        if self.state != "established":
            raise RuntimeError("no session: encode() needs an established session")
        return P.encode(dict(packet, session_id=self.session_id), self.keys[0])

    def receive(self, data: bytes) -> tuple[str, dict | None]:
        status, frame = _frame(data)
        if status != "ok":
            return f"rejected:{status}", None
        if frame["type"] == "hello_ack":
            if self.state != "handshaking":
                return "stale_ack", None
            server_nonce = P.peek_server_nonce(data)
            if server_nonce is None:
                return "rejected:bad_length", None
            keys = P.derive_session_keys(
                self.key,
                self.nonce,
                server_nonce,
                self.client_role,
                self.server_role,
                self.session_id,
                frame["session_id"],
            )
            status, ack = _decode(data, keys[1])
            if status != "ok":
                return f"rejected:{status}", None
            if ack["client_session_id"] != self.session_id or not hmac.compare_digest(ack["client_nonce"], self.nonce):
                return "stale_ack", None
            if ack["role"] != self.server_role or ack["dof"] != self.dof:
                return "mismatch", ack
            if self.robot_link and (self.limits_digest == 0 or ack["limits_digest"] != self.limits_digest):
                return "limits_mismatch", ack
            self.keys = keys
            self.server_session_id = frame["session_id"]
            self.tracker = P.SequenceTracker()
            self.tracker.check(frame["session_id"], frame["sequence"])
            self.state = "established"
            self.ack = ack
            return "established", ack
        if self.state != "established":
            return "no_session", None
        if frame["session_id"] != self.server_session_id:
            return "unexpected_session", None
        status, packet = _decode(data, self.keys[1])
        if status != "ok":
            return f"rejected:{status}", None
        verdict = self.tracker.check(frame["session_id"], frame["sequence"])
        if verdict in ("duplicate", "stale"):
            return verdict, None
        return "accepted", packet
