"""Policy input of GoalsEye's GCBC: robot state plus a ball-state estimate from the detection stream.

Design notes: docs/envs.md, section `robot_rt.envs.features`.
"""

from __future__ import annotations

import numpy as np

from robot_rt.envs.core import WorldConfig
from robot_rt.robot import RobotDescription, load_robot

FEATURE_NAMES = (
    [f"q_norm_{i}" for i in range(8)]
    + [f"qd_norm_{i}" for i in range(8)]
    + ["ball_x", "ball_y", "ball_z", "ball_vx", "ball_vy", "ball_vz", "ball_valid"]
    + ["cross_dt", "cross_x", "cross_y", "cross_z", "cross_vx", "cross_vy", "cross_vz", "cross_found"]
    + ["det_x", "det_y", "det_z", "det_age", "det_valid"]
)
FEATURE_DIM = len(FEATURE_NAMES)
# optional (FeatureExtractor(spin=True)): the incoming ball's spin estimated from its flight before the bounce
SPIN_FEATURE_NAMES = ("spin_wx", "spin_wy", "spin_wz", "spin_valid")
SPIN_WINDOW_S = 0.4  # the Magnus fit's window: 0.2 s gave correlations 0.5-0.6 with the true spin, 0.4 s 0.8
SPIN_SCALE_RADPS = 100.0
SPIN_BEFORE_X_M = 0.2  # estimates are taken while the ball is still short of its bounce on the robot's half
SPIN_MIN_POINTS = 10


def feature_names(spin: bool = False) -> tuple[str, ...]:
    """The feature columns of `FeatureExtractor(spin=spin)`."""
    return tuple(FEATURE_NAMES) + (SPIN_FEATURE_NAMES if spin else ())


def feature_dim(spin: bool = False) -> int:
    return len(feature_names(spin))


class FeatureExtractor:
    """Batched features of `num_envs` environments (see docs/envs.md, `robot_rt.envs.features`)."""

    def __init__(
        self,
        num_envs: int,
        robot: RobotDescription | None = None,
        history: int = 6,
        policy_hz: float | None = None,
        hit_plane_x_m: float = 1.7,
        spin: bool = False,
        tracker: str = "fit",
    ):
        from robot_rt.estimation.batched_ukf import make_batched_tracker

        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
        self.n = int(num_envs)
        self.robot = robot if robot is not None else load_robot()
        self.dof = len(self.robot.home)
        if self.dof != 8:
            raise ValueError(f"robot: expected the 8-joint platform the features are laid out for, got {self.dof}")
        self.history = int(history)
        self.obs_dim = 2 * self.dof + 5 * self.history
        self.dt_s = WorldConfig().step_s if policy_hz is None else 1.0 / float(policy_hz)  # the env's step
        self.hit_plane_x_m = float(hit_plane_x_m)
        # the ball's state and crossing columns: the constant-acceleration fit ('fit') or the physics filter ('ukf')
        self.tracker = make_batched_tracker(tracker, self.n)
        if not isinstance(spin, bool):
            raise TypeError(f"spin: expected a bool, got {type(spin).__name__}")
        self.spin = spin
        # the spin comes from a second tracker: its longer window and Magnus fit would change the first one's
        # crossing predictions, which the other features keep as they were
        self.incoming_spin = IncomingSpinEstimator(self.n) if spin else None
        self.dim = feature_dim(spin)
        self.steps = np.zeros(self.n, dtype=np.int64)
        self._q_mid = 0.5 * (self.robot.position_max + self.robot.position_min)
        self._q_half = 0.5 * (self.robot.position_max - self.robot.position_min)
        self._v_max = self.robot.velocity_limit

    @property
    def spin_estimate(self) -> np.ndarray:
        """The held spin estimates [N, 3] (rad/s; zeros without `spin`)."""
        return self.incoming_spin.estimate if self.incoming_spin is not None else np.zeros((self.n, 3))

    @property
    def spin_valid(self) -> np.ndarray:
        return self.incoming_spin.valid if self.incoming_spin is not None else np.zeros(self.n, dtype=bool)

    def reset(self, mask=None) -> None:
        m = np.ones(self.n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if m.shape != (self.n,):
            raise ValueError(f"mask: expected a bool array of shape ({self.n},), got {m.shape}")
        self.tracker.reset(m)
        if self.incoming_spin is not None:
            self.incoming_spin.reset(m)
        self.steps[m] = 0

    def __call__(self, observation) -> np.ndarray:
        obs = observation["observation"] if isinstance(observation, dict) else observation
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape != (self.n, self.obs_dim):
            raise ValueError(f"observation: expected shape ({self.n}, {self.obs_dim}), got {obs.shape}")
        q, qd = obs[:, : self.dof], obs[:, self.dof : 2 * self.dof]
        det = obs[:, 2 * self.dof :].reshape(self.n, self.history, 5)
        t_now = self.steps * self.dt_s
        self.tracker.update(det, t_now)
        self.steps += 1
        state, valid = self.tracker.state()
        ball = np.where(valid[:, None], state[:, :6], 0.0)
        crossing = self.tracker.predict_plane_crossing(self.hit_plane_x_m)
        found = crossing.found & valid
        cross_dt = np.where(found, np.clip(np.nan_to_num(crossing.t_s - t_now), 0.0, 1.5), 0.0)
        cross_pos = np.where(found[:, None], np.nan_to_num(crossing.position_m), 0.0)
        cross_vel = np.where(found[:, None], np.nan_to_num(crossing.velocity_mps), 0.0)
        newest = det[:, 0]  # detections are newest first
        columns = [
            (q - self._q_mid) / self._q_half,
            qd / self._v_max,
            ball,
            valid[:, None].astype(np.float64),
            cross_dt[:, None],
            cross_pos,
            cross_vel,
            found[:, None].astype(np.float64),
            newest[:, :3] * (newest[:, 4:5] > 0.5),
            newest[:, 3:4],
            newest[:, 4:5],
        ]
        if self.incoming_spin is not None:
            estimate, valid_spin = self.incoming_spin.update(det, t_now)
            columns += [estimate / SPIN_SCALE_RADPS, valid_spin[:, None].astype(np.float64)]
        return np.concatenate(columns, axis=1).astype(np.float32)


class IncomingSpinEstimator:
    """The incoming ball's spin per environment, estimated from the curvature of its flight (Magnus) by a tracker of
    its own (`estimate_spin=True`, `SPIN_WINDOW_S` window) and held from its last update before the bounce on the
    robot's half (x < `SPIN_BEFORE_X_M`, at least `SPIN_MIN_POINTS` detections), since the fit after the bounce spans
    too little flight. A new incoming ball replaces the held value once its own track qualifies."""

    def __init__(self, num_envs: int):
        from robot_rt.estimation.batched import BatchedBallTracker

        self.n = int(num_envs)
        self.tracker = BatchedBallTracker(self.n, estimate_spin=True, window_s=SPIN_WINDOW_S)
        self.estimate = np.zeros((self.n, 3))
        self.valid = np.zeros(self.n, dtype=bool)

    def reset(self, mask) -> None:
        self.tracker.reset(mask)
        self.estimate[mask] = 0.0
        self.valid[mask] = False

    def update(self, detections: np.ndarray, t_now) -> tuple[np.ndarray, np.ndarray]:
        """Feeds the detections [N, history, 5] seen at `t_now` [N] (s); returns (spin [N, 3] rad/s, valid [N])."""
        tracker = self.tracker
        tracker.update(detections, t_now)
        state, valid = tracker.state()
        take = valid & (state[:, 0] < SPIN_BEFORE_X_M) & (state[:, 3] > 0) & (tracker.n_points >= SPIN_MIN_POINTS)
        self.estimate[take] = tracker.spin[take]
        self.valid |= take
        return self.estimate, self.valid
