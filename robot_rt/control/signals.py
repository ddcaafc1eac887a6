"""Process signals around a running control loop.

A process killed by a signal while its loop drives the robot sends no further command: the robot runs on its last
command until its own command timeout and then brakes at the drive's peak (a stop nobody planned). So, while a
:class:`~robot_rt.control.loop.RealTimeLoop` runs (started from the main thread):

- SIGTERM and SIGHUP (a supervisor, a closed terminal or ssh session), where their action was the default one (which
  kills the process), raise :class:`Terminated` in the main thread instead, as Ctrl-C raises KeyboardInterrupt: the
  caller's ``except``/``finally`` or the interpreter's exit handler ends the run with the loop's controlled stop.
  Handlers the program installed itself, and ignored signals (``nohup``), are left as they are.
- :func:`shielded` (around ``RealTimeLoop.stop()``): no signal interrupts the controlled stop. SIGTERM, SIGHUP and
  SIGINT arriving during it are held and raised when it has ended (the robot at rest), as :class:`Terminated` or
  KeyboardInterrupt.

Python runs signal handlers in the main thread only, so nothing here applies to loops started or stopped from
other threads (their stops are not interrupted by a signal either: the exception lands in the main thread).
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["TERMINATION_SIGNALS", "Terminated", "acquire", "release", "shielded"]

TERMINATION_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


class Terminated(BaseException):  # noqa: N818 (like KeyboardInterrupt: a request to end, not an error)
    """A termination signal (SIGTERM, SIGHUP) arrived while a control loop was running. A BaseException, like
    KeyboardInterrupt, so that ``except Exception`` in a policy or a script does not swallow it."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"terminated by {signal.Signals(self.signum).name}")


_lock = threading.RLock()
_previous: dict[int, object] = {}  # signal -> the handler ours replaced (only signals we took over)
_users = 0  # running loops that acquired the handlers
_shield_depth = 0
_held: list[int] = []  # signals that arrived while shielded, in order


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_termination(signum, frame) -> None:
    if _shield_depth > 0:
        _held.append(signum)
        return
    if _users == 0:  # no loop runs (its release() came from another thread and could not restore us): as before us
        previous = _previous.pop(signum, signal.SIG_DFL)
        signal.signal(signum, previous)
        if previous is signal.SIG_DFL:
            signal.raise_signal(signum)
        elif callable(previous):
            previous(signum, frame)
        return
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_blocked():
    """The termination signals and SIGINT wait (in the kernel) while the shield's bookkeeping runs, so none lands
    between its steps (a half-restored SIGINT handler, a held signal taken twice)."""
    mask = {signal.SIGINT, *TERMINATION_SIGNALS}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, mask)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _hold_interrupt(signum, frame) -> None:
    _held.append(signum)


def acquire() -> bool:
    """A loop starts: take over SIGTERM / SIGHUP where their action is the default one. False (nothing done) outside
    the main thread. Each True is paired with one :func:`release`."""
    global _users
    if not _in_main_thread():
        return False
    with _lock:
        _users += 1
        for signum in TERMINATION_SIGNALS:
            if signum not in _previous and signal.getsignal(signum) is signal.SIG_DFL:
                _previous[signum] = signal.signal(signum, _on_termination)
    return True


def release() -> None:
    """The loop that acquired has stopped: once none is left, the handlers ours replaced are back (unless the
    program replaced ours meanwhile: then its own stay)."""
    global _users
    with _lock:
        _users = max(0, _users - 1)
        if _users or not _in_main_thread():
            return
        _give_handlers_back()


def _give_handlers_back() -> None:
    """The handlers ours replaced go back where ours is still installed (a program's own later ones stay). Caller
    holds _lock."""
    for signum, previous in list(_previous.items()):
        try:
            if signal.getsignal(signum) is _on_termination:
                signal.signal(signum, previous)
        except ValueError:  # (not the main thread: nothing can be set from here)
            pass
    _previous.clear()


def _give_interrupt_back() -> None:
    """Python's SIGINT handler back where the shield's hold is installed. Caller holds _lock (main thread)."""
    if signal.getsignal(signal.SIGINT) is _hold_interrupt:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


@contextlib.contextmanager
def shielded():
    """No SIGTERM / SIGHUP (ours) nor SIGINT (Python's default handler) interrupts the block: they are held, and the
    first is raised once the outermost shield has ended; a block that ends by an exception raises the held signal's
    exception from it (the termination request is not lost)."""
    global _shield_depth
    if not _in_main_thread():
        yield
        return
    with _signals_blocked(), _lock:
        swapped_int = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if swapped_int:
            signal.signal(signal.SIGINT, _hold_interrupt)
        _shield_depth += 1
    failed: BaseException | None = None
    try:
        yield
    except BaseException as err:
        failed = err
        raise
    finally:
        with _signals_blocked(), _lock:
            if swapped_int:
                _give_interrupt_back()
            held = list(_held) if _shield_depth == 1 else []
            if _shield_depth == 1:
                _held.clear()
            _shield_depth -= 1
        if held:
            if failed is None:
                raise _exception_for(held[0])
            raise _exception_for(held[0]) from failed


def reset_in_forked_child() -> None:
    """A forked child runs none of its parent's loops: the handlers taken for them go back (a SIGTERM to the child
    ends it as it would have), and nothing is held or counted."""
    global _users, _shield_depth, _lock
    _lock = threading.RLock()  # (the parent's may be held by a thread that does not exist here: never taken again)
    with _lock:
        _give_handlers_back()
        try:  # forked inside a shield: its SIGINT hold would swallow the child's Ctrl-C
            _give_interrupt_back()
        except ValueError:  # (not the main thread: nothing can be set from here)
            pass
        _users = 0
        _shield_depth = 0
        _held.clear()
