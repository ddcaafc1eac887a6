"""No heap allocation inside the loop's ticks: a small C++ program counts operator new calls while only the
loop thread runs (sim driver, no Python), compiled from the loop's sources with the system g++. With a run log,
its writer thread runs too: it must not allocate either once open (its chunk buffer is reserved at open()).
The window covers the OTG, every reflex (watchdog, sensor timeout, e-stop, fault, implausible measurement, tracking
error, lost link, restarted peer), the stop latch, the lifecycle and eight recoveries."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "csrc" / "robot_rt" / "control"

PROGRAM = r"""
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <thread>
#include <chrono>
#include "control_loop.hpp"
#include "sim_driver.hpp"

static std::atomic<long> g_news{0};
void* operator new(std::size_t n) { g_news.fetch_add(1); if (void* p = std::malloc(n ? n : 1)) return p; throw std::bad_alloc(); }
void* operator new[](std::size_t n) { g_news.fetch_add(1); if (void* p = std::malloc(n ? n : 1)) return p; throw std::bad_alloc(); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

using namespace robot_rt::control;

// Waits until the loop has ticked n more times (polling its counters: no allocation, no wall-time budget).
static void wait_ticks(const ControlLoop& loop, std::uint64_t n) {
  const std::uint64_t target = loop.counters().ticks + n;
  while (loop.counters().ticks < target) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}
int main(int argc, char** argv) {
  RobotModel m;
  m.dof = 8;
  for (int i = 0; i < 8; ++i) m.limits[i] = JointLimits{-1.0, 1.0, 2.0, 10.0, 200.0};
  double q0[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  auto driver = std::make_shared<SimDriver>(m, q0, 1e-3, SimServoConfig{});
  LoopConfig cfg;  // run log only when a path is given
  cfg.command_timeout_s = 0.05;
  if (argc > 1) {
    cfg.log_path = argv[1];
    cfg.log_meta_json = "{}";
    cfg.log_flush_interval_s = 0.005;  // many chunks inside the window
  }
  ControlLoop loop(driver, m, cfg);
  loop.start();
  // commands (OTG path), then silence (watchdog stop path), recoveries, e-stop, fault, implausible measurement,
  // jammed joint (tracking error), lost link and a restarted peer: every reflex, the latch and the lifecycle
  wait_ticks(loop, 50);
  const long before = g_news.load();
  const auto t0 = std::chrono::steady_clock::now();
  double q[8] = {0.5, -0.5, 0.3, 0, 0, 0, 0, 0.9};
  Observation seen;
  auto command = [&](int n) {
    for (int k = 0; k < n; ++k) {
      q[0] = 0.5 * (k % 2 ? 1 : -1);
      loop.latest_observation(seen);  // a target answers an observation (tick 0 is stale after a recovery)
      loop.push_command(q, 8, seen.tick, 0);
      wait_ticks(loop, 10);
    }
  };
  auto recover = [&] {
    loop.request_recover();
    while (loop.recover_state() == ControlLoop::kRecoverPending) wait_ticks(loop, 1);
  };
  command(20);
  wait_ticks(loop, 150);  // stale -> watchdog stop
  recover();
  command(5);
  driver->inject_dropout(40);  // sensor timeout
  wait_ticks(loop, 300);
  recover();
  command(5);
  loop.request_estop();
  wait_ticks(loop, 300);
  recover();
  command(5);
  driver->set_fault(true);
  wait_ticks(loop, 300);
  driver->set_fault(false);
  recover();
  command(5);
  driver->inject_measurement(2, 1e300, 0.0, 3);
  wait_ticks(loop, 300);
  recover();
  driver->jam(0, true);
  command(20);
  wait_ticks(loop, 300);
  driver->jam(0, false);
  recover();
  command(5);
  driver->set_link_up(false);
  wait_ticks(loop, 300);
  driver->set_link_up(true);
  recover();
  command(5);
  driver->restart_peer();
  wait_ticks(loop, 300);
  recover();
  command(5);
  const long during = g_news.load() - before;
  const double window_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto c = loop.counters();
  const auto ticks = c.ticks;
  // every reflex fired once, and every recovery succeeded
  const int reflexes[] = {kEventWatchdogStop, kEventSensorTimeoutStop, kEventEstop, kEventRobotFaultStop,
                          kEventMeasurementStop, kEventTrackingErrorStop, kEventLinkLossStop};
  int fired = 0;
  for (int code : reflexes) fired += c.event_counts[code] >= 1 ? 1 : 0;
  const auto recovered = c.event_counts[kEventRecovered];
  loop.stop();
  std::printf("allocations=%ld ticks=%llu window_s=%.3f reflexes=%d recovered=%llu\n", during,
              (unsigned long long)ticks, window_s, fired, (unsigned long long)recovered);
  return during == 0 && ticks > 100 && fired == 7 && recovered == 8 ? 0 : 1;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
@pytest.mark.parametrize("run_log", [False, True])
def test_no_heap_allocation_in_ticks(tmp_path, run_log):
    main = tmp_path / "noalloc.cpp"
    main.write_text(PROGRAM)
    exe = tmp_path / "noalloc"
    sources = [SRC / name for name in ("control_loop.cpp", "safety.cpp", "sim_driver.cpp", "runlog.cpp", "crc32.cpp")]
    cmd = [
        "g++",
        "-std=c++17",
        "-O1",
        "-pthread",
        f"-I{SRC}",
        f"-I{ROOT / 'csrc'}",
        str(main),
        *map(str, sources),
        "-o",
        str(exe),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    log_args = [str(tmp_path / "noalloc.rrlog")] if run_log else []
    result = subprocess.run([str(exe), *log_args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "allocations=0" in result.stdout
    if run_log:
        from robot_rt.control.runlog import read_runlog

        log = read_runlog(tmp_path / "noalloc.rrlog")
        assert log.chunks > 20 and log.damage == [] and len(log.ticks) > 100
