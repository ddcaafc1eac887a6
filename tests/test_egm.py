"""ABB EGM (docs/egm.md): the C++ codec against the protobuf runtime (egm.proto), the EgmDriver against the
simulated EGM controller, and the real-time loop on one 8-joint robot made of the gantry's UDP driver and the EGM
arm (CompositeDriver): limits held, the controller's stop states stop the loop, and nothing moves until a reset."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from helpers.ports import free_port
from helpers.robot import wait_ticks, wait_until, with_wide_workspace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robot_rt.robot
from robot_rt import _control
from robot_rt.control.egm import (
    EGM_PORT_DEFAULT,
    check_egm_arm_limits,
    egm_unit_factors,
    make_egm_driver,
    make_egm_robot_driver,
    parse_egm_url,
)
from robot_rt.control.egm_messages import egm_classes, parse_proto, proto_text
from robot_rt.control.loop import TICK_FLAGS, RealTimeLoop
from robot_rt.control.policies import Sine
from robot_rt.control.runlog import read_runlog
from robot_rt.control.udp import make_udp_driver
from robot_rt.robot import geometry_digest, load_robot
from robot_rt.sim.egm_controller import SimulatedEgmController, gantry_description
from robot_rt.sim.server import SimServer

CLASSES = egm_classes()
EgmRobot, EgmSensor = CLASSES["EgmRobot"], CLASSES["EgmSensor"]
ROBOT = load_robot()
ARM = slice(2, 8)


# ------------------------------------------------------------------------------------------------ egm.proto
def test_proto_has_abbs_field_numbers():
    """Field numbers as ABB publishes them (a wrong number would still round-trip within one implementation)."""
    numbers = {f.name: f.number for f in EgmRobot.DESCRIPTOR.fields}
    assert numbers == {
        "header": 1,
        "feedBack": 2,
        "planned": 3,
        "motorState": 4,
        "mciState": 5,
        "mciConvergenceMet": 6,
        "testSignals": 7,
        "rapidExecState": 8,
        "measuredForce": 9,
        "utilizationRate": 10,
    }
    assert {f.name: f.number for f in EgmSensor.DESCRIPTOR.fields} == {"header": 1, "planned": 2, "speedRef": 3}
    header = CLASSES["EgmHeader"].DESCRIPTOR
    assert header.enum_types_by_name["MessageType"].values_by_name["MSGTYPE_CORRECTION"].number == 3
    assert (
        CLASSES["EgmMotorState"].DESCRIPTOR.enum_types_by_name["MotorStateType"].values_by_name["MOTORS_OFF"].number
        == 2
    )


def test_proto_parser_names_bad_input():
    with pytest.raises(ValueError, match="unknown type 'EgmNope'"):
        parse_proto("syntax = 'proto2'; message A { optional EgmNope x = 1; }".replace("'", '"'))
    with pytest.raises(ValueError, match="field label"):
        parse_proto('syntax = "proto2"; message A { double x = 1; }')
    assert "EgmRobot" in proto_text()


# ------------------------------------------------------------------------------------------------ codec vs protobuf
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
values = st.lists(finite, max_size=16)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


def _maybe(draw, p=0.6) -> bool:
    return draw(st.floats(0, 1)) < p


@st.composite
def header(draw, msg):
    if _maybe(draw):
        msg.seqno = draw(u32)
    if _maybe(draw):
        msg.tm = draw(u32)
    if _maybe(draw):
        msg.mtype = draw(st.integers(0, 4))
    msg.SetInParent()
    return msg


def _xyz(draw, msg, names):
    for name in names:
        if _maybe(draw, 0.8):
            setattr(msg, name, draw(finite))
    msg.SetInParent()


def _joints_pose_time(draw, msg):
    if _maybe(draw):
        msg.joints.joints.extend(draw(values))
        msg.joints.SetInParent()
    if _maybe(draw, 0.4):
        if _maybe(draw):
            _xyz(draw, msg.cartesian.pos, "xyz")
        if _maybe(draw):
            _xyz(draw, msg.cartesian.orient, ("u0", "u1", "u2", "u3"))
        if _maybe(draw):
            _xyz(draw, msg.cartesian.euler, "xyz")
        msg.cartesian.SetInParent()
    if _maybe(draw, 0.4):
        msg.externalJoints.joints.extend(draw(values))
        msg.externalJoints.SetInParent()
    if _maybe(draw):
        if _maybe(draw, 0.9):
            msg.time.sec = draw(u64)
        if _maybe(draw, 0.9):
            msg.time.usec = draw(u64)
        msg.time.SetInParent()
    msg.SetInParent()


@st.composite
def robot_messages(draw):
    m = EgmRobot()
    if _maybe(draw):
        draw(header(m.header))
    if _maybe(draw):
        _joints_pose_time(draw, m.feedBack)
    if _maybe(draw, 0.4):
        _joints_pose_time(draw, m.planned)
    for field, last in (("motorState", 2), ("mciState", 3), ("rapidExecState", 2)):
        if _maybe(draw):
            sub = getattr(m, field)
            if _maybe(draw, 0.9):
                sub.state = draw(st.integers(0, last))
            sub.SetInParent()
    if _maybe(draw, 0.4):
        m.mciConvergenceMet = draw(st.booleans())
    if _maybe(draw, 0.3):
        m.testSignals.signals.extend(draw(values))
        m.testSignals.SetInParent()
    if _maybe(draw, 0.3):
        m.measuredForce.force.extend(draw(values))
        m.measuredForce.SetInParent()
    if _maybe(draw, 0.4):
        m.utilizationRate = draw(finite)
    return m


@st.composite
def sensor_messages(draw):
    m = EgmSensor()
    if _maybe(draw):
        draw(header(m.header))
    if _maybe(draw):
        _joints_pose_time(draw, m.planned)
    if _maybe(draw):
        for field, key in (("joints", "joints"), ("cartesians", "value"), ("externalJoints", "joints")):
            if _maybe(draw):
                sub = getattr(m.speedRef, field)
                getattr(sub, key).extend(draw(values))
                sub.SetInParent()
        m.speedRef.SetInParent()
    return m


def _as_cpp_dict(message) -> dict:
    """protobuf's dict of a message in the layout of the C++ bindings (field names as in egm.proto, enum numbers,
    64-bit integers as ints)."""
    d = json_format.MessageToDict(message, preserving_proto_field_name=True, use_integers_for_enums=True)

    def fix(node):
        if isinstance(node, dict):
            return {k: (int(v) if k in ("sec", "usec") else fix(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return fix(d)


def _from_cpp_dict(cls, d: dict):
    m = cls()
    json_format.ParseDict(d, m)
    return m


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(robot_messages())
def test_robot_message_codec_agrees_with_protobuf(message):
    wire = message.SerializePartialToString()
    status, decoded = _control.egm_decode_robot(wire)
    assert status == "ok"
    assert _from_cpp_dict(EgmRobot, decoded) == message
    # encoding: byte for byte what protobuf writes
    assert _control.egm_encode_robot(_as_cpp_dict(message)) == wire


@SETTINGS
@given(sensor_messages())
def test_sensor_message_codec_agrees_with_protobuf(message):
    wire = message.SerializePartialToString()
    status, decoded = _control.egm_decode_sensor(wire)
    assert status == "ok"
    assert _from_cpp_dict(EgmSensor, decoded) == message
    assert _control.egm_encode_sensor(_as_cpp_dict(message)) == wire


@settings(max_examples=40, deadline=None)
@given(robot_messages(), st.data())
def test_truncated_and_corrupted_messages_are_refused_or_read_like_protobuf(message, data):
    """Any prefix or byte flip: the codec never reads out of bounds (ASan-free here, but no crash and a status), and
    whenever it accepts, it read what protobuf reads."""
    wire = bytearray(message.SerializePartialToString())
    cut = data.draw(st.integers(0, len(wire)))
    variants = [bytes(wire[:cut])]
    if wire:
        flipped = bytearray(wire)
        flipped[data.draw(st.integers(0, len(wire) - 1))] ^= data.draw(st.integers(1, 255))
        variants.append(bytes(flipped))
    for blob in variants:
        status, decoded = _control.egm_decode_robot(blob)
        reference = EgmRobot()
        try:
            reference.ParseFromString(blob)
            protobuf_ok = True
        except Exception:  # DecodeError (upb / python)
            protobuf_ok = False
        if status == "ok":
            assert protobuf_ok, "the codec accepted what protobuf refuses"
            reference.DiscardUnknownFields()  # protobuf keeps a flipped tag's field as unknown; the codec skips it
            assert _from_cpp_dict(EgmRobot, decoded) == reference
        elif protobuf_ok:
            # the codec's own limit: more than kMaxValues values in a repeated field; or a byte flip that made a
            # start-group tag, after which protobuf's runtime accepted bytes the codec refuses (a field number 0)
            assert status == "too_many_values" or (status == "bad_tag" and _group_encoded_submessage(blob)), status


def _varint(b: bytes, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return value, i


def _group_encoded_submessage(blob: bytes) -> bool:
    """Whether reading `blob` (an EgmRobot) field by field, into its known submessages, meets a start-group tag (wire
    type 3) where a field's tag is due: there protobuf's runtimes follow rules of their own (delimited submessages,
    zero tags: the CI case, 0x0A -> 0x0B at the header's tag, parsed by upb) that the codec does not."""

    def walk(i: int, end: int, desc) -> bool:
        while i < end:
            tag, i = _varint(blob, i, end)
            number, wire = tag >> 3, tag & 7
            if wire == 3 and number > 0:
                return True
            if number == 0 or wire > 5 or wire == 4:
                return False
            field = desc.fields_by_number.get(number) if desc is not None else None
            sub = field.message_type if field is not None else None
            if wire == 0:
                _, i = _varint(blob, i, end)
            elif wire in (1, 5):
                i += 8 if wire == 1 else 4
            else:
                length, i = _varint(blob, i, end)
                if sub is not None and walk(i, min(i + length, end), sub):
                    return True
                i += length
        return False

    try:
        return walk(0, len(blob), EgmRobot.DESCRIPTOR)
    except ValueError:
        return False


def test_a_flip_to_a_start_group_tag_is_refused():
    """The CI case (hypothesis): the header's tag 0x0A flipped to 0x0B (start group). upb accepted the bytes, the
    codec refuses them (it meets a field number 0): a refusal of a corrupted message, never a misread."""
    blob = bytes.fromhex(
        "0b08080010808001180012101a00220c0800108080808080808080011a460a00123a0a1b090000000000000000110000"
        "0000000000001900000000000000001a1b0900000000000000001100000000000000001900000000000000001a002204"
        "08001000220208002a02080030003a00420208004a00510000000000000000"
    )
    status, _ = _control.egm_decode_robot(blob)
    assert status == "bad_tag"
    assert _group_encoded_submessage(blob)
    assert not _group_encoded_submessage(bytes([blob[0] ^ 1]) + blob[1:])  # the message before the flip


def test_codec_reads_packed_doubles_and_unknown_fields():
    """Packed repeated doubles (proto3 writers) and fields that egm.proto does not know are read like protobuf."""
    m = EgmRobot()
    m.feedBack.joints.joints.extend([1.5, -2.25, 3.0])
    m.header.seqno = 7
    wire = m.SerializePartialToString()
    packed = EgmRobot()
    # feedBack { joints { joints: [packed] } }: tag 0x0a len, payload 3 doubles
    payload = b"".join(np.asarray([1.5, -2.25, 3.0]).astype("<f8").tobytes() for _ in range(1))
    joints = b"\x0a" + bytes([len(payload)]) + payload
    feedback = b"\x0a" + bytes([len(joints)]) + joints
    unknown = b"\xf8\x01\x2a" + b"\x9a\x02\x03abc"  # field 31 varint, field 35 bytes
    blob = b"\x0a\x02\x08\x07" + b"\x12" + bytes([len(feedback)]) + feedback + unknown
    packed.ParseFromString(blob)
    assert list(packed.feedBack.joints.joints) == [1.5, -2.25, 3.0]
    status, decoded = _control.egm_decode_robot(blob)
    assert status == "ok"
    assert decoded["feedBack"]["joints"]["joints"] == [1.5, -2.25, 3.0]
    assert decoded["header"]["seqno"] == 7
    assert _control.egm_decode_robot(wire)[1] == decoded


def test_codec_errors_are_named():
    assert _control.egm_decode_robot(b"\x12\x05\x0a")[0] == "truncated"
    assert _control.egm_decode_robot(b"\x0f")[0] == "bad_tag"  # wire type 7
    with pytest.raises(ValueError, match="at most 16"):
        _control.egm_encode_robot({"feedBack": {"joints": {"joints": [0.0] * 17}}})


# ------------------------------------------------------------------------------------------------ URL
def test_egm_urls():
    t = parse_egm_url(f"egm://127.0.0.1:{EGM_PORT_DEFAULT}")
    assert (t.bind_host, t.port, t.controller_host, t.joints) == ("127.0.0.1", 6510, "", 6)
    t = parse_egm_url("egm://0.0.0.0:6511?controller=192.168.125.1&joints=6")
    assert t.controller_host == "192.168.125.1" and t.bind_host == "0.0.0.0"
    t = parse_egm_url("egm://192.168.125.10:6510?controller=192.168.125.1")
    assert t.controller_host == "192.168.125.1" and t.controller_port == 0
    t = parse_egm_url("egm://127.0.0.1:6510?controller=127.0.0.1:6511")
    assert (t.controller_host, t.controller_port) == ("127.0.0.1", 6511)
    for bad, match in (
        ("udp://127.0.0.1:6510", "egm://"),
        ("egm://127.0.0.1", "explicit port"),
        ("egm://127.0.0.1:70000", "0..65535"),
        ("egm://robot.local:6510", "IPv4"),
        ("egm://127.0.0.1:6510?controler=1.2.3.4", "unknown"),
        ("egm://127.0.0.1:6510?joints=17", "joints"),
        # EGM is unauthenticated: off loopback only a named controller, and only private networks
        ("egm://0.0.0.0:6510", "controller"),
        ("egm://192.168.125.10:6510", "controller"),
        ("egm://8.8.8.8:6510?controller=192.168.125.1", "private-network"),
        ("egm://0.0.0.0:6510?controller=8.8.8.8", "private-network"),
        ("egm://0.0.0.0:6510?controller=0.0.0.0", "private-network"),
        # the controller's source port: 1..65535, and only with its address
        ("egm://127.0.0.1:6510?controller=127.0.0.1:0", "1..65535"),
        ("egm://127.0.0.1:6510?controller=127.0.0.1:65536", "1..65535"),
        ("egm://127.0.0.1:6510?controller=127.0.0.1:", "1..65535"),
        ("egm://127.0.0.1:6510?controller=127.0.0.1:x", "1..65535"),
        ("egm://127.0.0.1:6510?controller=:6511", "needs the controller's address"),
        ("egm://0.0.0.0:6510?controller=8.8.8.8:6511", "private-network"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_egm_url(bad)
    assert egm_unit_factors(ROBOT, 6) == [math.pi / 180] * 6


def test_the_eight_joint_robot_needs_the_gantry_driver():
    with pytest.raises(ValueError, match="--gantry"):
        make_egm_robot_driver("egm://127.0.0.1:6599", ROBOT)
    wrong = make_udp_driver("udp://127.0.0.1:6600?camera=none", 3)
    with pytest.raises(ValueError, match="2 joints"):
        make_egm_robot_driver("egm://127.0.0.1:6599", ROBOT, gantry=wrong)


def _with_arm_joint(joint: int, **changes):
    joints = list(ROBOT.joints)
    joints[joint] = dataclasses.replace(joints[joint], **changes)
    return dataclasses.replace(ROBOT, joints=tuple(joints))


def test_an_arm_description_beyond_the_irb120t_data_sheet_is_refused():
    """EGM has no limits handshake: the arm limits the loop enforces are held against the IRB 120T's data sheet, so a
    description that lets axis 6 turn to +-9 rad (the audit's: 14 references beyond the controller's +-6.98 rad
    range) or a faster or non-revolute axis is refused before any driver exists; narrower limits pass."""
    gantry = make_udp_driver("udp://127.0.0.1:6600?camera=none", 2)
    last = ROBOT.dof - 1
    for robot, match in (
        (_with_arm_joint(last, position_min=-9.0, position_max=9.0), "arm_j6.*axis 6.*wider"),
        (_with_arm_joint(2, position_max=math.radians(166.0)), "axis 1.*wider"),
        (_with_arm_joint(5, velocity_limit=ROBOT.velocity_limit[5] * 1.01), "axis 4.*velocity limit"),
        (_with_arm_joint(3, type="prismatic"), "axis 2.*revolute"),
        # no handshake states the arm's acceleration and jerk: 5x the project's bounds drove axes 1 and 6 at 5x them
        (_with_arm_joint(2, acceleration_limit=150.0), "axis 1.*acceleration / jerk"),
        (_with_arm_joint(last, jerk_limit=25 * 1000.0), "axis 6.*acceleration / jerk"),
    ):
        with pytest.raises(ValueError, match=match):
            make_egm_robot_driver("egm://127.0.0.1:6599", robot, gantry=gantry)
    with pytest.raises(ValueError, match="6 axes"):
        make_egm_driver("egm://127.0.0.1:6599?joints=5", ROBOT)
    check_egm_arm_limits(ROBOT, 6)  # the shipped description is the data sheet
    narrower = _with_arm_joint(last, position_min=-1.0, position_max=1.0, velocity_limit=1.0)
    check_egm_arm_limits(narrower, 6)
    assert make_egm_robot_driver("egm://127.0.0.1:6599", narrower, gantry=gantry) is not None


@pytest.mark.parametrize("option", ["hold_s", "link_timeout_s"])
def test_egm_sample_freshness_bounds_are_capped_at_one_second(option):
    """As for the UDP driver: a sample hold or link timeout of minutes would let a sample that old count as the
    robot's current state (the review of the fifth audit's fixes)."""
    make_egm_driver("egm://127.0.0.1:6598", ROBOT, **{option: 1.0})
    with pytest.raises(ValueError, match=option):
        make_egm_driver("egm://127.0.0.1:6598", ROBOT, **{option: 2.0})


def test_a_loop_refuses_an_egm_driver_under_a_wider_description_than_the_data_sheet():
    """The check also holds where the driver and the loop were given different descriptions (the Python API): the
    loop's own description is what it enforces, so that one is checked against the data sheet."""
    arm = dataclasses.replace(ROBOT, joints=ROBOT.joints[2:], home=ROBOT.home[2:])
    driver = make_egm_driver("egm://127.0.0.1:6597", arm)  # built with the shipped arm
    wide = dataclasses.replace(arm, joints=arm.joints[:-1] + (dataclasses.replace(arm.joints[-1], position_max=9.0),))
    with pytest.raises(ValueError, match="axis 6.*wider"):
        RealTimeLoop(wide, driver)
    gantry = make_udp_driver("udp://127.0.0.1:6600?camera=none", 2)
    composite = make_egm_robot_driver("egm://127.0.0.1:6598", ROBOT, gantry=gantry)
    with pytest.raises(ValueError, match="axis 6.*wider"):
        RealTimeLoop(_with_arm_joint(ROBOT.dof - 1, position_min=-9.0, position_max=9.0), composite)
    # an arm that is not the description's last joints: its joint values would be read as other joints'
    other_gantry = make_udp_driver("udp://127.0.0.1:6601?camera=none", 2)
    swapped = _control.CompositeDriver([make_egm_driver("egm://127.0.0.1:6596", ROBOT), other_gantry])
    with pytest.raises(ValueError, match="last 6 of 8"):
        RealTimeLoop(ROBOT, swapped)
    assert RealTimeLoop(arm, driver).robot is arm  # the shipped arm passes


def test_run_refuses_a_wide_arm_description_before_anything_is_sent(tmp_path):
    """`robot-rt run --robot egm://... --robot-file F` with axis 6 widened to +-9 rad: exit 2, and the controller,
    sending its EgmRobot messages to the run's port all along, never gets an answer."""
    from robot_rt.cli import main

    data = json.loads((Path(robot_rt.robot.__file__).parent / "data" / "gantry_arm_8dof.json").read_text())
    data["joints"][-1].update(position_min=-9.0, position_max=9.0)
    robot_file = tmp_path / "wide_wrist.json"
    robot_file.write_text(json.dumps(data))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a free port for the run to listen on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with _arm_controller(port) as controller:
        argv = ["run", "--robot", f"egm://127.0.0.1:{port}", "--gantry", "udp://127.0.0.1:6600?camera=none"]
        argv += ["--robot-file", str(robot_file), "--duration", "0.5", "--log", str(tmp_path / "run.rrlog")]
        assert main(argv) == 2
        time.sleep(0.05)
        assert controller.stats()["sensor_messages"] == 0
    assert not (tmp_path / "run.rrlog").exists()


# ------------------------------------------------------------------------------------------------ driver
def _arm_controller(port: int, **kw) -> SimulatedEgmController:
    return SimulatedEgmController(
        ("127.0.0.1", port),
        ROBOT.position_min[ARM],
        ROBOT.position_max[ARM],
        ROBOT.velocity_limit[ARM],
        ROBOT.home[ARM],
        **kw,
    )


def test_driver_talks_to_the_simulated_controller():
    driver = _control.EgmDriver("127.0.0.1", 0, 6, si_per_egm=egm_unit_factors(ROBOT, 6))
    driver.start()
    try:
        with _arm_controller(driver.local_port) as controller:
            state = wait_until(driver.read_state, what="an EGM state")
            np.testing.assert_allclose(state["position"], ROBOT.home[ARM], atol=1e-12)
            assert state["flags"] == 0
            target = ROBOT.home[ARM] + 0.05
            assert driver.write_command(list(target), [0.0] * 6)
            wait_until(lambda: controller.reference is not None, what="the controller to get a reference")
            np.testing.assert_allclose(controller.reference, target, atol=1e-12)  # degrees on the wire, exact

            def reached():  # the driver answers each controller message with the stored command
                state = driver.read_state()
                driver.write_command(list(target), [0.0] * 6)
                return state is not None and np.allclose(state["position"], target, atol=1e-4)

            wait_until(reached, what="the arm to reach the reference")
            stats = driver.stats()
            assert stats["connected"] and stats["rx_malformed"] == 0 and stats["replies_sent"] >= 1
            assert controller.stats()["sensor_malformed"] == 0
    finally:
        driver.stop()


def test_the_simulated_controller_drops_an_old_reply_but_follows_a_new_run_at_once():
    """Within a stream, a reply older than the newest is dropped (reordered or duplicated: not followed); after the
    sensor was quiet, a lower sequence number is a new run's driver counting from 1 again, followed at once. (Taken as
    stale, a new run was ignored for as long as the run before had lasted: 0.61 s after a 0.6 s run.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sensor:
        sensor.bind(("127.0.0.1", 0))
        sensor.settimeout(1.0)
        with _arm_controller(sensor.getsockname()[1]) as controller:

            def reply(seqno: int, offset: float) -> None:  # one EgmSensor answering the controller's next message
                _, where = sensor.recvfrom(4096)
                m = EgmSensor()
                m.header.seqno, m.header.mtype = seqno, 3  # MSGTYPE_CORRECTION
                m.planned.joints.joints.extend(np.degrees(ROBOT.home[ARM] + offset).tolist())
                m.speedRef.joints.joints.extend([0.0] * 6)
                sensor.sendto(m.SerializeToString(), where)

            def followed(offset: float) -> bool:
                r = controller.reference
                return r is not None and np.allclose(r, ROBOT.home[ARM] + offset, atol=1e-9)

            for seqno in range(1, 51):  # the first run: 50 replies, the arm's reference home + 0.01
                reply(seqno, 0.01)
            wait_until(lambda: followed(0.01), what="the first run's reference")
            reply(49, 0.05)  # an old datagram within the stream: dropped
            reply(51, 0.01)
            wait_until(lambda: controller.stats()["sensor_messages"] >= 52, what="the controller to read them")
            assert followed(0.01) and controller.stats()["sensor_stale"] == 1
            time.sleep(0.1)  # the run ends; a new one starts, its driver counting from 1
            while True:  # (drain what the controller sent meanwhile)
                sensor.settimeout(0.0)
                try:
                    sensor.recvfrom(4096)
                except BlockingIOError:
                    break
            sensor.settimeout(1.0)
            reply(1, 0.02)
            wait_until(lambda: controller.stats()["sensor_messages"] >= 53, what="the new run's first reply")
            wait_until(lambda: followed(0.02), what="the new run's first reference, followed at once")
            assert controller.stats()["sensor_stale"] == 1 and controller.stats()["sensor_restarts"] == 1


def _robot_message(seqno: int, clock_s: float, position_rad) -> bytes:
    """An EgmRobot datagram as the controller sends it: sequence number, feedback joints (degrees) and clock."""
    m = EgmRobot()
    m.header.seqno, m.header.tm, m.header.mtype = seqno, int(clock_s * 1000) & 0xFFFFFFFF, 2
    m.feedBack.joints.joints.extend(np.degrees(position_rad).tolist())
    m.feedBack.time.sec, m.feedBack.time.usec = int(clock_s), int(round((clock_s - int(clock_s)) * 1e6))
    m.motorState.state, m.mciState.state, m.rapidExecState.state = 1, 3, 2
    return m.SerializeToString()


@pytest.mark.parametrize("first", ["live", "replayed"])
def test_an_old_datagram_from_before_a_controller_restart_is_not_taken_as_the_newest(first):
    """An EGM restart starts the sequence numbers again: a datagram from before it, delivered late or replayed, has a
    higher number than the restarted stream. The controller's clock (feedback time) tells the two apart: the old one
    is dropped, and the live stream (a lower number, a later clock) is taken as the restart it is. (By sequence number
    alone the driver took the old datagrams as the newest, dropped the live stream as stale and reported where the
    arm had been: a new run started from there and held the arm 0.054 rad from where it stood, in a fuzz hunt.)
    `first`: a new driver's first datagram is the live stream's or an old one."""
    driver = _control.EgmDriver("127.0.0.1", 0, 6, si_per_egm=egm_unit_factors(ROBOT, 6))
    driver.start()
    then, now = ROBOT.home[ARM], ROBOT.home[ARM] + np.array([0.054, 0.0, 0.02, 0.0, 0.0, 0.0])
    old = [_robot_message(400 + k, 1000.0 + 0.004 * k, then) for k in range(50)]  # before the restart
    t_live = 1000.0 + 0.004 * 50 + 0.5  # the restart took half a second
    live = [_robot_message(1 + k, t_live + 0.004 * k, now) for k in range(60)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as controller:
            controller.bind(("127.0.0.1", 0))
            to = ("127.0.0.1", driver.local_port)
            accepted = 0

            def deliver(datagram):
                nonlocal accepted
                controller.sendto(datagram, to)
                wait_until(lambda: driver.read_state() is not None and driver.stats()["rx_datagrams"] > accepted,
                           what="the datagram read")  # fmt: skip
                accepted = driver.stats()["rx_datagrams"]

            if first == "replayed":
                deliver(old[10])  # a new driver cannot tell yet: it takes it
            for k in range(60):
                deliver(live[k])
                if k % 3 == 0:
                    deliver(old[20 + k // 3])  # higher sequence numbers, older clock
                state = driver.read_state()
                np.testing.assert_allclose(state["position"], now, atol=1e-9)
            stats = driver.stats()
            assert stats["rx_stale"] == 20
            # the restart: counted once when the driver had taken an old datagram first, else not at all
            assert stats["peer_restarts"] == (1 if first == "replayed" else 0)
    finally:
        driver.stop()


def test_driver_ignores_a_second_sender_and_reports_motors_off():
    driver = _control.EgmDriver("127.0.0.1", 0, 6, si_per_egm=egm_unit_factors(ROBOT, 6))
    driver.start()
    try:
        with _arm_controller(driver.local_port) as controller, _arm_controller(driver.local_port) as stranger:

            def strangers_counted():  # the driver reads its socket in read_state (the loop's tick)
                driver.read_state()
                return driver.stats()["rx_unexpected_source"] > 10

            wait_until(strangers_counted, what="the second sender's messages")
            first = driver.stats()["controller"]
            assert first.endswith(str(controller.local_port)) or first.endswith(str(stranger.local_port))
            locked = controller if first.endswith(str(controller.local_port)) else stranger
            locked.motors_off()
            state = wait_until(
                lambda: (s := driver.read_state()) is not None and s["flags"] & 1 and s,
                what="the motors-off flag",
            )
            assert state["flags"] & 2  # fault too
            assert driver.stats()["motor_state"] == 2
    finally:
        driver.stop()


@pytest.mark.parametrize("pinned", [True, False])
def test_a_pinned_controller_port_keeps_a_local_sender_out_after_a_link_loss(pinned):
    """The twelfth audit's finding 2: on loopback every local process sends from the controller's address, and a
    second sender took the session over once the controller had been quiet for the link timeout (replies went to
    it). With the controller's source port pinned (controller=127.0.0.1:PORT) it is never answered, and the
    controller's own restart from that port is still taken; unpinned, the takeover is what docs/egm.md describes."""
    source_port = free_port()
    driver = _control.EgmDriver(
        "127.0.0.1",
        0,
        6,
        si_per_egm=egm_unit_factors(ROBOT, 6),
        controller_host="127.0.0.1" if pinned else "",
        controller_port=source_port if pinned else 0,
    )
    driver.start()
    try:
        with _arm_controller(driver.local_port, source_port=source_port) as controller:
            hold = list(ROBOT.home[ARM])

            def answer():  # what the loop does each tick: read, then write (the driver answers the controller)
                state = driver.read_state()
                driver.write_command(hold, [0.0] * 6)
                return state

            wait_until(lambda: answer() is not None and controller.stats()["sensor_messages"] > 5, what="replies")
            controller.silence(0.15)  # > link_timeout_s (40 ms): the link is down
            with _arm_controller(driver.local_port) as stranger:
                deadline = time.monotonic() + 0.3
                while time.monotonic() < deadline:
                    answer()
                    time.sleep(0.001)
                taken = stranger.stats()["sensor_messages"]
            if not pinned:
                assert taken > 0, "unpinned, the second sender was expected to take the session (docs/egm.md)"
                return
            assert taken == 0, f"a second local sender was answered {taken} times with the controller's port pinned"
            assert driver.stats()["rx_unexpected_source"] > 10
            assert driver.controller == f"127.0.0.1:{source_port}"
            before = controller.stats()["sensor_messages"]
            wait_until(
                lambda: answer() is not None and controller.stats()["sensor_messages"] > before + 5,
                what="the controller answered again after its silence",
            )
            restarts = driver.stats()["peer_restarts"]
            controller.restart()  # the sequence starts again, from the pinned port
            wait_until(
                lambda: answer() is not None and driver.stats()["peer_restarts"] > restarts,
                what="the controller's restart from its pinned port taken",
            )
    finally:
        driver.stop()


def test_the_readme_egm_commands_with_a_pinned_controller_port(tmp_path):
    """`robot-rt sim-egm --source-port SP` and `robot-rt run --robot egm://...?controller=127.0.0.1:SP` (README, docs/egm.md)
    as separate processes: the run moves the simulated arm and ends cleanly, and the controller's stats count no
    reference outside the axis ranges."""
    import os
    import subprocess
    import sys

    cli = [sys.executable, "-m", "robot_rt.cli"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROBOT_RT_STATE_DIR=str(tmp_path))
    sensor, source = free_port(), free_port()
    sim = subprocess.Popen(
        [*cli, "sim-egm", "--sensor", f"127.0.0.1:{sensor}", "--source-port", str(source), "--gantry-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = sim.stdout.readline()
        assert line, f"sim-egm did not start: {sim.stderr.read() if sim.poll() is not None else ''}"
        info = json.loads(line)
        assert info["controller"] == f"127.0.0.1:{source}"
        log_path = tmp_path / "egm.rrlog"
        run = subprocess.run(
            [
                *cli,
                "run",
                "--robot",
                f"egm://127.0.0.1:{sensor}?controller=127.0.0.1:{source}",
                "--gantry",
                f"udp://127.0.0.1:{info['gantry_port']}?camera=none",
                "--policy",
                "robot_rt.control.policies:sine",
                "--duration",
                "2",
                "--log",
                str(log_path),
                "--no-status",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        sim.terminate()
        out, err = sim.communicate(timeout=30)
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["event"] == "stopped", err
    assert stopped["controller"]["sensor_messages"] > 100
    assert stopped["controller"]["references_out_of_limits"] == 0
    log = read_runlog(log_path)
    assert log.clean
    assert np.ptp(log.ticks["measured_position"][:, 2:], axis=0).max() > 0.01  # the sine policy moved the arm


def test_a_controller_port_needs_its_address():
    with pytest.raises(ValueError, match="controller_port"):
        _control.EgmDriver("127.0.0.1", 0, 6, controller_port=6511)
    with pytest.raises(ValueError, match="controller_port"):
        _control.EgmDriver("127.0.0.1", 0, 6, controller_host="127.0.0.1", controller_port=70000)
    driver = make_egm_driver("egm://127.0.0.1:0?controller=127.0.0.1:6511", ROBOT)
    assert (driver.controller_host, driver.controller_port) == ("127.0.0.1", 6511)


@pytest.mark.parametrize("field", ["motorState", "mciState", "rapidExecState"])
def test_a_status_the_controller_stops_reporting_is_a_stop(field):
    """Fail closed: once reported, a status left out (or sent with a value the schema does not list) is the
    controller's stop input and a fault, as motors off is. Before, a controller that stopped reporting its MCI state
    switched the stop detection off."""
    driver = _control.EgmDriver("127.0.0.1", 0, 6, si_per_egm=egm_unit_factors(ROBOT, 6))
    driver.start()
    try:
        with _arm_controller(driver.local_port) as controller:
            state = wait_until(lambda: driver.read_state(), what="a first state")
            assert state["flags"] & 3 == 0
            controller.drop_status((field,))
            state = wait_until(
                lambda: (s := driver.read_state()) is not None and s["flags"] & 1 and s, what="the stop input"
            )
            assert state["flags"] & 2  # a fault too
    finally:
        driver.stop()


# ------------------------------------------------------------------------------------------------ the 8-joint robot
@pytest.fixture
def eight_joint_robot(tmp_path):
    gantry_server = SimServer(gantry_description(ROBOT), camera=False, geometry_digest=geometry_digest(ROBOT)).start()
    gantry = make_udp_driver(f"udp://127.0.0.1:{gantry_server.port}?camera=none", 2)
    driver = make_egm_robot_driver("egm://127.0.0.1:0", ROBOT, gantry=gantry)
    assert driver.dof == 8 and driver.name == "udp+egm"
    arm = driver.parts[1]
    log_path = tmp_path / "egm.rrlog"
    loop = RealTimeLoop(ROBOT, driver, policy=Sine(ROBOT), rate_hz=1000.0, policy_rate_hz=50, log_path=log_path)
    driver.start()  # both parts' sockets (a real EGM controller sends to its configured port all along)
    controller = _arm_controller(arm.local_port).start()
    wait_until(lambda: driver.read_state() is not None, what="a state of both parts")
    loop.start()
    try:
        yield loop, driver, controller, gantry_server, log_path
    finally:
        loop.stop()
        controller.stop()
        gantry_server.stop()


def test_loop_drives_gantry_and_egm_arm_as_one_robot(eight_joint_robot):
    loop, driver, controller, gantry_server, log_path = eight_joint_robot
    wait_until(lambda: controller.stats()["sensor_messages"] > 250, what="1 s of EGM references", timeout_s=60)
    wait_ticks(loop, 500)
    reference = controller.reference
    loop.stop()
    # the arm's position once the loop's controlled stop brought it to rest (read while moving, it raced the stop's
    # ramp: a CI run under load found them 0.05 rad apart)
    position = controller.position
    controller.stop()
    gantry = gantry_server.robot_server.stats()
    arm = controller.stats()
    # limits: neither part ever received a command outside the robot's limits
    assert arm["references_out_of_limits"] == 0
    assert gantry["commands_out_of_limits"] == 0 and gantry["commands_applied"] > 100
    log = read_runlog(log_path)
    cmd = log.ticks["command_position"]
    assert np.all(cmd >= ROBOT.position_min - 1e-9) and np.all(cmd <= ROBOT.position_max + 1e-9)
    assert np.all(np.abs(log.ticks["command_velocity"]) <= ROBOT.velocity_limit * (1 + 1e-9))
    # the sine moved the arm: its reference left home, and the measured arm (EGM feedback) is in the log
    assert np.max(np.abs(reference - ROBOT.home[ARM])) > 1e-3
    measured = log.ticks["measured_position"][:, ARM]
    assert np.max(np.abs(measured - ROBOT.home[ARM])) > 1e-3
    np.testing.assert_allclose(position, measured[-1], atol=0.05)
    counters = loop.counters()
    assert counters["stop_ticks"] < 0.2 * counters["ticks"], counters
    assert arm["sensor_malformed"] == 0


def test_bare_calls_on_the_composite_and_its_parts_are_refused_while_the_loop_runs(eight_joint_robot):
    """The composite, its EGM arm and its UDP gantry each refuse bare read_state / write_command / start / stop while
    the loop drives them: such a call would answer the arm controller or the gantry server around the loop's safety
    filter, or empty the stop flags the loop reads."""
    loop, driver, controller, gantry_server, _ = eight_joint_robot
    wait_until(lambda: controller.stats()["sensor_messages"] > 50, what="EGM references", timeout_s=60)
    gantry, arm = driver.parts
    beyond = (ROBOT.position_max + 0.5).tolist()
    for name, d, position in (("composite", driver, beyond), ("arm", arm, beyond[2:]), ("gantry", gantry, beyond[:2])):
        assert d.claimed, name
        with pytest.raises(RuntimeError, match="write_command: a running loop"):
            d.write_command(position, [0.0] * len(position))
        with pytest.raises(RuntimeError, match="read_state: a running loop"):
            d.read_state()
        for call in ("start", "stop"):
            with pytest.raises(RuntimeError, match=f"{call}: a running loop"):
                getattr(d, call)()
    wait_ticks(loop, 200)
    assert loop.running and not loop.stop_reasons, loop.stop_reasons  # the loop carried on undisturbed
    assert controller.stats()["references_out_of_limits"] == 0
    assert gantry_server.robot_server.stats()["commands_out_of_limits"] == 0


def test_controller_stop_latches_the_loop_until_reset(eight_joint_robot):
    loop, driver, controller, gantry_server, _ = eight_joint_robot
    wait_until(lambda: controller.stats()["sensor_messages"] > 100, what="EGM references", timeout_s=60)
    controller.motors_off()  # an emergency stop on the ABB controller
    wait_until(lambda: loop.estop_latched, what="the loop's e-stop latch")
    assert loop.event_count("estop") >= 1
    wait_ticks(loop, 300)  # the stop ramp ends
    # the EGM motion ended with MOTORS_OFF: the controller dropped its reference, and the loop (the arm's part muted:
    # it does not follow it any more) sends none; the arm's own position is what must not change
    assert controller.reference is None
    # only the arm's part is muted: the gantry (its own link, no stop of its own) still follows the controlled stop
    flags = loop.observation()["flags"]
    assert flags & TICK_FLAGS["part_muted"] and not flags & TICK_FLAGS["muted"]
    held = controller.position.copy()
    gantry_before = np.array(gantry_server.robot_server.snapshot()["position"])
    wait_ticks(loop, 300)
    # nothing moves while latched: the arm and the gantry stay where the stop left them
    np.testing.assert_allclose(controller.position, held, atol=1e-9)
    assert controller.reference is None
    np.testing.assert_allclose(gantry_server.robot_server.snapshot()["position"], gantry_before, atol=1e-6)
    loop.reset_estop()  # refused: the controller still reports motors off (the input is still active)
    wait_ticks(loop, 50)
    assert loop.estop_latched
    np.testing.assert_allclose(controller.position, held, atol=1e-9)
    # the operator clears the stop on the controller, then resets the loop: only then does the policy move it again
    controller.motors_on()
    wait_ticks(loop, 100)
    assert loop.estop_latched  # motors on alone does not release the loop: the program stopped with the motors
    loop.reset_estop()  # refused: the controller reports RAPID stopped
    wait_ticks(loop, 50)
    assert loop.estop_latched
    controller.rapid_start()  # the operator restarts the program
    wait_ticks(loop, 100)
    assert loop.estop_latched
    np.testing.assert_allclose(controller.position, held, atol=1e-9)  # nor does the arm move (an audit saw 0.04 rad)
    # the running program gets only the muted arm's hold: where it is (docs/egm.md, "Holds while muted")
    assert controller.reference is None or np.allclose(controller.reference, held, atol=1e-9)
    loop.reset_estop()
    wait_until(lambda: not loop.estop_latched, what="the reset")
    assert loop.event_count("estop_reset") >= 1
    wait_until(
        lambda: np.max(np.abs(controller.position - held)) > 1e-4,
        what="the policy to move the arm again",
        timeout_s=30,
    )
    assert controller.stats()["references_out_of_limits"] == 0


@pytest.mark.parametrize("how", ["silence", "restart"])
def test_a_dead_or_restarted_egm_stream_ends_in_the_link_loss_stop(eight_joint_robot, how):
    """The EGM part reports its link health to the loop (through the composite driver): a stream that goes silent,
    or a controller that comes back as a new session, latches the link-loss stop (not only the sensor timeout), and
    nothing moves the arm again when the stream is back (no recovery)."""
    loop, driver, controller, gantry_server, log_path = eight_joint_robot
    wait_until(lambda: controller.stats()["sensor_messages"] > 100, what="EGM references", timeout_s=60)
    if how == "silence":
        controller.silence(0.5)  # > the driver's link timeout (40 ms) and the loop's sensor timeout (20 ms)
    else:
        controller.restart()  # a new source port and sequence: a new session the loop never commanded
    wait_until(lambda: "link_loss" in loop.stop_reasons, what="the link-loss stop", timeout_s=30)
    assert set(loop.stop_reasons) <= {"link_loss", "sensor_timeout"}, loop.stop_reasons
    assert loop.event_count("link_loss_stop") >= 1
    messages = controller.stats()["robot_messages"]
    wait_until(lambda: controller.stats()["robot_messages"] > messages + 150, what="the stream back", timeout_s=30)
    wait_ticks(loop, 300)
    held = controller.reference
    wait_ticks(loop, 300)
    assert "link_loss" in loop.stop_reasons and loop.lifecycle == "stopped"  # latched: nobody recovered it
    if held is not None:
        np.testing.assert_allclose(controller.reference, held, atol=1e-9)
    assert controller.stats()["references_out_of_limits"] == 0


# ------------------------------------------------------------------------------------------------ stops between runs
def _arm_only():
    """The shipped robot's arm alone, with a workspace box its Sine sweeps never leave."""
    return with_wide_workspace(ROBOT, joints=ROBOT.joints[2:], home=ROBOT.home[2:])


def _arm_run(arm, port, controller=None):
    """A started driver (make_egm_driver on `port`, its run marker under the test's own state directory), a simulated
    controller sending to it and a 1 kHz loop of the Sine policy: (loop, driver, controller)."""
    driver = make_egm_driver(f"egm://127.0.0.1:{port}", arm)
    driver.start()
    controller = controller or _arm_controller(driver.local_port).start()
    wait_until(lambda: driver.read_state() is not None, what="an EGM state")
    loop = RealTimeLoop(arm, driver, policy=Sine(arm), rate_hz=1000.0, policy_rate_hz=50)
    loop.start()
    return loop, driver, controller


def test_an_arm_only_run_that_ends_in_a_stop_leaves_the_arm_stopped_for_the_next_run():
    """EGM carries no stop count, so an arm driven alone was moved by the next run after a software e-stop nobody
    recovered (0.37 rad, the sixth audit). The driver's run marker (written when a run starts, removed only when it
    ends without a stop nobody recovered) makes the next run start with a robot stop: robot_fault, nothing moves
    until a recovery; a clean end removes it."""
    from robot_rt.control.egm import egm_run_marker_path, existing_run_markers

    arm, port = _arm_only(), free_port()
    url = f"egm://127.0.0.1:{port}"
    marker = egm_run_marker_path(url)
    loop, driver, controller = _arm_run(arm, port)
    try:
        assert driver.run_marker_path == str(marker) and marker.exists()  # from the start of the run: a crash too
        wait_until(lambda: controller.stats()["sensor_messages"] > 100, what="EGM references", timeout_s=60)
        loop.estop()
        wait_until(lambda: loop.lifecycle == "stopped", what="the stop")
    finally:
        loop.stop()  # nobody recovers
    assert existing_run_markers(url) == [marker]
    time.sleep(0.3)  # the arm settles where the stop left it (the simulated controller's lag)
    held = controller.position.copy()
    loop, driver, _ = _arm_run(arm, port, controller)
    try:
        wait_ticks(loop, 500)
        assert loop.lifecycle == "stopped" and "robot_fault" in loop.stop_reasons and driver.marker_stop_pending
        np.testing.assert_allclose(controller.position, held, atol=1e-6)
        assert loop.recover(timeout_s=5.0, seen_reasons=loop.stop_reasons, seen_robot_stops=loop.robot_stop_events)
        wait_until(lambda: np.max(np.abs(controller.position - held)) > 1e-3, what="the arm moving again")
    finally:
        loop.stop()  # a clean end after the recovery
    assert not marker.exists()
    assert controller.stats()["references_out_of_limits"] == 0
    controller.stop()  # (a fresh controller session: this one would take the new run's restarted seqno as stale)
    loop, driver, controller = _arm_run(arm, port)
    try:
        wait_ticks(loop, 300)
        assert loop.lifecycle == "active" and not driver.marker_stop_pending, loop.stop_reasons_seen
    finally:
        loop.stop()
        controller.stop()


def test_one_marker_per_controller_and_port_in_one_place_for_every_run(tmp_path, monkeypatch):
    """The marker is one file per EGM port, whatever URL names the controller, in one place for every user
    ($ROBOT_RT_STATE_DIR, else /var/lib/robot_rt). Per-user places and a key without the port let a next run miss it
    (0.19-0.27 rad in the review of the sixth audit's fixes), and a clean end of one arm of a two-arm controller
    removed the other's. A start that cannot bind leaves no marker behind; one that cannot write the marker does not
    start, and says how to set the place."""
    from robot_rt.control import egm

    port = free_port()
    names = {
        egm.egm_run_marker_path(url)
        for url in (
            f"egm://127.0.0.1:{port}",
            f"egm://127.0.0.1:{port}?controller=127.0.0.1",
            f"egm://0.0.0.0:{port}?controller=127.0.0.1",
        )
    }
    assert len(names) == 1  # the same controller and port
    assert egm.egm_run_marker_path(f"egm://127.0.0.1:{port + 1}?controller=127.0.0.1") not in names  # another arm
    # one run per marker at a time: another listening address on the same port (the review of 5ead296: a second
    # controller shared the file, and the first run's clean end removed the second's marker)
    first = make_egm_driver(f"egm://127.0.0.1:{port}", _arm_only())
    first.start()
    try:
        second = make_egm_driver(f"egm://127.0.0.2:{port}?controller=127.0.0.1", _arm_only())
        assert second.run_marker_path == first.run_marker_path
        with pytest.raises(RuntimeError, match="another run"):
            second.start()
        assert Path(first.run_marker_path).exists()
    finally:
        first.stop()
    assert not Path(first.run_marker_path).exists()  # its clean end
    monkeypatch.delenv("ROBOT_RT_STATE_DIR")
    monkeypatch.setattr(egm, "SYSTEM_STATE_DIR", tmp_path / "system")  # (not the machine's /var/lib here)
    monkeypatch.setenv("HOME", str(tmp_path / "another_home"))
    assert egm.state_dir() == tmp_path / "system"  # not per user
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        blocked = make_egm_driver(f"egm://127.0.0.1:{taken.getsockname()[1]}", _arm_only())
        with pytest.raises(RuntimeError):
            blocked.start()
    assert not Path(blocked.run_marker_path).exists()
    (tmp_path / "readonly").write_text("a file where the directory should be")
    monkeypatch.setenv("ROBOT_RT_STATE_DIR", str(tmp_path / "readonly"))
    unwritable = make_egm_driver(f"egm://127.0.0.1:{port}", _arm_only())
    with pytest.raises(RuntimeError, match="ROBOT_RT_STATE_DIR"):
        unwritable.start()


def test_a_muted_egm_arm_is_held_where_it_is():
    """A tracking stop mutes the arm, and the loop sends it nothing; an EGM controller keeps driving to its last
    reference then (0.048 rad after the stop, the sixth audit). The muted driver now answers each robot message with
    a hold where the arm is (planned = its feedback, speed 0)."""
    arm = _arm_only()
    driver = make_egm_driver("egm://127.0.0.1:0", arm)
    driver.start()
    controller = _arm_controller(driver.local_port, time_constant_s=0.12).start()  # lags beyond the tracking tube
    wait_until(lambda: driver.read_state() is not None, what="an EGM state")
    loop = RealTimeLoop(arm, driver, policy=Sine(arm, frequency_hz=1.0), rate_hz=1000.0, policy_rate_hz=100,
                        sensor_timeout_s=0.1)  # fmt: skip
    loop.start()
    try:
        wait_until(lambda: "tracking_error" in loop.stop_reasons, what="the tracking stop", timeout_s=30)
        at_stop = controller.position.copy()
        time.sleep(1.0)
        assert loop.lifecycle == "stopped" and driver.hold_replies > 0
        assert np.max(np.abs(controller.position - at_stop)) < 0.01  # braking from the lag's speed, no further
    finally:
        loop.stop()
        controller.stop()


def test_a_loop_refuses_a_hand_built_egm_driver_with_other_units_or_an_open_address():
    """`RealTimeLoop` checks a hand-built EgmDriver as `make_egm_driver` builds one: unit factors of the description
    (mm factors on revolute axes drove references 0.77 rad beyond the axis ranges, the sixth audit) and addresses
    parse_egm_url allows."""
    arm = _arm_only()
    with pytest.raises(ValueError, match="unit factors"):
        RealTimeLoop(arm, _control.EgmDriver("127.0.0.1", 0, 6, si_per_egm=[1e-3] * 6))
    with pytest.raises(ValueError, match="controller"):
        RealTimeLoop(arm, _control.EgmDriver("0.0.0.0", 0, 6, si_per_egm=egm_unit_factors(arm, 6)))
    # on a real port, without the controller's run marker (the review of the sixth audit's fixes: 0.27 rad)
    with pytest.raises(ValueError, match="run marker"):
        RealTimeLoop(arm, _control.EgmDriver("127.0.0.1", 6512, 6, si_per_egm=egm_unit_factors(arm, 6)))
    RealTimeLoop(arm, make_egm_driver("egm://127.0.0.1:6512", arm))
    RealTimeLoop(arm, _control.EgmDriver("127.0.0.1", 0, 6, si_per_egm=egm_unit_factors(arm, 6)))


def test_a_controller_whose_restart_muted_the_arm_is_sent_nothing():
    """A restarted controller is a session this loop never commanded: nothing goes to it, not even the muted arm's
    hold (the review of the sixth audit's fixes found the holds going to it)."""
    arm = _arm_only()
    loop, driver, controller = _arm_run(arm, 0)
    try:
        wait_until(lambda: controller.stats()["sensor_messages"] > 100, what="EGM references", timeout_s=60)
        controller.restart()
        wait_until(lambda: "link_loss" in loop.stop_reasons, what="the link-loss stop")
        sent, holds = controller.stats()["sensor_messages"], driver.hold_replies
        time.sleep(0.5)
        assert controller.stats()["sensor_messages"] == sent and driver.hold_replies == holds
    finally:
        loop.stop()
        controller.stop()
