"""The tuning objective (per-ball continuation c, robot return rate r, human answer rate h) of the old law with the
rally preset, and of the SNS law with the preset and with tune_sns.json's mean, on the same 192 serves (seed 77)."""

import json
import sys
from pathlib import Path

import numpy as np

from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[3] / "tools"))
import tune_scripted_rally as tune  # noqa: E402
from sns_policy import SwingWindowSNS as P  # noqa: E402

preset = ScriptedParams.preset("rally").to_vector()
tuned = np.array(json.load(open(HERE / "tune_sns.json"))["mean"])
for name, cls, cand in (
    ("old law, preset", BatchedScriptedPolicy, preset),
    ("sns, preset", P, preset),
    ("sns, tuned", P, tuned),
):
    tune.BatchedScriptedPolicy = cls
    c, r, h, balls = tune.evaluate([cand], 192, 1000, 77)
    print(f"{name}: c {c[0]:.3f} r {r[0]:.3f} h {h[0]:.3f} balls {balls[0]}", flush=True)
