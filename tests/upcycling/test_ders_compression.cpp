// DeRS compression (upcycling/ders_compression.h): ratio 0 and 8-bit reproduce the experts,
// 4/2-bit error stays within half a quantisation step, 1 bit gives signs times the row's mean
// |Δ|, topk keeps exactly the largest |Δ|, drop rescales by 1/(1−p), the base is the recorded
// dense weight or the expert mean, and a written file synthesises what the in-memory
// compression gives, its tensors' bytes being the file's.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <fstream>
#include <set>

#include "../support/cli.h"
#include "../support/tiny_models.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/upcycling/ders_compression.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

DersOptions options_of(DersMethod method, double ratio = 0.5, int64_t bits = 8) {
  DersOptions options;
  options.method = method;
  options.ratio = ratio;
  options.bits = bits;
  return options;
}

torch::Tensor random_deltas(int64_t experts, int64_t out, int64_t in, uint64_t seed = 5) {
  torch::manual_seed(seed);
  return torch::randn({experts, out, in}) * 0.05;
}

torch::Tensor round_trip(const torch::Tensor& deltas, const DersOptions& options,
                         CompressedDeltas* kept = nullptr) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(options.seed));
  const auto compressed = compress_deltas(deltas, options, generator);
  if (kept != nullptr) *kept = compressed;
  return decompress_deltas(compressed, options, deltas.size(0), deltas.size(1), deltas.size(2),
                           "test");
}

TEST(DersCompression, RatioZeroReproducesTheDeltasExactly) {
  const auto deltas = random_deltas(3, 5, 7);
  for (const auto method : {DersMethod::kDrop, DersMethod::kTopk}) {
    CompressedDeltas compressed;
    const auto decoded = round_trip(deltas, options_of(method, 0.0), &compressed);
    EXPECT_EQ(compressed.values.size(1), 35);
    EXPECT_EQ(compressed.indices.scalar_type(), torch::kInt);  // 35 entries fit int32
    EXPECT_TRUE(torch::equal(decoded, deltas)) << to_string(method);
  }
}

TEST(DersCompression, TopkKeepsExactlyTheLargestMagnitudes) {
  const auto deltas = random_deltas(2, 4, 6);
  CompressedDeltas compressed;
  const auto decoded = round_trip(deltas, options_of(DersMethod::kTopk, 0.75), &compressed);
  const int64_t kept = 24 - 18;  // M − ⌊p·M⌋
  ASSERT_EQ(compressed.indices.sizes(), (std::vector<int64_t>{2, kept}));
  const auto flat = deltas.reshape({2, 24});
  for (int64_t e = 0; e < 2; ++e) {
    const auto order = std::get<1>(flat[e].abs().sort(0, /*descending=*/true));
    std::set<int64_t> largest, stored;
    for (int64_t i = 0; i < kept; ++i) largest.insert(order[i].item<int64_t>());
    for (int64_t i = 0; i < kept; ++i) stored.insert(compressed.indices[e][i].item<int64_t>());
    EXPECT_EQ(stored, largest) << "expert " << e;
    const auto decoded_flat = decoded.reshape({2, 24})[e];
    for (int64_t i = 0; i < 24; ++i) {
      const float expected = largest.count(i) != 0 ? flat[e][i].item<float>() : 0.0f;
      EXPECT_EQ(decoded_flat[i].item<float>(), expected) << "expert " << e << " entry " << i;
    }
  }
}

TEST(DersCompression, DropKeepsARandomShareRescaledByOneOverOneMinusP) {
  const auto deltas = random_deltas(3, 10, 10);
  auto options = options_of(DersMethod::kDrop, 0.4);
  options.seed = 11;
  CompressedDeltas compressed, again, other;
  const auto decoded = round_trip(deltas, options, &compressed);
  round_trip(deltas, options, &again);
  options.seed = 12;
  round_trip(deltas, options, &other);
  EXPECT_TRUE(torch::equal(compressed.indices, again.indices));  // seeded
  EXPECT_FALSE(torch::equal(compressed.indices, other.indices));
  ASSERT_EQ(compressed.indices.sizes(), (std::vector<int64_t>{3, 60}));  // 100 − ⌊0.4·100⌋
  EXPECT_FALSE(torch::equal(compressed.indices[0], compressed.indices[1]));  // per expert
  const auto flat = deltas.reshape({3, 100}), decoded_flat = decoded.reshape({3, 100});
  for (int64_t e = 0; e < 3; ++e) {
    const auto index = compressed.indices[e].to(torch::kLong);
    EXPECT_EQ(std::get<0>(at::_unique(index)).numel(), 60);
    const auto expected = flat[e].index_select(0, index) / 0.6f;
    EXPECT_LE((compressed.values[e] - expected).abs().max().item<float>(), 1e-7f);
    EXPECT_LE((decoded_flat[e].index_select(0, index) - expected).abs().max().item<float>(), 1e-7f);
    EXPECT_EQ(decoded_flat[e].ne(0).sum().item<int64_t>(), 60);  // the rest is zero
  }
}

// |Δ̂ − Δ| ≤ s/2 per element, plus float32 rounding of Δ/s and q·s (a few ulps of |Δ|).
void expect_within_half_a_step(int64_t bits) {
  auto deltas = random_deltas(2, 6, 7, 20 + static_cast<uint64_t>(bits));
  deltas[1][3].zero_();  // a row of zeros: scale 0, decoded exactly
  CompressedDeltas compressed;
  const auto decoded = round_trip(deltas, options_of(DersMethod::kQuant, 0.5, bits), &compressed);
  const int64_t top = (int64_t{1} << (bits - 1)) - 1;
  ASSERT_EQ(compressed.codes.scalar_type(), torch::kUInt8);
  EXPECT_EQ(compressed.codes.sizes(),
            (std::vector<int64_t>{2, 6, (7 * bits + 7) / 8}));  // 8/k codes per byte
  const auto expected_scales = deltas.abs().amax(2) / static_cast<float>(top);
  EXPECT_LE((compressed.scales - expected_scales).abs().max().item<float>(), 1e-9f);
  const auto bound = compressed.scales.unsqueeze(2) / 2 + deltas.abs() * 4e-7f + 1e-9f;
  EXPECT_TRUE(((decoded - deltas).abs() <= bound).all().item<bool>())
      << bits << " bits: worst excess "
      << ((decoded - deltas).abs() - compressed.scales.unsqueeze(2) / 2).max().item<float>();
  EXPECT_TRUE(torch::equal(decoded[1][3], torch::zeros({7})));
  // Rounding to nearest reaches the end codes: the largest |Δ| of each row decodes exactly.
  const auto row_max = std::get<1>(deltas.abs().max(2, /*keepdim=*/true));
  EXPECT_LE((decoded.gather(2, row_max) - deltas.gather(2, row_max)).abs().max().item<float>(),
            1e-7f);
}

TEST(DersCompression, EightBitReproducesTheExpertsWithinHalfAStep) {
  expect_within_half_a_step(8);
  // Half a step of 8 bits is max|Δ_row|/254: under 0.4 % of the row's largest delta.
  const auto deltas = random_deltas(2, 6, 7);
  const auto decoded = round_trip(deltas, options_of(DersMethod::kQuant, 0.5, 8));
  const auto relative = ((decoded - deltas).abs().amax(2) / deltas.abs().amax(2)).max();
  EXPECT_LE(relative.item<float>(), 1.0f / 254 + 1e-6f);
}

TEST(DersCompression, FourAndTwoBitErrorIsAtMostHalfAStep) {
  expect_within_half_a_step(4);
  expect_within_half_a_step(2);
}

TEST(DersCompression, OneBitStoresSignsWithTheMeanMagnitudePerRow) {
  const auto deltas = random_deltas(2, 3, 9);
  CompressedDeltas compressed;
  const auto decoded = round_trip(deltas, options_of(DersMethod::kQuant, 0.5, 1), &compressed);
  EXPECT_EQ(compressed.codes.sizes(), (std::vector<int64_t>{2, 3, 2}));  // 9 codes: 2 bytes
  const auto scale = deltas.abs().mean(2, /*keepdim=*/true);
  const auto expected = torch::where(deltas >= 0, scale, -scale);
  EXPECT_LE((decoded - expected).abs().max().item<float>(), 1e-9f);
  // A step of 1 bit is 2s: the error is ||Δ| − s|, within half a step where |Δ| ≤ 2s.
  const auto error = (decoded - deltas).abs();
  EXPECT_LE((error - (deltas.abs() - scale).abs()).abs().max().item<float>(), 1e-8f);
}

TEST(DersCompression, OptionsOutsideTheirRangeAreRefused) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(0);
  const auto deltas = random_deltas(1, 2, 2);
  for (const auto& options :
       {options_of(DersMethod::kQuant, 0.5, 3), options_of(DersMethod::kTopk, 1.0),
        options_of(DersMethod::kDrop, -0.1)}) {
    EXPECT_THROW(compress_deltas(deltas, options, generator), InputError);
  }
  EXPECT_THROW(parse_ders_method("svd"), InputError);
  CompressedDeltas damaged;
  damaged.indices = torch::tensor({{0, 9}}, torch::kInt);  // 9 is outside 2·2 entries
  damaged.values = torch::ones({1, 2});
  EXPECT_THROW(decompress_deltas(damaged, options_of(DersMethod::kTopk), 1, 2, 2, "damaged"),
               InputError);
}

struct CompressedMoe {
  ModelPtr model;
  DenseTensors dense_base;
  DersFile file;
};

// A tiny ViT with a 3-expert MoE in both blocks, blocks.0.mlp.fc1 given a recorded base.
CompressedMoe compressed_moe(const DersOptions& options) {
  torch::manual_seed(4);
  auto vit = testing::tiny_vit("moe", FusionVariant::kMemoryBank, 3);
  CompressedMoe result{vit.build(vit.ffn), {}, {}};
  result.dense_base.emplace("blocks.0.mlp.fc1.weight", torch::randn({32, 16}) * 0.02);
  result.file = compress_model(*result.model, result.dense_base, options);
  return result;
}

torch::Tensor stored(const DersFile& file, const std::string& name) {
  for (const auto& [key, tensor] : file.tensors) {
    if (key == name) return tensor;
  }
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

TEST(DersCompression, BaseIsTheRecordedDenseWeightElseTheExpertMean) {
  const auto moe = compressed_moe(options_of(DersMethod::kTopk, 0.5));
  EXPECT_TRUE(torch::equal(stored(moe.file, "ders_base.blocks.0.mlp.fc1.weight"),
                           moe.dense_base.at("blocks.0.mlp.fc1.weight")));
  const auto tensors = module_tensors(*moe.model);
  for (const auto& [name, tensor] : tensors) {
    if (name == "blocks.1.mlp.fc2.weight") {
      EXPECT_LE((stored(moe.file, "ders_base." + name) - tensor.mean(0)).abs().max().item<float>(),
                1e-9f);
    }
  }
  const auto& banks = moe.file.report["banks"];
  ASSERT_EQ(banks.size(), 4u);  // fc1 and fc2 of two blocks
  EXPECT_EQ(banks[0]["weight"], "blocks.0.mlp.fc1.weight");
  EXPECT_EQ(banks[0]["base"], "dense_base");
  for (size_t i = 1; i < 4; ++i) EXPECT_EQ(banks[i]["base"], "expert_mean");
  // Expert biases and every other tensor are kept whole; bank weights are not.
  EXPECT_TRUE(torch::equal(stored(moe.file, "model.blocks.0.mlp.fc1.bias"),
                           moe.model->named_parameters()["blocks.0.mlp.fc1.bias"]));
  for (const auto& [name, tensor] : moe.file.tensors) {
    EXPECT_NE(name, "model.blocks.0.mlp.fc1.weight");
  }
  // A recorded base of another shape is refused.
  DenseTensors wrong{{"blocks.0.mlp.fc2.weight", torch::zeros({3, 3})}};
  EXPECT_THROW(compress_model(*moe.model, wrong, options_of(DersMethod::kTopk)), InputError);
}

TEST(DersCompression, WrittenFileSynthesisesTheInMemoryResultAndItsBytesAreTheFiles) {
  const auto dir = testing::fresh_temp_dir("ders-file");
  for (const auto& options :
       {options_of(DersMethod::kTopk, 0.5), options_of(DersMethod::kDrop, 0.3),
        options_of(DersMethod::kQuant, 0.5, 4)}) {
    const auto moe = compressed_moe(options);
    const auto path = dir / (to_string(options.method) + ".safetensors");
    save_safetensors(path, moe.file.tensors, {{kDersMetadataKey, options.to_json().dump()}});
    const auto synthesised = synthesise_ders_tensors(load_safetensors(path), path);

    int64_t bytes = 0;
    for (const auto& [name, tensor] : moe.file.tensors) bytes += tensor.nbytes();
    std::ifstream in(path, std::ios::binary);
    uint64_t header = 0;
    in.read(reinterpret_cast<char*>(&header), sizeof header);
    EXPECT_EQ(bytes, static_cast<int64_t>(std::filesystem::file_size(path) - 8 - header));
    int64_t bank_bytes = 0;
    for (const auto& bank : moe.file.report["banks"])
      bank_bytes += bank["bytes_after"].get<int64_t>();
    int64_t other_bytes = 0;
    for (const auto& [name, tensor] : moe.file.tensors) {
      if (name.rfind("model.", 0) == 0) other_bytes += tensor.nbytes();
    }
    EXPECT_EQ(bank_bytes + other_bytes, bytes);

    // The file's synthesis equals base + the in-memory deltas' decode, and the loaded model
    // matches the original everywhere but in the compressed weights.
    const auto tensors = module_tensors(*moe.model);
    EXPECT_EQ(synthesised.size(), tensors.size());
    for (const auto& [name, tensor] : tensors) {
      const auto& got = synthesised.at("model." + name);
      if (name.size() < 7 || name.substr(name.size() - 7) != ".weight" ||
          name.find(".mlp.fc") == std::string::npos) {
        EXPECT_TRUE(torch::equal(got, tensor)) << name;
        continue;
      }
      const auto base = stored(moe.file, "ders_base." + name);
      const std::string delta = "ders_delta." + name;
      CompressedDeltas parts;
      if (options.method == DersMethod::kQuant) {
        parts.codes = stored(moe.file, delta + ".codes");
        parts.scales = stored(moe.file, delta + ".scales");
      } else {
        parts.indices = stored(moe.file, delta + ".indices");
        parts.values = stored(moe.file, delta + ".values");
      }
      const auto expected =
          base.unsqueeze(0) + decompress_deltas(parts, options, tensor.size(0), tensor.size(1),
                                                tensor.size(2), "in memory");
      EXPECT_TRUE(torch::equal(got, expected)) << name;
    }
    SafetensorsFile loaded;
    for (const auto& [name, tensor] : synthesised) loaded.tensors.emplace(name, tensor);
    auto vit = testing::tiny_vit("moe", FusionVariant::kMemoryBank, 3);
    auto model = vit.build(vit.ffn);
    load_module_tensors(*model, loaded, path, "model.");
  }
  testing::remove_tree(dir);
}

}  // namespace
}  // namespace exfusion
