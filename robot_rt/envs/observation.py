"""The flat observation of the table-tennis envs (`observation_layout`): q, qd and the newest camera detections,
shared by the world (`TableTennisWorld.observations`), the gym envs and the loop's env-policy adapter."""

from __future__ import annotations

import numpy as np

from robot_rt.robot import RobotDescription


def observation_layout(dof: int, history: int) -> dict[str, slice]:
    """Names and slices of the flat observation vector."""
    return {
        "q": slice(0, dof),
        "qd": slice(dof, 2 * dof),
        "detections": slice(2 * dof, 2 * dof + 5 * history),
    }


def build_observation(q: np.ndarray, qd: np.ndarray, detections: np.ndarray) -> np.ndarray:
    """Flat float32 observations [..., 2 dof + 5 history] (shared with the real-time loop's policy adapter)."""
    lead = q.shape[:-1]
    return np.concatenate([q, qd, detections.reshape(lead + (-1,))], axis=-1).astype(np.float32)


def observation_bounds(robot: RobotDescription, history: int) -> tuple[np.ndarray, np.ndarray]:
    det_low = np.tile([-8.0, -4.0, -1.0, 0.0, 0.0], history)
    det_high = np.tile([8.0, 4.0, 6.0, 10.0, 1.0], history)
    low = np.concatenate([robot.position_min, -robot.velocity_limit, det_low]).astype(np.float32)
    high = np.concatenate([robot.position_max, robot.velocity_limit, det_high]).astype(np.float32)
    return low, high
