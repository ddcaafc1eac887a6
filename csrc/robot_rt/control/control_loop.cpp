#include "control_loop.hpp"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace robot_rt::control {

namespace {

std::int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

timespec to_timespec(std::int64_t ns) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return ts;
}

long futex(std::atomic<std::uint32_t>* addr, int op, std::uint32_t val, const timespec* timeout) {
  return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(addr), op, val, timeout, nullptr, 0);
}

// Touches a stack region so that page faults happen before the first tick (with mlockall they stay resident).
__attribute__((noinline)) void prefault_stack() {
  volatile unsigned char buffer[128 * 1024];
  for (std::size_t i = 0; i < sizeof(buffer); i += 4096) buffer[i] = 0;
}

}  // namespace

// Distance of the blade from the workspace box (0 inside).
double ControlLoop::workspace_excess_m(const PaddleBox& paddle) const noexcept {
  return control::workspace_excess_m(filter_.model(), paddle);
}

void ControlLoop::begin_manual(std::int64_t start_ns) {
  if (running() || manual_) throw std::runtime_error("ControlLoop.begin_manual: already running");
  if (!driver_->steps_with_loop_ticks())
    throw std::runtime_error(std::string("ControlLoop.begin_manual: driver '") + driver_->name() +
                             "' drives a robot that moves in wall time; a simulated clock is only for a simulated "
                             "robot (the in-process SimDriver): use start()");
  initialise(start_ns);
  manual_ = true;
  owner_pid_ = ::getpid();
  emit(kEventLoopStart, -1, config_.rate_hz, now_ns());
}

std::int64_t ControlLoop::manual_tick(std::int64_t now_ns) {
  if (!manual_) throw std::runtime_error("ControlLoop.manual_tick: call begin_manual() first");
  return tick(now_ns, now_ns);
}

void ControlLoop::end_manual() {
  if (!manual_) return;
  if (::getpid() != owner_pid_) {  // a forked child's copy: the parent's driver and run log are not its own
    manual_ = false;
    log_.abandon_forked_copy();
    return;
  }
  emit(kEventLoopStop, -1, static_cast<double>(tick_index_), now_ns());
  manual_ = false;
  hand_back_driver();
  log_.close();
}

// (The e-stop request is not cleared here but on the loop thread once the e-stop has latched: cleared by the caller,
// an estop() followed by a recover() within one tick would never latch or log the e-stop.)
void ControlLoop::request_recover(std::uint32_t seen_reasons, std::uint64_t seen_estop_presses,
                                  std::uint64_t seen_robot_stops) noexcept {
  if (seen_robot_stops == ~std::uint64_t{0}) seen_robot_stops = robot_stop_events_.load(std::memory_order_acquire);
  recover_seen_robot_stops_.store(seen_robot_stops, std::memory_order_release);
  recover_blockers_.store(0, std::memory_order_release);
  recover_seen_.store(seen_reasons, std::memory_order_release);
  // the default: the presses made up to this call (a press after it, before the loop takes the request, is unseen)
  if (seen_estop_presses == ~std::uint64_t{0}) seen_estop_presses = estop_presses_.load(std::memory_order_acquire);
  recover_seen_presses_.store(seen_estop_presses, std::memory_order_release);
  recover_cancel_.store(false, std::memory_order_release);
  recover_state_.store(kRecoverPending, std::memory_order_release);
  recover_request_.store(true, std::memory_order_release);
}

ControlLoop::ControlLoop(std::shared_ptr<RobotDriver> driver, const RobotModel& model, const LoopConfig& config)
    : driver_(std::move(driver)),
      config_(config),
      period_ns_(0),
      commands_in_(new SpscRing<PolicyCommand, 256>()),
      events_in_(new SpscRing<EventRecord, 256>()),
      events_out_ptr_(new SpscRing<EventRecord, 4096>()),
      events_out_(*events_out_ptr_),
      wake_latency_(new Histogram()),
      period_(new Histogram()),
      tick_duration_(new Histogram()),
      round_trip_(new Histogram()),
      command_latency_(new Histogram()) {
  if (!driver_) throw std::invalid_argument("driver: expected a RobotDriver, got None");
  if (!(config_.rate_hz >= 1.0 && config_.rate_hz <= 20000.0))
    throw std::invalid_argument("rate_hz: expected a rate in [1, 20000] Hz");
  if (!(config_.command_timeout_s > 0) || !(config_.sensor_timeout_s > 0) || !(config_.policy_period_s > 0))
    throw std::invalid_argument("command_timeout_s, sensor_timeout_s, policy_period_s: expected positive values");
  // (upper bounds too: these times are converted to integer nanoseconds and tick counts, where an infinite or huge
  // value would be undefined behaviour)
  if (!(config_.policy_period_s <= 1.0))
    throw std::invalid_argument("policy_period_s: expected at most 1 s, got " + std::to_string(config_.policy_period_s));
  if (!(config_.late_threshold_s >= 0.0 && config_.late_threshold_s <= 1.0))
    throw std::invalid_argument("late_threshold_s: expected a time in [0, 1] s, got " +
                                std::to_string(config_.late_threshold_s));
  // Bounds that keep the reflexes meaningful: a watchdog of more than a second, a "rest" of a fifth of the velocity
  // limit, or a plausibility bound of ten times it would in effect switch a check off (LoopConfig is writable from
  // Python field by field, so the loop checks it itself).
  if (!(config_.command_timeout_s <= kMaxWatchdogTimeoutS) || !(config_.sensor_timeout_s <= kMaxWatchdogTimeoutS))
    throw std::invalid_argument("command_timeout_s, sensor_timeout_s: expected at most 1 s (a watchdog), got " +
                                std::to_string(config_.command_timeout_s) + ", " +
                                std::to_string(config_.sensor_timeout_s));
  if (!(config_.rest_velocity_fraction <= 0.2) || !(config_.measurement_velocity_factor <= 10.0))
    throw std::invalid_argument(
        "rest_velocity_fraction: expected at most 0.2 of the velocity limit, measurement_velocity_factor: at most 10 "
        "(larger values disable the rest and plausibility checks)");
  if (driver_->dof() != model.dof)
    throw std::invalid_argument("driver: dof " + std::to_string(driver_->dof()) + " does not match the robot model's " +
                                std::to_string(model.dof));
  period_ns_ = static_cast<std::int64_t>(std::llround(1e9 / config_.rate_hz));
  const double dt = 1e-9 * static_cast<double>(period_ns_);
  if (!filter_.configure(model, dt))
    throw std::invalid_argument(
        "model: invalid limits (need position_min < position_max, positive v/a/j limits and soft margins that leave a "
        "soft box)");
  filter_.set_velocity_tracking(config_.velocity_tracking);
  if (!(config_.tracking_window_s >= 0.0) || !(config_.servo_natural_frequency_hz > 0.0) ||
      !(config_.servo_damping > 0.0) ||
      !(config_.measurement_velocity_factor >= 1.0) || !(config_.rest_velocity_fraction > 0.0) ||
      !(config_.recover_timeout_s > 0.0) || !(config_.recover_timeout_s <= kMaxRecoverTimeoutS))
    throw std::invalid_argument(
        "tracking_window_s >= 0, servo_natural_frequency_hz, servo_damping, "
        "rest_velocity_fraction > 0, recover_timeout_s in (0, 10] s and measurement_velocity_factor >= 1 expected");
  if (!(config_.tracking_error_factor >= 1.0 && config_.tracking_error_factor <= kMaxTrackingErrorFactor))
    throw std::invalid_argument("tracking_error_factor: expected a value in [1, " +
                                std::to_string(kMaxTrackingErrorFactor) + "], got " +
                                std::to_string(config_.tracking_error_factor));
  if (!std::isfinite(config_.path_guard_margin_m))
    throw std::invalid_argument("path_guard_margin_m: expected a finite value (< 0 turns the guard off)");
  if (!(config_.path_guard_tick_s > 0.0 && config_.path_guard_tick_s <= kMaxPathGuardTickS) ||
      !(config_.path_guard_horizon_ticks >= 1 && config_.path_guard_horizon_ticks <= kMaxPathGuardHorizonTicks))
    throw std::invalid_argument("path_guard_tick_s: expected (0, " + std::to_string(kMaxPathGuardTickS) +
                                "] s, path_guard_horizon_ticks: expected [1, " +
                                std::to_string(kMaxPathGuardHorizonTicks) + "], got " +
                                std::to_string(config_.path_guard_tick_s) + ", " +
                                std::to_string(config_.path_guard_horizon_ticks));
  interpolator_.configure(model.dof, config_.policy_period_s, 2.0 * dt, 0.1);
  command_watchdog_.configure(config_.command_timeout_s);
  sensor_watchdog_.configure(config_.sensor_timeout_s);
  const double w = 2.0 * M_PI * config_.servo_natural_frequency_hz;
  double threshold[kMaxDof];
  for (int i = 0; i < model.dof; ++i) {
    const JointLimits& l = model.limits[i];
    threshold[i] = config_.tracking_error_threshold_si[i] > 0.0
                       ? config_.tracking_error_threshold_si[i]
                       : config_.tracking_error_factor * servo_error_bound(l.acceleration, w, config_.servo_damping);
    const double range = l.position_max - l.position_min;
    if (!(threshold[i] > 0.0 && threshold[i] <= kMaxTrackingErrorRangeFraction * range))
      throw std::invalid_argument(
          "tracking_error_threshold: joint " + std::to_string(i) + ": expected a threshold in (0, " +
          std::to_string(kMaxTrackingErrorRangeFraction) + " x its range " + std::to_string(range) + "], got " +
          std::to_string(threshold[i]) +
          (config_.tracking_error_threshold_si[i] > 0.0
               ? std::string()
               : std::string(" (derived: tracking_error_factor x the servo model's error bound; check "
                             "servo_natural_frequency_hz, servo_damping)")));
    config_.tracking_error_threshold_si[i] = threshold[i];
    rest_velocity_si_[i] = config_.rest_velocity_fraction * l.velocity;
    stop_time_bound_s_ = std::max(stop_time_bound_s_, dt * stop_horizon_steps(filter_.limits(i), dt));
  }
  if (!(config_.steady_window_s > 0.0 && config_.steady_window_s <= kMaxSteadyWindowS))
    throw std::invalid_argument("steady_window_s: expected (0, " + std::to_string(kMaxSteadyWindowS) + "] s, got " +
                                std::to_string(config_.steady_window_s));
  double steady_tolerance[kMaxDof];
  for (int i = 0; i < model.dof; ++i) steady_tolerance[i] = rest_velocity_si_[i] * config_.steady_window_s;
  steady_.configure(model.dof, steady_tolerance, static_cast<std::int64_t>(config_.steady_window_s * 1e9));
  const double window_ticks = std::ceil(config_.tracking_window_s / dt) + 1.0;  // (>= 0: checked above; inf fails below)
  if (!(window_ticks <= TrackingMonitor::kMaxWindow))
    throw std::invalid_argument("tracking_window_s: at most " + std::to_string((TrackingMonitor::kMaxWindow - 1) * dt) +
                                " s at this rate");
  tracking_.configure(model.dof, static_cast<int>(window_ticks), threshold);
  max_catch_up_steps_ = std::clamp(static_cast<int>(std::floor(kMaxCatchUpS / dt + 1e-9)), 1,
                                   static_cast<int>(kTickStepsMask >> kTickStepsShift));
}

ControlLoop::~ControlLoop() { stop(); }

// Everything start() does before the thread: the driver's first state, the filter at rest there, the latch, the
// lifecycle, the watchdogs and the run log.
void ControlLoop::initialise(std::int64_t start_ns) {
  if (!driver_->claim())
    throw std::runtime_error("driver: another running loop drives this robot already (one loop per robot); stop it first");
  bool started = false;
  try {
    driver_->on_start();
    started = true;
    initialise_claimed(start_ns);
  } catch (...) {
    if (started) driver_->on_stop();
    driver_->release();
    throw;
  }
}

void ControlLoop::initialise_claimed(std::int64_t start_ns) {
  // initial state: the commanded trajectory starts at rest where the robot is, once its measured position has held
  // still for steady_window_s (a glitched first state taken as the truth moved a stopped EGM arm 0.3 rad: the
  // twelfth audit). A robot that moves only with the loop's ticks (the in-process SimDriver) has no such feedback.
  JointState s;
  bool got = false;
  const bool needs_steady = !driver_->steps_with_loop_ticks();
  steady_.reset();
  const std::int64_t deadline_ns = now_ns() + static_cast<std::int64_t>((1.0 + config_.steady_window_s) * 1e9);
  std::int64_t state_read_ns = start_ns;  // when the state the run begins from was read (the sensor watchdog's start)
  for (;;) {
    JointState next;
    if (driver_->read_state(next)) {
      if (next.dof != filter_.dof()) throw std::runtime_error("driver: state has the wrong number of joints");
      got = true;
      s = next;
      if (needs_steady) state_read_ns = now_ns();
      if (!filter_.reset(s.position_si))
        throw std::runtime_error(
            "driver: initial joint position outside the joint limits (or not finite); refusing to start");
      steady_.update(s.position_si, now_ns());
      if (!needs_steady || steady_.steady()) break;
    }
    if (now_ns() > deadline_ns) {
      if (!got) throw std::runtime_error("driver: no joint state received within 1 s; cannot start");
      const int j = steady_.last_joint();
      throw std::runtime_error(
          "driver: the measured joint position did not hold still for steady_window_s = " +
          std::to_string(config_.steady_window_s) + " s within 1 s (joint " + std::to_string(j) + " jumped " +
          std::to_string(steady_.last_jump()) + " > " + std::to_string(j >= 0 ? steady_.tolerance(j) : 0.0) +
          "): a moving robot or a glitching feedback; refusing to start");
    }
    timespec ts{0, 1'000'000};
    nanosleep(&ts, nullptr);
  }
  last_state_ = s;
  last_fresh_ = true;
  measurement_invalid_ = false;
  for (int i = 0; i < s.dof; ++i) last_valid_position_si_[i] = s.position_si[i];
  tick_index_ = 0;
  prev_override_ = write_failed_ = muted_ = shutdown_tripped_ = false;
  mute_joints_ = 0;
  driver_->mute_joints(0);
  balls_total_ = 0;
  recent_head_ = recent_count_ = 0;
  latch_.clear();
  state_ = Lifecycle::kInactive;
  lifecycle_.store(0, std::memory_order_release);
  stop_reasons_.store(0, std::memory_order_release);
  reasons_seen_.store(0, std::memory_order_release);
  // (the e-stop press counters are kept: a press made while the loop was not running latches at its first tick)
  recover_request_.store(false, std::memory_order_release);
  recover_cancel_.store(false, std::memory_order_release);
  recover_state_.store(kRecoverIdle, std::memory_order_release);
  recover_blockers_.store(0, std::memory_order_release);
  shutdown_request_.store(false, std::memory_order_release);
  // targets queued while the loop was not running belong to no run of it: one left in the ring would be the new
  // run's first goal (the loop thread is not running yet: this thread is the ring's only reader)
  PolicyCommand stale_command;
  while (commands_in_->pop(stale_command)) {
  }
  shutdown_done_.store(false, std::memory_order_release);
  peer_restarts_seen_ = driver_->link_health().peer_restarts;
  // (an unacknowledged count still flags every state)
  robot_stop_events_.store(driver_->robot_stop_events(), std::memory_order_release);
  unexplained_robot_stops_seen_ = driver_->unexplained_robot_stop_events();
  recovered_tick_ = 0;
  run_start_ns_ = now_ns();  // every observation of this run is published after it
  // a robot that starts with its paddle outside the workspace box may move back in (only leaving it stops)
  PaddleBox paddle;
  workspace_excess_m_ = filter_.paddle_in_workspace(paddle) ? 0.0 : workspace_excess_m(paddle);
  tracking_.reset(s.position_si);
  prev_write_ns_ = 0;
  // The run begins now, after the wait for a steady position (>= steady_window_s; a robot moving with the loop's
  // ticks waits for none, and its clock may be simulated: start_ns). Counted from start_ns, the first tick that read
  // no new state found the sensor watchdog steady_window_s old already: every start against a robot reporting at
  // 250 Hz (4 ms apart) stopped at once on a 20 ms sensor timeout.
  const std::int64_t begin_ns = needs_steady ? now_ns() : start_ns;
  trajectory_ns_ = begin_ns;
  interpolator_.hold(s.position_si, begin_ns);
  command_watchdog_.arm(begin_ns);
  sensor_watchdog_.arm(state_read_ns);
  if (!config_.log_path.empty()) {
    log_.open(config_.log_path, config_.log_meta_json, config_.log_flush_interval_s, config_.log_fsync_interval_s);
  }
}

std::vector<std::string> ControlLoop::start() {
  if (running() || manual_) throw std::runtime_error("ControlLoop.start: already running");
  std::vector<std::string> warnings;
  initialise(now_ns());
  memory_lock_granted_ = false;
  if (config_.lock_memory && !memory_locked_) {
    if (mlockall(MCL_CURRENT | MCL_FUTURE) == 0) {
      memory_locked_ = true;
      memory_lock_granted_ = true;
    } else {
      warnings.push_back(std::string("mlockall refused (") + std::strerror(errno) +
                         "): memory is not locked; page faults may add latency");
    }
  }
  std::memset(thread_warning_, 0, sizeof(thread_warning_));
  thread_ready_.store(0);
  stop_requested_.store(false);
  running_.store(true, std::memory_order_release);
  owner_pid_ = ::getpid();
  thread_ = std::thread([this] { thread_main(); });
  while (thread_ready_.load(std::memory_order_acquire) == 0) {
    timespec ts{0, 100'000};
    nanosleep(&ts, nullptr);
  }
  for (const auto& w : thread_warnings()) warnings.push_back(w);
  return warnings;
}

std::vector<std::string> ControlLoop::thread_warnings() const {
  std::vector<std::string> out;
  for (const auto& w : thread_warning_) {
    if (w[0]) out.emplace_back(w);
  }
  return out;
}

// The end of a run: the driver learns whether it ends in a safety stop nobody recovered (any latched reason but the
// end of run itself: UdpDriver says so in its goodbye), then stops and is released.
void ControlLoop::hand_back_driver() {
  driver_->set_ending_in_stop((latch_.reasons() & ~kReasonShutdown) != 0);
  driver_->on_stop();
  driver_->release();
}

void ControlLoop::stop() {
  if (manual_) return end_manual();
  if (thread_.joinable() && ::getpid() != owner_pid_) {
    // A forked child's copy of a running loop (its destructor, or stop() in the child): the loop thread lives in the
    // parent only. Touch nothing the parent owns: no join (no such thread here), no goodbye on the parent's session,
    // no write to the parent's run log. The thread handle is leaked (destroying a joinable one would terminate).
    new std::thread(std::move(thread_));
    log_.abandon_forked_copy();
    running_.store(false, std::memory_order_release);
    return;
  }
  if (thread_.joinable()) {
    // Stop category 1 on the way out: the loop ramps the commanded trajectory to rest before it stops sending
    // (bounded by the longest stop from anywhere inside the limits).
    shutdown_request_.store(true, std::memory_order_release);
    const std::int64_t give_up = now_ns() + static_cast<std::int64_t>((stop_time_bound_s_ + 0.2) * 1e9);
    while (!shutdown_done_.load(std::memory_order_acquire) && now_ns() < give_up) {
      timespec ts{0, 1'000'000};
      nanosleep(&ts, nullptr);
    }
    stop_requested_.store(true, std::memory_order_release);
    thread_.join();
    hand_back_driver();  // (the loop thread has ended: its latch is this thread's to read)
  }
  running_.store(false, std::memory_order_release);
  log_.close();
  if (memory_locked_) {
    munlockall();
    memory_locked_ = false;
  }
}

void ControlLoop::thread_main() {
  // Normal-priority threads get a 50 us timer slack by default (sleeps may end that late); ask for none.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  if (config_.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(config_.cpu, &set);
    const int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    affinity_granted_.store(rc == 0);
    if (rc != 0)
      std::snprintf(thread_warning_[0], sizeof(thread_warning_[0]), "CPU affinity to cpu %d refused (%s)", config_.cpu,
                    std::strerror(rc));
  }
  if (config_.realtime_priority > 0) {
    sched_param param{};
    param.sched_priority = config_.realtime_priority;
    const int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param);
    rt_granted_.store(rc == 0);
    if (rc != 0)
      std::snprintf(thread_warning_[1], sizeof(thread_warning_[1]),
                    "SCHED_FIFO priority %d refused (%s): running with normal scheduling", config_.realtime_priority,
                    std::strerror(rc));
  }
  prefault_stack();
  std::int64_t deadline = now_ns() + period_ns_;
  prev_wake_ns_ = 0;
  emit(kEventLoopStart, -1, config_.rate_hz, now_ns());
  thread_ready_.store(1, std::memory_order_release);
  while (!stop_requested_.load(std::memory_order_acquire)) {
    const timespec ts = to_timespec(deadline);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
    const std::int64_t wake = now_ns();
    const std::int64_t done = tick(deadline, wake);
    deadline += period_ns_;
    if (done > deadline) {  // a deadline miss (counted and logged by tick()): skip the missed slots, keep the rate
      std::uint64_t skipped = 0;
      while (deadline <= done) {
        deadline += period_ns_;
        ++skipped;
      }
      bump(skipped_ticks_, skipped);
    }
  }
  emit(kEventLoopStop, -1, static_cast<double>(tick_index_), now_ns());
}

void ControlLoop::emit(std::int32_t code, std::int32_t joint, double value, std::int64_t stamp_ns) noexcept {
  EventRecord e{stamp_ns, tick_index_, code, joint, value};
  if (code >= 0 && code < kEventCount) bump(event_counts_[code]);
  if (!events_out_.push(e)) bump(events_dropped_);
  item_.type = kRecordEvent;
  item_.event = e;
  log_.push(item_);
}

// One tick, phase by phase (libfranka-style: the loop body only delegates). Only the loop thread runs these.
std::int64_t ControlLoop::tick(std::int64_t deadline_ns, std::int64_t wake_ns) {
  ++tick_index_;
  TickScratch t;
  note_wake(deadline_ns, wake_ns);
  t.flags |= read_sensors(wake_ns, t);
  t.flags |= drain_commands(wake_ns);
  run_reflexes(wake_ns, t);
  update_lifecycle(wake_ns);
  t.steps = advance_trajectory_clock(wake_ns);
  t.flags |= safety_step(wake_ns, t);
  guard_workspace(wake_ns);
  write_command(wake_ns, t);
  t.flags |= status_flags();
  publish_observation(t);
  return record_tick(deadline_ns, wake_ns, t);
}

// 0. the wake-up: a tick waking later than late_threshold_s after its deadline is logged.
void ControlLoop::note_wake(std::int64_t deadline_ns, std::int64_t wake_ns) noexcept {
  const std::int64_t latency = wake_ns - deadline_ns;
  if (latency > static_cast<std::int64_t>(config_.late_threshold_s * 1e9)) {
    bump(late_ticks_);
    emit(kEventLateWake, -1, 1e-9 * static_cast<double>(latency), wake_ns);
  }
}

// 1. sensors: the driver's joint state (feeds the sensor watchdog; its plausibility is checked here, the reflex
// acts in run_reflexes) and the ball observations (logged, kept).
std::uint32_t ControlLoop::read_sensors(std::int64_t wake_ns, TickScratch& t) noexcept {
  std::uint32_t flags = 0;
  JointState state;
  const bool fresh = driver_->read_state(state);
  t.fresh = fresh;
  if (fresh) {
    last_state_ = state;
    sensor_watchdog_.feed(wake_ns);
    flags |= kTickStateFresh;
    const RobotModel& m = filter_.model();
    const MeasurementFault fault =
        check_measurement(state, m.limits, m.dof, config_.measurement_velocity_factor, t.bad_joint, t.bad_value);
    measurement_invalid_ = fault != MeasurementFault::kNone;
    if (measurement_invalid_)
      steady_.reset();
    else
      steady_.update(state.position_si, wake_ns);
  } else {
    bump(dropout_ticks_);
    if (last_fresh_) emit(kEventSensorDropout, -1, 0.0, wake_ns);
  }
  last_fresh_ = fresh;
  BallObservation balls[kMaxBallObservations];
  const int n_balls = driver_->read_ball_observations(balls, kMaxBallObservations);
  for (int b = 0; b < n_balls; ++b) {
    item_.type = kRecordBall;
    item_.ball.tick = tick_index_;
    item_.ball.observation = balls[b];
    log_.push(item_);
    recent_balls_[recent_head_] = balls[b];
    recent_head_ = (recent_head_ + 1) % Observation::kRecentBalls;
    if (recent_count_ < Observation::kRecentBalls) ++recent_count_;
  }
  if (n_balls > 0) {
    balls_total_ += static_cast<std::uint64_t>(n_balls);
    latest_ball_ = balls[n_balls - 1];
    bump(balls_, static_cast<std::uint64_t>(n_balls));
  }
  return flags;
}

// 2. the events and policy commands pushed from Python; each command is validated before it becomes the goal.
// While the loop is stopped (latched) commands are discarded, and so are those older than the last recovery (still
// queued when it happened, or answering an observation from before it): the policy's stale targets never move the
// robot.
std::uint32_t ControlLoop::drain_commands(std::int64_t wake_ns) noexcept {
  const int dof = filter_.dof();
  std::uint32_t flags = 0;
  EventRecord ext;
  while (events_in_->pop(ext)) {
    ext.tick = tick_index_;
    emit(ext.code, ext.joint, ext.value, ext.stamp_ns);
  }
  PolicyCommand pc;
  while (commands_in_->pop(pc)) {
    if (pc.obs_stamp_ns > 0) {
      round_trip_->record(pc.push_ns - pc.obs_stamp_ns);
      command_latency_->record(wake_ns - pc.obs_stamp_ns);
    }
    // an observation published before this run began belongs to an earlier run (ticks restart at 0 every run, so
    // only its time tells: a command answering one is as stale as one from before a recovery)
    const bool earlier_run = pc.obs_stamp_ns != 0 && pc.obs_stamp_ns < run_start_ns_;
    // obs_tick 0 (the run's first observation, or none named) after a recovery is as stale as any tick before it
    if (latch_.latched() || earlier_run || pc.obs_tick < recovered_tick_) {
      bump(commands_discarded_);
      continue;
    }
    if (pc.dof != dof) {
      bump(commands_rejected_);
      interpolator_.forget_previous_goal();
      emit(kEventCommandRejected, -1, static_cast<double>(pc.dof), wake_ns);
      continue;
    }
    int joint = -1;
    double value = 0.0;
    const std::uint32_t verdict = filter_.validate_target(pc.position_si, nullptr, joint, value);
    if (verdict & kTargetNonFinite) {
      bump(commands_rejected_);
      interpolator_.forget_previous_goal();
      emit(kEventNonFiniteCommand, joint, value, wake_ns);
      continue;
    }
    if (verdict & kTargetWorkspace) {
      bump(commands_rejected_);
      interpolator_.forget_previous_goal();
      emit(kEventWorkspaceTarget, joint, value, wake_ns);
      // The session is alive and its target finite: as for a path-guard hold, the kept goal's path is forecast
      // again from this tick's state (braking when it leaves the box: a forecast covers 0.6 s, a move can take
      // longer) and the watchdog is fed. Not feeding it stopped a robot whose policy held it where a stop had left
      // its blade partly outside the box, 50 ms after every recovery (the review of the eighth audit's fixes). A
      // robot outside the box comes back by a target inside it, never by one outside (which could slide along the
      // box's outside, e.g. under its floor over the table). Without the path guard nothing re-checks the kept
      // goal, so the watchdog is not fed.
      if (!path_guard_admits(nullptr, wake_ns)) command_watchdog_.feed(wake_ns);
      continue;
    }
    if (verdict & kTargetClamped) emit(kEventTargetClamped, joint, value, wake_ns);
    command_watchdog_.feed(wake_ns);  // the session is alive, whether or not the path guard takes its goal
    if (!path_guard_admits(pc.position_si, wake_ns)) {
      bump(commands_path_held_);
      interpolator_.note_unset_goal(pc.position_si);
      continue;
    }
    bump(commands_accepted_);
    interpolator_.set_goal(pc.position_si, wake_ns);
    flags |= kTickNewTarget;
    if (state_ == Lifecycle::kInactive) set_lifecycle(Lifecycle::kActive, wake_ns);
  }
  return flags;
}

// The path guard (LoopConfig::path_guard_margin_m): true when the trajectory to `goal_si` from this tick's commanded
// state (the interpolator's ramp from its target now, then the OTG) keeps the paddle inside the workspace box less
// the margin, or no further out than it is now (a robot outside may come back). Else the goal is not taken, and of
// the two fallbacks the first whose path stays in is used: keep the current goal (already on its way), or brake
// (the goal becomes the commanded position, no ramp); when neither stays in, the one with the least excursion. The
// workspace stop (guard_workspace) still watches every step: this only keeps a goal from being taken that would
// trip it. Up to three forecasts (~0.15 ms each with 150 ticks of 4 ms), only on a new goal or a target refused for
// the box (goal_si null: the kept goal alone is checked again).
bool ControlLoop::path_guard_admits(const double* goal_si, std::int64_t wake_ns) noexcept {
  const RobotModel& m = filter_.model();
  if (config_.path_guard_margin_m < 0.0 || !m.has_workspace || !m.has_chain) return true;
  const int dof = filter_.dof();
  AxisState start[kMaxDof];
  double now_p[kMaxDof], ramp_p[kMaxDof], ramp_v[kMaxDof], held[kMaxDof];
  for (int i = 0; i < dof; ++i) {
    start[i] = filter_.state(i);
    now_p[i] = start[i].p;
  }
  const double tick_s = config_.path_guard_tick_s, margin_m = config_.path_guard_margin_m;
  const int horizon = config_.path_guard_horizon_ticks;
  const bool vt = config_.velocity_tracking;
  const double hold_s = config_.policy_period_s;
  // With velocity tracking a goal's path is its velocity for its ramp and the hold, then rest: forecast_workspace
  // is given a ramp with that velocity and duration (its end point is where the reference would be, not a goal the
  // joints are steered to).
  double vel[kMaxDof], synth_start[kMaxDof], synth_goal[kMaxDof];
  auto velocity_path = [&](const double* velocity, double duration_s) {
    for (int i = 0; i < dof; ++i) {
      synth_start[i] = now_p[i];
      synth_goal[i] = now_p[i] + velocity[i] * duration_s;
    }
    return forecast_workspace(m, start, synth_goal, synth_start, duration_s, tick_s, horizon, margin_m, true)
        .max_excess_m;
  };
  const double allowed = forecast_workspace(m, start, now_p, nullptr, 0.0, tick_s, 0, margin_m, vt).max_excess_m + 1e-6;
  interpolator_.sample(wake_ns, ramp_p, ramp_v);
  const double ramp_s = interpolator_.ramp_duration_s(wake_ns);
  double excess_new = std::numeric_limits<double>::infinity();  // no new goal: only the kept one is checked
  if (goal_si != nullptr) {
    if (vt) {
      interpolator_.goal_velocity_for(goal_si, vel);
      excess_new = velocity_path(vel, ramp_s + hold_s);
    } else {
      excess_new = forecast_workspace(m, start, goal_si, ramp_p, ramp_s, tick_s, horizon, margin_m, false).max_excess_m;
    }
    if (excess_new <= allowed) return true;
  }
  // keep the current goal: where the interpolator's present ramp ends (its target holds there afterwards); with
  // velocity tracking, its velocity for what is left of its ramp and hold
  interpolator_.goal(held);
  double excess_keep;
  if (vt) {
    const double left_s = interpolator_.velocity_remaining_s(wake_ns, hold_s, vel);
    excess_keep = velocity_path(vel, left_s);
  } else {
    excess_keep = forecast_workspace(m, start, held, ramp_p, interpolator_.remaining_s(wake_ns), tick_s, horizon,
                                     margin_m, false)
                      .max_excess_m;
  }
  bool brake = false;
  if (!(excess_keep <= allowed)) {
    const double excess_brake = forecast_workspace(m, start, now_p, nullptr, 0.0, tick_s, horizon, margin_m, vt).max_excess_m;
    brake = excess_brake <= allowed || excess_brake < excess_keep;
  }
  if (brake) interpolator_.hold(now_p, wake_ns);
  if (goal_si != nullptr || brake) emit(kEventWorkspacePathHold, brake ? 2 : 1, excess_new, wake_ns);
  return false;
}

// Latches a stop reason; its event is logged the first time (per stop) only.
void ControlLoop::trip(std::uint32_t reason, std::int32_t code, std::int32_t joint, double value,
                       std::int64_t wake_ns) noexcept {
  if (latch_.trip(reason)) emit(code, joint, value, wake_ns);
  stop_reasons_.store(latch_.reasons(), std::memory_order_release);
  reasons_seen_.store(reasons_seen_.load(std::memory_order_relaxed) | reason, std::memory_order_release);
}

// Stops commanding the joints `joints` (bit i: joint i) until a recovery: the driver mutes the parts that drive them
// (a CompositeDriver; its other parts keep receiving the controlled stop) or, a driver of one robot, the loop stops
// writing altogether. Logged with the muted joints' mask each time it grows.
void ControlLoop::mute(std::uint64_t joints, std::int64_t wake_ns) noexcept {
  const std::uint64_t all = RobotDriver::joint_mask(filter_.dof());
  const std::uint64_t next = mute_joints_ | (joints & all);
  if (next == mute_joints_ || muted_) return;
  mute_joints_ = next;
  driver_->set_hold_position(last_valid_position_si_);
  const bool per_part = driver_->mute_joints(next);
  muted_ = !per_part || next == all;
  emit(kEventCommandsMuted, -1, static_cast<double>(muted_ ? all : next), wake_ns);
}

// 3. the reflexes: each condition latches its stop reason (the stop itself starts in this tick's safety step).
void ControlLoop::run_reflexes(std::int64_t wake_ns, const TickScratch& t) noexcept {
  // e-stop: a request from Python, or the robot's e-stop input (also one a part of a composite robot reported in a
  // state that could not be delivered whole: another part stale or its link down)
  const std::uint32_t kept_stop = driver_->pending_stop_flags();
  const bool estop_input = ((last_state_.flags | kept_stop) & kStateEstopInput) != 0;
  if (estop_requested() || estop_input)
    trip(kReasonEstop, kEventEstop, -1, estop_input ? 2.0 : 1.0, wake_ns);
  const bool fault = (t.fresh && (last_state_.flags & kStateFault)) || (kept_stop & kStateFault);
  if (fault) trip(kReasonRobotFault, kEventRobotFaultStop, -1, 0.0, wake_ns);
  // the robot stopped on its own since its stops were last acknowledged (its stop count moved on), also when the
  // states that said why were lost: a fault of its own unless the e-stop input or a fault already says so
  const bool robot_stopped = (t.fresh && (last_state_.flags & kStateRobotStopped)) || (kept_stop & kStateRobotStopped);
  // A loop that stopped and sends nothing at all (muted) leaves the robot without commands, and the robot then counts
  // a stop of its own (docs/protocol.md, "Robot-side stops": its command timeout). That stop still has to be
  // acknowledged by a recovery (robot_stop_events), but it is the loop's own stop seen from the robot, not a robot
  // fault: it adds no robot_fault reason (a tracking stop stays a tracking stop for the operator and deploy()).
  const bool own_silence = muted_ && latch_.latched();
  if (robot_stopped && !estop_input && !fault && !own_silence && !(latch_.reasons() & (kReasonEstop | kReasonRobotFault)))
    trip(kReasonRobotFault, kEventRobotFaultStop, -1, 1.0, wake_ns);
  // every new robot stop is one: also while e-stop or robot_fault is latched already (a recovery must have seen it:
  // robot_stop_events), and latched as robot_fault unless this state's e-stop input or fault bit says why
  robot_stop_events_.store(driver_->robot_stop_events(), std::memory_order_release);
  const std::uint64_t unexplained = driver_->unexplained_robot_stop_events();  // (per robot of a composite)
  if (unexplained != unexplained_robot_stops_seen_) {
    unexplained_robot_stops_seen_ = unexplained;
    if (!own_silence) {
      if (latch_.reasons() & kReasonRobotFault) emit(kEventRobotFaultStop, -1, 2.0, wake_ns);  // a further one
      trip(kReasonRobotFault, kEventRobotFaultStop, -1, 1.0, wake_ns);
    }
  }
  // A robot (part) that stopped itself does not follow the commands: it is sent neither the rest of the controlled
  // stop nor its rest, else it would run there from wherever it stopped once its own stop cleared (an audit measured
  // 1.7 rad at 1.2 V through the sim server's e-stop input). It holds by itself; only a recovery unmutes it.
  if (estop_input || fault || robot_stopped) mute(driver_->self_stopped_joints(last_state_.flags | kept_stop), wake_ns);
  if (t.fresh && measurement_invalid_) trip(kReasonMeasurementInvalid, kEventMeasurementStop, t.bad_joint, t.bad_value, wake_ns);
  // tracking error: on plausible fresh states, while the loop commands the robot
  if (t.fresh && !measurement_invalid_ && !muted_) {
    double deviation = 0.0;
    // a late tick: the robot went on with the previous command's velocity for that long. The tube reaches ahead no
    // further than this tick's catch-up replays (advance_trajectory_clock: at most max_catch_up_steps_ periods): a
    // robot that ran on beyond it would receive a command behind it, which pulls it back (an audit measured 0.14 rad
    // at twice the acceleration limit after a 90 ms stall); such a robot is the tracking reflex's (stop and mute)
    const double late_s = prev_write_ns_ > 0 ? 1e-9 * static_cast<double>(wake_ns - prev_write_ns_ - period_ns_) : 0.0;
    const double lead_s = std::min(late_s, 1e-9 * static_cast<double>((max_catch_up_steps_ - 1) * period_ns_));
    // the joints of muted parts stay off the commanded trajectory by design: not checked (they would hide another
    // joint's excess, and a jam of the healthy part would never mute it)
    const int joint = tracking_.check(last_state_.position_si, deviation, lead_s, mute_joints_);
    if (joint >= 0) {
      trip(kReasonTrackingError, kEventTrackingErrorStop, joint, deviation, wake_ns);
      // off the commanded trajectory (jammed, blocked, stopped by itself): its part is muted at once, since once
      // freed it would rush to wherever the stop's ramp then is (up to the stopping distance away)
      mute(1ull << joint, wake_ns);
    } else {
      // a plausible state on the commanded trajectory: where a muted robot is held (set_hold_position). Not a state
      // that failed either check: a glitched feedback (0.3 rad for 40 ms) anchored there moved a stopped arm 0.3 rad
      for (int i = 0; i < filter_.dof(); ++i) last_valid_position_si_[i] = last_state_.position_si[i];
    }
  }
  // link: down (the driver's link timeout) or the robot side restarted (a new session: it was not commanded by this
  // loop since, so the loop stops commanding it at once)
  const LinkHealth link = driver_->link_health();
  const bool new_session = (t.fresh && (last_state_.flags & kStateNewSession)) || link.peer_restarts != peer_restarts_seen_;
  peer_restarts_seen_ = link.peer_restarts;
  if (new_session) {
    trip(kReasonLinkLoss, kEventLinkLossStop, -1, 2.0, wake_ns);
    // a session this loop never commanded: nothing is sent to it (to that part of a composite robot)
    const std::uint64_t restarted = driver_->new_session_joints();
    mute(restarted != 0 ? restarted : ~0ull, wake_ns);
  } else if (!link.up) {
    trip(kReasonLinkLoss, kEventLinkLossStop, -1, 1.0, wake_ns);
    // the loop cannot see that part; when its link comes back it may be anywhere its own stop left it
    mute(driver_->link_down_joints(), wake_ns);
  }
  switch (sensor_watchdog_.update(wake_ns)) {
    case Transition::kTripped:
      trip(kReasonSensorTimeout, kEventSensorTimeoutStop, -1, sensor_watchdog_.age_s(wake_ns), wake_ns);
      break;
    case Transition::kCleared:
      emit(kEventSensorRecovered, -1, 0.0, wake_ns);
      break;
    default:
      break;
  }
  // the command watchdog latches only while active: before the first command the loop holds anyway (a missing
  // policy is logged once), and while stopped commands are discarded
  if (command_watchdog_.update(wake_ns) == Transition::kTripped) {
    if (!command_watchdog_.ever_fed()) {
      emit(kEventMissingPolicy, -1, command_watchdog_.age_s(wake_ns), wake_ns);
    } else if (state_ == Lifecycle::kActive) {
      trip(kReasonWatchdog, kEventWatchdogStop, -1, command_watchdog_.age_s(wake_ns), wake_ns);
    }
  }
  if (shutdown_request_.load(std::memory_order_acquire) && !shutdown_tripped_) {
    shutdown_tripped_ = true;
    trip(kReasonShutdown, kEventShutdownStop, -1, 0.0, wake_ns);
  }
}

void ControlLoop::set_lifecycle(Lifecycle next, std::int64_t wake_ns) noexcept {
  if (next == state_) return;
  state_ = next;
  lifecycle_.store(static_cast<std::int32_t>(next), std::memory_order_release);
  emit(kEventLifecycle, -1, static_cast<double>(next), wake_ns);
}

// Why a recovery cannot proceed at this tick (0: it can).
std::uint32_t ControlLoop::recovery_blockers(std::int64_t wake_ns) const noexcept {
  std::uint32_t b = 0;
  if (shutdown_tripped_) b |= kBlockShutdown;
  if (!filter_.at_rest()) b |= kBlockCommandMoving;
  const std::uint32_t kept_stop = driver_->pending_stop_flags();  // a part's stop not yet delivered in a whole state
  if (estop_requested() || ((last_state_.flags | kept_stop) & kStateEstopInput)) b |= kReasonEstop;
  if ((last_state_.flags | kept_stop) & kStateFault) b |= kReasonRobotFault;
  if (sensor_watchdog_.tripped() || sensor_watchdog_.age_s(wake_ns) > config_.sensor_timeout_s) b |= kReasonSensorTimeout;
  if (!driver_->link_health().up) b |= kReasonLinkLoss;
  if (measurement_invalid_) b |= kReasonMeasurementInvalid;
  // the recovery restarts the commanded trajectory at the measured position: not at a glitch
  if (!steady_.steady() && !driver_->steps_with_loop_ticks()) b |= kBlockFeedbackUnsteady;
  for (int i = 0; i < filter_.dof(); ++i) {
    if (!(std::fabs(last_state_.velocity_si[i]) <= rest_velocity_si_[i])) b |= kBlockRobotMoving;
  }
  return b;
}

// The recovery itself: the commanded trajectory restarts at rest where the robot is, so no step is commanded.
// False (nothing changed, the latch stays) when the filter cannot restart there.
bool ControlLoop::resynchronise(std::int64_t wake_ns) noexcept {
  const int dof = filter_.dof();
  // A plausible measurement may lie up to kLimitSlack x span beyond a hard limit (rounding); the filter restarts
  // only inside them, so the restart point is the measured one clamped into the hard limits (nanometres away).
  // Ignoring a refused reset would leave the commanded trajectory where it was: a step to the old rest.
  double restart[kMaxDof];
  double offset = 0.0;
  for (int i = 0; i < dof; ++i) {
    const JointLimits& l = filter_.model().limits[i];
    restart[i] = std::fmin(std::fmax(last_state_.position_si[i], l.position_min), l.position_max);
    offset = std::max(offset, std::fabs(restart[i] - filter_.state(i).p));
  }
  if (!filter_.reset(restart)) return false;
  interpolator_.hold(restart, wake_ns);
  tracking_.reset(restart);
  PolicyCommand stale;
  while (commands_in_->pop(stale)) bump(commands_discarded_);
  driver_->acknowledge_robot_stops();  // the robot takes commands again (it restarts where it holds: here)
  recovered_tick_ = tick_index_;
  command_watchdog_.feed(wake_ns);  // the policy has command_timeout_s to send a fresh target
  PaddleBox paddle;
  workspace_excess_m_ = filter_.paddle_in_workspace(paddle) ? 0.0 : workspace_excess_m(paddle);
  if (latch_.reasons() & kReasonEstop) emit(kEventEstopReset, -1, 0.0, wake_ns);
  latch_.clear();
  stop_reasons_.store(0, std::memory_order_release);
  muted_ = false;
  mute_joints_ = 0;
  driver_->mute_joints(0);
  emit(kEventRecovered, -1, offset, wake_ns);
  set_lifecycle(Lifecycle::kActive, wake_ns);
  recover_state_.store(kRecoverDone, std::memory_order_release);
  return true;
}

// 4. the lifecycle: a latched reason starts the protective stop; recovery requests are served here.
void ControlLoop::update_lifecycle(std::int64_t wake_ns) noexcept {
  if (latch_.latched() && (state_ == Lifecycle::kInactive || state_ == Lifecycle::kActive))
    set_lifecycle(Lifecycle::kStopping, wake_ns);
  if (recover_request_.exchange(false, std::memory_order_acq_rel)) {
    const std::uint32_t seen = recover_seen_.load(std::memory_order_acquire);
    // The operator releases the e-stop presses they saw, once latched (this tick's reflexes ran first). A press
    // after their reading (counted, so even a second press of an e-stop already latched) stays requested: it is a
    // blocker, and refuses this recovery below.
    const std::uint64_t presses = estop_presses_.load(std::memory_order_acquire);
    const std::uint64_t seen_presses = recover_seen_presses_.load(std::memory_order_acquire);
    if ((latch_.reasons() & kReasonEstop) && (seen & kReasonEstop)) {
      const std::uint64_t release = seen_presses < presses ? seen_presses : presses;
      if (release > estop_released_.load(std::memory_order_acquire))
        estop_released_.store(release, std::memory_order_release);
    }
    recover_presses_ = seen_presses;
    recover_robot_stops_ = recover_seen_robot_stops_.load(std::memory_order_acquire);
    if (state_ == Lifecycle::kStopping || state_ == Lifecycle::kStopped) {
      emit(kEventRecoverRequested, -1, 0.0, wake_ns);
      recover_since_ns_ = wake_ns;
      // only the reasons the requester saw may be cleared: any other refuses the request below, at once
      recover_reasons_ = latch_.reasons() & seen;
      set_lifecycle(Lifecycle::kRecovering, wake_ns);
    } else if (state_ != Lifecycle::kRecovering) {
      recover_state_.store(kRecoverDone, std::memory_order_release);  // nothing latched: nothing to recover
    }
  }
  if (state_ == Lifecycle::kRecovering) {
    // a stop that latched after the request was not what the operator saw and asked to recover from: the recovery
    // is refused with it (and a new request, made knowing it, is needed), not cleared along with the old ones
    // (an e-stop pressed after the requester read the presses: unseen, even when the e-stop was latched already)
    const bool unseen_press = estop_requested() && estop_presses_.load(std::memory_order_acquire) > recover_presses_;
    const bool unseen_robot_stop = robot_stop_events_.load(std::memory_order_relaxed) > recover_robot_stops_;
    const std::uint32_t latched_since = (latch_.reasons() & ~recover_reasons_) | (unseen_press ? kReasonEstop : 0u) |
                                        (unseen_robot_stop ? kReasonRobotFault : 0u);
    const std::uint32_t blockers = recovery_blockers(wake_ns);
    if (latched_since != 0) {
      refuse_recovery(latched_since | blockers, wake_ns);
    } else if (recover_cancel_.exchange(false, std::memory_order_acq_rel)) {
      refuse_recovery(kBlockCancelled | blockers, wake_ns);
    } else if (blockers == 0) {
      if (!resynchronise(wake_ns)) refuse_recovery(kReasonMeasurementInvalid, wake_ns);
    } else if (wake_ns - recover_since_ns_ > static_cast<std::int64_t>(config_.recover_timeout_s * 1e9)) {
      refuse_recovery(blockers, wake_ns);
    }
  }
}

void ControlLoop::refuse_recovery(std::uint32_t blockers, std::int64_t wake_ns) noexcept {
  emit(kEventRecoverRefused, -1, static_cast<double>(blockers), wake_ns);
  recover_blockers_.store(blockers, std::memory_order_release);
  recover_state_.store(kRecoverRefused, std::memory_order_release);
  set_lifecycle(filter_.at_rest() ? Lifecycle::kStopped : Lifecycle::kStopping, wake_ns);
}

// 5a. the trajectory clock: how many periods the commanded trajectory advances this tick. On time one; after a late
// wake as many as went by since the last step (rounded to the nearest period), so that the commanded trajectory
// follows the clock as a robot does: while no command came, the robot ran on the last one's velocity feed-forward
// (libfranka hands its motion generators the elapsed `period` for the same reason). At most max_catch_up_steps_;
// beyond, the trajectory's clock jumps to now and the stretch is not replayed.
int ControlLoop::advance_trajectory_clock(std::int64_t wake_ns) noexcept {
  const std::int64_t behind = wake_ns - trajectory_ns_;
  std::int64_t steps = behind > 0 ? (behind + period_ns_ / 2) / period_ns_ : 0;
  if (steps < 1) steps = 1;  // a tick always advances one period (as before: ticks come at most once per period)
  if (steps > max_catch_up_steps_) {
    trajectory_ns_ += (steps - max_catch_up_steps_) * period_ns_;
    steps = max_catch_up_steps_;
  }
  trajectory_ns_ += steps * period_ns_;
  return static_cast<int>(steps);
}

// 5. the safety filter: the jerk-limited controlled stop while latched (then hold at rest), else the OTG towards the
// interpolated target; t.steps trajectory steps (every one a regular tick of the filter, inside every limit), each
// intermediate one guarded and entered into the tracking tube like the last (the one the robot receives).
std::uint32_t ControlLoop::safety_step(std::int64_t wake_ns, TickScratch& t) noexcept {
  const int dof = filter_.dof();
  std::uint32_t flags = 0;
  t.stopping = latch_.latched();
  t.flags |= (static_cast<std::uint32_t>(t.steps) << kTickStepsShift) & kTickStepsMask;
  if (t.stopping) {
    for (int k = 0; k < t.steps; ++k) {
      if (k > 0) intermediate_step(wake_ns);
      filter_.step(nullptr, nullptr, true);
    }
    for (int i = 0; i < dof; ++i) t.target_p[i] = filter_.state(i).p;
    interpolator_.hold(t.target_p, wake_ns);
    bump(stop_ticks_);
    flags |= kTickStopping;
    prev_override_ = false;
    if (state_ == Lifecycle::kStopping && filter_.at_rest()) {
      emit(kEventStopComplete, -1, 0.0, wake_ns);
      set_lifecycle(Lifecycle::kStopped, wake_ns);
    }
    if (state_ == Lifecycle::kStopped && shutdown_tripped_) shutdown_done_.store(true, std::memory_order_release);
  } else {
    double target_v[kMaxDof];
    std::uint32_t overridden = 0;
    for (int k = 0; k < t.steps; ++k) {
      if (k > 0) intermediate_step(wake_ns);
      // the interpolated target at this step's time (the last step's is the tick's own)
      const std::int64_t step_ns = wake_ns - static_cast<std::int64_t>(t.steps - 1 - k) * period_ns_;
      interpolator_.sample(step_ns, t.target_p, target_v);
      if (config_.velocity_tracking) interpolator_.sample_velocity(step_ns, config_.policy_period_s, target_v);
      overridden |= filter_.step(t.target_p, target_v, false);
    }
    if (overridden) {
      flags |= kTickSafetyOverride;
      bump(override_ticks_);
      if (!prev_override_) emit(kEventSafetyOverride, -1, static_cast<double>(overridden), wake_ns);
    }
    prev_override_ = overridden != 0;
  }
  return flags;
}

// A trajectory step the robot does not receive (all but the last of a catching-up tick): the workspace guard checks
// it, and it enters the tracking tube, all the same (it lies on the trajectory the robot's held velocity
// feed-forward stood in for). A stop it latches begins at the next tick, as one latched by the tick's last step.
void ControlLoop::intermediate_step(std::int64_t wake_ns) noexcept {
  guard_workspace(wake_ns);
  filter_.fill_command(step_scratch_);
  tracking_.push(step_scratch_.position_si, step_scratch_.velocity_si);
}

// 6. the workspace guard: stop when the commanded paddle leaves the box or moves further out; a motion back towards
// the box (a robot started or recovered outside it) is allowed, else the robot could never return.
void ControlLoop::guard_workspace(std::int64_t wake_ns) noexcept {
  PaddleBox paddle;
  const bool in_box = filter_.paddle_in_workspace(paddle);
  const double excess_m = in_box ? 0.0 : workspace_excess_m(paddle);
  const bool leaving = !in_box && (workspace_excess_m_ == 0.0 || excess_m > workspace_excess_m_ + 1e-6);
  workspace_excess_m_ = excess_m;
  if (leaving) {
    double coordinate = 0.0;
    const int axis = std::max(0, workspace_axis_out(filter_.model(), paddle, coordinate));
    trip(kReasonWorkspace, kEventWorkspaceStop, axis, coordinate, wake_ns);
  }
}

// The tick flags of the latched reasons and the lifecycle state.
std::uint32_t ControlLoop::status_flags() const noexcept {
  const std::uint32_t r = latch_.reasons();
  std::uint32_t flags = 0;
  if (r & kReasonEstop) flags |= kTickEstop;
  if (r & kReasonWatchdog) flags |= kTickWatchdog;
  if (r & kReasonSensorTimeout) flags |= kTickSensorTimeout;
  if (r & kReasonWorkspace) flags |= kTickWorkspaceStop;
  if (r & kReasonLinkLoss) flags |= kTickLinkLoss;
  if (r & kReasonTrackingError) flags |= kTickTrackingError;
  if (r & kReasonMeasurementInvalid) flags |= kTickMeasurementInvalid;
  if (r & kReasonRobotFault) flags |= kTickRobotFault;
  if (r & kReasonShutdown) flags |= kTickShutdown;
  if (command_watchdog_.ever_fed()) flags |= kTickHasCommand;
  flags |= (static_cast<std::uint32_t>(state_) << kTickLifecycleShift) & kTickLifecycleMask;
  return flags;
}

// 7. the command out to the driver (a failed write is logged once per run of failures); none while muted.
void ControlLoop::write_command(std::int64_t wake_ns, TickScratch& t) noexcept {
  filter_.fill_command(command_);
  command_.tick = tick_index_;
  command_.stamp_ns = wake_ns;
  tracking_.push(command_.position_si, command_.velocity_si);
  prev_write_ns_ = wake_ns;
  if (muted_) {
    t.flags |= kTickMuted;
    bump(muted_ticks_);
    return;
  }
  if (mute_joints_ != 0) t.flags |= kTickPartMuted;  // some parts sent nothing, the others this command
  command_.flags = (t.stopping ? kCommandStopping : 0u) | ((latch_.reasons() & kReasonEstop) ? kCommandEstop : 0u);
  if (!driver_->write_command(command_)) {
    bump(write_failures_);
    if (!write_failed_) emit(kEventDriverWriteFailed, -1, 0.0, wake_ns);
    write_failed_ = true;
  } else {
    write_failed_ = false;
  }
}

// 7. the observation for Python (seqlock'd latest value; waiting readers are woken without blocking).
void ControlLoop::publish_observation(const TickScratch& t) noexcept {
  const int dof = filter_.dof();
  Observation& o = obs_scratch_;
  o.tick = tick_index_;
  o.flags = t.flags;
  o.dof = dof;
  o.lifecycle = static_cast<std::int32_t>(state_);
  o.stop_reasons = latch_.reasons();
  o.recovered_tick = recovered_tick_;
  o.state_stamp_ns = last_state_.stamp_ns;
  for (int i = 0; i < dof; ++i) {
    o.measured_position_si[i] = last_state_.position_si[i];
    o.measured_velocity_si[i] = last_state_.velocity_si[i];
    o.command_position_si[i] = command_.position_si[i];
    o.command_velocity_si[i] = command_.velocity_si[i];
    o.command_acceleration_si[i] = command_.acceleration_si[i];
    o.target_position_si[i] = t.target_p[i];
  }
  o.balls_total = balls_total_;
  o.latest_ball = latest_ball_;
  o.recent_count = recent_count_;
  for (int k = 0; k < recent_count_; ++k) {
    o.recent_balls[k] = recent_balls_[(recent_head_ - 1 - k + Observation::kRecentBalls) % Observation::kRecentBalls];
  }
  o.stamp_ns = now_ns();
  observation_.store(o);
  obs_futex_.fetch_add(1, std::memory_order_release);
  if (obs_waiters_.load(std::memory_order_acquire) > 0)
    futex(&obs_futex_, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr);  // non-blocking wake of waiting readers
}

// 8. deadline check, run log, telemetry; returns when the tick's work ended. A tick misses its deadline when its
// work ends after the next tick's deadline. Decided here, once, before the tick's record is pushed: the record's
// flag, the event and the live counter all come from this one decision (a replay counts exactly the live
// deadline_misses).
std::int64_t ControlLoop::record_tick(std::int64_t deadline_ns, std::int64_t wake_ns, TickScratch& t) noexcept {
  const int dof = filter_.dof();
  const std::int64_t done = now_ns();
  if (done > deadline_ns + period_ns_) {
    t.flags |= kTickDeadlineMiss;
    bump(deadline_misses_);
    emit(kEventDeadlineMiss, -1, 1e-9 * static_cast<double>(done - deadline_ns - period_ns_), done);
  }
  if (log_.is_open()) {
    item_.type = kRecordTick;
    TickRecord& r = item_.tick;
    r.deadline_ns = deadline_ns;
    r.wake_ns = wake_ns;
    r.done_ns = done;
    r.tick = tick_index_;
    r.flags = t.flags;
    r.dof = dof;
    for (int i = 0; i < dof; ++i) {
      r.measured_position_si[i] = last_state_.position_si[i];
      r.measured_velocity_si[i] = last_state_.velocity_si[i];
      r.target_position_si[i] = t.target_p[i];
      r.command_position_si[i] = command_.position_si[i];
      r.command_velocity_si[i] = command_.velocity_si[i];
      r.command_acceleration_si[i] = command_.acceleration_si[i];
    }
    log_.push(item_);
  }
  wake_latency_->record(wake_ns - deadline_ns);
  if (prev_wake_ns_ != 0) period_->record(wake_ns - prev_wake_ns_);
  prev_wake_ns_ = wake_ns;
  tick_duration_->record(done - wake_ns);
  bump(ticks_);
  return done;
}

bool ControlLoop::push_command(const double* position_si, int n, std::uint64_t obs_tick,
                               std::int64_t obs_stamp_ns) noexcept {
  PolicyCommand c;
  c.push_ns = now_ns();
  c.obs_stamp_ns = obs_stamp_ns;
  c.obs_tick = obs_tick;
  c.dof = n;
  for (int i = 0; i < n && i < kMaxDof; ++i) c.position_si[i] = position_si[i];
  if (commands_in_->push(c)) return true;
  bump(commands_dropped_);
  return false;
}

bool ControlLoop::push_external_event(std::int32_t code, std::int32_t joint, double value) noexcept {
  // only what happens outside the loop: the policy runner's events and driver/link events (100..199); the loop's
  // own events (stops, recoveries, lifecycle, ...) are the loop's record of what it did and cannot be forged
  if (!is_external_event_code(code)) return false;
  EventRecord e{now_ns(), 0, code, joint, value};
  return events_in_->push(e);
}

std::uint64_t ControlLoop::wait_observation(std::uint64_t after_seq, double timeout_s, Observation& out) const noexcept {
  // NaN, negative: no wait; at most an hour (the cast of a larger or infinite time to int64 is undefined)
  const double wait_s = timeout_s > 0.0 ? std::min(timeout_s, 3600.0) : 0.0;
  const std::int64_t end = now_ns() + static_cast<std::int64_t>(wait_s * 1e9);
  obs_waiters_.fetch_add(1, std::memory_order_acq_rel);
  std::uint64_t seq = 0;
  for (;;) {
    const std::uint32_t f = obs_futex_.load(std::memory_order_acquire);
    if (observation_.sequence() > after_seq) break;
    const std::int64_t left = end - now_ns();
    if (left <= 0) break;
    const timespec rel = to_timespec(left < 5'000'000 ? left : 5'000'000);  // re-check at least every 5 ms
    futex(&obs_futex_, FUTEX_WAIT_PRIVATE, f, &rel);
  }
  obs_waiters_.fetch_sub(1, std::memory_order_acq_rel);
  if (observation_.sequence() > after_seq) seq = observation_.load(out);
  return seq > after_seq ? seq : 0;
}

LoopCounters ControlLoop::counters() const noexcept {
  LoopCounters c;
  c.ticks = ticks_.load(std::memory_order_relaxed);
  c.deadline_misses = deadline_misses_.load(std::memory_order_relaxed);
  c.skipped_ticks = skipped_ticks_.load(std::memory_order_relaxed);
  c.late_ticks = late_ticks_.load(std::memory_order_relaxed);
  c.sensor_dropout_ticks = dropout_ticks_.load(std::memory_order_relaxed);
  c.commands_accepted = commands_accepted_.load(std::memory_order_relaxed);
  c.commands_rejected = commands_rejected_.load(std::memory_order_relaxed);
  c.commands_path_held = commands_path_held_.load(std::memory_order_relaxed);
  c.commands_dropped = commands_dropped_.load(std::memory_order_relaxed);
  c.stop_ticks = stop_ticks_.load(std::memory_order_relaxed);
  c.commands_discarded = commands_discarded_.load(std::memory_order_relaxed);
  c.muted_ticks = muted_ticks_.load(std::memory_order_relaxed);
  c.safety_override_ticks = override_ticks_.load(std::memory_order_relaxed);
  c.driver_write_failures = write_failures_.load(std::memory_order_relaxed);
  c.events_dropped = events_dropped_.load(std::memory_order_relaxed);
  c.ball_observations = balls_.load(std::memory_order_relaxed);
  for (int i = 0; i < kEventCount; ++i) c.event_counts[i] = event_counts_[i].load(std::memory_order_relaxed);
  return c;
}

}  // namespace robot_rt::control
