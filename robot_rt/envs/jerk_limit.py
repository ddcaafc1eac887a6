"""Jerk-limited joint-velocity commands: the robot's jerk limits applied on the policy's side, in the env and in the
real-time loop alike.

Why: the env's robot changes its joint velocities within the acceleration limit only, while the real-time loop's
safety filter (otg.hpp) moves the robot along a trajectory that also keeps the URDF's jerk limits (A / J = 50 ms on
every joint of the shipped robot). A swing the env executes is then not the swing the loop executes: with the
scripted policy the loop returned 0.45-0.50 of the balls against 0.94 in the env, and 0.90 with 20x the jerk
limits in the loop's filter (tools/loop_gap_ablation.py, docs/results/2026-12-04/). Filtering the commands through
the same limits before either sees them makes the env's swing the loop's.

The law (per joint, at the policy period dt, explicit: the command v1 holds for the next step). With v the joint
velocity now, a the filter's acceleration, c the requested velocity and w = v - c the velocity still to change:
ramping an acceleration a1 down to zero at the jerk limit J changes the velocity by a1 |a1| / (2 J) more, so the
acceleration that arrives on c with zero acceleration solves w + a1 dt + a1 |a1| / (2 J) = 0:

    a1* = -sign(w) J (sqrt(dt^2 + 2 |w| / J) - dt)        (-> -w / dt for small w: nearly dead-beat near the target)
    a1  = clip(a1*, a - J dt, a + J dt, -A, A)
    v1  = clip(v + a1 dt, -V, V)

so |a1| <= A and |a1 - a| <= J dt: the commanded velocity is a ramp whose slope changes by at most J per second.
`jerk_limited_velocity` is the formula (NumPy, any leading shape); `JerkLimiter` keeps a per environment;
`JerkLimitedPolicy` wraps any env policy (flat observations in, normalised actions out), which is how the same filter
runs in the env (evaluation, tuning, training through `JerkLimitedActionsVector`) and in the loop's
`EnvPolicyAdapter` (docs/envs.md, `robot_rt.envs.jerk_limit`).
"""

from __future__ import annotations

import copy

import numpy as np
from gymnasium.vector import VectorWrapper

from robot_rt.robot import RobotDescription, load_robot

from .vector import checked_actions


def jerk_limited_velocity(v, a, command, acceleration_limit, jerk_limit, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """One step of the law above: (v1, a1) from the velocity v, the acceleration a and the requested velocity
    `command` (arrays of one shape, or broadcastable limits [dof]); units: m or rad, s."""
    v = np.asarray(v, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    jerk = np.asarray(jerk_limit, dtype=np.float64)
    accel = np.asarray(acceleration_limit, dtype=np.float64)
    w = v - np.asarray(command, dtype=np.float64)
    a_star = -np.sign(w) * jerk * (np.sqrt(dt * dt + 2.0 * np.abs(w) / jerk) - dt)
    a1 = np.clip(a_star, np.maximum(a - jerk * dt, -accel), np.minimum(a + jerk * dt, accel))
    return v + a1 * dt, a1


def stopping_displacement(v, a, acceleration_limit, jerk_limit) -> np.ndarray:
    """Signed distance the joint travels while it brakes from velocity v and acceleration a to rest as fast as
    |a| <= A, |j| <= J allow (otg.hpp's velocity_change to 0 and profile_displacement, vectorised)."""
    v = np.asarray(v, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    big_a = np.asarray(acceleration_limit, dtype=np.float64)
    big_j = np.asarray(jerk_limit, dtype=np.float64)
    v_ramp = v + a * np.abs(a) / (2.0 * big_j)
    s = np.where(v_ramp <= 0.0, 1.0, -1.0)  # the sign of the braking pulse
    w0, b0 = s * v, s * a
    peak = np.minimum(np.sqrt(np.maximum(0.0, -big_j * w0 + 0.5 * b0 * b0)), big_a)
    t1 = np.abs(peak - b0) / big_j
    t3 = peak / big_j
    gain13 = 0.5 * (b0 + peak) * t1 + 0.5 * peak * t3
    t2 = np.maximum(np.where(peak > 0.0, (-w0 - gain13) / np.maximum(peak, 1e-300), 0.0), 0.0)
    x = np.zeros(np.broadcast(v, a, big_a, big_j).shape)
    vel, acc = v + 0.0 * x, a + 0.0 * x
    for t, j in ((t1, s * np.where(peak >= b0, big_j, -big_j)), (t2, 0.0 * s), (t3, -s * big_j)):
        x = x + t * (vel + t * (0.5 * acc + t * j / 6.0))
        vel = vel + t * (acc + 0.5 * j * t)
        acc = acc + j * t
    return x


class JerkLimiter:
    """The law for N environments: `__call__(qd, command)` -> the jerk-limited joint velocities [N, dof] (robot
    units) from the measured (or, in the loop, commanded) velocities qd [N, dof]; `reset(mask)` zeroes the
    acceleration of the environments where mask is True (all when None).

    Args:
        robot: the limits (velocity, acceleration, jerk) come from it.
        num_envs: N.
        dt: the policy period in s (the env's `WorldConfig.step_s`).
        scale: the share of the acceleration and jerk limits the commands may use (1: all of them).
        position_margin: the commands brake so that every joint can stop this far (m | rad) inside its limits."""

    def __init__(
        self, robot: RobotDescription, num_envs: int, dt: float, scale: float = 1.0, position_margin: float = 1e-3
    ):
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"dt: expected a positive period in s, got {dt!r}")
        if not (isinstance(scale, (int, float)) and 0.0 < scale <= 1.0):
            raise ValueError(f"scale: expected a share of the limits in (0, 1], got {scale!r}")
        self.robot = robot
        self.n = int(num_envs)
        self.dt = float(dt)
        self.scale = float(scale)
        self.v_max = robot.velocity_limit
        self.a_max = scale * robot.acceleration_limit
        self.j_max = scale * robot.jerk_limit
        self.a = np.zeros((self.n, robot.dof))
        self.v_last: np.ndarray | None = None  # the last commands (to see whether they happened)
        self.q_low = robot.position_min + position_margin
        self.q_high = robot.position_max - position_margin

    def reset(self, mask=None) -> None:
        if mask is None:
            self.a[:] = 0.0
        else:
            self.a[np.asarray(mask, dtype=bool)] = 0.0

    def __call__(self, q, qd, command) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64).reshape(self.n, -1)
        qd = np.asarray(qd, dtype=np.float64).reshape(self.n, -1)
        command = np.clip(np.asarray(command, dtype=np.float64).reshape(self.n, -1), -self.v_max, self.v_max)
        if self.v_last is not None:
            # a command that did not happen as sent (an env's reset step ignores its action, a joint stopped at its
            # limit): the robot's acceleration is unknown, so restart from zero rather than from the filter's
            missed = np.abs(qd - self.v_last) > 1e-5 * self.v_max  # float32 observations round at ~1e-7
            self.a[missed] = 0.0
        v1, a1 = jerk_limited_velocity(qd, self.a, command, self.a_max, self.j_max, self.dt)
        v1 = np.clip(v1, -self.v_max, self.v_max)
        # can it still stop inside the position limits after this step? if not, brake as hard as the limits allow
        # (the loop's safety filter does the same with its can-stop test, stop.hpp)
        q1 = q + 0.5 * (qd + v1) * self.dt
        rest = q1 + stopping_displacement(v1, a1, self.a_max, self.j_max)
        late = (rest > self.q_high) | (rest < self.q_low)
        if late.any():
            toward = np.sign(v1)
            brake = np.clip(-toward * self.a_max, self.a - self.j_max * self.dt, self.a + self.j_max * self.dt)
            v1 = np.where(late, np.clip(qd + brake * self.dt, -self.v_max, self.v_max), v1)
        self.a = (v1 - qd) / self.dt  # what the command asks of the joint (equal to a1 unless clipped at V)
        self.v_last = v1
        return v1


def _flat(obs) -> np.ndarray:
    return np.asarray(obs["observation"] if isinstance(obs, dict) else obs)


class JerkLimitedPolicy:
    """An env policy whose actions pass through `JerkLimiter` (the robot's jerk limits; module docstring).

    `policy(obs, *args)` -> normalised actions (fractions of the velocity limits), for flat observations [D] or
    [N, D] (or the goal env's dict); the joint velocities qd are read from the observation. `reset(mask=None)`
    resets the filter and the wrapped policy (with the same argument, when it takes one)."""

    def __init__(
        self,
        policy,
        robot: RobotDescription | None = None,
        num_envs: int = 1,
        dt: float | None = None,
        scale: float = 1.0,
    ):
        from robot_rt.envs.core import WorldConfig

        if not callable(policy):
            raise TypeError(f"policy: expected a callable env policy, got {type(policy).__name__}")
        self.policy = policy
        self.robot = robot if robot is not None else getattr(policy, "robot", None) or load_robot()
        self.dt = WorldConfig().step_s if dt is None else float(dt)
        self.limiter = JerkLimiter(self.robot, num_envs, self.dt, scale)
        self.dof = self.robot.dof

    def reset(self, mask=None) -> None:
        self.limiter.reset(mask)
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            reset() if mask is None else reset(mask)

    def __call__(self, obs, *args, **kwargs):
        action = self.policy(obs, *args, **kwargs)
        if hasattr(action, "detach"):
            action = action.detach().cpu().numpy()
        action = np.asarray(action)
        flat = _flat(obs)
        qd = np.asarray(flat, dtype=np.float64)[..., self.dof : 2 * self.dof]
        v_max = self.robot.velocity_limit
        command = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) * v_max
        q = np.asarray(flat, dtype=np.float64)[..., : self.dof]
        n = self.limiter.n
        out = self.limiter(q.reshape(n, -1), qd.reshape(n, -1), command.reshape(n, -1)) / v_max
        return np.clip(out, -1.0, 1.0).astype(np.float32).reshape(action.shape)

    def __getattr__(self, name):  # the wrapped policy's attributes (params, tracker, ...)
        if name in ("policy", "limiter"):
            raise AttributeError(name)
        return getattr(self.policy, name)


class JerkLimitedActionsVector(VectorWrapper):
    """Vector env wrapper: the agent's actions pass through `JerkLimiter` before the env sees them (the env then moves
    the robot as the real-time loop would; module docstring). Same action space; the filter's acceleration is reset
    for environments whose episode starts (next-step autoreset)."""

    def __init__(self, env, scale: float = 1.0):
        super().__init__(env)
        world = env.unwrapped.world if hasattr(env.unwrapped, "world") else env.world
        self.robot = world.robot
        self.limiter = JerkLimiter(world.robot, env.num_envs, world.config.step_s, scale)
        self._q = self._qd = None
        self._autoreset = np.zeros(env.num_envs, dtype=bool)

    def _remember(self, obs) -> None:
        dof = self.robot.dof
        flat = np.asarray(_flat(obs), dtype=np.float64)
        self._q, self._qd = flat[:, :dof].copy(), flat[:, dof : 2 * dof].copy()

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        mask = None if options is None or "reset_mask" not in options else options["reset_mask"]
        self.limiter.reset(mask)
        if mask is None:
            self._autoreset[:] = False
        self._remember(obs)
        return obs, info

    def step(self, actions):
        a = checked_actions(actions, self.action_space.shape)
        v_max = self.robot.velocity_limit
        if self._autoreset.any():
            self.limiter.reset(self._autoreset)
        command = self.limiter(self._q, self._qd, np.clip(a, -1.0, 1.0) * v_max) / v_max
        obs, reward, terminated, truncated, info = self.env.step(np.clip(command, -1.0, 1.0).astype(np.float32))
        self._autoreset = np.asarray(terminated) | np.asarray(truncated)
        self._remember(obs)
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict:
        return {
            "a": self.limiter.a.copy(),
            "v_last": copy.deepcopy(self.limiter.v_last),
            "q": copy.deepcopy(self._q),
            "qd": copy.deepcopy(self._qd),
            "autoreset": self._autoreset.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.limiter.a = state["a"].copy()
        self.limiter.v_last = copy.deepcopy(state["v_last"])
        self._q = copy.deepcopy(state["q"])
        self._qd = copy.deepcopy(state["qd"])
        self._autoreset = state["autoreset"].copy()
