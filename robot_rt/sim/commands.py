"""`robot-rt sim-server` (registered by robot_rt.cli)."""

from __future__ import annotations

import argparse

from robot_rt.control.commands import positive

DEFAULT_PORT = 47100


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text}")
    return value


def register(subparsers) -> None:
    srv = subparsers.add_parser(
        "sim-server",
        help="simulated robot bridge + camera speaking the UDP protocol (docs/protocol.md)",
        description="Robot simulator server (joint dynamics with limits and tracking lag) and simulated camera "
        "(ball physics + tracker). Prints a JSON line with its ports, runs until SIGINT/SIGTERM or --duration. "
        "With --rally the camera's ball plays against the simulated robot instead (docs/protocol.md, 'Rally mode'): "
        "the envs' world (physics, paddle contact at the robot's measured joints, rally rules) and camera model, "
        "serves and answers from --human; --summary records rallies and ball tracks.",
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    srv.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"robot port (default {DEFAULT_PORT}; 0: any)"
    )
    srv.add_argument("--camera-port", type=port_number, default=None, help="camera port (default robot port + 1)")
    srv.add_argument("--no-camera", action="store_true", help="robot only")
    srv.add_argument(
        "--camera-rate", type=positive, default=150.0, help="camera frame rate in Hz (rally: the envs' camera model)"
    )
    srv.add_argument(
        "--serve-interval",
        type=positive,
        default=1.5,
        help="seconds between simulated serves (rally: after a rally ends)",
    )
    srv.add_argument("--rate", type=positive, default=1000.0, help="robot state rate in Hz")
    srv.add_argument(
        "--physics",
        choices=("kinematic", "mujoco"),
        default="kinematic",
        help="the robot's dynamics: kinematic (servo lag model, default) or mujoco (MuJoCo model generated from the "
        "URDF: servos with torque limits, friction, armature; rally mode: MuJoCo's paddle contact; needs the "
        "[mujoco] extra; docs/mujoco.md)",
    )
    srv.add_argument("--tracking-time-constant", type=positive, default=0.02, help="servo lag in s (kinematic)")
    srv.add_argument("--command-delay", type=float, default=0.002, help="command transport delay in s")
    srv.add_argument("--robot-file", default=None, help="robot description JSON")
    srv.add_argument("--key-file", default=None, help="long-term key shared with the controllers (needed off loopback)")
    srv.add_argument(
        "--allow-remote", action="store_true", help="accept packets from non-loopback sources (needs --key-file)"
    )
    srv.add_argument("--seed", type=int, default=0)
    srv.add_argument(
        "--state-file",
        default="default",
        help="record of how the last server on this port ended: it comes up with an unacknowledged stop (a recovery "
        "clears it) unless that run ended cleanly, as a real bridge must (docs/protocol.md, 'Robot-side stops'); "
        "default: $XDG_STATE_HOME/robot_rt/sim-server-port-PORT.json for a fixed --port, none for --port 0; "
        "'none': no record (every start is a fresh robot)",
    )
    srv.add_argument("--duration", type=positive, default=None, help="stop after this many seconds")
    srv.add_argument(
        "--rally",
        action="store_true",
        help="rally mode: the camera's ball plays against the simulated robot (envs physics, paddle contact at "
        "the robot's measured joint state, rally logic, human answers); serves wait for a controller",
    )
    srv.add_argument(
        "--human",
        default=None,
        help="rally: the human behaviour model serving and answering: default | real_player | PATH.json",
    )
    srv.add_argument("--serves", type=positive_int, default=None, help="rally: serve this many balls, then none")
    srv.add_argument(
        "--summary",
        default=None,
        help="rally: JSON record (counts, rally lengths, outcomes, true and detected ball tracks), rewritten "
        "atomically after every rally (without the tracks) and on exit (with them)",
    )
    srv.set_defaults(func=cmd_sim_server)

    egm = subparsers.add_parser(
        "sim-egm",
        help="simulated ABB controller speaking EGM for the arm + a simulated gantry server (docs/egm.md)",
        description="A simulated EGM controller (protobuf messages every 4 ms to --sensor, following its joint "
        "references) for the arm's joints, and a simulated 2-joint gantry server (the UDP protocol) on "
        "--gantry-port: the far end of `robot-rt run --robot egm://SENSOR --gantry udp://HOST:GANTRY_PORT`. Prints "
        "a JSON line, runs until SIGINT/SIGTERM or --duration.",
    )
    egm.add_argument("--sensor", default="127.0.0.1:6510", help="HOST:PORT the robot-rt run side listens on (EGM)")
    egm.add_argument(
        "--source-port",
        type=port_number,
        default=0,
        help="the port the simulated controller sends from, kept across its restarts (0: any; fix it to pin it on the "
        "run side: egm://HOST:PORT?controller=127.0.0.1:SOURCE_PORT)",
    )
    egm.add_argument("--host", default="127.0.0.1", help="address the gantry server binds (default loopback)")
    egm.add_argument("--gantry-port", type=port_number, default=DEFAULT_PORT, help="gantry server port (0: any)")
    egm.add_argument("--robot-file", default=None, help="robot description JSON")
    egm.add_argument("--duration", type=positive, default=None, help="seconds (default: until interrupted)")
    egm.set_defaults(func=cmd_sim_egm)


def cmd_sim_server(args) -> int:
    from .server import serve

    return serve(args)


def cmd_sim_egm(args) -> int:
    from .egm_controller import serve_egm

    return serve_egm(args)
