"""Hitting-plane prediction error of the ball-state UKF vs the polynomial-fit baseline.

Simulated serves with spin (``ServeGenerator``, per-group perturbed ball/contact parameters so the
estimator's nominal model is not the truth) are observed by ``SimulatedTracker`` (125-200 Hz per serve,
Gaussian noise, drops, outliers, clutter, latency with jitter -> out-of-order arrival). Both estimators
receive the detections in arrival order; every ``--eval-every``-th arrival, each predicts the crossing of
``x = x_plane`` and the error against the true crossing is binned by the time left before the true
crossing (measured from the detection's arrival time, i.e. what the robot knows at that moment).

Writes ``bench/results/estimation.json`` (atomically), ``bench/results/estimation.png`` and prints a table.

    python bench/bench_estimation.py            # 1000 serves
    python bench/bench_estimation.py --quick    # 60 serves
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from robot_rt._io import atomic_write_bytes
from robot_rt.estimation import BallUKF, PolyfitPredictor, ServeGenerator, SimulatedTracker

ROOT = Path(__file__).resolve().parent


def _stats(v):
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0:
        return {"median": None, "p90": None}
    return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90))}


def run(args) -> dict:
    t_all = time.perf_counter()
    gen = ServeGenerator(seed=args.seed, x_plane_m=args.x_plane, param_jitter=args.param_jitter)
    t0 = time.perf_counter()
    serves = gen.sample(args.n)
    t_gen = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed + 1)

    rec_serve, rec_tnow, rec_tstate, rec_x, rec_poly = [], [], [], [], []
    t_ukf = t_poly = 0.0
    n_updates = 0
    n_replayed = 0
    status_counts: dict[str, int] = {}
    spin_rows = []  # (true wy, estimated wy, sigma wy) at the last evaluation before the crossing
    spin_rows_pre = []  # same, at the last evaluation before the bounce on the robot's half
    try:
        from tqdm import tqdm

        it = tqdm(range(len(serves)), desc="serves", disable=not sys.stderr.isatty())
    except ImportError:  # pragma: no cover
        it = range(len(serves))
    for i in it:
        s = serves[i]
        rate = float(rng.uniform(args.rate_min, args.rate_max))
        tracker = SimulatedTracker(
            seed=int(rng.integers(2**31)),
            rate_hz=rate,
            noise_sigma_m=args.sigma,
            drop_prob=0.03,
            outlier_prob=0.01,
            false_rate=0.02,
            latency_s=0.012,
            latency_jitter_s=0.004,
        )
        det = tracker.observe(s)
        last_spin = last_spin_pre = None
        ukf = BallUKF(gen.params, sigma_m=args.sigma)
        poly = PolyfitPredictor(gen.params, sigma_m=args.sigma)
        for k, (tc, p, ta) in enumerate(det):
            a = time.perf_counter()
            r = ukf.update(tc, p, ta)
            b = time.perf_counter()
            poly.update(tc, p, ta)
            c = time.perf_counter()
            t_ukf += b - a
            t_poly += c - b
            n_updates += 1
            status_counts[r.status] = status_counts.get(r.status, 0) + 1
            if ta >= s.crossing_t_s or k % args.eval_every:
                continue
            rec_serve.append(i)
            rec_tnow.append(ta)
            if ukf.initialized:
                last_spin = [s.state_at(ukf.time_s)[7], ukf.state[7], np.sqrt(ukf.covariance[7, 7])]
                if ukf.time_s < s.event_t_s[-1] - 0.005:  # before the bounce on the robot's half
                    last_spin_pre = [s.state_at(ukf.time_s)[7], ukf.state[7], np.sqrt(ukf.covariance[7, 7])]
            if ukf.initialized:
                rec_tstate.append(ukf.time_s)
                rec_x.append(ukf.state)
            else:
                rec_tstate.append(np.nan)
                rec_x.append(np.full(9, np.nan))
            pc = poly.predict_plane_crossing(args.x_plane)
            rec_poly.append([np.nan] * 3 if pc is None else [pc.t_s, pc.position_m[1], pc.position_m[2]])
        n_replayed += ukf.n_replayed
        if last_spin is not None:
            spin_rows.append(last_spin)
        if last_spin_pre is not None:
            spin_rows_pre.append(last_spin_pre)

    # UKF crossings: physics time_to_plane on all recorded states at once
    t0 = time.perf_counter()
    X = np.array(rec_x)
    ok = np.all(np.isfinite(X), axis=1)
    tau = np.full(len(X), np.nan)
    st = np.full((len(X), 9), np.nan)
    chunk = 20000
    idx = np.nonzero(ok)[0]
    for j in range(0, len(idx), chunk):
        sl = idx[j : j + chunk]
        tau[sl], st[sl] = ukf.model.time_to_plane(X[sl], args.x_plane)
    t_cross_eval = time.perf_counter() - t0
    ukf_pred = np.stack([np.asarray(rec_tstate) + tau, st[:, 1], st[:, 2]], axis=1)
    poly_pred = np.array(rec_poly)
    serve_idx = np.array(rec_serve)
    truth = np.array([[s.crossing_t_s, s.crossing_state[1], s.crossing_state[2]] for s in serves])[serve_idx]
    t_before = truth[:, 0] - np.asarray(rec_tnow)

    edges = np.arange(0.0, args.max_before + 1e-9, args.bin_s)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (t_before >= lo) & (t_before < hi)
        row = {"t_before_lo_ms": lo * 1e3, "t_before_hi_ms": hi * 1e3, "n": int(m.sum())}
        for name, pred in (("ukf", ukf_pred), ("polyfit", poly_pred)):
            pm = pred[m]
            tm = truth[m]
            have = np.all(np.isfinite(pm), axis=1)
            pos_cm = 100 * np.linalg.norm(pm[have, 1:] - tm[have, 1:], axis=1)
            t_ms = 1e3 * np.abs(pm[have, 0] - tm[have, 0])
            row[name] = {
                "pos_err_cm": _stats(pos_cm),
                "time_err_ms": _stats(t_ms),
                "missing_fraction": float(1 - have.mean()) if m.any() else None,
            }
        u, p = row["ukf"]["pos_err_cm"]["median"], row["polyfit"]["pos_err_cm"]["median"]
        row["ukf_over_polyfit_median_pos_err"] = None if not u or not p else u / p
        bins.append(row)

    def spin_stats(rows, when):
        sp = np.array(rows) if rows else np.zeros((0, 3))
        strong = np.abs(sp[:, 0]) > 50
        return {
            "when": when,
            "n_serves": int(len(sp)),
            "wy_abs_err_radps": _stats(np.abs(sp[:, 1] - sp[:, 0])),
            "wy_sigma_radps": _stats(sp[:, 2]),
            "wy_sign_correct_fraction_strong": float(np.mean(np.sign(sp[strong, 1]) == np.sign(sp[strong, 0])))
            if strong.any()
            else None,
        }

    spin_summary = {
        "before_crossing": spin_stats(spin_rows, "last evaluation before the crossing (after the bounce)"),
        "before_bounce": spin_stats(spin_rows_pre, "last evaluation before the bounce on the robot's half"),
        "wy_prior_sigma_radps": float(ukf.config.init_spin_sigma_radps),
        "note": "wy = top(+)/back(-) spin; sign fraction over serves with |wy_true| > 50 rad/s",
    }
    kinds = {k: sum(1 for s in serves if s.kind == k) for k in ("drive", "serve")}
    return {
        "config": {
            "n_serves": len(serves),
            "kinds": kinds,
            "seed": args.seed,
            "x_plane_m": args.x_plane,
            "noise_sigma_m": args.sigma,
            "rate_hz": [args.rate_min, args.rate_max],
            "param_jitter": args.param_jitter,
            "eval_every": args.eval_every,
            "physics_backend": ukf.model.backend,
            "tracker": {
                "drop_prob": 0.03,
                "outlier_prob": 0.01,
                "false_rate_per_frame": 0.02,
                "latency_s": 0.012,
                "latency_jitter_s": 0.004,
            },
        },
        "bins": bins,
        "spin": spin_summary,
        "timing": {
            "generate_s": t_gen,
            "ukf_update_mean_us": 1e6 * t_ukf / max(n_updates, 1),
            "polyfit_update_mean_us": 1e6 * t_poly / max(n_updates, 1),
            "ukf_vs_polyfit_update_time_ratio": t_ukf / max(t_poly, 1e-12),
            "ukf_crossing_eval_s": t_cross_eval,
            "n_updates": n_updates,
            "n_evaluations": int(len(X)),
            "total_s": time.perf_counter() - t_all,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        "ukf_status_counts": status_counts,
        "ukf_replayed_measurements": int(n_replayed),
    }


def _table(res):
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print(json.dumps(res["bins"], indent=1))
        return

    def f(v, d=1):
        return "-" if v is None else f"{v:.{d}f}"

    t = Table(title=f"Hitting-plane crossing error vs time before crossing ({res['config']['n_serves']} serves)")
    for c in (
        "t before [ms]",
        "n",
        "UKF pos cm med/p90",
        "poly pos cm med/p90",
        "UKF t ms med/p90",
        "poly t ms med/p90",
    ):
        t.add_column(c, justify="right")
    for b in res["bins"]:
        u, p = b["ukf"], b["polyfit"]
        t.add_row(
            f"{b['t_before_lo_ms']:.0f}-{b['t_before_hi_ms']:.0f}",
            str(b["n"]),
            f"{f(u['pos_err_cm']['median'])}/{f(u['pos_err_cm']['p90'])}",
            f"{f(p['pos_err_cm']['median'])}/{f(p['pos_err_cm']['p90'])}",
            f"{f(u['time_err_ms']['median'])}/{f(u['time_err_ms']['p90'])}",
            f"{f(p['time_err_ms']['median'])}/{f(p['time_err_ms']['p90'])}",
        )
    Console().print(t)
    print(json.dumps({"spin": res["spin"], "timing": res["timing"]}, indent=1))


def _plot(res, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mid = np.array([(b["t_before_lo_ms"] + b["t_before_hi_ms"]) / 2 for b in res["bins"]])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, col in (("ukf", "C0"), ("polyfit", "C1")):
        for k, (key, unit) in enumerate((("pos_err_cm", "cm"), ("time_err_ms", "ms"))):
            med = np.array([np.nan if b[name][key]["median"] is None else b[name][key]["median"] for b in res["bins"]])
            p90 = np.array([np.nan if b[name][key]["p90"] is None else b[name][key]["p90"] for b in res["bins"]])
            ax[k].plot(mid, med, "-o", color=col, label=f"{name} median")
            ax[k].plot(mid, p90, "--", color=col, label=f"{name} p90")
            ax[k].set_xlabel("time before crossing [ms]")
            ax[k].set_ylabel(f"crossing {'position (y, z)' if unit == 'cm' else 'time'} error [{unit}]")
            ax[k].set_yscale("log")
            ax[k].grid(True, which="both", alpha=0.3)
    ax[0].legend()
    fig.suptitle(
        f"Hitting plane x={res['config']['x_plane_m']} m, {res['config']['n_serves']} serves with spin, "
        f"sigma={1e3 * res['config']['noise_sigma_m']:.0f} mm"
    )
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="number of serves (>= 1000 for the report)")
    ap.add_argument("--quick", action="store_true", help="60 serves, for a smoke run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sigma", type=float, default=0.005, help="detection noise std [m]")
    ap.add_argument("--rate-min", type=float, default=125.0)
    ap.add_argument("--rate-max", type=float, default=200.0)
    ap.add_argument("--x-plane", type=float, default=1.6)
    ap.add_argument("--param-jitter", type=float, default=0.05)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--bin-s", type=float, default=0.05)
    ap.add_argument("--max-before", type=float, default=0.7)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "estimation.json")
    ap.add_argument("--png", type=Path, default=ROOT / "results" / "estimation.png")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 60
    if args.n < 1 or args.eval_every < 1:
        ap.error("--n and --eval-every must be >= 1")
    res = run(args)
    atomic_write_bytes(args.out, (json.dumps(res, indent=1) + "\n").encode())
    _plot(res, args.png)
    _table(res)
    print(f"wrote {args.out} and {args.png}")
    return res


if __name__ == "__main__":
    main()
