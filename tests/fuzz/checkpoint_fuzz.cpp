// libFuzzer target: training-checkpoint loading (safetensors parsing, then the checkpoint's own
// checks of every entry) on arbitrary bytes. Any input must give a TrainState or an
// edifice::Error. Built by run_fuzz.sh.
#include <edifice/core/error.hpp>
#include <edifice/nn/checkpoint.hpp>

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    edifice::nn::TrainState state = edifice::nn::parse_checkpoint(bytes, "fuzz");
    if (state.step() < 0 || state.loop.epoch < 0 || state.loop.cursor < 0) std::abort();
  } catch (const edifice::Error&) {
  }
  return 0;
}
