"""Mean rally of a policy against the default human model, with 95 % intervals, next to its ceiling.

    python examples/evaluate_rally.py --policy scripted
    python examples/evaluate_rally.py --policy runs/ppo/policy.pt --episodes 512 --seeds 0,1,2

A rally ends when either side misses. The default human model returns at most 95 % of balls, so a robot that never
misses and always places the ball where the human reaches best makes 1 / (1 - 0.95) = 20 returns per rally on
average: the ceiling reported next to the figures. Episodes run with a long cap (`--max-episode-steps`, 60 s by
default) so that long rallies are not cut; a cut rally is counted as it stands ('none' outcome) and reported.

Per seed (a block of `--episodes` serves; seed s plays serves s * 10^6 ...), and pooled: mean rally (percentile
bootstrap 95 %), median, histogram, first-ball return rate (Wilson 95 %), the robot's return rate per ball it
faced, the share of its landed returns the human answered (and the mean rally a robot that never misses would reach
at that placement: 1 / (1 - share)), outcomes. Results go to OUT (JSON, written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

CEILING = 1.0 / (1.0 - 0.95)


def make_policy(spec: str, num_envs: int):
    """'scripted' (BatchedScriptedPolicy, the tuned baseline), 'scripted-rally' (its 'rally' preset, placed for
    the default human model), 'scripted-rally-landing' (that preset steered by the learned landing model,
    robot_rt.envs.landing_model.rally_policy), 'scripted-rally-shot' (that preset aiming where the shot model expects
    the human to answer most often, robot_rt.envs.shot_model.rally_shot_policy), 'scripted-rally-shot-ukf' (the same
    with its contacts planned from the UKF ball tracker and the shot model fitted with it), the path of a shot model
    file (FILE.json from tools/fit_shot_model.py: the scripted policy with the parameters the model was fitted with,
    aiming by it), or the path of an exported RUN/policy.pt (PPO, BGS) or of a distilled policy
    (robot_rt.learning.distill, tools/distill_rally_policy.py)."""
    if spec == "scripted-rally-landing":
        from robot_rt.envs.landing_model import rally_policy

        return rally_policy(num_envs)
    if spec in ("scripted-rally-shot", "scripted-rally-shot-ukf"):
        from robot_rt.envs.shot_model import rally_shot_policy

        return rally_shot_policy(num_envs, tracker="ukf" if spec.endswith("-ukf") else "fit")
    if spec.endswith(".json"):
        from robot_rt.envs.shot_model import shot_model_policy

        return shot_model_policy(num_envs, spec)
    if spec in ("scripted", "scripted-rally"):
        from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams

        return BatchedScriptedPolicy(num_envs, params=ScriptedParams.preset(spec.partition("-")[2] or "default"))
    import torch

    from robot_rt.learning.distill import DISTILLED_FORMATS, distilled_from_state
    from robot_rt.learning.neural_policy import policy_from_state

    # read once (weights_only: no code from the file runs), then built by the format it names
    state = torch.load(spec, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and state.get("format") in DISTILLED_FORMATS:  # robot_rt.learning.distill's
        return distilled_from_state(state, num_envs=num_envs, source=spec)
    return policy_from_state(state, num_envs=num_envs)


def evaluate(spec: str, episodes: int, seeds: list[int], max_episode_steps: int) -> dict:
    from robot_rt.envs.vector import TableTennisVectorEnv
    from robot_rt.learning.rollout import episode_summary, play_episodes

    per_seed, pooled = [], []
    for s in seeds:
        env = TableTennisVectorEnv(episodes, max_episode_steps=max_episode_steps)
        try:
            t0 = time.time()
            eps = play_episodes(env, make_policy(spec, episodes), range(s * 10**6, s * 10**6 + episodes))
            wall = time.time() - t0
        finally:
            env.close()
        pooled += eps
        summary = episode_summary(eps)
        summary.update(seed=s, wall_s=wall, **_rally_shape(eps))
        per_seed.append(summary)
        print(f"{spec} seed {s}: rally {summary['rally_mean']:.2f} {summary['rally_mean_ci95']}", flush=True)
    total = episode_summary(pooled)
    total.update(_rally_shape(pooled))
    means = np.array([p["rally_mean"] for p in per_seed])
    total["seed_means"] = means.tolist()
    total["seed_mean_std"] = float(means.std(ddof=1)) if len(means) > 1 else 0.0
    return {"policy": spec, "pooled": total, "per_seed": per_seed}


def _rally_shape(eps: list[dict]) -> dict:
    rally = np.array([e["rally_length"] for e in eps])
    outcomes = [e["outcome"] for e in eps]
    # a rally of r returns that ended with the human missing ('returned'): r landed, r - 1 answered; ended by the
    # robot (missed/out/limit): r landed, r answered; cut by the cap ('none'): the last return's answer is unknown,
    # it is left out. The answered share is the human's realised return rate.
    landed = int(rally.sum())
    decided = sum(int(r) - (o == "none") for r, o in zip(rally, outcomes) if r > 0)
    answered = sum(int(r) - (o in ("returned", "none")) for r, o in zip(rally, outcomes) if r > 0)
    # balls the robot faced: each landed return, plus the one it missed or put out when the robot ended the rally
    faced = landed + sum(o in ("missed", "out", "limit") for o in outcomes)
    share = answered / decided if decided else None
    return {
        "rally_median": float(np.median(rally)),
        "rally_max": int(rally.max()),
        "rally_histogram": np.bincount(rally).tolist(),
        "human_answered_share": share,
        "robot_return_rate": landed / faced if faced else None,
        # the mean rally of a robot that never misses, at this placement (the human's realised return rate)
        "rally_bound_perfect_robot": (1.0 / (1.0 - share) if share < 1 else float("inf"))
        if share is not None
        else None,
        "cut_by_cap": outcomes.count("none"),
    }


def _fmt(value, spec: str) -> str:
    """`value` formatted, or 'n/a' where it is undefined (None: no return landed, so no share to take)."""
    return "n/a" if value is None else format(value, spec)


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--policy",
        action="append",
        help="'scripted', 'scripted-rally', 'scripted-rally-landing', 'scripted-rally-shot', 'scripted-rally-shot-ukf' or a "
        "policy.pt path "
        "(repeatable)",
    )
    p.add_argument("--episodes", type=int, default=256, help="serves per seed")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--max-episode-steps", type=int, default=6000, help="episode cap (60 s at 100 Hz)")
    p.add_argument("--out", default="runs/evaluate_rally.json")
    p.add_argument("--torch-threads", type=int, default=1, help="0: torch's default (all cores)")
    args = p.parse_args(argv)
    if args.torch_threads:
        import torch

        # one thread: a network of this size on a batch of 256 gains nothing from more, and on a shared machine
        # the extra threads spin and wait
        torch.set_num_threads(args.torch_threads)
    if args.episodes < 1:
        raise ValueError(f"--episodes: expected >= 1, got {args.episodes}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    results = {
        "ceiling_rally_mean": CEILING,
        "target_rally_mean": 15,
        "episodes_per_seed": args.episodes,
        "seeds": seeds,
        "max_episode_steps": args.max_episode_steps,
        "load_average_1min": os.getloadavg()[0],
        "policies": [
            evaluate(spec, args.episodes, seeds, args.max_episode_steps) for spec in args.policy or ["scripted"]
        ],
    }
    for r in results["policies"]:
        t = r["pooled"]
        print(
            f"{r['policy']}: mean rally {t['rally_mean']:.2f} (95% CI {t['rally_mean_ci95'][0]:.2f}-"
            f"{t['rally_mean_ci95'][1]:.2f}), median {t['rally_median']:.0f}, max {t['rally_max']}, seed means "
            f"{[round(m, 2) for m in t['seed_means']]}; ceiling {CEILING:.0f}; first-ball return rate "
            f"{t['first_ball_return_rate']:.2f}; robot return rate {_fmt(t['robot_return_rate'], '.3f')}; human "
            f"answered {_fmt(t['human_answered_share'], '.3f')} (rally bound for a perfect robot "
            f"{_fmt(t['rally_bound_perfect_robot'], '.2f')}); outcomes {t['outcomes']}"
        )
    write_json_atomic(Path(args.out), results)
    return results


if __name__ == "__main__":
    main()
