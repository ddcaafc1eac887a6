// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF): the checksum of
// zlib.crc32 / binascii.crc32, so the Python codec and tools can verify packets with the standard library.
#pragma once

#include <cstddef>
#include <cstdint>

namespace robot_rt::control {

// Continues a CRC: crc32_update(crc32_update(0, a), b) == crc32 of a followed by b. Start with 0.
std::uint32_t crc32_update(std::uint32_t crc, const std::uint8_t* data, std::size_t size);

inline std::uint32_t crc32(const std::uint8_t* data, std::size_t size) { return crc32_update(0u, data, size); }

}  // namespace robot_rt::control
