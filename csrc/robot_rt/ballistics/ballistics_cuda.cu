// CUDA backend of the ball-flight physics: one thread per ball running fly_batch_item from ball_physics.hpp
// (the same PR_HD maths as the CPU backend). Launched by ballistics_cuda_bindings.cpp on the caller's stream.
#include <cuda_runtime.h>

#include <cstdint>

#include "ball_physics.hpp"
#include "ballistics_cuda.h"

namespace robot_rt {
namespace ballistics {

template <class T>
__global__ void fly_kernel(const T* in, long long nb, long long n_steps, T dt, T h_last, Params<T> p, T plane_x,
                           int stop_kind, int record_every, long long n_samples, int max_events, T* final_state,
                           int* count, T* samples, T* ev_t, int* ev_kind, T* ev_state, T* t_stop, T* stop_state) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= nb) return;
  fly_batch_item<T>(i, in, n_steps, dt, h_last, p, plane_x, stop_kind, record_every, n_samples, max_events,
                    final_state, count, samples, ev_t, ev_kind, ev_state, t_stop, stop_state);
}

template <class T>
static int launch_t(const CudaBatchArgs& a) {
  const Params<T> p = params_from<T>(a.packed);
  const int threads = 128;
  const long long blocks = (a.n_balls + threads - 1) / threads;
  if (a.n_balls == 0) return 0;
  auto stream = reinterpret_cast<cudaStream_t>(a.stream);
  fly_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      static_cast<const T*>(a.states), a.n_balls, a.n_steps, T(a.dt_s), T(a.h_last_s), p, T(a.plane_x), a.stop_kind,
      a.record_every, a.n_samples, a.max_events, static_cast<T*>(a.final_state), a.count, static_cast<T*>(a.samples),
      static_cast<T*>(a.ev_t), a.ev_kind, static_cast<T*>(a.ev_state), static_cast<T*>(a.t_stop),
      static_cast<T*>(a.stop_state));
  return static_cast<int>(cudaGetLastError());
}

int launch_fly_batch(const CudaBatchArgs& a) { return a.is_double ? launch_t<double>(a) : launch_t<float>(a); }

const char* cuda_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace ballistics
}  // namespace robot_rt
