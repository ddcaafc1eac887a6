// Thin non-blocking IPv4 UDP socket used by the UDP driver, the camera receiver and the sim robot server.
// Opening/closing may allocate (std::string errors); send/receive never allocate and never block.
#pragma once

#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace robot_rt::control {

// CLOCK_MONOTONIC in nanoseconds (the clock of every *_ns stamp in the protocol and the loop).
std::int64_t monotonic_ns() noexcept;

// A random non-zero 32-bit session id (uses std::random_device; call outside the real-time tick).
std::uint32_t random_session_id();

// Parses a dotted IPv4 address (or "localhost") and a port; false on malformed input.
bool make_address(const std::string& host, std::uint16_t port, sockaddr_in& out);

inline bool same_endpoint(const sockaddr_in& a, const sockaddr_in& b) noexcept {
  return a.sin_addr.s_addr == b.sin_addr.s_addr && a.sin_port == b.sin_port;
}
inline bool is_loopback(const sockaddr_in& a) noexcept {
  return (ntohl(a.sin_addr.s_addr) >> 24) == 127u;
}
std::string endpoint_string(const sockaddr_in& a);

// Throws std::invalid_argument naming the key file when `key` is empty and any of `hosts` is not a loopback
// address: unauthenticated mode is for loopback only (docs/protocol.md, "Unauthenticated mode").
void require_key_unless_loopback(const std::string& key, std::initializer_list<const std::string*> hosts);

class UdpSocket {
 public:
  UdpSocket() = default;
  ~UdpSocket() { close(); }
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  // Binds host:port (port 0: an ephemeral port). Throws std::runtime_error with the reason on failure.
  void open(const std::string& host, std::uint16_t port);
  void close() noexcept;
  bool is_open() const noexcept { return fd_ >= 0; }
  int fd() const noexcept { return fd_; }
  std::uint16_t local_port() const noexcept { return local_port_; }

  static constexpr long kNothing = -1;  // receive(): no datagram pending
  static constexpr long kError = -2;    // receive(): socket error
  // One datagram into buf; returns its size (a datagram larger than capacity reports its full size, so the
  // caller can reject it as too long), kNothing when nothing is pending, kError on a socket error.
  long receive(std::uint8_t* buf, std::size_t capacity, sockaddr_in& from) noexcept;
  // Sends one datagram; false when the kernel refused it (full buffer, unreachable port, ...).
  bool send(const std::uint8_t* data, std::size_t size, const sockaddr_in& to) noexcept;
  // Waits up to timeout_ns for a datagram (not for use in a real-time tick); true when one is pending.
  bool wait_readable(std::int64_t timeout_ns) noexcept;

 private:
  int fd_ = -1;
  std::uint16_t local_port_ = 0;
};

}  // namespace robot_rt::control
