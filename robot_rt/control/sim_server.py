"""`robot-rt sim-server`: a simulated robot bridge plus a simulated camera, speaking docs/protocol.md.

The robot side is the C++ `robot_rt._control.SimRobotServer` (its own thread; joint dynamics with position,
velocity and acceleration limits, a servo tracking lag and a command transport delay), built from a robot
description JSON. The camera side is `robot_rt.control.camera.CameraServer` (ball physics + simulated
tracker). Both bind 127.0.0.1 by default, the camera on the robot port + 1 unless told otherwise.
On start the server prints one JSON line to stdout, `{"event": "listening", "host": ..., "robot_port": ...,
"camera_port": ...}`, so a parent process started with `--port 0` learns its ephemeral ports.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

from robot_rt.robot import RobotDescription, load_robot


class SimServer:
    """Robot server (C++ thread) + optional camera server (Python thread)."""

    def __init__(
        self,
        robot: RobotDescription | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        camera: bool = True,
        camera_port: int | None = None,
        camera_rate_hz: float = 150.0,
        serve_interval_s: float = 1.5,
        rate_hz: float = 1000.0,
        tracking_time_constant_s: float = 0.02,
        command_delay_s: float = 0.002,
        command_timeout_s: float = 0.1,
        key: bytes | str | None = None,
        allow_remote: bool = False,
        reply_on_command: bool = True,
        seed: int = 0,
    ):
        from robot_rt import _control

        self.robot = robot if robot is not None else load_robot()
        key_bytes = key.encode() if isinstance(key, str) else (key or b"")
        self.robot_server = _control.SimRobotServer(
            self.robot.position_min.tolist(),
            self.robot.position_max.tolist(),
            self.robot.velocity_limit.tolist(),
            self.robot.acceleration_limit.tolist(),
            initial_position=self.robot.home.tolist(),
            host=host,
            port=int(port),
            rate_hz=rate_hz,
            tracking_time_constant_s=tracking_time_constant_s,
            command_delay_s=command_delay_s,
            command_timeout_s=command_timeout_s,
            key=key_bytes,
            allow_remote=allow_remote,
            reply_on_command=reply_on_command,
        )
        self.host = host
        self._camera_args = dict(
            host=host,
            rate_hz=camera_rate_hz,
            serve_interval_s=serve_interval_s,
            seed=seed,
            key=key_bytes or None,
            allow_remote=allow_remote,
        )
        self._camera_port = camera_port
        self.camera_enabled = bool(camera)
        self.camera = None

    @property
    def port(self) -> int:
        return self.robot_server.port

    @property
    def camera_port(self) -> int:
        return self.camera.port if self.camera is not None else 0

    def start(self) -> SimServer:
        self.robot_server.start()
        if self.camera_enabled and self.camera is None:
            from .camera import CameraServer

            port = self._camera_port if self._camera_port is not None else self.port + 1
            self.camera = CameraServer(port=port, **self._camera_args).start()
        return self

    def stop(self) -> None:
        self.robot_server.stop()
        if self.camera is not None:
            self.camera.stop()
            self.camera = None

    def restart_robot(self) -> None:
        """Stops and restarts the robot side on the same port (new session id, joints where they were)."""
        self.robot_server.stop()
        self.robot_server.start()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stats(self) -> dict:
        out = {"robot": self.robot_server.stats(), "robot_state": self.robot_server.snapshot()}
        if self.camera is not None:
            out["camera"] = dict(self.camera.stats)
        return out


def serve(args) -> int:
    """Entry point of `robot-rt sim-server` (arguments from commands.register)."""
    from .udp import read_key

    robot = load_robot(args.robot_file)
    server = SimServer(
        robot,
        host=args.host,
        port=args.port,
        camera=not args.no_camera,
        camera_port=args.camera_port,
        camera_rate_hz=args.camera_rate,
        serve_interval_s=args.serve_interval,
        rate_hz=args.rate,
        tracking_time_constant_s=args.tracking_time_constant,
        command_delay_s=args.command_delay,
        key=read_key(args.key_file),
        allow_remote=args.allow_remote,
        seed=args.seed,
    )
    done = threading.Event()

    def _on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    print(
        json.dumps(
            {
                "event": "listening",
                "host": server.host,
                "robot_port": server.port,
                "camera_port": server.camera_port,
                "robot": robot.name,
                "dof": robot.dof,
                "session_id": server.robot_server.session_id,
            }
        ),
        flush=True,
    )
    t_end = None if args.duration is None else time.monotonic() + args.duration
    try:
        while not done.is_set():
            left = None if t_end is None else t_end - time.monotonic()
            if left is not None and left <= 0:
                break
            done.wait(1.0 if left is None else min(1.0, left))
    finally:
        stats = server.stats()
        server.stop()
        robot_stats = stats["robot"]
        summary = {
            "event": "stopped",
            "states_sent": robot_stats["states_sent"],
            "commands_applied": robot_stats["commands_applied"],
            "commands_out_of_limits": robot_stats["commands_out_of_limits"],
            "rx_malformed": robot_stats["rx_malformed"],
            "rx_unexpected_source": robot_stats["rx_unexpected_source"],
            "rx_duplicate": robot_stats["rx_duplicate"],
            "rx_stale": robot_stats["rx_stale"],
            "hard_stops": robot_stats["hard_stops"],
            "camera_frames": stats.get("camera", {}).get("frames", 0),
        }
        print(json.dumps(summary), flush=True)
    sys.stdout.flush()
    return 0
