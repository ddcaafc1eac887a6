"""Ball-flight physics: NumPy reference vs independent solutions, C++ header parity, API and validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from robot_rt.ballistics import (
    BallParams,
    TableGeometry,
    landing_point,
    landing_point_batch,
    pack_params,
    reference,
    simulate,
    simulate_batch,
    time_to_plane,
    time_to_plane_batch,
)
from robot_rt.ballistics.api import available_backends
from robot_rt.ballistics.sampling import random_incoming

HAS_CPU = "cpu" in available_backends()
needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="native extension robot_rt._ballistics not built")
P = BallParams()
TG = TableGeometry()
ZT = TG.surface_height_m + P.radius_m
NO_AERO = dataclasses.replace(P, drag_coefficient=0.0, lift_coefficient_slope=0.0, spin_decay_per_s=0.0)


def serves(n: int, seed: int = 0) -> np.ndarray:
    """Balls leaving the opponent's side towards the robot, landing well inside the table."""
    return random_incoming(n, seed)


# ------------------------------------------------------------------------- independent solutions


def solve_ivp_flight(y0, t_end, params=P):
    """DOP853 at rtol=atol=1e-12 with terminal events for the table top and the floor (rebound via the
    reference maps); returns the state at t_end and the contact times."""
    pk = pack_params(params)

    def f(t, y):
        return reference.derivative(y, pk)

    def ev_table(t, y):
        return y[2] - ZT

    ev_table.terminal, ev_table.direction = True, -1

    def ev_floor(t, y):
        return y[2] - params.radius_m

    ev_floor.terminal, ev_floor.direction = True, -1
    t, y, contacts = 0.0, np.array(y0, float), []
    while t < t_end:
        sol = solve_ivp(f, (t, t_end), y, method="DOP853", rtol=1e-12, atol=1e-12, events=[ev_table, ev_floor])
        if sol.status == 1:
            if sol.t_events[0].size:
                t, y = float(sol.t_events[0][0]), sol.y_events[0][0].copy()
                if abs(y[0]) <= TG.length_m / 2 and abs(y[1]) <= TG.width_m / 2:
                    y = reference.table_bounce(y, pk)
                    contacts.append(("table", t))
                else:  # beside/beyond the table: falls on
                    y[2] -= 1e-13
            else:
                t, y = float(sol.t_events[1][0]), sol.y_events[1][0].copy()
                y = reference.floor_bounce(y, pk)
                contacts.append(("floor", t))
        else:
            return sol.y[:, -1], contacts
    return y, contacts


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
@pytest.mark.parametrize("with_bounce", [False, True])
def test_against_solve_ivp(backend, with_bounce):
    if with_bounce:
        y0 = np.array([-1.4, 0.2, 1.05, 6.5, -0.3, 1.0, 40.0, 110.0, -60.0])  # table, then floor
    else:  # beside the table (|y| > half width) and high: no contact within 1 s
        y0 = np.array([-1.0, 1.2, 1.0, 3.0, 0.5, 5.0, 20.0, -50.0, 80.0])
    traj = simulate(y0, 1.0, 1e-3, backend=backend)
    exact, contacts = solve_ivp_flight(y0, 1.0)
    err = np.linalg.norm(traj.states[-1, :3] - exact[:3])
    assert err < 1e-3  # the bound
    assert err < 1e-6  # what RK4 at 1 ms with located contacts actually achieves
    assert [e.kind for e in traj.events] == [c[0] for c in contacts]
    assert (len(contacts) > 0) == with_bounce
    for e, (_, tc) in zip(traj.events, contacts):
        assert abs(e.t_s - tc) < 1e-8  # located inside the step, not at the step boundary


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
def test_exact_parabola_with_bounce(backend):
    """No drag, no lift, frictionless table: the reference is the piecewise parabola (RK4 is exact)."""
    params = dataclasses.replace(NO_AERO, table_friction=0.0)
    g = params.gravity_mps2
    y0 = np.array([0.2, 0.1, 1.0, 4.0, 0.3, 0.5, 10.0, 200.0, -30.0])
    dt = 1e-3
    traj = simulate(y0, 0.5, dt, params, backend=backend)
    # bounce time: z0 + vz t - g t^2/2 = ZT
    tb = (y0[5] + np.sqrt(y0[5] ** 2 + 2 * g * (y0[2] - ZT))) / g
    vzb = y0[5] - g * tb
    e = params.table_restitution
    t = traj.t_s
    z = np.where(t <= tb, y0[2] + y0[5] * t - 0.5 * g * t**2, ZT - e * vzb * (t - tb) - 0.5 * g * (t - tb) ** 2)
    np.testing.assert_allclose(traj.states[:, 0], y0[0] + y0[3] * t, atol=1e-12)
    np.testing.assert_allclose(traj.states[:, 1], y0[1] + y0[4] * t, atol=1e-12)
    np.testing.assert_allclose(traj.states[:, 2], z, atol=1e-10)
    assert len(traj.events) == 1 and traj.events[0].kind == "table"
    assert abs(traj.events[0].t_s - tb) < 1e-11
    lp = landing_point(y0, params, backend=backend)
    assert abs(lp.t_s - tb) < 1e-11
    np.testing.assert_allclose(lp.position, [y0[0] + y0[3] * tb, y0[1] + y0[4] * tb, ZT], atol=1e-10)
    np.testing.assert_allclose(lp.velocity[2], vzb, atol=1e-10)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
def test_time_to_plane_parabola(backend):
    y0 = np.array([-1.0, 1.2, 1.0, 3.0, 0.5, 5.0, 0.0, 0.0, 0.0])  # no contact
    c = time_to_plane(y0, 1.5, NO_AERO, backend=backend)
    t = 2.5 / 3.0
    g = NO_AERO.gravity_mps2
    assert abs(c.t_s - t) < 1e-11
    np.testing.assert_allclose(c.position, [1.5, 1.2 + 0.5 * t, 1.0 + 5 * t - 0.5 * g * t * t], atol=1e-10)
    np.testing.assert_allclose(c.velocity, [3.0, 0.5, 5.0 - g * t], atol=1e-10)
    assert time_to_plane(y0, 1.5, NO_AERO, horizon_s=0.5, dt_s=5e-3, backend=backend) is None
    # the plane behind the ball is never crossed
    assert time_to_plane(y0, -2.0, NO_AERO, dt_s=5e-3, backend=backend) is None


def test_time_to_plane_after_bounce_matches_trajectory():
    y0 = serves(1, 3)[0]
    c = time_to_plane(y0, 1.2, backend="numpy")
    traj = simulate(y0, 1.0, 1e-3, backend="numpy")
    assert traj.events and traj.events[0].kind == "table" and traj.events[0].t_s < c.t_s
    k = int(np.searchsorted(traj.states[:, 0], 1.2))  # grid bracket of the crossing
    assert traj.t_s[k - 1] <= c.t_s <= traj.t_s[k]
    assert abs(c.position[0] - 1.2) < 1e-12


# ------------------------------------------------------------------------- contact model properties


@settings(max_examples=60, deadline=None)
@given(
    v=st.tuples(st.floats(-10, 10), st.floats(-10, 10), st.floats(-10, -0.1)),
    w=st.tuples(st.floats(-400, 400), st.floats(-400, 400), st.floats(-400, 400)),
    mu=st.floats(0.0, 1.0),
    e=st.floats(0.0, 1.0),
)
def test_nakashima_rebound_properties(v, w, mu, e):
    params = dataclasses.replace(P, table_friction=mu, table_restitution=e)
    pk = pack_params(params)
    y = np.array([0.3, 0.1, ZT, *v, *w])
    out = reference.table_bounce(y, pk)
    r, m = P.radius_m, 1.0
    inertia = 2.0 / 3.0 * m * r * r  # hollow sphere
    # angular momentum about the contact point is conserved (the impulse acts there)
    np.testing.assert_allclose(m * r * out[3] + inertia * out[7], m * r * y[3] + inertia * y[7], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(-m * r * out[4] + inertia * out[6], -m * r * y[4] + inertia * y[6], rtol=1e-9, atol=1e-9)
    assert out[5] == pytest.approx(-e * y[5])
    assert out[8] == y[8]

    def energy(s):
        return 0.5 * m * np.dot(s[3:6], s[3:6]) + 0.5 * inertia * np.dot(s[6:9], s[6:9])

    assert energy(out) <= energy(y) * (1 + 1e-12) + 1e-12
    # slip never reverses: the contact point at most stops (rolling)
    slip_in = np.array([y[3] - r * y[7], y[4] + r * y[6]])
    slip_out = np.array([out[3] - r * out[7], out[4] + r * out[6]])
    assert np.dot(slip_in, slip_out) >= -1e-9
    if mu * (1 + e) * abs(v[2]) >= 0.4 * np.linalg.norm(slip_in):
        np.testing.assert_allclose(slip_out, 0.0, atol=1e-9)


def test_net_hit_and_floor_never_penetrated():
    y0 = np.array([-1.3, 0.0, 0.84, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # low and flat: into the net
    traj = simulate(y0, 2.0, 2e-3, backend="numpy")
    kinds = [e.kind for e in traj.events]
    assert kinds[:2] == ["table", "net"] or kinds[0] == "net"
    net = next(e for e in traj.events if e.kind == "net")
    assert abs(net.state_before[0] + P.radius_m) < 1e-12 and net.state_after[3] < 0
    assert (traj.states[:, 2] >= P.radius_m - 1e-12).all()
    over = (np.abs(traj.states[:, 0]) <= TG.length_m / 2) & (np.abs(traj.states[:, 1]) <= TG.width_m / 2)
    assert (traj.states[over & (traj.states[:, 2] > TG.surface_height_m), 2] >= ZT - 1e-9).all()


def test_over_the_net_and_off_the_table_edge():
    # over the net: no net event; beyond the end line: the ball falls to the floor
    y0 = np.array([-1.5, 0.0, 1.2, 6.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    traj = simulate(y0, 1.5, 1e-3, backend="numpy")
    kinds = [e.kind for e in traj.events]
    assert "net" not in kinds and kinds[0] == "table" and "floor" in kinds


# ------------------------------------------------------------------------- C++ header parity


@needs_cpu
def test_header_per_step_maths_matches_reference():
    from robot_rt import _ballistics

    rng = np.random.default_rng(1)
    y = serves(64, 1)
    y[:, 3:6] += rng.normal(0, 2, (64, 3))
    pk = pack_params()
    np.testing.assert_allclose(_ballistics.derivative(y, pk), reference.derivative(y, pk), rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(
        _ballistics.rk4_step(y, 1e-3, pk), reference.rk4_step(y, 1e-3, pk), rtol=1e-14, atol=1e-13
    )
    yt = y.copy()
    yt[:, 2] = ZT
    yt[:, 5] = -np.abs(yt[:, 5]) - 0.5
    np.testing.assert_allclose(
        _ballistics.apply_contact(yt, 1, pk), reference.table_bounce(yt, pk), rtol=1e-14, atol=1e-13
    )
    np.testing.assert_allclose(
        _ballistics.apply_contact(yt, 3, pk), reference.floor_bounce(yt, pk), rtol=1e-14, atol=1e-13
    )
    yn = y.copy()
    yn[:, 0] = -P.radius_m
    np.testing.assert_allclose(
        _ballistics.apply_contact(yn, 2, pk), reference.net_bounce(yn, pk), rtol=1e-14, atol=1e-13
    )


@needs_cpu
@pytest.mark.parametrize("n", [1, 7, 300])
def test_cpu_batch_equals_reference(n):
    x = serves(n, n)
    x[: n // 2, 2] = 0.83  # some balls low enough to hit the net
    a = simulate_batch(x, 0.6, 1e-3, backend="numpy", record_every=25, max_events=4)
    b = simulate_batch(x, 0.6, 1e-3, backend="cpu", record_every=25, max_events=4)
    np.testing.assert_allclose(b.final_state, a.final_state, atol=1e-9)
    np.testing.assert_array_equal(b.event_count, a.event_count)
    np.testing.assert_array_equal(b.event_kind, a.event_kind)
    np.testing.assert_allclose(b.event_t_s, a.event_t_s, atol=1e-11)
    np.testing.assert_allclose(b.event_state, a.event_state, atol=1e-9)
    np.testing.assert_allclose(b.samples, a.samples, atol=1e-9)
    np.testing.assert_allclose(b.samples_t_s, a.samples_t_s)
    assert b.samples.shape == (n, 25, 9)
    assert (a.event_count > 0).mean() > 0.9


@needs_cpu
def test_float32_and_torch_inputs():
    import torch

    x = serves(200, 5)
    ref64 = simulate_batch(x, 0.5, 1e-3, backend="cpu", max_events=2)
    for arr in (x.astype(np.float32), torch.tensor(x, dtype=torch.float32), torch.tensor(x)[::1]):
        out = simulate_batch(arr, 0.5, 1e-3, backend="auto", max_events=2)
        assert type(out.final_state) is type(arr)
        assert out.final_state.dtype == arr.dtype
        f = np.asarray(out.final_state, dtype=np.float64)
        np.testing.assert_allclose(f[:, :6], ref64.final_state[:, :6], rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(f[:, 6:], ref64.final_state[:, 6:], rtol=2e-4, atol=2e-2)
        np.testing.assert_array_equal(np.asarray(out.event_count), ref64.event_count)
        np.testing.assert_allclose(np.asarray(out.event_t_s, dtype=np.float64), ref64.event_t_s, atol=2e-5)
    # non-contiguous input
    xx = np.repeat(x, 2, axis=0)[::2]
    np.testing.assert_array_equal(simulate_batch(xx, 0.5, 1e-3, backend="cpu").final_state, ref64.final_state)


@needs_cpu
def test_batched_crossings_equal_single_path():
    x = serves(40, 9)
    x[0, 3] = -3.0  # flies away from the robot: never crosses x = 1.6
    tp = time_to_plane_batch(x, 1.6, backend="cpu")
    tn = time_to_plane_batch(x, 1.6, backend="numpy")
    lp = landing_point_batch(x, backend="cpu")
    assert not tp.found[0] and tp.found[1:].mean() > 0.8 and lp.found.mean() > 0.8
    np.testing.assert_array_equal(tp.found, tn.found)
    np.testing.assert_allclose(tp.t_s, tn.t_s, atol=1e-12, equal_nan=True)
    assert np.isnan(tp.state[~tp.found]).all()
    for i in range(1, 40):
        c = time_to_plane(x[i], 1.6)
        assert (c is not None) == tp.found[i]
        if c is not None:
            assert c.t_s == pytest.approx(tp.t_s[i], abs=1e-12)
            np.testing.assert_allclose(np.concatenate([c.position, c.velocity, c.spin]), tp.state[i], atol=1e-12)
        lc = landing_point(x[i])
        assert (lc is not None) == lp.found[i]
        if lc is not None:
            assert lc.t_s == pytest.approx(lp.t_s[i], abs=1e-12)
            assert abs(lc.position[2] - ZT) < 1e-12 and lc.velocity[2] < 0
    assert time_to_plane(x[0], 1.6) is None


def mixed_states(n: int, seed: int) -> np.ndarray:
    """Random balls of every kind: incoming (table bounce), low (net), beside the table (floor), leaving, heavy spin."""
    rng = np.random.default_rng(seed)
    x = serves(n, seed)
    kind = rng.integers(0, 5, n)
    x[kind == 1, 2] = rng.uniform(0.8, 0.86, (kind == 1).sum())  # low: net or table edge
    side = kind == 2
    x[side, 1] = rng.choice([-1.0, 1.0], side.sum()) * rng.uniform(0.8, 1.2, side.sum())  # floor contacts
    x[side, 2] = rng.uniform(0.1, 1.0, side.sum())
    x[kind == 3, 3] *= -1  # flies away: no crossing of x = 1.6
    x[kind == 4, 6:] = rng.uniform(-250, 250, ((kind == 4).sum(), 3))
    return x


@needs_cpu
def test_single_ball_fast_path_equals_batched_path():
    """time_to_plane / landing_point of one ball (C++ stop_one: latency-ordered RK4 step) against the batched
    C++ path (vectorised textbook-order RK4 packets): same contacts, crossing times and states to 1e-12."""
    x = mixed_states(160, 21)
    for x_plane in (1.6, 0.5, -1.0):
        tp = time_to_plane_batch(x, x_plane, backend="cpu")
        assert 0.2 < tp.found.mean() < 1.0
        for i in range(len(x)):
            c = time_to_plane(x[i], x_plane)
            assert (c is not None) == tp.found[i], i
            if c is not None:
                assert abs(c.t_s - tp.t_s[i]) <= 1e-12
                np.testing.assert_allclose(np.concatenate([c.position, c.velocity, c.spin]), tp.state[i], atol=1e-12)
                assert c.position[0] == x_plane
    lp = landing_point_batch(x, backend="cpu")
    bounced = simulate_batch(x, 1.0, 1e-3, backend="cpu").event_count
    assert lp.found.mean() > 0.3 and (bounced > 1).any()
    for i in range(len(x)):
        c = landing_point(x[i])
        assert (c is not None) == lp.found[i], i
        if c is not None:
            assert abs(c.t_s - lp.t_s[i]) <= 1e-12
            np.testing.assert_allclose(np.concatenate([c.position, c.velocity, c.spin]), lp.state[i], atol=1e-12)
    # and the float64 NumPy reference (textbook RK4 order throughout) to the tolerance of the other parity tests
    ref_tp = time_to_plane_batch(x[:48], 1.6, backend="numpy")
    fast = [time_to_plane(s, 1.6) for s in x[:48]]
    np.testing.assert_array_equal([c is not None for c in fast], ref_tp.found)
    np.testing.assert_allclose([c.t_s if c else np.nan for c in fast], ref_tp.t_s, atol=1e-12, equal_nan=True)


@needs_cpu
def test_single_simulate_cpu_equals_numpy():
    y0 = serves(1, 11)[0]
    a = simulate(y0, 0.77, 2e-3, backend="numpy")
    b = simulate(y0, 0.77, 2e-3, backend="cpu")
    np.testing.assert_allclose(a.t_s, b.t_s)
    assert a.t_s[-1] == pytest.approx(0.77) and len(a.t_s) == 386
    np.testing.assert_allclose(a.states, b.states, atol=1e-10)
    assert [(e.kind, round(e.t_s, 10)) for e in a.events] == [(e.kind, round(e.t_s, 10)) for e in b.events]
    z = simulate(y0, 0.0, 1e-3)
    assert z.states.shape == (1, 9)


# ------------------------------------------------------------------------- validation

BAD_STATES = [
    (np.full(9, np.nan), ValueError, "NaN/Inf"),
    (np.array([0, 0, 1, np.inf, 0, 0, 0, 0, 0.0]), ValueError, "NaN/Inf"),
    (np.zeros(8), ValueError, r"shape \[9\]"),
    (np.zeros((1, 9)), ValueError, r"shape \[9\]"),
    (np.zeros(9, dtype=np.int64), TypeError, "float32 or float64"),
    (np.array([9.0, 0, 1, 0, 0, 0, 0, 0, 0]), ValueError, "outside the room"),
    (np.array([0.0, 0, -0.1, 0, 0, 0, 0, 0, 0]), ValueError, "outside the room"),
    ("abc", TypeError, "NumPy array"),
]


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
@pytest.mark.parametrize("bad,exc,msg", BAD_STATES)
def test_bad_single_state(backend, bad, exc, msg):
    for fn in (
        lambda: time_to_plane(bad, 1.5, backend=backend),
        lambda: landing_point(bad, backend=backend),
        lambda: simulate(bad, 1.0, 1e-3, backend=backend),
    ):
        with pytest.raises(exc, match=msg) as ei:
            fn()
        assert "state" in str(ei.value)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
def test_bad_scalars(backend):
    y0 = serves(1)[0]
    with pytest.raises(ValueError, match="horizon_s"):
        time_to_plane(y0, 1.5, horizon_s=-1.0, backend=backend)
    with pytest.raises(ValueError, match="dt_s"):
        time_to_plane(y0, 1.5, dt_s=0.0, backend=backend)
    with pytest.raises(ValueError, match="dt_s"):
        simulate(y0, 1.0, -1e-3, backend=backend)
    with pytest.raises(ValueError, match="x_plane_m"):
        time_to_plane(y0, float("nan"), backend=backend)
    with pytest.raises(ValueError, match="horizon_s"):
        simulate_batch(y0[None], float("inf"), 1e-3, backend=backend)
    with pytest.raises(TypeError, match="params"):
        simulate(y0, 1.0, 1e-3, params="default", backend=backend)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
def test_bad_batch(backend):
    import torch

    x = serves(4)
    for bad, exc, msg in [
        (x[:, :8], ValueError, r"\[N, 9\]"),
        (x[0], ValueError, r"\[N, 9\]"),
        (x.astype(np.float16), TypeError, "float32 or float64"),
        (torch.tensor(x).to(torch.int32), TypeError, "float32 or float64"),
        (np.where(np.arange(9) == 4, np.nan, x), ValueError, "NaN/Inf"),
        (torch.tensor(x) + torch.tensor([0, 0, 9.0, 0, 0, 0, 0, 0, 0]), ValueError, "outside the room"),
    ]:
        with pytest.raises(exc, match=msg) as ei:
            simulate_batch(bad, 0.1, 1e-3, backend=backend)
        assert "states" in str(ei.value)
    with pytest.raises(ValueError, match="backend"):
        simulate_batch(x, 0.1, 1e-3, backend="gpu")
    with pytest.raises(ValueError, match="record_every"):
        simulate_batch(x, 0.1, 1e-3, backend=backend, record_every=-1)
    with pytest.raises(ValueError, match="backend='cuda'"):
        simulate_batch(x, 0.1, 1e-3, backend="cuda")


def test_params_validation():
    with pytest.raises(ValueError, match="mass_kg"):
        BallParams(mass_kg=0.0)
    with pytest.raises(ValueError, match="table_restitution"):
        BallParams(table_restitution=1.5)
    with pytest.raises(ValueError, match="drag_coefficient"):
        BallParams(drag_coefficient=float("nan"))
    with pytest.raises(ValueError, match="room"):
        TableGeometry(room_half_length_m=1.0)
    assert pack_params().shape == (16,)
    assert BallParams().drag_k_per_m == pytest.approx(1.204 * 0.47 * np.pi * 0.02**2 / (2 * 2.7e-3))


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
def test_single_ball_accepts_torch_and_lists(backend):
    import torch

    y0 = serves(1, 4)[0]
    ref_c = time_to_plane(y0, 1.6, backend=backend)
    for s in (torch.tensor(y0), torch.tensor(y0, dtype=torch.float32), list(y0), y0.astype(np.float32)):
        c = time_to_plane(s, 1.6, backend=backend)
        assert c.t_s == pytest.approx(ref_c.t_s, abs=1e-5)
    assert landing_point(torch.tensor(y0), backend=backend).t_s == pytest.approx(landing_point(y0, backend=backend).t_s)
    assert simulate(torch.tensor(y0), 0.1, 1e-3, backend=backend).states.shape == (101, 9)
    with pytest.raises(TypeError, match="state must be float32 or float64"):
        time_to_plane(torch.zeros(9, dtype=torch.int64), 1.6, backend=backend)


def test_random_incoming_ranges_and_seed():
    x = random_incoming(500, seed=3, vz_m_s=(0.0, 0.5))
    assert x.shape == (500, 9)
    assert np.array_equal(x, random_incoming(500, seed=3, vz_m_s=(0.0, 0.5)))
    assert not np.array_equal(x, random_incoming(500, seed=4, vz_m_s=(0.0, 0.5)))
    assert (x[:, 0] >= -1.6).all() and (x[:, 0] <= -1.3).all()
    assert (x[:, 5] >= 0.0).all() and (x[:, 5] <= 0.5).all()
    assert (np.abs(x[:, 6:]) <= 60.0).all()
    with pytest.raises(ValueError, match="n:"):
        random_incoming(-1)
