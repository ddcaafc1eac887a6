#include "session.hpp"

#include <errno.h>
#include <sys/random.h>

#include <cstring>
#include <stdexcept>

#include "hkdf.hpp"

namespace robot_rt::control::session {

using protocol::MessageType;
using protocol::Packet;
using protocol::SequenceTracker;
using protocol::Status;

void random_bytes(std::uint8_t* out, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t got = ::getrandom(out + done, n - done, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(std::string("getrandom(): ") + std::strerror(errno));
    }
    done += static_cast<std::size_t>(got);
  }
}

std::uint32_t random_session_id() {
  std::uint32_t id = 0;
  while (id == 0) random_bytes(reinterpret_cast<std::uint8_t*>(&id), sizeof(id));
  return id;
}

void key_info(const KeyInputs& in, std::uint8_t out[kKeyInfoBytes]) {
  constexpr std::size_t label = sizeof(kKeyLabel) - 1;
  std::memcpy(out, kKeyLabel, label);
  std::uint8_t* p = out + label;
  *p++ = protocol::kVersion;
  *p++ = std::uint8_t(in.client_role);
  *p++ = std::uint8_t(in.client_role >> 8);
  *p++ = std::uint8_t(in.server_role);
  *p++ = std::uint8_t(in.server_role >> 8);
  for (int i = 0; i < 4; ++i) *p++ = std::uint8_t(in.client_session_id >> (8 * i));
  for (int i = 0; i < 4; ++i) *p++ = std::uint8_t(in.server_session_id >> (8 * i));
}

void derive_session_keys(const std::uint8_t* long_term_key, std::size_t key_size, const KeyInputs& in,
                         std::uint8_t out[2 * kSessionKeyBytes]) {
  std::uint8_t salt[2 * kNonceBytes];
  std::memcpy(salt, in.client_nonce, kNonceBytes);
  std::memcpy(salt + kNonceBytes, in.server_nonce, kNonceBytes);
  std::uint8_t info[kKeyInfoBytes];
  key_info(in, info);
  hkdf(salt, sizeof(salt), long_term_key, key_size, info, sizeof(info), out, 2 * kSessionKeyBytes);
}

std::string camera_link_key(const std::string& robot_link_key) {
  // a derived key has only its input's entropy (and guessing the input gives the robot link's key too)
  check_long_term_key(robot_link_key);
  if (robot_link_key.empty()) return {};
  const HmacSha256Key key(reinterpret_cast<const std::uint8_t*>(robot_link_key.data()), robot_link_key.size());
  std::uint8_t mac[kSha256DigestBytes];
  key.tag(reinterpret_cast<const std::uint8_t*>(kCameraKeyLabel), sizeof(kCameraKeyLabel) - 1, nullptr, 0, mac);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(2 * kSha256DigestBytes, '0');
  for (std::size_t i = 0; i < kSha256DigestBytes; ++i) {
    out[2 * i] = kHex[mac[i] >> 4];
    out[2 * i + 1] = kHex[mac[i] & 15];
  }
  std::memset(mac, 0, sizeof(mac));
  return out;
}

void SessionKeys::derive(const std::string& long_term_key, const KeyInputs& in) {
  if (long_term_key.empty()) {
    clear();
    return;
  }
  std::uint8_t okm[2 * kSessionKeyBytes];
  derive_session_keys(reinterpret_cast<const std::uint8_t*>(long_term_key.data()), long_term_key.size(), in, okm);
  client_to_server.set(okm, kSessionKeyBytes);
  server_to_client.set(okm + kSessionKeyBytes, kSessionKeyBytes);
  std::memset(okm, 0, sizeof(okm));
}

void check_long_term_key(const std::string& key) {
  if (!key.empty() && key.size() < kMinLongTermKeyBytes)
    throw std::invalid_argument("key: " + std::to_string(key.size()) + " bytes, expected at least " +
                                std::to_string(kMinLongTermKeyBytes) +
                                " (one sniffed hello lets a short key be found offline; e.g. 64 random hex digits) "
                                "or none (unauthenticated, loopback only)");
}

namespace {
const HmacSha256Key* key_or_null(const HmacSha256Key& k) { return k.empty() ? nullptr : &k; }
}  // namespace

// --------------------------------------------------------------------------------------------- client side
ClientSession::ClientSession(std::string long_term_key, protocol::Role own_role, protocol::Role server_role,
                             std::uint16_t dof, std::uint64_t limits_digest)
    : key_(std::move(long_term_key)),
      own_role_(own_role),
      server_role_(server_role),
      dof_(dof),
      limits_digest_(limits_digest) {
  check_long_term_key(key_);
  if (!key_.empty()) hello_key_.set(reinterpret_cast<const std::uint8_t*>(key_.data()), key_.size());
}

void ClientSession::begin(std::int64_t now_ns) {
  random_bytes(nonce_, kNonceBytes);
  session_id_ = random_session_id();
  begun_ns_ = now_ns;
  server_session_id_ = 0;
  keys_.clear();
  tracker_.reset();
  state_ = State::kHandshaking;
}

void ClientSession::end() noexcept {
  keys_.clear();
  tracker_.reset();
  state_ = State::kIdle;
}

void ClientSession::fill_hello(Packet& p, std::uint32_t period_us) const noexcept {
  p.header.type = MessageType::kHello;
  p.hello.role = static_cast<std::uint16_t>(own_role_);
  p.hello.dof = dof_;
  p.hello.period_us = period_us;
  std::memcpy(p.hello.nonce, nonce_, kNonceBytes);
  p.hello.limits_digest = robot_link() ? limits_digest_ : 0;
}

ClientSession::Verdict ClientSession::receive(const std::uint8_t* data, std::size_t size, Packet& out,
                                              Status& status) noexcept {
  protocol::Frame frame;
  status = protocol::peek(data, size, frame);
  if (status != Status::kOk) return Verdict::kRejected;
  if (frame.type == static_cast<std::uint8_t>(MessageType::kHelloAck)) {
    if (state_ != State::kHandshaking) return Verdict::kStaleAck;  // duplicate or replayed: nothing to do
    std::uint8_t server_nonce[kNonceBytes];
    if (!protocol::peek_server_nonce(data, size, server_nonce)) {
      status = Status::kBadLength;
      return Verdict::kRejected;
    }
    KeyInputs in;
    in.client_nonce = nonce_;
    in.server_nonce = server_nonce;
    in.client_role = static_cast<std::uint16_t>(own_role_);
    in.server_role = static_cast<std::uint16_t>(server_role_);
    in.client_session_id = session_id_;
    in.server_session_id = frame.session_id;
    candidate_.derive(key_, in);
    status = protocol::decode(data, size, key_or_null(candidate_.server_to_client), out);
    if (status != Status::kOk) return Verdict::kRejected;  // bad tag: an answer to another hello, or forged
    const protocol::HelloAck& a = out.hello_ack;
    // With a key the tag already binds the ack to our nonce and session id; without one this is the binding.
    if (a.client_session_id != session_id_ || std::memcmp(a.client_nonce, nonce_, kNonceBytes) != 0)
      return Verdict::kStaleAck;
    if (a.role != static_cast<std::uint16_t>(server_role_) || a.dof != dof_) return Verdict::kMismatch;
    // Fail closed: a robot whose limits are not the ones our safety filter enforces, or none expected at all.
    if (robot_link() && (limits_digest_ == 0 || a.limits_digest != limits_digest_)) {
      candidate_.clear();
      return Verdict::kLimitsMismatch;
    }
    keys_ = candidate_;
    candidate_.clear();
    server_session_id_ = frame.session_id;
    tracker_.reset();
    tracker_.check(frame.session_id, frame.sequence);
    state_ = State::kEstablished;
    return Verdict::kEstablished;
  }
  if (state_ != State::kEstablished) return Verdict::kNoSession;
  if (frame.session_id != server_session_id_) return Verdict::kUnexpectedSession;
  status = protocol::decode(data, size, key_or_null(keys_.server_to_client), out);
  if (status != Status::kOk) return Verdict::kRejected;
  switch (tracker_.check(frame.session_id, frame.sequence)) {
    case SequenceTracker::Verdict::kDuplicate: return Verdict::kDuplicate;
    case SequenceTracker::Verdict::kStale: return Verdict::kStale;
    default: return Verdict::kAccepted;
  }
}

// --------------------------------------------------------------------------------------------- server side
ServerSession::ServerSession(std::string long_term_key, protocol::Role own_role, protocol::Role client_role,
                             std::uint16_t dof, std::uint32_t period_us, std::int64_t session_timeout_ns,
                             std::uint64_t limits_digest)
    : key_(std::move(long_term_key)),
      own_role_(own_role),
      client_role_(client_role),
      dof_(dof),
      period_us_(period_us),
      session_timeout_ns_(session_timeout_ns),
      limits_digest_(limits_digest) {
  if (session_timeout_ns_ <= 0) throw std::invalid_argument("session_timeout: expected a positive duration");
  check_long_term_key(key_);
  if (!key_.empty()) hello_key_.set(reinterpret_cast<const std::uint8_t*>(key_.data()), key_.size());
}

void ServerSession::start(std::uint32_t server_session_id) noexcept {
  session_id_ = server_session_id;
  live_.active = false;
  live_.keys.clear();
  for (Slot& s : pending_) {
    s.active = false;
    s.keys.clear();
  }
}

bool ServerSession::expire(std::int64_t now_ns) noexcept {
  if (!live_.active || now_ns - live_.last_heard_ns <= session_timeout_ns_) return false;
  end_session();
  ++expired_;
  return true;
}

void ServerSession::end_session() noexcept {
  live_.active = false;
  live_.keys.clear();
}

// A handshake slot for an authentic hello: the client's endpoint, session id and nonce, a fresh server nonce, and
// the session keys derived from them (one key derivation per answered hello).
void ServerSession::open_slot(Slot& slot, const sockaddr_in& from, std::uint32_t client_session_id,
                              const std::uint8_t* client_nonce, std::int64_t now_ns) noexcept {
  slot.active = true;
  slot.addr = from;
  slot.client_session_id = client_session_id;
  std::memcpy(slot.client_nonce, client_nonce, kNonceBytes);
  random_bytes(slot.server_nonce, kNonceBytes);
  slot.created_ns = now_ns;
  KeyInputs in;
  in.client_nonce = slot.client_nonce;
  in.server_nonce = slot.server_nonce;
  in.client_role = static_cast<std::uint16_t>(client_role_);
  in.server_role = static_cast<std::uint16_t>(own_role_);
  in.client_session_id = slot.client_session_id;
  in.server_session_id = session_id_;
  slot.keys.derive(key_, in);
}

void ServerSession::fill_ack(const Slot& slot, const Packet& hello, std::int64_t now_ns, Packet& reply) const {
  reply.header.type = MessageType::kHelloAck;
  protocol::HelloAck& a = reply.hello_ack;
  a.role = static_cast<std::uint16_t>(own_role_);
  a.dof = dof_;
  a.period_us = period_us_;
  a.client_session_id = slot.client_session_id;
  std::memcpy(a.client_nonce, slot.client_nonce, kNonceBytes);
  std::memcpy(a.server_nonce, slot.server_nonce, kNonceBytes);
  a.echo_hello_stamp_ns = hello.header.stamp_ns;
  a.hello_receive_ns = static_cast<std::uint64_t>(now_ns);
  a.limits_digest = robot_link() ? limits_digest_ : 0;
}

ServerSession::Verdict ServerSession::receive(const sockaddr_in& from, const std::uint8_t* data, std::size_t size,
                                              std::int64_t now_ns, Packet& out, Packet& reply, Status& status) {
  protocol::Frame frame;
  status = protocol::peek(data, size, frame);
  if (status != Status::kOk) return Verdict::kRejected;
  expire(now_ns);
  if (frame.type == static_cast<std::uint8_t>(MessageType::kHello)) {
    if (live(now_ns)) return Verdict::kHelloRefused;  // no crypto, no state, no reply: a flood costs a peek each
    status = protocol::decode(data, size, key_or_null(hello_key_), out);
    if (status != Status::kOk) return Verdict::kRejected;
    if (out.hello.role != static_cast<std::uint16_t>(client_role_) || out.hello.dof != dof_) return Verdict::kMismatch;
    Slot* slot = nullptr;
    const bool limits_refused =
        robot_link() && (out.hello.limits_digest == 0 || out.hello.limits_digest != limits_digest_);
    if (limits_refused) {
      // No pending slot: nothing this client sends can make a session live. The ack (keys of a scratch slot, one
      // derivation as for any answered hello) only tells an authentic controller our digest.
      slot = &refusal_;
      open_slot(*slot, from, frame.session_id, out.hello.nonce, now_ns);
      slot->active = false;
      fill_ack(*slot, out, now_ns, reply);
      reply_key_ = slot->keys.server_to_client;
      ++limits_refused_;
      return Verdict::kLimitsMismatch;
    }
    for (Slot& s : pending_) {  // the client repeating its hello: answer again with the same server nonce
      if (s.active && same_endpoint(s.addr, from) && s.client_session_id == frame.session_id &&
          std::memcmp(s.client_nonce, out.hello.nonce, kNonceBytes) == 0 && now_ns - s.created_ns <= session_timeout_ns_) {
        slot = &s;
        break;
      }
    }
    if (slot == nullptr) {
      for (Slot& s : pending_) {
        if (!s.active || now_ns - s.created_ns > session_timeout_ns_) {
          slot = &s;
          break;
        }
      }
      if (slot == nullptr) {  // all busy: recycle the oldest (bounded state; see docs/protocol.md, "Floods")
        slot = &pending_[0];
        for (Slot& s : pending_)
          if (s.created_ns < slot->created_ns) slot = &s;
        ++evicted_;
      }
      open_slot(*slot, from, frame.session_id, out.hello.nonce, now_ns);
    }
    fill_ack(*slot, out, now_ns, reply);
    reply_key_ = slot->keys.server_to_client;
    ++handshakes_;
    return Verdict::kAck;
  }
  if (live_.active && same_endpoint(from, live_.addr) && frame.session_id == live_.client_session_id) {
    status = protocol::decode(data, size, key_or_null(live_.keys.client_to_server), out);
    if (status != Status::kOk) return Verdict::kRejected;
    switch (live_.tracker.check(frame.session_id, frame.sequence)) {
      case SequenceTracker::Verdict::kDuplicate: return Verdict::kDuplicate;
      case SequenceTracker::Verdict::kStale: return Verdict::kStale;
      default: break;
    }
    live_.last_heard_ns = now_ns;
    if (out.header.type == MessageType::kGoodbye) {
      end_session();
      ++goodbyes_;
      return Verdict::kGoodbye;
    }
    return Verdict::kAccepted;
  }
  bool known_address = live_.active && same_endpoint(from, live_.addr);
  for (Slot& s : pending_) {
    if (!s.active || !same_endpoint(s.addr, from)) continue;
    known_address = true;
    if (s.client_session_id != frame.session_id) continue;
    if (now_ns - s.created_ns > session_timeout_ns_) {
      s.active = false;  // too old to complete
      continue;
    }
    if (live(now_ns)) return Verdict::kUnexpectedSession;  // another session went live meanwhile
    status = protocol::decode(data, size, key_or_null(s.keys.client_to_server), out);
    if (status != Status::kOk) return Verdict::kRejected;
    if (out.header.type == MessageType::kGoodbye) {  // the client abandons its handshake
      s.active = false;
      return Verdict::kUnexpectedSession;
    }
    live_ = s;
    s.active = false;
    s.keys.clear();
    live_.tracker.reset();
    live_.tracker.check(frame.session_id, frame.sequence);
    live_.last_heard_ns = now_ns;
    ++sessions_;
    return Verdict::kAcceptedNewSession;
  }
  return known_address ? Verdict::kUnexpectedSession : Verdict::kUnexpectedSource;
}

const char* client_verdict_name(ClientSession::Verdict v) {
  using V = ClientSession::Verdict;
  switch (v) {
    case V::kAccepted: return "accepted";
    case V::kEstablished: return "established";
    case V::kRejected: return "rejected";
    case V::kNoSession: return "no_session";
    case V::kUnexpectedSession: return "unexpected_session";
    case V::kStaleAck: return "stale_ack";
    case V::kMismatch: return "mismatch";
    case V::kDuplicate: return "duplicate";
    case V::kStale: return "stale";
    case V::kLimitsMismatch: return "limits_mismatch";
  }
  return "unknown";
}

const char* server_verdict_name(ServerSession::Verdict v) {
  using V = ServerSession::Verdict;
  switch (v) {
    case V::kAck: return "ack";
    case V::kAccepted: return "accepted";
    case V::kAcceptedNewSession: return "accepted_new_session";
    case V::kGoodbye: return "goodbye";
    case V::kRejected: return "rejected";
    case V::kHelloRefused: return "hello_refused";
    case V::kUnexpectedSource: return "unexpected_source";
    case V::kUnexpectedSession: return "unexpected_session";
    case V::kMismatch: return "mismatch";
    case V::kDuplicate: return "duplicate";
    case V::kStale: return "stale";
    case V::kLimitsMismatch: return "limits_mismatch";
  }
  return "unknown";
}

}  // namespace robot_rt::control::session
