// An FFN kind defined here, under tests/, with no edit under src/: it registers with one call,
// is configured and trained through the library's command line (in-process), is fused through
// its dense form, and a key it does not have is reported with the full config path.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "../support/cli.h"
#include "exfusion/cli/cli.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/linear.h"
#include "exfusion/layers/mlp.h"
#include "exfusion/models/registry.h"
#include "exfusion/train/run_config.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fast_paths.h"
#include "exfusion/util/init.h"

namespace exfusion {
namespace {

// y = scale · fc2(GELU(fc1 x)): a dense FFN with a fixed output scale, whose dense form folds
// the scale into fc2.
class ScaledMlpImpl : public FeedForwardImpl, public HasDenseForm {
 public:
  ScaledMlpImpl(int64_t dim, int64_t hidden, double scale) : scale_(scale) {
    fc1 = register_module("fc1", Linear(dim, hidden));
    fc2 = register_module("fc2", Linear(hidden, dim));
    for (const auto& layer : {fc1, fc2}) init_vit_linear(layer);
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    return fc2->forward(exact_gelu(fc1->forward(x))) * scale_;
  }
  std::vector<std::pair<std::string, torch::Tensor>> dense_tensors() const override {
    return {{"fc1.weight", fc1->weight.detach()},
            {"fc1.bias", fc1->bias.detach()},
            {"fc2.weight", fc2->weight.detach() * scale_},
            {"fc2.bias", fc2->bias.detach() * scale_}};
  }

  Linear fc1{nullptr}, fc2{nullptr};

 private:
  double scale_;
};

struct ScaledMlpOptions {
  double scale = 0.5;

  template <class Fields>
  void fields(Fields& f) {
    f("scale", scale, "output scale of the FFN", config::positive<double>());
  }
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const {
    return std::make_shared<ScaledMlpImpl>(site.dim, site.hidden, scale);
  }
  std::string run_name() const { return "scaled-mlp"; }
};

// A dense FFN that records, at every forward, whether the fast-path policy in force allows the
// LayerNorm kernels: how the tests see, on a CPU, which policy evaluation runs under.
std::vector<bool> layer_norm_kernels_seen;

class PolicyProbeImpl : public MlpImpl {
 public:
  using MlpImpl::MlpImpl;
  torch::Tensor forward(const torch::Tensor& x) override {
    layer_norm_kernels_seen.push_back(FastPathScope::policy().layer_norm_kernels);
    return MlpImpl::forward(x);
  }
};

struct PolicyProbeOptions {
  template <class Fields>
  void fields(Fields& /*f*/) {}
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const {
    return std::make_shared<PolicyProbeImpl>(site.dim, site.hidden);
  }
  std::string run_name() const { return "policy-probe"; }
};

class PluginFfnKind : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ffn_kinds().add<ScaledMlpOptions>("scaled-mlp", "test only: a dense FFN times a scale");
    ffn_kinds().add<PolicyProbeOptions>("policy-probe", "test only: records the fast paths");
  }
  void SetUp() override {
    dir_ = testing::fresh_temp_dir("plugin-ffn-kind");
    std::filesystem::create_directories(dir_ / "data");
    testing::write_toy_idx_dataset(dir_ / "data", 256, 64);
  }
  void TearDown() override { testing::remove_tree(dir_); }

  static int cli(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    for (const auto& arg : args) argv.push_back(arg.c_str());
    return run_cli(static_cast<int>(argv.size()), argv.data());
  }

  int train(const std::vector<std::string>& extra, const std::string& kind = "scaled-mlp") {
    std::vector<std::string> args = {"exfusion",
                                     "train",
                                     "--data",
                                     (dir_ / "data").string(),
                                     "--out",
                                     (dir_ / "run").string(),
                                     "--threads",
                                     "1",
                                     "--ffn",
                                     kind,
                                     "--set",
                                     "model.embed_dim=16",
                                     "model.depth=2",
                                     "model.num_heads=2",
                                     "train.batch_size=16",
                                     "train.epochs=1",
                                     "train.log_every=4"};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(args);
  }

  std::filesystem::path dir_;
};

TEST_F(PluginFfnKind, IsConfiguredTrainedAndFusedFromTheCommandLine) {
  ASSERT_EQ(train({"ffn.scale=0.25"}), 0);
  const auto config = nlohmann::json::parse(testing::read_text(dir_ / "run" / "config.json"));
  EXPECT_EQ(config["ffn"]["kind"], "scaled-mlp");
  EXPECT_EQ(config["ffn"]["scale"], 0.25);
  const auto summary = nlohmann::json::parse(testing::read_text(dir_ / "run" / "summary.json"));
  EXPECT_EQ(summary["steps"], 16);  // 256 samples / batch 16, one epoch
  // Its dense form is exact: fusing changes no logit beyond float32 rounding.
  EXPECT_LE(summary["fused_max_abs_logit_diff"].get<double>(), 1e-5);
  EXPECT_NEAR(summary["fused_test_accuracy"].get<double>(), summary["test_accuracy"].get<double>(),
              1e-9);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "run" / "model.safetensors"));
}

TEST_F(PluginFfnKind, AKeyItDoesNotHaveIsNamedWithItsPath) {
  const auto sections = [] {
    auto config = default_run_config();
    return build_run_config(config, {"", {"ffn.kind=scaled-mlp", "ffn.scale=2"}});
  }();
  EXPECT_EQ(sections.ffn.kind, "scaled-mlp");
  try {
    build_run_config(default_run_config(), {"", {"ffn.kind=scaled-mlp", "ffn.scalee=2"}});
    FAIL() << "accepted ffn.scalee";
  } catch (const InputError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("--set ffn.scalee=2"), std::string::npos) << message;
    EXPECT_NE(message.find("unknown key 'ffn.scalee'"), std::string::npos) << message;
    EXPECT_NE(message.find("scale"), std::string::npos) << message;
  }
  try {
    build_run_config(default_run_config(), {"", {"ffn.kind=scaled-mlp", "ffn.scale=-1"}});
    FAIL() << "accepted a negative scale";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("ffn.scale = -1"), std::string::npos) << error.what();
  }
  // The command line says the same, with exit code 2.
  EXPECT_EQ(train({"ffn.momentum=0.9"}), 2);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "run" / "config.json"));
}

// `exfusion eval` evaluates under the fast-path policy of the run it reads, as training did.
TEST_F(PluginFfnKind, EvaluationHonoursTheRunsFastPathSettings) {
  for (const bool kernels : {false, true}) {
    SCOPED_TRACE(kernels ? "layer_norm_kernels=true" : "layer_norm_kernels=false");
    testing::remove_tree(dir_ / "run");
    ASSERT_EQ(train({std::string("train.layer_norm_kernels=") + (kernels ? "true" : "false"),
                     "train.max_steps=2"},
                    "policy-probe"),
              0);
    layer_norm_kernels_seen.clear();
    ASSERT_EQ(cli({"exfusion", "eval", (dir_ / "run").string(), "--unfused"}), 0);
    ASSERT_FALSE(layer_norm_kernels_seen.empty());
    for (const bool seen : layer_norm_kernels_seen) EXPECT_EQ(seen, kernels);
    // Outside any run's scope the default policy is back.
    EXPECT_TRUE(FastPathScope::policy().layer_norm_kernels);
  }
}

}  // namespace
}  // namespace exfusion
