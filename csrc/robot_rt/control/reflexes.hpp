// Reflexes of the loop and the stop latch (libfranka's reflexes, ur_rtde's protective stop): each reflex is a
// condition checked every tick; when one fires, the loop latches its reason and performs a protective stop
// (stop category 1: the jerk-limited controlled stop of the commanded trajectory, then hold). A latched loop never
// moves again by itself: only an explicit recovery clears the latch, and only when the cause is gone
// (ControlLoop, docs/safety.md). The lifecycle (ros2_control-like) is
//   inactive --first command--> active --reflex/shutdown--> stopping --at rest--> stopped (latched)
//   stopped --recover()--> recovering --causes gone, robot at rest, re-synchronised--> active
//   recovering --refused (timeout)--> stopped;   inactive --reflex--> stopping
#pragma once

#include <cmath>
#include <cstdint>

#include "driver.hpp"
#include "stop.hpp"

namespace robot_rt::control {

// Stop reasons (bits of StopLatch::reasons()); docs/safety.md lists their detection bounds.
enum StopReason : std::uint32_t {
  kReasonEstop = 1u << 0,               // e-stop request or the robot's e-stop input
  kReasonWatchdog = 1u << 1,            // no policy command within command_timeout_s while active
  kReasonSensorTimeout = 1u << 2,       // no fresh state within sensor_timeout_s
  kReasonTrackingError = 1u << 3,       // measured position too far from the commanded trajectory
  kReasonMeasurementInvalid = 1u << 4,  // non-finite, outside the hard range, or implausibly fast measurement
  kReasonRobotFault = 1u << 5,          // the robot reports a fault
  kReasonLinkLoss = 1u << 6,            // the driver's link is down or the robot side restarted
  kReasonWorkspace = 1u << 7,           // the commanded paddle left the workspace box
  kReasonShutdown = 1u << 8,            // the run ends (duration over, Ctrl-C, policy finished): not a fault
  kReasonCount = 9,
};
constexpr std::uint32_t kReasonSafetyMask = (1u << 8) - 1u;  // every reason but shutdown

// Why a recovery cannot proceed yet (bits of the refusal): the reason bits whose cause persists, plus these.
constexpr std::uint32_t kBlockRobotMoving = 1u << 16;    // measured velocity above the rest tolerance
constexpr std::uint32_t kBlockCommandMoving = 1u << 17;  // the commanded stop has not reached rest yet
constexpr std::uint32_t kBlockShutdown = 1u << 18;       // the loop is shutting down
constexpr std::uint32_t kBlockCancelled = 1u << 19;      // the requester gave up waiting (recover()'s own timeout)
constexpr std::uint32_t kBlockFeedbackUnsteady = 1u << 20;  // the measured position has not held still for the window

enum class Lifecycle : std::int32_t { kInactive = 0, kActive = 1, kStopping = 2, kStopped = 3, kRecovering = 4 };

class StopLatch {
 public:
  // Latches `reason`; returns true when it was not latched yet (log it once).
  bool trip(std::uint32_t reason) noexcept {
    const bool fresh = (reasons_ & reason) == 0;
    reasons_ |= reason;
    return fresh;
  }
  bool latched() const noexcept { return reasons_ != 0; }
  std::uint32_t reasons() const noexcept { return reasons_; }
  void clear() noexcept { reasons_ = 0; }

 private:
  std::uint32_t reasons_ = 0;
};

// Tracking-error reflex: the measured position must stay within `threshold` of the commanded positions of the
// last `window` ticks (a tube around the commanded path: transport delay and servo lag up to the window need no
// exact delay estimate). When the loop itself was late (its previous command went out `lead_s` longer ago than a
// period), the robot has carried on with that command's velocity feed-forward meanwhile, as a real drive
// extrapolates: the tube then also reaches from the newest command to newest + velocity x lead_s (lead_s capped
// at kMaxLeadS, about when a robot's own communication watchdog brakes). Fixed storage, no allocation.
// Whether the measured position has held still: every fresh state of the last `window_ns` lies within `tolerance_si`
// of one point per joint. A start and a recovery restart the commanded trajectory at the measured position; one
// glitched feedback taken as that position is commanded to the robot (the twelfth audit: a start on a 0.3 rad feedback
// glitch moved a stopped EGM arm 0.3 rad). A glitch shorter than the window makes the states disagree and restarts it;
// one longer than the window cannot be told from a real position by the feedback alone. Fixed storage, no allocation.
class SteadyMonitor {
 public:
  void configure(int dof, const double* tolerance_si, std::int64_t window_ns) noexcept {
    dof_ = dof;
    for (int i = 0; i < dof; ++i) tolerance_[i] = tolerance_si[i];
    window_ns_ = window_ns;
    reset();
  }
  void reset() noexcept { have_ = false; }
  // A fresh, plausible state measured (received) at `now_ns`.
  void update(const double* position_si, std::int64_t now_ns) noexcept {
    bool moved = !have_;
    for (int i = 0; i < dof_ && !moved; ++i) {
      const double d = std::fabs(position_si[i] - anchor_[i]);
      if (!(d <= tolerance_[i])) {
        moved = true;
        last_joint_ = i;
        last_jump_ = d;
      }
    }
    if (moved) {
      for (int i = 0; i < dof_; ++i) anchor_[i] = position_si[i];
      since_ns_ = now_ns;
      have_ = true;
    }
    last_ns_ = now_ns;
  }
  bool steady() const noexcept { return have_ && last_ns_ - since_ns_ >= window_ns_; }
  // The joint and distance of the latest disagreement (for messages; -1 before any).
  int last_joint() const noexcept { return last_joint_; }
  double last_jump() const noexcept { return last_jump_; }
  double tolerance(int i) const noexcept { return tolerance_[i]; }

 private:
  int dof_ = 0;
  double tolerance_[kMaxDof] = {};
  double anchor_[kMaxDof] = {};
  std::int64_t window_ns_ = 0;
  std::int64_t since_ns_ = 0;
  std::int64_t last_ns_ = 0;
  bool have_ = false;
  int last_joint_ = -1;
  double last_jump_ = 0.0;
};

class TrackingMonitor {
 public:
  static constexpr int kMaxWindow = 512;
  static constexpr double kMaxLeadS = 0.1;

  void configure(int dof, int window_ticks, const double* threshold_si) noexcept {
    dof_ = dof;
    window_ = window_ticks < 1 ? 1 : (window_ticks > kMaxWindow ? kMaxWindow : window_ticks);
    for (int i = 0; i < dof; ++i) threshold_[i] = threshold_si[i];
  }
  // Forgets the history: the commanded position has been `position_si` for the whole window.
  void reset(const double* position_si) noexcept {
    for (int k = 0; k < window_; ++k)
      for (int i = 0; i < dof_; ++i) history_[k][i] = position_si[i];
    for (int i = 0; i < dof_; ++i) velocity_[i] = 0.0;
    head_ = 0;
  }
  void push(const double* command_si, const double* velocity_si = nullptr) noexcept {
    head_ = (head_ + 1) % window_;
    for (int i = 0; i < dof_; ++i) {
      history_[head_][i] = command_si[i];
      velocity_[i] = velocity_si ? velocity_si[i] : 0.0;
    }
  }
  // Largest excess of |measured - commanded tube| over the threshold; returns the joint (-1: none beyond) and the
  // deviation from the tube in `deviation`. lead_s: how much later than one period after the newest command this
  // check runs (a late loop; 0 on time).
  // `skip`: joints not checked (bit i: joint i), e.g. those of a muted part, which stay off the commanded trajectory
  // by design and would otherwise hide another joint's excess.
  int check(const double* measured_si, double& deviation, double lead_s = 0.0, std::uint64_t skip = 0) const noexcept {
    int worst = -1;
    double worst_excess = 0.0;
    deviation = 0.0;
    const double lead = lead_s > kMaxLeadS ? kMaxLeadS : (lead_s > 0.0 ? lead_s : 0.0);
    for (int i = 0; i < dof_; ++i) {
      if (skip & (1ull << i)) continue;
      double lo = history_[0][i], hi = lo;
      for (int k = 1; k < window_; ++k) {
        const double c = history_[k][i];
        lo = c < lo ? c : lo;
        hi = c > hi ? c : hi;
      }
      const double ahead = history_[head_][i] + velocity_[i] * lead;
      lo = ahead < lo ? ahead : lo;
      hi = ahead > hi ? ahead : hi;
      const double m = measured_si[i];
      const double dev = m < lo ? lo - m : (m > hi ? m - hi : 0.0);
      const double excess = dev - threshold_[i];
      if (excess > worst_excess) {
        worst_excess = excess;
        worst = i;
        deviation = dev;
      }
    }
    return worst;
  }
  double threshold(int joint) const noexcept { return threshold_[joint]; }
  int window() const noexcept { return window_; }

 private:
  int dof_ = 0;
  int window_ = 1;
  int head_ = 0;
  double threshold_[kMaxDof] = {};
  double history_[kMaxWindow][kMaxDof] = {};
  double velocity_[kMaxDof] = {};  // of the newest command
};

// Measurement plausibility: finite, inside the hard range (up to a rounding slack), |reported velocity| within
// velocity_factor x V. (A position jump inside the range is the tracking tube's to catch: it compares with the
// commanded path, which does not depend on how the link stamps or bunches states; a velocity implied by
// consecutive states does, and gave false stops on a loaded link.)
enum class MeasurementFault : std::int32_t { kNone = 0, kNonFinite = 1, kOutOfRange = 2, kImplausibleVelocity = 3 };

inline MeasurementFault check_measurement(const JointState& s, const JointLimits* hard, int dof, double velocity_factor,
                                          int& joint, double& value) noexcept {
  for (int i = 0; i < dof; ++i) {
    if (!std::isfinite(s.position_si[i]) || !std::isfinite(s.velocity_si[i])) {
      joint = i;
      value = std::isfinite(s.position_si[i]) ? s.velocity_si[i] : s.position_si[i];
      return MeasurementFault::kNonFinite;
    }
  }
  for (int i = 0; i < dof; ++i) {
    const JointLimits& l = hard[i];
    const double slack = kLimitSlack * (l.position_max - l.position_min);
    if (s.position_si[i] < l.position_min - slack || s.position_si[i] > l.position_max + slack) {
      joint = i;
      value = s.position_si[i];
      return MeasurementFault::kOutOfRange;
    }
  }
  for (int i = 0; i < dof; ++i) {
    if (std::fabs(s.velocity_si[i]) > velocity_factor * hard[i].velocity) {
      joint = i;
      value = s.velocity_si[i];
      return MeasurementFault::kImplausibleVelocity;
    }
  }
  return MeasurementFault::kNone;
}

}  // namespace robot_rt::control
