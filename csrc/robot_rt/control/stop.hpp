// Jerk-limited controlled stop of one joint, in discrete time, and the "can still stop" test.
//
// Each joint's commanded trajectory is a discrete triple integrator: per tick of length dt a constant jerk j
//   a' = a + j dt,  v' = v + a dt + j dt^2 / 2,  p' = p + v dt + a dt^2 / 2 + j dt^3 / 6.
// brake_jerk() is a time-invariant feedback law (v, a) -> j with |j| <= J that brings the joint to rest:
//   1. one-step dead-beat: if |a| <= J dt and v + a dt / 2 ~ 0, j = -a / dt ends exactly at rest (v = a = 0);
//   2. two-step dead-beat: j1 = -(v + 3/2 a dt) / dt^2, j2 = -a/dt - j1, used when both are within J;
//   3. otherwise head for the switching curve v + a|a| / (2J) = 0 (the states from which ramping a to 0 at
//      full jerk ends at rest): land on it when one tick of jerk allows, else saturate jerk/acceleration.
// can_stop() simulates that law from a state and returns true when the whole simulated stop stays inside
// the joint's limits (position box, |v| <= V, |a| <= A) and reaches rest within max_steps.
//
// Invariance (why the safety filter can never be cornered): if can_stop(x) holds, then the state reached
// by applying brake_jerk(x) is the second state of that very simulation, so can_stop() holds there too
// (with one step fewer, and the simulation is deterministic, same code, same floating-point operations).
// A filter that only ever moves to states where can_stop() holds can therefore always fall back to
// brake_jerk(), and every state it ever outputs is inside the limits. This is also the watchdog / e-stop
// controlled stop (no ruckig needed: the stop has no target position, only "come to rest within limits").
#pragma once

#include <cmath>

namespace robot_rt::control {

struct JointLimits {
  double position_min = 0.0;  // m | rad
  double position_max = 0.0;
  double velocity = 0.0;      // |v| bound, m/s | rad/s
  double acceleration = 0.0;  // |a| bound, per s^2
  double jerk = 0.0;          // |j| bound, per s^3
};

struct AxisState {
  double p = 0.0;  // position (m | rad)
  double v = 0.0;  // velocity
  double a = 0.0;  // acceleration
};

struct BrakeStep {
  double jerk;
  bool final_step;  // the step lands exactly at rest
};

inline double clamp_abs(double x, double bound) { return x > bound ? bound : (x < -bound ? -bound : x); }

// Relative slack of every limit comparison (floating-point rounding only).
constexpr double kLimitSlack = 1e-9;

inline AxisState integrate(const AxisState& s, double jerk, double dt, bool final_step = false) {
  AxisState n;
  n.p = s.p + s.v * dt + 0.5 * s.a * dt * dt + jerk * dt * dt * dt / 6.0;
  if (final_step) {
    n.v = 0.0;
    n.a = 0.0;
  } else {
    n.v = s.v + s.a * dt + 0.5 * jerk * dt * dt;
    n.a = s.a + jerk * dt;
  }
  return n;
}

inline BrakeStep brake_jerk(double v, double a, const JointLimits& lim, double dt) {
  const double J = lim.jerk, A = lim.acceleration;
  // 1. one step to rest (the residual velocity |v + a dt/2| is below rounding level and is dropped)
  const double residual_v = v + 0.5 * a * dt;
  if (std::fabs(a) <= J * dt && std::fabs(residual_v) <= 1e-12 * (1.0 + lim.velocity)) {
    return {-a / dt, true};
  }
  // 2. two steps to rest (the intermediate acceleration a + j1 dt = -j2 dt must respect A too: it can exceed it
  //    when one tick of jerk is more than the acceleration bound, J dt > A)
  const double j1 = -(v + 1.5 * a * dt) / (dt * dt);
  const double j2 = -a / dt - j1;
  if (std::fabs(j1) <= J && std::fabs(j2) <= J && std::fabs(a + j1 * dt) <= A) return {j1, false};
  // 3. move onto (or towards) the switching curve v + a|a|/(2J) = 0. With x = a' the next acceleration,
  //    v' = v + (a + x) dt / 2, so the landing condition is the quadratic x|x|/(2J) + x dt/2 + c = 0 with
  //    c = v + a dt/2; its root is clamped to what one tick of jerk and the acceleration bound allow.
  const double c = residual_v;
  double x;
  if (c > 0.0) {
    x = 0.5 * (J * dt - std::sqrt(J * J * dt * dt + 8.0 * J * c));
  } else {
    x = J * (-0.5 * dt + std::sqrt(0.25 * dt * dt - 2.0 * c / J));
  }
  const double x_lo = std::fmax(-A, a - J * dt), x_hi = std::fmin(A, a + J * dt);
  x = x < x_lo ? x_lo : (x > x_hi ? x_hi : x);
  return {clamp_abs((x - a) / dt, J), false};
}

inline bool within_limits(const AxisState& s, const JointLimits& lim) {
  const double span = lim.position_max - lim.position_min;
  return s.p >= lim.position_min - kLimitSlack * span && s.p <= lim.position_max + kLimitSlack * span &&
         std::fabs(s.v) <= lim.velocity * (1.0 + kLimitSlack) &&
         std::fabs(s.a) <= lim.acceleration * (1.0 + kLimitSlack);
}

// Number of ticks a stop may take from anywhere inside the limits, with a wide margin.
inline int stop_horizon_steps(const JointLimits& lim, double dt) {
  const double t = 2.0 * (lim.velocity / lim.acceleration + 3.0 * lim.acceleration / lim.jerk);
  return static_cast<int>(t / dt) + 50;
}

// True when braking from s with brake_jerk() stays within the limits and reaches rest within max_steps.
// rest_position (optional) receives where the stop ends.
inline bool can_stop(AxisState s, const JointLimits& lim, double dt, int max_steps, double* rest_position = nullptr) {
  for (int k = 0; k <= max_steps; ++k) {
    if (!within_limits(s, lim)) return false;
    if (s.v == 0.0 && s.a == 0.0) {
      if (rest_position) *rest_position = s.p;
      return true;
    }
    const BrakeStep b = brake_jerk(s.v, s.a, lim, dt);
    s = integrate(s, b.jerk, dt, b.final_step);
  }
  return false;
}

}  // namespace robot_rt::control
