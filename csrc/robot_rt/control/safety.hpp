// Safety filter: every command the loop sends passes through it, once per tick.
//
// The filter owns the commanded trajectory of each joint, a discrete triple integrator (stop.hpp) advanced
// by one jerk value per tick. Each tick it
//   * computes the jerk that tracks the interpolated target (cascaded position/velocity/acceleration loop
//     with all three poles at -bandwidth, references clamped to the velocity / acceleration limits);
//   * accepts that jerk only if the joint could still brake to rest inside all its limits from the
//     resulting state (can_stop); otherwise it bisects between it and the braking jerk, which is always
//     admissible by the invariance argument in stop.hpp;
//   * in stop mode (watchdog, e-stop, sensor timeout, workspace), applies the braking jerk directly: the
//     jerk-limited controlled stop.
// Hence every output satisfies |j| <= J, |a| <= A, |v| <= V and position_min <= p <= position_max (up to a
// relative 1e-9 rounding slack), from any target stream, including NaN/Inf (rejected before the filter).
//
// Targets are validated before they reach the filter (validate_target): NaN/Inf rejected, positions clamped
// into the joint box, and (optionally) the paddle centre of the target must lie in the workspace box. The
// box is also monitored on the commanded pose every tick (the loop stops the robot if it ever leaves it):
// joint-space motion between two in-box poses can bulge out of a Cartesian box, so the box is a hard gate
// on targets and a monitored condition on the path, while the joint limits are hard invariants.
#pragma once

#include <cstdint>

#include "driver.hpp"
#include "robot_rt/robot/kinematics.hpp"
#include "stop.hpp"

namespace robot_rt::control {

struct RobotModel {
  int dof = 0;
  JointLimits limits[kMaxDof];
  robot::ChainModel<double> chain;
  bool has_chain = false;
  double workspace_min_m[3] = {0, 0, 0};
  double workspace_max_m[3] = {0, 0, 0};
  bool has_workspace = false;
  double home_si[kMaxDof] = {};
};

// Result bits of SafetyFilter::validate_target
constexpr std::uint32_t kTargetNonFinite = 1u << 0;   // rejected
constexpr std::uint32_t kTargetClamped = 1u << 1;     // accepted after clamping into the joint box
constexpr std::uint32_t kTargetWorkspace = 1u << 2;   // rejected: paddle outside the workspace box
constexpr std::uint32_t kTargetRejected = kTargetNonFinite | kTargetWorkspace;

class SafetyFilter {
 public:
  // dt_s: tick length; bandwidth_rad_s: tracking poles; returns false on invalid limits.
  bool configure(const RobotModel& model, double dt_s, double bandwidth_rad_s);
  // Starts at rest at the given positions (must be inside the limits; returns false otherwise).
  bool reset(const double* position_si);

  // Checks and clamps a target in place (kTarget* bits; the target must not be used when a rejection bit
  // is set). `joint` receives the first offending joint, `value` the offending value.
  std::uint32_t validate_target(double* position_si, const double* velocity_si, int& joint, double& value) const;

  // One tick. target_* may be null in stop mode. Returns a bit per joint where tracking was overridden to
  // keep the limits (0 when the tracking jerk was admissible everywhere).
  std::uint32_t step(const double* target_position_si, const double* target_velocity_si, bool stop) noexcept;

  // Paddle centre of the current commanded position; false when the model has no workspace box.
  bool paddle_in_workspace(double paddle_m[3]) const noexcept;

  const AxisState& state(int joint) const noexcept { return state_[joint]; }
  double last_jerk(int joint) const noexcept { return jerk_[joint]; }
  bool at_rest() const noexcept;
  int dof() const noexcept { return model_.dof; }
  double dt_s() const noexcept { return dt_; }
  const RobotModel& model() const noexcept { return model_; }
  void fill_command(JointCommand& out) const noexcept;

 private:
  double tracking_jerk(int i, double p_t, double v_t) const noexcept;

  RobotModel model_;
  double dt_ = 1e-3;
  double kp_ = 0, kv_ = 0, ka_ = 0;
  int horizon_[kMaxDof] = {};
  AxisState state_[kMaxDof];
  double jerk_[kMaxDof] = {};
  int bisection_steps_ = 6;
};

}  // namespace robot_rt::control
