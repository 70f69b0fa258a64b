// Loop kernels (fused elementwise/layout expressions), reductions and scatter_add.
#include "kernels.hpp"

#include "../work_items.hpp"

#include <algorithm>
#include <numeric>

namespace edifice::jit::codegen {

namespace {

// Columns per contiguous run of the sources when a reshape in the kernel merges the last axis
// from [..., H, D] (the attention head merge): a column's source index is then (col / D,
// col % D), piecewise affine, which the vectoriser can only gather. 1 when there is none.
std::int64_t merged_run(const Kernel& k, std::int64_t inner) {
  std::int64_t run = 0;
  for (const Node* n : k.nodes) {
    if (n->op() != Op::reshape || n->inputs()[0].rank() == 0) continue;
    const std::int64_t in_last = n->inputs()[0].shape().back();
    const Shape& out = n->outputs()[0].shape;
    if (out.empty() || out.back() != inner || in_last <= 1 || inner % in_last != 0 ||
        in_last == inner)
      continue;
    run = run == 0 ? in_last : std::gcd(run, in_last);
  }
  return run == 0 ? 1 : run;
}

}  // namespace

// One work item is one row (all axes but the last) of the root; the inner loop runs over the
// last axis, contiguous in the output, which is what the loop vectoriser wants.
void emit_loop(Emitter& e, ExpressionEmitter& expr, const Kernel& k, const KernelArgs& args) {
  auto& b = e.builder();
  const Value root = k.root->output(0);
  const Shape& shape = root.shape();
  const std::int64_t inner = shape.empty() ? 1 : shape.back();
  const Shape outer_shape(shape.begin(), shape.end() - (shape.empty() ? 0 : 1));
  llvm::Value* out = expr.buffer(root);
  // A root that concatenates along the last axis gets one inner loop per input, each reading
  // its input at an affine index (the inlined concat's clamped, selected reads do not
  // vectorise).
  const Node& root_node = root.node();
  const bool split_concat =
      root_node.op() == Op::concat && !shape.empty() &&
      root_node.attrs().get_int("axis") + 1 == static_cast<std::int64_t>(shape.size());
  e.loop(args.begin, args.end, [&](llvm::Value* row) {
    Index outer = expr.delinearize(row, outer_shape);
    llvm::Value* base = b.CreateMul(row, e.i64(inner));
    // out[row, offset + col] = source[row, col] for col < extent; the kernel's other outputs
    // (same shape, computed on the way to the root: see fuse.cpp) are stored at the same
    // index from the same memoised values.
    auto run = [&](const Value& source, std::int64_t offset, std::int64_t extent) {
      auto columns = [&](const std::function<void(llvm::Value*)>& body) {
        const std::int64_t block = offset == 0 ? merged_run(k, extent) : 1;
        if (block == 1) return e.loop(e.i64(0), e.i64(extent), body), void();
        // Blocks of one run each, col = blk * block + j with j < block stated (an assume), so
        // the optimiser folds col / block and col % block to blk and j.
        e.loop(e.i64(0), e.i64(extent / block), [&](llvm::Value* blk) {
          e.loop(e.i64(0), e.i64(block), [&](llvm::Value* j) {
            b.CreateAssumption(b.CreateICmpULT(j, e.i64(block)));
            body(b.CreateAdd(b.CreateMul(blk, e.i64(block), "", true, true), j, "", true, true));
          });
        });
      };
      columns([&](llvm::Value* col) {
        expr.clear_memo();
        Index index = outer;
        if (!shape.empty()) index.push_back(col);
        llvm::Value* at = b.CreateAdd(base, b.CreateAdd(col, e.i64(offset)));
        e.store(root.dtype(), expr.at(source, index), out, at);
        for (std::size_t i = 1; i < k.outputs.size(); ++i)
          e.store(k.outputs[i].dtype(), expr.at(k.outputs[i], index), expr.buffer(k.outputs[i]),
                  at);
        expr.clear_memo();
      });
    };
    if (!split_concat) return run(root, 0, inner);
    std::int64_t offset = 0;
    for (const Value& in : root_node.inputs()) {
      run(in, offset, in.shape().back());
      offset += in.shape().back();
    }
  });
}

// One work item is one output element; nested loops walk the reduced axes in order, so the
// innermost loop runs over the last reduced axis (contiguous when it is the input's last).
// Reductions over the leading axes only ([rows, C] -> [C]) instead take kReduceColumnBlock
// output columns per item and walk the rows in order, each row's columns contiguous: every
// output element still accumulates its inputs in the same (row-major) order.
void emit_reduce(Emitter& e, ExpressionEmitter& expr, const Kernel& k, const KernelArgs& args) {
  auto& b = e.builder();
  const Node& n = *k.anchor;
  const Value x = n.inputs()[0];
  const Value out = n.output(0);
  const DType d = out.dtype();
  const auto& axes = n.attrs().get_ints("axes");
  std::int64_t count = 1;
  for (auto a : axes) count *= x.shape()[a];
  auto initial = [&] { return n.op() == Op::reduce_max ? e.lowest(d) : e.constant(0, d); };
  auto combine = [&](llvm::Value* acc, llvm::Value* v) {
    return n.op() == Op::reduce_max ? e.maximum(d, acc, v) : e.accumulate(d, acc, v);
  };
  auto finish = [&](llvm::Value* acc) {
    if (n.op() != Op::reduce_mean) return acc;
    return b.CreateFDiv(acc, e.constant(static_cast<double>(count), d));
  };
  if (reduces_leading_axes(n)) {
    const std::int64_t block = kReduceColumnBlock;
    const std::int64_t columns = shape_numel(out.shape());
    const Shape rows_shape(x.shape().begin(),
                           x.shape().begin() + static_cast<std::ptrdiff_t>(axes.size()));
    llvm::AllocaInst* acc = e.local_array(d, block);
    e.loop(args.begin, args.end, [&](llvm::Value* item) {
      llvm::Value* c0 = b.CreateMul(item, e.i64(block));
      llvm::Value* c1 = b.CreateAdd(c0, e.i64(block));
      c1 = b.CreateSelect(b.CreateICmpSLT(c1, e.i64(columns)), c1, e.i64(columns));
      auto slot = [&](llvm::Value* c) { return b.CreateSub(c, c0); };
      e.loop(c0, c1, [&](llvm::Value* c) { e.store(d, initial(), acc, slot(c)); });
      e.loop(0, count, [&](llvm::Value* row) {
        Index lead = expr.delinearize(row, rows_shape);
        e.loop(c0, c1, [&](llvm::Value* c) {
          Index in_index = lead;
          for (llvm::Value* i : expr.delinearize(c, out.shape())) in_index.push_back(i);
          expr.clear_memo();
          llvm::Value* v = expr.at(x, in_index);
          e.store(d, combine(e.load(d, acc, slot(c)), v), acc, slot(c));
          expr.clear_memo();
        });
      });
      llvm::Value* dst = expr.buffer(out);
      e.loop(c0, c1, [&](llvm::Value* c) { e.store(d, finish(e.load(d, acc, slot(c))), dst, c); });
    });
    return;
  }
  e.loop(args.begin, args.end, [&](llvm::Value* o) {
    Index out_index = expr.delinearize(o, out.shape());
    llvm::AllocaInst* acc = e.local(d, initial());
    // Recursively open one loop per reduced axis.
    Index in_index(x.rank());
    std::function<void(std::size_t)> open = [&](std::size_t level) {
      if (level == axes.size()) {
        std::size_t kept = 0;
        for (std::int64_t i = 0; i < x.rank(); ++i)
          if (std::find(axes.begin(), axes.end(), i) == axes.end()) in_index[i] = out_index[kept++];
        expr.clear_memo();
        llvm::Value* v = expr.at(x, in_index);
        e.set(acc, combine(e.get(acc), v));
        expr.clear_memo();
        return;
      }
      e.loop(0, x.shape()[axes[level]], [&](llvm::Value* i) {
        in_index[axes[level]] = i;
        open(level + 1);
      });
    };
    open(0);
    e.store(d, finish(e.get(acc)), expr.buffer(out), o);
  });
}

// A single work item: zero the output, then add every update at its index, in order.
void emit_scatter_add(Emitter& e, ExpressionEmitter& expr, const Kernel& k,
                      const KernelArgs& args) {
  auto& b = e.builder();
  const Node& n = *k.anchor;
  const Value indices = n.inputs()[0];
  const Value updates = n.inputs()[1];
  const Value out = n.output(0);
  const DType d = out.dtype();
  const auto axis = static_cast<std::size_t>(n.attrs().get_int("axis"));
  const auto irank = static_cast<std::size_t>(indices.rank());
  const std::int64_t dim = out.shape()[axis];
  llvm::Value* out_ptr = expr.buffer(out);
  e.loop(args.begin, args.end, [&](llvm::Value*) {
    e.loop(0, shape_numel(out.shape()),
           [&](llvm::Value* i) { e.store(d, e.constant(0, d), out_ptr, i); });
    e.loop(0, shape_numel(updates.shape()), [&](llvm::Value* u) {
      Index ui = expr.delinearize(u, updates.shape());
      Index ii(ui.begin() + axis, ui.begin() + axis + irank);
      llvm::Value* j =
          e.cast(e.load(indices.dtype(), expr.buffer(indices), expr.linearize(ii, indices.shape())),
                 indices.dtype(), DType::i64);
      llvm::Value* bad = b.CreateOr(b.CreateICmpSLT(j, e.i64(0)), b.CreateICmpSGE(j, e.i64(dim)));
      e.set_status(args.status, bad, kIndexOutOfRange);
      j = b.CreateSelect(bad, e.i64(0), j);
      Index oi(ui.begin(), ui.begin() + axis);
      oi.push_back(j);
      oi.insert(oi.end(), ui.begin() + axis + irank, ui.end());
      llvm::Value* at = expr.linearize(oi, out.shape());
      llvm::Value* v = e.load(d, expr.buffer(updates), u);
      // Out-of-range updates are dropped (the status reports them).
      llvm::Value* sum = e.binary(Op::add, d, e.load(d, out_ptr, at), v, args.status);
      e.store(d, b.CreateSelect(bad, e.load(d, out_ptr, at), sum), out_ptr, at);
    });
  });
}

}  // namespace edifice::jit::codegen
