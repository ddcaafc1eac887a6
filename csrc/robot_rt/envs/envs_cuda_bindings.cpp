// pybind11 bindings of the CUDA world step (robot_rt._envs_cuda): same WorldStepper interface as the CPU
// module (robot_rt._envs), host NumPy arrays in and out; the kernel is in envs_cuda.cu.
#include <string>

#include "envs_bindings.hpp"
#include "envs_cuda.h"

namespace py = pybind11;
using robot_rt::envs::WorldArrays;
using robot_rt::envs::WorldModel;

namespace {

class WorldStepper {
 public:
  WorldStepper(const py::array& joint_type, const py::array& axis, const py::array& origin_xyz,
               const py::array& origin_rpy, const py::array& paddle_xyz, const py::array& paddle_rpy,
               const py::array& q_min, const py::array& q_max, const py::array& v_max, const py::array& a_max,
               const py::array& ws_min, const py::array& ws_max, const py::array& packed, const py::array& scalars)
      : m_(robot_rt::envs::bind::make_model(joint_type, axis, origin_xyz, origin_rpy, paddle_xyz, paddle_rpy, q_min,
                                            q_max, v_max, a_max, ws_min, ws_max, packed, scalars)) {}
  ~WorldStepper() { robot_rt::envs::cuda_free(buf_); }
  WorldStepper(const WorldStepper&) = delete;
  WorldStepper& operator=(const WorldStepper&) = delete;

  void step(const py::array& cmd, const py::array& q, const py::array& qd, const py::array& ball,
            const py::array& phase, const py::array& touched, const py::array& landed, const py::array& hits,
            const py::array& outcome, const py::array& landing, const py::array& reward, const py::array& terminated,
            const py::array& ev_hit, const py::array& ev_landed, const py::array& ev_limit, const py::array& rec_pos,
            const py::array& rec_active, int /*n_threads*/, const py::object& camera) {
    WorldArrays a{};
    const long long n = robot_rt::envs::bind::unpack_arrays(m_, a, cmd, q, qd, ball, phase, touched, landed, hits,
                                                            outcome, landing, reward, terminated, ev_hit, ev_landed,
                                                            ev_limit, rec_pos, rec_active);
    const robot_rt::envs::CameraModel* cam = nullptr;
    if (!camera.is_none()) {
      robot_rt::envs::bind::unpack_camera(cam_, a, n, camera.cast<py::tuple>());
      cam = &cam_;
    }
    int err = 0;
    {
      py::gil_scoped_release release;
      err = robot_rt::envs::cuda_step(m_, a, n, buf_, cam);
    }
    if (err != 0) throw std::runtime_error(std::string("robot_rt._envs_cuda: ") + robot_rt::envs::cuda_error_string(err));
  }

  void set_camera(const py::array& scalars) { cam_ = robot_rt::envs::bind::make_camera(scalars); }

  py::tuple paddle_poses(const py::array& q) const { return robot_rt::envs::bind::paddle_poses(m_, q); }
  int dof() const { return m_.dof; }
  int substeps() const { return m_.substeps; }

 private:
  WorldModel m_;
  robot_rt::envs::CudaBuffers buf_;
  robot_rt::envs::CameraModel cam_;
};

}  // namespace

PYBIND11_MODULE(_envs_cuda, m) {
  m.doc() = "robot_rt table-tennis worlds, CUDA backend (world_step.hpp, one thread per world)";
  robot_rt::envs::bind::bind_world_stepper<WorldStepper>(
      m, "Advances every world by one policy step (on the GPU), in place; with `camera` (the CPU module's tuple) "
         "also the camera frames of the step and t += step_s.");
  m.def("device_count", &robot_rt::envs::cuda_device_count);
}
