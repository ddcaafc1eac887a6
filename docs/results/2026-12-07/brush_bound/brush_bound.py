"""Would a brushing stroke lift the contact's ceiling? A PRIVILEGED contact-replay bound (analysis only), in the manner
of `tools/rally_oracle_bound.py --attribution`.

    python brush_bound.py EPISODES SEED OUT.json

Plays the shipped UKF shot policy on the NumPy physics (EPISODES serves of SEED, 60 s cap) and records every paddle
contact: the true ball at contact, the paddle normal and velocity. Each contact is then replayed through the env's
own contact law (friction: a paddle moving along its face spins the ball) and ball flight, with

* the paddle velocity turned in the vertical plane through it by an angle (positive: up) at the same speed, or
  scaled, and
* the normal solved, knowing everything at contact, to send the ball through the human's hitting plane at y = 0
  and a height from `HEIGHTS_M` (`rally_oracle_bound.solve_arrival_normal`), keeping per ball the height (or the
  policy's own normal) whose return lands at least `MARGIN_M` inside the end line with the highest answer
  probability of the default human.

Per variant it reports the continuation per contact (share landed with the margin x mean answer probability), the
share landed, the mean answer probability, the arrival height, and the spin the return carries. With the
executed velocity this is the stop-48 oracle aim (there without a margin and at 1.05 m only).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tools"))
import rally_oracle_bound as rob  # noqa: E402

HEIGHTS_M = (0.95, 1.0, 1.05, 1.1)
MARGIN_M = 0.05
ANGLES_DEG = (-30.0, -15.0, 0.0, 15.0, 30.0, 45.0)
SCALES = (1.0, 1.15)  # the same speed, and 15 % more (what a faster robot would have)


def turned(v: np.ndarray, angle_rad: float) -> np.ndarray:
    """v [M, 3] turned by angle_rad in the vertical plane through it (positive: up), same length."""
    horizontal = v.copy()
    horizontal[:, 2] = 0.0
    h_norm = np.linalg.norm(horizontal, axis=1, keepdims=True)
    h_unit = horizontal / np.maximum(h_norm, 1e-12)
    speed = np.linalg.norm(v, axis=1)
    elevation = np.arctan2(v[:, 2], h_norm[:, 0]) + angle_rad
    return speed[:, None] * (np.cos(elevation)[:, None] * h_unit + np.sin(elevation)[:, None] * np.array([0, 0, 1.0]))


def best_normal(ball, vel, n_start, kw) -> tuple[np.ndarray, dict]:
    from robot_rt.envs.human_model import ReturnModel

    m = len(ball)
    best_n = n_start.copy()
    best_c = np.full(m, -1.0)
    for z in (None, *HEIGHTS_M):  # None: the start itself (the policy's normal) is a candidate too
        if z is None:
            normal = n_start
        else:
            target = np.tile([ReturnModel.reach_center_y_m, z], (m, 1))
            normal = rob.solve_arrival_normal(ball, vel, target, n_start, **kw)
        _, out = rob.arrival_of_shot(ball, normal, vel, **kw)
        f = rob.fly_to_human(out, kw["params"], kw["table"])
        ok = f["landed"] & np.all(np.isfinite(f["arrival"]), axis=1)
        ok &= np.nan_to_num(f["landing_xy"][:, 0], nan=-9.0) >= -1.37 + MARGIN_M
        p = np.where(ok, ReturnModel().return_probability(np.nan_to_num(f["arrival"])), 0.0)
        better = p > best_c
        best_n[better], best_c[better] = normal[better], p[better]
    return best_n, best_c


def summary(ball, normal, vel, kw) -> dict:
    from robot_rt.envs.human_model import ReturnModel

    _, out = rob.arrival_of_shot(ball, normal, vel, **kw)
    f = rob.fly_to_human(out, kw["params"], kw["table"])
    ok = f["landed"] & np.all(np.isfinite(f["arrival"]), axis=1)
    margin_ok = ok & (np.nan_to_num(f["landing_xy"][:, 0], nan=-9.0) >= -1.37 + MARGIN_M)
    p = np.where(ok, ReturnModel().return_probability(np.nan_to_num(f["arrival"])), 0.0)
    arrival = f["arrival"][ok]
    return {
        "continuation_per_contact": float(np.mean(np.where(margin_ok, p, 0.0))),
        "continuation_no_margin": float(np.mean(p)),
        "landed_share": float(ok.mean()),
        "landed_with_margin_share": float(margin_ok.mean()),
        "answer_p_mean_landed": float(p[ok].mean()) if ok.any() else None,
        "arrival_z_mean_sd_m": [float(arrival[:, 2].mean()), float(arrival[:, 2].std())] if ok.any() else None,
        "arrival_speed_mean_mps": float(np.linalg.norm(arrival[:, 3:6], axis=1).mean()) if ok.any() else None,
        "out_spin_y_mean_radps": float(out[:, 7].mean()),
        "landing_x_p5_p50_m": (
            [float(np.quantile(f["landing_xy"][ok, 0], 0.05)), float(np.median(f["landing_xy"][ok, 0]))]
            if ok.any()
            else None
        ),
    }


def main() -> None:
    episodes, seed, out_path = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    t0 = time.time()
    res = rob.run_row("shot-ukf", episodes, seed, 6000, numpy_backend=True)
    rec = [c for c in res["contacts"] if c["contact"] is not None]
    ball = np.array([c["contact"][0] for c in rec])
    n_act = np.array([c["contact"][1] for c in rec])
    v_act = np.array([c["contact"][2] for c in rec])
    kw = dict(config=res["config"], radius_m=res["radius_m"], params=res["params"], table=res["table"])
    played_s = time.time() - t0
    print(f"{len(rec)} contacts of {len(res['contacts'])} recorded, {played_s:.0f} s", flush=True)
    result = {
        "command": "python brush_bound.py " + " ".join(sys.argv[1:]),
        "contacts": len(rec),
        "play_wall_s": played_s,
        "heights_m": HEIGHTS_M,
        "margin_m": MARGIN_M,
        "rally_figures": rob.rally_figures(res["episodes"]),
        "variants": {"executed (policy's normal and velocity)": summary(ball, n_act, v_act, kw)},
    }
    per_ball = {}
    for scale in SCALES:
        for angle in ANGLES_DEG:
            vel = scale * turned(v_act, np.radians(angle))
            normal, c = best_normal(ball, vel, n_act, kw)
            name = f"oracle normal, velocity turned {angle:+.0f} deg, speed x{scale:g}"
            result["variants"][name] = summary(ball, normal, vel, kw)
            per_ball[name] = c
            print(name, json.dumps(result["variants"][name]), f"{time.time() - t0:.0f} s", flush=True)
    for scale in SCALES:
        stack = np.stack(
            [per_ball[f"oracle normal, velocity turned {a:+.0f} deg, speed x{scale:g}"] for a in ANGLES_DEG]
        )
        result["variants"][f"best angle per ball, speed x{scale:g}"] = {
            "continuation_per_contact": float(stack.max(axis=0).mean()),
            "angle_chosen_deg_counts": {
                f"{a:+.0f}": int(n)
                for a, n in zip(ANGLES_DEG, np.bincount(stack.argmax(axis=0), minlength=len(ANGLES_DEG)))
            },
        }
    result["wall_s"] = time.time() - t0
    out_path.write_text(json.dumps(result, indent=1))
    for name, row in result["variants"].items():
        print(f"{name}: {row['continuation_per_contact']:.4f}")


if __name__ == "__main__":
    main()
