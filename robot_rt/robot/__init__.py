"""Robot description (limits, kinematic chain) and kinematics shared by the real-time loop and the envs."""

from .description import (
    JointSpec,
    RobotDescription,
    geometry_digest,
    joint_limits_digest,
    limits_digest,
    load_robot,
    parse_robot,
)
from .kinematics import (
    forward_kinematics,
    paddle_blade_bounds,
    paddle_geometric_jacobian,
    paddle_jacobian,
    paddle_position_normal,
)

__all__ = [
    "JointSpec",
    "RobotDescription",
    "forward_kinematics",
    "geometry_digest",
    "joint_limits_digest",
    "limits_digest",
    "paddle_geometric_jacobian",
    "load_robot",
    "paddle_jacobian",
    "paddle_blade_bounds",
    "paddle_position_normal",
    "parse_robot",
]
