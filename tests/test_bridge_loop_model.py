"""robot_rt.bridge.loop_model: the env's robot moved along the trajectory of the loop's own safety filter."""

import numpy as np
import pytest

from robot_rt import _control
from robot_rt.bridge.loop_model import LoopTrajectoryPolicy, drive_robot
from robot_rt.control.loop import default_soft_margin, robot_model
from robot_rt.envs.scripted import BatchedScriptedPolicy
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.robot import load_robot

ROBOT = load_robot()


def test_env_robot_follows_the_loop_filter_and_restarts_with_each_episode():
    n = 8
    env = TableTennisVectorEnv(n, max_episode_steps=150, robot=drive_robot(ROBOT))
    pol = LoopTrajectoryPolicy(BatchedScriptedPolicy(n, robot=ROBOT), ROBOT, n)
    obs, _ = env.reset(seed=5)
    auto = np.zeros(n, dtype=bool)
    deviations, restarts = [], 0
    soft_low = ROBOT.position_min + default_soft_margin(ROBOT)
    soft_high = ROBOT.position_max - default_soft_margin(ROBOT)
    for _ in range(400):
        if auto.any():
            pol.reset(auto)
        starting = pol._pending == 1  # these restart their filter at this call (a new episode's first observation)
        action = pol(obs)
        if starting.any():
            restarts += int(starting.sum())
            q0 = obs[starting, : ROBOT.dof].astype(np.float64)
            np.testing.assert_allclose(pol.target[starting], q0, atol=0.1)  # it starts where the robot is
        assert np.all(np.abs(action) <= 1.0)
        # the filter's trajectory keeps the loop's soft joint box
        assert np.all(pol.filter_position >= soft_low - 1e-9) and np.all(pol.filter_position <= soft_high + 1e-9)
        obs, _, term, trunc, info = env.step(action)
        q = obs[:, : ROBOT.dof].astype(np.float64)
        keep = ~(term | trunc | auto)
        deviations.append(np.abs(q - pol.filter_position)[keep].max(initial=0.0))
        assert not np.any((info["outcome"] == "limit") & term & ~auto), "a joint limit ended an episode"
        auto = term | trunc
    assert restarts >= n  # every environment went through at least one more episode
    assert max(deviations) < 0.005, max(deviations)  # the drive's headroom lets it follow within ~1 mrad


def test_filter_positions_are_the_loop_filters_own():
    """One environment, one step: the position it heads for is what the loop's SafetyFilter gives for the adapter's
    interpolated target (computed here independently)."""
    env = TableTennisVectorEnv(1, max_episode_steps=50, robot=drive_robot(ROBOT))
    obs, _ = env.reset(seed=0)
    constant = np.full((1, ROBOT.dof), 0.3, dtype=np.float32)
    pol = LoopTrajectoryPolicy(lambda o: constant, ROBOT, 1)
    pol(obs)
    q = obs[0, : ROBOT.dof].astype(np.float64)
    v = 0.3 * ROBOT.velocity_limit
    goal = np.clip(q + v * pol.dt, q - pol.lead, q + pol.lead)
    f = _control.SafetyFilter(robot_model(ROBOT, workspace=False, soft_margin=default_soft_margin(ROBOT)), 0.001, q)
    frac = (np.arange(10) + 1.0) / 10
    refs = q + frac[:, None] * (goal - q)
    states, _, _ = f.run(refs, target_velocity=np.ascontiguousarray(np.broadcast_to((goal - q) / pol.dt, refs.shape)))
    np.testing.assert_array_equal(pol.filter_position[0], states[-1, :, 0])


def test_drive_robot_only_raises_the_acceleration():
    drive = drive_robot(ROBOT)
    np.testing.assert_array_equal(drive.acceleration_limit, 2.0 * ROBOT.acceleration_limit)
    for name in ("position_min", "position_max", "velocity_limit", "jerk_limit", "home"):
        np.testing.assert_array_equal(getattr(drive, name), getattr(ROBOT, name))


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match="policy"):
        LoopTrajectoryPolicy(None, ROBOT)
    with pytest.raises(ValueError, match="loop_rate_hz"):
        LoopTrajectoryPolicy(lambda o: o, ROBOT, 1, loop_rate_hz=1234.5)
    pol = LoopTrajectoryPolicy(lambda o: np.zeros((2, ROBOT.dof)), ROBOT, 2)
    with pytest.raises(ValueError, match="obs"):
        pol(np.zeros((3, 46), dtype=np.float32))


def test_play_as_the_loop_goes_on_across_rallies_and_resets_only_the_policy(monkeypatch):
    """Rally after rally: the trajectory model is never restarted after the start, the robot begins each new rally
    where the last one left it (unless a limit ended it), the serve waits the interval, and the policy is reset with
    exactly the environments whose new rally's first observation just came in."""
    from robot_rt.bridge import loop_model

    n, steps = 6, 400
    seen = {"restarts": 0, "resets": [], "ended": np.zeros(n, bool), "starts": [], "sent_home": []}
    restart = LoopTrajectoryPolicy._restart
    step = TableTennisVectorEnv.step

    def counting_restart(self, i, q):
        seen["restarts"] += 1
        restart(self, i, q)

    def recording_step(self, actions):
        out = step(self, actions)
        seen["prev_ended"], seen["ended"] = seen["ended"], out[2] | out[3]
        seen["starts"].append((seen["prev_ended"].copy(), self.world.q.copy(), self.world.serve_in.copy()))
        seen["sent_home"].append((seen["prev_ended"].copy(), self.world.robot_sent_home.copy()))
        return out

    class Policy(BatchedScriptedPolicy):
        def reset(self, mask=None):
            if mask is not None:
                np.testing.assert_array_equal(mask, seen["prev_ended"])  # the step before ended exactly these
                seen["resets"].append(np.array(mask))
            super().reset(mask)

    monkeypatch.setattr(LoopTrajectoryPolicy, "_restart", counting_restart)
    monkeypatch.setattr(TableTennisVectorEnv, "step", recording_step)
    out = loop_model.play_as_the_loop(Policy(n, robot=ROBOT), n, steps, serve_interval_s=0.3, seed=2)
    sent_home = sum(int((prev & home).sum()) for prev, home in seen["sent_home"])
    assert seen["restarts"] == n + sent_home  # once per environment at the start, and where a limit sent it home
    assert len(seen["resets"]) >= 1 and sum(int(m.sum()) for m in seen["resets"]) == len(out["rally_lengths"]) - int(
        seen["ended"].sum()
    )
    assert sum(out["outcomes"].values()) == len(out["rally_lengths"]) >= n
    # a rally that did not end by a limit hands its robot on; every new rally waits 0.3 s for its serve
    kept = 0
    for prev_ended, q, serve_in in seen["starts"]:
        for i in np.nonzero(prev_ended)[0]:
            assert serve_in[i] == 30
            kept += int(np.abs(q[i] - ROBOT.home).max() > 1e-3)
    assert kept >= 1
    assert out["steps"] == steps and out["env_s"] == pytest.approx(steps * 0.01)


def test_play_as_the_loop_refuses_bad_arguments():
    from robot_rt.bridge.loop_model import play_as_the_loop

    with pytest.raises(ValueError, match="steps"):
        play_as_the_loop(BatchedScriptedPolicy(2, robot=ROBOT), 2, 0)
    with pytest.raises(ValueError, match="serve_interval_s"):
        play_as_the_loop(BatchedScriptedPolicy(2, robot=ROBOT), 2, 10, serve_interval_s=-1.0)


def test_play_as_the_loop_restarts_the_trajectory_where_a_limit_sent_the_robot_home():
    """A rally that ends by a limit leaves the robot at home (a kept pose there would end the next rally at once):
    the trajectory model must restart at home, else it drives the robot back to where it was. Each environment's
    policy drives one way until its first limit end, then holds still: the robot must stay at home."""
    from robot_rt.bridge import loop_model

    n = 8
    directions = np.random.default_rng(0).uniform(-1.0, 1.0, (n, ROBOT.dof))
    holding = np.zeros(n, bool)
    drift = []
    step = TableTennisVectorEnv.step

    def watching_step(self, actions):
        out = step(self, actions)
        limit = (out[2] | out[3]) & (out[4]["outcome"] == "limit")
        holding[limit] = True
        back = holding & (self.world.phase == 4)  # home again and waiting for the serve: nothing may move it
        if back.any():
            drift.append(np.abs(self.world.q[back] - ROBOT.home).max())
        return out

    class OneWayThenHold:
        def __call__(self, obs):
            return np.where(holding[:, None], 0.0, directions).astype(np.float32)

        def reset(self, mask=None):
            pass

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TableTennisVectorEnv, "step", watching_step)
        loop_model.play_as_the_loop(OneWayThenHold(), n, 800, serve_interval_s=5.0, seed=0)
    assert holding.sum() >= 1 and len(drift) > 50
    assert max(drift) < 1e-9  # restarted at rest at home (without the restart: 0.1 rad and more within 30 steps)
