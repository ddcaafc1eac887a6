"""Interval estimates shared by the learning loops and the robot benchmarks."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"successes/n: expected 0 <= successes <= n, got {successes}, {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of the mean (rally lengths are small integers, skewed: no normal CI)."""
    x = np.asarray(values, dtype=np.float64)
    boots = x[np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    return [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]
