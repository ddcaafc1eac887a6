"""The per-tick fast paths of the MuJoCo sim-server against their plain references (project rule: a fast path keeps
its reference and a test comparing them): `MujocoPhysics.step` vs `step_reference`, `RallySource._step` /
`_put_robot` vs `_step_reference` / `_put_robot_reference`, for the MuJoCo rally (1 ms world step, MuJoCo's paddle
contact) and the kinematic rally (10 substeps per step, the world's paddle contact). Equal means equal: every
state array, record and camera frame compared exactly, tick by tick."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rt.robot import load_robot
from robot_rt.sim.mujoco_physics import MujocoPhysics
from robot_rt.sim.mujoco_server import MujocoRallySource
from robot_rt.sim.rally import RallySource

ROBOT = load_robot()
LIMIT_JOINT = 4


def _equal(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def _mujoco_state(ph: MujocoPhysics) -> dict:
    d = ph.data
    return {
        "qpos": d.qpos.copy(),
        "qvel": d.qvel.copy(),
        "ctrl": d.ctrl.copy(),
        "xfrc": d.xfrc_applied.copy(),
        "force": d.actuator_force.copy(),
        "xpos": d.xpos.copy(),
        "xmat": d.xmat.copy(),
        "time": d.time,
        "ball_contact": ph.ball_contact,
        "ticks": ph.ticks,
        "limit_ticks": ph.limit_ticks,
        "max_limit_excess": ph.max_limit_excess,
        "max_effort_ratio": ph.max_effort_ratio,
    }


def _assert_same(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert _equal(a[key], b[key]), f"{where}: {key} differs"


def _physics_inputs(start, ticks: int):
    """Targets (a sine, then a saturating step beyond a joint limit), with and without a velocity target; the
    test adds a ball that is absent, far in flight, then fired at the paddle (the per-substep contact path)."""
    rng = np.random.default_rng(3)
    phase = rng.uniform(0, 6, ROBOT.dof)
    for k in range(ticks):
        q = start + 0.05 * np.sin(k * 0.02 + phase)
        v = None if k % 3 == 0 else 0.05 * 0.02e3 * np.cos(k * 0.02 + phase)
        if k >= ticks // 2:  # past an arm joint's upper limit: the servo saturates, the soft limit is exceeded
            q = q.copy()
            q[LIMIT_JOINT] = ROBOT.position_max[LIMIT_JOINT] + 0.5
        yield k, q, v


def test_mujoco_physics_step_equals_reference():
    start = ROBOT.home.copy()
    start[LIMIT_JOINT] = ROBOT.position_max[LIMIT_JOINT] - 0.06
    fast, ref = MujocoPhysics(initial_position=start), MujocoPhysics(initial_position=start)
    contacts = 0
    ball_fast = ball_ref = None
    for k, q, v in _physics_inputs(start, 600):
        if k % 200 == 50:  # fire a ball at the paddle (its state the same in both: taken from the reference)
            p, n = ref.paddle_pose()
            ball_ref = np.concatenate([p + 0.15 * n, -6.0 * n, [0.0, 40.0, -20.0]])
            ball_fast = ball_ref.copy()
        elif k % 200 == 10:
            ball_fast = ball_ref = np.array([0.0, 0.0, 1.2, 5.0, 0.0, 1.0, 0.0, 30.0, 0.0])  # far from the paddle
        elif k % 200 == 0:
            ball_fast = ball_ref = None
        hit_fast = fast.step(q, v, ball_fast)
        hit_ref = ref.step_reference(q, v, ball_ref)
        assert hit_fast == hit_ref
        contacts += hit_ref
        _assert_same(_mujoco_state(fast), _mujoco_state(ref), f"tick {k}")
        if ball_ref is not None:
            assert _equal(fast.ball_state(), ref.ball_state())
            ball_ref = ref.ball_state()
            ball_fast = fast.ball_state()
    # the paths the comparison is about were taken
    assert contacts >= 2 and ref.limit_ticks > 0 and ref.max_effort_ratio == pytest.approx(1.0)


def _world_state(src: RallySource) -> dict:
    w = src.world
    names = ("q", "qd", "ball", "phase", "t", "hits", "touched", "landed", "outcome", "cam_t", "cam_arrival")
    return {name: getattr(w, name).copy() for name in (*names, "cam_pos", "cam_head", "rec_pos", "rec_active")}


def _frames_equal(a, b) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and x[1] == y[1] and _equal(x[2], y[2]) for x, y in zip(a, b))


def _use_reference(src: RallySource) -> None:
    src._step = src._step_reference


def _mujoco_rally(reference: bool) -> MujocoRallySource:
    ph = MujocoPhysics()
    phase = np.random.default_rng(5).uniform(0, 6, ROBOT.dof)
    clock = {"k": 0}

    def targets():
        k = clock["k"]
        return ROBOT.home + 0.03 * np.sin(k * 0.01 + phase), 0.3 * np.cos(k * 0.01 + phase)

    src = MujocoRallySource(ph, targets, "default", seed=2, serve_interval_s=0.05)
    src.clock = clock
    if reference:
        _use_reference(src)
    return src


def test_mujoco_rally_tick_equals_reference():
    """MujocoRallySource.tick through `_step` and through `_step_reference` (both with MuJoCo's contact): the same
    world, MuJoCo state, frames and records every tick; served balls plus balls fired at the paddle."""
    fast, ref = _mujoco_rally(False), _mujoco_rally(True)
    now = 0.0
    for k in range(2500):
        fast.clock["k"] = ref.clock["k"] = k
        if k % 500 == 350 and ref.in_rally:  # send the ball in play straight at MuJoCo's paddle
            p, n = ref.physics.paddle_pose()
            shot = np.concatenate([p + 0.3 * n, -6.0 * n, np.zeros(3)])
            fast.world.ball[0] = ref.world.ball[0] = shot
            fast.world.phase[0] = ref.world.phase[0] = 0
        frames_fast, frames_ref = fast.tick(now), ref.tick(now)
        assert _frames_equal(frames_fast, frames_ref), f"tick {k}: frames differ"
        _assert_same(_world_state(fast), _world_state(ref), f"tick {k}")
        _assert_same(_mujoco_state(fast.physics), _mujoco_state(ref.physics), f"tick {k}")
        now += 0.001
    summary = ref.summary()
    assert fast.summary() == summary
    assert ref.stats["contact_ticks"] >= 2 and summary["hits"] >= 1 and summary["serves"] >= 3
    assert summary["tracks_true"] and summary["tracks_detected"]


def _kinematic_rally(reference: bool) -> tuple[RallySource, dict]:
    """The kinematic server's rally (world step 10 ms, 10 substeps, the world's paddle contact) against a robot
    that sweeps its joints over most of their range (the paddle leaves its workspace box at times)."""
    state = {"q": ROBOT.home.copy(), "v": np.zeros(ROBOT.dof)}
    src = RallySource(lambda: (state["q"], state["v"]), "default", seed=7, serve_interval_s=0.05)
    if reference:
        _use_reference(src)
    return src, state


def test_kinematic_rally_step_equals_reference():
    (fast, fast_state), (ref, ref_state) = _kinematic_rally(False), _kinematic_rally(True)
    lo, hi = ROBOT.position_min, ROBOT.position_max
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    phase = np.random.default_rng(9).uniform(0, 6, ROBOT.dof)
    now = 0.0
    for k in range(1500):
        s = k * 0.01
        q = mid + 1.02 * half * np.sin(3.0 * s + phase)  # a little past the limits: _put_robot clips
        v = 3.06 * half * np.cos(3.0 * s + phase)
        for state in (fast_state, ref_state):
            state["q"], state["v"] = q.copy(), v.copy()
        frames_fast, frames_ref = fast.advance(now), ref.advance(now)
        assert _frames_equal(frames_fast, frames_ref), f"call {k}: frames differ"
        _assert_same(_world_state(fast), _world_state(ref), f"call {k}")
        now += 0.01
    summary = ref.summary()
    assert fast.summary() == summary
    assert summary["serves"] >= 3 and summary["workspace_exits"] >= 1
    assert any(b["min_paddle_distance_m"] is not None for b in summary["ball_records"])


def test_put_robot_equals_reference():
    src, _ = _kinematic_rally(False)
    w = src.world
    rng = np.random.default_rng(11)
    for _ in range(200):
        q = rng.uniform(ROBOT.position_min - 0.2, ROBOT.position_max + 0.2)
        q[rng.random(ROBOT.dof) < 0.2] = ROBOT.position_max[0]  # some joints exactly at a bound
        qd = rng.normal(0, 2, ROBOT.dof) * ROBOT.velocity_limit
        src._put_robot(q, qd)
        fast_q, fast_qd = w.q.copy(), w.qd.copy()
        src._put_robot_reference(q, qd)
        assert _equal(fast_q, w.q) and _equal(fast_qd, w.qd)
        assert np.array_equal(np.signbit(fast_qd), np.signbit(w.qd))  # even the sign of a zero
