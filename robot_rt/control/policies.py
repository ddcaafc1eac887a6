"""Example policies for `robot-rt run --policy MODULE:CALLABLE`.

A policy is a callable `policy(obs: dict) -> joint targets [dof] | None` (obs: see RealTimeLoop). If the
name given to `--policy` resolves to a class, it is instantiated with the robot description first, so
stateful policies get a fresh instance per run: `robot_rt.control.policies:hold`, `...:sine`,
`...:nan_burst` are such classes.
"""

from __future__ import annotations

import importlib
import inspect
import math

import numpy as np

from robot_rt.robot import RobotDescription


class Hold:
    """Holds the position measured at the first call after construction or `reset()` (the loop resets its policy at
    each start and after each recovery, so a run or a recovery holds where the robot then is, not where an earlier
    one began)."""

    def __init__(self, robot: RobotDescription):
        self.robot = robot
        self.target: np.ndarray | None = None

    def reset(self) -> None:
        self.target = None

    def __call__(self, obs: dict) -> np.ndarray:
        if self.target is None:
            self.target = np.asarray(obs["measured_position"], dtype=np.float64).copy()
        return self.target


class Sine:
    """Smooth sinusoids around the robot's home on the gantry and the first arm joints.

    Amplitudes are a quarter of the distance from home to the nearer joint limit (at most 0.3 m / 0.25 rad),
    frequency 0.5 Hz, so the paddle stays well inside the workspace box of the shipped robot. It starts where the
    robot is: the centre travels from the first measured position to home at no more than `approach_fraction` of
    each joint's velocity limit (a smoothstep; none from home), then the sinusoids ramp in over a second. `reset()`
    (called after a recovery and at each start) starts that approach again from where the robot then is."""

    approach_fraction = 0.1

    def __init__(self, robot: RobotDescription, frequency_hz: float = 0.5, joints=(0, 2, 3)):
        self.robot = robot
        self.home = robot.home.astype(np.float64)
        room = np.minimum(self.home - robot.position_min, robot.position_max - self.home)
        cap = np.where(robot.is_revolute, 0.25, 0.3)
        self.amplitude = np.zeros(robot.dof)
        for j in joints:
            if j < robot.dof:
                self.amplitude[j] = min(0.25 * room[j], cap[j])
        self.phase = np.arange(robot.dof) * 0.7
        self.omega = 2 * math.pi * frequency_hz
        self.reset()

    def reset(self) -> None:
        self.t0_ns: int | None = None
        self.start: np.ndarray | None = None
        self.approach_s = 0.0

    def __call__(self, obs: dict) -> np.ndarray:
        if self.t0_ns is None:
            self.t0_ns = int(obs["stamp_ns"])
            self.start = np.asarray(obs["measured_position"], dtype=np.float64).copy()
            # a smoothstep's peak speed is 1.5 x distance / duration
            speed = self.approach_fraction * np.asarray(self.robot.velocity_limit, dtype=np.float64)
            self.approach_s = float(np.max(1.5 * np.abs(self.home - self.start) / speed))
        t = (int(obs["stamp_ns"]) - self.t0_ns) * 1e-9
        s = min(1.0, t / self.approach_s) if self.approach_s > 0.0 else 1.0
        centre = self.start + (self.home - self.start) * (s * s * (3.0 - 2.0 * s))
        after = max(0.0, t - self.approach_s)
        ramp = min(1.0, after)
        return centre + ramp * self.amplitude * np.sin(self.omega * after + self.phase)


class NanBurst(Sine):
    """`Sine`, but every `every`-th output is NaN: the loop must reject those and keep its rate."""

    def __init__(self, robot: RobotDescription, every: int = 25):
        self.every = int(every)
        self.calls = 0
        super().__init__(robot)

    def __call__(self, obs: dict) -> np.ndarray:
        self.calls += 1
        out = super().__call__(obs)
        if self.calls % self.every == 0:
            out = out.copy()
            out[self.calls % self.robot.dof] = math.nan
        return out


hold = Hold
sine = Sine
nan_burst = NanBurst


def load_policy(spec: str, robot: RobotDescription):
    """Resolves 'package.module:name' to a policy callable (classes are instantiated with the robot)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"policy: expected MODULE:CALLABLE, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"policy: cannot import module {module_name!r} ({err})") from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"policy: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        obj = obj(robot)
    if not callable(obj):
        raise TypeError(f"policy: {spec!r} is not callable")
    return obj
