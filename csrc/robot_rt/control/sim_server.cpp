#include "sim_server.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "udp_send.hpp"

namespace robot_rt::control {

using protocol::MessageType;
using protocol::SequenceTracker;
using protocol::Status;

SimRobotServer::SimRobotServer(SimServerConfig config) : config_(std::move(config)) {
  dof_ = static_cast<int>(config_.position_min.size());
  if (dof_ < 1 || dof_ > static_cast<int>(protocol::kMaxJoints))
    throw std::invalid_argument("position_min: expected 1.." + std::to_string(protocol::kMaxJoints) + " joints, got " +
                                std::to_string(dof_));
  auto check = [&](const std::vector<double>& v, const char* name, bool positive) {
    if (static_cast<int>(v.size()) != dof_)
      throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(dof_) + " values, got " +
                                  std::to_string(v.size()));
    for (double x : v)
      if (!std::isfinite(x) || (positive && x <= 0.0))
        throw std::invalid_argument(std::string(name) + ": expected finite" + (positive ? " positive" : "") + " values");
  };
  check(config_.position_max, "position_max", false);
  check(config_.velocity_limit, "velocity_limit", true);
  check(config_.acceleration_limit, "acceleration_limit", true);
  for (int i = 0; i < dof_; ++i)
    if (!(config_.position_min[i] < config_.position_max[i]))
      throw std::invalid_argument("position_min/position_max: min must be below max for joint " + std::to_string(i));
  if (!(config_.rate_hz >= 1.0 && config_.rate_hz <= 20000.0))
    throw std::invalid_argument("rate_hz: expected 1..20000, got " + std::to_string(config_.rate_hz));
  if (!(config_.tracking_time_constant_s > 0.0) || !(config_.command_delay_s >= 0.0) ||
      !(config_.command_timeout_s > 0.0) || !(config_.controller_timeout_s > 0.0))
    throw std::invalid_argument(
        "tracking_time_constant_s, command_timeout_s, controller_timeout_s must be > 0 and command_delay_s >= 0");
  if (config_.command_delay_s * config_.rate_hz >= kDelaySlots - 2)
    throw std::invalid_argument("command_delay_s: at most " + std::to_string((kDelaySlots - 2) / config_.rate_hz) +
                                " s at this rate");
  if (!config_.initial_position.empty()) check(config_.initial_position, "initial_position", false);
  for (int i = 0; i < dof_; ++i) {
    const double q0 = config_.initial_position.empty() ? 0.0 : config_.initial_position[i];
    q_[i] = std::clamp(q0, config_.position_min[i], config_.position_max[i]);
    target_q_[i] = q_[i];
  }
  if (!config_.key.empty()) key_.set(reinterpret_cast<const std::uint8_t*>(config_.key.data()), config_.key.size());
}

SimRobotServer::~SimRobotServer() { stop(); }

void SimRobotServer::start() {
  if (running_.load()) return;
  socket_.open(config_.host, port_ != 0 ? port_ : config_.port);  // a restart keeps its port
  port_ = socket_.local_port();
  session_id_ = random_session_id();
  sequence_ = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    has_controller_ = false;
  }
  controller_tracker_.reset();
  last_command_sequence_ = 0;
  last_command_stamp_ns_ = 0;
  last_command_ns_ = 0;
  pending_count_ = 0;
  holding_ = true;
  stop_requested_.store(false);
  running_.store(true);
  thread_ = std::thread([this] { run(); });
}

void SimRobotServer::stop() {
  if (!running_.load()) return;
  stop_requested_.store(true);
  if (thread_.joinable()) thread_.join();
  socket_.close();
  running_.store(false);
}

SimServerSnapshot SimRobotServer::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  SimServerSnapshot s;
  s.stamp_ns = state_stamp_ns_;
  s.ticks = ticks_;
  s.status = static_cast<std::uint16_t>((holding_ ? protocol::kStatusHolding : 0) |
                                        (clamped_ ? protocol::kStatusClamped : 0));
  s.position.assign(q_, q_ + dof_);
  s.velocity.assign(v_, v_ + dof_);
  s.target.assign(target_q_, target_q_ + dof_);
  s.has_controller = has_controller_;
  if (has_controller_) s.controller = endpoint_string(controller_);
  return s;
}

double SimRobotServer::max_position_excess() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return max_position_excess_;
}

double SimRobotServer::max_velocity_ratio() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return max_velocity_ratio_;
}

bool SimRobotServer::send_to(protocol::Packet& packet, const sockaddr_in& to, std::int64_t now_ns) noexcept {
  return stamp_and_send(packet, session_id_, sequence_, key_, tx_buffer_, socket_, to, now_ns, counters_);
}

void SimRobotServer::send_state(std::int64_t now_ns) noexcept {
  if (!has_controller_) return;
  tx_packet_.header.type = MessageType::kJointState;
  protocol::JointState& s = tx_packet_.state;
  s.dof = static_cast<std::uint16_t>(dof_);
  s.echo_command_sequence = last_command_sequence_;
  s.echo_command_stamp_ns = last_command_stamp_ns_;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    s.status = static_cast<std::uint16_t>((holding_ ? protocol::kStatusHolding : 0) |
                                          (clamped_ ? protocol::kStatusClamped : 0));
    for (int i = 0; i < dof_; ++i) {
      s.position[i] = q_[i];
      s.velocity[i] = v_[i];
    }
  }
  if (send_to(tx_packet_, controller_, now_ns)) states_sent_.fetch_add(1, std::memory_order_relaxed);
}

void SimRobotServer::handle(const sockaddr_in& from, std::int64_t now_ns) noexcept {
  const protocol::Header& h = rx_packet_.header;
  if (h.type == MessageType::kHello) {
    if (rx_packet_.hello.role != static_cast<std::uint16_t>(protocol::Role::kController)) {
      bump(counters_.rx_wrong_type);
      return;
    }
    if (rx_packet_.hello.dof != dof_) {
      bump(counters_.rx_mismatch);
      return;
    }
    const bool same = has_controller_ && same_endpoint(from, controller_);
    const bool active = has_controller_ && now_ns - controller_seen_ns_ < std::int64_t(config_.controller_timeout_s * 1e9);
    if (active && !same) {
      hellos_refused_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (same && controller_tracker_.session_id() == h.session_id) {
      const auto verdict = controller_tracker_.check(h.session_id, h.sequence);
      if (verdict == SequenceTracker::Verdict::kDuplicate) return bump(counters_.rx_duplicate);
      if (verdict == SequenceTracker::Verdict::kStale) return bump(counters_.rx_stale);
    } else {
      if (has_controller_) bump(counters_.peer_restarts);  // a new controller session takes over
      controller_tracker_.reset();
      controller_tracker_.check(h.session_id, h.sequence);
      last_command_sequence_ = 0;
      last_command_stamp_ns_ = 0;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);  // snapshot() reads these from another thread
      has_controller_ = true;
      controller_ = from;
    }
    controller_seen_ns_ = now_ns;
    bump(counters_.rx_accepted);
    tx_packet_.header.type = MessageType::kHello;
    tx_packet_.hello.role = static_cast<std::uint16_t>(protocol::Role::kRobotServer);
    tx_packet_.hello.dof = static_cast<std::uint16_t>(dof_);
    tx_packet_.hello.period_us = static_cast<std::uint32_t>(1e6 / config_.rate_hz);
    send_to(tx_packet_, from, now_ns);
    send_state(now_ns);
    return;
  }
  // Everything else must come from the registered controller and its session.
  if (!has_controller_ || !same_endpoint(from, controller_)) return bump(counters_.rx_unexpected_source);
  if (h.session_id != controller_tracker_.session_id()) return bump(counters_.rx_unexpected_session);
  const auto verdict = controller_tracker_.check(h.session_id, h.sequence);
  if (verdict == SequenceTracker::Verdict::kDuplicate) return bump(counters_.rx_duplicate);
  if (verdict == SequenceTracker::Verdict::kStale) return bump(counters_.rx_stale);
  counters_.rx_lost.store(controller_tracker_.gaps(), std::memory_order_relaxed);
  controller_seen_ns_ = now_ns;
  if (h.type == MessageType::kHeartbeat) {
    bump(counters_.rx_accepted);
    tx_packet_.header.type = MessageType::kHeartbeat;
    tx_packet_.heartbeat.echo_sequence = h.sequence;
    tx_packet_.heartbeat.echo_stamp_ns = h.stamp_ns;
    send_to(tx_packet_, from, now_ns);
    return;
  }
  if (h.type != MessageType::kJointCommand) return bump(counters_.rx_wrong_type);
  const protocol::JointCommand& c = rx_packet_.command;
  if (c.dof != dof_) return bump(counters_.rx_mismatch);
  bump(counters_.rx_accepted);
  if (pending_count_ == kDelaySlots) {  // cannot happen at sane rates (delay < slots ticks): drop the oldest
    pending_head_ = (pending_head_ + 1) % kDelaySlots;
    --pending_count_;
  }
  PendingCommand& p = pending_[(pending_head_ + pending_count_) % kDelaySlots];
  bool outside = false;
  for (int i = 0; i < dof_; ++i) {
    const double lo = config_.position_min[i], hi = config_.position_max[i], vmax = config_.velocity_limit[i];
    if (c.position[i] < lo || c.position[i] > hi || std::fabs(c.velocity[i]) > vmax) outside = true;
    p.position[i] = std::clamp(c.position[i], lo, hi);
    p.velocity[i] = std::clamp(c.velocity[i], -vmax, vmax);
  }
  if (outside) out_of_limits_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    clamped_ = outside;
  }
  p.due_ns = now_ns + static_cast<std::int64_t>(config_.command_delay_s * 1e9);
  ++pending_count_;
  last_command_sequence_ = h.sequence;
  last_command_stamp_ns_ = h.stamp_ns;
  last_command_ns_ = now_ns;
  if (config_.reply_on_command) send_state(now_ns);
}

void SimRobotServer::drain(std::int64_t now_ns) noexcept {
  for (int budget = 0; budget < 256; ++budget) {
    sockaddr_in from;
    const long n = socket_.receive(rx_buffer_, sizeof(rx_buffer_), from);
    if (n == UdpSocket::kNothing) return;
    if (n == UdpSocket::kError) {
      bump(counters_.socket_errors);
      return;
    }
    bump(counters_.rx_datagrams);
    if (!config_.allow_remote && !is_loopback(from)) {
      bump(counters_.rx_unexpected_source);
      continue;
    }
    if (static_cast<std::size_t>(n) > protocol::kMaxPacketBytes) {
      counters_.reject(Status::kTooLong);
      continue;
    }
    const Status status =
        protocol::decode(rx_buffer_, static_cast<std::size_t>(n), key_.empty() ? nullptr : &key_, rx_packet_);
    if (status != Status::kOk) {
      counters_.reject(status);
      continue;
    }
    handle(from, now_ns);
  }
}

void SimRobotServer::step(std::int64_t now_ns, double dt_s) noexcept {
  bool applied = false;
  while (pending_count_ > 0 && pending_[pending_head_].due_ns <= now_ns) {
    const PendingCommand& p = pending_[pending_head_];
    std::lock_guard<std::mutex> lock(mutex_);
    for (int i = 0; i < dof_; ++i) {
      target_q_[i] = p.position[i];
      target_v_[i] = p.velocity[i];
    }
    pending_head_ = (pending_head_ + 1) % kDelaySlots;
    --pending_count_;
    applied = true;
  }
  if (applied) commands_applied_.fetch_add(1, std::memory_order_relaxed);
  const bool timed_out = last_command_ns_ == 0 ||
                         now_ns - last_command_ns_ > static_cast<std::int64_t>(config_.command_timeout_s * 1e9);
  std::lock_guard<std::mutex> lock(mutex_);
  if (timed_out && pending_count_ == 0) {
    if (!holding_) {
      hold_events_.fetch_add(1, std::memory_order_relaxed);
      for (int i = 0; i < dof_; ++i) target_q_[i] = q_[i];  // brake where we are
    }
    holding_ = true;
    for (int i = 0; i < dof_; ++i) target_v_[i] = 0.0;
  } else if (applied) {
    holding_ = false;
  }
  const double tau = config_.tracking_time_constant_s;
  for (int i = 0; i < dof_; ++i) {
    const double amax = config_.acceleration_limit[i], vmax = config_.velocity_limit[i];
    double a = (target_q_[i] - q_[i]) / (tau * tau) + 2.0 * (target_v_[i] - v_[i]) / tau;
    a = std::clamp(a, -amax, amax);
    double v = std::clamp(v_[i] + a * dt_s, -vmax, vmax);
    double q = q_[i] + v * dt_s;
    const double lo = config_.position_min[i], hi = config_.position_max[i];
    if (q < lo || q > hi) {
      hard_stops_.fetch_add(1, std::memory_order_relaxed);
      q = std::clamp(q, lo, hi);
      v = 0.0;
    }
    q_[i] = q;
    v_[i] = v;
    max_position_excess_ = std::max({max_position_excess_, lo - q, q - hi});
    max_velocity_ratio_ = std::max(max_velocity_ratio_, std::fabs(v) / vmax);
  }
  state_stamp_ns_ = now_ns;
  ++ticks_;
}

void SimRobotServer::run() noexcept {
  const std::int64_t period_ns = static_cast<std::int64_t>(1e9 / config_.rate_hz);
  const double dt_s = 1.0 / config_.rate_hz;
  std::int64_t next = monotonic_ns();
  while (!stop_requested_.load(std::memory_order_relaxed)) {
    std::int64_t now = monotonic_ns();
    if (now >= next) {
      drain(now);
      step(now, dt_s);
      if (!config_.reply_on_command || last_command_ns_ == 0 || now - last_command_ns_ > 2 * period_ns)
        send_state(now);
      next += period_ns;
      if (now - next > 10 * period_ns) {  // far behind (machine stalled): resynchronise, counted
        overruns_.fetch_add(1, std::memory_order_relaxed);
        next = now + period_ns;
      }
      continue;
    }
    if (socket_.wait_readable(std::min<std::int64_t>(next - now, 50'000'000))) drain(monotonic_ns());
  }
}

}  // namespace robot_rt::control
