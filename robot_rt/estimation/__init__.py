"""Ball state estimation from 3-D detections (``robot_rt.estimation``).

- ``BallUKF``: unscented Kalman filter over position, velocity and spin with the physics of
  ``robot_rt.ballistics`` as process model (variable rate, latency compensation by re-filtering from the
  capture time, chi-square gating, bounce handling, automatic re-initialisation); see ``ukf.py`` for the
  design argument and the observability of spin.
- ``PolyfitPredictor``: per-axis polynomial-fit baseline with ballistic extrapolation.
- ``ServeGenerator`` / ``SimulatedTracker``: seeded serves with spin and realistic detections (noise, drops,
  outliers, clutter, latency, out-of-order arrival) for tests and ``bench/bench_estimation.py``.
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
