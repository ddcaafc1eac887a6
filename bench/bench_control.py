"""Benchmark of the real-time loop: tick jitter at 1 kHz with the other core busy, and the policy round trip.

Runs (each for --duration seconds, default 60):
  * cpp_fifo   : C++ ControlLoop, SCHED_FIFO priority 80 pinned to CPU 0 (when permitted), mlockall. An
                 empty C ticker (bench/platform_tick.c, SCHED_FIFO 79, same CPU) runs beside it as a witness:
                 a stall of the CPU itself (kernel, or the hypervisor not running the vCPU) holds both threads
                 until the same moment, while lateness the loop causes itself (its own tick, a lock, a page
                 fault) does not show in the witness. Every loop tick later than 1 ms is matched against the
                 witness's late ticks (`late_attribution`): "shared" = a witness tick at least 150 us late woke
                 within 300 us of the loop's wake-up (both were held until the same moment); "loop_only" =
                 none did;
  * cpp_normal : the same loop with normal scheduling and no pinning;
  * python_ref : the reference, a pure-Python loop sleeping to absolute deadlines (time.sleep), pinned like
                 cpp_fifo but without real-time priority (run for min(duration, 10) s);
  * c_floor    : the platform floor alone, the same empty C tick with nothing beside it (SCHED_FIFO 80,
                 pinned, mlockall). Lateness it shows belongs to the machine, not to the control loop.
While each runs, a busy-loop process spins on the other core (CPU 1); this process (loop thread and policy
thread) is kept on CPU 0. Both C++ runs drive the in-process
simulated robot with a 100 Hz Python policy (waiting for each fresh observation, as RealTimeLoop does), and
report its round trip: time from the loop publishing an observation to the policy's command being in the
loop's ring (policy_round_trip), and to the tick that consumed it (command_latency, quantised to 1 tick).

Targets (issue): p99 jitter < 200 us and no tick later than 1 ms at 1 kHz with one core loaded; policy round
trip < 1 ms median. Jitter = wake latency = actual wake-up minus the absolute deadline.

    .venv/bin/python bench/bench_control.py --duration 60
Writes bench/results/bench_control.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from robot_rt.control.loop import RealTimeLoop
from robot_rt.robot import load_robot


def _spin(cpu: int) -> None:
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass
    x = 0
    while True:
        x += 1


class BusyCore:
    """A separate process spinning on `cpu` for the duration of the block."""

    def __init__(self, cpu: int):
        self.cpu = cpu
        self.proc = None

    def __enter__(self):
        self.proc = mp.get_context("fork").Process(target=_spin, args=(self.cpu,), daemon=True)
        self.proc.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.join(5)


def stats_us(values_ns: np.ndarray) -> dict:
    v = np.asarray(values_ns, dtype=np.float64) / 1e3
    if v.size == 0:
        return {"count": 0}
    return {
        "count": int(v.size),
        "p50": float(np.percentile(v, 50)),
        "p99": float(np.percentile(v, 99)),
        "p999": float(np.percentile(v, 99.9)),
        "max": float(v.max()),
        "mean": float(v.mean()),
        "above_1ms": int((v > 1000).sum()),
    }


def hist_us(h: dict) -> dict:
    return {
        "count": int(h["count"]),
        "p50": h["p50_ns"] / 1e3,
        "p99": h["p99_ns"] / 1e3,
        "p999": h["p999_ns"] / 1e3,
        "max": h["max_ns"] / 1e3,
        "mean": h["mean_ns"] / 1e3,
        "above_1ms": int(h["above_1ms"]),
    }


def run_cpp(
    duration_s: float,
    realtime: bool,
    cpu: int | None,
    busy_cpu: int | None,
    witness_exe: Path | None = None,
    cpu_latency_limit_us: int | None = None,
) -> dict:
    """One loop run; with `witness_exe`, the empty C ticker runs beside the loop on its CPU (see module doc)."""
    robot = load_robot()
    t0 = time.monotonic()

    def policy(obs):
        q = robot.home.copy()
        q[0] = 0.3 * math.sin(2 * math.pi * 0.5 * (time.monotonic() - t0))
        return q

    loop = RealTimeLoop(
        robot,
        policy=policy,
        policy_rate_hz=100,
        realtime_priority=80 if realtime else 0,
        cpu=cpu,
        lock_memory=realtime,
        late_threshold_s=WITNESS_LOG_THRESHOLD_US * 1e-6,  # log late wakes well below 1 ms, for attribution
        cpu_latency_limit_us=cpu_latency_limit_us,
    )
    import warnings

    witness = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = BusyCore(busy_cpu) if busy_cpu is not None else _Null()
        with ctx:
            loop.start()
            if witness_exe is not None:
                witness = start_floor(witness_exe, duration_s, cpu or 0, priority=79)
            end = time.monotonic() + duration_s
            while time.monotonic() < end:  # drain the loop's event ring (4096 entries) while it runs
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                loop.events()
            if witness is not None:
                witness_summary, witness_events = finish_floor(witness)
            loop.stop()
    counters = loop.counters()
    tel = loop.telemetry()
    late_wakes = [(e.stamp_ns - round(e.value * 1e9), e.stamp_ns) for e in loop.events() if e.name == "late_wake"]
    extra = {}
    if witness is not None:
        extra["witness"] = witness_summary
        extra["late_attribution"] = attribute_late_ticks(late_wakes, witness_events)
        extra["witness_held_ticks_ns"] = [[d, w] for d, w in witness_events if w - d >= WITNESS_HELD_NS]
    return extra | {
        "duration_s": duration_s,
        "realtime_requested": realtime,
        "realtime_granted": tel["realtime_granted"],
        "affinity_granted": tel["affinity_granted"],
        "memory_locked": tel["memory_locked"],
        "cpu_latency_limit_us": cpu_latency_limit_us,
        "cpu_latency_request_granted": tel["cpu_latency_request_granted"],
        "warnings": [str(w.message) for w in caught],
        "ticks": counters["ticks"],
        # the rate the loop kept: ticks plus the slots it skipped after an overrun cover the run (tests no longer
        # assert this: it depends on the machine's load; here it is measured)
        "achieved_rate_hz": counters["ticks"] / duration_s,
        "slots_covered": (counters["ticks"] + counters["skipped_ticks"]) / (duration_s * 1000.0),
        "deadline_misses": counters["deadline_misses"],
        "skipped_ticks": counters["skipped_ticks"],
        "late_ticks_over_50us": counters["late_ticks"],
        "jitter_us": hist_us(loop.histogram("wake_latency")),
        "period_us": hist_us(loop.histogram("period")),
        "tick_duration_us": hist_us(loop.histogram("tick_duration")),
        "policy_round_trip_us": hist_us(loop.histogram("policy_round_trip")),
        "command_latency_us": hist_us(loop.histogram("command_latency")),
        "policy_calls": tel["policy"]["calls"],
        "watchdog_stops": loop.event_count("watchdog_stop"),
        "late_wakes_over_1ms_ns": [[d, w] for d, w in late_wakes if w - d > 1_000_000],
    }


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_python_reference(duration_s: float, cpu: int | None, busy_cpu: int | None) -> dict:
    """Pure-Python 1 kHz loop on absolute deadlines (time.sleep), the reference for the jitter ratio."""
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass
    period = 1e-3
    n = int(duration_s / period)
    lat = np.empty(n, dtype=np.int64)
    ctx = BusyCore(busy_cpu) if busy_cpu is not None else _Null()
    with ctx:
        deadline = time.monotonic_ns() + 1_000_000
        for i in range(n):
            delay = (deadline - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic_ns()
            lat[i] = now - deadline
            deadline += 1_000_000
            if now > deadline:
                deadline += ((now - deadline) // 1_000_000 + 1) * 1_000_000
    if cpu is not None:
        try:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        except OSError:
            pass
    return {"duration_s": duration_s, "ticks": n, "jitter_us": stats_us(lat)}


WITNESS_LOG_THRESHOLD_US = 50.0
SHARED_WITHIN_NS = 300_000
WITNESS_HELD_NS = 150_000


def build_floor(tmp: Path) -> Path | None:
    """Compiles bench/platform_tick.c with the system C compiler (None when there is none)."""
    import shutil
    import subprocess

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    exe = Path(tmp) / "platform_tick"
    subprocess.run([compiler, "-O2", "-o", str(exe), str(Path(__file__).with_name("platform_tick.c"))], check=True)
    return exe


def start_floor(
    exe: Path, duration_s: float, cpu: int, priority: int = 80, log_threshold_us: float = WITNESS_LOG_THRESHOLD_US
):
    import subprocess

    args = [str(exe), str(max(1, int(round(duration_s)))), str(cpu), str(priority), str(log_threshold_us)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_floor(proc) -> tuple[dict, list[tuple[int, int]]]:
    """(summary, [(deadline_ns, wake_ns)] of its ticks later than WITNESS_LOG_THRESHOLD_US)."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"platform_tick exited with {proc.returncode}: {err[-500:]}")
    events = []
    for line in err.splitlines():
        deadline_ns, late_ns = (int(v) for v in line.split())
        events.append((deadline_ns, deadline_ns + late_ns))
    return json.loads(out), events


def attribute_late_ticks(
    loop_late: list[tuple[int, int]], witness_late: list[tuple[int, int]], threshold_ns: int = 1_000_000
) -> dict:
    """Splits the loop's ticks later than `threshold_ns` into those the witness shared and the loop's own.

    Both lists hold (deadline_ns, wake_ns) on CLOCK_MONOTONIC. A loop tick (d, w) is shared when a witness tick
    woke within SHARED_WITHIN_NS of w and was itself held, at least WITNESS_HELD_NS late (its p99 is < 100 us):
    the CPU was unavailable to both threads until about the same moment. Only wake-up times are matched: the
    witness's deadline may precede the loop's (the stall began earlier) or follow it (the witness was then held
    for less time than the loop)."""
    import bisect

    by_wake = sorted((wake, wake - deadline) for deadline, wake in witness_late)
    wakes = [wake for wake, _ in by_wake]
    shared, loop_only = [], []
    for d, w in loop_late:
        if w - d <= threshold_ns:
            continue
        lo = bisect.bisect_left(wakes, w - SHARED_WITHIN_NS)
        hi = bisect.bisect_right(wakes, w + SHARED_WITHIN_NS)
        held = [late for _, late in by_wake[lo:hi] if late >= WITNESS_HELD_NS]
        (shared if held else loop_only).append({"deadline_ns": d, "late_us": (w - d) / 1e3})
    return {
        "threshold_us": threshold_ns / 1e3,
        "late_ticks": len(shared) + len(loop_only),
        "shared_with_witness": len(shared),
        "loop_only": len(loop_only),
        "loop_only_ticks": loop_only,
        "max_shared_late_us": max((e["late_us"] for e in shared), default=0.0),
    }


def run_c_floor(duration_s: float, loop_cpu: int | None, busy_cpu: int | None, exe: Path | None) -> dict:
    if exe is None:
        return {"skipped": "no C compiler on PATH"}
    with BusyCore(busy_cpu) if busy_cpu is not None else _Null():
        summary, _ = finish_floor(start_floor(exe, duration_s, loop_cpu or 0))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per C++ run (default 60)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_control.json"))
    parser.add_argument(
        "--cpu-latency-limit-us",
        type=int,
        default=None,
        help="cpp_fifo: hold this CPU wake-up latency request while it runs (PM QoS; 0 = idle CPUs poll)",
    )
    args = parser.parse_args(argv)
    if not args.duration > 0:
        parser.error("--duration: expected a positive number of seconds")
    ncpu = os.cpu_count() or 1
    loop_cpu, busy_cpu = (0, 1) if ncpu >= 2 else (None, None)

    results = {
        "machine": {"cpus": ncpu, "platform": platform.platform(), "python": sys.version.split()[0]},
        "rate_hz": 1000,
        "policy_rate_hz": 100,
        "busy_cpu": busy_cpu,
        "loop_cpu": loop_cpu,
        "cpu_latency_limit_us": args.cpu_latency_limit_us,
    }
    if loop_cpu is not None:
        # keep this process (loop and policy threads) off the busy core; the busy process pins itself there
        try:
            os.sched_setaffinity(0, {loop_cpu})
        except OSError:
            pass
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        floor_exe = build_floor(Path(tmp))
        results["cpp_fifo"] = run_cpp(
            args.duration,
            True,
            loop_cpu,
            busy_cpu,
            witness_exe=floor_exe,
            cpu_latency_limit_us=args.cpu_latency_limit_us,
        )
        results["cpp_normal"] = run_cpp(args.duration, False, None, busy_cpu)
        results["python_ref"] = run_python_reference(min(args.duration, 10.0), loop_cpu, busy_cpu)
        results["c_floor"] = run_c_floor(args.duration, loop_cpu, busy_cpu, floor_exe)
    ref = results["python_ref"]["jitter_us"]
    for key in ("cpp_fifo", "cpp_normal"):
        j = results[key]["jitter_us"]
        results[key]["jitter_p99_ratio_vs_python"] = ref["p99"] / j["p99"] if j["p99"] > 0 else None
        results[key]["targets"] = {
            "p99_jitter_below_200us": j["p99"] < 200,
            "no_tick_later_than_1ms": j["max"] <= 1000 and results[key]["deadline_misses"] == 0,
            "policy_round_trip_median_below_1ms": results[key]["policy_round_trip_us"]["p50"] < 1000,
        }
        if "late_attribution" in results[key]:
            results[key]["targets"]["no_tick_later_than_1ms_not_shared_by_witness"] = (
                # a late wake also ends its tick past the next deadline (a miss); the loop's own misses would
                # show as a tick longer than the period
                results[key]["late_attribution"]["loop_only"] == 0 and results[key]["tick_duration_us"]["max"] < 1000
            )
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out)
    print_table(results)
    for label, floor in (
        ("witness beside cpp_fifo", results["cpp_fifo"].get("witness")),
        ("platform floor alone", results["c_floor"]),
    ):
        if floor and "skipped" not in floor:
            print(
                f"{label} (empty C tick, fifo={floor['fifo']}): mean late {floor['mean_late_us']:.1f} us, "
                f">100us {floor['late_over_100us']}, >1ms {floor['late_over_1ms']}, max {floor['max_late_us']:.1f} us"
            )
    att = results["cpp_fifo"].get("late_attribution")
    if att:
        print(
            f"cpp_fifo ticks > 1 ms: {att['late_ticks']} ({att['shared_with_witness']} shared with the witness, "
            f"{att['loop_only']} the loop's own)"
        )
    print(f"wrote {out}")
    return 0


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"robot_rt control loop at 1 kHz, other core busy ({results['machine']['cpus']} CPUs)")
    for col in (
        "run",
        "ticks",
        "jitter p50",
        "p99",
        "p99.9",
        "max (us)",
        ">1ms",
        "misses",
        "rt",
        "RTT p50",
        "RTT p99 (us)",
        "tick->tick p50",
    ):
        table.add_column(col, justify="right")
    for key in ("cpp_fifo", "cpp_normal", "python_ref"):
        r = results[key]
        j = r["jitter_us"]
        rt = r.get("policy_round_trip_us", {})
        cl = r.get("command_latency_us", {})
        table.add_row(
            key,
            str(r["ticks"]),
            f"{j['p50']:.1f}",
            f"{j['p99']:.1f}",
            f"{j['p999']:.1f}",
            f"{j['max']:.1f}",
            str(j["above_1ms"]),
            str(r.get("deadline_misses", "-")),
            "yes" if r.get("realtime_granted") else "no",
            f"{rt['p50']:.1f}" if rt else "-",
            f"{rt['p99']:.1f}" if rt else "-",
            f"{cl['p50']:.1f}" if cl else "-",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    sys.exit(main())
