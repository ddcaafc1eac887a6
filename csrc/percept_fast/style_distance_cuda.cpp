// style_distance, CUDA backend bindings (percept_fast._C_cuda); the kernels are in style_distance.cu.
#include <stdexcept>
#include <string>

#include "registry.h"

namespace percept_fast {
namespace style {

int64_t cuda_num_pairs(int64_t rows);
std::string cuda_partials(const RawView4& x0, const RawView4& x1, bool kernel, double* out, int64_t kper,
                          int64_t splits, uintptr_t ws, uintptr_t stream);
int64_t cuda_cross_tiles(int64_t P, bool self_only);
std::string cuda_cross(const RawView4& x, const RawView4& y, bool self_only, double* out, uintptr_t stream);

namespace {

void register_style_distance_cuda(pybind11::module_& m) {
  m.def(
      "style_distance_num_pairs", [](int64_t rows, bool /*kernel*/) { return cuda_num_pairs(rows); },
      pybind11::arg("rows"), pybind11::arg("kernel"),
      "Number of tile pairs (columns of the partial-sum buffer) for a matrix of `rows` rows.");
  m.def(
      "style_distance_partials",
      [](const TensorArg& x0, const TensorArg& x1, bool kernel, uintptr_t out_ptr, uintptr_t stream, int64_t kper,
         int64_t splits, uintptr_t ws_ptr) {
        const RawView4 a = to_view(x0, "x0"), b = to_view(x1, "x1");
        for (int i = 0; i < 4; ++i) {
          if (a.size[i] != b.size[i]) throw std::invalid_argument("style_distance: x0 and x1 must have the same shape");
          if (a.size[i] <= 0) throw std::invalid_argument("style_distance: every dimension must be >= 1");
        }
        if (a.dtype != b.dtype) throw std::invalid_argument("style_distance: x0 and x1 must have the same dtype");
        if (out_ptr == 0) throw std::invalid_argument("style_distance: null output pointer");
        if (splits > 1 && (ws_ptr == 0 || kper <= 0 || kernel))
          throw std::invalid_argument("style_distance: split-K needs method 'diff', a workspace and kper > 0");
        const std::string err =
            cuda_partials(a, b, kernel, reinterpret_cast<double*>(out_ptr), kper, splits, ws_ptr, stream);
        if (!err.empty()) throw std::runtime_error(err);
      },
      pybind11::arg("x0"), pybind11::arg("x1"), pybind11::arg("kernel"), pybind11::arg("out_ptr"),
      pybind11::arg("stream"), pybind11::arg("kper") = 0, pybind11::arg("splits") = 1, pybind11::arg("ws_ptr") = 0,
      "Weighted per-tile-pair sums of squares into out (float64 [B, num_pairs], device memory) on `stream`; with "
      "splits > 1 ('diff' only) partial D tiles go to ws ([B, num_pairs, splits, 64, 64], accumulation dtype).");
  m.def(
      "style_cross_num_tiles", [](int64_t P, bool self_only) { return cuda_cross_tiles(P, self_only); },
      pybind11::arg("P"), pybind11::arg("self_only"), "Columns of the style_cross_sq partial buffer.");
  m.def(
      "style_cross_sq",
      [](const TensorArg& x, const TensorArg& y, bool self_only, uintptr_t out_ptr, uintptr_t stream) {
        const RawView4 a = to_view(x, "x"), b = to_view(y, "y");
        for (int i = 1; i < 4; ++i)
          if (a.size[i] != b.size[i]) throw std::invalid_argument("style_cross_sq: x and y must agree in [C, H, W]");
        for (int i = 0; i < 4; ++i)
          if (a.size[i] <= 0 || b.size[i] <= 0) throw std::invalid_argument("style_cross_sq: every dimension must be >= 1");
        if (a.dtype != b.dtype) throw std::invalid_argument("style_cross_sq: x and y must have the same dtype");
        if (out_ptr == 0) throw std::invalid_argument("style_cross_sq: null output pointer");
        const std::string err = cuda_cross(a, b, self_only, reinterpret_cast<double*>(out_ptr), stream);
        if (!err.empty()) throw std::runtime_error(err);
      },
      pybind11::arg("x"), pybind11::arg("y"), pybind11::arg("self_only"), pybind11::arg("out_ptr"),
      pybind11::arg("stream"),
      "Per-tile ||X_n^T Y_m||^2 partials into out (float64 [N*M or N, num_tiles], device memory) on `stream`.");
}

}  // namespace
}  // namespace style
}  // namespace percept_fast

PF_REGISTER_OP(style_distance_cuda, percept_fast::style::register_style_distance_cuda)
