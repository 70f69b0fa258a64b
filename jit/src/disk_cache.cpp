#include "disk_cache.hpp"

#include "codegen_hash.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace edifice::jit {
namespace {

constexpr char kMagic[] = "EDIFICE-OBJECT-1\n";

// A hash of the JIT's own sources (generated at build time): any change to the code
// generator invalidates every cached object.
constexpr const char* kCodegenVersion = "edifice-codegen-" EDIFICE_CODEGEN_HASH;

std::uint64_t fnv1a(const std::string& bytes) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string default_directory() {
  if (const char* d = std::getenv("EDIFICE_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/edifice";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/edifice";
  return {};
}

// Creates each missing component of `path` with mode 0700.
bool make_directories(const std::string& path) {
  std::string partial;
  std::stringstream ss(path);
  std::string part;
  if (!path.empty() && path[0] == '/') partial = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    partial += part + "/";
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) return false;
  }
  return true;
}

// Several objects in one cache entry: "<count>\n" then "<size>\n<bytes>" per object.
std::string pack_objects(const std::vector<std::string>& objects) {
  std::string out = std::to_string(objects.size()) + "\n";
  for (const auto& o : objects) out += std::to_string(o.size()) + "\n" + o;
  return out;
}

// The inverse; nullopt for anything malformed (treated as a cache miss).
std::optional<std::vector<std::string>> unpack_objects(const std::string& bundle) {
  std::size_t pos = 0;
  auto read_number = [&](std::size_t& out) {
    std::size_t nl = bundle.find('\n', pos);
    if (nl == std::string::npos || nl == pos || nl - pos > 12) return false;
    out = 0;
    for (std::size_t i = pos; i < nl; ++i) {
      if (bundle[i] < '0' || bundle[i] > '9') return false;
      out = out * 10 + static_cast<std::size_t>(bundle[i] - '0');
    }
    pos = nl + 1;
    return true;
  };
  std::size_t count = 0;
  if (!read_number(count) || count == 0 || count > 4096) return std::nullopt;
  std::vector<std::string> objects;
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t size = 0;
    if (!read_number(size) || size > bundle.size() - pos) return std::nullopt;
    objects.push_back(bundle.substr(pos, size));
    pos += size;
  }
  if (pos != bundle.size()) return std::nullopt;
  return objects;
}

}  // namespace

std::string object_cache_key(std::uint64_t graph_hash, const Target& target) {
  return content_hash(fmt::format("{:016x}|{}|{}|{}|{}", graph_hash, target.triple, target.cpu,
                                  target.features, kCodegenVersion));
}

std::optional<std::vector<std::string>> DiskCache::load_objects(const std::string& key) const {
  if (auto bundle = load(key)) return unpack_objects(*bundle);
  return std::nullopt;
}

void DiskCache::store_objects(const std::string& key,
                              const std::vector<std::string>& objects) const {
  store(key, pack_objects(objects));
}

std::string content_hash(const std::string& bytes) {
  return fmt::format("{:016x}", fnv1a(bytes));
}

DiskCache::DiskCache(std::string dir) : dir_(dir.empty() ? default_directory() : std::move(dir)) {
  // Unusable (every load misses, every store is skipped): disabled by EDIFICE_CACHE=0, no
  // directory (HOME unset), one that cannot be created or is not a directory, or one that is
  // not owned by this user or is writable by others.
  if (const char* e = std::getenv("EDIFICE_CACHE"); e && std::string(e) == "0") return;
  if (dir_.empty() || !make_directories(dir_)) return;
  struct stat st {};
  if (::stat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
  if (st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) return;
  usable_ = true;
}

std::string DiskCache::path_for(const std::string& key) const {
  return dir_ + "/" + key + ".o";
}

std::optional<std::string> DiskCache::load(const std::string& key) const {
  if (!usable_) return std::nullopt;
  std::ifstream in(path_for(key), std::ios::binary);
  if (!in) return std::nullopt;
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Header: magic, "key <key>\n", "size <n>\n", "hash <h>\n", then the object bytes.
  std::istringstream header(contents);
  std::string magic_line, k, key_read, s, h, hash_read;
  std::size_t size = 0;
  if (!std::getline(header, magic_line) || magic_line + "\n" != kMagic) return std::nullopt;
  if (!(header >> k >> key_read >> s >> size >> h >> hash_read)) return std::nullopt;
  if (k != "key" || s != "size" || h != "hash" || key_read != key) return std::nullopt;
  header.get();  // the newline after the hash
  auto offset = static_cast<std::size_t>(header.tellg());
  if (offset > contents.size() || contents.size() - offset != size) return std::nullopt;
  std::string object = contents.substr(offset);
  if (content_hash(object) != hash_read) return std::nullopt;
  return object;
}

void DiskCache::store(const std::string& key, const std::string& object) const {
  if (!usable_) return;
  std::string data = std::string(kMagic) + "key " + key + "\nsize " +
                     std::to_string(object.size()) + "\nhash " + content_hash(object) + "\n" +
                     object;
  std::string tmp = fmt::format("{}.tmp.{}", path_for(key), ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  std::size_t written = 0;
  while (written < data.size()) {
    ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n <= 0) break;
    written += static_cast<std::size_t>(n);
  }
  bool ok = written == data.size() && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path_for(key).c_str()) != 0) ::unlink(tmp.c_str());
}

}  // namespace edifice::jit
