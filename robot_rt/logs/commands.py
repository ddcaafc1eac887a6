"""`robot-rt replay` and `robot-rt run --mcap` (registered by robot_rt.cli after robot_rt.control.commands)."""

from __future__ import annotations


def register(subparsers) -> None:
    rep = subparsers.add_parser(
        "replay",
        help="summarise a run log and plot joints and ball (PNG)",
        description="Replay a run log. Exit status: 0 read whole, 3 damaged chunks skipped (ticks lost are "
        "reported), 2 not a readable run log.",
    )
    rep.add_argument("log", help="run log file")
    rep.add_argument(
        "--out",
        default=None,
        help="directory for the PNGs (default: next to the log); with --export / --rerun: the file to write "
        "(default: the log's path with .mcap / .rrd)",
    )
    rep.add_argument(
        "--export",
        choices=("mcap", "rerun"),
        default=None,
        help="write the run as MCAP (Foxglove / ROS 2 schemas, docs/mcap.md; extra 'mcap') or as a Rerun recording "
        "(.rrd; extra 'rerun') instead of the PNGs",
    )
    rep.add_argument("--rerun", action="store_true", help="the same as --export rerun")
    rep.add_argument("--no-plots", action="store_true")
    rep.add_argument("--json", action="store_true", help="print the summary as JSON")
    rep.set_defaults(func=cmd_replay)

    run = subparsers.choices.get("run")
    if run is None:
        raise RuntimeError("robot_rt.logs.commands.register: register robot_rt.control.commands (run) first")
    run.add_argument(
        "--mcap",
        action="store_true",
        help="after the run, also export the run log to MCAP beside it (RUN.mcap; docs/mcap.md, extra 'mcap')",
    )
    run.set_defaults(after_run=(*run.get_default("after_run"), export_mcap_after_run))


def cmd_replay(args) -> int:
    from .replay import replay_main

    return replay_main(args)


def export_mcap_after_run(args, log_path, summary: dict, console) -> int | None:
    """`run --mcap`: the finished run's log as RUN.mcap; its counts go into the summary. 2 when the export failed."""
    if not args.mcap:
        return None
    from .export_mcap import export_mcap

    try:
        exported = export_mcap(log_path, log_path.with_suffix(".mcap"))
    except (ImportError, ValueError, OSError) as err:
        console.print(f"[red]error:[/red] MCAP export: {err}")
        return 2
    summary["mcap"] = exported.as_dict()
    console.print(f"MCAP: {exported.path} ({sum(exported.counts.values())} messages)")
    return None
