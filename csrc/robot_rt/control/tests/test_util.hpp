// Shared helpers of the control unit tests: a seeded random source and random joint limits / models.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

#include "safety.hpp"
#include "stop.hpp"

namespace robot_rt::control::testing {

// Deterministic per test (a failure reproduces), different per test case (seed argument).
class Random {
 public:
  explicit Random(std::uint64_t seed) : engine_(seed) {}
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(engine_); }
  int integer(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(engine_); }
  bool coin(double p_true = 0.5) { return std::bernoulli_distribution(p_true)(engine_); }
  std::uint32_t bits() { return static_cast<std::uint32_t>(engine_()); }

 private:
  std::mt19937_64 engine_;
};

// Limits spanning the robots of the repository (rail in metres, wrists in radians), randomised.
inline JointLimits random_limits(Random& rng) {
  JointLimits l;
  const double centre = rng.uniform(-1.0, 1.0);
  const double half = rng.uniform(0.05, 3.2);
  l.position_min = centre - half;
  l.position_max = centre + half;
  l.velocity = rng.uniform(0.2, 8.0);
  l.acceleration = rng.uniform(2.0, 60.0);
  l.jerk = rng.uniform(50.0, 2000.0);
  return l;
}

inline RobotModel random_model(Random& rng, int dof) {
  RobotModel m;
  m.dof = dof;
  for (int i = 0; i < dof; ++i) {
    m.limits[i] = random_limits(rng);
    m.home_si[i] = 0.5 * (m.limits[i].position_min + m.limits[i].position_max);
  }
  return m;
}

// The hard invariant every commanded state satisfies (kLimitSlack: rounding only).
inline bool state_within(const AxisState& s, const JointLimits& l) { return within_limits(s, l); }

// One prismatic joint whose position is the paddle's height (limits +-2 m, 2 m/s, 10 m/s^2, 200 m/s^3), in the box
// x, y in [-1, 1], z in [floor_m, 1.8]: workspace forecasts and guards in one dimension.
inline RobotModel lift_model(double floor_m) {
  RobotModel m;
  m.dof = 1;
  m.limits[0] = JointLimits{-2.0, 2.0, 2.0, 10.0, 200.0};
  const double up[3] = {0.0, 0.0, 1.0}, zero[3] = {0.0, 0.0, 0.0};
  m.chain.set_joint(0, robot_rt::robot::kPrismatic, up, zero, zero);
  m.chain.set_paddle(zero, zero);
  m.has_chain = true;
  m.has_workspace = true;
  const double lo[3] = {-1.0, -1.0, floor_m}, hi[3] = {1.0, 1.0, 1.8};
  std::copy(lo, lo + 3, m.workspace_min_m);
  std::copy(hi, hi + 3, m.workspace_max_m);
  return m;
}

}  // namespace robot_rt::control::testing
