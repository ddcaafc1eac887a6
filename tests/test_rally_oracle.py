"""tools/rally_oracle_bound.py: the privileged truth tracker (analysis only) and the contact replays of its bound."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tool():
    path = Path(__file__).resolve().parents[1] / "tools" / "rally_oracle_bound.py"
    spec = importlib.util.spec_from_file_location("rally_oracle_bound_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_truth_tracker_plans_from_the_true_flight(tool):
    """With the truth feed the policy's crossing predictions are the env's true ball flown to the plane by the
    world's physics (no camera, no filter), and its state is the world's ball."""
    from robot_rt.ballistics import time_to_plane_batch
    from robot_rt.envs.core import PHASE_INCOMING
    from robot_rt.envs.vector import TableTennisVectorEnv

    n = 6
    env = TableTennisVectorEnv(n, max_episode_steps=400)
    try:
        policy, inner = tool.make_row_policy("rally-truth", n, env)
        assert isinstance(inner.tracker, tool.TruthTracker)
        obs, _ = env.reset(seed=list(range(5_000_000, 5_000_000 + n)))
        policy.reset()
        compared = 0
        for _ in range(40):
            ball, phase = env.world.ball.copy(), env.world.phase.copy()
            t_call = inner.t.copy()
            action = policy(obs)
            state, valid = inner.tracker.state()
            np.testing.assert_array_equal(state[valid], ball[valid])
            cross = inner.tracker.predict_plane_crossing(1.6)
            sel = np.nonzero(valid & (phase == PHASE_INCOMING) & (ball[:, 0] < 1.0) & (ball[:, 3] > 0) & cross.found)[0]
            if sel.size:
                truth = time_to_plane_batch(ball[sel], 1.6, env.world.params, env.world.table, dt_s=1e-3)
                ok = np.isfinite(truth.t_s)
                np.testing.assert_allclose(cross.position_m[sel][ok], truth.state[ok, :3], atol=2e-3)
                np.testing.assert_allclose(cross.velocity_mps[sel][ok], truth.state[ok, 3:6], atol=2e-2)
                np.testing.assert_allclose(cross.t_s[sel][ok], t_call[sel][ok] + truth.t_s[ok], atol=2e-3)
                compared += int(ok.sum())
            obs, *_ = env.step(action)
        assert compared > 20
    finally:
        env.close()


def test_truth_tracker_refuses_a_stale_state(tool):
    tracker = tool.TruthTracker(2)
    with pytest.raises(RuntimeError, match="feed"):
        tracker.update(np.zeros((2, 6, 5)), np.zeros(2))
    tracker.feed(np.zeros((2, 9)), np.array([0, 2]))
    tracker.update(None, np.ones(2))
    _, _, valid = tracker.fit_state()
    assert valid.tolist() == [True, False]  # phase incoming / done
    with pytest.raises(RuntimeError, match="feed"):
        tracker.update(None, np.ones(2))  # one feed per policy call


def test_truth_spin_holds_the_spin_over_the_humans_half(tool):
    from robot_rt.envs.core import PHASE_INCOMING

    spin = tool.TruthSpin(2)
    ball = np.zeros((2, 9))
    ball[:, 0] = [-0.5, 0.5]
    ball[:, 3] = 5.0
    ball[:, 6:9] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    spin.feed(ball, np.full(2, PHASE_INCOMING))
    estimate, valid = spin.update(None, None)
    assert valid.tolist() == [True, False]  # the second ball is past x = 0 (its bounce may have changed its spin)
    np.testing.assert_array_equal(estimate[0], [1.0, 2.0, 3.0])
    calibrated = tool.TruthSpin(2, calibration=np.vstack([np.eye(3), np.zeros((3, 3)), [[0.0, 60.0, 0.0]]]))
    calibrated.feed(ball, np.full(2, PHASE_INCOMING))
    np.testing.assert_allclose(calibrated.update(None, None)[0][0], [1.0, 62.0, 3.0])


def test_contact_replay_reproduces_the_env_and_the_solver_reaches_a_reachable_arrival(tool):
    """On the NumPy physics the recorded contacts, replayed through the env's contact law and flight, land as the
    env's returns did; the arrival solver, started 3 degrees off, recovers an arrival the executed normal reached."""
    res = tool.run_row("rally-truth", 8, 7, 500, numpy_backend=True)
    rec = [c for c in res["contacts"] if c["contact"] is not None]
    assert len(rec) >= 6
    ball = np.array([c["contact"][0] for c in rec])
    normal = np.array([c["contact"][1] for c in rec])
    vel = np.array([c["contact"][2] for c in rec])
    kw = dict(config=res["config"], radius_m=res["radius_m"], params=res["params"], table=res["table"])
    arrival, out = tool.arrival_of_shot(ball, normal, vel, **kw)
    flight = tool.fly_to_human(out, res["params"], res["table"])
    landed = flight["landed"] & np.all(np.isfinite(flight["arrival"]), axis=1)
    # every env arrival (the human's plane) is one of the replayed ones, to millimetres; a replayed one may be
    # missing from the env only where the episode was cut (500 steps) before that ball reached the plane
    env_arrivals = res["arrivals"]
    cut = sum(e["outcome"] == "none" for e in res["episodes"])
    assert len(env_arrivals) <= int(landed.sum()) <= len(env_arrivals) + cut
    assert len(env_arrivals) >= 6
    for a in env_arrivals:
        assert np.min(np.linalg.norm(flight["arrival"][landed, :3] - a[:3], axis=1)) < 5e-3
    # perturb the normal, solve back for the arrival the executed contact reached
    tilt = np.cross(normal, [0.0, 0.0, 1.0])
    tilt /= np.linalg.norm(tilt, axis=1, keepdims=True)
    start = normal + np.tan(np.radians(3.0)) * tilt
    target = arrival[landed, 1:3]
    solved = tool.solve_arrival_normal(ball[landed], vel[landed], target, start[landed], starts=(0.0,), **kw)
    reached, _ = tool.arrival_of_shot(ball[landed], solved, vel[landed], **kw)
    np.testing.assert_allclose(reached[:, 1:3], target, atol=5e-3)
