"""robot_rt._native: one backend table, one resolver, one error, 'auto' everywhere; and that every component
(ballistics, estimation, envs) goes through it."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rt import _native
from robot_rt._native import BACKENDS, BackendUnavailableError, available_backends, resolve_backend

HAVE_BALLISTICS = _native.native("_ballistics") is not None
HAVE_ENVS = _native.native("_envs") is not None


def test_backend_table_is_data_with_the_reference_first():
    assert set(BACKENDS) == {"ballistics", "ballistics.single_ball", "estimation", "envs"}
    for component, backends in BACKENDS.items():
        assert backends[0] == "numpy", component
        assert "auto" not in backends
        for backend in backends:
            assert backend in ("numpy", "triton") or (component, backend) in _native.NATIVE
        assert "numpy" in available_backends(component)


def test_backend_unavailable_error_is_a_runtime_error():
    assert issubclass(BackendUnavailableError, RuntimeError)


@pytest.mark.parametrize("component", sorted(BACKENDS))
def test_auto_picks_cpu_when_built_else_the_reference(component, monkeypatch):
    module = _native.NATIVE[(component, "cpu")][0]
    expected = "cpu" if _native.native(module) is not None else "numpy"
    assert resolve_backend(component) == resolve_backend(component, "auto") == expected
    real = _native.native
    monkeypatch.setattr(_native, "native", lambda name: None if name == module else real(name))
    assert resolve_backend(component, "auto") == "numpy"
    with pytest.raises(BackendUnavailableError, match=rf"backend='cpu'.*robot_rt\.{module} is not built"):
        resolve_backend(component, "cpu")
    assert "cpu" not in available_backends(component)


@pytest.mark.parametrize("component", sorted(BACKENDS))
@pytest.mark.parametrize("bad", ["gpu", "torch", "", None, 3])
def test_unknown_backend_is_a_value_error_naming_the_argument_and_the_choices(component, bad):
    with pytest.raises(ValueError, match=r"backend: expected one of \('auto', 'numpy'"):
        resolve_backend(component, bad)


def test_ballistics_follows_the_input_device():
    assert resolve_backend("ballistics", "numpy", "cpu") == "numpy"
    with pytest.raises(ValueError, match="backend='cuda' needs states as a CUDA torch tensor"):
        resolve_backend("ballistics", "cuda", "cpu", arg="states")
    with pytest.raises(ValueError, match="backend='cpu' needs states on the CPU"):
        resolve_backend("ballistics", "cpu", "cuda", arg="states")
    assert available_backends("ballistics", "cuda") == [
        b for b in available_backends("ballistics") if b in ("cuda", "triton")
    ]


def test_a_stale_build_without_the_needed_functions_counts_as_unavailable(monkeypatch):
    class Stale:  # an old robot_rt._ballistics without rk4_step/derivative
        pass

    real = _native.native
    monkeypatch.setattr(_native, "native", lambda name: Stale() if name == "_ballistics" else real(name))
    with pytest.raises(BackendUnavailableError, match="lacks rk4_step, derivative"):
        resolve_backend("estimation", "cpu")
    assert resolve_backend("estimation") == "numpy"


def test_every_component_resolves_through_the_one_resolver():
    from robot_rt.ballistics import simulate, simulate_batch
    from robot_rt.envs import TableTennisWorld
    from robot_rt.estimation import BallUKF
    from robot_rt.estimation.batched import BatchedBallTracker

    state = np.array([[-1.5, 0.0, 1.0, 5.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    for call in (
        lambda b: simulate_batch(state, 0.01, 1e-3, backend=b),
        lambda b: simulate(state[0], 0.01, 1e-3, backend=b),
        lambda b: BallUKF(backend=b),
        lambda b: BatchedBallTracker(1, backend=b),
        lambda b: TableTennisWorld(1, backend=b),
    ):
        with pytest.raises(ValueError, match="backend: expected one of"):
            call("gpu")
    assert BatchedBallTracker(1).backend == resolve_backend("estimation")
    assert TableTennisWorld(1).backend == resolve_backend("envs")
    assert BallUKF().model.backend == resolve_backend("estimation")


@pytest.mark.skipif(not HAVE_ENVS, reason="robot_rt._envs is not built")
def test_envs_cuda_without_a_device_says_so():
    if "cuda" in available_backends("envs"):
        pytest.skip("a CUDA device is present")
    from robot_rt.envs import TableTennisWorld

    with pytest.raises(BackendUnavailableError, match="backend='cuda' is unavailable for envs"):
        TableTennisWorld(1, backend="cuda")
