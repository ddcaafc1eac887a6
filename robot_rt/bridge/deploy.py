"""Deploy an env policy against a simulated player: the real-time loop against `robot-rt sim-server --rally`.

Design notes: docs/sim.md, section `robot_rt.bridge.deploy`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_bytes
from robot_rt.robot import RobotDescription, load_robot
from robot_rt.sim.rally import HUMAN_CHOICES, tracks_from_summary

from .env_policy import EnvPolicyAdapter

# loop events that mean the safety layer had to act (clip, reject or stop)
SAFETY_EVENTS = (
    "target_clamped",
    "workspace_target_rejected",
    "workspace_stop",
    "workspace_path_hold",  # the loop did not take a goal whose path would leave the box (its path guard)
    "watchdog_stop",
    "sensor_timeout_stop",
    "safety_override",
    "non_finite_command",
    "command_rejected",
    "estop",
    "tracking_error_stop",
    "measurement_invalid_stop",
    "robot_fault_stop",
    "link_loss_stop",
    "recovered",
)
# Stop reasons a simulated session may recover from when its caller opts in (recover=recover_transient_stops): the
# policy or the machine stalled, nothing is wrong with the simulated robot (it cannot jam or collide: a tracking
# error there means the loop fell behind real time on a loaded machine). docs/sim.md, `robot_rt.bridge.deploy`.
TRANSIENT_STOPS = ("watchdog", "sensor_timeout", "tracking_error")
RECOVER_CHOICES = ("never", "prompt")


class DeployStopped(RuntimeError):
    """A protective stop ended the deploy (nobody recovered it): `reasons`, the latched stop reasons; `result`, the
    `DeployResult` of what ran before the stop (the rallies completed, the stop in `stop_reasons_seen`)."""

    def __init__(self, reasons, log_path=None, result=None):
        self.reasons = tuple(reasons)
        self.log_path = log_path
        self.result = result
        where = f"; run log: {log_path}" if log_path is not None else ""
        super().__init__(f"deploy: protective stop ({', '.join(self.reasons)}), not recovered{where}")


def recover_transient_stops(reasons) -> bool:
    """A recover policy for deploy() against the simulated far end only: recover from stops whose reasons are all
    in TRANSIENT_STOPS (a policy or machine stall), end the deploy on any other. Never use it on hardware: there
    a person looks at the robot before it moves again."""
    return set(reasons) <= set(TRANSIENT_STOPS)


def prompt_recover(reasons) -> bool:
    """The 'prompt' recover policy: asks on the terminal (like `robot-rt run --recover prompt`); no terminal or
    no answer is a no, and what was typed before the question is discarded (an answer must come after it)."""
    from robot_rt.control.commands import discard_typeahead

    print(f"deploy: protective stop ({', '.join(reasons)}); the robot is held and does not move until a recovery")
    if not discard_typeahead():
        return False
    try:
        answer = input("recover and continue? (the command restarts where the robot is) [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _recover_policy(recover):
    """deploy()'s `recover` argument as a callable (reasons) -> bool."""
    if callable(recover):
        return recover
    if recover == "never":
        return lambda reasons: False
    if recover == "prompt":
        return prompt_recover
    raise ValueError(
        f"recover: expected 'never', 'prompt' or a callable (reasons) -> bool, got {recover!r} "
        "(a stopped robot does not move again until someone recovers it: docs/safety.md)"
    )


DEPLOY_COMMAND_TIMEOUT_S = 0.2  # the loop's watchdog in deploy(): a policy on a shared CPU stalls for tens of ms


@dataclass
class DeployResult:
    rally_lengths: list[int]  # returns that landed on the human's half, per rally
    outcomes: list[str]  # how each rally ended (robot_rt.envs.core.OUTCOME_NAMES)
    return_rate: float  # returns landed per ball the human sent
    serves: int
    balls: int  # serves + the human's answers
    hits: int  # balls the paddle touched
    tracks: list  # detected tracks of the incoming balls: [(t_s [T], positions_m [T, 3])]
    true_tracks: list
    min_paddle_distance_m: list  # per incoming ball, smallest paddle-ball distance before a hit (None: n/a)
    telemetry: dict  # RealTimeLoop.telemetry()
    safety_events: dict[str, int]
    robot_server: dict  # the sim-server's final stats line (commands_out_of_limits, ...)
    adapter: dict  # EnvPolicyAdapter.stats()
    wall_s: float
    summary: dict = field(repr=False, default_factory=dict)  # the server's full rally record
    recoveries: int = 0  # protective stops recovered (the caller's `recover` policy said so)
    stop_reasons_seen: list = field(default_factory=list)  # every stop reason latched during the run

    @property
    def wall_s_per_ball(self) -> float:
        return self.wall_s / max(self.serves, 1)


def _read_json_line(proc: subprocess.Popen, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"sim-server exited with {proc.returncode}: {proc.stderr.read().strip()}")
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("event") == "listening":
            return msg
    raise RuntimeError(f"sim-server did not report its ports within {timeout_s} s")


def start_rally_server(
    human="real_player", n_balls: int | None = None, seed: int = 0, summary_path=None, extra_args=(), startup_s=60.0
):
    """Starts `robot-rt sim-server --rally --port 0` as a subprocess; returns (process, listening message)."""
    cmd = [sys.executable, "-m", "robot_rt.cli", "sim-server", "--rally", "--port", "0", "--seed", str(int(seed))]
    cmd += ["--human", str(human)]
    if n_balls is not None:
        cmd += ["--serves", str(int(n_balls))]
    if summary_path is not None:
        cmd += ["--summary", str(summary_path)]
    cmd += [str(a) for a in extra_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        return proc, _read_json_line(proc, startup_s)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def stop_server(proc: subprocess.Popen, timeout_s: float = 10.0) -> dict:
    """SIGTERM, wait, and the server's final 'stopped' JSON line ({} if none)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    for line in reversed(out.splitlines()):
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("event") == "stopped":
            return msg
    return {}


def _read_summary(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # not written yet (atomic writes: never half a file)


def deploy(
    policy,
    human="real_player",
    n_balls: int = 10,
    seed: int = 0,
    log_path=None,
    *,
    robot: RobotDescription | None = None,
    serve_interval_s: float = 0.8,
    timeout_s: float | None = None,
    adapter_kwargs: dict | None = None,
    loop_kwargs: dict | None = None,
    physics: str = "kinematic",
    recover="never",
    server_args=(),
) -> DeployResult:
    """Runs `policy` (an env policy, see EnvPolicyAdapter) for `n_balls` rallies against `human`
    ('default' | 'real_player' | PATH.json | a HumanBehaviorModel, saved to a temp file for the server).
    `physics`: the sim-server's robot ('kinematic' | 'mujoco': MuJoCo dynamics and paddle contact, docs/mujoco.md).
    `server_args`: further `robot-rt sim-server` options (e.g. ['--tracking-time-constant', '0.005'] for ablations).

    A protective stop latches (docs/safety.md): after any stop the robot does not move again until someone
    recovers it, so recovery is the caller's explicit choice, `recover`:
      * 'never' (default): the deploy ends at the first stop with DeployStopped (a RuntimeError) naming its reasons;
      * 'prompt': asks on the terminal whether to recover (prompt_recover; no terminal: no);
      * a callable `recover(reasons: tuple[str, ...]) -> bool`, asked once the stopped loop is at rest: True
        recovers (`RealTimeLoop.recover()`: the command restarts where the robot is; counted in `recoveries`; a
        refused recovery asks again), False ends the deploy with DeployStopped. recover_transient_stops recovers
        from a policy or machine stall of the simulated session (watchdog, sensor timeout, tracking error).
    The watchdog defaults to DEPLOY_COMMAND_TIMEOUT_S (loop_kwargs may override it)."""
    from robot_rt.control import signals
    from robot_rt.control.loop import EVENT_CODES, RealTimeLoop
    from robot_rt.control.udp import LinkMonitor, make_udp_driver
    from robot_rt.envs.human_model import HumanBehaviorModel

    if isinstance(n_balls, bool) or not isinstance(n_balls, (int, np.integer)) or n_balls < 1:
        raise ValueError(f"n_balls: expected a positive int, got {n_balls!r}")
    if not callable(policy):
        raise TypeError(f"policy: expected a callable env policy, got {type(policy).__name__}")
    if not serve_interval_s > 0:
        raise ValueError(f"serve_interval_s: expected a positive number, got {serve_interval_s}")
    if physics not in ("kinematic", "mujoco"):
        raise ValueError(f"physics: expected 'kinematic' or 'mujoco', got {physics!r}")
    should_recover = _recover_policy(recover)
    robot = robot if robot is not None else load_robot()
    timeout_s = float(timeout_s) if timeout_s is not None else 30.0 + 10.0 * n_balls
    with tempfile.TemporaryDirectory(prefix="robot_rt_deploy_") as tmp:
        if isinstance(human, HumanBehaviorModel):
            human = str(human.save(Path(tmp) / "human.json"))
        elif not (
            isinstance(human, (str, os.PathLike)) and (str(human) in HUMAN_CHOICES or str(human).endswith(".json"))
        ):
            raise ValueError(
                f"human: expected one of {HUMAN_CHOICES}, a .json path or a HumanBehaviorModel, got {human!r}"
            )
        elif str(human).endswith(".json") and not Path(human).is_file():
            raise FileNotFoundError(f"human: behaviour model file not found: {human}")
        summary_path = Path(tmp) / "rally.json"
        # a fresh long-term key for this run: the link is authenticated even on loopback (docs/protocol.md)
        key = secrets.token_hex(32).encode()
        key_path = Path(tmp) / "link.key"
        atomic_write_bytes(key_path, key, mode=0o600)  # read_key refuses a key file open to other users
        extra = ["--serve-interval", str(serve_interval_s), "--physics", physics, "--key-file", str(key_path)]
        if robot.source and Path(robot.source).is_file():  # the shipped robot's source is its bare name
            extra += ["--robot-file", str(robot.source)]
        extra += [str(a) for a in server_args]
        t_start = time.monotonic()
        proc, hello = start_rally_server(human, n_balls, seed, summary_path, extra)
        adapter = EnvPolicyAdapter(policy, robot, **(adapter_kwargs or {}))
        loop = monitor = None
        server_stats: dict = {}
        recoveries = 0
        stopped: tuple = ()  # the reasons of a stop nobody recovered: the deploy ends, its result is kept
        try:
            url = f"udp://127.0.0.1:{hello['robot_port']}?camera={hello['camera_port']}"
            driver = make_udp_driver(url, robot.dof, key=key)
            loop_kwargs = {"command_timeout_s": DEPLOY_COMMAND_TIMEOUT_S, **(loop_kwargs or {})}
            loop = RealTimeLoop(robot, driver, policy=adapter, log_path=log_path, **loop_kwargs)
            monitor = LinkMonitor(loop, driver)
            loop.start()
            monitor.start()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                summary = _read_summary(summary_path)
                if summary is not None and summary["rallies_completed"] >= n_balls:
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"sim-server exited early with {proc.returncode}")
                presses, robot_stops = loop.estop_presses, loop.robot_stop_events
                reasons = tuple(loop.stop_reasons)
                if reasons and loop.lifecycle == "stopped":
                    if not should_recover(reasons):
                        stopped = reasons
                        break
                    # only the stop the recover policy decided on
                    if loop.recover(seen_reasons=reasons, seen_estop_presses=presses, seen_robot_stops=robot_stops):
                        recoveries += 1
                time.sleep(0.1)
            else:
                raise TimeoutError(f"deploy: {n_balls} rallies not finished within {timeout_s:.0f} s")
        finally:
            with signals.shielded():  # no signal cuts the controlled stop short or leaves the server running
                try:
                    if monitor is not None:
                        monitor.stop()
                    if loop is not None:
                        loop.stop()
                finally:
                    server_stats = stop_server(proc)
        wall_s = time.monotonic() - t_start
        summary = _read_summary(summary_path) or {}
    counts = loop.counters()["event_counts"]
    safety = {name: int(counts.get(EVENT_CODES[name], 0)) for name in SAFETY_EVENTS}
    result = DeployResult(
        rally_lengths=list(summary.get("rally_lengths", [])),
        outcomes=[r["outcome"] for r in summary.get("rallies", []) if r["outcome"] != "none"],
        return_rate=float(summary.get("return_rate", 0.0)),
        serves=int(summary.get("serves", 0)),
        balls=int(summary.get("balls", 0)),
        hits=int(summary.get("hits", 0)),
        tracks=tracks_from_summary(summary) if summary else [],
        true_tracks=tracks_from_summary(summary, "tracks_true") if summary else [],
        min_paddle_distance_m=[b["min_paddle_distance_m"] for b in summary.get("ball_records", [])],
        telemetry=loop.telemetry(),
        safety_events=safety,
        robot_server=server_stats,
        adapter=adapter.stats(),
        wall_s=wall_s,
        summary=summary,
        recoveries=recoveries,
        stop_reasons_seen=loop.stop_reasons_seen,
    )
    if stopped:
        raise DeployStopped(stopped, log_path, result)
    return result
