// Watchdogs (watchdog.hpp): the freshness watchdog trips strictly after its timeout and reports each
// transition once; the e-stop latch holds until an explicit reset with the input released and the robot at rest.
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

TEST_CASE("e-stop latch: latches on request or input, clears only on reset with input released and at rest") {
  EstopLatch e;
  CHECK(e.update(false, false, false, true) == Transition::kNone);
  CHECK_FALSE(e.latched());
  // a reset request while not latched does nothing
  CHECK(e.update(false, false, true, true) == Transition::kNone);
  CHECK(e.update(true, false, false, false) == Transition::kTripped);
  CHECK(e.latched());
  // stays latched when the request goes away (latch, not level)
  CHECK(e.update(false, false, false, true) == Transition::kNone);
  CHECK(e.latched());
  // reset refused while moving
  CHECK(e.update(false, false, true, false) == Transition::kNone);
  CHECK(e.latched());
  // reset refused while the input is pressed or a request is pending
  CHECK(e.update(false, true, true, true) == Transition::kNone);
  CHECK(e.update(true, false, true, true) == Transition::kNone);
  CHECK(e.latched());
  // released, at rest, reset: cleared
  CHECK(e.update(false, false, true, true) == Transition::kCleared);
  CHECK_FALSE(e.latched());
  // the hardware input alone latches too, and a second press while latched is not a new transition
  CHECK(e.update(false, true, false, true) == Transition::kTripped);
  CHECK(e.update(false, true, false, true) == Transition::kNone);
  CHECK(e.update(true, true, false, true) == Transition::kNone);
  CHECK(e.latched());
}

TEST_CASE("e-stop latch never clears by itself (random input sequences without reset)") {
  Random rng(21);
  for (int trial = 0; trial < 100; ++trial) {
    EstopLatch e;
    bool ever = false;
    for (int k = 0; k < 300; ++k) {
      const bool request = rng.coin(0.05), input = rng.coin(0.05), at_rest = rng.coin();
      const Transition t = e.update(request, input, /*reset_request=*/false, at_rest);
      CHECK(t != Transition::kCleared);
      if ((request || input) && !ever) CHECK(t == Transition::kTripped);
      ever = ever || request || input;
      CHECK(e.latched() == ever);
    }
  }
}
