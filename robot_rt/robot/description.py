"""Robot description: joint limits and the kinematic chain, loaded from a JSON data file.

The shipped platform's JSON is generated from its URDF (robot_rt/robot/data/gantry_arm_8dof.urdf, see
robot_rt.robot.urdf and docs/robot.md). Another robot is a new file, not new code. The format is documented in docs/architecture.md and checked
on load: a malformed file raises a ValueError that names the file and the offending field.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from robot_rt._io import read_json_file

DEFAULT_ROBOT_FILE = "gantry_arm_8dof.json"
_JOINT_TYPES = ("prismatic", "revolute")


@dataclass(frozen=True)
class JointSpec:
    name: str
    type: str  # 'prismatic' (m) or 'revolute' (rad)
    axis: tuple[float, float, float]  # unit vector in the joint's frame
    origin_xyz_m: tuple[float, float, float]  # fixed offset from the parent frame
    origin_rpy_rad: tuple[float, float, float]  # fixed rotation from the parent frame (roll, pitch, yaw)
    position_min: float
    position_max: float
    velocity_limit: float
    acceleration_limit: float
    jerk_limit: float
    effort_limit: float = float("inf")  # N or N m (URDF <limit effort>); inf when the description has none


@dataclass(frozen=True)
class RobotDescription:
    name: str
    joints: tuple[JointSpec, ...]
    paddle_origin_xyz_m: tuple[float, float, float]
    paddle_origin_rpy_rad: tuple[float, float, float]
    paddle_radius_m: float
    workspace_min_m: np.ndarray  # paddle workspace box in the table frame, [3]
    workspace_max_m: np.ndarray
    home: np.ndarray  # [dof]
    source: str = ""

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    def _column(self, field: str) -> np.ndarray:
        return np.array([getattr(j, field) for j in self.joints], dtype=np.float64)

    @property
    def position_min(self) -> np.ndarray:
        return self._column("position_min")

    @property
    def position_max(self) -> np.ndarray:
        return self._column("position_max")

    @property
    def velocity_limit(self) -> np.ndarray:
        return self._column("velocity_limit")

    @property
    def acceleration_limit(self) -> np.ndarray:
        return self._column("acceleration_limit")

    @property
    def jerk_limit(self) -> np.ndarray:
        return self._column("jerk_limit")

    @property
    def effort_limit(self) -> np.ndarray:
        return self._column("effort_limit")

    @property
    def is_revolute(self) -> np.ndarray:
        return np.array([j.type == "revolute" for j in self.joints])

    def chain_arrays(self) -> dict[str, np.ndarray]:
        """Flat float64 arrays describing the chain, the layout the C++ kinematics header takes."""
        return {
            "joint_type": np.array([1 if j.type == "revolute" else 0 for j in self.joints], dtype=np.int32),
            "axis": np.array([j.axis for j in self.joints], dtype=np.float64),
            "origin_xyz_m": np.array([j.origin_xyz_m for j in self.joints], dtype=np.float64),
            "origin_rpy_rad": np.array([j.origin_rpy_rad for j in self.joints], dtype=np.float64),
            "paddle_xyz_m": np.array(self.paddle_origin_xyz_m, dtype=np.float64),
            "paddle_rpy_rad": np.array(self.paddle_origin_rpy_rad, dtype=np.float64),
        }


MAX_STOP_TIME_S = 10.0  # the longest controlled stop from full speed a description may imply


LIMITS_DIGEST_LABEL = b"RRTP joint limits"  # csrc/robot_rt/control/protocol.hpp kLimitsDigestLabel
_MAX_DIGEST_JOINTS = 16


GEOMETRY_DIGEST_LABEL = b"RRTP robot geometry"


def geometry_digest(robot: RobotDescription) -> int:
    """The digest of what, besides the joint limits, decides where the controller's safety filter lets the paddle go
    (docs/protocol.md, "Joint-limits digest"): the first 8 bytes, read little-endian, of SHA-256(b"RRTP robot
    geometry" || u16 dof || per joint u8 type (1 revolute, 0 prismatic), f64 axis[3], origin_xyz[3], origin_rpy[3] ||
    f64 paddle_xyz[3], paddle_rpy[3] || f64 workspace_min[3], workspace_max[3] || f64 paddle_radius), all
    little-endian; 1 where that is 0 (the blade's radius: the loop keeps the whole blade in the box).
    It is folded into the handshake's limits digest (`limits_digest`), so a robot bridge and a controller whose
    descriptions put the paddle or its box elsewhere (another mount, a box reaching into the table) open no session.
    ValueError for a non-finite value."""
    dof = robot.dof
    if not 1 <= dof <= _MAX_DIGEST_JOINTS:
        raise ValueError(f"robot: expected 1..{_MAX_DIGEST_JOINTS} joints, got {dof}")
    chain = robot.chain_arrays()
    per_joint = np.concatenate([chain["axis"], chain["origin_xyz_m"], chain["origin_rpy_rad"]], axis=1)  # [dof, 9]
    mount = np.concatenate(
        [
            chain["paddle_xyz_m"],
            chain["paddle_rpy_rad"],
            np.asarray(robot.workspace_min_m, dtype=np.float64).reshape(-1),
            np.asarray(robot.workspace_max_m, dtype=np.float64).reshape(-1),
            np.asarray([robot.paddle_radius_m], dtype=np.float64),
        ]
    )
    if mount.shape != (13,) or not (np.all(np.isfinite(per_joint)) and np.all(np.isfinite(mount))):
        raise ValueError(
            "robot: expected a finite chain, paddle mount, 3-D workspace box and paddle radius for its geometry digest"
        )
    data = GEOMETRY_DIGEST_LABEL + struct.pack("<H", dof)
    for kind, row in zip(chain["joint_type"], per_joint + 0.0):  # + 0.0: -0.0 is 0.0
        data += struct.pack("<B", int(kind)) + row.astype("<f8").tobytes()
    data += (mount + 0.0).astype("<f8").tobytes()
    digest = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    return digest or 1


def joint_limits_digest(
    position_min, position_max, velocity_limit, acceleration_limit, jerk_limit, geometry: int = 0
) -> int:
    """The joint-limits digest of the UDP handshake (docs/protocol.md, "Joint-limits digest"; the same value as the
    C++ `protocol::limits_digest`): the first 8 bytes, read little-endian, of SHA-256(b"RRTP joint limits" || u16 dof ||
    per joint f64 position_min, position_max, velocity, acceleration, jerk [|| u64 geometry]), all little-endian; 1
    where that is 0 (0 means "no limits stated"). `geometry` (`geometry_digest` of the whole robot; 0: not stated,
    nothing appended). The exact bits count: a limit one ulp off gives another digest; -0.0 counts as 0.0, and
    a non-finite limit is an error (the C++ function returns 0 for it: no limits, refused by both ends)."""
    columns = [
        np.asarray(c, dtype=np.float64).reshape(-1)
        for c in (position_min, position_max, velocity_limit, acceleration_limit, jerk_limit)
    ]
    dof = len(columns[0])
    if not 1 <= dof <= _MAX_DIGEST_JOINTS or any(len(c) != dof for c in columns):
        raise ValueError(
            f"limits: expected 1..{_MAX_DIGEST_JOINTS} joints and one value per joint in every limit, got lengths "
            f"{[len(c) for c in columns]}"
        )
    per_joint = np.stack(columns, axis=1)  # [dof, 5]: min, max, velocity, acceleration, jerk of each joint
    if not np.all(np.isfinite(per_joint)):
        raise ValueError(f"limits: expected finite values, got {per_joint.tolist()}")
    per_joint = per_joint + 0.0  # -0.0 and 0.0 are the same limit (the C++ digest does the same)
    if isinstance(geometry, bool) or not isinstance(geometry, (int, np.integer)) or not 0 <= geometry < 2**64:
        raise ValueError(f"geometry: expected a u64 geometry digest (0: not stated), got {geometry!r}")
    data = LIMITS_DIGEST_LABEL + struct.pack("<H", dof) + per_joint.astype("<f8").tobytes()
    if geometry:
        data += struct.pack("<Q", int(geometry))
    digest = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    return digest or 1


def limits_digest(robot: RobotDescription, joints: slice = slice(None), geometry: int | None = None) -> int:
    """`joint_limits_digest` of a robot description's limits, of all joints or of the block `joints` (the part of a
    composite robot one link drives), with the whole robot's `geometry_digest` folded in (`geometry`: that digest
    when `robot` is only a part, e.g. a gantry server's own description; default: `geometry_digest(robot)`)."""
    return joint_limits_digest(
        robot.position_min[joints],
        robot.position_max[joints],
        robot.velocity_limit[joints],
        robot.acceleration_limit[joints],
        robot.jerk_limit[joints],
        geometry=geometry_digest(robot) if geometry is None else geometry,
    )


def _vec3(value, where: str) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: expected 3 finite numbers, got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _number(entry: dict, key: str, where: str, positive: bool = False) -> float:
    if key not in entry:
        raise ValueError(f"{where}: missing field '{key}'")
    if isinstance(entry[key], bool) or not isinstance(entry[key], (int, float)):
        raise ValueError(f"{where}.{key}: expected a number, got {entry[key]!r}")
    value = float(entry[key])
    if not np.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{where}.{key}: expected a finite{' positive' if positive else ''} number, got {value}")
    return value


def parse_robot(data: dict, source: str = "<dict>") -> RobotDescription:
    """Validates and converts the JSON structure of a robot description."""
    if data.get("format_version") != 1:
        raise ValueError(f"{source}: format_version must be 1, got {data.get('format_version')!r}")
    joints = []
    for i, entry in enumerate(data.get("joints") or []):
        where = f"{source}: joints[{i}]"
        if entry.get("type") not in _JOINT_TYPES:
            raise ValueError(f"{where}.type: expected one of {_JOINT_TYPES}, got {entry.get('type')!r}")
        axis = np.asarray(_vec3(entry.get("axis"), f"{where}.axis"))
        if abs(np.linalg.norm(axis) - 1.0) > 1e-6:
            raise ValueError(f"{where}.axis: expected a unit vector, got {axis.tolist()}")
        lo, hi = _number(entry, "position_min", where), _number(entry, "position_max", where)
        if not lo < hi:
            raise ValueError(f"{where}: position_min ({lo}) must be below position_max ({hi})")
        joints.append(
            JointSpec(
                name=str(entry.get("name", f"joint{i}")),
                type=entry["type"],
                axis=tuple(axis.tolist()),
                origin_xyz_m=_vec3(entry.get("origin_xyz_m", [0, 0, 0]), f"{where}.origin_xyz_m"),
                origin_rpy_rad=_vec3(entry.get("origin_rpy_rad", [0, 0, 0]), f"{where}.origin_rpy_rad"),
                position_min=lo,
                position_max=hi,
                velocity_limit=_number(entry, "velocity_limit", where, positive=True),
                acceleration_limit=_number(entry, "acceleration_limit", where, positive=True),
                jerk_limit=_number(entry, "jerk_limit", where, positive=True),
                effort_limit=_number(entry, "effort_limit", where, positive=True)
                if "effort_limit" in entry
                else float("inf"),
            )
        )
    if not joints:
        raise ValueError(f"{source}: 'joints' must be a non-empty list")
    for i, j in enumerate(joints):
        # a controlled stop from full speed takes about V/A + A/J: limits that make it longer than this are not a
        # robot's (a typo such as a jerk limit in the wrong unit), and the stop bounds would be meaningless
        stop_s = j.velocity_limit / j.acceleration_limit + j.acceleration_limit / j.jerk_limit
        if not stop_s <= MAX_STOP_TIME_S:
            raise ValueError(
                f"{source}: joints[{i}] ({j.name}): velocity_limit / acceleration_limit + acceleration_limit / "
                f"jerk_limit = {stop_s:.3g} s, expected at most {MAX_STOP_TIME_S:g} s (check the units)"
            )
    paddle = data.get("paddle") or {}
    box = data.get("paddle_workspace_box_m") or {}
    box_min = np.asarray(_vec3(box.get("min"), f"{source}: paddle_workspace_box_m.min"))
    box_max = np.asarray(_vec3(box.get("max"), f"{source}: paddle_workspace_box_m.max"))
    if not np.all(box_min < box_max):
        raise ValueError(f"{source}: paddle_workspace_box_m.min must be below max in every axis")
    home = np.asarray(data.get("home_position", [0.0] * len(joints)), dtype=np.float64)
    robot = RobotDescription(
        name=str(data.get("name", "robot")),
        joints=tuple(joints),
        paddle_origin_xyz_m=_vec3(paddle.get("origin_xyz_m", [0, 0, 0]), f"{source}: paddle.origin_xyz_m"),
        paddle_origin_rpy_rad=_vec3(paddle.get("origin_rpy_rad", [0, 0, 0]), f"{source}: paddle.origin_rpy_rad"),
        paddle_radius_m=_number(paddle, "radius_m", f"{source}: paddle", positive=True),
        workspace_min_m=box_min,
        workspace_max_m=box_max,
        home=home,
        source=source,
    )
    if (
        home.shape != (robot.dof,)
        or not np.all(np.isfinite(home))
        or np.any(home < robot.position_min)
        or np.any(home > robot.position_max)
    ):
        raise ValueError(f"{source}: home_position must hold {robot.dof} finite values inside the joint limits")
    return robot


def load_robot(path: str | Path | None = None) -> RobotDescription:
    """Loads a robot description; `None` gives the platform shipped with the package."""
    if path is None:
        text = resources.files("robot_rt.robot").joinpath("data", DEFAULT_ROBOT_FILE).read_text()
        return parse_robot(json.loads(text), source=DEFAULT_ROBOT_FILE)
    data = read_json_file(path, "robot description")
    return parse_robot(data, source=str(path))
