"""Pooled loop figures of the shot policy (UKF tracker, loop shot model) with P(in)^k in its value, k = 3 (this
directory's loop_try.jsonl) against k = 1 (../loop_shot_model/loop_try.jsonl, the same seeds), bootstrap CIs.

python docs/results/2026-12-05/in_exponent/pooled.py
"""

import json
from pathlib import Path

import numpy as np

from robot_rt.learning.is2r import bootstrap_ci

here = Path(__file__).resolve().parent
for name, path, which in (
    ("k = 1 (stop 33)", here.parent / "loop_shot_model/loop_try.jsonl", "shot-loop-ukf"),
    ("k = 3", here / "loop_try.jsonl", "shot-loop-ukf"),
):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = sorted((r for r in rows if r["which"] == which and r["seed"] in (1, 2, 3, 4)), key=lambda r: r["seed"])
    lengths = np.concatenate([r["rally_lengths"] for r in rows])
    outcomes, stops = {}, {}
    for r in rows:
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
        for k, v in r["safety_events"].items():
            if k.endswith("_stop"):
                stops[k] = stops.get(k, 0) + v
    ci = bootstrap_ci(lengths)
    per_seed = " / ".join(f"{r['mean_rally_length']:.2f}" for r in rows)
    rate = np.mean([r["return_rate"] for r in rows])
    print(
        f"{name}: seeds {[r['seed'] for r in rows]}: {per_seed}; pooled {lengths.mean():.2f} [{ci[0]:.2f}, "
        f"{ci[1]:.2f}] over {len(lengths)} rallies; mean return rate {rate:.3f}; {outcomes}; stops {stops}"
    )
