#pragma once
/// \file
/// Ahead-of-time export of a model (jit/export.hpp): its inference graph with `params`
/// baked in (or passed at run time), as an object or library with a C header.
///
///   nn::export_model(model, params, {{1, 60, 1024}}, {.name = "policy", .out_dir = "deploy"});

#include <edifice/jit/export.hpp>
#include <edifice/nn/model.hpp>

namespace edifice::nn {

/// Exports `model` traced in inference mode. `input_shapes` has one shape per model input, in
/// definition order. Throws edifice::Error listing missing, unexpected or mismatched parameters
/// (as predict does), for a wrong number of input shapes, and for every error of
/// jit::export_library.
jit::ExportResult export_model(const Model& model, const Params& params,
                               const std::vector<Shape>& input_shapes,
                               const jit::ExportOptions& options);

}  // namespace edifice::nn
