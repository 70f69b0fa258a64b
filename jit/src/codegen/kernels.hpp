#pragma once
// One emitter per kernel kind. Each writes the body of a kernel function: the code for work
// items [args.begin, args.end) of `kernel` (see work_items in ../work_items.hpp for what an
// item is per kind). Buffers come from `expr.buffer(value)`.

#include "expression.hpp"

namespace edifice::jit::codegen {

// loop_kernels.cpp
void emit_loop(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel, const KernelArgs& args);
void emit_reduce(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel, const KernelArgs& args);
void emit_scatter_add(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel,
                      const KernelArgs& args);

// gemm.cpp: dot_general in the canonical layouts of ../gemm_layout.hpp, with the kernel's
// elementwise epilogue applied to each output element before it is stored.
void emit_gemm(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel, const KernelArgs& args);

// structured_kernels.cpp
void emit_softmax(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel,
                  const KernelArgs& args);
void emit_layer_norm(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel,
                     const KernelArgs& args);
void emit_layer_norm_backward(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel,
                              const KernelArgs& args);
// attention_row_kernels.cpp (tiled nodes continue in attention_tile_kernels.cpp)
void emit_attention(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel,
                    const KernelArgs& args);
void emit_attention_backward(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel,
                             const KernelArgs& args);
// lstm_kernels.cpp
void emit_lstm_scan(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel,
                    const KernelArgs& args);
void emit_lstm_scan_backward(Emitter& e, ExpressionEmitter& expr, const Kernel& kernel,
                             const KernelArgs& args);

}  // namespace edifice::jit::codegen
