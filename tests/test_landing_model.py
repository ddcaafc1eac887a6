"""robot_rt.envs.landing_model: the quadratic features, the fit (recovers a known model), the inverse (its
command lands where wanted), files and errors, the parameter match, self-practice shots, and the shipped model's
effect on the scripted policy's returns."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from robot_rt.envs.landing_model import (
    RALLY_ARRIVAL_CENTERING,
    LandingModel,
    collect_shots,
    quadratic_features,
    rally_policy,
    shipped_rally_model,
)
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams


def _synthetic_shots(n, rng, noise=0.0):
    """Shots from a known smooth map: landing x moves 0.3 m per m of target x (as the scripted policy's do), and
    depends on the contact height and incoming speed."""
    target = np.c_[rng.uniform(-2.0, -0.2, n), rng.uniform(-0.7, 0.7, n)]
    plan_p = np.c_[rng.uniform(1.3, 1.6, n), rng.uniform(-0.6, 0.6, n), rng.uniform(0.8, 1.05, n)]
    plan_v = np.c_[rng.uniform(2.5, 5.0, n), rng.uniform(-0.5, 0.5, n), rng.uniform(-2.0, 2.5, n)]
    lx = -0.7 + 0.3 * (target[:, 0] + 1.0) + 0.8 * (plan_p[:, 2] - 0.9) - 0.05 * (plan_v[:, 0] - 3.5) ** 2
    ly = 0.85 * target[:, 1] + 0.2 * plan_p[:, 1] + 0.05 * plan_v[:, 1] * target[:, 1]
    landing = np.c_[lx, ly] + noise * rng.standard_normal((n, 2))
    return {"target": target, "plan_p": plan_p, "plan_v": plan_v, "landing": landing}


def test_quadratic_features():
    z = np.array([[2.0, 3.0]])
    np.testing.assert_array_equal(quadratic_features(z), [[1.0, 2.0, 3.0, 4.0, 6.0, 9.0]])
    assert quadratic_features(np.zeros((5, 8))).shape == (5, 45)


def test_fit_recovers_a_quadratic_map_and_command_inverts_it():
    rng = np.random.default_rng(0)
    shots = _synthetic_shots(2000, rng)
    model = LandingModel.fit(shots, ScriptedParams.preset("rally").to_vector(), ridge=0.0)
    assert model.samples == 2000 and np.all(model.heldout_rmse_m < 1e-9)
    fresh = _synthetic_shots(300, rng)
    pred = model.predict(fresh["target"], fresh["plan_p"], fresh["plan_v"])
    np.testing.assert_allclose(pred, fresh["landing"], atol=1e-9)
    # the inverse: wanted landings the map reaches with targets inside the fitted range
    inside = np.all((fresh["target"] >= model.target_low) & (fresh["target"] <= model.target_high), axis=1)
    assert inside.sum() > 250
    t, p, v = (fresh[k][inside] for k in ("target", "plan_p", "plan_v"))
    wanted = model.predict(t, p, v)
    cmd = model.command(wanted, p, v)
    np.testing.assert_allclose(model.predict(cmd, p, v), wanted, atol=1e-6)
    np.testing.assert_allclose(cmd, t, atol=1e-5)
    # out of reach: the command stays inside the fitted targets
    far = np.tile([[-6.0, 3.0]], (len(fresh["plan_p"]), 1))
    cmd = model.command(far, fresh["plan_p"], fresh["plan_v"])
    assert np.all(cmd >= model.target_low - 1e-12) and np.all(cmd <= model.target_high + 1e-12)
    # with noise the held-out residuals report it
    noisy = LandingModel.fit(_synthetic_shots(2000, rng, noise=0.1), model.fitted_params)
    assert np.all(np.abs(noisy.heldout_rmse_m - 0.1) < 0.02)


def test_files_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    model = LandingModel.fit(_synthetic_shots(500, rng), ScriptedParams.preset("rally").to_vector())
    path = model.save(tmp_path / "m.json")
    back = LandingModel.load(path)
    for k in ("mean", "std", "coef", "target_low", "target_high", "fitted_params", "heldout_rmse_m"):
        np.testing.assert_array_equal(getattr(back, k), getattr(model, k))
    with pytest.raises(FileNotFoundError, match="landing model file not found"):
        LandingModel.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        LandingModel.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"kind": "something"}))
    with pytest.raises(ValueError, match="not a landing model"):
        LandingModel.load(tmp_path / "other.json")
    data = model.to_dict()
    del data["coef"]
    with pytest.raises(ValueError, match="missing field 'coef'"):
        LandingModel.from_dict(data)
    data = model.to_dict()
    data["coef"] = data["coef"][:-1]
    with pytest.raises(ValueError, match="coef"):
        LandingModel.from_dict(data)
    p = np.zeros((3, 3))
    with pytest.raises(ValueError, match="target: expected shape"):
        model.predict(np.zeros((3, 3)), p, p)
    bad = p.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="plan_v: contains NaN"):
        model.command(np.zeros((3, 2)), p, bad)
    with pytest.raises(ValueError, match="at least 100 shots"):
        LandingModel.fit(_synthetic_shots(50, rng), model.fitted_params)


def test_policy_requires_the_fitted_parameters_aim_apart():
    model = shipped_rally_model()
    rally = ScriptedParams.preset("rally")
    np.testing.assert_array_equal(model.fitted_params, rally.to_vector())
    BatchedScriptedPolicy(2, params=dataclasses.replace(rally, aim_x_m=-1.0, aim_dy_m=0.1), landing_model=model)
    with pytest.raises(ValueError, match="fitted with swing_speed_mps"):
        BatchedScriptedPolicy(2, params=dataclasses.replace(rally, swing_speed_mps=2.0), landing_model=model)
    policy = BatchedScriptedPolicy(2, params=rally, landing_model=model)
    with pytest.raises(ValueError, match="fitted with hit_plane_x_m"):
        policy.set_params(np.tile(ScriptedParams().to_vector(), (2, 1)))


def test_collect_shots_records_each_contact():
    shots = collect_shots(ScriptedParams.preset("rally"), episodes=16, steps=150, seed=5)
    n = len(shots["target"])
    assert n >= 8  # most of the 16 serves are hit within 1.5 s
    assert all(shots[k].shape == (n, d) for k, d in (("target", 2), ("plan_p", 3), ("plan_v", 3), ("landing", 2)))
    rally = ScriptedParams.preset("rally")
    aim = np.array([rally.aim_x_m + rally.aim_dx_m, rally.aim_y_m + rally.aim_dy_m])
    assert np.all(shots["target"] >= aim + [-1.2, -0.6]) and np.all(shots["target"] <= aim + [0.6, 0.6])
    assert np.all(shots["plan_p"][:, 0] > 1.0) and np.all(shots["plan_v"][:, 0] > 0)
    assert np.all(np.isfinite(shots["landing"]))


def test_shipped_model_lands_returns_nearer_the_wanted_point():
    """The rally preset aiming at x = -1.0 m with and without the model (then through its fixed aim correction), the same 256 serves for 4 s: the model's
    returns land nearer the wanted point and fewer go out (rally evaluation: docs/envs.md)."""
    from robot_rt.envs.vector import TableTennisVectorEnv

    n = 256
    results = {}
    wanted_x = rally_policy(1)._p["aim_x_m"][0]  # with a model the aim is the wanted landing
    rally = ScriptedParams.preset("rally")
    for name in ("plain", "model"):
        policy = rally_policy(n)
        if name == "plain":  # its lob aimed at the wanted point through the preset's fixed correction
            plain = dataclasses.replace(rally, aim_x_m=wanted_x - rally.aim_dx_m)
            policy = BatchedScriptedPolicy(n, params=plain)
        env = TableTennisVectorEnv(n, max_episode_steps=400)
        obs, _ = env.reset(seed=list(range(9000, 9000 + n)))
        errors, outs = [], 0
        for _ in range(400):
            obs, _, term, trunc, info = env.step(policy(obs))
            landed = np.asarray(info["landed"])
            errors += (env.world.landing[landed, 0] - wanted_x).tolist()
            outs += int(np.sum(term & (np.asarray(info["outcome"]) == "out")))
        results[name] = (np.sqrt(np.mean(np.square(errors))), outs, len(errors))
    (rms_plain, outs_plain, _), (rms_model, outs_model, landed_model) = results["plain"], results["model"]
    assert landed_model > 200
    assert rms_model < 0.8 * rms_plain, results
    assert outs_model < outs_plain, results


def test_centered_landing_formula_and_validation():
    """centered_landing moves a wanted landing point onto the line from the contact to the wanted y on the human's
    plane (g = 1: a straight flight through it reaches the plane at that y), scaled by g; a contact near the
    plane leaves it unmoved; arrival_centering needs a model and a finite value."""
    policy = rally_policy(3, arrival_centering=1.0)
    wanted = np.array([[-1.0, 0.0], [-1.0, 0.1], [-1.0, 0.0]])
    contact = np.array([[1.5, 0.64, 0.9], [1.5, 0.1, 0.9], [-1.5, 0.5, 0.9]])
    got = policy.centered_landing(wanted, contact)
    x_plane = policy.human_plane_x_m
    for i in (0, 1):  # the contact, the moved point and (x_plane, wanted y) lie on one line
        (xc, yc), (xl, yl) = contact[i, :2], got[i]
        y_at_plane = yc + (yl - yc) * (x_plane - xc) / (xl - xc)
        assert y_at_plane == pytest.approx(wanted[i, 1], abs=1e-12)
    assert got[1, 1] == pytest.approx(0.1)  # a contact at the wanted y: nothing to correct
    assert np.array_equal(got[2], wanted[2])  # den = x_plane - x_contact >= -0.5: unmoved
    assert np.allclose(rally_policy(3, arrival_centering=2.0).centered_landing(wanted, contact)[0, 1], 2 * got[0, 1])
    with pytest.raises(ValueError, match="arrival_centering: needs a landing_model"):
        BatchedScriptedPolicy(2, arrival_centering=1.0)
    with pytest.raises(ValueError, match="arrival_centering: expected a finite number"):
        rally_policy(2, arrival_centering=float("nan"))


def test_arrival_centering_brings_the_returns_nearer_the_humans_centre(monkeypatch):
    """The shipped rally policy with and without arrival centering on the same 128 serves for 4 s: the returns reach
    the human's hitting plane nearer y = 0 with it (mean |y| of the states the human model answers), where the
    default human answers best."""
    from robot_rt.envs import human_model as hm
    from robot_rt.envs.vector import TableTennisVectorEnv

    arrivals = []
    answer = hm.ReturnModel.return_probability

    def recording(self, states):
        arrivals.append(np.asarray(states, dtype=np.float64).reshape(-1, 9).copy())
        return answer(self, states)

    monkeypatch.setattr(hm.ReturnModel, "return_probability", recording)
    n = 128
    spread = {}
    for g in (0.0, RALLY_ARRIVAL_CENTERING):
        arrivals.clear()
        policy = rally_policy(n, arrival_centering=g)
        env = TableTennisVectorEnv(n, max_episode_steps=400)
        obs, _ = env.reset(seed=list(range(9000, 9000 + n)))
        for _ in range(400):
            obs, *_ = env.step(policy(obs))
        env.close()
        states = np.concatenate(arrivals)
        spread[g] = (float(np.mean(np.abs(states[:, 1]))), len(states))
    (off, n_off), (on, n_on) = spread[0.0], spread[RALLY_ARRIVAL_CENTERING]
    assert n_off > 100 and n_on > 100, spread
    assert on < 0.85 * off, spread
