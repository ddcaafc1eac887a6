"""Limits that hold with a real servo: no policy reaches a hard stop (issue 12, item 3).

The in-process SimDriver simulates the robot's position servo (csrc/robot_rt/control/servo.hpp: 10 Hz natural
frequency, damping 0.5, so it lags and overshoots the commanded trajectory like a real drive) and counts the hits of
its hard stops (the mechanical range). The loop runs deterministically on a simulated clock
(RealTimeLoop.simulate: the same C++ ticks, faster than real time, reproducible) with a 100 Hz policy.

Adversarial policies: alternating extremes (each call flips every joint between far beyond its minimum and its
maximum), bang-bang (every joint switches between the extremes every 20..200 ms), targets clamped exactly at the
hard limits, uniform random targets beyond the limits. For each: zero hard-stop hits, every measured position
inside the hard box, the commanded trajectory inside the soft box, no reflex fired (tracking stays within its
threshold at full speed), and the largest overshoot of the measured position past the soft limit is reported
(printed; it must stay below the soft margin). A control run without a soft margin shows the servo's overshoot does
reach the hard stops: the margin is what keeps them untouched.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from robot_rt.robot import load_robot

_control = pytest.importorskip("robot_rt._control")
from robot_rt.control import read_runlog  # noqa: E402
from robot_rt.control.loop import EVENT_CODES, RealTimeLoop  # noqa: E402

ROBOT = load_robot()
SPAN = ROBOT.position_max - ROBOT.position_min
DURATION_S = 8.0


class AlternatingExtremes:
    def __init__(self):
        self.calls = 0

    def __call__(self, obs):
        self.calls += 1
        return np.where(self.calls % 2 == 0, ROBOT.position_max + 0.5 * SPAN, ROBOT.position_min - 0.5 * SPAN)


class BangBang:
    """Each joint flips between its extremes with its own period of 2..20 policy calls (20..200 ms)."""

    def __init__(self, seed=0):
        self.calls = 0
        self.period = np.random.default_rng(seed).integers(2, 21, ROBOT.dof)

    def __call__(self, obs):
        self.calls += 1
        high = (self.calls // self.period) % 2 == 0
        return np.where(high, ROBOT.position_max + 0.1 * SPAN, ROBOT.position_min - 0.1 * SPAN)


class AtTheLimit:
    """Targets exactly at the hard limits, switching side every 200 calls (2 s: every joint gets there)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, obs):
        self.calls += 1
        return ROBOT.position_max.copy() if (self.calls // 200) % 2 == 0 else ROBOT.position_min.copy()


class RandomBeyond:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs):
        return self.rng.uniform(ROBOT.position_min - 0.5 * SPAN, ROBOT.position_max + 0.5 * SPAN)


POLICIES = {
    "alternating_extremes": AlternatingExtremes,
    "bang_bang": BangBang,
    "at_the_limit": AtTheLimit,
    "random_beyond": RandomBeyond,
}


def run_policy(tmp_path, policy, **kwargs):
    path = tmp_path / "run.rrlog"
    # no workspace box: the joints themselves are pushed to their limits (the box would stop the paddle first)
    loop = RealTimeLoop(ROBOT, policy=policy, log_path=path, workspace=False, **kwargs)
    loop.simulate(DURATION_S)
    return loop, read_runlog(path)


def overshoot_past_soft(loop, log) -> np.ndarray:
    """Per joint, how far the measured position went beyond the soft box (0: never)."""
    m = log.ticks["measured_position"]
    return np.maximum(0.0, np.maximum(m - loop.soft_max, loop.soft_min - m)).max(axis=0)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_no_policy_reaches_a_hard_stop(tmp_path, name):
    loop, log = run_policy(tmp_path, POLICIES[name]())
    hits = loop.driver.hard_stop_hits
    overshoot = overshoot_past_soft(loop, log)
    print(
        f"\n{name}: hard-stop hits {hits}; overshoot past the soft limit per joint (mm | mrad) "
        f"{np.round(1e3 * overshoot, 3).tolist()}; soft margin {np.round(1e3 * loop.soft_margin, 2).tolist()}"
    )
    assert hits == 0
    t = log.ticks
    assert len(t) >= DURATION_S * 1000
    # the policy commanded the robot all along (alternating targets reverse faster than a joint can get anywhere, so
    # they keep it near where it is; the slow switches take every joint to its soft limits)
    cmd = t["command_position"]
    assert loop.counters()["commands_accepted"] >= 0.95 * DURATION_S * 100
    if name == "at_the_limit":
        np.testing.assert_allclose(cmd.max(axis=0), loop.soft_max, atol=1e-9)
        np.testing.assert_allclose(cmd.min(axis=0), loop.soft_min, atol=1e-9)
    # the commanded trajectory stays in the soft box; the robot in the hard one, with margin to spare
    assert np.all(cmd >= loop.soft_min) and np.all(cmd <= loop.soft_max)
    m = t["measured_position"]
    assert np.all(m > ROBOT.position_min) and np.all(m < ROBOT.position_max)
    assert np.all(overshoot < loop.soft_margin)
    # no reflex fired: the tracking error stays within its threshold at full speed (no false stops)
    stops = [n for n in ("tracking_error_stop", "measurement_invalid_stop", "watchdog_stop", "sensor_timeout_stop")]
    for stop in stops:
        assert np.count_nonzero(log.events["code"] == EVENT_CODES[stop]) == 0, stop
    assert loop.stop_reasons_seen == ["shutdown"]


def test_without_a_soft_margin_the_servo_overshoot_hits_the_hard_stops(tmp_path):
    """The control experiment: the same at-the-limit policy with no margin (commands up to the hard limits) drives
    the overshooting servo into its hard stops. (So the test above can fail.)"""
    loop, _ = run_policy(tmp_path, AtTheLimit(), soft_margin=0.0)
    assert loop.driver.hard_stop_hits > 0


def test_default_margin_covers_the_servo_model_bound():
    """The default soft margin is twice the servo's error bound coth(pi z / (2 sqrt(1 - z^2))) A / w^2."""
    loop = RealTimeLoop(ROBOT)
    w, z = 2 * math.pi * 10.0, 0.5
    gain = 1 / math.tanh(math.pi * z / (2 * math.sqrt(1 - z * z)))
    np.testing.assert_allclose(loop.soft_margin, 2 * gain * ROBOT.acceleration_limit / w**2, rtol=1e-12)
    np.testing.assert_allclose(loop.tracking_error_threshold, 3 * gain * ROBOT.acceleration_limit / w**2, rtol=1e-12)
    with pytest.raises(ValueError, match="soft_margin"):
        RealTimeLoop(ROBOT, soft_margin=-0.1)
    with pytest.raises(ValueError, match="soft_margin"):
        RealTimeLoop(ROBOT, soft_margin=SPAN)
    with pytest.raises(ValueError, match="tracking_error_threshold"):
        RealTimeLoop(ROBOT, tracking_error_threshold=0.0)
