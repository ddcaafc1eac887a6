// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), small and self-contained: no heap, no dependencies.
// Used to authenticate protocol packets when a shared key is configured (see docs/protocol.md). Tested
// against Python's hashlib / hmac in tests/test_protocol_codec.py.
#pragma once

#include <cstddef>
#include <cstdint>

namespace robot_rt::control {

constexpr std::size_t kSha256DigestBytes = 32;
constexpr std::size_t kSha256BlockBytes = 64;

class Sha256 {
 public:
  Sha256() { reset(); }
  void reset();
  void update(const std::uint8_t* data, std::size_t size);
  void finish(std::uint8_t out[kSha256DigestBytes]);  // the object must be reset() before reuse

 private:
  void compress(const std::uint8_t block[kSha256BlockBytes]);
  std::uint32_t state_[8];
  std::uint64_t total_bytes_;
  std::uint8_t buffer_[kSha256BlockBytes];
  std::size_t buffered_;
};

void sha256(const std::uint8_t* data, std::size_t size, std::uint8_t out[kSha256DigestBytes]);

// A prepared HMAC-SHA256 key: the inner and outer hash states after absorbing key^ipad / key^opad, so a
// tag costs two compressions plus the message. Keys longer than a block are hashed first (RFC 2104).
class HmacSha256Key {
 public:
  HmacSha256Key() = default;
  HmacSha256Key(const std::uint8_t* key, std::size_t size) { set(key, size); }
  void set(const std::uint8_t* key, std::size_t size);
  bool empty() const { return !set_; }
  // tag = HMAC(key, a || b); b may be null with size 0.
  void tag(const std::uint8_t* a, std::size_t a_size, const std::uint8_t* b, std::size_t b_size,
           std::uint8_t out[kSha256DigestBytes]) const;

 private:
  Sha256 inner_;
  Sha256 outer_;
  bool set_ = false;
};

// Constant-time comparison (the time does not depend on where the first difference lies).
bool equal_constant_time(const std::uint8_t* a, const std::uint8_t* b, std::size_t size);

}  // namespace robot_rt::control
