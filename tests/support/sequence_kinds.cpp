// The test-only "two_stage" model and "sequence_transduction" task (see sequence_kinds.h):
// everything a kind brings, written against the public seams only.
#include "sequence_kinds.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "exfusion/layers/capabilities.h"
#include "exfusion/layers/layer_norm.h"
#include "exfusion/layers/linear.h"
#include "exfusion/models/export_formats.h"
#include "exfusion/models/registry.h"
#include "exfusion/tasks/task.h"
#include "exfusion/util/error.h"

namespace exfusion::testing {
namespace {

constexpr int64_t kIgnored = -100;  // a padded target

// ---- the model ---------------------------------------------------------------------------

class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(int64_t dim, std::shared_ptr<FeedForwardImpl> ffn_module) {
    norm = register_module("norm", LayerNorm(dim));
    ffn = register_module("ffn", std::move(ffn_module));
  }
  torch::Tensor forward(const torch::Tensor& x) { return x + ffn->forward(norm->forward(x)); }
  LayerNorm norm{nullptr};
  std::shared_ptr<FeedForwardImpl> ffn;
};
TORCH_MODULE(ResidualBlock);

class TwoStageImpl : public ModelImpl, public ExemptFromWeightDecay {
 public:
  TwoStageImpl(const TwoStageOptions& options, const FfnConfig& ffn_config) {
    const auto& widths = options.stage_widths;
    embed = register_module("embed", torch::nn::Embedding(options.vocab, widths[0]));
    const auto sites = options.ffn_sites();
    size_t next_site = 0;
    stages = register_module("stages", torch::nn::ModuleList());
    for (size_t s = 0; s < 2; ++s) {
      auto blocks = torch::nn::ModuleList();
      for (int64_t b = 0; b < options.stage_depths[s]; ++b) {
        blocks->push_back(ResidualBlock(widths[s], ffn_config.build(sites[next_site++])));
      }
      stages->push_back(blocks);
    }
    proj = register_module("proj", Linear(widths[0], widths[1]));
    norm = register_module("norm", LayerNorm(widths[1]));
    head = register_module("head", Linear(widths[1], options.vocab));
  }
  std::vector<std::string> exempt_from_weight_decay() const override { return {"embed.weight"}; }
  torch::Tensor forward(const torch::Tensor& tokens) override {
    auto x = embed->forward(tokens);
    for (size_t s = 0; s < stages->size(); ++s) {
      if (s == 1) x = proj->forward(x);
      for (const auto& block : *stages[s]->as<torch::nn::ModuleListImpl>()) {
        x = block->as<ResidualBlockImpl>()->forward(x);
      }
    }
    return head->forward(norm->forward(x));  // [B, T, vocab]
  }

  torch::nn::Embedding embed{nullptr};
  torch::nn::ModuleList stages{nullptr};  // stages.<stage>.<block>
  Linear proj{nullptr}, head{nullptr};
  LayerNorm norm{nullptr};
};

std::string site_path(size_t stage, int64_t block) {
  return "stages." + std::to_string(stage) + "." + std::to_string(block) + ".ffn";
}

// ---- the data ----------------------------------------------------------------------------

struct Sequences {
  torch::Tensor inputs, targets;  // int64 [samples, max_length], targets padded with kIgnored
};

Sequences read_sequences(const std::filesystem::path& file, int64_t max_length, int64_t vocab) {
  std::ifstream in(file);
  if (!in) throw InputError(file.string() + ": cannot be opened (data.dir)");
  std::vector<int64_t> inputs, targets;
  std::string line;
  int64_t number = 0, samples = 0;
  while (std::getline(in, line)) {
    ++number;
    const auto at = file.string() + ":" + std::to_string(number);
    const auto colon = line.find(':');
    if (colon == std::string::npos)
      throw InputError(at + ": expected '<input ids> : <target ids>'");
    std::vector<int64_t> ids[2];
    for (int side = 0; side < 2; ++side) {
      std::istringstream part(side == 0 ? line.substr(0, colon) : line.substr(colon + 1));
      int64_t id = 0;
      while (part >> id) {
        if (id < 0 || id >= vocab) {
          throw InputError(at + ": token " + std::to_string(id) +
                           " outside [0, model.vocab = " + std::to_string(vocab) + ")");
        }
        ids[side].push_back(id);
      }
    }
    if (ids[0].empty() || ids[0].size() != ids[1].size() ||
        static_cast<int64_t>(ids[0].size()) > max_length) {
      throw InputError(at + ": expected 1 to data.max_length = " + std::to_string(max_length) +
                       " inputs and as many targets");
    }
    ids[0].resize(static_cast<size_t>(max_length), 0);
    ids[1].resize(static_cast<size_t>(max_length), kIgnored);
    inputs.insert(inputs.end(), ids[0].begin(), ids[0].end());
    targets.insert(targets.end(), ids[1].begin(), ids[1].end());
    ++samples;
  }
  if (samples == 0) throw InputError(file.string() + ": no samples");
  return {torch::tensor(inputs).view({samples, max_length}),
          torch::tensor(targets).view({samples, max_length})};
}

// Batches in an order that is a pure function of (seed, epoch) when shuffled; each rank reads
// its part of every global batch.
class SequenceBatches : public BatchSource {
 public:
  SequenceBatches(Sequences data, int64_t batch_size, DataShard shard, int64_t seed, bool training)
      : data_(std::move(data)),
        global_batch_(batch_size * shard.count),
        shard_(shard),
        seed_(seed),
        training_(training) {}
  int64_t size() const override { return data_.inputs.size(0); }
  int64_t batches_per_epoch() const override {
    return training_ ? size() / global_batch_ : (size() + global_batch_ - 1) / global_batch_;
  }
  void start_epoch(int64_t epoch, int64_t skip_batches) override {
    if (training_) {
      auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed_ * 1000 + epoch));
      order_ = torch::randperm(size(), generator, torch::kInt64);
    } else {
      order_ = torch::arange(size(), torch::kInt64);
    }
    next_ = skip_batches;
  }
  std::optional<Batch> next() override {
    if (next_ >= batches_per_epoch()) return std::nullopt;
    const int64_t start = next_++ * global_batch_;
    const int64_t end = std::min(start + global_batch_, size());
    const int64_t part = (end - start + shard_.count - 1) / shard_.count;
    const int64_t from = std::min(end, start + shard_.index * part);
    const auto rows = order_.slice(0, from, std::min(end, from + part));
    Batch batch{data_.inputs.index_select(0, rows), data_.targets.index_select(0, rows)};
    batch.tokens = batch.targets.ne(kIgnored).sum().item<int64_t>();
    return batch;
  }

 private:
  Sequences data_;
  int64_t global_batch_;
  DataShard shard_;
  int64_t seed_;
  bool training_;
  torch::Tensor order_;
  int64_t next_ = 0;
};

// ---- the task ----------------------------------------------------------------------------

class SequenceTransductionTask : public Task {
 public:
  explicit SequenceTransductionTask(TaskOptions options) : options_(options) {}

  TaskData load_data(DataSection& section, const ModelOptions& model,
                     bool with_train) const override {
    const auto& data = *section.as<SequenceDataOptions>();
    const std::filesystem::path dir = data.dir;
    TaskData out;
    if (with_train) {
      out.train = std::make_unique<SequenceBatches>(
          read_sequences(dir / "train.txt", data.max_length, model.num_outputs()),
          options_.batch_size, options_.shard, options_.seed, /*training=*/true);
    }
    auto test = read_sequences(dir / "val.txt", data.max_length, model.num_outputs());
    out.test_targets = test.targets;
    out.test = std::make_unique<SequenceBatches>(std::move(test), options_.batch_size,
                                                 options_.shard, options_.seed,
                                                 /*training=*/false);
    out.description = {{"dir", data.dir}, {"max_length", data.max_length}};
    return out;
  }
  const TaskMetrics& metrics() const override {
    static const TaskMetrics declared{
        Averaging::kPerToken,
        {{"target_probability", Averaging::kPerToken, true, false, "p(target)"},
         {"perplexity", Averaging::kDerived, false, false, "ppl"}},
        "perplexity",
        "sequences",
        "seq"};
    return declared;
  }
  torch::Tensor loss(const torch::Tensor& outputs, const Batch& batch) const override {
    return at::cross_entropy_loss(outputs.to(torch::kFloat32).flatten(0, 1),
                                  batch.targets.flatten(), {}, at::Reduction::Mean, kIgnored);
  }
  torch::Tensor metric_sums(const torch::Tensor& outputs, const Batch& batch) const override {
    const auto counted = batch.targets.ne(kIgnored);
    const auto probabilities = torch::softmax(outputs.detach().to(torch::kFloat32), -1);
    const auto target = probabilities.gather(-1, batch.targets.clamp_min(0).unsqueeze(-1));
    return (target.squeeze(-1) * counted).sum().to(torch::kFloat64).reshape({1});
  }
  Batch synthetic_batch(const ModelOptions& model, int64_t batch_size) const override {
    const auto length = model.input_shapes().front().front();
    Batch batch{torch::randint(0, model.num_outputs(), {batch_size, length}),
                torch::randint(0, model.num_outputs(), {batch_size, length})};
    batch.tokens = batch_size * length;
    return batch;
  }
  void derive(MetricValues& values) const override {
    values.set("perplexity", std::exp(values.at("loss")));
  }
  torch::Tensor eval_loss_sum(const torch::Tensor& outputs, const Batch& batch) const override {
    return at::cross_entropy_loss(outputs.flatten(0, 1), batch.targets.flatten(), {},
                                  at::Reduction::Sum, kIgnored);
  }
  double tokens_per_sample(const ModelOptions& model) const override {
    return static_cast<double>(model.input_shapes().front().front());
  }

 private:
  TaskOptions options_;
};

}  // namespace

// ---- the model's options -----------------------------------------------------------------

void TwoStageOptions::validate(const config::Location& at) const {
  if (stage_widths.size() != 2 || stage_widths[0] < 1 || stage_widths[1] < 1) {
    config::fail(at, "stage_widths", stage_widths, "two positive widths");
  }
  if (stage_depths.size() != 2 || stage_depths[0] < 1 || stage_depths[1] < 1) {
    config::fail(at, "stage_depths", stage_depths, "two positive block counts");
  }
}

int64_t TwoStageOptions::blocks() const { return stage_depths[0] + stage_depths[1]; }

std::vector<FfnSite> TwoStageOptions::ffn_sites() const {
  std::vector<FfnSite> sites;
  int64_t index = 0;
  for (size_t s = 0; s < 2; ++s) {
    const auto width = stage_widths[s];
    const auto hidden = static_cast<int64_t>(std::llround(mlp_ratio * static_cast<double>(width)));
    for (int64_t b = 0; b < stage_depths[s]; ++b) {
      sites.push_back({site_path(s, b), index++, width, hidden, static_cast<double>(max_length),
                       FfnForm::plain()});
    }
  }
  return sites;
}

ModelPtr TwoStageOptions::build(const FfnConfig& ffn) const {
  validate_ffn(ffn, {"", "ffn"});
  return std::make_shared<TwoStageImpl>(*this, ffn);
}

void TwoStageOptions::validate_ffn(const FfnConfig& ffn, const config::Location& at) const {
  ffn.validate_layers(blocks(), at);
}

double TwoStageOptions::forward_flops_per_sample(const FfnConfig& ffn) const {
  const double tokens = static_cast<double>(max_length);
  double macs = tokens * static_cast<double>(stage_widths[0] * stage_widths[1]) +
                tokens * static_cast<double>(stage_widths[1] * vocab);
  for (const auto& site : ffn_sites()) macs += tokens * ffn.forward_macs_per_token(site);
  return 2.0 * macs;
}

namespace {

// The two-stage model's own export format: its names, a model.json naming its architecture.
class TwoStageExport : public ExportFormat {
 public:
  std::vector<DescriptionFile> description_files(const ExportContext& context) const override {
    const auto* model = context.model.as<TwoStageOptions>();
    auto description = exfusion_model_description(context);
    description["architecture"] = "two_stage";
    description["stage_widths"] = model->stage_widths;
    description["stage_depths"] = model->stage_depths;
    description["vocab"] = model->vocab;
    const auto name = std::filesystem::path(context.weights_file).replace_extension(".json");
    return {{name.string(), description.dump(2) + "\n"}};
  }
};

}  // namespace

TensorShapes TwoStageOptions::dense_tensor_shapes() const {
  const auto w0 = stage_widths[0], w1 = stage_widths[1];
  TensorShapes shapes{{"embed.weight", {vocab, w0}}};
  for (const auto& site : ffn_sites()) {
    const auto block = site.path.substr(0, site.path.size() - std::string(".ffn").size());
    shapes.push_back({block + ".norm.weight", {site.dim}});
    shapes.push_back({block + ".norm.bias", {site.dim}});
    shapes.push_back({site.path + ".fc1.weight", {site.hidden, site.dim}});
    shapes.push_back({site.path + ".fc1.bias", {site.hidden}});
    shapes.push_back({site.path + ".fc2.weight", {site.dim, site.hidden}});
    shapes.push_back({site.path + ".fc2.bias", {site.dim}});
  }
  shapes.push_back({"proj.weight", {w1, w0}});
  shapes.push_back({"proj.bias", {w1}});
  shapes.push_back({"norm.weight", {w1}});
  shapes.push_back({"norm.bias", {w1}});
  shapes.push_back({"head.weight", {vocab, w1}});
  shapes.push_back({"head.bias", {vocab}});
  return shapes;
}

double TwoStageOptions::parameters_outside_ffns() const {
  double total = 0;
  for (const auto& [name, shape] : dense_tensor_shapes()) {
    if (name.find(".ffn.") != std::string::npos) continue;
    double values = 1;
    for (const auto size : shape) values *= static_cast<double>(size);
    total += values;
  }
  return total;
}

void SequenceDataOptions::validate_with(const ModelOptions& model,
                                        const config::Location& at) const {
  const auto length = model.input_shapes().front().front();
  if (max_length != length) {
    config::fail(at, "max_length", max_length,
                 "the model's tokens per sample (" + std::to_string(length) + ")");
  }
}

void register_sequence_kinds() {
  model_kinds().add<TwoStageOptions>(
      "two_stage", "test-only: token embedding, two stages of residual FFN blocks, a head");
  export_formats().add("two_stage_json", "two_stage", "test-only: our names, its own model.json",
                       std::make_shared<TwoStageExport>());
  task_kinds().add(
      "sequence_transduction", "test-only: a target token per input token, padding ignored",
      [](const TaskOptions& options) {
        return std::make_unique<SequenceTransductionTask>(options);
      },
      SequenceDataOptions{});
}

void write_sequence_files(const std::filesystem::path& dir, int64_t train, int64_t test,
                          int64_t vocab, int64_t max_length, uint32_t seed) {
  std::filesystem::create_directories(dir);
  std::mt19937 random(seed);
  for (const auto& [name, count] : {std::pair{"train.txt", train}, std::pair{"val.txt", test}}) {
    std::ofstream out(dir / name);
    for (int64_t i = 0; i < count; ++i) {
      const auto length =
          2 + static_cast<int64_t>(random() % static_cast<uint32_t>(max_length - 1));
      std::vector<int64_t> ids;
      for (int64_t k = 0; k < length; ++k) ids.push_back(random() % static_cast<uint32_t>(vocab));
      for (const auto id : ids) out << id << ' ';
      out << ':';
      for (const auto id : ids) out << ' ' << (3 * id + 1) % vocab;
      out << '\n';
    }
  }
}

}  // namespace exfusion::testing
