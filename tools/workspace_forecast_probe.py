"""How often a deploy ends in a workspace stop, with and without the env-policy adapter's workspace forecast.

Policies: the scripted family (is2r's) at random parameters inside its bounds, as the ES's perturbed candidates are
(the case that stopped `robot-rt train is2r --smoke` in CI); each seed is deployed twice through the real-time
loop against the real player, with `path_margin_m=None` (forecast off) and with the default, on the same serves.
Transient stops (a stall of this shared machine) are recovered as in training; any other stop ends the deploy.

    python tools/workspace_forecast_probe.py --seeds 12 --balls 3 --out docs/results/DATE/workspace_forecast
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_bytes
from robot_rt.bridge.deploy import DeployStopped, deploy, recover_transient_stops
from robot_rt.learning.is2r import make_family

CONDITIONS = {"forecast off": {"path_margin_m": None}, "forecast on (default)": {}}


def run_one(policy, adapter_kwargs: dict, n_balls: int, seed: int) -> dict:
    start = time.monotonic()
    try:
        r = deploy(
            policy,
            human="real_player",
            n_balls=n_balls,
            seed=seed,
            recover=recover_transient_stops,
            adapter_kwargs=adapter_kwargs,
        )
    except DeployStopped as stop:
        return {"stopped": list(stop.reasons), "wall_s": time.monotonic() - start}
    return {
        "stopped": [],
        "rally_lengths": [int(x) for x in r.rally_lengths],
        "return_rate": float(r.return_rate),
        "safety_events": {k: int(v) for k, v in r.safety_events.items() if v},
        "recoveries": int(r.recoveries),
        "adapter": {
            k: int(r.adapter[k])
            for k in ("policy_steps", "workspace_holds", "path_holds", "path_brakes")
            if k in r.adapter
        },
        "wall_s": time.monotonic() - start,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--balls", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    family = make_family("scripted")
    lo, hi = family.bounds()
    rows = []
    for seed in range(args.seeds):
        theta = np.random.default_rng(seed).uniform(lo, hi)
        row = {"seed": seed, "theta": theta.tolist()}
        for name, kwargs in CONDITIONS.items():
            row[name] = run_one(family.single(theta), kwargs, args.balls, 1000 + seed)
            print(seed, name, row[name].get("stopped") or row[name].get("rally_lengths"), flush=True)
        rows.append(row)
    summary = {}
    for name in CONDITIONS:
        runs = [r[name] for r in rows]
        summary[name] = {
            "deploys": len(runs),
            "workspace_stops": sum("workspace" in r["stopped"] for r in runs),
            "other_stops": sum(bool(r["stopped"]) and "workspace" not in r["stopped"] for r in runs),
            "path_holds": sum(r.get("adapter", {}).get("path_holds", 0) for r in runs),
            "path_brakes": sum(r.get("adapter", {}).get("path_brakes", 0) for r in runs),
            "mean_return_rate_of_finished": float(np.mean([r["return_rate"] for r in runs if not r["stopped"]]))
            if any(not r["stopped"] for r in runs)
            else None,
        }
    result = {"seeds": args.seeds, "balls": args.balls, "summary": summary, "runs": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "workspace_forecast_probe.json", json.dumps(result, indent=1).encode())
    lines = [
        "| condition | deploys | workspace stops | other stops | path holds | path brakes | return rate (finished) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        rr = "-" if s["mean_return_rate_of_finished"] is None else f"{s['mean_return_rate_of_finished']:.2f}"
        lines.append(
            f"| {name} | {s['deploys']} | {s['workspace_stops']} | {s['other_stops']} | {s['path_holds']} | "
            f"{s['path_brakes']} | {rr} |"
        )
    table = "\n".join(lines) + "\n"
    atomic_write_bytes(args.out / "workspace_forecast_probe.md", table.encode())
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
