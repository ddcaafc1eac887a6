// Python bindings of the EGM codec (as dicts with egm.proto's field names, for tests against protobuf), the EGM
// driver and the composite driver.
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "bare_driver.hpp"
#include "composite_driver.hpp"
#include "egm_codec.hpp"
#include "egm_driver.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace robot_rt::control {
namespace {

// ---------------------------------------------------------------- driver I/O shared by the EGM and composite drivers
// The driver's held state as a dict (stamp_ns, flags, position, velocity), or None when there is none.
template <class Driver>
py::object read_state_dict(Driver& d) {
  JointState s;
  if (!with_bare_claim(d, "read_state", [&] { return d.read_state(s); })) return py::none();
  py::dict out;
  out["stamp_ns"] = s.stamp_ns;
  out["flags"] = s.flags;
  out["position"] = std::vector<double>(s.position_si, s.position_si + s.dof);
  out["velocity"] = std::vector<double>(s.velocity_si, s.velocity_si + s.dof);
  return out;
}

// One command from position and (optional, default 0) velocity lists of the driver's dof.
template <class Driver>
bool write_command_lists(Driver& d, const std::vector<double>& position, const std::vector<double>& velocity) {
  if (static_cast<int>(position.size()) != d.dof() || (!velocity.empty() && velocity.size() != position.size()))
    throw py::value_error("position, velocity: expected " + std::to_string(d.dof()) + " values");
  JointCommand c;
  c.dof = d.dof();
  for (int i = 0; i < c.dof; ++i) {
    c.position_si[i] = position[i];
    c.velocity_si[i] = velocity.empty() ? 0.0 : velocity[i];
  }
  return with_bare_claim(d, "write_command", [&] { return d.write_command(c); });
}

// start / stop of a bare driver (the loop starts and stops its driver itself)
template <class Driver>
void start_bare(Driver& d) {
  with_bare_claim(d, "start", [&] { d.on_start(); });
}
template <class Driver>
void stop_bare(Driver& d) {
  with_bare_claim(d, "stop", [&] { d.on_stop(); });
}

// ---------------------------------------------------------------- message <-> dict (keys only for present fields)
py::list values_list(const egm::Values& v) {
  py::list out;
  for (int i = 0; i < v.count; ++i) out.append(v.value[i]);
  return out;
}

// The repeated double `key` of a message dict (absent: empty).
void values_from(const py::dict& message, const char* key, egm::Values& out, const char* what) {
  const auto values = message.contains(key) ? message[key].cast<std::vector<double>>() : std::vector<double>{};
  if (values.size() > static_cast<std::size_t>(egm::kMaxValues))
    throw py::value_error(std::string(what) + ": at most " + std::to_string(egm::kMaxValues) + " values");
  out.count = static_cast<int>(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out.value[i] = values[i];
}

py::dict header_dict(const egm::Header& h) {
  py::dict d;
  if (h.has_seqno) d["seqno"] = h.seqno;
  if (h.has_tm) d["tm"] = h.tm;
  if (h.has_mtype) d["mtype"] = h.mtype;
  return d;
}

void header_from(const py::dict& d, egm::Header& h) {
  if ((h.has_seqno = d.contains("seqno"))) h.seqno = d["seqno"].cast<std::uint32_t>();
  if ((h.has_tm = d.contains("tm"))) h.tm = d["tm"].cast<std::uint32_t>();
  if ((h.has_mtype = d.contains("mtype"))) h.mtype = d["mtype"].cast<std::int32_t>();
}

template <typename T>
py::dict xyz_dict(const T& c) {
  py::dict d;
  if (c.has_x) d["x"] = c.x;
  if (c.has_y) d["y"] = c.y;
  if (c.has_z) d["z"] = c.z;
  return d;
}

template <typename T>
void xyz_from(const py::dict& d, T& c) {
  if ((c.has_x = d.contains("x"))) c.x = d["x"].cast<double>();
  if ((c.has_y = d.contains("y"))) c.y = d["y"].cast<double>();
  if ((c.has_z = d.contains("z"))) c.z = d["z"].cast<double>();
}

py::dict pose_dict(const egm::Pose& p) {
  py::dict d;
  if (p.has_pos) d["pos"] = xyz_dict(p.pos);
  if (p.has_orient) {
    py::dict q;
    if (p.orient.has_u0) q["u0"] = p.orient.u0;
    if (p.orient.has_u1) q["u1"] = p.orient.u1;
    if (p.orient.has_u2) q["u2"] = p.orient.u2;
    if (p.orient.has_u3) q["u3"] = p.orient.u3;
    d["orient"] = q;
  }
  if (p.has_euler) d["euler"] = xyz_dict(p.euler);
  return d;
}

void pose_from(const py::dict& d, egm::Pose& p) {
  if ((p.has_pos = d.contains("pos"))) xyz_from(d["pos"], p.pos);
  if ((p.has_orient = d.contains("orient"))) {
    const py::dict q = d["orient"];
    auto& o = p.orient;
    if ((o.has_u0 = q.contains("u0"))) o.u0 = q["u0"].cast<double>();
    if ((o.has_u1 = q.contains("u1"))) o.u1 = q["u1"].cast<double>();
    if ((o.has_u2 = q.contains("u2"))) o.u2 = q["u2"].cast<double>();
    if ((o.has_u3 = q.contains("u3"))) o.u3 = q["u3"].cast<double>();
  }
  if ((p.has_euler = d.contains("euler"))) xyz_from(d["euler"], p.euler);
}

py::dict jpt_dict(const egm::JointsPoseTime& m) {
  py::dict d;
  if (m.has_joints) {
    py::dict j;
    j["joints"] = values_list(m.joints);
    d["joints"] = j;
  }
  if (m.has_cartesian) d["cartesian"] = pose_dict(m.cartesian);
  if (m.has_external_joints) {
    py::dict j;
    j["joints"] = values_list(m.external_joints);
    d["externalJoints"] = j;
  }
  if (m.has_time) {
    py::dict t;
    if (m.time.has_sec) t["sec"] = m.time.sec;
    if (m.time.has_usec) t["usec"] = m.time.usec;
    d["time"] = t;
  }
  return d;
}

void jpt_from(const py::dict& d, egm::JointsPoseTime& m) {
  if ((m.has_joints = d.contains("joints"))) values_from(py::dict(d["joints"]), "joints", m.joints, "joints");
  if ((m.has_cartesian = d.contains("cartesian"))) pose_from(d["cartesian"], m.cartesian);
  if ((m.has_external_joints = d.contains("externalJoints")))
    values_from(py::dict(d["externalJoints"]), "joints", m.external_joints, "externalJoints");
  if ((m.has_time = d.contains("time"))) {
    const py::dict t = d["time"];
    if ((m.time.has_sec = t.contains("sec"))) m.time.sec = t["sec"].cast<std::uint64_t>();
    if ((m.time.has_usec = t.contains("usec"))) m.time.usec = t["usec"].cast<std::uint64_t>();
  }
}

py::dict state_dict(const egm::StateMessage& m) {
  py::dict d;
  if (m.has_state) d["state"] = m.state;
  return d;
}

void state_from(const py::dict& d, egm::StateMessage& m) {
  if ((m.has_state = d.contains("state"))) m.state = d["state"].cast<std::int32_t>();
}

py::dict values_dict(const char* key, const egm::Values& v) {
  py::dict d;
  d[key] = values_list(v);
  return d;
}

py::dict robot_dict(const egm::Robot& m) {
  py::dict d;
  if (m.has_header) d["header"] = header_dict(m.header);
  if (m.has_feedback) d["feedBack"] = jpt_dict(m.feedback);
  if (m.has_planned) d["planned"] = jpt_dict(m.planned);
  if (m.has_motor_state) d["motorState"] = state_dict(m.motor_state);
  if (m.has_mci_state) d["mciState"] = state_dict(m.mci_state);
  if (m.has_mci_convergence_met) d["mciConvergenceMet"] = m.mci_convergence_met;
  if (m.has_test_signals) d["testSignals"] = values_dict("signals", m.test_signals);
  if (m.has_rapid_exec_state) d["rapidExecState"] = state_dict(m.rapid_exec_state);
  if (m.has_measured_force) d["measuredForce"] = values_dict("force", m.measured_force);
  if (m.has_utilization_rate) d["utilizationRate"] = m.utilization_rate;
  return d;
}

egm::Robot robot_from(const py::dict& d) {
  egm::Robot m;
  if ((m.has_header = d.contains("header"))) header_from(d["header"], m.header);
  if ((m.has_feedback = d.contains("feedBack"))) jpt_from(d["feedBack"], m.feedback);
  if ((m.has_planned = d.contains("planned"))) jpt_from(d["planned"], m.planned);
  if ((m.has_motor_state = d.contains("motorState"))) state_from(d["motorState"], m.motor_state);
  if ((m.has_mci_state = d.contains("mciState"))) state_from(d["mciState"], m.mci_state);
  if ((m.has_mci_convergence_met = d.contains("mciConvergenceMet")))
    m.mci_convergence_met = d["mciConvergenceMet"].cast<bool>();
  if ((m.has_test_signals = d.contains("testSignals")))
    values_from(py::dict(d["testSignals"]), "signals", m.test_signals, "testSignals");
  if ((m.has_rapid_exec_state = d.contains("rapidExecState"))) state_from(d["rapidExecState"], m.rapid_exec_state);
  if ((m.has_measured_force = d.contains("measuredForce")))
    values_from(py::dict(d["measuredForce"]), "force", m.measured_force, "measuredForce");
  if ((m.has_utilization_rate = d.contains("utilizationRate"))) m.utilization_rate = d["utilizationRate"].cast<double>();
  return m;
}

py::dict sensor_dict(const egm::Sensor& m) {
  py::dict d;
  if (m.has_header) d["header"] = header_dict(m.header);
  if (m.has_planned) d["planned"] = jpt_dict(m.planned);
  if (m.has_speed_ref) {
    py::dict s;
    if (m.speed_ref.has_joints) s["joints"] = values_dict("joints", m.speed_ref.joints);
    if (m.speed_ref.has_cartesians) s["cartesians"] = values_dict("value", m.speed_ref.cartesians);
    if (m.speed_ref.has_external_joints) s["externalJoints"] = values_dict("joints", m.speed_ref.external_joints);
    d["speedRef"] = s;
  }
  return d;
}

egm::Sensor sensor_from(const py::dict& d) {
  egm::Sensor m;
  if ((m.has_header = d.contains("header"))) header_from(d["header"], m.header);
  if ((m.has_planned = d.contains("planned"))) jpt_from(d["planned"], m.planned);
  if ((m.has_speed_ref = d.contains("speedRef"))) {
    const py::dict s = d["speedRef"];
    if ((m.speed_ref.has_joints = s.contains("joints")))
      values_from(py::dict(s["joints"]), "joints", m.speed_ref.joints, "speedRef.joints");
    if ((m.speed_ref.has_cartesians = s.contains("cartesians")))
      values_from(py::dict(s["cartesians"]), "value", m.speed_ref.cartesians, "speedRef.cartesians");
    if ((m.speed_ref.has_external_joints = s.contains("externalJoints")))
      values_from(py::dict(s["externalJoints"]), "joints", m.speed_ref.external_joints, "speedRef.externalJoints");
  }
  return m;
}

py::bytes encode_with(const std::string& what, egm::Status (*fn)(const void*, std::uint8_t*, std::size_t, std::size_t&),
                      const void* message) {
  std::uint8_t buffer[4096];
  std::size_t n = 0;
  const egm::Status s = fn(message, buffer, sizeof(buffer), n);
  if (s != egm::Status::kOk) throw py::value_error(what + ": " + egm::status_name(s));
  return py::bytes(reinterpret_cast<const char*>(buffer), n);
}

// `max_s`: what decides whether a robot sample is current is capped at 1 s, as the loop's watchdogs are
std::int64_t seconds_ns(double s, const char* what, double max_s = 3600.0) {
  if (!(s > 0 && s <= max_s))
    throw py::value_error(std::string(what) + (max_s < 3600.0 ? ": expected seconds in (0, 1]" : ": expected a positive time in s"));
  return static_cast<std::int64_t>(s * 1e9);
}

void register_egm(py::module_& m) {
  m.def(
      "egm_decode_robot",
      [](py::bytes data) {
        const std::string s = data;
        egm::Robot message;
        const egm::Status status = egm::decode_robot(reinterpret_cast<const std::uint8_t*>(s.data()), s.size(), message);
        return py::make_tuple(egm::status_name(status), status == egm::Status::kOk ? robot_dict(message) : py::dict());
      },
      py::arg("data"), "Decodes an EgmRobot message: (status name, dict with egm.proto's field names).");
  m.def(
      "egm_decode_sensor",
      [](py::bytes data) {
        const std::string s = data;
        egm::Sensor message;
        const egm::Status status = egm::decode_sensor(reinterpret_cast<const std::uint8_t*>(s.data()), s.size(), message);
        return py::make_tuple(egm::status_name(status), status == egm::Status::kOk ? sensor_dict(message) : py::dict());
      },
      py::arg("data"), "Decodes an EgmSensor message: (status name, dict).");
  m.def(
      "egm_encode_robot",
      [](const py::dict& d) {
        const egm::Robot message = robot_from(d);
        return encode_with(
            "egm_encode_robot",
            [](const void* p, std::uint8_t* b, std::size_t c, std::size_t& n) {
              return egm::encode_robot(*static_cast<const egm::Robot*>(p), b, c, n);
            },
            &message);
      },
      py::arg("message"), "Encodes an EgmRobot message given as a dict (egm_decode_robot's layout).");
  m.def(
      "egm_encode_sensor",
      [](const py::dict& d) {
        const egm::Sensor message = sensor_from(d);
        return encode_with(
            "egm_encode_sensor",
            [](const void* p, std::uint8_t* b, std::size_t c, std::size_t& n) {
              return egm::encode_sensor(*static_cast<const egm::Sensor*>(p), b, c, n);
            },
            &message);
      },
      py::arg("message"), "Encodes an EgmSensor message given as a dict.");

  py::class_<EgmDriver, RobotDriver, std::shared_ptr<EgmDriver>>(m, "EgmDriver",
                                                                 "RobotDriver for an ABB arm over EGM (egm_driver.hpp).")
      .def(py::init([](const std::string& bind_host, int port, int dof, const std::vector<double>& si_per_egm,
                       const std::string& controller_host, double hold_s, double link_timeout_s,
                       const std::string& run_marker_path, int controller_port) {
             if (port < 0 || port > 65535) throw py::value_error("port: expected 0..65535");
             if (controller_port < 0 || controller_port > 65535)
               throw py::value_error("controller_port: expected 0..65535 (0: any source port)");
             EgmDriverConfig c;
             c.bind_host = bind_host;
             c.port = static_cast<std::uint16_t>(port);
             c.dof = dof;
             c.controller_host = controller_host;
             c.controller_port = static_cast<std::uint16_t>(controller_port);
             c.run_marker_path = run_marker_path;
             if (!si_per_egm.empty()) {
               if (static_cast<int>(si_per_egm.size()) != dof || dof > kMaxDof)
                 throw py::value_error("si_per_egm: expected one factor per joint");
               for (int i = 0; i < dof; ++i) c.si_per_egm[i] = si_per_egm[i];
             }
             c.hold_ns = seconds_ns(hold_s, "hold_s", 1.0);
             c.link_timeout_ns = seconds_ns(link_timeout_s, "link_timeout_s", 1.0);
             try {
               return std::make_shared<EgmDriver>(c);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("bind_host") = "127.0.0.1", py::arg("port") = 0, py::arg("dof") = 6,
           py::arg("si_per_egm") = std::vector<double>{}, py::arg("controller_host") = "", py::arg("hold_s") = 0.008,
           py::arg("link_timeout_s") = 0.04, py::arg("run_marker_path") = "", py::arg("controller_port") = 0)
      .def("start", &start_bare<EgmDriver>, "Opens the socket (the loop calls this itself; not while one drives it).")
      .def("stop", &stop_bare<EgmDriver>, "Closes the socket (not while a loop drives this driver).")
      .def_property_readonly("local_port", &EgmDriver::local_port)
      .def_property_readonly("link_up", &EgmDriver::link_up)
      .def_property_readonly("controller", &EgmDriver::controller_endpoint)
      .def_property_readonly("run_marker_path", [](const EgmDriver& d) { return d.config().run_marker_path; })
      .def_property_readonly("port", [](const EgmDriver& d) { return static_cast<int>(d.config().port); },
                             "The configured port (0: ephemeral; local_port is the bound one).")
      .def_property_readonly("marker_stop_pending", &EgmDriver::marker_stop_pending,
                             "An earlier run's marker was found and no recovery has acknowledged it yet.")
      .def_property_readonly("hold_replies", &EgmDriver::hold_replies,
                             "Replies that held the arm where it was while the loop had muted it.")
      .def_property_readonly("si_per_egm",
                             [](const EgmDriver& d) {
                               return std::vector<double>(d.config().si_per_egm, d.config().si_per_egm + d.config().dof);
                             })
      .def_property_readonly("bind_host", [](const EgmDriver& d) { return d.config().bind_host; })
      .def_property_readonly("controller_host", [](const EgmDriver& d) { return d.config().controller_host; })
      .def_property_readonly("controller_port",
                             [](const EgmDriver& d) { return static_cast<int>(d.config().controller_port); },
                             "The controller's pinned source port (0: any).")
      .def(
          "read_state",
          &read_state_dict<EgmDriver>,
          "Drains the socket; the held robot state as a dict, or None (no sample within hold_s). Not while a loop "
          "runs on this driver.")
      .def(
          "write_command",
          &write_command_lists<EgmDriver>,
          py::arg("position"), py::arg("velocity") = std::vector<double>{},
          "Stores a command (rad, rad/s) and answers the controller's unanswered message with it (not while a loop "
          "runs on this driver).")
      .def("stats", [](const EgmDriver& d) {
        const EgmCounters& c = d.counters();
        py::dict s;
        s["rx_datagrams"] = c.rx_datagrams.load();
        s["rx_accepted"] = c.rx_accepted.load();
        s["rx_malformed"] = c.rx_malformed.load();
        s["rx_mismatch"] = c.rx_mismatch.load();
        s["rx_unexpected_source"] = c.rx_unexpected_source.load();
        s["rx_stale"] = c.rx_stale.load();
        s["rx_lost"] = c.rx_lost.load();
        s["peer_restarts"] = c.peer_restarts.load();
        s["tx_datagrams"] = c.tx_datagrams.load();
        s["tx_errors"] = c.tx_errors.load();
        s["tx_invalid"] = c.tx_invalid.load();
        s["socket_errors"] = c.socket_errors.load();
        s["connected"] = d.link_up();
        s["replies_sent"] = d.replies_sent();
        s["motor_state"] = d.motor_state();
        s["mci_state"] = d.mci_state();
        s["rapid_state"] = d.rapid_state();
        s["reply_latency_last_ns"] = d.reply_latency_last_ns();
        s["reply_latency_max_ns"] = d.reply_latency_max_ns();
        s["reply_latency_mean_ns"] =
            d.replies_sent() ? double(d.reply_latency_sum_ns()) / double(d.replies_sent()) : 0.0;
        s["controller"] = d.controller_endpoint();
        return s;
      });

  py::class_<CompositeDriver, RobotDriver, std::shared_ptr<CompositeDriver>>(
      m, "CompositeDriver", "One robot from several drivers, each a consecutive block of joints (composite_driver.hpp).")
      .def(py::init([](std::vector<std::shared_ptr<RobotDriver>> parts) {
             try {
               return std::make_shared<CompositeDriver>(std::move(parts));
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("parts"))
      .def_property_readonly("parts", &CompositeDriver::parts)
      .def("start", &start_bare<CompositeDriver>,
           "Starts every part (the loop calls this itself; not while one drives it).")
      .def("stop", &stop_bare<CompositeDriver>, "Stops every part (not while a loop drives this driver).")
      .def(
          "read_state",
          &read_state_dict<CompositeDriver>,
          "Reads every part: the joint state as a dict when every part is fresh, else None. Not while a loop runs "
          "on this driver.")
      .def(
          "write_command",
          &write_command_lists<CompositeDriver>,
          py::arg("position"), py::arg("velocity") = std::vector<double>{},
          "Splits one command over the parts; True when every part accepted it (not while a loop runs on this "
          "driver).")
      .def_property_readonly("last_fresh_mask", &CompositeDriver::last_fresh_mask);
}

}  // namespace

RR_CONTROL_REGISTER(egm, 110, register_egm)

}  // namespace robot_rt::control
