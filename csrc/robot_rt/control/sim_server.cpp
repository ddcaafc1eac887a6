#include "sim_server.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <stdexcept>

#include "servo.hpp"
#include "udp_send.hpp"

namespace robot_rt::control {

using protocol::MessageType;
using protocol::SequenceTracker;
using protocol::Status;

namespace {
std::int64_t checked_timeout_ns(double s) {
  if (!(s > 0.0) || s > 3600.0) throw std::invalid_argument("session_timeout_s: expected seconds in (0, 3600]");
  return static_cast<std::int64_t>(s * 1e9);
}

// The digest of the configured limits (0 while the vectors do not all have one value per joint: the constructor
// then refuses the config anyway).
std::uint64_t config_limits_digest(const SimServerConfig& c) {
  const std::size_t n = c.position_min.size();
  for (const auto* v : {&c.position_max, &c.velocity_limit, &c.acceleration_limit, &c.jerk_limit})
    if (v->size() != n) return 0;
  return protocol::limits_digest(n, c.position_min.data(), c.position_max.data(), c.velocity_limit.data(),
                                 c.acceleration_limit.data(), c.jerk_limit.data(), c.geometry_digest);
}
}  // namespace

SimRobotServer::SimRobotServer(SimServerConfig config)
    : config_(std::move(config)),
      session_(config_.key, protocol::Role::kRobotServer, protocol::Role::kController,
               static_cast<std::uint16_t>(config_.position_min.size()),
               config_.rate_hz > 0.0 ? static_cast<std::uint32_t>(1e6 / config_.rate_hz) : 0,
               checked_timeout_ns(config_.session_timeout_s), config_limits_digest(config_)) {
  require_key_unless_loopback(config_.key, {&config_.host});
  start_stopped_pending_ = config_.start_stopped;
  if (config_.key.empty() && config_.allow_remote)
    throw std::invalid_argument(
        "allow_remote: remote controllers need a shared key (--key-file); unauthenticated mode is loopback only");
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
  if (config_.jerk_limit.empty())
    throw std::invalid_argument("jerk_limit: expected " + std::to_string(dof_) +
                                " values (the handshake's joint-limits digest covers them), got none");
  check(config_.jerk_limit, "jerk_limit", true);
  if (!(config_.rate_hz >= 1.0 && config_.rate_hz <= 20000.0))
    throw std::invalid_argument("rate_hz: expected 1..20000, got " + std::to_string(config_.rate_hz));
  if (!(config_.tracking_time_constant_s > 0.0) || !(config_.command_delay_s >= 0.0) ||
      !(config_.command_timeout_s > 0.0))
    throw std::invalid_argument("tracking_time_constant_s, command_timeout_s must be > 0 and command_delay_s >= 0");
  if (!(config_.servo_damping > 0.0 && config_.servo_damping <= 10.0))
    throw std::invalid_argument("servo_damping: expected a damping ratio in (0, 10], got " +
                                std::to_string(config_.servo_damping));
  if (config_.command_delay_s * config_.rate_hz >= kDelaySlots - 2)
    throw std::invalid_argument("command_delay_s: at most " + std::to_string((kDelaySlots - 2) / config_.rate_hz) +
                                " s at this rate");
  if (!config_.initial_position.empty()) check(config_.initial_position, "initial_position", false);
  for (int i = 0; i < dof_; ++i)
    following_limit_[i] =
        servo_error_bound(config_.acceleration_limit[i], 1.0 / config_.tracking_time_constant_s, config_.servo_damping);
  for (int i = 0; i < dof_; ++i) {
    const double q0 = config_.initial_position.empty() ? 0.0 : config_.initial_position[i];
    q_[i] = std::clamp(q0, config_.position_min[i], config_.position_max[i]);
    target_q_[i] = q_[i];
  }
}

SimRobotServer::~SimRobotServer() { stop(); }

void SimRobotServer::start() {
  if (running_.load()) return;
  socket_.open(config_.host, port_ != 0 ? port_ : config_.port);  // a restart keeps its port
  port_ = socket_.local_port();
  session_id_ = session::random_session_id();
  sequence_ = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    has_controller_ = false;
    // A (re)started robot counts its stops from 0 (docs/protocol.md "Robot-side stops"), unless its last stop was
    // never acknowledged: then it comes up with that stop (count 1, unacknowledged), so that a restart of the bridge
    // does not clear a stop nobody recovered (a real bridge keeps this across power cycles, or comes up stopped)
    const bool unacknowledged = resync_required_ || faults_.fault || faults_.estop || start_stopped_pending_;
    start_stopped_pending_ = false;
    robot_stops_ = unacknowledged ? 1u : 0u;
    resync_required_ = unacknowledged;
    stop_input_before_ = false;
    // a (re)started robot comes up holding where it is, at rest: its drives braked while the server was down, and the
    // last session's target is no command of any live session (without this, a restart after a crash drove the
    // joints on to the dead session's last target)
    for (int i = 0; i < dof_; ++i) {
      target_q_[i] = q_[i];
      target_v_[i] = 0.0;
      v_[i] = 0.0;
    }
  }
  session_.start(session_id_);
  last_command_sequence_ = 0;
  last_command_stamp_ns_ = 0;
  last_command_receive_ns_ = 0;
  last_command_ns_ = 0;
  pending_count_ = 0;
  holding_ = true;
  stop_requested_.store(false);
  running_.store(true);
  started_in_pid_ = ::getpid();
  thread_ = std::thread([this] { run(); });
}

void SimRobotServer::stop(bool goodbye) {
  if (!running_.load()) return;
  if (::getpid() != started_in_pid_) {
    // A forked child's copy (its destructor, or stop() there): the robot thread and the controller's session are the
    // parent's. No join (no such thread here), no goodbye, no own stop; the handle is leaked (destroying a joinable
    // one would terminate) and only this copy's descriptor is closed.
    if (thread_.joinable()) new std::thread(std::move(thread_));
    socket_.close();
    running_.store(false);
    return;
  }
  stop_requested_.store(true);
  if (thread_.joinable()) thread_.join();
  {
    // Shut down (or crashed, as the tests model it) while the live session commanded it: the drives brake, a stop the
    // robot takes by itself, which a restart keeps until a recovery acknowledges it (start()). A real bridge, where a
    // crash runs no code, comes up stopped unless it persisted a clean shutdown while holding.
    std::lock_guard<std::mutex> lock(mutex_);
    if (has_controller_ && following_commands()) begin_own_stop();
  }
  if (has_controller_) {  // the thread is joined: this thread owns the session now
    if (goodbye) {
      tx_packet_.header.type = MessageType::kGoodbye;
      tx_packet_.goodbye.reason = protocol::kGoodbyeStop;
      send_to(tx_packet_, controller_, monotonic_ns());
    }
    session_.end_session();
    std::lock_guard<std::mutex> lock(mutex_);
    has_controller_ = false;
  }
  socket_.close();
  running_.store(false);
}

SimServerSnapshot SimRobotServer::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  SimServerSnapshot s;
  s.stamp_ns = state_stamp_ns_;
  s.ticks = ticks_;
  s.status = static_cast<std::uint16_t>((holding_ ? protocol::kStatusHolding : 0) |
                                        (clamped_ ? protocol::kStatusClamped : 0) |
                                        (faults_.fault ? protocol::kStatusFault : 0) |
                                        (faults_.estop ? protocol::kStatusEstop : 0) |
                                        (resync_required_ ? protocol::kStatusStopUnacknowledged : 0));
  s.position.assign(q_, q_ + dof_);
  s.velocity.assign(v_, v_ + dof_);
  s.target.assign(target_q_, target_q_ + dof_);
  s.has_controller = has_controller_;
  if (has_controller_) s.controller = endpoint_string(controller_);
  return s;
}

void SimRobotServer::servo_targets(double* position, double* velocity, bool* holding) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int i = 0; i < dof_; ++i) {
    position[i] = target_q_[i];
    velocity[i] = target_v_[i];
  }
  *holding = holding_;
}

void SimRobotServer::set_measured_state(const double* position, const double* velocity, std::uint64_t limit_hits) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int i = 0; i < dof_; ++i) {
    q_[i] = position[i];
    v_[i] = velocity[i];
    const double lo = config_.position_min[i], hi = config_.position_max[i];
    max_position_excess_ = std::max({max_position_excess_, lo - q_[i], q_[i] - hi});
    max_velocity_ratio_ = std::max(max_velocity_ratio_, std::fabs(v_[i]) / config_.velocity_limit[i]);
  }
  if (limit_hits) hard_stops_.fetch_add(limit_hits, std::memory_order_relaxed);
}

void SimRobotServer::set_faults(const SimServerFaults& faults) {
  if (faults.measured_joint >= dof_ || faults.stuck_joint >= dof_)
    throw std::invalid_argument("measured_joint, stuck_joint: expected -1 (none) or a joint index below " +
                                std::to_string(dof_));
  std::lock_guard<std::mutex> lock(mutex_);
  // a stop input that starts is acted on at the next step even if it has ended by then (a pulse between two steps)
  if (faults.fault && !faults_.fault) stop_edge_status_ |= protocol::kStatusFault;
  if (faults.estop && !faults_.estop) stop_edge_status_ |= protocol::kStatusEstop;
  faults_ = faults;
}

SimServerFaults SimRobotServer::faults() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return faults_;
}

void SimRobotServer::shift_state_stamps(std::int64_t shift_ns, int count) {
  if (count < 0) throw std::invalid_argument("count: expected >= 0 states");
  std::lock_guard<std::mutex> lock(mutex_);
  stamp_shift_ns_ = shift_ns;
  stamp_shift_states_ = count;
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
  const HmacSha256Key& key = packet.header.type == MessageType::kHelloAck ? session_.reply_key() : session_.tx_key();
  return stamp_and_send(packet, session_id_, sequence_, key, tx_buffer_, socket_, to, now_ns, counters_);
}

void SimRobotServer::send_state(std::int64_t now_ns) noexcept {
  if (!has_controller_) return;
  tx_packet_.header.type = MessageType::kJointState;
  protocol::JointState& s = tx_packet_.state;
  s.dof = static_cast<std::uint16_t>(dof_);
  s.echo_command_sequence = last_command_sequence_;
  s.echo_command_stamp_ns = last_command_stamp_ns_;
  s.echo_command_receive_ns = last_command_receive_ns_;
  std::int64_t stamp_ns = now_ns;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // an e-stop or fault the robot acted on since the last state is reported even if it has cleared since (a pulse
    // between two states, e.g. with reply_on_command): the controller must learn that the robot stopped itself
    s.status = static_cast<std::uint16_t>((holding_ ? protocol::kStatusHolding : 0) |
                                          (clamped_ ? protocol::kStatusClamped : 0) |
                                          (faults_.fault ? protocol::kStatusFault : 0) |
                                          (faults_.estop ? protocol::kStatusEstop : 0) |
                                          (resync_required_ ? protocol::kStatusStopUnacknowledged : 0) |
                                          unsent_stop_status_);
    unsent_stop_status_ = 0;
    s.robot_stops = robot_stops_;
    for (int i = 0; i < dof_; ++i) {
      s.position[i] = q_[i];
      s.velocity[i] = v_[i];
    }
    if (faults_.measured_joint >= 0) s.position[faults_.measured_joint] = faults_.measured_value;
    if (stamp_shift_states_ > 0) {
      stamp_ns += stamp_shift_ns_;
      --stamp_shift_states_;
    }
  }
  if (send_to(tx_packet_, controller_, stamp_ns)) states_sent_.fetch_add(1, std::memory_order_relaxed);
}

void SimRobotServer::on_session_change(bool live, std::int64_t now_ns) noexcept {
  // A session ended or a new one went live: nothing queued by the previous one is applied, the robot brakes to
  // a hold where it is until the live session commands it.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    has_controller_ = live;
    if (live) controller_ = session_.peer();
    pending_count_ = 0;
    if (!holding_) hold_events_.fetch_add(1, std::memory_order_relaxed);
    holding_ = true;
    for (int i = 0; i < dof_; ++i) {
      target_q_[i] = q_[i];
      target_v_[i] = 0.0;
    }
  }
  last_command_ns_ = 0;
  last_command_sequence_ = 0;
  last_command_stamp_ns_ = 0;
  last_command_receive_ns_ = 0;
  (void)now_ns;
}

void SimRobotServer::publish_session_counters() noexcept {
  handshakes_.store(session_.handshakes(), std::memory_order_relaxed);
  sessions_.store(session_.sessions(), std::memory_order_relaxed);
  sessions_expired_.store(session_.sessions_expired(), std::memory_order_relaxed);
  goodbyes_.store(session_.goodbyes(), std::memory_order_relaxed);
  pending_evicted_.store(session_.pending_evicted(), std::memory_order_relaxed);
}

void SimRobotServer::handle(const sockaddr_in& from, std::size_t size, std::int64_t now_ns) noexcept {
  using V = session::ServerSession::Verdict;
  Status status = Status::kOk;
  const bool had_session = session_.has_session();
  const std::uint64_t gaps_before = session_.tracker().gaps();
  V verdict;
  try {
    verdict = session_.receive(from, rx_buffer_, size, now_ns, rx_packet_, tx_packet_, status);
  } catch (...) {  // getrandom failed for a new handshake (not after boot): the hello goes unanswered
    bump(counters_.socket_errors);
    return;
  }
  if (had_session && !session_.has_session() && verdict != V::kGoodbye) on_session_change(false, now_ns);  // expired
  if (had_session && (!session_.has_session() || verdict == V::kAcceptedNewSession)) lost_before_ += gaps_before;
  counters_.rx_lost.store(lost_before_ + (session_.has_session() ? session_.tracker().gaps() : 0),
                          std::memory_order_relaxed);
  publish_session_counters();
  switch (verdict) {
    case V::kRejected: return counters_.reject(status);
    case V::kHelloRefused: hellos_refused_.fetch_add(1, std::memory_order_relaxed); return;
    case V::kUnexpectedSource: return bump(counters_.rx_unexpected_source);
    case V::kUnexpectedSession: return bump(counters_.rx_unexpected_session);
    case V::kMismatch: return bump(counters_.rx_mismatch);
    case V::kLimitsMismatch:  // no handshake; the ack only tells the controller our digest
      hellos_limits_refused_.fetch_add(1, std::memory_order_relaxed);
      send_to(tx_packet_, from, now_ns);
      return;
    case V::kDuplicate: return bump(counters_.rx_duplicate);
    case V::kStale: return bump(counters_.rx_stale);
    case V::kAck:
      bump(counters_.rx_accepted);
      send_to(tx_packet_, from, now_ns);  // under the pending session's server->client key (key confirmation)
      return;
    case V::kGoodbye:
      bump(counters_.rx_accepted);
      if (rx_packet_.goodbye.reason == protocol::kGoodbyeStopped) {  // the controller ended in a stop nobody recovered
        std::lock_guard<std::mutex> lock(mutex_);
        goodbye_stops_.fetch_add(1, std::memory_order_relaxed);
        begin_own_stop();  // it stays a stop for the next controller too: only a recovery moves the robot again
      }
      on_session_change(false, now_ns);
      return;
    case V::kAcceptedNewSession:
      if (session_.sessions() > 1) bump(counters_.peer_restarts);  // a new controller session after an earlier one
      on_session_change(true, now_ns);
      break;
    case V::kAccepted: break;
  }
  const protocol::Header& h = rx_packet_.header;
  if (h.type == MessageType::kHeartbeat) {
    bump(counters_.rx_accepted);
    tx_packet_.header.type = MessageType::kHeartbeat;
    tx_packet_.heartbeat.echo_sequence = h.sequence;
    tx_packet_.heartbeat.echo_stamp_ns = h.stamp_ns;
    tx_packet_.heartbeat.echo_receive_ns = static_cast<std::uint64_t>(now_ns);
    send_to(tx_packet_, from, now_ns);
    if (verdict == V::kAcceptedNewSession) send_state(now_ns);  // the session is live: the stream starts
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
  p.robot_stops_acknowledged = c.robot_stops_acknowledged;
  ++pending_count_;
  last_command_sequence_ = h.sequence;
  last_command_stamp_ns_ = h.stamp_ns;
  last_command_receive_ns_ = static_cast<std::uint64_t>(now_ns);
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
    handle(from, static_cast<std::size_t>(n), budget > 0 ? monotonic_ns() : now_ns);  // t2: its receive time
  }
}

bool SimRobotServer::resync_required() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return resync_required_;
}

// A command the robot may apply: it acknowledges every own stop so far (sent after the controller's recovery, which
// restarts the command where the robot holds).
bool SimRobotServer::acceptable(const PendingCommand& p) const noexcept {
  return p.robot_stops_acknowledged == robot_stops_;
}

// The start of an own stop (counted once: a fault that lasts is one stop; a second one, even before the first was
// acknowledged, is another).
void SimRobotServer::begin_own_stop() noexcept {
  own_stops_.fetch_add(1, std::memory_order_relaxed);
  ++robot_stops_;
  resync_required_ = true;
  hold_own_stop();
}

void SimRobotServer::hold_own_stop() noexcept {
  pending_count_ = 0;  // sent before the controller knew of the stop: never applied
  brake_to_hold();
}

// The robot brakes to a hold where it is (once per hold: a hold already under way keeps its target).
void SimRobotServer::brake_to_hold() noexcept {
  if (!holding_) {
    hold_events_.fetch_add(1, std::memory_order_relaxed);
    for (int i = 0; i < dof_; ++i) target_q_[i] = q_[i];  // brake where we are
  }
  holding_ = true;
  for (int i = 0; i < dof_; ++i) target_v_[i] = 0.0;
}

void SimRobotServer::step(std::int64_t now_ns, double dt_s) noexcept {
  bool applied = false;
  bool faulted = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool stopped = faults_.fault || faults_.estop;
    if (stop_edge_status_ != 0 || (stopped && !stop_input_before_)) begin_own_stop();
    unsent_stop_status_ |= stop_edge_status_;  // (reported in the next state)
    stop_edge_status_ = 0;
    if (stopped) hold_own_stop();  // (while it lasts, nothing queued is ever applied)
    stop_input_before_ = stopped;
  }
  while (pending_count_ > 0 && pending_[pending_head_].due_ns <= now_ns) {
    const PendingCommand& p = pending_[pending_head_];
    std::lock_guard<std::mutex> lock(mutex_);
    faulted = faults_.fault || faults_.estop;
    if (!faulted && acceptable(p)) {  // a robot in FAULT or e-stop, or not resynchronised, ignores commands
      resync_required_ = false;
      for (int i = 0; i < dof_; ++i) {
        target_q_[i] = p.position[i];
        target_v_[i] = p.velocity[i];
      }
      applied = true;
    } else if (!faulted) {
      commands_ignored_until_resync_.fetch_add(1, std::memory_order_relaxed);
    }
    pending_head_ = (pending_head_ + 1) % kDelaySlots;
    --pending_count_;
  }
  if (applied) commands_applied_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mutex_);
  faulted = faults_.fault || faults_.estop;
  unsent_stop_status_ |= static_cast<std::uint16_t>((faults_.fault ? protocol::kStatusFault : 0) |
                                                    (faults_.estop ? protocol::kStatusEstop : 0));
  const bool timed_out = last_command_ns_ == 0 ||
                         now_ns - last_command_ns_ > static_cast<std::int64_t>(config_.command_timeout_s * 1e9);
  if (faulted) {
    brake_to_hold();
  } else if (timed_out && pending_count_ == 0) {
    // The live session stopped commanding a robot that followed its commands: that hold is a stop of the robot's own
    // (counted, acknowledged only by a recovery), else commands the network delayed past it would move the robot
    // again, with no recovery, after the controller had stopped sending (docs/protocol.md, "Robot-side stops")
    if (following_commands()) {
      timeout_stops_.fetch_add(1, std::memory_order_relaxed);
      begin_own_stop();
    } else {
      brake_to_hold();
    }
  } else if (applied) {
    holding_ = false;
  }
  if (config_.external_dynamics) {  // the joints move in another thread (set_measured_state)
    state_stamp_ns_ = now_ns;
    ++ticks_;
    return;
  }
  const double tau = config_.tracking_time_constant_s;
  for (int i = 0; i < dof_; ++i) {
    // the drive saturates above the trajectory's limits (servo.hpp: 2 A, 1.2 V), as a real drive must to track a
    // trajectory that uses the full A: saturated at A itself, a servo braking behind a full-A stop cannot close its
    // error and overshoots the commanded rest by far more than its linear bound (0.08 rad measured on arm_j5)
    const double amax = kServoDriveAccelerationFactor * config_.acceleration_limit[i];
    const double vmax = kServoDriveVelocityFactor * config_.velocity_limit[i];
    double a = (target_q_[i] - q_[i]) / (tau * tau) + 2.0 * config_.servo_damping * (target_v_[i] - v_[i]) / tau;
    a = std::clamp(a, -amax, amax);
    double v = std::clamp(v_[i] + a * dt_s, -vmax, vmax);
    double q = q_[i] + v * dt_s;
    const double lo = config_.position_min[i], hi = config_.position_max[i];
    if (q < lo || q > hi) {
      hard_stops_.fetch_add(1, std::memory_order_relaxed);
      q = std::clamp(q, lo, hi);
      v = 0.0;
    }
    if (i == faults_.stuck_joint) {  // blocked: it stays where it is whatever the servo does
      q = q_[i];
      v = 0.0;
    }
    q_[i] = q;
    v_[i] = v;
    // a joint at rest while the servo pulls it beyond its error bound is blocked (a drive's following-error
    // supervision): after 3 ticks the robot holds where it is, as for any own stop. At rest the servo's pull is
    // towards target + 2 zeta tau v_target (a stale velocity feed-forward shifts its rest point; that is no block)
    const double pull = target_q_[i] + 2.0 * config_.servo_damping * tau * target_v_[i] - q;
    const bool blocked = std::fabs(v) <= 1e-3 * config_.velocity_limit[i] && std::fabs(pull) > following_limit_[i];
    blocked_ticks_[i] = blocked ? blocked_ticks_[i] + 1 : 0;
    if (blocked_ticks_[i] >= 3) {
      blocked_holds_.fetch_add(1, std::memory_order_relaxed);
      begin_own_stop();
      // the blocked joint holds where it was blocked, also when a hold was already under way (a joint jammed while
      // it overshot that hold's target would otherwise be pulled back there, with no command, once freed)
      target_q_[i] = q_[i];
      target_v_[i] = 0.0;
      for (int k = 0; k < dof_; ++k) blocked_ticks_[k] = 0;
    }
    max_position_excess_ = std::max({max_position_excess_, lo - q, q - hi});
    max_velocity_ratio_ = std::max(max_velocity_ratio_, std::fabs(v) / config_.velocity_limit[i]);
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
      const std::uint64_t gaps = session_.tracker().gaps();
      if (session_.expire(now)) {  // the live controller fell silent: the robot holds, a new session may start
        lost_before_ += gaps;
        on_session_change(false, now);
        publish_session_counters();
      }
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
