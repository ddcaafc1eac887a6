// HKDF-SHA256 (RFC 5869) on the project's HMAC-SHA256 (sha256.hpp): the key derivation of the protocol's
// session keys (docs/protocol.md, "Key schedule"). No heap; tested against the RFC's test vectors and Python's
// hmac/hashlib (tests/test_protocol_codec.py, csrc/robot_rt/control/tests/test_session.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "sha256.hpp"

namespace robot_rt::control {

constexpr std::size_t kHkdfMaxOutputBytes = 255 * kSha256DigestBytes;
constexpr std::size_t kHkdfMaxInfoBytes = 128;

// PRK = HMAC-SHA256(salt, ikm). An empty salt stands for HashLen zero bytes, as RFC 5869 prescribes.
void hkdf_extract(const std::uint8_t* salt, std::size_t salt_size, const std::uint8_t* ikm, std::size_t ikm_size,
                  std::uint8_t prk[kSha256DigestBytes]);

// OKM = T(1) || T(2) || ... truncated to out_size, T(i) = HMAC-SHA256(PRK, T(i-1) || info || i).
// False (out untouched) when out_size > kHkdfMaxOutputBytes or info_size > kHkdfMaxInfoBytes.
bool hkdf_expand(const std::uint8_t prk[kSha256DigestBytes], const std::uint8_t* info, std::size_t info_size,
                 std::uint8_t* out, std::size_t out_size);

// Extract then expand.
bool hkdf(const std::uint8_t* salt, std::size_t salt_size, const std::uint8_t* ikm, std::size_t ikm_size,
          const std::uint8_t* info, std::size_t info_size, std::uint8_t* out, std::size_t out_size);

}  // namespace robot_rt::control
