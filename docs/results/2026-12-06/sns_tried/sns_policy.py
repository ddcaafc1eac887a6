import numpy as np

from robot_rt.envs.scripted import BatchedScriptedPolicy


def sns_solve(jac, task, z, lo, hi, damping=1e-3):
    """qd [N,d] with J qd = task kept while joints within [lo, hi]: saturation in the null space."""
    n, m, d = jac.shape
    free = np.ones((n, d))
    fixed = np.zeros((n, d))
    eye = damping * np.eye(m)
    rows = np.arange(n)
    for _ in range(d):
        jw = jac * free[:, None, :]
        base = fixed + free * z
        rhs = task - np.einsum("nij,nj->ni", jac, base)
        x = np.linalg.solve(jw @ np.swapaxes(jw, 1, 2) + eye, rhs[..., None])[..., 0]
        qd = base + np.einsum("nji,nj->ni", jw, x)
        over = np.maximum(qd - hi, lo - qd) * free  # > 0: violated
        worst = over.argmax(axis=1)
        viol = over[rows, worst] > 1e-9
        if not viol.any():
            break
        # fewer than m free joints left cannot hold the task: stop saturating there
        viol &= free.sum(axis=1) > m
        if not viol.any():
            break
        r, j = rows[viol], worst[viol]
        fixed[r, j] = np.clip(qd[r, j], lo[r, j], hi[r, j])
        free[r, j] = 0.0
    return qd


class SNSPolicy(BatchedScriptedPolicy):
    def __init__(self, *a, accel_bounds=True, sns_window_s=0.2, **k):
        super().__init__(*a, **k)
        self.sns_window_s = sns_window_s
        self.accel_bounds = accel_bounds
        self.stats = []

    def __call__(self, observations, goals=None):
        obs = np.asarray(observations, dtype=np.float64)
        self._qd_now = obs[:, self.layout["qd"]]
        return super().__call__(observations, goals)

    def resolved_rate(self, q, target, normal, swing, speed_cap=None):
        jac, task, z = self.task_command(q, target, normal, swing, speed_cap)
        hi = np.broadcast_to(self.v_max, q.shape).copy()
        lo = -hi
        # the brake's caps
        big = np.full_like(q, 1e9)
        braked_hi = self._brake(q, big)
        braked_lo = self._brake(q, -big)
        hi = np.minimum(hi, braked_hi)
        lo = np.maximum(lo, braked_lo)
        if self.accel_bounds:
            a = self.robot.acceleration_limit * self.dt
            hi = np.minimum(hi, self._qd_now + a)
            lo = np.maximum(lo, self._qd_now - a)
            bad = lo > hi
            mid = 0.5 * (lo + hi)
            lo = np.where(bad, mid, lo)
            hi = np.where(bad, mid, hi)
        qd = sns_solve(jac, task, z, lo, hi)
        # the old law (common scale) outside the swing window
        old = self.common_scale_solution(jac, task, z)
        tl = np.nan_to_num(self.plan_t - self.t, nan=9.0)
        win = ((tl < self.sns_window_s) & (tl > -0.05))[:, None]
        qd = np.where(win, qd, old)
        # what is still beyond: one common scale of the task as before (velocity bounds only)
        excess = np.max(np.abs(qd) / self.v_max, axis=1, keepdims=True)
        return qd / np.maximum(excess, 1.0)


class SwingWindowSNS(SNSPolicy):
    """The variant tuned and compared (tune_sns.py, compare_c.py): SNS in the last 0.2 s, acceleration bounds."""

    def __init__(self, *a, **k):
        super().__init__(*a, accel_bounds=True, sns_window_s=0.2, **k)
