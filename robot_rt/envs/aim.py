"""`robot_rt/TableTennisAimGoal-v0`: goal-conditioned returns with one decision per ball, the aim of the scripted
hitter (a shot-level option for standard RL libraries).

Every episode is one served ball. The scripted controller (`BatchedScriptedPolicy`) tracks the ball, plans the
contact and swings; the agent chooses once per ball where that swing aims. Timeline of one episode:

1. `reset`: a new serve and a new goal; the controller plays from the serve, aiming at the goal, for `decision_s`
   seconds (long enough for its tracker to plan the contact, short enough to come before the swing of the earliest
   ball: contacts come 0.41-0.91 s after the serve, the swing starts `swing_s` = 0.19 s before). The observation is
   what the controller knows then.
2. `step(action)`: the lob target becomes desired_goal + action * aim_range_m (action in [-1, 1]^2; 0 is the
   controller's own aim at the goal), and the controller plays the ball to its end: the return lands, goes out,
   is missed, or `max_episode_s` passes. The episode then terminates: one step per episode.

`achieved_goal` is the landing point on the human's half once the return has landed there and `NOT_LANDED` before,
and `compute_reward` never rewards a return that has not landed (`robot_rt.envs.goals`), so stable-baselines3's
`HerReplayBuffer` relabels correctly (with one-step episodes every relabelled goal is the episode's own landing).

The observation (float32, `AIM_FEATURES`): the controller's planned contact (position, ball velocity, seconds to it),
whether a plan exists, the incoming spin estimate (rad/s / 100) and the robot's joint positions. All of it comes from
the camera's detections and the robot's own state, as on a real robot; nothing reads the simulator's true ball.

Design notes: docs/envs.md, section `robot_rt.envs.aim`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .core import OUTCOME_NAMES
from .goals import NOT_LANDED, achieved_goal_space, achieved_goals, check_success_radius, goal_reward, goal_space
from .scripted import BatchedScriptedPolicy, ScriptedParams
from .vector import TableTennisGoalVectorEnv, checked_actions, reset_mask

AIM_FEATURES = (
    "plan_x_m",
    "plan_y_m",
    "plan_z_m",
    "plan_vx_mps",
    "plan_vy_mps",
    "plan_vz_mps",
    "plan_time_left_s",
    "has_plan",
    "spin_x_per100radps",
    "spin_y_per100radps",
    "spin_z_per100radps",
)
_SPIN_SCALE = 100.0
_OUTCOME_STR = np.array(OUTCOME_NAMES, dtype=object)


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


class TableTennisAimGoalVectorEnv(VectorEnv):
    """`num_envs` aim-level goal environments played together (see the module docstring).

    `aim_range_m` (x, y): the lob target's largest offset from the goal; `decision_s`: when, after the serve, the
    agent chooses; `max_episode_s`: a ball that has not ended by then ends the episode unlanded (truncated);
    `params`/`tracker`: the scripted controller's (`BatchedScriptedPolicy`); other keyword arguments go to
    `TableTennisGoalVectorEnv` (human, robot, config, backend, num_threads)."""

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        aim_range_m=(0.5, 0.5),
        decision_s: float = 0.2,
        max_episode_s: float = 3.0,
        success_radius_m: float = 0.3,
        params=None,
        tracker: str = "fit",
        **env_kwargs,
    ):
        if env_kwargs.pop("max_episode_steps", None) not in (None, 1):  # gym.make_vec passes the registered 1
            raise ValueError("max_episode_steps: every episode here is one step (None or 1; see max_episode_s)")
        self.success_radius_m = check_success_radius(success_radius_m)
        self.decision_s = _check_positive(decision_s, "decision_s")
        self.max_episode_s = _check_positive(max_episode_s, "max_episode_s")
        if self.max_episode_s <= self.decision_s:
            raise ValueError(f"max_episode_s: expected more than decision_s ({decision_s}), got {max_episode_s!r}")
        aim = np.asarray(aim_range_m, dtype=np.float64)
        if aim.shape != (2,) or not np.all(np.isfinite(aim)) or np.any(aim <= 0):
            raise ValueError(f"aim_range_m: expected two positive finite numbers (x, y) in m, got {aim_range_m!r}")
        self.aim_range_m = aim
        self.env = TableTennisGoalVectorEnv(num_envs, success_radius_m=self.success_radius_m, **env_kwargs)
        self.num_envs = self.env.num_envs
        self.world = self.env.world
        self.scripted = BatchedScriptedPolicy(
            self.num_envs,
            robot=self.world.robot,
            config=self.world.config,
            params=ScriptedParams() if params is None else params,
            estimate_spin=True,
            tracker=tracker,
        )
        robot = self.world.robot
        n_feat = len(AIM_FEATURES)
        low = np.concatenate([[-5, -5, -1, -40, -40, -40, -1, 0], [-20.0] * 3, robot.position_min]).astype(np.float32)
        high = np.concatenate([[5, 5, 5, 40, 40, 40, 5, 1], [20.0] * 3, robot.position_max]).astype(np.float32)
        assert low.shape == (n_feat + robot.dof,)
        self.single_action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.single_observation_space = spaces.Dict(
            {
                "observation": spaces.Box(low, high, dtype=np.float32),
                "desired_goal": goal_space(),
                "achieved_goal": achieved_goal_space(),
            }
        )
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._obs_low, self._obs_high = low, high
        self._decision_steps = max(1, int(round(self.decision_s / self.dt)))
        self._max_steps = max(self._decision_steps + 1, int(round(self.max_episode_s / self.dt)))
        self._inner_obs = None
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._needs_reset = True
        self.render_mode = None

    @property
    def dt(self) -> float:
        """Seconds per step of the controller (`WorldConfig.step_s`); an episode's one step spans many."""
        return self.world.config.step_s

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        """Sparse goal reward, vectorised (`robot_rt.envs.goals.goal_reward`: never for a return that has not
        landed)."""
        return goal_reward(achieved_goal, desired_goal, self.success_radius_m, info)

    # ------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | list | None = None, options: dict[str, Any] | None = None):
        n = self.num_envs
        if not reset_mask(options, n).all():
            # every episode is one step: all environments end together, so they restart together
            raise ValueError("options['reset_mask']: the aim env restarts every environment together")
        super().reset(seed=int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else None)
        self._inner_obs, _ = self.env.reset(seed=seed)
        self.scripted.reset()
        self._needs_reset = False
        self._autoreset[:] = False
        for _ in range(self._decision_steps):
            # the controller's own aim (the goal) until the decision; a serve never ends this early
            self._inner_obs, _, _, _, _ = self.env.step(self.scripted(self._inner_obs))
        return self._observation(achieved_goals(np.zeros((n, 2)), np.zeros(n, bool))), {}

    def step(self, actions):
        if self._needs_reset:
            raise gym.error.ResetNeeded("Cannot call step() before reset()")
        a = checked_actions(actions, self.action_space.shape)
        n = self.num_envs
        if self._autoreset.all():  # gymnasium's next-step autoreset: this step starts the next episodes
            obs, info = self.reset()
            return obs, np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), info
        offset = np.clip(a, -1.0, 1.0) * self.aim_range_m
        goal = self.world.goal.copy()
        target = goal + offset
        ended = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        landing = np.zeros((n, 2))
        has_landed = np.zeros(n, dtype=bool)
        outcome = np.full(n, "", dtype=object)
        for _ in range(self._max_steps - self._decision_steps):
            self._inner_obs, _, term, trunc, info = self.env.step(self.scripted(self._inner_obs, goals=target))
            now = (term | trunc) & ~ended
            if now.any():  # the terminal observation of the inner env; later steps of these envs are not used
                has_landed[now] = info["has_landed"][now]
                landing[now] = info["landing_point"][now]
                outcome[now] = info["outcome"][now]
                ended |= now
            if ended.all():
                break
        if not ended.all():
            truncated = ~ended
            outcome[truncated] = _OUTCOME_STR[self.world.outcome[truncated]]
        achieved = achieved_goals(landing, has_landed)
        distance = np.where(has_landed, np.linalg.norm(landing - goal, axis=1), np.inf)
        info = {
            "has_landed": has_landed,
            "landing_point": np.where(has_landed[:, None], landing, 0.0),
            "distance_to_goal_m": distance,
            "success_20cm": distance <= 0.20,
            "success_30cm": distance <= 0.30,
            "aim_offset_m": offset,
            "outcome": outcome,
        }
        reward = self.compute_reward(achieved, goal, info)
        terminated = ~truncated
        self._autoreset[:] = True
        return self._observation(achieved, goal), reward, terminated, truncated, info

    # ------------------------------------------------------------------------------------------- observation
    def features(self) -> np.ndarray:
        """float32 [N, len(AIM_FEATURES) + dof]: what the controller knows now (see the module docstring)."""
        s = self.scripted
        has_plan = np.isfinite(s.plan_t)
        left = np.where(has_plan, np.nan_to_num(s.plan_t) - s.t, 0.0)
        plan_p = np.where(has_plan[:, None], s.plan_p, 0.0)
        plan_v = np.where(has_plan[:, None], s.plan_v, 0.0)
        spin = s.incoming_spin.estimate / _SPIN_SCALE
        q = np.asarray(self._inner_obs["observation"], dtype=np.float64)[:, s.layout["q"]]
        feats = np.concatenate([plan_p, plan_v, left[:, None], has_plan[:, None], spin, q], axis=1)
        return np.clip(feats, self._obs_low, self._obs_high).astype(np.float32)

    def _observation(self, achieved: np.ndarray, goal: np.ndarray | None = None) -> dict:
        return {
            "observation": self.features(),
            "desired_goal": (self.world.goal if goal is None else goal).astype(np.float32),
            "achieved_goal": np.asarray(achieved, dtype=np.float32),
        }

    def close_extras(self, **kwargs):
        self.env.close()


class TableTennisAimGoalEnv(gym.Env):
    """One aim-level goal environment (`robot_rt/TableTennisAimGoal-v0`): `TableTennisAimGoalVectorEnv` of one."""

    metadata = {"render_modes": []}

    NOT_LANDED = NOT_LANDED

    def __init__(self, render_mode: str | None = None, **kwargs):
        if render_mode is not None:
            raise ValueError(f"render_mode: this env renders nothing (the rally envs do), got {render_mode!r}")
        self.vector = TableTennisAimGoalVectorEnv(1, **kwargs)
        self.observation_space = self.vector.single_observation_space
        self.action_space = self.vector.single_action_space
        self.success_radius_m = self.vector.success_radius_m
        self.render_mode = None

    @property
    def dt(self) -> float:
        return self.vector.dt

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        return self.vector.compute_reward(achieved_goal, desired_goal, info)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs, _ = self.vector.reset(seed=seed)
        return {k: v[0] for k, v in obs.items()}, {}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,):
            raise ValueError(f"action: expected shape (2,), got {a.shape}")
        obs, reward, term, trunc, info = self.vector.step(a[None])
        one = {k: (v[0] if isinstance(v, np.ndarray) else v) for k, v in info.items()}
        one = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in one.items()}
        return {k: v[0] for k, v in obs.items()}, float(reward[0]), bool(term[0]), bool(trunc[0]), one

    def close(self):
        self.vector.close()
