"""Random ball states leaving the opponent's end towards the robot, for tests and benchmarks.

Frame and units as docs/frames.md: x along the table towards the robot (m), z up (m), velocity (m/s), spin
(rad/s). Each call draws from `numpy.random.default_rng(seed)`, so a seed names one set of balls.
"""

from __future__ import annotations

import numpy as np


def random_incoming(
    n: int,
    seed: int = 0,
    *,
    x_m: tuple[float, float] = (-1.6, -1.3),
    y_m: tuple[float, float] = (-0.3, 0.3),
    z_m: tuple[float, float] = (1.0, 1.2),
    vx_m_s: tuple[float, float] = (5.0, 7.0),
    vy_m_s: tuple[float, float] = (-0.4, 0.4),
    vz_m_s: tuple[float, float] = (0.8, 1.8),
    spin_rad_s: tuple[float, float] = (-60.0, 60.0),
) -> np.ndarray:
    """[n, 9] states (position, velocity, spin), each coordinate uniform in its range.

    The defaults are balls struck at the opponent's end that land well inside the robot's half."""
    if n < 0:
        raise ValueError(f"n: expected a count >= 0, got {n}")
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.uniform(*x_m, n),
            rng.uniform(*y_m, n),
            rng.uniform(*z_m, n),
            rng.uniform(*vx_m_s, n),
            rng.uniform(*vy_m_s, n),
            rng.uniform(*vz_m_s, n),
            rng.uniform(*spin_rad_s, (n, 3)),
        ]
    )
