// Crash-safe run log: chunked, append-only binary file written by a background thread (format: docs/runlog.md).
//
// The real-time loop only pushes fixed-size records into a lock-free ring (never blocks, never allocates, never
// does I/O; a full ring drops the record and counts it). The writer thread drains the ring, serialises records
// into a chunk buffer reserved once at open() (variable length: only `dof` joints are written) and appends each
// chunk with a single write():
//   chunk = header {sync 'RRTC', payload_bytes, record_count, flags, chunk_seq, chunk_crc, header_crc} + payload
// chunk_crc covers the header fields before it and the payload; header_crc covers the header up to itself, so a
// reader trusts payload_bytes before reading the payload. Every field is therefore under a CRC; a reader that
// meets a bad chunk scans forward for the next sync marker whose header and chunk CRCs hold (resynchronisation)
// and reports the ticks in between as lost; after kill -9 at most the last chunk is partial (a truncated tail).
// Chunks are flushed every flush_interval_s (or sooner when large); fsync() runs every fsync_interval_s and on
// close (kill -9 loses nothing that was written, since the page cache belongs to the kernel; fsync bounds what
// an OS crash or power loss can lose). robot_rt/control/runlog.py reads it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "driver.hpp"
#include "spsc_ring.hpp"

namespace robot_rt::control {

constexpr std::uint32_t kRunLogVersion = 2;
constexpr std::uint32_t kChunkMagic = 0x43545252u;  // "RRTC" little-endian: the chunk sync marker
constexpr std::size_t kRunLogFileHeaderBytes = 24;
constexpr std::size_t kChunkHeaderBytes = 32;

enum RecordType : std::uint16_t {
  kRecordMeta = 1,   // UTF-8 JSON
  kRecordTick = 2,
  kRecordBall = 3,
  kRecordEvent = 4,
};

// TickRecord::flags bits
constexpr std::uint32_t kTickStateFresh = 1u << 0;
constexpr std::uint32_t kTickStopping = 1u << 1;
constexpr std::uint32_t kTickEstop = 1u << 2;
constexpr std::uint32_t kTickWatchdog = 1u << 3;
constexpr std::uint32_t kTickSensorTimeout = 1u << 4;
constexpr std::uint32_t kTickDeadlineMiss = 1u << 5;
constexpr std::uint32_t kTickHasCommand = 1u << 6;
constexpr std::uint32_t kTickWorkspaceStop = 1u << 7;
constexpr std::uint32_t kTickSafetyOverride = 1u << 8;
constexpr std::uint32_t kTickNewTarget = 1u << 9;
constexpr std::uint32_t kTickLinkLoss = 1u << 10;            // latched: link lost / robot side restarted
constexpr std::uint32_t kTickTrackingError = 1u << 11;       // latched: tracking error
constexpr std::uint32_t kTickMeasurementInvalid = 1u << 12;  // latched: implausible measurement
constexpr std::uint32_t kTickRobotFault = 1u << 13;          // latched: robot fault
constexpr std::uint32_t kTickMuted = 1u << 14;               // no command written to the driver this tick
constexpr std::uint32_t kTickShutdown = 1u << 15;            // the exit ramp (stop on shutdown)
constexpr int kTickLifecycleShift = 16;                      // bits 16..18: the Lifecycle state (0..4)
constexpr std::uint32_t kTickPartMuted = 1u << 19;  // some parts of a composite robot are sent nothing (not all)
constexpr std::uint32_t kTickLifecycleMask = 7u << kTickLifecycleShift;
// bits 20..27: how many periods the commanded trajectory advanced this tick (1 on time; more after a late wake, the
// loop catching up with the clock: docs/safety.md, "Late wakes"). 0 in logs written before it existed: read as 1.
constexpr int kTickStepsShift = 20;
constexpr std::uint32_t kTickStepsMask = 0xFFu << kTickStepsShift;

struct TickRecord {
  std::int64_t deadline_ns;
  std::int64_t wake_ns;
  std::int64_t done_ns;  // end of the tick's work
  std::uint64_t tick;
  std::uint32_t flags;  // kTick*
  std::int32_t dof;
  double measured_position_si[kMaxDof];
  double measured_velocity_si[kMaxDof];
  double target_position_si[kMaxDof];
  double command_position_si[kMaxDof];
  double command_velocity_si[kMaxDof];
  double command_acceleration_si[kMaxDof];
};

struct BallRecord {
  std::uint64_t tick;
  BallObservation observation;
};

struct EventRecord {
  std::int64_t stamp_ns;
  std::uint64_t tick;
  std::int32_t code;   // EventCode (control_loop.hpp)
  std::int32_t joint;  // joint / axis index or -1
  double value;
};

struct LogItem {
  std::uint16_t type;
  union {
    TickRecord tick;
    BallRecord ball;
    EventRecord event;
  };
  LogItem() : type(0), tick{} {}
};

struct RunLogStats {
  std::uint64_t records_written = 0;
  std::uint64_t records_dropped = 0;
  std::uint64_t chunks_written = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t fsyncs = 0;
  std::uint64_t write_errors = 0;
};

class RunLogWriter {
 public:
  static constexpr std::size_t kRingCapacity = 8192;

  RunLogWriter();
  ~RunLogWriter();
  RunLogWriter(const RunLogWriter&) = delete;
  RunLogWriter& operator=(const RunLogWriter&) = delete;

  // Creates/truncates the file, writes the file header and a meta chunk, starts the writer thread.
  // Throws std::runtime_error naming the path on failure.
  void open(const std::string& path, const std::string& meta_json, double flush_interval_s, double fsync_interval_s);
  // Drains everything, writes the last chunk, fsyncs, closes. Idempotent.
  void close();
  // In a forked child: closes this copy's descriptor without writing (the parent's writer owns the file) and leaks
  // the writer thread's handle (that thread lives in the parent only).
  void abandon_forked_copy();
  bool is_open() const noexcept { return fd_ >= 0; }

  // Real-time side (one producer thread): never blocks.
  bool push(const LogItem& item) noexcept {
    if (fd_ < 0) return false;
    if (ring_->push(item)) return true;
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  RunLogStats stats() const noexcept;

 private:
  void run();
  void drain(bool final);
  void append_record(const LogItem& item);
  void flush_chunk();
  void write_all(const std::uint8_t* data, std::size_t size);

  std::unique_ptr<SpscRing<LogItem, kRingCapacity>> ring_;
  std::vector<std::uint8_t> chunk_;  // kChunkHeaderBytes (filled at flush) + payload; capacity reserved at open()
  std::uint32_t chunk_records_ = 0;
  std::uint64_t chunk_seq_ = 0;
  int fd_ = -1;
  std::string path_;
  double flush_interval_s_ = 0.05;
  double fsync_interval_s_ = 1.0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> written_{0};
  std::atomic<std::uint64_t> chunks_{0};
  std::atomic<std::uint64_t> bytes_{0};
  std::atomic<std::uint64_t> fsyncs_{0};
  std::atomic<std::uint64_t> errors_{0};
  int last_errno_ = 0;  // of the last failed write (the writer thread's, or open()'s)
};

}  // namespace robot_rt::control
