// Run configuration <-> JSON (see run_config.h).
#include "exfusion/train/run_config.h"

#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "exfusion/util/error.h"

namespace exfusion {
namespace {

using nlohmann::json;

// Reads one JSON object field by field, checking types and naming `source` and the dotted
// key in every error.
class FieldReader {
 public:
  FieldReader(const json& object, std::string source, std::string prefix)
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {
    if (!object_.is_object()) fail("", "an object");
  }

  template <typename T>
  void read(const char* key, T& out) const {
    if (!object_.contains(key)) return;
    const auto& value = object_.at(key);
    if constexpr (std::is_same_v<T, bool>) {
      if (!value.is_boolean()) fail(key, "true or false");
    } else if constexpr (std::is_integral_v<T>) {
      if (!value.is_number_integer()) fail(key, "an integer");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!value.is_number()) fail(key, "a number");
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!value.is_string()) fail(key, "a string");
    } else {
      if (!value.is_array()) fail(key, "a list");
      for (const auto& item : value) {
        if (!item.is_number()) fail(key, "a list of numbers");
      }
    }
    out = value.get<T>();
  }

  FieldReader section(const char* key) const {
    static const json kEmpty = json::object();
    return FieldReader(object_.contains(key) ? object_.at(key) : kEmpty, source_,
                       prefix_ + key + ".");
  }

  [[noreturn]] void fail(const std::string& key, const std::string& expected) const {
    const auto& value = key.empty() ? object_ : object_.at(key);
    throw InputError(source_ + ": " + prefix_ + key + " = " + value.dump() + ": expected " +
                     expected);
  }

 private:
  const json& object_;
  std::string source_, prefix_;
};

std::string router_name(bool per_set) { return per_set ? "per-set" : "shared"; }

}  // namespace

RunConfig default_run_config() {
  RunConfig config;
  auto& model = config.model;
  model.img_size = 28;
  model.in_chans = 1;
  model.patch_size = 7;
  model.embed_dim = 128;
  model.depth = 4;
  model.num_heads = 4;
  model.mlp_ratio = 2.0;
  model.num_classes = 10;
  model.ffn.kind = FfnKind::kExFusion;
  model.ffn.exfusion.variant(FusionVariant::kMemoryBank).num_experts(4).momentum(0.95);
  return config;
}

json default_run_config_json() { return to_json(default_run_config()); }

json model_to_json(const VisionTransformerOptions& model) {
  const auto& ex = model.ffn.exfusion;
  const auto& moe = model.ffn.moe;
  const bool is_moe = model.ffn.kind == FfnKind::kMoE;
  return json{{"model",
               {{"img_size", model.img_size},
                {"in_chans", model.in_chans},
                {"patch_size", model.patch_size},
                {"embed_dim", model.embed_dim},
                {"depth", model.depth},
                {"num_heads", model.num_heads},
                {"mlp_ratio", model.mlp_ratio},
                {"num_classes", model.num_classes}}},
              {"ffn",
               {{"kind", to_string(model.ffn.kind)},
                {"variant", to_string(ex.variant())},
                {"num_experts", is_moe ? moe.num_experts() : ex.num_experts()},
                {"momentum", ex.momentum()},
                {"bank_init", ex.bank_init()},
                {"router", router_name(ex.router_per_set())},
                {"expert_init", to_string(ex.expert_init())},
                {"expert_noise_std", ex.expert_noise_std()},
                {"top_k", moe.top_k()},
                {"capacity_factor", moe.capacity_factor()},
                {"aux_loss_coef", moe.aux_loss_coef()},
                {"layers", model.ffn.layers}}}};
}

json to_json(const RunConfig& config) {
  auto out = model_to_json(config.model);
  const auto& d = config.data;
  out["data"] = {{"dir", d.dir},
                 {"train_images", d.train_images},
                 {"train_labels", d.train_labels},
                 {"test_images", d.test_images},
                 {"test_labels", d.test_labels},
                 {"augment", d.augment},
                 {"crop_padding", d.crop_padding},
                 {"horizontal_flip", d.horizontal_flip},
                 {"mean", d.mean},
                 {"std", d.std},
                 {"prefetch", d.prefetch}};
  const auto& t = config.train;
  out["train"] = {{"epochs", t.epochs},
                  {"max_steps", t.max_steps},
                  {"batch_size", t.batch_size},
                  {"lr", t.lr},
                  {"min_lr", t.min_lr},
                  {"warmup_epochs", t.warmup_epochs},
                  {"weight_decay", t.weight_decay},
                  {"label_smoothing", t.label_smoothing},
                  {"clip_grad", t.clip_grad},
                  {"seed", t.seed},
                  {"log_every", t.log_every},
                  {"device", t.device},
                  {"precision", t.precision},
                  {"threads", t.threads},
                  {"expert_kernels", t.expert_kernels},
                  {"layer_norm_kernels", t.layer_norm_kernels},
                  {"bias_grad_epilogue", t.bias_grad_epilogue},
                  {"cuda_graph", t.cuda_graph}};
  return out;
}

VisionTransformerOptions model_from_json(const json& json_config, const std::string& source) {
  VisionTransformerOptions model;
  const FieldReader root(json_config, source, "");
  const auto m = root.section("model");
  m.read("img_size", model.img_size);
  m.read("in_chans", model.in_chans);
  m.read("patch_size", model.patch_size);
  m.read("embed_dim", model.embed_dim);
  m.read("depth", model.depth);
  m.read("num_heads", model.num_heads);
  m.read("mlp_ratio", model.mlp_ratio);
  m.read("num_classes", model.num_classes);

  const auto f = root.section("ffn");
  std::string kind = "dense", variant = "mb", router = "shared", expert_init = "independent";
  int64_t experts = 4, top_k = 2;
  double momentum = 0.95, bank_init = 0.0, noise_std = 1e-3, capacity_factor = 1.25,
         aux_loss_coef = 0.01;
  f.read("kind", kind);
  f.read("variant", variant);
  f.read("num_experts", experts);
  f.read("momentum", momentum);
  f.read("bank_init", bank_init);
  f.read("router", router);
  f.read("expert_init", expert_init);
  f.read("expert_noise_std", noise_std);
  f.read("top_k", top_k);
  f.read("capacity_factor", capacity_factor);
  f.read("aux_loss_coef", aux_loss_coef);
  f.read("layers", model.ffn.layers);
  if (kind == "dense") {
    model.ffn.kind = FfnKind::kDense;
  } else if (kind == "exfusion") {
    model.ffn.kind = FfnKind::kExFusion;
  } else if (kind == "moe") {
    model.ffn.kind = FfnKind::kMoE;
  } else {
    throw InputError(source + ": ffn.kind = \"" + kind + "\": expected dense, exfusion or moe");
  }
  if (router != "shared" && router != "per-set") {
    throw InputError(source + ": ffn.router = \"" + router + "\": expected shared or per-set");
  }
  try {
    model.ffn.exfusion.variant(parse_fusion_variant(variant))
        .num_experts(experts)
        .momentum(momentum)
        .bank_init(bank_init)
        .router_per_set(router == "per-set")
        .expert_init(parse_expert_init(expert_init))
        .expert_noise_std(noise_std);
    model.ffn.moe.num_experts(experts)
        .top_k(top_k)
        .capacity_factor(capacity_factor)
        .aux_loss_coef(aux_loss_coef);
    model.validate();
  } catch (const InputError& error) {
    throw InputError(source + ": " + error.what());
  }
  return model;
}

RunConfig run_config_from_json(const json& json_config, const std::string& source) {
  RunConfig config;
  config.model = model_from_json(json_config, source);
  const FieldReader root(json_config, source, "");
  const auto d = root.section("data");
  auto& data = config.data;
  d.read("dir", data.dir);
  d.read("train_images", data.train_images);
  d.read("train_labels", data.train_labels);
  d.read("test_images", data.test_images);
  d.read("test_labels", data.test_labels);
  d.read("augment", data.augment);
  d.read("crop_padding", data.crop_padding);
  d.read("horizontal_flip", data.horizontal_flip);
  d.read("mean", data.mean);
  d.read("std", data.std);
  d.read("prefetch", data.prefetch);
  const auto t = root.section("train");
  auto& train = config.train;
  t.read("epochs", train.epochs);
  t.read("max_steps", train.max_steps);
  t.read("batch_size", train.batch_size);
  t.read("lr", train.lr);
  t.read("min_lr", train.min_lr);
  t.read("warmup_epochs", train.warmup_epochs);
  t.read("weight_decay", train.weight_decay);
  t.read("label_smoothing", train.label_smoothing);
  t.read("clip_grad", train.clip_grad);
  t.read("seed", train.seed);
  t.read("log_every", train.log_every);
  t.read("device", train.device);
  t.read("precision", train.precision);
  t.read("threads", train.threads);
  t.read("expert_kernels", train.expert_kernels);
  t.read("layer_norm_kernels", train.layer_norm_kernels);
  t.read("bias_grad_epilogue", train.bias_grad_epilogue);
  t.read("cuda_graph", train.cuda_graph);

  const auto positive = [&](const char* key, int64_t value) {
    if (value < 1) t.fail(key, "at least 1");
  };
  positive("epochs", train.epochs);
  positive("batch_size", train.batch_size);
  positive("log_every", train.log_every);
  if (train.max_steps < 0) t.fail("max_steps", "0 (no limit) or a positive step count");
  if (!(train.lr > 0)) t.fail("lr", "a positive learning rate");
  if (train.min_lr < 0 || train.min_lr > train.lr) t.fail("min_lr", "a value in [0, train.lr]");
  if (train.warmup_epochs < 0) t.fail("warmup_epochs", "a non-negative number");
  if (train.weight_decay < 0) t.fail("weight_decay", "a non-negative number");
  if (train.label_smoothing < 0 || train.label_smoothing >= 1) {
    t.fail("label_smoothing", "a value in [0, 1)");
  }
  if (train.clip_grad < 0) t.fail("clip_grad", "0 (off) or a positive norm");
  if (train.threads < 0) t.fail("threads", "0 (default) or a thread count");
  if (train.precision != "auto" && train.precision != "fp32" && train.precision != "bf16") {
    t.fail("precision", "auto, fp32 or bf16");
  }
  if (data.crop_padding < 0) d.fail("crop_padding", "a non-negative padding");
  if (data.prefetch < 1) d.fail("prefetch", "at least 1");
  const auto channels = static_cast<size_t>(config.model.in_chans);
  if (!data.mean.empty() && data.mean.size() != channels) d.fail("mean", "one value per channel");
  if (!data.std.empty() && data.std.size() != channels) d.fail("std", "one value per channel");
  for (const auto s : data.std) {
    if (!(s > 0)) d.fail("std", "positive values");
  }
  const int explicit_files = !data.train_images.empty() + !data.train_labels.empty() +
                             !data.test_images.empty() + !data.test_labels.empty();
  if (explicit_files != 0 && explicit_files != 4) {
    d.fail("train_images", "all four of train_images, train_labels, test_images, test_labels");
  }
  return config;
}

void merge_config(json& base, const json& patch, const std::string& source) {
  std::function<void(json&, const json&, const std::string&)> merge =
      [&](json& into, const json& from, const std::string& prefix) {
        if (!from.is_object()) {
          throw InputError(source + ": expected a JSON object" +
                           (prefix.empty() ? "" : " at '" + prefix + "'"));
        }
        // A preset sets the model's size first; explicit keys beside it then win.
        if (prefix == "model" && from.contains("preset")) {
          if (!from["preset"].is_string()) {
            throw InputError(source + ": model.preset: expected tiny, small or base");
          }
          const auto sized = model_to_json(vit_preset(from["preset"].get<std::string>()))["model"];
          for (const auto* key : {"embed_dim", "depth", "num_heads", "mlp_ratio"}) {
            into[key] = sized[key];
          }
        }
        for (const auto& [key, value] : from.items()) {
          const auto path = prefix.empty() ? key : prefix + "." + key;
          if (key == "preset" && prefix == "model") continue;
          if (!into.contains(key)) throw InputError(source + ": unknown key '" + path + "'");
          if (into[key].is_object()) {
            merge(into[key], value, path);
          } else {
            into[key] = value;
          }
        }
      };
  merge(base, patch, "");
}

json parse_assignment(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw InputError("--set " + assignment + ": expected key.path=value");
  }
  const auto key = assignment.substr(0, eq);
  const auto text = assignment.substr(eq + 1);
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  json patch = json::object();
  json* node = &patch;
  std::stringstream parts(key);
  std::string part;
  std::vector<std::string> keys;
  while (std::getline(parts, part, '.')) keys.push_back(part);
  for (size_t i = 0; i + 1 < keys.size(); ++i) node = &(*node)[keys[i]];
  (*node)[keys.back()] = value;
  return patch;
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open the file");
  json parsed = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) throw InputError(path + ": not valid JSON");
  return parsed;
}

}  // namespace exfusion
