// Sending one protocol packet from a UDP endpoint (driver, sim server, camera receiver): never allocates, never
// blocks, so it is safe inside a real-time tick.
#pragma once

#include <cstdint>

#include "protocol.hpp"
#include "sha256.hpp"
#include "udp_counters.hpp"
#include "udp_socket.hpp"

namespace robot_rt::control {

// Stamps `packet` with the endpoint's session id, its next sequence number (`sequence` is incremented) and
// `now_ns`, encodes it (with the HMAC when `key` is set) into `buffer` and sends it to `to`. Counts
// tx_datagrams, or tx_invalid (the encoder refused the message, e.g. non-finite values) / tx_errors (the kernel
// refused the datagram), and returns whether it was sent.
template <std::size_t Capacity>
bool stamp_and_send(protocol::Packet& packet, std::uint32_t session_id, std::uint64_t& sequence,
                    const HmacSha256Key& key, std::uint8_t (&buffer)[Capacity], UdpSocket& socket,
                    const sockaddr_in& to, std::int64_t now_ns, LinkCounters& counters) noexcept {
  packet.header.session_id = session_id;
  packet.header.sequence = ++sequence;
  packet.header.stamp_ns = static_cast<std::uint64_t>(now_ns);
  const std::size_t n = protocol::encode(packet, key.empty() ? nullptr : &key, buffer, Capacity);
  if (n == 0) {
    bump(counters.tx_invalid);
    return false;
  }
  if (!socket.send(buffer, n, to)) {
    bump(counters.tx_errors);
    return false;
  }
  bump(counters.tx_datagrams);
  return true;
}

}  // namespace robot_rt::control
