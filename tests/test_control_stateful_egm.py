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
stop / start, a new loop on the same driver, a new run (new drivers on the same EGM port), sleeping.

Everything asserted is read on the robot side, not from the loop's beliefs:

* every EGM reference the controller received (decoded from its socket) is well-formed, finite, inside the arm's
  joint range, with |speedRef| <= V and a planned step between consecutive replies of one driver session of at most
  V (dt + 3 ms) (a hold where the arm is excepted); the controller counts no reference outside its axis ranges;
* every gantry command the gantry server was sent (decoded from the proxy's capture) is inside the gantry's range,
  |v| <= V, and steps at most V (dt + 3 ms) within one session; the server counts no command outside its limits;
* from any stop (a harness action that stops the robot or the loop, or a stop the loop latched by itself), until a
  successful recover() / reset_estop() whose caller read the counts after that stop (or a start after a run that
  ended cleanly), the whole robot (arm and gantry, sampled from the simulators) comes to rest within 3 s and then
  moves no more than 1e-3;
* a second EGM sender is never answered (nothing is sent to it).

Sized for CI (derandomize, a few examples); `FUZZ_EXAMPLES` / `FUZZ_STEPS` scale it, and `FUZZ_RECORD=path.jsonl`
records violations there instead of failing (a long hunt).
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
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from test_control_stateful import TARGET_KINDS, make_target

from robot_rt.control.egm import make_egm_robot_driver
from robot_rt.control.egm_messages import egm_classes
from robot_rt.control.loop import RealTimeLoop
from robot_rt.control.udp import make_udp_driver
from robot_rt.robot import geometry_digest, load_robot
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


def _free_udp_port() -> int:
    """A free UDP port below Linux's ephemeral range (32768-60999), so that none of the sockets the harness opens
    later (ephemeral ports) can take it between runs of one example (a new run binds it again)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
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
        f, r = o.faults, o.rng
        if not f:
            return self._sock.sendto(data, addr)
        if r.random() < f.get("stale", 0.0) and len(o.sent_feedback) > 40:
            old = o.sent_feedback[r.randrange(0, len(o.sent_feedback) - 30)][1]
            o.injected["stale"] += 1
            self._sock.sendto(old, addr)
        if r.random() < f.get("drop", 0.0):
            o.injected["drop"] += 1
            return len(data)
        if r.random() < f.get("corrupt", 0.0):
            b = bytearray(data)
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
            data = bytes(b)
            o.injected["corrupt"] += 1
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
        self.faults: dict = {}
        self.rng = random.Random(0)
        self.held = None
        self.injected = collections.Counter()
        self.glitch = None  # (until monotonic_ns, offset rad): the feedback reports the arm off by offset
        super().__init__(*a, **kw)

    def _message(self, now):
        g = self.glitch
        if g is None or time.monotonic_ns() >= g[0]:
            return super()._message(now)
        q = self._q
        self._q = q + g[1]  # (the lock is held: _cycle)
        try:
            return super()._message(now)
        finally:
            self._q = q

    def _open(self):
        super()._open()
        self._sock = _RecordingSocket(self._sock, self)


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

    @initialize(velocity_tracking=st.booleans())
    def setup(self, velocity_tracking):
        self.loop_options = {"velocity_tracking": velocity_tracking}
        self.steps: list[str] = [f"setup {self.loop_options}"]
        self.violations: list[dict] = []
        self.stats = collections.Counter()
        self.latches: list[dict] = []
        self.latch_lock = threading.Lock()
        self.monitor_seen: dict = {}
        self.read = None
        self.clean_end = True
        self.restart_at = 0.0
        self.egm_port = _free_udp_port()
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
        ).start()
        self.stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.stranger.bind(("127.0.0.1", 0))
        self.stranger.setblocking(False)
        self.policy = Policy()
        self.loops: list[RealTimeLoop] = []
        self.drivers: list = []
        self.driver = self._new_driver()
        self.loop = self._new_loop()
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
            for loop in self.loops:
                try:
                    loop.stop()
                except Exception:  # noqa: BLE001
                    pass
            self.sampler.stop()
            for d in self.drivers:
                try:
                    d.stop()
                except Exception:  # noqa: BLE001
                    pass
            self.controller.stop()
            self.proxy.stop()
            self.gantry_server.stop()
            self.stranger.close()
        if self.violations and not self.record_path:
            raise AssertionError(json.dumps(self.violations[:5], default=str, indent=1))

    # ---------------------------------------------------------------- helpers
    def _new_driver(self):
        gantry = make_udp_driver(f"udp://127.0.0.1:{self.proxy.port}?camera=none", 2)
        driver = make_egm_robot_driver(f"egm://127.0.0.1:{self.egm_port}", ROBOT, gantry=gantry)
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
            self.driver = self._new_driver()
            with self.controller._lock:
                self.controller._last_sensor_seqno = None  # a real controller's EGM session starts anew
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
        nothing tells the two apart: the audit's report, finding 2.)"""
        c = self.controller
        if c.faults.get("drop") or time.monotonic() < c._silent_until + 0.2 or time.monotonic() < self.restart_at + 0.3:
            self._log("second sender: skipped (the controller is not heard)")
            return
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
        self._check_motion()
        s = self.controller.stats()
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
        feedback = []  # (t_ns, degrees) of the genuine feedback the controller sent
        for t, data in list(self.controller.sent_feedback):
            m = EgmRobot()
            try:
                m.ParseFromString(data)
                feedback.append((t, np.array(m.feedBack.joints.joints)))
            except Exception:  # noqa: BLE001
                pass
        prev = None
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
            hold = not np.any(speed) and any(
                abs(t - tf) < 200_000_000 and np.allclose(fb, deg, atol=1e-9, rtol=0) for tf, fb in feedback[-400:]
            )
            if prev is not None and not hold:
                pseq, ptm, pq = prev
                if seq > pseq and tm >= ptm:
                    dt = (tm - ptm) * 1e-3 + STEP_SLACK_S
                    step = np.abs(q - pq)
                    if np.any(step > v * dt * 1.05 + 1e-9):
                        j = int(np.argmax(step / v))
                        self.violation(
                            "egm_reference_step_above_velocity_limit",
                            t=t,
                            joint=j,
                            step=float(step[j]),
                            allowed=float(v[j] * dt * 1.05),
                            dtm_ms=tm - ptm,
                        )
            prev = (seq, tm, q)

    def _check_gantry_commands(self):
        lo, hi, v = ROBOT.position_min[GANTRY], ROBOT.position_max[GANTRY], ROBOT.velocity_limit[GANTRY]
        last: dict = {}
        for c in list(self.proxy.captured):
            if c.direction != "up":
                continue
            d = decode_gantry_command(c.data)
            if d is None:
                continue
            session, stamp, q, qd = d
            _TOTALS["gantry_commands"] += 1
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
                if np.any(np.abs(q - p[1]) > v * dt * 1.05 + 1e-9):
                    self.violation("gantry_command_step_above_velocity_limit", dq=(q - p[1]).tolist(), dt=dt)
            last[session] = (stamp, q)

    def _check_motion(self):
        samples = list(self.sampler.samples)
        if not samples:
            return
        ts = np.array([s[0] for s in samples], dtype=np.int64)
        qs = np.array([s[1] for s in samples])
        with self.latch_lock:
            latches = list(self.latches)
        window_ns = int(STILL_WINDOW_S * 1e9 * 0.95)
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
                    rest = i
                    break
            if rest is None:
                if (ts[b - 1] - lt["t0"]) > SETTLE_TIMEOUT_S * 1e9:
                    self.violation("robot_still_moving_long_after_a_stop", why=lt["why"])
                continue
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
                )


_TOTALS: collections.Counter = collections.Counter()

EgmMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20")),
    stateful_step_count=int(os.environ.get("FUZZ_STEPS", "30")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
TestControlStatefulEgm = EgmMachine.TestCase


def teardown_module(module):
    if os.environ.get("FUZZ_TOTALS"):
        with open(os.environ["FUZZ_TOTALS"], "a") as f:
            f.write(json.dumps(dict(_TOTALS)) + "\n")


@contextlib.contextmanager
def _egm_rig(**loop_kwargs):
    """A composite robot (UDP gantry server + recording EGM controller) and a loop holding it at home (not started)."""
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
    loop = RealTimeLoop(ROBOT, driver, policy=lambda obs: ROBOT.home, rate_hz=RATE_HZ, policy_rate_hz=POLICY_HZ,
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
    """A feedback that keeps jumping (here a glitch of 0.3 rad for 10 ms every 25 ms) gives no position to start
    from: start() refuses, naming the joint, and nothing is sent that moves the arm."""
    with _egm_rig() as (controller, loop):
        before = controller.position
        stop = threading.Event()

        def flicker():
            while not stop.is_set():
                _glitch(controller, 0.3, 10)
                time.sleep(0.025)

        thread = threading.Thread(target=flicker, daemon=True)
        thread.start()
        try:
            with pytest.raises(RuntimeError, match=r"did not hold still .*joint 4"):
                loop.start()
        finally:
            stop.set()
            thread.join()
        assert not loop.running
        assert float(np.max(np.abs(controller.position - before))) <= MOVED_LIMIT


def test_a_recovery_during_a_feedback_glitch_does_not_move_the_arm():
    """A recovery restarts the commanded trajectory at the measured position: one asked for during a glitch (which
    the measurement check cannot see: a plausible position, at rest) took the glitched position and moved the arm
    there. It now waits until the position held still for steady_window_s, and restarts where the arm is."""
    with _egm_rig() as (controller, loop):
        loop.start()
        time.sleep(0.2)
        assert loop.lifecycle == "active", loop.stop_reasons
        loop.estop()
        time.sleep(0.3)
        assert loop.lifecycle == "stopped"
        before = controller.position
        _glitch(controller, 0.3, 45)
        # the loop sees the glitch (its first state latches measurement_invalid: a 0.3 rad step is an implausible
        # velocity); then the position is plausible and at rest, as the recovery requires, but 0.3 rad off
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            obs = loop.observation()
            if obs is not None and abs(obs["measured_position"][4] - before[2]) > 0.2:
                break
            time.sleep(0.001)
        else:
            pytest.fail("the loop never saw the glitch")
        time.sleep(0.01)
        result = loop.recover()
        assert result.ok, result
        time.sleep(0.5)
        moved = float(np.max(np.abs(controller.position - before)))
        assert moved <= MOVED_LIMIT, f"the arm moved {moved:.4f} rad after a recovery during a feedback glitch"
        assert loop.lifecycle == "active", loop.stop_reasons
