"""Simulated camera server: streams ball detections over UDP (docs/protocol.md, "Camera stream").

Design notes: docs/sim.md, section `robot_rt.sim.camera`.
"""

from __future__ import annotations

import ipaddress
import random
import selectors
import socket
import time
from collections import Counter

import numpy as np

from robot_rt.control import protocol as P
from robot_rt.control.background import BackgroundThread
from robot_rt.control.session import ServerSessions


class CameraServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate_hz: float = 150.0,
        serve_interval_s: float = 1.5,
        n_serves: int = 4,
        seed: int = 0,
        camera_id: int = 1,
        key: bytes | str | None = None,
        allow_remote: bool = False,
        subscriber_timeout_s: float = 1.0,
        tracker_overrides: dict | None = None,
        ball_source=None,
    ):
        from robot_rt.estimation import ServeGenerator, SimulatedTracker

        if not 1.0 <= rate_hz <= 1000.0:
            raise ValueError(f"rate_hz: expected a frame rate in [1, 1000] Hz, got {rate_hz}")
        if not serve_interval_s > 0:
            raise ValueError(f"serve_interval_s: expected a positive interval, got {serve_interval_s}")
        if n_serves < 1:
            raise ValueError(f"n_serves: expected at least 1, got {n_serves}")
        self.rate_hz = float(rate_hz)
        self.serve_interval_s = float(serve_interval_s)
        self.camera_id = int(camera_id)
        self.key = key.encode() if isinstance(key, str) else (key or None)
        self.allow_remote = bool(allow_remote)
        if not self.key:
            if not ipaddress.ip_address("127.0.0.1" if host == "localhost" else host).is_loopback:
                raise ValueError(
                    f"key: unauthenticated UDP (no shared key) is allowed on loopback only, and {host!r} is not a "
                    "loopback address; give the shared key (--key-file)"
                )
            if self.allow_remote:
                raise ValueError("allow_remote: remote subscribers need a shared key (--key-file)")
        self.subscriber_timeout_s = float(subscriber_timeout_s)
        self.serves = ServeGenerator(seed=seed).sample(int(n_serves))
        self.tracker = SimulatedTracker(seed=seed, rate_hz=rate_hz, **(tracker_overrides or {}))
        self.sessions = ServerSessions(
            self.key,
            P.ROLE_CAMERA_SERVER,
            P.ROLE_CAMERA_SUBSCRIBER,
            0,
            session_id=random.SystemRandom().randrange(1, 2**32),
            session_timeout_s=subscriber_timeout_s,
            max_sessions=8,
        )
        self.session_id = self.sessions.session_id
        self.sequence = 0
        self.frame_id = 0
        self.stats: Counter = Counter()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, int(port)))
        self._sock.setblocking(False)
        self.host, self.port = self._sock.getsockname()
        self._pending: list[tuple[float, float, np.ndarray]] = []  # (arrival, capture, xyz) on time.monotonic()
        self._next_serve_t = 0.0
        self._serve_index = 0
        self._worker = BackgroundThread(self._run, "camera-server")
        # rally mode (robot_rt.sim.rally.RallySource): frames come from the source, sent when they arrive
        self.ball_source = ball_source

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> CameraServer:
        self._next_serve_t = time.monotonic() + 0.2
        self._worker.start()
        return self

    def stop(self) -> None:
        self._worker.stop()
        for addr in list(self.subscribers):  # an authenticated goodbye: subscribers re-subscribe at once
            self._send({"type": "goodbye", "reason": P.GOODBYE_STOP}, addr)
        self._sock.close()

    @property
    def subscribers(self) -> list:
        """Addresses of the live subscriber sessions."""
        return list(self.sessions.live)

    def __enter__(self) -> CameraServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- internals
    def _send(self, packet: dict, addr, reply=None) -> None:
        self.sequence += 1
        stamp = time.monotonic_ns()
        if reply is not None:  # a hello_ack, under its pending session's key
            data = reply.encode(self.sequence, stamp)
        else:
            data = self.sessions.encode(addr, dict(packet, sequence=self.sequence, stamp_ns=stamp))
        try:
            self._sock.sendto(data, addr)
            self.stats["tx_datagrams"] += 1
        except OSError:
            self.stats["tx_errors"] += 1

    def _allowed(self, addr) -> bool:
        return self.allow_remote or ipaddress.ip_address(addr[0]).is_loopback

    def _receive(self, now: float) -> None:
        for _ in range(64):  # bounded per call: a flood cannot stall the frame stream
            try:
                data, addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.stats["rx_datagrams"] += 1
            if not self._allowed(addr):
                self.stats["rx_unexpected_source"] += 1
                continue
            received_ns = time.monotonic_ns()
            verdict, packet, reply = self.sessions.receive(data, addr, received_ns)
            if verdict.startswith("rejected:"):
                self.stats[f"rx_{verdict[9:]}"] += 1
                self.stats["rx_malformed"] += 1
            elif verdict == "ack":
                self.stats["rx_accepted"] += 1
                self._send({}, addr, reply)
            elif verdict == "accepted_new_session":
                self.stats["rx_accepted"] += 1
                self.stats["subscribed"] += 1
                self._echo(packet, addr, received_ns)
            elif verdict == "accepted":
                self.stats["rx_accepted"] += 1  # a keep-alive heartbeat
                self._echo(packet, addr, received_ns)
            elif verdict == "goodbye":
                self.stats["rx_accepted"] += 1
                self.stats["unsubscribed"] += 1
            else:
                self.stats[f"rx_{verdict}"] += 1

    def _echo(self, packet, addr, received_ns: int) -> None:
        """Answers a subscriber's heartbeat with its echo: the round trip lets the subscriber bound how long frames
        take to reach it (docs/protocol.md, "Camera stream": frames held back are not used)."""
        if packet is not None and packet.get("type") == "heartbeat":
            echo = {"echo_sequence": packet["sequence"], "echo_stamp_ns": packet["stamp_ns"]}
            self._send(dict(type="heartbeat", echo_receive_ns=received_ns, **echo), addr)

    def _schedule_serve(self, now: float) -> None:
        serve = self.serves[self._serve_index % len(self.serves)]
        self._serve_index += 1
        det = self.tracker.observe(serve, t_offset_s=now)
        for t_arrival, t_capture, xyz in zip(det.t_arrival_s, det.t_capture_s, det.position_m):
            self._pending.append((float(t_arrival), float(t_capture), np.asarray(xyz, dtype=np.float64)))
        self._pending.sort(key=lambda item: item[0])
        self.stats["serves"] += 1

    def _frame(self, now: float) -> None:
        self.stats["unsubscribed"] += len(self.sessions.expire(time.monotonic_ns()))
        due = 0
        while due < len(self._pending) and self._pending[due][0] <= now and due < P.MAX_BALLS:
            due += 1
        ready, self._pending = self._pending[:due], self._pending[due:]
        self.frame_id += 1
        observations = [
            {
                "capture_age_ns": max(0, int((now - t_capture) * 1e9)),
                "frame_id": self.frame_id,
                "confidence": 1.0,
                "position_m": xyz.tolist(),
            }
            for _, t_capture, xyz in ready
        ]
        self.stats["frames"] += 1
        self.stats["detections"] += len(observations)
        for addr in list(self.subscribers):
            self._send({"type": "ball_observations", "camera_id": self.camera_id, "observations": observations}, addr)

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        next_frame = time.monotonic()
        try:
            while not self._worker.stop_event.is_set():
                now = time.monotonic()
                if self.ball_source is not None:
                    frames = self.ball_source.advance(now)
                    if frames:
                        self._pending.extend(
                            (float(a), float(c), np.asarray(p, dtype=np.float64)) for a, c, p in frames
                        )
                        self._pending.sort(key=lambda item: item[0])
                    # a detection goes out as soon as its (modelled) latency has passed, not at the next tick
                    if self._pending and self._pending[0][0] <= now:
                        next_frame = min(next_frame, now)
                elif now >= self._next_serve_t:
                    self._schedule_serve(now)
                    self._next_serve_t = now + self.serve_interval_s
                if now >= next_frame:
                    self._receive(now)
                    self._frame(now)
                    next_frame += period
                    if now - next_frame > 10 * period:  # stalled: resynchronise
                        next_frame = now + period
                    continue
                wake = next_frame
                if self.ball_source is not None:
                    wake = min(wake, now + self.ball_source.dt, self._pending[0][0] if self._pending else wake)
                if sel.select(max(0.0, min(wake - now, 0.05))):
                    self._receive(time.monotonic())
        finally:
            sel.close()
