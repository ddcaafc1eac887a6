#include "composite_driver.hpp"

#include <stdexcept>

namespace robot_rt::control {

CompositeDriver::CompositeDriver(std::vector<std::shared_ptr<RobotDriver>> parts) : parts_(std::move(parts)) {
  if (parts_.empty() || parts_.size() > 8) throw std::invalid_argument("parts: expected 1..8 drivers");
  for (const auto& part : parts_) {
    if (!part) throw std::invalid_argument("parts: expected drivers, got None");
    offset_.push_back(dof_);
    peer_restarts_seen_.push_back(part->link_health().peer_restarts);
    dof_ += part->dof();
    name_ += (name_.empty() ? "" : "+") + std::string(part->name());
  }
  if (dof_ < 1 || dof_ > kMaxDof)
    throw std::invalid_argument("parts: their joints add up to " + std::to_string(dof_) + ", expected 1.." +
                                std::to_string(kMaxDof));
}

void CompositeDriver::on_start() {
  self_stopped_ = 0;
  new_session_ = 0;
  muted_parts_ = 0;
  pending_flags_ = 0;
  std::size_t started = 0;
  try {
    for (; started < parts_.size(); ++started) parts_[started]->on_start();
  } catch (...) {
    for (std::size_t i = 0; i < started; ++i) parts_[i]->on_stop();
    throw;
  }
  for (std::size_t p = 0; p < parts_.size(); ++p) peer_restarts_seen_[p] = parts_[p]->link_health().peer_restarts;
}

void CompositeDriver::acknowledge_robot_stops() noexcept {
  for (auto& part : parts_) part->acknowledge_robot_stops();
  pending_flags_ &= ~kStateRobotStopped;  // acknowledged: a part's kept stop count is no stop any more
}

bool CompositeDriver::claim() noexcept {
  if (!RobotDriver::claim()) return false;
  for (std::size_t p = 0; p < parts_.size(); ++p) {
    if (!parts_[p]->claim()) {
      for (std::size_t q = 0; q < p; ++q) parts_[q]->release();
      RobotDriver::release();
      return false;
    }
  }
  return true;
}

void CompositeDriver::release() noexcept {
  for (auto& part : parts_) part->release();
  RobotDriver::release();
}

void CompositeDriver::on_stop() {
  for (auto& part : parts_) part->on_stop();
}

void CompositeDriver::set_ending_in_stop(bool stopped) noexcept {
  for (auto& part : parts_) part->set_ending_in_stop(stopped);
}

bool CompositeDriver::read_state(JointState& out) noexcept {
  unsigned mask = 0;
  bool all_fresh = true;
  std::int64_t stamp = 0;
  std::uint32_t flags = 0;
  for (std::size_t p = 0; p < parts_.size(); ++p) {
    const bool fresh = parts_[p]->read_state(part_state_);  // every part, every tick: each drains its link
    const std::uint64_t restarts = parts_[p]->link_health().peer_restarts;
    if (restarts != peer_restarts_seen_[p]) {  // this part's peer restarted: a session no loop commanded yet
      peer_restarts_seen_[p] = restarts;
      new_session_ |= part_joints(p);
    }
    // a part's own stop is kept even from a state that is not whole (another part stale): the loop must not miss it
    if (fresh && (part_state_.flags & kStateSelfStop)) {
      self_stopped_ |= part_joints(p);
      pending_flags_ |= part_state_.flags & kStateSelfStop;
    }
    if (!fresh || part_state_.dof != parts_[p]->dof()) {
      all_fresh = false;
      continue;
    }
    mask |= 1u << p;
    if (p == 0 || part_state_.stamp_ns < stamp) stamp = part_state_.stamp_ns;
    flags |= part_state_.flags;
    pending_flags_ |= part_state_.flags & kStateNewSession;  // one-shot: kept until a whole state carries it
    if (part_state_.flags & kStateNewSession) new_session_ |= part_joints(p);
    const int base = offset_[p];
    for (int i = 0; i < part_state_.dof; ++i) {
      out.position_si[base + i] = part_state_.position_si[i];
      out.velocity_si[base + i] = part_state_.velocity_si[i];
    }
  }
  fresh_mask_ = mask;
  if (!all_fresh) return false;
  out.dof = dof_;
  out.stamp_ns = stamp;
  out.flags = flags | pending_flags_;
  pending_flags_ = 0;
  return true;
}

std::uint64_t CompositeDriver::self_stopped_joints(std::uint32_t flags) const noexcept {
  (void)flags;  // attributed per part in read_state
  return self_stopped_;
}

std::uint64_t CompositeDriver::link_down_joints() const noexcept {
  std::uint64_t joints = 0;
  for (std::size_t p = 0; p < parts_.size(); ++p)
    if (!parts_[p]->link_health().up) joints |= part_joints(p);
  return joints;
}

bool CompositeDriver::mute_joints(std::uint64_t joints) noexcept {
  unsigned parts = 0;
  for (std::size_t p = 0; p < parts_.size(); ++p)
    if (joints & part_joints(p)) parts |= 1u << p;
  muted_parts_ = parts;
  // each part learns of its own mute (an EGM arm answers its controller with a hold while it gets no command)
  for (std::size_t p = 0; p < parts_.size(); ++p) parts_[p]->mute_joints((parts >> p) & 1u ? RobotDriver::joint_mask(parts_[p]->dof()) : 0u);
  if (joints == 0) {  // a recovery (it is refused while a stop bit is still pending) or a new start
    self_stopped_ = 0;
    new_session_ = 0;
  }
  return true;
}

bool CompositeDriver::write_command(const JointCommand& command) noexcept {
  if (command.dof != dof_) return false;
  bool ok = true;
  part_command_.stamp_ns = command.stamp_ns;
  part_command_.tick = command.tick;
  part_command_.flags = command.flags;
  for (std::size_t p = 0; p < parts_.size(); ++p) {
    if (muted_parts_ & (1u << p)) continue;  // it does not follow commands: it holds by itself
    // a new session of this part (its peer restarted), not yet seen by the loop: it was never commanded by it
    if (new_session_ & part_joints(p)) continue;
    const int base = offset_[p];
    const int n = parts_[p]->dof();
    part_command_.dof = n;
    for (int i = 0; i < n; ++i) {
      part_command_.position_si[i] = command.position_si[base + i];
      part_command_.velocity_si[i] = command.velocity_si[base + i];
      part_command_.acceleration_si[i] = command.acceleration_si[base + i];
    }
    ok = parts_[p]->write_command(part_command_) && ok;
  }
  return ok;
}

int CompositeDriver::read_ball_observations(BallObservation* out, int max_count) noexcept {
  int total = 0;
  for (auto& part : parts_) {
    if (total >= max_count) break;
    total += part->read_ball_observations(out + total, max_count - total);
  }
  return total;
}

LinkHealth CompositeDriver::link_health() const noexcept {
  LinkHealth health;
  for (const auto& part : parts_) {
    const LinkHealth h = part->link_health();
    health.up = health.up && h.up;
    health.peer_restarts += h.peer_restarts;
  }
  return health;
}

}  // namespace robot_rt::control
