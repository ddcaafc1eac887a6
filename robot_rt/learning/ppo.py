"""PPO on the native batched table-tennis environment: `robot-rt train ppo` (CleanRL-style, one file).

Algorithm (Schulman et al. 2017, as CleanRL's ppo_continuous_action): per iteration, T steps of N environments
(`HistoryRollout`: one native call steps all N; the policy sees an 8-step observation history, see
`robot_rt.learning.neural_policy`), then E epochs of minibatch SGD (Adam) on
    L = -min(r A, clip(r, 1 - c, 1 + c) A) + v_coef L_V - ent_coef H,   r = pi(a|s) / pi_old(a|s)
with A the generalised advantage estimate (`gae`, normalised per minibatch), L_V the squared error to the
returns A + V_old (optionally clipped around V_old, `value_loss`), gradient norm clipping, a linearly annealed
learning rate and an optional KL early stop. Observations are normalised by a running mean/std (updated after
each iteration from that rollout, so a rollout and its update see the same statistics), rewards by the running
standard deviation of the discounted return (as gymnasium's NormalizeReward); both are saved with the policy.

Episode boundaries: the vector env resets an environment on the step after its episode ended (next-step
autoreset). That step is no MDP transition and is left out of the loss; the step that ended the episode saw the
true final observation, whose value bootstraps a time-limit truncation (a termination bootstraps 0).

Speed (why it reaches the issue's 50k env-steps/s with the updates on 2 cores): the physics of all N worlds is
one native call per step, the observation history is a view of the rollout tensor (no per-env Python, no copies
per environment), inference runs on all N environments at once, and the update's cost is set by
`update_fraction` (the share of the rollout's samples each epoch visits): with thousands of environments the
rollout is large and cheap, so a minibatch budget keeps the update from dominating. bench/bench_learning.py
measures it against stable-baselines3 on the same environment.

Sharding (`torchrun --nproc_per_node W $(which robot-rt) train ppo ...`): rank r steps the environments
r, r + W, ... (each seeded by its global index), minibatches are drawn over the global (step, environment)
grid from a generator every rank shares, each rank computes its part of the minibatch's loss scaled by the
global sample count, and the gradients are summed (all-reduce, gloo): W processes take the steps one process
would take, up to floating-point summation order (tests/test_learning_ppo.py checks 2 against 1).

Run directory (`RunDir`): config.json, log.jsonl (one record per iteration), checkpoints/latest.pt (model,
optimiser, normalisers, every generator, the environments' full state: `--resume` continues bit for bit),
policy.pt (the deployable `NeuralEnvPolicy`, `robot_rt.learning.neural_policy.load_policy`), results.json and
plots/learning_curve.png.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_rt.learning import distributed as dist
from robot_rt.learning.neural_policy import (
    Critic,
    GaussianActor,
    PolicyConfig,
    RunningMeanStd,
    normalized_history,
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
    encoder: str = "mlp"
    channels: tuple = (32, 32)
    hidden: tuple = (128,)
    init_log_std: float = -0.5
    max_episode_steps: int = 600
    human: str = "default"
    # reward terms of the environment (robot_rt.envs.core.WorldConfig; its defaults)
    reward_hit: float = 1.0
    reward_land: float = 2.0
    reward_shaping: float = 0.1
    shaping_length_m: float = 0.15
    action_cost: float = 1e-3
    penalty_limit: float = 1.0
    seed: int = 0
    backend: str = "auto"
    torch_threads: int = 1  # 0: torch's default (all cores); see the module docstring
    checkpoint_every: int = 10  # iterations
    stagger_start: bool = True  # first episodes truncated at random steps: episode phases spread over the envs

    def __post_init__(self) -> None:
        positive = ("total_steps", "num_envs", "rollout_steps", "epochs", "minibatch_size", "history")
        for name in positive + ("max_episode_steps", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected a positive int, got {v!r}")
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


REWARD_FIELDS = ("reward_hit", "reward_land", "reward_shaping", "shaping_length_m", "action_cost", "penalty_limit")


def make_env(cfg, num_envs: int):
    """The batched rally environment of a trainer config (human model, reward terms, episode cap, backend)."""
    from robot_rt.envs import HumanBehaviorModel, WorldConfig
    from robot_rt.envs.vector import TableTennisVectorEnv

    human = HumanBehaviorModel.default() if cfg.human == "default" else HumanBehaviorModel.real_player()
    world = WorldConfig(**{k: getattr(cfg, k) for k in REWARD_FIELDS if hasattr(cfg, k)})
    return TableTennisVectorEnv(
        num_envs, human=human, config=world, max_episode_steps=cfg.max_episode_steps, backend=cfg.backend
    )


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
    """PPO with its environments, networks, optimiser and run directory (see the module docstring)."""

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
                span = min(cfg.max_episode_steps, int(round(self.env.world.config.policy_hz)))
                rng = np.random.default_rng([cfg.seed, 99])
                cut = rng.integers(1, span + 1, cfg.num_envs)[self.env_ids]
                self.env._elapsed[:] = cfg.max_episode_steps - cut
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

    def _policy_input(self, raw: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        return normalized_history(raw, age, self.obs_norm)

    # ------------------------------------------------------------------------------------------ rollout
    @torch.no_grad()
    def collect(self) -> dict:
        cfg, ro = self.cfg, self.rollout
        t_steps, n = cfg.rollout_steps, ro.n
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
        for j in range(t_steps):
            x = self._policy_input(*ro.window(j))
            mean = self.actor(x)
            values[j] = self.critic(x)
            eps = torch.randn((cfg.num_envs, mean.shape[1]), generator=self.noise)
            a = mean + std * (eps if self.world == 1 else eps[self._env_index])
            actions[j] = a
            logp[j] = torch.distributions.Normal(mean, std).log_prob(a).sum(-1)
            t0 = time.perf_counter()
            r, term, trunc, rs, _ = ro.step(j, a)
            env_s += time.perf_counter() - t0
            d = term | trunc
            raw_reward += float(np.sum(np.where(rs, 0.0, r)))
            if cfg.norm_reward:
                r = self.reward_scaler(r, d)
            rewards[j] = torch.from_numpy(np.asarray(r, dtype=np.float32))
            terminated[j] = torch.from_numpy(term)
            done[j] = torch.from_numpy(d)
            reset_step[j] = torch.from_numpy(rs)
        values[t_steps] = self.critic(self._policy_input(*ro.window(t_steps)))
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
    def update(self, batch: dict) -> dict:
        cfg, ro = self.cfg, self.rollout
        t_steps, n_global, w = cfg.rollout_steps, cfg.num_envs, self.world
        total = t_steps * n_global
        per_epoch = max(1, int(round(cfg.update_fraction * total)))
        num_mb = max(1, math.ceil(per_epoch / cfg.minibatch_size))
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.iteration)  # the same on every rank
        clip_v = cfg.clip_coef if cfg.clip_vloss else None
        stats = torch.zeros(6, dtype=torch.float64)  # pg, v, entropy, kl, clipfrac, samples
        stopped = False
        for _epoch in range(cfg.epochs):
            order = torch.randperm(total, generator=gen)[:per_epoch]
            for chunk in order.tensor_split(num_mb):
                t_idx, e_glob = chunk // n_global, chunk % n_global
                mine = (e_glob % w) == self.rank
                t_idx, e_loc = t_idx[mine], e_glob[mine] // w
                keep = batch["valid"][t_idx, e_loc]
                t_idx, e_loc = t_idx[keep], e_loc[keep]
                adv = batch["advantages"][t_idx, e_loc]
                moments = self._all_reduce(
                    torch.stack([torch.tensor(float(len(adv))), adv.double().sum(), adv.double().square().sum()])
                )
                count = float(moments[0])
                if count < 2:
                    continue
                if cfg.norm_adv:
                    mean = moments[1] / count
                    var = (moments[2] - count * mean * mean) / (count - 1)
                    adv = (adv - float(mean)) / (math.sqrt(max(float(var), 0.0)) + 1e-8)
                raw, age = ro.gather(t_idx, e_loc)
                x = self._policy_input(raw, age)
                dist_new = self.actor.distribution(x)
                new_logp = dist_new.log_prob(batch["actions"][t_idx, e_loc]).sum(-1)
                log_ratio = new_logp - batch["logp"][t_idx, e_loc]
                ratio = log_ratio.exp()
                pg = clipped_policy_loss(ratio, adv, cfg.clip_coef)
                new_v = self.critic(x)
                vl = value_loss(new_v, batch["values"][t_idx, e_loc], batch["returns"][t_idx, e_loc], clip_v)
                ent = dist_new.entropy().sum(-1)
                loss = (pg.sum() + cfg.vf_coef * vl.sum() - cfg.ent_coef * ent.sum()) / count
                self.optimizer.zero_grad(set_to_none=False)
                loss.backward()
                if self.world > 1:
                    _set_grads(self.params, self._all_reduce(_flat_grads(self.params)))
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).sum()
                    clipped = ((ratio - 1.0).abs() > cfg.clip_coef).float().sum()
                    part = torch.stack(
                        [pg.sum(), vl.sum(), ent.sum(), approx_kl, clipped, torch.tensor(float(len(adv)))]
                    ).double()
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

    def policy(self, num_envs: int = 1):
        """The current deterministic policy as a `NeuralEnvPolicy` (a copy: training does not change it)."""
        from robot_rt.learning.neural_policy import policy_from_state, policy_state

        space = self.env.single_action_space
        return policy_from_state(policy_state(self.actor, self.obs_norm, space.low, space.high), num_envs=num_envs)

    def export_policy(self, path) -> Path:
        space = self.env.single_action_space
        return save_policy(
            path,
            self.actor,
            self.obs_norm,
            space.low,
            space.high,
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
    defaults = PPOConfig()
    d("--out", required=True, help="run directory")
    d("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    d("--smoke", action="store_true", help="tiny sizes: every stage in seconds (CI)")
    d("--no-progress", action="store_true", help="no progress bar")
    for f in fields(PPOConfig):
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            d(flag, type=_parse_bool, default=value, help=f"(default {value})")
        elif isinstance(value, tuple):
            d(
                flag,
                type=lambda s: tuple(int(x) for x in s.split(",") if x),
                default=value,
                help=f"comma list (default {','.join(map(str, value))})",
            )
        else:
            d(flag, type=type(value), default=value, help=f"(default {value})")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def config_from_args(args) -> PPOConfig:
    values = {f.name: getattr(args, f.name) for f in fields(PPOConfig)}
    if args.smoke:
        defaults = PPOConfig()
        values.update({k: v for k, v in SMOKE.items() if values[k] == getattr(defaults, k)})
    return PPOConfig(**values)


def run(args) -> int:
    cfg = config_from_args(args)
    dist.init_from_env()
    try:
        trainer = PPOTrainer(cfg, args.out, resume=args.resume, progress=not args.no_progress)
        results = trainer.train()
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
