"""C++ header-only forward kinematics (csrc/robot_rt/robot/kinematics.hpp) against the NumPy reference."""

import copy
import json
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_rt.robot import load_robot, parse_robot
from robot_rt.robot.kinematics import forward_kinematics

_control = pytest.importorskip("robot_rt._control")
from robot_rt.control.loop import robot_model  # noqa: E402


@pytest.fixture(scope="module")
def robot():
    return load_robot()


def test_fk_matches_numpy_on_random_configurations(robot):
    rng = np.random.default_rng(0)
    q = rng.uniform(robot.position_min, robot.position_max, size=(500, robot.dof))
    q[:5] = robot.home  # include the home pose
    cpp = robot_model(robot).forward_kinematics(q)
    ref = forward_kinematics(robot, q)
    np.testing.assert_allclose(cpp, ref, rtol=0, atol=1e-12)


def test_fk_float32_instantiation_close_to_numpy(robot):
    rng = np.random.default_rng(1)
    q = rng.uniform(robot.position_min, robot.position_max, size=(200, robot.dof))
    cpp32 = robot_model(robot).forward_kinematics_f32(q)
    ref = forward_kinematics(robot, q)[:, :3, 3]
    np.testing.assert_allclose(cpp32, ref, rtol=0, atol=5e-6)


def _random_chain(draw_seed: int):
    """A random robot file: random joint types, axes, origins; the loader builds it, no new code."""
    rng = np.random.default_rng(draw_seed)
    data = json.loads(resources.files("robot_rt.robot").joinpath("data", "gantry_arm_8dof.json").read_text())
    data = copy.deepcopy(data)
    dof = int(rng.integers(1, 12))
    joints = []
    for i in range(dof):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        joints.append(
            {
                "name": f"j{i}",
                "type": "revolute" if rng.random() < 0.6 else "prismatic",
                "axis": axis.tolist(),
                "origin_xyz_m": rng.uniform(-0.5, 0.5, 3).tolist(),
                "origin_rpy_rad": rng.uniform(-np.pi, np.pi, 3).tolist(),
                "position_min": -2.0,
                "position_max": 2.0,
                "velocity_limit": 1.0,
                "acceleration_limit": 1.0,
                "jerk_limit": 1.0,
            }
        )
    data["joints"] = joints
    data["home_position"] = [0.0] * dof
    data["paddle"]["origin_rpy_rad"] = rng.uniform(-np.pi, np.pi, 3).tolist()
    return parse_robot(data, source="random")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_fk_matches_numpy_on_random_chains(seed):
    robot = _random_chain(seed)
    q = np.random.default_rng(seed).uniform(robot.position_min, robot.position_max, size=(20, robot.dof))
    np.testing.assert_allclose(robot_model(robot).forward_kinematics(q), forward_kinematics(robot, q), atol=1e-12)


def test_fk_rejects_wrong_shape(robot):
    with pytest.raises(ValueError, match="q: expected shape"):
        robot_model(robot).forward_kinematics(np.zeros((3, robot.dof + 1)))
