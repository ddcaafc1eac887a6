"""Run log -> Rerun recording (.rrd, `robot-rt replay RUN --rerun`), written to a file, no viewer spawned.

Entities and timelines: docs/mcap.md, section "What the Rerun recording holds". Needs the `rerun` extra.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_output_path
from robot_rt.control.runlog import RunLog, read_runlog
from robot_rt.control.udp import LINK_EVENT_CODES

from .export_mcap import event_level, load_log_robot, rotation_to_quaternion, time_offset_ns

MISSING_EXTRA = "the Rerun export needs the 'rerun' extra: pip install 'percept-robot[rerun]'"
_RERUN_LEVELS = {"INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR"}


def export_rerun(log: RunLog | str | os.PathLike, path: str | os.PathLike, *, robot=None) -> dict:
    """Writes the run log `log` to the Rerun recording `path` (atomically). Returns {"path", "counts": entity path ->
    rows, "notes"}. Raises ImportError naming the extra when rerun-sdk is missing."""
    try:
        import rerun as rr
    except ImportError as err:
        raise ImportError(f"{MISSING_EXTRA} ({err})") from err
    if not isinstance(log, RunLog):
        log = read_runlog(log)
    offset = time_offset_ns(log.meta)
    robot = load_log_robot(log, robot)
    ticks, balls, events = log.ticks, log.balls, log.events
    names = list(log.meta.get("joint_names") or [f"joint{i}" for i in range(log.dof)])
    counts: dict[str, int] = {}
    notes = ["no ball predictions: the run log does not record them (only detections)"]
    if robot is None:
        notes.append("no paddle transforms: no robot description matching the log's joints")

    rec = rr.RecordingStream("robot_rt", recording_id=f"robot_rt-{Path(log.path).stem}", send_properties=False)
    with atomic_output_path(path) as tmp:
        rec.save(tmp)

        def columns(entity: str, indexes, cols, rows: int) -> None:
            rec.send_columns(entity, indexes=indexes, columns=cols)
            counts[entity] = counts.get(entity, 0) + rows

        def static(entity: str, archetype) -> None:
            rec.log(entity, archetype, static=True)
            counts[entity] = counts.get(entity, 0) + 1

        static(
            "world/table",
            rr.Boxes3D(centers=[[0, 0, 0.745]], half_sizes=[[1.37, 0.7625, 0.015]], colors=[[26, 90, 51]]),
        )
        static(
            "world/net",
            rr.Boxes3D(centers=[[0, 0, 0.83625]], half_sizes=[[0.005, 0.915, 0.07625]], colors=[[230, 230, 230]]),
        )
        if robot is not None:
            lo, hi = np.asarray(robot.workspace_min_m), np.asarray(robot.workspace_max_m)
            static("world/workspace", rr.Boxes3D(mins=[lo], sizes=[hi - lo], colors=[[255, 200, 0]]))
        if len(ticks):
            wall = ticks["wake_ns"].astype(np.int64) + offset
            index = [
                rr.TimeColumn("time", timestamp=wall.astype("datetime64[ns]")),
                rr.TimeColumn("tick", sequence=ticks["tick"].astype(np.int64)),
            ]
            n = len(ticks)
            for j, name in enumerate(names):
                for kind, field in (
                    ("measured", "measured_position"),
                    ("command", "command_position"),
                    ("target", "target_position"),
                ):
                    columns(f"joints/{name}/{kind}", index, rr.Scalars.columns(scalars=ticks[field][:, j]), n)
                for kind, field in (("measured", "measured_velocity"), ("command", "command_velocity")):
                    columns(f"joints/{name}/velocity/{kind}", index, rr.Scalars.columns(scalars=ticks[field][:, j]), n)
            latency_us = (ticks["wake_ns"].astype(np.int64) - ticks["deadline_ns"].astype(np.int64)) / 1e3
            duration_us = (ticks["done_ns"].astype(np.int64) - ticks["wake_ns"].astype(np.int64)) / 1e3
            columns("loop/wake_latency_us", index, rr.Scalars.columns(scalars=latency_us), n)
            columns("loop/tick_duration_us", index, rr.Scalars.columns(scalars=duration_us), n)
            if robot is not None:
                from robot_rt.robot.kinematics import forward_kinematics

                radius = float(robot.paddle_radius_m)
                for entity, field, color in (
                    ("world/paddle", "measured_position", [204, 26, 26]),
                    ("world/paddle_command", "command_position", [51, 102, 255]),
                ):
                    pose = forward_kinematics(robot, ticks[field])
                    columns(
                        entity,
                        index,
                        rr.Transform3D.columns(
                            translation=pose[:, :3, 3], quaternion=rotation_to_quaternion(pose[:, :3, :3])
                        ),
                        n,
                    )
                    # the disc in the paddle frame: its face normal is the frame's z axis
                    static(f"{entity}/disc", rr.Cylinders3D(lengths=[0.01], radii=[radius], colors=[color]))
        if len(balls):
            wall = balls["stamp_ns"].astype(np.int64) + offset
            index = [
                rr.TimeColumn("time", timestamp=wall.astype("datetime64[ns]")),
                rr.TimeColumn("tick", sequence=balls["tick"].astype(np.int64)),
            ]
            columns(
                "world/ball",
                index,
                rr.Points3D.columns(positions=balls["position_m"], radii=np.full(len(balls), 0.02, dtype=np.float32)),
                len(balls),
            )
        if len(events):
            event_names = {int(v): k for k, v in log.event_names.items()}
            event_names.update({v: k for k, v in LINK_EVENT_CODES.items()})
            texts, levels = [], []
            for e in events:
                code, joint = int(e["code"]), int(e["joint"])
                name = event_names.get(code, f"code{code}")
                texts.append(
                    f"{name} (tick {int(e['tick'])}"
                    + (f", joint {joint}" if joint >= 0 else "")
                    + f"): {float(e['value'])!r}"
                )
                levels.append(_RERUN_LEVELS[event_level(name, code)])
            wall = events["stamp_ns"].astype(np.int64) + offset
            index = [
                rr.TimeColumn("time", timestamp=wall.astype("datetime64[ns]")),
                rr.TimeColumn("tick", sequence=events["tick"].astype(np.int64)),
            ]
            columns("events", index, rr.TextLog.columns(text=texts, level=levels), len(events))
        rec.flush()
        rec.disconnect()
    return {"path": str(path), "counts": counts, "notes": notes}
