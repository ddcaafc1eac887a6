"""Derives the joint effort limits of robot_rt/robot/data/gantry_arm_8dof.urdf (not published by the makers).

Method (docs/robot.md, "Effort limits"): over random configurations inside the joint limits, the largest
static gravity load of each joint (sum over the links it carries of m_k g projected on the joint: a force
for the prismatic gantry axes, (c_k - o_i) x m_k g about a revolute axis) plus the largest diagonal entry of
the joint-space inertia (the carried mass for a prismatic joint; sum of m_k |a x (c_k - o)|^2 + a' I_k a for a
revolute one) plus the drive's armature (<rrt:drive>) times the joint's acceleration limit, times a margin of 1.5, plus the joint's Coulomb friction.
Rounded up to two significant digits. The URDF's link frames come from yourdfpy (the loader), the inertials
and the acceleration limits from the URDF itself.

    .venv/bin/python tools/derive_effort_limits.py [--samples 4000]
prints the table; the values are copied into the URDF by hand (they are inputs of the model, not re-derived on
load, so that the URDF stays the one source a robotics tool reads).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

MARGIN = 1.5
GRAVITY = np.array([0.0, 0.0, -9.80665])


def round_up_2sig(x: float) -> float:
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x)) - 1
    return math.ceil(x / 10**e) * 10**e


def main() -> None:
    import yourdfpy

    from robot_rt.robot.urdf import DEFAULT_URDF, drive_armature, motion_limits, urdf_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    args = parser.parse_args()
    path = urdf_path(DEFAULT_URDF)
    urdf = yourdfpy.URDF.load(str(path), load_meshes=False, build_collision_scene_graph=False)
    accel = {name: lim[0] for name, lim in motion_limits(path).items()}
    armature = drive_armature(path)
    names = urdf.actuated_joint_names
    joints = {j.name: j for j in urdf.robot.joints}
    links = {link.name: link for link in urdf.robot.links if link.inertial is not None}
    # the links each joint carries: everything downstream of its child link
    children: dict[str, list[str]] = {}
    for j in urdf.robot.joints:
        children.setdefault(j.parent, []).append(j.child)

    def downstream(link: str) -> list[str]:
        out, stack = [], [link]
        while stack:
            cur = stack.pop()
            out.append(cur)
            stack.extend(children.get(cur, []))
        return out

    carried = {n: [k for k in downstream(joints[n].child) if k in links] for n in names}
    lo = np.array([joints[n].limit.lower for n in names])
    hi = np.array([joints[n].limit.upper for n in names])
    rng = np.random.default_rng(0)
    grav = np.zeros(len(names))
    inertia = np.zeros(len(names))
    for _ in range(args.samples):
        urdf.update_cfg(rng.uniform(lo, hi))
        pose = {k: urdf.get_transform(k, "world") for k in links}
        for i, n in enumerate(names):
            frame = urdf.get_transform(joints[n].child, "world")
            axis = frame[:3, :3] @ np.asarray(joints[n].axis, dtype=float)
            origin = frame[:3, 3]
            tau_g, m_ii = 0.0, 0.0
            for k in carried[n]:
                inert = links[k].inertial
                com = pose[k][:3, :3] @ inert.origin[:3, 3] + pose[k][:3, 3]
                force = inert.mass * GRAVITY
                if joints[n].type == "prismatic":
                    tau_g += float(axis @ force)
                    m_ii += inert.mass
                else:
                    arm = com - origin
                    tau_g += float(axis @ np.cross(arm, force))
                    rot = pose[k][:3, :3] @ inert.origin[:3, :3]
                    a_local = rot.T @ axis
                    m_ii += inert.mass * float(np.sum(np.cross(axis, arm) ** 2)) + float(
                        a_local @ inert.inertia @ a_local
                    )
            grav[i] = max(grav[i], abs(tau_g))
            inertia[i] = max(inertia[i], m_ii + armature.get(n, 0.0))
    print(f"{'joint':10s} {'max |gravity|':>14s} {'max M_ii+arm.':>14s} {'a_max':>7s} {'friction':>9s} {'effort':>8s}")
    for i, n in enumerate(names):
        friction = float(joints[n].dynamics.friction or 0.0) if joints[n].dynamics is not None else 0.0
        effort = round_up_2sig(MARGIN * (grav[i] + inertia[i] * accel[n]) + friction)
        print(f"{n:10s} {grav[i]:14.3f} {inertia[i]:14.4f} {accel[n]:7.1f} {friction:9.2f} {effort:8.4g}")


if __name__ == "__main__":
    main()
