"""Mean rally of the shot policy with the old saturation law ('base') or saturation in the null space (SNS).

python rally.py VARIANT SEEDS N [SHOT_MODEL.json]    # VARIANT: base, sns, snsa, wA_B (SNS only in the last A s,
                                                     # acceleration bounds B = 0/1); INEXP=k: P(in) exponent
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.shot_model import ShotModel, shipped_shot_model
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.learning.rollout import episode_summary, play_episodes

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[3] / "examples"))
from evaluate_rally import _rally_shape  # noqa: E402
from sns_policy import SNSPolicy  # noqa: E402

variant, seeds, n = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
model = ShotModel.load(sys.argv[4]) if len(sys.argv) > 4 else shipped_shot_model()


def make():
    kw = dict(
        params=ScriptedParams.from_vector(model.fitted_params),
        shot_model=model,
        shot_in_exponent=float(os.environ.get("INEXP", "1")),
    )
    if variant == "base":
        return BatchedScriptedPolicy(n, **kw)
    if variant == "sns":
        return SNSPolicy(n, accel_bounds=False, **kw)
    if variant == "snsa":
        return SNSPolicy(n, accel_bounds=True, **kw)
    if variant.startswith("w"):  # wA_B: window A s, accel bounds B
        a, b = variant[1:].split("_")
        return SNSPolicy(n, accel_bounds=bool(int(b)), sns_window_s=float(a), **kw)


rallies = []
for s in seeds:
    env = TableTennisVectorEnv(n, max_episode_steps=6000)
    t0 = time.time()
    eps = play_episodes(env, make(), range(s * 10**6, s * 10**6 + n))
    env.close()
    summary = episode_summary(eps) | _rally_shape(eps)
    rallies += [e["rally_length"] for e in eps]
    print(
        f"{variant} seed {s}: rally {summary['rally_mean']:.2f}, robot {summary['robot_return_rate']:.3f}, human {summary['human_answered_share']:.3f}, {summary['outcomes']}, {time.time() - t0:.0f} s",
        flush=True,
    )
print(variant, "pooled", np.mean(rallies))
