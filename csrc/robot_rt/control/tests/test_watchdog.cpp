// Watchdogs (watchdog.hpp): the freshness watchdog trips strictly after its timeout and reports each
// transition once. (The stop latch that its trips feed is tested in test_reflexes.cpp.)
#include <doctest/doctest.h>

#include <cstdint>

#include "test_util.hpp"
#include "watchdog.hpp"

using namespace robot_rt::control;
using robot_rt::control::testing::Random;

TEST_CASE("freshness watchdog trips only when the age exceeds the timeout, once per transition") {
  FreshnessWatchdog w;
  w.configure(0.05);  // 50 ms
  const std::int64_t t0 = 1'000'000'000;
  w.arm(t0);
  CHECK_FALSE(w.tripped());
  CHECK_FALSE(w.ever_fed());
  CHECK(w.update(t0) == Transition::kNone);
  CHECK(w.update(t0 + 50'000'000) == Transition::kNone);  // exactly the timeout: not stale yet
  CHECK(w.update(t0 + 50'000'001) == Transition::kTripped);
  CHECK(w.tripped());
  CHECK(w.update(t0 + 60'000'000) == Transition::kNone);  // reported once
  CHECK(w.update(t0 + 90'000'000) == Transition::kNone);
  CHECK(w.age_s(t0 + 90'000'000) == doctest::Approx(0.09));
  w.feed(t0 + 100'000'000);
  CHECK(w.ever_fed());
  CHECK(w.update(t0 + 100'000'000) == Transition::kCleared);
  CHECK_FALSE(w.tripped());
  CHECK(w.update(t0 + 101'000'000) == Transition::kNone);
  // re-arming forgets history
  w.arm(t0 + 200'000'000);
  CHECK_FALSE(w.ever_fed());
  CHECK_FALSE(w.tripped());
}

TEST_CASE("freshness watchdog state equals (now - last feed > timeout) for random feed/update sequences") {
  Random rng(20);
  for (int trial = 0; trial < 200; ++trial) {
    FreshnessWatchdog w;
    const double timeout_s = rng.uniform(1e-3, 0.2);
    const auto timeout_ns = static_cast<std::int64_t>(timeout_s * 1e9);
    w.configure(timeout_s);
    std::int64_t now = rng.integer(0, 1'000'000), last = now;
    w.arm(now);
    bool tripped = false;
    for (int k = 0; k < 500; ++k) {
      now += rng.integer(0, static_cast<int>(timeout_ns / 4) + 1);
      if (rng.coin(0.2)) {
        w.feed(now);
        last = now;
      }
      const bool stale = now - last > timeout_ns;
      const Transition t = w.update(now);
      CHECK(t == (stale == tripped ? Transition::kNone : (stale ? Transition::kTripped : Transition::kCleared)));
      tripped = stale;
      CHECK(w.tripped() == stale);
    }
  }
}
