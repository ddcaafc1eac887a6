// lpips_distance, CPU kernel: one fused pass over both feature maps (every element read once), fp32
// accumulation (fp64 for fp64 inputs), threads over (batch, tile of pixels). Maths: lpips_kernel.h.
#include <stdexcept>
#include <string>
#include <vector>

#include "lpips_kernel.h"
#include "registry.h"

namespace percept_fast {
namespace {

// pixels per tile: 16 keeps the five running sums of the pixel-inner loop in AVX2 registers
constexpr int64_t kTile = 16;

template <typename T, typename Acc, bool kWeighted, bool kContig, int kN = 0>
Acc lpips_tile_pixel_inner(const View4<T>& x, const View4<T>& y, const Acc* wt, Acc eps, int mode, int64_t b,
                           int64_t p0, int64_t np_rt, Acc* map_row) {
  // kN > 0: compile-time pixel count (a whole tile, or a small plane), so the running sums live in registers
  const int64_t np = kN > 0 ? kN : np_rt;
  const int64_t C = x.size[1], W = x.size[3];
  Acc axx[kTile], ayy[kTile], awxx[kTile], awyy[kTile], awxy[kTile];
  for (int64_t i = 0; i < kTile; ++i) axx[i] = ayy[i] = awxx[i] = awyy[i] = awxy[i] = Acc(0);
  int64_t offx[kTile], offy[kTile];
  if (!kContig) {
    for (int64_t i = 0; i < np; ++i) {
      const int64_t p = p0 + i, h = p / W, w = p % W;
      offx[i] = h * x.stride[2] + w * x.stride[3];
      offy[i] = h * y.stride[2] + w * y.stride[3];
    }
  }
  const T* xb = x.data + b * x.stride[0];
  const T* yb = y.data + b * y.stride[0];
  for (int64_t c = 0; c < C; ++c) {
    const T* xc = xb + c * x.stride[1];
    const T* yc = yb + c * y.stride[1];
    const Acc wc = kWeighted ? wt[c] : Acc(1);
    if (kContig) {
      // pixels contiguous (stride 1) in both tensors: vectorised over pixels
      xc += p0;
      yc += p0;
      for (int64_t i = 0; i < np; ++i) {
        const Acc xv = Load<Acc, T>::get(xc + i), yv = Load<Acc, T>::get(yc + i);
        // explicit FMAs for the running sums (the file is built with -ffp-contract=off so that the final
        // per-pixel maths stays symmetric in x and y)
        axx[i] = std::fma(xv, xv, axx[i]);
        ayy[i] = std::fma(yv, yv, ayy[i]);
        if (kWeighted) {
          const Acc wx = wc * xv, wy = wc * yv;
          awxx[i] = std::fma(wx, xv, awxx[i]);
          awyy[i] = std::fma(wy, yv, awyy[i]);
          awxy[i] = std::fma(wx, yv, awxy[i]);
        } else {
          awxy[i] = std::fma(xv, yv, awxy[i]);
        }
      }
    } else {
      for (int64_t i = 0; i < np; ++i) {
        const Acc xv = Load<Acc, T>::get(xc + offx[i]), yv = Load<Acc, T>::get(yc + offy[i]);
        const Acc xx = xv * xv, yy = yv * yv, xy = xv * yv;
        axx[i] += xx;
        ayy[i] += yy;
        awxy[i] += wc * xy;
        if (kWeighted) {
          awxx[i] += wc * xx;
          awyy[i] += wc * yy;
        }
      }
    }
  }
  Acc sum = 0;
  for (int64_t i = 0; i < np; ++i) {
    const Acc d = kWeighted ? lpips_pixel(axx[i], ayy[i], awxx[i], awyy[i], awxy[i], eps, mode)
                            : lpips_pixel(axx[i], ayy[i], axx[i], ayy[i], awxy[i], eps, mode);
    if (map_row) map_row[p0 + i] = d;
    sum += d;
  }
  return sum;
}

// Channels-last (channel stride 1 in both): per pixel, a contiguous channel vector reduced in 8 lanes.
template <typename T, typename Acc, bool kWeighted>
Acc lpips_tile_channels_last(const View4<T>& x, const View4<T>& y, const Acc* wt, Acc eps, int mode, int64_t b,
                             int64_t p0, int64_t np, Acc* map_row) {
  constexpr int L = 8;
  const int64_t C = x.size[1], W = x.size[3];
  Acc sum = 0;
  for (int64_t i = 0; i < np; ++i) {
    const int64_t p = p0 + i, h = p / W, w = p % W;
    const T* xp = x.data + b * x.stride[0] + h * x.stride[2] + w * x.stride[3];
    const T* yp = y.data + b * y.stride[0] + h * y.stride[2] + w * y.stride[3];
    Acc axx[L] = {}, ayy[L] = {}, awxx[L] = {}, awyy[L] = {}, awxy[L] = {};
    int64_t c = 0;
    for (; c + L <= C; c += L) {
      for (int l = 0; l < L; ++l) {
        const Acc xv = Load<Acc, T>::get(xp + c + l), yv = Load<Acc, T>::get(yp + c + l);
        axx[l] = std::fma(xv, xv, axx[l]);
        ayy[l] = std::fma(yv, yv, ayy[l]);
        if (kWeighted) {
          const Acc wx = wt[c + l] * xv, wy = wt[c + l] * yv;
          awxx[l] = std::fma(wx, xv, awxx[l]);
          awyy[l] = std::fma(wy, yv, awyy[l]);
          awxy[l] = std::fma(wx, yv, awxy[l]);
        } else {
          awxy[l] = std::fma(xv, yv, awxy[l]);
        }
      }
    }
    for (int l = 0; c < C; ++c, ++l) {
      const Acc xv = Load<Acc, T>::get(xp + c), yv = Load<Acc, T>::get(yp + c);
      const Acc wc = kWeighted ? wt[c] : Acc(1);
      axx[l] += xv * xv;
      ayy[l] += yv * yv;
      awxy[l] += wc * (xv * yv);
      if (kWeighted) {
        awxx[l] += wc * (xv * xv);
        awyy[l] += wc * (yv * yv);
      }
    }
    Acc sxx = 0, syy = 0, swxx = 0, swyy = 0, swxy = 0;
    for (int l = 0; l < L; ++l) {
      sxx += axx[l];
      syy += ayy[l];
      swxx += awxx[l];
      swyy += awyy[l];
      swxy += awxy[l];
    }
    const Acc d = kWeighted ? lpips_pixel(sxx, syy, swxx, swyy, swxy, eps, mode)
                            : lpips_pixel(sxx, syy, sxx, syy, swxy, eps, mode);
    if (map_row) map_row[p] = d;
    sum += d;
  }
  return sum;
}

template <typename T, typename Acc, bool kWeighted>
void lpips_run(const View4<T>& x, const View4<T>& y, const Acc* wt, Acc eps, int mode, Acc* out, Acc* map) {
  const int64_t B = x.size[0], C = x.size[1], H = x.size[2], W = x.size[3], P = H * W;
  const bool contig = pixels_unit_stride(x.size, x.stride) && pixels_unit_stride(y.size, y.stride);
  const bool chlast = !contig && C > 1 && x.stride[1] == 1 && y.stride[1] == 1;
  const int64_t ntiles = (P + kTile - 1) / kTile;
  const int64_t ntasks = B * ntiles;
  std::vector<Acc> partial(static_cast<size_t>(ntasks), Acc(0));
  const int64_t min_tasks = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, kTile * C));
  parallel_for(ntasks, min_tasks, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / ntiles, p0 = (t % ntiles) * kTile, np = std::min(kTile, P - p0);
      Acc* map_row = map ? map + b * P : nullptr;
      Acc s;
      if (contig && np == kTile)
        s = lpips_tile_pixel_inner<T, Acc, kWeighted, true, kTile>(x, y, wt, eps, mode, b, p0, np, map_row);
      else if (contig && np == 8)
        s = lpips_tile_pixel_inner<T, Acc, kWeighted, true, 8>(x, y, wt, eps, mode, b, p0, np, map_row);
      else if (contig && np == 4)
        s = lpips_tile_pixel_inner<T, Acc, kWeighted, true, 4>(x, y, wt, eps, mode, b, p0, np, map_row);
      else if (contig && np == 1)
        s = lpips_tile_pixel_inner<T, Acc, kWeighted, true, 1>(x, y, wt, eps, mode, b, p0, np, map_row);
      else if (contig)
        s = lpips_tile_pixel_inner<T, Acc, kWeighted, true>(x, y, wt, eps, mode, b, p0, np, map_row);
      else if (chlast)
        s = lpips_tile_channels_last<T, Acc, kWeighted>(x, y, wt, eps, mode, b, p0, np, map_row);
      else
        s = lpips_tile_pixel_inner<T, Acc, kWeighted, false>(x, y, wt, eps, mode, b, p0, np, map_row);
      partial[static_cast<size_t>(t)] = s;
    }
  });
  // fixed-order reduction: deterministic for any thread count
  for (int64_t b = 0; b < B; ++b) {
    Acc s = 0;
    for (int64_t j = 0; j < ntiles; ++j) s += partial[static_cast<size_t>(b * ntiles + j)];
    out[b] = s / static_cast<Acc>(P);
  }
}

// out: [B] accumulation dtype (float32; float64 for float64 inputs); map: [B, H*W] same dtype or 0;
// weight: [C] contiguous accumulation dtype or 0 (unweighted).
void lpips_forward(const TensorArg& fx, const TensorArg& fy, uintptr_t weight, double eps, int mode, uintptr_t out,
                   uintptr_t map) {
  const RawView4 x = to_view(fx, "fx"), y = to_view(fy, "fy");
  check_feature_pair(x, y, "lpips_forward");
  if (out == 0) throw std::invalid_argument("lpips_forward: null out");
  if (mode != kNormLpips && mode != kNormStable) throw std::invalid_argument("lpips_forward: bad mode");
  pybind11::gil_scoped_release nogil;
  dispatch_dtype(x.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using Acc = typename AccOf<T>::type;
    const auto xv = x.as<T>(), yv = y.as<T>();
    const Acc* w = reinterpret_cast<const Acc*>(weight);
    Acc* o = reinterpret_cast<Acc*>(out);
    Acc* m = reinterpret_cast<Acc*>(map);
    if (w)
      lpips_run<T, Acc, true>(xv, yv, w, static_cast<Acc>(eps), mode, o, m);
    else
      lpips_run<T, Acc, false>(xv, yv, w, static_cast<Acc>(eps), mode, o, m);
  });
}

void register_lpips(pybind11::module_& m) {
  m.def("lpips_forward", &lpips_forward, pybind11::arg("fx"), pybind11::arg("fy"), pybind11::arg("weight"),
        pybind11::arg("eps"), pybind11::arg("mode"), pybind11::arg("out"), pybind11::arg("map"),
        "Fused LPIPS layer distance: out[b] = mean_hw sum_c w_c (x/n(x) - y/n(y))^2 (map[b, hw] if map != 0).");
}

}  // namespace

PF_REGISTER_OP(lpips, register_lpips)

}  // namespace percept_fast
