#include <edifice/nn/init.hpp>
#include <edifice/nn/layer.hpp>

#include <atomic>
#include <set>

namespace edifice::nn {
namespace detail {

std::uint64_t next_layer_id() {
  static std::atomic<std::uint64_t> counter{0};
  return counter++;
}

}  // namespace detail

std::vector<Layer> custom_multi(std::string op, std::vector<Layer> inputs,
                                std::vector<ParamSpec> params, MultiForwardFn forward,
                                CustomOptions options, Loc loc) {
  auto node = std::make_shared<LayerNode>();
  node->op = std::move(op);
  node->explicit_name = std::move(options.name);
  node->description = std::move(options.description);
  node->loc = loc;
  node->id = detail::next_layer_id();
  const std::string shown = node->explicit_name.empty() ? node->op : node->explicit_name;
  LayerScope scope(shown, node->op, loc);
  std::set<std::string> seen;
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (!inputs[i].valid())
      fail_at(loc, fmt::format("{}: input {} is an empty Layer", node->op, i));
  for (const ParamSpec& p : params) {
    if (!seen.insert(p.name).second)
      fail_at(loc, fmt::format("{}: parameter \"{}\" is declared twice", node->op, p.name));
    for (auto d : p.shape)
      if (d < 0)
        fail_at(loc, fmt::format("{}: parameter \"{}\" has shape {}; parameters need concrete "
                                 "extents",
                                 node->op, p.name, shape_to_string(p.shape)));
  }
  // Trace once with placeholders to learn the output types and report wiring errors now.
  std::vector<Value> in;
  for (const Layer& l : inputs) in.push_back(ops::parameter("input", l.dtype(), l.shape(), loc));
  std::map<std::string, Value> p;
  for (const ParamSpec& s : params) p[s.name] = ops::parameter(s.name, s.dtype, s.shape, loc);
  ForwardContext ctx{Mode::inference, Value(), static_cast<std::int64_t>(stream_for(shown))};
  std::vector<Value> outs = forward(in, p, ctx);
  for (const Value& v : outs) node->types.push_back(v.type());
  node->inputs = std::move(inputs);
  node->params = std::move(params);
  node->forward = std::move(forward);
  std::shared_ptr<const LayerNode> frozen = node;
  std::vector<Layer> handles;
  for (int i = 0; i < static_cast<int>(frozen->types.size()); ++i) handles.emplace_back(frozen, i);
  return handles;
}

Layer custom(std::string op, std::vector<Layer> inputs, std::vector<ParamSpec> params,
             ForwardFn forward, CustomOptions options, Loc loc) {
  MultiForwardFn multi = [f = std::move(forward)](const std::vector<Value>& in,
                                                  const std::map<std::string, Value>& p,
                                                  const ForwardContext& ctx) {
    return std::vector<Value>{f(in, p, ctx)};
  };
  return custom_multi(std::move(op), std::move(inputs), std::move(params), std::move(multi),
                      std::move(options), loc)[0];
}

}  // namespace edifice::nn
