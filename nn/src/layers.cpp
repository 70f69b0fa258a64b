// Built-in layers, each a forward function over core ops recorded with nn::custom.
#include <edifice/nn/layers.hpp>

namespace edifice::nn {
namespace {

[[noreturn]] void layer_error(const std::string& op, const std::string& name, const Loc& loc,
                              const std::string& what) {
  LayerScope scope(name.empty() ? op : name, op, loc);
  fail_at(loc, fmt::format("{}: {}", op, what));
}

Layer unary_layer(const char* op, Value (*f)(const Value&, ops::Loc), const Layer& x,
                  const std::string& name, const Loc& loc) {
  return custom(
      op, {x}, {},
      [f](const std::vector<Value>& in, const auto&, const auto&) {
        return f(in[0], ops::Loc::current());
      },
      {.name = name}, loc);
}

}  // namespace

Layer input(std::string name, Shape shape, DType dtype, Loc loc) {
  if (name.empty()) fail_at(loc, "input: the input needs a name");
  for (auto d : shape)
    if (d < 0 && d != dynamic)
      fail_at(loc, fmt::format("input: \"{}\" has shape {} with a negative extent", name,
                               shape_to_string(shape)));
  auto node = std::make_shared<LayerNode>();
  node->op = "input";
  node->explicit_name = std::move(name);
  node->types = {{dtype, std::move(shape)}};
  node->loc = loc;
  node->is_input = true;
  node->id = detail::next_layer_id();
  return Layer(node);
}

Layer dense(const Layer& x, std::int64_t units, DenseOptions o, Loc loc) {
  if (units < 1)
    layer_error("dense", o.name, loc, fmt::format("units must be >= 1, got {}", units));
  if (x.rank() < 1 || x.shape().back() == dynamic)
    layer_error("dense", o.name, loc,
                fmt::format("the input {} needs a concrete last axis (the features)",
                            x.type().to_string()));
  const std::int64_t in = x.shape().back();
  std::vector<ParamSpec> params = {{"kernel", {in, units}, x.dtype(), o.kernel_initializer}};
  if (o.use_bias) params.push_back({"bias", {units}, x.dtype(), o.bias_initializer});
  bool bias = o.use_bias;
  return custom(
      "dense", {x}, params,
      [bias](const std::vector<Value>& v, const std::map<std::string, Value>& p, const auto&) {
        const Value& a = v[0];
        Value y = ops::dot_general(a, p.at("kernel"), {{a.rank() - 1}, {0}, {}, {}});
        return bias ? ops::add(y, p.at("bias")) : y;
      },
      {.name = o.name, .description = fmt::format("units={}{}", units, bias ? "" : ", no bias")},
      loc);
}

Layer layer_norm(const Layer& x, LayerNormOptions o, Loc loc) {
  if (x.rank() < 1 || x.shape().back() == dynamic)
    layer_error("layer_norm", o.name, loc,
                fmt::format("the input {} needs a concrete last axis", x.type().to_string()));
  if (!(o.epsilon > 0))
    layer_error("layer_norm", o.name, loc, fmt::format("epsilon must be > 0, got {}", o.epsilon));
  const std::int64_t c = x.shape().back();
  double eps = o.epsilon;
  return custom(
      "layer_norm", {x},
      {{"gamma", {c}, x.dtype(), o.gamma_initializer},
       {"beta", {c}, x.dtype(), o.beta_initializer}},
      [eps](const std::vector<Value>& v, const std::map<std::string, Value>& p, const auto&) {
        return ops::layer_norm(v[0], p.at("gamma"), p.at("beta"), eps);
      },
      {.name = o.name, .description = fmt::format("epsilon={:g}", eps)}, loc);
}

Layer dropout(const Layer& x, DropoutOptions o, Loc loc) {
  if (!(o.rate >= 0 && o.rate < 1))
    layer_error("dropout", o.name, loc, fmt::format("rate must be in [0, 1), got {}", o.rate));
  if (!is_floating(x.dtype()))
    layer_error("dropout", o.name, loc,
                fmt::format("the input must be floating-point, got {}", x.type().to_string()));
  double rate = o.rate;
  return custom(
      "dropout", {x}, {},
      [rate](const std::vector<Value>& v, const auto&, const ForwardContext& ctx) {
        const Value& a = v[0];
        if (ctx.mode == Mode::inference || rate == 0) return a;
        Value u = ops::random_uniform(ctx.rng_key, a.shape(), a.dtype(), ctx.stream);
        Value keep = ops::lt(u, ops::scalar(1.0 - rate, a.dtype()));
        return ops::select(keep, ops::mul(a, ops::scalar(1.0 / (1.0 - rate), a.dtype())),
                           ops::zeros_like(a));
      },
      {.name = o.name, .description = fmt::format("rate={:g}", rate)}, loc);
}

Layer relu(const Layer& x, Named o, Loc loc) {
  return unary_layer("relu", ops::relu, x, o.name, loc);
}
Layer gelu(const Layer& x, Named o, Loc loc) {
  return unary_layer("gelu", ops::gelu, x, o.name, loc);
}
Layer tanh(const Layer& x, Named o, Loc loc) {
  return unary_layer("tanh", ops::tanh, x, o.name, loc);
}
Layer sigmoid(const Layer& x, Named o, Loc loc) {
  return unary_layer("sigmoid", ops::sigmoid, x, o.name, loc);
}

Layer softmax(const Layer& x, SoftmaxOptions o, Loc loc) {
  std::int64_t axis = o.axis;
  return custom(
      "softmax", {x}, {},
      [axis](const std::vector<Value>& v, const auto&, const auto&) {
        return ops::softmax(v[0], axis);
      },
      {.name = o.name, .description = fmt::format("axis={}", axis)}, loc);
}

Layer add(const Layer& a, const Layer& b, Named o, Loc loc) {
  return custom(
      "add", {a, b}, {},
      [](const std::vector<Value>& v, const auto&, const auto&) { return ops::add(v[0], v[1]); },
      {.name = o.name}, loc);
}

Layer multiply(const Layer& a, const Layer& b, Named o, Loc loc) {
  return custom(
      "multiply", {a, b}, {},
      [](const std::vector<Value>& v, const auto&, const auto&) { return ops::mul(v[0], v[1]); },
      {.name = o.name}, loc);
}

Layer concatenate(const std::vector<Layer>& xs, ConcatenateOptions o, Loc loc) {
  if (xs.empty()) layer_error("concatenate", o.name, loc, "needs at least one input");
  std::int64_t axis = o.axis;
  return custom(
      "concatenate", xs, {},
      [axis](const std::vector<Value>& v, const auto&, const auto&) {
        return ops::concat(v, axis);
      },
      {.name = o.name, .description = fmt::format("axis={}", axis)}, loc);
}

Layer reshape(const Layer& x, Shape shape, Named o, Loc loc) {
  std::string desc = "shape=" + shape_to_string(shape);
  return custom(
      "reshape", {x}, {},
      [shape](const std::vector<Value>& v, const auto&, const auto&) {
        return ops::reshape(v[0], shape);
      },
      {.name = o.name, .description = desc}, loc);
}

Layer transpose(const Layer& x, std::vector<std::int64_t> perm, Named o, Loc loc) {
  return custom(
      "transpose", {x}, {},
      [perm](const std::vector<Value>& v, const auto&, const auto&) {
        return ops::transpose(v[0], perm);
      },
      {.name = o.name}, loc);
}

Layer embedding(const Layer& ids, std::int64_t vocab, std::int64_t dim, EmbeddingOptions o,
                Loc loc) {
  if (ids.dtype() != DType::i32 && ids.dtype() != DType::i64)
    layer_error("embedding", o.name, loc,
                fmt::format("ids must be i32 or i64, got {}", ids.type().to_string()));
  if (vocab < 1 || dim < 1)
    layer_error("embedding", o.name, loc,
                fmt::format("vocab and dim must be >= 1, got {} and {}", vocab, dim));
  return custom(
      "embedding", {ids}, {{"kernel", {vocab, dim}, DType::f32, o.initializer}},
      [](const std::vector<Value>& v, const std::map<std::string, Value>& p, const auto&) {
        return ops::take(p.at("kernel"), v[0], 0);
      },
      {.name = o.name, .description = fmt::format("vocab={}, dim={}", vocab, dim)}, loc);
}

LstmOutputs lstm(const Layer& x, std::int64_t units, LstmOptions o, Loc loc) {
  if (units < 1) layer_error("lstm", o.name, loc, fmt::format("units must be >= 1, got {}", units));
  if (x.rank() != 3 || x.shape()[2] == dynamic || x.shape()[1] == dynamic)
    layer_error("lstm", o.name, loc,
                fmt::format("the input must be [batch, seq, features] with concrete seq and "
                            "features, got {}",
                            x.type().to_string()));
  const std::int64_t f = x.shape()[2];
  Initializer bias_init = o.bias_initializer;
  if (o.forget_bias != 0) {
    if (bias_init.kind != Initializer::Kind::zeros)
      layer_error("lstm", o.name, loc, "forget_bias needs the default (zeros) bias initializer");
    bias_init = Initializer::lstm_bias(o.forget_bias);
  }
  auto outs = custom_multi(
      "lstm", {x},
      {{"input_kernel", {f, 4 * units}, x.dtype(), o.kernel_initializer},
       {"hidden_kernel", {units, 4 * units}, x.dtype(), o.recurrent_initializer},
       {"bias", {4 * units}, x.dtype(), bias_init}},
      [units](const std::vector<Value>& v, const std::map<std::string, Value>& p, const auto&) {
        const Value& in = v[0];
        const std::int64_t batch = in.shape()[0], steps = in.shape()[1];
        Value zeros = ops::full({batch, units}, 0.0, in.dtype());
        auto seq =
            ops::lstm(in, p.at("input_kernel"), p.at("hidden_kernel"), p.at("bias"), zeros, zeros);
        auto last = [&](const Value& s) {
          return ops::reshape(ops::slice_axis(s, 1, steps - 1, steps), {batch, units});
        };
        return std::vector<Value>{seq[0], last(seq[0]), last(seq[1])};
      },
      {.name = o.name, .description = fmt::format("units={}", units)}, loc);
  return {outs[0], outs[1], outs[2]};
}

Layer take_index(const Layer& x, std::int64_t axis, std::int64_t index, TakeIndexOptions o,
                 Loc loc) {
  int a = normalize_axis(axis, x.rank());
  if (a < 0)
    layer_error("take_index", o.name, loc,
                fmt::format("axis {} is out of range for {}", axis, x.type().to_string()));
  std::int64_t extent = x.shape()[a];
  if (extent == dynamic || index < -extent || index >= extent)
    layer_error(
        "take_index", o.name, loc,
        fmt::format("index {} is out of range for axis {} of {}", index, a, x.type().to_string()));
  std::int64_t i = index < 0 ? index + extent : index;
  return custom(
      "take_index", {x}, {},
      [a, i](const std::vector<Value>& v, const auto&, const auto&) {
        Shape out = v[0].shape();
        out.erase(out.begin() + a);
        return ops::reshape(ops::slice_axis(v[0], a, i, i + 1), out);
      },
      {.name = o.name, .description = fmt::format("axis={}, index={}", a, i)}, loc);
}

}  // namespace edifice::nn
