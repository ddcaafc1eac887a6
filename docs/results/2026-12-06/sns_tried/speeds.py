"""Arrival statistics of self-practice shots at one return speed: python speeds.py RETURN_SPEED_MPS"""

import dataclasses
import sys
import time

import numpy as np

from robot_rt.envs.human_model import ReturnModel
from robot_rt.envs.scripted import ScriptedParams
from robot_rt.envs.shot_model import collect_shot_data

speed = float(sys.argv[1])
params = dataclasses.replace(ScriptedParams.preset("rally"), return_speed_mps=speed)
t0 = time.time()
d = collect_shot_data(params, 512, 1500, 7000)
a = d["arrival"]
ok = np.all(np.isfinite(a), axis=1)
rm = ReturnModel()
pace = 1 / (1 + np.exp(-(rm.speed_limit_mps - a[ok, 2])))
height = np.exp(-0.5 * ((a[ok, 1] - 1.05) / 0.35) ** 2)
lat = np.exp(-0.5 * (a[ok, 0] / 0.7) ** 2)
print(
    f"speed {speed}: shots {len(a)}, landed in {d['landed_in'].mean():.3f}, arrival speed mean {a[ok, 2].mean():.2f} sd {a[ok, 2].std():.2f}, z mean {a[ok, 1].mean():.3f}, pace {pace.mean():.4f}, height {height.mean():.3f}, lateral {lat.mean():.3f}, answer {(0.95 * pace * height * lat).mean():.3f}, {time.time() - t0:.0f}s"
)
