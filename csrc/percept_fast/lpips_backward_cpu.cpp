// lpips_distance backward, CPU kernel: the gradients w.r.t. both feature maps (and the channel weights) recomputed
// from the inputs alone (nothing of the forward is kept: no normalised features). Per pixel, pass 1 forms the five
// channel sums of the forward, then lpips_pixel_grad (lpips_kernel.h, shared with the CUDA kernel) turns them into
// five coefficients and pass 2 writes dd/dx_c and dd/dy_c. A task is a run of pixels whose channel vectors stay in
// L2 between the two passes, so the inputs are read from memory once and the gradients written once.
// Accumulation in float32 (float64 for float64 inputs); gradients are stored in the inputs' dtype.
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "lpips_cpu_lanes.h"
#include "lpips_kernel.h"
#include "registry.h"

namespace percept_fast {
namespace {

// pixel budget of a task of the contiguous path: its x and y channel vectors (2 C elements a pixel) fit in this
// many bytes, so pass 2 re-reads them from L2 (512 KiB a core on the machines measured)
constexpr int64_t kTaskBytes = int64_t{192} << 10;
constexpr int64_t kRowMax = 256;
constexpr int64_t kMinWorkPerThread = int64_t{1} << 17;  // elements of each input per thread (3 passes of work each)
// the flat small-plane samples: the pooled workers wake in a few us when calls come back to back (as the forward's
// kMinFlatWorkPerThread). Forward + backward interleaved in one process (2-vCPU Xeon, fp32, weighted): 64x384x3x3
// 632 -> 499 us, 64x256x3x3 487 -> 368 us; 2^14 gained nothing clear.
constexpr int64_t kMinFlatWorkPerThread = int64_t{1} << 15;

template <typename T>
bool pixel_has_nonfinite(const View4<T>& v, int64_t b, int64_t h, int64_t w) {
  using Acc = typename AccOf<T>::type;
  for (int64_t c = 0; c < v.size[1]; ++c)
    if (!std::isfinite(Load<Acc, T>::get(v.ptr(b, c, h, w)))) return true;
  return false;
}

// 0, or NaN when pixel (b, h, w) holds a NaN/Inf input (its sums of squares are then not finite; a finite sum that
// overflowed is not poisoned: the forward takes that vector as 0).
template <typename T, typename Acc>
inline Acc pixel_poison(const View4<T>& x, const View4<T>& y, int64_t b, int64_t h, int64_t w, Acc sxx, Acc syy) {
  if (std::isfinite(sxx) && std::isfinite(syy)) return Acc(0);
  if ((!std::isfinite(sxx) && pixel_has_nonfinite(x, b, h, w)) || (!std::isfinite(syy) && pixel_has_nonfinite(y, b, h, w)))
    return std::numeric_limits<Acc>::quiet_NaN();
  return Acc(0);
}

template <typename T, typename Acc>
struct BwdArgs {
  View4<T> x, y;
  OutView4<T> gx, gy;
  const Acc* wt;  // nullptr: unweighted
  LpipsGradIn<Acc> g;
  Acc eps;
  int mode;
};

constexpr int64_t kPrefetchChannels = 4;
// planes up to this many pixels are one task each whatever C: a sample's C planes are then one sequential run for
// both passes, which beat L2-sized rows of a few pixels at the plane stride (8 pixels a row for C = 2048 at 7x7:
// forward + input gradient 7.7 -> 3.3-4.2 ms on 64x2048x7x7, 4.1-4.2 -> 3.2-3.8 ms on 64x512x14x14)
constexpr int64_t kWholePlaneMax = 256;

// Contiguous pixels (NCHW-like): a row of np <= kRowMax pixels, channels outer, pixels inner (vectorised).
template <typename T, typename Acc, bool kWeighted>
void bwd_row_contig(const BwdArgs<T, Acc>& a, int64_t b, int64_t p0, int64_t np, Acc* gw_part) {
  const int64_t C = a.x.size[1], W = a.x.size[3];
  alignas(64) Acc sxx[kRowMax], syy[kRowMax], swxx[kRowMax], swyy[kRowMax], swxy[kRowMax];
  for (int64_t i = 0; i < np; ++i) sxx[i] = syy[i] = swxx[i] = swyy[i] = swxy[i] = Acc(0);
  const T* xb = a.x.data + b * a.x.stride[0] + p0;
  const T* yb = a.y.data + b * a.y.stride[0] + p0;
  // a row that is part of a larger plane reads C short runs (np pixels) at the plane stride: too short for the
  // hardware prefetchers, so the runs kPrefetchChannels channels ahead are prefetched (pass 2 finds them in L2)
  const bool prefetch = np < a.x.size[2] * a.x.size[3];
  for (int64_t c = 0; c < C; ++c) {
    const T* xc = xb + c * a.x.stride[1];
    const T* yc = yb + c * a.y.stride[1];
    if (prefetch && c + kPrefetchChannels < C) {
      prefetch_lines(xc + kPrefetchChannels * a.x.stride[1], np);
      prefetch_lines(yc + kPrefetchChannels * a.y.stride[1], np);
    }
    const Acc wc = kWeighted ? a.wt[c] : Acc(1);
    for (int64_t i = 0; i < np; ++i) {
      const Acc xv = Load<Acc, T>::get(xc + i), yv = Load<Acc, T>::get(yc + i);
      sxx[i] = std::fma(xv, xv, sxx[i]);
      syy[i] = std::fma(yv, yv, syy[i]);
      if (kWeighted) {
        const Acc wx = wc * xv;
        swxx[i] = std::fma(wx, xv, swxx[i]);
        swyy[i] = std::fma(wc * yv, yv, swyy[i]);
        swxy[i] = std::fma(wx, yv, swxy[i]);
      } else {
        swxy[i] = std::fma(xv, yv, swxy[i]);
      }
    }
  }
  // coefficients (reusing the sum arrays' storage is not worth the aliasing: 7 more small arrays)
  alignas(64) Acc axx[kRowMax], axy[kRowMax], ayy[kRowMax], kx[kRowMax], ky[kRowMax], ix[kRowMax], iy[kRowMax],
      gp[kRowMax];
  for (int64_t i = 0; i < np; ++i) {
    const int64_t p = p0 + i, h = p / W, w = p % W;
    const Acc poison = pixel_poison(a.x, a.y, b, h, w, sxx[i], syy[i]);
    const Acc g = a.g.at(b, h, w);
    const LpipsGrad<Acc> r = kWeighted
                                 ? lpips_pixel_grad(sxx[i], syy[i], swxx[i], swyy[i], swxy[i], g, a.eps, a.mode, poison)
                                 : lpips_pixel_grad(sxx[i], syy[i], sxx[i], syy[i], swxy[i], g, a.eps, a.mode, poison);
    axx[i] = r.axx;
    axy[i] = r.axy;
    ayy[i] = r.ayy;
    kx[i] = r.kx;
    ky[i] = r.ky;
    ix[i] = r.ix;
    iy[i] = r.iy;
    gp[i] = g + poison;
  }
  T* gxb = a.gx.data ? a.gx.data + b * a.gx.stride[0] + p0 : nullptr;
  T* gyb = a.gy.data ? a.gy.data + b * a.gy.stride[0] + p0 : nullptr;
  for (int64_t c = 0; c < C; ++c) {
    const T* xc = xb + c * a.x.stride[1];
    const T* yc = yb + c * a.y.stride[1];
    const Acc wc = kWeighted ? a.wt[c] : Acc(1);
    if (gxb) {
      T* o = gxb + c * a.gx.stride[1];
      for (int64_t i = 0; i < np; ++i) {
        const Acc xv = Load<Acc, T>::get(xc + i), yv = Load<Acc, T>::get(yc + i);
        Store<T, Acc>::put(o + i, wc * (axx[i] * xv - axy[i] * yv) - kx[i] * xv);
      }
    }
    if (gyb) {
      T* o = gyb + c * a.gy.stride[1];
      for (int64_t i = 0; i < np; ++i) {
        const Acc xv = Load<Acc, T>::get(xc + i), yv = Load<Acc, T>::get(yc + i);
        Store<T, Acc>::put(o + i, wc * (ayy[i] * yv - axy[i] * xv) - ky[i] * yv);
      }
    }
    if (gw_part) {
      Acc s = 0;
      for (int64_t i = 0; i < np; ++i) {
        const Acc t = Load<Acc, T>::get(xc + i) * ix[i] - Load<Acc, T>::get(yc + i) * iy[i];
        s += gp[i] * (t * t);
      }
      gw_part[c] += s;
    }
  }
}

// Planes of at most kFlatPlaneMax pixels whose C planes are adjacent (channel stride P in the inputs and in the
// gradients written): per-channel loops of P <= 16 pixels are bound by their loop overhead, so a sample is one
// flat run of C * P elements, as in the forward's lpips_sample_flat. Element j belongs to pixel j % P; the sums and
// coefficients are kept per lane j % L (L = a multiple of lcm(P, 8)), so both passes walk contiguous memory in
// long vectorised loops (lpips_cpu_lanes.h). wexp: the weight expanded to one value per element.
constexpr int64_t kFlatPlaneMax = 16;

template <typename T, typename Acc, bool kWeighted>
void bwd_sample_flat(const BwdArgs<T, Acc>& a, int64_t b, const Acc* wexp) {
  const int64_t W = a.x.size[3], P = a.x.size[2] * W, n = a.x.size[1] * P;
  const int64_t L = flat_lane_count(P);
  const T* xs = a.x.data + b * a.x.stride[0];
  const T* ys = a.y.data + b * a.y.stride[0];
  alignas(64) Acc lxx[kFlatLanes] = {}, lyy[kFlatLanes] = {}, lwxx[kFlatLanes] = {}, lwyy[kFlatLanes] = {},
                  lwxy[kFlatLanes] = {};
  const auto sums = [&](int64_t j0, int64_t m) {
    for (int64_t j = 0; j < m; ++j) {
      add_to_sums<kWeighted>(Load<Acc, T>::get(xs + j0 + j), Load<Acc, T>::get(ys + j0 + j),
                             kWeighted ? wexp[j0 + j] : Acc(1), lxx[j], lyy[j], lwxx[j], lwyy[j], lwxy[j]);
    }
  };
  bool summed = false;
#if defined(__AVX2__) && defined(__FMA__)
  // fp32 planes not dividing 16 (3x3 taps): the forward's register chunks (the same bits); on 4x4 planes (128 lanes,
  // eight passes over a sample beyond L1) they gained nothing
  if constexpr (std::is_same_v<T, float> && std::is_same_v<Acc, float>) {
    if (16 % P != 0) {
      flat_lane_sums_f32<kWeighted>(xs, ys, wexp, n, L, lxx, lyy, lwxx, lwyy, lwxy);
      summed = true;
    }
  }
#endif
  if (!summed) {
    int64_t j0 = 0;
    for (; j0 + L <= n; j0 += L) sums(j0, L);
    sums(j0, n - j0);  // the tail starts at a multiple of L: lane j is still pixel j % P
  }
  // per pixel: the five sums, then the coefficients, spread back over the lanes
  alignas(64) Acc cxx[kFlatLanes], cxy[kFlatLanes], cyy[kFlatLanes], ckx[kFlatLanes], cky[kFlatLanes];
  for (int64_t p = 0; p < P; ++p) {
    const LaneSums<Acc> t = fold_lanes(lxx, lyy, lwxx, lwyy, lwxy, p, L, P);
    const Acc swxx = kWeighted ? t.wxx : t.xx, swyy = kWeighted ? t.wyy : t.yy;
    const int64_t h = p / W, w = p % W;
    const Acc poison = pixel_poison(a.x, a.y, b, h, w, t.xx, t.yy);
    const LpipsGrad<Acc> r = lpips_pixel_grad(t.xx, t.yy, swxx, swyy, t.wxy, a.g.at(b, h, w), a.eps, a.mode, poison);
    for (int64_t j = p; j < L; j += P) {
      cxx[j] = r.axx;
      cxy[j] = r.axy;
      cyy[j] = r.ayy;
      ckx[j] = r.kx;
      cky[j] = r.ky;
    }
  }
  T* gx = a.gx.data ? a.gx.data + b * a.gx.stride[0] : nullptr;
  T* gy = a.gy.data ? a.gy.data + b * a.gy.stride[0] : nullptr;
  // one loop per gradient written (a branch in the loop would stop it vectorising)
  const auto grads = [&](T* out, const Acc* a1, const Acc* a2, const Acc* k, const T* u, const T* v) {
    const auto run = [&](int64_t j0, int64_t m) {
      for (int64_t j = 0; j < m; ++j) {
        const Acc uv = Load<Acc, T>::get(u + j0 + j), vv = Load<Acc, T>::get(v + j0 + j);
        const Acc wc = kWeighted ? wexp[j0 + j] : Acc(1);
        Store<T, Acc>::put(out + j0 + j, wc * (a1[j] * uv - a2[j] * vv) - k[j] * uv);
      }
    };
    int64_t i0 = 0;
    for (; i0 + L <= n; i0 += L) run(i0, L);
    run(i0, n - i0);
  };
  if (gx) grads(gx, cxx, cxy, ckx, xs, ys);  // w (a_xx x - a_xy y) - k_x x
  if (gy) grads(gy, cyy, cxy, cky, ys, xs);  // w (a_yy y - a_xy x) - k_y y
}

// One pixel, any strides. kUnitChannel: every tensor has channel stride 1 (channels_last), known at compile time so
// that the channel loops vectorise (a runtime stride of 1 did not: the CL backward ran 1.3-1.8x slower than NCHW).
template <typename T, typename Acc, bool kWeighted, bool kUnitChannel>
void bwd_pixel(const BwdArgs<T, Acc>& a, int64_t b, int64_t p, Acc* gw_part) {
  const int64_t C = a.x.size[1], W = a.x.size[3], h = p / W, w = p % W;
  const T* xp = a.x.ptr(b, 0, h, w);
  const T* yp = a.y.ptr(b, 0, h, w);
  const int64_t sxc = kUnitChannel ? 1 : a.x.stride[1], syc = kUnitChannel ? 1 : a.y.stride[1];
  const int64_t sgxc = kUnitChannel ? 1 : a.gx.stride[1], sgyc = kUnitChannel ? 1 : a.gy.stride[1];
  constexpr int L = 8;  // independent partial sums: the channel loop vectorises
  Acc axx[L] = {}, ayy[L] = {}, awxx[L] = {}, awyy[L] = {}, awxy[L] = {};
  int64_t c = 0;
  for (; c + L <= C; c += L) {
    for (int l = 0; l < L; ++l) {
      const Acc xv = Load<Acc, T>::get(xp + (c + l) * sxc), yv = Load<Acc, T>::get(yp + (c + l) * syc);
      axx[l] = std::fma(xv, xv, axx[l]);
      ayy[l] = std::fma(yv, yv, ayy[l]);
      if (kWeighted) {
        const Acc wx = a.wt[c + l] * xv;
        awxx[l] = std::fma(wx, xv, awxx[l]);
        awyy[l] = std::fma(a.wt[c + l] * yv, yv, awyy[l]);
        awxy[l] = std::fma(wx, yv, awxy[l]);
      } else {
        awxy[l] = std::fma(xv, yv, awxy[l]);
      }
    }
  }
  for (int l = 0; c < C; ++c, ++l) {
    const Acc xv = Load<Acc, T>::get(xp + c * sxc), yv = Load<Acc, T>::get(yp + c * syc);
    axx[l] = std::fma(xv, xv, axx[l]);
    ayy[l] = std::fma(yv, yv, ayy[l]);
    if (kWeighted) {
      const Acc wx = a.wt[c] * xv;
      awxx[l] = std::fma(wx, xv, awxx[l]);
      awyy[l] = std::fma(a.wt[c] * yv, yv, awyy[l]);
      awxy[l] = std::fma(wx, yv, awxy[l]);
    } else {
      awxy[l] = std::fma(xv, yv, awxy[l]);
    }
  }
  const LaneSums<Acc> t = fold_lanes(axx, ayy, awxx, awyy, awxy, 0, L, 1);
  const Acc swxx = kWeighted ? t.wxx : t.xx, swyy = kWeighted ? t.wyy : t.yy;
  const Acc poison = pixel_poison(a.x, a.y, b, h, w, t.xx, t.yy);
  const Acc g = a.g.at(b, h, w);
  const LpipsGrad<Acc> r = lpips_pixel_grad(t.xx, t.yy, swxx, swyy, t.wxy, g, a.eps, a.mode, poison);
  T* gxp = a.gx.data ? a.gx.data + b * a.gx.stride[0] + h * a.gx.stride[2] + w * a.gx.stride[3] : nullptr;
  T* gyp = a.gy.data ? a.gy.data + b * a.gy.stride[0] + h * a.gy.stride[2] + w * a.gy.stride[3] : nullptr;
  const Acc gpois = g + poison;
  for (c = 0; c < C; ++c) {
    const Acc xv = Load<Acc, T>::get(xp + c * sxc), yv = Load<Acc, T>::get(yp + c * syc);
    Acc gxv, gyv;
    lpips_channel_grad(r, xv, yv, kWeighted ? a.wt[c] : Acc(1), gxv, gyv);
    if (gxp) Store<T, Acc>::put(gxp + c * sgxc, gxv);
    if (gyp) Store<T, Acc>::put(gyp + c * sgyc, gyv);
    if (gw_part) gw_part[c] += lpips_channel_wgrad(r, xv, yv, gpois);
  }
}

template <typename T, typename Acc, bool kWeighted>
void bwd_run(const BwdArgs<T, Acc>& a, Acc* gw) {
  const int64_t B = a.x.size[0], C = a.x.size[1], H = a.x.size[2], W = a.x.size[3], P = H * W;
  const auto unit = [&](const int64_t* stride) { return pixels_unit_stride(a.x.size, stride); };
  const bool contig = unit(a.x.stride) && unit(a.y.stride) && (!a.gx.data || unit(a.gx.stride)) &&
                      (!a.gy.data || unit(a.gy.stride)) && P > 1;
  const auto planes_adjacent = [&](const int64_t* stride, bool present) { return !present || stride[1] == P; };
  if (contig && !gw && P <= kFlatPlaneMax && planes_adjacent(a.x.stride, true) && planes_adjacent(a.y.stride, true) &&
      planes_adjacent(a.gx.stride, a.gx.data != nullptr) && planes_adjacent(a.gy.stride, a.gy.data != nullptr)) {
    const Acc* we = kWeighted ? expanded_channel_weight(a.wt, C, P) : nullptr;
    const int64_t min_samples = std::max<int64_t>(1, kMinFlatWorkPerThread / (C * P));
    parallel_for_pooled(B, min_samples, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) bwd_sample_flat<T, Acc, kWeighted>(a, b, we);
    });
    return;
  }
  int64_t row = 1;
  if (contig) {
    row = kTaskBytes / std::max<int64_t>(1, 2 * C * static_cast<int64_t>(sizeof(T)));
    row = std::max<int64_t>(8, std::min<int64_t>(kRowMax, row / 8 * 8));
    if (P <= kWholePlaneMax) row = P;
  } else {
    row = std::max<int64_t>(1, std::min<int64_t>(P, 4096 / std::max<int64_t>(1, C)));  // pixels per task
  }
  const int64_t ntiles = (P + row - 1) / row, ntasks = B * ntiles;
  const bool unit_channel = a.x.stride[1] == 1 && a.y.stride[1] == 1 && (!a.gx.data || a.gx.stride[1] == 1) &&
                            (!a.gy.data || a.gy.stride[1] == 1);
  std::vector<Acc> part;
  if (gw) part.assign(static_cast<size_t>(ntasks * C), Acc(0));
  const int64_t min_tasks = std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, row * C));
  parallel_for_pooled(ntasks, min_tasks, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / ntiles, p0 = (t % ntiles) * row, np = std::min(row, P - p0);
      Acc* gp = gw ? part.data() + t * C : nullptr;
      if (contig) {
        bwd_row_contig<T, Acc, kWeighted>(a, b, p0, np, gp);
      } else {
        if (unit_channel) {
          for (int64_t p = p0; p < p0 + np; ++p) bwd_pixel<T, Acc, kWeighted, true>(a, b, p, gp);
        } else {
          for (int64_t p = p0; p < p0 + np; ++p) bwd_pixel<T, Acc, kWeighted, false>(a, b, p, gp);
        }
      }
    }
  });
  if (gw) {  // fixed-order reduction: deterministic for any thread count
    for (int64_t c = 0; c < C; ++c) gw[c] = Acc(0);
    for (int64_t t = 0; t < ntasks; ++t)
      for (int64_t c = 0; c < C; ++c) gw[c] += part[static_cast<size_t>(t * C + c)];
  }
}

// gx / gy: TensorArg of the gradient to write (same sizes and dtype as fx; data 0: not wanted). grad: the upstream
// gradient in the accumulation dtype, [B, 1, H, W] (spatial) or [B, 1, 1, 1] (spatial mean), any strides (0 too).
// weight: [C] contiguous accumulation dtype or 0; gw: [C] accumulation dtype or 0 (not wanted; needs weight).
void lpips_backward(const TensorArg& fx, const TensorArg& fy, uintptr_t weight, const TensorArg& grad, double eps,
                    int mode, bool spatial, const TensorArg& gx, const TensorArg& gy, uintptr_t gw) {
  const RawView4 x = to_view(fx, "fx"), y = to_view(fy, "fy"), g = to_view(grad, "grad");
  const RawView4 ox = to_view(gx, "gx"), oy = to_view(gy, "gy");
  check_feature_pair(x, y, "lpips_backward");
  if (mode != kNormLpips && mode != kNormStable) throw std::invalid_argument("lpips_backward: bad mode");
  const bool acc64 = x.dtype == kFloat64;
  if (g.dtype != (acc64 ? kFloat64 : kFloat32)) throw std::invalid_argument("lpips_backward: grad dtype");
  if (g.size[0] != x.size[0] || g.size[1] != 1 ||
      (spatial ? (g.size[2] != x.size[2] || g.size[3] != x.size[3]) : (g.size[2] != 1 || g.size[3] != 1)))
    throw std::invalid_argument("lpips_backward: grad shape");
  for (const RawView4* o : {&ox, &oy}) {
    if (o->data == 0) continue;
    if (o->dtype != x.dtype) throw std::invalid_argument("lpips_backward: gradient dtype");
    for (int i = 0; i < 4; ++i)
      if (o->size[i] != x.size[i]) throw std::invalid_argument("lpips_backward: gradient shape");
  }
  if (gw != 0 && weight == 0) throw std::invalid_argument("lpips_backward: gw needs the weight");
  pybind11::gil_scoped_release nogil;
  dispatch_dtype(x.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using Acc = typename AccOf<T>::type;
    BwdArgs<T, Acc> a;
    a.x = x.as<T>();
    a.y = y.as<T>();
    a.gx.data = reinterpret_cast<T*>(ox.data);
    a.gy.data = reinterpret_cast<T*>(oy.data);
    for (int i = 0; i < 4; ++i) {
      a.gx.stride[i] = ox.stride[i];
      a.gy.stride[i] = oy.stride[i];
      a.g.stride[i] = g.stride[i];
    }
    a.wt = reinterpret_cast<const Acc*>(weight);
    a.g.data = reinterpret_cast<const Acc*>(g.data);
    a.g.spatial = spatial;
    a.g.inv_p = Acc(1) / static_cast<Acc>(x.size[2] * x.size[3]);
    a.eps = static_cast<Acc>(eps);
    a.mode = mode;
    Acc* w = reinterpret_cast<Acc*>(gw);
    if (a.wt)
      bwd_run<T, Acc, true>(a, w);
    else
      bwd_run<T, Acc, false>(a, w);
  });
}

void register_lpips_backward(pybind11::module_& m) {
  m.def("lpips_backward", &lpips_backward, pybind11::arg("fx"), pybind11::arg("fy"), pybind11::arg("weight"),
        pybind11::arg("grad"), pybind11::arg("eps"), pybind11::arg("mode"), pybind11::arg("spatial"),
        pybind11::arg("gx"), pybind11::arg("gy"), pybind11::arg("gw"),
        "Fused LPIPS layer backward: writes dd/dfx, dd/dfy (where their data pointers are non-zero) and dd/dweight "
        "(gw != 0) for the upstream gradient grad ([B,1,H,W] spatial, else [B,1,1,1] of the spatial mean).");
}

}  // namespace

PF_REGISTER_OP(lpips_backward, register_lpips_backward)

}  // namespace percept_fast
