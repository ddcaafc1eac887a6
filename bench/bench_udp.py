"""UDP command round trip on loopback (docs/protocol.md), C++ link against a pure-Python reference.

Measured in one run, same machine:
  * cpp: `robot_rt._control.UdpDriver` <-> C++ `SimRobotServer` (its own thread, answers each command with a
    state echoing the command's sequence and stamp). Round trip = the driver's clock from sending the
    command to decoding the state that echoes it (recorded inside the C++ driver); the Python side only
    spins on `read_state()`. With and without an HMAC-SHA256 key.
  * python_ref: the same exchange with the Python codec (robot_rt.control.protocol) on both ends (client in
    the main thread, echo server in a thread), timed with time.perf_counter_ns.
  * codec: encode + decode of one 8-joint command, C++ (through the bindings, dict conversion included)
    and Python, per packet.
Writes bench/results/bench_udp.json and prints a table (median, p99, ratios vs the Python reference,
peak RSS). Usage: python bench/bench_udp.py [--n 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

from robot_rt import _control
from robot_rt.control import protocol as P

DOF = 8
BENCH_KEY = b"bench long-term key"  # sessions refuse keys under 16 bytes
LIMITS = dict(
    position_min=[-1.0] * DOF,
    position_max=[1.0] * DOF,
    velocity_limit=[2.0] * DOF,
    acceleration_limit=[10.0] * DOF,
    jerk_limit=[100.0] * DOF,
)
DIGEST = P.joint_limits_digest(*LIMITS.values())  # the joint-limits digest the driver states in its hello


def stats_us(values_ns) -> dict:
    v = np.asarray(values_ns, dtype=np.float64) / 1e3
    return {
        "n": int(v.size),
        "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)),
        "p99": float(np.percentile(v, 99)),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def bench_cpp(n: int, key: bytes) -> dict:
    server = _control.SimRobotServer(**LIMITS, key=key, reply_on_command=True)
    server.start()
    driver = _control.UdpDriver("127.0.0.1", server.port, DOF, key=key, limits_digest=DIGEST)
    driver.start()
    q = [0.1] * DOF
    v = [0.0] * DOF
    samples = []
    lost = 0
    try:
        t_end = time.monotonic() + 2.0
        while not driver.connected and time.monotonic() < t_end:
            driver.read_state()
            time.sleep(0.001)
        if not driver.connected:
            raise RuntimeError("bench: the UDP driver did not connect to the sim server")
        for i in range(n + 200):
            before = driver.rtt_count
            driver.write_command(q, v)
            deadline = time.perf_counter() + 0.05
            while driver.rtt_count == before and time.perf_counter() < deadline:
                driver.read_state()
            if driver.rtt_count == before:
                lost += 1
                continue
            if i >= 200:  # warm-up
                samples.append(driver.rtt_last_ns)
        link = driver.stats()
    finally:
        driver.stop()
        server.stop()
    out = stats_us(samples)
    out["timeouts"] = lost
    out["rx_malformed"] = link["rx_malformed"]
    return out


def _python_echo_server(sock: socket.socket, stop: threading.Event, key) -> None:
    seq = 0
    session = 4242
    sock.settimeout(0.05)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            continue
        packet = P.decode(data, key)
        seq += 1
        reply = {
            "type": "joint_state",
            "session_id": session,
            "sequence": seq,
            "stamp_ns": time.monotonic_ns(),
            "status": 0,
            "echo_command_sequence": packet["sequence"],
            "echo_command_stamp_ns": packet["stamp_ns"],
            "position": packet["position"],
            "velocity": packet["velocity"],
        }
        sock.sendto(P.encode(reply, key), addr)


def bench_python(n: int, key) -> dict:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(0.05)
    stop = threading.Event()
    thread = threading.Thread(target=_python_echo_server, args=(server, stop, key), daemon=True)
    thread.start()
    samples = []
    lost = 0
    addr = server.getsockname()
    try:
        for i in range(n + 200):
            t0 = time.perf_counter_ns()
            command = {
                "type": "joint_command",
                "session_id": 7,
                "sequence": i + 1,
                "stamp_ns": time.monotonic_ns(),
                "mode": 1,
                "position": [0.1] * DOF,
                "velocity": [0.0] * DOF,
            }
            client.sendto(P.encode(command, key), addr)
            try:
                data, _ = client.recvfrom(2048)
            except TimeoutError:
                lost += 1
                continue
            state = P.decode(data, key)
            t1 = time.perf_counter_ns()
            if state["echo_command_sequence"] != i + 1:
                lost += 1
                continue
            if i >= 200:
                samples.append(t1 - t0)
    finally:
        stop.set()
        thread.join()
        server.close()
        client.close()
    out = stats_us(samples)
    out["timeouts"] = lost
    return out


def bench_codec(n: int) -> dict:
    packet = {
        "type": "joint_command",
        "session_id": 7,
        "sequence": 1,
        "stamp_ns": 2,
        "mode": 1,
        "position": [0.1] * DOF,
        "velocity": [0.2] * DOF,
    }
    out = {}
    for name, enc, dec in (
        ("cpp_bindings", _control.encode_packet, _control.decode_packet),
        ("python", P.encode, P.decode),
    ):
        for key in (None, BENCH_KEY):
            data = enc(packet, key)
            t0 = time.perf_counter_ns()
            for _ in range(n):
                dec(enc(packet, key), key)
            per = (time.perf_counter_ns() - t0) / n / 1e3
            out[f"{name}{'_hmac' if key else ''}_us"] = per
            assert len(data) > 0
    return out


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="UDP command round trip on loopback (us)")
    for col in ("path", "n", "median", "p90", "p99", "max", "timeouts", "median vs python"):
        table.add_column(col)
    ref = results["round_trip"]["python_ref"]["median"]
    for name, r in results["round_trip"].items():
        table.add_row(
            name,
            str(r["n"]),
            f"{r['median']:.1f}",
            f"{r['p90']:.1f}",
            f"{r['p99']:.1f}",
            f"{r['max']:.1f}",
            str(r["timeouts"]),
            f"{ref / r['median']:.2f}x",
        )
    console = Console()
    console.print(table)
    codec = Table(title="encode + decode of one 8-joint command (us per packet)")
    codec.add_column("codec")
    codec.add_column("us")
    for k, v in results["codec"].items():
        codec.add_row(k, f"{v:.2f}")
    console.print(codec)
    console.print(f"peak RSS {results['peak_rss_mb']:.1f} MB; load average {results['load_average']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="round trips per path (after 200 warm-up)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_udp.json"))
    args = parser.parse_args(argv)
    results = {
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "round_trip": {
            "cpp": bench_cpp(args.n, b""),
            "cpp_hmac": bench_cpp(args.n, BENCH_KEY),
            "python_ref": bench_python(args.n, None),
            "python_ref_hmac": bench_python(args.n, BENCH_KEY),
        },
        "codec": bench_codec(2000),
    }
    ref = results["round_trip"]["python_ref"]
    for r in results["round_trip"].values():
        r["median_speedup_vs_python"] = ref["median"] / r["median"]
        r["p99_speedup_vs_python"] = ref["p99"] / r["p99"]
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out)
    print_table(results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
