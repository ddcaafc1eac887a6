"""Offscreen rendering of a world: a top view (x-y) and a side view (x-z) side by side, drawn with Pillow."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from robot_rt.robot.kinematics import joint_transforms

from .core import PHASE_SERVING

WIDTH, HEIGHT = 480, 300  # per view
X_RANGE = (-2.6, 2.9)
Y_RANGE = (-1.6, 1.6)
Z_RANGE = (0.0, 2.0)


def _mapper(horizontal, vertical):
    def to_px(h, v):
        u = (np.asarray(h) - horizontal[0]) / (horizontal[1] - horizontal[0]) * (WIDTH - 1)
        w = (vertical[1] - np.asarray(v)) / (vertical[1] - vertical[0]) * (HEIGHT - 1)
        return u, w

    return to_px


def render_world(world, index: int = 0) -> np.ndarray:
    """RGB frame [HEIGHT, 2 * WIDTH, 3] uint8 of world `index`."""
    table = world.table
    half_l, half_w, top = table.length_m / 2, table.width_m / 2, table.surface_height_m
    frames = []
    frames_robot = joint_transforms(world.robot, world.q[index])
    chain = np.array([f[:3, 3] for f in frames_robot])
    paddle_pose = frames_robot[-1]
    paddle_p, paddle_n = paddle_pose[:3, 3], paddle_pose[:3, 2]
    paddle_u = paddle_pose[:3, 0]
    ball = world.ball[index]
    serving = int(world.phase[index]) == PHASE_SERVING
    det = world.detections()[index]
    for view in ("top", "side"):
        image = Image.new("RGB", (WIDTH, HEIGHT), (235, 238, 240))
        draw = ImageDraw.Draw(image)
        if view == "top":
            to_px = _mapper(X_RANGE, Y_RANGE)
            (u0, v0), (u1, v1) = to_px(-half_l, half_w), to_px(half_l, -half_w)
            draw.rectangle([u0, v0, u1, v1], fill=(30, 90, 160), outline=(255, 255, 255))
            nu, nv0 = to_px(0.0, half_w + 0.15)
            _, nv1 = to_px(0.0, -half_w - 0.15)
            draw.line([nu, nv0, nu, nv1], fill=(20, 20, 20), width=2)
            axes = (0, 1)
        else:
            to_px = _mapper(X_RANGE, Z_RANGE)
            (u0, v0), (u1, v1) = to_px(-half_l, top), to_px(half_l, top - 0.04)
            draw.rectangle([u0, v0, u1, v1], fill=(30, 90, 160))
            nu, nv0 = to_px(0.0, top + table.net_height_m)
            draw.line([nu, nv0, nu, v0], fill=(20, 20, 20), width=2)
            _, floor_v = to_px(0.0, 0.0)
            draw.line([0, floor_v - 1, WIDTH, floor_v - 1], fill=(120, 120, 120), width=2)
            axes = (0, 2)
        if world.goal_conditioned:
            gu, gv = to_px(world.goal[index][0], world.goal[index][1] if view == "top" else top)
            draw.line([gu - 6, gv - 6, gu + 6, gv + 6], fill=(250, 200, 0), width=2)
            draw.line([gu - 6, gv + 6, gu + 6, gv - 6], fill=(250, 200, 0), width=2)
        pts = [to_px(p[axes[0]], p[axes[1]]) for p in chain]
        draw.line([(float(u), float(v)) for u, v in pts], fill=(90, 90, 90), width=3)
        ends = [paddle_p + world.robot.paddle_radius_m * paddle_u, paddle_p - world.robot.paddle_radius_m * paddle_u]
        (pu0, pv0), (pu1, pv1) = (to_px(e[axes[0]], e[axes[1]]) for e in ends)
        draw.line([pu0, pv0, pu1, pv1], fill=(200, 30, 30), width=5)
        nu_, nv_ = to_px(*(paddle_p + 0.1 * paddle_n)[list(axes)])
        pu, pv = to_px(paddle_p[axes[0]], paddle_p[axes[1]])
        draw.line([pu, pv, nu_, nv_], fill=(240, 120, 120), width=1)
        for d in det:
            if d[4] > 0:
                du, dv = to_px(d[axes[0]], d[axes[1]])
                draw.ellipse([du - 2, dv - 2, du + 2, dv + 2], outline=(0, 150, 0))
        if not serving:  # a serve still to come: no ball in play yet
            bu, bv = to_px(ball[axes[0]], ball[axes[1]])
            draw.ellipse([bu - 4, bv - 4, bu + 4, bv + 4], fill=(255, 140, 0))
        draw.text((6, 4), f"{view}  t={world.t[index]:.2f}s  rally={int(world.hits[index])}", fill=(0, 0, 0))
        frames.append(np.asarray(image))
    return np.concatenate(frames, axis=1)


class EpisodeVideoWriter:
    """Collects rgb_array frames and writes them atomically as an animated GIF (Pillow, no extra codec)."""

    def __init__(self, path, fps: int = 25):
        self.path = path
        self.fps = int(fps)
        self.frames: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame: expected an RGB uint8 image [H, W, 3], got {frame.shape} {frame.dtype}")
        self.frames.append(frame)

    def close(self):
        import io

        from robot_rt._io import atomic_write_bytes

        if not self.frames:
            raise ValueError("EpisodeVideoWriter: no frames to write")
        images = [Image.fromarray(f) for f in self.frames]
        buffer = io.BytesIO()
        images[0].save(
            buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / self.fps), loop=0
        )
        return atomic_write_bytes(self.path, buffer.getvalue())
