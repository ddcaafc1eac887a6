#include "runlog.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "crc32.hpp"

namespace robot_rt::control {

namespace {

constexpr char kFileMagic[8] = {'R', 'R', 'T', 'L', 'O', 'G', '0', '1'};
constexpr std::size_t kChunkTargetBytes = 256 * 1024;

template <typename T>
void put(std::vector<std::uint8_t>& buf, const T& v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  buf.insert(buf.end(), p, p + sizeof(T));
}

template <typename T>
void put_at(std::uint8_t* at, const T& v) {
  std::memcpy(at, &v, sizeof(T));
}

void put_doubles(std::vector<std::uint8_t>& buf, const double* v, int n) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(v);
  buf.insert(buf.end(), p, p + sizeof(double) * static_cast<std::size_t>(n));
}

std::int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

RunLogWriter::RunLogWriter() : ring_(new SpscRing<LogItem, kRingCapacity>()) {}

RunLogWriter::~RunLogWriter() { close(); }

void RunLogWriter::open(const std::string& path, const std::string& meta_json, double flush_interval_s,
                        double fsync_interval_s) {
  if (fd_ >= 0) throw std::runtime_error("run log: already open");
  // O_NONBLOCK: a pipe or device that stops taking data fails the write (counted as a write error) instead of
  // blocking the writer thread, whose join in close() would then hang RealTimeLoop.stop() (no effect on files)
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK, 0644);
  if (fd < 0) throw std::runtime_error("log_path: cannot create run log '" + path + "': " + std::strerror(errno));
  fd_ = fd;
  path_ = path;
  flush_interval_s_ = flush_interval_s;
  fsync_interval_s_ = fsync_interval_s;
  // The chunk buffer never grows after this: the writer thread allocates nothing while the loop runs.
  chunk_.clear();
  chunk_.reserve(kChunkHeaderBytes + kChunkTargetBytes + 2 * sizeof(LogItem) + 16 + meta_json.size());
  chunk_.resize(kChunkHeaderBytes);
  chunk_records_ = 0;
  chunk_seq_ = 0;
  // file header: magic, version, header size, reserved, CRC-32 of the 20 bytes before it
  std::vector<std::uint8_t> header(kFileMagic, kFileMagic + 8);
  put(header, kRunLogVersion);
  put(header, static_cast<std::uint32_t>(kRunLogFileHeaderBytes));
  put(header, static_cast<std::uint32_t>(0));
  put(header, crc32(header.data(), header.size()));
  write_all(header.data(), header.size());
  // meta record, in its own chunk
  put(chunk_, static_cast<std::uint16_t>(kRecordMeta));
  put(chunk_, static_cast<std::uint16_t>(0));
  put(chunk_, static_cast<std::uint32_t>(meta_json.size()));
  chunk_.insert(chunk_.end(), meta_json.begin(), meta_json.end());
  chunk_records_ = 1;
  flush_chunk();
  // a log that cannot even take its header (a full disk, a read-only or broken file) is refused at start, not
  // discovered after the run: the loop's record of its stops would be lost
  // (fsync's result counts for a regular file only, where a network file system reports write errors there; a pipe
  // or a character device cannot sync and may still take the log)
  struct stat st {};
  const bool regular = ::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
  if (::fsync(fd_) != 0 && regular) {
    last_errno_ = errno;
    errors_.fetch_add(1, std::memory_order_relaxed);
  }
  if (errors_.load(std::memory_order_relaxed) != 0) {
    const int err = last_errno_;
    ::close(fd_);
    fd_ = -1;
    errors_.store(0, std::memory_order_relaxed);
    throw std::runtime_error("log_path: cannot write run log '" + path + "': " + std::strerror(err));
  }
  stop_.store(false);
  thread_ = std::thread([this] { run(); });
}

void RunLogWriter::close() {
  if (fd_ < 0) return;
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  drain(true);
  flush_chunk();
  ::fsync(fd_);
  fsyncs_.fetch_add(1);
  ::close(fd_);
  fd_ = -1;
}

void RunLogWriter::abandon_forked_copy() {
  if (fd_ < 0) return;
  if (thread_.joinable()) new std::thread(std::move(thread_));
  ::close(fd_);
  fd_ = -1;
}

void RunLogWriter::run() {
  std::int64_t last_flush = monotonic_ns(), last_sync = last_flush;
  const std::int64_t flush_ns = static_cast<std::int64_t>(flush_interval_s_ * 1e9);
  const std::int64_t sync_ns = static_cast<std::int64_t>(fsync_interval_s_ * 1e9);
  while (!stop_.load(std::memory_order_acquire)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    drain(false);
    const std::int64_t now = monotonic_ns();
    if (chunk_records_ > 0 && now - last_flush >= flush_ns) {
      flush_chunk();
      last_flush = now;
    }
    if (sync_ns > 0 && now - last_sync >= sync_ns) {
      ::fsync(fd_);
      fsyncs_.fetch_add(1, std::memory_order_relaxed);
      last_sync = now;
    }
  }
}

void RunLogWriter::drain(bool /*final*/) {
  LogItem item;
  while (ring_->pop(item)) {
    append_record(item);
    if (chunk_.size() >= kChunkHeaderBytes + kChunkTargetBytes) flush_chunk();
  }
}

void RunLogWriter::append_record(const LogItem& item) {
  const std::size_t start = chunk_.size();
  put(chunk_, item.type);
  put(chunk_, static_cast<std::uint16_t>(0));
  put(chunk_, static_cast<std::uint32_t>(0));  // body size, patched below
  switch (item.type) {
    case kRecordTick: {
      const TickRecord& t = item.tick;
      const int n = t.dof < 0 ? 0 : (t.dof > kMaxDof ? kMaxDof : t.dof);
      put(chunk_, t.deadline_ns);
      put(chunk_, t.wake_ns);
      put(chunk_, t.done_ns);
      put(chunk_, t.tick);
      put(chunk_, t.flags);
      put(chunk_, static_cast<std::int32_t>(n));
      put_doubles(chunk_, t.measured_position_si, n);
      put_doubles(chunk_, t.measured_velocity_si, n);
      put_doubles(chunk_, t.target_position_si, n);
      put_doubles(chunk_, t.command_position_si, n);
      put_doubles(chunk_, t.command_velocity_si, n);
      put_doubles(chunk_, t.command_acceleration_si, n);
      break;
    }
    case kRecordBall: {
      const BallRecord& b = item.ball;
      put(chunk_, b.tick);
      put(chunk_, b.observation.stamp_ns);
      put(chunk_, b.observation.camera_id);
      put(chunk_, b.observation.frame);
      put_doubles(chunk_, b.observation.position_m, 3);
      put(chunk_, b.observation.confidence);
      break;
    }
    case kRecordEvent: {
      const EventRecord& e = item.event;
      put(chunk_, e.stamp_ns);
      put(chunk_, e.tick);
      put(chunk_, e.code);
      put(chunk_, e.joint);
      put(chunk_, e.value);
      break;
    }
    default:
      chunk_.resize(start);
      return;
  }
  const auto body = static_cast<std::uint32_t>(chunk_.size() - start - 8);
  std::memcpy(chunk_.data() + start + 4, &body, 4);
  ++chunk_records_;
  written_.fetch_add(1, std::memory_order_relaxed);
}

void RunLogWriter::flush_chunk() {
  if (chunk_records_ == 0 || fd_ < 0) return;
  // header (docs/runlog.md): sync, payload_bytes, record_count, flags, chunk_seq, chunk_crc, header_crc
  std::uint8_t* h = chunk_.data();
  const std::size_t payload = chunk_.size() - kChunkHeaderBytes;
  put_at(h + 0, kChunkMagic);
  put_at(h + 4, static_cast<std::uint32_t>(payload));
  put_at(h + 8, chunk_records_);
  put_at(h + 12, static_cast<std::uint32_t>(0));
  put_at(h + 16, chunk_seq_);
  put_at(h + 24, crc32_update(crc32(h, 24), h + kChunkHeaderBytes, payload));
  put_at(h + 28, crc32(h, 28));
  write_all(chunk_.data(), chunk_.size());  // one write(): a crash leaves at most one partial chunk at the end
  chunks_.fetch_add(1, std::memory_order_relaxed);
  ++chunk_seq_;
  chunk_.resize(kChunkHeaderBytes);
  chunk_records_ = 0;
}

void RunLogWriter::write_all(const std::uint8_t* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd_, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      last_errno_ = errno;
      errors_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
    bytes_.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
  }
}

RunLogStats RunLogWriter::stats() const noexcept {
  RunLogStats s;
  s.records_written = written_.load(std::memory_order_relaxed);
  s.records_dropped = dropped_.load(std::memory_order_relaxed);
  s.chunks_written = chunks_.load(std::memory_order_relaxed);
  s.bytes_written = bytes_.load(std::memory_order_relaxed);
  s.fsyncs = fsyncs_.load(std::memory_order_relaxed);
  s.write_errors = errors_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace robot_rt::control
