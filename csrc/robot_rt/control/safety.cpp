#include "safety.hpp"

#include "otg.hpp"

#include <algorithm>
#include <cmath>

namespace robot_rt::control {

bool SafetyFilter::configure(const RobotModel& model, double dt_s) {
  if (model.dof <= 0 || model.dof > kMaxDof || !(dt_s > 0) || !std::isfinite(dt_s)) return false;
  for (int i = 0; i < model.dof; ++i) {
    const JointLimits& l = model.limits[i];
    if (!(l.position_min < l.position_max) || !(l.velocity > 0) || !(l.acceleration > 0) || !(l.jerk > 0)) return false;
    if (!std::isfinite(l.position_max - l.position_min) || !std::isfinite(l.velocity) || !std::isfinite(l.jerk))
      return false;
    // the stop horizon (stop_horizon_steps, an int of ticks) must stay a sane number: a stop of minutes is no stop
    if (!(2.0 * (l.velocity / l.acceleration + 3.0 * l.acceleration / l.jerk) / dt_s <= 1e7)) return false;
    const double margin = model.soft_margin_si[i];
    if (!(margin >= 0.0) || !(l.position_min + margin < l.position_max - margin)) return false;
  }
  model_ = model;
  dt_ = dt_s;
  for (int i = 0; i < kMaxDof; ++i) {
    state_[i] = AxisState{};
    jerk_[i] = 0.0;
    if (i < model.dof) {
      soft_min_[i] = model.limits[i].position_min + model.soft_margin_si[i];
      soft_max_[i] = model.limits[i].position_max - model.soft_margin_si[i];
      limits_[i] = model.limits[i];
      limits_[i].position_min = soft_min_[i];
      limits_[i].position_max = soft_max_[i];
      horizon_[i] = stop_horizon_steps(limits_[i], dt_s);
    }
  }
  return true;
}

bool SafetyFilter::reset(const double* position_si) {
  for (int i = 0; i < model_.dof; ++i) {
    const JointLimits& l = model_.limits[i];
    if (!std::isfinite(position_si[i]) || position_si[i] < l.position_min || position_si[i] > l.position_max)
      return false;
  }
  for (int i = 0; i < model_.dof; ++i) {
    state_[i] = AxisState{position_si[i], 0.0, 0.0};
    jerk_[i] = 0.0;
    // outside the soft box: the box edge starts where the joint is (it may only move back in)
    limits_[i].position_min = std::fmin(soft_min_[i], position_si[i]);
    limits_[i].position_max = std::fmax(soft_max_[i], position_si[i]);
  }
  return true;
}

void SafetyFilter::follow_into_soft_box(int i) noexcept {
  // A widened edge follows the joint inwards (never outwards), back to the soft limit. It moves only while the
  // joint heads inwards (velocity and acceleration not outwards), so the stop from the current state, which then
  // runs inwards, stays inside the narrowed box and can_stop() keeps holding (stop.hpp's invariance).
  const AxisState& s = state_[i];
  if (limits_[i].position_min < soft_min_[i] && s.v >= 0.0 && s.a >= 0.0)
    limits_[i].position_min = std::fmax(limits_[i].position_min, std::fmin(soft_min_[i], s.p));
  if (limits_[i].position_max > soft_max_[i] && s.v <= 0.0 && s.a <= 0.0)
    limits_[i].position_max = std::fmin(limits_[i].position_max, std::fmax(soft_max_[i], s.p));
}

std::uint32_t SafetyFilter::validate_target(double* position_si, const double* velocity_si, int& joint,
                                            double& value) const {
  std::uint32_t result = 0;
  joint = -1;
  value = 0.0;
  for (int i = 0; i < model_.dof; ++i) {
    if (!std::isfinite(position_si[i]) || (velocity_si && !std::isfinite(velocity_si[i]))) {
      joint = i;
      value = std::isfinite(position_si[i]) ? velocity_si[i] : position_si[i];
      return kTargetNonFinite;
    }
  }
  for (int i = 0; i < model_.dof; ++i) {
    if (position_si[i] < soft_min_[i] || position_si[i] > soft_max_[i]) {
      if (!(result & kTargetClamped)) {
        joint = i;
        value = position_si[i];
      }
      position_si[i] = position_si[i] < soft_min_[i] ? soft_min_[i] : soft_max_[i];
      result |= kTargetClamped;
    }
  }
  if (model_.has_chain && model_.has_workspace) {
    const PaddleBox target = paddle_box(model_, position_si);
    double coordinate = 0.0;
    const int axis = workspace_axis_out(model_, target, coordinate);
    if (axis >= 0) {
      joint = axis;  // the offending Cartesian axis (0 = x, 1 = y, 2 = z)
      value = coordinate;
      return result | kTargetWorkspace;
    }
  }
  return result;
}

std::uint32_t SafetyFilter::step(const double* target_position_si, const double* target_velocity_si,
                                 bool stop) noexcept {
  std::uint32_t overridden = 0;
  for (int i = 0; i < model_.dof; ++i) {
    const JointLimits& l = limits_[i];
    const AxisState s = state_[i];
    const BrakeStep brake = brake_jerk(s.v, s.a, l, dt_);
    if (stop || target_position_si == nullptr) {
      state_[i] = integrate(s, brake.jerk, dt_, brake.final_step);
      jerk_[i] = brake.jerk;
      follow_into_soft_box(i);
      continue;
    }
    const OtgTarget target{target_position_si[i], target_velocity_si ? target_velocity_si[i] : 0.0};
    // velocity tracking towards 0 is the braking law itself, so that the joint ends exactly at rest
    const bool to_rest = velocity_tracking_ && target.velocity == 0.0;
    const double j_track = to_rest              ? brake.jerk
                           : velocity_tracking_ ? velocity_tracking_jerk(s, target.velocity, l, dt_)
                                                : otg_jerk(s, target, l, dt_);
    AxisState next = integrate(s, j_track, dt_, to_rest && brake.final_step);
    if (can_stop(next, l, dt_, horizon_[i])) {
      state_[i] = next;
      jerk_[i] = j_track;
      follow_into_soft_box(i);
      continue;
    }
    // Largest admissible blend between the braking jerk (admissible) and the tracking jerk (not).
    overridden |= 1u << i;
    double lo = 0.0, hi = 1.0;
    for (int k = 0; k < bisection_steps_; ++k) {
      const double mid = 0.5 * (lo + hi);
      const AxisState trial = integrate(s, brake.jerk + mid * (j_track - brake.jerk), dt_);
      if (can_stop(trial, l, dt_, horizon_[i])) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    if (lo > 0.0) {
      const double j = brake.jerk + lo * (j_track - brake.jerk);
      state_[i] = integrate(s, j, dt_);
      jerk_[i] = j;
    } else {
      state_[i] = integrate(s, brake.jerk, dt_, brake.final_step);
      jerk_[i] = brake.jerk;
    }
    follow_into_soft_box(i);
  }
  return overridden;
}

bool SafetyFilter::paddle_in_workspace(PaddleBox& paddle) const noexcept {
  if (!model_.has_chain || !model_.has_workspace) return true;
  double q[kMaxDof];
  for (int i = 0; i < model_.dof; ++i) q[i] = state_[i].p;
  paddle = paddle_box(model_, q);
  double coordinate = 0.0;
  return workspace_axis_out(model_, paddle, coordinate) < 0;
}

bool SafetyFilter::at_rest() const noexcept {
  for (int i = 0; i < model_.dof; ++i) {
    if (state_[i].v != 0.0 || state_[i].a != 0.0) return false;
  }
  return true;
}

void SafetyFilter::fill_command(JointCommand& out) const noexcept {
  out.dof = model_.dof;
  // The braking profile can end a few nm (rounding) beyond a position limit; the robot must never receive that,
  // so the command itself is clamped into the limits (the filter's state stays as computed).
  for (int i = 0; i < model_.dof; ++i) {
    const JointLimits& l = limits_[i];
    out.position_si[i] = std::min(std::max(state_[i].p, l.position_min), l.position_max);
    out.velocity_si[i] = std::min(std::max(state_[i].v, -l.velocity), l.velocity);
    out.acceleration_si[i] = state_[i].a;
  }
}

PaddleBox paddle_box(const RobotModel& m, const double* q) noexcept {
  PaddleBox out;
  double normal[3];
  robot::paddle_position_normal(m.chain, q, out.centre_m, normal);
  for (int k = 0; k < 3; ++k) out.half_m[k] = m.paddle_radius_m * std::sqrt(std::max(0.0, 1.0 - normal[k] * normal[k]));
  return out;
}

double workspace_excess_m(const RobotModel& m, const PaddleBox& paddle, double margin_m) noexcept {
  double sum = 0.0;
  for (int k = 0; k < 3; ++k) {
    const double low = paddle.centre_m[k] - paddle.half_m[k], high = paddle.centre_m[k] + paddle.half_m[k];
    const double out = std::max(m.workspace_min_m[k] + margin_m - low, high - (m.workspace_max_m[k] - margin_m));
    if (out > 0.0) sum += out * out;
  }
  return std::sqrt(sum);
}

int workspace_axis_out(const RobotModel& m, const PaddleBox& paddle, double& coordinate_m) noexcept {
  for (int k = 0; k < 3; ++k) {
    const double low = paddle.centre_m[k] - paddle.half_m[k], high = paddle.centre_m[k] + paddle.half_m[k];
    if (!(low >= m.workspace_min_m[k])) {
      coordinate_m = low;
      return k;
    }
    if (!(high <= m.workspace_max_m[k])) {
      coordinate_m = high;
      return k;
    }
  }
  return -1;
}

WorkspaceForecast forecast_workspace(const RobotModel& model, const AxisState* start, const double* target_si,
                                     const double* ramp_start_si, double ramp_s, double dt_s, int horizon,
                                     double margin_m, bool velocity_tracking) noexcept {
  WorkspaceForecast out;
  if (!model.has_chain || !model.has_workspace || model.dof <= 0 || model.dof > kMaxDof) {
    out.settled = true;
    return out;
  }
  AxisState s[kMaxDof];
  double q[kMaxDof];
  const int dof = model.dof;
  for (int i = 0; i < dof; ++i) s[i] = start[i];
  for (int k = 0;; ++k) {
    // the reference the OTG steers towards during the next tick (sampled at its start, as the loop does)
    const double t_s = dt_s * static_cast<double>(k);
    const bool ramping = ramp_start_si != nullptr && ramp_s > 0.0 && t_s < ramp_s;
    bool settled = !ramping;
    for (int i = 0; i < dof; ++i) {
      q[i] = s[i].p;
      const bool on_goal = velocity_tracking || std::fabs(s[i].p - target_si[i]) <= 1e-9;
      settled = settled && on_goal && std::fabs(s[i].v) <= 1e-9 && std::fabs(s[i].a) <= 1e-9;
    }
    const double excess = workspace_excess_m(model, paddle_box(model, q), margin_m);
    if (!(excess <= 0.0) && out.first_exit_tick < 0) out.first_exit_tick = k;
    if (excess > out.max_excess_m || !std::isfinite(excess)) out.max_excess_m = excess;
    out.ticks = k;
    out.settled = settled;
    if (settled || k >= horizon) break;
    for (int i = 0; i < dof; ++i) {
      OtgTarget ref{target_si[i], 0.0};
      if (ramping) {
        ref.velocity = (target_si[i] - ramp_start_si[i]) / ramp_s;
        ref.position = ramp_start_si[i] + ref.velocity * t_s;
      }
      const double j = velocity_tracking ? velocity_tracking_jerk(s[i], ref.velocity, model.limits[i], dt_s)
                                         : otg_jerk(s[i], ref, model.limits[i], dt_s);
      s[i] = integrate(s[i], j, dt_s);
    }
  }
  return out;
}

}  // namespace robot_rt::control
