"""Fits the scripted policy's landing model (robot_rt.envs.landing_model) on its own self-practice shots.

    python tools/fit_landing_model.py --out robot_rt/envs/data/landing_model_rally.json

Plays the rally preset in the rally env (default human) with a random lob target per ball (`collect_shots`), then
fits the quadratic ridge model of where the return lands (held-out residuals reported). The shipped model
(`shipped_rally_model()`) was made with this command and its defaults; the shots use seeds 7000 + i and 3000 + i,
not the serves the rally evaluations play. The model file is written atomically.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from robot_rt.envs.landing_model import LandingModel, collect_shots
from robot_rt.envs.scripted import ScriptedParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="rally", choices=("default", "rally"))
    ap.add_argument("--episodes", type=int, default=1024, help="environments per batch")
    ap.add_argument("--steps", type=int, default=1500, help="policy steps per batch (15 s)")
    ap.add_argument("--seeds", default="7000,3000", help="one batch per seed")
    ap.add_argument("--ridge", type=float, default=1e-3)
    ap.add_argument("--target-low", type=float, nargs=2, default=(-1.2, -0.6), help="lob target offsets from the aim")
    ap.add_argument("--target-high", type=float, nargs=2, default=(0.6, 0.6))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    params = ScriptedParams.preset(args.preset)
    t0 = time.time()
    batches = [
        collect_shots(params, args.episodes, args.steps, int(s), args.target_low, args.target_high)
        for s in args.seeds.split(",")
    ]
    shots = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    model = LandingModel.fit(shots, params.to_vector(), ridge=args.ridge)
    model.save(args.out)
    raw = np.sqrt(np.mean((shots["landing"] - shots["target"]) ** 2, axis=0))
    print(
        f"{model.samples} shots in {time.time() - t0:.0f} s; landing - target rms x {raw[0]:.3f} y {raw[1]:.3f} m; "
        f"model held-out rms x {model.heldout_rmse_m[0]:.3f} y {model.heldout_rmse_m[1]:.3f} m -> {args.out}"
    )


if __name__ == "__main__":
    main()
