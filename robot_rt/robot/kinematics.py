"""Forward kinematics of a serial chain of prismatic and revolute joints (NumPy reference).

Each joint i applies its fixed origin transform (translation `origin_xyz_m`, then rotation
R = Rz(yaw) Ry(pitch) Rx(roll) from `origin_rpy_rad`, as in URDF) followed by its motion: a rotation by
q_i about `axis` (revolute) or a translation q_i * axis (prismatic). The paddle frame is a fixed
transform after the last joint; its z axis is the face normal. Batched over any leading dimensions of q.
The C++ header csrc/robot_rt/robot/kinematics.hpp implements the same product.
"""

from __future__ import annotations

import numpy as np

from .description import RobotDescription


def rpy_matrix(rpy) -> np.ndarray:
    roll, pitch, yaw = rpy
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def _fixed_transform(xyz, rpy) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = rpy_matrix(rpy)
    t[:3, 3] = xyz
    return t


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, batched over angle: [..., 3, 3]."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def joint_transforms(robot: RobotDescription, q) -> list[np.ndarray]:
    """World transforms [..., 4, 4] of each joint's frame after its motion, then of the paddle (last)."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != robot.dof:
        raise ValueError(f"q: expected last dimension {robot.dof} (joint positions), got shape {q.shape}")
    batch = q.shape[:-1]
    current = np.broadcast_to(np.eye(4), batch + (4, 4)).copy()
    frames = []
    for i, joint in enumerate(robot.joints):
        current = current @ _fixed_transform(joint.origin_xyz_m, joint.origin_rpy_rad)
        motion = np.broadcast_to(np.eye(4), batch + (4, 4)).copy()
        axis = np.asarray(joint.axis)
        if joint.type == "revolute":
            motion[..., :3, :3] = _axis_angle(axis, q[..., i])
        else:
            motion[..., :3, 3] = q[..., i, None] * axis
        current = current @ motion
        frames.append(current)
    frames.append(current @ _fixed_transform(robot.paddle_origin_xyz_m, robot.paddle_origin_rpy_rad))
    return frames


def forward_kinematics(robot: RobotDescription, q) -> np.ndarray:
    """Paddle pose in the table frame as a homogeneous transform [..., 4, 4]."""
    return joint_transforms(robot, q)[-1]


def paddle_position_normal(robot: RobotDescription, q) -> tuple[np.ndarray, np.ndarray]:
    """Paddle centre [..., 3] (m) and forehand face normal [..., 3] (unit) in the table frame."""
    pose = forward_kinematics(robot, q)
    return pose[..., :3, 3], pose[..., :3, 2]


def paddle_blade_bounds(robot: RobotDescription, q) -> tuple[np.ndarray, np.ndarray]:
    """The blade as the workspace box sees it: its lowest and highest coordinates along each table axis ([..., 3]
    each, m). The blade is a disc of `paddle_radius_m` normal to the paddle frame's z axis: along axis k it reaches
    R sqrt(1 - n_k^2) either side of its centre (csrc/robot_rt/control/safety.cpp `paddle_box`, which the loop keeps
    inside the box)."""
    centre, normal = paddle_position_normal(robot, q)
    half = robot.paddle_radius_m * np.sqrt(np.clip(1.0 - normal * normal, 0.0, 1.0))
    return centre - half, centre + half


def paddle_geometric_jacobian(robot: RobotDescription, q) -> np.ndarray:
    """Geometric Jacobian of the paddle frame [..., 6, dof]: rows 0-2 the linear velocity of the paddle centre,
    rows 3-5 the angular velocity (table frame) per unit joint velocity. Column i is a_i x (p - o_i) / a_i for a
    revolute joint and a_i / 0 for a prismatic one (a_i: joint i's axis in the table frame, o_i: its frame's
    origin). Exact (no differencing); csrc/robot_rt/robot/kinematics.hpp paddle_jacobian is the same formula."""
    frames = joint_transforms(robot, q)
    p = frames[-1][..., :3, 3]
    batch = p.shape[:-1]
    jac = np.zeros(batch + (6, robot.dof))
    for i, joint in enumerate(robot.joints):
        axis = frames[i][..., :3, :3] @ np.asarray(joint.axis, dtype=np.float64)
        if joint.type == "revolute":
            jac[..., :3, i] = np.cross(axis, p - frames[i][..., :3, 3])
            jac[..., 3:, i] = axis
        else:
            jac[..., :3, i] = axis
    return jac


def paddle_jacobian(robot: RobotDescription, q) -> np.ndarray:
    """Jacobian of the paddle position w.r.t. q: [..., 3, dof] (the linear rows of paddle_geometric_jacobian)."""
    return paddle_geometric_jacobian(robot, q)[..., :3, :]
