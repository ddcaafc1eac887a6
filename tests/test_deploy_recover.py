"""deploy() never recovers by itself (docs/safety.md: after any stop the robot does not move again until someone
recovers it): recovery is the caller's explicit `recover` policy. A policy call that hangs past the watchdog makes a
real protective stop of the real-time loop against the rally sim-server (robot_rt.bridge.deploy)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robot_rt.bridge import deploy as deploy_mod
from robot_rt.bridge.deploy import DeployStopped, deploy, prompt_recover, recover_transient_stops
from robot_rt.control.loop import EVENT_CODES
from robot_rt.control.runlog import read_runlog
from robot_rt.robot import load_robot

ROBOT = load_robot()
HANG_S = 0.6  # > the deploy watchdog (DEPLOY_COMMAND_TIMEOUT_S, 0.2 s)


class HangOnce:
    """An env policy that holds still, and whose 30th call hangs for HANG_S (the loop is active by then)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, obs):
        self.calls += 1
        if self.calls == 30:
            time.sleep(HANG_S)
        return np.zeros(ROBOT.dof, np.float32)


def _deploy(tmp_path, recover, name):
    return deploy(
        HangOnce(), human="default", n_balls=1, seed=0, serve_interval_s=0.2, log_path=tmp_path / name, recover=recover
    )


def test_default_never_recovers_and_nothing_moves_after_the_stop(tmp_path):
    assert deploy_mod.deploy.__kwdefaults__["recover"] == "never"
    with pytest.raises(DeployStopped) as err:
        _deploy(tmp_path, "never", "never.rrlog")
    assert "watchdog" in err.value.reasons
    # what ran before the stop comes with it: no recovery, the stop on record, the rally cut short
    partial = err.value.result
    assert partial is not None and partial.recoveries == 0
    assert "watchdog" in partial.stop_reasons_seen and partial.safety_events["watchdog_stop"] >= 1
    assert len(partial.rally_lengths) == 0
    log = read_runlog(tmp_path / "never.rrlog")
    codes = log.event_names  # name -> code
    stops = [e for e in log.events if int(e["code"]) == codes["watchdog_stop"]]
    assert stops, "no watchdog stop in the run log"
    assert not any(int(e["code"]) == codes.get("recovered", -1) for e in log.events)
    # once the stop came to rest, the commanded position never moved again (until the loop ended, holding it while
    # the robot settled)
    rest = [e for e in log.events if int(e["code"]) == codes["stop_complete"] and e["tick"] >= stops[0]["tick"]]
    assert rest, "the stop never came to rest"
    cmd = log.ticks["command_position"][log.ticks["tick"] >= int(rest[0]["tick"])]
    assert len(cmd) > 10 and float(np.max(np.abs(cmd - cmd[0]))) == 0.0


def test_an_explicit_recover_policy_is_asked_with_the_reasons(tmp_path):
    asked = []

    def recover(reasons):
        asked.append(reasons)
        return recover_transient_stops(reasons)

    result = _deploy(tmp_path, recover, "recover.rrlog")
    assert asked and "watchdog" in asked[0] and all(isinstance(r, tuple) for r in asked)
    assert result.recoveries >= 1 and result.safety_events["recovered"] >= 1
    assert len(result.rally_lengths) == 1  # the deploy went on after the recovery
    log = read_runlog(tmp_path / "recover.rrlog")
    recovered = [e for e in log.events if int(e["code"]) == EVENT_CODES["recovered"]]
    assert recovered


def test_recover_policies_are_explicit(monkeypatch, capsys):
    assert recover_transient_stops(("watchdog",)) and recover_transient_stops(("sensor_timeout", "tracking_error"))
    assert not recover_transient_stops(("watchdog", "robot_fault"))
    assert not recover_transient_stops(("link_loss",)) and not recover_transient_stops(("estop",))
    flushed = []
    monkeypatch.setattr("robot_rt.control.commands.discard_typeahead", lambda: flushed.append(1) or True)
    for answer, expected in (("y", True), ("YES", True), ("", False), ("n", False)):
        monkeypatch.setattr("builtins.input", lambda prompt, a=answer: a)
        assert prompt_recover(("watchdog",)) is expected
    assert len(flushed) == 4  # the typeahead is discarded before every question
    assert "watchdog" in capsys.readouterr().out
    # no terminal: no question, no recovery
    monkeypatch.setattr("robot_rt.control.commands.discard_typeahead", lambda: False)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert prompt_recover(("watchdog",)) is False
    monkeypatch.setattr("robot_rt.control.commands.discard_typeahead", lambda: True)

    def no_terminal(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)
    assert prompt_recover(("watchdog",)) is False
    for bad in ("always", None, 1, ("watchdog",)):
        with pytest.raises(ValueError, match="recover"):
            deploy(lambda obs: np.zeros(ROBOT.dof, np.float32), n_balls=1, recover=bad)


def test_server_args_reach_the_sim_server():
    """`server_args` go to `robot-rt sim-server` as given: an invalid value there fails the deploy with the server's
    own message, before anything moves."""
    from robot_rt.envs.scripted import BatchedScriptedPolicy

    with pytest.raises(RuntimeError, match="tracking-time-constant"):
        deploy(BatchedScriptedPolicy(1), n_balls=1, server_args=["--tracking-time-constant", "-1"])
