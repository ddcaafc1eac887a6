// CPU helpers shared by the lpips_distance forward (lpips_cpu.cpp) and backward (lpips_backward_cpu.cpp) kernels:
// the five channel sums kept in lanes and folded into a pixel, the flat small-plane runs' lane count and expanded
// weight, and software prefetch of short runs.
#pragma once

#include <cstdint>
#include <vector>

namespace percept_fast {

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

// One prefetch (for reading) per cache line of the n elements from p, the last line included.
template <typename T>
inline void prefetch_lines(const T* p, int64_t n) {
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
  for (int64_t k = 0; k < n; k += kLine) __builtin_prefetch(p + k);
  __builtin_prefetch(p + n - 1);  // the run's last line when it starts mid-line
}

}  // namespace percept_fast
