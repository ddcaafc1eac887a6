// percept_fast._C_cuda: the CUDA kernels. Each *_cuda.cpp registers its launchers (defined in a .cu
// file) via PF_REGISTER_OP; this file only iterates the registry.
#include "registry.h"

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "percept_fast CUDA kernels (tensors passed as device pointer + sizes + strides, plus the stream)";
  pybind11::list names;
  for (const auto& op : percept_fast::op_registry()) {
    op.fn(m);
    names.append(op.name);
  }
  m.attr("registered_ops") = names;
}
