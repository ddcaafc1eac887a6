"""`robot-rt run` (sim and udp:// against a `robot-rt sim-server` subprocess), `robot-rt replay`.

`run --duration` is wall time by design, so the checks relate counts to each other (every tick logged, a command
per tick) instead of to the wall time; the achieved rate is measured in bench/bench_control.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
