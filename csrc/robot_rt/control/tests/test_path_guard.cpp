// The loop's path guard (LoopConfig::path_guard_margin_m, ControlLoop::path_guard_admits), stepped deterministically
// (begin_manual / manual_tick, the in-process SimDriver): a goal whose trajectory from the commanded state of the
// tick it arrives in would carry the paddle out of the workspace box is not taken, so the workspace stop does not
// trip; goals whose paths stay in are taken as before.
#include <doctest/doctest.h>

#include <algorithm>
#include <limits>
#include <memory>

#include "control_loop.hpp"
#include "interpolator.hpp"
#include "sim_driver.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;

namespace {

constexpr double kDt = 1e-3;

struct Lift {
  RobotModel model = testing::lift_model(0.5);  // the box's floor at z = 0.5 m
  std::shared_ptr<SimDriver> driver;
  std::unique_ptr<ControlLoop> loop;
  std::int64_t now = 1'000'000'000'000;
  double lowest = 10.0;  // lowest commanded paddle height seen

  Lift(double guard_margin_m, double start_m, bool velocity_tracking = false) {
    model.soft_margin_si[0] = 0.01;
    const double q0[1] = {start_m};
    driver = std::make_shared<SimDriver>(model, q0, kDt, SimServoConfig{});
    LoopConfig cfg;
    cfg.rate_hz = 1.0 / kDt;
    cfg.path_guard_margin_m = guard_margin_m;
    cfg.velocity_tracking = velocity_tracking;
    loop = std::make_unique<ControlLoop>(driver, model, cfg);
    loop->begin_manual(now);
  }
  ~Lift() { loop->end_manual(); }

  double height() const {
    Observation o;
    loop->latest_observation(o);
    return o.command_position_si[0];
  }
  double speed() const {
    Observation o;
    loop->latest_observation(o);
    return o.command_velocity_si[0];
  }
  void tick() {
    now += static_cast<std::int64_t>(kDt * 1e9);
    loop->manual_tick(now);
    lowest = std::min(lowest, height());
  }
  // A 100 Hz policy: goal(k) every 10 ticks, for n ticks.
  template <class Goal>
  void drive(Goal goal, int n) {
    for (int k = 0; k < n; ++k) {
      if (k % 10 == 0) {
        const double q[1] = {goal(k / 10)};
        loop->push_command(q, 1, 0, 0);
      }
      now += static_cast<std::int64_t>(kDt * 1e9);
      loop->manual_tick(now);
      lowest = std::min(lowest, height());
    }
  }
  std::uint64_t events(int code) const { return loop->counters().event_counts[code]; }
};

}  // namespace

// A policy that moves the paddle down at 1.5 m/s (1.5 cm per 10 ms goal) to a goal 0.1 m above the floor, as an env
// policy's velocity commands integrated into position goals do.
double descent(int i) { return std::max(0.6, 1.7 - 0.015 * (i + 1)); }

TEST_CASE("without the path guard, the full-speed descent overshoots its last goal: a workspace stop") {
  // every goal lies inside the box, but arriving at 1.5 m/s the jerk-limited braking carries the paddle ~0.15 m past
  Lift lift(-1.0, 1.7);
  lift.drive(descent, 1500);
  CHECK(lift.events(kEventWorkspaceStop) == 1);
  CHECK((lift.loop->stop_reasons() & kReasonWorkspace) != 0u);
  CHECK(lift.lowest < 0.5);
  CHECK(lift.events(kEventWorkspacePathHold) == 0);
}

TEST_CASE("with the path guard, the goals whose paths leave the box are not taken: no stop, the robot arrives") {
  Lift lift(0.002, 1.7);
  lift.drive(descent, 1500);
  CHECK(lift.events(kEventWorkspaceStop) == 0);
  CHECK(lift.loop->stop_reasons() == 0u);
  CHECK(lift.lowest >= 0.5);
  const auto c = lift.loop->counters();
  CHECK(c.commands_path_held > 0);
  CHECK(c.commands_path_held == lift.events(kEventWorkspacePathHold));
  CHECK(c.commands_accepted + c.commands_path_held == 150);
  CHECK(c.commands_accepted > c.commands_path_held);  // the rest of the descent was taken
  CHECK(lift.height() == doctest::Approx(0.6).epsilon(1e-9));  // and it arrived
}

TEST_CASE("the path guard takes a goal whose path stays in, from rest") {
  Lift lift(0.002, 1.0);
  lift.drive([](int) { return 0.55; }, 1000);
  CHECK(lift.loop->counters().commands_path_held == 0);
  CHECK(lift.loop->counters().commands_accepted == 100);
  CHECK(lift.height() == doctest::Approx(0.55).epsilon(1e-9));
  CHECK(lift.events(kEventWorkspaceStop) == 0);
}

// Velocity tracking (LoopConfig::velocity_tracking): the commanded trajectory follows the goals' velocity
// (their step over the ramp), jerk-limited, and comes to rest when they stop moving or stop coming.
TEST_CASE("velocity tracking follows the goals' velocity and comes to rest, not to the goal, when they stop") {
  Lift lift(0.002, 1.2, true);
  // goals rising at 0.5 m/s (5 mm per 10 ms) for 0.3 s, then the same goal repeated (velocity 0)
  lift.drive([](int i) { return 1.2 + 0.005 * std::min(i, 30); }, 300);
  CHECK(lift.speed() == doctest::Approx(0.5).epsilon(1e-9));  // reached and held exactly (A = 10, J = 200)
  lift.drive([](int) { return 1.35; }, 300);
  CHECK(lift.speed() == 0.0);
  // nothing steers it onto the goal: it rests where the velocity took it, which here is the last goal because the
  // jerk-limited start lags the goals by exactly what the symmetric brake carries it beyond the last one
  CHECK(lift.height() == doctest::Approx(1.35).epsilon(1e-9));
  CHECK(lift.loop->stop_reasons() == 0u);
  CHECK(lift.loop->counters().commands_path_held == 0);
}

TEST_CASE("velocity tracking: when goals stop coming the joint brakes after the ramp and its hold, then the watchdog") {
  Lift lift(0.002, 1.2, true);
  lift.drive([](int i) { return 1.2 + 0.005 * i; }, 200);  // 0.5 m/s
  REQUIRE(lift.speed() == doctest::Approx(0.5).epsilon(1e-9));
  // no more goals (the last came 10 ticks ago): its velocity holds for its ramp (10 ms) and the hold (one policy
  // period, 10 ms), then the joint brakes
  for (int k = 0; k < 8; ++k) lift.tick();
  CHECK(lift.speed() == doctest::Approx(0.5).epsilon(1e-9));
  for (int k = 0; k < 5; ++k) lift.tick();
  CHECK(lift.speed() < 0.5);
  for (int k = 0; k < 200; ++k) lift.tick();
  CHECK(lift.speed() == 0.0);
  CHECK((lift.loop->stop_reasons() & kReasonWatchdog) != 0u);  // the stale command stops it as in position mode
}

TEST_CASE("velocity tracking with the path guard: a descent at 1.5 m/s is braked before the box's floor") {
  // goals at 1.5 m/s down through the floor: those below it are rejected, and the last accepted velocity holds for
  // its ramp and hold, then the brake carries the paddle ~0.15 m further; the guard forecasts exactly that
  const auto through_floor = [](int i) { return 1.7 - 0.015 * (i + 1); };
  Lift lift(0.002, 1.7, true);
  lift.drive(through_floor, 1500);
  CHECK(lift.events(kEventWorkspaceStop) == 0);
  // (the goals below the floor are rejected; they still feed the command watchdog, as a path hold does: the
  // session is alive, the loop keeps its goal, and nothing stops)
  CHECK(lift.loop->stop_reasons() == 0u);
  CHECK(lift.events(kEventWorkspaceTarget) > 0);
  CHECK(lift.lowest >= 0.5);
  CHECK(lift.loop->counters().commands_path_held > 0);
  Lift unguarded(-1.0, 1.7, true);  // and without it the same descent leaves the box
  unguarded.drive(through_floor, 1500);
  CHECK(unguarded.events(kEventWorkspaceStop) == 1);
  CHECK(unguarded.lowest < 0.5);
}

// A goal the loop does not set is still the session's: the next goal's step is measured from it (a path-held goal)
// or asks for no velocity (a rejected goal), never from the goal before it, which would ask for twice the speed.
TEST_CASE("velocity tracking: a rejected goal in a 0.5 m/s stream never makes the next goal ask for more") {
  const auto rising = [](int i) { return 1.2 + 0.005 * i; };
  for (const double bad : {std::numeric_limits<double>::quiet_NaN(), 3.0 /* above the box: a workspace target */}) {
    Lift lift(0.002, 1.2, true);
    double fastest = 0.0;
    for (int k = 0; k < 600; ++k) {
      if (k % 10 == 0) {
        const int i = k / 10;
        const double q[1] = {i == 30 ? bad : rising(i)};
        lift.loop->push_command(q, 1, 0, 0);
      }
      lift.tick();
      fastest = std::max(fastest, lift.speed());
    }
    CHECK(lift.loop->counters().commands_rejected == 1);
    CHECK(fastest <= 0.5 + 1e-9);  // before: goal 31's 10 mm step from goal 29 asked for 1.0 m/s
    CHECK(lift.speed() == doctest::Approx(0.5).epsilon(1e-9));  // and tracking resumed
    CHECK(lift.loop->stop_reasons() == 0u);
  }
}

TEST_CASE("Interpolator: the goal velocity is the step from the session's previous goal, set or not") {
  Interpolator in;
  in.configure(1, 0.01, 0.002, 0.1);
  const double rest[1] = {0.0}, a[1] = {0.01}, b[1] = {0.02}, c[1] = {0.03};
  double v[1];
  in.hold(rest, 0);
  in.goal_velocity_for(a, v);
  CHECK(v[0] == 0.0);  // the first goal after a hold has no predecessor
  in.set_goal(a, 10'000'000);
  in.goal_velocity_for(b, v);
  CHECK(v[0] == doctest::Approx(1.0));
  in.note_unset_goal(b);  // held by the path guard: still the predecessor
  in.goal_velocity_for(c, v);
  CHECK(v[0] == doctest::Approx(1.0));
  in.forget_previous_goal();  // a rejected goal in between: no velocity can be read from the next step
  in.goal_velocity_for(c, v);
  CHECK(v[0] == 0.0);
  in.set_goal(b, 20'000'000);  // a goal set after that asks for none, and becomes the predecessor
  in.sample_velocity(20'000'000, 0.01, v);
  CHECK(v[0] == 0.0);
  in.goal_velocity_for(c, v);
  CHECK(v[0] == doctest::Approx(1.0));
}
