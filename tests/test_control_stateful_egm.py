"""Stateful property-based fuzzing of the EGM / composite control path (hypothesis `RuleBasedStateMachine`): the
twelfth audit's counterpart of tests/test_control_stateful.py, which covers the UDP robot only.

A `RealTimeLoop` drives the shipped 8-joint robot as one `CompositeDriver`: the gantry (2 joints) over the project's
UDP protocol to a `SimServer` through a fault-injecting `FaultProxy`, and the arm (6 joints) over EGM to a
`SimulatedEgmController` whose socket is wrapped so that every datagram it receives is recorded and every datagram
it sends can be dropped, duplicated, reordered, corrupted, truncated or replaced by an older one (a stale replay).

The rules are what a user or the world can do: policy targets (in range, at the soft or hard edge, beyond the
limits, NaN, inf, huge, far jumps; silence), the software e-stop, `reset_estop`, `recover()` with the counts read now
or earlier (maybe stale), controller stops (motors off, RAPID stopped, a controller restart, a silent stream, a status
left out) and their clearing (motors on, RAPID restarted), EGM stream faults, gantry link faults, a second EGM sender,
stop / start, a new loop on the same driver, a new run (new drivers on the same EGM port), sleeping, and (since
the thirteenth audit) `move`: a reachable target with time to move towards it, so that the checks on what the robot
received see a robot in motion.

Everything asserted is read on the robot side, not from the loop's beliefs:

* every EGM reference the controller received (decoded from its socket) is well-formed, finite, inside the arm's
  joint range, with |speedRef| <= V and a planned step between consecutive replies of one driver session of at most
  V (dt + 3 ms) (a hold where the arm is excepted; and a step that a send up to LATE_SEND_S late explains, within
  V (dt + 3 ms + LATE_SEND_S) and consistent with both speedRefs under |a| <= A); the controller counts no
  reference outside its axis ranges;
* every gantry command the gantry server was sent (decoded from the proxy's capture) is inside the gantry's range,
  |v| <= V, and steps at most V (dt + 3 ms) within one session (a late send excepted as above); the server counts
  no command outside its limits;
* from any stop (a harness action that stops the robot or the loop, or a stop the loop latched by itself), until a
  successful recover() / reset_estop() whose caller read the counts after that stop (or a start after a run that
  ended cleanly), the whole robot (arm and gantry, sampled from the simulators) comes to rest within 3 s and then
  moves no more than 1e-3;
* a second EGM sender is never answered (nothing is sent to it);
* (the thirteenth audit) the acceleration limit on what the robot received: consecutive EGM references of one driver
  session (planned + speedRef, header.tm) and gantry commands of one session (position + velocity, stamp) are
  samples of one trajectory with |a| <= A (`acceleration_excess`: |dv| <= A tau, |dp - v tau| <= A tau^2 / 2 and
  the second difference <= A, for some whole number of loop periods tau that the stamps allow, x1.05); an excess
  into a hold (or a restart at rest where the arm is) is exempt;
* the paddle's blade, at each EGM reference with the gantry command of the same tick (else the gantry's latest),
  is inside the workspace box (+ 1 mm);
* from a stop, the robot is at rest within the loop's stop_time_bound_s and has travelled at most the stopping
  envelope's distance (each widened by what runs before the stop begins and by the servo's lag: STOP_LEAD_S,
  SERVO_SETTLE_S).

Sized for CI (derandomize, a few examples); `FUZZ_EXAMPLES` / `FUZZ_STEPS` scale it, and `FUZZ_RECORD=path.jsonl`
records violations there instead of failing (a long hunt). FUZZ_ACCEL_CHECK=0, FUZZ_WORKSPACE_CHECK=0 and
FUZZ_STOP_CHECK=0 turn the thirteenth audit's checks off (to look past a finding of theirs). FUZZ_DERANDOMIZE=0 and
pytest's `--hypothesis-seed=N` draw other examples than CI's fixed ones (a hunt's seed names its examples).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import socket
import struct
import threading
import time

import numpy as np
import pytest
from helpers.fuzz import fuzz_settings, write_fuzz_totals
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from test_control_stateful import TARGET_KINDS, make_target

from robot_rt.control.egm import make_egm_robot_driver
from robot_rt.control.egm_messages import egm_classes
from robot_rt.control.loop import SAFETY_REASONS, RealTimeLoop, stopping_envelope
from robot_rt.control.udp import make_udp_driver
from robot_rt.robot import geometry_digest, load_robot, paddle_blade_bounds
from robot_rt.sim.egm_controller import SimulatedEgmController, gantry_description
from robot_rt.sim.server import SimServer
from robot_rt.sim.udp_proxy import FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:WARNING. UNAUTHENTICATED robot link")]

ROBOT = load_robot()
DOF = ROBOT.dof
ARM = slice(2, 8)
GANTRY = slice(0, 2)
CLASSES = egm_classes()
EgmRobot, EgmSensor = CLASSES["EgmRobot"], CLASSES["EgmSensor"]
RATE_HZ = 500.0
POLICY_HZ = 100.0
COMMAND_TIMEOUT_S = 0.2
SENSOR_TIMEOUT_S = 0.06
STILL_RANGE = 2e-4
STILL_WINDOW_S = 0.1
# a window of samples is a rest only when the simulated arm cycled through it: a cycle thread that the machine left
# unscheduled for longer than this holds the arm still (a stall), and it then runs on towards its reference
STALL_GAP_NS = 20_000_000
MOVED_LIMIT = 1e-3
SETTLE_TIMEOUT_S = 3.0
STEP_SLACK_S = 0.003
MONITOR_LEAD_NS = 5_000_000  # a stop the monitor saw began up to this long before
# Finding 1 of the twelfth audit: a glitched or corrupted EGM feedback moved a muted arm (the driver's hold replies
# followed the latest feedback): the hold is now anchored at the loop's last state that passed its measurement and
# tracking checks (test_a_feedback_glitch_does_not_move_a_muted_arm). Finding 1b: a start (or a recovery) during a
# glitch took the glitched state as where the arm is (0.3 rad, 2 of 60 examples): both now wait until the measured
# position held still for the loop's steady_window_s (the tests after the state machine). The glitch and corruption
# rules run by default since; FUZZ_EGM_GLITCHES=0 turns them off (to look past a new finding of that kind).
GLITCH_RULES = os.environ.get("FUZZ_EGM_GLITCHES", "1") != "0"
RECORD_STEPS = int(os.environ.get("FUZZ_RECORD_STEPS", "40"))  # the last steps of an example kept with a violation
# The thirteenth audit's checks on what the robot received: the acceleration bound (every reference is a sample of the
# loop's commanded trajectory, whose steps are exact integrations of a bounded jerk with |a| <= A, stop.hpp) and the
# workspace box (the loop keeps the commanded blade inside it; the workspace stop is its last line)
PERIOD_S = 1.0 / RATE_HZ
ACCEL_SLACK = 1.05  # rounding (positions in degrees on the EGM wire) and the clamp of fill_command (nm)
ACCEL_TIMING_S = 0.003  # a stamp is the send time: the tick's trajectory time +-period/2, + compute, + 1 ms truncation
# ... and a tick can be preempted between its wake (the trajectory time it commands) and the send that stamps it: 3-5
# ms seen on this 2-vCPU machine under a CI run (two EGM references 0 ms apart 14 mrad apart; a gantry command
# stamped 5.1 ms after the one before, one period of trajectory apart). The robot gets a sample of the trajectory
# late, not a different one: the check allows each stamp this much lateness (and counts the intervals that only it
# explains: *_acceleration_late_send_only)
LATE_SEND_S = float(os.environ.get("FUZZ_LATE_SEND_S", "0.006"))
CATCH_UP_S = 0.02  # ControlLoop::kMaxCatchUpS: a stall beyond it is not replayed (the trajectory falls behind)
WORKSPACE_TOL_M = 1e-3
WORKSPACE_PAIR_S = 0.003  # an EGM reference's gantry partner: a gantry command sent within this of it (same tick)
ACCEL_CHECK = os.environ.get("FUZZ_ACCEL_CHECK", "1") != "0"
WORKSPACE_CHECK = os.environ.get("FUZZ_WORKSPACE_CHECK", "1") != "0"
# the stop itself (docs/safety.md, "The controlled stop"): from a stop the robot is at rest within the loop's
# stop_time_bound_s and has travelled at most stopping_envelope's distance, each widened by what may run before the
# stop begins (STOP_LEAD_S: a part muted at once runs on its last command until its own command timeout, 0.1 s for
# the gantry server, the sensor timeout is 60 ms, the monitor dates a stop up to 5 ms early) and by the servo's lag
# behind its command (SERVO_SETTLE_S, the EGM arm's 20 ms first-order lag to within STILL_RANGE: ~6 time constants)
STOP_CHECK = os.environ.get("FUZZ_STOP_CHECK", "1") != "0"
# the `move` rule (FUZZ_MOVE=0: off, the examples of before it, ~10 s less at the CI size)
MOVE_RULE = os.environ.get("FUZZ_MOVE", "1") != "0"
STOP_LEAD_S = 0.2
SERVO_SETTLE_S = 0.3
STOP_DISTANCE = stopping_envelope(ROBOT, dt_s=1.0 / RATE_HZ)[0] + ROBOT.velocity_limit * STOP_LEAD_S


def _stop_each(things) -> None:
    """stop() on each, whatever the others do (teardown: one that fails must not leave the rest running)."""
    for thing in things:
        try:
            thing.stop()
        except Exception:  # noqa: BLE001
            pass


def _free_udp_port(avoid: tuple[int, ...] = ()) -> int:
    """A free UDP port below Linux's ephemeral range (32768-60999), so that none of the sockets the harness opens
    later (ephemeral ports) can take it between runs of one example (a new run binds it again). `avoid`: ports
    already picked and not bound yet (the same port twice once failed a hunt's setup: 'Address already in use')."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port in 20000..32000")


# ------------------------------------------------------------------------------------------ the controller side
class _RecordingSocket:
    """The simulated controller's socket: records what it receives, applies the stream faults to what it sends."""

    def __init__(self, sock, owner):
        self._sock = sock
        self._owner = owner

    def recvfrom(self, n):
        data, addr = self._sock.recvfrom(n)
        self._owner.rx.append((time.monotonic_ns(), data))
        return data, addr

    def sendto(self, data, addr):
        o = self._owner
        now = time.monotonic_ns()
        o.sent_feedback.append((now, data))
        o.feedback_log.append((now, data))
        f, r = o.faults, o.rng
        if not f:
            return self._sock.sendto(data, addr)
        if r.random() < f.get("stale", 0.0) and len(o.sent_feedback) > 40:
            old = o.sent_feedback[r.randrange(0, len(o.sent_feedback) - 30)][1]
            o.injected["stale"] += 1
            o.feedback_log.append((now, old))  # (a hold may be anchored at it: logged when it was sent again)
            self._sock.sendto(old, addr)
        if r.random() < f.get("drop", 0.0):
            o.injected["drop"] += 1
            return len(data)
        if r.random() < f.get("corrupt", 0.0):
            b = bytearray(data)
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
            data = bytes(b)
            o.injected["corrupt"] += 1
            o.feedback_log.append((now, data))  # (a bit flip that still parses can be plausible: an anchor too)
        if r.random() < f.get("truncate", 0.0) and len(data) > 1:
            data = data[: r.randrange(1, len(data))]
            o.injected["truncate"] += 1
        copies = 2 if r.random() < f.get("duplicate", 0.0) else 1
        if o.held is None and r.random() < f.get("reorder", 0.0):
            o.held = (data, copies)
            o.injected["reorder"] += 1
            return len(data)
        for _ in range(copies):
            self._sock.sendto(data, addr)
        if o.held is not None:
            held, n = o.held
            o.held = None
            for _ in range(n):
                self._sock.sendto(held, addr)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class RecordingController(SimulatedEgmController):
    def __init__(self, *a, **kw):
        self.rx: list[tuple[int, bytes]] = []
        self.sent_feedback: collections.deque = collections.deque(maxlen=400)
        # every feedback sent, as sent (corrupted, or a stale one sent again): the hold check looks for the one a hold
        # is at (sent_feedback keeps only the last 1.6 s and took the holds of a longer example for steps, a harness
        # false positive of the thirteenth audit)
        self.feedback_log: list[tuple[int, bytes]] = []
        self.faults: dict = {}
        self.rng = random.Random(0)
        self.held = None
        self.injected = collections.Counter()
        self.glitch = None  # (until monotonic_ns, offset rad): the feedback reports the arm off by offset
        # (offset rad, glitched, every): of each `every` feedback messages in a row, the first `glitched` report the arm
        # off by offset. Counted in messages, not in time, so that no stall of any thread makes a clean stretch longer
        self.flicker = None
        self._flicker_count = 0
        # when each cycle ran (the simulated arm moves only in its cycles: a thread the machine did not run for a while
        # holds the arm still, which is no rest)
        self.cycles: list[int] = []
        super().__init__(*a, **kw)

    def _cycle(self, dt, at):
        self.cycles.append(time.monotonic_ns())
        super()._cycle(dt, at)

    def _message(self, now):
        g, f = self.glitch, self.flicker
        offset = g[1] if g is not None and time.monotonic_ns() < g[0] else None
        if f is not None:
            self._flicker_count += 1
            if self._flicker_count % f[2] < f[1]:
                offset = f[0]
        if offset is None:
            return super()._message(now)
        q = self._q
        self._q = q + offset  # (the lock is held: _cycle)
        try:
            return super()._message(now)
        finally:
            self._q = q

    def _open(self):
        super()._open()
        self._sock = _RecordingSocket(self._sock, self)


def _on_segment_from(starts: np.ndarray, end, point, tol=1e-6) -> bool:
    """`point` lies on the segment from one of `starts` (rows) to `end` (None: is one of `starts`), within `tol`."""
    if len(starts) == 0:
        return False
    if end is None:
        return bool(np.any(np.all(np.abs(starts - point) <= tol, axis=1)))
    with np.errstate(all="ignore"):  # (corrupted feedback: absurd values, no segment from them)
        d = end - starts
        length2 = np.sum(d * d, axis=1)
        s = np.clip(np.sum((point - starts) * d, axis=1) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)
        return bool(np.any(np.all(np.abs(starts + s[:, None] * d - point) <= tol, axis=1)))


def decode_gantry_command(data: bytes):
    """(session id, stamp_ns, position, velocity) of a 2-joint joint_command datagram, else None."""
    if len(data) < 40 or data[:4] != b"RRTP" or data[5] != 4:
        return None
    session, payload_len = struct.unpack_from("<IH", data, 8)
    (stamp,) = struct.unpack_from("<Q", data, 24)
    dof, _mode, _ack = struct.unpack_from("<HHI", data, 32)
    if dof != 2 or payload_len != 8 + 16 * dof:
        return None
    values = struct.unpack_from(f"<{2 * dof}d", data, 40)
    return session, stamp, np.array(values[:dof]), np.array(values[dof:])


def _step_counts(dt_s: float, timing_s: float) -> np.ndarray:
    """The numbers of trajectory steps (periods) two references whose stamps are dt_s apart can be apart: the loop's
    trajectory clock advances by whole periods, the stamps are within timing_s of it (a gap beyond the catch-up
    bound may have advanced it by as little as one period)."""
    hi = max(1, int(np.floor((dt_s + timing_s) / PERIOD_S + 1e-9)))
    lo = 1 if dt_s > CATCH_UP_S else max(1, int(np.ceil((dt_s - timing_s) / PERIOD_S - 1e-9)))
    return np.arange(lo, max(lo, hi) + 1)


def _pair_ratio(p1, v1, p2, v2, dt_s, a, timing_s):
    """For each step count n two references can be apart (`_step_counts`), the largest over joints (and over the
    three conditions) of (what |a| <= A allows) / A: a trajectory with |a| <= A over tau = n periods has
    |v2 - v1| <= A tau, |p2 - p1 - v1 tau| <= A tau^2 / 2 and |p2 - p1 - v2 tau| <= A tau^2 / 2. [len(n)]"""
    n = _step_counts(dt_s, timing_s)
    tau = n[:, None] * PERIOD_S
    dp, half = (p2 - p1)[None, :], a[None, :] * tau * tau / 2.0
    r = np.maximum.reduce(
        [
            np.abs(v2 - v1)[None, :] / (a[None, :] * tau),
            np.abs(dp - v1[None, :] * tau) / half,
            np.abs(dp - v2[None, :] * tau) / half,
        ]
    )
    return n, r.max(axis=1), r.argmax(axis=1)


def _late_send_explains(p1, v1, p2, v2, dt_s, v, a) -> bool:
    """A step above V (dt + STEP_SLACK_S) that a late send explains (LATE_SEND_S: the earlier reference was stamped
    late, its trajectory time is earlier): within V (dt + STEP_SLACK_S + LATE_SEND_S), and consistent with both
    commanded velocities under |a| <= A for some whole number of periods the stamps then allow. Counted."""
    if np.any(np.abs(p2 - p1) > v * (dt_s + STEP_SLACK_S + LATE_SEND_S) * 1.05 + 1e-9):
        return False
    _n, r, _j = _pair_ratio(p1, v1, p2, v2, dt_s, a, ACCEL_TIMING_S + LATE_SEND_S)
    if float(r.min()) > ACCEL_SLACK:
        return False
    _TOTALS["step_explained_by_late_send"] += 1
    return True


def acceleration_excess(refs, a, timing_s=ACCEL_TIMING_S + LATE_SEND_S):
    """The references one driver session sent, in order, as (stamp_s, position, velocity) (no restart between
    them; the caller exempts an excess into a hold): each is a sample of the loop's commanded trajectory at a whole number of periods, whose
    steps integrate a piecewise constant jerk exactly (stop.hpp `integrate`), so |a| <= A holds between samples too.
    For each interval (and each three in a row: the second difference) the smallest ratio to A over the step counts
    the stamps allow (`_step_counts`); a ratio above 1 (ACCEL_SLACK) is an acceleration that no timing of the
    references explains. Yields (index of the last reference, ratio, joint, what)."""
    prev = None  # (n, ratio per n) of the interval before
    for k in range(1, len(refs)):
        (t1, p1, v1), (t2, p2, v2) = refs[k - 1], refs[k]
        n2, r2, j2 = _pair_ratio(p1, v1, p2, v2, t2 - t1, a, timing_s)
        best_pair = float(r2.min())
        if best_pair > ACCEL_SLACK:
            yield k, best_pair, int(j2[int(r2.argmin())]), "pair"
        if prev is not None and best_pair <= ACCEL_SLACK:
            n1, r1, p0 = prev
            tau1, tau2 = n1[:, None, None] * PERIOD_S, n2[None, :, None] * PERIOD_S
            dd = np.abs((p2 - p1)[None, None, :] / tau2 - (p1 - p0)[None, None, :] / tau1)
            dd = dd / (a[None, None, :] * (tau1 + tau2) / 2.0)
            total = np.maximum(dd.max(axis=2), np.maximum(r1[:, None], r2[None, :]))
            best = float(total.min())
            if best > ACCEL_SLACK:
                i1, i2 = np.unravel_index(int(total.argmin()), total.shape)
                yield k, best, int(dd[i1, i2].argmax()), "second_difference"
        prev = (n2, r2, p1) if best_pair <= ACCEL_SLACK else None  # (no second difference across an excess)


def decode_gantry_state(data: bytes):
    """The positions of a 2-joint joint_state datagram (what the gantry reported), else None."""
    if len(data) < 96 or data[:4] != b"RRTP" or data[5] != 3:
        return None
    (dof,) = struct.unpack_from("<H", data, 32)
    if dof != 2:
        return None
    return np.array(struct.unpack_from("<2d", data, 64))


class Policy:
    def __init__(self):
        self.mode = "target"
        self.target = ROBOT.home.copy()

    def reset(self):
        pass

    def __call__(self, obs):
        return None if self.mode == "silent" else self.target


class Sampler:
    """Samples the arm (the simulated controller) and the gantry (the sim server) every ~2 ms."""

    def __init__(self, machine):
        self.m = machine
        self.samples: list[tuple[int, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="egm-fuzz-sampler", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            m = self.m
            q = np.empty(DOF)
            q[ARM] = m.controller.position
            q[GANTRY] = m.gantry_server.robot_server.snapshot()["position"]
            self.samples.append((time.monotonic_ns(), q))
            # a stop the loop latched by itself (the loop's belief only dates the stop; the check is the robot's)
            loop = m.loop
            try:
                life = loop.lifecycle if loop.running else "idle"
            except Exception:  # noqa: BLE001
                life = "idle"
            if life in ("stopped", "stopping") and m.monitor_seen.get(id(loop)) not in ("stopped", "stopping"):
                m.latch(time.monotonic_ns() - MONITOR_LEAD_NS, f"loop {life} {loop.stop_reasons}")
            m.monitor_seen[id(loop)] = life
            time.sleep(0.002)

    def stop(self):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------ the machine
class EgmMachine(RuleBasedStateMachine):
    record_path = os.environ.get("FUZZ_RECORD")

    @initialize(velocity_tracking=st.booleans(), pin_port=st.booleans())
    def setup(self, velocity_tracking, pin_port):
        self.loop_options = {"velocity_tracking": velocity_tracking}
        self.steps: list[str] = [f"setup {self.loop_options} pin_port={pin_port}"]
        # the controller's source port pinned (egm://...?controller=127.0.0.1:PORT): a second sender is then never
        # answered, during the controller's silences and restarts too (the twelfth audit's finding 2)
        self.pinned_source_port = _free_udp_port() if pin_port else 0
        self.violations: list[dict] = []
        self.stats = collections.Counter()
        self.latches: list[dict] = []
        self.latch_lock = threading.Lock()
        self.monitor_seen: dict = {}
        self.read = None
        self.clean_end = True
        self.restart_at = 0.0
        self.egm_port = _free_udp_port(avoid=(self.pinned_source_port,))
        self.gantry_server = SimServer(
            gantry_description(ROBOT), camera=False, geometry_digest=geometry_digest(ROBOT)
        ).start()
        self.proxy = FaultProxy(("127.0.0.1", self.gantry_server.port), record=True).start()
        self.controller = RecordingController(
            ("127.0.0.1", self.egm_port),
            ROBOT.position_min[ARM],
            ROBOT.position_max[ARM],
            ROBOT.velocity_limit[ARM],
            ROBOT.home[ARM],
            source_port=self.pinned_source_port,
        ).start()
        self.stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.stranger.bind(("127.0.0.1", 0))
        self.stranger.setblocking(False)
        self.policy = Policy()
        self.loops: list[RealTimeLoop] = []
        self.drivers: list = []
        self.driver = self._new_driver()
        self.loop = self._new_loop()
        self.stop_time_bound_s = self.loop.stop_time_bound_s
        self.driver.start()  # (after the loop set the gantry's limits digest, as tests/test_egm.py does)
        self.sampler = Sampler(self)
        self._start()

    def teardown(self):
        if not hasattr(self, "sampler"):
            return
        try:
            time.sleep(0.5)  # late motion
            self.check()
        finally:
            _stop_each(self.loops)
            self.sampler.stop()
            _stop_each(self.drivers)
            self.controller.stop()
            self.proxy.stop()
            self.gantry_server.stop()
            self.stranger.close()
        if self.violations and not self.record_path:
            raise AssertionError(json.dumps(self.violations[:5], default=str, indent=1))

    # ---------------------------------------------------------------- helpers
    def _new_driver(self):
        gantry = make_udp_driver(f"udp://127.0.0.1:{self.proxy.port}?camera=none", 2)
        pin = f"?controller=127.0.0.1:{self.pinned_source_port}" if self.pinned_source_port else ""
        driver = make_egm_robot_driver(f"egm://127.0.0.1:{self.egm_port}{pin}", ROBOT, gantry=gantry)
        self.drivers.append(driver)
        return driver

    def _new_loop(self):
        loop = RealTimeLoop(
            ROBOT,
            self.driver,
            policy=self.policy,
            rate_hz=RATE_HZ,
            policy_rate_hz=POLICY_HZ,
            command_timeout_s=COMMAND_TIMEOUT_S,
            sensor_timeout_s=SENSOR_TIMEOUT_S,
            **self.loop_options,
        )
        self.loops.append(loop)
        return loop

    def _log(self, text):
        self.steps.append(f"{time.monotonic():.3f} {text}")

    def violation(self, kind, **details):
        record = {"kind": kind, **details, "steps": list(self.steps[-RECORD_STEPS:])}
        self.violations.append(record)
        if self.record_path:
            with open(self.record_path, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")

    def latch(self, t0, why):
        with self.latch_lock:
            self.latches.append({"t0": int(t0), "why": why, "cleared": None})
        self.steps.append(f"{t0 * 1e-9:.3f} latch: {why}")

    def _clear(self, read_ns, t_call, why):
        with self.latch_lock:
            for lt in self.latches:
                if lt["cleared"] is None and lt["t0"] < read_ns:
                    lt["cleared"] = t_call
        self._log(f"cleared latches before {read_ns * 1e-9:.3f} ({why})")

    def _start(self):
        t = time.monotonic_ns()
        try:
            self.loop.start()
        except RuntimeError as err:
            self._log(f"start refused: {err}")
            self.stats["start_refused"] += 1
            return
        if self.clean_end:
            self._clear(t, t, "start after a clean end")
        self._log("start ok")

    def _stop_loop(self):
        if not self.loop.running:
            return
        with self.latch_lock:
            open_latches = any(lt["cleared"] is None for lt in self.latches)
        # (a loop that never got a target is "inactive": it ends as cleanly as an active one, and the next run may
        # move; counted unclean, it made a harness false positive, 2 in 200 examples)
        clean = self.loop.lifecycle in ("active", "inactive") and not open_latches
        t = time.monotonic_ns()
        self.latch(t, "stop()")
        self.loop.stop()
        self.clean_end = clean
        self._log(f"stop() clean={clean}")

    # ---------------------------------------------------------------- rules: lifecycle
    @rule()
    def start(self):
        if self.loop.running:
            return
        self._start()

    @rule()
    def stop(self):
        self._stop_loop()

    @rule(new_run=st.booleans())
    def replace_loop(self, new_run):
        """A new loop on the same driver, or a new run (new drivers on the same EGM port, as `robot-rt run` is)."""
        self._stop_loop()
        if new_run:
            self.driver.stop()
            self.driver = self._new_driver()  # (counting its replies from 1: the controller takes it as a new sensor)
        self.loop = self._new_loop()
        if new_run:
            self.driver.start()
        self.read = None
        self._log(f"replace_loop(new_run={new_run})")
        self._start()

    # ---------------------------------------------------------------- rules: the policy
    @rule(
        kind=st.sampled_from(TARGET_KINDS),
        u=st.lists(st.floats(-1.0, 1.0), min_size=DOF, max_size=DOF),
        joint=st.integers(0, DOF - 1),
    )
    def policy_target(self, kind, u, joint):
        obs = self.loop.observation() if self.loop.running else None
        measured = ROBOT.home if obs is None else np.asarray(obs["measured_position"], dtype=np.float64)
        self.policy.target = make_target(kind, u, joint, measured, (self.loop.soft_min, self.loop.soft_max))
        self.policy.mode = "target"
        self._log(f"policy target {kind} joint {joint}")

    @rule(
        kind=st.sampled_from(["home_offset", "measured_offset", "uniform_soft", "soft_edge", "far_jump"]),
        u=st.lists(st.floats(-1.0, 1.0), min_size=DOF, max_size=DOF),
        joint=st.integers(0, DOF - 1),
        ms=st.integers(20, 100),
    )
    def move(self, kind, u, joint, ms):
        """A reachable target, and time to move towards it (a start first where the loop is not running). Without
        it the robot hardly moved: the other rules take microseconds, and a stop() is undone only by a start rule
        (17 of 35576 EGM references and 34 of 54150 gantry commands had a velocity in a 208-example hunt, which left
        the step, acceleration and workspace checks all but idle; the thirteenth audit)."""
        if not MOVE_RULE:
            return
        if not self.loop.running:
            self._start()
        # (at least 30% of each offset: the simplest examples, u = 0, asked for no motion at all)
        u = [(0.3 + 0.7 * abs(x)) * (1.0 if x >= 0 else -1.0) for x in u]
        self.policy_target(kind, u, joint)
        time.sleep(ms / 1000.0)

    @rule()
    def policy_silent(self):
        self.policy.mode = "silent"
        self._log("policy silent")

    @rule(ms=st.integers(5, 400))
    def sleep(self, ms):
        time.sleep(ms / 1000.0)

    # ---------------------------------------------------------------- rules: stops and recoveries
    @rule()
    def software_estop(self):
        if not self.loop.running:
            return
        self.latch(time.monotonic_ns(), "software estop")
        self.loop.estop()

    @rule(kind=st.sampled_from(["motors_off", "rapid_stop", "restart", "drop_status", "silence_long"]))
    def controller_stop(self, kind):
        self.latch(time.monotonic_ns(), f"controller {kind}")
        c = self.controller
        if kind == "motors_off":
            c.motors_off()
        elif kind == "rapid_stop":
            c.rapid_stop()
        elif kind == "restart":
            c.restart()
            self.restart_at = time.monotonic()
        elif kind == "drop_status":
            c.drop_status(("mciState",))
        else:
            c.silence(0.15)

    @rule(ms=st.integers(5, 80))
    def controller_short_silence(self, ms):
        self._log(f"controller silence {ms} ms")
        self.controller.silence(ms / 1000.0)

    @rule(joint=st.integers(0, 5), offset=st.sampled_from([-0.3, -0.05, 0.05, 0.3, 2.0]), ms=st.integers(1, 30))
    def feedback_glitch(self, joint, offset, ms):
        """The controller's feedback reports one axis off by `offset` rad for `ms` (the arm does not move)."""
        if not GLITCH_RULES:
            return
        off = np.zeros(6)
        off[joint] = offset
        self.controller.glitch = (time.monotonic_ns() + ms * 1_000_000, off)
        self._log(f"feedback glitch joint {joint} {offset} rad {ms} ms")

    @rule(kind=st.sampled_from(["motors_on", "rapid_start", "restore_status", "all"]))
    def controller_clear(self, kind):
        c = self.controller
        if kind in ("motors_on", "all"):
            c.motors_on()
        if kind in ("rapid_start", "all"):
            c.rapid_start()
        if kind in ("restore_status", "all"):
            c.drop_status(())
        self._log(f"controller {kind}")

    def _read_counts(self):
        return (
            time.monotonic_ns(),
            self.loop.estop_presses,
            self.loop.robot_stop_events,
            tuple(self.loop.stop_reasons),
        )

    @rule()
    def operator_reads(self):
        if self.loop.running:
            self.read = self._read_counts()
            self._log(f"operator reads {self.read[1:]}")

    @rule(mode=st.sampled_from(["fresh", "as_read", "reset_estop"]))
    def recover(self, mode):
        if not self.loop.running:
            return
        t_call = time.monotonic_ns()
        if mode == "fresh":
            result = self.loop.recover(timeout_s=1.6)
            read_ns = t_call
        elif mode == "reset_estop":
            result = self.loop.reset_estop(timeout_s=1.6)
            read_ns = t_call
        else:
            read = self.read or self._read_counts()
            read_ns, presses, robot_stops, reasons = read
            try:
                result = self.loop.recover(
                    timeout_s=1.6, seen_reasons=reasons, seen_estop_presses=presses, seen_robot_stops=robot_stops
                )
            except ValueError as err:
                self._log(f"recover(as_read) refused: {err}")
                return
        self._log(f"recover({mode}) -> {bool(result)} {getattr(result, 'blockers', ())}")
        self.stats[f"recover_{mode}_{'ok' if result else 'refused'}"] += 1
        if result:
            self._clear(read_ns, t_call, f"recover {mode}")

    # ---------------------------------------------------------------- rules: the links
    @rule(
        drop=st.sampled_from([0.0, 0.0, 0.1, 0.5]),
        duplicate=st.sampled_from([0.0, 0.2, 0.5]),
        reorder=st.sampled_from([0.0, 0.2, 0.5]),
        corrupt=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
        truncate=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
        stale=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
        seed=st.integers(0, 1000),
    )
    def egm_stream_faults(self, drop, duplicate, reorder, corrupt, truncate, stale, seed):
        c = self.controller
        if not GLITCH_RULES:
            corrupt = 0.0
        with c._lock:
            c.rng.seed(seed)
            c.faults = dict(
                drop=drop, duplicate=duplicate, reorder=reorder, corrupt=corrupt, truncate=truncate, stale=stale
            )
        self._log(f"egm faults {c.faults}")

    @rule()
    def egm_stream_clean(self):
        with self.controller._lock:
            self.controller.faults = {}
        self._log("egm faults cleared")

    @rule(
        kind=st.sampled_from(["drop", "duplicate", "reorder", "corrupt", "truncate", "garbage"]),
        p=st.sampled_from([0.05, 0.3]),
    )
    def gantry_link_fault(self, kind, p):
        self.proxy.set_faults("both", **{kind: p})
        self._log(f"gantry link {kind}={p}")

    @rule()
    def gantry_link_clean(self):
        self.proxy.clear_faults()
        self._log("gantry link cleared")

    @rule(n=st.integers(1, 30), offset=st.floats(-0.5, 0.5), seqno=st.integers(0, 2**32 - 1), mimic=st.booleans())
    def second_sender(self, n, offset, seqno, mimic):
        """Another sender on this host sends EgmRobot messages to the driver's port (a position off by `offset` rad,
        or a copy of the controller's latest message when `mimic`) while the live controller is heard. (While it is
        silent for over the link timeout, or just restarted, a new sender is a controller restart to the driver
        (docs/egm.md: a change of sender is accepted after the link was down, with a link-loss stop) and on loopback
        nothing tells the two apart: the audit's report, finding 2. With the controller's port pinned it is never
        answered, so then it sends whenever.)"""
        c = self.controller
        unheard = c.faults.get("drop") or time.monotonic() < c._silent_until + 0.2
        just_restarted = time.monotonic() < self.restart_at + 0.3
        if not self.pinned_source_port and (unheard or just_restarted):
            self._log("second sender: skipped (the controller is not heard)")
            return
        if unheard or just_restarted:
            self.stats["second_sender_while_controller_unheard"] += 1
        for i in range(n):
            if mimic and self.controller.sent_feedback:
                data = self.controller.sent_feedback[-1][1]
            else:
                m = EgmRobot()
                m.header.seqno = (seqno + i) & 0xFFFFFFFF
                m.header.tm = 0
                m.header.mtype = 2
                q = np.degrees(
                    np.clip(self.controller.position + offset, ROBOT.position_min[ARM], ROBOT.position_max[ARM])
                )
                m.feedBack.joints.joints.extend(q.tolist())
                m.planned.joints.joints.extend(q.tolist())
                m.motorState.state = 1
                m.mciState.state = 3
                m.rapidExecState.state = 2
                data = m.SerializeToString()
            try:
                self.stranger.sendto(data, ("127.0.0.1", self.egm_port))
            except OSError:
                pass
            time.sleep(0.002)
        self._log(f"second sender x{n} mimic={mimic}")

    # ---------------------------------------------------------------- checks (robot side)
    def check(self):
        self._check_stranger()
        self._check_egm_references()
        self._check_gantry_commands()
        if WORKSPACE_CHECK:
            self._check_workspace()
        self._check_motion()
        s = self.controller.stats()
        _TOTALS["controller_sensor_stale"] += s["sensor_stale"]
        _TOTALS["controller_sensor_restarts"] += s["sensor_restarts"]
        if s["references_out_of_limits"]:
            self.violation("egm_reference_out_of_limits_counted", stats=s)
        g = self.gantry_server.robot_server.stats()
        if g.get("commands_out_of_limits"):
            self.violation("gantry_command_out_of_limits_counted", stats=g)
        _TOTALS["examples"] += 1
        _TOTALS["steps"] += len(self.steps)
        _TOTALS.update(self.stats)
        _TOTALS["violations"] += len(self.violations)

    def _check_stranger(self):
        got = 0
        while True:
            try:
                self.stranger.recvfrom(4096)
                got += 1
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
        if got:
            self.violation("second_sender_answered", datagrams=got)

    def _check_egm_references(self):
        lo, hi, v = ROBOT.position_min[ARM], ROBOT.position_max[ARM], ROBOT.velocity_limit[ARM]
        fb_t, fb_q = [], []  # (t_ns, degrees) of the genuine feedback the controller sent
        for t, data in list(self.controller.feedback_log):
            m = EgmRobot()
            try:
                m.ParseFromString(data)
                q = np.array(m.feedBack.joints.joints)
            except Exception:  # noqa: BLE001
                continue
            if q.shape == (6,):
                fb_t.append(t)
                fb_q.append(q)
        fb_t, fb_q = np.array(fb_t, dtype=np.int64), np.array(fb_q).reshape(-1, 6)
        prev, prev_deg = None, None
        self.egm_sessions = []  # per driver session, its references: (t_rx_ns, tm ms, q, qd, hold)
        for t, data in self.controller.rx:
            m = EgmSensor()
            try:
                m.ParseFromString(data)
            except Exception:  # noqa: BLE001
                self.violation("egm_reference_malformed", t=t, size=len(data))
                continue
            _TOTALS["egm_references"] += 1
            deg = np.array(m.planned.joints.joints)
            speed = np.array(m.speedRef.joints.joints)
            if deg.shape != (6,) or speed.shape != (6,):
                self.violation("egm_reference_wrong_shape", t=t, planned=deg.tolist(), speed=speed.tolist())
                continue
            q, qd = np.radians(deg), np.radians(speed)
            if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
                self.violation("egm_reference_not_finite", t=t, q=q.tolist(), qd=qd.tolist())
                continue
            if np.any(q < lo - 1e-9) or np.any(q > hi + 1e-9):
                self.violation("egm_reference_outside_joint_range", t=t, q=q.tolist())
            if np.any(np.abs(qd) > v * (1 + 1e-9) + 1e-12):
                self.violation("egm_speed_ref_above_velocity_limit", t=t, qd=qd.tolist())
            seq, tm = m.header.seqno, m.header.tm
            _TOTALS["egm_references_moving"] += bool(np.any(speed))
            hold = False
            if not np.any(speed):
                # a hold is a point of the segment from a feedback (the anchor) to the last reference sent (the EGM
                # driver's fix_hold), or at a feedback
                a, b = np.searchsorted(fb_t, t - 200_000_000), np.searchsorted(fb_t, t + 200_000_000)
                hold = _on_segment_from(fb_q[a:b], prev_deg, deg)
            same_session = prev is not None and seq > prev[0] and tm >= prev[1]
            if not same_session:
                self.egm_sessions.append([])
            self.egm_sessions[-1].append((t, tm, q, qd, hold))
            if prev is not None and not hold:
                pseq, ptm, pq, pqd = prev
                if same_session:
                    dt = (tm - ptm) * 1e-3 + STEP_SLACK_S
                    step = np.abs(q - pq)
                    if np.any(step > v * dt * 1.05 + 1e-9) and not _late_send_explains(
                        pq, pqd, q, qd, (tm - ptm) * 1e-3, v, ROBOT.acceleration_limit[ARM]
                    ):
                        j = int(np.argmax(step / v))
                        self.violation(
                            "egm_reference_step_above_velocity_limit",
                            t=t,
                            joint=j,
                            step=float(step[j]),
                            allowed=float(v[j] * dt * 1.05),
                            dtm_ms=tm - ptm,
                        )
            prev, prev_deg = (seq, tm, q, qd), deg
        if ACCEL_CHECK:
            # a hold looks like a reference of the trajectory at rest (no speed, on the segment from a feedback to the
            # last reference): both stay in the chain, and only an excess into such a reference is taken for the hold
            # (exempt: the muted arm is told to stay where it is, whatever it did before; or a restart at rest there)
            for session in self.egm_sessions:
                chain = [(tm * 1e-3, q, qd) for _t, tm, q, qd, _h in session]
                holds = [h for _t, _tm, _q, _qd, h in session]
                self._check_acceleration("egm", chain, ROBOT.acceleration_limit[ARM], 2, holds)

    def _check_acceleration(self, part, chain, a, first_joint, holds=None):
        """A chain of one session's references (no restart between them) against the acceleration limit
        (`acceleration_excess`); one violation per chain (the first), the rest counted. An excess into a reference
        that `holds` marks (at rest where the robot reported it was, or an EGM hold on its segment) is the hold's or
        the restart's (exempt, counted)."""
        if len(chain) < 2:
            return
        _TOTALS[f"{part}_acceleration_intervals"] += len(chain) - 1
        found = 0
        for k, ratio, joint, what in acceleration_excess(chain, a):
            if holds is not None and holds[k]:
                _TOTALS[f"{part}_acceleration_into_hold_exempt"] += 1
                continue
            found += 1
            if found > 1:
                continue
            ctx = chain[max(0, k - 3) : k + 3]
            self.violation(
                f"{part}_acceleration_above_limit",
                what=what,
                ratio=ratio,
                joint=first_joint + joint,
                into=k - max(0, k - 3),  # (the index in the lists below of the reference the excess is into)
                stamps_s=[c[0] for c in ctx],
                positions=[float(c[1][joint]) for c in ctx],
                velocities=[float(c[2][joint]) for c in ctx],
            )
        _TOTALS[f"{part}_acceleration_excess_intervals"] += found
        if os.environ.get("FUZZ_TOTALS"):  # (a hunt's statistics: what only the late-send allowance explains)
            tight = sum(1 for k, *_ in acceleration_excess(chain, a, ACCEL_TIMING_S) if holds is None or not holds[k])
            _TOTALS[f"{part}_acceleration_late_send_only"] += max(0, tight - found)

    def _check_gantry_commands(self):
        lo, hi, v = ROBOT.position_min[GANTRY], ROBOT.position_max[GANTRY], ROBOT.velocity_limit[GANTRY]
        last: dict = {}
        chains: dict = {}  # per session, the runs of commands in stamp order: [(stamp_s, q, qd)]
        self.gantry_commands = []  # (stamp_ns, q)
        st_t, st_q = [], []  # what the gantry reported: (time s, positions)
        for c in list(self.proxy.captured):
            if c.direction != "up":
                if (r := decode_gantry_state(c.data)) is not None:
                    st_t.append(c.t_s)
                    st_q.append(r)
                continue
            d = decode_gantry_command(c.data)
            if d is None:
                continue
            session, stamp, q, qd = d
            _TOTALS["gantry_commands"] += 1
            _TOTALS["gantry_commands_moving"] += bool(np.any(qd))
            if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
                self.violation("gantry_command_not_finite", q=q.tolist())
                continue
            if np.any(q < lo - 1e-9) or np.any(q > hi + 1e-9):
                self.violation("gantry_command_outside_joint_range", q=q.tolist())
            if np.any(np.abs(qd) > v * (1 + 1e-9)):
                self.violation("gantry_velocity_above_limit", qd=qd.tolist())
            p = last.get(session)
            if p is not None and stamp > p[0]:
                dt = (stamp - p[0]) * 1e-9 + STEP_SLACK_S
                if np.any(np.abs(q - p[1]) > v * dt * 1.05 + 1e-9) and not _late_send_explains(
                    p[1], p[2], q, qd, (stamp - p[0]) * 1e-9, v, ROBOT.acceleration_limit[GANTRY]
                ):
                    self.violation("gantry_command_step_above_velocity_limit", dq=(q - p[1]).tolist(), dt=dt)
            if p is None or stamp > p[0]:  # (a duplicate or a reordered datagram is no new sample)
                last[session] = (stamp, q, qd)
                chains.setdefault(session, []).append((stamp * 1e-9, q, qd))
                self.gantry_commands.append((stamp, q))
        if ACCEL_CHECK:
            # a restart at rest where the gantry is (a recovery, a new loop: the commanded trajectory restarts at the
            # measured position, exactly a position the gantry reported) is no step for it: an excess into such a
            # command is exempt, as an EGM hold is (seen: 0.85 mm at a recovery while the gantry's servo still rang
            # about its stop, the thirteenth audit)
            st_t, st_q = np.array(st_t), np.array(st_q).reshape(-1, 2)
            for chain in chains.values():
                holds = []
                for t, q, qd in chain:
                    a, b = np.searchsorted(st_t, t - 0.2), np.searchsorted(st_t, t + 0.2)
                    holds.append(not np.any(qd) and bool(np.any(np.all(np.abs(st_q[a:b] - q) <= 1e-12, axis=1))))
                self._check_acceleration("gantry", chain, ROBOT.acceleration_limit[GANTRY], 0, holds)

    def _check_workspace(self):
        """Each EGM reference (a hold too: where the arm is held), with the gantry command of the same tick (sent within
        WORKSPACE_PAIR_S of it; the most favourable one), puts the paddle's blade inside the workspace box (+
        WORKSPACE_TOL_M); with none sent then (a muted gantry), with the latest one before it (the arm-only
        contribution; a muted gantry is not commanded and stops by itself). The reference's send time is its tm (ms since its driver started) + that start, estimated
        per session as the least (receive time - tm) (within 1 ms + the least delivery delay)."""
        if not self.gantry_commands:
            return
        g_t = np.array([c[0] for c in self.gantry_commands], dtype=np.int64)
        order = np.argsort(g_t, kind="stable")
        g_t = g_t[order]
        g_q = np.array([self.gantry_commands[i][1] for i in order])
        box_lo, box_hi = ROBOT.workspace_min_m, ROBOT.workspace_max_m
        pair_ns = int(WORKSPACE_PAIR_S * 1e9)
        candidates, owner, refs = [], [], []  # each candidate pair's 8 joints, and which reference it pairs
        kinds = []  # per reference: (a hold, paired with the gantry's latest command rather than this tick's)
        for session in self.egm_sessions:
            offset = min(t - tm * 1_000_000 for t, tm, _q, _qd, _h in session)
            for _t, tm, q, _qd, hold in session:
                sent = tm * 1_000_000 + offset
                a, b = np.searchsorted(g_t, sent - pair_ns), np.searchsorted(g_t, sent + pair_ns + 1_000_000)
                latest = b <= a
                if latest:  # no gantry command of this tick (the gantry muted, or between sessions): its latest one
                    if a == 0:
                        continue
                    a, b = a - 1, a
                    _TOTALS["workspace_checked_latest_gantry"] += 1
                kinds.append((bool(hold), latest))
                full = np.empty((b - a, DOF))
                full[:, GANTRY] = g_q[a:b]
                full[:, ARM] = q
                candidates.append(full)
                owner.extend([len(refs)] * (b - a))
                refs.append(sent)
        if not refs:
            return
        full = np.concatenate(candidates)
        low, high = paddle_blade_bounds(ROBOT, full)
        excess = np.maximum(np.max(box_lo - low, axis=1), np.max(high - box_hi, axis=1))
        starts = np.flatnonzero(np.diff(np.asarray(owner), prepend=-1))
        best = np.minimum.reduceat(excess, starts)  # the most favourable partner of each reference
        _TOTALS["workspace_checked"] += len(refs)
        bad = np.flatnonzero(best > WORKSPACE_TOL_M)
        _TOTALS["workspace_excess"] += len(bad)
        if len(bad):
            k = int(bad[0])
            stop = starts[k + 1] if k + 1 < len(starts) else len(excess)
            i = int(starts[k] + np.argmin(excess[starts[k] : stop]))
            self.violation(
                "paddle_outside_workspace_box",
                excess_m=float(excess[i]),
                q=full[i].tolist(),
                blade_low=low[i].tolist(),
                blade_high=high[i].tolist(),
                sent_s=refs[k] * 1e-9,
                references_outside=len(bad),
                holds_outside=sum(kinds[j][0] for j in bad),
                latest_gantry_outside=sum(kinds[j][1] for j in bad),
                hold=kinds[k][0],
                latest_gantry=kinds[k][1],
                loop_stops_seen=[sorted(loop.stop_reasons_seen) for loop in self.loops],
            )

    def _check_motion(self):
        samples = list(self.sampler.samples)
        if not samples:
            return
        ts = np.array([s[0] for s in samples], dtype=np.int64)
        qs = np.array([s[1] for s in samples])
        with self.latch_lock:
            latches = list(self.latches)
        window_ns = int(STILL_WINDOW_S * 1e9 * 0.95)
        cycles = np.array(self.controller.cycles, dtype=np.int64)
        gaps = np.diff(cycles)
        stall_ends = cycles[1:][gaps > STALL_GAP_NS]  # (the stall before each of these cycles)
        stall_starts = cycles[:-1][gaps > STALL_GAP_NS]
        _TOTALS["controller_cycle_stalls"] += len(stall_ends)
        if len(gaps):
            _MAXIMA["controller_cycle_gap_max_ms"] = max(_MAXIMA["controller_cycle_gap_max_ms"], gaps.max() * 1e-6)

        def stalled(t0, t1):  # did the arm's cycle stall within [t0, t1]?
            k = int(np.searchsorted(stall_ends, t0))
            return k < len(stall_ends) and stall_starts[k] < t1

        for lt in latches:
            a = int(np.searchsorted(ts, lt["t0"]))
            end = lt["cleared"] if lt["cleared"] is not None else ts[-1] + 1
            b = int(np.searchsorted(ts, end))
            if b - a < 2:
                continue
            _TOTALS["latched_samples"] += b - a
            rest = None
            j = a
            for i in range(a, b):
                while j < b and ts[j] - ts[i] < window_ns:
                    j += 1
                if j >= b:
                    break
                if np.all(np.ptp(qs[i : j + 1], axis=0) < STILL_RANGE):
                    if stalled(ts[i], ts[j]):
                        _TOTALS["rest_windows_skipped_for_a_stall"] += 1
                        continue
                    rest = i
                    break
            if rest is None:
                if (ts[b - 1] - lt["t0"]) > SETTLE_TIMEOUT_S * 1e9:
                    self.violation("robot_still_moving_long_after_a_stop", why=lt["why"])
                continue
            if STOP_CHECK:
                self._check_stop(lt, ts, qs, a, rest, cycles)
            dev = np.max(np.abs(qs[rest:b] - qs[rest]), axis=0)
            if np.max(dev) > MOVED_LIMIT:
                k = rest + int(np.argmax(np.max(np.abs(qs[rest:b] - qs[rest]), axis=1) > MOVED_LIMIT))
                self.violation(
                    "robot_moved_after_a_stop_without_recovery",
                    why=lt["why"],
                    joint=int(np.argmax(dev)),
                    moved=float(np.max(dev)),
                    latch_t=lt["t0"] * 1e-9,
                    cleared_t=None if lt["cleared"] is None else lt["cleared"] * 1e-9,
                    at_t=ts[k] * 1e-9,
                    since_rest_s=(ts[k] - ts[rest]) * 1e-9,
                    # the arm's longest cycle gap from its rest to the motion (a stall that the window missed)
                    cycle_gap_ms=_longest_gap_ms(cycles, ts[rest], ts[k]),
                    # what the arm received from the stop to the motion (an open finding of 2026-12-07 had only the
                    # steps): (received s, planned rad, speedRef rad/s) of each EGM reference
                    references=self._references_between(lt["t0"] - 50_000_000, ts[k] + 50_000_000),
                )

    def _references_between(self, t0_ns, t1_ns):
        out = []
        for t, data in list(self.controller.rx):
            if t0_ns <= t <= t1_ns:
                try:
                    planned, speed = _decoded_reference(data)
                except Exception:  # noqa: BLE001 (a garbled datagram: recorded as such)
                    out.append((t * 1e-9, None, None))
                    continue
                out.append((t * 1e-9, planned.tolist(), speed.tolist()))
        return out

    def _check_stop(self, lt, ts, qs, a, rest, cycles):
        """From the stop (its first sample a) to rest: within the stop time bound and the stopping distance. The time
        is counted in the simulated arm's own cycles: a stall of its cycle thread (the machine left it unscheduled
        for over STALL_GAP_NS) holds the arm where it is, so it delays the rest by as long, without moving it; the
        stopping distance is checked as it is."""
        _TOTALS["stops_checked"] += 1
        took_s = (ts[rest] - lt["t0"]) * 1e-9
        bound_s = STOP_LEAD_S + self.stop_time_bound_s + SERVO_SETTLE_S
        if took_s > bound_s:
            stalled_s = _stalled_s(cycles, lt["t0"], ts[rest])
            if took_s - stalled_s > bound_s:
                self.violation(
                    "robot_at_rest_late_after_a_stop",
                    why=lt["why"],
                    took_s=took_s,
                    bound_s=bound_s,
                    stalled_s=stalled_s,
                    cycle_gap_ms=_longest_gap_ms(cycles, lt["t0"], ts[rest]),
                )
            else:
                _TOTALS["stop_time_over_bound_during_stalls"] += 1
        travel = np.max(np.abs(qs[a : rest + 1] - qs[a]), axis=0)
        if np.any(travel > STOP_DISTANCE):
            j = int(np.argmax(travel / STOP_DISTANCE))
            self.violation(
                "robot_stop_distance_above_bound",
                why=lt["why"],
                joint=j,
                travel=float(travel[j]),
                bound=float(STOP_DISTANCE[j]),
                latch_t=lt["t0"] * 1e-9,
            )


def _stalled_s(cycles: np.ndarray, t0_ns: int, t1_ns: int) -> float:
    """Seconds of [t0_ns, t1_ns] inside the arm's cycle stalls (gaps between consecutive cycles over STALL_GAP_NS)."""
    gaps_end = cycles[1:]
    gaps_start = cycles[:-1]
    long = (gaps_end - gaps_start) > STALL_GAP_NS
    lo = np.maximum(gaps_start[long], t0_ns)
    hi = np.minimum(gaps_end[long], t1_ns)
    return float(np.clip(hi - lo, 0, None).sum() * 1e-9)


def _longest_gap_ms(cycles: np.ndarray, t0_ns: int, t1_ns: int) -> float:
    """The longest time between consecutive cycles over [t0_ns, t1_ns] (the cycles around it included), in ms."""
    a = max(0, int(np.searchsorted(cycles, t0_ns)) - 1)
    b = int(np.searchsorted(cycles, t1_ns)) + 1
    inside = cycles[a:b]
    return float(np.diff(inside).max() * 1e-6) if len(inside) > 1 else float("nan")


_TOTALS: collections.Counter = collections.Counter()
_MAXIMA: collections.Counter = collections.Counter()  # (largest values over a hunt, written with the totals)

EgmMachine.TestCase.settings = fuzz_settings(examples=20, steps=30)
TestControlStatefulEgm = EgmMachine.TestCase


def teardown_module(module):
    write_fuzz_totals(dict(_TOTALS, **_MAXIMA))


@contextlib.contextmanager
def _egm_rig(policy=None, **loop_kwargs):
    """A composite robot (UDP gantry server + recording EGM controller) and a loop holding it at home (not started;
    `policy`, when given, is its policy instead)."""
    port = _free_udp_port()
    gantry_server = SimServer(gantry_description(ROBOT), camera=False, geometry_digest=geometry_digest(ROBOT)).start()
    controller = RecordingController(
        ("127.0.0.1", port),
        ROBOT.position_min[ARM],
        ROBOT.position_max[ARM],
        ROBOT.velocity_limit[ARM],
        ROBOT.home[ARM],
    ).start()
    gantry = make_udp_driver(f"udp://127.0.0.1:{gantry_server.port}?camera=none", 2)
    driver = make_egm_robot_driver(f"egm://127.0.0.1:{port}", ROBOT, gantry=gantry)
    policy = policy if policy is not None else (lambda obs: ROBOT.home)
    loop = RealTimeLoop(ROBOT, driver, policy=policy, rate_hz=RATE_HZ, policy_rate_hz=POLICY_HZ,
                        command_timeout_s=COMMAND_TIMEOUT_S, sensor_timeout_s=SENSOR_TIMEOUT_S, **loop_kwargs)  # fmt: skip
    driver.start()
    try:
        deadline = time.monotonic() + 30.0
        while controller.stats()["robot_messages"] < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        yield controller, loop
    finally:
        loop.stop()
        driver.stop()
        controller.stop()
        gantry_server.stop()


def _glitch(controller, offset_rad, glitch_ms, joint=2):
    offset = np.zeros(6)
    offset[joint] = offset_rad
    controller.glitch = (time.monotonic_ns() + int(glitch_ms * 1e6), offset)


@pytest.mark.parametrize("offset_rad, glitch_ms", [(0.3, 40), (0.3, 100), (0.05, 10)])
def test_a_feedback_glitch_does_not_move_a_muted_arm(offset_rad, glitch_ms):
    """The controller reports axis 3 `offset_rad` off for `glitch_ms` (the arm itself does not move): the loop stops
    (measurement_invalid) and mutes the arm, and then nothing may move it until a recovery. The EGM driver answers
    each robot message with a hold; at the latest feedback, the glitched feedback was sent back as the reference and
    the arm followed it (0.157 rad for 0.3 rad / 40 ms, 0.42 rad for 100 ms, the twelfth audit). The hold is now
    anchored at the loop's last state that passed its measurement and tracking checks."""
    with _egm_rig() as (controller, loop):
        loop.start()
        deadline = time.monotonic() + 30.0
        while controller.stats()["sensor_messages"] < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loop.lifecycle == "active", loop.stop_reasons
        before = controller.position
        _glitch(controller, offset_rad, glitch_ms)
        time.sleep(0.8)
        assert loop.lifecycle == "stopped", loop.stop_reasons
        moved = float(np.max(np.abs(controller.position - before)))
        assert moved <= MOVED_LIMIT, f"the muted arm moved {moved:.4f} rad after the stop, nobody recovered"


def _decoded_reference(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(planned, speedRef) in rad and rad/s of one EgmSensor datagram (DecodeError when it does not parse)."""
    m = EgmSensor()
    m.ParseFromString(data)
    return np.radians(m.planned.joints.joints), np.radians(m.speedRef.joints.joints)


def _received_references(controller, start=0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(planned, speedRef) in rad and rad/s of each EGM reference the controller received, from index `start`."""
    return [_decoded_reference(data) for _t, data in controller.rx[start:]]


def _silence_while_moving(controller, loop, silence_ms, glitch_rad=0.0):
    """Starts the loop with a far target on arm axis 2, and once the arm runs fast the controller goes silent for
    `silence_ms` (its first messages after that report the arm `glitch_rad` further along its motion, for 20 ms).
    Returns the arm joint's positions sampled from the simulator (1 ms), the sample index of the silence's start, the
    last reference sent before it and the loop's last measured position before it (rad)."""
    samples = []
    loop.start()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        samples.append(float(controller.position[1]))
        if len(samples) > 5 and abs(samples[-1] - samples[-6]) > 5 * 0.001 * 1.2:  # faster than 1.2 rad/s
            break
        time.sleep(0.001)
    else:
        pytest.fail("the arm never moved fast")
    sign = np.sign(samples[-1] - samples[-6])
    measured = loop.observation()["measured_position"][ARM][1]
    n_rx = len(controller.rx)
    if glitch_rad:
        offset = np.zeros(6)
        offset[1] = sign * glitch_rad
        controller.glitch = (time.monotonic_ns() + int((silence_ms + 20) * 1e6), offset)
    controller.silence(silence_ms / 1000.0)
    start = len(samples)
    deadline = time.monotonic() + 0.8
    while time.monotonic() < deadline:
        samples.append(float(controller.position[1]))
        time.sleep(0.001)
    last_sent = None  # the last reference before the first hold (a reply in flight arrives after the silence began)
    for planned, speed in _received_references(controller, n_rx - 1):
        if not np.any(speed):
            break
        last_sent = float(planned[1])
    return np.array(samples), start, last_sent, float(measured), sign


@pytest.mark.parametrize("silence_ms", [60, 100])
def test_a_silent_controller_does_not_pull_a_moving_arm_back(silence_ms):
    """The thirteenth audit: the hold of a muted arm was its anchor (the loop's last checked position). An arm running
    at ~1.46 rad/s whose controller went silent ran on to its last reference meanwhile, and the hold replies sent
    once it talked again commanded it back: 0.030 rad against its motion, after the stop. The hold is now the point
    nearest the first answered feedback on the segment [anchor, last reference sent]: where the arm went, no motion
    back."""
    target = ROBOT.home.copy()
    target[ARM.start + 1] = ROBOT.position_min[ARM.start + 1] + 0.3
    with _egm_rig(policy=lambda obs: target) as (controller, loop):
        q, start, _last_sent, _measured, sign = _silence_while_moving(controller, loop, silence_ms)
        assert loop.lifecycle == "stopped", loop.stop_reasons
        along = sign * (q[start:] - q[start])
        back = float(along.max() - along[-1])
        assert float(along.max()) > 0.01, "the arm did not run on during the silence (nothing tested)"
        assert back <= MOVED_LIMIT, f"the stopped arm moved {back:.4f} rad back against its motion"
        assert float(np.ptp(q[-100:])) <= 1e-4, "the arm did not come to rest"


@pytest.mark.parametrize("glitch_rad", [0.3, 1e300, np.inf])
def test_a_glitch_after_a_silence_holds_the_arm_on_its_commanded_segment(glitch_rad):
    """The first feedback after the silence reports the arm `glitch_rad` further along its motion: the hold is the
    point nearest it on the segment [anchor, last reference sent], so the arm rests no further than its last
    reference (and no further back than the anchor) whatever the glitch says, an absurd one too."""
    target = ROBOT.home.copy()
    target[ARM.start + 1] = ROBOT.position_min[ARM.start + 1] + 0.3
    with _egm_rig(policy=lambda obs: target) as (controller, loop):
        q, start, last_sent, measured, sign = _silence_while_moving(controller, loop, 60, glitch_rad=glitch_rad)
        assert loop.lifecycle == "stopped", loop.stop_reasons
        rest = q[-1]
        beyond = sign * (rest - last_sent)
        assert beyond <= MOVED_LIMIT, f"the held arm went {beyond:.4f} rad beyond its last reference (the glitch)"
        assert sign * (rest - q[start]) >= -MOVED_LIMIT, "the held arm went back behind where the silence began"
        assert sign * (rest - measured) >= -MOVED_LIMIT
        holds = [planned for planned, speed in _received_references(controller) if not np.any(speed)]
        assert holds and np.all(np.isfinite(holds)), "no hold sent, or one not finite"
        assert controller.stats()["references_out_of_limits"] == 0
        hold = holds[-1][1]
        assert sign * (hold - last_sent) <= 1e-9 and sign * (hold - measured) >= -MOVED_LIMIT, (
            hold,
            last_sent,
            measured,
        )


@pytest.mark.parametrize("offset_rad, glitch_ms", [(0.3, 30), (0.05, 20), (-0.3, 8)])
def test_a_start_during_a_feedback_glitch_does_not_move_the_arm(offset_rad, glitch_ms):
    """Finding 1b of the twelfth audit: a start took its first state as where the robot is, so a start during a
    glitch commanded the arm to the glitched position (0.3 rad). The start now waits until the measured position
    held still for steady_window_s: it starts where the arm is, and the arm (commanded to stay at home) stays."""
    with _egm_rig() as (controller, loop):
        before = controller.position
        _glitch(controller, offset_rad, glitch_ms)
        time.sleep(0.004)  # (at least one glitched feedback received before the start reads its first state)
        loop.start()
        start = loop.wait_observation(timeout_s=1.0)
        assert start is not None
        # the commanded trajectory starts where the arm is, not at the glitch
        assert np.max(np.abs(start["command_position"][ARM] - before)) < 1e-6, start["command_position"][ARM] - before
        time.sleep(0.5)
        moved = float(np.max(np.abs(controller.position - before)))
        assert moved <= MOVED_LIMIT, f"the arm moved {moved:.4f} rad after a start during a feedback glitch"
        assert loop.lifecycle == "active", loop.stop_reasons


def test_a_start_refuses_a_feedback_that_never_holds_still():
    """A feedback that keeps jumping (here 0.3 rad off in 3 of every 6 messages: 12 ms of every 24 at 250 Hz) gives no
    position to start from: start() refuses, naming the joint, and nothing is sent that moves the arm. (The pattern
    is the controller's, per message: a Python thread that glitched 10 ms every 25 ms was once starved for the 50 ms
    of a clean stretch on a loaded machine, and the start rightly went ahead.)"""
    with _egm_rig() as (controller, loop):
        before = controller.position
        offset = np.zeros(6)
        offset[2] = 0.3
        controller.flicker = (offset, 3, 6)
        try:
            with pytest.raises(RuntimeError, match=r"did not hold still .*joint 4"):
                loop.start()
        finally:
            controller.flicker = None
        assert not loop.running
        assert float(np.max(np.abs(controller.position - before))) <= MOVED_LIMIT


@pytest.mark.parametrize("stall_first", [False, True])
def test_a_recovery_during_a_feedback_glitch_does_not_move_the_arm(stall_first):
    """A recovery restarts the commanded trajectory at the measured position: one asked for during a glitch (which
    the measurement check cannot see: a plausible position, at rest) took the glitched position and moved the arm
    there. It now waits until the position held still for steady_window_s, and restarts where the arm is.

    The glitch's first state latches measurement_invalid (a 0.3 rad step in one 4 ms cycle is an implausible
    velocity), unless the controller's thread stalled just then: its next feedback is stamped after the stall and the
    step reads as a plausible velocity. Then the glitch's end latches it, after the request, and the recovery is
    refused for a stop its requester did not see (seen twice in CI on 2 loaded cores). Such a try is repeated: the
    arm must not move in any. `stall_first` makes a try's start unseen: the controller's thread is held 0.1 s as its
    glitch begins; the test's own thread must then notice the glitch within its last 45 ms. Where the harness missed
    (its thread ran too late to see the glitch, or saw its end latch already), the try is repeated too: those are
    the harness's timing on a loaded machine, not the loop's."""
    with _egm_rig() as (controller, loop):
        loop.start()
        time.sleep(0.2)
        assert loop.lifecycle == "active", loop.stop_reasons
        loop.estop()
        time.sleep(0.3)
        assert loop.lifecycle == "stopped"
        before = controller.position

        def assert_not_moved():
            moved = float(np.max(np.abs(controller.position - before)))
            assert moved <= MOVED_LIMIT, f"the arm moved {moved:.4f} rad after a recovery during a feedback glitch"

        tries = []  # (the stop reasons seen at the request, its result), or ("unobserved", None)
        unseen_start = False  # a try refused for the glitch's end: its start was unseen
        for _ in range(8):
            if stall_first and not unseen_start:
                with controller._lock:  # (its cycle waits: the glitch's first feedback comes 0.1 s later)
                    _glitch(controller, 0.3, 145)
                    time.sleep(0.1)
            else:
                _glitch(controller, 0.3, 45)
            # the loop sees the glitch; then the position is plausible and at rest, as the recovery requires, but
            # 0.3 rad off
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                obs = loop.observation()
                if obs is not None and abs(obs["measured_position"][4] - before[2]) > 0.2:
                    break
                time.sleep(0.001)
            else:  # this thread ran too late to see it (the loop did: it stays stopped)
                assert_not_moved()
                assert loop.lifecycle == "stopped", loop.stop_reasons
                tries.append(("unobserved", None))
                continue
            seen = loop.stop_reasons
            time.sleep(0.01)
            result = loop.recover()
            time.sleep(0.5)
            assert_not_moved()
            tries.append((seen, result))
            if not result.ok:
                # refused: only for a stop that latched after the request (the glitch's end, its start unseen)
                assert any(b in SAFETY_REASONS and b not in seen for b in result.blockers), tries
                assert loop.lifecycle == "stopped", loop.stop_reasons
                unseen_start = True
                continue
            if stall_first and not unseen_start:
                # the stalled try's start was seen after all (this thread read the reasons after the glitch's end
                # had latched): stop the arm again and repeat it
                loop.estop()
                time.sleep(0.3)
                assert loop.lifecycle == "stopped"
                continue
            break
        assert tries and tries[-1][1] is not None and tries[-1][1].ok, tries
        assert "measurement_invalid" in tries[-1][0], tries
        if stall_first:
            assert unseen_start, tries
        assert loop.lifecycle == "active", loop.stop_reasons
