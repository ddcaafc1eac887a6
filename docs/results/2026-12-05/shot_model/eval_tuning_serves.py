"""Mean rally of the rally preset with a shot model (or the landing model) on the tuning serves, and the ablation
models refitted from the shipped model's shots.

    python tools/fit_shot_model.py --out shot.json --save-shots shots.npz        # the shipped model and its shots
    python eval_tuning_serves.py ablate shots.npz OUTDIR     # OUTDIR/shot_nospin.json (spin inputs held at zero)
    python eval_tuning_serves.py eval shot.json 5,6 256      # a model (or 'landing') on serves s x 10^6 + i
"""

import sys
import time
from pathlib import Path

import numpy as np

from robot_rt.envs.landing_model import rally_policy
from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
from robot_rt.envs.shot_model import ShotModel
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.learning.rollout import episode_summary, play_episodes

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "examples"))
from evaluate_rally import _rally_shape  # noqa: E402


def ablate(shots_path: str, out_dir: str) -> None:
    shots = dict(np.load(shots_path))
    shots["spin"] = np.zeros_like(shots["spin"])
    model = ShotModel.fit(shots, ScriptedParams.preset("rally").to_vector())  # the shipped model's shots then
    # the policy feeds its spin estimate: a huge scale makes those inputs zero after standardisation
    model.mean[8:11], model.std[8:11] = 0.0, 1e12
    model.save(Path(out_dir) / "shot_nospin.json")


def evaluate(spec: str, seeds: list[int], n: int) -> None:
    def make():
        if spec == "landing":
            return rally_policy(n)
        model = ShotModel.load(spec)  # played with the parameters its shots were made with
        return BatchedScriptedPolicy(n, params=ScriptedParams.from_vector(model.fitted_params), shot_model=model)

    rallies = []
    for s in seeds:
        env = TableTennisVectorEnv(n, max_episode_steps=6000)
        t0 = time.time()
        try:
            eps = play_episodes(env, make(), range(s * 10**6, s * 10**6 + n))
        finally:
            env.close()
        summary = episode_summary(eps) | _rally_shape(eps)
        rallies += [e["rally_length"] for e in eps]
        print(
            f"{spec} seed {s}: rally {summary['rally_mean']:.2f} {summary['rally_mean_ci95']}, robot return rate "
            f"{summary['robot_return_rate']:.3f}, human answered {summary['human_answered_share']:.3f}, "
            f"{summary['outcomes']}, {time.time() - t0:.0f} s",
            flush=True,
        )
    print(f"pooled mean rally {np.mean(rallies):.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "ablate":
        ablate(sys.argv[2], sys.argv[3])
    else:
        evaluate(sys.argv[2], [int(x) for x in sys.argv[3].split(",")], int(sys.argv[4]))
