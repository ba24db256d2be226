// Dense ViTs from outside (models/model_formats.h, models/vit_formats.h, `exfusion import`): our
// own export and dense training state come back bit for bit, timm-named files get their
// architecture from the shapes (and name the tensor and both shapes when one is wrong), and Hugging
// Face's names map onto ours with query, key and value stacked into qkv.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>

#include "../support/cli.h"
#include "../support/tiny_models.h"
#include "exfusion/data/image_data_config.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/model_formats.h"
#include "exfusion/train/run_files.h"
#include "exfusion/util/error.h"
#include "exfusion/workflows/import.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;

// The message of the InputError `call` throws ("" when it throws none).
template <class Call>
std::string input_error_of(Call call) {
  try {
    call();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// A tiny dense ViT (img 8, 2 channels, patch 4, width 16, depth 2, 2 heads, ratio 2, 5 classes)
// with random weights, and a run config for it with a normalisation.
struct TinyDense {
  TinyDense() {
    torch::manual_seed(7);
    options = testing::tiny_vit();
    model = options.build(FfnConfig{});
    torch::NoGradGuard no_grad;
    for (auto& parameter : model->parameters()) parameter.normal_(0.0, 0.5);
    config = default_run_config();
    testing::use_vit(config, options);
    auto& images = config.data.edit<ImageDataConfig>();
    images.mean = {0.25, 0.5};
    images.std = {0.5, 0.75};
  }
  VisionTransformerOptions options;
  ModelPtr model;
  RunConfig config;
};

void expect_same_tensors(const NamedTensors& expected, const NamedTensors& actual) {
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(expected[i].first, actual[i].first);
    EXPECT_TRUE(torch::equal(expected[i].second, actual[i].second)) << expected[i].first;
  }
}

TEST(DenseImport, OurExportRoundTripsBitForBit) {
  const auto dir = testing::fresh_temp_dir("dense-import-ours");
  TinyDense dense;
  const auto expected = module_tensors(*dense.model);
  save_dense_model(dir / kModelFile, expected, dense.config);

  const auto imported = import_dense_model(dir);  // a run directory: its model.safetensors
  EXPECT_EQ(imported.format, "exfusion");
  EXPECT_EQ(imported.file, dir / kModelFile);
  EXPECT_EQ(imported.model.to_json(), ModelConfig::of("vit", dense.options).to_json());
  expect_same_tensors(expected, imported.tensors);

  const auto out = dir / "imported.safetensors";
  const auto result = import_checkpoint({dir, out, "auto", {}, false});
  EXPECT_EQ(result["from"], "exfusion");
  EXPECT_EQ(result["params"].get<int64_t>(), count_parameters(*dense.model));
  const auto written = load_checkpoint(out);
  EXPECT_FALSE(written.is_training_state);
  EXPECT_EQ(written.config.data.as<ImageDataConfig>()->mean,
            dense.config.data.as<ImageDataConfig>()->mean);
  EXPECT_EQ(written.config.data.as<ImageDataConfig>()->std,
            dense.config.data.as<ImageDataConfig>()->std);
  ASSERT_EQ(written.file.tensors.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    EXPECT_TRUE(torch::equal(written.file.tensors.at(name), tensor)) << name;
  }
  EXPECT_TRUE(fs::exists(fs::path(out).replace_extension(".json")));
  // A second import onto the same file is refused without --force.
  EXPECT_NE(input_error_of([&] { import_checkpoint({dir, out, "auto", {}, false}); }), "");
  import_checkpoint({dir, out, "auto", {}, true});
  testing::remove_tree(dir);
}

TEST(DenseImport, DenseTrainingStateGivesItsModelAndOtherKindsAreRefused) {
  const auto dir = testing::fresh_temp_dir("dense-import-state");
  TinyDense dense;
  NamedTensors state;
  for (const auto& [name, tensor] : module_tensors(*dense.model)) {
    state.emplace_back("model." + name, tensor);
  }
  state.emplace_back("optimizer.head.weight.exp_avg", torch::zeros({5, 16}));
  state.emplace_back("trainer.step", torch::tensor({int64_t{12}}));
  save_safetensors(dir / kStateFile, state,
                   {{kConfigMetadataKey, to_json(dense.config).dump()},
                    {kKindMetadataKey, "training-state"},
                    {kFormatMetadataKey, "3"}});
  const auto imported = import_dense_model(dir);  // no model.safetensors: the state
  EXPECT_EQ(imported.file, dir / kStateFile);
  expect_same_tensors(module_tensors(*dense.model), imported.tensors);

  auto exfusion = dense.config;
  exfusion.ffn = testing::ffn_of("exfusion");
  save_safetensors(dir / "exfusion-state.safetensors", state,
                   {{kConfigMetadataKey, to_json(exfusion).dump()},
                    {kKindMetadataKey, "training-state"},
                    {kFormatMetadataKey, "3"}});
  const auto message =
      input_error_of([&] { import_dense_model(dir / "exfusion-state.safetensors"); });
  EXPECT_NE(message.find("\"exfusion\""), std::string::npos) << message;
  EXPECT_NE(message.find("exfusion fuse"), std::string::npos) << message;
  testing::remove_tree(dir);
}

TEST(DenseImport, TimmFileGetsItsArchitectureFromTheShapes) {
  const auto dir = testing::fresh_temp_dir("dense-import-timm");
  TinyDense dense;
  const auto file = dir / "timm.safetensors";
  save_safetensors(file, module_tensors(*dense.model), {{"format", "pt"}});
  const auto imported = import_dense_model(file, {{"num_heads", 2}});
  EXPECT_EQ(imported.format, "timm");
  EXPECT_TRUE(imported.stored_config.is_null());
  EXPECT_EQ(imported.model.to_json(), ModelConfig::of("vit", dense.options).to_json());
  expect_same_tensors(module_tensors(*dense.model), imported.tensors);
  // A timm file holds no normalisation: the import asks for it, then writes it.
  const auto out = dir / "out.safetensors";
  const auto asked = input_error_of([&] {
    import_checkpoint({file, out, "timm", {"model.num_heads=2"}, false});
  });
  EXPECT_NE(asked.find("--set data.mean=[...] data.std=[...]"), std::string::npos) << asked;
  import_checkpoint(
      {file, out, "timm", {"model.num_heads=2", "data.mean=[0.1,0.2]", "data.std=[1,2]"}, false});
  EXPECT_EQ(load_checkpoint(out).config.data.as<ImageDataConfig>()->std,
            (std::vector<double>{1.0, 2.0}));
  testing::remove_tree(dir);
}

TEST(DenseImport, TimmWrongShapeNamesTheFileTheTensorAndBothShapes) {
  const auto dir = testing::fresh_temp_dir("dense-import-shape");
  TinyDense dense;
  auto tensors = module_tensors(*dense.model);
  for (auto& [name, tensor] : tensors) {
    if (name == "blocks.1.mlp.fc2.weight") tensor = torch::zeros({16, 30});
  }
  const auto file = dir / "timm.safetensors";
  save_safetensors(file, tensors);
  const auto message = input_error_of([&] { import_dense_model(file, {{"num_heads", 2}}); });
  EXPECT_NE(message.find(file.string()), std::string::npos) << message;
  EXPECT_NE(message.find("blocks.1.mlp.fc2.weight: shape [16, 30] in file, expected [16, 32]"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("(1 differences)"), std::string::npos) << message;

  // A --set key that contradicts the tensors is the same error, for each tensor it changes.
  const auto good = dir / "good.safetensors";
  save_safetensors(good, module_tensors(*dense.model));
  const auto patched = input_error_of([&] {
    import_dense_model(good, {{"num_heads", 2}, {"mlp_ratio", 4.0}});
  });
  EXPECT_NE(patched.find("blocks.0.mlp.fc1.weight: shape [32, 16] in file, expected [64, 16]"),
            std::string::npos)
      << patched;
  EXPECT_NE(patched.find("with --set model.* laid over it"), std::string::npos) << patched;
  testing::remove_tree(dir);
}

TEST(DenseImport, TimmHeadsFromTimmsStandardWidthsElseAsked) {
  const auto dir = testing::fresh_temp_dir("dense-import-heads");
  TinyDense dense;  // width 16: no standard
  const auto file = dir / "timm.safetensors";
  save_safetensors(file, module_tensors(*dense.model));
  const auto message = input_error_of([&] { import_dense_model(file); });
  EXPECT_NE(message.find("pass --set model.num_heads=N"), std::string::npos) << message;
  EXPECT_NE(message.find("width 16"), std::string::npos) << message;

  auto tiny = testing::tiny_vit();  // DeiT-Ti's width, one block
  tiny.embed_dim = 192;
  tiny.num_heads = 4;  // not stored: the import takes timm's 3
  tiny.depth = 1;
  const auto wide = dir / "wide.safetensors";
  save_safetensors(wide, module_tensors(*tiny.build(FfnConfig{})));
  EXPECT_EQ(import_dense_model(wide).model.as<VisionTransformerOptions>()->num_heads, 3);
  EXPECT_EQ(
      import_dense_model(wide, {{"num_heads", 4}}).model.as<VisionTransformerOptions>()->num_heads,
      4);
  testing::remove_tree(dir);
}

// A Hugging Face ViTForImageClassification of the tiny sizes: every tensor under its name with
// seeded random values, except query/key/value whose values count up (so the expected qkv is
// written by hand), and its config.json beside it.
struct HfFile {
  explicit HfFile(const fs::path& dir, const std::string& hidden_act = "gelu") {
    torch::manual_seed(3);
    const auto put = [&](const std::string& name, std::vector<int64_t> shape) {
      tensors.emplace_back(name, torch::randn(shape));
    };
    put("vit.embeddings.cls_token", {1, 1, 16});
    put("vit.embeddings.position_embeddings", {1, 5, 16});
    put("vit.embeddings.patch_embeddings.projection.weight", {16, 2, 4, 4});
    put("vit.embeddings.patch_embeddings.projection.bias", {16});
    for (int layer = 0; layer < 2; ++layer) {
      const auto at = "vit.encoder.layer." + std::to_string(layer) + ".";
      for (const auto* norm : {"layernorm_before", "layernorm_after"}) {
        put(at + norm + ".weight", {16});
        put(at + norm + ".bias", {16});
      }
      int64_t part = 0;
      for (const auto* name : {"query", "key", "value"}) {
        const auto prefix = at + "attention.attention." + name;
        tensors.emplace_back(prefix + ".weight",
                             torch::arange(part * 256, (part + 1) * 256, torch::kFloat32)
                                 .view({16, 16})
                                 .add(1000.0 * layer));
        tensors.emplace_back(prefix + ".bias",
                             torch::arange(part * 16, (part + 1) * 16, torch::kFloat32)
                                 .add(-500.0 - 1000.0 * layer));
        ++part;
      }
      put(at + "attention.output.dense.weight", {16, 16});
      put(at + "attention.output.dense.bias", {16});
      put(at + "intermediate.dense.weight", {32, 16});
      put(at + "intermediate.dense.bias", {32});
      put(at + "output.dense.weight", {16, 32});
      put(at + "output.dense.bias", {16});
    }
    put("vit.layernorm.weight", {16});
    put("vit.layernorm.bias", {16});
    put("classifier.weight", {5, 16});
    put("classifier.bias", {5});
    save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
    nlohmann::json config = {
        {"architectures", {"ViTForImageClassification"}},
        {"model_type", "vit"},
        {"hidden_size", 16},
        {"num_hidden_layers", 2},
        {"num_attention_heads", 2},
        {"intermediate_size", 32},
        {"image_size", 8},
        {"patch_size", 4},
        {"num_channels", 2},
        {"layer_norm_eps", 1e-12},
        {"hidden_act", hidden_act},
        {"qkv_bias", true},
        {"id2label", {{"0", "a"}, {"1", "b"}, {"2", "c"}, {"3", "d"}, {"4", "e"}}}};
    std::ofstream(dir / "config.json") << config.dump(2);
  }
  const torch::Tensor& at(const std::string& name) const {
    for (const auto& [key, tensor] : tensors) {
      if (key == name) return tensor;
    }
    throw std::out_of_range(name);
  }
  NamedTensors tensors;
};

TEST(DenseImport, HuggingFaceNamesMapOntoOursWithQueryKeyValueStacked) {
  const auto dir = testing::fresh_temp_dir("dense-import-hf");
  const HfFile hf(dir);
  const auto imported = import_dense_model(dir);  // a save_pretrained directory
  EXPECT_EQ(imported.format, "huggingface");
  const auto& vit = *imported.model.as<VisionTransformerOptions>();
  EXPECT_EQ(vit.embed_dim, 16);
  EXPECT_EQ(vit.depth, 2);
  EXPECT_EQ(imported.model.as<VisionTransformerOptions>()->num_heads, 2);
  EXPECT_EQ(vit.hidden_dim(), 32);
  EXPECT_EQ(vit.img_size, 8);
  EXPECT_EQ(vit.patch_size, 4);
  EXPECT_EQ(vit.in_chans, 2);
  EXPECT_EQ(vit.num_classes, 5);
  EXPECT_EQ(vit.norm_eps, 1e-12);
  std::map<std::string, torch::Tensor> ours(imported.tensors.begin(), imported.tensors.end());
  EXPECT_EQ(ours.size(), 4u + 2u * 12u + 4u);
  for (int64_t layer = 0; layer < 2; ++layer) {
    const auto block = "blocks." + std::to_string(layer) + ".";
    // query rows 0-15, key rows 16-31, value rows 32-47: the values count up from 0 over all
    // 48 × 16 weights (plus 1000 per layer) and from -500 over the 48 biases.
    const auto weight = torch::arange(0, 48 * 16, torch::kFloat32).view({48, 16}) + 1000.0 * layer;
    const auto bias = torch::arange(0, 48, torch::kFloat32) - 500.0 - 1000.0 * layer;
    EXPECT_TRUE(torch::equal(ours.at(block + "attn.qkv.weight"), weight)) << block;
    EXPECT_TRUE(torch::equal(ours.at(block + "attn.qkv.bias"), bias)) << block;
    const auto layer_at = "vit.encoder.layer." + std::to_string(layer) + ".";
    const std::vector<std::pair<std::string, std::string>> same = {
        {"norm1", "layernorm_before"},
        {"attn.proj", "attention.output.dense"},
        {"norm2", "layernorm_after"},
        {"mlp.fc1", "intermediate.dense"},
        {"mlp.fc2", "output.dense"}};
    for (const auto& [mine, theirs] : same) {
      for (const auto* param : {".weight", ".bias"}) {
        EXPECT_TRUE(torch::equal(ours.at(block + mine + param), hf.at(layer_at + theirs + param)))
            << block + mine + param;
      }
    }
  }
  EXPECT_TRUE(torch::equal(ours.at("cls_token"), hf.at("vit.embeddings.cls_token")));
  EXPECT_TRUE(torch::equal(ours.at("pos_embed"), hf.at("vit.embeddings.position_embeddings")));
  EXPECT_TRUE(torch::equal(ours.at("patch_embed.proj.weight"),
                           hf.at("vit.embeddings.patch_embeddings.projection.weight")));
  EXPECT_TRUE(torch::equal(ours.at("norm.weight"), hf.at("vit.layernorm.weight")));
  EXPECT_TRUE(torch::equal(ours.at("head.weight"), hf.at("classifier.weight")));
  EXPECT_TRUE(torch::equal(ours.at("head.bias"), hf.at("classifier.bias")));
  // The tensors load into the model the options build, under its own names and order.
  const auto model = build_model(imported.model, FfnConfig{});
  const auto expected = module_tensors(*model);
  ASSERT_EQ(expected.size(), imported.tensors.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(expected[i].first, imported.tensors[i].first);
    EXPECT_EQ(expected[i].second.sizes(), imported.tensors[i].second.sizes());
  }
  testing::remove_tree(dir);
}

TEST(DenseImport, HuggingFaceMismatchesNameTheirTensorAndConfigKey) {
  const auto dir = testing::fresh_temp_dir("dense-import-hf-bad");
  {
    HfFile hf(dir);
    auto tensors = hf.tensors;
    for (auto& [name, tensor] : tensors) {
      if (name == "vit.encoder.layer.1.attention.attention.key.weight") {
        tensor = torch::zeros({16, 8});
      }
    }
    save_safetensors(dir / "model.safetensors", tensors);
    const auto message = input_error_of([&] { import_dense_model(dir, {}, "auto"); });
    EXPECT_NE(message.find("vit.encoder.layer.1.attention.attention.key.weight "
                           "(blocks.1.attn.qkv.weight): shape [16, 8] in file, expected [16, 16]"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("config.json"), std::string::npos) << message;
  }
  {
    HfFile tanh_gelu(dir, "gelu_new");
    const auto message = input_error_of([&] { import_dense_model(dir); });
    EXPECT_NE(message.find("hidden_act = \"gelu_new\""), std::string::npos) << message;
  }
  std::remove((dir / "config.json").c_str());
  const auto message = input_error_of([&] { import_dense_model(dir / "model.safetensors"); });
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;
  testing::remove_tree(dir);
}

TEST(DenseImport, CliWritesTheCheckpointAndExitsWith2OnBadInput) {
  const auto dir = testing::fresh_temp_dir("dense-import-cli");
  TinyDense dense;
  const auto file = dir / "timm.safetensors";
  save_safetensors(file, module_tensors(*dense.model));
  const auto out = dir / "new" / "dense.safetensors";  // its directory is made
  const std::string args = "import " + file.string() + " --out " + out.string() +
                           " --set model.num_heads=2 data.mean=[0.5,0.5] data.std=[1,1]";
  const auto written = testing::run_cli(args);
  ASSERT_EQ(written.exit_code, 0) << written.output;
  EXPECT_NE(written.output.find("\"from\": \"timm\""), std::string::npos) << written.output;
  const auto info = testing::run_cli("info --json " + out.string());
  ASSERT_EQ(info.exit_code, 0) << info.output;
  EXPECT_NE(info.output.find("\"params\": " + std::to_string(count_parameters(*dense.model))),
            std::string::npos)
      << info.output;

  const auto again = testing::run_cli(args);
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_NE(again.output.find("--force"), std::string::npos) << again.output;
  const auto no_heads = testing::run_cli("import " + file.string() + " --out " +
                                         (dir / "other.safetensors").string());
  EXPECT_EQ(no_heads.exit_code, 2) << no_heads.output;
  EXPECT_NE(no_heads.output.find("exfusion: error: "), std::string::npos) << no_heads.output;
  testing::remove_tree(dir);
}

}  // namespace
}  // namespace exfusion
