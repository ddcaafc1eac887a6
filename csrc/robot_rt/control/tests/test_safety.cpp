// Safety filter (safety.hpp): no output ever violates a joint limit, whatever the target stream; targets are
// validated (NaN/Inf rejected, out-of-range clamped) before they reach it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "safety.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;
using robot_rt::control::testing::Random;
using robot_rt::control::testing::random_model;

namespace {

enum class Stream { kUniform, kAlternatingExtremes, kAtLimit, kBeyondLimits, kBangBang, kSmallSteps, kCount };

// Checks one tick's output against the limits, jerk bound and continuity with the previous state.
void check_tick(const SafetyFilter& f, const AxisState* previous, double dt) {
  JointCommand cmd;
  f.fill_command(cmd);
  REQUIRE(cmd.dof == f.dof());
  for (int i = 0; i < f.dof(); ++i) {
    const JointLimits& l = f.model().limits[i];
    const AxisState& s = f.state(i);
    REQUIRE(std::isfinite(s.p));
    REQUIRE(std::isfinite(s.v));
    REQUIRE(std::isfinite(s.a));
    REQUIRE(within_limits(s, l));
    REQUIRE(std::fabs(f.last_jerk(i)) <= l.jerk * (1 + 1e-12));
    // the command the robot receives is inside the box exactly (no rounding slack)
    REQUIRE(cmd.position_si[i] >= l.position_min);
    REQUIRE(cmd.position_si[i] <= l.position_max);
    REQUIRE(std::fabs(cmd.velocity_si[i]) <= l.velocity);
    // the state is the integral of the reported jerk (no hidden jump)
    const AxisState predicted = integrate(previous[i], f.last_jerk(i), dt);
    REQUIRE(s.p == doctest::Approx(predicted.p).epsilon(1e-12).scale(1.0));
    if (!(s.v == 0.0 && s.a == 0.0)) {
      REQUIRE(s.a == doctest::Approx(predicted.a).epsilon(1e-12).scale(l.acceleration));
    }
  }
}

void fill_target(Random& rng, const RobotModel& m, Stream kind, long tick, double* target) {
  for (int i = 0; i < m.dof; ++i) {
    const JointLimits& l = m.limits[i];
    const double span = l.position_max - l.position_min;
    switch (kind) {
      case Stream::kUniform: target[i] = rng.uniform(l.position_min, l.position_max); break;
      case Stream::kAlternatingExtremes:  // flips every tick: the policy of the hard-stop hits
        target[i] = (tick % 2 == 0) ? l.position_max : l.position_min;
        break;
      case Stream::kAtLimit: target[i] = (i % 2 == 0) ? l.position_max : l.position_min; break;
      case Stream::kBeyondLimits: target[i] = rng.uniform(l.position_min - span, l.position_max + span); break;
      case Stream::kBangBang:  // switches every 20..200 ms
        target[i] = ((tick / (20 + 37 * i)) % 2 == 0) ? l.position_max + 0.1 * span : l.position_min - 0.1 * span;
        break;
      case Stream::kSmallSteps: target[i] = rng.uniform(l.position_min, l.position_min + 0.01 * span); break;
      case Stream::kCount: break;
    }
  }
}

}  // namespace

TEST_CASE("configure and reset reject invalid limits and starting points") {
  Random rng(10);
  RobotModel m = random_model(rng, 3);
  SafetyFilter f;
  CHECK(f.configure(m, 1e-3));
  CHECK_FALSE(f.configure(m, 0.0));
  CHECK_FALSE(f.configure(m, std::numeric_limits<double>::quiet_NaN()));
  RobotModel bad = m;
  bad.limits[1].position_max = bad.limits[1].position_min;
  CHECK_FALSE(f.configure(bad, 1e-3));
  bad = m;
  bad.limits[2].jerk = 0.0;
  CHECK_FALSE(f.configure(bad, 1e-3));
  bad = m;  // a soft margin must leave a soft box (and be >= 0)
  bad.soft_margin_si[0] = 0.5 * (bad.limits[0].position_max - bad.limits[0].position_min);
  CHECK_FALSE(f.configure(bad, 1e-3));
  bad.soft_margin_si[0] = -1e-3;
  CHECK_FALSE(f.configure(bad, 1e-3));
  bad = m;
  bad.dof = kMaxDof + 1;
  CHECK_FALSE(f.configure(bad, 1e-3));
  bad.dof = 0;
  CHECK_FALSE(f.configure(bad, 1e-3));

  REQUIRE(f.configure(m, 1e-3));
  double q[3] = {m.home_si[0], m.home_si[1], m.home_si[2]};
  CHECK(f.reset(q));
  CHECK(f.at_rest());
  q[1] = m.limits[1].position_max + 1e-6;
  CHECK_FALSE(f.reset(q));
  q[1] = std::numeric_limits<double>::quiet_NaN();
  CHECK_FALSE(f.reset(q));
}

TEST_CASE("validate_target rejects NaN/Inf and clamps out-of-range positions") {
  Random rng(11);
  RobotModel m = random_model(rng, 4);
  SafetyFilter f;
  REQUIRE(f.configure(m, 1e-3));
  const double bad_values[] = {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                               -std::numeric_limits<double>::infinity()};
  for (const double bad : bad_values) {
    for (int j = 0; j < m.dof; ++j) {
      double p[4], v[4] = {0, 0, 0, 0};
      for (int i = 0; i < m.dof; ++i) p[i] = m.home_si[i];
      int joint = -7;
      double value = 0;
      p[j] = bad;
      CHECK(f.validate_target(p, v, joint, value) == kTargetNonFinite);
      CHECK(joint == j);
      CHECK((std::isnan(bad) ? std::isnan(value) : value == bad));
      // in the velocity feed-forward too
      p[j] = m.home_si[j];
      v[j] = bad;
      CHECK(f.validate_target(p, v, joint, value) == kTargetNonFinite);
      CHECK(joint == j);
      // a null velocity is allowed (position-only targets)
      CHECK(f.validate_target(p, nullptr, joint, value) == 0u);
    }
  }
  // Out of range: clamped onto the nearer limit, the first offending joint and its requested value reported.
  for (int trial = 0; trial < 200; ++trial) {
    double p[4], original[4];
    for (int i = 0; i < m.dof; ++i) {
      const JointLimits& l = m.limits[i];
      const double span = l.position_max - l.position_min;
      p[i] = original[i] = rng.uniform(l.position_min - span, l.position_max + span);
    }
    int joint = -7;
    double value = 0;
    const std::uint32_t result = f.validate_target(p, nullptr, joint, value);
    int first_out = -1;
    for (int i = 0; i < m.dof; ++i) {
      const JointLimits& l = m.limits[i];
      const bool out = original[i] < l.position_min || original[i] > l.position_max;
      if (out && first_out < 0) first_out = i;
      CHECK(p[i] == (original[i] < l.position_min ? l.position_min
                                                  : (original[i] > l.position_max ? l.position_max : original[i])));
    }
    CHECK(result == (first_out >= 0 ? kTargetClamped : 0u));
    CHECK((result & kTargetRejected) == 0u);
    CHECK(joint == first_out);
    if (first_out >= 0) CHECK(value == original[first_out]);
  }
}

TEST_CASE("limits are never violated from random states and random target streams") {
  Random rng(12);
  const double dts[] = {5e-4, 1e-3, 2e-3};
  int overridden_ticks = 0;
  for (int trial = 0; trial < 18; ++trial) {
    const int dof = rng.integer(1, 8);
    const RobotModel m = random_model(rng, dof);
    const double dt = dts[trial % 3];
    SafetyFilter f;
    REQUIRE(f.configure(m, dt));
    double start[kMaxDof];
    for (int i = 0; i < dof; ++i) start[i] = rng.uniform(m.limits[i].position_min, m.limits[i].position_max);
    REQUIRE(f.reset(start));
    // Random states: drive with random targets first, then switch the stream kind every 50..400 ticks.
    AxisState previous[kMaxDof];
    for (int i = 0; i < dof; ++i) previous[i] = f.state(i);
    Stream kind = Stream::kUniform;
    long until = 0;
    for (long tick = 0; tick < 1200; ++tick) {
      if (tick >= until) {
        kind = static_cast<Stream>(rng.integer(0, static_cast<int>(Stream::kCount) - 1));
        until = tick + rng.integer(50, 400);
      }
      double target[kMaxDof], velocity[kMaxDof];
      fill_target(rng, m, kind, tick, target);
      for (int i = 0; i < dof; ++i) velocity[i] = rng.coin(0.2) ? rng.uniform(-2, 2) * m.limits[i].velocity : 0.0;
      int joint;
      double value;
      const std::uint32_t verdict = f.validate_target(target, velocity, joint, value);
      REQUIRE((verdict & kTargetRejected) == 0u);
      const bool stop = rng.coin(0.01);
      if (f.step(target, velocity, stop) != 0u) ++overridden_ticks;
      check_tick(f, previous, dt);
      for (int i = 0; i < dof; ++i) previous[i] = f.state(i);
    }
  }
  CHECK(overridden_ticks > 0);  // the streams did push the filter to its limits
}

TEST_CASE("alternating extreme targets (any flip period) keep every joint inside its limits") {
  Random rng(13);
  for (int trial = 0; trial < 8; ++trial) {
    const RobotModel m = random_model(rng, 6);
    const double dt = 1e-3;
    SafetyFilter f;
    REQUIRE(f.configure(m, dt));
    REQUIRE(f.reset(m.home_si));
    AxisState previous[kMaxDof];
    for (int i = 0; i < m.dof; ++i) previous[i] = f.state(i);
    const int period = rng.integer(1, 80);  // ticks between flips
    for (long tick = 0; tick < 2000; ++tick) {
      double target[kMaxDof];
      for (int i = 0; i < m.dof; ++i)
        target[i] = ((tick / period) % 2 == 0) ? m.limits[i].position_max : m.limits[i].position_min;
      f.step(target, nullptr, false);
      check_tick(f, previous, dt);
      for (int i = 0; i < m.dof; ++i) previous[i] = f.state(i);
    }
  }
}

TEST_CASE("stop mode brakes to rest within the stop horizon and stays inside the limits") {
  Random rng(14);
  for (int trial = 0; trial < 40; ++trial) {
    const RobotModel m = random_model(rng, 4);
    const double dt = 1e-3;
    SafetyFilter f;
    REQUIRE(f.configure(m, dt));
    REQUIRE(f.reset(m.home_si));
    // Build up motion towards random far targets for a random time.
    double target[kMaxDof];
    for (int i = 0; i < m.dof; ++i) target[i] = rng.coin() ? m.limits[i].position_max : m.limits[i].position_min;
    const int run = rng.integer(1, 600);
    for (int k = 0; k < run; ++k) f.step(target, nullptr, false);
    int horizon = 0;
    for (int i = 0; i < m.dof; ++i) horizon = std::max(horizon, stop_horizon_steps(m.limits[i], dt));
    AxisState previous[kMaxDof];
    for (int i = 0; i < m.dof; ++i) previous[i] = f.state(i);
    int steps = 0;
    while (!f.at_rest()) {
      f.step(nullptr, nullptr, true);
      check_tick(f, previous, dt);
      for (int i = 0; i < m.dof; ++i) previous[i] = f.state(i);
      REQUIRE(++steps <= horizon);
    }
    // at rest it stays at rest
    double rest[kMaxDof];
    for (int i = 0; i < m.dof; ++i) rest[i] = f.state(i).p;
    for (int k = 0; k < 10; ++k) f.step(nullptr, nullptr, true);
    for (int i = 0; i < m.dof; ++i) CHECK(f.state(i).p == rest[i]);
  }
}

// Limits shaped like the repository's robots (acceleration ramp A/J of 20..80 ms, V/A of 80..300 ms).
RobotModel robot_like_model(Random& rng, int dof) {
  RobotModel m;
  m.dof = dof;
  for (int i = 0; i < dof; ++i) {
    JointLimits& l = m.limits[i];
    l.position_min = -rng.uniform(0.3, 3.2);
    l.position_max = rng.uniform(0.3, 3.2);
    l.acceleration = rng.uniform(5.0, 60.0);
    l.jerk = l.acceleration / rng.uniform(0.02, 0.08);
    l.velocity = l.acceleration * rng.uniform(0.08, 0.3);
    m.home_si[i] = 0.0;
  }
  return m;
}

// Steps towards a fixed target for `ticks`; true when every joint ends at rest on the target.
bool settles(SafetyFilter& f, const double* target, int ticks) {
  for (int k = 0; k < ticks; ++k) f.step(target, nullptr, false);
  for (int i = 0; i < f.dof(); ++i) {
    if (std::fabs(f.state(i).p - target[i]) > 1e-6 || std::fabs(f.state(i).v) > 1e-6) return false;
  }
  return true;
}

TEST_CASE("a reachable target is reached exactly and at rest, in about the time-optimal duration") {
  Random rng(15);
  for (int trial = 0; trial < 30; ++trial) {
    const RobotModel m = robot_like_model(rng, 3);
    SafetyFilter f;
    REQUIRE(f.configure(m, 1e-3));
    REQUIRE(f.reset(m.home_si));
    double target[kMaxDof];
    for (int i = 0; i < m.dof; ++i) {
      const JointLimits& l = m.limits[i];
      target[i] = rng.uniform(l.position_min + 0.1 * (l.position_max - l.position_min),
                              l.position_max - 0.1 * (l.position_max - l.position_min));
    }
    CHECK(settles(f, target, 10000));
  }
}

// The tracking cascade this OTG replaced limit-cycled around a fixed target for ever when its bandwidth x A/J
// exceeded about 2 (1099 of 1600 random targets with joint 0's limits at 80 rad/s); the OTG has no gain to tune.
TEST_CASE("the limit cycle of the old tracking cascade is gone: joint 0's limits settle on random targets") {
  RobotModel m;
  m.dof = 1;
  m.limits[0] = JointLimits{-1.0, 1.0, 2.0, 10.0, 200.0};
  Random rng(16);
  for (int trial = 0; trial < 40; ++trial) {
    SafetyFilter f;
    REQUIRE(f.configure(m, 1e-3));
    const double start = rng.uniform(-0.9, 0.9), target = rng.uniform(-0.9, 0.9);
    REQUIRE(f.reset(&start));
    CHECK(settles(f, &target, 4000));  // the slowest rest-to-rest move of 1.8 m takes about 1.2 s
  }
}

// Soft limits: the commanded trajectory keeps the soft box, targets are clamped into it, and a joint outside it
// (inside the hard box) only moves back in.
TEST_CASE("soft margins: commands stay in the soft box; a joint started outside it only moves back in") {
  Random rng(17);
  for (int trial = 0; trial < 8; ++trial) {
    RobotModel m = robot_like_model(rng, 2);
    for (int i = 0; i < m.dof; ++i)
      m.soft_margin_si[i] = rng.uniform(0.0, 0.2) * (m.limits[i].position_max - m.limits[i].position_min);
    SafetyFilter f;
    REQUIRE(f.configure(m, 1e-3));
    for (int i = 0; i < m.dof; ++i) {
      CHECK(f.soft_min(i) == m.limits[i].position_min + m.soft_margin_si[i]);
      CHECK(f.soft_max(i) == m.limits[i].position_max - m.soft_margin_si[i]);
    }
    // start between the hard and the soft limit (below the soft minimum on joint 0, above the maximum on joint 1)
    double start[2] = {m.limits[0].position_min + 0.5 * m.soft_margin_si[0],
                       m.limits[1].position_max - 0.5 * m.soft_margin_si[1]};
    REQUIRE(f.reset(start));
    double lowest = start[0], highest = start[1];
    bool inside[2] = {false, false};
    for (long tick = 0; tick < 3000; ++tick) {
      // alternate extremes beyond the hard limits: clamped into the soft box
      double target[2];
      for (int i = 0; i < 2; ++i) {
        const JointLimits& l = m.limits[i];
        target[i] = ((tick / 150) % 2 == 0) ? l.position_max + 1.0 : l.position_min - 1.0;
      }
      int joint;
      double value;
      CHECK((f.validate_target(target, nullptr, joint, value) & kTargetClamped) != 0u);
      for (int i = 0; i < 2; ++i) CHECK((target[i] == f.soft_min(i) || target[i] == f.soft_max(i)));
      f.step(target, nullptr, false);
      JointCommand cmd;
      f.fill_command(cmd);
      for (int i = 0; i < 2; ++i) {
        const double p = f.state(i).p;
        // once its box has narrowed to the soft box a joint stays there; before, it never goes further out than where
        // it started
        if (f.limits(i).position_min == f.soft_min(i) && f.limits(i).position_max == f.soft_max(i)) inside[i] = true;
        if (inside[i]) {
          INFO("trial ", trial, " tick ", tick, " joint ", i, " p ", p, " v ", f.state(i).v, " a ", f.state(i).a,
               " soft ", f.soft_min(i), " ", f.soft_max(i), " box ", f.limits(i).position_min, " ",
               f.limits(i).position_max);
          const double span = m.limits[i].position_max - m.limits[i].position_min;
          REQUIRE(p >= f.soft_min(i) - kLimitSlack * span);
          REQUIRE(p <= f.soft_max(i) + kLimitSlack * span);
          REQUIRE(cmd.position_si[i] >= f.soft_min(i));
          REQUIRE(cmd.position_si[i] <= f.soft_max(i));
        }
      }
      REQUIRE(f.state(0).p >= lowest - 1e-12);
      REQUIRE(f.state(1).p <= highest + 1e-12);
    }
    CHECK(inside[0]);
    CHECK(inside[1]);
  }
}

// forecast_workspace on a one-joint prismatic chain whose paddle height is the joint position: the box's floor at
// z = 0.5 m. Moving down fast towards a goal just above the floor, the OTG overshoots the goal by what it still
// travels while it brakes; the forecast sees that overshoot (the goal itself is in the box).
TEST_CASE("forecast_workspace sees the braking overshoot below a goal inside the box") {
  RobotModel m = testing::lift_model(0.5);
  const double dt = 1e-3;
  const double goal = 0.55;

  // at rest above the goal: the path descends onto the goal and never leaves the box
  AxisState rest{1.0, 0.0, 0.0};
  WorkspaceForecast calm = forecast_workspace(m, &rest, &goal, nullptr, 0.0, dt, 5000, 0.0);
  CHECK(calm.settled);
  CHECK(calm.max_excess_m == 0.0);
  CHECK(calm.first_exit_tick == -1);

  // at full speed downwards 0.1 m above the goal: the deepest point of the path is the braking stop's
  double lowest = 0.65;
  AxisState s{0.65, -2.0, 0.0};
  for (int k = 0; k < 100000 && !(s.v == 0.0 && s.a == 0.0); ++k) {
    const BrakeStep b = brake_jerk(s.v, s.a, m.limits[0], dt);
    s = integrate(s, b.jerk, dt, b.final_step);
    lowest = std::min(lowest, s.p);
  }
  REQUIRE(lowest < 0.5);  // braking alone already passes the floor
  AxisState fast{0.65, -2.0, 0.0};
  WorkspaceForecast f = forecast_workspace(m, &fast, &goal, nullptr, 0.0, dt, 5000, 0.0);
  CHECK(f.settled);
  CHECK(f.first_exit_tick > 0);
  // nothing brakes harder than the pure stop: the OTG's path reaches as deep (to within the tick discretisation)
  CHECK(f.max_excess_m == doctest::Approx(0.5 - lowest).epsilon(0.02));
  // a margin moves the floor up: the same path is further out of the shrunk box
  WorkspaceForecast g = forecast_workspace(m, &fast, &goal, nullptr, 0.0, dt, 5000, 0.03);
  CHECK(g.max_excess_m == doctest::Approx(f.max_excess_m + 0.03).epsilon(1e-9));
  CHECK(g.first_exit_tick <= f.first_exit_tick);
  // a model without a workspace box forecasts nothing
  m.has_workspace = false;
  CHECK(forecast_workspace(m, &fast, &goal, nullptr, 0.0, dt, 5000, 0.0).max_excess_m == 0.0);
}

TEST_CASE("the whole blade stays in the workspace box, not only the paddle centre") {
  // a vertical blade (face normal along y) of radius 0.075 m reaches 0.075 m below its centre
  RobotModel m = testing::lift_model(0.5);
  const double zero[3] = {0.0, 0.0, 0.0}, upright[3] = {M_PI / 2, 0.0, 0.0};
  m.chain.set_paddle(zero, upright);
  const double radius = 0.075;
  const double centre_above_floor[] = {0.52, 0.574, 0.576, 0.7};
  for (const double with_radius : {0.0, radius}) {
    m.paddle_radius_m = with_radius;
    SafetyFilter f;
    REQUIRE(f.configure(m, 1e-3));
    const double start_inside[1] = {1.0};
    REQUIRE(f.reset(start_inside));
    for (const double z : centre_above_floor) {
      CAPTURE(with_radius);
      CAPTURE(z);
      double p[1] = {z};
      int axis = -1;
      double value = 0.0;
      const bool blade_in = z - with_radius >= 0.5;
      CHECK(((f.validate_target(p, nullptr, axis, value) & kTargetWorkspace) != 0) == !blade_in);
      if (!blade_in) {
        CHECK(axis == 2);
        CHECK(value == doctest::Approx(z - with_radius).epsilon(1e-12));  // the blade's lowest point
      }
      const PaddleBox box = paddle_box(m, p);
      CHECK(box.half_m[2] == doctest::Approx(with_radius).epsilon(1e-12));
      CHECK(box.half_m[1] == doctest::Approx(0.0).scale(1.0).epsilon(1e-12));  // along its normal: flat
      CHECK(workspace_excess_m(m, box) == doctest::Approx(std::max(0.0, 0.5 - (z - with_radius))).scale(1.0));
    }
  }
  // a flat blade (normal along z) reaches R sideways and nothing downwards
  m.chain.set_paddle(zero, zero);
  m.paddle_radius_m = radius;
  const double low[1] = {0.51};
  const PaddleBox flat = paddle_box(m, low);
  CHECK(flat.half_m[0] == doctest::Approx(radius));
  CHECK(flat.half_m[2] == doctest::Approx(0.0).scale(1.0));
  CHECK(workspace_excess_m(m, flat) == 0.0);
  // the forecast measures the blade too: a descent onto a goal 0.05 m above the floor leaves the box with an
  // upright blade by 0.025 m (radius 0.075) once at rest
  m.chain.set_paddle(zero, upright);
  AxisState rest{1.0, 0.0, 0.0};
  const double goal = 0.55;
  const WorkspaceForecast w = forecast_workspace(m, &rest, &goal, nullptr, 0.0, 1e-3, 5000, 0.0);
  CHECK(w.max_excess_m == doctest::Approx(0.025).epsilon(1e-6));
}
