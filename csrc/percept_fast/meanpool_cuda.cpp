// Bindings of the meanpool CUDA launchers into percept_fast._C_cuda (self-registered).
#include "lpips_cuda.h"
#include "lpips_kernel.h"
#include "registry.h"

namespace percept_fast {
namespace {

void register_meanpool_cuda(pybind11::module_& m) {
  m.def(
      "meanpool_workspace_numel",
      [](const TensorArg& fx, const TensorArg& fy) {
        const RawView4 x = to_view(fx, "fx"), y = to_view(fy, "fy");
        check_feature_pair(x, y, "meanpool_workspace_numel");
        return meanpool_cuda_workspace_numel(x, y);
      },
      pybind11::arg("fx"), pybind11::arg("fy"), "Elements (accumulation dtype) of the meanpool_forward workspace.");
  m.def(
      "meanpool_forward",
      [](const TensorArg& fx, const TensorArg& fy, double eps, int mode, uintptr_t out, uintptr_t ws, int64_t ws_numel,
         uintptr_t stream) {
        const RawView4 x = to_view(fx, "fx"), y = to_view(fy, "fy");
        check_feature_pair(x, y, "meanpool_forward");
        if (out == 0 || ws == 0) throw std::invalid_argument("meanpool_forward: null out/workspace");
        if (mode != kNormLpips && mode != kNormStable) throw std::invalid_argument("meanpool_forward: bad mode");
        meanpool_cuda_forward(x, y, eps, mode, out, ws, ws_numel, stream);
      },
      pybind11::arg("fx"), pybind11::arg("fy"), pybind11::arg("eps"), pybind11::arg("mode"), pybind11::arg("out"),
      pybind11::arg("workspace"), pybind11::arg("workspace_numel"), pybind11::arg("stream"),
      "Meanpool distance on the given CUDA stream (asynchronous).");
}

}  // namespace

PF_REGISTER_OP(meanpool_cuda, register_meanpool_cuda)

}  // namespace percept_fast
