"""BGS (the seed's i-S2R optimiser) over a neural history policy on the native batched environment: `robot-rt
train bgs`.

Design notes: docs/learning.md, section `robot_rt.learning.bgs`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, vmap

from robot_rt.learning import distributed as dist
from robot_rt.learning.config_flags import add_config_flags, config_from_flags
from robot_rt.learning.es import BGS, ESConfig
from robot_rt.learning.neural_policy import GaussianActor, PolicyConfig, RunningMeanStd, policy_input, save_policy
from robot_rt.learning.ppo import check_scripted_preset, make_env, plot_curve, scripted_base_params
from robot_rt.learning.rollout import HistoryRollout, summarize_episodes
from robot_rt.learning.rundir import RunDir

CHECKPOINT_VERSION = 1
FITNESS_CHOICES = ("reward", "rally", "continuation")
ROBOT_FAILURES = ("missed", "out", "limit")


@dataclass
class BGSConfig:
    generations: int = 100
    directions: int = 32  # D antithetic pairs
    top_k: int = 16
    sigma: float = 0.02  # perturbation, weight units
    step_size: float = 0.01  # update scale, weight units
    slots: int = 16  # M environments per candidate
    horizon: int = 200  # policy steps per generation (episodes reset and continue)
    fitness: str = "reward"  # 'reward', 'rally' or 'continuation' (docs/learning.md, `robot_rt.learning.bgs`)
    hit_bonus: float = 0.2
    # learning aids of robot_rt.envs.wrappers, as in PPO (the exported policy applies them too)
    ball_state: bool = False  # append the tracker's ball state and predicted hitting-plane crossing
    residual_scale: float = 0.0  # > 0: actions are residuals on the scripted policy (this share of the range)
    scripted: str = "default"  # the residual's scripted base: a ScriptedParams preset ('default' or 'rally')
    param_bound: float = 10.0
    history: int = 8
    encoder: str = "conv"
    channels: tuple = (16, 16)
    hidden: tuple = (32,)
    max_episode_steps: int = 600
    human: str = "default"
    seed: int = 0
    backend: str = "auto"
    torch_threads: int = 1  # 0: torch's default (all cores); 1 is faster on a shared 2-core machine
    checkpoint_every: int = 5

    def __post_init__(self) -> None:
        for name in ("generations", "directions", "top_k", "slots", "horizon", "history", "max_episode_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected a positive int, got {v!r}")
        if self.top_k > self.directions:
            raise ValueError(f"--top-k: expected <= --directions ({self.directions}), got {self.top_k}")
        for name in ("sigma", "step_size", "param_bound"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')}: expected > 0, got {getattr(self, name)}")
        if self.fitness not in FITNESS_CHOICES:
            raise ValueError(f"--fitness: expected one of {FITNESS_CHOICES}, got {self.fitness!r}")
        if not (np.isfinite(self.residual_scale) and self.residual_scale >= 0):
            raise ValueError(f"--residual-scale: expected a finite number >= 0, got {self.residual_scale!r}")
        check_scripted_preset(self.scripted)
        if self.human not in ("default", "real_player"):
            raise ValueError(f"--human: expected 'default' or 'real_player', got {self.human!r}")
        self.channels, self.hidden = tuple(self.channels), tuple(self.hidden)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["hidden"] = list(self.channels), list(self.hidden)
        return d


def _mean_ci95(values) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return [float(v.mean() - half), float(v.mean() + half)]


class ParameterVector:
    """The actor's mean network (everything but log_std) as one flat float64 vector, and batched evaluation of
    many such vectors at once."""

    def __init__(self, actor: GaussianActor):
        self.actor = actor
        self.names = [k for k, _ in actor.named_parameters() if k != "log_std"]
        params = dict(actor.named_parameters())
        self.shapes = [params[k].shape for k in self.names]
        self.sizes = [params[k].numel() for k in self.names]
        self.dim = int(sum(self.sizes))
        self._buffers = dict(actor.named_buffers())

    def get(self) -> np.ndarray:
        params = dict(self.actor.named_parameters())
        return torch.cat([params[k].detach().reshape(-1) for k in self.names]).double().numpy()

    def set(self, vector) -> None:
        for k, part in zip(self.names, self.unflatten(torch.as_tensor(np.asarray(vector), dtype=torch.float32))):
            dict(self.actor.named_parameters())[k].data.copy_(part)

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """flat [..., dim] -> per-parameter tensors [..., *shape]."""
        lead = flat.shape[:-1]
        return [p.reshape(lead + s) for p, s in zip(flat.split(self.sizes, dim=-1), self.shapes)]

    def batched_forward(self, vectors: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Action means [C, B, A] of C parameter vectors [C, dim] on their own inputs x [C, B, H, D] with masks
        [C, B, H]."""
        stacked = dict(zip(self.names, self.unflatten(vectors)))

        def one(params, inputs, masks):
            return functional_call(self.actor, (params, self._buffers), (inputs, masks))

        return vmap(one)(stacked, x, mask)


class BGSTrainer:
    def __init__(self, cfg: BGSConfig, out=None, resume: bool = False, progress: bool = True):
        self.cfg = cfg
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.slots = dist.shard_indices(cfg.slots)  # this rank's environment slots (every candidate)
        self.candidates = 2 * cfg.directions + 1  # the last one is the current mean (curve only)
        self.n_local = self.candidates * len(self.slots)
        self.env = make_env(cfg, self.n_local) if self.slots else None
        probe = self.env if self.env is not None else make_env(cfg, 1)
        obs_dim = int(probe.single_observation_space.shape[0])
        action_dim = int(probe.single_action_space.shape[0])
        self.action_low = probe.unwrapped.single_action_space.low
        self.action_high = probe.unwrapped.single_action_space.high
        torch.manual_seed(cfg.seed)
        self.policy_cfg = PolicyConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            history=cfg.history,
            encoder=cfg.encoder,
            channels=cfg.channels,
            hidden=cfg.hidden,
        )
        self.actor = GaussianActor(self.policy_cfg)
        self.vec = ParameterVector(self.actor)
        bound = cfg.param_bound
        width = 2 * bound
        x0 = np.clip(self.vec.get(), -bound, bound)
        es_cfg = ESConfig(
            num_directions=cfg.directions, top_k=cfg.top_k, sigma=cfg.sigma / width, step_size=cfg.step_size / width
        )
        self.es = BGS(x0, np.full(self.vec.dim, -bound), np.full(self.vec.dim, bound), es_cfg, seed=cfg.seed)
        self.obs_norm = RunningMeanStd(obs_dim)
        self.curve: list[dict] = []
        self.elapsed_s = 0.0
        self.env_steps = 0
        self.progress = progress and dist.is_main()
        self.rundir = (
            RunDir(out, {"method": "bgs", **cfg.to_dict(), "world_size": dist.world_size()}, resume=resume)
            if out is not None and dist.is_main()
            else None
        )
        self.out = None if out is None else Path(out)
        if resume and out is not None:
            state = dist.broadcast(self.rundir.load_checkpoint() if self.rundir is not None else None)
            if state is not None:
                self.load_state_dict(state)

    # ------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, vectors: np.ndarray, seed: int) -> dict:
        """Plays every candidate [C, dim] on this rank's slots for `horizon` steps; returns per (candidate, slot)
        fitness [C, M] (all ranks, slot order), the finished episodes and the observation moments."""
        cfg = self.cfg
        c = len(vectors)
        per_slot: list = []
        episodes: list = []
        moments = (torch.zeros(self.policy_cfg.obs_dim, dtype=torch.float64),) * 2 + (0,)
        if self.slots:
            m = len(self.slots)
            ro = HistoryRollout(self.env, cfg.history, 1)
            ro.start([seed + j for _ in range(c) for j in self.slots])  # world c m + k: candidate c, slot k
            weights = torch.as_tensor(vectors, dtype=torch.float32)
            reward_sum = np.zeros(self.n_local)
            landed = np.zeros(self.n_local)
            hits = np.zeros(self.n_local)
            answered = np.zeros(self.n_local)  # sum of the human's return probabilities of the robot's returns
            faced = np.zeros(self.n_local)  # balls the robot faced whose fate is known (reached the human, or lost)
            world = self.env.unwrapped.world
            obs_sum = torch.zeros(self.policy_cfg.obs_dim, dtype=torch.float64)
            obs_sq = torch.zeros_like(obs_sum)
            for _ in range(cfg.horizon):
                raw, age = ro.window(0)
                x, mask = policy_input(raw, age, self.obs_norm)
                x, mask = x.reshape(c, m, cfg.history, -1), mask.reshape(c, m, cfg.history)
                a = self.vec.batched_forward(weights, x, mask).reshape(self.n_local, -1).clamp_(-1.0, 1.0)
                r, _term, _trunc, reset_step, info = ro.step(0, a)
                live = ~reset_step
                reward_sum += np.where(live, r, 0.0)
                landed += np.asarray(info["landed"]) & live
                hits += np.asarray(info["hit"]) & live
                p_answer = world.answer_probability
                reached = np.isfinite(p_answer) & live
                answered += np.where(reached, p_answer, 0.0)
                lost = np.asarray(_term) & live & np.isin(np.asarray(info["outcome"]), ROBOT_FAILURES)
                faced += reached | lost
                new = ro.frames[cfg.history].double()
                obs_sum += new.sum(0)
                obs_sq += new.square().sum(0)
                ro.roll()
            count = cfg.horizon * self.n_local
            mean = obs_sum / count
            moments = (mean, (obs_sq / count - mean.square()).clamp_min(0.0), count)
            if cfg.fitness == "reward":
                fit = reward_sum
            elif cfg.fitness == "rally":
                fit = landed + cfg.hit_bonus * hits
            else:  # the probability that a ball the robot faces comes back from the human: rally ~ 1 / (1 - fit)
                fit = answered / np.maximum(faced, 1.0)
            per_slot = list(fit.reshape(c, m).T)  # [M_local] of [C]
            episodes = [dict(e, candidate=e["env"] // m) for e in ro.stats.pop()]
        fitness = np.stack(dist.gather_by_index(cfg.slots, per_slot), axis=1)  # [C, M]
        all_episodes = [e for part in dist.gather(episodes) for e in part]
        all_moments = dist.gather(moments)
        return {"fitness": fitness, "episodes": all_episodes, "moments": all_moments}

    # ------------------------------------------------------------------------------------------ loop
    def generation(self) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        cand = self.es.ask()
        vectors = np.concatenate([cand, self.es.mean[None]])
        seed = cfg.seed * 1_000_003 + 7919 * self.es.generation
        ev = self.evaluate(vectors, seed)
        fitness = ev["fitness"].mean(axis=1)
        stats = self.es.tell(fitness[:-1])
        for m in ev["moments"]:
            self.obs_norm.update_from_moments(*m)
        wall = time.perf_counter() - t0
        self.elapsed_s += wall
        steps = cfg.horizon * self.candidates * cfg.slots
        self.env_steps += steps
        # the episodes of the mean policy (the last candidate) make the curve
        centre = [e for e in ev["episodes"] if e["candidate"] == self.candidates - 1]
        record = {
            "generation": self.es.generation,
            "env_steps": self.env_steps,
            "steps_per_s": steps / wall,
            "fitness_centre": float(fitness[-1]),
            # the mean policy's slots are independent serves: a normal 95 % interval of their mean
            "fitness_centre_ci95": _mean_ci95(ev["fitness"][-1]),
            **stats,
            **{f"centre_{k}": v for k, v in summarize_episodes(centre).items()},
        }
        self.curve.append(
            {
                "generation": record["generation"],
                "global_step": self.env_steps,
                "fitness_centre": record["fitness_centre"],
                "fitness_centre_ci95": record["fitness_centre_ci95"],
                "fitness_mean": record["fitness_mean"],
                "return_mean": record["fitness_centre"],
                "hit_rate": record.get("centre_hit_rate"),
                "rally_mean": record.get("centre_rally_mean"),
            }
        )
        return record

    def train(self, generations: int | None = None) -> dict:
        cfg = self.cfg
        stop = cfg.generations if generations is None else min(cfg.generations, self.es.generation + generations)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.generations, initial=self.es.generation, desc="bgs", dynamic_ncols=True, file=sys.stderr
            )
        try:
            while self.es.generation < stop:
                record = self.generation()
                if self.rundir is not None:
                    self.rundir.log(**record)
                if bar is not None:
                    bar.set_postfix(
                        sps=f"{record['steps_per_s']:.0f}",
                        centre=f"{record['fitness_centre']:.2f}",
                        best=f"{record['fitness_max']:.2f}",
                        hit=f"{record.get('centre_hit_rate', float('nan')):.2f}",
                    )
                    bar.update(1)
                if self.out is not None and (
                    self.es.generation % cfg.checkpoint_every == 0 or self.es.generation == stop
                ):
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        return self.results()

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "es": self.es.state_dict(),
            "obs_norm": self.obs_norm.state_dict(),
            "curve": list(self.curve),
            "elapsed_s": self.elapsed_s,
            "env_steps": self.env_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint: expected version {CHECKPOINT_VERSION}, got {state.get('version')!r}")
        self.es = BGS.from_state_dict(state["es"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.curve = list(state["curve"])
        self.elapsed_s = float(state["elapsed_s"])
        self.env_steps = int(state["env_steps"])

    def save_checkpoint(self) -> None:
        if self.rundir is None:
            return
        self.rundir.save_checkpoint("latest", self.state_dict())
        self.export_policy(self.rundir.path / "policy.pt")

    def export_policy(self, path) -> Path:
        self.vec.set(self.es.mean)
        return save_policy(
            path,
            self.actor,
            self.obs_norm,
            self.action_low,
            self.action_high,
            ball_state=self.cfg.ball_state,
            residual_scale=self.cfg.residual_scale,
            scripted_params=scripted_base_params(self.cfg) if self.cfg.residual_scale > 0 else None,
            method="bgs",
            env_id="robot_rt/TableTennis-v0",
            generation=self.es.generation,
        )

    def results(self) -> dict:
        return {"method": "bgs", "config": self.cfg.to_dict(), "curve": self.curve, "elapsed_s": self.elapsed_s}


# ================================================================================================ CLI
SMOKE = dict(generations=2, directions=2, top_k=1, slots=2, horizon=40, max_episode_steps=200)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument
    d("--out", required=True, help="run directory")
    d("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    d("--smoke", action="store_true", help="tiny sizes: every stage in seconds (CI)")
    d("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(parser, BGSConfig)


def config_from_args(args) -> BGSConfig:
    return config_from_flags(args, BGSConfig, SMOKE)


def run(args) -> int:
    cfg = config_from_args(args)
    dist.init_from_env()
    try:
        trainer = BGSTrainer(cfg, args.out, resume=args.resume, progress=not args.no_progress)
        results = trainer.train()
        if trainer.rundir is not None:
            trainer.rundir.write_results(results)
            plot_curve(
                results["curve"],
                trainer.rundir.plot_path("learning_curve.png"),
                f"BGS, TableTennis-v0, seed {cfg.seed}",
            )
    finally:
        dist.shutdown()
    if dist.is_main() and results["curve"]:
        last = results["curve"][-1]
        print(
            f"bgs: {last['global_step']} env steps in {results['elapsed_s']:.0f} s; mean policy fitness "
            f"{last['fitness_centre']:.3f}; policy: {Path(args.out) / 'policy.pt'}"
        )
    return 0
