"""`BackgroundThread`: the start/stop/join of a named daemon thread that runs until asked to stop, shared by the
loop's policy runner, the UDP link monitor and the simulated servers (robot_rt.sim)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundThread:
    """Runs `target()` in a daemon thread named `name`; the target returns once `stop_event` is set.

    `start()` starts a fresh thread with a fresh event (a stopped one can be started again); `stop(timeout_s)` sets
    the event, joins (at most `timeout_s`, None: until it ends) and returns whether the thread has ended.

    A thread that did not end within `stop`'s timeout (stuck in a call) keeps its own, set event: it can never act
    as the next run's thread, and `start()` refuses while it is still alive (`left_behind`). A target reads
    `stop_event` once when it starts (the event of its own run).
    """

    def __init__(self, target: Callable[[], None], name: str):
        self._target = target
        self.name = name
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._left: list[threading.Thread] = []  # stopped, but still inside a call when the join timed out

    @property
    def left_behind(self) -> bool:
        """True while a thread of an earlier run is still alive (it did not end within its stop's timeout)."""
        self._left = [t for t in self._left if t.is_alive()]
        return bool(self._left)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> BackgroundThread:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        if self.left_behind:
            raise RuntimeError(
                f"{self.name}: the previous run's thread is still inside a call; start again once it returns"
            )
        self.stop_event = threading.Event()  # this run's; an earlier thread keeps its own (set) one
        self._thread = threading.Thread(target=self._target, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> bool:
        self.stop_event.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            self._left.append(thread)
        return not thread.is_alive()
