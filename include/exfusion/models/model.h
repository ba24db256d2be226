// What a model is to the trainer, evaluation, fuse, info and export: a module with a forward
// over a batch of inputs, and options behind a uniform face that say how to build it, its
// FLOPs, its FFN sites and the inputs one sample has. The ViT is one registered model
// (models/vit.h); another (Swin, a decoder LM) adds its files and one line in
// models/registry.cpp, its formats one line each (models/model_formats.h, export_formats.h).
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/models/ffn_config.h"

namespace exfusion {

// The name of our own checkpoint format among the import and export formats ("exfusion"): every
// model kind's, never registered.
inline constexpr const char* kOurFormat = "exfusion";

// Tensor names with their shapes.
using TensorShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

class ModelImpl : public torch::nn::Module {
 public:
  // The outputs (logits) for a batch of the model's one input: images, token ids.
  virtual torch::Tensor forward(const torch::Tensor& inputs) = 0;
};
using ModelPtr = std::shared_ptr<ModelImpl>;

// The capability of a model of two input sequences (an encoder-decoder such as T5): the encoder
// reads `inputs`, the decoder `decoder_inputs` (the targets shifted right), and the outputs are
// the decoder's logits. Its task feeds it through Task::forward; its one-input forward runs the
// encoder alone (its hidden states, as transformers' T5EncoderModel).
class EncoderDecoder {
 public:
  virtual ~EncoderDecoder() = default;
  virtual torch::Tensor forward_encoder_decoder(const torch::Tensor& inputs,
                                                const torch::Tensor& decoder_inputs) = 0;
};

int64_t count_parameters(const torch::nn::Module& module);
// The values of the tensors in `shapes` that lie in no FFN of `sites` (a model's
// parameters_outside_ffns from its dense_tensor_shapes and ffn_sites); a double, since a forged
// config's product can overflow int64.
double values_outside_ffns(const TensorShapes& shapes, const std::vector<FfnSite>& sites);
// Values a checkpoint of `module` stores: its parameters and its buffers (memory banks, the
// positions of sparse DeRS deltas).
int64_t count_stored_values(const torch::nn::Module& module);

// A model kind's options, type-erased. DeclaredModelOptions<Options> implements it for an
// options struct with declared fields (config/fields.h) and
//   ModelPtr build(const FfnConfig& ffn) const;
//   double forward_flops_per_sample(const FfnConfig& ffn) const;  // multiply-adds × 2
//   void validate_ffn(const FfnConfig& ffn, const config::Location& at) const;
//   std::vector<std::vector<int64_t>> input_shapes() const;  // one sample's inputs, each its
//                                                  // shape: {{C, H, W}}; {{L}}; an encoder-
//                                                  // decoder's {{L_in}, {L_out}}
//   int64_t num_outputs() const;                   // classes, or the vocabulary
//   std::vector<FfnSite> ffn_sites() const;        // every FFN: path, index, widths, rows per
//                                                  // sample, form (stages and stacks alike)
//   TensorShapes dense_tensor_shapes() const;      // the dense model's tensors, in module
//                                                  // order, without building it (imports)
//   double parameters_outside_ffns() const;  // embeddings, attention, norms, head: a checkpoint's
//                                            // config is checked against its size before build
class ModelOptions {
 public:
  virtual ~ModelOptions() = default;
  virtual std::shared_ptr<ModelOptions> clone() const = 0;
  virtual void apply(const nlohmann::json& patch, const config::Location& at,
                     const std::set<std::string>& handled) = 0;
  virtual nlohmann::json to_json() const = 0;
  virtual std::vector<config::FieldHelp> describe(const std::string& prefix) const = 0;
  virtual void validate(const config::Location& at) const = 0;
  virtual ModelPtr build(const FfnConfig& ffn) const = 0;
  virtual double forward_flops_per_sample(const FfnConfig& ffn) const = 0;
  virtual void validate_ffn(const FfnConfig& ffn, const config::Location& at) const = 0;
  virtual std::vector<std::vector<int64_t>> input_shapes() const = 0;
  virtual int64_t num_outputs() const = 0;
  virtual std::vector<FfnSite> ffn_sites() const = 0;
  virtual TensorShapes dense_tensor_shapes() const = 0;
  virtual double parameters_outside_ffns() const = 0;
};

template <class Options>
class DeclaredModelOptions final : public ModelOptions {
 public:
  explicit DeclaredModelOptions(Options options = {}) : options(std::move(options)) {}
  std::shared_ptr<ModelOptions> clone() const override {
    return std::make_shared<DeclaredModelOptions>(options);
  }
  void apply(const nlohmann::json& patch, const config::Location& at,
             const std::set<std::string>& handled) override {
    config::apply(options, patch, at, handled);
  }
  nlohmann::json to_json() const override { return config::to_json(options); }
  std::vector<config::FieldHelp> describe(const std::string& prefix) const override {
    return config::describe(options, prefix);
  }
  void validate(const config::Location& at) const override { options.validate(at); }
  ModelPtr build(const FfnConfig& ffn) const override { return options.build(ffn); }
  double forward_flops_per_sample(const FfnConfig& ffn) const override {
    return options.forward_flops_per_sample(ffn);
  }
  void validate_ffn(const FfnConfig& ffn, const config::Location& at) const override {
    options.validate_ffn(ffn, at);
  }
  std::vector<std::vector<int64_t>> input_shapes() const override { return options.input_shapes(); }
  int64_t num_outputs() const override { return options.num_outputs(); }
  std::vector<FfnSite> ffn_sites() const override { return options.ffn_sites(); }
  TensorShapes dense_tensor_shapes() const override { return options.dense_tensor_shapes(); }
  double parameters_outside_ffns() const override { return options.parameters_outside_ffns(); }

  Options options;
};

// The `model` section: {kind: vit, ...the kind's keys}; kind may be left out (vit).
struct ModelConfig {
  ModelConfig();  // the registry's default for "vit"
  template <class Options>
  static ModelConfig of(const std::string& kind, Options options) {
    ModelConfig config;
    config.kind = kind;
    config.options = std::make_shared<DeclaredModelOptions<Options>>(std::move(options));
    return config;
  }
  template <class Options>
  const Options* as() const {
    const auto* declared = dynamic_cast<const DeclaredModelOptions<Options>*>(options.get());
    return declared ? &declared->options : nullptr;
  }

  void apply(const nlohmann::json& patch, const config::Location& at);
  nlohmann::json to_json() const;
  void describe(std::vector<config::FieldHelp>& out, const std::string& prefix) const;

  std::string kind;
  std::shared_ptr<const ModelOptions> options;
};

// The model a config describes, initialised from the current torch seed.
ModelPtr build_model(const ModelConfig& model, const FfnConfig& ffn);

// The dense model `trained` fuses into: the same model with dense FFNs, its FFNs' dense forms
// and every other tensor copied. Throws InputError for an FFN without a dense form (MoE).
ModelPtr fuse_model(const ModelConfig& model, const ModelImpl& trained);

}  // namespace exfusion
