#include "clock_offset.hpp"

#include <cstdlib>

namespace robot_rt::control {

void ClockOffsetEstimator::reset() noexcept {
  valid_ = false;
  offset_ns_ = delay_ns_ = at_ns_ = 0;
  run_ = 0;
}

std::int64_t ClockOffsetEstimator::aged_delay(const Point& p, std::int64_t now_ns) const noexcept {
  const std::int64_t age = now_ns > p.at_ns ? now_ns - p.at_ns : 0;
  return p.delay_ns + static_cast<std::int64_t>(2.0 * config_.drift_bound * static_cast<double>(age));
}

std::int64_t ClockOffsetEstimator::uncertainty_ns(std::int64_t now_ns) const noexcept {
  if (!valid_) return 0;
  return aged_delay(Point{offset_ns_, delay_ns_, at_ns_}, now_ns) / 2;
}

ClockOffsetEstimator::Sample ClockOffsetEstimator::add_wire(std::uint64_t t1, std::uint64_t t2, std::uint64_t t3,
                                                            std::int64_t t4) noexcept {
  if (t1 > kMaxStamp || t2 > kMaxStamp || t3 > kMaxStamp || t4 < 0 || std::uint64_t(t4) > kMaxStamp) {
    ++samples_;
    ++rejected_;
    return Sample::kInvalid;
  }
  return add(std::int64_t(t1), std::int64_t(t2), std::int64_t(t3), t4);
}

ClockOffsetEstimator::Sample ClockOffsetEstimator::add(std::int64_t t1, std::int64_t t2, std::int64_t t3,
                                                       std::int64_t t4) noexcept {
  ++samples_;
  const std::int64_t limit = std::int64_t(kMaxStamp);
  if (t1 < 0 || t2 < 0 || t3 < 0 || t4 < 0 || t1 > limit || t2 > limit || t3 > limit || t4 > limit || t4 < t1) {
    ++rejected_;
    return Sample::kInvalid;
  }
  std::int64_t delay = (t4 - t1) - (t3 - t2);
  if (delay < -config_.margin_ns) {
    ++rejected_;
    return Sample::kNegativeDelay;
  }
  if (delay < 0) delay = 0;
  if (delay > config_.max_delay_ns) {
    ++rejected_;
    return Sample::kTooSlow;
  }
  const Point p{((t2 - t1) + (t3 - t4)) / 2, delay, t4};
  if (!valid_) {
    valid_ = true;
    offset_ns_ = p.offset_ns;
    delay_ns_ = p.delay_ns;
    at_ns_ = p.at_ns;
    run_ = 0;
    ++accepted_;
    return Sample::kFirst;
  }
  const std::int64_t tolerance = p.delay_ns / 2 + uncertainty_ns(t4) + config_.margin_ns;
  if (std::llabs(p.offset_ns - offset_ns_) > tolerance) {
    ++rejected_;
    // A run of outliers that agree with each other (the peer's clock stepped) re-synchronises.
    if (run_ > 0 && std::llabs(p.offset_ns - run_first_.offset_ns) >
                        p.delay_ns / 2 + aged_delay(run_first_, t4) / 2 + config_.margin_ns)
      run_ = 0;
    if (run_ == 0) {
      run_first_ = p;
      run_best_ = p;
    } else if (p.delay_ns <= aged_delay(run_best_, t4)) {
      run_best_ = p;
    }
    if (++run_ < config_.resync_after) return Sample::kOutlier;
    offset_ns_ = run_best_.offset_ns;
    delay_ns_ = run_best_.delay_ns;
    at_ns_ = run_best_.at_ns;
    run_ = 0;
    ++resyncs_;
    return Sample::kResynced;
  }
  run_ = 0;
  ++accepted_;
  if (p.delay_ns <= aged_delay(Point{offset_ns_, delay_ns_, at_ns_}, t4)) {
    offset_ns_ = p.offset_ns;
    delay_ns_ = p.delay_ns;
    at_ns_ = p.at_ns;
  }
  return Sample::kAccepted;
}

ClockOffsetEstimator::Freshness ClockOffsetEstimator::classify(std::uint64_t peer_stamp_ns, std::int64_t now_ns,
                                                               std::int64_t late_threshold_ns,
                                                               std::int64_t* local_stamp_ns) const noexcept {
  if (local_stamp_ns) *local_stamp_ns = now_ns;
  if (!valid_) return Freshness::kFresh;
  if (peer_stamp_ns > kMaxStamp) return Freshness::kFuture;
  const std::int64_t local = std::int64_t(peer_stamp_ns) - offset_ns_;
  const std::int64_t age = now_ns - local;
  const std::int64_t slack = uncertainty_ns(now_ns) + config_.margin_ns;
  if (age < -slack) return Freshness::kFuture;
  if (age - slack > late_threshold_ns) return Freshness::kLate;
  if (local_stamp_ns) *local_stamp_ns = local < now_ns ? local : now_ns;
  return Freshness::kFresh;
}

}  // namespace robot_rt::control
