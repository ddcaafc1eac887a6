#include "camera_receiver.hpp"

#include <stdexcept>

namespace robot_rt::control {

using protocol::MessageType;
using protocol::Status;

CameraReceiver::CameraReceiver(CameraReceiverConfig config) : config_(std::move(config)) {
  if (!make_address(config_.camera_host, config_.camera_port, camera_addr_) || config_.camera_port == 0)
    throw std::invalid_argument("camera: expected an IPv4 host and a non-zero port, got '" + config_.camera_host +
                                ":" + std::to_string(config_.camera_port) + "'");
  if (!config_.key.empty())
    key_.set(reinterpret_cast<const std::uint8_t*>(config_.key.data()), config_.key.size());
}

void CameraReceiver::open() {
  socket_.open(config_.bind_host, config_.bind_port);
  session_id_ = random_session_id();
  sequence_ = 0;
  tracker_.reset();
  head_ = count_ = 0;
  subscribe(monotonic_ns());
}

void CameraReceiver::close() noexcept { socket_.close(); }

void CameraReceiver::subscribe(std::int64_t now_ns) noexcept {
  protocol::Packet hello;
  hello.header.type = MessageType::kHello;
  hello.header.session_id = session_id_;
  hello.header.sequence = ++sequence_;
  hello.header.stamp_ns = static_cast<std::uint64_t>(now_ns);
  hello.hello.role = static_cast<std::uint16_t>(protocol::Role::kCameraSubscriber);
  std::uint8_t out[protocol::kMaxPacketBytes];
  const std::size_t n = protocol::encode(hello, key_.empty() ? nullptr : &key_, out, sizeof(out));
  if (n > 0 && socket_.send(out, n, camera_addr_)) {
    bump(counters_.tx_datagrams);
  } else {
    bump(counters_.tx_errors);
  }
  last_subscribe_ns_ = now_ns;
}

void CameraReceiver::poll(std::int64_t now_ns) noexcept {
  if (!socket_.is_open()) return;
  for (int budget = 0; budget < 256; ++budget) {
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
    const Status status = protocol::decode(buffer_, static_cast<std::size_t>(n), key_.empty() ? nullptr : &key_, packet_);
    if (status != Status::kOk) {
      counters_.reject(status);
      continue;
    }
    const auto verdict = tracker_.check(packet_.header.session_id, packet_.header.sequence);
    if (verdict == protocol::SequenceTracker::Verdict::kDuplicate) {
      bump(counters_.rx_duplicate);
      continue;
    }
    if (verdict == protocol::SequenceTracker::Verdict::kStale) {
      bump(counters_.rx_stale);
      continue;
    }
    if (verdict == protocol::SequenceTracker::Verdict::kNewSession && frames_.load(std::memory_order_relaxed) > 0)
      bump(counters_.peer_restarts);
    if (packet_.header.type == MessageType::kHello) {
      bump(counters_.rx_accepted);  // the camera's answer to our subscription
      continue;
    }
    if (packet_.header.type != MessageType::kBallObservations) {
      bump(counters_.rx_wrong_type);
      continue;
    }
    bump(counters_.rx_accepted);
    frames_.fetch_add(1, std::memory_order_relaxed);
    last_frame_ns_.store(now_ns, std::memory_order_relaxed);
    const protocol::BallObservations& balls = packet_.balls;
    for (int i = 0; i < balls.count; ++i) {
      const protocol::BallObservation& o = balls.obs[i];
      BallObservation b;
      const std::int64_t age = o.capture_age_ns > static_cast<std::uint64_t>(now_ns) ? now_ns
                                                                                     : static_cast<std::int64_t>(o.capture_age_ns);
      b.stamp_ns = now_ns - age;
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
  counters_.rx_lost.store(tracker_.gaps(), std::memory_order_relaxed);
  if (now_ns - last_subscribe_ns_ >= config_.subscribe_interval_ns) subscribe(now_ns);
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
