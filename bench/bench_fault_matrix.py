"""Fault-injection matrix of the control path (issue 12, item 8; docs/safety.md, "Fault-injection matrix").

Every fault of robot_rt.sim.faults.FAULTS runs against a fresh simulated robot (the C++ SimRobotServer, with a
key) and a `robot-rt run` controller process on the UDP link, through a proxy on the controller's path. The
controller runs a moving policy (Sine; Hold for the attacks) for `--warmup`, the fault lasts `--window` and
then goes away, and the run goes on for `--after`. Per fault: the stop reason (first protective-stop event after
the fault in the run log; the end-of-run stop for the SIGTERM row), ticks from the fault to the stop and to rest, the largest joint excursion from the
fault on (sampled on the robot every ~1 ms), how far past the soft limits (the run log's soft_min/soft_max when
the loop has them, else the hard limits), how close to a hard stop it came and how often it hit one (the robot
server clamps there and counts every hit, each tick), and the controller's exit code (the expected stop and exit code of each row come from robot_rt.sim.faults.FAULTS; a row
that misses them is marked UNEXPECTED; a row whose loop a stall of the machine had stopped before the fault was
injected says so: it did not test the fault). After the stop latched (the protective stop, else the end-of-run stop): the
robot's travel against its bound (the loop's stopping distance at this tick period + twice the tracking-error
reflex's threshold), the commanded travel against the stopping distance, the robot's overshoot past the commanded rest and the
time it took to be still (within 2e-4 for 0.1 s), and from then until 0.6 s after the controller exited, the
robot's motion (no recovery: it must not move). The reference is the "none" row of the same
run: the same policy without a fault (excursion ratios are against it).

Figures depend on the machine's load (the controller, the robot and the attacker share its cores): the load
average goes into the JSON. Writes bench/results/bench_fault_matrix.json and prints the table.
Usage: python bench/bench_fault_matrix.py [--faults a,b] [--warmup 0.8 --window 0.3 --after 1.2]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_note, print_table, write_json  # noqa: E402

from robot_rt.sim.faults import FAULT_NAMES, MatrixConfig, run_matrix  # noqa: E402


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec) if isinstance(x, float) else str(x)


def markdown_table(rows) -> str:
    """The docs/safety.md table: stop reason, ticks to stop / rest, excursion, past soft limit, closest to a hard
    stop / hits, robot travel after the stop (/ bound), commanded travel / stopping distance, overshoot past the
    commanded rest, moved after rest, exit code."""
    head = (
        "| fault | stop reason | ticks to stop / rest | excursion | past soft limit | closest to hard stop / hits "
        "| robot travel after stop (/ bound) | commanded travel / stopping distance | overshoot past commanded rest "
        "| moved after rest | exit |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        stop = "-" if r["stop_reason"] is None else f"`{r['stop_reason']}`"
        ticks = "-" if r["ticks_to_stop"] is None else f"{r['ticks_to_stop']} / {_fmt(r['ticks_to_rest'])}"
        lines.append(
            f"| {r['fault']} | {stop} | {ticks} | {_fmt(r['excursion_max'])} | {_fmt(r['past_soft_limit'])} "
            f"| {_fmt(r['hard_limit_margin_min'])} / {r['hard_stop_hits']} "
            f"| {_fmt(r['travel_after_stop'])} ({_fmt(r['travel_after_stop_vs_bound'], '.2f')}) "
            f"| {_fmt(r['commanded_travel_vs_stopping_distance'], '.2f')} "
            f"| {_fmt(r['overshoot_past_commanded_rest'])} | {_fmt(r['moved_after_stop'], '.2g')} | {r['exit_code']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", default=None, help=f"comma-separated subset of {', '.join(FAULT_NAMES)}")
    parser.add_argument("--warmup", type=float, default=0.8)
    parser.add_argument("--window", type=float, default=0.3)
    parser.add_argument("--after", type=float, default=1.2)
    parser.add_argument("--rate", type=float, default=500.0, help="controller loop rate (Hz)")
    parser.add_argument("--out", default=None, help="results directory (default bench/results)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown (docs/safety.md)")
    args = parser.parse_args(argv)
    names = None if args.faults is None else [n.strip() for n in args.faults.split(",")]
    unknown = set(names or ()) - set(FAULT_NAMES)
    if unknown:
        parser.error(f"--faults: unknown {sorted(unknown)} (expected some of {', '.join(FAULT_NAMES)})")
    if names is not None and "none" not in names:
        names = ["none", *names]  # the reference row
    config = MatrixConfig(warmup_s=args.warmup, window_s=args.window, after_s=args.after, rate_hz=args.rate)
    load_before = load_note()
    rows = run_matrix(names, config, progress=lambda r: print(f"{r['fault']}: {r['stop_reason']}", flush=True))
    reference = next(r for r in rows if r["fault"] == "none")["excursion_max"]
    for r in rows:
        r["excursion_vs_reference"] = r["excursion_max"] / reference if reference > 0 else None
    results = {
        "config": vars(config),
        "load_before": load_before,
        "load_after": load_note(),
        "note": "measured on a shared machine: tick counts and excursions depend on its load",
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    path = write_json("bench_fault_matrix", results, args.out)
    table = []
    for r in rows:
        stop_ms = "" if r["ticks_to_stop"] is None else f" ({r['ticks_to_stop'] * r['period_s'] * 1e3:.0f} ms)"
        ok_stop = r["stop_reason"] in r["expected_stops"]
        ok_exit = r["exit_code"] in r["expected_exit_codes"]
        table.append(
            (
                r["fault"],
                f"{_fmt(r['stop_reason'])}{'' if ok_stop else ' (UNEXPECTED)'}"
                + (
                    f" (stopped before the fault: {', '.join(before)})"
                    if (before := r["stop_events_before_fault"])
                    else ""
                ),
                f"{_fmt(r['ticks_to_stop'])}{stop_ms} / {_fmt(r['ticks_to_rest'])}",
                _fmt(r["excursion_max"]),
                f"{_fmt(r['past_soft_limit'])}{'' if r['soft_limits'] else ' (=hard)'}",
                f"{_fmt(r['hard_limit_margin_min'])} / {r['hard_stop_hits']}",
                f"{_fmt(r['travel_after_stop'])} ({_fmt(r['travel_after_stop_vs_bound'], '.2f')})",
                _fmt(r["commanded_travel_vs_stopping_distance"], ".2f"),
                f"{_fmt(r['overshoot_past_commanded_rest'])} / {_fmt(r['robot_settle_s'], '.2f')}",
                f"{_fmt(r['moved_after_stop'])} / {_fmt(r['commanded_after_stop'])}",
                f"{r['exit_code']}{'' if ok_exit else ' (UNEXPECTED)'}",
            )
        )
    print_table(
        f"fault-injection matrix ({load_before}; noisy)",
        [
            "fault",
            "stop reason",
            "ticks to stop / rest",
            "excursion",
            "past soft limit",
            "closest to hard / hits",
            "travel after stop (/ bound)",
            "cmd travel / stop dist",
            "overshoot past cmd rest / settle s",
            "moved / commanded after rest",
            "exit",
        ],
        table,
    )
    if args.markdown:
        print(markdown_table(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
