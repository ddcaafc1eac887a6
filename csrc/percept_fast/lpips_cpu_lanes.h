// CPU helpers shared by the lpips_distance forward (lpips_cpu.cpp) and backward (lpips_backward_cpu.cpp) kernels:
// the five channel sums kept in lanes and folded into a pixel, the flat small-plane runs' lane count and expanded
// weight, and software prefetch of short runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace percept_fast {

// One element pair (x, y) of a channel with weight w added into the five running sums of its pixel (lane); w is
// not read when unweighted (the plain sums of squares stand in for the weighted ones, lpips_kernel.h). Every CPU path
// adds in this order, so x == y gives the same sums for x and y and d == 0 exactly.
template <bool kWeighted, typename Acc>
inline void add_to_sums(Acc xv, Acc yv, Acc w, Acc& xx, Acc& yy, Acc& wxx, Acc& wyy, Acc& wxy) {
  xx = std::fma(xv, xv, xx);
  yy = std::fma(yv, yv, yy);
  if (kWeighted) {
    const Acc wx = w * xv, wy = w * yv;
    wxx = std::fma(wx, xv, wxx);
    wyy = std::fma(wy, yv, wyy);
    wxy = std::fma(wx, yv, wxy);
  } else {
    wxy = std::fma(xv, yv, wxy);
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// add_to_sums on 8 lanes at once (fp32): the same fused multiply-adds per lane, so the same bits. wc is not read
// when unweighted.
template <bool kWeighted>
inline void add_to_sums_8(__m256 xv, __m256 yv, __m256 wc, __m256& xx, __m256& yy, __m256& wxx, __m256& wyy,
                          __m256& wxy) {
  xx = _mm256_fmadd_ps(xv, xv, xx);
  yy = _mm256_fmadd_ps(yv, yv, yy);
  if constexpr (kWeighted) {
    const __m256 wx = _mm256_mul_ps(wc, xv), wy = _mm256_mul_ps(wc, yv);
    wxx = _mm256_fmadd_ps(wx, xv, wxx);
    wyy = _mm256_fmadd_ps(wy, yv, wyy);
    wxy = _mm256_fmadd_ps(wx, yv, wxy);
  } else {
    wxy = _mm256_fmadd_ps(xv, yv, wxy);
  }
}
#endif

// The five channel sums of one pixel (lpips_kernel.h: S_xx, S_yy, S_wxx, S_wyy, S_wxy).
template <typename Acc>
struct LaneSums {
  Acc xx, yy, wxx, wyy, wxy;
};

// The sums of lanes first, first + step, ... (< end) of the five lane arrays, added in lane order.
template <typename Acc>
inline LaneSums<Acc> fold_lanes(const Acc* xx, const Acc* yy, const Acc* wxx, const Acc* wyy, const Acc* wxy,
                                int64_t first, int64_t end, int64_t step) {
  LaneSums<Acc> s{Acc(0), Acc(0), Acc(0), Acc(0), Acc(0)};
  for (int64_t j = first; j < end; j += step) {
    s.xx += xx[j];
    s.yy += yy[j];
    s.wxx += wxx[j];
    s.wyy += wyy[j];
    s.wxy += wxy[j];
  }
  return s;
}

// Flat runs of small planes (channel stride P): element j of a sample belongs to pixel j % P and its sums live in
// lane j % L, L the largest multiple of lcm(P, 8) up to kFlatLanes (long runs per step: fewer loop set-ups; P = 4
// would otherwise step 8 elements at a time). P must divide some multiple of 8 up to kFlatLanes (P <= 16 does).
constexpr int64_t kFlatLanes = 128;

inline int64_t flat_lane_count(int64_t P) {
  int64_t L = 8;
  while (L % P != 0) L += 8;
  return L * (kFlatLanes / L);
}

// The channel weight w [C] expanded to one value per element of a flat run (out[c * P + p] = w[c]), in a buffer of
// the calling thread reused across calls (no allocation per call once it is large enough).
template <typename Acc>
const Acc* expanded_channel_weight(const Acc* w, int64_t C, int64_t P) {
  static thread_local std::vector<Acc> buffer;
  buffer.resize(static_cast<size_t>(C * P));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t p = 0; p < P; ++p) buffer[static_cast<size_t>(c * P + p)] = w[c];
  return buffer.data();
}

#if defined(__AVX2__) && defined(__FMA__)
// The five lane sums of a flat fp32 run of n elements in L lanes (L a multiple of 8; lane j holds elements j, j + L,
// ...; wexp the expanded weight, read only when kWeighted). The general loop keeps all L lanes' sums in memory (five
// loads and five stores per eight elements); here two 8-lane chunks at a time walk every full run with their sums in
// ten registers, then the tail (n % L elements) goes into the first lanes in order. Per lane the same fused
// multiply-adds in the same order as that loop: the same bits. Unweighted, wxx and wyy stay 0 (as there).
template <bool kWeighted>
inline void flat_lane_sums_f32(const float* xs, const float* ys, const float* wexp, int64_t n, int64_t L, float* axx,
                               float* ayy, float* awxx, float* awyy, float* awxy) {
  const int64_t full = n / L * L;
  const auto chunks = [&](auto count_tag, int64_t k) {
    constexpr int H = decltype(count_tag)::value;
    __m256 sxx[H], syy[H], swxx[H], swyy[H], swxy[H];
    for (int h = 0; h < H; ++h) sxx[h] = syy[h] = swxx[h] = swyy[h] = swxy[h] = _mm256_setzero_ps();
    for (int64_t j = k; j < full; j += L) {
      for (int h = 0; h < H; ++h) {
        const __m256 wc = kWeighted ? _mm256_loadu_ps(wexp + j + 8 * h) : _mm256_setzero_ps();
        add_to_sums_8<kWeighted>(_mm256_loadu_ps(xs + j + 8 * h), _mm256_loadu_ps(ys + j + 8 * h), wc, sxx[h], syy[h],
                                 swxx[h], swyy[h], swxy[h]);
      }
    }
    for (int h = 0; h < H; ++h) {
      _mm256_storeu_ps(axx + k + 8 * h, sxx[h]);
      _mm256_storeu_ps(ayy + k + 8 * h, syy[h]);
      _mm256_storeu_ps(awxx + k + 8 * h, swxx[h]);
      _mm256_storeu_ps(awyy + k + 8 * h, swyy[h]);
      _mm256_storeu_ps(awxy + k + 8 * h, swxy[h]);
    }
  };
  int64_t k = 0;
  for (; k + 16 <= L; k += 16) chunks(std::integral_constant<int, 2>{}, k);
  if (k < L) chunks(std::integral_constant<int, 1>{}, k);
  for (int64_t j = full; j < n; ++j) {  // the tail starts at a multiple of L: lane j - full is still pixel j % P
    const int64_t lane = j - full;
    add_to_sums<kWeighted>(xs[j], ys[j], kWeighted ? wexp[j] : 1.0f, axx[lane], ayy[lane], awxx[lane], awyy[lane],
                           awxy[lane]);
  }
}
#endif

// One prefetch (for reading) per cache line of the n elements from p, the last line included.
template <typename T>
inline void prefetch_lines(const T* p, int64_t n) {
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
  for (int64_t k = 0; k < n; k += kLine) __builtin_prefetch(p + k);
  __builtin_prefetch(p + n - 1);  // the run's last line when it starts mid-line
}

}  // namespace percept_fast
