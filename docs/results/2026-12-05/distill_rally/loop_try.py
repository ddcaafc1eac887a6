"""The distilled neural policy, the shot policy and the loop-tuned scripted parameters through the real-time loop
against the 'real_player' human model (tools/loop_gap_ablation.py's 'base' condition: the kinematic sim-server, a stop
recovered at once for diagnosis), 30 rallies each, the same seeds.

    python docs/results/2026-12-05/distill_rally/loop_try.py distilled|shot|tune2 30
"""

import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(root / "tools"))
from loop_gap_ablation import run_condition  # noqa: E402

from robot_rt.robot import load_robot  # noqa: E402


def factory(which: str):
    if which == "shot":
        from robot_rt.envs.shot_model import rally_shot_policy

        return lambda: rally_shot_policy(1)
    if which == "distilled":
        from robot_rt.learning.distill import load_distilled

        return lambda: load_distilled(Path(__file__).with_name("policy.pt"), 1)
    from robot_rt.envs.scripted import BatchedScriptedPolicy, ScriptedParams

    tuned = json.loads((root / "docs/results/2026-12-04/loop_tuned/tune_loop2.json").read_text())["mean"]
    return lambda: BatchedScriptedPolicy(1, params=ScriptedParams.from_vector(tuned))


if __name__ == "__main__":
    which, balls = sys.argv[1], int(sys.argv[2])
    c = run_condition(factory(which), "base", load_robot(), balls, 0)
    print(
        f"{which}: return rate {c['return_rate']:.2f} {c['return_rate_ci95']}, mean rally {c['mean_rally_length']:.2f} "
        f"{c['mean_rally_length_ci95']}, {c['outcomes']}, {c['safety_events']}, recoveries {c['recoveries']}, "
        f"{c['wall_s']:.0f} s",
        flush=True,
    )
