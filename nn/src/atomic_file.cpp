#include <edifice/nn/atomic_file.hpp>

#include <edifice/core/error.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <system_error>

namespace edifice::nn {
namespace detail {
namespace {
std::atomic<AtomicWriteHook> g_hook{nullptr};
}  // namespace
void set_atomic_write_hook(AtomicWriteHook hook) {
  g_hook.store(hook);
}
}  // namespace detail

namespace {

constexpr std::size_t kChunk = std::size_t{1} << 20;

std::string errno_text(int err) {
  return std::error_code(err, std::generic_category()).message();
}

[[noreturn]] void fail_errno(const std::string& path, const std::string& step, int err) {
  fail("cannot write \"{}\": {} failed: {}", path, step, errno_text(err));
}

// Splits "a/b/c" into ("a/b", "c"); "c" into (".", "c"); "/c" into ("/", "c").
std::pair<std::string, std::string> split_path(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return {".", path};
  std::string dir = slash == 0 ? std::string("/") : path.substr(0, slash);
  return {dir, path.substr(slash + 1)};
}

// Removes the temporary file unless the rename has happened.
struct TempFile {
  std::string path;
  int fd = -1;
  bool renamed = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!renamed && !path.empty()) ::unlink(path.c_str());
  }
};

int open_temp(const std::string& dir, const std::string& base, mode_t mode, std::string& out) {
  static std::atomic<unsigned> counter{0};
  std::string prefix = (dir == "/" ? "/" : dir + "/") + "." + base + ".tmp.";
  for (int attempt = 0; attempt < 100; ++attempt) {
    out = prefix + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  errno = EEXIST;
  return -1;
}

}  // namespace

void write_file_atomically(const std::string& path, std::string_view bytes) {
  std::string_view piece[1] = {bytes};
  write_file_atomically(path, std::span<const std::string_view>(piece));
}

void write_file_atomically(const std::string& path, std::span<const std::string_view> pieces) {
  auto [dir, base] = split_path(path);
  if (base.empty() || base == "." || base == "..")
    fail("cannot write \"{}\": the path names a directory, not a file", path);

  // Keep an existing file's permissions; refuse early if the target cannot be a file.
  mode_t mode = 0644;
  bool preserve_mode = false;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail("cannot write \"{}\": it is a directory", path);
    if (S_ISREG(st.st_mode)) {
      mode = st.st_mode & 07777;
      preserve_mode = true;
    }
  } else if (errno != ENOENT) {
    fail_errno(path, "checking the existing file", errno);
  }

  TempFile temp;
  temp.fd = open_temp(dir, base, mode, temp.path);
  if (temp.fd < 0) {
    int err = errno;
    temp.path.clear();  // nothing was created
    fail_errno(path, fmt::format("creating a temporary file in \"{}\"", dir), err);
  }
  // open() applies the umask; an existing file's mode must come back exactly.
  if (preserve_mode && ::fchmod(temp.fd, mode) != 0)
    fail_errno(path, fmt::format("setting the mode of \"{}\"", temp.path), errno);

  std::uint64_t written = 0;
  for (std::string_view piece : pieces) {
    while (!piece.empty()) {
      std::size_t n = std::min(piece.size(), kChunk);
      ssize_t w = ::write(temp.fd, piece.data(), n);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail_errno(path, fmt::format("writing \"{}\"", temp.path), errno);
      }
      piece.remove_prefix(static_cast<std::size_t>(w));
      written += static_cast<std::uint64_t>(w);
      if (auto hook = detail::g_hook.load()) hook(temp.path, written);
    }
  }
  if (::fsync(temp.fd) != 0) fail_errno(path, fmt::format("fsync of \"{}\"", temp.path), errno);
  int fd = temp.fd;
  temp.fd = -1;
  // close() can report a deferred write error (NFS); it is still the last chance to see it.
  if (::close(fd) != 0) fail_errno(path, fmt::format("closing \"{}\"", temp.path), errno);

  if (::rename(temp.path.c_str(), path.c_str()) != 0)
    fail_errno(path, fmt::format("renaming \"{}\" over it", temp.path), errno);
  temp.renamed = true;

  // Make the rename durable. Some file systems cannot fsync a directory (EINVAL): the data is
  // already safe there, so that is not an error.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) fail_errno(path, fmt::format("opening directory \"{}\" to fsync it", dir), errno);
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  if (rc != 0 && err != EINVAL)
    fail_errno(path, fmt::format("fsync of directory \"{}\"", dir), err);
}

}  // namespace edifice::nn
