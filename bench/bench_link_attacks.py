"""Replay, spoofing and flood attacks on the robot link, measured (docs/protocol.md, "Threat model"; issue 12).

Two parts, one run, same machine:
  * cost per datagram: `robot_rt_session_bench` (csrc/robot_rt/control/session_bench_main.cpp) times the session
    state machines alone for every kind of datagram an attacker can send, against the reference: an accepted
    command of the live session (the work the robot does anyway at its control rate). Ratios vs that reference.
  * attacks end to end on loopback (robot_rt.sim.attack), each against the C++ simulated robot with a key:
      replay_after_idle    a recorded session (joint 0 moved by 0.4) replayed whole, with its timing, from its own
                           address after it ended;
      replay_during_hold   the same replayed during a live hold run from another address, from the recorded
                           address, injected on-path from the live controller's address (up) and the robot's
                           (down), and forged through a raw socket when allowed;
      flood_during_hold    recorded valid hellos from 4 addresses, unpaced, for 2 s during a live hold run;
      cli_under_attack     `robot-rt run` holding for 4 s while the recording is replayed: its exit code.
    Reported: the robot's largest joint excursion (sampled every ~0.5 ms), whether the live session was lost,
    commands applied during the attack vs the same window before it, the server's counts by reason, link
    events in the controller's run log, loop safety events, exit code.
The end-to-end figures (rates, commands applied) depend on the machine's load: the attacker, the robot and the
controller share its cores. Labelled with the load average in the JSON. Writes bench/results/bench_link_attacks.json
and prints tables. Usage: python bench/bench_link_attacks.py [--iterations 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json  # noqa: E402

from robot_rt._io import atomic_write_bytes  # noqa: E402
from robot_rt.control.loop import EVENT_CODES  # noqa: E402
from robot_rt.control.udp import LINK_EVENT_NAMES  # noqa: E402
from robot_rt.robot import load_robot  # noqa: E402
from robot_rt.sim import attack  # noqa: E402
from robot_rt.sim.server import SimServer  # noqa: E402

KEY = b"bench long-term key"
SAFETY = ("watchdog_stop", "sensor_timeout_stop", "workspace_stop", "estop", "safety_override")
REASONS = ("rx_unexpected_session", "rx_unexpected_source", "hellos_refused", "rx_duplicate", "rx_stale")


def _session_bench_binary() -> str | None:
    found = shutil.which("robot_rt_session_bench")
    if found:
        return found
    root = Path(__file__).resolve().parents[1] / "build"
    candidates = sorted(root.glob("*/csrc/robot_rt/control/robot_rt_session_bench"))
    return str(candidates[-1]) if candidates else None


def cost_per_datagram(iterations: int) -> dict:
    binary = _session_bench_binary()
    if binary is None:
        return {"error": "robot_rt_session_bench not built (bash tools/setup.sh)"}
    out = json.loads(subprocess.run([binary, str(iterations)], check=True, capture_output=True, text=True).stdout)
    ref_server = out["server_ns"]["accepted_command"]
    ref_client = out["client_ns"]["accepted_state"]
    out["server_ratio_vs_accepted_command"] = {k: v / ref_server for k, v in out["server_ns"].items()}
    out["client_ratio_vs_accepted_state"] = {k: v / ref_client for k, v in out["client_ns"].items()}
    out["binary"] = binary
    return out


def _reasons(before: dict, after: dict) -> dict:
    out = {k: after[k] - before[k] for k in REASONS}
    for k, v in after["rx_rejected"].items():
        if v - before["rx_rejected"][k]:
            out[k] = v - before["rx_rejected"][k]
    out["handshakes_answered"] = after["handshakes"] - before["handshakes"]
    out["sessions_opened"] = after["sessions"] - before["sessions"]
    out["commands_applied"] = after["commands_applied"] - before["commands_applied"]
    return out


def _events(log) -> dict:
    names = {v: k for k, v in EVENT_CODES.items()}
    names.update(LINK_EVENT_NAMES)
    out: dict = {}
    for code, value in zip(log.events["code"], log.events["value"]):
        name = names.get(int(code), f"code{int(code)}")
        out[name] = out.get(name, 0) + (float(value) if int(code) in LINK_EVENT_NAMES else 1)
    return out


def replay_after_idle(server) -> dict:
    captured, recorded = attack.record_session(server, KEY)
    attack.wait_at_rest(server)
    up = [c for c in captured if c.direction == "up"]
    before = server.robot_server.stats()
    with attack.Excursion(server) as ex, attack.Replayer(recorded) as a:
        a.replay(up, ("127.0.0.1", server.port), interval_s=None)
        time.sleep(0.2)
    after = server.robot_server.stats()
    return {"replayed": len(up), "excursion": ex.max_m, "samples": ex.samples, "server": _reasons(before, after)}


def _live_summary(run: dict, extra: dict) -> dict:
    link = run["link"]
    events = _events(run["log"])
    return dict(
        extra,
        excursion=run["excursion_m"],
        attack_s=run["attack_s"],
        session_lost=link["sessions_lost"] > 0 or link["sessions_established"] != 1,
        commands_applied_ratio=(run["after"]["commands_applied"] - run["before"]["commands_applied"])
        / max(1, run["applied_before"])
        * (1.5 / run["attack_s"]),
        server=_reasons(run["before"], run["after"]),
        controller_rejected={
            k: link["rx_rejected"][k] for k in ("bad_tag", "missing_tag", "unexpected_tag") if link["rx_rejected"][k]
        }
        | {k: link[k] for k in ("rx_unexpected_session", "rx_stale_ack", "rx_duplicate") if link[k]},
        link_events={k: v for k, v in events.items() if k in LINK_EVENT_NAMES.values()},
        safety_events={k: events.get(k, 0) for k in SAFETY},
    )


def replay_during_hold(server, tmp: Path) -> dict:
    captured, recorded = attack.record_session(server, KEY)
    attack.wait_at_rest(server)
    up, down = attack.select(captured, "up"), attack.select(captured, "down")
    sent = {}

    def replays(proxy, driver):
        with attack.Replayer(("127.0.0.2", 0)) as a:
            sent["other_address"] = a.replay(up, ("127.0.0.1", server.port), interval_s=1e-4)
        with attack.Replayer(recorded) as a:
            sent["recorded_address"] = a.replay(up, ("127.0.0.1", server.port), interval_s=1e-4)
        for d in up:
            proxy.inject("up", d)
            time.sleep(1e-4)
        sent["on_path_live_address_up"] = len(up)
        for d in down:
            proxy.inject("down", d)
            time.sleep(1e-4)
        sent["on_path_robot_address_down"] = len(down)
        if attack.can_spoof():
            with attack.Replayer(proxy.upstream_address) as a:
                sent["forged_live_address"] = a.replay(up, ("127.0.0.1", server.port), interval_s=1e-4)

    run = attack.live_hold_run(server, KEY, replays, tmp / "replay.rrlog")
    return _live_summary(run, {"sent": sent})


def flood_during_hold(server, tmp: Path) -> dict:
    captured, _ = attack.record_session(server, KEY)
    hellos = attack.select(captured, "up", {"hello"})
    sent = {}

    def hello_flood(proxy, driver):
        t0 = time.monotonic()
        sources = [(f"127.0.0.{i}", 0) for i in range(5, 9)]
        sent["hellos"] = attack.flood(("127.0.0.1", server.port), hellos, duration_s=1.4, sources=sources)
        sent["rate_per_s"] = sent["hellos"] / (time.monotonic() - t0)

    run = attack.live_hold_run(server, KEY, hello_flood, tmp / "flood.rrlog")
    return _live_summary(run, {"sent": sent})


def cli_under_attack(server, tmp: Path) -> dict:
    captured, recorded = attack.record_session(server, KEY)
    attack.wait_at_rest(server)
    up = attack.select(captured, "up")
    key_file = atomic_write_bytes(tmp / "key", KEY, mode=0o600)  # read_key refuses a key file open to others
    summary = tmp / "summary.json"
    before = server.robot_server.stats()
    cmd = [sys.executable, "-m", "robot_rt.cli", "run", "--robot", f"udp://127.0.0.1:{server.port}?camera=none"]
    cmd += ["--policy", "robot_rt.control.policies:Hold", "--duration", "4", "--rate", "500", "--no-status"]
    cmd += ["--key-file", str(key_file), "--summary", str(summary), "--log", str(tmp / "cli.rrlog")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t_end = time.monotonic() + 60
    while not server.robot_server.snapshot()["has_controller"] and time.monotonic() < t_end:
        if proc.poll() is not None:  # the CLI refused to start: its error, not a wait for a controller
            raise RuntimeError(f"robot-rt run exited {proc.returncode} before connecting: {proc.communicate()[1]}")
        time.sleep(0.05)
    time.sleep(0.5)
    with attack.Excursion(server) as ex:
        for source in (("127.0.0.2", 0), recorded):
            with attack.Replayer(source) as a:
                a.replay(up, ("127.0.0.1", server.port), interval_s=1e-4)
        if attack.can_spoof():
            host, port = server.robot_server.snapshot()["controller"].rsplit(":", 1)
            with attack.Replayer((host, int(port))) as a:
                a.replay(up, ("127.0.0.1", server.port), interval_s=1e-4)
        proc.communicate(timeout=120)
    result = json.loads(summary.read_text())
    return {
        "exit_code": proc.returncode,
        "excursion": ex.max_m,
        "server": _reasons(before, server.robot_server.stats()),
        "sessions_established": result["link"]["sessions_established"],
        "sessions_lost": result["link"]["sessions_lost"],
        "safety_events": {k: result["events"].get(k, 0) for k in SAFETY},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--out", default=None, help="results directory (default bench/results)")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    cost = cost_per_datagram(args.iterations)
    results = {"load_average": load, "spoofing_allowed": attack.can_spoof(), "cost_per_datagram": cost}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        scenarios = {}
        for name, fn in (
            ("replay_after_idle", lambda s: replay_after_idle(s)),
            ("replay_during_hold", lambda s: replay_during_hold(s, tmp)),
            ("flood_during_hold", lambda s: flood_during_hold(s, tmp)),
            ("cli_under_attack", lambda s: cli_under_attack(s, tmp)),
        ):
            with SimServer(load_robot(), camera=False, key=KEY) as server:
                scenarios[name] = fn(server)
    results["scenarios"] = scenarios
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["load_average_after"] = os.getloadavg()
    path = write_json("bench_link_attacks", results, args.out)

    if "server_ns" in cost:
        rows = [
            (k, f"{v:.0f}", f"{cost['server_ratio_vs_accepted_command'][k]:.2f}") for k, v in cost["server_ns"].items()
        ]
        rows += [
            (f"client: {k}", f"{v:.0f}", f"{cost['client_ratio_vs_accepted_state'][k]:.2f}")
            for k, v in cost["client_ns"].items()
        ]
        print_table(
            "session layer, ns per received datagram (ratio vs the accepted one)", ["datagram", "ns", "ratio"], rows
        )
    rows = []
    for name, r in scenarios.items():
        rows.append(
            (
                name,
                f"{r['excursion']:.3g}",
                str(r.get("session_lost", r.get("sessions_lost", "-"))),
                f"{r['commands_applied_ratio']:.2f}" if "commands_applied_ratio" in r else "-",
                str(
                    sum(
                        v
                        for k, v in r["server"].items()
                        if k not in ("commands_applied", "sessions_opened", "handshakes_answered")
                    )
                ),
                str(sum(r.get("safety_events", {}).values())),
                str(r.get("exit_code", "-")),
            )
        )
    print_table(
        f"attacks end to end (load average {load[0]:.1f}; noisy)",
        ["scenario", "max excursion", "live session lost", "applied ratio", "refused", "safety events", "exit"],
        rows,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
