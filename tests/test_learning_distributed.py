"""2 processes (torch.distributed, gloo) give the same per-episode results as 1 process."""

import os
import pickle

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers.ports import free_port

from robot_rt.learning import distributed as dist

N_EPISODES = 6
NUM_ENVS = 3


def _episodes(agent_kind: str):
    from robot_rt.envs.features import FEATURE_DIM
    from robot_rt.learning import goalseye
    from robot_rt.learning.gcbc import GCBCPolicy

    config = dict(goalseye.DEFAULTS, max_episode_steps=150)
    env = goalseye.make_env(NUM_ENVS, config)
    seeds, targets = goalseye.episode_plan(11, goalseye.STREAM_EVAL, 0, N_EPISODES)
    if agent_kind == "scripted":
        agent = goalseye.ScriptedAgent(NUM_ENVS, 0.05, 1.0)
    else:
        torch.manual_seed(0)
        agent = goalseye.GCBCAgent(GCBCPolicy(FEATURE_DIM, hidden=(32,)), env.single_action_space.high)
    return goalseye.run_episodes_sharded(env, agent, seeds, targets, record=True)


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    torch.set_num_threads(1)
    assert dist.init_from_env()
    result = {
        "rank": dist.rank(),
        "world_size": dist.world_size(),
        "shard": dist.shard_indices(N_EPISODES),
        "gathered": dist.gather(rank * 10),
        "broadcast": dist.broadcast("from rank 0" if rank == 0 else None),
        "scripted": _episodes("scripted"),
        "gcbc": _episodes("gcbc"),
    }
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as handle:
        pickle.dump(result, handle)
    dist.shutdown()


def test_two_processes_match_one(tmp_path):
    torch.set_num_threads(1)
    single = {"scripted": _episodes("scripted"), "gcbc": _episodes("gcbc")}
    mp.start_processes(_worker, args=(2, free_port("tcp"), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    assert [r["shard"] for r in ranks] == [[0, 2, 4], [1, 3, 5]]
    assert all(r["gathered"] == [0, 10] and r["broadcast"] == "from rank 0" for r in ranks)
    for kind in ("scripted", "gcbc"):
        for r in ranks:
            got = r[kind]
            assert len(got) == N_EPISODES
            for a, b in zip(single[kind], got):
                assert (a.seed, a.length, a.outcome, a.has_landed) == (b.seed, b.length, b.outcome, b.has_landed)
                np.testing.assert_array_equal(a.landing_point, b.landing_point)
                if kind == "scripted":
                    np.testing.assert_array_equal(a.actions, b.actions)
                    np.testing.assert_array_equal(a.features, b.features)
                else:
                    # An episode sits in another env slot (matrix row) when sharded, and a float32 GEMM may round a
                    # row differently depending on its position in the block (seen on AMD EPYC: 6e-8), so the
                    # learned policy's actions, and the joint states they lead to, agree to float32 rounding only.
                    np.testing.assert_allclose(a.actions, b.actions, rtol=1e-5, atol=1e-6)
                    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)
    # the scripted episodes are not trivial: the balls are hit and differ from one another
    assert len({e.length for e in single["scripted"]}) > 1


def test_single_process_api_and_errors(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init_from_env() is False
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    assert dist.shard_indices(5) == [0, 1, 2, 3, 4]
    assert dist.shard_indices(5, 1, 3) == [1, 4]
    assert dist.gather("x") == ["x"] and dist.broadcast(3) == 3
    assert dist.gather_by_index(3, ["a", "b", "c"]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="items"):
        dist.gather_by_index(3, ["a"])
    with pytest.raises(ValueError, match="n:"):
        dist.shard_indices(-1)
    with pytest.raises(ValueError, match="rank"):
        dist.shard_indices(4, 2, 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(ValueError, match="MASTER_PORT"):
        dist.init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        dist.init_from_env()
