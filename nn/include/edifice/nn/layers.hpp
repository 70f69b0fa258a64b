#pragma once
/// \file
/// Built-in layers. Every function records one layer (see layer.hpp) and returns its output.
/// Options are aggregates for designated initialisers: `nn::dense(x, 256, {.name = "proj"})`.
/// An explicit `name` wins; otherwise layers are named "{op}_{k}" with k counting per op in the
/// order the model visits them (inputs first), as Axon does. Parameters are "{layer}.{param}".

#include <edifice/nn/layer.hpp>

namespace edifice::nn {

/// A model input. `shape` may hold nn::dynamic (the batch).
Layer input(std::string name, Shape shape, DType dtype = DType::f32, Loc loc = Loc::current());

struct DenseOptions {
  std::string name;
  bool use_bias = true;
  Initializer kernel_initializer = Initializer::glorot_uniform();
  Initializer bias_initializer = Initializer::zeros();
};
/// y = x.kernel + bias over the last axis. kernel [in, units] (Axon's layout), bias [units].
Layer dense(const Layer& x, std::int64_t units, DenseOptions options = {},
            Loc loc = Loc::current());

struct LayerNormOptions {
  std::string name;
  double epsilon = 1e-5;
  /// Ones, the usual choice (PyTorch, Keras). Axon starts gamma at glorot_uniform, which for a
  /// vector is U(-sqrt(3), sqrt(3)); pass Initializer::glorot_uniform() to reproduce that.
  Initializer gamma_initializer = Initializer::ones();
  Initializer beta_initializer = Initializer::zeros();
};
/// Normalises the last axis (population variance), then gamma * x + beta; gamma, beta [C].
Layer layer_norm(const Layer& x, LayerNormOptions options = {}, Loc loc = Loc::current());

struct DropoutOptions {
  std::string name;
  double rate = 0.5;
};
/// Inverted dropout in train mode only: keep with probability 1 - rate and scale by
/// 1/(1 - rate); identity in inference. Randomness is counter-based (Philox) from the
/// training step's key and the layer's name, so it is reproducible and thread-independent.
Layer dropout(const Layer& x, DropoutOptions options = {}, Loc loc = Loc::current());

struct Named {
  std::string name;
};
Layer relu(const Layer& x, Named options = {}, Loc loc = Loc::current());
/// Exact GELU: x * (1 + erf(x / sqrt(2))) / 2.
Layer gelu(const Layer& x, Named options = {}, Loc loc = Loc::current());
Layer tanh(const Layer& x, Named options = {}, Loc loc = Loc::current());
Layer sigmoid(const Layer& x, Named options = {}, Loc loc = Loc::current());

struct SoftmaxOptions {
  std::string name;
  std::int64_t axis = -1;
};
Layer softmax(const Layer& x, SoftmaxOptions options = {}, Loc loc = Loc::current());

/// Elementwise sum / product with broadcasting.
Layer add(const Layer& a, const Layer& b, Named options = {}, Loc loc = Loc::current());
Layer multiply(const Layer& a, const Layer& b, Named options = {}, Loc loc = Loc::current());

struct ConcatenateOptions {
  std::string name;
  std::int64_t axis = -1;
};
Layer concatenate(const std::vector<Layer>& xs, ConcatenateOptions options = {},
                  Loc loc = Loc::current());

/// New shape for the same elements; nn::dynamic stands for the batch.
Layer reshape(const Layer& x, Shape shape, Named options = {}, Loc loc = Loc::current());
Layer transpose(const Layer& x, std::vector<std::int64_t> perm, Named options = {},
                Loc loc = Loc::current());

struct EmbeddingOptions {
  std::string name;
  Initializer initializer = Initializer::uniform(0.05);
};
/// ids (i32 or i64) of any shape -> ids.shape + [dim]; table "{name}.kernel" [vocab, dim].
Layer embedding(const Layer& ids, std::int64_t vocab, std::int64_t dim,
                EmbeddingOptions options = {}, Loc loc = Loc::current());

struct LstmOptions {
  std::string name;
  /// Added to the forget gate's bias at initialisation (0 as in Axon; 1 is a common choice).
  double forget_bias = 0.0;
  Initializer kernel_initializer = Initializer::glorot_uniform();
  Initializer recurrent_initializer = Initializer::glorot_uniform();
  Initializer bias_initializer = Initializer::zeros();
};
struct LstmOutputs {
  Layer sequence;  ///< [B, S, units]: h after every step
  Layer h;         ///< [B, units]: the final hidden state
  Layer c;         ///< [B, units]: the final cell state
};
/// One LSTM layer over x [B, S, F] from a zero initial state, gates i, f, g, o. Parameters:
/// "{name}.input_kernel" [F, 4U], "{name}.hidden_kernel" [U, 4U] and "{name}.bias" [4U], with
/// gate blocks in the order i, f, g, o along the last axis.
LstmOutputs lstm(const Layer& x, std::int64_t units, LstmOptions options = {},
                 Loc loc = Loc::current());

/// x[:, index, ...] on `axis` (negative counts from the end), removing that axis; e.g. the last
/// position of a sequence: take_index(x, 1, -1).
struct TakeIndexOptions {
  std::string name;
};
Layer take_index(const Layer& x, std::int64_t axis, std::int64_t index,
                 TakeIndexOptions options = {}, Loc loc = Loc::current());

}  // namespace edifice::nn
