// The thread pool: every item runs exactly once, in chunks that start on a multiple of the
// grain, whatever the thread and task counts.
#include "../../jit/src/thread_pool.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
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
