"""Pooled mean rallies through the loop with 95 % bootstrap intervals (robot_rt.learning.is2r.bootstrap_ci, as the
other pooled figures of these results): the shot policy and the two between-rallies networks with the adapter's grid
rounded to the nearest step (this directory) against their runs before the change on the same seeds (stop 33's
../loop_shot_model/, stop 34's ../between_rallies/), with the interval of each difference.

    python docs/results/2026-12-05/adapter_phase/pooled.py
"""

import json
from pathlib import Path

import numpy as np

from robot_rt.learning.is2r import bootstrap_ci, bootstrap_difference_ci

here = Path(__file__).resolve().parent
N_BOOT = 20000
SEEDS_1_4, SEEDS_1_8 = (1, 2, 3, 4), tuple(range(1, 9))


def lengths(path: Path, seeds, which: str | None = None) -> np.ndarray:
    """Rally lengths of the rows of a loop_try.jsonl with these seeds (and this policy name, when the file has
    several; rows of another P(in) exponent are not this policy's)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["seed"] in seeds and (which is None or r["which"] == which)]
    rows = [r for r in rows if r.get("in_exponent", 1.0) == 1.0]
    assert sorted(r["seed"] for r in rows) == sorted(seeds), [r["seed"] for r in rows]
    return np.concatenate([r["rally_lengths"] for r in rows]).astype(float)


def interval(x: np.ndarray) -> str:
    lo, hi = bootstrap_ci(x, n_boot=N_BOOT)
    return f"{x.mean():.2f} [{lo:.2f}, {hi:.2f}] over {x.size} rallies"


def difference(after: np.ndarray, before: np.ndarray) -> str:
    """after - before, with a 95 % bootstrap interval (independent resamples: the rallies of two runs are not pairs)."""
    lo, hi = bootstrap_difference_ci(after, before, n_boot=N_BOOT)
    return f"{after.mean() - before.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]"


shot = here / "loop_try.jsonl"
shot_before = lengths(here.parent / "loop_shot_model" / "loop_try.jsonl", SEEDS_1_4, "shot-loop-ukf")
shot_after = lengths(shot, SEEDS_1_4, "shot-loop-ukf")
print(f"shot policy, floor grid (stop 33), seeds 1-4: {interval(shot_before)}")
print(
    f"shot policy, nearest-step grid, seeds 1-4: {interval(shot_after)}; difference {difference(shot_after, shot_before)}"
)
print(f"shot policy, nearest-step grid, seeds 1-8: {interval(lengths(shot, SEEDS_1_8, 'shot-loop-ukf'))}")

networks = []
for name, after_path, before_path, seeds in (
    ("network, training seed 0", "network_loop_try.jsonl", "loop_try.jsonl", SEEDS_1_8),
    ("network, training seed 1", "network_seed1_loop_try.jsonl", "train_seed1/loop_try.jsonl", SEEDS_1_4),
):
    before = lengths(here.parent / "between_rallies" / before_path, SEEDS_1_4)
    after = lengths(here / after_path, SEEDS_1_4)
    print(f"{name}, floor grid (stop 34), seeds 1-4: {interval(before)}")
    print(f"{name}, nearest-step grid, seeds 1-4: {interval(after)}; difference {difference(after, before)}")
    if seeds != SEEDS_1_4:
        print(f"{name}, nearest-step grid, seeds 1-{max(seeds)}: {interval(lengths(here / after_path, seeds))}")
    networks.append(lengths(here / after_path, seeds))
print(f"both networks, nearest-step grid: {interval(np.concatenate(networks))}")
