// Host launchers of the lpips / meanpool CUDA kernels (defined in lpips_cuda.cu / meanpool_cuda.cu,
// bound in lpips_cuda.cpp / meanpool_cuda.cpp). Pointers are device pointers; stream is a cudaStream_t.
#pragma once

#include <cstdint>

#include "common.h"

namespace percept_fast {

int64_t lpips_cuda_workspace_numel(const RawView4& x, const RawView4& y);
void lpips_cuda_forward(const RawView4& x, const RawView4& y, uintptr_t weight, double eps, int mode, uintptr_t out,
                        uintptr_t map, uintptr_t ws, int64_t ws_numel, uintptr_t stream);

// grad: [B, 1, H, W] (spatial) or [B, 1, 1, 1] accumulation dtype, any strides; gx / gy: data 0 when not wanted.
void lpips_cuda_backward(const RawView4& x, const RawView4& y, uintptr_t weight, const RawView4& grad, bool spatial,
                         double eps, int mode, const RawView4& gx, const RawView4& gy, uintptr_t stream);

int64_t meanpool_cuda_workspace_numel(const RawView4& x, const RawView4& y);
void meanpool_cuda_forward(const RawView4& x, const RawView4& y, double eps, int mode, uintptr_t out, uintptr_t ws,
                           int64_t ws_numel, uintptr_t stream);

}  // namespace percept_fast
