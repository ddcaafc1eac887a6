"""The loop's online trajectory generator (csrc/robot_rt/control/otg.hpp) against ruckig, measured in one run.

For N random 1-DoF cases (limits V 0.2..8, A 2..60, J 50..2000 per s^n; initial states inside the limits and able to
keep |v| <= V; rest targets, and references moving at up to 0.9 V) it reports
  * duration: ours (ticks of 1 ms until exactly on the reference) / ruckig's time-optimal duration, distribution;
  * compute per tick: ours (the whole trajectory computed in one C++ call, divided by its ticks) and ruckig's online
    use (Ruckig.update once per 1 ms cycle from Python, divided likewise; ruckig plans once and then samples, so
    this is mostly its sampling and the Python call) - a rough competitor figure, not the same work.
Writes bench/results/bench_otg.json and prints a table. Usage: python bench/bench_otg.py [--n 2000] [--seed 0]
Figures taken while other jobs share the machine are noisy; the duration ratios are not (deterministic).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import ruckig

from robot_rt import _control

DT = 1e-3


def random_cases(n: int, seed: int, moving: bool) -> list[tuple]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        V, A, J = rng.uniform(0.2, 8.0), rng.uniform(2.0, 60.0), rng.uniform(50.0, 2000.0)
        while True:
            v, a = rng.uniform(-V, V), rng.uniform(-A, A)
            if abs(v + a * abs(a) / (2 * J)) <= V:
                break
        target_v = rng.uniform(-0.9 * V, 0.9 * V) if moving else 0.0
        cases.append((rng.uniform(-1, 1), v, a, rng.uniform(-2, 2), target_v, V, A, J))
    return cases


def ruckig_input(case):
    p, v, a, target_p, target_v, V, A, J = case
    inp = ruckig.InputParameter(1)
    inp.current_position, inp.current_velocity, inp.current_acceleration = [p - target_p], [v - target_v], [a]
    inp.target_position, inp.target_velocity, inp.target_acceleration = [0.0], [0.0], [0.0]
    inp.max_velocity, inp.min_velocity = [V - target_v], [-V - target_v]
    inp.max_acceleration, inp.max_jerk = [A], [J]
    return inp


def ruckig_duration(case) -> float:
    trajectory = ruckig.Trajectory(1)
    ruckig.Ruckig(1).calculate(ruckig_input(case), trajectory)
    return float(trajectory.duration)


def ruckig_online_s_per_tick(case, max_ticks: int = 20000) -> float:
    otg = ruckig.Ruckig(1, DT)
    inp, out = ruckig_input(case), ruckig.OutputParameter(1)
    t0 = time.perf_counter()
    ticks = 0
    while ticks < max_ticks:
        result = otg.update(inp, out)
        ticks += 1
        if result != ruckig.Result.Working:
            break
        out.pass_to_input(inp)
    return (time.perf_counter() - t0) / ticks


def run(n: int, seed: int) -> dict:
    out: dict = {"dt_s": DT, "n": n, "seed": seed, "load_avg": os.getloadavg()}
    for kind, moving in (("rest_targets", False), ("moving_references", True)):
        ratios, extra_ticks, ours_tick_s, ruckig_tick_s, unreached = [], [], [], [], 0
        for k, case in enumerate(random_cases(n, seed + int(moving), moving)):
            p, v, a, target_p, target_v, V, A, J = case
            optimal = ruckig_duration(case)
            max_steps = int(np.ceil(2 * optimal / DT)) + 100
            t0 = time.perf_counter()
            rows, reached = _control.otg_trajectory(p, v, a, target_p, target_v, np.array([V, A, J]), DT, max_steps)
            elapsed = time.perf_counter() - t0
            if reached < 0:
                unreached += 1
                continue
            ratios.append(reached * DT / optimal if optimal > 0 else 1.0)
            extra_ticks.append(reached - optimal / DT)
            ours_tick_s.append(elapsed / max(reached, 1))
            if k < 200:  # the Python-driven ruckig loop is slow; a subset is enough for its per-tick figure
                ruckig_tick_s.append(ruckig_online_s_per_tick(case))
        r = np.asarray(ratios)
        out[kind] = {
            "cases": n,
            "unreached": unreached,
            "duration_ratio": {
                q: float(np.percentile(r, p)) for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
            }
            | {"min": float(r.min()), "mean": float(r.mean())},
            "extra_ticks": {"p50": float(np.median(extra_ticks)), "max": float(np.max(extra_ticks))},
            "ours_us_per_tick": {
                "median": 1e6 * float(np.median(ours_tick_s)),
                "p99": 1e6 * float(np.percentile(ours_tick_s, 99)),
            },
            "ruckig_online_us_per_tick": {"median": 1e6 * float(np.median(ruckig_tick_s))},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="results directory (default bench/results)")
    args = parser.parse_args()
    result = run(args.n, args.seed)
    from _common import print_table, write_json

    rows = []
    for kind in ("rest_targets", "moving_references"):
        d = result[kind]
        q = d["duration_ratio"]
        rows.append(
            [
                kind,
                d["cases"] - d["unreached"],
                f"{q['p50']:.4f}",
                f"{q['p90']:.4f}",
                f"{q['p99']:.4f}",
                f"{q['max']:.4f}",
                f"{d['extra_ticks']['p50']:.1f} / {d['extra_ticks']['max']:.1f}",
                f"{d['ours_us_per_tick']['median']:.2f}",
                f"{d['ruckig_online_us_per_tick']['median']:.2f}",
            ]
        )
    print_table(
        f"OTG vs ruckig (duration = ours / ruckig's time-optimal; dt {DT * 1e3:.0f} ms; load {result['load_avg'][0]:.1f})",
        ["targets", "reached", "p50", "p90", "p99", "max", "extra ticks p50/max", "ours us/tick", "ruckig us/tick"],
        rows,
    )
    path = write_json("bench_otg", result, Path(args.out) if args.out else None)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
