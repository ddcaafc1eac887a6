"""Vectorised simulation core of the table-tennis environments (NumPy reference).

One `TableTennisWorld` advances N independent worlds together: an 8-joint kinematic robot commanded by
joint velocities, a ball under the `robot_rt.ballistics` physics (table, net and floor contacts located inside
the step), paddle-ball contacts, an online camera model, and the rally logic (phases, events, rewards).

Robot (per physics substep dt): the commanded joint velocity is tracked under the joint acceleration limit,
    qd <- qd + clip(qd_cmd - qd, -a_max dt, a_max dt),   q <- q + qd dt,
and a joint that reaches a position limit stops there (its velocity is zeroed) and is reported as a limit
violation, which ends the episode.

Paddle contact: the paddle is a disc (radius from the robot description) with pose from the forward
kinematics. With n the face normal and d = (b - p).n the signed distance of the ball centre b from the
paddle plane, a contact happens in a substep when |d| drops below the ball radius r from the side the ball
was on, while the in-plane distance is under the paddle radius. The contact time is interpolated linearly in
d inside the substep; the ball is placed on the surface there and receives the impulse of a rigid ball on a
moving plane (hollow sphere, I = 2/3 m r^2) with restitution e_p and Coulomb friction mu_p:
    v_rel = v - v_paddle,  v_n = (v_rel.n) n,  c = v_rel - v_n + w x (-r s n)  (contact-point slip, s = side)
    dv_n = -(1 + e_p) v_n
    dv_t = -min(mu_p (1 + e_p) |v_n|, 2/5 |c|) c/|c|       (2/5: slip stops, rolling, for a hollow sphere)
    v' = v + dv_n + dv_t,   w' = w + (3 / (2 r)) (-s n) x dv_t
The same model with table coefficients is the classic rebound model (Nakashima et al. 2010) that the ball
physics uses for the table.

Camera: frames at `camera_hz` with a random phase per episode; each frame is dropped with probability
`camera_drop_prob`, otherwise it carries the true ball position plus Gaussian noise (`camera_noise_m`) and
becomes visible `camera_latency_s` (+ exponential jitter) after capture, as `robot_rt.estimation`'s
SimulatedTracker models real cameras. The policy sees the `history` most recent visible detections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rt.ballistics import BallParams, TableGeometry, pack_params, reference
from robot_rt.robot import RobotDescription, load_robot
from robot_rt.robot.kinematics import forward_kinematics

from .human_model import HumanBehaviorModel

# ball phases
PHASE_INCOMING, PHASE_RETURNING, PHASE_DONE = 0, 1, 2

# outcome codes (why a ball/episode ended)
OUTCOME_NONE = 0
OUTCOME_RETURNED = 1  # robot's ball landed on the human's half
OUTCOME_MISSED = 2  # the robot never touched the incoming ball
OUTCOME_OUT = 3  # robot touched it, but it did not land on the human's half
OUTCOME_LIMIT = 4  # a joint reached its position limit or the paddle left its workspace box
OUTCOME_HUMAN_FAULT = 5  # the incoming ball was not playable (net/floor before reaching the robot)
OUTCOME_NAMES = {0: "none", 1: "returned", 2: "missed", 3: "out", 4: "limit", 5: "human_fault"}


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

    @property
    def substeps(self) -> int:
        return int(round(self.physics_hz / self.policy_hz))


def paddle_contact(ball, paddle_pos, paddle_normal, paddle_vel, side, radius_m, restitution, friction):
    """Rebound of balls [M, 9] on paddles (see the module docstring); `side` = +-1, which face is hit."""
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
    out[:, 6:9] += np.where(approaching[:, None], (1.5 / radius_m) * np.cross(contact_arm, dv_t), 0.0)
    return out


class TableTennisWorld:
    """N worlds stepped together (see the module docstring). All arrays have a leading dimension N."""

    def __init__(
        self,
        num_worlds: int,
        human: HumanBehaviorModel | None = None,
        robot: RobotDescription | None = None,
        config: WorldConfig | None = None,
        params: BallParams | None = None,
        table: TableGeometry | None = None,
        goal_conditioned: bool = False,
    ):
        if isinstance(num_worlds, bool) or not isinstance(num_worlds, (int, np.integer)) or num_worlds < 1:
            raise ValueError(f"num_worlds: expected a positive int, got {num_worlds!r}")
        self.n = int(num_worlds)
        self.human = human or HumanBehaviorModel.default()
        self.robot = robot or load_robot()
        self.config = config or WorldConfig()
        self.params = params or BallParams()
        self.table = table or TableGeometry()
        self.pk = pack_params(self.params, self.table)
        self.goal_conditioned = goal_conditioned
        self.dof = self.robot.dof
        self.q_min, self.q_max = self.robot.position_min, self.robot.position_max
        self.v_max, self.a_max = self.robot.velocity_limit, self.robot.acceleration_limit
        n, k = self.n, self.config.history
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
        # camera ring buffer of frames: capture time, arrival time, position, visible flag
        self.ring = 32
        self.cam_t = np.full((n, self.ring), -np.inf)
        self.cam_arrival = np.full((n, self.ring), np.inf)
        self.cam_pos = np.zeros((n, self.ring, 3))
        self.cam_head = np.zeros(n, dtype=np.int64)
        self.cam_next = np.zeros(n)
        self.rngs = [np.random.default_rng() for _ in range(n)]
        self.history = k

    # ------------------------------------------------------------------------------------------ reset
    def reset(self, indices, seeds=None) -> None:
        """Resets worlds `indices`; `seeds` (same length, ints or None) reseed their generators."""
        indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        for j, i in enumerate(indices):
            if seeds is not None and seeds[j] is not None:
                self.rngs[i] = np.random.default_rng(int(seeds[j]))
            rng = self.rngs[i]
            self.q[i] = self.robot.home
            self.qd[i] = 0.0
            self.t[i] = 0.0
            self.hits[i] = 0
            self.outcome[i] = OUTCOME_NONE
            self.landing[i] = np.nan
            self.cam_t[i] = -np.inf
            self.cam_arrival[i] = np.inf
            self.cam_head[i] = 0
            self.cam_next[i] = rng.uniform(0.0, 1.0 / self.config.camera_hz)
            if self.goal_conditioned:
                self.goal[i] = [rng.uniform(-1.2, -0.3), rng.uniform(-0.6, 0.6)]
            self._new_ball(i, self.human.sample(1, rng)[0])

    def _new_ball(self, i: int, state: np.ndarray) -> None:
        self.ball[i] = state
        self.phase[i] = PHASE_INCOMING
        self.touched[i] = False
        self.landed[i] = False

    # ------------------------------------------------------------------------------------------ step
    def paddle_pose(self, q=None):
        pose = forward_kinematics(self.robot, self.q if q is None else q)
        return pose[..., :3, 3], pose[..., :3, 2]

    def step(self, qd_cmd: np.ndarray):
        """Advances every world by one policy period. Returns (reward [N], terminated [N], events dict)."""
        cfg = self.config
        dt = 1.0 / cfg.physics_hz
        n = self.n
        cmd = np.clip(qd_cmd, -self.v_max, self.v_max)
        reward = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        ev = {
            "hit": np.zeros(n, dtype=bool),
            "landed": np.zeros(n, dtype=bool),
            "limit": np.zeros(n, dtype=bool),
            "new_ball": np.zeros(n, dtype=bool),
        }
        active = self.phase != PHASE_DONE
        pad_p, pad_n = self.paddle_pose()
        r_ball = self.params.radius_m
        r_pad = self.robot.paddle_radius_m
        for _ in range(cfg.substeps):
            # robot
            dv = np.clip(cmd - self.qd, -self.a_max * dt, self.a_max * dt)
            self.qd = self.qd + dv
            q_new = self.q + self.qd * dt
            over = (q_new < self.q_min) | (q_new > self.q_max)
            q_new = np.clip(q_new, self.q_min, self.q_max)
            self.qd[over] = 0.0
            self.q = q_new
            new_p, new_n = self.paddle_pose()
            outside = np.any(new_p < self.robot.workspace_min_m, axis=1) | np.any(
                new_p > self.robot.workspace_max_m, axis=1
            )
            violation = active & (over.any(axis=1) | outside)
            pad_v = (new_p - pad_p) / dt
            # ball
            old_ball = self.ball.copy()
            lanes = np.nonzero(self.phase != PHASE_DONE)[0]
            if lanes.size:
                y_new, _, _, _, events = reference.advance_step(self.ball[lanes], dt, self.pk)
                self.ball[lanes] = y_new
                for lane_idx, _t, kind, before, _after in events:
                    self._surface_contacts(lanes[lane_idx], kind, before, reward, terminated, ev)
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
                remaining = (1.0 - frac) * dt
                self.ball[ci] = reference.rk4_step(after, remaining, self.pk)
                self.touched[ci] = True
                self.phase[ci] = PHASE_RETURNING
                reward[ci] += cfg.reward_hit
                ev["hit"][ci] = True
            pad_p, pad_n = new_p, new_n
            self._planes(reward, terminated, ev)
            if violation.any():
                vi = np.nonzero(violation & ~terminated)[0]
                reward[vi] -= cfg.penalty_limit
                terminated[vi] = True
                self.outcome[vi] = OUTCOME_LIMIT
                self.phase[vi] = PHASE_DONE
                ev["limit"][vi] = True
            self.t += dt
            self._camera()
            active = self.phase != PHASE_DONE
        # shaping: paddle close to the incoming ball on the robot's side
        incoming = (self.phase == PHASE_INCOMING) & (self.ball[:, 0] > 0)
        dist = np.linalg.norm(self.ball[:, :3] - pad_p, axis=1)
        reward += np.where(incoming, cfg.reward_shaping * np.exp(-0.5 * (dist / cfg.shaping_length_m) ** 2), 0.0)
        reward -= cfg.action_cost * np.sum((cmd / self.v_max) ** 2, axis=1)
        terminated |= self.phase == PHASE_DONE
        return reward, terminated, ev

    def _end(self, idx, outcome, terminated):
        self.outcome[idx] = outcome
        self.phase[idx] = PHASE_DONE
        terminated[idx] = True

    def _surface_contacts(self, worlds, kind, before, reward, terminated, ev):
        for w, k, b in zip(worlds, kind, before):
            if self.phase[w] == PHASE_DONE:
                continue
            if self.phase[w] == PHASE_INCOMING:
                on_robot_half = k == reference.KIND_TABLE and b[0] > 0
                if not on_robot_half:
                    # the incoming ball hit the net, the floor or the human's own half
                    self._end(w, OUTCOME_MISSED if b[0] > 0 else OUTCOME_HUMAN_FAULT, terminated)
            elif self.phase[w] == PHASE_RETURNING and k != reference.KIND_NET and not self.landed[w]:
                if k == reference.KIND_TABLE and b[0] < 0:
                    self.landing[w] = b[:2]
                    self.hits[w] += 1
                    reward[w] += self.config.reward_land
                    ev["landed"][w] = True
                    if self.goal_conditioned:
                        self._end(w, OUTCOME_RETURNED, terminated)
                    else:
                        self.landed[w] = True  # the human plays it when it reaches the human's plane
                else:
                    self.landing[w] = b[:2]
                    self._end(w, OUTCOME_OUT, terminated)

    def _planes(self, reward, terminated, ev):
        cfg = self.config
        landed = self.landed
        missed = (self.phase == PHASE_INCOMING) & (self.ball[:, 0] > cfg.miss_plane_x_m)
        for w in np.nonzero(missed)[0]:
            self._end(w, OUTCOME_MISSED, terminated)
        behind = (self.phase == PHASE_RETURNING) & (self.ball[:, 0] < cfg.human_plane_x_m)
        for w in np.nonzero(behind)[0]:
            if not landed[w]:
                self._end(w, OUTCOME_OUT, terminated)
                continue
            landed[w] = False
            answer = self.human.sample_return(self.ball[w], self.rngs[w])
            if answer is None:
                self._end(w, OUTCOME_RETURNED, terminated)
            else:
                self._new_ball(w, answer)
                ev["new_ball"][w] = True
        # a ball rolling or resting anywhere long after play: stop the rally
        slow = (self.phase != PHASE_DONE) & (np.linalg.norm(self.ball[:, 3:6], axis=1) < 0.5)
        for w in np.nonzero(slow)[0]:
            self._end(w, OUTCOME_OUT if self.touched[w] else OUTCOME_MISSED, terminated)

    # ------------------------------------------------------------------------------------------ camera
    def _camera(self):
        cfg = self.config
        due = self.t >= self.cam_next
        for w in np.nonzero(due)[0]:
            rng = self.rngs[w]
            self.cam_next[w] += 1.0 / cfg.camera_hz
            if self.phase[w] == PHASE_DONE or rng.random() < cfg.camera_drop_prob:
                continue
            h = self.cam_head[w] % self.ring
            self.cam_t[w, h] = self.t[w]
            self.cam_arrival[w, h] = self.t[w] + cfg.camera_latency_s + rng.exponential(cfg.camera_latency_jitter_s)
            self.cam_pos[w, h] = self.ball[w, :3] + rng.normal(0.0, cfg.camera_noise_m, 3)
            self.cam_head[w] += 1

    def detections(self) -> np.ndarray:
        """[N, history, 5]: the most recent visible detections (x, y, z, age_s, valid), newest first."""
        k = self.history
        out = np.zeros((self.n, k, 5))
        visible = self.cam_arrival <= self.t[:, None] + 1e-12
        cap = np.where(visible, self.cam_t, -np.inf)
        order = np.argsort(-cap, axis=1, kind="stable")[:, :k]
        rows = np.arange(self.n)[:, None]
        sel_t = cap[rows, order]
        valid = np.isfinite(sel_t)
        out[..., :3] = np.where(valid[..., None], self.cam_pos[rows, order], 0.0)
        out[..., 3] = np.where(valid, self.t[:, None] - np.where(valid, sel_t, 0.0), 0.0)
        out[..., 4] = valid
        return out
