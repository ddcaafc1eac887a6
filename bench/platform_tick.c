/* Platform floor for bench_control.py: the smallest possible 1 kHz loop (clock_nanosleep to absolute
 * deadlines, SCHED_FIFO when permitted, pinned to one CPU, nothing else in the tick). Whatever lateness
 * this shows is the machine's (kernel timer, vCPU scheduling by a hypervisor), not the control loop's.
 *
 * Usage: platform_tick SECONDS CPU [PRIORITY=80] [LOG_THRESHOLD_US=-1]
 *   -> one JSON line on stdout; with LOG_THRESHOLD_US >= 0, one line "deadline_ns late_ns" on stderr per
 *      tick later than that (CLOCK_MONOTONIC, the clock the control loop stamps its events with).
 * Like robot_rt's ControlLoop, a tick that wakes after the next deadline skips the missed slots instead of
 * running them back to back, so one stall counts once (as a late tick) however long it lasts. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define PERIOD_NS 1000000LL
#define MAX_LOGGED 200000

static long long to_ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }
static struct timespec from_ns(long long ns) {
  struct timespec t = {.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
  return t;
}

/* Preallocated so that the tick never allocates (and mlockall keeps it resident). */
static long long logged_deadline_ns[MAX_LOGGED], logged_late_ns[MAX_LOGGED];

int main(int argc, char **argv) {
  int seconds = argc > 1 ? atoi(argv[1]) : 10;
  int cpu = argc > 2 ? atoi(argv[2]) : 0;
  int priority = argc > 3 ? atoi(argv[3]) : 80;
  long long log_threshold_ns = argc > 4 ? (long long)(atof(argv[4]) * 1000.0) : -1;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int pinned = sched_setaffinity(0, sizeof set, &set) == 0;
  struct sched_param param = {.sched_priority = priority};
  int fifo = sched_setscheduler(0, SCHED_FIFO, &param) == 0;
  int locked = mlockall(MCL_CURRENT | MCL_FUTURE) == 0;
  long long ticks = 0, skipped = 0, over_100us = 0, over_1ms = 0, max_late = 0, n_logged = 0;
  double sum = 0;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  const long long end_ns = to_ns(now) + seconds * 1000000000LL;
  long long deadline = to_ns(now) + PERIOD_NS;
  while (deadline < end_ns) {
    struct timespec next = from_ns(deadline);
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long late = to_ns(now) - deadline;
    ticks++;
    sum += late;
    over_100us += late > 100000;
    over_1ms += late > 1000000;
    if (late > max_late) max_late = late;
    if (log_threshold_ns >= 0 && late > log_threshold_ns && n_logged < MAX_LOGGED) {
      logged_deadline_ns[n_logged] = deadline;
      logged_late_ns[n_logged] = late;
      n_logged++;
    }
    deadline += PERIOD_NS;
    while (deadline <= to_ns(now)) { /* skip the slots a stall swallowed, keep the rate */
      skipped += deadline < end_ns;    /* a stall at the end swallows no slot after the run's end */
      deadline += PERIOD_NS;
    }
  }
  for (long long i = 0; i < n_logged; i++) fprintf(stderr, "%lld %lld\n", logged_deadline_ns[i], logged_late_ns[i]);
  printf("{\"fifo\": %s, \"pinned\": %s, \"memory_locked\": %s, \"priority\": %d, \"ticks\": %lld, "
         "\"skipped_ticks\": %lld, \"mean_late_us\": %.2f, \"late_over_100us\": %lld, \"late_over_1ms\": %lld, "
         "\"max_late_us\": %.1f}\n",
         fifo ? "true" : "false", pinned ? "true" : "false", locked ? "true" : "false", priority, ticks, skipped,
         ticks ? sum / ticks / 1e3 : 0.0, over_100us, over_1ms, max_late / 1e3);
  return 0;
}
