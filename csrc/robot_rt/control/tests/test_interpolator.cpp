// Interpolator (interpolator.hpp): continuous in position, linear ramps with the matching velocity
// feed-forward, durations clamped to [min, max], the command interval smoothed.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>

#include "interpolator.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;
using robot_rt::control::testing::Random;

TEST_CASE("hold keeps the position with zero velocity") {
  Interpolator ip;
  ip.configure(3, 0.01, 0.002, 0.1);
  const double q[3] = {0.1, -0.2, 0.3};
  ip.hold(q, 1000);
  for (std::int64_t t : {std::int64_t{0}, std::int64_t{1000}, std::int64_t{5'000'000}, std::int64_t{1'000'000'000}}) {
    double p[3], v[3];
    ip.sample(t, p, v);
    for (int i = 0; i < 3; ++i) {
      CHECK(p[i] == q[i]);
      CHECK(v[i] == 0.0);
    }
  }
}

TEST_CASE("a goal is reached by a linear ramp over the nominal period, with the slope as feed-forward") {
  Interpolator ip;
  ip.configure(2, 0.01, 0.002, 0.1);
  const double q0[2] = {0.0, 1.0}, goal[2] = {0.5, 0.0};
  const std::int64_t t0 = 1'000'000'000;
  ip.hold(q0, t0 - 1'000'000);
  ip.set_goal(goal, t0);
  for (int k = 0; k <= 12; ++k) {
    const std::int64_t t = t0 + k * 1'000'000;  // 1 ms ticks over a 10 ms ramp
    double p[2], v[2];
    ip.sample(t, p, v);
    const double s = std::fmin(1.0, k / 10.0);
    for (int i = 0; i < 2; ++i) {
      CHECK(p[i] == doctest::Approx(q0[i] + s * (goal[i] - q0[i])));
      CHECK(v[i] == doctest::Approx(k < 10 ? (goal[i] - q0[i]) / 0.01 : 0.0));
    }
  }
}

TEST_CASE("the target is continuous when a new goal interrupts a ramp") {
  Random rng(30);
  for (int trial = 0; trial < 100; ++trial) {
    Interpolator ip;
    const int dof = rng.integer(1, kMaxDof);
    ip.configure(dof, rng.uniform(0.002, 0.05), 0.002, 0.1);
    double q[kMaxDof];
    for (int i = 0; i < dof; ++i) q[i] = rng.uniform(-1, 1);
    std::int64_t now = 1'000'000'000;
    ip.hold(q, now);
    for (int k = 0; k < 50; ++k) {
      now += rng.integer(100'000, 40'000'000);
      double before[kMaxDof], after[kMaxDof], v[kMaxDof], goal[kMaxDof];
      ip.sample(now, before, v);
      for (int i = 0; i < dof; ++i) goal[i] = rng.uniform(-2, 2);
      ip.set_goal(goal, now);
      ip.sample(now, after, v);
      for (int i = 0; i < dof; ++i) CHECK(after[i] == doctest::Approx(before[i]).epsilon(1e-12));
      // far in the future: exactly the goal
      ip.sample(now + 1'000'000'000, after, v);
      for (int i = 0; i < dof; ++i) {
        CHECK(after[i] == goal[i]);
        CHECK(v[i] == 0.0);
      }
    }
  }
}

TEST_CASE("the ramp duration follows the smoothed command interval, clamped to [min, max]") {
  const double min_s = 0.002, max_s = 0.1;
  Interpolator ip;
  ip.configure(1, 0.01, min_s, max_s);
  const double zero = 0.0;
  std::int64_t now = 0;
  ip.hold(&zero, now);
  // Commands every 20 ms: the smoothed interval converges from 10 ms to 20 ms.
  for (int k = 0; k < 60; ++k) {
    now += 20'000'000;
    const double g = (k % 2) ? 1.0 : 0.0;
    ip.set_goal(&g, now);
  }
  CHECK(ip.period_s() == doctest::Approx(0.02).epsilon(1e-4));
  // Gaps longer than max_s do not enter the average (a pause is not a command interval).
  now += 500'000'000;
  double g = 0.0;
  ip.set_goal(&g, now);
  CHECK(ip.period_s() == doctest::Approx(0.02).epsilon(1e-4));
  // Very fast commands: the ramp is never shorter than min_s.
  for (int k = 0; k < 200; ++k) {
    now += 100'000;  // 0.1 ms
    g = (k % 2) ? 1.0 : 0.0;
    ip.set_goal(&g, now);
  }
  CHECK(ip.period_s() < min_s);
  double p, v;
  ip.sample(now, &p, &v);
  const double start = p;
  g = start + 1.0;
  ip.set_goal(&g, now);
  ip.sample(now + static_cast<std::int64_t>(min_s * 1e9) - 1000, &p, &v);
  CHECK(p < g);  // still ramping just before min_s
  CHECK(v == doctest::Approx(1.0 / min_s));
  ip.sample(now + static_cast<std::int64_t>(min_s * 1e9), &p, &v);
  CHECK(p == g);
}
