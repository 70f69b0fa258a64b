// The thread pool: every item runs exactly once, in chunks that start on a multiple of the
// grain, whatever the thread and task counts.
#include "../../jit/src/thread_pool.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
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
  // they sleep, and its end notifies the caller only if it waits. The rounds start after
  // pauses around the spin length (workers spinning, falling asleep or asleep), and the
  // workers' items are slow now and then so the caller waits for them. The loops run on a
  // thread of their own so that a missed wake-up fails the test instead of hanging it.
  ThreadPool& pool = ThreadPool::shared(3);
  auto loops = std::async(std::launch::async, [&pool] {
    const auto caller = std::this_thread::get_id();
    for (int round = 0; round < 200; ++round) {
      std::this_thread::sleep_for(std::chrono::microseconds(5 * (round % 40)));
      std::atomic<std::int64_t> sum{0};
      pool.parallel_for(64, 3, [&](std::int64_t begin, std::int64_t end) {
        if (round % 3 == 0 && std::this_thread::get_id() != caller)
          std::this_thread::sleep_for(std::chrono::microseconds(300));
        for (std::int64_t i = begin; i < end; ++i) sum += i;
      });
      if (sum != 64 * 63 / 2) return round;
    }
    return -1;
  });
  if (loops.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    // A blocked loop cannot be joined, nor the pool destroyed: leave at once.
    std::fprintf(stderr, "a parallel_for did not finish within 60 s: a missed wake-up\n");
    std::_Exit(EXIT_FAILURE);
  }
  CHECK(loops.get() == -1);  // else the round whose items did not all run
}
