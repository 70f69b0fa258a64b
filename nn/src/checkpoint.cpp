// Training checkpoints and parameter files over safetensors (see checkpoint.hpp for the layout).
#include <edifice/nn/atomic_file.hpp>
#include <edifice/nn/checkpoint.hpp>
#include <edifice/nn/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <set>

namespace edifice::nn {
namespace {

constexpr const char* kFormat = "edifice.training_checkpoint";
constexpr const char* kFormatVersion = "1";
constexpr const char* kParams = "params/";
constexpr const char* kOptimizer = "optimizer/";

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

Tensor i64(std::int64_t v) {
  return Tensor::scalar<std::int64_t>(v);
}
Tensor u64(std::uint64_t v) {
  return Tensor::scalar<std::int64_t>(std::bit_cast<std::int64_t>(v));
}
Tensor f64(double v) {
  return Tensor::scalar<double>(v);
}

std::string parameter_list_json(const Params& params) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [name, t] : params)
    list.push_back({{"name", name}, {"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}});
  return list.dump();
}

// The loop tensor `name` of `dtype` and `shape`, or an error naming the file and the entry.
const Tensor& loop_entry(std::string_view path, const std::map<std::string, Tensor>& tensors,
                         const std::string& name, DType dtype, const Shape& shape) {
  auto it = tensors.find(name);
  if (it == tensors.end())
    fail("{}: not a complete training checkpoint: tensor \"{}\" is missing", path, name);
  if (it->second.dtype() != dtype || it->second.shape() != shape)
    fail("{}: tensor \"{}\" is {}{}, a checkpoint stores it as {}{}", path, name,
         dtype_name(it->second.dtype()), shape_to_string(it->second.shape()), dtype_name(dtype),
         shape_to_string(shape));
  return it->second;
}

}  // namespace

std::int64_t TrainState::step() const {
  auto it = optimizer.find("step");
  if (it == optimizer.end() || it->second.dtype() != DType::i64 || it->second.rank() != 0) return 0;
  return *it->second.data<std::int64_t>();
}

void save_checkpoint(const std::string& path, const TrainState& state,
                     const CheckpointMetadata& metadata) {
  std::string config;
  try {
    config = nlohmann::json::parse(metadata.config).dump();
  } catch (const nlohmann::json::exception& e) {
    fail("save_checkpoint: the config is not valid JSON: {}", e.what());
  }
  auto step_it = state.optimizer.find("step");
  if (step_it == state.optimizer.end() || step_it->second.dtype() != DType::i64 ||
      step_it->second.rank() != 0)
    fail("save_checkpoint: the optimizer state needs \"step\" as an i64 scalar");
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, t] : state.params) tensors[kParams + name] = t;
  for (const auto& [name, t] : state.optimizer) tensors[kOptimizer + name] = t;
  const LoopState& l = state.loop;
  tensors["loop/epoch"] = i64(l.epoch);
  tensors["loop/cursor"] = i64(l.cursor);
  tensors["loop/data_seed"] = u64(l.data_seed);
  tensors["loop/dropout_seed"] = u64(l.dropout_seed);
  tensors["loop/dropout_counter"] = u64(l.dropout_counter);
  tensors["loop/running_sums"] = Tensor::from_vector<double>(
      {static_cast<std::int64_t>(l.running_sums.size())}, l.running_sums);
  tensors["loop/running_count"] = f64(l.running_count);
  tensors["loop/early_stopping_best"] = f64(l.early_stopping_best);
  tensors["loop/early_stopping_wait"] = i64(l.early_stopping_wait);
  tensors["loop/elapsed_s"] = f64(l.elapsed_s);

  std::map<std::string, std::string> meta = {
      {"format", kFormat},
      {"format_version", kFormatVersion},
      {"config", config},
      {"parameters", parameter_list_json(state.params)},
      {"step", std::to_string(state.step())},
      {"epoch", std::to_string(l.epoch)},
      {"cursor", std::to_string(l.cursor)},
  };
  if (!metadata.optimizer.empty()) meta["optimizer"] = metadata.optimizer;
  if (metadata.micro_shards > 0) meta["micro_shards"] = std::to_string(metadata.micro_shards);
  // One buffer, one atomic replace: the file is either the old checkpoint or the new one.
  write_file_atomically(path, to_safetensors_bytes(tensors, meta));
}

namespace {

// The training state in a validated safetensors file; errors start with `path`.
TrainState decode_checkpoint(SafetensorsFile file, std::string_view path,
                             std::map<std::string, std::string>* metadata) {
  auto format = file.metadata.find("format");
  if (format == file.metadata.end() || format->second != kFormat)
    fail("{}: not an Edifice training checkpoint (__metadata__ \"format\" is {}, expected \"{}\")",
         path, format == file.metadata.end() ? "missing" : "\"" + format->second + "\"", kFormat);
  auto version = file.metadata.find("format_version");
  if (version == file.metadata.end() || version->second != kFormatVersion)
    fail("{}: unsupported checkpoint format_version {} (this build reads \"{}\")", path,
         version == file.metadata.end() ? "(missing)" : "\"" + version->second + "\"",
         kFormatVersion);

  TrainState s;
  const auto& t = file.tensors;
  auto get_i64 = [&](const char* name) {
    return *loop_entry(path, t, name, DType::i64, {}).data<std::int64_t>();
  };
  auto get_u64 = [&](const char* name) { return std::bit_cast<std::uint64_t>(get_i64(name)); };
  auto get_f64 = [&](const char* name) {
    return *loop_entry(path, t, name, DType::f64, {}).data<double>();
  };
  s.loop.epoch = get_i64("loop/epoch");
  s.loop.cursor = get_i64("loop/cursor");
  s.loop.data_seed = get_u64("loop/data_seed");
  s.loop.dropout_seed = get_u64("loop/dropout_seed");
  s.loop.dropout_counter = get_u64("loop/dropout_counter");
  s.loop.running_count = get_f64("loop/running_count");
  s.loop.early_stopping_best = get_f64("loop/early_stopping_best");
  s.loop.early_stopping_wait = get_i64("loop/early_stopping_wait");
  s.loop.elapsed_s = get_f64("loop/elapsed_s");
  {
    auto it = t.find("loop/running_sums");
    if (it == t.end())
      fail("{}: not a complete training checkpoint: tensor \"loop/running_sums\" is missing", path);
    if (it->second.dtype() != DType::f64 || it->second.rank() != 1)
      fail("{}: tensor \"loop/running_sums\" is {}{}, a checkpoint stores it as f64[n]", path,
           dtype_name(it->second.dtype()), shape_to_string(it->second.shape()));
    const double* p = it->second.data<double>();
    s.loop.running_sums.assign(p, p + it->second.numel());
  }
  if (s.loop.epoch < 0 || s.loop.cursor < 0)
    fail("{}: loop/epoch ({}) and loop/cursor ({}) must be >= 0", path, s.loop.epoch,
         s.loop.cursor);

  static const std::set<std::string> loop_names = {"loop/epoch",
                                                   "loop/cursor",
                                                   "loop/data_seed",
                                                   "loop/dropout_seed",
                                                   "loop/dropout_counter",
                                                   "loop/running_sums",
                                                   "loop/running_count",
                                                   "loop/early_stopping_best",
                                                   "loop/early_stopping_wait",
                                                   "loop/elapsed_s"};
  std::vector<std::string> unknown;
  for (const auto& [name, tensor] : t) {
    if (starts_with(name, kParams))
      s.params[name.substr(std::strlen(kParams))] = tensor;
    else if (starts_with(name, kOptimizer))
      s.optimizer[name.substr(std::strlen(kOptimizer))] = tensor;
    else if (!loop_names.count(name))
      unknown.push_back("\"" + name + "\"");
  }
  if (!unknown.empty())
    fail("{}: unknown tensors in a training checkpoint: {}", path, fmt::join(unknown, ", "));
  auto step = s.optimizer.find("step");
  if (step == s.optimizer.end() || step->second.dtype() != DType::i64 || step->second.rank() != 0)
    fail("{}: tensor \"optimizer/step\" must be present as an i64 scalar", path);
  if (*step->second.data<std::int64_t>() < 0)
    fail("{}: optimizer/step is negative ({})", path, *step->second.data<std::int64_t>());
  if (metadata) *metadata = std::move(file.metadata);
  return s;
}

}  // namespace

TrainState load_checkpoint(const std::string& path, std::map<std::string, std::string>* metadata) {
  return decode_checkpoint(load_safetensors(path), path, metadata);
}

TrainState parse_checkpoint(std::string_view bytes, std::string_view source_name,
                            std::map<std::string, std::string>* metadata) {
  return decode_checkpoint(parse_safetensors(bytes, source_name), source_name, metadata);
}

void save_params(const std::string& path, const Params& params,
                 const std::map<std::string, std::string>& metadata) {
  write_file_atomically(path, to_safetensors_bytes(params, metadata));
}

Params load_params(const std::string& path, std::map<std::string, std::string>* metadata) {
  SafetensorsFile file = load_safetensors(path);
  Params params;
  auto format = file.metadata.find("format");
  if (format != file.metadata.end() && format->second == kFormat) {
    for (const auto& [name, t] : file.tensors)
      if (starts_with(name, kParams)) params[name.substr(std::strlen(kParams))] = t;
  } else {
    params = std::move(file.tensors);
  }
  if (metadata) *metadata = std::move(file.metadata);
  return params;
}

}  // namespace edifice::nn
