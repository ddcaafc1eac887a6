// Clock-offset estimator (clock_offset.hpp): NTP arithmetic, outlier rejection that never moves the estimate,
// re-synchronisation after a real clock step, drift within the bound, and the freshness test of peer stamps
// (the +10 s, +60 ms and -10 s stamps of issue 12 item 4).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "clock_offset.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;
using robot_rt::control::testing::Random;
using S = ClockOffsetEstimator::Sample;
using F = ClockOffsetEstimator::Freshness;

namespace {

constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kSecond = 1'000'000'000;

// A peer whose clock reads local * (1 + drift) + offset; one round trip with the given one-way delays.
struct Peer {
  double drift = 0.0;
  std::int64_t offset_ns = 0;
  std::int64_t peer_time(std::int64_t local) const {
    return local + offset_ns + static_cast<std::int64_t>(drift * static_cast<double>(local - kSecond * 100));
  }
  S round_trip(ClockOffsetEstimator& e, std::int64_t t1, std::int64_t up_ns, std::int64_t hold_ns,
               std::int64_t down_ns) const {
    const std::int64_t t2 = peer_time(t1 + up_ns);
    const std::int64_t t3 = peer_time(t1 + up_ns + hold_ns);
    return e.add(t1, t2, t3, t1 + up_ns + hold_ns + down_ns);
  }
};

}  // namespace

TEST_CASE("NTP arithmetic: offset within +-delay/2 whatever the split of the delay") {
  for (const std::int64_t offset : {std::int64_t(0), 3 * kSecond, -7 * kSecond, std::int64_t(12345)}) {
    ClockOffsetEstimator e;
    const Peer peer{0.0, offset};
    CHECK(peer.round_trip(e, 100 * kSecond, 3 * kMs, 1 * kMs, 1 * kMs) == S::kFirst);
    CHECK(e.valid());
    CHECK(e.best_delay_ns() == 4 * kMs);
    CHECK(std::llabs(e.offset_ns() - offset) <= 2 * kMs);
    CHECK(e.offset_ns() == offset + 1 * kMs);  // (3 - 1) / 2 ms: the asymmetry shows as offset, bounded by delay/2
    // A tighter symmetric sample replaces it.
    CHECK(peer.round_trip(e, 100 * kSecond + kMs * 10, 100'000, 50'000, 100'000) == S::kAccepted);
    CHECK(e.best_delay_ns() == 200'000);
    CHECK(e.offset_ns() == offset);
  }
}

TEST_CASE("uncertainty grows with the sample's age at the drift bound") {
  ClockOffsetEstimator e;
  const Peer peer;
  peer.round_trip(e, kSecond, kMs, 0, kMs);
  CHECK(e.uncertainty_ns(kSecond + 2 * kMs) == kMs);
  const double bound = e.config().drift_bound;
  CHECK(e.uncertainty_ns(kSecond + 2 * kMs + 10 * kSecond) ==
        kMs + static_cast<std::int64_t>(bound * 10 * kSecond));
}

TEST_CASE("a bad peer stamp never moves the estimate: negative delay, outliers, out-of-range stamps") {
  ClockOffsetEstimator e;
  const Peer peer{0.0, 5 * kSecond};
  std::int64_t t = 100 * kSecond;
  for (int i = 0; i < 20; ++i, t += 10 * kMs) peer.round_trip(e, t, 200'000, 10'000, 200'000);
  const std::int64_t offset = e.offset_ns(), delay = e.best_delay_ns();
  // t3 stamped 10 s in the future: the peer's hold exceeds our whole round trip.
  CHECK(e.add(t, peer.peer_time(t + 200'000), peer.peer_time(t + 210'000) + 10 * kSecond, t + 410'000) ==
        S::kNegativeDelay);
  // t2 and t3 both 60 ms ahead (a consistent but wrong reading): an outlier.
  CHECK(e.add(t, peer.peer_time(t + 200'000) + 60 * kMs, peer.peer_time(t + 210'000) + 60 * kMs, t + 410'000) ==
        S::kOutlier);
  CHECK(e.add(t, peer.peer_time(t) - 10 * kSecond, peer.peer_time(t) - 10 * kSecond, t + 410'000) == S::kOutlier);
  CHECK(e.add_wire(std::uint64_t(t), ~std::uint64_t(0), 5, t + 10) == S::kInvalid);
  CHECK(e.add(t, 0, 0, t - 1) == S::kInvalid);  // t4 before t1 on our own clock
  CHECK(e.add(t, peer.peer_time(t), peer.peer_time(t), t + 2 * kSecond) == S::kTooSlow);
  CHECK(e.offset_ns() == offset);
  CHECK(e.best_delay_ns() == delay);
  CHECK(e.rejected() == 6);
  t += 10 * kMs;
  CHECK(peer.round_trip(e, t, 200'000, 10'000, 200'000) == S::kAccepted);  // good samples keep being used
}

TEST_CASE("freshness: +10 s and +60 ms stamps are future, -10 s is late, and later states stay fresh") {
  ClockOffsetEstimator e;
  const Peer peer{0.0, -3 * kSecond};  // any offset: the peer's clock is not ours
  std::int64_t t = 100 * kSecond;
  for (int i = 0; i < 10; ++i, t += kMs) peer.round_trip(e, t, 150'000, 20'000, 150'000);
  const std::int64_t late = 20 * kMs;
  auto stamp = [&](std::int64_t local_measured) { return std::uint64_t(peer.peer_time(local_measured)); };
  std::int64_t local = 0;
  // A state measured 0.3 ms ago: fresh, dated on our clock.
  CHECK(e.classify(stamp(t - 300'000), t, late, &local) == F::kFresh);
  CHECK(std::llabs(local - (t - 300'000)) <= e.uncertainty_ns(t));
  CHECK(local <= t);
  CHECK(e.classify(stamp(t) + 10 * kSecond, t, late) == F::kFuture);  // +10 s
  CHECK(e.classify(stamp(t) + 60 * kMs, t, late) == F::kFuture);      // +60 ms
  CHECK(e.classify(stamp(t) - 10 * kSecond, t, late) == F::kLate);    // -10 s
  CHECK(e.classify(~std::uint64_t(0), t, late) == F::kFuture);        // beyond any clock
  // and none of it touched the estimate: the next states are fresh again
  for (int i = 0; i < 100; ++i) {
    t += kMs;
    CHECK(e.classify(stamp(t - 200'000), t, late) == F::kFresh);
  }
  // Boundaries: late only when even the youngest reading is older than the threshold.
  const std::int64_t slack = e.uncertainty_ns(t) + e.config().margin_ns;
  CHECK(e.classify(stamp(t - late - slack), t, late) == F::kFresh);
  CHECK(e.classify(stamp(t - late - slack - 2), t, late) == F::kLate);
  CHECK(e.classify(stamp(t + slack), t, late) == F::kFresh);
  CHECK(e.classify(stamp(t + slack + 2), t, late) == F::kFuture);
}

TEST_CASE("without an estimate every stamp is fresh at its receive time") {
  ClockOffsetEstimator e;
  std::int64_t local = -1;
  CHECK(e.classify(123, 5 * kSecond, 20 * kMs, &local) == F::kFresh);
  CHECK(local == 5 * kSecond);
}

TEST_CASE("a real clock step re-synchronises after resync_after consistent outliers, isolated ones never do") {
  ClockOffsetEstimator e;
  Peer peer{0.0, kSecond};
  std::int64_t t = 100 * kSecond;
  for (int i = 0; i < 10; ++i, t += kMs) peer.round_trip(e, t, 100'000, 10'000, 100'000);
  // Isolated outliers, interleaved with good samples, never accumulate.
  for (int i = 0; i < 100; ++i, t += kMs) {
    Peer wrong{0.0, kSecond + 40 * kMs};
    CHECK(wrong.round_trip(e, t, 100'000, 10'000, 100'000) == S::kOutlier);
    t += kMs;
    CHECK(peer.round_trip(e, t, 100'000, 10'000, 100'000) == S::kAccepted);
  }
  CHECK(e.resyncs() == 0);
  // Outliers that disagree among themselves never re-synchronise either.
  Random rng(7);
  for (int i = 0; i < 200; ++i, t += kMs) {
    Peer wild{0.0, kSecond + (rng.coin() ? 1 : -1) * (50 + rng.integer(0, 5000)) * kMs};
    CHECK(wild.round_trip(e, t, 100'000, 10'000, 100'000) == S::kOutlier);
  }
  CHECK(e.resyncs() == 0);
  CHECK(std::llabs(e.offset_ns() - kSecond) < kMs);
  // The peer's clock steps by +2 s for good: after resync_after samples the estimate follows.
  peer.offset_ns += 2 * kSecond;
  const int n = e.config().resync_after;
  for (int i = 1; i < n; ++i, t += kMs) CHECK(peer.round_trip(e, t, 100'000, 10'000, 100'000) == S::kOutlier);
  CHECK(peer.round_trip(e, t, 100'000, 10'000, 100'000) == S::kResynced);
  CHECK(e.resyncs() == 1);
  CHECK(std::llabs(e.offset_ns() - 3 * kSecond) < kMs);
}

TEST_CASE("drift within the bound: every sample accepted, the estimate tracks, states stay fresh") {
  for (const double drift : {200e-6, -400e-6}) {
    ClockOffsetEstimator e;
    const Peer peer{drift, 42 * kSecond};
    Random rng(11);
    std::int64_t t = 100 * kSecond;
    int rejected = 0, not_fresh = 0;
    double worst = 0.0;
    for (int i = 0; i < 6000; ++i) {  // one minute, a round trip every 10 ms with 0.05-2 ms jittery delays
      t += 10 * kMs;
      const S s = peer.round_trip(e, t, rng.integer(50, 2000) * 1000, rng.integer(5, 100) * 1000,
                                  rng.integer(50, 2000) * 1000);
      if (s != S::kAccepted && s != S::kFirst) ++rejected;
      const std::int64_t now = t + 5 * kMs;
      const std::int64_t truth = peer.peer_time(now) - now;
      worst = std::max(worst, std::fabs(double(e.offset_ns() - truth)) / double(e.uncertainty_ns(now)));
      if (e.classify(std::uint64_t(peer.peer_time(now - 2 * kMs)), now, 20 * kMs) != F::kFresh) ++not_fresh;
    }
    CHECK(rejected == 0);
    CHECK(not_fresh == 0);
    CHECK(worst <= 1.0);  // the true offset always lies within the stated uncertainty
    CHECK(e.resyncs() == 0);
  }
}

TEST_CASE("a lasting one-way delay of the state path makes states late, never shifts the estimate") {
  ClockOffsetEstimator e;
  const Peer peer{0.0, 0};
  std::int64_t t = 100 * kSecond;
  for (int i = 0; i < 50; ++i, t += kMs) peer.round_trip(e, t, 100'000, 10'000, 100'000);
  const std::int64_t offset = e.offset_ns();
  for (int i = 0; i < 500; ++i, t += kMs) {  // every round trip now returns 60 ms late (one way)
    const S s = peer.round_trip(e, t, 100'000, 10'000, 60 * kMs);
    CHECK((s == S::kAccepted || s == S::kOutlier));
    CHECK(e.classify(std::uint64_t(peer.peer_time(t - 60 * kMs)), t, 20 * kMs) == F::kLate);
  }
  CHECK(std::llabs(e.offset_ns() - offset) <= 100'000);
}
