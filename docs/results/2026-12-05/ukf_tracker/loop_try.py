"""The loop-tuned scripted parameters and the shot policy through the real-time loop against the 'real_player' human
model, each with the constant-acceleration fit tracker and with the UKF tracker (tools/loop_gap_ablation.py's 'base'
condition: the kinematic sim-server, a stop recovered at once for diagnosis), N rallies each, the same seeds.

    python docs/results/2026-12-05/ukf_tracker/loop_try.py tune2|tune2-ukf|shot|shot-ukf|distilled-ukf 30 [SEED]

'distilled-ukf' is the neural policy distilled from the UKF shot policy (../distill_rally_ukf/policy.pt).

SEED (default 0) seeds the rallies (tools/loop_gap_ablation.py run_condition).
"""

import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(root / "tools"))
from loop_gap_ablation import run_condition  # noqa: E402

from robot_rt.robot import load_robot  # noqa: E402


def factory(which: str):
    tracker = "ukf" if which.endswith("-ukf") else "fit"
    if which == "distilled-ukf":
        from robot_rt.learning.distill import load_distilled

        return lambda: load_distilled(Path(__file__).parents[1] / "distill_rally_ukf" / "policy.pt", 1)
    if which.startswith("shot"):
        from robot_rt.envs.shot_model import rally_shot_policy

        return lambda: rally_shot_policy(1, tracker=tracker)
    from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams

    tuned = json.loads((root / "docs/results/2026-12-04/loop_tuned/tune_loop2.json").read_text())["mean"]
    return lambda: BatchedScriptedPolicy(1, params=ScriptedParams.from_vector(tuned), tracker=tracker)


if __name__ == "__main__":
    which, balls = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    c = run_condition(factory(which), "base", load_robot(), balls, seed)
    print(
        f"{which} (seed {seed}, {balls} rallies): return rate {c['return_rate']:.2f} {c['return_rate_ci95']}, mean rally {c['mean_rally_length']:.2f} "
        f"{c['mean_rally_length_ci95']}, {c['outcomes']}, {c['safety_events']}, recoveries {c['recoveries']}, "
        f"{c['wall_s']:.0f} s",
        flush=True,
    )
