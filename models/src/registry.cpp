#include <edifice/models/registry.hpp>

#include <charconv>
#include <functional>
#include <set>

namespace edifice::models {
namespace {

const char* const kWidthAliases[] = {"embed_dim", "input_size", "input_dim", "obs_size"};

// Typed access to a Config that records which keys were used.
class Options {
 public:
  Options(std::string_view arch, const Config& config) : arch_(arch), config_(config) {
    // Input-width aliases all fill embed_dim.
    for (const char* alias : kWidthAliases) {
      auto it = config_.find(alias);
      if (it == config_.end()) continue;
      if (width_ && *width_ != it->second)
        fail("models::build(\"{}\"): {} = {} disagrees with another input width option ({})", arch_,
             alias, it->second, *width_);
      width_ = it->second;
    }
    for (const char* alias : kWidthAliases) known_.insert(alias);
  }

  std::optional<std::int64_t> embed_dim() {
    if (!width_) return std::nullopt;
    return parse_int("embed_dim", *width_);
  }
  void integer(const char* key, std::int64_t& out) {
    if (auto v = raw(key)) out = parse_int(key, *v);
  }
  void integer(const char* key, std::optional<std::int64_t>& out) {
    if (auto v = raw(key)) out = parse_int(key, *v);
  }
  void real(const char* key, double& out) {
    if (auto v = raw(key)) {
      try {
        std::size_t used = 0;
        out = std::stod(*v, &used);
        if (used != v->size()) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        fail("models::build(\"{}\"): option {} = \"{}\" is not a number", arch_, key, *v);
      }
    }
  }
  void dtype(const char* key, DType& out) {
    if (auto v = raw(key)) {
      if (*v == "f32")
        out = DType::f32;
      else if (*v == "f64")
        out = DType::f64;
      else
        fail("models::build(\"{}\"): option {} = \"{}\" is not f32 or f64", arch_, key, *v);
    }
  }
  void integers(const char* key, std::vector<std::int64_t>& out) {
    if (auto v = raw(key)) {
      out.clear();
      std::string item;
      for (std::size_t i = 0; i <= v->size(); ++i) {
        if (i == v->size() || (*v)[i] == ',') {
          if (!item.empty()) out.push_back(parse_int(key, item));
          item.clear();
        } else if ((*v)[i] != ' ') {
          item += (*v)[i];
        }
      }
    }
  }
  // Every key of the config must have been asked for by the builder.
  void check_all_used() const {
    for (const auto& [key, value] : config_)
      if (!known_.count(key)) {
        std::string accepted;
        for (const auto& k : known_) accepted += (accepted.empty() ? "" : ", ") + k;
        fail("models::build(\"{}\"): unknown option \"{}\" (accepted: {})", arch_, key, accepted);
      }
  }

 private:
  std::optional<std::string> raw(const char* key) {
    known_.insert(key);
    auto it = config_.find(key);
    if (it == config_.end()) return std::nullopt;
    return it->second;
  }
  std::int64_t parse_int(const char* key, const std::string& v) const {
    std::int64_t out = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc() || end != v.data() + v.size())
      fail("models::build(\"{}\"): option {} = \"{}\" is not an integer", arch_, key, v);
    return out;
  }

  std::string arch_;
  const Config& config_;
  std::optional<std::string> width_;
  std::set<std::string> known_;
};

using Builder = std::function<multi_head::Built(Options&)>;

// Options shared by the option structs (same member names), read in one place.
template <class O>
void read_attention(Options& o, O& b) {
  b.embed_dim = o.embed_dim();
  o.integer("num_heads", b.num_heads);
  o.integer("head_dim", b.head_dim);
  o.real("dropout", b.dropout);
  o.integer("window_size", b.window_size);
  o.integer("seq_len", b.seq_len);
  o.dtype("dtype", b.dtype);
}

template <class O>
void read_encoder(Options& o, O& b) {
  read_attention(o, b);
  o.integer("num_layers", b.num_layers);
  o.integer("ffn_dim", b.ffn_dim);
}

template <class O>
void read_hybrid(Options& o, O& b) {
  read_attention(o, b);
  o.integer("lstm_hidden", b.lstm_hidden);
  o.integer("lstm_layers", b.lstm_layers);
}

const std::map<std::string, Builder>& registry() {
  static const std::map<std::string, Builder> builders = {
      {"attention",
       [](Options& o) {
         multi_head::BuildOptions b;
         read_encoder(o, b);
         o.integer("hidden_size", b.hidden_size);
         o.check_all_used();
         return multi_head::build(b);
       }},
      {"attention_sliding_window",
       [](Options& o) {
         multi_head::SlidingWindowOptions b;
         read_encoder(o, b);
         o.check_all_used();
         return multi_head::build_sliding_window(b);
       }},
      {"attention_hybrid",
       [](Options& o) {
         multi_head::HybridOptions b;
         read_hybrid(o, b);
         o.check_all_used();
         return multi_head::build_hybrid(b);
       }},
      {"attention_hybrid_mlp",
       [](Options& o) {
         multi_head::HybridMlpOptions b;
         read_hybrid(o, b);
         o.integers("mlp_sizes", b.mlp_sizes);
         o.check_all_used();
         return multi_head::build_hybrid_mlp(b);
       }},
  };
  return builders;
}

}  // namespace

std::vector<std::string> list_architectures() {
  std::vector<std::string> names;
  for (const auto& [name, _] : registry()) names.push_back(name);
  return names;
}

multi_head::Built build(std::string_view architecture, const Config& config) {
  auto it = registry().find(std::string(architecture));
  if (it == registry().end()) {
    std::string known;
    for (const auto& n : list_architectures()) known += (known.empty() ? "" : ", ") + n;
    fail("models::build: unknown architecture \"{}\" (known: {})", architecture, known);
  }
  Options options(architecture, config);
  return it->second(options);
}

}  // namespace edifice::models
