"""Safety filter and jerk-limited controlled stop: every output within the limits, for any command stream."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_rt.robot import load_robot

_control = pytest.importorskip("robot_rt._control")
from robot_rt.control.loop import robot_model  # noqa: E402

ROBOT = load_robot()
SLACK = 1e-6  # relative; the filter's own slack is 1e-9


def check_within_limits(states, limits, dt, start):
    """states [T, dof, 4] (p, v, a, jerk); limits [dof, 5]; start [dof] positions at rest."""
    pmin, pmax, vmax, amax, jmax = (limits[:, k] for k in range(5))
    p, v, a, j = (states[..., k] for k in range(4))
    span = pmax - pmin
    assert np.all(np.isfinite(states))
    assert np.all(p >= pmin - SLACK * span), "position below limit"
    assert np.all(p <= pmax + SLACK * span), "position above limit"
    assert np.all(np.abs(v) <= vmax * (1 + SLACK)), "velocity limit"
    assert np.all(np.abs(a) <= amax * (1 + SLACK)), "acceleration limit"
    assert np.all(np.abs(j) <= jmax * (1 + SLACK)), "jerk limit"
    # the reported jerk is the actual one: consecutive accelerations differ by jerk * dt
    a_prev = np.vstack([np.zeros((1, a.shape[1])), a[:-1]])
    assert np.all(np.abs(a - a_prev) <= jmax * dt * (1 + SLACK) + 1e-12), "acceleration jumps faster than jerk"
    # positions integrate the velocities (the command stream is consistent, no hidden jumps)
    p_prev = np.vstack([start[None, :], p[:-1]])
    v_prev = np.vstack([np.zeros((1, v.shape[1])), v[:-1]])
    predicted = p_prev + v_prev * dt + a_prev * dt**2 / 2 + j * dt**3 / 6
    assert np.all(np.abs(p - predicted) <= 1e-9 + 1e-9 * span), "position jumps"


def limits_array(robot, soft_margin=0.0):
    """[dof, 5] limits; the position columns are the soft box (hard limits shrunk by soft_margin)."""
    margin = np.broadcast_to(np.asarray(soft_margin, dtype=np.float64), (robot.dof,))
    return np.stack(
        [
            robot.position_min + margin,
            robot.position_max - margin,
            robot.velocity_limit,
            robot.acceleration_limit,
            robot.jerk_limit,
        ],
        axis=1,
    )


command_value = st.one_of(
    st.floats(-5.0, 5.0),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300]),
)


@st.composite
def command_streams(draw):
    """Random piecewise-constant target streams (jumps, holds, out-of-range values, NaN/Inf, stops)."""
    n_segments = draw(st.integers(1, 12))
    rows, stops = [], []
    for _ in range(n_segments):
        length = draw(st.integers(1, 150))
        kind = draw(st.sampled_from(["random", "limit", "nonfinite", "home", "stop"]))
        if kind == "random":
            target = np.array(
                [draw(st.floats(lo - 0.5, hi + 0.5)) for lo, hi in zip(ROBOT.position_min, ROBOT.position_max)]
            )
        elif kind == "limit":
            target = np.where(
                np.array(draw(st.lists(st.booleans(), min_size=8, max_size=8))), ROBOT.position_max, ROBOT.position_min
            )
        elif kind == "nonfinite":
            target = np.array(draw(st.lists(command_value, min_size=8, max_size=8)))
        else:
            target = ROBOT.home.copy()
        rows.append(np.repeat(target[None, :], length, axis=0))
        stops.append(np.full(length, kind == "stop"))
    return np.concatenate(rows), np.concatenate(stops)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=command_streams(), margin=st.sampled_from([0.0, 0.01, 0.05]), dt=st.sampled_from([0.001, 0.002, 0.0005]))
def test_filter_output_within_limits_for_any_command_stream(stream, margin, dt):
    """Every output inside the soft box (hard limits minus a margin of 0..5 % of the range) and the v/a/j limits."""
    targets, stops = stream
    soft_margin = margin * (ROBOT.position_max - ROBOT.position_min)
    f = _control.SafetyFilter(robot_model(ROBOT, workspace=False, soft_margin=soft_margin), dt, ROBOT.home)
    np.testing.assert_array_equal(f.soft_min, ROBOT.position_min + soft_margin)
    states, _, verdicts = f.run(targets, stops)
    check_within_limits(states, limits_array(ROBOT, soft_margin), dt, ROBOT.home)
    nonfinite = ~np.all(np.isfinite(targets), axis=1)
    assert np.all(verdicts[nonfinite] & 1), "NaN/Inf targets must be rejected"


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    velocity=st.floats(0.05, 5.0),
    accel=st.floats(0.5, 60.0),
    jerk=st.floats(5.0, 3000.0),
    dt=st.sampled_from([0.001, 0.004, 0.0002]),
)
def test_filter_within_random_limits_tight_box(seed, velocity, accel, jerk, dt):
    """Random limits (incl. a tiny position box) and random-walk targets with large jumps."""
    rng = np.random.default_rng(seed)
    dof = 3
    lo = -rng.uniform(0.01, 1.0, dof)
    hi = rng.uniform(0.01, 1.0, dof)
    limits = np.stack([lo, hi, np.full(dof, velocity), np.full(dof, accel), np.full(dof, jerk)], axis=1)
    model = _control.RobotModel(lo, hi, limits[:, 2], limits[:, 3], limits[:, 4], np.zeros(dof))
    start = rng.uniform(lo, hi)
    f = _control.SafetyFilter(model, dt, start)
    steps = 600
    targets = np.repeat(rng.uniform(lo - 1, hi + 1, size=(12, dof)), steps // 12, axis=0)
    tv = rng.normal(scale=3 * velocity, size=targets.shape)  # wild velocity feed-forward too
    states, _, _ = f.run(targets, None, tv)
    check_within_limits(states, limits, dt, start)


def test_filter_tracks_a_reachable_target():
    """The OTG reaches a target exactly and at rest (the old tracking cascade came within 1e-4 and could cycle)."""
    f = _control.SafetyFilter(robot_model(ROBOT, workspace=False), 0.001, ROBOT.home)
    target = ROBOT.home.copy()
    target[0] = 0.3
    target[3] = -0.1
    states, overridden, _ = f.run(np.repeat(target[None], 1500, axis=0))
    np.testing.assert_allclose(states[-1, :, 0], target, atol=1e-9)
    assert np.all(states[-1, :, 1] == 0) or abs(states[-1, :, 1]).max() < 1e-12
    check_within_limits(states, limits_array(ROBOT), 0.001, ROBOT.home)


@settings(max_examples=200, deadline=None)
@given(p=st.floats(-1, 1), v=st.floats(-2, 2), a=st.floats(-10, 10))
def test_controlled_stop_respects_limits_and_reaches_rest(p, v, a):
    limits = np.array([-1.0, 1.0, 2.0, 10.0, 200.0])
    dt = 0.001
    if not _control.can_stop(p, v, a, limits, dt):
        # a state the filter never enters; the stop still keeps |jerk| <= J
        rows, _ = _control.brake_trajectory(p, v, a, limits, dt, 2000)
        assert np.all(np.abs(rows[:, 3]) <= limits[4] * (1 + 1e-9))
        return
    rows, rest = _control.brake_trajectory(p, v, a, limits, dt, 5000)
    assert rest
    states = rows[:, None, :]
    # the first step starts from (p, v, a), not from rest
    assert np.all(np.abs(rows[:, 3]) <= limits[4] * (1 + 1e-9))
    assert np.all((rows[:, 0] >= -1 - 1e-9) & (rows[:, 0] <= 1 + 1e-9))
    assert np.all(np.abs(rows[:, 1]) <= 2 * (1 + 1e-9)) and np.all(np.abs(rows[:, 2]) <= 10 * (1 + 1e-9))
    acc = np.concatenate([[a], rows[:, 2]])
    assert np.all(np.abs(np.diff(acc)) <= 200 * dt * (1 + 1e-9) + 1e-12)
    if len(rows):
        assert states[-1, 0, 1] == 0 and states[-1, 0, 2] == 0
    else:
        assert v == 0 and a == 0


def test_stop_mode_brakes_a_moving_joint_within_limits():
    f = _control.SafetyFilter(robot_model(ROBOT, workspace=False), 0.001, ROBOT.home)
    target = ROBOT.home.copy()
    target[0] = 0.9
    target[2] = 2.5
    run, _, _ = f.run(np.repeat(target[None], 200, axis=0))  # accelerate towards far targets
    assert abs(run[-1, 0, 1]) > 0.5  # moving fast when the stop begins
    stop, _, _ = f.run(np.repeat(target[None], 600, axis=0), np.ones(600, bool))
    states = np.concatenate([run, stop])
    check_within_limits(states, limits_array(ROBOT), 0.001, ROBOT.home)
    assert f.at_rest
    np.testing.assert_array_equal(stop[-1, :, 1], 0.0)


def test_workspace_box_rejects_targets_outside():
    model = robot_model(ROBOT, workspace=True)
    f = _control.SafetyFilter(model, 0.001, ROBOT.home)
    bad = ROBOT.home.copy()
    bad[3] = 1.5  # shoulder forward/down: paddle leaves the box (checked below with the NumPy FK)
    from robot_rt.robot.kinematics import paddle_position_normal

    pos, _ = paddle_position_normal(ROBOT, bad)
    assert np.any(pos < ROBOT.workspace_min_m) or np.any(pos > ROBOT.workspace_max_m)
    _, _, verdicts = f.run(bad[None])
    assert verdicts[0] & 4
