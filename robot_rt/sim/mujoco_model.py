"""MuJoCo model of the platform, generated from its URDF (robot_rt/robot/data/gantry_arm_8dof.urdf).

`build_mjcf(urdf_path=None, ...)` writes the MJCF text; `MujocoRobotModel` compiles it and holds the servo gains.
What the model contains, and why (docs/mujoco.md has the numbers and how they were chosen):

- Bodies, joints and inertials exactly as in the URDF (a body per link, nested along the chain; fixed joints
  become bodies without a joint): joint ranges, armature (`<rrt:drive>`), viscous damping and Coulomb friction
  (`<dynamics damping friction>` -> MJCF damping / frictionloss). Visual geometry from the URDF's boxes and
  cylinders; none of the robot collides (the cell has no obstacles modelled), except the paddle blade with the
  ball, through one explicit contact pair whose parameters are tuned to the project's paddle model.
- One position/velocity servo per joint, the drive of an industrial position loop: force = kp (q* - q) +
  kv (v* - v), realised as a MuJoCo `general` actuator with affine bias (ctrl = kp q* + kv v*, bias
  -kp q - kv v), force limited to the URDF effort; gains from a bandwidth and a damping ratio on the joint's
  inertia at the home pose (kp = J w^2, kv = 2 zeta J w), gravity compensated through the actuators
  (`gravcomp`, `actuatorgravcomp`: the controller's model feed-forward, counted against the effort limit).
- The ball: a free body (hollow sphere, BallParams mass and radius, I = 2/3 m r^2) that collides with the paddle
  blade only; its flight and table/net/floor contacts are the project's (robot_rt.sim.mujoco_physics).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from robot_rt.robot.urdf import drive_armature, load_urdf, urdf_path

# servo design (docs/mujoco.md, "Servo gains"): industrial position loops have a closed-loop bandwidth of
# 10-20 Hz for the main axes; a damping ratio of 0.7 gives ~5 % overshoot on a step
ARM_BANDWIDTH_HZ = 15.0
GANTRY_BANDWIDTH_HZ = 8.0
DAMPING_RATIO = 0.7


@dataclass(frozen=True)
class PaddleContact:
    """Ball-paddle contact pair (MuJoCo solref in direct form: stiffness and damping of the reference
    acceleration, per unit penetration / velocity). Tuned so that the rebound matches the project's paddle model
    (WorldConfig.paddle_restitution / paddle_friction) within the tolerance measured by tests/test_mujoco_server.py
    and reported in docs/mujoco.md."""

    stiffness: float = 2.5e6  # 1/s^2: contact natural frequency ~1.6 kHz (a ~2 ms half period, rubber on a blade)
    damping: float = 150.0  # 1/s
    friction: float = 0.35
    friction_damping: float = (
        1500.0  # solreffriction damping (1/s): slip stops within the contact, as in the project model
    )
    solimp: tuple = (0.99, 0.99, 0.001, 0.5, 2.0)


@dataclass(frozen=True)
class ModelOptions:
    timestep_s: float = 0.00025  # 4 physics substeps per 1 ms server tick (a ball contact lasts ~2 ms)
    arm_bandwidth_hz: float = ARM_BANDWIDTH_HZ
    gantry_bandwidth_hz: float = GANTRY_BANDWIDTH_HZ
    damping_ratio: float = DAMPING_RATIO
    paddle_contact: PaddleContact = field(default_factory=PaddleContact)
    ball_mass_kg: float = 2.7e-3
    ball_radius_m: float = 0.020
    gravity_mps2: float = 9.80665
    with_ball: bool = True
    impratio: float = 10.0
    cone: str = "elliptic"


def _fmt(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def _quat_from_matrix(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd's method)."""
    t = np.trace(r)
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = math.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k]) * 2
        q = [0.0] * 4
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def _pose_attrs(element: ET.Element, transform: np.ndarray) -> None:
    element.set("pos", _fmt(transform[:3, 3]))
    quat = _quat_from_matrix(transform[:3, :3])
    if not np.allclose(quat, [1, 0, 0, 0], atol=1e-15):
        element.set("quat", _fmt(quat))


def _geom(parent: ET.Element, geometry, origin: np.ndarray, name: str, collide: bool, rgba=None) -> None:
    g = ET.SubElement(parent, "geom", name=name)
    _pose_attrs(g, origin)
    if geometry.box is not None:
        g.set("type", "box")
        g.set("size", _fmt(np.asarray(geometry.box.size) / 2))
    elif geometry.cylinder is not None:
        g.set("type", "cylinder")
        g.set("size", _fmt([geometry.cylinder.radius, geometry.cylinder.length / 2]))
    elif geometry.sphere is not None:
        g.set("type", "sphere")
        g.set("size", _fmt([geometry.sphere.radius]))
    else:
        raise ValueError(f"urdf: link geometry {name!r}: only box, cylinder and sphere are supported")
    g.set("contype", "0")
    g.set("conaffinity", "0")
    g.set("group", "0" if collide else "1")
    g.set("mass", "0")  # inertia comes from the URDF's <inertial>
    if rgba is not None:
        g.set("rgba", _fmt(rgba))


def build_mjcf(path=None, options: ModelOptions | None = None) -> str:
    """MJCF text of the robot of a URDF (default: the shipped platform), plus the ball (see the module doc)."""
    opts = options or ModelOptions()
    path = urdf_path(path)
    urdf = load_urdf(path)
    armature = drive_armature(path)
    root = ET.Element("mujoco", model=urdf.robot.name)
    ET.SubElement(root, "compiler", angle="radian", autolimits="true")
    ET.SubElement(
        root,
        "option",
        timestep=repr(opts.timestep_s),
        gravity=_fmt([0, 0, -opts.gravity_mps2]),
        integrator="implicitfast",
        cone=opts.cone,
        impratio=repr(opts.impratio),
    )
    ET.SubElement(root, "size", memory="2M")
    world = ET.SubElement(root, "worldbody")
    ET.SubElement(world, "light", pos="0 0 4", dir="0 0 -1", directional="true")
    # the table top as a visual reference (the ball's table contact is the project's model, not MuJoCo's)
    ET.SubElement(
        world,
        "geom",
        name="table",
        type="box",
        pos="0 0 0.74",
        size="1.37 0.7625 0.02",
        rgba="0.1 0.25 0.5 1",
        contype="0",
        conaffinity="0",
        group="1",
    )
    materials = {m.name: m for m in urdf.robot.materials}
    children: dict[str, list] = {}
    for joint in urdf.robot.joints:
        children.setdefault(joint.parent, []).append(joint)
    links = {link.name: link for link in urdf.robot.links}
    actuated = []

    def add_link(parent_el: ET.Element, link_name: str) -> None:
        link = links[link_name]
        body_el = parent_el
        for k, visual in enumerate(link.visuals):
            rgba = None
            mat = visual.material
            if mat is not None:
                color = mat.color if mat.color is not None else getattr(materials.get(mat.name), "color", None)
                rgba = None if color is None else color.rgba
            _geom(body_el, visual.geometry, visual.origin, f"{link_name}_visual{k}", False, rgba)
        for k, collision in enumerate(link.collisions):
            name = "paddle_blade" if link_name == "paddle" and k == 0 else f"{link_name}_collision{k}"
            _geom(body_el, collision.geometry, collision.origin, name, True)
        for joint in children.get(link_name, []):
            child = links[joint.child]
            body = ET.SubElement(body_el, "body", name=joint.child)
            _pose_attrs(body, joint.origin)
            if child.inertial is not None:
                inertial = ET.SubElement(body, "inertial", mass=repr(float(child.inertial.mass)))
                _pose_attrs(inertial, child.inertial.origin)
                inertia = np.asarray(child.inertial.inertia)
                inertial.set(
                    "fullinertia",
                    _fmt([inertia[0, 0], inertia[1, 1], inertia[2, 2], inertia[0, 1], inertia[0, 2], inertia[1, 2]]),
                )
            body.set("gravcomp", "1")
            if joint.type in ("revolute", "prismatic"):
                j = ET.SubElement(
                    body,
                    "joint",
                    name=joint.name,
                    type="hinge" if joint.type == "revolute" else "slide",
                    axis=_fmt(joint.axis),
                    range=_fmt([joint.limit.lower, joint.limit.upper]),
                    armature=repr(armature.get(joint.name, 0.0)),
                    actuatorgravcomp="true",
                )
                if joint.dynamics is not None:
                    j.set("damping", repr(float(joint.dynamics.damping or 0.0)))
                    j.set("frictionloss", repr(float(joint.dynamics.friction or 0.0)))
                actuated.append(joint)
            elif joint.type != "fixed":
                raise ValueError(f"urdf: joint {joint.name!r}: type {joint.type!r} is not supported")
            add_link(body, joint.child)

    add_link(world, urdf.base_link)
    if opts.with_ball:
        r, m = opts.ball_radius_m, opts.ball_mass_kg
        ball = ET.SubElement(world, "body", name="ball", pos="0 0 -1")
        ET.SubElement(ball, "freejoint", name="ball")
        i = 2.0 / 3.0 * m * r * r  # hollow sphere
        ET.SubElement(ball, "inertial", pos="0 0 0", mass=repr(m), diaginertia=_fmt([i, i, i]))
        ET.SubElement(
            ball, "geom", name="ball", type="sphere", size=repr(r), contype="0", conaffinity="0", rgba="1 0.6 0.1 1"
        )
        contact = ET.SubElement(root, "contact")
        pc = opts.paddle_contact
        ET.SubElement(
            contact,
            "pair",
            geom1="ball",
            geom2="paddle_blade",
            condim="3",
            friction=_fmt([pc.friction, pc.friction, 0.005, 0.0001, 0.0001]),
            solref=_fmt([-pc.stiffness, -pc.damping]),
            solimp=_fmt(pc.solimp),
        )
        if pc.friction_damping > 0:
            contact[-1].set("solreffriction", _fmt([0.0, -pc.friction_damping]))
    act = ET.SubElement(root, "actuator")
    for joint in actuated:
        # gains are written into the compiled model by MujocoRobotModel (they depend on the compiled inertia)
        ET.SubElement(
            act,
            "general",
            name=joint.name,
            joint=joint.name,
            gaintype="fixed",
            gainprm="1",
            biastype="affine",
            biasprm="0 0 0",
            forcerange=_fmt([-joint.limit.effort, joint.limit.effort]),
        )
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


class MujocoRobotModel:
    """Compiled MuJoCo model + servo gains (kp [dof], kv [dof]) of the platform.

    The gains come from the joint-space inertia at the home pose (M_ii, armature included): kp = M_ii w^2,
    kv = 2 zeta M_ii w with w = 2 pi bandwidth (arm axes and gantry axes have their own bandwidths)."""

    def __init__(self, urdf=None, options: ModelOptions | None = None, robot=None):
        import mujoco

        from robot_rt.robot import load_robot

        self.options = options or ModelOptions()
        self.robot = robot if robot is not None else load_robot()
        self.xml = build_mjcf(urdf, self.options)
        self.model = mujoco.MjModel.from_xml_string(self.xml)
        self.joint_names = list(self.robot.joint_names)
        self.dof = len(self.joint_names)
        self.qpos_adr = np.array(
            [
                self.model.jnt_qposadr[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, n)]
                for n in self.joint_names
            ]
        )
        self.dof_adr = np.array(
            [
                self.model.jnt_dofadr[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, n)]
                for n in self.joint_names
            ]
        )
        data = mujoco.MjData(self.model)
        data.qpos[self.qpos_adr] = self.robot.home
        mujoco.mj_forward(self.model, data)
        full = np.zeros((self.model.nv, self.model.nv))
        if hasattr(data, "qM"):  # mujoco < 4: (model, dst, qM)
            mujoco.mj_fullM(self.model, full, data.qM)
        else:
            mujoco.mj_fullM(self.model, data, full)
        self.home_inertia = full[self.dof_adr, self.dof_adr].copy()
        bw = np.where(self.robot.is_revolute, self.options.arm_bandwidth_hz, self.options.gantry_bandwidth_hz).astype(
            np.float64
        )
        w = 2 * np.pi * bw
        self.kp = self.home_inertia * w**2
        self.kv = 2 * self.options.damping_ratio * self.home_inertia * w
        self.model.actuator_biasprm[: self.dof, 1] = -self.kp
        self.model.actuator_biasprm[: self.dof, 2] = -self.kv
        self.effort_limit = self.model.actuator_forcerange[: self.dof, 1].copy()
        ball = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "ball")
        self.ball_body = ball
        self.ball_qpos_adr = int(self.model.jnt_qposadr[self.model.body_jntadr[ball]]) if ball >= 0 else -1
        self.ball_dof_adr = int(self.model.jnt_dofadr[self.model.body_jntadr[ball]]) if ball >= 0 else -1
        self.paddle_geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "paddle_blade")
        self.ball_geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "ball")
        self.paddle_body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "paddle")
