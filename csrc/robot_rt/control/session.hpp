// Session layer of the protocol (docs/protocol.md, "Handshake and sessions"): fresh nonces from both ends, a
// per-session key pair derived from the long-term key with HKDF-SHA256, key confirmation in both directions,
// and the rules that decide which datagrams belong to the live session.
//
//   client                                       server
//   hello(nonce_c)            --long-term key-->  [refused while a session is live: no state, no reply]
//                                                 pending slot: nonce_s (fresh), keys = HKDF(...)
//                  <--server->client key--        hello_ack(nonce_c, nonce_s, t1, t2)   (server proves the key)
//   [ack verified: established]
//   heartbeat / commands      --client->server key-->  [first valid one: the session is live] (client proves it)
//
// ClientSession runs the client side (the UDP driver, the camera receiver), ServerSession the server side with
// one live session (the simulated robot). Neither sends anything: they classify received datagrams, fill the
// replies, and hold the keys the caller signs its datagrams with. Bounded work per datagram (at most one
// HMAC check, plus one key derivation for a hello or hello_ack), no heap after construction, and nothing is
// stored for a peer that has not proven the long-term key (a replayed hello gets an answer and a bounded,
// recycled pending slot: it can never complete the handshake without the key).
// Without a long-term key (unauthenticated mode, loopback only: checked by the endpoints), the same
// handshake runs without tags.
//
// Joint limits (robot links only: a controller and a robot server): the hello carries the limits digest the
// controller's safety filter uses (protocol::limits_digest), the hello_ack the robot's. The server opens no
// handshake for a hello whose digest differs from its own or is 0 (kLimitsMismatch; it answers with a hello_ack
// carrying its digest but keeps no slot, so the session can never go live and the client learns why); the client
// refuses a hello_ack whose digest differs from its expected one, and every hello_ack while it expects none (0):
// both sides fail closed. Camera links send 0 and ignore the field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "protocol.hpp"
#include "sha256.hpp"
#include "udp_socket.hpp"

namespace robot_rt::control::session {

using protocol::kNonceBytes;
constexpr std::size_t kSessionKeyBytes = kSha256DigestBytes;
// HKDF info label (ASCII, 20 bytes), followed by version u8, client role u16, server role u16, client session
// id u32, server session id u32 (little-endian): 33 bytes.
constexpr char kKeyLabel[] = "RRTP v3 session keys";
constexpr std::size_t kKeyInfoBytes = sizeof(kKeyLabel) - 1 + 1 + 2 + 2 + 4 + 4;

// The shortest long-term key a session takes (an empty key: unauthenticated, loopback only). A hello is tagged with
// the long-term key over content an eavesdropper can predict, so one sniffed hello lets a short key be found by
// trying keys offline (a 2-byte key in 29,000 guesses, 0.06 s); every session, both sides, refuses one.
constexpr std::size_t kMinLongTermKeyBytes = 16;
// Throws std::invalid_argument naming `key` unless it is empty or at least kMinLongTermKeyBytes long.
void check_long_term_key(const std::string& key);

// n bytes from the kernel's CSPRNG (getrandom(2)); throws std::runtime_error if it cannot deliver.
void random_bytes(std::uint8_t* out, std::size_t n);
std::uint32_t random_session_id();  // non-zero

struct KeyInputs {
  const std::uint8_t* client_nonce = nullptr;  // kNonceBytes
  const std::uint8_t* server_nonce = nullptr;  // kNonceBytes
  std::uint16_t client_role = 0;
  std::uint16_t server_role = 0;
  std::uint32_t client_session_id = 0;
  std::uint32_t server_session_id = 0;
};

// The HKDF info string of the key schedule (kKeyInfoBytes).
void key_info(const KeyInputs& in, std::uint8_t out[kKeyInfoBytes]);

// OKM = HKDF-SHA256(salt = client_nonce || server_nonce, IKM = long-term key, info = key_info(in), L = 64):
// out[0, 32) the client->server key, out[32, 64) the server->client key.
void derive_session_keys(const std::uint8_t* long_term_key, std::size_t key_size, const KeyInputs& in,
                         std::uint8_t out[2 * kSessionKeyBytes]);

// The camera link's long-term key, derived from the robot link's: the 64 lowercase hex digits of
// HMAC-SHA256(robot link key, kCameraKeyLabel); empty for an empty key (unauthenticated). A camera is given this
// key only: it authenticates the camera stream but cannot be turned back into the robot link's key, so a camera
// (or whoever owns its computer) can never open a controller session to the robot (docs/protocol.md, "Keys").
constexpr char kCameraKeyLabel[] = "RRTP camera link key";
std::string camera_link_key(const std::string& robot_link_key);

struct SessionKeys {
  HmacSha256Key client_to_server;  // both empty in unauthenticated mode
  HmacSha256Key server_to_client;
  void derive(const std::string& long_term_key, const KeyInputs& in);
  void clear() { *this = SessionKeys(); }
};

// --------------------------------------------------------------------------------------------- client side
class ClientSession {
 public:
  enum class State : std::uint8_t { kIdle, kHandshaking, kEstablished };
  enum class Verdict : std::uint8_t {
    kAccepted,           // a datagram of the live session: `out` holds it
    kEstablished,        // a valid hello_ack answering our hello: the session is live, `out` holds the ack
    kRejected,           // decoding failed (`status`): corrupt, forged, or tagged with another session's key
    kNoSession,          // session traffic while no session is established (e.g. a replayed state): dropped
    kUnexpectedSession,  // a datagram of another session (another server session id): dropped
    kStaleAck,           // an authentic-looking hello_ack that does not answer our current hello: dropped
    kMismatch,           // authentic, but the wrong role or dof (another kind of peer)
    kDuplicate,          // a sequence already accepted in this session (replay within the session)
    kStale,              // older than the newest accepted
    kLimitsMismatch,     // authentic ack from a robot whose joint-limits digest is not the expected one (or none is
                         // expected): no session; `out` holds the ack (its limits_digest is the robot's)
  };

  // long_term_key empty: unauthenticated mode. limits_digest: the robot's joint limits this controller expects
  // (protocol::limits_digest; 0 on a robot link: every ack is refused). Ignored for camera links.
  ClientSession(std::string long_term_key, protocol::Role own_role, protocol::Role server_role, std::uint16_t dof,
                std::uint64_t limits_digest = 0);

  // A new handshake: fresh nonce and session id (getrandom), state kHandshaking.
  void begin(std::int64_t now_ns);
  void end() noexcept;  // back to kIdle, keys forgotten

  // Fills p's type and hello payload (the caller stamps it and signs it with hello_key()).
  void fill_hello(protocol::Packet& p, std::uint32_t period_us) const noexcept;
  Verdict receive(const std::uint8_t* data, std::size_t size, protocol::Packet& out, protocol::Status& status) noexcept;

  State state() const noexcept { return state_; }
  bool established() const noexcept { return state_ == State::kEstablished; }
  bool authenticated() const noexcept { return !key_.empty(); }
  std::uint32_t session_id() const noexcept { return session_id_; }
  std::uint32_t server_session_id() const noexcept { return server_session_id_; }
  std::int64_t begun_ns() const noexcept { return begun_ns_; }
  bool robot_link() const noexcept { return server_role_ == protocol::Role::kRobotServer; }
  std::uint64_t limits_digest() const noexcept { return limits_digest_; }
  void set_limits_digest(std::uint64_t digest) noexcept { limits_digest_ = digest; }  // not during a handshake
  const HmacSha256Key& hello_key() const noexcept { return hello_key_; }
  const HmacSha256Key& tx_key() const noexcept { return keys_.client_to_server; }
  const protocol::SequenceTracker& tracker() const noexcept { return tracker_; }

 private:
  std::string key_;
  HmacSha256Key hello_key_;
  protocol::Role own_role_, server_role_;
  std::uint16_t dof_;
  std::uint64_t limits_digest_;
  State state_ = State::kIdle;
  std::uint8_t nonce_[kNonceBytes] = {};
  std::uint32_t session_id_ = 0;
  std::int64_t begun_ns_ = 0;
  std::uint32_t server_session_id_ = 0;
  SessionKeys keys_;
  SessionKeys candidate_;  // keys of a hello_ack being verified
  protocol::SequenceTracker tracker_;
};

// --------------------------------------------------------------------------------------------- server side
class ServerSession {
 public:
  static constexpr int kPendingSlots = 4;
  enum class Verdict : std::uint8_t {
    kAck,                 // a valid hello: `reply` holds the hello_ack for `from`, to be signed with reply_key()
    kAccepted,            // a datagram of the live session: `out` holds it
    kAcceptedNewSession,  // the first datagram of a confirmed handshake: that session is live now (`out` holds it)
    kGoodbye,             // the live session's authenticated goodbye: it has ended
    kRejected,            // decoding failed (`status`)
    kHelloRefused,        // a hello while a session is live: refused, no state, no reply
    kUnexpectedSource,    // not from the live session's (or a pending handshake's) address
    kUnexpectedSession,   // from such an address, but of another session
    kMismatch,            // authentic hello of the wrong role or dof
    kDuplicate,
    kStale,
    kLimitsMismatch,      // authentic robot-link hello whose joint-limits digest differs from ours or is 0: no handshake
                          // (no slot); `reply` holds a hello_ack stating our digest, to be signed with reply_key(), so
                          // the controller learns why (it refuses that ack, and no confirmation can make it live)
  };

  // limits_digest: protocol::limits_digest of the robot's joint limits (robot links; 0 refuses every controller).
  ServerSession(std::string long_term_key, protocol::Role own_role, protocol::Role client_role, std::uint16_t dof,
                std::uint32_t period_us, std::int64_t session_timeout_ns, std::uint64_t limits_digest = 0);

  // Forgets every session and handshake; the server's session id for this run (a restart: a new one).
  void start(std::uint32_t server_session_id) noexcept;
  Verdict receive(const sockaddr_in& from, const std::uint8_t* data, std::size_t size, std::int64_t now_ns,
                  protocol::Packet& out, protocol::Packet& reply, protocol::Status& status);

  // Ends the live session when it has been silent for the session timeout; true when it did.
  bool expire(std::int64_t now_ns) noexcept;
  void end_session() noexcept;  // e.g. after sending our goodbye

  bool has_session() const noexcept { return live_.active; }
  bool live(std::int64_t now_ns) const noexcept {
    return live_.active && now_ns - live_.last_heard_ns <= session_timeout_ns_;
  }
  const sockaddr_in& peer() const noexcept { return live_.addr; }
  std::uint32_t peer_session_id() const noexcept { return live_.client_session_id; }
  std::int64_t last_heard_ns() const noexcept { return live_.last_heard_ns; }
  const protocol::SequenceTracker& tracker() const noexcept { return live_.tracker; }
  const HmacSha256Key& tx_key() const noexcept { return live_.keys.server_to_client; }
  const HmacSha256Key& reply_key() const noexcept { return reply_key_; }
  std::uint32_t session_id() const noexcept { return session_id_; }
  bool authenticated() const noexcept { return !key_.empty(); }
  std::int64_t session_timeout_ns() const noexcept { return session_timeout_ns_; }
  bool robot_link() const noexcept { return own_role_ == protocol::Role::kRobotServer; }
  std::uint64_t limits_digest() const noexcept { return limits_digest_; }

  // Counters (server thread only; the caller publishes them).
  std::uint64_t handshakes() const noexcept { return handshakes_; }            // hello_acks produced
  std::uint64_t sessions() const noexcept { return sessions_; }                // sessions that became live
  std::uint64_t sessions_expired() const noexcept { return expired_; }
  std::uint64_t goodbyes() const noexcept { return goodbyes_; }
  std::uint64_t pending_evicted() const noexcept { return evicted_; }          // pending handshakes recycled
  std::uint64_t limits_refused() const noexcept { return limits_refused_; }    // hellos refused: limits digest

 private:
  struct Slot {
    bool active = false;
    sockaddr_in addr{};
    std::uint32_t client_session_id = 0;
    std::uint8_t client_nonce[kNonceBytes] = {};
    std::uint8_t server_nonce[kNonceBytes] = {};
    std::int64_t created_ns = 0;
    std::int64_t last_heard_ns = 0;
    SessionKeys keys;
    protocol::SequenceTracker tracker;
  };
  void fill_ack(const Slot& slot, const protocol::Packet& hello, std::int64_t now_ns, protocol::Packet& reply) const;
  void open_slot(Slot& slot, const sockaddr_in& from, std::uint32_t client_session_id, const std::uint8_t* client_nonce,
                 std::int64_t now_ns) noexcept;

  std::string key_;
  HmacSha256Key hello_key_;
  protocol::Role own_role_, client_role_;
  std::uint16_t dof_;
  std::uint32_t period_us_;
  std::int64_t session_timeout_ns_;
  std::uint64_t limits_digest_;
  std::uint32_t session_id_ = 0;
  Slot live_;
  Slot pending_[kPendingSlots];
  HmacSha256Key reply_key_;
  std::uint64_t handshakes_ = 0, sessions_ = 0, expired_ = 0, goodbyes_ = 0, evicted_ = 0, limits_refused_ = 0;
  Slot refusal_;  // the nonces and keys of the last limits-refusal ack (never live, never matched)
};

const char* client_verdict_name(ClientSession::Verdict v);
const char* server_verdict_name(ServerSession::Verdict v);

}  // namespace robot_rt::control::session
