// Llama's Hugging Face formats, registered for model kind "llama" in models/registry.cpp.
// Export: a directory LlamaForCausalLM.from_pretrained reads (config.json as LlamaConfig,
// generation_config.json, the run's SentencePiece model as tokenizer.model), beside weights
// whose names are already Hugging Face's. Import: such a directory (a model.safetensors with its
// config.json), the architecture from the config; what is not a plain Llama (biases in the
// attention or the FFN, another activation, rope scaling) is refused by name. A Llama whose FFNs
// are top-k mixtures leaves as a MixtralForCausalLM directory in the Hub's layout.
#pragma once
#include <string>
#include <vector>

#include "exfusion/models/export_formats.h"
#include "exfusion/models/mixture_export.h"
#include "exfusion/models/model_formats.h"

namespace exfusion {

class HuggingFaceLlamaExport : public ExportFormat {
 public:
  // Its own directory: Hugging Face's config.json would clash with a run's.
  std::string directory() const override { return "hf"; }
  std::vector<DescriptionFile> description_files(const ExportContext& context) const override;
};

// A Llama with a top-k mixture of experts in every layer as the Hub's Mixtral checkpoints lay it
// out (block_sparse_moe.gate, block_sparse_moe.experts.i.w1/w2/w3: what transformers' conversion
// mapping, vLLM and llama.cpp's converters read), with a MixtralConfig.
class HuggingFaceMixtralExport : public MixtureExportFormat {
 public:
  std::string directory() const override { return "hf"; }
  void check(const FfnConfig& ffn, int64_t sites) const override;
  NamedTensors tensors(const NamedTensors& ours) const override;
  std::vector<DescriptionFile> description_files(const ExportContext& context,
                                                 const FfnConfig& ffn) const override;
};

class HuggingFaceLlamaFormat : public ImportFormat {
 public:
  std::string signature() const override { return "model.layers.0.self_attn.q_proj.weight"; }
  ForeignArchitecture architecture(const SafetensorsFile& file, const std::filesystem::path& path,
                                   const nlohmann::json& model_patch) const override;
  std::vector<std::string> names_in_file(const std::string& ours) const override { return {ours}; }
  // The rotary frequencies older transformers saved as buffers.
  bool ignored(const std::string& name) const override;
  // task causal_lm, and the directory's tokenizer.model (LlamaTokenizer's) as data.tokenizer.
  nlohmann::json run_defaults(const std::filesystem::path& file) const override;
};

}  // namespace exfusion
