// The training loop (see trainer.h).
#include "exfusion/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>

#include "exfusion/fusion/expert_mix.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/util/device.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::vector<ParamGroup> make_groups(const ModelImpl& model, double weight_decay) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : model.named_parameters()) named.emplace_back(item.key(), item.value());
  // Fusion weights (dw) are mixing coefficients, not weights to shrink (SPEC §1).
  return split_weight_decay(named, weight_decay, [](const std::string& name) {
    return name.find(".fusion.weights") != std::string::npos;
  });
}

// Moves the model to `device` first: the optimizer state is created beside the parameters.
FusedAdamW make_optimizer(ModelImpl& model, const TrainConfig& train, const torch::Device& device) {
  model.to(device);
  AdamWOptions options;
  options.lr = train.lr;
  options.weight_decay = train.weight_decay;
  return FusedAdamW(make_groups(model, train.weight_decay), options);
}

WarmupCosine schedule_of(const TrainConfig& train, int64_t per_epoch) {
  return {train.lr, train.min_lr,
          static_cast<int64_t>(train.warmup_epochs * static_cast<double>(per_epoch)),
          per_epoch * train.epochs};
}

}  // namespace

Trainer::Trainer(const RunConfig& config, ModelPtr model, torch::Device device)
    : config_(config),
      model_(std::move(model)),
      task_(make_task(config)),
      device_(device),
      bf16_(use_bf16(config.train.precision, device)),
      fast_paths_{fast_path_policy(config.train), std::make_shared<FastPathCounters>()},
      optimizer_(make_optimizer(*model_, config.train, device_)) {
  if (config.train.cuda_graph && !device_.is_cuda()) {
    throw InputError(
        "train.cuda_graph = true: CUDA graphs need a CUDA device, and this run's device is " +
        device_.str());
  }
  // Every bank's sink is set, to null without the kernels: the model may come from an
  // earlier trainer whose sink would otherwise keep the banks' first gradient from us.
  for_each_capable<TakesFactoredGradient>(
      *model_, [&](const std::string& path, TakesFactoredGradient& bank) {
        if (!config.train.expert_kernels) {
          bank.set_factored_gradient_sink(nullptr);
          return;
        }
        auto sink = std::make_shared<FactoredGradient>();
        bank.set_factored_gradient_sink(sink);
        optimizer_.set_factored_gradient(path + "." + bank.factored_parameter(), sink);
        sinks_.emplace_back(&bank, std::move(sink));
      });
  for_each_capable<AddsAuxiliaryLoss>(*model_, [&](const std::string&, const AddsAuxiliaryLoss& m) {
    auxiliary_losses_.push_back(&m);
  });
  if (config.train.cuda_graph) {
    graph_step_ = std::make_unique<CudaGraphStep>(
        [this](const torch::Tensor& inputs, const torch::Tensor& targets) {
          return compute_step(inputs, targets);
        },
        kCudaGraphWarmupSteps);
  }
}

// The model outlives its trainer: its banks stop feeding this trainer's optimizer (and
// keep a later trainer's sink).
Trainer::~Trainer() {
  for (const auto& [bank, sink] : sinks_) {
    if (bank->factored_gradient_sink() == sink) bank->set_factored_gradient_sink(nullptr);
  }
}

bool Trainer::cuda_graph_captured() const { return graph_step_ && graph_step_->captured(); }

std::pair<torch::Tensor, torch::Tensor> Trainer::step(const Batch& batch) {
  const FastPathScope fast_paths(fast_paths_);
  const auto inputs = batch.inputs.to(device_, /*non_blocking=*/true);
  const auto targets = batch.targets.to(device_, /*non_blocking=*/true);
  auto outputs = graph_step_ ? graph_step_->run(inputs, targets) : compute_step(inputs, targets);
  ++step_;
  return outputs;
}

std::pair<torch::Tensor, torch::Tensor> Trainer::compute_step(const torch::Tensor& inputs,
                                                              const torch::Tensor& targets) {
  const Batch batch{inputs, targets};
  torch::Tensor outputs;
  {
    AutocastGuard autocast(bf16_);
    outputs = model_->forward(inputs);
  }
  const auto loss = task_->loss(outputs, batch);
  // Modules with a loss of their own (MoE load balancing) add it; the metrics report `loss`.
  auto total = loss;
  for (const auto* module : auxiliary_losses_) {
    const auto aux = module->auxiliary_loss();
    if (aux.defined()) total = total + aux;
  }
  total.backward();
  if (config_.train.clip_grad > 0) optimizer_.clip_grad_norm_async(config_.train.clip_grad);
  optimizer_.step();
  optimizer_.zero_grad();
  return {loss.detach(), task_->metric_count(outputs, batch)};
}

EvalResult Trainer::evaluate(BatchSource& source, bool keep_outputs, ModelImpl* other) {
  const FastPathScope fast_paths(fast_paths_);
  return task_->evaluate(other ? *other : *model_, source, device_, bf16_, keep_outputs);
}

TrainResult Trainer::fit(BatchSource& train, BatchSource& test,
                         const std::vector<TrainerCallback*>& callbacks) {
  const auto& cfg = config_.train;
  const int64_t per_epoch = train.batches_per_epoch();
  const int64_t schedule_steps = per_epoch * cfg.epochs;
  const int64_t total_steps =
      cfg.max_steps > 0 ? std::min(cfg.max_steps, schedule_steps) : schedule_steps;
  const auto schedule = schedule_of(cfg, per_epoch);
  for (auto* callback : callbacks) {
    callback->on_train_begin(*this, {step_, total_steps, cfg.epochs});
  }
  model_->train();

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto window_start = start;
  double eval_seconds = 0.0;
  auto window_loss = torch::zeros({}, torch::TensorOptions(device_).dtype(torch::kFloat64));
  auto window_count = torch::zeros({}, torch::TensorOptions(device_).dtype(torch::kInt64));
  TrainWindow window;
  TrainResult result;

  while (epoch_ < cfg.epochs && step_ < total_steps) {
    train.start_epoch(epoch_, batch_in_epoch_);
    while (step_ < total_steps) {
      auto batch = train.next();
      if (!batch) break;
      const double lr = schedule.lr_at(step_);
      optimizer_.set_lr(lr);
      const auto [loss, count] = step(*batch);
      ++batch_in_epoch_;
      window_loss += loss.to(torch::kFloat64);
      window_count += count;
      window.samples += batch->size();
      ++window.steps;
      const bool closes = step_ % cfg.log_every == 0 || step_ == total_steps;
      if (closes) {
        // The only host synchronisation of the loop: once per logging window.
        const auto now = Clock::now();
        window.loss = window_loss.item<double>() / static_cast<double>(window.steps);
        window.metric =
            static_cast<double>(window_count.item<int64_t>()) / static_cast<double>(window.samples);
        window.samples_per_s = static_cast<double>(window.samples) /
                               std::chrono::duration<double>(now - window_start).count();
        window.elapsed_s = std::chrono::duration<double>(now - start).count() - eval_seconds;
        result.last_loss = window.loss;
        result.last_metric = window.metric;
      }
      const StepEvent event{step_, epoch_, lr, closes ? &window : nullptr};
      for (auto* callback : callbacks) callback->on_step(*this, event);
      if (closes) {
        window_loss.zero_();
        window_count.zero_();
        window = TrainWindow{};
        window_start = Clock::now();
      }
    }
    // An epoch ends at its last batch, or where max_steps stopped it.
    const auto eval_start = Clock::now();
    const auto eval = evaluate(test, /*keep_outputs=*/false);
    eval_seconds += std::chrono::duration<double>(Clock::now() - eval_start).count();
    const EvalEvent eval_event{step_, epoch_, eval};
    for (auto* callback : callbacks) callback->on_eval(*this, eval_event);
    if (batch_in_epoch_ >= per_epoch) {
      ++epoch_;
      batch_in_epoch_ = 0;
    }
    for (auto* callback : callbacks) callback->on_epoch_end(*this, eval_event.epoch);
    window_start = Clock::now();
  }
  result.steps = step_;
  result.eval_seconds = eval_seconds;
  result.train_seconds = std::chrono::duration<double>(Clock::now() - start).count() - eval_seconds;
  for (auto* callback : callbacks) callback->on_train_end(*this, result);
  return result;
}

TrainingState Trainer::state() const {
  TrainingState state;
  state.config = config_;
  for (const auto& [name, tensor] : module_tensors(*model_)) state.model.emplace(name, tensor);
  for (const auto& [name, tensor] : optimizer_.state()) state.optimizer.emplace(name, tensor);
  state.step = step_;
  state.epoch = epoch_;
  state.batch_in_epoch = batch_in_epoch_;
  auto generator = at::detail::getDefaultCPUGenerator();
  state.cpu_rng = generator.get_state();
  return state;
}

void Trainer::restore(const TrainingState& state) {
  if (!state.resumable()) {
    throw InputError("a format " + std::to_string(state.format) +
                     " training state holds no data position or RNG state: it cannot resume");
  }
  SafetensorsFile file;
  file.tensors = state.model;
  load_module_tensors(*model_, file, "the training state");
  optimizer_.load_state(state.optimizer);
  step_ = state.step;
  epoch_ = state.epoch;
  batch_in_epoch_ = state.batch_in_epoch;
  auto generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(state.cpu_rng);
}

}  // namespace exfusion
