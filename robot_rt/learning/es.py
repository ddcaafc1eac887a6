"""Black-box evolution strategy for policy search: BGS/ARS-style antithetic random search with top-k directions.

Design notes: docs/learning.md, section `robot_rt.learning.es`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ESConfig:
    num_directions: int = 8  # D antithetic pairs per generation (2D evaluations)
    top_k: int = 4  # directions kept for the update
    sigma: float = 0.05  # perturbation scale in the unit box
    step_size: float = 0.03  # update scale in the unit box

    def __post_init__(self) -> None:
        for name in ("num_directions", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.top_k > self.num_directions:
            raise ValueError(f"top_k: expected <= num_directions ({self.num_directions}), got {self.top_k}")
        for name in ("sigma", "step_size"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a positive finite number, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class BGS:
    """Ask/tell antithetic evolution strategy over a box-bounded parameter vector (see docs/learning.md, `robot_rt.learning.es`).

    ``ask()`` returns the 2D candidates as rows [+delta_0, -delta_0, +delta_1, -delta_1, ...] in parameter
    units; ``tell(fitness)`` takes one fitness per row (higher is better) and moves the mean.
    """

    def __init__(self, x0, lower, upper, config: ESConfig | None = None, seed: int = 0):
        self.config = config or ESConfig()
        lower = np.asarray(lower, dtype=np.float64)
        upper = np.asarray(upper, dtype=np.float64)
        x0 = np.asarray(x0, dtype=np.float64)
        if lower.ndim != 1 or lower.size == 0:
            raise ValueError(f"lower: expected a non-empty 1-D array, got shape {lower.shape}")
        if upper.shape != lower.shape:
            raise ValueError(f"upper: expected shape {lower.shape} like lower, got {upper.shape}")
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper)) and np.all(upper > lower)):
            raise ValueError("lower/upper: expected finite bounds with upper > lower in every dimension")
        if x0.shape != lower.shape:
            raise ValueError(f"x0: expected shape {lower.shape} like the bounds, got {x0.shape}")
        if not np.all(np.isfinite(x0)) or np.any(x0 < lower) or np.any(x0 > upper):
            raise ValueError("x0: expected finite values within [lower, upper]")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed: expected an int, got {seed!r}")
        self.lower, self.upper = lower, upper
        self.u = (x0 - lower) / (upper - lower)
        self.rng = np.random.default_rng(int(seed))
        self.generation = 0
        self._pending: np.ndarray | None = None  # directions of the last ask()

    @property
    def dim(self) -> int:
        return self.lower.size

    @property
    def mean(self) -> np.ndarray:
        """The current parameter vector (parameter units)."""
        return self._to_params(self.u)

    def _to_params(self, u: np.ndarray) -> np.ndarray:
        x = self.lower + np.clip(u, 0.0, 1.0) * (self.upper - self.lower)
        return np.clip(x, self.lower, self.upper)  # rounding: -1.3 + 1.0 * 1.1 > -0.2 in floating point

    def ask(self) -> np.ndarray:
        """The 2D candidate parameter vectors [2D, dim] of this generation, within bounds."""
        cfg = self.config
        delta = self.rng.standard_normal((cfg.num_directions, self.dim))
        self._pending = delta
        u = np.empty((2 * cfg.num_directions, self.dim))
        u[0::2] = self.u + cfg.sigma * delta
        u[1::2] = self.u - cfg.sigma * delta
        return self._to_params(u)

    def tell(self, fitness) -> dict:
        """Updates the mean from the fitness of the candidates of the last ``ask()``; returns statistics."""
        if self._pending is None:
            raise RuntimeError("tell() without a preceding ask()")
        cfg = self.config
        f = np.asarray(fitness, dtype=np.float64)
        if f.shape != (2 * cfg.num_directions,):
            raise ValueError(f"fitness: expected shape ({2 * cfg.num_directions},), one per candidate, got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError("fitness: contains NaN or Inf")
        plus, minus = f[0::2], f[1::2]
        order = np.argsort(-np.maximum(plus, minus), kind="stable")[: cfg.top_k]
        kept = np.concatenate([plus[order], minus[order]])
        sigma_r = float(kept.std())
        if sigma_r < 1e-12:
            sigma_r = 1.0  # all kept returns equal: the difference term is zero anyway
        grad = ((plus[order] - minus[order])[:, None] * self._pending[order]).sum(axis=0)
        step = cfg.step_size / (cfg.top_k * sigma_r) * grad
        self.u = np.clip(self.u + step, 0.0, 1.0)
        self._pending = None
        self.generation += 1
        return {
            "generation": self.generation,
            "fitness_mean": float(f.mean()),
            "fitness_max": float(f.max()),
            "fitness_min": float(f.min()),
            "step_norm_unit": float(np.linalg.norm(step)),
        }

    # ---------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "lower": self.lower.copy(),
            "upper": self.upper.copy(),
            "u": self.u.copy(),
            "rng": self.rng.bit_generator.state,
            "generation": self.generation,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> BGS:
        lower, upper = np.asarray(state["lower"]), np.asarray(state["upper"])
        es = cls(lower, lower, upper, ESConfig(**state["config"]))
        es.u = np.asarray(state["u"], dtype=np.float64).copy()
        es.rng.bit_generator.state = state["rng"]
        es.generation = int(state["generation"])
        return es
