"""MuJoCo on the real side (`robot-rt sim-server --physics mujoco`): the model generated from the URDF, the servos,
the paddle contact against the project's model, and a `robot-rt run` against the server over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

# mujoco and yourdfpy are installed by tools/setup.sh (the [mujoco] extra): a missing one fails, it is not skipped
import mujoco
import numpy as np
import pytest

from robot_rt.envs.core import WorldConfig, paddle_contact
from robot_rt.robot import load_robot
from robot_rt.robot.urdf import drive_armature, load_urdf
from robot_rt.sim.mujoco_model import DAMPING_RATIO, MujocoRobotModel, build_mjcf
from robot_rt.sim.mujoco_physics import MujocoPhysics

ROBOT = load_robot()
CLI = [sys.executable, "-m", "robot_rt.cli"]

# documented bounds (docs/mujoco.md): a bandwidth/damping-ratio design of 0.7 gives ~5 % overshoot on a step
# and 2 % settling in ~4 / (zeta w): 60 ms for the arm (15 Hz), 115 ms for the gantry (8 Hz); the bounds add
# room for the armature/inertia coupling, friction and gravity compensation of the full model
MAX_OVERSHOOT = 0.12
MAX_SETTLING_ARM_S = 0.12
MAX_SETTLING_GANTRY_S = 0.25
# paddle contact vs the project's model (WorldConfig.paddle_restitution / paddle_friction), docs/mujoco.md
RESTITUTION_TOL = 0.06
TANGENTIAL_TOL_MPS = 0.15
SPIN_TOL_RADPS = 12.0


@pytest.fixture(scope="module")
def compiled():
    return MujocoRobotModel()


def test_mjcf_is_generated_from_the_urdf_and_compiles(compiled):
    urdf = load_urdf()
    model = compiled.model
    joints = {j.name: j for j in urdf.robot.joints}
    armature = drive_armature()
    assert model.nu == ROBOT.dof
    for i, name in enumerate(ROBOT.joint_names):
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        assert jid >= 0
        np.testing.assert_allclose(model.jnt_range[jid], [joints[name].limit.lower, joints[name].limit.upper])
        np.testing.assert_allclose(
            model.actuator_forcerange[i], [-joints[name].limit.effort, joints[name].limit.effort]
        )
        assert model.dof_armature[model.jnt_dofadr[jid]] == pytest.approx(armature[name])
        assert model.dof_frictionloss[model.jnt_dofadr[jid]] == pytest.approx(float(joints[name].dynamics.friction))
        assert model.dof_damping[model.jnt_dofadr[jid]] == pytest.approx(float(joints[name].dynamics.damping))
    # masses: the URDF's links (the world's and the ball's excluded)
    urdf_mass = sum(link.inertial.mass for link in urdf.robot.links if link.inertial is not None)
    ball = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "ball")
    assert model.body_mass.sum() - model.body_mass[ball] == pytest.approx(urdf_mass)
    assert "<pair" in build_mjcf()


def test_mujoco_kinematics_match_the_description(compiled):
    """The paddle body's pose in MuJoCo equals the project's forward kinematics (same URDF, other code)."""
    from robot_rt.robot import forward_kinematics

    ph = MujocoPhysics()
    rng = np.random.default_rng(0)
    for q in rng.uniform(ROBOT.position_min, ROBOT.position_max, size=(20, ROBOT.dof)):
        ph.set_joint_state(q)
        p, n = ph.paddle_pose()
        pose = forward_kinematics(ROBOT, q)
        np.testing.assert_allclose(p, pose[:3, 3], atol=1e-9)
        np.testing.assert_allclose(n, pose[:3, 2], atol=1e-9)


def _step_response(joint: int, amplitude: float, duration_s: float = 0.6):
    ph = MujocoPhysics()
    home = ROBOT.home.copy()
    for _ in range(200):  # settle at home (gravity compensation, friction)
        ph.step(home)
    q0 = ph.joint_state()[0][joint]
    target = home.copy()
    target[joint] += amplitude
    trace = []
    for _ in range(int(duration_s / ph.tick_s)):
        ph.step(target)
        trace.append(ph.joint_state()[0][joint])
    return ph, np.asarray(trace) - q0, amplitude


@pytest.mark.parametrize("joint", range(ROBOT.dof))
def test_servo_step_response_within_documented_bounds(joint):
    amplitude = 0.05 if not ROBOT.is_revolute[joint] else 0.1
    ph, trace, amp = _step_response(joint, amplitude)
    t = np.arange(1, len(trace) + 1) * ph.tick_s
    overshoot = (trace.max() - amp) / amp
    outside = np.nonzero(np.abs(trace - amp) > 0.02 * amp)[0]
    settling = t[outside[-1]] if outside.size else 0.0
    assert overshoot < MAX_OVERSHOOT, f"joint {joint}: overshoot {overshoot:.3f}"
    bound = MAX_SETTLING_ARM_S if ROBOT.is_revolute[joint] else MAX_SETTLING_GANTRY_S
    assert settling < bound, f"joint {joint}: 2 % settling {settling:.3f} s"
    assert abs(trace[-1] - amp) < 0.01 * amp  # no steady-state error: gravity is compensated
    assert ph.max_effort_ratio <= 1.0 + 1e-9


def test_servo_gains_follow_the_bandwidth_design(compiled):
    w = 2 * np.pi * np.where(ROBOT.is_revolute, 15.0, 8.0)
    np.testing.assert_allclose(compiled.kp, compiled.home_inertia * w**2)
    np.testing.assert_allclose(compiled.kv, 2 * DAMPING_RATIO * compiled.home_inertia * w)


def test_torque_limits_hold_on_a_large_step():
    ph = MujocoPhysics()
    target = ROBOT.home.copy()
    target[3] += 1.0  # 1 rad on axis 2: the servo saturates
    forces = []
    for _ in range(300):
        ph.step(target)
        forces.append(ph.actuator_force())
    forces = np.abs(np.asarray(forces))
    assert np.all(forces <= ROBOT.effort_limit + 1e-9)
    assert forces[:, 3].max() == pytest.approx(ROBOT.effort_limit[3])  # it did saturate


def _shoot(speed_mps, angle_deg, spin_radps):
    """A ball fired at the still paddle's centre; returns (incoming ball, MuJoCo's ball after, the model's)."""
    ph = MujocoPhysics()
    for _ in range(100):
        ph.step(ROBOT.home)
    p, n = ph.paddle_pose()
    t = np.cross(n, [0.0, 1.0, 0.0])
    t /= np.linalg.norm(t)
    a = np.radians(angle_deg)
    v = speed_mps * (-np.cos(a) * n + np.sin(a) * t)
    ball = np.concatenate([p + 0.021 * n - 0.002 * v, v, [0.0, spin_radps, 0.0]])
    state, touched = ball.copy(), False
    for _ in range(30):
        contact = ph.step(ROBOT.home, None, state)
        state = ph.ball_state()
        touched = touched or contact
        if touched and not contact:
            break
    assert touched
    cfg = WorldConfig()
    ref = paddle_contact(
        ball[None], p[None], n[None], np.zeros((1, 3)), np.ones(1), 0.02, cfg.paddle_restitution, cfg.paddle_friction
    )[0]
    return ball, state, ref, n, t


@pytest.mark.parametrize(
    "speed, angle, spin", [(3, 0, 0), (6, 0, 0), (10, 0, 0), (6, 30, 0), (6, 45, 0), (6, 0, 100), (10, 30, -150)]
)
def test_paddle_contact_matches_the_project_model(speed, angle, spin):
    ball, after, ref, n, t = _shoot(speed, angle, spin)
    e = -(after[3:6] @ n) / (ball[3:6] @ n)
    assert abs(e - WorldConfig().paddle_restitution) < RESTITUTION_TOL
    assert abs(after[3:6] @ t - ref[3:6] @ t) < TANGENTIAL_TOL_MPS
    assert abs(after[7] - ref[7]) < SPIN_TOL_RADPS


def test_rally_source_hits_with_mujoco_contact():
    """A ball sent straight at the MuJoCo paddle is returned through MuJoCo's contact, the rally logic counts it."""
    from robot_rt.sim.mujoco_server import MujocoRallySource

    ph = MujocoPhysics()
    src = MujocoRallySource(ph, lambda: (ROBOT.home, np.zeros(ROBOT.dof)), "default", seed=0)
    w = src.world
    assert w.robot.paddle_radius_m < 1e-9  # the world's own paddle never touches
    for _ in range(50):
        ph.step(ROBOT.home)
    p, n = ph.paddle_pose()
    now = time.monotonic()
    src._serve(now)
    w.ball[0] = np.concatenate([p + 0.3 * n, -6.0 * n, np.zeros(3)])  # 50 ms from the blade
    for _ in range(120):
        src._step()
        if src.stats["hits"]:
            break
    assert src.stats["hits"] == 1
    for _ in range(10):  # the contact lasts a few ticks; MuJoCo's ball state is taken for each of them
        src._step()
    assert src.stats["contact_ticks"] >= 2
    assert w.touched[0] and (w.ball[0, 3:6] @ n) > 3.0  # going back, off MuJoCo's paddle


def _env():
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_run_against_mujoco_sim_server_over_loopback(tmp_path):
    from robot_rt.control.runlog import read_runlog

    server = subprocess.Popen(
        [*CLI, "sim-server", "--port", "0", "--duration", "60", "--physics", "mujoco", "--camera-rate", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    line = server.stdout.readline()
    if not line:
        server.kill()
        raise AssertionError(f"sim-server did not start: {server.stderr.read()}")
    info = json.loads(line)
    assert info["physics"] == "mujoco"
    try:
        log_path = tmp_path / "mujoco.rrlog"
        proc = subprocess.run(
            [
                *CLI,
                "run",
                "--robot",
                f"udp://127.0.0.1:{info['robot_port']}?camera={info['camera_port']}",
                "--duration",
                "3",
                "--rate",
                "500",
                "--log",
                str(log_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(),
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        server.terminate()
        try:
            out, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["event"] == "stopped", err
    assert stopped["commands_applied"] > 500 and stopped["commands_out_of_limits"] == 0
    assert stopped["mujoco"]["ticks"] > 1000 and stopped["mujoco"]["max_effort_ratio"] <= 1.0 + 1e-9
    log = read_runlog(log_path)
    assert log.clean and len(log.ticks) > 600
    measured = log.ticks["measured_position"]
    commanded = log.ticks["command_position"]
    assert np.ptp(measured[:, 0]) > 0.05  # the sine policy moved the MuJoCo gantry
    # MuJoCo's robot follows the commands (servo lag, no runaway)
    assert np.max(np.abs(measured[200:] - commanded[200:])) < 0.1


def test_is2r_real_side_can_be_the_mujoco_server(tmp_path):
    """`robot-rt train is2r --real-physics mujoco`: the run's real side deploys through the real-time loop against
    `sim-server --rally --physics mujoco` (the server's own record says so), and returns the real side's data."""
    import argparse

    from robot_rt.learning import is2r

    parser = argparse.ArgumentParser()
    is2r.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "run"), "--smoke", "--no-progress", "--real-physics", "mujoco"])
    cfg = is2r.config_from_args(args)
    assert cfg.real_physics == "mujoco"
    run = is2r.Is2rRun(cfg, tmp_path / "run", resume=False, progress=False)
    assert run.deploy_fn.keywords == {"physics": "mujoco"}
    log_path = tmp_path / "deploy.rrlog"
    result = run.deploy_fn(run.family.single(run.family.initial()), n_balls=2, seed=4, log_path=log_path)
    assert len(result["rally_lengths"]) >= 1 and result["tracks"], result
    assert 0.0 <= result["return_rate"] <= 1.0
    assert result["real_physics"] == "mujoco"  # from the server's own final record
    assert log_path.exists()
    from robot_rt.control.runlog import read_runlog

    log = read_runlog(log_path)
    assert log.clean and len(log.ticks) > 500
