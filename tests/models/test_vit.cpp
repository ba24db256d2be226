// The ViT has timm's parameter names, shapes and sizes (so exports load into timm), the
// presets match timm's DeiT/ViT sizes, and bad sizes are rejected with the field named.
#include <gtest/gtest.h>

#include "../support/tiny_models.h"
#include "exfusion/models/vit.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

TEST(VisionTransformer, ParameterNamesFollowTimm) {
  VisionTransformer model(testing::tiny_vit());
  std::vector<std::string> names;
  for (const auto& item : model->named_parameters()) names.push_back(item.key());
  const std::vector<std::string> expected_head = {"cls_token",
                                                  "pos_embed",
                                                  "patch_embed.proj.weight",
                                                  "patch_embed.proj.bias",
                                                  "blocks.0.norm1.weight",
                                                  "blocks.0.norm1.bias",
                                                  "blocks.0.attn.qkv.weight",
                                                  "blocks.0.attn.qkv.bias",
                                                  "blocks.0.attn.proj.weight",
                                                  "blocks.0.attn.proj.bias",
                                                  "blocks.0.norm2.weight",
                                                  "blocks.0.norm2.bias",
                                                  "blocks.0.mlp.fc1.weight",
                                                  "blocks.0.mlp.fc1.bias",
                                                  "blocks.0.mlp.fc2.weight",
                                                  "blocks.0.mlp.fc2.bias"};
  std::sort(names.begin(), names.end());
  for (const auto& name : expected_head) {
    EXPECT_TRUE(std::binary_search(names.begin(), names.end(), name)) << name;
  }
  for (const auto* name : {"norm.weight", "norm.bias", "head.weight", "head.bias"}) {
    EXPECT_TRUE(std::binary_search(names.begin(), names.end(), name)) << name;
  }
  EXPECT_EQ(names.size(), 4u + 12u * 2u + 4u);
  const auto params = model->named_parameters();
  EXPECT_EQ(params["pos_embed"].sizes(), (std::vector<int64_t>{1, 5, 16}));
  EXPECT_EQ(params["blocks.1.mlp.fc1.weight"].sizes(), (std::vector<int64_t>{32, 16}));
}

TEST(VisionTransformer, ExFusionKeepsNamesWithAnExpertAxis) {
  VisionTransformer model(testing::tiny_vit("exfusion", FusionVariant::kMemoryBank, 3));
  const auto params = model->named_parameters();
  EXPECT_EQ(params["blocks.0.mlp.fc1.weight"].sizes(), (std::vector<int64_t>{3, 32, 16}));
  EXPECT_EQ(params["blocks.0.mlp.fc2.bias"].sizes(), (std::vector<int64_t>{3, 16}));
  EXPECT_EQ(params["blocks.0.mlp.fusion.router.weight"].sizes(), (std::vector<int64_t>{3, 16}));
  EXPECT_EQ(model->named_buffers()["blocks.1.mlp.fusion.bank"].sizes(), (std::vector<int64_t>{3}));
}

TEST(VisionTransformer, PresetsHaveTimmSizes) {
  // timm: deit_tiny_patch16_224 5,717,416; deit_small 22,050,664; vit_base_patch16_224 86,567,656.
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"tiny", 5717416}, {"small", 22050664}, {"base", 86567656}};
  for (const auto& [name, count] : expected) {
    VisionTransformer model(vit_preset(name));
    EXPECT_EQ(count_parameters(*model), count) << name;
  }
}

// From the options alone (what a checkpoint's config is checked with before a model is built):
// with the dense FFNs' 2·D·H + H + D per block, exactly the built model's count.
TEST(VisionTransformer, ParametersOutsideFfnsFromTheOptionsAlone) {
  for (const auto& options : {vit_preset("tiny"), vit_preset("base"), testing::tiny_vit()}) {
    const double dim = static_cast<double>(options.embed_dim);
    const double hidden = static_cast<double>(options.hidden_dim());
    const double ffns = static_cast<double>(options.depth) * (2 * dim * hidden + hidden + dim);
    VisionTransformer model(options);
    EXPECT_EQ(options.parameters_outside_ffns() + ffns,
              static_cast<double>(count_parameters(*model)))
        << options.embed_dim;
  }
}

TEST(VisionTransformer, ForwardFlopsOfViTBase) {
  // ViT-B/16 at 224: 17.6 GMACs per image (timm / fvcore), i.e. about 35.1 GFLOPs.
  EXPECT_NEAR(forward_flops_per_image(vit_preset("base")) / 1e9, 35.1, 0.2);
}

TEST(VisionTransformer, OutputShapeAndBatchIndependence) {
  torch::manual_seed(0);
  VisionTransformer model(testing::tiny_vit());
  model->eval();
  torch::NoGradGuard no_grad;
  const auto images = torch::randn({3, 2, 8, 8});
  const auto logits = model->forward(images);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 5}));
  EXPECT_TRUE(torch::allclose(logits[1], model->forward(images.narrow(0, 1, 1))[0], 1e-5, 1e-6));
}

TEST(VisionTransformer, RejectsBadSizesNamingTheField) {
  auto expect_field = [](VisionTransformerOptions options, const std::string& field) {
    try {
      VisionTransformer model(options);
      ADD_FAILURE() << "accepted bad " << field;
    } catch (const InputError& error) {
      EXPECT_NE(std::string(error.what()).find(field), std::string::npos) << error.what();
    }
  };
  auto options = testing::tiny_vit();
  options.patch_size = 3;
  expect_field(options, "model.patch_size");
  options = testing::tiny_vit();
  options.num_heads = 3;
  expect_field(options, "model.num_heads");
  options = testing::tiny_vit();
  options.ffn.layers = {5};
  expect_field(options, "ffn.layers");
  EXPECT_THROW(vit_preset("huge"), InputError);
}

}  // namespace
}  // namespace exfusion
