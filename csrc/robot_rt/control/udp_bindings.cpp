// Python bindings of the protocol codec, the UDP driver, the camera receiver and the sim robot server.
// Packets cross as dicts with the field names of robot_rt/control/protocol.py (tests compare the codecs).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "camera_receiver.hpp"
#include "crc32.hpp"
#include "hkdf.hpp"
#include "protocol.hpp"
#include "session.hpp"
#include "registry.hpp"
#include "sha256.hpp"
#include "sim_server.hpp"
#include "udp_driver.hpp"
#include "bare_driver.hpp"

namespace py = pybind11;

namespace robot_rt::control {
namespace {

using protocol::MessageType;

const char* type_name(MessageType t) {
  switch (t) {
    case MessageType::kHello: return "hello";
    case MessageType::kHeartbeat: return "heartbeat";
    case MessageType::kJointState: return "joint_state";
    case MessageType::kJointCommand: return "joint_command";
    case MessageType::kBallObservations: return "ball_observations";
    case MessageType::kHelloAck: return "hello_ack";
    case MessageType::kGoodbye: return "goodbye";
  }
  return "unknown";
}

MessageType type_from(const std::string& name) {
  if (name == "hello") return MessageType::kHello;
  if (name == "heartbeat") return MessageType::kHeartbeat;
  if (name == "joint_state") return MessageType::kJointState;
  if (name == "joint_command") return MessageType::kJointCommand;
  if (name == "ball_observations") return MessageType::kBallObservations;
  if (name == "hello_ack") return MessageType::kHelloAck;
  if (name == "goodbye") return MessageType::kGoodbye;
  throw py::value_error(
      "type: expected hello|hello_ack|heartbeat|joint_state|joint_command|ball_observations|goodbye, got '" + name + "'");
}

template <typename T>
T get(const py::dict& d, const char* key, T fallback) {
  return d.contains(key) ? d[key].cast<T>() : fallback;
}

std::size_t fill_joints(const py::dict& d, const char* key, double* out, std::size_t expected, bool required) {
  if (!d.contains(key)) {
    if (required) throw py::value_error(std::string(key) + ": missing");
    for (std::size_t i = 0; i < expected; ++i) out[i] = 0.0;
    return expected;
  }
  const auto values = d[key].cast<std::vector<double>>();
  if (values.empty() || values.size() > protocol::kMaxJoints)
    throw py::value_error(std::string(key) + ": expected 1.." + std::to_string(protocol::kMaxJoints) + " values");
  if (expected != 0 && values.size() != expected)
    throw py::value_error(std::string(key) + ": expected " + std::to_string(expected) + " values");
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = values[i];
  return values.size();
}

void get_nonce(const py::dict& d, const char* key, std::uint8_t out[protocol::kNonceBytes]) {
  if (!d.contains(key)) {
    std::memset(out, 0, protocol::kNonceBytes);
    return;
  }
  const std::string n = d[key].cast<std::string>();
  if (n.size() != protocol::kNonceBytes)
    throw py::value_error(std::string(key) + ": expected " + std::to_string(protocol::kNonceBytes) + " bytes");
  std::memcpy(out, n.data(), protocol::kNonceBytes);
}

py::bytes nonce_bytes(const std::uint8_t* n) { return py::bytes(reinterpret_cast<const char*>(n), protocol::kNonceBytes); }

const HmacSha256Key* make_key(const py::object& key, HmacSha256Key& storage) {
  if (key.is_none()) return nullptr;
  const std::string k = key.cast<std::string>();  // bytes or str
  if (k.empty()) return nullptr;
  storage.set(reinterpret_cast<const std::uint8_t*>(k.data()), k.size());
  return &storage;
}

py::bytes encode_packet(const py::dict& d, const py::object& key) {
  protocol::Packet p;
  p.header.type = type_from(d["type"].cast<std::string>());
  p.header.session_id = get<std::uint32_t>(d, "session_id", 0);
  p.header.sequence = get<std::uint64_t>(d, "sequence", 0);
  p.header.stamp_ns = get<std::uint64_t>(d, "stamp_ns", 0);
  switch (p.header.type) {
    case MessageType::kHello:
      p.hello.role = get<std::uint16_t>(d, "role", 0);
      p.hello.dof = get<std::uint16_t>(d, "dof", 0);
      p.hello.period_us = get<std::uint32_t>(d, "period_us", 0);
      get_nonce(d, "nonce", p.hello.nonce);
      p.hello.limits_digest = get<std::uint64_t>(d, "limits_digest", 0);
      break;
    case MessageType::kHelloAck: {
      auto& a = p.hello_ack;
      a.role = get<std::uint16_t>(d, "role", 0);
      a.dof = get<std::uint16_t>(d, "dof", 0);
      a.period_us = get<std::uint32_t>(d, "period_us", 0);
      a.client_session_id = get<std::uint32_t>(d, "client_session_id", 0);
      get_nonce(d, "client_nonce", a.client_nonce);
      get_nonce(d, "server_nonce", a.server_nonce);
      a.echo_hello_stamp_ns = get<std::uint64_t>(d, "echo_hello_stamp_ns", 0);
      a.hello_receive_ns = get<std::uint64_t>(d, "hello_receive_ns", 0);
      a.limits_digest = get<std::uint64_t>(d, "limits_digest", 0);
      break;
    }
    case MessageType::kHeartbeat:
      p.heartbeat.echo_sequence = get<std::uint64_t>(d, "echo_sequence", 0);
      p.heartbeat.echo_stamp_ns = get<std::uint64_t>(d, "echo_stamp_ns", 0);
      p.heartbeat.echo_receive_ns = get<std::uint64_t>(d, "echo_receive_ns", 0);
      break;
    case MessageType::kGoodbye:
      p.goodbye.reason = get<std::uint32_t>(d, "reason", 0);
      break;
    case MessageType::kJointState: {
      auto& s = p.state;
      s.status = get<std::uint16_t>(d, "status", 0);
      s.robot_stops = get<std::uint32_t>(d, "robot_stops", 0);
      s.echo_command_sequence = get<std::uint64_t>(d, "echo_command_sequence", 0);
      s.echo_command_stamp_ns = get<std::uint64_t>(d, "echo_command_stamp_ns", 0);
      s.echo_command_receive_ns = get<std::uint64_t>(d, "echo_command_receive_ns", 0);
      s.dof = static_cast<std::uint16_t>(fill_joints(d, "position", s.position, 0, true));
      fill_joints(d, "velocity", s.velocity, s.dof, false);
      break;
    }
    case MessageType::kJointCommand: {
      auto& c = p.command;
      c.mode = get<std::uint16_t>(d, "mode", protocol::kModePosition);
      c.robot_stops_acknowledged = get<std::uint32_t>(d, "robot_stops_acknowledged", 0);
      c.dof = static_cast<std::uint16_t>(fill_joints(d, "position", c.position, 0, true));
      fill_joints(d, "velocity", c.velocity, c.dof, false);
      break;
    }
    case MessageType::kBallObservations: {
      auto& b = p.balls;
      b.camera_id = get<std::uint16_t>(d, "camera_id", 0);
      const py::list obs = d.contains("observations") ? py::list(d["observations"]) : py::list();
      if (obs.size() > protocol::kMaxBalls)
        throw py::value_error("observations: at most " + std::to_string(protocol::kMaxBalls));
      b.count = static_cast<std::uint16_t>(obs.size());
      for (std::size_t i = 0; i < obs.size(); ++i) {
        const py::dict o = obs[i].cast<py::dict>();
        b.obs[i].capture_age_ns = get<std::uint64_t>(o, "capture_age_ns", 0);
        b.obs[i].frame_id = get<std::uint32_t>(o, "frame_id", 0);
        b.obs[i].confidence = get<float>(o, "confidence", 0.0f);
        const auto xyz = o["position_m"].cast<std::vector<double>>();
        if (xyz.size() != 3) throw py::value_error("observations[].position_m: expected 3 values");
        for (int k = 0; k < 3; ++k) b.obs[i].position_m[k] = xyz[k];
      }
      break;
    }
  }
  HmacSha256Key storage;
  std::uint8_t out[protocol::kMaxPacketBytes];
  protocol::Status status;
  const std::size_t n = protocol::encode(p, make_key(key, storage), out, sizeof(out), &status);
  if (n == 0) throw py::value_error(std::string("packet: cannot encode (") + protocol::status_name(status) + ")");
  return py::bytes(reinterpret_cast<const char*>(out), n);
}

py::list joints(const double* v, int n) {
  py::list out;
  for (int i = 0; i < n; ++i) out.append(v[i]);
  return out;
}

py::tuple decode_packet(const py::bytes& data, const py::object& key) {
  const std::string raw = data;
  HmacSha256Key storage;
  protocol::Packet p;
  const protocol::Status status =
      protocol::decode(reinterpret_cast<const std::uint8_t*>(raw.data()), raw.size(), make_key(key, storage), p);
  if (status != protocol::Status::kOk) return py::make_tuple(protocol::status_name(status), py::none());
  py::dict d;
  d["type"] = type_name(p.header.type);
  d["flags"] = p.header.flags;
  d["session_id"] = p.header.session_id;
  d["sequence"] = p.header.sequence;
  d["stamp_ns"] = p.header.stamp_ns;
  switch (p.header.type) {
    case MessageType::kHello:
      d["role"] = p.hello.role;
      d["dof"] = p.hello.dof;
      d["period_us"] = p.hello.period_us;
      d["nonce"] = nonce_bytes(p.hello.nonce);
      d["limits_digest"] = p.hello.limits_digest;
      break;
    case MessageType::kHelloAck:
      d["role"] = p.hello_ack.role;
      d["dof"] = p.hello_ack.dof;
      d["period_us"] = p.hello_ack.period_us;
      d["client_session_id"] = p.hello_ack.client_session_id;
      d["client_nonce"] = nonce_bytes(p.hello_ack.client_nonce);
      d["server_nonce"] = nonce_bytes(p.hello_ack.server_nonce);
      d["echo_hello_stamp_ns"] = p.hello_ack.echo_hello_stamp_ns;
      d["hello_receive_ns"] = p.hello_ack.hello_receive_ns;
      d["limits_digest"] = p.hello_ack.limits_digest;
      break;
    case MessageType::kHeartbeat:
      d["echo_sequence"] = p.heartbeat.echo_sequence;
      d["echo_stamp_ns"] = p.heartbeat.echo_stamp_ns;
      d["echo_receive_ns"] = p.heartbeat.echo_receive_ns;
      break;
    case MessageType::kGoodbye:
      d["reason"] = p.goodbye.reason;
      break;
    case MessageType::kJointState:
      d["status"] = p.state.status;
      d["robot_stops"] = p.state.robot_stops;
      d["echo_command_sequence"] = p.state.echo_command_sequence;
      d["echo_command_stamp_ns"] = p.state.echo_command_stamp_ns;
      d["echo_command_receive_ns"] = p.state.echo_command_receive_ns;
      d["position"] = joints(p.state.position, p.state.dof);
      d["velocity"] = joints(p.state.velocity, p.state.dof);
      break;
    case MessageType::kJointCommand:
      d["mode"] = p.command.mode;
      d["robot_stops_acknowledged"] = p.command.robot_stops_acknowledged;
      d["position"] = joints(p.command.position, p.command.dof);
      d["velocity"] = joints(p.command.velocity, p.command.dof);
      break;
    case MessageType::kBallObservations: {
      d["camera_id"] = p.balls.camera_id;
      py::list obs;
      for (int i = 0; i < p.balls.count; ++i) {
        const auto& o = p.balls.obs[i];
        py::dict od;
        od["capture_age_ns"] = o.capture_age_ns;
        od["frame_id"] = o.frame_id;
        od["confidence"] = static_cast<double>(o.confidence);
        od["position_m"] = joints(o.position_m, 3);
        obs.append(od);
      }
      d["observations"] = obs;
      break;
    }
  }
  return py::make_tuple("ok", d);
}

py::dict counters_dict(const LinkCounters& c) {
  py::dict d;
  auto ld = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  d["rx_datagrams"] = ld(c.rx_datagrams);
  d["rx_accepted"] = ld(c.rx_accepted);
  d["rx_unexpected_source"] = ld(c.rx_unexpected_source);
  d["rx_unexpected_session"] = ld(c.rx_unexpected_session);
  d["rx_no_session"] = ld(c.rx_no_session);
  d["rx_stale_ack"] = ld(c.rx_stale_ack);
  d["rx_future"] = ld(c.rx_future);
  d["tx_no_session"] = ld(c.tx_no_session);
  d["rx_wrong_type"] = ld(c.rx_wrong_type);
  d["rx_mismatch"] = ld(c.rx_mismatch);
  d["rx_duplicate"] = ld(c.rx_duplicate);
  d["rx_stale"] = ld(c.rx_stale);
  d["rx_late"] = ld(c.rx_late);
  d["rx_lost"] = ld(c.rx_lost);
  d["rx_malformed"] = c.rx_malformed();
  py::dict rejected;
  for (int i = 1; i < protocol::kStatusCount; ++i)
    rejected[protocol::status_name(static_cast<protocol::Status>(i))] = ld(c.rx_rejected[i]);
  d["rx_rejected"] = rejected;
  d["peer_restarts"] = ld(c.peer_restarts);
  d["tx_datagrams"] = ld(c.tx_datagrams);
  d["tx_errors"] = ld(c.tx_errors);
  d["tx_invalid"] = ld(c.tx_invalid);
  d["socket_errors"] = ld(c.socket_errors);
  return d;
}

py::dict observation_dict(const BallObservation& b) {
  py::dict d;
  d["stamp_ns"] = b.stamp_ns;
  d["camera_id"] = b.camera_id;
  d["frame"] = b.frame;
  d["position_m"] = joints(b.position_m, 3);
  d["confidence"] = b.confidence;
  return d;
}

py::list read_observations(CameraReceiver& receiver, int max_count) {
  BallObservation buf[CameraReceiver::kQueueCapacity];
  const int n = receiver.read(buf, std::min(max_count, CameraReceiver::kQueueCapacity));
  py::list out;
  for (int i = 0; i < n; ++i) out.append(observation_dict(buf[i]));
  return out;
}

std::int64_t seconds_to_ns(double s, const char* name, double max_s = 3600.0) {
  if (!(s > 0.0) || s > max_s)
    throw py::value_error(std::string(name) + ": expected seconds in (0, " + py::str(py::float_(max_s)).cast<std::string>() + "]");
  return static_cast<std::int64_t>(s * 1e9);
}
// What decides whether the robot's states are fresh is capped as the loop's own watchdogs are (1 s): a link timeout or
// a lateness bound of minutes would let states that old count as the robot's current one.
constexpr double kMaxFreshnessS = 1.0;

// The wire protocol: version, limits and the codec (encode/decode, exposed for the Python mirror's tests).
void bind_protocol(py::module_& m) {
  m.attr("PROTOCOL_VERSION") = protocol::kVersion;
  m.attr("PROTOCOL_MAX_PACKET_BYTES") = protocol::kMaxPacketBytes;
  m.def(
      "crc32", [](const py::bytes& data) {
        const std::string s = data;
        return crc32(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
      },
      py::arg("data"), "CRC-32 (zlib polynomial) of bytes.");
  m.def(
      "sha256", [](const py::bytes& data) {
        const std::string s = data;
        std::uint8_t out[kSha256DigestBytes];
        sha256(reinterpret_cast<const std::uint8_t*>(s.data()), s.size(), out);
        return py::bytes(reinterpret_cast<const char*>(out), sizeof(out));
      },
      py::arg("data"), "SHA-256 digest (C++ implementation used by the protocol).");
  m.def(
      "hmac_sha256", [](const py::bytes& key, const py::bytes& data) {
        const std::string k = key, s = data;
        HmacSha256Key h(reinterpret_cast<const std::uint8_t*>(k.data()), k.size());
        std::uint8_t out[kSha256DigestBytes];
        h.tag(reinterpret_cast<const std::uint8_t*>(s.data()), s.size(), nullptr, 0, out);
        return py::bytes(reinterpret_cast<const char*>(out), sizeof(out));
      },
      py::arg("key"), py::arg("data"), "HMAC-SHA256 tag (C++ implementation used by the protocol).");
  m.def(
      "hkdf_sha256",
      [](const py::bytes& salt, const py::bytes& ikm, const py::bytes& info, std::size_t length) {
        const std::string sa = salt, ik = ikm, in = info;
        if (length > kHkdfMaxOutputBytes || in.size() > kHkdfMaxInfoBytes)
          throw py::value_error("length: at most " + std::to_string(kHkdfMaxOutputBytes) + " bytes, info: at most " +
                                std::to_string(kHkdfMaxInfoBytes) + " bytes");
        std::string out(length, '\0');
        hkdf(reinterpret_cast<const std::uint8_t*>(sa.data()), sa.size(), reinterpret_cast<const std::uint8_t*>(ik.data()),
             ik.size(), reinterpret_cast<const std::uint8_t*>(in.data()), in.size(),
             reinterpret_cast<std::uint8_t*>(out.data()), length);
        return py::bytes(out);
      },
      py::arg("salt"), py::arg("ikm"), py::arg("info"), py::arg("length"), "HKDF-SHA256 (RFC 5869), C++ implementation.");
  m.def(
      "derive_session_keys",
      [](const py::bytes& key, const py::bytes& client_nonce, const py::bytes& server_nonce, int client_role,
         int server_role, std::uint32_t client_session_id, std::uint32_t server_session_id) {
        const std::string k = key, cn = client_nonce, sn = server_nonce;
        if (cn.size() != protocol::kNonceBytes || sn.size() != protocol::kNonceBytes)
          throw py::value_error("client_nonce, server_nonce: expected 16 bytes each");
        session::KeyInputs in;
        in.client_nonce = reinterpret_cast<const std::uint8_t*>(cn.data());
        in.server_nonce = reinterpret_cast<const std::uint8_t*>(sn.data());
        in.client_role = static_cast<std::uint16_t>(client_role);
        in.server_role = static_cast<std::uint16_t>(server_role);
        in.client_session_id = client_session_id;
        in.server_session_id = server_session_id;
        std::uint8_t okm[2 * session::kSessionKeyBytes];
        session::derive_session_keys(reinterpret_cast<const std::uint8_t*>(k.data()), k.size(), in, okm);
        return py::make_tuple(py::bytes(reinterpret_cast<const char*>(okm), session::kSessionKeyBytes),
                              py::bytes(reinterpret_cast<const char*>(okm) + session::kSessionKeyBytes,
                                        session::kSessionKeyBytes));
      },
      py::arg("key"), py::arg("client_nonce"), py::arg("server_nonce"), py::arg("client_role"), py::arg("server_role"),
      py::arg("client_session_id"), py::arg("server_session_id"),
      "Session keys of docs/protocol.md's key schedule: (client->server key, server->client key).");
  m.attr("MIN_LONG_TERM_KEY_BYTES") = session::kMinLongTermKeyBytes;
  m.def(
      "camera_link_key",
      [](const py::bytes& key) { return py::bytes(session::camera_link_key(std::string(key))); },
      py::arg("key"),
      "The camera link's long-term key derived from the robot link's (docs/protocol.md, \"Keys\"): 64 hex digits "
      "of HMAC-SHA256(key, 'RRTP camera link key'); b'' for b''.");
  m.def(
      "limits_digest",
      [](const std::vector<double>& position_min, const std::vector<double>& position_max,
         const std::vector<double>& velocity_limit, const std::vector<double>& acceleration_limit,
         const std::vector<double>& jerk_limit, std::uint64_t geometry_digest) {
        const std::size_t n = position_min.size();
        if (n < 1 || n > protocol::kMaxJoints || position_max.size() != n || velocity_limit.size() != n ||
            acceleration_limit.size() != n || jerk_limit.size() != n)
          throw py::value_error("limits_digest: expected 1.." + std::to_string(protocol::kMaxJoints) +
                                " joints, the same number in every limit vector");
        return protocol::limits_digest(n, position_min.data(), position_max.data(), velocity_limit.data(),
                                       acceleration_limit.data(), jerk_limit.data(), geometry_digest);
      },
      py::arg("position_min"), py::arg("position_max"), py::arg("velocity_limit"), py::arg("acceleration_limit"),
      py::arg("jerk_limit"), py::arg("geometry_digest") = 0,
      "Joint-limits digest of the handshake (protocol::limits_digest, docs/protocol.md): a non-zero u64; "
      "geometry_digest (robot_rt.robot.geometry_digest; 0: not stated) is folded in.");
  m.def("encode_packet", &encode_packet, py::arg("packet"), py::arg("key") = py::none(),
        "Encodes a packet dict (robot_rt.control.protocol field names) with the C++ codec; ValueError if invalid.");
  m.def("decode_packet", &decode_packet, py::arg("data"), py::arg("key") = py::none(),
        "Decodes one datagram with the C++ codec: (status name, packet dict or None).");
}

// UdpDriver: the RobotDriver over UDP (docs/protocol.md), with its link counters.
void bind_udp_driver(py::module_& m) {
  py::class_<UdpDriver, RobotDriver, std::shared_ptr<UdpDriver>>(m, "UdpDriver",
                                                                 "RobotDriver over the UDP protocol (udp_driver.hpp).")
      .def(py::init([](const std::string& host, int port, int dof, const std::string& key, const std::string& bind_host,
                       int bind_port, double link_timeout_s, double hello_interval_s, double late_threshold_s,
                       const std::string& camera_host, int camera_port, double session_timeout_s,
                       double heartbeat_interval_s, double clock_drift_bound, std::uint64_t limits_digest) {
             if (port < 1 || port > 65535) throw py::value_error("port: expected 1..65535, got " + std::to_string(port));
             if (bind_port < 0 || bind_port > 65535 || camera_port < 0 || camera_port > 65535)
               throw py::value_error("bind_port, camera_port: expected 0..65535");
             UdpDriverConfig c;
             c.host = host;
             c.port = static_cast<std::uint16_t>(port);
             c.dof = dof;
             c.key = key;
             c.bind_host = bind_host;
             c.bind_port = static_cast<std::uint16_t>(bind_port);
             c.link_timeout_ns = seconds_to_ns(link_timeout_s, "link_timeout_s", kMaxFreshnessS);
             c.hello_interval_ns = seconds_to_ns(hello_interval_s, "hello_interval_s");
             c.late_threshold_ns = seconds_to_ns(late_threshold_s, "late_threshold_s", kMaxFreshnessS);
             c.session_timeout_ns = seconds_to_ns(session_timeout_s, "session_timeout_s");
             c.heartbeat_interval_ns = seconds_to_ns(heartbeat_interval_s, "heartbeat_interval_s");
             if (!(clock_drift_bound > 0.0 && clock_drift_bound < 0.1))
               throw py::value_error("clock_drift_bound: expected a rate in (0, 0.1) s/s");
             c.clock.drift_bound = clock_drift_bound;
             c.camera_host = camera_host;
             c.camera_port = static_cast<std::uint16_t>(camera_port);
             c.limits_digest = limits_digest;
             try {
               return std::make_shared<UdpDriver>(c);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("host"), py::arg("port"), py::arg("dof"), py::arg("key") = "", py::arg("bind_host") = "127.0.0.1",
           py::arg("bind_port") = 0, py::arg("link_timeout_s") = 0.05, py::arg("hello_interval_s") = 0.05,
           py::arg("late_threshold_s") = 0.02, py::arg("camera_host") = "127.0.0.1", py::arg("camera_port") = 0,
           py::arg("session_timeout_s") = 0.25, py::arg("heartbeat_interval_s") = 0.1,
           py::arg("clock_drift_bound") = 500e-6, py::arg("limits_digest") = 0)
      .def(
          "start", [](UdpDriver& d) { with_bare_claim(d, "start", [&] { d.on_start(); }); },
          "Opens the sockets and says hello (the loop calls this itself); RuntimeError without a limits digest, and "
          "while a loop drives this driver.")
      .def_property(
          "limits_digest", &UdpDriver::limits_digest,
          [](UdpDriver& d, std::uint64_t digest) {
            try {
              d.set_limits_digest(digest);
            } catch (const std::logic_error& e) {
              throw py::value_error(e.what());
            }
          },
          "The joint-limits digest the robot must state (robot_rt.robot.limits_digest of the loop's robot; 0: unset, "
          "the driver refuses to start). Settable while stopped.")
      .def(
          "stop", [](UdpDriver& d) { with_bare_claim(d, "stop", [&] { d.on_stop(); }); },
          "Says goodbye (authenticated) and closes the sockets (not while a loop drives this driver: stop the loop).")
      .def(
          "read_state",
          [](UdpDriver& d) -> py::object {
            JointState s;
            const bool got = with_bare_claim(d, "read_state", [&] { return d.read_state(s); });
            if (!got) return py::none();
            py::dict out;
            out["stamp_ns"] = s.stamp_ns;
            out["flags"] = s.flags;
            out["new_session"] = (s.flags & kStateNewSession) != 0;
            out["robot_stopped"] = (s.flags & kStateRobotStopped) != 0;
            out["position"] = joints(s.position_si, s.dof);
            out["velocity"] = joints(s.velocity_si, s.dof);
            return out;
          },
          "Newest state since the previous call, or None (only while no ControlLoop drives this driver).")
      .def(
          "acknowledge_robot_stops",
          [](UdpDriver& d) {
            // only the loop's recovery acknowledges while it drives the robot (use recover())
            with_bare_claim(d, "acknowledge_robot_stops", [&] { d.acknowledge_robot_stops(); });
          },
           "Acknowledges the robot's own stops up to the last state read (what a recovery does): its later commands "
           "carry that count, so the robot applies them again (docs/protocol.md, 'Robot-side stops'). For a bare "
           "driver (tests, tools) only: it skips everything RealTimeLoop.recover() checks (what the requester saw, "
           "the robot at rest); refused while a loop drives the driver.")
      .def(
          "write_command",
          [](UdpDriver& d, const std::vector<double>& position, const std::vector<double>& velocity) {
            if (static_cast<int>(position.size()) != d.dof() || static_cast<int>(velocity.size()) != d.dof())
              throw py::value_error("position, velocity: expected " + std::to_string(d.dof()) + " values each");
            JointCommand c;
            c.dof = d.dof();
            c.stamp_ns = monotonic_ns();
            for (int i = 0; i < c.dof; ++i) {
              c.position_si[i] = position[i];
              c.velocity_si[i] = velocity[i];
            }
            return with_bare_claim(d, "write_command", [&] { return d.write_command(c); });
          },
          py::arg("position"), py::arg("velocity"),
          "Sends one command; False if refused. RuntimeError while a ControlLoop drives this driver.")
      .def(
          "read_ball_observations",
          [](UdpDriver& d, int max_count) {
            BallObservation buf[CameraReceiver::kQueueCapacity];
            // the loop reads the camera every tick: a bare read would race it and take its detections
            const int n = with_bare_claim(d, "read_ball_observations", [&] {
              return d.read_ball_observations(buf, std::min(max_count, CameraReceiver::kQueueCapacity));
            });
            py::list out;
            for (int i = 0; i < n; ++i) out.append(observation_dict(buf[i]));
            return out;
          },
          py::arg("max_count") = CameraReceiver::kQueueCapacity,
          "The camera's detections since the previous call (not while a loop drives this driver).")
      .def_property_readonly("local_port", &UdpDriver::local_port)
      .def_property_readonly("connected", &UdpDriver::connected)
      .def_property_readonly("authenticated", &UdpDriver::authenticated)
      .def_property_readonly("rtt_count", &UdpDriver::rtt_count, "Command round trips measured so far.")
      .def_property_readonly("rtt_last_ns", &UdpDriver::rtt_last_ns, "Last command round trip (ns).")
      .def_property_readonly("states_received", &UdpDriver::states_received)
      .def("stats", [](const UdpDriver& d) {
        py::dict s = counters_dict(d.counters());
        s["connected"] = d.connected();
        s["states_received"] = d.states_received();
        s["commands_sent"] = d.commands_sent();
        s["hellos_sent"] = d.hellos_sent();
        s["limits_digest"] = d.limits_digest();
        s["rx_limits_mismatch"] = d.limits_mismatches();
        s["peer_limits_digest"] = d.peer_limits_digest();
        s["server_status"] = d.server_status();
        s["rtt_last_ns"] = d.rtt_last_ns();
        s["rtt_min_ns"] = d.rtt_min_ns();
        s["rtt_max_ns"] = d.rtt_max_ns();
        s["rtt_count"] = d.rtt_count();
        s["rtt_mean_ns"] = d.rtt_count() ? double(d.rtt_sum_ns()) / double(d.rtt_count()) : 0.0;
        static const char* kStates[] = {"idle", "handshaking", "established"};
        s["authenticated"] = d.authenticated();
        s["session_state"] = kStates[std::clamp(d.session_state(), 0, 2)];
        s["sessions_established"] = d.sessions_established();
        s["sessions_lost"] = d.sessions_lost();
        s["server_session_id"] = d.server_session_id();
        s["peer_version"] = d.peer_version();
        s["clock_offset_ns"] = d.clock_offset_ns();
        s["clock_uncertainty_ns"] = d.clock_uncertainty_ns();
        s["clock_samples"] = d.clock_samples();
        s["clock_rejected"] = d.clock_rejected();
        s["clock_resyncs"] = d.clock_resyncs();
        if (d.camera() != nullptr) {
          py::dict c = counters_dict(d.camera()->counters());
          c["sessions_established"] = d.camera()->sessions_established();
          c["established"] = d.camera()->established();
          c["frames"] = d.camera()->frames();
          c["detections"] = d.camera()->detections();
          c["queue_overflows"] = d.camera()->queue_overflows();
          s["camera"] = c;
        }
        return s;
      });
}

// CameraReceiver: the camera stream's subscriber (also used inside UdpDriver).
void bind_camera_receiver(py::module_& m) {
  py::class_<CameraReceiver, std::shared_ptr<CameraReceiver>>(m, "CameraReceiver",
                                                              "Receiver of the UDP ball-observation stream.")
      .def(py::init([](const std::string& camera_host, int camera_port, const std::string& key,
                       const std::string& bind_host, double subscribe_interval_s, double session_timeout_s,
                       double late_threshold_s) {
             if (camera_port < 1 || camera_port > 65535) throw py::value_error("camera_port: expected 1..65535");
             CameraReceiverConfig c;
             c.camera_host = camera_host;
             c.camera_port = static_cast<std::uint16_t>(camera_port);
             c.key = key;
             c.bind_host = bind_host;
             c.subscribe_interval_ns = seconds_to_ns(subscribe_interval_s, "subscribe_interval_s");
             c.session_timeout_ns = seconds_to_ns(session_timeout_s, "session_timeout_s");
             c.late_threshold_ns = seconds_to_ns(late_threshold_s, "late_threshold_s", kMaxFreshnessS);
             try {
               return std::make_shared<CameraReceiver>(c);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("camera_host") = "127.0.0.1", py::arg("camera_port"), py::arg("key") = "",
           py::arg("bind_host") = "127.0.0.1", py::arg("subscribe_interval_s") = 0.2, py::arg("session_timeout_s") = 0.5,
           py::arg("late_threshold_s") = 0.02)
      .def("open", &CameraReceiver::open)
      .def("close", [](CameraReceiver& c) { c.close(); })
      .def("read", &read_observations, py::arg("max_count") = CameraReceiver::kQueueCapacity)
      .def_property_readonly("local_port", &CameraReceiver::local_port)
      .def_property_readonly("established", &CameraReceiver::established)
      .def("stats", [](const CameraReceiver& r) {
        py::dict c = counters_dict(r.counters());
        c["sessions_established"] = r.sessions_established();
        c["established"] = r.established();
        c["frames"] = r.frames();
        c["detections"] = r.detections();
        c["queue_overflows"] = r.queue_overflows();
        c["clock_offset_ns"] = r.clock_offset_ns();
        c["best_round_trip_ns"] = r.best_round_trip_ns();
        return c;
      });
}

// SimRobotServer: the simulated robot bridge (used by robot_rt.sim; it shares this module's protocol and socket code).
void bind_sim_server(py::module_& m) {
  py::class_<SimRobotServer, std::shared_ptr<SimRobotServer>>(
      m, "SimRobotServer", "Simulated robot bridge speaking the UDP protocol, in its own C++ thread (sim_server.hpp).")
      .def(py::init([](std::vector<double> position_min, std::vector<double> position_max,
                       std::vector<double> velocity_limit, std::vector<double> acceleration_limit,
                       std::vector<double> initial_position, const std::string& host, int port, double rate_hz,
                       double tracking_time_constant_s, double command_delay_s, double command_timeout_s,
                       double session_timeout_s, const std::string& key, bool allow_remote, bool reply_on_command,
                       bool external_dynamics, double servo_damping, std::vector<double> jerk_limit,
                       std::uint64_t geometry_digest, bool start_stopped) {
             if (port < 0 || port > 65535) throw py::value_error("port: expected 0..65535");
             SimServerConfig c;
             c.position_min = std::move(position_min);
             c.position_max = std::move(position_max);
             c.velocity_limit = std::move(velocity_limit);
             c.acceleration_limit = std::move(acceleration_limit);
             c.jerk_limit = std::move(jerk_limit);
             c.initial_position = std::move(initial_position);
             c.host = host;
             c.port = static_cast<std::uint16_t>(port);
             c.rate_hz = rate_hz;
             c.tracking_time_constant_s = tracking_time_constant_s;
             c.command_delay_s = command_delay_s;
             c.command_timeout_s = command_timeout_s;
             c.session_timeout_s = session_timeout_s;
             c.key = key;
             c.allow_remote = allow_remote;
             c.reply_on_command = reply_on_command;
             c.external_dynamics = external_dynamics;
             c.servo_damping = servo_damping;
             c.geometry_digest = geometry_digest;
             c.start_stopped = start_stopped;
             try {
               return std::make_shared<SimRobotServer>(c);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("position_min"), py::arg("position_max"), py::arg("velocity_limit"), py::arg("acceleration_limit"),
           py::arg("initial_position") = std::vector<double>{}, py::arg("host") = "127.0.0.1", py::arg("port") = 0,
           py::arg("rate_hz") = 1000.0, py::arg("tracking_time_constant_s") = 0.02, py::arg("command_delay_s") = 0.002,
           py::arg("command_timeout_s") = 0.1, py::arg("session_timeout_s") = 0.5, py::arg("key") = "",
           py::arg("allow_remote") = false, py::arg("reply_on_command") = true, py::arg("external_dynamics") = false,
           py::arg("servo_damping") = 1.0, py::arg("jerk_limit") = std::vector<double>{},
           py::arg("geometry_digest") = 0, py::arg("start_stopped") = false)
      .def(
          "servo_targets",
          [](const SimRobotServer& s) {
            py::array_t<double> q(s.dof()), v(s.dof());
            bool holding = true;
            s.servo_targets(q.mutable_data(), v.mutable_data(), &holding);
            return py::make_tuple(q, v, holding);
          },
          "External dynamics: (target position [dof], target velocity [dof], holding) after the command delay.")
      .def(
          "set_measured_state",
          [](SimRobotServer& s, const py::array_t<double, py::array::c_style | py::array::forcecast>& q,
             const py::array_t<double, py::array::c_style | py::array::forcecast>& v, std::uint64_t limit_hits) {
            if (q.size() != s.dof() || v.size() != s.dof())
              throw py::value_error("position, velocity: expected " + std::to_string(s.dof()) + " values each");
            s.set_measured_state(q.data(), v.data(), limit_hits);
          },
          py::arg("position"), py::arg("velocity"), py::arg("limit_hits") = 0,
          "External dynamics: the joint state the physics simulated (sent to the controller from now on); "
          "limit_hits adds to the hard_stops counter.")
      .def("start", &SimRobotServer::start, py::call_guard<py::gil_scoped_release>())
      .def("stop", &SimRobotServer::stop, py::arg("goodbye") = true, py::call_guard<py::gil_scoped_release>(),
           "Stops the server thread; goodbye=False ends without the goodbye (a crash as the controller sees it).")
      .def(
          "set_faults",
          [](SimRobotServer& s, int measured_joint, double measured_value, bool fault, int stuck_joint, bool estop) {
            SimServerFaults f;
            f.measured_joint = measured_joint;
            f.measured_value = measured_value;
            f.fault = fault;
            f.stuck_joint = stuck_joint;
            f.estop = estop;
            try {
              s.set_faults(f);
            } catch (const std::invalid_argument& e) {
              throw py::value_error(e.what());
            }
          },
          py::arg("measured_joint") = -1, py::arg("measured_value") = 0.0, py::arg("fault") = false,
          py::arg("stuck_joint") = -1, py::arg("estop") = false,
          "Injects robot faults (sim_server.hpp SimServerFaults) until the next call; no arguments clear them.")
      .def("faults",
           [](const SimRobotServer& s) {
             const SimServerFaults f = s.faults();
             py::dict d;
             d["measured_joint"] = f.measured_joint;
             d["measured_value"] = f.measured_value;
             d["fault"] = f.fault;
             d["stuck_joint"] = f.stuck_joint;
             d["estop"] = f.estop;
             return d;
           })
      .def(
          "shift_state_stamps",
          [](SimRobotServer& s, std::int64_t shift_ns, int count) {
            try {
              s.shift_state_stamps(shift_ns, count);
            } catch (const std::invalid_argument& e) {
              throw py::value_error(e.what());
            }
          },
          py::arg("shift_ns"), py::arg("count") = 1,
          "The next `count` states are stamped shift_ns off the server's clock (a clock step or a bad sender).")
      .def_property_readonly("running", &SimRobotServer::running)
      .def_property_readonly("port", &SimRobotServer::port)
      .def_property_readonly("session_id", &SimRobotServer::session_id)
      .def_property_readonly("dof", &SimRobotServer::dof)
      .def_property_readonly("limits_digest", &SimRobotServer::limits_digest,
                             "The joint-limits digest of this robot's limits (a controller must state it).")
      .def("snapshot",
           [](const SimRobotServer& s) {
             const SimServerSnapshot snap = s.snapshot();
             py::dict d;
             d["stamp_ns"] = snap.stamp_ns;
             d["ticks"] = snap.ticks;
             d["status"] = snap.status;
             d["position"] = snap.position;
             d["velocity"] = snap.velocity;
             d["target"] = snap.target;
             d["has_controller"] = snap.has_controller;
             d["controller"] = snap.controller;
             return d;
           })
      .def("stats", [](const SimRobotServer& s) {
        py::dict d = counters_dict(s.counters());
        d["commands_applied"] = s.commands_applied();
        d["commands_out_of_limits"] = s.commands_out_of_limits();
        d["hard_stops"] = s.hard_stops();
        d["hold_events"] = s.hold_events();
        d["own_stops"] = s.own_stops();
        d["timeout_stops"] = s.timeout_stops();
        d["goodbye_stops"] = s.goodbye_stops();
        d["commands_ignored_until_resync"] = s.commands_ignored_until_resync();
        d["blocked_holds"] = s.blocked_holds();
        d["resync_required"] = s.resync_required();
        d["hellos_refused"] = s.hellos_refused();
        d["hellos_limits_refused"] = s.hellos_limits_refused();
        d["limits_digest"] = s.limits_digest();
        d["handshakes"] = s.handshakes();
        d["sessions"] = s.sessions();
        d["sessions_expired"] = s.sessions_expired();
        d["goodbyes"] = s.goodbyes();
        d["pending_evicted"] = s.pending_evicted();
        d["authenticated"] = s.authenticated();
        d["states_sent"] = s.states_sent();
        d["overruns"] = s.overruns();
        d["max_position_excess"] = s.max_position_excess();
        d["max_velocity_ratio"] = s.max_velocity_ratio();
        return d;
      });
}

void register_udp(py::module_& m) {
  bind_protocol(m);
  bind_udp_driver(m);
  bind_camera_receiver(m);
  bind_sim_server(m);
}

}  // namespace

RR_CONTROL_REGISTER(udp, 100, register_udp)

}  // namespace robot_rt::control
