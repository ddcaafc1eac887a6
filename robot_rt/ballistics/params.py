"""Physical parameters of the ball and geometry of the table/room (defaults documented in docs/frames.md).

All quantities are SI and carry their unit in the name. Both dataclasses are frozen; derive variants with
``dataclasses.replace``. ``pack_params`` flattens them into the float64 vector every backend (NumPy, C++,
CUDA, Triton) reads, so the equations share one set of derived constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["BallParams", "TableGeometry", "pack_params", "PARAM_NAMES", "N_PARAMS"]


@dataclass(frozen=True)
class BallParams:
    """Ball, air and contact parameters.

    Aerodynamics (acceleration of the ball centre, ``v`` velocity, ``w`` spin):
        a = -g e_z - k_D |v| v + k_M (w x v),   dw/dt = -spin_decay_per_s * w
        k_D = rho C_D A / (2 m),   k_M = rho A r c_L / (2 m),   A = pi r^2
    The Magnus model is a lift coefficient linear in the spin parameter, C_L = c_L * S with
    S = r |w_perp| / |v| (``lift_coefficient_slope`` = c_L), which gives the force exactly along w x v.

    Contacts: table and floor use the rigid-ball rebound model of Nakashima et al. (2010) with normal
    restitution ``e`` and Coulomb friction ``mu``; the net reverses the normal velocity with
    ``net_restitution`` and keeps ``net_tangential_retention`` of the tangential velocity.
    """

    mass_kg: float = 2.7e-3  # ITTF Technical Leaflet T3 (40 mm ball): 2.67-2.77 g
    radius_m: float = 0.020  # ITTF T3: diameter 40 mm (39.5-40.5 mm)
    air_density_kgpm3: float = 1.204  # dry air at 20 degC, 101.325 kPa
    gravity_mps2: float = 9.80665  # standard gravity (local g differs by < 0.3 %)
    drag_coefficient: float = 0.47  # smooth sphere, subcritical Re ~ 1e4-1e5 (textbook value)
    lift_coefficient_slope: float = 0.5  # C_L = 0.5 S: C_L ~ 0.1-0.3 for S ~ 0.2-0.6 (spinning-sphere data)
    spin_decay_per_s: float = 0.02  # order-of-magnitude estimate of the aerodynamic spin-down torque
    table_restitution: float = 0.876  # ITTF: dropped from 30 cm, bounces ~23 cm -> sqrt(23/30)
    table_friction: float = 0.25  # ball/table Coulomb friction, typical measured values 0.2-0.3
    floor_restitution: float = 0.75  # estimate (hard gym floor)
    floor_friction: float = 0.4  # estimate
    net_restitution: float = 0.1  # estimate: the net is compliant and absorbs most of the normal speed
    net_tangential_retention: float = 0.5  # estimate

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"BallParams.{f.name} must be a finite number, got {v!r}")
        for name in ("mass_kg", "radius_m"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BallParams.{name} must be > 0, got {getattr(self, name)!r}")
        for name in (
            "air_density_kgpm3",
            "drag_coefficient",
            "spin_decay_per_s",
            "table_friction",
            "floor_friction",
            "gravity_mps2",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"BallParams.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("table_restitution", "floor_restitution", "net_restitution", "net_tangential_retention"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"BallParams.{name} must lie in [0, 1], got {v!r}")

    @property
    def area_m2(self) -> float:
        return math.pi * self.radius_m**2

    @property
    def drag_k_per_m(self) -> float:
        """k_D = rho C_D A / (2 m)  [1/m]."""
        return self.air_density_kgpm3 * self.drag_coefficient * self.area_m2 / (2.0 * self.mass_kg)

    @property
    def magnus_k(self) -> float:
        """k_M = rho A r c_L / (2 m)  [dimensionless]: a_M = k_M (w x v)."""
        return (
            self.air_density_kgpm3 * self.area_m2 * self.radius_m * self.lift_coefficient_slope / (2.0 * self.mass_kg)
        )


@dataclass(frozen=True)
class TableGeometry:
    """ITTF table (Handbook, Laws of Table Tennis 2.1/2.2) and the room that bounds valid states."""

    length_m: float = 2.74
    width_m: float = 1.525
    surface_height_m: float = 0.76
    net_height_m: float = 0.1525
    net_overhang_m: float = 0.1525  # net posts stand 15.25 cm outside the side lines
    room_half_length_m: float = 7.0  # ITTF minimum playing space 14 m x 7 m x 5 m
    room_half_width_m: float = 3.5
    room_height_m: float = 5.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"TableGeometry.{f.name} must be a finite number >= 0, got {v!r}")
        if self.room_half_length_m < self.length_m / 2 or self.room_half_width_m < self.width_m / 2:
            raise ValueError("TableGeometry: the room must contain the table")
        if self.room_height_m <= self.surface_height_m + self.net_height_m:
            raise ValueError("TableGeometry.room_height_m must exceed the net top")


# Order of the packed parameter vector (shared by every backend; the C++ header reads the same order).
PARAM_NAMES = (
    "gravity_mps2",
    "drag_k_per_m",
    "magnus_k",
    "spin_decay_per_s",
    "radius_m",
    "table_restitution",
    "table_friction",
    "floor_restitution",
    "floor_friction",
    "net_restitution",
    "net_tangential_retention",
    "table_z_m",
    "table_half_length_m",
    "table_half_width_m",
    "net_top_z_m",
    "net_half_length_m",
)
N_PARAMS = len(PARAM_NAMES)


def pack_params(params: BallParams | None = None, table: TableGeometry | None = None) -> np.ndarray:
    """Flatten (params, table) into the float64 vector of derived constants, order ``PARAM_NAMES``."""
    p = BallParams() if params is None else params
    t = TableGeometry() if table is None else table
    if not isinstance(p, BallParams):
        raise TypeError(f"params must be a BallParams or None, got {type(p).__name__}")
    if not isinstance(t, TableGeometry):
        raise TypeError(f"table must be a TableGeometry or None, got {type(t).__name__}")
    return np.array(
        [
            p.gravity_mps2,
            p.drag_k_per_m,
            p.magnus_k,
            p.spin_decay_per_s,
            p.radius_m,
            p.table_restitution,
            p.table_friction,
            p.floor_restitution,
            p.floor_friction,
            p.net_restitution,
            p.net_tangential_retention,
            t.surface_height_m,
            t.length_m / 2,
            t.width_m / 2,
            t.surface_height_m + t.net_height_m,
            t.width_m / 2 + t.net_overhang_m,
        ],
        dtype=np.float64,
    )
