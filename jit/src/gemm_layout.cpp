#include "gemm_layout.hpp"

#include <edifice/core/error.hpp>
#include <edifice/core/op_attrs.hpp>
#include <edifice/jit/target.hpp>

#include <algorithm>

namespace edifice::jit {
namespace {

using Axes = std::vector<std::int64_t>;

Axes range(std::int64_t from, std::int64_t count) {
  Axes r;
  for (std::int64_t i = 0; i < count; ++i) r.push_back(from + i);
  return r;
}

std::int64_t product(const Shape& s, const Axes& axes) {
  std::int64_t p = 1;
  for (auto a : axes) p *= s[a];
  return p;
}

}  // namespace

std::optional<GemmLayout> try_gemm_layout(const Node& dot) {
  const DotDims dims = DotDims::from(dot.attrs());
  const Axes &lc = dims.lhs_contract, &rc = dims.rhs_contract;
  const Axes &lb = dims.lhs_batch, &rb = dims.rhs_batch;
  const Shape& ls = dot.inputs()[0].shape();
  const Shape& rs = dot.inputs()[1].shape();
  const auto nb = static_cast<std::int64_t>(lb.size());
  if (lb != range(0, nb) || rb != range(0, nb)) return std::nullopt;
  if (!std::is_sorted(lc.begin(), lc.end()) || !std::is_sorted(rc.begin(), rc.end()))
    return std::nullopt;
  const auto nc = static_cast<std::int64_t>(lc.size());
  Axes fl = dims.lhs_free(static_cast<std::int64_t>(ls.size()));
  Axes fr = dims.rhs_free(static_cast<std::int64_t>(rs.size()));
  const auto nfl = static_cast<std::int64_t>(fl.size()), nfr = static_cast<std::int64_t>(fr.size());

  GemmLayout g;
  if (fl == range(nb, nfl) && lc == range(nb + nfl, nc))
    g.trans_a = false;
  else if (lc == range(nb, nc) && fl == range(nb + nc, nfl))
    g.trans_a = true;
  else
    return std::nullopt;
  if (rc == range(nb, nc) && fr == range(nb + nc, nfr))
    g.trans_b = false;
  else if (fr == range(nb, nfr) && rc == range(nb + nfr, nc))
    g.trans_b = true;
  else
    return std::nullopt;
  g.batch = product(ls, lb);
  g.m = product(ls, fl);
  g.k = product(ls, lc);
  g.n = product(rs, fr);
  return g;
}

GemmLayout gemm_layout(const Node& dot) {
  auto g = try_gemm_layout(dot);
  if (!g) fail("jit: internal error: dot_general was not canonicalised before code generation");
  return *g;
}

namespace {

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

}  // namespace

std::optional<ColumnView> gemm_column_view(const Node& dot, std::size_t input) {
  if (input != 1 || dot.op() != Op::dot_general) return std::nullopt;
  const Value& operand = dot.inputs()[1];
  const Node& slice = operand.node();
  if (slice.op() != Op::slice) return std::nullopt;
  const std::optional<GemmLayout> g = try_gemm_layout(dot);
  if (!g || g->batch != 1 || operand.rank() != 2) return std::nullopt;
  const Value& source = slice.inputs()[0];
  const auto& start = slice.attrs().get_ints("start");
  const auto& stride = slice.attrs().get_ints("stride");
  if (stride[0] != 1 || stride[1] != 1 || start[0] != 0 || operand.shape()[0] != source.shape()[0])
    return std::nullopt;
  return ColumnView{source, start[1], source.shape()[1]};
}

Value gemm_operand_source(const Node& dot, std::size_t input) {
  if (auto view = gemm_column_view(dot, input)) return view->source;
  return dot.inputs()[input];
}

GemmTiling gemm_tiling(const GemmLayout& g, DType dtype) {
  const Target& target = codegen_target();
  GemmTiling t;
  // Integer lanes are counted as for 32-bit elements: u8 products need widening anyway.
  const int element = std::max<int>(static_cast<int>(dtype_size(dtype)), 4);
  t.lanes = std::max(1, target.vector_bytes / element);
  t.registers = target.isa == Isa::avx512 ? 32 : 16;
  // Two vectors per row of the micro-tile. 16 registers: 6 rows (12 accumulators, 2 B
  // vectors, 1 broadcast). 32 registers: 12 rows (24 accumulators; 14 would leave LLVM too
  // few registers for the broadcasts it hoists and it spills an accumulator).
  const std::int64_t nrv = 2;
  t.mr = t.registers == 32 ? 12 : 6;
  // Measured on znver4 (gemm_bench): the micro-kernel streams its A and B panels from L2 at
  // full speed, so the blocking is mostly about packing less often: deep K blocks, short item
  // tiles (the A block stays in L1/L2 across the whole row of B panels) and wide n tiles.
  const std::int64_t kc_max = 256, tm_max = 48, tn_max = 1024;
  t.nr = nrv * t.lanes;

  // K blocks of near-equal size (a 300-deep product runs as 2 x 150, not 256 + 44).
  const std::int64_t k = std::max<std::int64_t>(g.k, 1);
  t.kc = ceil_div(k, ceil_div(k, kc_max));

  // Tiles are counted in micro-panels; tile i of T covers panels [i*P/T, (i+1)*P/T), so tiles
  // differ by at most one panel and equal item ranges are equal work.
  const std::int64_t m_panels = ceil_div(g.m, t.mr), n_panels = ceil_div(g.n, t.nr);
  std::int64_t tm_panels = std::max<std::int64_t>(1, tm_max / t.mr);
  std::int64_t tn_panels = std::max<std::int64_t>(1, tn_max / t.nr);
  // B packed for all of K must fit the stack budget; narrow the n tile until it does.
  constexpr std::int64_t kWholeKBudget = 2 << 20;  // bytes
  const std::int64_t fit =
      kWholeKBudget / (k * t.nr * static_cast<std::int64_t>(dtype_size(dtype)));
  t.whole_k_b = fit >= 2;
  if (t.whole_k_b) tn_panels = std::min(tn_panels, fit);

  std::int64_t mt = ceil_div(m_panels, tm_panels), nt = ceil_div(n_panels, tn_panels);
  auto items = [&] { return g.batch * mt * nt; };
  // Enough items to keep a few threads busy when the product is big enough to be worth
  // splitting: halve the larger tile, while an item keeps >= 1M FMAs. A thread packs B once
  // per n tile it touches and each item packs its own rows of A, so splitting either costs
  // little packing.
  constexpr std::int64_t kMinItems = 4;
  constexpr double kMinItemFmas = 1 << 20;
  const double fmas = static_cast<double>(g.batch) * static_cast<double>(g.m) *
                      static_cast<double>(g.n) * static_cast<double>(g.k);
  // A product of a few rows streams its B (a weight matrix, mostly from L3) and is bound by
  // that traffic rather than by FMAs: splitting it pays while each item still reads >= 64 KiB
  // of B (the pruned last layer's 1 x 256 x 256 products: 4 -> 2 us on 2 threads).
  constexpr double kMinItemBytesOfB = 64 << 10;
  const double b_bytes = static_cast<double>(g.batch) * static_cast<double>(g.n) *
                         static_cast<double>(g.k) * static_cast<double>(dtype_size(dtype));
  auto worth = [&](std::int64_t n) {
    return fmas / static_cast<double>(n) >= kMinItemFmas ||
           b_bytes / static_cast<double>(n) >= kMinItemBytesOfB;
  };
  while (items() > 0 && items() < kMinItems && worth(items() * 2)) {
    const bool can_m = mt < m_panels, can_n = nt < n_panels;
    const std::int64_t tile_m = ceil_div(m_panels, mt) * t.mr,
                       tile_n = ceil_div(n_panels, nt) * t.nr;
    if (can_n && (tile_n >= tile_m || !can_m))
      nt = std::min(n_panels, nt * 2);
    else if (can_m)
      mt = std::min(m_panels, mt * 2);
    else
      break;
  }
  // An even item count splits equally over two threads.
  if (items() > 1 && items() % 2 == 1 && mt < m_panels && worth(items() + 1)) ++mt;

  t.m_tiles = mt;
  t.n_tiles = nt;
  t.items = items();
  t.tile_m = std::max<std::int64_t>(1, ceil_div(m_panels, std::max<std::int64_t>(mt, 1))) * t.mr;
  t.tile_n = std::max<std::int64_t>(1, ceil_div(n_panels, std::max<std::int64_t>(nt, 1))) * t.nr;
  return t;
}

}  // namespace edifice::jit
