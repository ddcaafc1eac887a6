// Run log writer (runlog.hpp): what it writes is the documented version-2 format (docs/runlog.md), parsed here
// independently: file header CRC, per chunk the sync marker, header CRC, chunk CRC (header fields + payload),
// sequence numbers from 0, record counts; records round-trip bit-exactly; a full ring drops and counts.
#include <doctest/doctest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "crc32.hpp"
#include "runlog.hpp"
#include "test_util.hpp"

using namespace robot_rt::control;
using robot_rt::control::testing::Random;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/runlog_test_XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::remove((path + "/log.rrlog").c_str());
    rmdir(path.c_str());
  }
  std::string file() const { return path + "/log.rrlog"; }
};

template <typename T>
T get(const std::vector<std::uint8_t>& d, std::size_t at) {
  T v;
  std::memcpy(&v, d.data() + at, sizeof(T));
  return v;
}

struct ParsedRecord {
  std::uint16_t type;
  std::size_t body_at;
  std::uint32_t body_bytes;
};

struct Parsed {
  std::string meta;
  std::vector<ParsedRecord> records;  // excluding the meta record
  std::uint64_t chunks = 0;
};

// Parses a whole intact log following docs/runlog.md; REQUIREs every check.
Parsed parse(const std::vector<std::uint8_t>& d) {
  Parsed out;
  REQUIRE(d.size() >= kRunLogFileHeaderBytes);
  REQUIRE(std::memcmp(d.data(), "RRTLOG01", 8) == 0);
  REQUIRE(get<std::uint32_t>(d, 8) == 2u);
  REQUIRE(get<std::uint32_t>(d, 12) == kRunLogFileHeaderBytes);
  REQUIRE(get<std::uint32_t>(d, 16) == 0u);
  REQUIRE(get<std::uint32_t>(d, 20) == crc32(d.data(), 20));
  std::size_t pos = kRunLogFileHeaderBytes;
  while (pos < d.size()) {
    REQUIRE(pos + kChunkHeaderBytes <= d.size());
    REQUIRE(std::memcmp(d.data() + pos, "RRTC", 4) == 0);
    const auto payload = get<std::uint32_t>(d, pos + 4);
    const auto count = get<std::uint32_t>(d, pos + 8);
    REQUIRE(get<std::uint32_t>(d, pos + 12) == 0u);
    REQUIRE(get<std::uint64_t>(d, pos + 16) == out.chunks);
    REQUIRE(get<std::uint32_t>(d, pos + 28) == crc32(d.data() + pos, 28));
    const std::size_t start = pos + kChunkHeaderBytes, end = start + payload;
    REQUIRE(end <= d.size());
    REQUIRE(get<std::uint32_t>(d, pos + 24) == crc32_update(crc32(d.data() + pos, 24), d.data() + start, payload));
    std::size_t at = start;
    for (std::uint32_t r = 0; r < count; ++r) {
      REQUIRE(at + 8 <= end);
      const auto type = get<std::uint16_t>(d, at);
      REQUIRE(get<std::uint16_t>(d, at + 2) == 0u);
      const auto body = get<std::uint32_t>(d, at + 4);
      REQUIRE(at + 8 + body <= end);
      if (type == kRecordMeta) {
        REQUIRE(out.chunks == 0);
        out.meta.assign(reinterpret_cast<const char*>(d.data() + at + 8), body);
      } else {
        out.records.push_back({type, at + 8, body});
      }
      at += 8 + body;
    }
    REQUIRE(at == end);
    pos = end;
    ++out.chunks;
  }
  return out;
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(f), {});
}

LogItem random_tick(Random& rng, std::uint64_t tick, int dof) {
  LogItem item;
  item.type = kRecordTick;
  TickRecord& t = item.tick;
  t.deadline_ns = rng.integer(0, 1 << 30);
  t.wake_ns = t.deadline_ns + rng.integer(0, 100000);
  t.done_ns = t.wake_ns + rng.integer(0, 100000);
  t.tick = tick;
  t.flags = rng.bits() & 0x3FF;
  t.dof = dof;
  for (int i = 0; i < kMaxDof; ++i) {
    t.measured_position_si[i] = rng.uniform(-3, 3);
    t.measured_velocity_si[i] = rng.uniform(-3, 3);
    t.target_position_si[i] = rng.uniform(-3, 3);
    t.command_position_si[i] = rng.uniform(-3, 3);
    t.command_velocity_si[i] = rng.uniform(-3, 3);
    t.command_acceleration_si[i] = rng.uniform(-30, 30);
  }
  return item;
}

}  // namespace

TEST_CASE("writer output is the documented format and records round-trip exactly") {
  TempDir dir;
  Random rng(50);
  const std::string meta = R"({"robot": "test", "dof": 5})";
  std::vector<LogItem> pushed;
  {
    RunLogWriter w;
    w.open(dir.file(), meta, /*flush_interval_s=*/0.002, /*fsync_interval_s=*/0.0);
    for (std::uint64_t k = 1; k <= 3000; ++k) {
      pushed.push_back(random_tick(rng, k, 5));
      if (k % 7 == 0) {
        LogItem e;
        e.type = kRecordEvent;
        e.event = EventRecord{static_cast<std::int64_t>(k) * 1000, k, rng.integer(1, 30), rng.integer(-1, 4),
                              rng.uniform(-1, 1)};
        pushed.push_back(e);
      }
      if (k % 11 == 0) {
        LogItem b;
        b.type = kRecordBall;
        b.ball.tick = k;
        b.ball.observation.stamp_ns = static_cast<std::int64_t>(k);
        b.ball.observation.camera_id = 1;
        b.ball.observation.frame = static_cast<std::uint32_t>(k);
        for (double& x : b.ball.observation.position_m) x = rng.uniform(-2, 2);
        b.ball.observation.confidence = rng.uniform(0, 1);
        pushed.push_back(b);
      }
    }
    std::size_t next = 0;
    while (next < pushed.size()) {  // never overrun the ring: wait for the writer when full
      if (w.push(pushed[next])) {
        ++next;
      } else {
        usleep(500);
      }
    }
    w.close();
    const RunLogStats s = w.stats();
    CHECK(s.records_written == pushed.size());
    CHECK(s.write_errors == 0u);
    CHECK(s.chunks_written > 2u);  // several chunks (flush every 2 ms)
    CHECK_FALSE(w.push(pushed[0]));  // closed
  }
  const std::vector<std::uint8_t> d = read_file(dir.file());
  const Parsed p = parse(d);
  CHECK(p.meta == meta);
  REQUIRE(p.records.size() == pushed.size());
  for (std::size_t k = 0; k < pushed.size(); ++k) {
    const LogItem& in = pushed[k];
    const ParsedRecord& r = p.records[k];
    REQUIRE(r.type == in.type);
    const std::size_t at = r.body_at;
    if (in.type == kRecordTick) {
      const TickRecord& t = in.tick;
      REQUIRE(r.body_bytes == 40u + 48u * static_cast<std::uint32_t>(t.dof));
      CHECK(get<std::int64_t>(d, at) == t.deadline_ns);
      CHECK(get<std::int64_t>(d, at + 8) == t.wake_ns);
      CHECK(get<std::int64_t>(d, at + 16) == t.done_ns);
      CHECK(get<std::uint64_t>(d, at + 24) == t.tick);
      CHECK(get<std::uint32_t>(d, at + 32) == t.flags);
      CHECK(get<std::int32_t>(d, at + 36) == t.dof);
      const double* arrays[6] = {t.measured_position_si, t.measured_velocity_si,  t.target_position_si,
                                 t.command_position_si,  t.command_velocity_si, t.command_acceleration_si};
      for (int a = 0; a < 6; ++a)
        for (int i = 0; i < t.dof; ++i) CHECK(get<double>(d, at + 40 + 8 * (a * t.dof + i)) == arrays[a][i]);
    } else if (in.type == kRecordEvent) {
      REQUIRE(r.body_bytes == 32u);
      CHECK(get<std::int64_t>(d, at) == in.event.stamp_ns);
      CHECK(get<std::uint64_t>(d, at + 8) == in.event.tick);
      CHECK(get<std::int32_t>(d, at + 16) == in.event.code);
      CHECK(get<std::int32_t>(d, at + 20) == in.event.joint);
      CHECK(get<double>(d, at + 24) == in.event.value);
    } else {
      REQUIRE(r.body_bytes == 56u);
      const BallObservation& o = in.ball.observation;
      CHECK(get<std::uint64_t>(d, at) == in.ball.tick);
      CHECK(get<std::int64_t>(d, at + 8) == o.stamp_ns);
      CHECK(get<std::uint32_t>(d, at + 16) == o.camera_id);
      CHECK(get<std::uint32_t>(d, at + 20) == o.frame);
      for (int k3 = 0; k3 < 3; ++k3) CHECK(get<double>(d, at + 24 + 8 * k3) == o.position_m[k3]);
      CHECK(get<double>(d, at + 48) == o.confidence);
    }
  }
}

TEST_CASE("a full ring drops records without blocking, and counts exactly what it dropped") {
  TempDir dir;
  Random rng(51);
  RunLogWriter w;
  w.open(dir.file(), "{}", 0.05, 0.0);
  // Push (one precomputed record, renumbered) until the ring has overflowed a few times: faster than a 2 ms drain.
  LogItem item = random_tick(rng, 0, 2);
  int n = 0, accepted = 0;
  while (n < 4'000'000 && w.stats().records_dropped < 100) {
    for (int k = 0; k < 1000; ++k) {
      item.tick.tick = static_cast<std::uint64_t>(++n);
      accepted += w.push(item) ? 1 : 0;
    }
  }
  w.close();
  const RunLogStats s = w.stats();
  CHECK(s.records_dropped >= 100u);
  CHECK(s.records_written == static_cast<std::uint64_t>(accepted));
  CHECK(s.records_written + s.records_dropped == static_cast<std::uint64_t>(n));
  const Parsed p = parse(read_file(dir.file()));
  CHECK(p.records.size() == s.records_written);
  // the ticks written keep their order (gaps where records were dropped)
  const std::vector<std::uint8_t> d = read_file(dir.file());
  std::uint64_t previous = 0;
  for (const ParsedRecord& r : p.records) {
    const auto tick = get<std::uint64_t>(d, r.body_at + 24);
    REQUIRE(tick > previous);
    previous = tick;
  }
}

TEST_CASE("open fails with the path in the message, and a second open is refused") {
  RunLogWriter w;
  CHECK_THROWS_WITH_AS(w.open("/nonexistent-dir/x.rrlog", "{}", 0.05, 1.0), doctest::Contains("/nonexistent-dir/x.rrlog"),
                       std::runtime_error);
  TempDir dir;
  w.open(dir.file(), "{}", 0.05, 1.0);
  CHECK(w.is_open());
  CHECK_THROWS_AS(w.open(dir.file(), "{}", 0.05, 1.0), std::runtime_error);
  w.close();
  w.close();  // idempotent
  CHECK_FALSE(w.is_open());
}
