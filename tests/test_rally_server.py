"""Rally mode of the sim-server (robot_rt.sim.rally): same physics and rally logic as the envs' world, human
model selection, recorded tracks that HumanBehaviorModel.fit accepts, argument checks.

The RallySource is driven with a synthetic clock and joint-state source here (no sockets, no threads), so the
comparisons are exact and independent of the machine's load."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rt.envs.core import TableTennisWorld, WorldConfig
from robot_rt.envs.heuristic import HeuristicPolicy
from robot_rt.envs.human_model import HumanBehaviorModel
from robot_rt.robot import load_robot
from robot_rt.sim.rally import RallySource, resolve_human, tracks_from_summary

ROBOT = load_robot()


class FakeClockSource:
    """Drives a RallySource step by step: advance() at t0 + k dt, joint state from a per-step table."""

    def __init__(self, source: RallySource, t0: float = 100.0):
        self.source = source
        self.now = t0

    def serve(self) -> list:
        frames = self.source.advance(self.now)  # schedules the first serve 0.2 s later
        self.now += 0.2
        return frames + self.source.advance(self.now)  # serves (world time 0), no step yet

    def step(self) -> list:
        self.now += self.source.dt
        return self.source.advance(self.now)


def _serve_seed(seed: int, rally: int = 0) -> int:
    rng = np.random.default_rng(seed)
    return [int(rng.integers(0, 2**63 - 1)) for _ in range(rally + 1)][-1]


def _reference_rally(seed: int, config: WorldConfig, max_steps: int):
    """The env's world playing one rally with HeuristicPolicy (100 Hz, command held over the 1 kHz steps).
    Returns the per-step (q, qd) after each step's velocity update, ball positions, hit steps, outcome, length."""
    world = TableTennisWorld(1, config=config)
    world.reset([0], [_serve_seed(seed)])
    policy = HeuristicPolicy(history=config.history)  # steps of 10 ms, the default world's step
    per_call = int(round(config.policy_hz / 100.0))
    from robot_rt.envs.observation import build_observation, observation_bounds

    low, high = observation_bounds(world.robot, config.history)
    states, balls, hits = [], [], []
    cmd = np.zeros(world.dof)
    for k in range(max_steps):
        if k % per_call == 0:
            obs = build_observation(world.q[0], world.qd[0], world.detections()[0]).clip(low, high)
            # env actions are fractions of the joint velocity limits; the world steps with joint velocities
            cmd = np.asarray(policy(obs), dtype=np.float64) * world.robot.velocity_limit
        q_before = world.q[0].copy()
        _, terminated, ev = world.step(cmd[None])
        # one substep per step: the velocity the step moved with and the position it started from
        states.append((q_before, (world.q[0] - q_before) / config.substep_s))
        balls.append(world.ball[0, :3].copy())
        if ev["hit"][0]:
            hits.append(k)
        if terminated[0]:
            break
    return states, np.array(balls), hits, int(world.outcome[0]), int(world.hits[0])


def test_rally_physics_and_logic_match_the_env_world_for_the_same_joint_trajectory():
    # 1 physics substep per world step: the rally source (measured q, qd held over the step) then reproduces the
    # env robot's motion exactly, so every ball state, hit, landing and outcome must agree
    config = WorldConfig(policy_hz=1000.0, physics_hz=1000.0)
    seed = 3
    states, ref_balls, ref_hits, ref_outcome, ref_length = _reference_rally(seed, config, max_steps=3000)
    assert ref_hits, "scenario must contain a paddle hit (the heuristic returns this serve in the env)"

    source = RallySource(
        lambda: states[min(source.stats["steps"], len(states) - 1)],
        "default",
        seed=seed,
        config=config,
        max_serves=1,
        workspace_ends_rally=True,  # the env's rule
    )
    clock = FakeClockSource(source)
    clock.serve()
    balls = []
    while source.in_rally:
        clock.step()
        balls.append(source.world.ball[0, :3].copy())
    from robot_rt.envs.core import OUTCOME_NAMES

    summary = source.summary()
    assert len(balls) == len(ref_balls)
    np.testing.assert_allclose(np.array(balls), ref_balls, rtol=0, atol=1e-9)
    assert summary["hits"] == len(ref_hits)
    assert summary["rallies"][0]["outcome"] == OUTCOME_NAMES[ref_outcome]
    assert summary["rally_lengths"] == [ref_length]
    assert source.balls[0]["hit"] is True
    assert source.done


def test_paddle_that_stays_home_misses_and_is_recorded():
    source = RallySource(lambda: (ROBOT.home, np.zeros(ROBOT.dof)), "default", seed=5, max_serves=2)
    clock = FakeClockSource(source)
    frames = clock.serve()
    for _ in range(2):
        while source.in_rally:
            frames += clock.step()
        if not source.done:
            clock.now += source.serve_interval_s
            frames += source.advance(clock.now)
    summary = source.summary()
    assert summary["serves"] == 2 and summary["rallies_completed"] == 2
    assert summary["hits"] == 0 and summary["rally_lengths"] == [0, 0]
    assert set(summary["outcomes"]) <= {"missed", "human_fault"}
    # frames arrive after their capture (latency model) and lie on the true track (noise ~5 mm)
    arrival = np.array([f[0] for f in frames])
    capture = np.array([f[1] for f in frames])
    assert np.all(arrival > capture)
    true_t, true_p = source.true_tracks()[0]
    det_t, det_p = source.detected_tracks()[0]
    idx = np.searchsorted(true_t, det_t - 1e-9)
    ok = idx < len(true_t)
    assert ok.sum() > 20
    assert np.median(np.linalg.norm(det_p[ok] - true_p[idx[ok]], axis=1)) < 0.02
    # the JSON form carries the same tracks
    again = tracks_from_summary(summary)
    np.testing.assert_allclose(again[0][1], det_p)


@pytest.mark.parametrize("human", ["default", "real_player"])
def test_human_model_selection_changes_the_serves(human):
    model = resolve_human(human)
    source = RallySource(lambda: (ROBOT.home, np.zeros(ROBOT.dof)), human, seed=1, max_serves=4)
    assert source.human.name == human
    clock = FakeClockSource(source)
    clock.serve()
    while not source.done:
        while source.in_rally:
            clock.step()
        clock.now += source.serve_interval_s
        source.advance(clock.now)
    launches = np.array([b["launch_state"] for b in source.balls])
    other = resolve_human("real_player" if human == "default" else "default")
    # topspin (wy): 50 rad/s (default) vs 110 rad/s (real player), per-ball std ~30: the serves' mean is the
    # chosen model's, not the other one's
    spin = launches[:, 7].mean()
    assert abs(spin - model.mean[7]) < abs(spin - other.mean[7])


def test_tracks_refit_the_serving_model(tmp_path):
    model = HumanBehaviorModel.real_player()
    path = model.save(tmp_path / "player.json")
    source = RallySource(lambda: (ROBOT.home, np.zeros(ROBOT.dof)), str(path), seed=2, max_serves=5)
    assert source.human.name == "real_player"
    clock = FakeClockSource(source)
    clock.serve()
    while not source.done:
        while source.in_rally:
            clock.step()
        clock.now += source.serve_interval_s
        source.advance(clock.now)
    tracks = source.detected_tracks()
    fitted = HumanBehaviorModel.fit(tracks)
    launches = np.array([b["launch_state"] for b in source.balls])
    used = [r["track"] for r in fitted.fit_report if r["used"]]
    assert len(used) >= 3
    # the fit recovers the launch states it saw (speed and height), not the model it came from
    np.testing.assert_allclose(fitted.mean[3], launches[used, 3].mean(), atol=0.3)
    np.testing.assert_allclose(fitted.mean[2], launches[used, 2].mean(), atol=0.03)


def test_bad_arguments_are_rejected_with_clear_errors(tmp_path):
    js = lambda: (ROBOT.home, np.zeros(ROBOT.dof))  # noqa: E731
    with pytest.raises(ValueError, match="human"):
        resolve_human("nobody")
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_human(str(tmp_path / "missing.json"))
    with pytest.raises(TypeError, match="joint_state"):
        RallySource(5)
    with pytest.raises(ValueError, match="serve_interval_s"):
        RallySource(js, serve_interval_s=0.0)
    with pytest.raises(ValueError, match="max_serves"):
        RallySource(js, max_serves=0)
    with pytest.raises(TypeError, match="seed"):
        RallySource(js, seed=1.5)
    from robot_rt.sim.server import SimServer

    with pytest.raises(ValueError, match="rally"):
        SimServer(port=0, rally=True, camera=False)
    from robot_rt.cli import main

    assert main(["sim-server", "--port", "0", "--human", "real_player"]) == 2  # --human without --rally
    assert main(["sim-server", "--port", "0", "--rally", "--human", "nobody"]) == 2
    with pytest.raises(SystemExit):
        main(["sim-server", "--rally", "--serves", "0"])


@pytest.mark.parametrize("ends", [False, True])
def test_workspace_box_rule(ends):
    out = ROBOT.home.copy()
    out[3] = 1.5  # paddle below the workspace box
    source = RallySource(lambda: (out, np.zeros(ROBOT.dof)), seed=4, max_serves=1, workspace_ends_rally=ends)
    clock = FakeClockSource(source)
    clock.serve()
    while source.in_rally:
        clock.step()
    summary = source.summary(tracks=False)
    assert summary["workspace_exits"] == 1
    if ends:  # the env's rule: the rally ends at once
        assert summary["outcomes"] == {"limit": 1} and summary["steps"] == 1
    else:  # the controller's box, not the game's: the ball flies on
        assert "limit" not in summary["outcomes"] and summary["steps"] > 50
