"""Rally mode of `robot-rt sim-server`: the simulated camera's ball plays against the simulated robot.

Design notes: docs/sim.md, section `robot_rt.sim.rally`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from robot_rt.robot import RobotDescription, load_robot

try:  # np.clip's ufunc (the same values) without np.clip's Python dispatch, ~2 us a call on 8 elements
    from numpy._core.umath import clip as clip_ufunc
except ImportError:  # NumPy < 2
    clip_ufunc = np.clip

HUMAN_CHOICES = ("default", "real_player")


def resolve_human(human):
    """A HumanBehaviorModel from 'default', 'real_player', a JSON path (HumanBehaviorModel.save) or a model."""
    from robot_rt.envs.human_model import HumanBehaviorModel

    if isinstance(human, HumanBehaviorModel):
        return human
    if isinstance(human, Path) or (isinstance(human, str) and human.endswith(".json")):
        return HumanBehaviorModel.load(human)
    if isinstance(human, str) and human in HUMAN_CHOICES:
        return getattr(HumanBehaviorModel, human)()
    raise ValueError(
        f"human: expected one of {HUMAN_CHOICES}, a path to a HumanBehaviorModel .json file or a "
        f"HumanBehaviorModel, got {human!r}"
    )


class RallySource:
    """The rally's ball: world stepping against a joint-state source (see docs/sim.md, `robot_rt.sim.rally`).

    Args:
        joint_state: callable returning (position [dof], velocity [dof]) of the robot now (the robot server's
            snapshot in the sim-server; any source in tests).
        human: HumanBehaviorModel or 'default' | 'real_player' | PATH.json.
        robot: robot description (must be the robot server's).
        seed: seeds the serves and the human's answers (one generator; rally k gets its k-th draw).
        serve_interval_s: pause between the end of a rally and the next serve.
        max_serves: no serve after this many (None: unlimited).
        ready: callable -> bool; no serve until it returns True (e.g. a controller is registered).
        config: WorldConfig of the world (camera model, policy_hz = world step rate, ...).
        workspace_ends_rally: False (default): the measured paddle leaving the robot's workspace box does not end
            the rally (it is the controller's safety box; counted as `workspace_exits`); True: it does, with
            outcome 'limit', exactly as in the env.
        paddle_contact: True (default): the world's paddle contact model; False: the world's paddle never
            touches the ball (a subclass resolves the contact, e.g. MujocoRallySource with MuJoCo).
    """

    def __init__(
        self,
        joint_state,
        human="default",
        robot: RobotDescription | None = None,
        *,
        seed: int = 0,
        serve_interval_s: float = 1.0,
        max_serves: int | None = None,
        ready=None,
        config=None,
        backend: str = "auto",
        max_lag_steps: int = 5,
        record_true_tracks: bool = True,
        workspace_ends_rally: bool = False,
        paddle_contact: bool = True,
    ):
        from robot_rt.envs.core import TableTennisWorld

        if not callable(joint_state):
            raise TypeError(f"joint_state: expected a callable -> (position, velocity), got {type(joint_state)}")
        if not serve_interval_s > 0:
            raise ValueError(f"serve_interval_s: expected a positive interval, got {serve_interval_s}")
        if max_serves is not None and (isinstance(max_serves, bool) or int(max_serves) < 1):
            raise ValueError(f"max_serves: expected a positive int or None, got {max_serves!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        self.human = resolve_human(human)
        self.robot = robot if robot is not None else load_robot()
        self.workspace_ends_rally = bool(workspace_ends_rally)
        world_robot = self.robot
        if not self.workspace_ends_rally:
            # the paddle's workspace box is the controller's business (the loop stops a commanded paddle leaving
            # it); a physical rally does not end there, so the world gets an unbounded box
            far = np.full(3, 1e6)
            world_robot = dataclasses.replace(self.robot, workspace_min_m=-far, workspace_max_m=far)
        if not paddle_contact:
            # the paddle contact is someone else's (MujocoRallySource: MuJoCo's): the world's paddle never touches
            world_robot = dataclasses.replace(world_robot, paddle_radius_m=1e-12)
        # one thread: the native step of one world is serial anyway, and num_threads=None would have it ask the OS
        # for the CPU count on every step (~8 us of a 1 ms tick)
        self.world = TableTennisWorld(
            1, human=self.human, robot=world_robot, config=config, backend=backend, num_threads=1
        )
        self._was_outside = False
        self.joint_state = joint_state
        self.ready = ready
        self.serve_interval_s = float(serve_interval_s)
        self.max_serves = None if max_serves is None else int(max_serves)
        self.max_lag_steps = int(max_lag_steps)
        self.record_true_tracks = bool(record_true_tracks)
        self.dt = self.world.config.step_s
        self._make_step_constants()
        self._seeds = np.random.default_rng(int(seed))
        self._lock = threading.Lock()  # summary() may be called from another thread
        self.stats: Counter = Counter()
        self.rallies: list[dict] = []
        self.balls: list[dict] = []
        self._true: list[list] = []
        self._detected: list[list] = []
        self._rally_t0 = None  # real time (monotonic s) of world time 0 of the current rally
        self._next_serve_t = None
        self._ball = -1  # index into self.balls of the ball coming in, -1: none

    def _make_step_constants(self) -> None:
        """What `_step` and `_put_robot` would otherwise recompute every step (the same values)."""
        w = self.world
        substeps = w.config.substeps
        self._substep_fractions = ((np.arange(substeps) + 1.0) / substeps).tolist()
        self._workspace_min = np.asarray(self.robot.workspace_min_m, dtype=np.float64).tolist()
        self._workspace_max = np.asarray(self.robot.workspace_max_m, dtype=np.float64).tolist()
        self._put_step_s = self.dt * (1.0 + 1e-6)
        self._neg_v_max = -w.v_max
        # both position limits in one array: _put_robot's velocity bounds in two ufunc calls instead of four
        self._q_limits = np.stack([w.q_min, w.q_max]).astype(np.float64)
        self._qd_bounds = np.empty((2, w.dof))
        self._qd_min, self._qd_max = self._qd_bounds

    # ------------------------------------------------------------------ state
    @property
    def in_rally(self) -> bool:
        return self._rally_t0 is not None

    @property
    def done(self) -> bool:
        """All `max_serves` rallies were played to their end."""
        return self.max_serves is not None and self.stats["serves"] >= self.max_serves and not self.in_rally

    def _new_ball(self) -> None:
        self._ball = len(self.balls)
        w = self.world
        self.balls.append(
            {
                "rally": len(self.rallies) - 1,
                "launch_state": w.ball[0].tolist(),
                "t_launch_s": float(w.t[0]),
                "hit": False,
                "min_paddle_distance_m": float("inf"),
            }
        )
        self._true.append([])
        self._detected.append([])
        self.stats["balls"] += 1

    def _serve(self, now: float) -> None:
        self.world.reset([0], [int(self._seeds.integers(0, 2**63 - 1))])
        self.rallies.append({"index": len(self.rallies), "length": 0, "outcome": "none", "balls": 0})
        self.stats["serves"] += 1
        self._rally_t0 = now
        self._new_ball()

    # ------------------------------------------------------------------ stepping
    def advance(self, now: float) -> list[tuple[float, float, np.ndarray]]:
        """Steps the world up to real time `now` (monotonic s); returns the new camera frames
        (arrival_s, capture_s, position [3]) on the same clock."""
        frames: list = []
        with self._lock:
            if not self.in_rally:
                if self.max_serves is not None and self.stats["serves"] >= self.max_serves:
                    return frames
                if self.ready is not None and not self.ready():
                    self._next_serve_t = None
                    return frames
                if self._next_serve_t is None:
                    self._next_serve_t = now + 0.2  # let the controller settle before the first ball
                if now < self._next_serve_t:
                    return frames
                self._serve(now)
            lag = int((now - self._rally_t0 - float(self.world.t[0])) / self.dt)
            if lag > self.max_lag_steps:
                self._rally_t0 += (lag - 1) * self.dt
                self.stats["clock_shifts"] += 1
            while self.in_rally and now >= self._rally_t0 + float(self.world.t[0]) + self.dt:
                frames.extend(self._step())
                if not self.in_rally:
                    self._next_serve_t = now + self.serve_interval_s
        return frames

    def _put_robot(self, q, qd) -> None:
        """The measured joint state into the world; the velocity of the extrapolation is capped so that no joint
        crosses its position limit within the step: the robot server itself stops joints at their limits (a
        physical robot's hard stops), so only the paddle's workspace box can end a rally with 'limit' here.
        `_put_robot_reference` written into the world's rows in place (same ufuncs, same values)."""
        w = self.world
        q_row, qd_row = w.q[0], w.qd[0]
        clip_ufunc(q, w.q_min, w.q_max, out=q_row)
        bounds = self._qd_bounds
        np.divide(np.subtract(self._q_limits, q_row, out=bounds), self._put_step_s, out=bounds)
        clip_ufunc(qd, self._neg_v_max, w.v_max, out=qd_row)
        clip_ufunc(qd_row, self._qd_min, self._qd_max, out=qd_row)

    def _put_robot_reference(self, q, qd) -> None:
        """The plain version of `_put_robot` (what it must equal)."""
        w = self.world
        q = np.clip(np.asarray(q, dtype=np.float64), w.q_min, w.q_max)
        step_s = self.dt * (1.0 + 1e-6)
        qd = np.clip(np.asarray(qd, dtype=np.float64), -w.v_max, w.v_max)
        qd = np.clip(qd, (w.q_min - q) / step_s, (w.q_max - q) / step_s)
        w.q[0] = q
        w.qd[0] = qd

    def _before_world_step(self, reference: bool = False) -> None:
        """Puts the robot the controller drives into the world (MujocoRallySource: steps MuJoCo first);
        `reference`: through the plain versions (`_step_reference`)."""
        (self._put_robot_reference if reference else self._put_robot)(*self.joint_state())

    def _after_world_step(self, ev: dict) -> None:
        """Hook after the world's step (MujocoRallySource: MuJoCo's paddle contact)."""

    def _paddle_position(self, after: bool) -> np.ndarray:
        """Paddle centre [1, 3] at the start (after=False) or the end of the world step (MujocoRallySource: MuJoCo's,
        which it has already computed)."""
        return self.world.paddle_pose()[0]

    def _step(self) -> list:
        """One world step and its records; returns the camera frames taken in it. `_step_reference` with Python
        scalars for the per-substep records (one substep per step in the MuJoCo server's 1 kHz world: NumPy's
        per-call cost there is many times the arithmetic) and the constants made once (same values, same
        order of operations; tests/test_mujoco_perf_paths.py)."""
        w = self.world
        self._before_world_step()
        p0 = self._paddle_position(after=False)[0].tolist()
        incoming = w.phase[0] == 0  # PHASE_INCOMING at the start of the step
        t_start = float(w.t[0])
        head0 = int(w.cam_head[0])
        _, terminated, ev = w.step(w.qd)  # the world clips the command into its own buffer before it steps
        self._after_world_step(ev)
        self.stats["steps"] += 1
        p1 = self._paddle_position(after=True)[0].tolist()
        lo, hi = self._workspace_min, self._workspace_max
        outside = p1[0] < lo[0] or p1[1] < lo[1] or p1[2] < lo[2] or p1[0] > hi[0] or p1[1] > hi[1] or p1[2] > hi[2]
        if outside and not self._was_outside:
            self.stats["workspace_exits"] += 1  # the measured paddle left its box (see workspace_ends_rally)
        self._was_outside = outside
        ball = self.balls[self._ball]
        if incoming:
            rec = w.rec_pos[0].tolist()
            active = w.rec_active[0].tolist()
            fractions = self._substep_fractions
            if not ball["hit"] and any(active):
                nearest = ball["min_paddle_distance_m"]
                for f, r, a in zip(fractions, rec, active):
                    if a:
                        # the paddle interpolated over the step, as _step_reference (left to right, as np.linalg.norm)
                        dx = r[0] - (p0[0] + f * (p1[0] - p0[0]))
                        dy = r[1] - (p0[1] + f * (p1[1] - p0[1]))
                        dz = r[2] - (p0[2] + f * (p1[2] - p0[2]))
                        nearest = min(nearest, math.sqrt(dx * dx + dy * dy + dz * dz))
                ball["min_paddle_distance_m"] = nearest
            if self.record_true_tracks:
                t_launch, dt = ball["t_launch_s"], self.dt
                self._true[self._ball].extend(
                    (t_start + f * dt - t_launch, *r) for f, r, a in zip(fractions, rec, active) if a
                )
        if ev["hit"][0]:
            ball["hit"] = True
            self.stats["hits"] += 1
        if ev["landed"][0]:
            self.stats["returns_landed"] += 1
        # camera frames taken in this step (ring slots head0 .. cam_head - 1)
        frames = []
        head1 = int(w.cam_head[0])
        if head1 > head0:
            ring = w.ring
            for k in range(head0, head1):
                slot = k % ring
                t_cap, t_arr = float(w.cam_t[0, slot]), float(w.cam_arrival[0, slot])
                pos = w.cam_pos[0, slot].copy()
                frames.append((self._rally_t0 + t_arr, self._rally_t0 + t_cap, pos))
                if incoming:
                    self._detected[self._ball].append((t_cap - ball["t_launch_s"], *pos.tolist()))
        self._end_step(ev, terminated)
        return frames

    def _step_reference(self) -> list:
        """The plain version of `_step` (NumPy on the step's substep arrays): what `_step` must equal."""
        w = self.world
        self._before_world_step(reference=True)
        p0 = self._paddle_position(after=False)
        incoming = w.phase[0] == 0  # PHASE_INCOMING at the start of the step
        t_start = float(w.t[0])
        head0 = int(w.cam_head[0])
        _, terminated, ev = w.step(w.qd.copy())
        self._after_world_step(ev)
        self.stats["steps"] += 1
        p1 = self._paddle_position(after=True)
        outside = bool(np.any(p1[0] < self.robot.workspace_min_m) or np.any(p1[0] > self.robot.workspace_max_m))
        if outside and not self._was_outside:
            self.stats["workspace_exits"] += 1  # the measured paddle left its box (see workspace_ends_rally)
        self._was_outside = outside
        ball = self.balls[self._ball]
        substeps = w.config.substeps
        frac = (np.arange(substeps) + 1.0) / substeps
        rec = w.rec_pos[0]
        active = w.rec_active[0]
        if incoming and not ball["hit"]:
            paddle = p0[0] + frac[:, None] * (p1[0] - p0[0])
            dist = np.linalg.norm(rec - paddle, axis=1)
            if active.any():
                ball["min_paddle_distance_m"] = min(ball["min_paddle_distance_m"], float(dist[active].min()))
        if incoming and self.record_true_tracks:
            t_sub = t_start + frac * self.dt - ball["t_launch_s"]
            self._true[self._ball].extend((float(t), *map(float, p)) for t, p, a in zip(t_sub, rec, active) if a)
        if ev["hit"][0]:
            ball["hit"] = True
            self.stats["hits"] += 1
        if ev["landed"][0]:
            self.stats["returns_landed"] += 1
        # camera frames taken in this step (ring slots head0 .. cam_head - 1)
        frames = []
        ring = w.ring
        for k in range(head0, int(w.cam_head[0])):
            slot = k % ring
            t_cap, t_arr = float(w.cam_t[0, slot]), float(w.cam_arrival[0, slot])
            pos = w.cam_pos[0, slot].copy()
            frames.append((self._rally_t0 + t_arr, self._rally_t0 + t_cap, pos))
            if incoming:
                self._detected[self._ball].append((t_cap - ball["t_launch_s"], *map(float, pos)))
        self._end_step(ev, terminated)
        return frames

    def _end_step(self, ev, terminated) -> None:
        """Rally bookkeeping after a world step (shared by `_step` and `_step_reference`): length, next ball, end."""
        w = self.world
        rally = self.rallies[-1]
        rally["length"] = int(w.hits[0])
        if ev["new_ball"][0]:
            self._new_ball()
        if terminated[0]:
            from robot_rt.envs.core import OUTCOME_NAMES

            rally["outcome"] = OUTCOME_NAMES[int(w.outcome[0])]
            rally["balls"] = sum(1 for b in self.balls if b["rally"] == rally["index"])
            self.stats[f"outcome_{rally['outcome']}"] += 1
            self._rally_t0 = None
            self._ball = -1

    # ------------------------------------------------------------------ records
    def detected_tracks(self, min_points: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
        """Detected tracks of the incoming balls as `(t_s [T], positions_m [T, 3])` (HumanBehaviorModel.fit)."""
        with self._lock:
            return [_as_track(d) for d in self._detected if len(d) >= min_points]

    def true_tracks(self, min_points: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            return [_as_track(d) for d in self._true if len(d) >= min_points]

    @property
    def rallies_completed(self) -> int:
        """Rallies that have ended (cheap: what a poll needs, without building the summary)."""
        with self._lock:
            return sum(1 for r in self.rallies if r["outcome"] != "none")

    def summary(self, tracks: bool = True) -> dict:
        """Counts, rallies, balls (and tracks) as a JSON-ready dict (docs/protocol.md, 'Rally mode')."""
        with self._lock:
            finished = [r for r in self.rallies if r["outcome"] != "none"]
            out = {
                "human": self.human.name,
                "serves": int(self.stats["serves"]),
                "balls": int(self.stats["balls"]),
                "hits": int(self.stats["hits"]),
                "returns_landed": int(self.stats["returns_landed"]),
                "rallies_completed": len(finished),
                "rally_lengths": [r["length"] for r in finished],
                "outcomes": dict(Counter(r["outcome"] for r in finished)),
                # returns that landed per ball the human sent (serves and answers)
                "return_rate": (self.stats["returns_landed"] / self.stats["balls"]) if self.stats["balls"] else 0.0,
                "rallies": [dict(r) for r in self.rallies],
                "ball_records": [_jsonable_ball(b) for b in self.balls],
                "steps": int(self.stats["steps"]),
                "clock_shifts": int(self.stats["clock_shifts"]),
                "workspace_exits": int(self.stats["workspace_exits"]),
                "in_rally": self.in_rally,
            }
            if tracks:
                out["tracks_detected"] = [
                    {"ball": i, "samples": [list(s) for s in d]} for i, d in enumerate(self._detected)
                ]
                out["tracks_true"] = [{"ball": i, "samples": [list(s) for s in d]} for i, d in enumerate(self._true)]
        return out


def _as_track(samples) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(samples, dtype=np.float64).reshape(-1, 4)
    return a[:, 0].copy(), a[:, 1:4].copy()


def _jsonable_ball(b: dict) -> dict:
    out = dict(b)
    if not np.isfinite(out["min_paddle_distance_m"]):
        out["min_paddle_distance_m"] = None  # never came in (e.g. a fault of the human)
    return out


def tracks_from_summary(summary: dict, key: str = "tracks_detected", min_points: int = 1) -> list:
    """`(t_s [T], positions_m [T, 3])` tracks from a rally summary (`RallySource.summary()` / the JSON file)."""
    if key not in summary:
        raise ValueError(f"summary: no '{key}' (written without tracks?)")
    return [_as_track(t["samples"]) for t in summary[key] if len(t["samples"]) >= min_points]
