"""Fault-injection matrix of the control path (issue 12, item 8): every fault against a live `robot-rt run`
controller and the simulated robot, measured on the robot itself.

Design notes: docs/safety.md, section "Fault-injection matrix".
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_bytes
from robot_rt.control.policies import Hold, Sine
from robot_rt.robot import RobotDescription, load_robot

FAULT_FILE_ENV = "ROBOT_RT_FAULT_FILE"  # where the fault policies read their fault window (see FaultWindow)


# ------------------------------------------------------------------------------------------ faulty policies
class FaultWindow:
    """The window (CLOCK_MONOTONIC ns) in which a fault policy misbehaves. The harness decides it once the
    controller is live and writes "start_ns end_ns" atomically to the file named by $ROBOT_RT_FAULT_FILE (the
    policy runs in the `robot-rt run` process and `--policy` hands it only the robot); until then, no fault."""

    def __init__(self):
        self.path = os.environ.get(FAULT_FILE_ENV)
        self.window: tuple[int, int] | None = None

    def state(self) -> str:
        """'before', 'during' or 'after' the window, now."""
        if self.window is None and self.path is not None:
            try:
                start, end = (int(x) for x in Path(self.path).read_text().split())
                self.window = (start, end)
            except (OSError, ValueError):
                return "before"
        if self.window is None:
            return "before"
        now = time.monotonic_ns()
        return "before" if now < self.window[0] else "during" if now < self.window[1] else "after"

    def remaining_s(self) -> float:
        return 0.0 if self.window is None else max(0.0, (self.window[1] - time.monotonic_ns()) * 1e-9)


class Moving(Sine):
    """The well-behaved policy of the robot and link rows: `Sine` (the robot moves through the fault)."""


class _FaultySine(Sine):
    """`Sine` (the robot moves), misbehaving inside the fault window."""

    def __init__(self, robot: RobotDescription):
        super().__init__(robot)
        self.fault = FaultWindow()

    def __call__(self, obs: dict):
        target = super().__call__(obs)
        return self.misbehave(obs, target) if self.fault.state() == "during" else target

    def misbehave(self, obs: dict, target: np.ndarray):
        raise NotImplementedError


class PolicyRaise(_FaultySine):
    """Raises at every call inside the window."""

    def misbehave(self, obs, target):
        raise RuntimeError("fault injection: the policy raises")


class PolicyHang(_FaultySine):
    """Hangs (one call blocks) for the rest of the window."""

    def misbehave(self, obs, target):
        time.sleep(self.fault.remaining_s())
        return target


class PolicySilent(_FaultySine):
    """Returns None inside the window: it answers, but commands nothing (the watchdog's own fault)."""

    def misbehave(self, obs, target):
        return None


class PolicyNaN(_FaultySine):
    """Returns NaN targets inside the window."""

    def misbehave(self, obs, target):
        return np.full_like(target, math.nan)


def workspace_free_joints(robot: RobotDescription, points: int = 3) -> list[int]:
    """Joints that can sweep their whole range together (the others at home) without the paddle leaving the
    workspace box: the ones a bang-bang policy can drive to their limits without the loop refusing the target
    for the workspace first (checked on a grid of `points` per joint, greedily dropping joints that break it)."""
    import itertools

    from robot_rt.robot.kinematics import paddle_position_normal

    def inside(joints) -> bool:
        grids = [np.linspace(robot.position_min[j], robot.position_max[j], points) for j in joints]
        for corner in itertools.product(*grids):
            q = robot.home.astype(np.float64).copy()
            q[list(joints)] = corner
            p, _ = paddle_position_normal(robot, q)
            if np.any(p < robot.workspace_min_m) or np.any(p > robot.workspace_max_m):
                return False
        return True

    chosen: list[int] = []
    for j in range(robot.dof):
        if inside([*chosen, j]):
            chosen.append(j)
    return chosen


class PolicyAtLimit(_FaultySine):
    """Bang-bang exactly between the hard limits inside the window (switching every 50 loop ticks) on the joints
    that can reach them inside the workspace box: the largest steps a policy can ask for, with a servo that
    lags and overshoots."""

    beyond = 0.0  # fraction of the range past each limit

    def __init__(self, robot: RobotDescription):
        super().__init__(robot)
        self.joints = workspace_free_joints(robot)

    def misbehave(self, obs, target):
        span = self.robot.position_max - self.robot.position_min
        high = int(obs["tick"]) // 50 % 2 == 0
        extreme = self.robot.position_max + self.beyond * span if high else self.robot.position_min - self.beyond * span
        out = np.asarray(target, dtype=np.float64).copy()
        out[self.joints] = extreme[self.joints]
        return out


class PolicyOutOfLimit(PolicyAtLimit):
    """`PolicyAtLimit`, with targets a quarter of the range beyond each hard limit."""

    beyond = 0.25


class HoldStill(Hold):
    """`Hold` for the attack rows: the live controller commands exactly where the robot is, so any motion of
    the robot is motion the live session did not command."""


# ------------------------------------------------------------------------------------------ measurement
class RobotRecorder:
    """Samples the simulated robot's joints (SimRobotServer.snapshot) every ~`period_s` in a thread:
    `times_ns` (CLOCK_MONOTONIC) and `positions` [n, dof]."""

    def __init__(self, server, period_s: float = 0.001):
        self.server = server
        self.period_s = float(period_s)
        self._t: list[int] = []
        self._q: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="robot-recorder", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            snap = self.server.robot_server.snapshot()
            self._t.append(time.monotonic_ns())
            self._q.append(snap["position"])
            time.sleep(self.period_s)

    def __enter__(self) -> RobotRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def times_ns(self) -> np.ndarray:
        return np.asarray(self._t, dtype=np.int64)

    @property
    def positions(self) -> np.ndarray:
        return np.asarray(self._q, dtype=np.float64)

    def at(self, t_ns: int) -> np.ndarray:
        """The last sample at or before t_ns (the first sample if none)."""
        i = int(np.searchsorted(self.times_ns, t_ns, side="right")) - 1
        return self.positions[max(i, 0)]


def stop_event_names(names) -> list[str]:
    """The protective-stop events among `names`: the e-stop and every '*_stop' but the loop's own end and the
    shutdown ramp at the end of a run."""
    return [n for n in names if n == "estop" or (n.endswith("_stop") and n not in ("loop_stop", "shutdown_stop"))]


# ------------------------------------------------------------------------------------------ the faults
@dataclass
class Context:
    """What an injection works with: the robot server, the proxy on the controller's path, the key, a recorded
    earlier session (for replays) and the attack threads it started."""

    server: object
    proxy: object
    key: bytes
    controller: object = None  # the `robot-rt run` process (subprocess.Popen)
    captured: list = field(default_factory=list)
    recorded_address: tuple | None = None
    threads: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    def background(self, fn: Callable[[], None]) -> None:
        thread = threading.Thread(target=fn, daemon=True)
        thread.start()
        self.threads.append(thread)


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    policy: str  # a class of this module, loaded by `robot-rt run --policy`
    inject: Callable[[Context, float], None] | None = None  # at the window's start (ctx, window_s)
    clear: Callable[[Context], None] | None = None  # at its end
    # the right outcomes: the first stop event after the fault (several when either is right, e.g. a dead state
    # stream shows first as missing states or as the lost link), None for no protective stop (ride it out)
    stops: frozenset = frozenset({None})
    # `robot-rt run`'s exit codes that are right (robot_rt.control.commands.EXIT_CODES: 0 completed, 3 protective
    # stop, 4 lost link, 5 e-stop)
    exit_codes: frozenset = frozenset({0})
    attack: bool = False  # someone without the key: nothing but the live session may move the robot
    needs_recording: bool = False

    @property
    def stop_expected(self) -> bool:
        return None not in self.stops


def _set_faults(**faults):
    return lambda ctx, window_s: ctx.server.robot_server.set_faults(**faults)


def _clear_faults(ctx: Context) -> None:
    ctx.server.robot_server.set_faults()


def _blackhole_down(ctx: Context, window_s: float) -> None:
    ctx.proxy.set_faults("down", blackhole=True)


def _kill_server(ctx: Context, window_s: float) -> None:
    ctx.server.robot_server.stop(goodbye=False)  # a crash: the session just falls silent


def _restart_server(ctx: Context) -> None:
    ctx.server.robot_server.start()  # a new server session on the same port, the joints where they were


def _flood(ctx: Context, window_s: float) -> None:
    from . import attack

    target = ("127.0.0.1", ctx.server.port)
    hellos = attack.select(ctx.captured, "up", {"hello"})
    garbage = [secrets.token_bytes(n) for n in (1, 40, 200, 1400)]
    commands = attack.select(ctx.captured, "up", {"joint_command"})[:50]

    def run():
        sources = [(f"127.0.0.{i}", 0) for i in range(20, 24)]
        ctx.notes["flood_sent"] = attack.flood(
            target, hellos + garbage + commands, duration_s=window_s, sources=sources, interval_s=1e-4
        )

    ctx.background(run)


def _replay(ctx: Context, window_s: float) -> None:
    from . import attack

    up = attack.select(ctx.captured, "up")
    down = attack.select(ctx.captured, "down")
    target = ("127.0.0.1", ctx.server.port)

    def run():
        sent = 0
        with attack.Replayer(("127.0.0.2", 0)) as other:  # another address
            sent += other.replay(up, target, interval_s=window_s / max(4 * len(up), 1))
        with attack.Replayer(ctx.recorded_address) as own:  # the recorded session's own address
            sent += own.replay(up, target, interval_s=window_s / max(4 * len(up), 1))
        for d in up:  # on the live controller's path: from its exact address
            ctx.proxy.inject("up", d)
            sent += 1
        for d in down:  # the robot's old states, to the live controller from the robot's address
            ctx.proxy.inject("down", d)
            sent += 1
        ctx.notes["replayed"] = sent

    ctx.background(run)


def _terminate_controller(ctx: Context, window_s: float) -> None:
    ctx.controller.send_signal(signal.SIGTERM)  # the operator ends the run mid-motion (or systemd stops it)


def _future_stamp(ctx: Context, window_s: float) -> None:
    ctx.server.robot_server.shift_state_stamps(10_000_000_000, 1)  # one state 10 s ahead (issue 12)


PROTECTIVE = frozenset({3})  # exit: ended by a protective stop
LINK_LOST = frozenset({4})
# a dead state stream: missing states (sensor timeout, exit 3) or the lost link (exit 4), whichever the loop sees
# first; both are right and both stop
DEAD_STREAM_STOPS = frozenset({"sensor_timeout_stop", "link_loss_stop"})
DEAD_STREAM_EXITS = frozenset({3, 4})

FAULTS: tuple[Fault, ...] = (
    Fault("none", "no fault: the reference run (the robot's own motion over the same window)", "Moving"),
    Fault(
        "policy_raise",
        "the policy raises at every call",
        "PolicyRaise",
        stops=frozenset({"watchdog_stop"}),
        exit_codes=PROTECTIVE,
    ),
    Fault(
        "policy_hang",
        "one policy call hangs for the window",
        "PolicyHang",
        stops=frozenset({"watchdog_stop"}),
        exit_codes=PROTECTIVE,
    ),
    Fault(
        "policy_silent",
        "the policy commands nothing (returns None): the watchdog",
        "PolicySilent",
        stops=frozenset({"watchdog_stop"}),
        exit_codes=PROTECTIVE,
    ),
    Fault(
        "policy_nan",
        "the policy returns NaN targets",
        "PolicyNaN",
        stops=frozenset({"watchdog_stop"}),
        exit_codes=PROTECTIVE,
    ),
    # no hard stop and no stop at all, whatever the targets: the rush back from a limit to the sine after the window
    # runs at full speed over the link (500 Hz), through the late wakes of a loaded machine (the commanded trajectory
    # follows the clock: docs/safety.md, "Late wakes"; a stall beyond its 20 ms catch-up may still end in a tracking
    # stop, which tests/test_fault_matrix.py reruns as it does the timeouts)
    Fault(
        "policy_at_limit",
        "bang-bang targets exactly at both hard limits (the joints that stay in the workspace)",
        "PolicyAtLimit",
        stops=frozenset({None}),
        exit_codes=frozenset({0}),
    ),
    Fault(
        "policy_out_of_limit",
        "bang-bang targets 25% of the range beyond both hard limits (the same joints)",
        "PolicyOutOfLimit",
        stops=frozenset({None}),
        exit_codes=frozenset({0}),
    ),
    Fault(
        "measured_nan",
        "the robot measures NaN on joint 0 (the codec refuses to send it: the states stop)",
        "Moving",
        _set_faults(measured_joint=0, measured_value=math.nan),
        _clear_faults,
        # a state the driver cannot accept ends the state stream; one it accepts is the measurement reflex's
        stops=DEAD_STREAM_STOPS | {"measurement_invalid_stop"},
        exit_codes=DEAD_STREAM_EXITS,
    ),
    Fault(
        "measured_out_of_range",
        "the robot reports 1e300 as joint 0's position",
        "Moving",
        _set_faults(measured_joint=0, measured_value=1e300),
        _clear_faults,
        stops=frozenset({"measurement_invalid_stop"}),
        exit_codes=PROTECTIVE,
    ),
    Fault(
        "robot_fault",
        "the robot reports FAULT (and ignores commands)",
        "Moving",
        _set_faults(fault=True),
        _clear_faults,
        stops=frozenset({"robot_fault_stop"}),
        exit_codes=PROTECTIVE,
    ),
    Fault(
        "estop_input",
        "the robot's e-stop input is pressed (status ESTOP; its drives brake and ignore commands)",
        "Moving",
        _set_faults(estop=True),
        _clear_faults,
        stops=frozenset({"estop"}),
        exit_codes=frozenset({5}),
    ),
    Fault(
        "tracking_error",
        "joint 0 is blocked (a collision): the robot does not follow (the loop's tracking check or the robot's own "
        "following-error hold, whichever sees it first: docs/protocol.md 'Robot-side stops')",
        "Moving",
        _set_faults(stuck_joint=0),
        _clear_faults,
        stops=frozenset({"tracking_error_stop", "robot_fault_stop"}),
        exit_codes=PROTECTIVE,
    ),
    Fault(
        "sensor_timeout",
        "no state reaches the controller (the robot->controller path drops everything)",
        "Moving",
        _blackhole_down,
        lambda ctx: ctx.proxy.clear_faults(),
        stops=DEAD_STREAM_STOPS,
        exit_codes=DEAD_STREAM_EXITS,
    ),
    Fault(
        "server_kill_restart",
        "the robot server dies without a goodbye and comes back (new session)",
        "Moving",
        _kill_server,
        _restart_server,
        stops=DEAD_STREAM_STOPS,
        exit_codes=DEAD_STREAM_EXITS,
    ),
    Fault(
        "shutdown_mid_motion",
        "SIGTERM to `robot-rt run` while the robot moves (the end-of-run controlled stop)",
        "Moving",
        _terminate_controller,
        stops=frozenset({"shutdown_stop"}),
        exit_codes=frozenset({0}),
    ),
    Fault(
        "packet_flood",
        "valid recorded hellos and commands plus garbage from 4 addresses, paced at 10 kHz",
        "HoldStill",
        _flood,
        attack=True,
        needs_recording=True,
    ),
    Fault(
        "replay_spoof",
        "a recorded session (moved joint 0 by 0.4) replayed from another address, its own address, and "
        "injected on the live controller's path both ways",
        "HoldStill",
        _replay,
        attack=True,
        needs_recording=True,
    ),
    Fault(
        "future_stamped_state",
        "one robot state stamped 10 s in the future",
        "Moving",
        _future_stamp,
    ),
)

FAULT_NAMES = tuple(f.name for f in FAULTS)


# ------------------------------------------------------------------------------------------ one row
@dataclass
class MatrixConfig:
    warmup_s: float = 0.8  # live controller before the fault (the robot moves)
    window_s: float = 0.3  # the fault lasts this long, then goes away
    after_s: float = 1.2  # observed after the fault
    rate_hz: float = 500.0
    settle_s: float = 0.1  # "at rest": the robot has been still (within still_tolerance) this long
    rest_tolerance: float = 1e-3  # m | rad: what "no motion" allows after the stop (servo settling, sampling)
    still_tolerance: float = (
        2e-4  # m | rad: "still" while settling (stricter: the settling creep stays inside the above)
    )
    # the robot is watched this long after the controller exited (and after the fault went away): a stopped robot
    # must stay where it is without anyone recovering it, whatever the far end does
    observe_after_exit_s: float = 0.6
    startup_timeout_s: float = 120.0  # the controller process may start slowly on a loaded machine
    # the simulated robot's servo: like a real drive it lags and overshoots (10 Hz natural frequency, damping 0.5:
    # 16 % overshoot on a step)
    servo_time_constant_s: float = 1.0 / (2.0 * math.pi * 10.0)
    servo_damping: float = 0.5
    # the controller's watchdog and sensor timeouts (None: `robot-rt run`'s defaults, 50 and 20 ms)
    command_timeout_s: float | None = None
    sensor_timeout_s: float | None = None


def _controller_cmd(fault: Fault, port: int, key_path: Path, log_path: Path, summary_path: Path, duration_s, rate):
    return [
        sys.executable,
        "-m",
        "robot_rt.sim.faults",
        "controller",
        "run",
        "--robot",
        f"udp://127.0.0.1:{port}?camera=none",
        "--key-file",
        str(key_path),
        "--policy",
        f"robot_rt.sim.faults:{fault.policy}",
        "--duration",
        f"{duration_s:.3f}",
        "--rate",
        f"{rate:g}",
        "--log",
        str(log_path),
        "--summary",
        str(summary_path),
        "--no-status",
    ]


def _wait_live(server, proc, timeout_s: float) -> int:
    """Waits until the controller's session commands the robot; returns that moment (monotonic ns)."""
    deadline = time.monotonic() + timeout_s
    applied0 = server.robot_server.stats()["commands_applied"]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the controller exited early ({proc.returncode}): {proc.stdout.read()}")
        if server.robot_server.stats()["commands_applied"] > applied0 + 5:
            return time.monotonic_ns()
        time.sleep(0.002)
    raise TimeoutError(f"the controller did not command the robot within {timeout_s:.0f} s")


def run_fault(
    fault: Fault | str, config: MatrixConfig | None = None, workdir: str | Path | None = None, trace: bool = False
) -> dict:
    """Runs one fault against a fresh simulated robot and a `robot-rt run` controller; returns its matrix row
    (`trace`: also the robot's sampled trajectory, row["trace"] = (times_ns, positions), and the run log's ticks and
    events, row["log"])."""
    from robot_rt.control.runlog import read_runlog

    from . import attack
    from .server import SimServer
    from .udp_proxy import FaultProxy

    fault = fault if isinstance(fault, Fault) else {f.name: f for f in FAULTS}[fault]
    cfg = config or MatrixConfig()
    robot = load_robot()
    key = secrets.token_hex(32).encode()
    with tempfile.TemporaryDirectory(prefix=f"fault_{fault.name}_", dir=workdir) as tmp:
        tmp = Path(tmp)
        key_path, fault_file = tmp / "link.key", tmp / "fault_window"
        atomic_write_bytes(key_path, key, mode=0o600)  # read_key refuses a key file open to other users
        log_path, summary_path = tmp / "run.rrlog", tmp / "summary.json"
        server = SimServer(
            robot,
            camera=False,
            key=key,
            tracking_time_constant_s=cfg.servo_time_constant_s,
            servo_damping=cfg.servo_damping,
        )
        with server:
            ctx = Context(server=server, proxy=None, key=key)
            if fault.needs_recording:
                ctx.captured, ctx.recorded_address = attack.record_session(server, key, move=0.4)
                attack.wait_at_rest(server)
            proxy = ctx.proxy = FaultProxy(("127.0.0.1", server.port)).start()
            duration_s = cfg.warmup_s + cfg.window_s + cfg.after_s
            env = dict(os.environ, PYTHONUNBUFFERED="1", **{FAULT_FILE_ENV: str(fault_file)})
            cmd = _controller_cmd(fault, proxy.port, key_path, log_path, summary_path, duration_s, cfg.rate_hz)
            if cfg.command_timeout_s is not None:
                cmd += ["--command-timeout", f"{cfg.command_timeout_s:g}"]
            if cfg.sensor_timeout_s is not None:
                cmd += ["--sensor-timeout", f"{cfg.sensor_timeout_s:g}"]
            stats0 = server.robot_server.stats()
            try:
                with RobotRecorder(server) as recorder:
                    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                    ctx.controller = proc
                    try:
                        t_live = _wait_live(server, proc, cfg.startup_timeout_s)
                        _sleep_until(t_live + int(cfg.warmup_s * 1e9))
                        t_inject = time.monotonic_ns()
                        t_clear = t_inject + int(cfg.window_s * 1e9)
                        tmp_window = fault_file.with_suffix(".tmp")
                        tmp_window.write_text(f"{t_inject} {t_clear}")
                        os.replace(tmp_window, fault_file)
                        if fault.inject is not None:
                            fault.inject(ctx, cfg.window_s)
                        _sleep_until(t_clear)
                        for thread in ctx.threads:
                            thread.join()
                        if fault.clear is not None:
                            fault.clear(ctx)
                        t_cleared = time.monotonic_ns()
                        output, _ = proc.communicate(timeout=cfg.startup_timeout_s + duration_s)
                    finally:
                        if proc.poll() is None:
                            proc.kill()
                            proc.wait()
                    time.sleep(cfg.observe_after_exit_s)
            finally:
                proxy.stop()
            stats1 = server.robot_server.stats()
        log = read_runlog(log_path)
    row = _row(fault, cfg, robot, log, recorder, stats0, stats1, t_inject, t_cleared, proc.returncode)
    row["notes"] = dict(ctx.notes)
    if trace:
        row["trace"] = (recorder.times_ns, recorder.positions, t_inject)
        row["log"] = log
    row["controller_output_tail"] = output[-2000:]
    return row


def _sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) * 1e-9
    if delay > 0:
        time.sleep(delay)


def stop_bounds(robot: RobotDescription, period_s: float, servo_time_constant_s: float, servo_damping: float):
    """Per joint: the commanded stopping distance (the loop's controlled stop from any state the commanded
    trajectory can be in, at this tick period: robot_rt.control.loop.stopping_envelope), its longest duration (s),
    and how far the robot may travel after the stop latched: that distance plus twice the tracking-error reflex's
    threshold (tracking_error_factor x the servo's error bound, docs/safety.md): the robot may lag the commanded
    trajectory by up to the threshold when the stop begins (more would have tripped the reflex) and overshoot where
    it ends."""
    from robot_rt import _control
    from robot_rt.control.loop import servo_error_bound, stopping_envelope

    distance, duration = stopping_envelope(robot, dt_s=period_s)
    servo = servo_error_bound(robot, 1.0 / (2.0 * math.pi * servo_time_constant_s), servo_damping)
    threshold = _control.LoopConfig().tracking_error_factor * servo
    return distance, duration, distance + 2.0 * threshold


def _settled_at(t: np.ndarray, q: np.ndarray, from_ns: int, still_ns: int, tolerance: float) -> int | None:
    """The first sample time >= from_ns from which the robot stays within `tolerance` (every joint) of where it is
    for `still_ns`; None if it never does within the samples."""
    for i in np.flatnonzero(t >= from_ns):
        if t[-1] < t[i] + still_ns:
            return None  # not enough samples left to tell
        end = int(np.searchsorted(t, t[i] + still_ns, side="right"))
        if np.max(np.abs(q[i:end] - q[i])) <= tolerance:
            return int(t[i])
    return None


def _row(fault, cfg, robot, log, recorder, stats0, stats1, t_inject, t_cleared, returncode) -> dict:
    from robot_rt.control.udp import LINK_EVENT_NAMES

    names = {**LINK_EVENT_NAMES, **{v: k for k, v in log.event_names.items()}}
    ticks = log.ticks
    inject_tick = (
        int(ticks["tick"][min(np.searchsorted(ticks["wake_ns"], t_inject), len(ticks) - 1)]) if len(ticks) else 0
    )
    events = [(int(e["stamp_ns"]), int(e["tick"]), names.get(int(e["code"]), str(e["code"]))) for e in log.events]
    after = [e for e in events if e[1] >= inject_tick]
    # protective stops before the fault was injected: a stall of the machine (the fault then met a stopped loop and
    # the row says nothing about it)
    before = sorted({e[2] for e in events if e[1] < inject_tick and e[2] in stop_event_names([e[2]])})
    # the stop this fault ends in: the first protective stop after it (or, for the shutdown row, the end-of-run stop
    # it asked for); every run ends with the end-of-run stop, which is where "no motion after the stop" counts from
    # when there was no protective stop
    ends_by_shutdown = "shutdown_stop" in fault.stops
    stops = [e for e in after if e[2] in stop_event_names([e[2]]) or (e[2] == "shutdown_stop" and ends_by_shutdown)]
    stop = stops[0] if stops else None
    end_stop = next((e for e in after if e[2] == "shutdown_stop"), None)
    latch = stop if stop is not None else end_stop
    complete = next((e for e in after if e[2] == "stop_complete" and latch is not None and e[1] >= latch[1]), None)

    t, q = recorder.times_ns, recorder.positions
    q_inject = recorder.at(t_inject)
    during = t >= t_inject
    excursion = float(np.max(np.abs(q[during] - q_inject))) if np.any(during) else 0.0
    lo, hi = robot.position_min, robot.position_max
    soft_lo = np.asarray(log.meta.get("soft_min", lo), dtype=np.float64)
    soft_hi = np.asarray(log.meta.get("soft_max", hi), dtype=np.float64)
    past_soft = float(np.max(np.maximum(q - soft_hi, soft_lo - q))) if len(q) else 0.0
    period_s = 1.0 / float(log.meta.get("rate_hz", cfg.rate_hz))
    distance, duration, robot_bound = stop_bounds(robot, period_s, cfg.servo_time_constant_s, cfg.servo_damping)

    # after the stop latched: how far the robot and the commanded position travelled (the stop's own travel, against
    # the stopping distance), then from rest (+ the servo's settling) to the end of the observation, well after the
    # controller exited and the fault went away: no motion at all without a recovery
    travel = commanded_travel = moved_after_rest = commanded_after_rest = None
    settle_time = observed_after_rest = overshoot = None
    travel_ratio = commanded_travel_ratio = None
    if latch is not None:
        travel_j = np.max(np.abs(q[t >= latch[0]] - recorder.at(latch[0])), axis=0) if np.any(t >= latch[0]) else None
        if travel_j is not None:
            travel = float(np.max(travel_j))
            travel_ratio = float(np.max(travel_j / robot_bound))
        cmd_from = ticks["command_position"][ticks["tick"] >= latch[1] - 1]
        if len(cmd_from):
            commanded_j = np.max(np.abs(cmd_from - cmd_from[0]), axis=0)
            commanded_travel = float(np.max(commanded_j))
            commanded_travel_ratio = float(np.max(commanded_j / distance))
        # rest: from the commanded stop's end (stop_complete; else the stop's longest duration after the latch), the
        # first moment the robot has been still (within still_tolerance) for settle_s: its servo swung out the overshoot
        stop_end_ns = complete[0] if complete is not None else latch[0] + int(float(np.max(duration)) * 1e9)
        rest_ns = _settled_at(t, q, stop_end_ns, int(cfg.settle_s * 1e9), cfg.still_tolerance)
        if rest_ns is not None:
            window = t >= rest_ns
            moved_after_rest = float(np.max(np.abs(q[window] - q[window][0])))
            settle_time = (rest_ns - stop_end_ns) * 1e-9
            observed_after_rest = (int(t[-1]) - rest_ns) * 1e-9
        after_end = t >= stop_end_ns
        if complete is not None and np.any(after_end):
            cmd_final = ticks["command_position"][ticks["tick"] >= complete[1]]
            if len(cmd_final):
                overshoot = float(np.max(np.abs(q[after_end] - cmd_final[-1])))
        rest_tick = complete[1] if complete is not None else None
        if rest_tick is not None:
            cmd = ticks["command_position"][ticks["tick"] >= rest_tick]
            commanded_after_rest = float(np.max(np.abs(cmd - cmd[0]))) if len(cmd) else 0.0

    return {
        "fault": fault.name,
        "description": fault.description,
        "stop_expected": fault.stop_expected,
        "expected_stops": sorted(fault.stops, key=str),
        "expected_exit_codes": sorted(fault.exit_codes),
        "attack": fault.attack,
        "stop_reason": stop[2] if stop else None,
        "stop_events": sorted({e[2] for e in after if e[2] in stop_event_names([e[2]])}),
        "stop_events_before_fault": before,
        "ticks_to_stop": None if stop is None else stop[1] - inject_tick,
        "ticks_to_rest": None if complete is None or stop is None else complete[1] - inject_tick,
        "period_s": period_s,
        "excursion_max": excursion,
        "past_soft_limit": max(0.0, past_soft),
        "soft_limits": "soft_min" in log.meta,
        # the robot server clamps at its hard stops (a hit stops the joint there): the hits count what went too far,
        # and this is how close to a hard stop the robot came (0: it touched one)
        "hard_limit_margin_min": float(np.min(np.minimum(q - lo, hi - q))) if len(q) else None,
        "hard_stop_hits": int(stats1["hard_stops"] - stats0["hard_stops"]),
        # the stop the no-motion figures count from: the protective stop, else the end-of-run stop
        "latched_by": None if latch is None else latch[2],
        "travel_after_stop": travel,  # robot, largest joint, from the latch on
        "travel_after_stop_vs_bound": travel_ratio,  # largest joint's travel / (stopping distance + 2 threshold)
        "commanded_travel_after_stop": commanded_travel,
        "commanded_travel_vs_stopping_distance": commanded_travel_ratio,
        "moved_after_stop": moved_after_rest,  # robot, from rest (still for settle_s) to the end of the observation
        "commanded_after_stop": commanded_after_rest,  # commanded, from stop_complete to the end of the run
        # the robot moved again after the stop had brought it to rest, without anyone recovering it
        "resumed_without_recover": moved_after_rest is not None and moved_after_rest > cfg.rest_tolerance,
        "robot_settle_s": settle_time,  # from the commanded stop's end until the robot was still
        "observed_after_rest_s": observed_after_rest,
        # the robot past the commanded rest position after the commanded stop ended (its servo's overshoot)
        "overshoot_past_commanded_rest": overshoot,
        "exit_code": int(returncode),
        "events_after_fault": sorted({e[2] for e in after}),
        "fault_cleared_after_s": (t_cleared - t_inject) * 1e-9,
        "samples": int(len(t)),
        "robot_server": {k: stats1[k] - stats0[k] for k in ("commands_applied", "hellos_refused", "sessions")},
        "run_log_clean": bool(log.clean),
    }


def run_matrix(names=None, config: MatrixConfig | None = None, progress: Callable[[dict], None] | None = None):
    rows = []
    for fault in FAULTS:
        if names is None or fault.name in names:
            rows.append(run_fault(fault, config))
            if progress is not None:
                progress(rows[-1])
    return rows


# ------------------------------------------------------------------------------------------ controller process
def _controller_main(argv: list[str]) -> int:
    """`robot-rt run` itself (robot_rt.control.commands), registered alone so the controller process does not
    import the learning stack (torch) that `robot_rt.cli` registers too."""
    from robot_rt.control import commands

    parser = argparse.ArgumentParser(prog="robot-rt")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "controller":
        sys.exit(_controller_main(sys.argv[2:]))
    sys.exit("usage: python -m robot_rt.sim.faults controller run ... (the fault matrix's controller process)")
