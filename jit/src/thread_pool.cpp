#include "thread_pool.hpp"

#include <algorithm>
#include <map>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace edifice::jit {
namespace {

// Spin iterations before sleeping: ~50-100 us of pause instructions, longer than the gap
// between two kernels of a run, shorter than a scheduler tick.
constexpr int kSpinIterations = 1 << 11;

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until done() or the spin budget runs out; returns done().
template <typename Done>
bool spin_until(Done done) {
  for (int i = 0; i < kSpinIterations; ++i) {
    if (done()) return true;
    cpu_relax();
  }
  return done();
}

std::pair<std::int64_t, std::int64_t> chunk(std::int64_t items, std::int64_t chunks,
                                            std::int64_t c) {
  return {items * c / chunks, items * (c + 1) / chunks};
}

// Claims the first (owner) or last (thief) unclaimed chunk of a share; -1 when none is left.
std::int64_t claim(std::atomic<std::uint64_t>& span, bool front) {
  std::uint64_t v = span.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t lo = v & 0xffffffffu, hi = v >> 32;
    if (lo >= hi) return -1;
    const std::uint64_t next = front ? (hi << 32 | (lo + 1)) : ((hi - 1) << 32 | lo);
    if (span.compare_exchange_weak(v, next, std::memory_order_relaxed))
      return static_cast<std::int64_t>(front ? lo : hi - 1);
  }
}

}  // namespace

ThreadPool& ThreadPool::shared(int threads) {
  static std::mutex m;
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  std::lock_guard lock(m);
  auto& p = pools[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

ThreadPool::ThreadPool(int threads) : shares_(std::make_unique<Share[]>(std::max(1, threads))) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::worker_loop(int index) {
  std::uint64_t seen = 0;
  auto ready = [&] {
    // seq_cst: ordered after this worker's sleepers_ increment (see parallel_for).
    return stop_.load(std::memory_order_acquire) ||
           generation_.load(std::memory_order_seq_cst) != seen;
  };
  for (;;) {
    if (!spin_until(ready)) {
      std::unique_lock lock(mutex_);
      // Announced under the mutex before the predicate is checked: a caller that bumps the
      // generation after this check sees the sleeper and notifies (see parallel_for).
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      wake_.wait(lock, ready);
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
    if (stop_) return;
    seen = generation_.load(std::memory_order_acquire);
    if (index < tasks_) run_chunks(index);
    // Every worker acknowledges every loop (idle ones too), so none reads the loop's fields
    // after the caller has moved on to the next.
    if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        caller_sleeping_.load(std::memory_order_seq_cst)) {
      // Under the mutex, so a caller between its check and its wait cannot miss this.
      std::lock_guard lock(mutex_);
      done_.notify_one();
    }
  }
}

void ThreadPool::run_chunks(int task) {
  const std::int64_t units = (items_ + grain_ - 1) / grain_;
  auto run = [&](std::int64_t c) {
    auto [first, last] = chunk(units, chunks_, c);
    const std::int64_t begin = first * grain_, end = std::min(last * grain_, items_);
    if (begin < end) (*body_)(begin, end);
  };
  for (std::int64_t c; (c = claim(shares_[task].span, true)) >= 0;) run(c);
  for (int i = 1; i < tasks_; ++i) {
    const int victim = (task + i) % tasks_;
    for (std::int64_t c; (c = claim(shares_[victim].span, false)) >= 0;) run(c);
  }
}

void ThreadPool::parallel_for(std::int64_t items, int tasks,
                              const std::function<void(std::int64_t, std::int64_t)>& body,
                              std::int64_t grain) {
  if (items <= 0) return;
  grain = std::max<std::int64_t>(1, grain);
  const std::int64_t units = (items + grain - 1) / grain;
  tasks = std::max(1, std::min<int>(tasks, threads()));
  if (tasks > units) tasks = static_cast<int>(units);
  if (tasks == 1) {
    body(0, items);
    return;
  }
  std::lock_guard run(run_mutex_);
  body_ = &body;
  items_ = items;
  grain_ = grain;
  tasks_ = tasks;
  chunks_ = std::min<std::int64_t>(units, std::int64_t{tasks} * kChunksPerTask);
  for (int t = 0; t < tasks; ++t) {
    auto [first, last] = chunk(chunks_, tasks, t);  // task t's share of the chunks
    shares_[t].span.store(
        static_cast<std::uint64_t>(last) << 32 | static_cast<std::uint64_t>(first),
        std::memory_order_relaxed);
  }
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  // The mutex and the futex only when a worker sleeps: a sleeper announced itself before it
  // checked the generation, so either it sees this bump or this load sees it (both seq_cst).
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard lock(mutex_); }  // the sleeper is inside wait(), not before it
    wake_.notify_all();
  }
  run_chunks(0);
  // seq_cst: ordered after caller_sleeping_'s store (see worker_loop).
  auto finished = [&] { return pending_.load(std::memory_order_seq_cst) == 0; };
  if (!spin_until(finished)) {
    std::unique_lock lock(mutex_);
    caller_sleeping_.store(true, std::memory_order_seq_cst);
    done_.wait(lock, finished);
    caller_sleeping_.store(false, std::memory_order_relaxed);
  }
}

}  // namespace edifice::jit
