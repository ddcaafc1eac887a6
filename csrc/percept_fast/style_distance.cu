// style_distance, CUDA backend (percept_fast._C_cuda): shared-memory tiled SIMT kernels, fp32 accumulation
// (fp64 for fp64 inputs). One block = one sample x one tile pair (I <= J) of 64 x 64; 256 threads, each
// owning a 4 x 4 sub-tile (rows ty + 16 i, columns tx + 16 j: conflict-free shared-memory reads); the
// contraction advances in chunks of 16 staged through shared memory (any strides; the load order follows the
// input's fastest dimension so global reads coalesce for NCHW and channels_last). Each block writes its
// weighted sum of squares to partial[b, pair] (double); Python sums the partials. Maths: style_distance.h.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "common.h"
#include "style_distance.h"

namespace percept_fast {
namespace style {
namespace {

constexpr int kT = 64;    // tile rows
constexpr int kBK = 16;   // contraction chunk
constexpr int kThreads = 256;

template <typename T, typename A, bool KERNEL>
__global__ void __launch_bounds__(kThreads)
    sd_tiles(View4<T> v0, View4<T> v1, int64_t nt, int64_t npairs, bool k_fast, double* __restrict__ out,
             int64_t kper, A* __restrict__ ws) {
  // ws != nullptr ('diff' split-K): this block covers contraction [split * kper, +kper) and writes its partial
  // D tile to ws[b, pair, split, 64, 64] instead of squaring (the host sums the splits, then squares).
  const int64_t pid = blockIdx.x;
  const int64_t b = blockIdx.y;
  const int64_t split = blockIdx.z;
  int64_t ti, tj;
  pair_to_tiles(pid, nt, &ti, &tj);
  const int64_t C = v0.size[1], W = v0.size[3], P = v0.size[2] * v0.size[3];
  const int64_t R = KERNEL ? P : C, K = KERNEL ? C : P;
  const int64_t k_begin = (!KERNEL && ws != nullptr) ? split * kper : 0;
  const int64_t k_end = (!KERNEL && ws != nullptr) ? (k_begin + kper < K ? k_begin + kper : K) : K;

  __shared__ A sI0[kBK][kT], sJ0[kBK][kT], sI1[kBK][kT], sJ1[kBK][kT];
  __shared__ double red[kThreads];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const T* base0 = v0.data + b * v0.stride[0];
  const T* base1 = v1.data + b * v1.stride[0];

  A acc0[4][4], acc1[4][4], acc2[4][4], acc3[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc0[i][j] = acc1[i][j] = acc2[i][j] = acc3[i][j] = A(0);

  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
    for (int e = tid; e < kT * kBK; e += kThreads) {
      int r, k;
      if (k_fast) {
        k = e % kBK;
        r = e / kBK;
      } else {
        r = e % kT;
        k = e / kT;
      }
      const int64_t kk = k0 + k, rI = ti * kT + r, rJ = tj * kT + r;
      A i0 = A(0), i1 = A(0), j0 = A(0), j1 = A(0);
      if (kk < k_end) {
        if (KERNEL) {  // rows = positions, contraction = channels
          const int64_t c0 = kk * v0.stride[1], c1 = kk * v1.stride[1];
          if (rI < R) {
            i0 = Load<A, T>::get(base0 + c0 + spatial_offset(rI, W, v0.stride[2], v0.stride[3]));
            i1 = Load<A, T>::get(base1 + c1 + spatial_offset(rI, W, v1.stride[2], v1.stride[3]));
          }
          if (rJ < R) {
            j0 = Load<A, T>::get(base0 + c0 + spatial_offset(rJ, W, v0.stride[2], v0.stride[3]));
            j1 = Load<A, T>::get(base1 + c1 + spatial_offset(rJ, W, v1.stride[2], v1.stride[3]));
          }
        } else {  // rows = channels, contraction = positions
          const int64_t p0 = spatial_offset(kk, W, v0.stride[2], v0.stride[3]);
          const int64_t p1 = spatial_offset(kk, W, v1.stride[2], v1.stride[3]);
          if (rI < R) {
            i0 = Load<A, T>::get(base0 + rI * v0.stride[1] + p0);
            i1 = Load<A, T>::get(base1 + rI * v1.stride[1] + p1);
          }
          if (rJ < R) {
            j0 = Load<A, T>::get(base0 + rJ * v0.stride[1] + p0);
            j1 = Load<A, T>::get(base1 + rJ * v1.stride[1] + p1);
          }
        }
      }
      sI0[k][r] = i0;
      sI1[k][r] = i1;
      sJ0[k][r] = j0;
      sJ1[k][r] = j1;
    }
    __syncthreads();
    if (KERNEL) {
#pragma unroll
      for (int k = 0; k < kBK; ++k) {
        A a0[4], a1[4], b0[4], b1[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          a0[i] = sI0[k][ty + 16 * i];
          a1[i] = sI1[k][ty + 16 * i];
          b0[i] = sJ0[k][tx + 16 * i];
          b1[i] = sJ1[k][tx + 16 * i];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            acc0[i][j] = fma(a0[i], b0[j], acc0[i][j]);  // K00[I, J]
            acc1[i][j] = fma(a1[i], b1[j], acc1[i][j]);  // K11[I, J]
            acc2[i][j] = fma(a0[i], b1[j], acc2[i][j]);  // K01[I, J]
            acc3[i][j] = fma(a1[i], b0[j], acc3[i][j]);  // K01[J, I]^T
          }
      }
    } else {
      // fresh products per chunk (acc1 = X0 part, acc2 = X1 part), so identical inputs cancel exactly
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc1[i][j] = acc2[i][j] = A(0);
#pragma unroll
      for (int k = 0; k < kBK; ++k) {
        A a0[4], a1[4], b0[4], b1[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          a0[i] = sI0[k][ty + 16 * i];
          a1[i] = sI1[k][ty + 16 * i];
          b0[i] = sJ0[k][tx + 16 * i];
          b1[i] = sJ1[k][tx + 16 * i];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            acc1[i][j] = fma(a0[i], b0[j], acc1[i][j]);
            acc2[i][j] = fma(a1[i], b1[j], acc2[i][j]);
          }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc0[i][j] += acc1[i][j] - acc2[i][j];
    }
    __syncthreads();
  }

  if (!KERNEL && ws != nullptr) {
    A* tile = ws + ((b * npairs + pid) * static_cast<int64_t>(gridDim.z) + split) * (kT * kT);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) tile[(ty + 16 * i) * kT + tx + 16 * j] = acc0[i][j];
    return;
  }
  double s = 0.0;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (KERNEL) {
        const double a = acc0[i][j], c = acc1[i][j], d = acc2[i][j], e = acc3[i][j];
        s += (a * a + c * c) - (d * d + e * e);
      } else {
        const double a = acc0[i][j];
        s += a * a;
      }
    }
  red[tid] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (tid < w) red[tid] += red[tid + w];
    __syncthreads();
  }
  if (tid == 0) out[b * npairs + pid] = pair_weight(ti, tj) * red[0];
}

// style_distance_matrix ('kernel' method): partial[item, t] = sum over tile t of (X_n^T Y_m)^2, item = n * M + m;
// self_only: item = n, Y = X, tiles I <= J weighted. Rows = positions, contraction = channels.
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    cross_tiles(View4<T> vx, View4<T> vy, int64_t M, int64_t nt, int64_t ntiles, bool self_only, bool k_fast,
                double* __restrict__ out) {
  const int64_t idx = blockIdx.x;
  const int64_t item = idx / ntiles, t = idx % ntiles;
  int64_t ti, tj;
  if (self_only) {
    pair_to_tiles(t, nt, &ti, &tj);
  } else {
    ti = t / nt;
    tj = t % nt;
  }
  const int64_t n = self_only ? item : item / M, m = self_only ? item : item % M;
  const View4<T>& vb = self_only ? vx : vy;
  const int64_t C = vx.size[1], W = vx.size[3], P = vx.size[2] * vx.size[3];
  __shared__ A sI[kBK][kT], sJ[kBK][kT];
  __shared__ double red[kThreads];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const T* bx = vx.data + n * vx.stride[0];
  const T* by = vb.data + m * vb.stride[0];
  A acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = A(0);
  for (int64_t k0 = 0; k0 < C; k0 += kBK) {
    for (int e = tid; e < kT * kBK; e += kThreads) {
      int r, k;
      if (k_fast) {
        k = e % kBK;
        r = e / kBK;
      } else {
        r = e % kT;
        k = e / kT;
      }
      const int64_t kk = k0 + k, rI = ti * kT + r, rJ = tj * kT + r;
      A a = A(0), b = A(0);
      if (kk < C) {
        if (rI < P) a = Load<A, T>::get(bx + kk * vx.stride[1] + spatial_offset(rI, W, vx.stride[2], vx.stride[3]));
        if (rJ < P) b = Load<A, T>::get(by + kk * vb.stride[1] + spatial_offset(rJ, W, vb.stride[2], vb.stride[3]));
      }
      sI[k][r] = a;
      sJ[k][r] = b;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      A a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = sI[k][ty + 16 * i];
        b[i] = sJ[k][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  double s = 0.0;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) s += static_cast<double>(acc[i][j]) * static_cast<double>(acc[i][j]);
  red[tid] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (tid < w) red[tid] += red[tid + w];
    __syncthreads();
  }
  if (tid == 0) out[idx] = (self_only ? pair_weight(ti, tj) : 1.0) * red[0];
}

template <typename T>
cudaError_t launch_cross(const RawView4& rx, const RawView4& ry, bool self_only, double* out, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  const int64_t N = rx.size[0], M = ry.size[0], P = rx.size[2] * rx.size[3];
  const int64_t nt = (P + kT - 1) / kT, ntiles = self_only ? num_pairs(nt) : nt * nt;
  const int64_t blocks = (self_only ? N : N * M) * ntiles;
  const int64_t s_sp = rx.size[3] > 1 ? rx.stride[3] : rx.stride[2];
  const bool k_fast = (rx.stride[1] < 0 ? -rx.stride[1] : rx.stride[1]) <= (s_sp < 0 ? -s_sp : s_sp);
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  cross_tiles<T, A><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(rx.as<T>(), ry.as<T>(), M, nt, ntiles,
                                                                           self_only, k_fast, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch(const RawView4& r0, const RawView4& r1, bool kernel, double* out, int64_t kper, int64_t splits,
                   void* ws, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  const View4<T> v0 = r0.as<T>(), v1 = r1.as<T>();
  const int64_t B = r0.size[0], C = r0.size[1], P = r0.size[2] * r0.size[3];
  const int64_t R = kernel ? P : C;
  const int64_t nt = (R + kT - 1) / kT, np = num_pairs(nt);
  // contraction dimension's stride vs the row dimension's: load the fastest-varying one along threads
  const int64_t s_sp = r0.size[3] > 1 ? r0.stride[3] : r0.stride[2];
  const int64_t s_ch = r0.stride[1];
  const int64_t sk = kernel ? s_ch : s_sp, sr = kernel ? s_sp : s_ch;
  const bool k_fast = (sk < 0 ? -sk : sk) <= (sr < 0 ? -sr : sr);
  const bool split = !kernel && ws != nullptr && splits > 1;
  if (np > 0x7fffffffLL || B > 65535 || (split && (splits > 65535 || kper <= 0))) return cudaErrorInvalidConfiguration;
  dim3 grid(static_cast<unsigned>(np), static_cast<unsigned>(B), split ? static_cast<unsigned>(splits) : 1u);
  A* wsa = split ? static_cast<A*>(ws) : nullptr;
  if (kernel)
    sd_tiles<T, A, true><<<grid, kThreads, 0, stream>>>(v0, v1, nt, np, k_fast, out, 0, nullptr);
  else
    sd_tiles<T, A, false><<<grid, kThreads, 0, stream>>>(v0, v1, nt, np, k_fast, out, kper, wsa);
  return cudaGetLastError();
}

}  // namespace

int64_t cuda_num_pairs(int64_t rows) { return num_pairs((rows + kT - 1) / kT); }

std::string cuda_partials(const RawView4& x0, const RawView4& x1, bool kernel, double* out, int64_t kper,
                          int64_t splits, uintptr_t ws, uintptr_t stream) {
  cudaError_t err = cudaSuccess;
  const bool ok = dispatch_dtype(x0.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    err = launch<T>(x0, x1, kernel, out, kper, splits, reinterpret_cast<void*>(ws), reinterpret_cast<cudaStream_t>(stream));
  });
  if (!ok) return "style_distance: unknown dtype code";
  if (err != cudaSuccess) return std::string("style_distance CUDA launch failed: ") + cudaGetErrorString(err);
  return "";
}

int64_t cuda_cross_tiles(int64_t P, bool self_only) {
  const int64_t nt = (P + kT - 1) / kT;
  return self_only ? num_pairs(nt) : nt * nt;
}

std::string cuda_cross(const RawView4& x, const RawView4& y, bool self_only, double* out, uintptr_t stream) {
  cudaError_t err = cudaSuccess;
  const bool ok = dispatch_dtype(x.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    err = launch_cross<T>(x, y, self_only, out, reinterpret_cast<cudaStream_t>(stream));
  });
  if (!ok) return "style_cross_sq: unknown dtype code";
  if (err != cudaSuccess) return std::string("style_cross_sq CUDA launch failed: ") + cudaGetErrorString(err);
  return "";
}

}  // namespace style
}  // namespace percept_fast
