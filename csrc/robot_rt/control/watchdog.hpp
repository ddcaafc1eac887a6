// Watchdogs of the loop: command freshness (policy) and sensor freshness (driver).
//
// Each watchdog turns timestamps into a tripped/clear state and reports transitions, so the loop logs one
// event per transition rather than one per tick. A trip is a reflex: the loop latches its stop reason
// (reflexes.hpp) and performs the jerk-limited controlled stop of stop.hpp; the watchdog clearing again does
// not release the latch (only a recovery does).
#pragma once

#include <cstdint>

namespace robot_rt::control {

enum class Transition : int { kNone = 0, kTripped = 1, kCleared = 2 };

class FreshnessWatchdog {
 public:
  void configure(double timeout_s) noexcept { timeout_ns_ = static_cast<std::int64_t>(timeout_s * 1e9); }
  // Starts counting from now (nothing received yet).
  void arm(std::int64_t now_ns) noexcept {
    last_ns_ = now_ns;
    ever_ = false;
    tripped_ = false;
  }
  void feed(std::int64_t now_ns) noexcept {
    last_ns_ = now_ns;
    ever_ = true;
  }
  Transition update(std::int64_t now_ns) noexcept {
    const bool stale = now_ns - last_ns_ > timeout_ns_;
    if (stale && !tripped_) {
      tripped_ = true;
      return Transition::kTripped;
    }
    if (!stale && tripped_) {
      tripped_ = false;
      return Transition::kCleared;
    }
    return Transition::kNone;
  }
  bool tripped() const noexcept { return tripped_; }
  bool ever_fed() const noexcept { return ever_; }
  double age_s(std::int64_t now_ns) const noexcept { return 1e-9 * static_cast<double>(now_ns - last_ns_); }

 private:
  std::int64_t timeout_ns_ = 50'000'000;
  std::int64_t last_ns_ = 0;
  bool ever_ = false;
  bool tripped_ = false;
};

}  // namespace robot_rt::control
