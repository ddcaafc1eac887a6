"""Ball state estimation from 3-D detections (``robot_rt.estimation``).

Design notes: docs/estimation.md, section `robot_rt.estimation`.
"""

from .common import PlaneCrossing, UpdateResult
from .polyfit import PolyfitConfig, PolyfitPredictor
from .tracker import Detections, Serve, ServeGenerator, SimulatedTracker, TrackerConfig
from .ukf import BallUKF, UKFConfig, fit_ballistic_arc

__all__ = [
    "BallUKF",
    "Detections",
    "PlaneCrossing",
    "PolyfitConfig",
    "PolyfitPredictor",
    "Serve",
    "ServeGenerator",
    "SimulatedTracker",
    "TrackerConfig",
    "UKFConfig",
    "UpdateResult",
    "fit_ballistic_arc",
]
