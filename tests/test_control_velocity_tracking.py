"""Velocity tracking (LoopConfig.velocity_tracking): the loop's safety filter follows a target velocity, jerk-limited,
inside every limit; the path forecast models it; the env-side model and the adapter that go with it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_rt import _control
from robot_rt.bridge.env_policy import EnvPolicyAdapter
from robot_rt.bridge.loop_model import LoopTrajectoryPolicy, drive_robot
from robot_rt.control.loop import RealTimeLoop, default_soft_margin, robot_model
from robot_rt.envs.jerk_limit import jerk_limited_velocity, stopping_displacement
from robot_rt.envs.scripted import BatchedScriptedPolicy
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.robot import load_robot, paddle_blade_bounds, paddle_position_normal

ROBOT = load_robot()
MARGIN = default_soft_margin(ROBOT)
MODEL = robot_model(ROBOT, workspace=False, soft_margin=MARGIN)
TICKS = 10  # loop ticks (1 ms) per policy period


def run_velocities(f, velocities):
    """One policy period per row of joint velocities [T, dof], TICKS filter ticks each; states [T*TICKS, dof, 4]."""
    out = []
    for v in velocities:
        vel = np.ascontiguousarray(np.broadcast_to(v, (TICKS, ROBOT.dof)))
        states, _, _ = f.run(np.zeros((TICKS, ROBOT.dof)), target_velocity=vel)
        out.append(states)
    return np.concatenate(out)


def test_follows_a_lower_target_from_above_without_passing_it():
    # the case cruise_jerk got wrong: accelerating towards 1.25 rad/s, then asked for 0.23 rad/s; it went to -0.48
    f = _control.SafetyFilter(MODEL, 0.001, ROBOT.home, velocity_tracking=True)
    assert f.velocity_tracking
    v = np.zeros((24, ROBOT.dof))
    v[:4, 3], v[4:, 3] = 1.254, 0.23
    states = run_velocities(f, v)
    joint = states[:, 3, 1]
    peak = int(np.argmax(joint))
    assert joint[peak] < 1.0  # the acceleration already built up carries it on (jerk-limited), then it turns
    assert joint[peak:].min() >= 0.23 - 4 * ROBOT.jerk_limit[3] * 1e-6  # the dead-beat finish: a few J dt^2
    assert joint[-1] == pytest.approx(0.23, abs=1e-12) and states[-1, 3, 2] == pytest.approx(0.0, abs=1e-9)


def test_same_law_as_the_envs_jerk_limiter():
    # jerk_limited_velocity (the env's law at the policy period) and the filter's (at the loop's tick) are the same
    # time-optimal law discretised differently (the env's acceleration steps at the period's start, the filter's
    # ramps within it): their velocities at the ends of the periods agree within one period at full acceleration
    j = 2
    a_lim, j_lim = ROBOT.acceleration_limit[j], ROBOT.jerk_limit[j]
    cmds = [3.0] * 15 + [-2.0] * 15 + [0.5] * 30
    v = a = 0.0
    env = []
    for c in cmds:
        v, a = jerk_limited_velocity(v, a, c, a_lim, j_lim, 0.01)
        env.append(float(v))
    f = _control.SafetyFilter(MODEL, 0.001, ROBOT.home, velocity_tracking=True)
    rows = np.zeros((len(cmds), ROBOT.dof))
    rows[:, j] = cmds
    loop = run_velocities(f, rows)[TICKS - 1 :: TICKS, j, 1]
    assert np.max(np.abs(np.array(env) - loop)) <= 1.1 * a_lim * 0.01
    assert loop[-1] == pytest.approx(0.5, abs=1e-12)


@given(
    seed=st.integers(0, 2**31 - 1),
    near=st.sampled_from(["home", "low", "high"]),
)
@settings(max_examples=30, deadline=None)
def test_keeps_every_limit_and_stops_exactly_from_random_commands(seed, near):
    rng = np.random.default_rng(seed)
    soft_low, soft_high = ROBOT.position_min + MARGIN, ROBOT.position_max - MARGIN
    start = {"home": ROBOT.home, "low": soft_low + 0.02, "high": soft_high - 0.02}[near]
    f = _control.SafetyFilter(MODEL, 0.001, start, velocity_tracking=True)
    # full-speed commands, mostly towards the nearby limit, changing every 1-5 periods; then 0 (come to rest)
    rows = []
    while len(rows) < 60:
        v = rng.uniform(-1.0, 1.0, ROBOT.dof) * ROBOT.velocity_limit
        if near != "home":
            v = (-1.0 if near == "low" else 1.0) * np.abs(v)
        rows += [v] * int(rng.integers(1, 6))
    rows += [np.zeros(ROBOT.dof)] * 60
    states = run_velocities(f, np.array(rows))
    p, v, a, jerk = (states[..., k] for k in range(4))
    slack = 1e-9 * (ROBOT.position_max - ROBOT.position_min)
    assert np.all(p >= soft_low - slack) and np.all(p <= soft_high + slack)
    assert np.all(np.abs(v) <= ROBOT.velocity_limit * (1 + 1e-9))
    assert np.all(np.abs(a) <= ROBOT.acceleration_limit * (1 + 1e-9))
    assert np.all(np.abs(jerk) <= ROBOT.jerk_limit * (1 + 1e-9))
    assert f.at_rest  # exactly: the brake law's last step lands on rest


def test_forecast_is_the_velocity_filters_path():
    """Moving at 1.5 m/s towards a box face with one more goal at that speed: velocity tracking holds it for the ramp
    and the hold, then brakes; forecast_workspace's excess is where the filter's own trajectory comes to rest."""
    model = robot_model(ROBOT)
    zero = np.zeros(ROBOT.dof)
    v = zero.copy()
    v[0] = 1.5  # gantry_y
    home = paddle_position_normal(ROBOT, ROBOT.home[None])[0][0]
    moved = paddle_position_normal(ROBOT, (ROBOT.home + v * 0.01)[None])[0][0]
    axis = int(np.argmax(np.abs(moved - home)))
    gain = (moved[axis] - home[axis]) / 0.015  # paddle metres per joint unit (signed)
    face = ROBOT.workspace_max_m[axis] if gain > 0 else ROBOT.workspace_min_m[axis]
    margin = 0.01
    q = ROBOT.home.copy()
    q[0] += (abs(face - home[axis]) - margin - 0.1) * np.sign(gain) / abs(gain)  # 10 cm inside the shrunk box
    goal = q + v * 0.02
    excess, first_exit, ticks, settled = model.forecast_workspace(
        q, v, zero, goal, 0.001, 1000, margin, q, 0.02, velocity_tracking=True
    )
    assert settled and first_exit > 0
    assert excess > 0.05  # 3 cm of ramp and hold, then ~0.19 m of braking from 1.5 m/s (A = 10, J = 200)
    pos_excess = model.forecast_workspace(q, v, zero, goal, 0.001, 1000, margin, q, 0.02)[0]
    assert pos_excess < excess  # position tracking brakes onto the goal as early as it can
    # the same path by hand: 20 ms at 1.5 m/s, then the brake law's stopping distance (stopping_displacement is
    # tested equal to the loop's C++ brake law in test_envs_jerk_limit.py)
    travelled = 1.5 * 0.02 + float(stopping_displacement(1.5, 0.0, ROBOT.acceleration_limit[0], ROBOT.jerk_limit[0]))
    # the blade's side towards the face at rest (the loop keeps the whole blade in the box)
    lowest, highest = paddle_blade_bounds(ROBOT, (q + np.eye(ROBOT.dof)[0] * travelled)[None])
    edge = (highest if gain > 0 else lowest)[0, axis]
    beyond = (edge - face) * np.sign(gain)
    assert beyond + margin == pytest.approx(excess, abs=2e-3)


def test_env_model_follows_the_velocity_filter():
    n = 4
    env = TableTennisVectorEnv(n, max_episode_steps=120, robot=drive_robot(ROBOT))
    pol = LoopTrajectoryPolicy(BatchedScriptedPolicy(n, robot=ROBOT), ROBOT, n, velocity_tracking=True, lead_s=0.3)
    assert all(f is None for f in pol.filters)
    obs, _ = env.reset(seed=2)
    deviations = []
    for _ in range(100):
        action = pol(obs)
        assert all(f.velocity_tracking for f in pol.filters)
        obs, _, term, trunc, _ = env.step(action)
        q = obs[:, : ROBOT.dof].astype(np.float64)
        deviations.append(np.abs(q - pol.filter_position)[~(term | trunc)].max(initial=0.0))
        if (term | trunc).any():
            break
    assert max(deviations) < 0.005
    assert np.all(pol.target >= ROBOT.position_min + MARGIN - 1e-12)  # the adapter's anti-windup, modelled


def test_adapter_shows_the_loop_state_and_keeps_targets_in_the_soft_box():
    pushing = np.zeros(ROBOT.dof)
    pushing[7] = 1.0  # arm_j6 (the paddle's spin about its normal: the workspace box does not see it) at full speed
    ad = EnvPolicyAdapter(lambda o: pushing, ROBOT, velocity_tracking=True, lead_s=0.3, path_margin_m=None)
    assert ad.state == "loop"
    assert EnvPolicyAdapter(lambda o: pushing, ROBOT).state == "command"
    q = ROBOT.home.copy()
    q[7] = ROBOT.position_max[7] - MARGIN[7] - 0.01  # near its soft limit
    cmd_q = q - 0.005
    seen = []

    def spy(flat):
        seen.append(flat[: 2 * ROBOT.dof].copy())
        return pushing

    ad.policy = spy
    obs = {
        "measured_position": q,
        "measured_velocity": np.zeros(ROBOT.dof),
        "command_position": cmd_q,
        "command_velocity": np.full(ROBOT.dof, 0.25),
        "stamp_ns": 10**9,
        "latest_ball": None,
    }
    out = None
    for k in range(30):
        obs["stamp_ns"] = 10**9 + k * 10**7
        out = ad(obs)
    # the policy saw the loop's commanded state, not the measured one
    np.testing.assert_allclose(seen[0][: ROBOT.dof], cmd_q, atol=1e-6)
    np.testing.assert_allclose(seen[0][ROBOT.dof :], 0.25, atol=1e-6)
    # the integrated target stops at the soft box: no wind-up beyond it (a reversal moves it back at once)
    assert out[7] == pytest.approx(ROBOT.position_max[7] - MARGIN[7])
    pushing[7] = -1.0
    obs["stamp_ns"] += 10**7
    back = ad(obs)
    assert back[7] == pytest.approx(out[7] - ROBOT.velocity_limit[7] * ad.dt)


def test_loop_option_is_checked():
    with pytest.raises(TypeError, match="velocity_tracking"):
        RealTimeLoop(ROBOT, velocity_tracking="yes")
