// Writes the seed corpora of the fuzz targets (committed under corpus/): small valid files
// that reach every part of the parsers. Run by `run_fuzz.sh --make-seeds`.
#include <edifice/nn/checkpoint.hpp>
#include <edifice/nn/safetensors.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

using namespace edifice;

namespace {

void write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  std::printf("%s (%zu bytes)\n", path.c_str(), bytes.size());
}

std::map<std::string, Tensor> small_tensors() {
  return {{"w", Tensor::from_vector<float>({2, 2}, {1.0f, -2.0f, 0x1p-24f, INFINITY})},
          {"b", Tensor::from_vector<double>({1}, {0.5})},
          {"i", Tensor::from_vector<std::int32_t>({3}, {1, -2, 3})},
          {"l", Tensor::from_vector<std::int64_t>({}, {7})},
          {"u", Tensor::from_vector<std::uint8_t>({2}, {0, 255})},
          {"h", Tensor::from_vector<float>({2}, {0.333f, NAN})},
          {"e", Tensor(DType::f32, {0, 3})}};
}

nn::TrainState small_state() {
  nn::TrainState s;
  s.params["dense.kernel"] = Tensor::from_vector<float>({2, 1}, {0.25f, -0.5f});
  s.params["dense.bias"] = Tensor::from_vector<float>({1}, {0.125f});
  s.optimizer["adam.m.dense.kernel"] = Tensor::from_vector<float>({2, 1}, {0.01f, 0.02f});
  s.optimizer["adam.v.dense.kernel"] = Tensor::from_vector<float>({2, 1}, {0.001f, 0.002f});
  s.optimizer["step"] = Tensor::from_vector<std::int64_t>({}, {3});
  s.loop.epoch = 1;
  s.loop.cursor = 2;
  s.loop.data_seed = 11;
  s.loop.dropout_seed = 12;
  s.loop.dropout_counter = 3;
  s.loop.running_sums = {1.5, 0.75};
  s.loop.running_count = 8;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SAFETENSORS_CORPUS_DIR CHECKPOINT_CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::string st = argv[1], ck = argv[2];
  auto t = small_tensors();
  write(st + "/checksums.safetensors", nn::to_safetensors_bytes(t, {{"format", "pt"}}));
  write(st + "/plain.safetensors", nn::to_safetensors_bytes(t, {}, {.checksums = false}));
  write(st + "/half.safetensors",
        nn::to_safetensors_bytes(
            t, {}, {.f32_as = nn::HalfFormat::bf16, .store_as = {{"h", nn::HalfFormat::f16}}}));
  write(st + "/empty.safetensors", nn::to_safetensors_bytes(std::map<std::string, Tensor>{}));
  const std::string path = ck + "/checkpoint.safetensors";
  nn::save_checkpoint(path, small_state(), {.config = R"({"units":1})", .optimizer = ""});
  std::printf("%s\n", path.c_str());
  // The same without checksums (as another tool would re-save it): mutations of its data reach
  // the checkpoint's own checks instead of stopping at a checksum.
  std::ifstream in(path, std::ios::binary);
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  nn::SafetensorsFile file = nn::parse_safetensors(bytes);
  write(ck + "/checkpoint_plain.safetensors",
        nn::to_safetensors_bytes(file.tensors, file.metadata, {.checksums = false}));
  return 0;
}
