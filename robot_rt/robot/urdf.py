"""The robot in URDF: robot_rt/robot/data/gantry_arm_8dof.urdf is the source, the JSON description is generated.

The URDF (with a small robot_rt extension, namespace `urn:robot_rt:urdf:1`, that URDF tools ignore) holds the
kinematic chain, link inertials and geometry, and the joint limits (position, velocity, effort; acceleration
and jerk in `<rrt:motion_limits>`), the paddle link and its workspace box (`<rrt:cell>`). The real-time loop
and the environments read the flat JSON description (`robot_rt.robot.load_robot`, no URDF parser on the
real-time path); this module generates it:

    python -m robot_rt.robot.urdf                       # prints the JSON generated from the shipped URDF
    python -m robot_rt.robot.urdf --write               # rewrites robot_rt/robot/data/gantry_arm_8dof.json
    python -m robot_rt.robot.urdf --urdf my.urdf --write my.json

and tests/test_robot_urdf.py checks that the committed JSON equals the generated one. Fixed joints between two
moving joints are folded into the next joint's origin; the fixed joints after the last moving joint, up to the
paddle link, become the paddle transform. The URDF is parsed with yourdfpy (`pip install yourdfpy`, the
`[urdf]` extra; imported only here) for the structure, and the joint origins are read as written (xyz, rpy) so
that the generated numbers are the URDF's, not a round trip through a matrix.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import numpy as np

from .description import DEFAULT_ROBOT_FILE, RobotDescription, parse_robot

DEFAULT_URDF = "gantry_arm_8dof.urdf"
RRT_NS = "urn:robot_rt:urdf:1"
_NS = {"rrt": RRT_NS}
_NUMBER_LIST = re.compile(r"\[\s*([-+0-9.eE,\s]+?)\s*\]")


def urdf_path(path: str | Path | None = None) -> Path:
    """The URDF file: `None` or the default name gives the one shipped with the package."""
    if path is None or str(path) == DEFAULT_URDF:
        return Path(str(resources.files("robot_rt.robot").joinpath("data", DEFAULT_URDF)))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: URDF file not found: {path}")
    return path


def load_urdf(path: str | Path | None = None):
    """The URDF parsed by yourdfpy (no meshes: the shipped robot uses primitive shapes)."""
    try:
        import yourdfpy
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("robot_rt.robot.urdf needs yourdfpy: pip install 'percept-robot[urdf]'") from err
    return yourdfpy.URDF.load(str(urdf_path(path)), load_meshes=False, build_collision_scene_graph=False)


def _floats(text: str | None, count: int, where: str) -> list[float]:
    values = [float(v) for v in (text or "").split()]
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: expected {count} finite numbers, got {text!r}")
    return values


def _xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"path: {path} is not valid XML ({err})") from err


def motion_limits(path: str | Path | None = None) -> dict[str, tuple[float, float]]:
    """{joint name: (acceleration_limit, jerk_limit)} from the `<rrt:motion_limits>` of each moving joint."""
    path = urdf_path(path)
    out = {}
    for joint in _xml(path).findall("joint"):
        tag = joint.find("rrt:motion_limits", _NS)
        if tag is not None:
            where = f"{path}: joint {joint.get('name')!r} rrt:motion_limits"
            out[joint.get("name")] = (
                _floats(tag.get("acceleration"), 1, f"{where}.acceleration")[0],
                _floats(tag.get("jerk"), 1, f"{where}.jerk")[0],
            )
    return out


def drive_armature(path: str | Path | None = None) -> dict[str, float]:
    """{joint name: armature} from `<rrt:drive armature=...>` (reflected drive inertia, kg m^2 or kg; 0 if absent)."""
    path = urdf_path(path)
    out = {}
    for joint in _xml(path).findall("joint"):
        tag = joint.find("rrt:drive", _NS)
        if tag is not None:
            value = _floats(tag.get("armature"), 1, f"{path}: joint {joint.get('name')!r} rrt:drive.armature")[0]
            if value < 0:
                raise ValueError(f"{path}: joint {joint.get('name')!r} rrt:drive.armature must be >= 0, got {value}")
            out[joint.get("name")] = value
    return out


def _origin(joint: ET.Element, where: str) -> tuple[list[float], list[float]]:
    tag = joint.find("origin")
    if tag is None:
        return [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    return _floats(tag.get("xyz", "0 0 0"), 3, f"{where}.origin.xyz"), _floats(
        tag.get("rpy", "0 0 0"), 3, f"{where}.origin.rpy"
    )


def _rpy_matrix(rpy) -> np.ndarray:
    from .kinematics import rpy_matrix

    return rpy_matrix(rpy)


def _matrix_rpy(r: np.ndarray) -> list[float]:
    """(roll, pitch, yaw) with R = Rz(yaw) Ry(pitch) Rx(roll); yaw = 0 at the gimbal lock."""
    cp = math.hypot(r[0, 0], r[1, 0])
    pitch = math.atan2(-r[2, 0], cp)
    if cp > 1e-9:
        return [math.atan2(r[2, 1], r[2, 2]), pitch, math.atan2(r[1, 0], r[0, 0])]
    return [math.atan2(-r[1, 2], r[1, 1]), pitch, 0.0]


def _compose(transforms: list[tuple[list[float], list[float]]]) -> tuple[list[float], list[float]]:
    """Product of (xyz, rpy) transforms; exact (as written) when at most one of them is not the identity."""
    moving = [t for t in transforms if any(t[0]) or any(t[1])]
    if len(moving) <= 1:
        return moving[0] if moving else ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    rot, pos = np.eye(3), np.zeros(3)
    for xyz, rpy in moving:
        pos = pos + rot @ np.asarray(xyz)
        rot = rot @ _rpy_matrix(rpy)
    return pos.tolist(), _matrix_rpy(rot)


def description_dict(path: str | Path | None = None) -> dict:
    """The JSON robot description (format_version 1, docs/architecture.md) generated from a URDF."""
    path = urdf_path(path)
    urdf = load_urdf(path)
    root = _xml(path)
    cell = root.find("rrt:cell", _NS)
    if cell is None:
        raise ValueError(f"{path}: missing <rrt:cell> (xmlns:rrt={RRT_NS!r}): paddle link, workspace box, home")
    paddle_link = cell.get("paddle_link", "paddle")
    xml_joints = {j.get("name"): j for j in root.findall("joint")}
    by_child = {j.child: j for j in urdf.robot.joints}
    chain = []
    link = paddle_link
    if link not in {lk.name for lk in urdf.robot.links}:
        raise ValueError(f"{path}: rrt:cell.paddle_link {paddle_link!r} is not a link of the robot")
    while link in by_child:
        chain.append(by_child[link])
        link = by_child[link].parent
    chain.reverse()
    limits = motion_limits(path)
    joints, pending = [], []
    for joint in chain:
        where = f"{path}: joint {joint.name!r}"
        origin = _origin(xml_joints[joint.name], where)
        if joint.type == "fixed":
            pending.append(origin)
            continue
        if joint.type not in ("prismatic", "revolute"):
            raise ValueError(f"{where}: type {joint.type!r} is not supported (prismatic, revolute, fixed)")
        if getattr(joint, "mimic", None) is not None or xml_joints[joint.name].find("mimic") is not None:
            # a mimic joint moves with another: as an independent joint the loop's kinematics (and its workspace box)
            # would not be the robot's (the eighth audit: paddle errors up to 1.06 m)
            raise ValueError(f"{where}: <mimic> joints are not supported (each moving joint must be commanded)")
        if joint.name not in limits:
            raise ValueError(f"{where}: missing <rrt:motion_limits acceleration=... jerk=...>")
        xyz, rpy = _compose(pending + [origin])
        pending = []
        axis = np.asarray(joint.axis, dtype=np.float64)
        joints.append(
            {
                "name": joint.name,
                "type": joint.type,
                "axis": [float(v) for v in axis / np.linalg.norm(axis)],
                "origin_xyz_m": [float(v) for v in xyz],
                "origin_rpy_rad": [float(v) for v in rpy],
                "position_min": float(joint.limit.lower),
                "position_max": float(joint.limit.upper),
                "velocity_limit": float(joint.limit.velocity),
                "acceleration_limit": limits[joint.name][0],
                "jerk_limit": limits[joint.name][1],
                "effort_limit": float(joint.limit.effort),
            }
        )
    paddle_xyz, paddle_rpy = _compose(pending)
    return {
        "format_version": 1,
        "name": urdf.robot.name,
        "description": cell.get("description", ""),
        "generated_from": path.name,
        "joints": joints,
        "paddle": {
            "link": paddle_link,
            "origin_xyz_m": [float(v) for v in paddle_xyz],
            "origin_rpy_rad": [float(v) for v in paddle_rpy],
            "radius_m": _floats(cell.get("paddle_radius_m"), 1, f"{path}: rrt:cell.paddle_radius_m")[0],
            "note": "paddle frame: origin at the blade centre, z axis = forehand face normal",
        },
        "paddle_workspace_box_m": {
            "min": _floats(cell.get("workspace_min_m"), 3, f"{path}: rrt:cell.workspace_min_m"),
            "max": _floats(cell.get("workspace_max_m"), 3, f"{path}: rrt:cell.workspace_max_m"),
        },
        "home_position": _floats(cell.get("home_position"), len(joints), f"{path}: rrt:cell.home_position"),
    }


def description_json(path: str | Path | None = None) -> str:
    """The generated JSON text, formatted as committed (indent 2, lists of numbers on one line, final newline)."""
    text = json.dumps(description_dict(path), indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def robot_from_urdf(path: str | Path | None = None) -> RobotDescription:
    """RobotDescription built from the URDF directly (the same object load_robot gives for the generated JSON)."""
    path = urdf_path(path)
    return parse_robot(description_dict(path), source=str(path))


def loader_paddle_pose_jacobian(urdf, q, paddle_link: str = "paddle") -> tuple[np.ndarray, np.ndarray]:
    """Paddle pose [4, 4] and geometric Jacobian [6, dof] (rows: linear velocity of the paddle origin, angular
    velocity, table frame) from the URDF loader's own forward kinematics: column i is a_i x (p - o_i) / a_i for a
    revolute joint and a_i / 0 for a prismatic one, with a_i, o_i joint i's axis and origin in the table frame
    (yourdfpy's frame of the joint's child link). The reference the C++ kinematics is tested against."""
    urdf.update_cfg(np.asarray(q, dtype=np.float64))
    root = urdf.base_link
    pose = urdf.get_transform(paddle_link, root)
    joints = {j.name: j for j in urdf.robot.joints}
    jac = np.zeros((6, len(urdf.actuated_joint_names)))
    for i, name in enumerate(urdf.actuated_joint_names):
        frame = urdf.get_transform(joints[name].child, root)
        axis = frame[:3, :3] @ np.asarray(joints[name].axis, dtype=np.float64)
        if joints[name].type == "prismatic":
            jac[:3, i] = axis
        else:
            jac[:3, i] = np.cross(axis, pose[:3, 3] - frame[:3, 3])
            jac[3:, i] = axis
    return pose, jac


def main(argv=None) -> int:
    import argparse

    from robot_rt._io import atomic_write_text

    parser = argparse.ArgumentParser(
        prog="python -m robot_rt.robot.urdf", description="Generate the JSON robot description from a URDF."
    )
    parser.add_argument("--urdf", default=None, help=f"URDF file (default: the shipped {DEFAULT_URDF})")
    parser.add_argument(
        "--write",
        nargs="?",
        const="",
        default=None,
        help=f"write the JSON here (no value: the shipped {DEFAULT_ROBOT_FILE}) instead of printing it",
    )
    args = parser.parse_args(argv)
    text = description_json(args.urdf)
    if args.write is None:
        print(text, end="")
        return 0
    target = Path(args.write) if args.write else Path(str(resources.files("robot_rt.robot").joinpath("data")))
    if not args.write:
        target = target / DEFAULT_ROBOT_FILE
    atomic_write_text(target, text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
