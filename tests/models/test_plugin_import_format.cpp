// An import format registered from a test, without an edit under src/: a ViT whose tensors sit
// under "backbone." with its architecture in the file's metadata. `--from auto` finds it by its
// signature, import_dense_model and `exfusion import` read it, upcycling starts from it, and
// --from lists it. Proves the format seam of models/model_formats.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../support/cli.h"
#include "../support/tiny_models.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/model_formats.h"
#include "exfusion/train/initialization.h"
#include "exfusion/train/run_files.h"
#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"
#include "exfusion/workflows/import.h"

namespace exfusion {
namespace {

class PrefixedVitFormat : public ImportFormat {
 public:
  std::string signature() const override { return "backbone.patch_embed.proj.weight"; }
  ForeignArchitecture architecture(const SafetensorsFile& file, const std::filesystem::path& path,
                                   const nlohmann::json& /*model_patch*/) const override {
    const auto entry = file.metadata.find("architecture");
    if (entry == file.metadata.end()) throw InputError(path.string() + ": no architecture");
    auto model = parse_json_input(entry->second, path.string());
    model["kind"] = "vit";
    return {model, path.string() + " (metadata architecture)", "its metadata describes"};
  }
  std::vector<std::string> names_in_file(const std::string& ours) const override {
    return {"backbone." + ours};
  }
};

class PluginImportFormat : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    import_formats().add("prefixed", "vit", "a test's ViT under backbone.",
                         std::make_shared<PrefixedVitFormat>());
  }
  void SetUp() override {
    dir_ = testing::fresh_temp_dir("plugin-import-format");
    torch::manual_seed(3);
    options_ = testing::tiny_vit();
    model_ = options_.build(FfnConfig{});
    NamedTensors prefixed;
    for (const auto& [name, tensor] : module_tensors(*model_)) {
      prefixed.emplace_back("backbone." + name, tensor);
    }
    file_ = dir_ / "prefixed.safetensors";
    auto architecture = config::to_json(options_);
    save_safetensors(file_, prefixed, {{"architecture", architecture.dump()}, {"format", "pt"}});
  }
  void TearDown() override { testing::remove_tree(dir_); }

  std::filesystem::path dir_, file_;
  VisionTransformerOptions options_;
  ModelPtr model_;
};

TEST_F(PluginImportFormat, AutoFindsItAndTheTensorsComeBackUnderOurNames) {
  const auto imported = import_dense_model(file_);
  EXPECT_EQ(imported.format, "prefixed");
  EXPECT_EQ(imported.model.to_json(), ModelConfig::of("vit", options_).to_json());
  const auto expected = module_tensors(*model_);
  ASSERT_EQ(imported.tensors.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(imported.tensors[i].first, expected[i].first);
    EXPECT_TRUE(torch::equal(imported.tensors[i].second, expected[i].second));
  }
  const auto names = import_formats().names();
  EXPECT_NE(std::find(names.begin(), names.end(), "prefixed"), names.end());
}

TEST_F(PluginImportFormat, ImportWritesOurCheckpointAndUpcyclingStartsFromIt) {
  const auto out = dir_ / "dense.safetensors";
  import_checkpoint({file_, out, "prefixed", {"data.mean=[0.5,0.5]", "data.std=[0.5,0.5]"}, false});
  const auto checkpoint = load_checkpoint(out);
  EXPECT_EQ(checkpoint.config.model.to_json(), ModelConfig::of("vit", options_).to_json());
  // Upcycling reads the foreign file itself, through the same seam.
  const auto dense = dense_tensors_if_dense(file_);
  ASSERT_TRUE(dense.has_value());
  EXPECT_EQ(dense->size(), module_tensors(*model_).size());
}

TEST_F(PluginImportFormat, AMismatchNamesTheFileTheTensorAndTheModelKind) {
  NamedTensors broken;
  for (const auto& [name, tensor] : module_tensors(*model_)) {
    if (name != "head.bias") broken.emplace_back("backbone." + name, tensor);
  }
  const auto file = dir_ / "broken.safetensors";
  save_safetensors(file, broken, {{"architecture", config::to_json(options_).dump()}});
  try {
    import_dense_model(file);
    FAIL() << "a missing tensor was accepted";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(file.string()), std::string::npos) << message;
    EXPECT_NE(message.find("backbone.head.bias (head.bias): missing from the file"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("does not match the vit"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace exfusion
