"""Shared helpers of the robot_rt tests: wait for a condition instead of sleeping, run the loop for a number of its
own ticks instead of for wall time, pump a bare UDP driver until the link reports something, and read the kernel's
UDP drop counter.

Everything here waits on what the code under test does (a counter, an event, a state), with a generous timeout
that only a hang reaches; nothing asserts how fast a loaded machine runs (performance lives in bench/).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

DEFAULT_TIMEOUT_S = 60.0


def with_wide_workspace(robot, **changes):
    """`robot` (with `changes`) whose workspace box no joint motion leaves, for tests whose policies sweep joints at
    full speed over a link: both ends state that box (a loop keeps a box whenever it drives a robot over a link)."""
    return dataclasses.replace(robot, workspace_min_m=np.full(3, -10.0), workspace_max_m=np.full(3, 10.0), **changes)


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    what: str = "the condition",
    interval_s: float = 0.002,
    context: Callable[[], object] | None = None,
):
    """Polls `predicate` until it returns a true value (returned); AssertionError naming `what` after `timeout_s`
    (and what `context()` then says, e.g. the loop's lifecycle and stop reasons)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            said = f" ({context()})" if context is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{said}")
        time.sleep(interval_s)


def loop_ticks(loop) -> int:
    """Ticks of a RealTimeLoop (or a bare robot_rt._control.ControlLoop) so far."""
    return int(loop.counters()["ticks"])


def wait_ticks(loop, ticks: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Waits until the running loop has ticked `ticks` more times; returns its tick count."""
    target = loop_ticks(loop) + int(ticks)
    return wait_until(lambda: loop_ticks(loop) >= target and loop_ticks(loop), timeout_s, f"{ticks} loop ticks")


def run_loop_ticks(loop, ticks: int, during=None, until=None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Starts `loop`, lets it tick at least `ticks` times (and until `until(loop, t_s)` holds, if given) and stops it.
    `during(loop, t_s)` is called about every millisecond with the loop's own time t_s = ticks x period (not wall
    time: a loaded machine only makes the run take longer)."""
    period_s = loop.period_s

    def done() -> bool:
        n = loop_ticks(loop)
        t_s = n * period_s
        if during is not None:
            during(loop, t_s)
        return n >= ticks and (until is None or until(loop, t_s))

    with loop:
        wait_until(done, timeout_s, f"{ticks} loop ticks", interval_s=0.001)


class Steps:
    """A `during` for run_loop_ticks: `(after_s, action(loop))` pairs done in order, one per call, each `after_s` of
    loop time after the previous one was done (the first after t = 0). A slow caller delays the actions but never
    merges two of them into one moment. `finished_for(t_s, hold_s)`: all done, the last at least hold_s ago."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.done_at: list[float] = []

    def __call__(self, loop, t_s: float) -> None:
        k = len(self.done_at)
        if k < len(self.steps):
            after_s, action = self.steps[k]
            if t_s >= (self.done_at[-1] if self.done_at else 0.0) + after_s:
                action(loop)
                self.done_at.append(t_s)

    def finished_for(self, t_s: float, hold_s: float) -> bool:
        return len(self.done_at) == len(self.steps) and t_s >= self.done_at[-1] + hold_s


def pump_until(driver, predicate, command=None, timeout_s: float = DEFAULT_TIMEOUT_S, period_s: float = 0.002):
    """Drives a bare UdpDriver like a loop would (read the state, send `command` = (position, velocity) every
    `period_s`) until `predicate(last_state)` holds; returns the last state received (None if none yet)."""
    last = [None]

    def step():
        state = driver.read_state()
        if state is not None:
            last[0] = state
        if command is not None:
            driver.write_command(*command)
        return predicate(last[0])

    wait_until(step, timeout_s, "the link condition", interval_s=period_s)
    return last[0]


def udp_receive_buffer_drops() -> int | None:
    """Datagrams the kernel dropped on full UDP receive buffers so far (RcvbufErrors of /proc/net/snmp, this
    network namespace), or None where that is not readable."""
    try:
        lines = [line.split() for line in open("/proc/net/snmp").read().splitlines() if line.startswith("Udp:")]
        header, values = lines[0], lines[1]
        return int(values[header.index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None
