"""Where does a 1 kHz tick's lateness come from on this machine? The platform floor in three placements.

The empty C tick of bench_control.py (bench/platform_tick.c: clock_nanosleep to absolute deadlines,
SCHED_FIFO 80, pinned, mlockall, missed slots skipped) runs for --duration seconds in each of:
  * idle_cpu      : the tick on CPU 0, a busy-loop process on CPU 1 (bench_control's setup). CPU 0 idles
                    between ticks; in a VM an idle vCPU halts and the host must wake it for each tick;
  * idle_cpu_poll : the same, with a PM QoS CPU latency request of 0 held (/dev/cpu_dma_latency): idle CPUs
                    poll instead of halting, so CPU 0 never idles (RealTimeLoop(cpu_latency_limit_us=0));
  * busy_cpu      : the tick on CPU 1 beside the busy loop (FIFO preempts it), CPU 0 idle: the tick's CPU is
                    never idle either, but only one vCPU is busy.
Each placement runs --repeats times, interleaved, so slow drifts of the host's load hit all of them.

    .venv/bin/python bench/bench_platform_floor.py --duration 30 --repeats 2
Writes bench/results/bench_platform_floor.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_control import BusyCore, build_floor, finish_floor, start_floor  # noqa: E402

from robot_rt._io import atomic_write_json  # noqa: E402
from robot_rt.control.loop import CPU_LATENCY_DEVICE, open_cpu_latency_request  # noqa: E402

PLACEMENTS = {  # name: (tick cpu, busy cpu, hold a latency request of 0)
    "idle_cpu": (0, 1, False),
    "idle_cpu_poll": (0, 1, True),
    "busy_cpu": (1, 1, False),
}


def run_placement(exe: Path, duration_s: float, tick_cpu: int, busy_cpu: int, poll: bool) -> dict:
    fd = None
    if poll:
        try:
            fd = open_cpu_latency_request(0)
        except OSError as exc:
            return {"skipped": f"{CPU_LATENCY_DEVICE}: {exc.strerror}"}
    try:
        with BusyCore(busy_cpu):
            summary, events = finish_floor(start_floor(exe, duration_s, tick_cpu, log_threshold_us=1000.0))
    finally:
        if fd is not None:
            os.close(fd)
    summary["late_over_1ms_us"] = sorted(round((wake - deadline) / 1e3, 1) for deadline, wake in events)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run (default 30)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per placement (default 2)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_platform_floor.json"))
    args = parser.parse_args(argv)
    if not args.duration > 0 or args.repeats < 1:
        parser.error("--duration: expected seconds > 0; --repeats: expected >= 1")
    if (os.cpu_count() or 1) < 2:
        print("needs 2 CPUs")
        return 1
    results: dict = {"duration_s": args.duration, "repeats": args.repeats, "runs": {k: [] for k in PLACEMENTS}}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_floor(Path(tmp))
        if exe is None:
            print("no C compiler on PATH")
            return 1
        for _ in range(args.repeats):
            for name, (tick_cpu, busy_cpu, poll) in PLACEMENTS.items():
                results["runs"][name].append(run_placement(exe, args.duration, tick_cpu, busy_cpu, poll))
    atomic_write_json(args.out, results)
    print_table(results)
    print(f"wrote {args.out}")
    return 0


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"empty 1 kHz C tick, {results['duration_s']:.0f} s per run")
    for col in ("placement", "run", "fifo", "mean late (us)", ">100us", ">1ms", "max (us)", "late ticks > 1 ms (us)"):
        table.add_column(col, justify="right")
    for name, runs in results["runs"].items():
        for i, r in enumerate(runs):
            if "skipped" in r:
                table.add_row(name, str(i), "-", "-", "-", "-", "-", r["skipped"])
                continue
            table.add_row(
                name,
                str(i),
                "yes" if r["fifo"] else "no",
                f"{r['mean_late_us']:.1f}",
                str(r["late_over_100us"]),
                str(r["late_over_1ms"]),
                f"{r['max_late_us']:.0f}",
                ", ".join(f"{v:.0f}" for v in r["late_over_1ms_us"][-8:]),
            )
    Console(width=200).print(table)


if __name__ == "__main__":
    sys.exit(main())
