// Llama's Hugging Face directory, out and in (see llama_formats.h).
#include "exfusion/models/llama_formats.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "exfusion/fusion/moe.h"
#include "exfusion/models/hugging_face_config.h"
#include "exfusion/models/llama.h"
#include "exfusion/text/tokenizer.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;

namespace {

const LlamaOptions& llama_of(const ExportContext& context) {
  const auto* llama = context.model.as<LlamaOptions>();
  if (llama == nullptr) {
    throw std::logic_error("a Hugging Face Llama export given another model kind");
  }
  return *llama;
}

// config.json as LlamaConfig reads it (MixtralConfig too: its keys are a superset).
nlohmann::json llama_config(const LlamaOptions& llama) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", llama.vocab_size},
          {"hidden_size", llama.hidden_size},
          {"intermediate_size", llama.intermediate_size},
          {"num_hidden_layers", llama.num_hidden_layers},
          {"num_attention_heads", llama.num_attention_heads},
          {"num_key_value_heads", llama.num_key_value_heads},
          {"head_dim", llama.head_width()},
          {"hidden_act", "silu"},
          {"max_position_embeddings", llama.max_position_embeddings},
          {"rms_norm_eps", llama.rms_norm_eps},
          {"rope_theta", llama.rope_theta},
          {"rope_scaling", nullptr},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"attention_dropout", 0.0},
          {"initializer_range", llama.initializer_range},
          {"tie_word_embeddings", llama.tie_word_embeddings},
          {"use_cache", true},
          {"dtype", "float32"}};
}

// config.json, generation_config.json and, where the run's tokenizer still lies where the run
// read it, that SentencePiece model as tokenizer.model (LlamaTokenizer's file), its EOS (and
// pad) ids in both configs.
std::vector<DescriptionFile> hugging_face_files(nlohmann::json config,
                                                const ExportContext& context) {
  nlohmann::json generation = nlohmann::json::object();
  std::vector<DescriptionFile> files;
  const auto tokenizer = context.run_config.value("/data/tokenizer"_json_pointer, std::string());
  if (!tokenizer.empty() && fs::is_regular_file(tokenizer)) {
    const Tokenizer pieces(tokenizer, 0);
    config["eos_token_id"] = generation["eos_token_id"] = pieces.eos_id();
    if (pieces.pad_id() >= 0) config["pad_token_id"] = generation["pad_token_id"] = pieces.pad_id();
    std::ifstream in(tokenizer, std::ios::binary);
    files.push_back({"tokenizer.model", std::string(std::istreambuf_iterator<char>(in), {})});
  }
  files.push_back({"config.json", config.dump(2) + "\n"});
  files.push_back({"generation_config.json", generation.dump(2) + "\n"});
  return files;
}

}  // namespace

std::vector<DescriptionFile> HuggingFaceLlamaExport::description_files(
    const ExportContext& context) const {
  return hugging_face_files(llama_config(llama_of(context)), context);
}

void HuggingFaceMixtralExport::check(const FfnConfig& ffn, int64_t sites) const {
  const auto* moe = ffn.as<MoeOptions>();
  if (moe == nullptr || ffn.kind != "moe") {
    throw InputError("ffn.kind = " + ffn.kind +
                     ": a Mixtral export is written from a top-k mixture of experts (ffn.kind "
                     "moe); a fusing kind exports a dense Llama (exfusion fuse)");
  }
  for (int64_t block = 0; block < sites; ++block) {
    if (!ffn.replaces(block)) {
      throw InputError("ffn.layers leaves block " + std::to_string(block) +
                       " dense: Mixtral has a mixture of experts in every layer (ffn.layers: [] "
                       "for all)");
    }
  }
  if (moe->top_k() == 1 && !moe->renormalize_top1()) {
    throw InputError(
        "ffn.top_k = 1 with renormalize_top1 false: Mixtral renormalises its top-k gates, so "
        "its one gate is 1, where this model scales by the router's probability (train with "
        "ffn.renormalize_top1 true)");
  }
}

NamedTensors HuggingFaceMixtralExport::tensors(const NamedTensors& ours) const {
  // Our MoE FFN at model.layers.L.mlp stacks its experts: gate_proj/up_proj [E, F, D],
  // down_proj [E, D, F], router [E, D]. The Hub's Mixtral checkpoints (what transformers'
  // conversion mapping and vLLM and llama.cpp's converters read) keep one matrix per expert:
  // block_sparse_moe.experts.i.w1 (gate), w3 (up), w2 (down), and the router as
  // block_sparse_moe.gate.
  static const std::string mlp = ".mlp.";
  static const std::vector<std::pair<std::string, std::string>> experts = {
      {"gate_proj.weight", "w1.weight"},
      {"up_proj.weight", "w3.weight"},
      {"down_proj.weight", "w2.weight"}};
  NamedTensors out;
  for (const auto& [name, tensor] : ours) {
    const auto at = name.find(mlp);
    if (at == std::string::npos) {
      out.emplace_back(name, tensor);
      continue;
    }
    const auto block = name.substr(0, at) + ".block_sparse_moe.";
    const auto leaf = name.substr(at + mlp.size());
    if (leaf == "router.weight") {
      out.emplace_back(block + "gate.weight", tensor);
      continue;
    }
    const auto expert = std::find_if(experts.begin(), experts.end(),
                                     [&](const auto& pair) { return pair.first == leaf; });
    if (expert == experts.end()) {
      throw std::logic_error("the Mixtral export met an FFN tensor it does not know: " + name);
    }
    for (int64_t i = 0; i < tensor.size(0); ++i) {
      out.emplace_back(block + "experts." + std::to_string(i) + "." + expert->second,
                       tensor[i].contiguous());
    }
  }
  return out;
}

std::vector<DescriptionFile> HuggingFaceMixtralExport::description_files(
    const ExportContext& context, const FfnConfig& ffn) const {
  const auto* moe = ffn.as<MoeOptions>();
  if (moe == nullptr) throw std::logic_error("a Mixtral export given another FFN kind");
  auto config = llama_config(llama_of(context));
  config["architectures"] = {"MixtralForCausalLM"};
  config["model_type"] = "mixtral";
  config.erase("mlp_bias");
  config.erase("attention_bias");
  config["num_local_experts"] = moe->num_experts();
  config["num_experts_per_tok"] = moe->top_k();
  config["router_aux_loss_coef"] = moe->aux_loss_coef();
  config["output_router_logits"] = false;
  config["router_jitter_noise"] = 0.0;
  config["sliding_window"] = nullptr;
  return hugging_face_files(config, context);
}

ForeignArchitecture HuggingFaceLlamaFormat::architecture(
    const SafetensorsFile& /*file*/, const fs::path& path,
    const nlohmann::json& /*model_patch*/) const {
  const auto config_path = path.parent_path() / "config.json";
  const HuggingFaceConfig config(config_path, path, "a LlamaConfig");
  config.expect("model_type", "llama",
                "a LlamaForCausalLM (supported architectures: LlamaForCausalLM)");
  config.expect("hidden_act", "silu", "Llama's SwiGLU FFN");
  if (config.contains("attention_bias")) {
    config.expect("attention_bias", false, "Llama's attention without biases");
  }
  if (config.contains("mlp_bias")) config.expect("mlp_bias", false, "Llama's FFN without biases");
  if (config.contains("rope_scaling")) {
    config.expect("rope_scaling", nullptr, "plain rotary embeddings (no rope scaling)");
  }
  const LlamaOptions defaults;
  // transformers 4 writes rope_theta (and rope_scaling), transformers 5 rope_parameters.
  auto theta = config.number("rope_theta", defaults.rope_theta);
  if (config.contains("rope_parameters") && config.json()["rope_parameters"].is_object()) {
    const auto& rope = config.json()["rope_parameters"];
    const auto type = rope.value("rope_type", std::string("default"));
    if (type != "default") {
      throw InputError(config_path.string() + ": rope_parameters.rope_type = \"" + type +
                       "\": expected default (plain rotary embeddings; no rope scaling)");
    }
    theta = rope.value("rope_theta", theta);
  }
  const auto heads = config.integer("num_attention_heads", defaults.num_attention_heads);
  nlohmann::json model = {
      {"kind", "llama"},
      {"vocab_size", config.integer("vocab_size", defaults.vocab_size)},
      {"hidden_size", config.integer("hidden_size", defaults.hidden_size)},
      {"intermediate_size", config.integer("intermediate_size", defaults.intermediate_size)},
      {"num_hidden_layers", config.integer("num_hidden_layers", defaults.num_hidden_layers)},
      {"num_attention_heads", heads},
      {"num_key_value_heads", config.integer("num_key_value_heads", heads)},
      {"rms_norm_eps", config.number("rms_norm_eps", defaults.rms_norm_eps)},
      {"rope_theta", theta},
      {"max_position_embeddings",
       config.integer("max_position_embeddings", defaults.max_position_embeddings)},
      {"initializer_range", config.number("initializer_range", defaults.initializer_range)},
      {"tie_word_embeddings", config.json().value("tie_word_embeddings", false)}};
  // The training length is ours, not the checkpoint's: the default where the model takes it.
  model["sequence_length"] =
      std::min(defaults.sequence_length, model["max_position_embeddings"].get<int64_t>());
  if (config.contains("head_dim") && !config.json()["head_dim"].is_null()) {
    model["head_dim"] = config.integer("head_dim", 0);
  }
  return {model, config_path.string(), "its config " + config_path.string() + " describes"};
}

nlohmann::json HuggingFaceLlamaFormat::run_defaults(const fs::path& file) const {
  nlohmann::json defaults = {{"task", "causal_lm"}};
  const auto tokenizer = file.parent_path() / "tokenizer.model";
  if (fs::is_regular_file(tokenizer)) {
    defaults["data"] = {{"tokenizer", fs::absolute(tokenizer).lexically_normal().string()}};
  }
  return defaults;
}

bool HuggingFaceLlamaFormat::ignored(const std::string& name) const {
  const std::string buffer = "rotary_emb.inv_freq";
  return name.size() >= buffer.size() &&
         name.compare(name.size() - buffer.size(), buffer.size(), buffer) == 0;
}

}  // namespace exfusion
