// Heap-free codec of the ABB EGM messages the driver exchanges (robot_rt/control/egm/egm.proto, docs/egm.md):
// EgmRobot (controller -> sensor) and EgmSensor (sensor -> controller), protobuf wire format, proto2 semantics.
//
// Decoding follows protobuf's parser: fields in any order; a field seen twice overwrites a scalar and merges a
// submessage (its repeated fields append); repeated doubles packed or not; unknown fields (and known field numbers
// with an unexpected wire type) skipped, groups included; an enum value the schema does not list is ignored (proto2
// closed enums: the field stays unset). Like protobuf's Python runtime, a submessage missing a field that egm.proto
// marks `required` is accepted with that field unset (has_ flags tell). Limits that protobuf does not have: at most kMaxValues values per repeated field (kTooManyValues) and a nesting of
// unknown groups of at most kMaxGroupDepth. Nothing allocates and nothing reads outside [data, data + size).
//
// Encoding writes the fields in field-number order with proto2 presence (an absent optional field is not written)
// and repeated doubles unpacked, byte for byte what protobuf's serializer writes for the same message.
// tests/test_egm_codec.py checks both directions against the official protobuf runtime.
#pragma once

#include <cstddef>
#include <cstdint>

namespace robot_rt::control::egm {

constexpr int kMaxValues = 16;      // per repeated field (joints, signals, force, speeds)
constexpr int kMaxGroupDepth = 32;  // nesting of unknown groups that the skipper follows

enum class Status : int {
  kOk = 0,
  kTruncated,        // a field, length or value runs past the end of its (sub)message
  kBadVarint,        // more than 10 bytes
  kBadTag,           // field number 0, wire type 6/7, or an unmatched end-group
  kBadLength,        // packed doubles whose length is not a multiple of 8, or a length over 2^31
  kTooManyValues,    // a repeated field with more than kMaxValues values
  kTooDeep,          // unknown groups nested deeper than kMaxGroupDepth
  kBufferTooSmall,   // encode: the output buffer is too small
};
const char* status_name(Status s) noexcept;

// Enumerations (the values protobuf accepts; any other value leaves the field unset)
enum MessageType : std::int32_t { kMsgUndefined = 0, kMsgCommand = 1, kMsgData = 2, kMsgCorrection = 3, kMsgPathCorrection = 4 };
enum MotorState : std::int32_t { kMotorsUndefined = 0, kMotorsOn = 1, kMotorsOff = 2 };
enum MciState : std::int32_t { kMciUndefined = 0, kMciError = 1, kMciStopped = 2, kMciRunning = 3 };
enum RapidExecState : std::int32_t { kRapidUndefined = 0, kRapidStopped = 1, kRapidRunning = 2 };

struct Values {  // a repeated double (EgmJoints.joints, EgmTestSignals.signals, ...)
  int count = 0;
  double value[kMaxValues] = {};
};

struct Header {
  bool has_seqno = false, has_tm = false, has_mtype = false;
  std::uint32_t seqno = 0;
  std::uint32_t tm = 0;  // ms
  std::int32_t mtype = kMsgUndefined;
};

struct Cartesian {  // mm
  bool has_x = false, has_y = false, has_z = false;
  double x = 0, y = 0, z = 0;
};
struct Quaternion {
  bool has_u0 = false, has_u1 = false, has_u2 = false, has_u3 = false;
  double u0 = 0, u1 = 0, u2 = 0, u3 = 0;
};
struct Euler {  // degrees
  bool has_x = false, has_y = false, has_z = false;
  double x = 0, y = 0, z = 0;
};
struct Pose {
  bool has_pos = false, has_orient = false, has_euler = false;
  Cartesian pos;
  Quaternion orient;
  Euler euler;
};
struct Clock {
  bool has_sec = false, has_usec = false;
  std::uint64_t sec = 0, usec = 0;
};

// EgmFeedBack and EgmPlanned share their layout (joints, cartesian, externalJoints, time).
struct JointsPoseTime {
  bool has_joints = false, has_cartesian = false, has_external_joints = false, has_time = false;
  Values joints;  // degrees (revolute) / mm (linear)
  Pose cartesian;
  Values external_joints;
  Clock time;
};

struct SpeedRef {
  bool has_joints = false, has_cartesians = false, has_external_joints = false;
  Values joints;  // degrees/s
  Values cartesians;
  Values external_joints;
};

// EgmMotorState, EgmMCIState, EgmRapidCtrlExecState: one (required) enum field `state`.
struct StateMessage {
  bool has_state = false;
  std::int32_t state = 0;
};

struct Robot {
  bool has_header = false, has_feedback = false, has_planned = false, has_motor_state = false,
       has_mci_state = false, has_mci_convergence_met = false, has_test_signals = false,
       has_rapid_exec_state = false, has_measured_force = false, has_utilization_rate = false;
  Header header;
  JointsPoseTime feedback;
  JointsPoseTime planned;
  StateMessage motor_state;  // MotorState values
  StateMessage mci_state;    // MciState values
  bool mci_convergence_met = false;
  Values test_signals;
  StateMessage rapid_exec_state;  // RapidExecState values
  Values measured_force;
  double utilization_rate = 0.0;
};

struct Sensor {
  bool has_header = false, has_planned = false, has_speed_ref = false;
  Header header;
  JointsPoseTime planned;
  SpeedRef speed_ref;
};

// Decode into `out`, which is reset first. On failure `out` holds what was read before the error.
Status decode_robot(const std::uint8_t* data, std::size_t size, Robot& out) noexcept;
Status decode_sensor(const std::uint8_t* data, std::size_t size, Sensor& out) noexcept;

// Encode into [buffer, buffer + capacity); `written` gets the size. Every field is written when its has_ flag is set
// (also egm.proto's `required` ones: protobuf refuses to serialize a message without them, so set them).
Status encode_robot(const Robot& message, std::uint8_t* buffer, std::size_t capacity, std::size_t& written) noexcept;
Status encode_sensor(const Sensor& message, std::uint8_t* buffer, std::size_t capacity, std::size_t& written) noexcept;

}  // namespace robot_rt::control::egm
