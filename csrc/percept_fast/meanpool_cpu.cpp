// meanpool_distance, CPU kernel: spatial channel means of both maps in one pass (every element read once,
// fp32 lanes summed into fp64 per block), then unit-normalisation and squared distance / C per sample
// (meanpool_finalize in lpips_kernel.h, shared with CUDA). A NaN/Inf input makes its sample's distance NaN, so
// only such samples are re-checked (sums, then the planes whose sum is not finite): validation costs no extra pass.
#include <array>
#include <stdexcept>
#include <utility>
#include <vector>

#include "lpips_kernel.h"
#include "registry.h"

namespace percept_fast {
namespace {

constexpr int64_t kBlock = 1024;  // elements per fp32 partial before it is added to the fp64 total
// elements a worker thread must get before one is started: a thread start costs tens of us (more on a loaded
// machine), about what summing 256K elements takes
constexpr int64_t kMinWorkPerThread = int64_t{1} << 18;
// planes up to this size, when adjacent (channel stride P), are summed by small_plane_sums
constexpr int64_t kSmallPlane = 16;

// Sums of n adjacent planes of kP pixels each (base[c * kP + p]). kP is a compile-time constant so the loop over
// planes vectorises (kP-strided loads, permuted into lanes) instead of a kP-long scalar sum per plane: small planes
// (ResNet layer4 at 64 px: 2x2) are otherwise bound by the per-plane overhead, not by memory.
template <typename T, typename Acc, int kP>
void small_plane_sums(const T* base, int64_t n, double* out) {
  for (int64_t c = 0; c < n; ++c) {
    Acc s = 0;
    for (int p = 0; p < kP; ++p) s += Load<Acc, T>::get(base + c * kP + p);
    out[c] = static_cast<double>(s);
  }
}

template <typename T>
using SmallSumsFn = void (*)(const T*, int64_t, double*);

template <typename T, size_t... I>
constexpr std::array<SmallSumsFn<T>, sizeof...(I)> small_sums_table(std::index_sequence<I...>) {
  return {&small_plane_sums<T, typename AccOf<T>::type, static_cast<int>(I) + 1>...};
}

// small_plane_sums for P = 1..kSmallPlane, indexed by P - 1.
template <typename T>
SmallSumsFn<T> small_sums_for(int64_t P) {
  static constexpr auto table = small_sums_table<T>(std::make_index_sequence<kSmallPlane>{});
  return table[static_cast<size_t>(P - 1)];
}

// Sum of the P pixels of plane (b, c) of v (any strides).
template <typename T, typename Acc>
double plane_sum(const View4<T>& v, int64_t b, int64_t c, bool unit) {
  const int64_t H = v.size[2], W = v.size[3], P = H * W;
  const T* base = v.data + b * v.stride[0] + c * v.stride[1];
  double total = 0;
  if (unit && P <= 32) {  // small plane: a plain running sum (the lane set-up would dominate)
    Acc s = 0;
    for (int64_t i = 0; i < P; ++i) s += Load<Acc, T>::get(base + i);
    return static_cast<double>(s);
  }
  if (unit) {
    // 8 lanes: wider (16/32, tree-reduced) measured no faster on 256-pixel planes and slower on 49-pixel ones
    constexpr int L = 8;
    for (int64_t p0 = 0; p0 < P; p0 += kBlock) {
      const int64_t n = std::min(kBlock, P - p0);
      Acc lane[L] = {};
      int64_t i = 0;
      for (; i + L <= n; i += L)
        for (int l = 0; l < L; ++l) lane[l] += Load<Acc, T>::get(base + p0 + i + l);
      for (int l = 0; i < n; ++i, ++l) lane[l] += Load<Acc, T>::get(base + p0 + i);
      Acc s = 0;
      for (int l = 0; l < L; ++l) s += lane[l];
      total += static_cast<double>(s);
    }
  } else {
    for (int64_t h = 0; h < H; ++h) {
      Acc s = 0;
      for (int64_t w = 0; w < W; ++w) s += Load<Acc, T>::get(base + h * v.stride[2] + w * v.stride[3]);
      total += static_cast<double>(s);
    }
  }
  return total;
}

// Channels-last: sums of channels [c0, c1) of sample b, looping over pixels with channels inner.
template <typename T, typename Acc>
void channel_stripe_sums(const View4<T>& v, int64_t b, int64_t c0, int64_t c1, double* out) {
  const int64_t H = v.size[2], W = v.size[3], n = c1 - c0;
  std::vector<Acc> acc(static_cast<size_t>(n), Acc(0));
  std::vector<double> tot(static_cast<size_t>(n), 0.0);
  int64_t count = 0;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w) {
      const T* p = v.data + b * v.stride[0] + h * v.stride[2] + w * v.stride[3] + c0;
      for (int64_t i = 0; i < n; ++i) acc[static_cast<size_t>(i)] += Load<Acc, T>::get(p + i);
      if (++count == kBlock / 8) {
        for (int64_t i = 0; i < n; ++i) {
          tot[static_cast<size_t>(i)] += static_cast<double>(acc[static_cast<size_t>(i)]);
          acc[static_cast<size_t>(i)] = Acc(0);
        }
        count = 0;
      }
    }
  for (int64_t i = 0; i < n; ++i) out[i] = tot[static_cast<size_t>(i)] + static_cast<double>(acc[static_cast<size_t>(i)]);
}

// Plane sums of x and y (both [B, C, H, W] with unit-stride planes) in one parallel_for: one worker start per
// call instead of two, none for small maps (AlexNet / SqueezeNet taps at 64 px).
template <typename T>
void plane_sums_pair(const View4<T>& x, const View4<T>& y, std::vector<double>& sx, std::vector<double>& sy) {
  using Acc = typename AccOf<T>::type;
  const int64_t B = x.size[0], C = x.size[1], P = x.size[2] * x.size[3];
  constexpr int64_t kPlanes = 64;
  const int64_t nc = (C + kPlanes - 1) / kPlanes, nt = B * nc;
  // small adjacent planes of both maps: summed kPlanes at a time by small_plane_sums
  const SmallSumsFn<T> small =
      P <= kSmallPlane && (C == 1 || (x.stride[1] == P && y.stride[1] == P)) ? small_sums_for<T>(P) : nullptr;
  parallel_for(2 * nt, std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, P * kPlanes)),
               [&](int64_t t0, int64_t t1) {
                 for (int64_t t = t0; t < t1; ++t) {
                   const bool second = t >= nt;
                   const View4<T>& v = second ? y : x;
                   double* out = second ? sy.data() : sx.data();
                   const int64_t u = second ? t - nt : t;
                   const int64_t b = u / nc, c0 = (u % nc) * kPlanes, c1 = std::min(C, c0 + kPlanes);
                   if (small)
                     small(v.ptr(b, c0, 0, 0), c1 - c0, out + b * C + c0);
                   else
                     for (int64_t c = c0; c < c1; ++c) out[b * C + c] = plane_sum<T, Acc>(v, b, c, true);
                 }
               });
}

template <typename T>
void channel_sums(const View4<T>& v, std::vector<double>& sums) {
  using Acc = typename AccOf<T>::type;
  const int64_t B = v.size[0], C = v.size[1], P = v.size[2] * v.size[3];
  const bool unit = pixels_unit_stride(v.size, v.stride);
  if (!unit && C > 1 && v.stride[1] == 1) {
    constexpr int64_t kStripe = 256;
    const int64_t ns = (C + kStripe - 1) / kStripe;
    parallel_for(B * ns, std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, P * kStripe)),
                 [&](int64_t t0, int64_t t1) {
                   for (int64_t t = t0; t < t1; ++t) {
                     const int64_t b = t / ns, c0 = (t % ns) * kStripe, c1 = std::min(C, c0 + kStripe);
                     channel_stripe_sums<T, Acc>(v, b, c0, c1, sums.data() + b * C + c0);
                   }
                 });
    return;
  }
  // tasks of up to 64 planes of one sample (no per-plane index division: small planes are cheap)
  constexpr int64_t kPlanes = 64;
  const int64_t nc = (C + kPlanes - 1) / kPlanes;
  parallel_for(B * nc, std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, P * kPlanes)),
               [&](int64_t t0, int64_t t1) {
                 for (int64_t t = t0; t < t1; ++t) {
                   const int64_t b = t / nc, c0 = (t % nc) * kPlanes, c1 = std::min(C, c0 + kPlanes);
                   for (int64_t c = c0; c < c1; ++c) sums[static_cast<size_t>(b * C + c)] = plane_sum<T, Acc>(v, b, c, unit);
                 }
               });
}

// Cold path: plane (b, c) of v holds a NaN/Inf element (its sum was not finite; finite values can overflow it).
template <typename T>
bool plane_has_nonfinite(const View4<T>& v, int64_t b, int64_t c) {
  using Acc = typename AccOf<T>::type;
  for (int64_t h = 0; h < v.size[2]; ++h)
    for (int64_t w = 0; w < v.size[3]; ++w)
      if (!std::isfinite(Load<Acc, T>::get(v.ptr(b, c, h, w)))) return true;
  return false;
}

// out: [B] in the accumulation dtype (float32; float64 for float64 inputs). Returns InputFlags (NaN/Inf in fx / fy;
// out then holds NaN for those samples and the caller raises instead of returning it).
int meanpool_forward(const TensorArg& fx, const TensorArg& fy, double eps, int mode, uintptr_t out) {
  const RawView4 x = to_view(fx, "fx"), y = to_view(fy, "fy");
  check_feature_pair(x, y, "meanpool_forward");
  if (out == 0) throw std::invalid_argument("meanpool_forward: null out");
  if (mode != kNormLpips && mode != kNormStable) throw std::invalid_argument("meanpool_forward: bad mode");
  pybind11::gil_scoped_release nogil;
  int flags = 0;
  dispatch_dtype(x.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using Acc = typename AccOf<T>::type;
    const int64_t B = x.size[0], C = x.size[1], P = x.size[2] * x.size[3];
    // reused across calls (per calling thread): fresh multi-MB buffers cost page faults on every call
    static thread_local std::vector<double> sx, sy;
    sx.resize(static_cast<size_t>(B * C));
    sy.resize(static_cast<size_t>(B * C));
    const View4<T> vx = x.as<T>(), vy = y.as<T>();
    if (pixels_unit_stride(vx.size, vx.stride) && pixels_unit_stride(vy.size, vy.stride)) {
      plane_sums_pair<T>(vx, vy, sx, sy);
    } else {
      channel_sums<T>(vx, sx);
      channel_sums<T>(vy, sy);
    }
    std::vector<Acc> mx(static_cast<size_t>(C)), my(static_cast<size_t>(C));
    Acc* o = reinterpret_cast<Acc*>(out);
    const double inv_p = 1.0 / static_cast<double>(P);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t c = 0; c < C; ++c) {
        mx[static_cast<size_t>(c)] = static_cast<Acc>(sx[static_cast<size_t>(b * C + c)] * inv_p);
        my[static_cast<size_t>(c)] = static_cast<Acc>(sy[static_cast<size_t>(b * C + c)] * inv_p);
      }
      o[b] = meanpool_finalize<Acc>(mx.data(), my.data(), C, 1, static_cast<Acc>(eps), mode);
      if (std::isfinite(o[b])) continue;  // a NaN/Inf mean makes the distance NaN (Inf * 0 or NaN)
      for (int64_t c = 0; c < C; ++c) {
        const size_t i = static_cast<size_t>(b * C + c);
        if (!std::isfinite(sx[i]) && plane_has_nonfinite(vx, b, c)) flags |= kNonFiniteX;
        if (!std::isfinite(sy[i]) && plane_has_nonfinite(vy, b, c)) flags |= kNonFiniteY;
      }
    }
  });
  return flags;
}

void register_meanpool(pybind11::module_& m) {
  m.def("meanpool_forward", &meanpool_forward, pybind11::arg("fx"), pybind11::arg("fy"), pybind11::arg("eps"),
        pybind11::arg("mode"), pybind11::arg("out"),
        "Meanpool distance: out[b] = sum_c (m/n(m) - k/n(k))^2 / C with m, k the spatial channel means. "
        "Returns input flags: 1 fx / 2 fy has NaN or Inf.");
}

}  // namespace

PF_REGISTER_OP(meanpool, register_meanpool)

}  // namespace percept_fast
