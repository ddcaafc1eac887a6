// Shared definitions of the percept_fast native kernels (CPU C++ and CUDA).
//
// No Python and no libtorch here: tensors arrive as a data pointer plus sizes and strides (in
// elements) and a dtype code. Per-element maths is written as PR_HD inline functions so the CPU build
// (and therefore the CPU tests) exercise the exact code the CUDA kernels run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
#if defined(_OPENMP)
#include <omp.h>
#endif
#if !defined(__CUDACC__)
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#endif

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define PR_HD __host__ __device__ __forceinline__
#else
#define PR_HD inline
#endif

namespace percept_fast {

// dtype codes shared with percept_fast/ops/_common.py (DTYPE_CODES).
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// IEEE binary16 and bfloat16 stored as raw 16-bit patterns (layout-compatible with torch.half / torch.bfloat16).
struct half_t {
  uint16_t bits;
};
struct bf16_t {
  uint16_t bits;
};

PR_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

PR_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

// binary16 -> float, exact (handles subnormals, inf, NaN).
PR_HD float half_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#elif defined(__FLT16_MAX__) && defined(__F16C__)
  _Float16 v;
  std::memcpy(&v, &h, sizeof(v));
  return static_cast<float>(v);  // vcvtph2ps; vectorisable
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t expo = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (expo == 0x1fu) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (expo == 0) {
    if (mant == 0) return bits_to_float(sign);  // +-0
    // subnormal: value = mant * 2^-24
    float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return (sign != 0u) ? -v : v;
  }
  return bits_to_float(sign | ((expo + 112u) << 23) | (mant << 13));
#endif
}

// float -> binary16 with round-to-nearest-even (overflow -> inf, NaN preserved).
PR_HD uint16_t float_to_half(float f) {
  const uint32_t x = float_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520 -> inf
  if (absx < 0x38800000u) {                                                // result is subnormal or zero
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);           // < 2^-25 -> 0
    const uint32_t e = absx >> 23;
    const uint32_t m = (absx & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15 (in the shifted position)
  const uint32_t rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

PR_HD float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

// float -> bfloat16 with round-to-nearest-even (NaN kept quiet).
PR_HD uint16_t float_to_bf16(float f) {
  const uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  const uint32_t lsb = (x >> 16) & 1u;
  return static_cast<uint16_t>((x + 0x7fffu + lsb) >> 16);
}

PR_HD float pr_sqrt(float v) { return sqrtf(v); }
PR_HD double pr_sqrt(double v) { return sqrt(v); }

// Load one element of storage type T as the accumulation type Acc.
template <typename Acc, typename T>
struct Load {
  static PR_HD Acc get(const T* p) { return static_cast<Acc>(*p); }
};
template <typename Acc>
struct Load<Acc, half_t> {
  static PR_HD Acc get(const half_t* p) { return static_cast<Acc>(half_to_float(p->bits)); }
};
template <typename Acc>
struct Load<Acc, bf16_t> {
  static PR_HD Acc get(const bf16_t* p) { return static_cast<Acc>(bf16_to_float(p->bits)); }
};

// Store one accumulation-type value as storage type T (round to nearest even for half / bfloat16, as torch's .to()).
template <typename T, typename Acc>
struct Store {
  static PR_HD void put(T* p, Acc v) { *p = static_cast<T>(v); }
};
template <typename Acc>
struct Store<half_t, Acc> {
  static PR_HD void put(half_t* p, Acc v) { p->bits = float_to_half(static_cast<float>(v)); }
};
template <typename Acc>
struct Store<bf16_t, Acc> {
  static PR_HD void put(bf16_t* p, Acc v) { p->bits = float_to_bf16(static_cast<float>(v)); }
};

// Accumulation type: double for double inputs (gradcheck), float otherwise.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

// A strided 4-D [B, C, H, W] view; strides are in elements and may be anything (channels_last, slices,
// broadcast zeros).
template <typename T>
struct View4 {
  const T* data;
  int64_t size[4];
  int64_t stride[4];
  PR_HD const T* ptr(int64_t b, int64_t c, int64_t h, int64_t w) const {
    return data + b * stride[0] + c * stride[1] + h * stride[2] + w * stride[3];
  }
};

// A writable strided [B, C, H, W] output (data == nullptr: not wanted), e.g. a gradient.
template <typename T>
struct OutView4 {
  T* data;
  int64_t stride[4];
  PR_HD T* ptr(int64_t b, int64_t c, int64_t h, int64_t w) const {
    return data + b * stride[0] + c * stride[1] + h * stride[2] + w * stride[3];
  }
};

// True when the H*W pixels of each (b, c) plane are contiguous (pixel p at offset p).
PR_HD bool pixels_unit_stride(const int64_t* size, const int64_t* stride) {
  const int64_t H = size[2], W = size[3];
  if (H * W <= 1) return true;
  if (H == 1) return stride[3] == 1;
  if (W == 1) return stride[2] == 1;
  return stride[3] == 1 && stride[2] == W;
}

// Type-erased form used at the binding boundary.
struct RawView4 {
  uintptr_t data = 0;
  int64_t size[4] = {0, 0, 0, 0};
  int64_t stride[4] = {0, 0, 0, 0};
  int dtype = kFloat32;
  template <typename T>
  View4<T> as() const {
    View4<T> v;
    v.data = reinterpret_cast<const T*>(data);
    for (int i = 0; i < 4; ++i) {
      v.size[i] = size[i];
      v.stride[i] = stride[i];
    }
    return v;
  }
};

// Calls f.template operator()<T>() with T the storage type of `dtype`. Returns false for unknown codes.
template <typename F>
bool dispatch_dtype(int dtype, F&& f) {
  switch (dtype) {
    case kFloat32:
      f(static_cast<float*>(nullptr));
      return true;
    case kFloat16:
      f(static_cast<half_t*>(nullptr));
      return true;
    case kBFloat16:
      f(static_cast<bf16_t*>(nullptr));
      return true;
    case kFloat64:
      f(static_cast<double*>(nullptr));
      return true;
    default:
      return false;
  }
}

// Status bits of the CPU kernels that validate values during their pass over the inputs (the Python wrappers,
// percept_fast/ops/_common.py:raise_input_flags, turn them into the ValueError naming the argument).
enum InputFlags : int { kNonFiniteX = 1, kNonFiniteY = 2, kNonFiniteWeight = 4, kNegativeWeight = 8 };

#if !defined(__CUDACC__)
// The process this library was loaded in: a forked child (whose OpenMP and pool threads did not survive the fork)
// runs the parallel loops on fresh threads instead.
inline const pid_t kLoadedInPid = ::getpid();

// Number of threads: PF_NUM_THREADS if set; else, built with OpenMP, omp_get_max_threads() (the pool torch runs its
// own ops on, so torch.set_num_threads applies here too); else the hardware concurrency.
inline int num_threads() {
  static const int from_env = [] {
    if (const char* env = std::getenv("PF_NUM_THREADS")) {
      const int v = std::atoi(env);
      if (v > 0) return v;
    }
    return 0;
  }();
  if (from_env > 0) return from_env;
#if defined(_OPENMP)
  if (::getpid() == kLoadedInPid) return std::max(1, omp_get_max_threads());
#endif
  static const int hardware = [] {
    const unsigned hc = std::thread::hardware_concurrency();
    return hc == 0 ? 1 : static_cast<int>(hc);
  }();
  return hardware;
}

// Threads for n items: `min_per_thread` items of work per thread are required before another thread is started
// (small inputs run inline), at most num_threads().
inline int threads_for(int64_t n, int64_t min_per_thread) {
  const int64_t want = std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_thread));
  return static_cast<int>(std::min<int64_t>(want, num_threads()));
}

// Runs f(begin, end) over [0, n) split into contiguous chunks, one per thread (threads_for).
template <typename F>
void parallel_for(int64_t n, int64_t min_per_thread, F&& f) {
  if (n <= 0) return;
  const int nt = threads_for(n, min_per_thread);
  if (nt <= 1) {
    f(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> workers;
  workers.reserve(nt - 1);
  const int64_t chunk = (n + nt - 1) / nt;
  for (int t = 1; t < nt; ++t) {
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b >= e) break;
    workers.emplace_back([&f, b, e] { f(b, e); });
  }
  f(int64_t{0}, std::min(n, chunk));
  for (auto& w : workers) w.join();
}

// A persistent pool of num_threads() - 1 parked workers (created on first use, never destroyed) for
// parallel_for_pooled: waking a parked worker costs a few us where starting a std::thread costs tens (more on a
// loaded machine), which decides whether a second thread pays off on inputs of a few MB. Workers and the caller
// spin briefly (kSpinUs) before blocking: a thread blocked on a condition variable is woken tens of us late on a
// busy VM, and calls come back to back (one per layer).
class WorkerPool {
 public:
  static constexpr int kSpinUs = 50;

  // The pool, or nullptr in a forked child (its workers did not survive the fork).
  static WorkerPool* get() {
    static WorkerPool* pool = new WorkerPool(num_threads() - 1);
    return pool->pid_ == ::getpid() ? pool : nullptr;
  }

  // Runs job(i) for every i in [0, n): the caller takes jobs too, so it never waits on a worker that is slow to
  // wake (then it simply does more of them). False, with nothing run, while another call holds the pool (a
  // concurrent caller or a nested parallel region).
  template <typename Job>
  bool run(int n, const Job& job) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    const auto call = [](const void* ctx, int i) { (*static_cast<const Job*>(ctx))(i); };
    std::unique_lock<std::mutex> lk(m_);
    job_ = call;
    ctx_ = &job;
    next_ = 0;
    njobs_ = n;
    pending_.store(n, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    const bool wake = sleepers_ > 0;
    lk.unlock();
    if (wake) work_.notify_all();
    lk.lock();
    drain(lk);
    lk.unlock();
    if (!spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
      lk.lock();
      caller_waiting_ = true;
      done_.wait(lk, [this] { return pending_.load(std::memory_order_acquire) == 0; });
      caller_waiting_ = false;
    }
    return true;
  }

 private:
  explicit WorkerPool(int nworkers) : pid_(::getpid()) {
    for (int i = 0; i < nworkers; ++i) std::thread([this] { loop(); }).detach();
  }

  template <typename Pred>
  static bool spin_until(Pred pred) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinUs);
    for (int i = 1;; ++i) {
      if (pred()) return true;
      if ((i & 63) == 0 && std::chrono::steady_clock::now() > end) return false;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }

  // Takes and runs jobs until none is left (m_ held on entry and exit, released while a job runs).
  void drain(std::unique_lock<std::mutex>& lk) {
    while (next_ < njobs_) {
      const int i = next_++;
      lk.unlock();
      job_(ctx_, i);
      lk.lock();
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1 && caller_waiting_) done_.notify_all();
    }
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
      std::unique_lock<std::mutex> lk(m_);
      if (generation_.load(std::memory_order_relaxed) == seen) {
        ++sleepers_;
        work_.wait(lk, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        --sleepers_;
      }
      seen = generation_.load(std::memory_order_relaxed);
      drain(lk);
    }
  }

  const pid_t pid_;
  std::mutex busy_, m_;
  std::condition_variable work_, done_;
  // job state: written under m_ (the atomics are also read without it, to spin)
  void (*job_)(const void*, int) = nullptr;
  const void* ctx_ = nullptr;
  int next_ = 0, njobs_ = 0, sleepers_ = 0;
  bool caller_waiting_ = false;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
};

#if defined(_OPENMP)
// Whether a parallel loop may run on torch's OpenMP pool: not inside a parallel region (nested) and not in a forked
// child (whose pool threads did not survive the fork).
inline bool torch_pool_usable() { return ::getpid() == kLoadedInPid && !omp_in_parallel(); }
#endif

// parallel_for on OpenMP's pool where the library is built with it, else on the persistent WorkerPool (as many
// threads; callers' tasks must not depend on the chunking, as those of lpips / meanpool do not); falls back to
// parallel_for's fresh threads when the pool is held by another call or unusable (forked child).
template <typename F>
void parallel_for_pooled(int64_t n, int64_t min_per_thread, F&& f) {
  if (n <= 0) return;
  const int nt = threads_for(n, min_per_thread);
  if (nt <= 1) {
    f(int64_t{0}, n);
    return;
  }
  // 4 contiguous chunks per thread, taken in turn: a worker that is descheduled (another process, or torch's
  // OpenMP threads still spinning after a torch op) holds up only a small chunk; the caller takes the rest
  const int64_t njobs = std::min<int64_t>(n, 4 * int64_t{nt});
  const int64_t chunk = (n + njobs - 1) / njobs;
  const auto job = [&f, n, chunk](int i) {
    const int64_t b = i * chunk, e = std::min(n, b + chunk);
    if (b < e) f(b, e);
  };
#if defined(_OPENMP)
  // torch's own OpenMP pool (the extension links the libgomp torch loaded, by its soname): after a torch op its
  // threads spin for a while waiting for work, and a thread of ours would share a core with one of them (measured:
  // meanpool 64x512x28x28 1.2x slower right after a torch op than in a run of its own calls); on the same pool they
  // take our work instead. Not inside a parallel region (nested) and not in a forked child.
  if (torch_pool_usable()) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t i = 0; i < njobs; ++i) job(static_cast<int>(i));
    return;
  }
#endif
  WorkerPool* pool = WorkerPool::get();
  if (pool == nullptr || !pool->run(static_cast<int>(njobs), job)) parallel_for(n, min_per_thread, std::forward<F>(f));
}
#endif

}  // namespace percept_fast
