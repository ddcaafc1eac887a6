// Self-registration of bindings into the robot_rt._control extension module.
//
// A bindings source (any csrc/robot_rt/control/*bindings*.cpp) defines
//   static void register_udp(pybind11::module_& m) { ... }
//   RR_CONTROL_REGISTER(udp, 100, register_udp)
// and PYBIND11_MODULE in bindings.cpp calls every registered function in increasing `order` (ties by
// name), so a component adds bindings by dropping a file here, without editing a shared bindings file.
// Order 0 is the core (bindings.cpp: RobotDriver base class, SimDriver, ControlLoop, ...): derived
// classes such as `py::class_<UdpDriver, RobotDriver, std::shared_ptr<UdpDriver>>` must use order > 0.
// Drivers are held by std::shared_ptr.
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

namespace robot_rt::control {

using RegisterFn = void (*)(pybind11::module_&);

struct BindingEntry {
  const char* name;
  int order;
  RegisterFn fn;
};

std::vector<BindingEntry>& binding_registry();

struct BindingRegistrar {
  BindingRegistrar(const char* name, int order, RegisterFn fn) {
    binding_registry().push_back(BindingEntry{name, order, fn});
  }
};

}  // namespace robot_rt::control

#define RR_CONTROL_CONCAT_(a, b) a##b
#define RR_CONTROL_CONCAT(a, b) RR_CONTROL_CONCAT_(a, b)
#define RR_CONTROL_REGISTER(name, order, fn) \
  static ::robot_rt::control::BindingRegistrar RR_CONTROL_CONCAT(rr_control_registrar_, name)(#name, order, fn);
