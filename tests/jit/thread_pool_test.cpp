// The thread pool: every item runs exactly once, in chunks that start on a multiple of the
// grain, whatever the thread and task counts.
#include "../../jit/src/thread_pool.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

using edifice::jit::ThreadPool;

TEST_CASE("parallel_for runs every item once in chunks of whole grains", "[jit][thread_pool]") {
  for (int threads : {1, 2, 3}) {
    ThreadPool& pool = ThreadPool::shared(threads);
    for (std::int64_t items : {1, 7, 64, 1000})
      for (std::int64_t grain : {1, 3, 22, 2000})
        for (int tasks : {1, 2, 3}) {
          INFO("threads " << threads << " items " << items << " grain " << grain << " tasks "
                          << tasks);
          std::vector<std::atomic<int>> runs(static_cast<std::size_t>(items));
          std::atomic<bool> aligned{true};
          pool.parallel_for(
              items, tasks,
              [&](std::int64_t begin, std::int64_t end) {
                if (begin % grain != 0 || (end != items && end % grain != 0)) aligned = false;
                for (std::int64_t i = begin; i < end; ++i) ++runs[static_cast<std::size_t>(i)];
              },
              grain);
          CHECK(aligned);
          for (const auto& r : runs) CHECK(r == 1);
        }
  }
}

TEST_CASE("loops started while the workers sleep or spin all finish", "[jit][thread_pool]") {
  // Workers sleep after spinning ~100 us; a loop's start wakes them only if they announced
  // they sleep, and its end notifies the caller only if it waits: a missed wake-up would hang.
  ThreadPool& pool = ThreadPool::shared(3);
  for (int round = 0; round < 40; ++round) {
    if (round % 2 == 0) std::this_thread::sleep_for(std::chrono::microseconds(50 * round));
    std::atomic<std::int64_t> sum{0};
    pool.parallel_for(64, 3, [&](std::int64_t begin, std::int64_t end) {
      // A slow item now and then, so the caller also waits for the workers.
      if (begin == 0 && round % 3 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      for (std::int64_t i = begin; i < end; ++i) sum += i;
    });
    CHECK(sum == 64 * 63 / 2);
  }
}
