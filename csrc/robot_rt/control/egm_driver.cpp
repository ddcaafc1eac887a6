#include "egm_driver.hpp"

#include <arpa/inet.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace robot_rt::control {

namespace {
constexpr double kRadPerDegree = 3.14159265358979323846 / 180.0;

void store_max(std::atomic<std::int64_t>& a, std::int64_t v) noexcept {
  if (v > a.load(std::memory_order_relaxed)) a.store(v, std::memory_order_relaxed);
}
}  // namespace

EgmDriver::EgmDriver(EgmDriverConfig config) : config_(std::move(config)) {
  if (config_.dof < 1 || config_.dof > egm::kMaxValues || config_.dof > kMaxDof)
    throw std::invalid_argument("dof: expected 1.." + std::to_string(egm::kMaxValues) + " arm joints, got " +
                                std::to_string(config_.dof));
  sockaddr_in probe{};
  if (!make_address(config_.bind_host, config_.port, probe))
    throw std::invalid_argument("bind_host: expected an IPv4 address, got '" + config_.bind_host + "'");
  if (!config_.controller_host.empty()) {
    if (!make_address(config_.controller_host, config_.controller_port, controller_pin_))
      throw std::invalid_argument("controller_host: expected an IPv4 address, got '" + config_.controller_host + "'");
    pin_controller_ = true;
  } else if (config_.controller_port != 0) {
    throw std::invalid_argument("controller_port: a source port needs controller_host (the controller's address)");
  }
  for (int i = 0; i < config_.dof; ++i) {
    if (config_.si_per_egm[i] == 0.0) config_.si_per_egm[i] = kRadPerDegree;
    if (!(config_.si_per_egm[i] > 0.0) || !std::isfinite(config_.si_per_egm[i]))
      throw std::invalid_argument("si_per_egm: expected positive unit factors (pi/180 or 1e-3)");
  }
  if (config_.hold_ns <= 0 || config_.link_timeout_ns <= 0)
    throw std::invalid_argument("hold_ns, link_timeout_ns: expected positive values");
}

EgmDriver::~EgmDriver() { on_stop(); }

namespace {
// Writes the run marker atomically (temp file + rename) into its directory, which on_start() made with the lock
// file; throws naming the path when it cannot.
void write_run_marker(const std::string& path) {
  const std::filesystem::path target(path);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  const std::string text = "robot_rt EGM run: started by pid " + std::to_string(::getpid()) +
                           "; present after the run when it ended in a stop nobody recovered, or did not end (a crash)\n";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const bool written = fd >= 0 && ::fchmod(fd, 0644) == 0 &&  // readable by every user, whatever the umask
                       ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::fsync(fd) == 0;  // on disk before the rename: a power loss keeps it too
  if (fd >= 0) ::close(fd);
  if (!written || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("EGM run marker: cannot write '" + path +
                             "' (docs/egm.md, \"Stops between runs\"): make that directory writable for every run on this "
                             "robot, or set ROBOT_RT_STATE_DIR to one such directory for all of them");
  }
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : std::string(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {  // the rename itself on disk
    ::fsync(dfd);
    ::close(dfd);
  }
}
}  // namespace

void EgmDriver::on_start() {
  if (socket_.is_open()) return;
  socket_.open(config_.bind_host, config_.port);  // first: a start that cannot bind leaves no marker behind
  owner_pid_ = ::getpid();
  if (!config_.run_marker_path.empty()) {
    // One run per marker at a time (two listening addresses can share a port): the lock is held for the whole run, so
    // a second run cannot write over the first's marker, nor remove it at its clean end while the first still runs.
    const std::string lock_path = config_.run_marker_path + ".lock";
    // the markers' directory (created with the umask's mode: who may run the robot is the administrator's choice)
    std::error_code dir_ec;
    const std::filesystem::path lock_dir = std::filesystem::path(lock_path).parent_path();
    if (!lock_dir.empty()) std::filesystem::create_directories(lock_dir, dir_ec);
    const auto abandon = [this] {  // a start that fails leaves neither the lock nor the socket behind
      if (marker_lock_fd_ >= 0) ::close(marker_lock_fd_);
      marker_lock_fd_ = -1;
      socket_.close();
    };
    marker_lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (marker_lock_fd_ < 0 || ::flock(marker_lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const bool busy = marker_lock_fd_ >= 0;
      abandon();
      throw std::runtime_error(busy ? "EGM run marker: another run holds '" + lock_path + "' (one run per EGM port)"
                                    : "EGM run marker: cannot open '" + lock_path +
                                          "': make that directory writable for every run on this robot, or set "
                                          "ROBOT_RT_STATE_DIR to one such directory for all of them");
    }
    // a marker left by an earlier run: it ended in a stop nobody recovered, or never ended; a stop for this run too
    std::error_code ec;
    const bool earlier = std::filesystem::exists(config_.run_marker_path, ec) || ec;  // (unreadable: taken as there)
    try {
      write_run_marker(config_.run_marker_path);  // before anything can move: this run's own, until it ends cleanly
    } catch (...) {
      abandon();
      throw;
    }
    marker_stop_pending_.store(earlier, std::memory_order_relaxed);
    marker_stops_.store(earlier ? 1u : 0u, std::memory_order_relaxed);
    run_started_ = true;
  }
  ending_in_stop_ = false;
  holding_ = hold_offered_ = hold_anchored_ = hold_fixed_ = false;
  have_peer_ = have_seqno_ = have_clock_ = have_sample_ = reply_owed_ = new_sample_ = have_sent_ = false;
  status_seen_ = 0;
  last_rx_ns_ = 0;
  start_ns_ = monotonic_ns();
  link_up_.store(false);
}

void EgmDriver::on_stop() {
  socket_.close();
  link_up_.store(false);
  // a forked child's copy (its destructor) never removes the parent's run marker (a review found a child's exit
  // deleting it, so that a run after an unrecovered e-stop moved the arm 0.25 rad)
  const bool forked_copy = owner_pid_ != 0 && ::getpid() != owner_pid_;
  if (!forked_copy && run_started_ && !ending_in_stop_ && !marker_stop_pending_.load(std::memory_order_relaxed)) {
    std::remove(config_.run_marker_path.c_str());  // a clean end: nothing for the next run to recover
  }
  if (marker_lock_fd_ >= 0) {  // (closing releases the lock)
    ::close(marker_lock_fd_);
    marker_lock_fd_ = -1;
  }
  run_started_ = false;
  ending_in_stop_ = false;
}

std::string EgmDriver::controller_endpoint() const {
  const std::uint32_t ip = peer_ip_.load(std::memory_order_relaxed);
  if (ip == 0) return "";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = ip;
  a.sin_port = peer_port_.load(std::memory_order_relaxed);
  return endpoint_string(a);
}

void EgmDriver::drain(std::int64_t now_ns) noexcept {
  for (int budget = 0; budget < 64; ++budget) {
    sockaddr_in from;
    const long n = socket_.receive(rx_buffer_, sizeof(rx_buffer_), from);
    if (n == UdpSocket::kNothing) break;
    if (n == UdpSocket::kError) {
      bump(counters_.socket_errors);
      break;
    }
    bump(counters_.rx_datagrams);
    const bool link_was_down = !have_peer_ || now_ns - last_rx_ns_ > config_.link_timeout_ns;
    // a pinned port too: on loopback every local process shares the controller's address, and without the port a
    // second sender took the session over after a link loss (the twelfth audit's finding 2)
    if (pin_controller_ && (from.sin_addr.s_addr != controller_pin_.sin_addr.s_addr ||
                            (controller_pin_.sin_port != 0 && from.sin_port != controller_pin_.sin_port))) {
      bump(counters_.rx_unexpected_source);
      continue;
    }
    const bool new_peer = !have_peer_ || !same_endpoint(from, peer_);
    if (new_peer && have_peer_ && !link_was_down) {  // someone else while the controller is talking
      bump(counters_.rx_unexpected_source);
      continue;
    }
    if (static_cast<std::size_t>(n) > kRxCapacity ||
        egm::decode_robot(rx_buffer_, static_cast<std::size_t>(n), rx_message_) != egm::Status::kOk) {
      bump(counters_.rx_malformed);
      continue;
    }
    const egm::Robot& m = rx_message_;
    bool usable = m.has_feedback && m.feedback.has_joints && m.feedback.joints.count == config_.dof;
    for (int i = 0; usable && i < config_.dof; ++i) usable = std::isfinite(m.feedback.joints.value[i]);
    if (!usable) {
      bump(counters_.rx_mismatch);
      continue;
    }
    bool restart = new_peer && have_peer_;
    // Which datagram is newer: the controller's clock (EgmFeedBack.time) first, where both have it; the sequence
    // number alone cannot tell. An EGM restart starts the sequence again, so a datagram from before it, delivered
    // late (or replayed), carries a higher number than the restarted stream: taken as the newest, it made the driver
    // drop the live stream as stale and report where the arm had been (a fuzz hunt: a new run started from such a
    // position and held the arm there, 0.054 rad from where it stood).
    const bool has_clock = m.feedback.has_time;
    const std::uint64_t clock_us = has_clock ? m.feedback.time.sec * 1'000'000ull + m.feedback.time.usec : 0;
    const bool clock_known = !new_peer && have_clock_ && has_clock;
    if (clock_known && clock_us < last_clock_us_) {
      if (!link_was_down) {  // older on the controller's clock: an old datagram, whatever its sequence number
        bump(counters_.rx_stale);
        continue;
      }
      restart = true;  // after a silence: a controller that started again, its clock too
    } else if (!new_peer && have_seqno_ && m.header.has_seqno) {
      const std::uint32_t diff = m.header.seqno - last_seqno_;  // modulo 2^32
      if (diff == 0 || diff >= 0x80000000u) {
        // the sequence started again, with the clock gone on or after a silence: EGM was restarted; else an old one
        if (!(clock_known && clock_us > last_clock_us_) && !link_was_down) {
          bump(counters_.rx_stale);
          continue;
        }
        restart = true;
      } else if (diff > 1) {
        bump(counters_.rx_lost, diff - 1);
      }
    }
    if (restart) {
      bump(counters_.peer_restarts);
      have_sample_ = false;  // no velocity across the restart
      status_seen_ = 0;      // a restarted controller reports its status afresh
    }
    have_peer_ = true;
    peer_ = from;
    peer_ip_.store(from.sin_addr.s_addr, std::memory_order_relaxed);
    peer_port_.store(from.sin_port, std::memory_order_relaxed);
    have_seqno_ = m.header.has_seqno;
    last_seqno_ = m.header.seqno;
    have_clock_ = has_clock;
    last_clock_us_ = clock_us;
    last_rx_ns_ = now_ns;
    accept(m, from, now_ns);
  }
}

void EgmDriver::accept(const egm::Robot& m, const sockaddr_in&, std::int64_t now_ns) noexcept {
  const int dof = config_.dof;
  const double clock_s = m.feedback.has_time ? static_cast<double>(m.feedback.time.sec) + 1e-6 * static_cast<double>(m.feedback.time.usec)
                                             : 1e-9 * static_cast<double>(now_ns);
  const double dt = have_sample_ ? clock_s - sample_clock_s_ : 0.0;
  for (int i = 0; i < dof; ++i) {
    const double q = m.feedback.joints.value[i] * config_.si_per_egm[i];
    latest_.velocity_si[i] = dt > 0.0 ? (q - latest_.position_si[i]) / dt : (have_sample_ ? latest_.velocity_si[i] : 0.0);
    latest_.position_si[i] = q;
  }
  latest_.dof = dof;
  latest_.stamp_ns = now_ns;
  std::uint32_t flags = 0;
  const int motor = m.motor_state.has_state ? m.motor_state.state : -1;
  const int mci = m.mci_state.has_state ? m.mci_state.state : -1;
  const int rapid = m.rapid_exec_state.has_state ? m.rapid_exec_state.state : -1;
  // Motors off (an emergency or protective stop, or the operator), EGM stopped or in error, RAPID stopped: the arm
  // does not follow references any more. All of them are the robot's stop input for the loop (its e-stop latch
  // trips and stays latched until a reset at rest once the controller runs again), and a fault.
  // Fail closed: a status the controller has reported in this session and now leaves out (or reports with a value
  // the schema does not list, which the codec drops) is a stop too. Else a controller that stopped reporting
  // mciState would silently switch the stop detection off.
  const std::uint32_t present = (motor >= 0 ? 1u : 0u) | (mci >= 0 ? 2u : 0u) | (rapid >= 0 ? 4u : 0u);
  const bool status_lost = (status_seen_ & ~present) != 0u;
  status_seen_ |= present;
  if (motor == egm::kMotorsOff || mci == egm::kMciError || mci == egm::kMciStopped || rapid == egm::kRapidStopped ||
      status_lost)
    flags |= kStateFault | kStateEstopInput;
  latest_.flags = flags;
  unread_stop_flags_ |= flags;  // a stop status followed by a clean one before the loop reads still reaches it
  motor_state_.store(motor, std::memory_order_relaxed);
  mci_state_.store(mci, std::memory_order_relaxed);
  rapid_state_.store(rapid, std::memory_order_relaxed);
  sample_clock_s_ = clock_s;
  sample_rx_ns_ = now_ns;
  have_sample_ = true;
  if (!reply_owed_) owed_since_ns_ = now_ns;  // the oldest unanswered message sets the reply latency
  reply_owed_ = true;
  bump(counters_.rx_accepted);
}

bool EgmDriver::read_state(JointState& out) noexcept {
  if (!socket_.is_open()) return false;
  const std::int64_t now = monotonic_ns();
  restarts_before_read_ = peer_restarts();
  drain(now);
  link_up_.store(have_peer_ && now - last_rx_ns_ <= config_.link_timeout_ns, std::memory_order_relaxed);
  // muted: answer the controller with a hold where the arm is (else it drives on to the last reference)
  if (holding_ && hold_anchored_ && reply_owed_ && have_peer_ && have_sample_ &&
      peer_restarts() == hold_peer_restarts_) {
    if (!hold_fixed_) fix_hold();
    if (send_reply(now, true)) hold_replies_.fetch_add(1, std::memory_order_relaxed);
  }
  if (!have_sample_ || now - sample_rx_ns_ > config_.hold_ns) return false;
  out = latest_;
  out.flags |= unread_stop_flags_;
  if (marker_stop_pending_.load(std::memory_order_relaxed)) out.flags |= kStateRobotStopped;
  unread_stop_flags_ = 0;
  return true;
}

// The first hold reply of a mute: the point of the segment [anchor, last reference sent] (joint space, SI units)
// nearest the feedback it answers (where the arm is now). The segment is what the loop itself measured and
// commanded, so neither a feedback glitch nor anything else can place the hold off it, and an arm that moved on along
// it is not pulled back. One point of the segment, not a clamp per joint: the corners of the box a per-joint clamp
// allows are configurations nobody measured or commanded (one put the blade 12 mm outside the workspace box in a
// fuzz hunt, with corrupted and stale feedback).
void EgmDriver::fix_hold() noexcept {
  double along = 0.0, length2 = 0.0;
  bool finite = true;
  for (int i = 0; i < config_.dof; ++i) {
    const double unit = config_.si_per_egm[i];
    const double d = (hold_reference_egm_[i] - hold_position_egm_[i]) * unit;
    const double f = latest_.position_si[i] - hold_position_egm_[i] * unit;
    finite = finite && std::isfinite(f);
    along += d * f;
    length2 += d * d;
  }
  const double ratio = along / length2;  // (an absurd finite feedback can overflow: inf - inf; then the anchor)
  if (finite && length2 > 0.0 && std::isfinite(ratio)) {
    const double s = std::clamp(ratio, 0.0, 1.0);
    for (int i = 0; i < config_.dof; ++i)  // (the end itself at s = 1: exactly the reference sent)
      hold_position_egm_[i] = s >= 1.0 ? hold_reference_egm_[i]
                                       : hold_position_egm_[i] + s * (hold_reference_egm_[i] - hold_position_egm_[i]);
  }
  hold_fixed_ = true;
}

bool EgmDriver::send_reply(std::int64_t now_ns, bool hold) noexcept {
  egm::Sensor& s = tx_message_;
  s = egm::Sensor{};
  s.has_header = true;
  s.header.has_seqno = s.header.has_tm = s.header.has_mtype = true;
  s.header.seqno = ++tx_seqno_;
  s.header.tm = static_cast<std::uint32_t>((now_ns - start_ns_) / 1'000'000);
  s.header.mtype = egm::kMsgCorrection;
  s.has_planned = s.planned.has_joints = true;
  s.has_speed_ref = s.speed_ref.has_joints = true;
  s.planned.joints.count = s.speed_ref.joints.count = config_.dof;
  for (int i = 0; i < config_.dof; ++i) {
    // a hold: where fix_hold placed it, at rest
    s.planned.joints.value[i] = hold ? hold_position_egm_[i] : command_position_egm_[i];
    s.speed_ref.joints.value[i] = hold ? 0.0 : command_velocity_egm_[i];
  }
  std::size_t size = 0;
  if (egm::encode_sensor(s, tx_buffer_, sizeof(tx_buffer_), size) != egm::Status::kOk) {
    bump(counters_.tx_invalid);
    return false;
  }
  reply_owed_ = false;
  if (!socket_.send(tx_buffer_, size, peer_)) {
    bump(counters_.tx_errors);
    return false;
  }
  bump(counters_.tx_datagrams);
  replies_.fetch_add(1, std::memory_order_relaxed);
  if (!hold) {
    for (int i = 0; i < config_.dof; ++i) sent_position_egm_[i] = command_position_egm_[i];
    have_sent_ = true;
  }
  const std::int64_t latency = monotonic_ns() - owed_since_ns_;
  reply_last_.store(latency, std::memory_order_relaxed);
  store_max(reply_max_, latency);
  reply_sum_.fetch_add(latency, std::memory_order_relaxed);
  return true;
}

bool EgmDriver::write_command(const JointCommand& command) noexcept {
  if (!socket_.is_open()) return false;
  if (command.dof != config_.dof) {
    bump(counters_.tx_invalid);
    return false;
  }
  for (int i = 0; i < command.dof; ++i) {
    if (!std::isfinite(command.position_si[i]) || !std::isfinite(command.velocity_si[i])) {
      bump(counters_.tx_invalid);
      return false;
    }
  }
  for (int i = 0; i < command.dof; ++i) {
    command_position_egm_[i] = command.position_si[i] / config_.si_per_egm[i];
    command_velocity_egm_[i] = command.velocity_si[i] / config_.si_per_egm[i];
  }
  if (reply_owed_ && have_peer_) return send_reply(monotonic_ns());
  return true;
}

}  // namespace robot_rt::control
