// Interpolation between policy commands (typically 100 Hz) for the loop's ticks (typically 1 kHz).
//
// When a new goal arrives at time t0, the target moves linearly from where the interpolated target is at t0
// to the goal over `duration` (the measured interval between policy commands, smoothed, clamped to
// [2 ticks, max_duration]), with the matching velocity feed-forward; afterwards it holds the goal with zero
// velocity. The target is continuous in position; the safety filter downstream makes the commanded motion
// jerk-limited. When no new goal arrives the target is held (the watchdog decides when to stop).
#pragma once

#include <cstdint>

#include "driver.hpp"

namespace robot_rt::control {

class Interpolator {
 public:
  void configure(int dof, double nominal_period_s, double min_duration_s, double max_duration_s) noexcept {
    dof_ = dof;
    period_s_ = nominal_period_s;
    nominal_period_s_ = nominal_period_s;
    min_s_ = min_duration_s;
    max_s_ = max_duration_s;
    last_goal_ns_ = -1;
  }

  // Holds `position_si` from time now_ns (no motion).
  void hold(const double* position_si, std::int64_t now_ns) noexcept {
    for (int i = 0; i < dof_; ++i) {
      start_[i] = goal_[i] = position_si[i];
      goal_velocity_[i] = 0.0;
    }
    t0_ns_ = now_ns;
    duration_ns_ = 1;
    has_previous_ = false;
  }

  void set_goal(const double* goal_si, std::int64_t now_ns) noexcept {
    const double ramp_s = ramp_duration_s(now_ns);
    period_s_ = next_period_s(now_ns);
    last_goal_ns_ = now_ns;
    double v_unused[kMaxDof];
    sample(now_ns, start_, v_unused);
    // the velocity the goals ask for (velocity tracking): the step from the previous goal is one nominal policy
    // period of it (EnvPolicyAdapter sends exactly that; the measured interval would read arrival jitter and a
    // skipped call as velocity); the first goal after a hold has no predecessor and asks for none
    goal_velocity_for(goal_si, goal_velocity_);
    for (int i = 0; i < dof_; ++i) goal_[i] = previous_[i] = goal_si[i];
    has_previous_ = true;
    t0_ns_ = now_ns;
    duration_ns_ = static_cast<std::int64_t>(ramp_s * 1e9);
    if (duration_ns_ < 1) duration_ns_ = 1;
  }

  // The ramp a goal set at now_ns would get (its duration in s), without setting it (the loop's path guard).
  double ramp_duration_s(std::int64_t now_ns) const noexcept {
    const double d = next_period_s(now_ns);
    return d < min_s_ ? min_s_ : (d > max_s_ ? max_s_ : d);
  }

  void sample(std::int64_t now_ns, double* position_si, double* velocity_si) const noexcept {
    const std::int64_t dt = now_ns - t0_ns_;
    if (dt >= duration_ns_) {
      for (int i = 0; i < dof_; ++i) {
        position_si[i] = goal_[i];
        velocity_si[i] = 0.0;
      }
      return;
    }
    const double s = dt <= 0 ? 0.0 : static_cast<double>(dt) / static_cast<double>(duration_ns_);
    const double inv_d = 1e9 / static_cast<double>(duration_ns_);
    for (int i = 0; i < dof_; ++i) {
      position_si[i] = start_[i] + s * (goal_[i] - start_[i]);
      velocity_si[i] = (goal_[i] - start_[i]) * inv_d;
    }
  }

  // Velocity tracking's reference (LoopConfig::velocity_tracking): the goals' velocity, held from the last goal for
  // its ramp and hold_s more (a goal that comes a little late does not brake the joint in between), then 0.
  void sample_velocity(std::int64_t now_ns, double hold_s, double* velocity_si) const noexcept {
    const bool live = now_ns - t0_ns_ < duration_ns_ + static_cast<std::int64_t>(hold_s * 1e9);
    for (int i = 0; i < dof_; ++i) velocity_si[i] = live ? goal_velocity_[i] : 0.0;
  }
  // That velocity and how long it still holds at now_ns (for the path guard's forecast).
  double velocity_remaining_s(std::int64_t now_ns, double hold_s, double* velocity_si) const noexcept {
    const double left = 1e-9 * static_cast<double>(duration_ns_ - (now_ns - t0_ns_)) + hold_s;
    for (int i = 0; i < dof_; ++i) velocity_si[i] = left > 0.0 ? goal_velocity_[i] : 0.0;
    return left > 0.0 ? left : 0.0;
  }
  // The velocity a goal set now would ask for (without setting it): its step from the session's previous goal.
  void goal_velocity_for(const double* goal_si, double* velocity_si) const noexcept {
    for (int i = 0; i < dof_; ++i)
      velocity_si[i] = has_previous_ ? (goal_si[i] - previous_[i]) / nominal_period_s_ : 0.0;
  }
  // A valid goal that was not set (the path guard held it): it is still the predecessor of the next goal, whose
  // step from it is one period of the velocity the session asks for. Measured from the last goal set instead, that
  // step would span two periods and ask for twice the velocity.
  void note_unset_goal(const double* goal_si) noexcept {
    for (int i = 0; i < dof_; ++i) previous_[i] = goal_si[i];
    has_previous_ = true;
  }
  // A goal was rejected (non-finite, or outside the workspace): the next goal's step cannot be read as a velocity,
  // so it asks for none (the joint brakes for that goal's ramp and hold) and the goal after it resumes tracking.
  void forget_previous_goal() noexcept { has_previous_ = false; }

  double period_s() const noexcept { return period_s_; }
  // The goal being ramped to (or held), and the ramp's time left at now_ns (0 once it holds the goal).
  void goal(double* position_si) const noexcept {
    for (int i = 0; i < dof_; ++i) position_si[i] = goal_[i];
  }
  double remaining_s(std::int64_t now_ns) const noexcept {
    const std::int64_t left = duration_ns_ - (now_ns - t0_ns_);
    return left > 0 ? 1e-9 * static_cast<double>(left) : 0.0;
  }

 private:
  // the smoothed command interval after a goal at now_ns
  double next_period_s(std::int64_t now_ns) const noexcept {
    if (last_goal_ns_ < 0) return period_s_;
    const double gap_s = 1e-9 * static_cast<double>(now_ns - last_goal_ns_);
    return (gap_s > 0 && gap_s < max_s_) ? 0.8 * period_s_ + 0.2 * gap_s : period_s_;
  }

  int dof_ = 0;
  double period_s_ = 0.01, min_s_ = 0.002, max_s_ = 0.1;
  double nominal_period_s_ = 0.01;
  double start_[kMaxDof] = {};
  double goal_[kMaxDof] = {};
  double goal_velocity_[kMaxDof] = {};
  double previous_[kMaxDof] = {};  // the session's previous valid goal, set or not (velocity tracking's predecessor)
  bool has_previous_ = false;
  std::int64_t t0_ns_ = 0;
  std::int64_t duration_ns_ = 1;
  std::int64_t last_goal_ns_ = -1;
};

}  // namespace robot_rt::control
