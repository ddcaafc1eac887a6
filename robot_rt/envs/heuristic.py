"""Scripted baseline policy: move the paddle to the predicted hitting point and swing through it.

Design notes: docs/envs.md, section `robot_rt.envs.heuristic`.
"""

from __future__ import annotations

import numpy as np

from robot_rt.estimation import BallUKF
from robot_rt.robot import RobotDescription, load_robot, paddle_position_normal

from .core import WorldConfig
from .observation import observation_layout


def lob_direction(
    start: np.ndarray, target_xy: np.ndarray, speed_mps: float, g: float = 9.81, extra_elevation_rad: float = 0.12
) -> np.ndarray:
    """Unit direction of a drag-free shot from `start` landing at `target_xy` on the table (z = 0.78 m),
    the lower of the two ballistic solutions (a flat drive) when one exists, else 35 degrees up."""
    delta = np.array([target_xy[0] - start[0], target_xy[1] - start[1]])
    dist = float(np.linalg.norm(delta))
    height = 0.78 - start[2]
    v2 = speed_mps**2
    disc = v2 * v2 - g * (g * dist * dist + 2 * height * v2)
    elevation = np.arctan2(v2 - np.sqrt(disc), g * dist) if disc >= 0 else np.deg2rad(35.0)
    elevation += extra_elevation_rad  # drag and the net
    horizontal = delta / max(dist, 1e-9)
    return np.array([horizontal[0] * np.cos(elevation), horizontal[1] * np.cos(elevation), np.sin(elevation)])


class HeuristicPolicy:
    """Stateful scripted policy for TableTennis-v0 / TableTennisGoal-v0 observations (see docs/envs.md, `robot_rt.envs.heuristic`)."""

    def __init__(
        self,
        robot: RobotDescription | None = None,
        policy_hz: float | None = None,
        history: int = 6,
        hit_plane_x_m: float = 1.7,
        return_speed_mps: float = 7.0,
        swing_speed_mps: float = 4.0,
        swing_s: float = 0.12,
        gain_per_s: float = 10.0,
        max_paddle_speed_mps: float = 2.5,
        default_target_xy=(-0.7, 0.0),
    ):
        self.robot = robot or load_robot()
        # the env's step (WorldConfig.step_s) unless another policy rate is given
        self.dt = WorldConfig().step_s if policy_hz is None else 1.0 / policy_hz
        self.layout = observation_layout(self.robot.dof, history)
        self.history = history
        self.hit_plane_x_m = hit_plane_x_m
        self.return_speed_mps = return_speed_mps
        self.swing_speed_mps = swing_speed_mps
        self.swing_s = swing_s
        self.gain = gain_per_s
        self.max_paddle_speed_mps = max_paddle_speed_mps
        self.default_target = np.asarray(default_target_xy, dtype=np.float64)
        self.ready = self.robot.home.copy()
        pos, nrm = paddle_position_normal(self.robot, self.ready[None])
        self.ready_position, self.ready_normal = pos[0], nrm[0]
        self.reset()

    def reset(self) -> None:
        self.t = 0.0
        self.estimator = BallUKF()
        self.seen: set[float] = set()
        self.plan = None  # (t_contact, q_target, joint feed-forward)

    def _ingest(self, detections: np.ndarray) -> None:
        fresh = []
        for x, y, z, age, valid in detections:
            if valid < 0.5:
                continue
            t_capture = round(self.t - age, 6)
            if t_capture not in self.seen:
                self.seen.add(t_capture)
                fresh.append((t_capture, np.array([x, y, z])))
        for t_capture, pos in sorted(fresh, key=lambda item: item[0]):
            try:
                self.estimator.update(t_capture, pos, t_arrival_s=self.t)
            except ValueError:
                self.estimator.update(t_capture, pos)

    def __call__(self, observation) -> np.ndarray:
        goal = None
        if isinstance(observation, dict):
            goal = np.asarray(observation["desired_goal"], dtype=np.float64)
            observation = observation["observation"]
        obs = np.asarray(observation, dtype=np.float64)
        q = obs[self.layout["q"]]
        detections = obs[self.layout["detections"]].reshape(self.history, 5)
        self._ingest(detections)
        crossing = None
        try:
            crossing = self.estimator.predict_plane_crossing(self.hit_plane_x_m)
        except (ValueError, RuntimeError):
            crossing = None
        if crossing is not None and crossing.t_s > self.t - 0.02 and crossing.velocity_mps[0] > 0:
            target_xy = self.default_target if goal is None else goal
            p_c = np.asarray(crossing.position_m, dtype=np.float64)
            v_in = np.asarray(crossing.velocity_mps, dtype=np.float64)
            d_out = lob_direction(p_c, target_xy, self.return_speed_mps)
            normal = d_out - v_in / max(np.linalg.norm(v_in), 1e-9)
            normal /= np.linalg.norm(normal)
            time_left = crossing.t_s - self.t
            # before the swing the paddle waits behind the contact point, then moves through it along n
            lead = self.swing_speed_mps * min(max(time_left, 0.0), self.swing_s)
            target = p_c - lead * normal
            swing = self.swing_speed_mps * normal if time_left < self.swing_s else np.zeros(3)
        else:
            target, normal, swing = self.ready_position, self.ready_normal, np.zeros(3)
        margin = np.array([0.06, 0.06, 0.12])
        target = np.clip(target, self.robot.workspace_min_m + margin, self.robot.workspace_max_m - margin)
        command = self.resolved_rate(q, target, normal, swing)
        self.t += self.dt
        # env actions: joint velocities as fractions of the velocity limits (the envs' normalised action space)
        return np.clip(self._brake(q, command) / self.robot.velocity_limit, -1.0, 1.0).astype(np.float32)

    def resolved_rate(self, q, target, normal, swing) -> np.ndarray:
        """Cartesian control of the paddle: straight-line motion towards the target (so the paddle stays in its
        workspace box), normal alignment, and a null-space pull towards the ready pose (away from limits)."""
        eps = 1e-5
        probes = np.vstack([q, q + eps * np.eye(self.robot.dof)])
        pos, nrm = paddle_position_normal(self.robot, probes)
        w = 0.3
        jac = np.concatenate([(pos[1:] - pos[0]).T, w * (nrm[1:] - nrm[0]).T]) / eps
        approach = self.gain * (target - pos[0])
        speed = np.linalg.norm(approach)
        if speed > self.max_paddle_speed_mps:
            approach *= self.max_paddle_speed_mps / speed
        task = np.concatenate([approach + swing, w * self.gain * (normal - nrm[0])])
        inv = jac.T @ np.linalg.inv(jac @ jac.T + 1e-3 * np.eye(6))
        qd = inv @ task
        null = np.eye(self.robot.dof) - inv @ jac
        qd += null @ (2.0 * (self.ready - q))
        return np.clip(qd, -self.robot.velocity_limit, self.robot.velocity_limit)

    def brake_to_limits(self, q: np.ndarray, command: np.ndarray) -> np.ndarray:
        """Caps each joint's speed towards a limit at sqrt(2 a d): it can always stop before the limit (joint
        velocities in the robot's units, float32)."""
        return self._brake(q, command).astype(np.float32)

    def _brake(self, q: np.ndarray, command: np.ndarray) -> np.ndarray:
        robot = self.robot
        room_up = np.maximum(robot.position_max - q - 1e-3, 0.0)
        room_down = np.maximum(q - robot.position_min - 1e-3, 0.0)
        a = robot.acceleration_limit
        cap_up = np.sqrt(2 * a * room_up) - a * self.dt
        cap_down = np.sqrt(2 * a * room_down) - a * self.dt
        return np.clip(command, -np.maximum(cap_down, 0.0), np.maximum(cap_up, 0.0))
