import argparse
import json
import math

import numpy as np
import pytest
import torch

from robot_rt.learning import goalseye
from robot_rt.learning.dataset import EpisodeDataset
from robot_rt.learning.gcbc import GCBCPolicy, evaluate_loss, train_gcbc
from robot_rt.learning.rundir import RunDir, read_log


@pytest.fixture(autouse=True)
def one_torch_thread():
    # the MLPs are small; on the shared 2-core CI box torch's thread pool spin-waits (25x slower measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_goal_task(n, seed):
    """Actions that depend on features and goal jointly (a goal-blind policy cannot fit them)."""
    rng = np.random.default_rng(seed)
    f = rng.normal(0.0, 1.0, (n, 6)).astype(np.float32) * np.array([1, 2, 0.5, 1, 3, 1], np.float32)
    g = rng.uniform([-1.2, -0.6], [-0.3, 0.6], (n, 2)).astype(np.float32)
    a = np.tanh(np.stack([f[:, 0] * g[:, 1] + g[:, 0], np.sin(f[:, 1]) - g[:, 1], 0.5 * f[:, 2] + f[:, 4] * 0.2], 1))
    return f, g, a.astype(np.float32)


def test_gcbc_learns_a_goal_conditioned_mapping():
    f, g, a = synthetic_goal_task(4000, 0)
    fh, gh, ah = synthetic_goal_task(1000, 1)
    torch.manual_seed(0)
    model = GCBCPolicy(6, goal_dim=2, act_dim=3, hidden=(64, 64))
    model.fit_normalisation(f, g)
    before = evaluate_loss(model, fh, gh, ah)
    _, losses = train_gcbc(model, f, g, a, steps=600, batch_size=256, lr=3e-3, seed=0)
    after = evaluate_loss(model, fh, gh, ah)
    baseline = float(np.mean((ah - a.mean(0)) ** 2))  # best constant prediction
    assert np.mean(losses[-50:]) < 0.2 * np.mean(losses[:50])
    assert after < 0.1 * baseline and after < 0.1 * before
    # the goal matters: the same features with another goal give the other goal's actions
    swapped = model.act(fh, gh[::-1].copy())
    assert np.mean((swapped - ah) ** 2) > 5 * after
    # a checkpoint round trip reproduces the policy (normalisation included)
    again = GCBCPolicy.from_state(model.state())
    np.testing.assert_array_equal(again.act(fh, gh), model.act(fh, gh))


def test_gcbc_training_is_reproducible_and_validates_input():
    f, g, a = synthetic_goal_task(500, 2)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = GCBCPolicy(6, act_dim=3, hidden=(16,))
        train_gcbc(model, f, g, a, steps=20, batch_size=64, seed=5)
        outs.append(model.act(f[:10], g[:10]))
    np.testing.assert_array_equal(outs[0], outs[1])
    # the moving average: decay 0 copies the last iterate; decay d lags it; normalisation is copied
    torch.manual_seed(3)
    model = GCBCPolicy(6, act_dim=3, hidden=(16,))
    model.fit_normalisation(f, g)
    ema0, ema9 = GCBCPolicy.from_state(model.state()), GCBCPolicy.from_state(model.state())
    start = [p.detach().clone() for p in model.parameters()]
    train_gcbc(model, f, g, a, steps=1, batch_size=64, seed=5, ema=ema0, ema_decay=0.0)
    train_gcbc(GCBCPolicy.from_state(ema9.state()), f, g, a, steps=1, batch_size=64, seed=5, ema=ema9, ema_decay=0.9)
    for p0, p9, p, w in zip(ema0.parameters(), ema9.parameters(), model.parameters(), start):
        torch.testing.assert_close(p0, p, rtol=0, atol=0)
        torch.testing.assert_close(p9, 0.9 * w + 0.1 * p)
    torch.testing.assert_close(ema0.feat_mean, model.feat_mean)
    with pytest.raises(ValueError, match="ema_decay"):
        train_gcbc(model, f, g, a, steps=1, ema=ema0, ema_decay=1.0)
    with pytest.raises(ValueError, match="features"):
        train_gcbc(model, f[:, :5], g, a, steps=1)
    with pytest.raises(ValueError, match="goals"):
        train_gcbc(model, f, g[:-1], a, steps=1)
    with pytest.raises(ValueError, match=r"actions: expected normalised"):
        train_gcbc(model, f, g, a * 3, steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_gcbc(model, f, g, a, steps=-1)
    with pytest.raises(ValueError, match="feat_dim"):
        GCBCPolicy(0)


def test_wilson_interval():
    lo, hi = goalseye.wilson_interval(0, 16)
    assert lo == 0.0 and hi == pytest.approx(1.959964**2 / (16 + 1.959964**2))
    lo, hi = goalseye.wilson_interval(43, 100)
    assert lo < 0.43 < hi and (lo, hi) == pytest.approx((0.3373, 0.5279), abs=1e-3)
    lo2, hi2 = goalseye.wilson_interval(57, 100)
    assert (lo2, hi2) == pytest.approx((1 - hi, 1 - lo))
    with pytest.raises(ValueError, match="successes"):
        goalseye.wilson_interval(5, 4)


def test_episode_plan_is_a_function_of_its_identity():
    s1, t1 = goalseye.episode_plan(0, goalseye.STREAM_PRACTICE, 2, 50)
    s2, t2 = goalseye.episode_plan(0, goalseye.STREAM_PRACTICE, 2, 50)
    s3, _ = goalseye.episode_plan(0, goalseye.STREAM_PRACTICE, 3, 50)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(t1, t2)
    assert not np.array_equal(s1, s3)
    assert np.all((t1 >= goalseye.GOAL_LOW) & (t1 <= goalseye.GOAL_HIGH))


def test_run_episodes_records_consistent_episodes():
    config = dict(goalseye.DEFAULTS, max_episode_steps=200)
    env = goalseye.make_env(4, config)
    seeds, aims = goalseye.episode_plan(7, goalseye.STREAM_PLAY, 0, 6, goalseye.PLAY_LOW, goalseye.PLAY_HIGH)
    episodes = goalseye.run_episodes(env, goalseye.ScriptedAgent(4, 0.05, 1.0), seeds, aims, record=True)
    assert [e.seed for e in episodes] == list(seeds)
    for e in episodes:
        assert e.observations.shape == (e.length, 46) and e.actions.shape == (e.length, 8)
        assert np.all(np.abs(e.actions) <= 1.0)
        assert e.has_landed == (e.outcome == "returned")
        if e.has_landed:  # on the human's half of the table
            assert (
                -1.37 <= e.landing_point[0] <= 0 and abs(e.landing_point[1]) <= 0.7625 and math.isfinite(e.distance_m)
            )
        else:
            assert e.distance_m == math.inf
    batch = goalseye.episodes_to_batch(episodes)
    assert batch.n_episodes == 6 and batch.n_steps == sum(e.length for e in episodes)
    # the same episode seeds give the same episodes, whatever the slots (one env here)
    again = goalseye.run_episodes(
        goalseye.make_env(1, config), goalseye.ScriptedAgent(1, 0.05, 1.0), seeds[:2], aims[:2], record=True
    )
    for e, f in zip(episodes[:2], again):
        np.testing.assert_array_equal(e.actions, f.actions)
        np.testing.assert_array_equal(e.landing_point, f.landing_point)


def parse(argv):
    parser = argparse.ArgumentParser()
    goalseye.add_arguments(parser)
    return parser.parse_args(argv)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="--rounds"):
        goalseye.run(parse(["--out", str(tmp_path / "r"), "--smoke", "--rounds", "-1"]))
    with pytest.raises(ValueError, match="--seeds"):
        goalseye.run(parse(["--out", str(tmp_path / "r"), "--smoke", "--seeds", "1", "1"]))
    with pytest.raises(ValueError, match="--play-episodes"):
        goalseye.run(parse(["--out", str(tmp_path / "r"), "--smoke", "--play-episodes", "0"]))


def test_smoke_run_every_stage_then_resume_after_a_crash(tmp_path, monkeypatch):
    """`--smoke` runs play, relabelling, GCBC, self-practice, evaluation, results and plots; a crash before the
    last practice-only checkpoint is resumed without redoing finished rounds or duplicating data."""
    out = tmp_path / "run"
    real_save = RunDir.save_checkpoint

    def crashing_save(self, name, state):
        if name == "seed0-practice-only" and state["round"] == 2:
            raise RuntimeError("simulated crash")
        return real_save(self, name, state)

    monkeypatch.setattr(RunDir, "save_checkpoint", crashing_save)
    with pytest.raises(RuntimeError, match="simulated crash"):
        goalseye.run(parse(["--out", str(out), "--smoke", "--no-progress"]))
    monkeypatch.undo()
    before = read_log(out / "log.jsonl")
    assert not (out / "results.json").exists() or not json.loads((out / "results.json").read_text())["complete"]
    with pytest.raises(FileExistsError, match="--resume"):
        goalseye.run(parse(["--out", str(out), "--smoke", "--no-progress"]))

    assert goalseye.run(parse(["--out", str(out), "--smoke", "--no-progress", "--resume"])) == 0
    log = read_log(out / "log.jsonl")
    new = log[len(before) :]
    # resumed: no play and no finished round again; practice-only round 2 is re-trained and evaluated, then the
    # condition not reached before the crash runs
    assert not [r for r in new if r["event"] in ("play", "attempts")]
    evals = [(r["condition"], r["round"]) for r in new if r["event"] == "eval"]
    assert evals == [("practice-only", 2), ("no-new-data", 0), ("no-new-data", 1), ("no-new-data", 2)]
    sources = [e["source"] for e in EpisodeDataset(out / "data" / "seed0" / "practice-only").manifest()]
    assert sources == ["round-1", "round-2"]
    play = EpisodeDataset(out / "data" / "seed0" / "play")
    assert len(play) == goalseye.SMOKE["play_episodes"]

    config = json.loads((out / "config.json").read_text())
    assert config["smoke"] is True and config["play_episodes"] == goalseye.SMOKE["play_episodes"]
    for name in ("seed0-demos+practice", "seed0-demos-only", "seed0-practice-only"):
        assert (out / "checkpoints" / f"{name}.pt").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["complete"]
    for condition in goalseye.CONDITIONS:
        points = results["pooled"][condition]
        assert [p["attempts"] for p in points] == [0, 16, 32]
        for p in points:
            assert p["n"] == goalseye.SMOKE["eval_goals"]
            assert p["ci_30cm"][0] <= p["rate_30cm"] <= p["ci_30cm"][1]
            assert p["success_20cm"] <= p["success_30cm"]
    # demos-only and demos+practice share the round-0 model, so their first evaluations agree exactly
    assert results["per_seed"]["seed0/demos-only"][0] == results["per_seed"]["seed0/demos+practice"][0]
    # ... and the no-new-data control, which re-fitted it after the resume, got the same model (deterministic fit)
    assert results["per_seed"]["seed0/no-new-data"][0] == results["per_seed"]["seed0/demos+practice"][0]
    for radius in (20, 30):
        png = out / "plots" / f"success_{radius}cm.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the final policies' landings: one per held-out goal, consistent with the success counts; and their plots
    goals = np.array(results["eval_goals"])
    assert goals.shape == (goalseye.SMOKE["eval_goals"], 2)
    np.testing.assert_allclose(goals, goalseye.eval_plan(config)[1], atol=1e-4)
    for condition in goalseye.CONDITIONS:
        last = results["per_seed"][f"seed0/{condition}"][-1]
        assert len(last["landings"]) == last["n"] and sum(x is not None for x in last["landings"]) == last["landed"]
        dist = [math.dist(x, g) for x, g in zip(last["landings"], goals) if x is not None]
        assert sum(d <= 0.3 for d in dist) == last["success_30cm"]
        assert all("landings" not in p for p in results["per_seed"][f"seed0/{condition}"][:-1])
        assert (out / "plots" / f"landing_{condition}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [r for r in read_log(out / "log.jsonl") if "landings" in r]
    # the final checkpoint evaluated again gives the same episodes (tools/merge_goalseye_runs.py relies on it)
    again = goalseye.final_landings_from_checkpoint(out, config, 0, "demos+practice")
    assert again["landings"] == results["per_seed"]["seed0/demos+practice"][-1]["landings"]
    # the attempts were relabelled with what they achieved: data set goals are landing points
    attempts = EpisodeDataset(out / "data" / "seed0" / "demos+practice").read()
    assert attempts.n_episodes == 2 * goalseye.SMOKE["attempts_per_round"]


def _fake_results(seeds, successes, train_steps=100):
    config = dict(goalseye.DEFAULTS, seeds=list(seeds), conditions=["demos+practice"], train_steps=train_steps)
    curves = {}
    for seed, (k20, k30) in zip(seeds, successes):
        curves[(seed, "demos+practice")] = [
            {"round": 0, "attempts": 0, "n": 100, "success_20cm": k20, "success_30cm": k30},
            {"round": 1, "attempts": 50, "n": 100, "success_20cm": k20 + 5, "success_30cm": k30 + 5},
        ]
        for point in curves[(seed, "demos+practice")]:  # as a run records them
            point.update({f"rate_{r}cm": point[f"success_{r}cm"] / point["n"] for r in (20, 30)})
    return {
        "method": "m",
        "complete": True,
        "config": config,
        "wall_time_s": 10.0,
        "timings_s": {f"seed{s}/play_s": 1.0 for s in seeds},
        "world_size": 1,
        "pooled": goalseye.pool_curves(config["conditions"], curves),
        "per_seed": {f"seed{s}/{c}": v for (s, c), v in curves.items()},
    }


def test_merge_results_pools_runs_of_disjoint_seeds_as_one_run_would(tmp_path):
    a = _fake_results([0, 1], [(30, 50), (40, 60)])
    b = _fake_results([2], [(20, 70)])
    merged = goalseye.merge_results([a, b])
    whole = _fake_results([0, 1, 2], [(30, 50), (40, 60), (20, 70)])
    assert merged["pooled"] == whole["pooled"]
    last = merged["pooled"]["demos+practice"][-1]
    assert last["n"] == 300 and last["success_30cm"] == 50 + 60 + 70 + 15 and last["seeds"] == [0, 1, 2]
    assert merged["config"]["seeds"] == [0, 1, 2] and merged["wall_time_s"] == 20.0
    with pytest.raises(ValueError, match="overlap"):
        goalseye.merge_results([a, _fake_results([1], [(1, 2)])])
    with pytest.raises(ValueError, match="train_steps"):
        goalseye.merge_results([a, _fake_results([5], [(1, 2)], train_steps=7)])
    # the tool: results.json and both plots
    import importlib.util
    import json
    from pathlib import Path

    for name, r in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))
    path = Path(__file__).resolve().parents[1] / "tools" / "merge_goalseye_runs.py"
    spec = importlib.util.spec_from_file_location("merge_goalseye_runs", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 0
    out = json.loads((tmp_path / "out" / "results.json").read_text())
    assert out["pooled"] == json.loads(json.dumps(whole["pooled"]))
    assert (tmp_path / "out" / "success_30cm.png").stat().st_size > 1000


def test_landing_scatter_checks_its_input(tmp_path):
    from robot_rt.learning.plots import plot_landing_scatter

    goals = [[-0.5, 0.0], [-0.8, 0.3]]
    path = plot_landing_scatter(goals, [[[-0.45, 0.05], None], [[-1.2, 0.6], [-0.8, 0.25]]], tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="landings"):
        plot_landing_scatter(goals, [[[-0.45, 0.05]]], tmp_path / "t.png")
    with pytest.raises(ValueError, match="goals"):
        plot_landing_scatter([0.1, 0.2], [], tmp_path / "u.png")
