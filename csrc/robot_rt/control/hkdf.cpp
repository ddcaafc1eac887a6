#include "hkdf.hpp"

#include <cstring>

namespace robot_rt::control {

void hkdf_extract(const std::uint8_t* salt, std::size_t salt_size, const std::uint8_t* ikm, std::size_t ikm_size,
                  std::uint8_t prk[kSha256DigestBytes]) {
  static constexpr std::uint8_t kZeroSalt[kSha256DigestBytes] = {};
  const HmacSha256Key key = salt_size > 0 ? HmacSha256Key(salt, salt_size) : HmacSha256Key(kZeroSalt, sizeof(kZeroSalt));
  key.tag(ikm, ikm_size, nullptr, 0, prk);
}

bool hkdf_expand(const std::uint8_t prk[kSha256DigestBytes], const std::uint8_t* info, std::size_t info_size,
                 std::uint8_t* out, std::size_t out_size) {
  if (out_size > kHkdfMaxOutputBytes || info_size > kHkdfMaxInfoBytes) return false;
  const HmacSha256Key key(prk, kSha256DigestBytes);
  std::uint8_t block[kSha256DigestBytes + kHkdfMaxInfoBytes + 1];
  std::uint8_t t[kSha256DigestBytes];
  std::size_t previous = 0;  // bytes of T(i-1) at the start of block (0 for T(1))
  std::size_t done = 0;
  for (unsigned counter = 1; done < out_size; ++counter) {
    if (previous > 0) std::memcpy(block, t, previous);
    if (info_size > 0) std::memcpy(block + previous, info, info_size);
    block[previous + info_size] = static_cast<std::uint8_t>(counter);
    key.tag(block, previous + info_size + 1, nullptr, 0, t);
    const std::size_t take = out_size - done < kSha256DigestBytes ? out_size - done : kSha256DigestBytes;
    std::memcpy(out + done, t, take);
    done += take;
    previous = kSha256DigestBytes;
  }
  return true;
}

bool hkdf(const std::uint8_t* salt, std::size_t salt_size, const std::uint8_t* ikm, std::size_t ikm_size,
          const std::uint8_t* info, std::size_t info_size, std::uint8_t* out, std::size_t out_size) {
  std::uint8_t prk[kSha256DigestBytes];
  hkdf_extract(salt, salt_size, ikm, ikm_size, prk);
  return hkdf_expand(prk, info, info_size, out, out_size);
}

}  // namespace robot_rt::control
