// Online trajectory generator (OTG) of one joint: each tick, the jerk that brings the commanded trajectory to a
// target position and velocity as fast as the velocity / acceleration / jerk limits allow.
//
// Reference: ruckig (Berscheid & Kroeger, "Jerk-limited Real-time Trajectory Generation with Arbitrary Target
// States", RSS 2021) computes the time-optimal profile analytically and samples it. Here the loop re-plans every
// tick from the state it actually commanded (so a new target at any tick is taken up at once), and the
// time-optimal structure (accelerate to the cruise velocity, cruise, brake onto the target) comes from one test per
// tick instead of a closed-form profile:
//
//   target:      a reference moving at constant velocity, p_ref(tau) = p_t + v_t tau (v_t = 0: a rest target);
//                the interpolated policy target is one between two policy commands. Relative to the reference this
//                is ruckig's rest-to-rest problem with velocity bounds [-V - v_t, V - v_t].
//   approach(x): the minimal-time continuous profile that changes (v, a) into (v_t, 0) (velocity_change: at most
//                three constant-jerk segments, |a| <= A, |j| <= J), and e(x) = the signed distance between where it
//                ends and where the reference is by then.
//   d          = sign(-e(x)): the side the target is on once the current motion is wound down.
//   cruise     = the discrete jerk that drives the velocity to d * V without overshooting it (brake_jerk of
//                stop.hpp, applied to v - d V), i.e. full acceleration towards the target.
//   each tick: the cruise jerk if the state it leads to still ends its approach short of the target (d e <= 0),
//              otherwise the jerk in [far, cruise] that lands exactly on d e = 0 (bisection; far = the full jerk
//              the other way), i.e. the state rides the switching surface of the approach down to the target.
//   finish:    when the target can be hit exactly within 1, 2 or 3 ticks inside the limits (dead_beat), those jerks
//              (the discrete trajectory then ends exactly on the target instead of chattering around it).
//
// The OTG alone does not know the position box: SafetyFilter (safety.hpp) runs its jerk through the can-stop
// test of stop.hpp, which keeps every commanded state inside the (soft) limits whatever the OTG proposes.
// tests/test_control_otg.py compares durations with ruckig over random states and targets (bench/bench_otg.py
// reports the distribution); csrc/robot_rt/control/tests/test_otg.cpp checks limits and arrival.
#pragma once

#include <cmath>

#include "stop.hpp"

namespace robot_rt::control {

// At most three constant-jerk segments (continuous time).
struct JerkProfile {
  double duration_s[3] = {0.0, 0.0, 0.0};
  double jerk[3] = {0.0, 0.0, 0.0};
  double total_s() const noexcept { return duration_s[0] + duration_s[1] + duration_s[2]; }
};

// Minimal-time change of (v0, a0) into (v1, 0) under |a| <= A, |j| <= J: ramp the acceleration to a peak of the
// needed sign (|peak| <= A), hold it, ramp it back to zero. (A start with |a0| > A first ramps down to A.)
inline JerkProfile velocity_change(double v0, double a0, double v1, double A, double J) noexcept {
  JerkProfile p;
  // the velocity reached when the acceleration is ramped to zero at once decides the sign of the pulse
  const double v_ramp = v0 + a0 * std::fabs(a0) / (2.0 * J);
  const double s = v1 >= v_ramp ? 1.0 : -1.0;
  const double w0 = s * v0, b0 = s * a0, w1 = s * v1;  // mirrored so that the pulse is positive
  double peak = std::sqrt(std::fmax(0.0, J * (w1 - w0) + 0.5 * b0 * b0));
  if (peak > A) peak = A;
  const double t1 = std::fabs(peak - b0) / J;
  const double t3 = peak / J;
  const double gain13 = 0.5 * (b0 + peak) * t1 + 0.5 * peak * t3;  // velocity gained on the two ramps
  double t2 = peak > 0.0 ? (w1 - w0 - gain13) / peak : 0.0;
  if (!(t2 > 0.0)) t2 = 0.0;
  p.duration_s[0] = t1;
  p.duration_s[1] = t2;
  p.duration_s[2] = t3;
  p.jerk[0] = s * (peak >= b0 ? J : -J);
  p.jerk[1] = 0.0;
  p.jerk[2] = -s * J;
  return p;
}

// Distance travelled along a profile that starts with velocity v and acceleration a.
inline double profile_displacement(double v, double a, const JerkProfile& p) noexcept {
  double x = 0.0;
  for (int k = 0; k < 3; ++k) {
    const double t = p.duration_s[k], j = p.jerk[k];
    x += t * (v + t * (0.5 * a + t * j / 6.0));
    v += t * (a + 0.5 * j * t);
    a += j * t;
  }
  return x;
}

// The reference to reach: a point moving at constant velocity, p_ref(t0 + tau) = position + velocity tau
// (velocity 0: a rest target). Reaching it means p = p_ref, v = velocity, a = 0 (then zero jerk stays on it).
struct OtgTarget {
  double position = 0.0;
  double velocity = 0.0;  // clamped to [-V, V]
};

// Signed distance between where the approach profile from s ends and where the reference is by then (> 0: the
// joint would end beyond the reference in the + direction).
inline double approach_error(const AxisState& s, const OtgTarget& t, const JointLimits& l) noexcept {
  const JerkProfile p = velocity_change(s.v, s.a, t.velocity, l.acceleration, l.jerk);
  return s.p + profile_displacement(s.v, s.a, p) - (t.position + t.velocity * p.total_s());
}

// Jerks that put the discrete trajectory exactly on the target within n = 1, 2 or 3 ticks, inside |j| <= J,
// |a| <= A, |v| <= V; returns the first of them in `jerk` (false when no such short finish exists).
// The reference after n ticks is (position + n dt velocity, velocity, 0); zero jerk keeps a joint on it, so the
// 3-tick finish is unique and re-solving it at the next tick continues the same jerk sequence.
inline bool dead_beat(const AxisState& s, const OtgTarget& t, const JointLimits& l, double dt, double& jerk) noexcept {
  const double dt2 = dt * dt, dt3 = dt2 * dt;
  const double tol_p = 1e-6 * l.jerk * dt3, tol_v = 1e-6 * l.jerk * dt2;
  for (int n = 1; n <= 3; ++n) {
    const double T = n * dt;
    // residual target - free motion after n ticks
    const double rp = t.position + t.velocity * T - (s.p + s.v * T + 0.5 * s.a * T * T);
    const double rv = t.velocity - (s.v + s.a * T);
    const double ra = -s.a;
    double j[3] = {0.0, 0.0, 0.0};
    if (n == 1) {
      j[0] = ra / dt;
      if (std::fabs(rp - j[0] * dt3 / 6.0) > tol_p || std::fabs(rv - 0.5 * j[0] * dt2) > tol_v) continue;
    } else if (n == 2) {
      j[0] = rv / dt2 - 0.5 * ra / dt;
      j[1] = ra / dt - j[0];
      if (std::fabs(rp - (7.0 * j[0] + j[1]) * dt3 / 6.0) > tol_p) continue;
    } else {
      const double ca = ra / dt, cb = 2.0 * rv / dt2, cc = 6.0 * rp / dt3;
      j[0] = (cc - 3.0 * cb + 2.0 * ca) / 6.0;
      j[1] = 0.5 * (cb - ca - 4.0 * j[0]);
      j[2] = ca - j[0] - j[1];
    }
    AxisState x = s;
    bool ok = true;
    for (int k = 0; k < n && ok; ++k) {
      if (std::fabs(j[k]) > l.jerk) ok = false;
      x = integrate(x, j[k], dt);
      if (std::fabs(x.a) > l.acceleration * (1.0 + kLimitSlack) || std::fabs(x.v) > l.velocity * (1.0 + kLimitSlack))
        ok = false;
    }
    if (!ok) continue;
    jerk = j[0];
    return true;
  }
  return false;
}

// The jerk that changes the velocity by -w (w = v - the velocity to land on) in this tick, within |j| <= J and the
// acceleration bound after the tick.
inline double landing_jerk(const AxisState& s, double w, const JointLimits& l, double dt) noexcept {
  const double j = -2.0 * (w + s.a * dt) / (dt * dt);
  const double j_lo = std::fmax(-l.jerk, (-l.acceleration - s.a) / dt);
  const double j_hi = std::fmin(l.jerk, (l.acceleration - s.a) / dt);
  return j < j_lo ? j_lo : (j > j_hi ? j_hi : j);
}

// The discrete jerk that drives the velocity to v_cruise (|v_cruise| <= V) without passing it: stop.hpp's brake law
// on v - v_cruise, except where its two-tick dead-beat would cross v_cruise in between (it may, by a few J dt^2:
// harmless for a stop, a velocity-limit violation here); then the jerk that lands on v_cruise this tick instead.
inline double cruise_jerk(const AxisState& s, double v_cruise, const JointLimits& l, double dt) noexcept {
  const double w = s.v - v_cruise;
  double j = brake_jerk(w, s.a, l, dt).jerk;
  const double w_next = w + s.a * dt + 0.5 * j * dt * dt;
  if (w_next * v_cruise > 0.0) j = landing_jerk(s, w, l, dt);
  return j;
}

// One tick of velocity tracking (LoopConfig::velocity_tracking): the jerk that brings the velocity to v_target
// (clamped to [-V, V]) as fast as the jerk and acceleration limits allow, arriving with zero acceleration; the
// position is not steered. This is how the envs' robot obeys a velocity command (robot_rt.envs.jerk_limit, at the
// loop's tick): a policy that commands joint velocities is then executed as it was trained, where the position
// tracking of otg_jerk chases the integral of the commands and lags any swing (loop_gap_ablation.md).
// The law is stop.hpp's brake_jerk on (v - v_target, a), time-optimal onto the target from either side (not
// cruise_jerk: its guard against passing the cruise velocity assumes the target is approached from inside
// [-V, V], and from beyond a target it would hold full jerk past the switching curve and overshoot). Only where
// the brake law's two-tick dead-beat would pass |v| = V (by a few J dt^2, a target at the bound) is the jerk that
// lands on the bound this tick used instead.
inline double velocity_tracking_jerk(const AxisState& s, double v_target, const JointLimits& l, double dt) noexcept {
  const double vt = clamp_abs(v_target, l.velocity);
  double j = brake_jerk(s.v - vt, s.a, l, dt).jerk;
  const double v_next = s.v + s.a * dt + 0.5 * j * dt * dt;
  if (std::fabs(v_next) > l.velocity) j = landing_jerk(s, s.v - (v_next > 0.0 ? l.velocity : -l.velocity), l, dt);
  return j;
}

// One tick of the OTG: the jerk to apply from s towards the target (|jerk| <= J; |a|, |v| stay within A, V
// whenever s can keep them, i.e. v + a|a|/(2J) within [-V, V]).
inline double otg_jerk(const AxisState& s, OtgTarget t, const JointLimits& l, double dt) noexcept {
  t.velocity = clamp_abs(t.velocity, l.velocity);
  double finish;
  if (dead_beat(s, t, l, dt, finish)) return finish;
  const double e = approach_error(s, t, l);
  const double d = e < 0.0 ? 1.0 : -1.0;
  const double cruise = cruise_jerk(s, d * l.velocity, l, dt);
  const OtgTarget next{t.position + t.velocity * dt, t.velocity};  // the reference one tick later
  auto overshoot = [&](double jerk) { return d * approach_error(integrate(s, jerk, dt), next, l); };
  if (overshoot(cruise) <= 0.0) return cruise;
  // the full jerk the other way, within what keeps |a| <= A
  const double far = d > 0.0 ? std::fmax(-l.jerk, (-l.acceleration - s.a) / dt)
                             : std::fmin(l.jerk, (l.acceleration - s.a) / dt);
  if (overshoot(far) > 0.0) return far;  // cannot avoid passing the target: brake as hard as allowed
  double lo = far, hi = cruise;          // overshoot(lo) <= 0 < overshoot(hi)
  for (int k = 0; k < 52; ++k) {
    const double mid = 0.5 * (lo + hi);
    if (mid == lo || mid == hi) break;
    if (overshoot(mid) <= 0.0) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

}  // namespace robot_rt::control
