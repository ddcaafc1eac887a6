// pybind11 bindings of the CUDA backend: device pointers arrive as integers (torch data_ptr()), outputs are
// allocated by the Python side (robot_rt/ballistics/backend_cuda.py). No libtorch, no CUDA headers here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "ball_physics.hpp"
#include "ballistics_cuda.h"

namespace py = pybind11;
using namespace robot_rt::ballistics;

PYBIND11_MODULE(_ballistics_cuda, m) {
  m.doc() = "robot_rt ball-flight physics, CUDA backend (ball_physics.hpp, one thread per ball)";
  m.def(
      "fly_batch",
      [](std::uintptr_t states, bool is_double, long long n_balls, double horizon_s, double dt_s,
         const py::array_t<double, py::array::c_style>& packed, double plane_x, int stop_kind, int record_every,
         long long n_samples, int max_events, std::uintptr_t final_state, std::uintptr_t count, std::uintptr_t samples,
         std::uintptr_t ev_t, std::uintptr_t ev_kind, std::uintptr_t ev_state, std::uintptr_t t_stop,
         std::uintptr_t stop_state, std::uintptr_t stream) {
        if (packed.ndim() != 1 || packed.shape(0) != kNumParams) throw py::value_error("packed params must have 16 entries");
        CudaBatchArgs a{};
        a.states = reinterpret_cast<const void*>(states);
        a.is_double = is_double;
        a.n_balls = n_balls;
        a.n_steps = n_steps_for(horizon_s, dt_s);
        a.dt_s = dt_s;
        a.h_last_s = horizon_s - double(a.n_steps - 1) * dt_s;
        a.packed = packed.data();
        a.plane_x = plane_x;
        a.stop_kind = stop_kind;
        a.record_every = record_every;
        a.n_samples = n_samples;
        a.max_events = max_events;
        a.final_state = reinterpret_cast<void*>(final_state);
        a.count = reinterpret_cast<int*>(count);
        a.samples = reinterpret_cast<void*>(samples);
        a.ev_t = reinterpret_cast<void*>(ev_t);
        a.ev_kind = reinterpret_cast<int*>(ev_kind);
        a.ev_state = reinterpret_cast<void*>(ev_state);
        a.t_stop = reinterpret_cast<void*>(t_stop);
        a.stop_state = reinterpret_cast<void*>(stop_state);
        a.stream = stream;
        int err;
        {
          py::gil_scoped_release nogil;
          err = launch_fly_batch(a);
        }
        if (err != 0) throw std::runtime_error(std::string("ballistics CUDA launch failed: ") + cuda_error_string(err));
      },
      py::arg("states"), py::arg("is_double"), py::arg("n_balls"), py::arg("horizon_s"), py::arg("dt_s"),
      py::arg("packed"), py::arg("plane_x"), py::arg("stop_kind"), py::arg("record_every"), py::arg("n_samples"),
      py::arg("max_events"), py::arg("final_state"), py::arg("count"), py::arg("samples"), py::arg("ev_t"),
      py::arg("ev_kind"), py::arg("ev_state"), py::arg("t_stop"), py::arg("stop_state"), py::arg("stream"));
}
