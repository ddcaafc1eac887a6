// Receiver of the UDP ball-observation stream (docs/protocol.md, "Camera stream").
//
// Subscribes with the handshake of session.hpp (hello under the long-term key, the camera's hello_ack under the
// session key, our heartbeat under ours confirms it) and keeps the subscription alive with a heartbeat every
// subscribe_interval_ns. When the camera has been silent for session_timeout_ns the session is given up and a
// new handshake starts. poll() drains the socket without blocking and without heap allocation: packets from
// another address, corrupted, unauthenticated, of another session (replayed), duplicated or reordered are
// dropped and counted; accepted detections are converted to local CLOCK_MONOTONIC exposure times (receive
// time minus the capture age the camera reports) and queued in a fixed ring (oldest dropped first).
//
// Delay (docs/protocol.md, "Camera stream"): a frame's receive time says nothing about how long the network (or
// someone on it) held it, and an authentic frame held for 300 ms would be dated as fresh. So the camera echoes our
// heartbeats (as the robot does), the round trips give the camera clock's offset within +-u (clock_offset.hpp), and
// a frame is used only while its age since the camera sent it is surely within late_threshold_ns: now - (stamp -
// offset) + u <= late_threshold_ns (a long delay in either direction widens u, so it cannot hide itself). Frames
// before the first round trip, or beyond the bound, are dropped (rx_late); frames stamped in the future beyond the
// bound too (rx_future).
#pragma once

#include <cstdint>
#include <string>

#include "clock_offset.hpp"
#include "driver.hpp"
#include "protocol.hpp"
#include "session.hpp"
#include "sha256.hpp"
#include "udp_counters.hpp"
#include "udp_socket.hpp"

#include <sys/types.h>

namespace robot_rt::control {

// Datagrams read per tick at most (the loop thread's time under a flood; the camera sends about one per tick).
constexpr int kCameraDatagramsPerPoll = 32;

struct CameraReceiverConfig {
  std::string camera_host = "127.0.0.1";
  std::uint16_t camera_port = 0;
  std::string bind_host = "127.0.0.1";
  std::uint16_t bind_port = 0;  // 0: ephemeral
  std::string key;              // long-term key (empty: unauthenticated, loopback only)
  std::int64_t subscribe_interval_ns = 200'000'000;  // keep-alive heartbeat period
  std::int64_t hello_interval_ns = 50'000'000;       // hello repetition while handshaking
  std::int64_t session_timeout_ns = 500'000'000;     // camera silent this long: new handshake
  std::int64_t late_threshold_ns = 20'000'000;       // a frame surely older than this since the camera sent it: dropped
};

class CameraReceiver {
 public:
  static constexpr int kQueueCapacity = 64;

  explicit CameraReceiver(CameraReceiverConfig config);
  void open();  // binds the socket and subscribes (may allocate; not in a tick)
  // Says goodbye only in the process that opened it (a forked child's copy: the session is the parent's).
  void close() noexcept;
  bool is_open() const noexcept { return socket_.is_open(); }
  std::uint16_t local_port() const noexcept { return socket_.local_port(); }

  // Drains the socket, keeps the subscription alive. Real-time safe.
  void poll(std::int64_t now_ns) noexcept;
  // poll(), then pops up to max_count queued detections, oldest first.
  int read(BallObservation* out, int max_count) noexcept;

  const LinkCounters& counters() const noexcept { return counters_; }
  std::uint64_t frames() const noexcept { return frames_.load(std::memory_order_relaxed); }
  std::uint64_t detections() const noexcept { return detections_.load(std::memory_order_relaxed); }
  std::uint64_t queue_overflows() const noexcept { return overflows_.load(std::memory_order_relaxed); }
  std::uint64_t sessions_established() const noexcept { return sessions_.load(std::memory_order_relaxed); }
  bool established() const noexcept { return established_.load(std::memory_order_relaxed); }
  // Receive time of the last accepted frame (0: none yet).
  std::int64_t last_frame_ns() const noexcept { return last_frame_ns_.load(std::memory_order_relaxed); }
  // The camera clock's offset estimate (ns) and its best round trip (0 before the first).
  std::int64_t clock_offset_ns() const noexcept { return clock_offset_.load(std::memory_order_relaxed); }
  std::int64_t best_round_trip_ns() const noexcept { return best_delay_.load(std::memory_order_relaxed); }

 private:
  void begin_handshake(std::int64_t now_ns) noexcept;
  void send_hello(std::int64_t now_ns) noexcept;
  void send_heartbeat(std::int64_t now_ns) noexcept;
  void clock_sample(std::uint64_t t1, std::uint64_t t2, std::uint64_t t3, std::int64_t t4) noexcept;
  // Counts rx_late / rx_future; when fresh, `sent_ns` is the frame's send time on the local clock (<= now_ns).
  bool surely_fresh(std::uint64_t stamp_ns, std::int64_t now_ns, std::int64_t& sent_ns) noexcept;
  bool send(protocol::Packet& packet, const HmacSha256Key& key, std::int64_t now_ns) noexcept;

  CameraReceiverConfig config_;
  sockaddr_in camera_addr_{};
  pid_t opened_in_pid_ = 0;  // the process that opened the socket (a forked child's copy must not send)
  session::ClientSession session_;
  UdpSocket socket_;
  std::uint64_t sequence_ = 0;
  std::int64_t last_hello_ns_ = 0;
  std::int64_t last_heartbeat_ns_ = 0;
  std::int64_t last_rx_ns_ = 0;
  std::uint32_t previous_server_session_ = 0;
  ClockOffsetEstimator clock_;
  std::atomic<std::int64_t> clock_offset_{0};
  std::atomic<std::int64_t> best_delay_{0};
  protocol::Packet packet_;
  protocol::Packet tx_packet_;
  std::uint8_t buffer_[protocol::kMaxPacketBytes + 1];
  std::uint8_t tx_buffer_[protocol::kMaxPacketBytes];
  BallObservation queue_[kQueueCapacity];
  int head_ = 0;   // index of the oldest
  int count_ = 0;  // queued
  LinkCounters counters_;
  std::atomic<std::uint64_t> frames_{0};
  std::atomic<std::uint64_t> detections_{0};
  std::atomic<std::uint64_t> overflows_{0};
  std::atomic<std::uint64_t> sessions_{0};
  std::atomic<bool> established_{false};
  std::atomic<std::int64_t> last_frame_ns_{0};
};

}  // namespace robot_rt::control
