"""The limit guard (robot_rt.envs.limit_guard) and the DAgger distillation of a rally policy
(robot_rt.learning.distill)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_rt.envs.features import feature_dim
from robot_rt.envs.limit_guard import LimitGuard, joint_brake
from robot_rt.envs.scripted import BatchedScriptedPolicy, paddle_jacobian_analytic
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.learning.distill import (
    ENSEMBLE_FORMAT,
    POLICY_FORMAT,
    DistilledEnvPolicy,
    PolicyEnsemble,
    dagger_distill,
    load_distilled,
    save_distilled,
    save_ensemble,
)
from robot_rt.learning.gcbc import GCBCPolicy
from robot_rt.robot import load_robot

ROBOT = load_robot()


def random_states(rng: np.random.Generator, n: int) -> np.ndarray:
    """Joint positions anywhere in the limits, some at them, whose paddle is inside its workspace box."""
    q = rng.uniform(ROBOT.position_min, ROBOT.position_max, (4 * n, ROBOT.dof))
    edge = rng.random(q.shape) < 0.1
    at_max = rng.random(q.shape) < 0.5
    limits = np.where(at_max, ROBOT.position_max, ROBOT.position_min)
    q[edge] = limits[edge]
    pos, *_ = paddle_jacobian_analytic(ROBOT, q)
    inside = np.all((pos > ROBOT.workspace_min_m) & (pos < ROBOT.workspace_max_m), axis=1)
    return q[inside][:n]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_guard_keeps_joint_caps_and_paddle_wall_speeds(seed):
    rng = np.random.default_rng(seed)
    guard = LimitGuard(ROBOT)
    q = random_states(rng, 32)
    actions = rng.uniform(-1.5, 1.5, q.shape)
    out = guard(q, actions)
    assert out.dtype == np.float32 and np.all(np.abs(out) <= 1.0)
    qd = out.astype(np.float64) * ROBOT.velocity_limit
    # no joint faster towards a limit than it can stop within (the scripted policy's own brake leaves it unchanged)
    np.testing.assert_allclose(joint_brake(ROBOT, q, qd, guard.dt_s), qd, atol=1e-5)
    # the guarded paddle velocity towards each wall is at most sqrt(2 a (room - margin))
    pos, _, jp, _ = paddle_jacobian_analytic(ROBOT, q)
    v = np.einsum("nij,nj->ni", jp, qd)
    room = np.where(v < 0, pos - ROBOT.workspace_min_m, ROBOT.workspace_max_m - pos) - guard.wall_margin_m
    allowed = np.sqrt(2 * guard.wall_decel_mps2 * np.maximum(room, 0.0))
    assert np.all(np.abs(v) <= allowed + 1e-4), np.max(np.abs(v) - allowed)
    # commands well inside every limit pass unchanged
    home = np.tile(ROBOT.home, (4, 1))
    small = rng.uniform(-0.01, 0.01, home.shape)
    np.testing.assert_allclose(guard(home, small), small.astype(np.float32), rtol=1e-6)


def test_guarded_random_actions_never_end_an_episode_at_a_limit():
    """Random full-scale actions for 3 s in 64 environments: unguarded they hit limits, guarded never."""
    rng = np.random.default_rng(0)
    guard = LimitGuard(ROBOT)
    q_cols = slice(0, ROBOT.dof)

    def limit_stops(guarded: bool) -> int:
        env = TableTennisVectorEnv(64, max_episode_steps=300)
        obs, _ = env.reset(seed=list(range(64)))
        stops = 0
        try:
            for _ in range(300):
                a = rng.uniform(-1, 1, (64, ROBOT.dof)).astype(np.float32)
                if guarded:
                    a = guard(obs[:, q_cols], a)
                obs, _, _, _, info = env.step(a)
                stops += int(np.asarray(info["limit"]).sum())
        finally:
            env.close()
        return stops

    assert limit_stops(False) > 10
    assert limit_stops(True) == 0


def test_guard_validates_its_inputs():
    guard = LimitGuard(ROBOT)
    with pytest.raises(ValueError, match="q, actions: expected"):
        guard(np.zeros((2, 8)), np.zeros((2, 7)))
    with pytest.raises(ValueError, match="NaN"):
        guard(np.zeros((1, 8)), np.full((1, 8), np.nan))
    with pytest.raises(ValueError, match="wall_decel_mps2"):
        LimitGuard(ROBOT, wall_decel_mps2=0.0)


def test_joint_brake_is_the_scripted_policys_brake():
    rng = np.random.default_rng(1)
    policy = BatchedScriptedPolicy(16)
    q = random_states(rng, 16)
    command = rng.uniform(-3, 3, q.shape) * ROBOT.velocity_limit
    np.testing.assert_array_equal(
        policy.brake_to_limits(q, command), joint_brake(ROBOT, q, command, policy.dt).astype(np.float32)
    )


def test_policy_file_round_trip_and_refusals(tmp_path):
    model = GCBCPolicy(feature_dim(spin=True), goal_dim=0, act_dim=8, hidden=(16,))
    path = save_distilled(tmp_path / "policy.pt", model, {"round": 3})
    assert not list(tmp_path.glob("*.tmp"))
    policy = load_distilled(path, num_envs=4)
    env = TableTennisVectorEnv(4, max_episode_steps=50)
    obs, _ = env.reset(seed=[0, 1, 2, 3])
    try:
        a = policy(obs)
        reference = DistilledEnvPolicy(model, 4)(obs)
    finally:
        env.close()
    assert a.shape == (4, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a, reference)
    single = load_distilled(path, num_envs=1)  # the real-time loop's adapter passes one observation [obs_dim]
    a_single = single(obs[1])
    assert a_single.shape == (8,)
    np.testing.assert_array_equal(a_single, DistilledEnvPolicy(model, 1)(obs[1:2])[0])
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=POLICY_FORMAT):
        load_distilled(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="path"):
        load_distilled(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="goal_dim 0"):
        DistilledEnvPolicy(GCBCPolicy(feature_dim(spin=True), goal_dim=2), 2)
    assert policy.tracker == "fit"
    # a policy trained on the UKF tracker's features is played with them
    ukf_path = save_distilled(tmp_path / "ukf.pt", model, tracker="ukf")
    ukf_policy = load_distilled(ukf_path, num_envs=4)
    assert ukf_policy.tracker == "ukf" and type(ukf_policy.features.tracker).__name__ == "BatchedUKFTracker"
    state = torch.load(ukf_path, weights_only=True)
    state["tracker"] = "kalman"
    torch.save(state, tmp_path / "bad_tracker.pt")
    with pytest.raises(ValueError, match="tracker 'kalman'"):
        load_distilled(tmp_path / "bad_tracker.pt")


def _random_network(seed: int, hidden=(16, 16)) -> GCBCPolicy:
    torch.manual_seed(seed)
    model = GCBCPolicy(feature_dim(spin=True), goal_dim=0, act_dim=8, hidden=hidden)
    rng = np.random.default_rng(seed)
    model.fit_normalisation(rng.normal(0, 2, (64, model.feat_dim)), np.zeros((64, 0)))
    return model


def test_ensemble_acts_as_the_mean_of_its_members():
    """The reference: each member's own action, averaged in NumPy (float64)."""
    rng = np.random.default_rng(4)
    members = [_random_network(s) for s in (1, 2, 3)]
    ensemble = PolicyEnsemble(members)
    for batch in (1, 7, 64):
        feats = rng.normal(0, 3, (batch, ensemble.feat_dim)).astype(np.float32)
        no_goal = np.zeros((batch, 0), dtype=np.float32)
        expected = np.mean([m.act(feats, no_goal).astype(np.float64) for m in members], axis=0)
        got = ensemble.act(feats, no_goal)
        assert got.shape == (batch, 8) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert np.abs(got).max() <= 1.0
        # a real mean, not one member's action
        assert np.abs(got - members[0].act(feats, no_goal)).max() > 1e-3
    single = PolicyEnsemble([members[1]])
    feats = rng.normal(0, 3, (5, ensemble.feat_dim)).astype(np.float32)
    np.testing.assert_array_equal(single.act(feats, np.zeros((5, 0))), members[1].act(feats, np.zeros((5, 0))))
    with pytest.raises(ValueError, match="members: expected a non-empty"):
        PolicyEnsemble([])
    with pytest.raises(ValueError, match="members: expected a non-empty"):
        PolicyEnsemble([members[0], "not a network"])
    with pytest.raises(ValueError, match="one shape"):
        PolicyEnsemble([members[0], _random_network(5, hidden=(8,))])


def test_ensemble_file_round_trip_and_refusals(tmp_path):
    import importlib.util
    from pathlib import Path

    members = [_random_network(s) for s in (1, 2, 3)]
    paths = [save_distilled(tmp_path / f"m{i}.pt", m, {"round": i}) for i, m in enumerate(members)]
    out = save_ensemble(tmp_path / "ensemble.pt", paths)
    assert not list(tmp_path.glob("*.tmp"))
    policy = load_distilled(out, num_envs=4)
    assert isinstance(policy.model, PolicyEnsemble) and len(policy.model.members) == 3
    assert policy.tracker == "fit"
    assert torch.load(out, weights_only=True)["format"] == ENSEMBLE_FORMAT  # a reader without ensembles refuses it
    meta = torch.load(out, weights_only=True)["meta"]["ensemble_of"]
    assert [m["file"] for m in meta] == [str(p) for p in paths] and [m["meta"]["round"] for m in meta] == [0, 1, 2]
    env = TableTennisVectorEnv(4, max_episode_steps=50)
    obs, _ = env.reset(seed=[0, 1, 2, 3])
    try:
        a = policy(obs)
        reference = DistilledEnvPolicy(PolicyEnsemble(members), 4)(obs)
        first_member = DistilledEnvPolicy(members[0], 4)(obs)
    finally:
        env.close()
    np.testing.assert_array_equal(a, reference)
    assert a.shape == (4, 8) and not np.array_equal(a, first_member)
    # the real-time loop's adapter passes one observation [obs_dim]
    np.testing.assert_allclose(load_distilled(out, num_envs=1)(obs[2]), a[2], rtol=0, atol=1e-6)
    # an ensemble file as a member contributes its networks, each one vote
    fourth = _random_network(4)
    bigger = save_ensemble(tmp_path / "bigger.pt", [out, save_distilled(tmp_path / "m3.pt", fourth)])
    assert len(load_distilled(bigger).model.members) == 4
    features = np.random.default_rng(0).normal(0, 3, (16, fourth.feat_dim)).astype(np.float32)
    no_goal = np.zeros((16, 0), dtype=np.float32)
    np.testing.assert_allclose(
        load_distilled(bigger).model.act(features, no_goal),
        np.mean([m.act(features, no_goal) for m in [*members, fourth]], axis=0),
        rtol=0,
        atol=1e-6,
    )
    # the command-line tool writes the same file
    spec = importlib.util.spec_from_file_location(
        "ensemble_tool", Path(__file__).parents[1] / "tools/ensemble_distilled.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool_out = tool.main(["--out", str(tmp_path / "tool.pt"), *map(str, paths)])
    np.testing.assert_array_equal(load_distilled(tool_out, num_envs=4)(obs), a)
    # refusals
    with pytest.raises(ValueError, match="at least two"):
        save_ensemble(tmp_path / "one.pt", paths[:1])
    ukf = save_distilled(tmp_path / "ukf.pt", members[0], tracker="ukf")
    with pytest.raises(ValueError, match="different ball trackers"):
        save_ensemble(tmp_path / "mixed.pt", [paths[0], ukf])
    narrow = save_distilled(tmp_path / "narrow.pt", _random_network(9, hidden=(8,)))
    with pytest.raises(ValueError, match="one shape"):
        save_ensemble(tmp_path / "shapes.pt", [paths[0], narrow])
    with pytest.raises(FileNotFoundError, match="policy_paths: no policy file"):
        save_ensemble(tmp_path / "missing.pt", [paths[0], tmp_path / "nope.pt"])
    with pytest.raises(ValueError, match="network 1 repeats network 0"):
        save_ensemble(tmp_path / "twice.pt", [paths[0], paths[0]])
    with pytest.raises(ValueError, match="network 3 repeats network 1"):
        save_ensemble(tmp_path / "twice.pt", [out, paths[1]])
    with pytest.raises(ValueError, match="policy_paths: expected a sequence"):
        save_ensemble(tmp_path / "str.pt", str(paths[0]))
    written = {p.name for p in tmp_path.iterdir()}
    assert not written & {"mixed.pt", "shapes.pt", "missing.pt", "twice.pt", "str.pt", "one.pt"}
    state = torch.load(out, weights_only=True)
    torch.save({**state, "models": []}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="non-empty list"):
        load_distilled(tmp_path / "empty.pt")
    torch.save({"format": POLICY_FORMAT, "tracker": "fit"}, tmp_path / "no_model.pt")
    with pytest.raises(ValueError, match="under 'model' alone"):
        load_distilled(tmp_path / "no_model.pt")
    torch.save({**state, "model": state["models"][0]}, tmp_path / "both.pt")
    with pytest.raises(ValueError, match="under 'models' alone"):
        load_distilled(tmp_path / "both.pt")
    torch.save({**state, "models": [1]}, tmp_path / "bad_member.pt")
    with pytest.raises(ValueError, match="bad_member.pt: network 0 is not a GCBCPolicy state"):
        load_distilled(tmp_path / "bad_member.pt")
    with pytest.raises(ValueError, match="model: expected a GCBCPolicy"):
        save_distilled(tmp_path / "bad.pt", "not a network")
    with pytest.raises(ValueError, match="tracker"):
        save_distilled(tmp_path / "bad.pt", members[0], tracker="kalman")


def test_dagger_learns_the_experts_actions(tmp_path):
    """A short run (16 environments, 2 rounds): the files and log are written, the training loss falls well below
    the variance of the expert's actions, and the learner's actions on fresh expert states are close to the
    expert's."""
    from robot_rt.envs.shot_model import rally_shot_policy

    log = dagger_distill(
        rally_shot_policy, tmp_path, num_envs=16, steps_per_round=300, betas=(0.5,), train_steps=400, seed=3
    )
    assert [r["round"] for r in log["rounds"]] == [0, 1]
    assert (tmp_path / "policy.pt").is_file() and (tmp_path / "policy_round1.pt").is_file()
    assert (tmp_path / "log.json").is_file()
    learner = load_distilled(tmp_path / "policy.pt", num_envs=16)
    expert = rally_shot_policy(16)
    env = TableTennisVectorEnv(16, max_episode_steps=1000)
    obs, _ = env.reset(seed=list(range(900, 916)))
    errors, spread = [], []
    try:
        for _ in range(150):
            a_expert = expert(obs)
            a_learner, _ = learner.act(obs)
            errors.append(np.mean((a_learner - a_expert) ** 2))
            spread.append(np.var(a_expert))
            obs, *_ = env.step(a_expert)
    finally:
        env.close()
    assert log["rounds"][-1]["train_loss"] < 0.2 * np.mean(spread)
    assert np.mean(errors) < 0.5 * np.mean(spread), (np.mean(errors), np.mean(spread))


def test_with_the_robot_kept_between_episodes_the_wrapper_goes_on_across_them():
    """`WorldConfig.keep_robot_pose` (and a serve delay): as through the loop between rallies, the loop model's
    trajectory is not restarted at the env's autoresets (it would restart at rest where the robot is, while the env
    keeps the robot moving), and episodes start where the last one left the robot."""
    from helpers.loop_model import reset_checked_loop_model

    from robot_rt.bridge.loop_model import drive_robot
    from robot_rt.envs.core import WorldConfig
    from robot_rt.learning import distill

    n, steps = 6, 200
    config = WorldConfig(serve_delay_s=0.3, keep_robot_pose=True)
    env = TableTennisVectorEnv(n, robot=drive_robot(ROBOT), config=config, max_episode_steps=80)
    starts = []
    reset_worlds = env._reset_worlds

    def recording(idx, keep_robot=True):
        reset_worlds(idx, keep_robot)
        starts.append(env.world.q[idx].copy())

    env._reset_worlds = recording
    with pytest.MonkeyPatch.context() as mp:
        checked, seen = reset_checked_loop_model(mp, n)
        feats, _ = distill._play(
            env,
            BatchedScriptedPolicy(n),
            None,
            1.0,
            steps,
            0,
            np.random.default_rng(0),
            wrap=lambda p: checked(p, ROBOT, n),
        )
    env.close()
    assert seen["calls"] == steps and seen["resets"] == 0
    later = np.concatenate(starts[1:])  # the autoresets (80-step episodes: every environment restarted)
    assert len(later) >= n and np.abs(later - ROBOT.home).max(axis=1).min() > 1e-3
    assert len(feats) > steps * n // 2


def test_rounds_through_a_policy_wrapper_record_what_the_mixed_policy_saw():
    """With `wrap_policy` (here the real-time loop's trajectory model, against the real player with the drive robot)
    every step goes through the wrapper, the rows are the observations the wrapped policy was shown (the adapter's
    commanded state, not the env's), with the expert's action there, and the wrapper is reset with exactly the
    environments that ended on the step before."""
    from helpers.loop_model import reset_checked_loop_model

    from robot_rt.bridge.loop_model import drive_robot
    from robot_rt.envs.features import FeatureExtractor
    from robot_rt.envs.human_model import HumanBehaviorModel
    from robot_rt.learning import distill

    n, steps = 8, 250
    env = TableTennisVectorEnv(
        n, human=HumanBehaviorModel.real_player(), robot=drive_robot(ROBOT), max_episode_steps=120
    )
    expert = BatchedScriptedPolicy(n)
    with pytest.MonkeyPatch.context() as mp:
        checked, seen = reset_checked_loop_model(mp, n)
        seen["shown"], seen["observed"] = [], []

        class Recording(checked):
            def __call__(self, obs):
                seen["observed"].append(np.array(obs[:, : ROBOT.dof]))
                inner = self.policy.step

                def showing(shown):
                    seen["shown"].append(np.array(shown[:, : ROBOT.dof]))
                    return inner(shown)

                self.policy.step = showing
                try:
                    return super().__call__(obs)
                finally:
                    self.policy.step = inner

        feats, actions = distill._play(
            env, expert, None, 1.0, steps, 0, np.random.default_rng(0), wrap=lambda p: Recording(p, ROBOT, n)
        )
    env.close()
    assert seen["calls"] == steps and seen["resets"] >= 1  # 120-step episodes: every environment restarted
    shown = np.concatenate(seen["shown"])
    assert len(feats) == len(actions) <= len(shown) and len(feats) > steps * n // 2
    # the features' robot state is the shown one (the adapter's commanded target): the first step's rows
    fx = FeatureExtractor(n, spin=True)
    np.testing.assert_allclose(feats[:n, : ROBOT.dof] * fx._q_half + fx._q_mid, shown[:n], atol=1e-5)
    # and it is not the env's own robot state once the robot moves (the wrapper is in the path)
    assert np.abs(shown - np.concatenate(seen["observed"])).max() > 1e-3
