"""The robot and the paddle-ball contact in MuJoCo, one server tick at a time (`robot-rt sim-server --physics mujoco`).

`MujocoPhysics.step(target_q, target_v, ball=None)` advances one tick (1 ms by default: `substeps` MuJoCo steps
of ModelOptions.timestep_s): the servos (robot_rt.sim.mujoco_model) track the target, the joints move under
their inertia, armature, friction, damping and effort limits. With a ball state [9] it is placed in MuJoCo at
the tick's start (position, velocity, spin; the project's drag, Magnus lift and spin decay applied as an external
force/torque, gravity by MuJoCo) and moves with the robot; `ball_contact` tells whether it touched the paddle
blade during the tick and `ball_state()` is where MuJoCo left it.

Division of labour with the project's ball physics (docs/mujoco.md, "The ball"): the ball's flight and its
table, net and floor contacts stay the project's (robot_rt.ballistics: RK4 + the Nakashima rebound model,
exactly what the envs integrate, so a gap between the two servers is the robot's and the paddle's, not a
different flight model); only the paddle contact is MuJoCo's (the blade's real motion, a soft contact with
tuned stiffness/damping/friction). The rally source (robot_rt.sim.mujoco_rally) integrates the ball with the
project's physics and takes MuJoCo's ball state for the ticks with a paddle contact.

Speed (docs/mujoco.md, "Real-time factor"): `step` runs 1000 times a simulated second next to MuJoCo's own step,
so it writes through views of MjData's buffers made once and reuses its scratch arrays (NumPy's per-call cost on
8-element arrays is what it pays, not the arithmetic); `step_reference` is the plain version it must equal
(tests/test_mujoco_perf_paths.py).
"""

from __future__ import annotations

import math
from operator import gt, lt, sub, truediv

import numpy as np

from robot_rt.ballistics import BallParams

from .mujoco_model import ModelOptions, MujocoRobotModel

_PARKED_BALL_QPOS = np.array([0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0])
_UNIT_QUATERNION = np.array([1.0, 0.0, 0.0, 0.0])


def _contiguous(indices) -> slice | None:
    """indices as a slice when they are consecutive (a view of MjData's buffer instead of a gathered copy)."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0]) + idx.size)
    return None


class MujocoPhysics:
    """One MuJoCo world (robot + ball) stepped in ticks; see the module docstring."""

    def __init__(
        self,
        robot=None,
        *,
        urdf=None,
        options: ModelOptions | None = None,
        tick_s: float = 0.001,
        ball_params: BallParams | None = None,
        initial_position=None,
    ):
        import mujoco

        self._mj = mujoco
        bp = ball_params or BallParams()
        opts = options or ModelOptions(ball_mass_kg=bp.mass_kg, ball_radius_m=bp.radius_m, gravity_mps2=bp.gravity_mps2)
        self.compiled = MujocoRobotModel(urdf, opts, robot=robot)
        self.robot = self.compiled.robot
        self.model = self.compiled.model
        self.data = mujoco.MjData(self.model)
        self.dof = self.compiled.dof
        ratio = tick_s / opts.timestep_s
        if not tick_s > 0 or abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(f"tick_s: expected a positive multiple of the timestep {opts.timestep_s}, got {tick_s}")
        self.tick_s = float(tick_s)
        self.substeps = int(round(ratio))
        self.ball_params = bp
        area = np.pi * bp.radius_m**2
        self._k_drag = bp.air_density_kgpm3 * bp.drag_coefficient * area / (2 * bp.mass_kg)
        self._k_magnus = bp.air_density_kgpm3 * area * bp.radius_m * bp.lift_coefficient_slope / (2 * bp.mass_kg)
        self._spin_decay = bp.spin_decay_per_s
        self._ball_inertia = 2.0 / 3.0 * bp.mass_kg * bp.radius_m**2
        self._qadr = self.compiled.qpos_adr
        self._vadr = self.compiled.dof_adr
        self._bq = self.compiled.ball_qpos_adr
        self._bv = self.compiled.ball_dof_adr
        self._ball_body = self.compiled.ball_body
        self._paddle_body = self.compiled.paddle_body
        self.kp, self.kv = self.compiled.kp, self.compiled.kv
        self.q_min, self.q_max = self.robot.position_min, self.robot.position_max
        self._make_views()
        q0 = self.robot.home if initial_position is None else np.asarray(initial_position, dtype=np.float64)
        self.data.qpos[self._qadr] = np.clip(q0, self.q_min, self.q_max)
        self.data.ctrl[: self.dof] = self.kp * self.data.qpos[self._qadr]
        self._park_ball()
        mujoco.mj_forward(self.model, self.data)
        self.ball_contact = False
        self.ticks = 0
        self.limit_ticks = 0  # ticks in which a joint was beyond a position limit (MuJoCo's soft joint limits)
        self.max_limit_excess = 0.0
        self.max_effort_ratio = 0.0

    def _make_views(self) -> None:
        """Views of MjData's buffers (allocated once by MjData, so they stay valid) and scratch arrays for `step`."""
        d, dof = self.data, self.dof
        qs, vs = _contiguous(self._qadr), _contiguous(self._vadr)
        self._q_view = d.qpos[qs] if qs is not None else None
        self._v_view = d.qvel[vs] if vs is not None else None
        self._ctrl_view = d.ctrl[:dof]
        self._force_view = d.actuator_force[:dof]
        self._paddle_xpos = d.xpos[self._paddle_body]
        self._paddle_xpos_row = d.xpos[self._paddle_body : self._paddle_body + 1]
        self._ball_pos = d.qpos[self._bq : self._bq + 3]
        self._ball_quat = d.qpos[self._bq + 3 : self._bq + 7]
        self._ball_qpos = d.qpos[self._bq : self._bq + 7]
        self._ball_qvel = d.qvel[self._bv : self._bv + 6]  # linear velocity, then angular (body frame)
        self._ball_xfrc = d.xfrc_applied[self._ball_body]
        self._ctrl_v = np.empty(dof)
        self._q_min_list = np.asarray(self.q_min, dtype=np.float64).tolist()
        self._q_max_list = np.asarray(self.q_max, dtype=np.float64).tolist()
        self._effort_limit_list = np.asarray(self.compiled.effort_limit, dtype=np.float64).tolist()

    # ------------------------------------------------------------------ state
    @property
    def time_s(self) -> float:
        return float(self.data.time)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.joint_position(), (
            self._v_view.copy() if self._v_view is not None else self.data.qvel[self._vadr].copy()
        )

    def joint_position(self) -> np.ndarray:
        return self._q_view.copy() if self._q_view is not None else self.data.qpos[self._qadr].copy()

    def set_joint_state(self, position, velocity=None) -> None:
        self.data.qpos[self._qadr] = np.asarray(position, dtype=np.float64)
        self.data.qvel[self._vadr] = 0.0 if velocity is None else np.asarray(velocity, dtype=np.float64)
        self._mj.mj_forward(self.model, self.data)

    def actuator_force(self) -> np.ndarray:
        return self.data.actuator_force[: self.dof].copy()

    def paddle_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Paddle centre and face normal (z axis of the paddle body) in the table frame, from MuJoCo."""
        b = self._paddle_body
        return self.data.xpos[b].copy(), self.data.xmat[b].reshape(3, 3)[:, 2].copy()

    def paddle_position(self) -> np.ndarray:
        """Paddle centre [1, 3] (paddle_pose()'s first half as one row, without the normal)."""
        return self._paddle_xpos_row.copy()

    def ball_state(self) -> np.ndarray:
        """[x, y, z, vx, vy, vz, wx, wy, wz] of MuJoCo's ball (table frame)."""
        out = np.empty(9)
        out[:3] = self.data.qpos[self._bq : self._bq + 3]
        out[3:6] = self.data.qvel[self._bv : self._bv + 3]
        rot = self.data.xmat[self._ball_body].reshape(3, 3)
        out[6:9] = rot @ self.data.qvel[self._bv + 3 : self._bv + 6]  # free joint: spin in the body frame
        return out

    def set_ball(self, ball) -> None:
        b = np.asarray(ball, dtype=np.float64)
        self._ball_pos[:] = b[:3]
        self._ball_quat[:] = _UNIT_QUATERNION  # body frame = table frame
        self._ball_qvel[:] = b[3:9]  # velocity, then spin (= body frame here)

    def _park_ball(self) -> None:
        """No ball in play: out of the way below the floor, at rest (it never collides with anything there)."""
        self._ball_qpos[:] = _PARKED_BALL_QPOS
        self._ball_qvel.fill(0.0)
        self._ball_xfrc.fill(0.0)

    def _aero(self, ball) -> None:
        """The project's drag, Magnus lift and spin decay (docs/frames.md) as force/torque on the ball (scalar
        arithmetic: this runs every tick, and NumPy's small-array calls cost more than the maths)."""
        vx, vy, vz, wx, wy, wz = ball[3], ball[4], ball[5], ball[6], ball[7], ball[8]
        m = self.ball_params.mass_kg
        drag = -self._k_drag * math.sqrt(vx * vx + vy * vy + vz * vz)
        km = self._k_magnus
        decay = -self._spin_decay * self._ball_inertia
        self._ball_xfrc[:] = (
            m * (drag * vx + km * (wy * vz - wz * vy)),
            m * (drag * vy + km * (wz * vx - wx * vz)),
            m * (drag * vz + km * (wx * vy - wy * vx)),
            decay * wx,
            decay * wy,
            decay * wz,
        )

    # ------------------------------------------------------------------ stepping
    def step(self, target_q, target_v=None, ball=None) -> bool:
        """One tick towards the servo target; returns whether the ball (if given) touched the paddle.
        `step_reference` with the per-tick allocations and lookups taken out (same values)."""
        ctrl = self._ctrl_view
        np.multiply(self.kp, target_q, out=ctrl)
        if target_v is not None:
            np.add(ctrl, np.multiply(self.kv, target_v, out=self._ctrl_v), out=ctrl)
        mj, model, data = self._mj, self.model, self.data
        contact = False
        if ball is None:
            self._park_ball()
            mj.mj_step(model, data, self.substeps)
        else:
            ball = np.asarray(ball, dtype=np.float64)
            self.set_ball(ball)
            b = ball.tolist()
            self._aero(b)
            p = self._paddle_xpos.tolist()
            dist = math.sqrt((b[0] - p[0]) ** 2 + (b[1] - p[1]) ** 2 + (b[2] - p[2]) ** 2)
            near = dist < 0.05 + 0.03 * math.sqrt(b[3] ** 2 + b[4] ** 2 + b[5] ** 2)  # reach within ~2 ticks
            if not near:  # the ball cannot reach the blade within this tick: one call for all substeps
                mj.mj_step(model, data, self.substeps)
            else:
                mj_step = mj.mj_step
                for _ in range(self.substeps):
                    mj_step(model, data)
                    contact = contact or data.ncon > 0  # the only contact pair is ball-paddle
        # mj_step computes positions at its start: bring the frames (paddle pose, the ball's orientation for its
        # spin) up to the state it ended in
        mj.mj_kinematics(model, data)
        self.ball_contact = contact
        self.ticks += 1
        # the limit and effort records on Python floats (the same IEEE operations as step_reference's NumPy ones,
        # at a third of their per-call cost on 8 joints); no NaN to propagate: mj_step resets a diverged state
        q = (self._q_view if self._q_view is not None else data.qpos[self._qadr]).tolist()
        q_min, q_max = self._q_min_list, self._q_max_list
        # a joint is beyond a limit exactly when step_reference's excess is > 0 (a - b > 0 iff a > b in IEEE
        # doubles, gradual underflow): compared first, the excess computed only then
        if any(map(lt, q, q_min)) or any(map(gt, q, q_max)):
            self.limit_ticks += 1
            self.max_limit_excess = max(self.max_limit_excess, max(map(max, map(sub, q_min, q), map(sub, q, q_max))))
        effort = max(map(truediv, map(abs, self._force_view.tolist()), self._effort_limit_list))
        self.max_effort_ratio = max(self.max_effort_ratio, effort)
        return contact

    def step_reference(self, target_q, target_v=None, ball=None) -> bool:
        """The plain version of `step` (fresh arrays, MjData looked up each time): what `step` must equal."""
        target_q = np.asarray(target_q, dtype=np.float64)
        ctrl = self.kp * target_q
        if target_v is not None:
            ctrl = ctrl + self.kv * np.asarray(target_v, dtype=np.float64)
        self.data.ctrl[: self.dof] = ctrl
        mj, model, data = self._mj, self.model, self.data
        contact = False
        if ball is None:
            data.qpos[self._bq : self._bq + 7] = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0)
            data.qvel[self._bv : self._bv + 6] = 0.0
            data.xfrc_applied[self._ball_body] = 0.0
            mj.mj_step(model, data, self.substeps)
        else:
            ball = np.asarray(ball, dtype=np.float64)
            data.qpos[self._bq : self._bq + 3] = ball[:3]
            data.qpos[self._bq + 3 : self._bq + 7] = (1.0, 0.0, 0.0, 0.0)
            data.qvel[self._bv : self._bv + 3] = ball[3:6]
            data.qvel[self._bv + 3 : self._bv + 6] = ball[6:9]
            b = ball.tolist()
            vx, vy, vz, wx, wy, wz = b[3:9]
            m = self.ball_params.mass_kg
            drag = -self._k_drag * math.sqrt(vx * vx + vy * vy + vz * vz)
            km = self._k_magnus
            xfrc = data.xfrc_applied[self._ball_body]
            xfrc[0] = m * (drag * vx + km * (wy * vz - wz * vy))
            xfrc[1] = m * (drag * vy + km * (wz * vx - wx * vz))
            xfrc[2] = m * (drag * vz + km * (wx * vy - wy * vx))
            decay = -self._spin_decay * self._ball_inertia
            xfrc[3], xfrc[4], xfrc[5] = decay * wx, decay * wy, decay * wz
            p = data.xpos[self._paddle_body].tolist()
            dist = math.sqrt((b[0] - p[0]) ** 2 + (b[1] - p[1]) ** 2 + (b[2] - p[2]) ** 2)
            near = dist < 0.05 + 0.03 * math.sqrt(b[3] ** 2 + b[4] ** 2 + b[5] ** 2)
            if not near:
                mj.mj_step(model, data, self.substeps)
            else:
                for _ in range(self.substeps):
                    mj.mj_step(model, data)
                    contact = contact or data.ncon > 0
                contact = contact or data.ncon > 0
        mj.mj_kinematics(model, data)
        self.ball_contact = contact
        self.ticks += 1
        q = data.qpos[self._qadr]
        excess = np.maximum(self.q_min - q, q - self.q_max)
        worst = float(excess.max())
        if worst > 0:
            self.limit_ticks += 1
            self.max_limit_excess = max(self.max_limit_excess, worst)
        ratio = np.abs(data.actuator_force[: self.dof]) / self.compiled.effort_limit
        self.max_effort_ratio = max(self.max_effort_ratio, float(ratio.max()))
        return contact
