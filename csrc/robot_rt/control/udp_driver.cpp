#include "udp_driver.hpp"

#include <algorithm>
#include <stdexcept>

#include "udp_send.hpp"

namespace robot_rt::control {

using protocol::MessageType;
using protocol::SequenceTracker;
using protocol::Status;

namespace {
// The minimum one-way offset may creep up by this much per second of wall time, so the late detector
// follows clock drift between hosts and a lasting change of route (a step up is absorbed in seconds).
constexpr double kOffsetCreepPerSecond = 2e-3;
}  // namespace

UdpDriver::UdpDriver(UdpDriverConfig config) : config_(std::move(config)) {
  if (config_.dof < 1 || config_.dof > std::min<int>(kMaxDof, protocol::kMaxJoints))
    throw std::invalid_argument("dof: expected 1.." + std::to_string(std::min<int>(kMaxDof, protocol::kMaxJoints)) +
                                ", got " + std::to_string(config_.dof));
  if (config_.port == 0 || !make_address(config_.host, config_.port, server_addr_))
    throw std::invalid_argument("host/port: expected an IPv4 address and a non-zero port, got '" + config_.host + ":" +
                                std::to_string(config_.port) + "'");
  if (config_.link_timeout_ns <= 0 || config_.hello_interval_ns <= 0 || config_.late_threshold_ns <= 0)
    throw std::invalid_argument("link_timeout_ns, hello_interval_ns, late_threshold_ns: expected positive values");
  if (!config_.key.empty()) key_.set(reinterpret_cast<const std::uint8_t*>(config_.key.data()), config_.key.size());
  if (config_.camera_port != 0) {
    CameraReceiverConfig cam;
    cam.camera_host = config_.camera_host;
    cam.camera_port = config_.camera_port;
    cam.bind_host = config_.bind_host;
    cam.key = config_.key;
    camera_ = std::make_unique<CameraReceiver>(cam);
  }
}

UdpDriver::~UdpDriver() { on_stop(); }

void UdpDriver::on_start() {
  if (socket_.is_open()) return;
  socket_.open(config_.bind_host, config_.bind_port);
  if (camera_) camera_->open();
  session_id_ = random_session_id();
  sequence_ = 0;
  tracker_.reset();
  have_offset_ = false;
  fresh_ = false;
  last_echo_sequence_ = 0;
  last_state_rx_ns_ = 0;
  connected_.store(false);
  send_hello(monotonic_ns());
}

void UdpDriver::on_stop() {
  socket_.close();
  if (camera_) camera_->close();
  connected_.store(false);
}

bool UdpDriver::send_packet(protocol::Packet& packet, std::int64_t now_ns) noexcept {
  return stamp_and_send(packet, session_id_, sequence_, key_, tx_buffer_, socket_, server_addr_, now_ns, counters_);
}

void UdpDriver::send_hello(std::int64_t now_ns) noexcept {
  tx_packet_.header.type = MessageType::kHello;
  tx_packet_.hello.role = static_cast<std::uint16_t>(protocol::Role::kController);
  tx_packet_.hello.dof = static_cast<std::uint16_t>(config_.dof);
  tx_packet_.hello.period_us = 0;
  if (send_packet(tx_packet_, now_ns)) hellos_.fetch_add(1, std::memory_order_relaxed);
  last_hello_ns_ = now_ns;
}

void UdpDriver::record_rtt(std::uint64_t echo_sequence, std::uint64_t echo_stamp_ns, std::int64_t now_ns) noexcept {
  // Only echoes of our own session's newer commands count (a restarted server echoes nothing: 0).
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

void UdpDriver::accept_state(const protocol::JointState& s, std::int64_t remote_stamp_ns, std::int64_t now_ns) noexcept {
  latest_.stamp_ns = remote_stamp_ns + offset_min_ns_;  // remote measurement time on the local clock
  if (latest_.stamp_ns > now_ns) latest_.stamp_ns = now_ns;
  latest_.dof = s.dof;
  latest_.flags = 0;
  if (s.status & protocol::kStatusEstop) latest_.flags |= kStateEstopInput;
  if (s.status & protocol::kStatusFault) latest_.flags |= kStateFault;
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
  for (int budget = 0; budget < 256; ++budget) {
    sockaddr_in from;
    const long n = socket_.receive(rx_buffer_, sizeof(rx_buffer_), from);
    if (n == UdpSocket::kNothing) break;
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
    const Status status =
        protocol::decode(rx_buffer_, static_cast<std::size_t>(n), key_.empty() ? nullptr : &key_, rx_packet_);
    if (status != Status::kOk) {
      counters_.reject(status);
      continue;
    }
    const MessageType type = rx_packet_.header.type;
    if (type != MessageType::kJointState && type != MessageType::kHello && type != MessageType::kHeartbeat) {
      bump(counters_.rx_wrong_type);
      continue;
    }
    if ((type == MessageType::kJointState && rx_packet_.state.dof != config_.dof) ||
        (type == MessageType::kHello && (rx_packet_.hello.role != static_cast<std::uint16_t>(protocol::Role::kRobotServer) ||
                                         rx_packet_.hello.dof != config_.dof))) {
      bump(counters_.rx_mismatch);
      continue;
    }
    const bool had_session = tracker_.started();
    const auto verdict = tracker_.check(rx_packet_.header.session_id, rx_packet_.header.sequence);
    if (verdict == SequenceTracker::Verdict::kDuplicate) {
      bump(counters_.rx_duplicate);
      continue;
    }
    if (verdict == SequenceTracker::Verdict::kStale) {
      bump(counters_.rx_stale);
      continue;
    }
    const std::int64_t remote_stamp = static_cast<std::int64_t>(rx_packet_.header.stamp_ns);
    if (verdict == SequenceTracker::Verdict::kNewSession) {
      if (had_session) bump(counters_.peer_restarts);
      have_offset_ = false;
      last_echo_sequence_ = 0;
    }
    // Late detection: one-way offset (clock offset + delay) against its recent minimum.
    const std::int64_t offset = now_ns - remote_stamp;
    if (!have_offset_) {
      offset_min_ns_ = offset;
      offset_seen_ns_ = now_ns;
      have_offset_ = true;
    } else {
      offset_min_ns_ += static_cast<std::int64_t>(kOffsetCreepPerSecond * double(now_ns - offset_seen_ns_));
      offset_seen_ns_ = now_ns;
      if (offset < offset_min_ns_) offset_min_ns_ = offset;
    }
    if (offset - offset_min_ns_ > config_.late_threshold_ns) {
      bump(counters_.rx_late);
      continue;
    }
    bump(counters_.rx_accepted);
    switch (type) {
      case MessageType::kJointState:
        record_rtt(rx_packet_.state.echo_command_sequence, rx_packet_.state.echo_command_stamp_ns, now_ns);
        accept_state(rx_packet_.state, remote_stamp, now_ns);
        break;
      case MessageType::kHeartbeat:
        record_rtt(rx_packet_.heartbeat.echo_sequence, rx_packet_.heartbeat.echo_stamp_ns, now_ns);
        break;
      default:  // the server's hello: the link is up, states follow
        break;
    }
  }
  counters_.rx_lost.store(tracker_.gaps(), std::memory_order_relaxed);
}

bool UdpDriver::read_state(JointState& out) noexcept {
  if (!socket_.is_open()) return false;
  const std::int64_t now = monotonic_ns();
  drain(now);
  if (now - last_state_rx_ns_ > config_.link_timeout_ns) {
    connected_.store(false, std::memory_order_relaxed);
    if (now - last_hello_ns_ >= config_.hello_interval_ns) send_hello(now);
  }
  if (!fresh_) return false;
  out = latest_;
  fresh_ = false;
  return true;
}

bool UdpDriver::write_command(const JointCommand& command) noexcept {
  if (!socket_.is_open()) return false;
  if (command.dof != config_.dof) {
    bump(counters_.tx_invalid);
    return false;
  }
  tx_packet_.header.type = MessageType::kJointCommand;
  protocol::JointCommand& c = tx_packet_.command;
  c.dof = static_cast<std::uint16_t>(command.dof);
  c.mode = protocol::kModePositionVelocity;
  for (int i = 0; i < command.dof; ++i) {
    c.position[i] = command.position_si[i];
    c.velocity[i] = command.velocity_si[i];
  }
  const bool ok = send_packet(tx_packet_, monotonic_ns());  // the encoder refuses non-finite values
  if (ok) commands_.fetch_add(1, std::memory_order_relaxed);
  return ok;
}

int UdpDriver::read_ball_observations(BallObservation* out, int max_count) noexcept {
  if (!camera_ || max_count <= 0) return 0;
  return camera_->read(out, max_count);
}

}  // namespace robot_rt::control
