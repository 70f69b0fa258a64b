#include <edifice/nn/safetensors.hpp>

#include <edifice/core/error.hpp>
#include <edifice/nn/atomic_file.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
// xxHash from Debian's libxxhash-dev, inlined (header-only use): no library to link or export.
#define XXH_INLINE_ALL
#include <xxhash.h>
#include <system_error>
#include <unordered_set>

// Tensor bytes are copied to and from files as they are, and safetensors is little-endian.
static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

namespace edifice::nn {
namespace {

constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::size_t kNpos = std::string_view::npos;

// A dtype as stored in a file: its name, its position in the reference implementation's Dtype
// enum (BOOL=0 ... U64=21; its writer sorts by this, descending, so keeping the same key gives
// byte-identical files), its element size and the Edifice dtype it loads as.
struct FileDType {
  std::string_view name;
  int reference_rank;
  std::size_t size;
  DType loads_as;
  enum Storage { plain, f16, bf16 } storage;
};

constexpr FileDType kFileDTypes[] = {
    {"F32", 17, 4, DType::f32, FileDType::plain}, {"F64", 19, 8, DType::f64, FileDType::plain},
    {"I32", 15, 4, DType::i32, FileDType::plain}, {"I64", 20, 8, DType::i64, FileDType::plain},
    {"U8", 4, 1, DType::u8, FileDType::plain},    {"F16", 13, 2, DType::f32, FileDType::f16},
    {"BF16", 14, 2, DType::f32, FileDType::bf16},
};

const FileDType* file_dtype_named(std::string_view name) {
  for (const FileDType& f : kFileDTypes)
    if (f.name == name) return &f;
  return nullptr;
}

const FileDType& plain_file_dtype(DType d) {
  for (const FileDType& f : kFileDTypes)
    if (f.storage == FileDType::plain && f.loads_as == d) return f;
  fail("safetensors: no file dtype for {}", dtype_name(d));
}

const FileDType& half_file_dtype(HalfFormat h) {
  return *file_dtype_named(h == HalfFormat::f16 ? "F16" : "BF16");
}

std::string checksum_hex(std::string_view bytes) {
  return fmt::format("{:016x}", XXH64(bytes.data(), bytes.size(), 0));
}

// Offset of the first byte that starts an invalid UTF-8 sequence, or kNpos. Same rules as
// Rust's str::from_utf8: no overlong forms, no surrogates, nothing above U+10FFFF.
std::size_t invalid_utf8_offset(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned lo = 0x80;
    unsigned hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (n - i < len || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return kNpos;
}

// Appends `s` as a JSON string, escaped exactly as serde_json (the reference) does.
void append_json_string(std::string& out, std::string_view s, bool hex_escape_high = false) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20)
          out += fmt::format("\\u{:04x}", c);
        else if (c >= 0x80 && hex_escape_high)
          out += fmt::format("\\x{:02x}", c);
        else
          out += ch;
    }
  }
  out += '"';
}

// A name or key for an error message: quoted, escaped, cut after 200 bytes (names may be up
// to 64 KiB), and with bytes of invalid UTF-8 shown as \xNN.
std::string quote_name(std::string_view s) {
  constexpr std::size_t kMaxShown = 200;
  bool cut = s.size() > kMaxShown;
  if (cut) {
    std::size_t end = kMaxShown;
    while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
    s = s.substr(0, end);
  }
  std::string out;
  append_json_string(out, s, invalid_utf8_offset(s) != kNpos);
  if (cut) out += "...";
  return out;
}

std::string shape_string(const std::vector<std::uint64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

std::string errno_text(int err) {
  return std::error_code(err, std::generic_category()).message();
}

// ---------------------------------------------------------------------------------------------
// Writing

struct Item {
  std::string_view name;
  const Tensor* tensor;
  const FileDType* stored = nullptr;  // set by layout_file
  std::string_view bytes;             // what the file holds: the tensor's or converted bytes
};

struct Layout {
  std::string head;         // the 8-byte length followed by the padded JSON header
  std::vector<Item> items;  // in data order
  // Tensors stored as F16/BF16, converted (the items' bytes point here; inner buffers do not
  // move when the outer vector does).
  std::vector<std::vector<std::uint16_t>> converted;
};

std::string_view tensor_bytes(const Tensor& t) {
  return {static_cast<const char*>(t.raw_data()), t.nbytes()};
}

// Chooses each item's stored dtype from `options` and converts the tensors stored as halves.
void apply_storage(std::vector<Item>& items, const SafetensorsWriteOptions& options,
                   std::vector<std::vector<std::uint16_t>>& converted, std::string_view context) {
  for (const auto& [name, format] : options.store_as) {
    auto it =
        std::find_if(items.begin(), items.end(), [&](const Item& i) { return i.name == name; });
    if (it == items.end())
      fail("{}: store_as names tensor {}, which is not among the tensors to write", context,
           quote_name(name));
    if (it->tensor->dtype() != DType::f32)
      fail("{}: tensor {}: only f32 tensors can be stored as {}, this one is {}", context,
           quote_name(name), half_file_dtype(format).name, dtype_name(it->tensor->dtype()));
  }
  converted.reserve(items.size());
  for (Item& it : items) {
    std::optional<HalfFormat> half;
    if (auto o = options.store_as.find(std::string(it.name)); o != options.store_as.end())
      half = o->second;
    else if (it.tensor->dtype() == DType::f32)
      half = options.f32_as;
    if (!half) {
      it.stored = &plain_file_dtype(it.tensor->dtype());
      it.bytes = tensor_bytes(*it.tensor);
      continue;
    }
    it.stored = &half_file_dtype(*half);
    const float* src = it.tensor->data<float>();
    auto& out = converted.emplace_back(static_cast<std::size_t>(it.tensor->numel()));
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = *half == HalfFormat::f16 ? f32_to_f16_bits(src[i]) : f32_to_bf16_bits(src[i]);
    it.bytes = {reinterpret_cast<const char*>(out.data()), out.size() * 2};
  }
}

// The metadata to write: the caller's, plus the checksums of the items' stored bytes.
std::map<std::string, std::string> metadata_to_write(
    const std::vector<Item>& items, const std::map<std::string, std::string>& metadata,
    const SafetensorsWriteOptions& options, std::string_view context) {
  for (const auto& [key, value] : metadata) {
    if (invalid_utf8_offset(key) != kNpos)
      fail("{}: metadata key {} is not valid UTF-8", context, quote_name(key));
    if (invalid_utf8_offset(value) != kNpos)
      fail("{}: metadata value of {} is not valid UTF-8", context, quote_name(key));
    if (key == kSafetensorsChecksumKey)
      fail("{}: metadata key {} is reserved for the checksums the writer stores", context,
           quote_name(key));
  }
  std::map<std::string, std::string> out = metadata;
  if (options.checksums) {
    nlohmann::json sums = nlohmann::json::object();
    for (const Item& it : items) sums[std::string(it.name)] = checksum_hex(it.bytes);
    out.emplace(kSafetensorsChecksumKey, sums.dump());
  }
  return out;
}

Layout layout_file(std::vector<Item> items, const std::map<std::string, std::string>& user_metadata,
                   const SafetensorsWriteOptions& options, std::string_view context) {
  if (items.size() > kSafetensorsMaxTensors)
    fail("{}: {} tensors exceed the limit of {} per file", context, items.size(),
         kSafetensorsMaxTensors);
  for (const Item& it : items) {
    if (it.name == kMetadataKey)
      fail("{}: tensor \"__metadata__\": the name is reserved for the metadata map", context);
    if (it.name.size() > kSafetensorsMaxNameBytes)
      fail("{}: tensor name {} is {} bytes long, over the limit of {} bytes", context,
           quote_name(it.name), it.name.size(), kSafetensorsMaxNameBytes);
    if (invalid_utf8_offset(it.name) != kNpos)
      fail("{}: tensor name {} is not valid UTF-8", context, quote_name(it.name));
    const Shape& shape = it.tensor->shape();
    if (shape.size() > kSafetensorsMaxRank)
      fail("{}: tensor {}: rank {} exceeds the limit of {}", context, quote_name(it.name),
           shape.size(), kSafetensorsMaxRank);
    for (std::int64_t d : shape)
      if (d < 0 || static_cast<std::uint64_t>(d) > kSafetensorsMaxExtent)
        fail("{}: tensor {}: extent {} is out of range [0, {}]", context, quote_name(it.name), d,
             kSafetensorsMaxExtent);
  }
  Layout layout;
  apply_storage(items, options, layout.converted, context);
  const auto metadata = metadata_to_write(items, user_metadata, options, context);

  // The reference writer's order: dtype rank descending, then name (bytewise).
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    int ra = a.stored->reference_rank;
    int rb = b.stored->reference_rank;
    return ra != rb ? ra > rb : a.name < b.name;
  });

  std::string json = "{";
  bool first = true;
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    for (const auto& [key, value] : metadata) {  // std::map: sorted bytewise
      if (!first) json += ',';
      first = false;
      append_json_string(json, key);
      json += ':';
      append_json_string(json, value);
    }
    json += '}';
    first = false;
  }
  std::uint64_t offset = 0;
  for (const Item& it : items) {
    if (!first) json += ',';
    first = false;
    std::uint64_t end = offset + it.bytes.size();
    append_json_string(json, it.name);
    json += fmt::format(R"(:{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})", it.stored->name,
                        fmt::join(it.tensor->shape(), ","), offset, end);
    offset = end;
  }
  json += '}';
  // Pad to a multiple of 8 so the data section, and with it every tensor, is aligned.
  json.append((8 - json.size() % 8) % 8, ' ');
  if (json.size() > kSafetensorsMaxHeaderBytes)
    fail("{}: the header would be {} bytes, over the limit of {} bytes", context, json.size(),
         kSafetensorsMaxHeaderBytes);

  std::uint64_t n = json.size();
  layout.head.resize(8);
  std::memcpy(layout.head.data(), &n, 8);
  layout.head += json;
  layout.items = std::move(items);
  return layout;
}

std::vector<Item> items_of(const std::map<std::string, Tensor>& tensors) {
  std::vector<Item> items;
  items.reserve(tensors.size());
  for (const auto& [name, t] : tensors) items.push_back({name, &t});
  return items;
}

std::vector<Item> items_of(std::span<const std::pair<std::string, Tensor>> tensors,
                           std::string_view context) {
  std::vector<Item> items;
  items.reserve(tensors.size());
  std::unordered_set<std::string_view> seen;
  for (const auto& [name, t] : tensors) {
    if (!seen.insert(name).second) fail("{}: duplicate tensor name {}", context, quote_name(name));
    items.push_back({name, &t});
  }
  return items;
}

std::string to_bytes(const Layout& layout) {
  std::size_t total = layout.head.size();
  for (const Item& it : layout.items) total += it.bytes.size();
  std::string out;
  out.reserve(total);
  out += layout.head;
  for (const Item& it : layout.items) out += it.bytes;
  return out;
}

void save(const std::string& path, const Layout& layout) {
  std::vector<std::string_view> pieces;
  pieces.reserve(layout.items.size() + 1);
  pieces.push_back(layout.head);
  for (const Item& it : layout.items)
    if (!it.bytes.empty()) pieces.push_back(it.bytes);
  write_file_atomically(path, pieces);
}

// ---------------------------------------------------------------------------------------------
// Reading

struct Entry {
  std::string name;
  const FileDType* ft = nullptr;
  std::vector<std::uint64_t> shape;
  std::uint64_t offsets[2] = {0, 0};
  std::size_t offset_count = 0;
  bool has[3] = {false, false, false};  // dtype, shape, data_offsets
  std::uint64_t nbytes = 0;
};

// A JSON value as the SAX parser reports it, with what an error message should call it.
struct JsonValue {
  enum Kind { null, boolean, unsigned_int, other_number, string, object, array };
  JsonValue(Kind k, std::uint64_t value = 0, std::string literal = {}, std::string* str = nullptr)
      : kind(k), u(value), text(std::move(literal)), s(str) {}
  Kind kind;
  std::uint64_t u;   // unsigned_int
  std::string text;  // numbers: as written
  std::string* s;    // string
  std::string describe() const {
    switch (kind) {
      case null:
        return "null";
      case boolean:
        return "a boolean";
      case unsigned_int:
      case other_number:
        return text;
      case string:
        return "a string";
      case object:
        return "an object";
      case array:
        return "an array";
    }
    return "?";
  }
};

// Validates the header's structure while nlohmann's parser reads it, stopping at the first
// problem. Building no DOM keeps memory proportional to what is kept (names, shapes), rejects
// nesting at once, and sees duplicate keys (nlohmann's DOM would silently keep the last).
class HeaderSax final : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::deque<Entry> entries;  // a deque: names_ holds views into the entries
  std::map<std::string, std::string> metadata;
  std::string error;

  bool null() override { return value({JsonValue::null}); }
  bool boolean(bool) override { return value({JsonValue::boolean}); }
  bool number_integer(number_integer_t v) override {
    // nlohmann reports non-negative integers as unsigned, except "-0".
    if (v >= 0)
      return value({JsonValue::unsigned_int, static_cast<std::uint64_t>(v), std::to_string(v)});
    return value({JsonValue::other_number, 0, std::to_string(v)});
  }
  bool number_unsigned(number_unsigned_t v) override {
    return value({JsonValue::unsigned_int, v, std::to_string(v)});
  }
  bool number_float(number_float_t, const string_t& text) override {
    return value({JsonValue::other_number, 0, text});
  }
  bool string(string_t& s) override { return value({JsonValue::string, 0, {}, &s}); }
  bool binary(binary_t&) override { return stop("header is not valid JSON"); }
  bool start_object(std::size_t) override { return value({JsonValue::object}); }
  bool start_array(std::size_t) override { return value({JsonValue::array}); }

  bool key(string_t& k) override {
    switch (ctx_) {
      case Ctx::top:
        if (k == kMetadataKey) {
          if (seen_metadata_) return stop("duplicate key \"__metadata__\" in the header");
          seen_metadata_ = true;
          in_metadata_ = true;
        } else {
          if (k.size() > kSafetensorsMaxNameBytes)
            return stop(fmt::format("tensor name {} is {} bytes long, over the limit of {} bytes",
                                    quote_name(k), k.size(), kSafetensorsMaxNameBytes));
          if (names_.contains(k))
            return stop(fmt::format("duplicate tensor name {} in the header", quote_name(k)));
          if (entries.size() == kSafetensorsMaxTensors)
            return stop(
                fmt::format("the header declares more than {} tensors", kSafetensorsMaxTensors));
          entries.emplace_back().name = std::move(k);
          names_.insert(entries.back().name);
          in_metadata_ = false;
        }
        ctx_ = Ctx::top_value;
        return true;
      case Ctx::entry: {
        static constexpr std::string_view kFields[] = {"dtype", "shape", "data_offsets"};
        auto it = std::find(std::begin(kFields), std::end(kFields), k);
        if (it == std::end(kFields))
          return stop(tensor() + fmt::format("unexpected field {} (an entry has exactly \"dtype\", "
                                             "\"shape\" and \"data_offsets\")",
                                             quote_name(k)));
        field_ = static_cast<int>(it - std::begin(kFields));
        if (entries.back().has[field_]) return stop(tensor() + "duplicate field " + quote_name(k));
        entries.back().has[field_] = true;
        ctx_ = Ctx::entry_value;
        return true;
      }
      case Ctx::metadata:
        if (metadata.contains(k)) return stop("__metadata__: duplicate key " + quote_name(k));
        metadata_key_ = std::move(k);
        ctx_ = Ctx::metadata_value;
        return true;
      default:
        return stop("header is not valid JSON");  // nlohmann sends keys only in objects
    }
  }

  bool end_object() override {
    switch (ctx_) {
      case Ctx::top:
        ctx_ = Ctx::done;
        return true;
      case Ctx::metadata:
        ctx_ = Ctx::top;
        return true;
      case Ctx::entry: {
        static constexpr const char* kFields[] = {"dtype", "shape", "data_offsets"};
        for (int f = 0; f < 3; ++f)
          if (!entries.back().has[f])
            return stop(tensor() + fmt::format("missing field \"{}\"", kFields[f]));
        ctx_ = Ctx::top;
        return true;
      }
      default:
        return stop("header is not valid JSON");
    }
  }

  bool end_array() override {
    if (ctx_ == Ctx::offsets && entries.back().offset_count != 2)
      return stop(tensor() + fmt::format("data_offsets has {} value(s), expected two integers "
                                         "[begin, end]",
                                         entries.back().offset_count));
    if (ctx_ != Ctx::shape && ctx_ != Ctx::offsets) return stop("header is not valid JSON");
    ctx_ = Ctx::entry;
    return true;
  }

  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    std::string what = ex.what();
    if (what.starts_with("[json.exception.")) {
      auto p = what.find("] ");
      if (p != std::string::npos) what.erase(0, p + 2);
    }
    return stop("header is not valid JSON: " + what);
  }

 private:
  enum class Ctx {
    root,
    top,
    top_value,
    entry,
    entry_value,
    shape,
    offsets,
    metadata,
    metadata_value,
    done
  };

  bool stop(std::string message) {
    error = std::move(message);
    return false;
  }
  std::string tensor() const { return "tensor " + quote_name(entries.back().name) + ": "; }

  bool value(const JsonValue& v) {
    switch (ctx_) {
      case Ctx::root:
        if (v.kind == JsonValue::object) {
          ctx_ = Ctx::top;
          return true;
        }
        return stop(fmt::format("header is {}, expected a JSON object", v.describe()));
      case Ctx::top_value:
        if (v.kind == JsonValue::object) {
          ctx_ = in_metadata_ ? Ctx::metadata : Ctx::entry;
          return true;
        }
        if (in_metadata_)
          return stop(
              fmt::format("__metadata__ is {}, expected an object of strings", v.describe()));
        return stop(tensor() + fmt::format("entry is {}, expected an object with \"dtype\", "
                                           "\"shape\" and \"data_offsets\"",
                                           v.describe()));
      case Ctx::entry_value:
        return field_value(v);
      case Ctx::shape: {
        Entry& e = entries.back();
        if (v.kind != JsonValue::unsigned_int || v.u > kSafetensorsMaxExtent)
          return stop(tensor() + fmt::format("shape[{}] is {}, expected an integer in [0, {}]",
                                             e.shape.size(), v.describe(), kSafetensorsMaxExtent));
        if (e.shape.size() == kSafetensorsMaxRank)
          return stop(tensor() +
                      fmt::format("shape has more than {} dimensions", kSafetensorsMaxRank));
        e.shape.push_back(v.u);
        return true;
      }
      case Ctx::offsets: {
        Entry& e = entries.back();
        if (v.kind != JsonValue::unsigned_int)
          return stop(tensor() + fmt::format("data_offsets[{}] is {}, expected a non-negative "
                                             "integer",
                                             e.offset_count, v.describe()));
        if (e.offset_count == 2)
          return stop(tensor() + "data_offsets has more than two values, expected [begin, end]");
        e.offsets[e.offset_count++] = v.u;
        return true;
      }
      case Ctx::metadata_value:
        if (v.kind != JsonValue::string)
          return stop(fmt::format("__metadata__ {} is {}, expected a string",
                                  quote_name(metadata_key_), v.describe()));
        metadata.emplace(std::move(metadata_key_), std::move(*v.s));
        ctx_ = Ctx::metadata;
        return true;
      default:
        return stop("header is not valid JSON");
    }
  }

  bool field_value(const JsonValue& v) {
    Entry& e = entries.back();
    switch (field_) {
      case 0: {
        if (v.kind != JsonValue::string)
          return stop(tensor() +
                      fmt::format("dtype is {}, expected a string such as \"F32\"", v.describe()));
        const FileDType* ft = file_dtype_named(*v.s);
        if (!ft)
          return stop(tensor() + fmt::format("unknown dtype {} (Edifice reads F32, F64, I32, "
                                             "I64, U8, F16 and BF16)",
                                             quote_name(*v.s)));
        e.ft = ft;
        ctx_ = Ctx::entry;
        return true;
      }
      case 1:
        if (v.kind != JsonValue::array)
          return stop(tensor() +
                      fmt::format("shape is {}, expected a list of integers", v.describe()));
        ctx_ = Ctx::shape;
        return true;
      default:
        if (v.kind != JsonValue::array)
          return stop(tensor() + fmt::format("data_offsets is {}, expected two integers "
                                             "[begin, end]",
                                             v.describe()));
        ctx_ = Ctx::offsets;
        return true;
    }
  }

  Ctx ctx_ = Ctx::root;
  int field_ = 0;
  bool seen_metadata_ = false;
  bool in_metadata_ = false;
  std::string metadata_key_;
  std::unordered_set<std::string_view> names_;
};

// Random access to the bytes of a file or a buffer. `read` fills exactly n bytes or throws.
struct Source {
  std::string_view name;
  std::uint64_t size = 0;
  std::function<void(std::uint64_t offset, void* dst, std::size_t n)> read;
};

// Removes the checksum key from `metadata` and returns its checksums by tensor name (empty
// when the file has none), checking it names exactly the file's tensors.
std::map<std::string, std::uint64_t, std::less<>> take_checksums(
    std::map<std::string, std::string>& metadata, const std::deque<Entry>& entries,
    std::string_view file) {
  std::map<std::string, std::uint64_t, std::less<>> sums;
  auto node = metadata.extract(std::string(kSafetensorsChecksumKey));
  if (node.empty()) return sums;
  const std::string where = fmt::format("{}: __metadata__ {}", file, quote_name(node.key()));
  nlohmann::json j = nlohmann::json::parse(node.mapped(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) fail("{} is not a JSON object of checksums", where);
  for (const auto& [name, value] : j.items()) {
    const std::string* hex = value.get_ptr<const std::string*>();
    if (!hex || hex->size() != 16 ||
        hex->find_first_not_of("0123456789abcdef") != std::string::npos)
      fail("{}: the checksum of tensor {} is {}, expected 16 lowercase hex digits", where,
           quote_name(name), value.dump());
    sums.emplace(name, std::stoull(*hex, nullptr, 16));
  }
  std::unordered_set<std::string_view> names;
  for (const Entry& e : entries) {
    if (!sums.contains(e.name)) fail("{} has no checksum for tensor {}", where, quote_name(e.name));
    names.insert(e.name);
  }
  for (const auto& [name, sum] : sums)
    if (!names.contains(name))
      fail("{} has a checksum for tensor {}, which is not in the file", where, quote_name(name));
  return sums;
}

// Reads one validated entry (the data section starts at `data_start`), checks its checksum if
// the file has them, and widens F16/BF16 to f32.
Tensor read_tensor(const Source& src, std::uint64_t data_start, const Entry& e,
                   const std::map<std::string, std::uint64_t, std::less<>>& checksums) {
  Tensor t(e.ft->loads_as, Shape(e.shape.begin(), e.shape.end()));
  std::vector<std::uint16_t> halves;
  void* dst = t.raw_data();
  if (e.ft->storage != FileDType::plain) {
    halves.resize(static_cast<std::size_t>(t.numel()));
    dst = halves.data();
  }
  if (e.nbytes > 0) src.read(data_start + e.offsets[0], dst, static_cast<std::size_t>(e.nbytes));
  if (auto expected = checksums.find(e.name); expected != checksums.end()) {
    std::uint64_t actual = XXH64(dst, static_cast<std::size_t>(e.nbytes), 0);
    if (actual != expected->second)
      fail(
          "{}: tensor {}: checksum mismatch: its {} bytes hash to xxh64 {:016x}, the header "
          "records {:016x} (the data is corrupt)",
          src.name, quote_name(e.name), e.nbytes, actual, expected->second);
  }
  if (e.ft->storage == FileDType::f16)
    std::transform(halves.begin(), halves.end(), t.data<float>(), f16_bits_to_f32);
  else if (e.ft->storage == FileDType::bf16)
    std::transform(halves.begin(), halves.end(), t.data<float>(), bf16_bits_to_f32);
  return t;
}

SafetensorsFile parse(const Source& src) {
  if (src.size < 8)
    fail("{}: the file is {} bytes long, too short for the 8-byte header length", src.name,
         src.size);
  std::uint64_t n = 0;
  src.read(0, &n, 8);
  if (n > kSafetensorsMaxHeaderBytes)
    fail("{}: header length {} exceeds the limit of {} bytes", src.name, n,
         kSafetensorsMaxHeaderBytes);
  if (n > src.size - 8)
    fail("{}: header length {} runs past the end of the file ({} bytes)", src.name, n, src.size);

  // From here n <= file size: allocating it is safe.
  std::string header(static_cast<std::size_t>(n), '\0');
  src.read(8, header.data(), header.size());
  if (auto bad = invalid_utf8_offset(header); bad != kNpos)
    fail("{}: header is not valid UTF-8 (byte 0x{:02x} at header offset {})", src.name,
         static_cast<unsigned char>(header[bad]), bad);

  HeaderSax sax;
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(header.begin(), header.end(), &sax);
  } catch (const nlohmann::json::exception& ex) {
    fail("{}: header is not valid JSON: {}", src.name, ex.what());
  }
  if (!ok) fail("{}: {}", src.name, sax.error.empty() ? "header is not valid JSON" : sax.error);
  header = {};

  const std::uint64_t data_size = src.size - 8 - n;
  for (Entry& e : sax.entries) {
    // Same bound as Tensor's constructor, so every entry that passes can be allocated.
    constexpr std::uint64_t kLimit = std::numeric_limits<std::int64_t>::max() / 8;
    std::uint64_t numel = 1;
    for (std::uint64_t d : e.shape) {
      if (d != 0 && numel > kLimit / d)
        fail("{}: tensor {}: shape {} of {} is too large (its byte size overflows)", src.name,
             quote_name(e.name), shape_string(e.shape), e.ft->name);
      numel *= d;
    }
    e.nbytes = numel * e.ft->size;
    auto [begin, end] = e.offsets;
    if (begin > end)
      fail("{}: tensor {}: data_offsets [{},{}] have begin > end", src.name, quote_name(e.name),
           begin, end);
    if (end - begin != e.nbytes)
      fail("{}: tensor {}: data_offsets [{},{}] hold {} bytes but shape {} of {} needs {}",
           src.name, quote_name(e.name), begin, end, end - begin, shape_string(e.shape), e.ft->name,
           e.nbytes);
    if (end > data_size)
      fail("{}: tensor {}: data_offsets [{},{}] run past the end of the data section ({} bytes)",
           src.name, quote_name(e.name), begin, end, data_size);
  }

  // The tensors must tile the data section: no gap, no overlap, no trailing bytes. Overlaps
  // would let a small file make a loader allocate far more than its size.
  std::vector<const Entry*> order;
  order.reserve(sax.entries.size());
  for (const Entry& e : sax.entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    if (a->offsets[0] != b->offsets[0]) return a->offsets[0] < b->offsets[0];
    if (a->offsets[1] != b->offsets[1]) return a->offsets[1] < b->offsets[1];
    return a->name < b->name;
  });
  std::uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    if (e->offsets[0] > pos)
      fail("{}: bytes [{},{}) of the data section belong to no tensor (a gap before tensor {})",
           src.name, pos, e->offsets[0], quote_name(e->name));
    if (e->offsets[0] < pos)
      fail("{}: tensor {} at data_offsets [{},{}] overlaps tensor {} at [{},{}]", src.name,
           quote_name(e->name), e->offsets[0], e->offsets[1], quote_name(prev->name),
           prev->offsets[0], prev->offsets[1]);
    pos = e->offsets[1];
    prev = e;
  }
  if (pos != data_size)
    fail(
        "{}: {} trailing bytes after the last tensor (the data section is {} bytes, the "
        "tensors cover {})",
        src.name, data_size - pos, data_size, pos);

  // Validated: the tensors' total size is exactly the data section's.
  SafetensorsFile file;
  const auto checksums = take_checksums(sax.metadata, sax.entries, src.name);
  for (const Entry* e : order)
    file.tensors.emplace(e->name, read_tensor(src, 8 + n, *e, checksums));
  file.metadata = std::move(sax.metadata);
  return file;
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string_view safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "F32";
    case DType::f64:
      return "F64";
    case DType::i32:
      return "I32";
    case DType::i64:
      return "I64";
    case DType::u8:
      return "U8";
  }
  return "?";
}

std::optional<DType> dtype_from_safetensors_name(std::string_view name) {
  for (DType d : kAllDTypes)
    if (safetensors_dtype_name(d) == name) return d;
  return std::nullopt;
}

std::string to_safetensors_bytes(const std::map<std::string, Tensor>& tensors,
                                 const std::map<std::string, std::string>& metadata,
                                 const SafetensorsWriteOptions& options) {
  return to_bytes(layout_file(items_of(tensors), metadata, options, "to_safetensors_bytes"));
}

std::string to_safetensors_bytes(std::span<const std::pair<std::string, Tensor>> tensors,
                                 const std::map<std::string, std::string>& metadata,
                                 const SafetensorsWriteOptions& options) {
  constexpr std::string_view context = "to_safetensors_bytes";
  return to_bytes(layout_file(items_of(tensors, context), metadata, options, context));
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata,
                      const SafetensorsWriteOptions& options) {
  save(path, layout_file(items_of(tensors), metadata, options, path));
}

void save_safetensors(const std::string& path,
                      std::span<const std::pair<std::string, Tensor>> tensors,
                      const std::map<std::string, std::string>& metadata,
                      const SafetensorsWriteOptions& options) {
  save(path, layout_file(items_of(tensors, path), metadata, options, path));
}

float f16_bits_to_f32(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1f;
  const std::uint32_t mantissa = h & 0x3ff;
  if (exponent == 0x1f)  // infinity or NaN: the payload moves to the top of f32's mantissa
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in f32
    float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

std::uint16_t f32_to_f16_bits(float value) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000);
  const std::uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude > 0x7f800000u)  // NaN: keep the top payload bits, force quiet
    return static_cast<std::uint16_t>(sign | 0x7e00 | ((magnitude >> 13) & 0x3ff));
  if (magnitude >= 0x477ff000u)  // rounds to >= 65520: infinity
    return static_cast<std::uint16_t>(sign | 0x7c00);
  if (magnitude < 0x38800000u) {  // below 2^-14: a subnormal half (or zero)
    // Exact in float: |value| * 2^24 is below 2^10, and rint rounds to nearest even.
    const float scaled = std::bit_cast<float>(magnitude) * 0x1p24f;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(std::nearbyint(scaled)));
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even (a carry
  // into the exponent is the correct next binade).
  const std::uint32_t rebiased = magnitude - (112u << 23);
  const std::uint32_t rounded = rebiased + 0xfffu + ((rebiased >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (rounded >> 13));
}

float bf16_bits_to_f32(std::uint16_t bits) {
  return std::bit_cast<float>(std::uint32_t(bits) << 16);
}

std::uint16_t f32_to_bf16_bits(float value) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u)  // NaN: keep sign and top payload bits, force quiet
    return static_cast<std::uint16_t>((x >> 16) | 0x0040);
  // Round to nearest even; overflow carries into the exponent and gives infinity, as it should.
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

SafetensorsFile load_safetensors(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file.
  Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  if (fd.fd < 0) fail("{}: cannot open: {}", path, errno_text(errno));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) fail("{}: cannot stat: {}", path, errno_text(errno));
  if (!S_ISREG(st.st_mode)) fail("{}: not a regular file", path);

  Source src;
  src.name = path;
  src.size = static_cast<std::uint64_t>(st.st_size);
  src.read = [&](std::uint64_t offset, void* dst, std::size_t count) {
    auto* p = static_cast<char*>(dst);
    while (count > 0) {
      ssize_t r = ::pread(fd.fd, p, count, static_cast<off_t>(offset));
      if (r < 0) {
        if (errno == EINTR) continue;
        fail("{}: read failed: {}", path, errno_text(errno));
      }
      if (r == 0) fail("{}: the file shrank while it was being read", path);
      p += r;
      offset += static_cast<std::uint64_t>(r);
      count -= static_cast<std::size_t>(r);
    }
  };
  return parse(src);
}

SafetensorsFile parse_safetensors(std::string_view bytes, std::string_view source_name) {
  Source src;
  src.name = source_name;
  src.size = bytes.size();
  src.read = [&](std::uint64_t offset, void* dst, std::size_t count) {
    std::memcpy(dst, bytes.data() + offset, count);
  };
  return parse(src);
}

}  // namespace edifice::nn
