"""Batched table-tennis world core: C++ (and CUDA) step vs the NumPy reference, robot limits, the paddle contact
model, the launch/return samplers, and the gymnasium vector environment (API, autoreset, seeding, equality
with SyncVectorEnv of the single environments)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import robot_rt.envs  # noqa: F401 - registers the env ids
from robot_rt._native import available_backends, native
from robot_rt.envs import core
from robot_rt.envs.core import (
    OUTCOME_LIMIT,
    PHASE_DONE,
    PHASE_INCOMING,
    PHASE_SERVING,
    TableTennisWorld,
    paddle_contact,
    sample_launches,
    sample_returns,
)
from robot_rt.envs.human_model import HumanBehaviorModel

HAVE_CPU = native("_envs") is not None
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="robot_rt._envs is not built")


def _aim_balls(world: TableTennisWorld, idx, rng) -> None:
    """Puts an incoming ball 25 cm in front of the (static) paddle of worlds `idx`, flying at it and slightly up,
    so the return lands on the human's half: exercises hits, landings and human answers."""
    p, n = world.paddle_pose()
    for i in idx:
        ball = np.zeros(9)
        speed, tangential = rng.uniform(4.0, 6.0), np.array([0.0, rng.uniform(-0.5, 0.5), rng.uniform(2.0, 3.0)])
        flight_s = 0.2 / speed  # starts 20 cm in front of the face, arrives near its centre
        ball[:3] = p[i] + 0.2 * n[i] - tangential * flight_s + rng.uniform(-0.02, 0.02, 3)
        ball[2] += 0.5 * 9.81 * flight_s**2
        ball[3:6] = -speed * n[i] + tangential
        ball[6:9] = rng.normal(0.0, 30.0, 3)
        world.ball[i] = ball
        world.phase[i] = PHASE_INCOMING
        world.touched[i] = False
        world.landed[i] = False


def _run_pair(wa: TableTennisWorld, wb: TableTennisWorld, steps: int, seed: int, keep_robot: bool = False):
    """Steps two worlds with identical actions/resets; returns event totals and the largest state difference."""
    n = wa.n
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**31, n).tolist()
    wa.reset(np.arange(n), seeds)
    wb.reset(np.arange(n), seeds)
    aim = np.arange(0, n, 2)
    _aim_balls(wa, aim, np.random.default_rng(seed + 1))
    _aim_balls(wb, aim, np.random.default_rng(seed + 1))
    sticky = rng.uniform(-1, 1, (n, wa.dof)) * wa.v_max
    totals = {"hit": 0, "landed": 0, "limit": 0, "new_ball": 0, "terminated": 0, "serving": 0, "served": 0}
    max_diff = 0.0
    for step in range(steps):
        if step % 7 == 0:
            sticky = rng.uniform(-1, 1, (n, wa.dof)) * wa.v_max * 1.2  # beyond the limits: clipped
        cmd = sticky.copy()
        cmd[aim] = 0.0  # aimed worlds hold the paddle still: hit, landing, the human's answer
        was_serving = wa.phase == PHASE_SERVING
        ra, ta, ea = wa.step(cmd)
        rb, tb, eb = wb.step(cmd)
        for k in ea:
            assert np.array_equal(ea[k], eb[k]), (step, k)
            totals[k] += int(ea[k].sum())
        assert np.array_equal(ta, tb), step
        assert np.array_equal(wa.phase, wb.phase), step
        assert np.array_equal(wa.outcome, wb.outcome), step
        assert np.array_equal(wa.hits, wb.hits), step
        assert np.array_equal(wa.touched, wb.touched) and np.array_equal(wa.landed, wb.landed), step
        assert np.array_equal(wa.rec_active, wb.rec_active), step
        for name in ("q", "qd", "ball", "rec_pos", "cam_pos", "cam_t", "landing"):
            a, b = getattr(wa, name), getattr(wb, name)
            assert np.array_equal(np.isfinite(a), np.isfinite(b)), (step, name)
            fin = np.isfinite(a)
            if fin.any():
                max_diff = max(max_diff, float(np.max(np.abs(a[fin] - b[fin]))))
        max_diff = max(max_diff, float(np.max(np.abs(ra - rb))))
        np.testing.assert_array_equal(wa.detections()[..., 4], wb.detections()[..., 4])
        totals["terminated"] += int(ta.sum())
        totals["serving"] += int(np.sum(wa.phase == PHASE_SERVING))
        totals["served"] += int(np.sum(was_serving & (wa.phase == PHASE_INCOMING)))
        done = np.nonzero(ta)[0]
        if done.size:
            wa.reset(done, keep_robot=keep_robot)
            wb.reset(done, keep_robot=keep_robot)
    return totals, max_diff


# ------------------------------------------------------------------------------------------ C++ vs NumPy
@needs_cpu
@pytest.mark.parametrize("goal", [False, True])
def test_cpu_step_matches_numpy_reference(goal):
    n = 12
    wa = TableTennisWorld(n, backend="numpy", goal_conditioned=goal)
    wb = TableTennisWorld(n, backend="cpu", goal_conditioned=goal, num_threads=2)
    totals, max_diff = _run_pair(wa, wb, steps=70, seed=11 if goal else 7)
    assert max_diff < 1e-9, max_diff
    # the comparison must have gone through every path of the rally logic
    assert totals["hit"] >= 3, totals
    assert totals["landed"] >= 1, totals
    assert totals["limit"] >= 1, totals
    assert totals["terminated"] >= 5, totals
    if not goal:
        assert totals["new_ball"] + totals["terminated"] >= 1


@needs_cpu
def test_cpu_step_matches_numpy_reference_between_rallies():
    """Serves after a delay (the robot moves, the ball is frozen and hidden) and robots kept where the last episode
    left them: the same on both backends."""
    n = 12
    cfg = core.WorldConfig(serve_delay_s=0.03, serve_delay_jitter_s=0.1, keep_robot_pose=True)
    wa = TableTennisWorld(n, backend="numpy", config=cfg)
    wb = TableTennisWorld(n, backend="cpu", config=cfg, num_threads=2)
    totals, max_diff = _run_pair(wa, wb, steps=70, seed=5, keep_robot=True)
    assert max_diff < 1e-9, max_diff
    assert totals["serving"] >= 20 and totals["served"] >= 5, totals
    assert totals["hit"] >= 1 and totals["terminated"] >= 5, totals


@needs_cpu
def test_cpu_threads_do_not_change_results():
    n = 400  # >= 128 worlds per thread: the step really runs on 1, 2 and 3 threads
    worlds = [TableTennisWorld(n, backend="cpu", num_threads=t) for t in (1, 2, 3)]
    for w in worlds:
        w.reset(np.arange(n), list(range(n)))
    rng = np.random.default_rng(3)
    for _ in range(15):
        cmd = rng.uniform(-1, 1, (n, 8)) * worlds[0].v_max
        outs = [w.step(cmd) for w in worlds]
        for w, o in zip(worlds[1:], outs[1:]):
            np.testing.assert_array_equal(o[0], outs[0][0])
            np.testing.assert_array_equal(w.q, worlds[0].q)
            np.testing.assert_array_equal(w.ball, worlds[0].ball)
            np.testing.assert_array_equal(w.cam_pos, worlds[0].cam_pos)
            np.testing.assert_array_equal(w.observations(), worlds[0].observations())


@needs_cpu
def test_cpp_paddle_kinematics_matches_numpy():
    w = TableTennisWorld(1, backend="cpu")
    rng = np.random.default_rng(2)
    q = rng.uniform(w.q_min, w.q_max, (500, w.dof))
    p, n = w._stepper.paddle_poses(q)
    p_ref, n_ref = w.paddle_pose(q)
    np.testing.assert_allclose(p, p_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(n, n_ref, rtol=0, atol=1e-12)


@pytest.mark.gpu
def test_cuda_step_matches_cpu():
    if "cuda" not in available_backends("envs"):
        pytest.skip("robot_rt._envs_cuda not built or no CUDA device")
    n = 64
    wa = TableTennisWorld(n, backend="cpu")
    wb = TableTennisWorld(n, backend="cuda")
    totals, max_diff = _run_pair(wa, wb, steps=40, seed=5)
    assert max_diff < 1e-9, max_diff
    assert totals["hit"] >= 3


# ------------------------------------------------------------------------------------------ robot limits
@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
def test_robot_state_never_exceeds_limits(backend):
    n = 8
    w = TableTennisWorld(n, backend=backend)
    w.reset(np.arange(n), list(range(n)))
    rng = np.random.default_rng(0)
    limit_events = 0
    dt_step = w.config.step_s
    for step in range(40):
        if step % 5 == 0:
            # far beyond the velocity limits, and NaN-free: the world clips them
            cmd = rng.choice([-3.0, 3.0], (n, w.dof)) * w.v_max
        qd0 = w.qd.copy()
        _, term, ev = w.step(cmd)
        assert np.all(w.q >= w.q_min - 1e-12) and np.all(w.q <= w.q_max + 1e-12)
        assert np.all(np.abs(w.qd) <= w.v_max + 1e-9)
        assert np.all(np.abs(w.qd - qd0) <= w.a_max * dt_step + 1e-9)  # zeroing at a limit aside
        limit_events += int(ev["limit"].sum())
        assert np.all(w.outcome[ev["limit"]] == OUTCOME_LIMIT)
        assert np.all(term[ev["limit"]])
        done = np.nonzero(term)[0]
        if done.size:
            w.reset(done)
    assert limit_events >= 1


# ------------------------------------------------------------------------------------------ paddle contact
R, E, MU = 0.02, 0.85, 0.35


def _random_contacts(rng, m):
    n = rng.normal(size=(m, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    ball = np.zeros((m, 9))
    ball[:, 3:6] = rng.normal(0, 4, (m, 3))
    ball[:, 6:9] = rng.normal(0, 150, (m, 3))
    side = rng.choice([-1.0, 1.0], m)
    paddle_v = rng.normal(0, 1, (m, 3))
    # make the ball approach the face it is on
    vn = np.sum((ball[:, 3:6] - paddle_v) * n * side[:, None], axis=1)
    ball[:, 3:6] -= (np.abs(vn) + 0.5 + vn)[:, None] * n * side[:, None]
    return ball, n, paddle_v, side


def test_paddle_head_on_static_restitution():
    n = np.array([[-1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    ball = np.zeros((2, 9))
    ball[:, 3:6] = -5.0 * n  # towards the face the normal points to (side +1)
    out = paddle_contact(ball, np.zeros((2, 3)), n, np.zeros((2, 3)), np.ones(2), R, E, MU)
    np.testing.assert_allclose(out[:, 3:6], E * 5.0 * n, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out[:, 6:9], 0.0)
    # backhand face (side -1): same law mirrored
    out = paddle_contact(-ball, np.zeros((2, 3)), n, np.zeros((2, 3)), -np.ones(2), R, E, MU)
    np.testing.assert_allclose(out[:, 3:6], -E * 5.0 * n, rtol=0, atol=1e-12)


def test_paddle_moving_hits_resting_ball():
    n = np.array([[1.0, 0.0, 0.0]])
    ball = np.zeros((1, 9))
    # paddle face (side +1, the ball on the +n side) moving towards the ball at 2 m/s
    out = paddle_contact(ball, np.zeros((1, 3)), n, 2.0 * n, np.ones(1), R, E, MU)
    np.testing.assert_allclose(out[0, 3:6], (1 + E) * 2.0 * n[0], atol=1e-12)


def test_paddle_normal_law_friction_bound_and_spin_direction():
    rng = np.random.default_rng(0)
    ball, n, pv, side = _random_contacts(rng, 2000)
    out = paddle_contact(ball, np.zeros((2000, 3)), n, pv, side, R, E, MU)
    ns = n * side[:, None]
    v_rel0, v_rel1 = ball[:, 3:6] - pv, out[:, 3:6] - pv
    vn0, vn1 = np.sum(v_rel0 * ns, 1), np.sum(v_rel1 * ns, 1)
    assert np.all(vn0 < 0)
    np.testing.assert_allclose(vn1, -E * vn0, rtol=1e-10, atol=1e-12)  # the normal law
    dv = out[:, 3:6] - ball[:, 3:6]
    dv_t = dv - np.sum(dv * ns, 1)[:, None] * ns
    # Coulomb: tangential impulse within the friction cone of the normal one
    assert np.all(np.linalg.norm(dv_t, axis=1) <= MU * (1 + E) * np.abs(vn0) + 1e-10)

    def slip(state):
        vr = state[:, 3:6] - pv
        vt = vr - np.sum(vr * ns, 1)[:, None] * ns
        return vt + np.cross(state[:, 6:9], -R * ns)

    c0, c1 = slip(ball), slip(out)
    # friction opposes the contact-point slip: the tangential impulse points against it, the slip shrinks
    # (to zero at most: rolling), never reverses, and the spin change has the sign that brakes the slip
    assert np.all(np.sum(dv_t * c0, 1) <= 1e-12)
    assert np.all(np.linalg.norm(c1, axis=1) <= np.linalg.norm(c0, axis=1) + 1e-9)
    assert np.all(np.sum(c1 * c0, 1) >= -1e-9)
    dw = out[:, 6:9] - ball[:, 6:9]
    np.testing.assert_allclose(dw, (1.5 / R**2) * np.cross(-R * ns, dv_t), rtol=1e-9, atol=1e-9)
    slip_change_from_spin = np.cross(dw, -R * ns)
    assert np.all(np.sum(slip_change_from_spin * c0, 1) <= 1e-9)
    # separating balls are left alone
    away = ball.copy()
    away[:, 3:6] = 2 * pv - ball[:, 3:6]
    np.testing.assert_array_equal(paddle_contact(away, np.zeros((2000, 3)), n, pv, side, R, E, MU), away)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
def test_world_head_on_hit_on_static_paddle(backend):
    """Through the whole step: a ball flying straight at the still paddle's face leaves with ~ -e times its
    normal speed (up to the air drag and gravity of the few substeps before and after the contact)."""
    w = TableTennisWorld(1, backend=backend)
    w.reset([0], [0])
    p, n = w.paddle_pose()
    w.ball[0] = np.concatenate([p[0] + 0.05 * n[0], -6.0 * n[0], np.zeros(3)])
    _, _, ev = w.step(np.zeros((1, 8)))
    assert ev["hit"][0]
    v_n = float(w.ball[0, 3:6] @ n[0])
    assert abs(v_n - 0.85 * 6.0) < 0.1, v_n
    assert w.phase[0] == core.PHASE_RETURNING


# ------------------------------------------------------------------------------------------ samplers
def test_sample_launches_matches_human_sample():
    for human in (HumanBehaviorModel.default(), HumanBehaviorModel.real_player()):
        got = sample_launches(human, [np.random.default_rng(s) for s in range(12)])
        want = np.stack([human.sample(1, np.random.default_rng(s))[0] for s in range(12)])
        np.testing.assert_array_equal(got, want)
        assert np.all(human.is_valid(got))


@pytest.mark.skipif(not hasattr(native("_envs"), "first_contacts"), reason="robot_rt._envs not built")
def test_native_launch_validity_matches_human_is_valid():
    human = HumanBehaviorModel.real_player()
    w = TableTennisWorld(1, human=human, backend="cpu")
    rng = np.random.default_rng(9)
    cand = human.mean + rng.standard_normal((600, 9)) @ np.linalg.cholesky(human.cov + 1e-12 * np.eye(9)).T
    cand[:, 0] = human.mean[0]
    cand = cand[cand[:, 3] > 0.5]
    ok = w.launch_is_valid(cand)
    np.testing.assert_array_equal(ok, human.is_valid(cand))
    assert 0.1 < ok.mean() < 0.9
    got = sample_launches(human, [np.random.default_rng(s) for s in range(8)], w.launch_is_valid)
    want = np.stack([human.sample(1, np.random.default_rng(s))[0] for s in range(8)])
    np.testing.assert_array_equal(got, want)
    if w._first_valid is None:
        return
    # the native first-valid search: the same launches, and per group the first index the validity test accepts
    got = sample_launches(human, [np.random.default_rng(s) for s in range(8)], first_valid=w._first_valid)
    np.testing.assert_array_equal(got, want)
    cuts = np.sort(np.random.default_rng(1).integers(0, len(cand), 30))
    offsets = np.concatenate([[0], cuts, [len(cand)]]).astype(np.int64)
    first = w.first_valid_launch(cand, offsets)
    for g in range(len(offsets) - 1):
        hits = np.nonzero(ok[offsets[g] : offsets[g + 1]])[0]
        assert first[g] == (hits[0] if hits.size else -1), g
    with pytest.raises(ValueError, match="offsets"):
        w.first_valid_launch(cand, np.array([0, 5, 3], dtype=np.int64))
    with pytest.raises(ValueError, match="offsets"):
        w.first_valid_launch(cand, np.array([0, len(cand) + 1], dtype=np.int64))


def test_sample_returns_matches_human_sample_return():
    human = HumanBehaviorModel.default()
    rng = np.random.default_rng(4)
    arrivals = np.zeros((16, 9))
    arrivals[:, 0] = -1.7
    arrivals[:, 1] = rng.uniform(-0.8, 0.8, 16)
    arrivals[:, 2] = rng.uniform(0.8, 1.4, 16)
    arrivals[:, 3] = -4.0
    got = sample_returns(human, arrivals, [np.random.default_rng(100 + i) for i in range(16)])
    want = [human.sample_return(arrivals[i], np.random.default_rng(100 + i)) for i in range(16)]
    assert [g is None for g in got] == [x is None for x in want]
    assert any(g is None for g in got) or any(g is not None for g in got)
    for g, x in zip(got, want):
        if x is not None:
            np.testing.assert_array_equal(g, x)


def test_counter_uniform_stream():
    key = np.array([1, 2, 2], dtype=np.uint64)
    u = core.counter_uniform(key, np.zeros(3, dtype=np.uint64), 20000)
    assert np.all((u >= 0) & (u < 1))
    np.testing.assert_array_equal(u[1], u[2])
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    shifted = core.counter_uniform(key, np.full(3, 5, dtype=np.uint64), 10)
    np.testing.assert_array_equal(shifted, u[:, 5:15])


def test_world_bad_input():
    with pytest.raises(ValueError, match="num_worlds"):
        TableTennisWorld(0)
    with pytest.raises(ValueError, match="backend"):
        TableTennisWorld(1, backend="tpu")
    w = TableTennisWorld(2, backend="numpy")
    with pytest.raises(ValueError, match="qd_cmd"):
        w.step(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="indices"):
        w.reset([5])


@needs_cpu
def test_native_stepper_rejects_bad_arrays():
    w = TableTennisWorld(2, backend="cpu")
    w.reset([0, 1], [0, 1])
    w.q = w.q.astype(np.float32)
    with pytest.raises(TypeError, match="q: expected dtype"):
        w.step(np.zeros((2, 8)))
    w.q = np.zeros((8, 2)).T  # a transposed view: not C-contiguous
    with pytest.raises(ValueError, match="C-contiguous"):
        w.step(np.zeros((2, 8)))


# ------------------------------------------------------------------------------------------ vector env
def _assert_tree_equal(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_tree_equal(a[k], b[k])
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@needs_cpu
@pytest.mark.parametrize("env_id", ["robot_rt/TableTennis-v0", "robot_rt/TableTennisGoal-v0"])
def test_vector_env_equals_sync_vector_env(env_id):
    """Same seeds and actions: the native vector env reproduces SyncVectorEnv over the single envs exactly,
    observations, rewards, terminations, truncations (time limit) and next-step autoresets included."""
    n, limit = 3, 9
    vec = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", max_episode_steps=limit)
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", max_episode_steps=limit)
    assert type(vec.unwrapped).__name__.endswith("VectorEnv") and "Sync" not in type(vec.unwrapped).__name__
    assert vec.single_observation_space == sync.single_observation_space
    assert vec.observation_space == sync.observation_space
    assert vec.action_space == sync.action_space
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs_v, info_v = vec.reset(seed=42)
    obs_s, info_s = sync.reset(seed=42)
    _assert_tree_equal(obs_v, obs_s)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(2 * limit + 3):
        act = rng.uniform(-1, 1, vec.action_space.shape).astype(np.float32) * vec.single_action_space.high
        out_v, out_s = vec.step(act), sync.step(act)
        for a, b in zip(out_v[:4], out_s[:4]):
            _assert_tree_equal(a, b)
        for key in ("rally_length", "outcome", "t_s", "hit", "landed", "limit", "new_ball"):
            if key not in out_s[4]:  # no env reported it (all were autoreset): an all-False mask here
                assert not np.any(out_v[4].get("_" + key, False)), key
                continue
            np.testing.assert_array_equal(out_v[4]["_" + key], out_s[4]["_" + key], err_msg=key)
            m = out_s[4]["_" + key]
            np.testing.assert_array_equal(np.asarray(out_v[4][key])[m], np.asarray(out_s[4][key])[m], err_msg=key)
        ends += int(np.sum(out_v[2] | out_v[3]))
    assert ends >= n  # the time limit (at least) ended episodes, and autoreset was exercised
    vec.close()
    sync.close()


@needs_cpu
def test_vector_env_seeding_and_autoreset():
    from robot_rt.envs.vector import TableTennisVectorEnv

    def rollout(seed):
        env = TableTennisVectorEnv(4, max_episode_steps=6)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        rng = np.random.default_rng(1)
        for _ in range(14):
            o, r, te, tr, info = env.step(rng.uniform(-1, 1, (4, 8)) * env.single_action_space.high)
            assert o.shape == (4, env.single_observation_space.shape[0]) and o.dtype == np.float32
            assert env.observation_space.contains(o)
            assert r.shape == (4,) and r.dtype == np.float64 and te.dtype == np.bool_ and tr.dtype == np.bool_
            out.append(o)
            out.append(r)
        return out, env

    a, env = rollout(123)
    b, _ = rollout(123)
    c, _ = rollout(124)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    # next-step autoreset: the step after a truncation returns the first observation, reward 0
    env.reset(seed=5)
    for _ in range(6):
        _, _, te, tr, _ = env.step(np.zeros((4, 8)))
    assert np.all(te | tr)
    o, r, te, tr, info = env.step(np.zeros((4, 8)))
    np.testing.assert_array_equal(r, 0.0)
    assert not te.any() and not tr.any()
    np.testing.assert_array_equal(env.world.t, 0.0)
    assert not info["_hit"].any()
    np.testing.assert_allclose(o[:, :8], np.tile(env.world.robot.home, (4, 1)), atol=1e-6)


@needs_cpu
def test_vector_env_errors_and_reset_mask():
    from robot_rt.envs.vector import TableTennisVectorEnv

    env = TableTennisVectorEnv(3)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros((3, 8)))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        env.step(np.zeros((2, 8)))
    bad = np.zeros((3, 8))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        env.step(bad)
    with pytest.raises(ValueError, match="num_envs"):
        TableTennisVectorEnv(0)
    for _ in range(3):
        env.step(np.zeros((3, 8)))
    a, _ = env.reset(seed=[7, 8, 9])
    b, _ = TableTennisVectorEnv(3).reset(seed=7)
    np.testing.assert_array_equal(a, b)  # a list of seeds [s, s+1, ...] is the int seed s
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=[1, 2])
    for _ in range(3):
        env.step(np.zeros((3, 8)))
    t_before = env.world.t.copy()
    _, info = env.reset(options={"reset_mask": np.array([False, True, False])})
    assert env.world.t[1] == 0.0 and env.world.t[0] == t_before[0]
    np.testing.assert_array_equal(info["_t_s"], [False, True, False])


def test_vector_env_numpy_backend_runs():
    from robot_rt.envs.vector import TableTennisGoalVectorEnv

    env = TableTennisGoalVectorEnv(2, backend="numpy")
    obs, _ = env.reset(seed=3)
    assert set(obs) == {"observation", "desired_goal", "achieved_goal"}
    o, r, te, tr, info = env.step(np.zeros((2, 8)))
    assert env.observation_space.contains(o)
    assert r.shape == (2,)
    assert env.world.phase.shape == (2,) and np.all(env.world.phase != PHASE_DONE)
    np.testing.assert_array_equal(env.compute_reward(np.zeros((2, 2)), np.zeros((2, 2))), [1.0, 1.0])


# ------------------------------------------------------------------------------------------ camera
@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=needs_cpu)])
def test_camera_rate_latency_noise_and_window(backend):
    n = 6
    cfg = core.WorldConfig(camera_drop_prob=0.1, camera_noise_m=0.01)
    w = TableTennisWorld(n, config=cfg, backend=backend)
    w.reset(np.arange(n), list(range(n)))
    errors, steps = [], 30
    dt, step_s = cfg.substep_s, cfg.step_s
    for _ in range(steps):
        w.step(np.zeros((n, 8)))
        det = w.detections()
        np.testing.assert_array_equal(det, w._detections_sorted(np.arange(n)))  # window == full sort
        ok = det[..., 4] > 0
        assert np.all(det[..., 3][ok] >= cfg.camera_latency_s - 1e-9)  # nothing visible before its latency
        # frames of this step: position = the recorded substep position + noise
        fresh = (w.cam_t > (w.t - step_s + 1e-9)[:, None]) & np.isfinite(w.cam_t)
        for i, slot in zip(*np.nonzero(fresh)):
            sub = int(round((w.cam_t[i, slot] - (w.t[i] - step_s)) / dt)) - 1
            errors.append(w.cam_pos[i, slot] - w.rec_pos[i, sub])
    # frames taken over the run: camera_hz * (1 - drop) per second, unless the ball ended early
    active = w.phase != PHASE_DONE
    frames = w.cam_head[active]
    expected = cfg.camera_hz * steps * cfg.step_s * (1 - cfg.camera_drop_prob)
    assert np.all(np.abs(frames - expected) <= 4 * np.sqrt(expected * cfg.camera_drop_prob) + 2), (frames, expected)
    errors = np.array(errors)
    assert len(errors) > 100
    assert abs(errors.std() - cfg.camera_noise_m) < 0.15 * cfg.camera_noise_m
    assert np.all(np.abs(errors.mean(axis=0)) < 0.003)


# ------------------------------------------------------------------------------------------ native camera + observation
HAVE_NATIVE_CAMERA = HAVE_CPU and hasattr(native("_envs"), "observe")
needs_native_camera = pytest.mark.skipif(not HAVE_NATIVE_CAMERA, reason="robot_rt._envs lacks the native camera")

_CAM_EXACT = ("t", "cam_t", "cam_head", "cam_count", "cam_counter", "rec_active")


@needs_native_camera
@settings(max_examples=6, deadline=None)
@given(
    camera_hz=st.sampled_from([200.0, 333.0, 1500.0]),
    drop=st.floats(0.0, 0.5),
    latency=st.floats(0.0, 0.03),
    jitter=st.floats(0.0, 0.01),
    seed=st.integers(0, 2**31 - 1),
)
def test_native_camera_matches_numpy_camera(camera_hz, drop, latency, jitter, seed):
    """The camera inside the C++ step (camera_world) against TableTennisWorld._camera on the same physics:
    frames, drops, slots and capture times identical; arrival times (log1p) and positions (log1p, sin, cos) to the
    ulp by which libm and NumPy's SIMD functions may differ."""
    cfg = core.WorldConfig(
        camera_hz=camera_hz, camera_drop_prob=drop, camera_latency_s=latency, camera_latency_jitter_s=jitter
    )
    n = 9
    wa = TableTennisWorld(n, config=cfg, backend="cpu", num_threads=2)
    wb = TableTennisWorld(n, config=cfg, backend="cpu", num_threads=1)
    assert wa._native_camera
    wb._native_camera = False  # physics in C++, camera in NumPy (the reference)
    seeds = np.random.default_rng(seed).integers(0, 2**31, n).tolist()
    wa.reset(np.arange(n), seeds)
    wb.reset(np.arange(n), seeds)
    rng = np.random.default_rng(seed)
    for _ in range(45):  # > 32 frames at 1500 Hz: the ring wraps
        cmd = rng.uniform(-0.3, 0.3, (n, wa.dof)) * wa.v_max
        _, ta, _ = wa.step(cmd)
        _, tb, _ = wb.step(cmd)
        np.testing.assert_array_equal(ta, tb)
        for name in _CAM_EXACT:
            np.testing.assert_array_equal(getattr(wa, name), getattr(wb, name), err_msg=name)
        np.testing.assert_allclose(wa.cam_arrival, wb.cam_arrival, rtol=1e-15, atol=0)
        np.testing.assert_allclose(wa.cam_pos, wb.cam_pos, rtol=0, atol=1e-14)
        np.testing.assert_array_equal(wa.observations(native=True), wa.observations(native=False))
        done = np.nonzero(ta)[0]
        if done.size:
            wa.reset(done)
            wb.reset(done)
    assert wa.cam_head.sum() > 0


@needs_native_camera
@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 40), history=st.integers(1, 14), seed=st.integers(0, 2**31 - 1))
def test_native_observation_matches_numpy(n, history, seed):
    """observe_world == clip(build_observation(q, qd, detections())) bit for bit, over random rings (visible and
    pending frames, wrapped heads, empty worlds) and states beyond the bounds (clipped) or NaN."""
    w = TableTennisWorld(n, config=core.WorldConfig(history=history), backend="cpu")
    rng = np.random.default_rng(seed)
    w.q[:] = rng.uniform(w.q_min - 0.5, w.q_max + 0.5, (n, w.dof))
    w.qd[:] = rng.normal(0.0, 1.5, (n, w.dof)) * w.v_max
    w.qd[rng.random((n, w.dof)) < 0.02] = np.nan
    w.t[:] = rng.uniform(0.0, 3.0, n)
    w.cam_head[:] = rng.integers(0, 200, n)
    frames = np.minimum(w.cam_head, w.ring)
    age = np.sort(rng.uniform(0.0, 0.6, (n, w.ring)), axis=1)  # slot head-1 is the newest
    for i in range(n):
        order = (w.cam_head[i] - 1 - np.arange(w.ring)) % w.ring
        w.cam_t[i] = -np.inf
        w.cam_arrival[i] = np.inf
        k = frames[i]
        w.cam_t[i, order[:k]] = w.t[i] - age[i, :k]
        w.cam_arrival[i, order[:k]] = w.cam_t[i, order[:k]] + rng.choice([0.0, 0.01, 0.2], k)
    w.cam_pos[:] = rng.normal(0.0, 4.0, (n, w.ring, 3))
    native = w.observations(native=True)
    ref = w.observations(native=False)
    assert native.dtype == np.float32 and native.shape == (n, 2 * w.dof + 5 * history)
    np.testing.assert_array_equal(native, ref)
    np.testing.assert_array_equal(np.signbit(native), np.signbit(ref))


@needs_native_camera
def test_native_observe_and_camera_reject_bad_arrays():
    w = TableTennisWorld(3, backend="cpu")
    w.reset(np.arange(3), [0, 1, 2])
    low, high = w.observation_bounds()
    mod = native("_envs")
    good = dict(q=w.q, qd=w.qd, t=w.t, cam_t=w.cam_t, cam_arrival=w.cam_arrival, cam_pos=w.cam_pos)
    good.update(cam_head=w.cam_head, low=low, high=high, out=np.empty((3, low.size), np.float32))
    mod.observe(**good)
    with pytest.raises(TypeError, match="out: expected dtype"):
        mod.observe(**dict(good, out=np.empty((3, low.size))))
    with pytest.raises(ValueError, match="out: expected"):
        mod.observe(**dict(good, out=np.empty((3, low.size + 1), np.float32)))
    with pytest.raises(ValueError, match="cam_pos: unexpected shape"):
        mod.observe(**dict(good, cam_pos=np.zeros((3, w.ring, 2))))
    with pytest.raises(ValueError, match="low: unexpected shape"):
        mod.observe(**dict(good, low=low[:-1].copy()))
    w.cam_key = w.cam_key.astype(np.int64)  # the camera stream key must stay uint64
    with pytest.raises(TypeError, match="cam_key: expected dtype"):
        w.step(np.zeros((3, 8)))


def test_the_period_is_one_property_that_everyone_reads():
    from robot_rt.envs.scripted import BatchedScriptedPolicy
    from robot_rt.envs.vector import TableTennisVectorEnv

    cfg = core.WorldConfig(policy_hz=50.0, physics_hz=1000.0)
    assert cfg.substeps == 20 and cfg.step_s == 20 / 1000.0 and cfg.substep_s == 1 / 1000.0
    w = TableTennisWorld(2, config=cfg, backend="numpy")
    w.reset(np.arange(2), [0, 1])
    t0 = w.t.copy()
    w.step(np.zeros((2, w.dof)))
    np.testing.assert_array_equal(w.t, t0 + cfg.step_s)
    assert BatchedScriptedPolicy(2, config=cfg).dt == cfg.step_s
    assert gym.make("robot_rt/TableTennis-v0", config=cfg).unwrapped.dt == cfg.step_s
    assert TableTennisVectorEnv(2, config=cfg, backend="numpy").dt == cfg.step_s


def test_answer_probability_is_the_human_models_at_each_arrival():
    """world.answer_probability is finite exactly in the steps where a landed robot return reached the human's
    plane (the human then answers with a new ball, or misses and the rally ends 'returned'), and it is the human
    model's return probability of that arrival: with a human who never answers it is 0 there."""
    from robot_rt.envs.human_model import ReturnModel
    from robot_rt.envs.scripted import BatchedScriptedPolicy
    from robot_rt.envs.vector import TableTennisVectorEnv

    for never in (False, True):
        human = HumanBehaviorModel.default()
        if never:
            human.returns = ReturnModel(max_return_probability=0.0)
        n = 24
        env = TableTennisVectorEnv(n, human=human, max_episode_steps=400)
        pol = BatchedScriptedPolicy(n)
        obs, _ = env.reset(seed=5)
        pol.reset()
        reset_next = np.zeros(n, dtype=bool)
        arrivals = 0
        for _ in range(300):
            if reset_next.any():
                pol.reset(reset_next)
            obs, _r, term, trunc, info = env.step(pol(obs))
            p = env.world.answer_probability
            arrived = np.isfinite(p)
            expected = (info["new_ball"] & ~reset_next) | (term & (info["outcome"] == "returned"))
            np.testing.assert_array_equal(arrived, expected)
            assert np.all((p[arrived] >= 0) & (p[arrived] <= 0.95))
            if never:
                assert np.all(p[arrived] == 0.0) and not info["new_ball"].any()
            arrivals += int(arrived.sum())
            reset_next = term | trunc
        env.close()
        assert arrivals > 5
