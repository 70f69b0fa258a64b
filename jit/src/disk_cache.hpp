#pragma once
// The on-disk object cache: one file per compiled graph, named by a content key (the hash of
// the rewritten, shape-specialised graph, the target and the code generator version:
// object_cache_key). Files carry a header with the key, the size and a checksum of the object;
// anything that does not verify is treated as a miss and replaced, never executed. The directory is
// created owner-only (0700) and not used if anyone else can write to it, since a cached object is
// code this process will run.

#include <edifice/jit/target.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace edifice::jit {

class DiskCache {
 public:
  /// `dir` empty: EDIFICE_CACHE_DIR, else $XDG_CACHE_HOME/edifice, else ~/.cache/edifice.
  explicit DiskCache(std::string dir);

  /// The object stored under `key`; nullopt when missing, not verified, or the cache is off
  /// (EDIFICE_CACHE=0, no directory, or an unsafe one).
  std::optional<std::string> load(const std::string& key) const;
  /// Writes atomically (temporary file, fsync, rename); failures are silent (a cache).
  void store(const std::string& key, const std::string& object) const;
  /// Several objects (a plan's modules) under one key; nullopt also for a malformed entry.
  std::optional<std::vector<std::string>> load_objects(const std::string& key) const;
  void store_objects(const std::string& key, const std::vector<std::string>& objects) const;

 private:
  std::string path_for(const std::string& key) const;

  std::string dir_;
  bool usable_ = false;
};

/// 64-bit FNV-1a of bytes, printed as 16 hex digits.
std::string content_hash(const std::string& bytes);

/// The disk cache key of the code for a specialised, rewritten graph (Graph::hash) on
/// `target`: the graph, the target's triple, CPU and features, and a hash of the JIT's sources.
std::string object_cache_key(std::uint64_t graph_hash, const Target& target);

}  // namespace edifice::jit
