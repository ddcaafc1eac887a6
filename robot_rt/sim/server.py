"""`robot-rt sim-server`: a simulated robot bridge plus a simulated camera, speaking docs/protocol.md.

Design notes: docs/sim.md, section `robot_rt.sim.server`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from robot_rt.control.protocol import camera_link_key
from robot_rt.robot import RobotDescription, load_robot

PHYSICS_CHOICES = ("kinematic", "mujoco")


class SimServer:
    """Robot server (C++ thread) + optional camera server (Python thread).

    `geometry_digest`: the whole robot's `robot_rt.robot.geometry_digest`, stated in the handshake with this server's
    joint limits (default: that of `robot`; a server for one part of a composite robot, e.g. the gantry behind an EGM
    arm, gives the whole robot's)."""

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
        servo_damping: float = 1.0,
        command_delay_s: float = 0.002,
        command_timeout_s: float = 0.1,
        session_timeout_s: float = 0.5,
        key: bytes | str | None = None,
        allow_remote: bool = False,
        reply_on_command: bool = True,
        seed: int = 0,
        rally: bool = False,
        human="default",
        max_serves: int | None = None,
        world_config=None,
        world_backend: str = "auto",
        physics: str = "kinematic",
        geometry_digest: int | None = None,
        start_stopped: bool = False,
    ):
        from robot_rt import _control
        from robot_rt.robot import geometry_digest as robot_geometry_digest

        if physics not in PHYSICS_CHOICES:
            raise ValueError(f"physics: expected one of {PHYSICS_CHOICES}, got {physics!r}")
        self.physics_name = physics
        self.robot = robot if robot is not None else load_robot()
        own_geometry = robot_geometry_digest(self.robot)
        if physics == "mujoco" and own_geometry != robot_geometry_digest(load_robot()):
            # the MuJoCo model is generated from the shipped URDF: this server would state a geometry in the
            # handshake that its simulated robot does not have
            raise ValueError(
                f"robot: physics='mujoco' simulates the shipped platform (its URDF); the description {self.robot.name!r} "
                "has another chain, paddle mount, workspace box or paddle radius (geometry digest)"
            )
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
            session_timeout_s=session_timeout_s,
            key=key_bytes,
            allow_remote=allow_remote,
            reply_on_command=reply_on_command,
            external_dynamics=physics == "mujoco",
            servo_damping=servo_damping,
            # the handshake's joint-limits digest covers every limit the controller's safety filter enforces
            jerk_limit=self.robot.jerk_limit.tolist(),
            # and the robot's chain, paddle mount and workspace box (docs/protocol.md, "Joint-limits digest")
            geometry_digest=own_geometry if geometry_digest is None else int(geometry_digest),
            # come up with an unacknowledged stop (a bridge with no record of a clean shutdown: bridge_state_file)
            start_stopped=bool(start_stopped),
        )
        self.dynamics = None
        self.physics = None
        if physics == "mujoco":
            from .mujoco_physics import MujocoPhysics

            self.physics = MujocoPhysics(self.robot, tick_s=1.0 / rate_hz, initial_position=self.robot.home)
        self.host = host
        self._camera_args = dict(
            host=host,
            rate_hz=camera_rate_hz,
            serve_interval_s=serve_interval_s,
            seed=seed,
            # the camera holds the camera link's key only, never the robot link's (docs/protocol.md, "Keys")
            key=camera_link_key(key_bytes) or None,
            allow_remote=allow_remote,
        )
        self._camera_port = camera_port
        self.camera_enabled = bool(camera)
        self.camera = None
        self.rally = None
        if rally:
            if not self.camera_enabled:
                raise ValueError("rally: needs the camera (camera=False / --no-camera given)")
            if physics == "mujoco":
                from .mujoco_server import FrameQueue, MujocoRallySource

                self.rally = MujocoRallySource(
                    self.physics,
                    lambda: self.robot_server.servo_targets()[:2],
                    human,
                    self.robot,
                    seed=seed,
                    serve_interval_s=serve_interval_s,
                    max_serves=max_serves,
                    ready=self._controller_present,
                    config=world_config,
                    backend=world_backend,
                )
                ball_source = FrameQueue()
            else:
                from .rally import RallySource

                self.rally = RallySource(
                    self._joint_state,
                    human,
                    self.robot,
                    seed=seed,
                    serve_interval_s=serve_interval_s,
                    max_serves=max_serves,
                    ready=self._controller_present,
                    config=world_config,
                    backend=world_backend,
                )
                ball_source = self.rally
            # the camera streams the world camera's frames; its own tick is only the empty-frame heartbeat
            self._camera_args["rate_hz"] = float(self.rally.world.config.camera_hz)
            self._camera_args["ball_source"] = ball_source
        if physics == "mujoco":
            from .mujoco_server import MujocoDynamicsThread

            self.dynamics = MujocoDynamicsThread(
                self.robot_server, self.physics, self.rally, self._camera_args.get("ball_source")
            )

    def _joint_state(self):
        snap = self.robot_server.snapshot()
        return snap["position"], snap["velocity"]

    def _controller_present(self) -> bool:
        return bool(self.robot_server.snapshot()["has_controller"])

    def rally_summary(self, tracks: bool = True) -> dict | None:
        """The rally record (RallySource.summary), None outside rally mode."""
        return None if self.rally is None else self.rally.summary(tracks=tracks)

    @property
    def port(self) -> int:
        return self.robot_server.port

    @property
    def limits_digest(self) -> int:
        """The joint-limits digest this robot states in the handshake (robot_rt.robot.limits_digest of its robot, with
        its geometry digest)."""
        return int(self.robot_server.limits_digest)

    @property
    def camera_port(self) -> int:
        return self.camera.port if self.camera is not None else 0

    def start(self) -> SimServer:
        self.robot_server.start()
        if self.dynamics is not None and self.dynamics._thread is None:
            self.dynamics.start()
        if self.camera_enabled and self.camera is None:
            from .camera import CameraServer

            port = self._camera_port if self._camera_port is not None else self.port + 1
            self.camera = CameraServer(port=port, **self._camera_args).start()
        return self

    def stop(self) -> None:
        if self.dynamics is not None:
            self.dynamics.stop()
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
        if self.rally is not None:
            out["rally"] = self.rally.summary(tracks=False)
        if self.dynamics is not None:
            out["mujoco"] = self.dynamics.summary()
        return out


def default_state_file(port: int) -> Path | None:
    """Where `robot-rt sim-server` on a fixed port keeps its record of how its last process ended (none for port 0:
    each run is another robot). One file per port, whatever the address (127.0.0.1 and localhost are one robot):
    $XDG_STATE_HOME/robot_rt, else ~/.local/state/robot_rt (per user: another user's server is another robot's)."""
    if int(port) == 0:
        return None
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "robot_rt" / f"sim-server-port-{int(port)}.json"


def read_bridge_state(path: Path | None) -> tuple[bool, str]:
    """(come up stopped, why) from the state file of the last `robot-rt sim-server` process on this port. A bridge
    must not forget a stop nobody recovered across a restart (docs/protocol.md "Robot-side stops"): it comes up with
    an unacknowledged stop unless its last process recorded a clean end (no stop left unacknowledged, no live session
    commanding it). No file: a robot never run here. An unreadable file: stopped."""
    if path is None or not path.exists():
        return False, "no record of an earlier run"
    try:
        state = json.loads(path.read_text())["state"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return True, f"unreadable state file {path} ({type(err).__name__}): comes up stopped"
    if state == "clean":
        return False, "the last run ended cleanly"
    return True, f"the last run did not end cleanly ({state!r} in {path}): comes up stopped, a recovery acknowledges it"


def _write_bridge_state(path: Path | None, state: str) -> None:
    if path is None:
        return
    from robot_rt._io import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"state": state, "pid": os.getpid(), "time": time.time()})


def _record_end(path: Path | None, robot_server) -> None:
    """Records how the run ended from the robot's own state: "stopped" while a stop is unacknowledged (the server's
    stop() counts one when a live session was commanding the robot), else "clean". A failed write leaves "running":
    the next start comes up stopped, the safe side."""
    unclean = robot_server.stats()["resync_required"]
    try:
        _write_bridge_state(path, "stopped" if unclean else "clean")
    except OSError as err:
        print(f"sim-server: --state-file: cannot record the end in {path}: {err}", file=sys.stderr)


def _lock_bridge_state(path: Path | None):
    """An exclusive lock on ``path``.lock held for the process's life (the descriptor is returned and kept open):
    two servers for one robot (the same port on two addresses) would overwrite each other's record. None without a
    state file; False when another process holds it."""
    if path is None:
        return None
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    return fd


def _make_server(args, robot, rally, human, serves, start_stopped: bool = False) -> SimServer:
    from robot_rt.control.udp import read_key

    return SimServer(
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
        rally=rally,
        human=human or "default",
        max_serves=serves,
        physics=getattr(args, "physics", "kinematic"),
        start_stopped=start_stopped,
    )


def serve(args) -> int:
    """Entry point of `robot-rt sim-server` (arguments from robot_rt.sim.commands.register)."""
    from robot_rt._io import atomic_write_json

    robot = load_robot(args.robot_file)
    rally = bool(getattr(args, "rally", False))
    human, serves, summary_path = (getattr(args, k, None) for k in ("human", "serves", "summary"))
    if not rally and (human is not None or serves is not None or summary_path is not None):
        print("sim-server: --human, --serves and --summary need --rally", file=sys.stderr)
        return 2
    state_file = getattr(args, "state_file", "default")
    state_path = default_state_file(args.port) if state_file == "default" else None
    if state_file not in ("default", "none"):
        state_path = Path(state_file)
    try:
        lock = _lock_bridge_state(state_path)  # one server per robot (per port) at a time, whatever its address
    except OSError as err:
        print(f"sim-server: --state-file: cannot lock {state_path}: {err}", file=sys.stderr)
        return 2
    if lock is False:
        print(
            f"sim-server: another sim-server runs this robot (it holds {state_path}.lock): refusing to start",
            file=sys.stderr,
        )
        return 2
    start_stopped, why = read_bridge_state(state_path)
    existed = state_path is not None and state_path.exists()

    def _never_ran() -> int:
        """A start that no controller got into leaves the record as it was: clean (or none), or stopped when this
        process came up stopped (not this process's "running", which would say it never recorded its end)."""
        if state_path is not None:
            try:
                if start_stopped:
                    _write_bridge_state(state_path, "stopped")
                elif existed:
                    _write_bridge_state(state_path, "clean")
                else:
                    state_path.unlink(missing_ok=True)
            except OSError:
                pass
        return 2

    try:
        # recorded before the server listens: a kill from here on leaves "running" (the next start is stopped)
        _write_bridge_state(state_path, "running")
    except OSError as err:
        print(f"sim-server: --state-file: cannot write {state_path}: {err}", file=sys.stderr)
        return 2
    try:
        server = _make_server(args, robot, rally, human, serves, start_stopped=start_stopped)
    except ImportError as err:  # --physics mujoco without the [mujoco] extra
        print(f"sim-server: {err} (pip install 'percept-robot[mujoco]')", file=sys.stderr)
        return _never_ran()
    except (ValueError, FileNotFoundError) as err:
        print(f"sim-server: {err}", file=sys.stderr)
        return _never_ran()
    if args.key_file is None:
        print(
            "sim-server: WARNING: UNAUTHENTICATED (no --key-file): any process on this host can command the "
            "simulated robot. Allowed on loopback only.",
            file=sys.stderr,
            flush=True,
        )
    done = threading.Event()

    def _write_summary(tracks: bool) -> None:
        # During the run the file is a small progress record: the tracks (every physics substep of every ball,
        # megabytes of JSON) are written once, on exit. Dumping them after every rally held this process's GIL
        # (the rally thread) for tens of ms, and a client polling the file paid the same to parse them.
        if summary_path is not None:
            atomic_write_json(summary_path, server.rally_summary(tracks=tracks))

    def _on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        server.start()
    except (OSError, RuntimeError) as err:  # (a port is taken)
        print(f"sim-server: cannot start: {err}", file=sys.stderr)
        listened = server.robot_server.running
        server.stop()  # (the robot port may be listening already: the camera's is bound after it)
        if (
            listened and server.robot_server.stats()["handshakes"] > 0
        ):  # a controller got in: not a start that never ran
            _record_end(state_path, server.robot_server)
            return 2
        return _never_ran()
    if start_stopped:
        print(f"sim-server: {why}", file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "event": "listening",
                "host": server.host,
                "robot_port": server.port,
                "camera_port": server.camera_port,
                "robot": robot.name,
                "dof": robot.dof,
                "limits_digest": f"{server.limits_digest:#018x}",
                "session_id": server.robot_server.session_id,
                "rally": rally,
                "human": server.rally.human.name if rally else None,
                "physics": server.physics_name,
                "came_up_stopped": start_stopped,
                "state_file": None if state_path is None else str(state_path),
            }
        ),
        flush=True,
    )
    t_end = None if args.duration is None else time.monotonic() + args.duration
    written = -1
    try:
        while not done.is_set():
            left = None if t_end is None else t_end - time.monotonic()
            if left is not None and left <= 0:
                break
            if rally:  # the summary file doubles as the stats request: rewritten after every finished rally
                completed = server.rally.rallies_completed
                if completed != written:
                    _write_summary(tracks=False)
                    written = completed
            done.wait((1.0 if not rally else 0.1) if left is None else min(0.1 if rally else 1.0, left))
    finally:
        stats = server.stats()
        server.stop()
        _record_end(state_path, server.robot_server)
        if rally:
            _write_summary(tracks=True)
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
            "rx_unexpected_session": robot_stats["rx_unexpected_session"],
            "rx_auth_failed": sum(robot_stats["rx_rejected"][k] for k in ("bad_tag", "missing_tag", "unexpected_tag")),
            "hellos_refused": robot_stats["hellos_refused"],
            "hellos_limits_refused": robot_stats["hellos_limits_refused"],
            "handshakes": robot_stats["handshakes"],
            "sessions": robot_stats["sessions"],
            "hard_stops": robot_stats["hard_stops"],
            "camera_frames": stats.get("camera", {}).get("frames", 0),
        }
        if "mujoco" in stats:
            summary["mujoco"] = stats["mujoco"]
        if rally:
            r = stats["rally"]
            summary.update(
                {k: r[k] for k in ("serves", "balls", "hits", "returns_landed", "rally_lengths", "outcomes")}
            )
        print(json.dumps(summary), flush=True)
    sys.stdout.flush()
    return 0
