"""The joint-limits digest of the handshake (docs/protocol.md, "Joint-limits digest"): a controller whose robot
description has other joint limits than the robot never opens a session with it, so the loop's safety filter can
never pass the robot a command that violates the robot's own limits (the audit's reproducer: a velocity limit given in
deg/s and read as rad/s let 715 out-of-limit commands through).

Python and C++ compute the same digest, and any single limit one ulp off changes it; so does any value of the robot's
geometry (chain, paddle mount, workspace box: the second audit's reproducer, a box floor lowered from the table top to
0 m or the arm mounted 0.5 m higher with the same joint limits, drove the paddle 12 cm into the table); a
RealTimeLoop over UDP with a description that differs from the SimServer's in one limit or in its geometry fails at
start() with a clear error and the robot is sent nothing; with the same description it connects and runs; a UDP
driver that was given no robot description refuses to start (fail closed)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from helpers.robot import wait_until

from robot_rt import _control
from robot_rt.control import protocol as P
from robot_rt.control.loop import RealTimeLoop
from robot_rt.control.policies import Hold
from robot_rt.control.udp import LimitsMismatchError, make_udp_driver, set_limits_digests
from robot_rt.robot import RobotDescription, geometry_digest, joint_limits_digest, limits_digest, load_robot
from robot_rt.sim.server import SimServer

KEY = b"limits digest test key, 32 bytes"
FIELDS = ("position_min", "position_max", "velocity_limit", "acceleration_limit", "jerk_limit")
MISMATCH = "the robot's joint limits or geometry differ from the controller's robot description"


def _with_limit(robot: RobotDescription, joint: int, field: str, value: float) -> RobotDescription:
    joints = list(robot.joints)
    joints[joint] = dataclasses.replace(joints[joint], **{field: float(value)})
    return dataclasses.replace(robot, joints=tuple(joints))


def _cpp_digest(robot: RobotDescription) -> int:
    return _control.limits_digest(*(getattr(robot, f) for f in FIELDS), geometry_digest=geometry_digest(robot))


def _moved(robot: RobotDescription, change: str) -> RobotDescription:
    """`robot` with the same joint limits and one geometry change."""
    if change == "workspace_floor_to_0":  # the box reaches through the table top
        low = np.array(robot.workspace_min_m, dtype=np.float64)
        low[2] = 0.0
        return dataclasses.replace(robot, workspace_min_m=low)
    joints = list(robot.joints)
    j = _first_revolute(robot)
    if change == "arm_mounted_higher":
        x, y, z = joints[j].origin_xyz_m
        joints[j] = dataclasses.replace(joints[j], origin_xyz_m=(x, y, z + 0.5))
    elif change == "axis_flipped":
        joints[j] = dataclasses.replace(joints[j], axis=tuple(-a for a in joints[j].axis))
    elif change == "paddle_offset":
        x, y, z = robot.paddle_origin_xyz_m
        return dataclasses.replace(robot, paddle_origin_xyz_m=(x, y, z + 0.1))
    else:
        raise AssertionError(change)
    return dataclasses.replace(robot, joints=tuple(joints))


GEOMETRY_CHANGES = ("workspace_floor_to_0", "arm_mounted_higher", "axis_flipped", "paddle_offset")


def test_python_and_cpp_agree_and_one_ulp_of_any_limit_changes_the_digest():
    robot = load_robot()
    digest = limits_digest(robot)
    assert digest == _cpp_digest(robot) == P.limits_digest(robot) != 0
    assert digest == joint_limits_digest(*(getattr(robot, f) for f in FIELDS), geometry=geometry_digest(robot))
    # the geometry is folded in: without it (0, not stated) the digest is another, and the C++ function agrees
    bare = joint_limits_digest(*(getattr(robot, f) for f in FIELDS))
    assert bare != digest and bare == _control.limits_digest(*(getattr(robot, f) for f in FIELDS))
    seen = {digest, bare}
    for joint in range(robot.dof):
        for field in FIELDS:
            value = getattr(robot.joints[joint], field)
            for bumped in (np.nextafter(value, math.inf), np.nextafter(value, -math.inf)):
                changed = _with_limit(robot, joint, field, bumped)
                d = limits_digest(changed)
                assert d == _cpp_digest(changed)
                assert d not in seen, (joint, field, bumped)
                seen.add(d)
    for change in GEOMETRY_CHANGES:  # the same limits, another geometry: another digest, in C++ too
        moved = _moved(robot, change)
        assert geometry_digest(moved) != geometry_digest(robot)
        d = limits_digest(moved)
        assert d == _cpp_digest(moved) and d not in seen, change
        seen.add(d)
    # every geometry value counts to the last bit
    low = np.array(robot.workspace_min_m, dtype=np.float64)
    low[0] = np.nextafter(low[0], math.inf)
    assert geometry_digest(dataclasses.replace(robot, workspace_min_m=low)) != geometry_digest(robot)
    with pytest.raises(ValueError, match="finite"):
        geometry_digest(dataclasses.replace(robot, workspace_max_m=np.array([np.nan, 1.0, 2.0])))
    with pytest.raises(ValueError, match="geometry"):
        joint_limits_digest([0.0], [1.0], [1.0], [1.0], [1.0], geometry=-1)
    # a block of joints (one link of a composite robot) has its own digest, with the whole robot's geometry
    assert limits_digest(robot, slice(0, 2)) == joint_limits_digest(
        *(getattr(robot, f)[:2] for f in FIELDS), geometry=geometry_digest(robot)
    )
    assert limits_digest(robot, slice(0, 2)) != digest
    with pytest.raises(ValueError, match="limits"):
        joint_limits_digest([], [], [], [], [])
    with pytest.raises(ValueError, match="limits"):
        _control.limits_digest([0.0], [1.0], [1.0], [1.0], [])
    # canonical: -0.0 is the limit 0.0; a non-finite limit states no limits (0 in C++, refused; an error in Python)
    assert joint_limits_digest([-0.0], [1.0], [1.0], [1.0], [1.0]) == joint_limits_digest(
        [0.0], [1.0], [1.0], [1.0], [1.0]
    )
    assert _control.limits_digest([-0.0], [1.0], [1.0], [1.0], [1.0]) == _control.limits_digest(
        [0.0], [1.0], [1.0], [1.0], [1.0]
    )
    for bad in (math.nan, math.inf, -math.inf):
        assert _control.limits_digest([0.0], [1.0], [bad], [1.0], [1.0]) == 0
        with pytest.raises(ValueError, match="finite"):
            joint_limits_digest([0.0], [1.0], [bad], [1.0], [1.0])


def test_the_sim_server_states_the_digest_of_its_robot():
    robot = load_robot()
    server = SimServer(robot, camera=False)
    assert server.limits_digest == limits_digest(robot)
    assert server.robot_server.stats()["limits_digest"] == limits_digest(robot)
    with pytest.raises(ValueError, match="jerk_limit"):  # a robot side must state every limit
        _control.SimRobotServer([-1.0], [1.0], [1.0], [1.0])


def _first_revolute(robot: RobotDescription) -> int:
    return int(np.flatnonzero(robot.is_revolute)[0])


@pytest.mark.parametrize("key", [b"", KEY], ids=["unauthenticated", "authenticated"])
@pytest.mark.parametrize("change", ["one_ulp", "deg_per_s_read_as_rad_per_s", "gantry_range", *GEOMETRY_CHANGES])
def test_a_controller_with_other_limits_is_refused_and_the_robot_gets_no_command(key, change):
    robot = load_robot()
    if change in GEOMETRY_CHANGES:
        wrong = _moved(robot, change)
    elif change == "one_ulp":
        wrong = _with_limit(robot, 0, "velocity_limit", np.nextafter(robot.velocity_limit[0], math.inf))
    elif change == "deg_per_s_read_as_rad_per_s":
        j = _first_revolute(robot)
        wrong = _with_limit(robot, j, "velocity_limit", math.degrees(robot.velocity_limit[j]))
    else:
        wrong = _with_limit(robot, 0, "position_max", robot.position_max[0] * 1.6)
    server = SimServer(robot, camera=False, key=key).start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # (the unauthenticated-link warning)
            driver = make_udp_driver(f"udp://127.0.0.1:{server.port}?camera=none", robot.dof, key=key)
        loop = RealTimeLoop(wrong, driver, policy=Hold(wrong), rate_hz=500)
        assert driver.limits_digest == limits_digest(wrong) != server.limits_digest
        with pytest.raises(LimitsMismatchError, match=MISMATCH) as info:
            loop.start()
        assert f"{server.limits_digest:#018x}" in str(info.value)  # it names both digests
        assert f"{limits_digest(wrong):#018x}" in str(info.value)
        assert not loop.running
        link = driver.stats()
        assert link["rx_limits_mismatch"] >= 1 and link["peer_limits_digest"] == server.limits_digest
        assert link["sessions_established"] == 0 and link["commands_sent"] == 0
        stats = server.stats()["robot"]
        assert stats["commands_applied"] == 0
        assert stats["sessions"] == 0 and stats["handshakes"] == 0
        assert stats["hellos_limits_refused"] >= 1
        driver.stop()
    finally:
        server.stop()


def test_the_same_description_connects_and_runs():
    robot = load_robot()
    server = SimServer(robot, camera=False, key=KEY).start()
    try:
        driver = make_udp_driver(f"udp://127.0.0.1:{server.port}?camera=none", robot.dof, key=KEY)
        loop = RealTimeLoop(load_robot(), driver, policy=Hold(robot), rate_hz=500)  # (an equal description)
        loop.start()
        try:
            wait_until(lambda: server.stats()["robot"]["commands_applied"] > 50, what="commands to reach the robot")
            assert loop.lifecycle == "active" and not loop.stop_reasons
        finally:
            loop.stop()
        stats = server.stats()["robot"]
        assert stats["sessions"] == 1 and stats["hellos_limits_refused"] == 0
        assert stats["commands_out_of_limits"] == 0
        assert driver.stats()["rx_limits_mismatch"] == 0
    finally:
        server.stop()


def test_a_udp_driver_without_a_robot_description_refuses_to_start():
    robot = load_robot()
    server = SimServer(robot, camera=False, key=KEY).start()
    try:
        driver = make_udp_driver(f"udp://127.0.0.1:{server.port}?camera=none", robot.dof, key=KEY)
        assert driver.limits_digest == 0
        with pytest.raises(RuntimeError, match="no robot description given to the UDP driver"):
            driver.start()
        loop = _control.ControlLoop(driver, RealTimeLoop(robot).model, _control.LoopConfig())  # a bare loop
        with pytest.raises(RuntimeError, match="no robot description given to the UDP driver"):
            loop.start()
        assert server.stats()["robot"]["handshakes"] == 0
        assert server.stats()["robot"]["commands_applied"] == 0
    finally:
        server.stop()


def test_the_loop_gives_each_udp_link_of_a_composite_robot_the_digest_of_its_joints():
    robot = load_robot()
    gantry = _control.UdpDriver("127.0.0.1", 5000, 2)
    arm = _control.UdpDriver("127.0.0.1", 5002, robot.dof - 2)
    composite = _control.CompositeDriver([gantry, arm])
    set_limits_digests(composite, robot)
    assert gantry.limits_digest == limits_digest(robot, slice(0, 2))
    assert arm.limits_digest == limits_digest(robot, slice(2, robot.dof))
    set_limits_digests(composite, robot)  # idempotent
    # a link built for another robot description is refused, not silently re-targeted
    other = _control.UdpDriver("127.0.0.1", 5000, robot.dof, limits_digest=12345)
    with pytest.raises(ValueError, match="another robot description"):
        RealTimeLoop(robot, other)
    # a running link cannot be re-targeted
    running = _control.UdpDriver("127.0.0.1", 5000, robot.dof, limits_digest=12345)
    running.start()
    try:
        with pytest.raises(ValueError, match="stopped"):
            running.limits_digest = limits_digest(robot)
    finally:
        running.stop()


def test_the_python_session_mirror_and_the_cpp_robot_agree_on_the_refusal():
    """robot_rt.control.session.ClientSession against the C++ robot: a wrong digest gets the refusal ack (stating the
    robot's digest) and no session; the right one establishes."""
    import socket
    import time

    from robot_rt.control.session import ClientSession

    robot = load_robot()
    server = SimServer(robot, camera=False, key=KEY).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    try:
        for digest, expected in ((limits_digest(robot) ^ 1, "limits_mismatch"), (0, "limits_mismatch")):
            client = ClientSession(KEY, P.ROLE_CONTROLLER, P.ROLE_ROBOT_SERVER, robot.dof, limits_digest=digest)
            client.begin()
            sock.sendto(client.hello(1, time.monotonic_ns()), ("127.0.0.1", server.port))
            verdict, ack = client.receive(sock.recvfrom(2048)[0])
            assert verdict == expected and ack["limits_digest"] == server.limits_digest
            assert client.state == "handshaking"
        assert server.stats()["robot"]["hellos_limits_refused"] == 2
        assert server.stats()["robot"]["handshakes"] == 0
        client = ClientSession(KEY, P.ROLE_CONTROLLER, P.ROLE_ROBOT_SERVER, robot.dof, limits_digest(robot))
        client.begin()
        sock.sendto(client.hello(1, time.monotonic_ns()), ("127.0.0.1", server.port))
        assert client.receive(sock.recvfrom(2048)[0])[0] == "established"
    finally:
        sock.close()
        server.stop()


def test_a_mujoco_sim_server_refuses_a_description_with_another_geometry():
    """Its physics is generated from the shipped URDF: stating another geometry in the handshake would be a lie."""
    for change in GEOMETRY_CHANGES:
        with pytest.raises(ValueError, match="physics='mujoco'"):
            SimServer(_moved(load_robot(), change), camera=False, physics="mujoco")
