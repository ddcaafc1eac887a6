import json

import numpy as np
import pytest

from robot_rt.learning import dataset as ds
from robot_rt.learning.dataset import EpisodeBatch, EpisodeDataset, relabel


def make_batch(rng, lengths, landed=None, obs_dim=5, feat_dim=4, act_dim=3):
    lengths = np.asarray(lengths)
    t = int(lengths.sum())
    e = len(lengths)
    landed = rng.random(e) < 0.6 if landed is None else np.asarray(landed)
    return EpisodeBatch(
        observations=rng.standard_normal((t, obs_dim)).astype(np.float32),
        features=rng.standard_normal((t, feat_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (t, act_dim)).astype(np.float32),
        episode_length=lengths,
        episode_seed=rng.integers(0, 1000, e),
        commanded_goal=rng.uniform(-1, 0, (e, 2)).astype(np.float32),
        landing_point=np.where(landed[:, None], rng.uniform(-1.3, 0, (e, 2)), 0.0).astype(np.float32),
        has_landed=landed,
    )


def assert_batches_equal(a: EpisodeBatch, b: EpisodeBatch):
    for name in (*ds.STEP_FIELDS, *ds.EPISODE_FIELDS):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_append_and_read_back(tmp_path):
    rng = np.random.default_rng(0)
    data = EpisodeDataset(tmp_path / "d")
    assert data.read() is None and len(data) == 0
    b1, b2 = make_batch(rng, [3, 5, 2]), make_batch(rng, [4, 1])
    e1 = data.append(b1, source="play-0")
    data.append(b2, source="round-1")
    assert e1["chunk"] == "chunk-000000.npz" and e1["n_episodes"] == 3 and e1["n_steps"] == 10
    assert len(data) == 5 and data.n_steps() == 15
    assert_batches_equal(data.read(), EpisodeBatch.concatenate([b1, b2]))
    assert_batches_equal(data.read(sources=("round-1",)), b2)
    # a fresh handle on the same directory sees the same committed data
    assert_batches_equal(EpisodeDataset(tmp_path / "d").read(), EpisodeBatch.concatenate([b1, b2]))
    np.testing.assert_array_equal(data.read().episode_index(), [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4])


def test_leftover_temp_file_and_orphan_chunk_are_ignored(tmp_path):
    rng = np.random.default_rng(1)
    data = EpisodeDataset(tmp_path)
    b1 = make_batch(rng, [2, 2])
    data.append(b1, source="play-0")
    # a crash inside the chunk write leaves a temp file; one after the rename but before the manifest line
    # leaves an unreferenced chunk: neither is part of the data set
    (tmp_path / ".chunk-000001.npz.abc123.tmp").write_bytes(b"half a chunk")
    (tmp_path / "chunk-000001.npz").write_bytes(b"complete but never committed")
    assert len(data) == 2
    assert_batches_equal(data.read(), b1)
    b2 = make_batch(rng, [3])
    data.append(b2, source="round-1")
    assert not list(tmp_path.glob("*.tmp"))
    assert [e["chunk"] for e in data.manifest()] == ["chunk-000000.npz", "chunk-000001.npz"]
    assert_batches_equal(data.read(), EpisodeBatch.concatenate([b1, b2]))


def test_torn_manifest_line_is_skipped_and_cut_before_the_next_append(tmp_path):
    rng = np.random.default_rng(2)
    data = EpisodeDataset(tmp_path)
    b1 = make_batch(rng, [2, 3])
    data.append(b1, source="play-0")
    with open(data.manifest_path, "a") as handle:
        handle.write('{"chunk": "chunk-000001.npz", "n_epis')  # power cut mid-line
    assert len(data) == 2
    b2 = make_batch(rng, [1, 1])
    data.append(b2, source="play-1")
    lines = data.manifest_path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["source"].startswith("play-") for line in lines)
    assert_batches_equal(data.read(), EpisodeBatch.concatenate([b1, b2]))


def test_failed_chunk_write_leaves_the_data_set_unchanged(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    data = EpisodeDataset(tmp_path)
    b1 = make_batch(rng, [2])
    data.append(b1, source="play-0")
    before = data.manifest_path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        data.append(make_batch(rng, [4]), source="play-1")
    monkeypatch.undo()
    assert data.manifest_path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
    assert_batches_equal(data.read(), b1)


def test_corrupted_or_missing_chunk_is_reported(tmp_path):
    rng = np.random.default_rng(4)
    data = EpisodeDataset(tmp_path)
    data.append(make_batch(rng, [2, 2]), source="play-0")
    path = tmp_path / "chunk-000000.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256"):
        data.read()
    path.unlink()
    with pytest.raises(FileNotFoundError, match="chunk-000000.npz"):
        data.read()


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda b: setattr(b, "episode_length", b.episode_length + 1), "sum"),
        (lambda b: setattr(b, "actions", b.actions[:-1]), "actions"),
        (lambda b: setattr(b, "landing_point", b.landing_point[:, :1]), "landing_point"),
        (lambda b: b.features.__setitem__((0, 0), np.nan), "features: contains NaN"),
        (lambda b: setattr(b, "episode_length", np.array([0, 4])), "at least one step"),
        (lambda b: setattr(b, "observations", b.observations.astype(str)), "observations"),
    ],
)
def test_schema_errors_name_the_field(tmp_path, change, match):
    batch = make_batch(np.random.default_rng(5), [2, 2])
    change(batch)
    with pytest.raises(ValueError, match=match):
        EpisodeDataset(tmp_path).append(batch, source="play-0")
    assert EpisodeDataset(tmp_path).manifest() == []


def test_dimension_mismatch_with_the_data_set_and_bad_arguments(tmp_path):
    rng = np.random.default_rng(6)
    data = EpisodeDataset(tmp_path / "d")
    data.append(make_batch(rng, [2]), source="play-0")
    with pytest.raises(ValueError, match="feat_dim"):
        data.append(make_batch(rng, [2], feat_dim=7), source="play-1")
    with pytest.raises(ValueError, match="source"):
        data.append(make_batch(rng, [2]), source="")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="path"):
        EpisodeDataset(tmp_path / "file")


def test_relabel_uses_the_achieved_landing_point_of_each_landed_episode():
    rng = np.random.default_rng(7)
    batch = make_batch(rng, [3, 2, 4, 1], landed=[True, False, True, True])
    f, g, a = relabel(batch)
    assert f.shape == (8, 4) and g.shape == (8, 2) and a.shape == (8, 3)
    keep = np.r_[0:3, 5:9, 9:10]  # the steps of episodes 0, 2, 3
    np.testing.assert_array_equal(f, batch.features[keep])
    np.testing.assert_array_equal(a, batch.actions[keep])
    expected = np.concatenate([np.repeat(batch.landing_point[[i]], n, 0) for i, n in ((0, 3), (2, 4), (3, 1))])
    np.testing.assert_array_equal(g, expected)
    # the commanded goal plays no part in the relabelled goal
    assert not np.allclose(g[:3], batch.commanded_goal[0])
    f_all, g_all, _ = relabel(batch, landed_only=False)
    assert f_all.shape[0] == batch.n_steps
