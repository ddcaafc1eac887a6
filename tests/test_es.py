"""BGS evolution strategy: optimises known objectives, antithetic pairs, bounds, determinism, resume, errors."""

import numpy as np
import pytest

from robot_rt.learning.es import BGS, ESConfig

LOWER = np.array([-2.0, 0.0, 10.0, -1.0])
UPPER = np.array([2.0, 1.0, 20.0, 1.0])
TARGET = np.array([0.7, 0.25, 17.0, -0.4])


def _objective(x, rng=None, noise=0.0):
    """Shifted quadratic in unit-box coordinates (higher is better), optionally noisy."""
    u = (x - LOWER) / (UPPER - LOWER)
    ut = (TARGET - LOWER) / (UPPER - LOWER)
    f = -np.sum((u - ut) ** 2, axis=-1)
    if noise:
        f = f + rng.normal(0.0, noise, f.shape)
    return f


def _run(seed, generations, noise=0.0, config=None):
    es = BGS((LOWER + UPPER) / 2, LOWER, UPPER, config or ESConfig(num_directions=8, top_k=4), seed=seed)
    rng = np.random.default_rng(seed + 100)
    for _ in range(generations):
        es.tell(_objective(es.ask(), rng, noise))
    return es


def test_converges_on_a_shifted_quadratic():
    es = _run(0, 150)
    start = _objective((LOWER + UPPER) / 2)
    assert _objective(es.mean) > 0.05 * start  # 95 % of the initial gap closed
    u_err = np.abs((es.mean - TARGET) / (UPPER - LOWER))
    assert np.all(u_err < 0.08)


def test_converges_on_a_noisy_objective():
    cfg = ESConfig(num_directions=8, top_k=4, sigma=0.08, step_size=0.03)
    es = _run(1, 200, noise=0.01, config=cfg)
    assert np.all(np.abs((es.mean - TARGET) / (UPPER - LOWER)) < 0.12)


def test_candidates_are_antithetic_pairs_around_the_mean():
    es = BGS((LOWER + UPPER) / 2, LOWER, UPPER, ESConfig(sigma=0.01), seed=3)
    cand = es.ask()
    assert cand.shape == (16, 4)
    np.testing.assert_allclose((cand[0::2] + cand[1::2]) / 2, np.broadcast_to(es.mean, (8, 4)), atol=1e-12)
    assert np.all(np.abs(cand[0::2] - cand[1::2]).sum(axis=1) > 0)


def test_bounds_respected_even_with_huge_steps():
    cfg = ESConfig(num_directions=4, top_k=2, sigma=2.0, step_size=5.0)
    es = BGS(LOWER, LOWER, UPPER, cfg, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(20):
        cand = es.ask()
        assert np.all(cand >= LOWER) and np.all(cand <= UPPER)
        es.tell(rng.normal(size=len(cand)))
        assert np.all(es.mean >= LOWER) and np.all(es.mean <= UPPER)


def test_bounds_hold_exactly_at_the_edges_in_floating_point():
    lower, upper = np.array([-1.3, 0.1]), np.array([-0.2, 0.7])
    es = BGS(upper, lower, upper, ESConfig(num_directions=4, top_k=2, sigma=3.0), seed=0)
    assert np.all(es.mean <= upper)  # -1.3 + 1.0 * 1.1 rounds above -0.2 unless clipped
    cand = es.ask()
    assert np.all(cand >= lower) and np.all(cand <= upper)
    assert np.any(cand == upper) and np.any(cand == lower)


def test_flat_objective_does_not_move_the_mean():
    es = BGS((LOWER + UPPER) / 2, LOWER, UPPER, seed=5)
    start = es.mean.copy()
    es.ask()
    es.tell(np.full(16, 3.0))
    np.testing.assert_array_equal(es.mean, start)


def test_deterministic_with_seed_and_resumable():
    a, b = _run(7, 10, noise=0.05), _run(7, 10, noise=0.05)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert not np.array_equal(a.mean, _run(8, 10, noise=0.05).mean)
    # a restored optimiser continues exactly as the original
    restored = BGS.from_state_dict(a.state_dict())
    np.testing.assert_array_equal(restored.ask(), a.ask())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="top_k"):
        ESConfig(num_directions=2, top_k=3)
    with pytest.raises(ValueError, match="sigma"):
        ESConfig(sigma=0.0)
    with pytest.raises(ValueError, match="x0"):
        BGS(UPPER + 1, LOWER, UPPER)
    with pytest.raises(ValueError, match="upper"):
        BGS(LOWER, LOWER, LOWER)
    es = BGS(LOWER, LOWER, UPPER)
    with pytest.raises(RuntimeError, match="ask"):
        es.tell(np.zeros(16))
    es.ask()
    with pytest.raises(ValueError, match="fitness"):
        es.tell(np.zeros(3))
    with pytest.raises(ValueError, match="fitness"):
        es.tell(np.full(16, np.nan))
