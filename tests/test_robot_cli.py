"""`robot-rt run` (sim and udp:// against a `robot-rt sim-server` subprocess), `robot-rt replay`.

`run --duration` is wall time by design, so the checks relate counts to each other (every tick logged, a command
per tick) instead of to the wall time; the achieved rate is measured in bench/bench_control.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.ports import free_port

from robot_rt.cli import build_parser, main
from robot_rt.control.runlog import read_runlog
from robot_rt.control.udp import LINK_EVENT_CODES

CLI = [sys.executable, "-m", "robot_rt.cli"]


def _env():
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start_sim_server(*extra):
    proc = subprocess.Popen(
        [*CLI, "sim-server", "--port", "0", "--duration", "60", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"sim-server did not start: {proc.stderr.read()}")
    info = json.loads(line)
    assert info["event"] == "listening" and info["host"] == "127.0.0.1"
    return proc, info


def _stop(proc):
    proc.terminate()
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


def _check_log(path: Path, ticks: int):
    log = read_runlog(path)
    assert log.clean and log.truncated_bytes == 0
    assert ticks >= 50 and abs(len(log.ticks) - ticks) <= 1  # it ran, and every tick is in the log
    meta = log.meta
    cmd = log.ticks["command_position"]
    assert np.all(cmd >= np.asarray(meta["position_min"]) - 1e-9)
    assert np.all(cmd <= np.asarray(meta["position_max"]) + 1e-9)
    # the sine policy moved the gantry
    assert np.ptp(log.ticks["measured_position"][:, 0]) > 0.05
    return log


def test_parser_has_the_control_commands():
    parser = build_parser()
    args = parser.parse_args(["run", "--robot", "udp://127.0.0.1:5000", "--duration", "2"])
    assert args.func.__name__ == "cmd_run" and args.duration == 2.0
    assert parser.parse_args(["sim-server"]).port == 47100
    assert parser.parse_args(["replay", "x.rrlog"]).log == "x.rrlog"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--duration", "-1"])
    # what decides whether a robot state is current is capped at 1 s, as the loop's watchdogs are (an audit)
    assert parser.parse_args(["run", "--link-timeout", "1", "--late-threshold", "0.5"]).link_timeout == 1.0
    for option in ("--link-timeout", "--late-threshold"):
        with pytest.raises(SystemExit):
            parser.parse_args(["run", option, "5"])


def test_run_sim_then_replay(tmp_path, capsys):
    log_path = tmp_path / "sim.rrlog"
    summary_path = tmp_path / "sim.json"
    rc = main(
        [
            "run",
            "--robot",
            "sim",
            "--policy",
            "robot_rt.control.policies:sine",
            "--duration",
            "2",
            "--rate",
            "500",
            "--log",
            str(log_path),
            "--summary",
            str(summary_path),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "rate" in out and "Hz" in out  # the status line
    summary = json.loads(summary_path.read_text())
    assert summary["policy_calls"] > 0 and summary["commands_accepted"] > 0
    _check_log(log_path, summary["ticks"])

    rc = main(["replay", str(log_path), "--out", str(tmp_path / "plots")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ticks" in out and "clean_shutdown" in out
    for name in ("joints.png", "ball.png", "timing.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_run_udp_against_sim_server_subprocess(tmp_path):
    server, info = _start_sim_server("--camera-rate", "100", "--serve-interval", "0.5")
    try:
        log_path = tmp_path / "udp.rrlog"
        summary_path = tmp_path / "udp.json"
        proc = subprocess.run(
            [
                *CLI,
                "run",
                "--robot",
                f"udp://127.0.0.1:{info['robot_port']}?camera={info['camera_port']}",
                "--duration",
                "2.5",
                "--rate",
                "500",
                "--log",
                str(log_path),
                "--summary",
                str(summary_path),
            ],
            capture_output=True,
            text=True,
            timeout=90,
            env=_env(),
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "link up" in proc.stdout  # the status line shows the link
        assert "UNAUTHENTICATED" in proc.stderr  # no --key-file: both ends say so loudly
    finally:
        out, err = _stop(server)
    assert "UNAUTHENTICATED" in err
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["event"] == "stopped"
    summary = json.loads(summary_path.read_text())
    ticks = summary["ticks"]
    assert stopped["commands_applied"] > 0.5 * ticks and stopped["commands_out_of_limits"] == 0  # a command a tick
    assert stopped["hard_stops"] == 0 and stopped["camera_frames"] > 0
    assert summary["link"]["states_received"] > 0.5 * ticks and summary["link"]["rx_malformed"] == 0
    assert summary["ball_observations"] > 0
    log = _check_log(log_path, ticks)
    assert log.meta["driver"] == "udp"
    assert len(log.balls) > 0
    assert not np.any(log.events["code"] == LINK_EVENT_CODES["udp_peer_restart"])

    replay = subprocess.run(
        [*CLI, "replay", str(log_path), "--json", "--out", str(tmp_path / "udp_plots")],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert replay.returncode == 0, replay.stderr
    summary = json.loads(replay.stdout)
    assert summary["driver"] == "udp" and summary["ball_detections"] > 0 and summary["command_within_limits"]
    assert all(Path(p).stat().st_size > 5000 for p in summary["plots"])


def test_run_fails_cleanly_without_a_server(tmp_path, capsys):
    rc = main(["run", "--robot", "udp://127.0.0.1:9?camera=none", "--duration", "1", "--log", str(tmp_path / "x")])
    assert rc == 2
    assert "no joint state" in capsys.readouterr().out
    assert main(["run", "--robot", "ftp://x", "--duration", "1"]) == 2
    assert main(["run", "--policy", "no_such_module:f", "--duration", "1"]) == 2


def test_replay_rejects_a_missing_log(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "missing.rrlog")]) == 2
    assert "not found" in capsys.readouterr().err  # errors go to stderr


POLICIES = '''
import time
import numpy as np
from robot_rt.control.loop import PolicyFinished


class Base:
    def __init__(self, robot):
        self.robot = robot
        self.t0 = None

    def t(self):
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        return now - self.t0

    def move(self, t):
        q = self.robot.home.copy()
        q[0] = 0.6 * np.sin(2.5 * t)
        return q


class SilentOnce(Base):
    """Sends nothing from 0.5 s on (the watchdog stops the robot) until a recovery resets it, then goes on."""

    resets = 0

    def reset(self):  # called when the run starts, and by the policy runner after a recovery
        self.resets += 1

    def __call__(self, obs):
        t = self.t()
        return None if t >= 0.5 and self.resets < 2 else self.move(t)


class FinishesAfterOneSecond(Base):
    def __call__(self, obs):
        t = self.t()
        if t > 1.0:
            raise PolicyFinished()
        return self.move(t)


class Fast(Base):
    def __call__(self, obs):
        q = self.robot.home.copy()
        q[0] = 0.9 if int(self.t() / 0.6) % 2 == 0 else -0.9
        return q
'''


def _run_cli(tmp_path, *args, timeout=120, stdin=None):
    (tmp_path / "cli_policies.py").write_text(POLICIES)
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [*CLI, "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def _ended_at_rest(log, stopping_distance):
    """The last tick commands rest, and the final ramp (from the shutdown stop on) stays within the distance."""
    t = log.ticks
    assert np.all(t["command_velocity"][-1] == 0) and np.all(t["command_acceleration"][-1] == 0)
    code = log.meta["event_codes"]["shutdown_stop"]
    start = int(log.events["tick"][log.events["code"] == code][0])
    row = int(np.flatnonzero(t["tick"] == start)[0])
    travel = np.abs(t["command_position"][-1] - t["command_position"][row])
    assert np.all(travel <= stopping_distance + 1e-9), (travel, stopping_distance)
    return t["command_velocity"][row]


def test_a_protective_stop_ends_the_run_at_once_with_exit_3(tmp_path):
    # The policy falls silent at 0.5 s and the watchdog stops the robot. A machine that starves the loop and the
    # simulated robot can make the tracking check stop it first (a CI run on a clean clone: 21 deadline misses and a
    # tracking_error stop within the first 0.54 s; not reproduced beside three busy processes): a protective stop too,
    # exit 3, but not the one under test. Such a run (a tracking_error stop after deadline misses, nothing else) is
    # run again, twice at most; any other outcome fails at once, and so does a third run without the watchdog.
    for attempt in range(3):
        proc = _run_cli(
            tmp_path,
            "--policy",
            "cli_policies:SilentOnce",
            "--duration",
            "30",
            "--log",
            "w.rrlog",
            "--summary",
            "w.json",
        )
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, out + err
        summary = json.loads((tmp_path / "w.json").read_text())
        assert summary["duration_s"] < 25  # not the full 30 s
        reasons = set(summary["stop_reasons_seen"]) - {"shutdown"}
        if "watchdog" in reasons or attempt == 2:
            break
        assert reasons == {"tracking_error"} and summary["deadline_misses"] > 0, out + err
    assert "watchdog" in out and "exit 3 (protective_stop)" in " ".join(out.split())
    for label in ("wake latency", "tick duration", "policy round trip"):
        assert label in out and "p99.9" in out
    log = read_runlog(tmp_path / "w.rrlog")
    assert log.meta["stop_reasons"]["watchdog"] and log.clean


def _run_cli_on_terminal(tmp_path, *args, typeahead: bytes = b"", answer: bytes = b"y\n", timeout_s: float = 120.0):
    """Runs `robot-rt run ARGS` on a pseudo-terminal, as an operator would: `typeahead` is typed at once (before any
    stop), `answer` once the recovery prompt has been shown for 0.3 s. Returns (exit status, output without escapes,
    output when the answer was typed)."""
    import pty
    import re
    import select
    import signal

    (tmp_path / "cli_policies.py").write_text(POLICIES)
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI with the pty as its terminal
        os.chdir(tmp_path)
        os.execve(sys.executable, [*CLI, "run", *args], env)
    out, at_answer, prompt_seen = b"", None, None
    if typeahead:
        os.write(fd, typeahead)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if prompt_seen is None and b"[y/N]" in out:
                prompt_seen = time.monotonic()
            if prompt_seen is not None and at_answer is None and time.monotonic() - prompt_seen > 0.3:
                at_answer = out
                os.write(fd, answer)
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)

    def clean(b):
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", (b or b"").decode(errors="replace")).replace("\r", "")

    return os.waitstatus_to_exitcode(status), clean(out), clean(at_answer)


def test_the_operator_can_recover_at_the_prompt_and_the_run_completes(tmp_path):
    code, out, _ = _run_cli_on_terminal(
        tmp_path, "--policy", "cli_policies:SilentOnce", "--duration", "3", "--recover", "prompt", "--log", "r.rrlog"
    )
    assert code == 0, out
    flat = " ".join(out.split())  # rich wraps long lines
    assert "protective stop" in flat and "recovered: the loop is active again" in flat
    assert "recovered stops: watchdog" in flat
    log = read_runlog(tmp_path / "r.rrlog")
    codes = log.meta["event_codes"]
    assert np.count_nonzero(log.events["code"] == codes["recovered"]) == 1


def test_a_yes_typed_before_the_stop_does_not_answer_the_recovery_prompt(tmp_path):
    """What was typed before the prompt is discarded: the 'y' typed at the start (a habit, a paste) is not the
    operator's answer to a stop nobody has seen yet. Before, input() read it and the robot was recovered."""
    code, out, at_answer = _run_cli_on_terminal(
        tmp_path, "--policy", "cli_policies:SilentOnce", "--duration", "3", "--recover", "prompt",
        "--log", "t.rrlog", typeahead=b"y\n", answer=b"n\n",
    )  # fmt: skip
    assert at_answer is not None and "protective stop" in at_answer, out  # the prompt waited for a fresh answer
    assert "recovered: the loop is active again" not in out
    assert code == 3, out  # the operator said no: the run ends with the protective stop
    log = read_runlog(tmp_path / "t.rrlog")
    assert np.count_nonzero(log.events["code"] == log.meta["event_codes"]["recovered"]) == 0


def test_recover_prompt_without_a_terminal_is_refused(tmp_path):
    """An answer from a pipe was written before any stop: --recover prompt needs an operator at a terminal."""
    proc = _run_cli(
        tmp_path, "--policy", "cli_policies:SilentOnce", "--duration", "3", "--recover", "prompt", stdin=True
    )
    out, err = proc.communicate(input="y\n", timeout=120)
    assert proc.returncode == 2, out + err
    assert "--recover prompt needs an operator at a terminal" in " ".join(out.split())


def test_a_finished_policy_ends_the_run_with_exit_0(tmp_path):
    from robot_rt.control.loop import stopping_distance
    from robot_rt.robot import load_robot

    proc = _run_cli(
        tmp_path, "--policy", "cli_policies:FinishesAfterOneSecond", "--duration", "30", "--log", "f.rrlog",
        "--summary", "f.json",
    )  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert json.loads((tmp_path / "f.json").read_text())["duration_s"] < 25 and "policy_finished" in out
    _ended_at_rest(read_runlog(tmp_path / "f.rrlog"), stopping_distance(load_robot()))


@pytest.mark.parametrize("sequence", [("SIGTERM",), ("SIGHUP",), ("SIGINT", "SIGTERM")])
def test_sigterm_ramps_to_rest_and_exits_0(tmp_path, sequence):
    """SIGTERM or SIGHUP (a closed terminal) end the run by the controlled stop, as Ctrl-C does; a SIGTERM during
    that stop waits for its end (audit 9: it killed the CLI mid-ramp, and SIGHUP killed it mid-motion)."""
    import signal

    from robot_rt.control.loop import stopping_distance
    from robot_rt.robot import load_robot

    proc = _run_cli(tmp_path, "--policy", "cli_policies:Fast", "--duration", "30", "--log", "t.rrlog")
    first = proc.stdout.readline()  # the first status line: the loop runs (and the handler is installed)
    assert "rate" in first, first + proc.stderr.read()
    second = proc.stdout.readline()  # one more (a status line a second): the policy moves the robot by now
    assert "rate" in second, second + proc.stderr.read()
    for name in sequence:
        proc.send_signal(getattr(signal, name))
        time.sleep(0.03)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert ("interrupted" if sequence[0] == "SIGINT" else "terminated") in out
    if len(sequence) > 1:
        assert "terminated during the controlled stop or the report" in " ".join(out.split()), out
    v = _ended_at_rest(read_runlog(tmp_path / "t.rrlog"), stopping_distance(load_robot()))
    assert np.abs(v).max() > 0.0  # it was moving when the stop began (then ramped, not cut)


def test_killing_the_server_ends_the_run_promptly_with_exit_4(tmp_path):
    server, info = _start_sim_server("--no-camera")
    try:
        proc = _run_cli(
            tmp_path, "--robot", f"udp://127.0.0.1:{info['robot_port']}?camera=none", "--duration", "30", "--log",
            "k.rrlog", "--sensor-timeout", "0.15", "--link-timeout", "0.1",  # above a loaded CI machine's stalls
            "--summary", "k.json",
        )  # fmt: skip
        first = proc.stdout.readline()  # the first status line: the loop runs
        assert "link up" in first, first + proc.stdout.read() + proc.stderr.read()
        server.kill()
        out, err = proc.communicate(timeout=60)
    finally:
        server.kill()
        server.communicate()
    assert proc.returncode == 4, out + err
    assert json.loads((tmp_path / "k.json").read_text())["duration_s"] < 25  # prompt, not the remaining 29 s
    assert "link_loss" in out and "exit 4 (link_lost)" in " ".join(out.split())  # (rich wraps long lines)
    log = read_runlog(tmp_path / "k.rrlog")
    codes = log.meta["event_codes"]
    assert np.count_nonzero(log.events["code"] == codes["link_loss_stop"]) == 1
    assert np.all(log.ticks["command_velocity"][-1] == 0)


def test_a_sim_server_restarted_after_a_crash_comes_up_stopped(tmp_path):
    """Audit 10: a new sim-server process on the same port forgot a stop nobody recovered (its last process was
    killed while a controller drove the robot), and the next controller moved the robot with no recovery. Its state
    file now says the last run did not end cleanly: it comes up with an unacknowledged stop, which the next run
    latches as robot_fault (nothing moves). A server that ended cleanly comes up clean."""
    import signal

    port, state = free_port(), tmp_path / "bridge.json"
    args = ("--no-camera", "--port", str(port), "--state-file", str(state))
    server, info = _start_sim_server(*args)
    assert info["came_up_stopped"] is False and info["state_file"] == str(state)
    try:
        proc = _run_cli(
            tmp_path, "--robot", f"udp://127.0.0.1:{port}?camera=none", "--policy", "cli_policies:Fast",
            "--duration", "30", "--recover", "never", "--log", "a.rrlog",
        )  # fmt: skip
        assert "rate" in proc.stdout.readline(), proc.stderr.read()
        assert "rate" in proc.stdout.readline(), proc.stderr.read()  # moving by now
        server.send_signal(signal.SIGKILL)  # the bridge crashes mid-motion
        server.communicate()
        proc.communicate(timeout=60)
        assert proc.returncode == 4  # the link was lost: the controller stopped, muted
    finally:
        server.kill()
    assert json.loads(state.read_text())["state"] == "running"  # (its end was never recorded)
    server, info = _start_sim_server(*args)
    try:
        assert info["came_up_stopped"] is True
        proc = _run_cli(
            tmp_path, "--robot", f"udp://127.0.0.1:{port}?camera=none", "--policy", "cli_policies:Fast",
            "--duration", "3", "--recover", "never", "--log", "b.rrlog", "--summary", "b.json",
        )  # fmt: skip
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 3 and "robot_fault" in out, out + err  # latched at the first tick
        log = read_runlog(tmp_path / "b.rrlog")
        assert np.abs(log.ticks["command_position"] - log.ticks["command_position"][0]).max() < 1e-9  # no motion
    finally:
        out, _ = _stop(server)
    assert json.loads(state.read_text())["state"] == "stopped"  # still unacknowledged (nobody recovered it)
    state.write_text(json.dumps({"state": "clean"}))
    server, info = _start_sim_server(*args)
    try:
        assert info["came_up_stopped"] is False
    finally:
        _stop(server)
    assert json.loads(state.read_text())["state"] == "clean"  # no session: a clean end


def test_one_sim_server_per_robot_state_file(tmp_path):
    """Review of audit 10: two servers on one port (two addresses) shared the state file, and the first's clean end
    hid the second's crash. The second is refused now, before it listens."""
    port, state = free_port(), tmp_path / "bridge.json"
    server, info = _start_sim_server("--no-camera", "--port", str(port), "--state-file", str(state))
    try:
        proc = subprocess.run(
            [*CLI, "sim-server", "--no-camera", "--host", "127.0.0.2", "--port", str(port), "--state-file",
             str(state), "--duration", "5"],
            capture_output=True, text=True, env=_env(), timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2 and "another sim-server runs this robot" in proc.stderr, proc.stderr
        assert json.loads(state.read_text())["state"] == "running"
    finally:
        _stop(server)
    assert json.loads(state.read_text())["state"] == "clean"
