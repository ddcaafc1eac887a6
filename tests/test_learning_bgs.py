"""BGS over the neural history policy: batched evaluation against per-candidate references, common random numbers,
exact resume, CLI."""

import json

import numpy as np
import pytest
import torch

from robot_rt.learning.bgs import BGSConfig, BGSTrainer, ParameterVector
from robot_rt.learning.neural_policy import GaussianActor, PolicyConfig

TINY = dict(
    generations=3,
    directions=3,
    top_k=2,
    slots=3,
    horizon=40,
    channels=(4,),
    hidden=(8,),
    history=4,
    max_episode_steps=60,
    torch_threads=1,
    seed=1,
    checkpoint_every=1,
)


@pytest.mark.parametrize("encoder", ["frame", "mlp", "conv"])
def test_batched_forward_matches_each_network(encoder):
    torch.manual_seed(0)
    actor = GaussianActor(PolicyConfig(obs_dim=7, action_dim=3, history=5, encoder=encoder, channels=(4,), hidden=(6,)))
    vec = ParameterVector(actor)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, vec.dim))
    x = torch.randn(4, 5, 5, 7)
    mask = torch.rand(4, 5, 5) > 0.3
    got = vec.batched_forward(torch.as_tensor(vectors, dtype=torch.float32), x, mask)
    for c in range(4):
        vec.set(vectors[c])
        np.testing.assert_allclose(vec.get(), vectors[c].astype(np.float32), rtol=0, atol=0)
        with torch.no_grad():
            np.testing.assert_allclose(got[c].numpy(), actor(x[c], mask[c]).numpy(), rtol=1e-5, atol=1e-6)


def test_identical_candidates_get_identical_fitness():
    trainer = BGSTrainer(BGSConfig(**TINY), None, progress=False)
    mean = trainer.es.mean
    other = mean + 0.05 * np.random.default_rng(0).normal(size=mean.shape)
    vectors = np.stack([mean, other, mean, other, mean, other, mean])  # 2 D + 1 = 7 candidates
    fit = trainer.evaluate(vectors, seed=123)["fitness"]
    assert fit.shape == (7, 3)
    # common random numbers: a candidate's slots see the same serves whatever the other candidates do
    for c in (2, 4, 6):
        np.testing.assert_array_equal(fit[c], fit[0])
    np.testing.assert_array_equal(fit[3], fit[1])
    assert not np.array_equal(fit[0], fit[1])


def test_resume_is_exact_and_the_run_directory_is_complete(tmp_path):
    cfg = BGSConfig(**TINY)
    straight = BGSTrainer(cfg, tmp_path / "a", progress=False)
    straight.train()
    first = BGSTrainer(cfg, tmp_path / "b", progress=False)
    first.train(generations=1)
    resumed = BGSTrainer(cfg, tmp_path / "b", resume=True, progress=False)
    assert resumed.es.generation == 1
    resumed.train()
    np.testing.assert_array_equal(straight.es.mean, resumed.es.mean)
    assert straight.curve == resumed.curve
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in log] == [1, 2, 3]
    from robot_rt.learning.neural_policy import load_policy

    policy = load_policy(tmp_path / "b" / "policy.pt")
    action = policy(np.zeros(policy.obs_dim, np.float32))
    assert action.shape == (8,) and np.all(np.isfinite(action))


def test_config_validation():
    with pytest.raises(ValueError, match="top-k"):
        BGSConfig(directions=2, top_k=3)
    with pytest.raises(ValueError, match="fitness"):
        BGSConfig(fitness="speed")
    with pytest.raises(ValueError, match="sigma"):
        BGSConfig(sigma=0.0)


def test_cli_smoke(tmp_path):
    from robot_rt.cli import main

    out = tmp_path / "run"
    assert main(["train", "bgs", "--smoke", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "bgs" and len(results["curve"]) == 2
    assert (out / "policy.pt").exists() and (out / "plots" / "learning_curve.png").exists()


def test_continuation_fitness_of_a_zero_residual_is_the_scripted_policys_answer_rate():
    """A residual BGS candidate whose network outputs 0 plays exactly the scripted policy; its 'continuation'
    fitness (the human's summed return probability over balls faced) equals the rate measured by stepping the same
    env with BatchedScriptedPolicy directly."""
    from robot_rt.envs.scripted import BatchedScriptedPolicy
    from robot_rt.learning.ppo import make_env

    cfg = BGSConfig(
        **dict(TINY, horizon=260, max_episode_steps=400, slots=4), residual_scale=0.3, fitness="continuation"
    )
    trainer = BGSTrainer(cfg, None, progress=False)
    zero = np.zeros((2 * cfg.directions + 1, trainer.vec.dim))
    fit = trainer.evaluate(zero, seed=77)["fitness"]
    assert np.all(fit == fit[0])  # every candidate is the same policy
    assert 0.0 < fit[0].mean() < 0.95  # some returns reach the human, who answers at most 95 %

    env = make_env(cfg, 4)  # the same slots, stepped by the scripted policy alone
    base = env.unwrapped
    scripted = BatchedScriptedPolicy(4)
    obs, _ = base.reset(seed=[77 + j for j in range(4)])
    scripted.reset()
    answered, faced = np.zeros(4), np.zeros(4)
    done_before = np.zeros(4, dtype=bool)
    for _ in range(cfg.horizon):
        if done_before.any():
            scripted.reset(done_before)
        obs, _r, term, trunc, info = base.step(scripted(obs))
        live = ~done_before
        p = base.world.answer_probability
        answered += np.where(np.isfinite(p) & live, p, 0.0)
        faced += (np.isfinite(p) & live) | (term & live & np.isin(info["outcome"], ["missed", "out", "limit"]))
        done_before = term | trunc
    # the residual path rounds the scripted action through float32 once more: agreement to float32 precision
    np.testing.assert_allclose(fit[0], answered / np.maximum(faced, 1.0), rtol=1e-5)


def test_residual_bgs_exports_a_policy_that_keeps_its_wrappers(tmp_path):
    cfg = BGSConfig(
        **dict(TINY, generations=1), residual_scale=0.25, ball_state=True, fitness="continuation", scripted="rally"
    )
    trainer = BGSTrainer(cfg, tmp_path / "run", progress=False)
    trainer.train()
    from robot_rt.learning.neural_policy import load_policy

    policy = load_policy(tmp_path / "run" / "policy.pt")
    assert policy.residual_scale == 0.25 and policy.ball_state and policy.scripted is not None
    from robot_rt.envs.scripted import ScriptedParams

    # the scripted base the network was trained on (the 'rally' preset) is the one the exported policy runs
    np.testing.assert_array_equal(policy.scripted.params[0], ScriptedParams.preset("rally").to_vector())
    env = trainer.env
    while not hasattr(env, "residual_scale"):  # the ResidualScriptedVector inside the ball-state wrapper
        env = env.env
    np.testing.assert_array_equal(env.policy.params[0], ScriptedParams.preset("rally").to_vector())
    assert policy(np.zeros(policy.obs_dim, np.float32)).shape == (8,)
    with pytest.raises(ValueError, match="residual-scale"):
        BGSConfig(residual_scale=-1.0)
    with pytest.raises(ValueError, match="scripted"):
        BGSConfig(scripted="fast")
