// The disk cache: misses write an entry, a fresh compile (in this process or another) loads it,
// a different shape misses, corrupt or mismatched entries are detected and replaced, the
// directory and files are owner-only, and an unsafe directory is never used.
//
// Every test works in its own mkdtemp directory (Options::cache_dir) and never touches
// ~/.cache. ctest runs jit_tests with EDIFICE_CACHE=0, so each test lifts that for its duration.
// The in-process cache is keyed by graph hash, shapes, threads and cache_dir: a second compile
// of a newly built, identical graph with another Options::threads value (or another spelling
// of the same directory) reaches the disk cache.
#include "cache_test_graph.hpp"

#include <edifice/core/interpreter.hpp>
#include <edifice/jit/jit.hpp>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#ifndef EDF_CACHE_PROBE
#error "EDF_CACHE_PROBE must name the jit_cache_probe executable"
#endif

using namespace edifice;
namespace fs = std::filesystem;

namespace {

/// Sets (or with nullopt unsets) an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, std::optional<std::string> value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    if (value)
      ::setenv(name_.c_str(), value->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

/// A fresh directory under /tmp, removed (with everything in it) at the end of the scope.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "edifice-cache-test-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) FAIL("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, ec);
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

jit::Options cache_options(const fs::path& dir, int threads) {
  jit::Options o;
  o.threads = threads;
  o.disk_cache = true;
  o.cache_dir = dir.string();
  return o;
}

std::vector<Shape> shapes_of(const std::vector<Tensor>& ts) {
  std::vector<Shape> s;
  for (const Tensor& t : ts) s.push_back(t.shape());
  return s;
}

/// Compiles a newly built copy of the test graph for batch `rows`.
std::shared_ptr<const jit::Executable> compile_fresh(const fs::path& dir, int threads,
                                                     std::int64_t rows = 5,
                                                     std::string dir_spelling = "") {
  jit::Options o = cache_options(dir, threads);
  if (!dir_spelling.empty()) o.cache_dir = dir_spelling;
  return jit::compile(cache_test::make_graph(), shapes_of(cache_test::make_inputs(rows)), o);
}

std::vector<Tensor> run(const jit::Executable& exe, std::int64_t rows = 5) {
  return exe.run(cache_test::make_inputs(rows));
}

/// The outputs are the interpreter's (within f32 reduction tolerance).
void check_correct(const std::vector<Tensor>& got, std::int64_t rows = 5) {
  auto want = interpret(cache_test::make_graph(), cache_test::make_inputs(rows));
  REQUIRE(got.size() == want.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    REQUIRE(got[k].shape() == want[k].shape());
    for (std::int64_t i = 0; i < got[k].numel(); ++i) {
      double a = got[k].get_as_double(i), b = want[k].get_as_double(i);
      INFO("output " << k << " element " << i << ": jit " << a << ", interpreter " << b);
      REQUIRE(std::abs(a - b) <= 1e-5 + 1e-5 * std::abs(b));
    }
  }
}

void check_identical(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t k = 0; k < a.size(); ++k) {
    INFO("output " << k);
    CHECK(a[k].bitwise_equal(b[k]));
  }
}

/// Cache entries (*.o) in `dir`.
std::vector<fs::path> entries(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ".o") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

/// Everything in `dir` (names), to see that nothing was written.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

/// Offset of the object bytes: after the magic line and the key, size and hash lines.
std::size_t object_offset(const std::string& file) {
  std::size_t at = 0;
  for (int line = 0; line < 4; ++line) {
    at = file.find('\n', at);
    REQUIRE(at != std::string::npos);
    ++at;
  }
  return at;
}

}  // namespace

TEST_CASE("disk cache: a miss writes an owner-only entry that a fresh compile loads",
          "[jit][cache]") {
  ScopedEnv enabled("EDIFICE_CACHE", std::nullopt);
  TempDir tmp;
  // Two missing levels: the cache creates both, owner-only.
  fs::path dir = tmp.path() / "nested" / "cache";

  auto first = compile_fresh(dir, 1);
  CHECK_FALSE(first->loaded_from_cache());
  auto files = entries(dir);
  REQUIRE(files.size() == 1);
  CHECK(mode_of(tmp.path() / "nested") == 0700);
  CHECK(mode_of(dir) == 0700);
  CHECK(mode_of(files[0]) == 0600);
  CHECK(listing(dir).size() == 1);  // no temporary file left behind
  std::string header = read_file(files[0]).substr(0, 17);
  CHECK(header == "EDIFICE-OBJECT-1\n");
  auto out1 = run(*first);
  check_correct(out1);

  // The same Graph object and options again: the in-process cache answers.
  Graph g = cache_test::make_graph();
  auto shapes = shapes_of(cache_test::make_inputs(5));
  auto a = jit::compile(g, shapes, cache_options(dir, 1));
  auto b = jit::compile(g, shapes, cache_options(dir, 1));
  CHECK(a.get() == b.get());

  // A new, identical graph with other options: nothing compiled, the code comes from disk.
  auto second = compile_fresh(dir, 2);
  REQUIRE(second.get() != first.get());  // not the in-process cache
  CHECK(second->loaded_from_cache());
  CHECK(entries(dir).size() == 1);
  check_identical(run(*second), out1);
  REQUIRE(second->kernels().size() == first->kernels().size());
  for (std::size_t i = 0; i < first->kernels().size(); ++i)
    CHECK(second->kernels()[i].name == first->kernels()[i].name);
}

TEST_CASE("disk cache: another shape is another entry", "[jit][cache]") {
  ScopedEnv enabled("EDIFICE_CACHE", std::nullopt);
  TempDir tmp;
  auto five = compile_fresh(tmp.path(), 1, 5);
  CHECK_FALSE(five->loaded_from_cache());
  auto seven = compile_fresh(tmp.path(), 1, 7);
  CHECK_FALSE(seven->loaded_from_cache());
  CHECK(entries(tmp.path()).size() == 2);
  check_correct(run(*seven, 7), 7);
  // Both load from disk in a fresh compile.
  CHECK(compile_fresh(tmp.path(), 2, 5)->loaded_from_cache());
  auto seven_again = compile_fresh(tmp.path(), 2, 7);
  CHECK(seven_again->loaded_from_cache());
  check_identical(run(*seven_again, 7), run(*seven, 7));
}

TEST_CASE("disk cache: corrupt entries are detected, recompiled and replaced", "[jit][cache]") {
  ScopedEnv enabled("EDIFICE_CACHE", std::nullopt);
  struct Corruption {
    const char* what;
    std::function<std::string(const std::string&)> apply;
  };
  const std::vector<Corruption> corruptions = {
      {"a byte of the object flipped (middle)",
       [](std::string f) {
         std::size_t at = object_offset(f) + (f.size() - object_offset(f)) / 2;
         f[at] = static_cast<char>(f[at] ^ 0x5a);
         return f;
       }},
      {"a byte of the object flipped (last)",
       [](std::string f) {
         f.back() = static_cast<char>(f.back() ^ 0x01);
         return f;
       }},
      {"truncated by 100 bytes", [](std::string f) { return f.substr(0, f.size() - 100); }},
      {"truncated inside the header", [](std::string f) { return f.substr(0, 30); }},
      {"empty", [](const std::string&) { return std::string(); }},
      {"header key changed",
       [](std::string f) {
         std::size_t at = f.find("key ") + 4;
         f[at] = f[at] == '0' ? '1' : '0';
         return f;
       }},
      {"header size changed",
       [](std::string f) {
         std::size_t at = f.find("size ") + 5;
         f.insert(at, "1");
         return f;
       }},
      {"header hash changed",
       [](std::string f) {
         std::size_t at = f.find("hash ") + 5;
         f[at] = f[at] == 'a' ? 'b' : 'a';
         return f;
       }},
      {"wrong magic",
       [](std::string f) {
         f[0] = 'X';
         return f;
       }},
      {"object bytes appended", [](std::string f) { return f + std::string(64, '\x90'); }},
  };
  for (const Corruption& c : corruptions) {
    INFO("entry " << c.what);
    TempDir tmp;
    auto first = compile_fresh(tmp.path(), 1);
    REQUIRE_FALSE(first->loaded_from_cache());
    auto files = entries(tmp.path());
    REQUIRE(files.size() == 1);
    std::string good = read_file(files[0]);
    write_file(files[0], c.apply(good));

    auto second = compile_fresh(tmp.path(), 2);
    REQUIRE(second.get() != first.get());      // not the in-process cache
    CHECK_FALSE(second->loaded_from_cache());  // detected: compiled again
    auto out = run(*second);
    check_correct(out);
    check_identical(out, run(*first));
    // The bad entry was replaced by a good one.
    CHECK(read_file(files[0]) == good);
    CHECK(entries(tmp.path()).size() == 1);
    auto third = compile_fresh(tmp.path(), 1, 5, tmp.path().string() + "/.");
    REQUIRE(third.get() != first.get());
    CHECK(third->loaded_from_cache());
    check_identical(run(*third), out);
  }
}

TEST_CASE("disk cache: another graph's entry under this graph's name is not used", "[jit][cache]") {
  ScopedEnv enabled("EDIFICE_CACHE", std::nullopt);
  TempDir tmp;
  auto five = compile_fresh(tmp.path(), 1, 5);
  auto files_five = entries(tmp.path());
  REQUIRE(files_five.size() == 1);
  auto seven = compile_fresh(tmp.path(), 1, 7);
  auto files = entries(tmp.path());
  REQUIRE(files.size() == 2);
  fs::path seven_file = files[0] == files_five[0] ? files[1] : files[0];
  // Batch 5's code under batch 7's name: its header names the other key.
  fs::copy_file(files_five[0], seven_file, fs::copy_options::overwrite_existing);
  auto again = compile_fresh(tmp.path(), 2, 7);
  REQUIRE(again.get() != seven.get());
  CHECK_FALSE(again->loaded_from_cache());
  check_correct(run(*again, 7), 7);
}

TEST_CASE("disk cache: a directory others can write to is not used", "[jit][cache]") {
  ScopedEnv enabled("EDIFICE_CACHE", std::nullopt);
  for (unsigned mode : {0777u, 0770u, 0702u}) {
    INFO(fmt::format("directory mode {:o}", mode));
    TempDir tmp;
    auto first = compile_fresh(tmp.path(), 1);
    auto files = entries(tmp.path());
    REQUIRE(files.size() == 1);
    std::string good = read_file(files[0]);
    fs::permissions(tmp.path(), static_cast<fs::perms>(mode), fs::perm_options::replace);
    REQUIRE(mode_of(tmp.path()) == mode);
    // A valid entry is there, but the directory is unsafe: compiled, nothing read or written.
    auto second = compile_fresh(tmp.path(), 2);
    REQUIRE(second.get() != first.get());
    CHECK_FALSE(second->loaded_from_cache());
    check_correct(run(*second));
    CHECK(listing(tmp.path()).size() == 1);
    CHECK(read_file(files[0]) == good);
    // An unsafe directory that does not hold the entry yet: nothing is written into it.
    auto seven = compile_fresh(tmp.path(), 2, 7);
    CHECK_FALSE(seven->loaded_from_cache());
    CHECK(listing(tmp.path()).size() == 1);
  }
}

TEST_CASE("disk cache: a directory owned by another user is not used", "[jit][cache]") {
  ScopedEnv enabled("EDIFICE_CACHE", std::nullopt);
  {
    TempDir tmp;
    auto first = compile_fresh(tmp.path(), 1);
    REQUIRE(entries(tmp.path()).size() == 1);
    if (::geteuid() != 0) {
      WARN("not root: cannot give the directory away, ownership check not exercised");
      return;
    }
    REQUIRE(::chown(tmp.path().c_str(), 65534, 65534) == 0);
    auto second = compile_fresh(tmp.path(), 2);
    REQUIRE(second.get() != first.get());
    CHECK_FALSE(second->loaded_from_cache());
    check_correct(run(*second));
    CHECK(listing(tmp.path()).size() == 1);
  }
}

TEST_CASE("disk cache: EDIFICE_CACHE=0 neither reads nor writes", "[jit][cache]") {
  TempDir tmp;
  {
    ScopedEnv enabled("EDIFICE_CACHE", std::nullopt);
    compile_fresh(tmp.path(), 1);
    REQUIRE(entries(tmp.path()).size() == 1);
  }
  ScopedEnv disabled("EDIFICE_CACHE", "0");
  auto second = compile_fresh(tmp.path(), 2);
  CHECK_FALSE(second->loaded_from_cache());
  check_correct(run(*second));
  fs::path fresh = tmp.path() / "never";
  auto third = compile_fresh(fresh, 2, 7);
  CHECK_FALSE(third->loaded_from_cache());
  CHECK_FALSE(fs::exists(fresh));
  // Options::disk_cache = false does the same whatever the environment.
  ScopedEnv enabled("EDIFICE_CACHE", std::nullopt);
  jit::Options o = cache_options(fresh, 1);
  o.disk_cache = false;
  auto fourth = jit::compile(cache_test::make_graph(), shapes_of(cache_test::make_inputs(9)), o);
  CHECK_FALSE(fourth->loaded_from_cache());
  CHECK(entries(fresh).empty());
}

TEST_CASE("disk cache: a second process compiling the same graph compiles nothing",
          "[jit][cache]") {
  ScopedEnv enabled("EDIFICE_CACHE", std::nullopt);
  TempDir tmp;
  fs::path dir = tmp.path() / "cache";
  auto probe = [&](int n) {
    fs::path out = tmp.path() / fmt::format("probe{}.txt", n);
    std::string cmd =
        fmt::format("'{}' '{}' > '{}' 2>&1", EDF_CACHE_PROBE, dir.string(), out.string());
    int status = std::system(cmd.c_str());
    std::string text = read_file(out);
    INFO("command: " << cmd << "\noutput: " << text);
    REQUIRE(status == 0);
    REQUIRE(text.rfind("loaded_from_cache=", 0) == 0);
    return text;
  };
  std::string first = probe(1);
  std::string second = probe(2);
  INFO("first: " << first << "second: " << second);
  CHECK(first.rfind("loaded_from_cache=0 ", 0) == 0);
  CHECK(second.rfind("loaded_from_cache=1 ", 0) == 0);
  // Same results from the loaded code.
  CHECK(first.substr(first.find("checksum=")) == second.substr(second.find("checksum=")));
  CHECK(entries(dir).size() == 1);
  // And this process, which shares the directory, loads it too.
  auto here = compile_fresh(dir, 2);
  CHECK(here->loaded_from_cache());
}
