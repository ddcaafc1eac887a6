// pybind11 helpers shared by the CPU (envs_cpu.cpp) and CUDA (envs_cuda_bindings.cpp) bindings of the world
// step: argument checks (dtype, C-contiguity, writability, shape) and unpacking into WorldModel / WorldArrays.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <type_traits>

#include "world_step.hpp"

namespace robot_rt::envs::bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

// Checks dtype (uint8_t stands for bool), C-contiguity, writability and shape (-1: any); returns the data.
template <class T>
T* arr(const py::array& a, const char* name, std::initializer_list<py::ssize_t> shape, bool writable = true) {
  const auto want = std::is_same<T, uint8_t>::value ? py::dtype::of<bool>() : py::dtype::of<T>();
  if (!a.dtype().is(want))
    throw py::type_error(std::string(name) + ": expected dtype " + std::string(py::str(want)) + ", got " +
                         std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": expected a writable array");
  if (a.ndim() != static_cast<py::ssize_t>(shape.size()))
    throw py::value_error(std::string(name) + ": expected " + std::to_string(shape.size()) + " dimensions, got shape " +
                          shape_str(a));
  int d = 0;
  for (auto s : shape) {
    if (s >= 0 && a.shape(d) != s)
      throw py::value_error(std::string(name) + ": unexpected shape " + shape_str(a) + " (dimension " +
                            std::to_string(d) + " must be " + std::to_string(s) + ")");
    ++d;
  }
  return static_cast<T*>(const_cast<void*>(a.data()));
}

inline WorldModel make_model(const py::array& joint_type, const py::array& axis, const py::array& origin_xyz,
                             const py::array& origin_rpy, const py::array& paddle_xyz, const py::array& paddle_rpy,
                             const py::array& q_min, const py::array& q_max, const py::array& v_max,
                             const py::array& a_max, const py::array& ws_min, const py::array& ws_max,
                             const py::array& packed, const py::array& scalars) {
  WorldModel m;
  const py::ssize_t dof = joint_type.ndim() == 1 ? joint_type.shape(0) : -1;
  if (dof < 1 || dof > robot_rt::robot::kMaxChainJoints)
    throw py::value_error("joint_type: expected [dof] with 1 <= dof <= 16, got shape " + shape_str(joint_type));
  const auto* jt = arr<int32_t>(joint_type, "joint_type", {dof}, false);
  const auto* ax = arr<double>(axis, "axis", {dof, 3}, false);
  const auto* oxyz = arr<double>(origin_xyz, "origin_xyz_m", {dof, 3}, false);
  const auto* orpy = arr<double>(origin_rpy, "origin_rpy_rad", {dof, 3}, false);
  for (int j = 0; j < dof; ++j) {
    if (!m.chain.set_joint(j, jt[j], ax + 3 * j, oxyz + 3 * j, orpy + 3 * j))
      throw py::value_error("axis[" + std::to_string(j) + "]: expected a unit vector");
  }
  m.chain.set_paddle(arr<double>(paddle_xyz, "paddle_xyz_m", {3}, false),
                     arr<double>(paddle_rpy, "paddle_rpy_rad", {3}, false));
  m.dof = static_cast<int>(dof);
  m.shape = analyse_chain(m.chain);
  const double* lo = arr<double>(q_min, "q_min", {dof}, false);
  const double* hi = arr<double>(q_max, "q_max", {dof}, false);
  const double* vm = arr<double>(v_max, "v_max", {dof}, false);
  const double* am = arr<double>(a_max, "a_max", {dof}, false);
  for (int j = 0; j < dof; ++j) {
    if (!(lo[j] < hi[j])) throw py::value_error("q_min must be below q_max");
    if (!(vm[j] > 0) || !(am[j] > 0)) throw py::value_error("v_max and a_max must be > 0");
    m.q_min[j] = lo[j];
    m.q_max[j] = hi[j];
    m.v_max[j] = vm[j];
    m.a_max[j] = am[j];
  }
  const double* wmin = arr<double>(ws_min, "workspace_min_m", {3}, false);
  const double* wmax = arr<double>(ws_max, "workspace_max_m", {3}, false);
  for (int k = 0; k < 3; ++k) {
    m.ws_min_m[k] = wmin[k];
    m.ws_max_m[k] = wmax[k];
  }
  m.ball = robot_rt::ballistics::params_from<double>(
      arr<double>(packed, "packed", {robot_rt::ballistics::kNumParams}, false));
  set_scalars(m, arr<double>(scalars, "scalars", {kNumWorldScalars}, false));
  if (!(m.dt_s > 0) || m.substeps < 1 || m.substeps > kMaxSubsteps)
    throw py::value_error("scalars: expected dt_s > 0 and 1 <= substeps <= 1000");
  return m;
}

// Checks every per-world array against N (from q) and the model; returns N.
inline long long unpack_arrays(const WorldModel& m, WorldArrays& a, const py::array& cmd, const py::array& q,
                               const py::array& qd, const py::array& ball, const py::array& phase,
                               const py::array& touched, const py::array& landed, const py::array& hits,
                               const py::array& outcome, const py::array& landing, const py::array& reward,
                               const py::array& terminated, const py::array& ev_hit, const py::array& ev_landed,
                               const py::array& ev_limit, const py::array& rec_pos, const py::array& rec_active) {
  const py::ssize_t n = q.ndim() == 2 ? q.shape(0) : -1;
  if (n < 1) throw py::value_error("q: expected [N, dof] with N >= 1, got shape " + shape_str(q));
  const py::ssize_t dof = m.dof, s = m.substeps;
  a.cmd = arr<double>(cmd, "cmd", {n, dof}, false);
  a.q = arr<double>(q, "q", {n, dof});
  a.qd = arr<double>(qd, "qd", {n, dof});
  a.ball = arr<double>(ball, "ball", {n, 9});
  a.phase = arr<int64_t>(phase, "phase", {n});
  a.touched = arr<uint8_t>(touched, "touched", {n});
  a.landed = arr<uint8_t>(landed, "landed", {n});
  a.hits = arr<int64_t>(hits, "hits", {n});
  a.outcome = arr<int64_t>(outcome, "outcome", {n});
  a.landing = arr<double>(landing, "landing", {n, 2});
  a.reward = arr<double>(reward, "reward", {n});
  a.terminated = arr<uint8_t>(terminated, "terminated", {n});
  a.ev_hit = arr<uint8_t>(ev_hit, "ev_hit", {n});
  a.ev_landed = arr<uint8_t>(ev_landed, "ev_landed", {n});
  a.ev_limit = arr<uint8_t>(ev_limit, "ev_limit", {n});
  a.rec_pos = arr<double>(rec_pos, "rec_pos", {n, s, 3});
  a.rec_active = arr<uint8_t>(rec_active, "rec_active", {n, s});
  return n;
}

// Camera arrays of the step (a tuple in the order of core.TableTennisWorld._camera_arrays): checked against N
// and the ring of `c`, stored into `a`.
inline void unpack_camera(const CameraModel& c, WorldArrays& a, long long n, const py::tuple& cam) {
  if (c.ring < 1 || c.frames_per_step < 1 || !(c.camera_hz > 0))
    throw py::value_error("camera: set_camera(scalars) must be called before stepping with the camera");
  if (cam.size() != 9) throw py::value_error("camera: expected a tuple of 9 arrays, got " + std::to_string(cam.size()));
  const py::ssize_t N = n, R = c.ring;
  a.t = arr<double>(cam[0], "t", {N});
  a.cam_phase = arr<double>(cam[1], "cam_phase", {N}, false);
  a.cam_count = arr<int64_t>(cam[2], "cam_count", {N});
  a.cam_key = arr<uint64_t>(cam[3], "cam_key", {N}, false);
  a.cam_counter = arr<uint64_t>(cam[4], "cam_counter", {N});
  a.cam_t = arr<double>(cam[5], "cam_t", {N, R});
  a.cam_arrival = arr<double>(cam[6], "cam_arrival", {N, R});
  a.cam_pos = arr<double>(cam[7], "cam_pos", {N, R, 3});
  a.cam_head = arr<int64_t>(cam[8], "cam_head", {N});
}

inline CameraModel make_camera(const py::array& scalars) {
  CameraModel c;
  set_camera_scalars(c, arr<double>(scalars, "scalars", {kNumCameraScalars}, false));
  if (!(c.camera_hz > 0) || c.frames_per_step < 1 || c.ring < 1 || !(c.step_s > 0))
    throw py::value_error("scalars: expected camera_hz > 0, step_s > 0, frames_per_step >= 1 and ring >= 1");
  return c;
}

// Observation arrays (observe_world); N from q, history from out.
inline long long unpack_obs(ObsArrays& o, const py::array& q, const py::array& qd, const py::array& t,
                            const py::array& cam_t, const py::array& cam_arrival, const py::array& cam_pos,
                            const py::array& cam_head, const py::array& low, const py::array& high,
                            const py::array& out) {
  const py::ssize_t n = q.ndim() == 2 ? q.shape(0) : -1, dof = q.ndim() == 2 ? q.shape(1) : -1;
  if (n < 1 || dof < 1) throw py::value_error("q: expected [N, dof] with N >= 1, got shape " + shape_str(q));
  const py::ssize_t ring = cam_t.ndim() == 2 ? cam_t.shape(1) : -1;
  if (ring < 1) throw py::value_error("cam_t: expected [N, ring], got shape " + shape_str(cam_t));
  const py::ssize_t width = out.ndim() == 2 ? out.shape(1) : -1;
  if (width < 2 * dof + 5 || (width - 2 * dof) % 5 != 0)
    throw py::value_error("out: expected [N, 2 dof + 5 history], got shape " + shape_str(out));
  o.q = arr<double>(q, "q", {n, dof}, false);
  o.qd = arr<double>(qd, "qd", {n, dof}, false);
  o.t = arr<double>(t, "t", {n}, false);
  o.cam_t = arr<double>(cam_t, "cam_t", {n, ring}, false);
  o.cam_arrival = arr<double>(cam_arrival, "cam_arrival", {n, ring}, false);
  o.cam_pos = arr<double>(cam_pos, "cam_pos", {n, ring, 3}, false);
  o.cam_head = arr<int64_t>(cam_head, "cam_head", {n}, false);
  o.low = arr<float>(low, "low", {width}, false);
  o.high = arr<float>(high, "high", {width}, false);
  o.out = arr<float>(out, "out", {n, width});
  o.dof = static_cast<int>(dof);
  o.ring = static_cast<int>(ring);
  o.history = static_cast<int>((width - 2 * dof) / 5);
  return n;
}

// Paddle poses [M, 3] + normals [M, 3] of joint positions q [M, dof] with the step's kinematics (for tests).
inline py::tuple paddle_poses(const WorldModel& m, const py::array& q) {
  const py::ssize_t rows = q.ndim() == 2 ? q.shape(0) : -1;
  const double* qp = arr<double>(q, "q", {rows, m.dof}, false);
  py::array_t<double> p({rows, py::ssize_t(3)}), n({rows, py::ssize_t(3)});
  for (py::ssize_t i = 0; i < rows; ++i)
    paddle_pose_fast(m.chain, m.shape, qp + m.dof * i, p.mutable_data() + 3 * i, n.mutable_data() + 3 * i);
  return py::make_tuple(p, n);
}

// The Python class of a WorldStepper: the CPU one (envs_cpu.cpp) and the CUDA one (envs_cuda_bindings.cpp) share
// the constructor, step, camera and kinematics interface; `step_doc` says where and how the step runs.
template <class Stepper>
void bind_world_stepper(py::module_& m, const char* step_doc) {
  using A = const py::array&;
  py::class_<Stepper>(m, "WorldStepper")
      .def(py::init<A, A, A, A, A, A, A, A, A, A, A, A, A, A>(), py::arg("joint_type"), py::arg("axis"),
           py::arg("origin_xyz_m"), py::arg("origin_rpy_rad"), py::arg("paddle_xyz_m"), py::arg("paddle_rpy_rad"),
           py::arg("q_min"), py::arg("q_max"), py::arg("v_max"), py::arg("a_max"), py::arg("workspace_min_m"),
           py::arg("workspace_max_m"), py::arg("packed"), py::arg("scalars"))
      .def("step", &Stepper::step, py::arg("cmd"), py::arg("q"), py::arg("qd"), py::arg("ball"), py::arg("phase"),
           py::arg("touched"), py::arg("landed"), py::arg("hits"), py::arg("outcome"), py::arg("landing"),
           py::arg("reward"), py::arg("terminated"), py::arg("ev_hit"), py::arg("ev_landed"), py::arg("ev_limit"),
           py::arg("rec_pos"), py::arg("rec_active"), py::arg("n_threads") = 0, py::arg("camera") = py::none(),
           step_doc)
      .def("set_camera", &Stepper::set_camera, py::arg("scalars"),
           "Camera constants, order of core.CAMERA_PARAM_NAMES.")
      .def("paddle_poses", &Stepper::paddle_poses, py::arg("q"),
           "Paddle centres and face normals [M, 3] of joint positions q [M, dof] (the step's kinematics).")
      .def_property_readonly("dof", &Stepper::dof)
      .def_property_readonly("substeps", &Stepper::substeps);
}

}  // namespace robot_rt::envs::bind
