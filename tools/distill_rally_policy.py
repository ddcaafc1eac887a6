"""Distils the shot policy (the best scripted rally policy) into a neural policy by DAgger
(robot_rt.learning.distill).

    python tools/distill_rally_policy.py --out runs/distill_rally
    python examples/evaluate_rally.py --policy runs/distill_rally/policy.pt --policy scripted-rally-shot

Each round plays 256 environments for 15 s (serves from seed + 10^8 + 10^6 r on, none of the rally evaluations'
serves), fits the MLP for
`--train-steps` Adam steps on everything so far, writes OUT/policy.pt (the EMA of its iterates) and OUT/log.json,
and plays `--eval-episodes` serves of seed 5 (the tuning serves, not the rally evaluation's 0-2) to report the mean
rally. About 6-7 minutes on 2 vCPUs with the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from robot_rt.envs.core import WorldConfig
from robot_rt.envs.shot_model import check_in_exponent, rally_shot_policy
from robot_rt.envs.vector import TableTennisVectorEnv
from robot_rt.learning.distill import DistilledEnvPolicy, dagger_distill
from robot_rt.learning.rollout import episode_summary, play_episodes
from robot_rt.sim.rally import HUMAN_CHOICES, resolve_human


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--num-envs", type=int, default=256)
    ap.add_argument("--steps-per-round", type=int, default=1500, help="policy steps per round (100 Hz)")
    ap.add_argument("--betas", default="0.5,0.3,0.1,0,0", help="the expert's share of the actions, per DAgger round")
    ap.add_argument("--train-steps", type=int, default=8000, help="Adam steps per round")
    ap.add_argument("--eval-episodes", type=int, default=128, help="serves of seed 5 played after each round (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument(
        "--tracker", default="fit", choices=("fit", "ukf"), help="ball tracker of the expert's plans and the features"
    )
    ap.add_argument(
        "--human",
        default="default",
        help="the human the rounds (and the evaluations) play against: 'default', 'real_player' or a "
        "HumanBehaviorModel JSON file (e.g. one an i-S2R run learned from the real player's ball tracks)",
    )
    ap.add_argument(
        "--loop-model",
        action="store_true",
        help="play with the env's robot on the real-time loop's trajectory (robot_rt.bridge.loop_model), for a policy "
        "that is to run through the loop",
    )
    ap.add_argument(
        "--expert-variant", default="env", choices=("env", "loop"), help="the expert's shot model (shipped_shot_model)"
    )
    ap.add_argument(
        "--expert-in-exponent",
        type=float,
        default=1.0,
        help="the exponent of P(in) in the expert's shot value (robot_rt.envs.shot_model; default 1)",
    )
    ap.add_argument(
        "--serve-delay",
        type=float,
        default=0.0,
        help="seconds from an episode's start to its serve (WorldConfig.serve_delay_s; the loop serves 0.8 s after "
        "a rally ends); the robot moves meanwhile",
    )
    ap.add_argument("--serve-delay-jitter", type=float, default=0.0, help="+ U(0, this) s per episode")
    ap.add_argument(
        "--keep-robot-pose",
        action="store_true",
        help="an episode starts with the robot where the last one left it (WorldConfig.keep_robot_pose), as the "
        "loop's rallies do; the loop model's trajectory then goes on across episodes",
    )
    ap.add_argument(
        "--eval-as-loop",
        type=float,
        default=0.0,
        help="with --loop-model: also play each round's policy rally after rally for this many seconds in 32 "
        "environments against --human (robot_rt.bridge.loop_model.play_as_the_loop, the loop's 0.8 s serve "
        "interval; it predicts the loop's figure, the episodic evaluation does not): eval_loop_rally_mean",
    )
    args = ap.parse_args(argv)
    if args.eval_as_loop and not args.loop_model:
        ap.error("--eval-as-loop: needs --loop-model")
    try:
        check_in_exponent(args.expert_in_exponent, "--expert-in-exponent")
    except ValueError as exc:
        ap.error(str(exc))
    env_config = WorldConfig(
        serve_delay_s=args.serve_delay,
        serve_delay_jitter_s=args.serve_delay_jitter,
        keep_robot_pose=args.keep_robot_pose,
    )
    torch.set_num_threads(args.torch_threads)
    betas = tuple(float(b) for b in args.betas.split(",") if b)
    human = resolve_human(args.human if args.human in HUMAN_CHOICES else Path(args.human))
    loop_model = {}
    if args.loop_model:
        from robot_rt.bridge.loop_model import loop_model_setup

        loop_model = loop_model_setup(num_envs=args.num_envs)

    def evaluate(policy: DistilledEnvPolicy, _round: int) -> dict:
        figures = {}
        n = args.eval_episodes
        if n > 0:
            env = TableTennisVectorEnv(
                n, human=human, robot=loop_model.get("env_robot"), config=env_config, max_episode_steps=6000
            )
            try:
                player = DistilledEnvPolicy(policy.model, n, tracker=args.tracker)
                if args.loop_model:
                    player = loop_model["wrap_policy"](player, n)
                episodes = play_episodes(env, player, range(5 * 10**6, 5 * 10**6 + n))
            finally:
                env.close()
            summary = episode_summary(episodes)
            figures = {
                "eval_rally_mean": float(summary["rally_mean"]),
                "eval_first_ball_return_rate": float(summary["first_ball_return_rate"]),
                "eval_rally_median": float(np.median([e["rally_length"] for e in episodes])),
            }
        if args.eval_as_loop > 0:
            from robot_rt.bridge.loop_model import play_as_the_loop

            steps = max(1, int(round(args.eval_as_loop / env_config.step_s)))
            rallies = play_as_the_loop(
                DistilledEnvPolicy(policy.model, 32, tracker=args.tracker), 32, steps, human=human, seed=5 * 10**6
            )["rally_lengths"]
            figures["eval_loop_rally_mean"] = float(np.mean(rallies)) if rallies else float("nan")
        return figures

    def expert(num_envs: int):
        return rally_shot_policy(
            num_envs, tracker=args.tracker, variant=args.expert_variant, shot_in_exponent=args.expert_in_exponent
        )

    expert.__name__ = "rally_shot_policy" + ("" if args.tracker == "fit" else "_ukf")
    expert.__name__ += "" if args.expert_variant == "env" else "_loop"
    expert.__name__ += "" if args.expert_in_exponent == 1.0 else f"_k{args.expert_in_exponent:g}"
    return dagger_distill(
        expert,
        args.out,
        num_envs=args.num_envs,
        steps_per_round=args.steps_per_round,
        betas=betas,
        train_steps=args.train_steps,
        seed=args.seed,
        evaluate=evaluate if args.eval_episodes > 0 or args.eval_as_loop > 0 else None,
        log=lambda line: print(line, flush=True),
        tracker=args.tracker,
        human=human,
        env_config=env_config,
        **loop_model,
    )


if __name__ == "__main__":
    main()
