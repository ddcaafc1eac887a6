// Physics part of one policy step of one table-tennis world: header-only, no heap, no Python, PR_HD.
//
// Mirrors TableTennisWorld._physics_numpy (robot_rt/envs/core.py, the NumPy reference; the maths is in that
// module's docstring) statement for statement:
//   per substep dt:  robot  qd += clip(qd_cmd - qd, +-a_max dt), q += qd dt, position limits (q clipped,
//                           qd zeroed, a violation while the rally is on), paddle pose by forward kinematics
//                           (robot/kinematics.hpp), paddle workspace box;
//                    ball   one RK4 step with table/net/floor contacts (ballistics/ball_physics.hpp
//                           advance_step), each contact handled by the rally logic (Sink below);
//                    paddle impulse contact (restitution, Coulomb friction, spin), rest of the substep in
//                           free flight; planes (miss, human hitting plane -> waiting, slow ball); limit
//                           violation; the ball position and whether it is in play (neither done nor still
//                           to be served) are recorded for the camera.
//   after the substeps: proximity shaping and action cost.
// Then, when the camera arrays are given, the camera frames of the step (camera_world, mirrors
// TableTennisWorld._camera with the same counter-based uniforms) and the time update. The observation
// (detections + joint state, build_observation + clip) is observe_world. Human answers and new balls (rare)
// stay in NumPy. Compile with FP contraction off (-ffp-contract=off, nvcc --fmad=false) so that a + b * c
// rounds as in NumPy: the camera's decisions and values then match the reference exactly, except for
// log1p/sin/cos, where NumPy's SIMD versions may differ from libm by an ulp.
//
// Include order: see below (the two headers expect different PR_HD macros); this header uses PR_ENV_HD.
#pragma once

#include <cmath>
#include <cstdint>

// ball_physics.hpp defines non-template helpers in the header, so its PR_HD must carry `inline` (it does when
// it defines PR_HD itself); kinematics.hpp writes `PR_HD inline`, so its PR_HD must not. Include
// ball_physics.hpp first with its own PR_HD, then give kinematics.hpp its own.
#include "robot_rt/ballistics/ball_physics.hpp"
#undef PR_HD
#include "robot_rt/robot/kinematics.hpp"

#ifdef __CUDACC__
#define PR_ENV_HD __host__ __device__ inline
#else
#define PR_ENV_HD inline
#endif

namespace robot_rt::envs {

namespace bl = robot_rt::ballistics;
namespace rb = robot_rt::robot;

// Phases and outcomes: same codes as robot_rt/envs/core.py.
// kServing: the episode's serve is still to come (WorldConfig.serve_delay_s): the robot moves, the ball is frozen
// and hidden from the camera, the Python side launches it.
enum Phase : int64_t { kIncoming = 0, kReturning = 1, kDone = 2, kWaiting = 3, kServing = 4 };
enum Outcome : int64_t { kNoOutcome = 0, kReturned = 1, kMissed = 2, kOut = 3, kLimit = 4, kHumanFault = 5 };

constexpr int kNumWorldScalars = 16;  // core.WORLD_PARAM_NAMES
constexpr int kMaxSubsteps = 1000;

// Paddle pose of a ChainModel (the product of robot/kinematics.hpp forward_kinematics), evaluated with the
// chain's structure: a fixed origin without rotation is a translation, a revolute joint about a coordinate
// axis mixes two columns of the running rotation (one sin/cos pair), a prismatic joint is a translation;
// other joints fall back to the generic rb::compose / rb::axis_angle. ~4x fewer flops than the generic
// product on the 8-joint platform; tests compare it with the NumPy kinematics to 1e-12.
// Zero terms are skipped (adding an exact 0 changes nothing, so the result is the same), and so is the
// product with the running rotation while it is still the identity (the gantry's prismatic joints).
struct ChainShape {
  bool origin_rotates[rb::kMaxChainJoints];  // origin rotation differs from the identity
  int axis_index[rb::kMaxChainJoints];       // 0/1/2: +-x/y/z, -1: general axis
  double axis_sign[rb::kMaxChainJoints];
  bool origin_p[rb::kMaxChainJoints][3];     // origin translation component is non-zero
  bool paddle_p[3];                          // paddle translation component is non-zero
};

inline ChainShape analyse_chain(const rb::ChainModel<double>& c) {
  ChainShape s;
  for (int i = 0; i < c.dof; ++i) {
    bool ident = true;
    for (int r = 0; r < 3; ++r)
      for (int k = 0; k < 3; ++k) ident = ident && c.origin[i].r[r][k] == (r == k ? 1.0 : 0.0);
    s.origin_rotates[i] = !ident;
    for (int k = 0; k < 3; ++k) s.origin_p[i][k] = c.origin[i].p[k] != 0.0;
    s.axis_index[i] = -1;
    s.axis_sign[i] = 1.0;
    for (int k = 0; k < 3; ++k) {
      const double a = c.axis[i][k], b = c.axis[i][(k + 1) % 3], d = c.axis[i][(k + 2) % 3];
      if ((a == 1.0 || a == -1.0) && b == 0.0 && d == 0.0) {
        s.axis_index[i] = k;
        s.axis_sign[i] = a;
      }
    }
  }
  for (int k = 0; k < 3; ++k) s.paddle_p[k] = c.paddle.p[k] != 0.0;
  return s;
}

// Column indices known at compile time keep the running rotation in registers (a runtime index forces it
// to memory, ~2x slower kinematics).
template <int A, int B>
PR_ENV_HD void turn_cols(double (&R)[3][3], double cq, double sq) {
  for (int r = 0; r < 3; ++r) {
    const double ca = R[r][A], cb = R[r][B];
    R[r][A] = cq * ca + sq * cb;
    R[r][B] = -sq * ca + cq * cb;
  }
}
PR_ENV_HD double pick_col(const double (&R)[3][3], int r, int k) {
  return k == 0 ? R[r][0] : (k == 1 ? R[r][1] : R[r][2]);
}

// cos_q / sin_q (optional): cos(q_i), sin(q_i) of the revolute joints, when the caller tracks them.
PR_ENV_HD void paddle_pose_fast(const rb::ChainModel<double>& c, const ChainShape& sh, const double* q, double p_out[3],
                                double n_out[3], const double* cos_q = nullptr, const double* sin_q = nullptr) {
  double R[3][3] = {{1.0, 0.0, 0.0}, {0.0, 1.0, 0.0}, {0.0, 0.0, 1.0}};
  double p[3] = {0.0, 0.0, 0.0};
  bool ident = true;  // R is still exactly the identity
  for (int i = 0; i < c.dof; ++i) {
    const rb::Transform<double>& o = c.origin[i];
    if (ident) {
      for (int r = 0; r < 3; ++r) p[r] += o.p[r];
    } else {
      for (int k = 0; k < 3; ++k)
        if (sh.origin_p[i][k])
          for (int r = 0; r < 3; ++r) p[r] += R[r][k] * o.p[k];
    }
    if (sh.origin_rotates[i]) {
      ident = false;
      double T[3][3];
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) T[r][k] = R[r][0] * o.r[0][k] + R[r][1] * o.r[1][k] + R[r][2] * o.r[2][k];
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) R[r][k] = T[r][k];
    }
    const int k = sh.axis_index[i];
    if (c.joint_type[i] == rb::kPrismatic) {
      const double* ax = c.axis[i];
      if (k >= 0 && ident) {
        // constant indices (p[k] with a runtime k would put p in memory: a store-forwarding stall per call)
        const double d = q[i] * sh.axis_sign[i];
        if (k == 0) p[0] += d;
        else if (k == 1) p[1] += d;
        else p[2] += d;
      } else if (k >= 0) {
        for (int r = 0; r < 3; ++r) p[r] += q[i] * (pick_col(R, r, k) * sh.axis_sign[i]);
      } else {
        for (int r = 0; r < 3; ++r) p[r] += q[i] * (R[r][0] * ax[0] + R[r][1] * ax[1] + R[r][2] * ax[2]);
      }
      continue;
    }
    ident = false;
    if (k < 0) {
      double M[3][3], T[3][3];
      rb::axis_angle(c.axis[i], q[i], M);
      for (int r = 0; r < 3; ++r)
        for (int j = 0; j < 3; ++j) T[r][j] = R[r][0] * M[0][j] + R[r][1] * M[1][j] + R[r][2] * M[2][j];
      for (int r = 0; r < 3; ++r)
        for (int j = 0; j < 3; ++j) R[r][j] = T[r][j];
      continue;
    }
    // rotation about +-e_k by q: columns a = (k+1)%3, b = (k+2)%3 turn, a' = c a + s b, b' = -s a + c b
    const double cq = cos_q ? cos_q[i] : cos(q[i]), sq = sh.axis_sign[i] * (sin_q ? sin_q[i] : sin(q[i]));
    if (k == 0) turn_cols<1, 2>(R, cq, sq);
    else if (k == 1) turn_cols<2, 0>(R, cq, sq);
    else turn_cols<0, 1>(R, cq, sq);
  }
  const rb::Transform<double>& pd = c.paddle;
  for (int r = 0; r < 3; ++r) {
    p_out[r] = p[r];
    for (int k = 0; k < 3; ++k)
      if (sh.paddle_p[k]) p_out[r] += R[r][k] * pd.p[k];
    n_out[r] = R[r][0] * pd.r[0][2] + R[r][1] * pd.r[1][2] + R[r][2] * pd.r[2][2];
  }
}

// cos/sin of the joint angles through the substeps of a policy step: exact (libm) at the step's start, then
// advanced by the angle-addition formulas with a Taylor series of the substep's increment d (|d| <= 0.05 rad:
// truncation < 1e-17; larger increments recompute). About 4x cheaper than sincos per joint and substep; the
// rounding drift over the substeps of one step stays ~1e-15 (the NumPy reference evaluates sin/cos of q).
PR_ENV_HD void advance_sincos(double& c, double& s, double q_new, double q_old) {
  const double d = q_new - q_old;
  if (d == 0.0) return;
  if (!(fabs(d) <= 0.05)) {
    c = cos(q_new);
    s = sin(q_new);
    return;
  }
  const double d2 = d * d;
  const double sd = d * (1.0 - d2 / 6.0 * (1.0 - d2 / 20.0 * (1.0 - d2 / 42.0)));
  const double cd = 1.0 - d2 / 2.0 * (1.0 - d2 / 12.0 * (1.0 - d2 / 30.0 * (1.0 - d2 / 56.0)));
  const double c0 = c, s0 = s;
  c = c0 * cd - s0 * sd;
  s = s0 * cd + c0 * sd;
}

// Everything that is the same for all worlds (filled once from Python).
struct WorldModel {
  rb::ChainModel<double> chain;
  ChainShape shape;
  int dof = 0;
  double q_min[rb::kMaxChainJoints], q_max[rb::kMaxChainJoints];
  double v_max[rb::kMaxChainJoints], a_max[rb::kMaxChainJoints];
  double ws_min_m[3], ws_max_m[3];
  bl::Params<double> ball;
  // scalars, order of core.WORLD_PARAM_NAMES
  double dt_s;
  int substeps;
  double ball_radius_m, paddle_radius_m, paddle_restitution, paddle_friction;
  double miss_plane_x_m, human_plane_x_m;
  double reward_hit, reward_land, reward_shaping, shaping_length_m, action_cost, penalty_limit;
  bool goal_conditioned;
  double slow_ball_mps;
};

inline void set_scalars(WorldModel& m, const double* s) {
  m.dt_s = s[0];
  m.substeps = static_cast<int>(s[1] + 0.5);
  m.ball_radius_m = s[2];
  m.paddle_radius_m = s[3];
  m.paddle_restitution = s[4];
  m.paddle_friction = s[5];
  m.miss_plane_x_m = s[6];
  m.human_plane_x_m = s[7];
  m.reward_hit = s[8];
  m.reward_land = s[9];
  m.reward_shaping = s[10];
  m.shaping_length_m = s[11];
  m.action_cost = s[12];
  m.penalty_limit = s[13];
  m.goal_conditioned = s[14] != 0.0;
  m.slow_ball_mps = s[15];
}

// Pointers to the batched arrays (C-contiguous, leading dimension = world).
struct WorldArrays {
  const double* cmd;  // [N, dof], already clipped to the velocity limits
  double* q;          // [N, dof]
  double* qd;         // [N, dof]
  double* ball;       // [N, 9]
  int64_t* phase;     // [N]
  uint8_t* touched;   // [N] bool
  uint8_t* landed;    // [N] bool
  int64_t* hits;      // [N]
  int64_t* outcome;   // [N]
  double* landing;    // [N, 2]
  double* reward;     // [N] out
  uint8_t* terminated;  // [N] out
  uint8_t* ev_hit;      // [N] out
  uint8_t* ev_landed;   // [N] out
  uint8_t* ev_limit;    // [N] out
  double* rec_pos;      // [N, substeps, 3] out
  uint8_t* rec_active;  // [N, substeps] out
  // camera (all null: physics only, the camera runs in NumPy)
  double* t;             // [N] world time, advanced by step_s after the camera
  const double* cam_phase;  // [N] time of the episode's first frame
  int64_t* cam_count;    // [N] frames due so far
  const uint64_t* cam_key;  // [N] stream key
  uint64_t* cam_counter;    // [N] stream counter
  double* cam_t;         // [N, ring] capture times
  double* cam_arrival;   // [N, ring] arrival (visibility) times
  double* cam_pos;       // [N, ring, 3] noisy positions
  int64_t* cam_head;     // [N] frames taken so far
};

// Camera constants (order of core.CAMERA_PARAM_NAMES).
constexpr int kNumCameraScalars = 8;
struct CameraModel {
  double camera_hz = 0, drop_prob = 0, noise_m = 0, latency_s = 0, jitter_s = 0, step_s = 0;
  int frames_per_step = 0, ring = 0;
};

inline void set_camera_scalars(CameraModel& c, const double* s) {
  c.camera_hz = s[0];
  c.drop_prob = s[1];
  c.noise_m = s[2];
  c.latency_s = s[3];
  c.jitter_s = s[4];
  c.step_s = s[5];
  c.frames_per_step = static_cast<int>(s[6] + 0.5);
  c.ring = static_cast<int>(s[7] + 0.5);
}

// State of one world during a step (rally logic shared by the contact sink and the planes).
struct WorldState {
  int64_t phase, hits, outcome;
  bool touched, landed, terminated, ev_hit, ev_landed, ev_limit;
  double reward;
  double landing[2];
};

PR_ENV_HD void end_world(WorldState& w, int64_t outcome) {
  w.outcome = outcome;
  w.phase = kDone;
  w.terminated = true;
}

// Contact events of advance_step -> rally logic (core.TableTennisWorld._surface_contact).
struct RallySink {
  WorldState* w;
  const WorldModel* m;
  PR_ENV_HD void on_event(double, int kind, const double* before, const double*) {
    WorldState& s = *w;
    if (s.phase == kIncoming) {
      if (!(kind == bl::kTable && before[0] > 0.0)) end_world(s, before[0] > 0.0 ? kMissed : kHumanFault);
    } else if (s.phase == kReturning && kind != bl::kNet && !s.landed) {
      s.landing[0] = before[0];
      s.landing[1] = before[1];
      if (kind == bl::kTable && before[0] < 0.0) {
        s.hits += 1;
        s.reward += m->reward_land;
        s.ev_landed = true;
        if (m->goal_conditioned) end_world(s, kReturned);
        else s.landed = true;
      } else {
        end_world(s, kOut);
      }
    }
  }
};

PR_ENV_HD double dot3(const double* a, const double* b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
PR_ENV_HD void cross3(const double* a, const double* b, double* c) {
  c[0] = a[1] * b[2] - a[2] * b[1];
  c[1] = a[2] * b[0] - a[0] * b[2];
  c[2] = a[0] * b[1] - a[1] * b[0];
}
PR_ENV_HD double norm3(const double* a) { return sqrt(dot3(a, a)); }

// Rebound of a ball on a moving paddle (core.paddle_contact), in place.
PR_ENV_HD void paddle_impulse(double* y, const double* normal, const double* paddle_vel, double side, double r,
                              double restitution, double friction) {
  double n[3], v_rel[3], v_n[3], arm[3], wxa[3], slip[3], dv_t[3], dw[3];
  for (int k = 0; k < 3; ++k) {
    n[k] = normal[k] * side;
    v_rel[k] = y[3 + k] - paddle_vel[k];
  }
  const double vn_mag = dot3(v_rel, n);
  if (!(vn_mag < 0.0)) return;  // separating: no impulse
  for (int k = 0; k < 3; ++k) {
    v_n[k] = vn_mag * n[k];
    arm[k] = -r * n[k];
  }
  cross3(y + 6, arm, wxa);
  for (int k = 0; k < 3; ++k) slip[k] = v_rel[k] - v_n[k] + wxa[k];
  const double slip_mag = norm3(slip);
  const double a = friction * (1.0 + restitution) * fabs(vn_mag), b = 0.4 * slip_mag;
  const double limit = a < b ? a : b;
  const double den = slip_mag > 1e-12 ? slip_mag : 1e-12;
  for (int k = 0; k < 3; ++k) dv_t[k] = slip_mag > 1e-12 ? -limit * (slip[k] / den) : -limit * 0.0;
  cross3(arm, dv_t, dw);
  for (int k = 0; k < 3; ++k) {
    y[3 + k] += -(1.0 + restitution) * v_n[k] + dv_t[k];
    y[6 + k] += (1.5 / (r * r)) * dw[k];  // I = 2/3 m r^2, lever arm r
  }
}

PR_ENV_HD double clampd(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

// core.counter_uniform: value `c` of the stream `key` (c >= 1), splitmix64 -> 53-bit uniform in [0, 1).
PR_ENV_HD double counter_uniform(uint64_t key, uint64_t c) {
  uint64_t z = key + c * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z = z ^ (z >> 31);
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

// Camera frames of world i due in the step just simulated (core.TableTennisWorld._camera, same order of
// operations), from rec_pos / rec_active; then t += step_s.
PR_ENV_HD void camera_world(const WorldModel& m, const CameraModel& c, const WorldArrays& a, long long i) {
  const int S = m.substeps, F = c.frames_per_step, ring = c.ring;
  const double dt = m.dt_s, t = a.t[i], phase = a.cam_phase[i];
  const int64_t count0 = a.cam_count[i], head0 = a.cam_head[i];
  const uint64_t key = a.cam_key[i], counter = a.cam_counter[i];
  int64_t due_n = 0, taken = 0;
  for (int j = 0; j < F; ++j) {
    const double due_t = phase + static_cast<double>(count0 + j) / c.camera_hz;
    // first substep whose end t + (s + 1) dt is at or after the frame time
    double sub_f = ceil((due_t - 1e-12 - t) / dt - 1.0);
    if (!(sub_f >= 0.0)) sub_f = 0.0;
    if (!(sub_f < static_cast<double>(S))) continue;  // not due in this step
    const int sj = static_cast<int>(sub_f);
    ++due_n;
    // frame j uses values 6j+1 .. 6j+6 of the stream at this step's counter
    const uint64_t base = counter + 6ULL * static_cast<uint64_t>(j);
    if (!a.rec_active[static_cast<long long>(S) * i + sj]) continue;
    double u[6];
    u[0] = counter_uniform(key, base + 1);
    if (!(u[0] >= c.drop_prob)) continue;  // dropped
    for (int k = 1; k < 6; ++k) u[k] = counter_uniform(key, base + 1 + k);
    // Box-Muller: two pairs -> 4 normals, 3 used (order of the NumPy concatenate)
    const double r0 = sqrt(-2.0 * log1p(-u[2])), r1 = sqrt(-2.0 * log1p(-u[3]));
    const double a0 = (2.0 * 3.141592653589793) * u[4], a1 = (2.0 * 3.141592653589793) * u[5];
    const double normal[3] = {r0 * cos(a0), r1 * cos(a1), r0 * sin(a0)};
    int64_t slot = (head0 + taken) % ring;
    const long long row = static_cast<long long>(ring) * i + slot;
    const double t_cap = t + dt * static_cast<double>(sj + 1);
    a.cam_t[row] = t_cap;
    const double jitter = -c.jitter_s * log1p(-u[1]);
    a.cam_arrival[row] = t_cap + c.latency_s + jitter;
    const double* rp = a.rec_pos + (static_cast<long long>(S) * i + sj) * 3;
    for (int k = 0; k < 3; ++k) a.cam_pos[3 * row + k] = rp[k] + c.noise_m * normal[k];
    ++taken;
  }
  a.cam_count[i] = count0 + due_n;
  a.cam_counter[i] = counter + 6ULL * static_cast<uint64_t>(F);
  a.cam_head[i] = head0 + taken;
  a.t[i] = t + c.step_s;
}

// Arrays of the observation (observe_world).
struct ObsArrays {
  const double* q;            // [N, dof]
  const double* qd;           // [N, dof]
  const double* t;            // [N]
  const double* cam_t;        // [N, ring]
  const double* cam_arrival;  // [N, ring]
  const double* cam_pos;      // [N, ring, 3]
  const int64_t* cam_head;    // [N]
  const float* low;           // [2 dof + 5 history]
  const float* high;          // [2 dof + 5 history]
  float* out;                 // [N, 2 dof + 5 history]
  int dof, ring, history;
};

PR_ENV_HD float clip_obs(double x, float lo, float hi) {
  const float v = static_cast<float>(x);  // build_observation casts, then np.clip in float32 (NaN stays NaN)
  return v < lo ? lo : (v > hi ? hi : v);
}

// Observation row i: TableTennisVectorEnv._observation = clip(build_observation(q, qd, detections())), with
// detections() the `history` most recent visible frames, newest first (the ring holds frames in capture order,
// so a backward scan from the head finds them). Invalid entries: zeros.
PR_ENV_HD void observe_world(const ObsArrays& o, long long i) {
  const int dof = o.dof, ring = o.ring, k = o.history, width = 2 * dof + 5 * k;
  float* out = o.out + static_cast<long long>(width) * i;
  for (int j = 0; j < dof; ++j) {
    out[j] = clip_obs(o.q[static_cast<long long>(dof) * i + j], o.low[j], o.high[j]);
    out[dof + j] = clip_obs(o.qd[static_cast<long long>(dof) * i + j], o.low[dof + j], o.high[dof + j]);
  }
  const double t = o.t[i], now = t + 1e-12;
  const int64_t head = o.cam_head[i];
  const long long base = static_cast<long long>(ring) * i;
  int found = 0;
  for (int b = 0; b < ring && found < k; ++b) {
    const long long slot = base + ((head - 1 - b) % ring + ring) % ring;
    if (!(o.cam_arrival[slot] <= now)) continue;
    const int c = 2 * dof + 5 * found;
    for (int d = 0; d < 3; ++d) out[c + d] = clip_obs(o.cam_pos[3 * slot + d], o.low[c + d], o.high[c + d]);
    out[c + 3] = clip_obs(t - o.cam_t[slot], o.low[c + 3], o.high[c + 3]);
    out[c + 4] = clip_obs(1.0, o.low[c + 4], o.high[c + 4]);
    ++found;
  }
  for (; found < k; ++found) {
    const int c = 2 * dof + 5 * found;
    for (int d = 0; d < 3; ++d) out[c + d] = clip_obs(0.0, o.low[c + d], o.high[c + d]);
    out[c + 3] = clip_obs(0.0, o.low[c + 3], o.high[c + 3]);
    out[c + 4] = clip_obs(0.0, o.low[c + 4], o.high[c + 4]);
  }
}

// One policy step of world i (physics; then the camera when `cam` is given and a.t is set).
PR_ENV_HD void step_world(const WorldModel& m, const WorldArrays& a, long long i, const CameraModel* cam = nullptr) {
  const int dof = m.dof;
  const double dt = m.dt_s;
  const double r_ball = m.ball_radius_m;
  double q[rb::kMaxChainJoints], qd[rb::kMaxChainJoints], cmd[rb::kMaxChainJoints];
  for (int j = 0; j < dof; ++j) {
    q[j] = a.q[dof * i + j];
    qd[j] = a.qd[dof * i + j];
    cmd[j] = a.cmd[dof * i + j];
  }
  double y[9];
  for (int c = 0; c < 9; ++c) y[c] = a.ball[9 * i + c];
  WorldState w;
  w.phase = a.phase[i];
  w.hits = a.hits[i];
  w.outcome = a.outcome[i];
  w.touched = a.touched[i] != 0;
  w.landed = a.landed[i] != 0;
  w.terminated = w.ev_hit = w.ev_landed = w.ev_limit = false;
  w.reward = 0.0;
  w.landing[0] = a.landing[2 * i];
  w.landing[1] = a.landing[2 * i + 1];
  RallySink sink{&w, &m};

  double pad_p[3], pad_n[3], new_p[3], new_n[3];
  double cos_q[rb::kMaxChainJoints], sin_q[rb::kMaxChainJoints];
  for (int j = 0; j < dof; ++j) {
    cos_q[j] = m.chain.joint_type[j] == rb::kPrismatic ? 1.0 : cos(q[j]);
    sin_q[j] = m.chain.joint_type[j] == rb::kPrismatic ? 0.0 : sin(q[j]);
  }
  paddle_pose_fast(m.chain, m.shape, q, pad_p, pad_n, cos_q, sin_q);
  for (int s = 0; s < m.substeps; ++s) {
    const bool active = w.phase != kDone;
    // robot
    bool over_any = false;
    for (int j = 0; j < dof; ++j) {
      const double lim = m.a_max[j] * dt;
      qd[j] += clampd(cmd[j] - qd[j], -lim, lim);
      const double qn = q[j] + qd[j] * dt;
      const bool over = qn < m.q_min[j] || qn > m.q_max[j];
      const double q_old = q[j];
      q[j] = clampd(qn, m.q_min[j], m.q_max[j]);
      if (m.chain.joint_type[j] != rb::kPrismatic) advance_sincos(cos_q[j], sin_q[j], q[j], q_old);
      if (over) {
        qd[j] = 0.0;
        over_any = true;
      }
    }
    paddle_pose_fast(m.chain, m.shape, q, new_p, new_n, cos_q, sin_q);
    bool outside = false;
    for (int k = 0; k < 3; ++k) outside = outside || new_p[k] < m.ws_min_m[k] || new_p[k] > m.ws_max_m[k];
    const bool violation = active && (over_any || outside);
    double pad_v[3];
    for (int k = 0; k < 3; ++k) pad_v[k] = (new_p[k] - pad_p[k]) / dt;
    // ball
    double old[9];
    for (int c = 0; c < 9; ++c) old[c] = y[c];
    if (w.phase == kIncoming || w.phase == kReturning) {
      double t_stop;
      bl::advance_step(y, dt, m.ball, 0.0, static_cast<int>(bl::kNone), &t_stop, sink);
    }
    // paddle contact
    double rel0[3], rel1[3];
    for (int k = 0; k < 3; ++k) {
      rel0[k] = old[k] - pad_p[k];
      rel1[k] = y[k] - new_p[k];
    }
    const double d0 = dot3(rel0, pad_n), d1 = dot3(rel1, new_n);
    const double side = d0 >= 0.0 ? 1.0 : -1.0;
    const bool crossing = side * d0 > r_ball * 0.5 && side * d1 < r_ball;
    double inpl[3];
    for (int k = 0; k < 3; ++k) inpl[k] = rel1[k] - d1 * new_n[k];
    const bool in_plane = norm3(inpl) < m.paddle_radius_m;
    if (crossing && in_plane && w.phase == kIncoming && !w.touched) {
      const double den = side * (d0 - d1);
      const double frac = clampd((side * d0 - r_ball) / (den > 1e-12 ? den : 1e-12), 0.0, 1.0);
      double at[9], surf_p[3], surf_n[3];
      for (int c = 0; c < 9; ++c) at[c] = old[c] + frac * (y[c] - old[c]);
      for (int k = 0; k < 3; ++k) {
        surf_p[k] = pad_p[k] + frac * (new_p[k] - pad_p[k]);
        surf_n[k] = pad_n[k] + frac * (new_n[k] - pad_n[k]);
      }
      const double nn = norm3(surf_n);
      for (int k = 0; k < 3; ++k) surf_n[k] /= nn;
      double rel[3];
      for (int k = 0; k < 3; ++k) rel[k] = at[k] - surf_p[k];
      const double dist = dot3(rel, surf_n);
      for (int k = 0; k < 3; ++k) at[k] += (side * r_ball - dist) * surf_n[k];
      paddle_impulse(at, surf_n, pad_v, side, r_ball, m.paddle_restitution, m.paddle_friction);
      bl::rk4_step(at, (1.0 - frac) * dt, m.ball, y);
      w.touched = true;
      w.phase = kReturning;
      w.reward += m.reward_hit;
      w.ev_hit = true;
    }
    for (int k = 0; k < 3; ++k) {
      pad_p[k] = new_p[k];
      pad_n[k] = new_n[k];
    }
    // planes (core.TableTennisWorld._planes)
    if (w.phase == kIncoming && y[0] > m.miss_plane_x_m) end_world(w, kMissed);
    if (w.phase == kReturning && y[0] < m.human_plane_x_m) {
      if (w.landed) w.phase = kWaiting;  // frozen until the human answers
      else end_world(w, kOut);
    }
    if ((w.phase == kIncoming || w.phase == kReturning) && norm3(y + 3) < m.slow_ball_mps)
      end_world(w, w.touched ? kOut : kMissed);
    if (violation && w.phase != kDone) {
      w.reward -= m.penalty_limit;
      end_world(w, kLimit);
      w.ev_limit = true;
    }
    double* rp = a.rec_pos + (static_cast<long long>(m.substeps) * i + s) * 3;
    for (int k = 0; k < 3; ++k) rp[k] = y[k];
    a.rec_active[static_cast<long long>(m.substeps) * i + s] = w.phase != kDone && w.phase != kServing;
  }
  // shaping: paddle close to the incoming ball on the robot's side; action cost
  if (w.phase == kIncoming && y[0] > 0.0) {
    double d[3];
    for (int k = 0; k < 3; ++k) d[k] = y[k] - pad_p[k];
    const double u = norm3(d) / m.shaping_length_m;
    w.reward += m.reward_shaping * exp(-0.5 * (u * u));
  }
  double cost = 0.0;
  for (int j = 0; j < dof; ++j) {
    const double u = cmd[j] / m.v_max[j];
    cost += u * u;
  }
  w.reward -= m.action_cost * cost;
  if (w.phase == kDone) w.terminated = true;

  for (int j = 0; j < dof; ++j) {
    a.q[dof * i + j] = q[j];
    a.qd[dof * i + j] = qd[j];
  }
  for (int c = 0; c < 9; ++c) a.ball[9 * i + c] = y[c];
  a.phase[i] = w.phase;
  a.hits[i] = w.hits;
  a.outcome[i] = w.outcome;
  a.touched[i] = w.touched;
  a.landed[i] = w.landed;
  a.landing[2 * i] = w.landing[0];
  a.landing[2 * i + 1] = w.landing[1];
  a.reward[i] = w.reward;
  a.terminated[i] = w.terminated;
  a.ev_hit[i] = w.ev_hit;
  a.ev_landed[i] = w.ev_landed;
  a.ev_limit[i] = w.ev_limit;
  if (cam != nullptr && a.t != nullptr) camera_world(m, *cam, a, i);
}

}  // namespace robot_rt::envs
