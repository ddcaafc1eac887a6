"""Python side of the real-time loop: a friendly wrapper around the C++ `ControlLoop` thread.

Design notes: docs/realtime.md, section `robot_rt.control.loop`.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_rt import _control
from robot_rt.robot import RobotDescription, load_robot

from .background import BackgroundThread

logger = logging.getLogger("robot_rt.control")

EVENT_CODES: dict[str, int] = dict(_control.EVENT_CODES)
EVENT_NAMES: dict[int, str] = {v: k for k, v in EVENT_CODES.items()}
TICK_FLAGS: dict[str, int] = dict(_control.TICK_FLAGS)
HISTOGRAMS = ("wake_latency", "period", "tick_duration", "policy_round_trip", "command_latency")


LINK_EVENT_RANGE = range(100, 200)  # driver/link events (robot_rt.control.udp.LINK_EVENT_CODES, docs/protocol.md)


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


def robot_model(robot: RobotDescription, workspace: bool = True) -> _control.RobotModel:
    """The C++ RobotModel (limits, chain, optional paddle workspace box) of a robot description."""
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
    )


class RealTimeLoop:
    """Real-time control loop with an optional Python policy running at its own rate.

    Args:
        robot: robot description (default: the shipped gantry + arm platform).
        driver: a `robot_rt._control.RobotDriver` (e.g. the UDP driver); None = in-process `SimDriver`
            starting at `initial_position` (default: the robot's home).
        policy: callable `policy(obs: dict) -> joint targets [dof] | None`, called from a runner thread at
            `policy_rate_hz`; obs holds tick, stamp_ns, measured/command/target positions, latest_ball, ...
        rate_hz: loop rate (1 kHz default). command_timeout_s: watchdog (stale/missing policy -> stop).
        sensor_timeout_s: driver state dropout longer than this -> stop.
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
        tracking_bandwidth_rad_s: float = 40.0,
        realtime_priority: int = 0,
        cpu: int | None = None,
        lock_memory: bool = False,
        log_path: str | Path | None = None,
        log_flush_interval_s: float = 0.05,
        log_fsync_interval_s: float = 1.0,
        initial_position=None,
        sim_tracking_time_constant_s: float = 0.01,
        workspace: bool = True,
        policy_overrun_factor: float = 2.0,
        late_threshold_s: float = 0.001,
        cpu_latency_limit_us: int | None = None,
    ):
        self.robot = robot if robot is not None else load_robot()
        if policy is not None and not callable(policy):
            raise TypeError(f"policy: expected a callable obs -> targets, got {type(policy).__name__}")
        if not policy_rate_hz > 0:
            raise ValueError(f"policy_rate_hz: expected a positive rate, got {policy_rate_hz}")
        if not late_threshold_s > 0:
            raise ValueError(f"late_threshold_s: expected a positive time in seconds, got {late_threshold_s}")
        if cpu_latency_limit_us is not None and not (0 <= int(cpu_latency_limit_us) <= 2_000_000_000):
            raise ValueError(f"cpu_latency_limit_us: expected None or microseconds >= 0, got {cpu_latency_limit_us}")
        self.cpu_latency_limit_us = None if cpu_latency_limit_us is None else int(cpu_latency_limit_us)
        self._cpu_latency_fd: int | None = None
        self.cpu_latency_request_granted = False  # whether the last start() got its request
        if not 1 <= rate_hz <= 20000:
            raise ValueError(f"rate_hz: expected a rate in [1, 20000] Hz, got {rate_hz}")
        self.model = robot_model(self.robot, workspace=workspace)
        self.dof = self.robot.dof
        cfg = _control.LoopConfig()
        cfg.rate_hz = float(rate_hz)
        cfg.policy_period_s = 1.0 / policy_rate_hz
        self.config = cfg  # period_s and policy_period_s read it
        if driver is None:
            q0 = self.robot.home if initial_position is None else np.asarray(initial_position, dtype=np.float64)
            driver = _control.SimDriver(self.model, q0, self.period_s, sim_tracking_time_constant_s)
        if not isinstance(driver, _control.RobotDriver):
            raise TypeError(f"driver: expected a robot_rt._control.RobotDriver, got {type(driver).__name__}")
        self.driver = driver
        cfg.command_timeout_s = float(command_timeout_s)
        cfg.sensor_timeout_s = float(sensor_timeout_s)
        cfg.tracking_bandwidth_rad_s = float(tracking_bandwidth_rad_s)
        cfg.realtime_priority = int(realtime_priority)
        cfg.cpu = -1 if cpu is None else int(cpu)
        cfg.lock_memory = bool(lock_memory)
        if not 0 < log_flush_interval_s <= 60:
            raise ValueError(f"log_flush_interval_s: expected a time in (0, 60] s, got {log_flush_interval_s}")
        cfg.log_flush_interval_s = float(log_flush_interval_s)
        cfg.log_fsync_interval_s = float(log_fsync_interval_s)
        cfg.late_threshold_s = float(late_threshold_s)
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
                    "workspace_min_m": self.robot.workspace_min_m.tolist(),
                    "workspace_max_m": self.robot.workspace_max_m.tolist(),
                    "rate_hz": rate_hz,
                    "policy_rate_hz": policy_rate_hz,
                    "command_timeout_s": command_timeout_s,
                    "sensor_timeout_s": sensor_timeout_s,
                    "driver": driver.name,
                    "event_codes": EVENT_CODES,
                    "tick_flags": TICK_FLAGS,
                    "wall_time_unix_s": time.time(),
                    "monotonic_ns_at_start": _control.monotonic_ns(),
                }
            )
        self._loop = _control.ControlLoop(driver, self.model, cfg)
        self.policy = policy
        self.policy_overrun_factor = float(policy_overrun_factor)
        self._command_lock = threading.Lock()  # the command ring has a single producer
        self._event_lock = threading.Lock()  # so has the Python -> loop event ring
        self._runner = BackgroundThread(self._run_policy, "robot_rt-policy")
        self._events: list[Event] = []
        self.policy_calls = 0
        self.policy_exceptions = 0
        self.policy_overruns = 0
        self.last_policy_exception: BaseException | None = None
        self.start_warnings: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RealTimeLoop:
        self.start_warnings = []
        self._hold_cpu_latency_request()
        try:
            self.start_warnings += list(self._loop.start())
        except BaseException:
            self._release_cpu_latency_request()
            raise
        for message in self.start_warnings:
            warnings.warn(f"robot_rt control loop: {message}", RuntimeWarning, stacklevel=2)
        if self.policy is not None:
            self._runner.start()
        return self

    def stop(self, policy_join_timeout_s: float = 1.0) -> None:
        if not self._runner.stop(policy_join_timeout_s):
            logger.warning(
                "policy thread still inside the policy call after %.1f s (stalled); left behind",
                policy_join_timeout_s,
            )
        self._loop.stop()
        self._release_cpu_latency_request()
        self._drain_events()

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
    def send_command(self, position, obs: dict | None = None) -> bool:
        """Queues joint targets (lock-free ring). NaN/Inf targets are rejected by the loop and logged."""
        q = np.asarray(position, dtype=np.float64).reshape(-1)
        if q.shape != (self.dof,):
            raise ValueError(f"position: expected {self.dof} joint targets, got shape {np.shape(position)}")
        tick, stamp = (int(obs["tick"]), int(obs["stamp_ns"])) if obs is not None else (0, 0)
        with self._command_lock:
            return self._loop.push_command(q, tick, stamp)

    def observation(self) -> dict | None:
        return self._loop.latest_observation()

    def wait_observation(self, after_seq: int = 0, timeout_s: float = 0.1) -> dict | None:
        return self._loop.wait_observation(after_seq, timeout_s)

    def estop(self) -> None:
        """Latches the e-stop: jerk-limited stop, then hold until `reset_estop()`."""
        self._loop.estop()

    def reset_estop(self) -> None:
        """Releases the e-stop once the robot is at rest and the e-stop input is released."""
        self._loop.reset_estop()

    @property
    def estop_latched(self) -> bool:
        return self._loop.estop_latched

    def push_event(self, name: str | int, joint: int = -1, value: float = 0.0) -> bool:
        """Queues an event for the loop thread, which writes it to the run log and to `events()`.

        `name`: a loop event name (`EVENT_CODES`), a link event name (`robot_rt.control.udp.LINK_EVENT_CODES`,
        codes 100..114, e.g. 'udp_lost'), or an int code in 100..199 (reserved for driver/link events,
        docs/protocol.md). Safe from any thread (the Python -> loop event ring has a single producer, so pushes
        are serialised here). Returns False when the ring was full (the loop counts `events_dropped`)."""
        code = event_code(name)
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
    def _run_policy(self) -> None:
        period = self.policy_period_s
        seq = 0
        next_t = time.monotonic()
        stopping = self._runner.stop_event
        while not stopping.is_set():
            # act on the next observation the loop publishes, not on one that is already up to a tick old
            seq = max(seq, self._loop.observation_seq)
            obs = self._loop.wait_observation(seq, period)
            if obs is None:
                continue
            seq = obs["seq"]
            t0 = time.monotonic()
            try:
                out = self.policy(obs)
                if out is not None:
                    out = np.asarray(out, dtype=np.float64).reshape(-1)
                    if out.shape != (self.dof,):
                        raise ValueError(f"policy output: expected {self.dof} joint targets, got shape {out.shape}")
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
