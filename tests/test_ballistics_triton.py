"""Triton kernel (under TRITON_INTERPRET=1, in a subprocess so other modules' Triton imports are unaffected)
and the GPU backends (CUDA kernel, compiled Triton; skipped without a CUDA device) against the reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from robot_rt.ballistics import landing_point_batch, simulate_batch, time_to_plane_batch
from robot_rt.ballistics.api import available_backends
from robot_rt.ballistics.sampling import random_incoming

# one ball per contact kind inside the first steps (table, net, floor) and one in free flight
STATES = [
    [0.5, 0.1, 0.80, 3.0, 0.2, -1.0, 10.0, 50.0, -20.0],
    [-0.06, 0.0, 0.85, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [2.0, 0.5, 0.05, 1.0, 0.0, -1.0, 0.0, 0.0, 30.0],
    [-1.4, -0.2, 1.1, 6.0, 0.3, 1.0, -20.0, 40.0, 10.0],
]
H, DT = 0.045, 3e-3

_SCRIPT = textwrap.dedent(
    f"""
    import json, os, warnings
    os.environ["TRITON_INTERPRET"] = "1"
    warnings.filterwarnings("ignore")
    import numpy as np, torch
    from robot_rt.ballistics import simulate_batch, time_to_plane_batch, landing_point_batch
    x = torch.tensor({STATES!r}, dtype=torch.float64)
    out = {{}}
    for name, t in (("f64", x), ("f32", x.float())):
        r = simulate_batch(t, {H}, {DT}, backend="triton", record_every=5, max_events=3)
        out[name] = dict(final=r.final_state.double().tolist(), count=r.event_count.tolist(),
                         ev_t=r.event_t_s.double().tolist(), ev_kind=r.event_kind.tolist(),
                         ev_state=r.event_state.double().tolist(), samples=r.samples.double().tolist())
    c = time_to_plane_batch(x, 0.55, dt_s={DT}, horizon_s={H}, backend="triton")
    out["plane"] = dict(t=c.t_s.tolist(), state=c.state.tolist(), found=c.found.tolist())
    lp = landing_point_batch(x, dt_s={DT}, horizon_s={H}, backend="triton")
    out["land"] = dict(t=lp.t_s.tolist(), state=lp.state.tolist(), found=lp.found.tolist())
    print("RESULT" + json.dumps(out))
    """
)


def _nan(a):
    return np.array(a, dtype=np.float64)


@pytest.fixture(scope="module")
def interpreted():
    env = dict(os.environ, TRITON_INTERPRET="1")
    p = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_triton_interpreter_simulate(interpreted):
    x = np.array(STATES)
    ref = simulate_batch(x, H, DT, backend="numpy", record_every=5, max_events=3)
    assert ref.event_count.tolist() == [1, 1, 1, 0]
    assert ref.event_kind[:3, 0].tolist() == [1, 2, 3]
    for name, tol in (("f64", 1e-10), ("f32", 2e-5)):
        r = interpreted[name]
        np.testing.assert_array_equal(r["count"], ref.event_count)
        np.testing.assert_array_equal(r["ev_kind"], ref.event_kind)
        np.testing.assert_allclose(_nan(r["ev_t"]), ref.event_t_s, atol=tol, equal_nan=True)
        np.testing.assert_allclose(_nan(r["final"]), ref.final_state, rtol=tol, atol=tol)
        np.testing.assert_allclose(_nan(r["samples"]), ref.samples, rtol=tol, atol=tol)
        np.testing.assert_allclose(_nan(r["ev_state"]), ref.event_state, rtol=tol, atol=tol, equal_nan=True)


def test_triton_interpreter_crossings(interpreted):
    x = np.array(STATES)
    c = time_to_plane_batch(x, 0.55, dt_s=DT, horizon_s=H, backend="numpy")
    lp = landing_point_batch(x, dt_s=DT, horizon_s=H, backend="numpy")
    assert c.found.tolist() == [True, False, False, False] and lp.found.tolist() == [True, False, False, False]
    r = interpreted["plane"]
    np.testing.assert_array_equal(r["found"], c.found)
    np.testing.assert_allclose(_nan(r["t"]), c.t_s, atol=1e-11, equal_nan=True)
    np.testing.assert_allclose(_nan(r["state"]), c.state, atol=1e-10, equal_nan=True)
    r = interpreted["land"]
    np.testing.assert_array_equal(r["found"], lp.found)
    np.testing.assert_allclose(_nan(r["t"]), lp.t_s, atol=1e-11, equal_nan=True)


# ------------------------------------------------------------------------------------------- GPU

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _rally(n, seed=0):
    # lower launches and flatter arcs than the defaults: some hit the net or miss the table
    return random_incoming(n, seed, z_m=(0.83, 1.2), vz_m_s=(0.0, 1.8))


@gpu
@needs_gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gpu_backend_matches_cpu(backend, dtype):
    if backend == "cuda" and "cuda" not in available_backends():
        pytest.skip("robot_rt._ballistics_cuda not built")
    x = _rally(20000)
    xd = torch.tensor(x, dtype=dtype, device="cuda")
    g = simulate_batch(xd, 0.6, 1e-3, backend=backend, record_every=50, max_events=4)
    c = simulate_batch(
        x.astype(np.float64 if dtype == torch.float64 else np.float32),
        0.6,
        1e-3,
        backend="cpu",
        record_every=50,
        max_events=4,
    )
    assert g.final_state.is_cuda and g.final_state.dtype == dtype
    same = g.event_count.cpu().numpy() == c.event_count
    assert same.mean() > 0.995  # a ball grazing an edge may differ at float rounding
    tol = 1e-8 if dtype == torch.float64 else 5e-4
    np.testing.assert_allclose(
        g.final_state.cpu().double().numpy()[same, :6], c.final_state[same, :6].astype(np.float64), rtol=tol, atol=tol
    )
    np.testing.assert_allclose(
        g.samples.cpu().double().numpy()[same, :, :3], c.samples[same, :, :3].astype(np.float64), rtol=tol, atol=tol
    )
    np.testing.assert_allclose(
        g.event_t_s.cpu().double().numpy()[same], c.event_t_s[same].astype(np.float64), atol=tol, equal_nan=True
    )
    tp = time_to_plane_batch(xd, 1.6, backend=backend)
    tc = time_to_plane_batch(x, 1.6, backend="cpu")
    agree = tp.found.cpu().numpy() == tc.found
    assert agree.mean() > 0.995
    both = agree & tc.found
    np.testing.assert_allclose(tp.t_s.cpu().double().numpy()[both], tc.t_s[both], atol=10 * tol)
    lp = landing_point_batch(xd, backend=backend)
    lc = landing_point_batch(x, backend="cpu")
    both = (lp.found.cpu().numpy() == lc.found) & lc.found
    np.testing.assert_allclose(lp.state.cpu().double().numpy()[both, :3], lc.state[both, :3], atol=10 * tol)


@gpu
@needs_gpu
def test_gpu_auto_backend_and_validation():
    x = torch.tensor(_rally(100), device="cuda")
    r = simulate_batch(x, 0.1, 1e-3)
    assert r.final_state.is_cuda
    bad = x.clone()
    bad[3, 4] = float("nan")
    with pytest.raises(ValueError, match="states contains NaN"):
        simulate_batch(bad, 0.1, 1e-3)
