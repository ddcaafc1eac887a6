#include "protocol.hpp"

#include <cmath>
#include <cstring>
#include <initializer_list>

#include "crc32.hpp"

namespace robot_rt::control::protocol {
namespace {

// Little-endian writers/readers on raw bytes (independent of the host's byte order and alignment).
inline void put_u16(std::uint8_t* p, std::uint16_t v) {
  p[0] = std::uint8_t(v);
  p[1] = std::uint8_t(v >> 8);
}
inline void put_u32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::uint8_t(v >> (8 * i));
}
inline void put_u64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = std::uint8_t(v >> (8 * i));
}
inline void put_f64(std::uint8_t* p, double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  put_u64(p, bits);
}
inline void put_f32(std::uint8_t* p, float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  put_u32(p, bits);
}
inline std::uint16_t get_u16(const std::uint8_t* p) { return std::uint16_t(p[0] | (std::uint16_t(p[1]) << 8)); }
inline std::uint32_t get_u32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t(p[i]) << (8 * i);
  return v;
}
inline std::uint64_t get_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t(p[i]) << (8 * i);
  return v;
}
inline double get_f64(const std::uint8_t* p) {
  const std::uint64_t bits = get_u64(p);
  double v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}
inline float get_f32(const std::uint8_t* p) {
  const std::uint32_t bits = get_u32(p);
  float v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

bool known_type(std::uint8_t t) { return t >= 1 && t <= 7; }

bool valid_role(std::uint16_t role) { return role >= 1 && role <= 4; }

bool all_finite(const double* v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

bool valid_observation(const BallObservation& o) {
  return std::isfinite(o.confidence) && o.confidence >= 0.0f && o.confidence <= 1.0f && all_finite(o.position_m, 3);
}

// Validates the member selected by the type; returns the payload size (0: invalid).
std::size_t checked_payload_bytes(const Packet& p) {
  switch (p.header.type) {
    case MessageType::kHello:
      return (valid_role(p.hello.role) && p.hello.dof <= kMaxJoints) ? payload_bytes(MessageType::kHello, 0) : 0;
    case MessageType::kHelloAck:
      return (valid_role(p.hello_ack.role) && p.hello_ack.dof <= kMaxJoints) ? payload_bytes(MessageType::kHelloAck, 0)
                                                                              : 0;
    case MessageType::kHeartbeat:
      return payload_bytes(MessageType::kHeartbeat, 0);
    case MessageType::kGoodbye:
      return p.goodbye.reason <= kGoodbyeMaxReason ? payload_bytes(MessageType::kGoodbye, 0) : 0;
    case MessageType::kJointState: {
      const JointState& s = p.state;
      if (s.dof < 1 || s.dof > kMaxJoints || (s.status & ~kKnownStatus) != 0) return 0;
      if (!all_finite(s.position, s.dof) || !all_finite(s.velocity, s.dof)) return 0;
      return payload_bytes(MessageType::kJointState, s.dof);
    }
    case MessageType::kJointCommand: {
      const JointCommand& c = p.command;
      if (c.dof < 1 || c.dof > kMaxJoints) return 0;
      if (c.mode != kModePosition && c.mode != kModePositionVelocity) return 0;
      if (!all_finite(c.position, c.dof) || !all_finite(c.velocity, c.dof)) return 0;
      if (c.mode == kModePosition) {
        for (std::size_t i = 0; i < c.dof; ++i)
          if (c.velocity[i] != 0.0) return 0;
      }
      return payload_bytes(MessageType::kJointCommand, c.dof);
    }
    case MessageType::kBallObservations: {
      const BallObservations& b = p.balls;
      if (b.count > kMaxBalls) return 0;
      for (std::size_t i = 0; i < b.count; ++i)
        if (!valid_observation(b.obs[i])) return 0;
      return payload_bytes(MessageType::kBallObservations, b.count);
    }
  }
  return 0;
}

void write_payload(const Packet& p, std::uint8_t* q) {
  switch (p.header.type) {
    case MessageType::kHello:
      put_u16(q, p.hello.role);
      put_u16(q + 2, p.hello.dof);
      put_u32(q + 4, p.hello.period_us);
      std::memcpy(q + 8, p.hello.nonce, kNonceBytes);
      put_u64(q + 24, p.hello.limits_digest);
      break;
    case MessageType::kHelloAck: {
      const HelloAck& a = p.hello_ack;
      put_u16(q, a.role);
      put_u16(q + 2, a.dof);
      put_u32(q + 4, a.period_us);
      put_u32(q + 8, a.client_session_id);
      put_u32(q + 12, 0);
      std::memcpy(q + 16, a.client_nonce, kNonceBytes);
      std::memcpy(q + 32, a.server_nonce, kNonceBytes);
      put_u64(q + 48, a.echo_hello_stamp_ns);
      put_u64(q + 56, a.hello_receive_ns);
      put_u64(q + 64, a.limits_digest);
      break;
    }
    case MessageType::kHeartbeat:
      put_u64(q, p.heartbeat.echo_sequence);
      put_u64(q + 8, p.heartbeat.echo_stamp_ns);
      put_u64(q + 16, p.heartbeat.echo_receive_ns);
      break;
    case MessageType::kGoodbye:
      put_u32(q, p.goodbye.reason);
      put_u32(q + 4, 0);
      break;
    case MessageType::kJointState: {
      const JointState& s = p.state;
      put_u16(q, s.dof);
      put_u16(q + 2, s.status);
      put_u32(q + 4, s.robot_stops);
      put_u64(q + 8, s.echo_command_sequence);
      put_u64(q + 16, s.echo_command_stamp_ns);
      put_u64(q + 24, s.echo_command_receive_ns);
      q += kJointStateHeadBytes;
      for (std::size_t i = 0; i < s.dof; ++i) put_f64(q + 8 * i, s.position[i]);
      q += 8 * s.dof;
      for (std::size_t i = 0; i < s.dof; ++i) put_f64(q + 8 * i, s.velocity[i]);
      break;
    }
    case MessageType::kJointCommand: {
      const JointCommand& c = p.command;
      put_u16(q, c.dof);
      put_u16(q + 2, c.mode);
      put_u32(q + 4, c.robot_stops_acknowledged);
      q += 8;
      for (std::size_t i = 0; i < c.dof; ++i) put_f64(q + 8 * i, c.position[i]);
      q += 8 * c.dof;
      for (std::size_t i = 0; i < c.dof; ++i) put_f64(q + 8 * i, c.velocity[i]);
      break;
    }
    case MessageType::kBallObservations: {
      const BallObservations& b = p.balls;
      put_u16(q, b.count);
      put_u16(q + 2, b.camera_id);
      put_u32(q + 4, 0);
      q += 8;
      for (std::size_t i = 0; i < b.count; ++i, q += kBallObservationBytes) {
        const BallObservation& o = b.obs[i];
        put_u64(q, o.capture_age_ns);
        put_u32(q + 8, o.frame_id);
        put_f32(q + 12, o.confidence);
        for (int k = 0; k < 3; ++k) put_f64(q + 16 + 8 * k, o.position_m[k]);
      }
      break;
    }
  }
}

// Parses a payload whose size has been checked against the type; validates values.
Status read_payload(MessageType type, const std::uint8_t* q, std::size_t size, Packet& p) {
  switch (type) {
    case MessageType::kHello:
      if (size != payload_bytes(type, 0)) return Status::kBadLength;
      p.hello.role = get_u16(q);
      p.hello.dof = get_u16(q + 2);
      p.hello.period_us = get_u32(q + 4);
      std::memcpy(p.hello.nonce, q + 8, kNonceBytes);
      p.hello.limits_digest = get_u64(q + 24);
      if (!valid_role(p.hello.role) || p.hello.dof > kMaxJoints) return Status::kBadValue;
      return Status::kOk;
    case MessageType::kHelloAck: {
      if (size != payload_bytes(type, 0)) return Status::kBadLength;
      HelloAck& a = p.hello_ack;
      a.role = get_u16(q);
      a.dof = get_u16(q + 2);
      a.period_us = get_u32(q + 4);
      a.client_session_id = get_u32(q + 8);
      std::memcpy(a.client_nonce, q + 16, kNonceBytes);
      std::memcpy(a.server_nonce, q + 32, kNonceBytes);
      a.echo_hello_stamp_ns = get_u64(q + 48);
      a.hello_receive_ns = get_u64(q + 56);
      a.limits_digest = get_u64(q + 64);
      if (!valid_role(a.role) || a.dof > kMaxJoints || get_u32(q + 12) != 0) return Status::kBadValue;
      return Status::kOk;
    }
    case MessageType::kHeartbeat:
      if (size != payload_bytes(type, 0)) return Status::kBadLength;
      p.heartbeat.echo_sequence = get_u64(q);
      p.heartbeat.echo_stamp_ns = get_u64(q + 8);
      p.heartbeat.echo_receive_ns = get_u64(q + 16);
      return Status::kOk;
    case MessageType::kGoodbye:
      if (size != payload_bytes(type, 0)) return Status::kBadLength;
      p.goodbye.reason = get_u32(q);
      if (p.goodbye.reason > kGoodbyeMaxReason || get_u32(q + 4) != 0) return Status::kBadValue;
      return Status::kOk;
    case MessageType::kJointState: {
      if (size < kJointStateHeadBytes) return Status::kBadLength;
      JointState& s = p.state;
      s.dof = get_u16(q);
      if (s.dof < 1 || s.dof > kMaxJoints) return Status::kBadValue;
      if (size != payload_bytes(type, s.dof)) return Status::kBadLength;
      s.status = get_u16(q + 2);
      if ((s.status & ~kKnownStatus) != 0) return Status::kBadValue;
      s.robot_stops = get_u32(q + 4);
      s.echo_command_sequence = get_u64(q + 8);
      s.echo_command_stamp_ns = get_u64(q + 16);
      s.echo_command_receive_ns = get_u64(q + 24);
      q += kJointStateHeadBytes;
      for (std::size_t i = 0; i < s.dof; ++i) s.position[i] = get_f64(q + 8 * i);
      q += 8 * s.dof;
      for (std::size_t i = 0; i < s.dof; ++i) s.velocity[i] = get_f64(q + 8 * i);
      for (std::size_t i = s.dof; i < kMaxJoints; ++i) s.position[i] = s.velocity[i] = 0.0;
      if (!all_finite(s.position, s.dof) || !all_finite(s.velocity, s.dof)) return Status::kBadValue;
      return Status::kOk;
    }
    case MessageType::kJointCommand: {
      if (size < 8) return Status::kBadLength;
      JointCommand& c = p.command;
      c.dof = get_u16(q);
      if (c.dof < 1 || c.dof > kMaxJoints) return Status::kBadValue;
      if (size != payload_bytes(type, c.dof)) return Status::kBadLength;
      c.mode = get_u16(q + 2);
      if (c.mode != kModePosition && c.mode != kModePositionVelocity) return Status::kBadValue;
      c.robot_stops_acknowledged = get_u32(q + 4);
      q += 8;
      for (std::size_t i = 0; i < c.dof; ++i) c.position[i] = get_f64(q + 8 * i);
      q += 8 * c.dof;
      for (std::size_t i = 0; i < c.dof; ++i) c.velocity[i] = get_f64(q + 8 * i);
      for (std::size_t i = c.dof; i < kMaxJoints; ++i) c.position[i] = c.velocity[i] = 0.0;
      if (!all_finite(c.position, c.dof) || !all_finite(c.velocity, c.dof)) return Status::kBadValue;
      if (c.mode == kModePosition) {
        for (std::size_t i = 0; i < c.dof; ++i)
          if (c.velocity[i] != 0.0) return Status::kBadValue;
      }
      return Status::kOk;
    }
    case MessageType::kBallObservations: {
      if (size < 8) return Status::kBadLength;
      BallObservations& b = p.balls;
      b.count = get_u16(q);
      if (b.count > kMaxBalls) return Status::kBadValue;
      if (size != payload_bytes(type, b.count)) return Status::kBadLength;
      b.camera_id = get_u16(q + 2);
      if (get_u32(q + 4) != 0) return Status::kBadValue;
      q += 8;
      for (std::size_t i = 0; i < b.count; ++i, q += kBallObservationBytes) {
        BallObservation& o = b.obs[i];
        o.capture_age_ns = get_u64(q);
        o.frame_id = get_u32(q + 8);
        o.confidence = get_f32(q + 12);
        for (int k = 0; k < 3; ++k) o.position_m[k] = get_f64(q + 16 + 8 * k);
        if (!valid_observation(o)) return Status::kBadValue;
      }
      return Status::kOk;
    }
  }
  return Status::kBadType;
}

}  // namespace

const char* status_name(Status status) {
  switch (status) {
    case Status::kOk: return "ok";
    case Status::kTooShort: return "too_short";
    case Status::kTooLong: return "too_long";
    case Status::kBadMagic: return "bad_magic";
    case Status::kBadVersion: return "bad_version";
    case Status::kBadLength: return "bad_length";
    case Status::kBadChecksum: return "bad_checksum";
    case Status::kMissingTag: return "missing_tag";
    case Status::kUnexpectedTag: return "unexpected_tag";
    case Status::kBadTag: return "bad_tag";
    case Status::kBadType: return "bad_type";
    case Status::kBadValue: return "bad_value";
    case Status::kBufferTooSmall: return "buffer_too_small";
  }
  return "unknown";
}

std::size_t payload_bytes(MessageType type, std::size_t count) {
  switch (type) {
    case MessageType::kHello: return 8 + kNonceBytes + 8;
    case MessageType::kHelloAck: return 16 + 2 * kNonceBytes + 16 + 8;
    case MessageType::kHeartbeat: return 24;
    case MessageType::kGoodbye: return 8;
    case MessageType::kJointState:
      return (count >= 1 && count <= kMaxJoints) ? kJointStateHeadBytes + 16 * count : 0;
    case MessageType::kJointCommand: return (count >= 1 && count <= kMaxJoints) ? 8 + 16 * count : 0;
    case MessageType::kBallObservations: return count <= kMaxBalls ? 8 + kBallObservationBytes * count : 0;
  }
  return 0;
}

std::size_t encode(const Packet& packet, const HmacSha256Key* key, std::uint8_t* out, std::size_t capacity,
                   Status* status) {
  const bool with_tag = key != nullptr && !key->empty();
  if (!known_type(static_cast<std::uint8_t>(packet.header.type))) {
    if (status) *status = Status::kBadType;
    return 0;
  }
  const std::size_t payload = checked_payload_bytes(packet);
  if (payload == 0) {
    if (status) *status = Status::kBadValue;
    return 0;
  }
  const std::size_t total = kHeaderBytes + payload + kChecksumBytes + (with_tag ? kTagBytes : 0);
  if (out == nullptr || capacity < total) {
    if (status) *status = Status::kBufferTooSmall;
    return 0;
  }
  const Header& h = packet.header;
  std::memcpy(out, kMagic, 4);
  out[4] = kVersion;
  out[5] = static_cast<std::uint8_t>(h.type);
  put_u16(out + 6, with_tag ? kFlagTag : 0);
  put_u32(out + 8, h.session_id);
  put_u16(out + 12, static_cast<std::uint16_t>(payload));
  put_u16(out + 14, 0);
  put_u64(out + 16, h.sequence);
  put_u64(out + 24, h.stamp_ns);
  write_payload(packet, out + kHeaderBytes);
  const std::size_t body = kHeaderBytes + payload;
  put_u32(out + body, crc32(out, body));
  if (with_tag) key->tag(out, body + kChecksumBytes, nullptr, 0, out + body + kChecksumBytes);
  if (status) *status = Status::kOk;
  return total;
}

Status peek(const std::uint8_t* data, std::size_t size, Frame& out) {
  if (data == nullptr || size < kHeaderBytes + kChecksumBytes) return Status::kTooShort;
  if (size > kMaxPacketBytes) return Status::kTooLong;
  if (std::memcmp(data, kMagic, 4) != 0) return Status::kBadMagic;
  if (data[4] != kVersion) return Status::kBadVersion;
  const std::uint16_t flags = get_u16(data + 6);
  const std::size_t payload = get_u16(data + 12);
  const bool has_tag = (flags & kFlagTag) != 0;
  const std::size_t body = kHeaderBytes + payload;
  if (size != body + kChecksumBytes + (has_tag ? kTagBytes : 0)) return Status::kBadLength;
  if (get_u32(data + body) != crc32(data, body)) return Status::kBadChecksum;
  out.type = data[5];
  out.flags = flags;
  out.session_id = get_u32(data + 8);
  out.sequence = get_u64(data + 16);
  out.stamp_ns = get_u64(data + 24);
  out.payload_bytes = payload;
  return Status::kOk;
}

bool peek_server_nonce(const std::uint8_t* data, std::size_t size, std::uint8_t nonce[kNonceBytes]) {
  const std::size_t payload = payload_bytes(MessageType::kHelloAck, 0);
  if (data == nullptr || size < kHeaderBytes + payload || data[5] != static_cast<std::uint8_t>(MessageType::kHelloAck) ||
      get_u16(data + 12) != payload)
    return false;
  std::memcpy(nonce, data + kHeaderBytes + 32, kNonceBytes);
  return true;
}

Status decode(const std::uint8_t* data, std::size_t size, const HmacSha256Key* key, Packet& out) {
  Frame frame;
  const Status framing = peek(data, size, frame);
  if (framing != Status::kOk) return framing;
  const std::uint16_t flags = frame.flags;
  const std::size_t payload = frame.payload_bytes;
  const bool has_tag = (flags & kFlagTag) != 0;
  const std::size_t body = kHeaderBytes + payload;
  const bool want_tag = key != nullptr && !key->empty();
  if (has_tag && !want_tag) return Status::kUnexpectedTag;
  if (!has_tag && want_tag) return Status::kMissingTag;
  if (want_tag) {
    std::uint8_t expected[kTagBytes];
    key->tag(data, body + kChecksumBytes, nullptr, 0, expected);
    if (!equal_constant_time(expected, data + body + kChecksumBytes, kTagBytes)) return Status::kBadTag;
  }
  if ((flags & ~kKnownFlags) != 0 || get_u16(data + 14) != 0) return Status::kBadValue;
  if (!known_type(data[5])) return Status::kBadType;
  out.header.type = static_cast<MessageType>(data[5]);
  out.header.flags = flags;
  out.header.session_id = get_u32(data + 8);
  out.header.sequence = get_u64(data + 16);
  out.header.stamp_ns = get_u64(data + 24);
  return read_payload(out.header.type, data + kHeaderBytes, payload, out);
}

std::uint64_t limits_digest(std::size_t dof, const double* position_min, const double* position_max,
                            const double* velocity, const double* acceleration, const double* jerk,
                            std::uint64_t geometry) noexcept {
  if (dof < 1 || dof > kMaxJoints) return 0;
  Sha256 h;
  h.update(reinterpret_cast<const std::uint8_t*>(kLimitsDigestLabel), sizeof(kLimitsDigestLabel) - 1);
  std::uint8_t b[8];
  put_u16(b, static_cast<std::uint16_t>(dof));
  h.update(b, 2);
  for (std::size_t i = 0; i < dof; ++i) {
    for (const double* v : {position_min, position_max, velocity, acceleration, jerk}) {
      if (!std::isfinite(v[i])) return 0;  // no limits stated: refused by both ends
      put_f64(b, v[i] + 0.0);  // the exact bits (one ulp off changes the digest); + 0.0 makes -0.0 the same as 0.0
      h.update(b, 8);
    }
  }
  if (geometry != 0) {
    put_u64(b, geometry);
    h.update(b, 8);
  }
  std::uint8_t out[kSha256DigestBytes];
  h.finish(out);
  const std::uint64_t digest = get_u64(out);
  return digest != 0 ? digest : 1;  // 0 means "no limits stated"
}

SequenceTracker::Verdict SequenceTracker::check(std::uint32_t session_id, std::uint64_t sequence) {
  if (!started_ || session_id != session_) {
    started_ = true;
    session_ = session_id;
    last_ = sequence;
    window_ = 1;
    return Verdict::kNewSession;
  }
  if (sequence > last_) {
    const std::uint64_t shift = sequence - last_;
    gaps_ += shift - 1;
    window_ = shift >= 64 ? 1 : ((window_ << shift) | 1u);
    last_ = sequence;
    return Verdict::kAccept;
  }
  const std::uint64_t back = last_ - sequence;
  if (back < 64 && ((window_ >> back) & 1u)) return Verdict::kDuplicate;
  return Verdict::kStale;
}

}  // namespace robot_rt::control::protocol
