"""Which part of the real-time loop costs the scripted policy its returns: the same policy against the 'real_player'
human model through the loop and the kinematic sim-server, once as shipped and once with one element idealised.

Conditions (each `--balls` rallies, the same seeds):
    base            as shipped (the gap report's 'loop vs sim-server --physics kinematic')
    ideal_servo     the server's servo lag 1 ms instead of 20 ms, no command delay
    no_soft_margin  the loop's soft joint box equal to the hard limits
    loose_jerk      the loop's safety filter with 20x the URDF jerk limits (diagnosis only: the real robot's limits
                    are the URDF's; the server, the adapter and the policy keep the shipped description)
    measured_state  the adapter shows the policy the measured joint state instead of the commanded one
    jerk_filtered   the policy's commands shaped to the robot's jerk limits first (robot_rt.envs.jerk_limit)
    velocity_tracking  the loop follows the commanded velocity (LoopConfig.velocity_tracking; the adapter with
                    velocity_tracking=True, lead_s VELOCITY_TRACKING_LEAD_S, the policy sees the loop's commanded state)

The env rows: the same policy in the kinematic env against the same human, with and without the jerk filter, and with
the env's robot on the loop's own trajectory (robot_rt.bridge.loop_model: does the env then predict the loop?).
Then, offline and deterministic, how closely the loop's safety filter (its OTG, otg.hpp, through
`_control.SafetyFilter`) follows one joint's reference (arm_j1: +3 rad/s, then -2 rad/s, then rest) when the reference
is the env's command (velocity steps), the jerk-filtered command at 1.0 / 0.7 / 0.5 of the limits (100 Hz targets,
interpolated as the loop does), and a jerk-limited reference sampled at 1 kHz within 0.9 of the limits.

Diagnosis only: a stop is recovered at once (recorded in `recoveries` and `stop_reasons`), so a condition that trips
the loop's reflexes still yields its return rate.

    .venv/bin/python tools/loop_gap_ablation.py --balls 30 --out docs/results/2026-12-04/loop_gap_ablation.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mujoco_gap import _rates, env_condition  # noqa: E402

CONDITIONS = (
    "base",
    "ideal_servo",
    "no_soft_margin",
    "loose_jerk",
    "measured_state",
    "jerk_filtered",
    "velocity_tracking",
)
# the adapter's lead with velocity tracking: the integrated target runs ahead of the jerk-limited trajectory by up to
# ~0.4 rad in a swing, and a lead that clips it would cut the ramp's velocity (0.05 s: 0.29 return rate in the
# loop-model env, 0.15 s: 0.63, 0.3 s and 1.0 s: 0.71 with the tune_loop2 parameters)
VELOCITY_TRACKING_LEAD_S = 0.3


def condition_kwargs(name: str, robot) -> dict:
    if name == "base":
        return {}
    if name == "ideal_servo":
        return {"server_args": ["--tracking-time-constant", "0.001", "--command-delay", "0"]}
    if name == "no_soft_margin":
        return {"loop_kwargs": {"soft_margin": 0.0}}
    if name == "loose_jerk":
        joints = tuple(dataclasses.replace(j, jerk_limit=20.0 * j.jerk_limit) for j in robot.joints)
        return {"robot": dataclasses.replace(robot, joints=joints, source="")}
    if name == "measured_state":
        return {"adapter_kwargs": {"state": "measured"}}
    if name == "jerk_filtered":
        return {}  # the policy is wrapped (run_condition)
    if name == "velocity_tracking":
        return {
            "loop_kwargs": {"velocity_tracking": True},
            "adapter_kwargs": {"velocity_tracking": True, "lead_s": VELOCITY_TRACKING_LEAD_S},
        }
    raise ValueError(f"condition: expected one of {CONDITIONS}, got {name!r}")


def run_condition(policy_factory, name: str, robot, balls: int, seed: int, **extra) -> dict:
    from robot_rt.bridge.deploy import deploy
    from robot_rt.envs.jerk_limit import JerkLimitedPolicy

    t0 = time.monotonic()
    policy = policy_factory()
    if name == "jerk_filtered":
        policy = JerkLimitedPolicy(policy, robot, 1)
    r = deploy(
        policy,
        human="real_player",
        n_balls=balls,
        seed=seed,
        timeout_s=120.0 + 30.0 * balls,
        recover=lambda reasons: True,  # diagnosis: see the module docstring
        **{**condition_kwargs(name, robot), **extra},
    )
    out = _rates(r.rally_lengths, r.outcomes)
    out.update(
        {
            "hits": r.hits,
            "rally_lengths": [int(x) for x in r.rally_lengths],
            "safety_events": {k: v for k, v in r.safety_events.items() if v},
            "recoveries": r.recoveries,
            "adapter": {k: r.adapter[k] for k in ("workspace_holds", "path_holds", "path_brakes") if k in r.adapter},
            "stop_reasons": sorted(set(r.stop_reasons_seen) - {"shutdown"}),
            "wall_s": time.monotonic() - t0,
            "loadavg_after": os.getloadavg()[0],
        }
    )
    return out


def otg_tracking(joint: int = 2, steps: int = 80) -> dict:
    """Max |position - reference| (rad) of the loop's safety filter following one joint's reference (docstring)."""
    import numpy as np

    from robot_rt import _control
    from robot_rt.control.loop import robot_model
    from robot_rt.envs.jerk_limit import JerkLimiter
    from robot_rt.robot import load_robot

    robot = load_robot()
    dt, ticks_per_step = 0.01, 10
    request = np.zeros((steps, robot.dof))
    request[10:35, joint], request[35:55, joint] = 3.0, -2.0

    def follow(positions, velocities) -> float:
        f = _control.SafetyFilter(robot_model(robot), dt / ticks_per_step, robot.home)
        states, _, _ = f.run(positions, target_velocity=velocities)
        return float(np.abs(states[:, joint, 0] - positions[:, joint]).max())

    def interpolated(cmd_v):  # the adapter's integrated targets, interpolated over each period as the loop does
        target = robot.home + np.cumsum(cmd_v * dt, axis=0)
        start = np.vstack([robot.home, target[:-1]])
        frac = (np.arange(ticks_per_step) + 1.0) / ticks_per_step
        pos = (start[:, None, :] + frac[None, :, None] * (target - start)[:, None, :]).reshape(-1, robot.dof)
        return pos, np.repeat(cmd_v, ticks_per_step, axis=0)

    out = {"joint": robot.joint_names[joint], "env_command_velocity_steps": follow(*interpolated(request))}
    for scale in (1.0, 0.7, 0.5):
        lim = JerkLimiter(robot, 1, dt, scale=scale)
        q, qd, cmd = robot.home.copy(), np.zeros(robot.dof), []
        for k in range(steps):
            qd = lim(q[None], qd[None], request[k][None])[0]
            q = q + qd * dt
            cmd.append(qd)
        out[f"jerk_filtered_{scale}_100hz"] = follow(*interpolated(np.array(cmd)))
    lim = JerkLimiter(robot, 1, dt / ticks_per_step, scale=0.9)
    q, qd, pos, vel = robot.home.copy(), np.zeros(robot.dof), [], []
    for k in range(steps * ticks_per_step):
        qd = lim(q[None], qd[None], request[k // ticks_per_step][None])[0]
        q = q + qd * dt / ticks_per_step
        pos.append(q)
        vel.append(qd)
    out["jerk_limited_0.9_1khz"] = follow(np.array(pos), np.array(vel))
    return out


def main() -> None:
    from robot_rt._io import atomic_write_json
    from robot_rt.learning.is2r import make_family
    from robot_rt.robot import load_robot

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--balls", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions", nargs="*", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--out", required=True)
    parser.add_argument("--env-episodes", type=int, default=256, help="episodes of the env rows (the kinematic env)")
    parser.add_argument("--append", action="store_true", help="keep the other conditions of an existing --out")
    parser.add_argument("--log-dir", default=None, help="write each condition's run log (CONDITION.rrlog) here")
    parser.add_argument(
        "--params",
        default=None,
        help="ScriptedParams: a preset name or a tools/tune_scripted_rally.py result JSON (its 'mean'); default: defaults",
    )
    args = parser.parse_args()
    robot = load_robot()
    family = make_family("scripted")
    theta, label = family.initial(), "scripted (ScriptedParams defaults)"
    if args.params is not None:
        from robot_rt.envs.scripted import SCRIPTED_PRESETS, ScriptedParams

        if args.params in SCRIPTED_PRESETS:
            theta = ScriptedParams.preset(args.params).to_vector()
        else:
            import json

            theta = ScriptedParams.from_vector(json.loads(Path(args.params).read_text())["mean"]).to_vector()
        label = f"scripted ({args.params})"
    report = {"policy": label, "human": "real_player", "balls": args.balls}
    report["loadavg_before"] = os.getloadavg()
    report["conditions"] = {}
    if args.append and Path(args.out).is_file():
        import json

        report["conditions"] = json.loads(Path(args.out).read_text())["conditions"]
    for name in args.conditions:
        logs = {}
        if args.log_dir is not None:
            Path(args.log_dir).mkdir(parents=True, exist_ok=True)
            logs["log_path"] = Path(args.log_dir) / f"{name}.rrlog"
        c = run_condition(lambda: family.single(theta), name, robot, args.balls, args.seed, **logs)
        report["conditions"][name] = c
        print(
            f"{name:15s} return rate {c['return_rate']:.2f} {c['return_rate_ci95']}  mean rally "
            f"{c['mean_rally_length']:.2f} {c['mean_rally_length_ci95']}  {c['outcomes']}  "
            f"{c['safety_events']}  {c['wall_s']:.0f} s",
            flush=True,
        )
        atomic_write_json(args.out, report)
    report["env"] = {
        "scripted": env_condition(robot, args.env_episodes, args.seed, params=theta),
        "scripted, jerk_filtered": env_condition(robot, args.env_episodes, args.seed, jerk_limit=True, params=theta),
        "scripted, loop_model": env_condition(robot, args.env_episodes, args.seed, loop_model=True, params=theta),
        "scripted, loop_model, velocity_tracking": env_condition(
            robot, args.env_episodes, args.seed, loop_model=True, velocity_tracking=True, params=theta
        ),
    }
    for name, c in report["env"].items():
        print(
            f"env {name}: return rate {c['return_rate']:.2f}, mean rally {c['mean_rally_length']:.2f}, {c['outcomes']}"
        )
    report["otg_tracking_max_error_rad"] = otg_tracking()
    print("loop safety filter following one joint, max |p - reference| (rad):", report["otg_tracking_max_error_rad"])
    atomic_write_json(args.out, report)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
