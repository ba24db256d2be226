// T5 v1.1: the relative-position buckets against the published formula's values, the
// parameter count of Google's t5-v1_1-small, the module's tensors against
// dense_tensor_shapes() (what an import is checked against), the decoder's causality,
// ExFusion/MoE in the FFNs of both stacks (fused equals trained; MoE-4-1 learns), and upcycling
// a dense T5 by copy, which starts at the dense model's logits.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "../support/module_snapshot.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/registry.h"
#include "exfusion/models/t5.h"
#include "exfusion/train/run_files.h"
#include "exfusion/upcycling/upcycle.h"

namespace exfusion {
namespace {

// Fused against trained logits: float32 sums through a few blocks, far below a logit's O(1).
constexpr double kT5SameLogits = 1e-5;

T5Options tiny_t5() {
  T5Options options;
  options.vocab_size = 40;
  options.d_model = 16;
  options.d_kv = 4;
  options.d_ff = 24;
  options.num_heads = 2;
  options.num_layers = 2;
  options.num_decoder_layers = 2;
  options.input_length = 9;
  options.target_length = 5;
  return options;
}

std::shared_ptr<T5Impl> build_t5(const T5Options& options, const FfnConfig& ffn) {
  return std::dynamic_pointer_cast<T5Impl>(options.build(ffn));
}

// The buckets of T5's `_relative_position_bucket` (32 buckets, max distance 128) for these
// key − query offsets, computed with the published formula in float64.
TEST(T5, RelativePositionBucketsMatchTheFormula) {
  const std::vector<int64_t> offsets{-200, -128, -100, -50, -20, -9, -8, -7,  -1,  0,
                                     1,    2,    7,    8,   9,   20, 50, 100, 128, 200};
  const std::vector<int64_t> bidirectional{15, 15, 15, 13, 10, 8,  8,  7,  1,  0,
                                           17, 18, 23, 24, 24, 26, 29, 31, 31, 31};
  const std::vector<int64_t> causal{31, 31, 30, 24, 17, 9, 8, 7, 1, 0,
                                    0,  0,  0,  0,  0,  0, 0, 0, 0, 0};
  const auto relative = torch::tensor(offsets, torch::kLong);
  EXPECT_TRUE(torch::equal(relative_position_bucket(relative, true, 32, 128),
                           torch::tensor(bidirectional, torch::kLong)));
  EXPECT_TRUE(torch::equal(relative_position_bucket(relative, false, 32, 128),
                           torch::tensor(causal, torch::kLong)));
}

// Google's t5-v1_1-small as transformers counts it (76,961,152 parameters: shared and lm_head
// untied), from the options alone.
TEST(T5, SmallPresetHasTheCheckpointsParameters) {
  T5Options options;
  options.apply_preset("t5-v1_1-small", {"test", "model"});
  EXPECT_EQ(dense_model_parameters(DeclaredModelOptions<T5Options>(options)), 76961152.0);
}

TEST(T5, ModuleTensorsAreTheDeclaredShapes) {
  const auto options = tiny_t5();
  const auto model = build_t5(options, FfnConfig{});
  const auto tensors = module_tensors(*model);
  const auto declared = options.dense_tensor_shapes();
  ASSERT_EQ(tensors.size(), declared.size());
  for (size_t i = 0; i < declared.size(); ++i) {
    EXPECT_EQ(tensors[i].first, declared[i].first);
    EXPECT_EQ(tensors[i].second.sizes().vec(), declared[i].second) << declared[i].first;
  }
  EXPECT_EQ(static_cast<double>(count_parameters(*model)),
            dense_model_parameters(DeclaredModelOptions<T5Options>(options)));
}

// A decoder position sees only the decoder inputs up to it: changing the last one leaves the
// earlier positions' logits as they were. The encoder sees all of its inputs.
TEST(T5, TheDecoderIsCausal) {
  torch::manual_seed(3);
  const auto model = build_t5(tiny_t5(), FfnConfig{});
  model->eval();
  const auto inputs = torch::randint(0, 40, {2, 9});
  auto decoder_inputs = torch::randint(0, 40, {2, 5});
  const auto before = model->forward_encoder_decoder(inputs, decoder_inputs);
  ASSERT_EQ(before.sizes().vec(), (std::vector<int64_t>{2, 5, 40}));
  decoder_inputs.select(1, 4).fill_(7);
  const auto after = model->forward_encoder_decoder(inputs, decoder_inputs);
  EXPECT_TRUE(torch::equal(before.narrow(1, 0, 4), after.narrow(1, 0, 4)));
  auto other_inputs = inputs.clone();
  other_inputs.select(1, 8).add_(1).remainder_(40);
  const auto encoded = model->forward_encoder_decoder(other_inputs, decoder_inputs);
  EXPECT_FALSE(torch::allclose(encoded.narrow(1, 0, 1), after.narrow(1, 0, 1)));
}

// ExFusion (each variant) in every FFN of both stacks, trained a few steps so that the experts
// differ, fuses into a dense T5 with the same logits.
TEST(T5, ExFusionInBothStacksFusesToTheTrainedModel) {
  for (const auto variant :
       {FusionVariant::kStatic, FusionVariant::kLearned, FusionVariant::kMemoryBank}) {
    torch::manual_seed(5);
    const auto options = tiny_t5();
    const auto ffn = FfnConfig::of("exfusion", ExFusionOptions().variant(variant));
    const auto model = build_t5(options, ffn);
    const auto inputs = torch::randint(0, 40, {4, 9});
    const auto decoder_inputs = torch::randint(0, 40, {4, 5});
    const auto targets = torch::randint(0, 40, {4, 5});
    torch::optim::SGD sgd(model->parameters(), 0.05);
    for (int step = 0; step < 3; ++step) {
      sgd.zero_grad();
      const auto logits = model->forward_encoder_decoder(inputs, decoder_inputs);
      torch::nn::functional::cross_entropy(logits.flatten(0, 1), targets.flatten()).backward();
      sgd.step();
    }
    model->eval();
    const auto fused =
        std::dynamic_pointer_cast<T5Impl>(fuse_model(ModelConfig::of("t5", options), *model));
    ASSERT_NE(fused, nullptr);
    fused->eval();
    torch::NoGradGuard no_grad;
    const auto trained = model->forward_encoder_decoder(inputs, decoder_inputs);
    const auto dense = fused->forward_encoder_decoder(inputs, decoder_inputs);
    EXPECT_LT((trained - dense).abs().max().item<double>(), kT5SameLogits)
        << "variant " << static_cast<int>(variant);
    EXPECT_EQ(static_cast<double>(count_parameters(*fused)),
              dense_model_parameters(DeclaredModelOptions<T5Options>(options)));
  }
}

// An MoE in the decoder's FFNs only (ffn.layers counts the encoder's blocks first).
TEST(T5, LayersAddressTheDecoderAfterTheEncoder) {
  torch::manual_seed(6);
  const auto ffn = FfnConfig::of("moe", MoeOptions().num_experts(4).top_k(2), {2, 3});
  const auto model = build_t5(tiny_t5(), ffn);
  const auto names = module_tensors(*model);
  bool encoder_dense = false, decoder_moe = false;
  for (const auto& [name, tensor] : names) {
    if (name == "encoder.block.1.layer.1.DenseReluDense.wi_0.weight") {
      encoder_dense = tensor.dim() == 2;
    }
    if (name == "decoder.block.0.layer.2.DenseReluDense.wi_0.weight") {
      decoder_moe = tensor.dim() == 3 && tensor.size(0) == 4;
    }
  }
  EXPECT_TRUE(encoder_dense);
  EXPECT_TRUE(decoder_moe);
  const auto logits =
      model->forward_encoder_decoder(torch::randint(0, 40, {2, 9}), torch::randint(0, 40, {2, 5}));
  EXPECT_EQ(logits.sizes().vec(), (std::vector<int64_t>{2, 5, 40}));
}

// The paper's MoE-4-1 baseline (4 whole gated FFNs, top-1) in both stacks learns a fixed batch:
// Adam at 1e-2 for 40 steps takes the loss far below where it starts (a T5 with its std-1
// lm_head starts at a cross-entropy of tens of nats; half of it is a wide margin), and the
// router, through the gate values, gets a gradient.
TEST(T5, MoeFourOneLearnsAFixedBatch) {
  torch::manual_seed(8);
  const auto ffn = FfnConfig::of("moe", MoeOptions().num_experts(4).top_k(1).capacity_factor(0));
  const auto model = build_t5(tiny_t5(), ffn);
  const auto inputs = torch::randint(0, 40, {4, 9});
  const auto decoder_inputs = torch::randint(0, 40, {4, 5});
  const auto targets = torch::randint(0, 40, {4, 5});
  torch::optim::Adam adam(model->parameters(), 1e-2);
  double first = 0, last = 0;
  bool router_moved = false;
  for (int step = 0; step < 40; ++step) {
    adam.zero_grad();
    const auto logits = model->forward_encoder_decoder(inputs, decoder_inputs);
    const auto loss = torch::nn::functional::cross_entropy(logits.flatten(0, 1), targets.flatten());
    loss.backward();
    for (const auto& parameter : model->named_parameters()) {
      if (parameter.key().find("router") != std::string::npos &&
          parameter.value().grad().defined()) {
        router_moved = router_moved || parameter.value().grad().abs().sum().item<double>() > 0;
      }
    }
    adam.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, 0.5 * first) << "first " << first << ", last " << last;
  EXPECT_TRUE(router_moved);
}

// Sparse upcycling (copy) of a dense T5 into ExFusion (static weights 1/N: N equal experts sum
// to the dense FFN; mb's zero-initialised bank does not until it fills) and into a top-1 MoE
// (renormalised, so the gate is 1) in both stacks starts at the dense model's logits.
TEST(T5, UpcyclingByCopyStartsAtTheDenseLogits) {
  torch::manual_seed(9);
  const auto dense = build_t5(tiny_t5(), FfnConfig{});
  {  // away from the init, as a trained model is
    torch::NoGradGuard no_grad;
    for (auto& parameter : dense->parameters()) parameter.add_(torch::randn_like(parameter) * 0.1);
  }
  const auto inputs = torch::randint(0, 40, {3, 9});
  const auto decoder_inputs = torch::randint(0, 40, {3, 5});
  dense->eval();
  torch::NoGradGuard no_grad;
  const auto expected = dense->forward_encoder_decoder(inputs, decoder_inputs);
  for (const auto& ffn :
       {FfnConfig::of("exfusion", ExFusionOptions().variant(FusionVariant::kStatic)),
        FfnConfig::of(
            "moe",
            MoeOptions().num_experts(4).top_k(1).capacity_factor(0).renormalize_top1(true))}) {
    const auto upcycled = build_t5(tiny_t5(), ffn);
    const auto report =
        upcycle_into(*upcycled, testing::tensors_of(*dense), InitConfig{}, "dense.safetensors");
    EXPECT_EQ(report.layers, 4);  // 2 encoder + 2 decoder FFNs
    upcycled->eval();
    const auto got = upcycled->forward_encoder_decoder(inputs, decoder_inputs);
    EXPECT_LT((got - expected).abs().max().item<double>(), kT5SameLogits) << ffn.kind;
  }
}

}  // namespace
}  // namespace exfusion
