// libFuzzer target: the safetensors parser (header validation, offsets, dtypes incl. F16/BF16,
// checksums) on arbitrary bytes. Any input must give a file or an edifice::Error; crashes,
// sanitizer reports, leaks and memory beyond the limit are failures. Built by run_fuzz.sh.
#include <edifice/core/error.hpp>
#include <edifice/nn/safetensors.hpp>

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    edifice::nn::SafetensorsFile file = edifice::nn::parse_safetensors(bytes, "fuzz");
    // A loaded file never holds more than twice its size in tensor data (F16/BF16 widen).
    std::size_t total = 0;
    for (const auto& [name, t] : file.tensors) total += t.nbytes();
    if (total > 2 * size) std::abort();
    // What was read writes back and reads again.
    edifice::nn::parse_safetensors(edifice::nn::to_safetensors_bytes(file.tensors, file.metadata),
                                   "fuzz (rewritten)");
  } catch (const edifice::Error&) {
  }
  return 0;
}
