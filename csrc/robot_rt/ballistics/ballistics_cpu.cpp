// CPU backend and single-ball fast paths of the ball-flight physics (pybind11 bindings only; the maths is
// in ball_physics.hpp). Batched flights run one ball per iteration on std::thread workers, GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ball_physics.hpp"

namespace py = pybind11;
using namespace robot_rt::ballistics;

namespace {

constexpr double kMaxDt = 0.05;
constexpr double kMaxSteps = 1e7;

struct NoRec {
  void on_event(double, int, const double*, const double*) {}
  void on_step(long long, const double*) {}
};

struct TrajRec {
  std::vector<double> states, ev_t, ev_before, ev_after;
  std::vector<int32_t> ev_kind;
  void on_event(double t, int kind, const double* b, const double* a) {
    ev_t.push_back(t);
    ev_kind.push_back(kind);
    ev_before.insert(ev_before.end(), b, b + 9);
    ev_after.insert(ev_after.end(), a, a + 9);
  }
  void on_step(long long, const double* y) { states.insert(states.end(), y, y + 9); }
};

[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

double check_real(py::handle h, const char* name) {
  if (!PyFloat_Check(h.ptr()) && !PyLong_Check(h.ptr()) && !py::isinstance<py::float_>(h)) {
    // numpy scalars are accepted through __float__
    if (!PyNumber_Check(h.ptr()) || PyBool_Check(h.ptr()))
      throw py::type_error(std::string(name) + " must be a real number");
  }
  if (PyBool_Check(h.ptr())) throw py::type_error(std::string(name) + " must be a real number");
  const double v = py::cast<double>(h);
  if (!std::isfinite(v)) value_error(std::string(name) + " must be finite, got " + std::to_string(v));
  return v;
}

void check_horizon_dt(double horizon, double dt) {
  if (horizon < 0) value_error("horizon_s must be >= 0, got " + std::to_string(horizon));
  if (!(dt > 0)) value_error("dt_s must be > 0, got " + std::to_string(dt));
  if (dt > kMaxDt) value_error("dt_s must be <= 0.05, got " + std::to_string(dt));
  if (horizon / dt > kMaxSteps) value_error("horizon_s / dt_s must be <= 10000000 steps");
}

const double* packed_ptr(const py::array_t<double, py::array::c_style>& pk) {
  if (pk.ndim() != 1 || pk.shape(0) != kNumParams) value_error("packed params must have 16 entries");
  return pk.data();
}

// Reads a [9] float32/float64 array into y (any stride), validating dtype, shape, finiteness and room.
void read_single_state(py::handle obj, const double room[3], double* y) {
  if (!py::isinstance<py::array>(obj)) throw py::type_error("state must be a NumPy array or torch tensor");
  auto a = py::reinterpret_borrow<py::array>(obj);
  const auto dt = a.dtype();
  const bool f64 = dt.is(py::dtype::of<double>()), f32 = dt.is(py::dtype::of<float>());
  if (!f64 && !f32) throw py::type_error("state must be float32 or float64, got " + std::string(py::str(dt)));
  if (a.ndim() != 1 || a.shape(0) != 9) {
    std::ostringstream os;
    os << "state must have shape [9] ([x,y,z,vx,vy,vz,wx,wy,wz]), got [";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) os << (i ? ", " : "") << a.shape(i);
    os << "]";
    value_error(os.str());
  }
  const char* base = static_cast<const char*>(a.data());
  const py::ssize_t st = a.strides(0);
  for (int i = 0; i < 9; ++i) {
    y[i] = f64 ? *reinterpret_cast<const double*>(base + i * st) : double(*reinterpret_cast<const float*>(base + i * st));
    if (!std::isfinite(y[i])) value_error("state contains NaN/Inf (first at index (" + std::to_string(i) + ",))");
  }
  if (std::fabs(y[0]) > room[0] || std::fabs(y[1]) > room[1] || y[2] < 0 || y[2] > room[2]) {
    std::ostringstream os;
    os << "state has a ball outside the room (first at (0,)): position must satisfy |x| <= " << room[0] << " m, |y| <= "
       << room[1] << " m, 0 <= z <= " << room[2] << " m";
    value_error(os.str());
  }
}

// time_to_plane / landing_point for one ball, straight from Python: returns None or (t_s, state[9]).
py::object stop_one(py::handle state, py::handle x_plane_h, int stop_kind, py::handle dt_h, py::handle horizon_h,
                    const py::array_t<double, py::array::c_style>& pk, py::tuple room_t) {
  double room[3] = {py::cast<double>(room_t[0]), py::cast<double>(room_t[1]), py::cast<double>(room_t[2])};
  double y[9];
  read_single_state(state, room, y);
  const double x_plane = stop_kind == kPlane ? check_real(x_plane_h, "x_plane_m") : std::nan("");
  const double dt = check_real(dt_h, "dt_s");
  const double horizon = check_real(horizon_h, "horizon_s");
  check_horizon_dt(horizon, dt);
  const Params<double> p = params_from<double>(packed_ptr(pk));
  const long long n = n_steps_for(horizon, dt);
  const double h_last = horizon - double(n - 1) * dt;
  double t_stop = 0;
  NoRec rec;
  if (!fly(y, n, dt, h_last, p, x_plane, stop_kind, &t_stop, rec)) return py::none();
  py::array_t<double> out(9);
  std::memcpy(out.mutable_data(), y, sizeof(y));
  return py::make_tuple(t_stop, out);
}

// Full single-ball trajectory (float64): (t [T], states [T, 9], ev_t, ev_kind, ev_before, ev_after).
py::tuple simulate_one(const py::array_t<double, py::array::c_style | py::array::forcecast>& state, double horizon, double dt,
                       const py::array_t<double, py::array::c_style>& pk) {
  check_horizon_dt(horizon, dt);
  if (state.size() != 9) value_error("state must have 9 entries");
  const Params<double> p = params_from<double>(packed_ptr(pk));
  const long long n = n_steps_for(horizon, dt);
  const double h_last = horizon - double(n - 1) * dt;
  double y[9];
  std::memcpy(y, state.data(), sizeof(y));
  TrajRec rec;
  rec.states.reserve(9 * (n + 1));
  rec.states.insert(rec.states.end(), y, y + 9);
  {
    py::gil_scoped_release nogil;
    double ts;
    fly(y, n, dt, h_last, p, std::nan(""), kNone, &ts, rec);
  }
  py::array_t<double> t(n + 1);
  for (long long k = 0; k <= n; ++k) t.mutable_data()[k] = std::min(double(k) * dt, horizon);
  const py::ssize_t ne = static_cast<py::ssize_t>(rec.ev_t.size());
  py::array_t<double> states({static_cast<py::ssize_t>(n + 1), py::ssize_t(9)});
  std::memcpy(states.mutable_data(), rec.states.data(), rec.states.size() * sizeof(double));
  py::array_t<double> ev_t(ne), eb({ne, py::ssize_t(9)}), ea({ne, py::ssize_t(9)});
  py::array_t<int32_t> ek(ne);
  if (ne) {
    std::memcpy(ev_t.mutable_data(), rec.ev_t.data(), ne * sizeof(double));
    std::memcpy(ek.mutable_data(), rec.ev_kind.data(), ne * sizeof(int32_t));
    std::memcpy(eb.mutable_data(), rec.ev_before.data(), ne * 9 * sizeof(double));
    std::memcpy(ea.mutable_data(), rec.ev_after.data(), ne * 9 * sizeof(double));
  }
  return py::make_tuple(t, states, ev_t, ek, eb, ea);
}

// Flight of up to L balls [i0, i0 + nl) in lockstep: free-flight steps run as one vectorised RK4 over the
// lanes (rk4_step_lanes); a lane whose step crosses a contact surface, the plane, or needs the resting clamp
// redoes that step through the scalar advance_step (the exact same code path as the single-ball flight).
template <class T, int L>
void fly_packet(long long i0, int nl, const T* in, long long n_steps, T dt, T h_last, const Params<T>& p, T plane_x,
                int stop_kind, int record_every, long long n_samples, int max_events, T* final_state, int* count,
                T* samples, T* ev_t, int* ev_kind, T* ev_state, T* t_stop, T* stop_state) {
  T y[kStateDim][L], y1[kStateDim][L];
  BatchRecorder<T> rec[L];
  bool done[L];
  T ts_l[L];
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int l = 0; l < L; ++l) {
    const long long i = i0 + (l < nl ? l : 0);
    for (int c = 0; c < kStateDim; ++c) y[c][l] = in[kStateDim * i + c];
    done[l] = l >= nl;
    ts_l[l] = nan;
    rec[l] = BatchRecorder<T>{nullptr, record_every, ev_t + max_events * i, ev_kind + max_events * i,
                              ev_state + kStateDim * max_events * i, max_events, 0};
    if (l < nl) {
      if (record_every > 0) {
        rec[l].samples = samples + kStateDim * n_samples * i;
        for (int c = 0; c < kStateDim; ++c) rec[l].samples[c] = y[c][l];
      }
      for (int j = 0; j < max_events; ++j) {
        rec[l].ev_t[j] = nan;
        rec[l].ev_kind[j] = 0;
        for (int c = 0; c < kStateDim; ++c) rec[l].ev_state[kStateDim * j + c] = nan;
      }
    }
  }
  int n_open = nl;
  for (long long k = 0; k < n_steps && n_open > 0; ++k) {
    const T t0 = T(k) * dt;
    const T h = k + 1 < n_steps ? dt : h_last;
    rk4_step_lanes<T, L>(y, h, p, y1);
    for (int l = 0; l < L; ++l) {
      if (done[l]) continue;
      T ya[kStateDim], yb[kStateDim];
      for (int c = 0; c < kStateDim; ++c) {
        ya[c] = y[c][l];
        yb[c] = y1[c][l];
      }
      const bool slow = step_needs_contacts(ya, yb, p, plane_x, stop_kind);
      if (!slow) {
        for (int c = 0; c < kStateDim; ++c) y[c][l] = y1[c][l];
      } else {
        T ys[kStateDim];
        for (int c = 0; c < kStateDim; ++c) ys[c] = y[c][l];
        ShiftedSink<T, BatchRecorder<T>> sink{&rec[l], t0};
        T ts;
        const bool stopped = advance_step(ys, h, p, plane_x, stop_kind, &ts, sink);
        for (int c = 0; c < kStateDim; ++c) y[c][l] = ys[c];
        if (stopped) {
          done[l] = true;
          ts_l[l] = t0 + ts;
          --n_open;
          continue;
        }
      }
      if (record_every > 0) {
        T yl[kStateDim];
        for (int c = 0; c < kStateDim; ++c) yl[c] = y[c][l];
        rec[l].on_step(k + 1, yl);
      }
    }
  }
  for (int l = 0; l < nl; ++l) {
    const long long i = i0 + l;
    for (int c = 0; c < kStateDim; ++c) final_state[kStateDim * i + c] = y[c][l];
    count[i] = rec[l].count;
    if (stop_kind != kNone) {
      const bool stopped = !std::isnan(ts_l[l]);
      t_stop[i] = ts_l[l];
      for (int c = 0; c < kStateDim; ++c) stop_state[kStateDim * i + c] = stopped ? y[c][l] : nan;
    }
  }
}

template <class F>
void parallel_for(long long n, int n_threads, F&& f) {
  if (n_threads <= 1 || n < 32) {
    f(0LL, n);
    return;
  }
  const long long chunk = (n + n_threads - 1) / n_threads;
  std::vector<std::thread> pool;
  for (int t = 0; t < n_threads; ++t) {
    const long long lo = t * chunk, hi = std::min(n, lo + chunk);
    if (lo >= hi) break;
    pool.emplace_back([&f, lo, hi] { f(lo, hi); });
  }
  for (auto& th : pool) th.join();
}

// Batched flight in the dtype T of `states` ([N, 9] C-contiguous, validated by the Python layer).
template <class T>
py::dict simulate_batch_t(const py::array_t<T, py::array::c_style>& states, double horizon, double dt,
                          const py::array_t<double, py::array::c_style>& pk, int record_every, int max_events,
                          double plane_x, int stop_kind, int n_threads, bool packets) {
  check_horizon_dt(horizon, dt);
  if (states.ndim() != 2 || states.shape(1) != 9) value_error("states must have shape [N, 9]");
  const Params<T> p = params_from<T>(packed_ptr(pk));
  const py::ssize_t nb = states.shape(0);
  const long long n = n_steps_for(horizon, dt);
  const T h_last = T(horizon - double(n - 1) * dt);
  const py::ssize_t n_samples = record_every > 0 ? py::ssize_t(n / record_every + 1) : 0;
  const py::ssize_t ke = std::max(max_events, 0);
  py::array_t<T> final_state({nb, py::ssize_t(9)});
  py::array_t<int32_t> count(nb);
  py::array_t<T> samples(record_every > 0 ? std::vector<py::ssize_t>{nb, n_samples, 9} : std::vector<py::ssize_t>{0});
  py::array_t<T> ev_t(std::vector<py::ssize_t>{nb, ke});
  py::array_t<int32_t> ev_kind(std::vector<py::ssize_t>{nb, ke});
  py::array_t<T> ev_state(std::vector<py::ssize_t>{nb, ke, 9});
  py::array_t<T> t_stop(nb);
  py::array_t<T> stop_state({nb, py::ssize_t(9)});
  const T* in = states.data();
  T* fo = final_state.mutable_data();
  int32_t* co = count.mutable_data();
  T* so = record_every > 0 ? samples.mutable_data() : nullptr;
  T* eto = ev_t.mutable_data();
  int32_t* eko = ev_kind.mutable_data();
  T* eso = ev_state.mutable_data();
  T* tso = t_stop.mutable_data();
  T* sso = stop_state.mutable_data();
  {
    py::gil_scoped_release nogil;
    constexpr int L = sizeof(T) == 8 ? 8 : 16;
    const long long n_packets = (nb + L - 1) / L;
    parallel_for(n_packets, n_threads, [&](long long lo, long long hi) {
      for (long long q = lo; q < hi; ++q) {
        const long long i0 = q * L;
        const int nl = int(std::min<long long>(L, nb - i0));
        if (packets)
          fly_packet<T, L>(i0, nl, in, n, T(dt), h_last, p, T(plane_x), stop_kind, record_every, n_samples, int(ke), fo,
                           co, so, eto, eko, eso, tso, sso);
        else
          for (long long i = i0; i < i0 + nl; ++i)
            fly_batch_item<T>(i, in, n, T(dt), h_last, p, T(plane_x), stop_kind, record_every, n_samples, int(ke), fo,
                              co, so, eto, eko, eso, tso, sso);
      }
    });
  }
  py::dict out;
  out["final"] = final_state;
  out["event_count"] = count;
  if (record_every > 0) {
    py::array_t<double> st(n_samples);
    for (py::ssize_t j = 0; j < n_samples; ++j) st.mutable_data()[j] = std::min(double(j) * record_every * dt, horizon);
    out["samples_t"] = st;
    out["samples"] = samples;
  }
  if (ke > 0) {
    out["event_t"] = ev_t;
    out["event_kind"] = ev_kind;
    out["event_state"] = ev_state;
  }
  if (stop_kind != kNone) {
    out["t_stop"] = t_stop;
    out["stop_state"] = stop_state;
  }
  return out;
}

// One RK4 step / derivative / rebound of [N, 9] float64 states (exposes the header's per-step maths to tests).
py::array_t<double> rk4_step_py(const py::array_t<double, py::array::c_style | py::array::forcecast>& y, double h,
                                const py::array_t<double, py::array::c_style>& pk) {
  const Params<double> p = params_from<double>(packed_ptr(pk));
  if (y.ndim() != 2 || y.shape(1) != 9) value_error("state must have shape [N, 9]");
  py::array_t<double> out({y.shape(0), py::ssize_t(9)});
  for (py::ssize_t i = 0; i < y.shape(0); ++i) rk4_step(y.data() + 9 * i, h, p, out.mutable_data() + 9 * i);
  return out;
}

py::array_t<double> derivative_py(const py::array_t<double, py::array::c_style | py::array::forcecast>& y,
                                  const py::array_t<double, py::array::c_style>& pk) {
  const Params<double> p = params_from<double>(packed_ptr(pk));
  if (y.ndim() != 2 || y.shape(1) != 9) value_error("state must have shape [N, 9]");
  py::array_t<double> out({y.shape(0), py::ssize_t(9)});
  for (py::ssize_t i = 0; i < y.shape(0); ++i) derivative(y.data() + 9 * i, p, out.mutable_data() + 9 * i);
  return out;
}

py::array_t<double> contact_py(const py::array_t<double, py::array::c_style | py::array::forcecast>& y, int kind,
                               const py::array_t<double, py::array::c_style>& pk) {
  const Params<double> p = params_from<double>(packed_ptr(pk));
  if (y.ndim() != 2 || y.shape(1) != 9) value_error("state must have shape [N, 9]");
  py::array_t<double> out({y.shape(0), py::ssize_t(9)});
  for (py::ssize_t i = 0; i < y.shape(0); ++i) {
    double* o = out.mutable_data() + 9 * i;
    std::memcpy(o, y.data() + 9 * i, 9 * sizeof(double));
    apply_contact(o, kind, p);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_ballistics, m) {
  m.doc() = "robot_rt ball-flight physics, C++ CPU backend (ball_physics.hpp on std::thread workers)";
  m.attr("N_PARAMS") = kNumParams;
  m.attr("MAX_CONTACTS_PER_STEP") = kMaxContactsPerStep;
  m.def("stop_one", &stop_one, py::arg("state"), py::arg("x_plane_m"), py::arg("stop_kind"), py::arg("dt_s"),
        py::arg("horizon_s"), py::arg("packed"), py::arg("room"));
  m.def("simulate_one", &simulate_one, py::arg("state"), py::arg("horizon_s"), py::arg("dt_s"), py::arg("packed"));
  m.def("simulate_batch_f64", &simulate_batch_t<double>, py::arg("states"), py::arg("horizon_s"), py::arg("dt_s"),
        py::arg("packed"), py::arg("record_every"), py::arg("max_events"), py::arg("plane_x"), py::arg("stop_kind"),
        py::arg("n_threads"), py::arg("packets") = true);
  m.def("simulate_batch_f32", &simulate_batch_t<float>, py::arg("states"), py::arg("horizon_s"), py::arg("dt_s"),
        py::arg("packed"), py::arg("record_every"), py::arg("max_events"), py::arg("plane_x"), py::arg("stop_kind"),
        py::arg("n_threads"), py::arg("packets") = true);
  m.def("rk4_step", &rk4_step_py);
  m.def("derivative", &derivative_py);
  m.def("apply_contact", &contact_py);
  m.def("hardware_threads", [] { return std::max(1u, std::thread::hardware_concurrency()); });
}
