"""Triton backend of the ball flight: the per-step maths of ``ball_physics.hpp`` mirrored line by line.

Design notes: docs/ballistics.md, section `robot_rt.ballistics.triton_kernel`.
"""

from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from .backend_cuda import alloc_outputs, trim_outputs
from .reference import MAX_CONTACTS_PER_STEP, n_steps_for

# extra entries appended to the packed parameters for the kernel: dt, h_last, plane_x, gap tol, width tol
_N_PK = 16


@triton.jit
def _deriv(vx, vy, vz, wx, wy, wz, g, kd, km, lam):
    speed = tl.sqrt(vx * vx + vy * vy + vz * vz)
    ax = km * (wy * vz - wz * vy) - speed * (kd * vx)
    ay = km * (wz * vx - wx * vz) - speed * (kd * vy)
    az = (km * (wx * vy - wy * vx) - g) - speed * (kd * vz)
    return ax, ay, az, -lam * wx, -lam * wy, -lam * wz


@triton.jit
def _rk4(x, y, z, vx, vy, vz, wx, wy, wz, h, g, kd, km, lam):
    hh = 0.5 * h
    a1x, a1y, a1z, d1x, d1y, d1z = _deriv(vx, vy, vz, wx, wy, wz, g, kd, km, lam)
    v2x = vx + hh * a1x
    v2y = vy + hh * a1y
    v2z = vz + hh * a1z
    w2x = wx + hh * d1x
    w2y = wy + hh * d1y
    w2z = wz + hh * d1z
    a2x, a2y, a2z, d2x, d2y, d2z = _deriv(v2x, v2y, v2z, w2x, w2y, w2z, g, kd, km, lam)
    v3x = vx + hh * a2x
    v3y = vy + hh * a2y
    v3z = vz + hh * a2z
    w3x = wx + hh * d2x
    w3y = wy + hh * d2y
    w3z = wz + hh * d2z
    a3x, a3y, a3z, d3x, d3y, d3z = _deriv(v3x, v3y, v3z, w3x, w3y, w3z, g, kd, km, lam)
    v4x = vx + h * a3x
    v4y = vy + h * a3y
    v4z = vz + h * a3z
    w4x = wx + h * d3x
    w4y = wy + h * d3y
    w4z = wz + h * d3z
    a4x, a4y, a4z, d4x, d4y, d4z = _deriv(v4x, v4y, v4z, w4x, w4y, w4z, g, kd, km, lam)
    h6 = h / 6.0
    nx = x + h6 * (vx + 2.0 * v2x + 2.0 * v3x + v4x)
    ny = y + h6 * (vy + 2.0 * v2y + 2.0 * v3y + v4y)
    nz = z + h6 * (vz + 2.0 * v2z + 2.0 * v3z + v4z)
    nvx = vx + h6 * (a1x + 2.0 * a2x + 2.0 * a3x + a4x)
    nvy = vy + h6 * (a1y + 2.0 * a2y + 2.0 * a3y + a4y)
    nvz = vz + h6 * (a1z + 2.0 * a2z + 2.0 * a3z + a4z)
    nwx = wx + h6 * (d1x + 2.0 * d2x + 2.0 * d3x + d4x)
    nwy = wy + h6 * (d1y + 2.0 * d2y + 2.0 * d3y + d4y)
    nwz = wz + h6 * (d1z + 2.0 * d2z + 2.0 * d3z + d4z)
    return nx, ny, nz, nvx, nvy, nvz, nwx, nwy, nwz


@triton.jit
def _gap(x, z, KIND: tl.constexpr, side, plane_x, r, tz):
    if KIND == 1:
        gp = z - (tz + r)
    elif KIND == 3:
        gp = z - r
    elif KIND == 2:
        gp = side * x - r
    else:
        gp = side * (plane_x - x)
    return gp


@triton.jit
def _geometry_ok(x, y, z, KIND: tl.constexpr, thl, thw, nhl, ntop, tz):
    if KIND == 1:
        ok = (tl.abs(x) <= thl) & (tl.abs(y) <= thw)
    elif KIND == 2:
        ok = (tl.abs(y) <= nhl) & (z <= ntop) & (z > tz)
    else:
        ok = x == x
    return ok


@triton.jit
def _root(
    x,
    y,
    z,
    vx,
    vy,
    vz,
    wx,
    wy,
    wz,
    h,
    g0,
    g1,
    cand,
    KIND: tl.constexpr,
    side,
    plane_x,
    r,
    tz,
    g,
    kd,
    km,
    lam,
    TOL,
    WTOL,
    MAXIT: tl.constexpr,
):
    a = h * 0.0
    fa = g0
    b = h
    fb = g1
    c = h
    last = tl.zeros(h.shape, tl.int32)
    done = (cand == 0) | (tl.abs(fb) <= TOL)
    it = 0
    n_open = tl.sum((done == 0).to(tl.int32), axis=0)
    while (it < MAXIT) & (n_open > 0):
        cn = (a * fb - b * fa) / (fb - fa)
        cn = tl.minimum(tl.maximum(cn, a), b)
        cx, cy, cz, cvx, cvy, cvz, cwx, cwy, cwz = _rk4(x, y, z, vx, vy, vz, wx, wy, wz, cn, g, kd, km, lam)
        fc = _gap(cx, cz, KIND, side, plane_x, r, tz)
        upd = done == 0
        c = tl.where(upd, cn, c)
        conv = upd & (tl.abs(fc) <= TOL)
        neg = upd & (conv == 0) & (fc <= 0.0)
        pos = upd & (conv == 0) & (fc > 0.0)
        b = tl.where(neg, cn, b)
        fb = tl.where(neg, fc, fb)
        fa = tl.where(neg & (last == -1), 0.5 * fa, fa)
        a = tl.where(pos, cn, a)
        fa = tl.where(pos, fc, fa)
        fb = tl.where(pos & (last == 1), 0.5 * fb, fb)
        last = tl.where(neg, -1, tl.where(pos, 1, last))
        done = done | conv | (upd & ((b - a) <= WTOL))
        it += 1
        n_open = tl.sum((done == 0).to(tl.int32), axis=0)
    return c


@triton.jit
def _store_state(ptr, x, y, z, vx, vy, vz, wx, wy, wz, mask):
    """Stores a state (9 values per lane) at ptr + 0..8, where `mask`."""
    tl.store(ptr + 0, x, mask=mask)
    tl.store(ptr + 1, y, mask=mask)
    tl.store(ptr + 2, z, mask=mask)
    tl.store(ptr + 3, vx, mask=mask)
    tl.store(ptr + 4, vy, mask=mask)
    tl.store(ptr + 5, vz, mask=mask)
    tl.store(ptr + 6, wx, mask=mask)
    tl.store(ptr + 7, wy, mask=mask)
    tl.store(ptr + 8, wz, mask=mask)


@triton.jit
def _select_state(cond, x, y, z, vx, vy, vz, wx, wy, wz, ox, oy, oz, ovx, ovy, ovz, owx, owy, owz):
    """Per lane: the first state where `cond`, else the second (o...)."""
    return (
        tl.where(cond, x, ox),
        tl.where(cond, y, oy),
        tl.where(cond, z, oz),
        tl.where(cond, vx, ovx),
        tl.where(cond, vy, ovy),
        tl.where(cond, vz, ovz),
        tl.where(cond, wx, owx),
        tl.where(cond, wy, owy),
        tl.where(cond, wz, owz),
    )


@triton.jit
def _earliest_contact(
    x, y, z, vx, vy, vz, wx, wy, wz, x1, z1, rem, can_hit, plane_x, g, kd, km, lam, r, tz, thl, thw, nhl, ntop,
    TOL, WTOL, STOP_KIND: tl.constexpr, MAXIT: tl.constexpr,
):  # fmt: skip
    """The first surface (table 1, net 2, floor 3, plane 4 when it is the stop) the step from x to x1 crosses:
    (kind, 0 for none; its time in the step; the state there)."""
    best_tau = x * 0.0 + float("inf")
    best_kind = tl.zeros(x.shape, tl.int32)
    bx = x
    by = y
    bz = z
    bvx = vx
    bvy = vy
    bvz = vz
    bwx = wx
    bwy = wy
    bwz = wz
    sx = tl.where(x >= 0.0, 1.0, -1.0)
    dpx = plane_x - x
    sp = tl.where(dpx > 0.0, 1.0, tl.where(dpx < 0.0, -1.0, 0.0))
    for KIND in tl.static_range(1, 5):
        if (KIND < 4) or (STOP_KIND == 4):
            if KIND == 4:
                side = sp
            else:
                side = sx
            g0 = _gap(x, z, KIND, side, plane_x, r, tz)
            g1 = _gap(x1, z1, KIND, side, plane_x, r, tz)
            cand = can_hit & (g0 > 0.0) & (g1 <= 0.0)
            if tl.sum(cand.to(tl.int32), axis=0) > 0:
                tau = _root(
                    x, y, z, vx, vy, vz, wx, wy, wz, rem, g0, g1, cand, KIND, side, plane_x, r, tz, g, kd, km, lam,
                    TOL, WTOL, MAXIT,
                )  # fmt: skip
                cx, cy, cz, cvx, cvy, cvz, cwx, cwy, cwz = _rk4(x, y, z, vx, vy, vz, wx, wy, wz, tau, g, kd, km, lam)
                ok = (
                    cand
                    & _geometry_ok(cx, cy, cz, KIND, thl, thw, nhl, ntop, tz)
                    & ((best_kind == 0) | (tau < best_tau))
                )
                best_tau = tl.where(ok, tau, best_tau)
                best_kind = tl.where(ok, KIND, best_kind)
                bx, by, bz, bvx, bvy, bvz, bwx, bwy, bwz = _select_state(
                    ok, cx, cy, cz, cvx, cvy, cvz, cwx, cwy, cwz, bx, by, bz, bvx, bvy, bvz, bwx, bwy, bwz
                )
    return best_kind, best_tau, bx, by, bz, bvx, bvy, bvz, bwx, bwy, bwz


@triton.jit
def _rebound(kind, bvx, bvy, bvz, bwx, bwy, r, e_t, mu_t, e_f, mu_f, e_n, k_n, two_fifths):
    """Velocity and spin (x, y) after the contact `kind`: Nakashima et al. (2010) on table/floor, the net map on
    the net (z spin unchanged)."""
    is_tab = kind == 1
    e = tl.where(is_tab, e_t, e_f)
    mu = tl.where(is_tab, mu_t, mu_f)
    vtx = bvx - r * bwy
    vty = bvy + r * bwx
    vt = tl.sqrt(vtx * vtx + vty * vty)
    alpha = tl.minimum(mu * (1.0 + e) * tl.abs(bvz) / tl.maximum(vt, 1e-30), two_fifths)
    horiz = (kind == 1) | (kind == 3)
    is_net = kind == 2
    ax_ = tl.where(horiz, bvx - alpha * vtx, tl.where(is_net, -e_n * bvx, bvx))
    ay_ = tl.where(horiz, bvy - alpha * vty, tl.where(is_net, k_n * bvy, bvy))
    az_ = tl.where(horiz, -e * bvz, tl.where(is_net, k_n * bvz, bvz))
    awx = tl.where(horiz, bwx - (1.5 * alpha / r) * vty, bwx)
    awy = tl.where(horiz, bwy + (1.5 * alpha / r) * vtx, bwy)
    return ax_, ay_, az_, awx, awy


@triton.jit
def _fly_kernel(
    in_ptr,
    pk_ptr,
    final_ptr,
    count_ptr,
    samples_ptr,
    ev_t_ptr,
    ev_kind_ptr,
    ev_state_ptr,
    t_stop_ptr,
    stop_state_ptr,
    n_balls,
    n_steps,
    record_every,
    n_samples,
    max_events,
    STOP_KIND: tl.constexpr,
    MAXC: tl.constexpr,
    MAXIT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    lane = pid * BLOCK + tl.arange(0, BLOCK)
    inb = lane < n_balls
    li = lane.to(tl.int64)
    base = in_ptr + li * 9
    x = tl.load(base + 0, mask=inb, other=0.0)
    y = tl.load(base + 1, mask=inb, other=0.0)
    z = tl.load(base + 2, mask=inb, other=1.0)
    vx = tl.load(base + 3, mask=inb, other=0.0)
    vy = tl.load(base + 4, mask=inb, other=0.0)
    vz = tl.load(base + 5, mask=inb, other=0.0)
    wx = tl.load(base + 6, mask=inb, other=0.0)
    wy = tl.load(base + 7, mask=inb, other=0.0)
    wz = tl.load(base + 8, mask=inb, other=0.0)
    g = tl.load(pk_ptr + 0)
    kd = tl.load(pk_ptr + 1)
    km = tl.load(pk_ptr + 2)
    lam = tl.load(pk_ptr + 3)
    r = tl.load(pk_ptr + 4)
    e_t = tl.load(pk_ptr + 5)
    mu_t = tl.load(pk_ptr + 6)
    e_f = tl.load(pk_ptr + 7)
    mu_f = tl.load(pk_ptr + 8)
    e_n = tl.load(pk_ptr + 9)
    k_n = tl.load(pk_ptr + 10)
    tz = tl.load(pk_ptr + 11)
    thl = tl.load(pk_ptr + 12)
    thw = tl.load(pk_ptr + 13)
    ntop = tl.load(pk_ptr + 14)
    nhl = tl.load(pk_ptr + 15)
    dt = tl.load(pk_ptr + 16)
    h_last = tl.load(pk_ptr + 17)
    plane_x = tl.load(pk_ptr + 18)
    TOL = tl.load(pk_ptr + 19)
    WTOL = tl.load(pk_ptr + 20)
    zt = tz + r
    two_fifths = (g * 0.0 + 2.0) / 5.0  # 0.4 rounded in the compute dtype (a literal would be float32)
    if record_every > 0:
        _store_state(samples_ptr + li * n_samples * 9, x, y, z, vx, vy, vz, wx, wy, wz, inb)
    alive = inb
    count = tl.zeros([BLOCK], tl.int32)
    k = 0
    n_alive = tl.sum(alive.to(tl.int32), axis=0)
    while (k < n_steps) & (n_alive > 0):
        t0 = k * dt
        hstep = tl.where(k + 1 < n_steps, dt, h_last)
        rem = x * 0.0 + hstep
        elapsed = x * 0.0
        z_start = z
        active = alive
        rnd = 0
        n_active = n_alive
        while (rnd <= MAXC) & (n_active > 0):
            x1, y1, z1, vx1, vy1, vz1, wx1, wy1, wz1 = _rk4(x, y, z, vx, vy, vz, wx, wy, wz, rem, g, kd, km, lam)
            can_hit = active & (rnd < MAXC)
            best_kind, best_tau, bx, by, bz, bvx, bvy, bvz, bwx, bwy, bwz = _earliest_contact(
                x, y, z, vx, vy, vz, wx, wy, wz, x1, z1, rem, can_hit, plane_x, g, kd, km, lam, r, tz, thl, thw, nhl,
                ntop, TOL, WTOL, STOP_KIND, MAXIT,
            )  # fmt: skip
            hit = active & (best_kind != 0)
            free = active & (best_kind == 0)
            # lanes without a contact in this round end the step at y1
            x, y, z, vx, vy, vz, wx, wy, wz = _select_state(
                free, x1, y1, z1, vx1, vy1, vz1, wx1, wy1, wz1, x, y, z, vx, vy, vz, wx, wy, wz
            )
            # project the crossing state on its surface
            bz = tl.where(best_kind == 1, zt, tl.where(best_kind == 3, r, bz))
            bx = tl.where(best_kind == 2, tl.where(bx >= 0.0, r, -r), tl.where(best_kind == 4, plane_x, bx))
            tau_h = tl.where(hit, best_tau, 0.0)
            elapsed = elapsed + tau_h
            stop = hit & (best_kind == STOP_KIND)
            bounce = hit & (best_kind != STOP_KIND)
            if tl.sum(stop.to(tl.int32), axis=0) > 0:
                tl.store(t_stop_ptr + li, t0 + elapsed, mask=stop)
                _store_state(stop_state_ptr + li * 9, bx, by, bz, bvx, bvy, bvz, bwx, bwy, bwz, stop)
                x, y, z, vx, vy, vz, wx, wy, wz = _select_state(
                    stop, bx, by, bz, bvx, bvy, bvz, bwx, bwy, bwz, x, y, z, vx, vy, vz, wx, wy, wz
                )
                alive = alive & (stop == 0)
            ax_, ay_, az_, awx, awy = _rebound(
                best_kind, bvx, bvy, bvz, bwx, bwy, r, e_t, mu_t, e_f, mu_f, e_n, k_n, two_fifths
            )
            x, y, z, vx, vy, vz, wx, wy, wz = _select_state(
                bounce, bx, by, bz, ax_, ay_, az_, awx, awy, bwz, x, y, z, vx, vy, vz, wx, wy, wz
            )
            if tl.sum(bounce.to(tl.int32), axis=0) > 0:
                rec = bounce & (count < max_events)
                eo = li * max_events + count
                tl.store(ev_t_ptr + eo, t0 + elapsed, mask=rec)
                tl.store(ev_kind_ptr + eo, best_kind, mask=rec)
                _store_state(ev_state_ptr + eo * 9, x, y, z, vx, vy, vz, wx, wy, wz, rec)
                count = count + bounce.to(tl.int32)
            rem = tl.where(bounce, tl.maximum(rem - tau_h, 0.0), rem)
            active = bounce
            rnd += 1
            n_active = tl.sum(active.to(tl.int32), axis=0)
        # resting contact (see ball_physics.hpp rest_clamp)
        over = (tl.abs(x) <= thl) & (tl.abs(y) <= thw)
        c1 = alive & over & (z_start >= zt) & (z < zt)
        z = tl.where(c1, zt, z)
        vz = tl.where(c1, tl.maximum(vz, 0.0), vz)
        c2 = alive & (z < r)
        z = tl.where(c2, r, z)
        vz = tl.where(c2, tl.maximum(vz, 0.0), vz)
        k += 1
        if record_every > 0:
            if k % record_every == 0:
                sb = samples_ptr + (li * n_samples + k // record_every) * 9
                _store_state(sb, x, y, z, vx, vy, vz, wx, wy, wz, inb)
        n_alive = tl.sum(alive.to(tl.int32), axis=0)
    _store_state(final_ptr + li * 9, x, y, z, vx, vy, vz, wx, wy, wz, inb)
    tl.store(count_ptr + li, count, mask=inb)


def run_triton(
    arr,
    horizon_s: float,
    dt_s: float,
    pk: np.ndarray,
    *,
    record_every: int,
    max_events: int,
    plane_x: float,
    stop_kind: int,
    block: int | None = None,
) -> dict:
    import torch

    x = arr.detach().contiguous()
    n = x.shape[0]
    n_steps = n_steps_for(horizon_s, dt_s)
    h_last = horizon_s - (n_steps - 1) * dt_s if n_steps else 0.0
    is64 = x.dtype == torch.float64
    tol, wtol, maxit = (1e-12, 1e-15, 40) if is64 else (2e-6, 1e-9, 30)
    kpk = torch.tensor(np.concatenate([pk, [dt_s, h_last, plane_x, tol, wtol]]), dtype=x.dtype, device=x.device)
    out = alloc_outputs(x, horizon_s, dt_s, record_every, max_events, stop_kind)
    out["event_t"].fill_(float("nan"))
    out["event_kind"].zero_()
    out["event_state"].fill_(float("nan"))
    out["t_stop"].fill_(float("nan"))
    out["stop_state"].fill_(float("nan"))
    n_samples = out["samples"].shape[1] if record_every > 0 else 0
    samples = out["samples"] if record_every > 0 else out["final"]
    if n:
        blk = block or (128 if x.is_cuda else 32)
        grid = (triton.cdiv(n, blk),)
        _fly_kernel[grid](
            x,
            kpk,
            out["final"],
            out["event_count"],
            samples,
            out["event_t"],
            out["event_kind"],
            out["event_state"],
            out["t_stop"],
            out["stop_state"],
            n,
            n_steps,
            record_every,
            n_samples,
            max_events,
            STOP_KIND=stop_kind,
            MAXC=MAX_CONTACTS_PER_STEP,
            MAXIT=maxit,
            BLOCK=blk,
        )
    return trim_outputs(out, max_events, stop_kind)
