"""Run an env policy (trained or scripted on `robot_rt/TableTennis-v0` observations) in the real-time loop.

Design notes: docs/sim.md, section `robot_rt.bridge.env_policy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from robot_rt.control.loop import default_soft_margin, joint_vector, robot_model
from robot_rt.envs.core import WorldConfig
from robot_rt.envs.observation import build_observation, observation_bounds, observation_layout
from robot_rt.robot import RobotDescription, load_robot, paddle_blade_bounds, paddle_jacobian

# The workspace forecast's tick and horizon: 4 ms ticks follow the loop's 1 ms trajectory within 0.1 mm of paddle
# excursion on recorded deploys (at a quarter of the cost); 0.6 s covers a stop from full speed and the approach.
FORECAST_TICK_S = 0.004
FORECAST_HORIZON_TICKS = 150


# With velocity tracking, a paddle within this distance of a workspace face (inside the forecast's margin) moves
# along the face, not into it, when its commanded velocity's path would leave the box (velocity_path_checked).
FACE_SLIDE_M = 0.05


def velocity_path_checked(model, robot: RobotDescription, p, v, a, velocity, dt: float, margin_m: float):
    """The velocity to send with velocity tracking (LoopConfig.velocity_tracking), from the commanded joint state
    (p, v, a) and the policy's joint `velocity`, and whether it was changed: the loop follows a goal's velocity for
    its ramp and hold (2 dt), then brakes; when that path takes the paddle further out of the workspace box shrunk by
    margin_m than it is now (RobotModel.forecast_workspace), the velocity's components that move the paddle out
    through the faces it is within FACE_SLIDE_M of are removed (the paddle slides along them); if that path leaves
    the box too, no velocity (the loop brakes). Why: braking from speed carries the paddle well past a goal's velocity
    (0.19 m from 1.5 m/s on the gantry), and a paddle stopped at a face with its policy still pushing outwards would
    otherwise be held there for good."""
    duration = 2.0 * dt

    def excess(vel) -> float:
        return model.forecast_workspace(
            p, v, a, p + vel * duration, FORECAST_TICK_S, FORECAST_HORIZON_TICKS, margin_m, p, duration, True
        )[0]

    allowed = model.forecast_workspace(p, v, a, p, FORECAST_TICK_S, 0, margin_m, p, duration, True)[0] + 1e-6
    if excess(velocity) <= allowed:
        return velocity, False
    lowest, highest = paddle_blade_bounds(robot, p[None])  # the blade, as the loop measures it against the box
    jac = paddle_jacobian(robot, p[None])[0]  # paddle centre velocity per joint velocity [3, dof]
    slid = np.asarray(velocity, dtype=np.float64).copy()
    low = robot.workspace_min_m + margin_m + FACE_SLIDE_M
    high = robot.workspace_max_m - margin_m - FACE_SLIDE_M
    for axis in range(3):
        row = jac[axis]
        outward = -1.0 if lowest[0, axis] < low[axis] else (1.0 if highest[0, axis] > high[axis] else 0.0)
        rate = float(row @ slid)
        if outward != 0.0 and rate * outward > 0.0 and row @ row > 0.0:
            slid -= row * (rate / float(row @ row))  # the least change of joint velocities that stops it
    if excess(slid) <= allowed:
        return slid, True
    return np.zeros_like(slid), True


class EnvPolicyAdapter:
    """`RealTimeLoop` policy around an env policy `f(flat_obs) -> env action` (see docs/sim.md, `robot_rt.bridge.env_policy`).

    Args:
        policy: callable taking the flat observation [obs_dim] (or [1, obs_dim] with `batched=True`) and
            returning the env action [dof] or [1, dof] (NumPy or torch tensors): joint velocities as fractions of
            the velocity limits, as `robot_rt/TableTennis-v0` takes them.
        robot: the robot description (the loop's); history: detections in the observation (the env's
            `WorldConfig.history`, default 6); policy_hz: the env's policy rate (default: the env's step, `WorldConfig.step_s`).
        lead_s: the target stays within lead_s x velocity limit of the measured position.
        reset_gap_s: this long without a detection ends a rally (policy.reset()).
        max_catch_up: at most this many policy steps in one call.
        state: 'command' (default; 'loop' with velocity_tracking), 'loop' or 'measured': where the observation's q,
            qd come from (docs/sim.md, `robot_rt.bridge.env_policy`).
        latency_compensation_s: detections are shown this much older (the policy acts this much earlier).
        lead_time_s: None (default) integrates the target; a number re-anchors it at q + v (dt + lead_time_s).
        workspace_margin_m: targets whose paddle centre comes closer than this to the workspace box's faces are
            not sent (the last in-box target is held; the home pose when there is none).
        path_margin_m: the paddle path the loop's trajectory generator would take to a target held from the
            commanded state (`RobotModel.forecast_workspace`) must stay this far inside the workspace box; else the
            last sent target, or failing that the commanded position (the loop brakes to it), is sent instead
            (`path_holds`, `path_brakes`). None turns the forecast off. Why: a joint that arrives fast overshoots
            a target in the box (jerk-limited braking) and can carry the paddle out, which the loop answers with a
            workspace stop that nobody but an operator may recover from.
        velocity_tracking: the loop runs with `velocity_tracking=True` (it must: the forecast models it). The
            policy's velocity reaches the loop as the ramp between goals (goal = last goal + v dt, within lead_s of
            the measured position), and with state 'loop' (the default then) the policy sees the loop's commanded
            trajectory (`command_position`, `command_velocity` of the observation), as the env's jerk-limited robot
            shows its own state (`robot_rt.bridge.loop_model.LoopTrajectoryPolicy(velocity_tracking=True)`).
    """

    def __init__(
        self,
        policy: Callable,
        robot: RobotDescription | None = None,
        *,
        history: int | None = None,
        policy_hz: float | None = None,
        batched: bool = False,
        lead_s: float = 0.05,
        reset_gap_s: float = 0.3,
        max_catch_up: int = 10,
        workspace_margin_m: float = 0.03,
        path_margin_m: float | None = 0.01,
        lead_time_s: float | None = None,
        latency_compensation_s: float = 0.0,
        state: str | None = None,
        velocity_tracking: bool = False,
    ):
        if not callable(policy):
            raise TypeError(f"policy: expected a callable flat_obs -> env action, got {type(policy).__name__}")
        self.robot = robot if robot is not None else load_robot()
        self.history = WorldConfig().history if history is None else int(history)
        if self.history < 1:
            raise ValueError(f"history: expected >= 1 detections, got {history}")
        checked = [("lead_s", lead_s), ("reset_gap_s", reset_gap_s)] + (
            [("policy_hz", policy_hz)] if policy_hz is not None else []
        )
        for name, value in checked:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
        if int(max_catch_up) < 1:
            raise ValueError(f"max_catch_up: expected >= 1, got {max_catch_up}")
        # (a negative lead turns a velocity around; NaN freezes the robot in holds; a negative margin switches the
        # adapter's own workspace hold off; a lead of seconds lets targets run far ahead of the robot)
        if not lead_s <= 2.0:
            raise ValueError(f"lead_s: expected at most 2 s, got {lead_s!r}")
        if lead_time_s is not None and not (math.isfinite(lead_time_s) and 0.0 <= lead_time_s <= 1.0):
            raise ValueError(f"lead_time_s: expected None or a delay in [0, 1] s, got {lead_time_s!r}")
        if not (math.isfinite(workspace_margin_m) and workspace_margin_m >= 0.0):
            raise ValueError(f"workspace_margin_m: expected a distance >= 0 m, got {workspace_margin_m!r}")
        self.policy = policy
        self.batched = bool(batched)
        self.dof = self.robot.dof
        self.dt = WorldConfig().step_s if policy_hz is None else 1.0 / float(policy_hz)
        self.dt_ns = int(round(self.dt * 1e9))
        self.lead = float(lead_s) * self.robot.velocity_limit
        self.reset_gap_ns = int(reset_gap_s * 1e9)
        self.max_catch_up = int(max_catch_up)
        self.lead_time_s = None if lead_time_s is None else float(lead_time_s)
        if not (math.isfinite(latency_compensation_s) and 0.0 <= latency_compensation_s <= 0.5):
            raise ValueError(f"latency_compensation_s: expected a delay in [0, 0.5] s, got {latency_compensation_s!r}")
        self.compensation_ns = int(round(latency_compensation_s * 1e9))
        self.velocity_tracking = bool(velocity_tracking)
        # where targets are kept: the joint limits; with velocity tracking the loop's soft box (its default margin),
        # so that a joint held at its limit does not wind the integrated target up beyond it (the loop would clamp
        # those goals, and a reversal would first have to unwind the excess: the joint would not move meanwhile)
        margin = default_soft_margin(self.robot) if self.velocity_tracking else 0.0
        self._target_min = self.robot.position_min + margin
        self._target_max = self.robot.position_max - margin
        if state is None:
            state = "loop" if self.velocity_tracking else "command"
        if state not in ("measured", "command", "loop"):
            raise ValueError(f"state: expected 'measured', 'command' or 'loop', got {state!r}")
        self.state = state
        self.layout = observation_layout(self.dof, self.history)
        self.obs_low, self.obs_high = observation_bounds(self.robot, self.history)
        self.obs_dim = int(self.obs_low.shape[0])
        # statistics (read by deploy and tests)
        self.calls = 0
        self.policy_steps = 0
        self.catch_up_steps = 0
        self.early_calls = 0
        self.clock_resyncs = 0
        self.resets = 0
        self.detections_seen = 0
        self.obs_min = np.full(self.obs_dim, np.inf, dtype=np.float32)
        self.obs_max = np.full(self.obs_dim, -np.inf, dtype=np.float32)
        self.workspace_holds = 0
        self.path_holds = 0  # forecast path left the box: the last sent target was held
        self.path_brakes = 0  # ... and so did the held target's: the commanded position was sent (the loop brakes)
        if path_margin_m is not None and not (math.isfinite(path_margin_m) and path_margin_m >= 0.0):
            raise ValueError(f"path_margin_m: expected a distance >= 0 m or None, got {path_margin_m!r}")
        self.path_margin_m = None if path_margin_m is None else float(path_margin_m)
        self._model = robot_model(self.robot) if self.path_margin_m is not None else None
        self._ws_min = np.asarray(self.robot.workspace_min_m, dtype=np.float64) + workspace_margin_m
        self._ws_max = np.asarray(self.robot.workspace_max_m, dtype=np.float64) - workspace_margin_m
        self.last_observation: np.ndarray | None = None
        self.last_action: np.ndarray | None = None
        self._clear()

    def _clear(self) -> None:
        self._t0_ns: int | None = None
        self._k = 0
        self._target: np.ndarray | None = None
        self._sent: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._last_in_box: np.ndarray | None = None
        self._seen: dict[int, np.ndarray] = {}  # capture stamp_ns -> position, newest rally only
        self._last_detection_ns: int | None = None
        self._ended_ns: int | None = None  # detections up to this capture time belong to a finished rally

    def reset(self) -> None:
        """Forgets the clock, the detections and the target (the next call starts afresh)."""
        self._clear()

    # ------------------------------------------------------------------ observation
    def _ingest(self, obs: dict) -> None:
        recent = obs.get("recent_balls")
        if recent is None:  # a loop without the recent ring: the latest ball only
            ball = obs.get("latest_ball")
            stamps = [] if ball is None else [int(ball["stamp_ns"])]
            positions = [] if ball is None else [np.asarray(ball["position_m"], dtype=np.float64)]
        else:
            stamps = [int(s) for s in recent["stamp_ns"]]
            positions = list(np.asarray(recent["position_m"], dtype=np.float64).reshape(-1, 3))
        for stamp, pos in sorted(zip(stamps, positions), key=lambda item: item[0]):
            if stamp in self._seen or (self._ended_ns is not None and stamp <= self._ended_ns):
                continue
            if self._last_detection_ns is None or stamp > self._last_detection_ns:
                self._last_detection_ns = stamp
            self._seen[stamp] = pos
            self.detections_seen += 1
        if len(self._seen) > 4 * self.history + 16:  # keep the newest only
            for stamp in sorted(self._seen)[: len(self._seen) - (2 * self.history + 8)]:
                del self._seen[stamp]

    def _end_rally(self, now_ns: int) -> None:
        """The ball is gone (no detection for reset_gap_s): the episode is over, as in the env at termination,
        so the policy is reset and sees no stale detections (it goes back to its ready behaviour)."""
        self._ended_ns = self._last_detection_ns
        self._last_detection_ns = None
        self._new_rally()

    def _new_rally(self) -> None:
        self._seen.clear()
        self._t0_ns = None  # the policy's clock restarts with its reset
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            reset()
            self.resets += 1

    def detections(self, now_ns: int, extra_age_ns: int = 0) -> np.ndarray:
        """[history, 5] (x, y, z, age_s, valid), newest first, of the detections captured at or before now_ns;
        ages count from now_ns + extra_age_ns."""
        out = np.zeros((self.history, 5))
        visible = sorted((s for s in self._seen if s <= now_ns), reverse=True)[: self.history]
        for i, stamp in enumerate(visible):
            out[i, :3] = self._seen[stamp]
            out[i, 3] = (now_ns + extra_age_ns - stamp) * 1e-9
            out[i, 4] = 1.0
        return out

    def build(self, q, qd, now_ns: int, extra_age_ns: int = 0) -> np.ndarray:
        """The env observation (build_observation + the env's clipping) at policy time now_ns."""
        det = self.detections(now_ns, extra_age_ns)
        flat = build_observation(np.asarray(q, np.float64), np.asarray(qd, np.float64), det)
        return flat.clip(self.obs_low, self.obs_high)

    # ------------------------------------------------------------------ action
    def _act(self, flat: np.ndarray) -> np.ndarray:
        out = self.policy(flat[None] if self.batched else flat)
        if hasattr(out, "detach"):  # a torch tensor
            out = out.detach().cpu().numpy()
        v = joint_vector(out, self.dof, "policy output", noun="actions (one per joint)")
        if not np.all(np.isfinite(v)):
            raise ValueError("policy output: contains NaN or Inf")
        return np.clip(v, -1.0, 1.0) * self.robot.velocity_limit  # the env's action -> joint velocities

    def __call__(self, obs: dict) -> np.ndarray | None:
        self.calls += 1
        q = np.asarray(obs["measured_position"], dtype=np.float64)
        qd = np.asarray(obs["measured_velocity"], dtype=np.float64)
        now_ns = int(obs["stamp_ns"])
        self._ingest(obs)
        if self._last_detection_ns is not None and now_ns - self._last_detection_ns > self.reset_gap_ns:
            self._end_rally(now_ns)
        if self._t0_ns is None:
            self._t0_ns, self._k = now_ns, 0
            self._target = q.copy() if self._target is None else self._target
        # grid steps whose time has come, to the nearest step: the loop's calls jitter around the grid (its runner
        # wakes on a 1 ms tick after a Python sleep), and a floor would turn a call a tick early into no step
        # followed by a double step (the target standing still for a period, then jumping two)
        due = (now_ns - self._t0_ns + self.dt_ns // 2) // self.dt_ns + 1 - self._k
        if due > self.max_catch_up:
            self._t0_ns += (due - self.max_catch_up) * self.dt_ns
            self.clock_resyncs += 1
            due = self.max_catch_up
        if due <= 0:
            self.early_calls += 1
            if self.velocity_tracking:  # the loop reads each goal's step as a velocity: a repeat would ask a brake
                return None
        for _ in range(int(due)):
            t_ns = self._t0_ns + self._k * self.dt_ns
            if self.state == "command" and self._v is not None:
                # the state the commands lead to (a Smith predictor: the env's robot has no servo lag)
                q_obs, qd_obs = np.clip(self._target, q - self.lead, q + self.lead), self._v
            elif self.state == "loop" and obs.get("command_position") is not None:
                # the loop's commanded trajectory (what the servo follows; the env's robot with velocity tracking)
                q_obs = np.asarray(obs["command_position"], dtype=np.float64)
                qd_obs = np.asarray(obs["command_velocity"], dtype=np.float64)
            else:
                q_obs, qd_obs = q, qd
            flat = self.build(q_obs, qd_obs, t_ns, self.compensation_ns)
            np.minimum(self.obs_min, flat, out=self.obs_min)
            np.maximum(self.obs_max, flat, out=self.obs_max)
            self.last_observation = flat
            v = self._act(flat)
            self.last_action = v
            self._v = v
            if self.velocity_tracking:
                # one period's worth of the newest velocity from the last goal, however many steps this call took:
                # the loop reads the goal's step as the velocity (catch-up steps keep the policy's clock, not the sum)
                base = self._sent if self._sent is not None else self._target
                self._target = base + v * self.dt
            elif self.lead_time_s is None:
                self._target = self._target + v * self.dt
            else:  # re-anchored every step: the target leads the measured position by the servo lag
                self._target = q + v * (self.dt + self.lead_time_s)
            self._k += 1
            self.policy_steps += 1
        self.catch_up_steps += max(0, int(due) - 1)
        q_in_box = self._in_workspace(q)
        if q_in_box:
            self._last_in_box = q.copy()
        # anchored to the measured position (no drift), inside the joint box
        target = np.clip(self._target, q - self.lead, q + self.lead)
        target = np.clip(target, self._target_min, self._target_max)
        if not self._in_workspace(target):
            # the loop would reject it (and its workspace stop would park the robot out of the box, where every
            # target near it is rejected too): hold the last in-box target, or head for the home pose
            self.workspace_holds += 1
            sent_ok = (
                self._sent is not None
                and np.all(np.abs(self._sent - q) <= self.lead)
                and self._in_workspace(self._sent)
            )
            if sent_ok or (self.velocity_tracking and self._sent is not None):
                # (with velocity tracking the last goal again is no velocity, i.e. the brake; a goal elsewhere, such
                # as the measured position, would ask for a velocity towards it)
                target = self._sent
            elif q_in_box:
                target = q.copy()  # stay where the robot is (the loop brakes to it)
            elif self._last_in_box is not None:
                # outside the box (a stop carried it out): back to the last pose inside, a short move whose
                # paddle path heads back into the box (the loop allows that after its workspace stop)
                target = self._last_in_box.copy()
            else:
                target = self.robot.home.copy()
        if self._model is not None:
            target = self._forecast_checked(obs, q, qd, target)
        self._target = target
        self._sent = target.copy()
        return target.copy()

    def _forecast_checked(self, obs: dict, q: np.ndarray, qd: np.ndarray, target: np.ndarray) -> np.ndarray:
        """`target`, or what replaces it when the loop's trajectory to it would carry the paddle out of the box:
        the last sent target, or else the commanded position (the loop brakes to it: the least excursion left)."""
        if obs.get("command_position") is not None:
            pos = np.asarray(obs["command_position"], dtype=np.float64)
            vel = np.asarray(obs["command_velocity"], dtype=np.float64)
            acc = obs.get("command_acceleration")
            acc = np.zeros(self.dof) if acc is None else np.asarray(acc, dtype=np.float64)
        else:  # a loop observation without the commanded state: the measured one stands in for it
            pos, vel, acc = q, qd, np.zeros(self.dof)
        ramp = obs.get("target_position", self._sent)  # the loop's interpolated target: its ramp starts there
        ramp = pos if ramp is None else np.asarray(ramp, dtype=np.float64)

        def excess(goal: np.ndarray, horizon: int = FORECAST_HORIZON_TICKS) -> float:
            return self._model.forecast_workspace(
                pos, vel, acc, goal, FORECAST_TICK_S, horizon, self.path_margin_m, ramp, self.dt
            )[0]

        if self.velocity_tracking:
            return self._velocity_checked(pos, vel, acc, target)
        allowed = excess(pos, 0) + 1e-6  # a robot already outside may only come back (as the loop's guard)
        first = excess(target)
        if first <= allowed:
            return target
        # the fallbacks, in order: hold the last sent target; send the commanded position (the loop brakes to it).
        # When neither keeps the paddle in, the one with the least excursion (a brake once begun is held, not
        # re-anchored where the robot has got to, which would keep it moving).
        options = [(first, 0, target)]
        if self._sent is not None:
            options.append((excess(self._sent), 1, self._sent))
        braking = np.clip(pos, self.robot.position_min, self.robot.position_max)
        options.append((excess(braking), 2, braking))
        within = [o for o in options[1:] if o[0] <= allowed]
        best = within[0] if within else min(options[1:], key=lambda o: o[0])
        if best[1] == 1:
            self.path_holds += 1
        else:
            self.path_brakes += 1
        return best[2].copy()

    def _velocity_checked(self, pos, vel, acc, target: np.ndarray) -> np.ndarray:
        """The path forecast with velocity tracking (velocity_path_checked): the goal that asks the loop for the
        checked velocity (the last sent target plus it over one period)."""
        if self._sent is None:
            return target
        velocity, changed = velocity_path_checked(
            self._model, self.robot, pos, vel, acc, (target - self._sent) / self.dt, self.dt, self.path_margin_m
        )
        if not changed:
            return target
        if np.any(velocity != 0.0):
            self.path_holds += 1  # slid along a face
        else:
            self.path_brakes += 1
        return self._sent + velocity * self.dt

    def _in_workspace(self, q: np.ndarray) -> bool:
        """Whether the whole blade lies in the box less workspace_margin_m (the loop refuses a target whose blade
        does not: measured by the centre alone, such targets were sent, refused, and the watchdog stopped the robot)."""
        lowest, highest = paddle_blade_bounds(self.robot, q[None])
        return bool(np.all(lowest[0] >= self._ws_min) and np.all(highest[0] <= self._ws_max))

    def stats(self) -> dict:
        return {
            "calls": self.calls,
            "policy_steps": self.policy_steps,
            "catch_up_steps": self.catch_up_steps,
            "early_calls": self.early_calls,
            "clock_resyncs": self.clock_resyncs,
            "resets": self.resets,
            "workspace_holds": self.workspace_holds,
            "path_holds": self.path_holds,
            "path_brakes": self.path_brakes,
            "detections_seen": self.detections_seen,
        }
