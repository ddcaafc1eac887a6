"""The real-time core: the C++ loop (robot_rt._control), its Python wrapper, the run log reader and replay, the UDP
protocol and driver, the policies loader (see docs/architecture.md, docs/runlog.md, docs/protocol.md). The
simulated far end is robot_rt.sim, the bridge from env policies robot_rt.bridge."""

from .runlog import RunLog, read_runlog

__all__ = ["Event", "RealTimeLoop", "RunLog", "read_runlog", "robot_model"]


def __getattr__(name):  # the loop needs the native module; the log reader does not
    if name in ("RealTimeLoop", "Event", "robot_model", "EVENT_CODES", "EVENT_NAMES"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'robot_rt.control' has no attribute {name!r}")
