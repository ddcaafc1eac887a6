// Hardware interface of the real-time loop: the abstract RobotDriver and the plain data it exchanges.
//
// Everything here is fixed-size (kMaxDof joints, kMaxBallObservations detections), trivially copyable and
// heap-free, so the loop can hand it through lock-free buffers and call a driver inside a tick.
//
// Units: joint quantities are in the joint's SI unit, metres for a prismatic joint and radians for a
// revolute one, hence the `_si` suffix (position_si: m | rad, velocity_si: m/s | rad/s, acceleration_si:
// m/s^2 | rad/s^2). Times are CLOCK_MONOTONIC nanoseconds (`_ns`), Cartesian positions metres in the table
// frame of docs/architecture.md (`_m`).
//
// Contract for implementations (in-process SimDriver in sim_driver.hpp, the UDP driver in udp_*.cpp):
//   * every method is called from the loop thread only, once per tick, and must not block: no waiting on a
//     socket (non-blocking reads only), no heap allocation, no lock shared with Python;
//   * read_state() returns false when no fresh state arrived since the previous call (sensor dropout): the
//     loop then keeps its own commanded trajectory, counts the dropout and stops the robot after its
//     sensor timeout;
//   * write_command() receives only commands that passed the safety filter;
//   * read_ball_observations() returns the number of detections written (0..max_count) since the last call;
//   * a driver with a link reports a lost link as missing states (read_state() false: the loop's sensor timeout),
//     and the first state of a new session with the robot (the robot restarted, or the session was
//     re-established after a loss) with kStateNewSession set: the robot may have moved or been reset since the
//     last state, so the loop must not resume motion by itself on it.
#pragma once

#include <atomic>
#include <cstdint>

namespace robot_rt::control {

constexpr int kMaxDof = 16;
constexpr int kMaxBallObservations = 8;

// JointState::flags bits
constexpr std::uint32_t kStateEstopInput = 1u << 0;  // the hardware e-stop input is pressed
constexpr std::uint32_t kStateFault = 1u << 1;       // the robot reports a fault (drive error, ...)
constexpr std::uint32_t kStateNewSession = 1u << 2;  // first state of a new link session (not the first session)
// The robot stopped on its own since the loop last acknowledged its stops (a recovery or a start): its stop count
// (protocol JointState::robot_stops) moved on. Set on every state until acknowledge_robot_stops().
constexpr std::uint32_t kStateRobotStopped = 1u << 3;
constexpr std::uint32_t kStateSelfStop = kStateEstopInput | kStateFault | kStateRobotStopped;

struct JointState {
  std::int64_t stamp_ns = 0;  // when the state was measured (CLOCK_MONOTONIC)
  std::int32_t dof = 0;
  std::uint32_t flags = 0;  // kState* bits
  double position_si[kMaxDof] = {};
  double velocity_si[kMaxDof] = {};
};

struct JointCommand {
  std::int64_t stamp_ns = 0;  // when the loop produced it (CLOCK_MONOTONIC)
  std::uint64_t tick = 0;     // loop tick index
  std::int32_t dof = 0;
  std::uint32_t flags = 0;  // kCommand* bits
  double position_si[kMaxDof] = {};
  double velocity_si[kMaxDof] = {};      // feed-forward, consistent with position_si
  double acceleration_si[kMaxDof] = {};  // feed-forward
};

// JointCommand::flags bits
constexpr std::uint32_t kCommandStopping = 1u << 0;  // a controlled stop is in progress (watchdog, e-stop, ...)
constexpr std::uint32_t kCommandEstop = 1u << 1;     // the e-stop is latched

struct BallObservation {
  std::int64_t stamp_ns = 0;  // exposure time of the detection (CLOCK_MONOTONIC)
  std::uint32_t camera_id = 0;
  std::uint32_t frame = 0;
  double position_m[3] = {};  // ball centre, table frame
  double confidence = 0.0;    // 0..1
};

// Health of the driver's link to the robot. `up`: states arrive (a link-timeout of the driver's own); a change
// of `peer_restarts` means the robot side restarted (a new session): it was not commanded by this loop since.
struct LinkHealth {
  bool up = true;
  std::uint64_t peer_restarts = 0;
};

class RobotDriver {
 public:
  virtual ~RobotDriver() = default;
  virtual int dof() const noexcept = 0;
  // Latest measured state; false when nothing new arrived since the previous call (dropout).
  virtual bool read_state(JointState& out) noexcept = 0;
  // Sends one safety-filtered command; false when it could not be sent (counted, logged by the loop).
  virtual bool write_command(const JointCommand& command) noexcept = 0;
  // Ball detections received since the previous call, at most max_count, oldest first; returns the count.
  virtual int read_ball_observations(BallObservation* out, int max_count) noexcept = 0;
  // Link state (the loop's link-loss reflex reads it every tick: it stops, and stops commanding, on a lost link or
  // a restarted peer); in-process drivers are always up.
  virtual LinkHealth link_health() const noexcept { return LinkHealth{}; }
  // Short static name for logs ("sim", "udp", ...).
  virtual const char* name() const noexcept = 0;
  // Whether the robot behind this driver moves only when the loop ticks (the in-process SimDriver: its dynamics
  // advance once per write): only such a driver may run on a simulated clock (ControlLoop::begin_manual). A real
  // robot moves in wall time, so ticks run as fast as the CPU computes them would reach it faster than its limits.
  virtual bool steps_with_loop_ticks() const noexcept { return false; }

  // Muting (the loop stops commanding what does not follow its commands; docs/safety.md), as joint bit masks (bit i:
  // joint i). A driver of one robot answers for all its joints at once; a CompositeDriver per part, so that its
  // other parts keep receiving the controlled stop.
  // The joints whose robot (part) reported its own stop, e-stop input or fault, in the state last read (`flags`:
  // that state's flags).
  virtual std::uint64_t self_stopped_joints(std::uint32_t flags) const noexcept {
    return (flags & kStateSelfStop) ? joint_mask(dof()) : 0u;
  }
  // The joints whose link is down.
  virtual std::uint64_t link_down_joints() const noexcept { return link_health().up ? 0u : joint_mask(dof()); }
  // The joints whose peer started a new session (a restart): all of a driver of one robot.
  virtual std::uint64_t new_session_joints() const noexcept { return joint_mask(dof()); }
  // E-stop input / fault bits a part reported in a state that could not be delivered whole yet (another part stale);
  // 0 for a driver of one robot. The loop acts on them at once, not at the next whole state.
  virtual std::uint32_t pending_stop_flags() const noexcept { return 0u; }
  // Stop writing to whatever drives a joint of `joints` (0: write to all again). True when the driver does so itself
  // and keeps writing the rest; false (a driver of one robot): the loop stops writing to it altogether.
  virtual bool mute_joints(std::uint64_t joints) noexcept {
    (void)joints;
    return false;
  }
  // Called by the loop just before mute_joints with a nonzero mask: the last joint positions (SI, dof() values) that
  // passed the loop's measurement check. A driver that answers its robot while muted (EGM) anchors its hold there,
  // not at whatever the robot reports next: a glitched feedback echoed back as the hold moved a stopped arm (the
  // twelfth audit); the EGM driver holds between this anchor and its last sent reference (EgmDriver::fix_hold).
  // Default: nothing (the robot holds by itself).
  virtual void set_hold_position(const double* position_si) noexcept { (void)position_si; }
  static constexpr std::uint64_t joint_mask(int n) noexcept { return n >= 64 ? ~0ull : ((1ull << n) - 1u); }
  // Called by ControlLoop::start() / stop() from the controlling (non real-time) thread; may allocate,
  // open sockets, etc. Default: nothing to do.
  virtual void on_start() {}
  virtual void on_stop() {}
  // A recovery: the robot's own stops in the states delivered so far are acknowledged (the robot applies commands
  // again only once they acknowledge its stop count: docs/protocol.md "Robot-side stops"). Loop thread.
  virtual void acknowledge_robot_stops() noexcept {}
  // Called by ControlLoop before on_stop(): whether the run ends in a safety stop that nobody recovered (any latched
  // reason but the end of run). A driver that can tell the robot so (UdpDriver: goodbye reason kGoodbyeStopped) does,
  // so that the robot counts it as a stop of its own and the next controller must recover first.
  virtual void set_ending_in_stop(bool stopped) noexcept { (void)stopped; }
  // Robot stops delivered so far (each change of a robot's stop count in a delivered state: one event each), so the
  // loop sees a second stop while the first is still latched. 0 for drivers without a stop count.
  virtual std::uint64_t robot_stop_events() const noexcept { return 0; }
  // Of those, the ones whose state carried neither the e-stop input nor the fault bit (nothing else says why: the
  // loop latches robot_fault for them), counted per robot, so one part's bits never explain another part's stop.
  virtual std::uint64_t unexplained_robot_stop_events() const noexcept { return 0; }

  // One running loop per driver, i.e. per robot: a second loop started on a driver that another one drives would
  // command the same robot, e.g. move it while the first one is stopped (docs/safety.md, "Runs"). ControlLoop claims
  // the driver when it starts and releases it when it stops; false when it is claimed already. A CompositeDriver
  // claims every part too, so a part cannot be driven alone while the composite runs, nor the other way round.
  virtual bool claim() noexcept {
    bool expected = false;
    return claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel);
  }
  virtual void release() noexcept { claimed_.store(false, std::memory_order_release); }
  bool claimed() const noexcept { return claimed_.load(std::memory_order_acquire); }

 private:
  std::atomic<bool> claimed_{false};
};

// Holds a driver's claim for one bare-driver call (tools and tests driving a robot without a loop): a call made
// while a loop drives the driver (or while another bare call holds it) finds the claim taken and must not touch the
// robot, since a command sent then would skip the loop's safety filter, its stop latch and its muting, and would
// race the loop's thread on the driver's buffers and sequence counter. Released when it goes out of scope.
class DriverClaim {
 public:
  explicit DriverClaim(RobotDriver& driver) noexcept : driver_(driver), held_(driver.claim()) {}
  ~DriverClaim() {
    if (held_) driver_.release();
  }
  DriverClaim(const DriverClaim&) = delete;
  DriverClaim& operator=(const DriverClaim&) = delete;
  bool held() const noexcept { return held_; }

 private:
  RobotDriver& driver_;
  bool held_;
};

}  // namespace robot_rt::control
