"""Process signals around a running control loop (robot_rt/control/signals.py): SIGTERM / SIGHUP end the run by the
loop's controlled stop instead of killing the process mid-motion, and no signal interrupts that stop (audit 9: a
SIGTERM during the stop ramp, a SIGHUP, or a SIGTERM to a script left the robot on its last moving command until its
own timeout stop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from robot_rt.control import signals
from robot_rt.control.runlog import read_runlog

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


@pytest.fixture
def default_handlers():
    """SIGTERM / SIGHUP at their default action for the test (pytest or the CI may have changed them), restored."""
    saved = {s: signal.getsignal(s) for s in signals.TERMINATION_SIGNALS}
    for s in signals.TERMINATION_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_acquire_takes_over_default_actions_only_and_release_restores_them(default_handlers):
    def own(signum, frame):
        pass

    signal.signal(signal.SIGHUP, own)  # a handler the program installed: left alone
    assert signals.acquire()
    try:
        assert signal.getsignal(signal.SIGTERM) is signals._on_termination
        assert signal.getsignal(signal.SIGHUP) is own
        with pytest.raises(signals.Terminated) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)  # (the handler runs at the next bytecode boundary)
        assert info.value.signum == signal.SIGTERM and "SIGTERM" in str(info.value)
        assert signals.acquire()  # a second loop
        signals.release()
        assert signal.getsignal(signal.SIGTERM) is signals._on_termination  # one loop still runs
    finally:
        signals.release()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGHUP) is own


def test_an_ignored_signal_stays_ignored(default_handlers):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
    assert signals.acquire()
    try:
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signals.release()


def test_shielded_holds_signals_until_the_block_has_ended(default_handlers):
    assert signals.acquire()
    try:
        done = []
        with pytest.raises(signals.Terminated):
            with signals.shielded():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                done.append(True)  # the block ran to its end
        assert done == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # back
        with pytest.raises(KeyboardInterrupt):  # the first held signal is the one raised
            with signals.shielded():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
        with pytest.raises(signals.Terminated) as info:  # a block ending by an exception: the signal, from it
            with signals.shielded():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                raise ValueError("the block's own")
        assert isinstance(info.value.__cause__, ValueError)
        with pytest.raises(ValueError):  # nothing held: the block's own exception
            with signals.shielded():
                raise ValueError("the block's own")
        assert signals._shield_depth == 0 and not signals._held
    finally:
        signals.release()


def test_nothing_is_installed_from_another_thread(default_handlers):
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("acquired", signals.acquire()))
    t.start()
    t.join()
    assert got["acquired"] is False and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from robot_rt.control.loop import RealTimeLoop
    from robot_rt.robot import load_robot

    robot = load_robot()
    home = np.asarray(robot.home, dtype=float)

    def policy(obs):  # the gantry's first axis swings at up to ~0.6 m/s
        q = home.copy()
        q[0] += 0.2 * np.sin(3.0 * obs["tick"] * 1e-3)
        return q

    loop = RealTimeLoop(robot, policy=policy, log_path=sys.argv[1]).start()
    print("running", flush=True)
    time.sleep(30)  # no stop(): the script relies on the signal's exception and the exit handler
    """
)


def _ended_at_rest(path):
    log = read_runlog(path)
    t = log.ticks
    v = np.abs(t["command_velocity"])
    assert np.all(v[-1] == 0) and np.all(t["command_acceleration"][-1] == 0)  # the controlled stop, to rest
    assert v.max() > 0.1  # it was moving before
    assert log.clean
    return log


@pytest.mark.parametrize("sequence", [("SIGTERM",), ("SIGHUP",), ("SIGINT", "SIGTERM")])
def test_a_script_killed_mid_motion_ends_by_the_controlled_stop(tmp_path, sequence):
    """A script that never calls stop(): SIGTERM / SIGHUP (and a SIGTERM during the stop Ctrl-C began) end it with
    the loop's ramp to rest, not with the robot on its last moving command."""
    (tmp_path / "run.py").write_text(SCRIPT)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PF_NUM_THREADS", None)
    proc = subprocess.Popen(
        [sys.executable, "run.py", "run.rrlog"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "running", proc.stderr.read()
        time.sleep(1.0)  # moving by now
        for name in sequence:
            proc.send_signal(getattr(signal, name))
            time.sleep(0.03)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    # an uncaught exception (Python ends an uncaught KeyboardInterrupt by SIGINT, after the exit handlers)
    assert proc.returncode == (-signal.SIGINT if sequence[0] == "SIGINT" else 1), (proc.returncode, err)
    assert ("Terminated" if sequence[0] != "SIGINT" else "KeyboardInterrupt") in err, err
    _ended_at_rest(tmp_path / "run.rrlog")


def test_a_loop_stopped_from_another_thread_gives_the_signal_its_default_action_back(tmp_path):
    """release() off the main thread cannot restore the handler: the next SIGTERM with no loop running then acts
    as it would have without us (the process ends by it), instead of raising into a program that runs no loop."""
    (tmp_path / "run.py").write_text(
        textwrap.dedent(
            """
            import os, signal, threading, time
            import numpy as np
            from robot_rt.control.loop import RealTimeLoop
            from robot_rt.robot import load_robot

            loop = RealTimeLoop(load_robot(), policy=lambda obs: np.asarray(obs["measured_position"])).start()
            time.sleep(0.2)
            t = threading.Thread(target=loop.stop)
            t.start()
            t.join()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(2)
            print("survived")
            """
        )
    )
    proc = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, proc.stdout, proc.stderr)
    assert "survived" not in proc.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_leaves_the_parents_loop_alone(tmp_path):
    """Audit 10: a child forked while a loop ran stopped the parent's loop object at its exit (3 s of waiting, a
    goodbye on the parent's session, a chunk written into the parent's run log) and raised Terminated on SIGTERM.
    Now the child forgets the parent's loops: it exits at once, SIGTERM ends it as usual, the parent's log is clean."""
    (tmp_path / "run.py").write_text(
        textwrap.dedent(
            """
            import os, signal, sys, time
            import numpy as np
            from robot_rt.control.loop import RealTimeLoop
            from robot_rt.control.runlog import read_runlog
            from robot_rt.robot import load_robot

            loop = RealTimeLoop(load_robot(), policy=lambda obs: np.asarray(obs["measured_position"]),
                                log_path="run.rrlog").start()
            time.sleep(0.3)
            for mode in ("exit", "sigterm"):
                t0 = time.monotonic()
                pid = os.fork()
                if pid == 0:
                    if mode == "exit":
                        loop.stop()  # (a stray call in the child: nothing happens)
                        sys.exit(0)  # the exit handler runs here
                    time.sleep(30)
                    os._exit(0)
                if mode == "sigterm":
                    time.sleep(0.2)
                    os.kill(pid, signal.SIGTERM)
                _, status = os.waitpid(pid, 0)
                print(mode, os.waitstatus_to_exitcode(status), round(time.monotonic() - t0, 2))
            assert loop.running and loop.lifecycle == "active", loop.lifecycle
            loop.stop()
            log = read_runlog("run.rrlog")
            print("clean", log.clean, loop.stop_reasons)
            """
        )
    )
    proc = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    code, seconds = lines["exit"].split()
    assert code == "0" and float(seconds) < 1.0, lines
    assert lines["sigterm"].split()[0] == str(-signal.SIGTERM), lines  # killed by it, not a Terminated exception
    assert lines["clean"] == "True ['shutdown']", lines


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_childs_exit_keeps_the_parents_egm_run_marker(tmp_path):
    """Review of audit 10: the child's copy of an EGM driver removed the parent's run marker when it was freed at the
    child's exit; the parent's run then ended in an e-stop nobody recovered, and the next run moved the arm
    0.25 rad. Now a forked copy of a driver only closes its own descriptors: the next run latches robot_fault."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    (tmp_path / "run.py").write_text(
        textwrap.dedent(
            f"""
            import os, socket, sys, time
            sys.path.insert(0, {tests_dir!r})
            import numpy as np
            from helpers.robot import wait_until, with_wide_workspace
            from robot_rt.control.egm import egm_run_marker_path, make_egm_driver
            from robot_rt.control.loop import RealTimeLoop
            from robot_rt.control.policies import Sine
            from robot_rt.robot import load_robot
            from robot_rt.sim.egm_controller import SimulatedEgmController

            robot = load_robot()
            arm_joints = slice(2, 8)
            arm = with_wide_workspace(robot, joints=robot.joints[2:], home=robot.home[2:])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            url = f"egm://127.0.0.1:{{port}}"
            marker = egm_run_marker_path(url)
            driver = make_egm_driver(url, arm)
            driver.start()
            ctl = SimulatedEgmController(("127.0.0.1", driver.local_port), robot.position_min[arm_joints],
                                         robot.position_max[arm_joints], robot.velocity_limit[arm_joints],
                                         robot.home[arm_joints]).start()
            wait_until(lambda: driver.read_state() is not None, what="EGM state")
            loop = RealTimeLoop(arm, driver, policy=None, rate_hz=1000.0).start()
            for _ in range(100):
                obs = loop.wait_observation(timeout_s=0.1)
                if obs is not None:
                    loop.send_command(np.asarray(obs["measured_position"]), obs)
            pid = os.fork()
            if pid == 0:
                sys.exit(0)  # the child's copies are freed at its exit
            os.waitpid(pid, 0)
            print("marker after the child", marker.exists())
            loop.estop()
            wait_until(lambda: loop.lifecycle == "stopped", what="the e-stop")
            loop.stop()  # ends in a stop nobody recovered: the marker stays
            time.sleep(0.3)
            held = ctl.position.copy()
            driver = make_egm_driver(url, arm)
            driver.start()
            wait_until(lambda: driver.read_state() is not None, what="EGM state")
            loop = RealTimeLoop(arm, driver, policy=Sine(arm), rate_hz=1000.0, policy_rate_hz=50).start()
            time.sleep(1.0)
            print("next run", loop.stop_reasons, round(float(np.max(np.abs(ctl.position - held))), 4))
            loop.stop()
            ctl.stop()
            """
        )
    )
    env = dict(os.environ, ROBOT_RT_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "marker after the child True" in proc.stdout, proc.stdout
    assert "next run ['robot_fault'] 0.0" in proc.stdout, proc.stdout
