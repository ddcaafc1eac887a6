"""Regression tests for four fixes of the tenth audit's reviews that had no test of their own:

- 4ec5624: the at-fork reset of robot_rt.control (running loops, signal bookkeeping) took signals' lock, which a
  thread the child does not have could hold: 23 of 50 children forked from a worker thread hung;
- 4ec5624 / 9772d69: `robot-rt sim-server` writes its state file "running" before the robot port listens;
- 1f376c5: a forked child's copy of a UDP driver closes its camera receiver without a goodbye on the parent's
  camera session;
- 1f376c5: a sim-server start that fails after the robot port listened stops the server and records its end.

The forking and the servers run in subprocesses (fresh interpreters, new process groups killed on a timeout), so a
hang fails a test instead of hanging the run, and nothing forks the pytest process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from helpers.ports import free_port
from helpers.robot import wait_until

from robot_rt.control import protocol as P

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(os, "register_at_fork"), reason="POSIX fork")

KEY = b"fork and server regressions key 0123456789abcdef0123456789abcdef"


def _env() -> dict:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def _kill_group(proc: subprocess.Popen) -> None:
    """Ends `proc` and whatever it forked (it runs in a process group of its own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run_script(source: str, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"script still running after {timeout_s:.0f} s:\n{out}\n{err}") from None
    finally:
        _kill_group(proc)  # (children it left behind)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _key_file(tmp_path) -> str:
    path = tmp_path / "robot.key"
    path.write_bytes(KEY + b"\n")
    path.chmod(0o600)
    return str(path)


# (used by the scripts below) waits for forked children without blocking: WNOHANG polling until a deadline, then
# SIGKILL for the stragglers. {pid: exit code, or None for a child killed at the deadline}
WAIT_CHILDREN = """
def wait_children(pids, timeout_s):
    import os, signal, time
    left, codes = set(pids), {}
    deadline = time.monotonic() + timeout_s
    while left and time.monotonic() < deadline:
        for pid in list(left):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
                left.discard(pid)
        time.sleep(0.005)
    for pid in left:  # hung: killed, so that the run goes on
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        codes[pid] = None
    return codes
"""

# `pump(read, ...)`: calls read() every 2 ms, as a loop's ticks do, until `until()` holds or `seconds` have passed
PUMP = """
def pump(read, seconds=None, until=None, timeout_s=60.0, describe=None):
    import time
    t0 = time.monotonic()
    while True:
        read()
        elapsed = time.monotonic() - t0
        if until is not None and until():
            return
        if seconds is not None and elapsed >= seconds:
            return
        if elapsed > timeout_s:
            raise SystemExit(f"timed out: {describe() if describe else ''}")
        time.sleep(0.002)
"""

# ---------------------------------------------------------------------------------------------------------------------
# 1. 4ec5624: the at-fork reset takes no lock a vanished thread may hold

FORK_UNDER_LOCK_SCRIPT = (
    WAIT_CHILDREN
    + """
import json, os, signal, sys, threading, time
from robot_rt.control import loop  # registers the at-fork reset (its running loops, then signals')
from robot_rt.control import signals

PER_PHASE, TIMEOUT_S = int(sys.argv[1]), float(sys.argv[2])
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def child(check_handlers):
    # reached only once the at-fork handlers have returned: the parent's loops and the signal bookkeeping are gone,
    # and (where the parent held them steady) the handlers taken for its loops are back at their default
    ok = not loop._RUNNING_LOOPS and signals._users == 0 and signals._shield_depth == 0 and not signals._held
    if check_handlers:
        ok = ok and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    os._exit(0 if ok else 3)


def fork_children(n, check_handlers, pids):
    for _ in range(n):
        time.sleep(0.002)  # (the lock takers run meanwhile; this fork waits for the GIL, taken from one inside it)
        pid = os.fork()
        if pid == 0:
            child(check_handlers)
        pids.append(pid)


report = {}
# Phase 1: a worker thread forks while the main thread starts and ends loops' signal handling (acquire / release,
# a shield around each end, as RealTimeLoop.start() and stop() do): the main thread holds signals' lock most of the
# time, and it does not exist in the children.
pids = []
forker = threading.Thread(target=fork_children, args=(PER_PHASE, False, pids))
forker.start()
while forker.is_alive():
    signals.acquire()
    with signals.shielded():
        signals.release()
forker.join()
report["worker_thread_forks"] = sorted(wait_children(pids, TIMEOUT_S).values(), key=str)

# Phase 2: the main thread forks while two worker threads end loops (release() from another thread takes the lock);
# the handlers taken for a loop stay installed in the parent and must be the default ones in each child.
assert signals.acquire() and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
stop = threading.Event()


def releaser():
    while not stop.is_set():
        signals.release()


takers = [threading.Thread(target=releaser) for _ in range(2)]
for t in takers:
    t.start()
pids = []
try:
    fork_children(PER_PHASE, True, pids)
finally:
    stop.set()
    for t in takers:
        t.join()
report["main_thread_forks"] = sorted(wait_children(pids, TIMEOUT_S).values(), key=str)
report["parent_handler_still_ours"] = signal.getsignal(signal.SIGTERM) is signals._on_termination
print(json.dumps(report))
"""
)


def test_children_forked_while_threads_hold_the_signals_lock_all_exit():
    """4ec5624: reset_in_forked_child (run by loop's os.register_at_fork handler in every forked child) took signals'
    lock, which another thread of the parent could hold at the fork; that thread does not exist in the child, so the
    child hung in os.fork() forever (23 of 50 children forked from a worker thread). Now it takes a fresh lock: 50
    children, forked from a worker thread and from the main thread while other threads keep taking the lock, all
    exit by themselves, with the bookkeeping reset."""
    per_phase = 25
    proc = _run_script(FORK_UNDER_LOCK_SCRIPT, str(per_phase), "10")
    assert proc.returncode == 0, proc.stderr
    report = _last_json(proc.stdout)
    assert report["parent_handler_still_ours"], report  # (the phase-2 children did have something to reset)
    for phase in ("worker_thread_forks", "main_thread_forks"):
        codes = report[phase]
        hung = sum(code is None for code in codes)
        assert len(codes) == per_phase and hung == 0, f"{phase}: {hung} of {per_phase} children hung: {codes}"
        assert codes == [0] * per_phase, f"{phase}: a child's bookkeeping was not reset (exit 3): {codes}"


# ---------------------------------------------------------------------------------------------------------------------
# 2. 4ec5624 / 9772d69: the state file says "running" by the time the robot port answers

# `robot-rt sim-server ARGS...`, held right after SimServer.start() (the robot port listens) until a line arrives on
# stdin: the first moment the port answers lasts until the test has looked at the state file.
HELD_AFTER_LISTEN_SCRIPT = """
import sys
from robot_rt.cli import main
from robot_rt.sim import server

_start = server.SimServer.start


def start(self):
    out = _start(self)
    sys.stdin.readline()
    return out


server.SimServer.start = start
sys.exit(main(sys.argv[1:]))
"""


def test_state_file_says_running_when_the_robot_port_first_answers(tmp_path):
    """9772d69 wrote the state file "running" after server.start(): a controller could connect (and the process be
    killed) while the file still held the previous process's record ("clean": its successor came up clean after a
    stop nobody recovered). 4ec5624 writes it before the robot port listens: the first answer of the robot port finds
    it "running" with this process's pid."""
    from robot_rt.control.udp import make_udp_driver
    from robot_rt.robot import limits_digest, load_robot

    port, state = free_port(), tmp_path / "bridge.json"
    previous = {"state": "clean", "pid": os.getpid(), "time": 0.0}  # the last process's record (another pid)
    state.write_text(json.dumps(previous))
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD_AFTER_LISTEN_SCRIPT, "sim-server", "--no-camera", "--port", str(port),
         "--state-file", str(state), "--key-file", _key_file(tmp_path), "--duration", "0.5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        start_new_session=True,
    )  # fmt: skip
    robot = load_robot()
    driver = make_udp_driver(
        f"udp://127.0.0.1:{port}?camera=none", robot.dof, key=KEY, limits_digest=limits_digest(robot)
    )
    try:
        driver.start()  # (says hello every 50 ms until the port answers)

        def answered():
            assert proc.poll() is None, proc.communicate()
            return driver.read_state() is not None and driver.connected

        wait_until(answered, timeout_s=60, what="the robot port's first answer")
        at_first_answer = json.loads(state.read_text())
        driver.stop()
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        driver.stop()
        _kill_group(proc)
        proc.wait()
    assert at_first_answer["state"] == "running" and at_first_answer["pid"] == proc.pid, at_first_answer
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[0])["robot_port"] == port
    assert json.loads(state.read_text())["state"] == "clean"  # (no session when it ended)


# ---------------------------------------------------------------------------------------------------------------------
# 3. 1f376c5: a forked child's copy of the driver sends no goodbye on the parent's camera session

FORKING_CONTROLLER_SCRIPT = (
    WAIT_CHILDREN
    + PUMP
    + """
import json, os, sys, time
from robot_rt.control.udp import make_udp_driver
from robot_rt.robot import limits_digest, load_robot

robot_port, camera_port, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
robot = load_robot()
driver = make_udp_driver(f"udp://127.0.0.1:{robot_port}?camera={camera_port}", robot.dof, key=key,
                         limits_digest=limits_digest(robot))


def camera():
    return driver.stats()["camera"]


def tick():  # the robot link and the camera
    driver.read_state()
    driver.read_ball_observations()


driver.start()
pump(tick, until=lambda: driver.connected and camera()["established"] and camera()["frames"] >= 20, describe=camera)
report = {"before": {"sessions": camera()["sessions_established"]}}
for mode in ("close", "exit"):
    pid = os.fork()
    if pid == 0:
        if mode == "close":
            driver.stop()  # the child closes its copy of the driver (and of its camera receiver)
            os._exit(0)
        sys.exit(0)  # the child's copy is freed at its exit
    # (the parent sends nothing on the camera session until the child has ended)
    code = wait_children([pid], 30.0)[pid]
    frames = camera()["frames"]
    pump(tick, seconds=1.0)  # twice the receiver's session timeout: a session lost meanwhile would be a new one by now
    report[mode] = {"child_exit": code, "frames_after": camera()["frames"] - frames,
                    "sessions": camera()["sessions_established"], "established": camera()["established"]}
print(json.dumps(report), flush=True)
driver.stop()  # (the parent's own goodbye)
"""
)


def test_a_forked_childs_driver_copy_leaves_the_parents_camera_session_alone():
    """1f376c5: a forked child's copy of a UdpDriver (its at-exit destructor, or a stray stop() in the child) sent a
    goodbye under the parent's camera session (same socket, same key, next sequence number): the camera ended the
    parent's subscription, which streamed nothing until its receiver timed out and subscribed again. Now the copy
    closes its descriptors only: the camera sees one subscription for the whole run and keeps streaming to it."""
    from robot_rt.sim.camera import CameraServer
    from robot_rt.sim.server import SimServer

    # (timeouts far above anything here: a session the test sees end was ended by a goodbye, not by a slow machine)
    server = SimServer(port=0, camera=False, key=KEY, session_timeout_s=30.0).start()
    camera = CameraServer(port=0, rate_hz=150.0, key=P.camera_link_key(KEY), subscriber_timeout_s=30.0).start()
    try:
        proc = _run_script(FORKING_CONTROLLER_SCRIPT, str(server.port), str(camera.port), KEY.decode())
        camera_stats = dict(camera.stats)
        robot_stats = server.robot_server.stats()
    finally:
        camera.stop()
        server.stop()
    assert proc.returncode == 0, proc.stderr
    report = _last_json(proc.stdout)
    for mode in ("close", "exit"):
        r = report[mode]
        assert r["child_exit"] == 0, (mode, report, proc.stderr)
        # the parent's session is the one it had: never ended, never re-established, frames kept coming
        assert r["sessions"] == 1 and r["established"], (mode, report)
        assert r["frames_after"] >= 20, (mode, report)
    # the camera's side: one subscription in the whole run, ended once (by the parent's own goodbye at its end)
    assert camera_stats["subscribed"] == 1, camera_stats
    assert camera_stats["unsubscribed"] == 1, camera_stats
    # (and the robot link's session, 4ec5624: one for the whole run, no goodbye from a child's copy on it either)
    assert robot_stats["sessions"] == 1, robot_stats


# ---------------------------------------------------------------------------------------------------------------------
# 4. 1f376c5: a start that fails after the robot port listened stops the server and records its end

# `robot-rt sim-server ARGS...` whose camera port (argv) is taken: SimServer.start() fails after the robot port
# listens. In that window a controller connects and commands the robot (is the robot left stopped, unrecorded?). The
# SimServer object stays referenced here, so only serve()'s own stop() can close its port.
FAILED_START_SCRIPT = """
import json, os, socket, sys, time
from robot_rt.cli import main
from robot_rt.control.udp import make_udp_driver
from robot_rt.robot import limits_digest
from robot_rt.sim import camera, server
import robot_rt.estimation  # (the camera's first import: done before the window, not in it)

controller = sys.argv[1] == "controller"
servers, drivers, seen = [], [], {}
_init = server.SimServer.__init__


def init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    servers.append(self)


_camera_init = camera.CameraServer.__init__


def camera_init(self, *args, **kwargs):  # the step after the robot port listens
    srv = servers[-1]
    seen["listening"] = srv.robot_server.running
    if controller:
        robot = srv.robot
        d = make_udp_driver(f"udp://127.0.0.1:{srv.port}?camera=none", robot.dof, key=open(sys.argv[2], "rb").read().strip(),
                            limits_digest=limits_digest(robot))
        drivers.append(d)
        d.start()
        t_end = time.monotonic() + 60
        while srv.robot_server.stats()["commands_applied"] < 20:  # the robot follows this controller's commands
            assert time.monotonic() < t_end, srv.robot_server.stats()
            s = d.read_state()
            if s is not None:
                d.write_command(s["position"], [0.0] * robot.dof)
            time.sleep(0.002)
        seen["handshakes"] = srv.robot_server.stats()["handshakes"]
    _camera_init(self, *args, **kwargs)


server.SimServer.__init__ = init
camera.CameraServer.__init__ = camera_init
code = main(sys.argv[3:])
srv = servers[-1]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    try:
        s.bind(("127.0.0.1", srv.port))
        free = True
    except OSError:
        free = False
print(json.dumps(dict(seen, code=code, running=srv.robot_server.running, port=srv.port, port_free=free, pid=os.getpid())))
for d in drivers:
    d.stop()
"""


@pytest.mark.parametrize(
    ("controller", "last_record"),
    [(True, "clean"), (False, "clean"), (False, "stopped")],
    ids=["a_controller_got_in", "no_controller", "no_controller_came_up_stopped"],
)
def test_a_start_failing_after_the_listen_stops_the_server_and_records_its_end(tmp_path, controller, last_record):
    """1f376c5: SimServer.start() binds the camera's port after the robot's; when that failed (the port taken), serve()
    returned 2 without stopping the server (its robot port went on answering for as long as the object lived) and
    recorded the start as one that never ran ("clean", kept from the last run), also when a controller had got in
    and commanded the robot, which the stop at the end left with an unacknowledged stop (the next start came up
    clean: a stop nobody recovered, forgotten). Now it stops the server first (the port is free again) and records
    how the run ended: "stopped" after a commanding controller; the record as it was when none got in ("clean"; and
    "stopped" for a server that came up stopped, whose own "running" record had stayed behind)."""
    state = tmp_path / "bridge.json"
    state.write_text(json.dumps({"state": last_record, "pid": os.getpid(), "time": 0.0}))  # the last process's record
    key_file = _key_file(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:  # the camera's port, in use
        taken.bind(("127.0.0.1", 0))
        camera_port = taken.getsockname()[1]
        proc = _run_script(
            FAILED_START_SCRIPT, "controller" if controller else "none", key_file, "sim-server", "--port", "0",
            "--camera-port", str(camera_port), "--state-file", str(state), "--key-file", key_file,
            "--duration", "5",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = _last_json(proc.stdout)
    assert report["listening"], report  # (the failure came after the robot port listened)
    assert report["code"] == 2 and "cannot start" in proc.stderr, (report, proc.stderr)
    assert "in use" in proc.stderr, proc.stderr  # (EADDRINUSE: the camera's port)
    # the server was stopped: its robot port is closed and free again, though the object lives on
    assert not report["running"] and report["port_free"], report
    record = json.loads(state.read_text())
    assert record["state"] != "running", record
    if controller:
        assert report["handshakes"] >= 1, report
        # its end is recorded by this process: the commanding session's stop is unacknowledged
        assert record["state"] == "stopped" and record["pid"] == report["pid"], record
    else:  # a start that never ran keeps the record as it was
        assert record["state"] == last_record, record


# ---------------------------------------------------------------------------------------------------------------------
# Found while writing the tests above (fixed with them): a child forked inside a shield kept its SIGINT hold; a forked
# copy of the sim robot server, and an explicit close() of a forked CameraReceiver copy, said goodbye on the parent's
# sessions.

SHIELDED_FORK_SCRIPT = (
    WAIT_CHILDREN
    + """
import json, os, signal, threading, time
from robot_rt.control import loop, signals  # (loop registers the at-fork reset)

codes = {}


def forker():
    pid = os.fork()
    if pid == 0:
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.2)
            os._exit(3)  # Ctrl-C swallowed: still running
        except KeyboardInterrupt:
            os._exit(0)
    codes.update(wait_children([pid], 10.0))


with signals.shielded():  # as during RealTimeLoop.stop(): the main thread holds SIGINT
    t = threading.Thread(target=forker)
    t.start()
    t.join()
print(json.dumps({"child_exit": list(codes.values())[0],
                  "parent_handler_restored": signal.getsignal(signal.SIGINT) is signal.default_int_handler}))
"""
)


def test_a_child_forked_inside_a_shield_is_interrupted_by_ctrl_c():
    """A child forked (from a worker thread) while the main thread was inside signals.shielded() kept the shield's
    SIGINT hold: Ctrl-C was swallowed in the child for good. The at-fork reset puts Python's handler back."""
    proc = _run_script(SHIELDED_FORK_SCRIPT, timeout_s=60.0)
    assert proc.returncode == 0, proc.stderr
    report = _last_json(proc.stdout)
    assert report == {"child_exit": 0, "parent_handler_restored": True}, report


FORKED_SERVER_COPY_SCRIPT = (
    WAIT_CHILDREN
    + PUMP
    + """
import json, os, sys, time
from robot_rt.control.udp import make_udp_driver
from robot_rt.robot import limits_digest
from robot_rt.sim.server import SimServer

key = sys.argv[1].encode()
server = SimServer(port=0, camera=False, key=key, session_timeout_s=30.0).start()
robot = server.robot
driver = make_udp_driver(f"udp://127.0.0.1:{server.port}?camera=none", robot.dof, key=key,
                         limits_digest=limits_digest(robot))
driver.start()
pump(driver.read_state, until=lambda: driver.connected)
codes = []
for mode in ("exit", "stop"):
    pid = os.fork()
    if pid == 0:
        if mode == "stop":
            server.stop()  # a stray stop() of the child's copy
            os._exit(0)
        sys.exit(0)  # the child's copy is freed at its exit
    codes += list(wait_children([pid], 20.0).values())
    pump(driver.read_state, seconds=0.4)
stats = driver.stats()
report = {"child_exits": codes, "connected": driver.connected, "rx_duplicate": stats["rx_duplicate"],
          "sessions_established": stats["sessions_established"], "server_running": server.robot_server.running,
          "server_sessions": server.robot_server.stats()["sessions"]}
print(json.dumps(report), flush=True)
driver.stop()
server.stop()
"""
)


def test_a_forked_copy_of_the_sim_robot_server_touches_nothing_of_the_parents():
    """A forked child's copy of a running sim robot server (freed at the child's exit, or stopped there) joined a
    thread the child does not have and said goodbye on the parent's controller session (same key, a sequence number
    the parent had used: the driver counted it as a duplicate; a goodbye with a fresh number would have ended the
    session). Now the copy closes its descriptor only: the parent's server and session run on untouched."""
    proc = _run_script(FORKED_SERVER_COPY_SCRIPT, KEY.decode(), timeout_s=90.0)
    assert proc.returncode == 0, proc.stderr
    report = _last_json(proc.stdout)
    assert report["child_exits"] == [0, 0], report
    assert report["rx_duplicate"] == 0, report  # no packet of the parent's session came from a child
    assert report["connected"] and report["server_running"], report
    assert report["sessions_established"] == 1 and report["server_sessions"] == 1, report


FORKED_RECEIVER_CLOSE_SCRIPT = (
    WAIT_CHILDREN
    + PUMP
    + """
import json, os, sys, time
from robot_rt import _control

camera_port, key = int(sys.argv[1]), sys.argv[2].encode()
receiver = _control.CameraReceiver(camera_port=camera_port, key=_control.camera_link_key(key))
receiver.open()
pump(receiver.read, until=lambda: receiver.stats()["established"] and receiver.stats()["frames"] >= 20)
pid = os.fork()
if pid == 0:
    receiver.close()  # an explicit close() of the child's copy
    os._exit(0)
code = wait_children([pid], 20.0)[pid]
frames = receiver.stats()["frames"]
pump(receiver.read, seconds=1.0)  # twice the receiver's session timeout
st = receiver.stats()
print(json.dumps({"child_exit": code, "frames_after": st["frames"] - frames,
                  "sessions": st["sessions_established"], "established": st["established"]}), flush=True)
receiver.close()
"""
)


def test_close_of_a_forked_camera_receiver_copy_sends_no_goodbye():
    """CameraReceiver.close() in a forked child said goodbye on the parent's camera session (the camera ended the
    parent's subscription). Only the process that opened the receiver says goodbye."""
    from robot_rt.sim.camera import CameraServer

    camera = CameraServer(port=0, rate_hz=150.0, key=P.camera_link_key(KEY), subscriber_timeout_s=30.0).start()
    try:
        proc = _run_script(FORKED_RECEIVER_CLOSE_SCRIPT, str(camera.port), KEY.decode(), timeout_s=90.0)
        camera_stats = dict(camera.stats)
    finally:
        camera.stop()
    assert proc.returncode == 0, proc.stderr
    report = _last_json(proc.stdout)
    assert report["child_exit"] == 0 and report["sessions"] == 1 and report["established"], report
    assert report["frames_after"] >= 20, report
    assert camera_stats["subscribed"] == 1 and camera_stats["unsubscribed"] == 1, camera_stats
