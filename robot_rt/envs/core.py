"""Batched simulation core of the table-tennis environments.

Design notes: docs/envs.md, section `robot_rt.envs.core`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rt import _native
from robot_rt.ballistics import BallParams, TableGeometry, pack_params, reference
from robot_rt.robot import RobotDescription, load_robot
from robot_rt.robot.kinematics import forward_kinematics

from .human_model import HumanBehaviorModel
from .observation import build_observation, observation_bounds

# ball phases (PHASE_SERVING: the episode's serve is still to come, WorldConfig.serve_delay_s)
PHASE_INCOMING, PHASE_RETURNING, PHASE_DONE, PHASE_WAITING, PHASE_SERVING = 0, 1, 2, 3, 4

# outcome codes (why a ball/episode ended)
OUTCOME_NONE = 0
OUTCOME_RETURNED = 1  # robot's ball landed on the human's half
OUTCOME_MISSED = 2  # the robot never touched the incoming ball
OUTCOME_OUT = 3  # robot touched it, but it did not land on the human's half
OUTCOME_LIMIT = 4  # a joint reached its position limit or the paddle left its workspace box
OUTCOME_HUMAN_FAULT = 5  # the incoming ball was not playable (net/floor before reaching the robot)
OUTCOME_NAMES = {0: "none", 1: "returned", 2: "missed", 3: "out", 4: "limit", 5: "human_fault"}

SLOW_BALL_MPS = 0.5  # a ball slower than this (rolling, resting) ends the rally

# Order of the packed scalar parameters read by the C++ step (world_step.hpp, WorldScalars).
WORLD_PARAM_NAMES = (
    "dt_s",
    "substeps",
    "ball_radius_m",
    "paddle_radius_m",
    "paddle_restitution",
    "paddle_friction",
    "miss_plane_x_m",
    "human_plane_x_m",
    "reward_hit",
    "reward_land",
    "reward_shaping",
    "shaping_length_m",
    "action_cost",
    "penalty_limit",
    "goal_conditioned",
    "slow_ball_mps",
)

# Order of the packed camera constants read by the C++ camera (world_step.hpp, CameraModel).
CAMERA_PARAM_NAMES = (
    "camera_hz",
    "camera_drop_prob",
    "camera_noise_m",
    "camera_latency_s",
    "camera_latency_jitter_s",
    "step_s",
    "frames_per_step",
    "ring",
)


@dataclass(frozen=True)
class WorldConfig:
    policy_hz: float = 100.0
    physics_hz: float = 1000.0
    camera_hz: float = 200.0
    camera_noise_m: float = 0.005
    camera_drop_prob: float = 0.03
    camera_latency_s: float = 0.012
    camera_latency_jitter_s: float = 0.003
    history: int = 6  # detections in the observation
    paddle_restitution: float = 0.85
    paddle_friction: float = 0.35
    miss_plane_x_m: float = 2.4  # incoming ball past this plane: missed
    human_plane_x_m: float = -1.7  # returning ball past this plane: the human plays it
    reward_hit: float = 1.0
    reward_land: float = 2.0
    reward_shaping: float = 0.1  # paddle-ball proximity while the ball comes in
    shaping_length_m: float = 0.15
    action_cost: float = 1e-3
    penalty_limit: float = 1.0
    # Between rallies, as a real robot plays them (the real-time loop serves the next ball some time after a rally
    # ended, with the robot wherever the rally left it): the serve comes serve_delay_s + U(0, serve_delay_jitter_s)
    # after the episode starts (rounded to policy steps; the robot moves meanwhile, the camera sees no ball), and
    # with keep_robot_pose an episode that starts without a seed of its own (an autoreset) keeps the robot's joint
    # positions and velocities where the last one left them; a seeded reset starts at home, so a seed still fixes
    # the episode; a kept pose with a joint at its limit or the paddle outside its box (a limit violation ended the
    # last episode) starts at home instead, as a robot is recovered after such a stop. The defaults (no delay, start
    # at home) draw nothing extra: existing seeds replay unchanged.
    serve_delay_s: float = 0.0
    serve_delay_jitter_s: float = 0.0
    keep_robot_pose: bool = False

    def __post_init__(self) -> None:
        for name in ("policy_hz", "physics_hz", "camera_hz"):
            if not getattr(self, name) > 0:
                raise ValueError(f"WorldConfig.{name} must be > 0, got {getattr(self, name)}")
        ratio = self.physics_hz / self.policy_hz
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(f"WorldConfig: physics_hz / policy_hz must be a positive integer, got {ratio}")
        if not 0 <= self.camera_drop_prob < 1:
            raise ValueError(f"WorldConfig.camera_drop_prob must lie in [0, 1), got {self.camera_drop_prob}")
        if self.history < 1:
            raise ValueError(f"WorldConfig.history must be >= 1, got {self.history}")
        for name in ("serve_delay_s", "serve_delay_jitter_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and 0.0 <= value <= 60.0):
                raise ValueError(f"WorldConfig.{name} must be a number of seconds in [0, 60], got {value!r}")

    @property
    def substeps(self) -> int:
        """Physics substeps per policy step."""
        return int(round(self.physics_hz / self.policy_hz))

    @property
    def step_s(self) -> float:
        """The policy step (the env's `dt`): `substeps` physics substeps. Everything that needs the period reads
        this (world time, the camera, the scripted policy, rally mode, the env-policy adapter)."""
        return self.substeps / self.physics_hz

    @property
    def substep_s(self) -> float:
        """One physics substep."""
        return 1.0 / self.physics_hz


def paddle_contact(ball, paddle_pos, paddle_normal, paddle_vel, side, radius_m, restitution, friction):
    """Rebound of balls [M, 9] on paddles (see docs/envs.md, `robot_rt.envs.core`); `side` = +-1, which face is hit."""
    out = np.array(ball, dtype=np.float64, copy=True)
    n = paddle_normal * side[:, None]  # normal pointing towards the ball
    v_rel = out[:, 3:6] - paddle_vel
    vn_mag = np.sum(v_rel * n, axis=1)
    approaching = vn_mag < 0
    v_n = vn_mag[:, None] * n
    contact_arm = -radius_m * n
    slip = v_rel - v_n + np.cross(out[:, 6:9], contact_arm)
    slip_mag = np.linalg.norm(slip, axis=1)
    dv_n = -(1.0 + restitution) * v_n
    limit = np.minimum(friction * (1.0 + restitution) * np.abs(vn_mag), 0.4 * slip_mag)
    direction = np.where(slip_mag[:, None] > 1e-12, slip / np.maximum(slip_mag, 1e-12)[:, None], 0.0)
    dv_t = -limit[:, None] * direction
    dv = np.where(approaching[:, None], dv_n + dv_t, 0.0)
    out[:, 3:6] += dv
    out[:, 6:9] += np.where(approaching[:, None], (1.5 / radius_m**2) * np.cross(contact_arm, dv_t), 0.0)
    return out


# ------------------------------------------------------------------------------------------ random streams
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def counter_uniform(key: np.ndarray, counter: np.ndarray, count: int) -> np.ndarray:
    """Uniforms in [0, 1) [N, count]: value j of world i is splitmix64(key_i + (counter_i + j + 1) * golden)."""
    j = np.arange(1, count + 1, dtype=np.uint64)
    z = key[:, None] + (counter[:, None] + j[None, :]) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


_CHOL: dict = {}


def _launch_cholesky(human: HumanBehaviorModel) -> np.ndarray:
    """cholesky(human.cov + 1e-12 I), computed once per covariance (a LAPACK call per reset otherwise)."""
    cov = np.asarray(human.cov, dtype=np.float64)
    key = cov.tobytes()
    if key not in _CHOL:
        if len(_CHOL) > 64:
            _CHOL.clear()
        _CHOL[key] = np.linalg.cholesky(cov + 1e-12 * np.eye(9))
    return _CHOL[key]


def sample_launches(
    human: HumanBehaviorModel, rngs: list, is_valid=None, max_rounds: int = 100, first_valid=None
) -> np.ndarray:
    """`human.sample(1, rng)[0]` for each generator of `rngs`, [len(rngs), 9], with identical draws and result,
    but batched over the worlds and validated lazily (candidates are checked in order, in growing chunks,
    until the first valid one, instead of all 16 of a round), which makes episode starts ~10x cheaper.
    `first_valid(candidates [M, 9], offsets [groups + 1]) -> index of the first valid candidate per group or -1`
    (TableTennisWorld's native search, the same validity as `is_valid`) replaces the chunks: one call a round."""
    is_valid = is_valid or human.is_valid
    m = len(rngs)
    out = np.empty((m, 9))
    if m == 0:
        return out
    chol = _launch_cholesky(human)
    pending = list(range(m))
    for _ in range(max_rounds):
        if not pending:
            return out
        cands = []
        for i in pending:
            c = human.mean + rngs[i].standard_normal((16, 9)) @ chol.T
            c[:, 0] = human.mean[0]
            cands.append(c[c[:, 3] > 0.5])
        if first_valid is not None:
            offsets = np.zeros(len(cands) + 1, dtype=np.int64)
            np.cumsum([len(c) for c in cands], out=offsets[1:])
            first = first_valid(np.ascontiguousarray(np.concatenate(cands)), offsets).tolist()
            for j, i in enumerate(pending):
                if first[j] >= 0:
                    out[i] = cands[j][first[j]]
            pending = [i for j, i in enumerate(pending) if first[j] < 0]
            continue
        checked = [0] * len(pending)
        found = [False] * len(pending)
        chunk = 1
        while True:
            batch, owner = [], []
            for j, c in enumerate(cands):
                if not found[j] and checked[j] < len(c):
                    part = c[checked[j] : checked[j] + chunk]
                    batch.append(part)
                    owner.extend([j] * len(part))
            if not batch:
                break
            ok = np.asarray(is_valid(np.concatenate(batch)), dtype=bool)
            pos = 0
            for j, c in enumerate(cands):
                if found[j] or checked[j] >= len(c):
                    continue
                k = min(chunk, len(c) - checked[j])
                hit = np.nonzero(ok[pos : pos + k])[0]
                if hit.size:
                    out[pending[j]] = c[checked[j] + hit[0]]
                    found[j] = True
                checked[j] += k
                pos += k
            chunk *= 2
        pending = [i for j, i in enumerate(pending) if not found[j]]
    if pending:
        raise RuntimeError(
            f"HumanBehaviorModel '{human.name}': no valid launch state after {max_rounds} rounds; the model's "
            "mean/cov describe balls that mostly miss the table"
        )
    return out


def sample_returns(
    human: HumanBehaviorModel, arrivals: np.ndarray, rngs: list, is_valid=None, first_valid=None
) -> list:
    """`human.sample_return(arrival, rng)` for each pair, batched (same draws, same results): a list of new launch
    states [9] or None (the human misses)."""
    is_valid = is_valid or human.is_valid
    arrivals = np.asarray(arrivals, dtype=np.float64).reshape(-1, 9)
    if len(arrivals) == 0:
        return []
    p = np.asarray(human.returns.return_probability(arrivals), dtype=np.float64).reshape(-1)
    answer = [rng.random() < float(p[i]) for i, rng in enumerate(rngs)]
    idx = [i for i, a in enumerate(answer) if a]
    res: list = [None] * len(rngs)
    if not idx:
        return res
    balls = sample_launches(human, [rngs[i] for i in idx], is_valid, first_valid=first_valid)
    shifted = balls.copy()
    shifted[:, 1] = 0.5 * balls[:, 1] + 0.5 * np.clip(arrivals[idx, 1], -0.7, 0.7)
    ok = np.asarray(is_valid(shifted), dtype=bool)
    for k, i in enumerate(idx):
        res[i] = shifted[k] if ok[k] else balls[k]
    return res


_FIRST_BITS: dict = {}


def _first_set_bits(k: int):
    """For every 16-bit mask: the positions of its first k set bits [65536, k] (int64) and which exist."""
    if k not in _FIRST_BITS:
        bits = ((np.arange(1 << 16)[:, None] >> np.arange(16)) & 1).astype(bool)
        order = np.argsort(~bits, axis=1, kind="stable")[:, :k]
        valid = np.take_along_axis(bits, order, axis=1)
        _FIRST_BITS[k] = (np.where(valid, order, 0).astype(np.int64), valid)
    return _FIRST_BITS[k]


class TableTennisWorld:
    """N worlds stepped together (see docs/envs.md, `robot_rt.envs.core`). All arrays have a leading dimension N."""

    def __init__(
        self,
        num_worlds: int,
        human: HumanBehaviorModel | None = None,
        robot: RobotDescription | None = None,
        config: WorldConfig | None = None,
        params: BallParams | None = None,
        table: TableGeometry | None = None,
        goal_conditioned: bool = False,
        backend: str = "auto",
        num_threads: int | None = None,
    ):
        if isinstance(num_worlds, bool) or not isinstance(num_worlds, (int, np.integer)) or num_worlds < 1:
            raise ValueError(f"num_worlds: expected a positive int, got {num_worlds!r}")
        if num_threads is not None and (not isinstance(num_threads, (int, np.integer)) or num_threads < 1):
            raise ValueError(f"num_threads: expected a positive int or None, got {num_threads!r}")
        self.n = int(num_worlds)
        self.backend = _native.resolve_backend("envs", backend)
        self.human = human or HumanBehaviorModel.default()
        self.robot = robot or load_robot()
        self.config = config or WorldConfig()
        self.params = params or BallParams()
        self.table = table or TableGeometry()
        self.pk = pack_params(self.params, self.table)
        self.goal_conditioned = bool(goal_conditioned)
        self.dof = self.robot.dof
        self.q_min, self.q_max = self.robot.position_min, self.robot.position_max
        self.v_max, self.a_max = self.robot.velocity_limit, self.robot.acceleration_limit
        n, k, s = self.n, self.config.history, self.config.substeps
        self._neg_v_max = -self.v_max
        self._cmd = np.zeros((n, self.dof))  # clipped joint velocity commands of the current step
        self.q = np.tile(self.robot.home, (n, 1))
        self.qd = np.zeros((n, self.dof))
        self.ball = np.zeros((n, 9))
        self.phase = np.full(n, PHASE_DONE, dtype=np.int64)
        self.t = np.zeros(n)
        self.hits = np.zeros(n, dtype=np.int64)  # successful returns in this episode (rally length)
        self.touched = np.zeros(n, dtype=bool)  # robot touched the current ball
        self.landed = np.zeros(n, dtype=bool)  # the robot's return of the current ball landed on the human half
        self.outcome = np.zeros(n, dtype=np.int64)
        self.landing = np.full((n, 2), np.nan)  # where the robot's last return first touched the table
        self.goal = np.zeros((n, 2))
        self.serve_in = np.zeros(n, dtype=np.int64)  # policy steps until the episode's serve (PHASE_SERVING)
        # the last reset was to keep the robot but put it at home (WorldConfig.keep_robot_pose): whoever models the
        # robot's own trajectory across episodes must restart it there (robot_rt.bridge.loop_model)
        self.robot_sent_home = np.zeros(n, dtype=bool)
        self._serve_ball = np.zeros((n, 9))  # the serve's launch state, drawn at the reset
        # per-step outputs of the physics
        self.reward = np.zeros(n)
        self.terminated = np.zeros(n, dtype=bool)
        self.ev_hit = np.zeros(n, dtype=bool)
        self.ev_landed = np.zeros(n, dtype=bool)
        self.ev_limit = np.zeros(n, dtype=bool)
        # the human's return probability of the robot's landed return that reached the human's plane in the last
        # step (NaN where none did): what the human answers, before the draw (a fitness signal for placement)
        self.answer_probability = np.full(n, np.nan)
        # the ball's state where it reached the human's hitting plane this step (NaN elsewhere): what the human's
        # answer was drawn from (shot models are fitted on it)
        self.arrival_ball = np.full((n, 9), np.nan)
        self._arrivals_recorded = False
        self.rec_pos = np.zeros((n, s, 3))  # ball position at the end of each substep
        self.rec_active = np.zeros((n, s), dtype=bool)  # phase != done at the end of each substep
        # camera ring buffer of frames: capture time, arrival time, position
        self.ring = 32
        self.cam_t = np.full((n, self.ring), -np.inf)
        self.cam_arrival = np.full((n, self.ring), np.inf)
        self.cam_pos = np.zeros((n, self.ring, 3))
        self.cam_head = np.zeros(n, dtype=np.int64)
        self.cam_phase = np.zeros(n)  # time of the episode's first camera frame
        self.cam_count = np.zeros(n, dtype=np.int64)  # frames due so far (taken or not)
        self.cam_key = np.zeros(n, dtype=np.uint64)
        self.cam_counter = np.zeros(n, dtype=np.uint64)
        self.frames_per_step = int(np.ceil(self.config.step_s * self.config.camera_hz)) + 1
        self.rngs = [np.random.default_rng() for _ in range(n)]
        self.history = k
        self.num_threads = int(num_threads) if num_threads is not None else None
        self._stepper = None
        self._native_camera = False  # camera frames taken inside the native step
        if self.backend != "numpy":
            self._stepper = self._make_stepper(_native.backend_module("envs", self.backend))
            if hasattr(self._stepper, "set_camera"):
                self._stepper.set_camera(self.camera_scalars())
                self._native_camera = True
        self._obs_bounds = None  # (low, high) float32 of observations(), built on first use
        self._cpu_mod = _native.native("_envs")  # looked up once: a lookup per call costs ~10 us
        # launch-state validity (HumanBehaviorModel.is_valid): natively from the first contact when built
        self._is_valid = self.human.is_valid
        if hasattr(self._cpu_mod, "first_contacts"):
            self._human_pk = pack_params(self.human.params, self.human.table)
            self._is_valid = self.launch_is_valid
        self._first_valid = self.first_valid_launch if hasattr(self._cpu_mod, "first_valid_launches") else None

    def launch_is_valid(self, states) -> np.ndarray:
        """`HumanBehaviorModel.is_valid` (first contact = the table on the robot's half, inside the lines) from
        the same flight (grid 2 ms, horizon 1.5 s) stopped at the first contact (robot_rt._envs.first_contacts)."""
        s = np.ascontiguousarray(np.atleast_2d(np.asarray(states, dtype=np.float64)))
        kind, first = self._cpu_mod.first_contacts(s, self._human_pk, 2e-3, 1.5, self.num_threads or 0)
        table = self.human.table
        half_l, half_w = table.length_m / 2, table.width_m / 2
        # NaN rows (no contact) compare False without a warning: no errstate needed (it costs ~10 us per call)
        return (
            (kind == reference.KIND_TABLE)
            & (first[:, 0] > 0.0)
            & (first[:, 0] < half_l)
            & (np.abs(first[:, 1]) < half_w)
        )

    def first_valid_launch(self, states, offsets) -> np.ndarray:
        """Per group states[offsets[g]:offsets[g + 1]], the index of its first `launch_is_valid` state or -1, flying
        the candidates in order and stopping at the first valid one (robot_rt._envs.first_valid_launches)."""
        table = self.human.table
        return self._cpu_mod.first_valid_launches(
            np.ascontiguousarray(states, dtype=np.float64),
            np.ascontiguousarray(offsets, dtype=np.int64),
            self._human_pk,
            2e-3,
            1.5,
            table.length_m / 2,
            table.width_m / 2,
            self.num_threads or 0,
        )

    def world_scalars(self) -> np.ndarray:
        """The packed scalar parameters of the physics step, order `WORLD_PARAM_NAMES`."""
        cfg = self.config
        return np.array(
            [
                cfg.substep_s,
                cfg.substeps,
                self.params.radius_m,
                self.robot.paddle_radius_m,
                cfg.paddle_restitution,
                cfg.paddle_friction,
                cfg.miss_plane_x_m,
                cfg.human_plane_x_m,
                cfg.reward_hit,
                cfg.reward_land,
                cfg.reward_shaping,
                cfg.shaping_length_m,
                cfg.action_cost,
                cfg.penalty_limit,
                1.0 if self.goal_conditioned else 0.0,
                SLOW_BALL_MPS,
            ],
            dtype=np.float64,
        )

    def camera_scalars(self) -> np.ndarray:
        """The packed camera constants of the native camera, order `CAMERA_PARAM_NAMES`."""
        cfg = self.config
        return np.array(
            [
                cfg.camera_hz,
                cfg.camera_drop_prob,
                cfg.camera_noise_m,
                cfg.camera_latency_s,
                cfg.camera_latency_jitter_s,
                cfg.step_s,  # what the NumPy path adds to t
                self.frames_per_step,
                self.ring,
            ],
            dtype=np.float64,
        )

    def _camera_arrays(self) -> tuple:
        return (
            self.t,
            self.cam_phase,
            self.cam_count,
            self.cam_key,
            self.cam_counter,
            self.cam_t,
            self.cam_arrival,
            self.cam_pos,
            self.cam_head,
        )

    def _make_stepper(self, mod):
        ch = self.robot.chain_arrays()
        return mod.WorldStepper(
            ch["joint_type"],
            ch["axis"],
            ch["origin_xyz_m"],
            ch["origin_rpy_rad"],
            ch["paddle_xyz_m"],
            ch["paddle_rpy_rad"],
            np.ascontiguousarray(self.q_min),
            np.ascontiguousarray(self.q_max),
            np.ascontiguousarray(self.v_max),
            np.ascontiguousarray(self.a_max),
            np.ascontiguousarray(self.robot.workspace_min_m, dtype=np.float64),
            np.ascontiguousarray(self.robot.workspace_max_m, dtype=np.float64),
            self.pk,
            self.world_scalars(),
        )

    # ------------------------------------------------------------------------------------------ reset
    def reset(self, indices, seeds=None, keep_robot=False) -> None:
        """Resets worlds `indices`; `seeds` (same length, ints or None) reseed their generators. `keep_robot` (a bool,
        or one per index): with `WorldConfig.keep_robot_pose`, these worlds' robots start where their last episode
        left them (the vector envs pass it for autoresets and unseeded resets) unless a joint is at its limit or the
        paddle outside its workspace box there; else at home."""
        indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        if indices.size and (indices.min() < 0 or indices.max() >= self.n):
            raise ValueError(f"indices: expected world indices in [0, {self.n}), got {indices.tolist()}")
        if seeds is not None and len(seeds) != len(indices):
            raise ValueError(f"seeds: expected {len(indices)} seeds (or None), got {len(seeds)}")
        keep = np.broadcast_to(np.asarray(keep_robot, dtype=bool), indices.shape)
        cfg = self.config
        rngs, phase, key, goal, delay = [], [], [], [], []
        cam_period = 1.0 / self.config.camera_hz
        for j, i in enumerate(indices.tolist()):
            if seeds is not None and seeds[j] is not None:
                self.rngs[i] = np.random.default_rng(int(seeds[j]))
            rng = self.rngs[i]
            phase.append(rng.uniform(0.0, cam_period))
            key.append(rng.integers(0, 2**63 - 1))
            if self.goal_conditioned:
                goal.append((rng.uniform(-1.2, -0.3), rng.uniform(-0.6, 0.6)))
            jitter = rng.uniform(0.0, cfg.serve_delay_jitter_s) if cfg.serve_delay_jitter_s > 0 else 0.0
            delay.append(int(round((cfg.serve_delay_s + jitter) / cfg.step_s)))
            rngs.append(rng)
        # one write per array (the draws above keep each generator's order)
        self.cam_phase[indices] = phase
        self.cam_key[indices] = np.asarray(key, dtype=np.int64).astype(np.uint64)
        if self.goal_conditioned:
            self.goal[indices] = np.asarray(goal, dtype=np.float64).reshape(-1, 2)
        sent_home = np.zeros(indices.shape, dtype=bool)
        if cfg.keep_robot_pose and keep.any():
            # a pose that would end the new episode at once (a joint at its limit, the paddle outside its box: how
            # a limit violation leaves it) starts at home, as a robot is recovered after such a stop
            q = self.q[indices[keep]]
            pos, _ = self.paddle_pose(q)
            inside = np.all((q > self.q_min) & (q < self.q_max), axis=1) & np.all(
                (pos >= self.robot.workspace_min_m) & (pos <= self.robot.workspace_max_m), axis=1
            )
            sent_home[keep] = ~inside
        self.robot_sent_home[indices] = sent_home
        home = indices[~keep | sent_home] if cfg.keep_robot_pose else indices
        self.q[home] = self.robot.home
        self.qd[home] = 0.0
        self.t[indices] = 0.0
        self.hits[indices] = 0
        self.outcome[indices] = OUTCOME_NONE
        self.landing[indices] = np.nan
        self.answer_probability[indices] = np.nan  # last step's answer belonged to the old episode
        self.arrival_ball[indices] = np.nan
        self.cam_t[indices] = -np.inf
        self.cam_arrival[indices] = np.inf
        self.cam_head[indices] = 0
        self.cam_count[indices] = 0
        self.cam_counter[indices] = 0
        launches = sample_launches(self.human, rngs, self._is_valid, first_valid=self._first_valid)
        delay = np.asarray(delay, dtype=np.int64)
        now = delay == 0
        self._new_balls(indices[now], launches[now])
        self.serve_in[indices] = delay
        later = indices[~now]
        if later.size:  # frozen and hidden where it will be launched (the physics moves only balls in play)
            self._serve_ball[later] = self.ball[later] = launches[~now]
            self.phase[later] = PHASE_SERVING
            self.touched[later] = False
            self.landed[later] = False

    def _new_balls(self, idx, states: np.ndarray) -> None:
        self.ball[idx] = states
        self.phase[idx] = PHASE_INCOMING
        self.touched[idx] = False
        self.landed[idx] = False

    # ------------------------------------------------------------------------------------------ step
    def paddle_pose(self, q=None):
        pose = forward_kinematics(self.robot, self.q if q is None else q)
        return pose[..., :3, 3], pose[..., :3, 2]

    def step(self, qd_cmd: np.ndarray):
        """Advances every world by one policy period. Returns (reward [N], terminated [N], events dict)."""
        cmd = np.asarray(qd_cmd, dtype=np.float64)
        if cmd.shape != (self.n, self.dof):
            raise ValueError(f"qd_cmd: expected shape ({self.n}, {self.dof}), got {cmd.shape}")
        # np.clip's values into a per-world buffer (the steps only read it)
        np.maximum(cmd, self._neg_v_max, out=self._cmd)
        cmd = np.minimum(self._cmd, self.v_max, out=self._cmd)
        if self.backend == "numpy":
            self._physics_numpy(cmd)
        else:
            args = [
                cmd,
                self.q,
                self.qd,
                self.ball,
                self.phase,
                self.touched,
                self.landed,
                self.hits,
                self.outcome,
                self.landing,
                self.reward,
                self.terminated,
                self.ev_hit,
                self.ev_landed,
                self.ev_limit,
                self.rec_pos,
                self.rec_active,
                self.num_threads or 0,
            ]
            if self._native_camera:
                args.append(self._camera_arrays())
            self._stepper.step(*args)
        reward, terminated = self.reward.copy(), self.terminated.copy()
        ev = {
            "hit": self.ev_hit.copy(),
            "landed": self.ev_landed.copy(),
            "limit": self.ev_limit.copy(),
            "new_ball": np.zeros(self.n, dtype=bool),
        }
        if not self._native_camera:  # else done by the native step (camera_world), t included
            self._camera()
            self.t += self.config.step_s
        self._human_answers(terminated, ev)
        self._serve()
        return reward, terminated, ev

    def _serve(self) -> None:
        """Counts down the serves still to come; launches those due (their first step in play is the next)."""
        serving = (self.phase == PHASE_SERVING).nonzero()[0]
        if serving.size == 0:
            return
        self.serve_in[serving] -= 1
        due = serving[self.serve_in[serving] <= 0]
        if due.size:  # no `new_ball` event: that one says the human answered (rollouts count balls by it)
            self._new_balls(due, self._serve_ball[due])

    def _human_answers(self, terminated, ev) -> None:
        self.answer_probability.fill(np.nan)
        waiting = (self.phase == PHASE_WAITING).nonzero()[0]  # the method: np.nonzero's dispatch is ~1 us a step
        if waiting.size == 0:
            if self._arrivals_recorded:
                self.arrival_ball.fill(np.nan)
                self._arrivals_recorded = False
            return
        self.arrival_ball.fill(np.nan)
        self.arrival_ball[waiting] = self.ball[waiting]
        self._arrivals_recorded = True
        self.answer_probability[waiting] = self.human.returns.return_probability(self.ball[waiting])
        self.landed[waiting] = False
        answers = sample_returns(
            self.human, self.ball[waiting], [self.rngs[w] for w in waiting], self._is_valid, self._first_valid
        )
        new = [w for w, a in zip(waiting, answers) if a is not None]
        done = [w for w, a in zip(waiting, answers) if a is None]
        if new:
            self._new_balls(new, np.stack([a for a in answers if a is not None]))
            ev["new_ball"][new] = True
        if done:
            self.outcome[done] = OUTCOME_RETURNED
            self.phase[done] = PHASE_DONE
            terminated[done] = True

    # ------------------------------------------------------------------------------- NumPy physics reference
    def _physics_numpy(self, cmd: np.ndarray) -> None:
        """Reference of the C++ step (world_step.hpp): updates the state arrays and the per-step outputs in place."""
        cfg = self.config
        dt = cfg.substep_s
        n = self.n
        reward, terminated = self.reward, self.terminated
        reward[:] = 0.0
        terminated[:] = False
        self.ev_hit[:] = False
        self.ev_landed[:] = False
        self.ev_limit[:] = False
        pad_p, pad_n = self.paddle_pose()
        r_ball = self.params.radius_m
        r_pad = self.robot.paddle_radius_m
        for s in range(cfg.substeps):
            active = self.phase != PHASE_DONE
            # robot
            dv = np.clip(cmd - self.qd, -self.a_max * dt, self.a_max * dt)
            self.qd += dv
            q_new = self.q + self.qd * dt
            over = (q_new < self.q_min) | (q_new > self.q_max)
            self.q[:] = np.clip(q_new, self.q_min, self.q_max)
            self.qd[over] = 0.0
            new_p, new_n = self.paddle_pose()
            outside = np.any(new_p < self.robot.workspace_min_m, axis=1) | np.any(
                new_p > self.robot.workspace_max_m, axis=1
            )
            violation = active & (over.any(axis=1) | outside)
            pad_v = (new_p - pad_p) / dt
            # ball
            old_ball = self.ball.copy()
            lanes = np.nonzero((self.phase == PHASE_INCOMING) | (self.phase == PHASE_RETURNING))[0]
            if lanes.size:
                y_new, _, _, _, events = reference.advance_step(self.ball[lanes], dt, self.pk)
                self.ball[lanes] = y_new
                for lane_idx, _t, kind, before, _after in events:
                    for w, k, b in zip(lanes[lane_idx], kind, before):
                        self._surface_contact(int(w), int(k), b)
            # paddle contact
            d0 = np.sum((old_ball[:, :3] - pad_p) * pad_n, axis=1)
            d1 = np.sum((self.ball[:, :3] - new_p) * new_n, axis=1)
            side = np.where(d0 >= 0, 1.0, -1.0)
            crossing = (side * d0 > r_ball * 0.5) & (side * d1 < r_ball)
            rel = self.ball[:, :3] - new_p
            in_plane = np.linalg.norm(rel - d1[:, None] * new_n, axis=1) < r_pad
            contact = crossing & in_plane & (self.phase == PHASE_INCOMING) & ~self.touched
            if contact.any():
                ci = np.nonzero(contact)[0]
                frac = np.clip((side[ci] * d0[ci] - r_ball) / np.maximum(side[ci] * (d0[ci] - d1[ci]), 1e-12), 0, 1)
                at = old_ball[ci] + frac[:, None] * (self.ball[ci] - old_ball[ci])
                surf_p = pad_p[ci] + frac[:, None] * (new_p[ci] - pad_p[ci])
                surf_n = pad_n[ci] + frac[:, None] * (new_n[ci] - pad_n[ci])
                surf_n /= np.linalg.norm(surf_n, axis=1, keepdims=True)
                dist = np.sum((at[:, :3] - surf_p) * surf_n, axis=1)
                at[:, :3] += ((side[ci] * r_ball) - dist)[:, None] * surf_n
                after = paddle_contact(
                    at, surf_p, surf_n, pad_v[ci], side[ci], r_ball, cfg.paddle_restitution, cfg.paddle_friction
                )
                self.ball[ci] = reference.rk4_step(after, (1.0 - frac) * dt, self.pk)
                self.touched[ci] = True
                self.phase[ci] = PHASE_RETURNING
                reward[ci] += cfg.reward_hit
                self.ev_hit[ci] = True
            pad_p, pad_n = new_p, new_n
            self._planes()
            vi = np.nonzero(violation & (self.phase != PHASE_DONE))[0]
            if vi.size:
                reward[vi] -= cfg.penalty_limit
                self._end(vi, OUTCOME_LIMIT)
                self.ev_limit[vi] = True
            self.rec_pos[:, s] = self.ball[:, :3]
            self.rec_active[:, s] = (self.phase != PHASE_DONE) & (self.phase != PHASE_SERVING)
        # shaping: paddle close to the incoming ball on the robot's side
        incoming = (self.phase == PHASE_INCOMING) & (self.ball[:, 0] > 0)
        dist = np.linalg.norm(self.ball[:, :3] - pad_p, axis=1)
        reward += np.where(incoming, cfg.reward_shaping * np.exp(-0.5 * (dist / cfg.shaping_length_m) ** 2), 0.0)
        reward -= cfg.action_cost * np.sum((cmd / self.v_max) ** 2, axis=1)
        terminated |= self.phase == PHASE_DONE
        del n

    def _end(self, idx, outcome):
        self.outcome[idx] = outcome
        self.phase[idx] = PHASE_DONE
        self.terminated[idx] = True

    def _surface_contact(self, w: int, k: int, b: np.ndarray) -> None:
        phase = self.phase[w]
        if phase == PHASE_INCOMING:
            if not (k == reference.KIND_TABLE and b[0] > 0):
                # the incoming ball hit the net, the floor or the human's own half
                self._end(w, OUTCOME_MISSED if b[0] > 0 else OUTCOME_HUMAN_FAULT)
        elif phase == PHASE_RETURNING and k != reference.KIND_NET and not self.landed[w]:
            self.landing[w] = b[:2]
            if k == reference.KIND_TABLE and b[0] < 0:
                self.hits[w] += 1
                self.reward[w] += self.config.reward_land
                self.ev_landed[w] = True
                if self.goal_conditioned:
                    self._end(w, OUTCOME_RETURNED)
                else:
                    self.landed[w] = True  # the human plays it when it reaches the human's plane
            else:
                self._end(w, OUTCOME_OUT)

    def _planes(self) -> None:
        cfg = self.config
        missed = np.nonzero((self.phase == PHASE_INCOMING) & (self.ball[:, 0] > cfg.miss_plane_x_m))[0]
        self._end(missed, OUTCOME_MISSED)
        behind = (self.phase == PHASE_RETURNING) & (self.ball[:, 0] < cfg.human_plane_x_m)
        self._end(np.nonzero(behind & ~self.landed)[0], OUTCOME_OUT)
        self.phase[behind & self.landed] = PHASE_WAITING  # frozen until the human answers
        # a ball rolling or resting anywhere long after play: stop the rally
        flying = (self.phase == PHASE_INCOMING) | (self.phase == PHASE_RETURNING)
        slow = flying & (np.linalg.norm(self.ball[:, 3:6], axis=1) < SLOW_BALL_MPS)
        self._end(np.nonzero(slow & self.touched)[0], OUTCOME_OUT)
        self._end(np.nonzero(slow & ~self.touched)[0], OUTCOME_MISSED)

    # ------------------------------------------------------------------------------------------ camera
    def _camera(self) -> None:
        """Frames due in this policy step, from the positions recorded at the substeps (see the docstring)."""
        cfg = self.config
        n, s, f = self.n, cfg.substeps, self.frames_per_step
        dt = cfg.substep_s
        due_t = self.cam_phase[:, None] + (self.cam_count[:, None] + np.arange(f)) / cfg.camera_hz  # [N, F]
        # first substep s whose end t + (s + 1) dt is at or after the frame time; due when s < S
        sub = np.maximum(np.ceil((due_t - 1e-12 - self.t[:, None]) / dt - 1.0), 0.0).astype(np.int64)
        due = sub < s
        self.cam_count += due.sum(axis=1)
        w, j = np.nonzero(due)  # due frames, sorted by world then frame
        # frame j of a step uses values 6j+1 .. 6j+6 of the world's stream at this step's counter
        u = counter_uniform(self.cam_key[w], self.cam_counter[w] + np.uint64(6) * j.astype(np.uint64), 6)
        self.cam_counter += np.uint64(6 * f)
        sj = np.minimum(sub[w, j], s - 1)
        take = self.rec_active[w, sj] & (u[:, 0] >= cfg.camera_drop_prob)
        w, sj, u = w[take], sj[take], u[take]
        if w.size == 0:
            return
        radius = np.sqrt(-2.0 * np.log1p(-u[:, 2:4]))  # Box-Muller: two pairs -> 4 normals, 3 used
        angle = 2.0 * np.pi * u[:, 4:6]
        normal = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)[:, :3]
        rank = np.arange(w.size) - np.searchsorted(w, w)  # k-th frame taken by its world in this step
        slot = (self.cam_head[w] + rank) % self.ring
        t_cap = self.t[w] + dt * (sj + 1)
        self.cam_t[w, slot] = t_cap
        jitter = -cfg.camera_latency_jitter_s * np.log1p(-u[:, 1])
        self.cam_arrival[w, slot] = t_cap + cfg.camera_latency_s + jitter
        self.cam_pos[w, slot] = self.rec_pos[w, sj] + cfg.camera_noise_m * normal
        self.cam_head += np.bincount(w, minlength=n)

    def observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) float32 [2 dof + 5 history]: `robot_rt.envs.observation.observation_bounds`."""
        if self._obs_bounds is None:
            low, high = observation_bounds(self.robot, self.history)
            self._obs_bounds = (np.ascontiguousarray(low, np.float32), np.ascontiguousarray(high, np.float32))
        return self._obs_bounds

    def observations(self, native: bool | None = None) -> np.ndarray:
        """Flat observations [N, 2 dof + 5 history] float32 of the current state: build_observation(q, qd,
        detections()) clipped to `observation_bounds()` (what the environments return). `native` (default: a
        native backend with robot_rt._envs built) assembles them in one C++ pass (world_step.hpp observe_world,
        same values); False is the NumPy reference."""
        low, high = self.observation_bounds()
        mod = self._cpu_mod
        if native is None:
            native = self.backend != "numpy" and hasattr(mod, "observe")
        if not native:
            return np.clip(build_observation(self.q, self.qd, self.detections()), low, high)
        if not hasattr(mod, "observe"):
            raise ValueError("native=True: robot_rt._envs.observe is not built (run tools/setup.sh)")
        out = np.empty((self.n, low.shape[0]), dtype=np.float32)
        mod.observe(
            self.q,
            self.qd,
            self.t,
            self.cam_t,
            self.cam_arrival,
            self.cam_pos,
            self.cam_head,
            low,
            high,
            out,
            self.num_threads or 0,
        )
        return out

    def detections(self) -> np.ndarray:
        """[N, history, 5]: the most recent visible detections (x, y, z, age_s, valid), newest first.

        Frames sit in the ring in capture order, so the newest visible ones are found in a window of the last
        16 frames (a table maps the window's visibility bits to the first `history` visible slots); the rare
        world whose window holds too few while older frames are visible takes the full sort (same result)."""
        k, ring, n = self.history, self.ring, self.n
        width = 16
        if k > 12 or ring < width:
            return self._detections_sorted(np.arange(n))
        rows = np.arange(n)[:, None]
        back = np.arange(width)
        idx = (self.cam_head[:, None] - 1 - back) % ring  # newest first
        vis = self.cam_arrival[rows, idx] <= self.t[:, None] + 1e-12
        bits = np.packbits(vis, axis=1, bitorder="little").view(np.uint16)[:, 0]
        order_table, valid_table = _first_set_bits(k)
        order = order_table[bits]
        valid = valid_table[bits]
        sel = (self.cam_head[:, None] - 1 - order) % ring
        out = np.empty((n, k, 5))
        out[..., :3] = np.where(valid[..., None], self.cam_pos[rows, sel], 0.0)  # +0 as _detections_sorted
        out[..., 3] = np.where(valid, self.t[:, None] - self.cam_t[rows, sel], 0.0)
        out[..., 4] = valid
        short = np.nonzero((valid_table[bits, k - 1] == 0) & (self.cam_head > width))[0]
        if short.size:
            visible_all = self.cam_arrival[short] <= self.t[short, None] + 1e-12
            redo = short[visible_all.sum(axis=1) > vis[short].sum(axis=1)]
            if redo.size:
                out[redo] = self._detections_sorted(redo)
        return out

    def _detections_sorted(self, worlds: np.ndarray) -> np.ndarray:
        """detections() of `worlds` by sorting the whole ring by capture time (the definition); frames captured at
        the same time (camera faster than the physics) newest taken first, as in the ring."""
        k = self.history
        visible = self.cam_arrival[worlds] <= self.t[worlds, None] + 1e-12
        cap = np.where(visible, self.cam_t[worlds], -np.inf)
        taken_ago = (self.cam_head[worlds, None] - 1 - np.arange(self.ring)) % self.ring
        order = np.lexsort((taken_ago, -cap), axis=1)[:, :k]
        rows = np.arange(len(worlds))[:, None]
        sel_t = cap[rows, order]
        valid = np.isfinite(sel_t)
        out = np.zeros((len(worlds), k, 5))
        out[..., :3] = np.where(valid[..., None], self.cam_pos[worlds][rows, order], 0.0)
        out[..., 3] = np.where(valid, self.t[worlds, None] - np.where(valid, sel_t, 0.0), 0.0)
        out[..., 4] = valid
        return out
