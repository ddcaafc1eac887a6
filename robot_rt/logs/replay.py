"""`robot-rt replay LOG`: summary of a run log and plots of the joints and the ball (PNG).

Reads the log with `robot_rt.control.runlog.read_runlog` (also a log cut short by a crash, up to its last
complete chunk, and a damaged log: damaged chunks are skipped and the ticks they held reported as lost),
prints the summary (duration, rate, deadline misses, stops, events by name including the
UDP link events of robot_rt.control.udp, limit margins, ball detections) and writes
`<out>/joints.png` (measured, commanded and target position of every joint with its limits),
`<out>/ball.png` (ball detections: x, y, z over time and a top view) and `<out>/timing.png`
(tick period and wake latency).

Exit status: 0 when the log was read whole (a crash tail, `incomplete chunk`, is expected after kill -9 and
only reported), 3 when damaged chunks were skipped (the summary is printed, with a warning per damage: offset,
bytes and chunks skipped, ticks lost), 2 when the file is missing or not a readable run log (the error names
the byte offset).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robot_rt.control.runlog import RunLog, RunLogError, read_runlog
from robot_rt.control.udp import LINK_EVENT_CODES

_TICK_DEADLINE_MISS = 1 << 5
_TICK_STOPPING = 1 << 1


def summarize(log: RunLog) -> dict:
    """A JSON-able summary of a run log."""
    meta = log.meta
    ticks = log.ticks
    names = {v: k for k, v in log.event_names.items()}
    names.update({v: k for k, v in LINK_EVENT_CODES.items()})
    events: dict[str, float] = {}
    for e in log.events:
        code = int(e["code"])
        name = names.get(code, f"code{code}")
        # link events carry how many packets they stand for; loop events count once each
        events[name] = events.get(name, 0) + (float(e["value"]) if name in LINK_EVENT_CODES else 1)
    out: dict = {
        "path": log.path,
        "robot": meta.get("robot"),
        "driver": meta.get("driver"),
        "dof": log.dof,
        "chunks": log.chunks,
        "clean_shutdown": log.clean,
        "format_version": log.version,
        "truncated_bytes": log.truncated_bytes,
        "stop_reason": log.stop_reason,
        "damage": [d.describe() for d in log.damage],
        "lost_ticks": log.lost_ticks,  # None: some lost through the end of the run (count unknown)
        "lost_tick_ranges": [list(r) for r in log.lost_tick_ranges],
        "skipped_bytes": log.skipped_bytes,
        "dropped_tick_ranges": [list(r) for r in log.dropped_tick_ranges],
        "ticks": int(len(ticks)),
        "events": events,
        "ball_detections": int(len(log.balls)),
    }
    flags = meta.get("tick_flags") or {}
    miss_bit = int(flags.get("deadline_miss", _TICK_DEADLINE_MISS))
    stop_bit = int(flags.get("stopping", _TICK_STOPPING))
    if len(ticks) >= 2:
        wake = ticks["wake_ns"].astype(np.int64)
        duration = (wake[-1] - wake[0]) * 1e-9
        period_us = np.diff(wake) / 1e3
        latency_us = (ticks["wake_ns"] - ticks["deadline_ns"]) / 1e3
        out.update(
            duration_s=round(float(duration), 4),
            mean_rate_hz=float((len(ticks) - 1) / duration) if duration > 0 else 0.0,
            period_us={"p50": float(np.percentile(period_us, 50)), "p99": float(np.percentile(period_us, 99))},
            wake_latency_us={"p50": float(np.percentile(latency_us, 50)), "max": float(latency_us.max())},
            deadline_miss_ticks=int(np.count_nonzero(ticks["flags"] & miss_bit)),
            stopping_ticks=int(np.count_nonzero(ticks["flags"] & stop_bit)),
        )
        if "position_min" in meta:
            lo, hi = np.asarray(meta["position_min"]), np.asarray(meta["position_max"])
            cmd = ticks["command_position"]
            vmax = np.asarray(meta["velocity_limit"])
            out["command_limit_margin"] = float(np.min(np.minimum(cmd - lo, hi - cmd)))
            out["command_velocity_ratio_max"] = float(np.max(np.abs(ticks["command_velocity"]) / vmax))
            out["command_within_limits"] = bool(
                np.all(cmd >= lo - 1e-9 * np.maximum(1, np.abs(lo))) and np.all(cmd <= hi + 1e-9 * np.maximum(1, hi))
            )
    return out


def _time_axis(log: RunLog, stamps) -> np.ndarray:
    t0 = int(log.ticks["wake_ns"][0]) if len(log.ticks) else (int(stamps[0]) if len(stamps) else 0)
    return (np.asarray(stamps, dtype=np.int64) - t0) * 1e-9


def plot(log: RunLog, out_dir: str | Path) -> list[Path]:
    """Writes joints.png, ball.png and timing.png into out_dir; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    ticks = log.ticks
    meta = log.meta
    dof = log.dof
    names = meta.get("joint_names") or [f"joint {i}" for i in range(dof)]
    t = _time_axis(log, ticks["wake_ns"]) if len(ticks) else np.zeros(0)

    cols = 2
    rows = max(1, (dof + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.2 * rows), sharex=True, squeeze=False)
    for j in range(rows * cols):
        ax = axes[j // cols][j % cols]
        if j >= dof:
            ax.axis("off")
            continue
        if len(ticks):
            ax.plot(t, ticks["target_position"][:, j], lw=0.8, color="0.6", label="target")
            ax.plot(t, ticks["command_position"][:, j], lw=1.0, label="command")
            ax.plot(t, ticks["measured_position"][:, j], lw=1.0, ls="--", label="measured")
        if "position_min" in meta:
            for limit in (meta["position_min"][j], meta["position_max"][j]):
                ax.axhline(limit, color="r", lw=0.6, ls=":")
        ax.set_title(names[j], fontsize=9)
        ax.tick_params(labelsize=8)
        ax.locator_params(nbins=4)
    axes[0][0].legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    fig.suptitle(f"{meta.get('robot', 'robot')} joints ({meta.get('driver', '?')} driver)")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.93, bottom=0.06, hspace=0.45, wspace=0.15)
    path = out_dir / "joints.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)

    balls = log.balls
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    if len(balls):
        tb = _time_axis(log, balls["stamp_ns"])
        p = balls["position_m"]
        for k, label in enumerate("xyz"):
            ax1.plot(tb, p[:, k], ".", ms=2, label=label)
        ax2.plot(p[:, 0], p[:, 1], ".", ms=2)
    else:
        ax1.text(0.5, 0.5, "no ball detections in this log", ha="center", va="center", transform=ax1.transAxes)
    ax1.set_xlabel("time (s)")
    ax1.set_ylabel("position (m)")
    if len(balls):
        ax1.legend(fontsize=8)
    ax2.add_patch(matplotlib.patches.Rectangle((-1.37, -0.7625), 2.74, 1.525, fill=False, color="g"))
    ax2.axvline(0.0, color="g", lw=0.8)
    ax2.set_xlim(-3, 3)
    ax2.set_ylim(-1.5, 1.5)
    ax2.set_aspect("equal")
    ax2.set_xlabel("x (m)")
    ax2.set_ylabel("y (m)")
    ax2.set_title("top view (table in green)")
    fig.suptitle(f"ball detections: {len(balls)}")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.13, wspace=0.2)
    path = out_dir / "ball.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.5))
    if len(ticks) >= 2:
        ax1.plot(t[1:], np.diff(ticks["wake_ns"]) / 1e3, lw=0.5)
        ax2.hist((ticks["wake_ns"] - ticks["deadline_ns"]) / 1e3, bins=100, log=True)
    ax1.set_xlabel("time (s)")
    ax1.set_ylabel("tick period (us)")
    ax2.set_xlabel("wake latency (us)")
    ax2.set_ylabel("ticks")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.15, wspace=0.25)
    path = out_dir / "timing.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)
    return paths


def _export(args, log: RunLog, kind: str, exit_code: int, console, errors) -> int:
    """`--export mcap|rerun`: writes the file, prints what it holds (JSON with --json)."""
    suffix = ".mcap" if kind == "mcap" else ".rrd"
    out = Path(args.out) if args.out else Path(args.log).with_suffix(suffix)
    try:
        if kind == "mcap":
            from .export_mcap import export_mcap

            result = export_mcap(log, out).as_dict()
        else:
            from .export_rerun import export_rerun

            result = export_rerun(log, out)
    except (ImportError, ValueError, OSError) as err:
        errors.print(f"[red]error:[/red] {kind} export: {err}", markup=True)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        console.print(f"{kind}: {out}")
        for topic, count in result.get("counts", {}).items():
            console.print(f"  {topic}: {count} messages ({result.get('schemas', {}).get(topic, '')})")
        for note in result.get("notes", []):
            console.print(f"  note: {note}")
    return exit_code


def replay_main(args) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per message (grep-able)
    try:
        log = read_runlog(args.log)
    except (FileNotFoundError, IsADirectoryError, PermissionError, RunLogError) as err:
        errors.print(f"[red]error:[/red] {err}", markup=True)
        return 2
    for damage in log.damage:
        errors.print(f"[yellow]warning:[/yellow] {args.log}: damaged log: {damage.describe()}", markup=True)
    exit_code = 3 if log.damage else 0
    export = "rerun" if getattr(args, "rerun", False) else getattr(args, "export", None)
    if export is not None:
        return _export(args, log, export, exit_code, console, errors)
    summary = summarize(log)
    if not args.no_plots:
        out_dir = (
            Path(args.out) if args.out else Path(args.log).with_suffix("").parent / (Path(args.log).stem + "_plots")
        )
        summary["plots"] = [str(p) for p in plot(log, out_dir)]
    if args.json:
        print(json.dumps(summary, indent=2))
        return exit_code
    table = Table(title=f"run log {args.log}", show_header=False)
    for key, value in summary.items():
        if isinstance(value, dict | list):
            value = json.dumps(value)
        elif isinstance(value, float):
            value = f"{value:.6g}"
        table.add_row(key, str(value))
    console.print(table)
    return exit_code
