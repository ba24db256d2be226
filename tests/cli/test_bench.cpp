// `exfusion bench` on the CPU: one JSON line with the fields the GPU comparison reads
// (images/s, ms/step, TFLOP/s, MFU, peak memory, ExFusion's traffic floor), for dense and
// ExFusion FFNs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../support/cli.h"

namespace exfusion {
namespace {

nlohmann::json bench(const std::string& ffn_args) {
  const auto result = testing::run_cli(
      "bench --preset tiny --device cpu --threads 1 --batch-size 2 --warmup 1 --steps 2 "
      "--set model.img_size=32 model.depth=2 model.num_classes=10 " +
      ffn_args);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return nlohmann::json::parse(result.output);
}

TEST(Bench, PrintsOneJsonLineOfMeasurements) {
  const auto dense = bench("--ffn dense");
  EXPECT_EQ(dense["ffn"], "dense");
  EXPECT_EQ(dense["experts"], 0);
  EXPECT_EQ(dense["device"], "cpu");
  EXPECT_EQ(dense["precision"], "fp32");
  EXPECT_EQ(dense["threads"], 1);  // --threads 1 applies to the bench's steps too
  EXPECT_EQ(dense["cuda_graph"], false);
  // The custom kernels are CUDA-only: a CPU step does not run them.
  EXPECT_EQ(dense["layer_norm_kernels"], false);
  EXPECT_EQ(dense["bias_grad_epilogue"], false);
  for (const auto* path : {"expert_kernels", "layer_norm_kernels", "bias_grad_epilogue"}) {
    EXPECT_EQ(dense["fast_path_calls"][path]["taken"], 0) << path;
    EXPECT_EQ(dense["fast_path_calls"][path]["fell_back"], 0) << path;
  }
  EXPECT_EQ(dense["model"]["embed_dim"], 192);
  EXPECT_GT(dense["img_per_s"].get<double>(), 0.0);
  EXPECT_NEAR(dense["ms_per_step"].get<double>(), 1000.0 * 2 / dense["img_per_s"].get<double>(),
              1e-6 * dense["ms_per_step"].get<double>());
  EXPECT_GT(dense["tflops"].get<double>(), 0.0);
  EXPECT_TRUE(dense["mfu"].is_null());           // no known peak for a CPU
  EXPECT_TRUE(dense["peak_mem_mib"].is_null());  // measured on CUDA only
  const auto mb = bench("--ffn exfusion --variant mb --experts 3");
  EXPECT_EQ(mb["ffn"], "mb");
  EXPECT_EQ(mb["experts"], 3);
  EXPECT_EQ(mb["expert_kernels"], false);
  EXPECT_GT(mb["params"].get<int64_t>(), dense["params"].get<int64_t>());

  // ExFusion's traffic floor, by hand for this model: 2 blocks, dim 192, hidden 768, N = 3,
  // float32 (4 bytes per fused value), 2 images of 4 patches + cls = 10 tokens.
  const double values = 768.0 * 193 + 192.0 * 769;
  const double router = 2.0 * 10 * 192 * 4;
  const double expected = 2 * ((32.0 * 3 - 36 + 4) * values + router);
  EXPECT_NEAR(mb["exfusion_extra_gb"].get<double>(), expected / 1e9, 1e-12);
  EXPECT_EQ(dense["exfusion_extra_gb"].get<double>(), 0.0);
  EXPECT_TRUE(mb["exfusion_floor_ms"].is_null());  // no known bandwidth for a CPU

  const auto moe = bench("--ffn moe --experts 4 --top-k 2");
  EXPECT_EQ(moe["ffn"], "moe");
  EXPECT_EQ(moe["experts"], 4);
  EXPECT_EQ(moe["top_k"], 2);
  EXPECT_GT(moe["img_per_s"].get<double>(), 0.0);
  EXPECT_EQ(moe["exfusion_extra_gb"].get<double>(), 0.0);
}

TEST(Bench, ProfileWritesAChromeTraceThroughATemporaryFile) {
  const auto dir = testing::fresh_temp_dir("bench_profile");
  const auto trace = dir / "trace.json";
  const auto result = testing::run_cli(
      "bench --preset tiny --device cpu --threads 1 --batch-size 2 --warmup 1 --steps 1 "
      "--set model.img_size=32 model.depth=1 --profile " +
      trace.string());
  EXPECT_EQ(result.exit_code, 0) << result.output;
  const auto events = nlohmann::json::parse(testing::read_text(trace))["traceEvents"];
  ASSERT_TRUE(events.is_array());
  EXPECT_FALSE(events.empty());
  EXPECT_TRUE(testing::temp_files_in(dir).empty());
  testing::remove_tree(dir);
}

TEST(Bench, RejectsBadStepCounts) {
  const auto result = testing::run_cli("bench --steps 0");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("--steps"), std::string::npos) << result.output;
}

TEST(Bench, GraphedStepsAreRefusedOnCpuAndAfterTooFewWarmUpSteps) {
  const auto on_cpu =
      testing::run_cli("bench --preset tiny --device cpu --warmup 4 --steps 1 --cuda-graph true");
  EXPECT_EQ(on_cpu.exit_code, 2) << on_cpu.output;
  EXPECT_NE(on_cpu.output.find("train.cuda_graph = true: CUDA graphs need a CUDA device"),
            std::string::npos)
      << on_cpu.output;
  // Three eager steps and the capture come first, so at least four warm-up steps.
  const auto short_warmup = testing::run_cli("bench --warmup 3 --steps 1 --cuda-graph true");
  EXPECT_EQ(short_warmup.exit_code, 2) << short_warmup.output;
  EXPECT_NE(short_warmup.output.find("--warmup 3 with train.cuda_graph: expected at least 4"),
            std::string::npos)
      << short_warmup.output;
}

}  // namespace
}  // namespace exfusion
