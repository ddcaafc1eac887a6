"""Tests of robot_rt.estimation: simulated tracker, serve generator, UKF and polynomial baseline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_rt.ballistics import BallParams, simulate
from robot_rt.estimation import (
    BallUKF,
    Detections,
    PolyfitPredictor,
    ServeGenerator,
    SimulatedTracker,
)

SIGMA = 0.005
X_PLANE = 1.6


@pytest.fixture(scope="module")
def gen():
    return ServeGenerator(seed=11, x_plane_m=X_PLANE)


@pytest.fixture(scope="module")
def serves(gen):
    return gen.sample(8)


@pytest.fixture(scope="module")
def spin_serves(gen):
    """Same launch, strong topspin vs strong backspin (one bounce on the robot's half)."""
    base = np.array([-1.7, 0.1, 1.0, 7.0, -0.3, 0.9, 0.0, 0.0, 0.0])
    top = base.copy()
    top[7] = 130.0
    top[5] = 1.7  # topspin dives: launch a bit higher
    back = base.copy()
    back[7] = -130.0
    back[5] = 1.1
    return gen.fly(np.stack([top, back]))


def _run(est, det, truth=None):
    """Feed detections (arrival order); returns statuses and (t, est pos, true pos) after each accepted one."""
    st, track = [], []
    for tc, p, ta in det:
        r = est.update(tc, p, ta)
        st.append(r.status)
        if truth is not None and r.status == "accepted":
            track.append((est.time_s, est.state.copy(), truth.state_at(est.time_s)))
    return st, track


def _clean_tracker(seed, **kw):
    base = dict(drop_prob=0.0, outlier_prob=0.0, false_rate=0.0, latency_s=0.01, latency_jitter_s=0.0)
    base.update(kw)
    return SimulatedTracker(seed=seed, noise_sigma_m=SIGMA, **base)


# ---------------------------------------------------------------------------------------------- tracker


def test_serve_generator_valid_and_physical(gen, serves):
    assert len(serves) == 8
    for s in serves:
        assert s.kind in ("drive", "serve")
        assert s.initial_state[0] < -1.37 and s.initial_state[3] > 0
        assert abs(s.crossing_state[0] - X_PLANE) < 1e-6
        n_bounce = len([t for t in s.event_t_s if t < s.crossing_t_s])
        assert n_bounce == (1 if s.kind == "drive" else 2)
        assert 20 <= np.linalg.norm(s.initial_state[6:]) <= 200
        # the truth is the project's physics: compare with ballistics.simulate from the initial state
        tr = simulate(s.initial_state, 0.3, 1e-3, s.params, backend="numpy")
        k = np.searchsorted(tr.t_s, 0.2)
        assert np.allclose(s.state_at(tr.t_s[k]), tr.states[k], atol=1e-6)
    a = ServeGenerator(seed=5).sample(3)
    b = ServeGenerator(seed=5).sample(3)
    assert all(np.array_equal(x.states, y.states) for x, y in zip(a, b))


def test_tracker_noise_drops_latency_reorder(serves):
    s = serves[0]
    tr = SimulatedTracker(
        seed=3, noise_sigma_m=0.008, drop_prob=0.2, false_rate=0.5, outlier_prob=0.0, latency_jitter_s=0.01
    )
    d = tr.observe(s)
    real = ~d.is_false
    err = d.position_m[real] - s.state_at(d.t_capture_s[real])[:, :3]
    assert 0.0065 < err.std() < 0.0095
    n_frames = (min(s.crossing_t_s + 0.02, s.t_s[-1]) - s.t_s[0]) * 200
    assert 0.7 * n_frames < real.sum() < 0.9 * n_frames  # 20 % dropped
    assert d.is_false.sum() > 0.3 * n_frames  # clutter
    assert np.all(np.diff(d.t_arrival_s) >= 0)
    assert np.all(d.t_arrival_s - d.t_capture_s >= tr.config.latency_s - 1e-12)
    assert np.any(np.diff(d.t_capture_s) < 0)  # some detections arrive out of order
    d2 = SimulatedTracker(
        seed=3, noise_sigma_m=0.008, drop_prob=0.2, false_rate=0.5, outlier_prob=0.0, latency_jitter_s=0.01
    ).observe(s)
    assert np.array_equal(d.position_m, d2.position_m)


# ---------------------------------------------------------------------------------------------- UKF


def test_ukf_position_error_well_below_noise(serves):
    errs, nees = [], []
    for i, s in enumerate(serves[:4]):
        # variable rate: 125-200 Hz and 10 % dropped frames
        det = _clean_tracker(100 + i, rate_hz=(125.0, 150.0, 200.0, 200.0)[i], drop_prob=0.1).observe(s)
        ukf = BallUKF(sigma_m=SIGMA)
        for tc, p, ta in det:
            if ukf.update(tc, p, ta).status != "accepted":
                continue
            if ukf.n_tracks == 1 and ukf.time_s > det.t_capture_s.min() + 0.12:
                e = ukf.state[:3] - s.state_at(ukf.time_s)[:3]
                errs.append(np.linalg.norm(e))
                nees.append(e @ np.linalg.solve(ukf.covariance[:3, :3], e))
    rms = float(np.sqrt(np.mean(np.square(errs))))
    noise_rms = SIGMA * np.sqrt(3)  # 3-D rms of one detection
    assert rms < 0.5 * noise_rms, (rms, noise_rms)
    # the position covariance is consistent with the actual errors (mean NEES ~ 3 for 3 dof)
    assert 1.0 < np.mean(nees) < 6.0, np.mean(nees)


def test_ukf_plane_crossing_error_shrinks(serves):
    early, late = [], []
    for i, s in enumerate(serves[:4]):
        det = _clean_tracker(200 + i).observe(s)
        ukf = BallUKF(sigma_m=SIGMA)
        for k, (tc, p, ta) in enumerate(det):
            ukf.update(tc, p, ta)
            left = s.crossing_t_s - ta
            if not ukf.initialized or k % 3 or left <= 0:
                continue
            if 0.3 < left < 0.45 or left < 0.08:
                c = ukf.predict_plane_crossing(X_PLANE)
                assert c is not None
                e = np.linalg.norm(c.position_m[1:] - s.crossing_state[1:3])
                (early if left > 0.2 else late).append(e)
    assert len(early) > 5 and len(late) > 5
    assert np.median(late) < 0.6 * np.median(early), (np.median(late), np.median(early))
    assert np.median(late) < 0.015


def test_ukf_out_of_order_equals_in_order(serves):
    s = serves[1]
    det = SimulatedTracker(seed=7, noise_sigma_m=SIGMA, latency_jitter_s=0.015, false_rate=0.05).observe(s)
    assert np.any(np.diff(det.t_capture_s) < 0)
    a = BallUKF(sigma_m=SIGMA, history_s=0.3)
    _run(a, det)
    b = BallUKF(sigma_m=SIGMA, history_s=0.3)
    srt = det.sorted_by_capture()
    for i in range(len(srt)):
        b.update(srt.t_capture_s[i], srt.position_m[i])
    assert a.n_replayed > 0 and b.n_replayed == 0
    assert a.time_s == b.time_s
    np.testing.assert_allclose(a.state, b.state, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.covariance, b.covariance, rtol=0, atol=1e-12)
    # a measurement older than the history is ignored and leaves the state untouched
    x = a.state
    r = a.update(a.time_s - 1.0, s.state_at(0.0)[:3])
    assert r.status == "too_late"
    np.testing.assert_array_equal(a.state, x)


def test_ukf_outliers_gated_without_corrupting_state(serves):
    s = serves[2]
    clean = _clean_tracker(9).observe(s)
    rng = np.random.default_rng(0)
    # every 5th frame gets an extra wrong blob 6-30 cm away, same capture time
    idx = np.arange(8, len(clean), 5)
    d = rng.normal(size=(len(idx), 3))
    d *= rng.uniform(0.06, 0.3, (len(idx), 1)) / np.linalg.norm(d, axis=1, keepdims=True)
    bad = Detections(
        clean.t_capture_s[idx],
        clean.t_arrival_s[idx] + 1e-4,
        clean.position_m[idx] + d,
        np.ones(len(idx), bool),
        np.zeros(len(idx), np.int64),
    )
    mixed = Detections.concatenate([clean, bad])
    a = BallUKF(sigma_m=SIGMA)
    st_a, _ = _run(a, clean)
    b = BallUKF(sigma_m=SIGMA)
    st_b, _ = _run(b, mixed)
    assert st_b.count("gated") == len(idx)
    np.testing.assert_allclose(b.state, a.state, atol=1e-9)
    # without gating the same outliers do corrupt the estimate (the test can fail)
    c = BallUKF(sigma_m=SIGMA, gate_probability=0.9999)
    c._gate = np.inf
    _run(c, mixed)
    assert np.linalg.norm(c.state[:3] - a.state[:3]) > 3e-3 or np.linalg.norm(c.state[3:6] - a.state[3:6]) > 0.05


def test_ukf_second_ball_reinitialises(serves):
    s1, s2 = serves[3], serves[4]
    d1 = _clean_tracker(21).observe(s1)
    # ball 2 appears on the human side right after ball 1's last detection (no gap)
    off = float(d1.t_capture_s.max()) + 0.005
    d2 = _clean_tracker(22).observe(s2, t_offset_s=off, ball_id=1)
    ukf = BallUKF(sigma_m=SIGMA)
    st, _ = _run(ukf, Detections.concatenate([d1, d2]))
    assert ukf.n_tracks == 2
    assert st.count("reinitialised") == 1
    t_new = ukf.time_s
    assert np.linalg.norm(ukf.state[:3] - s2.state_at(t_new - off)[:3]) < 0.01
    # long gap (> max_gap_s): new track as well
    d3 = _clean_tracker(23).observe(s1, t_offset_s=float(d2.t_capture_s.max()) + 0.5, ball_id=2)
    _run(ukf, d3)
    assert ukf.n_tracks == 3


def test_ukf_bounce_prediction(spin_serves):
    for s in spin_serves:
        tb = s.event_t_s[-1]  # bounce on the robot's half
        det = _clean_tracker(31).observe(s).sorted_by_capture()
        ukf = BallUKF(sigma_m=SIGMA)
        m = det.t_capture_s < tb - 0.03
        for i in np.nonzero(m)[0]:
            ukf.update(det.t_capture_s[i], det.position_m[i])
        x, P = ukf.predict(tb + 0.06)  # predicted through the bounce
        xt = s.state_at(tb + 0.06)
        assert np.linalg.norm(x[:3] - xt[:3]) < 0.02, (x[:3], xt[:3])
        assert x[5] > 0 and abs(x[5] - xt[5]) < 0.25  # rebound, vertical speed right
        # after feeding the rest, the post-bounce state is accurate
        for i in np.nonzero(~m)[0]:
            ukf.update(det.t_capture_s[i], det.position_m[i])
        assert np.linalg.norm(ukf.state[:3] - s.state_at(ukf.time_s)[:3]) < 0.006


def test_ukf_spin_sign_observable_and_helps(spin_serves):
    pos_err = {"spin": 0.0, "nospin": 0.0}
    t_err = {"spin": 0.0, "nospin": 0.0}
    for s in spin_serves:
        wy_true = s.initial_state[7]
        tb = s.event_t_s[-1]
        det = _clean_tracker(41).observe(s).sorted_by_capture()
        m = det.t_capture_s < tb - 0.01  # flight before the robot-side bounce only
        ukf = BallUKF(sigma_m=SIGMA)
        nospin = BallUKF(
            sigma_m=SIGMA, init_spin_sigma_radps=1e-3, init_spin_parallel_sigma_radps=1e-3, spin_noise_psd=0.0
        )
        for i in np.nonzero(m)[0]:
            ukf.update(det.t_capture_s[i], det.position_m[i])
            nospin.update(det.t_capture_s[i], det.position_m[i])
        wy = ukf.state[7]
        # top/back spin: right sign and a substantial magnitude, uncertainty well below the prior
        assert np.sign(wy) == np.sign(wy_true) and abs(wy) > 0.5 * abs(wy_true), (wy, wy_true)
        assert np.sqrt(ukf.covariance[7, 7]) < 0.5 * ukf.config.init_spin_sigma_radps
        for name, est in (("spin", ukf), ("nospin", nospin)):
            c = est.predict_plane_crossing(X_PLANE)
            pos_err[name] += np.linalg.norm(c.position_m[1:] - s.crossing_state[1:3])
            t_err[name] += abs(c.t_s - s.crossing_t_s)
    # predictions through the bounce improve with the spin estimate
    assert t_err["spin"] < 0.5 * t_err["nospin"], t_err
    assert pos_err["spin"] < pos_err["nospin"], pos_err


def test_ukf_native_and_numpy_physics_agree(serves):
    """The UKF gives the same result on the NumPy reference and on the C++ mirror of the physics."""
    from robot_rt.estimation import _physics

    if _physics._native is None:
        pytest.skip("native robot_rt._ballistics not built")
    det = _clean_tracker(90).observe(serves[0]).sorted_by_capture()
    a, b = BallUKF(sigma_m=SIGMA, backend="numpy"), BallUKF(sigma_m=SIGMA, backend="cpu")
    assert a.model.backend == "numpy" and b.model.backend == "cpu"
    for i in range(len(det)):
        a.update(det.t_capture_s[i], det.position_m[i])
        b.update(det.t_capture_s[i], det.position_m[i])
    np.testing.assert_allclose(a.state, b.state, rtol=1e-9, atol=1e-9)


def test_ukf_plane_crossing_covariance_and_none(spin_serves):
    s = spin_serves[0]
    det = _clean_tracker(51).observe(s).sorted_by_capture()
    ukf = BallUKF(sigma_m=SIGMA)
    assert ukf.predict_plane_crossing(X_PLANE) is None  # no track yet
    for i in range(30):
        ukf.update(det.t_capture_s[i], det.position_m[i])
    c = ukf.predict_plane_crossing(X_PLANE, with_covariance=True)
    assert c.cov_tyz is not None and np.all(np.linalg.eigvalsh(c.cov_tyz) > 0)
    assert abs(c.position_m[0] - X_PLANE) < 1e-9
    assert ukf.predict_plane_crossing(-3.0) is None  # behind the ball


# ---------------------------------------------------------------------------------------------- baseline


def test_polyfit_baseline_predicts_and_gates(serves):
    errs_late, n_gated = [], 0
    for i, s in enumerate(serves[:4]):
        det = SimulatedTracker(seed=60 + i, noise_sigma_m=SIGMA, outlier_prob=0.05, false_rate=0.0).observe(s)
        poly = PolyfitPredictor(sigma_m=SIGMA)
        for tc, p, ta in det:
            n_gated += poly.update(tc, p, ta).status == "gated"
            left = s.crossing_t_s - ta
            if 0 < left < 0.06:
                c = poly.predict_plane_crossing(X_PLANE)
                errs_late.append(np.linalg.norm(c.position_m[1:] - s.crossing_state[1:3]))
        assert poly.n_tracks == 1
    assert n_gated >= 3
    assert np.median(errs_late) < 0.02, np.median(errs_late)


def test_polyfit_detects_bounce_and_second_ball(serves):
    s = serves[0]
    det = _clean_tracker(70).observe(s)
    poly = PolyfitPredictor(sigma_m=SIGMA)
    _run(poly, det)
    assert poly._t_bounce > s.event_t_s[-1] - 0.02 and poly._t_bounce < s.event_t_s[-1] + 0.02
    d2 = _clean_tracker(71).observe(serves[1], t_offset_s=float(det.t_capture_s.max()) + 0.005)
    _run(poly, d2)
    assert poly.n_tracks == 2


def test_polyfit_out_of_order_close_to_in_order(serves):
    s = serves[2]
    det = SimulatedTracker(seed=72, noise_sigma_m=SIGMA, latency_jitter_s=0.015, outlier_prob=0.0).observe(s)
    m = det.t_arrival_s < s.crossing_t_s - 0.15
    part = Detections(*(getattr(det, f.name)[m] for f in dataclasses.fields(Detections)))
    a, b = PolyfitPredictor(sigma_m=SIGMA), PolyfitPredictor(sigma_m=SIGMA)
    _run(a, part)
    srt = part.sorted_by_capture()
    for i in range(len(srt)):
        b.update(srt.t_capture_s[i], srt.position_m[i])
    ca, cb = a.predict_plane_crossing(X_PLANE), b.predict_plane_crossing(X_PLANE)
    assert np.linalg.norm(ca.position_m - cb.position_m) < 0.005 and abs(ca.t_s - cb.t_s) < 0.003


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [BallUKF, PolyfitPredictor])
def test_bad_input_raises(cls):
    est = cls()
    with pytest.raises(ValueError, match="position_m"):
        est.update(0.0, [0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="shape"):
        est.update(0.0, [0.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        est.update(0.0, np.zeros((1, 3)))
    with pytest.raises(TypeError, match="position_m"):
        est.update(0.0, ["a", "b", "c"])
    with pytest.raises(ValueError, match="t_capture_s"):
        est.update(np.inf, [0.0, 0.0, 1.0])
    with pytest.raises(TypeError, match="t_capture_s"):
        est.update("now", [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="before its capture"):
        est.update(1.0, [0.0, 0.0, 1.0], t_arrival_s=0.5)
    est.update(1.0, [0.0, 0.0, 1.0], t_arrival_s=1.01)
    with pytest.raises(ValueError, match="non-decreasing"):
        est.update(0.9, [0.0, 0.0, 1.0], t_arrival_s=1.0)
    with pytest.raises((ValueError, TypeError)):
        cls(sigma_m=-1.0)
    with pytest.raises(TypeError, match="params"):
        cls(params="default")


def test_bad_input_ukf_predict_and_tracker(serves):
    ukf = BallUKF()
    with pytest.raises(RuntimeError, match="no track"):
        ukf.predict(1.0)
    det = _clean_tracker(80).observe(serves[0]).sorted_by_capture()
    for i in range(10):
        ukf.update(det.t_capture_s[i], det.position_m[i])
    with pytest.raises(ValueError, match="forward"):
        ukf.predict(ukf.time_s - 0.1)
    with pytest.raises(ValueError, match="x_plane_m"):
        ukf.predict_plane_crossing(np.nan)
    with pytest.raises(ValueError, match="gate_probability"):
        BallUKF(gate_probability=0.5)
    with pytest.raises(ValueError, match="backend"):
        BallUKF(backend="gpu")
    with pytest.raises(ValueError, match="noise_sigma_m"):
        SimulatedTracker(noise_sigma_m=-0.001)
    with pytest.raises(ValueError, match="drop_prob"):
        SimulatedTracker(drop_prob=1.5)
    with pytest.raises(TypeError, match="serve"):
        SimulatedTracker().observe(np.zeros((10, 9)))
    with pytest.raises(ValueError, match="x_plane_m"):
        ServeGenerator(x_plane_m=0.5)
    with pytest.raises(ValueError, match="states"):
        ServeGenerator().fly(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="t_s"):
        serves[0].state_at(99.0)
    assert dataclasses.is_dataclass(BallParams())
