"""Run log -> MCAP (robot_rt.logs.export_mcap, docs/mcap.md): read back with the mcap package, every channel, message
counts equal to the run log's records, values round-trip exactly, times mapped to Unix time from the meta, schemas
valid (ROS 2 message definitions parse and decode, the Foxglove schemas are Foxglove's own compiled descriptors, the
JSON messages validate against their JSON Schemas)."""

from __future__ import annotations

import dataclasses
import json

# mcap, mcap-ros2-support, mcap-protobuf-support, foxglove-schemas-protobuf and jsonschema are test dependencies
# (tools/setup.sh installs them): a missing one fails, it is not skipped
import jsonschema
import mcap.reader as mcap_reader
import numpy as np
import pytest
from helpers.runlogs import record_demo_run
from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoderFactory
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory

from robot_rt.control.runlog import read_runlog
from robot_rt.logs.export_mcap import (
    BALL_DETECTION_SCHEMA,
    BALL_PREDICTION_SCHEMA,
    DEFAULT_HIT_PLANE_X_M,
    LOOP_EVENT_SCHEMA,
    LOOP_TICK_SCHEMA,
    TOPICS,
    event_level,
    export_mcap,
    from_json_number,
    predict_balls,
    rotation_to_quaternion,
    time_offset_ns,
)
from robot_rt.robot import load_robot
from robot_rt.robot.kinematics import forward_kinematics


@pytest.fixture(scope="module")
def run_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("mcap") / "run.rrlog"
    record_demo_run(path)
    log = read_runlog(path)
    assert log.clean and len(log.ticks) > 100 and len(log.balls) == 5
    return log


class JsonDecoderFactory:
    """mcap decoder factory for JSON-encoded channels."""

    def decoder_for(self, message_encoding, schema):
        return json.loads if message_encoding == "json" else None


def _decoded(path):
    with open(path, "rb") as f:
        factories = [Ros2DecoderFactory(), ProtobufDecoderFactory(), JsonDecoderFactory()]
        reader = mcap_reader.make_reader(f, decoder_factories=factories)
        by_topic: dict[str, list] = {}
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            by_topic.setdefault(channel.topic, []).append((schema, channel, message, decoded))
    return by_topic


def _json_messages(path):
    by_topic: dict[str, list] = {}
    with open(path, "rb") as f:
        for schema, channel, message in mcap_reader.make_reader(f).iter_messages(log_time_order=False):
            if channel.message_encoding == "json":
                by_topic.setdefault(channel.topic, []).append((schema, message, json.loads(message.data)))
    return by_topic


@pytest.fixture(scope="module")
def exported(run_log, tmp_path_factory):
    path = tmp_path_factory.mktemp("mcap_out") / "run.mcap"
    result = export_mcap(run_log, path)
    return run_log, path, result


def test_every_channel_and_counts_equal_the_log_records(exported):
    log, path, result = exported
    n_ticks, n_balls, n_events = len(log.ticks), len(log.balls), len(log.events)
    expected = {
        "/joint_states": n_ticks,
        "/joint_commands": n_ticks,
        "/joint_targets": n_ticks,
        "/loop/timing": n_ticks,
        "/tf": n_ticks,
        "/ball/detections": n_balls,
        "/ball/scene": n_balls,
        "/ball/predictions": 0,  # the demo's five detections 1 ns apart are no ballistic track
        "/ball/prediction_scene": 0,
        "/events": n_events,
        "/log": n_events,
        "/scene/static": 1,
    }
    assert set(TOPICS) == set(expected)
    assert result.counts == expected
    with open(path, "rb") as f:
        reader = mcap_reader.make_reader(f, validate_crcs=True)
        summary = reader.get_summary()
        counted = {summary.channels[cid].topic: n for cid, n in summary.statistics.channel_message_counts.items()}
        assert counted == {topic: n for topic, n in expected.items() if n}
        assert {channel.topic for channel in summary.channels.values()} == set(expected)
        assert summary.statistics.message_count == sum(expected.values())
        schemas = {
            summary.channels[cid].topic: summary.schemas[summary.channels[cid].schema_id] for cid in summary.channels
        }
        metadata = list(reader.iter_metadata())
    encodings = {topic: (s.name, s.encoding) for topic, s in schemas.items()}
    assert encodings == {
        "/joint_states": ("sensor_msgs/msg/JointState", "ros2msg"),
        "/joint_commands": ("trajectory_msgs/msg/JointTrajectory", "ros2msg"),
        "/joint_targets": ("sensor_msgs/msg/JointState", "ros2msg"),
        "/loop/timing": ("robot_rt.LoopTick", "jsonschema"),
        "/tf": ("foxglove.FrameTransforms", "protobuf"),
        "/ball/detections": ("robot_rt.BallDetection", "jsonschema"),
        "/ball/scene": ("foxglove.SceneUpdate", "protobuf"),
        "/ball/predictions": ("robot_rt.BallPrediction", "jsonschema"),
        "/ball/prediction_scene": ("foxglove.SceneUpdate", "protobuf"),
        "/events": ("robot_rt.LoopEvent", "jsonschema"),
        "/log": ("foxglove.Log", "protobuf"),
        "/scene/static": ("foxglove.SceneUpdate", "protobuf"),
    }
    assert [m.name for m in metadata] == ["robot_rt.run_meta"]
    assert json.loads(metadata[0].metadata["joint_names"]) == log.meta["joint_names"]


def test_joint_channels_round_trip_exactly(exported):
    log, path, _ = exported
    msgs = _decoded(path)
    ticks = log.ticks
    offset = time_offset_ns(log.meta)
    states = msgs["/joint_states"]
    assert [m.sequence for _, _, m, _ in states] == ticks["tick"].tolist()
    log_times = np.array([m.log_time for _, _, m, _ in states], dtype=np.int64)
    np.testing.assert_array_equal(log_times, ticks["wake_ns"].astype(np.int64) + offset)
    stamps = np.array([d.header.stamp.sec * 10**9 + d.header.stamp.nanosec for *_, d in states], dtype=np.int64)
    np.testing.assert_array_equal(stamps, log_times)
    assert list(states[0][3].name) == log.meta["joint_names"]
    np.testing.assert_array_equal(np.array([d.position for *_, d in states]), ticks["measured_position"])
    np.testing.assert_array_equal(np.array([d.velocity for *_, d in states]), ticks["measured_velocity"])
    commands = [d.points[0] for *_, d in msgs["/joint_commands"]]
    np.testing.assert_array_equal(np.array([p.positions for p in commands]), ticks["command_position"])
    np.testing.assert_array_equal(np.array([p.velocities for p in commands]), ticks["command_velocity"])
    np.testing.assert_array_equal(np.array([p.accelerations for p in commands]), ticks["command_acceleration"])
    targets = msgs["/joint_targets"]
    np.testing.assert_array_equal(np.array([d.position for *_, d in targets]), ticks["target_position"])
    assert all(len(d.velocity) == 0 for *_, d in targets)


def test_timing_balls_and_events_round_trip_exactly(exported):
    log, path, _ = exported
    msgs = _json_messages(path)
    offset = time_offset_ns(log.meta)
    timing = [d for *_, d in msgs["/loop/timing"]]
    for name in ("tick", "deadline_ns", "wake_ns", "done_ns", "flags"):
        assert [t[name] for t in timing] == log.ticks[name].tolist()
    stop_mask = log.meta["tick_flags"]["stopping"]
    assert [("stopping" in t["flag_names"]) for t in timing] == [bool(f & stop_mask) for f in log.ticks["flags"]]
    assert any("estop" in t["flag_names"] for t in timing)

    balls = msgs["/ball/detections"]
    for (_, message, d), b in zip(balls, log.balls, strict=True):
        assert d["stamp_ns"] == int(b["stamp_ns"]) and message.log_time == int(b["stamp_ns"]) + offset
        assert (d["tick"], d["camera_id"], d["frame"]) == (int(b["tick"]), int(b["camera_id"]), int(b["frame"]))
        assert [d["position"][k] for k in "xyz"] == b["position_m"].tolist()
        assert d["confidence"] == float(b["confidence"])

    events = msgs["/events"]
    names = {v: k for k, v in log.event_names.items()}
    assert [d["code"] for *_, d in events] == log.events["code"].tolist()
    assert [d["tick"] for *_, d in events] == log.events["tick"].tolist()
    assert [d["joint"] for *_, d in events] == log.events["joint"].tolist()
    values = np.array([from_json_number(d["value"]) for *_, d in events])
    np.testing.assert_array_equal(values, log.events["value"])  # NaN == NaN here
    assert np.isnan(values).any()  # the NaN target's event value survives as "NaN"
    assert [m.log_time for _, m, _ in events] == (log.events["stamp_ns"].astype(np.int64) + offset).tolist()
    by_name = {d["name"]: d for *_, d in events}
    assert {"loop_start", "loop_stop", "estop", "non_finite_command", "udp_lost"} <= set(by_name)
    assert by_name["estop"]["level"] == "ERROR" and by_name["loop_start"]["level"] == "INFO"
    assert by_name["udp_lost"]["value"] == 3.0 and by_name["udp_lost"]["level"] == "WARNING"
    assert all(d["name"] == names.get(d["code"], d["name"]) for *_, d in events)


def test_json_messages_validate_against_their_schemas(exported):
    _, path, _ = exported
    for items in _json_messages(path).values():
        schema = json.loads(items[0][0].data)
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        for _, _, d in items:
            validator.validate(d)
    for schema in (LOOP_TICK_SCHEMA, BALL_DETECTION_SCHEMA, LOOP_EVENT_SCHEMA, BALL_PREDICTION_SCHEMA):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"tick": "one"}, schema)


def test_foxglove_channels_use_foxglove_schemas_and_poses_match_fk(exported):
    from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
    from foxglove_schemas_protobuf.Log_pb2 import Log
    from google.protobuf.descriptor_pb2 import FileDescriptorSet

    log, path, _ = exported
    msgs = _decoded(path)
    schema = msgs["/tf"][0][0]
    files = FileDescriptorSet.FromString(schema.data)
    assert "foxglove/FrameTransforms.proto" in [f.name for f in files.file]
    own = FileDescriptorSet()
    FrameTransforms.DESCRIPTOR.file.CopyToProto(own.file.add())
    assert own.file[0] in list(files.file)  # Foxglove's own descriptor, not a look-alike

    robot = load_robot()
    measured = forward_kinematics(robot, log.ticks["measured_position"])
    commanded = forward_kinematics(robot, log.ticks["command_position"])
    for k, (*_, d) in enumerate(msgs["/tf"]):
        tfs = {t.child_frame_id: t for t in d.transforms}
        assert set(tfs) == {"paddle", "paddle_command"}
        for child, poses in (("paddle", measured), ("paddle_command", commanded)):
            t = tfs[child]
            assert t.parent_frame_id == "table"
            assert [t.translation.x, t.translation.y, t.translation.z] == poses[k, :3, 3].tolist()
            x, y, z, w = t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w
            rot = np.array(
                [
                    [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
                ]
            )
            np.testing.assert_allclose(rot, poses[k, :3, :3], atol=1e-12)
    scenes = msgs["/ball/scene"]
    for (*_, d), b in zip(scenes, log.balls, strict=True):
        sphere = d.entities[0].spheres[0]
        assert [sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z] == b["position_m"].tolist()
    logs = [d for *_, d in msgs["/log"]]
    assert [entry.level for entry in logs].count(Log.ERROR) >= 1
    assert any(entry.message.startswith("non_finite_command") for entry in logs)
    static = msgs["/scene/static"][0][3]
    assert {e.id for e in static.entities} == {"table", "net", "workspace", "paddle", "paddle_command"}


@pytest.fixture(scope="module")
def flight(run_log, tmp_path_factory):
    """The demo log with its detections replaced by a simulated camera's view of one incoming ball (noise, drops,
    outliers, clutter, out-of-order arrival: robot_rt.estimation.SimulatedTracker), exported."""
    from robot_rt.control.runlog import BALL_DTYPE
    from robot_rt.estimation import ServeGenerator, SimulatedTracker

    serve = ServeGenerator(seed=3, x_plane_m=DEFAULT_HIT_PLANE_X_M).sample(1)[0]
    detections = SimulatedTracker(seed=1).observe(serve)
    balls = np.zeros(len(detections), BALL_DTYPE)
    serve_ns = int(run_log.ticks["wake_ns"][0])
    balls["stamp_ns"] = serve_ns + np.round(detections.t_capture_s * 1e9).astype(np.int64)
    balls["position_m"] = detections.position_m
    balls["confidence"] = 0.9
    balls["frame"] = np.arange(len(balls))
    log = dataclasses.replace(run_log, balls=balls)
    path = tmp_path_factory.mktemp("mcap_flight") / "flight.mcap"
    return log, path, export_mcap(log, path), serve, serve_ns


def test_ball_predictions_converge_on_the_true_crossing(flight):
    """/ball/predictions: one message per detection after the estimator has a track; its predicted crossing of the
    hitting plane converges on the true one (the last ten predictions: within 3 cm and 5 ms; measured 0.1-1.1 cm,
    0.4-1.9 ms), and each path drawn in /ball/prediction_scene ends at its crossing."""
    log, path, result, serve, serve_ns = flight
    predictions = predict_balls(log.balls)
    m = len(predictions.detection_index)
    assert len(log.balls) * 0.8 < m <= len(log.balls)  # the UKF needs a few detections to start a track
    assert result.counts["/ball/predictions"] == result.counts["/ball/prediction_scene"] == m
    assert not any("no ball predictions" in note for note in result.notes)
    msgs = _json_messages(path)["/ball/predictions"]
    validator = jsonschema.Draft202012Validator(BALL_PREDICTION_SCHEMA)
    offset = time_offset_ns(log.meta)
    for i, (_, message, d) in enumerate(msgs):
        validator.validate(d)
        k = d["detection_index"]
        assert k == predictions.detection_index[i] and message.log_time == int(log.balls[k]["stamp_ns"]) + offset
        assert d["status"] == predictions.status[i] and d["hit_plane_x_m"] == DEFAULT_HIT_PLANE_X_M
    crossings = [d["crossing"] for *_, d in msgs if d["crossing"] is not None]
    assert len(crossings) >= m // 2
    true_ns = serve_ns + serve.crossing_t_s * 1e9
    for c in crossings[-10:]:
        yz = np.array([c["position"]["y"], c["position"]["z"]])
        assert np.linalg.norm(yz - serve.crossing_state[1:3]) < 0.03, (yz, serve.crossing_state[:3])
        assert abs(c["stamp_ns"] - true_ns) < 5e6
        assert c["position"]["x"] == pytest.approx(DEFAULT_HIT_PLANE_X_M, abs=1e-6)
    errors = [np.linalg.norm([c["position"]["y"], c["position"]["z"]] - serve.crossing_state[1:3]) for c in crossings]
    assert errors[0] > errors[-1]  # the estimate improves as the ball comes closer (first: 10 cm, measured)

    scenes = _decoded(path)["/ball/prediction_scene"]
    with_crossing = [i for i in range(m) if predictions.crossing_stamp_ns[i] >= 0]
    i = with_crossing[len(with_crossing) // 2]
    entity = scenes[i][3].entities[0]
    points = np.array([[p.x, p.y, p.z] for p in entity.lines[0].points])
    np.testing.assert_array_equal(points, predictions.path[i][np.isfinite(predictions.path[i, :, 0])])
    assert points[-1, 0] <= DEFAULT_HIT_PLANE_X_M < points[-1, 0] + 0.2  # ends at the plane (10 ms steps)
    sphere = entity.spheres[0].pose.position
    assert [sphere.x, sphere.y, sphere.z] == predictions.crossing_state[i, :3].tolist()


def test_predict_balls_refuses_a_non_finite_plane(run_log):
    with pytest.raises(ValueError, match="hit_plane_x_m"):
        predict_balls(run_log.balls, float("nan"))


@pytest.mark.parametrize("seed", range(3))
def test_rotation_to_quaternion_matches_random_rotations(seed):
    from scipy.spatial.transform import Rotation

    rots = Rotation.random(500, random_state=seed)
    q = rotation_to_quaternion(rots.as_matrix())
    back = Rotation.from_quat(q).as_matrix()  # scipy: (x, y, z, w)
    np.testing.assert_allclose(back, rots.as_matrix(), atol=1e-12)
    # the identity and half turns (trace -1) take the other branches
    special = np.stack([np.eye(3), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])])
    np.testing.assert_allclose(Rotation.from_quat(rotation_to_quaternion(special)).as_matrix(), special, atol=1e-15)


def test_event_levels():
    assert event_level("estop", 10) == "ERROR"
    assert event_level("robot_fault_stop", 40) == "ERROR"
    assert event_level("watchdog_stop", 7) == "WARNING"
    assert event_level("loop_start", 1) == "INFO"
    assert event_level("sensor_recovered", 14) == "INFO"


def test_log_without_wall_clock_meta_is_refused(tmp_path):
    with pytest.raises(ValueError, match="wall_time_unix_s"):
        time_offset_ns({"dof": 8})


def test_replay_cli_exports_mcap(exported, tmp_path, capsys):
    from robot_rt.cli import main

    log, _, result = exported
    out = tmp_path / "cli.mcap"
    assert main(["replay", log.path, "--export", "mcap", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"] == result.counts and out.stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temp file left


def test_run_cli_writes_mcap_beside_the_log(tmp_path, capsys):
    from robot_rt.cli import main

    log_path = tmp_path / "cli_run.rrlog"
    args = ["run", "--robot", "sim", "--duration", "0.3", "--log", str(log_path), "--mcap", "--no-status"]
    args += ["--summary", str(tmp_path / "summary.json")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mcap"]["path"] == str(log_path.with_suffix(".mcap"))
    log = read_runlog(log_path)
    assert summary["mcap"]["counts"]["/joint_states"] == len(log.ticks) > 0
    assert summary["mcap"]["counts"]["/events"] == len(log.events)


def test_replay_export_of_a_missing_log_exits_2(tmp_path):
    from robot_rt.cli import main

    assert main(["replay", str(tmp_path / "nope.rrlog"), "--export", "mcap"]) == 2


def _run_with_a_failing_export(tmp_path, monkeypatch, error: Exception):
    """(`robot-rt run --robot sim --mcap ...` argv without a policy or duration, its summary path) with the MCAP export
    raising `error`."""
    import robot_rt.logs.export_mcap as export_module

    def failing_export(*args, **kwargs):
        raise error

    monkeypatch.setattr(export_module, "export_mcap", failing_export)
    summary_path = tmp_path / "summary.json"
    argv = ["run", "--robot", "sim", "--log", str(tmp_path / "run.rrlog"), "--mcap", "--no-status"]
    argv += ["--recover", "never", "--summary", str(summary_path), "--rate", "500"]
    return argv, summary_path


def test_a_failed_export_keeps_the_stop_exit_code_and_the_summary(tmp_path, monkeypatch):
    """A failed `run --mcap` export is reported in the summary and never hides how the run ended: a protective stop
    still exits 3 and the summary is written (the audit: the export's 2 replaced it, and no summary was written)."""
    from robot_rt.cli import main

    base, summary_path = _run_with_a_failing_export(tmp_path, monkeypatch, OSError("disk full"))
    base += ["--duration", "1.5"]
    rc = main([*base, "--policy", "helpers.stalling_policy:stall", "--command-timeout", "0.05"])
    summary = json.loads(summary_path.read_text())
    assert rc == 3 == summary["exit_code"]
    assert "watchdog" in summary["stop_reasons"]
    assert summary["after_run_failed"] == ["export_mcap_after_run"] and "mcap" not in summary
    # a run that ended cleanly exits with the export's failure
    summary_path.unlink()
    assert main([*base, "--policy", "robot_rt.control.policies:hold"]) == 2
    summary = json.loads(summary_path.read_text())
    assert summary["exit_code"] == 0 and summary["after_run_failed"] == ["export_mcap_after_run"]


def test_an_after_run_step_that_raises_is_a_failed_step(tmp_path, monkeypatch):
    """Whatever an after-run step raises (here a RuntimeError the export does not catch), the run's summary is written
    and the process exits 2 on a clean run, naming the step."""
    from robot_rt.cli import main

    argv, summary_path = _run_with_a_failing_export(tmp_path, monkeypatch, RuntimeError("unexpected"))
    assert main([*argv, "--duration", "0.3", "--policy", "robot_rt.control.policies:hold"]) == 2
    summary = json.loads(summary_path.read_text())
    assert summary["exit_code"] == 0 and summary["after_run_failed"] == ["export_mcap_after_run"]
