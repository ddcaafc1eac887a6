"""Pooled loop figures of the between-rallies networks (loop_try.jsonl of each training seed) with bootstrap CIs.

python docs/results/2026-12-05/between_rallies/pooled.py
"""

import json
from pathlib import Path

import numpy as np

from robot_rt.learning.is2r import bootstrap_ci

here = Path(__file__).resolve().parent
everything = []
for name, path in (
    ("training seed 0", here / "loop_try.jsonl"),
    ("training seed 1", here / "train_seed1/loop_try.jsonl"),
    ("training seed 2, restart fix (stop 35)", here / "train_seed2_restart/loop_try.jsonl"),
):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lengths = np.concatenate([r["rally_lengths"] for r in rows])
    everything.append(lengths)
    outcomes = {}
    for r in rows:
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    per_seed = " / ".join(f"{r['mean_rally_length']:.2f}" for r in sorted(rows, key=lambda r: r["seed"]))
    ci = bootstrap_ci(lengths)
    print(
        f"{name}: loop seeds {sorted(r['seed'] for r in rows)}: {per_seed}; pooled {lengths.mean():.2f} "
        f"[{ci[0]:.2f}, {ci[1]:.2f}] over {len(lengths)} rallies; {outcomes}; stops {[r['stop_reasons'] for r in rows]}"
    )
both = np.concatenate(everything[:2])
ci = bootstrap_ci(both)
print(f"both networks of stop 34: {both.mean():.2f} [{ci[0]:.2f}, {ci[1]:.2f}] over {len(both)} rallies")
every = np.concatenate(everything)
ci = bootstrap_ci(every)
print(f"all three networks: {every.mean():.2f} [{ci[0]:.2f}, {ci[1]:.2f}] over {len(every)} rallies")
