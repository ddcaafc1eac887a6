// RobotDriver over UDP: talks the binary protocol of docs/protocol.md (version 3) to a robot bridge (or the sim
// server), and optionally receives the camera stream (CameraReceiver).
//
// Session (session.hpp): on start the driver opens a handshake (hello with a fresh nonce, under the long-term
// key); the robot's hello_ack, tagged with the derived session key, establishes the session, and the driver's
// first heartbeat under its own session key confirms it to the robot. Every later datagram either way is
// tagged with a session key; datagrams of any other session (old recordings, replays, another controller's)
// are dropped and counted. When the robot has been silent for session_timeout_ns the driver gives the session
// up (an authenticated goodbye, in case the robot still holds it) and handshakes again every
// hello_interval_ns; the first state of every later session carries kStateNewSession (the robot restarted or
// the session was re-established: the loop must not resume motion by itself). write_command() refuses while no
// session is established (counted as tx_no_session).
//
// Joint limits: the hello states the digest of the joint limits the controller enforces (limits_digest, set from the
// loop's robot description: RealTimeLoop does it), and a hello_ack from a robot with another digest is refused
// (rx_limits_mismatch; the robot refuses such a hello too), so a controller and a robot that disagree on the limits
// never open a session. Fail closed: on_start() throws while no digest is set.
//
// Time: the clock offset to the robot is estimated from round trips (the handshake, every state that echoes a
// command, heartbeats; clock_offset.hpp). A state whose stamp lies in the future beyond the estimate's bound
// is dropped (rx_future) without moving the estimate; one older than late_threshold_ns is dropped (rx_late).
//
// Real-time behaviour: read_state / write_command / read_ball_observations never block and never allocate;
// read_state drains every pending datagram and keeps the newest valid state. Datagrams from another address,
// corrupted, unauthenticated, for another robot, duplicated, reordered, late or future are dropped and counted.
// Without a key (unauthenticated mode) every address involved must be on loopback (constructor check).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "camera_receiver.hpp"
#include "clock_offset.hpp"
#include "driver.hpp"
#include "protocol.hpp"
#include "session.hpp"
#include "sha256.hpp"
#include "udp_counters.hpp"
#include "udp_socket.hpp"

namespace robot_rt::control {

// Datagrams read per tick at most (the loop thread's time under a flood; the robot sends about one per tick).
// (Not lower: a slow loop, e.g. 16 Hz, against a robot streaming states at 1 kHz must still reach the newest.)
constexpr int kLinkDatagramsPerDrain = 256;

struct UdpDriverConfig {
  std::string host = "127.0.0.1";  // robot bridge / sim server
  std::uint16_t port = 0;
  int dof = 0;
  std::string bind_host = "127.0.0.1";  // local address (use the interface facing the robot)
  std::uint16_t bind_port = 0;          // 0: ephemeral
  std::string key;                      // long-term key shared with the server (empty: unauthenticated, loopback only)
  std::int64_t link_timeout_ns = 50'000'000;      // no state for this long: link reported down
  std::int64_t hello_interval_ns = 50'000'000;    // hello repetition while handshaking
  std::int64_t session_timeout_ns = 250'000'000;  // robot silent this long: session given up, new handshake
  std::int64_t heartbeat_interval_ns = 100'000'000;
  std::int64_t late_threshold_ns = 20'000'000;
  ClockOffsetConfig clock;
  std::uint16_t camera_port = 0;  // 0: no camera stream
  std::string camera_host = "127.0.0.1";
  // protocol::limits_digest of the robot's joint limits as the controller's safety filter knows them (0: not set yet;
  // the driver refuses to start).
  std::uint64_t limits_digest = 0;
};

class UdpDriver final : public RobotDriver {
 public:
  explicit UdpDriver(UdpDriverConfig config);
  ~UdpDriver() override;

  int dof() const noexcept override { return config_.dof; }
  bool read_state(JointState& out) noexcept override;
  void acknowledge_robot_stops() noexcept override { robot_stops_acknowledged_ = robot_stops_delivered_; }
  void set_ending_in_stop(bool stopped) noexcept override { ending_in_stop_ = stopped; }
  std::uint64_t robot_stop_events() const noexcept override { return robot_stop_events_; }
  std::uint64_t unexplained_robot_stop_events() const noexcept override { return robot_stop_events_unexplained_; }
  bool write_command(const JointCommand& command) noexcept override;
  int read_ball_observations(BallObservation* out, int max_count) noexcept override;
  const char* name() const noexcept override { return "udp"; }
  LinkHealth link_health() const noexcept override {
    return LinkHealth{connected(), counters_.peer_restarts.load(std::memory_order_relaxed)};
  }
  void on_start() override;  // opens the sockets and says hello (idempotent); throws without a limits digest
  void on_stop() override;   // says goodbye (authenticated) and closes them

  const UdpDriverConfig& config() const noexcept { return config_; }
  // The expected joint-limits digest; only while stopped (std::logic_error otherwise).
  void set_limits_digest(std::uint64_t digest);
  std::uint64_t limits_digest() const noexcept { return config_.limits_digest; }
  // hello_acks refused for their limits digest, and the last such digest (the robot's).
  std::uint64_t limits_mismatches() const noexcept { return limits_mismatches_.load(std::memory_order_relaxed); }
  std::uint64_t peer_limits_digest() const noexcept { return peer_limits_digest_.load(std::memory_order_relaxed); }
  const LinkCounters& counters() const noexcept { return counters_; }
  const CameraReceiver* camera() const noexcept { return camera_.get(); }
  std::uint16_t local_port() const noexcept { return socket_.local_port(); }
  bool authenticated() const noexcept { return !config_.key.empty(); }
  bool connected() const noexcept { return connected_.load(std::memory_order_relaxed); }
  // 0 idle, 1 handshaking, 2 established (session::ClientSession::State)
  int session_state() const noexcept { return session_state_.load(std::memory_order_relaxed); }
  std::uint64_t sessions_established() const noexcept { return sessions_.load(std::memory_order_relaxed); }
  std::uint64_t sessions_lost() const noexcept { return sessions_lost_.load(std::memory_order_relaxed); }
  std::uint32_t server_session_id() const noexcept { return server_session_.load(std::memory_order_relaxed); }
  std::uint32_t peer_version() const noexcept { return peer_version_.load(std::memory_order_relaxed); }
  std::uint64_t states_received() const noexcept { return states_.load(std::memory_order_relaxed); }
  std::uint64_t commands_sent() const noexcept { return commands_.load(std::memory_order_relaxed); }
  std::uint64_t hellos_sent() const noexcept { return hellos_.load(std::memory_order_relaxed); }
  std::uint64_t server_status() const noexcept { return status_.load(std::memory_order_relaxed); }
  // Clock offset to the robot (robot clock - local clock) and its current uncertainty, ns; round-trip samples.
  std::int64_t clock_offset_ns() const noexcept { return clock_offset_.load(std::memory_order_relaxed); }
  std::int64_t clock_uncertainty_ns() const noexcept { return clock_uncertainty_.load(std::memory_order_relaxed); }
  std::uint64_t clock_samples() const noexcept { return clock_samples_.load(std::memory_order_relaxed); }
  std::uint64_t clock_rejected() const noexcept { return clock_rejected_.load(std::memory_order_relaxed); }
  std::uint64_t clock_resyncs() const noexcept { return clock_resyncs_.load(std::memory_order_relaxed); }
  // Command round trip (write_command -> a state echoing it), in ns: last, min, max, sum and count.
  std::int64_t rtt_last_ns() const noexcept { return rtt_last_.load(std::memory_order_relaxed); }
  std::int64_t rtt_min_ns() const noexcept { return rtt_min_.load(std::memory_order_relaxed); }
  std::int64_t rtt_max_ns() const noexcept { return rtt_max_.load(std::memory_order_relaxed); }
  std::int64_t rtt_sum_ns() const noexcept { return rtt_sum_.load(std::memory_order_relaxed); }
  std::uint64_t rtt_count() const noexcept { return rtt_count_.load(std::memory_order_relaxed); }

 private:
  void drain(std::int64_t now_ns) noexcept;
  void on_established(std::int64_t now_ns) noexcept;
  void accept_state(const protocol::JointState& s, std::int64_t local_stamp_ns, std::int64_t now_ns) noexcept;
  void clock_sample(std::uint64_t t1, std::uint64_t t2, std::uint64_t t3, std::int64_t t4) noexcept;
  void begin_handshake(std::int64_t now_ns) noexcept;
  void send_hello(std::int64_t now_ns) noexcept;
  void send_heartbeat(std::int64_t now_ns) noexcept;
  void send_goodbye(std::uint32_t reason, std::int64_t now_ns) noexcept;
  bool send_session_packet(protocol::Packet& packet, std::int64_t now_ns) noexcept;
  void record_rtt(std::uint64_t echo_sequence, std::uint64_t echo_stamp_ns, std::int64_t now_ns) noexcept;

  UdpDriverConfig config_;
  sockaddr_in server_addr_{};
  session::ClientSession session_;
  ClockOffsetEstimator clock_;
  UdpSocket socket_;
  std::unique_ptr<CameraReceiver> camera_;
  std::uint64_t sequence_ = 0;
  std::int64_t last_state_rx_ns_ = 0;
  std::int64_t last_rx_ns_ = 0;  // last datagram of the live session (any type)
  std::int64_t last_hello_ns_ = 0;
  std::int64_t last_heartbeat_ns_ = 0;
  std::uint64_t last_echo_sequence_ = 0;
  std::uint64_t last_rx_sequence_ = 0;  // of the robot's last accepted datagram (heartbeat echo)
  std::uint64_t last_rx_stamp_ns_ = 0;
  std::int64_t last_rx_receive_ns_ = 0;
  std::uint32_t previous_server_session_ = 0;
  bool new_session_flag_ = false;  // the next delivered state carries kStateNewSession; no command until then
  // The robot's stop count (docs/protocol.md "Robot-side stops"): the newest received, the one in the last state
  // delivered, and the one acknowledged (sent in every command; adopted from the first robot server session this
  // driver connects to, 0 for a later one, then set by acknowledge_robot_stops()).
  std::uint32_t robot_stops_received_ = 0;
  std::uint32_t robot_stops_delivered_ = 0;
  std::uint32_t robot_stops_acknowledged_ = 0;
  std::uint64_t robot_stop_events_ = 0;       // changes of the delivered count (each a stop the loop must see)
  std::uint64_t robot_stop_events_unexplained_ = 0;  // of those, with no e-stop input / fault bit in that state
  std::uint32_t robot_stops_server_session_ = 0;  // the robot server session the counts belong to
  bool robot_stops_connected_ = false;            // a server session was seen (its id may be anything)
  bool ending_in_stop_ = false;  // on_stop()'s goodbye says kGoodbyeStopped (set_ending_in_stop)
  pid_t owner_pid_ = 0;  // the process that started it (a forked child's copy only closes its descriptors)
  bool robot_stop_unacknowledged_ = false;        // the newest state's kStatusStopUnacknowledged
  bool fresh_ = false;
  JointState latest_;
  protocol::Packet rx_packet_;
  protocol::Packet tx_packet_;
  std::uint8_t rx_buffer_[protocol::kMaxPacketBytes + 1];
  std::uint8_t tx_buffer_[protocol::kMaxPacketBytes];
  LinkCounters counters_;
  std::atomic<bool> connected_{false};
  std::atomic<int> session_state_{0};
  std::atomic<std::uint64_t> sessions_{0};
  std::atomic<std::uint64_t> sessions_lost_{0};
  std::atomic<std::uint32_t> server_session_{0};
  std::atomic<std::uint32_t> peer_version_{0};
  std::atomic<std::uint64_t> states_{0};
  std::atomic<std::uint64_t> commands_{0};
  std::atomic<std::uint64_t> hellos_{0};
  std::atomic<std::uint64_t> limits_mismatches_{0};
  std::atomic<std::uint64_t> peer_limits_digest_{0};
  std::atomic<std::uint64_t> status_{0};
  std::atomic<std::int64_t> clock_offset_{0};
  std::atomic<std::int64_t> clock_uncertainty_{0};
  std::atomic<std::uint64_t> clock_samples_{0};
  std::atomic<std::uint64_t> clock_rejected_{0};
  std::atomic<std::uint64_t> clock_resyncs_{0};
  std::atomic<std::int64_t> rtt_last_{0};
  std::atomic<std::int64_t> rtt_min_{0};
  std::atomic<std::int64_t> rtt_max_{0};
  std::atomic<std::int64_t> rtt_sum_{0};
  std::atomic<std::uint64_t> rtt_count_{0};
};

}  // namespace robot_rt::control
