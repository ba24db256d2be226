// Small model configurations shared by the tests: big enough to exercise every code path
// (several blocks, heads, experts), small enough to run in milliseconds on a CPU.
#pragma once
#include "exfusion/models/vit.h"

namespace exfusion::testing {

inline VisionTransformerOptions tiny_vit(FfnKind kind = FfnKind::kDense,
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
  options.ffn.kind = kind;
  options.ffn.exfusion.variant(variant).num_experts(experts);
  return options;
}

}  // namespace exfusion::testing
