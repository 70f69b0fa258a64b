#pragma once
// A fixed pool of worker threads running one parallel loop at a time. Work items are split
// into contiguous, equal chunks decided only by the item count and the task count, and every
// item runs the same code whoever runs it, so results never depend on scheduling.

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
  const std::function<void(std::int64_t, std::int64_t)>* body_ = nullptr;
  std::int64_t items_ = 0;
  int tasks_ = 0;
  int pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  std::mutex run_mutex_;  // one parallel_for at a time
};

}  // namespace edifice::jit
