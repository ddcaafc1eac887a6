// Receiver of the UDP ball-observation stream (docs/protocol.md, "Camera stream").
//
// Subscribes by sending a hello (role camera subscriber) to the camera server and repeats it every
// subscribe_interval_ns as a keep-alive. poll() drains the socket without blocking and without heap
// allocation: packets from another address, corrupted, unauthenticated, duplicated or reordered packets are
// dropped and counted; accepted detections are converted to local CLOCK_MONOTONIC exposure times
// (receive time minus the capture age the camera reports) and queued in a fixed ring (oldest dropped first).
#pragma once

#include <cstdint>
#include <string>

#include "driver.hpp"
#include "protocol.hpp"
#include "sha256.hpp"
#include "udp_counters.hpp"
#include "udp_socket.hpp"

namespace robot_rt::control {

struct CameraReceiverConfig {
  std::string camera_host = "127.0.0.1";
  std::uint16_t camera_port = 0;
  std::string bind_host = "127.0.0.1";
  std::uint16_t bind_port = 0;  // 0: ephemeral
  std::string key;              // HMAC-SHA256 key (empty: no authentication)
  std::int64_t subscribe_interval_ns = 200'000'000;
};

class CameraReceiver {
 public:
  static constexpr int kQueueCapacity = 64;

  explicit CameraReceiver(CameraReceiverConfig config);
  void open();  // binds the socket and subscribes (may allocate; not in a tick)
  void close() noexcept;
  bool is_open() const noexcept { return socket_.is_open(); }
  std::uint16_t local_port() const noexcept { return socket_.local_port(); }

  // Drains the socket, re-subscribes when due. Real-time safe.
  void poll(std::int64_t now_ns) noexcept;
  // poll(), then pops up to max_count queued detections, oldest first.
  int read(BallObservation* out, int max_count) noexcept;

  const LinkCounters& counters() const noexcept { return counters_; }
  std::uint64_t frames() const noexcept { return frames_.load(std::memory_order_relaxed); }
  std::uint64_t detections() const noexcept { return detections_.load(std::memory_order_relaxed); }
  std::uint64_t queue_overflows() const noexcept { return overflows_.load(std::memory_order_relaxed); }
  // Receive time of the last accepted frame (0: none yet).
  std::int64_t last_frame_ns() const noexcept { return last_frame_ns_.load(std::memory_order_relaxed); }

 private:
  void subscribe(std::int64_t now_ns) noexcept;

  CameraReceiverConfig config_;
  sockaddr_in camera_addr_{};
  HmacSha256Key key_;
  UdpSocket socket_;
  protocol::SequenceTracker tracker_;
  std::uint32_t session_id_ = 0;
  std::uint64_t sequence_ = 0;
  std::int64_t last_subscribe_ns_ = 0;
  protocol::Packet packet_;
  std::uint8_t buffer_[protocol::kMaxPacketBytes + 1];
  BallObservation queue_[kQueueCapacity];
  int head_ = 0;   // index of the oldest
  int count_ = 0;  // queued
  LinkCounters counters_;
  std::atomic<std::uint64_t> frames_{0};
  std::atomic<std::uint64_t> detections_{0};
  std::atomic<std::uint64_t> overflows_{0};
  std::atomic<std::int64_t> last_frame_ns_{0};
};

}  // namespace robot_rt::control
