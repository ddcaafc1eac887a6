// CUDA backend of the batched table-tennis world step: one thread per world running step_world from
// world_step.hpp (the same PR_HD maths as the CPU backend). Host arrays are copied in and out around the
// kernel (synchronous, default stream). With the camera model the kernel also takes the camera frames
// (camera_world, same counter-based uniforms as the CPU and NumPy paths); human answers and new balls stay in
// NumPy on the host.
#include <cuda_runtime.h>

#include <cstdint>

#include "envs_cuda.h"

namespace robot_rt::envs {

__global__ void step_kernel(WorldModel m, WorldArrays a, long long n, CameraModel cam, bool with_camera) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  step_world(m, a, i, with_camera ? &cam : nullptr);
}

namespace {

struct Region {
  void* host;
  std::size_t bytes;
  bool in, out;
};

std::size_t align_up(std::size_t x) { return (x + 255) & ~static_cast<std::size_t>(255); }

}  // namespace

int cuda_step(const WorldModel& m, const WorldArrays& h, long long n, CudaBuffers& buf, const CameraModel* cam) {
  if (n <= 0) return 0;
  const std::size_t N = static_cast<std::size_t>(n), dof = static_cast<std::size_t>(m.dof);
  const std::size_t S = static_cast<std::size_t>(m.substeps);
  const bool with_camera = cam != nullptr && h.t != nullptr;
  const std::size_t R = with_camera ? static_cast<std::size_t>(cam->ring) : 0, C = with_camera ? 1 : 0;
  Region r[] = {
      {const_cast<double*>(h.cmd), N * dof * 8, true, false},
      {h.q, N * dof * 8, true, true},
      {h.qd, N * dof * 8, true, true},
      {h.ball, N * 9 * 8, true, true},
      {h.phase, N * 8, true, true},
      {h.touched, N, true, true},
      {h.landed, N, true, true},
      {h.hits, N * 8, true, true},
      {h.outcome, N * 8, true, true},
      {h.landing, N * 2 * 8, true, true},
      {h.reward, N * 8, false, true},
      {h.terminated, N, false, true},
      {h.ev_hit, N, false, true},
      {h.ev_landed, N, false, true},
      {h.ev_limit, N, false, true},
      {h.rec_pos, N * S * 3 * 8, false, true},
      {h.rec_active, N * S, false, true},
      // camera (empty regions without it)
      {h.t, C * N * 8, true, true},
      {const_cast<double*>(h.cam_phase), C * N * 8, true, false},
      {h.cam_count, C * N * 8, true, true},
      {const_cast<uint64_t*>(h.cam_key), C * N * 8, true, false},
      {h.cam_counter, C * N * 8, true, true},
      {h.cam_t, N * R * 8, true, true},
      {h.cam_arrival, N * R * 8, true, true},
      {h.cam_pos, N * R * 3 * 8, true, true},
      {h.cam_head, C * N * 8, true, true},
  };
  constexpr int kRegions = sizeof(r) / sizeof(r[0]);
  std::size_t total = 0;
  for (const auto& x : r) total += align_up(x.bytes);
  cudaError_t err = cudaSuccess;
  if (total > buf.capacity) {
    if (buf.base) cudaFree(buf.base);
    buf.base = nullptr;
    buf.capacity = 0;
    err = cudaMalloc(&buf.base, total);
    if (err != cudaSuccess) return static_cast<int>(err);
    buf.capacity = total;
  }
  void* dev[kRegions];
  std::size_t off = 0;
  for (int k = 0; k < kRegions; ++k) {
    dev[k] = static_cast<char*>(buf.base) + off;
    off += align_up(r[k].bytes);
    if (r[k].in && r[k].bytes) {
      err = cudaMemcpy(dev[k], r[k].host, r[k].bytes, cudaMemcpyHostToDevice);
      if (err != cudaSuccess) return static_cast<int>(err);
    }
  }
  WorldArrays d{};
  d.cmd = static_cast<const double*>(dev[0]);
  d.q = static_cast<double*>(dev[1]);
  d.qd = static_cast<double*>(dev[2]);
  d.ball = static_cast<double*>(dev[3]);
  d.phase = static_cast<int64_t*>(dev[4]);
  d.touched = static_cast<uint8_t*>(dev[5]);
  d.landed = static_cast<uint8_t*>(dev[6]);
  d.hits = static_cast<int64_t*>(dev[7]);
  d.outcome = static_cast<int64_t*>(dev[8]);
  d.landing = static_cast<double*>(dev[9]);
  d.reward = static_cast<double*>(dev[10]);
  d.terminated = static_cast<uint8_t*>(dev[11]);
  d.ev_hit = static_cast<uint8_t*>(dev[12]);
  d.ev_landed = static_cast<uint8_t*>(dev[13]);
  d.ev_limit = static_cast<uint8_t*>(dev[14]);
  d.rec_pos = static_cast<double*>(dev[15]);
  d.rec_active = static_cast<uint8_t*>(dev[16]);
  d.t = with_camera ? static_cast<double*>(dev[17]) : nullptr;
  d.cam_phase = static_cast<const double*>(dev[18]);
  d.cam_count = static_cast<int64_t*>(dev[19]);
  d.cam_key = static_cast<const uint64_t*>(dev[20]);
  d.cam_counter = static_cast<uint64_t*>(dev[21]);
  d.cam_t = static_cast<double*>(dev[22]);
  d.cam_arrival = static_cast<double*>(dev[23]);
  d.cam_pos = static_cast<double*>(dev[24]);
  d.cam_head = static_cast<int64_t*>(dev[25]);
  const int threads = 64;
  const long long blocks = (n + threads - 1) / threads;
  step_kernel<<<static_cast<unsigned>(blocks), threads>>>(m, d, n, with_camera ? *cam : CameraModel{}, with_camera);
  err = cudaGetLastError();
  if (err != cudaSuccess) return static_cast<int>(err);
  for (int k = 0; k < kRegions; ++k) {
    if (r[k].out && r[k].bytes) {
      err = cudaMemcpy(r[k].host, dev[k], r[k].bytes, cudaMemcpyDeviceToHost);
      if (err != cudaSuccess) return static_cast<int>(err);
    }
  }
  return 0;
}

void cuda_free(CudaBuffers& buf) {
  if (buf.base) cudaFree(buf.base);
  buf.base = nullptr;
  buf.capacity = 0;
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

const char* cuda_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace robot_rt::envs
