"""The workspace forecast (`RobotModel.forecast_workspace`, safety.hpp) against references built from the loop's own
parts, and the env-policy adapter that uses it: with the forecast, the loop's commanded paddle stays in the
workspace box under policies that carry it out without it (the loop would answer with a workspace stop)."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rt import _control
from robot_rt.bridge.env_policy import EnvPolicyAdapter
from robot_rt.control.loop import RealTimeLoop, default_soft_margin, robot_model
from robot_rt.robot import load_robot, paddle_blade_bounds, paddle_position_normal

ROBOT = load_robot()
MODEL = robot_model(ROBOT)
LOW = np.asarray(ROBOT.workspace_min_m, dtype=np.float64)
HIGH = np.asarray(ROBOT.workspace_max_m, dtype=np.float64)
LIMITS = np.stack([ROBOT.velocity_limit, ROBOT.acceleration_limit, ROBOT.jerk_limit], axis=1)


def _excess(q: np.ndarray, margin: float) -> np.ndarray:
    """Euclidean distance by which each configuration's blade (a disc of the paddle's radius about its normal)
    reaches outside the box shrunk by margin (0 inside)."""
    lowest, highest = paddle_blade_bounds(ROBOT, np.atleast_2d(q))
    out = np.maximum(np.maximum(LOW + margin - lowest, highest - (HIGH - margin)), 0.0)
    return np.sqrt(np.sum(out * out, axis=1))


def _inner_pose(rng, spread: float = 0.6) -> np.ndarray:
    """A joint configuration well inside the joint limits (the soft box plays no part there)."""
    lo, hi = ROBOT.position_min, ROBOT.position_max
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    return mid + rng.uniform(-spread, spread, ROBOT.dof) * half


def _reachable_state(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A joint state the OTG can be in: |v| <= V, |a| <= A and v + a|a|/2J within [-V, V]."""
    v = rng.uniform(-0.8, 0.8, ROBOT.dof) * ROBOT.velocity_limit
    a = rng.uniform(-0.5, 0.5, ROBOT.dof) * ROBOT.acceleration_limit
    room = ROBOT.velocity_limit - np.abs(v)
    a = np.clip(a, -np.sqrt(2 * ROBOT.jerk_limit * room), np.sqrt(2 * ROBOT.jerk_limit * room))
    return _inner_pose(rng), v, a


@pytest.mark.parametrize("seed", range(12))
def test_forecast_equals_the_otg_path_joint_by_joint(seed):
    """No ramp: the path is each joint's `otg_trajectory` to the goal at rest; the forecast's excess and first exit
    tick equal those of that path's paddle positions (NumPy forward kinematics)."""
    rng = np.random.default_rng(seed)
    p, v, a = _reachable_state(rng)
    goal = _inner_pose(rng) if seed % 3 else p + rng.normal(0, 0.05, ROBOT.dof)
    dt, horizon, margin = [1e-3, 4e-3][seed % 2], 400, [0.0, 0.02, 0.1][seed % 3]
    cols = []
    for j in range(ROBOT.dof):
        rows, _ = _control.otg_trajectory(p[j], v[j], a[j], goal[j], 0.0, LIMITS[j], dt, horizon)
        col = np.full(horizon + 1, goal[j])
        col[0] = p[j]
        col[1 : 1 + len(rows)] = rows[:, 0]
        cols.append(col)
    path = np.stack(cols, axis=1)
    ref = _excess(path, margin)
    excess, first, ticks, settled = MODEL.forecast_workspace(p, v, a, goal, dt, horizon, margin)
    # past the last joint's arrival the reference path rests on the goal, as the forecast does (it stops there)
    assert excess == pytest.approx(float(ref[: ticks + 1].max()), abs=1e-12)
    assert excess == pytest.approx(float(ref.max()), abs=1e-12)
    exits = np.nonzero(ref[: ticks + 1] > 0)[0]
    assert first == (int(exits[0]) if len(exits) else -1)
    assert settled == (ticks < horizon) or (settled and ticks == horizon)


@pytest.mark.parametrize("seed", range(8))
def test_forecast_with_a_ramp_equals_the_safety_filter_following_the_loop_reference(seed):
    """With a ramp: from rest, the loop's interpolated reference (linear from ramp_start to the goal over ramp_s with
    its velocity feed-forward, then held) through the loop's own SafetyFilter gives the forecast's path."""
    rng = np.random.default_rng(100 + seed)
    dt = 1e-3
    ramp_start = _inner_pose(rng, 0.4)
    q0 = ramp_start + rng.normal(0, 0.1, ROBOT.dof)
    goal = ramp_start + rng.normal(0, 0.2, ROBOT.dof)
    ramp_s = [0.01, 0.05, 0.2][seed % 3]
    horizon = 1500
    t = dt * np.arange(horizon)
    s = np.clip(t / ramp_s, 0.0, 1.0)[:, None]
    refs = ramp_start + s * (goal - ramp_start)
    vel = np.where((t < ramp_s)[:, None], (goal - ramp_start) / ramp_s, 0.0)
    filt = _control.SafetyFilter(robot_model(ROBOT, workspace=False), dt, q0)
    states, overrides, _ = filt.run(np.ascontiguousarray(refs), target_velocity=np.ascontiguousarray(vel))
    assert not np.any(overrides)  # far from the joint limits the filter is the OTG alone
    margin = 0.05
    ref = _excess(np.concatenate([q0[None], states[:, :, 0]]), margin)
    zero = np.zeros(ROBOT.dof)
    excess, first, ticks, settled = MODEL.forecast_workspace(
        q0, zero, zero, goal, dt, horizon, margin, ramp_start, ramp_s
    )
    assert settled and ticks < horizon
    assert excess == pytest.approx(float(ref.max()), abs=1e-9)
    exits = np.nonzero(ref > 0)[0]
    assert first == (int(exits[0]) if len(exits) else -1)


def test_forecast_ramp_edge_cases_and_errors():
    rng = np.random.default_rng(7)
    p, v, a = _reachable_state(rng)
    goal = _inner_pose(rng)
    plain = MODEL.forecast_workspace(p, v, a, goal, 2e-3, 300, 0.05)
    assert MODEL.forecast_workspace(p, v, a, goal, 2e-3, 300, 0.05, goal, 0.05) == plain  # no distance to ramp
    assert MODEL.forecast_workspace(p, v, a, goal, 2e-3, 300, 0.05, p, 0.0) == plain  # no time to ramp
    assert MODEL.forecast_workspace(p, v, a, goal, 2e-3, 0, 0.05)[2] == 0  # horizon 0: the start only
    for kwargs, match in [
        ({"position": np.zeros(3)}, "position"),
        ({"target": np.full(ROBOT.dof, np.nan)}, "finite"),
        ({"dt_s": 0.0}, "dt_s"),
        ({"horizon": -1}, "horizon"),
        ({"margin_m": -0.1}, "margin_m"),
        ({"ramp_start": np.zeros(2)}, "ramp_start"),
    ]:
        args = {"position": p, "velocity": v, "acceleration": a, "target": goal, "dt_s": 1e-3, "horizon": 10}
        args.update(kwargs)
        with pytest.raises(ValueError, match=match):
            MODEL.forecast_workspace(**args)
    with pytest.raises(ValueError, match="workspace"):
        robot_model(ROBOT, workspace=False).forecast_workspace(p, v, a, goal, 1e-3, 10)


class _PiecewiseRandom:
    """An env policy that switches to a new random joint velocity (fractions of the limits) every 15 steps."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.k = 0
        self.v = None

    def __call__(self, obs):
        if self.k % 15 == 0:
            self.v = self.rng.uniform(-1.0, 1.0, ROBOT.dof).astype(np.float32)
        self.k += 1
        return self.v


def _loop_excursion(adapter: EnvPolicyAdapter, steps: int) -> float:
    """The loop's path in miniature (an ideal servo): per 10 ms policy period the adapter's target, the loop's
    interpolator ramp to it with its velocity feed-forward, and the loop's SafetyFilter at 1 kHz (soft joint box).
    Returns the commanded paddle's largest distance outside the workspace box (the loop's workspace stop trips on
    any)."""
    soft = robot_model(ROBOT, workspace=False, soft_margin=default_soft_margin(ROBOT))
    q0 = ROBOT.home.copy()
    filt = _control.SafetyFilter(soft, 1e-3, q0)
    p, v, a, previous = q0.copy(), np.zeros(ROBOT.dof), np.zeros(ROBOT.dof), q0.copy()
    ramp = (np.arange(10) + 1.0)[:, None] / 10.0
    worst = 0.0
    no_balls = {"stamp_ns": np.zeros(0, np.int64), "position_m": np.zeros((0, 3)), "confidence": np.zeros(0)}
    for k in range(steps):
        obs = {
            "stamp_ns": 10**12 + k * 10_000_000,
            "measured_position": p.copy(),
            "measured_velocity": v.copy(),
            "command_position": p.copy(),
            "command_velocity": v.copy(),
            "command_acceleration": a.copy(),
            "target_position": previous.copy(),
            "recent_balls": no_balls,
        }
        target = adapter(obs)
        refs = previous + ramp * (target - previous)
        vel = np.broadcast_to((target - previous) / 0.01, refs.shape)
        states, _, _ = filt.run(np.ascontiguousarray(refs), target_velocity=np.ascontiguousarray(vel))
        worst = max(worst, float(_excess(states[:, :, 0], 0.0).max()))
        p, v, a = (states[-1, :, i].copy() for i in range(3))
        previous = target
    return worst


def test_adapter_keeps_the_loops_commanded_paddle_in_the_workspace():
    """Random piecewise-constant policies at up to full speed: without the forecast the loop's commanded paddle
    leaves the box (a workspace stop) in most runs, even though every target the adapter sends lies inside it;
    with the forecast (the default) it never does, and the policy still moves the robot."""
    seeds = range(8)
    without, with_forecast = [], []
    for seed in seeds:
        plain = EnvPolicyAdapter(_PiecewiseRandom(seed), ROBOT, path_margin_m=None)
        without.append(_loop_excursion(plain, 400))
        guarded = EnvPolicyAdapter(_PiecewiseRandom(seed), ROBOT)
        with_forecast.append(_loop_excursion(guarded, 400))
        stats = guarded.stats()
        assert stats["path_holds"] + stats["path_brakes"] < 0.5 * stats["policy_steps"]  # it still plays
    assert sum(x > 0.0 for x in without) >= 4, without
    assert max(with_forecast) == 0.0, with_forecast


def test_adapter_rejects_a_bad_path_margin():
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="path_margin_m"):
            EnvPolicyAdapter(lambda o: np.zeros(ROBOT.dof), ROBOT, path_margin_m=bad)


def test_the_loops_path_guard_is_configurable_and_reported():
    """The loop's own path guard (control_loop.cpp, `path_guard_admits`; its behaviour is tested deterministically in
    csrc/robot_rt/control/tests/test_path_guard.cpp): on by default, None turns it off, a bad margin is named."""
    from robot_rt._control import EVENT_CODES

    assert EVENT_CODES["workspace_path_hold"] == 33
    loop = RealTimeLoop(ROBOT)
    assert loop.config.path_guard_margin_m == pytest.approx(0.002)
    assert loop.counters()["commands_path_held"] == 0
    assert RealTimeLoop(ROBOT, path_guard_margin_m=None).config.path_guard_margin_m < 0
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="path_guard_margin_m"):
            RealTimeLoop(ROBOT, path_guard_margin_m=bad)


def _simulate_commanded(loop, seconds: float, during=None, from_tick: int = 0) -> np.ndarray:
    """Runs `loop.simulate` for `seconds`, calling `during(loop, k)` first in each tick, and returns the commanded joint
    positions [n, dof] of the ticks from `from_tick` on (those with an observation)."""
    commanded = []

    def each(lp, k):
        if during is not None:
            during(lp, k)
        if k >= from_tick and (obs := lp.observation()) is not None:
            commanded.append(obs["command_position"].copy())

    loop.simulate(seconds, during=each)
    return np.array(commanded)


# A pose over the table's last 0.37 m whose paddle centre is 2 mm above the box floor (0.78 m, the table top at
# 0.76 m) with the blade upright: its lowest point is 0.707 m, 5.3 cm into the table (found by the eighth audit).
BLADE_IN_TABLE = np.array([-0.2082, -0.1908, 0.3095, 0.8315, 0.3302, -0.4613, -1.2432, 2.05])


def test_the_loop_keeps_the_whole_blade_in_the_box():
    """The loop measures the blade, not its centre, against the workspace box (targets, the path guard, the
    workspace stop): a policy ramping to a pose whose centre is in the box but whose blade is 5.3 cm into the table
    gets that pose refused, and no commanded pose of the run puts the blade below the box floor. Before, the loop
    took every target and drove the blade 5.3 cm below the table top."""
    pos, normal = paddle_position_normal(ROBOT, BLADE_IN_TABLE)
    assert pos[2] >= LOW[2] + 0.001  # the centre alone passes
    assert _excess(BLADE_IN_TABLE, 0.0)[0] > 0.05
    assert MODEL.paddle_radius_m == ROBOT.paddle_radius_m > 0
    start, ramp_s = ROBOT.home.copy(), 3.0

    def policy(obs):
        s = min(1.0, obs["tick"] * 1e-3 / ramp_s)
        return start + s * s * (3 - 2 * s) * (BLADE_IN_TABLE - start)

    loop = RealTimeLoop(ROBOT, policy=policy)
    commanded = _simulate_commanded(loop, ramp_s + 0.5)
    assert len(commanded) > 1000
    assert np.max(_excess(commanded, 0.0)) <= 1e-9
    refused = loop.counters()["commands_rejected"] + loop.counters()["commands_path_held"]
    assert refused > 0


# Joint positions whose paddle centre is 4.1 cm above the box floor but whose upright blade is 2 cm below it (where a
# stop can leave a robot: the review of the eighth audit's fixes).
BLADE_OUT_CENTRE_IN = np.array([0.0024, -0.2, -0.2419, 0.0392, 0.7391, 0.6269, -0.2059, 0.143])


class _SimulatedStamps:
    """Gives a policy the simulated time (RealTimeLoop.simulate stamps observations with wall time)."""

    def __init__(self, inner):
        self.inner = inner

    def reset(self):
        getattr(self.inner, "reset", lambda: None)()

    def __call__(self, obs):
        return self.inner(dict(obs, stamp_ns=10**12 + int(obs["tick"]) * 1_000_000))


@pytest.mark.parametrize("how", ["hold where it is", "adapter", "adapter, velocity tracking"])
def test_a_robot_recovered_with_its_blade_outside_the_box_is_driven_back_in(how):
    """After a stop that leaves the blade partly outside the box (centre inside), a recovery is not followed by a
    watchdog stop: a target whose blade is outside is refused but still feeds the watchdog (the session is alive; the
    loop keeps its goal), so a policy holding the robot where it is keeps it there, and the adapter, which measures
    the blade as the loop does, brings it back with targets inside the box. Before, each recovery ended in a
    watchdog stop 50 ms later, and the adapter's centre check never engaged its way home."""
    assert _excess(BLADE_OUT_CENTRE_IN, 0.0)[0] > 0.01
    centre, _ = paddle_position_normal(ROBOT, BLADE_OUT_CENTRE_IN)
    assert centre[2] > LOW[2] + 0.03
    vt = how.endswith("velocity tracking")
    if how == "hold where it is":
        policy = lambda obs: np.asarray(obs["measured_position"])  # noqa: E731
    else:
        policy = _SimulatedStamps(EnvPolicyAdapter(lambda flat: np.zeros(ROBOT.dof), ROBOT, velocity_tracking=vt))
    loop = RealTimeLoop(ROBOT, policy=policy, initial_position=BLADE_OUT_CENTRE_IN, velocity_tracking=vt)

    def stop_then_recover(lp, k):
        if k == 100:
            lp.estop()
        if k == 600:
            lp._loop.request_recover()

    commanded = _simulate_commanded(loop, 3.0, during=stop_then_recover, from_tick=601)
    assert loop.event_count("recovered") == 1
    assert loop.event_count("watchdog_stop") == 0, loop.stop_reasons_seen
    assert loop.stop_reasons_seen == ["estop", "shutdown"]  # the e-stop and the end of the run only
    excess = _excess(commanded, 0.0)
    assert np.all(np.diff(excess) <= 1e-6)  # never further out
    if how == "hold where it is":  # its targets (where the blade is outside) are refused: it stays
        assert loop.counters()["commands_rejected"] > 100
        assert excess[-1] == pytest.approx(excess[0], abs=1e-9)
    else:  # the adapter's targets are taken; in position mode it heads back inside the box (with velocity tracking
        # its zero-velocity holds keep the robot where it is)
        assert loop.counters()["commands_accepted"] > 100
        assert excess[-1] == 0.0 or vt


# An in-box start and goal whose path leaves the box only after the path guard's 0.6 s horizon (157 ticks of 4 ms):
# found by the review of 075bb41.
LONG_MOVE_START = np.array([0.4237, -0.0065, 1.0805, -1.3967, 0.6853, 2.5269, 0.5042, 4.5192])
LONG_MOVE_GOAL = np.array([-0.2245, -0.0285, -1.6565, 1.0812, -0.4893, -2.3109, 0.8425, 0.257])


def test_targets_refused_for_the_box_recheck_the_kept_goal():
    """A target refused for the box feeds the watchdog only after the kept goal's path is forecast again from this
    tick's state (as a path hold does): a policy that sends one long move, then only refused targets, is braked
    before the blade leaves the box. Before, the robot drove on to the once-checked goal and the blade went 4.4 cm
    out before the workspace stop."""
    assert np.all(_excess(np.stack([LONG_MOVE_START, LONG_MOVE_GOAL]), 0.0) == 0.0)
    for then, want_stop in ((lambda obs: BLADE_IN_TABLE, []), (lambda obs: None, ["watchdog"])):
        calls = [0]

        def policy(obs, then=then, calls=calls):
            calls[0] += 1
            return LONG_MOVE_GOAL if calls[0] == 1 else then(obs)

        loop = RealTimeLoop(ROBOT, policy=policy, initial_position=LONG_MOVE_START)
        assert np.max(_excess(_simulate_commanded(loop, 1.5), 0.0)) == 0.0
        assert [r for r in loop.stop_reasons_seen if r != "shutdown"] == want_stop  # a dead policy: the watchdog
