// Self-registration of pybind11 bindings into an extension module, shared by every native component.
//
// A component keeps one registry per extension module: a function returning its entry list (a function-local
// static, defined in one .cpp of that module, so there is no static-initialisation-order problem). Each
// bindings source registers itself with a static `Registrar` (wrapped in the component's macro, e.g.
// PF_REGISTER_OP, RR_CONTROL_REGISTER), and the module's PYBIND11_MODULE calls `register_all`, so a component
// adds bindings by dropping in a file, without editing a shared bindings file.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace percept_robot {

using RegisterFn = void (*)(pybind11::module_&);

struct RegistryEntry {
  const char* name;
  int order;  // smaller first (e.g. base classes before derived ones); ties by name
  RegisterFn fn;
};

using Registry = std::vector<RegistryEntry>;

struct Registrar {
  Registrar(Registry& registry, const char* name, int order, RegisterFn fn) {
    registry.push_back(RegistryEntry{name, order, fn});
  }
};

// Calls every registered function in increasing (order, name); returns the names in that order.
inline std::vector<const char*> register_all(const Registry& registry, pybind11::module_& m) {
  Registry entries = registry;
  std::sort(entries.begin(), entries.end(), [](const RegistryEntry& a, const RegistryEntry& b) {
    return a.order != b.order ? a.order < b.order : std::strcmp(a.name, b.name) < 0;
  });
  std::vector<const char*> names;
  for (const auto& e : entries) {
    e.fn(m);
    names.push_back(e.name);
  }
  return names;
}

}  // namespace percept_robot

#define PR_REGISTRY_CONCAT_(a, b) a##b
#define PR_REGISTRY_CONCAT(a, b) PR_REGISTRY_CONCAT_(a, b)
// PR_REGISTER(registry_fn, prefix, name, order, fn): a static registrar named prefix##name adding `fn` to
// `registry_fn()` under `name`.
#define PR_REGISTER(registry_fn, prefix, name, order, fn) \
  static ::percept_robot::Registrar PR_REGISTRY_CONCAT(prefix, name)(registry_fn(), #name, order, fn);
