"""The arrival-centering gain swept on the tuning serves: python sweep_centering.py 0,0.5,1,1.5,2,2.5,3 5,6"""

import json
import sys

import numpy as np

from robot_rt.envs.landing_model import rally_policy
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.learning.rollout import play_episodes

gains = [float(g) for g in sys.argv[1].split(",")]
seeds = [int(s) for s in sys.argv[2].split(",")]
n = 256
result = {}
for g in gains:
    rallies = []
    for s in seeds:
        env = TableTennisVectorEnv(n, max_episode_steps=6000)
        eps = play_episodes(env, rally_policy(n, arrival_centering=g), range(s * 10**6, s * 10**6 + n))
        env.close()
        rallies += [int(e["rally_length"]) for e in eps]
    result[g] = float(np.mean(rallies))
    print(f"gain {g}: mean rally {result[g]:.3f} over {len(rallies)} serves", flush=True)
print(json.dumps(result))
