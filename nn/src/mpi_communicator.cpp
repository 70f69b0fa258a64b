// The MPI communicator (distributed.hpp), compiled only when CMake found MPI (EDIFICE_MPI).
// Every collective is non-blocking and waited for with a deadline, so a rank whose peer hangs
// aborts the job with a message instead of waiting forever.
#include <edifice/core/error.hpp>
#include <edifice/nn/distributed.hpp>

#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace edifice::nn {
namespace {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, static_cast<std::size_t>(length));
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const MpiOptions& options) : timeout_s_(options.timeout_s) {
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    // Errors come back as codes (then abort with a message naming the rank), not as MPI's
    // default abort without context.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    MPI_Get_library_version(version, &length);
    std::string v(version, static_cast<std::size_t>(length));
    name_ = "MPI (" + v.substr(0, v.find(',')) + ")";
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }

  void broadcast(std::span<std::byte> bytes, int root) override {
    MPI_Request request;
    check(MPI_Ibcast(bytes.data(), count(bytes.size()), MPI_BYTE, root, comm_, &request),
          "MPI_Ibcast");
    wait(request, "a broadcast");
  }

  void allgather(std::span<const std::byte> send, std::span<std::byte> recv) override {
    MPI_Request request;
    check(MPI_Iallgather(send.data(), count(send.size()), MPI_BYTE, recv.data(), count(send.size()),
                         MPI_BYTE, comm_, &request),
          "MPI_Iallgather");
    wait(request, "an allgather");
  }

  // All buckets in flight at once; each is handed on as soon as it completes.
  void allgather_buckets(std::span<const std::byte> send, std::size_t bucket_bytes,
                         const BucketArrived& arrived) override {
    const std::size_t buckets = (send.size() + bucket_bytes - 1) / bucket_bytes;
    std::vector<MPI_Request> requests(buckets);
    std::vector<std::vector<std::byte>> gathered(buckets);
    for (std::size_t b = 0; b < buckets; ++b) {
      const std::size_t offset = b * bucket_bytes;
      const std::size_t length = std::min(bucket_bytes, send.size() - offset);
      gathered[b].resize(length * static_cast<std::size_t>(size_));
      check(MPI_Iallgather(send.data() + offset, count(length), MPI_BYTE, gathered[b].data(),
                           count(length), MPI_BYTE, comm_, &requests[b]),
            "MPI_Iallgather");
    }
    const auto deadline = start_deadline();
    for (std::size_t done = 0; done < buckets; ++done) {
      int index = MPI_UNDEFINED;
      poll_until(deadline, "the gradient exchange", [&] {
        int flag = 0;
        check(MPI_Testany(static_cast<int>(buckets), requests.data(), &index, &flag,
                          MPI_STATUS_IGNORE),
              "MPI_Testany");
        return flag != 0;
      });
      const auto b = static_cast<std::size_t>(index);
      arrived(b * bucket_bytes, gathered[b].size() / static_cast<std::size_t>(size_), gathered[b]);
    }
  }

  [[noreturn]] void abort(const std::string& message, int code) override {
    std::fprintf(stderr, "edifice: rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  using Clock = std::chrono::steady_clock;

  int count(std::size_t bytes) {
    if (bytes > static_cast<std::size_t>(INT_MAX))
      abort(fmt::format("a message of {} bytes exceeds MPI's int count", bytes), 1);
    return static_cast<int>(bytes);
  }

  void check(int code, const char* call) {
    if (code != MPI_SUCCESS) abort(fmt::format("{} failed: {}", call, mpi_error_text(code)), 1);
  }

  Clock::time_point start_deadline() const {
    return Clock::now() +
           std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
  }

  // Polls `done` until it says true, yielding the core (ranks may share cores), and aborts the
  // job at the deadline.
  template <typename Done>
  void poll_until(Clock::time_point deadline, const char* what, Done&& done) {
    for (int spins = 0; !done(); ++spins) {
      if (Clock::now() > deadline)
        abort(fmt::format("{} did not complete within {} s (a rank died, hangs or is slower than "
                          "MpiOptions::timeout_s); ending the job",
                          what, timeout_s_),
              1);
      if (spins < 1000)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  void wait(MPI_Request& request, const char* what) {
    poll_until(start_deadline(), what, [&] {
      int flag = 0;
      check(MPI_Test(&request, &flag, MPI_STATUS_IGNORE), "MPI_Test");
      return flag != 0;
    });
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  double timeout_s_;
  std::string name_;
};

}  // namespace

bool mpi_available() {
  return true;
}

std::shared_ptr<Communicator> mpi(const MpiOptions& options) {
  if (!(options.timeout_s > 0))
    fail("nn::mpi(): timeout_s must be > 0 seconds, got {}", options.timeout_s);
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      fail("nn::mpi(): MPI_Init_thread failed");
    std::atexit(finalize_at_exit);
  }
  return std::make_shared<MpiCommunicator>(options);
}

}  // namespace edifice::nn
