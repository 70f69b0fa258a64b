// Fusion: decides which values live in buffers and groups every other node into the kernel
// that reads it. Rules, in order:
//  - parameters, graph outputs and the outputs of anchor ops (reductions, dot_general and the
//    structured ops) are materialised;
//  - an elementwise or layout node is inlined into its single consumer; with several
//    consumers it is materialised unless recomputing it is free (constants, iota, and pure
//    index remaps of such values or of buffers);
//  - inputs of buffer-reading anchors (everything but reductions and layer_norm's x) are
//    materialised, and so are values an expanding broadcast or a gather would recompute many
//    times;
//  - a dot_general whose single consumer chain is elementwise over its own shape becomes the
//    anchor of that chain's kernel: a GEMM with an epilogue;
//  - a loop kernel that reads the root of an earlier loop kernel elementwise at its own index
//    (same shape), where no kernel in between reads that value, computes it too, and stores
//    it as a second output if a later kernel or the caller reads it: Adam's parameter update
//    also writes the new moments it reads (one pass over p, g, m and v instead of three
//    kernels re-reading m and v).
#include <edifice/core/graph_rewrite.hpp>

#include "gemm_layout.hpp"
#include "plan.hpp"

#include <algorithm>
#include <functional>
#include <set>
#include <unordered_map>

namespace edifice::jit {
namespace {

using Key = ValueKey;

bool inlinable(Op op) {
  return is_elementwise(op) || is_layout(op) || op == Op::constant || op == Op::iota ||
         op == Op::random_uniform || op == Op::take;
}

bool reads_expressions(Op op) {
  return op_kind(op) == OpKind::reduction;
}

// Operand `input` of `op` may be an inlined expression: every operand of a reduction, and the
// x of a layer_norm (so a residual add before a post-LN norm is computed inside the norm).
bool reads_expression_operand(Op op, std::size_t input) {
  return reads_expressions(op) || (op == Op::layer_norm && input == 0);
}

KernelKind anchor_kind(Op op) {
  switch (op) {
    case Op::reduce_sum:
    case Op::reduce_max:
    case Op::reduce_mean:
      return KernelKind::reduce;
    case Op::dot_general:
      return KernelKind::gemm;
    case Op::softmax:
      return KernelKind::softmax;
    case Op::layer_norm:
      return KernelKind::layer_norm;
    case Op::layer_norm_backward:
      return KernelKind::layer_norm_backward;
    case Op::attention:
      return KernelKind::attention;
    case Op::attention_backward:
      return KernelKind::attention_backward;
    case Op::lstm_scan:
      return KernelKind::lstm_scan;
    case Op::lstm_scan_backward:
      return KernelKind::lstm_scan_backward;
    case Op::scatter_add:
      return KernelKind::scatter_add;
    default:
      fail("jit: internal error: {} is not an anchor op", op_name(op));
  }
}

std::int64_t numel(const Value& v) {
  return shape_numel(v.shape());
}

class Fuser {
 public:
  explicit Fuser(const Graph& g) : graph_(g), order_(g.nodes()), consumers_(consumers_of(g)) {
    for (const Value& out : g.outputs()) graph_outputs_.insert(key_of(out));
  }

  Plan run() {
    decide_materialised();
    absorb_dots_into_epilogues();
    Plan plan;
    plan.graph = graph_;
    for (const Node* n : order_) {
      if (n->op() == Op::parameter) continue;
      if (absorbed_dots_.count(n)) continue;
      if (!inlinable(n->op())) {
        plan.kernels.push_back(anchor_kernel(n));
      } else if (materialised_.count({n, 0})) {
        plan.kernels.push_back(loop_kernel(n));
      }
    }
    merge_elementwise_producers(plan.kernels);
    for (std::size_t i = 0; i < plan.kernels.size(); ++i)
      plan.kernels[i].name = fmt::format("k{}_{}", i, kernel_kind_name(plan.kernels[i].kind));
    return plan;
  }

 private:
  int uses(const Value& v) const {
    auto it = consumers_.find(key_of(v));
    int n = it == consumers_.end() ? 0 : static_cast<int>(it->second.size());
    return n + static_cast<int>(graph_outputs_.count(key_of(v)));
  }

  // Free to recompute anywhere: no arithmetic, only index math over buffers or constants.
  bool cheap(const Node* n) const {
    if (n->op() == Op::constant || n->op() == Op::iota) return true;
    if (!is_index_remap(n->op())) return false;
    const Value& in = n->inputs()[0];
    return materialised_.count(key_of(in)) || cheap(&in.node());
  }

  void note(const Value& v, std::string why) {
    if (materialised_.insert(key_of(v)).second) why_[key_of(v)] = std::move(why);
  }

  // One topological sweep: a node's inputs are decided before it, so `cheap` sees them.
  void decide_materialised() {
    for (const Node* n : order_) {
      if (n->op() == Op::parameter) {
        note(n->output(0), "graph input");
        continue;
      }
      if (!inlinable(n->op())) {
        for (int i = 0; i < n->num_outputs(); ++i)
          note(n->output(i), fmt::format("output of {}", op_name(n->op())));
        // Kernels other than reductions (and layer_norm's x) read their operands from buffers.
        for (std::size_t i = 0; i < n->inputs().size(); ++i) {
          if (reads_expression_operand(n->op(), i)) continue;
          if (n->op() == Op::dot_general && gemm_column_view(*n, i))
            note(gemm_operand_source(*n, i), "operand of dot_general (read as a column block)");
          else
            note(n->inputs()[i], fmt::format("operand of {}", op_name(n->op())));
        }
        continue;
      }
      Value v = n->output(0);
      if (graph_outputs_.count(key_of(v))) note(v, "graph output");
      if (uses(v) > 1 && !cheap(n)) note(v, fmt::format("used {} times", uses(v)));
      if (n->op() == Op::take) note(n->inputs()[0], "operand of a gather");
      if (n->op() == Op::broadcast_in_dim && numel(v) > numel(n->inputs()[0]) &&
          !cheap(&n->inputs()[0].node()))
        note(n->inputs()[0], "input of an expanding broadcast (would be recomputed per copy)");
    }
  }

  // A dot whose only consumer chain is elementwise over the dot's shape up to a materialised
  // root becomes that root's kernel anchor.
  void absorb_dots_into_epilogues() {
    for (const Node* n : order_) {
      if (n->op() != Op::dot_general) continue;
      Value d = n->output(0);
      if (graph_outputs_.count(key_of(d)) || uses(d) != 1) continue;
      const Node* c = consumers_.at(key_of(d))[0];
      const Node* root = nullptr;
      while (is_elementwise(c->op()) && c->outputs()[0].shape == d.shape()) {
        if (materialised_.count({c, 0})) {
          root = c;
          break;
        }
        Value cv = c->output(0);
        if (uses(cv) != 1) break;
        c = consumers_.at(key_of(cv))[0];
      }
      // One dot per epilogue: a second one stays a kernel of its own.
      if (!root || epilogue_anchor_.count(root)) continue;
      absorbed_dots_.insert(n);
      epilogue_anchor_[root] = n;
      materialised_.erase(key_of(d));
    }
  }

  // DFS over the inlined expression feeding `root`'s inputs; leaves are materialised values.
  void collect(const Node* n, Kernel& k, std::set<const Node*>& seen, std::set<Key>& leaves) {
    if (!seen.insert(n).second) return;
    for (const Value& in : n->inputs()) {
      bool leaf = materialised_.count(key_of(in)) && !absorbed_dots_.count(&in.node());
      if (leaf) {
        if (leaves.insert(key_of(in)).second) k.inputs.push_back(in);
      } else if (absorbed_dots_.count(&in.node())) {
        // The dot's operands are the GEMM's inputs.
        const Node* dot = &in.node();
        if (seen.insert(dot).second) {
          for (std::size_t i = 0; i < dot->inputs().size(); ++i) {
            const Value op = gemm_operand_source(*dot, i);
            if (leaves.insert(key_of(op)).second) k.inputs.push_back(op);
          }
          k.nodes.push_back(dot);
        }
      } else {
        collect(&in.node(), k, seen, leaves);
      }
    }
    k.nodes.push_back(n);
  }

  Kernel loop_kernel(const Node* root) {
    Kernel k;
    k.kind = KernelKind::loop;
    k.anchor = root;
    k.root = root;
    k.outputs = {root->output(0)};
    auto it = epilogue_anchor_.find(root);
    if (it != epilogue_anchor_.end()) {
      k.kind = KernelKind::gemm;
      k.anchor = it->second;
    }
    std::set<const Node*> seen;
    std::set<Key> leaves;
    collect(root, k, seen, leaves);
    k.boundary = why_.at({root, 0});
    return k;
  }

  Kernel anchor_kernel(const Node* n) {
    Kernel k;
    k.kind = anchor_kind(n->op());
    k.anchor = n;
    k.root = n;
    for (int i = 0; i < n->num_outputs(); ++i) k.outputs.push_back(n->output(i));
    if (reads_expression_operand(n->op(), 0)) {  // the kernel inlines the producers it reads
      std::set<const Node*> seen;
      std::set<Key> leaves;
      collect(n, k, seen, leaves);
    } else {
      k.nodes = {n};
      std::set<Key> leaves;
      for (std::size_t i = 0; i < n->inputs().size(); ++i) {
        const Value in = n->op() == Op::dot_general ? gemm_operand_source(*n, i) : n->inputs()[i];
        if (leaves.insert(key_of(in)).second) k.inputs.push_back(in);
      }
    }
    k.boundary = why_.at({n, 0});
    return k;
  }

  // The nodes of loop kernel k read at the root's own index: the root and, below it, the
  // elementwise nodes of the root's shape that lead to it.
  static std::set<const Node*> aligned_with_root(const Kernel& k) {
    std::set<const Node*> in_kernel(k.nodes.begin(), k.nodes.end()), aligned;
    const Shape& shape = k.root->outputs()[0].shape;
    std::vector<const Node*> stack = {k.root};
    while (!stack.empty()) {
      const Node* n = stack.back();
      stack.pop_back();
      if (!aligned.insert(n).second) continue;
      if (!is_elementwise(n->op())) continue;
      for (const Value& in : n->inputs())
        if (in_kernel.count(&in.node()) && in.shape() == shape) stack.push_back(&in.node());
    }
    return aligned;
  }

  // Whether loop kernel `consumer` may also compute `v`, the root of loop kernel `producer`
  // (see the rule at the top of this file); kernels in between must not read v.
  bool can_merge(const std::vector<Kernel>& kernels, std::size_t producer, std::size_t consumer,
                 const Value& v) const {
    const Kernel& p = kernels[producer];
    const Kernel& c = kernels[consumer];
    if (p.kind != KernelKind::loop || p.outputs.size() != 1 || p.root->op() == Op::concat)
      return false;
    if (v.shape() != c.root->outputs()[0].shape || c.root->op() == Op::concat) return false;
    for (std::size_t i = producer + 1; i < consumer; ++i)
      for (const Value& in : kernels[i].inputs)
        if (in == v) return false;
    const std::set<const Node*> aligned = aligned_with_root(c);
    const std::set<const Node*> nodes(c.nodes.begin(), c.nodes.end());
    for (const Node* reader : consumers_.at(key_of(v)))
      if (nodes.count(reader) && (!is_elementwise(reader->op()) || !aligned.count(reader)))
        return false;
    return true;
  }

  void merge_elementwise_producers(std::vector<Kernel>& kernels) {
    std::map<const Node*, std::size_t> position;
    for (std::size_t i = 0; i < order_.size(); ++i) position[order_[i]] = i;
    for (std::size_t ci = 0; ci < kernels.size(); ++ci) {
      if (kernels[ci].kind != KernelKind::loop) continue;
      for (std::size_t input = 0; input < kernels[ci].inputs.size();) {
        const Value v = kernels[ci].inputs[input];
        std::size_t pi = 0;
        while (pi < ci && !(kernels[pi].outputs.size() == 1 && kernels[pi].outputs[0] == v)) ++pi;
        if (pi == ci || !can_merge(kernels, pi, ci, v)) {
          ++input;
          continue;
        }
        Kernel& c = kernels[ci];
        const Kernel& p = kernels[pi];
        // Stored only if read after this kernel; otherwise the memo computes it once per
        // element and nothing is written.
        bool read_later = graph_outputs_.count(key_of(v)) > 0;
        for (std::size_t i = ci + 1; i < kernels.size(); ++i)
          read_later |= std::find(kernels[i].inputs.begin(), kernels[i].inputs.end(), v) !=
                        kernels[i].inputs.end();
        if (read_later) c.outputs.push_back(v);
        c.inputs.erase(c.inputs.begin() + static_cast<std::ptrdiff_t>(input));
        for (const Value& in : p.inputs)
          if (std::find(c.inputs.begin(), c.inputs.end(), in) == c.inputs.end())
            c.inputs.push_back(in);
        std::set<const Node*> nodes(c.nodes.begin(), c.nodes.end());
        for (const Node* n : p.nodes)
          if (nodes.insert(n).second) c.nodes.push_back(n);
        std::sort(c.nodes.begin(), c.nodes.end(),
                  [&](const Node* a, const Node* b) { return position.at(a) < position.at(b); });
        kernels.erase(kernels.begin() + static_cast<std::ptrdiff_t>(pi));
        --ci;
        input = 0;  // the producer's inputs may merge too
      }
    }
  }

  const Graph& graph_;
  std::vector<const Node*> order_;
  Consumers consumers_;
  std::set<Key> graph_outputs_;
  std::set<Key> materialised_;
  std::map<Key, std::string> why_;
  std::set<const Node*> absorbed_dots_;
  std::map<const Node*, const Node*> epilogue_anchor_;
};

}  // namespace

std::string kernel_kind_name(KernelKind kind) {
  switch (kind) {
    case KernelKind::loop:
      return "loop";
    case KernelKind::reduce:
      return "reduce";
    case KernelKind::gemm:
      return "gemm";
    case KernelKind::softmax:
      return "softmax";
    case KernelKind::layer_norm:
      return "layer_norm";
    case KernelKind::layer_norm_backward:
      return "layer_norm_backward";
    case KernelKind::attention:
      return "attention";
    case KernelKind::attention_backward:
      return "attention_backward";
    case KernelKind::lstm_scan:
      return "lstm_scan";
    case KernelKind::lstm_scan_backward:
      return "lstm_scan_backward";
    case KernelKind::scatter_add:
      return "scatter_add";
  }
  return "?";
}

Plan fuse(const Graph& graph) {
  return Fuser(graph).run();
}

std::string Plan::to_string() const {
  std::string out;
  for (const Kernel& k : kernels) {
    out += fmt::format("{}: {} -> {}", k.name, kernel_kind_name(k.kind),
                       k.root->outputs()[0].to_string());
    out += fmt::format("  (ends here: {})\n", k.boundary);
    out += "    ops:";
    for (const Node* n : k.nodes) out += " " + std::string(op_name(n->op()));
    out += "\n    reads:";
    for (const Value& in : k.inputs)
      out += fmt::format(
          " {}{}", in.type().to_string(),
          in.node().op() == Op::parameter ? "(" + in.node().attrs().get_string("name") + ")" : "");
    out += "\n";
  }
  if (arena_bytes) out += fmt::format("arena: {} bytes\n", arena_bytes);
  return out;
}

}  // namespace edifice::jit
