// Online trajectory generator (otg.hpp): the velocity-change profile is exact, and the per-tick OTG keeps every
// limit and ends exactly on rest targets and moving references. (Durations against ruckig: tests/test_control_otg.py.)
#include <doctest/doctest.h>

#include <cmath>

#include "otg.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;
using robot_rt::control::testing::Random;

namespace {

// A random state that can keep |v| <= V (v + a|a|/2J within [-V, V]).
AxisState random_state(Random& rng, const JointLimits& l) {
  for (;;) {
    const double v = rng.uniform(-l.velocity, l.velocity), a = rng.uniform(-l.acceleration, l.acceleration);
    if (std::fabs(v + a * std::fabs(a) / (2.0 * l.jerk)) <= l.velocity) return AxisState{rng.uniform(-1, 1), v, a};
  }
}

JointLimits random_vaj(Random& rng) {
  return JointLimits{-1e300, 1e300, rng.uniform(0.2, 8.0), rng.uniform(2.0, 60.0), rng.uniform(50.0, 2000.0)};
}

// Runs the OTG until the joint is exactly on the reference; returns the ticks (-1: not within max_ticks) and checks
// the limits on every tick.
long run_to_reference(AxisState s, const OtgTarget& target, const JointLimits& l, double dt, long max_ticks) {
  for (long k = 0; k <= max_ticks; ++k) {
    const OtgTarget t{target.position + target.velocity * dt * static_cast<double>(k), target.velocity};
    if (std::fabs(s.p - t.position) <= 1e-9 && std::fabs(s.v - t.velocity) <= 1e-9 && std::fabs(s.a) <= 1e-9) return k;
    const double j = otg_jerk(s, t, l, dt);
    REQUIRE(std::isfinite(j));
    REQUIRE(std::fabs(j) <= l.jerk);
    s = integrate(s, j, dt);
    REQUIRE(std::fabs(s.v) <= l.velocity * (1.0 + kLimitSlack));
    REQUIRE(std::fabs(s.a) <= l.acceleration * (1.0 + kLimitSlack));
  }
  return -1;
}

}  // namespace

TEST_CASE("velocity_change ends exactly at (v1, 0) within |a| <= A, and its displacement is the integral") {
  Random rng(30);
  for (int trial = 0; trial < 2000; ++trial) {
    const JointLimits l = random_vaj(rng);
    const double v0 = rng.uniform(-l.velocity, l.velocity), a0 = rng.uniform(-l.acceleration, l.acceleration);
    const double v1 = rng.uniform(-l.velocity, l.velocity);
    const JerkProfile p = velocity_change(v0, a0, v1, l.acceleration, l.jerk);
    double v = v0, a = a0, x = 0.0;
    for (int k = 0; k < 3; ++k) {
      REQUIRE(p.duration_s[k] >= 0.0);
      REQUIRE(std::fabs(p.jerk[k]) <= l.jerk);
      // fine numerical integration of the segment (the closed form must agree)
      const int n = 200;
      const double h = p.duration_s[k] / n;
      for (int m = 0; m < n; ++m) {
        x += h * (v + h * (0.5 * a + h * p.jerk[k] / 6.0));
        v += h * (a + 0.5 * p.jerk[k] * h);
        a += p.jerk[k] * h;
        REQUIRE(std::fabs(a) <= l.acceleration * (1.0 + 1e-9));
      }
    }
    CHECK(v == doctest::Approx(v1).epsilon(1e-9).scale(l.velocity));
    CHECK(a == doctest::Approx(0.0).scale(l.acceleration * 1e-6));
    CHECK(profile_displacement(v0, a0, p) == doctest::Approx(x).epsilon(1e-9).scale(1.0));
  }
}

TEST_CASE("the OTG reaches rest targets exactly, inside the limits, from random states") {
  Random rng(31);
  for (int trial = 0; trial < 200; ++trial) {
    const JointLimits l = random_vaj(rng);
    const AxisState s = random_state(rng, l);
    const OtgTarget target{rng.uniform(-2.0, 2.0), 0.0};
    // generous: distance at full speed plus the ramps, twice
    const double bound_s = 2.0 * (std::fabs(target.position - s.p) / l.velocity + 2.0 * l.velocity / l.acceleration +
                                  4.0 * l.acceleration / l.jerk) + 0.05;
    CHECK(run_to_reference(s, target, l, 1e-3, static_cast<long>(bound_s / 1e-3)) >= 0);
  }
}

TEST_CASE("the OTG catches references moving at up to 0.9 V and then stays on them with zero jerk") {
  Random rng(32);
  for (int trial = 0; trial < 100; ++trial) {
    const JointLimits l = random_vaj(rng);
    const AxisState s = random_state(rng, l);
    const OtgTarget target{rng.uniform(-2.0, 2.0), rng.uniform(-0.9, 0.9) * l.velocity};
    const double dt = 1e-3;
    const long reached = run_to_reference(s, target, l, dt, 200000);
    REQUIRE(reached >= 0);
    // on the reference: the OTG holds it (zero jerk), tick after tick
    AxisState on{target.position + target.velocity * dt * static_cast<double>(reached), target.velocity, 0.0};
    for (long k = reached; k < reached + 50; ++k) {
      const OtgTarget t{target.position + target.velocity * dt * static_cast<double>(k), target.velocity};
      const double j = otg_jerk(on, t, l, dt);
      CHECK(std::fabs(j) <= 1e-6 * l.jerk);
      on = integrate(on, j, dt);
    }
  }
}

TEST_CASE("the dead-beat finish lands exactly in at most 3 ticks, and only when the limits allow it") {
  Random rng(33);
  const double dt = 1e-3;
  int finished = 0;
  for (int trial = 0; trial < 5000; ++trial) {
    const JointLimits l = random_vaj(rng);
    const OtgTarget t{rng.uniform(-1e-6, 1e-6), rng.uniform(-0.5, 0.5) * l.velocity};
    // states near the reference (a few ticks of jerk away, or further)
    const double reach = rng.uniform(0.0, 2.0);
    AxisState s{t.position + reach * rng.uniform(-1, 1) * l.jerk * 1e-9,
                t.velocity + reach * rng.uniform(-1, 1) * l.jerk * 1e-6, reach * rng.uniform(-1, 1) * l.jerk * 1e-3};
    double j;
    if (!dead_beat(s, t, l, dt, j)) continue;
    ++finished;
    for (int k = 0; k < 3; ++k) {
      const OtgTarget tk{t.position + t.velocity * dt * k, t.velocity};
      if (!dead_beat(s, tk, l, dt, j)) FAIL("the finish did not continue");
      REQUIRE(std::fabs(j) <= l.jerk);
      s = integrate(s, j, dt);
    }
    const double p_ref = t.position + t.velocity * dt * 3;
    CHECK(std::fabs(s.p - p_ref) <= 1e-12);
    CHECK(std::fabs(s.v - t.velocity) <= 1e-9);
    CHECK(std::fabs(s.a) <= 1e-6);
  }
  CHECK(finished > 100);
}

TEST_CASE("cruise_jerk never passes the cruise velocity (the brake law's two-tick overshoot is cut)") {
  Random rng(34);
  for (int trial = 0; trial < 150; ++trial) {
    const JointLimits l = random_vaj(rng);
    AxisState s = random_state(rng, l);
    const double v_c = (rng.coin() ? 1.0 : -1.0) * l.velocity;
    for (int k = 0; k < 3000; ++k) {
      s = integrate(s, cruise_jerk(s, v_c, l, 1e-3), 1e-3);
      REQUIRE(std::fabs(s.v) <= l.velocity * (1.0 + kLimitSlack));
      REQUIRE(std::fabs(s.a) <= l.acceleration * (1.0 + kLimitSlack));
    }
    CHECK(s.v == doctest::Approx(v_c).epsilon(1e-9));
  }
}

TEST_CASE("velocity tracking reaches any target velocity from either side without passing it, inside the limits") {
  // the law behind LoopConfig::velocity_tracking; a target below the current velocity was overshot by cruise_jerk
  // (its guard assumes approach from inside [-V, V]): e.g. 0.96 -> 0.23 rad/s went down to -0.48 rad/s
  Random rng(35);
  const double dt = 1e-3;
  for (int trial = 0; trial < 300; ++trial) {
    const JointLimits l = random_vaj(rng);
    AxisState s = random_state(rng, l);
    const double target = trial % 10 == 0 ? (rng.coin() ? 1.0 : -1.0) * l.velocity : rng.uniform(-l.velocity, l.velocity);
    // the time-optimal bound: ramp a to zero, then change the velocity at full acceleration, then ramp back
    const double bound_s = 2.0 * std::fabs(s.a) / l.jerk + 2.0 * l.velocity / l.acceleration + 2.0 * l.acceleration / l.jerk;
    // once the acceleration no longer pushes away from the target, the velocity approaches it monotonically
    const double v_free = s.v + s.a * std::fabs(s.a) / (2.0 * l.jerk);  // where ramping a to 0 at once would end
    const double side = v_free >= target ? 1.0 : -1.0;                  // the side it starts from, once wound down
    long k = 0;
    const long max_ticks = static_cast<long>(bound_s / dt) + 10;
    for (; k <= max_ticks; ++k) {
      if (std::fabs(s.v - target) <= 1e-9 && std::fabs(s.a) <= 1e-9) break;
      const double j = velocity_tracking_jerk(s, target, l, dt);
      REQUIRE(std::isfinite(j));
      REQUIRE(std::fabs(j) <= l.jerk * (1.0 + kLimitSlack));
      s = integrate(s, j, dt);
      REQUIRE(std::fabs(s.v) <= l.velocity * (1.0 + kLimitSlack));
      REQUIRE(std::fabs(s.a) <= l.acceleration * (1.0 + kLimitSlack));
      if (s.a * side <= 0.0) {  // decelerating towards the target: never beyond it (but for a few J dt^2)
        CHECK(side * (s.v - target) >= -4.0 * l.jerk * dt * dt);  // the brake law's dead-beat rounding
      }
    }
    CHECK(k <= max_ticks);
    // and then it stays there with zero jerk
    for (int m = 0; m < 50; ++m) s = integrate(s, velocity_tracking_jerk(s, target, l, dt), dt);
    CHECK(s.v == doctest::Approx(target).epsilon(1e-9).scale(l.velocity));
    CHECK(std::fabs(s.a) <= 1e-6 * l.acceleration);
  }
}
