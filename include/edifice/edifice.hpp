#pragma once
/// \file
/// Umbrella header: everything a user of Edifice needs.

#include <edifice/core/autodiff.hpp>
#include <edifice/core/dtype.hpp>
#include <edifice/core/error.hpp>
#include <edifice/core/graph.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/op.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/core/shape.hpp>
#include <edifice/core/tensor.hpp>
#include <edifice/jit/jit.hpp>
#include <edifice/jit/target.hpp>
#include <edifice/nn/init.hpp>
#include <edifice/nn/layer.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/model.hpp>
#include <edifice/models/multi_head.hpp>
