"""Shot planning: the paddle normal that sends an incoming ball to a landing point, through the env's own laws.

    ball_out = paddle_contact(ball_in, n, u = s n)          (restitution e, Coulomb friction mu, spin: core.py)
    landing(n) = first contact of ball_out's flight          (gravity, drag, Magnus: robot_rt.ballistics)
    find n (unit, 2 degrees of freedom) with landing(n) = target (x, y)

for a ball state at contact and a paddle speed s along its normal. Damped Gauss-Newton on two tangent angles of n,
with a forward-difference Jacobian (three flights per iteration in one batched call) and a step cap; from a normal
within ~20 degrees it converges in 3-4 iterations where the goal is reachable at that paddle speed.

Used by `tools/placement_error_budget.py` to ask which unknown limits the scripted policy's placement (docs/envs.md,
`robot_rt.envs.shot`). The scripted policy itself still aims with its drag-free lob (`lob_directions`) and tuned
offsets: driving its controller with this solver's normal was measured worse (goal env, 256 goals: 27-30 % within
30 cm against 54 %), because the controller's timing and offsets were tuned for the lob plan.
"""

from __future__ import annotations

import numpy as np

from robot_rt.ballistics import BallParams, TableGeometry, simulate_batch

from .core import paddle_contact

__all__ = ["landing_of_shot", "solve_shot_normal", "tangent_basis"]


def tangent_basis(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors [N, 3] orthogonal to the unit vectors `n` [N, 3] and to each other (e1 horizontal when
    n is not vertical)."""
    up = np.array([0.0, 0.0, 1.0])
    e1 = np.cross(up, n)
    small = np.linalg.norm(e1, axis=1) < 1e-6
    e1[small] = np.cross(np.array([0.0, 1.0, 0.0]), n[small])
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(n, e1)
    return e1, e2


def landing_of_shot(
    ball: np.ndarray,
    normal: np.ndarray,
    paddle_speed_mps: np.ndarray,
    *,
    restitution: float,
    friction: float,
    params: BallParams | None = None,
    table: TableGeometry | None = None,
    horizon_s: float = 1.5,
    dt_s: float = 4e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """(first contact point xy [N, 2], ball state after the paddle [N, 9]) of balls `ball` [N, 9] hit by a paddle
    with unit normal `normal` [N, 3] (pointing towards the ball) moving at `paddle_speed_mps` [N] along it. A ball
    that touches nothing within the horizon gets its final xy."""
    params = params or BallParams()
    table = table or TableGeometry()
    n = ball.shape[0]
    out = paddle_contact(
        ball,
        np.zeros((n, 3)),
        normal,
        paddle_speed_mps[:, None] * normal,
        np.ones(n),
        params.radius_m,
        restitution,
        friction,
    )
    sim = simulate_batch(out, horizon_s, dt_s, params, table, max_events=1)
    count = np.asarray(sim.event_count)
    xy = np.where((count > 0)[:, None], np.asarray(sim.event_state)[:, 0, :2], np.asarray(sim.final_state)[:, :2])
    return xy, out


def solve_shot_normal(
    ball: np.ndarray,
    paddle_speed_mps: np.ndarray,
    target_xy: np.ndarray,
    normal0: np.ndarray,
    *,
    restitution: float,
    friction: float,
    params: BallParams | None = None,
    table: TableGeometry | None = None,
    iterations: int = 2,
    max_step_rad: float = 0.15,
    fd_rad: float = 2e-3,
    dt_s: float = 4e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """Paddle normals [N, 3] (unit, towards the ball) that land balls `ball` [N, 9] (their state at contact) at
    `target_xy` [N, 2] when the paddle moves at `paddle_speed_mps` [N] along its normal; `normal0` [N, 3] is the
    starting guess. Returns (normal, landing error xy [N, 2] of the returned normal, measured by one more flight)."""
    ball = np.asarray(ball, dtype=np.float64)
    n_balls = ball.shape[0]
    if ball.ndim != 2 or ball.shape[1] != 9:
        raise ValueError(f"ball: expected shape [N, 9], got {ball.shape}")
    speed = np.broadcast_to(np.asarray(paddle_speed_mps, dtype=np.float64), (n_balls,))
    target = np.asarray(target_xy, dtype=np.float64)
    if target.shape != (n_balls, 2):
        raise ValueError(f"target_xy: expected shape ({n_balls}, 2), got {target.shape}")
    normal = np.asarray(normal0, dtype=np.float64).copy()
    if normal.shape != (n_balls, 3):
        raise ValueError(f"normal0: expected shape ({n_balls}, 3), got {normal.shape}")
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    kw = dict(restitution=restitution, friction=friction, params=params, table=table, dt_s=dt_s)
    for _ in range(int(iterations)):
        e1, e2 = tangent_basis(normal)
        probes = np.concatenate([normal, normal + fd_rad * e1, normal + fd_rad * e2])
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        xy, _ = landing_of_shot(np.tile(ball, (3, 1)), probes, np.tile(speed, 3), **kw)
        base, d1, d2 = xy[:n_balls], xy[n_balls : 2 * n_balls], xy[2 * n_balls :]
        jac = np.stack([(d1 - base) / fd_rad, (d2 - base) / fd_rad], axis=2)  # [N, 2 (xy), 2 (angles)]
        resid = base - target
        # damped Gauss-Newton: (J^T J + lambda I) step = -J^T r
        jtj = np.swapaxes(jac, 1, 2) @ jac + 1e-4 * np.eye(2)
        step = -np.linalg.solve(jtj, (np.swapaxes(jac, 1, 2) @ resid[..., None]))[..., 0]
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, max_step_rad / np.maximum(norm, 1e-12))
        step = np.nan_to_num(step)
        normal = normal + step[:, :1] * e1 + step[:, 1:] * e2
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    xy, _ = landing_of_shot(ball, normal, speed, **kw)
    return normal, xy - target
