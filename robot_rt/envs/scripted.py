"""Batched scripted table-tennis policy: the HeuristicPolicy's controller for N environments at once.

Design notes: docs/envs.md, section `robot_rt.envs.scripted`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from robot_rt.estimation.batched_ukf import make_batched_tracker
from robot_rt.robot import RobotDescription, load_robot, paddle_position_normal
from robot_rt.robot.kinematics import rpy_matrix

from .core import WorldConfig
from .features import IncomingSpinEstimator
from .human_model import ReturnModel
from .limit_guard import joint_brake
from .observation import observation_layout

__all__ = ["BatchedScriptedPolicy", "ScriptedParams", "lob_directions", "paddle_jacobian_analytic"]


@dataclass(frozen=True)
class ScriptedParams:
    """Tunable parameters of the scripted policy (see docs/envs.md, `robot_rt.envs.scripted`); units in the names. The defaults
    come from a random search (1+lambda with re-evaluation, batched env, both human models alternating;
    bench/bench_scripted.py reports what they achieve)."""

    hit_plane_x_m: float = 1.45
    timing_offset_s: float = -0.046
    return_speed_mps: float = 8.89
    extra_elevation_rad: float = 0.054
    aim_x_m: float = -0.274
    aim_y_m: float = 0.007
    aim_dx_m: float = -0.13
    aim_dy_m: float = 0.0
    swing_speed_mps: float = 2.14
    swing_s: float = 0.189
    mirror_blend: float = 0.57
    contact_dz_m: float = -0.005
    gain_per_s: float = 15.36
    max_paddle_speed_mps: float = 2.0
    max_turn_radps: float = 6.93
    normal_weight: float = 0.177
    null_gain_per_s: float = 2.0
    ready_dx_m: float = -0.006
    ready_dy_m: float = 0.0
    ready_dz_m: float = -0.141
    approach_speed_mps: float = 0.5
    min_hit_height_m: float = 0.0
    floor_margin_m: float = 0.04

    def __post_init__(self) -> None:
        check_param_vector(self.to_vector(), "ScriptedParams")

    @classmethod
    def preset(cls, name: str) -> ScriptedParams:
        """A named parameter set: 'default' (these defaults: return rate over both human models) or 'rally' (rally
        against the default human model: the ball placed where that human answers, see `RALLY_PRESET`)."""
        if name == "default":
            return cls()
        if name == "rally":
            return cls(**RALLY_PRESET)
        raise ValueError(f"name: expected one of {SCRIPTED_PRESETS}, got {name!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def bounds(cls) -> tuple[np.ndarray, np.ndarray]:
        """(low [P], high [P]) of the valid parameter values, in `names()` order."""
        low = np.array([_BOUNDS[k][0] for k in cls.names()])
        high = np.array([_BOUNDS[k][1] for k in cls.names()])
        return low, high

    def to_vector(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in self.names()], dtype=np.float64)

    @classmethod
    def from_vector(cls, vector) -> ScriptedParams:
        """From a vector in `names()` order; a vector saved before `approach_speed_mps`, `min_hit_height_m` or
        `floor_margin_m` existed (one to three values short) gets their defaults, which leave the policy as it was."""
        v = with_legacy_defaults(np.asarray(vector, dtype=np.float64))
        if v.shape != (len(cls.names()),):
            raise ValueError(f"vector: expected shape ({len(cls.names())},) ({', '.join(cls.names())}), got {v.shape}")
        return cls(**{k: float(x) for k, x in zip(cls.names(), v)})


SCRIPTED_PRESETS = ("default", "rally")
# Tuned for the rally against HumanBehaviorModel.default() (docs/envs.md, `robot_rt.envs.scripted`, "rally preset"):
# cross-entropy search over all parameters maximising the per-ball continuation (the human model's return
# probability summed over the robot's returns that reach it, per ball faced), common random numbers per generation.
RALLY_PRESET: dict = {
    "hit_plane_x_m": 1.453,
    "timing_offset_s": -0.048,
    "return_speed_mps": 8.692,
    "extra_elevation_rad": 0.106,
    "aim_x_m": -0.643,
    "aim_y_m": -0.006,
    "aim_dx_m": -0.207,
    "aim_dy_m": 0.033,
    "swing_speed_mps": 2.485,
    "swing_s": 0.2,
    "mirror_blend": 0.629,
    "contact_dz_m": 0.004,
    "gain_per_s": 13.399,
    "max_paddle_speed_mps": 2.001,
    "max_turn_radps": 6.42,
    "normal_weight": 0.143,
    "null_gain_per_s": 1.641,
    "ready_dx_m": 0.025,
    "ready_dy_m": -0.034,
    "ready_dz_m": -0.109,
    # the fast approach (docs/envs.md, `robot_rt.envs.scripted`, "fast approach"), then 12 more generations of the
    # search from the preset with it: mean rally 3.33 -> 3.60 -> 3.75 on the same 3 x 256 serves (these values)
    "approach_speed_mps": 2.872,
    # the hit-point choice (docs/envs.md, "hit-point choice"): a ball that would pass the nominal plane below 0.8 m
    # is taken earlier or later along its flight; the mean rally 3.75 -> 4.38 on the same serves
    "min_hit_height_m": 0.8,
    # the paddle's target may come 1 cm closer to the box floor (docs/envs.md, "floor margin"): first-ball misses
    # 123 -> 105 of 2,048 with the landing model, no limit stop
    "floor_margin_m": 0.03,
}

_BOUNDS = {
    "hit_plane_x_m": (1.45, 2.1),
    "timing_offset_s": (-0.05, 0.05),
    "return_speed_mps": (3.0, 12.0),
    "extra_elevation_rad": (-0.2, 0.5),
    "aim_x_m": (-1.3, -0.2),
    "aim_y_m": (-0.7, 0.7),
    "aim_dx_m": (-0.5, 0.5),
    "aim_dy_m": (-0.5, 0.5),
    "swing_speed_mps": (0.0, 6.0),
    "swing_s": (0.0, 0.3),
    "mirror_blend": (0.0, 1.0),
    "contact_dz_m": (-0.1, 0.1),
    "gain_per_s": (1.0, 40.0),
    "max_paddle_speed_mps": (0.5, 6.0),
    "max_turn_radps": (1.0, 30.0),
    "normal_weight": (0.05, 1.0),
    "null_gain_per_s": (0.0, 10.0),
    "ready_dx_m": (-0.3, 0.3),
    "ready_dy_m": (-0.5, 0.5),
    "ready_dz_m": (-0.2, 0.4),
    "approach_speed_mps": (0.5, 6.0),
    "min_hit_height_m": (0.0, 1.2),
    "floor_margin_m": (0.01, 0.1),
}
# the paddle may move at approach_speed_mps until this long before its swing starts (then max_paddle_speed_mps)
APPROACH_MARGIN_S = 0.1
# parameters added after vectors had been saved (exported policies' scripted bases), in the order they were added:
# a vector short of the last k of them gets their defaults, which leave the policy as it was before they existed
_LATER_PARAMS = ("approach_speed_mps", "min_hit_height_m", "floor_margin_m")
# hit-point choice (min_hit_height_m > 0): shifts of the hitting point along the flight from the nominal plane, and
# the x range the shifted point must keep (inside the paddle's box, clear of the miss plane)
HIT_SHIFTS_M = np.round(np.arange(-0.35, 0.351, 0.05), 2)
HIT_X_RANGE_M = (1.12, 2.2)
_SHIFT_COST_PER_M = 0.05  # m of height given up per m of shift: the nominal plane wins among points high enough
_SHIFT_HYSTERESIS_M = 0.005  # the current choice's bonus, so that a choice does not flip on prediction noise


def with_legacy_defaults(values: np.ndarray) -> np.ndarray:
    """Parameter vectors [P] or [N, P] saved before the parameters of `_LATER_PARAMS` existed (one to three values
    short) with their defaults appended, which leaves the policy as it was; any other shape unchanged."""
    missing = len(_BOUNDS) - values.shape[-1] if values.ndim in (1, 2) else 0
    if 1 <= missing <= len(_LATER_PARAMS):
        defaults = [getattr(ScriptedParams, k) for k in _LATER_PARAMS[-missing:]]
        tail = np.broadcast_to(np.array(defaults, dtype=np.float64), values.shape[:-1] + (missing,))
        return np.concatenate([values, tail], axis=-1)
    return values


def check_param_vector(values: np.ndarray, name: str) -> None:
    """Raises ValueError naming the first parameter that is not finite or outside `ScriptedParams.bounds()`."""
    names = tuple(_BOUNDS)
    low = np.array([_BOUNDS[k][0] for k in names])
    high = np.array([_BOUNDS[k][1] for k in names])
    v = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(v) | (v < low) | (v > high)
    if bad.any():
        j = int(np.nonzero(bad.reshape(-1, len(names)).any(axis=0))[0][0])
        worst = v.reshape(-1, len(names))[:, j]
        raise ValueError(
            f"{name}: parameter {names[j]!r} must be finite and within [{low[j]}, {high[j]}], got {worst.tolist()[:8]}"
        )


MAX_IN_EXPONENT = 10.0


def check_in_exponent(value, name: str = "in_exponent") -> float:
    """The exponent of P(in) in a shot model's value (`robot_rt.envs.shot_model`) as a float; ValueError naming
    `name` unless a number in [1, MAX_IN_EXPONENT]."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not number or not (1 <= value <= MAX_IN_EXPONENT):  # (compared before float(): 10**400 overflows it)
        raise ValueError(f"{name}: expected a number in [1, {MAX_IN_EXPONENT}], got {value!r}")
    return float(value)


def lob_directions(start, target_xy, speed_mps, extra_elevation_rad, g: float = 9.81, landing_z_m: float = 0.78):
    """Unit directions [N, 3] of drag-free shots from `start` [N, 3] landing at `target_xy` [N, 2] (z = 0.78 m):
    elevation = atan((v^2 - sqrt(v^4 - g (g d^2 + 2 h v^2))) / (g d)) (the flatter solution) + extra,
    35 degrees + extra where the target is out of reach (h = landing_z - z0, d the horizontal distance)."""
    delta = np.asarray(target_xy, dtype=np.float64) - start[:, :2]
    dist = np.linalg.norm(delta, axis=1)
    height = landing_z_m - start[:, 2]
    v2 = np.asarray(speed_mps, dtype=np.float64) ** 2
    disc = v2 * v2 - g * (g * dist * dist + 2 * height * v2)
    elevation = np.where(disc >= 0, np.arctan2(v2 - np.sqrt(np.maximum(disc, 0.0)), g * dist), np.deg2rad(35.0))
    elevation = elevation + extra_elevation_rad
    horizontal = delta / np.maximum(dist, 1e-9)[:, None]
    c, s = np.cos(elevation), np.sin(elevation)
    return np.stack([horizontal[:, 0] * c, horizontal[:, 1] * c, s], axis=1)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b over the last axis (np.cross is ~10x slower on small batches)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


class _Chain:
    """The robot's kinematic chain with its constant matrices precomputed (the FK product of
    robot_rt.robot.kinematics, restated for speed: rotations R [N, 3, 3] and origins [N, 3])."""

    def __init__(self, robot: RobotDescription):
        self.dof = robot.dof
        self.joints = []
        for joint in robot.joints:
            fixed = rpy_matrix(joint.origin_rpy_rad)
            axis = np.asarray(joint.axis, dtype=np.float64)
            k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            self.joints.append(
                (joint.type == "revolute", np.asarray(joint.origin_xyz_m, np.float64), fixed, axis, k, k @ k)
            )
        self.paddle_xyz = np.asarray(robot.paddle_origin_xyz_m, dtype=np.float64)
        self.paddle_rot = rpy_matrix(robot.paddle_origin_rpy_rad)

    def jacobian(self, q: np.ndarray):
        n = q.shape[0]
        rot = np.broadcast_to(np.eye(3), (n, 3, 3))
        org = np.zeros((n, 3))
        axes, origins, revolute = [], [], []
        for i, (rev, xyz, fixed, axis, k, k2) in enumerate(self.joints):
            org = org + rot @ xyz
            rot = rot @ fixed
            if rev:
                s, c = np.sin(q[:, i])[:, None, None], np.cos(q[:, i])[:, None, None]
                rot = rot + s * (rot @ k) + (1.0 - c) * (rot @ k2)
            else:
                org = org + (rot @ axis) * q[:, i, None]
            axes.append(rot @ axis)
            origins.append(org)
            revolute.append(rev)
        p = org + rot @ self.paddle_xyz
        nrm = rot @ self.paddle_rot[:, 2]
        jp = np.zeros((n, 3, self.dof))
        jn = np.zeros((n, 3, self.dof))
        for i, (a, o, rev) in enumerate(zip(axes, origins, revolute)):
            if rev:
                jp[:, :, i] = _cross(a, p - o)
                jn[:, :, i] = _cross(a, nrm)
            else:
                jp[:, :, i] = a
        return p, nrm, jp, jn


_CHAINS: dict = {}


def paddle_jacobian_analytic(robot: RobotDescription, q: np.ndarray):
    """Paddle position p [N, 3], normal n [N, 3] and their Jacobians dp/dq, dn/dq [N, 3, dof]: for a revolute
    joint with world axis a through o, dp/dq_i = a x (p - o), dn/dq_i = a x n; prismatic: dp/dq_i = a, 0."""
    chain = _CHAINS.get(id(robot))
    if chain is None or chain[0] is not robot:
        chain = (robot, _Chain(robot))
        _CHAINS[id(robot)] = chain
    return chain[1].jacobian(np.asarray(q, dtype=np.float64))


class BatchedScriptedPolicy:
    """Scripted policy for N table-tennis environments (see docs/envs.md, `robot_rt.envs.scripted`).

    `__call__(observations, goals=None)`: `observations` the flat [N, obs_dim] array (or [obs_dim] when N = 1)
    or the goal environment's dict (then the policy aims at `desired_goal`); `goals` [N, 2] optional landing
    targets (x < 0). Returns env actions [N, 8] float32 in [-1, 1]: joint velocities as fractions of the velocity
    limits (the envs' normalised action space; `joint_velocities` gives them in the robot's units). Call
    `reset(mask)` when environments reset (vector envs: the step that returns their first observation).

    `landing_model` (`robot_rt.envs.landing_model.LandingModel`, optional): the landing point wanted (the goal, or
    (aim_x_m, aim_y_m); the fixed corrections aim_dx_m, aim_dy_m are not used) is then where the model predicts the
    return lands, and the lob is aimed at the target the model gives for it; the model must have been fitted with
    these parameters (aim apart). `arrival_centering` (with a model only; 0 = off) first moves each wanted landing
    point sideways so that the return reaches the human's hitting plane (`human_plane_x_m`) nearer the wanted y:
    `centered_landing`.

    `shot_model` (`robot_rt.envs.shot_model.ShotModel`, optional; not with `landing_model`): each ball is aimed at the
    lob target the model expects the human to answer most often (`ShotModel.best_target`, from the plan and the
    incoming spin estimate); such a policy takes no goals. `shot_in_exponent` (>= 1, default 1): the exponent of the
    model's P(in) in the value it maximises (`ShotModel.best_target`'s `in_exponent`: above 1, safer returns). `estimate_spin` (implied by a shot model) keeps the
    incoming ball's spin estimate in `incoming_spin` (`robot_rt.envs.features.IncomingSpinEstimator`).

    `tracker`: the ball tracker the contacts are planned from, 'fit' (`BatchedBallTracker`, the constant-acceleration
    fit) or 'ukf' (`robot_rt.estimation.batched_ukf.BatchedUKFTracker`, one physics filter per environment: 3-5x
    smaller plan errors near the contact, about 40 us per environment and step); `tracker_kwargs` go to it. A shot
    model must have been fitted with the same tracker."""

    def __init__(
        self,
        num_envs: int,
        robot: RobotDescription | None = None,
        config: WorldConfig | None = None,
        params=None,
        action_noise_std: float = 0.0,
        seed: int | None = None,
        tracker_kwargs: dict | None = None,
        landing_model=None,
        arrival_centering: float = 0.0,
        human_plane_x_m: float = ReturnModel.hitting_plane_x_m,
        shot_model=None,
        estimate_spin: bool = False,
        tracker: str = "fit",
        shot_in_exponent: float = 1.0,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
        if not isinstance(action_noise_std, (int, float)) or not np.isfinite(action_noise_std) or action_noise_std < 0:
            raise ValueError(f"action_noise_std: expected a finite number >= 0, got {action_noise_std!r}")
        self.n = int(num_envs)
        self.robot = robot or load_robot()
        self.config = config or WorldConfig()
        self.dt = self.config.step_s
        self.history = self.config.history
        self.layout = observation_layout(self.robot.dof, self.history)
        self.obs_dim = 2 * self.robot.dof + 5 * self.history
        self.action_noise_std = float(action_noise_std)
        self.rng = np.random.default_rng(seed)
        self.tracker = make_batched_tracker(tracker, self.n, **(tracker_kwargs or {}))  # names an unknown tracker
        if shot_model is not None and getattr(shot_model, "tracker", tracker) != tracker:
            raise ValueError(
                f"tracker: the shot model was fitted on plans of the {shot_model.tracker!r} tracker, got {tracker!r}"
            )
        self.ready_q = self.robot.home.copy()
        pos, nrm = paddle_position_normal(self.robot, self.ready_q[None])
        self.home_position, self.ready_normal = pos[0], nrm[0]
        self.v_max = self.robot.velocity_limit
        # the paddle centre's targets are kept inside the workspace box (leaving it ends the episode) less these
        # margins; the floor's is a parameter (`floor_margin_m`, set with the parameters)
        self.box_margin = np.array([0.06, 0.06, 0.04])
        self.box_high = self.robot.workspace_max_m - self.box_margin
        self.box_decel_mps2 = 4.0  # assumed paddle deceleration near the box walls
        self.landing_model = landing_model  # robot_rt.envs.landing_model.LandingModel or None
        for name, value in (("arrival_centering", arrival_centering), ("human_plane_x_m", human_plane_x_m)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if arrival_centering != 0.0 and landing_model is None:
            raise ValueError("arrival_centering: needs a landing_model (it moves the wanted landing point)")
        self.arrival_centering = float(arrival_centering)
        if shot_model is not None and landing_model is not None:
            raise ValueError("shot_model: not together with a landing_model (both choose the lob target)")
        if not isinstance(estimate_spin, bool):
            raise TypeError(f"estimate_spin: expected a bool, got {type(estimate_spin).__name__}")
        self.shot_model = shot_model  # robot_rt.envs.shot_model.ShotModel or None
        self.shot_in_exponent = check_in_exponent(shot_in_exponent, "shot_in_exponent")
        if self.shot_in_exponent != 1.0 and shot_model is None:
            raise ValueError("shot_in_exponent: needs a shot_model (it weighs the model's P(in))")
        self.incoming_spin = IncomingSpinEstimator(self.n) if (estimate_spin or shot_model is not None) else None
        self.shot_target = np.full((self.n, 2), np.nan)  # the shot model's choice of lob target per environment
        self.shot_value = np.full(self.n, np.nan)  # and its value (the expected human answer when the exponent is 1)
        self.human_plane_x_m = float(human_plane_x_m)
        self.set_params(ScriptedParams() if params is None else params)
        self.t = np.zeros(self.n)
        self.plan_t = np.full(self.n, np.nan)
        self.plan_p = np.zeros((self.n, 3))
        self.plan_v = np.zeros((self.n, 3))
        self.hit_shift = np.zeros(self.n)  # the chosen shift of the hitting point from hit_plane_x_m (m along x)

    # ------------------------------------------------------------------------------------------ parameters
    def set_params(self, params) -> None:
        """One `ScriptedParams` (every environment), a vector [P], or per-environment vectors [N, P]."""
        names = ScriptedParams.names()
        if isinstance(params, ScriptedParams):
            mat = np.broadcast_to(params.to_vector(), (self.n, len(names)))
        else:
            mat = with_legacy_defaults(np.asarray(params, dtype=np.float64))  # e.g. an exported policy's base
            if mat.shape == (len(names),):
                mat = np.broadcast_to(mat, (self.n, len(names)))
            if mat.shape != (self.n, len(names)):
                raise ValueError(
                    f"params: expected a ScriptedParams, shape ({len(names)},) or ({self.n}, {len(names)}), "
                    f"got {mat.shape}"
                )
        check_param_vector(mat, "params")
        if self.landing_model is not None:
            self.landing_model.check_params(mat)
        if self.shot_model is not None:
            self.shot_model.check_params(mat)
        self.params = np.array(mat, dtype=np.float64)
        self._p = {k: self.params[:, j] for j, k in enumerate(names)}
        self.box_low = np.tile(self.robot.workspace_min_m + self.box_margin, (self.n, 1))
        self.box_low[:, 2] = self.robot.workspace_min_m[2] + self._p["floor_margin_m"]

    def reset(self, mask=None) -> None:
        """Forgets ball tracks, plans and clocks of the environments where `mask` is True (all when None)."""
        if mask is None:
            m = np.ones(self.n, dtype=bool)
        else:
            m = np.asarray(mask)
            if m.shape != (self.n,) or m.dtype != np.bool_:
                raise ValueError(f"mask: expected a bool array of shape ({self.n},), got {m.dtype} {m.shape}")
        self.tracker.reset(m)
        if self.incoming_spin is not None:
            self.incoming_spin.reset(m)
        self.shot_target[m] = np.nan
        self.shot_value[m] = np.nan
        self.t[m] = 0.0
        self.plan_t[m] = np.nan
        self.hit_shift[m] = 0.0

    # ------------------------------------------------------------------------------------------ policy
    def _parse(self, observations, goals):
        if isinstance(observations, dict):
            if "observation" not in observations or "desired_goal" not in observations:
                raise ValueError("observations: a dict must hold 'observation' and 'desired_goal'")
            if goals is None:
                goals = observations["desired_goal"]
            observations = observations["observation"]
        obs = np.asarray(observations, dtype=np.float64)
        single = obs.ndim == 1 and self.n == 1
        if single:
            obs = obs[None]
        if obs.shape != (self.n, self.obs_dim):
            raise ValueError(f"observations: expected shape ({self.n}, {self.obs_dim}), got {obs.shape}")
        if not np.all(np.isfinite(obs)):
            raise ValueError("observations: contains NaN or Inf")
        if goals is not None and self.shot_model is not None:
            raise ValueError("goals: a policy with a shot_model chooses where its returns land and takes no goals")
        if goals is not None:
            goals = np.asarray(goals, dtype=np.float64)
            if single and goals.shape == (2,):
                goals = goals[None]
            if goals.shape != (self.n, 2):
                raise ValueError(f"goals: expected shape ({self.n}, 2) (landing x, y), got {goals.shape}")
            if not np.all(np.isfinite(goals)):
                raise ValueError("goals: contains NaN or Inf")
        return obs, goals, single

    def centered_landing(self, wanted_xy: np.ndarray, contact_p: np.ndarray) -> np.ndarray:
        """The wanted landing points [N, 2] moved sideways towards the line from the contact point to the wanted
        point's y on the human's hitting plane (x = `human_plane_x_m`): y += g k (y_contact - y), with k = (x_plane -
        x) / (x_plane - x_contact) and g = `arrival_centering`. At g = 1 a straight flight through the moved point
        reaches the plane at the wanted y (the default human answers best at y = 0); a return aimed at y itself from a
        wide contact crosses the centre line and arrives on the other side."""
        out = np.array(wanted_xy, dtype=np.float64)
        den = self.human_plane_x_m - contact_p[:, 0]
        # the contact lies on the robot's side (x > 0) and the plane behind the human's end: den < 0; anything else
        # (a contact near the plane) is left unmoved
        k = np.where(den < -0.5, (self.human_plane_x_m - out[:, 0]) / np.where(den < -0.5, den, -1.0), 0.0)
        out[:, 1] += self.arrival_centering * k * (contact_p[:, 1] - out[:, 1])
        return out

    def __call__(self, observations, goals=None) -> np.ndarray:
        obs, goals, single = self._parse(observations, goals)
        p = self._p
        q = obs[:, self.layout["q"]]
        det = obs[:, self.layout["detections"]].reshape(self.n, self.history, 5)
        self.tracker.update(det, self.t)
        if self.incoming_spin is not None:
            self.incoming_spin.update(det, self.t)
        cross = self.tracker.predict_plane_crossing(p["hit_plane_x_m"])
        fresh = cross.found & (cross.velocity_mps[:, 0] > 0)
        cross_t, cross_p, cross_v = cross.t_s, cross.position_m, cross.velocity_mps
        if np.any(p["min_hit_height_m"] > 0):
            cross_t, cross_p, cross_v = self.choose_hit_point(cross_t, cross_p, cross_v, fresh)
        self.plan_t = np.where(fresh, cross_t + p["timing_offset_s"], self.plan_t)
        self.plan_p = np.where(fresh[:, None], cross_p, self.plan_p)
        self.plan_v = np.where(fresh[:, None], cross_v, self.plan_v)
        # a tracked ball that flies away (after the hit) ends the plan
        state, valid = self.tracker.state()
        leaving = valid & (state[:, 3] < -0.5)
        self.plan_t[leaving] = np.nan
        self.hit_shift[leaving] = 0.0
        self.shot_target[leaving] = np.nan
        active = np.isfinite(self.plan_t) & (self.plan_t > self.t - 0.02)

        if goals is None:
            target_xy = np.stack([p["aim_x_m"], p["aim_y_m"]], axis=1)
        else:
            target_xy = goals.copy()
        if self.shot_model is not None:
            # the lob target the human is expected to answer most often (docs/envs.md, `robot_rt.envs.shot_model`)
            planned = np.isfinite(self.plan_t)
            if planned.any():
                chosen, value = self.shot_model.best_target(
                    self.plan_p[planned],
                    self.plan_v[planned],
                    self.incoming_spin.estimate[planned],
                    previous=self.shot_target[planned],
                    in_exponent=self.shot_in_exponent,
                )
                self.shot_target[planned], self.shot_value[planned] = chosen, value
                target_xy[planned] = chosen
        elif self.landing_model is None:
            target_xy = target_xy + np.stack([p["aim_dx_m"], p["aim_dy_m"]], axis=1)
        else:
            # the lob target whose predicted landing is the one wanted (docs/envs.md, `robot_rt.envs.landing_model`);
            # the model replaces the aim's fixed corrections (aim_dx_m, aim_dy_m)
            planned = np.isfinite(self.plan_t)
            if planned.any():
                if self.arrival_centering != 0.0:
                    target_xy[planned] = self.centered_landing(target_xy[planned], self.plan_p[planned])
                target_xy[planned] = self.landing_model.command(
                    target_xy[planned], self.plan_p[planned], self.plan_v[planned]
                )
        v_in = self.plan_v
        d_out = lob_directions(self.plan_p, target_xy, p["return_speed_mps"], p["extra_elevation_rad"])
        normal, swing_speed = self.contact_plan(v_in, d_out)
        time_left = self.plan_t - self.t
        lead = swing_speed * np.clip(np.nan_to_num(time_left), 0.0, p["swing_s"])
        hit_target = self.plan_p - lead[:, None] * normal
        hit_target[:, 2] += p["contact_dz_m"]
        swinging = (np.nan_to_num(time_left) < p["swing_s"])[:, None]
        swing = np.where(swinging, swing_speed[:, None] * normal, 0.0)

        ready = self.home_position + np.stack([p["ready_dx_m"], p["ready_dy_m"], p["ready_dz_m"]], axis=1)
        target = np.where(active[:, None], hit_target, ready)
        normal = np.where(active[:, None], normal, self.ready_normal)
        swing = np.where(active[:, None], swing, 0.0)
        target = np.clip(target, self.box_low, self.box_high)
        # far from the swing the paddle may travel faster (wide balls are reached in time); near it the slower cap
        # keeps the paddle's velocity at contact what the swing makes it
        far = active & (np.nan_to_num(time_left) > p["swing_s"] + APPROACH_MARGIN_S)
        cap = np.where(far, np.maximum(p["max_paddle_speed_mps"], p["approach_speed_mps"]), p["max_paddle_speed_mps"])
        qd = self.resolved_rate(q, target, normal, swing, speed_cap=cap)
        if self.action_noise_std > 0:
            qd = qd + self.action_noise_std * self.v_max * self.rng.standard_normal(qd.shape)
        qd = self._brake(q, qd)
        self.t += self.dt
        self.last_joint_velocities = qd
        action = np.clip(qd / self.v_max, -1.0, 1.0).astype(np.float32)
        return action[0] if single else action

    def choose_hit_point(self, t_s, position_m, velocity_mps, fresh):
        """The hitting point of each environment where `min_hit_height_m` > 0 (docs/envs.md, "hit-point choice"):
        the predicted crossing of the nominal plane (t_s [N], position_m, velocity_mps [N, 3]) moved along the
        flight by the shift in `HIT_SHIFTS_M` that keeps the ball highest up to `min_hit_height_m` (less
        `_SHIFT_COST_PER_M` per m of shift, so that the nominal plane wins where it is high enough), inside
        `HIT_X_RANGE_M` and not yet passed. The flight is extrapolated as a drag-free parabola from the
        crossing (0.35 m is about 0.1 s of flight: drag moves it by millimetres); a shifted point below the
        ball's table contact height would need a bounce in between and is not a candidate. Returns the
        (t, position, velocity) of the chosen points; environments with the choice off (or without a fresh
        prediction) get theirs unchanged."""
        z_min = self._p["min_hit_height_m"]
        on = fresh & (z_min > 0)
        if not on.any():
            return t_s, position_m, velocity_mps
        idx = np.nonzero(on)[0]
        p0, v0 = position_m[idx], velocity_mps[idx]
        shifts = HIT_SHIFTS_M[None, :]  # [1, K]
        tau = shifts / v0[:, 0:1]  # [n, K] (vx > 0: fresh)
        g = self.tracker.g
        z = p0[:, 2:3] + v0[:, 2:3] * tau - 0.5 * g * tau * tau
        x = p0[:, 0:1] + shifts
        # below the ball's table contact height (table top + radius) a shifted point would need a bounce in between
        ok = (x >= HIT_X_RANGE_M[0]) & (x <= HIT_X_RANGE_M[1]) & (z >= self.tracker.contact_z_m)
        ok &= (t_s[idx, None] + tau) > self.t[idx, None] + self.dt  # not passed yet
        score = np.minimum(z, z_min[idx, None]) - _SHIFT_COST_PER_M * np.abs(shifts)
        score += _SHIFT_HYSTERESIS_M * np.isclose(shifts, self.hit_shift[idx, None])
        score = np.where(ok, score, -np.inf)
        best = np.argmax(score, axis=1)
        chosen = np.where(np.isfinite(score[np.arange(idx.size), best]), HIT_SHIFTS_M[best], 0.0)
        self.hit_shift[idx] = chosen
        dt = chosen / v0[:, 0]
        acc = np.array([0.0, 0.0, -g])
        t_s, position_m, velocity_mps = t_s.copy(), position_m.copy(), velocity_mps.copy()
        t_s[idx] += dt
        position_m[idx] = p0 + v0 * dt[:, None] + 0.5 * acc * (dt * dt)[:, None]
        velocity_mps[idx] = v0 + acc * dt[:, None]
        return t_s, position_m, velocity_mps

    def joint_velocities(self, actions) -> np.ndarray:
        """Env actions (this policy's output) -> joint velocities in the robot's units (m/s, rad/s)."""
        return np.asarray(actions, dtype=np.float64) * self.v_max

    def contact_plan(self, v_in: np.ndarray, d_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Paddle normal [N, 3] and swing speed [N] for incoming velocity v_in and outgoing direction d_out
        (docs/envs.md, `robot_rt.envs.scripted`, step 3): the blend with weight b = `mirror_blend` of the unit reflection law
        (n_r = normalise(d_out - v_in / |v_in|), speed `swing_speed_mps`) and the velocity-matching law of a
        frictionless paddle with restitution e moving at s along n (v_out = v_in - (1 + e) ((v_in - s n).n) n):
        for v_out = `return_speed_mps` d_out, n_v = normalise(v_out - v_in), s_v = (v_out.n_v + e v_in.n_v) / (1 + e) (clipped to [-2, 6] m/s)."""
        p = self._p
        e = self.config.paddle_restitution
        unit_in = v_in / np.maximum(np.linalg.norm(v_in, axis=1, keepdims=True), 1e-9)
        n_r = d_out - unit_in
        n_r /= np.maximum(np.linalg.norm(n_r, axis=1, keepdims=True), 1e-9)
        v_out = p["return_speed_mps"][:, None] * d_out
        n_v = v_out - v_in
        n_v /= np.maximum(np.linalg.norm(n_v, axis=1, keepdims=True), 1e-9)
        # s_v < 0: the paddle gives way to slow a fast ball down
        s_v = np.clip((np.sum(v_out * n_v, axis=1) + e * np.sum(v_in * n_v, axis=1)) / (1.0 + e), -2.0, 6.0)
        b = p["mirror_blend"]
        normal = (1.0 - b)[:, None] * n_r + b[:, None] * n_v
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
        return normal, (1.0 - b) * p["swing_speed_mps"] + b * s_v

    def resolved_rate(
        self, q: np.ndarray, target: np.ndarray, normal: np.ndarray, swing: np.ndarray, speed_cap=None
    ) -> np.ndarray:
        """Joint velocities [N, dof] of the damped resolved-rate law of docs/envs.md, `robot_rt.envs.scripted` (step 5);
        `speed_cap` [N]: the approach's paddle speed cap (default `max_paddle_speed_mps`)."""
        return self.common_scale_solution(*self.task_command(q, target, normal, swing, speed_cap))

    def task_command(
        self, q: np.ndarray, target: np.ndarray, normal: np.ndarray, swing: np.ndarray, speed_cap=None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The resolved-rate law's task: (weighted Jacobian [N, 6, dof], task velocity [N, 6] = paddle velocity and
        weighted turn, null-space joint velocity [N, dof] towards the ready pose); `resolved_rate`'s arguments."""
        p = self._p
        cap = p["max_paddle_speed_mps"] if speed_cap is None else np.asarray(speed_cap, dtype=np.float64)
        pos, nrm, jp, jn = paddle_jacobian_analytic(self.robot, q)
        w = p["normal_weight"][:, None]
        k = p["gain_per_s"][:, None]
        jac = np.concatenate([jp, w[:, :, None] * jn], axis=1)  # [N, 6, dof]
        approach = k * (target - pos)
        speed = np.linalg.norm(approach, axis=1, keepdims=True)
        approach *= np.minimum(1.0, cap[:, None] / np.maximum(speed, 1e-12))
        # the paddle centre may approach a wall of its box only as fast as it can stop before it (leaving ends
        # the episode): the Cartesian velocity towards a wall is capped at sqrt(2 a_box (distance - 1 cm))
        v_lin = approach + swing
        room_low = np.maximum(pos - self.robot.workspace_min_m - 0.01, 0.0)
        room_high = np.maximum(self.robot.workspace_max_m - 0.01 - pos, 0.0)
        v_lin = np.clip(
            v_lin, -np.sqrt(2 * self.box_decel_mps2 * room_low), np.sqrt(2 * self.box_decel_mps2 * room_high)
        )
        turn = k * (normal - nrm)
        turn_rate = np.linalg.norm(turn, axis=1, keepdims=True)
        turn *= np.minimum(1.0, p["max_turn_radps"][:, None] / np.maximum(turn_rate, 1e-12))
        task = np.concatenate([v_lin, w * turn], axis=1)
        z = p["null_gain_per_s"][:, None] * (self.ready_q - q)
        return jac, task, z

    def common_scale_solution(self, jac: np.ndarray, task: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Joint velocities [N, dof] for `task_command`'s (jac, task, z): the damped least-squares solution with z in
        the null space, all joints scaled by one factor where one would exceed its velocity limit."""
        jjt = jac @ np.swapaxes(jac, 1, 2) + 1e-3 * np.eye(6)
        x = np.linalg.solve(jjt, (task - np.einsum("nij,nj->ni", jac, z))[..., None])[..., 0]
        qd = z + np.einsum("nji,nj->ni", jac, x)
        # one common scale keeps the paddle's direction of motion where a joint would saturate
        excess = np.max(np.abs(qd) / self.v_max, axis=1, keepdims=True)
        return qd / np.maximum(excess, 1.0)

    def brake_to_limits(self, q: np.ndarray, command: np.ndarray) -> np.ndarray:
        """Caps each joint's speed towards a limit at sqrt(2 a d) - a dt (it can always stop before the limit);
        joint velocities in the robot's units, float32."""
        return self._brake(q, command).astype(np.float32)

    def _brake(self, q: np.ndarray, command: np.ndarray) -> np.ndarray:
        return joint_brake(self.robot, q, command, self.dt)
