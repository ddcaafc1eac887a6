"""Gymnasium environments: `robot_rt/TableTennis-v0` (cooperative rally, the i-S2R task) and
`robot_rt/TableTennisGoal-v0` (goal-conditioned return, the GoalsEye task).

Design notes: docs/envs.md, section `robot_rt.envs.table_tennis`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robot_rt.robot import RobotDescription

from .core import OUTCOME_NAMES, OUTCOME_RETURNED, TableTennisWorld, WorldConfig
from .goals import NOT_LANDED, achieved_goal_space, achieved_goals, check_success_radius, goal_reward, goal_space
from .human_model import HumanBehaviorModel
from .observation import build_observation, observation_bounds


class TableTennisEnv(gym.Env):
    """Cooperative rally against a simulated human (see docs/envs.md, `robot_rt.envs.table_tennis`)."""

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 25}

    def __init__(
        self,
        render_mode: str | None = None,
        human: HumanBehaviorModel | None = None,
        robot: RobotDescription | None = None,
        config: WorldConfig | None = None,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.world = TableTennisWorld(1, human=human, robot=robot, config=config, goal_conditioned=self._goal_env)
        robot = self.world.robot
        self.velocity_limit = robot.velocity_limit.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, (robot.dof,), dtype=np.float32)
        low, high = observation_bounds(robot, self.world.history)
        self._flat_space = spaces.Box(low, high, dtype=np.float32)
        self.observation_space = self._make_observation_space()
        self.metadata = dict(self.metadata, render_fps=int(round(self.world.config.policy_hz / 4)))
        self._figure = None

    _goal_env = False

    @property
    def dt(self) -> float:
        """Seconds per env step: the world's `WorldConfig.step_s`."""
        return self.world.config.step_s

    def _make_observation_space(self):
        return self._flat_space

    def joint_velocities(self, action) -> np.ndarray:
        """Env actions (fractions of the velocity limits, clipped to [-1, 1]) -> joint velocities (m/s, rad/s)."""
        return np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) * self.velocity_limit

    # --------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        world_seed = int(self.np_random.integers(0, 2**63 - 1))
        self.world.reset([0], [world_seed], keep_robot=seed is None)  # WorldConfig.keep_robot_pose
        return self._observation(), self._info()

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: expected shape {self.action_space.shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("action: contains NaN or Inf")
        reward, terminated, events = self.world.step(self.joint_velocities(a)[None])
        reward = self._reward(float(reward[0]), events)
        info = self._info(events)
        return self._observation(), reward, bool(terminated[0]), False, info

    def _reward(self, dense: float, events) -> float:
        return dense

    def _observation(self):
        w = self.world
        return build_observation(w.q[0], w.qd[0], w.detections()[0]).clip(self._flat_space.low, self._flat_space.high)

    def _info(self, events=None) -> dict:
        w = self.world
        info = {
            "rally_length": int(w.hits[0]),
            "outcome": OUTCOME_NAMES[int(w.outcome[0])],
            "ball_state": w.ball[0].copy(),
            "t_s": float(w.t[0]),
        }
        if events is not None:
            info.update({k: bool(v[0]) for k, v in events.items()})
        return info

    # --------------------------------------------------------------------------------------- render
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode")
            return None
        from .render import render_world

        frame = render_world(self.world, 0)
        if self.render_mode == "rgb_array":
            return frame
        import matplotlib.pyplot as plt

        if self._figure is None:
            self._figure = plt.figure("robot_rt table tennis")
            self._image = self._figure.gca().imshow(frame)
            self._figure.gca().axis("off")
        else:
            self._image.set_data(frame)
        plt.pause(1.0 / self.metadata["render_fps"])
        return None

    def close(self):
        if self._figure is not None:
            import matplotlib.pyplot as plt

            plt.close(self._figure)
            self._figure = None


class TableTennisGoalEnv(TableTennisEnv):
    """Goal-conditioned return: land the ball at a sampled target on the human's half."""

    _goal_env = True

    NOT_LANDED = NOT_LANDED  # achieved_goal until a return lands (robot_rt.envs.goals)

    def __init__(self, render_mode=None, success_radius_m: float = 0.3, dense_weight: float = 0.0, **kwargs):
        self.success_radius_m = check_success_radius(success_radius_m)
        self.dense_weight = float(dense_weight)
        super().__init__(render_mode=render_mode, **kwargs)

    def _make_observation_space(self):
        return spaces.Dict(
            {"observation": self._flat_space, "desired_goal": goal_space(), "achieved_goal": achieved_goal_space()}
        )

    def _observation(self):
        w = self.world
        return {
            "observation": super()._observation(),
            "desired_goal": w.goal[0].astype(np.float32),
            "achieved_goal": achieved_goals(w.landing[0], self._has_landed()),
        }

    def _has_landed(self) -> bool:
        """The return's first contact was the human's half of the table (outcome 'returned'); the world's
        `landing` also records a first contact with the floor or the robot's half (outcome 'out')."""
        w = self.world
        return bool(np.all(np.isfinite(w.landing[0])) and w.outcome[0] == OUTCOME_RETURNED)

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        """Sparse goal reward, vectorised over leading dimensions (gymnasium-robotics GoalEnv convention, for
        hindsight relabelling): 1 where a landed achieved goal lies within `success_radius_m` of the desired goal;
        never for the not-landed sentinel or where `info` ('has_landed': a dict, or one dict per transition as
        stable-baselines3's HerReplayBuffer passes them) says the return had not landed
        (`robot_rt.envs.goals.goal_reward`)."""
        return goal_reward(achieved_goal, desired_goal, self.success_radius_m, info)

    def _reward(self, dense: float, events) -> float:
        w = self.world
        sparse = 0.0
        if events["landed"][0]:
            sparse = float(self.compute_reward(w.landing[0], w.goal[0]))
        return sparse + self.dense_weight * dense

    def _info(self, events=None) -> dict:
        info = super()._info(events)
        w = self.world
        landing = w.landing[0].copy()
        has_landed = self._has_landed()
        distance = float(np.linalg.norm(landing - w.goal[0])) if has_landed else float("inf")
        info.update(
            {
                "goal": w.goal[0].copy(),
                "has_landed": has_landed,
                "landing_point": landing if has_landed else np.zeros(2),
                "distance_to_goal_m": distance,
                "success_20cm": distance <= 0.20,
                "success_30cm": distance <= 0.30,
            }
        )
        return info
