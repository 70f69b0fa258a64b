#include <edifice/core/op.hpp>

#include <algorithm>
#include <cstring>

namespace edifice {
namespace {

constexpr Op kOps[] = {
#define EDIFICE_OP_LIST(name, kind) Op::name,
    EDIFICE_FOR_EACH_OP(EDIFICE_OP_LIST)
#undef EDIFICE_OP_LIST
};

constexpr std::string_view kOpNames[] = {
#define EDIFICE_OP_NAME(name, kind) #name,
    EDIFICE_FOR_EACH_OP(EDIFICE_OP_NAME)
#undef EDIFICE_OP_NAME
};

constexpr OpKind kOpKinds[] = {
#define EDIFICE_OP_KIND(name, kind) OpKind::kind,
    EDIFICE_FOR_EACH_OP(EDIFICE_OP_KIND)
#undef EDIFICE_OP_KIND
};

// FNV-1a, good enough for cache keys and stable across runs (std::hash is not required to be).
struct Hasher {
  std::uint64_t h = 1469598103934665603ull;
  void bytes(const void* p, std::size_t n) {
    auto* c = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 1099511628211ull;
  }
  template <class T>
  void pod(const T& v) {
    bytes(&v, sizeof v);
  }
  void str(std::string_view s) {
    pod(s.size());
    bytes(s.data(), s.size());
  }
};

std::string ints_to_string(const std::vector<std::int64_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::span<const Op> all_ops() {
  return kOps;
}

std::string_view op_name(Op op) {
  return kOpNames[static_cast<int>(op)];
}

OpKind op_kind(Op op) {
  return kOpKinds[static_cast<int>(op)];
}

bool is_elementwise(Op op) {
  switch (op_kind(op)) {
    case OpKind::unary:
    case OpKind::binary:
    case OpKind::compare:
    case OpKind::select:
    case OpKind::cast:
      return true;
    default:
      return false;
  }
}

bool is_layout(Op op) {
  return op_kind(op) == OpKind::layout;
}

bool is_index_remap(Op op) {
  return is_layout(op) && op != Op::pad && op != Op::concat;
}

Attributes::Attributes(std::initializer_list<std::pair<std::string, AttrValue>> items) {
  for (auto& [k, v] : items) set(k, v);
}

Attributes& Attributes::set(std::string key, AttrValue value) {
  auto it = std::lower_bound(items_.begin(), items_.end(), key,
                             [](const auto& item, const std::string& k) { return item.first < k; });
  if (it != items_.end() && it->first == key)
    it->second = std::move(value);
  else
    items_.insert(it, {std::move(key), std::move(value)});
  return *this;
}

bool Attributes::has(std::string_view key) const {
  return std::any_of(items_.begin(), items_.end(), [&](const auto& i) { return i.first == key; });
}

const AttrValue& Attributes::find(std::string_view key) const {
  for (const auto& item : items_)
    if (item.first == key) return item.second;
  fail("internal error: attribute '{}' is missing (have: {})", key, to_string());
}

namespace {
template <class T>
const T& get_as(const AttrValue& v, std::string_view key, const char* type) {
  if (const T* p = std::get_if<T>(&v)) return *p;
  fail("internal error: attribute '{}' is not of type {}", key, type);
}
}  // namespace

std::int64_t Attributes::get_int(std::string_view key) const {
  return get_as<std::int64_t>(find(key), key, "int");
}
double Attributes::get_float(std::string_view key) const {
  return get_as<double>(find(key), key, "float");
}
const std::vector<std::int64_t>& Attributes::get_ints(std::string_view key) const {
  return get_as<std::vector<std::int64_t>>(find(key), key, "int list");
}
const std::string& Attributes::get_string(std::string_view key) const {
  return get_as<std::string>(find(key), key, "string");
}
DType Attributes::get_dtype(std::string_view key) const {
  return get_as<DType>(find(key), key, "dtype");
}
const Tensor& Attributes::get_tensor(std::string_view key) const {
  return get_as<Tensor>(find(key), key, "tensor");
}

std::string Attributes::to_string() const {
  std::string out;
  for (const auto& [key, value] : items_) {
    if (!out.empty()) out += " ";
    out += key + "=";
    std::visit(
        [&](const auto& v) {
          using V = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<V, std::int64_t>)
            out += std::to_string(v);
          else if constexpr (std::is_same_v<V, double>)
            out += fmt::format("{:g}", v);
          else if constexpr (std::is_same_v<V, std::vector<std::int64_t>>)
            out += ints_to_string(v);
          else if constexpr (std::is_same_v<V, std::string>)
            out += v;
          else if constexpr (std::is_same_v<V, DType>)
            out += dtype_name(v);
          else
            out += v.to_string(4);
        },
        value);
  }
  return out;
}

std::uint64_t Attributes::hash() const {
  Hasher h;
  for (const auto& [key, value] : items_) {
    h.str(key);
    h.pod(value.index());
    std::visit(
        [&](const auto& v) {
          using V = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<V, std::vector<std::int64_t>>) {
            h.pod(v.size());
            h.bytes(v.data(), v.size() * sizeof(std::int64_t));
          } else if constexpr (std::is_same_v<V, std::string>) {
            h.str(v);
          } else if constexpr (std::is_same_v<V, Tensor>) {
            h.pod(v.dtype());
            h.pod(v.shape().size());
            h.bytes(v.shape().data(), v.shape().size() * sizeof(std::int64_t));
            h.bytes(v.raw_data(), v.nbytes());
          } else {
            h.pod(v);
          }
        },
        value);
  }
  return h.h;
}

bool Attributes::operator==(const Attributes& other) const {
  if (items_.size() != other.items_.size()) return false;
  for (std::size_t i = 0; i < items_.size(); ++i) {
    if (items_[i].first != other.items_[i].first) return false;
    const AttrValue& a = items_[i].second;
    const AttrValue& b = other.items_[i].second;
    if (a.index() != b.index()) return false;
    if (const Tensor* ta = std::get_if<Tensor>(&a)) {
      if (!ta->bitwise_equal(std::get<Tensor>(b))) return false;
    } else if (!std::visit(
                   [&](const auto& va) {
                     using V = std::decay_t<decltype(va)>;
                     if constexpr (std::is_same_v<V, Tensor>)
                       return false;
                     else
                       return va == std::get<V>(b);
                   },
                   a)) {
      return false;
    }
  }
  return true;
}

}  // namespace edifice
