// robot_rt._control: the PYBIND11_MODULE; every binding group registers itself (registry.hpp).
#include <algorithm>
#include <cstring>

#include "driver.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace robot_rt::control {

static void register_core(py::module_& m) {
  m.attr("MAX_DOF") = kMaxDof;
  m.attr("MAX_BALL_OBSERVATIONS") = kMaxBallObservations;
  py::class_<RobotDriver, std::shared_ptr<RobotDriver>>(m, "RobotDriver",
                                                         "Abstract robot driver (C++ interface, driver.hpp).")
      .def_property_readonly("dof", &RobotDriver::dof)
      .def_property_readonly("name", &RobotDriver::name);
}
RR_CONTROL_REGISTER(core, 0, register_core)

}  // namespace robot_rt::control

PYBIND11_MODULE(_control, m) {
  m.doc() = "robot_rt real-time control loop (C++ core)";
  auto entries = robot_rt::control::binding_registry();
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.order != b.order ? a.order < b.order : std::strcmp(a.name, b.name) < 0;
  });
  for (const auto& e : entries) e.fn(m);
}
