"""A run-time policy for CLI tests (`--policy helpers.stalling_policy:stall`): holds the robot, then stalls for
longer than the loop's command timeout, so the run ends in the watchdog's protective stop."""

from __future__ import annotations

import time

from robot_rt.control.policies import Hold


class Stall(Hold):
    def __init__(self, robot, calls_before_stall: int = 50, stall_s: float = 0.3):
        super().__init__(robot)
        self.calls = 0
        self.calls_before_stall = calls_before_stall
        self.stall_s = stall_s

    def __call__(self, obs):
        self.calls += 1
        if self.calls == self.calls_before_stall:
            time.sleep(self.stall_s)
        return super().__call__(obs)


stall = Stall
