"""Fixed 2026-12-07 (see README.md). Observation (thirteenth audit, not a limit violation by the brief's terms: holds are exempt): a muted EGM arm's
hold is anchored at the loop's last CHECKED position, so when the arm was moving and its feedback stopped for a
while (controller silent / feedback dropped), the hold sent once the controller talks again lies behind where the arm
went meanwhile, and the stopped arm is commanded back (speedRef 0, a step against its motion).

Sequence: composite rig (tests/test_control_stateful_egm.py `_egm_rig`), loop started, target far on arm joint 1;
once the arm moves fast, the controller goes silent for SILENCE_MS (the loop: sensor timeout / link loss, mutes);
when it talks again the driver answers with holds. Prints the arm joint over time (sampled from the simulator), the
first hold received, and how far the arm moved BACK after the stop."""

import sys
import threading
import time

sys.path.insert(0, "tests")
import numpy as np
import test_control_stateful_egm as T

SILENCE_MS = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
J = 1  # arm joint index (EGM axis 2 = robot joint 3)
m = T.EgmMachine()
m.setup(velocity_tracking=False)  # the fuzz harness's composite robot (gantry over UDP, arm over EGM), loop started
controller, loop = m.controller, m.loop
try:
    time.sleep(0.3)
    target = T.ROBOT.home.copy()
    target[2 + J] = T.ROBOT.position_min[2 + J] + 0.3
    m.policy.target = target
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.monotonic(), float(controller.position[J])))
            time.sleep(0.001)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:
        if len(samples) > 3 and abs(samples[-1][1] - samples[-3][1]) / max(1e-9, samples[-1][0] - samples[-3][0]) > 2.5:
            break
        time.sleep(0.001)
    n_rx = len(controller.rx)
    t_sil = time.monotonic()
    controller.silence(SILENCE_MS / 1000.0)
    time.sleep(1.0)
    stop.set()
    th.join()
    print("lifecycle", loop.lifecycle, loop.stop_reasons)
    refs = []
    for t, data in controller.rx[n_rx:]:
        s_ = T.EgmSensor()
        s_.ParseFromString(data)
        refs.append((t * 1e-9, np.radians(s_.planned.joints.joints[J]), np.radians(s_.speedRef.joints.joints[J])))
    first = refs[0] if refs else None
    ts = np.array([s[0] for s in samples])
    qs = np.array([s[1] for s in samples])
    i = np.searchsorted(ts, t_sil)
    v = (qs[i] - qs[i - 10]) / (ts[i] - ts[i - 10])
    print(f"arm joint {J}: at the silence's start {qs[i]:.4f} moving {v:.2f} rad/s")
    if first:
        k = min(np.searchsorted(ts, first[0]), len(qs) - 1)
        print(
            f"first reference after the silence ({(first[0] - t_sil) * 1e3:.0f} ms): planned {first[1]:.4f} speedRef {first[2]}, the arm then at {qs[k]:.4f}"
        )
    ext = qs[i:]
    farthest = ext.max() if v > 0 else ext.min()
    print(
        f"farthest along its motion {farthest:.4f}, at rest at {qs[-1]:.4f}: moved back {abs(farthest - qs[-1]):.4f} rad after the stop"
    )
finally:
    m.teardown() if False else None
    for lp in m.loops:
        lp.stop()
    m.sampler.stop()
    for d in m.drivers:
        d.stop()
    m.controller.stop()
    m.proxy.stop()
    m.gantry_server.stop()
