"""HumanBehaviorModel: valid samples, determinism, save/load, fit from noisy tracks, return model, errors."""

import json

import numpy as np
import pytest

from robot_rt.ballistics import simulate, simulate_batch
from robot_rt.envs import HumanBehaviorModel, ReturnModel


@pytest.fixture(scope="module")
def real():
    return HumanBehaviorModel.real_player()


def test_samples_land_on_the_robot_half_after_clearing_the_net():
    model = HumanBehaviorModel.default()
    states = model.sample(64, np.random.default_rng(0))
    assert states.shape == (64, 9)
    np.testing.assert_allclose(states[:, 0], model.launch_x_m)
    out = simulate_batch(states, 1.5, 1e-3, backend="numpy", max_events=1)
    first = np.asarray(out.event_state)[:, 0]
    assert np.all(np.asarray(out.event_kind)[:, 0] == 1)  # the table, not the net or the floor
    assert np.all((first[:, 0] > 0) & (first[:, 0] < 1.37) & (np.abs(first[:, 1]) < 0.7625))


def test_sampling_is_seeded_and_models_differ(real):
    default = HumanBehaviorModel.default()
    a = default.sample(32, np.random.default_rng(5))
    b = default.sample(32, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    c = real.sample(200, np.random.default_rng(5))
    d = default.sample(200, np.random.default_rng(6))
    # the 'real player' hits harder with more topspin: a clear gap in the sample means
    assert c[:, 3].mean() - d[:, 3].mean() > 0.5
    assert c[:, 7].mean() - d[:, 7].mean() > 30


def test_save_load_roundtrip(tmp_path, real):
    path = real.save(tmp_path / "player.json")
    loaded = HumanBehaviorModel.load(path)
    np.testing.assert_allclose(loaded.mean, real.mean)
    np.testing.assert_allclose(loaded.cov, real.cov)
    assert loaded.returns == real.returns
    np.testing.assert_array_equal(loaded.sample(8, np.random.default_rng(1)), real.sample(8, np.random.default_rng(1)))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_fit_recovers_the_player_from_noisy_tracks(real):
    rng = np.random.default_rng(3)
    truth = real.sample(14, rng)
    tracks = []
    for state in truth:
        traj = simulate(state, 0.6, 1e-3)
        idx = np.arange(0, len(traj.t_s), 5)  # 200 Hz cameras
        noisy = traj.states[idx, :3] + rng.normal(0.0, 0.005, (len(idx), 3))
        tracks.append((traj.t_s[idx] + 10.0, noisy))
    fitted = HumanBehaviorModel.fit(tracks, name="fitted", noise_sigma_m=0.005)
    used = [r for r in fitted.fit_report if r["used"]]
    assert len(used) == len(truth)
    assert all(r["rms_m"] < 0.01 for r in used)
    err = np.abs(fitted.fitted_states - truth)
    assert np.all(err[:, 1:3].mean(axis=0) < 0.01)  # launch y, z within 1 cm
    assert np.all(err[:, 3:6].mean(axis=0) < 0.1)  # launch velocity within 0.1 m/s
    assert err[:, 7].mean() < 25 and err[:, 8].mean() < 25  # top/side spin: observable through Magnus
    # the fitted model tells this player apart from the default one
    default = HumanBehaviorModel.default()
    assert abs(fitted.mean[7] - real.mean[7]) < abs(fitted.mean[7] - default.mean[7])
    assert fitted.log_density(truth).mean() > default.log_density(truth).mean()


def test_return_model_prefers_balls_within_reach():
    model = ReturnModel()
    centre = np.array([-1.7, 0.0, 1.05, -6.0, 0.0, 0.0, 0, 0, 0])
    wide = centre.copy()
    wide[1] = 1.5
    fast = centre.copy()
    fast[3] = -14.0
    p = model.return_probability(np.stack([centre, wide, fast]))
    assert p[0] > 0.9 and p[1] < 0.2 and p[2] < 0.1
    human = HumanBehaviorModel.default()
    rng = np.random.default_rng(0)
    answers = [human.sample_return(centre, rng) for _ in range(20)]
    assert sum(a is not None for a in answers) >= 14
    assert all(human.is_valid(a[None])[0] for a in answers if a is not None)
    assert all(
        human.sample_return(wide * [1, 1, 1, 1, 1, 1, 1, 1, 1] + [0, 2.0, 0, 0, 0, 0, 0, 0, 0], rng) is None
        for _ in range(5)
    )


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="mean"):
        HumanBehaviorModel(name="x", mean=np.zeros(8), cov=np.eye(9))
    with pytest.raises(ValueError, match="cov"):
        HumanBehaviorModel(name="x", mean=HumanBehaviorModel.default().mean, cov=-np.eye(9))
    with pytest.raises(ValueError, match="launch x"):
        HumanBehaviorModel(name="x", mean=[0.0, 0, 1, 6, 0, 1, 0, 0, 0], cov=np.eye(9))
    with pytest.raises(FileNotFoundError, match="path"):
        HumanBehaviorModel.load(tmp_path / "none.json")
    bad = HumanBehaviorModel.default().to_dict()
    bad["format_version"] = 7
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="format_version"):
        HumanBehaviorModel.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"tracks\[0\]"):
        HumanBehaviorModel.fit([(np.arange(3.0), np.zeros((4, 3)))])
    with pytest.raises(ValueError, match="NaN"):
        HumanBehaviorModel.fit([(np.arange(3.0), np.full((3, 3), np.nan))])
    with pytest.raises(ValueError, match="n:"):
        HumanBehaviorModel.default().sample(-1, np.random.default_rng())
