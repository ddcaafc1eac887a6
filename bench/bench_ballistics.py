"""Ball-flight benchmark: single-ball ``time_to_plane`` latency and batched ``simulate`` throughput.

- Latency: one ball from Python, 1 ms RK4 step, 1 s horizon, plane x = 1.6 m; realistic incoming balls
  (opponent's hit near x = -1.45 m, one bounce on the robot's half, reaching the plane 0.3-0.6 s later) and
  the worst case (no crossing: the whole 1 s horizon is integrated). C++ fast path vs the NumPy reference;
  wall-clock and thread-CPU medians (the latter is robust to other processes on a shared machine).
- Throughput (ball-steps/s) of ``simulate_batch`` for N = 1e3 ... 1e6 balls spread over the phases of a rally
  (so contacts happen inside the timed window): NumPy reference, a plain-torch version of the same
  equations (RK4 + located table/net/floor contacts, defined below), the C++ CPU backend (float64, float32),
  and with ``--device cuda`` the CUDA kernel, the Triton kernel and plain torch on the GPU.
  Ratios against the NumPy reference and plain torch are measured in the same run.

Writes ``bench/results/ballistics.json`` and prints a table. ``--quick`` for a short run.
  .venv/bin/python bench/bench_ballistics.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, peak_memory, print_table, sync, time_fn, write_json  # noqa: E402

from robot_rt.ballistics import (  # noqa: E402
    landing_point_batch,
    pack_params,
    simulate_batch,
    time_to_plane,
    time_to_plane_batch,
)
from robot_rt.ballistics.api import available_backends  # noqa: E402
from robot_rt.ballistics.reference import MAX_CONTACTS_PER_STEP  # noqa: E402
from robot_rt.ballistics.sampling import random_incoming  # noqa: E402

X_PLANE = 1.6


def incoming_balls(n: int, seed: int = 0) -> np.ndarray:
    return random_incoming(n, seed)


def incoming_in_window(n: int, seed: int = 7) -> np.ndarray:
    """Returns from the opponent (x ~ -1.45 m, 6.5-9 m/s) that bounce on the table and reach the plane
    x = 1.6 m 0.3-0.6 s later (the issue's time between the opponent's hit and the robot's)."""
    x = random_incoming(4 * n, seed, z_m=(0.95, 1.15), vx_m_s=(6.5, 9.0), vz_m_s=(0.2, 1.4))
    be = "cpu" if "cpu" in available_backends() else "numpy"
    tp = time_to_plane_batch(x, X_PLANE, backend=be)
    lp = landing_point_batch(x, backend=be)
    t = np.where(tp.found, tp.t_s, np.inf)
    ok = lp.found & (t >= 0.3) & (t <= 0.6)
    return x[ok][:n]


def rally_phases(n: int, seed: int = 1) -> np.ndarray:
    """Balls at random phases of a rally: incoming balls advanced by 0 ... 0.56 s (C++ backend when built)."""
    x = incoming_balls(n, seed)
    groups = np.array_split(np.arange(n), 8)
    be = "cpu" if "cpu" in available_backends() else "numpy"
    for j, g in enumerate(groups):
        if j and g.size:
            x[g] = simulate_batch(x[g], 0.08 * j, 1e-3, backend=be).final_state
    return x[np.random.default_rng(seed).permutation(n)]


# ----------------------------------------------------------------------------------- plain torch version


def _t_deriv(y, pk):
    v, w = y[:, 3:6], y[:, 6:9]
    speed = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    a = pk["km"] * torch.linalg.cross(w, v, dim=1) - speed * (pk["kd"] * v)
    a[:, 2] -= pk["g"]
    return torch.cat([v, a, -pk["lam"] * w], dim=1)


def _t_rk4(y, h, pk):
    h = h[:, None]
    k1 = _t_deriv(y, pk)
    k2 = _t_deriv(y + 0.5 * h * k1, pk)
    k3 = _t_deriv(y + 0.5 * h * k2, pk)
    k4 = _t_deriv(y + h * k3, pk)
    return y + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def _t_gap(y, kind, pk, side):
    if kind == 1:
        return y[:, 2] - pk["zt"]
    if kind == 3:
        return y[:, 2] - pk["r"]
    return side * y[:, 0] - pk["r"]


def _t_root(y0, h, g0, g1, cand, kind, pk, side):
    a, fa, b, fb, c = torch.zeros_like(h), g0, h, g1, h
    last = torch.zeros_like(h, dtype=torch.int8)
    done = ~cand | (fb.abs() <= 1e-12)
    for _ in range(40):
        if bool(done.all()):
            break
        cn = torch.minimum(torch.maximum((a * fb - b * fa) / (fb - fa), a), b)
        fc = _t_gap(_t_rk4(y0, cn, pk), kind, pk, side)
        upd = ~done
        c = torch.where(upd, cn, c)
        conv = upd & (fc.abs() <= 1e-12)
        neg, pos = upd & ~conv & (fc <= 0), upd & ~conv & (fc > 0)
        b, fb = torch.where(neg, cn, b), torch.where(neg, fc, fb)
        fa = torch.where(neg & (last == -1), 0.5 * fa, fa)
        a, fa = torch.where(pos, cn, a), torch.where(pos, fc, fa)
        fb = torch.where(pos & (last == 1), 0.5 * fb, fb)
        last = torch.where(neg, -1, torch.where(pos, 1, last)).to(torch.int8)
        done = done | conv | (upd & (b - a <= 1e-15))
    return c


def _t_rebound(y, kind, pk):
    out = y.clone()
    if kind == 2:
        out[:, 0] = torch.where(y[:, 0] >= 0, pk["r"], -pk["r"])
        out[:, 3] = -pk["e_n"] * y[:, 3]
        out[:, 4:6] = pk["k_n"] * y[:, 4:6]
        return out
    e, mu, zc = (pk["e_t"], pk["mu_t"], pk["zt"]) if kind == 1 else (pk["e_f"], pk["mu_f"], pk["r"])
    r = pk["r"]
    vtx, vty = y[:, 3] - r * y[:, 7], y[:, 4] + r * y[:, 6]
    vt = torch.sqrt(vtx * vtx + vty * vty)
    alpha = torch.clamp(mu * (1 + e) * y[:, 5].abs() / vt.clamp_min(1e-30), max=0.4)
    out[:, 2] = zc
    out[:, 3] = y[:, 3] - alpha * vtx
    out[:, 4] = y[:, 4] - alpha * vty
    out[:, 5] = -e * y[:, 5]
    out[:, 6] = y[:, 6] - 1.5 * alpha / r * vty
    out[:, 7] = y[:, 7] + 1.5 * alpha / r * vtx
    return out


def torch_simulate(y, horizon_s, dt_s, pkv):
    """Plain-torch flight of [N, 9] balls: RK4 + table/net/floor contacts located in the step (masked)."""
    names = ["g", "kd", "km", "lam", "r", "e_t", "mu_t", "e_f", "mu_f", "e_n", "k_n", "tz", "thl", "thw", "ntop", "nhl"]
    pk = dict(zip(names, [float(v) for v in pkv]))
    pk["zt"] = pk["tz"] + pk["r"]
    y = y.clone()
    n_steps = int(np.ceil(horizon_s / dt_s - 1e-9))
    for _ in range(n_steps):
        rem = torch.full((y.shape[0],), dt_s, dtype=y.dtype, device=y.device)
        active = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        z_start = y[:, 2].clone()
        for rnd in range(MAX_CONTACTS_PER_STEP + 1):
            y1 = _t_rk4(y, rem, pk)
            best_tau = torch.full_like(rem, float("inf"))
            best_kind = torch.zeros_like(rem, dtype=torch.int64)
            yb = y
            sx = torch.where(y[:, 0] >= 0, 1.0, -1.0).to(y.dtype)
            if rnd < MAX_CONTACTS_PER_STEP:
                for kind in (1, 2, 3):
                    g0, g1 = _t_gap(y, kind, pk, sx), _t_gap(y1, kind, pk, sx)
                    cand = active & (g0 > 0) & (g1 <= 0)
                    if not bool(cand.any()):
                        continue
                    tau = _t_root(y, rem, g0, g1, cand, kind, pk, sx)
                    yc = _t_rk4(y, tau, pk)
                    if kind == 1:
                        geo = (yc[:, 0].abs() <= pk["thl"]) & (yc[:, 1].abs() <= pk["thw"])
                    elif kind == 2:
                        geo = (yc[:, 1].abs() <= pk["nhl"]) & (yc[:, 2] <= pk["ntop"]) & (yc[:, 2] > pk["tz"])
                    else:
                        geo = torch.ones_like(cand)
                    ok = cand & geo & (tau < best_tau)
                    best_tau = torch.where(ok, tau, best_tau)
                    best_kind = torch.where(ok, kind, best_kind)
                    yb = torch.where(ok[:, None], yc, yb)
            hit = active & (best_kind > 0)
            y = torch.where((active & ~hit)[:, None], y1, y)
            if not bool(hit.any()):
                break
            ya = yb
            for kind in (1, 2, 3):
                m = hit & (best_kind == kind)
                if bool(m.any()):
                    ya = torch.where(m[:, None], _t_rebound(yb, kind, pk), ya)
            y = torch.where(hit[:, None], ya, y)
            rem = torch.where(hit, (rem - best_tau).clamp_min(0.0), rem)
            active = hit
        over = (y[:, 0].abs() <= pk["thl"]) & (y[:, 1].abs() <= pk["thw"])
        c1 = over & (z_start >= pk["zt"]) & (y[:, 2] < pk["zt"])
        c2 = y[:, 2] < pk["r"]
        y[:, 2] = torch.where(c1, pk["zt"], torch.where(c2, pk["r"], y[:, 2]))
        y[:, 5] = torch.where(c1 | c2, y[:, 5].clamp_min(0.0), y[:, 5])
    return y


# ----------------------------------------------------------------------------------- measurements


def latency(quick: bool) -> tuple[list, dict]:
    states = [s.copy() for s in incoming_in_window(200)]
    rows, res = [], {}
    for backend in ["cpu", "numpy"] if "cpu" in available_backends() else ["numpy"]:
        n_calls = (5 if quick else 20) if backend == "numpy" else (1000 if quick else 5000)
        for case in ("incoming", "no_crossing"):
            if case == "incoming":
                pool = states
            else:  # flying away from the plane: the whole horizon is integrated
                pool = [np.array([1.0, 0.0, 1.5, -1.0, 0.0, 3.0, 0.0, 0.0, 0.0])]
            for s in pool[: (2 if backend == "numpy" else 20)]:
                time_to_plane(s, X_PLANE, dt_s=1e-3, horizon_s=1.0, backend=backend)
            ts, tc, t_cross = [], [], []
            for i in range(n_calls):
                s = pool[i % len(pool)]
                c0 = time.thread_time_ns()
                t0 = time.perf_counter_ns()
                c = time_to_plane(s, X_PLANE, dt_s=1e-3, horizon_s=1.0, backend=backend)
                ts.append((time.perf_counter_ns() - t0) / 1e3)
                tc.append((time.thread_time_ns() - c0) / 1e3)
                if c is not None:
                    t_cross.append(c.t_s)
            ts.sort()
            r = {
                "median_us": statistics.median(ts),
                "median_thread_cpu_us": statistics.median(tc),  # robust to other processes on the machine
                "p90_us": ts[int(0.9 * len(ts))],
                "calls": n_calls,
                "median_flight_s": statistics.median(t_cross) if t_cross else None,
                "crossed_fraction": len(t_cross) / n_calls,
            }
            res[f"{backend}/{case}"] = r
            rows.append(
                [
                    backend,
                    case,
                    f"{r['median_us']:.1f}",
                    f"{r['median_thread_cpu_us']:.1f}",
                    f"{r['p90_us']:.1f}",
                    f"{r['median_flight_s'] or 0:.3f}",
                ]
            )
    if "cpu/incoming" in res and "numpy/incoming" in res:
        res["speedup_cpu_vs_numpy"] = res["numpy/incoming"]["median_us"] / res["cpu/incoming"]["median_us"]
    return rows, res


def throughput(quick: bool, device: str) -> tuple[list, list]:
    sizes = [1000, 10_000, 100_000] if quick else [1000, 10_000, 100_000, 1_000_000]
    dt = 1e-3
    pk = pack_params()
    rows, results = [], []
    backends = ["numpy", "torch-cpu"]
    if "cpu" in available_backends():
        backends += ["cpu-f64", "cpu-f32"]
    if device == "cuda":
        backends += ["torch-cuda", "cuda-f32", "cuda-f64", "triton-f32"]
    for n in sizes:
        x64 = rally_phases(n)
        per_n = {}
        for be in backends:
            fast = be.startswith(("cpu", "cuda", "triton"))
            budget = 2e5 if quick else 1e6  # ball-steps per call of the slow references
            steps = (50 if quick else 100) if fast or be == "torch-cuda" else max(3, min(50, int(budget / n)))
            horizon = steps * dt
            if be == "numpy":
                arr, fn = x64, (lambda a=x64, h=horizon: simulate_batch(a, h, dt, backend="numpy"))
                dev = "cpu"
            elif be.startswith("torch"):
                dev = "cuda" if be == "torch-cuda" else "cpu"
                arr = torch.tensor(x64, device=dev)
                fn = lambda a=arr, h=horizon: torch_simulate(a, h, dt, pk)  # noqa: E731
            else:
                kind, prec = be.split("-")
                dtype = torch.float32 if prec == "f32" else torch.float64
                dev = "cuda" if kind in ("cuda", "triton") else "cpu"
                arr = (
                    torch.tensor(x64, dtype=dtype, device=dev)
                    if dev == "cuda"
                    else x64.astype(np.float32 if prec == "f32" else np.float64)
                )
                fn = lambda a=arr, h=horizon, k=kind: simulate_batch(a, h, dt, backend=k)  # noqa: E731
            reps = 1 if (n >= 100_000 and not fast) else 3
            t = time_fn(fn, device=dev, repeats=reps, warmup=1)
            mem = peak_memory(fn, device=dev) if n == sizes[-1] else {}
            tp = n * steps / t["median_s"]
            per_n[be] = tp
            r = {"backend": be, "n": n, "steps": steps, "median_s": t["median_s"], "ball_steps_per_s": tp}
            if mem:
                r["peak_memory"] = mem
            results.append(r)
            sync(dev)
        for r in results:
            if r["n"] == n:
                r["ratio_vs_numpy"] = r["ball_steps_per_s"] / per_n["numpy"]
                r["ratio_vs_torch_cpu"] = r["ball_steps_per_s"] / per_n["torch-cpu"]
                rows.append(
                    [
                        r["backend"],
                        f"{n:.0e}",
                        r["steps"],
                        f"{r['ball_steps_per_s']:.3e}",
                        f"{r['ratio_vs_numpy']:.1f}",
                        f"{r['ratio_vs_torch_cpu']:.1f}",
                    ]
                )
    return rows, results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--name", default="ballistics")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    lat_rows, lat = latency(args.quick)
    print_table(
        "time_to_plane, one ball from Python (dt 1 ms, horizon 1 s, plane x = 1.6 m)",
        ["backend", "case", "median µs", "median thread-CPU µs", "p90 µs", "median flight s"],
        lat_rows,
    )
    tp_rows, tp = throughput(args.quick, args.device)
    print_table(
        "simulate_batch throughput (ball-steps/s)",
        ["backend", "N", "steps", "ball-steps/s", "× numpy", "× torch-cpu"],
        tp_rows,
    )
    payload = {
        "machine": machine_info(args.device),
        "quick": args.quick,
        "latency": lat,
        "throughput": tp,
        "threads": None,
        "load_average": os.getloadavg(),  # other processes on the machine inflate wall-clock figures
    }
    try:
        from robot_rt.ballistics.backend_cpu import default_threads

        payload["threads"] = default_threads()
    except ImportError:
        pass
    path = write_json(args.name, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
