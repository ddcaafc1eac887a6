"""The late-tick attribution of bench/bench_control.py (loop ticks vs the empty C witness on the same CPU)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_control.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_control_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MS = 1_000_000


def test_stall_held_both_threads_is_shared(bench):
    # the CPU was unavailable from 10.0 ms to 14.2 ms: the loop (deadline 10.3 ms) and the witness
    # (deadline 10.8 ms) both wake at ~14.2 ms
    loop = [(int(10.3 * MS), int(14.2 * MS))]
    witness = [(int(10.8 * MS), int(14.25 * MS))]
    out = bench.attribute_late_ticks(loop, witness)
    assert out["late_ticks"] == 1
    assert out["shared_with_witness"] == 1 and out["loop_only"] == 0
    assert out["max_shared_late_us"] == pytest.approx(3900.0)


def test_stall_that_began_before_the_loops_deadline_is_shared(bench):
    # the witness's deadline (9.9 ms) came before the loop's (10.3 ms); both were held until 14.2 ms
    loop = [(int(10.3 * MS), int(14.2 * MS))]
    witness = [(int(9.9 * MS), int(14.21 * MS))]
    assert bench.attribute_late_ticks(loop, witness)["shared_with_witness"] == 1


def test_stall_that_caught_the_witness_later_is_shared(bench):
    # a quiet run's case: the loop's timer (10.3 ms) and the witness's (10.9 ms) both fired only at 11.44 ms
    loop = [(int(10.3 * MS), int(11.44 * MS))]
    witness = [(int(10.9 * MS), int(11.445 * MS))]
    assert bench.attribute_late_ticks(loop, witness)["shared_with_witness"] == 1


def test_witness_barely_late_at_the_same_moment_is_not_a_shared_stall(bench):
    # a witness tick only 60 us late near the loop's wake-up (e.g. waiting for the loop's own tick) is no evidence
    loop = [(int(10.3 * MS), int(14.2 * MS))]
    witness = [(int(14.15 * MS), int(14.21 * MS))]
    assert bench.attribute_late_ticks(loop, witness)["loop_only"] == 1


def test_loop_late_while_witness_ran_on_time_is_the_loops_own(bench):
    loop = [(int(10.3 * MS), int(12.0 * MS))]
    # the witness woke on time at 10.8 and 11.8 ms (only ticks later than its threshold are listed: none here),
    # and an unrelated late witness tick long before
    witness = [(int(2.0 * MS), int(3.5 * MS))]
    out = bench.attribute_late_ticks(loop, witness)
    assert out["loop_only"] == 1 and out["shared_with_witness"] == 0
    assert out["loop_only_ticks"][0]["late_us"] == pytest.approx(1700.0)


def test_witness_woke_much_earlier_than_the_loop_is_not_shared(bench):
    # the witness was held only briefly (woke at 11.0 ms), the loop stayed late until 12.5 ms
    loop = [(int(10.3 * MS), int(12.5 * MS))]
    witness = [(int(10.8 * MS), int(11.0 * MS))]
    assert bench.attribute_late_ticks(loop, witness)["loop_only"] == 1


def test_ticks_under_the_threshold_are_ignored(bench):
    loop = [(0, int(0.9 * MS)), (5 * MS, int(5.2 * MS))]
    out = bench.attribute_late_ticks(loop, [])
    assert out["late_ticks"] == 0 and out["loop_only"] == 0


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_platform_tick_runs_and_logs_late_ticks(bench, tmp_path):
    exe = bench.build_floor(tmp_path)
    # log threshold 0: every tick is logged, so the log must hold (deadline, wake) pairs, one per tick
    summary, events = bench.finish_floor(bench.start_floor(exe, 1, 0, priority=1, log_threshold_us=0))
    # one second at 1 kHz: every slot is either ticked or skipped after a stall
    assert 990 <= summary["ticks"] + summary["skipped_ticks"] <= 1000
    assert summary["late_over_1ms"] <= summary["late_over_100us"] <= summary["ticks"]
    # threshold 0 logs every tick that woke after its deadline, on the 1 ms grid
    assert len(events) >= summary["ticks"] - 5
    assert all(wake > deadline for deadline, wake in events)
    assert all((b[0] - a[0]) % 1_000_000 == 0 for a, b in zip(events, events[1:]))
