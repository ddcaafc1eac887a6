// Self-registration of bindings into the robot_rt._control extension module (csrc/common/registry.hpp).
//
// A bindings source (any csrc/robot_rt/control/*bindings*.cpp) defines
//   static void register_udp(pybind11::module_& m) { ... }
//   RR_CONTROL_REGISTER(udp, 100, register_udp)
// and PYBIND11_MODULE in bindings.cpp calls every registered function in increasing `order` (ties by name).
// Order 0 is the core (bindings.cpp: RobotDriver base class, SimDriver, ControlLoop, ...): derived classes such
// as `py::class_<UdpDriver, RobotDriver, std::shared_ptr<UdpDriver>>` must use order > 0. Drivers are held by
// std::shared_ptr.
#pragma once

#include "common/registry.hpp"

namespace robot_rt::control {

using BindingEntry = ::percept_robot::RegistryEntry;

// The entries linked into robot_rt._control (defined in registry.cpp).
std::vector<BindingEntry>& binding_registry();

}  // namespace robot_rt::control

#define RR_CONTROL_REGISTER(name, order, fn) \
  PR_REGISTER(::robot_rt::control::binding_registry, rr_control_registrar_, name, order, fn)
