// meanpool_distance, CUDA kernels.
//   1. channel sums: warp per (b, c) plane when the pixels are contiguous (NCHW), else thread per (b, c)
//      (coalesced for channels-last) with the pixels split into chunks over gridDim.y; partial sums go to
//      the workspace [nchunk][B*C] (no atomics: deterministic).
//   2. finalise: block per sample; means, channel norms (lpips_inv_norm from lpips_kernel.h, shared with
//      the CPU kernel) and sum_c (m/n(m) - k/n(k))^2 / C by fixed-order block reductions.
#include <stdexcept>
#include <string>

#include "lpips_cuda.h"
#include "lpips_kernel.h"

namespace percept_fast {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kPixelsPerChunk = 256;

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads) plane_sum_warp_kernel(View4<T> v, Acc* part) {
  const int lane = threadIdx.x & 31;
  const int64_t C = v.size[1], P = v.size[2] * v.size[3];
  const int64_t plane = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5);
  if (plane >= v.size[0] * C) return;
  const int64_t b = plane / C, c = plane % C;
  const T* base = v.data + b * v.stride[0] + c * v.stride[1];
  Acc s = 0;
#pragma unroll 4
  for (int64_t p = lane; p < P; p += 32) s += Load<Acc, T>::get(base + p);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) part[plane] = s;
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads) plane_sum_thread_kernel(View4<T> v, Acc* part, int64_t chunk) {
  const int64_t C = v.size[1], W = v.size[3], P = v.size[2] * W, BC = v.size[0] * C;
  const int64_t plane = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (plane >= BC) return;
  const int64_t b = plane / C, c = plane % C;
  const T* base = v.data + b * v.stride[0] + c * v.stride[1];
  const int64_t p0 = static_cast<int64_t>(blockIdx.y) * chunk, p1 = min(P, p0 + chunk);
  Acc s = 0;
#pragma unroll 4
  for (int64_t p = p0; p < p1; ++p) s += Load<Acc, T>::get(base + (p / W) * v.stride[2] + (p % W) * v.stride[3]);
  part[static_cast<int64_t>(blockIdx.y) * BC + plane] = s;
}

template <typename Acc>
__device__ Acc block_sum(Acc v, Acc* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int k = kThreads / 2; k > 0; k >>= 1) {
    if (static_cast<int>(threadIdx.x) < k) red[threadIdx.x] += red[threadIdx.x + k];
    __syncthreads();
  }
  const Acc r = red[0];
  __syncthreads();
  return r;
}

// px / py: [nchunk][B*C] partial sums of x and y; means written back into px[b*C + c] / py[b*C + c].
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    meanpool_final_kernel(Acc* px, int64_t nx, Acc* py, int64_t ny, int64_t B, int64_t C, int64_t P, Acc eps,
                          int mode, Acc* out) {
  __shared__ Acc red[kThreads];
  const int64_t b = blockIdx.x, BC = B * C;
  Acc sxx = 0, syy = 0;
  for (int64_t c = threadIdx.x; c < C; c += kThreads) {
    Acc a = 0, k = 0;
    for (int64_t j = 0; j < nx; ++j) a += px[j * BC + b * C + c];
    for (int64_t j = 0; j < ny; ++j) k += py[j * BC + b * C + c];
    a /= static_cast<Acc>(P);
    k /= static_cast<Acc>(P);
    px[b * C + c] = a;
    py[b * C + c] = k;
    sxx += a * a;
    syy += k * k;
  }
  const Acc ix = lpips_inv_norm(block_sum(sxx, red), eps, mode);
  const Acc iy = lpips_inv_norm(block_sum(syy, red), eps, mode);
  Acc d = 0;
  for (int64_t c = threadIdx.x; c < C; c += kThreads) {
    const Acc t = px[b * C + c] * ix - py[b * C + c] * iy;
    d += t * t;
  }
  d = block_sum(d, red);
  if (threadIdx.x == 0) out[b] = d / static_cast<Acc>(C);
}

int64_t nchunks(const RawView4& v) {
  if (pixels_unit_stride(v.size, v.stride)) return 1;
  const int64_t P = v.size[2] * v.size[3];
  return (P + kPixelsPerChunk - 1) / kPixelsPerChunk;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

template <typename T, typename Acc>
void launch_sums(const View4<T>& v, Acc* part, cudaStream_t stream) {
  const int64_t BC = v.size[0] * v.size[1];
  if (pixels_unit_stride(v.size, v.stride)) {
    const int64_t per = kThreads / 32;
    plane_sum_warp_kernel<T, Acc><<<static_cast<unsigned>((BC + per - 1) / per), kThreads, 0, stream>>>(v, part);
  } else {
    const int64_t P = v.size[2] * v.size[3];
    const dim3 grid(static_cast<unsigned>((BC + kThreads - 1) / kThreads),
                    static_cast<unsigned>((P + kPixelsPerChunk - 1) / kPixelsPerChunk));
    plane_sum_thread_kernel<T, Acc><<<grid, kThreads, 0, stream>>>(v, part, kPixelsPerChunk);
  }
  check(cudaGetLastError(), "meanpool_forward (cuda) sum kernel");
}

}  // namespace

int64_t meanpool_cuda_workspace_numel(const RawView4& x, const RawView4& y) {
  const int64_t BC = x.size[0] * x.size[1];
  return BC * (nchunks(x) + nchunks(y));
}

void meanpool_cuda_forward(const RawView4& x, const RawView4& y, double eps, int mode, uintptr_t out, uintptr_t ws,
                           int64_t ws_numel, uintptr_t stream_handle) {
  const int64_t B = x.size[0], C = x.size[1], P = x.size[2] * x.size[3], BC = B * C;
  const int64_t nx = nchunks(x), ny = nchunks(y);
  if (ws_numel < BC * (nx + ny)) throw std::invalid_argument("meanpool_forward (cuda): workspace too small");
  if (nx > 65535 || ny > 65535) throw std::invalid_argument("meanpool_forward (cuda): H*W too large for strided input");
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  dispatch_dtype(x.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using Acc = typename AccOf<T>::type;
    Acc* px = reinterpret_cast<Acc*>(ws);
    Acc* py = px + BC * nx;
    launch_sums<T, Acc>(x.as<T>(), px, stream);
    launch_sums<T, Acc>(y.as<T>(), py, stream);
    meanpool_final_kernel<Acc><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
        px, nx, py, ny, B, C, P, static_cast<Acc>(eps), mode, reinterpret_cast<Acc*>(out));
    check(cudaGetLastError(), "meanpool_forward (cuda) final kernel");
  });
}

}  // namespace percept_fast
