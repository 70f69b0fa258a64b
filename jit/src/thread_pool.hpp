#pragma once
// A fixed pool of worker threads running one parallel loop at a time. Work items are split
// into contiguous, equal chunks decided only by the item count and the task count, and every
// item runs the same code whoever runs it, so results never depend on scheduling.
// Kernels run back to back with gaps of microseconds, and waking a sleeping thread costs tens
// of microseconds on a VM: so workers spin (with pause) for a while after each loop before they
// sleep on the condition variable, and the caller spins before it waits for them.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace edifice::jit {

class ThreadPool {
 public:
  /// The process-wide pool with `threads` workers in total (the caller counts as one).
  static ThreadPool& shared(int threads);

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  /// Runs body(begin, end) over [0, items) split into `tasks` chunks (at most threads()).
  void parallel_for(std::int64_t items, int tasks,
                    const std::function<void(std::int64_t, std::int64_t)>& body);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  // The current loop: written by parallel_for before generation_ is bumped (release), read by
  // workers after they see the new generation (acquire).
  const std::function<void(std::int64_t, std::int64_t)>* body_ = nullptr;
  std::int64_t items_ = 0;
  int tasks_ = 0;
  std::atomic<int> pending_{0};               // worker chunks still running
  std::atomic<std::uint64_t> generation_{0};  // bumped (under mutex_) per loop
  std::atomic<bool> stop_{false};
  std::mutex run_mutex_;  // one parallel_for at a time
};

}  // namespace edifice::jit
