"""Where the scripted policy's landing error comes from (issue 13, items 3-4): an error budget of ball placement.

    python tools/placement_error_budget.py --episodes 256 --out docs/results/2026-12-04/placement_budget

Plays `BatchedScriptedPolicy` (preset `--preset`) on the goal environment (`TableTennisGoalVectorEnv`, NumPy physics
so that every paddle contact's inputs can be recorded: the ball state at contact, the paddle's normal and velocity)
against held-out goals, then asks what the landing error would be if the shot were planned perfectly except for one
unknown at a time. `robot_rt.envs.shot.solve_shot_normal` gives the paddle normal that lands the recorded ball
exactly at its goal through the env's own contact law and flight; each row plans with one input replaced by what a
policy could know, and flies the shot with the true one:

* `policy`: the env's landing (the scripted policy as it plays);
* `oracle`: every input known (the paddle speed along the normal as executed, the true ball state and spin): the
  share of contacts from which the goal can be reached at all with that paddle speed;
* `spin unknown`: planned with the mean spin of all incoming balls at contact instead of the ball's own (the
  scripted policy's tracker does not estimate spin; the mean is the best constant guess);
* `paddle speed unknown`: planned for the mean paddle speed over all contacts instead of the executed one;
* `both unknown`: both.

Writes OUT/placement_budget.json and OUT/placement_budget.md (atomically).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot_rt._io import atomic_write_json, atomic_write_text  # noqa: E402


def record_contacts(episodes: int, seed: int, preset: str) -> dict:
    """Plays one goal episode per environment; returns the goals, the env's landings and per contact the ball
    state, the paddle normal (towards the ball) and the paddle velocity."""
    import robot_rt.envs.core as core
    from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams
    from robot_rt.envs.vector import TableTennisGoalVectorEnv

    calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    original = core.paddle_contact

    def recording(ball, paddle_pos, paddle_normal, paddle_vel, side, radius, restitution, friction):
        calls.append((ball.copy(), paddle_normal * side[:, None], paddle_vel.copy()))
        return original(ball, paddle_pos, paddle_normal, paddle_vel, side, radius, restitution, friction)

    n = episodes
    rng = np.random.default_rng(seed)
    # the GoalsEye evaluation's goal region (robot_rt.learning.goalseye)
    goals = np.stack([rng.uniform(-1.2, -0.3, n), rng.uniform(-0.6, 0.6, n)], axis=1)
    env = TableTennisGoalVectorEnv(n, max_episode_steps=600, backend="numpy")
    core.paddle_contact = recording
    try:
        obs, _ = env.reset(seed=[seed * 10**6 + i for i in range(n)])
        env.world.goal[:] = goals
        policy = BatchedScriptedPolicy(n, params=ScriptedParams.preset(preset))
        policy.reset()
        active = np.ones(n, dtype=bool)
        landing = np.full((n, 2), np.nan)
        contact: dict[int, tuple] = {}
        while active.any():
            o = dict(obs)
            o["desired_goal"] = goals.astype(np.float32)
            action = policy(o)
            calls.clear()
            before = env.world.ball[:, :3].copy()
            obs, _, terminated, truncated, info = env.step(action)
            hit = np.nonzero(np.asarray(info["hit"]) & active)[0]
            if hit.size:
                balls = np.concatenate([c[0] for c in calls])
                normals = np.concatenate([c[1] for c in calls])
                vels = np.concatenate([c[2] for c in calls])
                # the contacts of one step come substep by substep: match each to its world by ball position
                for j in range(len(balls)):
                    i = int(hit[np.argmin(np.linalg.norm(before[hit] - balls[j, :3], axis=1))])
                    contact[i] = (balls[j], normals[j], vels[j])
            ended = (terminated | truncated) & active
            for i in np.nonzero(ended)[0]:
                if info["has_landed"][i]:
                    landing[i] = info["landing_point"][i]
            active &= ~ended
    finally:
        core.paddle_contact = original
        env.close()
    idx = np.array(sorted(contact), dtype=np.int64)
    return {
        "goals": goals,
        "landing": landing,
        "contact_env": idx,
        "ball": np.array([contact[i][0] for i in idx]),
        "normal": np.array([contact[i][1] for i in idx]),
        "paddle_velocity": np.array([contact[i][2] for i in idx]),
        "config": env.world.config,
    }


def budget(rec: dict) -> dict:
    from robot_rt.envs.shot import landing_of_shot, solve_shot_normal

    cfg = rec["config"]
    law = dict(restitution=cfg.paddle_restitution, friction=cfg.paddle_friction)
    goals_all, idx = rec["goals"], rec["contact_env"]
    ball, normal, vel = rec["ball"], rec["normal"], rec["paddle_velocity"]
    goal = goals_all[idx]
    speed = np.sum(vel * normal, axis=1)
    mean_speed = np.full_like(speed, speed.mean())
    mean_spin = ball.copy()
    mean_spin[:, 6:9] = ball[:, 6:9].mean(axis=0)

    def row(name: str, plan_ball: np.ndarray, plan_speed: np.ndarray) -> dict:
        n_plan, _ = solve_shot_normal(plan_ball, plan_speed, goal, normal, iterations=8, **law)
        xy, _ = landing_of_shot(ball, n_plan, speed, **law)
        return summary(name, xy, goal, len(goals_all))

    rows = [
        summary("policy (the env's landings)", rec["landing"], goals_all, len(goals_all)),
        row("oracle: ball, spin and paddle speed known", ball, speed),
        row("spin unknown (planned with the mean incoming spin)", mean_spin, speed),
        row("paddle speed unknown (planned for the mean speed)", ball, mean_speed),
        row("both unknown (mean spin, mean speed)", mean_spin, mean_speed),
    ]
    tangential = np.linalg.norm(vel - speed[:, None] * normal, axis=1)
    return {
        "episodes": len(goals_all),
        "contacts": len(idx),
        "paddle_normal_speed_mps": {"mean": float(speed.mean()), "sd": float(speed.std())},
        "paddle_tangential_speed_mps_mean": float(tangential.mean()),
        "incoming_spin_radps": {
            "mean_norm": float(np.linalg.norm(ball[:, 6:9], axis=1).mean()),
            "sd_xyz": ball[:, 6:9].std(axis=0).tolist(),
        },
        "rows": rows,
    }


def summary(name: str, xy: np.ndarray, goal: np.ndarray, episodes: int) -> dict:
    """Shares are per episode (an episode without a contact or a landing fails); errors over the landed ones."""
    from robot_rt.ballistics import TableGeometry
    from robot_rt.learning.stats import wilson_interval

    table = TableGeometry()
    half_length, half_width = table.length_m / 2, table.width_m / 2
    on_half = (
        np.all(np.isfinite(xy), axis=1) & (xy[:, 0] < 0) & (xy[:, 0] > -half_length) & (np.abs(xy[:, 1]) < half_width)
    )
    err = np.where(on_half[:, None], xy - goal, np.nan)
    dist = np.linalg.norm(err, axis=1)
    within30 = int(np.sum(dist <= 0.3))
    within20 = int(np.sum(dist <= 0.2))
    return {
        "name": name,
        "within_30cm": within30 / episodes,
        "within_30cm_ci95": list(wilson_interval(within30, episodes)),
        "within_20cm": within20 / episodes,
        "landed": int(on_half.sum()),
        "median_error_m": float(np.nanmedian(dist)) if on_half.any() else None,
        "error_sd_xy_m": np.nanstd(err, axis=0).tolist() if on_half.any() else None,
    }


def markdown(result: dict) -> str:
    lines = [
        "# Placement error budget of the scripted policy (goal environment)",
        "",
        f"`{result['command']}`: {result['episodes']} held-out goals (x in [-1.2, -0.3] m, |y| <= 0.6 m), "
        f"{result['contacts']} paddle contacts, preset `{result['preset']}`, {result['wall_s']:.0f} s.",
        "",
        "Each row plans the paddle normal with `robot_rt.envs.shot.solve_shot_normal` (the env's contact law and "
        "flight) from what that row assumes known, then flies the recorded ball with the executed paddle speed. "
        "Shares are of all episodes (no contact or no landing on the human's half fails).",
        "",
        "| plan | within 30 cm [95 % CI] | within 20 cm | landed | median error | error sd x / y |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lo, hi = r["within_30cm_ci95"]
        sd = r["error_sd_xy_m"]
        med = r["median_error_m"]
        lines.append(
            f"| {r['name']} | {100 * r['within_30cm']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] | "
            f"{100 * r['within_20cm']:.1f} % | {r['landed']} | {'-' if med is None else f'{med:.3f} m'} | "
            f"{'-' if sd is None else f'{sd[0]:.3f} / {sd[1]:.3f} m'} |"
        )
    s = result["paddle_normal_speed_mps"]
    w = result["incoming_spin_radps"]
    lines += [
        "",
        f"Paddle speed along its normal at contact: {s['mean']:.2f} m/s mean, {s['sd']:.2f} m/s sd; tangential "
        f"{result['paddle_tangential_speed_mps_mean']:.2f} m/s mean. Incoming spin: |w| {w['mean_norm']:.0f} rad/s "
        f"mean, sd per axis {', '.join(f'{v:.0f}' for v in w['sd_xyz'])} rad/s.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=256)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--preset", default="default", choices=["default", "rally"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.episodes < 1:
        ap.error("--episodes: expected a positive int")
    t0 = time.time()
    rec = record_contacts(args.episodes, args.seed, args.preset)
    result = budget(rec)
    result.update(
        command="python tools/placement_error_budget.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        preset=args.preset,
        seed=args.seed,
        wall_s=time.time() - t0,
        load_average_1min=os.getloadavg()[0],
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "placement_budget.json", result)
    atomic_write_text(args.out / "placement_budget.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
