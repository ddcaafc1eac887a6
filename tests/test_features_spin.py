"""FeatureExtractor(spin=True): the incoming ball's spin, estimated from its flight before the bounce."""

import numpy as np
import pytest

from robot_rt.envs.features import FEATURE_DIM, SPIN_FEATURE_NAMES, SPIN_SCALE_RADPS, FeatureExtractor, feature_dim
from robot_rt.envs.scripted import BatchedScriptedPolicy
from robot_rt.envs.vector import TableTennisGoalVectorEnv


def play(n: int, seed: int, steps: int):
    """Feature rows of both extractors, the true ball states and the spin columns' history over `steps` steps."""
    env = TableTennisGoalVectorEnv(n, max_episode_steps=400)
    obs, _ = env.reset(seed=[seed * 1000 + i for i in range(n)])
    policy = BatchedScriptedPolicy(n)
    plain, spun = FeatureExtractor(n), FeatureExtractor(n, spin=True)
    rows_plain, rows_spin, balls = [], [], []
    for _ in range(steps):
        balls.append(env.world.ball.copy())
        rows_plain.append(plain(obs))
        rows_spin.append(spun(obs))
        obs, *_ = env.step(policy(obs))
    env.close()
    return np.array(rows_plain), np.array(rows_spin), np.array(balls), spun


def test_spin_columns_are_appended_and_leave_the_other_features_unchanged():
    plain, spun, _, extractor = play(8, 1, 40)
    assert feature_dim(True) == FEATURE_DIM + len(SPIN_FEATURE_NAMES) == spun.shape[-1] == extractor.dim
    np.testing.assert_array_equal(spun[..., :FEATURE_DIM], plain)


def test_spin_estimate_tracks_the_true_spin_before_the_bounce_and_is_held_after_it():
    n = 96
    _, spun, balls, _ = play(n, 2, 70)
    spin = spun[..., FEATURE_DIM : FEATURE_DIM + 3] * SPIN_SCALE_RADPS
    valid = spun[..., FEATURE_DIM + 3] > 0.5
    assert valid[-1].mean() > 0.9, "most serves get an estimate before they bounce"
    # the serve's spin before its bounce on the robot's half (constant up to the slow aerodynamic decay)
    true = balls[0, :, 6:9]
    final = spin[-1]
    ok = valid[-1]
    for axis in (1, 2):  # wy, wz: across the flight (wx lies nearly along the velocity: it bends nothing)
        r = np.corrcoef(final[ok, axis], true[ok, axis])[0, 1]
        assert r > 0.6, f"axis {axis}: correlation {r:.2f}"
    # once the ball is past the estimate's x limit the value is held
    past = balls[:, :, 0] > 0.5
    for i in range(n):
        steps = np.nonzero(past[:, i] & valid[:, i])[0]
        if steps.size > 1:
            assert np.all(spin[steps, i] == spin[steps[0], i])


def test_reset_clears_the_estimate_of_the_masked_environments_only():
    _, _, _, extractor = play(4, 3, 50)
    before = extractor.spin_estimate.copy()
    assert extractor.spin_valid.any()
    mask = np.array([True, False, False, False])
    extractor.reset(mask)
    assert not extractor.spin_valid[0] and np.all(extractor.spin_estimate[0] == 0)
    np.testing.assert_array_equal(extractor.spin_estimate[1:], before[1:])


def test_spin_flag_must_be_a_bool():
    with pytest.raises(TypeError, match="spin"):
        FeatureExtractor(2, spin=1)


def test_goalseye_records_the_spin_columns_and_sizes_its_policy_for_them():
    from robot_rt.learning import goalseye

    config = dict(goalseye.DEFAULTS, max_episode_steps=200, spin_features=True, hidden=[16])
    env = goalseye.make_env(4, config)
    seeds, aims = goalseye.episode_plan(7, goalseye.STREAM_PLAY, 0, 4, goalseye.PLAY_LOW, goalseye.PLAY_HIGH)
    agent = goalseye.ScriptedAgent(4, 0.05, 1.0)
    with_spin = goalseye.run_episodes(env, agent, seeds, aims, record=True, spin_features=True)
    without = goalseye.run_episodes(
        goalseye.make_env(4, config), goalseye.ScriptedAgent(4, 0.05, 1.0), seeds, aims, record=True
    )
    for e, f in zip(with_spin, without):
        assert e.features.shape == (e.length, feature_dim(True))
        np.testing.assert_array_equal(e.features[:, :FEATURE_DIM], f.features)  # same episodes otherwise
        assert e.features[-1, FEATURE_DIM + 3] == 1.0  # an estimate was made before the bounce
    trainer = goalseye.Trainer(config, seed=0)
    assert trainer.model.feat_dim == feature_dim(True) == trainer.model.net[0].in_features - trainer.model.goal_dim
