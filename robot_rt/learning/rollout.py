"""Rollouts of history policies on the native batched environment, for the neural trainers (PPO, BGS).

Design notes: docs/learning.md, section `robot_rt.learning.rollout`.
"""

from __future__ import annotations

import numpy as np
import torch

from robot_rt.envs.core import OUTCOME_NAMES


class EpisodeStats:
    """Per-environment accumulators of the running episodes, and the list of finished episodes."""

    def __init__(self, n: int):
        self.ret = np.zeros(n)
        self.length = np.zeros(n, dtype=np.int64)
        self.hits = np.zeros(n, dtype=np.int64)
        self.finished: list[dict] = []

    def add(self, reward, hit, reset_step) -> None:
        live = ~reset_step
        self.ret += np.where(live, reward, 0.0)
        self.length += live
        self.hits += np.asarray(hit, dtype=np.int64) & live

    def close(self, done, rally_length, outcome, truncated) -> None:
        for i in np.nonzero(done)[0]:
            self.finished.append(
                {
                    "env": int(i),
                    "return": float(self.ret[i]),
                    "length": int(self.length[i]),
                    "hits": int(self.hits[i]),
                    "rally_length": int(rally_length[i]),
                    "outcome": str(outcome[i]),
                    "truncated": bool(truncated[i]),
                }
            )
        self.ret[done] = 0.0
        self.length[done] = 0
        self.hits[done] = 0

    def pop(self) -> list[dict]:
        out, self.finished = self.finished, []
        return out

    def state_dict(self) -> dict:
        return {"ret": self.ret.copy(), "length": self.length.copy(), "hits": self.hits.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.ret[:], self.length[:], self.hits[:] = state["ret"], state["length"], state["hits"]


def summarize_episodes(episodes: list[dict]) -> dict:
    """Means over finished episodes: return, length, rally length, paddle contacts, outcome fractions."""
    if not episodes:
        return {"episodes": 0}
    outcome_counts: dict[str, int] = {}
    for e in episodes:
        outcome_counts[e["outcome"]] = outcome_counts.get(e["outcome"], 0) + 1
    n = len(episodes)
    return {
        "episodes": n,
        "return_mean": float(np.mean([e["return"] for e in episodes])),
        "length_mean": float(np.mean([e["length"] for e in episodes])),
        "rally_mean": float(np.mean([e["rally_length"] for e in episodes])),
        "hits_mean": float(np.mean([e["hits"] for e in episodes])),
        "hit_rate": float(np.mean([e["hits"] > 0 for e in episodes])),
        "return_rate": float(np.mean([e["rally_length"] > 0 for e in episodes])),
        "outcomes": {k: v / n for k, v in sorted(outcome_counts.items())},
    }


class HistoryRollout:
    """Steps a vector env, keeping the raw observation windows of a rollout in one tensor (docs/learning.md, `robot_rt.learning.rollout`)."""

    def __init__(self, env, history: int, horizon: int):
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history: expected a positive int, got {history!r}")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon: expected a positive int, got {horizon!r}")
        self.env = env
        self.n = env.num_envs
        self.history = history
        self.horizon = horizon
        space = env.single_observation_space
        if not hasattr(space, "shape") or space.shape is None or len(space.shape) != 1:
            raise ValueError("env: expected a flat Box observation space (robot_rt/TableTennis-v0)")
        self.obs_dim = int(space.shape[0])
        low = env.single_action_space.low.astype(np.float64)
        high = env.single_action_space.high.astype(np.float64)
        # policy actions live in [-1, 1]; the env's Box is [low, high]
        self.action_centre = (high + low) / 2
        self.action_half_range = (high - low) / 2
        self.frames = torch.zeros(history + horizon, self.n, self.obs_dim)
        self.age = torch.zeros(history + horizon, self.n, dtype=torch.int64)
        self.autoreset = np.zeros(self.n, dtype=bool)  # the next step resets these environments
        self.stats = EpisodeStats(self.n)

    def start(self, seeds) -> None:
        obs, _ = self.env.reset(seed=seeds)
        self.frames.zero_()
        self.age.fill_(-1)
        self.frames[self.history - 1] = torch.from_numpy(np.asarray(obs, dtype=np.float32))
        self.age[self.history - 1] = 0
        self.autoreset[:] = False

    def window(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw frames [N, H, D] oldest first, age [N]) of the observation at rollout step j (0..T)."""
        h = self.history
        return self.frames[j : j + h].transpose(0, 1), self.age[j + h - 1]

    def env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """Policy actions (unit box) -> the env's action units."""
        return self.action_centre + self.action_half_range * actions.double().numpy()

    def step(self, j: int, actions: torch.Tensor):
        """Advances every environment with `actions` [N, A] (unit box); the new observation becomes row j + H.
        Returns (reward [N], terminated [N], truncated [N], reset_step [N], info)."""
        reset_step = self.autoreset.copy()
        obs, reward, terminated, truncated, info = self.env.step(self.env_actions(actions))
        h = self.history
        self.frames[j + h] = torch.from_numpy(np.asarray(obs, dtype=np.float32))
        reset_t = torch.from_numpy(reset_step)
        self.age[j + h] = torch.where(reset_t, 0, torch.clamp(self.age[j + h - 1] + 1, max=h))
        done = terminated | truncated
        self.stats.add(reward, info["hit"], reset_step)
        if done.any():
            outcome = info["outcome"]
            self.stats.close(done, info["rally_length"], outcome, truncated & ~terminated)
        self.autoreset = done
        return reward, terminated, truncated, reset_step, info

    def roll(self) -> None:
        """The last H rows (the current window) become the first rows of the next rollout."""
        h, t = self.history, self.horizon
        self.frames[:h] = self.frames[t : t + h].clone()
        self.age[:h] = self.age[t : t + h].clone()

    def gather(
        self, t_idx: torch.Tensor, env_idx: torch.Tensor, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows [B, H, D] of `source` (default: the raw frames; or a tensor laid out like them, e.g. the frames
        normalised) and ages [B] of the samples (rollout step t_idx [B], environment env_idx [B])."""
        src = self.frames if source is None else source
        h, n, d = self.history, self.n, src.shape[-1]
        rows = ((t_idx[:, None] + torch.arange(h)) * n + env_idx[:, None]).reshape(-1)
        # index_select on the flat [rows, D] view: ~6x faster than the equivalent 2-D advanced indexing
        windows = src.reshape(-1, d).index_select(0, rows).view(len(t_idx), h, d)
        return windows, self.age[t_idx + h - 1, env_idx]

    def state_dict(self) -> dict:
        return {
            "frames": self.frames.clone(),
            "age": self.age.clone(),
            "autoreset": self.autoreset.copy(),
            "stats": self.stats.state_dict(),
            "env": vector_env_state(self.env),
        }

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["frames"].shape) != tuple(self.frames.shape):
            raise ValueError(
                f"rollout state: frames {tuple(state['frames'].shape)} do not fit this run's {tuple(self.frames.shape)}"
            )
        self.frames.copy_(state["frames"])
        self.age.copy_(state["age"])
        self.autoreset[:] = state["autoreset"]
        self.stats.load_state_dict(state["stats"])
        load_vector_env_state(self.env, state["env"])


# ================================================================================================ env snapshots
_ENV_FIELDS = ("_elapsed", "_autoreset", "_actions")


def _wrappers(env) -> list:
    """The wrappers around the base vector env, outermost first."""
    chain = []
    while hasattr(env, "env") and not hasattr(env, "world"):
        chain.append(env)
        env = env.env
    return chain


def vector_env_state(env) -> dict:
    """Everything that evolves in a `TableTennisVectorEnv` and its world: every NumPy array of the world (state,
    camera ring, per-step outputs), the world's and the env's generators, the time-limit counters; plus the state of
    stateful wrappers around it (`robot_rt.envs.wrappers`: trackers, the scripted policy)."""
    base = env.unwrapped
    world = base.world
    return {
        "world_arrays": {k: v.copy() for k, v in vars(world).items() if isinstance(v, np.ndarray)},
        "world_rngs": [g.bit_generator.state for g in world.rngs],
        "env_rngs": [g.bit_generator.state for g in base._env_rngs],
        "env_arrays": {k: getattr(base, k).copy() for k in _ENV_FIELDS},
        "needs_reset": bool(base._needs_reset),
        "outcome_names": dict(OUTCOME_NAMES),
        "wrappers": [w.state_dict() if hasattr(w, "state_dict") else None for w in _wrappers(env)],
    }


def load_vector_env_state(env, state: dict) -> None:
    """Restores `vector_env_state(env)` in place (arrays are copied into the existing buffers, which the native
    step reads)."""
    base = env.unwrapped
    world = base.world
    arrays = state["world_arrays"]
    for key, value in arrays.items():
        target = getattr(world, key, None)
        if not isinstance(target, np.ndarray) or target.shape != value.shape or target.dtype != value.dtype:
            raise ValueError(f"env state: world array {key!r} does not fit this environment")
    if len(state["world_rngs"]) != len(world.rngs) or len(state["env_rngs"]) != len(base._env_rngs):
        raise ValueError("env state: the number of environments differs")
    wrappers = _wrappers(env)
    if len(state.get("wrappers", [])) != len(wrappers):
        raise ValueError("env state: the environment's wrappers differ")
    for key, value in arrays.items():
        np.copyto(getattr(world, key), value)
    for g, s in zip(world.rngs, state["world_rngs"]):
        g.bit_generator.state = s
    for g, s in zip(base._env_rngs, state["env_rngs"]):
        g.bit_generator.state = s
    for key, value in state["env_arrays"].items():
        np.copyto(getattr(base, key), value)
    base._needs_reset = bool(state["needs_reset"])
    for w, s in zip(wrappers, state["wrappers"]):
        if s is not None:
            w.load_state_dict(s)


# ================================================================================================ evaluation
def play_episodes(env, policy, seeds) -> list[dict]:
    """Plays one episode per environment of the vector env `env` (len(seeds) environments; environment i reset
    with seeds[i]) with a batched policy (`policy(obs [N, D]) -> env actions [N, A]`, `policy.reset()`; e.g. a
    `NeuralEnvPolicy(num_envs=N)` or a `BatchedScriptedPolicy(N)`); returns per-episode figures in seed order."""
    seeds = [int(s) for s in seeds]
    if len(seeds) != env.num_envs:
        raise ValueError(f"seeds: expected {env.num_envs} seeds (one per environment), got {len(seeds)}")
    obs, _ = env.reset(seed=seeds)
    policy.reset()
    n = env.num_envs
    active = np.ones(n, dtype=bool)
    ret = np.zeros(n)
    length = np.zeros(n, dtype=np.int64)
    hits = np.zeros(n, dtype=np.int64)
    rally = np.zeros(n, dtype=np.int64)
    outcome = np.empty(n, dtype=object)
    while active.any():
        obs, reward, terminated, truncated, info = env.step(np.asarray(policy(obs), dtype=np.float64))
        ret += np.where(active, reward, 0.0)
        length += active
        hits += np.asarray(info["hit"], dtype=np.int64) & active
        ended = (terminated | truncated) & active
        rally[ended] = np.asarray(info["rally_length"])[ended]
        outcome[ended] = np.asarray(info["outcome"])[ended]
        active &= ~ended
    return [
        {
            "seed": s,
            "return": float(ret[i]),
            "length": int(length[i]),
            "hits": int(hits[i]),
            "rally_length": int(rally[i]),
            "outcome": str(outcome[i]),
        }
        for i, s in enumerate(seeds)
    ]


def first_ball_outcomes(env, policy, seeds) -> list[str]:
    """Plays the first ball of one episode per environment of the vector env `env` (environment i reset with
    seeds[i]; `policy` as for `play_episodes`) until it is decided: the robot missed it, put it out or hit a limit,
    or returned it (the human answered: a new ball, 'none'; or missed: 'returned'); an episode cut by its step cap
    is 'none' too. Returns the outcome name (`OUTCOME_NAMES`) per environment, in seed order. Every ball a robot
    faces is a fresh draw of the human model's launches, so these give the robot's failure rate per ball."""
    seeds = [int(s) for s in seeds]
    if len(seeds) != env.num_envs:
        raise ValueError(f"seeds: expected {env.num_envs} seeds (one per environment), got {len(seeds)}")
    obs, _ = env.reset(seed=seeds)
    policy.reset()
    active = np.ones(env.num_envs, dtype=bool)
    outcome = np.empty(env.num_envs, dtype=object)
    while active.any():
        obs, _, terminated, truncated, info = env.step(np.asarray(policy(obs), dtype=np.float64))
        decided = (np.asarray(info["new_ball"]) | terminated | truncated) & active
        outcome[decided] = np.asarray(info["outcome"])[decided]
        active &= ~decided
    return [str(o) for o in outcome]


def episode_summary(episodes: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Figures of `play_episodes` results with 95 % intervals: first-ball return rate (the robot returned the serve
    onto the human's half; Wilson), mean rally length (returns per rally; percentile bootstrap), contact rate."""
    from robot_rt.learning.stats import wilson_interval

    n = len(episodes)
    rally = np.array([e["rally_length"] for e in episodes], dtype=np.float64)
    returned = int((rally > 0).sum())
    contact = int(sum(e["hits"] > 0 for e in episodes))
    boots = rally[np.random.default_rng(seed).integers(0, n, (n_boot, n))].mean(axis=1) if n else np.zeros(1)
    outcomes: dict[str, int] = {}
    for e in episodes:
        outcomes[e["outcome"]] = outcomes.get(e["outcome"], 0) + 1
    return {
        "episodes": n,
        "first_ball_return_rate": returned / max(n, 1),
        "first_ball_return_rate_ci95": list(wilson_interval(returned, n)),
        "rally_mean": float(rally.mean()) if n else 0.0,
        "rally_mean_ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
        "contact_rate": contact / max(n, 1),
        "contact_rate_ci95": list(wilson_interval(contact, n)),
        "outcomes": dict(sorted(outcomes.items())),
    }
