"""`BackgroundThread`: the start/stop/join of a named daemon thread that runs until asked to stop, shared by the
loop's policy runner, the UDP link monitor and the simulated servers (robot_rt.sim)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundThread:
    """Runs `target()` in a daemon thread named `name`; the target returns once `stop_event` is set.

    `start()` clears the event and starts a fresh thread (a stopped one can be started again); `stop(timeout_s)`
    sets the event, joins (at most `timeout_s`, None: until it ends) and returns whether the thread has ended.
    """

    def __init__(self, target: Callable[[], None], name: str):
        self._target = target
        self.name = name
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> BackgroundThread:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self.stop_event.clear()
        self._thread = threading.Thread(target=self._target, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> bool:
        self.stop_event.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()
