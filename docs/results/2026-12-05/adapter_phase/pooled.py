"""Pooled mean rally over seeds 1-4 (60 rallies each) with 95 % bootstrap intervals: the shot policy through the loop
with the adapter's grid rounded to the nearest step (this directory) against stop 33's runs before the change
(../loop_shot_model/loop_try.jsonl, rows 'shot-loop-ukf'), the interval of the difference, and seeds 1-8 pooled.

    python docs/results/2026-12-05/adapter_phase/pooled.py
"""

import json
from pathlib import Path

import numpy as np

here = Path(__file__).resolve().parent


def lengths(path: Path, which: str, seeds=(1, 2, 3, 4)) -> np.ndarray:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["which"] == which and r["seed"] in seeds and r.get("in_exponent", 1.0) == 1.0]
    assert sorted(r["seed"] for r in rows) == sorted(seeds), [r["seed"] for r in rows]
    return np.concatenate([r["rally_lengths"] for r in rows]).astype(float)


def ci(x: np.ndarray, rng, n=20000) -> tuple[float, float]:
    means = rng.choice(x, size=(n, x.size)).mean(axis=1)
    return tuple(float(v) for v in np.quantile(means, [0.025, 0.975]).round(2))


rng = np.random.default_rng(0)
after = lengths(here / "loop_try.jsonl", "shot-loop-ukf")
before = lengths(here.parent / "loop_shot_model" / "loop_try.jsonl", "shot-loop-ukf")
diff = rng.choice(after, size=(20000, after.size)).mean(1) - rng.choice(before, size=(20000, before.size)).mean(1)
print(f"nearest-step grid, seeds 1-4: {after.mean():.2f} {ci(after, rng)} over {after.size} rallies")
print(f"floor grid (stop 33): {before.mean():.2f} {ci(before, rng)} over {before.size} rallies")
print(
    f"difference: {after.mean() - before.mean():+.2f} {tuple(float(v) for v in np.quantile(diff, [0.025, 0.975]).round(2))}"
)
every = lengths(here / "loop_try.jsonl", "shot-loop-ukf", seeds=tuple(range(1, 9)))
print(f"nearest-step grid, seeds 1-8: {every.mean():.2f} {ci(every, rng)} over {every.size} rallies")


def network_lengths(path: Path, seeds=(1, 2, 3, 4)) -> np.ndarray:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["seed"] in seeds]
    assert sorted(r["seed"] for r in rows) == sorted(seeds), [r["seed"] for r in rows]
    return np.concatenate([r["rally_lengths"] for r in rows]).astype(float)


# the between-rallies network of stop 34 (training seed 0, ../between_rallies/policy.pt), seeds 1-4 x 60
net_after = network_lengths(here / "network_loop_try.jsonl")
net_before = network_lengths(here.parent / "between_rallies" / "loop_try.jsonl")
net_diff = rng.choice(net_after, size=(20000, net_after.size)).mean(1) - rng.choice(
    net_before, size=(20000, net_before.size)
).mean(1)
print(f"network, nearest-step grid: {net_after.mean():.2f} {ci(net_after, rng)} over {net_after.size} rallies")
print(f"network, floor grid (stop 34): {net_before.mean():.2f} {ci(net_before, rng)} over {net_before.size} rallies")
print(
    f"network difference: {net_after.mean() - net_before.mean():+.2f} "
    f"{tuple(float(v) for v in np.quantile(net_diff, [0.025, 0.975]).round(2))}"
)
net_every = network_lengths(here / "network_loop_try.jsonl", seeds=tuple(range(1, 9)))
print(
    f"network, nearest-step grid, seeds 1-8: {net_every.mean():.2f} {ci(net_every, rng)} over {net_every.size} rallies"
)

# the second between-rallies network of stop 34 (training seed 1), seeds 1-4 x 60
seed1_path = here / "network_seed1_loop_try.jsonl"
if seed1_path.is_file():
    s1_after = network_lengths(seed1_path)
    s1_before = network_lengths(here.parent / "between_rallies" / "train_seed1" / "loop_try.jsonl")
    print(f"network seed 1, nearest-step grid: {s1_after.mean():.2f} {ci(s1_after, rng)} over {s1_after.size} rallies")
    print(f"network seed 1, floor grid (stop 34): {s1_before.mean():.2f} {ci(s1_before, rng)}")
    both = np.concatenate([net_every, s1_after])
    print(f"both networks, nearest-step grid: {both.mean():.2f} {ci(both, rng)} over {both.size} rallies")
