"""Neural table-tennis policies over an observation history (the seed's i-S2R policy class), and their export.

Design notes: docs/learning.md, section `robot_rt.learning.neural_policy`.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_rt._io import atomic_write_bytes

POLICY_FORMAT = "robot_rt.neural_policy/1"


# ================================================================================================ normalisation
class RunningMeanStd:
    """Running mean and variance of feature vectors [..., D] (parallel/Chan update in float64), as gymnasium's
    NormalizeObservation and stable-baselines3's VecNormalize keep them: count starts at `epsilon`, the
    normalised value is clip((x - mean) / sqrt(var + 1e-8), -clip, clip)."""

    def __init__(self, dim: int, epsilon: float = 1e-4, clip: float = 10.0):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip: expected a positive finite number, got {clip!r}")
        self.dim = int(dim)
        self.clip = float(clip)
        self.mean = torch.zeros(self.dim, dtype=torch.float64)
        self.var = torch.ones(self.dim, dtype=torch.float64)
        self.count = float(epsilon)
        self._refresh()

    def _refresh(self) -> None:
        self._mean32 = self.mean.float()
        self._inv_std32 = (1.0 / torch.sqrt(self.var + 1e-8)).float()

    @staticmethod
    def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(mean [D], population variance [D], count) of x [..., D] in float64."""
        flat = torch.as_tensor(x).reshape(-1, x.shape[-1]).to(torch.float64)
        if flat.shape[0] == 0:
            return torch.zeros(flat.shape[1], dtype=torch.float64), torch.zeros(flat.shape[1], dtype=torch.float64), 0
        return flat.mean(0), flat.var(0, unbiased=False), int(flat.shape[0])

    def update(self, x: torch.Tensor) -> None:
        x = torch.as_tensor(x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x: expected [..., {self.dim}], got {tuple(x.shape)}")
        self.update_from_moments(*self.moments(x))

    def update_from_moments(self, batch_mean, batch_var, batch_count: int) -> None:
        if batch_count <= 0:
            return
        batch_mean = torch.as_tensor(batch_mean, dtype=torch.float64)
        batch_var = torch.as_tensor(batch_var, dtype=torch.float64)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * (batch_count / total)
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * (self.count * batch_count / total)
        self.var = m2 / total
        self.count = total
        self._refresh()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float32 normalised features of x [..., D]."""
        return ((x.float() - self._mean32) * self._inv_std32).clamp_(-self.clip, self.clip)

    def state_dict(self) -> dict:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count, "clip": self.clip}

    def load_state_dict(self, state: dict) -> None:
        self.mean = torch.as_tensor(state["mean"], dtype=torch.float64).clone()
        self.var = torch.as_tensor(state["var"], dtype=torch.float64).clone()
        if self.mean.shape != (self.dim,) or self.var.shape != (self.dim,):
            raise ValueError(f"state: expected mean/var of shape ({self.dim},), got {tuple(self.mean.shape)}")
        self.count = float(state["count"])
        self.clip = float(state.get("clip", self.clip))
        self._refresh()


def history_mask(age: torch.Tensor, history: int) -> torch.Tensor:
    """[..., history] bool: which positions (oldest first, newest last) of a window belong to the current episode,
    for `age` [...] = steps since the episode's first observation (0 at that observation)."""
    back = torch.arange(history - 1, -1, -1, device=age.device)  # steps back from the newest
    return back <= age.unsqueeze(-1)


def policy_input(raw: torch.Tensor, age: torch.Tensor, normalizer: RunningMeanStd) -> tuple[torch.Tensor, torch.Tensor]:
    """Network input of raw frames [B, H, D] (oldest first) whose newest is `age` [B] steps into its episode:
    (normalised frames [B, H, D] float32, mask [B, H] of the frames that belong to the episode). The networks zero
    the features of the masked frames (padding before the episode's first observation)."""
    return normalizer.normalize(raw), history_mask(age, raw.shape[1])


# ================================================================================================ networks
@dataclass(frozen=True)
class PolicyConfig:
    obs_dim: int
    action_dim: int
    history: int = 8
    encoder: str = "frame"  # 'frame', 'conv' or 'mlp' (docs/learning.md, `robot_rt.learning.neural_policy`)
    channels: tuple[int, ...] = (32,)  # 'frame': features per frame (first value); 'conv': per temporal conv layer
    hidden: tuple[int, ...] = (128,)  # fully connected layers over the flattened per-frame features
    init_log_std: float = -0.5
    extra: dict = field(default_factory=dict)  # free-form notes saved with the policy (e.g. env id)

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "history"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"PolicyConfig.{name}: expected a positive int, got {v!r}")
        if self.encoder not in ("frame", "conv", "mlp"):
            raise ValueError(f"PolicyConfig.encoder: expected 'frame', 'conv' or 'mlp', got {self.encoder!r}")
        if self.encoder == "frame" and len(self.channels) < 1:
            raise ValueError("PolicyConfig: the 'frame' encoder needs channels (features per frame)")
        if self.encoder == "conv" and self.history - 2 * len(self.channels) < 1:
            raise ValueError(
                f"PolicyConfig: {len(self.channels)} kernel-3 convolutions need history >= {2 * len(self.channels) + 1}"
                f", got {self.history}"
            )
        for name in ("channels", "hidden"):
            if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in getattr(self, name)):
                raise ValueError(f"PolicyConfig.{name}: expected positive ints, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["hidden"] = list(self.channels), list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PolicyConfig:
        d = dict(d)
        d["channels"], d["hidden"] = tuple(d.get("channels", ())), tuple(d.get("hidden", ()))
        return cls(**d)


def _layer(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class TemporalConv(nn.Module):
    """A kernel-3, stride-1, unpadded convolution over time, [B, L, C_in] -> [B, L - 2, C_out], as one matrix
    product over the sliding windows (im2col). Measured on the 2-core CPU for these small shapes: faster than
    nn.Conv1d (oneDNN) and than a product per tap; [B, L, C] is also the layout the rollout buffer holds."""

    def __init__(self, c_in: int, c_out: int, gain: float):
        super().__init__()
        self.linear = _layer(nn.Linear(3 * c_in, c_out), gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = x.unfold(1, 3, 1)  # [B, L - 2, C_in, 3]
        return self.linear(windows.reshape(windows.shape[0], windows.shape[1], 3 * windows.shape[2]))  # B may be 0


class HistoryEncoder(nn.Module):
    """Normalised history [B, H, D] + mask [B, H] -> [B, features] (tanh activations), in two parts:
    `frame_features` maps each frame on its own ([..., D] -> [..., C]: identity for 'mlp' and 'conv', a linear layer
    + tanh for 'frame'), `body` the masked per-frame features [B, H, C] to the output. A rollout computes each
    frame's features once, when the frame arrives, and reuses them in the next H windows."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        gain = math.sqrt(2.0)
        self.frame = None
        width_per_frame, length = cfg.obs_dim, cfg.history
        layers: list[nn.Module] = []
        if cfg.encoder == "frame":
            self.frame = _layer(nn.Linear(cfg.obs_dim, cfg.channels[0]), gain)
            width_per_frame = cfg.channels[0]
        elif cfg.encoder == "conv":
            for c in cfg.channels:
                layers += [TemporalConv(width_per_frame, c, gain), nn.Tanh()]
                width_per_frame, length = c, length - 2
        self.frame_width = cfg.channels[0] if cfg.encoder == "frame" else cfg.obs_dim
        self.conv = nn.Sequential(*layers)
        width = width_per_frame * length
        fc: list[nn.Module] = []
        for h in cfg.hidden:
            fc += [_layer(nn.Linear(width, h), gain), nn.Tanh()]
            width = h
        self.fc = nn.Sequential(*fc)
        self.out_features = width

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.frame is None else torch.tanh(self.frame(x))

    def body(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(features).flatten(1))

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.body(self.frame_features(history) * mask.unsqueeze(-1))


class GaussianActor(nn.Module):
    """Diagonal Gaussian over actions: mean from the history encoder, state-independent log std."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = HistoryEncoder(cfg)
        self.mean = _layer(nn.Linear(self.encoder.out_features, cfg.action_dim), 0.01)
        self.log_std = nn.Parameter(torch.full((cfg.action_dim,), float(cfg.init_log_std)))

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The action mean [B, A] of normalised histories [B, H, D] with their masks [B, H]."""
        return self.mean(self.encoder(history, mask))

    def mean_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The action mean of masked per-frame features [B, H, C] (the rollout's cached path)."""
        return self.mean(self.encoder.body(features))

    def distribution(self, history: torch.Tensor, mask: torch.Tensor) -> torch.distributions.Normal:
        mean = self(history, mask)
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))


class Critic(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.encoder = HistoryEncoder(cfg)
        self.value = _layer(nn.Linear(self.encoder.out_features, 1), 1.0)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.value(self.encoder(history, mask)).squeeze(-1)

    def value_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.value(self.encoder.body(features)).squeeze(-1)


# ================================================================================================ export
class NeuralEnvPolicy:
    """Deployable policy: flat observations in, deterministic actions out, history kept inside (docs/learning.md, `robot_rt.learning.neural_policy`).

    Args:
        actor: a `GaussianActor` (its mean, clipped to [-1, 1], is the action in the unit box); normalizer: the
            observation statistics it was trained with; action_low/action_high: the env's action bounds (the unit
            box is mapped onto them);
        num_envs: batch size of the calls (1: also accepts a single observation [obs_dim]);
        ball_state: the policy was trained on `robot_rt.envs.wrappers.BallStateObservation` observations: the same
            ball-state values are computed here from the raw observation (hit_plane_x_m: that wrapper's plane);
        residual_scale: > 0 when trained with `ResidualScripted`: the action is the scripted policy's plus
            residual_scale x half range x the network's output, clipped to the bounds;
        scripted_params: the scripted base's `ScriptedParams` vector (None: its defaults)."""

    def __init__(
        self,
        actor: GaussianActor,
        normalizer: RunningMeanStd,
        action_low,
        action_high,
        num_envs: int = 1,
        *,
        ball_state: bool = False,
        residual_scale: float = 0.0,
        hit_plane_x_m: float = 1.7,
        scripted_params=None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
        if not (math.isfinite(residual_scale) and residual_scale >= 0):
            raise ValueError(f"residual_scale: expected a finite number >= 0, got {residual_scale!r}")
        self.actor = actor.eval()
        self.cfg = actor.cfg
        self.normalizer = normalizer
        self.action_low = np.asarray(action_low, dtype=np.float64)
        self.action_high = np.asarray(action_high, dtype=np.float64)
        if self.action_low.shape != (self.cfg.action_dim,) or self.action_high.shape != (self.cfg.action_dim,):
            raise ValueError(f"action_low/action_high: expected shape ({self.cfg.action_dim},)")
        self._centre = (self.action_high + self.action_low) / 2
        self._half = (self.action_high - self.action_low) / 2
        self.n = int(num_envs)
        self.ball_state = bool(ball_state)
        self.residual_scale = float(residual_scale)
        self.hit_plane_x_m = float(hit_plane_x_m)
        self.features = None
        self.scripted = None
        self.obs_dim = self.cfg.obs_dim  # what the network sees
        if self.ball_state:
            from robot_rt.envs.wrappers import BALL_FEATURE_NAMES, BallStateFeatures

            self.features = BallStateFeatures(self.n, hit_plane_x_m=self.hit_plane_x_m)
            self.obs_dim = self.cfg.obs_dim - len(BALL_FEATURE_NAMES)  # what the env gives
        if self.residual_scale > 0:
            from robot_rt.envs.scripted import BatchedScriptedPolicy

            self.scripted = BatchedScriptedPolicy(self.n, params=None if scripted_params is None else scripted_params)
        self.scripted_params = None if scripted_params is None else [float(x) for x in scripted_params]
        self.history = self.cfg.history
        self._frames = torch.zeros(self.n, self.history, self.cfg.obs_dim)
        self._age = torch.full((self.n,), -1, dtype=torch.int64)  # -1: no observation yet in this episode

    def reset(self, mask=None) -> None:
        """Starts a new episode for the environments where `mask` is True (all when None)."""
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.n,) or mask.dtype != np.bool_:
                raise ValueError(f"mask: expected a bool array of shape ({self.n},), got {mask.dtype} {mask.shape}")
        m = slice(None) if mask is None else torch.from_numpy(mask)
        self._age[m] = -1
        self._frames[m] = 0.0
        if self.features is not None:
            self.features.reset(mask)
        if self.scripted is not None:
            self.scripted.reset(mask)

    def _parse(self, observations) -> np.ndarray:
        obs = np.asarray(observations, dtype=np.float32)
        if obs.ndim == 1 and self.n == 1:
            obs = obs[None]
        if obs.shape != (self.n, self.obs_dim):
            raise ValueError(f"observations: expected shape ({self.n}, {self.obs_dim}), got {tuple(obs.shape)}")
        if not np.isfinite(obs).all():
            raise ValueError("observations: contains NaN or Inf")
        return obs

    def push(self, frames: np.ndarray) -> None:
        """Appends network inputs [N, cfg.obs_dim] (raw observations, plus the ball state when used)."""
        self._frames = torch.roll(self._frames, -1, dims=1)
        self._frames[:, -1] = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        self._age = torch.clamp(self._age + 1, max=self.history)

    @torch.no_grad()
    def unit_actions(self, frames: torch.Tensor, age: torch.Tensor) -> np.ndarray:
        """The network's actions in the unit box [B, A] for histories `frames` [B, H, cfg.obs_dim] (oldest first)
        with `age` [B] steps since the episode's first observation (a pure function of its arguments)."""
        x, mask = policy_input(torch.as_tensor(frames, dtype=torch.float32), torch.as_tensor(age), self.normalizer)
        return self.actor(x, mask).clamp_(-1.0, 1.0).numpy().astype(np.float64)

    def act_history(self, frames: torch.Tensor, age: torch.Tensor) -> np.ndarray:
        """Env actions [B, A] of `unit_actions` (without the scripted base of a residual policy)."""
        return (self._centre + self._half * self.unit_actions(frames, age)).astype(np.float32)

    def __call__(self, observations) -> np.ndarray:
        single = np.ndim(observations) == 1
        obs = self._parse(observations)
        frames = obs if self.features is None else self.features.extend(obs)
        self.push(frames)
        unit = self.unit_actions(self._frames, self._age)
        if self.scripted is None:
            action = self._centre + self._half * unit
        else:
            from robot_rt.envs.wrappers import residual_action

            base = np.asarray(self.scripted(obs), dtype=np.float64)
            action = residual_action(
                self.scripted, obs, base, unit, self.residual_scale, self.action_low, self.action_high
            )
        action = action.astype(np.float32)
        return action[0] if single else action


def policy_state(
    actor: GaussianActor,
    normalizer: RunningMeanStd,
    action_low,
    action_high,
    *,
    ball_state: bool = False,
    residual_scale: float = 0.0,
    hit_plane_x_m: float = 1.7,
    scripted_params=None,
    **meta,
) -> dict:
    return {
        "format": POLICY_FORMAT,
        "config": actor.cfg.to_dict(),
        "actor": {k: v.detach().clone() for k, v in actor.state_dict().items()},
        "normalizer": normalizer.state_dict(),
        "action_low": np.asarray(action_low, dtype=np.float32).tolist(),
        "action_high": np.asarray(action_high, dtype=np.float32).tolist(),
        "wrappers": {
            "ball_state": bool(ball_state),
            "residual_scale": float(residual_scale),
            "hit_plane_x_m": hit_plane_x_m,
            "scripted_params": None if scripted_params is None else [float(x) for x in scripted_params],
        },
        "meta": meta,
    }


def save_policy(path, actor: GaussianActor, normalizer: RunningMeanStd, action_low, action_high, **kwargs) -> Path:
    """Writes the deployable policy (config, weights, normaliser, action bounds, the wrappers it was trained with,
    free-form `meta`) atomically; `load_policy` reads it back as a `NeuralEnvPolicy`."""
    buffer = io.BytesIO()
    torch.save(policy_state(actor, normalizer, action_low, action_high, **kwargs), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def policy_from_state(state: dict, num_envs: int = 1) -> NeuralEnvPolicy:
    if not isinstance(state, dict) or state.get("format") != POLICY_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"policy state: expected format {POLICY_FORMAT!r}, got {got!r}")
    cfg = PolicyConfig.from_dict(state["config"])
    actor = GaussianActor(cfg)
    actor.load_state_dict(state["actor"])
    normalizer = RunningMeanStd(cfg.obs_dim)
    normalizer.load_state_dict(state["normalizer"])
    return NeuralEnvPolicy(
        actor, normalizer, state["action_low"], state["action_high"], num_envs=num_envs, **state.get("wrappers", {})
    )


def load_policy(path, num_envs: int = 1) -> NeuralEnvPolicy:
    """The `NeuralEnvPolicy` saved by `save_policy` (or by `robot-rt train ppo|bgs` as RUN/policy.pt).

    Read with ``weights_only=True``: a policy file is what gets deployed on a robot, and unpickling it must not run
    code from the file (tensors, numbers, strings and containers only)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    return policy_from_state(state, num_envs=num_envs)
