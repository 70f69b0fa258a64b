#pragma once
// The codes a kernel writes to its status word (codegen/emitter.cpp) and the runtime turns
// into edifice::Errors (runtime.cpp). Free of LLVM, so both sides include it.

namespace edifice::jit {

enum StatusCode : int { kOk = 0, kIntegerDivisionByZero = 1, kIndexOutOfRange = 2 };

}  // namespace edifice::jit
