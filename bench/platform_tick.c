/* Platform floor for bench_control.py: the smallest possible 1 kHz loop (clock_nanosleep to absolute
 * deadlines, SCHED_FIFO 80 when permitted, pinned to one CPU, nothing else in the tick). Whatever lateness
 * this shows is the machine's (kernel timer, vCPU scheduling by a hypervisor), not the control loop's.
 * Usage: platform_tick SECONDS CPU  -> one JSON line. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static long long to_ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(int argc, char **argv) {
  int seconds = argc > 1 ? atoi(argv[1]) : 10;
  int cpu = argc > 2 ? atoi(argv[2]) : 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int pinned = sched_setaffinity(0, sizeof set, &set) == 0;
  struct sched_param param = {.sched_priority = 80};
  int fifo = sched_setscheduler(0, SCHED_FIFO, &param) == 0;
  int locked = mlockall(MCL_CURRENT | MCL_FUTURE) == 0;
  long long ticks = seconds * 1000LL, over_100us = 0, over_1ms = 0, max_late = 0;
  double sum = 0;
  struct timespec next, now;
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (long long i = 0; i < ticks; i++) {
    next.tv_nsec += 1000000;
    if (next.tv_nsec >= 1000000000) {
      next.tv_nsec -= 1000000000;
      next.tv_sec++;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long late = to_ns(now) - to_ns(next);
    sum += late;
    over_100us += late > 100000;
    over_1ms += late > 1000000;
    if (late > max_late) max_late = late;
  }
  printf("{\"fifo\": %s, \"pinned\": %s, \"memory_locked\": %s, \"ticks\": %lld, \"mean_late_us\": %.2f, "
         "\"late_over_100us\": %lld, \"late_over_1ms\": %lld, \"max_late_us\": %.1f}\n",
         fifo ? "true" : "false", pinned ? "true" : "false", locked ? "true" : "false", ticks, sum / ticks / 1e3,
         over_100us, over_1ms, max_late / 1e3);
  return 0;
}
