"""Iterative sim-to-real (i-S2R, Abeyruwan et al. 2022) against the S2R+FT baseline: `robot-rt train is2r`.

Design notes: docs/is2r.md, section `robot_rt.learning.is2r`.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_rt.envs.human_model import HumanBehaviorModel
from robot_rt.learning import distributed as dist
from robot_rt.learning.es import BGS, ESConfig
from robot_rt.learning.rundir import RunDir, config_differences
from robot_rt.learning.stats import bootstrap_ci

CHECKPOINT_VERSION = 1
_BRANCH_ID = {"shared": 0, "is2r": 1, "ft": 2}  # distinct seeds per branch


# ================================================================================================ policies
class HeuristicFamily:
    """`robot_rt.envs.heuristic.HeuristicPolicy` with its tunable knobs as the parameter vector, one Python
    policy object per world (slow: ``--policy heuristic``)."""

    name = "heuristic"
    _KNOBS = (  # (name, lower, upper, initial)
        ("hit_plane_x_m", 1.45, 1.95, 1.7),
        ("return_speed_mps", 4.0, 10.0, 7.0),
        ("swing_speed_mps", 1.5, 6.0, 4.0),
        ("swing_s", 0.04, 0.25, 0.12),
        ("gain_per_s", 4.0, 20.0, 10.0),
        ("max_paddle_speed_mps", 1.0, 4.0, 2.5),
        ("target_x_m", -1.1, -0.3, -0.7),
        ("target_y_m", -0.5, 0.5, 0.0),
    )

    def names(self) -> list[str]:
        return [k[0] for k in self._KNOBS]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([k[1] for k in self._KNOBS]), np.array([k[2] for k in self._KNOBS])

    def initial(self) -> np.ndarray:
        return np.array([k[3] for k in self._KNOBS])

    def _one(self, theta: np.ndarray):
        from robot_rt.envs.heuristic import HeuristicPolicy

        kw = dict(zip(self.names(), map(float, theta)))
        target = (kw.pop("target_x_m"), kw.pop("target_y_m"))
        return HeuristicPolicy(default_target_xy=target, **kw)

    def batched(self, thetas: np.ndarray):
        return _ListBatch([self._one(t) for t in thetas])

    def single(self, theta: np.ndarray):
        return _SinglePolicy(self.batched(np.asarray(theta, dtype=np.float64)[None]), theta)


class ScriptedFamily:
    """`robot_rt.envs.scripted.BatchedScriptedPolicy` over `ScriptedParams` vectors (one call for all worlds)."""

    name = "scripted"

    def __init__(self):
        from robot_rt.envs import scripted

        self.module = scripted
        self.params_cls = scripted.ScriptedParams

    def names(self) -> list[str]:
        return list(self.params_cls.names())

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.params_cls.bounds()
        return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)

    def initial(self) -> np.ndarray:
        return np.asarray(self.params_cls().to_vector(), dtype=np.float64)

    def batched(self, thetas: np.ndarray):
        thetas = np.asarray(thetas, dtype=np.float64)
        return _ScriptedBatch(self.module.BatchedScriptedPolicy(len(thetas), params=thetas))

    def single(self, theta: np.ndarray):
        return _SinglePolicy(self.batched(np.asarray(theta, dtype=np.float64)[None]), theta)


class NeuralFamily:
    """The seed's i-S2R policy class: a neural history policy (`robot_rt.learning.neural_policy`: the last
    `history` observations, joint-velocity actions at the policy rate), here as a residual on a scripted preset
    (`residual_scale` of the action range, as `robot-rt train bgs --residual-scale`). The parameter vector is the
    actor's mean network (`bgs.ParameterVector`), boxed to +-`param_bound`.

    `init_policy`: a `policy.pt` of `robot-rt train bgs|ppo` to start from (its normaliser, wrappers and weights);
    None builds a fresh one from `seed`: the output layer starts near zero (gain 0.01), so the first policy plays
    like its scripted base, and the observation normaliser is fitted to that base's play against the default
    human (frozen afterwards: the ES moves weights only)."""

    name = "neural"
    # ES steps in the unit box of +-param_bound: sigma 0.02 and step 0.01 weight units at the default bound of 10,
    # as `robot-rt train bgs` uses
    WEIGHT_SIGMA = 0.02
    WEIGHT_STEP = 0.01

    def __init__(
        self,
        init_policy=None,
        *,
        seed: int = 0,
        param_bound: float = 10.0,
        residual_scale: float = 0.2,
        scripted: str = "rally",
        history: int = 8,
        backend: str = "auto",
        state: dict | None = None,
    ):
        import torch

        from robot_rt.learning.bgs import ParameterVector
        from robot_rt.learning.neural_policy import policy_from_state

        if not (np.isfinite(param_bound) and param_bound > 0):
            raise ValueError(f"param_bound: expected a finite number > 0, got {param_bound!r}")
        self.param_bound = float(param_bound)
        if state is None and init_policy is not None:
            path = Path(init_policy)
            if not path.is_file():
                raise FileNotFoundError(f"init_policy: no such file: {path}")
            state = torch.load(path, map_location="cpu", weights_only=True)  # a policy file: no code from it
        if state is None:
            state = self._fresh_state(seed, residual_scale, scripted, history, backend)
        self.state = state  # the policy_state dict every candidate shares but for its weights
        self.template = policy_from_state(state, num_envs=1)
        self.vec = ParameterVector(self.template.actor)

    @staticmethod
    def _fresh_state(seed: int, residual_scale: float, scripted: str, history: int, backend: str) -> dict:
        import torch

        from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
        from robot_rt.envs.vector import TableTennisVectorEnv
        from robot_rt.envs.wrappers import BALL_FEATURE_NAMES, BallStateFeatures
        from robot_rt.learning.bgs import BGSConfig
        from robot_rt.learning.neural_policy import GaussianActor, PolicyConfig, RunningMeanStd, policy_state
        from robot_rt.learning.ppo import check_scripted_preset

        check_scripted_preset(scripted)
        if not (np.isfinite(residual_scale) and residual_scale > 0):
            raise ValueError(f"residual_scale: expected a finite number > 0, got {residual_scale!r}")
        params = ScriptedParams.preset(scripted).to_vector()
        n, steps = 16, 400
        env = TableTennisVectorEnv(n, human=HumanBehaviorModel.default(), max_episode_steps=1500, backend=backend)
        base = BatchedScriptedPolicy(n, params=params)
        features = BallStateFeatures(n)
        obs, _ = env.reset(seed=[int(seed) * 1000 + j for j in range(n)])
        frames = []
        for _ in range(steps):
            frames.append(features.extend(obs))
            obs, _, terminated, truncated, _ = env.step(base(obs))
            done = np.asarray(terminated | truncated)
            if done.any():
                base.reset(done)
                features.reset(done)
        low, high = env.single_action_space.low, env.single_action_space.high
        env.close()
        obs_dim = frames[0].shape[1]
        if obs_dim != env.single_observation_space.shape[0] + len(BALL_FEATURE_NAMES):
            raise RuntimeError(
                f"NeuralFamily: ball-state frames have {obs_dim} values, the env and its features disagree"
            )
        normalizer = RunningMeanStd(obs_dim)
        normalizer.update(torch.from_numpy(np.concatenate(frames)).double())
        net = BGSConfig()  # the network of `robot-rt train bgs` (a temporal conv over the history)
        torch.manual_seed(int(seed))
        actor = GaussianActor(
            PolicyConfig(
                obs_dim=obs_dim,
                action_dim=len(low),
                history=int(history),
                encoder=net.encoder,
                channels=net.channels,
                hidden=net.hidden,
            )
        )
        return policy_state(
            actor,
            normalizer,
            low,
            high,
            ball_state=True,
            residual_scale=float(residual_scale),
            scripted_params=params.tolist(),
            method="is2r-init",
            scripted=scripted,
        )

    def names(self) -> list[str]:
        return [f"{k}[{i}]" for k, size in zip(self.vec.names, self.vec.sizes) for i in range(size)]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.full(self.vec.dim, -self.param_bound), np.full(self.vec.dim, self.param_bound)

    def initial(self) -> np.ndarray:
        return np.clip(self.vec.get(), -self.param_bound, self.param_bound)

    @classmethod
    def es_defaults_for(cls, param_bound: float) -> dict:
        width = 2 * float(param_bound)
        sigma, step = cls.WEIGHT_SIGMA / width, cls.WEIGHT_STEP / width
        return {"sigma": sigma, "step_size": step, "real_sigma": sigma, "real_step_size": step}

    def batched(self, thetas: np.ndarray):
        return _NeuralBatch(self, np.asarray(thetas, dtype=np.float64))

    def save(self, theta: np.ndarray, path) -> Path:
        """Writes the policy with weights `theta` as a `policy.pt` (`neural_policy.load_policy`, `robot-rt run`)."""
        from robot_rt.learning.neural_policy import save_policy

        policy = self.single(theta)
        low, high = self.state["action_low"], self.state["action_high"]
        return save_policy(path, policy.actor, policy.normalizer, low, high, **self.state["wrappers"], method="is2r")

    def single(self, theta: np.ndarray):
        from robot_rt.learning.bgs import ParameterVector
        from robot_rt.learning.neural_policy import policy_from_state

        policy = policy_from_state(self.state, num_envs=1)
        ParameterVector(policy.actor).set(theta)
        policy.theta = np.asarray(theta, dtype=np.float64).copy()  # the parameter vector it plays (for logs)
        return policy


class _NeuralBatch:
    """N neural policies with their own weights [N, P] in one `NeuralEnvPolicy` (shared history, ball features
    and scripted base; one vmapped forward over the N weight vectors per step)."""

    def __init__(self, family: NeuralFamily, thetas: np.ndarray):
        import torch

        from robot_rt.learning.bgs import ParameterVector
        from robot_rt.learning.neural_policy import policy_from_state, policy_input

        self.policy = policy_from_state(family.state, num_envs=len(thetas))
        vec = ParameterVector(self.policy.actor)
        vectors = torch.as_tensor(thetas, dtype=torch.float32)
        normalizer = self.policy.normalizer

        @torch.no_grad()
        def unit_actions(frames, age):  # the one forward NeuralEnvPolicy.__call__ makes, per world's own weights
            x, mask = policy_input(torch.as_tensor(frames, dtype=torch.float32), torch.as_tensor(age), normalizer)
            out = vec.batched_forward(vectors, x[:, None], mask[:, None])[:, 0]
            return out.clamp_(-1.0, 1.0).numpy().astype(np.float64)

        self.policy.unit_actions = unit_actions

    def reset(self, mask=None) -> None:
        self.policy.reset(mask)

    def act(self, obs: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.policy(obs), dtype=np.float32)


class _ListBatch:
    def __init__(self, policies):
        self.policies = policies

    def reset(self, mask=None) -> None:
        for i, p in enumerate(self.policies):
            if mask is None or mask[i]:
                p.reset()

    def act(self, obs: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros((len(self.policies), 8), dtype=np.float32)
        for i, p in enumerate(self.policies):
            if active is None or active[i]:
                out[i] = p(obs[i])
        return out


class _ScriptedBatch:
    def __init__(self, policy):
        self.policy = policy

    def reset(self, mask=None) -> None:
        self.policy.reset(mask=mask)

    def act(self, obs: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.policy(obs), dtype=np.float32)  # batched: finished worlds cost nothing extra


class _SinglePolicy:
    """Env policy for one world (``deploy``): flat observation [obs_dim] or [1, obs_dim] -> action of the same
    leading shape; ``reset()`` between balls/rallies."""

    def __init__(self, batch, theta: np.ndarray):
        self.batch = batch
        self.theta = np.asarray(theta, dtype=np.float64).copy()  # the parameter vector it plays (for logs)

    def reset(self) -> None:
        self.batch.reset()

    def __call__(self, observation) -> np.ndarray:
        obs = np.asarray(observation, dtype=np.float64)
        action = self.batch.act(obs.reshape(1, -1))
        return action if obs.ndim == 2 else action[0]


POLICY_CHOICES = ("auto", "scripted", "heuristic", "neural")


def make_family(name: str, **neural_kwargs):
    """The policy family of ``--policy``; `neural_kwargs` go to `NeuralFamily` (ignored by the others)."""
    if name == "heuristic":
        return HeuristicFamily()
    if name in ("scripted", "auto"):
        return ScriptedFamily()
    if name == "neural":
        return NeuralFamily(**neural_kwargs)
    raise ValueError(f"policy: expected one of {POLICY_CHOICES}, got {name!r}")


UNIT_BOX_ES_DEFAULTS = {"sigma": 0.06, "step_size": 0.04, "real_sigma": 0.06, "real_step_size": 0.04}


def es_defaults(policy: str, param_bound: float = 10.0) -> dict:
    """The ES's sigma and step sizes in the unit box when the command line does not set them: the scripted and
    heuristic knobs are scaled to their ranges, a network's weights are not (`NeuralFamily.es_defaults_for`)."""
    if policy == "neural":
        return NeuralFamily.es_defaults_for(param_bound)
    return dict(UNIT_BOX_ES_DEFAULTS)


LOGGED_PARAMETERS = 64  # vectors longer than this (network weights) are logged as their norm, not in full


def parameter_summary(family) -> dict:
    names = family.names()
    if len(names) <= LOGGED_PARAMETERS:
        return {"parameter_names": names}
    return {"parameter_count": len(names)}


def theta_record(theta) -> dict:
    theta = np.asarray(theta, dtype=np.float64)
    if theta.size <= LOGGED_PARAMETERS:
        return {"theta": theta}
    return {"theta_norm": float(np.linalg.norm(theta))}


def neural_kwargs(cfg) -> dict:
    if cfg.policy != "neural":
        return {}
    return dict(
        init_policy=cfg.init_policy,
        seed=cfg.seed,
        param_bound=cfg.param_bound,
        residual_scale=cfg.residual_scale,
        scripted=cfg.scripted,
        backend=cfg.backend,
    )


# ================================================================================================ simulation
def evaluate(
    family,
    human: HumanBehaviorModel,
    thetas,
    episodes: int,
    seed: int,
    max_episode_steps: int = 1500,
    hit_bonus: float = 0.2,
    backend: str = "auto",
) -> dict:
    """Plays ``episodes`` episodes per parameter vector in one batched environment (sharded over the
    torch.distributed ranks when a process group is up) and returns per-member figures.

    World (m, j) is reset with seed ``seed + j`` for every member m (common random numbers) and plays exactly
    one episode. Returns ``rally`` [N, M] and ``hits`` [N, M] (paddle contacts) and ``fitness`` [N].
    """
    from robot_rt.envs.vector import TableTennisVectorEnv

    thetas = np.asarray(thetas, dtype=np.float64)
    if thetas.ndim != 2:
        raise ValueError(f"thetas: expected [N, P] parameter vectors, got shape {thetas.shape}")
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes: expected a positive int, got {episodes!r}")
    n_members = len(thetas)
    total = n_members * int(episodes)
    mine = dist.shard_indices(total)
    results: list = []
    if mine:
        idx = np.asarray(mine)
        member, episode = idx // episodes, idx % episodes
        n = len(idx)
        env = TableTennisVectorEnv(n, human=human, max_episode_steps=max_episode_steps, backend=backend)
        policy = family.batched(thetas[member])
        obs, _ = env.reset(seed=[int(seed) + int(j) for j in episode])
        policy.reset()
        active = np.ones(n, dtype=bool)
        rally = np.zeros(n, dtype=np.int64)
        hits = np.zeros(n, dtype=np.int64)
        while active.any():
            obs, _, terminated, truncated, info = env.step(policy.act(obs, active))
            hits += np.asarray(info["hit"], dtype=np.int64) * active
            ended = (terminated | truncated) & active
            rally[ended] = np.asarray(info["rally_length"])[ended]
            active &= ~ended
        env.close()
        results = [(int(r), int(h)) for r, h in zip(rally, hits)]
    everything = dist.gather_by_index(total, results)
    rally = np.array([r for r, _ in everything], dtype=np.int64).reshape(n_members, episodes)
    hits = np.array([h for _, h in everything], dtype=np.int64).reshape(n_members, episodes)
    fitness = (rally + hit_bonus * hits).mean(axis=1)
    return {"rally": rally, "hits": hits, "fitness": fitness}


# ================================================================================================ refit
def refit_human(
    tracks, prior: HumanBehaviorModel, prior_weight: float = 5.0, name: str = "fitted", min_points: int = 8
) -> HumanBehaviorModel:
    """The behaviour model fitted to real ball ``tracks`` ((t_s [T], positions_m [T, 3]) pairs), shrunk
    towards ``prior``: with n usable tracks and w = n / (n + prior_weight),
        mean = w mean_fit + (1 - w) mean_prior
        cov  = w cov_fit + (1 - w) cov_prior + w (1 - w) (mean_fit - mean_prior)(mean_fit - mean_prior)^T
    (the moments of the mixture of the two Gaussians: the prior acts as ``prior_weight`` pseudo-tracks). With
    20-60 tracks the fit dominates; with 3-5 the covariance does not collapse onto those few balls. The
    return model (which ball tracks do not observe) is kept from the prior."""
    if not (isinstance(prior_weight, (int, float)) and np.isfinite(prior_weight) and prior_weight >= 0):
        raise ValueError(f"prior_weight: expected a finite number >= 0, got {prior_weight!r}")
    if not isinstance(prior, HumanBehaviorModel):
        raise TypeError(f"prior: expected a HumanBehaviorModel, got {type(prior).__name__}")
    fitted = HumanBehaviorModel.fit(
        tracks, name=name, launch_x_m=prior.launch_x_m, min_points=min_points, returns=prior.returns
    )
    n = len(fitted.fitted_states)
    w = n / (n + float(prior_weight))
    diff = fitted.mean - prior.mean
    mean = w * fitted.mean + (1 - w) * prior.mean
    cov = w * fitted.cov + (1 - w) * prior.cov + w * (1 - w) * np.outer(diff, diff)
    cov = 0.5 * (cov + cov.T)
    cov[0, :] = 0.0
    cov[:, 0] = 0.0
    mean[0] = prior.launch_x_m
    model = HumanBehaviorModel(name=name, mean=mean, cov=cov, returns=copy.deepcopy(prior.returns))
    model.fit_report = fitted.fit_report
    model.n_tracks_used = n
    return model


def model_distance(a: HumanBehaviorModel, b: HumanBehaviorModel) -> float:
    """Distance between two behaviour models' launch distributions: the mean difference over the 8 free
    dimensions in units of ``b``'s standard deviations (RMS over dimensions)."""
    std = np.sqrt(np.maximum(np.diag(b.cov)[1:], 1e-12))
    return float(np.sqrt(np.mean(((a.mean[1:] - b.mean[1:]) / std) ** 2)))


# ================================================================================================ real side
def default_deploy(policy, *, n_balls: int, seed: int, log_path=None, physics: str = "kinematic") -> dict:
    """The real side: ``robot_rt.bridge.deploy.deploy`` against the real player; returns plain data.
    `physics`: the sim-server's robot, 'kinematic' or 'mujoco' (`--real-physics`, docs/mujoco.md)."""
    from robot_rt.bridge.deploy import DeployStopped, deploy, recover_transient_stops

    # the "real" side is the simulated far end on a shared machine: a stall of the policy or the machine stops the
    # loop (watchdog, sensor timeout, tracking error) with nothing wrong with the robot, and training goes on after
    # an explicit recovery. Any other stop (e.g. a candidate that drives the paddle out of the workspace box) ends
    # that deploy for good: its simulated robot is shut down with its server, the balls it did not play count as
    # lost (rally 0), and the stop is recorded (`protective_stop`), so the ES scores a candidate that trips the
    # robot's protection as the worst it can be. On hardware a person recovers; nothing here restarts a robot.
    stopped: list[str] = []
    try:
        result = deploy(
            policy,
            human="real_player",
            n_balls=n_balls,
            seed=seed,
            log_path=log_path,
            physics=physics,
            recover=recover_transient_stops,
        )
    except DeployStopped as stop:
        if stop.result is None:
            raise
        result, stopped = stop.result, list(stop.reasons)
    rally_lengths = [int(x) for x in result.rally_lengths]
    lost = max(n_balls - len(rally_lengths), 0) if stopped else 0
    return {
        "rally_lengths": rally_lengths + [0] * lost,
        "hits": int(result.hits),  # paddle contacts over all balls
        "outcomes": list(result.outcomes) + ["protective_stop"] * lost,
        "safety_events": {k: int(v) for k, v in result.safety_events.items() if v},
        "protective_stop": stopped,  # the reasons of a stop that ended the deploy ([]: none)
        "balls_lost_to_stop": lost,
        "tracks": [(np.asarray(t, dtype=np.float64), np.asarray(p, dtype=np.float64)) for t, p in result.tracks],
        "return_rate": float(result.return_rate),
        # what the server says it simulated (its final record has MuJoCo's stats only when it ran MuJoCo)
        "real_physics": "mujoco" if "mujoco" in result.robot_server else "kinematic",
    }


# ================================================================================================ the run
@dataclass
class Config:
    iterations: int  # k
    es_steps: int  # E: sim ES generations per i-S2R iteration
    directions: int  # D: antithetic pairs per generation
    top_k: int
    sigma: float
    step_size: float
    episodes: int  # M: episodes per candidate per generation
    max_episode_steps: int
    hit_bonus: float
    real_balls: int  # B: real balls per iteration (data for i-S2R, fine-tuning for S2R+FT; plus evaluation)
    real_directions: int  # D_real: antithetic pairs of the real-side fine-tuning ES
    real_sigma: float
    real_step_size: float
    prior_weight: float
    diag_episodes: int  # sim-only diagnostic per evaluated policy (not the real side): episodes vs real_player
    policy: str
    seed: int
    backend: str
    real_physics: str = "kinematic"  # the real side's robot: the kinematic sim-server or MuJoCo's
    # --policy neural (NeuralFamily): the start policy file (None: fresh, seeded), weight box, residual, its base
    init_policy: str | None = None
    param_bound: float = 10.0
    residual_scale: float = 0.2
    scripted: str = "rally"


SMOKE = dict(
    iterations=2,
    es_steps=1,
    directions=2,
    top_k=1,
    episodes=2,
    max_episode_steps=300,
    real_balls=3,
    real_directions=1,
    diag_episodes=4,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument
    d("--out", required=True, help="run directory")
    d("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    d("--smoke", action="store_true", help="tiny sizes: every stage in well under 2 minutes (CI)")
    d("--iterations", type=int, default=3, help="k, sim-to-real iterations (default 3)")
    d("--es-steps", type=int, default=8, help="E, sim ES generations per i-S2R iteration (default 8)")
    d("--directions", type=int, default=6, help="D, antithetic pairs per sim generation (default 6)")
    d("--top-k", type=int, default=3, help="directions kept per generation (default 3)")
    d(
        "--sigma",
        type=float,
        default=None,
        help="perturbation scale in the unit box (default 0.06; --policy neural: 0.02 weight units, 0.001 at "
        "--param-bound 10)",
    )
    d("--step-size", type=float, default=None, help="ES step in the unit box (default 0.04; neural: 0.01 weight units)")
    d("--episodes", type=int, default=4, help="M, episodes per candidate (default 4)")
    d("--max-episode-steps", type=int, default=1500, help="episode cap at 100 Hz (default 1500 = 15 s)")
    d("--hit-bonus", type=float, default=0.2, help="fitness bonus per paddle contact (default 0.2)")
    d("--real-balls", type=int, default=20, help="B, real balls per iteration (default 20)")
    d("--real-directions", type=int, default=2, help="antithetic pairs of the real fine-tuning ES (default 2)")
    d("--real-sigma", type=float, default=None, help="as --sigma, for the real-side fine-tuning ES")
    d("--real-step-size", type=float, default=None, help="as --step-size, for the real-side fine-tuning ES")
    d("--prior-weight", type=float, default=5.0, help="pseudo-tracks of H_0 in the refit (default 5)")
    d("--diag-episodes", type=int, default=48, help="sim diagnostic episodes vs the real player's model (default 48)")
    d(
        "--policy",
        default="auto",
        help="'scripted', 'heuristic', 'neural' (a history network as a residual on a scripted preset, the seed's "
        "policy class) or 'auto' (= scripted)",
    )
    d("--init-policy", default=None, help="--policy neural: start from this policy.pt (robot-rt train bgs|ppo)")
    d("--param-bound", type=float, default=10.0, help="--policy neural: weights stay in +-this (default 10)")
    d("--residual-scale", type=float, default=0.2, help="--policy neural, fresh: the residual's share (default 0.2)")
    d("--scripted", default="rally", help="--policy neural, fresh: the residual's scripted preset (default rally)")
    d("--seed", type=int, default=0)
    d("--backend", default="auto", help="environment backend (default auto)")
    d(
        "--real-physics",
        choices=("kinematic", "mujoco"),
        default="kinematic",
        help="the real side's robot: the kinematic sim-server (default) or MuJoCo dynamics and paddle contact "
        "(sim-server --physics mujoco, needs the [mujoco] extra; docs/mujoco.md)",
    )
    d("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args) -> Config:
    values = {k: getattr(args, k) for k in Config.__dataclass_fields__}
    if args.smoke:  # smoke sizes replace the defaults, not what the command line set explicitly
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        values.update({k: v for k, v in SMOKE.items() if values[k] == parser.get_default(k)})
    for key in ("param_bound", "residual_scale"):
        if not (np.isfinite(values[key]) and values[key] > 0):
            raise ValueError(f"--{key.replace('_', '-')}: expected a finite number > 0, got {values[key]!r}")
    for key, value in es_defaults(values["policy"], values["param_bound"]).items():
        if values[key] is None:
            values[key] = value
    for key in ("sigma", "step_size", "real_sigma", "real_step_size"):
        if not (np.isfinite(values[key]) and values[key] > 0):
            raise ValueError(f"--{key.replace('_', '-')}: expected a finite number > 0, got {values[key]!r}")
    for key in (
        "iterations",
        "es_steps",
        "directions",
        "top_k",
        "episodes",
        "max_episode_steps",
        "real_directions",
        "diag_episodes",
    ):
        if values[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')}: expected a positive int, got {values[key]}")
    if values["real_balls"] < 2 * values["real_directions"]:
        raise ValueError(
            f"--real-balls: expected at least 2 x --real-directions = {2 * values['real_directions']} "
            f"(one ball per fine-tuning candidate), got {values['real_balls']}"
        )
    if values["top_k"] > values["directions"]:
        raise ValueError(f"--top-k: expected <= --directions ({values['directions']}), got {values['top_k']}")
    return Config(**values)


def build_plan(cfg: Config) -> list[tuple]:
    """The stages in execution order (a checkpoint after each; generations checkpoint inside 'train').

    The two methods' real-side stages of iteration i run next to each other (S2R+FT's simulation training comes
    first), so both are measured under the same conditions: on a shared machine the real-time loop's timing,
    and so the rally lengths, drift with the load over minutes."""
    k, e = cfg.iterations, cfg.es_steps
    plan: list[tuple] = [("train", "shared", e)]
    if k > 1:
        plan.append(("train", "ft", (k - 1) * e))
    for i in range(k):
        if i > 0:
            plan.append(("train", "is2r", e))
            plan.append(("finetune", "ft", i))
        plan.append(("deploy", "is2r", i))
        plan.append(("deploy", "ft", i))
        plan.append(("refit", "is2r", i))
    return plan


class Is2rRun:
    def __init__(self, cfg: Config, out: Path | None, resume: bool, deploy_fn=None, progress: bool = True):
        self.cfg = cfg
        self.family = make_family(cfg.policy, **neural_kwargs(cfg))
        self.deploy_fn = deploy_fn or functools.partial(default_deploy, physics=cfg.real_physics)
        self.progress = progress and dist.is_main()
        self.plan = build_plan(cfg)
        config = {**cfg.__dict__, "policy_family": self.family.name, **parameter_summary(self.family)}
        self.rundir = RunDir(out, config, resume=resume) if dist.is_main() else None
        self.out = Path(out)
        state = None
        if resume:
            state = dist.broadcast(self.rundir.load_checkpoint() if self.rundir else None)
        if state is not None and state.get("family_state") is not None:  # the network the run started from
            self.family = NeuralFamily(state=state["family_state"], param_bound=cfg.param_bound)
        self.state = state or self._fresh_state()
        self.t0 = time.time() - self.state.get("elapsed_s", 0.0)

    def _fresh_state(self) -> dict:
        lo, hi = self.family.bounds()
        es = BGS(self.family.initial(), lo, hi, self._es_config(), seed=self.cfg.seed)
        h0 = HumanBehaviorModel.default()
        return {
            "version": CHECKPOINT_VERSION,
            "cursor": 0,
            "generation_in_stage": 0,
            "es": {"shared": es.state_dict()},
            "models": {"is2r": [h0.to_dict()]},
            "tracks": [],
            "deploys": {"is2r": [], "ft": []},
            "real_balls_learned": {"is2r": 0, "ft": 0},
            "sim_generations": {"shared": 0, "is2r": 0, "ft": 0},
            "elapsed_s": 0.0,
            "family_state": getattr(self.family, "state", None),  # NeuralFamily: normaliser, wrappers, start weights
        }

    def _es_config(self) -> ESConfig:
        c = self.cfg
        return ESConfig(num_directions=c.directions, top_k=c.top_k, sigma=c.sigma, step_size=c.step_size)

    # ------------------------------------------------------------------------------------------ helpers
    def _save(self) -> None:
        self.state["elapsed_s"] = time.time() - self.t0
        if self.rundir is not None:
            self.rundir.save_checkpoint("latest", self.state)

    def _log(self, **record) -> None:
        if self.rundir is not None:
            self.rundir.log(elapsed_s=round(time.time() - self.t0, 2), **record)

    def _es(self, branch: str) -> BGS:
        if branch not in self.state["es"]:
            # both branches start from the shared first E generations (the same computation)
            self.state["es"][branch] = copy.deepcopy(self.state["es"]["shared"])
            rng = np.random.default_rng([self.cfg.seed, _BRANCH_ID[branch]])
            self.state["es"][branch]["rng"] = rng.bit_generator.state
        return BGS.from_state_dict(self.state["es"][branch])

    def _theta(self, branch: str) -> np.ndarray:
        return self._es(branch).mean

    def _human(self, branch: str) -> HumanBehaviorModel:
        if branch == "is2r":
            return HumanBehaviorModel.from_dict(self.state["models"]["is2r"][-1])
        return HumanBehaviorModel.default()

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=True, dynamic_ncols=True, file=sys.stderr)

    # ------------------------------------------------------------------------------------------ stages
    def run(self) -> dict:
        while self.state["cursor"] < len(self.plan):
            kind, branch, arg = self.plan[self.state["cursor"]]
            getattr(self, "_stage_" + kind)(branch, arg)
            self.state["cursor"] += 1
            self.state["generation_in_stage"] = 0
            self._save()
        results = self.results()
        if self.rundir is not None:
            self.rundir.write_results(results)
            plot_results(results, self.rundir.plot_path("rally_length.png"))
        return results

    def _stage_train(self, branch: str, generations: int) -> None:
        es = self._es(branch)
        human = self._human(branch)
        done = self.state["generation_in_stage"]
        with self._bar(generations, f"sim ES [{branch}] vs {human.name}") as bar:
            bar.update(done)
            for g in range(done, generations):
                cand = es.ask()
                seed = self.cfg.seed * 1_000_003 + 7919 * es.generation + 101 * _BRANCH_ID[branch]
                ev = evaluate(
                    self.family,
                    human,
                    cand,
                    self.cfg.episodes,
                    seed,
                    self.cfg.max_episode_steps,
                    self.cfg.hit_bonus,
                    self.cfg.backend,
                )
                stats = es.tell(ev["fitness"])
                self.state["es"][branch] = es.state_dict()
                self.state["generation_in_stage"] = g + 1
                self.state["sim_generations"][branch] += 1
                rally = ev["rally"].mean()
                bar.set_postfix(
                    fitness=f"{stats['fitness_mean']:.2f}", best=f"{stats['fitness_max']:.2f}", rally=f"{rally:.2f}"
                )
                bar.update(1)
                self._log(
                    stage="train",
                    branch=branch,
                    human=human.name,
                    rally_mean=float(rally),
                    **theta_record(es.mean),
                    **stats,
                )
                self._save()

    def _deploy(self, theta: np.ndarray, n_balls: int, seed: int, tag: str) -> dict:
        result = None
        if dist.is_main():
            log_path = self.out / "deploys" / f"{tag}.rrlog"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            result = self.deploy_fn(self.family.single(theta), n_balls=n_balls, seed=seed, log_path=log_path)
        result = dist.broadcast(result)
        if result.get("protective_stop"):  # a stop ended this deploy: on record in the results (docs/is2r.md)
            self.state.setdefault("protective_stops", []).append(
                {"deploy": tag, "reasons": list(result["protective_stop"]), "balls_lost": result["balls_lost_to_stop"]}
            )
        return result

    def _stage_deploy(self, branch: str, iteration: int) -> None:
        theta = self._theta(branch)
        start = time.time()
        if self.progress:
            print(
                f"[is2r] deploy {branch} iteration {iteration}: {self.cfg.real_balls} real balls (real time)",
                file=sys.stderr,
            )
        res = self._deploy(
            theta,
            self.cfg.real_balls,
            seed=10_000 * (iteration + 1),
            tag=f"{branch}_eval_{iteration}",
        )
        # diagnostic, clearly not the real side: the same policy in the batched simulator against the real
        # player's behaviour model, on fixed seeds; the gap to the deploy is what the model alone does not explain
        diag = evaluate(
            self.family,
            HumanBehaviorModel.real_player(),
            theta[None],
            self.cfg.diag_episodes,
            seed=424_242,
            max_episode_steps=self.cfg.max_episode_steps,
            backend=self.cfg.backend,
        )["rally"][0]
        record = {
            "iteration": iteration,
            "sim_vs_real_player_model": {
                "mean": float(diag.mean()),
                "median": float(np.median(diag)),
                "ci95": bootstrap_ci(diag),
                "n": len(diag),
                "rally_lengths": diag.tolist(),
            },
            "rally_lengths": res["rally_lengths"],
            "return_rate": res["return_rate"],
            "hits_per_rally": res.get("hits", 0) / max(len(res["rally_lengths"]), 1),
            "outcomes": res.get("outcomes", []),
            "safety_events": res.get("safety_events", {}),
            "protective_stop": res.get("protective_stop", []),
            "theta": theta.tolist(),
            "real_balls_learned": self.state["real_balls_learned"][branch],
            "sim_generations": self.state["sim_generations"]["shared"] + self.state["sim_generations"][branch],
            "wall_s": time.time() - start,
        }
        if branch == "is2r":
            self.state["tracks"].extend(res["tracks"])
            self.state["real_balls_learned"]["is2r"] += self.cfg.real_balls
        self.state["deploys"][branch].append(record)
        self._log(
            stage="deploy",
            branch=branch,
            **{k: v for k, v in record.items() if k != "theta"},
            **theta_record(theta),
            tracks=len(res["tracks"]),
        )
        if isinstance(self.family, NeuralFamily) and self.rundir is not None:  # the deployed network, deployable again
            self.family.save(theta, self.out / "policies" / f"{branch}_{iteration}.pt")

    def _stage_refit(self, branch: str, iteration: int) -> None:
        h0 = HumanBehaviorModel.default()
        real = HumanBehaviorModel.real_player()
        try:
            model = refit_human(self.state["tracks"], h0, self.cfg.prior_weight, name=f"H{iteration + 1}")
            used = model.n_tracks_used
        except ValueError as err:  # too few usable tracks: keep the current model, say so
            model, used = self._human("is2r"), 0
            self._log(stage="refit", branch=branch, iteration=iteration, error=str(err))
        self.state["models"]["is2r"].append(model.to_dict())
        if self.rundir is not None:
            model.save(self.out / "models" / f"H{iteration + 1}.json")
        self._log(
            stage="refit",
            branch=branch,
            iteration=iteration,
            tracks_total=len(self.state["tracks"]),
            tracks_used=used,
            distance_to_real=model_distance(model, real),
            distance_default_to_real=model_distance(h0, real),
        )

    def _stage_finetune(self, branch: str, iteration: int) -> None:
        """One real-side ES generation: 2 D_real candidates, B / (2 D_real) balls each, through deploy."""
        cfg = self.cfg
        key = "ft_real"
        if key not in self.state["es"]:
            lo, hi = self.family.bounds()
            real_cfg = ESConfig(
                num_directions=cfg.real_directions,
                top_k=cfg.real_directions,
                sigma=cfg.real_sigma,
                step_size=cfg.real_step_size,
            )
            self.state["es"][key] = BGS(self._theta("ft"), lo, hi, real_cfg, seed=cfg.seed + 99).state_dict()
        es = BGS.from_state_dict(self.state["es"][key])
        cand = es.ask()
        per = cfg.real_balls // len(cand)
        fitness = []
        with self._bar(len(cand), f"real fine-tune [{iteration}]") as bar:
            for c, theta in enumerate(cand):
                res = self._deploy(theta, per, seed=777 * (iteration + 1), tag=f"ft_train_{iteration}_{c}")  # CRN
                fitness.append(real_fitness(res, per, cfg.hit_bonus))
                bar.set_postfix(rally=f"{fitness[-1]:.2f}")
                bar.update(1)
        stats = es.tell(np.asarray(fitness))
        self.state["es"][key] = es.state_dict()
        self.state["es"]["ft"]["u"] = es.u.copy()  # the evaluated policy of the ft branch is the fine-tuned mean
        self.state["real_balls_learned"]["ft"] += per * len(cand)
        self._log(
            stage="finetune", branch=branch, iteration=iteration, fitness=fitness, **theta_record(es.mean), **stats
        )

    # ------------------------------------------------------------------------------------------ results
    def results(self) -> dict:
        methods = {}
        for branch, label in (("is2r", "i-S2R"), ("ft", "S2R+FT")):
            methods[label] = [summarise(d) for d in self.state["deploys"][branch]]
        real = HumanBehaviorModel.real_player()
        models = [HumanBehaviorModel.from_dict(m) for m in self.state["models"]["is2r"]]
        return {
            "config": self.cfg.__dict__,
            "policy_family": self.family.name,
            **parameter_summary(self.family),
            "methods": methods,
            "human_model_distance_to_real": [model_distance(m, real) for m in models],
            # deploys a protective stop ended (their unplayed balls counted as lost): see default_deploy
            "protective_stops": self.state.get("protective_stops", []),
            "wall_time_s": time.time() - self.t0,
        }


def real_fitness(deploy_result: dict, n_balls: int, hit_bonus: float) -> float:
    """The sim fitness on the real side: (sum of rally lengths + hit_bonus x paddle contacts) / rallies, so the
    fine-tuning ES still has a signal while no return lands (the deploy reports contacts over all balls)."""
    rallies = len(deploy_result["rally_lengths"]) or n_balls
    return (float(np.sum(deploy_result["rally_lengths"])) + hit_bonus * deploy_result.get("hits", 0)) / rallies


def bootstrap_difference_ci(a, b, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of mean(a) - mean(b) for two independent samples, e.g. the rally lengths of
    two policies' runs: each sample is resampled on its own (the rallies of two runs are not pairs)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot: expected a positive int, got {n_boot!r}")
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    for name, v in (("a", x), ("b", y)):
        if v.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D sample, got shape {v.shape}")
        if v.size == 0:
            raise ValueError(f"{name}: expected at least one value, got none")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name}: contains NaN or Inf")
    rng = np.random.default_rng(seed)
    boots = rng.choice(x, (n_boot, x.size)).mean(1) - rng.choice(y, (n_boot, y.size)).mean(1)
    return [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]


def summarise(deploy_record: dict, n_boot: int = 2000) -> dict:
    """Rally-length figures of one evaluation deploy: mean with a 95 % bootstrap CI, median, histogram."""
    x = np.asarray(deploy_record["rally_lengths"], dtype=np.float64)
    keys = (
        "iteration",
        "real_balls_learned",
        "sim_generations",
        "return_rate",
        "hits_per_rally",
        "outcomes",
        "sim_vs_real_player_model",
    )
    out = {k: deploy_record.get(k) for k in keys}
    out["n_balls"] = int(len(x))
    if len(x) == 0:
        return {**out, "mean": None, "median": None, "ci95": None, "histogram": {}}
    values, counts = np.unique(x.astype(int), return_counts=True)
    return {
        **out,
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "ci95": bootstrap_ci(x, n_boot),
        "histogram": {str(int(v)): int(c) for v, c in zip(values, counts)},
        "rally_lengths": x.astype(int).tolist(),
    }


def merge_results(runs: list[dict], n_boot: int = 2000) -> dict:
    """Pools `robot-rt train is2r` results (results.json dicts) that differ only in their seeds: per method and
    iteration, the rally lengths of every seed's evaluation deploy together (mean with a 95 % bootstrap CI, median,
    histogram, as `summarise`), the per-seed means, and the paired difference i-S2R - S2R+FT.

    Both methods' evaluations of iteration i play the same serves (the deploy seed depends on i only), so ball j of
    seed s is a pair; the difference's interval resamples (seed, ball) pairs. Raises ValueError when the runs'
    settings differ in anything but the seed, a seed repeats, or the methods' iterations do not line up."""
    if not runs:
        raise ValueError("runs: expected at least one results dict")
    seeds = []
    for r in runs:
        changed = config_differences(runs[0]["config"], r["config"], ignore=("seed",))
        if changed:
            raise ValueError(f"runs: settings other than the seed differ: {changed}")
        seeds.append(r["config"]["seed"])
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"runs: a seed appears twice: {seeds}")
    labels = list(runs[0]["methods"])
    iterations = len(runs[0]["methods"][labels[0]])
    for r in runs:
        if any(len(r["methods"][label]) != iterations for label in labels):
            raise ValueError("runs: every run must have the same number of evaluation deploys per method")
    methods: dict = {label: [] for label in labels}
    paired = []
    for i in range(iterations):
        per_method = {}
        for label in labels:
            rows = [r["methods"][label][i] for r in runs]
            lengths = [x for row in rows for x in row["rally_lengths"]]
            diag = [x for row in rows for x in row["sim_vs_real_player_model"]["rally_lengths"]]
            balls = [row["n_balls"] for row in rows]
            record = {
                "iteration": i,
                "rally_lengths": lengths,
                "real_balls_learned": rows[0]["real_balls_learned"],
                "sim_generations": rows[0]["sim_generations"],
                "return_rate": float(np.average([row["return_rate"] for row in rows], weights=balls)),
                "hits_per_rally": float(np.average([row["hits_per_rally"] for row in rows], weights=balls)),
                "outcomes": [o for row in rows for o in row["outcomes"]],
                "sim_vs_real_player_model": {
                    "mean": float(np.mean(diag)),
                    "median": float(np.median(diag)),
                    "ci95": bootstrap_ci(diag, n_boot),
                    "n": len(diag),
                },
            }
            pooled = summarise(record, n_boot)
            pooled["seed_means"] = [row["mean"] for row in rows]
            pooled["outcome_counts"] = {o: pooled["outcomes"].count(o) for o in sorted(set(pooled["outcomes"]))}
            methods[label].append(pooled)
            per_method[label] = [row["rally_lengths"] for row in rows]
        if {"i-S2R", "S2R+FT"} <= set(per_method):
            a, b = per_method["i-S2R"], per_method["S2R+FT"]
            if all(len(x) == len(y) for x, y in zip(a, b)):
                diff = np.concatenate([np.subtract(x, y, dtype=np.float64) for x, y in zip(a, b)])
                paired.append({"iteration": i, "mean": float(diff.mean()), "ci95": bootstrap_ci(diff, n_boot)})
    return {
        "config": {k: v for k, v in runs[0]["config"].items() if k != "seed"},
        "seeds": seeds,
        "policy_family": runs[0].get("policy_family"),
        "methods": methods,
        "paired_difference_is2r_minus_ft": paired,
        "human_model_distance_to_real": [r["human_model_distance_to_real"] for r in runs],
        "protective_stops": {str(r["config"]["seed"]): r.get("protective_stops", []) for r in runs},
        "wall_time_s": [r["wall_time_s"] for r in runs],
    }


def plot_results(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robot_rt._io import atomic_write_bytes

    methods = results["methods"]
    k = max(len(v) for v in methods.values())
    fig, axes = plt.subplots(1, 2 + k, figsize=(4.5 * (2 + k), 3.8))
    ax = axes[1]
    for offset, (label, rows) in zip((-0.06, 0.06), methods.items()):
        ax.plot([r["iteration"] + offset for r in rows], [r["hits_per_rally"] for r in rows], marker="o", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("paddle contacts per rally vs real player")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[0]
    for offset, (label, rows) in zip((-0.06, 0.06), methods.items()):
        it = [r["iteration"] + offset for r in rows if r["mean"] is not None]
        mean = [r["mean"] for r in rows if r["mean"] is not None]
        lo = [r["mean"] - r["ci95"][0] for r in rows if r["mean"] is not None]
        hi = [r["ci95"][1] - r["mean"] for r in rows if r["mean"] is not None]
        med = [r["median"] for r in rows if r["mean"] is not None]
        line = ax.errorbar(it, mean, yerr=[lo, hi], marker="o", capsize=3, label=f"{label} mean (95% CI)")
        ax.plot(it, med, linestyle=":", marker="x", color=line[0].get_color(), label=f"{label} median")
        diag = [r["sim_vs_real_player_model"]["mean"] for r in rows if r["mean"] is not None]
        ax.plot(it, diag, linestyle="--", marker="s", alpha=0.5, color=line[0].get_color(), label=f"{label} sim diag.")
    ax.set_xlabel("iteration")
    ax.set_ylabel("rally length vs real player")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for i in range(k):
        ax = axes[2 + i]
        top = 0
        for offset, (label, rows) in zip((-0.2, 0.2), methods.items()):
            if i < len(rows) and rows[i]["histogram"]:
                hist = rows[i]["histogram"]
                xs = np.array([int(v) for v in hist]) + offset
                ax.bar(xs, list(hist.values()), width=0.4, label=label)
                top = max(top, max(int(v) for v in hist))
        ax.set_xticks(range(top + 1))
        ax.set_title(f"iteration {i}")
        ax.set_xlabel("rally length")
        ax.set_ylabel("balls")
        ax.legend(fontsize=7)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def run(args, deploy_fn=None) -> int:
    cfg = config_from_args(args)
    dist.init_from_env()
    main = dist.is_main()
    try:
        runner = Is2rRun(cfg, Path(args.out), args.resume, deploy_fn=deploy_fn, progress=not args.no_progress)
        results = runner.run()
    finally:
        dist.shutdown()
    if main:
        for label, rows in results["methods"].items():
            for r in rows:
                print(
                    f"{label:7s} iteration {r['iteration']}: rally mean {r['mean']:.2f} "
                    f"(95% CI {r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}), median {r['median']:.1f}, n={r['n_balls']}"
                    if r["mean"] is not None
                    else f"{label:7s} iteration {r['iteration']}: no balls"
                )
        print(f"results: {Path(args.out) / 'results.json'}  ({results['wall_time_s']:.0f} s)")
    return 0
