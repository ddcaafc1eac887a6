#include "control_loop.hpp"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
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
  if (driver_->dof() != model.dof)
    throw std::invalid_argument("driver: dof " + std::to_string(driver_->dof()) + " does not match the robot model's " +
                                std::to_string(model.dof));
  period_ns_ = static_cast<std::int64_t>(std::llround(1e9 / config_.rate_hz));
  const double dt = 1e-9 * static_cast<double>(period_ns_);
  if (!filter_.configure(model, dt, config_.tracking_bandwidth_rad_s))
    throw std::invalid_argument("model: invalid limits (need position_min < position_max and positive v/a/j limits)");
  interpolator_.configure(model.dof, config_.policy_period_s, 2.0 * dt, 0.1);
  command_watchdog_.configure(config_.command_timeout_s);
  sensor_watchdog_.configure(config_.sensor_timeout_s);
}

ControlLoop::~ControlLoop() { stop(); }

std::vector<std::string> ControlLoop::start() {
  if (running()) throw std::runtime_error("ControlLoop.start: already running");
  std::vector<std::string> warnings;
  driver_->on_start();
  // initial state: the commanded trajectory starts at rest where the robot is
  JointState s;
  bool got = false;
  for (int attempt = 0; attempt < 200 && !got; ++attempt) {
    got = driver_->read_state(s);
    if (!got) {
      timespec ts{0, 1'000'000};
      nanosleep(&ts, nullptr);
    }
  }
  if (!got) throw std::runtime_error("driver: no joint state received within 200 ms; cannot start");
  if (s.dof != filter_.dof()) throw std::runtime_error("driver: state has the wrong number of joints");
  if (!filter_.reset(s.position_si))
    throw std::runtime_error("driver: initial joint position outside the joint limits (or not finite); refusing to start");
  last_state_ = s;
  last_fresh_ = true;
  tick_index_ = 0;
  workspace_stop_ = was_stopping_ = stop_complete_logged_ = prev_override_ = write_failed_ = false;
  estop_input_prev_ = false;
  balls_total_ = 0;
  recent_head_ = recent_count_ = 0;
  workspace_excess_m_ = 0.0;
  const std::int64_t t0 = now_ns();
  interpolator_.hold(s.position_si, t0);
  command_watchdog_.arm(t0);
  sensor_watchdog_.arm(t0);
  if (!config_.log_path.empty()) {
    log_.open(config_.log_path, config_.log_meta_json, config_.log_flush_interval_s, config_.log_fsync_interval_s);
  }
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

void ControlLoop::stop() {
  if (thread_.joinable()) {
    stop_requested_.store(true, std::memory_order_release);
    thread_.join();
    driver_->on_stop();
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
  t.flags |= read_sensors(wake_ns);
  t.flags |= drain_commands(wake_ns);
  update_watchdogs(wake_ns);
  t.flags |= safety_step(wake_ns, t);
  guard_workspace(wake_ns);
  t.flags |= status_flags();
  write_command(wake_ns, t.stopping);
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

// 1. sensors: the driver's joint state (feeds the sensor watchdog) and the ball observations (logged, kept).
std::uint32_t ControlLoop::read_sensors(std::int64_t wake_ns) noexcept {
  std::uint32_t flags = 0;
  JointState state;
  const bool fresh = driver_->read_state(state);
  if (fresh) {
    last_state_ = state;
    sensor_watchdog_.feed(wake_ns);
    flags |= kTickStateFresh;
  } else {
    bump(dropout_ticks_);
    if (last_fresh_) emit(kEventSensorDropout, -1, 0.0, wake_ns);
  }
  last_fresh_ = fresh;
  switch (sensor_watchdog_.update(wake_ns)) {
    case Transition::kTripped:
      emit(kEventSensorTimeoutStop, -1, sensor_watchdog_.age_s(wake_ns), wake_ns);
      break;
    case Transition::kCleared:
      emit(kEventSensorRecovered, -1, 0.0, wake_ns);
      break;
    default:
      break;
  }
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
    if (pc.dof != dof) {
      bump(commands_rejected_);
      emit(kEventCommandRejected, -1, static_cast<double>(pc.dof), wake_ns);
      continue;
    }
    int joint = -1;
    double value = 0.0;
    const std::uint32_t verdict = filter_.validate_target(pc.position_si, nullptr, joint, value);
    if (verdict & kTargetNonFinite) {
      bump(commands_rejected_);
      emit(kEventNonFiniteCommand, joint, value, wake_ns);
      continue;
    }
    if (verdict & kTargetWorkspace) {
      bump(commands_rejected_);
      emit(kEventWorkspaceTarget, joint, value, wake_ns);
      continue;
    }
    if (verdict & kTargetClamped) emit(kEventTargetClamped, joint, value, wake_ns);
    bump(commands_accepted_);
    interpolator_.set_goal(pc.position_si, wake_ns);
    command_watchdog_.feed(wake_ns);
    workspace_stop_ = false;  // a fresh in-box target releases a workspace stop
    flags |= kTickNewTarget;
  }
  return flags;
}

// 3. the command watchdog and the e-stop latch (request, driver input, reset once at rest).
void ControlLoop::update_watchdogs(std::int64_t wake_ns) noexcept {
  switch (command_watchdog_.update(wake_ns)) {
    case Transition::kTripped:
      emit(command_watchdog_.ever_fed() ? kEventWatchdogStop : kEventMissingPolicy, -1,
           command_watchdog_.age_s(wake_ns), wake_ns);
      break;
    case Transition::kCleared:
      emit(kEventWatchdogRecovered, -1, 0.0, wake_ns);
      break;
    default:
      break;
  }
  const bool estop_input = (last_state_.flags & kStateEstopInput) != 0;
  const bool estop_request = estop_request_.load(std::memory_order_acquire);
  const bool reset_request = estop_reset_request_.exchange(false, std::memory_order_acq_rel);
  switch (estop_.update(estop_request, estop_input, reset_request, filter_.at_rest())) {
    case Transition::kTripped:
      emit(kEventEstop, -1, estop_input ? 2.0 : 1.0, wake_ns);
      break;
    case Transition::kCleared:
      emit(kEventEstopReset, -1, 0.0, wake_ns);
      break;
    default:
      break;
  }
  estop_latched_.store(estop_.latched(), std::memory_order_release);
}

// 4. the safety filter: a jerk-limited stop while any stop condition holds, else the interpolated target.
std::uint32_t ControlLoop::safety_step(std::int64_t wake_ns, TickScratch& t) noexcept {
  const int dof = filter_.dof();
  std::uint32_t flags = 0;
  t.stopping = estop_.latched() || command_watchdog_.tripped() || sensor_watchdog_.tripped() || workspace_stop_;
  if (t.stopping) {
    filter_.step(nullptr, nullptr, true);
    for (int i = 0; i < dof; ++i) t.target_p[i] = filter_.state(i).p;
    interpolator_.hold(t.target_p, wake_ns);  // resume from where the stop ends
    bump(stop_ticks_);
    flags |= kTickStopping;
    if (!was_stopping_) stop_complete_logged_ = false;
    if (!stop_complete_logged_ && filter_.at_rest()) {
      emit(kEventStopComplete, -1, 0.0, wake_ns);
      stop_complete_logged_ = true;
    }
    prev_override_ = false;
  } else {
    double target_v[kMaxDof];
    interpolator_.sample(wake_ns, t.target_p, target_v);
    const std::uint32_t overridden = filter_.step(t.target_p, target_v, false);
    if (overridden) {
      flags |= kTickSafetyOverride;
      bump(override_ticks_);
      if (!prev_override_) emit(kEventSafetyOverride, -1, static_cast<double>(overridden), wake_ns);
    }
    prev_override_ = overridden != 0;
  }
  was_stopping_ = t.stopping;
  return flags;
}

// 5. the workspace guard: stop when the commanded paddle leaves the box or moves further out; a motion back towards
// the box (after a stop parked it just outside, released by a fresh in-box target) is allowed, else the robot
// could never return.
void ControlLoop::guard_workspace(std::int64_t wake_ns) noexcept {
  double paddle[3];
  const bool in_box = filter_.paddle_in_workspace(paddle);
  const RobotModel& m = filter_.model();
  double excess_m = 0.0;  // distance of the commanded paddle from the box (0 inside)
  if (!in_box) {
    for (int k = 0; k < 3; ++k) {
      const double out = std::max(m.workspace_min_m[k] - paddle[k], paddle[k] - m.workspace_max_m[k]);
      if (out > 0.0) excess_m += out * out;
    }
    excess_m = std::sqrt(excess_m);
  }
  const bool leaving = !in_box && (workspace_excess_m_ == 0.0 || excess_m > workspace_excess_m_ + 1e-6);
  workspace_excess_m_ = excess_m;
  if (leaving && !workspace_stop_) {
    workspace_stop_ = true;
    int axis = 0;
    for (int k = 0; k < 3; ++k) {
      if (!(paddle[k] >= m.workspace_min_m[k] && paddle[k] <= m.workspace_max_m[k])) {
        axis = k;
        break;
      }
    }
    emit(kEventWorkspaceStop, axis, paddle[axis], wake_ns);
  }
}

// The tick flags of the latched states (after the safety step and the workspace guard).
std::uint32_t ControlLoop::status_flags() const noexcept {
  std::uint32_t flags = 0;
  if (estop_.latched()) flags |= kTickEstop;
  if (command_watchdog_.tripped()) flags |= kTickWatchdog;
  if (sensor_watchdog_.tripped()) flags |= kTickSensorTimeout;
  if (workspace_stop_) flags |= kTickWorkspaceStop;
  if (command_watchdog_.ever_fed()) flags |= kTickHasCommand;
  return flags;
}

// 6. the command out to the driver (a failed write is logged once per run of failures).
void ControlLoop::write_command(std::int64_t wake_ns, bool stopping) noexcept {
  filter_.fill_command(command_);
  command_.tick = tick_index_;
  command_.stamp_ns = wake_ns;
  command_.flags = (stopping ? kCommandStopping : 0u) | (estop_.latched() ? kCommandEstop : 0u);
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
  o.state_stamp_ns = last_state_.stamp_ns;
  for (int i = 0; i < dof; ++i) {
    o.measured_position_si[i] = last_state_.position_si[i];
    o.measured_velocity_si[i] = last_state_.velocity_si[i];
    o.command_position_si[i] = command_.position_si[i];
    o.command_velocity_si[i] = command_.velocity_si[i];
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
  EventRecord e{now_ns(), 0, code, joint, value};
  return events_in_->push(e);
}

std::uint64_t ControlLoop::wait_observation(std::uint64_t after_seq, double timeout_s, Observation& out) const noexcept {
  const std::int64_t end = now_ns() + static_cast<std::int64_t>(timeout_s * 1e9);
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
  c.commands_dropped = commands_dropped_.load(std::memory_order_relaxed);
  c.stop_ticks = stop_ticks_.load(std::memory_order_relaxed);
  c.safety_override_ticks = override_ticks_.load(std::memory_order_relaxed);
  c.driver_write_failures = write_failures_.load(std::memory_order_relaxed);
  c.events_dropped = events_dropped_.load(std::memory_order_relaxed);
  c.ball_observations = balls_.load(std::memory_order_relaxed);
  for (int i = 0; i < kEventCount; ++i) c.event_counts[i] = event_counts_[i].load(std::memory_order_relaxed);
  return c;
}

}  // namespace robot_rt::control
