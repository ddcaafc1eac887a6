// meanpool_distance, CPU kernel: spatial channel means of both maps in one pass (every element read once,
// fp32 lanes summed into fp64 per block), then unit-normalisation and squared distance / C per sample
// (finalize_sample: meanpool_finalize's maths, as in lpips_kernel.h for CUDA, with vectorised reductions). A NaN/Inf input makes its sample's distance NaN, so
// only such samples are re-checked (sums, then the planes whose sum is not finite): validation costs no extra pass.
#include <array>
#include <cstring>
#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include <type_traits>
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

// Sums of n adjacent planes of kP <= 16 pixels each (base[c * kP + p]). kP is a compile-time constant so the loop
// over planes vectorises (kP-strided loads, permuted into lanes) instead of a kP-long scalar sum per plane: small
// planes (ResNet layer4 at 64 px: 2x2) are otherwise bound by the per-plane overhead, not by memory. Up to 4 pixels
// GCC vectorises the plain per-plane loop; from 5 (and at 16, where it does not) 8 planes at a time with the plane
// index innermost vectorises (measured 0.18-0.2 ns per fp32 element for every kP, vs up to 0.34).
template <typename T, typename Acc, int kP>
void small_plane_sums(const T* base, int64_t n, double* out) {
  int64_t c = 0;
  if (kP > 4) {
    constexpr int L = 8;
    for (; c + L <= n; c += L) {
      Acc s[L] = {};
      for (int p = 0; p < kP; ++p)
        for (int l = 0; l < L; ++l) s[l] += Load<Acc, T>::get(base + (c + l) * kP + p);
      for (int l = 0; l < L; ++l) out[c + l] = static_cast<double>(s[l]);
    }
  }
  for (; c < n; ++c) {
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

// small_plane_sums for P = 1..kSmallPlane, else nullptr (plane_sum: from 25 pixels on, contiguous_sum's four
// accumulators beat summing 8 planes at a time, 1.1-2.2x on 7x7 planes).
template <typename T>
SmallSumsFn<T> small_sums_for(int64_t P) {
  static constexpr auto table = small_sums_table<T>(std::make_index_sequence<kSmallPlane>{});
  if (P >= 1 && P <= kSmallPlane) return table[static_cast<size_t>(P - 1)];
  return nullptr;
}

// One 256-bit register of accumulation lanes (GCC/Clang vector extension: explicit registers, portable code; AVX2
// on the x86-64-v3 baseline).
template <typename Acc>
struct Lanes {
  static constexpr int kN = 32 / static_cast<int>(sizeof(Acc));
  typedef Acc type __attribute__((vector_size(32)));
};

// kN consecutive elements of storage type T as accumulation lanes: fp16 by one vcvtph2ps where F16C exists (GCC
// converts a _Float16 vector lane by lane), bf16 by widening the bit patterns and shifting them into place.
template <typename Acc, typename T>
inline typename Lanes<Acc>::type load_lanes(const T* p) {
  using V = typename Lanes<Acc>::type;
  V v;
  if constexpr (std::is_same_v<T, Acc>) {
    std::memcpy(&v, p, sizeof(v));
  } else if constexpr (std::is_same_v<T, bf16_t> && std::is_same_v<Acc, float>) {
    typedef uint16_t U16 __attribute__((vector_size(16)));
    typedef uint32_t U32 __attribute__((vector_size(32)));
    U16 h;
    std::memcpy(&h, p, sizeof(h));
    const U32 w = __builtin_convertvector(h, U32) << 16;
    std::memcpy(&v, &w, sizeof(v));
#if defined(__F16C__)
  } else if constexpr (std::is_same_v<T, half_t> && std::is_same_v<Acc, float>) {
    const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    std::memcpy(&v, &f, sizeof(v));
#endif
  } else {
    for (int l = 0; l < Lanes<Acc>::kN; ++l) v[l] = Load<Acc, T>::get(p + l);
  }
  return v;
}

// Sum of P >= 1 unit-stride elements: four independent vector accumulators (one add chain per register is bound by
// the add latency, 3-4 cycles, not by the loads), reduced once per block of kBlock elements into fp64. Measured on
// in-cache planes of 169..4096 pixels (2-core AMD EPYC, one thread): 46-65 GB/s, 1.1-1.45x the previous 2 x 8-lane
// loop, and as fast as torch.sum over the same bytes.
// N planes at once (sums[j] of planes[j], each in the same order as alone: the same bits). N = 2 reads a map pair's
// plane c of x and of y as two concurrent streams; one plane after the other kept one stream in flight per thread,
// which on large planes (from DRAM) read slower than torch.compile's loop over both maps together.
template <int N, typename T, typename Acc>
void contiguous_sums(const T* const (&planes)[N], int64_t P, double (&sums)[N]) {
  using V = typename Lanes<Acc>::type;
  constexpr int L = Lanes<Acc>::kN;
  double total[N] = {};
  for (int64_t p0 = 0; p0 < P; p0 += kBlock) {
    const int64_t n = std::min(kBlock, P - p0);
    V acc[4][N] = {};
    int64_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u)
#pragma GCC unroll 4
        for (int j = 0; j < N; ++j) acc[u][j] += load_lanes<Acc>(planes[j] + p0 + i + u * L);
    }
    for (; i + L <= n; i += L)
#pragma GCC unroll 4
      for (int j = 0; j < N; ++j) acc[0][j] += load_lanes<Acc>(planes[j] + p0 + i);
#pragma GCC unroll 4
    for (int j = 0; j < N; ++j) {
      Acc s = 0;
      for (int64_t k = i; k < n; ++k) s += Load<Acc, T>::get(planes[j] + p0 + k);
      const V v = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
      for (int l = 0; l < L; ++l) s += v[l];
      total[j] += static_cast<double>(s);
    }
  }
  for (int j = 0; j < N; ++j) sums[j] = total[j];
}

template <typename T, typename Acc>
double contiguous_sum(const T* base, int64_t P) {
  const T* const planes[1] = {base};
  double sum[1];
  contiguous_sums<1, T, Acc>(planes, P, sum);
  return sum[0];
}

// Lane g of the result = the sum of the lanes of a[g] (8 fp32 registers reduced together: 14 shuffles and 7 adds
// for 8 planes instead of a horizontal sum per plane).
inline Lanes<float>::type transpose_reduce8(const Lanes<float>::type* a) {
  using V = Lanes<float>::type;
  const auto halves = [](V x, V y) {  // [x0+x4, x1+x5, x2+x6, x3+x7, y0+y4, ..., y3+y7]
    return __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15);
  };
  const V s01 = halves(a[0], a[1]), s23 = halves(a[2], a[3]), s45 = halves(a[4], a[5]), s67 = halves(a[6], a[7]);
  // [a0 a0 a2 a2 a1 a1 a3 a3] partial sums
  const V t0 = __builtin_shufflevector(s01, s23, 0, 1, 8, 9, 4, 5, 12, 13) +
               __builtin_shufflevector(s01, s23, 2, 3, 10, 11, 6, 7, 14, 15);
  const V t1 = __builtin_shufflevector(s45, s67, 0, 1, 8, 9, 4, 5, 12, 13) +
               __builtin_shufflevector(s45, s67, 2, 3, 10, 11, 6, 7, 14, 15);
  // [a0 a2 a4 a6 a1 a3 a5 a7]
  const V u = __builtin_shufflevector(t0, t1, 0, 2, 8, 10, 4, 6, 12, 14) +
              __builtin_shufflevector(t0, t1, 1, 3, 9, 11, 5, 7, 13, 15);
  return __builtin_shufflevector(u, u, 0, 4, 1, 5, 2, 6, 3, 7);
}

// Planes of 8 <= P < kAlignedPlaneMax pixels are summed 8 at a time as rows of 8 (segmented_sums8), larger ones one
// by one (contiguous_sum). Measured (one thread, 2-core AMD EPYC, rounds interleaved): 7x7 planes from DRAM
// (64x2048x7x7, both maps) 1.95 ms vs 2.43 for the 8 planes read interleaved with a prefetch (the scheme before) and
// 1.90 for one flat sum of the same bytes; in cache 0.144 vs 0.155 ms (64x192x7x7).
// Up to 512 (was 128; alternating builds, 2 threads, batch 64, in cache: 64x256x13x13 0.21 -> 0.19 ms, 64x384x13x13
// 0.45 -> 0.41, 64x64x15x15 0.065 -> 0.059, 64x256x16x16 0.41 -> 0.37; 27x27 planes no change either way).
constexpr int64_t kAlignedPlaneMax = 512;

// Lanes [first, end) of the 8 elements at p (the others 0), reading only p[first, end): the part of a row that
// lies in a plane whose first or last row it is (AVX2 masked loads do not touch, so cannot fault on, the lanes they
// leave out).
template <typename T>
inline Lanes<float>::type load_row_part(const T* p, int first, int end) {
  using V = Lanes<float>::type;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(first), lane),
                                             _mm256_cmpgt_epi32(_mm256_set1_epi32(end), lane));
    const __m256 v = _mm256_maskload_ps(p, mask);
    V out;
    std::memcpy(&out, &v, sizeof(out));
    return out;
  }
#endif
  T row[Lanes<float>::kN];
  std::memset(static_cast<void*>(row), 0, sizeof(row));
  for (int l = first; l < end; ++l) row[l] = p[l];
  return load_lanes<float>(row);
}

// Sums of 8 planes of P >= 8 unit-stride pixels, plane g at q + g * cs, into out[0, 8). Each plane is summed over
// "rows" of 8 as if the 8 planes lay end to end (plane g from element g * P on, row k = elements 8k..8k+7): for
// adjacent planes (cs == P) that is one ascending stream, which the hardware prefetchers follow (8 planes read
// interleaved were 8 streams 4P bytes apart) with no load straddling a row. A row shared by two planes is read by
// each for its own lanes only, so only a plane's own elements are read, and the order of the additions (so the
// rounding) is the same for any plane stride: x == y gives exactly 0 whatever the two maps' layouts.
template <typename T>
void segmented_sums8(const T* q, int64_t cs, int64_t P, double* out) {
  using V = Lanes<float>::type;
  constexpr int L = Lanes<float>::kN;  // 8
  V acc[8];
  for (int g = 0; g < 8; ++g) {
    const int64_t e0 = g * P, e1 = e0 + P;
    const T* row0 = q + g * cs - e0;  // row k of plane g starts at row0 + k * L
    const int64_t k1 = e1 / L;
    const int s1 = static_cast<int>(e1 % L);
    int64_t k = e0 / L;
    V a0 = load_row_part(row0 + k * L, static_cast<int>(e0 % L), L), a1 = {}, a2 = {}, a3 = {};
    for (++k; k + 4 <= k1; k += 4) {
      a0 += load_lanes<float>(row0 + k * L);
      a1 += load_lanes<float>(row0 + (k + 1) * L);
      a2 += load_lanes<float>(row0 + (k + 2) * L);
      a3 += load_lanes<float>(row0 + (k + 3) * L);
    }
    for (; k < k1; ++k) a0 += load_lanes<float>(row0 + k * L);
    if (s1 != 0) a1 += load_row_part(row0 + k1 * L, 0, s1);
    acc[g] = (a0 + a1) + (a2 + a3);
  }
  const V r = transpose_reduce8(acc);
  for (int g = 0; g < 8; ++g) out[g] = static_cast<double>(r[g]);
}

// Sums of 8 adjacent planes of kP pixels each (plane g at q + g * kP), into out[0, 8), for a compile-time kP: the
// block is kP whole rows of 8, each added entirely to the plane it lies in or split by a constant lane mask between
// the two it straddles (plain loads: every row lies inside the block). With the rows unrolled the 8 sums stay in
// registers and no row's bounds are computed at run time (segmented_sums8 spends more on those than on its loads
// for 7x7 planes in cache).
template <typename T, int kP>
inline void fixed_plane_sums8(const T* q, double* out) {
  using V = Lanes<float>::type;
  typedef int32_t VI __attribute__((vector_size(32)));
  constexpr VI lane = {0, 1, 2, 3, 4, 5, 6, 7};
  V acc[8] = {};
#pragma GCC unroll 128
  for (int r = 0; r < kP; ++r) {
    const V v = load_lanes<float>(q + 8 * r);
    const int g = (8 * r) / kP;              // the plane of the row's first lane
    const int split = (g + 1) * kP - 8 * r;  // lanes [0, split) are plane g's, the rest plane g + 1's
    if (split >= 8) {
      acc[g] += v;
    } else {
      acc[g] += lane < split ? v : V{};
      acc[g + 1] += lane < split ? V{} : v;
    }
  }
  const V sums = transpose_reduce8(acc);
  for (int g = 0; g < 8; ++g) out[g] = static_cast<double>(sums[g]);
}

// Sums of n adjacent planes of kP pixels (plane c at base + c * kP) into out[0, n): 8 at a time by
// fixed_plane_sums8, the last n % 8 by contiguous_sum. Both maps of a call take it or neither (small_sums_for), so
// x == y still gives exactly 0.
template <typename T, int kP>
void fixed_plane_sums(const T* base, int64_t n, double* out) {
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) fixed_plane_sums8<T, kP>(base + c * kP, out + c);
  for (; c < n; ++c) out[c] = contiguous_sum<T, float>(base + c * kP, kP);
}

// fixed_plane_sums for the plane sizes it is built for, fp32 accumulation only; else nullptr. 3x3, 4x4 and 7x7
// (AlexNet conv3 / VGG conv5_3 / AlexNet conv2 at 64 px, ResNet layer4 at 224 px). Measured (2 threads, batch 64,
// in cache, alternating builds): 64x384x3x3 0.093 -> 0.068 ms, 64x512x4x4 0.11 -> 0.052 (small_plane_sums before),
// 64x192x7x7 0.065 -> 0.048-0.053 (segmented_sums8 before). Not 13x13: 169 rows are not unrolled and the sums, indexed
// at run time, went through memory (3.5x slower than contiguous_sum).
template <typename T>
SmallSumsFn<T> fixed_sums_for(int64_t P) {
  if constexpr (std::is_same_v<typename AccOf<T>::type, float>) {
    if (P == 9) return &fixed_plane_sums<T, 9>;
    if (P == 16) return &fixed_plane_sums<T, 16>;
    if (P == 49) return &fixed_plane_sums<T, 49>;
  }
  return nullptr;
}

// Sums of n planes of P unit-stride pixels each, plane c at base + c * cs, into out[0, n).
template <typename T, typename Acc>
void plane_sums(const T* base, int64_t cs, int64_t n, int64_t P, double* out) {
  int64_t c = 0;
  if constexpr (std::is_same_v<Acc, float>) {
    if (P >= Lanes<float>::kN && P < kAlignedPlaneMax)
      for (; c + 8 <= n; c += 8) segmented_sums8<T>(base + c * cs, cs, P, out + c);
  }
  for (; c < n; ++c) out[c] = contiguous_sum<T, Acc>(base + c * cs, P);
}

// Sum of the P pixels of plane (b, c) of v (any strides).
template <typename T, typename Acc>
double plane_sum(const View4<T>& v, int64_t b, int64_t c, bool unit) {
  const int64_t H = v.size[2], W = v.size[3], P = H * W;
  const T* base = v.data + b * v.stride[0] + c * v.stride[1];
  double total = 0;
  if (unit && P <= 16) {  // small plane: a plain running sum (the lane set-up would dominate)
    Acc s = 0;
    for (int64_t i = 0; i < P; ++i) s += Load<Acc, T>::get(base + i);
    return static_cast<double>(s);
  }
  if (unit) {
    total = contiguous_sum<T, Acc>(base, P);
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

// Distance of one sample from its fp64 plane sums (meanpool_finalize's maths: means, unit-normalise, squared
// difference / C). The means go to `scratch` ([2C]) first so that the two reductions over C run on contiguous
// arrays in lanes and vectorise: a single running sum is one dependent add per channel (2048 channels: ~4 us
// per sample, more than summing its 2x2 planes takes).
template <typename Acc>
Acc finalize_sample(const double* sx, const double* sy, int64_t C, double inv_p, Acc eps, int mode, Acc* scratch) {
  // lanes: runs of up to L channels (a runtime-length inner loop, vectorised as such; a fixed 8-lane body gets
  // vectorised across the outer loop instead, all shuffles)
  constexpr int64_t L = 32;
  Acc* mx = scratch;
  Acc* my = scratch + C;
  for (int64_t c = 0; c < C; ++c) {
    mx[c] = static_cast<Acc>(sx[c] * inv_p);
    my[c] = static_cast<Acc>(sy[c] * inv_p);
  }
  Acc ax[L] = {}, ay[L] = {};
  for (int64_t c0 = 0; c0 < C; c0 += L) {
    const int64_t n = std::min(L, C - c0);
    for (int64_t l = 0; l < n; ++l) {
      ax[l] += mx[c0 + l] * mx[c0 + l];
      ay[l] += my[c0 + l] * my[c0 + l];
    }
  }
  Acc nx = 0, ny = 0;
  for (int64_t l = 0; l < L; ++l) {
    nx += ax[l];
    ny += ay[l];
  }
  const Acc ix = lpips_inv_norm(nx, eps, mode), iy = lpips_inv_norm(ny, eps, mode);
  Acc ad[L] = {};
  for (int64_t c0 = 0; c0 < C; c0 += L) {
    const int64_t n = std::min(L, C - c0);
    for (int64_t l = 0; l < n; ++l) {
      const Acc t = mx[c0 + l] * ix - my[c0 + l] * iy;
      ad[l] += t * t;
    }
  }
  Acc d = 0;
  for (int64_t l = 0; l < L; ++l) d += ad[l];
  return d / static_cast<Acc>(C);
}

// Plane sums of sample b of v (unit-stride planes) into out[0, C).
template <typename T>
void sample_plane_sums(const View4<T>& v, int64_t b, SmallSumsFn<T> small, double* out) {
  using Acc = typename AccOf<T>::type;
  if (small) {
    small(v.ptr(b, 0, 0, 0), v.size[1], out);
    return;
  }
  plane_sums<T, Acc>(v.ptr(b, 0, 0, 0), v.stride[1], v.size[1], v.size[2] * v.size[3], out);
}

// Both maps with unit-stride planes: one parallel_for over samples, each task summing the sample's planes of x and
// y and finalising its distance (no serial pass over the B x C sums after the threads). With fewer samples than
// ~4 per thread, tasks are blocks of up to 64 planes of either map instead, finalised after the threads.
template <typename T>
void meanpool_contig(const View4<T>& x, const View4<T>& y, std::vector<double>& sx, std::vector<double>& sy,
                     double eps, int mode, typename AccOf<T>::type* out) {
  using Acc = typename AccOf<T>::type;
  const int64_t B = x.size[0], C = x.size[1], P = x.size[2] * x.size[3];
  const double inv_p = 1.0 / static_cast<double>(P);
  // adjacent planes: 3x3, 4x4 and 7x7 ones summed by fixed_plane_sums, other small ones by small_plane_sums
  const bool adjacent = C == 1 || (x.stride[1] == P && y.stride[1] == P);
  SmallSumsFn<T> small = adjacent ? fixed_sums_for<T>(P) : nullptr;
  if (adjacent && small == nullptr) small = small_sums_for<T>(P);
  if (B >= 4 * num_threads()) {
    // the sums of one sample at a time stay in L1/L2 (a [B, C] fp64 array for 2x2 planes is half the input's size
    // again, written and read back)
    parallel_for_pooled(B, std::max<int64_t>(1, kMinWorkPerThread / (2 * C * P)), [&](int64_t b0, int64_t b1) {
      std::vector<double> sums(static_cast<size_t>(2 * C));
      std::vector<Acc> scratch(static_cast<size_t>(2 * C));
      for (int64_t b = b0; b < b1; ++b) {
        if (small == nullptr && P >= kAlignedPlaneMax) {  // large planes: x's and y's read together
          for (int64_t c = 0; c < C; ++c) {
            const T* const planes[2] = {x.ptr(b, c, 0, 0), y.ptr(b, c, 0, 0)};
            double pair[2];
            contiguous_sums<2, T, Acc>(planes, P, pair);
            sums[c] = pair[0];
            sums[C + c] = pair[1];
          }
        } else {
          sample_plane_sums<T>(x, b, small, sums.data());
          sample_plane_sums<T>(y, b, small, sums.data() + C);
        }
        out[b] = finalize_sample<Acc>(sums.data(), sums.data() + C, C, inv_p, static_cast<Acc>(eps), mode,
                                      scratch.data());
      }
    });
    return;
  }
  sx.resize(static_cast<size_t>(B * C));
  sy.resize(static_cast<size_t>(B * C));
  constexpr int64_t kPlanes = 64;
  const int64_t nc = (C + kPlanes - 1) / kPlanes, nt = B * nc;
  parallel_for_pooled(2 * nt, std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, P * kPlanes)),
               [&](int64_t t0, int64_t t1) {
                 for (int64_t t = t0; t < t1; ++t) {
                   const bool second = t >= nt;
                   const View4<T>& v = second ? y : x;
                   double* sums = second ? sy.data() : sx.data();
                   const int64_t u = second ? t - nt : t;
                   const int64_t b = u / nc, c0 = (u % nc) * kPlanes, c1 = std::min(C, c0 + kPlanes);
                   if (small)
                     small(v.ptr(b, c0, 0, 0), c1 - c0, sums + b * C + c0);
                   else
                     plane_sums<T, Acc>(v.ptr(b, c0, 0, 0), v.stride[1], c1 - c0, P, sums + b * C + c0);
                 }
               });
  std::vector<Acc> scratch(static_cast<size_t>(2 * C));
  for (int64_t b = 0; b < B; ++b)
    out[b] = finalize_sample<Acc>(sx.data() + b * C, sy.data() + b * C, C, inv_p, static_cast<Acc>(eps), mode,
                                  scratch.data());
}

template <typename T>
void channel_sums(const View4<T>& v, std::vector<double>& sums) {
  using Acc = typename AccOf<T>::type;
  const int64_t B = v.size[0], C = v.size[1], P = v.size[2] * v.size[3];
  const bool unit = pixels_unit_stride(v.size, v.stride);
  if (!unit && C > 1 && v.stride[1] == 1) {
    constexpr int64_t kStripe = 256;
    const int64_t ns = (C + kStripe - 1) / kStripe;
    parallel_for_pooled(B * ns, std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, P * kStripe)),
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
  parallel_for_pooled(B * nc, std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, P * kPlanes)),
               [&](int64_t t0, int64_t t1) {
                 for (int64_t t = t0; t < t1; ++t) {
                   const int64_t b = t / nc, c0 = (t % nc) * kPlanes, c1 = std::min(C, c0 + kPlanes);
                   for (int64_t c = c0; c < c1; ++c) sums[static_cast<size_t>(b * C + c)] = plane_sum<T, Acc>(v, b, c, unit);
                 }
               });
}

// Cold path: plane (b, c) of v holds a NaN/Inf element (a NaN distance can also come from finite values whose
// sums overflow).
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
    const View4<T> vx = x.as<T>(), vy = y.as<T>();
    Acc* o = reinterpret_cast<Acc*>(out);
    if (pixels_unit_stride(vx.size, vx.stride) && pixels_unit_stride(vy.size, vy.stride)) {
      meanpool_contig<T>(vx, vy, sx, sy, eps, mode, o);
    } else {
      sx.resize(static_cast<size_t>(B * C));
      sy.resize(static_cast<size_t>(B * C));
      channel_sums<T>(vx, sx);
      channel_sums<T>(vy, sy);
      std::vector<Acc> scratch(static_cast<size_t>(2 * C));
      for (int64_t b = 0; b < B; ++b)
        o[b] = finalize_sample<Acc>(sx.data() + b * C, sy.data() + b * C, C, 1.0 / static_cast<double>(P),
                                    static_cast<Acc>(eps), mode, scratch.data());
    }
    for (int64_t b = 0; b < B; ++b) {
      if (std::isfinite(o[b])) continue;  // a NaN/Inf mean makes the distance NaN (Inf * 0 or NaN)
      for (int64_t c = 0; c < C; ++c) {  // cold path: re-read the sample's planes
        if (plane_has_nonfinite(vx, b, c)) flags |= kNonFiniteX;
        if (plane_has_nonfinite(vy, b, c)) flags |= kNonFiniteY;
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
