#pragma once
// A fixed pool of worker threads running one parallel loop at a time. Each thread owns a
// contiguous share of the items (the same share every run, so its operands stay in its own
// caches between runs), cut into a few chunks it runs in order from the front; a thread that
// runs out takes chunks from the back of another's share. So a thread whose items are cheaper
// (query tiles against key tiles, a band's edge) or whose core is shared with another process
// does not leave the other idle at the end of the loop. Every item runs the same code whoever
// runs it, so results never depend on scheduling.
// Kernels run back to back with gaps of microseconds, and waking a sleeping thread costs tens
// of microseconds on a VM: so workers spin (with pause) for a while after each loop before they
// sleep on the condition variable, and the caller spins before it waits for them.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace edifice::jit {

class ThreadPool {
 public:
  /// Chunks per participating thread: enough that stolen chunks even out the threads'
  /// finishing times, few enough that claiming one (a compare-and-swap) stays negligible and
  /// the items of a chunk still share their packed GEMM panels.
  static constexpr int kChunksPerTask = 8;

  /// The process-wide pool with `threads` workers in total (the caller counts as one).
  static ThreadPool& shared(int threads);

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  /// Runs body(begin, end) over [0, items) on `tasks` threads (at most threads()), in chunks
  /// of about items / (tasks * kChunksPerTask) items (see the top of this file), each a whole
  /// number of `grain` items (the last may be short).
  void parallel_for(std::int64_t items, int tasks,
                    const std::function<void(std::int64_t, std::int64_t)>& body,
                    std::int64_t grain = 1);

 private:
  void worker_loop(int index);
  // Runs thread `task`'s chunks of the current loop, then steals the others' until none is
  // left.
  void run_chunks(int task);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  // The current loop: written by parallel_for before generation_ is bumped (release), read by
  // workers after they see the new generation (acquire).
  const std::function<void(std::int64_t, std::int64_t)>* body_ = nullptr;
  std::int64_t items_ = 0;
  std::int64_t grain_ = 1;
  std::int64_t chunks_ = 0;
  int tasks_ = 0;
  // Per task: the chunks [front, back) of its share not yet claimed, packed as
  // back << 32 | front; the owner claims the front, thieves the back.
  struct alignas(64) Share {
    std::atomic<std::uint64_t> span{0};
  };
  std::unique_ptr<Share[]> shares_;
  std::atomic<int> pending_{0};               // worker chunks still running
  std::atomic<std::uint64_t> generation_{0};  // bumped per loop
  std::atomic<bool> stop_{false};
  // Workers waiting on wake_, and whether the caller waits on done_ (both changed under
  // mutex_): a loop's start and end take the mutex and notify only when someone sleeps.
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::mutex run_mutex_;  // one parallel_for at a time
};

}  // namespace edifice::jit
