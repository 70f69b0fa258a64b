#pragma once
/// \file
/// Reading and writing the Hugging Face safetensors format, byte-compatible with the reference
/// implementation (the `safetensors` Rust crate and its Python binding).
///
/// Layout of a file:
///
///     [8 bytes]  N, unsigned 64-bit little-endian: the header length
///     [N bytes]  UTF-8 JSON object, padded with spaces:
///                {"__metadata__":{"key":"value",...},              (optional)
///                 "name":{"dtype":"F32","shape":[2,3],"data_offsets":[BEGIN,END]}, ...}
///     [rest]     the data section: each tensor's elements, row-major, little-endian, at
///                [BEGIN, END) relative to the start of the data section (byte 8+N)
///
/// Dtypes: F32, F64, I32, I64 and U8 (Edifice's DType set). Other safetensors dtypes (F16,
/// BF16, BOOL, ...) are rejected on load with an error naming the dtype.
///
/// Writing is deterministic: the same tensors and metadata give byte-identical files whatever
/// order they were given in. The writer does what the reference writer does:
///  - tensors are laid out sorted by the reference's dtype rank, descending (I64, F64, F32, I32,
///    U8: the reference's enum order, which is increasing alignment), then by name (bytewise);
///    the header lists them in that same order. With the biggest elements first and the data
///    section starting at a multiple of 8, every tensor's data is aligned to its element size;
///  - the JSON is compact (no spaces), keys of each tensor entry in the order dtype, shape,
///    data_offsets, strings escaped as the reference's serde_json does (`"`, `\` and control
///    characters only; other characters are written as UTF-8);
///  - the header is padded with spaces to a multiple of 8 bytes;
///  - `__metadata__` comes first and is omitted when the metadata map is empty.
/// One deliberate difference: the reference keeps metadata in a hash map, so the order of
/// metadata keys in its output varies from run to run; Edifice writes them sorted (bytewise),
/// which keeps files with metadata reproducible too. Files without metadata, or with one
/// metadata key, are byte-identical to the reference writer's.
///
/// Reading validates the whole header before allocating anything from a size in the file, and
/// never allocates more than the file's size for tensor data: the header is checked to be at
/// most 100,000,000 bytes and to fit in the file, to be valid UTF-8 and valid JSON with unique
/// keys, every entry to have exactly the three fields with a known dtype, a shape of at most
/// kSafetensorsMaxRank integers in [0, 2^48-1] whose byte size does not overflow, and
/// data_offsets [BEGIN, END] with BEGIN <= END and END-BEGIN equal to that byte size; sorted by
/// offset, the tensors must tile the data section exactly (no gap, no overlap, no trailing
/// bytes: the reference's anti-polyglot rule). JSON whitespace around the object is accepted,
/// as the reference reader does. Every failure throws edifice::Error starting with the file
/// name and naming the tensor or key at fault, e.g.
/// `model.safetensors: tensor "layer_1.kernel": data_offsets [0,12] hold 12 bytes but shape
/// [2,2] of F32 needs 16`.
///
/// Tied weights (two names sharing one buffer) are written twice and load as two tensors.

#include <edifice/core/dtype.hpp>
#include <edifice/core/tensor.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace edifice::nn {

/// The contents of a safetensors file.
struct SafetensorsFile {
  /// Tensors by name.
  std::map<std::string, Tensor> tensors;
  /// The `__metadata__` string map (empty when the file has none).
  std::map<std::string, std::string> metadata;
};

/// Largest header accepted or written, in bytes (the reference's limit).
inline constexpr std::uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;
/// Largest extent (and shape entry) accepted: 2^48-1, the cap of the format's JSON schema.
inline constexpr std::uint64_t kSafetensorsMaxExtent = (std::uint64_t{1} << 48) - 1;
/// Largest rank accepted or written.
inline constexpr std::size_t kSafetensorsMaxRank = 16;
/// Longest tensor name accepted or written, in bytes.
inline constexpr std::size_t kSafetensorsMaxNameBytes = 64 * 1024;
/// Most tensors in one file.
inline constexpr std::size_t kSafetensorsMaxTensors = 1'000'000;

/// The safetensors dtype name of an Edifice dtype: "F32", "F64", "I32", "I64", "U8".
std::string_view safetensors_dtype_name(DType dtype);
/// The Edifice dtype for a safetensors dtype name, or nullopt if Edifice has none.
std::optional<DType> dtype_from_safetensors_name(std::string_view name);

/// Serialises tensors and metadata to the bytes of a safetensors file. Throws edifice::Error
/// if a name is "__metadata__", longer than kSafetensorsMaxNameBytes or not valid UTF-8, a
/// metadata key or value is not valid UTF-8, a rank or extent exceeds the limits above, or the
/// header would exceed kSafetensorsMaxHeaderBytes.
std::string to_safetensors_bytes(const std::map<std::string, Tensor>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});
/// Same, from a list (e.g. a model's parameters in declaration order, as a std::vector); the
/// order does not affect the output. Duplicate names are an error. (A span, not a vector, so
/// that a braced list such as `{{"w", t}}` unambiguously means the map overload.)
std::string to_safetensors_bytes(std::span<const std::pair<std::string, Tensor>> tensors,
                                 const std::map<std::string, std::string>& metadata = {});

/// Writes a safetensors file atomically (see atomic_file.hpp): a crash or an error leaves any
/// previous file at `path` intact. Same checks as to_safetensors_bytes, with messages starting
/// with `path`. Tensor data is written straight from the tensors, not copied into one buffer.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
void save_safetensors(const std::string& path,
                      std::span<const std::pair<std::string, Tensor>> tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// Reads and validates a safetensors file. Error messages start with `path`. The header is
/// validated before any tensor is allocated; tensor data is read straight into the tensors.
SafetensorsFile load_safetensors(const std::string& path);

/// Validates and decodes the bytes of a safetensors file held in memory. Error messages start
/// with `source_name`.
SafetensorsFile parse_safetensors(std::string_view bytes,
                                  std::string_view source_name = "<memory>");

}  // namespace edifice::nn
