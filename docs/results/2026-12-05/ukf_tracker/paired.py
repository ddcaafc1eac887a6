"""Per-serve rallies of the shot policy with the UKF tracker on the rally serves (seeds 0-2 x 256), paired with the
shot policy's with the fit tracker (docs/results/2026-12-05/shot_model/paired.json, rally_shot_model: the same
serves).

    python docs/results/2026-12-05/ukf_tracker/paired.py > docs/results/2026-12-05/ukf_tracker/paired.json
"""

import json
from pathlib import Path

import numpy as np

from robot_rt.envs.shot_model import rally_shot_policy
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.learning.rollout import play_episodes

here = Path(__file__).resolve().parent
before = json.loads((here / "../shot_model/paired.json").read_text())["rally_shot_model"]
after = []
for s in (0, 1, 2):
    env = TableTennisVectorEnv(256, max_episode_steps=6000)
    try:
        policy = rally_shot_policy(256, tracker="ukf")
        after += [e["rally_length"] for e in play_episodes(env, policy, range(s * 10**6, s * 10**6 + 256))]
    finally:
        env.close()
a, b = np.array(after, dtype=float), np.array(before, dtype=float)
rng = np.random.default_rng(0)
idx = rng.integers(0, len(a), (10_000, len(a)))
boot = (a[idx] - b[idx]).mean(axis=1)
print(
    json.dumps(
        {
            "serves": "seeds 0-2 x 256 (serve s*10^6+i)",
            "rally_shot_fit_tracker": before,
            "rally_shot_ukf_tracker": after,
            "mean_fit_tracker": b.mean(),
            "mean_ukf_tracker": a.mean(),
            "paired_difference": (a - b).mean(),
            "paired_difference_ci95": np.quantile(boot, [0.025, 0.975]).tolist(),
            "better_worse_equal": [int((a > b).sum()), int((a < b).sum()), int((a == b).sum())],
        }
    )
)
