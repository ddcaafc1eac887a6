// Jerk-limited controlled stop (stop.hpp): the integrator, the braking law, can_stop() and its invariance.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "stop.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;
using robot_rt::control::testing::Random;
using robot_rt::control::testing::random_limits;

namespace {

// A random state inside the limits (not necessarily stoppable).
AxisState random_state(Random& rng, const JointLimits& l) {
  return AxisState{rng.uniform(l.position_min, l.position_max), rng.uniform(-l.velocity, l.velocity),
                   rng.uniform(-l.acceleration, l.acceleration)};
}

// Continuous-time stopping distance from velocity v >= 0 at zero acceleration with bounds A, J
// (ramp the deceleration up at J, hold -A, ramp down: the textbook jerk-limited profile).
double analytic_stop_distance(double v, double A, double J) {
  if (v * J >= A * A) return v * v / (2 * A) + v * A / (2 * J);
  return v * std::sqrt(v / J);
}

// The same limits with the position box moved far away (only v, a, j bound the stop).
JointLimits widened(const JointLimits& l) {
  const double span = l.position_max - l.position_min;
  JointLimits wide = l;
  wide.position_min -= 1e3 * span;
  wide.position_max += 1e3 * span;
  return wide;
}

}  // namespace

TEST_CASE("integrate is the exact triple integrator of a constant jerk") {
  Random rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    const AxisState s{rng.uniform(-1, 1), rng.uniform(-2, 2), rng.uniform(-10, 10)};
    const double j = rng.uniform(-500, 500), dt = rng.uniform(1e-4, 5e-3);
    const AxisState n = integrate(s, j, dt);
    CHECK(n.a == doctest::Approx(s.a + j * dt).epsilon(1e-12));
    CHECK(n.v == doctest::Approx(s.v + s.a * dt + j * dt * dt / 2).epsilon(1e-12));
    CHECK(n.p == doctest::Approx(s.p + s.v * dt + s.a * dt * dt / 2 + j * dt * dt * dt / 6).epsilon(1e-12));
    const AxisState last = integrate(s, j, dt, /*final_step=*/true);
    CHECK(last.v == 0.0);
    CHECK(last.a == 0.0);
    CHECK(last.p == n.p);
  }
}

TEST_CASE("brake_jerk never exceeds the jerk bound") {
  Random rng(2);
  for (int trial = 0; trial < 5000; ++trial) {
    const JointLimits l = random_limits(rng);
    const double dt = rng.uniform(2e-4, 4e-3);
    const AxisState s = random_state(rng, l);
    const BrakeStep b = brake_jerk(s.v, s.a, l, dt);
    REQUIRE(std::isfinite(b.jerk));
    CHECK(std::fabs(b.jerk) <= l.jerk * (1 + 1e-12));
  }
}

TEST_CASE("can_stop is invariant under the braking step (the filter can never be cornered)") {
  Random rng(3);
  int stoppable = 0;
  for (int trial = 0; trial < 800; ++trial) {
    const JointLimits l = random_limits(rng);
    const double dt = rng.uniform(2e-4, 4e-3);
    const int horizon = stop_horizon_steps(l, dt);
    AxisState s = random_state(rng, l);
    if (!can_stop(s, l, dt, horizon)) continue;
    ++stoppable;
    double rest = 0.0;
    REQUIRE(can_stop(s, l, dt, horizon, &rest));
    // Walk the whole stop: every intermediate state can still stop, at the same rest position, with one
    // step fewer, and stays inside the limits.
    int steps = 0;
    for (; steps <= horizon && !(s.v == 0.0 && s.a == 0.0); ++steps) {
      const BrakeStep b = brake_jerk(s.v, s.a, l, dt);
      s = integrate(s, b.jerk, dt, b.final_step);
      double rest_next = 0.0;
      REQUIRE(can_stop(s, l, dt, horizon - steps - 1, &rest_next));
      REQUIRE(rest_next == rest);
      REQUIRE(within_limits(s, l));
    }
    CHECK(s.v == 0.0);
    CHECK(s.a == 0.0);
    CHECK(s.p == rest);
  }
  CHECK(stoppable > 100);  // the sample really exercised the property
}

TEST_CASE("braking from any stoppable state reaches rest within stop_horizon_steps") {
  Random rng(4);
  for (int trial = 0; trial < 5000; ++trial) {
    JointLimits l = random_limits(rng);
    if (trial % 4 == 0) l.acceleration = rng.uniform(0.2, 1.0) * l.jerk * 4e-3;  // J dt > A for most dt
    const double dt = rng.uniform(2e-4, 4e-3);
    // Far from the position limits, every state whose velocity need not grow past V while the acceleration
    // is ramped down (|v| + a^2 / 2J <= V) is stoppable, including when one tick of jerk exceeds the
    // acceleration bound (J dt > A: the two-step dead-beat once overshot A there).
    AxisState s = random_state(rng, l);
    const double headroom = l.velocity - s.a * s.a / (2 * l.jerk);
    if (headroom <= 0) continue;
    s.v = rng.uniform(-headroom, headroom) * (1 - 1e-6);
    CAPTURE(l.velocity);
    CAPTURE(l.acceleration);
    CAPTURE(l.jerk);
    CAPTURE(dt);
    CAPTURE(s.v);
    CAPTURE(s.a);
    CHECK(can_stop(s, widened(l), dt, stop_horizon_steps(l, dt)));
  }
}

TEST_CASE("can_stop rejects states outside the limits and states that cannot stop before a position limit") {
  Random rng(5);
  for (int trial = 0; trial < 500; ++trial) {
    const JointLimits l = random_limits(rng);
    const double dt = 1e-3;
    const int horizon = stop_horizon_steps(l, dt);
    const double span = l.position_max - l.position_min;
    CHECK_FALSE(can_stop({l.position_max + 1e-6 * span + 1e-9, 0, 0}, l, dt, horizon));
    CHECK_FALSE(can_stop({l.position_min - 1e-6 * span - 1e-9, 0, 0}, l, dt, horizon));
    CHECK_FALSE(can_stop({l.position_min, l.velocity * 1.01, 0}, l, dt, horizon));
    CHECK_FALSE(can_stop({l.position_min, 0, l.acceleration * 1.01}, l, dt, horizon));
    // At the upper limit and still moving up: the stop necessarily passes the limit.
    CHECK_FALSE(can_stop({l.position_max, 0.5 * l.velocity, 0}, l, dt, horizon));
    CHECK_FALSE(can_stop({l.position_min, -0.5 * l.velocity, 0}, l, dt, horizon));
    // At rest anywhere inside: trivially stoppable, rest where it is.
    const double p = rng.uniform(l.position_min, l.position_max);
    double rest = -1e9;
    CHECK(can_stop({p, 0, 0}, l, dt, horizon, &rest));
    CHECK(rest == p);
    // Too few steps allowed: a fast joint cannot stop in one tick.
    CHECK_FALSE(can_stop({0.5 * (l.position_min + l.position_max), l.velocity, 0}, widened(l), dt, 1));
  }
}

TEST_CASE("stopping distance from cruise speed matches the continuous jerk-limited profile") {
  Random rng(6);
  for (int trial = 0; trial < 2000; ++trial) {
    const JointLimits l = widened(random_limits(rng));
    const double dt = rng.uniform(2e-4, 2e-3);
    const double v = rng.uniform(0.01, 1.0) * l.velocity * (rng.coin() ? 1 : -1);
    AxisState s{0.0, v, 0.0};
    const int horizon = stop_horizon_steps(l, dt);
    double rest = 0.0;
    REQUIRE(can_stop(s, l, dt, horizon, &rest));
    // The stop moves in the direction of travel; the landing on the tick grid may reverse the velocity by a
    // fraction of one tick of jerk (measured over 20000 stops: at most J dt^2 / 16, and J dt^3 / 27 in position), no more.
    int steps = 0;
    double previous_p = s.p;
    const double sign = v > 0 ? 1.0 : -1.0;
    while (!(s.v == 0.0 && s.a == 0.0)) {
      const BrakeStep b = brake_jerk(s.v, s.a, l, dt);
      s = integrate(s, b.jerk, dt, b.final_step);
      CHECK(sign * s.v >= -l.jerk * dt * dt / 8);
      CHECK(sign * (s.p - previous_p) >= -l.jerk * dt * dt * dt / 16);
      previous_p = s.p;
      REQUIRE(++steps <= horizon);
    }
    // ... over the continuous-time distance, up to the discretisation: each of the at most 3 phase switches
    // lands on the tick grid, which may cost up to one tick of travel at the current speed.
    const double d = std::fabs(rest);
    const double d_ref = analytic_stop_distance(std::fabs(v), l.acceleration, l.jerk);
    CHECK(d <= d_ref + 3.0 * std::fabs(v) * dt + 1e-12);
    CHECK(d >= d_ref - 3.0 * std::fabs(v) * dt - 1e-12);
    // and takes about the continuous stopping time
    const double t_ref = std::fabs(v) * l.jerk >= l.acceleration * l.acceleration
                             ? std::fabs(v) / l.acceleration + l.acceleration / l.jerk
                             : 2.0 * std::sqrt(std::fabs(v) / l.jerk);
    CHECK(steps * dt <= t_ref + 4 * dt);
    CHECK(steps * dt >= t_ref - 4 * dt);
  }
}
