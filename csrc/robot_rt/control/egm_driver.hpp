// RobotDriver for an ABB arm over Externally Guided Motion (EGM, docs/egm.md): UDP + protobuf (egm_codec.hpp).
//
// The robot controller is the active side: every EGM cycle (4 ms, 250 Hz) it sends an EgmRobot message to the
// address configured in its UdpUc device, which is where this driver listens (bind_host:port). The driver answers
// each EgmRobot with one EgmSensor carrying the latest safety-filtered joint command (position guidance,
// EGMRunJoint): the command the loop writes in the first tick after the robot message arrived. So the loop runs at
// 1 kHz and the arm at 250 Hz, and a command reaches the controller at most one loop tick (+ the tick's work) after
// the state it answers.
//
// Units are converted here and only here: EGM joints are degrees (revolute) or millimetres (linear axes), the loop's
// radians / metres (`si_per_egm` per joint: pi/180 or 1e-3).
//
// Freshness: the loop ticks 4 times per EGM cycle. read_state() reports the newest robot sample as fresh for
// `hold_ns` after it arrived (default 2 EGM cycles, 8 ms), and no fresh state after that (a dropout: the loop's
// sensor watchdog stops the robot when it lasts sensor_timeout_s). The state's stamp is the sample's arrival time,
// so consumers see its age. EGM does not send joint velocities: velocity_si is the backward difference of the last
// two samples over the controller's feedback clock (EgmFeedBack.time; arrival times when it is absent).
//
// Robot status -> JointState flags: motors off (EGM's only sign of an emergency or protective stop), MCI error or
// stopped, RAPID stopped set kStateEstopInput and kStateFault: the arm does not follow references any more, so the
// loop's e-stop latch trips (the safety layer unchanged) and stays latched until a reset at rest. The link is up
// while robot messages arrive within link_timeout_ns.
//
// Security: EGM has no authentication. The driver answers only the controller it locked on to: `controller_host`
// when given (and `controller_port` too when given: on loopback the address alone does not tell local processes
// apart), else the first sender of a valid EgmRobot; other senders are counted and ignored. A sender change is
// accepted only after the link has been down (a controller restart), and counted as a peer restart. Which addresses
// may be used at all is checked where the driver is built (robot_rt.control.egm.parse_egm_url): loopback or
// private networks only, and off loopback `controller_host` is required (no lock-on to the first sender).
//
// Real-time behaviour: read_state / write_command never block and never allocate.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>

#include "driver.hpp"
#include "egm_codec.hpp"
#include "udp_counters.hpp"  // bump()
#include "udp_socket.hpp"

namespace robot_rt::control {

struct EgmDriverConfig {
  std::string bind_host = "127.0.0.1";  // where the controller sends (its UdpUc device's remote address)
  std::uint16_t port = 0;               // its remote port number (0: ephemeral, for tests)
  std::string controller_host;          // accept only this source address (empty: lock on to the first sender)
  std::uint16_t controller_port = 0;    // and only this source port (0: any; needs controller_host)
  int dof = 6;
  double si_per_egm[kMaxDof] = {};      // per joint: rad per degree (revolute) or m per mm (linear); 0 = pi/180
  std::int64_t hold_ns = 8'000'000;          // a robot sample counts as fresh this long after it arrived
  std::int64_t link_timeout_ns = 40'000'000;  // no robot message this long: link down
  // The run marker (empty: none). EGM carries no stop count, so the controller side remembers: on_start() finds the
  // file of a run that ended in a stop (or never ended: a crash) and reports that as a robot stop, which only a
  // recovery acknowledges; it then writes the file for its own run, and on_stop() removes it only after a run that
  // ended without a stop nobody recovered. robot_rt.control.egm.make_egm_driver sets one per controller.
  std::string run_marker_path;
};

struct EgmCounters {
  std::atomic<std::uint64_t> rx_datagrams{0};
  std::atomic<std::uint64_t> rx_accepted{0};
  std::atomic<std::uint64_t> rx_malformed{0};           // decode failures, datagrams too long
  std::atomic<std::uint64_t> rx_mismatch{0};            // no feedback joints, or another joint count, or not finite
  std::atomic<std::uint64_t> rx_unexpected_source{0};  // not the controller
  std::atomic<std::uint64_t> rx_stale{0};  // older than the newest accepted (controller clock, else sequence number)
  std::atomic<std::uint64_t> rx_lost{0};                // sequence gaps
  std::atomic<std::uint64_t> peer_restarts{0};          // the controller restarted (seqno restart or new source)
  std::atomic<std::uint64_t> tx_datagrams{0};
  std::atomic<std::uint64_t> tx_errors{0};
  std::atomic<std::uint64_t> tx_invalid{0};             // commands refused (wrong dof, not finite)
  std::atomic<std::uint64_t> socket_errors{0};
};

class EgmDriver final : public RobotDriver {
 public:
  explicit EgmDriver(EgmDriverConfig config);
  ~EgmDriver() override;

  int dof() const noexcept override { return config_.dof; }
  bool read_state(JointState& out) noexcept override;
  bool write_command(const JointCommand& command) noexcept override;
  int read_ball_observations(BallObservation*, int) noexcept override { return 0; }
  const char* name() const noexcept override { return "egm"; }
  // The loop's link-loss reflex reads this every tick (after read_state, which updates it): down when no robot message
  // came for link_timeout_ns, and a controller restart is a new peer session (the loop stops commanding at once).
  LinkHealth link_health() const noexcept override { return LinkHealth{link_up(), peer_restarts()}; }
  void on_start() override;  // opens the socket (idempotent); reads and writes the run marker
  void on_stop() override;
  // The run marker's stop: flagged kStateRobotStopped in every state (one robot stop event, unexplained: the loop
  // latches robot_fault) until a recovery acknowledges it.
  std::uint64_t robot_stop_events() const noexcept override { return marker_stops_.load(std::memory_order_relaxed); }
  std::uint64_t unexplained_robot_stop_events() const noexcept override { return robot_stop_events(); }
  void acknowledge_robot_stops() noexcept override { marker_stop_pending_.store(false, std::memory_order_relaxed); }
  void set_ending_in_stop(bool stopped) noexcept override { ending_in_stop_ = stopped; }
  // Muted (the loop stopped commanding the arm): every robot message is answered with a hold where the arm is, at
  // rest (speed 0), so the controller does not drive on. The hold is fixed at the first reply of the mute: the point
  // nearest the arm's feedback then on the joint-space segment from the anchor (the loop's last checked position,
  // set_hold_position) to the last reference the driver sent (fix_hold). An arm that ran on to its last reference
  // while its feedback was lost (a silent controller) is held where it went, not pulled back to the anchor (0.03 rad
  // against its motion at 1.46 rad/s, the thirteenth audit); a jammed or self-stopped arm is held where it stopped
  // (never farther from its feedback than the anchor: the anchor is on the segment); a glitched feedback can place
  // the hold nowhere but on the segment the loop itself measured and commanded (of zero length at rest).
  // Returns false: the loop sends this driver nothing while muted (a CompositeDriver passes its part's mask).
  bool mute_joints(std::uint64_t joints) noexcept override {
    // (the restarts before this tick's read: a controller whose restart caused this mute gets no hold either)
    if (joints != 0 && !holding_) {
      hold_peer_restarts_ = restarts_before_read_;
      hold_anchored_ = hold_offered_;  // the loop's trusted position, else the feedback at this moment
      if (!hold_anchored_ && have_sample_)
        for (int i = 0; i < config_.dof; ++i) hold_position_egm_[i] = latest_.position_si[i] / config_.si_per_egm[i];
      hold_anchored_ = hold_anchored_ || have_sample_;
      // (the last reference SENT: the loop goes on writing commands while the controller is silent, and those the
      // arm never received; one of them as the bound moved a held arm 0.078 rad on beyond its last reference)
      for (int i = 0; i < config_.dof; ++i)
        hold_reference_egm_[i] = have_sent_ ? sent_position_egm_[i] : hold_position_egm_[i];
      hold_fixed_ = false;
    }
    if (joints == 0) hold_anchored_ = false;
    hold_offered_ = false;
    holding_ = joints != 0;
    return false;
  }
  // The hold stays where fix_hold put it until the mute ends: it never follows the feedback, which may be what
  // stopped the loop (a glitch), and which it would otherwise echo back as the arm's reference.
  void set_hold_position(const double* position_si) noexcept override {
    if (holding_) return;  // anchored when the mute began
    bool finite = true;
    for (int i = 0; i < config_.dof; ++i) finite = finite && std::isfinite(position_si[i]);
    if (!finite) return;
    for (int i = 0; i < config_.dof; ++i) hold_position_egm_[i] = position_si[i] / config_.si_per_egm[i];
    hold_offered_ = true;
  }
  bool marker_stop_pending() const noexcept { return marker_stop_pending_.load(std::memory_order_relaxed); }
  std::uint64_t hold_replies() const noexcept { return hold_replies_.load(std::memory_order_relaxed); }

  // Link status: up while robot messages arrive within link_timeout_ns; peer_restarts counts controller restarts.
  bool link_up() const noexcept { return link_up_.load(std::memory_order_relaxed); }
  std::uint64_t peer_restarts() const noexcept { return counters_.peer_restarts.load(std::memory_order_relaxed); }

  const EgmDriverConfig& config() const noexcept { return config_; }
  const EgmCounters& counters() const noexcept { return counters_; }
  std::uint16_t local_port() const noexcept { return socket_.local_port(); }
  std::uint64_t robot_messages() const noexcept { return counters_.rx_accepted.load(std::memory_order_relaxed); }
  std::uint64_t replies_sent() const noexcept { return replies_.load(std::memory_order_relaxed); }
  // Last reported controller states (egm_codec.hpp enums; -1: never reported).
  int motor_state() const noexcept { return motor_state_.load(std::memory_order_relaxed); }
  int mci_state() const noexcept { return mci_state_.load(std::memory_order_relaxed); }
  int rapid_state() const noexcept { return rapid_state_.load(std::memory_order_relaxed); }
  // Reply latency: arrival of a robot message -> its EgmSensor sent (ns): last, max, sum, count.
  std::int64_t reply_latency_last_ns() const noexcept { return reply_last_.load(std::memory_order_relaxed); }
  std::int64_t reply_latency_max_ns() const noexcept { return reply_max_.load(std::memory_order_relaxed); }
  std::int64_t reply_latency_sum_ns() const noexcept { return reply_sum_.load(std::memory_order_relaxed); }
  std::string controller_endpoint() const;  // "ip:port" of the controller locked on to ("" before)

 private:
  void drain(std::int64_t now_ns) noexcept;
  void accept(const egm::Robot& m, const sockaddr_in& from, std::int64_t now_ns) noexcept;
  bool send_reply(std::int64_t now_ns, bool hold = false) noexcept;
  void fix_hold() noexcept;

  EgmDriverConfig config_;
  bool pin_controller_ = false;
  sockaddr_in controller_pin_{};  // the configured controller address (its port: 0 = any)
  UdpSocket socket_;
  // loop-thread state
  bool have_peer_ = false;
  sockaddr_in peer_{};  // the controller's address and source port
  bool have_seqno_ = false;
  std::uint32_t last_seqno_ = 0;
  bool have_clock_ = false;         // the newest accepted message had the controller's clock (feedback time) ...
  std::uint64_t last_clock_us_ = 0;  // ... this one (us)
  std::int64_t last_rx_ns_ = 0;
  std::int64_t start_ns_ = 0;
  bool have_sample_ = false;
  std::uint32_t status_seen_ = 0;  // motor (1), MCI (2), RAPID (4) states reported in this session
  std::int64_t sample_rx_ns_ = 0;
  double sample_clock_s_ = 0.0;  // controller clock of the sample (s), or its arrival time when absent
  bool reply_owed_ = false;
  std::int64_t owed_since_ns_ = 0;
  bool new_sample_ = false;
  JointState latest_;
  std::uint32_t unread_stop_flags_ = 0;  // stop bits of every message since the last read_state
  double command_position_egm_[kMaxDof] = {};
  double command_velocity_egm_[kMaxDof] = {};
  std::uint32_t tx_seqno_ = 0;
  egm::Robot rx_message_;
  egm::Sensor tx_message_;
  static constexpr std::size_t kRxCapacity = 2048;
  std::uint8_t rx_buffer_[kRxCapacity + 1];
  std::uint8_t tx_buffer_[1024];
  EgmCounters counters_;
  std::atomic<bool> link_up_{false};
  std::atomic<std::uint64_t> replies_{0};
  std::atomic<int> motor_state_{-1}, mci_state_{-1}, rapid_state_{-1};
  std::atomic<std::int64_t> reply_last_{0}, reply_max_{0}, reply_sum_{0};
  bool holding_ = false;        // muted: replies hold the arm where it is (loop thread)
  double hold_position_egm_[kMaxDof] = {};  // the hold's reference while muted (EGM units): the anchor until fixed
  double hold_reference_egm_[kMaxDof] = {};  // the last reference sent before the mute (else the anchor)
  bool have_sent_ = false;                   // a reference (not a hold) was sent in this run
  double sent_position_egm_[kMaxDof] = {};   // ... and the last one's position
  bool hold_fixed_ = false;     // the first hold reply of this mute placed hold_position_egm_ (fix_hold)
  bool hold_offered_ = false;   // set_hold_position gave one for the coming mute
  bool hold_anchored_ = false;  // hold_position_egm_ holds this mute's anchor
  std::uint64_t hold_peer_restarts_ = 0;  // a controller restarted since the mute gets nothing at all
  std::uint64_t restarts_before_read_ = 0;  // peer_restarts() when the last read_state began
  bool ending_in_stop_ = false;  // the run ends in a stop nobody recovered (set before on_stop)
  bool run_started_ = false;     // on_start() wrote the run marker
  pid_t owner_pid_ = 0;  // the process that started it (a forked child's copy only closes its descriptors)
  int marker_lock_fd_ = -1;      // the marker's lock file, flock'ed for the run
  std::atomic<bool> marker_stop_pending_{false};
  std::atomic<std::uint64_t> marker_stops_{0};
  std::atomic<std::uint64_t> hold_replies_{0};
  std::atomic<std::uint32_t> peer_ip_{0};
  std::atomic<std::uint16_t> peer_port_{0};
};

}  // namespace robot_rt::control
