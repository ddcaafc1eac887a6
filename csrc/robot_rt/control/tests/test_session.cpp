// Session layer (session.hpp, hkdf.hpp): HKDF-SHA256 against RFC 5869, the key schedule, and the client and
// server handshake state machines driven datagram by datagram (no sockets): establishment with and without a
// key, key confirmation in both directions, and that replayed, forged, bit-flipped or truncated handshake
// messages and other sessions' traffic never establish or disturb a session, and that a controller and a robot
// that disagree on the joint limits (the handshake's limits digest) never open one.
#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "hkdf.hpp"
#include "protocol.hpp"
#include "session.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;
using namespace robot_rt::control::session;
using protocol::MessageType;
using protocol::Packet;
using protocol::Role;
using protocol::Status;
using Bytes = std::vector<std::uint8_t>;

namespace {

Bytes from_hex(const char* hex) {
  Bytes out;
  for (std::size_t i = 0; hex[i] && hex[i + 1]; i += 2) out.push_back(std::uint8_t(std::stoi(std::string(hex + i, 2), nullptr, 16)));
  return out;
}

Bytes range(int lo, int hi) {
  Bytes out;
  for (int i = lo; i < hi; ++i) out.push_back(std::uint8_t(i));
  return out;
}

sockaddr_in address(const char* ip, std::uint16_t port) {
  sockaddr_in a;
  REQUIRE(make_address(ip, port, a));
  return a;
}

// One endpoint's send side: session id, sequence counter and clock, like stamp_and_send without the socket.
struct Sender {
  std::uint32_t session_id = 0;
  std::uint64_t sequence = 0;
  Bytes send(Packet p, const HmacSha256Key& key, std::int64_t now_ns) {
    p.header.session_id = session_id;
    p.header.sequence = ++sequence;
    p.header.stamp_ns = static_cast<std::uint64_t>(now_ns);
    std::uint8_t buf[protocol::kMaxPacketBytes];
    const std::size_t n = protocol::encode(p, key.empty() ? nullptr : &key, buf, sizeof(buf));
    REQUIRE(n > 0);
    return Bytes(buf, buf + n);
  }
};

Packet command(double q0) {
  Packet p;
  p.header.type = MessageType::kJointCommand;
  p.command.dof = 2;
  p.command.mode = protocol::kModePosition;
  p.command.position[0] = q0;
  return p;
}

Packet heartbeat() {
  Packet p;
  p.header.type = MessageType::kHeartbeat;
  return p;
}

Packet state(double q0) {
  Packet p;
  p.header.type = MessageType::kJointState;
  p.state.dof = 2;
  p.state.position[0] = q0;
  return p;
}

constexpr std::int64_t kTimeout = 500'000'000;

// The limits digest of a 2-joint robot (both ends of a Link agree on it unless a test says otherwise).
std::uint64_t digest_of(double velocity_0) {
  const double lo[2] = {-1.0, -2.0}, hi[2] = {1.0, 2.0}, v[2] = {velocity_0, 3.0}, a[2] = {10.0, 20.0},
               j[2] = {100.0, 200.0};
  return protocol::limits_digest(2, lo, hi, v, a, j);
}
const std::uint64_t kDigest = digest_of(2.0);
const std::string kKey = "the long-term key of the session tests";

// A controller and a robot server talking through the state machines.
struct Link {
  explicit Link(const std::string& key, std::uint16_t port = 40000, std::uint64_t client_digest = kDigest,
                std::uint64_t server_digest = kDigest)
      : client(key, Role::kController, Role::kRobotServer, 2, client_digest),
        server(key, Role::kRobotServer, Role::kController, 2, 1000, kTimeout, server_digest),
        client_addr(address("127.0.0.1", port)) {
    server.start(0x5e55);
    robot.session_id = 0x5e55;
  }
  ClientSession client;
  ServerSession server;
  Sender controller, robot;
  sockaddr_in client_addr;
  Packet in, reply;
  Status status = Status::kOk;
  std::int64_t now = 1'000'000'000;

  Bytes hello() {
    controller.session_id = client.session_id();
    Packet p;
    client.fill_hello(p, 0);
    return controller.send(p, client.hello_key(), now);
  }
  ServerSession::Verdict to_server(const Bytes& d, const sockaddr_in* from = nullptr) {
    now += 1000;
    return server.receive(from ? *from : client_addr, d.data(), d.size(), now, in, reply, status);
  }
  ClientSession::Verdict to_client(const Bytes& d) {
    now += 1000;
    return client.receive(d.data(), d.size(), in, status);
  }
  Bytes ack() { return robot.send(reply, server.reply_key(), now); }
  Bytes client_send(const Packet& p) { return controller.send(p, client.tx_key(), now); }
  Bytes server_send(const Packet& p) { return robot.send(p, server.tx_key(), now); }

  // The full handshake; returns the datagrams it exchanged (hello, ack, confirming heartbeat).
  std::vector<Bytes> connect() {
    client.begin(now);
    std::vector<Bytes> wire{hello()};
    REQUIRE(to_server(wire[0]) == ServerSession::Verdict::kAck);
    wire.push_back(ack());
    REQUIRE(to_client(wire[1]) == ClientSession::Verdict::kEstablished);
    wire.push_back(client_send(heartbeat()));
    REQUIRE(to_server(wire[2]) == ServerSession::Verdict::kAcceptedNewSession);
    return wire;
  }
};

}  // namespace

TEST_CASE("HKDF-SHA256: RFC 5869 test cases 1-3") {
  struct Case {
    Bytes ikm, salt, info;
    const char* okm;
  };
  const Case cases[] = {
      {Bytes(22, 0x0b), range(0x00, 0x0d), range(0xf0, 0xfa),
       "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
      {range(0x00, 0x50), range(0x60, 0xb0), range(0xb0, 0x100),
       "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f"
       "09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"},
      {Bytes(22, 0x0b), Bytes(), Bytes(), "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
  };
  for (const Case& c : cases) {
    const Bytes expected = from_hex(c.okm);
    Bytes out(expected.size());
    REQUIRE(hkdf(c.salt.data(), c.salt.size(), c.ikm.data(), c.ikm.size(), c.info.data(), c.info.size(), out.data(),
                 out.size()));
    CHECK(out == expected);
  }
  std::uint8_t prk[32], big[kHkdfMaxOutputBytes + 1];
  hkdf_extract(nullptr, 0, prk, 32, prk);
  CHECK_FALSE(hkdf_expand(prk, nullptr, 0, big, sizeof(big)));  // more than 255 blocks: refused
  CHECK(hkdf_expand(prk, nullptr, 0, big, kHkdfMaxOutputBytes));
}

TEST_CASE("key schedule: info layout, one key per direction, every input matters") {
  const Bytes cn = range(0, 16), sn = range(100, 116);
  KeyInputs in;
  in.client_nonce = cn.data();
  in.server_nonce = sn.data();
  in.client_role = 1;
  in.server_role = 2;
  in.client_session_id = 0x01020304;
  in.server_session_id = 0xA0B0C0D0;
  std::uint8_t info[kKeyInfoBytes];
  key_info(in, info);
  CHECK(std::memcmp(info, "RRTP v3 session keys", 20) == 0);
  const Bytes tail(info + 20, info + kKeyInfoBytes);
  CHECK(tail == Bytes{3, 1, 0, 2, 0, 4, 3, 2, 1, 0xD0, 0xC0, 0xB0, 0xA0});
  const std::string key = "long-term key";
  std::uint8_t okm[64], again[64];
  derive_session_keys(reinterpret_cast<const std::uint8_t*>(key.data()), key.size(), in, okm);
  // = HKDF(salt = nonce_c || nonce_s, ikm = key, info)
  Bytes salt = cn;
  salt.insert(salt.end(), sn.begin(), sn.end());
  std::uint8_t expected[64];
  hkdf(salt.data(), salt.size(), reinterpret_cast<const std::uint8_t*>(key.data()), key.size(), info, sizeof(info), expected,
       64);
  CHECK(std::memcmp(okm, expected, 64) == 0);
  CHECK(std::memcmp(okm, okm + 32, 32) != 0);
  KeyInputs changed = in;
  changed.server_session_id ^= 1;
  derive_session_keys(reinterpret_cast<const std::uint8_t*>(key.data()), key.size(), changed, again);
  CHECK(std::memcmp(okm, again, 32) != 0);
  changed = in;
  changed.client_nonce = sn.data();
  changed.server_nonce = cn.data();
  derive_session_keys(reinterpret_cast<const std::uint8_t*>(key.data()), key.size(), changed, again);
  CHECK(std::memcmp(okm, again, 32) != 0);
}

TEST_CASE("getrandom nonces differ") {
  std::uint8_t a[16], b[16];
  random_bytes(a, 16);
  random_bytes(b, 16);
  CHECK(std::memcmp(a, b, 16) != 0);
  CHECK(session::random_session_id() != 0);
}

TEST_CASE("handshake establishes a session in both modes, with key confirmation both ways") {
  for (const std::string& key : {kKey, std::string()}) {
    Link link(key);
    CHECK(link.client.state() == ClientSession::State::kIdle);
    link.client.begin(link.now);
    const Bytes hello = link.hello();
    REQUIRE(link.to_server(hello) == ServerSession::Verdict::kAck);
    CHECK_FALSE(link.server.has_session());  // nothing is live before the client proves the key
    CHECK(link.reply.hello_ack.client_session_id == link.client.session_id());
    CHECK(link.reply.hello_ack.echo_hello_stamp_ns == link.now - 1000);  // t1 of the clock-offset sample
    const Bytes ack = link.ack();
    // The ack is tagged with the session key, not the long-term key.
    Packet p;
    if (!key.empty()) {
      const HmacSha256Key long_term(reinterpret_cast<const std::uint8_t*>(key.data()), key.size());
      CHECK(protocol::decode(ack.data(), ack.size(), &long_term, p) == Status::kBadTag);
    }
    REQUIRE(link.to_client(ack) == ClientSession::Verdict::kEstablished);
    CHECK(link.client.server_session_id() == 0x5e55);
    // A command before the confirmation is the confirmation: the session goes live on it.
    REQUIRE(link.to_server(link.client_send(command(0.25))) == ServerSession::Verdict::kAcceptedNewSession);
    CHECK(link.in.command.position[0] == 0.25);
    CHECK(link.server.live(link.now));
    CHECK(link.to_server(link.client_send(command(0.5))) == ServerSession::Verdict::kAccepted);
    CHECK(link.to_client(link.server_send(state(0.5))) == ClientSession::Verdict::kAccepted);
    CHECK(link.in.state.position[0] == 0.5);
    CHECK(link.server.sessions() == 1);
    CHECK(link.server.handshakes() == 1);
  }
}

TEST_CASE("a repeated hello is answered with the same server nonce; a fresh one gets a fresh nonce") {
  Link link(kKey);
  link.client.begin(link.now);
  const Bytes first = link.hello();
  REQUIRE(link.to_server(first) == ServerSession::Verdict::kAck);
  const Packet ack1 = link.reply;
  REQUIRE(link.to_server(link.hello()) == ServerSession::Verdict::kAck);  // the client's repetition
  CHECK(std::memcmp(ack1.hello_ack.server_nonce, link.reply.hello_ack.server_nonce, 16) == 0);
  link.client.begin(link.now);  // a new handshake attempt
  REQUIRE(link.to_server(link.hello()) == ServerSession::Verdict::kAck);
  CHECK(std::memcmp(ack1.hello_ack.server_nonce, link.reply.hello_ack.server_nonce, 16) != 0);
}

TEST_CASE("every corrupted or truncated hello and hello_ack is rejected, a forged one too") {
  Link link(kKey);
  link.client.begin(link.now);
  const Bytes hello = link.hello();
  for (std::size_t at = 0; at < hello.size(); ++at) {
    Bytes bad = hello;
    bad[at] ^= 0x04;
    CHECK(link.to_server(bad) != ServerSession::Verdict::kAck);
  }
  for (std::size_t cut = 0; cut < hello.size(); ++cut)
    CHECK(link.to_server(Bytes(hello.begin(), hello.begin() + long(cut))) == ServerSession::Verdict::kRejected);
  // A hello under another key (an attacker's guess) is rejected before any state or reply.
  ClientSession stranger("not the key, an attacker's guess", Role::kController, Role::kRobotServer, 2);
  stranger.begin(link.now);
  Packet p;
  stranger.fill_hello(p, 0);
  Sender s{stranger.session_id()};
  CHECK(link.to_server(s.send(p, stranger.hello_key(), link.now)) == ServerSession::Verdict::kRejected);
  CHECK(link.status == Status::kBadTag);
  CHECK(link.server.handshakes() == 0);

  REQUIRE(link.to_server(hello) == ServerSession::Verdict::kAck);
  const Bytes ack = link.ack();
  for (std::size_t at = 0; at < ack.size(); ++at) {
    Bytes bad = ack;
    bad[at] ^= 0x20;
    const auto v = link.to_client(bad);
    CHECK((v == ClientSession::Verdict::kRejected || v == ClientSession::Verdict::kStaleAck));
  }
  for (std::size_t cut = 0; cut < ack.size(); ++cut)
    CHECK(link.to_client(Bytes(ack.begin(), ack.begin() + long(cut))) == ClientSession::Verdict::kRejected);
  CHECK(link.client.state() == ClientSession::State::kHandshaking);
  // An ack forged with the long-term key (no session key) fails too.
  const HmacSha256Key long_term(reinterpret_cast<const std::uint8_t*>(kKey.data()), kKey.size());
  const Bytes forged = link.robot.send(link.reply, long_term, link.now);
  CHECK(link.to_client(forged) == ClientSession::Verdict::kRejected);
  CHECK(link.status == Status::kBadTag);
  REQUIRE(link.to_client(ack) == ClientSession::Verdict::kEstablished);  // the genuine one still works
}

TEST_CASE("replay: an old session's datagrams never establish or disturb a session") {
  Link link(kKey);
  std::vector<Bytes> old = link.connect();
  const Bytes old_command = link.client_send(command(0.4));
  REQUIRE(link.to_server(old_command) == ServerSession::Verdict::kAccepted);
  const Bytes old_state = link.server_send(state(0.4));
  REQUIRE(link.to_client(old_state) == ClientSession::Verdict::kAccepted);
  // Within the session: duplicates are dropped (the replay window).
  CHECK(link.to_server(old_command) == ServerSession::Verdict::kDuplicate);
  CHECK(link.to_client(old_state) == ClientSession::Verdict::kDuplicate);
  // While the session is live, a replayed hello is refused, from any address, and changes nothing.
  const sockaddr_in spoofed = address("127.0.0.2", 40000);
  CHECK(link.to_server(old[0]) == ServerSession::Verdict::kHelloRefused);
  CHECK(link.to_server(old[0], &spoofed) == ServerSession::Verdict::kHelloRefused);
  CHECK(link.to_server(link.client_send(command(0.1))) == ServerSession::Verdict::kAccepted);

  // The controller leaves (goodbye); a new session starts from the same address.
  Packet bye;
  bye.header.type = MessageType::kGoodbye;
  REQUIRE(link.to_server(link.client_send(bye)) == ServerSession::Verdict::kGoodbye);
  CHECK_FALSE(link.server.has_session());
  // Replaying the old session into the idle server: the hello gets an answer, nothing more.
  REQUIRE(link.to_server(old[0]) == ServerSession::Verdict::kAck);
  for (const Bytes& d : {old[2], old_command}) {
    const auto v = link.to_server(d);
    CHECK((v == ServerSession::Verdict::kRejected || v == ServerSession::Verdict::kUnexpectedSession));
    CHECK_FALSE(link.server.has_session());
  }
  CHECK(link.to_server(old_command, &spoofed) == ServerSession::Verdict::kUnexpectedSource);

  std::vector<Bytes> now = link.connect();  // the real controller again: a new session
  CHECK(link.server.sessions() == 2);
  CHECK(link.to_server(old_command) == ServerSession::Verdict::kUnexpectedSession);  // old session id
  CHECK(link.to_server(old[0]) == ServerSession::Verdict::kHelloRefused);
  CHECK(link.to_server(link.client_send(command(0.2))) == ServerSession::Verdict::kAccepted);
  // Old server traffic (same server session id, old keys) to the client: rejected by the tag.
  CHECK(link.to_client(old_state) == ClientSession::Verdict::kRejected);
  CHECK(link.status == Status::kBadTag);
  CHECK(link.to_client(old[1]) == ClientSession::Verdict::kStaleAck);  // an old ack while established
  CHECK(link.to_client(link.server_send(state(0.2))) == ClientSession::Verdict::kAccepted);
}

TEST_CASE("replay: a recorded ack cannot complete a new handshake; spliced sessions fail") {
  Link link(kKey);
  std::vector<Bytes> first = link.connect();
  link.client.begin(link.now);  // the client starts over (e.g. after a silent robot)
  CHECK(link.to_client(first[1]) == ClientSession::Verdict::kRejected);  // keyed to the old nonce
  CHECK(link.client.state() == ClientSession::State::kHandshaking);
  // A datagram of a session that is not established is dropped as such.
  CHECK(link.to_client(link.server_send(state(0.3))) == ClientSession::Verdict::kNoSession);
  // Splice: the attacker replays our new hello (answered) then an old confirmation (another session id).
  const Bytes hello = link.hello();
  Link other(kKey, 40001);
  other.server.start(0x5e55);
  REQUIRE(other.to_server(hello) == ServerSession::Verdict::kAck);
  CHECK(other.to_server(first[2]) != ServerSession::Verdict::kAcceptedNewSession);
  CHECK_FALSE(other.server.has_session());
}

TEST_CASE("a hello flood while live is refused at no cost and never evicts the live session") {
  Link link(kKey);
  link.connect();
  for (int i = 0; i < 1000; ++i) {
    ClientSession attacker(kKey, Role::kController, Role::kRobotServer, 2);  // even with valid hellos
    attacker.begin(link.now);
    Packet p;
    attacker.fill_hello(p, 0);
    Sender s{attacker.session_id()};
    const sockaddr_in from = address("127.0.0.3", static_cast<std::uint16_t>(1000 + i));
    REQUIRE(link.to_server(s.send(p, attacker.hello_key(), link.now), &from) == ServerSession::Verdict::kHelloRefused);
    if (i % 100 == 0) CHECK(link.to_server(link.client_send(command(0.1 * (i % 3)))) == ServerSession::Verdict::kAccepted);
  }
  CHECK(link.server.handshakes() == 1);
  CHECK(link.server.live(link.now));
}

TEST_CASE("pending handshakes are bounded: a flood recycles slots, never grows state") {
  Link link(kKey);
  link.client.begin(link.now);
  const Bytes hello = link.hello();
  REQUIRE(link.to_server(hello) == ServerSession::Verdict::kAck);
  const Bytes ack = link.ack();
  // A flood of other (valid) hellos while no session is live recycles the oldest slots ...
  for (int i = 0; i < ServerSession::kPendingSlots; ++i) {
    ClientSession other(kKey, Role::kController, Role::kRobotServer, 2, kDigest);
    other.begin(link.now);
    Packet p;
    other.fill_hello(p, 0);
    Sender s{other.session_id()};
    const sockaddr_in from = address("127.0.0.4", static_cast<std::uint16_t>(2000 + i));
    REQUIRE(link.to_server(s.send(p, other.hello_key(), link.now), &from) == ServerSession::Verdict::kAck);
  }
  CHECK(link.server.pending_evicted() == 1);
  // ... so our handshake was evicted: the confirmation is refused and the client starts over.
  REQUIRE(link.to_client(ack) == ClientSession::Verdict::kEstablished);
  // (its address has no session or handshake any more: an unknown source)
  CHECK(link.to_server(link.client_send(heartbeat())) == ServerSession::Verdict::kUnexpectedSource);
  CHECK_FALSE(link.server.has_session());
  link.connect();
  CHECK(link.server.live(link.now));
}

TEST_CASE("a live session is replaced only after its timeout or its goodbye") {
  Link link(kKey);
  link.connect();
  Link rival(kKey, 40002);  // another controller, same key
  rival.client.begin(link.now);
  rival.controller.session_id = rival.client.session_id();
  Packet p;
  rival.client.fill_hello(p, 0);
  const sockaddr_in rival_addr = address("127.0.0.1", 40002);
  const Bytes rival_hello = rival.controller.send(p, rival.client.hello_key(), link.now);
  CHECK(link.to_server(rival_hello, &rival_addr) == ServerSession::Verdict::kHelloRefused);
  link.now += kTimeout - 10'000;  // still live just before the timeout
  CHECK(link.to_server(rival_hello, &rival_addr) == ServerSession::Verdict::kHelloRefused);
  link.now += 20'000;  // silent for longer than the timeout: expired
  CHECK_FALSE(link.server.live(link.now));
  REQUIRE(link.to_server(rival_hello, &rival_addr) == ServerSession::Verdict::kAck);
  CHECK(link.server.sessions_expired() == 1);
  // The old controller's late datagrams no longer count (its session is gone: an unknown source now).
  CHECK(link.to_server(link.client_send(command(0.0))) == ServerSession::Verdict::kUnexpectedSource);
  CHECK_FALSE(link.server.has_session());
}

TEST_CASE("unauthenticated mode: same state machine, no tags; tagged datagrams are refused") {
  Link link("");
  std::vector<Bytes> wire = link.connect();
  CHECK_FALSE(link.client.authenticated());
  CHECK(link.to_server(link.client_send(command(0.3))) == ServerSession::Verdict::kAccepted);
  // A keyed client cannot talk to an unkeyed server (and vice versa): loud, not silently unauthenticated.
  Link keyed(kKey);
  keyed.client.begin(keyed.now);
  CHECK(link.to_server(keyed.hello()) == ServerSession::Verdict::kHelloRefused);  // live: refused first
  Link fresh("");
  keyed.client.begin(keyed.now);
  CHECK(fresh.to_server(keyed.hello()) == ServerSession::Verdict::kRejected);
  CHECK(fresh.status == Status::kUnexpectedTag);
}

TEST_CASE("limits digest: exact bits of every limit, dof, 0 reserved") {
  const double lo[2] = {-1.0, -2.0}, hi[2] = {1.0, 2.0}, v[2] = {2.0, 3.0}, a[2] = {10.0, 20.0}, j[2] = {100.0, 200.0};
  const std::uint64_t d = protocol::limits_digest(2, lo, hi, v, a, j);
  CHECK(d == kDigest);
  CHECK(d != 0);
  CHECK(protocol::limits_digest(1, lo, hi, v, a, j) != d);  // fewer joints
  CHECK(protocol::limits_digest(0, lo, hi, v, a, j) == 0);  // no limits: nothing stated
  CHECK(protocol::limits_digest(protocol::kMaxJoints + 1, lo, hi, v, a, j) == 0);
  for (int which = 0; which < 5; ++which) {
    for (int joint = 0; joint < 2; ++joint) {
      double c[5][2] = {{lo[0], lo[1]}, {hi[0], hi[1]}, {v[0], v[1]}, {a[0], a[1]}, {j[0], j[1]}};
      c[which][joint] = std::nextafter(c[which][joint], 1e300);  // one ulp
      CHECK(protocol::limits_digest(2, c[0], c[1], c[2], c[3], c[4]) != d);
    }
  }
  // the documented layout: SHA-256("RRTP joint limits" || u16 dof || f64 x 5 per joint), first 8 bytes LE
  Bytes msg(protocol::kLimitsDigestLabel, protocol::kLimitsDigestLabel + 17);
  msg.push_back(2);
  msg.push_back(0);
  for (int i = 0; i < 2; ++i)
    for (const double* x : {lo, hi, v, a, j}) {
      std::uint64_t bits;
      std::memcpy(&bits, &x[i], 8);
      for (int k = 0; k < 8; ++k) msg.push_back(std::uint8_t(bits >> (8 * k)));
    }
  std::uint8_t h[32];
  sha256(msg.data(), msg.size(), h);
  std::uint64_t expected = 0;
  for (int k = 0; k < 8; ++k) expected |= std::uint64_t(h[k]) << (8 * k);
  CHECK(d == expected);
}

TEST_CASE("limits mismatch: the robot refuses the hello, keeps no slot, and its ack is refused by the controller") {
  for (const std::string& key : {kKey, std::string()}) {
    CAPTURE(key);
    Link link(key, 40000, digest_of(std::nextafter(2.0, 3.0)), kDigest);  // one ulp apart
    link.client.begin(link.now);
    const Bytes hello = link.hello();
    REQUIRE(link.to_server(hello) == ServerSession::Verdict::kLimitsMismatch);
    CHECK(link.server.limits_refused() == 1);
    CHECK(link.server.handshakes() == 0);
    CHECK(link.reply.header.type == MessageType::kHelloAck);
    CHECK(link.reply.hello_ack.limits_digest == kDigest);  // the robot states its own digest
    const Bytes ack = link.ack();
    CHECK(link.to_client(ack) == ClientSession::Verdict::kLimitsMismatch);
    CHECK(link.in.hello_ack.limits_digest == kDigest);
    CHECK(link.client.state() == ClientSession::State::kHandshaking);
    CHECK_FALSE(link.client.established());
    // A client that ignored the refusal cannot make a session live: the robot kept nothing for the hello.
    Packet hb = heartbeat();
    const Bytes forced = link.controller.send(hb, link.client.hello_key(), link.now);
    CHECK(link.to_server(forced) != ServerSession::Verdict::kAcceptedNewSession);
    CHECK_FALSE(link.server.has_session());
    CHECK(link.server.sessions() == 0);
  }
}

TEST_CASE("limits mismatch: a controller refuses a robot that states other limits") {
  // a robot side that accepts (e.g. an older or misconfigured bridge): the controller alone still refuses
  Link link(kKey, 40000, kDigest, digest_of(360.0));
  link.client.begin(link.now);
  // the server refuses our digest too; build the ack a lenient robot would send: same digest check bypassed
  ServerSession lenient(kKey, Role::kRobotServer, Role::kController, 2, 1000, kTimeout, kDigest);
  lenient.start(0x5e55);
  Packet in, reply;
  Status status;
  const Bytes hello = link.hello();
  link.now += 1000;
  REQUIRE(lenient.receive(link.client_addr, hello.data(), hello.size(), link.now, in, reply, status) ==
          ServerSession::Verdict::kAck);
  reply.hello_ack.limits_digest = digest_of(360.0);  // it states other limits
  const Bytes ack = link.robot.send(reply, lenient.reply_key(), link.now);
  CHECK(link.to_client(ack) == ClientSession::Verdict::kLimitsMismatch);
  CHECK_FALSE(link.client.established());
}

TEST_CASE("limits digest 0 on a robot link is refused both ways (fail closed)") {
  {
    Link link(kKey, 40000, 0, kDigest);  // a controller that states no limits
    link.client.begin(link.now);
    Packet p;
    link.client.fill_hello(p, 0);
    CHECK(p.hello.limits_digest == 0);
    REQUIRE(link.to_server(link.hello()) == ServerSession::Verdict::kLimitsMismatch);
    CHECK(link.to_client(link.ack()) == ClientSession::Verdict::kLimitsMismatch);
    CHECK_FALSE(link.server.has_session());
  }
  {
    Link link(kKey, 40000, 0, 0);  // neither end states limits: still no session
    link.client.begin(link.now);
    REQUIRE(link.to_server(link.hello()) == ServerSession::Verdict::kLimitsMismatch);
    CHECK(link.to_client(link.ack()) == ClientSession::Verdict::kLimitsMismatch);
  }
  {
    Link link(kKey, 40000, kDigest, 0);  // a robot that states no limits
    link.client.begin(link.now);
    REQUIRE(link.to_server(link.hello()) == ServerSession::Verdict::kLimitsMismatch);
    CHECK(link.reply.hello_ack.limits_digest == 0);
    CHECK(link.to_client(link.ack()) == ClientSession::Verdict::kLimitsMismatch);
  }
}

TEST_CASE("camera links carry digest 0 and are not checked") {
  ClientSession client(kKey, Role::kCameraSubscriber, Role::kCameraServer, 0, kDigest);  // (ignored)
  ServerSession server(kKey, Role::kCameraServer, Role::kCameraSubscriber, 0, 0, kTimeout);
  server.start(0xca);
  const sockaddr_in from = address("127.0.0.1", 40010);
  Sender sub, cam{0xca};
  std::int64_t now = 1'000'000'000;
  client.begin(now);
  sub.session_id = client.session_id();
  Packet p, in, reply;
  Status status;
  client.fill_hello(p, 0);
  CHECK(p.hello.limits_digest == 0);
  const Bytes hello = sub.send(p, client.hello_key(), now);
  REQUIRE(server.receive(from, hello.data(), hello.size(), now, in, reply, status) == ServerSession::Verdict::kAck);
  CHECK(reply.hello_ack.limits_digest == 0);
  const Bytes ack = cam.send(reply, server.reply_key(), now);
  CHECK(client.receive(ack.data(), ack.size(), in, status) == ClientSession::Verdict::kEstablished);
}

TEST_CASE("a session refuses a short long-term key on both sides, naming the key and the minimum") {
  for (std::size_t n : {std::size_t{1}, std::size_t{2}, kMinLongTermKeyBytes - 1}) {
    const std::string short_key(n, 'k');
    CAPTURE(n);
    CHECK_THROWS_WITH_AS(ClientSession(short_key, Role::kController, Role::kRobotServer, 2, kDigest),
                         doctest::Contains("at least 16"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(ServerSession(short_key, Role::kRobotServer, Role::kController, 2, 1000, kTimeout, kDigest),
                         doctest::Contains("key: "), std::invalid_argument);
  }
  // the minimum and an empty key (unauthenticated; the sockets allow that on loopback only) are taken
  const std::string shortest(kMinLongTermKeyBytes, 'k');
  CHECK_NOTHROW(ClientSession(shortest, Role::kController, Role::kRobotServer, 2, kDigest));
  CHECK_NOTHROW(ServerSession(shortest, Role::kRobotServer, Role::kController, 2, 1000, kTimeout, kDigest));
  CHECK_NOTHROW(ClientSession("", Role::kController, Role::kRobotServer, 2, kDigest));
}
