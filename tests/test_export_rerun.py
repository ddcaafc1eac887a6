"""Run log -> Rerun recording (robot_rt.logs.export_rerun): the .rrd is written, non-empty, and read back with
rerun's own reader (rows per entity equal the run log's records, values exact); and rerun's independent MCAP reader
decodes our MCAP export's Foxglove and ROS 2 channels (transforms, log lines, joint states)."""

from __future__ import annotations

import json

import numpy as np
import pytest

# rerun-sdk: the [rerun] extra, installed by tools/setup.sh (a missing one fails, it is not skipped)
import rerun as rr
import rerun.chunk  # noqa: F401 (the reader API the tests use)
from helpers.runlogs import record_demo_run

from robot_rt.control.runlog import read_runlog
from robot_rt.logs.export_rerun import export_rerun


@pytest.fixture(scope="module")
def run_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("rerun") / "run.rrlog"
    record_demo_run(path)
    return read_runlog(path)


def _store_rows(store) -> tuple[dict, dict]:
    rows, batches = {}, {}
    for chunk in store.stream():
        rows[chunk.entity_path] = rows.get(chunk.entity_path, 0) + chunk.num_rows
        batches.setdefault(chunk.entity_path, []).append(chunk.to_record_batch())
    return rows, batches


def _column(batches, name) -> list:
    out = []
    for batch in batches:
        if name in batch.schema.names:
            out += [v for v in batch.column(name).to_pylist() if v is not None]
    return out


def test_rrd_written_and_read_back(run_log, tmp_path):
    out = tmp_path / "run.rrd"
    result = export_rerun(run_log, out)
    assert out.stat().st_size > 10_000
    n_ticks, n_events = len(run_log.ticks), len(run_log.events)
    rows, batches = _store_rows(rr.chunk.RrdReader(out).stream().collect())
    for entity, count in result["counts"].items():
        assert rows["/" + entity] == count, entity
    names = run_log.meta["joint_names"]
    assert rows[f"/joints/{names[3]}/measured"] == n_ticks
    assert (
        rows["/world/paddle"] == n_ticks and rows["/world/ball"] == len(run_log.balls) and rows["/events"] == n_events
    )
    # values exact, in tick order
    for kind, field in (
        ("measured", "measured_position"),
        ("command", "command_position"),
        ("target", "target_position"),
    ):
        series = batches[f"/joints/{names[3]}/{kind}"]
        ticks = _column(series, "tick")
        values = [v[0] for v in _column(series, "Scalars:scalars")]
        order = np.argsort(ticks)
        assert np.asarray(ticks)[order].tolist() == run_log.ticks["tick"].tolist()
        np.testing.assert_array_equal(np.asarray(values)[order], run_log.ticks[field][:, 3])
    texts = [t[0] for t in _column(batches["/events"], "TextLog:text")]
    assert any(t.startswith("estop") for t in texts) and any(t.startswith("non_finite_command") for t in texts)
    balls = np.array([p[0] for p in _column(batches["/world/ball"], "Points3D:positions")])
    # Rerun stores 3-D positions as float32 (scalar series as float64)
    expected = run_log.balls["position_m"].astype(np.float32)
    np.testing.assert_array_equal(balls[np.argsort(balls[:, 0])], expected[np.argsort(expected[:, 0])])


def test_replay_cli_rerun(run_log, tmp_path, capsys):
    from robot_rt.cli import main

    out = tmp_path / "cli.rrd"
    assert main(["replay", run_log.path, "--rerun", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(out) and out.stat().st_size > 0


def test_rerun_mcap_reader_decodes_our_mcap(run_log, tmp_path):
    """An independent MCAP reader (rerun's, in Rust) that knows the Foxglove well-known schemas and ROS 2 messages
    turns /tf into transforms, /log into text log lines and /joint_states into joint series."""
    pytest.importorskip("mcap")
    pytest.importorskip("foxglove_schemas_protobuf")
    from robot_rt.logs.export_mcap import export_mcap

    path = tmp_path / "run.mcap"
    export_mcap(run_log, path)
    reader = rr.chunk.McapReader(path)
    info = reader.info()
    assert {c.topic: c.message_count for c in info.channels}["/tf"] == len(run_log.ticks)
    rows, batches = _store_rows(reader.stream().collect())
    n_ticks = len(run_log.ticks)
    translations = _column(batches["/tf"], "Transform3D:translation")
    assert len(translations) == 2 * n_ticks  # paddle and paddle_command per tick
    children = [
        c
        for row in _column(batches["/tf"], "Transform3D:child_frame")
        for c in (row if isinstance(row, list) else [row])
    ]
    assert {"paddle", "paddle_command"} <= set(children)
    assert len(_column(batches["/log"], "TextLog:text")) == len(run_log.events)
    assert rows["/joint_states/position"] == n_ticks
