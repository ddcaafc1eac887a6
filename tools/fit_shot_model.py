"""Fits the scripted policy's shot model (robot_rt.envs.shot_model) on its own self-practice shots.

    python tools/fit_shot_model.py --out robot_rt/envs/data/shot_model_rally.json

Plays the rally preset in the rally env (default human) with a random lob target per ball (`collect_shot_data`), then
fits the model: the chance that a return lands on the human's half (logistic) and where it reaches the human's
hitting plane (held-out metrics reported and stored in the file). The shipped model (`shipped_shot_model()`) was made
with this command and its defaults; the shots use seeds 7000 + i, 3000 + i, ... 23000 + i, not the serves the rally
evaluations play. The model file is written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from robot_rt.envs.scripted import ScriptedParams
from robot_rt.envs.shot_model import ShotModel, collect_shot_data
from robot_rt.sim.rally import HUMAN_CHOICES, resolve_human


def with_settings(params: ScriptedParams, settings: list[str]) -> ScriptedParams:
    """`params` with each 'NAME=VALUE' of `settings` set; ValueError names a bad one."""
    values = {}
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep or name not in ScriptedParams.names():
            raise ValueError(f"--set: expected NAME=VALUE with NAME one of {ScriptedParams.names()}, got {item!r}")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"--set: expected a number for {name}, got {value!r}") from None
    return dataclasses.replace(params, **values)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="rally", choices=("default", "rally"))
    ap.add_argument("--episodes", type=int, default=1024, help="environments per batch")
    ap.add_argument("--steps", type=int, default=1500, help="policy steps per batch (15 s)")
    ap.add_argument("--seeds", default="7000,3000,11000,15000,19000,23000", help="one batch per seed")
    ap.add_argument("--ridge", type=float, default=1e-3)
    ap.add_argument("--target-low", type=float, nargs=2, default=(-1.2, -0.6), help="lob target offsets from the aim")
    ap.add_argument("--target-high", type=float, nargs=2, default=(0.6, 0.6))
    ap.add_argument("--tracker", default="fit", choices=("fit", "ukf"), help="the policy's ball tracker")
    ap.add_argument(
        "--human",
        default="default",
        help="the human that serves and answers: 'default', 'real_player', or a HumanBehaviorModel JSON file (e.g. "
        "one an i-S2R run fitted to the real player's ball tracks)",
    )
    ap.add_argument(
        "--loop-model",
        action="store_true",
        help="the env's robot moves along the real-time loop's trajectory (robot_rt.bridge.loop_model)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a ScriptedParams value other than the preset's (repeatable), e.g. floor_margin_m=0.05",
    )
    ap.add_argument("--save-shots", default=None, help="also write the shots (npz) here")
    ap.add_argument(
        "--from-shots", nargs="+", default=None, help="fit the shots of these --save-shots files instead of playing"
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    params = with_settings(ScriptedParams.preset(args.preset), args.set)
    human = resolve_human(args.human if args.human in HUMAN_CHOICES else Path(args.human))
    t0 = time.time()
    loop_model = {}
    if args.loop_model:  # the shots the real-time loop would play (robot_rt.bridge.loop_model)
        from robot_rt.bridge.loop_model import loop_model_setup

        loop_model = loop_model_setup(num_envs=args.episodes)
    if args.from_shots:  # e.g. batches played in parallel processes
        batches = [dict(np.load(path)) for path in args.from_shots]
    else:
        batches = [
            collect_shot_data(
                params,
                args.episodes,
                args.steps,
                int(s),
                args.target_low,
                args.target_high,
                args.tracker,
                human=human,
                **loop_model,
            )
            for s in args.seeds.split(",")
        ]
    shots = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    if args.save_shots:
        np.savez(args.save_shots, **shots)
    model = ShotModel.fit(shots, params.to_vector(), returns=human.returns, ridge=args.ridge)
    model.tracker, model.human, model.loop_model = args.tracker, human.name, args.loop_model
    model.save(args.out)
    h = model.heldout
    quart = h["arrival_sd_by_predicted_quartile"]["z_m"]
    print(
        f"{model.samples} shots in {time.time() - t0:.0f} s, {h['landed_in_share']:.3f} landed in; held-out: log loss "
        f"{h['in_log_loss']:.3f} (constant {h['in_log_loss_constant']:.3f}), arrival residual sd y/z/speed "
        f"{np.round(model.arrival_sd, 3).tolist()} (no model {np.round(h['arrival_sd_no_model'], 3).tolist()}) -> "
        f"{args.out}"
    )
    print(
        "arrival height sd by quartile of the predicted sd: predicted "
        f"{np.round(quart['predicted_sd'], 3).tolist()}, actual {np.round(quart['actual_sd'], 3).tolist()}"
    )


if __name__ == "__main__":
    main()
