// Llama's Hugging Face directory, out and in (see llama_formats.h).
#include "exfusion/models/llama_formats.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "exfusion/models/hugging_face_config.h"
#include "exfusion/models/llama.h"
#include "exfusion/text/tokenizer.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;

std::vector<DescriptionFile> HuggingFaceLlamaExport::description_files(
    const ExportContext& context) const {
  const auto* llama = context.model.as<LlamaOptions>();
  if (llama == nullptr) {
    throw std::logic_error("the Hugging Face Llama export given another model kind");
  }
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"vocab_size", llama->vocab_size},
                           {"hidden_size", llama->hidden_size},
                           {"intermediate_size", llama->intermediate_size},
                           {"num_hidden_layers", llama->num_hidden_layers},
                           {"num_attention_heads", llama->num_attention_heads},
                           {"num_key_value_heads", llama->num_key_value_heads},
                           {"head_dim", llama->head_width()},
                           {"hidden_act", "silu"},
                           {"max_position_embeddings", llama->max_position_embeddings},
                           {"rms_norm_eps", llama->rms_norm_eps},
                           {"rope_theta", llama->rope_theta},
                           {"rope_scaling", nullptr},
                           {"attention_bias", false},
                           {"mlp_bias", false},
                           {"attention_dropout", 0.0},
                           {"initializer_range", llama->initializer_range},
                           {"tie_word_embeddings", llama->tie_word_embeddings},
                           {"use_cache", true},
                           {"dtype", "float32"}};
  nlohmann::json generation = nlohmann::json::object();
  std::vector<DescriptionFile> files;
  // The run's tokenizer as transformers' LlamaTokenizer reads it, where it still lies where the
  // run read it; its EOS (and pad) ids go into both configs.
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

bool HuggingFaceLlamaFormat::ignored(const std::string& name) const {
  const std::string buffer = "rotary_emb.inv_freq";
  return name.size() >= buffer.size() &&
         name.compare(name.size() - buffer.size(), buffer.size(), buffer) == 0;
}

}  // namespace exfusion
