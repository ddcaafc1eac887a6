// In-process simulated robot: each joint follows its command through the second-order servo of servo.hpp (lags
// and overshoots like a real position servo), saturated by the drive's acceleration and speed, and ends at hard
// stops (the joint's mechanical range) whose hits are counted.
//
// The simulation advances by the loop's tick length at each write_command() (deterministic: one tick of
// dynamics per command). A tick without a command (the loop stopped commanding, e.g. after a lost link) advances it
// too, at the next read_state(): the robot then holds by itself (its servo brakes to the position where the
// commands stopped, as a real robot's controller does when commands stop). Fault injection for tests, all
// lock-free and callable from any (one) thread: inject_dropout(n) makes the next n read_state() calls report no
// fresh state; inject_stall(n, s) makes each of the next n read_state() calls block for s seconds (a stalled bus
// or driver: forces deadline misses); set_estop_input() presses the simulated e-stop input; set_fault() raises the
// robot's fault flag; inject_measurement() makes the next n states report a given position/velocity for one joint
// (a broken encoder); set_link_up(false) cuts the link (no states, link_health() down); restart_peer() counts a
// peer restart (as a robot bridge that came back with a new session); jam() blocks a joint where it is (a seized
// gear or a collision: it stops following its command); push_ball_observation() queues a detection.
#pragma once

#include <atomic>
#include <cstdint>

#include "driver.hpp"
#include "safety.hpp"
#include "servo.hpp"
#include "spsc_ring.hpp"

namespace robot_rt::control {

struct SimServoConfig {
  double natural_frequency_hz = kServoDefaultFrequencyHz;
  double damping = kServoDefaultDamping;
  double acceleration_factor = kServoDriveAccelerationFactor;  // drive peak acceleration / A
  double velocity_factor = kServoDriveVelocityFactor;          // drive top speed / V
};

class SimDriver : public RobotDriver {
 public:
  SimDriver(const RobotModel& model, const double* initial_position_si, double dt_s, const SimServoConfig& servo);

  int dof() const noexcept override { return model_.dof; }
  bool read_state(JointState& out) noexcept override;
  bool write_command(const JointCommand& command) noexcept override;
  int read_ball_observations(BallObservation* out, int max_count) noexcept override;
  LinkHealth link_health() const noexcept override;
  const char* name() const noexcept override { return "sim"; }
  bool steps_with_loop_ticks() const noexcept override { return true; }

  void inject_dropout(int ticks) noexcept { dropout_.store(ticks, std::memory_order_relaxed); }
  void inject_stall(int ticks, double duration_s) noexcept {
    stall_ns_.store(static_cast<std::int64_t>(duration_s * 1e9), std::memory_order_relaxed);
    stall_.store(ticks, std::memory_order_release);
  }
  void set_estop_input(bool pressed) noexcept { estop_.store(pressed, std::memory_order_relaxed); }
  void set_fault(bool fault) noexcept { fault_.store(fault, std::memory_order_relaxed); }
  void inject_measurement(int joint, double position_si, double velocity_si, int states) noexcept;
  void set_link_up(bool up) noexcept { link_up_.store(up, std::memory_order_relaxed); }
  void restart_peer() noexcept { peer_restarts_.fetch_add(1, std::memory_order_relaxed); }
  void jam(int joint, bool jammed) noexcept;
  bool push_ball_observation(const BallObservation& obs) noexcept { return balls_.push(obs); }
  void fail_writes(bool fail) noexcept { fail_writes_.store(fail, std::memory_order_relaxed); }

  std::uint64_t commands_received() const noexcept { return commands_.load(std::memory_order_relaxed); }
  std::uint64_t hard_stop_hits() const noexcept { return hits_.load(std::memory_order_relaxed); }
  const ServoParams& servo(int joint) const noexcept { return servo_[joint]; }
  // Copies of the simulated joint positions / velocities (any thread; may tear across joints while running).
  void positions(double* out) const noexcept;
  void velocities(double* out) const noexcept;

 private:
  void hold_one_tick() noexcept;

  RobotModel model_;
  double dt_;
  bool commanded_ = true;  // a command arrived since the last read_state()
  bool holding_ = false;
  double hold_q_[kMaxDof] = {};
  ServoParams servo_[kMaxDof];
  ServoState joint_[kMaxDof];
  std::atomic<double> published_position_[kMaxDof];
  std::atomic<double> published_velocity_[kMaxDof];
  std::atomic<bool> jammed_[kMaxDof];
  std::atomic<int> dropout_{0};
  std::atomic<int> stall_{0};
  std::atomic<std::int64_t> stall_ns_{0};
  std::atomic<bool> estop_{false};
  std::atomic<bool> fault_{false};
  std::atomic<bool> link_up_{true};
  std::atomic<std::uint64_t> peer_restarts_{0};
  std::atomic<bool> fail_writes_{false};
  std::atomic<int> bad_joint_{-1};
  std::atomic<int> bad_states_{0};
  std::atomic<double> bad_position_{0.0};
  std::atomic<double> bad_velocity_{0.0};
  std::atomic<std::uint64_t> commands_{0};
  std::atomic<std::uint64_t> hits_{0};
  SpscRing<BallObservation, 256> balls_;
};

}  // namespace robot_rt::control
