#pragma once
/// \file
/// Umbrella header: everything a user of Edifice needs. Every C++ block of README.md is compiled
/// with this header alone (tests/readme), so what the README shows stays true.

// core: tensors, graph IR, reference interpreter, autodiff
#include <edifice/core/autodiff.hpp>
#include <edifice/core/dtype.hpp>
#include <edifice/core/error.hpp>
#include <edifice/core/graph.hpp>
#include <edifice/core/graph_rewrite.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/op.hpp>
#include <edifice/core/op_attrs.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/core/shape.hpp>
#include <edifice/core/tensor.hpp>
// jit: compiled graphs
#include <edifice/jit/export.hpp>
#include <edifice/jit/jit.hpp>
#include <edifice/jit/target.hpp>
// nn: layers, models, training, checkpoints, plots
#include <edifice/nn/checkpoint.hpp>
#include <edifice/nn/distributed.hpp>
#include <edifice/nn/export.hpp>
#include <edifice/nn/init.hpp>
#include <edifice/nn/layer.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/losses.hpp>
#include <edifice/nn/model.hpp>
#include <edifice/nn/optimizers.hpp>
#include <edifice/nn/plot.hpp>
#include <edifice/nn/progress.hpp>
#include <edifice/nn/safetensors.hpp>
#include <edifice/nn/train_step.hpp>
#include <edifice/nn/trainer.hpp>
// models
#include <edifice/models/multi_head.hpp>
#include <edifice/models/registry.hpp>
#include <edifice/models/stream.hpp>
