// Safety filter: every command the loop sends passes through it, once per tick.
//
// The filter owns the commanded trajectory of each joint, a discrete triple integrator (stop.hpp) advanced
// by one jerk value per tick. Each tick it
//   * computes the jerk the online trajectory generator (otg.hpp) proposes towards the interpolated target
//     (time-optimal under the velocity / acceleration / jerk limits, re-planned every tick);
//   * accepts that jerk only if the joint could still brake to rest inside all its limits from the
//     resulting state (can_stop); otherwise it bisects between it and the braking jerk, which is always
//     admissible by the invariance argument in stop.hpp;
//   * in stop mode (a reflex, the e-stop, shutdown), applies the braking jerk directly: the jerk-limited
//     controlled stop (stop category 1).
// Hence every output satisfies |j| <= J, |a| <= A, |v| <= V and soft_min <= p <= soft_max (up to a relative 1e-9
// rounding slack), from any target stream, including NaN/Inf (rejected before the filter).
//
// Soft limits: the position box the filter keeps is the hard box (the robot's mechanical range) shrunk by a
// per-joint margin (RobotModel::soft_margin_si), which has to cover how far the real servo overshoots the
// commanded trajectory (docs/safety.md derives the default from the servo model). The commanded trajectory,
// including its stopping envelope, stays inside the soft box; targets are clamped into it. A joint that starts
// (or is re-synchronised, after a recovery) outside the soft box but inside the hard one may only move back
// towards it: its box edge is where it is, and follows it inwards until it is inside the soft box.
//
// Targets are validated before they reach the filter (validate_target): NaN/Inf rejected, positions clamped
// into the soft box, and (optionally) the paddle's blade at the target must lie in the workspace box. The
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
  JointLimits limits[kMaxDof];       // hard limits: the mechanical position range and the v/a/j bounds
  double soft_margin_si[kMaxDof] = {};  // soft box = [position_min + margin, position_max - margin]
  robot::ChainModel<double> chain;
  bool has_chain = false;
  double workspace_min_m[3] = {0, 0, 0};
  double workspace_max_m[3] = {0, 0, 0};
  bool has_workspace = false;
  // The blade: a disc of this radius about the paddle frame's origin, normal to its z axis. The whole blade, not
  // only its centre, must stay in the workspace box (a centre 2 cm above the box floor put the blade 5.3 cm into
  // the table: the eighth audit).
  double paddle_radius_m = 0.0;
  double home_si[kMaxDof] = {};
};

// Result bits of SafetyFilter::validate_target
constexpr std::uint32_t kTargetNonFinite = 1u << 0;   // rejected
constexpr std::uint32_t kTargetClamped = 1u << 1;     // accepted after clamping into the joint box
constexpr std::uint32_t kTargetWorkspace = 1u << 2;   // rejected: paddle outside the workspace box
constexpr std::uint32_t kTargetRejected = kTargetNonFinite | kTargetWorkspace;

// Where the commanded paddle goes if `target_si` is the last goal the loop receives: the loop's reference ramps
// linearly from `ramp_start_si` (its interpolated target now; null: no ramp) to the goal over ramp_s with the ramp's
// velocity as feed-forward, then holds it (interpolator.hpp); the OTG (otg.hpp, hard limits, no soft box) follows it
// from the joint states `start`, tick by tick, until every joint rests on the goal or `horizon` ticks have passed;
// the paddle centre of each tick is measured against the workspace box shrunk by margin_m. A policy-side forecast
// (the loop itself only monitors the box): a goal whose path bulges out of the box, e.g. the jerk-limited overshoot
// of a joint that arrives fast, can be replaced before the loop's workspace stop trips.
// The paddle as the workspace box sees it: the centre of the blade and its half-extent along each axis (a disc of
// radius R with unit normal n reaches R * sqrt(1 - n_k^2) beyond its centre along axis k).
struct PaddleBox {
  double centre_m[3] = {0, 0, 0};
  double half_m[3] = {0, 0, 0};
};
// The paddle box of joint positions q (the model must have a chain).
PaddleBox paddle_box(const RobotModel& model, const double* q) noexcept;
// Euclidean distance by which the blade's axis-aligned extent reaches outside the workspace box shrunk by margin_m
// on every face (0 inside).
double workspace_excess_m(const RobotModel& model, const PaddleBox& paddle, double margin_m = 0.0) noexcept;
// The first axis (0 x, 1 y, 2 z) on which the blade leaves the box, and in `coordinate_m` the blade's extreme
// coordinate there; -1 when the blade is inside.
int workspace_axis_out(const RobotModel& model, const PaddleBox& paddle, double& coordinate_m) noexcept;

struct WorkspaceForecast {
  double max_excess_m = 0.0;  // largest distance of the path outside the shrunk box (0: inside all the way)
  int first_exit_tick = -1;   // first tick outside the shrunk box (0: the start; -1: never)
  int ticks = 0;              // ticks simulated
  bool settled = false;       // every joint reached the goal within the horizon
};
// velocity_tracking: the trajectory follows the ramp's velocity (velocity_tracking_jerk), then comes to rest
// wherever that leaves it, as the loop does with LoopConfig::velocity_tracking (settled = at rest).
WorkspaceForecast forecast_workspace(const RobotModel& model, const AxisState* start, const double* target_si,
                                     const double* ramp_start_si, double ramp_s, double dt_s, int horizon,
                                     double margin_m, bool velocity_tracking = false) noexcept;

class SafetyFilter {
 public:
  // dt_s: tick length; returns false on invalid limits (also a margin that leaves no soft box).
  bool configure(const RobotModel& model, double dt_s);
  // Starts at rest at the given positions (must be inside the hard limits; returns false otherwise). A joint
  // outside its soft box may only move back towards it.
  bool reset(const double* position_si);

  // Checks and clamps a target in place into the soft box (kTarget* bits; the target must not be used when a
  // rejection bit is set). `joint` receives the first offending joint, `value` the offending value.
  std::uint32_t validate_target(double* position_si, const double* velocity_si, int& joint, double& value) const;

  // One tick. target_* may be null in stop mode. Returns a bit per joint where tracking was overridden to
  // keep the limits (0 when the tracking jerk was admissible everywhere).
  std::uint32_t step(const double* target_position_si, const double* target_velocity_si, bool stop) noexcept;

  // Velocity tracking (LoopConfig::velocity_tracking): the tracking jerk follows the target's velocity only
  // (otg.hpp velocity_tracking_jerk; no target velocity: 0, i.e. come to rest) instead of the OTG's position
  // tracking. Every limit is kept the same way: the can-stop test does not depend on where the jerk came from.
  void set_velocity_tracking(bool on) noexcept { velocity_tracking_ = on; }
  bool velocity_tracking() const noexcept { return velocity_tracking_; }

  // Whether the blade of the current commanded position lies in the workspace box (true without a box); its
  // paddle box in `paddle`.
  bool paddle_in_workspace(PaddleBox& paddle) const noexcept;

  const AxisState& state(int joint) const noexcept { return state_[joint]; }
  // The limits the commanded trajectory keeps now: the soft box (widened to where a joint outside it is).
  const JointLimits& limits(int joint) const noexcept { return limits_[joint]; }
  double soft_min(int joint) const noexcept { return soft_min_[joint]; }
  double soft_max(int joint) const noexcept { return soft_max_[joint]; }
  double last_jerk(int joint) const noexcept { return jerk_[joint]; }
  bool at_rest() const noexcept;
  int dof() const noexcept { return model_.dof; }
  double dt_s() const noexcept { return dt_; }
  const RobotModel& model() const noexcept { return model_; }
  void fill_command(JointCommand& out) const noexcept;

 private:
  void follow_into_soft_box(int i) noexcept;

  RobotModel model_;
  double dt_ = 1e-3;
  JointLimits limits_[kMaxDof];
  double soft_min_[kMaxDof] = {};
  double soft_max_[kMaxDof] = {};
  int horizon_[kMaxDof] = {};
  AxisState state_[kMaxDof];
  double jerk_[kMaxDof] = {};
  int bisection_steps_ = 6;
  bool velocity_tracking_ = false;
};

}  // namespace robot_rt::control
