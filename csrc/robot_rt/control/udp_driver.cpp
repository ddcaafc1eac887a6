#include "udp_driver.hpp"

#include <unistd.h>

#include <algorithm>
#include <stdexcept>

#include "udp_send.hpp"

namespace robot_rt::control {

using protocol::MessageType;
using protocol::Status;
using Verdict = session::ClientSession::Verdict;

UdpDriver::UdpDriver(UdpDriverConfig config)
    : config_(std::move(config)),
      session_(config_.key, protocol::Role::kController, protocol::Role::kRobotServer,
               static_cast<std::uint16_t>(config_.dof), config_.limits_digest),
      clock_(config_.clock) {
  if (config_.dof < 1 || config_.dof > std::min<int>(kMaxDof, protocol::kMaxJoints))
    throw std::invalid_argument("dof: expected 1.." + std::to_string(std::min<int>(kMaxDof, protocol::kMaxJoints)) +
                                ", got " + std::to_string(config_.dof));
  if (config_.port == 0 || !make_address(config_.host, config_.port, server_addr_))
    throw std::invalid_argument("host/port: expected an IPv4 address and a non-zero port, got '" + config_.host + ":" +
                                std::to_string(config_.port) + "'");
  if (config_.link_timeout_ns <= 0 || config_.hello_interval_ns <= 0 || config_.late_threshold_ns <= 0 ||
      config_.session_timeout_ns <= 0 || config_.heartbeat_interval_ns <= 0)
    throw std::invalid_argument(
        "link_timeout_ns, hello_interval_ns, session_timeout_ns, heartbeat_interval_ns, late_threshold_ns: expected "
        "positive values");
  if (config_.camera_port != 0)
    require_key_unless_loopback(config_.key, {&config_.host, &config_.bind_host, &config_.camera_host});
  else
    require_key_unless_loopback(config_.key, {&config_.host, &config_.bind_host});
  if (config_.camera_port != 0) {
    CameraReceiverConfig cam;
    cam.camera_host = config_.camera_host;
    cam.camera_port = config_.camera_port;
    cam.bind_host = config_.bind_host;
    cam.key = session::camera_link_key(config_.key);  // the camera never holds the robot link's key
    camera_ = std::make_unique<CameraReceiver>(cam);
  }
}

UdpDriver::~UdpDriver() { on_stop(); }

void UdpDriver::set_limits_digest(std::uint64_t digest) {
  if (socket_.is_open()) throw std::logic_error("UdpDriver: the limits digest can only be set while the driver is stopped");
  config_.limits_digest = digest;
  session_.set_limits_digest(digest);
}

void UdpDriver::on_start() {
  if (socket_.is_open()) return;
  if (config_.limits_digest == 0)  // fail closed: no robot may be commanded against limits nobody stated
    throw std::runtime_error(
        "UdpDriver: no robot description given to the UDP driver (its joint-limits digest is not set): run it under "
        "RealTimeLoop, which sets it from the loop's robot description, or pass "
        "limits_digest=robot_rt.robot.limits_digest(robot)");
  socket_.open(config_.bind_host, config_.bind_port);
  owner_pid_ = ::getpid();
  ending_in_stop_ = false;
  if (camera_) camera_->open();
  sequence_ = 0;
  previous_server_session_ = 0;
  new_session_flag_ = false;
  fresh_ = false;
  last_state_rx_ns_ = 0;
  connected_.store(false);
  begin_handshake(monotonic_ns());
}

void UdpDriver::on_stop() {
  // a forked child's copy (its destructor): the session is the parent's; closing this copy's descriptors is all
  const bool forked_copy = owner_pid_ != 0 && ::getpid() != owner_pid_;
  if (!forked_copy && socket_.is_open() && session_.established())
    send_goodbye(ending_in_stop_ ? protocol::kGoodbyeStopped : protocol::kGoodbyeStop, monotonic_ns());
  ending_in_stop_ = false;
  session_.end();
  session_state_.store(0);
  socket_.close();
  if (camera_) camera_->close();  // (a forked copy's says no goodbye either)
  connected_.store(false);
}

void UdpDriver::begin_handshake(std::int64_t now_ns) noexcept {
  try {
    session_.begin(now_ns);
  } catch (...) {  // getrandom failed (not after boot): no handshake this time, retried at the next interval
    bump(counters_.socket_errors);
    last_hello_ns_ = now_ns;
    return;
  }
  clock_.reset();
  last_echo_sequence_ = 0;
  last_rx_sequence_ = last_rx_stamp_ns_ = 0;
  last_rx_receive_ns_ = 0;
  session_state_.store(1, std::memory_order_relaxed);
  send_hello(now_ns);
}

bool UdpDriver::send_session_packet(protocol::Packet& packet, std::int64_t now_ns) noexcept {
  return stamp_and_send(packet, session_.session_id(), sequence_, session_.tx_key(), tx_buffer_, socket_, server_addr_,
                        now_ns, counters_);
}

void UdpDriver::send_hello(std::int64_t now_ns) noexcept {
  session_.fill_hello(tx_packet_, 0);
  if (stamp_and_send(tx_packet_, session_.session_id(), sequence_, session_.hello_key(), tx_buffer_, socket_,
                     server_addr_, now_ns, counters_))
    hellos_.fetch_add(1, std::memory_order_relaxed);
  last_hello_ns_ = now_ns;
}

void UdpDriver::send_heartbeat(std::int64_t now_ns) noexcept {
  tx_packet_.header.type = MessageType::kHeartbeat;
  tx_packet_.heartbeat.echo_sequence = last_rx_sequence_;
  tx_packet_.heartbeat.echo_stamp_ns = last_rx_stamp_ns_;
  tx_packet_.heartbeat.echo_receive_ns = static_cast<std::uint64_t>(last_rx_receive_ns_);
  send_session_packet(tx_packet_, now_ns);
  last_heartbeat_ns_ = now_ns;
}

void UdpDriver::send_goodbye(std::uint32_t reason, std::int64_t now_ns) noexcept {
  tx_packet_.header.type = MessageType::kGoodbye;
  tx_packet_.goodbye.reason = reason;
  send_session_packet(tx_packet_, now_ns);
}

void UdpDriver::record_rtt(std::uint64_t echo_sequence, std::uint64_t echo_stamp_ns, std::int64_t now_ns) noexcept {
  // Only echoes of our own session's newer commands count (a robot echoes nothing before our first command: 0).
  if (echo_sequence == 0 || echo_sequence <= last_echo_sequence_ || echo_sequence > sequence_) return;
  last_echo_sequence_ = echo_sequence;
  const std::int64_t rtt = now_ns - static_cast<std::int64_t>(echo_stamp_ns);
  if (rtt < 0 || rtt > 10'000'000'000LL) return;  // not a stamp of ours
  const std::uint64_t count = rtt_count_.load(std::memory_order_relaxed);
  rtt_last_.store(rtt, std::memory_order_relaxed);
  if (count == 0 || rtt < rtt_min_.load(std::memory_order_relaxed)) rtt_min_.store(rtt, std::memory_order_relaxed);
  if (count == 0 || rtt > rtt_max_.load(std::memory_order_relaxed)) rtt_max_.store(rtt, std::memory_order_relaxed);
  rtt_sum_.fetch_add(rtt, std::memory_order_relaxed);
  rtt_count_.store(count + 1, std::memory_order_relaxed);
}

void UdpDriver::clock_sample(std::uint64_t t1, std::uint64_t t2, std::uint64_t t3, std::int64_t t4) noexcept {
  using S = ClockOffsetEstimator::Sample;
  const S verdict = clock_.add_wire(t1, t2, t3, t4);
  clock_samples_.fetch_add(1, std::memory_order_relaxed);
  if (verdict == S::kResynced) clock_resyncs_.fetch_add(1, std::memory_order_relaxed);
  if (verdict != S::kAccepted && verdict != S::kFirst && verdict != S::kResynced)
    clock_rejected_.fetch_add(1, std::memory_order_relaxed);
  clock_offset_.store(clock_.offset_ns(), std::memory_order_relaxed);
  clock_uncertainty_.store(clock_.uncertainty_ns(t4), std::memory_order_relaxed);
}

void UdpDriver::on_established(std::int64_t now_ns) noexcept {
  const std::uint32_t server_session = session_.server_session_id();
  const std::uint64_t count = sessions_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (count > 1) new_session_flag_ = true;  // the loop learns that the session changed under it
  if (previous_server_session_ != 0 && previous_server_session_ != server_session) bump(counters_.peer_restarts);
  previous_server_session_ = server_session;
  server_session_.store(server_session, std::memory_order_relaxed);
  session_state_.store(2, std::memory_order_relaxed);
  const protocol::HelloAck& a = rx_packet_.hello_ack;
  clock_sample(a.echo_hello_stamp_ns, a.hello_receive_ns, rx_packet_.header.stamp_ns, now_ns);
  last_rx_ns_ = now_ns;
  last_rx_sequence_ = rx_packet_.header.sequence;
  last_rx_stamp_ns_ = rx_packet_.header.stamp_ns;
  last_rx_receive_ns_ = now_ns;
  send_heartbeat(now_ns);  // key confirmation: the robot takes the session live on this
}

void UdpDriver::accept_state(const protocol::JointState& s, std::int64_t local_stamp_ns, std::int64_t now_ns) noexcept {
  latest_.stamp_ns = local_stamp_ns;
  latest_.dof = s.dof;
  // The e-stop and fault bits of every state accepted since the last read_state (not only the newest): an e-stop
  // pulse between two ticks still reaches the loop (a robot that stopped itself is muted, docs/safety.md)
  latest_.flags = fresh_ ? (latest_.flags & (kStateEstopInput | kStateFault)) : 0u;
  if (s.status & protocol::kStatusEstop) latest_.flags |= kStateEstopInput;
  if (s.status & protocol::kStatusFault) latest_.flags |= kStateFault;
  robot_stops_received_ = s.robot_stops;
  robot_stop_unacknowledged_ = (s.status & protocol::kStatusStopUnacknowledged) != 0;
  for (int i = 0; i < s.dof; ++i) {
    latest_.position_si[i] = s.position[i];
    latest_.velocity_si[i] = s.velocity[i];
  }
  fresh_ = true;
  last_state_rx_ns_ = now_ns;
  connected_.store(true, std::memory_order_relaxed);
  status_.store(s.status, std::memory_order_relaxed);
  states_.fetch_add(1, std::memory_order_relaxed);
}

void UdpDriver::drain(std::int64_t now_ns) noexcept {
  // At most kLinkDatagramsPerDrain per tick (an HMAC check each, a key derivation for a hello_ack): bounds the time
  // a flood of forged datagrams takes from the tick; the kernel queue keeps the rest for the next ticks.
  for (int budget = 0; budget < kLinkDatagramsPerDrain; ++budget) {
    sockaddr_in from;
    const long n = socket_.receive(rx_buffer_, sizeof(rx_buffer_), from);
    if (n == UdpSocket::kNothing) break;
    if (budget > 0) now_ns = monotonic_ns();  // each datagram's own receive time (t4 of its round trip)
    if (n == UdpSocket::kError) {
      bump(counters_.socket_errors);
      break;
    }
    bump(counters_.rx_datagrams);
    if (!same_endpoint(from, server_addr_)) {
      bump(counters_.rx_unexpected_source);
      continue;
    }
    if (static_cast<std::size_t>(n) > protocol::kMaxPacketBytes) {
      counters_.reject(Status::kTooLong);
      continue;
    }
    Status status = Status::kOk;
    const Verdict verdict = session_.receive(rx_buffer_, static_cast<std::size_t>(n), rx_packet_, status);
    switch (verdict) {
      case Verdict::kRejected:
        counters_.reject(status);
        if (status == Status::kBadVersion) peer_version_.store(rx_buffer_[4], std::memory_order_relaxed);
        continue;
      case Verdict::kNoSession: bump(counters_.rx_no_session); continue;
      case Verdict::kUnexpectedSession: bump(counters_.rx_unexpected_session); continue;
      case Verdict::kStaleAck: bump(counters_.rx_stale_ack); continue;
      case Verdict::kMismatch: bump(counters_.rx_mismatch); continue;
      case Verdict::kLimitsMismatch:  // the robot's joint limits are not the ones the loop enforces: no session
        peer_limits_digest_.store(rx_packet_.hello_ack.limits_digest, std::memory_order_relaxed);
        limits_mismatches_.fetch_add(1, std::memory_order_relaxed);
        continue;
      case Verdict::kDuplicate: bump(counters_.rx_duplicate); continue;
      case Verdict::kStale: bump(counters_.rx_stale); continue;
      case Verdict::kEstablished:
        bump(counters_.rx_accepted);
        on_established(now_ns);
        continue;
      case Verdict::kAccepted: break;
    }
    const MessageType type = rx_packet_.header.type;
    if (type != MessageType::kJointState && type != MessageType::kHeartbeat && type != MessageType::kGoodbye) {
      bump(counters_.rx_wrong_type);
      continue;
    }
    if (type == MessageType::kJointState && rx_packet_.state.dof != config_.dof) {
      bump(counters_.rx_mismatch);
      continue;
    }
    last_rx_ns_ = now_ns;
    last_rx_sequence_ = rx_packet_.header.sequence;
    last_rx_stamp_ns_ = rx_packet_.header.stamp_ns;
    last_rx_receive_ns_ = now_ns;
    if (type == MessageType::kGoodbye) {  // the robot ended the session (shutting down): handshake again
      bump(counters_.rx_accepted);
      sessions_lost_.fetch_add(1, std::memory_order_relaxed);
      begin_handshake(now_ns);
      continue;
    }
    if (type == MessageType::kHeartbeat) {
      bump(counters_.rx_accepted);
      const protocol::Heartbeat& hb = rx_packet_.heartbeat;
      if (hb.echo_sequence != 0 && hb.echo_sequence <= sequence_ && hb.echo_receive_ns != 0)
        clock_sample(hb.echo_stamp_ns, hb.echo_receive_ns, rx_packet_.header.stamp_ns, now_ns);
      record_rtt(hb.echo_sequence, hb.echo_stamp_ns, now_ns);
      continue;
    }
    const protocol::JointState& s = rx_packet_.state;
    if (s.echo_command_sequence > last_echo_sequence_ && s.echo_command_sequence <= sequence_ &&
        s.echo_command_receive_ns != 0)
      clock_sample(s.echo_command_stamp_ns, s.echo_command_receive_ns, rx_packet_.header.stamp_ns, now_ns);
    record_rtt(s.echo_command_sequence, s.echo_command_stamp_ns, now_ns);
    std::int64_t local_stamp = now_ns;
    switch (clock_.classify(rx_packet_.header.stamp_ns, now_ns, config_.late_threshold_ns, &local_stamp)) {
      case ClockOffsetEstimator::Freshness::kFuture: bump(counters_.rx_future); continue;
      case ClockOffsetEstimator::Freshness::kLate: bump(counters_.rx_late); continue;
      case ClockOffsetEstimator::Freshness::kFresh: break;
    }
    bump(counters_.rx_accepted);
    accept_state(s, local_stamp, now_ns);
  }
  counters_.rx_lost.store(session_.tracker().gaps(), std::memory_order_relaxed);
  if (clock_.valid()) clock_uncertainty_.store(clock_.uncertainty_ns(now_ns), std::memory_order_relaxed);
}

bool UdpDriver::read_state(JointState& out) noexcept {
  if (!socket_.is_open()) return false;
  const std::int64_t now = monotonic_ns();
  drain(now);
  if (now - last_state_rx_ns_ > config_.link_timeout_ns) connected_.store(false, std::memory_order_relaxed);
  if (session_.established()) {
    if (now - last_rx_ns_ > config_.session_timeout_ns) {
      // The robot is silent: give the session up (a goodbye in case it still holds it, so a new handshake is
      // not refused until its own timeout), then handshake again.
      send_goodbye(protocol::kGoodbyeSessionLost, now);
      sessions_lost_.fetch_add(1, std::memory_order_relaxed);
      begin_handshake(now);
    } else if (now - last_heartbeat_ns_ >= config_.heartbeat_interval_ns) {
      send_heartbeat(now);
    }
  } else if (now - last_hello_ns_ >= config_.hello_interval_ns) {
    if (session_.state() == session::ClientSession::State::kIdle || now - session_.begun_ns() > config_.session_timeout_ns)
      begin_handshake(now);  // a fresh nonce now and then, so a lost ack never strands the handshake
    else
      send_hello(now);
  }
  if (!fresh_) return false;
  out = latest_;
  // The stop count belongs to one robot server session (a restarted robot counts from 0 again). The first robot this
  // driver connects to is adopted with its count (the operator starts it); another server session (a restarted or
  // another robot) starts unacknowledged at 0, and a later start against the same session keeps the acknowledged
  // count, so a stop between two runs latches at the first tick.
  const std::uint32_t server = server_session_.load(std::memory_order_relaxed);
  if (!robot_stops_connected_ || server != robot_stops_server_session_) {
    // a robot whose last stop no controller acknowledged (kStatusStopUnacknowledged) is not adopted with it: that
    // stop stays a stop for this controller too (count - 1: anything but the count)
    const std::uint32_t adopted = robot_stop_unacknowledged_ ? robot_stops_received_ - 1u : robot_stops_received_;
    robot_stops_acknowledged_ = robot_stops_connected_ ? 0u : adopted;
    robot_stops_server_session_ = server;
    robot_stops_connected_ = true;
    robot_stops_delivered_ = robot_stops_acknowledged_;
  }
  if (robot_stops_received_ != robot_stops_delivered_) {  // one event per stop (several may come in one read)
    const std::uint32_t stops = robot_stops_received_ - robot_stops_delivered_;  // (mod 2^32)
    robot_stop_events_ += stops;
    if (!(out.flags & (kStateEstopInput | kStateFault))) robot_stop_events_unexplained_ += stops;
  }
  robot_stops_delivered_ = robot_stops_received_;
  if (robot_stops_delivered_ != robot_stops_acknowledged_) out.flags |= kStateRobotStopped;
  if (new_session_flag_) {  // on the first state delivered since the session changed (never lost in a drain)
    out.flags |= kStateNewSession;
    new_session_flag_ = false;
  }
  fresh_ = false;
  return true;
}

bool UdpDriver::write_command(const JointCommand& command) noexcept {
  if (!socket_.is_open()) return false;
  if (command.dof != config_.dof) {
    bump(counters_.tx_invalid);
    return false;
  }
  // A session established since the last delivered state is sent nothing until that state (carrying
  // kStateNewSession) has reached the loop, which then stops and mutes in the same tick: a new session is commanded
  // only after a recover(). (The handshake completes inside read_state, before this tick's write.)
  if (!session_.established() || new_session_flag_) {
    bump(counters_.tx_no_session);
    return false;
  }
  tx_packet_.header.type = MessageType::kJointCommand;
  protocol::JointCommand& c = tx_packet_.command;
  c.dof = static_cast<std::uint16_t>(command.dof);
  c.mode = protocol::kModePositionVelocity;
  c.robot_stops_acknowledged = robot_stops_acknowledged_;
  for (int i = 0; i < command.dof; ++i) {
    c.position[i] = command.position_si[i];
    c.velocity[i] = command.velocity_si[i];
  }
  const bool ok = send_session_packet(tx_packet_, monotonic_ns());  // the encoder refuses non-finite values
  if (ok) commands_.fetch_add(1, std::memory_order_relaxed);
  return ok;
}

int UdpDriver::read_ball_observations(BallObservation* out, int max_count) noexcept {
  if (!camera_ || max_count <= 0) return 0;
  return camera_->read(out, max_count);
}

}  // namespace robot_rt::control
