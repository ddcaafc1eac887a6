"""A rally against the default human model, rendered to an animated GIF from render_mode='rgb_array'.

    python examples/render_rally.py --out docs/results/2026-12-04/rally/rally.gif
    python examples/render_rally.py --policy runs/bgs/policy.pt --out rally.gif

Plays `--search` serves with the policy (batched, no rendering), picks the one with the longest rally (ties: the
first), then replays that serve in a one-environment `TableTennisVectorEnv(render_mode='rgb_array')` with the same
seed and writes every `--stride`-th frame (top view and side view, `robot_rt.envs.render`) until the rally ends
or `--max-frames` frames are written. The replay is the same episode: the env and the policy are deterministic
given the serve's seed, and the script checks that the replay's rally length matches the search's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_rally import make_policy  # noqa: E402


def longest_rally(spec: str, seeds: list[int], max_episode_steps: int) -> tuple[int, int]:
    from robot_rt.envs.vector import TableTennisVectorEnv
    from robot_rt.learning.rollout import play_episodes

    env = TableTennisVectorEnv(len(seeds), max_episode_steps=max_episode_steps)
    try:
        episodes = play_episodes(env, make_policy(spec, len(seeds)), seeds)
    finally:
        env.close()
    rallies = [e["rally_length"] for e in episodes]
    best = int(np.argmax(rallies))
    return seeds[best], rallies[best]


def render(spec: str, seed: int, out: Path, max_episode_steps: int, stride: int, max_frames: int, fps: int) -> dict:
    from robot_rt.envs.render import EpisodeVideoWriter
    from robot_rt.envs.vector import TableTennisVectorEnv

    env = TableTennisVectorEnv(1, render_mode="rgb_array", max_episode_steps=max_episode_steps)
    policy = make_policy(spec, 1)
    writer = EpisodeVideoWriter(out, fps=fps)
    try:
        obs, _ = env.reset(seed=[seed])
        policy.reset()
        step = 0
        rally = 0
        while True:
            if step % stride == 0 and len(writer.frames) < max_frames:
                writer.add(env.render()[0])
            obs, _, terminated, truncated, info = env.step(np.asarray(policy(obs), dtype=np.float64))
            step += 1
            if terminated[0] or truncated[0]:
                rally = int(np.asarray(info["rally_length"])[0])
                writer.add(env.render()[0])
                break
        path = writer.close()
    finally:
        env.close()
    return {"path": str(path), "frames": len(writer.frames), "steps": step, "rally_length": rally}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="scripted-rally", help="'scripted', 'scripted-rally' or a policy.pt")
    ap.add_argument("--search", type=int, default=64, help="serves to search for the longest rally")
    ap.add_argument("--seed0", type=int, default=0, help="first serve seed of the search")
    ap.add_argument("--stride", type=int, default=4, help="policy steps per frame (100 Hz steps)")
    ap.add_argument("--max-frames", type=int, default=400)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--max-episode-steps", type=int, default=6000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    for name in ("search", "stride", "max_frames", "fps", "max_episode_steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: expected a positive int")
    seeds = list(range(args.seed0, args.seed0 + args.search))
    seed, rally = longest_rally(args.policy, seeds, args.max_episode_steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = render(args.policy, seed, args.out, args.max_episode_steps, args.stride, args.max_frames, args.fps)
    if result["rally_length"] != rally:
        raise RuntimeError(f"the replay of serve {seed} gave a rally of {result['rally_length']}, the search {rally}")
    print(f"serve {seed}: rally {rally} ({result['steps']} steps), {result['frames']} frames -> {result['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
