"""Distillation of a rally policy into a neural policy by DAgger: an MLP on the ball-tracker features learns the
expert's actions on the states it visits itself.

Design notes: docs/learning.md, section `robot_rt.learning.distill`.

    round 0:  play the expert, record (features, expert action)                       D = D_0
    round r:  play a_t = expert(s_t) with probability beta_r, else the learner's guarded action, and record the
              expert's action on every visited state (the expert runs on every step, so its trackers and plans
              stay current)                                                           D = D u D_r
              fit pi on D (Adam, MSE on normalised actions, continuing the optimiser), execute the EMA of its
              iterates

The learner is `gcbc.GCBCPolicy` with no goal (`goal_dim=0`) over `features.FeatureExtractor(spin=True)` (robot
state, the tracked ball, its predicted crossing of the hitting plane, the newest detection and the incoming spin
estimate: 40 values); its actions pass `robot_rt.envs.limit_guard.LimitGuard`, as the scripted policy's pass its
own brakes. Behaviour cloning alone drifts into states the expert never shows (pure BC of the shot policy: mean
rally 4.8 on 128 serves); DAgger's rounds label exactly those.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from robot_rt._io import atomic_write_bytes, atomic_write_json
from robot_rt.envs.features import FeatureExtractor, feature_dim
from robot_rt.envs.limit_guard import LimitGuard
from robot_rt.envs.observation import observation_layout
from robot_rt.estimation.batched_ukf import TRACKERS

from .gcbc import GCBCPolicy, train_gcbc

POLICY_FORMAT = "robot_rt.distilled_policy/1"
# an ensemble's file (PolicyEnsemble): its own tag, so that a reader from before ensembles refuses it by format
ENSEMBLE_FORMAT = "robot_rt.distilled_ensemble/1"
DISTILLED_FORMATS = (POLICY_FORMAT, ENSEMBLE_FORMAT)
# the serves DAgger collects on start here: the rally evaluations play serves s x 10^6 + i (seeds 0-2, and 5-6 for
# tuning), which training must not see
COLLECTION_SERVES_FROM = 10**8

__all__ = [
    "DISTILLED_FORMATS",
    "ENSEMBLE_FORMAT",
    "POLICY_FORMAT",
    "DistilledEnvPolicy",
    "PolicyEnsemble",
    "dagger_distill",
    "distilled_from_state",
    "load_distilled",
    "save_distilled",
    "save_ensemble",
]


class PolicyEnsemble(torch.nn.Module):
    """The mean action of M distilled networks of one shape (e.g. DAgger runs from different training seeds):

        a(x) = (1 / M) sum_m tanh(f_m(x))        (normalised actions, in [-1, 1] since each term is)

    Each member imitates the same deterministic expert, so their errors are partly independent and the mean is
    closer to the expert's action than a typical member's (the usual bagging argument); the guard then acts on the
    mean, as on one network's action. Same interface as a goal-free `GCBCPolicy` (`act`, `feat_dim`, `goal_dim`)."""

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if not members or not all(isinstance(m, GCBCPolicy) for m in members):
            raise ValueError("members: expected a non-empty sequence of GCBCPolicy networks")
        shapes = {repr(m.config()) for m in members}
        if len(shapes) != 1:
            raise ValueError(f"members: expected networks of one shape, got {sorted(shapes)}")
        self.members = torch.nn.ModuleList(members)
        self.feat_dim, self.goal_dim, self.act_dim = members[0].feat_dim, members[0].goal_dim, members[0].act_dim

    def forward(self, features: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(features, goals) for m in self.members]).mean(0)

    @torch.no_grad()
    def act(self, features: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """NumPy in, the members' mean normalised action [B, act_dim] float32 out (inference mode)."""
        f = torch.as_tensor(np.asarray(features, dtype=np.float32))
        g = torch.as_tensor(np.asarray(goals, dtype=np.float32))
        return self.forward(f, g).numpy()


def _check_env_network(model) -> None:
    """What an env policy's network must be: goal-free, over `FeatureExtractor(spin=True)`'s features."""
    if model.goal_dim != 0:
        raise ValueError(f"model: expected a policy without a goal (goal_dim 0), got goal_dim {model.goal_dim}")
    if model.feat_dim != feature_dim(spin=True):
        raise ValueError(f"model: expected {feature_dim(spin=True)} input features, got {model.feat_dim}")


class DistilledEnvPolicy:
    """A distilled policy for N environments: `policy(observations [N, obs_dim]) -> env actions [N, 8]` (float32,
    normalised, guarded); `reset(mask)` when environments reset (as for `BatchedScriptedPolicy`)."""

    def __init__(
        self, model: GCBCPolicy | PolicyEnsemble, num_envs: int, guard: LimitGuard | None = None, tracker: str = "fit"
    ):
        _check_env_network(model)
        self.model = model.eval()
        self.n = int(num_envs)
        self.features = FeatureExtractor(self.n, spin=True, tracker=tracker)  # the tracker it was trained with
        self.tracker = tracker
        self.guard = guard if guard is not None else LimitGuard()
        self.q_columns = observation_layout(self.guard.robot.dof, self.features.history)["q"]
        self._no_goal = np.zeros((self.n, 0), dtype=np.float32)

    def reset(self, mask=None) -> None:
        self.features.reset(mask)

    def act(self, observations) -> tuple[np.ndarray, np.ndarray]:
        """(guarded actions [N, 8], the features they came from [N, 40])."""
        obs = np.asarray(observations, dtype=np.float64)
        feats = self.features(obs)
        raw = self.model.act(feats, self._no_goal)
        return self.guard(obs[:, self.q_columns], raw), feats

    def __call__(self, observations) -> np.ndarray:
        """Actions [N, 8] for observations [N, obs_dim]; one observation [obs_dim] when N = 1 (what the real-time
        loop's `EnvPolicyAdapter` passes) gives one action [8]."""
        obs = np.asarray(observations, dtype=np.float64)
        single = obs.ndim == 1 and self.n == 1
        actions = self.act(obs[None] if single else obs)[0]
        return actions[0] if single else actions


def save_distilled(path, model: GCBCPolicy | PolicyEnsemble, meta: dict | None = None, tracker: str = "fit") -> Path:
    """Writes the policy atomically: format `POLICY_FORMAT` with one network's config and weights under "model", or
    `ENSEMBLE_FORMAT` with an ensemble's members under "models"; the ball tracker its features use; free-form
    `meta`."""
    if tracker not in TRACKERS:
        raise ValueError(f"tracker: expected one of {TRACKERS}, got {tracker!r}")
    state = {"tracker": tracker, "meta": dict(meta or {})}
    if isinstance(model, PolicyEnsemble):
        state.update(format=ENSEMBLE_FORMAT, models=[m.state() for m in model.members])
    elif isinstance(model, GCBCPolicy):
        state.update(format=POLICY_FORMAT, model=model.state())
    else:
        raise ValueError(f"model: expected a GCBCPolicy or a PolicyEnsemble, got {type(model).__name__}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_distilled(path, num_envs: int = 1) -> DistilledEnvPolicy:
    """The policy `save_distilled` wrote, read with ``weights_only=True`` (unpickling runs no code from the file)."""
    path = Path(path)
    return distilled_from_state(_read_state(path, "path"), num_envs, source=str(path))


def _read_state(path: Path, argument: str) -> dict:
    """A policy file's saved state, read with ``weights_only=True``; `argument` names the caller's argument."""
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: no policy file {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def distilled_from_state(state, num_envs: int = 1, source: str = "policy state") -> DistilledEnvPolicy:
    """The policy held by a loaded policy file's `state` (what `save_distilled` wrote)."""
    model, tracker = _model_from_state(state, source)
    return DistilledEnvPolicy(model, num_envs, tracker=tracker)


def _model_from_state(state, source: str) -> tuple[GCBCPolicy | PolicyEnsemble, str]:
    """(network or ensemble, ball tracker) of a loaded policy file's `state`, checked; `source` names it in errors."""
    if not isinstance(state, dict) or state.get("format") not in DISTILLED_FORMATS:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{source}: expected a distilled policy (format one of {DISTILLED_FORMATS}), got {got!r}")
    tracker = state.get("tracker", "fit")  # files before the option: the fit tracker
    if tracker not in TRACKERS:
        raise ValueError(f"{source}: tracker {tracker!r}, expected one of {TRACKERS}")
    ensemble = state["format"] == ENSEMBLE_FORMAT
    key, other = ("models", "model") if ensemble else ("model", "models")
    if key not in state or other in state:
        raise ValueError(f"{source}: a {state['format']!r} file holds its network(s) under {key!r} alone")
    states = state[key] if ensemble else [state[key]]
    if not isinstance(states, list) or not states:
        raise ValueError(f"{source}: 'models' expected a non-empty list of network states")
    networks = []
    for i, net in enumerate(states):
        try:
            networks.append(GCBCPolicy.from_state(net))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a malformed state: name the file and member
            raise ValueError(f"{source}: network {i} is not a GCBCPolicy state ({type(e).__name__}: {e})") from None
    return (PolicyEnsemble(networks) if ensemble else networks[0]), tracker


def save_ensemble(out_path, policy_paths) -> Path:
    """Writes the `PolicyEnsemble` of the distilled policy files `policy_paths` (an ensemble file contributes its
    members) to `out_path`, atomically. The files must share the ball tracker and the network shape; the meta
    names the member files and keeps their own meta. The same network twice (a repeated file, or a file and an
    ensemble holding it) is refused: it would weigh that network double."""
    if isinstance(policy_paths, (str, Path)):
        raise ValueError(f"policy_paths: expected a sequence of policy files, got one path {str(policy_paths)!r}")
    paths = [Path(p) for p in policy_paths]
    if len(paths) < 2:
        raise ValueError(f"policy_paths: expected at least two policy files, got {len(paths)}")
    members, trackers, member_meta = [], set(), []
    for path in paths:
        state = _read_state(path, "policy_paths")
        model, tracker = _model_from_state(state, str(path))  # no env policy (robot, trackers) built per file
        trackers.add(tracker)
        members += list(model.members) if isinstance(model, PolicyEnsemble) else [model]
        member_meta.append({"file": str(path), "meta": state.get("meta", {})})
    if len(trackers) != 1:
        raise ValueError(f"policy_paths: the files' features come from different ball trackers {sorted(trackers)}")
    ensemble = PolicyEnsemble(members)  # refuses networks of different shapes
    _check_env_network(ensemble)  # as loading it will
    for j, later in enumerate(members):
        for i in range(j):
            if all(torch.equal(a, b) for a, b in zip(members[i].state_dict().values(), later.state_dict().values())):
                raise ValueError(f"policy_paths: network {j} repeats network {i} (it would count twice in the mean)")
    return save_distilled(out_path, ensemble, {"ensemble_of": member_meta}, trackers.pop())


class _NoReset:
    """A one-argument policy whose `reset` does nothing: `_play` resets the expert and the features itself, on the
    step the new episodes' first observations arrive."""

    def __init__(self, step):
        self.step = step

    def __call__(self, obs):
        return self.step(obs)

    def reset(self, mask=None) -> None:
        pass


def _play(
    env, expert, learner: DistilledEnvPolicy | None, beta: float, steps: int, seed: int, rng, tracker="fit", wrap=None
):
    """`steps` steps of the N environments (reset with seeds seed + i); returns (features, expert actions).

    The vector env resets an environment on the step after the one that ended its episode (NEXT_STEP autoreset), and
    ignores that step's action: its row is not recorded, and the trackers are reset once its new episode's first
    observation has arrived (as `BatchedScriptedPolicy.reset` asks). `wrap` (optional): a function of the mixed
    policy (one argument, `reset(mask)`) returning the env policy to play, e.g. the real-time loop's trajectory
    model; the rows are what the mixed policy saw and the expert's action there, and the wrapper is reset with the
    environments that ended, before their ignored step (as `LoopTrajectoryPolicy.reset` asks), unless the env keeps
    the robot where an episode left it (`WorldConfig.keep_robot_pose`): then the robot goes on from there, as through
    the loop between rallies, and so does the wrapper's trajectory (restarted, with `restart(mask)`, where the env
    sent a robot home)."""
    n = env.num_envs
    features = FeatureExtractor(n, spin=True, tracker=tracker) if learner is None else learner.features
    features.reset()
    expert.reset()
    obs, _ = env.reset(seed=list(range(seed, seed + n)))
    rows_f, rows_a = [], []
    resetting = np.zeros(n, dtype=bool)  # these environments' next step is their reset

    def mixed(seen):
        expert_action = expert(seen)
        if learner is None:
            feats, action = features(seen), expert_action
        else:
            learner_action, feats = learner.act(seen)
            action = np.where((rng.random(n) < beta)[:, None], expert_action, learner_action)
        keep = ~resetting
        rows_f.append(feats[keep])
        rows_a.append(expert_action[keep])
        return action

    policy = mixed if wrap is None else wrap(_NoReset(mixed))
    if wrap is not None:
        policy.reset()
    reset_wrap = wrap is not None and not env.world.config.keep_robot_pose
    for _ in range(steps):
        action = policy(obs)
        obs, _, terminated, truncated, _ = env.step(action)
        if resetting.any():  # obs now holds their new episodes' first observations
            features.reset(resetting)
            expert.reset(resetting)
            if wrap is not None and not reset_wrap:  # a kept robot the env sent home: its trajectory restarts there
                policy.restart(resetting & env.world.robot_sent_home)
        resetting = terminated | truncated
        if reset_wrap and resetting.any():
            policy.reset(resetting)
    return np.concatenate(rows_f), np.concatenate(rows_a)


def dagger_distill(
    make_expert: Callable[[int], object],
    out_dir,
    *,
    num_envs: int = 256,
    steps_per_round: int = 1500,
    betas: tuple[float, ...] = (0.5, 0.3, 0.1, 0.0, 0.0),
    train_steps: int = 8000,
    batch_size: int = 1024,
    hidden: tuple[int, ...] = (256, 256),
    lr: float = 1e-3,
    ema_decay: float = 0.999,
    seed: int = 0,
    evaluate: Callable[[DistilledEnvPolicy, int], dict] | None = None,
    log: Callable[[str], None] = print,
    tracker: str = "fit",
    human=None,
    env_robot=None,
    wrap_policy=None,
    env_config=None,
) -> dict:
    """Distils `make_expert(num_envs)` (a batched policy with `reset(mask)`, e.g. `rally_shot_policy`) by DAgger
    (module docstring): round 0 plays the expert, then one round per entry of `betas` (the expert's share of the
    executed actions). After every fit the EMA policy is written to OUT/policy_round{r}.pt and OUT/policy.pt, and
    `evaluate(policy, round)` (optional) adds its figures to the round's log; OUT/log.json holds the rounds.
    Collection serves: seed + COLLECTION_SERVES_FROM + 10^6 r + i, apart from the rally evaluations' (s x 10^6 + i
    for s < 100). `tracker`: the ball tracker of the learner's features ('fit', 'ukf'). `human` (a
    HumanBehaviorModel; None: the default human), `env_robot` (None: the default robot) and `wrap_policy` (see
    `_play`) set the env the rounds are played in: `tools/distill_rally_policy.py --loop-model` plays them with the
    env's robot on the real-time loop's trajectory (`robot_rt.bridge.loop_model`); `env_config` (a WorldConfig;
    None: the defaults), e.g. the time between rallies (`serve_delay_s`, `keep_robot_pose`). Returns the log."""
    from robot_rt.envs.vector import TableTennisVectorEnv

    for name, value in (
        ("num_envs", num_envs),
        ("steps_per_round", steps_per_round),
        ("train_steps", train_steps),
        ("batch_size", batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if not betas or any(not (0.0 <= b <= 1.0) for b in betas):
        raise ValueError(f"betas: expected a non-empty sequence of shares in [0, 1], got {betas!r}")
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden: expected a non-empty tuple of positive widths, got {hidden!r}")
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    if not (isinstance(ema_decay, (int, float)) and 0.0 <= ema_decay < 1.0):
        raise ValueError(f"ema_decay: expected a number in [0, 1), got {ema_decay!r}")
    if tracker not in TRACKERS:
        raise ValueError(f"tracker: expected one of {TRACKERS}, got {tracker!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = TableTennisVectorEnv(num_envs, human=human, robot=env_robot, config=env_config, max_episode_steps=3000)
    expert = make_expert(num_envs)
    history: list[dict] = []
    t0 = time.time()
    try:
        feats, actions = _play(
            env, expert, None, 1.0, steps_per_round, seed + COLLECTION_SERVES_FROM, rng, tracker, wrap_policy
        )
        model = GCBCPolicy(feats.shape[1], goal_dim=0, act_dim=actions.shape[1], hidden=hidden)
        model.fit_normalisation(feats, np.zeros((len(feats), 0), dtype=np.float32))
        ema = GCBCPolicy(feats.shape[1], goal_dim=0, act_dim=actions.shape[1], hidden=hidden)
        ema.load_state_dict(model.state_dict())
        optimizer = None
        for r in range(len(betas) + 1):
            if r > 0:
                learner = DistilledEnvPolicy(ema, num_envs, tracker=tracker)
                first = seed + COLLECTION_SERVES_FROM + 10**6 * r
                f_r, a_r = _play(env, expert, learner, betas[r - 1], steps_per_round, first, rng, wrap=wrap_policy)
                feats, actions = np.concatenate([feats, f_r]), np.concatenate([actions, a_r])
            optimizer, losses = train_gcbc(
                model,
                feats,
                np.zeros((len(feats), 0), dtype=np.float32),
                actions,
                steps=train_steps,
                batch_size=batch_size,
                lr=lr,
                seed=seed + r,
                optimizer=optimizer,
                ema=ema,
                ema_decay=ema_decay,
            )
            entry = {
                "round": r,
                "expert_share": 1.0 if r == 0 else betas[r - 1],
                "samples": int(len(feats)),
                "train_loss": float(np.mean(losses[-200:])),
                "wall_s": time.time() - t0,
            }
            meta = {"round": r, "samples": int(len(feats)), "expert": getattr(make_expert, "__name__", "expert")}
            save_distilled(out / f"policy_round{r}.pt", ema, meta, tracker)
            save_distilled(out / "policy.pt", ema, meta, tracker)
            if evaluate is not None:
                entry.update(evaluate(DistilledEnvPolicy(ema, num_envs, tracker=tracker), r))
            history.append(entry)
            atomic_write_json(out / "log.json", {"rounds": history})
            log(
                f"round {r}: expert share {entry['expert_share']:.2f}, {entry['samples']} samples, "
                f"loss {entry['train_loss']:.5f}, {entry['wall_s']:.0f} s"
                + "".join(f", {k} {v:.3f}" for k, v in entry.items() if k.startswith("eval_"))
            )
    finally:
        env.close()
    return {"rounds": history}
