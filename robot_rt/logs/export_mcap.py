"""Run log -> MCAP with Foxglove and ROS 2 schemas (`robot-rt replay RUN --export mcap`, `robot-rt run --mcap`).

Channels, schemas, time mapping and validation: docs/mcap.md. Needs the `mcap` extra; imported only by the CLI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_open
from robot_rt.control.runlog import RunLog, read_runlog
from robot_rt.control.udp import LINK_EVENT_CODES

MISSING_EXTRA = "the MCAP export needs the 'mcap' extra: pip install 'percept-robot[mcap]'"

# ROS 2 message definitions (ros2msg, the concatenated form rosbag2 writes: the message, then each dependency after
# a line of 80 '='), as in the ROS 2 interface packages sensor_msgs, trajectory_msgs, std_msgs, builtin_interfaces.
_SEPARATOR = "=" * 80
_TIME_MSG = "int32 sec\nuint32 nanosec"
_HEADER_MSG = "builtin_interfaces/Time stamp\nstring frame_id"
JOINT_STATE_MSGDEF = "\n".join(
    [
        "std_msgs/Header header",
        "string[] name",
        "float64[] position",
        "float64[] velocity",
        "float64[] effort",
        _SEPARATOR,
        "MSG: std_msgs/Header",
        _HEADER_MSG,
        _SEPARATOR,
        "MSG: builtin_interfaces/Time",
        _TIME_MSG,
    ]
)
JOINT_TRAJECTORY_MSGDEF = "\n".join(
    [
        "std_msgs/Header header",
        "string[] joint_names",
        "JointTrajectoryPoint[] points",
        _SEPARATOR,
        "MSG: std_msgs/Header",
        _HEADER_MSG,
        _SEPARATOR,
        "MSG: builtin_interfaces/Time",
        _TIME_MSG,
        _SEPARATOR,
        "MSG: trajectory_msgs/JointTrajectoryPoint",
        "float64[] positions",
        "float64[] velocities",
        "float64[] accelerations",
        "float64[] effort",
        "builtin_interfaces/Duration time_from_start",
        _SEPARATOR,
        "MSG: builtin_interfaces/Duration",
        _TIME_MSG,
    ]
)

# JSON Schemas (draft 2020-12) of the project's own messages: the raw run-log records, so values round-trip exactly.
_INT = {"type": "integer"}
_NUM = {"type": "number"}
LOOP_TICK_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "robot_rt.LoopTick",
    "description": "One real-time loop tick (docs/runlog.md, tick record): CLOCK_MONOTONIC times in ns",
    "type": "object",
    "properties": {
        "tick": _INT,
        "deadline_ns": _INT,
        "wake_ns": _INT,
        "done_ns": _INT,
        "wake_latency_ns": _INT,
        "tick_duration_ns": _INT,
        "flags": _INT,
        "flag_names": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["tick", "deadline_ns", "wake_ns", "done_ns", "flags"],
}
BALL_DETECTION_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "robot_rt.BallDetection",
    "description": "One ball observation the loop received (docs/runlog.md, ball record); table frame, m",
    "type": "object",
    "properties": {
        "tick": _INT,
        "stamp_ns": _INT,
        "camera_id": _INT,
        "frame": _INT,
        "frame_id": {"type": "string"},
        "position": {
            "type": "object",
            "properties": {"x": _NUM, "y": _NUM, "z": _NUM},
            "required": ["x", "y", "z"],
        },
        "confidence": _NUM,
    },
    "required": ["tick", "stamp_ns", "camera_id", "frame", "position", "confidence"],
}
LOOP_EVENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "robot_rt.LoopEvent",
    "description": "One loop, safety or link event (docs/runlog.md, event record; codes in the run's meta)",
    "type": "object",
    "properties": {
        "stamp_ns": _INT,
        "tick": _INT,
        "code": _INT,
        "name": {"type": "string"},
        "joint": _INT,
        "value": {"oneOf": [_NUM, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]},
        "level": {"type": "string", "enum": ["INFO", "WARNING", "ERROR"]},
    },
    "required": ["stamp_ns", "tick", "code", "name", "joint", "value"],
}

_VEC3 = {"type": "object", "properties": {"x": _NUM, "y": _NUM, "z": _NUM}, "required": ["x", "y", "z"]}
BALL_PREDICTION_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "robot_rt.BallPrediction",
    "description": (
        "Ball state estimate after one detection and its predicted crossing of the hitting plane, recomputed at "
        "export from the logged detections (robot_rt.estimation.BallUKF, default configuration); table frame, m, m/s"
    ),
    "type": "object",
    "properties": {
        "detection_index": _INT,
        "stamp_ns": _INT,
        "status": {"type": "string"},
        "state_stamp_ns": _INT,
        "position": _VEC3,
        "velocity": _VEC3,
        "spin_radps": _VEC3,
        "hit_plane_x_m": _NUM,
        "crossing": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "properties": {"stamp_ns": _INT, "position": _VEC3, "velocity": _VEC3},
                    "required": ["stamp_ns", "position", "velocity"],
                },
            ]
        },
    },
    "required": ["detection_index", "stamp_ns", "status", "state_stamp_ns", "position", "velocity", "crossing"],
}

# The scripted policy's hitting plane (robot_rt.envs.heuristic): where the predicted crossing is reported.
DEFAULT_HIT_PLANE_X_M = 1.7
PREDICTION_HORIZON_S = 1.0  # the drawn path ends at the plane crossing or after this long
PREDICTION_PATH_DT_S = 0.01

TOPICS = (
    "/joint_states",
    "/joint_commands",
    "/joint_targets",
    "/loop/timing",
    "/tf",
    "/ball/detections",
    "/ball/scene",
    "/ball/predictions",
    "/ball/prediction_scene",
    "/events",
    "/log",
    "/scene/static",
)

# Events that mean the robot was stopped by an input it must not ignore; other stops and rejections are warnings.
_ERROR_EVENTS = ("estop",)
_INFO_EVENTS = (
    "loop_start",
    "loop_stop",
    "stop_complete",
    "watchdog_recovered",
    "estop_reset",
    "sensor_recovered",
    "udp_link_up",
)


def event_level(name: str, code: int) -> str:
    """INFO / WARNING / ERROR for an event name: e-stops and faults are errors, stops, rejections, misses and link
    trouble are warnings, the loop's life cycle and recoveries are information."""
    if name in _ERROR_EVENTS or "fault" in name:
        return "ERROR"
    if name in _INFO_EVENTS or "recover" in name or name.startswith("lifecycle"):
        return "INFO"
    return "WARNING"


def _require_extra():
    try:
        import mcap.writer  # noqa: F401
        import mcap_ros2._dynamic  # noqa: F401
        from foxglove_schemas_protobuf import FrameTransforms_pb2  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{MISSING_EXTRA} ({err})") from err


def time_offset_ns(meta: dict) -> int:
    """Integer ns to add to a CLOCK_MONOTONIC stamp of this run to get Unix time (from the meta record)."""
    wall = meta.get("wall_time_unix_s")
    mono = meta.get("monotonic_ns_at_start")
    if not isinstance(wall, int | float) or not isinstance(mono, int) or not np.isfinite(wall):
        raise ValueError(
            "log: the run log's meta has no wall_time_unix_s / monotonic_ns_at_start (cannot date its records)"
        )
    return int(round(float(wall) * 1e9)) - int(mono)


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] (x, y, z, w) of rotation matrices [..., 3, 3] (Shepperd's method, batched: each
    matrix uses the formula of its largest diagonal term, which keeps the square root away from zero)."""
    r = np.asarray(r, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    s01, s02, s12 = r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1]
    trace = m00 + m11 + m22
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 2 * np.sqrt(np.maximum(1.0 + trace, 0.0))
        candidates = [np.stack([d21 / s, d02 / s, d10 / s, 0.25 * s], -1)]
        s = 2 * np.sqrt(np.maximum(1.0 + m00 - m11 - m22, 0.0))
        candidates.append(np.stack([0.25 * s, s01 / s, s02 / s, d21 / s], -1))
        s = 2 * np.sqrt(np.maximum(1.0 - m00 + m11 - m22, 0.0))
        candidates.append(np.stack([s01 / s, 0.25 * s, s12 / s, d02 / s], -1))
        s = 2 * np.sqrt(np.maximum(1.0 - m00 - m11 + m22, 0.0))
        candidates.append(np.stack([s02 / s, s12 / s, 0.25 * s, d10 / s], -1))
    case = np.stack([trace, m00, m11, m22], axis=-1).argmax(axis=-1)
    q = candidates[0]
    for k in (1, 2, 3):
        q = np.where((case == k)[..., None], candidates[k], q)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def json_number(value: float) -> float | str:
    """A float for JSON: itself when finite, else 'NaN' / 'Infinity' / '-Infinity' (JSON has no such numbers)."""
    if np.isfinite(value):
        return float(value)
    return "NaN" if np.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def from_json_number(value: float | str) -> float:
    """Inverse of json_number."""
    return (
        float(value) if not isinstance(value, str) else {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}[value]
    )


def load_log_robot(log: RunLog, robot=None):
    """The robot description of a run (for the paddle poses): `robot` when given, else the one the meta names when it
    can be loaded and matches the log (name, dof, joint names); None when none matches (no /tf then)."""
    from robot_rt.robot import load_robot

    meta = log.meta
    candidates = [robot] if robot is not None else []
    if robot is None:
        source = meta.get("robot_source")
        try:
            if isinstance(source, str) and source and Path(source).is_file():
                candidates.append(load_robot(source))
            candidates.append(load_robot())
        except (OSError, ValueError):
            pass
    names = meta.get("joint_names")
    for candidate in candidates:
        if candidate.dof != log.dof:
            continue
        if names and list(candidate.joint_names) != list(names):
            continue
        return candidate
    return None


@dataclass
class McapExport:
    """What `export_mcap` wrote."""

    path: str
    counts: dict[str, int] = field(default_factory=dict)  # topic -> messages
    schemas: dict[str, str] = field(default_factory=dict)  # topic -> schema name
    notes: list[str] = field(default_factory=list)  # what is not in the file, and why

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "counts": dict(self.counts),
            "schemas": dict(self.schemas),
            "notes": list(self.notes),
        }


def _xyz(v) -> dict:
    return {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}


@dataclass
class BallPredictions:
    """The estimator's output after each logged detection that left it with a track (see `predict_balls`)."""

    detection_index: np.ndarray  # [M] index into log.balls
    status: list[str]  # [M] the UKF's verdict on that detection (accepted, initialised, gated, ...)
    state_stamp_ns: np.ndarray  # [M] CLOCK_MONOTONIC ns of the estimated state
    state: np.ndarray  # [M, 9] position, velocity, spin
    crossing_stamp_ns: np.ndarray  # [M] ns of the predicted plane crossing (-1: none)
    crossing_state: np.ndarray  # [M, 9] the ball at the crossing (NaN: none)
    path: np.ndarray  # [M, S, 3] predicted positions every PREDICTION_PATH_DT_S from the state (NaN past the end)


def predict_balls(balls: np.ndarray, hit_plane_x_m: float = DEFAULT_HIT_PLANE_X_M) -> BallPredictions:
    """Runs robot_rt.estimation.BallUKF (default configuration) over the logged detections in log order (their
    arrival order; capture stamps may be out of order, which the filter handles) and predicts, after each, the
    crossing of x = hit_plane_x_m and the flight path (robot_rt.ballistics, contacts applied) up to that crossing
    or PREDICTION_HORIZON_S. Deterministic: the same detections give the same predictions."""
    from robot_rt.ballistics import simulate_batch
    from robot_rt.estimation import BallUKF

    if not np.isfinite(hit_plane_x_m):
        raise ValueError(f"hit_plane_x_m: expected a finite plane position in metres, got {hit_plane_x_m!r}")
    ukf = BallUKF()
    base_ns = int(balls["stamp_ns"].min()) if len(balls) else 0
    rows = []
    for k in range(len(balls)):
        b = balls[k]
        position = b["position_m"]
        if not np.all(np.isfinite(position)):
            continue
        result = ukf.update((int(b["stamp_ns"]) - base_ns) * 1e-9, position)
        if not ukf.initialized:
            continue
        crossing = ukf.predict_plane_crossing(hit_plane_x_m)
        rows.append((k, result.status, ukf.time_s, ukf.state, crossing))
    m = len(rows)
    n_path = int(round(PREDICTION_HORIZON_S / PREDICTION_PATH_DT_S)) + 1
    out = BallPredictions(
        detection_index=np.array([r[0] for r in rows], dtype=np.int64),
        status=[r[1] for r in rows],
        state_stamp_ns=np.array([base_ns + int(round(r[2] * 1e9)) for r in rows], dtype=np.int64),
        state=np.array([r[3] for r in rows], dtype=np.float64).reshape(m, 9),
        crossing_stamp_ns=np.full(m, -1, dtype=np.int64),
        crossing_state=np.full((m, 9), np.nan),
        path=np.full((m, n_path, 3), np.nan),
    )
    end_s = np.full(m, PREDICTION_HORIZON_S)
    for i, (_, _, t_s, _, crossing) in enumerate(rows):
        if crossing is not None:
            out.crossing_stamp_ns[i] = base_ns + int(round(crossing.t_s * 1e9))
            out.crossing_state[i] = np.concatenate([crossing.position_m, crossing.velocity_mps, crossing.spin_radps])
            end_s[i] = min(end_s[i], crossing.t_s - t_s)
    if m:
        flight = simulate_batch(out.state, PREDICTION_HORIZON_S, PREDICTION_PATH_DT_S, record_every=1)
        samples = np.asarray(flight.samples)[:, :n_path, :3]
        t_grid = np.asarray(flight.samples_t_s)[:n_path]
        keep = (t_grid[None, :] <= end_s[:, None] + 1e-12) & (samples[..., 2] > 0.0)
        keep = np.cumprod(keep, axis=1).astype(bool)  # up to the first sample past the end (or below the floor)
        out.path[: samples.shape[0], : samples.shape[1]] = np.where(keep[..., None], samples, np.nan)
    return out


def _stamp(t_ns: int) -> dict:
    return {"sec": int(t_ns // 1_000_000_000), "nanosec": int(t_ns % 1_000_000_000)}


def _tick_flag_masks(meta: dict) -> list[tuple[int, str]]:
    """(mask, name) of the tick flags the meta names (its `tick_flags` maps each name to its bit mask)."""
    flags = meta.get("tick_flags") or {}
    return sorted((int(mask), str(name)) for name, mask in flags.items() if isinstance(mask, int) and mask > 0)


class _Writer:
    """One mcap.writer.Writer with the three encodings (CDR, protobuf, JSON) registered by name."""

    def __init__(self, stream, compression: str):
        from mcap.writer import CompressionType, Writer

        kinds = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
        if compression not in kinds:
            raise ValueError(f"compression: expected one of {sorted(kinds)}, got {compression!r}")
        self.writer = Writer(stream, compression=kinds[compression])
        self.writer.start(profile="", library="robot_rt.logs.export_mcap")
        self.channels: dict[str, tuple[int, object]] = {}  # topic -> (channel id, encode function)
        self.counts: dict[str, int] = {}
        self.schemas: dict[str, str] = {}

    def add_ros2(self, topic: str, datatype: str, msgdef: str) -> None:
        from mcap_ros2._dynamic import serialize_dynamic

        schema_id = self.writer.register_schema(datatype, "ros2msg", msgdef.encode())
        encode = serialize_dynamic(datatype, msgdef)[datatype]
        self._channel(topic, datatype, schema_id, "cdr", encode)

    def add_protobuf(self, topic: str, message_class) -> None:
        from google.protobuf.descriptor_pb2 import FileDescriptorSet

        files = FileDescriptorSet()
        seen: set[str] = set()

        def add(file_descriptor) -> None:  # dependencies first, each once
            for dep in file_descriptor.dependencies:
                if dep.name not in seen:
                    seen.add(dep.name)
                    add(dep)
            file_descriptor.CopyToProto(files.file.add())

        add(message_class.DESCRIPTOR.file)
        name = message_class.DESCRIPTOR.full_name
        schema_id = self.writer.register_schema(name, "protobuf", files.SerializeToString())
        self._channel(topic, name, schema_id, "protobuf", lambda message: message.SerializeToString())

    def add_json(self, topic: str, schema: dict) -> None:
        name = schema["title"]
        schema_id = self.writer.register_schema(name, "jsonschema", json.dumps(schema).encode())
        self._channel(topic, name, schema_id, "json", lambda message: json.dumps(message, allow_nan=False).encode())

    def _channel(self, topic: str, name: str, schema_id: int, encoding: str, encode) -> None:
        channel_id = self.writer.register_channel(topic=topic, message_encoding=encoding, schema_id=schema_id)
        self.channels[topic] = (channel_id, encode)
        self.counts[topic] = 0
        self.schemas[topic] = name

    def write(self, topic: str, message, log_time_ns: int, sequence: int) -> None:
        channel_id, encode = self.channels[topic]
        t = int(log_time_ns)
        self.writer.add_message(
            channel_id=channel_id, log_time=t, publish_time=t, sequence=int(sequence) & 0xFFFFFFFF, data=encode(message)
        )
        self.counts[topic] += 1

    def finish(self) -> None:
        self.writer.finish()


def _static_scene(fg, robot, t_ns: int):
    """Table, net, workspace box and the two paddle discs (frame-locked to the paddle frames)."""
    update = fg.SceneUpdate()

    def entity(entity_id: str, frame_id: str, frame_locked: bool = False):
        e = update.entities.add()
        e.timestamp.FromNanoseconds(t_ns)
        e.frame_id = frame_id
        e.id = entity_id
        e.frame_locked = frame_locked
        return e

    def cube(e, center, size, rgba):
        c = e.cubes.add()
        c.pose.position.x, c.pose.position.y, c.pose.position.z = (float(v) for v in center)
        c.pose.orientation.w = 1.0
        c.size.x, c.size.y, c.size.z = (float(v) for v in size)
        c.color.r, c.color.g, c.color.b, c.color.a = rgba

    # table frame of docs/architecture.md: surface z = 0.76 m, 2.74 x 1.525 m; net 0.1525 m high at x = 0
    cube(entity("table", "table"), (0.0, 0.0, 0.745), (2.74, 1.525, 0.03), (0.1, 0.35, 0.2, 1.0))
    cube(entity("net", "table"), (0.0, 0.0, 0.76 + 0.1525 / 2), (0.01, 1.83, 0.1525), (0.9, 0.9, 0.9, 0.6))
    if robot is not None:
        lo, hi = np.asarray(robot.workspace_min_m), np.asarray(robot.workspace_max_m)
        box = entity("workspace", "table")
        corners = [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        line = box.lines.add()
        line.type = fg.LINE_LIST
        line.thickness = 0.01
        line.scale_invariant = False
        line.pose.orientation.w = 1.0
        line.color.r, line.color.g, line.color.b, line.color.a = 1.0, 0.8, 0.0, 0.8
        for a in range(8):
            for b in range(a + 1, 8):
                if sum(corners[a][k] != corners[b][k] for k in range(3)) == 1:  # the 12 edges
                    for corner in (corners[a], corners[b]):
                        p = line.points.add()
                        p.x, p.y, p.z = (float(v) for v in corner)
        radius = float(robot.paddle_radius_m)
        for frame, rgba in (("paddle", (0.8, 0.1, 0.1, 1.0)), ("paddle_command", (0.2, 0.4, 1.0, 0.35))):
            disc = entity(frame, frame, frame_locked=True).cylinders.add()
            disc.pose.orientation.w = 1.0
            disc.size.x, disc.size.y, disc.size.z = 2 * radius, 2 * radius, 0.01  # flat faces normal to z
            disc.bottom_scale = disc.top_scale = 1.0
            disc.color.r, disc.color.g, disc.color.b, disc.color.a = rgba
    return update


def _write_predictions(w, fg, pred: BallPredictions, balls, offset: int, hit_plane_x_m: float, radius_m: float):
    """/ball/predictions (JSON, one per prediction) and /ball/prediction_scene (the predicted path as a line strip
    and the crossing as a sphere), stamped with the capture time of the detection each one followed."""
    for i in range(len(pred.detection_index)):
        k = int(pred.detection_index[i])
        stamp_ns = int(balls[k]["stamp_ns"]) + offset
        x = pred.state[i]
        crossing = None
        if pred.crossing_stamp_ns[i] >= 0:
            c = pred.crossing_state[i]
            crossing = {"stamp_ns": int(pred.crossing_stamp_ns[i]), "position": _xyz(c[:3]), "velocity": _xyz(c[3:6])}
        message = {
            "detection_index": k,
            "stamp_ns": int(balls[k]["stamp_ns"]),
            "status": pred.status[i],
            "state_stamp_ns": int(pred.state_stamp_ns[i]),
            "position": _xyz(x[:3]),
            "velocity": _xyz(x[3:6]),
            "spin_radps": _xyz(x[6:9]),
            "hit_plane_x_m": float(hit_plane_x_m),
            "crossing": crossing,
        }
        w.write("/ball/predictions", message, stamp_ns, i)
        scene = fg.SceneUpdate()
        entity = scene.entities.add()
        entity.timestamp.FromNanoseconds(stamp_ns)
        entity.frame_id = "table"
        entity.id = "ball_prediction"
        entity.lifetime.FromNanoseconds(100_000_000)
        path = pred.path[i][np.all(np.isfinite(pred.path[i]), axis=1)]
        if len(path) >= 2:
            line = entity.lines.add()
            line.type = fg.LINE_STRIP
            line.thickness = 0.005
            line.scale_invariant = False
            line.pose.orientation.w = 1.0
            line.color.r, line.color.g, line.color.b, line.color.a = 0.2, 0.9, 0.9, 0.9
            for point in path:
                p = line.points.add()
                p.x, p.y, p.z = (float(v) for v in point)
        if crossing is not None:
            sphere = entity.spheres.add()
            sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z = (
                float(v) for v in pred.crossing_state[i, :3]
            )
            sphere.pose.orientation.w = 1.0
            sphere.size.x = sphere.size.y = sphere.size.z = 2 * radius_m
            sphere.color.r, sphere.color.g, sphere.color.b, sphere.color.a = 0.2, 0.9, 0.9, 0.6
        w.write("/ball/prediction_scene", scene, stamp_ns, i)


class _Foxglove:
    """The Foxglove message classes used here (foxglove-schemas-protobuf)."""

    def __init__(self):
        from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
        from foxglove_schemas_protobuf.LinePrimitive_pb2 import LinePrimitive
        from foxglove_schemas_protobuf.Log_pb2 import Log
        from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate

        self.FrameTransforms = FrameTransforms
        self.SceneUpdate = SceneUpdate
        self.Log = Log
        self.LINE_LIST = LinePrimitive.LINE_LIST
        self.LINE_STRIP = LinePrimitive.LINE_STRIP


def export_mcap(
    log: RunLog | str | os.PathLike,
    path: str | os.PathLike,
    *,
    robot=None,
    compression: str = "zstd",
    ball_radius_m: float = 0.02,
    hit_plane_x_m: float = DEFAULT_HIT_PLANE_X_M,
) -> McapExport:
    """Writes the run log `log` (a RunLog or a path) to the MCAP file `path` (atomically: temp file + rename).

    robot: the RobotDescription for the paddle poses (default: the one the log's meta names, when it matches).
    hit_plane_x_m: the plane whose predicted crossing /ball/predictions reports (see `predict_balls`).
    Returns what was written (`McapExport`: message count and schema per topic, notes on what is missing).
    Raises ImportError naming the extra when the MCAP packages are not installed, ValueError when the log has no
    meta record to date its records with.
    """
    _require_extra()
    if not isinstance(log, RunLog):
        log = read_runlog(log)
    offset = time_offset_ns(log.meta)
    meta = log.meta
    ticks, balls, events = log.ticks, log.balls, log.events
    joint_names = list(meta.get("joint_names") or [f"joint{i}" for i in range(log.dof)])
    robot = load_log_robot(log, robot)
    fg = _Foxglove()
    result = McapExport(path=str(path))
    predictions = predict_balls(balls, hit_plane_x_m)
    result.notes.append(
        "ball predictions are recomputed from the logged detections (robot_rt.estimation.BallUKF, default "
        f"configuration, hitting plane x = {hit_plane_x_m} m): the run log records detections, not the estimates "
        "a policy made during the run"
    )
    if len(balls) and not len(predictions.detection_index):
        result.notes.append("no ball predictions: the estimator found no ballistic track in the detections")
    if robot is None:
        result.notes.append("no /tf: no robot description matching the log's joints (pass robot=)")

    names = {int(v): k for k, v in log.event_names.items()}
    names.update({v: k for k, v in LINK_EVENT_CODES.items()})
    flag_masks = _tick_flag_masks(meta)
    start_ns = (int(ticks["wake_ns"][0]) if len(ticks) else int(meta.get("monotonic_ns_at_start", 0))) + offset

    with atomic_open(path) as stream:
        w = _Writer(stream, compression)
        w.add_ros2("/joint_states", "sensor_msgs/msg/JointState", JOINT_STATE_MSGDEF)
        w.add_ros2("/joint_commands", "trajectory_msgs/msg/JointTrajectory", JOINT_TRAJECTORY_MSGDEF)
        w.add_ros2("/joint_targets", "sensor_msgs/msg/JointState", JOINT_STATE_MSGDEF)
        w.add_json("/loop/timing", LOOP_TICK_SCHEMA)
        if robot is not None:
            w.add_protobuf("/tf", fg.FrameTransforms)
        w.add_json("/ball/detections", BALL_DETECTION_SCHEMA)
        w.add_protobuf("/ball/scene", fg.SceneUpdate)
        w.add_json("/ball/predictions", BALL_PREDICTION_SCHEMA)
        w.add_protobuf("/ball/prediction_scene", fg.SceneUpdate)
        w.add_json("/events", LOOP_EVENT_SCHEMA)
        w.add_protobuf("/log", fg.Log)
        w.add_protobuf("/scene/static", fg.SceneUpdate)
        w.writer.add_metadata(
            "robot_rt.run_meta",
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()},
        )
        w.write("/scene/static", _static_scene(fg, robot, start_ns), start_ns, 0)

        if robot is not None and len(ticks):
            from robot_rt.robot.kinematics import forward_kinematics

            poses = {
                "paddle": forward_kinematics(robot, ticks["measured_position"]),
                "paddle_command": forward_kinematics(robot, ticks["command_position"]),
            }
            quats = {k: rotation_to_quaternion(v[:, :3, :3]) for k, v in poses.items()}
        for i in range(len(ticks)):
            t = ticks[i]
            tick = int(t["tick"])
            wake = int(t["wake_ns"])
            stamp_ns = wake + offset
            header = {"stamp": _stamp(stamp_ns), "frame_id": ""}
            w.write(
                "/joint_states",
                {
                    "header": header,
                    "name": joint_names,
                    "position": t["measured_position"].tolist(),
                    "velocity": t["measured_velocity"].tolist(),
                    "effort": [],
                },
                stamp_ns,
                tick,
            )
            w.write(
                "/joint_commands",
                {
                    "header": header,
                    "joint_names": joint_names,
                    "points": [
                        {
                            "positions": t["command_position"].tolist(),
                            "velocities": t["command_velocity"].tolist(),
                            "accelerations": t["command_acceleration"].tolist(),
                            "effort": [],
                            "time_from_start": {"sec": 0, "nanosec": 0},
                        }
                    ],
                },
                stamp_ns,
                tick,
            )
            w.write(
                "/joint_targets",
                {
                    "header": header,
                    "name": joint_names,
                    "position": t["target_position"].tolist(),
                    "velocity": [],
                    "effort": [],
                },
                stamp_ns,
                tick,
            )
            flags = int(t["flags"])
            w.write(
                "/loop/timing",
                {
                    "tick": tick,
                    "deadline_ns": int(t["deadline_ns"]),
                    "wake_ns": wake,
                    "done_ns": int(t["done_ns"]),
                    "wake_latency_ns": wake - int(t["deadline_ns"]),
                    "tick_duration_ns": int(t["done_ns"]) - wake,
                    "flags": flags,
                    "flag_names": [name for mask, name in flag_masks if flags & mask],
                },
                stamp_ns,
                tick,
            )
            if robot is not None:
                message = fg.FrameTransforms()
                for child, pose in poses.items():
                    tf = message.transforms.add()
                    tf.timestamp.FromNanoseconds(stamp_ns)
                    tf.parent_frame_id = "table"
                    tf.child_frame_id = child
                    tf.translation.x, tf.translation.y, tf.translation.z = pose[i, :3, 3].tolist()
                    q = quats[child][i]
                    tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w = q.tolist()
                w.write("/tf", message, stamp_ns, tick)

        for k in range(len(balls)):
            b = balls[k]
            stamp_ns = int(b["stamp_ns"]) + offset
            x, y, z = b["position_m"].tolist()
            w.write(
                "/ball/detections",
                {
                    "tick": int(b["tick"]),
                    "stamp_ns": int(b["stamp_ns"]),
                    "camera_id": int(b["camera_id"]),
                    "frame": int(b["frame"]),
                    "frame_id": "table",
                    "position": {"x": x, "y": y, "z": z},
                    "confidence": float(b["confidence"]),
                },
                stamp_ns,
                k,
            )
            scene = fg.SceneUpdate()
            entity = scene.entities.add()
            entity.timestamp.FromNanoseconds(stamp_ns)
            entity.frame_id = "table"
            entity.id = "ball"
            entity.lifetime.FromNanoseconds(100_000_000)  # a detection shows for 0.1 s unless replaced
            sphere = entity.spheres.add()
            sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z = x, y, z
            sphere.pose.orientation.w = 1.0
            sphere.size.x = sphere.size.y = sphere.size.z = 2 * ball_radius_m
            sphere.color.r, sphere.color.g, sphere.color.b, sphere.color.a = 1.0, 0.55, 0.0, 1.0
            w.write("/ball/scene", scene, stamp_ns, k)

        _write_predictions(w, fg, predictions, balls, offset, hit_plane_x_m, ball_radius_m)

        levels = {"INFO": fg.Log.INFO, "WARNING": fg.Log.WARNING, "ERROR": fg.Log.ERROR}
        for k in range(len(events)):
            e = events[k]
            code = int(e["code"])
            name = names.get(code, f"code{code}")
            level = event_level(name, code)
            stamp_ns = int(e["stamp_ns"]) + offset
            value = float(e["value"])
            joint = int(e["joint"])
            w.write(
                "/events",
                {
                    "stamp_ns": int(e["stamp_ns"]),
                    "tick": int(e["tick"]),
                    "code": code,
                    "name": name,
                    "joint": joint,
                    "value": json_number(value),
                    "level": level,
                },
                stamp_ns,
                k,
            )
            entry = fg.Log()
            entry.timestamp.FromNanoseconds(stamp_ns)
            entry.level = levels[level]
            entry.message = (
                f"{name} (tick {int(e['tick'])}" + (f", joint {joint}" if joint >= 0 else "") + f"): {value!r}"
            )
            entry.name = "robot_rt.control"
            entry.file = Path(log.path).name
            w.write("/log", entry, stamp_ns, k)
        w.finish()
    result.counts = dict(w.counts)
    result.schemas = dict(w.schemas)
    return result
