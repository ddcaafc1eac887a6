"""robot_rt/TableTennisAimGoal-v0 (robot_rt.envs.aim): one decision per ball, the scripted hitter's aim."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robot_rt.envs  # noqa: F401  (registers the env ids)
from robot_rt.envs.aim import AIM_FEATURES, TableTennisAimGoalEnv, TableTennisAimGoalVectorEnv
from robot_rt.envs.goals import NOT_LANDED
from robot_rt.envs.scripted import BatchedScriptedPolicy
from robot_rt.envs.vector import TableTennisGoalVectorEnv


def test_check_env_passes_without_warnings():
    env = gym.make("robot_rt/TableTennisAimGoal-v0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught if "render" not in str(w.message)] == []
    assert env.observation_space["observation"].shape == (len(AIM_FEATURES) + env.unwrapped.vector.world.robot.dof,)


def test_the_zero_action_is_the_scripted_controller_aiming_at_the_goal():
    """Step(0) from a seeded reset lands exactly where the scripted controller playing the goal env itself lands."""
    n, seed = 16, 11
    aim = TableTennisAimGoalVectorEnv(n)
    obs, _ = aim.reset(seed=seed)
    _, reward, terminated, truncated, info = aim.step(np.zeros((n, 2), np.float32))
    assert terminated.all() and not truncated.any()

    env = TableTennisGoalVectorEnv(n)
    policy = BatchedScriptedPolicy(n, config=env.world.config, estimate_spin=True)
    o, _ = env.reset(seed=seed)
    np.testing.assert_array_equal(o["desired_goal"], obs["desired_goal"])
    landing = np.full((n, 2), np.nan)
    ended = np.zeros(n, bool)
    for _ in range(300):
        o, _, term, trunc, inf = env.step(policy(o))
        now = (term | trunc) & ~ended
        landing[now] = np.where(inf["has_landed"][now, None], inf["landing_point"][now], np.nan)
        ended |= now
        if ended.all():
            break
    assert ended.all()
    landed = np.isfinite(landing[:, 0])
    np.testing.assert_array_equal(landed, info["has_landed"])
    assert landed.sum() >= n // 2
    # the same flights up to the goal's float32 rounding (the goal env's policy reads it from the observation)
    np.testing.assert_allclose(landing[landed], info["landing_point"][landed], atol=1e-5)
    np.testing.assert_array_equal(reward, aim.compute_reward(info["landing_point"], obs["desired_goal"], info))


def test_the_action_moves_the_lob_target():
    """-1 on x aims 0.5 m deeper (the human's half is x < 0) than +1: the landings move accordingly."""
    n = 48
    env = TableTennisAimGoalVectorEnv(n)
    means = {}
    for ax in (-1.0, 1.0):
        env.reset(seed=3)
        _, _, _, _, info = env.step(np.tile([ax, 0.0], (n, 1)))
        both = info["has_landed"]
        assert both.sum() >= n // 3
        means[ax] = info["landing_point"][both, 0].mean()
        np.testing.assert_allclose(info["aim_offset_m"], np.tile([0.5 * ax, 0.0], (n, 1)))
    assert means[-1.0] < means[1.0] - 0.2


def test_seeded_episodes_repeat_and_the_observation_is_what_the_controller_knows():
    n = 8
    env = TableTennisAimGoalVectorEnv(n)
    a = np.random.default_rng(0).uniform(-1, 1, (n, 2))
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=5)
        runs.append((obs, env.step(a)))
    for key in ("observation", "desired_goal", "achieved_goal"):
        np.testing.assert_array_equal(runs[0][0][key], runs[1][0][key])
        np.testing.assert_array_equal(runs[0][1][0][key], runs[1][1][0][key])
    np.testing.assert_array_equal(runs[0][1][1], runs[1][1][1])
    obs = runs[0][0]
    f = {name: obs["observation"][:, i] for i, name in enumerate(AIM_FEATURES)}
    # at the default decision (0.2 s after the serve) every ball has a planned contact that is still to come
    assert (f["has_plan"] == 1).all() and (f["plan_time_left_s"] > 0).all()
    np.testing.assert_allclose(f["plan_x_m"], env.scripted.params[:, 0], atol=1e-6)  # on the hitting plane
    np.testing.assert_array_equal(obs["achieved_goal"], np.tile(NOT_LANDED, (n, 1)))  # nothing landed yet
    assert env.observation_space.contains(obs)


def test_a_return_that_did_not_land_is_never_rewarded_and_relabelling_its_own_landing_is():
    n = 64
    env = TableTennisAimGoalVectorEnv(n, aim_range_m=(1.5, 1.5))
    env.reset(seed=9)
    actions = np.random.default_rng(4).uniform(-1, 1, (n, 2))  # up to 1.5 m off the goal: many go out
    obs, reward, _, _, info = env.step(actions)
    landed = info["has_landed"]
    assert 0 < landed.sum() < n
    np.testing.assert_array_equal(obs["achieved_goal"][~landed], np.tile(NOT_LANDED, ((~landed).sum(), 1)))
    assert (reward[~landed] == 0).all()
    np.testing.assert_array_equal(reward, (info["distance_to_goal_m"] <= 0.3).astype(float))
    # hindsight: each episode's own landing as the goal is a success exactly where it landed
    relabelled = env.compute_reward(obs["achieved_goal"], obs["achieved_goal"], info)
    np.testing.assert_array_equal(relabelled, landed.astype(float))


def test_next_step_autoreset_and_the_stable_baselines3_view():
    n = 4
    env = TableTennisAimGoalVectorEnv(n)
    env.reset(seed=1)
    env.step(np.zeros((n, 2)))
    obs, reward, terminated, truncated, _ = env.step(np.zeros((n, 2)))  # the next step starts new episodes
    assert (reward == 0).all() and not terminated.any() and not truncated.any()
    np.testing.assert_array_equal(obs["achieved_goal"], np.tile(NOT_LANDED, (n, 1)))

    pytest.importorskip("stable_baselines3")
    from robot_rt.envs.sb3 import SB3VecEnv

    venv = SB3VecEnv(TableTennisAimGoalVectorEnv(n))
    venv.seed(2)
    venv.reset()
    venv.step_async(np.zeros((n, 2), np.float32))
    obs, reward, done, infos = venv.step_wait()
    assert done.all()
    for i in range(n):
        final = infos[i]["terminal_observation"]
        assert infos[i]["is_success"] == bool(reward[i])
        assert (not infos[i]["has_landed"]) == bool(np.all(final["achieved_goal"] == NOT_LANDED))
    np.testing.assert_array_equal(obs["achieved_goal"], np.tile(NOT_LANDED, (n, 1)))  # the next balls' first views


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="aim_range_m"):
        TableTennisAimGoalVectorEnv(2, aim_range_m=(0.5, -1))
    with pytest.raises(ValueError, match="decision_s"):
        TableTennisAimGoalVectorEnv(2, decision_s=0)
    with pytest.raises(ValueError, match="max_episode_s"):
        TableTennisAimGoalVectorEnv(2, decision_s=1.0, max_episode_s=0.5)
    vec = gym.make_vec("robot_rt/TableTennisAimGoal-v0", num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(vec, TableTennisAimGoalVectorEnv) and vec.num_envs == 3
    with pytest.raises(ValueError, match="max_episode_steps"):
        TableTennisAimGoalVectorEnv(2, max_episode_steps=10)
    with pytest.raises(ValueError, match="success_radius_m"):
        TableTennisAimGoalVectorEnv(2, success_radius_m=5.0)
    with pytest.raises(ValueError, match="render_mode"):
        TableTennisAimGoalEnv(render_mode="rgb_array")
    env = TableTennisAimGoalVectorEnv(2)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros((2, 2)))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions: expected shape"):
        env.step(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="actions: contains NaN"):
        env.step(np.array([[0.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.array([True, False])})
