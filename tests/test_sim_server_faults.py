"""The simulated robot's fault hooks, the instruments of the fault-injection matrix (robot_rt.sim.faults): what
the robot reports and does under each, seen through the UDP driver (no control loop).

The driver is pumped until the endpoints report what a test waits for (helpers.robot); nothing depends on how
much happens in a given wall time."""

from __future__ import annotations

import math
import time

import pytest
from helpers.robot import pump_until, wait_until

from robot_rt import _control
from robot_rt.control import protocol as P
from robot_rt.sim.attack import select
from robot_rt.sim.udp_proxy import FaultProxy

KEY = b"sim fault hooks key"
LIMITS = dict(
    position_min=[-1.0, -0.5, -2.0],
    position_max=[1.0, 0.5, 2.0],
    velocity_limit=[2.0, 1.0, 4.0],
    acceleration_limit=[10.0, 8.0, 30.0],
    jerk_limit=[100.0, 80.0, 300.0],
)
DIGEST = P.joint_limits_digest(*LIMITS.values())  # the robot's joint limits, as a controller states them
ZERO = [0.0, 0.0, 0.0]
STATE_ESTOP_INPUT = 1 << 0  # driver.hpp kStateEstopInput
STATE_FAULT = 1 << 1  # driver.hpp kStateFault


@pytest.fixture
def link():
    server = _control.SimRobotServer(**LIMITS, key=KEY)
    server.start()
    driver = _control.UdpDriver("127.0.0.1", server.port, 3, key=KEY, limits_digest=DIGEST)
    driver.start()
    try:
        pump_until(driver, lambda s: s is not None and driver.connected, (ZERO, ZERO))
        yield server, driver
    finally:
        driver.stop()
        server.stop()


def _held_then_resynchronised(server, driver, target):
    """After an own stop whose cause is gone: the robot counts the stop in every state; `target` (far from where it
    holds) is never applied, nor a command where it holds while the driver has not acknowledged the stop; once it has
    (what a recovery does), a command where the robot holds, at rest, resynchronises it, after which `target` is
    followed."""
    held = server.snapshot()["position"]
    ignored = server.stats()["commands_ignored_until_resync"]
    applied = server.stats()["commands_applied"]
    state = pump_until(driver, lambda s: server.stats()["commands_ignored_until_resync"] > ignored + 50, (target, ZERO))
    assert state["robot_stopped"]  # the stop count moved on: every state says so until acknowledged
    assert server.stats()["commands_applied"] == applied
    assert max(abs(a - b) for a, b in zip(server.snapshot()["position"], held)) < 1e-6  # (its hold settling)
    pump_until(driver, lambda s: server.stats()["commands_ignored_until_resync"] > ignored + 80, (held, ZERO))
    assert server.stats()["resync_required"] and server.stats()["commands_applied"] == applied
    driver.acknowledge_robot_stops()
    state = pump_until(driver, lambda s: not server.stats()["resync_required"], (held, ZERO))
    assert server.stats()["commands_applied"] > applied
    pump_until(driver, lambda s: s is not None and not s["robot_stopped"], (held, ZERO))
    pump_until(driver, lambda s: s is not None and abs(s["position"][0] - target[0]) < 2e-3, (target, ZERO))


def test_measured_value_is_reported_and_the_joint_itself_is_unaffected(link):
    server, driver = link
    server.set_faults(measured_joint=1, measured_value=0.9)  # outside joint 1's +-0.5
    state = pump_until(driver, lambda s: s is not None and s["position"][1] == 0.9, (ZERO, ZERO))
    assert state["position"][0] == pytest.approx(0.0, abs=1e-6)
    assert abs(server.snapshot()["position"][1]) < 1e-6  # the robot did not move
    assert server.faults()["measured_joint"] == 1
    server.set_faults()
    pump_until(driver, lambda s: s is not None and abs(s["position"][1]) < 1e-6, (ZERO, ZERO))


def test_a_nan_measurement_cannot_be_sent_the_states_stop(link):
    server, driver = link
    before = server.stats()
    server.set_faults(measured_joint=0, measured_value=math.nan)
    wait_until(lambda: server.stats()["tx_invalid"] > before["tx_invalid"] + 10, what="refused states")
    sent = server.stats()["states_sent"]
    pump_until(driver, lambda s: server.stats()["tx_invalid"] > before["tx_invalid"] + 50, (ZERO, ZERO))
    assert server.stats()["states_sent"] == sent  # not one state left the robot while it measured NaN
    server.set_faults()
    pump_until(driver, lambda s: server.stats()["states_sent"] > sent + 5, (ZERO, ZERO))


def test_fault_status_is_reported_and_commands_are_ignored_until_cleared(link):
    server, driver = link
    server.set_faults(fault=True)
    pump_until(driver, lambda s: s is not None and s["flags"] & STATE_FAULT, (ZERO, ZERO))
    applied = server.stats()["commands_applied"]
    target = [0.3, 0.0, 0.0]
    pump_until(driver, lambda s: server.stats()["rx_accepted"] > applied + 200, (target, ZERO))
    assert server.stats()["commands_applied"] == applied  # accepted on the link, never applied
    assert abs(server.snapshot()["position"][0]) < 1e-9
    assert server.snapshot()["status"] & 0x4
    server.set_faults()
    _held_then_resynchronised(server, driver, target)


def test_estop_input_is_reported_and_the_robot_holds_until_released(link):
    server, driver = link
    server.set_faults(estop=True)
    pump_until(driver, lambda s: s is not None and s["flags"] & STATE_ESTOP_INPUT, (ZERO, ZERO))
    assert server.faults()["estop"] is True
    applied = server.stats()["commands_applied"]
    target = [0.3, 0.0, 0.0]
    pump_until(driver, lambda s: server.stats()["rx_accepted"] > applied + 200, (target, ZERO))
    assert server.stats()["commands_applied"] == applied  # the drives are cut: nothing is applied
    assert abs(server.snapshot()["position"][0]) < 1e-9
    assert server.snapshot()["status"] & 0x8  # protocol kStatusEstop
    server.set_faults()
    pump_until(driver, lambda s: s is not None and not s["flags"] & STATE_ESTOP_INPUT, (ZERO, ZERO))
    _held_then_resynchronised(server, driver, target)


def test_a_restarted_server_holds_where_it_is(link):
    """A crash mid-motion and a restart: the robot comes up holding where it is, at rest; it does not drive on to
    the dead session's last target (no live session commanded that)."""
    server, driver = link
    target = [0.8, 0.0, 0.0]
    pump_until(driver, lambda s: s is not None and s["position"][0] > 0.1, (target, ZERO))
    server.stop(goodbye=False)
    at_crash = server.snapshot()["position"]
    assert 0.1 < at_crash[0] < 0.8
    server.start()
    ticks = server.snapshot()["ticks"]
    wait_until(lambda: server.snapshot()["ticks"] > ticks + 300, what="300 server ticks after the restart")
    assert server.snapshot()["position"] == at_crash  # not a hair: held at rest


def test_a_stuck_joint_stays_where_it_is(link):
    """A blocked joint (a collision) does not move, and the robot reacts as a drive's following-error supervision
    does: it holds (every joint) and, once the joint is free, stays where it was blocked until resynchronised."""
    server, driver = link
    server.set_faults(stuck_joint=0)
    target = [0.3, 0.2, 0.0]
    pump_until(driver, lambda s: server.stats()["blocked_holds"] >= 1, (target, ZERO))
    pump_until(driver, lambda s: abs(server.snapshot()["velocity"][1]) < 1e-9, (target, ZERO))
    assert server.snapshot()["position"][0] == 0.0  # joint 0 did not move at all
    assert server.stats()["resync_required"] and server.stats()["own_stops"] >= 1
    server.set_faults()  # free again: it stays where it was
    _held_then_resynchronised(server, driver, target)
    pump_until(driver, lambda s: s is not None and abs(s["position"][1] - 0.2) < 2e-3, (target, ZERO))
    with pytest.raises(ValueError, match="stuck_joint"):
        server.set_faults(stuck_joint=3)


@pytest.mark.parametrize("hold", ["estop", "goodbye"])
def test_a_joint_blocked_while_it_overshoots_a_hold_stays_where_it_was_blocked(hold):
    """A hold that began while the joint moved (an e-stop, the controller's goodbye) overshoots its target; a joint
    jammed at the overshoot's peak is one own stop and holds where it was blocked: once freed, with no command and no
    recovery, it does not move (it used to be pulled back to the first hold's target, and counted a stop every 3
    ticks while blocked)."""
    lo, hi, speed = [-3.0], [3.0], 3.0
    server = _control.SimRobotServer(
        lo, hi, [4.0], [30.0], [0.0], key=KEY, jerk_limit=[600.0], command_timeout_s=0.1, servo_damping=0.5
    )
    server.start()
    driver = _control.UdpDriver("127.0.0.1", server.port, 1, key=KEY, limits_digest=server.limits_digest)
    driver.start()
    try:
        pump_until(driver, lambda s: s is not None and driver.connected, ([0.0], [0.0]))
        position, deadline = 0.0, time.monotonic() + 10.0
        while server.snapshot()["position"][0] < 0.6:  # a ramp at 3 rad/s inside every limit, one step per state
            assert time.monotonic() < deadline, "the joint did not follow the ramp"
            state = driver.read_state()
            if state is not None:
                position = min(position + speed * 1e-3, 1.0)
                driver.write_command([position], [speed])
        if hold == "estop":
            server.set_faults(estop=True)
        else:
            driver.stop()  # an authenticated goodbye while the joint moves
        wait_until(lambda: server.snapshot()["status"] & 1, what="the robot's hold")  # kStatusHolding
        hold_target = server.snapshot()["target"][0]
        # the overshoot's peak: the joint is jammed there (one poll per few microseconds; the overshoot lasts ~50 ms)
        wait_until(lambda: server.snapshot()["velocity"][0] <= 0.0, what="the overshoot's peak", interval_s=0.0)
        server.set_faults(stuck_joint=0, estop=hold == "estop")
        blocked_at = server.snapshot()["position"][0]
        assert blocked_at - hold_target > 0.02  # beyond the servo's following bound: the robot stops for it
        wait_until(lambda: server.stats()["blocked_holds"] >= 1, what="the blocked joint's own stop")
        ticks = server.snapshot()["ticks"]
        wait_until(lambda: server.snapshot()["ticks"] > ticks + 100, what="100 ticks blocked")
        assert server.stats()["blocked_holds"] == 1  # one stop, not one every 3 ticks
        applied = server.stats()["commands_applied"]
        server.set_faults()  # freed; nobody commands, nobody recovers
        ticks = server.snapshot()["ticks"]
        wait_until(lambda: server.snapshot()["ticks"] > ticks + 300, what="300 ticks after the joint was freed")
        assert abs(server.snapshot()["position"][0] - blocked_at) < 1e-9
        assert server.stats()["commands_applied"] == applied and server.stats()["resync_required"]
    finally:
        driver.stop()
        server.stop()


def test_shifted_stamps_reach_the_driver_as_future_states(link):
    server, driver = link
    pump_until(driver, lambda s: driver.stats()["clock_samples"] > 20, (ZERO, ZERO))
    before = driver.stats()
    server.shift_state_stamps(10_000_000_000, 3)
    pump_until(driver, lambda s: driver.stats()["rx_future"] >= before["rx_future"] + 3, (ZERO, ZERO))
    received = driver.stats()["states_received"]
    pump_until(driver, lambda s: driver.stats()["states_received"] > received + 50, (ZERO, ZERO))
    assert driver.stats()["rx_future"] == before["rx_future"] + 3 and driver.connected
    with pytest.raises(ValueError, match="count"):
        server.shift_state_stamps(1, -1)


@pytest.mark.parametrize("goodbye", [True, False])
def test_stop_without_goodbye_is_a_silent_crash_and_restart_is_a_new_session(goodbye):
    server = _control.SimRobotServer(**LIMITS, key=KEY)
    server.start()
    proxy = FaultProxy(("127.0.0.1", server.port), record=True).start()
    driver = _control.UdpDriver("127.0.0.1", proxy.port, 3, key=KEY, limits_digest=DIGEST)
    driver.start()
    try:
        pump_until(driver, lambda s: s is not None and driver.connected, (ZERO, ZERO))
        server.stop(goodbye=goodbye)
        server.start()
        pump_until(driver, lambda s: driver.stats()["peer_restarts"] == 1 and driver.connected, (ZERO, ZERO))
        assert driver.stats()["sessions_established"] == 2
        # (everything the old session sent has long passed the proxy: the new session is live)
        assert len(select(proxy.captured, "down", {"goodbye"})) == int(goodbye)
    finally:
        driver.stop()
        proxy.stop()
        server.stop()


def _step_overshoot(zeta: float, step: float = 0.01) -> float:
    """Largest position past a small step target (no saturation: tau 50 ms, 10 mm) of a servo with damping zeta."""
    server = _control.SimRobotServer(**LIMITS, key=KEY, servo_damping=zeta, tracking_time_constant_s=0.05)
    server.start()
    driver = _control.UdpDriver("127.0.0.1", server.port, 3, key=KEY, limits_digest=DIGEST)
    driver.start()
    peak = 0.0

    def settled(state):
        nonlocal peak
        snap = server.snapshot()
        peak = max(peak, snap["position"][0])
        return state is not None and abs(snap["position"][0] - step) < 1e-6 and abs(snap["velocity"][0]) < 1e-6

    try:
        pump_until(driver, settled, ([step, 0.0, 0.0], ZERO))
    finally:
        driver.stop()
        server.stop()
    return peak - step


def test_servo_damping_below_one_overshoots_and_one_does_not():
    assert _step_overshoot(1.0) < 2e-4  # critically damped: none (2% of the step: sampling of a settling curve)
    assert _step_overshoot(0.4) > 1e-3  # zeta 0.4 overshoots ~25% of the step (10% asked: a sampled peak)
    with pytest.raises(ValueError, match="servo_damping"):
        _control.SimRobotServer(**LIMITS, key=KEY, servo_damping=0.0)


def test_a_controller_that_stops_commanding_a_moving_robot_is_a_stop_of_the_robots_own(link):
    """Its session stays alive (heartbeats) but no command comes for command_timeout_s: the robot holds, and counts
    that hold as a stop of its own, so commands sent before it (delayed in the network) or after it move it only once
    a recovery has acknowledged the stop (docs/protocol.md, "Robot-side stops"). Found by the fifth audit."""
    server, driver = link
    target = [0.3, 0.0, 0.0]
    pump_until(driver, lambda s: s is not None and s["position"][0] > 0.05, (target, ZERO))
    assert server.stats()["timeout_stops"] == 0
    pump_until(driver, lambda s: server.stats()["timeout_stops"] == 1)  # states read, no command written
    assert server.stats()["resync_required"] and server.stats()["own_stops"] == 1
    pump_until(driver, lambda s: abs(server.snapshot()["velocity"][0]) < 1e-9)
    _held_then_resynchronised(server, driver, target)


@pytest.mark.parametrize("before", ["fault", "fault acknowledged", "crash mid-motion", "stop at rest"])
def test_a_restarted_robot_keeps_a_stop_nobody_recovered(link, before):
    """A restart of the robot bridge (crash and supervisor restart) used to clear an own stop nobody had
    acknowledged, and a crash while the session moved the robot was no stop at all: the next controller moved the
    robot with no recovery (found by the fifth audit and its review). It now comes up with the stop (count 1,
    unacknowledged). A stop already acknowledged, or a shutdown while the robot held at rest with no live command
    stream, leaves nothing after the restart."""
    server, driver = link
    if before.startswith("fault"):
        server.set_faults(fault=True)
        pump_until(driver, lambda s: s is not None and s["flags"] & STATE_FAULT and s["robot_stopped"], (ZERO, ZERO))
        server.set_faults()
        if before == "fault acknowledged":
            held = server.snapshot()["position"]
            driver.acknowledge_robot_stops()
            pump_until(driver, lambda s: not server.stats()["resync_required"], (held, ZERO))
    elif before == "crash mid-motion":
        pump_until(driver, lambda s: s is not None and s["position"][0] > 0.05, ([0.8, 0.0, 0.0], ZERO))
    kept = before in ("fault", "crash mid-motion")
    if before == "crash mid-motion":  # the bridge dies under the live session
        server.stop(goodbye=False)
        driver.stop()
    else:
        driver.stop()  # the controller's goodbye: the robot holds, with no live session
        wait_until(lambda: server.stats()["goodbyes"] >= 1, what="the controller's goodbye")
        server.stop(goodbye=False)
    assert server.stats()["resync_required"] is kept
    server.start()
    assert server.stats()["resync_required"] is kept
    fresh = _control.UdpDriver("127.0.0.1", server.port, 3, key=KEY, limits_digest=DIGEST)  # the next controller
    fresh.start()
    try:
        state = pump_until(fresh, lambda s: s is not None and fresh.connected)
        assert state["robot_stopped"] is kept
        if kept:
            assert server.snapshot()["status"] & 0x10  # kStatusStopUnacknowledged
            _held_then_resynchronised(server, fresh, [0.3, 0.0, 0.0])
    finally:
        fresh.stop()
