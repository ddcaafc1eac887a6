#include "sim_driver.hpp"

#include <time.h>

#include <cerrno>
#include <cmath>

namespace robot_rt::control {

namespace {
std::int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
constexpr int kSubsteps = 10;
}  // namespace

SimDriver::SimDriver(const RobotModel& model, const double* initial_position_si, double dt_s,
                     const SimServoConfig& servo)
    : model_(model), dt_(dt_s) {
  for (int i = 0; i < kMaxDof; ++i) {
    const double q = i < model_.dof ? initial_position_si[i] : 0.0;
    joint_[i] = ServoState{q, 0.0, false};
    published_position_[i].store(q, std::memory_order_relaxed);
    published_velocity_[i].store(0.0, std::memory_order_relaxed);
    jammed_[i].store(false, std::memory_order_relaxed);
    if (i < model_.dof) {
      const JointLimits& l = model_.limits[i];
      ServoParams& p = servo_[i];
      p.natural_frequency_rad_s = 2.0 * M_PI * servo.natural_frequency_hz;
      p.damping = servo.damping;
      p.acceleration_limit = servo.acceleration_factor * l.acceleration;
      p.velocity_limit = servo.velocity_factor * l.velocity;
      p.position_min = l.position_min;
      p.position_max = l.position_max;
    }
  }
}

void SimDriver::inject_measurement(int joint, double position_si, double velocity_si, int states) noexcept {
  if (joint < 0 || joint >= model_.dof) return;
  bad_position_.store(position_si, std::memory_order_relaxed);
  bad_velocity_.store(velocity_si, std::memory_order_relaxed);
  bad_joint_.store(joint, std::memory_order_relaxed);
  bad_states_.store(states, std::memory_order_release);
}

void SimDriver::jam(int joint, bool jammed) noexcept {
  if (joint < 0 || joint >= model_.dof) return;
  jammed_[joint].store(jammed, std::memory_order_relaxed);
}

LinkHealth SimDriver::link_health() const noexcept {
  LinkHealth h;
  h.up = link_up_.load(std::memory_order_relaxed);
  h.peer_restarts = peer_restarts_.load(std::memory_order_relaxed);
  return h;
}

void SimDriver::hold_one_tick() noexcept {
  std::uint64_t hits = 0;
  for (int i = 0; i < model_.dof; ++i) {
    if (!holding_) hold_q_[i] = joint_[i].q;
    if (jammed_[i].load(std::memory_order_relaxed)) continue;
    hits += static_cast<std::uint64_t>(servo_step(joint_[i], servo_[i], hold_q_[i], 0.0, dt_, kSubsteps));
    published_position_[i].store(joint_[i].q, std::memory_order_relaxed);
    published_velocity_[i].store(joint_[i].v, std::memory_order_relaxed);
  }
  holding_ = true;
  if (hits) hits_.fetch_add(hits, std::memory_order_relaxed);
}

bool SimDriver::read_state(JointState& out) noexcept {
  if (!commanded_) hold_one_tick();  // no command for a tick: the robot holds by itself
  commanded_ = false;
  const int stalls = stall_.load(std::memory_order_acquire);
  if (stalls > 0) {
    stall_.store(stalls - 1, std::memory_order_relaxed);
    const std::int64_t until = now_ns() + stall_ns_.load(std::memory_order_relaxed);
    const timespec ts{static_cast<time_t>(until / 1'000'000'000), static_cast<long>(until % 1'000'000'000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
  }
  if (!link_up_.load(std::memory_order_relaxed)) return false;
  const int pending = dropout_.load(std::memory_order_relaxed);
  if (pending > 0) {
    dropout_.store(pending - 1, std::memory_order_relaxed);
    return false;
  }
  out.stamp_ns = now_ns();
  out.dof = model_.dof;
  out.flags = (estop_.load(std::memory_order_relaxed) ? kStateEstopInput : 0u) |
              (fault_.load(std::memory_order_relaxed) ? kStateFault : 0u);
  for (int i = 0; i < model_.dof; ++i) {
    out.position_si[i] = joint_[i].q;
    out.velocity_si[i] = joint_[i].v;
  }
  const int bad = bad_states_.load(std::memory_order_acquire);
  if (bad > 0) {
    bad_states_.store(bad - 1, std::memory_order_relaxed);
    const int j = bad_joint_.load(std::memory_order_relaxed);
    out.position_si[j] = bad_position_.load(std::memory_order_relaxed);
    out.velocity_si[j] = bad_velocity_.load(std::memory_order_relaxed);
  }
  return true;
}

bool SimDriver::write_command(const JointCommand& command) noexcept {
  if (fail_writes_.load(std::memory_order_relaxed)) return false;
  commands_.fetch_add(1, std::memory_order_relaxed);
  commanded_ = true;
  holding_ = false;
  std::uint64_t hits = 0;
  for (int i = 0; i < model_.dof; ++i) {
    if (jammed_[i].load(std::memory_order_relaxed)) {
      joint_[i].v = 0.0;
      continue;
    }
    hits += static_cast<std::uint64_t>(
        servo_step(joint_[i], servo_[i], command.position_si[i], command.velocity_si[i], dt_, kSubsteps));
    published_position_[i].store(joint_[i].q, std::memory_order_relaxed);
    published_velocity_[i].store(joint_[i].v, std::memory_order_relaxed);
  }
  if (hits) hits_.fetch_add(hits, std::memory_order_relaxed);
  return true;
}

int SimDriver::read_ball_observations(BallObservation* out, int max_count) noexcept {
  int n = 0;
  while (n < max_count && balls_.pop(out[n])) ++n;
  return n;
}

void SimDriver::positions(double* out) const noexcept {
  for (int i = 0; i < model_.dof; ++i) out[i] = published_position_[i].load(std::memory_order_relaxed);
}

void SimDriver::velocities(double* out) const noexcept {
  for (int i = 0; i < model_.dof; ++i) out[i] = published_velocity_[i].load(std::memory_order_relaxed);
}

}  // namespace robot_rt::control
