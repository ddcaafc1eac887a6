"""Learn goal-directed returns with stable-baselines3 SAC + HER, as a user would.

    pip install -e '.[rl]'                      # stable-baselines3
    python examples/sb3_sac_her_goal.py --minutes 9 --out runs/sb3_sac_her

Two levels of action (``--level``):

* ``aim`` (the default): robot_rt/TableTennisAimGoal-v0 (`robot_rt.envs.aim`), one decision per ball. The scripted
  controller tracks the ball and swings; the agent chooses, once per ball, where that swing aims (an offset of up
  to 0.5 m from the goal). Learns in minutes here: 56 % -> 70 % of held-out goals within 30 cm in a 4-minute screen
  (docs/learning.md).
* ``joint``: robot_rt/TableTennisGoal-v0, joint velocities at the policy rate (``--policy-hz``), as a correction on
  the scripted controller (``--residual-scale``; 0 learns from scratch). Does not learn here in 10 minutes: one
  sparse reward ~110 steps after the decisions that caused it, ~1,000 episodes in 4 minutes (docs/learning.md).

Hindsight relabelling (HerReplayBuffer, 'future' goals) calls the env's vectorised ``compute_reward`` with the
achieved goals of later steps: the env's ``achieved_goal`` is the landing point once a return has landed on the
human's half and the NOT_LANDED sentinel (3, 0) before, and ``compute_reward`` never rewards a return that has not
landed, so relabelled rewards are correct (robot_rt.envs.goals). At the aim level an episode is one step, and every
relabelled goal is that episode's own landing point.

Learning aids, all documented options of the library (see examples/sb3_ppo_table_tennis.py and docs/learning.md):
the native batched env through `robot_rt.envs.sb3.SB3VecEnv`, `ResidualScriptedVector`,
`BallStateObservationVector` (joint level) and VecNormalize on the observation key.

The deterministic policy is evaluated before and after training on the same held-out (serve, goal) pairs, and so is
the zero action (the scripted controller alone, at the aim level and with a residual): the landing rate (returns on
the human's half) and the success rate within 30 cm and 20 cm of the goal, each with a Wilson 95 % interval, and
the paired changes. Results go to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from robot_rt.learning.stats import bootstrap_ci, wilson_interval

# per-level defaults of the options left unset (the aim level's from a 4-minute screen, docs/learning.md)
LEVEL_DEFAULTS = {
    "joint": {
        "n_envs": 16,
        "gradient_steps": 2,
        "learning_starts": 2000,
        "learning_rate": 3e-4,
        "residual_scale": 0.2,
        "policy_hz": 100.0,
    },
    "aim": {"n_envs": 128, "gradient_steps": 32, "learning_starts": 1024, "learning_rate": 1e-3},
}


def make_env(num_envs: int, residual_scale: float, ball_state: bool, policy_hz: float = 100.0, level: str = "joint"):
    if level == "aim":
        # one decision per ball: the aim of the scripted hitter (robot_rt.envs.aim, robot_rt/TableTennisAimGoal-v0)
        from robot_rt.envs.aim import TableTennisAimGoalVectorEnv

        return TableTennisAimGoalVectorEnv(num_envs)
    from robot_rt.envs.core import WorldConfig
    from robot_rt.envs.vector import TableTennisGoalVectorEnv
    from robot_rt.envs.wrappers import BallStateObservationVector, ResidualScriptedVector

    # 3 s of play per episode whatever the policy rate (300 steps at the default 100 Hz)
    steps = int(round(3.0 * policy_hz))
    env = TableTennisGoalVectorEnv(num_envs, config=WorldConfig(policy_hz=policy_hz), max_episode_steps=steps)
    if residual_scale > 0:
        env = ResidualScriptedVector(env, residual_scale=residual_scale)
    if ball_state:
        env = BallStateObservationVector(env)
    return env


def wrap_sb3(env):
    from stable_baselines3.common.vec_env import VecMonitor

    from robot_rt.envs.sb3 import SB3VecEnv

    return VecMonitor(SB3VecEnv(env))


def evaluate(model, train_env, args, episodes: int, seed: int = 777) -> dict:
    """The deterministic policy on `episodes` fixed (serve, goal) pairs, one episode per env."""
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(
        wrap_sb3(make_env(episodes, args.residual_scale, not args.no_ball_state, args.policy_hz, args.level)),
        training=False,
        norm_reward=False,
        norm_obs_keys=["observation"],
    )
    venv.obs_rms = train_env.obs_rms
    venv.seed(seed)
    obs = venv.reset()
    active = np.ones(episodes, dtype=bool)
    landed = np.zeros(episodes, dtype=bool)
    s30 = np.zeros(episodes, dtype=bool)
    s20 = np.zeros(episodes, dtype=bool)
    while active.any():
        action, _ = model.predict(obs, deterministic=True)
        obs, _, done, infos = venv.step(action)
        for i in np.nonzero(done & active)[0]:
            landed[i] = bool(infos[i]["has_landed"])
            s30[i] = bool(infos[i]["success_30cm"])
            s20[i] = bool(infos[i]["success_20cm"])
            active[i] = False
    return {
        "episodes": episodes,
        "landed_rate": float(landed.mean()),
        "landed_rate_ci95": list(wilson_interval(int(landed.sum()), episodes)),
        "success_30cm": float(s30.mean()),
        "success_30cm_ci95": list(wilson_interval(int(s30.sum()), episodes)),
        "success_20cm": float(s20.mean()),
        "success_20cm_ci95": list(wilson_interval(int(s20.sum()), episodes)),
        # per episode, in (serve, goal) order: before and after are paired on the same pairs
        "landed_per_episode": landed.astype(int).tolist(),
        "success_30cm_per_episode": s30.astype(int).tolist(),
        "success_20cm_per_episode": s20.astype(int).tolist(),
    }


class _ZeroPolicy:
    """`predict` of the all-zero action (the reference the learned policy is compared with)."""

    def __init__(self, action_space):
        self.shape = action_space.shape

    def predict(self, obs, deterministic=True):
        return np.zeros((len(obs["desired_goal"]),) + self.shape, dtype=np.float32), None


def _rates(result: dict) -> dict:
    return {k: result[k] for k in ("landed_rate", "success_30cm", "success_20cm")}


def paired_change(before: dict, after: dict) -> dict:
    """After minus before on the same (serve, goal) pairs: each rate's change with a 95 % bootstrap interval."""
    out = {}
    for key in ("landed", "success_30cm", "success_20cm"):
        d = np.asarray(after[f"{key}_per_episode"], float) - np.asarray(before[f"{key}_per_episode"], float)
        out[key] = float(d.mean())
        out[f"{key}_ci95"] = bootstrap_ci(d)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=9.0, help="training wall-time budget (default 9)")
    p.add_argument("--timesteps", type=int, default=0, help="train this many env steps instead of --minutes")
    p.add_argument("--n-envs", type=int, default=None, help="default: 16 (joint), 128 (aim)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--gradient-steps",
        type=int,
        default=None,
        help="gradient steps per vector-env step; default: 2 (joint), 32 (aim)",
    )
    p.add_argument("--learning-starts", type=int, default=None, help="default: 2000 (joint), 1024 (aim)")
    p.add_argument("--buffer-size", type=int, default=300_000)
    p.add_argument("--residual-scale", type=float, default=None, help="joint level: 0.2 (default); 0: from scratch")
    p.add_argument("--learning-rate", type=float, default=None, help="default: 3e-4 (joint), 1e-3 (aim)")
    p.add_argument("--ent-coef", default="auto", help="SAC's entropy coefficient: 'auto', 'auto_<init>' or a number")
    p.add_argument(
        "--target-entropy", default="auto", help="'auto' (-action dims) or a number (for ent_coef 'auto...')"
    )
    p.add_argument(
        "--log-std-init",
        type=float,
        default=None,
        help="exploration: generalized state-dependent noise (use_sde) starting at this log std; default: "
        "SAC's own Gaussian noise (its log std an output of the actor, ~0 at the start)",
    )
    p.add_argument(
        "--policy-hz",
        type=float,
        default=None,
        help="joint level: the env's policy rate (WorldConfig.policy_hz, default 100; 1000 / it a whole number): "
        "fewer decisions per serve shorten what the critic must bootstrap over to the one sparse reward at the landing",
    )
    p.add_argument(
        "--level",
        default="aim",
        choices=["aim", "joint"],
        help="'joint': joint velocities at the policy rate (TableTennisGoal-v0, with --residual-scale, --policy-hz); "
        "'aim': one decision per ball, the scripted hitter's aim (TableTennisAimGoal-v0, robot_rt.envs.aim)",
    )
    p.add_argument("--gamma", type=float, default=0.98)
    p.add_argument(
        "--her-strategy", default="future", choices=["future", "final", "episode"], help="HER's goal selection"
    )
    p.add_argument("--no-ball-state", action="store_true", help="joint level: the raw observation only")
    p.add_argument("--eval-episodes", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--out", default="runs/sb3_sac_her")
    args = p.parse_args(argv)
    if args.level == "aim":
        for name in ("residual_scale", "policy_hz", "no_ball_state"):
            if getattr(args, name) is not None and getattr(args, name) is not False:  # 0.0 == False: not `in`
                p.error(f"--{name.replace('_', '-')}: an option of --level joint, not of --level aim")
    for name, value in LEVEL_DEFAULTS[args.level].items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    from stable_baselines3 import SAC, HerReplayBuffer
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(args.torch_threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = VecNormalize(
        wrap_sb3(make_env(args.n_envs, args.residual_scale, not args.no_ball_state, args.policy_hz, args.level)),
        norm_obs_keys=["observation"],
        norm_reward=False,  # sparse 0/1 goal rewards, recomputed by HER: keep them as they are
    )
    env.seed(args.seed)
    policy_kwargs = {"net_arch": [256, 256]}
    if args.log_std_init is not None:  # gSDE's initial log std (use_sde below)
        policy_kwargs["log_std_init"] = args.log_std_init
    model = SAC(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": 4, "goal_selection_strategy": args.her_strategy},
        buffer_size=args.buffer_size,
        batch_size=args.batch_size,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=args.gradient_steps,
        gamma=args.gamma,
        learning_rate=args.learning_rate,
        ent_coef=args.ent_coef if str(args.ent_coef).startswith("auto") else float(args.ent_coef),
        target_entropy=args.target_entropy if args.target_entropy == "auto" else float(args.target_entropy),
        use_sde=args.log_std_init is not None,
        policy_kwargs=policy_kwargs,
        device="cpu",
        seed=args.seed,
        verbose=0,
    )
    # the zero action: the scripted controller alone at the aim level and with a residual (nothing at all from scratch)
    zero_action = evaluate(_ZeroPolicy(env.action_space), env, args, args.eval_episodes)
    print(f"zero action: {json.dumps(_rates(zero_action))}", flush=True)
    before = evaluate(model, env, args, args.eval_episodes)
    print(f"before: {json.dumps(before)}", flush=True)
    params0 = torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()
    start = time.time()
    curve = []
    chunk = args.n_envs * (500 if args.level == "joint" else 20)  # an aim step is a whole ball (~100 env steps)
    budget = args.timesteps or None
    while True:
        step = chunk if budget is None else min(chunk, budget - model.num_timesteps)
        if step <= 0 or (budget is None and time.time() - start > args.minutes * 60):
            break
        model.learn(step, reset_num_timesteps=False)
        ep = list(model.ep_info_buffer)
        curve.append(
            {
                "timesteps": int(model.num_timesteps),
                "wall_s": time.time() - start,
                "success_rate_recent": float(np.mean(model.ep_success_buffer)) if model.ep_success_buffer else None,
                "episode_return_mean": float(np.mean([e["r"] for e in ep])) if ep else None,
            }
        )
        print(f"{curve[-1]['wall_s']:6.0f} s {model.num_timesteps:8d} steps {curve[-1]}", flush=True)
    train_s = time.time() - start
    param_change = torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach() - params0
    after = evaluate(model, env, args, args.eval_episodes)
    print(f"after ({train_s:.0f} s, {model.num_timesteps} steps): {json.dumps(after)}", flush=True)
    change = paired_change(before, after)
    print(f"after - before, paired on the same (serve, goal) pairs: {json.dumps(change)}", flush=True)
    print(f"after - zero action, paired: {json.dumps(paired_change(zero_action, after))}", flush=True)
    model.save(out / "model.zip")
    results = {
        "example": "sb3_sac_her_goal",
        "args": vars(args),
        "train_wall_s": train_s,
        "timesteps": int(model.num_timesteps),
        "policy_parameter_change_l2": float(param_change.norm()),
        "load_average_1min": os.getloadavg()[0],
        "zero_action": zero_action,
        "before": before,
        "after": after,
        "after_minus_before": change,
        "after_minus_zero_action": paired_change(zero_action, after),
        "curve": curve,
    }
    tmp = out / ".results.json.tmp"  # atomic: a reader never sees a half-written file
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out / "results.json")
    return results


if __name__ == "__main__":
    main()
