"""One deploy of the shot policy (UKF tracker, the loop shot model) against the real player, printing what the loop
run's counters say about timing: the adapter's early calls and catch-up steps, the loop's telemetry, the server's
clock shifts and the paddle's nearest approach to each incoming ball. Diagnosis only (a stop is recovered at once).

    python docs/results/2026-12-05/adapter_phase/phase_probe.py N SEED
"""

import json
import sys

import numpy as np

from robot_rt.bridge.deploy import deploy
from robot_rt.envs.shot_model import rally_shot_policy

if __name__ == "__main__":
    n, seed = int(sys.argv[1]), int(sys.argv[2])
    policy = rally_shot_policy(1, tracker="ukf", variant="loop")
    r = deploy(policy, human="real_player", n_balls=n, seed=seed, timeout_s=120 + 30 * n, recover=lambda reasons: True)
    s = r.summary
    print(f"mean rally {np.mean(r.rally_lengths):.2f}, return rate {r.return_rate:.2f}, outcomes {s.get('outcomes')}")
    print(f"clock_shifts {s.get('clock_shifts')}, steps {s.get('steps')}, workspace_exits {s.get('workspace_exits')}")
    print("adapter", json.dumps(r.adapter))
    print("loop counters", json.dumps(r.telemetry["counters"]))
    near = [d for d in r.min_paddle_distance_m if d is not None]
    print(
        "paddle-ball nearest approach, quantiles 0.1/0.5/0.8/0.9/0.95:", np.quantile(near, [0.1, 0.5, 0.8, 0.9, 0.95])
    )
