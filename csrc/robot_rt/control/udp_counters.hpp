// Counters of a UDP link endpoint (driver, camera receiver, sim server). Written by the endpoint's thread,
// read from any thread (relaxed atomics: each value is exact, a snapshot of several is not simultaneous).
#pragma once

#include <atomic>
#include <cstdint>

#include "protocol.hpp"

namespace robot_rt::control {

struct LinkCounters {
  std::atomic<std::uint64_t> rx_datagrams{0};          // every datagram read from the socket
  std::atomic<std::uint64_t> rx_accepted{0};           // passed every check and used
  std::atomic<std::uint64_t> rx_unexpected_source{0};  // from an address that is not the peer (or not allowed)
  std::atomic<std::uint64_t> rx_unexpected_session{0};  // another (old, replayed, foreign) session's datagram
  std::atomic<std::uint64_t> rx_no_session{0};          // session traffic while no session is established
  std::atomic<std::uint64_t> rx_stale_ack{0};           // a hello_ack that answers no current hello (replayed)
  std::atomic<std::uint64_t> rx_wrong_type{0};          // valid packet of a type this endpoint does not take
  std::atomic<std::uint64_t> rx_mismatch{0};            // valid packet for another robot (dof mismatch)
  std::atomic<std::uint64_t> rx_duplicate{0};           // sequence already accepted
  std::atomic<std::uint64_t> rx_stale{0};               // older than the newest accepted (reordered)
  std::atomic<std::uint64_t> rx_late{0};                // in order but delayed beyond the late threshold
  std::atomic<std::uint64_t> rx_future{0};              // stamped in the future beyond the clock-offset bound
  std::atomic<std::uint64_t> rx_lost{0};                // sequence gaps (lost, or dropped as late/stale later)
  std::atomic<std::uint64_t> rx_rejected[protocol::kStatusCount] = {};  // by decode status (index 0 unused)
  std::atomic<std::uint64_t> peer_restarts{0};          // the peer's session id changed
  std::atomic<std::uint64_t> tx_datagrams{0};
  std::atomic<std::uint64_t> tx_errors{0};              // the kernel refused a datagram
  std::atomic<std::uint64_t> tx_invalid{0};             // a message the encoder refused (e.g. non-finite values)
  std::atomic<std::uint64_t> tx_no_session{0};          // a command while no session is established (not sent)
  std::atomic<std::uint64_t> socket_errors{0};

  std::uint64_t rx_malformed() const {
    std::uint64_t total = 0;
    for (int i = 1; i < protocol::kStatusCount; ++i) total += rx_rejected[i].load(std::memory_order_relaxed);
    return total;
  }
  void reject(protocol::Status status) {
    rx_rejected[static_cast<int>(status)].fetch_add(1, std::memory_order_relaxed);
  }
};

inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) {
  counter.fetch_add(by, std::memory_order_relaxed);
}

}  // namespace robot_rt::control
