// Llama: Llama 2 7B's parameter count and the CPU preset's from the options alone, the module's
// tensors against dense_tensor_shapes() (untied and tied lm_head), causality, the rotary
// embedding against its definition, bad sizes refused by name, ExFusion in every FFN (fused
// equals trained for sw/dw/mb), a top-2 MoE that learns, upcycling by copy starting at the
// dense logits, Drop-Upcycling's re-initialised units, and decoding through the key/value cache
// equal to the full forward. transformers' own logits are checked in
// test_llama_huggingface.py.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "../support/module_snapshot.h"
#include "exfusion/fusion/ders_ffn.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/models/llama.h"
#include "exfusion/models/registry.h"
#include "exfusion/train/run_files.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

// Fused against trained logits: float32 sums through a few layers, far below a logit's O(1).
constexpr double kLlamaSameLogits = 1e-5;

LlamaOptions tiny_llama(bool tied = false) {
  LlamaOptions options;
  options.vocab_size = 40;
  options.hidden_size = 16;
  options.intermediate_size = 24;
  options.num_hidden_layers = 2;
  options.num_attention_heads = 4;
  options.num_key_value_heads = 2;
  options.max_position_embeddings = 32;
  options.sequence_length = 9;
  options.tie_word_embeddings = tied;
  return options;
}

std::shared_ptr<LlamaImpl> build_llama(const LlamaOptions& options, const FfnConfig& ffn) {
  return std::dynamic_pointer_cast<LlamaImpl>(options.build(ffn));
}

// meta-llama/Llama-2-7b-hf as transformers counts it: 6,738,415,616 parameters.
TEST(Llama, PresetsHaveTheirParameterCounts) {
  LlamaOptions seven;
  seven.apply_preset("llama-2-7b", {"test", "model"});
  EXPECT_EQ(dense_model_parameters(DeclaredModelOptions<LlamaOptions>(seven)), 6738415616.0);
  // 2 · 8192 · 256 (embedding, lm_head) + 8 · (256² · 2 + 256 · 128 · 2 + 3 · 256 · 704 + 2 · 256)
  // + 256.
  LlamaOptions cpu;
  cpu.apply_preset("llama-cpu-10m", {"test", "model"});
  EXPECT_EQ(dense_model_parameters(DeclaredModelOptions<LlamaOptions>(cpu)), 10096896.0);
}

TEST(Llama, ModuleTensorsAreTheDeclaredShapes) {
  for (const bool tied : {false, true}) {
    const auto options = tiny_llama(tied);
    const auto model = build_llama(options, FfnConfig{});
    const auto tensors = module_tensors(*model);
    const auto declared = options.dense_tensor_shapes();
    ASSERT_EQ(tensors.size(), declared.size()) << "tied " << tied;
    for (size_t i = 0; i < declared.size(); ++i) {
      EXPECT_EQ(tensors[i].first, declared[i].first);
      EXPECT_EQ(tensors[i].second.sizes().vec(), declared[i].second) << declared[i].first;
    }
    EXPECT_EQ(static_cast<double>(count_parameters(*model)),
              dense_model_parameters(DeclaredModelOptions<LlamaOptions>(options)));
  }
}

// A position's logits depend on it and the positions before it only.
TEST(Llama, EachPositionSeesOnlyThePast) {
  torch::manual_seed(3);
  const auto model = build_llama(tiny_llama(), FfnConfig{});
  model->eval();
  torch::NoGradGuard no_grad;
  auto tokens = torch::randint(0, 40, {2, 9});
  const auto before = model->forward(tokens);
  ASSERT_EQ(before.sizes().vec(), (std::vector<int64_t>{2, 9, 40}));
  tokens.select(1, 6).add_(1).remainder_(40);
  const auto after = model->forward(tokens);
  EXPECT_TRUE(torch::equal(before.narrow(1, 0, 6), after.narrow(1, 0, 6)));
  EXPECT_FALSE(torch::allclose(before.narrow(1, 6, 1), after.narrow(1, 6, 1)));
}

// Hugging Face's rotary embedding written out for one position and frequency pair: dims i and
// i + d/2 of each head rotate by the angle position · θ^(−2i/d).
TEST(Llama, RotaryEmbeddingRotatesHalvesByThePositionsAngle) {
  const int64_t head_dim = 8, position = 5;
  const double theta = 500.0;
  const auto [cos, sin] = rotary_tables(7, head_dim, theta, torch::kCPU);
  const auto x = torch::randn({1, 7, 1, head_dim});
  const auto rotated = apply_rotary(x, cos, sin);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const double angle = position * std::pow(theta, -2.0 * i / head_dim);
    const double a = x[0][position][0][i].item<double>();
    const double b = x[0][position][0][i + head_dim / 2].item<double>();
    EXPECT_NEAR(rotated[0][position][0][i].item<double>(),
                a * std::cos(angle) - b * std::sin(angle), 1e-5);
    EXPECT_NEAR(rotated[0][position][0][i + head_dim / 2].item<double>(),
                b * std::cos(angle) + a * std::sin(angle), 1e-5);
  }
}

TEST(Llama, SizesThatDoNotFitAreRefusedByName) {
  const auto refused = [](const LlamaOptions& options, const char* key) {
    try {
      options.validate();
      ADD_FAILURE() << "accepted: " << key;
    } catch (const InputError& error) {
      EXPECT_NE(std::string(error.what()).find(key), std::string::npos) << error.what();
    }
  };
  auto heads = tiny_llama();
  heads.num_key_value_heads = 3;
  refused(heads, "num_key_value_heads");
  auto width = tiny_llama();
  width.num_attention_heads = 5;
  refused(width, "num_attention_heads");
  auto length = tiny_llama();
  length.sequence_length = 33;
  refused(length, "sequence_length");
}

// ExFusion (each variant) in every FFN, trained a few steps so that the experts differ, fuses
// into a dense Llama with the same logits.
TEST(Llama, ExFusionFusesToTheTrainedModel) {
  for (const auto variant :
       {FusionVariant::kStatic, FusionVariant::kLearned, FusionVariant::kMemoryBank}) {
    torch::manual_seed(5);
    const auto options = tiny_llama();
    const auto model =
        build_llama(options, FfnConfig::of("exfusion", ExFusionOptions().variant(variant)));
    const auto tokens = torch::randint(0, 40, {4, 9});
    const auto targets = torch::randint(0, 40, {4, 9});
    torch::optim::SGD sgd(model->parameters(), 0.5);
    for (int step = 0; step < 3; ++step) {
      sgd.zero_grad();
      torch::nn::functional::cross_entropy(model->forward(tokens).flatten(0, 1), targets.flatten())
          .backward();
      sgd.step();
    }
    model->eval();
    const auto fused =
        std::dynamic_pointer_cast<LlamaImpl>(fuse_model(ModelConfig::of("llama", options), *model));
    ASSERT_NE(fused, nullptr);
    fused->eval();
    torch::NoGradGuard no_grad;
    EXPECT_LT((model->forward(tokens) - fused->forward(tokens)).abs().max().item<double>(),
              kLlamaSameLogits)
        << "variant " << static_cast<int>(variant);
    EXPECT_EQ(static_cast<double>(count_parameters(*fused)),
              dense_model_parameters(DeclaredModelOptions<LlamaOptions>(options)));
  }
}

// Mixtral's layout in our terms: 4 whole SwiGLU experts, top-2, in every layer, learns a fixed
// batch (Adam at 1e-2 for 40 steps takes the loss to under half its start, ln 40 ≈ 3.7: a wide
// margin for a model that can memorise 36 tokens), and its router gets a gradient.
TEST(Llama, MoeTopTwoLearnsAFixedBatch) {
  torch::manual_seed(8);
  const auto model = build_llama(
      tiny_llama(), FfnConfig::of("moe", MoeOptions().num_experts(4).top_k(2).capacity_factor(0)));
  const auto tokens = torch::randint(0, 40, {4, 9});
  const auto targets = torch::randint(0, 40, {4, 9});
  torch::optim::Adam adam(model->parameters(), 1e-2);
  double first = 0, last = 0;
  bool router_moved = false;
  for (int step = 0; step < 40; ++step) {
    adam.zero_grad();
    const auto loss = torch::nn::functional::cross_entropy(model->forward(tokens).flatten(0, 1),
                                                           targets.flatten());
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

// Upcycling a dense Llama by copy into ExFusion (static weights 1/N) and into renormalised top-1
// and top-2 MoEs starts at the dense model's logits.
TEST(Llama, UpcyclingByCopyStartsAtTheDenseLogits) {
  torch::manual_seed(9);
  const auto dense = build_llama(tiny_llama(), FfnConfig{});
  {  // away from the init, as a trained model is
    torch::NoGradGuard no_grad;
    for (auto& parameter : dense->parameters()) parameter.add_(torch::randn_like(parameter) * 0.1);
  }
  const auto tokens = torch::randint(0, 40, {3, 9});
  dense->eval();
  torch::NoGradGuard no_grad;
  const auto expected = dense->forward(tokens);
  for (const auto& ffn :
       {FfnConfig::of("exfusion", ExFusionOptions().variant(FusionVariant::kStatic)),
        FfnConfig::of(
            "moe", MoeOptions().num_experts(4).top_k(1).capacity_factor(0).renormalize_top1(true)),
        FfnConfig::of("moe", MoeOptions().num_experts(4).top_k(2).capacity_factor(0))}) {
    const auto upcycled = build_llama(tiny_llama(), ffn);
    const auto report =
        upcycle_into(*upcycled, testing::tensors_of(*dense), InitConfig{}, "dense.safetensors");
    EXPECT_EQ(report.layers, 2);
    upcycled->eval();
    EXPECT_LT((upcycled->forward(tokens) - expected).abs().max().item<double>(), kLlamaSameLogits)
        << ffn.kind;
  }
}

// Drop-Upcycling into MoE-4-2 as the authors' code does it (ratio 0.5, one index set per
// matrix): in every layer, expert and matrix exactly ⌊0.5 · 24⌋ = 12 hidden units (rows of
// gate_proj and up_proj, columns of down_proj) differ from the dense FFN, the rest are copies,
// and the new values are drawn with the replaced values' mean and std. Tolerances: 12 units of 16
// values are n = 192 draws, whose mean lies within 5 σ/√n of the target (a 1-in-10⁶ miss) and
// whose std within 40 % of it (the sample std's own spread is σ/√(2n) ≈ 5 %).
TEST(Llama, DropUpcyclingReinitialisesHalfTheUnitsOfEachMatrix) {
  torch::manual_seed(10);
  const auto dense = build_llama(tiny_llama(), FfnConfig{});
  {  // weights of a trained model's spread, away from the init
    torch::NoGradGuard no_grad;
    for (auto& parameter : dense->parameters()) parameter.add_(torch::randn_like(parameter) * 0.1);
  }
  const auto dense_tensors = testing::tensors_of(*dense);
  const auto moe =
      build_llama(tiny_llama(), FfnConfig::of("moe", MoeOptions().num_experts(4).top_k(2)));
  InitConfig init;
  init.method = UpcycleMethod::kDrop;
  init.ratio = 0.5;
  init.independent_indices = true;
  init.seed = 3;
  upcycle_into(*moe, dense_tensors, init, "dense.safetensors");
  const auto ours = testing::tensors_of(*moe);
  const int64_t hidden = 24, dropped = 12;
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (const std::string matrix : {"gate_proj", "up_proj", "down_proj"}) {
      const auto name = "model.layers." + std::to_string(layer) + ".mlp." + matrix + ".weight";
      // Units as rows: [hidden, dim] (down_proj transposed).
      auto base = dense_tensors.at(name);
      if (matrix == "down_proj") base = base.t();
      const auto& experts = ours.at(name);
      std::vector<torch::Tensor> changed_sets;
      for (int64_t e = 0; e < 4; ++e) {
        auto expert = experts[e];
        if (matrix == "down_proj") expert = expert.t();
        const auto changed = (expert != base).any(1);
        EXPECT_EQ(changed.sum().item<int64_t>(), dropped) << name << " expert " << e;
        // Unchanged units are exact copies; the replaced ones were drawn from their stats.
        EXPECT_TRUE(torch::equal(expert.index({~changed}), base.index({~changed})));
        const auto drawn = expert.index({changed});
        const auto replaced = base.index({changed});
        const double sigma = replaced.std(/*unbiased=*/false).item<double>();
        const double n = static_cast<double>(drawn.numel());
        EXPECT_LT(std::abs(drawn.mean().item<double>() - replaced.mean().item<double>()),
                  5 * sigma / std::sqrt(n))
            << name << " expert " << e;
        EXPECT_NEAR(drawn.std(/*unbiased=*/false).item<double>() / sigma, 1.0, 0.4)
            << name << " expert " << e;
        changed_sets.push_back(changed);
      }
      // One index set per expert: the experts do not all re-initialise the same units.
      EXPECT_FALSE(torch::equal(changed_sets[0], changed_sets[1]) &&
                   torch::equal(changed_sets[1], changed_sets[2]) &&
                   torch::equal(changed_sets[2], changed_sets[3]))
          << name;
    }
  }
}

// DeRS on Llama's gated FFNs (gate_proj, up_proj, down_proj each a base and N deltas): upcycled
// by copy from a dense Llama, ders-moe (top-2, sparse deltas) and ders-exfusion (sw, low-rank
// deltas) start at the dense logits; ders-exfusion with moved deltas and fusion weights fuses
// into a plain Llama with the unfused logits and the dense parameter count. 1e-5 as above.
TEST(Llama, DersUpcyclesAndFusesOnTheGatedFfn) {
  torch::manual_seed(13);
  const auto dense = build_llama(tiny_llama(), FfnConfig{});
  {
    torch::NoGradGuard no_grad;
    for (auto& parameter : dense->parameters()) parameter.add_(torch::randn_like(parameter) * 0.1);
  }
  const auto tokens = torch::randint(0, 40, {3, 9});
  dense->eval();
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = dense->forward(tokens);
  }
  DersMoeOptions moe;
  moe.moe.num_experts(4).top_k(2).capacity_factor(0);
  moe.delta.form = DeltaForm::kSparse;
  DersExFusionOptions exfusion;
  exfusion.exfusion.variant(FusionVariant::kStatic).num_experts(3);
  exfusion.delta.form = DeltaForm::kLowRank;
  for (const auto& ffn :
       {FfnConfig::of("ders-moe", moe), FfnConfig::of("ders-exfusion", exfusion)}) {
    const auto upcycled = build_llama(tiny_llama(), ffn);
    EXPECT_EQ(
        upcycle_into(*upcycled, testing::tensors_of(*dense), InitConfig{}, "dense.safetensors")
            .layers,
        2);
    upcycled->eval();
    torch::NoGradGuard no_grad;
    EXPECT_LT((upcycled->forward(tokens) - expected).abs().max().item<double>(), kLlamaSameLogits)
        << ffn.kind;
    if (ffn.kind != "ders-exfusion") continue;
    for (auto& parameter : upcycled->named_parameters()) {
      if (parameter.key().find("delta") != std::string::npos ||
          parameter.key().find("fusion") != std::string::npos) {
        parameter.value().add_(torch::randn_like(parameter.value()) * 0.1);
      }
    }
    auto options = tiny_llama();
    options.ffn = ffn;
    const auto fused = fuse_model(ModelConfig::of("llama", options), *upcycled);
    fused->eval();
    const auto trained = upcycled->forward(tokens);
    EXPECT_GT((trained - expected).abs().max().item<double>(), 1e-3);
    EXPECT_LT((fused->forward(tokens) - trained).abs().max().item<double>(), kLlamaSameLogits);
    EXPECT_EQ(count_parameters(*fused), count_parameters(*dense));
  }
}

// Decoding a prompt and then one token at a time through the key/value cache gives the full
// forward's logits at every position: dense (grouped-query attention, untied and tied),
// MoE-4-2 with no token dropped, and ExFusion-mb unfused. The same float32 sums in another
// grouping: 1e-5, as fused against trained.
TEST(Llama, DecodingThroughTheCacheEqualsTheFullForward) {
  torch::manual_seed(12);
  const auto tokens = torch::randint(0, 40, {2, 9});
  for (const auto& [ffn, tied] : std::vector<std::pair<FfnConfig, bool>>{
           {FfnConfig{}, false},
           {FfnConfig{}, true},
           {FfnConfig::of("moe", MoeOptions().num_experts(4).top_k(2).capacity_factor(0)), false},
           {FfnConfig::of("exfusion", ExFusionOptions().variant(FusionVariant::kMemoryBank)),
            false}}) {
    const auto model = build_llama(tiny_llama(tied), ffn);
    model->eval();
    torch::NoGradGuard no_grad;
    const auto full = model->forward(tokens);
    auto state = model->start_decoding(2, 12);
    const auto prompt = model->decode(tokens.narrow(1, 0, 5), *state);
    EXPECT_LT((prompt - full.narrow(1, 0, 5)).abs().max().item<double>(), kLlamaSameLogits)
        << ffn.kind << " prompt";
    for (int64_t position = 5; position < 9; ++position) {
      const auto step = model->decode(tokens.narrow(1, position, 1), *state);
      EXPECT_LT((step - full.narrow(1, position, 1)).abs().max().item<double>(), kLlamaSameLogits)
          << ffn.kind << " position " << position;
    }
    EXPECT_EQ(state->length(), 9);
    // Three more would pass the 12 positions the state was made for.
    EXPECT_THROW(model->decode(tokens.narrow(1, 0, 4), *state), InputError);
  }
  // Past max_position_embeddings (32).
  EXPECT_THROW(build_llama(tiny_llama(), FfnConfig{})->start_decoding(1, 33), InputError);
}

}  // namespace
}  // namespace exfusion
