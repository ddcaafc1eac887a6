"""The batched vector envs as a stable-baselines3 `VecEnv` (optional dependency: ``pip install .[rl]``).

Design notes: docs/envs.md, section `robot_rt.envs.sb3`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from stable_baselines3.common.vec_env import VecEnv
except ImportError as err:  # pragma: no cover - exercised only without the optional dependency
    raise ImportError(
        "robot_rt.envs.sb3 needs stable-baselines3: install the 'rl' extra (pip install -e '.[rl]')"
    ) from err


class SB3VecEnv(VecEnv):
    """stable-baselines3 view of a gymnasium vector env with next-step autoreset (docs/envs.md, `robot_rt.envs.sb3`)."""

    def __init__(self, venv):
        from gymnasium.vector import AutoresetMode

        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.NEXT_STEP:
            raise ValueError(f"venv: expected a vector env with next-step autoreset, got {mode}")
        self.venv = venv
        self.render_mode = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions = None
        self._seed: int | None = None
        try:
            self._radius = float(self._lookup("success_radius_m"))
        except AttributeError:
            self._radius = None

    def reset(self):
        seed = self._seed
        self._seed = None
        obs, _ = self.venv.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        return obs

    def seed(self, seed: int | None = None):
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        done = np.asarray(terminated) | np.asarray(truncated)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            ended = np.nonzero(done)[0]
            rally = info.get("rally_length")
            outcome = info.get("outcome")
            for i in ended:
                final = {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]
                infos[i]["terminal_observation"] = final
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                if rally is not None:
                    infos[i]["rally_length"] = int(rally[i])
                if outcome is not None:
                    infos[i]["outcome"] = str(outcome[i])
                for key in ("has_landed", "success_20cm", "success_30cm", "distance_to_goal_m"):
                    if key in info:
                        infos[i][key] = info[key][i]
                if "distance_to_goal_m" in info and self._radius is not None:  # SB3's success-rate logging
                    infos[i]["is_success"] = bool(info["distance_to_goal_m"][i] <= self._radius)
            fresh, _ = self.venv.reset(options={"reset_mask": done})
            if isinstance(obs, dict):
                obs = {k: np.where(_rows(done, v), fresh[k], v) for k, v in obs.items()}
            else:
                obs = np.where(_rows(done, obs), fresh, obs)
        return obs, np.asarray(reward, dtype=np.float32), done, infos

    def close(self) -> None:
        self.venv.close()

    # ------------------------------------------------------------------ attribute access (one underlying env)
    def _lookup(self, name: str):
        """`name` on the vector env or the first wrapper/env inside it that has it."""
        env = self.venv
        while True:
            if hasattr(env, name):
                return getattr(env, name)
            if not hasattr(env, "env"):
                raise AttributeError(f"{type(self.venv).__name__} has no attribute {name!r}")
            env = env.env

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        value = self._lookup(attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        method = self._lookup(method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self):
        return list(self.venv.render() or [])


def _rows(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    return mask.reshape((-1,) + (1,) * (np.ndim(like) - 1))
