"""Goals of `robot_rt/TableTennisGoal-v0` (single and vector env share these): spaces, the not-landed sentinel and
the sparse goal reward used for hindsight relabelling.

Design notes: docs/envs.md, section `robot_rt.envs.goals`.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

NOT_LANDED = np.array([3.0, 0.0], dtype=np.float32)
MAX_SUCCESS_RADIUS_M = 3.0  # the sentinel's distance from the goal region (x <= 0)
GOAL_LOW = np.array([-1.37, -0.7625], np.float32)  # the human's half of the table
GOAL_HIGH = np.array([0.0, 0.7625], np.float32)


def check_success_radius(success_radius_m) -> float:
    r = float(success_radius_m)
    if not (np.isfinite(r) and 0 < r < MAX_SUCCESS_RADIUS_M):
        raise ValueError(
            f"success_radius_m: expected a radius in (0, {MAX_SUCCESS_RADIUS_M}) m (the not-landed sentinel lies "
            f"{MAX_SUCCESS_RADIUS_M} m from the goal region), got {success_radius_m!r}"
        )
    return r


def goal_space() -> spaces.Box:
    return spaces.Box(GOAL_LOW, GOAL_HIGH, dtype=np.float32)


def achieved_goal_space() -> spaces.Box:
    """Landing points on the table, and the sentinel."""
    return spaces.Box(GOAL_LOW, np.array([NOT_LANDED[0], GOAL_HIGH[1]], np.float32), dtype=np.float32)


def achieved_goals(landing: np.ndarray, has_landed: np.ndarray) -> np.ndarray:
    """float32 [..., 2]: the landing point where `has_landed`, else the sentinel."""
    landing = np.nan_to_num(np.asarray(landing, dtype=np.float64))
    has = np.asarray(has_landed, dtype=bool)[..., None]
    out = np.where(has, landing, NOT_LANDED.astype(np.float64)).astype(np.float32)
    return np.clip(out, achieved_goal_space().low, achieved_goal_space().high)


def _has_landed_from_info(info, shape) -> np.ndarray | None:
    """`has_landed` of gymnasium-style infos: None, one dict (scalar or array values, a vector env's), or a
    sequence/array of per-transition dicts (stable-baselines3's HerReplayBuffer passes those)."""
    if info is None:
        return None
    if isinstance(info, dict):
        if "has_landed" not in info:
            return None
        return np.broadcast_to(np.asarray(info["has_landed"], dtype=bool), shape)
    items = np.asarray(info, dtype=object).reshape(-1)
    flags = [bool(d.get("has_landed", True)) if isinstance(d, dict) else True for d in items]
    return np.asarray(flags, dtype=bool).reshape(shape)


def goal_reward(achieved_goal, desired_goal, success_radius_m: float, info=None) -> np.ndarray:
    """Sparse goal reward, vectorised over leading dimensions: 1.0 where the achieved goal landed (is not the
    sentinel, and `info`'s `has_landed` is not false) within `success_radius_m` of the desired goal, else 0.0."""
    achieved = np.asarray(achieved_goal, dtype=np.float64)
    desired = np.asarray(desired_goal, dtype=np.float64)
    d = np.linalg.norm(achieved - desired, axis=-1)
    landed = ~np.all(achieved == NOT_LANDED.astype(np.float64), axis=-1)
    from_info = _has_landed_from_info(info, d.shape)
    if from_info is not None:
        landed = landed & from_info
    return ((d <= success_radius_m) & landed).astype(np.float64)
