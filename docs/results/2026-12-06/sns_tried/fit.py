"""Fits a shot model on self-practice shots played with the SNS law (as tools/fit_shot_model.py does for the shipped one).

python fit.py WINDOW_S ACCEL_BOUNDS(0/1) OUT.json [SEEDS]
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sns_policy import SNSPolicy

import robot_rt.envs.scripted as scripted_mod
from robot_rt.envs.scripted import ScriptedParams
from robot_rt.envs.shot_model import ShotModel, collect_shot_data
from robot_rt.sim.rally import resolve_human

window, accel, out = float(sys.argv[1]), bool(int(sys.argv[2])), sys.argv[3]
seeds = [int(s) for s in (sys.argv[4] if len(sys.argv) > 4 else "7000,3000,11000,15000,19000,23000").split(",")]


class P(SNSPolicy):
    def __init__(self, *a, **k):
        super().__init__(*a, accel_bounds=accel, sns_window_s=window, **k)


scripted_mod.BatchedScriptedPolicy = P
params = ScriptedParams.preset("rally")
t0 = time.time()
batches = [collect_shot_data(params, 1024, 1500, s) for s in seeds]
shots = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
np.savez(out.replace(".json", ".npz"), **shots)
human = resolve_human("default")
model = ShotModel.fit(shots, params.to_vector(), returns=human.returns)
model.tracker, model.human = "fit", human.name
model.save(out)
print(
    model.samples,
    "shots",
    time.time() - t0,
    "s; arrival sd",
    np.round(model.arrival_sd, 3),
    model.heldout["landed_in_share"],
    model.heldout["in_log_loss"],
)
