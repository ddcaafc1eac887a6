"""examples/evaluate_rally.py: the rally figures it reports are consistent with the episodes it played."""

import importlib.util
import json
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load():
    spec = importlib.util.spec_from_file_location("evaluate_rally", EXAMPLES / "evaluate_rally.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rally_shape_by_hand():
    module = _load()
    eps = [
        {"rally_length": 3, "outcome": "returned"},  # 3 landed, the human answered 2 and missed the third
        {"rally_length": 2, "outcome": "out"},  # 2 landed and answered, then the robot's return was out
        {"rally_length": 0, "outcome": "missed"},
        {"rally_length": 1, "outcome": "none"},  # cut by the cap: the answer to its one return is unknown
    ]
    shape = module._rally_shape(eps)
    assert shape["rally_histogram"] == [1, 1, 1, 1]
    assert shape["human_answered_share"] == (2 + 2) / (3 + 2)
    assert shape["cut_by_cap"] == 1 and shape["rally_max"] == 3 and shape["rally_median"] == 1.5
    assert shape["robot_return_rate"] == 6 / (6 + 2)  # 6 landed; 'out' and 'missed' each cost one ball
    assert np.isclose(shape["rally_bound_perfect_robot"], 1 / (1 - 4 / 5))


def test_scripted_evaluation_is_consistent_and_deterministic(tmp_path):
    module = _load()
    argv = ["--policy", "scripted", "--episodes", "6", "--seeds", "0,1", "--max-episode-steps", "300"]
    first = module.main(argv + ["--out", str(tmp_path / "a.json")])
    second = module.main(argv + ["--out", str(tmp_path / "b.json")])
    assert np.isclose(json.loads((tmp_path / "a.json").read_text())["ceiling_rally_mean"], 20.0)
    (res,) = first["policies"]
    pooled = res["pooled"]
    assert pooled["episodes"] == 12 and sum(pooled["rally_histogram"]) == 12
    hist = np.array(pooled["rally_histogram"])
    assert np.isclose(pooled["rally_mean"], (hist * np.arange(len(hist))).sum() / 12)
    assert np.isclose(pooled["rally_mean"], np.mean(pooled["seed_means"]))  # equal blocks
    lo, hi = pooled["rally_mean_ci95"]
    assert lo <= pooled["rally_mean"] <= hi
    assert sum(pooled["outcomes"].values()) == 12
    assert second["policies"][0]["pooled"]["seed_means"] == pooled["seed_means"]  # fixed serves


def test_rally_report_from_an_evaluation_and_a_bgs_run(tmp_path):
    """examples/rally_report.py: the summary repeats the evaluation's figures, the curve is the run's log, both
    figures are PNG files."""
    evaluate = _load()
    evaluate.main(
        ["--policy", "scripted-rally", "--episodes", "4", "--seeds", "0", "--max-episode-steps", "300"]
        + ["--out", str(tmp_path / "eval.json")]
    )
    from robot_rt.learning.bgs import BGSConfig, BGSTrainer

    cfg = BGSConfig(
        generations=2,
        directions=2,
        top_k=1,
        slots=3,
        horizon=60,
        channels=(4,),
        hidden=(8,),
        history=4,
        max_episode_steps=120,
        residual_scale=0.2,
        scripted="rally",
        fitness="continuation",
        checkpoint_every=1,
    )
    BGSTrainer(cfg, tmp_path / "run", progress=False).train()
    spec = importlib.util.spec_from_file_location("rally_report", EXAMPLES / "rally_report.py")
    report_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report_module)
    out = tmp_path / "report"
    report = report_module.main(
        ["--eval", str(tmp_path / "eval.json"), "--run", str(tmp_path / "run"), "--out", str(out)]
    )
    evaluation = json.loads((tmp_path / "eval.json").read_text())["policies"][0]["pooled"]
    assert report["summary"][0]["policy"] == "scripted-rally"
    assert report["summary"][0]["rally_mean"] == evaluation["rally_mean"]
    curve = report["training_runs"][0]["curve"]
    assert [c["global_step"] for c in curve] == [5 * 3 * 60, 2 * 5 * 3 * 60]  # (2 D + 1) candidates x slots x horizon
    assert all(lo <= c["fitness_centre"] <= hi for c in curve for lo, hi in [c["fitness_centre_ci95"]])
    for name in ("learning_curves.png", "rally_histogram.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isclose(json.loads((out / "rally_report.json").read_text())["ceiling_rally_mean"], 20.0)


def test_render_rally_replays_the_longest_rally_of_the_search_into_a_gif(tmp_path, capsys):
    import sys

    from PIL import Image

    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location("render_rally", EXAMPLES / "render_rally.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    seed, rally = module.longest_rally("scripted-rally", list(range(6)), 1500)
    out = tmp_path / "rally.gif"
    # main() raises if the rendered replay's rally differs from the search's: the replay is the same episode
    assert (
        module.main(
            ["--search", "6", "--stride", "25", "--max-frames", "6", "--max-episode-steps", "1500", "--out", str(out)]
        )
        == 0
    )
    assert f"serve {seed}: rally {rally}" in capsys.readouterr().out
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.size == (960, 300)
        assert 2 <= gif.n_frames <= 7  # up to --max-frames, plus the episode's last frame


def test_evaluation_plays_the_shot_policy_and_a_distilled_file_and_reports_no_landing_as_na(tmp_path, capsys):
    """The spec names of the newer policies: 'scripted-rally-shot', and a distilled policy file (dispatched on its
    format). An untrained distilled policy lands nothing: its shares are undefined, printed 'n/a', not a crash."""
    import torch

    from robot_rt.envs.features import feature_dim
    from robot_rt.learning.distill import save_distilled
    from robot_rt.learning.gcbc import GCBCPolicy

    module = _load()
    torch.manual_seed(0)
    path = save_distilled(tmp_path / "policy.pt", GCBCPolicy(feature_dim(spin=True), goal_dim=0, hidden=(8,)))
    argv = ["--policy", "scripted-rally-shot", "--policy", str(path), "--episodes", "4", "--seeds", "0"]
    result = module.main(argv + ["--max-episode-steps", "300", "--out", str(tmp_path / "r.json")])
    shot, distilled = result["policies"]
    assert shot["policy"] == "scripted-rally-shot" and shot["pooled"]["episodes"] == 4
    assert distilled["pooled"]["episodes"] == 4
    assert distilled["pooled"]["human_answered_share"] is None  # nothing landed
    assert "human answered n/a" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["policies"][1]["policy"] == str(path)
    # an ensemble's file (its own format tag) is dispatched to the same reader
    from robot_rt.learning.distill import save_ensemble

    torch.manual_seed(1)
    other = save_distilled(tmp_path / "other.pt", GCBCPolicy(feature_dim(spin=True), goal_dim=0, hidden=(8,)))
    ensemble = save_ensemble(tmp_path / "ensemble.pt", [path, other])
    argv = ["--policy", str(ensemble), "--episodes", "2", "--seeds", "0", "--max-episode-steps", "100"]
    (played,) = module.main(argv + ["--out", str(tmp_path / "e.json")])["policies"]
    assert played["policy"] == str(ensemble) and played["pooled"]["episodes"] == 2


def test_a_shot_model_file_is_played_with_the_parameters_it_was_fitted_with(tmp_path):
    """--policy FILE.json (a tools/fit_shot_model.py file): the scripted policy with the model's fitted parameters
    and tracker, aiming by it. The shipped UKF model's file plays exactly what 'scripted-rally-shot-ukf' plays; a
    model fitted with other parameters gets those parameters."""
    import dataclasses

    from robot_rt.envs.scripted import ScriptedParams
    from robot_rt.envs.shot_model import SHIPPED_RALLY_SHOT_MODEL_UKF, ShotModel, shot_model_policy

    module = _load()
    argv = ["--episodes", "3", "--seeds", "0", "--max-episode-steps", "500"]
    by_name = module.main(["--policy", "scripted-rally-shot-ukf"] + argv + ["--out", str(tmp_path / "a.json")])
    by_file = module.main(["--policy", str(SHIPPED_RALLY_SHOT_MODEL_UKF)] + argv + ["--out", str(tmp_path / "b.json")])
    (a,), (b,) = by_name["policies"], by_file["policies"]
    assert b["policy"] == str(SHIPPED_RALLY_SHOT_MODEL_UKF)

    def figures(result):  # all but the wall times
        return [{k: v for k, v in d.items() if k != "wall_s"} for d in [result["pooled"], *result["per_seed"]]]

    assert figures(a) == figures(b)
    assert a["pooled"]["rally_mean"] > 1.0

    model = ShotModel.load(SHIPPED_RALLY_SHOT_MODEL_UKF)
    other = dataclasses.replace(ScriptedParams.preset("rally"), floor_margin_m=0.05)
    model.fitted_params = other.to_vector()
    path = tmp_path / "other.json"
    model.save(path)
    policy = shot_model_policy(2, path)
    assert ScriptedParams.from_vector(policy.params[0]) == other
    assert policy.shot_model is not None and policy.shot_model.tracker == "ukf"
    assert type(policy.tracker).__name__ == "BatchedUKFTracker"
