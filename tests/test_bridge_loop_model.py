"""robot_rt.bridge.loop_model: the env's robot moved along the trajectory of the loop's own safety filter."""

import numpy as np
import pytest

from robot_rt import _control
from robot_rt.bridge.loop_model import LoopTrajectoryPolicy, drive_robot
from robot_rt.control.loop import default_soft_margin, robot_model
from robot_rt.envs.scripted import BatchedScriptedPolicy
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.robot import load_robot

ROBOT = load_robot()


def test_env_robot_follows_the_loop_filter_and_restarts_with_each_episode():
    n = 8
    env = TableTennisVectorEnv(n, max_episode_steps=150, robot=drive_robot(ROBOT))
    pol = LoopTrajectoryPolicy(BatchedScriptedPolicy(n, robot=ROBOT), ROBOT, n)
    obs, _ = env.reset(seed=5)
    auto = np.zeros(n, dtype=bool)
    deviations, restarts = [], 0
    soft_low = ROBOT.position_min + default_soft_margin(ROBOT)
    soft_high = ROBOT.position_max - default_soft_margin(ROBOT)
    for _ in range(400):
        if auto.any():
            pol.reset(auto)
        starting = pol._pending == 1  # these restart their filter at this call (a new episode's first observation)
        action = pol(obs)
        if starting.any():
            restarts += int(starting.sum())
            q0 = obs[starting, : ROBOT.dof].astype(np.float64)
            np.testing.assert_allclose(pol.target[starting], q0, atol=0.1)  # it starts where the robot is
        assert np.all(np.abs(action) <= 1.0)
        # the filter's trajectory keeps the loop's soft joint box
        assert np.all(pol.filter_position >= soft_low - 1e-9) and np.all(pol.filter_position <= soft_high + 1e-9)
        obs, _, term, trunc, info = env.step(action)
        q = obs[:, : ROBOT.dof].astype(np.float64)
        keep = ~(term | trunc | auto)
        deviations.append(np.abs(q - pol.filter_position)[keep].max(initial=0.0))
        assert not np.any((info["outcome"] == "limit") & term & ~auto), "a joint limit ended an episode"
        auto = term | trunc
    assert restarts >= n  # every environment went through at least one more episode
    assert max(deviations) < 0.005, max(deviations)  # the drive's headroom lets it follow within ~1 mrad


def test_filter_positions_are_the_loop_filters_own():
    """One environment, one step: the position it heads for is what the loop's SafetyFilter gives for the adapter's
    interpolated target (computed here independently)."""
    env = TableTennisVectorEnv(1, max_episode_steps=50, robot=drive_robot(ROBOT))
    obs, _ = env.reset(seed=0)
    constant = np.full((1, ROBOT.dof), 0.3, dtype=np.float32)
    pol = LoopTrajectoryPolicy(lambda o: constant, ROBOT, 1)
    pol(obs)
    q = obs[0, : ROBOT.dof].astype(np.float64)
    v = 0.3 * ROBOT.velocity_limit
    goal = np.clip(q + v * pol.dt, q - pol.lead, q + pol.lead)
    f = _control.SafetyFilter(robot_model(ROBOT, workspace=False, soft_margin=default_soft_margin(ROBOT)), 0.001, q)
    frac = (np.arange(10) + 1.0) / 10
    refs = q + frac[:, None] * (goal - q)
    states, _, _ = f.run(refs, target_velocity=np.ascontiguousarray(np.broadcast_to((goal - q) / pol.dt, refs.shape)))
    np.testing.assert_array_equal(pol.filter_position[0], states[-1, :, 0])


def test_drive_robot_only_raises_the_acceleration():
    drive = drive_robot(ROBOT)
    np.testing.assert_array_equal(drive.acceleration_limit, 2.0 * ROBOT.acceleration_limit)
    for name in ("position_min", "position_max", "velocity_limit", "jerk_limit", "home"):
        np.testing.assert_array_equal(getattr(drive, name), getattr(ROBOT, name))


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match="policy"):
        LoopTrajectoryPolicy(None, ROBOT)
    with pytest.raises(ValueError, match="loop_rate_hz"):
        LoopTrajectoryPolicy(lambda o: o, ROBOT, 1, loop_rate_hz=1234.5)
    pol = LoopTrajectoryPolicy(lambda o: np.zeros((2, ROBOT.dof)), ROBOT, 2)
    with pytest.raises(ValueError, match="obs"):
        pol(np.zeros((3, 46), dtype=np.float32))
