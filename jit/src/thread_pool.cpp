#include "thread_pool.hpp"

#include <map>
#include <memory>

namespace edifice::jit {
namespace {

std::pair<std::int64_t, std::int64_t> chunk(std::int64_t items, int tasks, int t) {
  return {items * t / tasks, items * (t + 1) / tasks};
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

ThreadPool::ThreadPool(int threads) {
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
  for (;;) {
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    if (index >= tasks_) continue;
    auto [begin, end] = chunk(items_, tasks_, index);
    const auto* body = body_;
    lock.unlock();
    if (begin < end) (*body)(begin, end);
    lock.lock();
    if (--pending_ == 0) done_.notify_one();
  }
}

void ThreadPool::parallel_for(std::int64_t items, int tasks,
                              const std::function<void(std::int64_t, std::int64_t)>& body) {
  if (items <= 0) return;
  tasks = std::max(1, std::min<int>(tasks, threads()));
  if (tasks > items) tasks = static_cast<int>(items);
  if (tasks == 1) {
    body(0, items);
    return;
  }
  std::lock_guard run(run_mutex_);
  {
    std::lock_guard lock(mutex_);
    body_ = &body;
    items_ = items;
    tasks_ = tasks;
    pending_ = tasks - 1;
    ++generation_;
  }
  wake_.notify_all();
  auto [begin, end] = chunk(items, tasks, 0);
  body(begin, end);
  std::unique_lock lock(mutex_);
  done_.wait(lock, [&] { return pending_ == 0; });
}

}  // namespace edifice::jit
