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
}  // namespace

SimDriver::SimDriver(const RobotModel& model, const double* initial_position_si, double dt_s,
                     double tracking_time_constant_s)
    : model_(model), dt_(dt_s), omega_(1.0 / tracking_time_constant_s) {
  for (int i = 0; i < kMaxDof; ++i) {
    const double q = i < model_.dof ? initial_position_si[i] : 0.0;
    position_[i] = q;
    velocity_[i] = 0.0;
    published_position_[i].store(q, std::memory_order_relaxed);
  }
}

bool SimDriver::read_state(JointState& out) noexcept {
  const int stalls = stall_.load(std::memory_order_acquire);
  if (stalls > 0) {
    stall_.store(stalls - 1, std::memory_order_relaxed);
    const std::int64_t until = now_ns() + stall_ns_.load(std::memory_order_relaxed);
    const timespec ts{static_cast<time_t>(until / 1'000'000'000), static_cast<long>(until % 1'000'000'000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
  }
  const int pending = dropout_.load(std::memory_order_relaxed);
  if (pending > 0) {
    dropout_.store(pending - 1, std::memory_order_relaxed);
    return false;
  }
  out.stamp_ns = now_ns();
  out.dof = model_.dof;
  out.flags = estop_.load(std::memory_order_relaxed) ? kStateEstopInput : 0u;
  for (int i = 0; i < model_.dof; ++i) {
    out.position_si[i] = position_[i];
    out.velocity_si[i] = velocity_[i];
  }
  return true;
}

bool SimDriver::write_command(const JointCommand& command) noexcept {
  if (fail_writes_.load(std::memory_order_relaxed)) return false;
  commands_.fetch_add(1, std::memory_order_relaxed);
  const double w = omega_;
  for (int i = 0; i < model_.dof; ++i) {
    const JointLimits& l = model_.limits[i];
    // critically damped tracking of (position, velocity) commands
    double acc = w * w * (command.position_si[i] - position_[i]) + 2.0 * w * (command.velocity_si[i] - velocity_[i]);
    acc = clamp_abs(acc, l.acceleration);
    double vel = clamp_abs(velocity_[i] + acc * dt_, l.velocity);
    double pos = position_[i] + vel * dt_;
    if (pos < l.position_min || pos > l.position_max) {  // hard stop
      pos = pos < l.position_min ? l.position_min : l.position_max;
      vel = 0.0;
    }
    position_[i] = pos;
    velocity_[i] = vel;
    published_position_[i].store(pos, std::memory_order_relaxed);
  }
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

}  // namespace robot_rt::control
