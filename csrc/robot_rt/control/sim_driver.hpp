// In-process simulated robot: each joint follows its command through a critically damped second-order
// lag (time constant tracking_time_constant_s) with the commanded velocity as feed-forward, saturated by
// the joint's velocity / acceleration limits and clamped into its position range (hard stops).
//
// The simulation advances by the loop's tick length at each write_command() (deterministic: one tick of
// dynamics per command). Fault injection for tests, all lock-free and callable from any (one) thread:
// inject_dropout(n) makes the next n read_state() calls report no fresh state; inject_stall(n, s) makes each
// of the next n read_state() calls block for s seconds (a stalled bus or driver: forces deadline misses);
// set_estop_input() presses the simulated e-stop input; push_ball_observation() queues a detection for
// read_ball_observations().
#pragma once

#include <atomic>
#include <cstdint>

#include "driver.hpp"
#include "safety.hpp"
#include "spsc_ring.hpp"

namespace robot_rt::control {

class SimDriver : public RobotDriver {
 public:
  SimDriver(const RobotModel& model, const double* initial_position_si, double dt_s, double tracking_time_constant_s);

  int dof() const noexcept override { return model_.dof; }
  bool read_state(JointState& out) noexcept override;
  bool write_command(const JointCommand& command) noexcept override;
  int read_ball_observations(BallObservation* out, int max_count) noexcept override;
  const char* name() const noexcept override { return "sim"; }

  void inject_dropout(int ticks) noexcept { dropout_.store(ticks, std::memory_order_relaxed); }
  void inject_stall(int ticks, double duration_s) noexcept {
    stall_ns_.store(static_cast<std::int64_t>(duration_s * 1e9), std::memory_order_relaxed);
    stall_.store(ticks, std::memory_order_release);
  }
  void set_estop_input(bool pressed) noexcept { estop_.store(pressed, std::memory_order_relaxed); }
  bool push_ball_observation(const BallObservation& obs) noexcept { return balls_.push(obs); }
  void fail_writes(bool fail) noexcept { fail_writes_.store(fail, std::memory_order_relaxed); }

  std::uint64_t commands_received() const noexcept { return commands_.load(std::memory_order_relaxed); }
  // Copy of the simulated joint positions (any thread; may tear across joints while running).
  void positions(double* out) const noexcept;

 private:
  RobotModel model_;
  double dt_;
  double omega_;
  double position_[kMaxDof] = {};
  double velocity_[kMaxDof] = {};
  std::atomic<double> published_position_[kMaxDof];
  std::atomic<int> dropout_{0};
  std::atomic<int> stall_{0};
  std::atomic<std::int64_t> stall_ns_{0};
  std::atomic<bool> estop_{false};
  std::atomic<bool> fail_writes_{false};
  std::atomic<std::uint64_t> commands_{0};
  SpscRing<BallObservation, 256> balls_;
};

}  // namespace robot_rt::control
