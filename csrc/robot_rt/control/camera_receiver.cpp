#include "camera_receiver.hpp"

#include <unistd.h>

#include <stdexcept>

#include "udp_send.hpp"

namespace robot_rt::control {

using protocol::MessageType;
using protocol::Status;
using Verdict = session::ClientSession::Verdict;

CameraReceiver::CameraReceiver(CameraReceiverConfig config)
    : config_(std::move(config)),
      session_(config_.key, protocol::Role::kCameraSubscriber, protocol::Role::kCameraServer, 0) {
  if (!make_address(config_.camera_host, config_.camera_port, camera_addr_) || config_.camera_port == 0)
    throw std::invalid_argument("camera: expected an IPv4 host and a non-zero port, got '" + config_.camera_host +
                                ":" + std::to_string(config_.camera_port) + "'");
  if (config_.subscribe_interval_ns <= 0 || config_.hello_interval_ns <= 0 || config_.session_timeout_ns <= 0)
    throw std::invalid_argument("subscribe_interval_ns, hello_interval_ns, session_timeout_ns: expected positive values");
  require_key_unless_loopback(config_.key, {&config_.camera_host, &config_.bind_host});
}

void CameraReceiver::open() {
  socket_.open(config_.bind_host, config_.bind_port);
  opened_in_pid_ = ::getpid();
  sequence_ = 0;
  previous_server_session_ = 0;
  head_ = count_ = 0;
  begin_handshake(monotonic_ns());
}

void CameraReceiver::close() noexcept {
  if (::getpid() == opened_in_pid_ && socket_.is_open() && session_.established()) {
    tx_packet_.header.type = MessageType::kGoodbye;
    tx_packet_.goodbye.reason = protocol::kGoodbyeStop;
    send(tx_packet_, session_.tx_key(), monotonic_ns());
  }
  session_.end();
  established_.store(false);
  socket_.close();
}

bool CameraReceiver::send(protocol::Packet& packet, const HmacSha256Key& key, std::int64_t now_ns) noexcept {
  return stamp_and_send(packet, session_.session_id(), sequence_, key, tx_buffer_, socket_, camera_addr_, now_ns,
                        counters_);
}

void CameraReceiver::begin_handshake(std::int64_t now_ns) noexcept {
  try {
    session_.begin(now_ns);
  } catch (...) {
    bump(counters_.socket_errors);
    last_hello_ns_ = now_ns;
    return;
  }
  established_.store(false, std::memory_order_relaxed);
  send_hello(now_ns);
}

void CameraReceiver::send_hello(std::int64_t now_ns) noexcept {
  session_.fill_hello(tx_packet_, 0);
  send(tx_packet_, session_.hello_key(), now_ns);
  last_hello_ns_ = now_ns;
}

void CameraReceiver::send_heartbeat(std::int64_t now_ns) noexcept {
  tx_packet_.header.type = MessageType::kHeartbeat;
  tx_packet_.heartbeat = protocol::Heartbeat{};
  send(tx_packet_, session_.tx_key(), now_ns);
  last_heartbeat_ns_ = now_ns;
}

void CameraReceiver::clock_sample(std::uint64_t t1, std::uint64_t t2, std::uint64_t t3, std::int64_t t4) noexcept {
  if (t1 == 0) return;  // no echo in it
  clock_.add_wire(t1, t2, t3, t4);
  if (!clock_.valid()) return;
  clock_offset_.store(clock_.offset_ns(), std::memory_order_relaxed);
  best_delay_.store(clock_.best_delay_ns(), std::memory_order_relaxed);
}

bool CameraReceiver::surely_fresh(std::uint64_t stamp_ns, std::int64_t now_ns, std::int64_t& sent_ns) noexcept {
  if (!clock_.valid() || stamp_ns > (1ull << 62)) {  // not datable (yet): no round trip has bounded the delay
    bump(counters_.rx_late);
    return false;
  }
  const std::int64_t local_stamp = static_cast<std::int64_t>(stamp_ns) - clock_.offset_ns();
  const std::int64_t slack = clock_.uncertainty_ns(now_ns) + clock_.config().margin_ns;
  const std::int64_t age = now_ns - local_stamp;
  if (age + slack > config_.late_threshold_ns) {
    bump(counters_.rx_late);
    return false;
  }
  if (age < -slack) {
    bump(counters_.rx_future);
    return false;
  }
  sent_ns = local_stamp < now_ns ? local_stamp : now_ns;
  return true;
}

void CameraReceiver::poll(std::int64_t now_ns) noexcept {
  if (!socket_.is_open()) return;
  // At most kCameraDatagramsPerPoll per tick: each authenticated frame costs an HMAC check (~3.6 us at 716 bytes),
  // and a flood of forged ones must not eat the loop's tick (the kernel queue keeps the rest for the next ticks).
  for (int budget = 0; budget < kCameraDatagramsPerPoll; ++budget) {
    sockaddr_in from;
    const long n = socket_.receive(buffer_, sizeof(buffer_), from);
    if (n == UdpSocket::kNothing) break;
    if (n == UdpSocket::kError) {
      bump(counters_.socket_errors);
      break;
    }
    bump(counters_.rx_datagrams);
    if (!same_endpoint(from, camera_addr_)) {
      bump(counters_.rx_unexpected_source);
      continue;
    }
    if (static_cast<std::size_t>(n) > protocol::kMaxPacketBytes) {
      counters_.reject(Status::kTooLong);
      continue;
    }
    Status status = Status::kOk;
    const Verdict verdict = session_.receive(buffer_, static_cast<std::size_t>(n), packet_, status);
    switch (verdict) {
      case Verdict::kRejected: counters_.reject(status); continue;
      case Verdict::kNoSession: bump(counters_.rx_no_session); continue;
      case Verdict::kUnexpectedSession: bump(counters_.rx_unexpected_session); continue;
      case Verdict::kStaleAck: bump(counters_.rx_stale_ack); continue;
      case Verdict::kMismatch: bump(counters_.rx_mismatch); continue;
      case Verdict::kLimitsMismatch: bump(counters_.rx_mismatch); continue;  // a robot-link verdict: not for cameras
      case Verdict::kDuplicate: bump(counters_.rx_duplicate); continue;
      case Verdict::kStale: bump(counters_.rx_stale); continue;
      case Verdict::kEstablished: {
        bump(counters_.rx_accepted);
        const std::uint32_t server_session = session_.server_session_id();
        if (previous_server_session_ != 0 && previous_server_session_ != server_session) bump(counters_.peer_restarts);
        previous_server_session_ = server_session;
        sessions_.fetch_add(1, std::memory_order_relaxed);
        established_.store(true, std::memory_order_relaxed);
        last_rx_ns_ = now_ns;
        clock_.reset();  // a new session, perhaps a new camera clock: the hello round trip is the first sample
        clock_sample(packet_.hello_ack.echo_hello_stamp_ns, packet_.hello_ack.hello_receive_ns, packet_.header.stamp_ns,
                     now_ns);
        send_heartbeat(now_ns);  // key confirmation: the camera streams to us from now on
        continue;
      }
      case Verdict::kAccepted: break;
    }
    last_rx_ns_ = now_ns;
    if (packet_.header.type == MessageType::kGoodbye) {  // the camera is shutting down: subscribe again
      bump(counters_.rx_accepted);
      begin_handshake(now_ns);
      continue;
    }
    if (packet_.header.type == MessageType::kHeartbeat) {  // the camera's echo of one of ours: a round trip
      bump(counters_.rx_accepted);
      const protocol::Heartbeat& h = packet_.heartbeat;
      if (h.echo_sequence != 0 && h.echo_sequence <= sequence_)
        clock_sample(h.echo_stamp_ns, h.echo_receive_ns, packet_.header.stamp_ns, now_ns);
      continue;
    }
    if (packet_.header.type != MessageType::kBallObservations) {
      bump(counters_.rx_wrong_type);
      continue;
    }
    std::int64_t sent_ns = now_ns;
    if (!surely_fresh(packet_.header.stamp_ns, now_ns, sent_ns)) continue;  // held back (or not datable yet): not used
    bump(counters_.rx_accepted);
    frames_.fetch_add(1, std::memory_order_relaxed);
    last_frame_ns_.store(now_ns, std::memory_order_relaxed);
    const protocol::BallObservations& balls = packet_.balls;
    for (int i = 0; i < balls.count; ++i) {
      const protocol::BallObservation& o = balls.obs[i];
      BallObservation b;
      // dated from the frame's send time on our clock (a late poll does not make it look newer)
      const std::int64_t age = o.capture_age_ns > static_cast<std::uint64_t>(sent_ns) ? sent_ns
                                                                                      : static_cast<std::int64_t>(o.capture_age_ns);
      b.stamp_ns = sent_ns - age;
      b.camera_id = balls.camera_id;
      b.frame = o.frame_id;
      b.position_m[0] = o.position_m[0];
      b.position_m[1] = o.position_m[1];
      b.position_m[2] = o.position_m[2];
      b.confidence = o.confidence;
      if (count_ == kQueueCapacity) {  // drop the oldest
        head_ = (head_ + 1) % kQueueCapacity;
        --count_;
        overflows_.fetch_add(1, std::memory_order_relaxed);
      }
      queue_[(head_ + count_) % kQueueCapacity] = b;
      ++count_;
      detections_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  counters_.rx_lost.store(session_.tracker().gaps(), std::memory_order_relaxed);
  if (session_.established()) {
    if (now_ns - last_rx_ns_ > config_.session_timeout_ns) {
      begin_handshake(now_ns);
    } else if (now_ns - last_heartbeat_ns_ >= config_.subscribe_interval_ns) {
      send_heartbeat(now_ns);
    }
  } else if (now_ns - last_hello_ns_ >= config_.hello_interval_ns) {
    if (now_ns - session_.begun_ns() > config_.session_timeout_ns)
      begin_handshake(now_ns);
    else
      send_hello(now_ns);
  }
}

int CameraReceiver::read(BallObservation* out, int max_count) noexcept {
  poll(monotonic_ns());
  int n = 0;
  while (n < max_count && count_ > 0) {
    out[n++] = queue_[head_];
    head_ = (head_ + 1) % kQueueCapacity;
    --count_;
  }
  return n;
}

}  // namespace robot_rt::control
