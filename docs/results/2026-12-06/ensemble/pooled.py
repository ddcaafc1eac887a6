"""Pooled mean rallies through the loop with 95 % bootstrap intervals (robot_rt.learning.is2r.bootstrap_ci): the
ensemble of the three between-rallies networks (this directory) against each of them alone, all with the adapter's
nearest-step clock, on the same seeds, with the interval of each difference.

    python docs/results/2026-12-06/ensemble/pooled.py
"""

import json
from pathlib import Path

import numpy as np

from robot_rt.learning.is2r import bootstrap_ci, bootstrap_difference_ci

here = Path(__file__).resolve().parent
results = here.parents[1]
N_BOOT = 20000
SEEDS_1_4, SEEDS_1_8 = (1, 2, 3, 4), tuple(range(1, 9))


def lengths(paths, seeds) -> np.ndarray:
    """Rally lengths of the rows of these loop_try.jsonl files with these seeds (one row per seed)."""
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["seed"] in seeds]
    assert sorted(r["seed"] for r in rows) == sorted(seeds), [r["seed"] for r in rows]
    return np.concatenate([r["rally_lengths"] for r in rows]).astype(float)


def interval(x: np.ndarray) -> str:
    lo, hi = bootstrap_ci(x, n_boot=N_BOOT)
    return f"{x.mean():.2f} [{lo:.2f}, {hi:.2f}] over {x.size} rallies"


def difference(a: np.ndarray, b: np.ndarray) -> str:
    """a - b, with a 95 % bootstrap interval (independent resamples: the rallies of two runs are not pairs)."""
    lo, hi = bootstrap_difference_ci(a, b, n_boot=N_BOOT)
    return f"{a.mean() - b.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]"


# seeds 1-4 ran through prototype_loop_try.py (the same mean of the members' actions, in NumPy), seeds 5-8 through
# distill_loop/loop_try.py on policy.pt (tools/ensemble_distilled.py)
ensemble_files = [here / "prototype_loop_try.jsonl", here / "loop_try.jsonl"]
adapter = results / "2026-12-05" / "adapter_phase"
members = {
    "network, training seed 0": adapter / "network_loop_try.jsonl",
    "network, training seed 1": adapter / "network_seed1_loop_try.jsonl",
    "network, training seed 2": here / "member_seed2_loop_try.jsonl",
}
ensemble_1_4 = lengths(ensemble_files, SEEDS_1_4)
print(f"ensemble of the three, seeds 1-4: {interval(ensemble_1_4)}")
print(f"ensemble of the three, seeds 1-8: {interval(lengths(ensemble_files, SEEDS_1_8))}")
alone = []
for name, path in members.items():
    x = lengths([path], SEEDS_1_4)
    alone.append(x)
    print(f"{name} alone, seeds 1-4: {interval(x)}; ensemble minus it {difference(ensemble_1_4, x)}")
pooled = np.concatenate(alone)
print(f"the three alone, pooled, seeds 1-4: {interval(pooled)}; ensemble minus them {difference(ensemble_1_4, pooled)}")
# the one member also measured on seeds 5-8 (stop 36)
ensemble_1_8 = lengths(ensemble_files, SEEDS_1_8)
seed0_1_8 = lengths([members["network, training seed 0"]], SEEDS_1_8)
print(
    f"network, training seed 0 alone, seeds 1-8: {interval(seed0_1_8)}; "
    f"ensemble minus it {difference(ensemble_1_8, seed0_1_8)}"
)
