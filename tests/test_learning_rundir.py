import json

import numpy as np
import pytest

from robot_rt.learning.rundir import RunDir, read_log


def test_rundir_config_checkpoint_log_roundtrip(tmp_path):
    run = RunDir(tmp_path / "r", {"seed": 1, "episodes": 10})
    run.log(stage="play", episodes=np.int64(3), curve=np.arange(2))
    run.save_checkpoint("round_0", {"step": 0, "weights": [1.0, 2.0]})
    run.save_checkpoint("round_1", {"step": 1})
    assert run.load_checkpoint()["step"] == 1
    assert run.load_checkpoint("round_0")["weights"] == [1.0, 2.0]
    assert run.read_log()[0]["episodes"] == 3 and run.read_log()[0]["curve"] == [0, 1]
    with pytest.raises(FileExistsError, match="--resume"):
        RunDir(tmp_path / "r", {"seed": 1, "episodes": 10})
    with pytest.raises(ValueError, match="episodes"):
        RunDir(tmp_path / "r", {"seed": 1, "episodes": 11}, resume=True)
    again = RunDir(tmp_path / "r", {"seed": 1, "episodes": 10}, resume=True)
    assert again.load_checkpoint()["step"] == 1
    assert not list((tmp_path / "r" / "checkpoints").glob("*.tmp"))


def test_read_log_skips_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n" + '{"a": 2, "b"')
    assert read_log(path) == [{"a": 1}]


def test_missing_checkpoint_is_named(tmp_path):
    run = RunDir(tmp_path / "r", {})
    assert run.load_checkpoint() is None
    with pytest.raises(FileNotFoundError, match="nope"):
        run.load_checkpoint("nope")


class _RunsCodeWhenUnpickled:
    """What a tampered checkpoint would hold: unpickling it calls a function of the attacker's choice."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_keeps_numpy_state_and_runs_no_code_from_the_file(tmp_path):
    import pickle

    import torch

    run = RunDir(tmp_path / "r", {})
    rng = np.random.default_rng(3)
    state = {"obs_mean": np.arange(4.0), "counts": np.arange(3, dtype=np.int64), "rng": rng.bit_generator.state}
    state["weights"] = torch.ones(2)
    run.save_checkpoint("ok", state)
    back = run.load_checkpoint("ok")
    np.testing.assert_array_equal(back["obs_mean"], state["obs_mean"])
    assert back["counts"].dtype == np.int64 and back["rng"] == state["rng"]
    assert torch.equal(back["weights"], state["weights"])

    marker = tmp_path / "code_ran"
    torch.save({"step": 1, "payload": _RunsCodeWhenUnpickled(marker)}, run.path / "checkpoints" / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="open"):
        run.load_checkpoint("evil")
    assert not marker.exists()
