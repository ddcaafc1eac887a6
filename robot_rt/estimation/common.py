"""Shared types and input validation of the estimation package.

Times are seconds on the tracker's clock (``t_capture_s``: when the camera frame was exposed;
``t_arrival_s``: when the detection reached the estimator). Positions are metres in the table frame of
``docs/architecture.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PlaneCrossing",
    "UpdateResult",
    "check_measurement",
    "check_time",
    "check_positive",
    "check_probability",
    "CHI2_3DOF",
]

# chi-square quantiles with 3 degrees of freedom (gating of 3-D position residuals)
CHI2_3DOF = {0.99: 11.345, 0.999: 16.266, 0.9999: 21.108, 0.99999: 25.902}


@dataclass(frozen=True)
class PlaneCrossing:
    """Predicted crossing of the hitting plane ``x = x_plane_m``.

    ``t_s`` is absolute (tracker clock); ``position_m`` / ``velocity_mps`` are the ball's position and
    velocity at the crossing; ``spin_radps`` its spin (zeros for estimators without spin).
    ``cov_ty_z`` (optional) is the 3x3 covariance of (t, y, z) at the crossing.
    """

    t_s: float
    position_m: np.ndarray
    velocity_mps: np.ndarray
    spin_radps: np.ndarray = field(default_factory=lambda: np.zeros(3))
    cov_tyz: np.ndarray | None = None


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of feeding one detection to an estimator.

    status: 'accepted' (fused), 'gated' (rejected as an outlier), 'pending' (buffered while
    (re-)initialising), 'initialised' (a new track started), 'reinitialised' (the old track was dropped
    and a new one started), 'too_late' (older than the history kept for latency compensation; ignored).
    replayed: number of later measurements re-filtered because this one arrived out of order.
    """

    status: str
    replayed: int = 0
    mahalanobis2: float = float("nan")


def check_time(t_s, name: str = "t_capture_s") -> float:
    """Validate a time stamp (finite real number, seconds)."""
    if type(t_s) is float:  # fast path
        if math.isfinite(t_s):
            return t_s
        raise ValueError(f"{name}: expected a finite time in seconds, got {t_s}")
    if isinstance(t_s, (bool, np.bool_)) or not isinstance(t_s, (int, float, np.integer, np.floating)):
        if not (isinstance(t_s, np.ndarray) and t_s.ndim == 0 and np.issubdtype(t_s.dtype, np.number)):
            raise TypeError(f"{name}: expected a real number (seconds), got {type(t_s).__name__}")
    t = float(t_s)
    if not math.isfinite(t):
        raise ValueError(f"{name}: expected a finite time in seconds, got {t}")
    return t


def check_measurement(t_s, position_m, name_t: str = "t_capture_s", name_p: str = "position_m"):
    """Validate one detection; returns ``(float t, float64 array[3])`` or raises TypeError/ValueError."""
    t = check_time(t_s, name_t)
    if isinstance(position_m, np.ndarray) and position_m.dtype == np.float64 and position_m.shape == (3,):
        p = position_m.copy()  # fast path
    else:
        try:
            p = np.asarray(position_m)
        except Exception as exc:  # pragma: no cover - exotic objects
            raise TypeError(f"{name_p}: expected an array-like of 3 numbers, got {type(position_m).__name__}") from exc
        if p.dtype == object or not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
            raise TypeError(f"{name_p}: expected a numeric array of shape (3,), got dtype {p.dtype}")
        if p.shape != (3,):
            raise ValueError(f"{name_p}: expected shape (3,) [x, y, z] in metres, got shape {p.shape}")
        p = p.astype(np.float64)
    if not (math.isfinite(p[0]) and math.isfinite(p[1]) and math.isfinite(p[2])):
        raise ValueError(f"{name_p}: expected finite coordinates, got {p.tolist()} (NaN/Inf)")
    return t, p


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a finite {'non-negative' if allow_zero else 'positive'} number, got {v}")
    return v


def check_probability(value, name: str) -> float:
    v = check_positive(value, name, allow_zero=True)
    if v > 1:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {v}")
    return v
