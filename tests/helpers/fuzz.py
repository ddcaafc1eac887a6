"""Settings and totals shared by the stateful fuzz harnesses of the control loop (tests/test_control_stateful*.py).

Environment: FUZZ_EXAMPLES and FUZZ_STEPS size a run; FUZZ_DERANDOMIZE=0 with pytest's --hypothesis-seed=N hunts over
other examples than CI's; FUZZ_TOTALS=FILE appends the harness's totals (one JSON line per module) when it ends."""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, settings


def fuzz_settings(examples: int, steps: int) -> settings:
    """Hypothesis settings of a stateful harness: `examples` x `steps` unless FUZZ_EXAMPLES / FUZZ_STEPS say
    otherwise; derandomized (CI's examples) unless FUZZ_DERANDOMIZE=0; no deadline, database or health checks."""
    return settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", str(examples))),
        stateful_step_count=int(os.environ.get("FUZZ_STEPS", str(steps))),
        deadline=None,
        derandomize=os.environ.get("FUZZ_DERANDOMIZE", "1") != "0",
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def write_fuzz_totals(totals: dict) -> None:
    """Appends `totals` as one JSON line to FUZZ_TOTALS, where that is set."""
    path = os.environ.get("FUZZ_TOTALS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(totals) + "\n")
