#include <edifice/core/error.hpp>
#include <edifice/nn/export.hpp>

namespace edifice::nn {

jit::ExportResult export_model(const Model& model, const Params& params,
                               const std::vector<Shape>& input_shapes,
                               const jit::ExportOptions& options) {
  check_params(model.parameters(), params, "export");
  const TracedModel traced = model.trace(Mode::inference);
  if (input_shapes.size() != traced.input_names.size())
    fail("export: {} input shapes given, the model has {} inputs ({})", input_shapes.size(),
         traced.input_names.size(), fmt::join(traced.input_names, ", "));
  return jit::export_library(traced.graph, params, input_shapes, options);
}

}  // namespace edifice::nn
