"""UDP robot link helpers: `udp://` URLs, building the C++ UdpDriver, and logging link events into the run log.

Design notes: docs/protocol.md, section `robot_rt.control.udp`.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .background import BackgroundThread
from .protocol import MIN_LONG_TERM_KEY_BYTES

UNAUTHENTICATED_WARNING = (
    "WARNING: UNAUTHENTICATED robot link (no --key-file): any process on this host can command the robot. "
    "Allowed on loopback only; give --key-file for anything else."
)

LINK_EVENT_CODES = {
    "udp_link_down": 100,  # no state for link_timeout_s (value: 1)
    "udp_link_up": 101,  # states flow again (value: 1)
    "udp_peer_restart": 102,  # the robot server restarted: a new server session id (value: count)
    "udp_lost": 103,  # sequence gaps (value: packets)
    "udp_late": 104,
    "udp_duplicate": 105,
    "udp_stale": 106,  # reordered: older than the newest accepted
    "udp_malformed": 107,  # failed decoding (checksum, length, values, ...), wrong type or dof
    "udp_unexpected_source": 108,
    "udp_send_failed": 109,  # kernel refused a datagram or the encoder refused a command
    "camera_lost": 110,
    "camera_malformed": 111,
    "camera_stale": 112,  # duplicated or reordered frames
    "camera_unexpected_source": 113,
    "camera_restart": 114,
    "udp_unauthenticated": 115,  # the link runs without a key (loopback only), logged once at start
    "udp_auth_failed": 116,  # bad, missing or unexpected tag: forged, or tagged with another session's key
    "udp_unexpected_session": 117,  # datagrams of another session (replayed, old), or with no session up
    "udp_session_established": 118,  # a session with the robot started (value: count)
    "udp_session_lost": 119,  # the robot fell silent for the session timeout or said goodbye
    "udp_future": 120,  # states stamped in the future beyond the clock-offset bound (dropped)
    "udp_clock_rejected": 121,  # round-trip clock samples rejected (outliers, negative delay)
    "udp_version_mismatch": 122,  # datagrams of another protocol version from the robot's address
    "camera_auth_failed": 123,
    "camera_unexpected_session": 124,
    "udp_limits_mismatch": 125,  # the robot states other joint limits than the loop's robot description: no session
    "camera_late": 126,  # frames not surely younger than the late threshold since the camera sent them (dropped)
    "camera_future": 127,  # frames stamped in the future beyond the clock-offset bound (dropped)
}
LINK_EVENT_NAMES = {v: k for k, v in LINK_EVENT_CODES.items()}

_AUTH_STATUSES = ("bad_tag", "missing_tag", "unexpected_tag")


def _rejected(stats: dict, status: str) -> int:
    return int(stats.get("rx_rejected", {}).get(status, 0))


def _auth_failed(stats: dict) -> int:
    return sum(_rejected(stats, k) for k in _AUTH_STATUSES)


def _malformed(stats: dict) -> int:
    """Decode failures other than authentication and version (those have their own events)."""
    return int(stats.get("rx_malformed", 0)) - _auth_failed(stats) - _rejected(stats, "bad_version")


# event name -> counter names summed, or a function of the stats dict
_DRIVER_COUNTERS = {
    "udp_peer_restart": ("peer_restarts",),
    "udp_lost": ("rx_lost",),
    "udp_late": ("rx_late",),
    "udp_duplicate": ("rx_duplicate",),
    "udp_stale": ("rx_stale",),
    "udp_malformed": (_malformed, "rx_mismatch", "rx_wrong_type"),
    "udp_unexpected_source": ("rx_unexpected_source",),
    "udp_send_failed": ("tx_errors", "tx_invalid"),
    "udp_auth_failed": (_auth_failed,),
    "udp_unexpected_session": ("rx_unexpected_session", "rx_no_session", "rx_stale_ack"),
    "udp_session_established": ("sessions_established",),
    "udp_session_lost": ("sessions_lost",),
    "udp_future": ("rx_future",),
    "udp_clock_rejected": ("clock_rejected",),
    "udp_version_mismatch": (lambda s: _rejected(s, "bad_version"),),
    "udp_limits_mismatch": ("rx_limits_mismatch",),
}
_CAMERA_COUNTERS = {
    "camera_lost": ("rx_lost",),
    "camera_malformed": (_malformed, "rx_mismatch", "rx_wrong_type"),
    "camera_stale": ("rx_duplicate", "rx_stale"),
    "camera_unexpected_source": ("rx_unexpected_source",),
    "camera_restart": ("peer_restarts",),
    "camera_auth_failed": (_auth_failed,),
    "camera_unexpected_session": ("rx_unexpected_session", "rx_no_session", "rx_stale_ack"),
    "camera_late": ("rx_late",),
    "camera_future": ("rx_future",),
}


def _sum(stats: dict, keys) -> int:
    """A driver may report a subset of the counters (another RobotDriver, a test double): missing ones are 0."""
    return sum(int(k(stats)) if callable(k) else int(stats.get(k, 0)) for k in keys)


@dataclass(frozen=True)
class UdpTarget:
    host: str
    port: int
    camera_host: str
    camera_port: int  # 0: no camera stream
    bind_host: str = "127.0.0.1"


def _port(text: str, what: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"{what}: expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{what}: expected a port in 1..65535, got {port}")
    return port


def parse_udp_url(url: str) -> UdpTarget:
    """Parses ``udp://HOST:PORT[?camera=...&bind=...]``; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "udp" or not parts.netloc:
        raise ValueError(f"robot: expected udp://HOST:PORT, got {url!r}")
    host, sep, port_text = parts.netloc.rpartition(":")
    if not sep or not host:
        raise ValueError(f"robot: expected udp://HOST:PORT with an explicit port, got {url!r}")
    port = _port(port_text, "robot port")
    query = parse_qs(parts.query, strict_parsing=False)
    unknown = set(query) - {"camera", "bind"}
    if unknown:
        raise ValueError(f"robot: unknown URL options {sorted(unknown)} (expected camera=, bind=)")
    camera_host, camera_port = host, port + 1 if port < 65535 else 0
    if "camera" in query:
        value = query["camera"][-1]
        if value == "none":
            camera_port = 0
        elif ":" in value:
            camera_host, _, cport = value.rpartition(":")
            camera_port = _port(cport, "camera port")
        else:
            camera_port = _port(value, "camera port")
    bind = query.get("bind", ["127.0.0.1"])[-1]
    host = "127.0.0.1" if host == "localhost" else host
    camera_host = "127.0.0.1" if camera_host == "localhost" else camera_host
    return UdpTarget(host=host, port=port, camera_host=camera_host, camera_port=camera_port, bind_host=bind)


MIN_KEY_BYTES = MIN_LONG_TERM_KEY_BYTES  # a hello is tagged with the long-term key: a short key is brute-forced
KEY_FILE_FORBIDDEN_MODE = 0o027  # group write, any access by others (as ssh refuses a private key open to others)


def read_key(path: str | Path | None) -> bytes:
    """The shared HMAC key from a file (whitespace at the ends stripped; at least MIN_KEY_BYTES, e.g. the 64 hex
    digits of `python -c "import secrets; print(secrets.token_hex(32))"`); b'' for None. Whoever reads the robot
    link's key can command the robot, so the file (opened once and checked through that descriptor: no swap between
    check and read) must be a regular file owned by this user or root, not writable by its group nor open to other
    users (mode 600 or 640), and carry no ACL granting more."""
    if path is None:
        return b""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileNotFoundError(f"key_file: not found: {path}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"key_file: {path} is not a regular file (a pipe or a device); give a file of mode 600")
        mode = info.st_mode & 0o777
        if mode & KEY_FILE_FORBIDDEN_MODE:
            raise PermissionError(
                f"key_file: {path} has mode {mode:o}, expected no access for other users and no write access for "
                f"its group (whoever reads the key can command the robot); chmod 600 {path}"
            )
        if info.st_uid not in (os.geteuid(), 0):
            raise PermissionError(
                f"key_file: {path} is owned by uid {info.st_uid}, expected this user ({os.geteuid()}) or root "
                "(another user could have put their own key there)"
            )
        if _has_extended_acl(handle.fileno()):
            raise PermissionError(
                f"key_file: {path} carries an ACL (its mode does not tell who may read it); setfacl -b {path}"
            )
        key = handle.read().strip()
    if not key:
        raise ValueError(f"key_file: {path} is empty")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"key_file: {path} holds {len(key)} bytes, expected at least {MIN_KEY_BYTES} (one sniffed hello lets a short "
            'key be guessed offline); e.g. (umask 077; python -c "import secrets; print(secrets.token_hex(32))" > KEYFILE)'
        )
    return key


def _has_extended_acl(fd: int) -> bool:
    """Whether the open file carries a POSIX access ACL (stored only when it names more than the mode does)."""
    try:
        os.getxattr(fd, "system.posix_acl_access")
    except (OSError, AttributeError):  # no such attribute, no xattr support on this file system or platform
        return False
    return True


def make_udp_driver(url: str, dof: int, key: bytes | str = b"", **options):
    """A C++ UdpDriver for `url` (options: link_timeout_s, hello_interval_s, late_threshold_s, session_timeout_s,
    heartbeat_interval_s, clock_drift_bound, limits_digest). Without a key every address must be on loopback
    (ValueError naming --key-file otherwise), and a RuntimeWarning (UNAUTHENTICATED_WARNING) says the link is open to
    any local process.

    limits_digest: the joint limits the robot must state in the handshake (robot_rt.robot.limits_digest of the robot
    description). RealTimeLoop sets it from its own robot description; a driver used without a loop must be given
    it, or its start() refuses (fail closed: no robot description, no session)."""
    from robot_rt import _control

    target = parse_udp_url(url)
    if isinstance(key, str):
        key = key.encode()
    driver = _control.UdpDriver(
        target.host,
        target.port,
        int(dof),
        key=key,
        bind_host=target.bind_host,
        camera_host=target.camera_host,
        camera_port=target.camera_port,
        **options,
    )
    if not key:  # (the constructor has refused anything but loopback by now)
        warnings.warn(UNAUTHENTICATED_WARNING, RuntimeWarning, stacklevel=2)
    return driver


class LimitsMismatchError(RuntimeError):
    """The robot refused the handshake, or stated other joint limits: its limits differ from the controller's robot
    description (docs/protocol.md, "Joint-limits digest"). No session was opened, no command was sent."""


def driver_parts(driver, kind, first_joint: int = 0) -> list[tuple[object, int]]:
    """(part, index of its first joint in the robot) for every driver of class `kind` in `driver`: the driver itself,
    or the parts of a CompositeDriver (each drives a consecutive block of joints)."""
    from robot_rt import _control

    if isinstance(driver, kind):
        return [(driver, first_joint)]
    composite = getattr(_control, "CompositeDriver", None)
    out: list[tuple[object, int]] = []
    if composite is not None and isinstance(driver, composite):
        for part in driver.parts:
            out += driver_parts(part, kind, first_joint)
            first_joint += int(part.dof)
    return out


def udp_links(driver) -> list[tuple[object, int]]:
    """(UdpDriver, index of its first joint in the robot) for every UDP link in `driver` (`driver_parts`)."""
    from robot_rt import _control

    return driver_parts(driver, _control.UdpDriver)


def set_limits_digests(driver, robot) -> None:
    """Gives every UDP link in `driver` the joint-limits digest of its block of `robot`'s joints (the limits the
    loop's safety filter enforces), so the handshake refuses a robot that states other limits. ValueError when a link
    was already given another digest (built for another robot description) or is running with none."""
    from robot_rt.robot import limits_digest

    for link, first in udp_links(driver):
        dof = int(link.dof)
        if first + dof > robot.dof:
            raise ValueError(
                f"driver: its UDP link drives joints {first}..{first + dof - 1}, the robot description has {robot.dof}"
            )
        digest = limits_digest(robot, slice(first, first + dof))
        current = int(link.limits_digest)
        if current == digest:
            continue
        if current != 0:
            raise ValueError(
                f"driver: its UDP link (joints {first}..{first + dof - 1}) expects joint-limits digest {current:#018x}, "
                f"but the loop's robot description {robot.name!r} has {digest:#018x}: the driver was built for "
                "another robot description"
            )
        link.limits_digest = digest  # (ValueError while the link is running)


def limits_refusals(driver) -> dict[int, int]:
    """Per UDP link in `driver` (by id), how many robot answers it refused for their joint-limits digest so far."""
    return {id(link): int(link.stats().get("rx_limits_mismatch", 0)) for link, _ in udp_links(driver)}


def limits_mismatch_message(driver, robot, before: dict[int, int] | None = None) -> str | None:
    """The error to report when a UDP link in `driver` refused a robot for its joint limits (since `before`, a
    `limits_refusals` snapshot), None when none did."""
    before = before or {}
    for link, first in udp_links(driver):
        stats = link.stats()
        if int(stats.get("rx_limits_mismatch", 0)) <= before.get(id(link), 0):
            continue
        dof = int(link.dof)
        peer = int(stats.get("peer_limits_digest", 0))
        stated = f"states joint-limits digest {peer:#018x}" if peer else "states no joint limits (digest 0)"
        return (
            f"the robot's joint limits or geometry differ from the controller's robot description: the robot (joints {first}.."
            f"{first + dof - 1}) {stated}, the robot description {robot.name!r} has "
            f"{int(stats.get('limits_digest', 0)):#018x}. No session was opened and no command was sent. Check that "
            "both ends load the same robot description, in the same units (e.g. a velocity limit in deg/s read as "
            "rad/s), with the same chain, paddle mount and workspace box."
        )
    return None


class LinkMonitor:
    """Samples a UdpDriver's counters and pushes their growth as run-log events (see docs/protocol.md, `robot_rt.control.udp`)."""

    def __init__(self, loop, driver, interval_s: float = 0.05):
        if not interval_s > 0:
            raise ValueError(f"interval_s: expected a positive number, got {interval_s}")
        self.loop = loop
        self.driver = driver
        self.interval_s = float(interval_s)
        self.totals: dict[str, int] = dict.fromkeys(LINK_EVENT_CODES, 0)
        self.events_pushed = 0
        self._last: dict[str, int] = {}
        self._connected: bool | None = None
        self._worker = BackgroundThread(self._run, "udp-link-monitor")

    @staticmethod
    def _sums(stats: dict) -> dict[str, int]:
        out = {name: _sum(stats, keys) for name, keys in _DRIVER_COUNTERS.items()}
        camera = stats.get("camera")
        if camera is not None:
            out.update({name: _sum(camera, keys) for name, keys in _CAMERA_COUNTERS.items()})
        return out

    def _push(self, name: str, value: float) -> None:
        self.totals[name] += int(value)
        # RealTimeLoop.push_event (public, serialised with the loop's other producers) or a bare ControlLoop's
        ok = self.loop.push_event(LINK_EVENT_CODES[name], -1, float(value))
        if ok:
            self.events_pushed += 1

    def sample(self) -> None:
        """One sampling step (also called once more by stop(), so nothing counted is left out)."""
        stats = self.driver.stats()
        sums = self._sums(stats)
        for name, value in sums.items():
            delta = value - self._last.get(name, 0)
            if delta > 0:
                self._push(name, delta)
        self._last = sums
        connected = bool(stats["connected"])
        if self._connected is not None and connected != self._connected:
            self._push("udp_link_up" if connected else "udp_link_down", 1)
        self._connected = connected

    def _run(self) -> None:
        while not self._worker.stop_event.wait(self.interval_s):
            self.sample()

    def start(self) -> LinkMonitor:
        if not self.driver.stats().get("authenticated", True):
            self._push("udp_unauthenticated", 1)
        self._worker.start()
        return self

    def stop(self) -> None:
        self._worker.stop()
        self.sample()
