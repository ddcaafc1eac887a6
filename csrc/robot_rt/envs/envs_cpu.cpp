// CPU backend of the batched table-tennis world step (robot_rt._envs): world_step.hpp run one world per
// iteration on std::thread workers with the GIL released. The bindings only check and unpack NumPy arrays;
// state arrays are updated in place (they must be C-contiguous, writable and of the exact dtype).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include "envs_bindings.hpp"

namespace py = pybind11;
using robot_rt::envs::CameraModel;
using robot_rt::envs::WorldArrays;
using robot_rt::envs::WorldModel;

namespace {

// Worlds are handed out in small chunks from an atomic counter rather than in one block per thread: on a
// loaded machine a descheduled worker then delays the step by at most one chunk, not by its whole share.
template <class F>
void parallel_for(long long n, int n_threads, F&& f, long long chunk = 32) {
  if (n_threads <= 1 || n <= chunk) {
    f(0LL, n);
    return;
  }
  std::atomic<long long> next{0};
  auto work = [&f, &next, n, chunk] {
    for (long long lo = next.fetch_add(chunk); lo < n; lo = next.fetch_add(chunk)) f(lo, std::min(n, lo + chunk));
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < n_threads; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
}

int hardware_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

class WorldStepper {
 public:
  WorldStepper(const py::array& joint_type, const py::array& axis, const py::array& origin_xyz,
               const py::array& origin_rpy, const py::array& paddle_xyz, const py::array& paddle_rpy,
               const py::array& q_min, const py::array& q_max, const py::array& v_max, const py::array& a_max,
               const py::array& ws_min, const py::array& ws_max, const py::array& packed, const py::array& scalars)
      : m_(robot_rt::envs::bind::make_model(joint_type, axis, origin_xyz, origin_rpy, paddle_xyz, paddle_rpy, q_min,
                                            q_max, v_max, a_max, ws_min, ws_max, packed, scalars)) {}

  void step(const py::array& cmd, const py::array& q, const py::array& qd, const py::array& ball,
            const py::array& phase, const py::array& touched, const py::array& landed, const py::array& hits,
            const py::array& outcome, const py::array& landing, const py::array& reward, const py::array& terminated,
            const py::array& ev_hit, const py::array& ev_landed, const py::array& ev_limit, const py::array& rec_pos,
            const py::array& rec_active, int n_threads, const py::object& camera) {
    WorldArrays a{};
    const long long n = robot_rt::envs::bind::unpack_arrays(m_, a, cmd, q, qd, ball, phase, touched, landed, hits,
                                                            outcome, landing, reward, terminated, ev_hit, ev_landed,
                                                            ev_limit, rec_pos, rec_active);
    const CameraModel* cam = nullptr;
    if (!camera.is_none()) {
      robot_rt::envs::bind::unpack_camera(cam_, a, n, camera.cast<py::tuple>());
      cam = &cam_;
    }
    int threads = n_threads > 0 ? n_threads : hardware_threads();
    // ~3 us per world: below ~128 worlds per thread the thread start (and, on a loaded machine, the wait for
    // the worker to be scheduled) costs more than it saves
    threads = static_cast<int>(std::min<long long>(threads, std::max<long long>(1, n / 128)));
    const WorldModel& m = m_;
    py::gil_scoped_release release;
    parallel_for(n, threads, [&m, &a, cam](long long lo, long long hi) {
      for (long long i = lo; i < hi; ++i) robot_rt::envs::step_world(m, a, i, cam);
    });
  }

  void set_camera(const py::array& scalars) { cam_ = robot_rt::envs::bind::make_camera(scalars); }

  py::tuple paddle_poses(const py::array& q) const { return robot_rt::envs::bind::paddle_poses(m_, q); }
  int dof() const { return m_.dof; }
  int substeps() const { return m_.substeps; }

 private:
  WorldModel m_;
  CameraModel cam_;
};

// Observations [N, 2 dof + 5 history] (float32, clipped to low/high) of the current state: observe_world.
void observe(const py::array& q, const py::array& qd, const py::array& t, const py::array& cam_t,
             const py::array& cam_arrival, const py::array& cam_pos, const py::array& cam_head, const py::array& low,
             const py::array& high, const py::array& out, int n_threads) {
  robot_rt::envs::ObsArrays o;
  const long long n =
      robot_rt::envs::bind::unpack_obs(o, q, qd, t, cam_t, cam_arrival, cam_pos, cam_head, low, high, out);
  int threads = n_threads > 0 ? n_threads : hardware_threads();
  // ~0.1 us per world: a second thread pays off only for very large batches
  threads = static_cast<int>(std::min<long long>(threads, std::max<long long>(1, n / 4096)));
  py::gil_scoped_release release;
  parallel_for(n, threads, [&o](long long lo, long long hi) {
    for (long long i = lo; i < hi; ++i) robot_rt::envs::observe_world(o, i);
  }, 512);
}

// Flies one ball from `state` on the grid dt_s (last step h_last) until its first contact, the flight of
// simulate_batch(max_events=1): returns the contact kind (0: none within the horizon) and the state after it.
struct FirstContact {
  int kind = 0;
  double after[9] = {};
  void on_event(double, int k, const double*, const double* a) {
    if (kind == 0) {
      kind = k;
      for (int c = 0; c < 9; ++c) after[c] = a[c];
    }
  }
};

FirstContact fly_to_first_contact(const double* state, const robot_rt::ballistics::Params<double>& p, double dt_s,
                                  double h_last, long long n_steps) {
  namespace bl = robot_rt::ballistics;
  double y[9];
  for (int c = 0; c < 9; ++c) y[c] = state[c];
  FirstContact sink;
  double ts;
  for (long long k = 0; k < n_steps && sink.kind == 0; ++k)
    bl::advance_step(y, k + 1 < n_steps ? dt_s : h_last, p, 0.0, static_cast<int>(bl::kNone), &ts, sink);
  return sink;
}

// The inputs of both first-contact flights, checked: states [M, 9], the packed ball parameters and the time grid
// (n_steps steps of dt_s, the last one h_last, as simulate_batch).
struct FlightBatch {
  const double* states;
  py::ssize_t m;
  robot_rt::ballistics::Params<double> params;
  long long n_steps;
  double h_last;
};

FlightBatch flight_batch(const py::array& states, const py::array& packed, double dt_s, double horizon_s) {
  namespace bl = robot_rt::ballistics;
  using robot_rt::envs::bind::arr;
  const py::ssize_t m = states.ndim() == 2 ? states.shape(0) : -1;
  const double* in = arr<double>(states, "states", {m, 9}, false);
  const bl::Params<double> p = bl::params_from<double>(arr<double>(packed, "packed", {bl::kNumParams}, false));
  if (!(dt_s > 0) || !(horizon_s > 0) || horizon_s / dt_s > 1e7)
    throw py::value_error("dt_s and horizon_s must be > 0 with horizon_s / dt_s <= 1e7");
  const long long n_steps = bl::n_steps_for(horizon_s, dt_s);
  return FlightBatch{in, m, p, n_steps, horizon_s - double(n_steps - 1) * dt_s};
}

// First contact of each ball within `horizon_s` on the grid dt_s (the flight of simulate_batch(max_events=1):
// same advance_step, same grid), stopping right after it: kind [M] (0: none) and the state after it [M, 9].
// The launch sampler's validity test needs only this first contact, ~2-3x cheaper than the whole horizon.
py::tuple first_contacts(const py::array& states, const py::array& packed, double dt_s, double horizon_s,
                         int n_threads) {
  const FlightBatch fb = flight_batch(states, packed, dt_s, horizon_s);
  const py::ssize_t m = fb.m;
  py::array_t<int32_t> kind(m);
  py::array_t<double> after({m, py::ssize_t(9)});
  int32_t* kp = kind.mutable_data();
  double* ap = after.mutable_data();
  int threads = n_threads > 0 ? n_threads : hardware_threads();
  // ~10-30 us per ball: a second thread from ~32 balls on, handed out 8 at a time
  threads = static_cast<int>(std::min<long long>(threads, std::max<long long>(1, m / 16)));
  {
    py::gil_scoped_release release;
    parallel_for(m, threads, [&](long long lo, long long hi) {
    for (long long i = lo; i < hi; ++i) {
      const FirstContact sink = fly_to_first_contact(fb.states + 9 * i, fb.params, dt_s, fb.h_last, fb.n_steps);
      kp[i] = sink.kind;
      for (int c = 0; c < 9; ++c) ap[9 * i + c] = sink.kind ? sink.after[c] : std::nan("");
    }
    }, 8);
  }
  return py::make_tuple(kind, after);
}

// For each group g of candidates states[offsets[g]:offsets[g+1]], the index (within the group) of the first
// valid launch or -1: valid = first contact (first_contacts' flight) on the table with the state after it at
// 0 < x < half_length_m and |y| < half_width_m (TableTennisWorld.launch_is_valid). Candidates are flown in
// order and a group stops at its first valid one, so no flight is wasted (sample_launches).
py::array_t<int64_t> first_valid_launches(const py::array& states, const py::array& offsets, const py::array& packed,
                                          double dt_s, double horizon_s, double half_length_m, double half_width_m,
                                          int n_threads) {
  namespace bl = robot_rt::ballistics;
  using robot_rt::envs::bind::arr;
  const FlightBatch fb = flight_batch(states, packed, dt_s, horizon_s);
  const py::ssize_t m = fb.m;
  const py::ssize_t g1 = offsets.ndim() == 1 ? offsets.shape(0) : -1;
  if (g1 < 1) throw py::value_error("offsets: expected [groups + 1], got shape " + robot_rt::envs::bind::shape_str(offsets));
  const int64_t* off = arr<int64_t>(offsets, "offsets", {g1}, false);
  for (py::ssize_t g = 0; g + 1 < g1; ++g)
    if (off[g] < 0 || off[g] > off[g + 1] || off[g + 1] > m)
      throw py::value_error("offsets: expected non-decreasing offsets into states, from >= 0 to <= len(states)");
  const long long groups = g1 - 1;
  py::array_t<int64_t> first(groups);
  int64_t* fp = first.mutable_data();
  int threads = n_threads > 0 ? n_threads : hardware_threads();
  threads = static_cast<int>(std::min<long long>(threads, std::max<long long>(1, groups / 8)));
  {
    py::gil_scoped_release release;
    parallel_for(groups, threads, [&](long long lo, long long hi) {
      for (long long g = lo; g < hi; ++g) {
        fp[g] = -1;
        for (int64_t i = off[g]; i < off[g + 1]; ++i) {
          const FirstContact sink = fly_to_first_contact(fb.states + 9 * i, fb.params, dt_s, fb.h_last, fb.n_steps);
          if (sink.kind == bl::kTable && sink.after[0] > 0.0 && sink.after[0] < half_length_m &&
              std::fabs(sink.after[1]) < half_width_m) {
            fp[g] = i - off[g];
            break;
          }
        }
      }
    }, 2);
  }
  return first;
}

}  // namespace

PYBIND11_MODULE(_envs, m) {
  m.doc() = "robot_rt table-tennis worlds, C++ CPU backend (world_step.hpp on std::thread workers, GIL released)";
  robot_rt::envs::bind::bind_world_stepper<WorldStepper>(
      m, "Advances every world by one policy step in place: the physics, and with `camera` (the tuple of "
         "camera arrays t, cam_phase, cam_count, cam_key, cam_counter, cam_t, cam_arrival, cam_pos, cam_head) "
         "the camera frames of the step and t += step_s.");
  m.def("hardware_threads", &hardware_threads);
  m.def("observe", &observe, py::arg("q"), py::arg("qd"), py::arg("t"), py::arg("cam_t"), py::arg("cam_arrival"),
        py::arg("cam_pos"), py::arg("cam_head"), py::arg("low"), py::arg("high"), py::arg("out"),
        py::arg("n_threads") = 0,
        "Observations of the current state into out [N, 2 dof + 5 history] (float32, clipped to low/high).");
  m.def("first_contacts", &first_contacts, py::arg("states"), py::arg("packed"), py::arg("dt_s"), py::arg("horizon_s"),
        py::arg("n_threads") = 0, "First contact (kind, state after) of each ball within the horizon.");
  m.def("first_valid_launches", &first_valid_launches, py::arg("states"), py::arg("offsets"), py::arg("packed"),
        py::arg("dt_s"), py::arg("horizon_s"), py::arg("half_length_m"), py::arg("half_width_m"),
        py::arg("n_threads") = 0, "Per group of candidate launches, the index of the first valid one (-1: none).");
}
