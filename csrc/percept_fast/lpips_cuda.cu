// lpips_distance, CUDA kernels (per-pixel maths from lpips_kernel.h, shared with the CPU kernel).
//   - pixel kernel (any strides; coalesced when pixels are contiguous, e.g. NCHW): a block covers PX
//     pixels x CG channel groups, each thread runs the five channel sums of one pixel over its channel
//     subset, the groups are combined in shared memory, d is computed, block partial sums are written.
//   - channels-last kernel (channel stride 1): one warp per pixel, lanes over channels, shuffle reduction.
//   - a final kernel sums the partials of each sample in a fixed order (deterministic) and divides by H*W.
#include <stdexcept>
#include <string>

#include "lpips_cuda.h"
#include "lpips_kernel.h"

namespace percept_fast {
namespace {

constexpr int kMaxThreads = 1024;
constexpr int kWarpsPerBlockCL = 8;

// Running sums with explicit FMAs (the file is built with --fmad=false so the final per-pixel maths is
// symmetric in x and y; x == y then gives exactly 0).
template <typename Acc, bool kW>
__device__ __forceinline__ void accumulate(Acc xv, Acc yv, Acc wc, Acc& axx, Acc& ayy, Acc& awxx, Acc& awyy, Acc& awxy) {
  axx = fma(xv, xv, axx);
  ayy = fma(yv, yv, ayy);
  if (kW) {
    const Acc wx = wc * xv, wy = wc * yv;
    awxx = fma(wx, xv, awxx);
    awyy = fma(wy, yv, awyy);
    awxy = fma(wx, yv, awxy);
  } else {
    awxy = fma(xv, yv, awxy);
  }
}

template <typename T, typename Acc, bool kW>
__global__ void __launch_bounds__(kMaxThreads)
    lpips_pixel_kernel(View4<T> x, View4<T> y, const Acc* __restrict__ wt, Acc eps, int mode, int PX, Acc* map,
                       Acc* part, int64_t nb) {
  __shared__ Acc sh[5][kMaxThreads];
  const int CG = blockDim.x / PX;
  const int tx = threadIdx.x % PX, ty = threadIdx.x / PX;
  const int64_t C = x.size[1], W = x.size[3], P = x.size[2] * W;
  const int64_t b = blockIdx.y;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * PX + tx;
  const bool valid = p < P;
  Acc axx = 0, ayy = 0, awxx = 0, awyy = 0, awxy = 0;
  if (valid) {
    const int64_t h = p / W, w = p % W;
    const T* xp = x.data + b * x.stride[0] + h * x.stride[2] + w * x.stride[3];
    const T* yp = y.data + b * y.stride[0] + h * y.stride[2] + w * y.stride[3];
    const int64_t sxc = x.stride[1], syc = y.stride[1];
#pragma unroll 4
    for (int64_t c = ty; c < C; c += CG) {
      const Acc xv = Load<Acc, T>::get(xp + c * sxc), yv = Load<Acc, T>::get(yp + c * syc);
      accumulate<Acc, kW>(xv, yv, kW ? __ldg(wt + c) : Acc(1), axx, ayy, awxx, awyy, awxy);
    }
  }
  if (!kW) {
    awxx = axx;
    awyy = ayy;
  }
  const int t = threadIdx.x;
  sh[0][t] = axx;
  sh[1][t] = ayy;
  sh[2][t] = awxx;
  sh[3][t] = awyy;
  sh[4][t] = awxy;
  __syncthreads();
  Acc d = 0;
  if (ty == 0) {
    Acc s[5];
    for (int k = 0; k < 5; ++k) {
      Acc v = 0;
      for (int g = 0; g < CG; ++g) v += sh[k][tx + g * PX];
      s[k] = v;
    }
    if (valid) {
      d = lpips_pixel(s[0], s[1], s[2], s[3], s[4], eps, mode);
      if (map) map[b * P + p] = d;
    }
  }
  __syncthreads();
  if (ty == 0) sh[0][tx] = d;
  __syncthreads();
  for (int s = PX / 2; s > 0; s >>= 1) {  // PX is a power of two
    if (t < s) sh[0][t] += sh[0][t + s];
    __syncthreads();
  }
  if (t == 0) part[b * nb + blockIdx.x] = sh[0][0];
}

template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, typename Acc, bool kW>
__global__ void __launch_bounds__(32 * kWarpsPerBlockCL)
    lpips_cl_kernel(View4<T> x, View4<T> y, const Acc* __restrict__ wt, Acc eps, int mode, Acc* map, Acc* part,
                    int64_t nb) {
  __shared__ Acc sd[kWarpsPerBlockCL];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t C = x.size[1], W = x.size[3], P = x.size[2] * W;
  const int64_t b = blockIdx.y;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlockCL + warp;
  Acc d = 0;
  if (p < P) {
    const int64_t h = p / W, w = p % W;
    const T* xp = x.data + b * x.stride[0] + h * x.stride[2] + w * x.stride[3];
    const T* yp = y.data + b * y.stride[0] + h * y.stride[2] + w * y.stride[3];
    Acc axx = 0, ayy = 0, awxx = 0, awyy = 0, awxy = 0;
#pragma unroll 4
    for (int64_t c = lane; c < C; c += 32) {
      const Acc xv = Load<Acc, T>::get(xp + c), yv = Load<Acc, T>::get(yp + c);
      accumulate<Acc, kW>(xv, yv, kW ? __ldg(wt + c) : Acc(1), axx, ayy, awxx, awyy, awxy);
    }
    axx = warp_sum(axx);
    ayy = warp_sum(ayy);
    awxy = warp_sum(awxy);
    if (kW) {
      awxx = warp_sum(awxx);
      awyy = warp_sum(awyy);
    } else {
      awxx = axx;
      awyy = ayy;
    }
    d = lpips_pixel(axx, ayy, awxx, awyy, awxy, eps, mode);
    if (lane == 0 && map) map[b * P + p] = d;
  }
  if (lane == 0) sd[warp] = d;
  __syncthreads();
  if (threadIdx.x == 0) {
    Acc s = 0;
    for (int i = 0; i < kWarpsPerBlockCL; ++i) s += sd[i];
    part[b * nb + blockIdx.x] = s;
  }
}

template <typename Acc>
__global__ void lpips_final_kernel(const Acc* __restrict__ part, int64_t nb, int64_t P, Acc* out) {
  __shared__ Acc red[256];
  const int64_t b = blockIdx.x;
  Acc s = 0;
  for (int64_t j = threadIdx.x; j < nb; j += blockDim.x) s += part[b * nb + j];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int k = 128; k > 0; k >>= 1) {
    if (static_cast<int>(threadIdx.x) < k) red[threadIdx.x] += red[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[b] = red[0] / static_cast<Acc>(P);
}

struct Plan {
  bool channels_last;
  int px;       // pixels per block (pixel kernel)
  int threads;  // threads per block
  int64_t nb;   // blocks per sample
};

int sm_count() {
  static int n = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return 100;
    return v;
  }();
  return n;
}

Plan make_plan(const RawView4& x, const RawView4& y) {
  Plan pl{};
  const int64_t B = x.size[0], C = x.size[1], P = x.size[2] * x.size[3];
  pl.channels_last = C > 1 && x.stride[1] == 1 && y.stride[1] == 1 && !pixels_unit_stride(x.size, x.stride);
  if (pl.channels_last) {
    pl.threads = 32 * kWarpsPerBlockCL;
    pl.px = kWarpsPerBlockCL;
    pl.nb = (P + kWarpsPerBlockCL - 1) / kWarpsPerBlockCL;
    return pl;
  }
  int px = 32;
  while (px < 256 && px < P) px <<= 1;
  int threads = std::max(256, px);
  // few blocks (small H*W, large C): more channel groups per block for memory-level parallelism
  if (B * ((P + px - 1) / px) < 2 * sm_count()) threads = kMaxThreads;
  pl.px = px;
  pl.threads = threads;
  pl.nb = (P + px - 1) / px;
  return pl;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// ---------------------------------------------------------------------------------------------- backward
// Per pixel: pass 1 forms the forward's five channel sums (plus `poison`, NaN where an input is NaN/Inf), then
// lpips_pixel_grad (lpips_kernel.h, shared with the CPU kernel) gives five coefficients and pass 2 writes
// dd/dx_c and dd/dy_c (lpips_channel_grad). Nothing of the forward is kept: the inputs are read twice (the second
// read mostly from L2), the gradients written once.
constexpr int kMaxThreadsBwd = 512;

template <typename Acc>
__device__ __forceinline__ void accumulate_bwd(Acc xv, Acc yv, Acc wc, bool weighted, Acc* a) {
  a[0] = fma(xv, xv, a[0]);
  a[1] = fma(yv, yv, a[1]);
  if (weighted) {
    const Acc wx = wc * xv, wy = wc * yv;
    a[2] = fma(wx, xv, a[2]);
    a[3] = fma(wy, yv, a[3]);
    a[4] = fma(wx, yv, a[4]);
  } else {
    a[4] = fma(xv, yv, a[4]);
  }
  a[5] += xv * Acc(0) + yv * Acc(0);  // 0, or NaN for a NaN/Inf input
}

template <typename T, typename Acc, bool kW>
__global__ void __launch_bounds__(kMaxThreadsBwd)
    lpips_bwd_pixel_kernel(View4<T> x, View4<T> y, const Acc* __restrict__ wt, LpipsGradIn<Acc> gin, Acc eps,
                           int mode, int PX, OutView4<T> gx, OutView4<T> gy) {
  __shared__ Acc sh[6][kMaxThreadsBwd];
  const int CG = blockDim.x / PX;
  const int tx = threadIdx.x % PX, ty = threadIdx.x / PX;
  const int64_t C = x.size[1], W = x.size[3], P = x.size[2] * W;
  const int64_t b = blockIdx.y;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * PX + tx;
  const bool valid = p < P;
  const int64_t h = valid ? p / W : 0, w = valid ? p % W : 0;
  const T* xp = x.data + b * x.stride[0] + h * x.stride[2] + w * x.stride[3];
  const T* yp = y.data + b * y.stride[0] + h * y.stride[2] + w * y.stride[3];
  const int64_t sxc = x.stride[1], syc = y.stride[1];
  Acc a[6] = {0, 0, 0, 0, 0, 0};
  if (valid) {
#pragma unroll 4
    for (int64_t c = ty; c < C; c += CG)
      accumulate_bwd<Acc>(Load<Acc, T>::get(xp + c * sxc), Load<Acc, T>::get(yp + c * syc), kW ? __ldg(wt + c) : Acc(1),
                          kW, a);
  }
  const int t = threadIdx.x;
  for (int k = 0; k < 6; ++k) sh[k][t] = a[k];
  __syncthreads();
  LpipsGrad<Acc> r{};
  if (ty == 0) {
    Acc s[6];
    for (int k = 0; k < 6; ++k) {
      Acc v = 0;
      for (int g = 0; g < CG; ++g) v += sh[k][tx + g * PX];
      s[k] = v;
    }
    if (!kW) {
      s[2] = s[0];
      s[3] = s[1];
    }
    const Acc g = valid ? gin.at(b, h, w) : Acc(0);
    r = lpips_pixel_grad(s[0], s[1], s[2], s[3], s[4], g, eps, mode, s[5]);
  }
  __syncthreads();  // the sums are read: their rows now carry the coefficients to the other channel groups
  if (ty == 0) {
    sh[0][tx] = r.axx;
    sh[1][tx] = r.axy;
    sh[2][tx] = r.ayy;
    sh[3][tx] = r.kx;
    sh[4][tx] = r.ky;
  }
  __syncthreads();
  if (!valid) return;
  r.axx = sh[0][tx];
  r.axy = sh[1][tx];
  r.ayy = sh[2][tx];
  r.kx = sh[3][tx];
  r.ky = sh[4][tx];
  T* gxp = gx.data ? gx.ptr(b, 0, h, w) : nullptr;
  T* gyp = gy.data ? gy.ptr(b, 0, h, w) : nullptr;
#pragma unroll 4
  for (int64_t c = ty; c < C; c += CG) {
    const Acc xv = Load<Acc, T>::get(xp + c * sxc), yv = Load<Acc, T>::get(yp + c * syc);
    Acc gxv, gyv;
    lpips_channel_grad(r, xv, yv, kW ? __ldg(wt + c) : Acc(1), gxv, gyv);
    if (gxp) Store<T, Acc>::put(gxp + c * gx.stride[1], gxv);
    if (gyp) Store<T, Acc>::put(gyp + c * gy.stride[1], gyv);
  }
}

template <typename T, typename Acc, bool kW>
__global__ void __launch_bounds__(32 * kWarpsPerBlockCL)
    lpips_bwd_cl_kernel(View4<T> x, View4<T> y, const Acc* __restrict__ wt, LpipsGradIn<Acc> gin, Acc eps, int mode,
                        OutView4<T> gx, OutView4<T> gy) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t C = x.size[1], W = x.size[3], P = x.size[2] * W;
  const int64_t b = blockIdx.y;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlockCL + warp;
  if (p >= P) return;  // whole warps leave together: the shuffles below see full warps
  const int64_t h = p / W, w = p % W;
  const T* xp = x.data + b * x.stride[0] + h * x.stride[2] + w * x.stride[3];
  const T* yp = y.data + b * y.stride[0] + h * y.stride[2] + w * y.stride[3];
  Acc a[6] = {0, 0, 0, 0, 0, 0};
#pragma unroll 4
  for (int64_t c = lane; c < C; c += 32)
    accumulate_bwd<Acc>(Load<Acc, T>::get(xp + c), Load<Acc, T>::get(yp + c), kW ? __ldg(wt + c) : Acc(1), kW, a);
  for (int k = 0; k < 6; ++k) a[k] = warp_sum(a[k]);
  if (!kW) {
    a[2] = a[0];
    a[3] = a[1];
  }
  const LpipsGrad<Acc> r = lpips_pixel_grad(a[0], a[1], a[2], a[3], a[4], gin.at(b, h, w), eps, mode, a[5]);
  T* gxp = gx.data ? gx.ptr(b, 0, h, w) : nullptr;
  T* gyp = gy.data ? gy.ptr(b, 0, h, w) : nullptr;
#pragma unroll 4
  for (int64_t c = lane; c < C; c += 32) {
    const Acc xv = Load<Acc, T>::get(xp + c), yv = Load<Acc, T>::get(yp + c);
    Acc gxv, gyv;
    lpips_channel_grad(r, xv, yv, kW ? __ldg(wt + c) : Acc(1), gxv, gyv);
    if (gxp) Store<T, Acc>::put(gxp + c * gx.stride[1], gxv);
    if (gyp) Store<T, Acc>::put(gyp + c * gy.stride[1], gyv);
  }
}

}  // namespace

int64_t lpips_cuda_workspace_numel(const RawView4& x, const RawView4& y) {
  const Plan pl = make_plan(x, y);
  return x.size[0] * pl.nb;
}

void lpips_cuda_forward(const RawView4& x, const RawView4& y, uintptr_t weight, double eps, int mode, uintptr_t out,
                        uintptr_t map, uintptr_t ws, int64_t ws_numel, uintptr_t stream_handle) {
  const Plan pl = make_plan(x, y);
  const int64_t B = x.size[0], P = x.size[2] * x.size[3];
  if (ws_numel < B * pl.nb) throw std::invalid_argument("lpips_forward (cuda): workspace too small");
  if (B > 65535) throw std::invalid_argument("lpips_forward (cuda): batch must be <= 65535");
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  dispatch_dtype(x.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using Acc = typename AccOf<T>::type;
    const auto xv = x.as<T>(), yv = y.as<T>();
    const Acc* w = reinterpret_cast<const Acc*>(weight);
    Acc* o = reinterpret_cast<Acc*>(out);
    Acc* m = reinterpret_cast<Acc*>(map);
    Acc* part = reinterpret_cast<Acc*>(ws);
    const Acc e = static_cast<Acc>(eps);
    const dim3 grid(static_cast<unsigned>(pl.nb), static_cast<unsigned>(B));
    if (pl.channels_last) {
      if (w)
        lpips_cl_kernel<T, Acc, true><<<grid, pl.threads, 0, stream>>>(xv, yv, w, e, mode, m, part, pl.nb);
      else
        lpips_cl_kernel<T, Acc, false><<<grid, pl.threads, 0, stream>>>(xv, yv, w, e, mode, m, part, pl.nb);
    } else {
      if (w)
        lpips_pixel_kernel<T, Acc, true><<<grid, pl.threads, 0, stream>>>(xv, yv, w, e, mode, pl.px, m, part, pl.nb);
      else
        lpips_pixel_kernel<T, Acc, false><<<grid, pl.threads, 0, stream>>>(xv, yv, w, e, mode, pl.px, m, part, pl.nb);
    }
    check(cudaGetLastError(), "lpips_forward (cuda) main kernel");
    lpips_final_kernel<Acc><<<static_cast<unsigned>(B), 256, 0, stream>>>(part, pl.nb, P, o);
    check(cudaGetLastError(), "lpips_forward (cuda) final kernel");
  });
}

void lpips_cuda_backward(const RawView4& x, const RawView4& y, uintptr_t weight, const RawView4& grad, bool spatial,
                         double eps, int mode, const RawView4& gx, const RawView4& gy, uintptr_t stream_handle) {
  const int64_t B = x.size[0], C = x.size[1], P = x.size[2] * x.size[3];
  if (B > 65535) throw std::invalid_argument("lpips_backward (cuda): batch must be <= 65535");
  const bool cl = C > 1 && x.stride[1] == 1 && y.stride[1] == 1 && !pixels_unit_stride(x.size, x.stride) &&
                  (gx.data == 0 || gx.stride[1] == 1) && (gy.data == 0 || gy.stride[1] == 1);
  int px = 32;
  while (px < 128 && px < P) px <<= 1;
  int threads = std::max(256, px);
  if (!cl && B * ((P + px - 1) / px) < 2 * sm_count()) threads = kMaxThreadsBwd;  // few blocks: more channel groups
  const int64_t nb = cl ? (P + kWarpsPerBlockCL - 1) / kWarpsPerBlockCL : (P + px - 1) / px;
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  dispatch_dtype(x.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using Acc = typename AccOf<T>::type;
    const auto xv = x.as<T>(), yv = y.as<T>();
    const Acc* w = reinterpret_cast<const Acc*>(weight);
    LpipsGradIn<Acc> gin;
    gin.data = reinterpret_cast<const Acc*>(grad.data);
    OutView4<T> ox, oy;
    ox.data = reinterpret_cast<T*>(gx.data);
    oy.data = reinterpret_cast<T*>(gy.data);
    for (int i = 0; i < 4; ++i) {
      gin.stride[i] = grad.stride[i];
      ox.stride[i] = gx.stride[i];
      oy.stride[i] = gy.stride[i];
    }
    gin.spatial = spatial;
    gin.inv_p = Acc(1) / static_cast<Acc>(P);
    const Acc e = static_cast<Acc>(eps);
    const dim3 grid(static_cast<unsigned>(nb), static_cast<unsigned>(B));
    if (cl) {
      if (w)
        lpips_bwd_cl_kernel<T, Acc, true><<<grid, 32 * kWarpsPerBlockCL, 0, stream>>>(xv, yv, w, gin, e, mode, ox, oy);
      else
        lpips_bwd_cl_kernel<T, Acc, false><<<grid, 32 * kWarpsPerBlockCL, 0, stream>>>(xv, yv, w, gin, e, mode, ox, oy);
    } else {
      if (w)
        lpips_bwd_pixel_kernel<T, Acc, true><<<grid, threads, 0, stream>>>(xv, yv, w, gin, e, mode, px, ox, oy);
      else
        lpips_bwd_pixel_kernel<T, Acc, false><<<grid, threads, 0, stream>>>(xv, yv, w, gin, e, mode, px, ox, oy);
    }
    check(cudaGetLastError(), "lpips_backward (cuda)");
  });
}

}  // namespace percept_fast
