// robot_rt._control: the PYBIND11_MODULE; every binding group registers itself (registry.hpp).
// This file holds the core group (order 0): RobotModel, RobotDriver, SimDriver, SafetyFilter, ControlLoop,
// kinematics. Thin wrappers only: argument checks, NumPy conversion, GIL release around blocking calls.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "control_loop.hpp"
#include "driver.hpp"
#include "otg.hpp"
#include "reflexes.hpp"
#include "servo.hpp"
#include "registry.hpp"
#include "safety.hpp"
#include "sim_driver.hpp"
#include "stop.hpp"

namespace py = pybind11;

namespace robot_rt::control {

namespace {

using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

std::vector<double> vec(const DArray& a, const char* name, py::ssize_t n) {
  if (a.ndim() != 1 || (n >= 0 && a.shape(0) != n))
    throw py::value_error(std::string(name) + ": expected a 1-D array of length " + std::to_string(n) + ", got shape " +
                          std::to_string(a.ndim() ? a.shape(0) : 0));
  return std::vector<double>(a.data(), a.data() + a.shape(0));
}

RobotModel make_model(const DArray& position_min, const DArray& position_max, const DArray& velocity_limit,
                      const DArray& acceleration_limit, const DArray& jerk_limit, const DArray& home,
                      py::object joint_type, py::object axis, py::object origin_xyz_m, py::object origin_rpy_rad,
                      py::object paddle_xyz_m, py::object paddle_rpy_rad, py::object workspace_min_m,
                      py::object workspace_max_m, py::object soft_margin, double paddle_radius_m) {
  const py::ssize_t dof = position_min.ndim() == 1 ? position_min.shape(0) : -1;
  if (dof <= 0 || dof > kMaxDof)
    throw py::value_error("position_min: expected a 1-D array with 1.." + std::to_string(kMaxDof) + " joints");
  RobotModel m;
  m.dof = static_cast<int>(dof);
  const auto lo = vec(position_min, "position_min", dof), hi = vec(position_max, "position_max", dof);
  const auto v = vec(velocity_limit, "velocity_limit", dof), a = vec(acceleration_limit, "acceleration_limit", dof);
  const auto j = vec(jerk_limit, "jerk_limit", dof), h = vec(home, "home", dof);
  for (int i = 0; i < m.dof; ++i) {
    if (!(lo[i] < hi[i]) || !(v[i] > 0) || !(a[i] > 0) || !(j[i] > 0) || !std::isfinite(hi[i]) ||
        !std::isfinite(lo[i]) || !std::isfinite(v[i]) || !std::isfinite(a[i]) || !std::isfinite(j[i]))
      throw py::value_error("limits: joint " + std::to_string(i) +
                            " needs finite position_min < position_max and positive velocity/acceleration/jerk limits");
    m.limits[i] = JointLimits{lo[i], hi[i], v[i], a[i], j[i]};
    m.home_si[i] = h[i];
  }
  if (!soft_margin.is_none()) {
    const auto margin = vec(DArray::ensure(soft_margin), "soft_margin", dof);
    for (int i = 0; i < m.dof; ++i) {
      if (!(margin[i] >= 0.0) || !(2.0 * margin[i] < hi[i] - lo[i]))
        throw py::value_error("soft_margin: joint " + std::to_string(i) +
                              " needs 0 <= margin < half its position range, got " + std::to_string(margin[i]));
      m.soft_margin_si[i] = margin[i];
    }
  }
  if (!joint_type.is_none()) {
    auto jt = py::array_t<int, py::array::c_style | py::array::forcecast>::ensure(joint_type);
    auto ax = DArray::ensure(axis), ox = DArray::ensure(origin_xyz_m), orpy = DArray::ensure(origin_rpy_rad);
    auto px = DArray::ensure(paddle_xyz_m), prpy = DArray::ensure(paddle_rpy_rad);
    if (!jt || jt.size() != dof || !ax || ax.size() != 3 * dof || !ox || ox.size() != 3 * dof || !orpy ||
        orpy.size() != 3 * dof || !px || px.size() != 3 || !prpy || prpy.size() != 3)
      throw py::value_error("chain: expected joint_type [dof], axis/origin_xyz_m/origin_rpy_rad [dof, 3], paddle [3]");
    for (int i = 0; i < m.dof; ++i) {
      if (!m.chain.set_joint(i, jt.data()[i], ax.data() + 3 * i, ox.data() + 3 * i, orpy.data() + 3 * i))
        throw py::value_error("axis: joint " + std::to_string(i) + " axis is not a unit vector");
    }
    m.chain.set_paddle(px.data(), prpy.data());
    m.has_chain = true;
  }
  if (!workspace_min_m.is_none()) {
    auto wmin = DArray::ensure(workspace_min_m), wmax = DArray::ensure(workspace_max_m);
    if (!wmin || !wmax || wmin.size() != 3 || wmax.size() != 3)
      throw py::value_error("workspace_min_m, workspace_max_m: expected 3 values each");
    for (int k = 0; k < 3; ++k) {
      m.workspace_min_m[k] = wmin.data()[k];
      m.workspace_max_m[k] = wmax.data()[k];
      if (!(m.workspace_min_m[k] < m.workspace_max_m[k])) throw py::value_error("workspace_min_m must be below max");
    }
    m.has_workspace = true;
  }
  if (!(paddle_radius_m >= 0.0 && paddle_radius_m <= 1.0)) {
    throw py::value_error("paddle_radius_m: expected a blade radius in [0, 1] m");
  }
  m.paddle_radius_m = paddle_radius_m;
  return m;
}

py::array_t<double> arr(const double* data, int n) {
  py::array_t<double> out(n);
  std::memcpy(out.mutable_data(), data, sizeof(double) * static_cast<std::size_t>(n));
  return out;
}

py::dict observation_dict(const Observation& o, std::uint64_t seq) {
  py::dict d;
  d["seq"] = seq;
  d["tick"] = o.tick;
  d["stamp_ns"] = o.stamp_ns;
  d["flags"] = o.flags;
  d["lifecycle"] = o.lifecycle;
  d["stop_reasons"] = o.stop_reasons;
  d["recovered_tick"] = o.recovered_tick;
  d["state_stamp_ns"] = o.state_stamp_ns;
  d["measured_position"] = arr(o.measured_position_si, o.dof);
  d["measured_velocity"] = arr(o.measured_velocity_si, o.dof);
  d["command_position"] = arr(o.command_position_si, o.dof);
  d["command_velocity"] = arr(o.command_velocity_si, o.dof);
  d["command_acceleration"] = arr(o.command_acceleration_si, o.dof);
  d["target_position"] = arr(o.target_position_si, o.dof);
  d["balls_total"] = o.balls_total;
  if (o.balls_total > 0) {
    py::dict b;
    b["stamp_ns"] = o.latest_ball.stamp_ns;
    b["camera_id"] = o.latest_ball.camera_id;
    b["frame"] = o.latest_ball.frame;
    b["position_m"] = arr(o.latest_ball.position_m, 3);
    b["confidence"] = o.latest_ball.confidence;
    d["latest_ball"] = b;
  } else {
    d["latest_ball"] = py::none();
  }
  // recent ball observations, newest first: stamp_ns [n] (exposure, CLOCK_MONOTONIC), position_m [n, 3]
  const py::ssize_t n = o.recent_count;
  py::array_t<std::int64_t> stamps(n);
  py::array_t<double> positions({n, static_cast<py::ssize_t>(3)});
  py::array_t<double> confidence(n);
  for (py::ssize_t k = 0; k < n; ++k) {
    stamps.mutable_at(k) = o.recent_balls[k].stamp_ns;
    confidence.mutable_at(k) = o.recent_balls[k].confidence;
    for (int c = 0; c < 3; ++c) positions.mutable_at(k, c) = o.recent_balls[k].position_m[c];
  }
  py::dict recent;
  recent["stamp_ns"] = stamps;
  recent["position_m"] = positions;
  recent["confidence"] = confidence;
  d["recent_balls"] = recent;
  return d;
}

py::dict histogram_dict(const Histogram& h) {
  py::dict d;
  d["count"] = h.count();
  d["mean_ns"] = h.mean_ns();
  d["p50_ns"] = h.quantile_ns(0.5);
  d["p99_ns"] = h.quantile_ns(0.99);
  d["p999_ns"] = h.quantile_ns(0.999);
  d["max_ns"] = h.max_ns();
  d["above_1ms"] = h.count_above_ns(1'000'000);
  py::array_t<std::uint64_t> bins(Histogram::kBins + 1);
  auto* b = bins.mutable_data();
  for (int i = 0; i <= Histogram::kBins; ++i) b[i] = h.bin(i);
  d["bins_us"] = bins;  // bin i counts values in [i, i+1) us; the last bin is the overflow
  return d;
}

std::int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// ControlLoop.counters(): the loop counters, the event counts by code and the run log statistics.
py::dict counters_dict(const ControlLoop& loop) {
  const LoopCounters c = loop.counters();
  py::dict d;
  d["ticks"] = c.ticks;
  d["deadline_misses"] = c.deadline_misses;
  d["skipped_ticks"] = c.skipped_ticks;
  d["late_ticks"] = c.late_ticks;
  d["sensor_dropout_ticks"] = c.sensor_dropout_ticks;
  d["commands_accepted"] = c.commands_accepted;
  d["commands_rejected"] = c.commands_rejected;
  d["commands_path_held"] = c.commands_path_held;
  d["commands_dropped"] = c.commands_dropped;
  d["stop_ticks"] = c.stop_ticks;
  d["commands_discarded"] = c.commands_discarded;
  d["muted_ticks"] = c.muted_ticks;
  d["safety_override_ticks"] = c.safety_override_ticks;
  d["driver_write_failures"] = c.driver_write_failures;
  d["events_dropped"] = c.events_dropped;
  d["ball_observations"] = c.ball_observations;
  py::dict ev;
  for (int i = 0; i < kEventCount; ++i) {
    if (c.event_counts[i]) ev[py::int_(i)] = c.event_counts[i];
  }
  d["event_counts"] = ev;
  const RunLogStats s = loop.log_stats();
  py::dict lg;
  lg["records_written"] = s.records_written;
  lg["records_dropped"] = s.records_dropped;
  lg["chunks_written"] = s.chunks_written;
  lg["bytes_written"] = s.bytes_written;
  lg["fsyncs"] = s.fsyncs;
  lg["write_errors"] = s.write_errors;
  d["log"] = lg;
  return d;
}

// SafetyFilter.run(): one tick per target row; returns (states [T, dof, 4], override masks [T], verdicts [T]).
py::tuple safety_filter_run(SafetyFilter& f, const DArray& targets, py::object stop_mask, py::object target_velocity) {
  const int dof = f.dof();
  if (targets.ndim() != 2 || targets.shape(1) != dof)
    throw py::value_error("targets: expected shape [T, " + std::to_string(dof) + "]");
  const py::ssize_t T = targets.shape(0);
  py::array_t<bool, py::array::c_style | py::array::forcecast> stop;
  const bool has_stop = !stop_mask.is_none(), has_tv = !target_velocity.is_none();
  if (has_stop) {
    stop = py::array_t<bool, py::array::c_style | py::array::forcecast>::ensure(stop_mask);
    if (!stop || stop.size() != T) throw py::value_error("stop_mask: expected shape [T]");
  }
  DArray tv;
  if (has_tv) {
    tv = DArray::ensure(target_velocity);
    if (!tv || tv.ndim() != 2 || tv.shape(0) != T || tv.shape(1) != dof)
      throw py::value_error("target_velocity: expected the shape of targets");
  }
  py::array_t<double> out({T, py::ssize_t(dof), py::ssize_t(4)});
  py::array_t<std::uint32_t> overridden(T);
  py::array_t<std::uint32_t> verdicts(T);
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    for (py::ssize_t t = 0; t < T; ++t) {
      double p[kMaxDof], v[kMaxDof];
      for (int i = 0; i < dof; ++i) {
        p[i] = targets.data()[t * dof + i];
        v[i] = has_tv ? tv.data()[t * dof + i] : 0.0;
      }
      int joint;
      double value;
      const std::uint32_t verdict = f.validate_target(p, has_tv ? v : nullptr, joint, value);
      verdicts.mutable_data()[t] = verdict;
      const bool s = (has_stop && stop.data()[t]) || (verdict & kTargetRejected);
      overridden.mutable_data()[t] = f.step(s ? nullptr : p, s ? nullptr : v, s);
      for (int i = 0; i < dof; ++i) {
        const AxisState& st = f.state(i);
        double* r = o + (t * dof + i) * 4;
        r[0] = st.p;
        r[1] = st.v;
        r[2] = st.a;
        r[3] = f.last_jerk(i);
      }
    }
  }
  return py::make_tuple(out, overridden, verdicts);
}

// otg_trajectory(): ticks of the OTG alone until the joint is exactly on the reference (p, v within 1e-9, a within
// 1e-9 of zero) or max_steps.
py::tuple otg_trajectory(double p, double v, double a, double target_position, double target_velocity,
                         const DArray& limits, double dt_s, int max_steps) {
  const auto l = vec(limits, "limits", 3);
  if (!(l[0] > 0) || !(l[1] > 0) || !(l[2] > 0) || !(dt_s > 0))
    throw py::value_error("limits: expected [V, A, J] > 0 and dt_s > 0");
  if (!std::isfinite(p) || !std::isfinite(v) || !std::isfinite(a) || !std::isfinite(target_position) ||
      !std::isfinite(target_velocity))
    throw py::value_error("p, v, a, target_position, target_velocity: expected finite values");
  const JointLimits lim{-1e300, 1e300, l[0], l[1], l[2]};
  std::vector<double> rows;
  AxisState s{p, v, a};
  long reached = -1;
  {
    py::gil_scoped_release release;
    for (long k = 0; k <= max_steps; ++k) {
      const OtgTarget t{target_position + target_velocity * dt_s * static_cast<double>(k), target_velocity};
      if (std::fabs(s.p - t.position) <= 1e-9 && std::fabs(s.v - t.velocity) <= 1e-9 && std::fabs(s.a) <= 1e-9) {
        reached = k;
        break;
      }
      if (k == max_steps) break;
      const double j = otg_jerk(s, t, lim, dt_s);
      s = integrate(s, j, dt_s);
      rows.insert(rows.end(), {s.p, s.v, s.a, j});
    }
  }
  py::array_t<double> out({py::ssize_t(rows.size() / 4), py::ssize_t(4)});
  std::copy(rows.begin(), rows.end(), out.mutable_data());
  return py::make_tuple(out, reached);
}

// Module constants: MAX_DOF, the clock, EVENT_CODES and TICK_FLAGS (the run log's vocabulary).
void bind_constants(py::module_& m) {
  m.attr("MAX_DOF") = kMaxDof;
  m.attr("MAX_BALL_OBSERVATIONS") = kMaxBallObservations;
  m.def("monotonic_ns", &monotonic_ns, "CLOCK_MONOTONIC in ns (the clock of every stamp in this module).");

  py::dict codes;
  const std::pair<const char*, int> code_list[] = {
      {"loop_start", kEventLoopStart},
      {"loop_stop", kEventLoopStop},
      {"non_finite_command", kEventNonFiniteCommand},
      {"target_clamped", kEventTargetClamped},
      {"workspace_target_rejected", kEventWorkspaceTarget},
      {"workspace_stop", kEventWorkspaceStop},
      {"watchdog_stop", kEventWatchdogStop},
      {"missing_policy", kEventMissingPolicy},
      {"estop", kEventEstop},
      {"estop_reset", kEventEstopReset},
      {"sensor_dropout", kEventSensorDropout},
      {"sensor_timeout_stop", kEventSensorTimeoutStop},
      {"sensor_recovered", kEventSensorRecovered},
      {"deadline_miss", kEventDeadlineMiss},
      {"driver_write_failed", kEventDriverWriteFailed},
      {"safety_override", kEventSafetyOverride},
      {"policy_exception", kEventPolicyException},
      {"policy_overrun", kEventPolicyOverrun},
      {"stop_complete", kEventStopComplete},
      {"late_wake", kEventLateWake},
      {"command_rejected", kEventCommandRejected},
      {"tracking_error_stop", kEventTrackingErrorStop},
      {"measurement_invalid_stop", kEventMeasurementStop},
      {"robot_fault_stop", kEventRobotFaultStop},
      {"link_loss_stop", kEventLinkLossStop},
      {"shutdown_stop", kEventShutdownStop},
      {"recover_requested", kEventRecoverRequested},
      {"recovered", kEventRecovered},
      {"recover_refused", kEventRecoverRefused},
      {"lifecycle", kEventLifecycle},
      {"commands_muted", kEventCommandsMuted},
      {"workspace_path_hold", kEventWorkspacePathHold},
  };
  for (const auto& [name, code] : code_list) codes[name] = code;
  m.attr("EVENT_CODES") = codes;
  m.def("is_external_event_code", &is_external_event_code, py::arg("code"),
        "Whether ControlLoop.push_event takes this code (the policy runner's events, link codes 100..199).");
  py::dict tick_flags;
  tick_flags["state_fresh"] = kTickStateFresh;
  tick_flags["stopping"] = kTickStopping;
  tick_flags["estop"] = kTickEstop;
  tick_flags["watchdog"] = kTickWatchdog;
  tick_flags["sensor_timeout"] = kTickSensorTimeout;
  tick_flags["deadline_miss"] = kTickDeadlineMiss;
  tick_flags["has_command"] = kTickHasCommand;
  tick_flags["workspace_stop"] = kTickWorkspaceStop;
  tick_flags["safety_override"] = kTickSafetyOverride;
  tick_flags["new_target"] = kTickNewTarget;
  tick_flags["link_loss"] = kTickLinkLoss;
  tick_flags["tracking_error"] = kTickTrackingError;
  tick_flags["measurement_invalid"] = kTickMeasurementInvalid;
  tick_flags["robot_fault"] = kTickRobotFault;
  tick_flags["muted"] = kTickMuted;
  tick_flags["part_muted"] = kTickPartMuted;
  tick_flags["shutdown"] = kTickShutdown;
  m.attr("TICK_FLAGS") = tick_flags;
  m.attr("TICK_LIFECYCLE_SHIFT") = kTickLifecycleShift;
  m.attr("TICK_STEPS_SHIFT") = kTickStepsShift;
  py::dict reasons;
  reasons["estop"] = static_cast<std::uint32_t>(kReasonEstop);
  reasons["watchdog"] = static_cast<std::uint32_t>(kReasonWatchdog);
  reasons["sensor_timeout"] = static_cast<std::uint32_t>(kReasonSensorTimeout);
  reasons["tracking_error"] = static_cast<std::uint32_t>(kReasonTrackingError);
  reasons["measurement_invalid"] = static_cast<std::uint32_t>(kReasonMeasurementInvalid);
  reasons["robot_fault"] = static_cast<std::uint32_t>(kReasonRobotFault);
  reasons["link_loss"] = static_cast<std::uint32_t>(kReasonLinkLoss);
  reasons["workspace"] = static_cast<std::uint32_t>(kReasonWorkspace);
  reasons["shutdown"] = static_cast<std::uint32_t>(kReasonShutdown);
  m.attr("STOP_REASONS") = reasons;
  py::dict blockers;
  blockers["robot_moving"] = kBlockRobotMoving;
  blockers["command_moving"] = kBlockCommandMoving;
  blockers["shutdown"] = kBlockShutdown;
  blockers["cancelled"] = kBlockCancelled;
  blockers["feedback_unsteady"] = kBlockFeedbackUnsteady;
  m.attr("RECOVERY_BLOCKERS") = blockers;
  py::dict lifecycle;
  lifecycle["inactive"] = static_cast<int>(Lifecycle::kInactive);
  lifecycle["active"] = static_cast<int>(Lifecycle::kActive);
  lifecycle["stopping"] = static_cast<int>(Lifecycle::kStopping);
  lifecycle["stopped"] = static_cast<int>(Lifecycle::kStopped);
  lifecycle["recovering"] = static_cast<int>(Lifecycle::kRecovering);
  m.attr("LIFECYCLE") = lifecycle;
  m.def("servo_error_bound", &servo_error_bound, py::arg("acceleration_limit"), py::arg("natural_frequency_rad_s"),
        py::arg("damping"),
        "Largest |commanded - measured| of the servo model (servo.hpp) for |commanded acceleration| <= the limit.");
  m.attr("SERVO_DEFAULT_FREQUENCY_HZ") = kServoDefaultFrequencyHz;
  m.attr("MAX_TRACKING_ERROR_RANGE_FRACTION") = kMaxTrackingErrorRangeFraction;
  m.attr("SERVO_DEFAULT_DAMPING") = kServoDefaultDamping;
  m.attr("SERVO_DRIVE_ACCELERATION_FACTOR") = kServoDriveAccelerationFactor;
  m.attr("SERVO_DRIVE_VELOCITY_FACTOR") = kServoDriveVelocityFactor;
}

// RobotModel: limits, kinematic chain and workspace box, with its forward kinematics.
void bind_robot_model(py::module_& m) {
  py::class_<RobotModel>(m, "RobotModel", "Joint limits, kinematic chain and workspace box (C++ RobotModel).")
      .def(py::init(&make_model), py::arg("position_min"), py::arg("position_max"), py::arg("velocity_limit"),
           py::arg("acceleration_limit"), py::arg("jerk_limit"), py::arg("home"), py::arg("joint_type") = py::none(),
           py::arg("axis") = py::none(), py::arg("origin_xyz_m") = py::none(), py::arg("origin_rpy_rad") = py::none(),
           py::arg("paddle_xyz_m") = py::none(), py::arg("paddle_rpy_rad") = py::none(),
           py::arg("workspace_min_m") = py::none(), py::arg("workspace_max_m") = py::none(),
           py::arg("soft_margin") = py::none(), py::arg("paddle_radius_m") = 0.0)
      .def_readonly("dof", &RobotModel::dof)
      .def_property_readonly("soft_margin",
                             [](const RobotModel& m) { return arr(m.soft_margin_si, m.dof); })
      .def_readonly("has_chain", &RobotModel::has_chain)
      .def_readonly("has_workspace", &RobotModel::has_workspace)
      .def_readonly("paddle_radius_m", &RobotModel::paddle_radius_m)
      .def(
          "forecast_workspace",
          [](const RobotModel& model, const DArray& position, const DArray& velocity, const DArray& acceleration,
             const DArray& target, double dt_s, int horizon, double margin_m, py::object ramp_start,
             double ramp_s, bool velocity_tracking) {
            if (!model.has_chain || !model.has_workspace)
              throw py::value_error("model: needs a kinematic chain and a workspace box");
            const auto p = vec(position, "position", model.dof);
            const auto v = vec(velocity, "velocity", model.dof);
            const auto a = vec(acceleration, "acceleration", model.dof);
            const auto t = vec(target, "target", model.dof);
            if (!(dt_s > 0) || !std::isfinite(dt_s)) throw py::value_error("dt_s: expected a positive finite tick");
            if (horizon < 0) throw py::value_error("horizon: expected >= 0 ticks");
            if (!(margin_m >= 0) || !std::isfinite(margin_m)) throw py::value_error("margin_m: expected >= 0");
            std::vector<double> r;
            if (!ramp_start.is_none()) {
              r = vec(ramp_start.cast<DArray>(), "ramp_start", model.dof);
              if (!(ramp_s >= 0) || !std::isfinite(ramp_s)) throw py::value_error("ramp_s: expected >= 0 s");
            }
            AxisState start[kMaxDof];
            for (int i = 0; i < model.dof; ++i) {
              if (!std::isfinite(p[i]) || !std::isfinite(v[i]) || !std::isfinite(a[i]) || !std::isfinite(t[i]) ||
                  (!r.empty() && !std::isfinite(r[i])))
                throw py::value_error("position, velocity, acceleration, target, ramp_start: expected finite values");
              start[i] = AxisState{p[i], v[i], a[i]};
            }
            WorkspaceForecast f;
            {
              py::gil_scoped_release release;
              f = forecast_workspace(model, start, t.data(), r.empty() ? nullptr : r.data(), ramp_s, dt_s, horizon,
                                     margin_m, velocity_tracking);
            }
            return py::make_tuple(f.max_excess_m, f.first_exit_tick, f.ticks, f.settled);
          },
          py::arg("position"), py::arg("velocity"), py::arg("acceleration"), py::arg("target"), py::arg("dt_s"),
          py::arg("horizon"), py::arg("margin_m") = 0.0, py::arg("ramp_start") = py::none(), py::arg("ramp_s") = 0.0,
          py::arg("velocity_tracking") = false,
          "The paddle path if `target` is the loop's last goal, from the joint states (position, velocity, "
          "acceleration): the reference ramps from ramp_start (None: no ramp) to the goal over ramp_s, then holds; "
          "the OTG follows it tick by tick (hard limits) until on the goal or `horizon` ticks (velocity_tracking: "
          "the ramp's velocity, then rest, as LoopConfig.velocity_tracking). Returns "
          "(max_excess_m outside the workspace box shrunk by margin_m, first_exit_tick or -1, ticks, settled).")
      .def(
          "forward_kinematics",
          [](const RobotModel& model, const DArray& q) {
            if (!model.has_chain) throw py::value_error("model: no kinematic chain given");
            if (q.ndim() != 2 || q.shape(1) != model.dof)
              throw py::value_error("q: expected shape [N, " + std::to_string(model.dof) + "]");
            const py::ssize_t n = q.shape(0);
            py::array_t<double> out({n, py::ssize_t(4), py::ssize_t(4)});
            double* o = out.mutable_data();
            const double* qd = q.data();
            for (py::ssize_t r = 0; r < n; ++r) {
              const auto t = robot::forward_kinematics(model.chain, qd + r * model.dof);
              double* T = o + r * 16;
              for (int i = 0; i < 3; ++i) {
                for (int j = 0; j < 3; ++j) T[i * 4 + j] = t.r[i][j];
                T[i * 4 + 3] = t.p[i];
              }
              T[12] = T[13] = T[14] = 0.0;
              T[15] = 1.0;
            }
            return out;
          },
          py::arg("q"), "Paddle pose [N, 4, 4] (C++ kinematics.hpp, double).")
      .def(
          "paddle_jacobian",
          [](const RobotModel& model, const DArray& q) {
            if (!model.has_chain) throw py::value_error("model: no kinematic chain given");
            if (q.ndim() != 2 || q.shape(1) != model.dof)
              throw py::value_error("q: expected shape [N, " + std::to_string(model.dof) + "]");
            const py::ssize_t n = q.shape(0);
            py::array_t<double> out({n, py::ssize_t(6), py::ssize_t(model.dof)});
            for (py::ssize_t r = 0; r < n; ++r)
              robot::paddle_jacobian(model.chain, q.data() + r * model.dof, out.mutable_data() + r * 6 * model.dof);
            return out;
          },
          py::arg("q"),
          "Geometric Jacobian of the paddle frame [N, 6, dof] (rows: linear velocity of the paddle centre, angular "
          "velocity; table frame; C++ kinematics.hpp paddle_jacobian).")
      .def(
          "forward_kinematics_f32",
          [](const RobotModel& model, const DArray& q) {
            if (!model.has_chain) throw py::value_error("model: no kinematic chain given");
            if (q.ndim() != 2 || q.shape(1) != model.dof)
              throw py::value_error("q: expected shape [N, " + std::to_string(model.dof) + "]");
            robot::ChainModel<float> chain;
            for (int i = 0; i < model.dof; ++i) {
              float ax[3], xyz[3], rpy[3] = {0, 0, 0};
              for (int k = 0; k < 3; ++k) {
                ax[k] = static_cast<float>(model.chain.axis[i][k]);
                xyz[k] = static_cast<float>(model.chain.origin[i].p[k]);
              }
              chain.set_joint(i, model.chain.joint_type[i], ax, xyz, rpy);
              for (int a = 0; a < 3; ++a)
                for (int b = 0; b < 3; ++b) chain.origin[i].r[a][b] = static_cast<float>(model.chain.origin[i].r[a][b]);
            }
            for (int a = 0; a < 3; ++a) {
              chain.paddle.p[a] = static_cast<float>(model.chain.paddle.p[a]);
              for (int b = 0; b < 3; ++b) chain.paddle.r[a][b] = static_cast<float>(model.chain.paddle.r[a][b]);
            }
            const py::ssize_t n = q.shape(0);
            py::array_t<double> out({n, py::ssize_t(3)});
            for (py::ssize_t r = 0; r < n; ++r) {
              float qf[kMaxDof];
              for (int i = 0; i < model.dof; ++i) qf[i] = static_cast<float>(q.data()[r * model.dof + i]);
              const auto t = robot::forward_kinematics(chain, qf);
              for (int k = 0; k < 3; ++k) out.mutable_data()[r * 3 + k] = t.p[k];
            }
            return out;
          },
          py::arg("q"), "Paddle centre [N, 3] computed in float32 (kinematics.hpp instantiated with float).");
}

// The RobotDriver interface and the in-process SimDriver (order 0: derived drivers bind later).
void bind_drivers(py::module_& m) {
  py::class_<RobotDriver, std::shared_ptr<RobotDriver>>(m, "RobotDriver",
                                                         "Abstract robot driver (C++ interface, driver.hpp).")
      .def_property_readonly("dof", &RobotDriver::dof)
      .def_property_readonly("name", &RobotDriver::name)
      .def_property_readonly("claimed", &RobotDriver::claimed,
                             "True while a running loop drives this driver (one loop per robot: another start() "
                             "on it is refused).");

  py::class_<SimDriver, RobotDriver, std::shared_ptr<SimDriver>>(m, "SimDriver",
                                                                  "In-process simulated robot (sim_driver.hpp).")
      .def(py::init([](const RobotModel& model, const DArray& initial_position, double dt_s, double frequency_hz,
                       double damping, double acceleration_factor, double velocity_factor) {
             const auto q = vec(initial_position, "initial_position", model.dof);
             if (!(dt_s > 0) || !(frequency_hz > 0) || !(damping > 0) || !(acceleration_factor > 0) ||
                 !(velocity_factor > 0))
               throw py::value_error(
                   "dt_s, servo_frequency_hz, servo_damping, drive_acceleration_factor, drive_velocity_factor: "
                   "expected > 0");
             SimServoConfig servo;
             servo.natural_frequency_hz = frequency_hz;
             servo.damping = damping;
             servo.acceleration_factor = acceleration_factor;
             servo.velocity_factor = velocity_factor;
             return std::make_shared<SimDriver>(model, q.data(), dt_s, servo);
           }),
           py::arg("model"), py::arg("initial_position"), py::arg("dt_s") = 0.001,
           py::arg("servo_frequency_hz") = kServoDefaultFrequencyHz, py::arg("servo_damping") = kServoDefaultDamping,
           py::arg("drive_acceleration_factor") = kServoDriveAccelerationFactor,
           py::arg("drive_velocity_factor") = kServoDriveVelocityFactor)
      .def("inject_dropout", &SimDriver::inject_dropout, py::arg("ticks"),
           "The next `ticks` read_state() calls report no fresh state.")
      .def(
          "inject_stall",
          [](SimDriver& d, int ticks, double duration_s) {
            if (ticks < 0) throw py::value_error("ticks: expected >= 0, got " + std::to_string(ticks));
            if (!(duration_s >= 0 && duration_s <= 10))
              throw py::value_error("duration_s: expected a time in [0, 10] s, got " + std::to_string(duration_s));
            d.inject_stall(ticks, duration_s);
          },
          py::arg("ticks"), py::arg("duration_s"),
          "Each of the next `ticks` read_state() calls blocks for `duration_s` (a stalled driver: the loop "
          "misses its deadline).")
      .def("set_estop_input", &SimDriver::set_estop_input, py::arg("pressed"))
      .def("set_fault", &SimDriver::set_fault, py::arg("fault"), "Raises (or clears) the robot's fault flag.")
      .def(
          "inject_measurement",
          [](SimDriver& d, int joint, double position, double velocity, int states) {
            if (joint < 0 || joint >= d.dof()) throw py::value_error("joint: expected 0.." + std::to_string(d.dof() - 1));
            if (states < 0) throw py::value_error("states: expected >= 0");
            d.inject_measurement(joint, position, velocity, states);
          },
          py::arg("joint"), py::arg("position"), py::arg("velocity") = 0.0, py::arg("states") = 1,
          "The next `states` states report this position/velocity for the joint (a broken encoder).")
      .def("set_link_up", &SimDriver::set_link_up, py::arg("up"), "Cuts (False) or restores the link.")
      .def("restart_peer", &SimDriver::restart_peer, "Counts a restart of the robot side (a new session).")
      .def(
          "jam",
          [](SimDriver& d, int joint, bool jammed) {
            if (joint < 0 || joint >= d.dof()) throw py::value_error("joint: expected 0.." + std::to_string(d.dof() - 1));
            d.jam(joint, jammed);
          },
          py::arg("joint"), py::arg("jammed") = true, "Blocks a joint where it is (it stops following its command).")
      .def("fail_writes", &SimDriver::fail_writes, py::arg("fail"))
      .def(
          "push_ball_observation",
          [](SimDriver& d, std::int64_t stamp_ns, const DArray& position_m, double confidence, std::uint32_t camera_id,
             std::uint32_t frame) {
            const auto p = vec(position_m, "position_m", 3);
            BallObservation o;
            o.stamp_ns = stamp_ns;
            o.camera_id = camera_id;
            o.frame = frame;
            for (int k = 0; k < 3; ++k) o.position_m[k] = p[k];
            o.confidence = confidence;
            return d.push_ball_observation(o);
          },
          py::arg("stamp_ns"), py::arg("position_m"), py::arg("confidence") = 1.0, py::arg("camera_id") = 0,
          py::arg("frame") = 0)
      .def_property_readonly("commands_received", &SimDriver::commands_received)
      .def_property_readonly("hard_stop_hits", &SimDriver::hard_stop_hits,
                             "Contacts with a hard stop (the mechanical range) that began so far.")
      .def("positions",
           [](const SimDriver& d) {
             double q[kMaxDof];
             d.positions(q);
             return arr(q, d.dof());
           })
      .def("velocities", [](const SimDriver& d) {
        double v[kMaxDof];
        d.velocities(v);
        return arr(v, d.dof());
      });
}

// The per-tick SafetyFilter and the controlled-stop helpers (exposed for tests).
void bind_safety(py::module_& m) {
  py::class_<SafetyFilter>(m, "SafetyFilter", "Per-tick safety filter (safety.hpp), exposed for tests.")
      .def(py::init([](const RobotModel& model, double dt_s, const DArray& initial_position, bool velocity_tracking) {
             auto f = std::make_unique<SafetyFilter>();
             if (!f->configure(model, dt_s)) throw py::value_error("model/dt_s: invalid");
             f->set_velocity_tracking(velocity_tracking);
             const auto q = vec(initial_position, "initial_position", model.dof);
             if (!f->reset(q.data())) throw py::value_error("initial_position: outside the joint limits");
             return f;
           }),
           py::arg("model"), py::arg("dt_s"), py::arg("initial_position"), py::arg("velocity_tracking") = false)
      .def_property_readonly("soft_min",
                             [](const SafetyFilter& f) {
                               double v[kMaxDof];
                               for (int i = 0; i < f.dof(); ++i) v[i] = f.soft_min(i);
                               return arr(v, f.dof());
                             })
      .def_property_readonly("soft_max",
                             [](const SafetyFilter& f) {
                               double v[kMaxDof];
                               for (int i = 0; i < f.dof(); ++i) v[i] = f.soft_max(i);
                               return arr(v, f.dof());
                             })
      .def(
          "run", &safety_filter_run,
          py::arg("targets"), py::arg("stop_mask") = py::none(), py::arg("target_velocity") = py::none(),
          "Runs one tick per target row (NaN/out-of-box rows are rejected, the joint then brakes); returns "
          "(states [T, dof, 4] = position, velocity, acceleration, jerk; override masks [T]; verdicts [T]).")
      .def_property_readonly("at_rest", &SafetyFilter::at_rest)
      .def_property_readonly("velocity_tracking", &SafetyFilter::velocity_tracking);

  m.def(
      "brake_trajectory",
      [](double p, double v, double a, const DArray& limits, double dt_s, int max_steps) {
        const auto l = vec(limits, "limits", 5);
        JointLimits lim{l[0], l[1], l[2], l[3], l[4]};
        std::vector<double> rows;
        AxisState s{p, v, a};
        bool rest = false;
        for (int k = 0; k <= max_steps; ++k) {
          if (s.v == 0.0 && s.a == 0.0) {
            rest = true;
            break;
          }
          const BrakeStep b = brake_jerk(s.v, s.a, lim, dt_s);
          s = integrate(s, b.jerk, dt_s, b.final_step);
          rows.insert(rows.end(), {s.p, s.v, s.a, b.jerk});
        }
        py::array_t<double> out({py::ssize_t(rows.size() / 4), py::ssize_t(4)});
        std::copy(rows.begin(), rows.end(), out.mutable_data());
        return py::make_tuple(out, rest);
      },
      py::arg("p"), py::arg("v"), py::arg("a"), py::arg("limits"), py::arg("dt_s"), py::arg("max_steps") = 100000,
      "Controlled stop from (p, v, a) with limits [pmin, pmax, V, A, J]: (rows [K, 4] = p, v, a, jerk; reached rest).");
  m.def(
      "can_stop",
      [](double p, double v, double a, const DArray& limits, double dt_s) {
        const auto l = vec(limits, "limits", 5);
        JointLimits lim{l[0], l[1], l[2], l[3], l[4]};
        return can_stop(AxisState{p, v, a}, lim, dt_s, stop_horizon_steps(lim, dt_s));
      },
      py::arg("p"), py::arg("v"), py::arg("a"), py::arg("limits"), py::arg("dt_s"));
  m.def("otg_trajectory", &otg_trajectory, py::arg("p"), py::arg("v"), py::arg("a"), py::arg("target_position"),
        py::arg("target_velocity"), py::arg("limits"), py::arg("dt_s"), py::arg("max_steps") = 100000,
        "The OTG alone (otg.hpp, no position box) from (p, v, a) towards the reference target_position + "
        "target_velocity * t, with limits [V, A, J]: (rows [K, 4] = p, v, a, jerk after each tick; ticks to reach "
        "the reference exactly, -1 if not within max_steps).");
}

// LoopConfig and the ControlLoop thread: commands in, events and observations out, telemetry.
void bind_loop(py::module_& m) {
  py::class_<LoopConfig>(m, "LoopConfig", "ControlLoop settings (control_loop.hpp).")
      .def(py::init<>())
      .def_readwrite("rate_hz", &LoopConfig::rate_hz)
      .def_readwrite("policy_period_s", &LoopConfig::policy_period_s)
      .def_readwrite("command_timeout_s", &LoopConfig::command_timeout_s)
      .def_readwrite("sensor_timeout_s", &LoopConfig::sensor_timeout_s)
      .def_readwrite("late_threshold_s", &LoopConfig::late_threshold_s)
      .def_property(
          "tracking_error_threshold",
          [](const LoopConfig& c) { return arr(c.tracking_error_threshold_si, kMaxDof); },
          [](LoopConfig& c, const DArray& v) {
            if (v.ndim() != 1 || v.shape(0) > kMaxDof)
              throw py::value_error("tracking_error_threshold: expected a 1-D array of at most MAX_DOF values");
            for (int i = 0; i < kMaxDof; ++i) c.tracking_error_threshold_si[i] = i < v.shape(0) ? v.data()[i] : 0.0;
          },
          "Per joint (m | rad); <= 0: derived from the servo model (tracking_error_factor x servo_error_bound).")
      .def_readwrite("tracking_window_s", &LoopConfig::tracking_window_s)
      .def_readwrite("tracking_error_factor", &LoopConfig::tracking_error_factor)
      .def_readwrite("servo_natural_frequency_hz", &LoopConfig::servo_natural_frequency_hz)
      .def_readwrite("servo_damping", &LoopConfig::servo_damping)
      .def_readwrite("measurement_velocity_factor", &LoopConfig::measurement_velocity_factor)
      .def_readwrite("rest_velocity_fraction", &LoopConfig::rest_velocity_fraction)
      .def_readwrite("steady_window_s", &LoopConfig::steady_window_s)
      .def_readwrite("recover_timeout_s", &LoopConfig::recover_timeout_s)
      .def_readwrite("realtime_priority", &LoopConfig::realtime_priority)
      .def_readwrite("cpu", &LoopConfig::cpu)
      .def_readwrite("lock_memory", &LoopConfig::lock_memory)
      .def_readwrite("log_path", &LoopConfig::log_path)
      .def_readwrite("log_meta_json", &LoopConfig::log_meta_json)
      .def_readwrite("log_flush_interval_s", &LoopConfig::log_flush_interval_s)
      .def_readwrite("log_fsync_interval_s", &LoopConfig::log_fsync_interval_s)
      .def_readwrite("path_guard_margin_m", &LoopConfig::path_guard_margin_m)
      .def_readwrite("path_guard_tick_s", &LoopConfig::path_guard_tick_s)
      .def_readwrite("path_guard_horizon_ticks", &LoopConfig::path_guard_horizon_ticks)
      .def_readwrite("velocity_tracking", &LoopConfig::velocity_tracking);

  py::class_<ControlLoop>(m, "ControlLoop", "The real-time loop thread (control_loop.hpp).")
      .def(py::init<std::shared_ptr<RobotDriver>, const RobotModel&, const LoopConfig&>(), py::arg("driver"),
           py::arg("model"), py::arg("config"), py::keep_alive<1, 2>())
      .def("start", &ControlLoop::start, py::call_guard<py::gil_scoped_release>(),
           "Starts the thread; returns warnings (real-time settings refused).")
      .def("stop", &ControlLoop::stop, py::call_guard<py::gil_scoped_release>(),
           "Ends the run with a controlled stop to rest (stop category 1), then the thread ends.")
      .def("request_shutdown", &ControlLoop::request_shutdown, "Asks for that controlled stop (the thread keeps going).")
      .def_property_readonly("shutdown_done", &ControlLoop::shutdown_done)
      .def("begin_manual", &ControlLoop::begin_manual, py::arg("start_ns"),
           "Deterministic stepping without the thread (tests, faster-than-real-time simulation): initialises as "
           "start() does, at the simulated time start_ns.")
      .def("manual_tick", &ControlLoop::manual_tick, py::arg("now_ns"), py::call_guard<py::gil_scoped_release>(),
           "One tick at the simulated time now_ns (advance it by the period yourself).")
      .def("end_manual", &ControlLoop::end_manual)
      .def_property_readonly("running", &ControlLoop::running)
      .def_property_readonly("period_s", &ControlLoop::period_s)
      .def_property_readonly("realtime_granted", &ControlLoop::realtime_granted)
      .def_property_readonly("affinity_granted", &ControlLoop::affinity_granted)
      .def_property_readonly("memory_locked", &ControlLoop::memory_locked)
      .def(
          "push_command",
          [](ControlLoop& loop, const DArray& position, std::uint64_t obs_tick, std::int64_t obs_stamp_ns) {
            if (position.ndim() != 1) throw py::value_error("position: expected a 1-D array");
            const int n = static_cast<int>(position.shape(0));
            if (n > kMaxDof) throw py::value_error("position: more than MAX_DOF joints");
            return loop.push_command(position.data(), n, obs_tick, obs_stamp_ns);
          },
          py::arg("position"), py::arg("obs_tick"), py::arg("obs_stamp_ns"),
          "Queues a target answering the observation of tick obs_tick published at obs_stamp_ns (0: not known; the "
          "target is then dropped after any recovery) (lock-free); False when the ring is full. NaN/Inf are "
          "rejected by the loop, not here.")
      .def("push_event", &ControlLoop::push_external_event, py::arg("code"), py::arg("joint") = -1,
           py::arg("value") = 0.0)
      .def("pop_events",
           [](ControlLoop& loop) {
             py::list out;
             EventRecord e;
             while (loop.pop_event(e)) out.append(py::make_tuple(e.stamp_ns, e.tick, e.code, e.joint, e.value));
             return out;
           })
      .def("latest_observation",
           [](const ControlLoop& loop) -> py::object {
             Observation o;
             const std::uint64_t seq = loop.latest_observation(o);
             if (seq == 0) return py::none();
             return observation_dict(o, seq);
           })
      .def(
          "wait_observation",
          [](const ControlLoop& loop, std::uint64_t after_seq, double timeout_s) -> py::object {
            Observation o;
            std::uint64_t seq;
            {
              py::gil_scoped_release release;
              seq = loop.wait_observation(after_seq, timeout_s, o);
            }
            if (seq == 0) return py::none();
            return observation_dict(o, seq);
          },
          py::arg("after_seq"), py::arg("timeout_s"),
          "Waits (GIL released) for an observation newer than after_seq; None on timeout.")
      .def_property_readonly("observation_seq", &ControlLoop::observation_sequence,
                             "Sequence number of the newest published observation (0 = none yet).")
      .def("estop", &ControlLoop::request_estop)
      .def_property_readonly("estop_presses", &ControlLoop::estop_presses,
                             "estop() calls so far (a recovery releases only those its requester saw).")
      .def_property_readonly("estop_latched", &ControlLoop::estop_latched)
      .def_property_readonly("robot_stop_events", &ControlLoop::robot_stop_events,
                             "The robot's own stops the loop has seen (a recovery clears only those its requester "
                             "saw).")
      .def("request_recover", &ControlLoop::request_recover, py::arg("seen_reasons") = ~0u,
           py::arg("seen_estop_presses") = ~std::uint64_t{0}, py::arg("seen_robot_stops") = ~std::uint64_t{0},
           "Asks the loop to recover from a stop (non-blocking; see recover_state / recover_blockers). seen_reasons: "
           "the STOP_REASONS bits the requester saw; a latched reason outside them refuses the request.")
      .def("cancel_recover", &ControlLoop::cancel_recover,
           "The requester stopped waiting: a pending recovery is refused (blocker 'cancelled'), not completed later.")
      .def_property_readonly("recover_state", &ControlLoop::recover_state,
                             "0 idle, 1 pending, 2 done, 3 refused (the last request).")
      .def_property_readonly("recover_blockers", &ControlLoop::recover_blockers)
      .def_property_readonly("lifecycle", [](const ControlLoop& l) { return static_cast<int>(l.lifecycle()); })
      .def_property_readonly("stop_reasons", &ControlLoop::stop_reasons, "Latched StopReason bits (STOP_REASONS).")
      .def_property_readonly("stop_reasons_seen", &ControlLoop::stop_reasons_seen,
                             "Every reason latched since start() (recovered stops included).")
      .def_property_readonly("stop_time_bound_s", &ControlLoop::stop_time_bound_s)
      .def_property_readonly("tracking_error_threshold",
                             [](const ControlLoop& l) {
                               double v[kMaxDof];
                               for (int i = 0; i < l.model().dof; ++i) v[i] = l.tracking().threshold(i);
                               return arr(v, l.model().dof);
                             })
      .def("counters", &counters_dict)
      .def(
          "histogram",
          [](const ControlLoop& loop, const std::string& name) {
            if (name == "wake_latency") return histogram_dict(loop.wake_latency());
            if (name == "period") return histogram_dict(loop.period());
            if (name == "tick_duration") return histogram_dict(loop.tick_duration());
            if (name == "policy_round_trip") return histogram_dict(loop.policy_round_trip());
            if (name == "command_latency") return histogram_dict(loop.command_latency());
            throw py::value_error("name: expected one of wake_latency, period, tick_duration, policy_round_trip, "
                                  "command_latency; got '" + name + "'");
          },
          py::arg("name"));
}

}  // namespace

// The core group (order 0) of robot_rt._control, one bound part after the other.
static void register_core(py::module_& m) {
  bind_constants(m);
  bind_robot_model(m);
  bind_drivers(m);
  bind_safety(m);
  bind_loop(m);
}
RR_CONTROL_REGISTER(core, 0, register_core)

}  // namespace robot_rt::control

PYBIND11_MODULE(_control, m) {
  m.doc() = "robot_rt real-time control loop (C++ core)";
  percept_robot::register_all(robot_rt::control::binding_registry(), m);
}
