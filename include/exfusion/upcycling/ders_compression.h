// DeRS compression (SPEC §2): each expert bank's weights W_i become a shared base W_b plus a
// compressed delta Δ_i = W_i − W_b (sparse indices + values, or packed k-bit codes with a scale
// per output row), and the one decode that synthesises W_b + Δ̂_i wherever such a file is read.
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "exfusion/io/safetensors.h"
#include "exfusion/upcycling/upcycle.h"

namespace exfusion {

// A compressed file's kind (metadata exfusion.kind) and the key of its compression options.
inline constexpr const char* kDersCompressedKind = "ders-compressed";
inline constexpr const char* kDersMetadataKey = "exfusion.ders";
// Tensor prefixes of a compressed file: the model's other tensors stay under "model.".
inline constexpr const char* kDersBasePrefix = "ders_base.";
inline constexpr const char* kDersDeltaPrefix = "ders_delta.";

enum class DersMethod { kDrop, kTopk, kQuant };
DersMethod parse_ders_method(const std::string& name);  // InputError for another name
std::string to_string(DersMethod method);

struct DersOptions {
  DersMethod method = DersMethod::kTopk;
  double ratio = 0.5;  // drop, topk: the share p of each expert's Δ entries dropped, in [0, 1)
  int64_t bits = 8;    // quant: 8, 4, 2 or 1
  int64_t seed = 0;    // drop: which entries
  // Throws InputError for a ratio outside [0, 1) or bits other than 8, 4, 2, 1.
  void validate() const;
  nlohmann::json to_json() const;
  // Reads what to_json wrote (a compressed file's metadata); InputError naming `where`.
  static DersOptions from_json(const nlohmann::json& json, const std::string& where);
};

// One bank's compressed deltas. Sparse (drop, topk): `indices` [N, K] (int32 when every flat
// index out·in − 1 fits, else int64) into each expert's flattened [out·in] delta and `values`
// [N, K] float32, drop's already rescaled by 1/(1−p). Quant: `codes` [N, out, ⌈in·k/8⌉] uint8
// (8/k codes per byte, the first in the lowest bits), `scales` [N, out] float32.
struct CompressedDeltas {
  torch::Tensor indices, values;
  torch::Tensor codes, scales;
};

// Compresses `deltas` [N, out, in] by `options`. Drop keeps a random K = M − ⌊p·M⌋ of the M =
// out·in entries per expert (a permutation from `generator`), topk the K largest |Δ| (ties by
// torch::topk), both in ascending index order. Quant: k ≥ 2 codes q = round(Δ / s) (to nearest,
// ties to even) in [−(2^(k−1)−1), 2^(k−1)−1], stored offset by 2^(k−1)−1, with
// s = max|Δ_row| / (2^(k−1)−1); k = 1 stores the sign (1: Δ ≥ 0) with s = mean|Δ_row|, the
// scale that minimises the row's squared error for sign codes. A row of zeros gets s = 0.
CompressedDeltas compress_deltas(const torch::Tensor& deltas, const DersOptions& options,
                                 at::Generator& generator);

// Δ̂ [N, out, in] float32 from `compressed` (the plain reference decode). Throws InputError
// naming `where` when the tensors do not describe deltas of that shape (a damaged file).
torch::Tensor decompress_deltas(const CompressedDeltas& compressed, const DersOptions& options,
                                int64_t experts, int64_t out, int64_t in, const std::string& where);

// clang-tidy 14 flags the implicit members of a struct holding nlohmann::json; nothing here
// is declared noexcept or throws on a move.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct DersFile {
  NamedTensors tensors;   // "model.<name>" (all but the banks' weights), bases, deltas
  nlohmann::json report;  // per-bank base source, parameter and byte counts
};

// The compressed form of every expert bank's weight in `model` (MoE or ExFusion experts):
// W_b = `dense_base` at the bank's weight name ("blocks.0.mlp.fc1.weight") when it has it,
// else the mean of the experts. Biases and every other tensor are kept as they are.
// Throws InputError when a recorded base does not have the experts' shape, or `model` has no
// expert bank.
DersFile compress_model(const torch::nn::Module& model, const DenseTensors& dense_base,
                        const DersOptions& options);

// A compressed file's tensors as a training state's model tensors: each bank's weight
// "model.<bank>.weight" = W_b + Δ̂_i (in float32), the bases and deltas left out, everything
// else as stored. Throws InputError naming `path` for a damaged file.
std::map<std::string, torch::Tensor> synthesise_ders_tensors(const SafetensorsFile& file,
                                                             const std::filesystem::path& path);

}  // namespace exfusion
