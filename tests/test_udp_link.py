"""UDP driver <-> C++ sim robot server and camera stream, without the control loop (docs/protocol.md).

The driver is pumped like a loop would (helpers.robot.pump_until) until the endpoints report what a test waits
for; nothing depends on how much happens in a given wall time."""

from __future__ import annotations

import os
import socket
import struct
import time

import numpy as np
import pytest
from helpers.robot import pump_until, wait_until

from robot_rt import _control
from robot_rt.control import protocol as P
from robot_rt.control.udp import parse_udp_url
from robot_rt.sim.camera import CameraServer
from robot_rt.sim.udp_proxy import FaultProxy

LIMITS = dict(
    position_min=[-1.0, -0.5, -2.0],
    position_max=[1.0, 0.5, 2.0],
    velocity_limit=[2.0, 1.0, 4.0],
    acceleration_limit=[10.0, 8.0, 30.0],
    jerk_limit=[100.0, 80.0, 300.0],
)
DIGEST = P.joint_limits_digest(*LIMITS.values())  # the robot's joint limits, as a controller states them


def _server(**kw):
    server = _control.SimRobotServer(**LIMITS, **kw)
    server.start()
    return server


ZERO = [0.0, 0.0, 0.0]


def test_parse_udp_url():
    t = parse_udp_url("udp://127.0.0.1:5000")
    assert (t.host, t.port, t.camera_host, t.camera_port) == ("127.0.0.1", 5000, "127.0.0.1", 5001)
    assert parse_udp_url("udp://localhost:5000?camera=none").camera_port == 0
    assert parse_udp_url("udp://127.0.0.1:5000?camera=127.0.0.2:7000").camera_host == "127.0.0.2"
    for bad in ("tcp://1.2.3.4:5", "udp://1.2.3.4", "udp://1.2.3.4:99999", "udp://h:5?foo=1", "udp://h:x"):
        with pytest.raises(ValueError):
            parse_udp_url(bad)


def test_driver_tracks_commands_and_measures_round_trip():
    server = _server()
    driver = _control.UdpDriver("127.0.0.1", server.port, 3, limits_digest=DIGEST)
    try:
        driver.start()
        target = [0.4, -0.2, 1.0]
        states = []

        def converged(state):
            states.append(state)
            return state is not None and np.max(np.abs(np.subtract(state["position"], target))) < 2e-3

        pump_until(driver, converged, (target, ZERO))  # tracked, with lag
        assert driver.connected
        first = next(s for s in states if s is not None)
        assert abs(first["position"][0] - target[0]) > 0.05  # and it did have to move
        stats = driver.stats()
        assert stats["rtt_count"] > 50 and 0 < stats["rtt_min_ns"] <= stats["rtt_max_ns"]
        assert stats["rx_malformed"] == 0 and stats["rx_unexpected_source"] == 0
        s = server.stats()
        assert s["commands_applied"] > 50 and s["commands_out_of_limits"] == 0
        assert server.snapshot()["controller"] == f"127.0.0.1:{driver.local_port}"
    finally:
        driver.stop()
        server.stop()


def test_server_clamps_and_counts_commands_outside_limits_and_reports_holding():
    server = _server(command_timeout_s=0.05)
    driver = _control.UdpDriver("127.0.0.1", server.port, 3, limits_digest=DIGEST)
    try:
        driver.start()

        def clamped(state):  # commands applied (no longer holding as at the start), clamped and reported so
            status = driver.stats()["server_status"]
            reported = (status & P.STATUS_CLAMPED) and not (status & P.STATUS_HOLDING)
            return server.stats()["commands_out_of_limits"] > 0 and server.snapshot()["target"][0] == 1.0 and reported

        pump_until(driver, clamped, ([5.0, 0.0, 0.0], [0.0, 9.0, 0.0]))
        snap = server.snapshot()
        assert server.stats()["commands_out_of_limits"] > 0
        assert snap["target"][0] == 1.0 and -0.5 <= snap["position"][1] <= 0.5
        assert all(LIMITS["position_min"][i] <= snap["position"][i] <= LIMITS["position_max"][i] for i in range(3))
        # no more commands: the robot brakes and holds
        pump_until(
            driver, lambda s: driver.stats()["server_status"] & P.STATUS_HOLDING and server.stats()["hold_events"]
        )
        assert server.stats()["hold_events"] >= 1
    finally:
        driver.stop()
        server.stop()


def test_nan_commands_never_leave_the_driver():
    server = _server()
    driver = _control.UdpDriver("127.0.0.1", server.port, 3, limits_digest=DIGEST)
    try:
        driver.start()
        pump_until(driver, lambda s: driver.connected, (ZERO, ZERO))
        assert not driver.write_command([float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0])
        assert not driver.write_command([0.0, 0.0, 0.0], [0.0, float("inf"), 0.0])
        assert driver.stats()["tx_invalid"] == 2
        applied = server.stats()["commands_applied"]  # a valid command after them has arrived: so would they
        pump_until(driver, lambda s: server.stats()["commands_applied"] > applied, (ZERO, ZERO))
        assert server.stats()["rx_malformed"] == 0
    finally:
        driver.stop()
        server.stop()


def test_packets_from_unexpected_sources_and_garbage_are_dropped_and_counted():
    server = _server()
    driver = _control.UdpDriver("127.0.0.1", server.port, 3, limits_digest=DIGEST)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    try:
        driver.start()
        pump_until(driver, lambda s: driver.connected, ([0.1, 0.1, 0.1], ZERO))
        fake_state = P.encode(
            {"type": "joint_state", "session_id": 9, "sequence": 10**6, "position": [0.9, 0.4, 1.9], "status": 0}
        )
        fake_command = P.encode(
            {"type": "joint_command", "session_id": 9, "sequence": 10**6, "position": [0.9, 0.4, 1.9]}
        )
        for _ in range(20):
            stranger.sendto(fake_state, ("127.0.0.1", driver.local_port))
            stranger.sendto(fake_command, ("127.0.0.1", server.port))
            stranger.sendto(b"\x00garbage", ("127.0.0.1", server.port))

        def all_dropped(state):
            s = server.stats()
            return (
                driver.stats()["rx_unexpected_source"] >= 20
                and s["rx_unexpected_source"] >= 20
                and s["rx_rejected"]["too_short"] >= 20
            )

        state = pump_until(driver, all_dropped, ([0.1, 0.1, 0.1], ZERO))
        assert driver.stats()["rx_unexpected_source"] == 20
        s = server.stats()
        assert s["rx_unexpected_source"] == 20 and s["rx_rejected"]["too_short"] == 20
        assert abs(state["position"][0] - 0.9) > 0.5  # the forged state was never used
        assert max(abs(x - 0.9) for x in server.snapshot()["target"][:1]) > 0.5
        # a second controller is refused while the first is active
        other = _control.UdpDriver("127.0.0.1", server.port, 3, limits_digest=DIGEST)
        other.start()
        wait_until(lambda: server.stats()["hellos_refused"] >= 1, what="the server to refuse the second controller")
        assert other.read_state() is None and server.stats()["hellos_refused"] >= 1
        other.stop()
    finally:
        stranger.close()
        driver.stop()
        server.stop()


def test_hmac_key_required_on_both_ends():
    key = b"shared secret for this robot"
    server = _server(key=key)
    good = _control.UdpDriver("127.0.0.1", server.port, 3, key=key, limits_digest=DIGEST)
    wrong = _control.UdpDriver("127.0.0.1", server.port, 3, key=b"another long-term key", limits_digest=DIGEST)
    plain = _control.UdpDriver("127.0.0.1", server.port, 3, limits_digest=DIGEST)
    try:
        for d, reason in ((wrong, "bad_tag"), (plain, "missing_tag")):
            d.start()
            pump_until(d, lambda s, reason=reason: server.stats()["rx_rejected"][reason] > 0, ([0.2, 0.0, 0.0], ZERO))
            assert not d.connected
            d.stop()
        rejected = server.stats()["rx_rejected"]
        assert rejected["bad_tag"] > 0 and rejected["missing_tag"] > 0
        assert server.stats()["commands_applied"] == 0
        good.start()
        state = pump_until(
            good,
            lambda s: good.connected and s is not None and abs(s["position"][0] - 0.2) < 0.01,
            ([0.2, 0.0, 0.0], ZERO),
        )
        assert good.connected and state is not None and abs(state["position"][0] - 0.2) < 0.01
    finally:
        good.stop()
        server.stop()


@pytest.mark.parametrize("option", ["link_timeout_s", "late_threshold_s"])
def test_state_freshness_bounds_are_capped_at_one_second(option):
    """A link timeout or lateness bound of minutes would let a state that old count as the robot's current one: the
    driver refuses more than 1 s (the loop's own watchdogs are capped there too)."""
    _control.UdpDriver("127.0.0.1", 9, 3, limits_digest=DIGEST, **{option: 1.0})
    with pytest.raises(ValueError, match=option):
        _control.UdpDriver("127.0.0.1", 9, 3, limits_digest=DIGEST, **{option: 1.5})


def test_wrong_dof_is_refused():
    server = _server()
    driver = _control.UdpDriver("127.0.0.1", server.port, 4, limits_digest=DIGEST)
    try:
        driver.start()
        pump_until(driver, lambda s: server.stats()["rx_mismatch"] > 0)
        assert not driver.connected and server.stats()["rx_mismatch"] > 0
    finally:
        driver.stop()
        server.stop()
    with pytest.raises(ValueError, match="dof"):
        _control.UdpDriver("127.0.0.1", 5000, 0)
    with pytest.raises(ValueError, match="port"):
        _control.UdpDriver("127.0.0.1", 0, 3)
    with pytest.raises(ValueError, match="position_max"):
        _control.SimRobotServer([0.0], [0.0], [1.0], [1.0])


def test_server_restart_is_detected_and_the_link_recovers():
    server = _server()
    driver = _control.UdpDriver("127.0.0.1", server.port, 3, limits_digest=DIGEST)
    try:
        command = ([0.3, 0.0, 0.0], ZERO)
        driver.start()
        pump_until(driver, lambda s: driver.connected, command)
        first_session = server.session_id
        server.stop()
        pump_until(driver, lambda s: not driver.connected, command)  # the link times out
        assert not driver.connected
        server.start()
        assert server.session_id != first_session
        pump_until(driver, lambda s: driver.connected and driver.stats()["peer_restarts"] == 1, command)
        assert driver.stats()["peer_restarts"] == 1
        assert server.snapshot()["has_controller"]
    finally:
        driver.stop()
        server.stop()


def _camera_behind_a_proxy(n_serves: int):
    """A 150 Hz sim camera, a FaultProxy in front of it and an open CameraReceiver through it."""
    camera = CameraServer(rate_hz=150, serve_interval_s=0.3, n_serves=n_serves).start()
    proxy = FaultProxy(("127.0.0.1", camera.port), seed=3).start()
    receiver = _control.CameraReceiver(camera_port=proxy.port)
    receiver.open()
    return camera, proxy, receiver


@pytest.mark.parametrize("direction", ["down", "both"])
def test_camera_frames_the_network_holds_back_are_not_used(direction):
    """Frames are authentic, but their receive time says nothing about how long the network (or someone on it, no key
    needed) held them: a relay holding every frame 300 ms had them dated as fresh (the sixth audit). The camera now
    echoes the receiver's heartbeats, and a frame is used only while its age since the camera sent it is surely
    under the late threshold (20 ms): the held ones are dropped and counted, and the stream is used again once the
    delay ends."""
    camera, proxy, receiver = _camera_behind_a_proxy(n_serves=50)
    try:
        wait_until(
            lambda: receiver.read() is not None and receiver.stats()["detections"] > 20,
            what="20 detections",
            interval_s=0.01,
        )  # (read() polls)
        assert 0 < receiver.stats()["best_round_trip_ns"] < 20_000_000
        proxy.set_faults(direction, delay_prob=1.0, delay_s=0.3)
        time.sleep(0.35)  # the last frames sent before the delay are through
        receiver.read()
        detections, late = receiver.stats()["detections"], receiver.stats()["rx_late"]
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:  # polled as a loop would
            assert not receiver.read()
            time.sleep(0.002)
        assert receiver.stats()["detections"] == detections and receiver.stats()["rx_late"] > late + 50
        proxy.clear_faults()
        wait_until(
            lambda: receiver.read() is not None and receiver.stats()["detections"] > detections + 20,
            what="detections again",
            interval_s=0.01,
        )
    finally:
        receiver.close()
        proxy.stop()
        camera.stop()


def test_camera_stream_through_a_faulty_link():
    camera, proxy, receiver = _camera_behind_a_proxy(n_serves=2)
    try:
        wait_until(lambda: len(receiver.read()) >= 0 and receiver.stats()["frames"] > 20, what="20 camera frames")
        proxy.set_faults("down", drop=0.1, duplicate=0.1, reorder=0.1, corrupt=0.1)
        detections, ages_ns = [], []

        def seen_every_fault():
            new = receiver.read()
            now = _control.monotonic_ns()
            detections.extend(new)
            ages_ns.extend(now - d["stamp_ns"] for d in new)
            s, injected = receiver.stats(), proxy.injected["down"]
            counted = s["rx_lost"] > 0 and s["rx_malformed"] > 0 and s["rx_duplicate"] > 0 and s["rx_stale"] > 0
            faults = injected["drop"] > 0 and injected["corrupt"] > 0 and injected["duplicate"] > 0
            return counted and faults and len(detections) > 20

        wait_until(seen_every_fault, what="every fault injected and counted, and 20 detections", interval_s=0.01)
        stats = receiver.stats()
        injected = proxy.injected["down"]
        assert injected["drop"] > 0 and injected["corrupt"] > 0 and injected["duplicate"] > 0
        assert stats["rx_lost"] > 0 and stats["rx_malformed"] > 0 and stats["rx_duplicate"] > 0
        assert stats["rx_stale"] > 0
        assert len(detections) > 20
        for d, age_ns in zip(detections, ages_ns):
            assert 0 < age_ns < 2e9  # dated on the local clock by its capture age (age when read)
            assert np.all(np.isfinite(d["position_m"]))
        # most detections lie on a ball flight over the table region
        xs = np.array([d["position_m"][0] for d in detections])
        assert np.mean((xs > -3.0) & (xs < 2.0)) > 0.8
    finally:
        receiver.close()
        proxy.stop()
        camera.stop()


def test_key_files_are_checked(tmp_path):
    """read_key: a missing, empty or short key file is an error naming key_file; whitespace at the ends is not key;
    a file other users may read or its group may write is refused (whoever reads the key can command the robot)."""
    from robot_rt.control.udp import MIN_KEY_BYTES, read_key

    def key_file(name, data, mode=0o600):
        path = tmp_path / name
        path.write_bytes(data)
        path.chmod(mode)
        return path

    assert read_key(None) == b""
    with pytest.raises(FileNotFoundError, match="key_file"):
        read_key(tmp_path / "missing.key")
    with pytest.raises(ValueError, match="key_file.*empty"):
        read_key(key_file("empty.key", b"  \n"))
    with pytest.raises(ValueError, match=f"key_file.*{MIN_KEY_BYTES - 1} bytes"):
        read_key(key_file("short.key", b"x" * (MIN_KEY_BYTES - 1) + b"\n"))
    good = b"0123456789abcdef" * 4
    assert read_key(key_file("good.key", b"\n" + good + b"\n")) == good
    assert read_key(key_file("group.key", good, 0o640)) == good  # a robot group may share it read-only
    for mode in (0o644, 0o604, 0o606, 0o601, 0o660, 0o620, 0o666):
        with pytest.raises(PermissionError, match=f"key_file: .* has mode {mode:o}.*chmod 600"):
            read_key(key_file("open.key", good, mode))
    # checked through the descriptor it is read from: a link to an open file is refused as the file is
    (tmp_path / "link.key").symlink_to(tmp_path / "open.key")
    with pytest.raises(PermissionError, match="has mode 666"):
        read_key(tmp_path / "link.key")
    os.mkfifo(tmp_path / "fifo.key", 0o600)  # a pipe (e.g. /dev/stdin) is not a key file
    with pytest.raises(ValueError, match="key_file: .* not a regular file"):
        read_key(tmp_path / "fifo.key")
    if os.geteuid() == 0:  # another user's file (only root can give one away)
        os.chown(key_file("theirs.key", good), 65534, -1)
        with pytest.raises(PermissionError, match="owned by uid 65534"):
            read_key(tmp_path / "theirs.key")
    acl = key_file("acl.key", good, 0o640)
    # user::rw- user:65534:r-- group::r-- mask::r-- other::--- (the xattr format of POSIX ACLs, version 2)
    entries = [
        (0x01, 6, 0xFFFFFFFF),
        (0x02, 4, 65534),
        (0x04, 4, 0xFFFFFFFF),
        (0x10, 4, 0xFFFFFFFF),
        (0x20, 0, 0xFFFFFFFF),
    ]
    try:
        os.setxattr(
            acl, "system.posix_acl_access", struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
        )
    except OSError:
        pass  # no ACLs on this file system
    else:
        with pytest.raises(PermissionError, match="carries an ACL"):
            read_key(acl)
