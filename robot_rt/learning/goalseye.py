"""`robot-rt train goalseye`: GoalsEye (Abeyruwan et al. 2022) in simulation — goal-conditioned behaviour
cloning from non-goal-directed play, improved by iterative self-practice with hindsight relabelling.

Design notes: docs/goalseye.md, section `robot_rt.learning.goalseye`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robot_rt._native import BACKENDS
from robot_rt.envs.features import FeatureExtractor, feature_dim
from robot_rt.learning import distributed as dist
from robot_rt.learning.dataset import EpisodeBatch, EpisodeDataset, relabel
from robot_rt.learning.gcbc import GCBCPolicy, train_gcbc
from robot_rt.learning.rundir import RunDir, config_differences, load_checkpoint_file
from robot_rt.learning.stats import wilson_interval

CONDITIONS = ("demos+practice", "demos-only", "practice-only", "no-new-data")
DEFAULT_CONDITIONS = CONDITIONS
GOAL_LOW = np.array([-1.2, -0.6])  # the goal environment's goal region (robot_rt.envs.core reset)
GOAL_HIGH = np.array([-0.3, 0.6])
PLAY_LOW = np.array([-1.3, -0.72])  # play aims anywhere on the human half
PLAY_HIGH = np.array([-0.1, 0.72])
STREAM_PLAY, STREAM_PRACTICE, STREAM_EVAL, STREAM_EXTRA_PLAY, STREAM_NOISE = 1, 2, 3, 4, 5

DEFAULTS = dict(
    seeds=[0, 1, 2],
    conditions=list(DEFAULT_CONDITIONS),
    num_envs=64,
    play_episodes=2500,
    play_chunk=500,
    play_noise=0.05,
    play_param_noise=1.0,
    rounds=3,
    attempts_per_round=400,
    eval_goals=128,
    eval_seed=20261126,
    train_steps=30000,
    finetune_steps=3000,
    batch_size=512,
    lr=1e-3,
    ema_decay=0.999,
    hidden=[256, 256],
    max_episode_steps=300,
    backend="auto",
    torch_threads=1,
    spin_features=True,
)
SMOKE = dict(
    seeds=[0],
    num_envs=16,
    play_episodes=48,
    play_chunk=24,
    rounds=2,
    attempts_per_round=16,
    eval_goals=16,
    train_steps=60,
    finetune_steps=30,
    batch_size=256,
    hidden=[64, 64],
)


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    parser.add_argument("--out", required=True, help="run directory (config, checkpoints, log, data, results)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes that run every stage in about a minute")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help=f"training seeds (default {d['seeds']})")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=None, help="conditions to run")
    for name, kind, text in (
        ("num_envs", int, "environments stepped together per process"),
        ("play_episodes", int, "scripted play episodes (bootstrap data)"),
        ("play_chunk", int, "play episodes per data-set chunk (the unit of crash recovery)"),
        ("play_noise", float, "play action noise std as a fraction of each joint's velocity limit"),
        ("play_param_noise", float, "scale of the per-episode perturbation of the scripted policy's parameters"),
        ("rounds", int, "self-practice rounds"),
        ("attempts_per_round", int, "self-practice attempts (or extra play episodes) per round"),
        ("eval_goals", int, "held-out evaluation goals (one episode each)"),
        ("eval_seed", int, "seed of the held-out evaluation set"),
        ("train_steps", int, "Adam steps of the first GCBC fit"),
        ("finetune_steps", int, "Adam steps of each round's fine-tuning"),
        ("batch_size", int, "GCBC minibatch size"),
        ("lr", float, "Adam learning rate"),
        ("ema_decay", float, "decay of the weight moving average that is executed (0: the raw weights)"),
        ("max_episode_steps", int, "episode time limit in policy steps"),
        ("torch_threads", int, "torch intra-op threads per process"),
    ):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=None, help=f"{text} (default {d[name]})")
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help=f"MLP widths (default {d['hidden']})")
    parser.add_argument("--backend", choices=("auto", *BACKENDS["envs"]), default=None, help="env backend")
    parser.add_argument(
        "--spin-features",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the incoming ball's spin, estimated from its flight before the bounce, in the policy input "
        f"(default {d['spin_features']})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def resolve_config(args) -> dict:
    config = dict(DEFAULTS)
    if args.smoke:
        config.update(SMOKE)
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = list(value) if isinstance(value, (list, tuple)) else value
    config["smoke"] = bool(args.smoke)
    _check_config(config)
    return config


def _check_config(c: dict) -> None:
    for key in ("num_envs", "play_chunk", "eval_goals", "batch_size", "max_episode_steps", "torch_threads"):
        if not isinstance(c[key], int) or c[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')}: expected a positive int, got {c[key]!r}")
    for key in ("play_episodes", "rounds", "attempts_per_round", "train_steps", "finetune_steps"):
        if not isinstance(c[key], int) or c[key] < 0:
            raise ValueError(f"--{key.replace('_', '-')}: expected an int >= 0, got {c[key]!r}")
    for key in ("play_noise", "play_param_noise"):
        if not (c[key] >= 0 and math.isfinite(c[key])):
            raise ValueError(f"--{key.replace('_', '-')}: expected a finite number >= 0, got {c[key]}")
    if not 0 <= c["ema_decay"] < 1:
        raise ValueError(f"--ema-decay: expected a number in [0, 1), got {c['ema_decay']}")
    if not (c["lr"] > 0 and math.isfinite(c["lr"])):
        raise ValueError(f"--lr: expected a finite number > 0, got {c['lr']}")
    if not c["seeds"] or len(set(c["seeds"])) != len(c["seeds"]) or min(c["seeds"]) < 0:
        raise ValueError(f"--seeds: expected distinct non-negative ints, got {c['seeds']}")
    if not c["conditions"] or any(k not in CONDITIONS for k in c["conditions"]):
        raise ValueError(f"--conditions: expected some of {CONDITIONS}, got {c['conditions']}")
    if any(h < 1 for h in c["hidden"]):
        raise ValueError(f"--hidden: expected positive widths, got {c['hidden']}")
    if c["play_episodes"] == 0 and any(k != "practice-only" for k in c["conditions"]):
        raise ValueError("--play-episodes: expected > 0 when a demos condition runs")


# ------------------------------------------------------------------------------------------------ seeding
def episode_plan(seed: int, stream: int, round_: int, n: int, low=GOAL_LOW, high=GOAL_HIGH):
    """(episode seeds [n] int64, targets [n, 2]) of one batch of episodes, a function of its identity only."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), int(round_)]))
    seeds = rng.integers(0, 2**31 - 1, size=n, dtype=np.int64)
    targets = rng.uniform(low, high, size=(n, 2))
    return seeds, targets


def eval_plan(config: dict):
    return episode_plan(config["eval_seed"], STREAM_EVAL, 0, config["eval_goals"])


def held_out_goals(config: dict) -> list:
    """The held-out goals of `eval_plan` as results.json lists them ([x, y] rounded to 0.1 mm)."""
    return np.round(eval_plan(config)[1], 4).tolist()


# ------------------------------------------------------------------------------------------------ agents
# per-episode perturbation stds of the scripted policy's parameters during play (scaled by --play-param-noise):
# the shot's speed, elevation and timing vary, so landing points spread around the aim like a human's play
PLAY_PARAM_STD = {
    "return_speed_mps": 1.0,
    "extra_elevation_rad": 0.05,
    "timing_offset_s": 0.006,
    "swing_speed_mps": 0.5,
}


class ScriptedAgent:
    """Play: the batched scripted policy aiming at the given targets. Noise, from a per-episode generator (so an
    episode is the same whichever process or slot runs it): each episode perturbs the policy's parameters
    (`PLAY_PARAM_STD` x `param_noise`, clipped to their bounds), and each step adds Gaussian action noise of
    `action_noise` x v_max. I.i.d. action noise alone is a poor play generator: from 0.05 v_max on, the random
    walk drives a joint into its limit in every episode (measured) unless it passes the policy's braking cap
    again (done here), while parameter noise varies the shot."""

    def __init__(self, num_envs: int, action_noise: float, param_noise: float = 1.0):
        from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams

        self.policy = BatchedScriptedPolicy(num_envs)
        self.noise = float(action_noise)
        self.param_noise = float(param_noise)
        self.v_max = self.policy.v_max
        self.names = ScriptedParams.names()
        self.low, self.high = ScriptedParams.bounds()
        self.base = ScriptedParams().to_vector()
        self.params = np.tile(self.base, (num_envs, 1))
        self.std = np.array([PLAY_PARAM_STD.get(k, 0.0) for k in self.names]) * self.param_noise
        self.rngs = [np.random.default_rng(0) for _ in range(num_envs)]

    def start(self, slots: np.ndarray, episode_seeds: np.ndarray) -> None:
        mask = np.zeros(self.policy.n, dtype=bool)
        mask[slots] = True
        self.policy.reset(mask)
        for j, s in zip(slots, episode_seeds):
            self.rngs[j] = np.random.default_rng(np.random.SeedSequence([int(s), STREAM_NOISE]))
            perturbed = self.base + self.std * self.rngs[j].standard_normal(len(self.base))
            self.params[j] = np.clip(perturbed, self.low, self.high)
        self.policy.set_params(self.params)

    def act(self, obs: dict, features: np.ndarray, targets: np.ndarray) -> np.ndarray:
        action = self.policy(obs["observation"], goals=targets)  # env actions (fractions of v_max)
        if self.noise > 0:
            noise = np.stack([r.standard_normal(action.shape[1]) for r in self.rngs])
            q = np.asarray(obs["observation"], dtype=np.float64)[:, : len(self.v_max)]
            # the same braking cap as the policy's own output, so noise cannot drive a joint into its limit
            qd = self.policy.joint_velocities(action) + self.noise * self.v_max * noise
            action = self.policy.brake_to_limits(q, qd).astype(np.float64) / self.v_max
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class GCBCAgent:
    """The learned policy: a = scale * pi(features, goal), pi in [-1, 1] (scale: the env's action bound, 1 for the
    normalised action space)."""

    def __init__(self, model: GCBCPolicy, action_scale: np.ndarray):
        self.model = model.eval()
        self.action_scale = np.asarray(action_scale)

    def start(self, slots: np.ndarray, episode_seeds: np.ndarray) -> None:
        pass  # stateless (the ball track lives in the feature extractor)

    def act(self, obs: dict, features: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return (self.model.act(features, targets) * self.action_scale).astype(np.float32)


# ------------------------------------------------------------------------------------------------ rollouts
@dataclass
class Episode:
    seed: int
    target: np.ndarray
    has_landed: bool
    landing_point: np.ndarray
    length: int
    outcome: str
    observations: np.ndarray | None = None
    features: np.ndarray | None = None
    actions: np.ndarray | None = None

    @property
    def distance_m(self) -> float:
        return float(np.linalg.norm(self.landing_point - self.target)) if self.has_landed else math.inf


def make_env(num_envs: int, config: dict):
    from robot_rt.envs.vector import TableTennisGoalVectorEnv

    return TableTennisGoalVectorEnv(num_envs, max_episode_steps=config["max_episode_steps"], backend=config["backend"])


def run_episodes(
    env, agent, seeds, targets, *, record: bool, progress=None, spin_features: bool = False
) -> list[Episode]:
    """Runs one episode per (seed, target) on the vector env, in slots as they free up; returns them in order.

    Each episode starts with an explicit `reset(seed=...)` of its slot, so its ball, camera noise and human do
    not depend on the slot or on the other episodes, and the agent's `target` (goal or play aim) replaces the
    environment's own desired goal. Recorded actions are the env's normalised actions, a / v_max (what GCBC imitates). An episode
    has landed only when its return's first contact is the human's half of the table.
    """
    seeds = np.asarray(seeds, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.float64)
    n = len(seeds)
    if targets.shape != (n, 2):
        raise ValueError(f"targets: expected shape ({n}, 2), got {targets.shape}")
    if n == 0:
        return []
    num = env.num_envs
    extractor = FeatureExtractor(num, spin=spin_features)
    action_scale = env.single_action_space.high.astype(np.float64)  # 1: the envs' actions are already a / v_max
    slot_episode = np.full(num, -1)
    slot_target = np.zeros((num, 2))
    buffers: list[list] = [[] for _ in range(num)]
    lengths = np.zeros(num, dtype=np.int64)
    out: list[Episode | None] = [None] * n
    next_episode = 0

    def assign(slots: np.ndarray):
        nonlocal next_episode
        take = slots[: max(0, min(len(slots), n - next_episode))]
        idx = np.arange(next_episode, next_episode + len(take))
        next_episode += len(take)
        slot_episode[slots] = -1
        slot_episode[take] = idx
        slot_target[take] = targets[idx]
        lengths[take] = 0
        for j in take:
            buffers[j] = []
        return take, idx

    take, idx = assign(np.arange(num))
    reset_seeds = [int(seeds[i]) for i in idx] + [0] * (num - len(take))  # idle slots: any seed
    obs, _ = env.reset(seed=reset_seeds)
    extractor.reset()
    agent.start(take, seeds[idx])
    done_count = 0
    while done_count < n:
        features = extractor(obs)
        action = agent.act(obs, features, slot_target)
        active = np.nonzero(slot_episode >= 0)[0]
        if record:
            flat = obs["observation"]
            norm_action = np.clip(action / action_scale, -1.0, 1.0)
            for j in active:
                buffers[j].append((flat[j], features[j], norm_action[j]))
        obs, _, terminated, truncated, info = env.step(action)
        lengths[active] += 1
        finished = active[(terminated | truncated)[active]]
        for j in finished:
            i = int(slot_episode[j])
            # landed = the return's first contact was the human's half of the table (outcome 'returned'); the
            # env's `has_landed` is also True for a first contact elsewhere (floor, robot's half: outcome 'out'),
            # which must neither be relabelled as a reachable goal nor count as a success
            landed = bool(info["has_landed"][j]) and str(info["outcome"][j]) == "returned"
            episode = Episode(
                seed=int(seeds[i]),
                target=targets[i].copy(),
                has_landed=landed,
                landing_point=np.asarray(info["landing_point"][j], dtype=np.float64).copy(),
                length=int(lengths[j]),
                outcome=str(info["outcome"][j]),
            )
            if record:
                rows = buffers[j]
                episode.observations = np.stack([r[0] for r in rows]).astype(np.float32)
                episode.features = np.stack([r[1] for r in rows]).astype(np.float32)
                episode.actions = np.stack([r[2] for r in rows]).astype(np.float32)
                buffers[j] = []
            out[i] = episode
            done_count += 1
            if progress is not None:
                progress(episode)
        if finished.size:
            take, idx = assign(finished)
            if take.size:
                mask = np.zeros(num, dtype=bool)
                mask[take] = True
                seed_list = [None] * num
                for j, i in zip(take, idx):
                    seed_list[j] = int(seeds[i])
                new_obs, _ = env.reset(seed=seed_list, options={"reset_mask": mask})
                for key in obs:
                    obs[key] = np.where(mask[:, None], new_obs[key], obs[key])
                extractor.reset(mask)
                agent.start(take, seeds[idx])
    return out  # type: ignore[return-value]


def run_episodes_sharded(
    env, agent, seeds, targets, *, record: bool, progress=None, spin_features: bool = False
) -> list[Episode]:
    """`run_episodes` with the episodes split across the processes of `robot_rt.learning.distributed` by index
    (striped), results gathered back into index order on every process."""
    mine = dist.shard_indices(len(seeds))
    local = run_episodes(
        env,
        agent,
        np.asarray(seeds)[mine],
        np.asarray(targets)[mine],
        record=record,
        progress=progress,
        spin_features=spin_features,
    )
    return dist.gather_by_index(len(seeds), local)


def episodes_to_batch(episodes: list[Episode]) -> EpisodeBatch:
    return EpisodeBatch(
        observations=np.concatenate([e.observations for e in episodes]),
        features=np.concatenate([e.features for e in episodes]),
        actions=np.concatenate([e.actions for e in episodes]),
        episode_length=np.array([e.length for e in episodes], dtype=np.int64),
        episode_seed=np.array([e.seed for e in episodes], dtype=np.int64),
        commanded_goal=np.array([e.target for e in episodes], dtype=np.float32),
        landing_point=np.array([e.landing_point for e in episodes], dtype=np.float32),
        has_landed=np.array([e.has_landed for e in episodes], dtype=bool),
    ).validate()


# ------------------------------------------------------------------------------------------------ statistics
def summarise(episodes: list[Episode], landings: bool = False) -> dict:
    """Success within 20 / 30 cm (Wilson intervals); with `landings`, also each episode's landing point ([x, y] in
    m, None where the ball did not land), in episode order."""
    n = len(episodes)
    d = np.array([e.distance_m for e in episodes])
    out = {"n": n, "landed": int(np.sum(np.isfinite(d)))}
    if landings:
        out["landings"] = [[round(float(v), 4) for v in e.landing_point] if e.has_landed else None for e in episodes]
    for radius in (20, 30):
        k = int(np.sum(d <= radius / 100))
        out[f"success_{radius}cm"] = k
        out[f"rate_{radius}cm"] = k / n if n else 0.0
        out[f"ci_{radius}cm"] = list(wilson_interval(k, n))
    landed = d[np.isfinite(d)]
    out["median_distance_landed_m"] = float(np.median(landed)) if landed.size else None
    return out


# ------------------------------------------------------------------------------------------------ training
class Trainer:
    """One (seed, condition) learner: model, optimizer and the moving average of the weights that is executed
    (`policy`; the raw model when --ema-decay is 0), trained on rank 0."""

    def __init__(self, config: dict, seed: int):
        self.config = config
        self.seed = seed
        torch.manual_seed(seed)
        self.model = GCBCPolicy(feature_dim(bool(config.get("spin_features", False))), hidden=tuple(config["hidden"]))
        self.ema = GCBCPolicy.from_state(self.model.state()) if config["ema_decay"] > 0 else None
        self.optimizer: torch.optim.Optimizer | None = None
        self.fitted = False

    @property
    def policy(self) -> GCBCPolicy:
        return self.ema if self.ema is not None else self.model

    def fit(self, batches: list[EpisodeBatch], steps: int, round_: int, show_progress: bool = False) -> dict:
        batches = [b for b in batches if b is not None]
        if not batches:
            return {"trained": False, "reason": "no data"}
        data = EpisodeBatch.concatenate(batches)
        f, g, a = relabel(data)
        if f.shape[0] == 0:
            return {"trained": False, "reason": "no landed attempt yet", "episodes": data.n_episodes}
        if not self.fitted:
            self.model.fit_normalisation(f, g)
            if self.ema is not None:
                self.ema.load_state_dict(self.model.state_dict())
            steps = self.config["train_steps"]
            self.fitted = True
        bar = None
        if show_progress and steps > 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc=f"GCBC round {round_}", unit="step", leave=False, dynamic_ncols=True)

        def on_step(step: int, loss: float) -> None:
            if (step + 1) % 50 == 0 or step + 1 == steps:
                bar.update((step + 1) - bar.n)
                bar.set_postfix(loss=f"{loss:.4f}")

        self.optimizer, losses = train_gcbc(
            self.model,
            f,
            g,
            a,
            steps=steps,
            batch_size=self.config["batch_size"],
            lr=self.config["lr"],
            seed=self.seed * 1000 + round_,
            optimizer=self.optimizer,
            ema=self.ema,
            ema_decay=self.config["ema_decay"] if self.ema is not None else 0.0,
            callback=on_step if bar is not None else None,
        )
        if bar is not None:
            bar.close()
        tail = losses[-max(1, len(losses) // 10) :]
        return {
            "trained": True,
            "steps": steps,
            "samples": int(f.shape[0]),
            "landed_episodes": int(data.has_landed.sum()),
            "episodes": data.n_episodes,
            "loss_first": losses[0] if losses else None,
            "loss_last": float(np.mean(tail)) if losses else None,
        }

    def state(self) -> dict:
        return {
            "model": self.model.state(),
            "ema": None if self.ema is None else self.ema.state(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "fitted": self.fitted,
        }

    def load(self, state: dict) -> None:
        self.model = GCBCPolicy.from_state(state["model"])
        self.ema = None if state["ema"] is None else GCBCPolicy.from_state(state["ema"])
        self.fitted = bool(state["fitted"])
        self.optimizer = None
        if state["optimizer"] is not None:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config["lr"])
            self.optimizer.load_state_dict(state["optimizer"])


# ------------------------------------------------------------------------------------------------ the run
class _Progress:
    """A tqdm bar with live landed / success counts (rank 0, unless disabled)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        self.landed = self.s30 = self.count = 0
        if enabled and dist.is_main():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="ep", leave=False, dynamic_ncols=True, mininterval=1.0)

    def __call__(self, episode: Episode) -> None:
        self.count += 1
        self.landed += episode.has_landed
        self.s30 += episode.distance_m <= 0.3
        if self.bar is not None:
            self.bar.update(dist.world_size())  # the other ranks progress alike
            self.bar.set_postfix(landed=f"{self.landed / self.count:.0%}", s30=f"{self.s30 / self.count:.0%}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Session:
    """What every phase of a run shares: the config, the env, the held-out goals and the records so far."""

    args: argparse.Namespace
    config: dict
    run_dir: RunDir | None  # rank 0 only
    env: object
    action_scale: np.ndarray  # the env's action bound: 1, the envs' actions are already a / v_max
    eval_seeds: np.ndarray
    eval_goals: np.ndarray
    t_start: float
    curves: dict
    timings: dict

    @property
    def show(self) -> bool:
        return not self.args.no_progress

    def rollout(self, agent, seeds, targets, desc: str, record: bool) -> list[Episode]:
        bar = _Progress(len(seeds), desc, self.show)
        episodes = run_episodes_sharded(
            self.env,
            agent,
            seeds,
            targets,
            record=record,
            progress=bar,
            spin_features=bool(self.config.get("spin_features", False)),
        )
        bar.close()
        return episodes

    def scripted_agent(self) -> ScriptedAgent:
        return ScriptedAgent(self.env.num_envs, self.config["play_noise"], self.config["play_param_noise"])

    def evaluate(self, model: GCBCPolicy, desc: str) -> dict:
        agent = GCBCAgent(model, self.action_scale)
        return summarise(self.rollout(agent, self.eval_seeds, self.eval_goals, desc, record=False), landings=True)


def run(args) -> int:
    """`robot-rt train goalseye`: per seed, play data, then per condition the rounds of (re)training, extra
    episodes and evaluation (docs/goalseye.md); resumable, sharded over torch.distributed ranks."""
    session = _start(args)
    for seed in session.config["seeds"]:
        data_root = Path(args.out) / "data" / f"seed{seed}"
        play = EpisodeDataset(data_root / "play") if dist.is_main() else None
        _collect_play(session, seed, play)
        shared_round0 = None  # (trainer state, eval) of the play-only model, shared by the two demos conditions
        for condition in session.config["conditions"]:
            shared_round0 = _run_condition(session, seed, condition, data_root, play, shared_round0)
    _finish(session)
    return 0


def _start(args) -> _Session:
    dist.init_from_env()
    config = resolve_config(args)
    # one intra-op thread: the MLP is small, and on a shared/loaded CPU torch's thread pool spin-waits (measured
    # 25x slower training with 2 threads than 1 on the 2-core CI box); scale out with processes instead
    torch.set_num_threads(config["torch_threads"])
    run_dir = None
    if dist.is_main():
        run_dir = RunDir(args.out, config, resume=args.resume)
        run_dir.log(event="start", world_size=dist.world_size(), resume=bool(args.resume))
    dist.barrier()
    t_start = time.time()
    env = make_env(config["num_envs"], config)
    action_scale = env.single_action_space.high.astype(np.float64)  # 1: the envs' actions are already a / v_max
    eval_seeds, eval_goals = eval_plan(config)
    return _Session(args, config, run_dir, env, action_scale, eval_seeds, eval_goals, t_start, {}, {})


def _collect_play(session: _Session, seed: int, play: EpisodeDataset | None) -> None:
    """1. play data (chunks already in the manifest are kept: a resumed run continues after them)."""
    config = session.config
    t0 = time.time()
    if any(c != "practice-only" for c in config["conditions"]):
        n_chunks = math.ceil(config["play_episodes"] / config["play_chunk"])
        have = dist.broadcast({e["source"] for e in play.manifest()} if play is not None else None)
        for c in range(n_chunks):
            if f"play-{c}" in have:
                continue
            n = min(config["play_chunk"], config["play_episodes"] - c * config["play_chunk"])
            seeds_c, aims = episode_plan(seed, STREAM_PLAY, c, n, PLAY_LOW, PLAY_HIGH)
            desc = f"seed {seed} play {c + 1}/{n_chunks}"
            episodes = session.rollout(session.scripted_agent(), seeds_c, aims, desc, record=True)
            if play is not None:
                play.append(episodes_to_batch(episodes), source=f"play-{c}")
                session.run_dir.log(event="play", seed=seed, chunk=c, **summarise(episodes))
    session.timings[f"seed{seed}/play_s"] = time.time() - t0


def _resume_trainer(session: _Session, seed: int, name: str) -> tuple[Trainer, list, int]:
    """A fresh trainer, or the checkpointed one (rank 0 reads it, every rank gets its state)."""
    trainer = Trainer(session.config, seed)
    curve: list = []
    start_round = 0
    if dist.is_main():
        ckpt_path = session.run_dir.path / "checkpoints" / f"{name}.pt"
        if ckpt_path.exists():
            ckpt = session.run_dir.load_checkpoint(name)
            trainer.load(ckpt["trainer"])
            curve = ckpt["curve"]
            start_round = ckpt["round"] + 1
    trainer_state, curve, start_round = dist.broadcast(
        (trainer.state() if dist.is_main() else None, curve, start_round)
    )
    if not dist.is_main():
        trainer.load(trainer_state)
    return trainer, curve, start_round


def _run_condition(session: _Session, seed: int, condition: str, data_root: Path, play, shared_round0):
    """Rounds 0..rounds of one condition; returns the (state, eval) of round 0 for the next demos condition."""
    config = session.config
    t0 = time.time()
    name = f"seed{seed}-{condition}"
    own = EpisodeDataset(data_root / condition) if dist.is_main() else None
    trainer, curve, start_round = _resume_trainer(session, seed, name)
    for round_ in range(start_round, config["rounds"] + 1):
        fit_info: dict = {}
        if round_ > 0 and condition != "no-new-data":
            _extra_episodes(session, seed, condition, round_, trainer, own)
        # ---- 2./3. (re)train on everything relabelled, on rank 0; broadcast the weights
        if round_ == 0 and condition != "practice-only" and shared_round0 is not None:
            trainer.load(shared_round0[0])
            result = shared_round0[1]
        else:
            fit_info, result = _train_and_evaluate(session, seed, condition, round_, trainer, own, play)
        if round_ == 0 and condition != "practice-only":
            shared_round0 = (trainer.state(), result)
        result = dict(result)
        landings = result.pop("landings", None)
        point = {"round": round_, "attempts": round_ * config["attempts_per_round"], **result}
        if round_ == config["rounds"] and landings is not None:
            point["landings"] = landings  # the final policy's landings, one per held-out goal (not in the log)
        curve.append(point)
        if dist.is_main():
            run_dir = session.run_dir
            run_dir.log(
                event="eval",
                seed=seed,
                condition=condition,
                fit=fit_info,
                **{k: v for k, v in point.items() if k != "landings"},
            )
            run_dir.save_checkpoint(name, {"trainer": trainer.state(), "curve": curve, "round": round_})
            _write_results(
                run_dir, config, {**session.curves, (seed, condition): curve}, session.timings, session.t_start
            )
        dist.barrier()
    session.curves[(seed, condition)] = curve
    session.timings[f"seed{seed}/{condition}_s"] = time.time() - t0
    return shared_round0


def _extra_episodes(session: _Session, seed: int, condition: str, round_: int, trainer: Trainer, own) -> None:
    """3. the round's extra episodes: self-practice attempts of the current policy, or more scripted play."""
    config = session.config
    n = config["attempts_per_round"]
    source = f"round-{round_}"
    have = dist.broadcast({e["source"] for e in own.manifest()} if own is not None else None)
    if source in have or n <= 0:
        return
    if condition == "demos-only":
        seeds_r, targets_r = episode_plan(seed, STREAM_EXTRA_PLAY, round_, n, PLAY_LOW, PLAY_HIGH)
        agent = session.scripted_agent()
    else:
        seeds_r, targets_r = episode_plan(seed, STREAM_PRACTICE, round_, n)
        agent = GCBCAgent(trainer.policy, session.action_scale)
    desc = f"seed {seed} {condition} round {round_} attempts"
    episodes = session.rollout(agent, seeds_r, targets_r, desc, record=True)
    if own is not None:
        own.append(episodes_to_batch(episodes), source=source)
        session.run_dir.log(event="attempts", seed=seed, condition=condition, round=round_, **summarise(episodes))


def _train_and_evaluate(session: _Session, seed: int, condition: str, round_: int, trainer: Trainer, own, play):
    """2. (re)train on rank 0 on everything relabelled, broadcast the weights; 4. evaluate on the held-out goals."""
    config = session.config
    fit_info: dict = {}
    if dist.is_main():
        batches = [own.read()]
        if condition != "practice-only":
            batches.insert(0, play.read())
        steps = config["train_steps"] if round_ == 0 else config["finetune_steps"]
        fit_info = trainer.fit(batches, steps, round_, show_progress=session.show)
    state = dist.broadcast(trainer.state() if dist.is_main() else None)
    if not dist.is_main():
        trainer.load(state)
    result = session.evaluate(trainer.policy, f"seed {seed} {condition} round {round_} eval")
    return fit_info, result


def _finish(session: _Session) -> None:
    if dist.is_main():
        run_dir = session.run_dir
        results = _write_results(run_dir, session.config, session.curves, session.timings, session.t_start, final=True)
        from robot_rt.learning.plots import plot_goalseye_curves

        for radius in (20, 30):
            plot_goalseye_curves(results, radius, run_dir.plot_path(f"success_{radius}cm.png"))
        plot_final_landings(results, run_dir.plot_path)
        run_dir.log(event="done", wall_time_s=results["wall_time_s"])
        _print_summary(results)
    dist.barrier()
    dist.shutdown()


def pool_curves(conditions, curves: dict) -> dict:
    """Per condition and round, the success pooled over seeds (Wilson CI, n = seeds x held-out goals; seeds share the
    held-out set, so this treats seeds as replicates). `curves`: {(seed, condition): [eval points]}."""
    pooled: dict = {}
    for condition in conditions:
        per_round: dict = {}
        for (seed, cond), curve in curves.items():
            if cond != condition:
                continue
            for point in curve:
                agg = per_round.setdefault(
                    point["round"], {"round": point["round"], "attempts": point["attempts"], "n": 0, "seeds": []}
                )
                agg["n"] += point["n"]
                agg["seeds"].append(seed)
                for radius in (20, 30):
                    agg[f"success_{radius}cm"] = agg.get(f"success_{radius}cm", 0) + point[f"success_{radius}cm"]
        for agg in per_round.values():
            for radius in (20, 30):
                k = agg[f"success_{radius}cm"]
                agg[f"rate_{radius}cm"] = k / agg["n"]
                agg[f"ci_{radius}cm"] = list(wilson_interval(k, agg["n"]))
        pooled[condition] = [per_round[r] for r in sorted(per_round)]
    return pooled


def plot_final_landings(results: dict, path_of) -> list:
    """landing_CONDITION.png per condition: its final policies' landings (every seed) against the held-out goals;
    `path_of(name)` gives a file's path. Conditions without recorded landings are skipped."""
    from robot_rt.learning.plots import plot_landing_scatter

    written = []
    goals = results.get("eval_goals")
    if goals is None:
        return written
    for condition in results["config"]["conditions"]:
        runs, seeds = [], []
        for key, curve in results["per_seed"].items():
            if key.endswith("/" + condition) and curve and curve[-1].get("landings") is not None:
                runs.append(curve[-1]["landings"])
                seeds.append(key.split("/")[0])
        if runs:
            attempts = results["per_seed"][f"{seeds[0]}/{condition}"][-1]["attempts"]
            title = f"GoalsEye {condition}, final policies ({attempts} extra episodes), {', '.join(seeds)}"
            written.append(plot_landing_scatter(goals, runs, path_of(f"landing_{condition}.png"), title=title))
    return written


def final_landings_from_checkpoint(run_path: str | Path, config: dict, seed: int, condition: str) -> dict:
    """Evaluates the final policy saved in a run's checkpoint `seed{seed}-{condition}` on the run's held-out goals
    again (the same episodes: their seeds and goals are fixed by the config) and returns `summarise` with landings.
    For runs recorded before results.json kept the final landings."""
    path = Path(run_path) / "checkpoints" / f"seed{seed}-{condition}.pt"
    if not path.is_file():
        raise ValueError(f"run_path: no checkpoint {path}")
    state = load_checkpoint_file(path)
    trainer = Trainer(config, seed)
    trainer.load(state["trainer"])
    env = make_env(config["num_envs"], config)
    try:
        seeds, goals = eval_plan(config)
        agent = GCBCAgent(trainer.policy, env.single_action_space.high.astype(np.float64))
        episodes = run_episodes(
            env, agent, seeds, goals, record=False, spin_features=bool(config.get("spin_features", False))
        )
    finally:
        env.close()
    return summarise(episodes, landings=True)


def merge_results(runs: list[dict]) -> dict:
    """One results dict from the results.json of runs that differ only in their seeds (disjoint), e.g. seeds run as
    separate processes: the per-seed curves side by side, pooled again over all seeds."""
    if not runs:
        raise ValueError("runs: expected at least one results dict")
    seeds: list[int] = []
    curves: dict = {}
    for i, r in enumerate(runs):
        diff = config_differences(runs[0]["config"], r["config"], ignore=("seeds", "smoke"))
        if diff:
            raise ValueError(f"runs[{i}]: its config differs from runs[0]'s in {diff}; only the seeds may differ")
        if set(r["config"]["seeds"]) & set(seeds):
            raise ValueError(f"runs[{i}]: seeds {r['config']['seeds']} overlap {seeds}")
        seeds += list(r["config"]["seeds"])
        for key, curve in r["per_seed"].items():
            seed, _, condition = key.partition("/")
            curves[(int(seed.removeprefix("seed")), condition)] = curve
    config = dict(runs[0]["config"], seeds=seeds)
    return {
        "eval_goals": held_out_goals(config),  # a function of the config, which only the seeds may change
        "method": runs[0]["method"],
        "complete": all(r["complete"] for r in runs),
        "config": config,
        "wall_time_s": sum(r["wall_time_s"] for r in runs),
        "wall_time_s_per_run": [r["wall_time_s"] for r in runs],
        "timings_s": {k: v for r in runs for k, v in r["timings_s"].items()},
        "world_size": runs[0]["world_size"],
        "pooled": pool_curves(config["conditions"], curves),
        "per_seed": {f"seed{s}/{c}": curve for (s, c), curve in curves.items()},
    }


def _write_results(run_dir: RunDir, config: dict, curves: dict, timings: dict, t_start: float, final=False) -> dict:
    """results.json: per-seed curves (the last point of each with its landings), the held-out goals and the success
    pooled over seeds (`pool_curves`)."""
    results = {
        "eval_goals": held_out_goals(config),
        "method": "GoalsEye (GCBC + hindsight relabelling + self-practice), simulated",
        "complete": final,
        "config": config,
        "wall_time_s": time.time() - t_start,
        "timings_s": timings,
        "world_size": dist.world_size(),
        "pooled": pool_curves(config["conditions"], curves),
        "per_seed": {f"seed{s}/{c}": curve for (s, c), curve in curves.items()},
    }
    run_dir.write_results(results)
    return results


def _print_summary(results: dict) -> None:
    lines = [f"GoalsEye run: {results['wall_time_s']:.0f} s wall"]
    for condition, points in results["pooled"].items():
        for p in points:
            lo, hi = p["ci_30cm"]
            lo2, hi2 = p["ci_20cm"]
            lines.append(
                f"  {condition:15s} attempts {p['attempts']:6d}: 30 cm {p['rate_30cm']:.1%} [{lo:.1%}, {hi:.1%}]"
                f"  20 cm {p['rate_20cm']:.1%} [{lo2:.1%}, {hi2:.1%}]  (n={p['n']})"
            )
    print("\n".join(lines))


def load_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
