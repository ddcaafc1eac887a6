// Self-registration of percept_fast ops into the extension modules.
//
// Each op source file (foo_cpu.cpp for percept_fast._C, foo_cuda.cpp for percept_fast._C_cuda) defines
//   static void register_foo(pybind11::module_& m) { m.def(...); }
//   PF_REGISTER_OP(foo, register_foo)
// and the module's PYBIND11_MODULE (bindings.cpp / bindings_cuda.cpp) calls every registered function,
// so a new op is a new file dropped into csrc/percept_fast/ with no shared bindings file to edit.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "common/registry.hpp"  // csrc/common: the self-registration shared with robot_rt

namespace percept_fast {

using RegisterFn = ::percept_robot::RegisterFn;
using OpEntry = ::percept_robot::RegistryEntry;

// The list of ops linked into this extension module (function-local static: no init-order issue).
std::vector<OpEntry>& op_registry();

// Tensor descriptor as passed from Python (percept_fast/ops/_common.py:tensor_arg):
//   (data_ptr: int, sizes: tuple[int, ...4], strides: tuple[int, ...4] in elements, dtype_code: int)
using TensorArg = std::tuple<uintptr_t, std::array<int64_t, 4>, std::array<int64_t, 4>, int>;

inline RawView4 to_view(const TensorArg& t, const char* name) {
  RawView4 v;
  v.data = std::get<0>(t);
  for (int i = 0; i < 4; ++i) {
    v.size[i] = std::get<1>(t)[i];
    v.stride[i] = std::get<2>(t)[i];
    if (v.size[i] < 0) throw std::invalid_argument(std::string(name) + ": negative size");
  }
  v.dtype = std::get<3>(t);
  if (v.dtype < kFloat32 || v.dtype > kFloat64) throw std::invalid_argument(std::string(name) + ": unknown dtype code");
  if (v.data == 0 && v.size[0] * v.size[1] * v.size[2] * v.size[3] != 0)
    throw std::invalid_argument(std::string(name) + ": null data pointer");
  return v;
}

// The two feature maps of a distance op: same non-empty shape and same dtype; `op` names the caller.
inline void check_feature_pair(const RawView4& x, const RawView4& y, const char* op) {
  for (int i = 0; i < 4; ++i) {
    if (x.size[i] != y.size[i]) throw std::invalid_argument(std::string(op) + ": fx and fy shapes differ");
    if (x.size[i] < 1) throw std::invalid_argument(std::string(op) + ": empty input");
  }
  if (x.dtype != y.dtype) throw std::invalid_argument(std::string(op) + ": fx and fy dtypes differ");
}

}  // namespace percept_fast

#define PF_REGISTER_OP(name, fn) PR_REGISTER(::percept_fast::op_registry, pf_op_registrar_, name, 0, fn)
