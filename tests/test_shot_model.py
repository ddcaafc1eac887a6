"""The scripted policy's shot model (robot_rt.envs.shot_model): the closed-form expectation, the fast search against
the direct evaluation, the fit on synthetic shots with known laws, files, validation, data collection and the
shipped rally model in play."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_rt.envs.human_model import ReturnModel
from robot_rt.envs.landing_model import quadratic_features, shipped_rally_model
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.shot_model import (
    N_INPUTS,
    ShotModel,
    _expected_gaussian_factor,
    collect_shot_data,
    rally_shot_policy,
    shipped_shot_model,
)

N_FEAT = quadratic_features(np.zeros((1, N_INPUTS))).shape[1]
RALLY = ScriptedParams.preset("rally").to_vector()


def random_model(rng: np.random.Generator, scale: float = 0.05) -> ShotModel:
    """A model with random coefficients around a plausible operating point (arrival y 0, z 1, speed 3)."""
    coef_arrival = scale * rng.standard_normal((N_FEAT, 3))
    coef_arrival[0] += [0.0, 1.0, 3.0]
    coef_log_var = 0.2 * rng.standard_normal((N_FEAT, 3))
    coef_log_var[0] += np.log([0.01, 0.005, 0.04])
    return ShotModel(
        mean=rng.normal(size=N_INPUTS),
        std=rng.uniform(0.5, 2.0, N_INPUTS),
        coef_in=0.3 * rng.standard_normal(N_FEAT) + np.eye(N_FEAT)[0] * 2.0,
        coef_arrival=coef_arrival,
        coef_log_var=coef_log_var,
        log_var_offset=rng.normal(scale=0.3, size=3),
        arrival_sd=np.array([0.1, 0.09, 0.3]),
        target_low=np.array([-2.0, -0.6]),
        target_high=np.array([-0.2, 0.6]),
        fitted_params=RALLY,
    )


def plans(rng: np.random.Generator, n: int):
    return rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), rng.normal(size=(n, 3))


def test_expected_gaussian_factor_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for mean, centre, width, spread in [(0.9, 1.05, 0.35, 0.1), (0.3, 0.0, 0.7, 0.15), (1.05, 1.05, 0.35, 0.0)]:
        u = rng.normal(mean, spread, 400_000) if spread > 0 else np.full(10, mean)
        mc = np.mean(np.exp(-0.5 * ((u - centre) / width) ** 2))
        assert _expected_gaussian_factor(mean, centre, width, spread) == pytest.approx(mc, abs=2e-3)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 20), st.sampled_from([1.0, 2.5, 7.0]))
def test_fast_search_values_equal_the_direct_evaluation(seed, n, k):
    """The search evaluates candidates through per-ball quadratics in the target; they must equal the model."""
    rng = np.random.default_rng(seed)
    model = random_model(rng)
    p, v, w = plans(rng, n)
    quadratics = model._target_quadratics(p, v, w)
    cand = rng.uniform(model.target_low - 0.5, model.target_high + 0.5, (n, 7, 2))
    _, best_value = model._best_of(cand, quadratics, k)
    direct = model.value(cand.reshape(-1, 2), *(np.repeat(a, 7, axis=0) for a in (p, v, w)), in_exponent=k)
    np.testing.assert_allclose(best_value, direct.reshape(n, 7).max(axis=1), rtol=1e-9, atol=1e-12)


def test_in_exponent_weighs_the_chance_of_landing():
    """value(k) = P(in)^k x the expected answer (value(1) / P(in)); the target chosen with k = 6 is within the
    search's tolerance of the best of a fine grid for that value, and lands more often on average than the one
    chosen with k = 1, at a smaller expected answer once landed."""
    rng = np.random.default_rng(11)
    model = random_model(rng, scale=0.3)
    model.coef_in[1] += 2.0  # P(in) falls towards the box's far end (feature 1: the target's standardised x)
    model = dataclasses.replace(model)  # re-derives the combined coefficients
    n = 40
    p, v, w = plans(rng, n)
    t = rng.uniform(model.target_low, model.target_high, (n, 2))
    p_in, _, _ = model.predict(t, p, v, w)
    np.testing.assert_allclose(model.value(t, p, v, w, in_exponent=3), model.value(t, p, v, w) * p_in**2, rtol=1e-12)
    best1, value1 = model.best_target(p, v, w)
    best6, value6 = model.best_target(p, v, w, in_exponent=6)
    np.testing.assert_allclose(value6, model.value(best6, p, v, w, in_exponent=6), rtol=1e-9)
    gx, gy = np.meshgrid(np.linspace(-2.0, -0.2, 25), np.linspace(-0.6, 0.6, 25))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    for i in range(0, n, 8):
        on_grid = model.value(grid, *(np.repeat(a[i : i + 1], len(grid), axis=0) for a in (p, v, w)), in_exponent=6)
        assert value6[i] >= on_grid.max() - 0.02
    in1, in6 = model.predict(best1, p, v, w)[0], model.predict(best6, p, v, w)[0]
    # per ball the chance of landing never falls (up to the search's tolerance); some balls change target
    assert np.all(in6 >= in1 - 2e-3) and in6.mean() > in1.mean() + 2e-3
    answer1, answer6 = model.value(best1, p, v, w) / in1, model.value(best6, p, v, w) / in6
    assert answer6.mean() < answer1.mean()


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_best_target_stays_in_the_box_and_beats_the_grid_and_the_previous_choice(seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng)
    n = 6
    p, v, w = plans(rng, n)
    previous = rng.uniform(model.target_low, model.target_high, (n, 2))
    previous[0] = np.nan  # no previous choice for this ball
    best, value = model.best_target(p, v, w, previous=previous)
    assert np.all(best >= model.target_low - 1e-12) and np.all(best <= model.target_high + 1e-12)
    np.testing.assert_allclose(value, model.value(best, p, v, w), rtol=1e-9)
    gx, gy = np.meshgrid(np.linspace(-2.0, -0.2, 25), np.linspace(-0.6, 0.6, 25))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    for i in range(n):
        on_grid = model.value(grid, *(np.repeat(a[i : i + 1], len(grid), axis=0) for a in (p, v, w)))
        # the search's coarse grid is 9 x 7, refined twice: within a small tolerance of a much finer grid
        assert value[i] >= on_grid.max() - 0.02
        if i > 0:
            assert value[i] >= model.value(previous[i : i + 1], p[i : i + 1], v[i : i + 1], w[i : i + 1])[0] - 1e-12


def synthetic_shots(rng: np.random.Generator, n: int) -> tuple[dict, dict]:
    """Shots from known laws: arrival linear in the inputs with noise sd growing with |target y|, landing in by a
    known logistic law in the target's depth."""
    target = rng.uniform([-2.0, -0.6], [-0.2, 0.6], (n, 2))
    plan_p, plan_v, spin = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), 50 * rng.normal(size=(n, 3))
    y_true = 0.3 * target[:, 1] + 0.05 * plan_p[:, 1] + 0.001 * spin[:, 2]
    z_true = 1.0 + 0.1 * (target[:, 0] + 1.1) - 0.05 * plan_v[:, 2]
    speed_true = 3.0 + 0.2 * plan_v[:, 0]
    noise_sd = np.stack([0.02 + 0.1 * np.abs(target[:, 1]), np.full(n, 0.05), np.full(n, 0.1)], axis=1)
    arrival = np.stack([y_true, z_true, speed_true], axis=1) + noise_sd * rng.standard_normal((n, 3))
    p_in = 1.0 / (1.0 + np.exp(-(4.0 * (target[:, 0] + 1.6))))
    landed = rng.random(n) < p_in
    arrival[~landed] = np.nan
    shots = dict(target=target, plan_p=plan_p, plan_v=plan_v, spin=spin, landed_in=landed, arrival=arrival)
    truth = dict(y=y_true, z=z_true, p_in=p_in, noise_sd=noise_sd)
    return shots, truth


def test_fit_recovers_known_laws_and_a_calibrated_spread():
    rng = np.random.default_rng(1)
    shots, truth = synthetic_shots(rng, 20_000)
    model = ShotModel.fit(shots, RALLY)
    p_in, arrival, sd = model.predict(shots["target"], shots["plan_p"], shots["plan_v"], shots["spin"])
    assert np.sqrt(np.mean((p_in - truth["p_in"]) ** 2)) < 0.03
    assert np.sqrt(np.mean((arrival[:, 0] - truth["y"]) ** 2)) < 0.01
    assert np.sqrt(np.mean((arrival[:, 1] - truth["z"]) ** 2)) < 0.005
    # the spread follows |target y|: predicted sd within 25 % of the truth where the shots are
    ratio = sd[:, 0] / truth["noise_sd"][:, 0]
    assert 0.75 < np.median(ratio) < 1.25
    wide, narrow = np.abs(shots["target"][:, 1]) > 0.5, np.abs(shots["target"][:, 1]) < 0.1
    assert sd[wide, 0].mean() > 2.5 * sd[narrow, 0].mean()
    assert model.heldout["in_log_loss"] < model.heldout["in_log_loss_constant"]
    # the best target of this law: y where the arrival is centred (target y ~ 0), deep where P(in) is high
    best, _ = model.best_target(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 3)))
    assert abs(best[0, 1]) < 0.1 and best[0, 0] > -1.4


def test_save_load_round_trip(tmp_path):
    model = random_model(np.random.default_rng(3))
    path = model.save(tmp_path / "shot.json")
    back = ShotModel.load(path)
    rng = np.random.default_rng(4)
    p, v, w = plans(rng, 5)
    t = rng.uniform(model.target_low, model.target_high, (5, 2))
    np.testing.assert_array_equal(back.value(t, p, v, w), model.value(t, p, v, w))
    assert not list(tmp_path.glob("*.tmp"))
    assert back.tracker == "fit"
    model.tracker = "ukf"
    assert ShotModel.load(model.save(tmp_path / "ukf.json")).tracker == "ukf"
    data = model.to_dict()
    del data["tracker"]  # files written before the tracker option: planned with the fit tracker
    assert ShotModel.from_dict(data).tracker == "fit"
    model.human, model.loop_model = "H3", True
    back = ShotModel.load(model.save(tmp_path / "loop.json"))
    assert (back.human, back.loop_model) == ("H3", True)
    data = model.to_dict()
    del data["human"], data["loop_model"]  # files before these options: the default human, the env's own robot
    back = ShotModel.from_dict(data)
    assert (back.human, back.loop_model) == ("default", False)


def test_validation_errors_name_the_argument(tmp_path):
    model = random_model(np.random.default_rng(5))
    p, v, w = plans(np.random.default_rng(6), 3)
    with pytest.raises(ValueError, match="spin: expected shape"):
        model.value(np.zeros((3, 2)), p, v, w[:, :2])
    with pytest.raises(ValueError, match="plan_v: contains NaN"):
        model.value(np.zeros((3, 2)), p, np.full((3, 3), np.nan), w)
    with pytest.raises(ValueError, match="previous: expected shape"):
        model.best_target(p, v, w, previous=np.zeros((2, 2)))
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
    with pytest.raises(ValueError, match="coef_log_var"):
        ShotModel(**{**fields, "coef_log_var": np.zeros((3, 3))})
    shots, _ = synthetic_shots(np.random.default_rng(7), 150)
    with pytest.raises(ValueError, match="at least 200 shots"):
        ShotModel.fit(shots, RALLY)
    shots, _ = synthetic_shots(np.random.default_rng(7), 400)
    with pytest.raises(ValueError, match="heldout"):
        ShotModel.fit(shots, RALLY, heldout=0.002)
    with pytest.raises(ValueError, match="missing \\['spin'\\]"):
        ShotModel.fit({k: v for k, v in shots.items() if k != "spin"}, RALLY)
    (tmp_path / "bad.json").write_text('{"kind": "something else"}')
    with pytest.raises(ValueError, match="not a shot model"):
        ShotModel.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="fitted with"):
        BatchedScriptedPolicy(2, params=ScriptedParams(), shot_model=model)
    with pytest.raises(ValueError, match="tracker: expected one of"):
        ShotModel(**{**fields, "tracker": "kalman"})
    with pytest.raises(ValueError, match="tracker: expected one of"):
        BatchedScriptedPolicy(2, params=ScriptedParams.preset("rally"), tracker="kalman")
    with pytest.raises(ValueError, match="fitted on plans of the 'ukf' tracker"):
        BatchedScriptedPolicy(
            2, params=ScriptedParams.preset("rally"), shot_model=dataclasses.replace(model, tracker="ukf")
        )
    with pytest.raises(ValueError, match="not together with a landing_model"):
        BatchedScriptedPolicy(
            2, params=ScriptedParams.preset("rally"), shot_model=model, landing_model=shipped_rally_model()
        )
    for bad in (0.5, float("nan"), float("inf"), 11.0, True, "3"):
        with pytest.raises(ValueError, match="in_exponent: expected a number in \\[1, 10"):
            model.value(np.zeros((3, 2)), p, v, w, in_exponent=bad)
        with pytest.raises(ValueError, match="in_exponent: expected a number in \\[1, 10"):
            model.best_target(p, v, w, in_exponent=bad)
        with pytest.raises(ValueError, match="shot_in_exponent: expected a number in \\[1, 10"):
            rally_shot_policy(1, shot_in_exponent=bad)
    with pytest.raises(ValueError, match="shot_in_exponent: needs a shot_model"):
        BatchedScriptedPolicy(2, params=ScriptedParams.preset("rally"), shot_in_exponent=3.0)


def test_collected_shots_are_labelled_by_the_envs_own_events(monkeypatch):
    """Every return the env saw reach the human's plane is one landed shot, and every episode the env ended with
    'out' is one shot that did not land: the labels are counted independently from the env's step results."""
    from robot_rt.envs.vector import TableTennisVectorEnv

    seen = {"arrivals": 0, "outs": 0}
    step = TableTennisVectorEnv.step

    def counting_step(self, actions):
        out = step(self, actions)
        _, _, terminated, _, info = out
        seen["arrivals"] += int(np.all(np.isfinite(self.world.arrival_ball), axis=1).sum())
        seen["outs"] += int(np.sum(terminated & (info["outcome"] == "out")))
        return out

    monkeypatch.setattr(TableTennisVectorEnv, "step", counting_step)
    shots = collect_shot_data(ScriptedParams.preset("rally"), episodes=16, steps=400, seed=7000)
    n = len(shots["target"])
    assert n >= 16
    for k in ("plan_p", "plan_v", "spin"):
        assert shots[k].shape == (n, 3) and np.all(np.isfinite(shots[k]))
    assert int(shots["landed_in"].sum()) == seen["arrivals"] > 0
    assert int((~shots["landed_in"]).sum()) == seen["outs"]
    arrived = np.all(np.isfinite(shots["arrival"]), axis=1)
    np.testing.assert_array_equal(arrived, shots["landed_in"])
    y, z, speed = shots["arrival"][arrived].T
    assert np.all(np.abs(y) < 2.0) and np.all((z > 0.0) & (z < 2.5)) and np.all((speed > 0.5) & (speed < 15))
    # the spin estimate is the incoming ball's (topspin wy > 0 on the default human's serves)
    assert np.mean(shots["spin"][:, 1] > 0) > 0.8
    with pytest.raises(ValueError, match="target_low: expected <= target_high"):
        collect_shot_data(ScriptedParams.preset("rally"), 2, 10, 0, target_low=(0.5, 0.0), target_high=(0.0, 0.1))
    with pytest.raises(ValueError, match="steps: expected a positive int"):
        collect_shot_data(ScriptedParams.preset("rally"), 2, 0, 0)


def test_shots_against_another_human_through_the_loop_model_reset_the_policy_at_each_autoreset():
    """`human` serves the shots (the real player's heavier topspin shows in the spin estimates), `env_robot` and
    `wrap_policy` put the loop model between the policy and the env (every step goes through it), and the wrapped
    policy is reset with exactly the environments the env restarted on the step before."""
    from helpers.loop_model import reset_checked_loop_model

    from robot_rt.bridge.loop_model import drive_robot
    from robot_rt.envs.human_model import HumanBehaviorModel
    from robot_rt.robot import load_robot

    robot, n, steps = load_robot(), 16, 400
    params = ScriptedParams.preset("rally")
    default = collect_shot_data(params, n, steps, 7000, tracker="ukf")
    with pytest.MonkeyPatch.context() as mp:
        checked, seen = reset_checked_loop_model(mp, n)
        shots = collect_shot_data(
            params,
            n,
            steps,
            7000,
            tracker="ukf",
            human=HumanBehaviorModel.real_player(),
            env_robot=drive_robot(robot),
            wrap_policy=lambda policy: checked(policy, robot, n),
        )
    assert seen["calls"] == steps and seen["resets"] >= 1
    assert len(shots["target"]) >= n and np.all(np.isfinite(shots["plan_p"]))
    # the real player's topspin (110 rad/s at launch against 50) and sidespin (40 against 0) reach the estimates
    assert np.median(shots["spin"][:, 1]) > np.median(default["spin"][:, 1]) + 20.0
    assert np.median(shots["spin"][:, 2]) > np.median(default["spin"][:, 2]) + 10.0
    with pytest.raises(TypeError, match="human: expected a HumanBehaviorModel"):
        collect_shot_data(params, 2, 10, 0, human="real_player")


def test_world_records_the_arrival_the_human_answered_from():
    from robot_rt.envs.vector import TableTennisVectorEnv

    env = TableTennisVectorEnv(32, max_episode_steps=6000)
    policy = rally_shot_policy(32)
    obs, _ = env.reset(seed=list(range(32)))
    seen = 0
    try:
        for _ in range(300):
            obs, *_ = env.step(policy(obs))
            world = env.world
            arrived = np.all(np.isfinite(world.arrival_ball), axis=1)
            np.testing.assert_array_equal(arrived, np.isfinite(world.answer_probability))
            if arrived.any():
                p = ReturnModel().return_probability(world.arrival_ball[arrived])
                np.testing.assert_allclose(p, world.answer_probability[arrived])
                seen += int(arrived.sum())
    finally:
        env.close()
    assert seen > 10


def test_shipped_model_places_first_returns_better_than_the_landing_model():
    """On the same 256 first balls, the shot model's returns are answered more often (the human's answer
    probability at their arrival; zero for a ball that did not get there) than the landing model's."""
    from robot_rt.envs.landing_model import rally_policy
    from robot_rt.envs.vector import TableTennisVectorEnv

    model = shipped_shot_model()
    np.testing.assert_allclose(model.fitted_params, RALLY)
    assert model.samples > 20_000 and model.heldout["in_log_loss"] < model.heldout["in_log_loss_constant"]

    def first_answer(policy) -> np.ndarray:
        n = 256
        env = TableTennisVectorEnv(n, max_episode_steps=600)
        obs, _ = env.reset(seed=list(range(500, 500 + n)))
        answer = np.full(n, np.nan)
        try:
            for _ in range(300):
                obs, _, terminated, truncated, _ = env.step(policy(obs))
                fresh = np.isfinite(env.world.answer_probability) & np.isnan(answer)
                answer[fresh] = env.world.answer_probability[fresh]
                ended = (terminated | truncated) & np.isnan(answer)
                answer[ended] = 0.0
        finally:
            env.close()
        return np.nan_to_num(answer)

    shot, landing = first_answer(rally_shot_policy(256)), first_answer(rally_policy(256))
    # the placement itself (answer probability of the returns that got there; about 0.91 against 0.885 on three
    # blocks of serves), and over all first balls (outs and misses count 0; noisier)
    assert shot[shot > 0].mean() > landing[landing > 0].mean() + 0.01, (
        shot[shot > 0].mean(),
        landing[landing > 0].mean(),
    )
    assert shot.mean() > landing.mean(), (shot.mean(), landing.mean())


def test_shipped_loop_model_names_its_conditions_and_the_variants_are_checked():
    """The 'loop' shot model is the rally preset's, planned with the UKF tracker, fitted against a human model learned
    from the real player's ball tracks with the env's robot on the loop's trajectory; it is better than a constant on
    held-out shots, and its target box reaches nearer the net than the env model's (the real player's heavier balls
    fly long). Only tracker 'ukf' has it; an unknown variant is named."""
    loop, env = shipped_shot_model("ukf", "loop"), shipped_shot_model("ukf")
    assert (loop.tracker, loop.loop_model, loop.human) == ("ukf", True, "H3")
    assert (env.loop_model, env.human) == (False, "default")
    np.testing.assert_allclose(loop.fitted_params, RALLY)
    assert loop.samples > 20_000 and loop.heldout["in_log_loss"] < 0.85 * loop.heldout["in_log_loss_constant"]
    assert loop.target_high[0] > env.target_high[0] + 0.2
    policy = rally_shot_policy(2, tracker="ukf", variant="loop")
    assert policy.shot_model is not None and policy.shot_model.loop_model
    assert policy.shot_in_exponent == 1.0 and rally_shot_policy(2, shot_in_exponent=3).shot_in_exponent == 3.0
    with pytest.raises(ValueError, match="tracker: the 'loop' shot model is fitted for tracker 'ukf'"):
        shipped_shot_model("fit", "loop")
    with pytest.raises(ValueError, match="variant: expected one of"):
        shipped_shot_model("ukf", "real")


def test_policy_aims_with_its_in_exponent(monkeypatch):
    """The scripted policy passes its `shot_in_exponent` to every target search; for the plans of a game in play
    the targets of exponent 4 differ from those of exponent 1."""
    from robot_rt.envs.vector import TableTennisVectorEnv

    seen = []
    search = ShotModel.best_target

    def spy(self, plan_p, plan_v, spin, previous=None, in_exponent=1.0):
        seen.append(in_exponent)
        return search(self, plan_p, plan_v, spin, previous=previous, in_exponent=in_exponent)

    monkeypatch.setattr(ShotModel, "best_target", spy)
    env = TableTennisVectorEnv(8, max_episode_steps=300)
    policy = rally_shot_policy(8, shot_in_exponent=4.0)
    obs, _ = env.reset(seed=3)
    for _ in range(60):
        obs, *_ = env.step(policy(obs))
    env.close()
    assert seen and set(seen) == {4.0}
    planned = np.isfinite(policy.plan_t)
    assert planned.sum() >= 4
    plan = (policy.plan_p[planned], policy.plan_v[planned], policy.incoming_spin.estimate[planned])
    at_4, at_1 = search(policy.shot_model, *plan, in_exponent=4.0)[0], search(policy.shot_model, *plan)[0]
    assert np.abs(at_4 - at_1).max() > 0.05


def test_fit_tool_sets_parameters_other_than_the_presets(tmp_path):
    """tools/fit_shot_model.py --set NAME=VALUE: the model records the parameters it was fitted with, the preset's
    with those values replaced; an unknown name or a value that is not a number is named before anything runs."""
    import importlib.util
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "fit_shot_model.py"
    spec = importlib.util.spec_from_file_location("fit_shot_model_under_test", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shots, _ = synthetic_shots(np.random.default_rng(4), 4_000)
    np.savez(tmp_path / "shots.npz", **shots)
    out = tmp_path / "model.json"
    argv = ["--from-shots", str(tmp_path / "shots.npz"), "--out", str(out)]
    module.main(argv + ["--set", "floor_margin_m=0.05", "--set", "swing_s=0.15"])
    fitted = ScriptedParams.from_vector(ShotModel.load(out).fitted_params)
    assert fitted == dataclasses.replace(ScriptedParams.preset("rally"), floor_margin_m=0.05, swing_s=0.15)
    for bad, message in (
        ("floor_margin=0.05", "NAME=VALUE with NAME one of"),
        ("swing_s=fast", "a number for swing_s"),
        ("x", "NAME"),
    ):
        with pytest.raises(ValueError, match=f"--set: expected {message}"):
            module.main(argv + ["--set", bad])
