// Clock-offset estimation between this host and a peer from round trips (NTP's on-wire arithmetic), and the
// freshness test of a peer's time stamp against it (docs/protocol.md, "Time").
//
// A round trip gives t1 (local send), t2 (peer receive), t3 (peer send), t4 (local receive): the peer's clock
// minus ours is theta = ((t2 - t1) + (t3 - t4)) / 2, known to +-delta/2 with delta = (t4 - t1) - (t3 - t2)
// (whatever the split of the delay between the two directions). The estimate is the sample of least
// delay, aged by the drift bound: its uncertainty u(now) = delta_best/2 + drift_bound * (now - t4_best), so an
// old tight sample is replaced by a fresher one as soon as that is tighter. A new sample must agree with
// the estimate (their intervals overlap, up to margin_ns); one that does not is an outlier: rejected and
// counted, it never moves the estimate. Only a long run of mutually consistent outliers (the peer's clock
// really stepped: resync_after of them in a row) re-synchronises the estimate to them (counted).
//
// A peer stamp t is dated on the local clock at t - theta; its age at local time now is now - (t - theta),
// within +-u. It is "future" when even the oldest reading is in the future (age < -(u + margin)), "late"
// when even the youngest reading exceeds the threshold (age - u - margin > late_threshold). Freshness
// otherwise rests on the local receive time: a stamp never makes a state look newer than its arrival.
// No heap, O(1) per call: safe in a real-time tick.
#pragma once

#include <cstdint>

namespace robot_rt::control {

struct ClockOffsetConfig {
  double drift_bound = 500e-6;                 // |d(offset)/dt| assumed at most (s/s); quartz clocks: < 1e-4
  std::int64_t margin_ns = 500'000;            // time-stamping jitter tolerated on top of the bounds
  std::int64_t max_delay_ns = 1'000'000'000;   // round trips slower than this carry too little information
  int resync_after = 32;                       // consecutive consistent outliers that re-synchronise
};

class ClockOffsetEstimator {
 public:
  enum class Sample : std::uint8_t {
    kAccepted,       // consistent with the estimate (and used if tighter)
    kFirst,          // the first sample: the estimate starts here
    kInvalid,        // stamps out of range or out of order on our own clock (t4 < t1)
    kNegativeDelay,  // the peer's t3 - t2 exceeds our whole round trip: a bad peer stamp
    kTooSlow,        // delay above max_delay_ns
    kOutlier,        // contradicts the estimate: rejected, the estimate unchanged
    kResynced,       // resync_after outliers in a row agreed among themselves: the estimate moved to them
  };
  enum class Freshness : std::uint8_t { kFresh, kLate, kFuture };

  explicit ClockOffsetEstimator(ClockOffsetConfig config = {}) : config_(config) {}
  void reset() noexcept;
  Sample add(std::int64_t t1, std::int64_t t2, std::int64_t t3, std::int64_t t4) noexcept;
  // Unsigned wire stamps: values above 2^62 ns (146 years) are invalid rather than wrapped.
  Sample add_wire(std::uint64_t t1, std::uint64_t t2, std::uint64_t t3, std::int64_t t4) noexcept;

  bool valid() const noexcept { return valid_; }
  std::int64_t offset_ns() const noexcept { return offset_ns_; }  // peer clock - local clock
  std::int64_t best_delay_ns() const noexcept { return delay_ns_; }
  std::int64_t uncertainty_ns(std::int64_t now_ns) const noexcept;

  // Freshness of a peer stamp received at local time now_ns. local_stamp_ns (optional): the stamp on the local
  // clock, never later than now_ns (without an estimate: now_ns, and kFresh).
  Freshness classify(std::uint64_t peer_stamp_ns, std::int64_t now_ns, std::int64_t late_threshold_ns,
                     std::int64_t* local_stamp_ns = nullptr) const noexcept;

  std::uint64_t samples() const noexcept { return samples_; }
  std::uint64_t accepted() const noexcept { return accepted_; }
  std::uint64_t rejected() const noexcept { return rejected_; }
  std::uint64_t resyncs() const noexcept { return resyncs_; }
  const ClockOffsetConfig& config() const noexcept { return config_; }

  static constexpr std::uint64_t kMaxStamp = std::uint64_t(1) << 62;

 private:
  struct Point {
    std::int64_t offset_ns = 0, delay_ns = 0, at_ns = 0;
  };
  std::int64_t aged_delay(const Point& p, std::int64_t now_ns) const noexcept;

  ClockOffsetConfig config_;
  bool valid_ = false;
  std::int64_t offset_ns_ = 0, delay_ns_ = 0, at_ns_ = 0;
  int run_ = 0;            // consecutive outliers
  Point run_first_;        // the first outlier of the run (the others must agree with it)
  Point run_best_;         // the tightest of the run
  std::uint64_t samples_ = 0, accepted_ = 0, rejected_ = 0, resyncs_ = 0;
};

}  // namespace robot_rt::control
