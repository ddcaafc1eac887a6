// CompositeDriver (composite_driver.hpp): one robot from several drivers. Its link health is the parts' (up only
// while every part is up, peer restarts add up), so the loop's link-loss reflex fires when any part's link is lost
// or restarts, as it does for a single driver (docs/safety.md).
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <stdexcept>
#include <vector>

#include "composite_driver.hpp"
#include "control_loop.hpp"
#include "runlog.hpp"
#include "sim_driver.hpp"

using namespace robot_rt::control;

namespace {

constexpr double kDt = 1e-3;

RobotModel one_joint(double range) {
  RobotModel m;
  m.dof = 1;
  m.limits[0] = JointLimits{-range, range, 2.0, 10.0, 200.0};
  m.soft_margin_si[0] = 0.01;
  return m;
}

// The robot the two parts of Parts make: a gantry joint of +-1 and an arm joint of +-2.
RobotModel gantry_and_arm() {
  RobotModel model;
  model.dof = 2;
  model.limits[0] = one_joint(1.0).limits[0];
  model.limits[1] = one_joint(2.0).limits[0];
  model.soft_margin_si[0] = model.soft_margin_si[1] = 0.01;
  return model;
}

struct Parts {
  std::shared_ptr<SimDriver> gantry, arm;
  std::shared_ptr<CompositeDriver> robot;
  Parts() {
    const double q0[1] = {0.0};
    gantry = std::make_shared<SimDriver>(one_joint(1.0), q0, kDt, SimServoConfig{});
    arm = std::make_shared<SimDriver>(one_joint(2.0), q0, kDt, SimServoConfig{});
    robot = std::make_shared<CompositeDriver>(std::vector<std::shared_ptr<RobotDriver>>{gantry, arm});
  }
};

}  // namespace

TEST_CASE("composite link health: up only while every part is up; peer restarts add up") {
  Parts p;
  CHECK(p.robot->link_health().up);
  CHECK(p.robot->link_health().peer_restarts == 0u);
  p.arm->set_link_up(false);
  CHECK_FALSE(p.robot->link_health().up);
  p.arm->set_link_up(true);
  p.gantry->set_link_up(false);
  CHECK_FALSE(p.robot->link_health().up);
  p.gantry->set_link_up(true);
  CHECK(p.robot->link_health().up);
  p.arm->restart_peer();
  CHECK(p.robot->link_health().peer_restarts == 1u);
  p.gantry->restart_peer();
  CHECK(p.robot->link_health().peer_restarts == 2u);
}

TEST_CASE("one running loop per robot: a composite and its parts are never driven by two loops at once") {
  Parts p;
  LoopConfig cfg;
  cfg.rate_hz = 1.0 / kDt;
  ControlLoop whole(p.robot, gantry_and_arm(), cfg);
  ControlLoop arm_alone(p.arm, one_joint(2.0), cfg);
  ControlLoop whole_again(p.robot, gantry_and_arm(), cfg);
  const std::int64_t now = 1'000'000'000'000;
  whole.begin_manual(now);
  CHECK(p.robot->claimed());
  CHECK(p.gantry->claimed());
  CHECK(p.arm->claimed());
  CHECK_THROWS_AS(arm_alone.begin_manual(now), std::runtime_error);
  CHECK_THROWS_AS(whole_again.begin_manual(now), std::runtime_error);
  whole.end_manual();
  CHECK_FALSE(p.robot->claimed());
  CHECK_FALSE(p.arm->claimed());
  arm_alone.begin_manual(now);  // the arm alone now; the composite (which needs it) is refused, and claims nothing
  CHECK_THROWS_AS(whole_again.begin_manual(now), std::runtime_error);
  CHECK_FALSE(p.robot->claimed());
  CHECK_FALSE(p.gantry->claimed());
  arm_alone.end_manual();
  whole_again.begin_manual(now);
  whole_again.end_manual();
}

TEST_CASE("a lost link or a restart of one part latches the loop's link-loss stop the tick it shows") {
  for (int which = 0; which < 2; ++which) {
    for (const bool restart : {false, true}) {
      CAPTURE(which);
      CAPTURE(restart);
      Parts p;
      const RobotModel model = gantry_and_arm();
      LoopConfig cfg;
      cfg.rate_hz = 1.0 / kDt;
      ControlLoop loop(p.robot, model, cfg);
      std::int64_t now = 1'000'000'000'000;
      loop.begin_manual(now);
      const double target[2] = {0.3, -0.3};
      for (int k = 0; k < 100; ++k) {
        if (k % 10 == 0) loop.push_command(target, 2, 0, 0);
        now += static_cast<std::int64_t>(kDt * 1e9);
        loop.manual_tick(now);
      }
      REQUIRE(loop.lifecycle() == Lifecycle::kActive);
      SimDriver& part = which == 0 ? *p.gantry : *p.arm;
      if (restart) {
        part.restart_peer();
      } else {
        part.set_link_up(false);
      }
      now += static_cast<std::int64_t>(kDt * 1e9);
      loop.manual_tick(now);
      CHECK((loop.stop_reasons() & kReasonLinkLoss) != 0u);
      CHECK(loop.lifecycle() != Lifecycle::kActive);
      loop.end_manual();
    }
  }
}

namespace {

// A part whose first state after a new session carries kStateNewSession once (as UdpDriver delivers it), and
// that can be made not fresh for a tick (e.g. an EGM part between two samples).
struct OneShotPart final : RobotDriver {
  JointState st;
  bool fresh = true;
  bool pending_new_session = false;
  int writes = 0;
  OneShotPart() { st.dof = 1; }
  int dof() const noexcept override { return 1; }
  bool read_state(JointState& out) noexcept override {
    if (!fresh) return false;
    out = st;
    if (pending_new_session) {
      out.flags |= kStateNewSession;
      pending_new_session = false;
    }
    return true;
  }
  bool write_command(const JointCommand& c) noexcept override {
    ++writes;
    st.position_si[0] = c.position_si[0];
    return true;
  }
  int read_ball_observations(BallObservation*, int) noexcept override { return 0; }
  const char* name() const noexcept override { return "part"; }
  bool steps_with_loop_ticks() const noexcept override { return true; }  // stepped by the test, tick by tick
};

}  // namespace

TEST_CASE("a part's new session read while another part is stale still reaches the loop, and nothing is sent before") {
  for (const bool other_fresh : {true, false}) {
    CAPTURE(other_fresh);
    auto link = std::make_shared<OneShotPart>();
    auto arm = std::make_shared<OneShotPart>();
    auto robot = std::make_shared<CompositeDriver>(std::vector<std::shared_ptr<RobotDriver>>{link, arm});
    RobotModel model;
    model.dof = 2;
    model.limits[0] = model.limits[1] = JointLimits{-1.0, 1.0, 2.0, 10.0, 200.0};
    LoopConfig cfg;
    cfg.rate_hz = 1.0 / kDt;
    ControlLoop loop(robot, model, cfg);
    std::int64_t now = 1'000'000'000'000;
    loop.begin_manual(now);
    auto tick = [&] {
      now += static_cast<std::int64_t>(kDt * 1e9);
      loop.manual_tick(now);
    };
    for (int k = 0; k < 100; ++k) {
      if (k % 10 == 0) {
        Observation o;
        loop.latest_observation(o);
        const double q[2] = {0.3, 0.3};
        loop.push_command(q, 2, o.tick, o.stamp_ns);
      }
      tick();
    }
    REQUIRE(loop.lifecycle() == Lifecycle::kActive);
    link->pending_new_session = true;  // the link part's session was re-established (same server: no peer restart)
    arm->fresh = other_fresh;
    const int writes = link->writes;
    tick();
    // not whole this tick: the loop has not seen the new session yet, so no command goes to any part
    if (!other_fresh) CHECK(link->writes == writes);
    arm->fresh = true;
    tick();
    CHECK((loop.stop_reasons() & kReasonLinkLoss) != 0u);
    CHECK(loop.counters().event_counts[kEventLinkLossStop] == 1u);
    CHECK(link->writes == writes);  // muted at once: the new session was never commanded
    loop.end_manual();
  }
}

TEST_CASE("a part that stops itself is muted alone: the other part still receives the controlled stop") {
  // One part's e-stop input, fault or tracking error (it stopped, or left its trajectory): it is sent nothing more
  // (once its own stop cleared it would run to the loop's commanded rest), while the healthy part follows the
  // jerk-limited stop to rest: muting it too would hand it to its own hard communication-loss stop (an audit
  // measured 7.2 x A on a healthy EGM arm when a gantry e-stop muted the whole robot).
  for (int cause = 0; cause < 3; ++cause) {
    for (int which = 0; which < 2; ++which) {
      CAPTURE(cause);
      CAPTURE(which);
      Parts p;
      const RobotModel model = gantry_and_arm();
      LoopConfig cfg;
      cfg.rate_hz = 1.0 / kDt;
      ControlLoop loop(p.robot, model, cfg);
      std::int64_t now = 1'000'000'000'000;
      loop.begin_manual(now);
      const double target[2] = {0.6, -0.9};
      for (int k = 0; k < 300; ++k) {  // both joints cruising
        if (k % 10 == 0) loop.push_command(target, 2, 0, 0);
        now += static_cast<std::int64_t>(kDt * 1e9);
        loop.manual_tick(now);
      }
      REQUIRE(loop.lifecycle() == Lifecycle::kActive);
      SimDriver& bad = which == 0 ? *p.gantry : *p.arm;
      SimDriver& good = which == 0 ? *p.arm : *p.gantry;
      if (cause == 0) bad.set_estop_input(true);
      if (cause == 1) bad.set_fault(true);
      if (cause == 2) bad.jam(0, true);
      const std::uint64_t bad_before = bad.commands_received();
      std::uint64_t bad_at_trip = 0;
      bool tripped = false;
      for (int k = 0; k < 1500; ++k) {
        now += static_cast<std::int64_t>(kDt * 1e9);
        loop.manual_tick(now);
        if (!tripped && loop.stop_reasons() != 0u) {
          tripped = true;
          bad_at_trip = bad.commands_received();
          Observation o;
          loop.latest_observation(o);
          CHECK((o.flags & kTickPartMuted) != 0u);  // one part muted, the other still written
          CHECK((o.flags & kTickMuted) == 0u);
        }
      }
      REQUIRE(tripped);
      CHECK(bad_at_trip - bad_before <= 200u);
      CHECK(bad.commands_received() == bad_at_trip);  // nothing after the stop latched
      const std::uint64_t good_before = good.commands_received();
      now += static_cast<std::int64_t>(kDt * 1e9);
      loop.manual_tick(now);
      CHECK(good.commands_received() == good_before + 1);  // the healthy part is still commanded (its rest)
      CHECK(loop.lifecycle() == Lifecycle::kStopped);
      double v = 1.0;
      good.velocities(&v);
      CHECK(std::fabs(v) < 1e-3);  // it followed the stop to rest
      loop.end_manual();
    }
  }
}

namespace {

double joint_position(SimDriver& d) {
  double q = 0.0;
  d.positions(&q);
  return q;
}

}  // namespace

TEST_CASE("per-part muting: a second part's jam, a part's stop while the other is down, a part's peer restart") {
  // The three cases a review of per-part muting found (each failed before its fix).
  Parts p;
  LoopConfig cfg;
  cfg.rate_hz = 1.0 / kDt;
  ControlLoop loop(p.robot, gantry_and_arm(), cfg);
  std::int64_t now = 1'000'000'000'000;
  const auto tick = [&] {
    now += static_cast<std::int64_t>(kDt * 1e9);
    loop.manual_tick(now);
  };
  const auto cruise = [&] {
    const double target[2] = {0.9, -1.8};
    for (int k = 0; k < 300; ++k) {
      if (k % 10 == 0) loop.push_command(target, 2, 0, 0);
      tick();
    }
    REQUIRE(loop.lifecycle() == Lifecycle::kActive);
  };
  SUBCASE("the healthy part jams after the other was muted: it is muted too, and freed it does not move") {
    loop.begin_manual(now);
    cruise();
    p.gantry->jam(0, true);
    for (int k = 0; k < 200 && loop.stop_reasons() == 0u; ++k) tick();
    REQUIRE((loop.stop_reasons() & kReasonTrackingError) != 0u);
    for (int k = 0; k < 5; ++k) tick();
    p.arm->jam(0, true);  // mid-ramp
    const double jammed_at = joint_position(*p.arm);
    for (int k = 0; k < 1500; ++k) tick();
    const std::uint64_t arm_sent = p.arm->commands_received();
    p.arm->jam(0, false);  // freed, nobody recovers
    for (int k = 0; k < 1000; ++k) tick();
    CHECK(p.arm->commands_received() == arm_sent);
    CHECK(std::fabs(joint_position(*p.arm) - jammed_at) < 1e-6);  // the tracking check skipped the muted gantry
    Observation o;
    loop.latest_observation(o);
    CHECK((o.flags & kTickMuted) != 0u);  // both parts muted: nothing written
  }
  SUBCASE("a part's e-stop or fault while the other part's link is down: latched and muted at once") {
    for (const bool fault : {false, true}) {
      CAPTURE(fault);
      loop.begin_manual(now);
      cruise();
      if (fault) {
        p.gantry->set_fault(true);
      } else {
        p.gantry->set_estop_input(true);
      }
      p.arm->set_link_up(false);
      const std::uint64_t gantry_sent = p.gantry->commands_received();
      const double gantry_at = joint_position(*p.gantry);
      for (int k = 0; k < 500; ++k) tick();
      CHECK((loop.stop_reasons() & (fault ? kReasonRobotFault : kReasonEstop)) != 0u);
      CHECK(p.gantry->commands_received() - gantry_sent <= 1u);  // at most the tick's command before the read
      CHECK(std::fabs(joint_position(*p.gantry) - gantry_at) < 0.05);
      // and the recovery waits while the kept stop is undelivered
      loop.request_recover();
      for (int k = 0; k < 20; ++k) tick();
      CHECK(loop.lifecycle() != Lifecycle::kActive);
      p.gantry->set_fault(false);
      p.gantry->set_estop_input(false);
      p.arm->set_link_up(true);
      loop.end_manual();
    }
  }
  SUBCASE("a part's peer restart mutes that part only: the healthy part follows the controlled stop") {
    loop.begin_manual(now);
    cruise();
    p.gantry->restart_peer();
    const std::uint64_t arm_sent = p.arm->commands_received(), gantry_sent = p.gantry->commands_received();
    for (int k = 0; k < 1000; ++k) tick();
    CHECK((loop.stop_reasons() & kReasonLinkLoss) != 0u);
    CHECK(p.gantry->commands_received() == gantry_sent);  // the new session is sent nothing
    CHECK(p.arm->commands_received() - arm_sent == 1000u);
    double v = 1.0;
    p.arm->velocities(&v);
    CHECK(std::fabs(v) < 1e-3);
  }
  loop.end_manual();
}

namespace {
// A robot that moves in wall time (the default of RobotDriver: a UDP or EGM robot), at rest at 0.
struct WallClockRobot final : RobotDriver {
  JointState st;
  WallClockRobot() { st.dof = 1; }
  int dof() const noexcept override { return 1; }
  bool read_state(JointState& out) noexcept override {
    out = st;
    return true;
  }
  bool write_command(const JointCommand&) noexcept override { return true; }
  int read_ball_observations(BallObservation*, int) noexcept override { return 0; }
  const char* name() const noexcept override { return "wall-clock"; }
};
}  // namespace

TEST_CASE("a simulated clock is refused for a robot that moves in wall time, alone or as a part of a composite") {
  LoopConfig cfg;
  cfg.rate_hz = 1.0 / kDt;
  const std::int64_t now = 1'000'000'000'000;
  auto real = std::make_shared<WallClockRobot>();
  ControlLoop alone(real, one_joint(2.0), cfg);
  CHECK_THROWS_AS(alone.begin_manual(now), std::runtime_error);
  CHECK_FALSE(real->claimed());  // refused before anything was claimed or started
  const double q0[1] = {0.0};
  auto sim = std::make_shared<SimDriver>(one_joint(1.0), q0, kDt, SimServoConfig{});
  auto mixed = std::make_shared<CompositeDriver>(std::vector<std::shared_ptr<RobotDriver>>{sim, real});
  CHECK_FALSE(mixed->steps_with_loop_ticks());
  ControlLoop whole(mixed, gantry_and_arm(), cfg);
  CHECK_THROWS_AS(whole.begin_manual(now), std::runtime_error);
  CHECK_FALSE(sim->claimed());
  Parts p;  // simulated parts only: allowed
  CHECK(p.robot->steps_with_loop_ticks());
  ControlLoop simulated(p.robot, gantry_and_arm(), cfg);
  simulated.begin_manual(now);
  simulated.end_manual();
}

TEST_CASE("external events: the policy runner's and link codes only, never the loop's own") {
  Parts p;
  LoopConfig cfg;
  cfg.rate_hz = 1.0 / kDt;
  ControlLoop loop(p.robot, gantry_and_arm(), cfg);
  CHECK(loop.push_external_event(kEventPolicyException, -1, 1.0));
  CHECK(loop.push_external_event(kEventPolicyOverrun, -1, 0.02));
  CHECK(loop.push_external_event(kFirstLinkEvent, -1, 1.0));
  CHECK(loop.push_external_event(kEndLinkEvents - 1, -1, 1.0));
  for (const std::int32_t code : {static_cast<std::int32_t>(kEventRecovered), static_cast<std::int32_t>(kEventEstopReset),
                                  static_cast<std::int32_t>(kEventLifecycle), static_cast<std::int32_t>(kEventLoopStart),
                                  static_cast<std::int32_t>(kEventSensorTimeoutStop), 0, -1, 64, 99, kEndLinkEvents}) {
    CAPTURE(code);
    CHECK_FALSE(loop.push_external_event(code, -1, 1.0));
  }
}
