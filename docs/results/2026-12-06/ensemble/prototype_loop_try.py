"""The script that played the ensemble's seeds 1-4 through the loop (prototype_loop_try.jsonl), before
`robot_rt.learning.distill.PolicyEnsemble` existed: the members' actions averaged in NumPy, played by the same
harness as ../../2026-12-05/distill_loop/loop_try.py. Its actions equal PolicyEnsemble's to float32 rounding
(README.md); seeds 5-8 ran the library's ensemble file (policy.pt) through distill_loop/loop_try.py.

    python docs/results/2026-12-06/ensemble/prototype_loop_try.py N SEED OUT.jsonl MEMBER.pt [MEMBER.pt ...]
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

root = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(root / "tools"))
from loop_gap_ablation import run_condition  # noqa: E402

from robot_rt.learning.distill import DistilledEnvPolicy  # noqa: E402
from robot_rt.learning.gcbc import GCBCPolicy  # noqa: E402
from robot_rt.robot import load_robot  # noqa: E402


class MeanOfNetworks(torch.nn.Module):
    def __init__(self, models):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.goal_dim, self.feat_dim = models[0].goal_dim, models[0].feat_dim

    @torch.no_grad()
    def act(self, features, goals):
        return np.mean([m.act(features, goals) for m in self.models], axis=0).astype(np.float32)


def make(paths):
    models = [GCBCPolicy.from_state(torch.load(p, weights_only=True)["model"]) for p in paths]
    return DistilledEnvPolicy(MeanOfNetworks(models), 1, tracker="ukf")


if __name__ == "__main__":
    balls, seed, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    paths = sys.argv[4:]
    c = run_condition(lambda: make(paths), "base", load_robot(), balls, seed)
    print(
        f"ensemble {len(paths)} (seed {seed}): mean rally {c['mean_rally_length']:.2f} {c['mean_rally_length_ci95']}, "
        f"{c['outcomes']}, {c['safety_events']}, recoveries {c['recoveries']}, {c['wall_s']:.0f} s",
        flush=True,
    )
    with open(out, "a") as f:
        f.write(json.dumps({"policy": "ensemble:" + ",".join(paths), "seed": seed, "balls": balls, **c}) + "\n")
