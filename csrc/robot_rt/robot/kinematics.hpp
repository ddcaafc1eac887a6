// Forward kinematics of a serial chain of prismatic and revolute joints: header-only, no heap, PR_HD.
//
// Mirrors robot_rt/robot/kinematics.py exactly: each joint i applies its fixed origin transform
// (translation origin_xyz_m, rotation R = Rz(yaw) Ry(pitch) Rx(roll) from origin_rpy_rad, as in URDF)
// followed by its motion, a rotation by q_i about `axis` (revolute, Rodrigues) or a translation q_i * axis
// (prismatic). The paddle frame is a fixed transform after the last joint; its z axis is the face normal.
//
// The chain is described by ChainModel<T>, filled from RobotDescription.chain_arrays() (Python) or by
// set_joint()/set_paddle(); fixed rotations are precomputed once so a pose costs dof small matrix products.
// Every function is PR_HD (host + device under nvcc) and works for T = float or double.
#pragma once

#include <cmath>

#ifndef PR_HD
#ifdef __CUDACC__
#define PR_HD __host__ __device__
#else
#define PR_HD
#endif
#endif

namespace robot_rt::robot {

constexpr int kMaxChainJoints = 16;
enum JointType : int { kPrismatic = 0, kRevolute = 1 };

template <typename T>
struct Transform {
  T r[3][3];  // rotation (columns are the frame's axes in the parent frame)
  T p[3];     // origin, m
};

template <typename T>
PR_HD inline Transform<T> identity_transform() {
  Transform<T> t{};
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) t.r[i][j] = i == j ? T(1) : T(0);
    t.p[i] = T(0);
  }
  return t;
}

// R = Rz(yaw) Ry(pitch) Rx(roll), the URDF / kinematics.py convention.
template <typename T>
PR_HD inline void rpy_matrix(T roll, T pitch, T yaw, T out[3][3]) {
  const T cr = std::cos(roll), sr = std::sin(roll), cp = std::cos(pitch), sp = std::sin(pitch);
  const T cy = std::cos(yaw), sy = std::sin(yaw);
  out[0][0] = cy * cp;
  out[0][1] = cy * sp * sr - sy * cr;
  out[0][2] = cy * sp * cr + sy * sr;
  out[1][0] = sy * cp;
  out[1][1] = sy * sp * sr + cy * cr;
  out[1][2] = sy * sp * cr - cy * sr;
  out[2][0] = -sp;
  out[2][1] = cp * sr;
  out[2][2] = cp * cr;
}

// a * b
template <typename T>
PR_HD inline Transform<T> compose(const Transform<T>& a, const Transform<T>& b) {
  Transform<T> c;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) c.r[i][j] = a.r[i][0] * b.r[0][j] + a.r[i][1] * b.r[1][j] + a.r[i][2] * b.r[2][j];
    c.p[i] = a.r[i][0] * b.p[0] + a.r[i][1] * b.p[1] + a.r[i][2] * b.p[2] + a.p[i];
  }
  return c;
}

// Rodrigues: I + sin(q) K + (1 - cos(q)) K^2 for the unit axis k.
template <typename T>
PR_HD inline void axis_angle(const T k[3], T angle, T out[3][3]) {
  const T s = std::sin(angle), c1 = T(1) - std::cos(angle);
  const T K[3][3] = {{T(0), -k[2], k[1]}, {k[2], T(0), -k[0]}, {-k[1], k[0], T(0)}};
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      const T kk = K[i][0] * K[0][j] + K[i][1] * K[1][j] + K[i][2] * K[2][j];
      out[i][j] = (i == j ? T(1) : T(0)) + s * K[i][j] + c1 * kk;
    }
  }
}

template <typename T>
struct ChainModel {
  int dof = 0;
  int joint_type[kMaxChainJoints] = {};  // JointType
  T axis[kMaxChainJoints][3] = {};       // unit vector in the joint frame
  Transform<T> origin[kMaxChainJoints];  // fixed transform from the parent frame
  Transform<T> paddle;                   // fixed transform after the last joint

  // Returns false when i is out of range or the axis is not a unit vector.
  PR_HD bool set_joint(int i, int type, const T axis_xyz[3], const T xyz_m[3], const T rpy_rad[3]) {
    if (i < 0 || i >= kMaxChainJoints) return false;
    const T n = std::sqrt(axis_xyz[0] * axis_xyz[0] + axis_xyz[1] * axis_xyz[1] + axis_xyz[2] * axis_xyz[2]);
    if (!(std::fabs(n - T(1)) < T(1e-4))) return false;
    joint_type[i] = type;
    for (int k = 0; k < 3; ++k) {
      axis[i][k] = axis_xyz[k];
      origin[i].p[k] = xyz_m[k];
    }
    rpy_matrix(rpy_rad[0], rpy_rad[1], rpy_rad[2], origin[i].r);
    if (i + 1 > dof) dof = i + 1;
    return true;
  }

  PR_HD void set_paddle(const T xyz_m[3], const T rpy_rad[3]) {
    for (int k = 0; k < 3; ++k) paddle.p[k] = xyz_m[k];
    rpy_matrix(rpy_rad[0], rpy_rad[1], rpy_rad[2], paddle.r);
  }
};

// Motion of joint i at position q (m or rad).
template <typename T>
PR_HD inline Transform<T> joint_motion(const ChainModel<T>& model, int i, T q) {
  Transform<T> m = identity_transform<T>();
  if (model.joint_type[i] == kRevolute) {
    axis_angle(model.axis[i], q, m.r);
  } else {
    for (int k = 0; k < 3; ++k) m.p[k] = q * model.axis[i][k];
  }
  return m;
}

// Paddle pose in the table frame for joint positions q[0..dof).
template <typename T>
PR_HD inline Transform<T> forward_kinematics(const ChainModel<T>& model, const T* q) {
  Transform<T> current = identity_transform<T>();
  for (int i = 0; i < model.dof; ++i) {
    current = compose(current, model.origin[i]);
    current = compose(current, joint_motion(model, i, q[i]));
  }
  return compose(current, model.paddle);
}

// Paddle centre (m) and forehand face normal (unit) in the table frame.
template <typename T>
PR_HD inline void paddle_position_normal(const ChainModel<T>& model, const T* q, T position_m[3], T normal[3]) {
  const Transform<T> pose = forward_kinematics(model, q);
  for (int k = 0; k < 3; ++k) {
    position_m[k] = pose.p[k];
    normal[k] = pose.r[k][2];
  }
}

// Geometric Jacobian of the paddle frame: jac[6][dof] (row-major, stride `dof`), rows 0-2 the linear velocity
// of the paddle origin, rows 3-5 the angular velocity, both in the table frame, per unit joint velocity:
// column i is a_i x (p - o_i) / a_i for a revolute joint, a_i / 0 for a prismatic one, with a_i = R_i axis_i
// and o_i the origin of joint i's frame after its motion (the URDF convention: the axis is expressed in the
// joint frame). Returns the paddle pose as forward_kinematics does; one pass over the chain.
template <typename T>
PR_HD inline Transform<T> paddle_jacobian(const ChainModel<T>& model, const T* q, T* jac) {
  T axis_w[kMaxChainJoints][3], origin_w[kMaxChainJoints][3];
  Transform<T> current = identity_transform<T>();
  for (int i = 0; i < model.dof; ++i) {
    current = compose(current, model.origin[i]);
    current = compose(current, joint_motion(model, i, q[i]));
    for (int r = 0; r < 3; ++r) {
      axis_w[i][r] = current.r[r][0] * model.axis[i][0] + current.r[r][1] * model.axis[i][1] +
                     current.r[r][2] * model.axis[i][2];
      origin_w[i][r] = current.p[r];
    }
  }
  const Transform<T> pose = compose(current, model.paddle);
  const int n = model.dof;
  for (int i = 0; i < n; ++i) {
    const T* a = axis_w[i];
    if (model.joint_type[i] == kRevolute) {
      const T d[3] = {pose.p[0] - origin_w[i][0], pose.p[1] - origin_w[i][1], pose.p[2] - origin_w[i][2]};
      jac[0 * n + i] = a[1] * d[2] - a[2] * d[1];
      jac[1 * n + i] = a[2] * d[0] - a[0] * d[2];
      jac[2 * n + i] = a[0] * d[1] - a[1] * d[0];
      for (int r = 0; r < 3; ++r) jac[(3 + r) * n + i] = a[r];
    } else {
      for (int r = 0; r < 3; ++r) {
        jac[r * n + i] = a[r];
        jac[(3 + r) * n + i] = T(0);
      }
    }
  }
  return pose;
}

}  // namespace robot_rt::robot
