"""A short real run log for the exporter tests (MCAP, Rerun)."""

from __future__ import annotations

import math
import time


def record_demo_run(path) -> None:
    """Runs the loop on the in-process simulated robot for about half a second and writes its run log to `path`:
    moving joints, five ball detections, a link event (udp_lost, value 3), a NaN target (a non_finite_command event
    whose value is NaN) and an e-stop."""
    from robot_rt.control.loop import RealTimeLoop
    from robot_rt.robot import load_robot

    robot = load_robot()

    def policy(obs):
        q = robot.home.copy()
        q[0] = 0.2 * math.sin(obs["stamp_ns"] * 1e-9 * 8)
        q[3] = robot.home[3] + 0.2 * math.sin(obs["stamp_ns"] * 1e-9 * 5)
        return q

    loop = RealTimeLoop(robot, policy=policy, log_path=path, log_flush_interval_s=0.02)
    with loop:
        time.sleep(0.25)
        now = loop.observation()["stamp_ns"]
        for k in range(5):
            loop.driver.push_ball_observation(
                now - 3_000_000 + k, [0.5 + 0.1 * k, -0.2, 1.0 + 0.01 * k], 0.9, 1, 100 + k
            )
        loop.push_event("udp_lost", value=3.0)
        q = robot.home.copy()
        q[2] = float("nan")
        loop.send_command(q, obs=loop.observation())
        time.sleep(0.1)
        loop.estop()
        time.sleep(0.15)
