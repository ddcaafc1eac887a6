"""How far the scripted policy's contact plan is from the truth, per ball tracker (robot_rt.envs.scripted).

    python tools/plan_errors.py --envs 64 --steps 1500 --out plan_errors.json

Plays the shot policy (the rally preset, the shipped shot model) in the rally env on serves 5 x 10^6 + i (the tuning
serves) and, at fixed times before each planned contact (0.3, 0.2, 0.1 and 0.05 s), compares the plan's contact
point, incoming velocity and time with the ball's true flight to the same plane (the env's ball state flown there by
the ball physics, no paddle). Each tracker is played with its own shipped shot model. Writes the RMS and median
absolute errors per tracker and lead (JSON, atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from robot_rt._io import atomic_write_json
from robot_rt.ballistics import time_to_plane_batch
from robot_rt.envs.core import PHASE_INCOMING
from robot_rt.envs.shot_model import rally_shot_policy
from robot_rt.envs.vector import TableTennisVectorEnv

LEADS_S = (0.3, 0.2, 0.1, 0.05)
COLUMNS = ("y_m", "z_m", "vx_mps", "vy_mps", "vz_mps", "t_s")


def plan_errors(tracker: str, envs: int, steps: int, seed: int) -> dict:
    env = TableTennisVectorEnv(envs, max_episode_steps=6000)
    policy = rally_shot_policy(envs, tracker=tracker)
    obs, _ = env.reset(seed=list(range(seed, seed + envs)))
    policy.reset()
    timing_offset = policy.params[:, 1]  # the plan's time is the crossing's plus timing_offset_s
    rows = {lead: [] for lead in LEADS_S}
    resetting = np.zeros(envs, dtype=bool)
    t0 = time.time()
    try:
        for _ in range(steps):
            t_now = policy.t.copy()  # the policy's clock (plan_t's); the world's restarts at each autoreset
            action = policy(obs)
            lead = policy.plan_t - timing_offset - t_now
            ball = env.world.ball.copy()
            incoming = (env.world.phase == PHASE_INCOMING) & (ball[:, 3] > 0) & ~resetting
            for target in LEADS_S:
                sel = np.nonzero(np.isfinite(lead) & (np.abs(lead - target) <= 0.005) & incoming)[0]
                for i in sel:
                    truth = time_to_plane_batch(ball[i : i + 1], float(policy.plan_p[i, 0]))
                    if not np.isfinite(truth.t_s[0]):
                        continue
                    err_p = policy.plan_p[i, 1:3] - truth.state[0, 1:3]
                    err_v = policy.plan_v[i] - truth.state[0, 3:6]
                    err_t = policy.plan_t[i] - timing_offset[i] - (t_now[i] + truth.t_s[0])
                    rows[target].append(np.concatenate([err_p, err_v, [err_t]]))
            obs, _, terminated, truncated, _ = env.step(action)
            if resetting.any():  # their new episodes' first observations: the policy starts afresh (as _play)
                policy.reset(resetting)
            resetting = terminated | truncated
    finally:
        env.close()
    out = {"seconds": time.time() - t0}
    for target, r in rows.items():
        e = np.array(r).reshape(-1, len(COLUMNS))
        out[f"lead_{target:g}_s"] = {
            "n": len(e),
            "rms": dict(zip(COLUMNS, np.sqrt(np.mean(e**2, axis=0)).tolist())),
            "median_abs": dict(zip(COLUMNS, np.median(np.abs(e), axis=0).tolist())),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=5 * 10**6)
    ap.add_argument("--trackers", nargs="+", default=["fit", "ukf"], choices=("fit", "ukf"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    result = {"args": vars(args), "trackers": {}}
    for tracker in args.trackers:
        result["trackers"][tracker] = plan_errors(tracker, args.envs, args.steps, args.seed)
    atomic_write_json(args.out, result)
    print(f"{'tracker':8} {'lead s':>6} {'n':>5}  " + "  ".join(f"{c:>13}" for c in COLUMNS) + "   (rms / median |e|)")
    for tracker, res in result["trackers"].items():
        for target in LEADS_S:
            r = res[f"lead_{target:g}_s"]
            cells = "  ".join(f"{r['rms'][c]:6.3f}/{r['median_abs'][c]:6.3f}" for c in COLUMNS)
            print(f"{tracker:8} {target:6.2f} {r['n']:5d}  {cells}")
    print(json.dumps({k: round(v["seconds"], 1) for k, v in result["trackers"].items()}))


if __name__ == "__main__":
    main()
