// The training loop (see trainer.h).
#include "exfusion/train/trainer.h"

#include <chrono>

#include "exfusion/fusion/expert_bank.h"
#include "exfusion/train/checkpoint.h"
#include "exfusion/train/device.h"
#include "exfusion/train/evaluate.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::vector<ParamGroup> make_groups(const VisionTransformer& model, double weight_decay) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : model->named_parameters()) named.emplace_back(item.key(), item.value());
  // Fusion weights (dw) are mixing coefficients, not weights to shrink (SPEC §1).
  return split_weight_decay(named, weight_decay, [](const std::string& name) {
    return name.find(".fusion.weights") != std::string::npos;
  });
}

// Moves the model to `device` first: the optimizer state is created beside the parameters.
FusedAdamW make_optimizer(VisionTransformer& model, const TrainConfig& train,
                          const torch::Device& device) {
  model->to(device);
  AdamWOptions options;
  options.lr = train.lr;
  options.weight_decay = train.weight_decay;
  return FusedAdamW(make_groups(model, train.weight_decay), options);
}

std::vector<double> to_vector(const torch::Tensor& t) {
  const auto cpu = t.to(torch::kCPU, torch::kFloat64).contiguous();
  return {cpu.data_ptr<double>(), cpu.data_ptr<double>() + cpu.numel()};
}

}  // namespace

nlohmann::json fusion_weights_json(const VisionTransformer& model) {
  nlohmann::json out = nlohmann::json::object();
  for (int64_t i = 0; i < model->options.depth; ++i) {
    const auto weights = model->block(i)->mlp->fusion_weights();
    if (weights.empty()) continue;
    auto& entry = out["blocks." + std::to_string(i)];
    for (const auto& [name, value] : weights) entry[name] = to_vector(value);
  }
  return out;
}

nlohmann::json routing_json(const VisionTransformer& model) {
  nlohmann::json out = nlohmann::json::object();
  for (int64_t i = 0; i < model->options.depth; ++i) {
    const auto stats = model->block(i)->mlp->routing_stats();
    if (!stats.defined()) continue;
    const auto values = to_vector(stats);
    out["blocks." + std::to_string(i)] = {{"dropped_fraction", values[0]}, {"aux_loss", values[1]}};
  }
  return out;
}

Trainer::Trainer(const RunConfig& config, VisionTransformer model, torch::Device device)
    : config_(config),
      fast_paths_{fast_path_policy(config.train), std::make_shared<FastPathCounters>()},
      model_(std::move(model)),
      device_(device),
      bf16_(use_bf16(config.train.precision, device)),
      optimizer_(make_optimizer(model_, config.train, device_)) {
  if (config.train.cuda_graph && !device_.is_cuda()) {
    throw InputError(
        "train.cuda_graph = true: CUDA graphs need a CUDA device, and this run's device is " +
        device_.str());
  }
  // Every bank's sink is set, to null without the kernels: the model may come from an
  // earlier trainer whose sink would otherwise keep the banks' first gradient from us.
  for (const auto& item : model_->named_modules("", /*include_self=*/false)) {
    if (auto bank = std::dynamic_pointer_cast<ExpertBankImpl>(item.value())) {
      if (!config.train.expert_kernels) {
        bank->weight_grad_sink = nullptr;
        continue;
      }
      auto sink = std::make_shared<FactoredGradient>();
      bank->weight_grad_sink = sink;
      optimizer_.set_factored_gradient(item.key() + ".weight", sink);
      sinks_.emplace_back(std::move(bank), std::move(sink));
    }
  }
  if (config.train.cuda_graph) {
    graph_step_ = std::make_unique<CudaGraphStep>(
        [this](const torch::Tensor& images, const torch::Tensor& labels) {
          return compute_step(images, labels);
        },
        kCudaGraphWarmupSteps);
  }
}

// The model outlives its trainer: its banks stop feeding this trainer's optimizer (and
// keep a later trainer's sink).
Trainer::~Trainer() {
  for (const auto& [bank, sink] : sinks_) {
    if (bank->weight_grad_sink == sink) bank->weight_grad_sink = nullptr;
  }
}

bool Trainer::cuda_graph_captured() const { return graph_step_ && graph_step_->captured(); }

std::pair<torch::Tensor, torch::Tensor> Trainer::step(const Batch& batch) {
  // This trainer's policy and counters for this thread; the autograd nodes carry them into
  // the backward.
  const FastPathScope fast_paths(fast_paths_);
  const auto images = batch.images.to(device_, /*non_blocking=*/true);
  const auto labels = batch.labels.to(device_, /*non_blocking=*/true);
  auto outputs = graph_step_ ? graph_step_->run(images, labels) : compute_step(images, labels);
  ++step_;
  return outputs;
}

std::pair<torch::Tensor, torch::Tensor> Trainer::compute_step(const torch::Tensor& images,
                                                              const torch::Tensor& labels) {
  torch::Tensor logits;
  {
    AutocastGuard autocast(bf16_);
    logits = model_->forward(images);
  }
  const auto loss =
      at::cross_entropy_loss(logits.to(torch::kFloat32), labels, {}, at::Reduction::Mean, -100,
                             config_.train.label_smoothing);
  // FFNs with a loss of their own (MoE load balancing) add it; the metrics report `loss`.
  auto total = loss;
  for (int64_t i = 0; i < model_->options.depth; ++i) {
    const auto aux = model_->block(i)->mlp->auxiliary_loss();
    if (aux.defined()) total = total + aux;
  }
  total.backward();
  if (config_.train.clip_grad > 0) optimizer_.clip_grad_norm_async(config_.train.clip_grad);
  optimizer_.step();
  optimizer_.zero_grad();
  return {loss.detach(), logits.detach().argmax(-1).eq(labels).sum()};
}

TrainResult Trainer::fit(BatchLoader& train, BatchLoader& test, MetricsLog& log,
                         std::ostream& progress, const std::function<void(int64_t)>& on_epoch_end) {
  const auto& cfg = config_.train;
  const int64_t per_epoch = train.batches_per_epoch();
  const int64_t schedule_steps = per_epoch * cfg.epochs;
  const int64_t total_steps =
      cfg.max_steps > 0 ? std::min(cfg.max_steps, schedule_steps) : schedule_steps;
  const WarmupCosine schedule{
      cfg.lr, cfg.min_lr, static_cast<int64_t>(cfg.warmup_epochs * static_cast<double>(per_epoch)),
      schedule_steps};
  ProgressBar bar("train", total_steps, progress, stderr_is_terminal());
  model_->train();
  // For the evaluations after each epoch; step() opens the same scope again.
  const FastPathScope fast_paths(fast_paths_);

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto window_start = start;
  auto window_loss = torch::zeros({}, torch::TensorOptions(device_).dtype(torch::kFloat64));
  auto window_correct = torch::zeros({}, torch::TensorOptions(device_).dtype(torch::kInt64));
  int64_t window_samples = 0, window_steps = 0;
  TrainResult result;

  for (int64_t epoch = 0; epoch < cfg.epochs && step_ < total_steps; ++epoch) {
    train.start_epoch(epoch);
    while (step_ < total_steps) {
      auto batch = train.next();
      if (!batch) break;
      optimizer_.set_lr(schedule.lr_at(step_));
      const auto [loss, correct] = step(*batch);
      window_loss += loss.to(torch::kFloat64);
      window_correct += correct;
      window_samples += batch->labels.size(0);
      ++window_steps;
      if (step_ % cfg.log_every == 0 || step_ == total_steps) {
        // The only host synchronisation of the loop: once per logging window.
        const double mean_loss = window_loss.item<double>() / static_cast<double>(window_steps);
        const double accuracy = static_cast<double>(window_correct.item<int64_t>()) /
                                static_cast<double>(window_samples);
        const auto now = Clock::now();
        const double window_seconds = std::chrono::duration<double>(now - window_start).count();
        const double images_per_s = static_cast<double>(window_samples) / window_seconds;
        log.write({{"event", "train"},
                   {"step", step_},
                   {"epoch", epoch},
                   {"lr", optimizer_.lr()},
                   {"loss", mean_loss},
                   {"accuracy", accuracy},
                   {"images_per_s", images_per_s},
                   {"elapsed_s", std::chrono::duration<double>(now - start).count()},
                   {"fusion_weights", fusion_weights_json(model_)},
                   {"routing", routing_json(model_)}});
        char loss_text[32], acc_text[32];
        std::snprintf(loss_text, sizeof loss_text, "%.4f", mean_loss);
        std::snprintf(acc_text, sizeof acc_text, "%.1f%%", 100.0 * accuracy);
        bar.update(step_,
                   {{"epoch", std::to_string(epoch + 1) + "/" + std::to_string(cfg.epochs)},
                    {"loss", loss_text},
                    {"acc", acc_text}},
                   images_per_s);
        result.last_loss = mean_loss;
        result.last_train_accuracy = accuracy;
        window_loss.zero_();
        window_correct.zero_();
        window_samples = window_steps = 0;
        window_start = now;
      }
    }
    const auto eval = evaluate(model_, test, device_, bf16_, /*keep_logits=*/false);
    log.write({{"event", "eval"},
               {"step", step_},
               {"epoch", epoch},
               {"test_accuracy", eval.accuracy},
               {"test_loss", eval.loss},
               {"fusion_weights", fusion_weights_json(model_)}});
    if (on_epoch_end) on_epoch_end(epoch);
  }
  bar.finish();
  result.steps = step_;
  result.train_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

NamedTensors Trainer::training_state() const {
  auto state = module_tensors(*model_, "model.");
  for (auto& [name, tensor] : optimizer_.state()) state.emplace_back("optimizer." + name, tensor);
  state.emplace_back("trainer.step", torch::tensor(step_, torch::kInt64));
  return state;
}

}  // namespace exfusion
