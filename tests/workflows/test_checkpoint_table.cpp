// `exfusion info`'s page (train/checkpoint_table.h): labelled lines for the checkpoint, model,
// FFN section, parameters and FLOPs, then one row per FFN site with its kind, widths and what
// its layer reports, from a description shaped as describe_checkpoint writes it.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "exfusion/workflows/checkpoint_table.h"

namespace exfusion {
namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(CheckpointTable, ListsTheModelItsParametersAndEveryFfnWithItsFusionWeights) {
  const nlohmann::json info = {
      {"checkpoint", "runs/r/state.safetensors"},
      {"kind", "training-state"},
      {"format", 3},
      {"step", 40},
      {"architecture",
       {{"model", {{"kind", "vit"}, {"embed_dim", 16}, {"depth", 2}}},
        {"ffn", {{"kind", "exfusion"}, {"layers", nlohmann::json::array()}, {"num_experts", 2}}}}},
      {"params", 1333274},
      {"params_stored", 1333290},
      {"params_deployed", 540170.0},
      {"forward_gflops_per_sample", 0.0123},
      {"ffn_sites",
       {{{"path", "blocks.0.mlp"}, {"kind", "exfusion"}, {"dim", 16}, {"hidden", 32}},
        {{"path", "blocks.1.mlp"}, {"kind", "dense"}, {"dim", 16}, {"hidden", 32}}}},
      {"fusion_weights", {{"blocks.0", {{"m", {0.25, 0.75}}}}}}};
  const auto text = format_checkpoint_description(info);
  const auto lines = lines_of(text);
  ASSERT_GE(lines.size(), 9u) << text;
  EXPECT_EQ(lines[0], "checkpoint  runs/r/state.safetensors (training-state, format 3, step 40)");
  EXPECT_EQ(lines[1], "model       vit: depth 2, embed_dim 16");
  EXPECT_EQ(lines[2], "ffn         exfusion: layers [], num_experts 2");
  EXPECT_EQ(lines[3], "parameters  1,333,274 trained, 540,170 deployed, 1,333,290 values stored");
  EXPECT_EQ(lines[4], "forward     0.0123 GFLOPs per sample");
  EXPECT_NE(lines[6].find("FFN"), std::string::npos) << text;
  EXPECT_EQ(lines[7].rfind("blocks.0.mlp", 0), 0u) << text;
  EXPECT_NE(lines[7].find("exfusion"), std::string::npos) << text;
  EXPECT_NE(lines[7].find("m 0.25 0.75"), std::string::npos) << text;
  EXPECT_EQ(lines[8].rfind("blocks.1.mlp", 0), 0u) << text;
  EXPECT_EQ(lines[8].find("m 0.25"), std::string::npos) << "a dense FFN reports nothing\n" << text;
}

}  // namespace
}  // namespace exfusion
