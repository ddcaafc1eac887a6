"""Refits the UKF shot model on shots played with the swing capped at FRAC x reach, then plays the rally.

    python fit_and_eval.py FRAC OUT_DIR [SEEDS_FOR_SHOTS] [EVAL_SEEDS]

As `tools/fit_shot_model.py --tracker ukf --seeds 7000,3000` (2 x 1024 environments x 15 s) and
`examples/evaluate_rally.py --episodes 256 --seeds 5`, with `ReachPolicy` installed.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "examples"))
from reach_policy import install

frac, out = float(sys.argv[1]), Path(sys.argv[2])
shot_seeds = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "7000,3000").split(",")]
eval_seeds = [int(s) for s in (sys.argv[4] if len(sys.argv) > 4 else "5").split(",")]
install(frac)

from evaluate_rally import evaluate  # noqa: E402

from robot_rt.envs.scripted import ScriptedParams  # noqa: E402
from robot_rt.envs.shot_model import ShotModel, collect_shot_data  # noqa: E402
from robot_rt.sim.rally import resolve_human  # noqa: E402

out.mkdir(parents=True, exist_ok=True)
params = ScriptedParams.preset("rally")
t0 = time.time()
batches = [collect_shot_data(params, 1024, 1500, s, tracker="ukf") for s in shot_seeds]
shots = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
human = resolve_human("default")
model = ShotModel.fit(shots, params.to_vector(), returns=human.returns)
model.tracker, model.human = "ukf", human.name
path = out / f"model_{frac}.json"
model.save(path)
fit_s = time.time() - t0
result = evaluate(str(path), 256, eval_seeds, 6000)
result["fit"] = {
    "shots": model.samples,
    "seconds": fit_s,
    "landed_in_share": model.heldout["landed_in_share"],
    "arrival_sd": model.arrival_sd.tolist(),
    "arrival_sd_no_model": list(model.heldout["arrival_sd_no_model"]),
}
(out / f"eval_{frac}.json").write_text(json.dumps(result, indent=1, default=float))
print(json.dumps(result["pooled"], default=float)[:600])
