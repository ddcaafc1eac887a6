"""The fault-injection matrix (robot_rt.sim.faults, bench/bench_fault_matrix.py) in a small version, asserting the
safety invariants of issue 12 on every row (docs/safety.md, "Fault-injection matrix"):

  * each fault ends in its own stop (the row's expected stop reason, first stop after the fault, from the run log),
    and the faults that must be ridden out (replays, floods, a future-stamped state) in none (at- and beyond-limit
    targets included: the commanded trajectory follows the clock through late wakes, docs/safety.md);
  * `robot-rt run` exits non-zero for every row that ends in a safety stop or a lost link (3 protective stop, 4 lost
    link, 5 e-stop), 0 only for the clean ones (the end of the run, or SIGTERM);
  * after the stop latched the robot travels no farther than the documented stopping distance (+ twice the
    tracking-error reflex's threshold: it lags when the stop begins and overshoots where it ends), the commanded
    trajectory no farther than the stopping distance itself, and once the robot is at rest it never moves again
    (watched until well after the controller exited and the fault went away: nobody recovered it);
  * nothing moves the robot that the live authenticated session did not command (the attack rows run a Hold
    policy: the robot must not move at all, bit for bit);
  * nothing passes a hard limit (the robot server's own per-tick record: no hard-stop hit).

Each row is a real `robot-rt run` process against the C++ simulated robot over UDP with a key; the fault lasts
a window and goes away. Nothing here times anything: ticks and events only (the bench reports the figures).
"""

from __future__ import annotations

import json

import pytest

from robot_rt.sim.faults import FAULTS, MatrixConfig, run_fault

# Timeouts well above the scheduling stalls of a loaded 2-core machine (the controller, the robot and this process
# share it), and a fault window well above the timeouts: the faults still stop the loop, load alone should not.
CONFIG = MatrixConfig(
    warmup_s=0.6, window_s=0.5, after_s=0.8, rate_hz=500.0, command_timeout_s=0.2, sensor_timeout_s=0.1
)
# Stops a stall of the loaded machine can cause by itself: the timeouts, and the tracking reflex after a stall of the
# loop longer than its 20 ms catch-up (the simulated servo runs on its last velocity feed-forward meanwhile; shorter
# late wakes are caught up: docs/safety.md, "Late wakes"). A row that ends in one of these instead of its expected
# outcome runs once more; a fault repeats on demand, a stall does not.
LOAD_SENSITIVE = {"watchdog_stop", "sensor_timeout_stop", "link_loss_stop", "tracking_error_stop"}
# servo settling and the recorder's sampling after rest; a resumed motion moves by far more (the policies move
# their joints by tenths of a radian within the window)
REST_TOLERANCE = CONFIG.rest_tolerance
BY_NAME = {f.name: f for f in FAULTS}


def _spoiled_by_load(row: dict, spec) -> bool:
    """A row that ended in a stop a stall of the machine causes by itself instead of its expected outcome, or whose
    loop such a stop had already stopped before the fault was injected (the fault was never tested: seen in CI, a
    sensor timeout and link loss 0.1-0.6 s after going live, exit 4 on a row that expects 0)."""
    before = row["stop_events_before_fault"]
    if before:
        return all(name in LOAD_SENSITIVE for name in before)
    return row["stop_reason"] not in spec.stops and row["stop_reason"] in LOAD_SENSITIVE


@pytest.mark.parametrize("fault", [f.name for f in FAULTS])
def test_fault_row_keeps_the_safety_invariants(fault, tmp_path):
    spec = BY_NAME[fault]
    try:
        row = run_fault(fault, CONFIG, workdir=tmp_path)
    except RuntimeError as err:
        # the controller lost its link before it went live (exit 4, link_lost), i.e. before any fault was injected:
        # a stall of the loaded machine at start-up (seen once in CI at 0.18 s), not the row under test; run it again
        if "exited early (4)" not in str(err):
            raise
        row = run_fault(fault, CONFIG, workdir=tmp_path)
    for _ in range(2):
        if not _spoiled_by_load(row, spec):
            break
        row = run_fault(fault, CONFIG, workdir=tmp_path)
    # the whole row in the failure message (pytest would elide a dict)
    detail = json.dumps({k: v for k, v in row.items() if k != "controller_output_tail"}, default=str)
    assert row["samples"] > 100, detail  # the robot was watched all along
    assert row["stop_events_before_fault"] == [], detail  # the fault met a live loop
    # the expected stop, and the exit code that says so
    assert row["stop_reason"] in spec.stops, detail
    if row["stop_reason"] is None:
        assert row["stop_events"] == [], detail
    else:
        assert row["ticks_to_stop"] is not None and row["ticks_to_stop"] >= 0, detail
    assert row["exit_code"] in spec.exit_codes, (detail, row["controller_output_tail"])
    if row["stop_reason"] not in (None, "shutdown_stop"):
        assert row["exit_code"] != 0, detail  # a safety stop or a lost link never exits 0
    # the stop's travel, then no motion without a recovery
    assert row["latched_by"] is not None, detail  # every run ends in a stop (the protective one, or the end of run)
    assert row["commanded_travel_vs_stopping_distance"] <= 1.0 + 1e-9, detail
    assert row["travel_after_stop_vs_bound"] <= 1.0, detail
    assert row["moved_after_stop"] is not None and row["observed_after_rest_s"] > 0.1, detail
    assert row["moved_after_stop"] <= REST_TOLERANCE, detail
    if row["commanded_after_stop"] is not None:
        assert row["commanded_after_stop"] == 0.0, detail  # a stopped loop holds its command exactly
    # nothing passes a hard limit (the robot server counts every hit of its hard stops, each tick)
    assert row["hard_stop_hits"] == 0 and row["hard_limit_margin_min"] > 0.0, detail
    if spec.attack:
        # nothing moves the robot that the live session did not command: it holds, bit for bit
        assert row["excursion_max"] == 0.0, detail
        assert row["robot_server"]["sessions"] == 1, detail  # no session opened besides the live one
    assert row["run_log_clean"], detail
