// percept_fast._C: the CPU kernels. Every *_cpu.cpp (or other non-CUDA .cpp) registers itself via
// PF_REGISTER_OP; this file only iterates the registry.
#include "registry.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "percept_fast CPU kernels (C++, threaded; tensors passed as pointer + sizes + strides)";
  pybind11::list names;
  for (const auto& op : percept_fast::op_registry()) {
    op.fn(m);
    names.append(op.name);
  }
  m.attr("registered_ops") = names;
  m.def("num_threads", &percept_fast::num_threads,
        "Threads the CPU kernels use now: PF_NUM_THREADS if set, else torch's (OpenMP) thread count where built with "
        "OpenMP, else the hardware concurrency.");
  m.attr("openmp") =
#if defined(_OPENMP)
      true;
#else
      false;
#endif
}
