"""Goal-conditioned behaviour cloning (GCBC): pi(a | s, g) fitted to hindsight-relabelled attempts.

Design notes: docs/learning.md, section `robot_rt.learning.gcbc`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn


class GCBCPolicy(nn.Module):
    """pi(features, goal) -> normalised joint velocities in [-1, 1] (goal_dim 0: pi(features))."""

    def __init__(self, feat_dim: int, goal_dim: int = 2, act_dim: int = 8, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        for name, value in (("feat_dim", feat_dim), ("act_dim", act_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        # goal_dim 0: a policy without a goal (behaviour cloning of a rally policy, robot_rt.learning.distill)
        if isinstance(goal_dim, bool) or not isinstance(goal_dim, int) or goal_dim < 0:
            raise ValueError(f"goal_dim: expected an int >= 0, got {goal_dim!r}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden: expected a non-empty tuple of positive widths, got {hidden!r}")
        self.feat_dim, self.goal_dim, self.act_dim = feat_dim, goal_dim, act_dim
        self.hidden = tuple(int(h) for h in hidden)
        layers: list[nn.Module] = []
        width = feat_dim + goal_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, act_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("feat_mean", torch.zeros(feat_dim))
        self.register_buffer("feat_std", torch.ones(feat_dim))
        self.register_buffer("goal_mean", torch.zeros(goal_dim))
        self.register_buffer("goal_std", torch.ones(goal_dim))

    def config(self) -> dict:
        return {"feat_dim": self.feat_dim, "goal_dim": self.goal_dim, "act_dim": self.act_dim, "hidden": self.hidden}

    @torch.no_grad()
    def fit_normalisation(self, features: np.ndarray | torch.Tensor, goals: np.ndarray | torch.Tensor) -> None:
        """Standardisation from data (std floored at 1e-3 so constant inputs, e.g. an always-valid flag, stay 0)."""
        f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        g = torch.as_tensor(np.asarray(goals), dtype=torch.float32)
        self.feat_mean.copy_(f.mean(0))
        self.feat_std.copy_(f.std(0).clamp_min(1e-3))
        if self.goal_dim:
            self.goal_mean.copy_(g.mean(0))
            self.goal_std.copy_(g.std(0).clamp_min(1e-3))

    def forward(self, features: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(f"features: expected shape [B, {self.feat_dim}], got {tuple(features.shape)}")
        if goals.ndim != 2 or goals.shape != (features.shape[0], self.goal_dim):
            raise ValueError(f"goals: expected shape [{features.shape[0]}, {self.goal_dim}], got {tuple(goals.shape)}")
        x = torch.cat([(features - self.feat_mean) / self.feat_std, (goals - self.goal_mean) / self.goal_std], dim=1)
        return torch.tanh(self.net(x))

    @torch.no_grad()
    def act(self, features: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """NumPy in, normalised actions [B, act_dim] float32 out (inference mode)."""
        f = torch.as_tensor(np.asarray(features, dtype=np.float32))
        g = torch.as_tensor(np.asarray(goals, dtype=np.float32))
        return self.forward(f, g).numpy()

    @staticmethod
    def from_state(state: dict) -> GCBCPolicy:
        model = GCBCPolicy(**{**state["config"], "hidden": tuple(state["config"]["hidden"])})
        model.load_state_dict(state["weights"])
        return model

    def state(self) -> dict:
        return {"config": self.config(), "weights": {k: v.detach().clone() for k, v in self.state_dict().items()}}


def train_gcbc(
    model: GCBCPolicy,
    features: np.ndarray,
    goals: np.ndarray,
    actions: np.ndarray,
    *,
    steps: int,
    batch_size: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    ema: GCBCPolicy | None = None,
    ema_decay: float = 0.999,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[torch.optim.Optimizer, list[float]]:
    """Fits `model` to (features, goals) -> actions (normalised, in [-1, 1]) for `steps` Adam steps.

    Returns the optimizer (pass it back to fine-tune with its moments) and the per-step training losses.
    With `ema` (a model of the same shape), its weights track the exponential moving average
    w_ema <- d w_ema + (1 - d) w after every step (d = `ema_decay`), and its normalisation buffers are copied:
    the averaged policy is the one to execute, because a behaviour-cloned policy's closed-loop success swings a
    lot between nearby SGD iterates (measured here: 31 to 76 landed returns of 128 between consecutive rounds),
    and averaging the iterates removes most of that variance.
    """
    f = np.asarray(features, dtype=np.float32)
    g = np.asarray(goals, dtype=np.float32)
    a = np.asarray(actions, dtype=np.float32)
    if f.ndim != 2 or f.shape[1] != model.feat_dim:
        raise ValueError(f"features: expected shape [S, {model.feat_dim}], got {f.shape}")
    if g.shape != (f.shape[0], model.goal_dim):
        raise ValueError(f"goals: expected shape [{f.shape[0]}, {model.goal_dim}], got {g.shape}")
    if a.shape != (f.shape[0], model.act_dim):
        raise ValueError(f"actions: expected shape [{f.shape[0]}, {model.act_dim}], got {a.shape}")
    if f.shape[0] == 0:
        raise ValueError("features: expected at least one training sample, got 0")
    for name, value in (("features", f), ("goals", g), ("actions", a)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name}: contains NaN or Inf")
    if np.abs(a).max() > 1.0 + 1e-5:
        raise ValueError(f"actions: expected normalised actions in [-1, 1], got max |a| = {np.abs(a).max():.3g}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected a non-negative int, got {steps!r}")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay: expected a number in [0, 1), got {ema_decay!r}")
    if ema is not None and ema.config() != model.config():
        raise ValueError(f"ema: expected a model shaped like `model` {model.config()}, got {ema.config()}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    ft, gt, at = torch.from_numpy(f), torch.from_numpy(g), torch.from_numpy(a)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    losses: list[float] = []
    model.train()
    for step in range(steps):
        idx = torch.randint(0, ft.shape[0], (min(batch_size, ft.shape[0]),), generator=generator)
        loss = torch.mean((model(ft[idx], gt[idx]) - at[idx]) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters()):
                    p_ema.mul_(ema_decay).add_(p, alpha=1.0 - ema_decay)
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    model.eval()
    if ema is not None:
        with torch.no_grad():
            for b_ema, b in zip(ema.buffers(), model.buffers()):
                b_ema.copy_(b)
        ema.eval()
    return optimizer, losses


@torch.no_grad()
def evaluate_loss(model: GCBCPolicy, features: np.ndarray, goals: np.ndarray, actions: np.ndarray) -> float:
    """Mean squared error of the model's normalised actions on a data set (e.g. held-out steps)."""
    pred = model.act(features, goals)
    return float(np.mean((pred - np.asarray(actions, dtype=np.float32)) ** 2))
