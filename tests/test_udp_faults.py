"""The real-time loop over the UDP link, with faults injected by a loopback proxy (robot_rt.sim.udp_proxy).

For each fault — dropped, late, duplicated, reordered and malformed packets, a server restart, packets from
strangers, NaN commands — the loop keeps ticking, the robot stays inside its limits (the sim server
counts any command outside them and any hard stop), and the event is counted by the endpoints and logged
in the run log (link events of robot_rt.control.udp.LINK_EVENT_CODES). Phases last a number of loop ticks and
end on what the endpoints report, not on wall time.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import numpy as np
import pytest
from helpers.robot import udp_receive_buffer_drops, wait_ticks, wait_until, with_wide_workspace

from robot_rt.control import protocol as P
from robot_rt.control.loop import EVENT_CODES, TICK_FLAGS, RealTimeLoop
from robot_rt.control.policies import NanBurst, Sine
from robot_rt.control.runlog import RunLog, read_runlog
from robot_rt.control.udp import LINK_EVENT_CODES, LinkMonitor, make_udp_driver
from robot_rt.robot import load_robot
from robot_rt.sim.server import SimServer
from robot_rt.sim.udp_proxy import FaultProxy

RATE_HZ = 500.0
EVENT_TICK_MUTED = TICK_FLAGS["muted"]


@dataclass
class Run:
    ticks: int  # loop ticks the run waited for
    kernel_drops: int | None  # datagrams the kernel dropped on full receive buffers meanwhile (None: unknown)
    loop: dict
    link: dict
    server: dict
    injected: dict
    log: RunLog
    extra: dict

    def logged(self, name: str) -> float:
        """Sum of the values of link event `name` in the run log (packets it stands for)."""
        code = LINK_EVENT_CODES[name]
        return float(self.log.events["value"][self.log.events["code"] == code].sum())

    def loop_events(self, name: str) -> int:
        return int(np.count_nonzero(self.log.events["code"] == EVENT_CODES[name]))


def run_link(tmp_path, *, up=None, down=None, action=None, fault_s=1.0, policy=Sine, camera=False, key=b"", seed=1):
    robot = load_robot()
    server = SimServer(robot, camera=camera, key=key, serve_interval_s=0.4, seed=seed).start()
    proxy = FaultProxy(("127.0.0.1", server.port), seed=seed).start()
    camera_part = f"camera={server.camera_port}" if camera else "camera=none"
    driver = make_udp_driver(f"udp://127.0.0.1:{proxy.port}?{camera_part}", robot.dof, key=key)
    log_path = tmp_path / "run.rrlog"
    # a sensor timeout above the stalls of a loaded 2-core CI machine (a stop latches now: a spurious one would end
    # every run), below every injected outage
    loop = RealTimeLoop(
        robot,
        driver,
        policy=policy(robot),
        rate_hz=RATE_HZ,
        policy_rate_hz=50,
        log_path=log_path,
        sensor_timeout_s=0.06,
    )
    extra: dict = {}
    drops_before = udp_receive_buffer_drops()
    loop.start()
    monitor = LinkMonitor(loop, driver, interval_s=0.05).start()
    ticks = 0
    try:
        # 0.3 s of loop time on a working link, then the faults for fault_s, then 0.4 s of recovery
        wait_until(lambda: driver.stats()["connected"], what="the link to come up")
        ticks += int(0.3 * RATE_HZ)
        wait_ticks(loop, int(0.3 * RATE_HZ))
        extra["before"] = {"link": driver.stats(), "server": server.robot_server.stats()}
        if up:
            proxy.set_faults("up", **up)
        if down:
            proxy.set_faults("down", **down)
        if action is not None:
            action(server=server, proxy=proxy, driver=driver, loop=loop, extra=extra)
        ticks += int(fault_s * RATE_HZ)
        wait_ticks(loop, int(fault_s * RATE_HZ))
        proxy.clear_faults()
        received = driver.stats()["states_received"]
        ticks += int(0.4 * RATE_HZ)
        wait_ticks(loop, int(0.4 * RATE_HZ))
        wait_until(
            lambda: driver.stats()["connected"] and driver.stats()["states_received"] > received, what="recovery"
        )
        extra["after"] = {"link": driver.stats(), "server": server.robot_server.stats()}
    finally:
        monitor.stop()
        loop.stop()
        proxy.stop()
        server_stats = server.robot_server.stats()
        server.stop()
    drops_after = udp_receive_buffer_drops()
    kernel_drops = None if drops_before is None or drops_after is None else drops_after - drops_before
    log = read_runlog(log_path)
    return Run(ticks, kernel_drops, loop.counters(), driver.stats(), server_stats, proxy.injected, log, extra)


def assert_kept_ticking_and_limits(run: Run):
    # the loop never waits on the network: it ran every tick of every phase (the rate: bench/bench_udp.py)
    assert run.loop["ticks"] >= run.ticks, (run.loop["ticks"], run.ticks)
    assert len(run.log.ticks) >= 0.9 * run.loop["ticks"]
    # the robot never received a command outside its limits and never hit a hard stop
    assert run.server["commands_out_of_limits"] == 0
    assert run.server["hard_stops"] == 0
    meta = run.log.meta
    cmd = run.log.ticks["command_position"]
    assert np.all(cmd >= np.asarray(meta["position_min"]) - 1e-9)
    assert np.all(cmd <= np.asarray(meta["position_max"]) + 1e-9)
    assert np.all(np.abs(run.log.ticks["command_velocity"]) <= np.asarray(meta["velocity_limit"]) * (1 + 1e-9))
    assert run.log.clean
    # and the link was alive at the end
    assert run.extra["after"]["link"]["states_received"] > run.extra["before"]["link"]["states_received"]


def assert_stayed_stopped(run: Run):
    """After a protective stop the loop never resumes by itself: from the stop's end to the end of the run the
    commanded position does not change (the policy keeps sending; those commands are discarded)."""
    events = run.log.events
    done = events[events["code"] == EVENT_CODES["stop_complete"]]
    assert len(done) >= 1
    t = run.log.ticks
    row = int(np.flatnonzero(t["tick"] == done["tick"][0])[0])
    assert np.all(t["command_position"][row:] == t["command_position"][row])
    assert run.loop_events("recovered") == 0 and run.loop["commands_discarded"] > 0


def test_clean_link_has_no_link_events(tmp_path):
    run = run_link(tmp_path, fault_s=0.5)
    assert_kept_ticking_and_limits(run)
    for name in ("udp_malformed", "udp_duplicate", "udp_stale", "udp_peer_restart"):
        assert run.logged(name) == 0, name
    # a loaded machine may overflow a socket's receive buffer (the kernel drops the datagram and counts it): a loss
    # the link reports truthfully, but no loss beyond what the kernel dropped
    assert run.logged("udp_lost") <= (run.kernel_drops or 0), (run.logged("udp_lost"), run.kernel_drops)
    assert run.server["commands_applied"] > 0.5 * run.loop["ticks"]  # one command per tick


def test_dropped_packets(tmp_path):
    run = run_link(tmp_path, up={"drop": 0.2}, down={"drop": 0.2})
    assert_kept_ticking_and_limits(run)
    assert run.injected["down"]["drop"] > 20 and run.injected["up"]["drop"] > 20
    assert run.link["rx_lost"] > 0 and run.server["rx_lost"] > 0
    assert 0 < run.logged("udp_lost") <= run.link["rx_lost"]


def test_duplicated_packets(tmp_path):
    run = run_link(tmp_path, up={"duplicate": 0.3}, down={"duplicate": 0.3})
    assert_kept_ticking_and_limits(run)
    assert run.link["rx_duplicate"] > 0 and run.server["rx_duplicate"] > 0
    assert 0 < run.logged("udp_duplicate") <= run.link["rx_duplicate"]


def test_reordered_packets(tmp_path):
    run = run_link(tmp_path, up={"reorder": 0.2}, down={"reorder": 0.2})
    assert_kept_ticking_and_limits(run)
    assert run.injected["down"]["reorder"] > 10
    assert run.link["rx_stale"] > 0 and run.server["rx_stale"] > 0
    assert 0 < run.logged("udp_stale") <= run.link["rx_stale"]


def test_malformed_packets(tmp_path):
    faults = {"corrupt": 0.1, "truncate": 0.05, "garbage": 0.05}
    run = run_link(tmp_path, up=faults, down=faults)
    assert_kept_ticking_and_limits(run)
    assert run.link["rx_malformed"] > 0 and run.server["rx_malformed"] > 0
    assert run.link["rx_rejected"]["bad_checksum"] > 0
    assert 0 < run.logged("udp_malformed") <= run.link["rx_malformed"] + run.link["rx_mismatch"]


def test_late_packets_stop_the_robot_which_stays_stopped(tmp_path):
    # every state arrives 60 ms late for a while: in order, so only the late detector can tell
    run = run_link(tmp_path, down={"delay_prob": 1.0, "delay_s": 0.06}, fault_s=0.6)
    assert_kept_ticking_and_limits(run)
    assert run.link["rx_late"] > 0 and run.logged("udp_late") > 0
    assert run.loop_events("sensor_timeout_stop") >= 1  # no fresh state: controlled stop
    assert run.loop_events("sensor_recovered") >= 1  # states flow again, but the loop stays stopped
    assert_stayed_stopped(run)


def test_partially_late_packets_are_dropped_as_stale_or_late(tmp_path):
    run = run_link(tmp_path, down={"delay_prob": 0.1, "delay_s": 0.03})
    assert_kept_ticking_and_limits(run)
    assert run.link["rx_stale"] + run.link["rx_late"] > 0
    assert run.logged("udp_stale") + run.logged("udp_late") > 0


def test_link_blackout_stops_the_robot_and_the_link_recovers(tmp_path):
    run = run_link(tmp_path, up={"blackhole": True}, down={"blackhole": True}, fault_s=0.3)
    assert_kept_ticking_and_limits(run)
    assert run.logged("udp_link_down") >= 1 and run.logged("udp_link_up") >= 1
    assert run.loop_events("sensor_timeout_stop") == 1 and run.loop_events("link_loss_stop") == 1
    assert_stayed_stopped(run)
    # a lost link: once the commanded stop is at rest the loop stops sending (the robot holds by itself)
    assert run.loop_events("commands_muted") == 1 and run.loop["muted_ticks"] > 0


def test_server_restart(tmp_path):
    """A restarted robot side is a lost link: the loop stops, stops commanding the new session (the robot holds by
    itself, wherever it is), and never resumes by itself; recover() re-synchronises to where the robot is."""

    def restart(server, loop, extra, **_):
        extra["session"] = server.robot_server.session_id
        server.robot_server.stop()
        wait_until(lambda: loop.event_count("sensor_timeout_stop") >= 1, what="the loop to miss the robot")
        server.robot_server.start()
        extra["new_session"] = server.robot_server.session_id
        wait_ticks(loop, int(0.4 * RATE_HZ))  # the link comes back; the loop must not command the new session
        extra["applied_at_restart"] = server.robot_server.stats()["commands_applied"]
        extra["lifecycle_before_recover"] = loop.lifecycle
        extra["reasons_before_recover"] = loop.stop_reasons
        extra["recovery"] = loop.recover()
        extra["lifecycle_after_recover"] = loop.lifecycle

    run = run_link(tmp_path, action=restart, fault_s=0.3)
    assert_kept_ticking_and_limits(run)
    assert run.extra["session"] != run.extra["new_session"]
    assert run.link["peer_restarts"] == 1 and run.logged("udp_peer_restart") == 1
    assert run.loop_events("sensor_timeout_stop") == 1 and run.loop_events("link_loss_stop") == 1
    assert run.extra["lifecycle_before_recover"] == "stopped"
    assert set(run.extra["reasons_before_recover"]) >= {"sensor_timeout", "link_loss"}
    # the new session received nothing from the loop before the recovery ...
    events = run.log.events
    muted = events[events["code"] == EVENT_CODES["commands_muted"]]
    recovered = events[events["code"] == EVENT_CODES["recovered"]]
    assert len(muted) == 1 and len(recovered) == 1
    t = run.log.ticks
    rec_row = int(np.flatnonzero(t["tick"] == recovered["tick"][0])[0])
    assert np.all(t["flags"][rec_row - 50 : rec_row] & EVENT_TICK_MUTED)
    # ... then the recovery restarted the commanded trajectory exactly where the robot is: no step
    assert run.extra["recovery"].ok, run.extra["recovery"]
    assert run.extra["lifecycle_after_recover"] == "active"
    np.testing.assert_allclose(t["command_position"][rec_row], t["measured_position"][rec_row], atol=1e-9)
    assert run.server["commands_applied"] > run.extra["applied_at_restart"]  # commanded again after the recovery


def test_packets_from_unexpected_sources(tmp_path):
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))

    def spoof(server, driver, **_):
        state = P.encode({"type": "joint_state", "session_id": 5, "sequence": 2**40, "position": [0.9] * 8})
        command = P.encode({"type": "joint_command", "session_id": 5, "sequence": 2**40, "position": [0.9] * 8})
        for i in range(30):  # one at a time: the next once the driver has counted (and dropped) the last one
            stranger.sendto(state, ("127.0.0.1", driver.local_port))
            stranger.sendto(command, ("127.0.0.1", server.port))
            wait_until(lambda i=i: driver.stats()["rx_unexpected_source"] > i, what="the driver to drop the spoof")

    try:
        run = run_link(tmp_path, action=spoof, fault_s=0.2)
    finally:
        stranger.close()
    assert_kept_ticking_and_limits(run)
    assert run.link["rx_unexpected_source"] == 30 and run.server["rx_unexpected_source"] >= 30
    assert run.logged("udp_unexpected_source") == 30
    assert np.max(run.log.ticks["measured_position"][:, 0]) < 0.85  # the forged state was never used


def test_nan_commands_over_udp(tmp_path):
    run = run_link(tmp_path, policy=NanBurst, fault_s=1.0)
    assert_kept_ticking_and_limits(run)
    assert run.loop_events("non_finite_command") > 0  # rejected by the loop, logged
    assert run.link["tx_invalid"] == 0 and run.server["rx_malformed"] == 0  # nothing non-finite on the wire


def test_hmac_link_with_camera_stream(tmp_path):
    run = run_link(tmp_path, key=b"k3y-for-this-test", camera=True, down={"corrupt": 0.05}, fault_s=1.0)
    assert_kept_ticking_and_limits(run)
    assert run.link["rx_rejected"]["bad_checksum"] + run.link["rx_rejected"]["bad_tag"] > 0
    assert run.link["camera"]["frames"] > 50
    assert run.loop["ball_observations"] > 0 and len(run.log.balls) > 0
    assert np.all(np.isfinite(run.log.balls["position_m"]))


@pytest.mark.parametrize("bad_url", ["udp://127.0.0.1", "udp://127.0.0.1:70000", "tcp://127.0.0.1:5"])
def test_bad_urls_are_refused(bad_url):
    with pytest.raises(ValueError):
        make_udp_driver(bad_url, 8)


class _OutageProxy(FaultProxy):
    """Loses every robot -> controller datagram while `outage` is set, until the robot's hello_ack of the driver's
    re-handshake, which gets through: the link heals in the very datagram that re-establishes the session."""

    outage = False

    def _inject(self, direction, data, now):
        if self.outage and direction == "down":
            if len(data) > 5 and data[5] == 6:  # hello_ack
                self.outage = False
            else:
                self.injected[direction]["outage"] += 1
                return
        super()._inject(direction, data, now)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_session_re_established_while_stopping_is_sent_nothing(seed):
    """A one-way outage while the loop sweeps a joint at full speed: the loop latches sensor_timeout and link_loss
    and ramps its stop; the driver gives the session up (0.25 s) and re-handshakes with the same robot server (same
    server session id: no peer restart). The new session is established inside read_state; until the loop has seen
    its first state (kStateNewSession, muting in that tick) the driver sends it nothing. Before, the tick's stop-ramp
    command went to the new session (1 command, 16 mrad from the robot, up to 1.3 rad/s feed-forward)."""
    robot = with_wide_workspace(load_robot())
    j = 7
    server = SimServer(robot, camera=False, key=b"", seed=seed).start()
    proxy = _OutageProxy(("127.0.0.1", server.port), seed=seed, record=True).start()
    driver = make_udp_driver(f"udp://127.0.0.1:{proxy.port}?camera=none", robot.dof, key=b"")
    lo, hi = robot.position_min[j] * 0.7, robot.position_max[j] * 0.7

    def policy(obs):  # full-speed sweeps of one joint
        q = np.array(robot.home, dtype=float)
        q[j] = hi if (obs["stamp_ns"] // 1_000_000_000) % 2 == 0 else lo
        return q

    loop = RealTimeLoop(robot, driver, policy=policy)
    loop.start()
    try:

        def fast():
            o = loop.observation()
            return (
                o is not None
                and loop.lifecycle == "active"
                and abs(o["command_velocity"][j]) > 0.9 * robot.velocity_limit[j]
            )

        # (a 2-vCPU machine under load can stop the loop before the sweep is at speed, e.g. a tracking stop after a
        # late wake: seen once in 15 runs beside two busy loops; that is not what this test is about, so such a stop
        # is recovered and the sweep waited for again)
        stops = []
        deadline = time.monotonic() + 20.0
        while not fast():
            if time.monotonic() > deadline:
                raise AssertionError(f"the joint never at speed; stops before the outage: {stops}")
            if loop.lifecycle == "stopped":
                stops.append(list(loop.stop_reasons))
                time.sleep(0.5)
                loop.recover()
            time.sleep(0.002)
        proxy.outage = True
        wait_until(lambda: driver.stats()["sessions_established"] >= 2, timeout_s=3.0, what="the re-handshake")
        wait_until(lambda: loop.lifecycle == "stopped", timeout_s=3.0, what="the stop")
        established = driver.stats()["sessions_established"]
    finally:
        loop.stop()
        proxy.stop()
        server.stop()
    assert established == 2
    sessions = []
    commands = {}
    for c in proxy.captured:
        if c.direction != "up":
            continue
        try:
            p = P.decode(c.data)
        except P.ProtocolError:
            continue
        if p["session_id"] not in sessions:
            sessions.append(p["session_id"])
        if p["type"] == "joint_command":
            commands[p["session_id"]] = commands.get(p["session_id"], 0) + 1
    assert len(sessions) == 2, sessions
    assert commands.get(sessions[0], 0) > 100  # the first session was commanded ...
    assert commands.get(sessions[1], 0) == 0  # ... the re-established one never
    assert set(loop.stop_reasons) >= {"sensor_timeout", "link_loss"}


class _Swing:
    """Home with one joint moved by `move(t)` = (joint, offset) (t: seconds since the first observation)."""

    def __init__(self, robot):
        self.robot, self.t0 = robot, None

    def reset(self):
        self.t0 = None

    def __call__(self, obs):
        q = np.array(self.robot.home, dtype=float)
        if self.t0 is None:
            self.t0 = obs["stamp_ns"]
        joint, value = self.move((obs["stamp_ns"] - self.t0) * 1e-9)
        q[joint] += value
        return q


class _SwingJ6(_Swing):
    """Swings arm_j6 (the wrist roll: the paddle centre barely moves) between +-3 rad, a bang every second."""

    def move(self, t):
        return 7, 3.0 if int(t) % 2 == 0 else -3.0


@pytest.mark.parametrize("fault", ["estop", "fault", "stuck"])
def test_robot_side_stop_then_release_nothing_moves_until_recover(fault):
    """Rule 3 through the robot's own stop: its e-stop input, a drive fault or a jammed joint stops it mid-swing,
    far from the loop's commanded stop. The loop stops sending at once (muted), so when the cause clears the robot
    does not run to the commanded rest (it did: 1.7 rad at 1.2 V, found by an audit); a recovery restarts at the
    robot's position."""
    robot, key, j = with_wide_workspace(load_robot()), b"k" * 32, 7
    server = SimServer(robot, camera=False, key=key).start()
    driver = make_udp_driver(f"udp://127.0.0.1:{server.port}?camera=none", robot.dof, key=key)
    loop = RealTimeLoop(robot, driver, policy=_SwingJ6(robot), rate_hz=500, policy_rate_hz=100)
    snap = server.robot_server.snapshot
    loop.start()
    try:
        wait_until(
            lambda: abs(snap()["velocity"][j]) > 0.8 * robot.velocity_limit[j],
            what="a fast swing",
            context=lambda: (loop.lifecycle, loop.stop_reasons),
        )
        server.robot_server.set_faults(**({"stuck_joint": j} if fault == "stuck" else {fault: True}))
        wait_until(lambda: loop.lifecycle == "stopped", what="the stop")
        wait_until(lambda: abs(snap()["velocity"][j]) < 1e-6, what="the robot at rest")
        obs = loop.observation()
        assert obs["flags"] & TICK_FLAGS["muted"]
        held = np.array(snap()["position"])
        assert abs(obs["command_position"][j] - held[j]) > 0.3  # the commanded rest lies far from the robot
        server.robot_server.set_faults()  # the cause clears; nobody recovers
        wait_ticks(loop, 500)  # a second of the loop
        assert np.max(np.abs(np.array(snap()["position"]) - held)) < 1e-6
        assert loop.lifecycle == "stopped"
        assert loop.recover(timeout_s=5.0, seen_reasons=loop.stop_reasons)
        wait_ticks(loop, 2)
        after = loop.observation()
        assert not after["flags"] & TICK_FLAGS["muted"]
        np.testing.assert_allclose(after["command_position"][j], held[j], atol=1e-3)  # restarts where it is
    finally:
        loop.stop()
        server.stop()


@pytest.mark.parametrize("fault, cause_s", [("fault", 0.004), ("estop", 0.004), ("stuck", 0.04), ("stuck", 0.06)])
def test_a_short_robot_side_stop_never_lets_earlier_commands_move_the_robot(fault, cause_s):
    """Rule 3 on the robot side: a stop shorter than the link's in-flight window (a fault of a few ms, a jam freed
    before the robot's 0.1 s watchdog). The loop mutes, but the commands it sent before it knew were in flight or
    queued: the robot applied them once the cause cleared, and a freed joint ran to the last target on its velocity
    feed-forward (0.26-0.43 rad at up to 8.7 rad/s, found by an audit). Now the robot holds until a command after a
    silence starts where it holds: nothing moves it until the recovery, which then takes."""
    import time

    robot, key, j = with_wide_workspace(load_robot()), b"k" * 32, 7
    server = SimServer(robot, camera=False, key=key).start()
    rs = server.robot_server
    driver = make_udp_driver(f"udp://127.0.0.1:{server.port}?camera=none", robot.dof, key=key)
    loop = RealTimeLoop(robot, driver, policy=_SwingJ6(robot), rate_hz=1000, policy_rate_hz=100)
    loop.start()
    try:
        wait_until(
            lambda: abs(rs.snapshot()["velocity"][j]) > 0.8 * robot.velocity_limit[j],
            what="a fast swing",
            context=lambda: (loop.lifecycle, loop.stop_reasons),
        )
        rs.set_faults(**({"stuck_joint": j} if fault == "stuck" else {fault: True}))
        at_stop = rs.snapshot()["position"][j]
        time.sleep(cause_s)
        rs.set_faults()  # the cause is gone already; nobody recovers
        cleared = rs.stats()["commands_applied"]
        wait_until(lambda: loop.lifecycle == "stopped", what="the loop's stop")
        wait_until(lambda: abs(rs.snapshot()["velocity"][j]) < 1e-4, timeout_s=3.0, what="the robot at rest")
        held = np.array(rs.snapshot()["position"])
        # it rests where its own stop put it: a jammed joint where it was blocked, a faulted one where it began to
        # brake (one server tick and the settling of its hold later)
        assert abs(held[j] - at_stop) < (1e-3 if fault == "stuck" else 0.05), (held[j], at_stop)
        wait_ticks(loop, 500)
        assert rs.stats()["commands_applied"] == cleared  # nothing sent before the stop was applied after it
        assert np.max(np.abs(np.array(rs.snapshot()["position"]) - held)) < 1e-4
        stats = rs.stats()
        assert stats["own_stops"] >= 1 and stats["resync_required"]
        assert loop.lifecycle == "stopped" and loop.observation()["flags"] & TICK_FLAGS["muted"]
        # the recovery restarts where the robot holds: its first command resynchronises the robot, which follows again
        assert loop.recover(timeout_s=5.0, seen_reasons=loop.stop_reasons)
        wait_until(lambda: rs.stats()["commands_applied"] > cleared + 50, what="commands applied after the recovery")
        assert not rs.stats()["resync_required"]
        wait_until(lambda: abs(rs.snapshot()["position"][j] - held[j]) > 0.1, what="the swing again")
        assert loop.lifecycle == "active"
    finally:
        loop.stop()
        server.stop()


def test_a_robot_side_stop_the_loop_never_saw_is_still_a_stop():
    """Rule 3 under packet loss: a 2 ms robot-side fault whose states are lost, with the commands lost one way for
    35 ms around it. The robot counts its stops in every state and takes only commands that acknowledge the count
    (a recovery does), so the loop learns of the stop from the next state it gets and the robot never follows it
    again without a recovery (with a silence-based resync, the loop's ordinary stream resynchronised the robot and
    it followed the loop 0.3 m on, the loop never stopping: found by an audit)."""
    import threading
    import time

    class Goal:
        def __init__(self):
            self.go = threading.Event()

        def reset(self):
            pass

        def __call__(self, obs):
            q = robot.home.copy()
            if self.go.is_set():
                q[0] += 0.3
            return q

    robot, key = with_wide_workspace(load_robot()), b"k" * 32
    server = SimServer(robot, camera=False, key=key).start()
    rs = server.robot_server
    proxy = FaultProxy(("127.0.0.1", server.port), seed=1).start()
    driver = make_udp_driver(f"udp://127.0.0.1:{proxy.port}?camera=none", robot.dof, key=key)
    policy = Goal()
    loop = RealTimeLoop(robot, driver, policy=policy, rate_hz=1000, sensor_timeout_s=0.06)
    loop.start()
    try:
        wait_ticks(loop, 300)
        before = np.array(rs.snapshot()["position"])
        stops_before = rs.stats()["own_stops"]
        t0 = time.monotonic()
        proxy.set_faults("up", blackhole=True)  # commands lost from here
        time.sleep(0.004)
        proxy.set_faults("both", blackhole=True)  # and the states that carry the fault bit
        rs.set_faults(fault=True)
        time.sleep(0.002)
        rs.set_faults()  # cleared by itself; nobody recovers
        time.sleep(0.003)
        proxy.set_faults("up", blackhole=True)  # states flow again, commands still lost
        time.sleep(max(0.0, t0 + 0.035 - time.monotonic()))
        proxy.clear_faults()
        wait_until(lambda: loop.lifecycle == "stopped", what="the loop's stop")
        assert rs.stats()["own_stops"] == stops_before + 1
        assert "robot_fault" in loop.stop_reasons_seen, loop.stop_reasons_seen
        policy.go.set()  # the policy now asks for 0.3 m
        wait_ticks(loop, 1000)
        assert np.max(np.abs(np.array(rs.snapshot()["position"]) - before)) < 2e-3
        assert rs.stats()["resync_required"] and loop.lifecycle == "stopped"
        assert loop.recover(timeout_s=5.0, seen_reasons=loop.stop_reasons)  # an operator's recovery: it moves again
        wait_until(lambda: abs(rs.snapshot()["position"][0] - before[0] - 0.3) < 5e-3, what="the goal")
    finally:
        loop.stop()
        proxy.stop()
        server.stop()


@pytest.mark.parametrize("first", ["estop", "fault"])
def test_a_recovery_clears_only_the_robot_stops_its_requester_saw(first):
    """A robot stop after the operator read the stop (its states lost, and e-stop or robot_fault latched already)
    refuses the recovery made for the first stop: the loop counts the robot's stops (robot_stop_events, read before the
    reasons as estop_presses is); and a stop between two runs latches at the next start (found by a third audit)."""
    import time

    robot, key = with_wide_workspace(load_robot()), b"k" * 32
    server = SimServer(robot, camera=False, key=key).start()
    rs = server.robot_server
    proxy = FaultProxy(("127.0.0.1", server.port), seed=1).start()
    driver = make_udp_driver(f"udp://127.0.0.1:{proxy.port}?camera=none", robot.dof, key=key)
    loop = RealTimeLoop(robot, driver, policy=lambda obs: robot.home, rate_hz=1000, sensor_timeout_s=0.06)
    loop.start()
    try:
        wait_ticks(loop, 300)
        if first == "estop":
            loop.estop()
        else:
            rs.set_faults(fault=True)
            time.sleep(0.01)
            rs.set_faults()
        wait_until(lambda: loop.lifecycle == "stopped", what="the first stop")
        presses, robot_stops, reasons = loop.estop_presses, loop.robot_stop_events, tuple(loop.stop_reasons)
        proxy.set_faults("down", blackhole=True)  # the second stop's states are lost: only its count tells
        time.sleep(0.002)
        rs.set_faults(fault=True)
        time.sleep(0.003)
        rs.set_faults()
        time.sleep(0.003)
        proxy.clear_faults()
        wait_until(lambda: loop.robot_stop_events > robot_stops, what="the second stop's count")
        assert "robot_fault" in loop.stop_reasons
        result = loop.recover(5.0, seen_reasons=reasons, seen_estop_presses=presses, seen_robot_stops=robot_stops)
        assert not result.ok and "robot_fault" in result.blockers, result
        assert loop.recover(5.0, seen_reasons=loop.stop_reasons)  # one that saw it
        wait_ticks(loop, 50)
        assert loop.lifecycle == "active"
        loop.stop()
        rs.set_faults(fault=True)  # a stop between two runs of the same driver
        time.sleep(0.01)
        rs.set_faults()
        loop.start()
        wait_until(lambda: loop.lifecycle == "stopped", what="the stop at the start")
        assert "robot_fault" in loop.stop_reasons and rs.stats()["resync_required"]
        loop.stop()
        # ... and of a new driver (a new `robot-rt run`): the robot says its last stop is unacknowledged
        fresh = make_udp_driver(f"udp://127.0.0.1:{proxy.port}?camera=none", robot.dof, key=key)
        loop = RealTimeLoop(robot, fresh, policy=lambda obs: robot.home + 0.1, rate_hz=1000)
        held = np.array(rs.snapshot()["position"])
        loop.start()
        wait_until(lambda: loop.lifecycle == "stopped", what="the stop at the new driver's start")
        assert "robot_fault" in loop.stop_reasons
        wait_ticks(loop, 200)
        assert np.max(np.abs(np.array(rs.snapshot()["position"]) - held)) < 1e-4
    finally:
        loop.stop()
        proxy.stop()
        server.stop()


def test_hold_policy_restarts_where_the_robot_is():
    """Rule 2 across runs: the same Hold instance in a second run holds where the robot then is, not where the
    first run began (it had no reset(): a restarted loop drove the robot 0.3 m back, found by an audit)."""
    from robot_rt.control.policies import Hold

    robot, key = load_robot(), b"k" * 32
    server = SimServer(robot, camera=False, key=key).start()
    url = f"udp://127.0.0.1:{server.port}?camera=none"
    pos = lambda: np.array(server.robot_server.snapshot()["position"])  # noqa: E731
    try:
        loop_a = RealTimeLoop(robot, make_udp_driver(url, robot.dof, key=key), policy=Hold(robot), rate_hz=500)
        loop_a.start()
        wait_ticks(loop_a, 100)
        loop_a.stop()
        target = robot.home.copy()
        target[0] = 0.3
        loop_b = RealTimeLoop(robot, make_udp_driver(url, robot.dof, key=key), policy=lambda obs: target, rate_hz=500)
        loop_b.start()
        wait_until(lambda: abs(pos()[0] - 0.3) < 1e-3 and abs(server.robot_server.snapshot()["velocity"][0]) < 1e-3)
        loop_b.stop()
        before = pos()
        loop_a.start()  # a new run of the first loop, same policy object
        wait_ticks(loop_a, 500)
        assert np.max(np.abs(pos() - before)) < 2e-3
        loop_a.stop()
    finally:
        server.stop()


class _SwingGantryY(_Swing):
    """Swings gantry_y (joint 0) +-0.3 m at 0.8 Hz around home."""

    def move(self, t):
        return 0, 0.3 * np.sin(2 * np.pi * 0.8 * t)


@pytest.mark.parametrize("robot_rate_hz", [250.0, 1000.0])
def test_a_start_against_a_robot_reporting_at_250_hz_does_not_time_out_at_once(robot_rate_hz):
    """The sensor watchdog counts from the state a run begins from, not from the call to start(): counted from the
    call, the steady-position wait (steady_window_s, 50 ms) had used up a 20 ms sensor timeout before the first tick,
    and a first tick that read no new state stopped the run at once (every one of 20 starts against a robot reporting
    every 4 ms, as an EGM arm does; at 1 kHz only a stalled first tick did, seen in CI)."""
    robot, key = with_wide_workspace(load_robot()), b"k" * 32
    server = SimServer(robot, camera=False, key=key, rate_hz=robot_rate_hz).start()
    driver = make_udp_driver(f"udp://127.0.0.1:{server.port}?camera=none", robot.dof, key=key)
    loop = RealTimeLoop(robot, driver, policy=lambda obs: robot.home, rate_hz=1000, sensor_timeout_s=0.02)
    try:
        for _ in range(8):
            loop.start()
            wait_ticks(loop, 40)
            assert loop.stop_reasons == [] and loop.lifecycle == "active", (loop.stop_reasons, loop.lifecycle)
            loop.stop()
    finally:
        loop.stop()
        server.stop()


def test_commands_the_network_delays_past_the_loops_stop_never_move_the_robot():
    """Rule 3 (found by the fifth audit): every command is delayed by 0.3 s on the way to the robot (a queue in the
    network, or someone holding the authentic datagrams). The robot gets none for its command timeout and holds; the
    loop sees it off the trajectory, stops and mutes. The delayed commands then arrive, authentic, newer than any
    applied, of the live session: they used to be applied (47 of them, 0.06 m of motion) with nobody recovering. The
    robot now counts the timeout hold of a commanded robot as a stop of its own, so they are never applied."""
    import time

    robot, key, delay_s = with_wide_workspace(load_robot()), b"k" * 32, 0.3
    server = SimServer(robot, camera=False, key=key).start()
    rs = server.robot_server
    proxy = FaultProxy(("127.0.0.1", server.port), seed=1).start()
    driver = make_udp_driver(f"udp://127.0.0.1:{proxy.port}?camera=none", robot.dof, key=key)
    loop = RealTimeLoop(
        robot, driver, policy=_SwingGantryY(robot), rate_hz=500, policy_rate_hz=100,
        sensor_timeout_s=0.06,
    )  # fmt: skip
    loop.start()
    try:
        wait_until(
            lambda: abs(rs.snapshot()["velocity"][0]) > 0.5,
            what="a fast swing",
            context=lambda: (loop.lifecycle, loop.stop_reasons),
        )
        proxy.set_faults("up", delay_prob=1.0, delay_s=delay_s)
        t0 = time.monotonic()
        wait_until(lambda: loop.observation()["flags"] & TICK_FLAGS["muted"], what="the loop muted")
        wait_until(lambda: rs.stats()["timeout_stops"] >= 1, what="the robot's own timeout stop")
        while time.monotonic() - t0 < delay_s - 0.02:  # its hold settles before the delayed commands land
            time.sleep(0.001)
        applied, held = rs.stats()["commands_applied"], np.array(rs.snapshot()["position"])
        time.sleep(delay_s + 0.3)  # every delayed command has arrived by now
        stats = rs.stats()
        assert stats["commands_applied"] == applied and stats["commands_ignored_until_resync"] > 0
        assert np.max(np.abs(np.array(rs.snapshot()["position"]) - held)) < 1e-4
        assert stats["resync_required"] and loop.lifecycle == "stopped"
    finally:
        loop.stop()
        proxy.stop()
        server.stop()


def _authenticated_home_run(robot, key):
    """A sim server and a started 500 Hz loop holding home over authenticated UDP: (server, url, loop)."""
    server = SimServer(robot, camera=False, key=key).start()
    url = f"udp://127.0.0.1:{server.port}?camera=none"
    loop = RealTimeLoop(robot, make_udp_driver(url, robot.dof, key=key), policy=lambda o: robot.home, rate_hz=500)
    loop.start()
    return server, url, loop


@pytest.mark.parametrize("ending", ["estop", "tracking", "clean"])
def test_a_run_that_ends_in_a_stop_leaves_the_robot_stopped_for_the_next_run(ending):
    """Rule 3 (found by the fifth audit): a stop latched in the controller (a software e-stop, a tracking stop) lived
    only in that process; a new run moved the robot with no recovery. The loop now ends such a run with the goodbye
    kGoodbyeStopped, which the robot counts as a stop of its own: the next run latches it at its start and moves
    nothing until a recovery. A run that ended cleanly (only its end-of-run stop) leaves nothing to recover."""
    robot, key = load_robot(), b"k" * 32
    server, url, loop = _authenticated_home_run(robot, key)
    rs = server.robot_server
    try:
        wait_ticks(loop, 100)
        if ending == "estop":
            loop.estop()
        elif ending == "tracking":
            rs.set_faults(stuck_joint=7)  # no own stop while nothing moves: then a jump the loop sees
            rs.set_faults(measured_joint=7, measured_value=robot.home[7] + 0.2)
        if ending != "clean":
            wait_until(lambda: loop.lifecycle == "stopped", what="the stop")
            rs.set_faults()
    finally:
        loop.stop()  # the run ends without a recovery
    wait_until(lambda: rs.stats()["goodbyes"] >= 1, what="the run's goodbye")
    assert rs.stats()["goodbye_stops"] == (0 if ending == "clean" else 1)
    held = np.array(rs.snapshot()["position"])
    target = robot.home.copy()
    target[0] += 0.1
    loop = RealTimeLoop(robot, make_udp_driver(url, robot.dof, key=key), policy=lambda o: target, rate_hz=500)
    loop.start()
    try:
        wait_ticks(loop, 500)
        moved = np.max(np.abs(np.array(rs.snapshot()["position"]) - held))
        if ending == "clean":
            assert moved > 0.05 and loop.lifecycle == "active"
        else:
            assert moved < 1e-4 and loop.lifecycle == "stopped" and "robot_fault" in loop.stop_reasons
            assert loop.recover(timeout_s=5.0, seen_reasons=loop.stop_reasons)  # the operator's recovery
            wait_until(lambda: abs(rs.snapshot()["position"][0] - target[0]) < 5e-3, what="the target")
    finally:
        loop.stop()
        server.stop()


def test_the_robots_stop_after_the_loop_went_silent_adds_no_robot_fault():
    """A tracking stop mutes the loop; 0.1 s later the robot counts its command-timeout stop. That stop must be
    acknowledged by the recovery (robot_stop_events), but it is the loop's own stop seen from the robot: the reasons
    stay ('tracking_error',), so deploy()'s recover policy for the simulated far end still recovers such a transient
    (with robot_fault added, it ended the deploy: found by the review of the fifth audit's fixes)."""
    import time

    from robot_rt.bridge.deploy import recover_transient_stops

    robot, key = load_robot(), b"k" * 32
    server, url, loop = _authenticated_home_run(robot, key)
    rs = server.robot_server
    try:
        wait_ticks(loop, 200)
        rs.set_faults(measured_joint=7, measured_value=robot.home[7] + 0.2)  # a glitch the loop sees
        wait_until(lambda: "tracking_error" in loop.stop_reasons, what="the tracking stop")
        rs.set_faults()
        wait_until(lambda: loop.robot_stop_events >= 1, what="the robot's timeout stop")
        time.sleep(0.05)
        assert rs.stats()["timeout_stops"] == 1 and rs.stats()["resync_required"]
        reasons = tuple(loop.stop_reasons)
        assert reasons == ("tracking_error",) and recover_transient_stops(reasons)
        assert not loop.recover(timeout_s=5.0, seen_reasons=reasons, seen_robot_stops=0)  # it must have seen it
        # counts above this loop's own were read from another loop (a new driver's stop would pass as seen): refused
        # before any request, as are counts that are no counts
        for bad in (loop.robot_stop_events + 1, -1, 1.5, "1"):
            with pytest.raises(ValueError, match="seen_robot_stops: expected this loop's count"):
                loop.recover(timeout_s=5.0, seen_reasons=reasons, seen_robot_stops=bad)
        with pytest.raises(ValueError, match="seen_estop_presses: expected this loop's count"):
            loop.recover(timeout_s=5.0, seen_reasons=reasons, seen_estop_presses=loop.estop_presses + 1)
        assert loop.lifecycle == "stopped" and rs.stats()["resync_required"]
        assert loop.recover(timeout_s=5.0, seen_reasons=reasons, seen_robot_stops=loop.robot_stop_events)
        wait_until(lambda: not rs.stats()["resync_required"], what="the robot resynchronised")
        assert loop.lifecycle == "active"
    finally:
        loop.stop()
        server.stop()


def test_a_policy_that_finishes_ends_the_run_cleanly():
    """PolicyFinished starts the end-of-run stop at once. Left for whoever calls stop() (robot-rt run polls every
    50 ms on a terminal), the 50 ms command watchdog latched first, and the run ended in a safety stop that the
    robot keeps for the next run (found by the review of the fifth audit's fixes)."""
    import time

    from robot_rt.control.loop import PolicyFinished

    robot, key = load_robot(), b"k" * 32
    server = SimServer(robot, camera=False, key=key).start()
    rs = server.robot_server
    calls = []

    def finishing(obs):
        calls.append(1)
        if len(calls) > 20:
            raise PolicyFinished()
        return robot.home

    url = f"udp://127.0.0.1:{server.port}?camera=none"
    loop = RealTimeLoop(robot, make_udp_driver(url, robot.dof, key=key), policy=finishing, rate_hz=500)
    loop.start()
    try:
        wait_until(loop.policy_finished.is_set, what="the policy's end")
        time.sleep(0.2)  # well past the command watchdog
        assert tuple(loop.stop_reasons) == ("shutdown",)
    finally:
        loop.stop()
    wait_until(lambda: rs.stats()["goodbyes"] >= 1, what="the run's goodbye")
    assert rs.stats()["goodbye_stops"] == 0 and not rs.stats()["resync_required"]
    server.stop()


def test_the_recording_proxy_stamps_a_datagram_with_its_arrival_not_with_when_its_thread_read_it():
    """The stateful control hunt checks 'nothing is sent while no loop runs' against these stamps: a proxy thread the
    loaded machine kept waiting (CI, 2 cores) stamped a datagram sent before a loop's stop() returned 44 ms after it,
    a violation that was not one. The proxy's thread is held here (its fault lock) while a datagram arrives."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    proxy = FaultProxy(server.getsockname(), record=True).start()
    try:
        if not proxy.kernel_stamps:
            pytest.skip("no kernel receive stamps (SO_TIMESTAMPNS) on this platform")
        with proxy._lock:  # the proxy's thread stops in its fault step of the first datagram, before reading the next
            client.sendto(b"first", ("127.0.0.1", proxy.port))
            wait_until(lambda: len(proxy.captured) == 1, timeout_s=5.0)
            sent_s = time.monotonic()
            client.sendto(b"second", ("127.0.0.1", proxy.port))
            time.sleep(0.2)
        wait_until(lambda: len(proxy.captured) == 2, timeout_s=5.0)
        second = proxy.captured[1]
        assert second.data == b"second" and second.direction == "up"
        assert sent_s <= second.t_s + 1e-4  # (the two clocks agree to well under 0.1 ms)
        assert second.t_s < sent_s + 0.05, f"stamped {second.t_s - sent_s:.3f} s after it was sent"
        server.settimeout(5.0)
        assert server.recvfrom(64)[0] == b"first" and server.recvfrom(64)[0] == b"second"  # (still forwarded)
    finally:
        proxy.stop()
        client.close()
        server.close()
