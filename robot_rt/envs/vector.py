"""Gymnasium vector environments of the table-tennis tasks: all worlds advanced by one native call per step.

Design notes: docs/envs.md, section `robot_rt.envs.vector`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from robot_rt.robot import RobotDescription

from .core import OUTCOME_NAMES, OUTCOME_RETURNED, TableTennisWorld, WorldConfig
from .goals import NOT_LANDED, achieved_goal_space, achieved_goals, check_success_radius, goal_reward, goal_space
from .human_model import HumanBehaviorModel
from .observation import observation_bounds

_OUTCOME_STR = np.array([OUTCOME_NAMES[k] for k in sorted(OUTCOME_NAMES)], dtype=object)
_EVENTS = ("hit", "landed", "limit", "new_ball")


def reset_mask(options: dict[str, Any] | None, num_envs: int) -> np.ndarray:
    """`options['reset_mask']` checked (a bool array [num_envs] with a True entry), or all True without one."""
    if options is None or "reset_mask" not in options:
        return np.ones(num_envs, dtype=bool)
    mask = np.asarray(options["reset_mask"])
    if mask.shape != (num_envs,) or mask.dtype != np.bool_:
        raise ValueError(f"options['reset_mask']: expected a bool array of shape ({num_envs},), got {mask.shape}")
    if not mask.any():
        raise ValueError("options['reset_mask']: expected at least one True entry")
    return mask


def checked_actions(actions, shape: tuple) -> np.ndarray:
    """`actions` as float64, checked before anything steps: the batch's shape, and no NaN or Inf."""
    a = np.asarray(actions, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"actions: expected shape {shape}, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("actions: contains NaN or Inf")
    return a


class TableTennisVectorEnv(VectorEnv):
    """`num_envs` cooperative-rally environments stepped together (see docs/envs.md, `robot_rt.envs.vector`)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25, "autoreset_mode": AutoresetMode.NEXT_STEP}
    _goal_env = False

    @property
    def dt(self) -> float:
        """Seconds per env step: the world's `WorldConfig.step_s`."""
        return self.world.config.step_s

    def __init__(
        self,
        num_envs: int,
        render_mode: str | None = None,
        human: HumanBehaviorModel | None = None,
        robot: RobotDescription | None = None,
        config: WorldConfig | None = None,
        max_episode_steps: int | None = None,
        backend: str = "auto",
        num_threads: int | None = None,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, (int, np.integer))
        ):
            raise ValueError(f"max_episode_steps: expected a positive int or None, got {max_episode_steps!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps: expected a positive int or None, got {max_episode_steps!r}")
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.world = TableTennisWorld(
            self.num_envs,
            human=human,
            robot=robot,
            config=config,
            goal_conditioned=self._goal_env,
            backend=backend,
            num_threads=num_threads,
        )
        robot = self.world.robot
        self.velocity_limit = robot.velocity_limit.astype(np.float64)
        # actions: joint velocities as fractions of the velocity limits (as the single env)
        self.single_action_space = spaces.Box(-1.0, 1.0, (robot.dof,), dtype=np.float32)
        low, high = observation_bounds(robot, self.world.history)
        self._flat_space = spaces.Box(low, high, dtype=np.float32)
        self.single_observation_space = self._make_observation_space()
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.metadata = dict(self.metadata, render_fps=int(round(self.world.config.policy_hz / 4)))
        self._env_rngs = [seeding.np_random()[0] for _ in range(self.num_envs)]
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._needs_reset = True
        self._actions = np.zeros(self.action_space.shape)  # joint velocities of the current step (clipped actions)

    def _make_observation_space(self):
        return self._flat_space

    # --------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | list | None = None, options: dict[str, Any] | None = None):
        n = self.num_envs
        super().reset(seed=int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else None)
        if seed is None:
            seeds = [None] * n
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed: expected an int, None or a list of {n} seeds, got {len(seeds)} seeds")
        mask = reset_mask(options, n)
        if self._needs_reset and not mask.all():
            raise ValueError("options['reset_mask']: the first reset must reset every environment")
        idx = np.nonzero(mask)[0]
        for i in idx:
            if seeds[i] is not None:
                self._env_rngs[i], _ = seeding.np_random(int(seeds[i]))
        # a seeded reset starts at home (WorldConfig.keep_robot_pose keeps the robot where it was otherwise)
        self._reset_worlds(idx, keep_robot=np.array([seeds[i] is None for i in idx], dtype=bool))
        self._autoreset[idx] = False
        self._needs_reset = False
        obs = self._observation()
        info = self._info(None, None)
        if not mask.all():  # as SyncVectorEnv: only the reset environments report infos
            info = {k: (v & mask if k.startswith("_") else v) for k, v in info.items()}
        return obs, info

    def _reset_worlds(self, idx: np.ndarray, keep_robot=True) -> None:
        if idx.size == 0:
            return
        world_seeds = [int(self._env_rngs[i].integers(0, 2**63 - 1)) for i in idx]
        self.world.reset(idx, world_seeds, keep_robot=keep_robot)
        self._elapsed[idx] = 0

    def step(self, actions):
        if self._needs_reset:
            raise gym.error.ResetNeeded("Cannot call step() before reset()")
        a = checked_actions(actions, self.action_space.shape)
        # clip to [-1, 1] and scale to joint velocities exactly as the single env's joint_velocities (np.clip's
        # values, into a buffer that world.step only reads)
        np.maximum(a, -1.0, out=self._actions)
        np.minimum(self._actions, 1.0, out=self._actions)
        np.multiply(self._actions, self.velocity_limit, out=self._actions)
        reward, terminated, events = self.world.step(self._actions)
        reset_now = np.nonzero(self._autoreset)[0]
        self._elapsed += 1
        reward = self._reward(reward, events)
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = self._elapsed >= self.max_episode_steps
        if reset_now.size:
            self._reset_worlds(reset_now)
            reward[reset_now] = 0.0
            terminated[reset_now] = False
            truncated[reset_now] = False
        obs = self._observation()
        info = self._info(events, self._autoreset.copy())
        self._autoreset = terminated | truncated
        return obs, reward, terminated, truncated, info

    def _reward(self, dense: np.ndarray, events) -> np.ndarray:
        return dense

    def _observation(self):
        # build_observation(q, qd, detections()) clipped to the bounds; one C++ pass on the native backends
        return self.world.observations()

    def _info(self, events, was_reset) -> dict:
        """Infos as SyncVectorEnv builds them from the single envs' dicts: arrays plus `_key` masks."""
        w = self.world
        n = self.num_envs
        everyone = np.ones(n, dtype=bool)
        info = {
            "rally_length": w.hits.copy(),
            "_rally_length": everyone,
            "outcome": _OUTCOME_STR[w.outcome],
            "_outcome": everyone,
            "ball_state": w.ball.copy(),
            "_ball_state": everyone,
            "t_s": w.t.copy(),
            "_t_s": everyone,
        }
        if events is not None:
            stepped = ~was_reset
            for k in _EVENTS:
                info[k] = events[k] & stepped
                info["_" + k] = stepped
        return info

    # --------------------------------------------------------------------------------------- render
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode")
            return None
        from .render import render_world

        return tuple(render_world(self.world, i) for i in range(self.num_envs))

    def close_extras(self, **kwargs):
        pass


class TableTennisGoalVectorEnv(TableTennisVectorEnv):
    """Goal-conditioned return (robot_rt/TableTennisGoal-v0), batched."""

    _goal_env = True

    NOT_LANDED = NOT_LANDED  # achieved_goal until a return lands (robot_rt.envs.goals)

    def __init__(self, num_envs: int, success_radius_m: float = 0.3, dense_weight: float = 0.0, **kwargs):
        self.success_radius_m = check_success_radius(success_radius_m)
        self.dense_weight = float(dense_weight)
        super().__init__(num_envs, **kwargs)

    def _make_observation_space(self):
        return spaces.Dict(
            {"observation": self._flat_space, "desired_goal": goal_space(), "achieved_goal": achieved_goal_space()}
        )

    def _observation(self):
        w = self.world
        return {
            "observation": super()._observation(),
            "desired_goal": w.goal.astype(np.float32),
            "achieved_goal": achieved_goals(w.landing, _landed_on_target_half(w)),
        }

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        """Sparse goal reward, vectorised (as TableTennisGoalEnv.compute_reward: never for a return that has not
        landed, `robot_rt.envs.goals.goal_reward`)."""
        return goal_reward(achieved_goal, desired_goal, self.success_radius_m, info)

    def _reward(self, dense: np.ndarray, events) -> np.ndarray:
        w = self.world
        sparse = np.where(events["landed"], self.compute_reward(np.nan_to_num(w.landing), w.goal), 0.0)
        return sparse + self.dense_weight * dense

    def _info(self, events, was_reset) -> dict:
        info = super()._info(events, was_reset)
        w = self.world
        n = self.num_envs
        everyone = np.ones(n, dtype=bool)
        landing = w.landing.copy()
        has = _landed_on_target_half(w)
        distance = np.where(has, np.linalg.norm(np.nan_to_num(landing) - w.goal, axis=1), np.inf)
        extra = {
            "goal": w.goal.copy(),
            "has_landed": has,
            "landing_point": np.where(has[:, None], np.nan_to_num(landing), 0.0),
            "distance_to_goal_m": distance,
            "success_20cm": distance <= 0.20,
            "success_30cm": distance <= 0.30,
        }
        for k, v in extra.items():
            info[k] = v
            info["_" + k] = everyone
        return info


def _landed_on_target_half(world) -> np.ndarray:
    """[N] bool: the return's first contact was the human's half of the table (outcome 'returned'). The world's
    `landing` also records a first contact with the floor or the robot's half (outcome 'out'): not a landing."""
    return np.all(np.isfinite(world.landing), axis=1) & (world.outcome == OUTCOME_RETURNED)
