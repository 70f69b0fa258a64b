#include <edifice/nn/init.hpp>
#include <edifice/nn/model.hpp>

#include <algorithm>
#include <atomic>
#include <functional>
#include <set>

namespace edifice::nn {

Model::Model(Layer output) : Model(std::vector<Layer>{std::move(output)}) {}

Model::Model(std::vector<Layer> outputs) : outputs_(std::move(outputs)) {
  // Parents first, in input order: the traversal that fixes "{op}_{k}" names.
  std::set<const LayerNode*> visited;
  std::vector<Layer> input_handles;
  std::function<void(const Layer&)> visit = [&](const Layer& l) {
    const LayerNode* n = &l.node();
    if (!visited.insert(n).second) return;
    for (const Layer& in : n->inputs) visit(in);
    order_.push_back(n);
    if (n->is_input) input_handles.push_back(l);
  };
  for (const Layer& out : outputs_) {
    if (!out.valid()) fail("Model: an output is an empty Layer");
    visit(out);
  }
  std::map<std::string, int> counters;
  std::map<std::string, const LayerNode*> by_name;
  for (const LayerNode* n : order_) {
    std::string name = n->explicit_name;
    if (name.empty()) name = fmt::format("{}_{}", n->op, counters[n->op]++);
    auto [it, fresh] = by_name.emplace(name, n);
    if (!fresh)
      fail("Model: duplicate layer name \"{}\": a {} defined at {} and a {} defined at {}", name,
           it->second->op, format_location(it->second->loc), n->op, format_location(n->loc));
    names_[n] = name;
  }
  // Inputs in definition order, whatever order the traversal met them in.
  std::sort(input_handles.begin(), input_handles.end(),
            [](const Layer& a, const Layer& b) { return a.node().id < b.node().id; });
  inputs_ = std::move(input_handles);
  for (const LayerNode* n : order_)
    for (const ParamSpec& p : n->params)
      params_.push_back({names_[n] + "." + p.name, names_[n], {p.dtype, p.shape}, p.init});
  std::sort(params_.begin(), params_.end(),
            [](const ParamInfo& a, const ParamInfo& b) { return a.name < b.name; });
}

std::int64_t Model::parameter_count() const {
  std::int64_t n = 0;
  for (const ParamInfo& p : params_) n += shape_numel(p.type.shape);
  return n;
}

const std::string& Model::layer_name(const Layer& layer) const {
  auto it = names_.find(&layer.node());
  if (it == names_.end()) fail("Model: the layer is not part of this model");
  return it->second;
}

TracedModel Model::trace(Mode mode) const {
  TracedModel t;
  std::vector<Value> graph_inputs;
  std::map<std::string, Value> param_values;
  for (const ParamInfo& p : params_) {
    Value v = ops::parameter(p.name, p.type.dtype, p.type.shape);
    param_values[p.name] = v;
    graph_inputs.push_back(v);
    t.param_names.push_back(p.name);
  }
  std::map<const LayerNode*, std::vector<Value>> values;
  for (const Layer& in : inputs_) {
    const std::string& name = names_.at(&in.node());
    Value v = ops::parameter(name, in.dtype(), in.shape(), in.node().loc);
    values[&in.node()] = {v};
    graph_inputs.push_back(v);
    t.input_names.push_back(name);
  }
  Value rng_key;
  if (mode == Mode::train) {
    rng_key = ops::parameter("rng_key", DType::i64, {});
    graph_inputs.push_back(rng_key);
    t.has_rng_key = true;
  }
  for (const LayerNode* n : order_) {
    if (n->is_input) continue;
    const std::string& name = names_.at(n);
    LayerScope scope(name, n->op, n->loc);
    std::vector<Value> in;
    for (const Layer& l : n->inputs) in.push_back(values.at(&l.node())[l.index()]);
    std::map<std::string, Value> p;
    for (const ParamSpec& s : n->params) p[s.name] = param_values.at(name + "." + s.name);
    ForwardContext ctx{mode, rng_key, static_cast<std::int64_t>(stream_for(name))};
    values[n] = n->forward(in, p, ctx);
  }
  std::vector<Value> outs;
  for (const Layer& o : outputs_) {
    outs.push_back(values.at(&o.node())[o.index()]);
    t.output_layers.push_back(names_.at(&o.node()));
  }
  t.graph = Graph(graph_inputs, outs);
  return t;
}

Params Model::init(std::uint64_t seed) const {
  Params params;
  for (const ParamInfo& p : params_)
    params[p.name] = initialize(p.init, p.type.shape, p.type.dtype, seed, stream_for(p.name));
  return params;
}

void check_params(const std::vector<ParamInfo>& expected, const Params& given,
                  const std::string& what) {
  std::vector<std::string> problems;
  std::set<std::string> known;
  for (const ParamInfo& p : expected) {
    known.insert(p.name);
    auto it = given.find(p.name);
    if (it == given.end())
      problems.push_back(fmt::format("  missing: {} {}", p.name, p.type.to_string()));
    else if (it->second.dtype() != p.type.dtype || it->second.shape() != p.type.shape)
      problems.push_back(fmt::format("  mismatched: {} is {}{}, the model expects {}", p.name,
                                     dtype_name(it->second.dtype()),
                                     shape_to_string(it->second.shape()), p.type.to_string()));
  }
  for (const auto& [name, t] : given)
    if (!known.count(name))
      problems.push_back(fmt::format("  unexpected: {} {}{}", name, dtype_name(t.dtype()),
                                     shape_to_string(t.shape())));
  if (problems.empty()) return;
  std::string msg =
      fmt::format("{}: parameters do not match the model ({} problems):", what, problems.size());
  for (const auto& p : problems) msg += "\n" + p;
  throw Error(msg);
}

std::vector<Tensor> Model::predict_all(const Params& params, const std::vector<Tensor>& inputs,
                                       Mode mode, std::int64_t rng_key,
                                       const jit::Options& options) const {
  check_params(params_, params, "predict");
  if (inputs.size() != inputs_.size())
    fail("predict: {} inputs given, the model has {} ({})", inputs.size(), inputs_.size(), [&] {
      std::string s;
      for (const Layer& l : inputs_) s += (s.empty() ? "" : ", ") + names_.at(&l.node());
      return s;
    }());
  // The traced graph is cached per mode; the JIT caches per shape.
  TracedModel traced = trace(mode);
  std::vector<Tensor> args;
  std::vector<Shape> shapes;
  for (const auto& name : traced.param_names) args.push_back(params.at(name));
  for (const Tensor& t : inputs) args.push_back(t);
  if (traced.has_rng_key) args.push_back(Tensor::scalar<std::int64_t>(rng_key));
  for (const Tensor& t : args) shapes.push_back(t.shape());
  return jit::compile(traced.graph, shapes, options)->run(args);
}

std::pair<Model::InitFn, Model::PredictFn> Model::build(BuildOptions options) const {
  auto self = std::make_shared<const Model>(*this);
  auto traced = std::make_shared<const TracedModel>(trace(options.mode));
  InitFn init = [self](std::uint64_t seed) { return self->init(seed); };
  auto key = std::make_shared<std::atomic<std::int64_t>>(0);
  PredictFn predict = [self, traced, key, options](const Params& params,
                                                   const std::vector<Tensor>& inputs) {
    check_params(self->parameters(), params, "predict");
    if (inputs.size() != traced->input_names.size())
      fail("predict: {} inputs given, the model has {}", inputs.size(), traced->input_names.size());
    std::vector<Tensor> args;
    std::vector<Shape> shapes;
    for (const auto& name : traced->param_names) args.push_back(params.at(name));
    for (const Tensor& t : inputs) args.push_back(t);
    if (traced->has_rng_key) args.push_back(Tensor::scalar<std::int64_t>((*key)++));
    for (const Tensor& t : args) shapes.push_back(t.shape());
    return jit::compile(traced->graph, shapes, options.jit)->run(args)[0];
  };
  return {init, predict};
}

std::string Model::summary() const {
  struct Row {
    std::string layer, op, shape, params, count;
  };
  std::vector<Row> rows;
  std::int64_t total = 0, bytes = 0;
  for (const LayerNode* n : order_) {
    Row r;
    r.layer = names_.at(n);
    r.op = n->op + (n->description.empty() ? "" : " (" + n->description + ")");
    for (std::size_t i = 0; i < n->types.size(); ++i)
      r.shape += (i ? " " : "") + n->types[i].to_string();
    std::int64_t count = 0;
    for (const ParamSpec& p : n->params) {
      r.params += (r.params.empty() ? "" : " ") + p.name + shape_to_string(p.shape);
      count += shape_numel(p.shape);
      bytes += shape_numel(p.shape) * static_cast<std::int64_t>(dtype_size(p.dtype));
    }
    total += count;
    r.count = count ? fmt::format("{:L}", count) : "";
    rows.push_back(r);
  }
  Row header{"Layer", "Op", "Output shape", "Parameters", "Count"};
  std::size_t w[5] = {};
  auto widen = [&](const Row& r) {
    w[0] = std::max(w[0], r.layer.size());
    w[1] = std::max(w[1], r.op.size());
    w[2] = std::max(w[2], r.shape.size());
    w[3] = std::max(w[3], r.params.size());
    w[4] = std::max(w[4], r.count.size());
  };
  widen(header);
  for (const Row& r : rows) widen(r);
  auto line = [&](const Row& r) {
    return fmt::format("| {:<{}} | {:<{}} | {:<{}} | {:<{}} | {:>{}} |\n", r.layer, w[0], r.op,
                       w[1], r.shape, w[2], r.params, w[3], r.count, w[4]);
  };
  std::string rule = "+";
  for (auto x : w) rule += std::string(x + 2, '-') + "+";
  rule += "\n";
  std::string out = rule + line(header) + rule;
  for (const Row& r : rows) out += line(r);
  out += rule;
  out += fmt::format("Total parameters: {} ({:.1f} KB)\n", total, bytes / 1024.0);
  return out;
}

}  // namespace edifice::nn
