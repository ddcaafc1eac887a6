#include "sha256.hpp"

#include <cstring>

namespace robot_rt::control {
namespace {

constexpr std::uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

}  // namespace

void Sha256::reset() {
  static constexpr std::uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::memcpy(state_, kInit, sizeof(state_));
  total_bytes_ = 0;
  buffered_ = 0;
}

void Sha256::compress(const std::uint8_t block[kSha256BlockBytes]) {
  std::uint32_t w[64];
  for (int i = 0; i < 16; ++i) {
    w[i] = (std::uint32_t(block[4 * i]) << 24) | (std::uint32_t(block[4 * i + 1]) << 16) |
           (std::uint32_t(block[4 * i + 2]) << 8) | std::uint32_t(block[4 * i + 3]);
  }
  for (int i = 16; i < 64; ++i) {
    const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  std::uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
  std::uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
  for (int i = 0; i < 64; ++i) {
    const std::uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    const std::uint32_t ch = (e & f) ^ (~e & g);
    const std::uint32_t t1 = h + s1 + ch + kRound[i] + w[i];
    const std::uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    const std::uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    const std::uint32_t t2 = s0 + maj;
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  state_[0] += a;
  state_[1] += b;
  state_[2] += c;
  state_[3] += d;
  state_[4] += e;
  state_[5] += f;
  state_[6] += g;
  state_[7] += h;
}

void Sha256::update(const std::uint8_t* data, std::size_t size) {
  total_bytes_ += size;
  if (buffered_ > 0) {
    const std::size_t take = (size < kSha256BlockBytes - buffered_) ? size : kSha256BlockBytes - buffered_;
    std::memcpy(buffer_ + buffered_, data, take);
    buffered_ += take;
    data += take;
    size -= take;
    if (buffered_ < kSha256BlockBytes) return;
    compress(buffer_);
    buffered_ = 0;
  }
  while (size >= kSha256BlockBytes) {
    compress(data);
    data += kSha256BlockBytes;
    size -= kSha256BlockBytes;
  }
  if (size > 0) {
    std::memcpy(buffer_, data, size);
    buffered_ = size;
  }
}

void Sha256::finish(std::uint8_t out[kSha256DigestBytes]) {
  const std::uint64_t bit_length = total_bytes_ * 8u;
  std::uint8_t pad[kSha256BlockBytes * 2] = {0x80};
  const std::size_t pad_size = (buffered_ < 56) ? (56 - buffered_) : (120 - buffered_);
  update(pad, pad_size);
  std::uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = std::uint8_t(bit_length >> (56 - 8 * i));
  update(length, 8);
  for (int i = 0; i < 8; ++i) {
    out[4 * i] = std::uint8_t(state_[i] >> 24);
    out[4 * i + 1] = std::uint8_t(state_[i] >> 16);
    out[4 * i + 2] = std::uint8_t(state_[i] >> 8);
    out[4 * i + 3] = std::uint8_t(state_[i]);
  }
}

void sha256(const std::uint8_t* data, std::size_t size, std::uint8_t out[kSha256DigestBytes]) {
  Sha256 h;
  h.update(data, size);
  h.finish(out);
}

void HmacSha256Key::set(const std::uint8_t* key, std::size_t size) {
  std::uint8_t block[kSha256BlockBytes] = {0};
  if (size > kSha256BlockBytes) {
    sha256(key, size, block);
  } else if (size > 0) {
    std::memcpy(block, key, size);
  }
  std::uint8_t pad[kSha256BlockBytes];
  for (std::size_t i = 0; i < kSha256BlockBytes; ++i) pad[i] = block[i] ^ 0x36u;
  inner_.reset();
  inner_.update(pad, kSha256BlockBytes);
  for (std::size_t i = 0; i < kSha256BlockBytes; ++i) pad[i] = block[i] ^ 0x5cu;
  outer_.reset();
  outer_.update(pad, kSha256BlockBytes);
  set_ = true;
}

void HmacSha256Key::tag(const std::uint8_t* a, std::size_t a_size, const std::uint8_t* b, std::size_t b_size,
                        std::uint8_t out[kSha256DigestBytes]) const {
  Sha256 inner = inner_;
  inner.update(a, a_size);
  if (b_size > 0) inner.update(b, b_size);
  std::uint8_t inner_digest[kSha256DigestBytes];
  inner.finish(inner_digest);
  Sha256 outer = outer_;
  outer.update(inner_digest, kSha256DigestBytes);
  outer.finish(out);
}

bool equal_constant_time(const std::uint8_t* a, const std::uint8_t* b, std::size_t size) {
  std::uint8_t diff = 0;
  for (std::size_t i = 0; i < size; ++i) diff |= std::uint8_t(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace robot_rt::control
