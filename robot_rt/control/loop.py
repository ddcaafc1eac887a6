"""Python side of the real-time loop: a friendly wrapper around the C++ `ControlLoop` thread.

Design notes: docs/realtime.md, section `robot_rt.control.loop`.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import numbers
import os
import struct
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_rt import _control
from robot_rt.robot import RobotDescription, load_robot

from . import signals
from .background import BackgroundThread

logger = logging.getLogger("robot_rt.control")

EVENT_CODES: dict[str, int] = dict(_control.EVENT_CODES)
EVENT_NAMES: dict[int, str] = {v: k for k, v in EVENT_CODES.items()}
TICK_FLAGS: dict[str, int] = dict(_control.TICK_FLAGS)
TICK_LIFECYCLE_SHIFT: int = int(_control.TICK_LIFECYCLE_SHIFT)  # tick flags bits 16..18: the lifecycle state
TICK_STEPS_SHIFT: int = int(_control.TICK_STEPS_SHIFT)  # tick flags bits 20..27: trajectory steps of the tick
STOP_REASONS: dict[str, int] = dict(_control.STOP_REASONS)  # latched stop reason bits (docs/safety.md)
RECOVERY_BLOCKERS: dict[str, int] = dict(_control.RECOVERY_BLOCKERS)
LIFECYCLE: dict[str, int] = dict(_control.LIFECYCLE)
LIFECYCLE_NAMES: dict[int, str] = {v: k for k, v in LIFECYCLE.items()}
SAFETY_REASONS = tuple(name for name in STOP_REASONS if name != "shutdown")
HISTOGRAMS = ("wake_latency", "period", "tick_duration", "policy_round_trip", "command_latency")


LINK_EVENT_RANGE = range(100, 200)  # driver/link events (robot_rt.control.udp.LINK_EVENT_CODES, docs/protocol.md)
# the loop events the policy runner pushes (the loop's own rule, which takes these and the link codes)
EXTERNAL_LOOP_EVENTS = tuple(name for name, code in EVENT_CODES.items() if _control.is_external_event_code(code))


def event_code(name: str | int) -> int:
    """The code of a loop or link event name, or a validated int code (a loop code, or 100..199)."""
    if isinstance(name, bool):
        raise TypeError("name: expected an event name or int code, got a bool")
    if isinstance(name, (int, np.integer)):
        code = int(name)
        if code in EVENT_NAMES or code in LINK_EVENT_RANGE:
            return code
        raise ValueError(
            f"name: expected a loop event code {sorted(EVENT_NAMES)} or a link code in 100..199, got {code}"
        )
    if isinstance(name, str):
        if name in EVENT_CODES:
            return EVENT_CODES[name]
        from .udp import LINK_EVENT_CODES

        if name in LINK_EVENT_CODES:
            return LINK_EVENT_CODES[name]
        raise ValueError(f"name: unknown event {name!r} (expected one of EVENT_CODES or udp.LINK_EVENT_CODES)")
    raise TypeError(f"name: expected an event name or int code, got {type(name).__name__}")


CPU_LATENCY_DEVICE = "/dev/cpu_dma_latency"
MAX_WAIT_OBSERVATION_S = 3600.0  # wait_observation's bound (the C++ wait clamps to it too)


def open_cpu_latency_request(limit_us: int) -> int:
    """Holds a PM QoS CPU wake-up latency request of `limit_us` (0: idle CPUs poll) for as long as the returned file
    descriptor stays open; close it to release (the kernel also drops it when the process dies). Raises OSError
    when refused (needs write access to /dev/cpu_dma_latency)."""
    fd = os.open(CPU_LATENCY_DEVICE, os.O_WRONLY)
    try:
        os.write(fd, struct.pack("=i", int(limit_us)))
    except OSError:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class Event:
    stamp_ns: int
    tick: int
    code: int
    joint: int
    value: float

    @property
    def name(self) -> str:
        if self.code in EVENT_NAMES:
            return EVENT_NAMES[self.code]
        from .udp import LINK_EVENT_NAMES

        return LINK_EVENT_NAMES.get(self.code, f"code{self.code}")


def reason_names(bits: int) -> list[str]:
    """The names of the stop reason bits in `bits` (STOP_REASONS order)."""
    return [name for name, bit in STOP_REASONS.items() if bits & bit]


# Loops started and not stopped yet. At interpreter exit (a script that ends or dies without stop()) each is
# stopped (the end-of-run ramp to rest): its policy thread keeps a reference to it, so its destructor would never
# run, and the process would abort with the loop thread still running and no controlled stop.
_RUNNING_LOOPS: weakref.WeakSet = weakref.WeakSet()


def _forget_loops_in_forked_child() -> None:
    """A forked child inherits the parent's loop objects but not their threads: its exit handler must not stop them
    (a goodbye on the parent's session, a write into the parent's run log, seconds of waiting), and the signal
    handlers taken for them are not the child's."""
    _RUNNING_LOOPS.clear()
    signals.reset_in_forked_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_loops_in_forked_child)


@atexit.register
def _stop_running_loops() -> None:
    for loop in list(_RUNNING_LOOPS):
        try:
            loop.stop()
        except BaseException:  # pragma: no cover - every loop is stopped, also after a signal held during one stop
            logger.exception("stopping a running loop at exit failed")


def joint_vector(value, dof: int, what: str, noun: str = "joint targets") -> np.ndarray:
    """`value` as [dof] float64 (joint targets, or the env actions of EnvPolicyAdapter): a 1-D real array of exactly
    dof entries (a [1, dof] batch too); anything else (another shape that happens to hold dof numbers would permute
    the joints, complex values) is a ValueError naming `what`."""
    arr = np.asarray(value)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (dof,):
        raise ValueError(f"{what}: expected {dof} {noun} (shape ({dof},)), got shape {np.shape(value)}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{what}: expected real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def blocker_names(bits: int) -> list[str]:
    """The names of the recovery blocker bits in `bits` (stop reasons whose cause persists, then the others)."""
    return reason_names(bits) + [name for name, bit in RECOVERY_BLOCKERS.items() if bits & bit]


def tick_lifecycle(flags) -> np.ndarray:
    """The lifecycle state (LIFECYCLE values) of tick flags (an int or an array of them)."""
    return (np.asarray(flags, dtype=np.int64) >> TICK_LIFECYCLE_SHIFT) & 7


def tick_steps(flags) -> np.ndarray:
    """How many periods the commanded trajectory advanced at each tick (tick flags, an int or an array of them): 1
    on time, more on a tick after a late wake, where the trajectory catches up with the clock (docs/safety.md, "Late
    wakes"); logs written before the field existed read 1."""
    return np.maximum((np.asarray(flags, dtype=np.int64) >> TICK_STEPS_SHIFT) & 0xFF, 1)


SERVO_DEFAULT_FREQUENCY_HZ = float(_control.SERVO_DEFAULT_FREQUENCY_HZ)
SERVO_DEFAULT_DAMPING = float(_control.SERVO_DEFAULT_DAMPING)
# a tracking threshold larger than this share of its joint's range is refused (the reflex would in effect be off)
MAX_TRACKING_ERROR_RANGE_FRACTION = float(_control.MAX_TRACKING_ERROR_RANGE_FRACTION)
SOFT_MARGIN_FACTOR = 2.0  # the default soft margin, in servo error bounds (docs/safety.md)
# stop(): after the commanded trajectory is at rest, the loop keeps holding until the measured robot is at rest too
# (|v| within the rest threshold for ROBOT_SETTLED_S), at most ROBOT_SETTLE_TIMEOUT_S: a servo that still swings out
# an overshoot when the session ends would otherwise be caught mid-swing by the robot's own hold and move again
ROBOT_SETTLED_S = 0.05
ROBOT_SETTLE_TIMEOUT_S = 1.0


def servo_error_bound(
    robot: RobotDescription,
    servo_frequency_hz: float = SERVO_DEFAULT_FREQUENCY_HZ,
    servo_damping: float = SERVO_DEFAULT_DAMPING,
) -> np.ndarray:
    """Per joint, the largest |commanded - measured| position of the servo model (csrc/.../servo.hpp) when the
    commanded acceleration stays within the joint's limit: coth(pi zeta / (2 sqrt(1 - zeta^2))) A / w^2."""
    if not servo_frequency_hz > 0 or not servo_damping > 0:
        raise ValueError(
            f"servo_frequency_hz, servo_damping: expected positive values, got {servo_frequency_hz}, {servo_damping}"
        )
    w = 2.0 * np.pi * float(servo_frequency_hz)
    return np.array([_control.servo_error_bound(float(a), w, float(servo_damping)) for a in robot.acceleration_limit])


def default_soft_margin(
    robot: RobotDescription,
    servo_frequency_hz: float = SERVO_DEFAULT_FREQUENCY_HZ,
    servo_damping: float = SERVO_DEFAULT_DAMPING,
) -> np.ndarray:
    """The default soft-limit margin per joint: SOFT_MARGIN_FACTOR x the servo's error bound (docs/safety.md)."""
    return SOFT_MARGIN_FACTOR * servo_error_bound(robot, servo_frequency_hz, servo_damping)


def _soft_margin(robot: RobotDescription, soft_margin, servo_frequency_hz: float, servo_damping: float) -> np.ndarray:
    if soft_margin is None:
        return default_soft_margin(robot, servo_frequency_hz, servo_damping)
    margin = np.broadcast_to(np.asarray(soft_margin, dtype=np.float64), (robot.dof,)).copy()
    span = robot.position_max - robot.position_min
    if not np.all(np.isfinite(margin)) or np.any(margin < 0) or np.any(2 * margin >= span):
        raise ValueError(
            f"soft_margin: expected per joint 0 <= margin < half the position range {(span / 2).tolist()}, "
            f"got {margin.tolist()}"
        )
    return margin


def stopping_envelope(robot: RobotDescription, dt_s: float = 0.001, samples: int = 49) -> tuple[np.ndarray, np.ndarray]:
    """Per joint, the longest distance and duration of the controlled stop (stop.hpp's brake law, the loop's stop
    category 1) from any state the commanded trajectory can be in: |v| <= V, |a| <= A and v + a|a|/(2J) within the
    velocity limits (a grid over those states, plus the boundary where the acceleration still pushes at the limit).
    The exit ramp and every protective stop travel at most this far (docs/safety.md)."""
    if not dt_s > 0 or samples < 3:
        raise ValueError(f"dt_s > 0 and samples >= 3 expected, got {dt_s}, {samples}")
    distance = np.zeros(robot.dof)
    duration = np.zeros(robot.dof)
    for i in range(robot.dof):
        V, A, J = (float(robot.velocity_limit[i]), float(robot.acceleration_limit[i]), float(robot.jerk_limit[i]))
        limits = np.array([-1e300, 1e300, V, A, J])
        states = [(v, a) for v in np.linspace(0.0, V, samples) for a in np.linspace(-A, A, samples)]
        states += [(V - a * a / (2 * J), a) for a in np.linspace(0.0, A, samples)]  # pushing at the limit
        for v, a in states:
            if abs(v + a * abs(a) / (2 * J)) > V * (1 + 1e-12) or abs(v) > V:
                continue
            rows, _ = _control.brake_trajectory(0.0, v, a, limits, dt_s)
            if len(rows):
                distance[i] = max(distance[i], float(np.abs(rows[:, 0]).max()))
                duration[i] = max(duration[i], len(rows) * dt_s)
    return distance, duration


def stopping_distance(robot: RobotDescription, dt_s: float = 0.001) -> np.ndarray:
    """Per joint, the longest distance of the controlled stop (stopping_envelope)."""
    return stopping_envelope(robot, dt_s)[0]


def robot_model(robot: RobotDescription, workspace: bool = True, soft_margin=None) -> _control.RobotModel:
    """The C++ RobotModel (limits, chain, optional paddle workspace box, soft-limit margins, the blade's radius: the
    whole blade is kept in the box) of a robot description.

    soft_margin: per joint (or one value), m | rad inside the hard limits; None: no margin (soft = hard)."""
    chain = robot.chain_arrays()
    return _control.RobotModel(
        robot.position_min,
        robot.position_max,
        robot.velocity_limit,
        robot.acceleration_limit,
        robot.jerk_limit,
        robot.home,
        chain["joint_type"],
        chain["axis"],
        chain["origin_xyz_m"],
        chain["origin_rpy_rad"],
        chain["paddle_xyz_m"],
        chain["paddle_rpy_rad"],
        robot.workspace_min_m if workspace else None,
        robot.workspace_max_m if workspace else None,
        None if soft_margin is None else np.broadcast_to(np.asarray(soft_margin, dtype=np.float64), (robot.dof,)),
        paddle_radius_m=robot.paddle_radius_m,
    )


@dataclass(frozen=True)
class RecoveryResult:
    """Outcome of `RealTimeLoop.recover()`: `ok`, and when refused the `blockers` (causes that persist)."""

    ok: bool
    blockers: tuple[str, ...] = ()
    message: str = ""

    def __bool__(self) -> bool:
        return self.ok


class PolicyFinished(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a policy (as is StopIteration) to end the run: the runner stops calling it and `finished` is set."""


class RealTimeLoop:
    """Real-time control loop with an optional Python policy running at its own rate.

    Args:
        robot: robot description (default: the shipped gantry + arm platform).
        driver: a `robot_rt._control.RobotDriver` (e.g. the UDP driver); None = in-process `SimDriver`
            starting at `initial_position` (default: the robot's home).
        policy: callable `policy(obs: dict) -> joint targets [dof] | None`, called from a runner thread at
            `policy_rate_hz`; obs holds tick, stamp_ns, measured position/velocity, the commanded position/velocity/
            acceleration, the interpolated target, latest_ball, ...
        rate_hz: loop rate (1 kHz default). command_timeout_s: watchdog (stale/missing policy -> stop).
        sensor_timeout_s: driver state dropout longer than this -> stop.
        Every stop latches (docs/safety.md): the loop holds until `recover()`.
        workspace: keep the paddle's whole blade in the description's workspace box (targets, the path guard, the
            workspace stop); False only with the in-process SimDriver (a robot's link states the box as kept).
        soft_margin: per joint (or one value) inside the hard limits that the commanded trajectory keeps; None:
            `default_soft_margin` (twice the servo model's error bound, covering the servo's overshoot).
        servo_frequency_hz, servo_damping: the robot's position-servo model (servo.hpp): the defaults of the soft
            margin and tracking-error threshold are derived from it, and the in-process SimDriver simulates it.
        tracking_error_threshold: per joint (or one value), how far the measured position may leave the tube of
            the last `tracking_window_s` of commanded positions; None: 3 x the servo error bound.
        recover_timeout_s: a `recover()` whose causes persist longer than this is refused.
        steady_window_s: `start()` and `recover()` wait until the measured position has held still this long (every
            fresh state within rest_velocity_fraction x V x steady_window_s of one point per joint), so that a
            glitched feedback is not taken as where the robot is; a start refuses after 1 s more, a recovery is
            blocked (`feedback_unsteady`). (0, 0.5] s.
        realtime_priority: SCHED_FIFO priority for the loop thread (0 = off); cpu: pin it to a CPU;
        lock_memory: mlockall. Each is applied when permitted; otherwise a RuntimeWarning is issued.
        log_path: run log file (docs/runlog.md), None for no log. log_flush_interval_s: a chunk is appended at
            least this often (what kill -9 can lose); log_fsync_interval_s: fsync period (what a power loss can lose).
        policy_overrun_factor: a policy call longer than this many periods logs `policy_overrun`.
        late_threshold_s: a tick waking later than this after its deadline counts as late and logs a
            `late_wake` event (stamped with the wake time, value = lateness in s).
        cpu_latency_limit_us: while the loop runs, hold a CPU wake-up latency request of this many
            microseconds (PM QoS, `/dev/cpu_dma_latency`, as cyclictest does): idle CPUs then avoid sleep
            states that take longer to leave; 0 makes them poll. None (default) leaves the system's setting.
            On bare metal this removes C-state exit latency; inside a VM, polling keeps the vCPUs busy and may
            get them descheduled by the host instead (docs/realtime.md). Needs permission (root); otherwise a
            RuntimeWarning.
        path_guard_margin_m: the loop takes a new goal only if its trajectory from the commanded state of the tick the
            goal arrives in keeps the paddle this far inside the workspace box (else it keeps the previous goal, or
            brakes; event `workspace_path_hold`, counter `commands_path_held`; docs/safety.md). A policy-side forecast
            starts from its observation's state, which a late call makes stale. None turns the guard off.
        velocity_tracking: the commanded trajectory follows the velocity of the interpolated ramp between goals
            (jerk-limited, arriving with zero acceleration) and comes to rest when the ramp ends, instead of chasing
            the ramp's position (docs/safety.md, "Velocity tracking"). For policies that command joint velocities
            (the envs' action, `EnvPolicyAdapter(velocity_tracking=True)`): the swing is executed as the env's
            jerk-limited robot would, where position tracking lags it. Limits, the soft box, goal validation, the
            path guard (which then forecasts this tracking) and every reflex are unchanged.
    """

    def __init__(
        self,
        robot: RobotDescription | None = None,
        driver: _control.RobotDriver | None = None,
        *,
        policy: Callable[[dict], object] | None = None,
        policy_rate_hz: float = 100.0,
        rate_hz: float = 1000.0,
        command_timeout_s: float = 0.05,
        sensor_timeout_s: float = 0.02,
        soft_margin=None,
        servo_frequency_hz: float = SERVO_DEFAULT_FREQUENCY_HZ,
        servo_damping: float = SERVO_DEFAULT_DAMPING,
        tracking_error_threshold=None,
        tracking_window_s: float = 0.03,
        recover_timeout_s: float = 1.0,
        steady_window_s: float = 0.05,
        realtime_priority: int = 0,
        cpu: int | None = None,
        lock_memory: bool = False,
        log_path: str | Path | None = None,
        log_flush_interval_s: float = 0.05,
        log_fsync_interval_s: float = 1.0,
        initial_position=None,
        workspace: bool = True,
        policy_overrun_factor: float = 2.0,
        late_threshold_s: float = 0.001,
        cpu_latency_limit_us: int | None = None,
        path_guard_margin_m: float | None = 0.002,
        velocity_tracking: bool = False,
    ):
        self.robot = robot if robot is not None else load_robot()
        if policy is not None and not callable(policy):
            raise TypeError(f"policy: expected a callable obs -> targets, got {type(policy).__name__}")
        if not policy_rate_hz >= 1.0:  # (the loop bounds the policy period at 1 s)
            raise ValueError(f"policy_rate_hz: expected a rate of at least 1 Hz, got {policy_rate_hz}")
        if not late_threshold_s > 0:
            raise ValueError(f"late_threshold_s: expected a positive time in seconds, got {late_threshold_s}")
        if cpu_latency_limit_us is not None and not (0 <= int(cpu_latency_limit_us) <= 2_000_000_000):
            raise ValueError(f"cpu_latency_limit_us: expected None or microseconds >= 0, got {cpu_latency_limit_us}")
        self.cpu_latency_limit_us = None if cpu_latency_limit_us is None else int(cpu_latency_limit_us)
        self._cpu_latency_fd: int | None = None
        self.cpu_latency_request_granted = False  # whether the last start() got its request
        if not 1 <= rate_hz <= 20000:
            raise ValueError(f"rate_hz: expected a rate in [1, 20000] Hz, got {rate_hz}")
        if not tracking_window_s >= 0 or not 0 < recover_timeout_s <= 10.0:
            raise ValueError(
                f"tracking_window_s >= 0, recover_timeout_s in (0, 10] s: got {tracking_window_s}, {recover_timeout_s}"
            )
        if not 0 < steady_window_s <= 0.5:
            raise ValueError(f"steady_window_s: expected (0, 0.5] s, got {steady_window_s}")
        self.soft_margin = _soft_margin(self.robot, soft_margin, servo_frequency_hz, servo_damping)
        self.model = robot_model(self.robot, workspace=workspace, soft_margin=self.soft_margin)
        self.dof = self.robot.dof
        self.soft_min = self.robot.position_min + self.soft_margin
        self.soft_max = self.robot.position_max - self.soft_margin
        cfg = _control.LoopConfig()
        cfg.rate_hz = float(rate_hz)
        cfg.policy_period_s = 1.0 / policy_rate_hz
        cfg.servo_natural_frequency_hz = float(servo_frequency_hz)
        cfg.servo_damping = float(servo_damping)
        cfg.tracking_window_s = float(tracking_window_s)
        cfg.recover_timeout_s = float(recover_timeout_s)
        cfg.steady_window_s = float(steady_window_s)
        if tracking_error_threshold is None:  # the C++ default, made explicit for the run log
            threshold = cfg.tracking_error_factor * servo_error_bound(self.robot, servo_frequency_hz, servo_damping)
        else:
            threshold = np.broadcast_to(np.asarray(tracking_error_threshold, dtype=np.float64), (self.dof,))
            if not np.all(np.isfinite(threshold)) or np.any(threshold <= 0):
                raise ValueError(f"tracking_error_threshold: expected positive values, got {threshold.tolist()}")
        bound = MAX_TRACKING_ERROR_RANGE_FRACTION * (self.robot.position_max - self.robot.position_min)
        if np.any(np.asarray(threshold) > bound):  # the reflex would in effect be off (the C++ loop refuses it too)
            source = (
                "tracking_error_threshold"
                if tracking_error_threshold is not None
                else "servo_frequency_hz, servo_damping (the derived tracking_error_threshold)"
            )
            raise ValueError(
                f"{source}: expected tracking thresholds of at most {MAX_TRACKING_ERROR_RANGE_FRACTION} x each "
                f"joint's range {np.round(bound, 4).tolist()}, got {np.round(threshold, 4).tolist()}"
            )
        self.tracking_error_threshold = np.array(threshold, dtype=np.float64)
        cfg.tracking_error_threshold = self.tracking_error_threshold
        self.config = cfg  # period_s and policy_period_s read it
        if driver is None:
            q0 = self.robot.home if initial_position is None else np.asarray(initial_position, dtype=np.float64)
            driver = _control.SimDriver(
                self.model, q0, self.period_s, servo_frequency_hz=servo_frequency_hz, servo_damping=servo_damping
            )
        if not isinstance(driver, _control.RobotDriver):
            raise TypeError(f"driver: expected a robot_rt._control.RobotDriver, got {type(driver).__name__}")
        if not workspace and not isinstance(driver, _control.SimDriver):
            # the handshake states the description's box as enforced: a robot must never be told it is kept when it
            # is not (the eighth audit drove a paddle 8 cm under the table top over UDP with workspace=False)
            raise ValueError(
                "workspace: False is for the in-process SimDriver only; for a robot, give a description whose "
                "workspace box is the one to keep (its link states it in the handshake)"
            )
        from .udp import set_limits_digests

        # every UDP link states (and checks) the limits this loop's safety filter enforces: a robot with other limits
        # never opens a session (docs/protocol.md, "Joint-limits digest")
        set_limits_digests(driver, self.robot)
        # an EGM arm has no handshake: the limits this loop enforces on it must lie within the arm's data sheet
        # (docs/egm.md, "Arm limits"), whatever description its driver was built with
        from .egm import check_egm_links

        check_egm_links(driver, self.robot)
        self.driver = driver
        cfg.command_timeout_s = float(command_timeout_s)
        cfg.sensor_timeout_s = float(sensor_timeout_s)
        cfg.realtime_priority = int(realtime_priority)
        cfg.cpu = -1 if cpu is None else int(cpu)
        cfg.lock_memory = bool(lock_memory)
        if not 0 < log_flush_interval_s <= 60:
            raise ValueError(f"log_flush_interval_s: expected a time in (0, 60] s, got {log_flush_interval_s}")
        cfg.log_flush_interval_s = float(log_flush_interval_s)
        cfg.log_fsync_interval_s = float(log_fsync_interval_s)
        cfg.late_threshold_s = float(late_threshold_s)
        if path_guard_margin_m is not None and not (math.isfinite(path_guard_margin_m) and path_guard_margin_m >= 0):
            raise ValueError(f"path_guard_margin_m: expected None or a distance >= 0 in m, got {path_guard_margin_m!r}")
        cfg.path_guard_margin_m = -1.0 if path_guard_margin_m is None else float(path_guard_margin_m)
        if not isinstance(velocity_tracking, (bool, np.bool_)):
            raise TypeError(f"velocity_tracking: expected a bool, got {type(velocity_tracking).__name__}")
        cfg.velocity_tracking = bool(velocity_tracking)
        self.velocity_tracking = bool(velocity_tracking)
        self.log_path = None if log_path is None else str(log_path)
        if self.log_path is not None:
            cfg.log_path = self.log_path
            cfg.log_meta_json = json.dumps(
                {
                    "robot": self.robot.name,
                    "robot_source": self.robot.source,
                    "dof": self.dof,
                    "joint_names": self.robot.joint_names,
                    "position_min": self.robot.position_min.tolist(),
                    "position_max": self.robot.position_max.tolist(),
                    "velocity_limit": self.robot.velocity_limit.tolist(),
                    "acceleration_limit": self.robot.acceleration_limit.tolist(),
                    "jerk_limit": self.robot.jerk_limit.tolist(),
                    "soft_margin": self.soft_margin.tolist(),
                    "velocity_tracking": self.velocity_tracking,
                    "soft_min": self.soft_min.tolist(),
                    "soft_max": self.soft_max.tolist(),
                    "servo_frequency_hz": servo_frequency_hz,
                    "servo_damping": servo_damping,
                    "tracking_error_threshold": self.tracking_error_threshold.tolist(),
                    "tracking_window_s": tracking_window_s,
                    "workspace_min_m": self.robot.workspace_min_m.tolist(),
                    "workspace_max_m": self.robot.workspace_max_m.tolist(),
                    "paddle_radius_m": float(self.robot.paddle_radius_m),  # the whole blade is kept in the box
                    "rate_hz": rate_hz,
                    "policy_rate_hz": policy_rate_hz,
                    "command_timeout_s": command_timeout_s,
                    "sensor_timeout_s": sensor_timeout_s,
                    "driver": driver.name,
                    "event_codes": EVENT_CODES,
                    "tick_flags": TICK_FLAGS,
                    "tick_lifecycle_shift": TICK_LIFECYCLE_SHIFT,
                    "tick_steps_shift": TICK_STEPS_SHIFT,
                    "stop_reasons": STOP_REASONS,
                    "lifecycle": LIFECYCLE,
                    "wall_time_unix_s": time.time(),
                    "monotonic_ns_at_start": _control.monotonic_ns(),
                }
            )
        self._loop = _control.ControlLoop(driver, self.model, cfg)
        self.policy = policy
        self.policy_overrun_factor = float(policy_overrun_factor)
        self._command_lock = threading.Lock()  # the command ring has a single producer
        self._event_lock = threading.Lock()  # so has the Python -> loop event ring
        # the loop holds one recovery request: two callers at once would answer each other's (one's seen reasons
        # deciding the other's recovery), so recover() calls take turns
        self._recover_lock = threading.Lock()
        self._runner = BackgroundThread(self._run_policy, "robot_rt-policy")
        self._events: list[Event] = []
        self.policy_calls = 0
        self.policy_exceptions = 0
        self.policy_overruns = 0
        self.last_policy_exception: BaseException | None = None
        self.policy_finished = threading.Event()  # the policy raised PolicyFinished / StopIteration
        self.start_warnings: list[str] = []
        self._stop_lock = threading.RLock()  # (start()'s error path calls stop() holding it)
        self._signals_acquired = False
        self._owner_pid: int | None = None  # the process that started the loop (a forked child's copy is inert)
        self._policy_thread_ident: int | None = None  # the policy runner's thread (its stop() is PolicyFinished)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RealTimeLoop:
        with self._stop_lock:  # (one start() or stop() at a time: a losing concurrent start() stopped the winner's run)
            return self._start()

    def _start(self) -> RealTimeLoop:
        if self.running:
            raise RuntimeError("RealTimeLoop.start: already running")
        if self.policy is not None and self._runner.left_behind:
            raise RuntimeError(
                "RealTimeLoop.start: the previous run's policy call has not returned yet (it was left behind by "
                "stop()); start again once it has"
            )
        self.start_warnings = []
        self.policy_finished.clear()
        self._reset_policy()  # a new run: the policy starts afresh (its targets, clock, detections were the last run's)
        self._hold_cpu_latency_request()
        from .udp import LimitsMismatchError, limits_mismatch_message, limits_refusals

        refusals = limits_refusals(self.driver)
        # SIGTERM / SIGHUP end the run by the controlled stop, not by killing the process mid-motion (signals.py);
        # taken before the handshake: a signal during it then stops the loop that started below
        self._signals_acquired = signals.acquire()
        self._owner_pid = os.getpid()
        try:
            self.start_warnings += list(self._loop.start())
            _RUNNING_LOOPS.add(self)
            for message in self.start_warnings:
                warnings.warn(f"robot_rt control loop: {message}", RuntimeWarning, stacklevel=2)
            if self.policy is not None:
                self._runner.start()
        except BaseException as err:
            if self._loop.running:  # interrupted (Ctrl-C, a signal, an error) once the loop ran: end it, at rest
                _RUNNING_LOOPS.add(self)
                try:
                    self.stop()
                except BaseException:  # noqa: BLE001 (a signal held during that stop: err says why we stop)
                    logger.warning("a signal during the stop of an interrupted start (already stopping)")
                raise
            self._release_signals()
            self._release_cpu_latency_request()
            message = (
                limits_mismatch_message(self.driver, self.robot, refusals) if isinstance(err, RuntimeError) else None
            )
            if message is not None:  # the handshake was refused for the joint limits: say so, not "no state"
                raise LimitsMismatchError(message) from err
            raise
        return self

    def stop(self, policy_join_timeout_s: float = 1.0, settle_timeout_s: float = ROBOT_SETTLE_TIMEOUT_S) -> None:
        """Ends the run: the policy runner stops, then the loop ramps the commanded trajectory to rest (stop
        category 1, at most `stop_time_bound_s`) and holds it until the measured robot is at rest too (its servo's
        overshoot settled; at most `settle_timeout_s` more, not when the link is lost) before its thread ends and
        nothing is sent any more."""
        if self._owner_pid is not None and os.getpid() != self._owner_pid:
            # a forked child's copy: the loop runs in the parent, which stops it (the C++ copy touches nothing)
            logger.warning("stop() in a forked child: the loop belongs to process %d; nothing done", self._owner_pid)
            return
        if threading.get_ident() == self._policy_thread_ident:
            # the policy itself asked to end the run: as PolicyFinished, the end-of-run stop starts now and the runner
            # returns after this call; whoever calls stop() next (or the exit handler) ends the run (it cannot join
            # its own thread: the loop ran on without a policy into a watchdog stop)
            self._end_run_for_the_policy()
            self._runner.stop_event.set()
            return
        # no signal interrupts the controlled stop (Ctrl-C or SIGTERM again): they are raised once it has ended
        with signals.shielded(), self._stop_lock:  # (a second stop(), e.g. the exit handler's, waits for the first)
            self._stop(policy_join_timeout_s, settle_timeout_s)

    def request_stop(self) -> None:
        """Starts the end-of-run stop now and returns at once (`stop()` then waits for it): no policy target after this
        call. For a caller with slower work to do before `stop()` (the CLI prints and stops its link monitor first): a
        SIGTERM's run otherwise went 50 ms without a target before `stop()` began it, and ended in a watchdog stop
        (exit 3 instead of 0)."""
        if self._owner_pid is not None and os.getpid() != self._owner_pid:
            return  # a forked child's copy (stop() says so)
        if self.running:
            self._runner.stop_event.set()
            self._loop.request_shutdown()

    def _end_run_for_the_policy(self) -> None:
        """The policy ended the run (PolicyFinished, StopIteration, or its own stop()): the end-of-run stop starts now.
        Left waiting for whoever calls stop(), the command watchdog would latch first, and the run would end in a
        safety stop the robot keeps (a recovery at the next run)."""
        self.policy_finished.set()
        self._loop.request_shutdown()

    def _release_signals(self) -> None:
        if self._signals_acquired:
            self._signals_acquired = False
            signals.release()

    def _stop(self, policy_join_timeout_s: float, settle_timeout_s: float) -> None:
        # the end-of-run stop starts now, not once a slow policy call has returned (waiting for it, no target came for
        # longer than the command watchdog: the run ended in a watchdog stop); no policy target after this
        self.request_stop()
        if not self._runner.stop(policy_join_timeout_s):
            logger.warning(
                "policy thread still inside the policy call after %.1f s (stalled); left behind",
                policy_join_timeout_s,
            )
        if self.running:
            self._hold_until_robot_settled(settle_timeout_s)
        self._loop.stop()
        _RUNNING_LOOPS.discard(self)
        self._release_signals()
        self._release_cpu_latency_request()
        self._drain_events()

    def _hold_until_robot_settled(self, settle_timeout_s: float) -> bool:
        """Requests the end-of-run stop and waits until the commanded trajectory is at rest and the measured robot
        has been at rest (|v| <= rest_velocity_fraction x V per joint) for ROBOT_SETTLED_S; True when it was."""
        self._loop.request_shutdown()
        rest_v = self.config.rest_velocity_fraction * np.asarray(self.robot.velocity_limit, dtype=np.float64)
        deadline = time.monotonic() + self.stop_time_bound_s + 0.2 + max(0.0, float(settle_timeout_s))
        settled_since = None
        while time.monotonic() < deadline and self.running:
            if self._loop.shutdown_done:
                if "link_loss" in self.stop_reasons or "sensor_timeout" in self.stop_reasons:
                    return False  # no fresh state to watch: the robot side holds by itself
                obs = self._loop.latest_observation()
                moving = obs is None or not np.all(np.abs(obs["measured_velocity"]) <= rest_v)
                now = time.monotonic()
                if moving:
                    settled_since = None
                elif settled_since is None:
                    settled_since = now
                elif now - settled_since >= ROBOT_SETTLED_S:
                    return True
            time.sleep(0.002)
        return False

    def simulate(self, duration_s: float, *, during: Callable[[RealTimeLoop, int], None] | None = None) -> int:
        """Runs the loop deterministically on a simulated clock, as fast as it computes (no thread, no real-time
        settings): one tick per period, the policy called every policy period with the latest observation of this
        run, then the controlled stop of the end of a run. Only for a simulated robot (the in-process SimDriver, whose
        dynamics advance once per tick): the loop refuses a driver of a robot that moves in wall time (RuntimeError).
        `during(loop, tick)` is called before every tick (fault injection). Returns the ticks run. Not while
        running."""
        if self.running:
            raise RuntimeError("simulate: the loop is running (stop() it first)")
        if not duration_s > 0:
            raise ValueError(f"duration_s: expected a positive time, got {duration_s}")
        period_ns = round(1e9 * self.period_s)
        every = max(1, round(self.policy_period_s / self.period_s))
        now = _control.monotonic_ns()
        # the loop keeps publishing the last run's final observation until this run's first tick: the policy is
        # only called on observations published after it (the sequence, since stamps are wall time and this clock
        # is simulated, the loop's own earlier-run filter cannot tell; stamp 0 below)
        previous = self._loop.latest_observation()
        seen_seq = previous["seq"] if previous is not None else 0
        self._reset_policy()  # as start(): a new run starts the policy afresh
        self._loop.begin_manual(now)
        ticks = 0
        recovered_tick = 0
        try:
            for ticks in range(round(duration_s / self.period_s)):
                if during is not None:
                    during(self, ticks)
                if self.policy is not None and ticks % every == 0 and not self.policy_finished.is_set():
                    obs = self._loop.latest_observation()
                    if obs is not None and obs["seq"] > seen_seq:
                        # the runner's rules: a reset after a recovery before the next call, exact output shapes
                        recovered_tick = self._reset_after_recovery(obs, recovered_tick)
                        try:
                            out = self.policy(obs)
                        except (PolicyFinished, StopIteration):
                            self._end_run_for_the_policy()
                            out = None
                        self.policy_calls += 1
                        if out is not None:
                            out = joint_vector(out, self.dof, "policy output")
                            self._loop.push_command(out, obs["tick"], 0)
                now += period_ns
                self._loop.manual_tick(now)
            self._loop.request_shutdown()
            while not self._loop.shutdown_done:
                now += period_ns
                self._loop.manual_tick(now)
                ticks += 1
        finally:
            self._loop.end_manual()
            self._drain_events()
        return ticks + 1

    def _hold_cpu_latency_request(self) -> None:
        # The request lasts while the file stays open (the kernel drops it when the process dies, too).
        if self.cpu_latency_limit_us is None or self._cpu_latency_fd is not None:
            return
        self.cpu_latency_request_granted = False
        try:
            fd = open_cpu_latency_request(self.cpu_latency_limit_us)
        except OSError as exc:
            self.start_warnings.append(
                f"CPU latency request of {self.cpu_latency_limit_us} us refused ({CPU_LATENCY_DEVICE}: "
                f"{exc.strerror}): idle CPUs keep the system's sleep states"
            )
            return
        self._cpu_latency_fd = fd
        self.cpu_latency_request_granted = True

    def _release_cpu_latency_request(self) -> None:
        fd, self._cpu_latency_fd = self._cpu_latency_fd, None
        if fd is not None:
            os.close(fd)

    @property
    def cpu_latency_request_held(self) -> bool:
        """True while this loop holds its `cpu_latency_limit_us` request."""
        return self._cpu_latency_fd is not None

    @property
    def period_s(self) -> float:
        """The loop's tick period (1 / rate_hz)."""
        return 1.0 / self.config.rate_hz

    @property
    def policy_period_s(self) -> float:
        """The policy runner's period (1 / policy_rate_hz)."""
        return self.config.policy_period_s

    @property
    def running(self) -> bool:
        return self._loop.running

    def __enter__(self) -> RealTimeLoop:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ commands and observations
    def send_command(self, position, obs: dict) -> bool:
        """Queues joint targets (lock-free ring) answering the observation `obs` (this loop's `observation()` the
        target was computed from). The loop discards a target answering an observation from before the last recovery
        or from an earlier run, so a target computed before a stop never moves the robot after it; that is why
        `obs` is required. NaN/Inf targets are rejected by the loop and logged."""
        q = joint_vector(position, self.dof, "position")
        if not isinstance(obs, dict) or "tick" not in obs or "stamp_ns" not in obs:
            raise ValueError(
                "obs: expected the observation the target answers (a dict from observation() with 'tick' and "
                f"'stamp_ns'), got {type(obs).__name__}"
            )
        tick, stamp = int(obs["tick"]), int(obs["stamp_ns"])
        if tick < 1 or stamp <= 0:  # (a loop's observations start at tick 1: tick 0 would pass the recovery filter)
            raise ValueError(
                f"obs: expected an observation of this loop (tick >= 1, stamp_ns > 0), got {tick}, {stamp}"
            )
        if not self.running:
            raise RuntimeError("send_command: the loop is not running (a target queued now would be the next run's)")
        with self._command_lock:
            return self._loop.push_command(q, tick, stamp)

    def observation(self) -> dict | None:
        return self._loop.latest_observation()

    def wait_observation(self, after_seq: int = 0, timeout_s: float = 0.1) -> dict | None:
        """The first observation newer than sequence number `after_seq`, waiting up to `timeout_s` (GIL released);
        None on timeout. The wait is bounded: NaN, infinite or huge timeouts would wait past the loop's end."""
        if isinstance(after_seq, bool) or not isinstance(after_seq, (int, np.integer)) or after_seq < 0:
            raise ValueError(f"after_seq: expected an int >= 0, got {after_seq!r}")
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, (int, float, np.integer, np.floating))
            or not (0.0 <= timeout_s <= MAX_WAIT_OBSERVATION_S)
        ):
            raise ValueError(f"timeout_s: expected seconds in [0, {MAX_WAIT_OBSERVATION_S:g}], got {timeout_s!r}")
        return self._loop.wait_observation(int(after_seq), float(timeout_s))

    def estop(self) -> None:
        """Latches the e-stop: jerk-limited stop, then hold until `reset_estop()`. Pressed while the loop is not
        running, it latches at the loop's first tick."""
        self._loop.estop()

    def reset_estop(self, timeout_s: float | None = None) -> RecoveryResult:
        """Releases the e-stop: the same as `recover()` (an e-stop is one of the latched stop reasons)."""
        return self.recover(timeout_s)

    @property
    def estop_presses(self) -> int:
        """`estop()` calls so far: read it before the stop reasons shown to an operator, and pass it to `recover()`."""
        return int(self._loop.estop_presses)

    @property
    def robot_stop_events(self) -> int:
        """The robot's own stops the loop has seen (each change of its stop count: docs/protocol.md "Robot-side
        stops"): read it with `estop_presses`, before the stop reasons, and pass it to `recover()`."""
        return int(self._loop.robot_stop_events)

    @property
    def estop_latched(self) -> bool:
        return self._loop.estop_latched

    def recover(
        self,
        timeout_s: float | None = None,
        seen_reasons=None,
        seen_estop_presses: int | None = None,
        seen_robot_stops: int | None = None,
    ) -> RecoveryResult:
        """Recovers from a protective stop (docs/safety.md): releases the e-stop request, then the loop waits (up to
        `recover_timeout_s`) until every cause is gone (e-stop input released, fault cleared, link up, fresh
        plausible states) and the robot is at rest, re-synchronises the commanded trajectory to the measured position
        (no step is commanded), discards the policy's stale targets and becomes active again. Returns a
        RecoveryResult (truthy when recovered; else the blockers). A loop that is not stopped has nothing to recover
        (ok). Blocks at most `timeout_s` (default: recover_timeout_s + 0.5 s); when that passes first, the request
        is cancelled (the loop stays stopped; blocker 'cancelled'), so a recovery never completes after its caller
        gave up.

        `seen_reasons`: the stop reasons (names) the caller showed to the operator or decided on; the recovery is
        refused (with the others as blockers) when any other reason is latched, e.g. an e-stop pressed while the
        prompt was open. Default: the reasons latched at this call. `seen_estop_presses`: `estop_presses` read before
        those reasons (default: read now); an e-stop pressed after it, even again while latched, refuses the recovery.
        `seen_robot_stops`: `robot_stop_events` read likewise; a robot stop after it refuses the recovery (also while
        `robot_fault` is latched already). Both are this loop's counts: a larger one (read from another loop or
        driver) or a negative one is a ValueError."""
        if not self.running:
            return RecoveryResult(False, (), "the loop is not running")
        if timeout_s is None:
            timeout_s = self.config.recover_timeout_s + 0.5
        # (read before the reasons: a press or robot stop between is unseen)
        presses_now, robot_stops_now = self._loop.estop_presses, self._loop.robot_stop_events
        # counts above this loop's own were not read from it (another loop's, a new driver's: one of its stops
        # would pass as seen) nor are they counts at all when negative
        for name, seen, now in (
            ("seen_estop_presses", seen_estop_presses, presses_now),
            ("seen_robot_stops", seen_robot_stops, robot_stops_now),
        ):
            if seen is not None and not (isinstance(seen, numbers.Integral) and 0 <= seen <= now):
                raise ValueError(
                    f"{name}: expected this loop's count read before the stop reasons (an int in [0, {now}]), "
                    f"got {seen!r}: counts read from another loop or driver are not this loop's"
                )
        if seen_estop_presses is None:
            seen_estop_presses = presses_now
        if seen_robot_stops is None:
            seen_robot_stops = robot_stops_now
        if seen_reasons is None:
            seen_bits = self._loop.stop_reasons
        else:
            unknown = [r for r in seen_reasons if r not in STOP_REASONS]
            if unknown or isinstance(seen_reasons, str):
                raise ValueError(f"seen_reasons: expected stop reason names {list(STOP_REASONS)}, got {seen_reasons!r}")
            seen_bits = 0
            for r in seen_reasons:
                seen_bits |= STOP_REASONS[r]
        if not timeout_s >= 0.0:  # (NaN too)
            raise ValueError(f"timeout_s: expected a non-negative number of seconds, got {timeout_s!r}")
        timeout_s = min(float(timeout_s), threading.TIMEOUT_MAX)  # (inf: wait for the answer)
        deadline = time.monotonic() + timeout_s
        if not self._recover_lock.acquire(timeout=timeout_s):
            return RecoveryResult(False, ("timeout",), f"another recover() call held the request for {timeout_s:.2f} s")
        try:
            return self._recover_once(deadline, timeout_s, seen_bits, seen_estop_presses, int(seen_robot_stops))
        finally:
            self._recover_lock.release()

    def _recover_once(
        self, deadline: float, timeout_s: float, seen_bits: int, seen_estop_presses: int, robot_stops: int
    ):
        try:  # (the request inside: a signal handled as the call returns must cancel it too)
            self._loop.request_recover(int(seen_bits), int(seen_estop_presses), robot_stops)
            return self._await_recovery(deadline, timeout_s)
        except BaseException:
            # the caller gave up (Ctrl-C, a signal, any exception): the request must not complete later by itself
            # (the loop checks the cancel before it clears the stop; a cancel with no request is a no-op)
            self._loop.cancel_recover()
            self._undo_recovery_after_cancel()
            raise

    def _undo_recovery_after_cancel(self) -> None:
        """After a cancel: the loop answers at its next tick. If it had completed the recovery just before (the
        caller's exception came too late to stop it), the robot is stopped again (e-stop latched): a recover() that
        raised never leaves a running robot behind it."""
        deadline = time.monotonic() + 0.5
        try:
            while self._loop.recover_state == 1 and time.monotonic() < deadline:
                time.sleep(0.001)
        except BaseException:  # noqa: BLE001 (another signal: decide on what is known now; the first one propagates)
            pass
        if self._loop.recover_state == 2 and self.lifecycle == "active":  # (a done state left by an older request
            self._loop.estop()  # leaves the robot stopped: nothing to undo)
            logger.warning("recover() was interrupted after the recovery completed: the e-stop is latched again")

    def _await_recovery(self, deadline: float, timeout_s: float) -> RecoveryResult:
        cancelled = False
        while True:
            state = self._loop.recover_state
            if state == 2:  # (the policy runner resets the policy itself: it sees recovered_tick change)
                return RecoveryResult(True, (), "recovered")
            if state == 3:
                blockers = tuple(blocker_names(self._loop.recover_blockers))
                return RecoveryResult(False, blockers, "refused: " + ", ".join(blockers))
            now = time.monotonic()
            if now >= deadline and not cancelled:
                self._loop.cancel_recover()  # the loop answers (refused, or done if it got there first)
                cancelled, deadline = True, now + 0.5
            elif now >= deadline:
                return RecoveryResult(False, ("timeout",), f"no answer from the loop within {timeout_s:.2f} s")
            time.sleep(0.002)

    @property
    def lifecycle(self) -> str:
        """inactive | active | stopping | stopped | recovering (docs/safety.md)."""
        return LIFECYCLE_NAMES[self._loop.lifecycle]

    @property
    def stop_reasons(self) -> list[str]:
        """The latched stop reasons (empty while not stopped)."""
        return reason_names(self._loop.stop_reasons)

    @property
    def stop_reasons_seen(self) -> list[str]:
        """Every stop reason latched since start (recovered stops included)."""
        return reason_names(self._loop.stop_reasons_seen)

    @property
    def stop_time_bound_s(self) -> float:
        """Upper bound of the controlled stop's duration from any state inside the limits."""
        return float(self._loop.stop_time_bound_s)

    def push_event(self, name: str | int, joint: int = -1, value: float = 0.0) -> bool:
        """Queues an event for the loop thread, which writes it to the run log and to `events()`.

        `name`: one of the policy runner's events (`EXTERNAL_LOOP_EVENTS`: 'policy_exception', 'policy_overrun'), a
        link event name (`robot_rt.control.udp.LINK_EVENT_CODES`, codes 100..114, e.g. 'udp_lost'), or an int code
        in 100..199 (reserved for driver/link events, docs/protocol.md). The loop's own events (stops, recoveries,
        lifecycle changes, ...) are its record of what it did: pushing one raises ValueError (the loop refuses them
        too). Safe from any thread (the Python -> loop event ring has a single producer, so pushes are serialised
        here). Returns False when the ring was full (the loop counts `events_dropped`)."""
        code = event_code(name)
        if not _control.is_external_event_code(code):
            raise ValueError(
                f"name: {EVENT_NAMES[code]!r} is the loop's own event (only the loop emits it); push_event takes "
                f"{list(EXTERNAL_LOOP_EVENTS)} and link events (codes 100..199)"
            )
        with self._event_lock:
            return bool(self._loop.push_event(code, int(joint), float(value)))

    # ------------------------------------------------------------------ telemetry
    def _drain_events(self) -> None:
        for stamp, tick, code, joint, value in self._loop.pop_events():
            self._events.append(Event(stamp, tick, code, joint, value))

    def events(self) -> list[Event]:
        """Every event so far (the loop's event ring is drained into a Python list)."""
        self._drain_events()
        return list(self._events)

    def event_count(self, name: str) -> int:
        return int(self._loop.counters()["event_counts"].get(EVENT_CODES[name], 0))

    def counters(self) -> dict:
        return self._loop.counters()

    def histogram(self, name: str) -> dict:
        """Histogram `name` (one of HISTOGRAMS) in ns, with `bins_us` (1 us bins, last = overflow)."""
        return self._loop.histogram(name)

    def telemetry(self) -> dict:
        """Counters plus p50/p99/p99.9/max/mean (microseconds) of every histogram."""
        out: dict = {"counters": self.counters(), "rate_hz": self.config.rate_hz}
        for name in HISTOGRAMS:
            h = self._loop.histogram(name)
            out[f"{name}_us"] = {
                "count": int(h["count"]),
                "p50": h["p50_ns"] / 1e3,
                "p99": h["p99_ns"] / 1e3,
                "p999": h["p999_ns"] / 1e3,
                "max": h["max_ns"] / 1e3,
                "mean": h["mean_ns"] / 1e3,
                "above_1ms": int(h["above_1ms"]),
            }
        out["realtime_granted"] = self._loop.realtime_granted
        out["affinity_granted"] = self._loop.affinity_granted
        out["memory_locked"] = self._loop.memory_locked
        out["cpu_latency_limit_us"] = self.cpu_latency_limit_us
        out["cpu_latency_request_granted"] = self.cpu_latency_request_granted
        out["policy"] = {
            "calls": self.policy_calls,
            "exceptions": self.policy_exceptions,
            "overruns": self.policy_overruns,
        }
        return out

    # ------------------------------------------------------------------ policy runner
    def _reset_policy(self) -> None:
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            reset()

    def _reset_after_recovery(self, obs: dict, recovered_tick: int) -> int:
        """Resets the policy when `obs` comes after a recovery it was not reset for (its recovered_tick changed);
        returns the recovered tick the policy is now reset for (unchanged when reset() raised)."""
        if obs["recovered_tick"] != recovered_tick:
            self._reset_policy()
            recovered_tick = obs["recovered_tick"]
        return recovered_tick

    def _run_policy(self) -> None:
        self._policy_thread_ident = threading.get_ident()  # (stop() from here, even while another is joining us)
        try:
            self._run_policy_calls()
        finally:
            self._policy_thread_ident = None  # (thread ids are reused: a later caller of stop() is not the policy)

    def _run_policy_calls(self) -> None:
        period = self.policy_period_s
        seq = 0
        recovered_tick = 0  # the loop's tick of the last recovery this runner has reset the policy for
        next_t = time.monotonic()
        stopping = self._runner.stop_event
        while not stopping.is_set():
            # act on the next observation the loop publishes, not on one that is already up to a tick old
            seq = max(seq, self._loop.observation_seq)
            obs = self._loop.wait_observation(seq, period)
            if obs is None:
                continue
            seq = obs["seq"]
            # A recovery: the policy starts afresh from the re-synchronised robot, before its first call on an
            # observation from after it. Read from the observation itself (the tick of the last recovery), not
            # told by recover(): that learns of the recovery only by polling, and the runner could call the policy
            # in between with its pre-stop state (a goal from before the stop would be taken as fresh).
            t0 = time.monotonic()
            try:
                # (a reset that raises is a policy exception, retried before the next call)
                recovered_tick = self._reset_after_recovery(obs, recovered_tick)
                out = self.policy(obs)
                if out is not None:
                    out = joint_vector(out, self.dof, "policy output")
            except (PolicyFinished, StopIteration):
                logger.info("policy finished")
                self._end_run_for_the_policy()
                return
            except Exception as err:  # the loop keeps running; the robot stops if this persists
                self.policy_exceptions += 1
                self.last_policy_exception = err
                logger.error("policy raised %s: %s", type(err).__name__, err, exc_info=self.policy_exceptions <= 3)
                self.push_event("policy_exception", value=float(self.policy_exceptions))
                out = None
            duration = time.monotonic() - t0
            self.policy_calls += 1
            if duration > self.policy_overrun_factor * period:
                self.policy_overruns += 1
                logger.warning("policy call took %.1f ms (period %.1f ms)", duration * 1e3, period * 1e3)
                self.push_event("policy_overrun", value=duration)
            if out is not None and not stopping.is_set():
                with self._command_lock:
                    self._loop.push_command(out, obs["tick"], obs["stamp_ns"])
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                stopping.wait(delay)
            else:
                next_t = time.monotonic()  # fell behind: restart the schedule rather than bursting
