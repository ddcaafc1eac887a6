#include "safety.hpp"

#include <algorithm>

#include <cmath>

namespace robot_rt::control {

bool SafetyFilter::configure(const RobotModel& model, double dt_s, double bandwidth_rad_s) {
  if (model.dof <= 0 || model.dof > kMaxDof || !(dt_s > 0) || !(bandwidth_rad_s > 0)) return false;
  for (int i = 0; i < model.dof; ++i) {
    const JointLimits& l = model.limits[i];
    if (!(l.position_min < l.position_max) || !(l.velocity > 0) || !(l.acceleration > 0) || !(l.jerk > 0)) return false;
    horizon_[i] = stop_horizon_steps(l, dt_s);
  }
  model_ = model;
  dt_ = dt_s;
  // poles of the cascade at -w: s^3 + 3w s^2 + 3w^2 s + w^3  ->  ka = 3w, kv = w, kp = w/3
  ka_ = 3.0 * bandwidth_rad_s;
  kv_ = bandwidth_rad_s;
  kp_ = bandwidth_rad_s / 3.0;
  for (int i = 0; i < kMaxDof; ++i) {
    state_[i] = AxisState{};
    jerk_[i] = 0.0;
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
  }
  return true;
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
    const JointLimits& l = model_.limits[i];
    if (position_si[i] < l.position_min || position_si[i] > l.position_max) {
      if (!(result & kTargetClamped)) {
        joint = i;
        value = position_si[i];
      }
      position_si[i] = position_si[i] < l.position_min ? l.position_min : l.position_max;
      result |= kTargetClamped;
    }
  }
  if (model_.has_chain && model_.has_workspace) {
    double paddle[3], normal[3];
    robot::paddle_position_normal(model_.chain, position_si, paddle, normal);
    for (int k = 0; k < 3; ++k) {
      if (!(paddle[k] >= model_.workspace_min_m[k] && paddle[k] <= model_.workspace_max_m[k])) {
        joint = k;  // the offending Cartesian axis (0 = x, 1 = y, 2 = z)
        value = paddle[k];
        return result | kTargetWorkspace;
      }
    }
  }
  return result;
}

double SafetyFilter::tracking_jerk(int i, double p_t, double v_t) const noexcept {
  const JointLimits& l = model_.limits[i];
  const AxisState& s = state_[i];
  // proportional approach, capped by the speed from which half the acceleration limit still stops at the
  // target (sqrt law: avoids the overshoot of a saturated linear cascade)
  const double e = p_t - s.p;
  const double approach = std::fmin(kp_ * std::fabs(e), std::sqrt(l.acceleration * std::fabs(e)));
  const double v_ref = clamp_abs(v_t + (e >= 0.0 ? approach : -approach), l.velocity);
  const double a_ref = clamp_abs(kv_ * (v_ref - s.v), l.acceleration);
  return clamp_abs(ka_ * (a_ref - s.a), l.jerk);
}

std::uint32_t SafetyFilter::step(const double* target_position_si, const double* target_velocity_si,
                                 bool stop) noexcept {
  std::uint32_t overridden = 0;
  for (int i = 0; i < model_.dof; ++i) {
    const JointLimits& l = model_.limits[i];
    const AxisState s = state_[i];
    const BrakeStep brake = brake_jerk(s.v, s.a, l, dt_);
    if (stop || target_position_si == nullptr) {
      state_[i] = integrate(s, brake.jerk, dt_, brake.final_step);
      jerk_[i] = brake.jerk;
      continue;
    }
    const double v_t = target_velocity_si ? target_velocity_si[i] : 0.0;
    const double j_track = tracking_jerk(i, target_position_si[i], v_t);
    AxisState next = integrate(s, j_track, dt_);
    if (can_stop(next, l, dt_, horizon_[i])) {
      state_[i] = next;
      jerk_[i] = j_track;
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
  }
  return overridden;
}

bool SafetyFilter::paddle_in_workspace(double paddle_m[3]) const noexcept {
  if (!model_.has_chain || !model_.has_workspace) return true;
  double q[kMaxDof], normal[3];
  for (int i = 0; i < model_.dof; ++i) q[i] = state_[i].p;
  robot::paddle_position_normal(model_.chain, q, paddle_m, normal);
  for (int k = 0; k < 3; ++k) {
    if (!(paddle_m[k] >= model_.workspace_min_m[k] && paddle_m[k] <= model_.workspace_max_m[k])) return false;
  }
  return true;
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
    const JointLimits& l = model_.limits[i];
    out.position_si[i] = std::min(std::max(state_[i].p, l.position_min), l.position_max);
    out.velocity_si[i] = std::min(std::max(state_[i].v, -l.velocity), l.velocity);
    out.acceleration_si[i] = state_[i].a;
  }
}

}  // namespace robot_rt::control
