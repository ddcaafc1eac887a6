"""A minimal robot server in Python speaking docs/protocol.md through robot_rt.control.session, with a clock
the test controls: a constant offset, a drift, and stamps shifted on chosen states (the time faults of issue 12,
item 4). It answers the handshake, echoes every command (t1, t2) in the next state, answers heartbeats, and
streams states of a robot that simply sits at `position`.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections import Counter

from robot_rt.control import protocol as P
from robot_rt.control.session import ServerSessions


def fake_limits_digest(dof: int) -> int:
    """The joint-limits digest of the fake robot's limits (a controller must state it in its hello)."""
    return P.joint_limits_digest([-1.0] * dof, [1.0] * dof, [1.0] * dof, [10.0] * dof, [100.0] * dof)


class FakeRobot:
    def __init__(
        self,
        dof: int = 3,
        key: bytes | None = None,
        rate_hz: float = 500.0,
        clock_offset_ns: int = 0,
        clock_drift: float = 0.0,
    ):
        self.dof = dof
        self.position = [0.1] * dof
        self.rate_hz = rate_hz
        self.clock_offset_ns = int(clock_offset_ns)
        self.clock_drift = float(clock_drift)
        self._t0 = time.monotonic_ns()
        self.limits_digest = fake_limits_digest(dof)
        self.sessions = ServerSessions(
            key, P.ROLE_ROBOT_SERVER, P.ROLE_CONTROLLER, dof, session_timeout_s=0.5, limits_digest=self.limits_digest
        )
        self.sequence = 0
        self.stats: Counter = Counter()
        self._stamp_shifts: list[int] = []  # added to the header stamp of the next states, one each
        self._lock = threading.Lock()
        self._echo = (0, 0, 0)  # last command: sequence, stamp (t1), receive time (t2, robot clock)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-robot", daemon=True)

    def clock_ns(self) -> int:
        """The robot's clock: monotonic, shifted by the offset and running fast or slow by the drift."""
        now = time.monotonic_ns()
        return now + self.clock_offset_ns + int(self.clock_drift * (now - self._t0))

    def true_offset_ns(self) -> int:
        """The robot clock minus the local monotonic clock, now (what the driver's estimate should find)."""
        now = time.monotonic_ns()
        return self.clock_offset_ns + int(self.clock_drift * (now - self._t0))

    def shift_next_states(self, *shifts_ns: int) -> None:
        """The next len(shifts_ns) states are stamped that much off the robot's clock (one each)."""
        with self._lock:
            self._stamp_shifts.extend(int(s) for s in shifts_ns)

    def start(self) -> FakeRobot:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def __enter__(self) -> FakeRobot:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _send(self, addr, packet: dict, shift_ns: int = 0) -> None:
        self.sequence += 1
        stamp = self.clock_ns() + shift_ns
        self._sock.sendto(self.sessions.encode(addr, dict(packet, sequence=self.sequence, stamp_ns=stamp)), addr)

    def _receive(self) -> None:
        for _ in range(64):
            try:
                data, addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            received = self.clock_ns()
            verdict, packet, reply = self.sessions.receive(data, addr, received)
            self.stats[verdict] += 1
            if verdict in ("ack", "limits_mismatch"):  # (a refusal ack states the robot's digest)
                self.sequence += 1
                # the ack's t2 must be on the robot's clock too
                reply["hello_receive_ns"] = received
                self._sock.sendto(reply.encode(self.sequence, self.clock_ns()), addr)
            elif verdict in ("accepted", "accepted_new_session"):
                if packet["type"] == "joint_command":
                    self._echo = (packet["sequence"], packet["stamp_ns"], received)
                elif packet["type"] == "heartbeat":
                    self._send(
                        addr,
                        {
                            "type": "heartbeat",
                            "echo_sequence": packet["sequence"],
                            "echo_stamp_ns": packet["stamp_ns"],
                            "echo_receive_ns": received,
                        },
                    )

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        period = 1.0 / self.rate_hz
        next_t = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_t:
                    self._receive()
                    for addr in list(self.sessions.live):
                        with self._lock:
                            shift = self._stamp_shifts.pop(0) if self._stamp_shifts else 0
                        seq, t1, t2 = self._echo
                        state = {
                            "type": "joint_state",
                            "position": self.position,
                            "velocity": [0.0] * self.dof,
                            "echo_command_sequence": seq,
                            "echo_command_stamp_ns": t1,
                            "echo_command_receive_ns": t2,
                        }
                        self._send(addr, state, shift)
                        self.stats["states"] += 1
                        if shift:
                            self.stats["shifted_states"] += 1
                    next_t += period
                    if now - next_t > 10 * period:
                        next_t = now + period
                    continue
                if sel.select(max(0.0, min(next_t - now, 0.05))):
                    self._receive()
        finally:
            sel.close()
