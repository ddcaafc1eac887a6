#include "registry.hpp"

namespace robot_rt::control {

std::vector<BindingEntry>& binding_registry() {
  static std::vector<BindingEntry> entries;
  return entries;
}

}  // namespace robot_rt::control
