"""`robot-rt sim-server --physics mujoco`: the robot (and, in rally mode, the paddle-ball contact) in MuJoCo.

The protocol side is unchanged: the C++ `SimRobotServer` (the same sockets, session handling, command delay
line and hold-on-timeout logic as the kinematic server) runs with `external_dynamics=True`, so it does not
integrate the joints itself. `MujocoDynamicsThread` closes the loop in real time at 1 kHz: each tick it reads
the servo target the server holds (`servo_targets()`), advances `robot_rt.sim.mujoco_physics.MujocoPhysics` by
one tick and reports the simulated joints (`set_measured_state`), which the server sends to the controller.
Why this split (docs/mujoco.md, "Design"): one implementation of the protocol and the session (every check and
counter the kinematic server has, and whatever issue 12 adds to it, applies to both), and the physics where
MuJoCo's Python bindings are.

Rally mode: `MujocoRallySource` is the rally mode's RallySource with a 1 ms world step driven by the dynamics
thread: per tick, MuJoCo moves the robot (and the ball, if one is in play, for the paddle contact), the world
(the envs' TableTennisWorld: the project's flight, table/net/floor contacts, rally rules, human answers and
camera model) moves the ball with its own physics and the robot's simulated motion, and when MuJoCo reports a
ball-paddle contact in the tick its ball state replaces the world's (the world's own paddle never touches the
ball here). Camera frames go to the CameraServer through `FrameQueue`.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

from .rally import RallySource


class FrameQueue:
    """Camera frames produced by the dynamics thread, handed to the CameraServer's thread (its ball_source)."""

    def __init__(self, dt: float = 0.002):
        self.dt = float(dt)  # how often the camera thread looks for frames
        self._frames: collections.deque = collections.deque()

    def put(self, frames) -> None:
        self._frames.extend(frames)

    def advance(self, now: float) -> list:
        out = []
        while self._frames:
            out.append(self._frames.popleft())
        return out


class MujocoRallySource(RallySource):
    """RallySource whose robot and paddle contact are MuJoCo's (see the module docstring).

    Args:
        physics: the MujocoPhysics the dynamics thread steps (its tick is the world step).
        targets: callable -> (target position [dof], target velocity [dof]) of the servo for this tick.
        other arguments: RallySource's (config: a WorldConfig whose step is the physics tick; default: the envs'
            camera model, policy_hz = physics_hz = 1 / tick).
    """

    def __init__(self, physics, targets, human="default", robot=None, *, config=None, **kwargs):
        from robot_rt.envs.core import PHASE_DONE, PHASE_INCOMING, PHASE_RETURNING, WorldConfig

        if not callable(targets):
            raise TypeError(f"targets: expected a callable -> (position, velocity), got {type(targets)}")
        rate = 1.0 / physics.tick_s
        config = config or WorldConfig(policy_hz=rate, physics_hz=rate)
        if abs(config.step_s - physics.tick_s) > 1e-12:
            raise ValueError(
                f"config: the world step ({config.step_s} s) must be the physics tick ({physics.tick_s} s)"
            )
        super().__init__(
            physics.joint_state,
            human,
            robot if robot is not None else physics.robot,
            config=config,
            paddle_contact=False,
            **kwargs,
        )
        self.physics = physics
        self.targets = targets
        self._contact_ball = False  # the ball was in contact with the paddle at the end of the last tick
        # looked up once: an import statement in the per-tick hooks costs ~1 us each
        self._phase_incoming, self._phase_returning, self._phase_done = PHASE_INCOMING, PHASE_RETURNING, PHASE_DONE
        self._flying_phases = (PHASE_INCOMING, PHASE_RETURNING)

    def _before_world_step(self, reference: bool = False) -> None:
        w, ph = self.world, self.physics
        flying = int(w.phase[0]) in self._flying_phases
        if reference:  # the plain versions (_step_reference)
            q0, _ = ph.joint_state()
            self._paddle = [ph.paddle_pose()[0][None]]
            tq, tv = self.targets()
            ph.step_reference(tq, tv, w.ball[0].copy() if flying else None)
            q1, _ = ph.joint_state()
            self._paddle.append(ph.paddle_pose()[0][None])
            self._put_robot_reference(q0, (q1 - q0) / self.dt)
            return
        q0 = ph.joint_position()
        paddle0 = ph.paddle_position()
        tq, tv = self.targets()
        ph.step(tq, tv, w.ball[0] if flying else None)  # step only reads the ball (into MuJoCo)
        q1 = ph.joint_position()
        self._paddle = (paddle0, ph.paddle_position())
        # the world's kinematic robot replays MuJoCo's motion over the tick (q0 -> q1), for its workspace box
        # and the paddle-ball distance records
        self._put_robot(q0, np.divide(np.subtract(q1, q0, out=q1), self.dt, out=q1))

    def _paddle_position(self, after: bool) -> np.ndarray:
        # MuJoCo's paddle body, the same pose as the project's FK to 1e-9 (tests/test_mujoco_server.py)
        return self._paddle[1 if after else 0]

    def _after_world_step(self, ev: dict) -> None:
        w, ph = self.world, self.physics
        if not ph.ball_contact or int(w.phase[0]) == self._phase_done:
            return
        w.ball[0] = ph.ball_state()  # MuJoCo's paddle contact replaces the world's flight for this tick
        if int(w.phase[0]) == self._phase_incoming and not w.touched[0]:
            w.touched[0] = True
            w.phase[0] = self._phase_returning
            ev["hit"][0] = True
        self.stats["contact_ticks"] += 1

    def tick(self, now: float) -> list:
        """One physics tick (called by the dynamics thread every tick_s): a world step while a rally is on,
        else MuJoCo alone; returns the camera frames of the tick (arrival_s, capture_s, position)."""
        with self._lock:
            if not self.in_rally:
                ready = self.ready is None or self.ready()
                may_serve = self.max_serves is None or self.stats["serves"] < self.max_serves
                if not ready:
                    self._next_serve_t = None
                elif may_serve and self._next_serve_t is None:
                    self._next_serve_t = now + 0.2  # let the controller settle before the first ball
                if ready and may_serve and now >= self._next_serve_t:
                    self._serve(now)
            if not self.in_rally:
                self.physics.step(*self.targets())
                return []
            # world time follows the ticks (the dynamics thread keeps real time); rally time 0 = now
            frames = self._step()
            if not self.in_rally:
                self._next_serve_t = now + self.serve_interval_s
            return frames


class MujocoDynamicsThread:
    """The 1 kHz loop between the SimRobotServer (external dynamics) and MuJoCo (see the module docstring)."""

    def __init__(self, server, physics, rally: MujocoRallySource | None = None, frames: FrameQueue | None = None):
        self.server = server
        self.physics = physics
        self.rally = rally
        self.frames = frames
        self.period_s = physics.tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._targets = (physics.joint_state()[0], np.zeros(physics.dof))
        self.stats = collections.Counter()
        self.busy_s = 0.0  # time spent in the ticks (the loop's real-time factor = ticks * period / busy)
        self._limit_ticks = 0

    def _read_targets(self):
        q, v, holding = self.server.servo_targets()
        self._targets = (q, v)
        return q, v

    def _tick(self, now: float) -> None:
        ph = self.physics
        if self.rally is not None:
            frames = self.rally.tick(now)
            if frames and self.frames is not None:
                self.frames.put(frames)
        else:
            ph.step(*self._read_targets())
        q, v = ph.joint_state()
        new_limit = ph.limit_ticks - self._limit_ticks
        self._limit_ticks = ph.limit_ticks
        self.server.set_measured_state(q, v, new_limit)

    def run(self) -> None:
        period = self.period_s
        next_t = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_t:
                wait = next_t - now
                if wait > 0.0003:
                    time.sleep(wait - 0.0002)
                continue
            t0 = time.perf_counter()
            self._tick(now)
            self.busy_s += time.perf_counter() - t0
            self.stats["ticks"] += 1
            next_t += period
            if now - next_t > 10 * period:  # far behind (a stalled machine): resynchronise, counted
                self.stats["overruns"] += 1
                next_t = now + period

    def start(self) -> MujocoDynamicsThread:
        if self.rally is not None:
            self.rally.targets = self._read_targets
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="mujoco-dynamics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def summary(self) -> dict:
        ticks = int(self.stats["ticks"])
        ph = self.physics
        return {
            "ticks": ticks,
            "overruns": int(self.stats["overruns"]),
            "real_time_factor": (ticks * self.period_s / self.busy_s) if self.busy_s > 0 else None,
            "limit_ticks": int(ph.limit_ticks),
            "max_limit_excess": float(ph.max_limit_excess),
            "max_effort_ratio": float(ph.max_effort_ratio),
        }
