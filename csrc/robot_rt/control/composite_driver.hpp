// One robot from several drivers: each part drives a consecutive block of joints (e.g. the gantry's 2 joints over
// the project's UDP protocol and the arm's 6 over ABB EGM, docs/egm.md). The control loop sees one RobotDriver
// with all joints, so its safety layer applies unchanged.
//
//   * read_state: every part is read every tick (each drains its own socket); the state is fresh only when every
//     part reported a fresh state in this call. Its stamp is the oldest of the parts' stamps (the state is as old as
//     its oldest part: velocity checks over stamps stay right when one part updates slower); its flags are the OR
//     of the parts' flags (a fault or e-stop input of either part is the robot's).
//   * write_command: the command is split by joint blocks and written to every part (all parts, even after one
//     refused) but the muted ones; it succeeds only when every part written accepted it.
//   * ball observations come from the parts in order (the part with the camera link, usually the first).
//   * link: up only while every part's link is up; peer restarts add up.
//   * on_start / on_stop start and stop every part (a part that fails to start stops those already started).
// Real-time behaviour: no allocation, no blocking (the parts' own contracts).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "driver.hpp"

namespace robot_rt::control {

class CompositeDriver final : public RobotDriver {
 public:
  // parts in joint order; their dofs add up to the robot's (at most kMaxDof).
  explicit CompositeDriver(std::vector<std::shared_ptr<RobotDriver>> parts);

  int dof() const noexcept override { return dof_; }
  bool read_state(JointState& out) noexcept override;
  bool write_command(const JointCommand& command) noexcept override;
  int read_ball_observations(BallObservation* out, int max_count) noexcept override;
  LinkHealth link_health() const noexcept override;  // up only while every part is up; peer restarts add up
  const char* name() const noexcept override { return name_.c_str(); }
  bool steps_with_loop_ticks() const noexcept override {  // every part
    for (const auto& part : parts_)
      if (!part->steps_with_loop_ticks()) return false;
    return true;
  }
  void on_start() override;
  void on_stop() override;
  bool claim() noexcept override;
  void acknowledge_robot_stops() noexcept override;
  void set_ending_in_stop(bool stopped) noexcept override;
  std::uint64_t robot_stop_events() const noexcept override {
    std::uint64_t n = 0;
    for (const auto& part : parts_) n += part->robot_stop_events();
    return n;
  }
  std::uint64_t unexplained_robot_stop_events() const noexcept override {
    std::uint64_t n = 0;
    for (const auto& part : parts_) n += part->unexplained_robot_stop_events();
    return n;
  }
  void release() noexcept override;
  // Per part: a part's own stop (e-stop input or fault, kept from its last state, fresh or not, until unmuted) or
  // lost link names that part's joints; mute_joints() stops writing to the parts with a muted joint only.
  std::uint64_t self_stopped_joints(std::uint32_t flags) const noexcept override;
  std::uint64_t link_down_joints() const noexcept override;
  std::uint64_t new_session_joints() const noexcept override { return new_session_; }
  std::uint32_t pending_stop_flags() const noexcept override {
    return pending_flags_ & kStateSelfStop;
  }
  bool mute_joints(std::uint64_t joints) noexcept override;
  void set_hold_position(const double* position_si) noexcept override {
    for (std::size_t p = 0; p < parts_.size(); ++p) parts_[p]->set_hold_position(position_si + offset_[p]);
  }

  const std::vector<std::shared_ptr<RobotDriver>>& parts() const noexcept { return parts_; }
  // Whether each part's last read_state() was fresh (bit i = part i).
  unsigned last_fresh_mask() const noexcept { return fresh_mask_; }

 private:
  std::vector<std::shared_ptr<RobotDriver>> parts_;
  std::vector<int> offset_;
  int dof_ = 0;
  std::string name_;
  unsigned fresh_mask_ = 0;
  JointState part_state_;
  // A part's one-shot kStateNewSession (UdpDriver sets it on one state only), read while another part was not
  // fresh: delivered with the next whole state instead of being lost; that part is sent nothing meanwhile.
  std::uint32_t pending_flags_ = 0;
  JointCommand part_command_;
  std::uint64_t part_joints(std::size_t p) const noexcept { return RobotDriver::joint_mask(parts_[p]->dof()) << offset_[p]; }
  std::uint64_t self_stopped_ = 0;  // joints of parts that reported e-stop input or fault since the last unmute
  std::uint64_t new_session_ = 0;   // joints of parts whose peer started a new session since the last unmute
  std::vector<std::uint64_t> peer_restarts_seen_;
  unsigned muted_parts_ = 0;        // bit p: part p is sent nothing
};

}  // namespace robot_rt::control
