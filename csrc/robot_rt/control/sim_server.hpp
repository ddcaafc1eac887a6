// Simulated robot bridge: a UDP server speaking docs/protocol.md exactly as a real robot bridge would,
// running the joint dynamics of a position-controlled robot in its own thread.
//
// Dynamics, per joint, at rate_hz (semi-implicit Euler): a commanded target (position, velocity feed-forward)
// reaches the servo after command_delay_s (transport + servo latency); the servo is a second-order tracker with
// time constant tracking_time_constant_s and damping ratio servo_damping (1 by default: critically damped; a real
// servo is often below and overshoots), a = (q* - q)/tau^2 + 2 zeta (v* - v)/tau,
// saturated at the drive's peak acceleration, then its top speed (servo.hpp: 2 x the acceleration limit, 1.2 x the
// velocity limit: a drive has headroom above the trajectory's limits, or it could not close its error behind a
// trajectory that uses them), then the position limits (a hard stop sets the velocity to zero and is counted).
// Between commands the servo keeps the last target position and velocity feed-forward (as a position interface
// with speed feed-forward, e.g. ABB EGM, does until its communication timeout), and brakes after command_timeout_s. Commands outside the limits are counted and clamped (a real bridge
// would reject them; the loop must never send one). With no accepted command for command_timeout_s the
// robot brakes (target = current position) and reports kStatusHolding.
// Own stops (docs/protocol.md, "Robot-side stops"): on its e-stop input, a fault, or a joint blocked for 3 ticks (at
// rest while its target is more than the servo's error bound away: a drive's following-error reaction) the robot
// discards the queued commands, brakes to a hold where it is, counts the stop (robot_stops, in every state), and
// applies no command again, even once the cause has gone, but one that acknowledges that count (sent after the
// controller's recovery, which restarts where it holds). Commands the controller sent before it saw the stop
// therefore never move it, whatever the network lost or delayed, and a blocked joint, once freed, stays where it
// was blocked. A (re)start counts from 0.
//
// Network: binds host:port (127.0.0.1 by default). Only loopback sources are accepted unless allow_remote;
// without a key (unauthenticated mode) the server must bind a loopback address and allow_remote is refused.
// A controller opens a session with the handshake of session.hpp (hello -> hello_ack under the new session
// key -> its first datagram under its session key makes the session live). Only the live session commands the
// robot: datagrams of any other session (old recordings, replays, another controller), from any address, are
// dropped and counted, and a hello (new or replayed) is refused while the live session has been heard within
// session_timeout_s (0.5 s): it can only be replaced after that much silence or after its authenticated
// goodbye. A hello whose joint-limits digest is not the digest of this server's limits (position, velocity,
// acceleration and jerk: protocol::limits_digest), or is 0, opens no handshake (counted as hellos_limits_refused;
// answered with a hello_ack stating the server's digest, which the controller refuses). Whenever the live session ends or changes, queued commands are discarded and the robot brakes to a
// hold until the new session commands it. stop() says goodbye to the live controller. With reply_on_command (the default) the server answers every accepted command
// with the current state right away (the robot-paced exchange of most real bridges: a controller ticking at
// the robot's rate then gets a fresh state every tick) and streams states at its rate only while no
// commands arrive; without it, states are streamed every server tick. Heartbeats are answered with an echo.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include "protocol.hpp"
#include "session.hpp"
#include "sha256.hpp"
#include "udp_counters.hpp"
#include "udp_socket.hpp"

namespace robot_rt::control {

struct SimServerConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: ephemeral (see SimRobotServer::port())
  std::vector<double> position_min, position_max, velocity_limit, acceleration_limit;  // one per joint
  std::vector<double> jerk_limit;  // one per joint: only for the limits digest of the handshake (required)
  // digest of the whole robot's chain, paddle mount and workspace box, folded into the handshake's limits digest
  // (protocol::limits_digest's `geometry`; 0: not stated, and a controller that states its geometry is refused)
  std::uint64_t geometry_digest = 0;
  std::vector<double> initial_position;  // empty: mid-range clamped zero
  double rate_hz = 1000.0;
  double tracking_time_constant_s = 0.02;
  double servo_damping = 1.0;  // damping ratio of the servo (1: critically damped; below 1 it overshoots)
  double command_delay_s = 0.002;
  double command_timeout_s = 0.1;
  double session_timeout_s = 0.5;  // a silent live session ends (and may be replaced) after this long
  std::string key;                 // long-term key (empty: unauthenticated, loopback only)
  bool allow_remote = false;
  bool reply_on_command = true;
  // External dynamics (`robot-rt sim-server --physics mujoco`): the server runs the protocol, the session, the
  // command delay line and the hold-on-timeout logic as always, but does not integrate the joints: another
  // thread reads the servo targets (servo_targets) and reports the joints it simulated (set_measured_state).
  bool external_dynamics = false;
  // The first start() comes up with an unacknowledged stop (count 1), as a bridge with no record of a clean shutdown
  // must (docs/protocol.md "Robot-side stops"): `robot-rt sim-server` sets it when its state file says the last
  // process did not end cleanly (a crash, a kill, or a stop nobody recovered).
  bool start_stopped = false;
};

// Faults a real robot or its bridge can show, injected by tests and the fault-injection matrix
// (robot_rt.sim.faults). Set from any thread with set_faults(); the server thread applies them until cleared.
struct SimServerFaults {
  int measured_joint = -1;      // >= 0: states report measured_value as this joint's position (the joint itself is
  double measured_value = 0.0;  // unaffected): a value outside the limits, 1e300, NaN (the codec refuses to send it)
  bool fault = false;           // status FAULT in every state; the robot ignores commands and brakes to a hold
  int stuck_joint = -1;         // >= 0: this joint is blocked where it is (a collision): commands cannot move it
  bool estop = false;           // the e-stop input is pressed: status ESTOP in every state; the robot brakes to a hold
                                // and ignores commands (its drives are cut, as a real e-stop circuit does)
};

struct SimServerSnapshot {
  std::int64_t stamp_ns = 0;
  std::uint64_t ticks = 0;
  std::uint16_t status = 0;
  std::vector<double> position, velocity, target;
  bool has_controller = false;
  std::string controller;
};

class SimRobotServer {
 public:
  explicit SimRobotServer(SimServerConfig config);
  ~SimRobotServer();
  SimRobotServer(const SimRobotServer&) = delete;
  SimRobotServer& operator=(const SimRobotServer&) = delete;

  // Binds and starts the thread (a new session id each time: a restart as far as clients can tell).
  // The joint state persists across stop()/start() like a physical robot's would.
  void start();
  // goodbye=false: the thread ends without the goodbye to the live controller (a crash or kill as the
  // controller sees it: the session just falls silent).
  void stop(bool goodbye = true);
  void set_faults(const SimServerFaults& faults);
  SimServerFaults faults() const;
  // The next `count` states are stamped `shift_ns` off the server's clock (a clock step or a bad sender).
  void shift_state_stamps(std::int64_t shift_ns, int count);
  bool running() const noexcept { return running_.load(); }
  std::uint16_t port() const noexcept { return port_; }
  std::uint32_t session_id() const noexcept { return session_id_; }
  int dof() const noexcept { return dof_; }
  bool authenticated() const noexcept { return !config_.key.empty(); }
  std::uint64_t limits_digest() const noexcept { return session_.limits_digest(); }

  SimServerSnapshot snapshot() const;
  // External dynamics: the servo's current target (after the command delay; the hold position while holding)
  // and the joint state the physics simulated. Thread-safe; no effect on the built-in dynamics otherwise.
  void servo_targets(double* position, double* velocity, bool* holding) const;
  void set_measured_state(const double* position, const double* velocity, std::uint64_t limit_hits = 0);
  const LinkCounters& counters() const noexcept { return counters_; }
  std::uint64_t commands_applied() const noexcept { return commands_applied_.load(); }
  std::uint64_t commands_out_of_limits() const noexcept { return out_of_limits_.load(); }
  std::uint64_t hard_stops() const noexcept { return hard_stops_.load(); }
  std::uint64_t hold_events() const noexcept { return hold_events_.load(); }
  // Own stops (e-stop input, fault, blocked joint), commands ignored after one until the controller resynchronised,
  // and holds for a blocked joint (a drive's following-error reaction).
  std::uint64_t own_stops() const noexcept { return own_stops_.load(); }
  // Of those, the holds after command_timeout_s without a command while the robot followed the live session's
  // commands, and the goodbyes of a controller that ended in a stop nobody recovered (kGoodbyeStopped).
  std::uint64_t timeout_stops() const noexcept { return timeout_stops_.load(); }
  std::uint64_t goodbye_stops() const noexcept { return goodbye_stops_.load(); }
  std::uint64_t commands_ignored_until_resync() const noexcept { return commands_ignored_until_resync_.load(); }
  std::uint64_t blocked_holds() const noexcept { return blocked_holds_.load(); }
  bool resync_required() const noexcept;
  std::uint64_t hellos_refused() const noexcept { return hellos_refused_.load(); }
  std::uint64_t hellos_limits_refused() const noexcept { return hellos_limits_refused_.load(); }
  std::uint64_t handshakes() const noexcept { return handshakes_.load(); }        // hello_acks sent
  std::uint64_t sessions() const noexcept { return sessions_.load(); }            // sessions that became live
  std::uint64_t sessions_expired() const noexcept { return sessions_expired_.load(); }
  std::uint64_t goodbyes() const noexcept { return goodbyes_.load(); }
  std::uint64_t pending_evicted() const noexcept { return pending_evicted_.load(); }
  std::uint64_t states_sent() const noexcept { return states_sent_.load(); }
  std::uint64_t overruns() const noexcept { return overruns_.load(); }
  // Largest excursion beyond a position limit and largest |v|/limit seen (0 and <= 1 when well behaved).
  double max_position_excess() const;
  double max_velocity_ratio() const;

 private:
  struct PendingCommand {
    std::int64_t due_ns;
    std::uint32_t robot_stops_acknowledged;  // the own stops the controller had acknowledged when it sent it
    double position[protocol::kMaxJoints];
    double velocity[protocol::kMaxJoints];
  };
  static constexpr int kDelaySlots = 256;

  void run() noexcept;
  void drain(std::int64_t now_ns) noexcept;
  void handle(const sockaddr_in& from, std::size_t size, std::int64_t now_ns) noexcept;
  void on_session_change(bool live, std::int64_t now_ns) noexcept;
  void publish_session_counters() noexcept;
  void step(std::int64_t now_ns, double dt_s) noexcept;
  void begin_own_stop() noexcept;                          // under mutex_
  // The robot follows the live session's commands (one was applied, and it is not holding); under mutex_.
  bool following_commands() const noexcept { return !holding_ && last_command_ns_ != 0; }
  void hold_own_stop() noexcept;                           // under mutex_
  void brake_to_hold() noexcept;                           // under mutex_
  bool acceptable(const PendingCommand& p) const noexcept;  // under mutex_
  void send_state(std::int64_t now_ns) noexcept;
  bool send_to(protocol::Packet& packet, const sockaddr_in& to, std::int64_t now_ns) noexcept;

  SimServerConfig config_;
  int dof_ = 0;
  session::ServerSession session_;
  UdpSocket socket_;
  std::thread thread_;
  pid_t started_in_pid_ = 0;  // the process that started thread_ (a forked child's copy must not join or send)
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_requested_{false};
  std::uint16_t port_ = 0;
  std::uint32_t session_id_ = 0;
  std::uint64_t sequence_ = 0;

  // Controller link (server thread only; has_controller_/controller_ also read by snapshot() under mutex_).
  bool has_controller_ = false;  // a live session
  sockaddr_in controller_{};
  std::uint64_t last_command_sequence_ = 0;
  std::uint64_t last_command_stamp_ns_ = 0;
  std::uint64_t last_command_receive_ns_ = 0;
  std::uint64_t lost_before_ = 0;  // sequence gaps of the sessions before the live one
  std::int64_t last_command_ns_ = 0;
  bool clamped_ = false;
  bool holding_ = true;
  std::uint16_t unsent_stop_status_ = 0;  // e-stop / fault bits acted on since the last state sent
  // Own stops (e-stop input, fault, a blocked joint): the robot holds, counts them in every state (robot_stops),
  // and applies only commands that acknowledge that count; the first after a stop must also start where it holds
  // (the controller's recovery restarts there): commands sent before the controller knew never move it.
  bool resync_required_ = false;
  bool start_stopped_pending_ = false;  // config_.start_stopped, until the first start()
  std::uint32_t robot_stops_ = 0;  // own stops so far (JointState::robot_stops)
  bool stop_input_before_ = false;  // the e-stop input or a fault at the previous tick (a stop starts on its edge)
  std::uint16_t stop_edge_status_ = 0;  // under mutex_: stop inputs that started since the last step
  int blocked_ticks_[protocol::kMaxJoints] = {};
  double following_limit_[protocol::kMaxJoints] = {};  // servo_error_bound: beyond it, a joint at rest is blocked

  // Joint dynamics (server thread; the snapshot copies under mutex_).
  mutable std::mutex mutex_;
  std::uint64_t ticks_ = 0;
  std::int64_t state_stamp_ns_ = 0;
  double q_[protocol::kMaxJoints] = {};
  double v_[protocol::kMaxJoints] = {};
  double target_q_[protocol::kMaxJoints] = {};
  double target_v_[protocol::kMaxJoints] = {};
  SimServerFaults faults_;      // under mutex_
  std::int64_t stamp_shift_ns_ = 0;  // under mutex_
  int stamp_shift_states_ = 0;       // under mutex_
  double max_position_excess_ = 0.0;
  double max_velocity_ratio_ = 0.0;
  PendingCommand pending_[kDelaySlots];
  int pending_head_ = 0;
  int pending_count_ = 0;

  protocol::Packet rx_packet_;
  protocol::Packet tx_packet_;
  std::uint8_t rx_buffer_[protocol::kMaxPacketBytes + 1];
  std::uint8_t tx_buffer_[protocol::kMaxPacketBytes];

  LinkCounters counters_;
  std::atomic<std::uint64_t> commands_applied_{0};
  std::atomic<std::uint64_t> out_of_limits_{0};
  std::atomic<std::uint64_t> hard_stops_{0};
  std::atomic<std::uint64_t> hold_events_{0};
  std::atomic<std::uint64_t> own_stops_{0};
  std::atomic<std::uint64_t> timeout_stops_{0};
  std::atomic<std::uint64_t> goodbye_stops_{0};
  std::atomic<std::uint64_t> commands_ignored_until_resync_{0};
  std::atomic<std::uint64_t> blocked_holds_{0};
  std::atomic<std::uint64_t> hellos_refused_{0};
  std::atomic<std::uint64_t> hellos_limits_refused_{0};
  std::atomic<std::uint64_t> handshakes_{0};
  std::atomic<std::uint64_t> sessions_{0};
  std::atomic<std::uint64_t> sessions_expired_{0};
  std::atomic<std::uint64_t> goodbyes_{0};
  std::atomic<std::uint64_t> pending_evicted_{0};
  std::atomic<std::uint64_t> states_sent_{0};
  std::atomic<std::uint64_t> overruns_{0};
};

}  // namespace robot_rt::control
