// safetensors checkpoints: round trips, byte-exact output against the reference writer, every
// malformed-file rejection with its exact message, mutation fuzzing (run under ASan in CI), and
// atomic replacement including a writer killed mid-write.
#include <edifice/nn/atomic_file.hpp>
#include <edifice/nn/safetensors.hpp>

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include "test_util.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

using namespace edifice;
using nn::SafetensorsFile;
namespace fs = std::filesystem;

using edifice::test::error_of;

namespace {

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &v, 8);
  return s;
}

// A file: the 8-byte header length, the header, the data section.
std::string file_of(std::string_view header, std::string_view data = {}) {
  return le64(header.size()) + std::string(header) + std::string(data);
}

// A directory of its own, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    char pattern[] = "/tmp/edifice-safetensors-XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::string> entries_of(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

Tensor filled(DType dtype, Shape shape, double start) {
  Tensor t(dtype, std::move(shape));
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.set_from_double(i, is_floating(dtype) ? start - 0.75 * static_cast<double>(i)
                                            : start + static_cast<double>(i));
  return t;
}

// Every dtype, each as a rank-0 scalar, a zero-size tensor and a multi-dimensional one.
std::map<std::string, Tensor> every_dtype() {
  std::map<std::string, Tensor> w;
  for (DType d : kAllDTypes) {
    std::string n(dtype_name(d));
    w.emplace(n + ".scalar", filled(d, {}, 7));
    w.emplace(n + ".empty", filled(d, {0, 3}, 0));
    w.emplace(n + ".empty_rank1", filled(d, {0}, 0));
    w.emplace(n + ".matrix", filled(d, {3, 5}, 100));
    w.emplace(n + ".odd", filled(d, {1, 3, 1}, 1));
  }
  Tensor nan = Tensor::full(DType::f32, {2}, std::nan(""));
  nan.data<float>()[1] = -std::numeric_limits<float>::infinity();
  w.emplace("special.f32", nan);
  w.emplace("special.f64", Tensor::full(DType::f64, {1}, -0.0));
  w.emplace("special.i64", Tensor::full(DType::i64, {1}, -9.0e18));
  return w;
}

void require_same(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  REQUIRE(a.size() == b.size());
  for (const auto& [name, t] : a) {
    INFO(name);
    auto it = b.find(name);
    REQUIRE(it != b.end());
    CHECK(it->second.bitwise_equal(t));
  }
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips, including rank 0 and zero-size tensors",
          "[nn][safetensors]") {
  auto weights = every_dtype();
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"epoch", "3"}, {"", "é\n"}};
  std::string bytes = nn::to_safetensors_bytes(weights, meta);

  SafetensorsFile back = nn::parse_safetensors(bytes, "mem");
  require_same(weights, back.tensors);
  CHECK(back.metadata == meta);
  CHECK(back.tensors.at("f32.scalar").rank() == 0);
  CHECK(back.tensors.at("u8.empty").shape() == Shape{0, 3});
  CHECK(back.tensors.at("i64.empty_rank1").numel() == 0);

  TempDir dir;
  std::string path = dir.file("model.safetensors");
  nn::save_safetensors(path, weights, meta);
  CHECK(read_bytes(path) == bytes);
  SafetensorsFile loaded = nn::load_safetensors(path);
  require_same(weights, loaded.tensors);
  CHECK(loaded.metadata == meta);

  // Nothing at all, and names with characters JSON must escape.
  CHECK(nn::parse_safetensors(nn::to_safetensors_bytes(std::map<std::string, Tensor>{}))
            .tensors.empty());
  std::map<std::string, Tensor> odd_names = {
      {std::string("a\0b", 3), Tensor::scalar<float>(1)},
      {"quote\"back\\slash\ttab\x1f", Tensor::scalar<float>(2)},
      {"", Tensor::scalar<std::int32_t>(3)},
      {"\xe6\x97\xa5\xe6\x9c\xac", Tensor::scalar<std::uint8_t>(4)}};
  require_same(odd_names, nn::parse_safetensors(nn::to_safetensors_bytes(odd_names)).tensors);
}

TEST_CASE("safetensors: the same weights give byte-identical files in any insertion order",
          "[nn][safetensors]") {
  auto weights = every_dtype();
  std::vector<std::pair<std::string, Tensor>> list(weights.begin(), weights.end());
  std::map<std::string, std::string> meta = {{"b", "2"}, {"a", "1"}, {"c", "3"}};
  std::string reference = nn::to_safetensors_bytes(weights, meta);
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 20; ++trial) {
    std::shuffle(list.begin(), list.end(), rng);
    CHECK(nn::to_safetensors_bytes(list, meta) == reference);
  }
  std::reverse(list.begin(), list.end());
  CHECK(nn::to_safetensors_bytes(list, meta) == reference);

  TempDir dir;
  nn::save_safetensors(dir.file("a.safetensors"), weights, meta);
  nn::save_safetensors(dir.file("b.safetensors"), list, meta);
  CHECK(read_bytes(dir.file("a.safetensors")) == read_bytes(dir.file("b.safetensors")));
}

TEST_CASE("safetensors: exact bytes match the reference writer", "[nn][safetensors]") {
  // Expected bytes produced by the Python safetensors 0.8.0 library (safetensors.serialize,
  // the Rust writer): tensors sorted by dtype rank descending (I64, F64, F32, I32, U8) then by
  // name, compact JSON with keys dtype/shape/data_offsets, serde_json escaping, and the header
  // padded with spaces to a multiple of 8. Without Edifice's checksums, which add a metadata
  // key the reference does not write.
  const nn::SafetensorsWriteOptions plain{.checksums = false};
  std::string weird_name = "c\n\"\\\x01\xc3\xa9/\x7f";
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"a_f64", Tensor::from_vector<double>({1}, {1.5})},
      {"b_i64", Tensor::from_vector<std::int64_t>({1}, {7})},
      {"a_i32", Tensor::from_vector<std::int32_t>({1}, {3})},
      {"b_f32", Tensor::from_vector<float>({1}, {2.5f})},
      {"a_u8", Tensor::from_vector<std::uint8_t>({2}, {9, 8})},
      {weird_name, Tensor(DType::u8, {0})},
  };
  std::string header = R"({"b_i64":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
                       R"("a_f64":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
                       R"("b_f32":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
                       R"("a_i32":{"dtype":"I32","shape":[1],"data_offsets":[20,24]},)"
                       R"("a_u8":{"dtype":"U8","shape":[2],"data_offsets":[24,26]},)"
                       R"("c\n\"\\\u0001)"
                       "\xc3\xa9/\x7f"
                       R"(":{"dtype":"U8","shape":[0],"data_offsets":[26,26]}})"
                       "       ";
  std::string data(
      "\x07\0\0\0\0\0\0\0"
      "\0\0\0\0\0\0\xf8\x3f"
      "\0\0\x20\x40"
      "\x03\0\0\0"
      "\x09\x08",
      26);
  REQUIRE(header.size() == 0x170);
  CHECK(nn::to_safetensors_bytes(tensors, {}, plain) ==
        std::string("\x70\x01\0\0\0\0\0\0", 8) + header + data);

  // One metadata key: also identical to the reference ("__metadata__" first).
  std::map<std::string, Tensor> w = {{"w", Tensor::from_vector<float>({2}, {1.0f, -2.0f})}};
  CHECK(
      nn::to_safetensors_bytes(w, {{"format", "pt"}}, plain) ==
      std::string("X\0\0\0\0\0\0\0", 8) +
          R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   )" +
          std::string("\0\0\x80\x3f\0\0\0\xc0", 8));

  // Several metadata keys: Edifice sorts them (the reference's order varies from run to run,
  // as it keeps them in a hash map).
  std::string sorted_meta = R"({"__metadata__":{"a":"2","format":"pt","z":"1"},"w":{)";
  CHECK(nn::to_safetensors_bytes(w, {{"z", "1"}, {"format", "pt"}, {"a", "2"}}, plain)
            .substr(8, sorted_meta.size()) == sorted_meta);

  // No tensors: what the reference writes. (With an empty metadata map, safetensors 0.8.0
  // writes invalid JSON, `{},"__metadata__":{}}`; Edifice leaves __metadata__ out.)
  std::string empty = std::string("\x08\0\0\0\0\0\0\0", 8) + "{}      ";
  CHECK(nn::to_safetensors_bytes(std::map<std::string, Tensor>{}, {}, plain) == empty);
}

TEST_CASE("safetensors: every tensor's data is aligned to its element size", "[nn][safetensors]") {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    std::map<std::string, Tensor> w;
    int count = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < count; ++i) {
      DType d = kAllDTypes[rng() % 5];
      Shape shape;
      for (std::uint64_t r = rng() % 3; r > 0; --r) shape.push_back(static_cast<int>(rng() % 5));
      w.emplace(fmt::format("t{}_{}", rng() % 1000, i), filled(d, shape, 1));
    }
    std::string bytes = nn::to_safetensors_bytes(w, {{"k", std::string(rng() % 9, 'x')}});
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    REQUIRE(n % 8 == 0);
    auto header = nlohmann::json::parse(bytes.substr(8, n));
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") continue;
      auto begin = entry["data_offsets"][0].get<std::uint64_t>();
      DType d = *nn::dtype_from_safetensors_name(entry["dtype"].get<std::string>());
      INFO(name << " " << entry.dump());
      CHECK((8 + n + begin) % dtype_size(d) == 0);
    }
    require_same(w, nn::parse_safetensors(bytes).tensors);
  }
}

TEST_CASE("safetensors: the writer refuses what the format or the reader forbids",
          "[nn][safetensors]") {
  Tensor s = Tensor::scalar<float>(1);
  CHECK(error_of([&] {
          nn::to_safetensors_bytes({{"__metadata__", s}});
        }) ==
        "to_safetensors_bytes: tensor \"__metadata__\": the name is reserved for the metadata "
        "map");
  std::vector<std::pair<std::string, Tensor>> dup = {{"a", s}, {"b", s}, {"a", s}};
  CHECK(error_of([&] { nn::to_safetensors_bytes(dup); }) ==
        "to_safetensors_bytes: duplicate tensor name \"a\"");
  CHECK(error_of([&] {
          nn::to_safetensors_bytes({{"bad\xff", s}});
        }) == "to_safetensors_bytes: tensor name \"bad\\xff\" is not valid UTF-8");
  CHECK(error_of([&] {
          nn::to_safetensors_bytes({{"w", s}}, {{"k", "\xc0\xaf"}});
        }) == "to_safetensors_bytes: metadata value of \"k\" is not valid UTF-8");
  CHECK(error_of([&] {
          nn::to_safetensors_bytes({{std::string(65537, 'n'), s}});
        }) == "to_safetensors_bytes: tensor name \"" + std::string(200, 'n') +
                  "\"... is 65537 bytes long, over the limit of 65536 bytes");
  Tensor rank17(DType::u8, Shape(17, 1));
  CHECK(error_of([&] {
          nn::to_safetensors_bytes({{"r", rank17}});
        }) == "to_safetensors_bytes: tensor \"r\": rank 17 exceeds the limit of 16");
  // The reference refuses a header of 100,000,000 bytes of metadata on write; so do we.
  TempDir dir;
  std::string path = dir.file("big.safetensors");
  CHECK(error_of([&] {
          nn::save_safetensors(path, {{"w", s}}, {{"m", std::string(100'000'000, 'x')}});
        }) == path + ": the header would be 100000128 bytes, over the limit of 100000000 bytes");
  CHECK(!fs::exists(path));
}

TEST_CASE("safetensors: malformed files are rejected with exact messages", "[nn][safetensors]") {
  const std::string u8_a = R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]})";
  struct Case {
    const char* what;
    std::string bytes;
    std::string message;  // after "bad.safetensors: "
  };
  const std::uint64_t all_ones = std::numeric_limits<std::uint64_t>::max();
  std::vector<Case> cases = {
      {"empty file", "", "the file is 0 bytes long, too short for the 8-byte header length"},
      {"file shorter than 8 bytes", std::string("\x02\0\0\0\0", 5),
       "the file is 5 bytes long, too short for the 8-byte header length"},
      {"header length 0xFFFFFFFFFFFFFFFF", le64(all_ones) + "{}",
       "header length 18446744073709551615 exceeds the limit of 100000000 bytes"},
      {"header length just over 100 MB", le64(100'000'001) + "{}",
       "header length 100000001 exceeds the limit of 100000000 bytes"},
      {"header longer than the file", le64(100) + "{}",
       "header length 100 runs past the end of the file (10 bytes)"},
      {"8-byte file with an empty header", le64(0),
       "header is not valid JSON: parse error at line 1, column 1: syntax error while parsing "
       "value - unexpected end of input; expected '[', '{', or a literal"},
      {"non-UTF-8 byte in the header", file_of("{\"a\xff\":{}}"),
       "header is not valid UTF-8 (byte 0xff at header offset 3)"},
      {"overlong UTF-8 encoding", file_of("{\"\xc0\xaf\":{}}"),
       "header is not valid UTF-8 (byte 0xc0 at header offset 2)"},
      {"UTF-8 surrogate", file_of("{\"\xed\xa0\x80\":{}}"),
       "header is not valid UTF-8 (byte 0xed at header offset 2)"},
      {"truncated JSON", file_of("{"),
       "header is not valid JSON: parse error at line 1, column 2: syntax error while parsing "
       "object key - unexpected end of input; expected string literal"},
      {"garbage after the object", file_of("{} x"),
       "header is not valid JSON: parse error at line 1, column 4: syntax error while parsing "
       "value - invalid literal; last read: '{} x'; expected end of input"},
      {"JSON array instead of an object", file_of("[]"),
       "header is an array, expected a JSON object"},
      {"JSON string instead of an object", file_of(R"("abc")"),
       "header is a string, expected a JSON object"},
      {"duplicate tensor name", file_of("{" + u8_a + "," + u8_a + "}", "abcd"),
       "duplicate tensor name \"a\" in the header"},
      {"duplicate field in an entry",
       file_of(R"({"a":{"dtype":"U8","dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "abcd"),
       "tensor \"a\": duplicate field \"dtype\""},
      {"duplicate __metadata__", file_of(R"({"__metadata__":{},"__metadata__":{}})"),
       "duplicate key \"__metadata__\" in the header"},
      {"duplicate metadata key", file_of(R"({"__metadata__":{"k":"1","k":"2"}})"),
       "__metadata__: duplicate key \"k\""},
      {"entry not an object", file_of(R"({"w":[1]})"),
       "tensor \"w\": entry is an array, expected an object with \"dtype\", \"shape\" and "
       "\"data_offsets\""},
      {"missing field", file_of(R"({"w":{"dtype":"F32","shape":[]}})", "abcd"),
       "tensor \"w\": missing field \"data_offsets\""},
      {"extra field",
       file_of(R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,4],"strides":[]}})", "abcd"),
       "tensor \"w\": unexpected field \"strides\" (an entry has exactly \"dtype\", \"shape\" "
       "and \"data_offsets\")"},
      {"unknown dtype I8",
       file_of(R"({"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}})", "ab"),
       "tensor \"w\": unknown dtype \"I8\" (Edifice reads F32, F64, I32, I64, U8, F16 and "
       "BF16)"},
      {"BOOL is not an Edifice dtype",
       file_of(R"({"w":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", "x"),
       "tensor \"w\": unknown dtype \"BOOL\" (Edifice reads F32, F64, I32, I64, U8, F16 and "
       "BF16)"},
      {"F16 of the wrong size",
       file_of(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", "abcdefgh"),
       "tensor \"w\": data_offsets [0,8] hold 8 bytes but shape [2] of F16 needs 4"},
      {"dtype not a string", file_of(R"({"w":{"dtype":32}})"),
       "tensor \"w\": dtype is 32, expected a string such as \"F32\""},
      {"shape not a list", file_of(R"({"w":{"dtype":"F32","shape":4}})"),
       "tensor \"w\": shape is 4, expected a list of integers"},
      {"negative shape entry", file_of(R"({"w":{"dtype":"F32","shape":[2,-1]}})"),
       "tensor \"w\": shape[1] is -1, expected an integer in [0, 281474976710655]"},
      {"float shape entry", file_of(R"({"w":{"dtype":"F32","shape":[2.5]}})"),
       "tensor \"w\": shape[0] is 2.5, expected an integer in [0, 281474976710655]"},
      {"shape entry 2^48", file_of(R"({"w":{"dtype":"F32","shape":[281474976710656]}})"),
       "tensor \"w\": shape[0] is 281474976710656, expected an integer in [0, "
       "281474976710655]"},
      {"shape [2, 2^63-1]", file_of(R"({"w":{"dtype":"F32","shape":[2,9223372036854775807]}})"),
       "tensor \"w\": shape[1] is 9223372036854775807, expected an integer in [0, "
       "281474976710655]"},
      {"shape entry beyond 64 bits",
       file_of(R"({"w":{"dtype":"F32","shape":[18446744073709551616]}})"),
       "tensor \"w\": shape[0] is 18446744073709551616, expected an integer in [0, "
       "281474976710655]"},
      {"shape entry null", file_of(R"({"w":{"dtype":"F32","shape":[null]}})"),
       "tensor \"w\": shape[0] is null, expected an integer in [0, 281474976710655]"},
      {"rank 17", file_of(R"({"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}})"),
       "tensor \"w\": shape has more than 16 dimensions"},
      {"shape x dtype size overflows",
       file_of(
           R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,0]}})"),
       "tensor \"w\": shape [1099511627776,1099511627776] of F32 is too large (its byte size "
       "overflows)"},
      {"data_offsets not a list", file_of(R"({"w":{"dtype":"U8","shape":[],"data_offsets":"0"}})"),
       "tensor \"w\": data_offsets is a string, expected two integers [begin, end]"},
      {"one data offset", file_of(R"({"w":{"dtype":"U8","shape":[],"data_offsets":[0]}})", "x"),
       "tensor \"w\": data_offsets has 1 value(s), expected two integers [begin, end]"},
      {"three data offsets",
       file_of(R"({"w":{"dtype":"U8","shape":[],"data_offsets":[0,1,2]}})", "x"),
       "tensor \"w\": data_offsets has more than two values, expected [begin, end]"},
      {"negative data offset",
       file_of(R"({"w":{"dtype":"U8","shape":[],"data_offsets":[-1,0]}})", "x"),
       "tensor \"w\": data_offsets[0] is -1, expected a non-negative integer"},
      {"data_offsets begin > end",
       file_of(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", "abcd"),
       "tensor \"w\": data_offsets [4,0] have begin > end"},
      {"offsets and shape disagree",
       file_of(R"({"layer_1.kernel":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})",
               std::string(12, 'x')),
       "tensor \"layer_1.kernel\": data_offsets [0,12] hold 12 bytes but shape [2,2] of F32 "
       "needs 16"},
      {"data section 2 bytes short",
       file_of(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(14, 'x')),
       "tensor \"w\": data_offsets [0,16] run past the end of the data section (14 bytes)"},
      {"gap between tensors",
       file_of(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
               std::string(12, 'x')),
       "bytes [4,8) of the data section belong to no tensor (a gap before tensor \"b\")"},
      {"gap at the start",
       file_of(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", std::string(8, 'x')),
       "bytes [0,4) of the data section belong to no tensor (a gap before tensor \"a\")"},
      {"overlapping tensors",
       file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               std::string(12, 'x')),
       "tensor \"b\" at data_offsets [4,12] overlaps tensor \"a\" at [0,8]"},
      {"many tensors on the same bytes (allocation amplification)",
       file_of(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("c":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
               "abcd"),
       "tensor \"b\" at data_offsets [0,4] overlaps tensor \"a\" at [0,4]"},
      {"trailing bytes after the data (polyglot)", file_of("{" + u8_a + "}", "abcdJUNK"),
       "4 trailing bytes after the last tensor (the data section is 8 bytes, the tensors cover "
       "4)"},
      {"data but no tensors", file_of("{}", "x"),
       "1 trailing bytes after the last tensor (the data section is 1 bytes, the tensors cover "
       "0)"},
      {"__metadata__ with a non-string value", file_of(R"({"__metadata__":{"epoch":3}})"),
       "__metadata__ \"epoch\" is 3, expected a string"},
      {"__metadata__ with a nested object", file_of(R"({"__metadata__":{"cfg":{}}})"),
       "__metadata__ \"cfg\" is an object, expected a string"},
      {"__metadata__ not an object", file_of(R"({"__metadata__":["a"]})"),
       "__metadata__ is an array, expected an object of strings"},
      {"tensor name over 64 KiB", file_of("{\"" + std::string(65537, 'n') + "\":{}}"),
       "tensor name \"" + std::string(200, 'n') +
           "\"... is 65537 bytes long, over the limit of 65536 bytes"},
      {"lone surrogate escape", file_of(R"({"\ud800":{}})"),
       "header is not valid JSON: parse error at line 1, column 9: syntax error while parsing "
       "object key - invalid string: surrogate U+D800..U+DBFF must be followed by "
       "U+DC00..U+DFFF; last read: '\"\\ud800\"'; expected string literal"},
  };
  REQUIRE(cases.size() >= 12);

  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  for (const Case& c : cases) {
    INFO(c.what);
    CHECK(error_of([&] { nn::parse_safetensors(c.bytes, "bad.safetensors"); }) ==
          "bad.safetensors: " + c.message);
    // The file reader runs the same checks and names the path.
    write_bytes(path, c.bytes);
    CHECK(error_of([&] { nn::load_safetensors(path); }) == path + ": " + c.message);
  }

  // What the reference reader accepts is accepted too: whitespace around the object.
  std::string padded = file_of(" \n\t{" + u8_a + "}  \r\n", "abcd");
  CHECK(nn::parse_safetensors(padded).tensors.at("a").shape() == Shape{4});
  // Zero-size tensors may share an offset with their neighbours.
  std::string zeros = file_of(R"({"z":{"dtype":"F64","shape":[0,3],"data_offsets":[4,4]},)"
                              R"("y":{"dtype":"F64","shape":[0],"data_offsets":[0,0]},)" +
                                  u8_a + "}",
                              "abcd");
  CHECK(nn::parse_safetensors(zeros).tensors.size() == 3);
}

TEST_CASE("safetensors: the file reader refuses what is not a readable regular file",
          "[nn][safetensors]") {
  TempDir dir;
  std::string missing = dir.file("missing.safetensors");
  CHECK(error_of([&] { nn::load_safetensors(missing); }) ==
        missing + ": cannot open: No such file or directory");
  CHECK(error_of([&] { nn::load_safetensors(dir.path.string()); }) ==
        dir.path.string() + ": not a regular file");
  std::string fifo = dir.file("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(error_of([&] { nn::load_safetensors(fifo); }) == fifo + ": not a regular file");
}

TEST_CASE("safetensors: random mutations of a valid file give an error or a file, never a crash",
          "[nn][safetensors]") {
  auto weights = every_dtype();
  // Without checksums: with them nearly every mutation of the data is (rightly) rejected, and
  // this test is about the parser accepting and rejecting headers safely.
  const std::string valid =
      nn::to_safetensors_bytes(weights, {{"format", "pt"}, {"k", "v"}}, {.checksums = false});
  std::uint64_t n0 = 0;
  std::memcpy(&n0, valid.data(), 8);
  const std::string header0 = valid.substr(8, n0);
  const std::string data0 = valid.substr(8 + n0);

  std::mt19937_64 rng(20240601);
  auto pick = [&](std::size_t bound) { return bound == 0 ? 0 : rng() % bound; };
  const std::string specials = "{}[]\",:-.eE0123456789 \\u\x00\xff\xc3";
  const std::vector<std::string> numbers = {"0",
                                            "1",
                                            "3",
                                            "4",
                                            "7",
                                            "8",
                                            "15",
                                            "16",
                                            "-1",
                                            "-0",
                                            "2.5",
                                            "1e3",
                                            "4294967296",
                                            "281474976710655",
                                            "281474976710656",
                                            "9223372036854775807",
                                            "9223372036854775808",
                                            "18446744073709551615",
                                            "18446744073709551616",
                                            "1e400"};

  int accepted = 0;
  int rejected = 0;
  for (int iteration = 0; iteration < 4000; ++iteration) {
    std::string header = header0;
    std::string data = data0;
    std::string bytes;
    bool raw = false;
    for (int m = 1 + static_cast<int>(pick(3)); m > 0; --m) {
      switch (pick(8)) {
        case 0:  // flip a bit anywhere in the header
          if (!header.empty()) header[pick(header.size())] ^= static_cast<char>(1 << pick(8));
          break;
        case 1:  // a JSON-significant character
          if (!header.empty()) header[pick(header.size())] = specials[pick(specials.size())];
          break;
        case 2: {  // replace a number in the header
          std::size_t at = header.find_first_of("0123456789", pick(header.size()));
          if (at == std::string::npos) break;
          std::size_t end = header.find_first_not_of("0123456789", at);
          header.replace(at, end - at, numbers[pick(numbers.size())]);
          break;
        }
        case 3:  // delete a range of the header
          if (!header.empty()) {
            std::size_t at = pick(header.size());
            header.erase(at, 1 + pick(16));
          }
          break;
        case 4: {  // duplicate a range of the header (duplicate keys, nesting)
          std::size_t at = pick(header.size());
          std::string chunk = header.substr(at, 1 + pick(80));
          header.insert(pick(header.size()), chunk);
          break;
        }
        case 5:  // grow or shrink the data section
          if (pick(2) == 0)
            data.resize(pick(data.size() + 1));
          else
            data.append(1 + pick(16), 'x');
          break;
        case 6:  // flip a bit in the data (always fine: payloads are not checked)
          if (!data.empty()) data[pick(data.size())] ^= 1;
          break;
        default:  // corrupt the raw file: length prefix or truncation
          raw = true;
          break;
      }
    }
    bytes = file_of(header, data);
    if (raw) {
      if (pick(2) == 0) {
        std::uint64_t n = 0;
        std::memcpy(&n, bytes.data(), 8);
        n = pick(4) == 0 ? rng() : n + pick(33) - 16;
        std::memcpy(bytes.data(), &n, 8);
      } else {
        bytes.resize(pick(bytes.size() + 1));
      }
    }
    try {
      SafetensorsFile f = nn::parse_safetensors(bytes, "fuzz");
      std::size_t total = 0;
      for (const auto& [name, t] : f.tensors) total += t.nbytes();
      REQUIRE(total <= bytes.size());
      ++accepted;
    } catch (const Error&) {
      ++rejected;
    }
  }
  INFO("accepted " << accepted << ", rejected " << rejected);
  CHECK(accepted > 50);
  CHECK(rejected > 1000);
}

TEST_CASE("write_file_atomically creates and replaces files, keeping the mode",
          "[nn][safetensors]") {
  mode_t old_umask = ::umask(022);
  TempDir dir;
  std::string path = dir.file("ckpt.bin");
  nn::write_file_atomically(path, "first");
  CHECK(read_bytes(path) == "first");
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0644);
  ino_t first_inode = st.st_ino;

  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  std::string_view pieces[] = {"sec", "", "ond"};
  nn::write_file_atomically(path, pieces);
  CHECK(read_bytes(path) == "second");
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_ino != first_inode);  // replaced by rename, not rewritten in place
  CHECK(entries_of(dir.path) == std::vector<std::string>{"ckpt.bin"});

  // A relative path (the temporary file goes to ".").
  fs::path cwd = fs::current_path();
  fs::current_path(dir.path);
  nn::write_file_atomically("relative.bin", "r");
  fs::current_path(cwd);
  CHECK(read_bytes(dir.file("relative.bin")) == "r");
  ::umask(old_umask);
}

namespace {
void throw_after_first_chunk(const std::string&, std::uint64_t written) {
  if (written >= (1u << 20)) throw Error("simulated failure");
}
}  // namespace

TEST_CASE("a failed atomic write leaves the old file intact and no temporary file",
          "[nn][safetensors]") {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  std::map<std::string, Tensor> old = {{"w", Tensor::from_vector<float>({2}, {1, 2})}};
  nn::save_safetensors(path, old);
  const std::string old_bytes = read_bytes(path);
  const std::vector<std::string> listing = {"model.safetensors"};

  SECTION("the target is a directory") {
    std::string sub = dir.file("sub");
    fs::create_directory(sub);
    CHECK(error_of([&] { nn::write_file_atomically(sub, "x"); }) ==
          "cannot write \"" + sub + "\": it is a directory");
    CHECK(error_of([&] { nn::save_safetensors(sub + "/", old); }) ==
          "cannot write \"" + sub + "/\": the path names a directory, not a file");
    fs::remove(sub);
  }
  SECTION("the directory does not exist") {
    std::string bad = dir.file("missing/model.safetensors");
    CHECK(error_of([&] { nn::save_safetensors(bad, old); }) ==
          "cannot write \"" + bad + "\": creating a temporary file in \"" + dir.file("missing") +
              "\" failed: No such file or directory");
  }
  SECTION("the write fails midway") {
    nn::detail::set_atomic_write_hook(&throw_after_first_chunk);
    std::map<std::string, Tensor> big = {{"w", Tensor(DType::f32, {1 << 20})}};
    CHECK(error_of([&] { nn::save_safetensors(path, big); }) == "simulated failure");
    nn::detail::set_atomic_write_hook(nullptr);
  }
  SECTION("the file system refuses the data (EFBIG)") {
    // A real write error: a file size limit, in a child so the limit stays there.
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      ::signal(SIGXFSZ, SIG_IGN);
      struct rlimit limit = {4096, 4096};
      ::setrlimit(RLIMIT_FSIZE, &limit);
      std::string message = "<no error>";
      try {
        nn::save_safetensors(path, {{"w", Tensor(DType::f32, {1 << 16})}});
      } catch (const Error& e) {
        message = e.what();
      } catch (...) {
        message = "<other exception>";
      }
      [[maybe_unused]] auto w = ::write(fds[1], message.data(), message.size());
      ::_exit(0);
    }
    ::close(fds[1]);
    std::string message;
    char buf[512];
    for (ssize_t r; (r = ::read(fds[0], buf, sizeof buf)) > 0;) message.append(buf, r);
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    INFO(message);
    CHECK(message.starts_with("cannot write \"" + path + "\": writing \"" +
                              dir.file(".model.safetensors.tmp.")));
    CHECK(message.ends_with("\" failed: File too large"));
  }
  CHECK(read_bytes(path) == old_bytes);
  CHECK(entries_of(dir.path) == listing);
  require_same(old, nn::load_safetensors(path).tensors);
}

namespace {
int g_signal_fd = -1;
// In the child: once a MiB is written, tell the parent and hang until killed.
void hang_mid_write(const std::string&, std::uint64_t written) {
  if (written < (1u << 20)) return;
  char c = 'w';
  [[maybe_unused]] auto w = ::write(g_signal_fd, &c, 1);
  for (;;) ::pause();
}
}  // namespace

TEST_CASE("a checkpoint writer killed mid-write leaves the previous file loadable and unchanged",
          "[nn][safetensors]") {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  std::map<std::string, Tensor> previous = every_dtype();
  nn::save_safetensors(path, previous, {{"step", "100"}});
  const std::string previous_bytes = read_bytes(path);

  std::map<std::string, Tensor> next = {{"big", Tensor::full(DType::f32, {4 << 20}, 3.0)}};
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    g_signal_fd = fds[1];
    nn::detail::set_atomic_write_hook(&hang_mid_write);
    try {
      nn::save_safetensors(path, next, {{"step", "200"}});
    } catch (...) {
    }
    ::_exit(1);  // not reached: the hook hangs until the parent kills this process
  }
  ::close(fds[1]);
  char c = 0;
  REQUIRE(::read(fds[0], &c, 1) == 1);
  ::close(fds[0]);

  // The child is now mid-write: its temporary file holds the header and 1 MiB of 16.
  std::vector<std::string> during = entries_of(dir.path);
  REQUIRE(during.size() == 2);
  std::string temp = dir.file(during[0] == "model.safetensors" ? during[1] : during[0]);
  CHECK(fs::file_size(temp) > (1u << 20));
  CHECK(fs::file_size(temp) < (16u << 20));

  REQUIRE(::kill(pid, SIGKILL) == 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);

  CHECK(read_bytes(path) == previous_bytes);
  SafetensorsFile loaded = nn::load_safetensors(path);
  require_same(previous, loaded.tensors);
  CHECK(loaded.metadata.at("step") == "100");
  // A killed writer cannot clean up: its partial temporary file is left, never the target.
  CHECK(fs::exists(temp));
  CHECK_THROWS_AS(nn::load_safetensors(temp), Error);

  // The next save succeeds and replaces the file.
  nn::save_safetensors(path, next, {{"step", "200"}});
  CHECK(nn::load_safetensors(path).metadata.at("step") == "200");
}

// ---------------------------------------------------------------------------------------------
// Checksums

namespace {

// Each tensor's [begin, end) in the file (absolute offsets), from the header.
std::map<std::string, std::pair<std::size_t, std::size_t>> data_ranges(const std::string& bytes) {
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  std::map<std::string, std::pair<std::size_t, std::size_t>> out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    out[name] = {8 + n + entry["data_offsets"][0].get<std::size_t>(),
                 8 + n + entry["data_offsets"][1].get<std::size_t>()};
  }
  return out;
}

std::string header_of(const std::string& bytes) {
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  return bytes.substr(8, n);
}

}  // namespace

TEST_CASE("safetensors: one flipped byte in any tensor's data is an error naming that tensor",
          "[nn][safetensors][checksum]") {
  auto weights = every_dtype();
  const std::string valid = nn::to_safetensors_bytes(
      weights, {{"format", "pt"}},
      {.store_as = {{"f32.matrix", nn::HalfFormat::f16}, {"f32.odd", nn::HalfFormat::bf16}}});
  auto loaded = nn::parse_safetensors(valid, "ok");
  // The checksum key is the writer's business: the caller's metadata comes back as it was.
  CHECK(loaded.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  int checked = 0;
  for (const auto& [name, range] : data_ranges(valid)) {
    if (range.first == range.second) continue;  // no bytes to flip
    INFO(name);
    for (std::size_t at : {range.first, (range.first + range.second) / 2, range.second - 1}) {
      std::string bytes = valid;
      bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
      std::string message = error_of([&] { nn::parse_safetensors(bytes, "model.safetensors"); });
      CHECK(message.starts_with(
          "model.safetensors: tensor \"" + name + "\": checksum mismatch: its " +
          std::to_string(range.second - range.first) + " bytes hash to xxh64 "));
      CHECK(message.ends_with("(the data is corrupt)"));
    }
    ++checked;
  }
  CHECK(checked == 18);  // every non-empty tensor of every_dtype()

  // The same through a file on disk.
  TempDir dir;
  std::string bytes = valid;
  auto [begin, end] = data_ranges(valid).at("i64.matrix");
  bytes[begin + 3] ^= 1;
  write_bytes(dir.file("m.safetensors"), bytes);
  CHECK(error_of([&] {
          nn::load_safetensors(dir.file("m.safetensors"));
        }).starts_with(dir.file("m.safetensors") + ": tensor \"i64.matrix\": checksum mismatch"));
}

TEST_CASE("safetensors: the checksums are xxHash64 of the stored bytes, in the metadata",
          "[nn][safetensors][checksum]") {
  // XXH64("", 0) and XXH64 of the 4 bytes of 1.0f, seed 0: published values of the algorithm
  // (xxhsum -H64 gives the same).
  std::map<std::string, Tensor> w = {{"empty", Tensor(DType::f32, {0})},
                                     {"one", Tensor::from_vector<float>({1}, {1.0f})}};
  auto header = nlohmann::json::parse(header_of(nn::to_safetensors_bytes(w)));
  auto sums = nlohmann::json::parse(header["__metadata__"]["edifice.xxh64"].get<std::string>());
  CHECK(sums["empty"] == "ef46db3751d8e999");
  CHECK(sums.size() == 2);
  CHECK(sums["one"].get<std::string>().size() == 16);
  // Stable: the same bytes give the same file.
  CHECK(nn::to_safetensors_bytes(w) == nn::to_safetensors_bytes(w));
}

TEST_CASE("safetensors: files without checksums load; bad checksum metadata is rejected",
          "[nn][safetensors][checksum]") {
  std::map<std::string, Tensor> w = {{"a", Tensor::from_vector<float>({2}, {1.0f, 2.0f})},
                                     {"b", Tensor::from_vector<std::int32_t>({1}, {5})}};
  // No checksum (another tool's file): loads, and a flipped byte goes unnoticed, as it must.
  std::string plain = nn::to_safetensors_bytes(w, {}, {.checksums = false});
  CHECK(header_of(plain).find("__metadata__") == std::string::npos);
  plain[plain.size() - 1] ^= 1;
  CHECK(nn::parse_safetensors(plain).tensors.at("b").data<std::int32_t>()[0] == (5 ^ (1 << 24)));

  auto with_sums = [](std::string sums) {
    std::string header = R"({"__metadata__":{"edifice.xxh64":)" + nlohmann::json(sums).dump() +
                         R"(},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
    return file_of(header, "x");
  };
  const std::string where = "f: __metadata__ \"edifice.xxh64\"";
  CHECK(error_of([&] { nn::parse_safetensors(with_sums("[1]"), "f"); }) ==
        where + " is not a JSON object of checksums");
  CHECK(error_of([&] { nn::parse_safetensors(with_sums("{"), "f"); }) ==
        where + " is not a JSON object of checksums");
  CHECK(error_of([&] { nn::parse_safetensors(with_sums(R"({"a":"12"})"), "f"); }) ==
        where + ": the checksum of tensor \"a\" is \"12\", expected 16 lowercase hex digits");
  CHECK(error_of([&] { nn::parse_safetensors(with_sums(R"({"a":7})"), "f"); }) ==
        where + ": the checksum of tensor \"a\" is 7, expected 16 lowercase hex digits");
  CHECK(error_of([&] { nn::parse_safetensors(with_sums(R"({})"), "f"); }) ==
        where + " has no checksum for tensor \"a\"");
  CHECK(error_of([&] {
          nn::parse_safetensors(with_sums(R"({"a":"0000000000000000","z":"0000000000000000"})"),
                                "f");
        }) == where + " has a checksum for tensor \"z\", which is not in the file");
  // The key is reserved on save.
  CHECK(error_of([&] {
          nn::to_safetensors_bytes(w, {{"edifice.xxh64", "{}"}});
        }) ==
        "to_safetensors_bytes: metadata key \"edifice.xxh64\" is reserved for the checksums the "
        "writer stores");
}

// ---------------------------------------------------------------------------------------------
// F16 and BF16

namespace {

float f32_of_bits(std::uint32_t b) {
  return std::bit_cast<float>(b);
}
std::uint32_t bits_of(float f) {
  return std::bit_cast<std::uint32_t>(f);
}

}  // namespace

TEST_CASE("safetensors: F16 and BF16 bit patterns convert to the exact f32 values",
          "[nn][safetensors][half]") {
  // binary16: zero, signed zero, smallest and largest subnormal, smallest normal, 1, 1/3's
  // nearest, -2, largest finite, infinities, NaNs (quiet, and signalling with its payload).
  CHECK(bits_of(nn::f16_bits_to_f32(0x0000)) == 0x00000000u);
  CHECK(bits_of(nn::f16_bits_to_f32(0x8000)) == 0x80000000u);
  CHECK(nn::f16_bits_to_f32(0x0001) == 0x1p-24f);
  CHECK(nn::f16_bits_to_f32(0x8001) == -0x1p-24f);
  CHECK(nn::f16_bits_to_f32(0x03ff) == 1023 * 0x1p-24f);
  CHECK(nn::f16_bits_to_f32(0x0400) == 0x1p-14f);
  CHECK(nn::f16_bits_to_f32(0x3c00) == 1.0f);
  CHECK(nn::f16_bits_to_f32(0x3555) == 0.333251953125f);
  CHECK(nn::f16_bits_to_f32(0xc000) == -2.0f);
  CHECK(nn::f16_bits_to_f32(0x7bff) == 65504.0f);
  CHECK(bits_of(nn::f16_bits_to_f32(0x7c00)) == 0x7f800000u);
  CHECK(bits_of(nn::f16_bits_to_f32(0xfc00)) == 0xff800000u);
  CHECK(bits_of(nn::f16_bits_to_f32(0x7e00)) == 0x7fc00000u);
  CHECK(bits_of(nn::f16_bits_to_f32(0x7c01)) == 0x7f802000u);
  // bfloat16: the top half of an f32, subnormals included.
  CHECK(nn::bf16_bits_to_f32(0x3f80) == 1.0f);
  CHECK(nn::bf16_bits_to_f32(0x4049) == 3.140625f);
  CHECK(bits_of(nn::bf16_bits_to_f32(0x0001)) == 0x00010000u);
  CHECK(bits_of(nn::bf16_bits_to_f32(0xff80)) == 0xff800000u);
  CHECK(bits_of(nn::bf16_bits_to_f32(0x7fc1)) == 0x7fc10000u);
}

TEST_CASE("safetensors: f32 rounds to F16 and BF16 to nearest, ties to even",
          "[nn][safetensors][half]") {
  CHECK(nn::f32_to_f16_bits(1.0f / 3) == 0x3555);
  CHECK(nn::f32_to_f16_bits(-0.0f) == 0x8000);
  CHECK(nn::f32_to_f16_bits(65504.0f) == 0x7bff);
  CHECK(nn::f32_to_f16_bits(65519.996f) == 0x7bff);
  CHECK(nn::f32_to_f16_bits(65520.0f) == 0x7c00);  // the tie rounds to even: infinity
  CHECK(nn::f32_to_f16_bits(1e10f) == 0x7c00);
  CHECK(nn::f32_to_f16_bits(-INFINITY) == 0xfc00);
  CHECK(nn::f32_to_f16_bits(1.0f + 0x1p-11f) == 0x3c00);      // tie, even below
  CHECK(nn::f32_to_f16_bits(1.0f + 3 * 0x1p-11f) == 0x3c02);  // tie, even above
  CHECK(nn::f32_to_f16_bits(0x1p-25f) == 0x0000);             // tie between 0 and 2^-24
  CHECK(nn::f32_to_f16_bits(f32_of_bits(bits_of(0x1p-25f) + 1)) == 0x0001);
  CHECK(nn::f32_to_f16_bits(3 * 0x1p-25f) == 0x0002);         // tie, even above
  CHECK(nn::f32_to_f16_bits(0x1p-14f - 0x1p-25f) == 0x0400);  // subnormal rounds to normal
  CHECK(nn::f32_to_f16_bits(1e-10f) == 0x0000);
  CHECK(nn::f32_to_f16_bits(f32_of_bits(0x7fc00000u)) == 0x7e00);
  CHECK(nn::f32_to_f16_bits(f32_of_bits(0xff802000u)) == 0xfe01);  // payload kept, made quiet
  CHECK(nn::f32_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(nn::f32_to_bf16_bits(f32_of_bits(0x40490fdbu)) == 0x4049);  // pi
  CHECK(nn::f32_to_bf16_bits(f32_of_bits(0x3f808000u)) == 0x3f80);  // tie, even below
  CHECK(nn::f32_to_bf16_bits(f32_of_bits(0x3f818000u)) == 0x3f82);  // tie, even above
  CHECK(nn::f32_to_bf16_bits(f32_of_bits(0x3f808001u)) == 0x3f81);
  CHECK(nn::f32_to_bf16_bits(f32_of_bits(0x7f7fffffu)) == 0x7f80);  // FLT_MAX rounds to infinity
  CHECK(nn::f32_to_bf16_bits(f32_of_bits(0xff800001u)) == 0xffc0);  // NaN stays NaN
  CHECK(nn::f32_to_bf16_bits(f32_of_bits(0x00008000u)) == 0x0000);  // subnormal tie, even

  // Every half value round-trips through f32 (NaNs stay NaN).
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    auto bits = static_cast<std::uint16_t>(h);
    bool f16_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
    bool bf16_nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
    if (f16_nan)
      REQUIRE(std::isnan(nn::f16_bits_to_f32(nn::f32_to_f16_bits(nn::f16_bits_to_f32(bits)))));
    else
      REQUIRE(nn::f32_to_f16_bits(nn::f16_bits_to_f32(bits)) == bits);
    if (bf16_nan)
      REQUIRE(std::isnan(nn::bf16_bits_to_f32(nn::f32_to_bf16_bits(nn::bf16_bits_to_f32(bits)))));
    else
      REQUIRE(nn::f32_to_bf16_bits(nn::bf16_bits_to_f32(bits)) == bits);
  }

  // Random f32 values: the result is a nearest half, and an even one on a tie.
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) {
    float x = f32_of_bits(rng());
    if (!std::isfinite(x) || std::abs(x) >= 65520.0f) continue;
    std::uint16_t h = nn::f32_to_f16_bits(x);
    double d = std::abs(double(nn::f16_bits_to_f32(h)) - x);
    for (int step : {-1, 1}) {
      int mag = (h & 0x7fff) + step;
      if (mag < 0 || mag > 0x7bff) continue;
      double other =
          std::abs(double(nn::f16_bits_to_f32(static_cast<std::uint16_t>((h & 0x8000) | mag))) - x);
      INFO(x << " -> " << h);
      REQUIRE(d <= other);
      if (d == other) REQUIRE((h & 1) == 0);
    }
  }
}

TEST_CASE("safetensors: F16 and BF16 files load as f32 and are written on request",
          "[nn][safetensors][half]") {
  // A file as other tools write it: F16 [1, -2, 2^-24, inf] and BF16 [1, pi's nearest].
  std::string f16_data("\x00\x3c\x00\xc0\x01\x00\x00\x7c", 8);
  std::string bf16_data("\x80\x3f\x49\x40", 4);
  auto file =
      nn::parse_safetensors(file_of(R"({"h":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},)"
                                    R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}})",
                                    f16_data + bf16_data));
  const Tensor& h = file.tensors.at("h");
  REQUIRE(h.dtype() == DType::f32);
  REQUIRE(h.shape() == Shape{2, 2});
  CHECK(h.data<float>()[0] == 1.0f);
  CHECK(h.data<float>()[1] == -2.0f);
  CHECK(h.data<float>()[2] == 0x1p-24f);
  CHECK(h.data<float>()[3] == INFINITY);
  const Tensor& b = file.tensors.at("b");
  REQUIRE(b.dtype() == DType::f32);
  CHECK(b.data<float>()[0] == 1.0f);
  CHECK(b.data<float>()[1] == 3.140625f);

  // Written on request: every f32 as BF16, one tensor as F16; other dtypes stay as they are.
  std::map<std::string, Tensor> w = {
      {"a", Tensor::from_vector<float>({3}, {1.0f, -2.0f, 0x1p-24f})},
      {"c", Tensor::from_vector<float>({2}, {1.0f, f32_of_bits(0x40490fdbu)})},
      {"i", Tensor::from_vector<std::int32_t>({1}, {7})}};
  std::string bytes = nn::to_safetensors_bytes(
      w, {}, {.f32_as = nn::HalfFormat::bf16, .store_as = {{"a", nn::HalfFormat::f16}}});
  auto header = nlohmann::json::parse(header_of(bytes));
  CHECK(header["a"]["dtype"] == "F16");
  CHECK(header["c"]["dtype"] == "BF16");
  CHECK(header["i"]["dtype"] == "I32");
  auto ranges = data_ranges(bytes);
  CHECK(bytes.substr(ranges["a"].first, 6) == std::string("\x00\x3c\x00\xc0\x01\x00", 6));
  CHECK(bytes.substr(ranges["c"].first, 4) == bf16_data);
  auto back = nn::parse_safetensors(bytes).tensors;
  CHECK(back.at("a").bitwise_equal(w.at("a")));  // exactly representable in F16
  CHECK(back.at("c").data<float>()[1] == 3.140625f);
  CHECK(back.at("i").bitwise_equal(w.at("i")));
  // The reference writer's order: F32 (17) > BF16 (14) > F16 (13).
  CHECK(header_of(bytes).find("\"i\"") < header_of(bytes).find("\"c\""));
  CHECK(header_of(bytes).find("\"c\"") < header_of(bytes).find("\"a\""));

  CHECK(
      error_of([&] {
        nn::to_safetensors_bytes(w, {}, {.store_as = {{"i", nn::HalfFormat::f16}}});
      }) ==
      "to_safetensors_bytes: tensor \"i\": only f32 tensors can be stored as F16, this one is i32");
  CHECK(
      error_of([&] {
        nn::to_safetensors_bytes(w, {}, {.store_as = {{"x", nn::HalfFormat::bf16}}});
      }) ==
      "to_safetensors_bytes: store_as names tensor \"x\", which is not among the tensors to write");

  TempDir dir;
  nn::save_safetensors(dir.file("h.safetensors"), w, {}, {.f32_as = nn::HalfFormat::f16});
  CHECK(read_bytes(dir.file("h.safetensors")) ==
        nn::to_safetensors_bytes(w, {}, {.f32_as = nn::HalfFormat::f16}));
  CHECK(nn::load_safetensors(dir.file("h.safetensors")).tensors.at("a").bitwise_equal(w.at("a")));
}
