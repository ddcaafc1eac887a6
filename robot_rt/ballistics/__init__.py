"""Ball-flight physics and trajectory prediction (gravity, quadratic drag, Magnus, spin decay; table, net
and floor contacts located inside the RK4 step). Frame, units and parameter sources: docs/frames.md.

- ``BallParams``, ``TableGeometry``: documented defaults (frozen dataclasses).
- ``reference``: the NumPy reference (``acceleration``, ``rk4_step``, ``table_bounce``, ...).
- ``simulate``, ``time_to_plane``, ``landing_point`` (one ball) and ``simulate_batch``,
  ``time_to_plane_batch``, ``landing_point_batch`` (``[N, 9]``; ``backend='auto'|'numpy'|'cpu'|'cuda'|'triton'``).
"""

from . import reference
from .api import (
    BatchCrossing,
    BatchSimulation,
    PlaneCrossing,
    Trajectory,
    available_backends,
    landing_point,
    landing_point_batch,
    simulate,
    simulate_batch,
    time_to_plane,
    time_to_plane_batch,
)
from .params import BallParams, TableGeometry, pack_params
from .reference import ContactEvent, acceleration, rk4_step

__all__ = [
    "BallParams",
    "BatchCrossing",
    "BatchSimulation",
    "ContactEvent",
    "PlaneCrossing",
    "TableGeometry",
    "Trajectory",
    "acceleration",
    "available_backends",
    "landing_point",
    "landing_point_batch",
    "pack_params",
    "reference",
    "rk4_step",
    "simulate",
    "simulate_batch",
    "time_to_plane",
    "time_to_plane_batch",
]
