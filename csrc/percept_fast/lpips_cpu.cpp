// lpips_distance, CPU kernel: one fused pass over both feature maps (every element read once), fp32
// accumulation (fp64 for fp64 inputs), threads over (batch, tile of pixels). Maths: lpips_kernel.h.
// The same pass validates the values: a NaN/Inf input makes its pixel's sum of squares non-finite, and only such
// pixels are re-read (a finite sum of squares that overflowed is not an error); the weight is checked up front.
#include <algorithm>
#include <atomic>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <type_traits>
#include <stdexcept>
#include <string>
#include <vector>

#include "lpips_cpu_lanes.h"
#include "lpips_kernel.h"
#include "registry.h"

namespace percept_fast {
namespace {

// pixels per tile of the strided path (and the plane size below which contiguous samples run flat)
constexpr int64_t kTile = 16;
// elements (of each input) a worker thread must get before one is started: a thread start costs tens of us (more
// on a loaded machine), about what summing 256K elements takes
constexpr int64_t kMinWorkPerThread = int64_t{1} << 18;
// ... but the flat small-plane runs hand a second thread 64K elements: the work goes to the pooled workers
// (parallel_for_pooled: torch's OpenMP pool or the spinning WorkerPool), which wake in a few us when calls come back
// to back. Interleaved in one process (2-vCPU Xeon, fp32, weighted): 64x384x3x3 110 -> 52 us, 64x256x3x3 57 -> 39 us;
// 2^15 gained nothing more.
constexpr int64_t kMinFlatWorkPerThread = int64_t{1} << 16;

// Cold path: pixel p of sample b (its sum of squares was not finite) holds a NaN/Inf element.
template <typename T>
bool pixel_has_nonfinite(const View4<T>& v, int64_t b, int64_t p) {
  using Acc = typename AccOf<T>::type;
  const int64_t W = v.size[3], h = p / W, w = p % W;
  for (int64_t c = 0; c < v.size[1]; ++c)
    if (!std::isfinite(Load<Acc, T>::get(v.ptr(b, c, h, w)))) return true;
  return false;
}

// Records which input holds a NaN/Inf when a pixel's sums of squares sxx / syy are not finite.
template <typename T, typename Acc>
inline void check_pixel(const View4<T>& x, const View4<T>& y, int64_t b, int64_t p, Acc sxx, Acc syy,
                        std::atomic<int>& flags) {
  if (std::isfinite(sxx) && std::isfinite(syy)) return;
  int f = 0;
  if (!std::isfinite(sxx) && pixel_has_nonfinite(x, b, p)) f |= kNonFiniteX;
  if (!std::isfinite(syy) && pixel_has_nonfinite(y, b, p)) f |= kNonFiniteY;
  if (f) flags.fetch_or(f, std::memory_order_relaxed);
}

// The end of every path for one pixel p of sample b, from its channel sums: records a NaN/Inf input, computes d
// (unweighted, the plain sums of squares stand in for the weighted ones) and writes it to the spatial map if any.
template <bool kWeighted, typename T, typename Acc>
inline Acc finish_pixel(const View4<T>& x, const View4<T>& y, int64_t b, int64_t p, Acc sxx, Acc syy, Acc swxx,
                        Acc swyy, Acc swxy, Acc eps, int mode, Acc* map_row, std::atomic<int>& flags) {
  check_pixel(x, y, b, p, sxx, syy, flags);
  const Acc d = kWeighted ? lpips_pixel(sxx, syy, swxx, swyy, swxy, eps, mode)
                          : lpips_pixel(sxx, syy, sxx, syy, swxy, eps, mode);
  if (map_row) map_row[p] = d;
  return d;
}

// The end of a row of np pixels from their channel sums in arrays (lpips_pixel on each; unweighted: the plain sums of
// squares stand in for the weighted ones, awxx / awyy unused): writes the pixel distances over awxy (and to map_row
// from p0 if any) and returns their sum in double. Loops the compiler vectorises (square roots, divisions, the sum):
// with 64 channels the scalar end per pixel (finish_pixel) cost as much as the channel sums, in cache. A NaN/Inf
// sum of squares sends the row through the per-pixel check.
template <bool kWeighted, typename T, typename Acc>
double finish_row(const View4<T>& x, const View4<T>& y, int64_t b, int64_t p0, int64_t np, const Acc* axx,
                  const Acc* ayy, const Acc* awxx, const Acc* awyy, Acc* awxy, Acc eps, int mode, Acc* map_row,
                  std::atomic<int>& flags) {
  const Acc* wxx = kWeighted ? awxx : axx;
  const Acc* wyy = kWeighted ? awyy : ayy;
  // separate loops, each one the vectoriser takes: the pixel maths (selects, no branches), a test of the sums of
  // squares, the sum in double (the lanes' order is fixed by the row, not by the threads)
  if (mode == kNormStable) {
#pragma omp simd
    for (int64_t i = 0; i < np; ++i)
      awxy[i] = lpips_pixel(axx[i], ayy[i], wxx[i], wyy[i], awxy[i], eps, int{kNormStable});
  } else {
#pragma omp simd
    for (int64_t i = 0; i < np; ++i)
      awxy[i] = lpips_pixel(axx[i], ayy[i], wxx[i], wyy[i], awxy[i], eps, int{kNormLpips});
  }
  int nonfinite = 0;
#pragma omp simd reduction(| : nonfinite)
  for (int64_t i = 0; i < np; ++i) nonfinite |= ((axx[i] - axx[i]) != Acc(0)) | ((ayy[i] - ayy[i]) != Acc(0));
  if (nonfinite)  // a NaN/Inf input (cold)
    for (int64_t i = 0; i < np; ++i) check_pixel(x, y, b, p0 + i, axx[i], ayy[i], flags);
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < np; ++i) sum += static_cast<double>(awxy[i]);
  if (map_row) std::copy(awxy, awxy + np, map_row + p0);
  return sum;
}

// The end of a flat run of small planes (P <= kTile): lane j of the L lane sums belongs to pixel j % P; the lanes
// are folded into pixels in lane order, then finish_row.
template <bool kWeighted, typename T, typename Acc>
double finish_lanes(const View4<T>& x, const View4<T>& y, int64_t b, int64_t L, int64_t P, const Acc* axx,
                    const Acc* ayy, const Acc* awxx, const Acc* awyy, const Acc* awxy, Acc eps, int mode, Acc* map_row,
                    std::atomic<int>& flags) {
  Acc pxx[kTile], pyy[kTile], pwxx[kTile], pwyy[kTile], pwxy[kTile];
  for (int64_t p = 0; p < P; ++p) {
    const LaneSums<Acc> t = fold_lanes(axx, ayy, awxx, awyy, awxy, p, L, P);
    pxx[p] = t.xx;
    pyy[p] = t.yy;
    pwxx[p] = t.wxx;
    pwyy[p] = t.wyy;
    pwxy[p] = t.wxy;
  }
  return finish_row<kWeighted>(x, y, b, 0, P, pxx, pyy, pwxx, pwyy, pwxy, eps, mode, map_row, flags);
}

// Any strides: a tile of up to kTile pixels, their offsets computed once, channels outer.
template <typename T, typename Acc, bool kWeighted>
double lpips_tile_strided(const View4<T>& x, const View4<T>& y, const Acc* wt, Acc eps, int mode, int64_t b, int64_t p0,
                       int64_t np, Acc* map_row, std::atomic<int>& flags) {
  const int64_t C = x.size[1], W = x.size[3];
  Acc axx[kTile], ayy[kTile], awxx[kTile], awyy[kTile], awxy[kTile];
  for (int64_t i = 0; i < kTile; ++i) axx[i] = ayy[i] = awxx[i] = awyy[i] = awxy[i] = Acc(0);
  int64_t offx[kTile], offy[kTile];
  for (int64_t i = 0; i < np; ++i) {
    const int64_t p = p0 + i, h = p / W, w = p % W;
    offx[i] = h * x.stride[2] + w * x.stride[3];
    offy[i] = h * y.stride[2] + w * y.stride[3];
  }
  const T* xb = x.data + b * x.stride[0];
  const T* yb = y.data + b * y.stride[0];
  for (int64_t c = 0; c < C; ++c) {
    const T* xc = xb + c * x.stride[1];
    const T* yc = yb + c * y.stride[1];
    const Acc wc = kWeighted ? wt[c] : Acc(1);
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
  double sum = 0;
  for (int64_t i = 0; i < np; ++i) {
    sum += finish_pixel<kWeighted>(x, y, b, p0 + i, axx[i], ayy[i], awxx[i], awyy[i], awxy[i], eps, mode, map_row,
                                   flags);
  }
  return sum;
}

// Large planes (contiguous pixels): a row of up to kRow pixels per task. Per channel the row's pixels of x and y
// are two long sequential runs (which the hardware prefetchers follow; 16-pixel tiles touch one line in each of
// the 2C planes per tile, more streams than they track); the running sums live in L1/L2-resident arrays and two
// channels are folded in per pass over them to halve that traffic. Whole planes up to 64x64 are one row: runs of
// 1 KB (256 pixels) then a jump to the next plane streamed from DRAM at half the read floor's rate; 4096-pixel rows
// took VGG/ResNet taps at 224 px from 1.7-1.9x the read floor to 1.0-1.5x (one thread, 2-core AMD EPYC), the
// sums (80 KB in fp32) then living in L2, which costs nothing measurable on in-cache planes.
constexpr int64_t kRow = 4096;

// Planes of 128-1024 pixels (13x13 to 32x32: AlexNet conv2-5, VGG/ResNet taps at 224 px down to 28x28, VGG/ResNet
// at 64 px) give each of the four streams above a run of 0.5-4 KB before it jumps, too short for the hardware
// prefetchers to ramp up (they stop at 4 KB pages): the next channel pair's planes of x and y (contiguous) are
// prefetched while this pair is summed, a line of each per kPrefetchBlock pixels (2 lines per block in fp32), so
// that the loads in flight are spread over the pass. Issuing them all before the pass (the earlier way, on 128-352
// pixels only) filled the miss queue in bursts. Measured with bench_op_lpips_distance.py (2-core AMD EPYC,
// weighted, batch 64): 256x16x16 from 1.5-2.5 ms to 0.65-0.83 ms (2.0x torch.compile), 512x14x14 from 3.2 ms to
// 1.3-1.7 ms, 512x28x28 from 1.7-1.9x the read floor to 1.2x; from 3136 pixels (56x56) it was 0.75-0.9x as fast as
// no prefetch (the hardware prefetchers follow runs that long), hence the window.
constexpr int64_t kPrefetchMinPixels = 128;
constexpr int64_t kPrefetchMaxPixels = 1024;
constexpr int64_t kPrefetchBlock = 16;

// Adds channels c .. c + K - 1 (planes xs[k] of x and ys[k] of y; weights ws[k]) into the running sums of pixels
// [i0, i1), the channels added in order.
template <int K, typename T, typename Acc, bool kWeighted>
inline void add_channel_group(const T* const* xs, const T* const* ys, const Acc* ws, int64_t i0, int64_t i1, Acc* axx,
                              Acc* ayy, Acc* awxx, Acc* awyy, Acc* awxy) {
  for (int64_t i = i0; i < i1; ++i) {
    Acc sxx = axx[i], syy = ayy[i], swxx = awxx[i], swyy = awyy[i], swxy = awxy[i];
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) {
      add_to_sums<kWeighted>(Load<Acc, T>::get(xs[k] + i), Load<Acc, T>::get(ys[k] + i), ws[k], sxx, syy, swxx, swyy,
                             swxy);
    }
    axx[i] = sxx;
    ayy[i] = syy;
    awxx[i] = swxx;
    awyy[i] = swyy;
    awxy[i] = swxy;
  }
}

template <typename T, typename Acc, bool kWeighted>
double lpips_row_contig(const View4<T>& x, const View4<T>& y, const Acc* wt, Acc eps, int mode, int64_t b, int64_t p0,
                     int64_t np, Acc* map_row, std::atomic<int>& flags) {
  const int64_t C = x.size[1];
  // the five arrays kSumsPad elements apart beyond their kRow: at exactly kRow (16 KB in fp32) the stores to one
  // and the loads of the next sit at the same offset in a 4 KB page, which the load-store unit takes for a
  // dependence (4K aliasing)
  constexpr int64_t kSumsPad = 24, kSumsStride = kRow + kSumsPad;
  alignas(64) Acc sums[5 * kSumsStride];
  Acc *axx = sums, *ayy = sums + kSumsStride, *awxx = sums + 2 * kSumsStride, *awyy = sums + 3 * kSumsStride,
      *awxy = sums + 4 * kSumsStride;
  for (int64_t i = 0; i < np; ++i) axx[i] = ayy[i] = awxx[i] = awyy[i] = awxy[i] = Acc(0);
  const T* xb = x.data + b * x.stride[0] + p0;
  const T* yb = y.data + b * y.stride[0] + p0;
  const bool prefetch = np == x.size[2] * x.size[3] && np >= kPrefetchMinPixels && np <= kPrefetchMaxPixels &&
                        x.stride[1] == np && y.stride[1] == np;
  int64_t c = 0;
  // channels c .. c + K - 1 per pass over the sums; with `prefetch`, the next K planes of x and of y (contiguous,
  // K * np elements each from the first of this group's) a few lines per block of kPrefetchBlock pixels
  const auto groups = [&](auto k_tag) {
    constexpr int K = decltype(k_tag)::value;
    for (; c + K <= C; c += K) {
      const T* xs[K];
      const T* ys[K];
      Acc ws[K];
      for (int k = 0; k < K; ++k) {
        xs[k] = xb + (c + k) * x.stride[1];
        ys[k] = yb + (c + k) * y.stride[1];
        ws[k] = kWeighted ? wt[c + k] : Acc(1);
      }
      int64_t i = 0;
      if (np > kPrefetchMaxPixels && c + 2 * K <= C) {
        // Long rows: the next group's K rows of x and of y (one line of each per line of pixels here) requested into
        // L2 (locality 2; into L1 it was 0.8x) while this group is summed. The hardware prefetchers alone left the
        // two threads at 1.13-1.23x the read floor on 55x55-64x64 planes; with this 1.01-1.19x.
        constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
        const int64_t next_x = K * x.stride[1], next_y = K * y.stride[1];
        for (; i + kLine <= np; i += kLine) {
          for (int k = 0; k < K; ++k) {
            __builtin_prefetch(xs[k] + next_x + i, 0, 2);
            __builtin_prefetch(ys[k] + next_y + i, 0, 2);
          }
          add_channel_group<K, T, Acc, kWeighted>(xs, ys, ws, i, i + kLine, axx, ayy, awxx, awyy, awxy);
        }
      }
      if (prefetch && c + 2 * K <= C) {
        const T* xn = xs[0] + K * np;
        const T* yn = ys[0] + K * np;
        for (; i + kPrefetchBlock <= np; i += kPrefetchBlock) {
          prefetch_lines(xn + K * i, K * kPrefetchBlock);
          prefetch_lines(yn + K * i, K * kPrefetchBlock);
          add_channel_group<K, T, Acc, kWeighted>(xs, ys, ws, i, i + kPrefetchBlock, axx, ayy, awxx, awyy, awxy);
        }
        prefetch_lines(xn + K * i, K * (np - i));
        prefetch_lines(yn + K * i, K * (np - i));
      }
      add_channel_group<K, T, Acc, kWeighted>(xs, ys, ws, i, np, axx, ayy, awxx, awyy, awxy);
    }
  };
  // Four channels per pass on rows over kPrefetchMaxPixels, where the hardware prefetchers follow the runs: half
  // the sums' load/store traffic of two, 1.3x faster on 64x64 and 56x56 planes (one thread). Two elsewhere: with
  // the software prefetch window four was 0.8-0.9x on 16x16 and 27x27 planes, and on 7x7 planes streamed from DRAM
  // (2048 channels) 0.8x; four gained only on 7x7 planes already in cache.
  if (np > kPrefetchMaxPixels) groups(std::integral_constant<int, 4>{});
  groups(std::integral_constant<int, 2>{});
  for (; c < C; ++c) {
    const T* x0 = xb + c * x.stride[1];
    const T* y0 = yb + c * y.stride[1];
    const Acc w0 = kWeighted ? wt[c] : Acc(1);
    for (int64_t i = 0; i < np; ++i) {
      add_to_sums<kWeighted>(Load<Acc, T>::get(x0 + i), Load<Acc, T>::get(y0 + i), w0, axx[i], ayy[i], awxx[i],
                             awyy[i], awxy[i]);
    }
  }
  return finish_row<kWeighted>(x, y, b, p0, np, axx, ayy, awxx, awyy, awxy, eps, mode, map_row, flags);
}

// Channels-last (channel stride 1 in both): per pixel, a contiguous channel vector reduced in 8 lanes.
template <typename T, typename Acc, bool kWeighted>
double lpips_tile_channels_last(const View4<T>& x, const View4<T>& y, const Acc* wt, Acc eps, int mode, int64_t b,
                             int64_t p0, int64_t np, Acc* map_row, std::atomic<int>& flags) {
  constexpr int L = 8;
  const int64_t C = x.size[1], W = x.size[3];
  double sum = 0;
  for (int64_t i = 0; i < np; ++i) {
    const int64_t p = p0 + i, h = p / W, w = p % W;
    const T* xp = x.data + b * x.stride[0] + h * x.stride[2] + w * x.stride[3];
    const T* yp = y.data + b * y.stride[0] + h * y.stride[2] + w * y.stride[3];
    Acc axx[L] = {}, ayy[L] = {}, awxx[L] = {}, awyy[L] = {}, awxy[L] = {};
    int64_t c = 0;
    for (; c + L <= C; c += L) {
      for (int l = 0; l < L; ++l) {
        add_to_sums<kWeighted>(Load<Acc, T>::get(xp + c + l), Load<Acc, T>::get(yp + c + l),
                               kWeighted ? wt[c + l] : Acc(1), axx[l], ayy[l], awxx[l], awyy[l], awxy[l]);
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
    const LaneSums<Acc> t = fold_lanes(axx, ayy, awxx, awyy, awxy, 0, L, 1);
    sum += finish_pixel<kWeighted>(x, y, b, p, t.xx, t.yy, t.wxx, t.wyy, t.wxy, eps, mode, map_row, flags);
  }
  return sum;
}

// Small planes (P < kTile) whose C planes are adjacent (channel stride P, as in a contiguous tensor): the sample is
// one contiguous run of C * P elements and element j belongs to pixel j % P. The running sums are kept per lane
// j % L (L = lcm(P, 8), a whole number of pixels), so the inner loop walks contiguous memory and vectorises,
// instead of a P-long pixel loop per channel; the lanes are folded into pixels at the end.
// wexp: the weight expanded to one value per element of the run (wexp[c * P + p] = w[c]).
template <typename T, typename Acc, bool kWeighted>
double lpips_sample_flat(const View4<T>& x, const View4<T>& y, const Acc* wexp, Acc eps, int mode, int64_t b,
                      Acc* map_row, std::atomic<int>& flags) {
  const int64_t P = x.size[2] * x.size[3], n = x.size[1] * P;
  const int64_t L = flat_lane_count(P);
  Acc axx[kFlatLanes], ayy[kFlatLanes], awxx[kFlatLanes], awyy[kFlatLanes], awxy[kFlatLanes];
  for (int64_t j = 0; j < L; ++j) axx[j] = ayy[j] = awxx[j] = awyy[j] = awxy[j] = Acc(0);
  const T* xs = x.data + b * x.stride[0];
  const T* ys = y.data + b * y.stride[0];
  const auto step = [&](int64_t j0, int64_t m) {
    for (int64_t j = 0; j < m; ++j) {
      add_to_sums<kWeighted>(Load<Acc, T>::get(xs + j0 + j), Load<Acc, T>::get(ys + j0 + j),
                             kWeighted ? wexp[j0 + j] : Acc(1), axx[j], ayy[j], awxx[j], awyy[j], awxy[j]);
    }
  };
  int64_t j0 = 0;
  for (; j0 + L <= n; j0 += L) step(j0, L);
  step(j0, n - j0);  // the tail starts at a multiple of L, so lane j is still pixel j % P
  return finish_lanes<kWeighted>(x, y, b, L, P, axx, ayy, awxx, awyy, awxy, eps, mode, map_row, flags);
}

#if defined(__AVX2__) && defined(__FMA__)
// fp32 flat runs whose plane size P divides 16: 16 lanes, the five sums in ten 8-float registers (the 128 lanes of
// the general path live in memory and cost five stores per eight elements). Same sums, same lane-to-pixel fold.
template <bool kWeighted>
double lpips_sample_flat16_f32(const View4<float>& x, const View4<float>& y, const float* wt, const float* wexp,
                               float eps, int mode, int64_t b, float* map_row, std::atomic<int>& flags) {
  const int64_t P = x.size[2] * x.size[3], n = x.size[1] * P;
  const float* xs = x.data + b * x.stride[0];
  const float* ys = y.data + b * y.stride[0];
  __m256 sxx[2], syy[2], swxx[2], swyy[2], swxy[2];
  for (int h = 0; h < 2; ++h) sxx[h] = syy[h] = swxx[h] = swyy[h] = swxy[h] = _mm256_setzero_ps();
  // P = 8, 16: each 8 elements are one channel's, weight wt[c + h * half_channel] for half h of the step at channel c
  const int64_t half_channel = P == 8 ? 1 : 0, step_channels = 16 / P;
  int64_t j0 = 0;
  for (int64_t c = 0; j0 + 16 <= n; j0 += 16, c += step_channels) {
    for (int h = 0; h < 2; ++h) {
      const __m256 wc = !kWeighted ? _mm256_setzero_ps()
                        : P >= 8   ? _mm256_set1_ps(wt[c + h * half_channel])
                                   : _mm256_loadu_ps(wexp + j0 + 8 * h);
      add_to_sums_8<kWeighted>(_mm256_loadu_ps(xs + j0 + 8 * h), _mm256_loadu_ps(ys + j0 + 8 * h), wc, sxx[h], syy[h],
                               swxx[h], swyy[h], swxy[h]);
    }
  }
  alignas(32) float axx[16], ayy[16], awxx[16], awyy[16], awxy[16];
  for (int h = 0; h < 2; ++h) {
    _mm256_store_ps(axx + 8 * h, sxx[h]);
    _mm256_store_ps(ayy + 8 * h, syy[h]);
    _mm256_store_ps(awxx + 8 * h, swxx[h]);
    _mm256_store_ps(awyy + 8 * h, swyy[h]);
    _mm256_store_ps(awxy + 8 * h, swxy[h]);
  }
  for (int64_t j = 0; j0 + j < n; ++j) {  // the tail starts at a multiple of 16, so lane j is still pixel j % P
    const float wc = !kWeighted ? 1.0f : (P >= 8 ? wt[(j0 + j) / P] : wexp[j0 + j]);
    add_to_sums<kWeighted>(xs[j0 + j], ys[j0 + j], wc, axx[j], ayy[j], awxx[j], awyy[j], awxy[j]);
  }
  return finish_lanes<kWeighted>(x, y, b, 16, P, axx, ayy, awxx, awyy, awxy, eps, mode, map_row, flags);
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
// fp32 flat runs of the other small planes (P <= kTile not dividing 16: 3x3 taps, L = 72 lanes): the general path
// keeps all L lanes' five sums in memory (five loads and five stores per eight elements, 1 us a 384x3x3 sample).
// Here two 8-lane chunks at a time walk every run of L elements with their sums in ten registers, then the next
// two. Per lane the same additions in the same order (the runs in turn, then the tail): the bits of
// lpips_sample_flat. The sample (2 x C x P floats and the expanded weight) stays in L1/L2 across the passes.
template <bool kWeighted>
double lpips_sample_flat_chunks_f32(const View4<float>& x, const View4<float>& y, const float* wexp, float eps,
                                    int mode, int64_t b, float* map_row, std::atomic<int>& flags) {
  const int64_t P = x.size[2] * x.size[3], n = x.size[1] * P, L = flat_lane_count(P);
  alignas(32) float axx[kFlatLanes], ayy[kFlatLanes], awxx[kFlatLanes], awyy[kFlatLanes], awxy[kFlatLanes];
  flat_lane_sums_f32<kWeighted>(x.data + b * x.stride[0], y.data + b * y.stride[0], wexp, n, L, axx, ayy, awxx, awyy,
                                awxy);
  return finish_lanes<kWeighted>(x, y, b, L, P, axx, ayy, awxx, awyy, awxy, eps, mode, map_row, flags);
}

// The horizontal sums of eight 8-float vectors (v[k] at 8 k), as one vector (lane k: the sum of v[k]).
inline __m256 sum_lanes_of_8(const float* v) {
  const __m256 t0 = _mm256_hadd_ps(_mm256_load_ps(v), _mm256_load_ps(v + 8));
  const __m256 t1 = _mm256_hadd_ps(_mm256_load_ps(v + 16), _mm256_load_ps(v + 24));
  const __m256 t2 = _mm256_hadd_ps(_mm256_load_ps(v + 32), _mm256_load_ps(v + 40));
  const __m256 t3 = _mm256_hadd_ps(_mm256_load_ps(v + 48), _mm256_load_ps(v + 56));
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  // u0 = [s0 s1 s2 s3 | s0' s1' s2' s3'] (the 128-bit halves' partial sums), u1 likewise for 4..7
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Channels-last fp32 with C a multiple of 8 (channels_last_register_path): per pixel the five sums in five 8-channel
// registers; each group of 8 pixels folded at once (sum_lanes_of_8) and the tile ended by finish_row. One pixel at a
// time (the generic path), the scalar lane folds and the end of each pixel (square roots, divisions, checks) cost
// more than 64 channels' sums: 64-channel taps 1.1-2.1x faster (batch 64, 15x15 to 64x64 planes, two threads, A/B
// in alternating processes). Up to 384 channels it pays on planes of up to 256 pixels (batch 64, 2 threads, A/B:
// 128x15x15 0.30 -> 0.23 ms, 192x7x7 0.11-0.13 -> 0.072-0.078, 384x3x3 0.062-0.067 -> 0.056-0.059, 256x13x13 0.38
// -> 0.28-0.36); on large planes of 256 channels it was 8 % slower (56x56: 11.7-11.9 -> 12.9-13.0 ms), 512x14x14
// 15 % slower.
inline bool channels_last_register_path(int64_t C, int64_t P) {
  return C % 8 == 0 && (C <= 64 || (C <= 384 && P <= 256));
}
template <bool kWeighted>
double lpips_tile_channels_last_f32(const View4<float>& x, const View4<float>& y, const float* wt, float eps, int mode,
                                    int64_t b, int64_t p0, int64_t np, float* map_row, std::atomic<int>& flags) {
  const int64_t C = x.size[1], W = x.size[3];
  alignas(32) float lanes[5][8 * 8];
  alignas(32) float pix[5][kTile];
  for (int64_t g = 0; g < np; g += 8) {
    const int64_t n = std::min<int64_t>(8, np - g);
    for (int64_t k = 0; k < 8; ++k) {
      __m256 sxx = _mm256_setzero_ps(), syy = sxx, swxx = sxx, swyy = sxx, swxy = sxx;
      if (k < n) {
        const int64_t p = p0 + g + k, h = p / W, w = p % W;
        const float* xp = x.data + b * x.stride[0] + h * x.stride[2] + w * x.stride[3];
        const float* yp = y.data + b * y.stride[0] + h * y.stride[2] + w * y.stride[3];
        for (int64_t c = 0; c < C; c += 8) {
          const __m256 wv = kWeighted ? _mm256_loadu_ps(wt + c) : _mm256_setzero_ps();  // (wt is null unweighted)
          add_to_sums_8<kWeighted>(_mm256_loadu_ps(xp + c), _mm256_loadu_ps(yp + c), wv, sxx, syy, swxx, swyy, swxy);
        }
      }
      _mm256_store_ps(lanes[0] + 8 * k, sxx);
      _mm256_store_ps(lanes[1] + 8 * k, syy);
      _mm256_store_ps(lanes[2] + 8 * k, swxx);
      _mm256_store_ps(lanes[3] + 8 * k, swyy);
      _mm256_store_ps(lanes[4] + 8 * k, swxy);
    }
    alignas(32) float folded[8];
    for (int s = 0; s < 5; ++s) {
      _mm256_store_ps(folded, sum_lanes_of_8(lanes[s]));
      for (int64_t k = 0; k < n; ++k) pix[s][g + k] = folded[k];
    }
  }
  return finish_row<kWeighted>(x, y, b, p0, np, pix[0], pix[1], pix[2], pix[3], pix[4], eps, mode, map_row, flags);
}
#endif

// A channels-last tile: the fp32 register path where it pays (channels_last_register_path), else the generic one.
template <typename T, typename Acc, bool kWeighted>
double lpips_tile_channels_last_any(const View4<T>& x, const View4<T>& y, const Acc* wt, Acc eps, int mode, int64_t b,
                                    int64_t p0, int64_t np, Acc* map_row, std::atomic<int>& flags) {
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (std::is_same_v<T, float> && std::is_same_v<Acc, float>)
    if (channels_last_register_path(x.size[1], x.size[2] * x.size[3]))
      return lpips_tile_channels_last_f32<kWeighted>(x, y, wt, eps, mode, b, p0, np, map_row, flags);
#endif
  return lpips_tile_channels_last<T, Acc, kWeighted>(x, y, wt, eps, mode, b, p0, np, map_row, flags);
}

// Returns InputFlags (0 when every value was finite).
template <typename T, typename Acc, bool kWeighted>
int lpips_run(const View4<T>& x, const View4<T>& y, const Acc* wt, Acc eps, int mode, Acc* out, Acc* map) {
  const int64_t B = x.size[0], C = x.size[1], H = x.size[2], W = x.size[3], P = H * W;
  const bool contig = pixels_unit_stride(x.size, x.stride) && pixels_unit_stride(y.size, y.stride);
  const bool chlast = !contig && C > 1 && x.stride[1] == 1 && y.stride[1] == 1;
  std::atomic<int> flags{0};
  // per-sample tasks, each a whole number of samples' work, at least kMinFlatWorkPerThread elements per thread
  if (contig && P <= kTile && x.stride[1] == P && y.stride[1] == P) {
    const int64_t min_samples = std::max<int64_t>(1, kMinFlatWorkPerThread / (C * P));
    bool lanes16 = false;  // fp32 with P dividing 16: lpips_sample_flat16_f32
#if defined(__AVX2__) && defined(__FMA__)
    lanes16 = std::is_same_v<T, float> && std::is_same_v<Acc, float> && 16 % P == 0;
#endif
    // the expanded weight (C * P values, built on this thread before the workers start) unless every step's
    // channel weight is a broadcast
    const Acc* we = kWeighted && !(lanes16 && P >= 8) ? expanded_channel_weight(wt, C, P) : nullptr;
    const auto flat_sample = [&](int64_t b) -> double {
      Acc* map_row = map ? map + b * P : nullptr;
#if defined(__AVX2__) && defined(__FMA__)
      if constexpr (std::is_same_v<T, float> && std::is_same_v<Acc, float>) {
        return lanes16 ? lpips_sample_flat16_f32<kWeighted>(x, y, wt, we, eps, mode, b, map_row, flags)
                       : lpips_sample_flat_chunks_f32<kWeighted>(x, y, we, eps, mode, b, map_row, flags);
      }
#endif
      return lpips_sample_flat<T, Acc, kWeighted>(x, y, we, eps, mode, b, map_row, flags);
    };
    parallel_for_pooled(B, min_samples, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        out[b] = static_cast<Acc>(flat_sample(b) / static_cast<double>(P));
    });
    return flags.load();
  }
  // contiguous pixels: rows of up to kRow pixels (256-pixel rows measured 1.5-5x faster than register-resident
  // 16-pixel tiles from 7x7 planes up, as fast at 4x4); otherwise 16-pixel tiles
  const int64_t tile = contig ? kRow : kTile;
  const int64_t ntiles = (P + tile - 1) / tile;
  const int64_t ntasks = B * ntiles;
  // Pixel distances are summed in double (rows of up to 4096 pixels, then the rows): a float sum of 3072 pixels
  // was 8 ulps off the reference's pairwise torch.mean (VGG at 64x48); one add per pixel, not in the hot loop.
  std::vector<double> partial(static_cast<size_t>(ntasks), 0.0);
  const int64_t min_tasks = std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, tile * C));
  parallel_for_pooled(ntasks, min_tasks, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / ntiles, p0 = (t % ntiles) * tile, np = std::min(tile, P - p0);
      Acc* map_row = map ? map + b * P : nullptr;
      double s;
      if (contig)
        s = lpips_row_contig<T, Acc, kWeighted>(x, y, wt, eps, mode, b, p0, np, map_row, flags);
      else if (chlast)
        s = lpips_tile_channels_last_any<T, Acc, kWeighted>(x, y, wt, eps, mode, b, p0, np, map_row, flags);
      else
        s = lpips_tile_strided<T, Acc, kWeighted>(x, y, wt, eps, mode, b, p0, np, map_row, flags);
      partial[static_cast<size_t>(t)] = s;
    }
  });
  // fixed-order reduction: deterministic for any thread count
  for (int64_t b = 0; b < B; ++b) {
    double s = 0;
    for (int64_t j = 0; j < ntiles; ++j) s += partial[static_cast<size_t>(b * ntiles + j)];
    out[b] = static_cast<Acc>(s / static_cast<double>(P));
  }
  return flags.load();
}

// InputFlags of the weight: every value finite and >= 0 (checked before the pass; O(C)).
template <typename Acc>
int weight_flags(const Acc* w, int64_t C) {
  int f = 0;
  for (int64_t c = 0; c < C; ++c) {
    if (!std::isfinite(w[c])) f |= kNonFiniteWeight;
    else if (w[c] < Acc(0)) f |= kNegativeWeight;
  }
  return f;
}

// out: [B] accumulation dtype (float32; float64 for float64 inputs); map: [B, H*W] same dtype or 0;
// weight: [C] contiguous accumulation dtype or 0 (unweighted). Returns InputFlags: a non-zero weight flag means
// nothing was computed; NaN/Inf features are reported after the pass (out / map then hold NaN/Inf; the caller
// raises instead of returning them).
int lpips_forward(const TensorArg& fx, const TensorArg& fy, uintptr_t weight, double eps, int mode, uintptr_t out,
                  uintptr_t map) {
  const RawView4 x = to_view(fx, "fx"), y = to_view(fy, "fy");
  check_feature_pair(x, y, "lpips_forward");
  if (out == 0) throw std::invalid_argument("lpips_forward: null out");
  if (mode != kNormLpips && mode != kNormStable) throw std::invalid_argument("lpips_forward: bad mode");
  pybind11::gil_scoped_release nogil;
  int flags = 0;
  dispatch_dtype(x.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using Acc = typename AccOf<T>::type;
    const auto xv = x.as<T>(), yv = y.as<T>();
    const Acc* w = reinterpret_cast<const Acc*>(weight);
    Acc* o = reinterpret_cast<Acc*>(out);
    Acc* m = reinterpret_cast<Acc*>(map);
    if (w && (flags = weight_flags(w, x.size[1])) != 0) return;
    if (w)
      flags = lpips_run<T, Acc, true>(xv, yv, w, static_cast<Acc>(eps), mode, o, m);
    else
      flags = lpips_run<T, Acc, false>(xv, yv, w, static_cast<Acc>(eps), mode, o, m);
  });
  return flags;
}

void register_lpips(pybind11::module_& m) {
  m.def("lpips_forward", &lpips_forward, pybind11::arg("fx"), pybind11::arg("fy"), pybind11::arg("weight"),
        pybind11::arg("eps"), pybind11::arg("mode"), pybind11::arg("out"), pybind11::arg("map"),
        "Fused LPIPS layer distance: out[b] = mean_hw sum_c w_c (x/n(x) - y/n(y))^2 (map[b, hw] if map != 0). "
        "Returns input flags: 1 fx / 2 fy has NaN or Inf, 4 weight has NaN or Inf, 8 weight is negative.");
}

}  // namespace

PF_REGISTER_OP(lpips, register_lpips)

}  // namespace percept_fast
