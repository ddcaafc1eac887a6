"""Gymnasium conformance and behaviour of the table-tennis environments."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robot_rt.envs  # noqa: F401  (registers the env ids)
from robot_rt.envs import HumanBehaviorModel, TableTennisEnv, TableTennisGoalEnv, observation_layout
from robot_rt.envs.core import paddle_contact
from robot_rt.envs.render import EpisodeVideoWriter

ENV_IDS = ["robot_rt/TableTennis-v0", "robot_rt/TableTennisGoal-v0"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_passes(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    assert [str(w.message) for w in caught] == []  # actions are normalised to [-1, 1]: no advice left
    env.close()


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        trace.append((obs, reward, terminated, info["outcome"]))
        if terminated or truncated:
            break
    return trace


def _same(a, b):
    if isinstance(a, dict):
        return all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_seeded_episodes_are_identical_and_seeds_differ():
    env = gym.make("robot_rt/TableTennis-v0")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.3, 0.3, size=(25, 8)) * env.unwrapped.action_space.high
    a, b, c = _rollout(env, 7, actions), _rollout(env, 7, actions), _rollout(env, 8, actions)
    assert len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    assert not all(_same(x, y) for x, y in zip(a, c))  # a different seed, a different ball


def test_actions_outside_the_space_are_clipped_and_nan_rejected():
    env = TableTennisEnv()
    high = env.action_space.high
    env.reset(seed=3)
    big = env.step(10 * high)[0]
    env.reset(seed=3)
    clipped = env.step(high)[0]
    np.testing.assert_array_equal(big, clipped)
    env.reset(seed=3)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(8, np.nan))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(7))


def test_observation_layout_and_robot_limits():
    env = TableTennisEnv()
    obs, _ = env.reset(seed=0)
    layout = observation_layout(8, env.world.history)
    assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    robot = env.world.robot
    np.testing.assert_allclose(obs[layout["q"]], robot.home, atol=1e-6)
    rng = np.random.default_rng(1)
    for _ in range(40):  # random full-speed commands never push a joint past its limits
        obs, _, terminated, _, info = env.step(rng.choice([-1.0, 1.0], size=8) * env.action_space.high)
        q = obs[layout["q"]]
        assert np.all(q >= robot.position_min - 1e-6) and np.all(q <= robot.position_max + 1e-6)
        assert np.all(np.abs(obs[layout["qd"]]) <= robot.velocity_limit + 1e-5)
        if terminated:
            break
    detections = obs[layout["detections"]].reshape(-1, 5)
    assert set(np.unique(detections[:, 4])) <= {0.0, 1.0}


def test_idle_robot_misses_and_the_episode_ends():
    env = TableTennisEnv()
    env.reset(seed=11)
    for _ in range(400):
        _, _, terminated, _, info = env.step(np.zeros(8))
        if terminated:
            break
    assert terminated and info["outcome"] == "missed" and info["rally_length"] == 0


def test_camera_detections_follow_the_ball_with_noise_and_latency():
    env = TableTennisEnv()
    env.reset(seed=5)
    world = env.world
    truth = []
    for _ in range(15):
        truth.append((world.t[0], world.ball[0, :3].copy()))
        env.step(np.zeros(8))
    det = world.detections()[0]
    valid = det[det[:, 4] > 0]
    assert len(valid) >= 3
    assert np.all(valid[:, 3] >= world.config.camera_latency_s - 1e-9)  # nothing arrives before its latency
    times = np.array([t for t, _ in truth])
    for x, y, z, age, _ in valid:
        t_capture = world.t[0] - age
        k = np.argmin(np.abs(times - t_capture))
        assert abs(times[k] - t_capture) < 0.011
        assert np.linalg.norm(np.array([x, y, z]) - truth[k][1]) < 0.15  # within one step of flight


def test_static_paddle_reflects_head_on():
    ball = np.array([[0.0, 0.0, 1.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    normal = np.array([[-1.0, 0.0, 0.0]])
    out = paddle_contact(ball, np.zeros((1, 3)), normal, np.zeros((1, 3)), np.array([1.0]), 0.02, 0.85, 0.35)
    np.testing.assert_allclose(out[0, 3:6], [-4.25, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out[0, 6:9], 0.0, atol=1e-12)
    # an oblique hit: friction slows the tangential motion and spins the ball, never reverses the slip
    ball[0, 3:6] = [5.0, 0.0, -2.0]
    out = paddle_contact(ball, np.zeros((1, 3)), normal, np.zeros((1, 3)), np.array([1.0]), 0.02, 0.85, 0.35)
    assert out[0, 3] == pytest.approx(-4.25)
    assert -2.0 < out[0, 5] <= 0.0
    assert out[0, 7] < -10.0
    # the friction impulse here is enough to make the ball roll: no slip at the contact point afterwards
    slip = out[0, 3:6] - np.dot(out[0, 3:6], normal[0]) * normal[0] + np.cross(out[0, 6:9], [0.02, 0.0, 0.0])
    np.testing.assert_allclose(slip, 0.0, atol=1e-12)


def test_goal_env_reports_goal_and_landing():
    env = TableTennisGoalEnv()
    obs, info = env.reset(seed=2)
    goal = obs["desired_goal"]
    assert -1.37 <= goal[0] <= 0.0 and abs(goal[1]) <= 0.7625
    assert not info["has_landed"] and info["success_30cm"] is False
    reward = env.compute_reward(np.array([[goal[0] + 0.1, goal[1]], [goal[0] + 0.5, goal[1]]]), goal[None], None)
    np.testing.assert_array_equal(reward, [1.0, 0.0])


def test_rgb_render_and_video(tmp_path):
    env = TableTennisEnv(render_mode="rgb_array")
    env.reset(seed=0)
    writer = EpisodeVideoWriter(tmp_path / "episode.gif", fps=10)
    for _ in range(3):
        env.step(np.zeros(8))
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        writer.add(frame)
    assert frame.std() > 10  # a drawing, not a blank image
    path = writer.close()
    assert path.stat().st_size > 1000 and path.read_bytes()[:3] == b"GIF"
    with pytest.raises(ValueError, match="render_mode"):
        TableTennisEnv(render_mode="vr")


def test_a_different_human_model_changes_the_incoming_balls():
    a = TableTennisEnv(human=HumanBehaviorModel.default())
    b = TableTennisEnv(human=HumanBehaviorModel.real_player())
    speeds_a, speeds_b = [], []
    for seed in range(12):
        a.reset(seed=seed)
        b.reset(seed=seed)
        speeds_a.append(a.world.ball[0, 3])
        speeds_b.append(b.world.ball[0, 3])
    assert np.mean(speeds_b) > np.mean(speeds_a) + 0.4


def test_goal_env_counts_only_table_landings_on_the_human_half():
    """A return whose first contact is the floor or the robot's half ('out') has not landed: no achieved goal,
    no success, even when that contact point happens to lie near the goal."""
    from robot_rt.envs.scripted import BatchedScriptedPolicy
    from robot_rt.envs.vector import TableTennisGoalVectorEnv

    n = 64
    envs = TableTennisGoalVectorEnv(n, max_episode_steps=200)
    policy = BatchedScriptedPolicy(n, action_noise_std=0.3, seed=3)
    obs, _ = envs.reset(seed=11)
    seen = {"returned": 0, "out": 0}
    for _ in range(200):
        obs, _, terminated, truncated, info = envs.step(policy(obs))
        for i in np.flatnonzero(terminated):
            outcome = str(info["outcome"][i])
            if outcome == "returned":
                seen["returned"] += 1
                assert info["has_landed"][i] and info["landing_point"][i][0] < 0
                np.testing.assert_allclose(obs["achieved_goal"][i], info["landing_point"][i], atol=1e-6)
            elif outcome == "out":
                seen["out"] += 1
                assert not info["has_landed"][i] and not info["success_30cm"][i]
                assert np.all(obs["achieved_goal"][i] == TableTennisGoalVectorEnv.NOT_LANDED)
        policy.reset(terminated | truncated)
        if min(seen.values()) >= 3:
            break
    assert min(seen.values()) >= 3, seen
    envs.close()
