// style_distance, CPU backend (percept_fast._C): packed, register-blocked GEMM tiles in C++ threads.
//
// Both feature matrices are packed (converted to the accumulation type: fp32, or fp64 for fp64 inputs) into panels
// of 16 rows, contraction-major: pack[(panel * K + k) * 16 + r]. A 4 x 16 micro-kernel (GCC/Clang vector extensions:
// AVX2/FMA with the default x86-64-v3 flags, NEON on ARM; 8 x 32 and 8 x 16 with AVX-512 where the CPU has it)
// accumulates tiles of T x T (T = 64, or less for small row counts) over contraction blocks of <= 256; each finished
// tile is squared and summed in double. 'diff' packs each contraction block of a sample right before its products
// (the packed block stays in cache), chunk by chunk (ChunkPlan). Threads take whole samples when there are at least
// as many samples as threads; with fewer, the contraction chunks of one sample when the contraction is long, else
// tile pairs (partials summed in a fixed order: results depend on neither the path nor the thread count).
// Maths and regimes: style_distance.h.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "registry.h"
#include "style_distance.h"

namespace percept_fast {
namespace style {
namespace {

constexpr int kPanel = 16;  // rows per packed panel (= micro-kernel width)
constexpr int kMr = 4;      // micro-kernel rows
constexpr int64_t kKc = 256;

template <typename A>
struct VecOf {
  typedef A type __attribute__((vector_size(32)));  // one AVX register (two NEON registers)
};

// c[i][0..15] (+)= sum_k a[k*16 + i] * b[k*16 + 0..15], i < 4. `a` and `b` point into packed panels.
// Written with 32-byte vectors and fully unrolled so the 4 x 16 accumulators stay in registers
// (8 ymm for fp32: per k, 2 loads + 4 broadcasts for 8 FMAs).
template <typename A, bool Zero>
inline void micro_4x16(const A* __restrict a, const A* __restrict b, int64_t kc, A* __restrict c, int64_t ldc) {
  using V = typename VecOf<A>::type;
  constexpr int L = static_cast<int>(32 / sizeof(A));  // lanes
  constexpr int NV = kPanel / L;
  V acc[kMr][NV];
#pragma GCC unroll 16
  for (int i = 0; i < kMr; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      if (Zero)
        acc[i][v] = V{};
      else
        std::memcpy(&acc[i][v], c + i * ldc + v * L, sizeof(V));
    }
  for (int64_t k = 0; k < kc; ++k) {
    V bv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], b + k * kPanel + v * L, sizeof(V));
    const A* ak = a + k * kPanel;
#pragma GCC unroll 16
    for (int i = 0; i < kMr; ++i) {
      const A s = ak[i];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[i][v] += s * bv[v];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < kMr; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) std::memcpy(c + i * ldc + v * L, &acc[i][v], sizeof(V));
}

// Packed per-sample matrix: R rows padded to Rp (multiple of the tile size), K contraction entries.
template <typename A>
struct Packed {
  std::unique_ptr<A[]> buf;  // uninitialised (pack writes every element): no serial zero fill of tens of MB
  size_t capacity = 0;
  int64_t Rp = 0, K = 0;
  void shape(int64_t rows_padded, int64_t k) {
    Rp = rows_padded;
    K = k;
    const size_t n = static_cast<size_t>(Rp * K);
    if (n > capacity) {
      buf.reset(new A[n]);
      capacity = n;
    }
  }
  A* data() { return buf.get(); }
  const A* panel(int64_t p, int64_t k0) const { return buf.get() + (p * K + k0) * kPanel; }
};

// Element (r, k) of sample b is at base + row_off[r] + k_off[k]. Rows past R (padding up to Rp) are zero.
// k_inner (rows far apart, contraction dense, e.g. NCHW with rows = channels): the transpose into panels goes in
// blocks of 16 x kPackChunk, so the block being written (1 KB) stays in L1 while its 16 rows are read; writing a whole
// row at a time strides over the panel, one cache line per entry, and for long contractions (224 x 224 pixels)
// streamed each panel 16 times through memory (packing took as long as the products; 3.4x faster this way).
constexpr int64_t kPackChunk = 16;

#if defined(__AVX__)
// dst[j * kPanel + i] = rows[i][k + j] for i, j < 8: an 8 x 8 fp32 transpose in registers (the panel's column block
// of 8 rows for 8 contraction entries). Pure data movement: the packed values are the scalar path's bits.
inline void transpose_8x8_into_panel(const float* const* rows, int64_t k, float* dst) {
  const __m256 r0 = _mm256_loadu_ps(rows[0] + k), r1 = _mm256_loadu_ps(rows[1] + k);
  const __m256 r2 = _mm256_loadu_ps(rows[2] + k), r3 = _mm256_loadu_ps(rows[3] + k);
  const __m256 r4 = _mm256_loadu_ps(rows[4] + k), r5 = _mm256_loadu_ps(rows[5] + k);
  const __m256 r6 = _mm256_loadu_ps(rows[6] + k), r7 = _mm256_loadu_ps(rows[7] + k);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst + 0 * kPanel, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(dst + 1 * kPanel, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(dst + 2 * kPanel, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(dst + 3 * kPanel, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(dst + 4 * kPanel, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(dst + 5 * kPanel, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(dst + 6 * kPanel, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(dst + 7 * kPanel, _mm256_permute2f128_ps(s3, s7, 0x31));
}
#endif

// Packs the contraction entries [ka, kb) of every panel into `out` (already shaped by Packed::shape), entry k at
// panel column k - shift (shift = ka: a block buffer holding only these entries).
template <typename T, typename A>
void pack_range(const T* base, const std::vector<int64_t>& row_off, const std::vector<int64_t>& k_off, bool k_inner,
                Packed<A>& out, int64_t ka, int64_t kb, int64_t shift = 0) {
  const int64_t R = static_cast<int64_t>(row_off.size()), K = out.K;
  bool k_unit = kb > ka;
  for (int64_t k = ka + 1; k < kb && k_unit; ++k) k_unit = k_off[k] == k_off[ka] + (k - ka);
  for (int64_t p = 0; p < out.Rp / kPanel; ++p) {
    A* dst = out.data() + p * K * kPanel - shift * kPanel;  // entry k goes to panel column k - shift
    const int64_t rn = std::max<int64_t>(0, std::min<int64_t>(kPanel, R - p * kPanel));
    if (k_inner && k_unit) {
      // contraction entries adjacent in memory (NCHW rows = channels): direct loads, no offset lookup per element
      int64_t k_vec = ka;  // entries [ka, k_vec) of the full 8-row groups are packed by the 8 x 8 transposes
#if defined(__AVX__)
      if constexpr (std::is_same_v<T, float> && std::is_same_v<A, float>) {
        // the scalar transpose below moves one float per load and store: as slow as the products for 'diff' tiles
        // with short contractions (64 x 64 x 15 x 15); 8 x 8 register transposes move 8 per instruction
        // k outer, the row groups inner: every 8 entries fill whole cache lines of the panel before moving on
        k_vec = ka + (kb - ka) / 8 * 8;
        const float* rows[kPanel];
        for (int64_t r = 0; r < rn; ++r) rows[r] = base + row_off[p * kPanel + r] + (k_off[ka] - ka);
        for (int64_t k = ka; k < k_vec; k += 8)
          for (int64_t r0 = 0; r0 + 8 <= rn; r0 += 8) transpose_8x8_into_panel(rows + r0, k, dst + k * kPanel + r0);
      }
#endif
      const int64_t r_vec = k_vec > ka ? rn / 8 * 8 : 0;  // rows whose [ka, k_vec) the transposes wrote
      // what is left: the last (kb - ka) % 8 entries of those rows, then every entry of the rest (blocked as above).
      // (One loop over all rows and kPackChunk blocks, mostly empty, took as long as the transposes of a block.)
      for (int64_t r = 0; r < r_vec; ++r) {
        const T* src = base + row_off[p * kPanel + r] + (k_off[ka] - ka);
        for (int64_t k = k_vec; k < kb; ++k) dst[k * kPanel + r] = Load<A, T>::get(src + k);
      }
      if (r_vec < kPanel) {
        for (int64_t k0 = ka; k0 < kb; k0 += kPackChunk) {
          const int64_t k1 = std::min(kb, k0 + kPackChunk);
          for (int64_t r = r_vec; r < rn; ++r) {
            const T* src = base + row_off[p * kPanel + r] + (k_off[ka] - ka);
            for (int64_t k = k0; k < k1; ++k) dst[k * kPanel + r] = Load<A, T>::get(src + k);
          }
          for (int64_t r = rn; r < kPanel; ++r)
            for (int64_t k = k0; k < k1; ++k) dst[k * kPanel + r] = A(0);
        }
      }
    } else if (k_inner) {
      for (int64_t k0 = ka; k0 < kb; k0 += kPackChunk) {
        const int64_t k1 = std::min(kb, k0 + kPackChunk);
        for (int64_t r = 0; r < rn; ++r) {
          const T* src = base + row_off[p * kPanel + r];
          for (int64_t k = k0; k < k1; ++k) dst[k * kPanel + r] = Load<A, T>::get(src + k_off[k]);
        }
        for (int64_t r = rn; r < kPanel; ++r)
          for (int64_t k = k0; k < k1; ++k) dst[k * kPanel + r] = A(0);
      }
    } else {
      // rows adjacent in memory (the 'kernel' method's spatial rows of an NCHW map): a contiguous copy per entry
      bool r_unit = rn > 0;
      for (int64_t r = 1; r < rn && r_unit; ++r) r_unit = row_off[p * kPanel + r] == row_off[p * kPanel] + r;
      for (int64_t k = ka; k < kb; ++k) {
        const T* src = base + k_off[k];
        A* d = dst + k * kPanel;
        if (r_unit) {
          const T* s = src + row_off[p * kPanel];
          for (int64_t r = 0; r < rn; ++r) d[r] = Load<A, T>::get(s + r);
        } else {
          for (int64_t r = 0; r < rn; ++r) d[r] = Load<A, T>::get(src + row_off[p * kPanel + r]);
        }
        for (int64_t r = rn; r < kPanel; ++r) d[r] = A(0);
      }
    }
  }
}

template <typename T, typename A>
void pack(const T* base, const std::vector<int64_t>& row_off, const std::vector<int64_t>& k_off, bool k_inner,
          int64_t Rp, Packed<A>& out) {
  out.shape(Rp, static_cast<int64_t>(k_off.size()));
  pack_range(base, row_off, k_off, k_inner, out, 0, out.K);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PF_STYLE_AVX512 1
// AVX-512 (chosen at run time where the CPU has it): an 8 x 32 fp32 micro-kernel over two adjacent B panels, 16
// zmm accumulators (per k: 2 loads and 8 broadcasts for 16 FMAs of 16 lanes). The x86-64-v3 build's 4 x 16 ymm
// kernel reaches half the FLOP/s of a CPU with 512-bit FMA units, where torch.compile's GEMM (oneDNN / MKL) uses
// them: 0.72-0.93x of it on 13 of 28 style bench cases on a 2-vCPU Xeon. Each element is the same chain of
// multiply-adds in k order as in micro_4x16 (the same bits: x == y still gives exactly 0, and a symmetric tile
// stays symmetric).
typedef float F32x16 __attribute__((vector_size(64)));
template <bool Zero>
__attribute__((target("avx512f"))) inline void micro_8x32_avx512(const float* __restrict a, const float* __restrict b0,
                                                                  const float* __restrict b1, int64_t kc,
                                                                  float* __restrict c, int64_t ldc) {
  F32x16 acc[8][2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    if (Zero) {
      acc[i][0] = F32x16{};
      acc[i][1] = F32x16{};
    } else {
      std::memcpy(&acc[i][0], c + i * ldc, sizeof(F32x16));
      std::memcpy(&acc[i][1], c + i * ldc + 16, sizeof(F32x16));
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    F32x16 u, v;
    std::memcpy(&u, b0 + k * kPanel, sizeof(F32x16));
    std::memcpy(&v, b1 + k * kPanel, sizeof(F32x16));
    const float* ak = a + k * kPanel;
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const float s = ak[i];
      acc[i][0] += s * u;
      acc[i][1] += s * v;
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    std::memcpy(c + i * ldc, &acc[i][0], sizeof(F32x16));
    std::memcpy(c + i * ldc + 16, &acc[i][1], sizeof(F32x16));
  }
}

// One column panel: 8 x 16, 8 zmm accumulators (per k: 1 load and 8 broadcasts for 8 FMAs; load-bound, but twice
// micro_4x16's width, which ran the lone diagonal blocks of every Gram tile at half the rate). The same chain per
// element as micro_4x16 and micro_8x32_avx512.
template <bool Zero>
__attribute__((target("avx512f"))) inline void micro_8x16_avx512(const float* __restrict a, const float* __restrict b,
                                                                  int64_t kc, float* __restrict c, int64_t ldc) {
  F32x16 acc[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    if (Zero)
      acc[i] = F32x16{};
    else
      std::memcpy(&acc[i], c + i * ldc, sizeof(F32x16));
  }
  for (int64_t k = 0; k < kc; ++k) {
    F32x16 u;
    std::memcpy(&u, b + k * kPanel, sizeof(F32x16));
    const float* ak = a + k * kPanel;
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] += ak[i] * u;
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) std::memcpy(c + i * ldc, &acc[i], sizeof(F32x16));
}

// tile_product (below) with the 8 x 32 kernel on pairs of column panels; a panel without a partner (an odd count, or
// the diagonal block (jp + 1, jp + 1) of an upper product) by micro_8x16_avx512.
template <bool Zero>
__attribute__((target("avx512f"))) void tile_product_avx512(const Packed<float>& Ap, int64_t I, const Packed<float>& Bp,
                                                             int64_t J, int64_t T, int64_t k0, int64_t kc, float* tile,
                                                             bool upper) {
  const int64_t np = T / kPanel;
  int64_t jp = 0;
  for (; jp + 1 < np; jp += 2) {
    const float* b0 = Bp.panel(J * np + jp, k0);
    const float* b1 = Bp.panel(J * np + jp + 1, k0);
    for (int64_t ip = 0; ip <= (upper ? jp : np - 1); ++ip) {
      const float* a = Ap.panel(I * np + ip, k0);
      for (int r = 0; r < kPanel; r += 8)
        micro_8x32_avx512<Zero>(a + r, b0, b1, kc, tile + (ip * kPanel + r) * T + jp * kPanel, T);
    }
    if (upper) {  // the block (jp + 1, jp + 1): the second panel alone
      const float* a = Ap.panel(I * np + jp + 1, k0);
      for (int r = 0; r < kPanel; r += 8)
        micro_8x16_avx512<Zero>(a + r, b1, kc, tile + ((jp + 1) * kPanel + r) * T + (jp + 1) * kPanel, T);
    }
  }
  for (; jp < np; ++jp) {
    const float* b = Bp.panel(J * np + jp, k0);
    for (int64_t ip = 0; ip < (upper ? jp + 1 : np); ++ip) {
      const float* a = Ap.panel(I * np + ip, k0);
      for (int r = 0; r < kPanel; r += 8)
        micro_8x16_avx512<Zero>(a + r, b, kc, tile + (ip * kPanel + r) * T + jp * kPanel, T);
    }
  }
}

// Whether the fp32 products use the AVX-512 kernels: the CPU has AVX-512F and PERCEPT_FAST_CPU_ISA is not "avx2"
// (read at each call of the op: the tests run both kernels on one machine).
std::atomic<bool> g_avx512{false};
void choose_kernels() {
  const char* isa = std::getenv("PERCEPT_FAST_CPU_ISA");
  const bool forced_avx2 = isa != nullptr && std::strcmp(isa, "avx2") == 0;
  g_avx512.store(!forced_avx2 && __builtin_cpu_supports("avx512f"), std::memory_order_relaxed);
}
#else
void choose_kernels() {}
#endif

// tile[T x T] (+)= Apack[rows I*T..] . Bpack[rows J*T..]^T over k in [k0, k0 + kc). `upper`: only the 16 x 16 blocks
// on and above the block diagonal (ip <= jp), for a symmetric product (A = B, I = J: a Gram tile on the diagonal);
// the blocks below are left as they were.
template <typename A, bool Zero>
void tile_product(const Packed<A>& Ap, int64_t I, const Packed<A>& Bp, int64_t J, int64_t T, int64_t k0, int64_t kc,
                  A* tile, bool upper = false) {
#ifdef PF_STYLE_AVX512
  if constexpr (std::is_same_v<A, float>) {
    if (g_avx512.load(std::memory_order_relaxed)) {
      tile_product_avx512<Zero>(Ap, I, Bp, J, T, k0, kc, tile, upper);
      return;
    }
  }
#endif
  const int64_t np = T / kPanel;
  for (int64_t jp = 0; jp < np; ++jp) {
    const A* b = Bp.panel(J * np + jp, k0);
    for (int64_t ip = 0; ip < (upper ? jp + 1 : np); ++ip) {
      const A* a = Ap.panel(I * np + ip, k0);
      for (int r = 0; r < kPanel; r += kMr)
        micro_4x16<A, Zero>(a + r, b, kc, tile + (ip * kPanel + r) * T + jp * kPanel, T);
    }
  }
}

// Contraction chunks of the 'diff' method: partial difference tiles are formed over a chunk in A and summed across
// chunks in double. The bounds depend on K alone, so every path and thread count gives the same bits: ceil(K / 4096)
// chunks of equal length (the last shorter), their count rounded up to a multiple of 4 where each still holds >= 512
// entries (one sample's chunks then spread evenly over 2 or 4 threads: K = 12544 gave 4096, 4096, 4096 and 256, so
// one of two threads had twice the other's work). A chunk's k-blocks are of equal length too, <= kKc.
constexpr int64_t kChunkTarget = 16 * kKc;
constexpr int64_t kChunkMin = 512;

struct ChunkPlan {
  int64_t K, n, len;
  explicit ChunkPlan(int64_t k) : K(k) {
    n = std::max<int64_t>(1, (K + kChunkTarget - 1) / kChunkTarget);
    const int64_t n4 = (n + 3) / 4 * 4;
    if (n4 != n && K >= n4 * kChunkMin) n = n4;
    len = (K + n - 1) / n;  // (n - 1) * len < K: no chunk is empty
  }
  int64_t begin(int64_t c) const { return c * len; }
  int64_t end(int64_t c) const { return std::min(K, (c + 1) * len); }
};

// The k-block length within the chunk [ka, kb): ceil((kb - ka) / kKc) blocks of equal length (the last shorter).
inline int64_t block_length(int64_t ka, int64_t kb) {
  const int64_t m = (kb - ka + kKc - 1) / kKc;
  return (kb - ka + m - 1) / m;
}

// A difference tile on the diagonal (I = J) is symmetric (X_I X_I^T - Y_I Y_I^T, and the micro-kernel forms
// entries (i, j) and (j, i) from the same products in the same order: bitwise equal), so the 'diff' paths form only
// its blocks with ip <= jp (10 of 16 for T = 64: 37.5 % fewer products) and weigh the squares: 2 above the block
// diagonal, 1 on it (whose 16 x 16 blocks hold both halves). Blocks below stay 0 in `part`.
// part[blocks of the tile] += t0 - t1 (all of it, or the upper blocks of a diagonal tile).
template <typename A>
void add_difference(A* part, const A* t0, const A* t1, int64_t T, bool diag) {
  if (!diag) {
    for (int64_t e = 0; e < T * T; ++e) part[e] += t0[e] - t1[e];
    return;
  }
  for (int64_t r = 0; r < T; ++r) {
    const int64_t c0 = r / kPanel * kPanel;  // the first column of the row's diagonal block
    for (int64_t e = r * T + c0; e < (r + 1) * T; ++e) part[e] += t0[e] - t1[e];
  }
}

// sum of squares of a finished difference tile d [T x T] (double), weighted for a diagonal tile (above).
inline double tile_square_sum(const double* d, int64_t T, bool diag) {
  double acc = 0.0;
  if (!diag) {
    for (int64_t e = 0; e < T * T; ++e) acc += d[e] * d[e];
    return acc;
  }
  double above = 0.0;
  for (int64_t r = 0; r < T; ++r) {
    const int64_t c0 = r / kPanel * kPanel, c1 = c0 + kPanel;
    for (int64_t e = r * T + c0; e < r * T + c1; ++e) acc += d[e] * d[e];
    for (int64_t e = r * T + c1; e < (r + 1) * T; ++e) above += d[e] * d[e];
  }
  return acc + 2.0 * above;
}

// part[T x T] = sum over the k-blocks of [ka, kb) of (X0_I X0_J^T - X1_I X1_J^T), in block order.
template <typename A>
void diff_chunk(const Packed<A>& p0, const Packed<A>& p1, int64_t T, int64_t I, int64_t J, int64_t ka, int64_t kb,
                A* t0, A* t1, A* part) {
  const int64_t TT = T * T;
  const bool diag = I == J;
  std::fill(part, part + TT, A(0));
  const int64_t bl = block_length(ka, kb);
  for (int64_t k0 = ka; k0 < kb; k0 += bl) {
    const int64_t kc = std::min(bl, kb - k0);
    tile_product<A, true>(p0, I, p0, J, T, k0, kc, t0, diag);
    tile_product<A, true>(p1, I, p1, J, T, k0, kc, t1, diag);
    add_difference(part, t0, t1, T, diag);
  }
}

template <typename A>
struct Scratch {
  Packed<A> p0, p1;
  Packed<A> block0, block1;  // one contraction block of each input (diff_chunk_blocks)
  std::vector<A> t0, t1, t2, t3;
  std::vector<double> d;
  std::vector<A> parts;       // every pair's partial tile of one chunk (sample_diff_blocks)
  std::vector<double> sums;   // and their sums over the chunks
  void tiles(int64_t T) {
    const size_t n = static_cast<size_t>(T * T);
    if (t0.size() != n) {
      t0.assign(n, A(0));
      t1.assign(n, A(0));
      t2.assign(n, A(0));
      t3.assign(n, A(0));
      d.assign(n, 0.0);
    }
  }
};

// The buffers of one call, kept per calling thread and reused by its next calls (grown, never shrunk): fresh
// packed copies of a few MB each cost their page faults on every call (1,536 per call on one 256x56x56 pair: 8.2
// ms a call against 3.8 in a process whose allocator happened to reuse freed memory). Every user writes what it
// reads first (pack writes every element, padding included; a partial tile is zeroed by the chunk that forms it).
template <typename A>
struct Workspace {
  Packed<A> p0, p1;
  std::vector<A> partial;
  std::vector<Scratch<A>> scratch;
  std::vector<Scratch<A>>& scratch_for(int64_t n) {
    if (static_cast<int64_t>(scratch.size()) < n) scratch.resize(static_cast<size_t>(n));
    return scratch;
  }
};

template <typename A>
Workspace<A>& workspace() {
  static thread_local Workspace<A> w;
  return w;
}

// sum over e of (sum over contraction chunks of part_chunk[e])^2: each chunk's partial difference tile (formed in A
// by `chunk(ka, kb, part)`) is added in double, in chunk order. Every 'diff' path sums this way, so all give the
// same bits. Uses s.t2 as the chunk's tile and s.d as the double sum (s.tiles done by the caller).
template <typename A, typename F>
double squared_chunk_sum(int64_t K, int64_t T, bool diag, Scratch<A>& s, F&& chunk) {
  const int64_t TT = T * T;
  double* d = s.d.data();
  A* part = s.t2.data();
  std::fill(d, d + TT, 0.0);
  const ChunkPlan plan(K);
  for (int64_t c = 0; c < plan.n; ++c) {
    chunk(plan.begin(c), plan.end(c), part);
    for (int64_t e = 0; e < TT; ++e) d[e] += static_cast<double>(part[e]);
  }
  return tile_square_sum(d, T, diag);
}

struct Geometry {
  int64_t B, C, H, W, P, R, K, T, Rp, nt, npairs;
};

Geometry geometry(const RawView4& v, bool kernel) {
  Geometry g;
  g.B = v.size[0];
  g.C = v.size[1];
  g.H = v.size[2];
  g.W = v.size[3];
  g.P = g.H * g.W;
  g.R = kernel ? g.P : g.C;
  g.K = kernel ? g.C : g.P;
  const int64_t r16 = (g.R + kPanel - 1) / kPanel * kPanel;
  g.T = std::min<int64_t>(64, r16);
  g.nt = (g.R + g.T - 1) / g.T;
  g.Rp = g.nt * g.T;
  g.npairs = num_pairs(g.nt);
  return g;
}

// Inputs of one sample as pack_range reads them.
template <typename T>
struct SampleSource {
  const T* base;
  const std::vector<int64_t>* row_off;
  const std::vector<int64_t>* k_off;
  bool k_inner;
};

// The 'diff' chunk [ka, kb) of every tile pair of one sample, packing each k-block of all Rp rows into a small
// buffer right before its products instead of the whole sample beforehand: the packed block (Rp x <= 256 entries
// per input) stays in cache, where a whole packed sample went out to memory and back (a 64 x 50176 sample is 12.8 MB
// per input; on one 128 x 12544 sample the separate packing pass took 30 % of the call). parts[pid * T * T ...] =
// the pair's partial difference tile: the same blocks, order and values as diff_chunk on the whole packed sample.
template <typename T, typename A>
void diff_chunk_blocks(const SampleSource<T>& x0, const SampleSource<T>& x1, const Geometry& g, int64_t ka, int64_t kb,
                       Scratch<A>& s, A* parts) {
  const int64_t TT = g.T * g.T;
  s.tiles(g.T);
  s.block0.shape(g.Rp, kKc);
  s.block1.shape(g.Rp, kKc);
  A *t0 = s.t0.data(), *t1 = s.t1.data();
  std::fill(parts, parts + g.npairs * TT, A(0));
  const int64_t bl = block_length(ka, kb);
  for (int64_t k0 = ka; k0 < kb; k0 += bl) {
    const int64_t kc = std::min(bl, kb - k0);
    pack_range(x0.base, *x0.row_off, *x0.k_off, x0.k_inner, s.block0, k0, k0 + kc, k0);
    pack_range(x1.base, *x1.row_off, *x1.k_off, x1.k_inner, s.block1, k0, k0 + kc, k0);
    for (int64_t pid = 0; pid < g.npairs; ++pid) {
      int64_t I, J;
      pair_to_tiles(pid, g.nt, &I, &J);
      const bool diag = I == J;
      tile_product<A, true>(s.block0, I, s.block0, J, g.T, 0, kc, t0, diag);
      tile_product<A, true>(s.block1, I, s.block1, J, g.T, 0, kc, t1, diag);
      add_difference(parts + pid * TT, t0, t1, g.T, diag);
    }
  }
}

// Pair pid's weighted share of a sample's value, from its finished difference tile d (double).
inline double pair_square_sum(const Geometry& g, int64_t pid, const double* d) {
  int64_t I, J;
  pair_to_tiles(pid, g.nt, &I, &J);
  return pair_weight(I, J) * tile_square_sum(d, g.T, I == J);
}

// sum over the tile pairs (in pair order) of pair_square_sum(d[pair]), d[pair] = the sum of the pair's partial tiles
// over the chunks in chunk order, in double: how every 'diff' path finishes a sample.
template <typename A>
double finish_pairs(const Geometry& g, int64_t nchunks, const A* parts, int64_t chunk_stride, int64_t pair_stride,
                    double* d) {
  const int64_t TT = g.T * g.T;
  double sum = 0.0;
  for (int64_t pid = 0; pid < g.npairs; ++pid) {
    std::fill(d, d + TT, 0.0);
    for (int64_t c = 0; c < nchunks; ++c) {
      const A* part = parts + c * chunk_stride + pid * pair_stride;
      for (int64_t e = 0; e < TT; ++e) d[e] += static_cast<double>(part[e]);
    }
    sum += pair_square_sum(g, pid, d);
  }
  return sum;
}

// Bytes of the per-pair partial and double tiles a whole sample on one thread needs (sample_diff_blocks).
inline int64_t blocks_bytes(const Geometry& g, int64_t acc_size) { return g.npairs * g.T * g.T * (acc_size + 8); }
constexpr int64_t kBlocksBytes = int64_t{4} << 20;  // beyond that (over ~17 tiles of rows): whole-sample packing

// The 'diff' value of one sample on the calling thread: chunk by chunk (diff_chunk_blocks), the chunks' partial
// tiles added in double per pair as they come (the same order of additions as finish_pairs).
template <typename T, typename A>
double sample_diff_blocks(const SampleSource<T>& x0, const SampleSource<T>& x1, const Geometry& g, Scratch<A>& s) {
  const int64_t TT = g.T * g.T, n = g.npairs * TT;
  s.parts.resize(static_cast<size_t>(n));
  s.sums.assign(static_cast<size_t>(n), 0.0);
  const ChunkPlan plan(g.K);
  for (int64_t c = 0; c < plan.n; ++c) {
    diff_chunk_blocks(x0, x1, g, plan.begin(c), plan.end(c), s, s.parts.data());
    for (int64_t e = 0; e < n; ++e) s.sums[e] += static_cast<double>(s.parts[e]);
  }
  double sum = 0.0;
  for (int64_t pid = 0; pid < g.npairs; ++pid) sum += pair_square_sum(g, pid, s.sums.data() + pid * TT);
  return sum;
}

// Raw contribution of one tile pair (already weighted).
template <typename A>
double pair_sum(const Packed<A>& p0, const Packed<A>& p1, bool kernel, int64_t T, int64_t I, int64_t J,
                Scratch<A>& s) {
  s.tiles(T);
  const int64_t K = p0.K, TT = T * T;
  A *t0 = s.t0.data(), *t1 = s.t1.data(), *t2 = s.t2.data(), *t3 = s.t3.data();
  double acc = 0.0;
  if (!kernel) {
    // D tile = sum over k-blocks of (X0_I X0_J^T - X1_I X1_J^T); each block's two products are fresh tiles so
    // identical inputs cancel exactly. Blocks are summed per contraction chunk (ChunkPlan) in A, the chunks in double:
    // the same arithmetic as run_split_contraction, so every path gives the same bits.
    acc = squared_chunk_sum(K, T, I == J, s, [&](int64_t ka, int64_t kb, A* part) {
      diff_chunk(p0, p1, T, I, J, ka, kb, t0, t1, part);
    });
  } else if (I == J) {
    // a diagonal tile: K00 and K11 are symmetric (their upper blocks, weighed as in tile_square_sum) and
    // K10[I, I] = K01[I, I]^T has the same sum of squares as K01[I, I]: 2.25 products instead of 4
    std::fill(t0, t0 + TT, A(0));
    std::fill(t1, t1 + TT, A(0));
    std::fill(t2, t2 + TT, A(0));
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kc = std::min(kKc, K - k0);
      tile_product<A, false>(p0, I, p0, J, T, k0, kc, t0, true);  // K00[I, I], upper blocks
      tile_product<A, false>(p1, I, p1, J, T, k0, kc, t1, true);  // K11[I, I], upper blocks
      tile_product<A, false>(p0, I, p1, J, T, k0, kc, t2);        // K01[I, I]
    }
    // per entry (r, j) as the full tile's (a^2 + b^2) - (c^2 + d^2), d = K10[r, j] = K01[j, r]: identical inputs
    // still cancel exactly; an entry above the block diagonal stands for its mirror too
    double on = 0.0, above = 0.0;
    for (int64_t r = 0; r < T; ++r) {
      const int64_t c0 = r / kPanel * kPanel, c1 = c0 + kPanel;
      for (int64_t j = c0; j < T; ++j) {
        const double a = t0[r * T + j], b = t1[r * T + j], c = t2[r * T + j], d = t2[j * T + r];
        (j < c1 ? on : above) += (a * a + b * b) - (c * c + d * d);
      }
    }
    acc = on + 2.0 * above;
  } else {
    std::fill(t0, t0 + TT, A(0));
    std::fill(t1, t1 + TT, A(0));
    std::fill(t2, t2 + TT, A(0));
    std::fill(t3, t3 + TT, A(0));
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kc = std::min(kKc, K - k0);
      tile_product<A, false>(p0, I, p0, J, T, k0, kc, t0);  // K00[I, J]
      tile_product<A, false>(p1, I, p1, J, T, k0, kc, t1);  // K11[I, J]
      tile_product<A, false>(p0, I, p1, J, T, k0, kc, t2);  // K01[I, J]
      tile_product<A, false>(p1, I, p0, J, T, k0, kc, t3);  // K10[I, J] = K01[J, I]^T
    }
    for (int64_t e = 0; e < TT; ++e) {
      const double a = t0[e], b = t1[e], c = t2[e], d = t3[e];
      acc += (a * a + b * b) - (c * c + d * d);
    }
  }
  return pair_weight(I, J) * acc;
}

// Dynamic scheduling over [0, n): f(item, thread_index). On torch's OpenMP pool where it can (as
// parallel_for_pooled): fresh threads competed for the cores with torch's pool threads still spinning after a torch
// op, and a call took 1.46-1.94 ms from run to run on 64x64x15x15 (torch.compile 1.74-1.79).
template <typename F>
void parallel_dynamic(int64_t n, int nthreads, F&& f) {
  std::atomic<int64_t> next{0};
#if defined(_OPENMP)
  if (nthreads > 1 && torch_pool_usable()) {
#pragma omp parallel num_threads(nthreads)
    {
      const int t = omp_get_thread_num();
      for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) f(i, t);
    }
    return;
  }
#endif
  parallel_for(nthreads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) f(i, static_cast<int>(t));
    }
  });
}

// Few samples with a long contraction ('diff' method): the contraction chunks are the work items, so that packing
// and products run on every thread. With at least as many chunks as threads (or a single tile), item c forms every
// pair's partial difference tile of chunk c from blocks packed in cache (diff_chunk_blocks); with fewer, the sample is
// packed first (in parallel) and the items are (pair, chunk). Either way the partials are summed per pair in double,
// in chunk order (finish_pairs): the same arithmetic as every other path, so the result depends on neither the path
// nor the thread count.
constexpr int64_t kSplitPartialBytes = int64_t{64} << 20;  // partial tiles held at once (else the pair path)

bool split_contraction_fits(const Geometry& g, int nth) {
  const ChunkPlan plan(g.K);
  return g.B < nth && plan.n >= 2 && g.npairs * plan.n * g.T * g.T * 8 <= kSplitPartialBytes;
}

// Packs contraction entries [0, K) of one sample into p (shaped by the caller) on up to nth threads, in ranges of
// kPackRange entries (data movement only: the same values whatever the split).
constexpr int64_t kPackRange = 1024;
template <typename T, typename A>
void pack_parallel(const T* base0, const std::vector<int64_t>& ro0, const std::vector<int64_t>& ko0, bool ki0,
                   Packed<A>& p0, const T* base1, const std::vector<int64_t>& ro1, const std::vector<int64_t>& ko1,
                   bool ki1, Packed<A>& p1, int64_t K, int nth) {
  const int64_t ranges = (K + kPackRange - 1) / kPackRange;
  parallel_dynamic(2 * ranges, static_cast<int>(std::min<int64_t>(nth, 2 * ranges)), [&](int64_t item, int) {
    const int64_t r = item % ranges, ka = r * kPackRange, kb = std::min(K, ka + kPackRange);
    if (item < ranges)
      pack_range(base0, ro0, ko0, ki0, p0, ka, kb);
    else
      pack_range(base1, ro1, ko1, ki1, p1, ka, kb);
  });
}

template <typename T, typename A>
void run_split_contraction(const View4<T>& v0, const View4<T>& v1, const std::vector<int64_t>& ro0,
                           const std::vector<int64_t>& ko0, bool ki0, const std::vector<int64_t>& ro1,
                           const std::vector<int64_t>& ko1, bool ki1, const Geometry& g, int nth, double* out) {
  const ChunkPlan plan(g.K);
  const int64_t chunks = plan.n, TT = g.T * g.T, items = g.npairs * chunks;
  const bool blocks = g.nt == 1 || chunks >= nth;
  Workspace<A>& w = workspace<A>();
  Packed<A>&p0 = w.p0, &p1 = w.p1;
  if (!blocks) {
    p0.shape(g.Rp, g.K);
    p1.shape(g.Rp, g.K);
  }
  std::vector<A>& partial = w.partial;
  std::vector<Scratch<A>>& scratch = w.scratch_for(nth);
  std::vector<double> d(static_cast<size_t>(TT));
  partial.resize(static_cast<size_t>(items * TT));  // (every item zeroes the tiles it forms)
  for (int64_t b = 0; b < g.B; ++b) {
    if (blocks) {  // item c: chunk c of every pair, layout [chunk][pair]
      const SampleSource<T> x0{v0.data + b * v0.stride[0], &ro0, &ko0, ki0};
      const SampleSource<T> x1{v1.data + b * v1.stride[0], &ro1, &ko1, ki1};
      parallel_dynamic(chunks, static_cast<int>(std::min<int64_t>(nth, chunks)), [&](int64_t c, int t) {
        diff_chunk_blocks(x0, x1, g, plan.begin(c), plan.end(c), scratch[t], partial.data() + c * g.npairs * TT);
      });
      out[b] = finish_pairs(g, chunks, partial.data(), g.npairs * TT, TT, d.data());
    } else {  // item (pair, chunk), layout [pair][chunk]
      pack_parallel(v0.data + b * v0.stride[0], ro0, ko0, ki0, p0, v1.data + b * v1.stride[0], ro1, ko1, ki1, p1,
                    g.K, nth);
      parallel_dynamic(items, static_cast<int>(std::min<int64_t>(nth, items)), [&](int64_t item, int t) {
        const int64_t pid = item / chunks, c = item % chunks;
        int64_t I, J;
        pair_to_tiles(pid, g.nt, &I, &J);
        Scratch<A>& s = scratch[t];
        s.tiles(g.T);
        diff_chunk(p0, p1, g.T, I, J, plan.begin(c), plan.end(c), s.t0.data(), s.t1.data(),
                   partial.data() + item * TT);
      });
      out[b] = finish_pairs(g, chunks, partial.data(), TT, chunks * TT, d.data());
    }
  }
}

template <typename T>
void run(const RawView4& r0, const RawView4& r1, bool kernel, double* out) {
  using A = typename AccOf<T>::type;
  choose_kernels();
  const View4<T> v0 = r0.as<T>(), v1 = r1.as<T>();
  const Geometry g = geometry(r0, kernel);
  // offsets of rows and contraction entries for each input (strides may differ between the two)
  auto offsets = [&](const View4<T>& v, std::vector<int64_t>& ro, std::vector<int64_t>& ko, bool& k_inner) {
    std::vector<int64_t> sp(static_cast<size_t>(g.P)), ch(static_cast<size_t>(g.C));
    for (int64_t p = 0; p < g.P; ++p) sp[p] = spatial_offset(p, g.W, v.stride[2], v.stride[3]);
    for (int64_t c = 0; c < g.C; ++c) ch[c] = c * v.stride[1];
    const int64_t s_sp = g.W > 1 ? std::llabs(v.stride[3]) : std::llabs(v.stride[2]);
    const int64_t s_ch = std::llabs(v.stride[1]);
    if (kernel) {
      ro.swap(sp);
      ko.swap(ch);
      k_inner = s_ch <= s_sp;
    } else {
      ro.swap(ch);
      ko.swap(sp);
      k_inner = s_sp <= s_ch;
    }
  };
  std::vector<int64_t> ro0, ko0, ro1, ko1;
  bool ki0 = true, ki1 = true;
  offsets(v0, ro0, ko0, ki0);
  offsets(v1, ro1, ko1, ki1);
  const int nth = num_threads();
  if (!kernel && split_contraction_fits(g, nth)) {
    run_split_contraction<T, A>(v0, v1, ro0, ko0, ki0, ro1, ko1, ki1, g, nth, out);
    return;
  }
  if (g.B >= nth || g.npairs == 1) {
    const int nw = static_cast<int>(std::min<int64_t>(nth, g.B));
    std::vector<Scratch<A>>& scratch = workspace<A>().scratch_for(nw);
    parallel_dynamic(g.B, nw, [&](int64_t b, int t) {
      Scratch<A>& s = scratch[t];
      if (!kernel && blocks_bytes(g, sizeof(A)) <= kBlocksBytes) {  // blocks packed in cache as they are used
        const SampleSource<T> x0{v0.data + b * v0.stride[0], &ro0, &ko0, ki0};
        const SampleSource<T> x1{v1.data + b * v1.stride[0], &ro1, &ko1, ki1};
        out[b] = sample_diff_blocks(x0, x1, g, s);
        return;
      }
      pack(v0.data + b * v0.stride[0], ro0, ko0, ki0, g.Rp, s.p0);
      pack(v1.data + b * v1.stride[0], ro1, ko1, ki1, g.Rp, s.p1);
      double sum = 0.0;
      for (int64_t pid = 0; pid < g.npairs; ++pid) {
        int64_t I, J;
        pair_to_tiles(pid, g.nt, &I, &J);
        sum += pair_sum(s.p0, s.p1, kernel, g.T, I, J, s);
      }
      out[b] = sum;
    });
    return;
  }
  // Few samples: one sample at a time, tile pairs in parallel.
  const int nw = static_cast<int>(std::min<int64_t>(nth, g.npairs));
  Workspace<A>& w = workspace<A>();
  std::vector<Scratch<A>>& scratch = w.scratch_for(nw);
  Packed<A>&p0 = w.p0, &p1 = w.p1;
  std::vector<double> part(static_cast<size_t>(g.npairs));
  p0.shape(g.Rp, g.K);
  p1.shape(g.Rp, g.K);
  for (int64_t b = 0; b < g.B; ++b) {
    pack_parallel(v0.data + b * v0.stride[0], ro0, ko0, ki0, p0, v1.data + b * v1.stride[0], ro1, ko1, ki1, p1, g.K,
                  nth);
    parallel_dynamic(g.npairs, nw, [&](int64_t pid, int t) {
      int64_t I, J;
      pair_to_tiles(pid, g.nt, &I, &J);
      part[pid] = pair_sum(p0, p1, kernel, g.T, I, J, scratch[t]);
    });
    double sum = 0.0;
    for (double x : part) sum += x;
    out[b] = sum;
  }
}

// style_distance_matrix, 'kernel' method: out[n * M + m] = ||X_n^T Y_m||_F^2 (all pairs), or with self_only
// out[n] = ||X_n^T X_n||_F^2 (symmetric tiles). Never materialises the P x P products.
template <typename T>
void run_cross(const RawView4& rx, const RawView4& ry, bool self_only, double* out) {
  using A = typename AccOf<T>::type;
  const View4<T> vx = rx.as<T>(), vy = ry.as<T>();
  const Geometry g = geometry(rx, /*kernel=*/true);
  const int64_t N = rx.size[0], M = self_only ? 0 : ry.size[0];
  auto offsets = [&](const View4<T>& v, std::vector<int64_t>& ro, std::vector<int64_t>& ko, bool& k_inner) {
    ro.resize(static_cast<size_t>(g.P));
    ko.resize(static_cast<size_t>(g.C));
    for (int64_t p = 0; p < g.P; ++p) ro[p] = spatial_offset(p, g.W, v.stride[2], v.stride[3]);
    for (int64_t c = 0; c < g.C; ++c) ko[c] = c * v.stride[1];
    const int64_t s_sp = g.W > 1 ? std::llabs(v.stride[3]) : std::llabs(v.stride[2]);
    k_inner = std::llabs(v.stride[1]) <= s_sp;
  };
  std::vector<int64_t> rox, kox, roy, koy;
  bool kix = true, kiy = true;
  offsets(vx, rox, kox, kix);
  offsets(vy, roy, koy, kiy);
  std::vector<Packed<A>> px(static_cast<size_t>(N)), py(static_cast<size_t>(M));
  const int nth = num_threads();
  parallel_dynamic(N + M, static_cast<int>(std::min<int64_t>(nth, N + M)), [&](int64_t i, int) {
    if (i < N)
      pack(vx.data + i * vx.stride[0], rox, kox, kix, g.Rp, px[i]);
    else
      pack(vy.data + (i - N) * vy.stride[0], roy, koy, kiy, g.Rp, py[i - N]);
  });
  const int64_t items = self_only ? N : N * M;
  const int nw = static_cast<int>(std::min<int64_t>(nth, items));
  std::vector<std::vector<A>> tiles(static_cast<size_t>(nw), std::vector<A>(static_cast<size_t>(g.T * g.T)));
  parallel_dynamic(items, nw, [&](int64_t item, int t) {
    const Packed<A>& a = self_only ? px[item] : px[item / M];
    const Packed<A>& b = self_only ? px[item] : py[item % M];
    A* tile = tiles[t].data();
    double sum = 0.0;
    for (int64_t I = 0; I < g.nt; ++I) {
      for (int64_t J = self_only ? I : 0; J < g.nt; ++J) {
        std::fill(tile, tile + g.T * g.T, A(0));
        for (int64_t k0 = 0; k0 < g.K; k0 += kKc) tile_product<A, false>(a, I, b, J, g.T, k0, std::min(kKc, g.K - k0), tile);
        double s = 0.0;
        for (int64_t e = 0; e < g.T * g.T; ++e) s += static_cast<double>(tile[e]) * static_cast<double>(tile[e]);
        sum += (self_only ? pair_weight(I, J) : 1.0) * s;
      }
    }
    out[item] = sum;
  });
}

void check_views(const RawView4& a, const RawView4& b) {
  for (int i = 0; i < 4; ++i)
    if (a.size[i] != b.size[i]) throw std::invalid_argument("style_distance: x0 and x1 must have the same shape");
  if (a.dtype != b.dtype) throw std::invalid_argument("style_distance: x0 and x1 must have the same dtype");
  for (int i = 0; i < 4; ++i)
    if (a.size[i] <= 0) throw std::invalid_argument("style_distance: every dimension must be >= 1");
}

void register_style_distance(pybind11::module_& m) {
  m.def(
      "style_distance_sum",
      [](const TensorArg& x0, const TensorArg& x1, bool kernel, uintptr_t out_ptr) {
        const RawView4 a = to_view(x0, "x0"), b = to_view(x1, "x1");
        check_views(a, b);
        if (out_ptr == 0) throw std::invalid_argument("style_distance: null output pointer");
        double* out = reinterpret_cast<double*>(out_ptr);
        pybind11::gil_scoped_release release;
        dispatch_dtype(a.dtype, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          run<T>(a, b, kernel, out);
        });
      },
      pybind11::arg("x0"), pybind11::arg("x1"), pybind11::arg("kernel"), pybind11::arg("out_ptr"),
      "Raw ||X0 X0^T - X1 X1^T||_F^2 per sample into out (float64 [B]); kernel=True uses the H*W x H*W identity.");
  m.def(
      "style_cross_sq",
      [](const TensorArg& x, const TensorArg& y, bool self_only, uintptr_t out_ptr) {
        const RawView4 a = to_view(x, "x"), b = to_view(y, "y");
        for (int i = 1; i < 4; ++i)
          if (a.size[i] != b.size[i]) throw std::invalid_argument("style_cross_sq: x and y must agree in [C, H, W]");
        for (int i = 0; i < 4; ++i)
          if (a.size[i] <= 0 || b.size[i] <= 0) throw std::invalid_argument("style_cross_sq: every dimension must be >= 1");
        if (a.dtype != b.dtype) throw std::invalid_argument("style_cross_sq: x and y must have the same dtype");
        if (out_ptr == 0) throw std::invalid_argument("style_cross_sq: null output pointer");
        double* out = reinterpret_cast<double*>(out_ptr);
        pybind11::gil_scoped_release release;
        dispatch_dtype(a.dtype, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          run_cross<T>(a, b, self_only, out);
        });
      },
      pybind11::arg("x"), pybind11::arg("y"), pybind11::arg("self_only"), pybind11::arg("out_ptr"),
      "||X_n^T Y_m||_F^2 for all pairs into out (float64 [N, M]); self_only: ||X_n^T X_n||_F^2 into out[N].");
}

}  // namespace
}  // namespace style
}  // namespace percept_fast

PF_REGISTER_OP(style_distance, percept_fast::style::register_style_distance)
