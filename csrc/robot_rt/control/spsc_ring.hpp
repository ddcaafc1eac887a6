// Lock-free single-producer / single-consumer buffers used between the real-time loop and other threads.
//
// SpscRing<T, N>: bounded FIFO of trivially copyable T, N a power of two, storage inline (no heap after
// construction). push() never blocks: it returns false when the ring is full (the caller counts a drop).
// pop() returns false when empty. Exactly one thread may push and one (other) thread may pop.
//
// LatestValue<T>: a single-writer sequence lock holding the most recent value. The writer never waits;
// readers retry while a write is in progress and get (value, sequence). Used for observations, where
// only the newest one matters.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace robot_rt::control {

constexpr std::size_t kCacheLine = 64;

template <typename T, std::size_t N>
class SpscRing {
  static_assert((N & (N - 1)) == 0 && N >= 2, "SpscRing capacity must be a power of two");
  static_assert(std::is_trivially_copyable<T>::value, "SpscRing holds trivially copyable values");

 public:
  static constexpr std::size_t capacity() { return N; }

  bool push(const T& value) noexcept {
    const std::size_t head = head_.load(std::memory_order_relaxed);
    if (head - tail_cache_ >= N) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (head - tail_cache_ >= N) return false;
    }
    slots_[head & (N - 1)] = value;
    head_.store(head + 1, std::memory_order_release);
    return true;
  }

  bool pop(T& out) noexcept {
    const std::size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail == head_cache_) {
      head_cache_ = head_.load(std::memory_order_acquire);
      if (tail == head_cache_) return false;
    }
    out = slots_[tail & (N - 1)];
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

  // Approximate number of queued items (exact when called by either side while the other is idle).
  std::size_t size() const noexcept {
    return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire);
  }

 private:
  alignas(kCacheLine) std::atomic<std::size_t> head_{0};  // written by the producer
  std::size_t tail_cache_ = 0;                             // producer's view of tail_
  alignas(kCacheLine) std::atomic<std::size_t> tail_{0};  // written by the consumer
  std::size_t head_cache_ = 0;                             // consumer's view of head_
  alignas(kCacheLine) T slots_[N];
};

template <typename T>
class LatestValue {
  static_assert(std::is_trivially_copyable<T>::value, "LatestValue holds trivially copyable values");

 public:
  void store(const T& value) noexcept {
    const std::uint64_t s = seq_.load(std::memory_order_relaxed);
    seq_.store(s + 1, std::memory_order_relaxed);  // odd: write in progress
    std::atomic_thread_fence(std::memory_order_release);
    std::memcpy(static_cast<void*>(&value_), &value, sizeof(T));
    seq_.store(s + 2, std::memory_order_release);
  }

  // Copies the newest value; returns its sequence number (0 = nothing stored yet, out untouched).
  std::uint64_t load(T& out) const noexcept {
    for (;;) {
      const std::uint64_t s0 = seq_.load(std::memory_order_acquire);
      if (s0 == 0) return 0;
      if (s0 & 1u) continue;
      std::memcpy(static_cast<void*>(&out), &value_, sizeof(T));
      std::atomic_thread_fence(std::memory_order_acquire);
      if (seq_.load(std::memory_order_relaxed) == s0) return s0 / 2;
    }
  }

  std::uint64_t sequence() const noexcept { return seq_.load(std::memory_order_acquire) / 2; }

 private:
  alignas(kCacheLine) std::atomic<std::uint64_t> seq_{0};
  T value_{};
};

}  // namespace robot_rt::control
