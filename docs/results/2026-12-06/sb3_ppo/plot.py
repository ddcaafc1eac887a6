"""Training curves of the stable-baselines3 PPO example runs here (episode return, mean of SB3's last 100 finished
episodes, against env steps), and the first-ball return rate before/after with its paired interval: curves.png."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = {
    "residual, defaults, seed 0": "seed0",
    "residual, defaults, seed 1": "seed1",
    "residual, defaults, seed 2": "seed2",
    "residual, lr 3e-4, seed 0": "seed0_lr3e-4",
    "from scratch, one fixed serve": "scratch_fixed_serve",
}


def main() -> None:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for label, name in RUNS.items():
        r = json.loads((HERE / name / "results.json").read_text())
        steps = [c["timesteps"] / 1e6 for c in r["curve"]]
        ret = [c["episode_return_mean"] for c in r["curve"]]
        ax.plot(steps, ret, label=label)
        b, a = r["before"]["first_ball_return_rate"], r["after"]["first_ball_return_rate"]
        bx.plot([0, 1], [100 * b, 100 * a], marker="o", label=label)
    ax.set_xlabel("env steps (millions), 9 minutes")
    ax.set_ylabel("episode return (last 100 episodes)")
    ax.legend(fontsize=8)
    bx.set_xticks([0, 1], ["before", "after 9 min"])
    bx.set_ylabel("first-ball return rate, 1,024 serves (%)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "curves.png", dpi=100)


if __name__ == "__main__":
    main()
