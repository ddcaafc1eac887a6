"""Input checks shared by every entry point (raise before any kernel runs, naming the argument)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .params import BallParams, TableGeometry, pack_params

_DEFAULT_BALL = BallParams()
_DEFAULT_TABLE = TableGeometry()


@lru_cache(maxsize=64)
def _packed_cached(params: BallParams, table: TableGeometry) -> np.ndarray:
    pk = pack_params(params, table)
    pk.setflags(write=False)
    return pk


def packed(params, table) -> np.ndarray:
    if params is None:
        params = _DEFAULT_BALL
    if table is None:
        table = _DEFAULT_TABLE
    if not isinstance(params, BallParams):
        raise TypeError(f"params must be a BallParams or None, got {type(params).__name__}")
    if not isinstance(table, TableGeometry):
        raise TypeError(f"table must be a TableGeometry or None, got {type(table).__name__}")
    return _packed_cached(params, table)


def table_or_default(table) -> TableGeometry:
    return _DEFAULT_TABLE if table is None else table


def check_scalar(value, name: str, *, positive: bool = False, nonnegative: bool = False, upper=None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    if upper is not None and v > upper:
        raise ValueError(f"{name} must be <= {upper}, got {v}")
    return v


def room_check_numpy(arr: np.ndarray, name: str, table: TableGeometry) -> None:
    """arr: float [..., 9] already shape-checked."""
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN/Inf (first at index {tuple(int(i) for i in bad)})")
    x, y, z = arr[..., 0], arr[..., 1], arr[..., 2]
    out = (
        (np.abs(x) > table.room_half_length_m)
        | (np.abs(y) > table.room_half_width_m)
        | (z < 0)
        | (z > table.room_height_m)
    )
    if out.any():
        i = tuple(int(j) for j in np.argwhere(np.atleast_1d(out))[0])
        raise ValueError(
            f"{name} has a ball outside the room (first at {i}): position must satisfy |x| <= "
            f"{table.room_half_length_m} m, |y| <= {table.room_half_width_m} m, 0 <= z <= {table.room_height_m} m"
        )


def check_state_array(state, name: str, table: TableGeometry, *, batched: bool):
    """Validate a NumPy array or torch tensor of ball states. Returns (kind, array) with kind 'numpy'|'torch'."""
    torch = None
    if type(state).__module__.startswith("torch"):
        import torch  # noqa: F811
    if torch is not None and isinstance(state, torch.Tensor):
        if state.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must be float32 or float64, got {state.dtype}")
        _check_shape(tuple(state.shape), name, batched)
        t = state.detach()
        if not bool(torch.isfinite(t).all()):
            bad = torch.nonzero(~torch.isfinite(t))[0].tolist()
            raise ValueError(f"{name} contains NaN/Inf (first at index {tuple(bad)})")
        x, y, z = t[..., 0], t[..., 1], t[..., 2]
        out = (
            (x.abs() > table.room_half_length_m)
            | (y.abs() > table.room_half_width_m)
            | (z < 0)
            | (z > table.room_height_m)
        )
        if bool(out.any()):
            i = torch.nonzero(out.reshape(-1))[0].item()
            raise ValueError(
                f"{name} has a ball outside the room (first at {i}): position must satisfy |x| <= "
                f"{table.room_half_length_m} m, |y| <= {table.room_half_width_m} m, 0 <= z <= {table.room_height_m} m"
            )
        return "torch", state
    if isinstance(state, (list, tuple)):
        state = np.asarray(state, dtype=np.float64)
    if not isinstance(state, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array or torch tensor, got {type(state).__name__}")
    if state.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {state.dtype}")
    _check_shape(state.shape, name, batched)
    room_check_numpy(state, name, table)
    return "numpy", state


def _check_shape(shape, name, batched):
    if batched:
        if len(shape) != 2 or shape[1] != 9:
            raise ValueError(f"{name} must have shape [N, 9] ([x,y,z,vx,vy,vz,wx,wy,wz]), got {list(shape)}")
    elif tuple(shape) != (9,):
        raise ValueError(f"{name} must have shape [9] ([x,y,z,vx,vy,vz,wx,wy,wz]), got {list(shape)}")
