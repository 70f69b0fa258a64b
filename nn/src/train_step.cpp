// The training step graph (forward + loss + backward + clip + update), its compiled
// executables per batch shape, and anomaly diagnosis through the reference interpreter.
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/nn/train_step.hpp>

#include <cmath>
#include <set>
#include <unordered_set>

namespace edifice::nn {

struct TrainStep::Built {
  Graph graph;
  std::size_t num_params = 0, num_state = 0, num_metrics = 0;
  bool has_norm = false;
  std::vector<std::string> param_names, state_names;
  std::vector<TensorType> state_types;
  std::map<std::vector<Shape>, std::shared_ptr<const jit::Executable>> executables;
  // Loss and metrics: their dependencies are the forward pass (for anomaly reports).
  std::vector<Value> forward_outputs;
};

namespace {

struct NonFinite {
  std::int64_t nan = 0, inf = 0, first = -1;
};

NonFinite count_non_finite(const Tensor& t) {
  NonFinite r;
  if (!is_floating(t.dtype())) return r;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    const double v = t.get_as_double(i);
    if (std::isnan(v))
      ++r.nan;
    else if (std::isinf(v))
      ++r.inf;
    else
      continue;
    if (r.first < 0) r.first = i;
  }
  return r;
}

std::string index_string(const Shape& shape, std::int64_t flat) {
  std::vector<std::int64_t> idx(shape.size());
  for (std::size_t k = shape.size(); k-- > 0;) {
    idx[k] = flat % shape[k];
    flat /= shape[k];
  }
  return fmt::format("[{}]", fmt::join(idx, ","));
}

// "f32[4,1] in [-1.5, 2]" (finite values only), "f32[4,1] holding NaN", ...
std::string describe_tensor(const Tensor& t) {
  std::string s = fmt::format("{}{}", dtype_name(t.dtype()), shape_to_string(t.shape()));
  if (!is_floating(t.dtype()) || t.numel() == 0) return s;
  double lo = INFINITY, hi = -INFINITY;
  NonFinite nf = count_non_finite(t);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    const double v = t.get_as_double(i);
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  if (lo <= hi) s += fmt::format(" in [{:g}, {:g}]", lo, hi);
  if (nf.nan) s += fmt::format(" with {} NaN", nf.nan);
  if (nf.inf) s += fmt::format(" with {} Inf", nf.inf);
  return s;
}

// Re-runs the step in the interpreter, every float value an output, and throws naming the
// first node that introduces a NaN or an Inf. Returns normally if none does.
void diagnose(const Graph& step, const std::vector<Value>& forward_outputs,
              const std::vector<Tensor>& args, const std::string& context) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    NonFinite nf = count_non_finite(args[i]);
    if (nf.first >= 0)
      throw Error(fmt::format(
          "anomaly detected in {}: the input \"{}\" already holds {} before the step ({} of {} "
          "elements non-finite, the first at {})",
          context, input_name(step.inputs()[i]), nf.nan ? "NaN" : "Inf", nf.nan + nf.inf,
          args[i].numel(), index_string(args[i].shape(), nf.first)));
  }
  // Forward nodes first (the loss' and metrics' dependencies), then the backward and update
  // nodes; both lists are topological, so the whole order is.
  std::vector<const Node*> order = topological_order(forward_outputs);
  std::unordered_set<const Node*> forward(order.begin(), order.end());
  for (const Node* n : topological_order(step.outputs()))
    if (!forward.count(n)) order.push_back(n);

  std::vector<Value> watched;
  for (const Node* n : order) {
    if (op_kind(n->op()) == OpKind::source) continue;
    for (int i = 0; i < n->num_outputs(); ++i)
      if (is_floating(n->outputs()[i].dtype)) watched.push_back(n->output(i));
  }
  std::vector<Tensor> values = interpret(Graph(step.inputs(), watched), args);

  // Per value: whether it holds NaN / Inf. Inputs and sources count as clean.
  std::map<std::pair<const Node*, int>, NonFinite> state;
  for (std::size_t i = 0; i < watched.size(); ++i)
    state[{&watched[i].node(), watched[i].index()}] = count_non_finite(values[i]);
  auto flags = [&](const Value& v) {
    auto it = state.find({&v.node(), v.index()});
    return it == state.end() ? NonFinite{} : it->second;
  };
  for (std::size_t i = 0; i < watched.size(); ++i) {
    const NonFinite out = flags(watched[i]);
    if (out.first < 0) continue;
    bool input_nan = false, input_inf = false;
    for (const Value& in : watched[i].node().inputs()) {
      NonFinite f = flags(in);
      input_nan |= f.nan > 0;
      input_inf |= f.inf > 0;
    }
    const bool introduces_nan = out.nan > 0 && !input_nan;
    const bool introduces_inf = out.inf > 0 && !input_nan && !input_inf;
    if (!introduces_nan && !introduces_inf) continue;
    const Node& n = watched[i].node();
    std::vector<std::string> ins;
    for (const Value& in : n.inputs()) {
      auto it = std::find(watched.begin(), watched.end(), in);
      if (it != watched.end())
        ins.push_back(describe_tensor(values[it - watched.begin()]));
      else if (in.node().op() == Op::parameter) {
        auto pit = std::find(step.inputs().begin(), step.inputs().end(), in);
        ins.push_back(pit != step.inputs().end()
                          ? describe_tensor(args[pit - step.inputs().begin()])
                          : in.type().to_string());
      } else if (in.node().op() == Op::constant) {
        ins.push_back(describe_tensor(in.node().attrs().get_tensor("value")));
      } else {
        ins.push_back(in.type().to_string());
      }
    }
    throw Error(fmt::format(
        "anomaly detected in {}: {} produced {} in the {} pass ({} of {} elements non-finite, the "
        "first at {}); its inputs: {}{}",
        context, op_name(n.op()), introduces_nan ? "NaN" : "Inf",
        forward.count(&n) ? "forward" : "backward (or update)", out.nan + out.inf,
        values[i].numel(), index_string(values[i].shape(), out.first), fmt::join(ins, ", "),
        where(n)));
  }
}

std::string join_names(const std::vector<std::string>& names) {
  return fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace

void check_optimizer_state(const OptimizerState& expected, const OptimizerState& state,
                           const std::string& what) {
  std::vector<std::string> problems;
  for (const auto& [name, t] : expected) {
    auto it = state.find(name);
    if (it == state.end())
      problems.push_back(fmt::format("  missing: {} {}{}", name, dtype_name(t.dtype()),
                                     shape_to_string(t.shape())));
    else if (it->second.dtype() != t.dtype() || it->second.shape() != t.shape())
      problems.push_back(fmt::format("  mismatched: {} is {}{}, the optimizer expects {}{}", name,
                                     dtype_name(it->second.dtype()),
                                     shape_to_string(it->second.shape()), dtype_name(t.dtype()),
                                     shape_to_string(t.shape())));
  }
  for (const auto& [name, t] : state)
    if (!expected.count(name))
      problems.push_back(fmt::format("  unexpected: {} {}{}", name, dtype_name(t.dtype()),
                                     shape_to_string(t.shape())));
  if (problems.empty()) return;
  std::string msg =
      fmt::format("{}: optimizer state does not match ({} problems):", what, problems.size());
  for (const auto& p : problems) msg += "\n" + p;
  throw Error(msg);
}

TrainStep::TrainStep(Model model, TrainStepOptions options)
    : model_(std::move(model)), options_(std::move(options)) {
  if (!options_.loss.fn) fail("TrainStep: no loss given");
  if (!options_.optimizer) fail("TrainStep: no optimizer given");
  for (const Metric& m : options_.metrics)
    if (!m.fn) fail("TrainStep: metric \"{}\" has no function", m.name);
  if (options_.clip_global_norm < 0 || !std::isfinite(options_.clip_global_norm))
    fail("TrainStep: clip_global_norm must be a finite number >= 0 (0 = off), got {}",
         options_.clip_global_norm);
}

std::vector<std::string> TrainStep::metric_names() const {
  std::vector<std::string> names;
  for (const Metric& m : options_.metrics) names.push_back(m.name);
  return names;
}

OptimizerState TrainStep::initial_state(const Params& params) const {
  return options_.optimizer->init(params);
}

TensorType TrainStep::target_type(const Tensor& targets) const {
  TensorType t{targets.dtype(), targets.shape()};
  const bool dynamic_batch = !model_.inputs().empty() && model_.inputs()[0].rank() > 0 &&
                             model_.inputs()[0].shape()[0] == kDynamic;
  if (dynamic_batch && !t.shape.empty()) t.shape[0] = kDynamic;
  return t;
}

namespace {

// The traced forward pass of a step: its parameter, input, key and target placeholders and the
// loss and metric values (pruned when the JIT prunes rows).
struct StepForward {
  std::vector<Value> params, inputs;
  Value rng_key;  // train mode with randomness only: the trace's key
  Value target;
  std::vector<Value> outputs;  // loss, metrics
  std::vector<std::string> param_names;

  // The data inputs every training graph ends with: the dropout key (a fresh placeholder when
  // the model draws no random numbers), the model inputs, the targets.
  void append_data_inputs(std::vector<Value>& graph_inputs) const {
    graph_inputs.push_back(rng_key.valid() ? rng_key : ops::parameter("rng_key", DType::i64, {}));
    graph_inputs.insert(graph_inputs.end(), inputs.begin(), inputs.end());
    graph_inputs.push_back(target);
  }
};

StepForward trace_forward(const Model& model, const TrainStepOptions& options,
                          const TensorType& ttype, bool train) {
  StepForward f;
  TracedModel tr = model.trace(train ? Mode::train : Mode::inference);
  const auto& gin = tr.graph.inputs();
  const std::size_t np = tr.param_names.size(), ni = tr.input_names.size();
  f.params.assign(gin.begin(), gin.begin() + static_cast<std::ptrdiff_t>(np));
  f.inputs.assign(gin.begin() + static_cast<std::ptrdiff_t>(np),
                  gin.begin() + static_cast<std::ptrdiff_t>(np + ni));
  f.param_names = tr.param_names;
  const Value& y_pred = tr.graph.outputs()[0];
  f.target = ops::parameter("targets", ttype.dtype, ttype.shape);

  Value loss = options.loss.fn(f.target, y_pred);
  if (!loss.valid() || loss.rank() != 0 || !is_floating(loss.dtype()))
    fail("TrainStep: the loss \"{}\" must return a rank-0 float value, got {}", options.loss.name,
         loss.valid() ? loss.type().to_string() : "an empty value");
  f.outputs = {loss};
  for (const Metric& m : options.metrics) {
    Value v = m.fn(f.target, y_pred);
    if (!v.valid() || v.rank() != 0 || !is_floating(v.dtype()))
      fail("TrainStep: the metric \"{}\" must return a rank-0 float value, got {}", m.name,
           v.valid() ? v.type().to_string() : "an empty value");
    f.outputs.push_back(v);
  }
  if (jit::prune_rows_enabled(options.jit)) {
    // Prune the forward pass before differentiating it: rows the loss never reads (a model's
    // non-last positions in its last layer) then get no forward and no backward work. The
    // pruned graph keeps the same parameter values, so `params` still index it.
    std::vector<Value> fi = f.params;
    fi.insert(fi.end(), f.inputs.begin(), f.inputs.end());
    if (tr.has_rng_key) fi.push_back(gin[np + ni]);
    fi.push_back(f.target);
    f.outputs = jit::prune_rows(Graph(fi, f.outputs)).outputs();
  }
  // Without dropout the key is unused; the graphs add a placeholder where they need one.
  if (train && tr.has_rng_key) f.rng_key = gin[np + ni];
  return f;
}

}  // namespace

// Appends clipping (or the norm alone in anomaly mode) and the optimizer update of `params`
// by `grads` to `outputs` ([norm], updated parameters, updated state) and records the state
// layout in `b`. Returns the learning-rate placeholder followed by the state placeholders.
std::vector<Value> TrainStep::append_update(Built& b, const std::vector<Value>& params,
                                            std::vector<Value> grads,
                                            std::vector<Value>& outputs) const {
  const Optimizer& opt = *options_.optimizer;
  if (options_.clip_global_norm > 0) {
    ClippedGradients c = clip_by_global_norm(grads, options_.clip_global_norm);
    grads = c.grads;
    outputs.push_back(c.norm);
    b.has_norm = true;
  } else if (options_.anomaly_mode) {
    outputs.push_back(global_norm(grads));
    b.has_norm = true;
  }
  const std::size_t np = b.param_names.size();
  // Optimizer state placeholders, named as the state entries.
  Params param_types;
  for (std::size_t i = 0; i < np; ++i)
    param_types[b.param_names[i]] = Tensor(params[i].dtype(), Shape(params[i].shape()));
  // Shapes only matter here; zero-sized buffers would do but real ones are small enough.
  OptimizerState init = opt.init(param_types);
  UpdateInputs in;
  in.learning_rate = ops::parameter("learning_rate", DType::f64, {});
  std::vector<Value> placeholders = {in.learning_rate};
  for (const auto& [name, t] : init) {
    Value v = ops::parameter(name, t.dtype(), t.shape());
    placeholders.push_back(v);
    b.state_names.push_back(name);
    b.state_types.push_back({t.dtype(), t.shape()});
    if (name == "step")
      in.step = v;
    else
      in.state[name] = v;
  }
  if (!in.step.valid()) fail("TrainStep: optimizer {} has no \"step\" state", opt.name());
  for (std::size_t i = 0; i < np; ++i) {
    in.params[b.param_names[i]] = params[i];
    in.grads[b.param_names[i]] = grads[i];
  }
  UpdateOutputs up;
  {
    // Update nodes are attributed to the optimizer in anomaly reports.
    LayerScope scope("optimizer " + opt.name(), "optimizer update");
    up = opt.update(in);
  }
  for (const std::string& name : b.param_names) {
    auto it = up.params.find(name);
    if (it == up.params.end())
      fail("TrainStep: optimizer {} gave no update for {}", opt.name(), name);
    outputs.push_back(it->second);
  }
  for (const std::string& name : b.state_names) {
    if (name == "step") {
      outputs.push_back(ops::add(in.step, ops::scalar(1, DType::i64)));
      continue;
    }
    auto it = up.state.find(name);
    if (it == up.state.end())
      fail("TrainStep: optimizer {} gave no update for state {}", opt.name(), name);
    outputs.push_back(it->second);
  }
  b.num_params = np;
  b.num_state = b.state_names.size();
  return placeholders;
}

TrainStep::Built& TrainStep::built(const Tensor& targets, bool train) {
  const TensorType ttype = target_type(targets);
  const std::string key = (train ? "train:" : "eval:") + ttype.to_string();
  if (auto it = cache_.find(key); it != cache_.end()) return *it->second;

  auto b = std::make_shared<Built>();
  StepForward f = trace_forward(model_, options_, ttype, train);
  std::vector<Value> outputs = f.outputs;
  b->num_metrics = options_.metrics.size();
  b->forward_outputs = outputs;
  b->param_names = f.param_names;
  std::vector<Value> gi = f.params;
  if (!train) {
    gi.insert(gi.end(), f.inputs.begin(), f.inputs.end());
    gi.push_back(f.target);
    b->graph = Graph(gi, outputs);
    return *cache_.emplace(key, b).first->second;
  }
  std::vector<Value> placeholders =
      append_update(*b, f.params, grad(outputs[0], f.params), outputs);
  // Inputs: parameters, state, learning rate, key, model inputs, targets.
  gi.insert(gi.end(), placeholders.begin() + 1, placeholders.end());
  gi.push_back(placeholders[0]);
  f.append_data_inputs(gi);
  b->graph = Graph(gi, outputs);
  return *cache_.emplace(key, b).first->second;
}

TrainStep::Built& TrainStep::built_gradients(const Tensor& targets) {
  const TensorType ttype = target_type(targets);
  const std::string key = "gradients:" + ttype.to_string();
  if (auto it = cache_.find(key); it != cache_.end()) return *it->second;
  auto b = std::make_shared<Built>();
  StepForward f = trace_forward(model_, options_, ttype, true);
  std::vector<Value> outputs = f.outputs;
  b->num_metrics = options_.metrics.size();
  b->forward_outputs = outputs;
  b->param_names = f.param_names;
  b->num_params = f.params.size();
  for (const Value& g : grad(outputs[0], f.params)) outputs.push_back(g);
  std::vector<Value> gi = f.params;
  f.append_data_inputs(gi);
  b->graph = Graph(gi, outputs);
  return *cache_.emplace(key, b).first->second;
}

TrainStep::Built& TrainStep::built_update() {
  const std::string key = "update";
  if (auto it = cache_.find(key); it != cache_.end()) return *it->second;
  auto b = std::make_shared<Built>();
  std::vector<Value> params, grads;
  std::map<std::string, TensorType> sorted;  // the step graphs' order: by name
  for (const ParamInfo& p : model_.parameters()) sorted.emplace(p.name, p.type);
  for (const auto& [name, type] : sorted) {
    b->param_names.push_back(name);
    params.push_back(ops::parameter(name, type.dtype, type.shape));
    grads.push_back(ops::parameter("grad/" + name, type.dtype, type.shape));
  }
  std::vector<Value> outputs;
  std::vector<Value> placeholders = append_update(*b, params, grads, outputs);
  // Inputs: parameters, state, learning rate, summed gradients.
  std::vector<Value> gi = params;
  gi.insert(gi.end(), placeholders.begin() + 1, placeholders.end());
  gi.push_back(placeholders[0]);
  gi.insert(gi.end(), grads.begin(), grads.end());
  b->graph = Graph(gi, outputs);
  return *cache_.emplace(key, b).first->second;
}

const Graph& TrainStep::graph(const Tensor& targets) {
  return built(targets, true).graph;
}

namespace {

std::shared_ptr<const jit::Executable> executable(
    std::map<std::vector<Shape>, std::shared_ptr<const jit::Executable>>& cache, const Graph& g,
    const std::vector<Tensor>& args, const jit::Options& options) {
  std::vector<Shape> shapes;
  for (const Tensor& t : args) shapes.push_back(t.shape());
  auto it = cache.find(shapes);
  if (it != cache.end()) return it->second;
  auto exe = jit::compile(g, shapes, options);
  cache.emplace(shapes, exe);
  return exe;
}

void check_inputs(const Model& model, const std::vector<Tensor>& inputs, const char* what) {
  if (inputs.size() != model.inputs().size()) {
    std::vector<std::string> names;
    for (const Layer& l : model.inputs()) names.push_back(model.layer_name(l));
    fail("{}: {} inputs given, the model has {} ({})", what, inputs.size(), model.inputs().size(),
         join_names(names));
  }
}

}  // namespace

StepResult TrainStep::run(Params& params, OptimizerState& state, double learning_rate,
                          std::int64_t rng_key, const std::vector<Tensor>& inputs,
                          const Tensor& targets, const std::string& context) {
  check_params(model_.parameters(), params, "TrainStep");
  check_inputs(model_, inputs, "TrainStep");
  Built& b = built(targets, true);
  std::vector<Tensor> args;
  for (const std::string& name : b.param_names) args.push_back(params.at(name));
  bool state_ok = state.size() == b.state_names.size();
  for (std::size_t i = 0; state_ok && i < b.state_names.size(); ++i) {
    auto it = state.find(b.state_names[i]);
    state_ok = it != state.end() && it->second.dtype() == b.state_types[i].dtype &&
               it->second.shape() == b.state_types[i].shape;
  }
  // The full check builds the reference state, so only on failure (for the message).
  if (!state_ok) check_optimizer_state(options_.optimizer->init(params), state, "TrainStep");
  for (const std::string& name : b.state_names) args.push_back(state.at(name));
  args.push_back(Tensor::scalar<double>(learning_rate));
  args.push_back(Tensor::scalar<std::int64_t>(rng_key));
  for (const Tensor& t : inputs) args.push_back(t);
  args.push_back(targets);

  std::vector<Tensor> out = executable(b.executables, b.graph, args, options_.jit)->run(args);
  StepResult r;
  std::size_t k = 0;
  r.loss = out[k++].get_as_double(0);
  for (std::size_t i = 0; i < b.num_metrics; ++i) r.metrics.push_back(out[k++].get_as_double(0));
  if (b.has_norm) r.grad_norm = out[k++].get_as_double(0);
  if (options_.anomaly_mode &&
      (!std::isfinite(r.loss) || (b.has_norm && !std::isfinite(r.grad_norm)))) {
    diagnose(b.graph, b.forward_outputs, args, context);
    throw Error(fmt::format(
        "anomaly detected in {}: the compiled step gave loss {} and gradient norm {}, but the "
        "reference interpreter found no op producing NaN or Inf; this points at a JIT bug",
        context, r.loss, r.grad_norm));
  }
  for (const std::string& name : b.param_names) params[name] = out[k++];
  for (const std::string& name : b.state_names) state[name] = out[k++];
  return r;
}

StepResult TrainStep::evaluate(const Params& params, const std::vector<Tensor>& inputs,
                               const Tensor& targets) {
  check_params(model_.parameters(), params, "evaluate");
  check_inputs(model_, inputs, "evaluate");
  Built& b = built(targets, false);
  std::vector<Tensor> args;
  for (const std::string& name : b.param_names) args.push_back(params.at(name));
  for (const Tensor& t : inputs) args.push_back(t);
  args.push_back(targets);
  std::vector<Tensor> out = executable(b.executables, b.graph, args, options_.jit)->run(args);
  StepResult r;
  r.loss = out[0].get_as_double(0);
  for (std::size_t i = 0; i < b.num_metrics; ++i) r.metrics.push_back(out[1 + i].get_as_double(0));
  return r;
}

GradientResult TrainStep::gradients(const Params& params, std::int64_t rng_key,
                                    const std::vector<Tensor>& inputs, const Tensor& targets) {
  check_params(model_.parameters(), params, "TrainStep::gradients");
  check_inputs(model_, inputs, "TrainStep::gradients");
  Built& b = built_gradients(targets);
  std::vector<Tensor> args;
  for (const std::string& name : b.param_names) args.push_back(params.at(name));
  args.push_back(Tensor::scalar<std::int64_t>(rng_key));
  for (const Tensor& t : inputs) args.push_back(t);
  args.push_back(targets);
  std::vector<Tensor> out = executable(b.executables, b.graph, args, options_.jit)->run(args);
  GradientResult r;
  std::size_t k = 0;
  r.values.loss = out[k++].get_as_double(0);
  for (std::size_t i = 0; i < b.num_metrics; ++i)
    r.values.metrics.push_back(out[k++].get_as_double(0));
  r.grads.assign(out.begin() + static_cast<std::ptrdiff_t>(k), out.end());
  return r;
}

double TrainStep::apply_gradients(Params& params, OptimizerState& state, double learning_rate,
                                  const std::vector<Tensor>& grads) {
  check_params(model_.parameters(), params, "TrainStep::apply_gradients");
  Built& b = built_update();
  if (grads.size() != b.param_names.size())
    fail("TrainStep::apply_gradients: {} gradients given, the model has {} parameters",
         grads.size(), b.param_names.size());
  check_optimizer_state(options_.optimizer->init(params), state, "TrainStep::apply_gradients");
  std::vector<Tensor> args;
  for (const std::string& name : b.param_names) args.push_back(params.at(name));
  for (const std::string& name : b.state_names) args.push_back(state.at(name));
  args.push_back(Tensor::scalar<double>(learning_rate));
  for (const Tensor& g : grads) args.push_back(g);
  std::vector<Tensor> out = executable(b.executables, b.graph, args, options_.jit)->run(args);
  std::size_t k = 0;
  const double norm =
      b.has_norm ? out[k++].get_as_double(0) : std::numeric_limits<double>::quiet_NaN();
  for (const std::string& name : b.param_names) params[name] = out[k++];
  for (const std::string& name : b.state_names) state[name] = out[k++];
  return norm;
}

const Graph& TrainStep::gradient_graph(const Tensor& targets) {
  return built_gradients(targets).graph;
}

const Graph& TrainStep::update_graph() {
  return built_update().graph;
}

const std::vector<std::string>& TrainStep::param_names() {
  return built_update().param_names;
}

}  // namespace edifice::nn
