// Binary UDP protocol between the control loop, the robot (or its simulator) and the camera stream.
// Specification: docs/protocol.md (version 3). Python mirror: robot_rt/control/protocol.py.
//
// Every datagram: [32-byte header][payload][CRC-32][optional 32-byte HMAC-SHA256 tag], little-endian.
// encode() and decode() use no heap and never read or write outside the buffers they are given;
// decode() checks the exact length, magic, version, CRC, tag, type, payload size and every value
// (finite floats, zero reserved fields, counts within bounds) before it reports kOk.
// Which key tags a datagram (the long-term key for a hello, a per-session key for everything else) is the
// session layer's business (session.hpp); the codec takes the key it is given.
#pragma once

#include <cstddef>
#include <cstdint>

#include "sha256.hpp"

namespace robot_rt::control::protocol {

constexpr std::uint8_t kMagic[4] = {'R', 'R', 'T', 'P'};
constexpr std::uint8_t kVersion = 3;  // 3: hello / hello_ack carry the joint-limits digest
constexpr std::size_t kHeaderBytes = 32;
constexpr std::size_t kChecksumBytes = 4;
constexpr std::size_t kTagBytes = kSha256DigestBytes;
constexpr std::size_t kMaxJoints = 16;
constexpr std::size_t kMaxBalls = 16;
constexpr std::size_t kBallObservationBytes = 40;
constexpr std::size_t kNonceBytes = 16;
constexpr std::size_t kJointStateHeadBytes = 32;
constexpr std::size_t kMaxPayloadBytes = kJointStateHeadBytes + 16 * kMaxJoints > 8 + kBallObservationBytes * kMaxBalls
                                             ? kJointStateHeadBytes + 16 * kMaxJoints
                                             : 8 + kBallObservationBytes * kMaxBalls;
constexpr std::size_t kMaxPacketBytes = kHeaderBytes + kMaxPayloadBytes + kChecksumBytes + kTagBytes;

// Header flags.
constexpr std::uint16_t kFlagTag = 0x0001;  // an HMAC-SHA256 tag follows the checksum
constexpr std::uint16_t kKnownFlags = kFlagTag;

enum class MessageType : std::uint8_t {
  kHello = 1,
  kHeartbeat = 2,
  kJointState = 3,
  kJointCommand = 4,
  kBallObservations = 5,
  kHelloAck = 6,
  kGoodbye = 7,
};

// Hello roles.
enum class Role : std::uint16_t {
  kController = 1,        // the control loop, talking to a robot
  kRobotServer = 2,       // the robot bridge (answers a controller's hello)
  kCameraSubscriber = 3,  // a receiver of ball observations
  kCameraServer = 4,      // the camera (answers a subscriber's hello)
};

// Goodbye.reason
constexpr std::uint32_t kGoodbyeStop = 0;         // the sender ends the session (controller stop, server shutdown)
constexpr std::uint32_t kGoodbyeSessionLost = 1;  // the client gives a silent session up before a new handshake
// the controller ends its session in a safety stop nobody recovered: the robot counts it as a stop of its own, so
// the next controller must recover before it moves the robot (docs/protocol.md, "Robot-side stops")
constexpr std::uint32_t kGoodbyeStopped = 2;
constexpr std::uint32_t kGoodbyeMaxReason = 2;

// JointState.status bits.
constexpr std::uint16_t kStatusHolding = 0x0001;  // no fresh command: the robot brakes and holds
constexpr std::uint16_t kStatusClamped = 0x0002;  // the last command was clamped into the joint limits
constexpr std::uint16_t kStatusFault = 0x0004;    // the robot reports a fault (it ignores commands)
constexpr std::uint16_t kStatusEstop = 0x0008;    // the robot's e-stop input is pressed
// its last own stop (robot_stops) has not been acknowledged by any controller yet: a controller connecting for the
// first time must not adopt it (docs/protocol.md "Robot-side stops")
constexpr std::uint16_t kStatusStopUnacknowledged = 0x0010;
constexpr std::uint16_t kKnownStatus =
    kStatusHolding | kStatusClamped | kStatusFault | kStatusEstop | kStatusStopUnacknowledged;

// JointCommand.mode
constexpr std::uint16_t kModePosition = 0;          // velocity must be all zero
constexpr std::uint16_t kModePositionVelocity = 1;  // position target with velocity feed-forward

struct Header {
  MessageType type = MessageType::kHeartbeat;
  std::uint16_t flags = 0;       // set by encode() (kFlagTag when a key is given); reported by decode()
  std::uint32_t session_id = 0;  // server: random per start (a change: it restarted); client: random per handshake
  std::uint64_t sequence = 0;    // per sender and session, +1 per datagram sent (any type)
  std::uint64_t stamp_ns = 0;    // sender's monotonic clock at send time
};

// Client -> server, tagged with the long-term key: opens a handshake.
struct Hello {
  std::uint16_t role = 0;
  std::uint16_t dof = 0;        // joints the sender expects / has (0 for camera roles)
  std::uint32_t period_us = 0;  // the sender's nominal period (0: unspecified)
  std::uint8_t nonce[kNonceBytes] = {};  // the client's fresh nonce
  std::uint64_t limits_digest = 0;       // limits_digest() of the joint limits the client expects (0: camera roles)
};

// Server -> client, tagged with the new session's server-to-client key (key confirmation): answers a hello.
struct HelloAck {
  std::uint16_t role = 0;
  std::uint16_t dof = 0;
  std::uint32_t period_us = 0;
  std::uint32_t client_session_id = 0;           // echo of the hello's header session id
  std::uint8_t client_nonce[kNonceBytes] = {};   // echo of the hello's nonce
  std::uint8_t server_nonce[kNonceBytes] = {};   // the server's fresh nonce
  std::uint64_t echo_hello_stamp_ns = 0;         // t1: the hello's stamp_ns (client clock)
  std::uint64_t hello_receive_ns = 0;            // t2: when the server received it (server clock)
  std::uint64_t limits_digest = 0;               // limits_digest() of the server's joint limits (0: camera roles)
};

struct Heartbeat {
  std::uint64_t echo_sequence = 0;    // the peer's last accepted sequence
  std::uint64_t echo_stamp_ns = 0;    // and its stamp_ns (peer clock), for round trips
  std::uint64_t echo_receive_ns = 0;  // when it was received (own clock): the peer's clock-offset sample
};

struct Goodbye {
  std::uint32_t reason = kGoodbyeStop;
};

struct JointState {
  std::uint16_t dof = 0;
  std::uint16_t status = 0;
  // The robot's own stops so far (e-stop input, fault, blocked joint: docs/protocol.md "Robot-side stops"); after
  // one, the robot applies only commands that acknowledge this count (JointCommand::robot_stops_acknowledged).
  std::uint32_t robot_stops = 0;
  std::uint64_t echo_command_sequence = 0;  // the last command applied (0: none yet)
  std::uint64_t echo_command_stamp_ns = 0;  // its stamp_ns (controller's clock)
  std::uint64_t echo_command_receive_ns = 0;  // when the robot received it (robot clock; 0: none yet)
  double position[kMaxJoints] = {};         // m or rad
  double velocity[kMaxJoints] = {};         // m/s or rad/s
};

struct JointCommand {
  std::uint16_t dof = 0;
  std::uint16_t mode = kModePosition;
  // The robot's stop count (JointState::robot_stops) the controller has acknowledged by a recovery (or a start).
  std::uint32_t robot_stops_acknowledged = 0;
  double position[kMaxJoints] = {};
  double velocity[kMaxJoints] = {};
};

struct BallObservation {
  std::uint64_t capture_age_ns = 0;  // send time minus exposure time (clock-independent latency)
  std::uint32_t frame_id = 0;
  float confidence = 0.0f;  // [0, 1]
  double position_m[3] = {0.0, 0.0, 0.0};
};

struct BallObservations {
  std::uint16_t count = 0;  // 0 is valid: a frame without a detection
  std::uint16_t camera_id = 0;
  BallObservation obs[kMaxBalls];
};

struct Packet {
  Header header;
  // Only the member matching header.type is meaningful.
  Hello hello;
  HelloAck hello_ack;
  Heartbeat heartbeat;
  Goodbye goodbye;
  JointState state;
  JointCommand command;
  BallObservations balls;
};

enum class Status : std::uint8_t {
  kOk = 0,
  kTooShort,        // fewer bytes than a header plus checksum
  kTooLong,         // more than kMaxPacketBytes
  kBadMagic,
  kBadVersion,
  kBadLength,       // payload_length inconsistent with the datagram size or the message type
  kBadChecksum,
  kMissingTag,      // a key is configured but the packet carries no tag
  kUnexpectedTag,   // the packet carries a tag but no key is configured
  kBadTag,
  kBadType,
  kBadValue,        // non-finite float, non-zero reserved field, unknown flag/status/mode/role, count out of range
  kBufferTooSmall,  // encode only
};
constexpr int kStatusCount = 13;

const char* status_name(Status status);

// Payload size of a message (given its dof / ball count); 0 for an invalid count.
std::size_t payload_bytes(MessageType type, std::size_t count);

// Encodes `packet` (the member selected by header.type) into out[0, capacity). With a non-null, non-empty
// key the tag flag is set and the HMAC-SHA256 tag appended. Returns the datagram size, or 0 when the
// packet is invalid (values that decode() would reject) or the buffer is too small; `status` (optional)
// tells which.
std::size_t encode(const Packet& packet, const HmacSha256Key* key, std::uint8_t* out, std::size_t capacity,
                   Status* status = nullptr);

// Decodes one datagram. `key` null or empty: packets with a tag are rejected (kUnexpectedTag); otherwise
// packets without a valid tag are rejected. On any status other than kOk the contents of `out` are
// unspecified and must not be used.
Status decode(const std::uint8_t* data, std::size_t size, const HmacSha256Key* key, Packet& out);

// The framing checks of decode() only (steps 1-4 of docs/protocol.md: size, magic, version, length, checksum)
// and the header fields, so a receiver can choose the key that must verify the tag (the session layer).
// Nothing is authenticated yet: the fields may only select a key or a session, never be acted upon.
struct Frame {
  std::uint8_t type = 0;  // raw type byte (may be unknown)
  std::uint16_t flags = 0;
  std::uint32_t session_id = 0;
  std::uint64_t sequence = 0;
  std::uint64_t stamp_ns = 0;
  std::size_t payload_bytes = 0;
};
Status peek(const std::uint8_t* data, std::size_t size, Frame& out);

// The server nonce of a hello_ack that passed peek() (it selects the session key that must verify the tag);
// false when the frame is not a hello_ack of the right size.
bool peek_server_nonce(const std::uint8_t* data, std::size_t size, std::uint8_t nonce[kNonceBytes]);

// Fingerprint of a robot's joint limits, exchanged in the handshake so that a controller and a robot that disagree on
// them never open a session (docs/protocol.md, "Joint-limits digest"): the first 8 bytes, read little-endian, of
// SHA-256("RRTP joint limits" || u16 dof || per joint f64 position_min, position_max, velocity, acceleration, jerk
// [|| u64 geometry]), all little-endian. `geometry` (0: not stated, nothing appended) is the digest of the whole
// robot's kinematic chain, paddle mount and workspace box (robot_rt.robot.geometry_digest): the workspace the
// controller's safety filter keeps the paddle in is only right for the robot whose chain it was computed with.
// 0 is reserved for "no limits stated" (camera roles): a digest that would be 0 is reported as 1. Returns 0 for a
// dof outside 1..kMaxJoints.
constexpr char kLimitsDigestLabel[] = "RRTP joint limits";
std::uint64_t limits_digest(std::size_t dof, const double* position_min, const double* position_max,
                            const double* velocity, const double* acceleration, const double* jerk,
                            std::uint64_t geometry = 0) noexcept;

// Receiver-side sequence bookkeeping for one peer (docs/protocol.md, "Ordering").
class SequenceTracker {
 public:
  enum class Verdict : std::uint8_t {
    kAccept,      // newer than anything accepted in this session
    kNewSession,  // first packet, or a new session id: accepted, history reset (the session layer decides
                  // whether a new session id may appear at all)
    kDuplicate,   // a sequence already accepted (within the last 64)
    kStale,       // older than the newest accepted (reordered or late): dropped
  };
  Verdict check(std::uint32_t session_id, std::uint64_t sequence);
  void reset() { started_ = false; }
  bool started() const { return started_; }
  std::uint32_t session_id() const { return session_; }
  std::uint64_t last_sequence() const { return last_; }
  std::uint64_t gaps() const { return gaps_; }  // sequences skipped by accepted packets (lost or reordered)

 private:
  bool started_ = false;
  std::uint32_t session_ = 0;
  std::uint64_t last_ = 0;
  std::uint64_t window_ = 0;  // bit i: sequence last_ - i was accepted
  std::uint64_t gaps_ = 0;
};

}  // namespace robot_rt::control::protocol
