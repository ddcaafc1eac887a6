"""The neural trainers under torch.distributed (gloo, 2 processes) take the steps one process takes."""

import os
import pickle

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers.ports import free_port

from robot_rt.learning import distributed as dist

PPO_TINY = dict(
    total_steps=16 * 8 * 2,
    num_envs=16,
    rollout_steps=8,
    minibatch_size=32,
    epochs=2,
    update_fraction=0.5,
    hidden=(16,),
    max_episode_steps=60,
    torch_threads=1,
    seed=5,
)
BGS_TINY = dict(
    generations=2,
    directions=3,
    top_k=2,
    slots=4,
    horizon=30,
    channels=(4,),
    hidden=(8,),
    history=4,
    max_episode_steps=60,
    torch_threads=1,
    seed=2,
)


def _train():
    from robot_rt.learning.bgs import BGSConfig, BGSTrainer
    from robot_rt.learning.ppo import PPOConfig, PPOTrainer

    ppo = PPOTrainer(PPOConfig(**PPO_TINY), None, progress=False)
    ppo.train()
    bgs = BGSTrainer(BGSConfig(**BGS_TINY), None, progress=False)
    bgs.train()
    return {
        "ppo_params": torch.cat([p.detach().reshape(-1) for p in ppo.params]).numpy(),
        "ppo_curve": ppo.curve,
        "ppo_obs_mean": ppo.obs_norm.mean.numpy(),
        "bgs_mean": bgs.es.mean,
        "bgs_curve": bgs.curve,
    }


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    torch.set_num_threads(1)
    assert dist.init_from_env()
    result = _train()
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as handle:
        pickle.dump(result, handle)
    dist.shutdown()


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path):
    torch.set_num_threads(1)
    single = _train()
    mp.start_processes(_worker, args=(2, free_port("tcp"), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    # every rank holds the same weights (summed gradients, the same Adam steps) ...
    np.testing.assert_array_equal(ranks[0]["ppo_params"], ranks[1]["ppo_params"])
    np.testing.assert_array_equal(ranks[0]["bgs_mean"], ranks[1]["bgs_mean"])
    # ... and they are one process's, up to float summation order (gradient partial sums, moment merging)
    np.testing.assert_allclose(ranks[0]["ppo_params"], single["ppo_params"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["ppo_obs_mean"], single["ppo_obs_mean"], rtol=1e-6, atol=1e-6)
    for a, b in zip(ranks[0]["ppo_curve"], single["ppo_curve"]):
        assert a["episodes"] == b["episodes"]
        np.testing.assert_allclose(a["reward_per_step"], b["reward_per_step"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ranks[0]["bgs_mean"], single["bgs_mean"], rtol=1e-5, atol=1e-6)
    for a, b in zip(ranks[0]["bgs_curve"], single["bgs_curve"]):
        np.testing.assert_allclose(a["fitness_mean"], b["fitness_mean"], rtol=1e-5, atol=1e-6)
