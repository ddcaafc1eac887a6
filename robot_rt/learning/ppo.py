"""PPO on the native batched table-tennis environment: `robot-rt train ppo` (CleanRL-style, one file).

Design notes: docs/learning.md, section `robot_rt.learning.ppo`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_rt.learning import distributed as dist
from robot_rt.learning.config_flags import add_config_flags, config_from_flags
from robot_rt.learning.neural_policy import (
    Critic,
    GaussianActor,
    PolicyConfig,
    RunningMeanStd,
    history_mask,
    save_policy,
)
from robot_rt.learning.rollout import HistoryRollout, summarize_episodes
from robot_rt.learning.rundir import RunDir

CHECKPOINT_VERSION = 1


# ================================================================================================ pieces
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns [T, N].

    rewards, terminated, done [T, N]: step t's reward, whether it ended the episode by termination, and whether it
    ended it at all (termination or truncation); values [T + 1, N]: V(s_t), with values[T] the bootstrap and, for
    a step that ended its episode, values[t + 1] the value of its final observation:
        delta_t = r_t + gamma (1 - terminated_t) V_{t+1} - V_t,   A_t = delta_t + gamma lam (1 - done_t) A_{t+1}."""
    steps = rewards.shape[0]
    if values.shape[0] != steps + 1 or values.shape[1:] != rewards.shape[1:]:
        raise ValueError(f"values: expected shape {(steps + 1,) + tuple(rewards.shape[1:])}, got {tuple(values.shape)}")
    not_term = 1.0 - terminated.to(values.dtype)
    not_done = 1.0 - done.to(values.dtype)
    adv = torch.zeros_like(values)
    for t in range(steps - 1, -1, -1):
        delta = rewards[t] + gamma * not_term[t] * values[t + 1] - values[t]
        adv[t] = delta + gamma * lam * not_done[t] * adv[t + 1]
    adv = adv[:steps]
    return adv, adv + values[:steps]


def clipped_policy_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """Per-sample PPO surrogate loss max(-A r, -A clip(r, 1 - c, 1 + c))."""
    return torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef))


def value_loss(
    new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_coef: float | None
) -> torch.Tensor:
    """Per-sample value loss 0.5 (V - R)^2, or with clipping 0.5 max((V - R)^2, (V_old + clip(V - V_old, +-c) - R)^2)."""
    unclipped = (new_values - returns).square()
    if clip_coef is None:
        return 0.5 * unclipped
    clipped = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped - returns).square())


class RewardScaler:
    """Divides rewards by the running standard deviation of the discounted return (as gymnasium's NormalizeReward),
    with the scale frozen during a rollout and the statistics updated after it from every rank's returns (so all
    ranks scale alike and a rollout is scaled consistently)."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0):
        self.gamma = gamma
        self.clip = clip
        self.returns = np.zeros(num_envs)
        self.rms = RunningMeanStd(1)
        self._seen: list[np.ndarray] = []

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(float(self.rms.var[0]) + 1e-8)

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward
        self._seen.append(self.returns.copy())
        self.returns[done] = 0.0
        return np.clip(reward * self.scale, -self.clip, self.clip)

    def end_rollout(self) -> None:
        """Adds the discounted returns seen in this rollout on every rank to the statistics."""
        seen = torch.from_numpy(np.concatenate(self._seen)[:, None]) if self._seen else torch.zeros(0, 1)
        self._seen = []
        for m in dist.gather(RunningMeanStd.moments(seen)):
            self.rms.update_from_moments(*m)

    def state_dict(self) -> dict:
        return {"returns": self.returns.copy(), "rms": self.rms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.returns[:] = state["returns"]
        self.rms.load_state_dict(state["rms"])


# ================================================================================================ config
@dataclass
class PPOConfig:
    total_steps: int = 30_000_000  # env steps over all environments and ranks
    num_envs: int = 4096  # N, over all ranks
    rollout_steps: int = 32  # T
    epochs: int = 4
    minibatch_size: int = 8192
    update_fraction: float = 0.25  # share of the rollout's samples each epoch visits (1: all, CleanRL)
    update_chunk: int = 8  # minibatches are made of chunks of this many consecutive steps of one env
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float = 0.0  # 0: no early stop
    norm_adv: bool = True
    norm_reward: bool = True
    history: int = 8
    encoder: str = "frame"
    channels: tuple = (16,)
    hidden: tuple = (64,)
    init_log_std: float = -0.5
    max_episode_steps: int = 600
    human: str = "default"
    serve_spread: float = 1.0  # curriculum: the human model's launch spread scaled (0: the same serve every time)
    # reward terms of the environment (robot_rt.envs.core.WorldConfig; its defaults)
    reward_hit: float = 1.0
    reward_land: float = 2.0
    reward_shaping: float = 0.1
    shaping_length_m: float = 0.15
    action_cost: float = 1e-3
    penalty_limit: float = 1.0
    # learning aids of robot_rt.envs.wrappers (the exported policy applies them too)
    ball_state: bool = False  # append the tracker's ball state and predicted hitting-plane crossing
    residual_scale: float = 0.0  # > 0: actions are residuals on the scripted policy (this share of the range)
    scripted: str = "default"  # the residual's scripted base: a ScriptedParams preset ('default' or 'rally')
    seed: int = 0
    backend: str = "auto"
    torch_threads: int = 1  # 0: torch's default (all cores); see docs/learning.md, `robot_rt.learning.ppo`
    env_threads: int = 0  # native env worker threads (0: all cores; 1 is faster on a saturated machine)
    checkpoint_every: int = 10  # iterations
    stagger_start: bool = True  # first episodes truncated at random steps: episode phases spread over the envs

    def __post_init__(self) -> None:
        positive = ("total_steps", "num_envs", "rollout_steps", "epochs", "minibatch_size", "history")
        for name in positive + ("max_episode_steps", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected a positive int, got {v!r}")
        if isinstance(self.update_chunk, bool) or not isinstance(self.update_chunk, int) or self.update_chunk < 1:
            raise ValueError(f"--update-chunk: expected a positive int, got {self.update_chunk!r}")
        if self.rollout_steps % self.update_chunk:
            raise ValueError(
                f"--update-chunk: expected a divisor of --rollout-steps ({self.rollout_steps}), got {self.update_chunk}"
            )
        if not 0.0 < self.update_fraction <= 1.0:
            raise ValueError(f"--update-fraction: expected a number in (0, 1], got {self.update_fraction!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')}: expected a number in [0, 1], got {getattr(self, name)}")
        for name in ("lr", "clip_coef"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')}: expected > 0, got {getattr(self, name)}")
        if self.human not in ("default", "real_player"):
            raise ValueError(f"--human: expected 'default' or 'real_player', got {self.human!r}")
        if not (np.isfinite(self.serve_spread) and self.serve_spread >= 0):
            raise ValueError(f"--serve-spread: expected a finite number >= 0, got {self.serve_spread!r}")
        if not (np.isfinite(self.residual_scale) and self.residual_scale >= 0):
            raise ValueError(f"--residual-scale: expected a finite number >= 0, got {self.residual_scale!r}")
        check_scripted_preset(self.scripted)
        self.channels, self.hidden = tuple(self.channels), tuple(self.hidden)

    def policy_config(self, obs_dim: int, action_dim: int) -> PolicyConfig:
        return PolicyConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            history=self.history,
            encoder=self.encoder,
            channels=self.channels,
            hidden=self.hidden,
            init_log_std=self.init_log_std,
        )

    @property
    def iterations(self) -> int:
        return max(1, self.total_steps // (self.num_envs * self.rollout_steps))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["hidden"] = list(self.channels), list(self.hidden)
        return d


def check_scripted_preset(name) -> None:
    from robot_rt.envs.scripted import SCRIPTED_PRESETS

    if name not in SCRIPTED_PRESETS:
        raise ValueError(f"--scripted: expected one of {SCRIPTED_PRESETS}, got {name!r}")


def scripted_base_params(cfg):
    """The residual's scripted base parameters of a trainer config: None for the defaults, else the preset's vector."""
    name = getattr(cfg, "scripted", "default")
    if name == "default":
        return None
    from robot_rt.envs.scripted import ScriptedParams

    return ScriptedParams.preset(name).to_vector().tolist()


REWARD_FIELDS = ("reward_hit", "reward_land", "reward_shaping", "shaping_length_m", "action_cost", "penalty_limit")


def make_env(cfg, num_envs: int):
    """The batched rally environment of a trainer config (human model, reward terms, episode cap, backend)."""
    from robot_rt.envs import HumanBehaviorModel, WorldConfig
    from robot_rt.envs.vector import TableTennisVectorEnv

    human = HumanBehaviorModel.default() if cfg.human == "default" else HumanBehaviorModel.real_player()
    if getattr(cfg, "serve_spread", 1.0) != 1.0:
        human = human.with_spread(cfg.serve_spread)
    world = WorldConfig(**{k: getattr(cfg, k) for k in REWARD_FIELDS if hasattr(cfg, k)})
    env = TableTennisVectorEnv(
        num_envs,
        human=human,
        config=world,
        max_episode_steps=cfg.max_episode_steps,
        backend=cfg.backend,
        num_threads=getattr(cfg, "env_threads", 0) or None,
    )
    if getattr(cfg, "residual_scale", 0.0) > 0:  # innermost: the scripted policy reads the raw observation
        from robot_rt.envs.wrappers import ResidualScriptedVector

        env = ResidualScriptedVector(env, residual_scale=cfg.residual_scale, params=scripted_base_params(cfg))
    if getattr(cfg, "ball_state", False):
        from robot_rt.envs.wrappers import BallStateObservationVector

        env = BallStateObservationVector(env)
    return env


def _flat_grads(params) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in params])


def _set_grads(params, flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


# ================================================================================================ trainer
class PPOTrainer:
    """PPO with its environments, networks, optimiser and run directory (see docs/learning.md, `robot_rt.learning.ppo`)."""

    def __init__(self, cfg: PPOConfig, out: str | Path | None = None, resume: bool = False, progress: bool = True):
        self.cfg = cfg
        self.rank, self.world = dist.rank(), dist.world_size()
        if cfg.num_envs < self.world:
            raise ValueError(
                f"--num-envs: expected at least one environment per rank ({self.world}), got {cfg.num_envs}"
            )
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.env_ids = dist.shard_indices(cfg.num_envs)  # global indices of this rank's environments
        self.env = make_env(cfg, len(self.env_ids))
        self.rollout = HistoryRollout(self.env, cfg.history, cfg.rollout_steps)
        obs_dim, action_dim = self.rollout.obs_dim, int(self.env.single_action_space.shape[0])
        torch.manual_seed(cfg.seed)  # network initialisation: the same on every rank
        self.policy_cfg = cfg.policy_config(obs_dim, action_dim)
        self.actor = GaussianActor(self.policy_cfg)
        self.critic = Critic(self.policy_cfg)
        self.params = list(self.actor.parameters()) + list(self.critic.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5)
        self.obs_norm = RunningMeanStd(obs_dim)
        self.reward_scaler = RewardScaler(len(self.env_ids), cfg.gamma)
        # action noise: every rank draws the noise of all N environments and keeps its rows, so an environment's
        # noise depends on its global index only (W processes act as one)
        self.noise = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
        self._norm: torch.Tensor | None = None  # normalised rollout frames (see _frame_buffers)
        self._env_index = torch.as_tensor(self.env_ids, dtype=torch.int64)
        self.iteration = 0
        self.global_step = 0
        self.elapsed_s = 0.0
        self.curve: list[dict] = []
        self.progress = progress and dist.is_main()
        self.rundir = (
            RunDir(out, {"method": "ppo", **cfg.to_dict(), "world_size": self.world}, resume=resume)
            if (out is not None and dist.is_main())
            else None
        )
        self.out = None if out is None else Path(out)
        state = None
        if resume and out is not None:
            state = dist.broadcast(self.rundir.load_checkpoint() if self.rundir is not None else None)
        if state is not None:
            self.load_state_dict(state)
        else:
            self.rollout.start([cfg.seed * 1_000_003 + i for i in self.env_ids])
            if cfg.stagger_start:
                # all N serves start together; without this the episode phases stay aligned for a long time and
                # every rollout sees the same phase (biased statistics, and a batch of correlated samples)
                # (the first episode of each env is cut after a uniform 1..span steps, span ~ one ball's flight)
                base = self.env.unwrapped
                span = min(cfg.max_episode_steps, int(round(base.world.config.policy_hz)))
                rng = np.random.default_rng([cfg.seed, 99])
                cut = rng.integers(1, span + 1, cfg.num_envs)[self.env_ids]
                base._elapsed[:] = cfg.max_episode_steps - cut
            first = self.rollout.frames[cfg.history - 1]
            self._merge_obs_moments(first)  # sensible scales from the first observations

    # ------------------------------------------------------------------------------------------ helpers
    def _merge_obs_moments(self, frames: torch.Tensor) -> None:
        for m in dist.gather(RunningMeanStd.moments(frames)):
            self.obs_norm.update_from_moments(*m)

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(tensor)
        return tensor

    # ------------------------------------------------------------------------------------------ rollout
    def _frame_buffers(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised frames [H + T, N, D] of the rollout buffer and each network's per-frame features; the first H
        rows (carried from the last rollout) are recomputed under the current statistics and weights."""
        ro, h = self.rollout, self.cfg.history
        if self._norm is None:
            self._norm = torch.zeros_like(ro.frames)
        self._norm[:h] = self.obs_norm.normalize(ro.frames[:h])
        feats = []
        for enc in (self.actor.encoder, self.critic.encoder):
            if enc.frame is None:
                feats.append(self._norm)  # identity frame features: the normalised frames themselves
            else:
                buf = torch.empty(ro.frames.shape[0], ro.n, enc.frame_width)
                buf[:h] = enc.frame_features(self._norm[:h])
                feats.append(buf)
        return self._norm, feats

    def _add_frame(self, row: int, norm: torch.Tensor, feats: list[torch.Tensor]) -> None:
        norm[row] = self.obs_norm.normalize(self.rollout.frames[row])
        for enc, buf in zip((self.actor.encoder, self.critic.encoder), feats):
            if buf is not norm:
                buf[row] = enc.frame_features(norm[row])

    def _window_features(self, feats: list[torch.Tensor], j: int) -> list[torch.Tensor]:
        h = self.cfg.history
        mask = history_mask(self.rollout.age[j + h - 1], h).unsqueeze(-1)
        return [buf[j : j + h].transpose(0, 1) * mask for buf in feats]

    @torch.no_grad()
    def collect(self) -> dict:
        cfg, ro = self.cfg, self.rollout
        t_steps, n, h = cfg.rollout_steps, ro.n, cfg.history
        actions = torch.zeros(t_steps, n, self.policy_cfg.action_dim)
        logp = torch.zeros(t_steps, n)
        values = torch.zeros(t_steps + 1, n)
        rewards = torch.zeros(t_steps, n)
        terminated = torch.zeros(t_steps, n, dtype=torch.bool)
        done = torch.zeros(t_steps, n, dtype=torch.bool)
        reset_step = torch.zeros(t_steps, n, dtype=torch.bool)
        std = self.actor.log_std.exp()
        env_s = 0.0
        raw_reward = 0.0  # env reward (before scaling) summed over the MDP steps, for the curve
        norm, feats = self._frame_buffers()
        for j in range(t_steps):
            fa, fc = self._window_features(feats, j)
            mean = self.actor.mean_from_features(fa)
            values[j] = self.critic.value_from_features(fc)
            eps = torch.randn((cfg.num_envs, mean.shape[1]), generator=self.noise)
            a = mean + std * (eps if self.world == 1 else eps[self._env_index])
            actions[j] = a
            logp[j] = torch.distributions.Normal(mean, std).log_prob(a).sum(-1)
            t0 = time.perf_counter()
            r, term, trunc, rs, _ = ro.step(j, a)
            env_s += time.perf_counter() - t0
            self._add_frame(j + h, norm, feats)
            d = term | trunc
            raw_reward += float(np.sum(np.where(rs, 0.0, r)))
            if cfg.norm_reward:
                r = self.reward_scaler(r, d)
            rewards[j] = torch.from_numpy(np.asarray(r, dtype=np.float32))
            terminated[j] = torch.from_numpy(term)
            done[j] = torch.from_numpy(d)
            reset_step[j] = torch.from_numpy(rs)
        values[t_steps] = self.critic.value_from_features(self._window_features(feats, t_steps)[1])
        adv, ret = gae(rewards, values, terminated, done, cfg.gamma, cfg.gae_lambda)
        return {
            "actions": actions,
            "logp": logp,
            "values": values[:t_steps],
            "advantages": adv,
            "returns": ret,
            "valid": ~reset_step,
            "env_s": env_s,
            "reward_sum": self._all_reduce(torch.tensor([raw_reward, float((~reset_step).sum())], dtype=torch.float64)),
        }

    # ------------------------------------------------------------------------------------------ update
    def _chunk_windows(self, enc, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder output [k L] of k chunks of L consecutive rollout steps: per-frame features of each chunk's
        L + H - 1 frames `frames` [L + H - 1, k, D] computed once, its L windows taken as views (unfold), masked by
        `mask` [L, k, H]."""
        h, chunk = self.cfg.history, mask.shape[0]
        f = enc.frame_features(frames)  # [L + H - 1, k, C]
        windows = f.unfold(0, h, 1).transpose(-1, -2)  # [L, k, H, C]: window i = frames i .. i + H - 1
        windows = windows * mask.unsqueeze(-1)
        assert windows.shape[0] == chunk
        # explicit sizes: a rank may hold no chunk of a minibatch (k = 0), where -1 would be ambiguous
        return enc.body(windows.reshape(chunk * mask.shape[1], h, windows.shape[-1]))

    def update(self, batch: dict) -> dict:
        """E epochs over `update_fraction` of the samples, in minibatches of random chunks of `update_chunk`
        consecutive steps of one environment: a chunk's L + H - 1 frames get their features once (instead of H
        times, once per window), its windows are views. Chunks keep minibatches nearly as varied as single samples
        (measured: whole-environment minibatches learned worse in the smoke setting)."""
        cfg, ro = self.cfg, self.rollout
        t_steps, n_global, w, h, chunk = cfg.rollout_steps, cfg.num_envs, self.world, cfg.history, cfg.update_chunk
        chunks_per_env = t_steps // chunk
        total = chunks_per_env * n_global
        per_epoch = max(1, int(round(cfg.update_fraction * total)))
        num_mb = max(1, math.ceil(per_epoch * chunk / cfg.minibatch_size))
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.iteration)  # the same on every rank
        clip_v = cfg.clip_coef if cfg.clip_vloss else None
        stats = torch.zeros(6, dtype=torch.float64)  # pg, v, entropy, kl, clipfrac, samples
        stopped = False
        n_local = ro.n
        flat_norm = self._norm.reshape(-1, self._norm.shape[-1])
        span = torch.arange(chunk + h - 1)
        steps_in = torch.arange(chunk)
        for _epoch in range(cfg.epochs):
            order = torch.randperm(total, generator=gen)[:per_epoch]
            for part_ids in order.tensor_split(num_mb):
                c_idx, e_glob = part_ids // n_global, part_ids % n_global
                mine = (e_glob % w) == self.rank
                c_idx, envs = c_idx[mine], e_glob[mine] // w  # this rank's chunks of the minibatch
                t0 = c_idx * chunk  # first rollout step of each chunk
                t_idx = t0[None, :] + steps_in[:, None]  # [L, k] rollout steps
                e_idx = envs[None, :].expand_as(t_idx)
                weight = batch["valid"][t_idx, e_idx].reshape(-1).float()  # autoreset steps weigh 0
                adv = batch["advantages"][t_idx, e_idx].reshape(-1)
                moments = self._all_reduce(
                    torch.stack(
                        [weight.double().sum(), (adv * weight).double().sum(), (adv.square() * weight).double().sum()]
                    )
                )
                count = float(moments[0])
                if count < 2:
                    continue
                if cfg.norm_adv:
                    mean = moments[1] / count
                    var = (moments[2] - count * mean * mean) / (count - 1)
                    adv = (adv - float(mean)) / (math.sqrt(max(float(var), 0.0)) + 1e-8)
                rows = ((t0[None, :] + span[:, None]) * n_local + envs[None, :]).reshape(-1)
                x_env = flat_norm.index_select(0, rows).view(
                    chunk + h - 1, len(envs), flat_norm.shape[-1]
                )  # normalised
                mask = history_mask(ro.age[h - 1 + t_idx, e_idx], h)  # [L, k, H]
                mean_a = self.actor.mean(self._chunk_windows(self.actor.encoder, x_env, mask))
                dist_new = torch.distributions.Normal(mean_a, self.actor.log_std.exp().expand_as(mean_a))
                new_logp = dist_new.log_prob(batch["actions"][t_idx, e_idx].reshape(-1, mean_a.shape[1])).sum(-1)
                log_ratio = new_logp - batch["logp"][t_idx, e_idx].reshape(-1)
                ratio = log_ratio.exp()
                pg = clipped_policy_loss(ratio, adv, cfg.clip_coef) * weight
                new_v = self.critic.value(self._chunk_windows(self.critic.encoder, x_env, mask)).squeeze(-1)
                old_v = batch["values"][t_idx, e_idx].reshape(-1)
                vl = value_loss(new_v, old_v, batch["returns"][t_idx, e_idx].reshape(-1), clip_v) * weight
                ent = dist_new.entropy().sum(-1) * weight
                loss = (pg.sum() + cfg.vf_coef * vl.sum() - cfg.ent_coef * ent.sum()) / count
                self.optimizer.zero_grad(set_to_none=False)
                loss.backward()
                if self.world > 1:
                    _set_grads(self.params, self._all_reduce(_flat_grads(self.params)))
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = (((ratio - 1) - log_ratio) * weight).sum()
                    clipped = (((ratio - 1.0).abs() > cfg.clip_coef).float() * weight).sum()
                    part = torch.stack([pg.sum(), vl.sum(), ent.sum(), approx_kl, clipped, weight.sum()]).double()
                    mb = self._all_reduce(part.clone())
                stats += mb
                if cfg.target_kl > 0 and float(mb[3] / mb[5]) > cfg.target_kl:
                    stopped = True
                    break
            if stopped:
                break
        samples = max(float(stats[5]), 1.0)
        return {
            "policy_loss": float(stats[0] / samples),
            "value_loss": float(stats[1] / samples),
            "entropy": float(stats[2] / samples),
            "approx_kl": float(stats[3] / samples),
            "clipfrac": float(stats[4] / samples),
            "kl_stop": stopped,
        }

    # ------------------------------------------------------------------------------------------ loop
    def train_iteration(self) -> dict:
        cfg = self.cfg
        if cfg.anneal_lr:
            frac = 1.0 - self.iteration / cfg.iterations
            for g in self.optimizer.param_groups:
                g["lr"] = frac * cfg.lr
        t0, c0 = time.perf_counter(), time.process_time()
        batch = self.collect()
        t1, c1 = time.perf_counter(), time.process_time()
        losses = self.update(batch)
        t2, c2 = time.perf_counter(), time.process_time()
        # observation statistics for the next rollout: this rollout's new observations, all ranks
        self._merge_obs_moments(self.rollout.frames[cfg.history :].reshape(-1, self.rollout.obs_dim))
        if cfg.norm_reward:
            self.reward_scaler.end_rollout()
        self.rollout.roll()
        self.iteration += 1
        steps = cfg.rollout_steps * cfg.num_envs
        self.global_step += steps
        wall = time.perf_counter() - t0
        self.elapsed_s += wall
        episodes = [e for part in dist.gather(self.rollout.stats.pop()) for e in part]
        with torch.no_grad():
            valid = batch["valid"]
            y, v = batch["returns"][valid], batch["values"][valid]
            explained = float(1 - (y - v).var() / y.var()) if y.numel() > 1 and y.var() > 0 else float("nan")
        record = {
            "iteration": self.iteration,
            "global_step": self.global_step,
            "steps_per_s": steps / wall,
            "rollout_s": t1 - t0,
            "env_s": batch["env_s"],
            "update_s": t2 - t1,
            "rollout_cpu_s": c1 - c0,
            "update_cpu_s": c2 - c1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "action_std": float(self.actor.log_std.detach().exp().mean()),
            "explained_variance": explained,
            "reward_per_step": float(batch["reward_sum"][0] / max(float(batch["reward_sum"][1]), 1.0)),
            **losses,
            **summarize_episodes(episodes),
        }
        self.curve.append(
            {
                k: record.get(k)
                for k in (
                    "iteration",
                    "global_step",
                    "reward_per_step",
                    "return_mean",
                    "rally_mean",
                    "hit_rate",
                    "episodes",
                )
            }
        )
        return record

    def train(self, iterations: int | None = None) -> dict:
        cfg = self.cfg
        stop = cfg.iterations if iterations is None else min(cfg.iterations, self.iteration + iterations)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.iterations, initial=self.iteration, desc="ppo", dynamic_ncols=True, file=sys.stderr)
        try:
            while self.iteration < stop:
                record = self.train_iteration()
                if self.rundir is not None:
                    self.rundir.log(**record)
                if bar is not None:
                    bar.set_postfix(
                        sps=f"{record['steps_per_s']:.0f}",
                        ret=f"{record.get('return_mean', float('nan')):.2f}",
                        hit=f"{record.get('hit_rate', float('nan')):.2f}",
                        rally=f"{record.get('rally_mean', float('nan')):.2f}",
                    )
                    bar.update(1)
                if self.out is not None and (self.iteration % cfg.checkpoint_every == 0 or self.iteration == stop):
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        return self.results()

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "iteration": self.iteration,
            "global_step": self.global_step,
            "elapsed_s": self.elapsed_s,
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_norm": self.obs_norm.state_dict(),
            "curve": list(self.curve),
            "world_size": self.world,
            # per rank: the environments, the rollout window, the reward scaler and the action noise generator
            "ranks": dist.gather(
                {
                    "rollout": self.rollout.state_dict(),
                    "reward_scaler": self.reward_scaler.state_dict(),
                    "noise": self.noise.get_state(),
                }
            ),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint: expected version {CHECKPOINT_VERSION}, got {state.get('version')!r}")
        if state["world_size"] != self.world:
            raise ValueError(
                f"--resume: the checkpoint was written by {state['world_size']} processes, this run has {self.world}"
            )
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])
        self.elapsed_s = float(state["elapsed_s"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.curve = list(state["curve"])
        mine = state["ranks"][self.rank]
        self.rollout.load_state_dict(mine["rollout"])
        self.reward_scaler.load_state_dict(mine["reward_scaler"])
        self.noise.set_state(mine["noise"])

    def save_checkpoint(self) -> None:
        state = self.state_dict()  # collective: every rank takes part
        if self.rundir is not None:
            self.rundir.save_checkpoint("latest", state)
            self.export_policy(self.rundir.path / "policy.pt")

    def _policy_kwargs(self) -> dict:
        space = self.env.unwrapped.single_action_space
        return {
            "action_low": space.low,
            "action_high": space.high,
            "ball_state": self.cfg.ball_state,
            "residual_scale": self.cfg.residual_scale,
            "scripted_params": scripted_base_params(self.cfg) if self.cfg.residual_scale > 0 else None,
        }

    def policy(self, num_envs: int = 1):
        """The current deterministic policy as a `NeuralEnvPolicy` on raw observations (a copy)."""
        from robot_rt.learning.neural_policy import policy_from_state, policy_state

        return policy_from_state(policy_state(self.actor, self.obs_norm, **self._policy_kwargs()), num_envs=num_envs)

    def export_policy(self, path) -> Path:
        return save_policy(
            path,
            self.actor,
            self.obs_norm,
            **self._policy_kwargs(),
            method="ppo",
            env_id="robot_rt/TableTennis-v0",
            iteration=self.iteration,
            global_step=self.global_step,
        )

    def results(self) -> dict:
        return {"method": "ppo", "config": self.cfg.to_dict(), "curve": self.curve, "elapsed_s": self.elapsed_s}


# ================================================================================================ plots
def plot_curve(curve: list[dict], path, title: str) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robot_rt._io import atomic_write_bytes

    steps = [c["global_step"] / 1e6 for c in curve]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
    for ax, key, label in zip(
        axes,
        ("return_mean", "hit_rate", "rally_mean"),
        ("episode return", "episodes with a paddle contact", "rally length (returns landed)"),
    ):
        ax.plot(steps, [np.nan if c.get(key) is None else c[key] for c in curve], marker=".")
        ax.set_xlabel("env steps (millions)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


# ================================================================================================ CLI
SMOKE = dict(total_steps=4 * 64 * 16, num_envs=64, rollout_steps=16, minibatch_size=256, max_episode_steps=200)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument
    d("--out", required=True, help="run directory")
    d("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    d("--smoke", action="store_true", help="tiny sizes: every stage in seconds (CI)")
    d("--no-progress", action="store_true", help="no progress bar")
    d("--eval-episodes", type=int, default=256, help="deterministic evaluation before and after (0: none)")
    add_config_flags(parser, PPOConfig)


def config_from_args(args) -> PPOConfig:
    return config_from_flags(args, PPOConfig, SMOKE)


def evaluate_policy(policy_factory, cfg, episodes: int, seed: int = 10**6) -> dict:
    """The deterministic policy (`policy_factory(n)` -> a batched env policy on raw observations, e.g.
    `PPOTrainer.policy`) on `episodes` fixed serves of the plain rally env of `cfg` (its human model, reward terms
    and episode cap; no wrappers: an exported policy applies its own), one episode each: `episode_summary`."""
    from dataclasses import replace

    from robot_rt.learning.rollout import episode_summary, play_episodes

    plain = replace(cfg, ball_state=False, residual_scale=0.0) if hasattr(cfg, "ball_state") else cfg
    env = make_env(plain, episodes)
    try:
        return episode_summary(play_episodes(env, policy_factory(episodes), range(seed, seed + episodes)))
    finally:
        env.close()


def run(args) -> int:
    cfg = config_from_args(args)
    dist.init_from_env()
    try:
        trainer = PPOTrainer(cfg, args.out, resume=args.resume, progress=not args.no_progress)
        if args.smoke and args.eval_episodes == 256:
            args.eval_episodes = 8
        initial = None
        if args.eval_episodes and dist.is_main() and trainer.iteration == 0:
            initial = evaluate_policy(trainer.policy, cfg, args.eval_episodes)
        results = trainer.train()
        if args.eval_episodes and dist.is_main():
            results["evaluation"] = {
                "episodes_seed": 10**6,
                "initial": initial,
                "final": evaluate_policy(trainer.policy, cfg, args.eval_episodes),
            }
            print(f"ppo: deterministic policy on {args.eval_episodes} fixed serves: {results['evaluation']}")
        if trainer.rundir is not None:
            trainer.rundir.write_results(results)
            plot_curve(
                results["curve"],
                trainer.rundir.plot_path("learning_curve.png"),
                f"PPO, TableTennis-v0, seed {cfg.seed}",
            )
    finally:
        dist.shutdown()
    if dist.is_main() and results["curve"]:
        last = results["curve"][-1]
        print(
            f"ppo: {last['global_step']} steps in {results['elapsed_s']:.0f} s; last iteration: return "
            f"{last.get('return_mean')}, hit rate {last.get('hit_rate')}, rally {last.get('rally_mean')}; "
            f"policy: {Path(args.out) / 'policy.pt'}"
        )
    return 0
