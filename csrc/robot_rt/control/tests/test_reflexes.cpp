// Reflex building blocks (reflexes.hpp): the stop latch, the tracking-error tube and the measurement plausibility
// check. (The reflexes inside the loop, with their detection bounds: test_lifecycle.cpp.)
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "otg.hpp"
#include "reflexes.hpp"
#include "servo.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;
using robot_rt::control::testing::Random;

TEST_CASE("stop latch: reasons accumulate, each reported once, and only clear() releases them") {
  StopLatch latch;
  CHECK_FALSE(latch.latched());
  CHECK(latch.trip(kReasonWatchdog));
  CHECK_FALSE(latch.trip(kReasonWatchdog));  // already latched: not reported again
  CHECK(latch.trip(kReasonEstop));
  CHECK(latch.reasons() == (kReasonWatchdog | kReasonEstop));
  CHECK(latch.latched());
  latch.clear();
  CHECK_FALSE(latch.latched());
  CHECK(latch.trip(kReasonWatchdog));  // a new stop reports again
  // random trip sequences: latched == any trip since the last clear, reasons == their union
  Random rng(40);
  for (int trial = 0; trial < 200; ++trial) {
    StopLatch l;
    std::uint32_t expected = 0;
    for (int k = 0; k < 100; ++k) {
      if (rng.coin(0.05)) {
        l.clear();
        expected = 0;
      }
      const std::uint32_t reason = 1u << rng.integer(0, kReasonCount - 1);
      if (rng.coin(0.2)) {
        CHECK(l.trip(reason) == ((expected & reason) == 0));
        expected |= reason;
      }
      CHECK(l.reasons() == expected);
      CHECK(l.latched() == (expected != 0));
    }
  }
  CHECK((kReasonSafetyMask & kReasonShutdown) == 0u);
}

TEST_CASE("tracking tube: measured within threshold of the last `window` commands passes, beyond trips") {
  TrackingMonitor m;
  const double threshold[2] = {0.01, 0.02};
  m.configure(2, 5, threshold);
  const double start[2] = {0.0, 1.0};
  m.reset(start);
  double deviation = -1;
  CHECK(m.check(start, deviation) == -1);
  CHECK(deviation == 0.0);
  // the commanded path moves from 0 to 0.4 in 5 ticks on joint 0: the tube is [0, 0.4] (window 5 = those pushes)
  for (int k = 1; k <= 4; ++k) {
    const double c[2] = {0.1 * k, 1.0};
    m.push(c);
  }
  const double lagging[2] = {0.0, 1.0};  // the robot still at the start: inside the tube (a transport delay)
  CHECK(m.check(lagging, deviation) == -1);
  const double ahead[2] = {0.405, 1.0};  // 5 mm beyond the newest command: within 10 mm
  CHECK(m.check(ahead, deviation) == -1);
  const double far[2] = {0.42, 1.0};  // 20 mm beyond: trips on joint 0 with the deviation
  CHECK(m.check(far, deviation) == 0);
  CHECK(deviation == doctest::Approx(0.02));
  const double off1[2] = {0.2, 1.03};  // joint 1 3 cm off with a 2 cm threshold
  CHECK(m.check(off1, deviation) == 1);
  CHECK(deviation == doctest::Approx(0.03));
  // the window forgets: after 5 more pushes at 0.4 the start position is outside the tube
  for (int k = 0; k < 5; ++k) {
    const double c[2] = {0.4, 1.0};
    m.push(c);
  }
  CHECK(m.check(lagging, deviation) == 0);
  CHECK(deviation == doctest::Approx(0.4));
  m.reset(start);
  CHECK(m.check(lagging, deviation) == -1);
}

TEST_CASE("tracking tube: a late loop widens it ahead of the newest command by velocity x lateness, capped") {
  TrackingMonitor m;
  const double threshold[1] = {0.01};
  m.configure(1, 5, threshold);
  const double start[1] = {0.0};
  m.reset(start);
  for (int k = 1; k <= 4; ++k) {
    const double c[1] = {0.002 * k}, v[1] = {2.0};  // 2 m/s
    m.push(c, v);
  }
  double deviation = -1;
  const double ahead[1] = {0.008 + 0.01 + 0.015};  // 15 mm beyond newest + threshold
  CHECK(m.check(ahead, deviation) == 0);              // on time: trips
  CHECK(deviation == doctest::Approx(0.025));
  CHECK(m.check(ahead, deviation, 0.005) == 0);  // 5 ms late: the robot may be 10 mm further: still 5 mm beyond
  CHECK(deviation == doctest::Approx(0.015));
  CHECK(m.check(ahead, deviation, 0.008) == -1);  // 8 ms late: 16 mm further allowed
  const double behind[1] = {-0.012};              // the lateness widens the tube ahead only, not behind
  CHECK(m.check(behind, deviation, 0.05) == 0);
  CHECK(deviation == doctest::Approx(0.012));
  const double very_far[1] = {0.008 + 0.01 + 0.25};  // 250 mm: more than the capped lead (2 m/s x 0.1 s) allows
  CHECK(m.check(very_far, deviation, 10.0) == 0);
  CHECK(deviation == doctest::Approx(0.25 + 0.01 - 2.0 * TrackingMonitor::kMaxLeadS));
  m.reset(start);  // a reset forgets the velocity too
  const double small[1] = {0.015};
  CHECK(m.check(small, deviation, 0.05) == 0);
}

TEST_CASE("measurement check: non-finite, outside the hard range and implausibly fast states are flagged") {
  JointLimits hard[2] = {{-1.0, 1.0, 2.0, 10.0, 200.0}, {-2.0, 2.0, 4.0, 30.0, 600.0}};
  JointState ok;
  ok.dof = 2;
  ok.stamp_ns = 1'000'000'000;
  ok.position_si[0] = 0.3;
  ok.position_si[1] = -1.9;
  ok.velocity_si[0] = 1.5;
  ok.velocity_si[1] = -4.0;
  int joint = -1;
  double value = 0;
  CHECK(check_measurement(ok, hard, 2, 2.0, joint, value) == MeasurementFault::kNone);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (const double bad : {nan, inf, -inf}) {
    JointState s = ok;
    s.position_si[1] = bad;
    CHECK(check_measurement(s, hard, 2, 2.0, joint, value) == MeasurementFault::kNonFinite);
    CHECK(joint == 1);
    s = ok;
    s.velocity_si[0] = bad;
    CHECK(check_measurement(s, hard, 2, 2.0, joint, value) == MeasurementFault::kNonFinite);
    CHECK(joint == 0);
  }
  for (const double out : {1e300, -1e300, 1.0 + 1e-6, -1.0 - 1e-6}) {
    JointState s = ok;
    s.position_si[0] = out;
    CHECK(check_measurement(s, hard, 2, 2.0, joint, value) == MeasurementFault::kOutOfRange);
    CHECK(joint == 0);
    CHECK(value == out);
  }
  JointState edge = ok;  // exactly at the hard stop is plausible
  edge.position_si[0] = 1.0;
  CHECK(check_measurement(edge, hard, 2, 2.0, joint, value) == MeasurementFault::kNone);
  JointState fast = ok;
  fast.velocity_si[1] = -8.01;  // above 2 x V
  CHECK(check_measurement(fast, hard, 2, 2.0, joint, value) == MeasurementFault::kImplausibleVelocity);
  CHECK(joint == 1);
  // a jump inside the range with a plausible velocity is not this check's: the tracking tube catches it
  JointState jump = ok;
  jump.position_si[0] = -0.9;
  CHECK(check_measurement(jump, hard, 2, 2.0, joint, value) == MeasurementFault::kNone);
}

TEST_CASE("servo model: the error bound holds for jerk-limited trajectories, and hard-stop hits are counted") {
  // commanded: the OTG towards random targets (|a| <= A, |j| <= J), tracked by the underdamped servo
  const double V = 4.0, A = 30.0, J = 600.0, dt = 1e-3, w = 2 * M_PI * kServoDefaultFrequencyHz;
  const JointLimits lim{-1e300, 1e300, V, A, J};
  ServoParams p;
  p.acceleration_limit = 10 * A;  // unsaturated: the linear bound applies
  p.velocity_limit = 10 * V;
  p.position_min = -100.0;
  p.position_max = 100.0;
  const double bound = servo_error_bound(A, w, kServoDefaultDamping);
  CHECK(bound == doctest::Approx(1.3896 * A / (w * w)).epsilon(1e-3));
  ServoState s;
  AxisState c{0, 0, 0};
  double worst = 0;
  Random rng(41);
  double target = 0.0;
  for (int k = 0; k < 20000; ++k) {
    if (k % 150 == 0) target = rng.uniform(-2.0, 2.0);
    c = integrate(c, otg_jerk(c, OtgTarget{target, 0.0}, lim, dt), dt);
    servo_step(s, p, c.p, c.v, dt, 10);
    worst = std::fmax(worst, std::fabs(c.p - s.q));
  }
  CHECK(worst <= bound * 1.02);  // (1 % for the discretisation of the servo)
  CHECK(worst >= 0.3 * bound);  // and the bound is not vacuous
  // hard stops: a command past the stop drives the joint into it once (one hit), holding there is no new hit
  ServoParams q = p;
  q.position_min = -0.1;
  q.position_max = 0.1;
  ServoState t;
  int hits = 0;
  for (int k = 0; k < 500; ++k) hits += servo_step(t, q, 0.5, 0.0, dt, 10);
  CHECK(hits == 1);
  CHECK(t.q == 0.1);
  CHECK(t.in_contact);
  for (int k = 0; k < 500; ++k) hits += servo_step(t, q, 0.0, 0.0, dt, 10);  // back inside
  CHECK_FALSE(t.in_contact);
  for (int k = 0; k < 500; ++k) hits += servo_step(t, q, -0.5, 0.0, dt, 10);
  CHECK(hits == 2);
  CHECK(t.q == -0.1);
}

TEST_CASE("steady monitor: the position must hold still for the whole window; a glitch restarts it") {
  SteadyMonitor m;
  const double tol[2] = {1e-3, 2e-3};
  const std::int64_t ms = 1'000'000;
  m.configure(2, tol, 50 * ms);
  CHECK_FALSE(m.steady());  // nothing seen
  double q[2] = {0.1, -0.2};
  m.update(q, 0);
  CHECK_FALSE(m.steady());  // one state spans no time
  for (std::int64_t t = 4; t < 50; t += 4) {
    q[0] = 0.1 + (t % 8 ? 0.9e-3 : -0.9e-3);  // within the tolerance of the first state, both sides
    m.update(q, t * ms);
    CHECK_FALSE(m.steady());
  }
  m.update(q, 50 * ms);
  CHECK(m.steady());
  // a 0.3 rad glitch on joint 1 for 30 ms: not steady during it, nor for 50 ms after it
  double g[2] = {0.1, 0.1};
  m.update(g, 54 * ms);
  CHECK_FALSE(m.steady());
  CHECK(m.last_joint() == 1);
  CHECK(m.last_jump() == doctest::Approx(0.3));
  m.update(g, 84 * ms);
  CHECK_FALSE(m.steady());  // (30 ms of the glitch: shorter than the window)
  q[0] = 0.1;
  for (std::int64_t t = 88; t < 138; t += 4) {
    m.update(q, t * ms);
    CHECK_FALSE(m.steady());
  }
  m.update(q, 138 * ms);
  CHECK(m.steady());
  // a NaN is no position: it disagrees with every anchor
  double bad[2] = {std::nan(""), -0.2};
  m.update(bad, 140 * ms);
  CHECK_FALSE(m.steady());
  m.reset();
  CHECK_FALSE(m.steady());
}
