#include <edifice/core/error.hpp>
#include <edifice/core/op_attrs.hpp>

#include <algorithm>

namespace edifice {

std::string_view mask_kind_name(MaskKind kind) {
  switch (kind) {
    case MaskKind::none:
      return "none";
    case MaskKind::causal:
      return "causal";
    case MaskKind::window:
      return "window";
    case MaskKind::tensor:
      return "tensor";
  }
  return "?";
}

MaskKind parse_mask_kind(std::string_view name) {
  for (MaskKind k : {MaskKind::none, MaskKind::causal, MaskKind::window, MaskKind::tensor})
    if (mask_kind_name(k) == name) return k;
  fail("attention: unknown mask kind \"{}\" (expected none, causal, window or tensor)", name);
}

AttentionAttrs AttentionAttrs::from(const Attributes& attrs) {
  AttentionAttrs a;
  a.mask = parse_mask_kind(attrs.get_string("mask"));
  a.window = attrs.get_int("window");
  if (attrs.has("query_offset")) a.query_offset = attrs.get_int("query_offset");
  a.scale = attrs.get_float("scale");
  a.fill = attrs.get_float("fill");
  return a;
}

Attributes AttentionAttrs::to_attributes() const {
  Attributes attrs = {{"mask", std::string(mask_kind_name(mask))},
                      {"window", window},
                      {"scale", scale},
                      {"fill", fill}};
  if (query_offset != 0) attrs.set("query_offset", query_offset);
  return attrs;
}

DotDims DotDims::from(const Attributes& attrs) {
  return {attrs.get_ints("lhs_contract"), attrs.get_ints("rhs_contract"),
          attrs.get_ints("lhs_batch"), attrs.get_ints("rhs_batch")};
}

Attributes DotDims::to_attributes() const {
  return {{"lhs_contract", lhs_contract},
          {"rhs_contract", rhs_contract},
          {"lhs_batch", lhs_batch},
          {"rhs_batch", rhs_batch}};
}

namespace {
std::vector<std::int64_t> free_axes(std::int64_t rank, const std::vector<std::int64_t>& contract,
                                    const std::vector<std::int64_t>& batch) {
  std::vector<std::int64_t> axes;
  for (std::int64_t a = 0; a < rank; ++a)
    if (std::find(contract.begin(), contract.end(), a) == contract.end() &&
        std::find(batch.begin(), batch.end(), a) == batch.end())
      axes.push_back(a);
  return axes;
}
}  // namespace

std::vector<std::int64_t> DotDims::lhs_free(std::int64_t lhs_rank) const {
  return free_axes(lhs_rank, lhs_contract, lhs_batch);
}

std::vector<std::int64_t> DotDims::rhs_free(std::int64_t rhs_rank) const {
  return free_axes(rhs_rank, rhs_contract, rhs_batch);
}

SliceSpec SliceSpec::from(const Attributes& attrs) {
  SliceSpec s{attrs.get_ints("start"), attrs.get_ints("limit"), {}};
  if (attrs.has("stride"))
    s.stride = attrs.get_ints("stride");
  else
    s.stride.assign(s.start.size(), 1);
  return s;
}

Attributes SliceSpec::to_attributes() const {
  return {{"start", start}, {"limit", limit}, {"stride", stride}};
}

}  // namespace edifice
