"""Replay and spoofing attacks on the UDP protocol, for tests, demos and the fault-injection matrix (issue 12).

Design notes: docs/sim.md, section `robot_rt.sim.attack`.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Sequence

from robot_rt.control import protocol as P

from .udp_proxy import Captured

__all__ = [
    "Captured",
    "Excursion",
    "Replayer",
    "REFUSAL_COUNTERS",
    "can_spoof",
    "classified_stats",
    "flood",
    "refused_total",
    "info",
    "live_hold_run",
    "record_session",
    "select",
    "wait_at_rest",
]


def info(data: bytes) -> dict | None:
    """Header fields of a datagram (type, session id, sequence, stamp) without any key; None if not framed."""
    try:
        return P.peek(data)
    except P.ProtocolError:
        return None


def select(
    captured: Iterable[Captured], direction: str | None = None, types: Iterable[str] | None = None
) -> list[bytes]:
    """The datagrams of `captured` in `direction` ('up' client -> server, 'down', None: both) of the given types."""
    if direction not in (None, "up", "down"):
        raise ValueError(f"direction: expected 'up', 'down' or None, got {direction!r}")
    wanted = None if types is None else set(types)
    unknown = (wanted or set()) - set(P.TYPES)
    if unknown:
        raise ValueError(f"types: unknown message types {sorted(unknown)} (expected some of {sorted(P.TYPES)})")
    out = []
    for c in captured:
        if direction is not None and c.direction != direction:
            continue
        if wanted is not None:
            header = info(c.data)
            if header is None or header["type"] not in wanted:
                continue
        out.append(c.data)
    return out


def can_spoof() -> bool:
    """Whether this process may forge source addresses (a raw IPv4 socket: root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
        return True
    except PermissionError:
        return False


def _udp_over_ip(source: tuple[str, int], target: tuple[str, int], payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", source[1], target[1], 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,  # the kernel fills in the header checksum
        socket.inet_aton(source[0]),
        socket.inet_aton(target[0]),
    )
    return ip + udp


class Replayer:
    """Sends datagrams from `source` (see the module docstring); `sent` counts them."""

    def __init__(self, source: tuple[str, int] | None = None):
        self.source = ("127.0.0.1", 0) if source is None else (str(source[0]), int(source[1]))
        self.sent = 0
        self._udp: socket.socket | None = None
        self._raw: socket.socket | None = None
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(self.source)
            self._udp = udp
            self.source = udp.getsockname()
        except OSError:  # the address is in use (the live controller's): forge it
            udp.close()
            if self.source[1] == 0:
                raise
            try:
                raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            except PermissionError as err:
                raise PermissionError(
                    f"source: {self.source[0]}:{self.source[1]} is in use and forging it needs a raw socket "
                    "(root or CAP_NET_RAW)"
                ) from err
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            self._raw = raw

    @property
    def spoofing(self) -> bool:
        """True when datagrams go out with a forged source through a raw socket."""
        return self._raw is not None

    def send(self, data: bytes, target: tuple[str, int]) -> None:
        target = (str(target[0]), int(target[1]))
        if self._raw is not None:
            self._raw.sendto(_udp_over_ip(self.source, target, bytes(data)), (target[0], 0))
        else:
            self._udp.sendto(bytes(data), target)
        self.sent += 1

    def replay(
        self,
        datagrams: Sequence[bytes] | Sequence[Captured],
        target: tuple[str, int],
        interval_s: float | None = 0.0,
    ) -> int:
        """Sends the datagrams in order: `interval_s` apart, or with their recorded timing (Captured items and
        interval_s=None). Returns how many were sent."""
        if interval_s is not None and interval_s < 0:
            raise ValueError(f"interval_s: expected >= 0 or None, got {interval_s}")
        t0, first = time.monotonic(), None
        for item in datagrams:
            data = item.data if isinstance(item, Captured) else item
            if interval_s is None:
                if not isinstance(item, Captured):
                    raise TypeError("interval_s=None replays recorded timing: expected Captured items")
                first = item.t_s if first is None else first
                delay = (item.t_s - first) - (time.monotonic() - t0)
                if delay > 0:
                    time.sleep(delay)
            elif interval_s > 0 and self.sent:
                time.sleep(interval_s)
            self.send(data, target)
        return len(datagrams)

    def close(self) -> None:
        for s in (self._udp, self._raw):
            if s is not None:
                s.close()
        self._udp = self._raw = None

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def flood(
    target: tuple[str, int],
    datagrams: Sequence[bytes],
    duration_s: float,
    sources: Sequence[tuple[str, int] | None] = (None,),
    max_datagrams: int | None = None,
    interval_s: float = 0.0,
) -> int:
    """Sends `datagrams` round-robin from each of `sources` in turn for `duration_s` (or until `max_datagrams`):
    as fast as possible, or one round of sources every `interval_s`. Returns how many were sent."""
    if not datagrams:
        raise ValueError("datagrams: expected at least one datagram to flood with")
    if interval_s < 0:
        raise ValueError(f"interval_s: expected >= 0, got {interval_s}")
    replayers = [Replayer(s) for s in sources]
    sent, t_end = 0, time.monotonic() + duration_s
    try:
        while time.monotonic() < t_end and (max_datagrams is None or sent < max_datagrams):
            for r in replayers:
                try:
                    r.send(datagrams[sent % len(datagrams)], target)
                except BlockingIOError:
                    time.sleep(0.0005)  # the socket buffer is full: let the receiver drain
                    continue
                sent += 1
            if interval_s:
                time.sleep(interval_s)
    finally:
        for r in replayers:
            r.close()
    return sent


# ------------------------------------------------------------------------------------------ measurement helpers
class Excursion:
    """Samples a SimServer's robot joints in a thread (every ~0.5 ms) while active: `max_m` is the largest
    |q - q_at_start| seen over all joints (m or rad), `samples` how many snapshots were taken."""

    def __init__(self, server, period_s: float = 0.0005):
        import threading

        self.server = server
        self.period_s = float(period_s)
        self.max_m = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="excursion", daemon=True)

    def _run(self) -> None:
        import numpy as np

        q0 = np.asarray(self.server.robot_server.snapshot()["position"])
        while not self._stop.is_set():
            q = np.asarray(self.server.robot_server.snapshot()["position"])
            self.max_m = max(self.max_m, float(np.max(np.abs(q - q0))))
            self.samples += 1
            time.sleep(self.period_s)

    def __enter__(self) -> Excursion:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# the robot server's counters of datagrams it read and refused (plus the per-reason dict `rx_rejected`)
REFUSAL_COUNTERS = ("rx_unexpected_session", "rx_unexpected_source", "hellos_refused", "rx_duplicate", "rx_stale")


def refused_total(stats: dict) -> int:
    """Datagrams a robot server refused since it started: other sessions, strangers, bad tags, refused hellos,
    duplicates, stale ones."""
    return sum(stats[k] for k in REFUSAL_COUNTERS) + sum(stats["rx_rejected"].values())


def classified_stats(robot_server, tries: int = 500) -> dict:
    """The robot server's stats read at a moment when every datagram it has read is accepted or refused under a
    reason (rx_datagrams == rx_accepted + refused_total). The counters are separate atomics read one after another,
    so a read while the server thread handles a datagram can hold it in rx_datagrams and not yet under its outcome:
    with a live controller streaming, a check of the accounting must not depend on that. Retries up to `tries`
    times (~0.2 ms apart) and returns the last read if none was: a datagram that is never classified is then visible
    to the caller's check, as it should be."""
    for _ in range(tries):
        stats = robot_server.stats()
        if stats["rx_datagrams"] == stats["rx_accepted"] + refused_total(stats):
            return stats
        time.sleep(0.0002)
    return stats


def wait_at_rest(server, timeout_s: float = 5.0, still_s: float = 0.2) -> None:
    """Returns once the SimServer's joints have not changed at all (bit-exact) for `still_s`: any later change
    is motion. RuntimeError after `timeout_s`."""
    t_end = time.monotonic() + timeout_s
    last, still_since = None, time.monotonic()
    while time.monotonic() < t_end:
        q = server.robot_server.snapshot()["position"]
        if q != last:
            last, still_since = q, time.monotonic()
        elif time.monotonic() - still_since > still_s:
            return
        time.sleep(0.005)
    raise RuntimeError(f"the simulated robot did not come to rest within {timeout_s} s")


def record_session(server, key: bytes, move: float = 0.4, joint: int = 0, seconds: float = 1.0):
    """Records a real authenticated session with `server` (a SimServer) through a recording proxy: a controller
    (the C++ UdpDriver) ramps `joint` by `move` over half the time, holds, and says goodbye.
    Returns (captured datagrams, the recorded session's source address as the server saw it)."""
    import numpy as np

    from robot_rt.control.udp import make_udp_driver
    from robot_rt.robot import limits_digest

    from .udp_proxy import FaultProxy

    dof = server.robot.dof
    proxy = FaultProxy(("127.0.0.1", server.port), record=True).start()
    # (no loop sets the joint-limits digest here: the robot's own, as a controller with its description would state)
    driver = make_udp_driver(
        f"udp://127.0.0.1:{proxy.port}?camera=none", dof, key=key, limits_digest=limits_digest(server.robot)
    )
    q0 = np.asarray(server.robot_server.snapshot()["position"], dtype=np.float64)
    step = np.zeros(dof)
    step[joint] = move
    driver.start()
    try:
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < seconds:
            driver.read_state()
            driver.write_command(list(q0 + step * min(1.0, 2.0 * t / seconds)), [0.0] * dof)
            time.sleep(0.002)
    finally:
        driver.stop()
        time.sleep(0.05)
        proxy.stop()
    return proxy.captured, proxy.upstream_address


def live_hold_run(server, key: bytes, attack, log_path, seconds: float = 1.5, rate_hz: float = 500.0) -> dict:
    """A live controller holding the robot still (RealTimeLoop with the Hold policy over the UDP driver, through
    a clean FaultProxy so an attack can inject on its path, with a LinkMonitor writing link events into the run
    log at `log_path`); `attack(proxy, driver)` runs once the robot is at rest, inside an Excursion sampler.
    Returns {'before', 'after'} robot-server stats, {'link_before', 'link'} driver stats, 'excursion_m',
    'attack_s' (the measured window), 'applied_before' (commands applied in the same window length before the
    attack), 'loop' counters and the run log ('log', robot_rt.control.runlog.RunLog)."""
    from robot_rt.control.loop import RealTimeLoop
    from robot_rt.control.policies import Hold
    from robot_rt.control.runlog import read_runlog
    from robot_rt.control.udp import LinkMonitor, make_udp_driver

    from .udp_proxy import FaultProxy

    robot = server.robot
    proxy = FaultProxy(("127.0.0.1", server.port)).start()
    driver = make_udp_driver(f"udp://127.0.0.1:{proxy.port}?camera=none", robot.dof, key=key)
    loop = RealTimeLoop(robot, driver, policy=Hold(robot), rate_hz=rate_hz, policy_rate_hz=50, log_path=log_path)
    loop.start()
    monitor = LinkMonitor(loop, driver, interval_s=0.05).start()
    out: dict = {}
    try:
        time.sleep(0.3)
        wait_at_rest(server)
        applied0 = server.robot_server.stats()["commands_applied"]
        time.sleep(seconds)  # the same window length without an attack: the live controller's own rate
        out["link_before"] = driver.stats()
        out["before"] = classified_stats(server.robot_server)
        out["applied_before"] = out["before"]["commands_applied"] - applied0
        t0 = time.monotonic()
        with Excursion(server) as excursion:
            attack(proxy, driver)
            time.sleep(max(0.2, seconds - (time.monotonic() - t0)))
        out["attack_s"] = time.monotonic() - t0
        out["excursion_m"] = excursion.max_m
        out["after"] = classified_stats(server.robot_server)
        out["link"] = driver.stats()
    finally:
        monitor.stop()
        loop.stop()
        proxy.stop()
    out["loop"] = loop.counters()
    out["log"] = read_runlog(log_path)
    return out
