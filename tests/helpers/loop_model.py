"""The real-time loop's trajectory model (robot_rt.bridge.loop_model) under observation, for tests of code that wraps
a policy in it."""

from __future__ import annotations

import numpy as np

from robot_rt.bridge.loop_model import LoopTrajectoryPolicy
from robot_rt.envs.vector import TableTennisVectorEnv


def reset_checked_loop_model(monkeypatch, num_envs: int):
    """(a LoopTrajectoryPolicy subclass, `seen`): `TableTennisVectorEnv.step` is patched to record the environments
    each step ended (`seen['ended']`); every `reset(mask)` of the subclass asserts that the mask is exactly those, and
    `seen` counts its calls and masked resets."""
    seen = {"ended": np.zeros(num_envs, bool), "calls": 0, "resets": 0}
    step = TableTennisVectorEnv.step

    def recording_step(self, actions):
        out = step(self, actions)
        seen["ended"] = out[2] | out[3]
        return out

    monkeypatch.setattr(TableTennisVectorEnv, "step", recording_step)

    class ResetChecked(LoopTrajectoryPolicy):
        def __call__(self, obs):
            seen["calls"] += 1
            return super().__call__(obs)

        def reset(self, mask=None):
            if mask is not None:
                np.testing.assert_array_equal(mask, seen["ended"])
                seen["resets"] += 1
            super().reset(mask)

    return ResetChecked, seen
