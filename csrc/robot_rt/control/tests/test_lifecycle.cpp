// The loop's reflexes, stop latch, lifecycle and recovery (control_loop.hpp), stepped deterministically
// (ControlLoop::begin_manual / manual_tick on a simulated clock, the in-process SimDriver as the robot).
// Each reflex latches within its documented detection bound (docs/safety.md), brakes the commanded trajectory to
// rest, never resumes by itself, and a recovery is refused while its cause persists and restarts without a step.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>

#include "control_loop.hpp"
#include "sim_driver.hpp"

using namespace robot_rt::control;

namespace {

constexpr double kDt = 1e-3;

struct Harness {
  RobotModel model;
  std::shared_ptr<SimDriver> driver;
  std::unique_ptr<ControlLoop> loop;
  std::int64_t now = 1'000'000'000'000;  // simulated CLOCK_MONOTONIC
  std::int64_t obs_tick = -1;  // the observation a command answers; -1: the latest (as a policy does)

  explicit Harness(LoopConfig cfg = LoopConfig{}) {
    model.dof = 2;
    model.limits[0] = JointLimits{-1.0, 1.0, 2.0, 10.0, 200.0};
    model.limits[1] = JointLimits{-2.0, 2.0, 4.0, 30.0, 600.0};
    model.soft_margin_si[0] = 0.01;
    model.soft_margin_si[1] = 0.03;
    const double q0[2] = {0.0, 0.0};
    driver = std::make_shared<SimDriver>(model, q0, kDt, SimServoConfig{});
    cfg.rate_hz = 1.0 / kDt;
    loop = std::make_unique<ControlLoop>(driver, model, cfg);
    loop->begin_manual(now);
  }
  ~Harness() { loop->end_manual(); }

  void tick(int n = 1) {
    for (int k = 0; k < n; ++k) {
      now += static_cast<std::int64_t>(kDt * 1e9);
      loop->manual_tick(now);
    }
  }
  void command(double q0, double q1) {
    const double q[2] = {q0, q1};
    loop->push_command(q, 2, obs_tick < 0 ? obs().tick : static_cast<std::uint64_t>(obs_tick), 0);
  }
  // Ticks with a command every 10 ticks (a 100 Hz policy) for n ticks.
  void drive(double q0, double q1, int n) {
    for (int k = 0; k < n; ++k) {
      if (k % 10 == 0) command(q0, q1);
      tick();
    }
  }
  Observation obs() const {
    Observation o;
    loop->latest_observation(o);
    return o;
  }
  std::uint64_t events(int code) const { return loop->counters().event_counts[code]; }
  Lifecycle state() const { return loop->lifecycle(); }
  // Ticks until `pred` holds (at most max_ticks); returns the ticks taken or -1.
  template <class Pred>
  int until(Pred pred, int max_ticks) {
    for (int k = 0; k <= max_ticks; ++k) {
      if (pred()) return k;
      tick();
    }
    return -1;
  }
  int stop_bound_ticks() const { return static_cast<int>(std::ceil(loop->stop_time_bound_s() / kDt)); }
  bool at_rest() const {
    const Observation o = obs();
    return o.command_velocity_si[0] == 0.0 && o.command_velocity_si[1] == 0.0;
  }
  // Sets the robot moving fast towards +0.6 on joint 0 (active).
  void get_moving() {
    drive(0.6, -0.5, 150);
    REQUIRE(state() == Lifecycle::kActive);
    REQUIRE(std::fabs(obs().command_velocity_si[0]) > 0.5);
  }
  // The loop is stopped, and stays there while the policy keeps commanding (its commands are discarded).
  void check_stays_stopped(std::uint32_t reason) {
    const int to_rest = until([&] { return state() == Lifecycle::kStopped; }, stop_bound_ticks());
    REQUIRE(to_rest >= 0);
    CHECK((loop->stop_reasons() & reason) != 0u);
    CHECK(at_rest());
    const Observation rest = obs();
    const auto discarded = loop->counters().commands_discarded;
    drive(-0.5, 0.5, 100);
    const Observation later = obs();
    CHECK(state() == Lifecycle::kStopped);
    CHECK(later.command_position_si[0] == rest.command_position_si[0]);
    CHECK(later.command_position_si[1] == rest.command_position_si[1]);
    CHECK(loop->counters().commands_discarded >= discarded + 10);
  }
  // A recovery that must succeed: the commanded trajectory restarts exactly at the measured position.
  void recover_ok() {
    loop->request_recover();
    const int ticks = until([&] { return loop->recover_state() != ControlLoop::kRecoverPending; }, 2000);
    REQUIRE(ticks >= 0);
    REQUIRE(loop->recover_state() == ControlLoop::kRecoverDone);
    CHECK(state() == Lifecycle::kActive);
    CHECK(loop->stop_reasons() == 0u);
    const Observation o = obs();
    for (int i = 0; i < 2; ++i) {
      CHECK(std::fabs(o.command_position_si[i] - o.measured_position_si[i]) <= 1e-12);
      CHECK(o.command_velocity_si[i] == 0.0);
    }
  }
};

// Ticks from the tick a fault is in place (its first tick: 0) until the reason is latched.
template <class Inject>
int detection_ticks(Harness& h, std::uint32_t reason, Inject inject, int max_ticks) {
  inject();
  for (int k = 0; k <= max_ticks; ++k) {
    h.tick();
    if (h.loop->stop_reasons() & reason) return k;
  }
  return -1;
}

// One joint at 0 on the in-process SimDriver, and a 1 kHz loop not started yet: what is done to a loop before
// its run, then its first ticks on the simulated clock (begin_manual / manual_tick).
struct OneJoint {
  RobotModel model;
  std::shared_ptr<SimDriver> driver;
  std::unique_ptr<ControlLoop> loop;
  std::int64_t now = 1'000'000'000'000;

  OneJoint() {
    model.dof = 1;
    model.limits[0] = JointLimits{-1.0, 1.0, 2.0, 10.0, 200.0};
    const double q0[1] = {0.0};
    driver = std::make_shared<SimDriver>(model, q0, kDt, SimServoConfig{});
    LoopConfig cfg;
    cfg.rate_hz = 1.0 / kDt;
    loop = std::make_unique<ControlLoop>(driver, model, cfg);
  }
  // Starts the run (manual clock) and ticks it n times.
  void run(int n) {
    loop->begin_manual(now);
    for (int k = 0; k < n; ++k) {
      now += static_cast<std::int64_t>(kDt * 1e9);
      loop->manual_tick(now);
    }
  }
  ~OneJoint() { loop->end_manual(); }
};

}  // namespace

TEST_CASE("inactive until the first command; a missing policy is logged once and does not latch") {
  Harness h;
  h.tick(200);
  CHECK(h.state() == Lifecycle::kInactive);
  CHECK(h.events(kEventMissingPolicy) == 1);
  CHECK(h.loop->stop_reasons() == 0u);
  CHECK(h.obs().command_position_si[0] == 0.0);
  h.drive(0.3, 0.0, 50);
  CHECK(h.state() == Lifecycle::kActive);
  CHECK(h.obs().command_position_si[0] > 0.0);
}

TEST_CASE("watchdog: latches command_timeout_s / dt + 1 ticks after the last command; commands come back: stays") {
  Harness h;
  h.get_moving();
  h.command(0.6, -0.5);
  const int ticks = detection_ticks(h, kReasonWatchdog, [] {}, 200);
  CHECK(ticks == 51);  // the command was taken at tick 0: at tick 51 its age (51 ms) exceeds 50 ms
  CHECK(h.events(kEventWatchdogStop) == 1);
  CHECK(h.state() == Lifecycle::kStopping);
  h.check_stays_stopped(kReasonWatchdog);
  h.recover_ok();
  h.drive(0.2, 0.0, 800);
  CHECK(h.obs().command_position_si[0] == doctest::Approx(0.2).epsilon(1e-9));
}

TEST_CASE("every reflex latches within its detection bound and the loop holds until a recovery") {
  SUBCASE("e-stop request: the next tick") {
    Harness h;
    h.get_moving();
    CHECK(detection_ticks(h, kReasonEstop, [&] { h.loop->request_estop(); }, 5) == 0);
    h.check_stays_stopped(kReasonEstop);
    h.recover_ok();
    CHECK(h.events(kEventEstopReset) == 1);
  }
  SUBCASE("e-stop input, robot fault, implausible measurement, a jump: the tick the state shows it") {
    for (int kind = 0; kind < 6; ++kind) {
      Harness h;
      h.get_moving();
      std::uint32_t reason = 0;
      int ticks = -1;
      switch (kind) {
        case 0:
          reason = kReasonEstop;
          ticks = detection_ticks(h, reason, [&] { h.driver->set_estop_input(true); }, 5);
          break;
        case 1:
          reason = kReasonRobotFault;
          ticks = detection_ticks(h, reason, [&] { h.driver->set_fault(true); }, 5);
          break;
        case 2:
          reason = kReasonMeasurementInvalid;
          ticks = detection_ticks(
              h, reason, [&] { h.driver->inject_measurement(1, std::numeric_limits<double>::quiet_NaN(), 0.0, 1); }, 5);
          break;
        case 3:
          reason = kReasonMeasurementInvalid;
          ticks = detection_ticks(h, reason, [&] { h.driver->inject_measurement(0, 1e300, 0.0, 1); }, 5);
          break;
        case 4:  // a velocity far above the limit
          reason = kReasonMeasurementInvalid;
          ticks = detection_ticks(h, reason, [&] { h.driver->inject_measurement(1, 0.0, 50.0, 1); }, 5);
          break;
        default:  // a position jump inside the range: 5 cm in one tick on joint 0 (the tracking tube's)
          reason = kReasonTrackingError;
          ticks = detection_ticks(
              h, reason, [&] { h.driver->inject_measurement(0, h.obs().measured_position_si[0] + 0.05, 0.0, 1); }, 5);
          break;
      }
      INFO("kind ", kind);
      CHECK(ticks == 0);
      h.check_stays_stopped(reason);
      if (kind <= 1) {  // the cause persists: the recovery is refused and says why
        h.loop->request_recover();
        h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 3000);
        CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
        CHECK((h.loop->recover_blockers() & reason) != 0u);
        CHECK(h.state() == Lifecycle::kStopped);
        if (kind == 0) h.driver->set_estop_input(false);
        if (kind == 1) h.driver->set_fault(false);
      }
      h.recover_ok();  // (one bad measurement: plausible states follow, nothing blocks)
    }
  }
  SUBCASE("tracking error: a jammed joint, on the tick its deviation from the commanded tube passes the threshold") {
    Harness h;
    h.get_moving();
    const double threshold = h.loop->tracking().threshold(0);
    CHECK(threshold == doctest::Approx(3.0 * servo_error_bound(10.0, 2 * M_PI * 10.0, 0.5)));
    h.driver->jam(0, true);
    const int ticks = h.until([&] { return (h.loop->stop_reasons() & kReasonTrackingError) != 0u; }, 200);
    REQUIRE(ticks > 0);
    h.check_stays_stopped(kReasonTrackingError);
    h.driver->jam(0, false);
    h.recover_ok();
  }
  SUBCASE("sensor timeout: sensor_timeout_s / dt + 1 ticks after the last fresh state") {
    Harness h;
    h.get_moving();
    const int ticks = detection_ticks(h, kReasonSensorTimeout, [&] { h.driver->inject_dropout(500); }, 100);
    CHECK(ticks == 20);  // the last fresh state came one tick before the first dropout tick
    h.check_stays_stopped(kReasonSensorTimeout);
    h.driver->inject_dropout(2000);
    h.loop->request_recover();  // the dropout still lasts: refused (no fresh states)
    h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 1500);
    CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
    INFO("blockers ", h.loop->recover_blockers());
    CHECK((h.loop->recover_blockers() & kReasonSensorTimeout) != 0u);
    h.driver->inject_dropout(0);  // the dropout ends
    h.tick(10);
    CHECK(h.events(kEventSensorRecovered) == 1);
    CHECK(h.state() == Lifecycle::kStopped);  // fresh states again, but still stopped
    h.recover_ok();
  }
  SUBCASE("lost link: the tick the driver reports it; the stop is commanded, then nothing is sent") {
    Harness h;
    h.get_moving();
    CHECK(detection_ticks(h, kReasonLinkLoss, [&] { h.driver->set_link_up(false); }, 5) == 0);
    h.check_stays_stopped(kReasonLinkLoss);
    CHECK(h.events(kEventCommandsMuted) == 1);
    const auto sent = h.driver->commands_received();
    h.tick(100);
    CHECK(h.driver->commands_received() == sent);  // muted: the robot holds by itself
    h.loop->request_recover();
    h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 1500);
    CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
    CHECK((h.loop->recover_blockers() & kReasonLinkLoss) != 0u);
    h.driver->set_link_up(true);
    h.recover_ok();
    h.tick(5);
    CHECK(h.driver->commands_received() > sent);
  }
  SUBCASE("restarted peer: the tick it shows, and nothing more is sent to the new session") {
    Harness h;
    h.get_moving();
    const auto sent = h.driver->commands_received();
    CHECK(detection_ticks(h, kReasonLinkLoss, [&] { h.driver->restart_peer(); }, 5) == 0);
    CHECK(h.events(kEventCommandsMuted) == 1);
    CHECK(h.driver->commands_received() == sent);  // not even the stop: the new session was never commanded
    h.check_stays_stopped(kReasonLinkLoss);
    // the robot braked by itself, somewhere else than the commanded stop: the recovery re-synchronises to it
    h.recover_ok();
  }
}

TEST_CASE("a stopped loop does not resume when the fault clears by itself; only a recovery clears the latch") {
  Harness h;
  h.get_moving();
  h.driver->set_fault(true);
  h.tick(3);
  h.driver->set_fault(false);
  h.check_stays_stopped(kReasonRobotFault);
  h.tick(500);
  CHECK(h.state() == Lifecycle::kStopped);
  CHECK(h.loop->stop_reasons() == kReasonRobotFault);
  h.recover_ok();
}

TEST_CASE("recovery waits for a robot still moving, and discards targets that answer older observations") {
  Harness h;
  h.get_moving();
  h.loop->request_estop();
  h.until([&] { return h.state() == Lifecycle::kStopped; }, 2000);
  // the robot reports motion (0.5 m/s: plausible, above the rest tolerance) for 300 more states
  h.driver->inject_measurement(0, h.obs().measured_position_si[0], 0.5, 300);
  h.loop->request_recover();
  h.tick();
  CHECK(h.state() == Lifecycle::kRecovering);
  const int waited = h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 2000);
  CHECK(waited >= 295);
  CHECK(h.loop->recover_state() == ControlLoop::kRecoverDone);
  const Observation at = h.obs();
  // a target computed from an observation before the recovery is stale: discarded
  h.obs_tick = static_cast<std::int64_t>(at.tick) - 5;
  const auto discarded = h.loop->counters().commands_discarded;
  h.command(-0.5, 0.5);
  h.tick();
  CHECK(h.loop->counters().commands_discarded == discarded + 1);
  // so is one naming no observation (tick 0: the run's first, or none): a bare push_command's old default
  h.obs_tick = 0;
  h.command(-0.5, 0.5);
  h.tick();
  CHECK(h.loop->counters().commands_discarded == discarded + 2);
  h.obs_tick = static_cast<std::int64_t>(at.tick);
  h.drive(-0.3, 0.2, 800);
  CHECK(h.obs().command_position_si[0] == doctest::Approx(-0.3).epsilon(1e-9));
}

TEST_CASE("a recovery that waits too long is refused with the blockers, and the loop stays stopped") {
  LoopConfig cfg;
  cfg.recover_timeout_s = 0.2;
  Harness h(cfg);
  h.get_moving();
  h.driver->set_estop_input(true);
  h.until([&] { return h.state() == Lifecycle::kStopped; }, 2000);
  h.loop->request_recover();
  const int ticks = h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 1000);
  CHECK(ticks == doctest::Approx(201).epsilon(0.02));
  CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
  CHECK(h.loop->recover_blockers() == kReasonEstop);
  CHECK(h.events(kEventRecoverRefused) == 1);
  CHECK(h.state() == Lifecycle::kStopped);
}

TEST_CASE("shutdown: from full speed the commanded trajectory ramps to rest within the stop bound, then holds") {
  Harness h;
  h.drive(0.95, -1.9, 400);  // towards the far end at full speed
  const Observation before = h.obs();
  REQUIRE(std::fabs(before.command_velocity_si[0]) > 1.0);
  h.loop->request_shutdown();
  const int ticks = h.until([&] { return h.loop->shutdown_done(); }, h.stop_bound_ticks());
  REQUIRE(ticks >= 0);
  CHECK(h.at_rest());
  CHECK(h.events(kEventShutdownStop) == 1);
  CHECK(h.loop->stop_reasons() == kReasonShutdown);
  // the ramp stayed inside the soft limits
  CHECK(h.obs().command_position_si[0] <= 1.0 - 0.01);
  // a recovery is refused once the run is ending
  h.loop->request_recover();
  h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 1500);
  CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
  CHECK((h.loop->recover_blockers() & kBlockShutdown) != 0u);
}

TEST_CASE("a recovery at a measured position within rounding beyond a hard limit restarts there, without a step") {
  Harness h;
  h.get_moving();
  h.loop->request_estop();
  h.until([&] { return h.state() == Lifecycle::kStopped; }, 2000);
  const double rest = h.obs().command_position_si[0];
  REQUIRE(rest < 0.9);
  // plausible (check_measurement allows kLimitSlack x span of rounding) but outside [min, max]
  const double measured = 1.0 + 0.5 * kLimitSlack * 2.0;
  h.driver->inject_measurement(0, measured, 0.0, 400);
  h.tick(5);
  // a tracking error (the robot is far from the commanded rest), but no measurement stop: the state is plausible
  REQUIRE((h.loop->stop_reasons() & kReasonMeasurementInvalid) == 0u);
  h.loop->request_recover();
  h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 200);
  REQUIRE(h.loop->recover_state() == ControlLoop::kRecoverDone);
  h.tick();
  // the commanded trajectory restarts at the robot (clamped into the hard limits), not at the old rest
  CHECK(h.obs().command_position_si[0] == doctest::Approx(1.0).epsilon(1e-9));
  CHECK(std::fabs(h.obs().command_position_si[0] - measured) < 1e-8);
}

TEST_CASE("an e-stop followed by a recovery before the next tick still latches, stops and logs the e-stop") {
  Harness h;
  h.get_moving();
  h.loop->request_estop();
  h.loop->request_recover();
  h.tick();
  CHECK((h.loop->stop_reasons() & kReasonEstop) != 0u);
  CHECK(h.events(kEventEstop) == 1u);
  CHECK(h.state() == Lifecycle::kRecovering);
  // the recovery completes only once the stop has brought the commanded trajectory and the robot to rest
  const int ticks = h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 3000);
  CHECK(ticks > 10);
  CHECK(h.loop->recover_state() == ControlLoop::kRecoverDone);
  CHECK((h.loop->stop_reasons_seen() & kReasonEstop) != 0u);
  CHECK_FALSE(h.loop->estop_latched());
}

TEST_CASE("a stop that latches while a recovery waits refuses that recovery instead of being cleared with it") {
  for (const bool restart : {false, true}) {
    CAPTURE(restart);
    Harness h;
    h.drive(0.3, 0.0, 200);
    h.tick(300);  // no more commands: the watchdog stops the loop
    h.until([&] { return h.state() == Lifecycle::kStopped; }, 2000);
    REQUIRE(h.loop->stop_reasons() == kReasonWatchdog);
    // the robot still reports motion: the recovery waits
    h.driver->inject_measurement(0, h.obs().measured_position_si[0], 0.5, 100);
    h.loop->request_recover();
    h.tick(5);
    REQUIRE(h.state() == Lifecycle::kRecovering);
    if (restart) {
      h.driver->restart_peer();  // the robot side restarted (a new session)
      h.tick();
    } else {
      h.driver->set_fault(true);  // a fault pulse of 3 ticks
      h.tick(3);
      h.driver->set_fault(false);
    }
    h.tick();
    const std::uint32_t added = restart ? kReasonLinkLoss : kReasonRobotFault;
    CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
    CHECK((h.loop->recover_blockers() & added) != 0u);
    CHECK(h.loop->stop_reasons() == (kReasonWatchdog | added));
    h.tick(300);  // the robot settles: nothing recovers by itself
    CHECK(h.state() == Lifecycle::kStopped);
    CHECK(h.loop->stop_reasons() == (kReasonWatchdog | added));
    // a new request, made knowing the new reason, recovers
    h.loop->request_recover();
    h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 500);
    CHECK(h.loop->recover_state() == ControlLoop::kRecoverDone);
    CHECK(h.state() == Lifecycle::kActive);
  }
}

TEST_CASE("the observation carries the tick of the last recovery") {
  Harness h;
  h.get_moving();
  CHECK(h.obs().recovered_tick == 0u);
  h.loop->request_estop();
  h.until([&] { return h.state() == Lifecycle::kStopped; }, 2000);
  h.loop->request_recover();
  h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 500);
  REQUIRE(h.loop->recover_state() == ControlLoop::kRecoverDone);
  const std::uint64_t at = h.obs().recovered_tick;
  CHECK(at > 0u);
  CHECK(at <= h.obs().tick);
  h.tick(3);
  CHECK(h.obs().recovered_tick == at);
}

TEST_CASE("a configuration that would switch a reflex off is refused") {
  const OneJoint j;
  auto make = [&](auto edit) {
    LoopConfig cfg;
    edit(cfg);
    ControlLoop loop(j.driver, j.model, cfg);
  };
  CHECK_NOTHROW(make([](LoopConfig&) {}));
  CHECK_NOTHROW(make([](LoopConfig& c) { c.command_timeout_s = c.sensor_timeout_s = kMaxWatchdogTimeoutS; }));
  CHECK_THROWS_AS(make([](LoopConfig& c) { c.command_timeout_s = 1e9; }), std::invalid_argument);
  CHECK_THROWS_AS(make([](LoopConfig& c) { c.sensor_timeout_s = 2.0; }), std::invalid_argument);
  CHECK_THROWS_AS(make([](LoopConfig& c) { c.sensor_timeout_s = std::numeric_limits<double>::infinity(); }),
                  std::invalid_argument);
  CHECK_THROWS_AS(make([](LoopConfig& c) { c.rest_velocity_fraction = 0.5; }), std::invalid_argument);
  CHECK_THROWS_AS(make([](LoopConfig& c) { c.measurement_velocity_factor = 1e6; }), std::invalid_argument);
  CHECK_THROWS_AS(make([](LoopConfig& c) { c.measurement_velocity_factor = std::nan(""); }), std::invalid_argument);
}

TEST_CASE("a recovery for the reasons its caller saw is refused by a reason it did not see; a cancelled one never completes") {
  Harness h;
  h.drive(0.3, 0.0, 200);
  h.tick(300);  // the watchdog stops the loop
  h.until([&] { return h.state() == Lifecycle::kStopped; }, 2000);
  REQUIRE(h.loop->stop_reasons() == kReasonWatchdog);
  h.loop->request_estop();  // pressed by someone else while the operator reads "watchdog"
  h.tick();
  h.loop->request_recover(kReasonWatchdog);
  h.tick();
  CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
  CHECK((h.loop->recover_blockers() & kReasonEstop) != 0u);
  CHECK(h.loop->estop_latched());  // the e-stop request was not released either
  h.tick(50);
  CHECK(h.state() == Lifecycle::kStopped);
  // the caller gives up on a recovery that waits (the robot still moving): refused, and nothing later
  h.driver->inject_measurement(0, h.obs().measured_position_si[0], 0.5, 50);
  h.loop->request_recover(kReasonWatchdog | kReasonEstop);
  h.tick(3);
  REQUIRE(h.state() == Lifecycle::kRecovering);
  h.loop->cancel_recover();
  h.tick();
  CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
  CHECK((h.loop->recover_blockers() & kBlockCancelled) != 0u);
  h.tick(300);  // the robot settles: still stopped
  CHECK(h.state() == Lifecycle::kStopped);
  CHECK(h.loop->stop_reasons() == (kReasonWatchdog | kReasonEstop));
  // asked for everything it shows, it recovers
  h.loop->request_recover(kReasonWatchdog | kReasonEstop);
  h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 500);
  CHECK(h.loop->recover_state() == ControlLoop::kRecoverDone);
}

TEST_CASE("a target queued while the loop was not running is not the next run's first goal") {
  OneJoint j;
  const double far[1] = {0.5};
  j.loop->push_command(far, 1, 0, 0);  // before any run
  j.run(200);
  Observation o;
  j.loop->latest_observation(o);
  CHECK(o.command_position_si[0] == 0.0);
  CHECK(j.loop->counters().commands_accepted == 0u);
}

TEST_CASE("an e-stop pressed again after a recovery was asked for refuses it; one pressed before start latches") {
  {
    Harness h;
    h.get_moving();
    h.loop->request_estop();
    h.until([&] { return h.state() == Lifecycle::kStopped; }, 2000);
    // the operator is shown 'estop' (1 press) and asks to recover; the e-stop is pressed again before the loop
    // takes the request: an e-stop already latched adds no reason, so only the press count shows it
    const std::uint64_t presses = h.loop->estop_presses();
    h.loop->request_recover(h.loop->stop_reasons(), presses);
    h.loop->request_estop();
    h.tick();
    CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
    CHECK((h.loop->recover_blockers() & kReasonEstop) != 0u);
    h.tick(200);
    CHECK(h.state() == Lifecycle::kStopped);
    CHECK(h.loop->estop_latched());
    // the same with the default (the presses at the call), and a press after the call
    h.loop->request_recover();
    h.loop->request_estop();
    h.tick();
    CHECK(h.loop->recover_state() == ControlLoop::kRecoverRefused);
    // asked for everything pressed so far, it recovers
    h.loop->request_recover();
    h.until([&] { return h.loop->recover_state() != ControlLoop::kRecoverPending; }, 500);
    CHECK(h.loop->recover_state() == ControlLoop::kRecoverDone);
    CHECK_FALSE(h.loop->estop_latched());
  }
  {
    OneJoint j;
    j.loop->request_estop();  // before any run
    j.run(1);
    CHECK(j.loop->estop_latched());
  }
}
