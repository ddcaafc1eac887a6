// Plain-C++ interface between the CUDA launcher (ballistics_cuda.cu) and its pybind11 bindings.
#pragma once

#include <cstdint>

namespace robot_rt {
namespace ballistics {

struct CudaBatchArgs {
  const void* states;  // [N, 9] contiguous, float32 or float64 (device)
  bool is_double;
  long long n_balls;
  long long n_steps;
  double dt_s;
  double h_last_s;
  const double* packed;  // host, 16 derived constants
  double plane_x;
  int stop_kind;
  int record_every;
  long long n_samples;
  int max_events;
  void* final_state;  // [N, 9]
  int* count;         // [N]
  void* samples;      // [N, S, 9] or null
  void* ev_t;         // [N, K]
  int* ev_kind;       // [N, K]
  void* ev_state;     // [N, K, 9]
  void* t_stop;       // [N] (stop_kind != 0)
  void* stop_state;   // [N, 9]
  std::uintptr_t stream;
};

int launch_fly_batch(const CudaBatchArgs& a);  // returns a cudaError_t code (0: success)
const char* cuda_error_string(int code);

}  // namespace ballistics
}  // namespace robot_rt
