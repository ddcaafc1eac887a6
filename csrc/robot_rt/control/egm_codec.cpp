#include "egm_codec.hpp"

#include <cstring>
#include <initializer_list>

namespace robot_rt::control::egm {

const char* status_name(Status s) noexcept {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kTruncated: return "truncated";
    case Status::kBadVarint: return "bad_varint";
    case Status::kBadTag: return "bad_tag";
    case Status::kBadLength: return "bad_length";
    case Status::kTooManyValues: return "too_many_values";
    case Status::kTooDeep: return "too_deep";
    case Status::kBufferTooSmall: return "buffer_too_small";
  }
  return "unknown";
}

namespace {

enum Wire : std::uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kStartGroup = 3, kEndGroup = 4, kFixed32 = 5 };

// ------------------------------------------------------------------------------------------------ decoding
struct Reader {
  const std::uint8_t* p;
  const std::uint8_t* end;
  bool done() const noexcept { return p >= end; }
};

#define EGM_TRY(expr)                              \
  do {                                             \
    const Status egm_status_ = (expr);             \
    if (egm_status_ != Status::kOk) return egm_status_; \
  } while (0)

Status read_varint(Reader& r, std::uint64_t& out) noexcept {
  std::uint64_t value = 0;
  for (int i = 0; i < 10; ++i) {
    if (r.p >= r.end) return Status::kTruncated;
    const std::uint8_t byte = *r.p++;
    value |= static_cast<std::uint64_t>(byte & 0x7F) << (7 * i);  // bits past 64 in the 10th byte are dropped
    if (!(byte & 0x80)) {
      out = value;
      return Status::kOk;
    }
  }
  return Status::kBadVarint;
}

Status read_fixed64(Reader& r, std::uint64_t& out) noexcept {
  if (r.end - r.p < 8) return Status::kTruncated;
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | r.p[i];  // little-endian on the wire, whatever the host
  r.p += 8;
  out = v;
  return Status::kOk;
}

double bits_to_double(std::uint64_t bits) noexcept {
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

Status read_length(Reader& r, Reader& sub) noexcept {
  std::uint64_t n = 0;
  EGM_TRY(read_varint(r, n));
  if (n > 0x7FFFFFFFull) return Status::kBadLength;
  if (static_cast<std::uint64_t>(r.end - r.p) < n) return Status::kTruncated;
  sub.p = r.p;
  sub.end = r.p + n;
  r.p += n;
  return Status::kOk;
}

Status read_tag(Reader& r, std::uint32_t& field, std::uint32_t& wire) noexcept {
  std::uint64_t tag = 0;
  EGM_TRY(read_varint(r, tag));
  if (tag > 0xFFFFFFFFull) return Status::kBadTag;  // protobuf tags are 32-bit
  field = static_cast<std::uint32_t>(tag >> 3);
  wire = static_cast<std::uint32_t>(tag & 7);
  if (field == 0 || wire > kFixed32) return Status::kBadTag;
  return Status::kOk;
}

// Skips one field whose tag was read. A group is skipped up to its matching end-group tag.
Status skip_field(Reader& r, std::uint32_t field, std::uint32_t wire) noexcept {
  switch (wire) {
    case kVarint: {
      std::uint64_t v;
      return read_varint(r, v);
    }
    case kFixed64:
      if (r.end - r.p < 8) return Status::kTruncated;
      r.p += 8;
      return Status::kOk;
    case kFixed32:
      if (r.end - r.p < 4) return Status::kTruncated;
      r.p += 4;
      return Status::kOk;
    case kLengthDelimited: {
      Reader sub{};
      return read_length(r, sub);
    }
    case kStartGroup: {
      std::uint32_t open[kMaxGroupDepth];  // field numbers of the groups being skipped
      int depth = 0;
      open[depth++] = field;
      while (depth > 0) {
        if (r.done()) return Status::kTruncated;
        std::uint32_t f = 0, w = 0;
        EGM_TRY(read_tag(r, f, w));
        if (w == kEndGroup) {
          if (f != open[depth - 1]) return Status::kBadTag;
          --depth;
        } else if (w == kStartGroup) {
          if (depth == kMaxGroupDepth) return Status::kTooDeep;
          open[depth++] = f;
        } else {
          EGM_TRY(skip_field(r, f, w));
        }
      }
      return Status::kOk;
    }
    default:  // an end-group tag without its start
      return Status::kBadTag;
  }
}

Status read_double(Reader& r, double& out) noexcept {
  std::uint64_t bits = 0;
  EGM_TRY(read_fixed64(r, bits));
  out = bits_to_double(bits);
  return Status::kOk;
}

// A repeated double: one value (wire type 1) or packed (wire type 2).
Status read_values(Reader& r, std::uint32_t wire, Values& out) noexcept {
  if (wire == kFixed64) {
    if (out.count == kMaxValues) return Status::kTooManyValues;
    return read_double(r, out.value[out.count++]);
  }
  Reader sub{};
  EGM_TRY(read_length(r, sub));
  const std::size_t n = static_cast<std::size_t>(sub.end - sub.p);
  if (n % 8 != 0) return Status::kBadLength;
  if (static_cast<std::size_t>(out.count) + n / 8 > static_cast<std::size_t>(kMaxValues)) return Status::kTooManyValues;
  while (!sub.done()) EGM_TRY(read_double(sub, out.value[out.count++]));
  return Status::kOk;
}

bool known_enum(std::int32_t value, std::int32_t last) noexcept { return value >= 0 && value <= last; }

// Reads an enum value; an unknown value leaves the field as it was (proto2 closed enum).
Status read_enum(Reader& r, std::int32_t last, bool& has, std::int32_t& out) noexcept {
  std::uint64_t v = 0;
  EGM_TRY(read_varint(r, v));
  const std::int32_t value = static_cast<std::int32_t>(static_cast<std::uint32_t>(v));
  if (known_enum(value, last)) {
    out = value;
    has = true;
  }
  return Status::kOk;
}

// A message body: calls field(reader, number, wire) for each field; the callback returns kOk after reading a known
// field, or `kSkip` to have it skipped as unknown.
constexpr Status kSkip = static_cast<Status>(-1);

template <typename Fn>
Status parse_fields(Reader r, Fn&& field) noexcept {
  while (!r.done()) {
    std::uint32_t number = 0, wire = 0;
    EGM_TRY(read_tag(r, number, wire));
    if (wire == kEndGroup) return Status::kBadTag;
    const Status s = field(r, number, wire);
    if (s == kSkip) {
      EGM_TRY(skip_field(r, number, wire));
    } else if (s != Status::kOk) {
      return s;
    }
  }
  return Status::kOk;
}

// Submessage field: reads the length and parses the body into `out` (merging into what is there).
template <typename Fn>
Status parse_submessage(Reader& r, Fn&& body) noexcept {
  Reader sub{};
  EGM_TRY(read_length(r, sub));
  return body(sub);
}

Status parse_header(Reader r, Header& h) noexcept {
  return parse_fields(r, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    std::uint64_t v = 0;
    switch (number) {
      case 1:
        if (wire != kVarint) return kSkip;
        EGM_TRY(read_varint(in, v));
        h.seqno = static_cast<std::uint32_t>(v);
        h.has_seqno = true;
        return Status::kOk;
      case 2:
        if (wire != kVarint) return kSkip;
        EGM_TRY(read_varint(in, v));
        h.tm = static_cast<std::uint32_t>(v);
        h.has_tm = true;
        return Status::kOk;
      case 3:
        if (wire != kVarint) return kSkip;
        return read_enum(in, kMsgPathCorrection, h.has_mtype, h.mtype);
      default:
        return kSkip;
    }
  });
}

// Three or four doubles with field numbers 1.. (EgmCartesian, EgmEuler, EgmQuaternion).
Status parse_doubles(Reader r, int n, double* values, bool* has) noexcept {
  return parse_fields(r, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    if (number < 1 || number > static_cast<std::uint32_t>(n) || wire != kFixed64) return kSkip;
    EGM_TRY(read_double(in, values[number - 1]));
    has[number - 1] = true;
    return Status::kOk;
  });
}

Status parse_cartesian(Reader r, Cartesian& c) noexcept {
  double v[3] = {c.x, c.y, c.z};
  bool h[3] = {c.has_x, c.has_y, c.has_z};
  const Status s = parse_doubles(r, 3, v, h);
  c.x = v[0], c.y = v[1], c.z = v[2];
  c.has_x = h[0], c.has_y = h[1], c.has_z = h[2];
  return s;
}

Status parse_euler(Reader r, Euler& e) noexcept {
  double v[3] = {e.x, e.y, e.z};
  bool h[3] = {e.has_x, e.has_y, e.has_z};
  const Status s = parse_doubles(r, 3, v, h);
  e.x = v[0], e.y = v[1], e.z = v[2];
  e.has_x = h[0], e.has_y = h[1], e.has_z = h[2];
  return s;
}

Status parse_quaternion(Reader r, Quaternion& q) noexcept {
  double v[4] = {q.u0, q.u1, q.u2, q.u3};
  bool h[4] = {q.has_u0, q.has_u1, q.has_u2, q.has_u3};
  const Status s = parse_doubles(r, 4, v, h);
  q.u0 = v[0], q.u1 = v[1], q.u2 = v[2], q.u3 = v[3];
  q.has_u0 = h[0], q.has_u1 = h[1], q.has_u2 = h[2], q.has_u3 = h[3];
  return s;
}

Status parse_pose(Reader r, Pose& p) noexcept {
  return parse_fields(r, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    if (wire != kLengthDelimited || number < 1 || number > 3) return kSkip;
    Reader sub{};
    EGM_TRY(read_length(in, sub));
    if (number == 1) {
      p.has_pos = true;
      return parse_cartesian(sub, p.pos);
    }
    if (number == 2) {
      p.has_orient = true;
      return parse_quaternion(sub, p.orient);
    }
    p.has_euler = true;
    return parse_euler(sub, p.euler);
  });
}

Status parse_clock(Reader r, Clock& c) noexcept {
  return parse_fields(r, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    if (wire != kVarint || number < 1 || number > 2) return kSkip;
    std::uint64_t v = 0;
    EGM_TRY(read_varint(in, v));
    if (number == 1) {
      c.sec = v;
      c.has_sec = true;
    } else {
      c.usec = v;
      c.has_usec = true;
    }
    return Status::kOk;
  });
}

// A message whose field 1 is a repeated double (EgmJoints, EgmTestSignals, EgmMeasuredForce, EgmCartesianSpeed).
Status parse_values(Reader r, Values& out) noexcept {
  return parse_fields(r, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    if (number != 1 || (wire != kFixed64 && wire != kLengthDelimited)) return kSkip;
    return read_values(in, wire, out);
  });
}

Status parse_joints_pose_time(Reader r, JointsPoseTime& m) noexcept {
  return parse_fields(r, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    if (wire != kLengthDelimited || number < 1 || number > 4) return kSkip;
    Reader sub{};
    EGM_TRY(read_length(in, sub));
    switch (number) {
      case 1:
        m.has_joints = true;
        return parse_values(sub, m.joints);
      case 2:
        m.has_cartesian = true;
        return parse_pose(sub, m.cartesian);
      case 3:
        m.has_external_joints = true;
        return parse_values(sub, m.external_joints);
      default:
        m.has_time = true;
        return parse_clock(sub, m.time);
    }
  });
}

Status parse_speed_ref(Reader r, SpeedRef& m) noexcept {
  return parse_fields(r, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    if (wire != kLengthDelimited || number < 1 || number > 3) return kSkip;
    Reader sub{};
    EGM_TRY(read_length(in, sub));
    if (number == 1) {
      m.has_joints = true;
      return parse_values(sub, m.joints);
    }
    if (number == 2) {
      m.has_cartesians = true;
      return parse_values(sub, m.cartesians);
    }
    m.has_external_joints = true;
    return parse_values(sub, m.external_joints);
  });
}

// A message whose only field 1 is a required enum (EgmMotorState, EgmMCIState, EgmRapidCtrlExecState).
Status parse_state(Reader r, std::int32_t last, StateMessage& m) noexcept {
  return parse_fields(r, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    if (number != 1 || wire != kVarint) return kSkip;
    return read_enum(in, last, m.has_state, m.state);
  });
}

// ------------------------------------------------------------------------------------------------ encoding
std::size_t varint_size(std::uint64_t v) noexcept {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

struct Writer {
  std::uint8_t* p;
  std::uint8_t* end;
  bool overflow = false;
  void byte(std::uint8_t b) noexcept {
    if (p < end) {
      *p++ = b;
    } else {
      overflow = true;
    }
  }
  void varint(std::uint64_t v) noexcept {
    while (v >= 0x80) {
      byte(static_cast<std::uint8_t>(v | 0x80));
      v >>= 7;
    }
    byte(static_cast<std::uint8_t>(v));
  }
  void tag(std::uint32_t field, std::uint32_t wire) noexcept { varint((static_cast<std::uint64_t>(field) << 3) | wire); }
  void fixed64(double d) noexcept {
    std::uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    for (int i = 0; i < 8; ++i) byte(static_cast<std::uint8_t>(bits >> (8 * i)));
  }
  void double_field(std::uint32_t field, double d) noexcept {
    tag(field, kFixed64);
    fixed64(d);
  }
  void enum_field(std::uint32_t field, std::int32_t v) noexcept {
    tag(field, kVarint);
    varint(static_cast<std::uint64_t>(static_cast<std::int64_t>(v)));  // negative: 10 bytes, as protobuf
  }
  void begin(std::uint32_t field, std::size_t size) noexcept {
    tag(field, kLengthDelimited);
    varint(size);
  }
};

std::size_t tag_size(std::uint32_t field) noexcept { return varint_size(static_cast<std::uint64_t>(field) << 3); }
std::size_t enum_size(std::int32_t v) noexcept { return varint_size(static_cast<std::uint64_t>(static_cast<std::int64_t>(v))); }
std::size_t sub_size(std::uint32_t field, std::size_t body) noexcept { return tag_size(field) + varint_size(body) + body; }

// sizes of the message bodies
std::size_t values_size(const Values& v) noexcept { return static_cast<std::size_t>(v.count) * (1 + 8); }
std::size_t header_size(const Header& h) noexcept {
  return (h.has_seqno ? 1 + varint_size(h.seqno) : 0) + (h.has_tm ? 1 + varint_size(h.tm) : 0) +
         (h.has_mtype ? 1 + enum_size(h.mtype) : 0);
}
std::size_t doubles_size(std::initializer_list<bool> present) noexcept {
  std::size_t n = 0;
  for (bool p : present) n += p ? 9 : 0;
  return n;
}
std::size_t cartesian_size(const Cartesian& c) noexcept { return doubles_size({c.has_x, c.has_y, c.has_z}); }
std::size_t euler_size(const Euler& e) noexcept { return doubles_size({e.has_x, e.has_y, e.has_z}); }
std::size_t quaternion_size(const Quaternion& q) noexcept { return doubles_size({q.has_u0, q.has_u1, q.has_u2, q.has_u3}); }
std::size_t pose_size(const Pose& p) noexcept {
  return (p.has_pos ? sub_size(1, cartesian_size(p.pos)) : 0) + (p.has_orient ? sub_size(2, quaternion_size(p.orient)) : 0) +
         (p.has_euler ? sub_size(3, euler_size(p.euler)) : 0);
}
std::size_t clock_size(const Clock& c) noexcept {
  return (c.has_sec ? 1 + varint_size(c.sec) : 0) + (c.has_usec ? 1 + varint_size(c.usec) : 0);
}
std::size_t jpt_size(const JointsPoseTime& m) noexcept {
  return (m.has_joints ? sub_size(1, values_size(m.joints)) : 0) +
         (m.has_cartesian ? sub_size(2, pose_size(m.cartesian)) : 0) +
         (m.has_external_joints ? sub_size(3, values_size(m.external_joints)) : 0) +
         (m.has_time ? sub_size(4, clock_size(m.time)) : 0);
}
std::size_t speed_ref_size(const SpeedRef& m) noexcept {
  return (m.has_joints ? sub_size(1, values_size(m.joints)) : 0) +
         (m.has_cartesians ? sub_size(2, values_size(m.cartesians)) : 0) +
         (m.has_external_joints ? sub_size(3, values_size(m.external_joints)) : 0);
}
std::size_t state_size(const StateMessage& m) noexcept { return m.has_state ? 1 + enum_size(m.state) : 0; }

void write_values(Writer& w, std::uint32_t field, const Values& v) noexcept {
  w.begin(field, values_size(v));
  for (int i = 0; i < v.count; ++i) w.double_field(1, v.value[i]);
}
void write_header(Writer& w, std::uint32_t field, const Header& h) noexcept {
  w.begin(field, header_size(h));
  if (h.has_seqno) {
    w.tag(1, kVarint);
    w.varint(h.seqno);
  }
  if (h.has_tm) {
    w.tag(2, kVarint);
    w.varint(h.tm);
  }
  if (h.has_mtype) w.enum_field(3, h.mtype);
}
void write_pose(Writer& w, std::uint32_t field, const Pose& p) noexcept {
  w.begin(field, pose_size(p));
  if (p.has_pos) {
    w.begin(1, cartesian_size(p.pos));
    if (p.pos.has_x) w.double_field(1, p.pos.x);
    if (p.pos.has_y) w.double_field(2, p.pos.y);
    if (p.pos.has_z) w.double_field(3, p.pos.z);
  }
  if (p.has_orient) {
    w.begin(2, quaternion_size(p.orient));
    if (p.orient.has_u0) w.double_field(1, p.orient.u0);
    if (p.orient.has_u1) w.double_field(2, p.orient.u1);
    if (p.orient.has_u2) w.double_field(3, p.orient.u2);
    if (p.orient.has_u3) w.double_field(4, p.orient.u3);
  }
  if (p.has_euler) {
    w.begin(3, euler_size(p.euler));
    if (p.euler.has_x) w.double_field(1, p.euler.x);
    if (p.euler.has_y) w.double_field(2, p.euler.y);
    if (p.euler.has_z) w.double_field(3, p.euler.z);
  }
}
void write_jpt(Writer& w, std::uint32_t field, const JointsPoseTime& m) noexcept {
  w.begin(field, jpt_size(m));
  if (m.has_joints) write_values(w, 1, m.joints);
  if (m.has_cartesian) write_pose(w, 2, m.cartesian);
  if (m.has_external_joints) write_values(w, 3, m.external_joints);
  if (m.has_time) {
    w.begin(4, clock_size(m.time));
    if (m.time.has_sec) {
      w.tag(1, kVarint);
      w.varint(m.time.sec);
    }
    if (m.time.has_usec) {
      w.tag(2, kVarint);
      w.varint(m.time.usec);
    }
  }
}
void write_state(Writer& w, std::uint32_t field, const StateMessage& m) noexcept {
  w.begin(field, state_size(m));
  if (m.has_state) w.enum_field(1, m.state);
}

Status finish(const Writer& w, std::uint8_t* buffer, std::size_t& written) noexcept {
  if (w.overflow) {
    written = 0;
    return Status::kBufferTooSmall;
  }
  written = static_cast<std::size_t>(w.p - buffer);
  return Status::kOk;
}

}  // namespace

Status decode_robot(const std::uint8_t* data, std::size_t size, Robot& out) noexcept {
  out = Robot{};
  if (data == nullptr && size != 0) return Status::kTruncated;
  EGM_TRY(parse_fields(Reader{data, data + size}, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    if (number == 6) {
      if (wire != kVarint) return kSkip;
      std::uint64_t v = 0;
      EGM_TRY(read_varint(in, v));
      out.mci_convergence_met = v != 0;
      out.has_mci_convergence_met = true;
      return Status::kOk;
    }
    if (number == 10) {
      if (wire != kFixed64) return kSkip;
      out.has_utilization_rate = true;
      return read_double(in, out.utilization_rate);
    }
    if (number < 1 || number > 9 || wire != kLengthDelimited) return kSkip;
    Reader sub{};
    EGM_TRY(read_length(in, sub));
    switch (number) {
      case 1:
        out.has_header = true;
        return parse_header(sub, out.header);
      case 2:
        out.has_feedback = true;
        return parse_joints_pose_time(sub, out.feedback);
      case 3:
        out.has_planned = true;
        return parse_joints_pose_time(sub, out.planned);
      case 4:
        out.has_motor_state = true;
        return parse_state(sub, kMotorsOff, out.motor_state);
      case 5:
        out.has_mci_state = true;
        return parse_state(sub, kMciRunning, out.mci_state);
      case 7:
        out.has_test_signals = true;
        return parse_values(sub, out.test_signals);
      case 8:
        out.has_rapid_exec_state = true;
        return parse_state(sub, kRapidRunning, out.rapid_exec_state);
      default:  // 9
        out.has_measured_force = true;
        return parse_values(sub, out.measured_force);
    }
  }));
  return Status::kOk;
}

Status decode_sensor(const std::uint8_t* data, std::size_t size, Sensor& out) noexcept {
  out = Sensor{};
  if (data == nullptr && size != 0) return Status::kTruncated;
  EGM_TRY(parse_fields(Reader{data, data + size}, [&](Reader& in, std::uint32_t number, std::uint32_t wire) -> Status {
    if (number < 1 || number > 3 || wire != kLengthDelimited) return kSkip;
    Reader sub{};
    EGM_TRY(read_length(in, sub));
    if (number == 1) {
      out.has_header = true;
      return parse_header(sub, out.header);
    }
    if (number == 2) {
      out.has_planned = true;
      return parse_joints_pose_time(sub, out.planned);
    }
    out.has_speed_ref = true;
    return parse_speed_ref(sub, out.speed_ref);
  }));
  return Status::kOk;
}

Status encode_robot(const Robot& m, std::uint8_t* buffer, std::size_t capacity, std::size_t& written) noexcept {
  Writer w{buffer, buffer + capacity};
  if (m.has_header) write_header(w, 1, m.header);
  if (m.has_feedback) write_jpt(w, 2, m.feedback);
  if (m.has_planned) write_jpt(w, 3, m.planned);
  if (m.has_motor_state) write_state(w, 4, m.motor_state);
  if (m.has_mci_state) write_state(w, 5, m.mci_state);
  if (m.has_mci_convergence_met) {
    w.tag(6, kVarint);
    w.varint(m.mci_convergence_met ? 1 : 0);
  }
  if (m.has_test_signals) write_values(w, 7, m.test_signals);
  if (m.has_rapid_exec_state) write_state(w, 8, m.rapid_exec_state);
  if (m.has_measured_force) write_values(w, 9, m.measured_force);
  if (m.has_utilization_rate) w.double_field(10, m.utilization_rate);
  return finish(w, buffer, written);
}

Status encode_sensor(const Sensor& m, std::uint8_t* buffer, std::size_t capacity, std::size_t& written) noexcept {
  Writer w{buffer, buffer + capacity};
  if (m.has_header) write_header(w, 1, m.header);
  if (m.has_planned) write_jpt(w, 2, m.planned);
  if (m.has_speed_ref) {
    w.begin(3, speed_ref_size(m.speed_ref));
    if (m.speed_ref.has_joints) write_values(w, 1, m.speed_ref.joints);
    if (m.speed_ref.has_cartesians) write_values(w, 2, m.speed_ref.cartesians);
    if (m.speed_ref.has_external_joints) write_values(w, 3, m.speed_ref.external_joints);
  }
  return finish(w, buffer, written);
}

}  // namespace robot_rt::control::egm
