"""A guard for learned policies in the envs: joint velocity commands capped so that no joint reaches its position
limit and the paddle does not leave its workspace box (either ends the episode as a 'limit' outcome).

Design notes: docs/envs.md, section `robot_rt.envs.limit_guard`.

    joints:  qd_i in [-cap_down_i, cap_up_i],  cap = clip(sqrt(2 a_i d_i) - a_i dt, 0, v_max_i)
             (d_i the room to the limit less 1 mm; one step of latency at the acceleration limit a_i)
    paddle:  then v = J_p(q) qd;  for each axis k, a velocity towards a wall may be at most
             sqrt(2 a_w (room_k - margin)); qd is scaled by one common factor (the paddle keeps its direction) until
             every axis complies. The scale comes last: a factor <= 1 keeps every joint inside its cap (each cap
             interval holds 0), while a per-joint clip after it could turn the paddle back towards a wall.
    Within the margin of a wall the paddle may not move towards it at all: a command with any component towards it
    is scaled to (nearly) zero, so a policy that keeps pushing there holds the paddle still.

The joint cap is the scripted policy's own (`BatchedScriptedPolicy.brake_to_limits`). The scripted policy caps its
paddle's Cartesian velocity towards the walls before it solves for joint velocities; a learned policy outputs joint
velocities, so the guard scales them instead.
"""

from __future__ import annotations

import numpy as np

from robot_rt.robot import RobotDescription, load_robot
from robot_rt.robot.kinematics import paddle_jacobian, paddle_position_normal

from .core import WorldConfig

__all__ = ["LimitGuard", "joint_brake"]


def joint_brake(robot: RobotDescription, q: np.ndarray, command: np.ndarray, dt_s: float) -> np.ndarray:
    """Joint velocities `command` [N, dof] (robot units) capped towards each position limit at sqrt(2 a d) - a dt
    (d: the room to the limit less 1 mm): every joint can always stop before its limit."""
    room_up = np.maximum(robot.position_max - q - 1e-3, 0.0)
    room_down = np.maximum(q - robot.position_min - 1e-3, 0.0)
    a = robot.acceleration_limit
    cap_up = np.minimum(np.maximum(np.sqrt(2 * a * room_up) - a * dt_s, 0.0), robot.velocity_limit)
    cap_down = np.minimum(np.maximum(np.sqrt(2 * a * room_down) - a * dt_s, 0.0), robot.velocity_limit)
    return np.clip(command, -cap_down, cap_up)


class LimitGuard:
    """`guard(q, actions)`: normalised actions [N, dof] (fractions of the velocity limits, the envs' action space)
    capped as the module docstring says, for joint positions `q` [N, dof]. Returns float32 actions in [-1, 1]."""

    def __init__(
        self,
        robot: RobotDescription | None = None,
        config: WorldConfig | None = None,
        wall_decel_mps2: float = 4.0,
        wall_margin_m: float = 0.02,
    ):
        for name, value in (("wall_decel_mps2", wall_decel_mps2), ("wall_margin_m", wall_margin_m)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if wall_decel_mps2 <= 0:
            raise ValueError(f"wall_decel_mps2: expected > 0, got {wall_decel_mps2!r}")
        self.robot = robot if robot is not None else load_robot()
        self.dt_s = (config or WorldConfig()).step_s
        self.wall_decel_mps2 = float(wall_decel_mps2)
        self.wall_margin_m = float(wall_margin_m)

    def __call__(self, q, actions) -> np.ndarray:
        robot = self.robot
        q = np.asarray(q, dtype=np.float64)
        a = np.asarray(actions, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != robot.dof or a.shape != q.shape:
            raise ValueError(f"q, actions: expected two [N, {robot.dof}] arrays, got {q.shape} and {a.shape}")
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(a))):
            raise ValueError("q, actions: contain NaN or Inf")
        # the joint caps first: each is an interval around 0, so the common scale after it keeps them, while a
        # per-joint clip after the scale would turn the paddle's velocity back towards a wall
        qd = joint_brake(robot, q, np.clip(a, -1.0, 1.0) * robot.velocity_limit, self.dt_s)
        pos, _ = paddle_position_normal(robot, q)
        jp = paddle_jacobian(robot, q)
        v = np.einsum("nij,nj->ni", jp, qd)
        room_low = np.maximum(pos - robot.workspace_min_m - self.wall_margin_m, 0.0)
        room_high = np.maximum(robot.workspace_max_m - self.wall_margin_m - pos, 0.0)
        allowed = np.sqrt(2.0 * self.wall_decel_mps2 * np.where(v < 0, room_low, room_high))
        towards = np.abs(v)
        ratio = np.max(np.where(towards > allowed, towards / np.maximum(allowed, 1e-12), 1.0), axis=1)
        qd = qd / ratio[:, None]
        return np.clip(qd / robot.velocity_limit, -1.0, 1.0).astype(np.float32)
