"""Sharding rollouts and evaluations across processes or hosts with `torch.distributed` (gloo, CPU).

Design notes: docs/learning.md, section `robot_rt.learning.distributed`.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist


def init_from_env(backend: str = "gloo", timeout_s: float = 600.0) -> bool:
    """Join the process group described by the environment; returns True when running distributed.

    Reads WORLD_SIZE/RANK (set by torchrun, or by hand with MASTER_ADDR/MASTER_PORT). With WORLD_SIZE unset or
    1 nothing happens and every other function behaves as a single process.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    size_text = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(size_text)
    except ValueError as err:
        raise ValueError(f"WORLD_SIZE: expected a positive int, got {size_text!r}") from err
    if size < 1:
        raise ValueError(f"WORLD_SIZE: expected a positive int, got {size}")
    if size == 1:
        return False
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ValueError(f"{key}: expected in the environment when WORLD_SIZE={size} (launch with torchrun)")
    import datetime

    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    return rank() == 0


def shard_indices(n: int, rank_: int | None = None, world_size_: int | None = None) -> list[int]:
    """Indices of [0, n) for this rank, striped (i % W == rank) so shards differ in size by at most one."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n!r}")
    r = rank() if rank_ is None else int(rank_)
    w = world_size() if world_size_ is None else int(world_size_)
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"rank_/world_size_: expected 0 <= rank < world_size, got {r}, {w}")
    return list(range(r, n, w))


def gather(obj: Any) -> list:
    """Every rank's picklable `obj`, in rank order, returned on every rank ([obj] without a process group)."""
    if not _active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_by_index(n: int, items: list) -> list:
    """Inverse of `shard_indices`: `items[k]` is this rank's result for index shard_indices(n)[k]; returns the
    n results of all ranks in index order, on every rank."""
    mine = shard_indices(n)
    if len(items) != len(mine):
        raise ValueError(f"items: expected {len(mine)} results (this rank's shard of {n}), got {len(items)}")
    out: list = [None] * n
    for r, part in enumerate(gather(list(items))):
        for index, item in zip(shard_indices(n, r, world_size()), part):
            out[index] = item
    return out


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s picklable `obj` on every rank (`obj` itself without a process group)."""
    if not _active():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if _active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group. Every rank first waits for the others at a barrier: a rank that tore its group
    down while another was still in a collective made gloo abort the process at exit ("terminate called without
    an active exception"; 2 of 4 full test runs, and 1 in 4 runs of the two distributed tests back to back)."""
    if not _active():
        return
    size, me = dist.get_world_size(), dist.get_rank()
    if size > 1:
        dist.barrier()
    # Rank 0 hosts the rendezvous store (env://). When it exited while another rank was still tearing its group
    # down, that rank aborted at exit too (1 in ~4 CI runs even with the barrier). So every other rank reports to
    # the store once its group is gone, and rank 0 leaves only after all have (the store object, kept here, keeps
    # its server alive meanwhile).
    get_store = getattr(dist.distributed_c10d, "_get_default_store", None)
    store = get_store() if (size > 1 and get_store is not None) else None
    dist.destroy_process_group()
    if store is None:
        return
    import time

    key = "robot_rt/left_group"
    if me != 0:
        store.add(key, 1)
        return
    deadline = time.monotonic() + 60.0
    while store.add(key, 0) < size - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
