"""Reusable wrappers of the table-tennis environments that make them learnable by a standard RL library in minutes.

Design notes: docs/envs.md, section `robot_rt.envs.wrappers`.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorWrapper
from gymnasium.vector.utils import batch_space

from .vector import checked_actions

# the ball values of robot_rt.envs.features.FEATURE_NAMES: ball_x .. ball_valid, cross_dt .. cross_found
BALL_FEATURE_NAMES = (
    "ball_x",
    "ball_y",
    "ball_z",
    "ball_vx",
    "ball_vy",
    "ball_vz",
    "ball_valid",
    "cross_dt",
    "cross_x",
    "cross_y",
    "cross_z",
    "cross_vx",
    "cross_vy",
    "cross_vz",
    "cross_found",
)
_BALL_LOW = np.array([-8, -4, -1, -40, -40, -40, 0, 0, -8, -4, -1, -40, -40, -40, 0], np.float32)
_BALL_HIGH = np.array([8, 4, 6, 40, 40, 40, 1, 1.5, 8, 4, 6, 40, 40, 40, 1], np.float32)


def _world(env):
    return env.unwrapped.world if hasattr(env, "unwrapped") and hasattr(env.unwrapped, "world") else env.world


def _flat_space(space):
    return space["observation"] if isinstance(space, spaces.Dict) else space


class _EpisodeTracking:
    """Which environments start an episode with the observation a step returns (next-step autoreset)."""

    def _track_reset(self, num_envs: int, options) -> np.ndarray:
        mask = np.ones(num_envs, dtype=bool)
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
        if not hasattr(self, "_autoreset") or mask.all():
            self._autoreset = np.zeros(num_envs, dtype=bool)
        else:
            self._autoreset[mask] = False
        return mask

    def _track_step(self, terminated, truncated) -> np.ndarray:
        started = self._autoreset.copy()  # these returned the first observation of a new episode
        self._autoreset = np.asarray(terminated) | np.asarray(truncated)
        return started


# ================================================================================================ ball state
class BallStateFeatures:
    """Flat observations [N, D] -> [N, D + 15]: the observation followed by the ball-state values, clipped to
    `bounds()`. Stateful (one track per environment): call once per step, `reset(mask)` at episode starts."""

    def __init__(
        self, num_envs: int, robot=None, history: int = 6, policy_hz: float = 100.0, hit_plane_x_m: float = 1.7
    ):
        from robot_rt.envs.features import FEATURE_NAMES, FeatureExtractor

        self.extractor = FeatureExtractor(
            num_envs, robot=robot, history=history, policy_hz=policy_hz, hit_plane_x_m=hit_plane_x_m
        )
        self.columns = np.array([FEATURE_NAMES.index(k) for k in BALL_FEATURE_NAMES])
        self.hit_plane_x_m = float(hit_plane_x_m)

    @staticmethod
    def extend_space(flat: spaces.Box) -> spaces.Box:
        return spaces.Box(
            np.concatenate([flat.low, _BALL_LOW]), np.concatenate([flat.high, _BALL_HIGH]), dtype=np.float32
        )

    def reset(self, mask=None) -> None:
        self.extractor.reset(mask)

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        ball = self.extractor(flat)[:, self.columns]
        return np.clip(ball, _BALL_LOW, _BALL_HIGH).astype(np.float32)

    def extend(self, flat: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(flat, dtype=np.float32), self(flat)], axis=1)


def _features_for(env, num_envs: int, hit_plane_x_m: float) -> BallStateFeatures:
    world = _world(env)
    return BallStateFeatures(
        num_envs,
        robot=world.robot,
        history=world.history,
        policy_hz=world.config.policy_hz,
        hit_plane_x_m=hit_plane_x_m,
    )


def _extended_space(space):
    if isinstance(space, spaces.Dict):
        return spaces.Dict(dict(space, observation=BallStateFeatures.extend_space(space["observation"])))
    return BallStateFeatures.extend_space(space)


class BallStateObservationVector(_EpisodeTracking, VectorWrapper):
    """Vector env wrapper: flat observation + the 15 ball-state values (docs/envs.md, `robot_rt.envs.wrappers`). For the goal env the
    values are appended to ``obs['observation']``."""

    def __init__(self, env, hit_plane_x_m: float = 1.7):
        super().__init__(env)
        self.features = _features_for(env, env.num_envs, hit_plane_x_m)
        self.single_observation_space = _extended_space(env.single_observation_space)
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)
        self._autoreset = np.zeros(env.num_envs, dtype=bool)

    def _extend(self, obs):
        if isinstance(obs, dict):
            return dict(obs, observation=self.features.extend(obs["observation"]))
        return self.features.extend(obs)

    def reset(self, *, seed=None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.features.reset(self._track_reset(self.num_envs, options))
        return self._extend(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        started = self._track_step(terminated, truncated)
        if started.any():
            self.features.reset(started)
        return self._extend(obs), reward, terminated, truncated, info

    def state_dict(self) -> dict:
        """The tracks and the episode bookkeeping (a run that snapshots the env resumes exactly)."""
        return {"features": copy.deepcopy(self.features), "autoreset": self._autoreset.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.features = copy.deepcopy(state["features"])
        self._autoreset = state["autoreset"].copy()


class BallStateObservation(gym.Wrapper):
    """Single-env version of `BallStateObservationVector` (one world)."""

    def __init__(self, env, hit_plane_x_m: float = 1.7):
        super().__init__(env)
        self.features = _features_for(env, 1, hit_plane_x_m)
        self.observation_space = _extended_space(env.observation_space)

    def _extend(self, obs):
        if isinstance(obs, dict):
            return dict(obs, observation=self.features.extend(np.asarray(obs["observation"])[None])[0])
        return self.features.extend(np.asarray(obs)[None])[0]

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.features.reset()
        return self._extend(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._extend(obs), reward, terminated, truncated, info


# ================================================================================================ residual
def _check_scale(residual_scale) -> float:
    if not (isinstance(residual_scale, (int, float)) and np.isfinite(residual_scale) and residual_scale > 0):
        raise ValueError(f"residual_scale: expected a positive finite number, got {residual_scale!r}")
    return float(residual_scale)


def residual_action(policy, obs, base, a, residual_scale: float, low, high) -> np.ndarray:
    """Env actions [N, A] = scripted actions `base` [N, A] + residual_scale x half range x clip(a, -1, 1), through
    the scripted policy's braking cap at the joint positions of `obs` (flat [N, D] or the goal env's dict), clipped
    to [low, high]. The cap works on joint velocities: env action units are mapped to them by v_max / high (the
    identity for an action space in joint velocities)."""
    flat = obs["observation"] if isinstance(obs, dict) else obs
    q = np.asarray(flat, dtype=np.float64)[:, : policy.robot.dof]
    to_qd = policy.v_max / np.asarray(high, dtype=np.float64)
    half = (np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)) / 2
    command = (base + residual_scale * half * np.clip(a, -1.0, 1.0)) * to_qd
    capped = policy.brake_to_limits(q, command).astype(np.float64) / to_qd
    return np.clip(capped, low, high)


class ResidualScriptedVector(_EpisodeTracking, VectorWrapper):
    """Vector env wrapper: actions in [-1, 1] are residuals on `BatchedScriptedPolicy` (docs/envs.md, `robot_rt.envs.wrappers`).

    Args:
        env: a `TableTennisVectorEnv` / `TableTennisGoalVectorEnv` (or a wrapper of one; the scripted policy sees
            the flat observation, plus the goal for the goal env).
        residual_scale: the residual's share of the action range (0.2: at most 20 % of the half range).
        params: `ScriptedParams` (or vectors) of the scripted policy (default: its tuned defaults)."""

    def __init__(self, env, residual_scale: float = 0.2, params=None):
        super().__init__(env)
        from robot_rt.envs.scripted import BatchedScriptedPolicy

        self.residual_scale = _check_scale(residual_scale)
        world = _world(env)
        self.policy = BatchedScriptedPolicy(env.num_envs, robot=world.robot, config=world.config, params=params)
        box = env.single_action_space
        self._low, self._high = box.low.astype(np.float64), box.high.astype(np.float64)
        self._half = (self._high - self._low) / 2
        self.single_action_space = spaces.Box(-1.0, 1.0, box.shape, dtype=np.float32)
        self.action_space = batch_space(self.single_action_space, env.num_envs)
        self._obs = None
        self._autoreset = np.zeros(env.num_envs, dtype=bool)

    def scripted_actions(self) -> np.ndarray:
        """The scripted policy's actions [N, A] for the current observations (advances its state: once a step)."""
        return np.asarray(self.policy(self._obs), dtype=np.float64)

    def _combine(self, base: np.ndarray, a: np.ndarray) -> np.ndarray:
        return residual_action(self.policy, self._obs, base, a, self.residual_scale, self._low, self._high)

    def reset(self, *, seed=None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.policy.reset(self._track_reset(self.num_envs, options))
        self._obs = obs
        return obs, info

    def step(self, actions):
        a = checked_actions(actions, self.action_space.shape)
        env_action = self._combine(self.scripted_actions(), a)
        obs, reward, terminated, truncated, info = self.env.step(env_action)
        started = self._track_step(terminated, truncated)
        if started.any():
            self.policy.reset(started)
        self._obs = obs
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict:
        """The scripted policy's state and the episode bookkeeping (a run that snapshots the env resumes exactly)."""
        return {
            "policy": copy.deepcopy(self.policy),
            "obs": copy.deepcopy(self._obs),
            "autoreset": self._autoreset.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy = copy.deepcopy(state["policy"])
        self._obs = copy.deepcopy(state["obs"])
        self._autoreset = state["autoreset"].copy()


class ResidualScripted(gym.Wrapper):
    """Single-env version of `ResidualScriptedVector` (one world)."""

    def __init__(self, env, residual_scale: float = 0.2, params=None):
        super().__init__(env)
        from robot_rt.envs.scripted import BatchedScriptedPolicy

        self.residual_scale = _check_scale(residual_scale)
        world = _world(env)
        self.policy = BatchedScriptedPolicy(1, robot=world.robot, config=world.config, params=params)
        box = env.action_space
        self._low, self._high = box.low.astype(np.float64), box.high.astype(np.float64)
        self._half = (self._high - self._low) / 2
        self.action_space = spaces.Box(-1.0, 1.0, box.shape, dtype=np.float32)
        self._obs = None

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.policy.reset()
        self._obs = obs
        return obs, info

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: expected shape {self.action_space.shape}, got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("action: contains NaN or Inf")
        base = np.asarray(self.policy(self._obs), dtype=np.float64)
        obs1 = (
            {k: np.asarray(v)[None] for k, v in self._obs.items()}
            if isinstance(self._obs, dict)
            else np.asarray(self._obs)[None]
        )
        env_action = residual_action(self.policy, obs1, base[None], a[None], self.residual_scale, self._low, self._high)
        obs, reward, terminated, truncated, info = self.env.step(env_action[0].astype(np.float32))
        self._obs = obs
        return obs, reward, terminated, truncated, info
