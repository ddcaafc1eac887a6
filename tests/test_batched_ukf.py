"""robot_rt.estimation.batched_ukf: one BallUKF per environment behind the batched tracker's interface."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rt.estimation import BallUKF, ServeGenerator, SimulatedTracker
from robot_rt.estimation.batched import BatchedBallTracker
from robot_rt.estimation.batched_ukf import BatchedUKFTracker, make_batched_tracker

PLANE = 1.6
STEP = 0.01
HISTORY = 8


@pytest.fixture(scope="module")
def serves():
    return ServeGenerator(seed=3, x_plane_m=PLANE).sample(12)


@pytest.fixture(scope="module")
def detections(serves):
    cam = SimulatedTracker(seed=4, outlier_prob=0.0, false_rate=0.0)  # the env camera has no outliers/clutter
    return [cam.observe(s) for s in serves]


def _env_detections(dets, t):
    """The env's observation rows at time t: the newest HISTORY detections arrived by t, newest first, as
    (x, y, z, age_s, valid); so consecutive steps repeat most of them, as the env's observations do."""
    out = np.zeros((len(dets), HISTORY, 5))
    for i, d in enumerate(dets):
        sel = np.nonzero(d.t_arrival_s <= t + 1e-12)[0]
        sel = sel[np.argsort(-d.t_capture_s[sel], kind="stable")][:HISTORY]
        out[i, : len(sel), :3] = d.position_m[sel]
        out[i, : len(sel), 3] = t - d.t_capture_s[sel]
        out[i, : len(sel), 4] = 1.0
    return out


def _run(tracker, dets, t_eval, plane=PLANE):
    """Feeds the streams step by step; (crossing position [N, 3], crossing t [N]) at each stream's t_eval."""
    n = len(dets)
    cross_p, cross_t = np.full((n, 3), np.nan), np.full(n, np.nan)
    done = np.zeros(n, bool)
    for k in range(int(np.ceil(t_eval.max() / STEP)) + 1):
        t = k * STEP
        tracker.update(_env_detections(dets, t), np.full(n, t))
        now = ~done & (t >= t_eval - 1e-9)
        if now.any():
            c = tracker.predict_plane_crossing(plane)
            cross_p[now], cross_t[now] = c.position_m[now], c.t_s[now]
            done |= now
    return cross_p, cross_t


def test_each_environment_is_the_single_ball_filter(serves, detections):
    """Environment i's state is that of a BallUKF fed stream i's detections once each, in capture order (the
    repeated rows of the env's observation history are fed once)."""
    n = len(serves)
    tracker = BatchedUKFTracker(n)
    t_end = min(s.crossing_t_s for s in serves) - 0.05
    for k in range(int(t_end / STEP)):
        tracker.update(_env_detections(detections, k * STEP), np.full(n, k * STEP))
    t_last = int(t_end / STEP - 1) * STEP
    states, _, valid = tracker.fit_state()  # the filters' own states (state() flies them on to now)
    assert valid.all()
    for i in (0, 4, n - 1):
        d = detections[i]
        alone = BallUKF()
        for j in np.argsort(d.t_capture_s, kind="stable"):
            if d.t_arrival_s[j] <= t_last + 1e-12:
                alone.update(float(d.t_capture_s[j]), d.position_m[j])
        np.testing.assert_allclose(states[i], alone.state, rtol=1e-10, atol=1e-10)  # replays reorder sums


def test_state_is_now_as_the_fit_trackers(serves, detections):
    """state() is the ball now (the last update's time), as BatchedBallTracker.state(): each filter's mean flown
    from its newest detection (the camera latency and up to a step older) to now; fit_state() keeps the filters'
    own times."""
    n = len(serves)
    tracker = BatchedUKFTracker(n)
    for k in range(45):
        tracker.update(_env_detections(detections, k * STEP), np.full(n, k * STEP))
    now, valid = tracker.state()
    own, t_ref, _ = tracker.fit_state()
    assert valid.sum() >= n // 2 and np.all(tracker.t_now[valid] - t_ref[valid] > 0.005)
    for i in np.nonzero(valid)[0]:
        # the filter's prediction is the mean of its flown sigma points, ours the flown mean: equal to ~1e-4
        np.testing.assert_allclose(now[i], tracker.filters[i].predict(tracker.t_now[i])[0], rtol=0, atol=1e-3)
        assert np.linalg.norm(now[i, :3] - own[i, :3]) > 0.01  # it moved: the stale state was centimetres behind
    t = 44 * STEP  # the true ball now, from each serve's dense flight
    truth = np.array([[np.interp(t, s.t_s, s.states[:, k]) for k in range(3)] for s in serves])
    err_now = np.linalg.norm(now[valid, :3] - truth[valid], axis=1)
    err_own = np.linalg.norm(own[valid, :3] - truth[valid], axis=1)
    assert np.median(err_now) < 0.01 < np.median(err_own)


def test_more_accurate_than_the_constant_acceleration_fit(serves, detections):
    """On the simulated serves, 0.12 s and 0.05 s before the crossing, the filter's predicted crossing is closer to
    the truth than the batched fit's (median), and within 1.5 cm / 3 ms (median)."""
    truth_p = np.array([s.crossing_state[:3] for s in serves])
    truth_t = np.array([s.crossing_t_s for s in serves])
    for lead in (0.12, 0.05):
        t_eval = np.array([np.ceil((s.crossing_t_s - lead) / STEP) * STEP for s in serves])
        p_ukf, t_ukf = _run(BatchedUKFTracker(len(serves)), detections, t_eval)
        p_fit, _ = _run(BatchedBallTracker(len(serves)), detections, t_eval)
        err_ukf = np.linalg.norm(p_ukf - truth_p, axis=1)
        err_fit = np.linalg.norm(p_fit - truth_p, axis=1)
        assert np.all(np.isfinite(err_ukf)), lead
        assert np.median(err_ukf) < np.median(err_fit), (lead, np.median(err_ukf), np.median(err_fit))
        assert np.median(err_ukf) < 0.015, lead
        assert np.median(np.abs(t_ukf - truth_t)) < 0.003, lead


def test_reset_forgets_only_the_masked_environments(serves, detections):
    n = len(serves)
    tracker = BatchedUKFTracker(n)
    for k in range(30):
        tracker.update(_env_detections(detections, k * STEP), np.full(n, k * STEP))
    before, valid = tracker.state()
    assert valid.all()
    mask = np.zeros(n, bool)
    mask[[1, 3]] = True
    tracker.reset(mask)
    after, valid = tracker.state()
    assert not valid[mask].any() and valid[~mask].all()
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert not any(tracker.filters[i].initialized for i in (1, 3))


def test_a_gated_detection_invalidates_the_track_until_it_restarts():
    """A ball hit back (a jump in position and velocity) is not the old track: the track is invalid from the first
    gated detection until the filter re-initialises on the new flight, which then flies away (vx < 0)."""
    tracker = BatchedUKFTracker(1)
    t, rows = 0.0, []
    p, v = np.array([-1.0, 0.0, 1.0]), np.array([5.0, 0.0, 0.5])
    states = []
    for k in range(60):
        t = k * 0.005
        if k == 40:
            v = np.array([-6.0, 0.3, 1.5])  # the paddle
        p = p + v * 0.005 + np.array([0.0, 0.0, -0.5 * 9.81 * 0.005**2])
        v = v + np.array([0.0, 0.0, -9.81 * 0.005])
        rows.append((t, p.copy()))
        det = np.zeros((1, 1, 5))
        det[0, 0, :3], det[0, 0, 4] = p, 1.0
        tracker.update(det, np.array([t]))
        st, valid = tracker.state()
        states.append((valid[0], st[0, 3]))
    assert states[39][0] and states[39][1] > 4.0
    assert not states[40][0]  # the first detection after the hit is gated
    assert states[-1][0] and states[-1][1] < -4.0  # re-initialised on the return


def test_bad_input_is_named():
    tracker = BatchedUKFTracker(2)
    with pytest.raises(ValueError, match="detections"):
        tracker.update(np.zeros((3, 4, 5)), np.zeros(3))
    bad = np.zeros((2, 4, 5))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        tracker.update(bad, np.zeros(2))
    with pytest.raises(ValueError, match="mask"):
        tracker.reset(np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="x_plane_m"):
        tracker.predict_plane_crossing(np.zeros(3))
    with pytest.raises(ValueError, match="num_envs"):
        BatchedUKFTracker(0)
    with pytest.raises(ValueError, match="tracker"):
        make_batched_tracker("kalman", 2)
    assert isinstance(make_batched_tracker("fit", 2), BatchedBallTracker)
    assert make_batched_tracker("ukf", 2, sigma_m=0.004).config.sigma_m == 0.004


def test_policy_and_features_plan_from_the_filter_in_the_env():
    """The scripted policy and the neural policies' features take tracker='ukf': in the rally env the filter's
    tracks become valid and its crossings are the ones the features show."""
    from robot_rt.envs.features import FeatureExtractor, feature_names
    from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
    from robot_rt.envs.vector import TableTennisVectorEnv

    n = 4
    env = TableTennisVectorEnv(n, max_episode_steps=400)
    policy = BatchedScriptedPolicy(n, params=ScriptedParams.preset("rally"), tracker="ukf")
    features = FeatureExtractor(n, spin=True, tracker="ukf")
    assert isinstance(policy.tracker, BatchedUKFTracker) and isinstance(features.tracker, BatchedUKFTracker)
    found_col = feature_names(spin=True).index("cross_found")
    obs, _ = env.reset(seed=list(range(n)))
    planned = found = 0
    try:
        for _ in range(60):
            feats = features(obs)
            assert np.all(np.isfinite(feats))
            found += int(feats[:, found_col].sum())
            obs, *_ = env.step(policy(obs))
            planned += int(np.isfinite(policy.plan_t).sum())
    finally:
        env.close()
    assert planned > 0 and found > 0


def test_shipped_ukf_shot_model_and_its_plans_beat_the_fit_trackers():
    """The shot model shipped for tracker='ukf' is the rally preset's, fitted on the filter's plans, and in play the
    policy's contact plans are closer to the ball's true flight with it (tools/plan_errors.py on 24 tuning serves:
    the median height and vertical-velocity errors 0.1 s before the contact)."""
    import importlib.util
    from pathlib import Path

    from robot_rt.envs.scripted import ScriptedParams
    from robot_rt.envs.shot_model import shipped_shot_model

    model = shipped_shot_model("ukf")
    assert model.tracker == "ukf" and shipped_shot_model().tracker == "fit"
    np.testing.assert_allclose(model.fitted_params, ScriptedParams.preset("rally").to_vector())
    assert model.samples > 20_000 and model.heldout["in_log_loss"] < model.heldout["in_log_loss_constant"]
    tool = Path(__file__).resolve().parents[1] / "tools" / "plan_errors.py"
    spec = importlib.util.spec_from_file_location("plan_errors_under_test", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fit, ukf = (module.plan_errors(t, 24, 400, 5 * 10**6)["lead_0.1_s"] for t in ("fit", "ukf"))
    assert fit["n"] > 20 and ukf["n"] > 20
    for column in ("z_m", "vz_mps"):
        assert ukf["median_abs"][column] < 0.7 * fit["median_abs"][column], (column, ukf, fit)
