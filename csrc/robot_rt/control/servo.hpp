// The position servo of a simulated joint (SimDriver in-process, SimRobotServer over UDP): like a real
// position-controlled drive, it lags and overshoots the commanded trajectory, and it ends at hard stops.
//
// Model, per joint, given the commanded position q* and velocity feed-forward v* (no acceleration feed-forward:
// the protocol carries position and velocity):
//   q'' = w^2 (q* - q) + 2 zeta w (v* - v),   saturated at the drive's peak acceleration, then its top speed,
// a second-order servo with natural frequency w (rad/s) and damping zeta < 1 (underdamped: 16 % overshoot on a
// step at zeta = 0.5). The tracking error e = q* - q then obeys e'' + 2 zeta w e' + w^2 e = a*(t), driven by the
// commanded acceleration, so for any commanded trajectory with |a*| <= A (and no saturation)
//   |e| <= ||h||_1 A = coth(pi zeta / (2 sqrt(1 - zeta^2))) A / w^2       (servo_error_bound)
// where h is the impulse response of 1 / (s^2 + 2 zeta w s + w^2) (its L1 norm is that coth / w^2; 1 / w^2 when
// zeta >= 1). This bounds both the lag and the overshoot past the commanded position; it is what the soft-limit
// margin and the tracking-error threshold are derived from (docs/safety.md).
// Defaults (ServoParams): 10 Hz natural frequency, damping 0.5, drive peak acceleration 2 A, top speed 1.2 V.
//
// Hard stops: the mechanical range [position_min, position_max]. A joint reaching one stops dead there (velocity
// zero, an inelastic end stop); each contact that begins counts as one hit. Integration: semi-implicit Euler
// on `substeps` sub-steps per call.
#pragma once

#include <cmath>

namespace robot_rt::control {

struct ServoParams {
  double natural_frequency_rad_s = 2.0 * M_PI * 10.0;
  double damping = 0.5;
  double acceleration_limit = 0.0;  // the drive's peak acceleration
  double velocity_limit = 0.0;      // the drive's top speed
  double position_min = 0.0;        // hard stops
  double position_max = 0.0;
};

constexpr double kServoDefaultFrequencyHz = 10.0;
constexpr double kServoDefaultDamping = 0.5;
constexpr double kServoDriveAccelerationFactor = 2.0;  // drive peak acceleration / trajectory limit A
constexpr double kServoDriveVelocityFactor = 1.2;      // drive top speed / trajectory limit V

// L1 norm of the servo's error impulse response, times w^2 (1 when critically damped or slower).
inline double servo_error_gain(double damping) {
  if (damping >= 1.0) return 1.0;
  return 1.0 / std::tanh(M_PI * damping / (2.0 * std::sqrt(1.0 - damping * damping)));
}

// Largest |commanded - measured| position of the unsaturated servo for commanded |acceleration| <= A.
inline double servo_error_bound(double acceleration_limit, double natural_frequency_rad_s, double damping) {
  return servo_error_gain(damping) * acceleration_limit / (natural_frequency_rad_s * natural_frequency_rad_s);
}

struct ServoState {
  double q = 0.0;
  double v = 0.0;
  bool in_contact = false;  // resting against a hard stop
};

// Advances one joint by dt towards the command; returns the number of hard-stop hits that began (0 or 1 per
// sub-step).
inline int servo_step(ServoState& s, const ServoParams& p, double q_cmd, double v_cmd, double dt, int substeps) {
  const double w = p.natural_frequency_rad_s, h = dt / substeps;
  int hits = 0;
  for (int k = 0; k < substeps; ++k) {
    double a = w * w * (q_cmd - s.q) + 2.0 * p.damping * w * (v_cmd - s.v);
    a = a > p.acceleration_limit ? p.acceleration_limit : (a < -p.acceleration_limit ? -p.acceleration_limit : a);
    double v = s.v + a * h;
    v = v > p.velocity_limit ? p.velocity_limit : (v < -p.velocity_limit ? -p.velocity_limit : v);
    double q = s.q + v * h;
    bool contact = false;
    if (q <= p.position_min) {
      q = p.position_min;
      contact = v < 0.0 || q_cmd < p.position_min;
      if (v < 0.0) v = 0.0;
    } else if (q >= p.position_max) {
      q = p.position_max;
      contact = v > 0.0 || q_cmd > p.position_max;
      if (v > 0.0) v = 0.0;
    }
    if (contact && !s.in_contact) ++hits;
    s.in_contact = contact;
    s.q = q;
    s.v = v;
  }
  return hits;
}

}  // namespace robot_rt::control
