// Plain-C++ interface between the CUDA launcher (envs_cuda.cu) and its pybind11 bindings.
#pragma once

#include <cstddef>

#include "world_step.hpp"

namespace robot_rt::envs {

// Device copies of the per-world arrays, grown on demand (owned by the bindings' stepper object).
struct CudaBuffers {
  void* base = nullptr;
  std::size_t capacity = 0;
};

// Copies the host arrays of `host` (N worlds) to the device, runs one thread per world (step_world), copies
// the results back; with `cam` (and the camera arrays of `host` set) also the camera frames and t.
// Returns a cudaError_t code (0: success).
int cuda_step(const WorldModel& m, const WorldArrays& host, long long n, CudaBuffers& buf,
              const CameraModel* cam = nullptr);
void cuda_free(CudaBuffers& buf);
int cuda_device_count();
const char* cuda_error_string(int code);

}  // namespace robot_rt::envs
