"""A simulated ABB robot controller speaking EGM (docs/egm.md): the far end of `--robot egm://HOST:PORT` in the
tests and in `robot-rt sim-egm`.

Every EGM cycle (4 ms, 250 Hz) it sends an EgmRobot message (protobuf runtime, robot_rt/control/egm.proto) to the
sensor address, and reads the EgmSensor replies: the newest reference (planned joints, speedRef) is what the arm
follows, as EGM position guidance does: a first-order lag of `time_constant_s` towards the reference, capped at the
joints' velocity limits, with the axis ranges as hard stops. References outside the axis ranges are counted
(`stats()['references_out_of_limits']`: the loop's safety layer must keep it at 0) and clamped.

Fault injection for the tests: motors_off() (an emergency stop: the controller reports MOTORS_OFF and the arm
halts), motors_on(), rapid_stop(), drop_status(fields) (status fields left out), silence(seconds) (no messages),
restart() (new source port, the sequence starts again).
"""

from __future__ import annotations

import math
import socket
import threading
import time

import numpy as np

from robot_rt.control.egm_messages import egm_classes

EGM_CYCLE_S = 0.004  # 250 Hz, EGM's fastest cycle
# a sensor that sent nothing for this long and then counts from a lower sequence number was restarted (a new run);
# within a stream a driver answers every cycle, so a lower number sooner than this is an old datagram
SENSOR_RESTART_GAP_S = 0.02


class SimulatedEgmController:
    """The controller side of EGM for an arm of `len(position_min)` revolute joints (radians in, degrees on the wire).

    sensor: (host, port) of the EgmDriver. Thread-safe accessors; start()/stop() run the cycle thread."""

    def __init__(
        self,
        sensor: tuple[str, int],
        position_min,
        position_max,
        velocity_limit,
        initial_position=None,
        *,
        cycle_s: float = EGM_CYCLE_S,
        time_constant_s: float = 0.02,
        bind_host: str = "127.0.0.1",
        source_port: int = 0,
    ):
        self.position_min = np.asarray(position_min, dtype=np.float64)
        self.position_max = np.asarray(position_max, dtype=np.float64)
        self.velocity_limit = np.asarray(velocity_limit, dtype=np.float64)
        dof = self.position_min.size
        if (
            self.position_min.shape != (dof,)
            or self.position_max.shape != (dof,)
            or self.velocity_limit.shape != (dof,)
        ):
            raise ValueError("position_min, position_max, velocity_limit: expected 1-D arrays of one length")
        if not (np.all(self.position_min < self.position_max) and np.all(self.velocity_limit > 0)):
            raise ValueError("position_min < position_max and velocity_limit > 0 expected for every joint")
        if not cycle_s > 0 or not time_constant_s > 0:
            raise ValueError(f"cycle_s, time_constant_s: expected positive numbers, got {cycle_s}, {time_constant_s}")
        if not 0 <= int(source_port) < 65536:
            raise ValueError(
                f"source_port: expected 0..65535 (0: a new ephemeral port at each start), got {source_port}"
            )
        self.source_port = int(source_port)
        host, port = sensor
        if not 0 < int(port) < 65536:
            raise ValueError(f"sensor: expected a port 1..65535, got {port}")
        self.sensor = (str(host), int(port))
        self.dof = dof
        self.cycle_s = float(cycle_s)
        self.time_constant_s = float(time_constant_s)
        self.bind_host = bind_host
        start = np.zeros(dof) if initial_position is None else np.asarray(initial_position, dtype=np.float64)
        if start.shape != (dof,) or np.any(start < self.position_min) or np.any(start > self.position_max):
            raise ValueError("initial_position: expected one value per joint inside the axis ranges")
        classes = egm_classes()
        self._robot_cls, self._sensor_cls = classes["EgmRobot"], classes["EgmSensor"]
        self._lock = threading.Lock()
        self._q = start.copy()
        self._qd = np.zeros(dof)
        self._reference: np.ndarray | None = None
        self._seqno = 0
        self._motors_on = True
        self._rapid_running = True
        self._silent_until = 0.0
        self._dropped_status: set[str] = set()
        self._t0 = time.monotonic()
        self._stats = dict(
            cycles=0,
            robot_messages=0,
            sensor_messages=0,
            sensor_malformed=0,
            sensor_stale=0,
            sensor_restarts=0,
            references_out_of_limits=0,
            references_while_stopped=0,
            max_reference_excess_rad=0.0,
            restarts=0,
        )
        self._last_sensor_seqno: int | None = None
        self._last_sensor_s = 0.0  # time.monotonic() of the last sensor message taken
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------------------------------ lifecycle
    def _open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.bind_host, self.source_port))
        sock.setblocking(False)
        self._sock = sock

    def start(self) -> SimulatedEgmController:
        if self._thread is not None:
            return self
        self._open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-egm-controller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------------------------------ faults
    def motors_off(self) -> None:
        """An emergency / protective stop: MOTORS_OFF, the arm halts where it is and ignores references. As on an ABB
        controller, the stop also halts the RAPID program (RAPID_STOPPED, so the controller keeps reporting the stop
        after motors_on(), however short the MOTORS_OFF was or whatever of it the network lost) and ends the EGM
        motion: the reference it had is dropped. Only rapid_start() (the operator restarts the program) lets the arm
        follow references again, and then only those that arrive after it."""
        with self._lock:
            self._motors_on = False
            self._rapid_running = False
            self._qd[:] = 0.0
            self._reference = None

    def motors_on(self) -> None:
        """The operator switches the motors on again (after the stop's cause was cleared)."""
        with self._lock:
            self._motors_on = True

    def rapid_start(self) -> None:
        """The operator restarts the RAPID program (EGM motion starts again, without a reference until one arrives)."""
        with self._lock:
            self._rapid_running = True
            self._reference = None

    def rapid_stop(self) -> None:
        """The RAPID program stops (EGM ends): RAPID_STOPPED, MCI_STOPPED; the arm halts, its reference dropped."""
        with self._lock:
            self._rapid_running = False
            self._qd[:] = 0.0
            self._reference = None

    def drop_status(self, fields=("mciState",)) -> None:
        """The controller stops reporting these status fields (motorState, mciState, rapidExecState)."""
        with self._lock:
            self._dropped_status = set(fields)

    def silence(self, seconds: float) -> None:
        """Sends nothing for `seconds` (a network dropout)."""
        with self._lock:
            self._silent_until = time.monotonic() + float(seconds)

    def restart(self) -> None:
        """A controller restart: the sequence numbers start again, from a new source port (the same one when
        `source_port` fixes it)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
            self._open()
            self._seqno = 0
            self._stats["restarts"] += 1

    # ------------------------------------------------------------------------------------------ state
    @property
    def position(self) -> np.ndarray:
        with self._lock:
            return self._q.copy()

    @property
    def reference(self) -> np.ndarray | None:
        with self._lock:
            return None if self._reference is None else self._reference.copy()

    @property
    def local_port(self) -> int:
        return self._sock.getsockname()[1] if self._sock is not None else 0

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats, motors_on=self._motors_on, rapid_running=self._rapid_running)

    # ------------------------------------------------------------------------------------------ the cycle
    def _receive(self) -> None:
        while True:
            try:
                data, _ = self._sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            message = self._sensor_cls()
            try:
                message.ParseFromString(data)
            except Exception:  # protobuf's DecodeError and friends: a malformed datagram
                self._stats["sensor_malformed"] += 1
                continue
            self._stats["sensor_messages"] += 1
            seqno = message.header.seqno if message.header.HasField("seqno") else None
            now = time.monotonic()
            if seqno is not None and self._last_sensor_seqno is not None and seqno <= self._last_sensor_seqno:
                # An old reply arrives within a stream (reordered, duplicated); a step back after the sensor was
                # quiet, or a large one, is a sensor restart (a new run's driver counts from 1 again). Taken as stale,
                # a new run's references were ignored for as long as the run before it had lasted (up to 4 s).
                quiet = now - self._last_sensor_s > SENSOR_RESTART_GAP_S
                if not quiet and self._last_sensor_seqno - seqno < 1000:
                    self._stats["sensor_stale"] += 1
                    continue
                self._stats["sensor_restarts"] += 1
            self._last_sensor_seqno = seqno
            self._last_sensor_s = now
            joints = list(message.planned.joints.joints)
            if len(joints) != self.dof or not all(math.isfinite(j) for j in joints):
                self._stats["sensor_malformed"] += 1
                continue
            reference = np.radians(joints)
            excess = float(np.max(np.maximum(self.position_min - reference, reference - self.position_max)))
            if excess > 1e-9:
                self._stats["references_out_of_limits"] += 1
                self._stats["max_reference_excess_rad"] = max(self._stats["max_reference_excess_rad"], excess)
            if not (self._motors_on and self._rapid_running):
                self._stats["references_while_stopped"] += 1  # no EGM motion runs: nothing to follow later
                continue
            self._reference = np.clip(reference, self.position_min, self.position_max)

    def _move(self, dt: float) -> None:
        if dt <= 0.0:  # no time passed since the last cycle's stamp: no motion either
            return
        if not (self._motors_on and self._rapid_running) or self._reference is None:
            self._qd[:] = 0.0
            return
        velocity = np.clip(
            (self._reference - self._q) / self.time_constant_s, -self.velocity_limit, self.velocity_limit
        )
        q = np.clip(self._q + velocity * dt, self.position_min, self.position_max)
        self._qd = (q - self._q) / dt
        self._q = q

    def _message(self, now: float) -> bytes:
        m = self._robot_cls()
        self._seqno += 1
        m.header.seqno = self._seqno
        m.header.tm = int((now - self._t0) * 1000) & 0xFFFFFFFF
        m.header.mtype = 2  # MSGTYPE_DATA
        degrees = np.degrees(self._q).tolist()
        m.feedBack.joints.joints.extend(degrees)
        m.feedBack.time.sec = int(now)
        m.feedBack.time.usec = int((now - int(now)) * 1e6)
        m.planned.joints.joints.extend(degrees)
        m.motorState.state = 1 if self._motors_on else 2  # MOTORS_ON / MOTORS_OFF
        m.mciState.state = 3 if self._rapid_running else 2  # MCI_RUNNING / MCI_STOPPED
        m.rapidExecState.state = 2 if self._rapid_running else 1  # RAPID_RUNNING / RAPID_STOPPED
        m.mciConvergenceMet = self._reference is not None and bool(np.all(np.abs(self._reference - self._q) < 1e-3))
        m.utilizationRate = 0.0
        for name in self._dropped_status:
            m.ClearField(name)
        return m.SerializeToString()

    def _cycle(self, dt: float, at: float) -> None:
        """One EGM cycle: the arm moved for `dt` up to the time `at` (time.monotonic()), the time its feedback is
        stamped with, as a controller stamps a measurement with the time it was taken. (Stamped when sent, after a
        lock or a busy interpreter had delayed it, two feedbacks a few ms apart in motion could be stamped 1 ms
        apart, and the driver's velocity from them read 4x the arm's: a spurious measurement_invalid stop.)"""
        with self._lock:
            self._receive()
            self._move(dt)
            self._stats["cycles"] += 1
            if time.monotonic() < self._silent_until:
                return
            data = self._message(at)
            try:
                self._sock.sendto(data, self.sensor)
                self._stats["robot_messages"] += 1
            except OSError:
                pass  # the sensor is not there (yet): EGM keeps sending

    def _run(self) -> None:
        next_t = time.monotonic()
        last = next_t
        while not self._stop.is_set():
            now = time.monotonic()
            # the motion spans exactly the time between the stamps (a 1e-4 s floor would read as 1e-4 / gap times
            # the arm's speed over gaps under 100 us), or less after a stall of over 50 ms (read slower, never faster)
            self._cycle(min(now - last, 0.05), now)
            last = now
            next_t += self.cycle_s
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_t = time.monotonic()  # late (a loaded machine): no burst of catch-up cycles


def gantry_description(robot, arm_joints: int = 6):
    """The gantry part of `robot` (its first dof - arm_joints joints), for a simulated gantry server."""
    import dataclasses

    n = robot.dof - arm_joints
    if n < 1:
        raise ValueError(
            f"arm_joints: the robot has {robot.dof} joints, no gantry is left with {arm_joints} arm joints"
        )
    return dataclasses.replace(robot, joints=robot.joints[:n], home=robot.home[:n], name=f"{robot.name}_gantry")


def serve_egm(args) -> int:
    """Entry point of `robot-rt sim-egm`: a simulated EGM controller for the arm (sending to --sensor) and a
    simulated gantry server on --gantry-port (the project's UDP protocol), until SIGINT/SIGTERM or --duration."""
    import json
    import signal
    import sys

    from robot_rt.control.egm import parse_egm_url
    from robot_rt.robot import geometry_digest, load_robot

    from .server import SimServer

    robot = load_robot(args.robot_file)
    try:
        target = parse_egm_url(f"egm://{args.sensor}")
        arm = slice(robot.dof - target.joints, robot.dof)
        controller = SimulatedEgmController(
            (target.bind_host, target.port),
            robot.position_min[arm],
            robot.position_max[arm],
            robot.velocity_limit[arm],
            robot.home[arm],
            source_port=args.source_port,
        )
        gantry = None
        if robot.dof > target.joints:
            gantry = SimServer(
                gantry_description(robot, target.joints),
                host=args.host,
                port=args.gantry_port,
                camera=False,
                geometry_digest=geometry_digest(robot),  # the whole robot's: the arm rides on this gantry
            )
    except (ValueError, OSError) as err:
        print(f"sim-egm: {err}", file=sys.stderr)
        return 2
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        controller.start()
    except OSError as err:
        print(f"sim-egm: --source-port {args.source_port}: {err}", file=sys.stderr)
        return 2
    if gantry is not None:
        gantry.start()
    print(
        json.dumps(
            {
                "event": "running",
                "egm_sensor": f"{target.bind_host}:{target.port}",
                "controller": f"{controller.bind_host}:{controller.local_port}",
                "gantry_port": gantry.port if gantry is not None else None,
                "arm_joints": target.joints,
            }
        ),
        flush=True,
    )
    try:
        done.wait(args.duration)
    finally:
        controller.stop()
        if gantry is not None:
            gantry.stop()
    print(json.dumps({"event": "stopped", "controller": controller.stats()}), flush=True)
    return 0
