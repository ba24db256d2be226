// A dense ViT from outside read as our model's tensors (issue 12, "dense checkpoints in"): one
// of our run directories or dense checkpoints, a timm VisionTransformer state_dict, or a Hugging
// Face ViTForImageClassification with its config.json, every tensor checked against its shape.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "exfusion/io/safetensors.h"
#include "exfusion/models/vit.h"

namespace exfusion {

// kAuto: ours when the file's metadata holds our config, else by the tensors' names.
enum class DenseFormat { kAuto, kExfusion, kTimm, kHuggingFace };

// "auto", "exfusion", "timm" or "huggingface"; anything else is an InputError.
DenseFormat parse_dense_format(const std::string& name);
std::string dense_format_name(DenseFormat format);

struct DenseImport {
  DenseFormat format = DenseFormat::kAuto;  // the format read, never kAuto
  std::filesystem::path file;               // the safetensors file read
  VisionTransformerOptions options;         // the architecture, with dense FFNs
  NamedTensors tensors;                     // our names in the model's order, float32
  // The run config in the metadata of one of our checkpoints (its data normalisation, its
  // train section); null for timm and Hugging Face files, which hold none.
  nlohmann::json stored_config;
};

// Reads `source`: a .safetensors file, or a directory holding model.safetensors (else
// state.safetensors): one of our run directories, or a Hugging Face save_pretrained one.
//  - ours: a dense export, or a training state of a run with ffn.kind dense; the architecture
//    from the config in its metadata;
//  - timm: the architecture from the tensors' shapes; num_heads, which no shape holds, from
//    `model_patch` or else timm's for the standard widths (192: 3, 384: 6, 768: 12, 1024: 16);
//  - Hugging Face: the architecture from config.json beside the file (hidden_act gelu, qkv_bias),
//    query/key/value concatenated into attn.qkv.
// `model_patch` (model-section keys, as `--set model.key=value` gives them) is laid over what
// was read. Floating-point tensors are converted to float32. Throws InputError naming the file,
// the tensor and both shapes for each missing, unexpected or wrongly shaped tensor.
DenseImport load_dense_vit(const std::filesystem::path& source,
                           const nlohmann::json& model_patch = nlohmann::json::object(),
                           DenseFormat from = DenseFormat::kAuto);

}  // namespace exfusion
