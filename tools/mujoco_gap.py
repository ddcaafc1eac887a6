"""Sim-to-real gap report: the same policy in the kinematic env, and through the real-time loop against the
kinematic sim-server and the MuJoCo sim-server (`--physics mujoco`), all against the 'real_player' human model.

Per condition: return rate (returns that landed / (returns + missed + out + limit), Wilson 95 % interval), mean
rally length (bootstrap 95 % interval over rallies), and for the two servers the tracking error of the robot
through the loop: joint-space |measured - commanded| and the paddle-position error |FK(measured) - FK(commanded)|
(mean and 95th percentile; bootstrap interval over 1 s blocks). Also the env with the previous hand-written robot
description (`--old-robot PATH`, optional) for the scripted policy's sensitivity to the URDF's new limits.

    .venv/bin/python tools/mujoco_gap.py --balls 30 --env-episodes 300 [--old-robot old.json]
writes docs/results/2026-12-03/mujoco_gap.json and prints the Markdown table (pasted into mujoco_gap.md).
Policies: the scripted policy (ScriptedParams defaults); the neural policy when robot_rt.learning.neural_policy
exists (issue 13) and --neural CHECKPOINT is given.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

FAILURES = ("missed", "out", "limit")
OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "2026-12-03" / "mujoco_gap.json"


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _rates(rally_lengths, outcomes) -> dict:
    from robot_rt.learning.stats import wilson_interval

    returns = int(sum(rally_lengths))
    failures = int(sum(1 for o in outcomes if o in FAILURES))
    balls = returns + failures
    return {
        "rallies": len(rally_lengths),
        "returns": returns,
        "failures": failures,
        "return_rate": returns / max(balls, 1),
        "return_rate_ci95": list(wilson_interval(returns, balls)),
        "mean_rally_length": float(np.mean(rally_lengths)) if rally_lengths else float("nan"),
        "mean_rally_length_ci95": list(bootstrap_ci(rally_lengths)),
        "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))},
    }


VELOCITY_TRACKING_LEAD_S = 0.3  # tools/loop_gap_ablation.py explains it


def env_condition(
    robot,
    episodes: int,
    seed: int = 0,
    n: int = 64,
    jerk_limit: bool = False,
    loop_model: bool = False,
    params=None,
    velocity_tracking: bool = False,
) -> dict:
    from robot_rt.envs import HumanBehaviorModel
    from robot_rt.envs.scripted import BatchedScriptedPolicy
    from robot_rt.envs.vector import TableTennisVectorEnv

    if loop_model:  # the env's robot on the real-time loop's trajectory (robot_rt.bridge.loop_model)
        from robot_rt.bridge.loop_model import drive_robot

        env_robot = drive_robot(robot)
    else:
        env_robot = robot
    env = TableTennisVectorEnv(n, human=HumanBehaviorModel.real_player(), robot=env_robot, max_episode_steps=1500)
    pol = BatchedScriptedPolicy(n, robot=robot, params=params)
    if loop_model:
        from robot_rt.bridge.loop_model import LoopTrajectoryPolicy

        lead = {"lead_s": VELOCITY_TRACKING_LEAD_S} if velocity_tracking else {}
        pol = LoopTrajectoryPolicy(pol, robot, n, velocity_tracking=velocity_tracking, **lead)
    if jerk_limit:  # the commands shaped to the robot's jerk limits (robot_rt.envs.jerk_limit)
        from robot_rt.envs.jerk_limit import JerkLimitedPolicy

        pol = JerkLimitedPolicy(pol, robot, n)
    obs, _ = env.reset(seed=seed)
    per_env = -(-episodes // n)
    done = np.zeros(n, dtype=np.int64)
    auto = np.zeros(n, bool)
    rallies, outcomes = [], []
    while np.any(done < per_env):
        if auto.any():
            pol.reset(auto)
        obs, _, term, trunc, info = env.step(pol(obs))
        counting = done < per_env
        for i in np.nonzero((term | trunc) & counting)[0]:
            outcomes.append(str(info["outcome"][i]) if term[i] else "truncated")
            rallies.append(int(info["rally_length"][i]))
        done += term | trunc
        auto = term | trunc
    return _rates(rallies, outcomes)


def tracking(log_path: Path, robot) -> dict:
    from robot_rt.control.runlog import read_runlog
    from robot_rt.robot import forward_kinematics

    log = read_runlog(log_path)
    ticks = log.ticks
    measured, command = ticks["measured_position"], ticks["command_position"]
    t = (ticks["wake_ns"] - ticks["wake_ns"][0]) * 1e-9
    keep = t > 1.0  # after the start-up
    measured, command, t = measured[keep], command[keep], t[keep]
    joint = np.abs(measured - command)
    paddle = np.linalg.norm(
        forward_kinematics(robot, measured)[:, :3, 3] - forward_kinematics(robot, command)[:, :3, 3], axis=1
    )
    blocks = np.floor(t).astype(np.int64)
    block_means = [paddle[blocks == b].mean() for b in np.unique(blocks)]
    return {
        "ticks": int(len(t)),
        "joint_abs_error_mean": joint.mean(axis=0).tolist(),
        "joint_abs_error_p95": np.quantile(joint, 0.95, axis=0).tolist(),
        "paddle_error_mean_m": float(paddle.mean()),
        "paddle_error_mean_ci95_m": list(bootstrap_ci(block_means)),
        "paddle_error_p95_m": float(np.quantile(paddle, 0.95)),
        "paddle_error_max_m": float(paddle.max()),
    }


def server_condition(policy, robot, physics: str, balls: int, seed: int) -> dict:
    from robot_rt.bridge.deploy import deploy, recover_transient_stops

    with tempfile.TemporaryDirectory(prefix="mujoco_gap_") as tmp:
        log_path = Path(tmp) / f"{physics}.rrlog"
        t0 = time.monotonic()
        # generous timeout: on a loaded machine a real-time rally takes longer than its simulated time
        result = deploy(
            policy,
            human="real_player",
            n_balls=balls,
            seed=seed,
            log_path=log_path,
            physics=physics,
            timeout_s=120.0 + 30.0 * balls,
            recover=recover_transient_stops,  # simulated far end: a stall of the loaded machine is recovered
        )
        out = _rates(result.rally_lengths, result.outcomes)
        out.update(
            {
                "hits": result.hits,
                "balls_sent": result.balls,
                "server_return_rate": result.return_rate,
                "safety_events": {k: v for k, v in result.safety_events.items() if v},
                "robot_server": {
                    k: result.robot_server.get(k) for k in ("commands_out_of_limits", "hard_stops", "mujoco")
                },
                "wall_s": time.monotonic() - t0,
                "tracking": tracking(log_path, robot),
            }
        )
    return out


def _fmt_ci(v, ci, digits=2) -> str:
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def markdown(report: dict) -> str:
    lines = [
        "| condition | rallies | return rate [95 % CI] | mean rally length [95 % CI] | outcomes | paddle tracking error mean [CI] / p95 |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in report["conditions"].items():
        track = c.get("tracking")
        tr = (
            f"{1e3 * track['paddle_error_mean_m']:.1f} mm [{1e3 * track['paddle_error_mean_ci95_m'][0]:.1f}, "
            f"{1e3 * track['paddle_error_mean_ci95_m'][1]:.1f}] / {1e3 * track['paddle_error_p95_m']:.1f} mm"
            if track
            else "-"
        )
        lines.append(
            f"| {name} | {c['rallies']} | {_fmt_ci(c['return_rate'], c['return_rate_ci95'])} | "
            f"{_fmt_ci(c['mean_rally_length'], c['mean_rally_length_ci95'])} | {c['outcomes']} | {tr} |"
        )
    return "\n".join(lines)


def main() -> None:
    from robot_rt.learning.is2r import make_family
    from robot_rt.robot import load_robot

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--balls", type=int, default=30, help="rallies per server condition")
    parser.add_argument("--env-episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old-robot", default=None, help="the previous robot JSON (env condition only)")
    parser.add_argument("--skip", nargs="*", default=[], help="conditions to skip: env kinematic mujoco")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    robot = load_robot()
    family = make_family("scripted")
    policy = family.single(family.initial())
    report = {
        "policy": "scripted (ScriptedParams defaults)",
        "human": "real_player",
        "balls_per_server_condition": args.balls,
        "env_episodes": args.env_episodes,
        "loadavg_before": os.getloadavg(),
        "conditions": {},
    }
    if "env" not in args.skip:
        report["conditions"]["env (kinematic, URDF robot)"] = env_condition(robot, args.env_episodes, args.seed)
        if args.old_robot:
            old = load_robot(args.old_robot)
            report["conditions"]["env (kinematic, previous JSON robot)"] = env_condition(
                old, args.env_episodes, args.seed
            )
    for physics in ("kinematic", "mujoco"):
        if physics not in args.skip:
            name = f"loop vs sim-server --physics {physics}"
            try:
                report["conditions"][name] = server_condition(policy, robot, physics, args.balls, args.seed)
            except (RuntimeError, ValueError, TimeoutError) as err:  # recorded, not hidden
                report.setdefault("failed_conditions", {})[name] = repr(err)
    report["loadavg_after"] = os.getloadavg()
    try:
        import robot_rt.learning.neural_policy  # noqa: F401

        report["neural_policy"] = "available (not run by this script version)"
    except ImportError:
        report["neural_policy"] = "robot_rt.learning.neural_policy not on main yet: not measured"
    from robot_rt._io import atomic_write_json

    atomic_write_json(args.out, report)
    print(markdown(report))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
