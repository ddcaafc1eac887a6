// Late wakes of the loop against a robot whose servo runs on in continuous time (control_loop.cpp's trajectory
// clock, reflexes.hpp's TrackingMonitor; docs/safety.md, "Late wakes"). While the loop is late no command reaches
// the robot, whose servo keeps its last command's velocity feed-forward: the commanded trajectory catches up with the
// clock on the late tick, inside every limit, so the robot is where the command is and the tracking reflex stays
// quiet; while a genuine tracking fault (a blocked joint, a measured position that jumps) during or after a gap
// still latches a protective stop within the same bound as on time, and nothing moves after a stop.
// Stepped deterministically on a simulated clock (ControlLoop::begin_manual / manual_tick).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "control_loop.hpp"
#include "servo.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;
using robot_rt::control::testing::Random;

namespace {

constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kDelayNs = 2'300'000;  // command transport delay (link + the robot's own cycle)

// A robot behind a link, in continuous (simulated) time: a command reaches the servo kDelayNs after it was sent;
// the servo (servo.hpp: 10 Hz, damping 0.5, saturated at the drive's 2 A and 1.2 V) runs on the newest command it
// has, position and velocity feed-forward held until the next one arrives, as the UDP sim server does; and like it,
// with no command for kCommandTimeoutNs it brakes to a hold where it is (its communication watchdog).
class RemoteServoDriver final : public RobotDriver {
 public:
  RemoteServoDriver(const RobotModel& model, const double* q0) : model_(model) {
    for (int i = 0; i < model.dof; ++i) {
      const JointLimits& l = model.limits[i];
      servo_[i] = ServoParams{2.0 * M_PI * kServoDefaultFrequencyHz, kServoDefaultDamping,
                              kServoDriveAccelerationFactor * l.acceleration, kServoDriveVelocityFactor * l.velocity,
                              l.position_min, l.position_max};
      joint_[i].q = target_q_[i] = q0[i];
    }
  }
  int dof() const noexcept override { return model_.dof; }
  const char* name() const noexcept override { return "remote-servo"; }
  bool steps_with_loop_ticks() const noexcept override { return true; }  // stepped by the test, tick by tick
  int read_ball_observations(BallObservation*, int) noexcept override { return 0; }

  // Runs the robot up to `now_ns` (0.25 ms steps; each queued command is applied when it arrives).
  void advance_to(std::int64_t now_ns) {
    if (time_ns_ == 0) time_ns_ = now_ns;
    while (time_ns_ < now_ns) {
      const std::int64_t step = std::min<std::int64_t>(kMs / 4, now_ns - time_ns_);
      time_ns_ += step;
      while (queued_ > 0 && queue_[head_].arrive_ns <= time_ns_) {
        const Queued& c = queue_[head_];
        for (int i = 0; i < model_.dof; ++i) {
          target_q_[i] = c.q[i];
          target_v_[i] = c.v[i];
        }
        last_arrival_ns_ = c.arrive_ns;
        holding_ = false;
        head_ = (head_ + 1) % kQueue;
        --queued_;
      }
      if (!holding_ && last_arrival_ns_ > 0 && time_ns_ - last_arrival_ns_ > kCommandTimeoutNs) {
        holding_ = true;  // the watchdog: hold where the robot is
        ++watchdog_holds;
        for (int i = 0; i < model_.dof; ++i) {
          target_q_[i] = joint_[i].q;
          target_v_[i] = 0.0;
        }
      }
      for (int i = 0; i < model_.dof; ++i) {
        if (i == blocked_joint) {  // blocked: it stays where it is
          joint_[i].v = 0.0;
          continue;
        }
        servo_step(joint_[i], servo_[i], target_q_[i], target_v_[i], 1e-9 * static_cast<double>(step), 4);
      }
    }
  }
  bool read_state(JointState& out) noexcept override {
    out.stamp_ns = time_ns_;
    out.dof = model_.dof;
    out.flags = 0;
    for (int i = 0; i < model_.dof; ++i) {
      out.position_si[i] = i == 0 && std::isfinite(reported) ? reported : joint_[i].q;
      out.velocity_si[i] = joint_[i].v;
    }
    reported = std::nan("");
    return true;
  }
  bool write_command(const JointCommand& c) noexcept override {
    if (queued_ == kQueue) return false;
    Queued& e = queue_[(head_ + queued_) % kQueue];
    e.arrive_ns = c.stamp_ns + kDelayNs;
    for (int i = 0; i < model_.dof; ++i) {
      e.q[i] = c.position_si[i];
      e.v[i] = c.velocity_si[i];
    }
    ++queued_;
    ++commands;
    return true;
  }
  double position(int joint) const { return joint_[joint].q; }
  double velocity(int joint) const { return joint_[joint].v; }

  int blocked_joint = -1;
  double reported = std::nan("");  // joint 0's next reported position when set (a broken encoder, a slipped coupling)
  std::uint64_t commands = 0;
  std::uint64_t watchdog_holds = 0;
  static constexpr std::int64_t kCommandTimeoutNs = 100 * kMs;  // the sim server's command_timeout_s

 private:
  struct Queued {
    std::int64_t arrive_ns = 0;
    double q[kMaxDof] = {}, v[kMaxDof] = {};
  };
  static constexpr int kQueue = 256;
  RobotModel model_;
  ServoParams servo_[kMaxDof];
  ServoState joint_[kMaxDof];
  double target_q_[kMaxDof] = {}, target_v_[kMaxDof] = {};
  std::int64_t time_ns_ = 0, last_arrival_ns_ = 0;
  bool holding_ = false;
  Queued queue_[kQueue];
  int head_ = 0, queued_ = 0;
};

// An arm wrist joint (the default robot's j5: 10.3 rad/s, 40 rad/s^2: the fastest, where the run-ahead was largest)
// and a gantry axis, with the default soft margins.
RobotModel wrist_and_gantry() {
  RobotModel m;
  m.dof = 2;
  m.limits[0] = JointLimits{-2.9, 2.9, 10.3, 40.0, 800.0};
  m.limits[1] = JointLimits{-1.0, 1.0, 2.0, 10.0, 200.0};
  m.soft_margin_si[0] = 2.0 * servo_error_bound(40.0, 2.0 * M_PI * 10.0, 0.5);
  m.soft_margin_si[1] = 2.0 * servo_error_bound(10.0, 2.0 * M_PI * 10.0, 0.5);
  return m;
}

struct LinkHarness {
  RobotModel model = wrist_and_gantry();
  std::shared_ptr<RemoteServoDriver> driver;
  std::unique_ptr<ControlLoop> loop;
  std::int64_t period_ns;
  std::int64_t now = 1'000'000'000'000;  // the deadline grid: the last tick's deadline
  std::int64_t wake = now;               // the last tick's wake
  int ticks = 0;

  LinkHarness(std::int64_t period, double sensor_timeout_s = 0.02) : period_ns(period) {
    const double q0[2] = {0.0, 0.0};
    driver = std::make_shared<RemoteServoDriver>(model, q0);
    LoopConfig cfg;
    cfg.rate_hz = 1e9 / static_cast<double>(period_ns);
    cfg.policy_period_s = 0.01;
    cfg.sensor_timeout_s = sensor_timeout_s;
    driver->advance_to(now);
    loop = std::make_unique<ControlLoop>(driver, model, cfg);
    loop->begin_manual(now);
  }
  ~LinkHarness() { loop->end_manual(); }
  // One tick `late_ns` after its deadline; the slots it missed are skipped, as the real-time thread does.
  void tick(std::int64_t late_ns = 0) {
    const std::int64_t deadline = now + period_ns;
    wake = deadline + late_ns;
    driver->advance_to(wake);
    loop->manual_tick(wake);
    now = deadline + (late_ns / period_ns) * period_ns;
    ++ticks;
  }
  void command(double q0, double q1) {
    const double q[2] = {q0, q1};
    loop->push_command(q, 2, 0, 0);
  }
  // Bang-bang targets at both hard limits (each joint flipping on its own period), a 100 Hz policy.
  void bang_bang_command() {
    const std::int64_t t_ms = (now - 1'000'000'000'000) / kMs;
    command((t_ms / 400) % 2 ? 2.9 : -2.9, (t_ms / 310) % 2 ? 1.0 : -1.0);
  }
  bool tracking_tripped() const { return (loop->stop_reasons() & kReasonTrackingError) != 0u; }
  Observation observation() const {
    Observation o;
    loop->latest_observation(o);
    return o;
  }
  // Takes joint 0 to -2.8, then cruises it towards +2.9 until the robot runs at least `speed`.
  void cruise(double speed) {
    for (int k = 0; k < 3000 && !(driver->position(0) < -2.79 && std::fabs(driver->velocity(0)) < 1e-3); ++k) {
      if (k % 5 == 0) command(-2.8, 0.0);
      tick();
    }
    for (int k = 0; k < 2000 && std::fabs(driver->velocity(0)) < speed; ++k) {
      if (k % 5 == 0) command(2.9, 0.0);
      tick();
    }
    REQUIRE(std::fabs(driver->velocity(0)) >= speed);
  }
};

int tick_steps(std::uint32_t flags) {
  const int n = static_cast<int>((flags & kTickStepsMask) >> kTickStepsShift);
  return n > 0 ? n : 1;
}

}  // namespace

TEST_CASE("late wakes: the commanded trajectory catches up with the clock, inside every limit") {
  for (const std::int64_t period : {1 * kMs, 2 * kMs}) {
    LinkHarness h(period);
    Random rng(7);
    const double dt = 1e-9 * static_cast<double>(period);
    double prev_v[2] = {0.0, 0.0};
    std::int64_t trajectory_ns = h.now;
    int late = 0, caught_up = 0;
    for (int k = 0; k < 3000; ++k) {
      if (k % 10 == 0) h.bang_bang_command();
      std::int64_t late_ns = 0;
      if (k > 50 && rng.coin(0.05)) {
        late_ns = static_cast<std::int64_t>(rng.uniform(0.2, 15.0) * kMs);
        ++late;
      }
      const std::int64_t prev_wake = h.wake;
      h.tick(late_ns);
      const Observation o = h.observation();
      const int steps = tick_steps(o.flags);
      // as many periods as went by since the last step, rounded: the trajectory's time keeps up with the clock (a
      // tick right after a late one may come less than a period after it: still one step, a bounded lead)
      trajectory_ns += steps * period;
      INFO("tick ", h.ticks, " late ", late_ns, " since the last wake ", h.wake - prev_wake, " steps ", steps);
      CHECK(trajectory_ns - h.wake <= period + period / 2);
      CHECK(h.wake - trajectory_ns <= period / 2);
      if (steps > 1) ++caught_up;
      if (h.wake - prev_wake == period) CHECK(steps == 1);
      // every commanded state inside the limits; the velocity changed by at most A per trajectory step
      for (int i = 0; i < 2; ++i) {
        const JointLimits& l = h.model.limits[i];
        CHECK(std::fabs(o.command_velocity_si[i]) <= l.velocity * (1 + 1e-9));
        CHECK(o.command_position_si[i] >= l.position_min + h.model.soft_margin_si[i] - 1e-9);
        CHECK(o.command_position_si[i] <= l.position_max - h.model.soft_margin_si[i] + 1e-9);
        CHECK(std::fabs(o.command_velocity_si[i] - prev_v[i]) <= l.acceleration * steps * dt * (1 + 1e-9));
        prev_v[i] = o.command_velocity_si[i];
      }
    }
    CHECK(late > 100);
    CHECK(caught_up > 100);
    CHECK(h.loop->stop_reasons() == 0u);
  }
}

TEST_CASE("late wakes at full speed with the robot's servo running on its last feed-forward: no false tracking stop") {
  // bang-bang at full speed through a 2.3 ms command delay; 5 % of the ticks wake 0.5-15 ms late (the rally's
  // stops followed 2-10 ms late wakes); at the default 1 kHz and at the fault matrix's 500 Hz
  for (const std::int64_t period : {1 * kMs, 2 * kMs}) {
    for (std::uint64_t seed = 1; seed <= 4; ++seed) {
      INFO("period ", period, " seed ", seed);
      LinkHarness h(period);
      Random rng(seed);
      double fastest = 0.0, farthest_late = 0.0;
      int late = 0;
      for (int k = 0; k < 3000 && h.loop->stop_reasons() == 0u; ++k) {
        if (k % 5 == 0) h.bang_bang_command();
        std::int64_t late_ns = 0;
        if (k > 50 && rng.coin(0.05)) {
          late_ns = static_cast<std::int64_t>(rng.uniform(0.5, 15.0) * kMs);
          ++late;
        }
        const double v_before = std::fabs(h.driver->velocity(0));
        h.tick(late_ns);
        fastest = std::max(fastest, std::fabs(h.driver->velocity(0)));
        // how far the robot ran on during the gap: its velocity x the time without a command
        if (late_ns > 0) farthest_late = std::max(farthest_late, v_before * 1e-9 * static_cast<double>(late_ns));
      }
      EventRecord e;
      while (h.loop->pop_event(e))
        if (e.code == kEventTrackingErrorStop) MESSAGE("trip: joint ", e.joint, " deviation ", e.value);
      INFO("robot's top speed ", fastest, " rad/s; the longest run-on during a gap ", farthest_late, " rad");
      CHECK(late > 100);
      CHECK(fastest > 9.0);                                       // it really ran at full speed
      CHECK(farthest_late > 2.0 * h.loop->tracking().threshold(0));  // and gaps long enough to matter
      CHECK(h.loop->stop_reasons() == 0u);
    }
  }
}

TEST_CASE("a joint blocked before, during or after a gap trips within window + delay + threshold / speed + 2 ticks") {
  // the bound of the on-time case; a gap adds at most its own length (the loop is not there to look)
  for (const std::int64_t period : {1 * kMs, 2 * kMs}) {
    for (const int gap_at : {-1, 0, 3, 12}) {  // the late tick's index from the blocking (-1: no gap)
      for (const std::int64_t gap_ns : {4 * kMs, 10 * kMs}) {
        if (gap_at < 0 && gap_ns != 4 * kMs) continue;
        INFO("period ", period, " gap at ", gap_at, " of ", gap_ns);
        LinkHarness h(period);
        h.cruise(10.0);
        const double speed = std::fabs(h.observation().command_velocity_si[0]);
        h.driver->blocked_joint = 0;
        const std::int64_t blocked_ns = h.wake;
        std::int64_t gap_total = 0;
        for (int k = 0; k < 400 && !h.tracking_tripped(); ++k) {
          if (k % 5 == 0) h.command(2.9, 0.0);
          const std::int64_t late = k == gap_at ? gap_ns : 0;
          gap_total += late;
          h.tick(late);
        }
        REQUIRE(h.tracking_tripped());
        const double took_s = 1e-9 * static_cast<double>(h.wake - blocked_ns);
        const double dt = 1e-9 * static_cast<double>(period);
        const double bound_s = 0.030 + 1e-9 * static_cast<double>(kDelayNs) + h.loop->tracking().threshold(0) / speed +
                               2 * dt + 1e-9 * static_cast<double>(gap_total);
        INFO("tripped after ", took_s, " s, bound ", bound_s, " s at ", speed, " rad/s");
        CHECK(took_s <= bound_s);
        if (gap_at < 0) CHECK(took_s >= bound_s - 0.010);  // and not much earlier: the bound is the tube's
        CHECK((h.loop->stop_reasons() & ~kReasonTrackingError) == 0u);
      }
    }
  }
}

TEST_CASE("a measured position that jumps trips on the tick it arrives: on time, on a late tick, right after one") {
  // Beyond the tube's ends by 1 cm: ahead, the newest command + its velocity x the time since it was sent (the
  // robot's run-on: a period on time, the lateness on the late tick, and no more on the tick after it: the catch-up
  // leaves no run-ahead for the tube to carry); behind, the oldest command sent in the 40 ms up to the last tick (the
  // window is 30 ms).
  for (const std::int64_t period : {1 * kMs, 2 * kMs}) {
    for (const int when : {0, 1, 2}) {  // 0: on time; 1: on the late tick itself; 2: on the tick after it
      for (const double dir : {1.0, -1.0}) {
        INFO("period ", period, " when ", when, " direction ", dir);
        LinkHarness h(period);
        double commanded[64];
        std::int64_t commanded_at[64];
        int n = 0;
        auto remember = [&] {
          commanded[n % 64] = h.observation().command_position_si[0];
          commanded_at[n % 64] = h.wake;
          ++n;
        };
        h.cruise(10.0);
        for (int k = 0; k < 64; ++k) {  // (cruise on, remembering what was commanded)
          if (k % 5 == 0) h.command(2.9, 0.0);
          h.tick();
          remember();
        }
        const std::int64_t late = 10 * kMs;
        if (when == 2) {
          h.tick(late);
          remember();
        }
        REQUIRE(h.loop->stop_reasons() == 0u);  // (a late tick alone trips nothing)
        const Observation o = h.observation();
        const double thr = h.loop->tracking().threshold(0);
        const std::int64_t wake_next = h.now + period + (when == 1 ? late : 0);
        if (dir > 0) {
          const double run_on_s = 1e-9 * static_cast<double>(wake_next - h.wake);
          h.driver->reported = o.command_position_si[0] + o.command_velocity_si[0] * run_on_s + thr + 0.01;
        } else {
          double oldest = o.command_position_si[0];
          for (int k = 0; k < 64 && k < n; ++k)
            if (h.wake - commanded_at[k] <= 40 * kMs) oldest = std::min(oldest, commanded[k]);
          h.driver->reported = oldest - thr - 0.01;
        }
        h.tick(when == 1 ? late : 0);
        CHECK(h.tracking_tripped());
      }
    }
  }
}

TEST_CASE("after a stop with late wakes: the stop keeps to the clock, then nothing moves until recover()") {
  LinkHarness h(1 * kMs);
  Random rng(11);
  h.cruise(9.0);
  h.driver->blocked_joint = 0;
  for (int k = 0; k < 400 && !h.tracking_tripped(); ++k) {
    if (k % 5 == 0) h.command(2.9, 0.0);
    h.tick(rng.coin(0.1) ? static_cast<std::int64_t>(rng.uniform(1.0, 10.0) * kMs) : 0);
  }
  REQUIRE(h.tracking_tripped());
  // the robot does not follow the commands any more: the loop sends nothing from this tick on (not the rest of the
  // stop, not its rest), so it is its own watchdog that holds it, where it is
  CHECK((h.observation().flags & kTickMuted) != 0u);
  const std::uint64_t sent_at_trip = h.driver->commands;
  h.driver->blocked_joint = -1;  // the fault goes away (a transient jam): still nothing may move by itself
  const std::int64_t tripped_ns = h.wake;
  double rest_position[2] = {0.0, 0.0};
  bool at_rest = false;
  double robot_at_rest[2] = {0.0, 0.0};
  std::int64_t robot_still_since = 0, stopped_ns = 0;
  for (int k = 0; k < 3500; ++k) {
    if (k % 5 == 0) h.command(-2.9, 1.0);  // the policy keeps commanding: discarded while stopped
    h.tick(rng.coin(0.1) ? static_cast<std::int64_t>(rng.uniform(1.0, 10.0) * kMs) : 0);
    const Observation o = h.observation();
    CHECK((o.flags & kTickMuted) != 0u);
    if (!at_rest && h.loop->lifecycle() == Lifecycle::kStopped) {
      at_rest = true;
      stopped_ns = h.wake;
      // the controlled stop (of the commanded side) took at most the stop-time bound of wall time (not of ticks)
      CHECK(1e-9 * static_cast<double>(h.wake - tripped_ns) <= h.loop->stop_time_bound_s());
      for (int i = 0; i < 2; ++i) rest_position[i] = o.command_position_si[i];
    }
    if (at_rest) {
      CHECK(h.loop->lifecycle() == Lifecycle::kStopped);
      for (int i = 0; i < 2; ++i) {
        CHECK(o.command_position_si[i] == rest_position[i]);
        CHECK(o.command_velocity_si[i] == 0.0);
      }
      // the robot's watchdog brought it to a hold (the unblocked joint first ran out the last command it had);
      // from then on it does not move
      if (robot_still_since == 0 && h.wake - stopped_ns > 1500 * kMs) {
        robot_still_since = h.wake;
        for (int i = 0; i < 2; ++i) robot_at_rest[i] = h.driver->position(i);
      }
      if (robot_still_since != 0)
        for (int i = 0; i < 2; ++i) CHECK(std::fabs(h.driver->position(i) - robot_at_rest[i]) < 1e-4);
    }
  }
  REQUIRE(at_rest);
  CHECK(robot_still_since != 0);
  CHECK(h.driver->commands == sent_at_trip);
  CHECK(h.driver->watchdog_holds >= 1u);
  // it was never sent the loop's rest, which lies far from where it held (the old behaviour ran it there)
  CHECK(std::fabs(h.driver->position(0) - rest_position[0]) > 0.5);
  // only recover() moves it again, starting where it is
  h.loop->request_recover();
  for (int k = 0; k < 50 && h.loop->lifecycle() != Lifecycle::kActive; ++k) h.tick();
  CHECK(h.loop->lifecycle() == Lifecycle::kActive);
  CHECK(h.loop->stop_reasons() == 0u);
  h.tick();
  const Observation after = h.observation();
  CHECK((after.flags & kTickMuted) == 0u);
  for (int i = 0; i < 2; ++i) CHECK(std::fabs(after.command_position_si[i] - h.driver->position(i)) < 1e-3);
}

TEST_CASE("a gap longer than the catch-up bound: the trajectory does not replay it; the robot's run-on stops it") {
  LinkHarness h(1 * kMs);
  h.cruise(9.0);
  const Observation before = h.observation();
  h.tick(40 * kMs);  // 40 ms without the loop: the robot ran on for all of it
  const Observation o = h.observation();
  CHECK(tick_steps(o.flags) == static_cast<int>(std::floor(ControlLoop::kMaxCatchUpS / 1e-3 + 1e-9)));
  // the command advanced by at most the catch-up bound's worth of the trajectory (V x 20 ms), not by the gap
  CHECK(std::fabs(o.command_position_si[0] - before.command_position_si[0]) <= 10.3 * ControlLoop::kMaxCatchUpS + 1e-9);
  // the robot ran on further than the tube allows: a protective stop on the late tick itself
  CHECK(h.tracking_tripped());
}

TEST_CASE("a stall beyond the catch-up bound sends no command behind the robot: it is never pulled back") {
  // (an audit: the tube reached 0.1 s ahead while the catch-up replays 20 ms, so the late tick's command passed the
  // check and pulled the robot back by up to 0.14 rad at twice its acceleration limit)
  // (30 ms: 10 ms of run-on beyond the catch-up, inside the tube's threshold: the command goes out, behind the robot
  // by less than the threshold; 40-90 ms: beyond it)
  for (const std::int64_t gap_ms : {30, 40, 60, 90}) {
    CAPTURE(gap_ms);
    const bool beyond = gap_ms >= 40;
    LinkHarness h(1 * kMs);
    h.cruise(8.0);
    const std::uint64_t commands = h.driver->commands;
    h.tick(gap_ms * kMs);
    CHECK(h.tracking_tripped() == beyond);
    CHECK((h.driver->commands == commands) == beyond);  // the late tick wrote nothing
    CHECK(((h.observation().flags & kTickMuted) != 0u) == beyond);
    const double at_late_tick = h.driver->position(0);
    double lowest = at_late_tick;
    for (int k = 0; k < 500; ++k) {
      if (k % 10 == 0) h.command(2.9, 0.0);
      h.tick();
      lowest = std::min(lowest, h.driver->position(0));
    }
    if (beyond) CHECK(h.driver->commands == commands);  // muted until a recovery
    CHECK(at_late_tick - lowest < 1e-3);                // never pulled back
  }
}
