"""The shot policy's swing capped at a fraction of what the joints can do (tried, not kept; README.md).

`ReachPolicy` is `BatchedScriptedPolicy` whose contact plan's swing speed is min(the plan's, FRAC x the paddle's
reach along the planned normal at the current configuration). The reach is the largest paddle speed along a
direction that the joints' velocity limits allow: the damped least-norm joint velocities for a unit paddle velocity
along it (position rows of the paddle Jacobian), scaled until one joint is at its limit. `install(frac)` puts it in
place of `robot_rt.envs.scripted.BatchedScriptedPolicy`, so that `collect_shot_data` and `shot_model_policy`
(which import it from that module when called) play it.
"""

from __future__ import annotations

import numpy as np

import robot_rt.envs.scripted as scripted_mod
from robot_rt.envs.scripted import BatchedScriptedPolicy, paddle_jacobian_analytic


def paddle_reach_along(policy, q: np.ndarray, direction: np.ndarray) -> np.ndarray:
    _, _, jp, _ = paddle_jacobian_analytic(policy.robot, q)
    jjt = jp @ np.swapaxes(jp, 1, 2) + 1e-3 * np.eye(3)
    x = np.linalg.solve(jjt, direction[..., None])[..., 0]
    qd_unit = np.einsum("nji,nj->ni", jp, x)
    return 1.0 / np.maximum(np.max(np.abs(qd_unit) / policy.v_max, axis=1), 1e-9)


class ReachPolicy(BatchedScriptedPolicy):
    frac = 1.0

    def __call__(self, observations, goals=None):
        obs = np.atleast_2d(np.asarray(observations, dtype=np.float64))
        self._q_now = obs[:, self.layout["q"]]
        return super().__call__(observations, goals)

    def contact_plan(self, v_in, d_out):
        normal, speed = super().contact_plan(v_in, d_out)
        q = getattr(self, "_q_now", None)
        if q is not None and q.shape[0] == normal.shape[0]:
            speed = np.minimum(speed, self.frac * paddle_reach_along(self, q, normal))
        return normal, speed


def install(frac: float) -> None:
    ReachPolicy.frac = float(frac)
    scripted_mod.BatchedScriptedPolicy = ReachPolicy
