"""Builds /tmp/audit13/sab/test_sab_egm.py: a throwaway copy of tests/test_control_stateful_egm.py with one bad thing
planted in what the harness RECORDS (the simulators get the genuine datagrams), chosen by SAB_KIND:
  egm_accel:    one EGM reference in 150 (seqno % 150 == 75) recorded with arm joint 2 +5 mrad (a step far below
                the velocity-step check's V (dt + 3 ms) ~ 30 mrad, far above what |a| <= 30 rad/s^2 allows in 4 ms)
  gantry_accel: one gantry command in ~300 recorded with gantry_y +1 mm (velocity-step check allows ~10 mm)
  stop_far:     the sampled gantry_y runs away after each stop (3 m/s for 0.35 s, then at rest: 1.05 m)
  stop_late:    the sampled gantry_y creeps after each stop (1 cm/s for 1.7 s, then at rest: the stop took 1.7 s)
  workspace:    one EGM reference in 150 recorded with arm joint 2 at home + 0.8 rad (blade 8 cm under the box floor)
Run: SAB_KIND=... FUZZ_EXAMPLES=6 FUZZ_RECORD=... pytest /tmp/audit13/sab/test_sab_egm.py -k TestControl"""

src = open("tests/test_control_stateful_egm.py").read()
hook = """
_SAB = os.environ.get("SAB_KIND", "")


def _sab_egm(data):
    m = EgmSensor()
    try:
        m.ParseFromString(data)
    except Exception:  # noqa: BLE001
        return data
    if m.header.seqno % 150 != 75 or len(m.planned.joints.joints) != 6:
        return data
    if _SAB == "egm_accel":
        m.planned.joints.joints[1] += float(np.degrees(5e-3))
    elif _SAB == "workspace":
        m.planned.joints.joints[1] = float(np.degrees(ROBOT.home[3] + 0.8))
        m.speedRef.joints.joints[0] = 1.0  # (no hold)
    else:
        return data
    return m.SerializeToString()

"""
src = src.replace(
    "\n# ------------------------------------------------------------------------------------------ the controller side\n",
    hook + "\n# ---------------------------------------------------------------- the controller side\n",
)
old = "        self._owner.rx.append((time.monotonic_ns(), data))\n"
assert old in src
src = src.replace(old, "        self._owner.rx.append((time.monotonic_ns(), _sab_egm(data) if _SAB else data))\n")
old = '    values = struct.unpack_from(f"<{2 * dof}d", data, 40)\n'
assert old in src
src = src.replace(
    old,
    old
    + '    values = list(values)\n    if _SAB == "gantry_accel" and (stamp // 1000) % 300 == 7:\n        values[0] += 1e-3\n',
)
old = '            q[GANTRY] = m.gantry_server.robot_server.snapshot()["position"]\n'
assert old in src
src = src.replace(
    old,
    old
    + """            if _SAB == "stop_far" and m.latches:  # a runaway after each stop: 3 m/s for 0.35 s, then at rest
                q[0] += 3.0 * min(0.35, (time.monotonic_ns() - m.latches[-1]["t0"]) * 1e-9)
            if _SAB == "stop_late" and m.latches:  # a creep after each stop: 1 cm/s for 1.7 s, then at rest
                q[0] += 0.01 * min(1.7, (time.monotonic_ns() - m.latches[-1]["t0"]) * 1e-9)
""",
)
old = "            time.sleep(0.5)  # late motion\n"
assert old in src
src = src.replace(
    old,
    "            time.sleep(2.5 if _SAB == 'stop_late' else 0.5)  # late motion (long enough to see the creep end)\n",
)
open("/tmp/audit13/sab/test_sab_egm.py", "w").write(src)
print("written")
