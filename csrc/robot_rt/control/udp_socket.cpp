#include "udp_socket.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <stdexcept>

namespace robot_rt::control {

std::int64_t monotonic_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

std::uint32_t random_session_id() {
  std::random_device rd;
  std::uint32_t id = 0;
  while (id == 0) id = static_cast<std::uint32_t>(rd());
  return id;
}

bool make_address(const std::string& host, std::uint16_t port, sockaddr_in& out) {
  std::memset(&out, 0, sizeof(out));
  out.sin_family = AF_INET;
  out.sin_port = htons(port);
  const std::string h = (host == "localhost") ? std::string("127.0.0.1") : host;
  return inet_pton(AF_INET, h.c_str(), &out.sin_addr) == 1;
}

std::string endpoint_string(const sockaddr_in& a) {
  char text[INET_ADDRSTRLEN] = {0};
  inet_ntop(AF_INET, &a.sin_addr, text, sizeof(text));
  return std::string(text) + ":" + std::to_string(ntohs(a.sin_port));
}

void require_key_unless_loopback(const std::string& key, std::initializer_list<const std::string*> hosts) {
  if (!key.empty()) return;
  for (const std::string* host : hosts) {
    sockaddr_in addr;
    if (!make_address(*host, 0, addr) || !is_loopback(addr))
      throw std::invalid_argument("key: unauthenticated UDP (no shared key) is allowed on loopback only, and '" + *host +
                                  "' is not a loopback address; give the shared key (--key-file)");
  }
}

void UdpSocket::open(const std::string& host, std::uint16_t port) {
  close();
  sockaddr_in addr;
  if (!make_address(host, port, addr)) throw std::runtime_error("host: not an IPv4 address: '" + host + "'");
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket(): ") + std::strerror(errno));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::runtime_error("bind(" + endpoint_string(addr) + "): " + std::strerror(err));
  }
  sockaddr_in bound;
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  fd_ = fd;
  local_port_ = ntohs(bound.sin_port);
}

void UdpSocket::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  local_port_ = 0;
}

long UdpSocket::receive(std::uint8_t* buf, std::size_t capacity, sockaddr_in& from) noexcept {
  if (fd_ < 0) return kError;
  for (;;) {
    socklen_t len = sizeof(from);
    const ssize_t n = ::recvfrom(fd_, buf, capacity, MSG_DONTWAIT | MSG_TRUNC, reinterpret_cast<sockaddr*>(&from), &len);
    if (n >= 0) return static_cast<long>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return kNothing;
    // ECONNREFUSED after an ICMP port unreachable (the peer is down): not fatal, nothing pending.
    if (errno == ECONNREFUSED) continue;
    return kError;
  }
}

bool UdpSocket::send(const std::uint8_t* data, std::size_t size, const sockaddr_in& to) noexcept {
  if (fd_ < 0) return false;
  for (;;) {
    const ssize_t n = ::sendto(fd_, data, size, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&to),
                               sizeof(to));
    if (n == static_cast<ssize_t>(size)) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

bool UdpSocket::wait_readable(std::int64_t timeout_ns) noexcept {
  if (fd_ < 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (timeout_ns < 0) timeout_ns = 0;
  timespec ts{static_cast<time_t>(timeout_ns / 1000000000LL), static_cast<long>(timeout_ns % 1000000000LL)};
  return ::ppoll(&p, 1, &ts, nullptr) > 0 && (p.revents & POLLIN);
}

}  // namespace robot_rt::control
