"""Robot description loading/validation and the NumPy forward kinematics."""

import copy
import json

import numpy as np
import pytest

from robot_rt.robot import forward_kinematics, load_robot, paddle_jacobian, paddle_position_normal, parse_robot
from robot_rt.robot.kinematics import rpy_matrix


@pytest.fixture(scope="module")
def robot():
    return load_robot()


def _raw():
    from importlib import resources

    return json.loads(resources.files("robot_rt.robot").joinpath("data", "gantry_arm_8dof.json").read_text())


def test_default_platform_is_gantry_plus_arm(robot):
    assert robot.dof == 8
    assert [j.type for j in robot.joints] == ["prismatic"] * 2 + ["revolute"] * 6
    assert np.all(robot.position_min < robot.position_max)
    for field in ("velocity_limit", "acceleration_limit", "jerk_limit"):
        assert np.all(getattr(robot, field) > 0)
    arrays = robot.chain_arrays()
    assert arrays["axis"].shape == (8, 3) and arrays["joint_type"].tolist() == [0, 0] + [1] * 6


def test_home_paddle_inside_workspace_facing_the_table(robot):
    position, normal = paddle_position_normal(robot, robot.home)
    assert np.all(position > robot.workspace_min_m) and np.all(position < robot.workspace_max_m)
    assert normal[0] < -0.9  # the forehand face looks down the table, towards the opponent


def test_rpy_matrix_is_rotation_and_matches_composition():
    rng = np.random.default_rng(0)
    for rpy in rng.uniform(-np.pi, np.pi, size=(20, 3)):
        r = rpy_matrix(rpy)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(r), 1.0)

        def rot(axis, a):
            c, s = np.cos(a), np.sin(a)
            return {
                "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
                "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
                "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
            }[axis]

        np.testing.assert_allclose(r, rot("z", rpy[2]) @ rot("y", rpy[1]) @ rot("x", rpy[0]), atol=1e-12)


def test_prismatic_gantry_moves_paddle_along_its_axis(robot):
    q = robot.home.copy()
    p0, n0 = paddle_position_normal(robot, q)
    q[0] += 0.3  # gantry_y
    q[1] -= 0.1  # gantry_x
    p1, n1 = paddle_position_normal(robot, q)
    np.testing.assert_allclose(p1 - p0, [-0.1, 0.3, 0.0], atol=1e-12)
    np.testing.assert_allclose(n1, n0, atol=1e-12)


def test_base_yaw_rotates_paddle_about_arm_axis(robot):
    q = robot.home.copy()
    pivot = np.array([1.75 + q[1], q[0], 0.55 + 0.29])
    p0, _ = paddle_position_normal(robot, q)
    q[2] += 0.5
    p1, _ = paddle_position_normal(robot, q)
    r0, r1 = p0 - pivot, p1 - pivot
    assert np.isclose(r0[2], r1[2]) and np.isclose(np.linalg.norm(r0[:2]), np.linalg.norm(r1[:2]))
    angle = np.arctan2(r1[1], r1[0]) - np.arctan2(r0[1], r0[0])
    assert np.isclose(np.mod(angle + np.pi, 2 * np.pi) - np.pi, 0.5)


def test_batched_fk_matches_loop(robot):
    rng = np.random.default_rng(1)
    q = rng.uniform(robot.position_min, robot.position_max, size=(4, 3, robot.dof))
    batched = forward_kinematics(robot, q)
    assert batched.shape == (4, 3, 4, 4)
    for idx in np.ndindex(4, 3):
        np.testing.assert_allclose(batched[idx], forward_kinematics(robot, q[idx]), atol=1e-12)
    np.testing.assert_allclose(batched[..., 3, :], np.broadcast_to([0, 0, 0, 1], (4, 3, 4)))


def test_jacobian_matches_finite_motion(robot):
    rng = np.random.default_rng(2)
    q = rng.uniform(robot.position_min * 0.5, robot.position_max * 0.5)
    jac = paddle_jacobian(robot, q)
    dq = rng.normal(size=robot.dof) * 1e-4
    p0, _ = paddle_position_normal(robot, q)
    p1, _ = paddle_position_normal(robot, q + dq)
    np.testing.assert_allclose(p1 - p0, jac @ dq, atol=1e-8)


def test_bad_descriptions_raise_with_the_field_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        load_robot(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_robot(tmp_path / "broken.json")
    cases = [
        (lambda d: d["joints"][2].update(type="spherical"), r"joints\[2\]\.type"),
        (lambda d: d["joints"][0].update(axis=[1, 1, 0]), r"joints\[0\]\.axis"),
        (lambda d: d["joints"][3].update(position_min=2.0, position_max=1.0), r"joints\[3\]: position_min"),
        (lambda d: d["joints"][1].update(velocity_limit=-1), r"joints\[1\]\.velocity_limit"),
        (lambda d: d["joints"][1].pop("jerk_limit"), "missing field 'jerk_limit'"),
        (lambda d: d.update(joints=[]), "non-empty"),
        (lambda d: d.update(home_position=[9.0] * 8), "home_position"),
        (lambda d: d["paddle_workspace_box_m"].update(min=[3, 0, 0]), "workspace"),
        (lambda d: d.update(format_version=2), "format_version"),
        # values that would weaken the loop's limits without looking wrong
        (lambda d: d.update(home_position=[float("nan")] * 8), "home_position"),
        (lambda d: d["joints"][1].update(velocity_limit=True), r"joints\[1\]\.velocity_limit: expected a number"),
        (lambda d: d["joints"][4].update(jerk_limit=1e-6), r"joints\[4\].*at most 10 s"),
        (lambda d: d["joints"][0].update(velocity_limit=1e6), r"joints\[0\].*at most 10 s"),
    ]
    for mutate, pattern in cases:
        data = copy.deepcopy(_raw())
        mutate(data)
        with pytest.raises(ValueError, match=pattern):
            parse_robot(data, source="case.json")


def test_another_robot_is_a_new_file(tmp_path):
    data = _raw()
    data["name"] = "planar_2r"
    data["joints"] = [
        dict(data["joints"][2], name="a", origin_xyz_m=[0, 0, 0], origin_rpy_rad=[0, 0, 0]),
        dict(data["joints"][3], name="b", axis=[0, 0, 1], origin_xyz_m=[0.5, 0, 0]),
    ]
    data["paddle"]["origin_xyz_m"] = [0.25, 0, 0]
    data["paddle"]["origin_rpy_rad"] = [0, 0, 0]
    data["home_position"] = [0.0, 0.0]
    path = tmp_path / "planar.json"
    path.write_text(json.dumps(data))
    robot = load_robot(path)
    position, _ = paddle_position_normal(robot, [np.pi / 2, 0.0])
    np.testing.assert_allclose(position, [0, 0.75, 0], atol=1e-12)
    position, _ = paddle_position_normal(robot, [0.0, np.pi / 2])
    np.testing.assert_allclose(position, [0.5, 0.25, 0], atol=1e-12)
