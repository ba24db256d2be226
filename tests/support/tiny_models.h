// Small model configurations shared by the tests: big enough to exercise every code path
// (several blocks, heads, experts), small enough to run in milliseconds on a CPU.
#pragma once
#include <string>

#include "exfusion/fusion/ders_ffn.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/models/vit.h"
#include "exfusion/train/run_config.h"

namespace exfusion::testing {

// The ffn section of kind `kind` ("dense", "exfusion", "moe", "ders-moe" (sparse deltas) or
// "ders-exfusion" (low-rank deltas)) with N = `experts`.
inline FfnConfig ffn_of(const std::string& kind, FusionVariant variant = FusionVariant::kMemoryBank,
                        int64_t experts = 4) {
  if (kind == "exfusion") {
    return FfnConfig::of(kind, ExFusionOptions().variant(variant).num_experts(experts));
  }
  if (kind == "moe") return FfnConfig::of(kind, MoeOptions().num_experts(experts));
  if (kind == "ders-moe") {
    DersMoeOptions options;
    options.moe.num_experts(experts);
    return FfnConfig::of(kind, options);
  }
  if (kind == "ders-exfusion") {
    DersExFusionOptions options;
    options.exfusion.variant(variant).num_experts(experts);
    options.delta.form = DeltaForm::kLowRank;
    return FfnConfig::of(kind, options);
  }
  return FfnConfig{};
}

inline VisionTransformerOptions tiny_vit(const std::string& kind = "dense",
                                         FusionVariant variant = FusionVariant::kMemoryBank,
                                         int64_t experts = 4) {
  VisionTransformerOptions options;
  options.img_size = 8;
  options.in_chans = 2;
  options.patch_size = 4;
  options.embed_dim = 16;
  options.depth = 2;
  options.num_heads = 2;
  options.mlp_ratio = 2.0;
  options.num_classes = 5;
  options.ffn = ffn_of(kind, variant, experts);
  return options;
}

// `config` with the ViT `options` as its model and their ffn as its ffn section.
inline void use_vit(RunConfig& config, const VisionTransformerOptions& options) {
  config.model = ModelConfig::of("vit", options);
  config.ffn = options.ffn;
}

// The ViT options of `config`, with its ffn section.
inline VisionTransformerOptions vit_of(const RunConfig& config) {
  auto options = *config.model.as<VisionTransformerOptions>();
  options.ffn = config.ffn;
  return options;
}

}  // namespace exfusion::testing
