// robot_rt_session_bench: the work the session layer does per received datagram (docs/protocol.md, "Threat
// model", floods), timed on the state machines alone (no sockets, no threads): the robot server's
// session::ServerSession for each kind of datagram an attacker can send, against an accepted command of the
// live session (the reference: the work the robot does anyway at its control rate), and the client's
// session::ClientSession for the datagrams that reach a controller. Prints one JSON object; run by
// bench/bench_link_attacks.py. Usage: robot_rt_session_bench [iterations per round, default 20000]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "protocol.hpp"
#include "session.hpp"
#include "udp_socket.hpp"

using namespace robot_rt::control;
using namespace robot_rt::control::session;
using protocol::MessageType;
using protocol::Packet;
using protocol::Role;
using Bytes = std::vector<std::uint8_t>;

namespace {

constexpr std::uint16_t kDof = 8;
constexpr std::uint64_t kLimitsDigest = 0x1111'2222'3333'4444ULL;  // any non-zero digest both ends share
const std::string kKey = "bench long-term key";

struct Sender {
  std::uint32_t session_id = 0;
  std::uint64_t sequence = 0;
  Bytes send(Packet p, const HmacSha256Key& key, std::int64_t now_ns) {
    p.header.session_id = session_id;
    p.header.sequence = ++sequence;
    p.header.stamp_ns = static_cast<std::uint64_t>(now_ns);
    std::uint8_t buf[protocol::kMaxPacketBytes];
    const std::size_t n = protocol::encode(p, key.empty() ? nullptr : &key, buf, sizeof(buf));
    if (n == 0) std::abort();
    return Bytes(buf, buf + n);
  }
};

Packet command() {
  Packet p;
  p.header.type = MessageType::kJointCommand;
  p.command.dof = kDof;
  p.command.mode = protocol::kModePositionVelocity;
  for (int i = 0; i < kDof; ++i) p.command.position[i] = 0.1 * i;
  return p;
}

Packet state() {
  Packet p;
  p.header.type = MessageType::kJointState;
  p.state.dof = kDof;
  return p;
}

sockaddr_in address(const char* ip, std::uint16_t port) {
  sockaddr_in a;
  make_address(ip, port, a);
  return a;
}

double now_ns() { return double(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                    std::chrono::steady_clock::now().time_since_epoch())
                                    .count()); }

// Median over rounds of the ns per call of fn(i), i = 0..iterations-1.
template <typename Fn>
double ns_per_call(int iterations, int rounds, Fn&& fn) {
  std::vector<double> per;
  for (int r = 0; r < rounds; ++r) {
    const double t0 = now_ns();
    for (int i = 0; i < iterations; ++i) fn(r * iterations + i);
    per.push_back((now_ns() - t0) / iterations);
  }
  std::sort(per.begin(), per.end());
  return per[per.size() / 2];
}

struct Live {
  ServerSession server{kKey, Role::kRobotServer, Role::kController, kDof, 1000, 500'000'000, kLimitsDigest};
  ClientSession client{kKey, Role::kController, Role::kRobotServer, kDof, kLimitsDigest};
  Sender controller, robot;
  sockaddr_in addr = address("127.0.0.1", 40000);
  Packet in, reply;
  protocol::Status status;
  std::int64_t t = 1'000'000'000;
  Bytes old_hello;

  void connect() {
    server.start(0x5e55);
    robot.session_id = 0x5e55;
    client.begin(t);
    controller.session_id = client.session_id();
    Packet h;
    client.fill_hello(h, 0);
    old_hello = controller.send(h, client.hello_key(), t);
    if (server.receive(addr, old_hello.data(), old_hello.size(), t, in, reply, status) != ServerSession::Verdict::kAck)
      std::abort();
    const Bytes ack = robot.send(reply, server.reply_key(), t);
    if (client.receive(ack.data(), ack.size(), in, status) != ClientSession::Verdict::kEstablished) std::abort();
    Packet hb;
    hb.header.type = MessageType::kHeartbeat;
    const Bytes confirm = controller.send(hb, client.tx_key(), t);
    if (server.receive(addr, confirm.data(), confirm.size(), t, in, reply, status) !=
        ServerSession::Verdict::kAcceptedNewSession)
      std::abort();
  }
};

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::max(100, std::atoi(argv[1])) : 20000;
  const int rounds = 7;
  std::vector<std::pair<std::string, double>> server_rows, client_rows;
  volatile int sink = 0;

  Live live;
  live.connect();
  // reference: the live session's commands, each fresh (as at the control rate)
  std::vector<Bytes> commands;
  for (int i = 0; i < n * rounds; ++i) commands.push_back(live.controller.send(command(), live.client.tx_key(), live.t));
  server_rows.emplace_back("accepted_command", ns_per_call(n, rounds, [&](int i) {
    sink += int(live.server.receive(live.addr, commands[i].data(), commands[i].size(), live.t, live.in, live.reply,
                                    live.status));
  }));
  const Bytes dup = commands.front();
  server_rows.emplace_back("duplicate_command", ns_per_call(n, rounds, [&](int) {
    sink += int(live.server.receive(live.addr, dup.data(), dup.size(), live.t, live.in, live.reply, live.status));
  }));
  const sockaddr_in other = address("127.0.0.2", 40001);
  server_rows.emplace_back("hello_refused_while_live", ns_per_call(n, rounds, [&](int) {
    sink += int(live.server.receive(other, live.old_hello.data(), live.old_hello.size(), live.t, live.in, live.reply,
                                    live.status));
  }));
  Sender stranger{0x0bad};
  const Bytes other_session = stranger.send(command(), live.client.tx_key(), live.t);
  server_rows.emplace_back("other_session_from_live_address", ns_per_call(n, rounds, [&](int) {
    sink += int(live.server.receive(live.addr, other_session.data(), other_session.size(), live.t, live.in, live.reply,
                                    live.status));
  }));
  // forged: the live session id and address, a tag that does not verify (one HMAC)
  Sender forger{live.client.session_id(), 1u << 30};
  const HmacSha256Key wrong(reinterpret_cast<const std::uint8_t*>("guess"), 5);
  const Bytes forged = forger.send(command(), wrong, live.t);
  server_rows.emplace_back("forged_tag_on_live_session", ns_per_call(n, rounds, [&](int) {
    sink += int(live.server.receive(live.addr, forged.data(), forged.size(), live.t, live.in, live.reply, live.status));
  }));
  Bytes garbage(64);
  for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = std::uint8_t(i * 37 + 11);
  server_rows.emplace_back("garbage", ns_per_call(n, rounds, [&](int) {
    sink += int(live.server.receive(other, garbage.data(), garbage.size(), live.t, live.in, live.reply, live.status));
  }));
  Bytes bad_crc = commands.back();
  bad_crc[40] ^= 1;
  server_rows.emplace_back("bad_checksum", ns_per_call(n, rounds, [&](int) {
    sink += int(live.server.receive(live.addr, bad_crc.data(), bad_crc.size(), live.t, live.in, live.reply, live.status));
  }));
  // no live session: every valid hello is answered (verify, getrandom, HKDF, and the ack's tag)
  ServerSession idle(kKey, Role::kRobotServer, Role::kController, kDof, 1000, 500'000'000, kLimitsDigest);
  idle.start(0x5e56);
  Sender robot2{0x5e56};
  server_rows.emplace_back("hello_answered_no_session", ns_per_call(n / 10, rounds, [&](int i) {
    const sockaddr_in from = address("127.0.0.3", static_cast<std::uint16_t>(1024 + i % 60000));
    if (idle.receive(from, live.old_hello.data(), live.old_hello.size(), live.t, live.in, live.reply, live.status) ==
        ServerSession::Verdict::kAck) {
      const Bytes ack = robot2.send(live.reply, idle.reply_key(), live.t);
      sink += int(ack.size());
    }
  }));

  // client side
  std::vector<Bytes> states;
  for (int i = 0; i < n * rounds; ++i) states.push_back(live.robot.send(state(), live.server.tx_key(), live.t));
  client_rows.emplace_back("accepted_state", ns_per_call(n, rounds, [&](int i) {
    sink += int(live.client.receive(states[i].data(), states[i].size(), live.in, live.status));
  }));
  const Bytes forged_state = Sender{0x5e55, 1u << 30}.send(state(), wrong, live.t);
  client_rows.emplace_back("forged_state", ns_per_call(n, rounds, [&](int) {
    sink += int(live.client.receive(forged_state.data(), forged_state.size(), live.in, live.status));
  }));
  // a replayed hello_ack while handshaking again: one key derivation and one HMAC each
  Bytes old_ack;
  {
    Packet h;
    live.client.fill_hello(h, 0);  // (any hello of ours: the ack is built from the server's pending slot)
    ServerSession s(kKey, Role::kRobotServer, Role::kController, kDof, 1000, 500'000'000, kLimitsDigest);
    s.start(0x5e57);
    const Bytes hello = live.controller.send(h, live.client.hello_key(), live.t);
    s.receive(live.addr, hello.data(), hello.size(), live.t, live.in, live.reply, live.status);
    old_ack = Sender{0x5e57}.send(live.reply, s.reply_key(), live.t);
  }
  live.client.begin(live.t);  // a new handshake: the recorded ack belongs to the previous one
  client_rows.emplace_back("replayed_hello_ack", ns_per_call(n / 10, rounds, [&](int) {
    sink += int(live.client.receive(old_ack.data(), old_ack.size(), live.in, live.status));
  }));

  std::printf("{\"iterations\": %d, \"rounds\": %d, \"dof\": %d, \"server_ns\": {", n, rounds, kDof);
  for (std::size_t i = 0; i < server_rows.size(); ++i)
    std::printf("%s\"%s\": %.1f", i ? ", " : "", server_rows[i].first.c_str(), server_rows[i].second);
  std::printf("}, \"client_ns\": {");
  for (std::size_t i = 0; i < client_rows.size(); ++i)
    std::printf("%s\"%s\": %.1f", i ? ", " : "", client_rows[i].first.c_str(), client_rows[i].second);
  std::printf("}, \"sink\": %d}\n", int(sink));
  return 0;
}
