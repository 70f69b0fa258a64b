#include "expression.hpp"

#include <edifice/core/error.hpp>
#include <edifice/core/philox.hpp>

namespace edifice::jit::codegen {

ExpressionEmitter::ExpressionEmitter(Emitter& e, const Plan& plan, const Kernel& kernel,
                                     const KernelArgs& args)
    : e_(e), plan_(plan), kernel_(kernel), args_(args) {
  int slot = 0;
  for (const Value& v : kernel.outputs) buffers_[{&v.node(), v.index()}] = args.buffers[slot++];
  for (const Value& v : kernel.inputs) buffers_[{&v.node(), v.index()}] = args.buffers[slot++];
}

llvm::Value* ExpressionEmitter::buffer(const Value& v) const {
  auto it = buffers_.find({&v.node(), v.index()});
  if (it == buffers_.end())
    fail("jit: internal error: kernel {} has no buffer for a {} value", kernel_.name,
         op_name(v.node().op()));
  return it->second;
}

void ExpressionEmitter::override_node(const Node* node,
                                      std::function<llvm::Value*(const Index&)> f) {
  overrides_[node] = std::move(f);
}

llvm::Value* ExpressionEmitter::linearize(const Index& index, const Shape& shape) {
  auto& b = e_.builder();
  llvm::Value* flat = e_.i64(0);
  std::int64_t stride = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    flat = b.CreateAdd(flat, b.CreateMul(index[i], e_.i64(stride)), "", true, true);
    stride *= shape[i];
  }
  return flat;
}

Index ExpressionEmitter::delinearize(llvm::Value* flat, const Shape& shape) {
  auto& b = e_.builder();
  Index index(shape.size());
  std::int64_t stride = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    llvm::Value* q = stride == 1 ? flat : b.CreateUDiv(flat, e_.i64(stride));
    index[i] = i == 0 ? q : b.CreateURem(q, e_.i64(shape[i]));
    stride *= shape[i];
  }
  return index;
}

llvm::Value* ExpressionEmitter::at(const Value& v, const Index& index) {
  auto key = std::make_pair(&v.node(), index);
  key.second.push_back(reinterpret_cast<llvm::Value*>(static_cast<std::intptr_t>(v.index())));
  auto it = memo_.find(key);
  if (it != memo_.end()) return it->second;
  llvm::Value* result = compute(v, index);
  memo_[key] = result;
  return result;
}

// The index of `in_shape` holding the element at `index` of `out_shape` (a reshape). Axes are
// matched in groups of equal extent products (a reshape that splits or merges axes keeps the
// others), and only within a group is the index linearised and split again: [B, S, 256] ->
// [B, S, 4, 64] costs a shift and a mask instead of divisions by S * 256 and 256, which the
// loop vectoriser cannot turn into vector code.
Index ExpressionEmitter::reshape_index(const Index& index, const Shape& out_shape,
                                       const Shape& in_shape) {
  if (shape_numel(out_shape) == 0) return delinearize(linearize(index, out_shape), in_shape);
  Index inner(in_shape.size(), e_.i64(0));
  std::size_t i = 0, j = 0;
  while (i < out_shape.size() && j < in_shape.size()) {
    const std::size_t i0 = i, j0 = j;
    std::int64_t po = out_shape[i++], pi = in_shape[j++];
    while (po != pi) {
      if (po < pi && i < out_shape.size())
        po *= out_shape[i++];
      else if (j < in_shape.size())
        pi *= in_shape[j++];
      else
        return delinearize(linearize(index, out_shape), in_shape);
    }
    if (i - i0 == 1 && j - j0 == 1) {
      inner[j0] = index[i0];
      continue;
    }
    const Index group(index.begin() + static_cast<std::ptrdiff_t>(i0),
                      index.begin() + static_cast<std::ptrdiff_t>(i));
    const Shape out_group(out_shape.begin() + static_cast<std::ptrdiff_t>(i0),
                          out_shape.begin() + static_cast<std::ptrdiff_t>(i));
    const Shape in_group(in_shape.begin() + static_cast<std::ptrdiff_t>(j0),
                         in_shape.begin() + static_cast<std::ptrdiff_t>(j));
    const Index split = delinearize(linearize(group, out_group), in_group);
    for (std::size_t t = 0; t < split.size(); ++t) inner[j0 + t] = split[t];
  }
  return inner;  // trailing extent-1 axes of the input stay at 0
}

namespace {

// Whether an index term is non-negative by construction: loop counters and kernel arguments
// (which count up from >= 0) combined by operations that keep the sign, and constants >= 0.
bool non_negative(llvm::Value* v, int depth) {
  if (auto* c = llvm::dyn_cast<llvm::ConstantInt>(v)) return !c->isNegative();
  if (llvm::isa<llvm::PHINode>(v) || llvm::isa<llvm::Argument>(v)) return true;
  auto* inst = llvm::dyn_cast<llvm::Instruction>(v);
  if (!inst || depth == 0) return false;
  switch (inst->getOpcode()) {
    case llvm::Instruction::Add:
    case llvm::Instruction::Mul:
    case llvm::Instruction::Shl:
    case llvm::Instruction::Or:
    case llvm::Instruction::UDiv:
    case llvm::Instruction::URem:
    case llvm::Instruction::LShr:
      return non_negative(inst->getOperand(0), depth - 1) &&
             non_negative(inst->getOperand(1), depth - 1);
    case llvm::Instruction::And:
      return non_negative(inst->getOperand(0), depth - 1) ||
             non_negative(inst->getOperand(1), depth - 1);
    case llvm::Instruction::Select:
      return non_negative(inst->getOperand(1), depth - 1) &&
             non_negative(inst->getOperand(2), depth - 1);
    default:
      return false;
  }
}

}  // namespace

llvm::Value* ExpressionEmitter::compute(const Value& v, const Index& index) {
  const Node& n = v.node();
  auto ov = overrides_.find(&n);
  if (ov != overrides_.end()) return ov->second(index);
  bool is_output = false;
  for (const Value& o : kernel_.outputs) is_output |= o == v;
  if (!is_output && buffers_.count({&n, v.index()})) return load_buffered(v, index);

  auto& b = e_.builder();
  const Attributes& at_ = n.attrs();
  const DType d = v.dtype();
  switch (op_kind(n.op())) {
    case OpKind::unary:
      return e_.unary(n.op(), d, at(n.inputs()[0], index));
    case OpKind::binary:
    case OpKind::compare: {
      const Value& lhs = n.inputs()[0];
      return e_.binary(n.op(), lhs.dtype(), at(lhs, index), at(n.inputs()[1], index), args_.status);
    }
    default:
      break;
  }
  switch (n.op()) {
    case Op::select:
      return e_.select(at(n.inputs()[0], index), at(n.inputs()[1], index),
                       at(n.inputs()[2], index));
    case Op::cast:
      return e_.cast(at(n.inputs()[0], index), n.inputs()[0].dtype(), d);
    case Op::constant: {
      const Tensor& t = at_.get_tensor("value");
      if (t.numel() == 1) return e_.constant(t.get_as_double(0), d);
      auto* array = e_.constant_array(fmt::format("{}.const{}", kernel_.name, constant_count_++), d,
                                      t.raw_data(), t.numel());
      return e_.load(d, array, linearize(index, t.shape()));
    }
    case Op::iota:
      return e_.cast(index[at_.get_int("axis")], DType::i64, d);
    case Op::random_uniform:
      return random_uniform(n, index);
    case Op::take:
      return take(n, index);
    case Op::broadcast_in_dim: {
      const Value& in = n.inputs()[0];
      const auto& dims = at_.get_ints("dims");
      Index inner;
      for (std::size_t i = 0; i < dims.size(); ++i)
        inner.push_back(in.shape()[i] == 1 ? e_.i64(0) : index[dims[i]]);
      return at(in, inner);
    }
    case Op::transpose: {
      const auto& perm = at_.get_ints("perm");
      Index inner(perm.size());
      for (std::size_t i = 0; i < perm.size(); ++i) inner[perm[i]] = index[i];
      return at(n.inputs()[0], inner);
    }
    case Op::reshape:
      return at(n.inputs()[0], reshape_index(index, v.shape(), n.inputs()[0].shape()));
    case Op::slice: {
      const auto& start = at_.get_ints("start");
      const auto& stride = at_.get_ints("stride");
      Index inner;
      for (std::size_t i = 0; i < index.size(); ++i)
        inner.push_back(b.CreateAdd(e_.i64(start[i]), b.CreateMul(index[i], e_.i64(stride[i]))));
      return at(n.inputs()[0], inner);
    }
    case Op::pad:
      return pad(n, index);
    case Op::concat:
      return concat(n, index);
    default:
      fail("jit: internal error: {} cannot be inlined into kernel {}", op_name(n.op()),
           kernel_.name);
  }
}

llvm::Value* ExpressionEmitter::load_buffered(const Value& v, const Index& index) {
  if (index.empty()) return e_.load(v.dtype(), buffer(v), e_.i64(0));
  // The last index is added to the row's address, not to its offset: the row offset is a
  // multiple of the last extent, so the optimiser would fold the sum into an `or`, which
  // the loop vectoriser cannot see through (it gathers instead of loading a vector).
  // Non-negative constant terms of the last index (a slice's start) move to the row's
  // address too, while the rest is visibly non-negative (so the row address stays inside
  // the buffer, as the inbounds addressing requires).
  Index row = index;
  llvm::Value* last = index.back();
  std::int64_t constant = 0;
  while (auto* add = llvm::dyn_cast<llvm::BinaryOperator>(last)) {
    if (add->getOpcode() != llvm::Instruction::Add) break;
    auto* c = llvm::dyn_cast<llvm::ConstantInt>(add->getOperand(0));
    llvm::Value* rest = add->getOperand(1);
    if (!c) {
      c = llvm::dyn_cast<llvm::ConstantInt>(add->getOperand(1));
      rest = add->getOperand(0);
    }
    if (!c || c->isNegative() || !non_negative(rest, 8)) break;
    constant += c->getSExtValue();
    last = rest;
  }
  row.back() = e_.i64(constant);
  return e_.load(v.dtype(), e_.element_ptr(v.dtype(), buffer(v), linearize(row, v.shape())), last);
}

llvm::Value* ExpressionEmitter::pad(const Node& n, const Index& index) {
  auto& b = e_.builder();
  const DType d = n.outputs()[0].dtype;
  const Value& in = n.inputs()[0];
  const auto& low = n.attrs().get_ints("low");
  const auto& interior = n.attrs().get_ints("interior");
  llvm::Value* valid = b.getTrue();
  Index inner;
  for (std::size_t i = 0; i < index.size(); ++i) {
    llvm::Value* t = b.CreateSub(index[i], e_.i64(low[i]));
    llvm::Value* ok = b.CreateICmpSGE(t, e_.i64(0));
    llvm::Value* pos = t;
    if (interior[i] > 0) {
      llvm::Value* step = e_.i64(interior[i] + 1);
      ok = b.CreateAnd(ok, b.CreateICmpEQ(b.CreateSRem(t, step), e_.i64(0)));
      pos = b.CreateSDiv(t, step);
    }
    ok = b.CreateAnd(ok, b.CreateICmpSLT(pos, e_.i64(in.shape()[i])));
    valid = b.CreateAnd(valid, ok);
    inner.push_back(pos);
  }
  // Read at a safe index everywhere, then choose: keeps the loop branch-free.
  for (auto& p : inner) p = b.CreateSelect(valid, p, e_.i64(0));
  llvm::Value* x = shape_numel(in.shape()) == 0 ? e_.constant(0, d) : at(in, inner);
  return b.CreateSelect(valid, x, e_.constant(n.attrs().get_float("value"), d));
}

llvm::Value* ExpressionEmitter::concat(const Node& n, const Index& index) {
  auto& b = e_.builder();
  const DType d = n.outputs()[0].dtype;
  // Every input is read at an index clamped into its own range; the last input whose
  // range starts at or before the position wins (branch-free).
  const std::int64_t axis = n.attrs().get_int("axis");
  llvm::Value* result = nullptr;
  std::int64_t offset = 0;
  for (const Value& in : n.inputs()) {
    const std::int64_t extent = in.shape()[axis];
    if (extent == 0) continue;
    Index inner = index;
    llvm::Value* local = b.CreateSub(index[axis], e_.i64(offset));
    local = b.CreateSelect(b.CreateICmpSLT(local, e_.i64(0)), e_.i64(0), local);
    local = b.CreateSelect(b.CreateICmpSGE(local, e_.i64(extent)), e_.i64(extent - 1), local);
    inner[axis] = local;
    llvm::Value* x = at(in, inner);
    result = result ? b.CreateSelect(b.CreateICmpSGE(index[axis], e_.i64(offset)), x, result) : x;
    offset += extent;
  }
  return result ? result : e_.constant(0, d);
}

llvm::Value* ExpressionEmitter::random_uniform(const Node& n, const Index& index) {
  auto& b = e_.builder();
  auto* i32t = b.getInt32Ty();
  auto* i64t = b.getInt64Ty();
  llvm::Value* seed = at(n.inputs()[0], {});
  llvm::Value* element = linearize(index, n.outputs()[0].shape);
  auto stream = static_cast<std::uint64_t>(n.attrs().get_int("stream"));
  auto lo = [&](llvm::Value* x) { return b.CreateTrunc(x, i32t); };
  auto hi = [&](llvm::Value* x) { return b.CreateTrunc(b.CreateLShr(x, 32), i32t); };
  llvm::Value* k0 = lo(seed);
  llvm::Value* k1 = hi(seed);
  llvm::Value* c[4] = {lo(element), hi(element), b.getInt32(static_cast<std::uint32_t>(stream)),
                       b.getInt32(static_cast<std::uint32_t>(stream >> 32))};
  for (int r = 0; r < philox::kRounds; ++r) {
    if (r > 0) {
      k0 = b.CreateAdd(k0, b.getInt32(philox::kKeyBump0));
      k1 = b.CreateAdd(k1, b.getInt32(philox::kKeyBump1));
    }
    llvm::Value* p0 = b.CreateMul(b.CreateZExt(c[0], i64t), b.getInt64(philox::kMultiplier0));
    llvm::Value* p1 = b.CreateMul(b.CreateZExt(c[2], i64t), b.getInt64(philox::kMultiplier1));
    llvm::Value* next[4] = {b.CreateXor(b.CreateXor(hi(p1), c[1]), k0), lo(p1),
                            b.CreateXor(b.CreateXor(hi(p0), c[3]), k1), lo(p0)};
    std::copy(std::begin(next), std::end(next), std::begin(c));
  }
  const DType d = n.outputs()[0].dtype;
  if (d == DType::f32)
    return b.CreateFMul(b.CreateUIToFP(b.CreateLShr(c[0], 8), b.getFloatTy()),
                        e_.constant(0x1p-24, DType::f32));
  llvm::Value* bits =
      b.CreateOr(b.CreateShl(b.CreateZExt(c[0], i64t), 32), b.CreateZExt(c[1], i64t));
  return b.CreateFMul(b.CreateUIToFP(b.CreateLShr(bits, 11), b.getDoubleTy()),
                      e_.constant(0x1p-53, DType::f64));
}

llvm::Value* ExpressionEmitter::take(const Node& n, const Index& index) {
  auto& b = e_.builder();
  const Value& x = n.inputs()[0];
  const Value& indices = n.inputs()[1];
  const auto axis = static_cast<std::size_t>(n.attrs().get_int("axis"));
  const auto rank = static_cast<std::size_t>(indices.rank());
  Index at_indices(index.begin() + axis, index.begin() + axis + rank);
  llvm::Value* j = e_.cast(at(indices, at_indices), indices.dtype(), DType::i64);
  const std::int64_t extent = x.shape()[axis];
  llvm::Value* bad = b.CreateOr(b.CreateICmpSLT(j, e_.i64(0)), b.CreateICmpSGE(j, e_.i64(extent)));
  e_.set_status(args_.status, bad, kIndexOutOfRange);
  j = b.CreateSelect(bad, e_.i64(0), j);
  Index inner(index.begin(), index.begin() + axis);
  inner.push_back(j);
  inner.insert(inner.end(), index.begin() + axis + rank, index.end());
  return at(x, inner);
}

}  // namespace edifice::jit::codegen
