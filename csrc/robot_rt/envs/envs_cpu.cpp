// CPU backend of the batched table-tennis world step (robot_rt._envs): world_step.hpp run one world per
// iteration on std::thread workers with the GIL released. The bindings only check and unpack NumPy arrays;
// state arrays are updated in place (they must be C-contiguous, writable and of the exact dtype).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "world_step.hpp"

namespace py = pybind11;
using robot_rt::envs::WorldArrays;
using robot_rt::envs::WorldModel;

namespace {

std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

// Checks dtype, C-contiguity, writability and shape (-1: any) and returns the data pointer.
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

template <class F>
void parallel_for(long long n, int n_threads, F&& f) {
  if (n_threads <= 1 || n < 2) {
    f(0LL, n);
    return;
  }
  const long long chunk = (n + n_threads - 1) / n_threads;
  std::vector<std::thread> pool;
  for (int t = 1; t < n_threads; ++t) {
    const long long lo = t * chunk, hi = std::min(n, lo + chunk);
    if (lo < hi) pool.emplace_back([&f, lo, hi] { f(lo, hi); });
  }
  f(0LL, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

int hardware_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

class WorldStepper {
 public:
  WorldStepper(const py::array& joint_type, const py::array& axis, const py::array& origin_xyz,
               const py::array& origin_rpy, const py::array& paddle_xyz, const py::array& paddle_rpy,
               const py::array& q_min, const py::array& q_max, const py::array& v_max, const py::array& a_max,
               const py::array& ws_min, const py::array& ws_max, const py::array& packed, const py::array& scalars) {
    const py::ssize_t dof = joint_type.ndim() == 1 ? joint_type.shape(0) : -1;
    if (dof < 1 || dof > robot_rt::robot::kMaxChainJoints)
      throw py::value_error("joint_type: expected [dof] with 1 <= dof <= 16, got shape " + shape_str(joint_type));
    const auto* jt = arr<int32_t>(joint_type, "joint_type", {dof}, false);
    const auto* ax = arr<double>(axis, "axis", {dof, 3}, false);
    const auto* oxyz = arr<double>(origin_xyz, "origin_xyz_m", {dof, 3}, false);
    const auto* orpy = arr<double>(origin_rpy, "origin_rpy_rad", {dof, 3}, false);
    for (int j = 0; j < dof; ++j) {
      if (!m_.chain.set_joint(j, jt[j], ax + 3 * j, oxyz + 3 * j, orpy + 3 * j))
        throw py::value_error("axis[" + std::to_string(j) + "]: expected a unit vector");
    }
    m_.chain.set_paddle(arr<double>(paddle_xyz, "paddle_xyz_m", {3}, false),
                        arr<double>(paddle_rpy, "paddle_rpy_rad", {3}, false));
    m_.dof = static_cast<int>(dof);
    const double* lo = arr<double>(q_min, "q_min", {dof}, false);
    const double* hi = arr<double>(q_max, "q_max", {dof}, false);
    const double* vm = arr<double>(v_max, "v_max", {dof}, false);
    const double* am = arr<double>(a_max, "a_max", {dof}, false);
    for (int j = 0; j < dof; ++j) {
      if (!(lo[j] < hi[j])) throw py::value_error("q_min must be below q_max");
      if (!(vm[j] > 0) || !(am[j] > 0)) throw py::value_error("v_max and a_max must be > 0");
      m_.q_min[j] = lo[j];
      m_.q_max[j] = hi[j];
      m_.v_max[j] = vm[j];
      m_.a_max[j] = am[j];
    }
    const double* wmin = arr<double>(ws_min, "workspace_min_m", {3}, false);
    const double* wmax = arr<double>(ws_max, "workspace_max_m", {3}, false);
    for (int k = 0; k < 3; ++k) {
      m_.ws_min_m[k] = wmin[k];
      m_.ws_max_m[k] = wmax[k];
    }
    m_.ball = robot_rt::ballistics::params_from<double>(
        arr<double>(packed, "packed", {robot_rt::ballistics::kNumParams}, false));
    robot_rt::envs::set_scalars(m_, arr<double>(scalars, "scalars", {robot_rt::envs::kNumWorldScalars}, false));
    if (!(m_.dt_s > 0) || m_.substeps < 1 || m_.substeps > robot_rt::envs::kMaxSubsteps)
      throw py::value_error("scalars: expected dt_s > 0 and 1 <= substeps <= 1000");
  }

  void step(const py::array& cmd, const py::array& q, const py::array& qd, const py::array& ball,
            const py::array& phase, const py::array& touched, const py::array& landed, const py::array& hits,
            const py::array& outcome, const py::array& landing, const py::array& reward, const py::array& terminated,
            const py::array& ev_hit, const py::array& ev_landed, const py::array& ev_limit, const py::array& rec_pos,
            const py::array& rec_active, int n_threads) {
    const py::ssize_t n = q.ndim() == 2 ? q.shape(0) : -1;
    if (n < 1) throw py::value_error("q: expected [N, dof] with N >= 1, got shape " + shape_str(q));
    const py::ssize_t dof = m_.dof, s = m_.substeps;
    WorldArrays a;
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
    int threads = n_threads > 0 ? n_threads : hardware_threads();
    // below ~32 worlds per thread the thread start costs more than it saves
    threads = static_cast<int>(std::min<long long>(threads, std::max<long long>(1, n / 32)));
    const WorldModel& m = m_;
    py::gil_scoped_release release;
    parallel_for(n, threads, [&m, &a](long long lo, long long hi) {
      for (long long i = lo; i < hi; ++i) robot_rt::envs::step_world(m, a, i);
    });
  }

  int dof() const { return m_.dof; }
  int substeps() const { return m_.substeps; }

 private:
  WorldModel m_;
};

}  // namespace

PYBIND11_MODULE(_envs, m) {
  m.doc() = "robot_rt table-tennis worlds, C++ CPU backend (world_step.hpp on std::thread workers, GIL released)";
  py::class_<WorldStepper>(m, "WorldStepper")
      .def(py::init<const py::array&, const py::array&, const py::array&, const py::array&, const py::array&,
                    const py::array&, const py::array&, const py::array&, const py::array&, const py::array&,
                    const py::array&, const py::array&, const py::array&, const py::array&>(),
           py::arg("joint_type"), py::arg("axis"), py::arg("origin_xyz_m"), py::arg("origin_rpy_rad"),
           py::arg("paddle_xyz_m"), py::arg("paddle_rpy_rad"), py::arg("q_min"), py::arg("q_max"), py::arg("v_max"),
           py::arg("a_max"), py::arg("workspace_min_m"), py::arg("workspace_max_m"), py::arg("packed"),
           py::arg("scalars"))
      .def("step", &WorldStepper::step, py::arg("cmd"), py::arg("q"), py::arg("qd"), py::arg("ball"), py::arg("phase"),
           py::arg("touched"), py::arg("landed"), py::arg("hits"), py::arg("outcome"), py::arg("landing"),
           py::arg("reward"), py::arg("terminated"), py::arg("ev_hit"), py::arg("ev_landed"), py::arg("ev_limit"),
           py::arg("rec_pos"), py::arg("rec_active"), py::arg("n_threads") = 0,
           "Advances every world by one policy step (physics only), in place.")
      .def_property_readonly("dof", &WorldStepper::dof)
      .def_property_readonly("substeps", &WorldStepper::substeps);
  m.def("hardware_threads", &hardware_threads);
}
