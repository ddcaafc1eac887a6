// Bindings of the lpips CUDA launchers into percept_fast._C_cuda (self-registered).
#include "lpips_cuda.h"
#include "lpips_kernel.h"
#include "registry.h"

namespace percept_fast {
namespace {

void register_lpips_cuda(pybind11::module_& m) {
  m.def(
      "lpips_workspace_numel",
      [](const TensorArg& fx, const TensorArg& fy) {
        const RawView4 x = to_view(fx, "fx"), y = to_view(fy, "fy");
        check_feature_pair(x, y, "lpips_workspace_numel");
        return lpips_cuda_workspace_numel(x, y);
      },
      pybind11::arg("fx"), pybind11::arg("fy"), "Elements (accumulation dtype) of the lpips_forward workspace.");
  m.def(
      "lpips_forward",
      [](const TensorArg& fx, const TensorArg& fy, uintptr_t weight, double eps, int mode, uintptr_t out,
         uintptr_t map, uintptr_t ws, int64_t ws_numel, uintptr_t stream) {
        const RawView4 x = to_view(fx, "fx"), y = to_view(fy, "fy");
        check_feature_pair(x, y, "lpips_forward");
        if (out == 0 || ws == 0) throw std::invalid_argument("lpips_forward: null out/workspace");
        if (mode != kNormLpips && mode != kNormStable) throw std::invalid_argument("lpips_forward: bad mode");
        lpips_cuda_forward(x, y, weight, eps, mode, out, map, ws, ws_numel, stream);
      },
      pybind11::arg("fx"), pybind11::arg("fy"), pybind11::arg("weight"), pybind11::arg("eps"), pybind11::arg("mode"),
      pybind11::arg("out"), pybind11::arg("map"), pybind11::arg("workspace"), pybind11::arg("workspace_numel"),
      pybind11::arg("stream"), "Fused LPIPS layer distance on the given CUDA stream (asynchronous).");
  m.def(
      "lpips_backward",
      [](const TensorArg& fx, const TensorArg& fy, uintptr_t weight, const TensorArg& grad, double eps, int mode,
         bool spatial, const TensorArg& gx, const TensorArg& gy, uintptr_t stream) {
        const RawView4 x = to_view(fx, "fx"), y = to_view(fy, "fy"), g = to_view(grad, "grad");
        const RawView4 ox = to_view(gx, "gx"), oy = to_view(gy, "gy");
        check_feature_pair(x, y, "lpips_backward");
        if (mode != kNormLpips && mode != kNormStable) throw std::invalid_argument("lpips_backward: bad mode");
        if (g.dtype != (x.dtype == kFloat64 ? kFloat64 : kFloat32)) throw std::invalid_argument("lpips_backward: grad dtype");
        for (const RawView4* o : {&ox, &oy})
          if (o->data != 0 && o->dtype != x.dtype) throw std::invalid_argument("lpips_backward: gradient dtype");
        lpips_cuda_backward(x, y, weight, g, spatial, eps, mode, ox, oy, stream);
      },
      pybind11::arg("fx"), pybind11::arg("fy"), pybind11::arg("weight"), pybind11::arg("grad"), pybind11::arg("eps"),
      pybind11::arg("mode"), pybind11::arg("spatial"), pybind11::arg("gx"), pybind11::arg("gy"),
      pybind11::arg("stream"),
      "Fused LPIPS layer backward (dd/dfx, dd/dfy where their data pointers are non-zero) on the given CUDA stream.");
}

}  // namespace

PF_REGISTER_OP(lpips_cuda, register_lpips_cuda)

}  // namespace percept_fast
