"""Smoke runs of the stable-baselines3 examples (tiny budgets): they run end to end, rewards reach the learner and
the policy's parameters move. The 10-minute quality figures are in docs/learning.md, not asserted here."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(results: dict, budget: int) -> None:
    assert results["timesteps"] >= budget
    assert results["policy_parameter_change_l2"] > 0  # gradient steps were taken
    for stage in ("before", "after"):
        assert results[stage]["episodes"] == 4


def test_ppo_example_smoke(tmp_path):
    module = _load("sb3_ppo_table_tennis")
    budget = 8 * 16 * 8  # 128 steps per env: every env ends at least one (capped) episode
    results = module.main(
        ["--timesteps", str(budget), "--n-envs", "8", "--n-steps", "16", "--batch-size", "64", "--epochs", "1",
         "--max-episode-steps", "100", "--eval-episodes", "4", "--out", str(tmp_path)]
    )  # fmt: skip
    _check(results, budget)
    returns = [c["episode_return_mean"] for c in results["curve"] if c["episode_return_mean"] is not None]
    assert returns and np.all(np.isfinite(returns)) and any(r != 0 for r in returns)  # rewards reach the learner
    assert (tmp_path / "results.json").exists() and (tmp_path / "model.zip").exists()
    # before and after are paired on the same serves: the paired change is the difference of the per-serve figures
    before, after = (np.array(results[k]["rally_per_episode"]) for k in ("before", "after"))
    change = results["after_minus_before"]
    assert change["rally_mean"] == pytest.approx((after - before).mean())
    assert change["first_ball_return_rate"] == pytest.approx(((after > 0) * 1.0 - (before > 0)).mean())
    assert change["rally_mean_ci95"][0] <= change["rally_mean"] <= change["rally_mean_ci95"][1]


def test_ppo_example_from_scratch_on_a_narrow_serve_spread_is_also_evaluated_at_the_default(tmp_path):
    module = _load("sb3_ppo_table_tennis")
    budget = 8 * 16 * 8
    results = module.main(
        ["--timesteps", str(budget), "--n-envs", "8", "--n-steps", "16", "--batch-size", "64", "--epochs", "1",
         "--max-episode-steps", "100", "--eval-episodes", "4", "--residual-scale", "0", "--serve-spread", "0",
         "--out", str(tmp_path)]
    )  # fmt: skip
    _check(results, budget)
    assert results["before"]["serve_spread"] == results["after"]["serve_spread"] == 0.0
    for stage in ("before", "after"):
        assert results["at_default_spread"][stage]["serve_spread"] == 1.0
        assert results["at_default_spread"][stage]["episodes"] == 4
    with pytest.raises(SystemExit):
        module.main(["--serve-spread", "-1", "--out", str(tmp_path)])


@pytest.mark.parametrize("policy_hz", ["100", "25"])
def test_sac_her_example_smoke(tmp_path, policy_hz):
    module = _load("sb3_sac_her_goal")
    budget = 4 * 150  # episodes end (HER samples finished episodes only) before the learning starts at 4 x 100
    results = module.main(
        ["--timesteps", str(budget), "--n-envs", "4", "--batch-size", "32", "--learning-starts", "400",
         "--gradient-steps", "1", "--buffer-size", "2000", "--eval-episodes", "4", "--policy-hz", policy_hz,
         "--level", "joint", "--out", str(tmp_path)]
    )  # fmt: skip
    _check(results, budget)
    assert results["args"]["policy_hz"] == float(policy_hz)
    assert 0.0 <= results["after"]["landed_rate"] <= 1.0
    # the paired change is after minus before, pair by pair (the same 4 (serve, goal) pairs)
    for key in ("landed", "success_30cm", "success_20cm"):
        b, a = results["before"][f"{key}_per_episode"], results["after"][f"{key}_per_episode"]
        assert len(a) == len(b) == 4
        assert results["after_minus_before"][key] == pytest.approx((sum(a) - sum(b)) / 4)


def test_sac_her_example_at_the_aim_level_smoke(tmp_path):
    module = _load("sb3_sac_her_goal")
    budget = 4 * 6  # one ball per step and env: 6 vector steps, learning from the 3rd
    results = module.main(
        ["--timesteps", str(budget), "--n-envs", "4", "--batch-size", "8", "--learning-starts", "8",
         "--gradient-steps", "2", "--buffer-size", "200", "--eval-episodes", "4", "--out", str(tmp_path)]
    )  # fmt: skip
    _check(results, budget)
    assert results["args"]["level"] == "aim" and results["args"]["learning_rate"] == 1e-3  # the level's defaults
    for stage in ("zero_action", "before", "after"):
        assert results[stage]["episodes"] == 4
    for key in ("landed", "success_30cm", "success_20cm"):
        z, a = results["zero_action"][f"{key}_per_episode"], results["after"][f"{key}_per_episode"]
        assert results["after_minus_zero_action"][key] == pytest.approx((sum(a) - sum(z)) / 4)
    assert (tmp_path / "results.json").exists() and (tmp_path / "model.zip").exists()
    for joint_only in (["--residual-scale", "0"], ["--policy-hz", "50"], ["--no-ball-state"]):
        with pytest.raises(SystemExit):  # options of the joint level are refused at the aim level, not ignored
            module.main([*joint_only, "--out", str(tmp_path)])
    # the seeds' summary (tools/sb3_sac_her_report.py) reads the same per-pair figures back
    spec = importlib.util.spec_from_file_location("report", EXAMPLES.parent / "tools" / "sb3_sac_her_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    assert report.main([str(tmp_path), "--out", str(tmp_path / "summary")]) == 0
    summary = json.loads((tmp_path / "summary" / "summary.json").read_text())
    row = summary["runs"][tmp_path.name]
    assert row["after"]["success_30cm"]["rate"] == results["after"]["success_30cm"]
    assert row["after_minus_zero_action"]["landed"]["mean"] == pytest.approx(
        results["after_minus_zero_action"]["landed"]
    )
    assert (tmp_path / "summary" / "success_30cm.png").stat().st_size > 1000
