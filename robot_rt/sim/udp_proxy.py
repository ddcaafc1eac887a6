"""A fault-injecting UDP proxy on loopback, for tests and demos of the robot link.

Design notes: docs/sim.md, section `robot_rt.sim.udp_proxy`.
"""

from __future__ import annotations

import heapq
import platform
import random
import selectors
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from robot_rt.control.background import BackgroundThread

_GENERIC_SOCKET_ABI = ("x86_64", "i686", "aarch64", "armv7l", "riscv64")
_STAMP_SPACE = socket.CMSG_SPACE(16)  # one struct timespec
# Python names no SO_TIMESTAMPNS; it is 35 in Linux's asm-generic socket.h (x86, arm, riscv); elsewhere the proxy
# stamps a datagram when its thread reads it
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", None)
if _SO_TIMESTAMPNS is None and sys.platform.startswith("linux") and platform.machine() in _GENERIC_SOCKET_ABI:
    _SO_TIMESTAMPNS = 35


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_prob: float = 0.0
    delay_s: float = 0.0
    corrupt: float = 0.0
    truncate: float = 0.0
    garbage: float = 0.0  # probability, per forwarded datagram, of injecting an extra random datagram
    blackhole: bool = False

    def __post_init__(self):
        for name in ("drop", "duplicate", "reorder", "delay_prob", "corrupt", "truncate", "garbage"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {value}")
        if self.delay_s < 0:
            raise ValueError(f"delay_s: expected >= 0, got {self.delay_s}")


@dataclass(frozen=True)
class Captured:
    """One datagram as the proxy received it: when it arrived at the proxy's socket (the kernel's receive stamp, on
    time.monotonic()'s clock, in seconds; not when the proxy's thread got round to reading it, which a loaded machine
    can delay by tens of milliseconds), 'up' (client -> server) or 'down', and its bytes."""

    t_s: float
    direction: str
    data: bytes


@dataclass
class _Direction:
    faults: Faults = field(default_factory=Faults)
    held: tuple | None = None  # a datagram held back for reordering


class FaultProxy:
    def __init__(self, server: tuple[str, int], seed: int = 0, host: str = "127.0.0.1", record: bool = False):
        self.server = (server[0], int(server[1]))
        self.record = bool(record)
        self.captured: list[Captured] = []
        self.rng = random.Random(seed)
        self.injected = {"up": Counter(), "down": Counter()}
        self.forwarded = {"up": 0, "down": 0}
        self._dirs = {"up": _Direction(), "down": _Direction()}
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind((host, 0))
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back.bind((host, 0))
        for s in (self._front, self._back):
            s.setblocking(False)
        # recording: the kernel stamps each datagram as it arrives (CLOCK_REALTIME), a captured datagram's time is its
        # arrival (a proxy that records nothing reads plainly: no ancillary data per datagram)
        self.kernel_stamps = self.record and _SO_TIMESTAMPNS is not None
        if self.kernel_stamps:
            try:
                for s in (self._front, self._back):
                    s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            except OSError:
                self.kernel_stamps = False
        self.port = self._front.getsockname()[1]
        self.upstream_address = self._back.getsockname()  # the source address the server sees
        self.client: tuple[str, int] | None = None
        self._queue: list = []
        self._counter = 0
        self._lock = threading.Lock()
        self._worker = BackgroundThread(self._run, "udp-fault-proxy")

    # -------------------------------------------------------------- control
    def set_faults(self, direction: str = "both", **kw) -> None:
        """Replaces the faults of 'up', 'down' or 'both' directions (keyword arguments of `Faults`)."""
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction: expected 'up', 'down' or 'both', got {direction!r}")
        faults = Faults(**kw)
        with self._lock:
            for d in ("up", "down") if direction == "both" else (direction,):
                self._dirs[d].faults = faults

    def clear_faults(self) -> None:
        self.set_faults("both")

    def inject(self, direction: str, data: bytes) -> None:
        """Sends `data` into the stream now, from the proxy's side of the link: 'up' reaches the server from the
        address the session's own datagrams come from, 'down' reaches the client from the server's address
        (an on-path attacker; robot_rt.sim.attack). Counted in injected[direction]['injected']."""
        if direction not in ("up", "down"):
            raise ValueError(f"direction: expected 'up' or 'down', got {direction!r}")
        if direction == "down" and self.client is None:
            raise RuntimeError("inject('down'): no client has sent anything through the proxy yet")
        if direction == "up":
            self._back.sendto(bytes(data), self.server)
        else:
            self._front.sendto(bytes(data), self.client)
        self.injected[direction]["injected"] += 1

    def start(self) -> FaultProxy:
        self._worker.start()
        return self

    def stop(self) -> None:
        self._worker.stop()
        self._front.close()
        self._back.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- internals
    def _receive(self, sock: socket.socket) -> tuple[bytes, tuple, float]:
        """(data, source address, arrival time on time.monotonic()'s clock) of one datagram (the time it was read
        where the kernel gives no stamp)."""
        if not self.kernel_stamps:
            data, addr = sock.recvfrom(2048)
            return data, addr, time.monotonic()
        data, ancillary, _flags, addr = sock.recvmsg(2048, _STAMP_SPACE)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= 16:
                seconds, nanoseconds = struct.unpack_from("qq", payload)
                now_ns = time.monotonic_ns()
                realtime_minus_monotonic_ns = time.time_ns() - now_ns
                arrived_ns = seconds * 1_000_000_000 + nanoseconds - realtime_minus_monotonic_ns
                return data, addr, min(arrived_ns, now_ns) * 1e-9  # (never later than now: a slewed wall clock)
        return data, addr, time.monotonic()

    def _schedule(self, due: float, direction: str, data: bytes) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (due, self._counter, direction, data))

    def _send(self, direction: str, data: bytes) -> None:
        try:
            if direction == "up":
                self._back.sendto(data, self.server)
            elif self.client is not None:
                self._front.sendto(data, self.client)
            self.forwarded[direction] += 1
        except OSError:
            pass  # the far end is gone (e.g. a restarting server): the datagram is lost, like on a wire

    def _inject(self, direction: str, data: bytes, now: float) -> None:
        with self._lock:
            d = self._dirs[direction]
            f = d.faults
        count = self.injected[direction]
        r = self.rng
        if f.blackhole:
            count["blackhole"] += 1
            return
        if f.garbage and r.random() < f.garbage:
            count["garbage"] += 1
            self._schedule(now, direction, bytes(r.randrange(256) for _ in range(r.randrange(1, 120))))
        if f.drop and r.random() < f.drop:
            count["drop"] += 1
            return
        if f.corrupt and r.random() < f.corrupt:
            count["corrupt"] += 1
            b = bytearray(data)
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
            data = bytes(b)
        if f.truncate and r.random() < f.truncate and len(data) > 1:
            count["truncate"] += 1
            data = data[: r.randrange(1, len(data))]
        due = now
        if f.delay_prob and r.random() < f.delay_prob:
            count["delay"] += 1
            due = now + f.delay_s
        copies = 1
        if f.duplicate and r.random() < f.duplicate:
            count["duplicate"] += 1
            copies = 2
        if d.held is None and f.reorder and r.random() < f.reorder:
            count["reorder"] += 1
            d.held = (data, copies)
            return
        for _ in range(copies):
            self._schedule(due, direction, data)
        if d.held is not None:  # the held datagram goes out after this newer one
            held, held_copies = d.held
            d.held = None
            for _ in range(held_copies):
                self._schedule(due, direction, held)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._front, selectors.EVENT_READ, "up")
        sel.register(self._back, selectors.EVENT_READ, "down")
        try:
            while not self._worker.stop_event.is_set():
                now = time.monotonic()
                while self._queue and self._queue[0][0] <= now:
                    _, _, direction, data = heapq.heappop(self._queue)
                    self._send(direction, data)
                timeout = 0.05 if not self._queue else max(0.0, min(0.05, self._queue[0][0] - now))
                for key, _ in sel.select(timeout):
                    sock, direction = key.fileobj, key.data
                    for _ in range(64):
                        try:
                            data, addr, arrived = self._receive(sock)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:  # ICMP port unreachable reported on the socket
                            continue
                        if direction == "up":
                            self.client = addr
                        elif addr != self.server:
                            continue
                        if self.record:
                            self.captured.append(Captured(arrived, direction, data))
                        self._inject(direction, data, time.monotonic())
        finally:
            sel.close()
