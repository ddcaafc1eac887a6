"""The real-time loop's trajectory inside the env: an env policy wrapper that moves the env's robot the way the loop
would move the real one, so that a policy can be evaluated and tuned in the batched env as it will run through the
loop (docs/sim.md, `robot_rt.bridge.loop_model`).

Why: the env's robot changes its velocity within the acceleration limit at once; the loop's safety filter (otg.hpp,
stop.hpp) moves the robot along a jerk-limited trajectory whose OTG aims at zero acceleration on a constant-velocity
reference, so it lags and overshoots any swing (docs/results/2026-12-04/loop_gap_ablation.md). A policy tuned in the
plain env returns 0.94 of the balls there and 0.42-0.50 through the loop.

Per env step, for each environment, what `EnvPolicyAdapter` and the loop do with the policy's action:
  1. the policy sees the adapter's observation: q = the commanded target clipped to q_measured +- lead, qd = the last
     commanded velocity (the adapter's Smith predictor), the camera detections unchanged;
  2. the adapter's target: goal = clip(target + v dt, q +- lead), inside the joint limits, held at the last target
     when its paddle centre would leave the workspace box shrunk by 3 cm (the adapter's workspace hold);
  3. the loop's interpolation (linear from the last target to the goal over the period, with that velocity as feed-
     forward) at the loop's rate, through the loop's own `SafetyFilter` (C++, the soft joint box of the loop);
  4. the env's robot is sent the velocity that takes it to the filter's position at the end of the step, capped so
     it can stop before its joint limits (the sim-server's robot stops at a limit; the env would end the episode).
The env's robot must be `drive_robot(robot)`: the same robot with the servo drive's peak acceleration (2 A, servo.hpp:
a drive has headroom above the trajectory's limits, as the sim-server's has). With it the env's robot follows the
filter's trajectory within about 1 mrad; with the trajectory's own A it lags by up to 0.4 rad on reversals.
Cost: one C++ filter call per environment and step (~25 us), so this is for evaluation and tuning (a few hundred
environments), not for RL throughput.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from robot_rt import _control
from robot_rt.control.loop import default_soft_margin, robot_model
from robot_rt.envs.core import WorldConfig
from robot_rt.robot import RobotDescription, load_robot, paddle_blade_bounds

WORKSPACE_MARGIN_M = 0.03  # EnvPolicyAdapter's default workspace_margin_m
LIMIT_ROOM = 2e-3  # the env's robot brakes to stop this far inside its joint limits


def drive_robot(robot: RobotDescription | None = None) -> RobotDescription:
    """`robot` with the servo drive's peak acceleration (SERVO_DRIVE_ACCELERATION_FACTOR x the trajectory's limit):
    the env's robot for `LoopTrajectoryPolicy`, which stands for the servo that follows the loop's trajectory."""
    robot = robot if robot is not None else load_robot()
    factor = float(_control.SERVO_DRIVE_ACCELERATION_FACTOR)
    joints = tuple(dataclasses.replace(j, acceleration_limit=factor * j.acceleration_limit) for j in robot.joints)
    return dataclasses.replace(robot, joints=joints)


class LoopTrajectoryPolicy:
    """Wraps a batched env policy (flat observations [N, D] in, normalised actions [N, dof] out) for N environments
    of a vector env whose robot is `drive_robot(robot)`; see the module docstring and `reset`."""

    def __init__(
        self,
        policy,
        robot: RobotDescription | None = None,
        num_envs: int = 1,
        *,
        lead_s: float = 0.05,
        loop_rate_hz: float = 1000.0,
        velocity_tracking: bool = False,
        path_margin_m: float | None = 0.01,
    ):
        if not callable(policy):
            raise TypeError(f"policy: expected a callable env policy, got {type(policy).__name__}")
        self.policy = policy
        self.robot = robot if robot is not None else getattr(policy, "robot", None) or load_robot()
        self.n = int(num_envs)
        if self.n < 1:
            raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
        self.dof = self.robot.dof
        self.dt = WorldConfig().step_s
        ticks = self.dt * float(loop_rate_hz)
        if not (ticks >= 1 and abs(ticks - round(ticks)) < 1e-9):
            raise ValueError(f"loop_rate_hz: expected a whole number of loop ticks per env step, got {loop_rate_hz}")
        self.ticks = int(round(ticks))
        self.margin = default_soft_margin(self.robot)
        self.model = robot_model(self.robot, workspace=False, soft_margin=self.margin)
        self.lead = float(lead_s) * self.robot.velocity_limit
        self.v_max = self.robot.velocity_limit
        self.filters: list = [None] * self.n
        self.target = np.zeros((self.n, self.dof))
        self.v = np.zeros((self.n, self.dof))
        self.filter_position = np.zeros((self.n, self.dof))  # where the filter's trajectory ends this step
        self.filter_velocity = np.zeros((self.n, self.dof))
        # the loop's LoopConfig.velocity_tracking, and the adapter's state='loop' that goes with it
        self.velocity_tracking = bool(velocity_tracking)
        # with velocity tracking, the adapter's path forecast (EnvPolicyAdapter path_margin_m; None: off): a goal whose
        # velocity path (its ramp and hold, then the brake) leaves the workspace box is replaced by the last one
        self.path_margin_m = path_margin_m if self.velocity_tracking else None
        self._box_model = robot_model(self.robot, soft_margin=self.margin) if self.path_margin_m is not None else None
        self.filter_acceleration = np.zeros((self.n, self.dof))
        self.path_brakes = 0
        self._fresh = np.ones(self.n, dtype=bool)
        self._pending = np.zeros(self.n, dtype=np.int64)
        self._box_low = self.robot.workspace_min_m + WORKSPACE_MARGIN_M
        self._box_high = self.robot.workspace_max_m - WORKSPACE_MARGIN_M

    def reset(self, mask=None) -> None:
        """mask None (all, after `env.reset()`): the next call starts every episode. A mask (the vector env's
        autoreset): this call's action is ignored by the env, the call after it starts those episodes."""
        reset = getattr(self.policy, "reset", None)
        if mask is None:
            self._fresh[:] = True
            self._pending[:] = 0
            if callable(reset):
                reset()
            return
        mask = np.asarray(mask, dtype=bool)
        self._pending[mask] = 2
        if callable(reset):
            reset(mask)

    def restart(self, mask) -> None:
        """The robot of these environments was put somewhere else between two calls (an env that keeps the robot
        across episodes sent it home: `TableTennisWorld.robot_sent_home`): the next call restarts their trajectories
        at rest where the robot is observed. The wrapped policy is not reset (the caller resets it as its episodes
        require)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n,):
            raise ValueError(f"mask: expected a bool array of shape ({self.n},), got {mask.shape}")
        self._fresh |= mask

    def _restart(self, i: int, q: np.ndarray) -> None:
        q0 = np.clip(q, self.robot.position_min + self.margin + 1e-9, self.robot.position_max - self.margin - 1e-9)
        self.filters[i] = _control.SafetyFilter(
            self.model, self.dt / self.ticks, q0, velocity_tracking=self.velocity_tracking
        )
        self.target[i] = q0
        self.v[i] = 0.0
        self.filter_position[i] = q0
        self.filter_velocity[i] = 0.0
        self.filter_acceleration[i] = 0.0

    def __call__(self, obs) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape[0] != self.n:
            raise ValueError(f"obs: expected [{self.n}, D] flat observations, got shape {obs.shape}")
        q = obs[:, : self.dof].astype(np.float64)
        self._fresh |= self._pending == 1
        self._pending = np.maximum(self._pending - 1, 0)
        for i in np.nonzero(self._fresh)[0]:
            self._restart(int(i), q[i])
        self._fresh[:] = False
        shown = obs.copy()
        if self.velocity_tracking:  # the adapter's state='loop': the filter's trajectory
            shown[:, : self.dof] = self.filter_position
            shown[:, self.dof : 2 * self.dof] = self.filter_velocity
        else:
            shown[:, : self.dof] = np.clip(self.target, q - self.lead, q + self.lead)
            shown[:, self.dof : 2 * self.dof] = np.clip(self.v, -self.v_max, self.v_max)
        action = np.asarray(self.policy(shown), dtype=np.float64).reshape(self.n, self.dof)
        v = np.clip(action, -1.0, 1.0) * self.v_max
        start = self.target.copy()
        goal = np.clip(self.target + v * self.dt, q - self.lead, q + self.lead)
        if self.velocity_tracking:  # the adapter's anti-windup: targets inside the loop's soft box
            goal = np.clip(goal, self.robot.position_min + self.margin, self.robot.position_max - self.margin)
        else:
            goal = np.clip(goal, self.robot.position_min, self.robot.position_max)
        lowest, highest = paddle_blade_bounds(self.robot, goal)  # the whole blade, as the adapter and the loop see it
        outside = np.any(lowest < self._box_low, axis=1) | np.any(highest > self._box_high, axis=1)
        goal[outside] = start[outside]
        if self._box_model is not None:
            self._path_checked(start, goal)
        frac = (np.arange(self.ticks) + 1.0) / self.ticks
        for i in range(self.n):
            refs = start[i] + frac[:, None] * (goal[i] - start[i])
            vel = np.ascontiguousarray(np.broadcast_to((goal[i] - start[i]) / self.dt, refs.shape))
            states, _, _ = self.filters[i].run(np.ascontiguousarray(refs), target_velocity=vel)
            self.filter_position[i] = states[-1, :, 0]
            self.filter_velocity[i] = states[-1, :, 1]
            self.filter_acceleration[i] = states[-1, :, 2]
        self.target, self.v = goal, v
        cmd = (self.filter_position - q) / self.dt
        a = self.robot.acceleration_limit
        up = np.maximum(np.sqrt(2 * a * np.maximum(self.robot.position_max - LIMIT_ROOM - q, 0.0)) - a * self.dt, 0.0)
        down = np.maximum(np.sqrt(2 * a * np.maximum(q - self.robot.position_min - LIMIT_ROOM, 0.0)) - a * self.dt, 0.0)
        return np.clip(np.clip(cmd, -down, up) / self.v_max, -1.0, 1.0).astype(np.float32)

    def _path_checked(self, start: np.ndarray, goal: np.ndarray) -> None:
        """EnvPolicyAdapter's path check with velocity tracking (velocity_path_checked) for every environment, in
        place on `goal`."""
        from .env_policy import velocity_path_checked

        for i in range(self.n):
            velocity, changed = velocity_path_checked(
                self._box_model,
                self.robot,
                self.filter_position[i],
                self.filter_velocity[i],
                self.filter_acceleration[i],
                (goal[i] - start[i]) / self.dt,
                self.dt,
                self.path_margin_m,
            )
            if changed:
                self.path_brakes += 1
                goal[i] = start[i] + velocity * self.dt


def loop_model_setup(robot: RobotDescription | None = None, num_envs: int = 1) -> dict:
    """The keyword arguments that put the loop model into `collect_shot_data` and `dagger_distill`: `env_robot`
    (`drive_robot(robot)`) and `wrap_policy(policy, n=num_envs)` (a `LoopTrajectoryPolicy` around `policy` for n
    environments)."""
    robot = robot if robot is not None else load_robot()

    def wrap_policy(policy, n: int = num_envs) -> LoopTrajectoryPolicy:
        return LoopTrajectoryPolicy(policy, robot, n)

    return {"env_robot": drive_robot(robot), "wrap_policy": wrap_policy}


def play_as_the_loop(
    policy,
    num_envs: int,
    steps: int,
    *,
    human=None,
    robot: RobotDescription | None = None,
    serve_interval_s: float = 0.8,
    seed: int = 0,
) -> dict:
    """Plays `policy` (a batched env policy for `num_envs` environments, with `reset(mask)` as
    `BatchedScriptedPolicy` has it) for `steps` env steps as the real-time loop plays it, rally after rally: the loop
    model's trajectory (`LoopTrajectoryPolicy` on `drive_robot(robot)`) goes on across rallies, the next serve comes
    `serve_interval_s` after a rally ends with the robot where it was left (WorldConfig.serve_delay_s,
    keep_robot_pose; a rally ended by a limit leaves it at home, as a recovered robot, and the trajectory restarts
    there), and the policy alone is reset once a new rally's first observation is in (the loop's adapter resets it
    when the ball is gone). Only the rallies that ended within `steps` count (as `deploy` counts finished rallies).
    Against `human` (a HumanBehaviorModel; None: the default). The episodic env (every episode at home with the ball
    served) sees no difference between a network that gets back into position and one that does not (2.6 for one
    that plays 0.28 through the loop); this does (0.82), and reads 0.2-0.5 high for policies that play
    (docs/results/2026-12-05/between_rallies/).
    Returns {'rally_lengths': [...] of the rallies that ended, 'outcomes': {name: count}, 'steps', 'env_s'}."""
    from robot_rt.envs.vector import TableTennisVectorEnv

    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    if not (isinstance(serve_interval_s, (int, float)) and 0.0 <= serve_interval_s <= 60.0):
        raise ValueError(f"serve_interval_s: expected seconds in [0, 60], got {serve_interval_s!r}")
    robot = robot if robot is not None else load_robot()
    config = WorldConfig(serve_delay_s=float(serve_interval_s), keep_robot_pose=True)
    env = TableTennisVectorEnv(num_envs, human=human, robot=drive_robot(robot), config=config, max_episode_steps=6000)
    player = LoopTrajectoryPolicy(policy, robot, num_envs)
    rallies: list[int] = []
    outcomes: dict[str, int] = {}
    try:
        obs, _ = env.reset(seed=seed)
        player.reset()
        starting = np.zeros(num_envs, dtype=bool)  # these environments' rallies began with this step's observation
        for _ in range(int(steps)):
            obs, _, terminated, truncated, info = env.step(player(obs))
            if starting.any():
                # a rally that ended by a limit left the robot where the next would end at once: the env put it at
                # home, so the trajectory restarts there (else it would drive the robot back to where it was)
                player.restart(starting & env.world.robot_sent_home)
                if callable(getattr(policy, "reset", None)):
                    policy.reset(starting)
            ended = terminated | truncated
            for i in np.nonzero(ended)[0]:
                rallies.append(int(info["rally_length"][i]))
                name = str(info["outcome"][i])
                outcomes[name] = outcomes.get(name, 0) + 1
            starting = ended
    finally:
        env.close()
    return {"rally_lengths": rallies, "outcomes": outcomes, "steps": int(steps), "env_s": int(steps) * env.dt}
