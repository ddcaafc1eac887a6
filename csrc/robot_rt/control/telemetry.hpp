// Per-tick timing telemetry: fixed-bin histograms written by the loop thread, read from any thread.
//
// Histogram: 1 us bins from 0 to 20 ms plus an overflow bin, with exact count, sum and max; counters are
// relaxed atomics with a single writer, so a reader sees a consistent-enough snapshot without any lock and
// the writer never waits. Percentiles are the upper edge of the bin holding the requested rank (so they are
// exact to 1 us; values in the overflow bin report the exact max).
#pragma once

#include <atomic>
#include <cstdint>

namespace robot_rt::control {

class Histogram {
 public:
  static constexpr int kBins = 20000;      // 1 us bins up to 20 ms
  static constexpr std::int64_t kBinNs = 1000;

  void record(std::int64_t value_ns) noexcept {
    if (value_ns < 0) value_ns = 0;
    std::int64_t b = value_ns / kBinNs;
    if (b > kBins) b = kBins;  // overflow bin
    bins_[b].store(bins_[b].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    sum_ns_.store(sum_ns_.load(std::memory_order_relaxed) + value_ns, std::memory_order_relaxed);
    if (value_ns > max_ns_.load(std::memory_order_relaxed)) max_ns_.store(value_ns, std::memory_order_relaxed);
  }

  void reset() noexcept {  // only while the writer is idle
    for (auto& b : bins_) b.store(0, std::memory_order_relaxed);
    count_.store(0);
    sum_ns_.store(0);
    max_ns_.store(0);
  }

  std::uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }
  std::int64_t max_ns() const noexcept { return max_ns_.load(std::memory_order_relaxed); }
  double mean_ns() const noexcept {
    const std::uint64_t c = count();
    return c ? static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / static_cast<double>(c) : 0.0;
  }
  std::uint64_t bin(int i) const noexcept { return bins_[i].load(std::memory_order_relaxed); }

  // q in [0, 1]; 0 when empty.
  std::int64_t quantile_ns(double q) const noexcept {
    std::uint64_t total = 0;
    for (int i = 0; i <= kBins; ++i) total += bin(i);
    if (total == 0) return 0;
    std::uint64_t rank = static_cast<std::uint64_t>(q * static_cast<double>(total));
    if (rank >= total) rank = total - 1;
    std::uint64_t seen = 0;
    const std::int64_t mx = max_ns();
    for (int i = 0; i <= kBins; ++i) {
      seen += bin(i);
      if (seen > rank) {
        if (i == kBins) return mx;
        const std::int64_t edge = (i + 1) * kBinNs;
        return edge < mx ? edge : mx;
      }
    }
    return mx;
  }

  // Number of recorded values strictly above threshold_ns (exact to the bin).
  std::uint64_t count_above_ns(std::int64_t threshold_ns) const noexcept {
    std::uint64_t n = 0;
    const std::int64_t first = threshold_ns / kBinNs + 1;
    for (std::int64_t i = first < 0 ? 0 : first; i <= kBins; ++i) n += bin(static_cast<int>(i));
    return n;
  }

 private:
  std::atomic<std::uint64_t> bins_[kBins + 1] = {};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::int64_t> sum_ns_{0};
  std::atomic<std::int64_t> max_ns_{0};
};

}  // namespace robot_rt::control
