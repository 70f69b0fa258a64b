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
/// Dtypes: F32, F64, I32, I64 and U8 (Edifice's DType set) load as they are; F16 and BF16 (the
/// dtypes of most published weights) load converted to f32, exactly (every half value, with
/// subnormals, infinities and NaN payloads' top bits, is an f32). Other safetensors dtypes
/// (BOOL, I8, F8_*, ...) are rejected on load with an error naming the dtype. On save, f32
/// tensors are stored as F16 or BF16 on request (SafetensorsWriteOptions), rounded to nearest
/// even.
///
/// Integrity: the writer stores an xxHash64 (seed 0) of each tensor's stored bytes in
/// `__metadata__` under kSafetensorsChecksumKey, as a JSON object {"name": "16 hex digits"}; the
/// reader verifies every tensor it reads against it and names the first tensor whose bytes do
/// not match. Files without that key (from other tools) load unchecked. The key is removed from
/// the metadata a load returns and is reserved on save.
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
/// which keeps files with metadata reproducible too. Files written without checksums
/// (SafetensorsWriteOptions::checksums = false) and without metadata, or with one metadata key,
/// are byte-identical to the reference writer's.
///
/// Reading validates the whole header before allocating anything from a size in the file, and
/// never allocates more than twice the file's size for tensor data (F16 and BF16 widen to f32): the
/// header is checked to be at most 100,000,000 bytes and to fit in the file, to be valid UTF-8 and
/// valid JSON with unique keys, every entry to have exactly the three fields with a known dtype, a
/// shape of at most kSafetensorsMaxRank integers in [0, 2^48-1] whose byte size does not overflow,
/// and data_offsets [BEGIN, END] with BEGIN <= END and END-BEGIN equal to that byte size; sorted by
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

/// `__metadata__` key of the per-tensor checksums (xxHash64 of each tensor's stored bytes).
inline constexpr std::string_view kSafetensorsChecksumKey = "edifice.xxh64";

/// 16-bit float formats a f32 tensor can be stored in.
enum class HalfFormat {
  f16,   ///< IEEE 754 binary16 ("F16"): 5 exponent bits, 10 mantissa bits
  bf16,  ///< bfloat16 ("BF16"): the top 16 bits of an f32
};

/// How to write a file.
struct SafetensorsWriteOptions {
  /// Store the checksums (see the file comment). Off: no key added, so a file is byte-identical
  /// to the reference writer's.
  bool checksums = true;
  /// Store every f32 tensor in this format (rounded to nearest even); nullopt keeps f32.
  std::optional<HalfFormat> f32_as;
  /// Per tensor name, overriding f32_as. Naming a tensor that is not f32 is an error; naming a
  /// tensor that is not there is an error too (a typo would silently keep f32).
  std::map<std::string, HalfFormat> store_as;
};

/// IEEE binary16 bits -> float, exact (subnormals, infinities, NaN with its payload).
float f16_bits_to_f32(std::uint16_t bits);
/// float -> binary16 bits, rounded to nearest even; overflow gives infinity, NaN stays NaN
/// (quiet, sign and top payload bits kept).
std::uint16_t f32_to_f16_bits(float value);
/// bfloat16 bits -> float, exact.
float bf16_bits_to_f32(std::uint16_t bits);
/// float -> bfloat16 bits, rounded to nearest even; NaN stays NaN (quiet, sign and top payload
/// bits kept).
std::uint16_t f32_to_bf16_bits(float value);

/// The safetensors dtype name of an Edifice dtype: "F32", "F64", "I32", "I64", "U8".
std::string_view safetensors_dtype_name(DType dtype);
/// The Edifice dtype for a safetensors dtype name, or nullopt if Edifice has none ("F16" and
/// "BF16" give nullopt: they have no Edifice dtype, and load converted to f32).
std::optional<DType> dtype_from_safetensors_name(std::string_view name);

/// Serialises tensors and metadata to the bytes of a safetensors file. Throws edifice::Error
/// if a name is "__metadata__", longer than kSafetensorsMaxNameBytes or not valid UTF-8, a
/// metadata key or value is not valid UTF-8 or is kSafetensorsChecksumKey, a rank or extent
/// exceeds the limits above, the header would exceed kSafetensorsMaxHeaderBytes, or `options`
/// asks for a half format for a tensor that is not f32 or not there.
std::string to_safetensors_bytes(const std::map<std::string, Tensor>& tensors,
                                 const std::map<std::string, std::string>& metadata = {},
                                 const SafetensorsWriteOptions& options = {});
/// Same, from a list (e.g. a model's parameters in declaration order, as a std::vector); the
/// order does not affect the output. Duplicate names are an error. (A span, not a vector, so
/// that a braced list such as `{{"w", t}}` unambiguously means the map overload.)
std::string to_safetensors_bytes(std::span<const std::pair<std::string, Tensor>> tensors,
                                 const std::map<std::string, std::string>& metadata = {},
                                 const SafetensorsWriteOptions& options = {});

/// Writes a safetensors file atomically (see atomic_file.hpp): a crash or an error leaves any
/// previous file at `path` intact. Same checks as to_safetensors_bytes, with messages starting
/// with `path`. Tensor data is written straight from the tensors (half formats from a converted
/// copy), not copied into one buffer.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      const SafetensorsWriteOptions& options = {});
void save_safetensors(const std::string& path,
                      std::span<const std::pair<std::string, Tensor>> tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      const SafetensorsWriteOptions& options = {});

/// Reads and validates a safetensors file. Error messages start with `path`. The header is
/// validated before any tensor is allocated; tensor data is read straight into the tensors
/// (F16 and BF16 through a buffer, then widened) and checked against the stored checksums.
SafetensorsFile load_safetensors(const std::string& path);

/// Validates and decodes the bytes of a safetensors file held in memory. Error messages start
/// with `source_name`.
SafetensorsFile parse_safetensors(std::string_view bytes,
                                  std::string_view source_name = "<memory>");

}  // namespace edifice::nn
