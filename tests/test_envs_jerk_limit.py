"""robot_rt.envs.jerk_limit: the stopping distance against the loop's brake law (C++), the limits of the filtered
commands, and the policy and vector-env wrappers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_rt import _control
from robot_rt.envs.jerk_limit import (
    JerkLimitedActionsVector,
    JerkLimitedPolicy,
    JerkLimiter,
    jerk_limited_velocity,
    stopping_displacement,
)
from robot_rt.robot import load_robot

ROBOT = load_robot()
DT = 0.01


@settings(max_examples=60, deadline=None)
@given(
    joint=st.integers(0, ROBOT.dof - 1),
    v_frac=st.floats(-1.0, 1.0),
    a_frac=st.floats(-1.0, 1.0),
)
def test_stopping_displacement_matches_the_loops_brake_law(joint, v_frac, a_frac):
    big_v, big_a, big_j = (ROBOT.velocity_limit[joint], ROBOT.acceleration_limit[joint], ROBOT.jerk_limit[joint])
    v, a = v_frac * big_v, a_frac * big_a
    if abs(v + a * abs(a) / (2 * big_j)) > big_v:  # a state the trajectory can never be in (the brake law's domain)
        return
    rows, rest = _control.brake_trajectory(0.0, v, a, np.array([-1e300, 1e300, big_v, big_a, big_j]), 1e-5, 10**6)
    assert rest
    expected = rows[-1, 0] if len(rows) else 0.0
    got = float(stopping_displacement(v, a, big_a, big_j))
    assert got == pytest.approx(expected, abs=2e-5 + 1e-4 * abs(expected))


@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_filtered_commands_keep_the_limits_and_stop_inside_the_box(scale):
    rng = np.random.default_rng(0)
    n = 64
    lim = JerkLimiter(ROBOT, n, DT, scale=scale)
    q = np.tile(ROBOT.home, (n, 1))
    qd = np.zeros((n, ROBOT.dof))
    a_prev = np.zeros((n, ROBOT.dof))
    big_a, big_j = scale * ROBOT.acceleration_limit, scale * ROBOT.jerk_limit
    for k in range(400):
        # bang-bang requests that hold for a while: they drive joints into their limits
        if k % 25 == 0:
            request = rng.choice([-1.0, 1.0], size=(n, ROBOT.dof)) * ROBOT.velocity_limit
        v1 = lim(q, qd, request)
        a1 = (v1 - qd) / DT
        assert np.all(np.abs(v1) <= ROBOT.velocity_limit * (1 + 1e-12))
        assert np.all(np.abs(a1) <= big_a * (1 + 1e-9))
        assert np.all(np.abs(a1 - a_prev) <= big_j * DT * (1 + 1e-9) + 1e-9)
        q = q + v1 * DT
        qd, a_prev = v1, a1
        # the explicit step (velocity held over dt) may pass the continuous brake curve by a few v dt / 2
        slack = 0.5 * ROBOT.velocity_limit * DT
        assert np.all(q >= ROBOT.position_min - slack) and np.all(q <= ROBOT.position_max + slack), k


def test_filter_settles_on_a_constant_request():
    lim = JerkLimiter(ROBOT, 1, DT)
    qd = np.zeros((1, ROBOT.dof))
    q = np.tile(ROBOT.home, (1, 1))
    request = np.zeros((1, ROBOT.dof))
    request[0, 2] = 2.0
    trace = []
    for _ in range(60):
        qd = lim(q, qd, request)
        trace.append(qd[0, 2])
    trace = np.array(trace)
    assert trace[-1] == pytest.approx(2.0, abs=1e-9)
    assert trace.max() <= 2.0 + 0.05  # no real overshoot
    # and it takes about the jerk-limited time: 2 / A + A / J = 0.117 s, within a few steps
    reached = int(np.argmax(np.abs(trace - 2.0) < 1e-6)) + 1
    assert 0.10 <= reached * DT <= 0.16, reached


def test_formula_is_nearly_dead_beat_near_the_target():
    # a small error is closed in one step up to the a|a|/(2J) term (here 1 % of it)
    v1, a1 = jerk_limited_velocity(np.array([1.0]), np.array([0.0]), np.array([1.001]), 30.0, 600.0, DT)
    assert abs(v1[0] - 1.001) <= 0.01 * 0.001
    assert 0.0 < a1[0] <= 0.1


def test_policy_and_vector_wrapper_agree_and_reset():
    from robot_rt.envs.scripted import BatchedScriptedPolicy
    from robot_rt.envs.vector import TableTennisVectorEnv

    n = 8
    env_a = TableTennisVectorEnv(n, max_episode_steps=200)
    env_b = JerkLimitedActionsVector(TableTennisVectorEnv(n, max_episode_steps=200))
    pol_a = JerkLimitedPolicy(BatchedScriptedPolicy(n, robot=ROBOT), ROBOT, n)
    pol_b = BatchedScriptedPolicy(n, robot=ROBOT)
    obs_a, _ = env_a.reset(seed=3)
    obs_b, _ = env_b.reset(seed=3)
    auto = np.zeros(n, dtype=bool)
    qd_prev = np.zeros((n, ROBOT.dof))
    a_prev = np.zeros((n, ROBOT.dof))
    for _ in range(300):
        if auto.any():
            pol_a.reset(auto)
            pol_b.reset(auto)
        obs_a, _, term, trunc, _ = env_a.step(pol_a(obs_a))
        obs_b, *_ = env_b.step(pol_b(obs_b))
        np.testing.assert_array_equal(obs_a, obs_b)  # the same filter, applied by the policy or by the env wrapper
        qd = obs_a[:, ROBOT.dof : 2 * ROBOT.dof].astype(np.float64)
        acc = (qd - qd_prev) / DT
        fresh = ~auto
        jumps = np.abs(acc - a_prev)[fresh]
        # float32 observations: allow their rounding on top of J dt
        assert np.all(jumps <= np.broadcast_to(ROBOT.jerk_limit * DT, (n, ROBOT.dof))[fresh] * 1.001 + 0.05)
        qd_prev, a_prev = qd, np.where(fresh[:, None], acc, 0.0)
        auto = term | trunc
    state = env_b.state_dict()
    env_b.load_state_dict(state)
    np.testing.assert_array_equal(env_b.limiter.a, state["a"])


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="scale"):
        JerkLimiter(ROBOT, 1, DT, scale=1.5)
    with pytest.raises(ValueError, match="dt"):
        JerkLimiter(ROBOT, 1, 0.0)
    with pytest.raises(TypeError, match="policy"):
        JerkLimitedPolicy(None, ROBOT)
