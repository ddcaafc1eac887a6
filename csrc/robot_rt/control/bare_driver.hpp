// Bare-driver calls from Python (tools, tests, the attack harness): read_state, write_command, start, stop and the
// like on a driver that no loop drives. Each call holds the driver's claim (driver.hpp DriverClaim) while it runs,
// so it is refused while a loop drives the driver: a command sent then would skip the loop's safety filter, its
// stop latch and its muting, and would race the loop's thread on the driver's buffers and sequence counter.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "driver.hpp"

namespace robot_rt::control {

// Runs fn() holding `driver`'s claim; std::runtime_error (Python RuntimeError) naming `call` when it is taken.
template <class Fn>
decltype(auto) with_bare_claim(RobotDriver& driver, const char* call, Fn&& fn) {
  DriverClaim claim(driver);
  if (!claim.held())
    throw std::runtime_error(std::string(call) +
                             ": a running loop (or another bare call) drives this driver; refused so that nothing "
                             "bypasses the loop's safety filter and stop latch");
  return std::forward<Fn>(fn)();
}

}  // namespace robot_rt::control
