// Optimizer updates built as graph nodes, following torch.optim's single-tensor code paths
// operation by operation (including the order of scalar products), so f64 runs match PyTorch's
// arithmetic and f32 runs round the same way PyTorch's Python-scalar arithmetic does.
#include <edifice/nn/optimizers.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <numbers>
#include <numeric>

namespace edifice::nn {
namespace {

using ops::Axes;

Value f64(double v) {
  return ops::scalar(v, DType::f64);
}
// A host or f64 scalar rounded to `like`'s dtype, as PyTorch rounds a Python scalar.
Value as(const Value& scalar, const Value& like) {
  return ops::cast(scalar, like.dtype());
}
Value as(double v, const Value& like) {
  return ops::scalar(v, like.dtype());
}

Axes all_axes(std::int64_t rank) {
  Axes axes(static_cast<std::size_t>(rank));
  std::iota(axes.begin(), axes.end(), 0);
  return axes;
}

std::string fmt_double(double v) {
  return fmt::format("{:g}", v);
}

void check_rate(const char* opt, const char* what, double v) {
  if (!(v >= 0) || !std::isfinite(v))
    fail("{}: {} must be a finite number >= 0, got {}", opt, what, v);
}

void check_beta(const char* opt, const char* what, double v) {
  if (!(v >= 0 && v < 1)) fail("{}: {} must be in [0, 1), got {}", opt, what, v);
}

class Sgd final : public Optimizer {
 public:
  explicit Sgd(SgdOptions o) : Optimizer(o.learning_rate), o_(std::move(o)) {
    check_rate("sgd", "momentum", o_.momentum);
    check_rate("sgd", "weight_decay", o_.weight_decay);
    if (o_.nesterov && o_.momentum <= 0) fail("sgd: nesterov needs momentum > 0");
  }
  std::string name() const override { return "sgd"; }
  std::string config_json() const override {
    return nlohmann::json{{"optimizer", "sgd"},
                          {"learning_rate", learning_rate().description()},
                          {"momentum", o_.momentum},
                          {"nesterov", o_.nesterov},
                          {"weight_decay", o_.weight_decay}}
        .dump();
  }
  std::vector<std::string> slots() const override {
    if (o_.momentum > 0) return {"momentum"};
    return {};
  }
  UpdateOutputs update(const UpdateInputs& in) const override {
    UpdateOutputs out;
    for (const auto& [name, p] : in.params) {
      Value g = in.grads.at(name);
      if (o_.weight_decay != 0) g = ops::add(g, ops::mul(as(o_.weight_decay, p), p));
      if (o_.momentum > 0) {
        const std::string key = state_name("momentum", name);
        Value b = ops::add(ops::mul(as(o_.momentum, p), in.state.at(key)), g);
        out.state[key] = b;
        g = o_.nesterov ? ops::add(g, ops::mul(as(o_.momentum, p), b)) : b;
      }
      out.params[name] = ops::sub(p, ops::mul(as(in.learning_rate, p), g));
    }
    return out;
  }

 private:
  SgdOptions o_;
};

// Adam and AdamW share the moment updates; they differ in where weight decay goes.
class AdamBase : public Optimizer {
 public:
  AdamBase(const char* name, Schedule lr, double beta1, double beta2, double eps, double wd,
           bool decoupled)
      : Optimizer(std::move(lr)),
        name_(name),
        beta1_(beta1),
        beta2_(beta2),
        eps_(eps),
        wd_(wd),
        decoupled_(decoupled) {
    check_beta(name, "beta1", beta1);
    check_beta(name, "beta2", beta2);
    if (!(eps > 0)) fail("{}: eps must be > 0, got {}", name, eps);
    check_rate(name, "weight_decay", wd);
  }
  std::string name() const override { return name_; }
  std::string config_json() const override {
    return nlohmann::json{{"optimizer", name_}, {"learning_rate", learning_rate().description()},
                          {"beta1", beta1_},    {"beta2", beta2_},
                          {"eps", eps_},        {"weight_decay", wd_}}
        .dump();
  }
  std::vector<std::string> slots() const override { return {"m", "v"}; }
  UpdateOutputs update(const UpdateInputs& in) const override {
    // Scalars in f64, as PyTorch computes them in Python floats.
    Value t = ops::add(ops::cast(in.step, DType::f64), f64(1));
    Value bc1 = ops::sub(f64(1), ops::pow(f64(beta1_), t));
    Value bc2 = ops::sub(f64(1), ops::pow(f64(beta2_), t));
    Value step_size = ops::div(in.learning_rate, bc1);
    Value bc2_sqrt = ops::sqrt(bc2);
    Value decay_factor;
    if (decoupled_ && wd_ != 0)
      decay_factor = ops::sub(f64(1), ops::mul(in.learning_rate, f64(wd_)));
    UpdateOutputs out;
    for (const auto& [name, p0] : in.params) {
      Value p = p0;
      Value g = in.grads.at(name);
      if (decoupled_ && wd_ != 0) p = ops::mul(p, as(decay_factor, p));
      if (!decoupled_ && wd_ != 0) g = ops::add(g, ops::mul(as(wd_, p), p));
      const std::string mk = state_name("m", name), vk = state_name("v", name);
      const Value& m0 = in.state.at(mk);
      const Value& v0 = in.state.at(vk);
      Value m = ops::add(m0, ops::mul(as(1 - beta1_, g), ops::sub(g, m0)));
      // v.mul_(beta2).addcmul_(g, g, value=1-beta2): addcmul evaluates value*g*g left to right.
      Value v = ops::add(ops::mul(as(beta2_, v0), v0), ops::mul(ops::mul(as(1 - beta2_, g), g), g));
      Value denom = ops::add(ops::div(ops::sqrt(v), as(bc2_sqrt, p)), as(eps_, p));
      out.params[name] = ops::sub(p, ops::div(ops::mul(as(step_size, p), m), denom));
      out.state[mk] = m;
      out.state[vk] = v;
    }
    return out;
  }

 private:
  std::string name_;
  double beta1_, beta2_, eps_, wd_;
  bool decoupled_;
};

}  // namespace

Schedule::Schedule(double lr) : Schedule(constant(lr)) {}

Schedule::Schedule(std::string description, std::function<double(std::int64_t)> fn)
    : description_(std::move(description)), fn_(std::move(fn)) {}

Schedule Schedule::constant(double lr) {
  if (!std::isfinite(lr) || lr < 0) fail("learning rate must be a finite number >= 0, got {}", lr);
  return Schedule(fmt::format("constant({})", fmt_double(lr)), [lr](std::int64_t) { return lr; });
}

Schedule Schedule::linear_warmup(double peak, std::int64_t warmup_steps) {
  if (!std::isfinite(peak) || peak < 0)
    fail("linear_warmup: peak must be a finite number >= 0, got {}", peak);
  if (warmup_steps < 1) fail("linear_warmup: warmup_steps must be >= 1, got {}", warmup_steps);
  return Schedule(fmt::format("linear_warmup(peak={}, warmup={})", fmt_double(peak), warmup_steps),
                  [peak, warmup_steps](std::int64_t s) {
                    if (s + 1 >= warmup_steps) return peak;
                    return peak * static_cast<double>(s + 1) / static_cast<double>(warmup_steps);
                  });
}

Schedule Schedule::warmup_cosine(double peak, std::int64_t warmup_steps, std::int64_t decay_steps,
                                 double final_lr) {
  if (!std::isfinite(peak) || peak < 0)
    fail("warmup_cosine: peak must be a finite number >= 0, got {}", peak);
  if (!std::isfinite(final_lr) || final_lr < 0)
    fail("warmup_cosine: final_lr must be a finite number >= 0, got {}", final_lr);
  if (warmup_steps < 0) fail("warmup_cosine: warmup_steps must be >= 0, got {}", warmup_steps);
  if (decay_steps < 1) fail("warmup_cosine: decay_steps must be >= 1, got {}", decay_steps);
  return Schedule(fmt::format("warmup_cosine(peak={}, warmup={}, decay={}, final={})",
                              fmt_double(peak), warmup_steps, decay_steps, fmt_double(final_lr)),
                  [=](std::int64_t s) {
                    if (s < warmup_steps)
                      return peak * static_cast<double>(s + 1) / static_cast<double>(warmup_steps);
                    const std::int64_t k = s - warmup_steps;
                    if (k >= decay_steps) return final_lr;
                    const double phase = std::numbers::pi * static_cast<double>(k) /
                                         static_cast<double>(decay_steps);
                    return final_lr + (peak - final_lr) * (1 + std::cos(phase)) / 2;
                  });
}

Schedule Schedule::custom(std::string description, std::function<double(std::int64_t)> fn) {
  if (!fn) fail("Schedule::custom: the function is empty");
  return Schedule(std::move(description), std::move(fn));
}

std::string Optimizer::state_name(const std::string& slot, const std::string& param) const {
  return fmt::format("{}.{}.{}", name(), slot, param);
}

OptimizerState Optimizer::init(const Params& params) const {
  OptimizerState state;
  state["step"] = Tensor::scalar<std::int64_t>(0);
  for (const std::string& slot : slots())
    for (const auto& [name, p] : params)
      state[state_name(slot, name)] = Tensor(p.dtype(), p.shape());
  return state;
}

std::shared_ptr<const Optimizer> sgd(SgdOptions options) {
  return std::make_shared<Sgd>(std::move(options));
}

std::shared_ptr<const Optimizer> adam(AdamOptions o) {
  return std::make_shared<AdamBase>("adam", std::move(o.learning_rate), o.beta1, o.beta2, o.eps,
                                    o.weight_decay, false);
}

std::shared_ptr<const Optimizer> adamw(AdamWOptions o) {
  return std::make_shared<AdamBase>("adamw", std::move(o.learning_rate), o.beta1, o.beta2, o.eps,
                                    o.weight_decay, true);
}

Value global_norm(const std::vector<Value>& grads) {
  Value total = f64(0);
  for (const Value& g : grads) {
    Value sq = ops::mul(g, g);
    if (sq.rank() > 0) sq = ops::reduce_sum(sq, all_axes(sq.rank()));
    total = ops::add(total, ops::cast(sq, DType::f64));
  }
  return ops::sqrt(total);
}

ClippedGradients clip_by_global_norm(const std::vector<Value>& grads, double max_norm) {
  if (!(max_norm > 0) || !std::isfinite(max_norm))
    fail("clip_by_global_norm: max_norm must be a finite number > 0, got {}", max_norm);
  ClippedGradients out;
  out.norm = global_norm(grads);
  Value scale = ops::min(f64(1), ops::div(f64(max_norm), ops::add(out.norm, f64(1e-6))));
  for (const Value& g : grads) out.grads.push_back(ops::mul(g, as(scale, g)));
  return out;
}

}  // namespace edifice::nn
