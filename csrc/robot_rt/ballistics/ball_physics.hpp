// Ball-flight physics for table tennis: header-only, no Python, no libtorch.
//
// State y = [x, y, z, vx, vy, vz, wx, wy, wz] (m, m/s, rad/s) in the table frame of docs/frames.md
// (origin on the floor under the table centre, x to the robot, z up; table top z = 0.76 m).
//
// Flight:   dp/dt = v
//           dv/dt = -g e_z - kD |v| v + kM (w x v)      kD = rho CD A / 2m,  kM = rho A r cL / 2m
//           dw/dt = -lambda w
// Integrator: classic RK4, fixed step h. A step that crosses a contact surface is cut at the crossing:
// tau in (0, h] solves gap(RK4(y, tau)) = 0 (Illinois regula falsi on the re-integrated step), the
// rebound is applied at tau and the rest of the step is integrated from the rebound state.
//
// Table/floor rebound: Nakashima, Ogawa, Kobayashi, Hayakawa, "Modeling of rebound phenomenon of a rigid
// ball with friction and elastic effects", Proc. American Control Conference 2010, pp. 1410-1415:
//   slip of the contact point v_T = (vx - r wy, vy + r wx),  alpha = min(mu (1+e) |vz| / |v_T|, 2/5)
//   v_T' = v - alpha v_T,  vz' = -e vz,  wx' = wx - 3 alpha/(2r) (vy + r wx),  wy' = wy + 3 alpha/(2r) (vx - r wy)
// Net: the centre reaching |x| = r below the net top, inside the posts: vx' = -e_net vx, (vy, vz) *= k_net.
//
// The per-step maths is written once here as PR_HD (host + device) inline functions; the CPU backend
// (ballistics_cpu.cpp), the CUDA kernel (ballistics_cuda.cu) use it and robot_rt/ballistics/reference.py
// (NumPy) and triton_kernel.py mirror it line by line (the RK4 step in its textbook order; the host's
// single-ball step is a latency-ordered rearrangement of it, see rk4_step_latency). Parameter order:
// robot_rt/ballistics/params.py.
#pragma once

#include <cmath>

// PR_HD: the execution-space macro of docs/contributing.md (__host__ __device__ under nvcc, nothing
// otherwise). Non-template functions below are also declared inline (header-only, several TUs).
#ifndef PR_HD
#if defined(__CUDACC__)
#define PR_HD __host__ __device__
#else
#define PR_HD
#endif
#endif

namespace robot_rt {
namespace ballistics {

enum ContactKind : int { kNone = 0, kTable = 1, kNet = 2, kFloor = 3, kPlane = 4 };

constexpr int kStateDim = 9;
constexpr int kNumParams = 16;
constexpr int kMaxContactsPerStep = 4;

PR_HD inline float pr_sqrt(float a) { return sqrtf(a); }
PR_HD inline double pr_sqrt(double a) { return sqrt(a); }
PR_HD inline float pr_abs(float a) { return fabsf(a); }
PR_HD inline double pr_abs(double a) { return fabs(a); }
template <class T>
PR_HD inline T pr_min(T a, T b) { return a < b ? a : b; }
template <class T>
PR_HD inline T pr_max(T a, T b) { return a > b ? a : b; }

template <class T>
struct Tolerances;
template <>
struct Tolerances<double> {
  static constexpr double gap_m = 1e-12;
  static constexpr double width_s = 1e-15;
  static constexpr int max_iter = 40;
};
template <>
struct Tolerances<float> {
  static constexpr float gap_m = 2e-6f;
  static constexpr float width_s = 1e-9f;
  static constexpr int max_iter = 30;
};

// Derived constants, same order as robot_rt.ballistics.params.PARAM_NAMES.
template <class T>
struct Params {
  T gravity_mps2, drag_k_per_m, magnus_k, spin_decay_per_s, radius_m;
  T table_restitution, table_friction, floor_restitution, floor_friction;
  T net_restitution, net_tangential_retention;
  T table_z_m, table_half_length_m, table_half_width_m, net_top_z_m, net_half_length_m;
};

template <class T>
PR_HD inline Params<T> params_from(const double* pk) {
  Params<T> p;
  p.gravity_mps2 = T(pk[0]);
  p.drag_k_per_m = T(pk[1]);
  p.magnus_k = T(pk[2]);
  p.spin_decay_per_s = T(pk[3]);
  p.radius_m = T(pk[4]);
  p.table_restitution = T(pk[5]);
  p.table_friction = T(pk[6]);
  p.floor_restitution = T(pk[7]);
  p.floor_friction = T(pk[8]);
  p.net_restitution = T(pk[9]);
  p.net_tangential_retention = T(pk[10]);
  p.table_z_m = T(pk[11]);
  p.table_half_length_m = T(pk[12]);
  p.table_half_width_m = T(pk[13]);
  p.net_top_z_m = T(pk[14]);
  p.net_half_length_m = T(pk[15]);
  return p;
}

// Accelerations of one ball (the flight equations): dv/dt and dw/dt from v and w.
template <class T>
PR_HD inline void flight_rates(T vx, T vy, T vz, T wx, T wy, T wz, const Params<T>& p, T& ax, T& ay, T& az, T& dwx, T& dwy,
                        T& dwz) {
  const T speed = pr_sqrt(vx * vx + vy * vy + vz * vz);
  const T kd = p.drag_k_per_m, km = p.magnus_k, lam = p.spin_decay_per_s;
  // written so that only one operation follows the square root (the latency chain of a step)
  ax = km * (wy * vz - wz * vy) - speed * (kd * vx);
  ay = km * (wz * vx - wx * vz) - speed * (kd * vy);
  az = (km * (wx * vy - wy * vx) - p.gravity_mps2) - speed * (kd * vz);
  dwx = -lam * wx;
  dwy = -lam * wy;
  dwz = -lam * wz;
}

// d/dt of the state.
template <class T>
PR_HD inline void derivative(const T* y, const Params<T>& p, T* d) {
  d[0] = y[3];
  d[1] = y[4];
  d[2] = y[5];
  flight_rates(y[3], y[4], y[5], y[6], y[7], y[8], p, d[3], d[4], d[5], d[6], d[7], d[8]);
}

// One classic RK4 step of free flight in the textbook order (as reference.rk4_step and the Triton kernel); out may
// not alias y. The CUDA threads use it (one ball per thread: throughput, not latency, bound).
template <class T>
PR_HD inline void rk4_step_textbook(const T* y, T h, const Params<T>& p, T* out) {
  T k1[kStateDim], k2[kStateDim], k3[kStateDim], k4[kStateDim], tmp[kStateDim];
  derivative(y, p, k1);
  const T hh = T(0.5) * h;
  for (int i = 0; i < kStateDim; ++i) tmp[i] = y[i] + hh * k1[i];
  derivative(tmp, p, k2);
  for (int i = 0; i < kStateDim; ++i) tmp[i] = y[i] + hh * k2[i];
  derivative(tmp, p, k3);
  for (int i = 0; i < kStateDim; ++i) tmp[i] = y[i] + h * k3[i];
  derivative(tmp, p, k4);
  const T h6 = h / T(6);
  for (int i = 0; i < kStateDim; ++i) out[i] = y[i] + h6 * (k1[i] + T(2) * k2[i] + T(2) * k3[i] + k4[i]);
}

// One classic RK4 step of free flight (k_i from derivative(), y' = y + h/6 (k1 + 2 k2 + 2 k3 + k4)); out may not
// alias y. Ordered for latency: a step is a chain of four square roots (the stage speeds |u|). With dv/dt =
// X - s kd u (X = km w x u - g e_z, s = |u|), the next stage's velocity is u' = y_v + c dv/dt = Z - s E and its
// squared speed |u'|^2 = Z.Z + s (s E.E - 2 Z.E) (Z = y_v + c X, E = c kd u): every term is computed while the square
// root runs, so two FMAs follow it instead of two FMAs and a dot product (single-ball flight ~1.5x faster). The last
// stage folds into v' = (y_v + h/6 (acc + X)) - s (h/6 kd u). Rounding differs from reference.rk4_step by ~1 ulp.
// The loop is written rolled on purpose (GCC keeps it so; unrolled variants spilled registers and were ~10% slower).
template <class T>
PR_HD inline void rk4_step_latency(const T* y, T h, const Params<T>& p, T* out) {
  const T kd = p.drag_k_per_m, km = p.magnus_k, lam = p.spin_decay_per_s, g = p.gravity_mps2;
  const T hh = T(0.5) * h, h6 = h / T(6);
  const T yvx = y[3], yvy = y[4], yvz = y[5];
  // spin (linear, independent of v): w of stages 1..4
  T w[4][3];
  for (int c = 0; c < 3; ++c) {
    w[0][c] = y[6 + c];
    w[1][c] = y[6 + c] + hh * (-lam * w[0][c]);
    w[2][c] = y[6 + c] + hh * (-lam * w[1][c]);
    w[3][c] = y[6 + c] + h * (-lam * w[2][c]);
  }
  for (int c = 0; c < 3; ++c)
    out[6 + c] = y[6 + c] + h6 * ((-lam * w[0][c]) + T(2) * (-lam * w[1][c]) + T(2) * (-lam * w[2][c]) +
                                  (-lam * w[3][c]));
  T ux = yvx, uy = yvy, uz = yvz;
  T s2 = ux * ux + uy * uy + uz * uz;
  T accx = T(0), accy = T(0), accz = T(0), px = T(0), py = T(0), pz = T(0);
  for (int st = 0; st < 4; ++st) {
    const T wx = w[st][0], wy = w[st][1], wz = w[st][2];
    const T xx = km * (wy * uz - wz * uy), xy = km * (wz * ux - wx * uz), xz = km * (wx * uy - wy * ux) - g;
    const T dx = kd * ux, dy = kd * uy, dz = kd * uz;
    const T wgt = (st == 0 || st == 3) ? T(1) : T(2);
    px += wgt * ux;
    py += wgt * uy;
    pz += wgt * uz;
    if (st == 3) {
      const T s = pr_sqrt(s2);
      out[3] = (yvx + h6 * (accx + xx)) - s * (h6 * dx);
      out[4] = (yvy + h6 * (accy + xy)) - s * (h6 * dy);
      out[5] = (yvz + h6 * (accz + xz)) - s * (h6 * dz);
      break;
    }
    const T c = st == 2 ? h : hh;
    const T zx = yvx + c * xx, zy = yvy + c * xy, zz = yvz + c * xz;
    const T ex = c * dx, ey = c * dy, ez = c * dz;
    const T z2 = zx * zx + zy * zy + zz * zz, ze = zx * ex + zy * ey + zz * ez, e2 = ex * ex + ey * ey + ez * ez;
    const T s = pr_sqrt(s2);
    accx += wgt * (xx - s * dx);
    accy += wgt * (xy - s * dy);
    accz += wgt * (xz - s * dz);
    ux = zx - s * ex;
    uy = zy - s * ey;
    uz = zz - s * ez;
    s2 = z2 + s * (s * e2 - T(2) * ze);
  }
  out[0] = y[0] + h6 * px;
  out[1] = y[1] + h6 * py;
  out[2] = y[2] + h6 * pz;
}

// One classic RK4 step of free flight; out may not alias y. The host (single balls, contact steps) takes the
// latency-ordered form, CUDA threads the textbook one; they agree to ~1 ulp per step.
template <class T>
PR_HD inline void rk4_step(const T* y, T h, const Params<T>& p, T* out) {
#if defined(__CUDA_ARCH__)
  rk4_step_textbook(y, h, p, out);
#else
  rk4_step_latency(y, h, p, out);
#endif
}

// RK4 step of L balls at once in structure-of-arrays layout y[c][l] (CPU packets: the lane loops vectorise).
// Textbook order (flight_rates per stage, as reference.rk4_step): packets are throughput-bound and this order needs
// fewer operations (a lane version of the latency-ordered step measured ~2.5x fewer ball-steps/s). The packets'
// free-flight steps and the scalar rk4_step agree to ~1 ulp per step (tests: single-ball vs batched to 1e-12).
template <class T, int L>
inline void rk4_step_lanes(const T (&y)[kStateDim][L], T h, const Params<T>& p, T (&out)[kStateDim][L]) {
  T acc[kStateDim][L], tmp[kStateDim][L], k[kStateDim][L];
  const T hh = T(0.5) * h, h6 = h / T(6);
  // stage 1
  for (int l = 0; l < L; ++l) {
    for (int c = 0; c < 3; ++c) k[c][l] = y[3 + c][l];
    flight_rates(y[3][l], y[4][l], y[5][l], y[6][l], y[7][l], y[8][l], p, k[3][l], k[4][l], k[5][l], k[6][l], k[7][l],
                 k[8][l]);
    for (int c = 0; c < kStateDim; ++c) {
      acc[c][l] = k[c][l];
      tmp[c][l] = y[c][l] + hh * k[c][l];
    }
  }
  // stages 2 and 3
  for (int s = 0; s < 2; ++s) {
    const T hs = s == 0 ? hh : h;
    for (int l = 0; l < L; ++l) {
      for (int c = 0; c < 3; ++c) k[c][l] = tmp[3 + c][l];
      flight_rates(tmp[3][l], tmp[4][l], tmp[5][l], tmp[6][l], tmp[7][l], tmp[8][l], p, k[3][l], k[4][l], k[5][l],
                   k[6][l], k[7][l], k[8][l]);
      for (int c = 0; c < kStateDim; ++c) {
        acc[c][l] = acc[c][l] + T(2) * k[c][l];
        tmp[c][l] = y[c][l] + hs * k[c][l];
      }
    }
  }
  // stage 4
  for (int l = 0; l < L; ++l) {
    for (int c = 0; c < 3; ++c) k[c][l] = tmp[3 + c][l];
    flight_rates(tmp[3][l], tmp[4][l], tmp[5][l], tmp[6][l], tmp[7][l], tmp[8][l], p, k[3][l], k[4][l], k[5][l],
                 k[6][l], k[7][l], k[8][l]);
    for (int c = 0; c < kStateDim; ++c) out[c][l] = y[c][l] + h6 * (acc[c][l] + k[c][l]);
  }
}

// Signed gap to a contact surface: > 0 on the approach side, 0 at contact.
template <class T>
PR_HD inline T gap(const T* y, int kind, const Params<T>& p, T side, T plane_x) {
  switch (kind) {
    case kTable: return y[2] - (p.table_z_m + p.radius_m);
    case kFloor: return y[2] - p.radius_m;
    case kNet: return side * y[0] - p.radius_m;
    default: return side * (plane_x - y[0]);
  }
}

// Is the crossing point on the finite surface (table top inside its edges; net between posts, under its top)?
template <class T>
PR_HD inline bool geometry_ok(const T* y, int kind, const Params<T>& p) {
  if (kind == kTable) return pr_abs(y[0]) <= p.table_half_length_m && pr_abs(y[1]) <= p.table_half_width_m;
  if (kind == kNet) return pr_abs(y[1]) <= p.net_half_length_m && y[2] <= p.net_top_z_m && y[2] > p.table_z_m;
  return true;
}

// tau in (0, h] with gap(RK4(y0, tau)) = 0, given g0 = gap(y0) > 0 >= g1 = gap(RK4(y0, h)).
// Illinois variant of regula falsi; the state at tau is returned in yc.
template <class T>
PR_HD inline T root_find(const T* y0, T h, T g0, T g1, int kind, const Params<T>& p, T side, T plane_x, T* yc) {
  T a = T(0), fa = g0, b = h, fb = g1, c = h;
  int last = 0;
  if (pr_abs(fb) <= Tolerances<T>::gap_m) {
    rk4_step(y0, h, p, yc);
    return h;
  }
  for (int it = 0; it < Tolerances<T>::max_iter; ++it) {
    T cn = (a * fb - b * fa) / (fb - fa);
    cn = pr_min(pr_max(cn, a), b);
    rk4_step(y0, cn, p, yc);
    const T fc = gap(yc, kind, p, side, plane_x);
    c = cn;
    if (pr_abs(fc) <= Tolerances<T>::gap_m) return c;
    if (fc <= T(0)) {
      b = cn;
      fb = fc;
      if (last == -1) fa *= T(0.5);
      last = -1;
    } else {
      a = cn;
      fa = fc;
      if (last == 1) fb *= T(0.5);
      last = 1;
    }
    if (b - a <= Tolerances<T>::width_s) break;
  }
  rk4_step(y0, c, p, yc);
  return c;
}

// Nakashima et al. (2010) rebound on a horizontal surface at height z_contact (ball centre).
template <class T>
PR_HD inline void rebound_horizontal(T* y, T e, T mu, T r, T z_contact) {
  const T vx = y[3], vy = y[4], vz = y[5], wx = y[6], wy = y[7];
  const T vtx = vx - r * wy, vty = vy + r * wx;
  const T vt = pr_sqrt(vtx * vtx + vty * vty);
  const T alpha = pr_min(mu * (T(1) + e) * pr_abs(vz) / pr_max(vt, T(1e-30)), T(0.4));
  y[2] = z_contact;
  y[3] = vx - alpha * vtx;
  y[4] = vy - alpha * vty;
  y[5] = -e * vz;
  y[6] = wx - (T(1.5) * alpha / r) * vty;
  y[7] = wy + (T(1.5) * alpha / r) * vtx;
}

template <class T>
PR_HD inline void rebound_net(T* y, const Params<T>& p) {
  const T s = y[0] >= T(0) ? T(1) : T(-1);
  y[0] = s * p.radius_m;
  y[3] = -p.net_restitution * y[3];
  y[4] = p.net_tangential_retention * y[4];
  y[5] = p.net_tangential_retention * y[5];
}

// Put the crossing state exactly on the surface (removes the root-finder's residual).
template <class T>
PR_HD inline void project_on_surface(T* y, int kind, const Params<T>& p, T plane_x) {
  if (kind == kTable) y[2] = p.table_z_m + p.radius_m;
  else if (kind == kFloor) y[2] = p.radius_m;
  else if (kind == kNet) y[0] = (y[0] >= T(0) ? T(1) : T(-1)) * p.radius_m;
  else y[0] = plane_x;
}

template <class T>
PR_HD inline void apply_contact(T* y, int kind, const Params<T>& p) {
  if (kind == kTable) rebound_horizontal(y, p.table_restitution, p.table_friction, p.radius_m, p.table_z_m + p.radius_m);
  else if (kind == kFloor) rebound_horizontal(y, p.floor_restitution, p.floor_friction, p.radius_m, p.radius_m);
  else if (kind == kNet) rebound_net(y, p);
}

// Resting contact: a ball that started the step on the table top / floor and ends it below (a rebound
// too small to leave the surface within the step) is put back on the surface with vz >= 0.
template <class T>
PR_HD inline void rest_clamp(T z_start, T* y, const Params<T>& p) {
  const T zt = p.table_z_m + p.radius_m;
  if (pr_abs(y[0]) <= p.table_half_length_m && pr_abs(y[1]) <= p.table_half_width_m && z_start >= zt && y[2] < zt) {
    y[2] = zt;
    y[5] = pr_max(y[5], T(0));
  }
  if (y[2] < p.radius_m) {
    y[2] = p.radius_m;
    y[5] = pr_max(y[5], T(0));
  }
}

// Cheap test on a free-flight step y -> y1: could it touch a surface, cross the plane or need the resting
// clamp? When false the step is y1 exactly (advance_step would find no contact); when true the step is
// redone by advance_step. Superset of advance_step's candidate conditions.
template <class T>
PR_HD inline bool step_needs_contacts(const T* y, const T* y1, const Params<T>& p, T plane_x, int stop_kind) {
  const T zt = p.table_z_m + p.radius_m, r = p.radius_m;
  const T x0 = y[0], z0 = y[2], x1 = y1[0], z1 = y1[2];
  const T sx = x0 >= T(0) ? T(1) : T(-1);
  bool slow = (z0 >= zt && z1 <= zt) || (z0 - r > T(0) && z1 - r <= T(0)) || z1 < r ||
              (sx * x0 - r > T(0) && sx * x1 - r <= T(0));
  if (stop_kind == kPlane) {
    const T dpx = plane_x - x0;
    const T sp = dpx > T(0) ? T(1) : (dpx < T(0) ? T(-1) : T(0));
    slow = slow || (sp * (plane_x - x0) > T(0) && sp * (plane_x - x1) <= T(0));
  }
  return slow;
}

// Advance one ball by h with the contacts inside the step. For every contact that is not stop_kind,
// sink.on_event(t_in_step, kind, before, after) is called. Returns true when the ball met stop_kind: then
// y holds the crossing state (before any rebound; for kPlane with x = plane_x) and *t_stop its time in the step.
template <class T, class Sink>
PR_HD inline bool advance_step(T* y, T h, const Params<T>& p, T plane_x, int stop_kind, T* t_stop, Sink& sink) {
  const T z_start = y[2];
  T rem = h, elapsed = T(0);
  T y1[kStateDim], yc[kStateDim], yb[kStateDim];
  const int n_kinds = stop_kind == kPlane ? 4 : 3;
  for (int rnd = 0; rnd <= kMaxContactsPerStep; ++rnd) {
    rk4_step(y, rem, p, y1);
    if (rnd == kMaxContactsPerStep) break;
    T best_tau = T(0);
    int best_kind = kNone;
    const T sx = y[0] >= T(0) ? T(1) : T(-1);
    const T dpx = plane_x - y[0];
    const T sp = dpx > T(0) ? T(1) : (dpx < T(0) ? T(-1) : T(0));
    for (int kk = 0; kk < n_kinds; ++kk) {
      const int kind = kk + 1;
      const T side = kind == kPlane ? sp : sx;
      const T g0 = gap(y, kind, p, side, plane_x);
      const T g1 = gap(y1, kind, p, side, plane_x);
      if (!(g0 > T(0) && g1 <= T(0))) continue;
      const T tau = root_find(y, rem, g0, g1, kind, p, side, plane_x, yc);
      if (geometry_ok(yc, kind, p) && (best_kind == kNone || tau < best_tau)) {
        best_tau = tau;
        best_kind = kind;
        for (int i = 0; i < kStateDim; ++i) yb[i] = yc[i];
      }
    }
    if (best_kind == kNone) break;
    project_on_surface(yb, best_kind, p, plane_x);
    elapsed += best_tau;
    if (best_kind == stop_kind) {
      for (int i = 0; i < kStateDim; ++i) y[i] = yb[i];
      *t_stop = elapsed;
      return true;
    }
    for (int i = 0; i < kStateDim; ++i) y[i] = yb[i];
    apply_contact(y, best_kind, p);
    sink.on_event(elapsed, best_kind, yb, y);
    rem = pr_max(rem - best_tau, T(0));
  }
  for (int i = 0; i < kStateDim; ++i) y[i] = y1[i];
  rest_clamp(z_start, y, p);
  return false;
}

// Number of grid steps for a horizon (the last one may be shorter): ceil(horizon / dt - 1e-9).
inline long long n_steps_for(double horizon_s, double dt_s) {
  if (horizon_s == 0.0) return 0;
  long long n = static_cast<long long>(std::ceil(horizon_s / dt_s - 1e-9));
  return n < 1 ? 1 : n;
}

// Fly one ball over n_steps grid steps (step k lasts dt, the last one h_last). rec.on_event(t, kind,
// before, after) for contacts, rec.on_step(k + 1, y) after step k. Returns true (and t_stop, y = crossing
// state) if stop_kind was met.
template <class T, class Rec>
struct ShiftedSink {
  Rec* rec;
  T t0;
  PR_HD void on_event(T t_in, int kind, const T* before, const T* after) { rec->on_event(t0 + t_in, kind, before, after); }
};

template <class T, class Rec>
PR_HD inline bool fly(T* y, long long n_steps, T dt, T h_last, const Params<T>& p, T plane_x, int stop_kind, T* t_stop, Rec& rec) {
  ShiftedSink<T, Rec> sink{&rec, T(0)};
  for (long long k = 0; k < n_steps; ++k) {
    sink.t0 = T(k) * dt;
    const T h = k + 1 < n_steps ? dt : h_last;
    T y1[kStateDim];
    rk4_step(y, h, p, y1);
    if (!step_needs_contacts(y, y1, p, plane_x, stop_kind)) {
      for (int c = 0; c < kStateDim; ++c) y[c] = y1[c];
      rec.on_step(k + 1, y);
      continue;
    }
    T ts;
    if (advance_step(y, h, p, plane_x, stop_kind, &ts, sink)) {
      *t_stop = sink.t0 + ts;
      return true;
    }
    rec.on_step(k + 1, y);
  }
  return false;
}

// Recorder of one ball in a batch (CPU threads and CUDA threads): every record_every-th grid state into
// samples ([S, 9] of this ball, sample 0 written by the caller) and the first max_events contacts.
template <class T>
struct BatchRecorder {
  T* samples;
  int record_every;
  T* ev_t;
  int* ev_kind;
  T* ev_state;
  int max_events;
  int count;
  PR_HD void on_event(T t, int kind, const T*, const T* after) {
    if (count < max_events) {
      ev_t[count] = t;
      ev_kind[count] = kind;
      for (int c = 0; c < kStateDim; ++c) ev_state[kStateDim * count + c] = after[c];
    }
    ++count;
  }
  PR_HD void on_step(long long k, const T* y) {
    if (record_every > 0 && k % record_every == 0) {
      T* o = samples + kStateDim * (k / record_every);
      for (int c = 0; c < kStateDim; ++c) o[c] = y[c];
    }
  }
};

// Whole flight of ball i of a batch: reads in[9 i ..], writes every output of that ball. Shared by the CPU
// workers and the CUDA kernel (one thread per ball).
template <class T>
PR_HD inline void fly_batch_item(long long i, const T* in, long long n_steps, T dt, T h_last, const Params<T>& p, T plane_x,
                          int stop_kind, int record_every, long long n_samples, int max_events, T* final_state,
                          int* count, T* samples, T* ev_t, int* ev_kind, T* ev_state, T* t_stop, T* stop_state) {
  T y[kStateDim];
  for (int c = 0; c < kStateDim; ++c) y[c] = in[kStateDim * i + c];
  const T nan = T(NAN);
  BatchRecorder<T> rec{nullptr, record_every, ev_t + max_events * i, ev_kind + max_events * i,
                       ev_state + kStateDim * max_events * i, max_events, 0};
  if (record_every > 0) {
    rec.samples = samples + kStateDim * n_samples * i;
    for (int c = 0; c < kStateDim; ++c) rec.samples[c] = y[c];
  }
  for (int j = 0; j < max_events; ++j) {
    rec.ev_t[j] = nan;
    rec.ev_kind[j] = 0;
    for (int c = 0; c < kStateDim; ++c) rec.ev_state[kStateDim * j + c] = nan;
  }
  T ts = nan;
  const bool stopped = fly(y, n_steps, dt, h_last, p, plane_x, stop_kind, &ts, rec);
  for (int c = 0; c < kStateDim; ++c) final_state[kStateDim * i + c] = y[c];
  count[i] = rec.count;
  if (stop_kind != kNone) {
    t_stop[i] = stopped ? ts : nan;
    for (int c = 0; c < kStateDim; ++c) stop_state[kStateDim * i + c] = stopped ? y[c] : nan;
  }
}

}  // namespace ballistics
}  // namespace robot_rt
