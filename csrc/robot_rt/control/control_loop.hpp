// ControlLoop: the real-time thread of robot_rt.
//
// A dedicated std::thread ticks at rate_hz on absolute deadlines (clock_nanosleep, CLOCK_MONOTONIC,
// TIMER_ABSTIME); optionally with SCHED_FIFO priority, CPU affinity and mlockall when the process is
// permitted (each refusal becomes a warning string returned by start(), never a failure). A tick delegates to
// its phases, in order (as libfranka's control loop does):
//   note_wake        wake-up latency (late ticks logged);
//   read_sensors     the driver's state (no fresh state = dropout), its plausibility, ball observations;
//   drain_commands   policy commands from a lock-free SPSC ring: NaN/Inf and out-of-workspace targets rejected,
//                    targets clamped into the soft box; discarded while the loop is stopped (latched); a goal
//                    whose forecast path from the trajectory's state of this tick leaves the workspace box is not
//                    taken (the path guard: the previous goal is kept, or the loop brakes);
//   run_reflexes     e-stop, robot fault, implausible measurement, tracking error, link loss, sensor timeout,
//                    command watchdog, shutdown: each latches its stop reason (reflexes.hpp);
//   update_lifecycle inactive -> active -> stopping -> stopped -> recovering -> active (reflexes.hpp); a
//                    recovery re-synchronises the commanded trajectory to the measured position at rest;
//   safety_step      the OTG towards the interpolated target through the safety filter, or the jerk-limited
//                    controlled stop (stop category 1) while latched;
//   guard_workspace  the commanded paddle must not leave the workspace box (a reflex too);
//   write_command    the command to the driver (not after a lost link: the robot holds by itself);
//   publish_observation, record_tick  observation for Python (seqlock, futex wake), run log, telemetry.
// No heap allocation, no lock, no Python inside a tick: all buffers are allocated before the thread starts,
// and the thread never waits for Python. Python talks to it only through the rings / seqlock / atomics.
// stop() ends a run with a controlled stop too: the commanded trajectory ramps to rest before the thread ends.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <sys/types.h>

#include <thread>
#include <vector>

#include "driver.hpp"
#include "interpolator.hpp"
#include "reflexes.hpp"
#include "runlog.hpp"
#include "safety.hpp"
#include "servo.hpp"
#include "spsc_ring.hpp"
#include "telemetry.hpp"
#include "watchdog.hpp"

namespace robot_rt::control {

enum EventCode : std::int32_t {
  kEventLoopStart = 1,
  kEventLoopStop = 2,
  kEventNonFiniteCommand = 3,     // joint, offending value
  kEventTargetClamped = 4,        // joint, requested value
  kEventWorkspaceTarget = 5,      // target rejected: axis, paddle coordinate
  kEventWorkspaceStop = 6,        // commanded pose left the box: axis, coordinate
  kEventWatchdogStop = 7,         // command older than timeout: value = age (s)
  kEventWatchdogRecovered = 8,   // retired: a stopped loop no longer resumes when commands come back
  kEventMissingPolicy = 9,        // no command at all within the timeout after start
  kEventEstop = 10,               // value 1 = request, 2 = driver input
  kEventEstopReset = 11,          // a recovery cleared an e-stop
  kEventSensorDropout = 12,       // first tick of a dropout episode
  kEventSensorTimeoutStop = 13,
  kEventSensorRecovered = 14,     // fresh states again (the loop stays stopped until a recovery)
  kEventDeadlineMiss = 15,        // value = lateness (s) of the tick's end past the next deadline
  kEventDriverWriteFailed = 16,
  kEventSafetyOverride = 17,      // tracking overridden to keep limits; joint = -1, value = joint bit mask
  kEventPolicyException = 18,     // pushed from Python
  kEventPolicyOverrun = 19,       // pushed from Python: value = policy call duration (s)
  kEventStopComplete = 20,        // controlled stop reached rest
  kEventLateWake = 21,            // woke later than late_threshold_s: value = latency (s)
  kEventCommandRejected = 22,     // a command ring entry with a wrong dof
  kEventTrackingErrorStop = 23,   // joint, deviation of the measured position from the commanded tube
  kEventMeasurementStop = 24,     // joint, offending value (non-finite, out of range, or a velocity)
  kEventRobotFaultStop = 25,      // the robot reports a fault
  kEventLinkLossStop = 26,        // value 1 = link down, 2 = the robot side restarted (new session)
  kEventShutdownStop = 27,        // the run ends: controlled stop before the thread ends
  kEventRecoverRequested = 28,
  kEventRecovered = 29,           // value = largest |measured - commanded| removed by the re-synchronisation
  kEventRecoverRefused = 30,      // value = blocker bit mask (stop reasons whose cause persists, kBlock*)
  kEventLifecycle = 31,           // value = the new Lifecycle state
  kEventCommandsMuted = 32,       // no more commands to the driver until a recovery (lost link)
  kEventWorkspacePathHold = 33,   // a goal's path would leave the box: joint 1 = previous goal kept, 2 = braking;
                                  // value = that goal's forecast excess (m)
  kEventCount = 64,
};

// Driver/link event codes (docs/protocol.md: robot_rt.control.udp.LINK_EVENT_CODES), pushed from outside the loop.
constexpr std::int32_t kFirstLinkEvent = 100, kEndLinkEvents = 200;
// The events ControlLoop::push_external_event takes: the policy runner's and the driver/link events; every other
// code is the loop's own record of what it did.
constexpr bool is_external_event_code(std::int32_t code) noexcept {
  return code == kEventPolicyException || code == kEventPolicyOverrun ||
         (code >= kFirstLinkEvent && code < kEndLinkEvents);
}

struct LoopConfig {
  double rate_hz = 1000.0;
  double policy_period_s = 0.01;   // nominal; the interpolator measures the actual command interval
  double command_timeout_s = 0.05; // watchdog: older commands start a controlled stop
  double sensor_timeout_s = 0.02;  // dropout longer than this starts a controlled stop
  double late_threshold_s = 0.001;
  // Tracking-error reflex: the measured position may leave the tube of the commanded positions of the last
  // tracking_window_s by at most tracking_error_threshold_si per joint (<= 0: derived from the servo model,
  // tracking_error_factor x servo_error_bound(A, servo)).
  double tracking_error_threshold_si[kMaxDof] = {};
  double tracking_window_s = 0.03;
  double tracking_error_factor = 3.0;
  // The robot's position servo (servo.hpp), for the derived defaults above.
  double servo_natural_frequency_hz = kServoDefaultFrequencyHz;
  double servo_damping = kServoDefaultDamping;
  // Measurement reflex: a reported |velocity| above this x the velocity limit is implausible.
  double measurement_velocity_factor = 2.0;
  // Recovery: the robot counts as at rest when |measured velocity| <= rest_velocity_fraction x V per joint; a
  // recovery whose causes persist longer than recover_timeout_s is refused.
  double rest_velocity_fraction = 0.02;
  double recover_timeout_s = 1.0;  // (0, kMaxRecoverTimeoutS]
  // A start and a recovery wait until the measured position held still this long: every fresh state within
  // rest_velocity_fraction x V x steady_window_s of one point per joint (SteadyMonitor; a start refuses after 1 s,
  // a recovery is blocked by kBlockFeedbackUnsteady). Longer than a feedback glitch the loop must not take as where
  // the robot is. (0, kMaxSteadyWindowS]
  double steady_window_s = 0.05;
  int realtime_priority = 0;  // SCHED_FIFO priority (1..99); 0 keeps normal scheduling
  int cpu = -1;               // pin the loop thread to this CPU; -1 = no affinity
  bool lock_memory = false;   // mlockall(MCL_CURRENT | MCL_FUTURE)
  std::string log_path;       // empty = no run log
  std::string log_meta_json = "{}";
  double log_flush_interval_s = 0.05;
  double log_fsync_interval_s = 1.0;
  // The path guard: a new goal is taken only if the trajectory from this tick's commanded state to it (the
  // interpolator's ramp, then the OTG; forecast_workspace at path_guard_tick_s steps) keeps the paddle this far
  // inside the workspace box. Why in the loop: a policy's own forecast starts from the state of its observation,
  // and a late call applies the goal tens of ms later, from a faster state (a logged deploy left the box that way).
  // < 0 turns it off; no effect without a workspace box.
  double path_guard_margin_m = 0.002;
  double path_guard_tick_s = 0.004;
  int path_guard_horizon_ticks = 150;
  // Velocity tracking (safety.hpp SafetyFilter::set_velocity_tracking): the commanded trajectory follows the
  // interpolated ramp's velocity, jerk-limited, and comes to rest when the ramp ends (no new goal), instead of
  // chasing the ramp's position. For policies that command joint velocities (the envs' action): their swings are
  // then executed as the env's jerk-limited robot would (robot_rt.bridge.loop_model). Goals are validated and
  // path-guarded as before (the guard forecasts this tracking); every limit is kept by the same can-stop test.
  bool velocity_tracking = false;
};

struct PolicyCommand {
  std::int64_t push_ns = 0;       // when Python pushed it
  std::int64_t obs_stamp_ns = 0;  // publish time of the observation it answers (0 = none)
  std::uint64_t obs_tick = 0;
  std::int32_t dof = 0;
  std::int32_t reserved = 0;
  double position_si[kMaxDof] = {};
};

// The longest command / sensor watchdog timeout the loop accepts (LoopConfig).
constexpr double kMaxWatchdogTimeoutS = 1.0;
// The longest a recovery may wait for its causes to go (LoopConfig::recover_timeout_s): a recovery must not
// complete long after the operator asked, when the robot's surroundings may have changed.
constexpr double kMaxRecoverTimeoutS = 10.0;
// A start waits at most 1 s more than LoopConfig::steady_window_s for the robot's position to hold still.
constexpr double kMaxSteadyWindowS = 0.5;
// The tracking-error reflex stays meaningful: a threshold (given or derived) of at most this share of its joint's
// range, from a factor in [1, kMaxTrackingErrorFactor] (a jam that far off would otherwise go unnoticed).
constexpr double kMaxTrackingErrorRangeFraction = 0.1;
constexpr double kMaxTrackingErrorFactor = 10.0;
// The path guard's forecast runs inside a tick: its horizon is bounded.
constexpr int kMaxPathGuardHorizonTicks = 1000;
constexpr double kMaxPathGuardTickS = 0.1;

struct Observation {
  std::uint64_t tick = 0;
  std::int64_t stamp_ns = 0;  // publish time
  std::uint32_t flags = 0;    // kTick* bits of this tick
  std::int32_t dof = 0;
  std::int32_t lifecycle = 0;      // Lifecycle
  std::uint32_t stop_reasons = 0;  // latched StopReason bits
  // the tick of the last recovery (0: none yet): a policy runner that sees it change resets its policy before the
  // next call, whoever asked for the recovery and however late it learns of it
  std::uint64_t recovered_tick = 0;
  std::int64_t state_stamp_ns = 0;
  double measured_position_si[kMaxDof] = {};
  double measured_velocity_si[kMaxDof] = {};
  double command_position_si[kMaxDof] = {};
  double command_velocity_si[kMaxDof] = {};
  double command_acceleration_si[kMaxDof] = {};
  double target_position_si[kMaxDof] = {};
  std::uint64_t balls_total = 0;  // ball observations received so far
  BallObservation latest_ball;    // valid when balls_total > 0
  // The most recent ball observations, newest first (a policy running slower than the camera sees every
  // detection, not only the latest one of each policy period).
  static constexpr int kRecentBalls = 16;
  std::int32_t recent_count = 0;
  BallObservation recent_balls[kRecentBalls];
};

struct LoopCounters {
  std::uint64_t ticks = 0;
  std::uint64_t deadline_misses = 0;
  std::uint64_t skipped_ticks = 0;
  std::uint64_t late_ticks = 0;
  std::uint64_t sensor_dropout_ticks = 0;
  std::uint64_t commands_accepted = 0;
  std::uint64_t commands_rejected = 0;
  std::uint64_t commands_dropped = 0;  // command ring full (Python side)
  std::uint64_t stop_ticks = 0;
  std::uint64_t commands_discarded = 0;  // arrived while the loop was stopped (latched)
  std::uint64_t commands_path_held = 0;  // not taken by the path guard (kEventWorkspacePathHold)
  std::uint64_t muted_ticks = 0;         // ticks without a command to the driver (lost link)
  std::uint64_t safety_override_ticks = 0;
  std::uint64_t driver_write_failures = 0;
  std::uint64_t events_dropped = 0;
  std::uint64_t ball_observations = 0;
  std::uint64_t event_counts[kEventCount] = {};
};

class ControlLoop {
 public:
  ControlLoop(std::shared_ptr<RobotDriver> driver, const RobotModel& model, const LoopConfig& config);
  ~ControlLoop();
  ControlLoop(const ControlLoop&) = delete;
  ControlLoop& operator=(const ControlLoop&) = delete;

  // Starts the thread; returns warnings (real-time settings refused, ...). Throws on hard errors
  // (no initial state from the driver, initial position outside the limits, log file not creatable).
  std::vector<std::string> start();
  // Ends a run: a controlled stop to rest (stop category 1) first, then the thread ends.
  void stop();
  // Asks for that controlled stop without ending the thread (stop() does it too).
  void request_shutdown() noexcept { shutdown_request_.store(true, std::memory_order_release); }
  bool shutdown_done() const noexcept { return shutdown_done_.load(std::memory_order_acquire); }
  // Deterministic stepping without the real-time thread (tests, faster-than-real-time simulation): begin_manual()
  // initialises as start() does, manual_tick(now_ns) runs one tick at that CLOCK_MONOTONIC time (advance it by the
  // period yourself; a tick more than a period after the previous one is a late wake: the commanded trajectory
  // catches up with the time that went by), end_manual() closes the driver and the run log (no ramp:
  // request_shutdown() and tick until shutdown_done() for one). Not together with start().
  void begin_manual(std::int64_t start_ns);
  std::int64_t manual_tick(std::int64_t now_ns);
  void end_manual();
  bool running() const noexcept { return running_.load(std::memory_order_acquire); }

  // --- non real-time side (single producer per ring; the Python wrapper serialises callers) ---
  bool push_command(const double* position_si, int n, std::uint64_t obs_tick, std::int64_t obs_stamp_ns) noexcept;
  bool push_external_event(std::int32_t code, std::int32_t joint, double value) noexcept;
  bool pop_event(EventRecord& out) noexcept { return events_out_.pop(out); }
  std::uint64_t latest_observation(Observation& out) const noexcept { return observation_.load(out); }
  std::uint64_t observation_sequence() const noexcept { return observation_.sequence(); }
  // Blocks (futex, no lock shared with the loop) until an observation newer than after_seq is published or
  // the timeout passes; returns its sequence (0 if none). Call without holding the GIL.
  std::uint64_t wait_observation(std::uint64_t after_seq, double timeout_s, Observation& out) const noexcept;
  // An e-stop press (from any thread). Presses are counted: a recovery releases only the presses its requester saw
  // (estop_presses() read before the stop reasons), so a press after that, even of an e-stop already latched,
  // refuses it. A press while the loop is not running latches at its first tick.
  void request_estop() noexcept { estop_presses_.fetch_add(1, std::memory_order_acq_rel); }
  std::uint64_t estop_presses() const noexcept { return estop_presses_.load(std::memory_order_acquire); }
  bool estop_requested() const noexcept {
    return estop_presses_.load(std::memory_order_acquire) != estop_released_.load(std::memory_order_acquire);
  }
  bool estop_latched() const noexcept {
    return (stop_reasons_.load(std::memory_order_acquire) & kReasonEstop) != 0;
  }
  // Recovery (from any thread): releases a latched e-stop request, then the loop re-synchronises and clears the
  // latch at a tick where every cause is gone and the robot is at rest (or refuses after recover_timeout_s).
  // `seen_reasons`: the stop reasons the requester (an operator, a recover policy) saw and decided on; a latched
  // reason outside them refuses the request at once (it would clear a stop nobody saw, e.g. an e-stop pressed
  // while the prompt was open). cancel_recover(): the requester stopped waiting; a pending recovery is refused
  // (kBlockCancelled) instead of completing later by itself.
  // recover_state(): kRecoverIdle, kRecoverPending, kRecoverDone, kRecoverRefused; recover_blockers() the bits
  // that refused it (stop reasons whose cause persists or that nobody saw, kBlock*).
  // seen_estop_presses: estop_presses() as the requester read it (before the reasons; default: at this call);
  // presses after it refuse.
  // seen_robot_stops: robot_stop_events() as the requester read it (before the reasons; default: at this call); a
  // robot stop after it (even while robot_fault is latched already) refuses.
  void request_recover(std::uint32_t seen_reasons = ~0u, std::uint64_t seen_estop_presses = ~std::uint64_t{0},
                       std::uint64_t seen_robot_stops = ~std::uint64_t{0}) noexcept;
  // The robot's own stops the loop has seen (RobotDriver::robot_stop_events: each change of its stop count).
  std::uint64_t robot_stop_events() const noexcept { return robot_stop_events_.load(std::memory_order_acquire); }
  void cancel_recover() noexcept { recover_cancel_.store(true, std::memory_order_release); }
  int recover_state() const noexcept { return recover_state_.load(std::memory_order_acquire); }
  std::uint32_t recover_blockers() const noexcept { return recover_blockers_.load(std::memory_order_acquire); }
  Lifecycle lifecycle() const noexcept { return static_cast<Lifecycle>(lifecycle_.load(std::memory_order_acquire)); }
  std::uint32_t stop_reasons() const noexcept { return stop_reasons_.load(std::memory_order_acquire); }
  // Every reason latched since start() (stop reasons of recovered stops included).
  std::uint32_t stop_reasons_seen() const noexcept { return reasons_seen_.load(std::memory_order_acquire); }
  // Upper bound of a controlled stop from anywhere inside the limits (the exit ramp waits at most this long).
  double stop_time_bound_s() const noexcept { return stop_time_bound_s_; }
  const TrackingMonitor& tracking() const noexcept { return tracking_; }
  // The longest stretch of time one tick catches the commanded trajectory up with after a late wake. Beyond it the
  // loop does not presume what the robot did (run on, or brake on its own communication watchdog): the rest of the
  // stretch is not replayed, and a robot that ran on is then the tracking reflex's. docs/safety.md, "Late wakes".
  static constexpr double kMaxCatchUpS = 0.02;
  static constexpr int kRecoverIdle = 0, kRecoverPending = 1, kRecoverDone = 2, kRecoverRefused = 3;

  LoopCounters counters() const noexcept;
  const Histogram& wake_latency() const noexcept { return *wake_latency_; }
  const Histogram& period() const noexcept { return *period_; }
  const Histogram& tick_duration() const noexcept { return *tick_duration_; }
  const Histogram& policy_round_trip() const noexcept { return *round_trip_; }
  const Histogram& command_latency() const noexcept { return *command_latency_; }
  RunLogStats log_stats() const noexcept { return log_.stats(); }
  const LoopConfig& config() const noexcept { return config_; }
  const RobotModel& model() const noexcept { return filter_.model(); }
  double period_s() const noexcept { return 1e-9 * static_cast<double>(period_ns_); }
  std::vector<std::string> thread_warnings() const;
  bool realtime_granted() const noexcept { return rt_granted_.load(); }
  bool affinity_granted() const noexcept { return affinity_granted_.load(); }
  // mlockall succeeded at the last start() (the lock itself is released by stop())
  bool memory_locked() const noexcept { return memory_lock_granted_; }

 private:
  // What one tick's phases hand on to the later ones.
  struct TickScratch {
    std::uint32_t flags = 0;   // kTick* of this tick
    bool fresh = false;        // a fresh state arrived this tick
    int bad_joint = -1;        // an implausible measurement: the joint and the offending value
    double bad_value = 0.0;
    bool stopping = false;     // latched: the safety filter brakes (or holds at rest)
    double target_p[kMaxDof];  // the target the safety filter was given (or holds while stopping)
    int steps = 1;             // periods the commanded trajectory advances this tick (advance_trajectory_clock)
  };

  void initialise(std::int64_t start_ns);          // claims the driver, starts it, then initialise_claimed
  void initialise_claimed(std::int64_t start_ns);
  void thread_main();
  // One tick; returns when its work ended (CLOCK_MONOTONIC ns), the time the deadline-miss decision used.
  std::int64_t tick(std::int64_t deadline_ns, std::int64_t wake_ns);
  // tick()'s phases, in order
  void note_wake(std::int64_t deadline_ns, std::int64_t wake_ns) noexcept;
  std::uint32_t read_sensors(std::int64_t wake_ns, TickScratch& t) noexcept;
  std::uint32_t drain_commands(std::int64_t wake_ns) noexcept;
  void run_reflexes(std::int64_t wake_ns, const TickScratch& t) noexcept;
  void update_lifecycle(std::int64_t wake_ns) noexcept;
  int advance_trajectory_clock(std::int64_t wake_ns) noexcept;
  void intermediate_step(std::int64_t wake_ns) noexcept;
  std::uint32_t safety_step(std::int64_t wake_ns, TickScratch& t) noexcept;
  void guard_workspace(std::int64_t wake_ns) noexcept;
  // goal_si null: no new goal, only the kept goal's path is checked again (false when it was; true: guard off)
  bool path_guard_admits(const double* goal_si, std::int64_t wake_ns) noexcept;
  std::uint32_t status_flags() const noexcept;
  void write_command(std::int64_t wake_ns, TickScratch& t) noexcept;
  // helpers of the phases
  void trip(std::uint32_t reason, std::int32_t code, std::int32_t joint, double value, std::int64_t wake_ns) noexcept;
  void set_lifecycle(Lifecycle next, std::int64_t wake_ns) noexcept;
  std::uint32_t recovery_blockers(std::int64_t wake_ns) const noexcept;
  bool resynchronise(std::int64_t wake_ns) noexcept;
  void refuse_recovery(std::uint32_t blockers, std::int64_t wake_ns) noexcept;
  void hand_back_driver();  // the end of a run (stop(), end_manual()): set_ending_in_stop, on_stop, release
  void mute(std::uint64_t joints, std::int64_t wake_ns) noexcept;
  double workspace_excess_m(const PaddleBox& paddle) const noexcept;
  void publish_observation(const TickScratch& t) noexcept;
  std::int64_t record_tick(std::int64_t deadline_ns, std::int64_t wake_ns, TickScratch& t) noexcept;
  void emit(std::int32_t code, std::int32_t joint, double value, std::int64_t stamp_ns) noexcept;
  void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  std::shared_ptr<RobotDriver> driver_;
  LoopConfig config_;
  std::int64_t period_ns_;
  SafetyFilter filter_;
  Interpolator interpolator_;
  FreshnessWatchdog command_watchdog_;
  FreshnessWatchdog sensor_watchdog_;
  StopLatch latch_;
  TrackingMonitor tracking_;
  double stop_time_bound_s_ = 0.0;

  // rings and shared values
  std::unique_ptr<SpscRing<PolicyCommand, 256>> commands_in_;
  std::unique_ptr<SpscRing<EventRecord, 256>> events_in_;
  std::unique_ptr<SpscRing<EventRecord, 4096>> events_out_ptr_;
  SpscRing<EventRecord, 4096>& events_out_;
  LatestValue<Observation> observation_;
  mutable std::atomic<std::uint32_t> obs_futex_{0};
  mutable std::atomic<int> obs_waiters_{0};
  RunLogWriter log_;

  // telemetry
  std::unique_ptr<Histogram> wake_latency_, period_, tick_duration_, round_trip_, command_latency_;
  std::atomic<std::uint64_t> ticks_{0}, deadline_misses_{0}, skipped_ticks_{0}, late_ticks_{0}, dropout_ticks_{0},
      commands_accepted_{0}, commands_rejected_{0}, commands_dropped_{0}, stop_ticks_{0}, override_ticks_{0},
      write_failures_{0}, events_dropped_{0}, balls_{0}, commands_discarded_{0}, muted_ticks_{0},
      commands_path_held_{0};
  std::atomic<std::uint64_t> event_counts_[kEventCount] = {};

  // thread control
  std::thread thread_;
  pid_t owner_pid_ = 0;  // the process that started thread_ (a forked child's copy must not join or send)
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_requested_{false};
  std::atomic<std::uint64_t> estop_presses_{0};   // request_estop() calls, ever
  std::atomic<std::uint64_t> robot_stop_events_{0};  // robot stops seen (published by the loop thread)
  std::atomic<std::uint64_t> recover_seen_robot_stops_{~std::uint64_t{0}};
  std::uint64_t unexplained_robot_stops_seen_ = 0;  // loop thread: the driver's unexplained ones
  std::uint64_t recover_robot_stops_ = 0;     // the robot stops the recovery's requester saw
  std::atomic<std::uint64_t> estop_released_{0};  // of those, the presses recoveries have released
  std::atomic<std::uint64_t> recover_seen_presses_{~std::uint64_t{0}};
  std::atomic<bool> recover_request_{false};
  std::atomic<bool> recover_cancel_{false};
  std::atomic<std::uint32_t> recover_seen_{~0u};  // the reasons the pending request was made for
  std::atomic<int> recover_state_{kRecoverIdle};
  std::atomic<std::uint32_t> recover_blockers_{0};
  std::atomic<bool> shutdown_request_{false};
  std::atomic<bool> shutdown_done_{false};
  std::atomic<std::int32_t> lifecycle_{0};
  std::atomic<std::uint32_t> stop_reasons_{0};
  std::atomic<std::uint32_t> reasons_seen_{0};
  std::atomic<bool> rt_granted_{false};
  std::atomic<bool> affinity_granted_{false};
  std::atomic<int> thread_ready_{0};
  bool memory_locked_ = false;
  bool manual_ = false;
  bool memory_lock_granted_ = false;
  char thread_warning_[2][256] = {};

  // loop-thread state (touched only by the loop thread while running)
  std::uint64_t tick_index_ = 0;
  std::int64_t prev_wake_ns_ = 0;
  std::int64_t prev_write_ns_ = 0;  // the tick that last pushed a command into the tracking tube (0: none yet)
  // The time the commanded trajectory has reached: it advances one period per trajectory step, and a tick after a
  // late wake takes as many steps as periods went by (at most max_catch_up_steps_), so that the commanded
  // trajectory follows the clock as the robot does (docs/safety.md, "Late wakes").
  std::int64_t trajectory_ns_ = 0;
  int max_catch_up_steps_ = 1;
  JointCommand step_scratch_;  // an intermediate trajectory step (intermediate_step)
  JointState last_state_;       // the latest state as the driver reported it (logged, observed)
  bool last_fresh_ = true;
  bool measurement_invalid_ = false;  // the latest fresh state was implausible
  // the latest fresh state that passed check_measurement and the tracking check (the start's state before any)
  double last_valid_position_si_[kMaxDof] = {};
  SteadyMonitor steady_;  // whether the measured position held still (start, recovery)
  double workspace_excess_m_ = 0.0;  // commanded paddle's distance outside the box at the previous tick
  Lifecycle state_ = Lifecycle::kInactive;
  bool muted_ = false;               // nothing written to the driver until a recovery (see mute_joints_)
  std::uint64_t mute_joints_ = 0;    // joints whose parts are sent nothing until a recovery (all: muted_)
  bool prev_override_ = false;
  bool write_failed_ = false;
  bool shutdown_tripped_ = false;
  std::uint64_t peer_restarts_seen_ = 0;
  std::int64_t recover_since_ns_ = 0;
  std::uint32_t recover_reasons_ = 0;     // the latched reasons the pending recovery was asked to clear
  std::uint64_t recover_presses_ = 0;     // the e-stop presses its requester saw
  std::uint64_t recovered_tick_ = 0;      // commands answering observations before this tick are stale
  std::int64_t run_start_ns_ = 0;         // CLOCK_MONOTONIC at this run's start: older observations are stale
  double rest_velocity_si_[kMaxDof] = {};
  std::uint64_t balls_total_ = 0;
  BallObservation latest_ball_;
  BallObservation recent_balls_[Observation::kRecentBalls];  // ring, recent_head_ = next slot
  int recent_head_ = 0;
  int recent_count_ = 0;
  JointCommand command_;
  LogItem item_;
  Observation obs_scratch_;
};

}  // namespace robot_rt::control
