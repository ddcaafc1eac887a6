// RobotDriver over UDP: talks the binary protocol of docs/protocol.md to a robot bridge (or the sim server),
// and optionally receives the camera stream (CameraReceiver).
//
// Real-time behaviour: read_state / write_command / read_ball_observations never block and never allocate;
// read_state drains every pending datagram and keeps the newest valid state. Datagrams from another
// address, corrupted, unauthenticated, for another robot, duplicated, reordered (older than the newest
// accepted) or late (one-way delay above the estimated minimum by more than late_threshold_ns) are dropped
// and counted. While no state arrives for link_timeout_ns, a hello is re-sent every hello_interval_ns, so the
// link comes back by itself after a server restart (a new server session id is counted as a peer restart).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "camera_receiver.hpp"
#include "driver.hpp"
#include "protocol.hpp"
#include "sha256.hpp"
#include "udp_counters.hpp"
#include "udp_socket.hpp"

namespace robot_rt::control {

struct UdpDriverConfig {
  std::string host = "127.0.0.1";  // robot bridge / sim server
  std::uint16_t port = 0;
  int dof = 0;
  std::string bind_host = "127.0.0.1";  // local address (use the interface facing the robot)
  std::uint16_t bind_port = 0;          // 0: ephemeral
  std::string key;                      // HMAC-SHA256 key shared with the server (empty: none)
  std::int64_t link_timeout_ns = 50'000'000;
  std::int64_t hello_interval_ns = 50'000'000;
  std::int64_t late_threshold_ns = 20'000'000;
  std::uint16_t camera_port = 0;  // 0: no camera stream
  std::string camera_host = "127.0.0.1";
};

class UdpDriver final : public RobotDriver {
 public:
  explicit UdpDriver(UdpDriverConfig config);
  ~UdpDriver() override;

  int dof() const noexcept override { return config_.dof; }
  bool read_state(JointState& out) noexcept override;
  bool write_command(const JointCommand& command) noexcept override;
  int read_ball_observations(BallObservation* out, int max_count) noexcept override;
  const char* name() const noexcept override { return "udp"; }
  void on_start() override;  // opens the sockets and says hello (idempotent)
  void on_stop() override;   // closes them

  const UdpDriverConfig& config() const noexcept { return config_; }
  const LinkCounters& counters() const noexcept { return counters_; }
  const CameraReceiver* camera() const noexcept { return camera_.get(); }
  std::uint16_t local_port() const noexcept { return socket_.local_port(); }
  bool connected() const noexcept { return connected_.load(std::memory_order_relaxed); }
  std::uint64_t states_received() const noexcept { return states_.load(std::memory_order_relaxed); }
  std::uint64_t commands_sent() const noexcept { return commands_.load(std::memory_order_relaxed); }
  std::uint64_t hellos_sent() const noexcept { return hellos_.load(std::memory_order_relaxed); }
  std::uint64_t server_status() const noexcept { return status_.load(std::memory_order_relaxed); }
  // Command round trip (write_command -> a state echoing it), in ns: last, min, max, sum and count.
  std::int64_t rtt_last_ns() const noexcept { return rtt_last_.load(std::memory_order_relaxed); }
  std::int64_t rtt_min_ns() const noexcept { return rtt_min_.load(std::memory_order_relaxed); }
  std::int64_t rtt_max_ns() const noexcept { return rtt_max_.load(std::memory_order_relaxed); }
  std::int64_t rtt_sum_ns() const noexcept { return rtt_sum_.load(std::memory_order_relaxed); }
  std::uint64_t rtt_count() const noexcept { return rtt_count_.load(std::memory_order_relaxed); }

 private:
  void drain(std::int64_t now_ns) noexcept;
  void accept_state(const protocol::JointState& s, std::int64_t remote_stamp_ns, std::int64_t now_ns) noexcept;
  void send_hello(std::int64_t now_ns) noexcept;
  bool send_packet(protocol::Packet& packet, std::int64_t now_ns) noexcept;
  void record_rtt(std::uint64_t echo_sequence, std::uint64_t echo_stamp_ns, std::int64_t now_ns) noexcept;

  UdpDriverConfig config_;
  sockaddr_in server_addr_{};
  HmacSha256Key key_;
  UdpSocket socket_;
  std::unique_ptr<CameraReceiver> camera_;
  protocol::SequenceTracker tracker_;
  std::uint32_t session_id_ = 0;
  std::uint64_t sequence_ = 0;
  std::int64_t last_state_rx_ns_ = 0;
  std::int64_t last_hello_ns_ = 0;
  bool have_offset_ = false;
  std::int64_t offset_min_ns_ = 0;  // min over recent states of (receive time - remote stamp)
  std::int64_t offset_seen_ns_ = 0;  // receive time of the last offset update
  std::uint64_t last_echo_sequence_ = 0;
  bool fresh_ = false;
  JointState latest_;
  protocol::Packet rx_packet_;
  protocol::Packet tx_packet_;
  std::uint8_t rx_buffer_[protocol::kMaxPacketBytes + 1];
  std::uint8_t tx_buffer_[protocol::kMaxPacketBytes];
  LinkCounters counters_;
  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> states_{0};
  std::atomic<std::uint64_t> commands_{0};
  std::atomic<std::uint64_t> hellos_{0};
  std::atomic<std::uint64_t> status_{0};
  std::atomic<std::int64_t> rtt_last_{0};
  std::atomic<std::int64_t> rtt_min_{0};
  std::atomic<std::int64_t> rtt_max_{0};
  std::atomic<std::int64_t> rtt_sum_{0};
  std::atomic<std::uint64_t> rtt_count_{0};
};

}  // namespace robot_rt::control
