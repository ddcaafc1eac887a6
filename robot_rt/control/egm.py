"""ABB EGM: `--robot egm://HOST:PORT` (the arm over Externally Guided Motion) composed with the gantry's driver into
one 8-joint robot (docs/egm.md). The driver itself is C++ (csrc/robot_rt/control/egm_driver.hpp); this module parses
the URL and builds it.

    egm://HOST:PORT[?controller=IP[:PORT]&joints=6]
        HOST:PORT   where this machine listens: the address and port the controller's UdpUc device sends to
        controller  accept EGM messages from this IP only (and from this source port only, when given); required
                    unless HOST is loopback (EGM has no authentication: on a network the first sender would
                    otherwise become the controller). On loopback give the port: every local process sends from
                    127.0.0.1, and without the port one could take the session over after a link loss
        joints      how many of the robot's joints the arm has (default 6: the last six of the description)

The arm's joints are the last `joints` joints of the robot description; the others (the gantry) come from a second
driver, `--gantry udp://HOST:PORT` (the project's UDP protocol). The loop sees one CompositeDriver, so its safety
layer (limits, workspace box, stops, watchdogs) applies unchanged to all 8 joints.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

EGM_PORT_DEFAULT = 6510  # the port ABB's examples configure in the UdpUc device


@dataclass(frozen=True)
class EgmTarget:
    bind_host: str
    port: int
    controller_host: str  # "" = the first sender
    joints: int
    controller_port: int = 0  # the controller's source port (0: any)


def parse_egm_url(url: str) -> EgmTarget:
    """Parses ``egm://HOST:PORT[?controller=IP[:PORT]&joints=N]``; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "egm" or not parts.netloc:
        raise ValueError(f"robot: expected egm://HOST:PORT, got {url!r}")
    host, sep, port_text = parts.netloc.rpartition(":")
    if not sep or not host:
        raise ValueError(f"robot: expected egm://HOST:PORT with an explicit port, got {url!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"robot: the port of {url!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"robot: expected a port in 0..65535 (0: any free port), got {port}")
    host = "127.0.0.1" if host == "localhost" else host
    _ipv4(host, "robot host")
    query = parse_qs(parts.query, strict_parsing=False)
    unknown = set(query) - {"controller", "joints"}
    if unknown:
        raise ValueError(f"robot: unknown egm:// URL options {sorted(unknown)} (expected controller=, joints=)")
    controller = query.get("controller", [""])[-1]
    controller_port = 0
    if ":" in controller:
        controller, _, source_port = controller.partition(":")
        if not (source_port.isdigit() and 1 <= int(source_port) <= 65535):
            raise ValueError(f"controller: expected IP or IP:PORT with a port in 1..65535, got port {source_port!r}")
        controller_port = int(source_port)
    if controller:
        _ipv4(controller, "controller")
    elif controller_port:
        raise ValueError("controller: a source port needs the controller's address (controller=IP:PORT)")
    _check_egm_addresses(host, controller)
    try:
        joints = int(query.get("joints", ["6"])[-1])
    except ValueError:
        raise ValueError("joints: expected an integer number of arm joints") from None
    if not 1 <= joints <= 16:
        raise ValueError(f"joints: expected 1..16 arm joints, got {joints}")
    return EgmTarget(
        bind_host=host, port=port, controller_host=controller, joints=joints, controller_port=controller_port
    )


def _check_egm_addresses(host: str, controller: str) -> None:
    """EGM is unauthenticated: only loopback and private networks, and off loopback only the named controller."""
    bind = ipaddress.IPv4Address(host)
    if not (bind.is_loopback or bind.is_private or bind.is_unspecified):
        raise ValueError(
            f"robot host: EGM has no authentication; expected a loopback or private-network address to listen on, "
            f"got {host}"
        )
    if controller:
        peer = ipaddress.IPv4Address(controller)
        if not (peer.is_loopback or peer.is_private) or peer.is_unspecified:
            raise ValueError(
                f"controller: EGM has no authentication; expected the robot controller's loopback or private-network "
                f"address, got {controller}"
            )
    elif not bind.is_loopback:
        raise ValueError(
            f"controller: listening on {host} (not loopback), give the robot controller's address "
            f"(egm://{host}:PORT?controller=IP): EGM has no authentication, and the first sender on the network "
            "would otherwise become the controller"
        )


def _ipv4(text: str, what: str) -> None:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{what}: expected an IPv4 address, got {text!r}") from None


def egm_unit_factors(robot, joints: int) -> list[float]:
    """SI units per EGM unit for the arm's joints (the last `joints` of `robot`): pi/180 (rad per degree) for a
    revolute joint, 1e-3 (m per mm) for a prismatic one."""
    arm = robot.joints[robot.dof - joints :]
    return [math.pi / 180.0 if j.type == "revolute" else 1e-3 for j in arm]


# The ABB IRB 120T's axis ranges (product manual 3HAC035728-001, "Robot motion") and speeds (its data sheet): the
# data behind the shipped description (docs/robot.md, table of sources). EGM has no handshake that could check the arm's limits the way the UDP protocol's
# digest does (docs/protocol.md), so the arm limits the loop enforces over EGM are held against these: a description
# whose arm may go wider or faster (a typo, a range copied from another arm) would let the loop send references
# beyond the controller's own axis range.
IRB120T_AXIS_RANGE_DEG = (
    (-165.0, 165.0),
    (-110.0, 110.0),
    (-110.0, 70.0),
    (-160.0, 160.0),
    (-120.0, 120.0),
    (-400.0, 400.0),
)
IRB120T_AXIS_SPEED_DEGPS = (250.0, 250.0, 250.0, 420.0, 590.0, 600.0)
# ABB publishes no joint accelerations or jerks: the project's conservative bounds (docs/robot.md, the shipped
# description's values). No handshake carries the arm's limits, so a description asking for more is refused (the
# eighth audit drove axes 1 and 6 at 5x these with a description whose gantry digest still matched).
IRB120T_AXIS_ACCELERATION_RADPS2 = (30.0, 30.0, 30.0, 40.0, 40.0, 50.0)
IRB120T_AXIS_JERK_RADPS3 = (600.0, 600.0, 600.0, 800.0, 800.0, 1000.0)
_DATA_SHEET_TOLERANCE_DEG = 1e-3  # the description stores the ranges in rad, rounded


def check_egm_arm_limits(robot, joints: int) -> None:
    """ValueError naming the joint unless each of the arm's joints (the last `joints` of `robot`, which EGM drives) is
    revolute (EGM joint values are degrees: a prismatic joint would be scaled as mm) with a range and speed inside the
    IRB 120T's data sheet (`IRB120T_AXIS_RANGE_DEG`, `IRB120T_AXIS_SPEED_DEGPS`) and an acceleration and jerk within
    the project's bounds for it (`IRB120T_AXIS_ACCELERATION_RADPS2`, `IRB120T_AXIS_JERK_RADPS3`). Narrower or slower
    limits pass."""
    if joints != len(IRB120T_AXIS_RANGE_DEG):
        raise ValueError(
            f"joints: the EGM arm is an ABB IRB 120T with {len(IRB120T_AXIS_RANGE_DEG)} axes, the URL asks for {joints}"
        )
    tol = _DATA_SHEET_TOLERANCE_DEG
    arm = robot.joints[robot.dof - joints :]
    bounds = zip(
        arm,
        IRB120T_AXIS_RANGE_DEG,
        IRB120T_AXIS_SPEED_DEGPS,
        IRB120T_AXIS_ACCELERATION_RADPS2,
        IRB120T_AXIS_JERK_RADPS3,
    )
    for axis, (joint, (low, high), speed, acceleration, jerk) in enumerate(bounds, 1):
        where = f"robot description {robot.name!r}, joint {joint.name!r} (EGM axis {axis})"
        if joint.type != "revolute":
            raise ValueError(f"{where}: expected a revolute joint (EGM sends degrees), got {joint.type!r}")
        lo, hi = math.degrees(joint.position_min), math.degrees(joint.position_max)
        if lo < low - tol or hi > high + tol:
            raise ValueError(
                f"{where}: range [{lo:.3f}, {hi:.3f}] deg is wider than the IRB 120T's axis range [{low}, {high}] deg"
            )
        v = math.degrees(joint.velocity_limit)
        if v > speed + tol:
            raise ValueError(f"{where}: velocity limit {v:.3f} deg/s is above the IRB 120T's axis speed {speed} deg/s")
        if not (
            0.0 < joint.acceleration_limit <= acceleration * (1 + 1e-9) and 0.0 < joint.jerk_limit <= jerk * (1 + 1e-9)
        ):
            raise ValueError(
                f"{where}: acceleration / jerk limits {joint.acceleration_limit:g} rad/s^2 / {joint.jerk_limit:g} "
                f"rad/s^3 are above the project's bounds for the IRB 120T, {acceleration:g} / {jerk:g} (docs/egm.md)"
            )


def check_egm_links(driver, robot) -> None:
    """`check_egm_arm_limits` for every EGM arm in `driver` against the description the loop enforces (`robot`), so
    a driver built for one description cannot run under a loop given a wider one; ValueError also when an arm is not
    the robot's last joints (where EGM's joint values and units are taken from)."""
    from robot_rt import _control

    from .udp import driver_parts

    for link, first in driver_parts(driver, _control.EgmDriver):
        dof = int(link.dof)
        if first + dof != robot.dof:
            raise ValueError(
                f"driver: its EGM arm drives joints {first}..{first + dof - 1}, expected the robot description's last "
                f"{dof} of {robot.dof}"
            )
        check_egm_arm_limits(robot, dof)
        # a hand-built driver: its unit factors must be the description's (else every reference is scaled: an audit
        # drove 29 references up to 0.77 rad beyond the axis ranges with mm factors on revolute axes), and its
        # addresses those parse_egm_url allows
        want = egm_unit_factors(robot, dof)
        if any(abs(a - b) > 1e-12 * abs(b) for a, b in zip(link.si_per_egm, want)):
            raise ValueError(
                f"driver: its EGM unit factors {list(link.si_per_egm)} are not the description's {want} (pi/180 per "
                "degree for revolute joints, 1e-3 per mm for prismatic ones)"
            )
        _check_egm_addresses(link.bind_host, link.controller_host)
        # and its run marker (docs/egm.md, "Stops between runs"): without the controller's marker, a driver built by
        # hand would never see the stop an earlier run left (the review of the sixth audit's fixes moved the arm
        # 0.27 rad that way)
        if int(link.port) != 0:
            want_marker = state_dir() / _marker_name(int(link.port))
            if link.run_marker_path != str(want_marker):
                raise ValueError(
                    f"driver: its EGM run marker is {link.run_marker_path or 'none'!r}, expected {str(want_marker)!r}: "
                    "build it with robot_rt.control.egm.make_egm_driver"
                )


SYSTEM_STATE_DIR = Path("/var/lib/robot_rt")


def state_dir() -> Path:
    """The one place where robot_rt keeps state between runs on this machine, the same for every user and
    environment (a robot is shared): $ROBOT_RT_STATE_DIR (an absolute path) when set, else SYSTEM_STATE_DIR. Every run
    on a robot must use the same one: set the variable for all of them or for none."""
    explicit = os.environ.get("ROBOT_RT_STATE_DIR", "")
    if explicit:
        if not os.path.isabs(explicit):
            raise ValueError(f"ROBOT_RT_STATE_DIR: expected an absolute path, got {explicit!r}")
        return Path(explicit)
    return SYSTEM_STATE_DIR


def _marker_name(port: int) -> str:
    # one file per EGM port of this machine: what every URL for one controller's UdpUc device has in common (its
    # controller= and the listening address may be spelled in several ways: the review of 5ead296 moved the arm
    # that way); a MultiMove controller's arms have a port each
    return f"egm-{port}.run"


def egm_run_marker_path(url: str) -> Path | None:
    """The run marker of the EGM controller at `url` (docs/egm.md, "Stops between runs"): `state_dir()` /
    egm-PORT.run; None for port 0 (an ephemeral port, which no controller's UdpUc device can name:
    tests)."""
    target = parse_egm_url(url)
    if target.port == 0:
        return None
    return state_dir() / _marker_name(target.port)


def existing_run_markers(url: str) -> list[Path]:
    """The marker an earlier run on the controller at `url` left ([] or [path]): the next run starts stopped."""
    marker = egm_run_marker_path(url)
    return [marker] if marker is not None and os.path.exists(marker) else []


def make_egm_driver(url: str, robot, **options):
    """The C++ EgmDriver for the arm of `robot` (options: hold_s, link_timeout_s); ValueError when the description's
    arm is not within the IRB 120T's data sheet (`check_egm_arm_limits`). Its run marker (`egm_run_marker_path`)
    carries a stop nobody recovered, or a run that never ended, to the next run, which starts stopped."""
    from robot_rt import _control

    target = parse_egm_url(url)
    if target.joints > robot.dof:
        raise ValueError(f"joints: the robot has {robot.dof} joints, the URL asks for {target.joints} arm joints")
    check_egm_arm_limits(robot, target.joints)
    marker = egm_run_marker_path(url)
    return _control.EgmDriver(
        target.bind_host,
        target.port,
        target.joints,
        si_per_egm=egm_unit_factors(robot, target.joints),
        controller_host=target.controller_host,
        controller_port=target.controller_port,
        run_marker_path="" if marker is None else str(marker),
        **options,
    )


def make_egm_robot_driver(url: str, robot, gantry=None, **options):
    """The robot's driver for `--robot egm://...`: the EGM arm alone when it has all the robot's joints, else a
    CompositeDriver of `gantry` (a driver of the first robot.dof - joints joints, e.g. make_udp_driver(...)) and
    the arm, in joint order."""
    from robot_rt import _control

    arm = make_egm_driver(url, robot, **options)
    rest = robot.dof - parse_egm_url(url).joints
    if rest == 0:
        if gantry is not None:
            raise ValueError("gantry: the arm has all the robot's joints; no gantry driver expected")
        return arm
    if gantry is None:
        raise ValueError(
            f"gantry: the robot has {robot.dof} joints and the EGM arm {robot.dof - rest}: give the driver of the "
            f"other {rest} (--gantry udp://HOST:PORT)"
        )
    if gantry.dof != rest:
        raise ValueError(f"gantry: expected a driver of {rest} joints, got {gantry.dof}")
    return _control.CompositeDriver([gantry, arm])
