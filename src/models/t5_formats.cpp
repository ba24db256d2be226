// T5's Hugging Face directory, out and in (see t5_formats.h).
#include "exfusion/models/t5_formats.h"

#include <fstream>
#include <iterator>
#include <stdexcept>

#include "exfusion/models/hugging_face_config.h"
#include "exfusion/models/t5.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;

std::vector<DescriptionFile> HuggingFaceT5Export::description_files(
    const ExportContext& context) const {
  const auto* t5 = context.model.as<T5Options>();
  if (t5 == nullptr) throw std::logic_error("the Hugging Face T5 export given another model kind");
  // T5 v1.1 as T5Config states it: gated GELU (tanh), untied lm_head; the ids are the tokenizer's
  // that `exfusion tokenizer train` writes and T5's spiece.model has (pad 0, EOS 1).
  const nlohmann::json config = {
      {"architectures", {"T5ForConditionalGeneration"}},
      {"model_type", "t5"},
      {"vocab_size", t5->vocab_size},
      {"d_model", t5->d_model},
      {"d_kv", t5->d_kv},
      {"d_ff", t5->d_ff},
      {"num_layers", t5->num_layers},
      {"num_decoder_layers", t5->num_decoder_layers},
      {"num_heads", t5->num_heads},
      {"relative_attention_num_buckets", t5->relative_attention_num_buckets},
      {"relative_attention_max_distance", t5->relative_attention_max_distance},
      {"dropout_rate", t5->dropout_rate},
      {"layer_norm_epsilon", t5->layer_norm_epsilon},
      {"initializer_factor", 1.0},
      {"feed_forward_proj", "gated-gelu"},
      {"is_encoder_decoder", true},
      {"tie_word_embeddings", false},
      {"use_cache", true},
      {"pad_token_id", 0},
      {"eos_token_id", 1},
      {"decoder_start_token_id", 0},
      {"dtype", "float32"}};
  const nlohmann::json generation = {
      {"decoder_start_token_id", 0}, {"eos_token_id", 1}, {"pad_token_id", 0}};
  std::vector<DescriptionFile> files{{"config.json", config.dump(2) + "\n"},
                                     {"generation_config.json", generation.dump(2) + "\n"}};
  // The run's tokenizer as transformers' T5Tokenizer reads it, where it still lies where the
  // run read it.
  const auto tokenizer = context.run_config.value("/data/tokenizer"_json_pointer, std::string());
  if (!tokenizer.empty() && fs::is_regular_file(tokenizer)) {
    std::ifstream in(tokenizer, std::ios::binary);
    files.push_back({"spiece.model", std::string(std::istreambuf_iterator<char>(in), {})});
  }
  return files;
}

ForeignArchitecture HuggingFaceT5Format::architecture(const SafetensorsFile& /*file*/,
                                                      const fs::path& path,
                                                      const nlohmann::json& /*model_patch*/) const {
  const auto config_path = path.parent_path() / "config.json";
  const HuggingFaceConfig config(config_path, path, "a T5Config");
  config.expect("model_type", "t5", "a T5ForConditionalGeneration");
  config.expect("feed_forward_proj", "gated-gelu",
                "T5 v1.1's gated-GELU FFN; the original T5's ReLU FFN is not one of our models");
  // The original T5 scales the decoder's output by d_model^-1/2 before lm_head, v1.1 does not.
  // transformers 4 wrote that as tie_word_embeddings (false for v1.1); transformers 5 always ties
  // and writes scale_decoder_outputs.
  if (config.contains("scale_decoder_outputs")) {
    config.expect("scale_decoder_outputs", false,
                  "T5 v1.1's unscaled decoder output; the original T5's scaling is not ours");
  } else {
    config.expect("tie_word_embeddings", false,
                  "T5 v1.1's untied lm_head; the original T5's tied and scaled one is not ours");
  }
  const T5Options defaults;
  const auto num_layers = config.integer("num_layers", 6);
  nlohmann::json model = {
      {"kind", "t5"},
      {"vocab_size", config.integer("vocab_size", defaults.vocab_size)},
      {"d_model", config.integer("d_model", 512)},
      {"d_kv", config.integer("d_kv", 64)},
      {"d_ff", config.integer("d_ff", 2048)},
      {"num_layers", num_layers},
      {"num_decoder_layers", config.integer("num_decoder_layers", num_layers)},
      {"num_heads", config.integer("num_heads", 8)},
      {"relative_attention_num_buckets", config.integer("relative_attention_num_buckets", 32)},
      {"relative_attention_max_distance", config.integer("relative_attention_max_distance", 128)},
      {"layer_norm_epsilon", config.number("layer_norm_epsilon", 1e-6)},
      {"dropout_rate", config.number("dropout_rate", 0.1)}};
  return {model, config_path.string(), "its config " + config_path.string() + " describes"};
}

bool HuggingFaceT5Format::ignored(const std::string& name) const {
  return name == "encoder.embed_tokens.weight" || name == "decoder.embed_tokens.weight";
}

}  // namespace exfusion
