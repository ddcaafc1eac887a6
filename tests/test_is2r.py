"""i-S2R: refit moves the model towards the real player, population evaluation (CRN, sharding), the full
loop (every stage, run directory, resume) and the CLI smoke run through the real-time deploy."""

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from robot_rt.ballistics import simulate
from robot_rt.envs.human_model import HumanBehaviorModel
from robot_rt.learning import is2r

BACKEND = "auto"


def _tracks(model, n, seed):
    """Noisy 200 Hz camera tracks of balls drawn from `model` (as the cameras record the real player)."""
    rng = np.random.default_rng(seed)
    tracks = []
    for k, state in enumerate(model.sample(n, rng)):
        traj = simulate(state, 0.6, 1e-3)
        idx = np.arange(0, len(traj.t_s), 5)
        tracks.append((traj.t_s[idx] + 3.0 * k, traj.states[idx, :3] + rng.normal(0.0, 0.005, (len(idx), 3))))
    return tracks


def test_refit_moves_the_model_towards_the_real_player():
    real, default = HumanBehaviorModel.real_player(), HumanBehaviorModel.default()
    tracks = _tracks(real, 10, 0)
    fitted = is2r.refit_human(tracks, default, prior_weight=5.0, name="H1")
    assert fitted.n_tracks_used == 10
    d_fit, d_default = is2r.model_distance(fitted, real), is2r.model_distance(default, real)
    assert d_fit < 0.6 * d_default, (d_fit, d_default)
    # more tracks (less shrinkage towards the prior) -> closer still
    more = is2r.refit_human(tracks + _tracks(real, 14, 1), default, prior_weight=5.0)
    assert is2r.model_distance(more, real) < d_fit
    # the prior's weight is a real pseudo-count: an overwhelming prior stays at the default
    stuck = is2r.refit_human(tracks, default, prior_weight=1e6)
    assert is2r.model_distance(stuck, default) < 0.01
    assert fitted.returns == default.returns  # tracks do not observe the return model


def test_refit_bad_input():
    default = HumanBehaviorModel.default()
    with pytest.raises(ValueError, match="prior_weight"):
        is2r.refit_human(_tracks(default, 3, 0), default, prior_weight=-1.0)
    with pytest.raises(TypeError, match="prior"):
        is2r.refit_human(_tracks(default, 3, 0), prior={"mean": 0})
    with pytest.raises(ValueError, match="tracks"):
        is2r.refit_human(_tracks(default, 2, 0), default)


def test_evaluate_uses_common_random_numbers_and_is_deterministic():
    family = is2r.make_family("auto")
    theta = family.initial()
    thetas = np.stack([theta, theta, family.bounds()[0]])
    a = is2r.evaluate(
        family, HumanBehaviorModel.default(), thetas, episodes=3, seed=5, max_episode_steps=250, backend=BACKEND
    )
    assert a["rally"].shape == (3, 3) and a["fitness"].shape == (3,)
    np.testing.assert_array_equal(a["rally"][0], a["rally"][1])  # same policy, same balls
    b = is2r.evaluate(
        family, HumanBehaviorModel.default(), thetas, episodes=3, seed=5, max_episode_steps=250, backend=BACKEND
    )
    np.testing.assert_array_equal(a["hits"], b["hits"])
    np.testing.assert_allclose(a["fitness"], (a["rally"] + 0.2 * a["hits"]).mean(axis=1))
    with pytest.raises(ValueError, match="thetas"):
        is2r.evaluate(family, HumanBehaviorModel.default(), theta, episodes=1, seed=0)
    with pytest.raises(ValueError, match="episodes"):
        is2r.evaluate(family, HumanBehaviorModel.default(), thetas, episodes=0, seed=0)


def _args(out, **over):
    parser = argparse.ArgumentParser()
    is2r.add_arguments(parser)
    argv = ["--out", str(out), "--smoke", "--no-progress", "--backend", BACKEND]
    for k, v in over.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return parser.parse_args(argv)


class _CountingStandIn:
    """A stand-in real side's bookkeeping: counts its deploys and, after `fail_after` of them, crashes the run."""

    def __init__(self, fail_after=None):
        self.calls = 0
        self.fail_after = fail_after

    def _count_call(self) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # simulated crash mid-run


class _SimStandIn(_CountingStandIn):
    """Test double for the real side (the loop's logic only, faster than real time): plays the real player in
    the batched simulator and returns camera-like tracks of its balls. Counts calls."""

    def __call__(self, policy, *, n_balls, seed, log_path=None):
        self._count_call()
        family = is2r.HeuristicFamily()
        ev = is2r.evaluate(
            family, HumanBehaviorModel.real_player(), policy.theta[None], n_balls, seed, 300, backend=BACKEND
        )
        return {
            "rally_lengths": ev["rally"][0].tolist(),
            "tracks": _tracks(HumanBehaviorModel.real_player(), n_balls, seed),
            "return_rate": 0.0,
        }


def test_loop_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "run"
    crash = _SimStandIn(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        is2r.run(_args(out), deploy_fn=crash)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    done_before = len(log)
    assert any(r["stage"] == "refit" for r in log) and (out / "checkpoints" / "latest.pt").exists()
    with pytest.raises(FileExistsError):
        is2r.run(_args(out), deploy_fn=_SimStandIn())
    rest = _SimStandIn()
    assert is2r.run(_args(out, resume=True), deploy_fn=rest) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    stages = [(r["stage"], r["branch"]) for r in log]
    # smoke plan: shared train, deploy/refit x2 with a train between, ft train, ft deploy, finetune, ft deploy
    assert stages.count(("deploy", "is2r")) == 2 and stages.count(("deploy", "ft")) == 2
    assert stages.count(("finetune", "ft")) == 1 and stages.count(("refit", "is2r")) == 2
    assert len(log) > done_before
    # resume did not redo finished stages: both iteration-0 deploys ran before the crash
    assert rest.calls == 2 + 1 + 1  # the 2 fine-tuning candidates (the first crashed), both iteration-1 deploys
    results = json.loads((out / "results.json").read_text())
    for method in ("i-S2R", "S2R+FT"):
        rows = results["methods"][method]
        assert [r["iteration"] for r in rows] == [0, 1]
        assert all(r["n_balls"] == 3 and sum(r["histogram"].values()) == 3 for r in rows)
        assert all(r["ci95"][0] <= r["mean"] <= r["ci95"][1] for r in rows)
        assert all(r["sim_vs_real_player_model"]["n"] == 4 for r in rows)
    assert results["methods"]["i-S2R"][1]["real_balls_learned"] == 3  # the first deploy's balls
    assert results["methods"]["S2R+FT"][1]["real_balls_learned"] == 2  # 2 fine-tuning candidates x 1 ball
    assert (out / "plots" / "rally_length.png").stat().st_size > 1000
    assert (out / "models" / "H1.json").exists() and (out / "config.json").exists()
    dist = results["human_model_distance_to_real"]
    assert dist[1] < dist[0]  # the refit moved H towards the real player


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="--real-balls"):
        is2r.config_from_args(_args(tmp_path, smoke=True, real_balls=1))
    with pytest.raises(ValueError, match="policy"):
        is2r.make_family("ppo")


@pytest.mark.slow
def test_cli_smoke_runs_every_stage_through_the_real_time_deploy(tmp_path):
    """`robot-rt train is2r --smoke`: sim ES, deploys through the real-time loop and the rally sim-server,
    refit, real-side fine-tuning, results and plot; `--resume` of the finished run only rewrites results."""
    out = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "robot_rt.cli", "train", "is2r", "--smoke", "--no-progress", "--out", str(out)]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "i-S2R   iteration 1" in proc.stdout and "S2R+FT  iteration 1" in proc.stdout
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    deploys = [r for r in log if r["stage"] == "deploy"]
    assert len(deploys) == 4 and all(r["wall_s"] > 1.0 for r in deploys)  # real time, not a shortcut
    assert sum(r["tracks"] for r in deploys if r["branch"] == "is2r") >= 3  # the cameras recorded balls
    assert [r["stage"] for r in log].count("finetune") == 1 and [r["stage"] for r in log].count("refit") == 2
    assert len(list((out / "deploys").glob("*.rrlog"))) == 6  # 4 evaluations + 2 fine-tuning candidates
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"i-S2R", "S2R+FT"}
    assert (out / "plots" / "rally_length.png").stat().st_size > 1000
    assert (out / "config.json").exists() and (out / "checkpoints" / "latest.pt").exists()
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((out / "log.jsonl").read_text().splitlines()) == len(log)  # nothing ran again
    print(f"smoke wall time {wall:.0f} s")


def _eval_for_sharding():
    family = is2r.make_family("auto")
    lo, hi = family.bounds()
    thetas = np.stack([family.initial(), 0.5 * (lo + hi), family.initial()])
    return is2r.evaluate(family, HumanBehaviorModel.default(), thetas, episodes=2, seed=9, max_episode_steps=200)


def _shard_worker(rank, world_size, port, out_dir):
    import os
    import pickle

    import torch

    from robot_rt.learning import distributed

    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    torch.set_num_threads(1)
    assert distributed.init_from_env()
    ev = _eval_for_sharding()
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as handle:
        pickle.dump({k: v.tolist() for k, v in ev.items()}, handle)
    distributed.shutdown()


def test_population_evaluation_sharded_over_two_processes_matches_one(tmp_path):
    import pickle
    import socket

    import torch.multiprocessing as mp

    single = _eval_for_sharding()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_shard_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    for rank in range(2):
        got = pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes())
        np.testing.assert_array_equal(np.asarray(got["rally"]), single["rally"])
        np.testing.assert_array_equal(np.asarray(got["hits"]), single["hits"])
        np.testing.assert_array_equal(np.asarray(got["fitness"]), single["fitness"])
    np.testing.assert_array_equal(single["hits"][0], single["hits"][2])  # same policy, same balls (CRN)
    assert single["hits"].sum() > 0  # the balls were played, not all missed


def _deploy_result(rally_lengths, reasons):
    from robot_rt.bridge.deploy import DeployResult

    return DeployResult(
        rally_lengths=list(rally_lengths),
        outcomes=["out"] * len(rally_lengths),
        return_rate=0.25,
        serves=len(rally_lengths) + 1,
        balls=len(rally_lengths) + 2,
        hits=3,
        tracks=[],
        true_tracks=[],
        min_paddle_distance_m=[],
        telemetry={},
        safety_events={"workspace_stop": 1, "watchdog_stop": 0},
        robot_server={},
        adapter={},
        wall_s=1.0,
        stop_reasons_seen=list(reasons),
    )


def test_default_deploy_scores_a_protective_stop_as_lost_balls(monkeypatch):
    """A stop that ends the deploy: the rallies played before it count, the balls it did not play count as lost
    (rally 0), the stop is on record; a DeployStopped without a result still propagates."""
    from robot_rt.bridge import deploy as deploy_mod

    def stopped(policy, **kwargs):
        raise deploy_mod.DeployStopped(("workspace",), kwargs.get("log_path"), _deploy_result([2, 0], ["workspace"]))

    monkeypatch.setattr(deploy_mod, "deploy", stopped)
    res = is2r.default_deploy(object(), n_balls=5, seed=0)
    assert res["rally_lengths"] == [2, 0, 0, 0, 0]
    assert res["outcomes"] == ["out", "out"] + ["protective_stop"] * 3
    assert res["protective_stop"] == ["workspace"] and res["balls_lost_to_stop"] == 3
    assert res["safety_events"] == {"workspace_stop": 1}
    assert is2r.real_fitness(res, 5, 0.2) == pytest.approx((2 + 0.2 * 3) / 5)

    def bare(policy, **kwargs):
        raise deploy_mod.DeployStopped(("estop",))

    monkeypatch.setattr(deploy_mod, "deploy", bare)
    with pytest.raises(deploy_mod.DeployStopped, match="estop"):
        is2r.default_deploy(object(), n_balls=5, seed=0)


class _StopsFirst(_SimStandIn):
    """The stand-in real side whose first deploy ends in a workspace stop after one rally."""

    def __call__(self, policy, *, n_balls, seed, log_path=None):
        res = super().__call__(policy, n_balls=n_balls, seed=seed, log_path=log_path)
        if self.calls == 1:
            res.update(
                rally_lengths=res["rally_lengths"][:1] + [0] * (n_balls - 1),
                protective_stop=["workspace"],
                balls_lost_to_stop=n_balls - 1,
            )
        return res


def test_a_protective_stop_is_listed_in_the_results(tmp_path):
    out = tmp_path / "run"
    assert is2r.run(_args(out), deploy_fn=_StopsFirst()) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["protective_stops"] == [{"deploy": "is2r_eval_0", "reasons": ["workspace"], "balls_lost": 2}]
    deploys = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    deploys = [r for r in deploys if r["stage"] == "deploy"]
    assert [r["protective_stop"] for r in deploys] == [["workspace"]] + [[]] * (len(deploys) - 1)


# ================================================================================================ --policy neural
@pytest.fixture(scope="module")
def neural_family():
    return is2r.make_family("neural", seed=0, backend=BACKEND)


def test_a_fresh_network_plays_like_its_scripted_base(neural_family):
    """The fresh residual network's output layer starts near zero: its actions stay within 2 % of the half range of
    the scripted preset's on the same observations, so i-S2R's first policy is the preset."""
    from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
    from robot_rt.envs.vector import TableTennisVectorEnv

    env = TableTennisVectorEnv(4, human=HumanBehaviorModel.default(), max_episode_steps=400, backend=BACKEND)
    obs, _ = env.reset(seed=[3, 4, 5, 6])
    net = neural_family.batched(np.repeat(neural_family.initial()[None], 4, axis=0))
    base = BatchedScriptedPolicy(4, params=ScriptedParams.preset("rally").to_vector())
    half = (env.single_action_space.high - env.single_action_space.low) / 2
    worst = 0.0
    for _ in range(250):
        a_net, a_base = net.act(obs), np.asarray(base(obs), dtype=np.float32)
        worst = max(worst, float(np.max(np.abs(a_net - a_base) / half)))
        obs, *_ = env.step(a_net)
    assert worst < 0.02, worst
    assert neural_family.state["wrappers"]["residual_scale"] == 0.2


def test_neural_worlds_with_their_own_weights_match_one_policy_each(neural_family):
    """One vmapped forward over N weight vectors = N separately loaded policies, step by step."""
    from robot_rt.envs.vector import TableTennisVectorEnv

    rng = np.random.default_rng(1)
    theta = neural_family.initial()
    thetas = np.stack([theta, theta + 0.05 * rng.standard_normal(theta.shape), theta - 0.2])
    env = TableTennisVectorEnv(3, human=HumanBehaviorModel.default(), max_episode_steps=300, backend=BACKEND)
    obs, _ = env.reset(seed=[7, 8, 9])
    batch, singles = neural_family.batched(thetas), [neural_family.single(t) for t in thetas]
    for _ in range(80):
        a = batch.act(obs)
        np.testing.assert_allclose(a, np.stack([p(o) for p, o in zip(singles, obs)]), atol=2e-5)
        obs, *_ = env.step(a)
    assert not np.allclose(batch.act(obs)[0], batch.act(obs)[2])  # the weights matter


def test_neural_family_from_a_policy_file(neural_family, tmp_path):
    from robot_rt.learning.neural_policy import load_policy

    theta = neural_family.initial() + 0.01
    path = neural_family.save(theta, tmp_path / "p.pt")
    again = is2r.make_family("neural", init_policy=str(path))
    np.testing.assert_allclose(again.initial(), theta, atol=1e-6)  # float32 weights
    assert again.state["wrappers"] == neural_family.state["wrappers"]
    assert isinstance(load_policy(path)(np.zeros(again.template.obs_dim, dtype=np.float32)), np.ndarray)
    a = is2r.evaluate(again, HumanBehaviorModel.default(), np.stack([theta, theta]), 2, 11, 300, backend=BACKEND)
    np.testing.assert_array_equal(a["hits"][0], a["hits"][1])  # common random numbers
    with pytest.raises(FileNotFoundError, match="init_policy"):
        is2r.make_family("neural", init_policy=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="param_bound"):
        is2r.make_family("neural", init_policy=str(path), param_bound=0.0)


def test_neural_es_defaults_are_in_weight_units(tmp_path):
    cfg = is2r.config_from_args(_args(tmp_path / "a", policy="neural"))
    assert cfg.sigma == pytest.approx(0.02 / 20) and cfg.step_size == pytest.approx(0.01 / 20)
    assert cfg.real_sigma == cfg.sigma and cfg.real_step_size == cfg.step_size
    assert is2r.config_from_args(_args(tmp_path / "b", policy="neural", sigma=0.01)).sigma == 0.01
    assert is2r.config_from_args(_args(tmp_path / "c")).sigma == 0.06  # the knob families: unchanged
    with pytest.raises(ValueError, match="--param-bound"):
        is2r.config_from_args(_args(tmp_path / "d", policy="neural", param_bound=-1.0))
    with pytest.raises(ValueError, match="--sigma"):
        is2r.config_from_args(_args(tmp_path / "e", sigma=0.0))


class _PlaysThePolicy(_CountingStandIn):
    """Stand-in real side that plays the deployed policy object itself, one ball per episode of a one-world
    batched simulator against the real player's model (faster than real time); counts calls, can crash."""

    def __call__(self, policy, *, n_balls, seed, log_path=None):
        from robot_rt.envs.vector import TableTennisVectorEnv

        self._count_call()
        env = TableTennisVectorEnv(1, human=HumanBehaviorModel.real_player(), max_episode_steps=300, backend=BACKEND)
        rallies, hits = [], 0
        for ball in range(n_balls):
            obs, _ = env.reset(seed=seed + ball)
            policy.reset()
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(np.asarray(policy(obs[0]))[None])
                hits += int(info["hit"][0])
                done = bool(terminated[0] or truncated[0])
            rallies.append(int(info["rally_length"][0]))
        return {
            "rally_lengths": rallies,
            "hits": hits,
            "tracks": _tracks(HumanBehaviorModel.real_player(), n_balls, seed),
            "return_rate": 0.0,
        }


def test_neural_loop_runs_every_stage_resumes_and_exports_the_deployed_networks(tmp_path):
    import torch

    from robot_rt.learning.neural_policy import load_policy

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        is2r.run(_args(out, policy="neural"), deploy_fn=_PlaysThePolicy(fail_after=3))
    first = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["family_state"]
    rest = _PlaysThePolicy()
    assert is2r.run(_args(out, policy="neural", resume=True), deploy_fn=rest) == 0
    assert rest.calls == 4  # the fine-tuning stage again (its second candidate crashed), both iteration-1 deploys
    results = json.loads((out / "results.json").read_text())
    assert results["policy_family"] == "neural" and results["parameter_count"] > 1000
    assert "parameter_names" not in results and "parameter_names" not in json.loads((out / "config.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all("theta" not in r for r in log) and all(r["theta_norm"] > 0 for r in log if r["stage"] == "train")
    for method in ("i-S2R", "S2R+FT"):
        assert [r["n_balls"] for r in results["methods"][method]] == [3, 3]
    final = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
    torch.testing.assert_close(final["family_state"]["normalizer"], first["normalizer"])  # the resumed network
    ft = is2r.BGS.from_state_dict(final["es"]["ft"]).mean
    exported = load_policy(out / "policies" / "ft_1.pt")
    from robot_rt.learning.bgs import ParameterVector

    np.testing.assert_allclose(ParameterVector(exported.actor).get(), ft, atol=1e-6)  # what S2R+FT deployed last
    assert sorted(p.name for p in (out / "policies").glob("*.pt")) == ["ft_0.pt", "ft_1.pt", "is2r_0.pt", "is2r_1.pt"]


def _fake_results(seed, is2r_lengths, ft_lengths):
    def rows(per_iteration):
        out = []
        for i, lengths in enumerate(per_iteration):
            record = {
                "iteration": i,
                "rally_lengths": lengths,
                "real_balls_learned": 20 * i,
                "sim_generations": 8 * (i + 1),
                "return_rate": 0.5,
                "hits_per_rally": 1.0 + i,
                "outcomes": ["out"] * len(lengths),
                "sim_vs_real_player_model": {"rally_lengths": [i, i + 1]},
            }
            out.append(is2r.summarise(record))
        return out

    return {
        "config": {"seed": seed, "policy": "neural", "iterations": len(is2r_lengths)},
        "policy_family": "neural",
        "methods": {"i-S2R": rows(is2r_lengths), "S2R+FT": rows(ft_lengths)},
        "human_model_distance_to_real": [1.1, 0.4],
        "protective_stops": [],
        "wall_time_s": 100.0,
    }


def test_merge_results_pools_seeds_and_pairs_the_methods(tmp_path):
    a = _fake_results(0, [[0, 1, 2], [3, 3, 3]], [[0, 0, 2], [1, 1, 1]])
    b = _fake_results(1, [[1, 1, 1], [2, 4, 3]], [[1, 1, 1], [2, 0, 1]])
    merged = is2r.merge_results([a, b], n_boot=500)
    assert merged["seeds"] == [0, 1] and merged["policy_family"] == "neural"
    it1 = merged["methods"]["i-S2R"][1]
    assert it1["n_balls"] == 6 and it1["mean"] == pytest.approx(18 / 6) and it1["seed_means"] == [3.0, 3.0]
    assert it1["histogram"] == {"2": 1, "3": 4, "4": 1} and it1["ci95"][0] <= 3.0 <= it1["ci95"][1]
    assert it1["sim_vs_real_player_model"]["n"] == 4 and it1["hits_per_rally"] == pytest.approx(2.0)
    diff = merged["paired_difference_is2r_minus_ft"]
    assert [d["iteration"] for d in diff] == [0, 1]
    assert diff[1]["mean"] == pytest.approx((18 - 6) / 6) and diff[1]["ci95"][0] > 0  # every pair favours i-S2R
    assert is2r.plot_results(merged, tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="seed appears twice"):
        is2r.merge_results([a, a])
    c = _fake_results(2, [[0]], [[0]])
    with pytest.raises(ValueError, match="iterations"):
        is2r.merge_results([a, c])


def test_bootstrap_intervals_cover_the_true_mean_and_difference():
    """Rally-like samples (geometric, skewed): over 200 repeated experiments the 95 % intervals of the mean
    (bootstrap_ci) and of a difference of means (bootstrap_difference_ci) contain the true value about 95 % of the
    time, and the difference's interval is wider than either sample's own (it carries both samples' noise)."""
    rng = np.random.default_rng(11)
    p_a, p_b = 0.25, 0.3  # geometric rallies from 0: mean (1 - p) / p
    true_a, true_b = (1 - p_a) / p_a, (1 - p_b) / p_b
    cover_mean = cover_diff = 0
    for trial in range(200):
        a = rng.geometric(p_a, 120) - 1
        b = rng.geometric(p_b, 150) - 1
        lo, hi = is2r.bootstrap_ci(a, n_boot=1000, seed=trial)
        cover_mean += lo <= true_a <= hi
        dlo, dhi = is2r.bootstrap_difference_ci(a, b, n_boot=1000, seed=trial)
        cover_diff += dlo <= true_a - true_b <= dhi
        assert dlo < a.mean() - b.mean() < dhi
        assert dhi - dlo > hi - lo
    assert 0.88 <= cover_mean / 200 <= 0.99
    assert 0.88 <= cover_diff / 200 <= 0.99


def test_bootstrap_difference_ci_separates_and_refuses():
    rng = np.random.default_rng(3)
    a = rng.geometric(0.2, 2000) - 1  # mean 4
    b = rng.geometric(0.25, 2000) - 1  # mean 3
    lo, hi = is2r.bootstrap_difference_ci(a, b)
    assert 0 < lo < 1.0 < hi  # resolved, and contains the true difference
    assert [lo, hi] == is2r.bootstrap_difference_ci(a, b)  # deterministic by seed
    rlo, rhi = is2r.bootstrap_difference_ci(b, a)
    assert rlo == pytest.approx(-hi, abs=0.05) and rhi == pytest.approx(-lo, abs=0.05)
    same_lo, same_hi = is2r.bootstrap_difference_ci(a, a)
    assert same_lo < 0 < same_hi
    assert is2r.bootstrap_difference_ci([2, 2, 2], [1, 1]) == [1.0, 1.0]  # no spread: exactly the difference
    with pytest.raises(ValueError, match="b: expected at least one value"):
        is2r.bootstrap_difference_ci(a, [])
    with pytest.raises(ValueError, match="a: contains NaN"):
        is2r.bootstrap_difference_ci([1.0, float("nan")], b)
    with pytest.raises(ValueError, match="a: expected a 1-D sample"):
        is2r.bootstrap_difference_ci(np.ones((2, 3)), b)
    with pytest.raises(ValueError, match="n_boot: expected a positive int"):
        is2r.bootstrap_difference_ci(a, b, n_boot=0)
