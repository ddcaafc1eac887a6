"""`robot-rt run` (registered by robot_rt.cli; `replay` and `run --mcap`: robot_rt.logs.commands; `sim-server`:
robot_rt.sim.commands).

`robot-rt run` exit status (docs/safety.md): 0 the run ended as planned (duration over, Ctrl-C / SIGTERM, the
policy finished), with the controlled stop of the end of a run; 2 bad arguments or the loop could not start (or a
run that ended as planned whose after-run step, the `--mcap` export, failed: the summary names it);
3 it ended by a protective stop (a reflex: watchdog, sensor timeout, tracking error, implausible measurement, robot
fault, workspace); 4 it ended by a lost link (the link went down or the robot side restarted); 5 it ended by an
e-stop. A stop ends the run at once unless recovered: `--recover prompt` (the default on a terminal) asks whether to
recover (RealTimeLoop.recover()) and continue.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import signals
from .signals import Terminated

EXIT_CODES = {"completed": 0, "error": 2, "protective_stop": 3, "link_lost": 4, "estop": 5}
STOP_SETTLE_S = 0.12  # longer than the UDP driver's link timeout


def exit_code_for(reasons: list[str]) -> int:
    """The exit status of a run whose loop ended latched with these stop reasons (shutdown alone: completed)."""
    safety = [r for r in reasons if r != "shutdown"]
    if not safety:
        return EXIT_CODES["completed"]
    if "link_loss" in safety:
        return EXIT_CODES["link_lost"]
    if "estop" in safety:
        return EXIT_CODES["estop"]
    return EXIT_CODES["protective_stop"]


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def freshness_seconds(text: str) -> float:
    """A link timeout or lateness bound: in (0, 1] s, as the loop's own watchdogs (older states are no current
    robot state)."""
    value = float(text)
    if not 0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 1], got {text}")
    return value


def policy_rate(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 20000.0:  # the loop's bounds: a policy period of at most 1 s, its rate at most the loop's
        raise argparse.ArgumentTypeError(f"expected a rate in [1, 20000] Hz, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the real-time loop on the simulated or a UDP robot with a Python policy",
        description="Runs the real-time control loop with a live status line and writes a run log. Exit status: "
        "0 completed, 2 error, 3 protective stop, 4 lost link, 5 e-stop (docs/safety.md).",
    )
    run.add_argument(
        "--robot",
        default="sim",
        help="'sim' (in-process), udp://HOST:PORT[?camera=PORT|none], or egm://HOST:PORT[?controller=IP[:PORT]] (the ABB "
        "arm over EGM, with --gantry; docs/egm.md)",
    )
    run.add_argument(
        "--gantry",
        default=None,
        help="egm:// robots: the gantry's driver, udp://HOST:PORT[?camera=PORT|none] (its joints come first)",
    )
    run.add_argument("--policy", default="robot_rt.control.policies:sine", help="MODULE:CALLABLE")
    run.add_argument("--duration", type=positive, default=5.0, help="seconds (default 5)")
    run.add_argument("--rate", type=positive, default=1000.0, help="loop rate in Hz (default 1000)")
    run.add_argument("--policy-rate", type=policy_rate, default=100.0, help="policy rate in Hz (default 100)")
    run.add_argument("--log", default=None, help="run log path (default runs/run-<time>.rrlog)")
    run.add_argument("--robot-file", default=None, help="robot description JSON (default: the shipped platform)")
    run.add_argument(
        "--key-file",
        default=None,
        help="long-term key shared with the robot (UDP protocol sessions are derived from it); without it the link "
        "is unauthenticated, which is allowed on loopback only",
    )
    run.add_argument("--command-timeout", type=positive, default=0.05, help="watchdog timeout in s")
    run.add_argument("--sensor-timeout", type=positive, default=0.02, help="state dropout timeout in s")
    run.add_argument(
        "--late-threshold", type=freshness_seconds, default=0.02, help="UDP: drop states later than this (s, <= 1)"
    )
    run.add_argument(
        "--link-timeout",
        type=freshness_seconds,
        default=0.05,
        help="UDP links (the robot's, or --gantry's): no state for this long is a lost link (s, <= 1)",
    )
    run.add_argument("--realtime-priority", type=int, default=0, help="SCHED_FIFO priority (0: off)")
    run.add_argument("--cpu", type=int, default=None, help="pin the loop thread to this CPU")
    run.add_argument("--lock-memory", action="store_true", help="mlockall while the loop runs")
    run.add_argument(
        "--cpu-latency-limit-us",
        type=non_negative_int,
        default=None,
        help="hold a CPU wake-up latency request (PM QoS; 0 = idle CPUs poll) while the loop runs",
    )
    run.add_argument(
        "--recover",
        choices=("prompt", "never"),
        default=None,
        help="on a protective stop: 'prompt' asks the operator at the terminal whether to recover and continue (the "
        "default on a terminal; refused without one: an answer from a pipe or a file was given before the stop), "
        "'never' ends the run (default otherwise); a stopped robot never moves again without a recovery",
    )
    run.add_argument("--summary", default=None, help="also write the final summary as JSON to this path")
    run.add_argument("--no-status", action="store_true", help="no live status line")
    # after_run: (args, log_path, summary, console) -> exit code or None, added by higher layers (robot_rt.logs:
    # --mcap); run after the loop has stopped and the summary is made, before it is written
    run.set_defaults(func=cmd_run, after_run=())

    camera_key = subparsers.add_parser(
        "camera-key",
        help="write the camera link's key (derived from the robot link's) for the camera's computer",
        description="Derives the camera link's long-term key from the robot link's key file and writes it (mode 0600, "
        "atomically). Give the camera this file, never the robot link's key: it authenticates the camera stream but "
        "cannot open a session with the robot (docs/protocol.md, 'Keys'). The controller derives the same key itself.",
    )
    camera_key.add_argument("--key-file", required=True, help="the robot link's long-term key file")
    camera_key.add_argument("--out", required=True, help="the camera key file to write")
    camera_key.set_defaults(func=cmd_camera_key)


def cmd_camera_key(args) -> int:
    from robot_rt._io import atomic_write_bytes

    from .protocol import camera_link_key
    from .udp import read_key

    key = read_key(args.key_file)
    out = Path(args.out)
    if out.resolve() == Path(args.key_file).resolve():
        raise SystemExit("camera-key: --out must not be the robot link's key file")
    atomic_write_bytes(out, camera_link_key(key) + b"\n", mode=0o600)
    print(f"camera-key: wrote {out} (give it to the camera; keep {args.key_file} on the controller and the robot)")
    return 0


# --------------------------------------------------------------------------- run
def _status_text(loop, t_s, duration_s, prev, monitor) -> tuple[str, tuple]:
    counters = loop.counters()
    ticks = counters["ticks"]
    now = time.monotonic()
    rate = (ticks - prev[0]) / max(now - prev[1], 1e-9) if prev else 0.0
    from .loop import EVENT_CODES

    ev = counters["event_counts"]
    safety = sum(
        int(ev.get(EVENT_CODES[name], 0))
        for name in (
            "watchdog_stop",
            "sensor_timeout_stop",
            "workspace_stop",
            "estop",
            "tracking_error_stop",
            "measurement_invalid_stop",
            "robot_fault_stop",
            "link_loss_stop",
            "safety_override",
            "non_finite_command",
            "workspace_target_rejected",
        )
    )
    reasons = loop.stop_reasons
    text = (
        f"t {t_s:5.1f}/{duration_s:.1f} s | {loop.lifecycle}{' (' + ', '.join(reasons) + ')' if reasons else ''} "
        f"| rate {rate:7.1f} Hz | misses {counters['deadline_misses']} "
        f"| late {counters['late_ticks']} | dropouts {counters['sensor_dropout_ticks']} | stop ticks "
        f"{counters['stop_ticks']} | safety events {safety}"
    )
    if monitor is not None:
        s = monitor.driver.stats()
        rtt = s["rtt_last_ns"] / 1e6
        text += (
            f" | link {'up' if s['connected'] else 'DOWN'} rtt {rtt:.2f} ms lost {s['rx_lost']} "
            f"bad {s['rx_malformed']} dup {s['rx_duplicate']} stale {s['rx_stale']} late {s['rx_late']} "
            f"restarts {s['peer_restarts']}"
        )
        if "camera" in s:
            text += f" | camera frames {s['camera']['frames']} balls {counters['ball_observations']}"
    return text, (ticks, now)


def _ended_by(err: BaseException) -> str:
    return "interrupted" if isinstance(err, KeyboardInterrupt) else "terminated"


def cmd_run(args) -> int:
    from rich.console import Console

    from robot_rt.robot import load_robot

    from .policies import load_policy

    console = Console(stderr=False)
    if args.recover == "prompt" and not sys.stdin.isatty():
        # the answer would come from a pipe or a file, written before any stop: nobody would have seen the robot
        console.print(
            "[red]error:[/red] --recover prompt needs an operator at a terminal (stdin is not one); use --recover never"
        )
        return EXIT_CODES["error"]
    try:  # every bad option or file is an error message and exit 2, before anything runs
        robot = load_robot(args.robot_file)
        policy = load_policy(args.policy, robot)
        driver = _make_driver(args, robot)
        log_path = Path(args.log) if args.log else Path("runs") / time.strftime("run-%Y%m%d-%H%M%S.rrlog")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        loop = _make_loop(args, robot, driver, policy, log_path)
    except (ValueError, TypeError, OSError) as err:
        console.print(f"[red]error:[/red] {err}")
        return EXIT_CODES["error"]
    # SIGTERM and SIGHUP raise Terminated (signals.py) from here until the run is reported, Ctrl-C KeyboardInterrupt:
    # each ends the run by the controlled stop, and none interrupts that stop or the report after it
    acquired = signals.acquire()
    try:
        return _run_loop(args, loop, driver, console, log_path)
    finally:
        if acquired:
            signals.release()


def _run_loop(args, loop, driver, console, log_path) -> int:
    from .udp import LinkMonitor

    try:
        loop.start()
    except RuntimeError as err:
        console.print(f"[red]error:[/red] cannot start the loop: {err}")
        return EXIT_CODES["error"]
    except (KeyboardInterrupt, Terminated) as err:  # start() has stopped the loop if it had started (at rest)
        console.print(f"{_ended_by(err)} while starting: the loop did not run")
        return EXIT_CODES["error"]
    t0 = time.monotonic()
    ended_by, monitor, outcome = "duration", None, {}
    try:
        link = _udp_part(driver)
        monitor = LinkMonitor(loop, link).start() if link is not None else None
        prompt = args.recover == "prompt" or (args.recover is None and sys.stdin.isatty() and console.is_terminal)
        ended_by = _wait(args, loop, monitor, console, t0, prompt)
    except (KeyboardInterrupt, Terminated) as err:
        ended_by = _ended_by(err)
    finally:
        try:
            with signals.shielded():  # (a second signal from here on is held until the run is reported)
                loop.request_stop()  # the end-of-run stop begins before the print and the monitor's stop below
                if ended_by in ("interrupted", "terminated"):
                    console.print(f"{ended_by}: stopping the loop (controlled stop)")
                if monitor is not None:
                    monitor.stop()
                elapsed = time.monotonic() - t0
                loop.stop()  # the controlled stop to rest, then the loop thread ends
                outcome["exit_code"] = _report_run(args, loop, driver, console, log_path, elapsed, ended_by)
        except (KeyboardInterrupt, Terminated) as err:  # held meanwhile, raised after: the run has ended
            console.print(f"{_ended_by(err)} during the controlled stop or the report (both were completed first)")
    return outcome.get("exit_code", EXIT_CODES["error"])


def _report_run(args, loop, driver, console, log_path, elapsed: float, ended_by: str) -> int:
    """The run's summary, report and after-run steps; its exit status."""
    summary = _run_summary(args, loop, driver, elapsed, log_path)
    summary["ended_by"] = ended_by
    summary["exit_code"] = exit_code_for(summary["stop_reasons"])
    counters = loop.counters()
    log_stats = counters["log"]
    # an incomplete run log is no clean end: the run's record (what the robot was sent) has holes; a stop's exit
    # code (3-5) stands, a run that ended cleanly exits 2
    summary["log_incomplete"] = bool(log_stats.get("write_errors", 0) or log_stats.get("records_dropped", 0))
    _report(console, summary, counters, elapsed)
    # a failed after-run step (an export) is reported in the summary and never hides how the run ended: a stop's
    # exit code (3-5) stands; a run that ended cleanly exits with the step's code
    failed = 0
    for hook in args.after_run:
        try:
            code = hook(args, log_path, summary, console)
        except Exception as err:  # noqa: BLE001 (whatever a step raises, the run's own result is reported)
            console.print(f"[red]error:[/red] {getattr(hook, '__name__', 'after-run step')}: {err!r}")
            code = 2
        if code:
            failed = failed or int(code)
            summary.setdefault("after_run_failed", []).append(getattr(hook, "__name__", repr(hook)))
    if args.summary:
        from robot_rt._io import atomic_write_json

        atomic_write_json(args.summary, summary)
    sys.stdout.flush()
    return summary["exit_code"] or failed or (EXIT_CODES["error"] if summary["log_incomplete"] else 0)


def _make_driver(args, robot):
    """None for the in-process simulated robot ('sim'), the UDP driver of a udp:// URL, or for egm:// the EGM arm
    composed with the --gantry UDP driver (robot_rt.control.egm)."""
    import warnings

    from .udp import UNAUTHENTICATED_WARNING, make_udp_driver, read_key

    gantry_url = getattr(args, "gantry", None)
    if args.robot.startswith("egm://"):
        from .egm import existing_run_markers, make_egm_robot_driver, parse_egm_url

        gantry = None
        if gantry_url is not None:
            with warnings.catch_warnings():  # said once, plainly, below
                warnings.simplefilter("ignore", RuntimeWarning)
                gantry = make_udp_driver(
                    gantry_url,
                    robot.dof - parse_egm_url(args.robot).joints,
                    key=read_key(args.key_file),
                    late_threshold_s=args.late_threshold,
                    link_timeout_s=args.link_timeout,
                )
            if args.key_file is None:
                print(UNAUTHENTICATED_WARNING, file=sys.stderr, flush=True)
        driver = make_egm_robot_driver(args.robot, robot, gantry=gantry)
        for marker in existing_run_markers(args.robot):
            print(
                f"EGM: {marker} is there: the last run on this controller ended in a stop nobody recovered, or did "
                "not end. This run starts stopped (robot_fault) and moves nothing until a recovery (--recover prompt)",
                file=sys.stderr,
                flush=True,
            )
        return driver
    if gantry_url is not None:
        raise ValueError("gantry: only with --robot egm://HOST:PORT")
    if args.robot == "sim":
        return None
    if args.robot.startswith("udp://"):
        with warnings.catch_warnings():  # said once, plainly, below
            warnings.simplefilter("ignore", RuntimeWarning)
            driver = make_udp_driver(
                args.robot,
                robot.dof,
                key=read_key(args.key_file),
                late_threshold_s=args.late_threshold,
                link_timeout_s=args.link_timeout,
            )
        if args.key_file is None:
            print(UNAUTHENTICATED_WARNING, file=sys.stderr, flush=True)
        return driver
    raise ValueError(f"robot: expected 'sim', udp://HOST:PORT or egm://HOST:PORT, got {args.robot!r}")


def _udp_part(driver):
    """The UDP driver whose link LinkMonitor watches: the driver itself, a composite's UDP part, or None."""
    if driver is None:
        return None
    parts = getattr(driver, "parts", None)
    if parts is None:
        return driver if driver.name == "udp" else None
    return next((p for p in parts if p.name == "udp"), None)


def _driver_stats(driver) -> dict:
    parts = getattr(driver, "parts", None)
    if parts is None:
        return driver.stats()
    return {f"{p.name}{i}": p.stats() for i, p in enumerate(parts)}


def _make_loop(args, robot, driver, policy, log_path):
    from .loop import RealTimeLoop

    return RealTimeLoop(
        robot,
        driver,
        policy=policy,
        policy_rate_hz=args.policy_rate,
        rate_hz=args.rate,
        command_timeout_s=args.command_timeout,
        sensor_timeout_s=args.sensor_timeout,
        realtime_priority=args.realtime_priority,
        cpu=args.cpu,
        lock_memory=args.lock_memory,
        cpu_latency_limit_us=args.cpu_latency_limit_us,
        log_path=log_path,
    )


def _wait(args, loop, monitor, console, t0: float, prompt: bool) -> str:
    """Runs until --duration is over ("duration"), the policy finished ("policy_finished"), or a protective stop
    ("stop": unless recovered at the prompt). Shows the status meanwhile: a live line on a terminal, else one printed
    line per second."""
    while True:
        ended_by = _show_status(args, loop, monitor, console, t0)
        if ended_by == "stop":
            # a dead link shows as missing states first (sensor timeout, 20 ms) and as a lost link after the driver's
            # link timeout (50 ms): let the reasons settle so the exit status names the cause
            time.sleep(STOP_SETTLE_S)
        if ended_by != "stop" or not prompt or not _prompt_recover(console, loop):
            return ended_by


def _stopped(loop) -> bool:
    return any(reason != "shutdown" for reason in loop.stop_reasons)


def _show_status(args, loop, monitor, console, t0: float) -> str:
    prev = (0, t0)

    def done() -> str | None:
        if time.monotonic() - t0 >= args.duration:
            return "duration"
        if _stopped(loop):
            return "stop"
        if loop.policy_finished.is_set():
            return "policy_finished"
        return None

    if console.is_terminal and not args.no_status:
        from rich.live import Live

        with Live("", console=console, refresh_per_second=8, transient=False) as live:
            while (why := done()) is None:
                text, prev = _status_text(loop, time.monotonic() - t0, args.duration, prev, monitor)
                live.update(text)
                time.sleep(0.05)
            text, prev = _status_text(loop, time.monotonic() - t0, args.duration, prev, monitor)
            live.update(text)
        return why
    next_print = t0 + 1.0
    while (why := done()) is None:
        time.sleep(min(0.02, max(0.0, args.duration - (time.monotonic() - t0))))
        if not args.no_status and time.monotonic() >= next_print:
            text, prev = _status_text(loop, time.monotonic() - t0, args.duration, prev, monitor)
            print(text, flush=True)
            next_print += 1.0
    return why


def discard_typeahead(stream=None) -> bool:
    """Discards what was typed on the terminal `stream` (default stdin) and not read yet; True when it is a terminal.

    A recovery prompt must be answered by someone who saw it: a 'y' typed before the stop (a habit, a paste, a key
    pressed while watching) would otherwise answer it."""
    stream = sys.stdin if stream is None else stream
    try:
        if not stream.isatty():
            return False
        import termios

        termios.tcflush(stream.fileno(), termios.TCIFLUSH)
        return True
    except (OSError, ValueError, ImportError, AttributeError):
        return False


def _prompt_recover(console, loop) -> bool:
    """Asks the operator whether to recover from a protective stop; True when recovered (the run continues)."""
    while True:
        presses = loop.estop_presses  # (before the reasons: a press after this is one the operator did not see)
        robot_stops = loop.robot_stop_events  # (likewise: a robot stop after this is one the operator did not see)
        shown = list(loop.stop_reasons)  # what the operator is asked about: only these may be cleared
        console.print(
            f"[bold red]protective stop[/bold red]: {', '.join(r for r in shown if r != 'shutdown')} "
            "(the robot is held; nothing moves it until a recovery)"
        )
        if not discard_typeahead():
            return False  # no terminal: nobody can answer (cmd_run refuses 'prompt' without one)
        try:
            answer = input("recover and continue? (the command restarts where the robot is) [y/N] ").strip().lower()
        except EOFError:
            return False
        if answer not in ("y", "yes"):
            return False
        # a stop that latched while the question was open (e.g. an e-stop pressed meanwhile) refuses this recovery,
        # and the loop asks again showing it
        result = loop.recover(seen_reasons=shown, seen_estop_presses=presses, seen_robot_stops=robot_stops)
        if result.ok:
            console.print("recovered: the loop is active again")
            return True
        console.print(f"[red]recovery refused[/red]: {result.message}")


def _run_summary(args, loop, driver, elapsed: float, log_path: Path) -> dict:
    from .loop import EVENT_NAMES
    from .udp import LINK_EVENT_NAMES

    counters = loop.counters()
    names = dict(EVENT_NAMES)
    names.update(LINK_EVENT_NAMES)
    events: dict[str, float] = {}
    for e in loop.events():
        name = names.get(e.code, f"code{e.code}")
        events[name] = events.get(name, 0) + (e.value if e.code in LINK_EVENT_NAMES else 1)
    telemetry = loop.telemetry()
    latency = {
        name: {k: telemetry[f"{name}_us"][k] for k in ("p50", "p99", "p999", "max")}
        for name in ("wake_latency", "tick_duration", "policy_round_trip", "command_latency")
    }
    summary = {
        "robot": args.robot,
        "policy": args.policy,
        "stop_reasons": loop.stop_reasons,
        "stop_reasons_seen": loop.stop_reasons_seen,
        "lifecycle": loop.lifecycle,
        "latency_us": latency,
        "duration_s": round(elapsed, 3),
        "ticks": counters["ticks"],
        "mean_rate_hz": counters["ticks"] / elapsed if elapsed > 0 else 0.0,
        "deadline_misses": counters["deadline_misses"],
        "late_ticks": counters["late_ticks"],
        "sensor_dropout_ticks": counters["sensor_dropout_ticks"],
        "stop_ticks": counters["stop_ticks"],
        "commands_accepted": counters["commands_accepted"],
        "commands_rejected": counters["commands_rejected"],
        "ball_observations": counters["ball_observations"],
        "events": events,
        "policy_calls": loop.policy_calls,
        "policy_exceptions": loop.policy_exceptions,
        "log": str(log_path),
        "log_stats": counters["log"],
    }
    if driver is not None:
        link = _driver_stats(driver)
        summary["link"] = link
        if link.get("rtt_count", 0):
            summary["latency_us"]["link_round_trip"] = {
                "min": link["rtt_min_ns"] / 1e3,
                "mean": link["rtt_mean_ns"] / 1e3,
                "max": link["rtt_max_ns"] / 1e3,
            }
    return summary


def _report(console, summary: dict, counters: dict, elapsed: float) -> None:
    console.print(
        f"ran {elapsed:.2f} s: {counters['ticks']} ticks ({summary['mean_rate_hz']:.1f} Hz), "
        f"{counters['deadline_misses']} deadline misses, {counters['stop_ticks']} stop ticks; "
        f"events: {json.dumps(summary['events'])}"
    )
    lat = summary["latency_us"]
    for name, label in (
        ("wake_latency", "wake latency"),
        ("tick_duration", "tick duration"),
        ("policy_round_trip", "policy round trip"),
        ("command_latency", "command latency"),
    ):
        q = lat[name]
        console.print(
            f"{label:>18} (us): p50 {q['p50']:.0f}  p99 {q['p99']:.0f}  p99.9 {q['p999']:.0f}  max {q['max']:.0f}"
        )
    if "link_round_trip" in lat:
        q = lat["link_round_trip"]
        console.print(f"{'command round trip':>18} (us): min {q['min']:.0f}  mean {q['mean']:.0f}  max {q['max']:.0f}")
    log_stats = counters["log"]
    console.print(
        f"run log: {summary['log']} ({log_stats['records_written']} records, {log_stats['bytes_written']} bytes)"
    )
    if summary["log_incomplete"]:
        console.print(
            f"[bold red]run log incomplete[/bold red]: {log_stats.get('write_errors', 0)} failed writes, "
            f"{log_stats.get('records_dropped', 0)} records dropped (a full disk or a slow device?); a run that ended "
            f"cleanly exits {EXIT_CODES['error']}"
        )
    seen = [r for r in summary["stop_reasons_seen"] if r != "shutdown"]
    ending = [r for r in summary["stop_reasons"] if r != "shutdown"]
    name = {v: k for k, v in EXIT_CODES.items()}[summary["exit_code"]]
    if ending:
        console.print(
            f"[bold red]the run ended by a stop[/bold red]: {', '.join(ending)} -> exit {summary['exit_code']} ({name})"
        )
    else:
        recovered = f" (recovered stops: {', '.join(seen)})" if seen else ""
        console.print(f"the run ended: {summary['ended_by']}{recovered} -> exit {summary['exit_code']} ({name})")
