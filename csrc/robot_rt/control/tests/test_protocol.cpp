// Protocol codec (protocol.hpp): encode/decode round trips for every message type, with and without the
// HMAC tag; corrupted, truncated, extended and forged datagrams are rejected; SequenceTracker verdicts.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "crc32.hpp"
#include "protocol.hpp"
#include "test_util.hpp"

using namespace robot_rt::control::protocol;
using robot_rt::control::crc32;
using robot_rt::control::HmacSha256Key;
using robot_rt::control::testing::Random;

namespace {

Packet random_packet(Random& rng, MessageType type) {
  Packet p;
  p.header.type = type;
  p.header.session_id = rng.bits();
  p.header.sequence = (std::uint64_t(rng.bits()) << 32) | rng.bits();
  p.header.stamp_ns = (std::uint64_t(rng.bits()) << 32) | rng.bits();
  switch (type) {
    case MessageType::kHello:
      p.hello.role = static_cast<std::uint16_t>(rng.integer(1, 4));
      p.hello.dof = static_cast<std::uint16_t>(rng.integer(0, kMaxJoints));
      p.hello.period_us = rng.bits();
      for (auto& b : p.hello.nonce) b = static_cast<std::uint8_t>(rng.bits());
      p.hello.limits_digest = (std::uint64_t(rng.bits()) << 32) | rng.bits();
      break;
    case MessageType::kHelloAck:
      p.hello_ack.role = static_cast<std::uint16_t>(rng.integer(1, 4));
      p.hello_ack.dof = static_cast<std::uint16_t>(rng.integer(0, kMaxJoints));
      p.hello_ack.period_us = rng.bits();
      p.hello_ack.client_session_id = rng.bits();
      for (auto& b : p.hello_ack.client_nonce) b = static_cast<std::uint8_t>(rng.bits());
      for (auto& b : p.hello_ack.server_nonce) b = static_cast<std::uint8_t>(rng.bits());
      p.hello_ack.echo_hello_stamp_ns = (std::uint64_t(rng.bits()) << 32) | rng.bits();
      p.hello_ack.hello_receive_ns = rng.bits();
      p.hello_ack.limits_digest = (std::uint64_t(rng.bits()) << 32) | rng.bits();
      break;
    case MessageType::kHeartbeat:
      p.heartbeat.echo_sequence = rng.bits();
      p.heartbeat.echo_stamp_ns = rng.bits();
      p.heartbeat.echo_receive_ns = rng.bits();
      break;
    case MessageType::kGoodbye:
      p.goodbye.reason = static_cast<std::uint32_t>(rng.integer(0, kGoodbyeMaxReason));
      break;
    case MessageType::kJointState:
      p.state.dof = static_cast<std::uint16_t>(rng.integer(1, kMaxJoints));
      p.state.status = static_cast<std::uint16_t>(rng.bits() & kKnownStatus);
      p.state.robot_stops = static_cast<std::uint32_t>(rng.bits());
      p.state.echo_command_sequence = rng.bits();
      p.state.echo_command_stamp_ns = rng.bits();
      p.state.echo_command_receive_ns = rng.bits();
      for (int i = 0; i < p.state.dof; ++i) {
        p.state.position[i] = rng.uniform(-4, 4);
        p.state.velocity[i] = rng.uniform(-10, 10);
      }
      break;
    case MessageType::kJointCommand:
      p.command.dof = static_cast<std::uint16_t>(rng.integer(1, kMaxJoints));
      p.command.mode = rng.coin() ? kModePosition : kModePositionVelocity;
      p.command.robot_stops_acknowledged = static_cast<std::uint32_t>(rng.bits());
      for (int i = 0; i < p.command.dof; ++i) {
        p.command.position[i] = rng.uniform(-4, 4);
        p.command.velocity[i] = p.command.mode == kModePosition ? 0.0 : rng.uniform(-10, 10);
      }
      break;
    case MessageType::kBallObservations:
      p.balls.count = static_cast<std::uint16_t>(rng.integer(0, kMaxBalls));
      p.balls.camera_id = static_cast<std::uint16_t>(rng.integer(0, 7));
      for (int i = 0; i < p.balls.count; ++i) {
        BallObservation& o = p.balls.obs[i];
        o.capture_age_ns = rng.bits();
        o.frame_id = rng.bits();
        o.confidence = static_cast<float>(rng.uniform(0, 1));
        for (double& x : o.position_m) x = rng.uniform(-3, 3);
      }
      break;
  }
  return p;
}

void check_same(const Packet& a, const Packet& b) {
  REQUIRE(a.header.type == b.header.type);
  CHECK(a.header.session_id == b.header.session_id);
  CHECK(a.header.sequence == b.header.sequence);
  CHECK(a.header.stamp_ns == b.header.stamp_ns);
  switch (a.header.type) {
    case MessageType::kHello:
      CHECK(a.hello.role == b.hello.role);
      CHECK(a.hello.dof == b.hello.dof);
      CHECK(a.hello.period_us == b.hello.period_us);
      CHECK(std::memcmp(a.hello.nonce, b.hello.nonce, kNonceBytes) == 0);
      CHECK(a.hello.limits_digest == b.hello.limits_digest);
      break;
    case MessageType::kHelloAck:
      CHECK(a.hello_ack.role == b.hello_ack.role);
      CHECK(a.hello_ack.dof == b.hello_ack.dof);
      CHECK(a.hello_ack.period_us == b.hello_ack.period_us);
      CHECK(a.hello_ack.client_session_id == b.hello_ack.client_session_id);
      CHECK(std::memcmp(a.hello_ack.client_nonce, b.hello_ack.client_nonce, kNonceBytes) == 0);
      CHECK(std::memcmp(a.hello_ack.server_nonce, b.hello_ack.server_nonce, kNonceBytes) == 0);
      CHECK(a.hello_ack.echo_hello_stamp_ns == b.hello_ack.echo_hello_stamp_ns);
      CHECK(a.hello_ack.hello_receive_ns == b.hello_ack.hello_receive_ns);
      CHECK(a.hello_ack.limits_digest == b.hello_ack.limits_digest);
      break;
    case MessageType::kHeartbeat:
      CHECK(a.heartbeat.echo_sequence == b.heartbeat.echo_sequence);
      CHECK(a.heartbeat.echo_stamp_ns == b.heartbeat.echo_stamp_ns);
      CHECK(a.heartbeat.echo_receive_ns == b.heartbeat.echo_receive_ns);
      break;
    case MessageType::kGoodbye:
      CHECK(a.goodbye.reason == b.goodbye.reason);
      break;
    case MessageType::kJointState:
      REQUIRE(a.state.dof == b.state.dof);
      CHECK(a.state.status == b.state.status);
      CHECK(a.state.robot_stops == b.state.robot_stops);
      CHECK(a.state.echo_command_sequence == b.state.echo_command_sequence);
      CHECK(a.state.echo_command_stamp_ns == b.state.echo_command_stamp_ns);
      CHECK(a.state.echo_command_receive_ns == b.state.echo_command_receive_ns);
      for (int i = 0; i < a.state.dof; ++i) {
        CHECK(a.state.position[i] == b.state.position[i]);
        CHECK(a.state.velocity[i] == b.state.velocity[i]);
      }
      break;
    case MessageType::kJointCommand:
      REQUIRE(a.command.dof == b.command.dof);
      CHECK(a.command.mode == b.command.mode);
      CHECK(a.command.robot_stops_acknowledged == b.command.robot_stops_acknowledged);
      for (int i = 0; i < a.command.dof; ++i) {
        CHECK(a.command.position[i] == b.command.position[i]);
        CHECK(a.command.velocity[i] == b.command.velocity[i]);
      }
      break;
    case MessageType::kBallObservations:
      REQUIRE(a.balls.count == b.balls.count);
      CHECK(a.balls.camera_id == b.balls.camera_id);
      for (int i = 0; i < a.balls.count; ++i) {
        CHECK(a.balls.obs[i].capture_age_ns == b.balls.obs[i].capture_age_ns);
        CHECK(a.balls.obs[i].frame_id == b.balls.obs[i].frame_id);
        CHECK(a.balls.obs[i].confidence == b.balls.obs[i].confidence);
        for (int k = 0; k < 3; ++k) CHECK(a.balls.obs[i].position_m[k] == b.balls.obs[i].position_m[k]);
      }
      break;
  }
}

constexpr MessageType kTypes[] = {MessageType::kHello,          MessageType::kHeartbeat,
                                  MessageType::kJointState,     MessageType::kJointCommand,
                                  MessageType::kBallObservations, MessageType::kHelloAck,
                                  MessageType::kGoodbye};

HmacSha256Key make_key(const char* text) {
  return HmacSha256Key(reinterpret_cast<const std::uint8_t*>(text), std::strlen(text));
}

// Recomputes the CRC of a datagram without tag after an edit (an attacker's or a buggy sender's packet).
void fix_crc(std::vector<std::uint8_t>& d) {
  const std::size_t body = d.size() - kChecksumBytes;
  const std::uint32_t c = crc32(d.data(), body);
  for (int i = 0; i < 4; ++i) d[body + i] = std::uint8_t(c >> (8 * i));
}

}  // namespace

TEST_CASE("encode/decode round trip for every message type, without and with a key") {
  Random rng(40);
  const HmacSha256Key key = make_key("long-term key of the test");
  for (int trial = 0; trial < 300; ++trial) {
    for (const MessageType type : kTypes) {
      const Packet p = random_packet(rng, type);
      for (const HmacSha256Key* k : {static_cast<const HmacSha256Key*>(nullptr), &key}) {
        std::uint8_t buf[kMaxPacketBytes];
        Status st = Status::kBadType;
        const std::size_t n = encode(p, k, buf, sizeof(buf), &st);
        REQUIRE(st == Status::kOk);
        REQUIRE(n > 0);
        CHECK(n == kHeaderBytes + payload_bytes(type, type == MessageType::kJointState     ? p.state.dof
                                                      : type == MessageType::kJointCommand ? p.command.dof
                                                                                           : p.balls.count) +
                       kChecksumBytes + (k ? kTagBytes : 0));
        Packet out;
        REQUIRE(decode(buf, n, k, out) == Status::kOk);
        check_same(p, out);
        CHECK(out.header.flags == (k ? kFlagTag : 0));
      }
    }
  }
}

TEST_CASE("every single-byte corruption, truncation and extension is rejected") {
  Random rng(41);
  const HmacSha256Key key = make_key("k");
  for (const MessageType type : kTypes) {
    for (const HmacSha256Key* k : {static_cast<const HmacSha256Key*>(nullptr), &key}) {
      const Packet p = random_packet(rng, type);
      std::uint8_t buf[kMaxPacketBytes + 8];
      const std::size_t n = encode(p, k, buf, kMaxPacketBytes);
      REQUIRE(n > 0);
      Packet out;
      for (std::size_t at = 0; at < n; ++at) {
        for (const std::uint8_t flip : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xFF}}) {
          buf[at] ^= flip;
          CHECK_MESSAGE(decode(buf, n, k, out) != Status::kOk, "byte ", at, " flip ", int(flip));
          buf[at] ^= flip;
        }
      }
      for (std::size_t cut = 0; cut < n; ++cut) CHECK(decode(buf, cut, k, out) != Status::kOk);
      buf[n] = 0;
      CHECK(decode(buf, n + 1, k, out) == Status::kBadLength);
      REQUIRE(decode(buf, n, k, out) == Status::kOk);
    }
  }
  Packet out;
  CHECK(decode(nullptr, 64, nullptr, out) == Status::kTooShort);
  std::uint8_t big[kMaxPacketBytes + 1] = {};
  CHECK(decode(big, sizeof(big), nullptr, out) == Status::kTooLong);
}

TEST_CASE("forged and mismatched tags are rejected") {
  Random rng(42);
  const HmacSha256Key key = make_key("the real key"), other = make_key("an attacker's key");
  const Packet p = random_packet(rng, MessageType::kJointCommand);
  std::uint8_t buf[kMaxPacketBytes];
  const std::size_t n = encode(p, &key, buf, sizeof(buf));
  REQUIRE(n > 0);
  Packet out;
  CHECK(decode(buf, n, &other, out) == Status::kBadTag);
  CHECK(decode(buf, n, nullptr, out) == Status::kUnexpectedTag);
  // Edit a command value and recompute the CRC (no key): the tag no longer matches.
  std::vector<std::uint8_t> forged(buf, buf + n);
  forged[kHeaderBytes + 8] ^= 0x10;
  const std::size_t body = n - kTagBytes - kChecksumBytes;
  const std::uint32_t c = crc32(forged.data(), body);
  for (int i = 0; i < 4; ++i) forged[body + i] = std::uint8_t(c >> (8 * i));
  CHECK(decode(forged.data(), forged.size(), &key, out) == Status::kBadTag);
  // Untagged packet to a receiver that requires a key.
  const std::size_t m = encode(p, nullptr, buf, sizeof(buf));
  CHECK(decode(buf, m, &key, out) == Status::kMissingTag);
  // Stripping the tag and its flag (with a fixed CRC) does not help either.
  std::vector<std::uint8_t> stripped(forged.begin(), forged.begin() + static_cast<long>(body + kChecksumBytes));
  stripped[6] = 0;
  fix_crc(stripped);
  CHECK(decode(stripped.data(), stripped.size(), &key, out) == Status::kMissingTag);
}

TEST_CASE("structurally valid datagrams with bad values are rejected even with a correct CRC") {
  Random rng(43);
  Packet p = random_packet(rng, MessageType::kJointState);
  p.state.dof = 3;
  std::uint8_t buf[kMaxPacketBytes];
  const std::size_t n = encode(p, nullptr, buf, sizeof(buf));
  REQUIRE(n > 0);
  Packet out;
  auto edited = [&](std::size_t at, const void* bytes, std::size_t size) {
    std::vector<std::uint8_t> d(buf, buf + n);
    std::memcpy(d.data() + at, bytes, size);
    fix_crc(d);
    return decode(d.data(), d.size(), nullptr, out);
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK(edited(kHeaderBytes + kJointStateHeadBytes, &nan, 8) == Status::kBadValue);          // position[0]
  CHECK(edited(kHeaderBytes + kJointStateHeadBytes + 8 * 3, &inf, 8) == Status::kBadValue);  // velocity[0]
  const std::uint16_t unknown_status = 0x0100, big_dof = 17, zero_dof = 0;
  CHECK(edited(kHeaderBytes + 2, &unknown_status, 2) == Status::kBadValue);
  CHECK(edited(kHeaderBytes, &big_dof, 2) == Status::kBadValue);
  CHECK(edited(kHeaderBytes, &zero_dof, 2) == Status::kBadValue);
  const std::uint16_t other_dof = 2;  // size no longer matches the dof
  CHECK(edited(kHeaderBytes, &other_dof, 2) == Status::kBadLength);
  const std::uint32_t stops = 7;  // the robot's stop count (was a reserved word): a value, decoded as such
  CHECK(edited(kHeaderBytes + 4, &stops, 4) == Status::kOk);
  CHECK(out.state.robot_stops == stops);
  const std::uint8_t bad_type = 9, bad_version = 1;  // a version-1 peer
  CHECK(edited(5, &bad_type, 1) == Status::kBadType);
  CHECK(edited(4, &bad_version, 1) == Status::kBadVersion);
  const std::uint16_t unknown_flag = 0x0004;
  CHECK(edited(6, &unknown_flag, 2) == Status::kBadValue);
  CHECK(edited(0, "XRTP", 4) == Status::kBadMagic);
}

TEST_CASE("encode refuses what decode would reject") {
  Random rng(44);
  std::uint8_t buf[kMaxPacketBytes];
  Status st = Status::kOk;
  Packet p = random_packet(rng, MessageType::kJointCommand);
  p.command.position[0] = std::numeric_limits<double>::quiet_NaN();
  CHECK(encode(p, nullptr, buf, sizeof(buf), &st) == 0);
  CHECK(st == Status::kBadValue);
  p = random_packet(rng, MessageType::kJointCommand);
  p.command.mode = kModePosition;
  p.command.velocity[0] = 1.0;  // position mode carries no velocity
  CHECK(encode(p, nullptr, buf, sizeof(buf), &st) == 0);
  CHECK(st == Status::kBadValue);
  p = random_packet(rng, MessageType::kBallObservations);
  p.balls.count = 1;
  p.balls.obs[0].confidence = 1.5f;
  CHECK(encode(p, nullptr, buf, sizeof(buf), &st) == 0);
  p = random_packet(rng, MessageType::kHello);
  p.hello.role = 9;
  CHECK(encode(p, nullptr, buf, sizeof(buf), &st) == 0);
  p = random_packet(rng, MessageType::kJointState);
  CHECK(encode(p, nullptr, buf, 10, &st) == 0);
  CHECK(st == Status::kBufferTooSmall);
}

TEST_CASE("SequenceTracker: new session, accept, duplicate, stale, gaps") {
  using V = SequenceTracker::Verdict;
  SequenceTracker t;
  CHECK_FALSE(t.started());
  CHECK(t.check(7, 100) == V::kNewSession);
  CHECK(t.started());
  CHECK(t.check(7, 101) == V::kAccept);
  CHECK(t.check(7, 101) == V::kDuplicate);
  CHECK(t.check(7, 100) == V::kDuplicate);
  CHECK(t.check(7, 105) == V::kAccept);  // 102..104 skipped
  CHECK(t.gaps() == 3);
  CHECK(t.check(7, 103) == V::kStale);  // late: dropped, never re-ordered into the stream
  CHECK(t.check(7, 105) == V::kDuplicate);
  CHECK(t.last_sequence() == 105);
  CHECK(t.check(7, 105 + 1000) == V::kAccept);
  CHECK(t.check(7, 105) == V::kStale);  // beyond the 64-wide window
  CHECK(t.check(7, 1105 - 63) == V::kStale);
  // another session id: the sender restarted, history reset
  CHECK(t.check(8, 1) == V::kNewSession);
  CHECK(t.session_id() == 8);
  CHECK(t.check(8, 1) == V::kDuplicate);
  CHECK(t.check(8, 2) == V::kAccept);
  t.reset();
  CHECK(t.check(8, 1) == V::kNewSession);
}

TEST_CASE("SequenceTracker never accepts a sequence twice in a session (random streams)") {
  Random rng(45);
  using V = SequenceTracker::Verdict;
  for (int trial = 0; trial < 50; ++trial) {
    SequenceTracker t;
    std::vector<bool> accepted(5000, false);
    std::uint64_t newest = 0;
    bool started = false;
    for (int k = 0; k < 3000; ++k) {
      const std::uint64_t seq = static_cast<std::uint64_t>(rng.integer(1, 4999));
      const V v = t.check(1, seq);
      if (!started) {
        CHECK(v == V::kNewSession);
        started = true;
        newest = seq;
        accepted[seq] = true;
        continue;
      }
      if (accepted[seq]) {
        CHECK((v == V::kDuplicate || v == V::kStale));
      } else if (seq > newest) {
        CHECK(v == V::kAccept);
      } else {
        CHECK(v == V::kStale);
      }
      if (v == V::kAccept) {
        accepted[seq] = true;
        newest = seq;
      }
      CHECK(t.last_sequence() == newest);
    }
  }
}

TEST_CASE("version 3: hello and hello_ack carry the joint-limits digest (little-endian u64 at their ends)") {
  CHECK(kVersion == 3);
  CHECK(payload_bytes(MessageType::kHello, 0) == 32);
  CHECK(payload_bytes(MessageType::kHelloAck, 0) == 72);
  Packet p;
  p.header.type = MessageType::kHello;
  p.hello.role = 1;
  p.hello.dof = 8;
  p.hello.limits_digest = 0x0102030405060708ULL;
  std::uint8_t buf[kMaxPacketBytes];
  REQUIRE(encode(p, nullptr, buf, sizeof(buf)) == kHeaderBytes + 32 + kChecksumBytes);
  CHECK(buf[4] == 3);
  for (int k = 0; k < 8; ++k) CHECK(buf[kHeaderBytes + 24 + k] == 8 - k);
  Packet out;
  REQUIRE(decode(buf, kHeaderBytes + 32 + kChecksumBytes, nullptr, out) == Status::kOk);
  CHECK(out.hello.limits_digest == 0x0102030405060708ULL);
  p.header.type = MessageType::kHelloAck;
  p.hello_ack.role = 2;
  p.hello_ack.dof = 8;
  p.hello_ack.limits_digest = 0xA1A2A3A4A5A6A7A8ULL;
  REQUIRE(encode(p, nullptr, buf, sizeof(buf)) == kHeaderBytes + 72 + kChecksumBytes);
  CHECK(buf[kHeaderBytes + 64] == 0xA8);
  CHECK(buf[kHeaderBytes + 71] == 0xA1);
  REQUIRE(decode(buf, kHeaderBytes + 72 + kChecksumBytes, nullptr, out) == Status::kOk);
  CHECK(out.hello_ack.limits_digest == 0xA1A2A3A4A5A6A7A8ULL);
  std::uint8_t nonce[kNonceBytes];
  CHECK(peek_server_nonce(buf, kHeaderBytes + 72 + kChecksumBytes, nonce));
}
