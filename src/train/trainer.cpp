// The training loop (see trainer.h).
#include "exfusion/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <optional>
#include <tuple>
#include <vector>

#include "exfusion/fusion/expert_mix.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/util/device.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fault_injection.h"
#include "exfusion/util/global_batch.h"

namespace exfusion {
namespace {

std::vector<ParamGroup> make_groups(const ModelImpl& model, double weight_decay) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : model.named_parameters()) named.emplace_back(item.key(), item.value());
  return split_weight_decay(named, weight_decay, parameters_exempt_from_weight_decay(model));
}

// Moves the model to `device` first: the optimizer state is created beside the parameters.
FusedAdamW make_optimizer(ModelImpl& model, const TrainConfig& train, const torch::Device& device) {
  model.to(device);
  AdamWOptions options;
  options.lr = train.lr;
  options.weight_decay = train.weight_decay;
  if (train.optimizer == UpdateRule::kAdamWScale) options.eps = 1e-6;  // nanoT5's
  return FusedAdamW(make_groups(model, train.weight_decay), options, train.optimizer);
}

std::vector<double> host_values(const torch::Tensor& values) {
  const auto host = values.to(torch::kCPU, torch::kFloat64).contiguous();
  return {host.data_ptr<double>(), host.data_ptr<double>() + host.numel()};
}

LearningRateSchedule schedule_of(const TrainConfig& train, int64_t per_epoch) {
  LearningRateSchedule schedule;
  schedule.kind = train.schedule;
  schedule.cosine = {train.lr, train.min_lr,
                     static_cast<int64_t>(train.warmup_epochs * static_cast<double>(per_epoch)),
                     per_epoch * train.epochs, train.warmup_start * train.lr};
  schedule.inverse_sqrt = {per_epoch * train.epochs};
  return schedule;
}

}  // namespace

Trainer::Trainer(const TrainConfig& config, ModelPtr model, std::shared_ptr<const Task> task,
                 torch::Device device, std::shared_ptr<DistributedGroup> group)
    : config_(config),
      model_(std::move(model)),
      task_(std::move(task)),
      device_(device),
      bf16_(use_bf16(config.precision, device)),
      fast_paths_{fast_path_policy(config), std::make_shared<FastPathCounters>()},
      optimizer_(make_optimizer(*model_, config, device_)) {
  if (config.cuda_graph) {
    for_each_capable<BlocksCudaGraphCapture>(
        *model_, [&](const std::string& path, const BlocksCudaGraphCapture& m) {
          throw InputError("train.cuda_graph = true: the FFN at " + path + " " +
                           m.cuda_graph_obstacle() + "; set train.cuda_graph false");
        });
  }
  if (config.cuda_graph && !device_.is_cuda()) {
    throw InputError(
        "train.cuda_graph = true: CUDA graphs need a CUDA device, and this run's device is " +
        device_.str());
  }
  if (config.accumulation_steps > 1 && config.cuda_graph) {
    throw InputError("train.accumulation_steps = " + std::to_string(config.accumulation_steps) +
                     " with train.cuda_graph = true: a captured step holds one batch; set "
                     "cuda_graph false, or use a larger train.batch_size or more ranks");
  }
  if (config.cuda_graph && config.optimizer == UpdateRule::kAdamWScale) {
    throw InputError(
        "train.cuda_graph = true with train.optimizer = adamw_scale: its per-parameter step "
        "reads the learning rate on the host; use adamw or set cuda_graph false");
  }
  if (config.cuda_graph && group) {
    throw InputError(
        "train.cuda_graph = true with " + std::to_string(group->size()) +
        " data-parallel ranks: a captured step cannot hold the ranks' collectives; set it false");
  }
  // Every bank's sink is set, to null without the kernels: the model may come from an
  // earlier trainer whose sink would otherwise keep the banks' first gradient from us.
  std::map<std::string, std::shared_ptr<FactoredGradient>> factored;
  for_each_capable<TakesFactoredGradient>(
      *model_, [&](const std::string& path, TakesFactoredGradient& bank) {
        // AdamWScale scales each expert set by its own RMS: it needs the whole gradient.
        if (!config.expert_kernels || config.optimizer == UpdateRule::kAdamWScale) {
          bank.set_factored_gradient_sink(nullptr);
          return;
        }
        auto sink = std::make_shared<FactoredGradient>();
        bank.set_factored_gradient_sink(sink);
        const auto name = path + "." + bank.factored_parameter();
        optimizer_.set_factored_gradient(name, sink);
        factored.emplace(name, sink);
        sinks_.emplace_back(&bank, std::move(sink));
      });
  if (group) {
    data_parallel_ = std::make_unique<DataParallel>(std::move(group), *model_, factored,
                                                    DataParallelOptions{config.dist_bucket_mb});
  }
  for (const auto* spec : task_->metrics().summed()) {
    progress_.metric_names.push_back(spec->name);
    progress_.window_metric_sums.push_back(0.0);
    progress_.last_metrics.push_back(0.0);
  }
  for_each_capable<AddsAuxiliaryLoss>(*model_, [&](const std::string&, const AddsAuxiliaryLoss& m) {
    auxiliary_losses_.push_back(&m);
  });
  for_each_capable<UpdatesAfterOptimizerStep>(
      *model_,
      [&](const std::string&, UpdatesAfterOptimizerStep& m) { after_step_updates_.push_back(&m); });
  if (config.cuda_graph) {
    graph_step_ = std::make_unique<CudaGraphStep>(
        [this](const Batch& batch) { return compute_step(batch); }, kCudaGraphWarmupSteps);
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
  const auto on_device = batch.to(device_);
  auto outputs = graph_step_ ? graph_step_->run(on_device) : compute_step(on_device);
  ++step_;
  return outputs;
}

std::pair<torch::Tensor, torch::Tensor> Trainer::step(const std::vector<Batch>& micro_batches) {
  if (micro_batches.size() == 1) return step(micro_batches.front());
  const FastPathScope fast_paths(fast_paths_);
  int64_t samples = 0;
  for (const auto& batch : micro_batches) samples += batch.size();
  torch::Tensor loss, metric_sums;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    const auto& batch = micro_batches[i];
    const auto weight = static_cast<double>(batch.size()) / static_cast<double>(samples);
    auto [micro_loss, micro_sums] =
        forward_backward(batch.to(device_), weight, i + 1 == micro_batches.size());
    loss = loss.defined() ? loss + micro_loss * weight : micro_loss * weight;
    metric_sums = metric_sums.defined() ? metric_sums + micro_sums : micro_sums;
  }
  apply_update();
  ++step_;
  return {loss, metric_sums};
}

std::pair<torch::Tensor, torch::Tensor> Trainer::compute_step(const Batch& batch) {
  auto outputs = forward_backward(batch, 1.0);
  apply_update();
  return outputs;
}

std::pair<torch::Tensor, torch::Tensor> Trainer::forward_backward(const Batch& batch, double weight,
                                                                  bool last) {
  // Under data parallelism, batch statistics (ExFusion-mb's w, the MoE's balance) are global,
  // for every batch of an accumulated step: the ranks' k-th batches are one process's k-th.
  const bool synchronise = data_parallel_ && last;
  std::optional<GlobalBatchScope> global_batch;
  if (data_parallel_) global_batch.emplace(data_parallel_->batch_mean());
  if (synchronise) data_parallel_->before_forward();
  torch::Tensor outputs;
  {
    AutocastGuard autocast(bf16_);
    outputs = task_->forward(*model_, batch);
  }
  const auto loss = task_->loss(outputs, batch);
  // Modules with a loss of their own (MoE load balancing) add it; the metrics report `loss`.
  auto total = loss;
  for (const auto* module : auxiliary_losses_) {
    const auto aux = module->auxiliary_loss();
    if (aux.defined()) total = total + aux;
  }
  if (weight != 1.0) total = total * weight;
  if (synchronise) data_parallel_->before_backward();
  total.backward();
  if (synchronise) data_parallel_->after_backward();
  return {loss.detach(), task_->metric_sums(outputs, batch)};
}

void Trainer::apply_update() {
  fault_point("step");
  if (config_.clip_grad > 0) optimizer_.clip_grad_norm_async(config_.clip_grad);
  optimizer_.step();
  optimizer_.zero_grad();
  for (auto* module : after_step_updates_) module->after_optimizer_step();
}

EvalResult Trainer::evaluate(BatchSource& source, bool keep_outputs, ModelImpl* other) {
  const FastPathScope fast_paths(fast_paths_);
  fault_point("eval");
  auto result = task_->evaluate(other ? *other : *model_, source, device_, bf16_, keep_outputs);
  if (data_parallel_) {
    // Every rank's sums added, then averaged as one process would over the whole set.
    const auto& mine = result.sums;
    std::vector<double> values{mine.loss, static_cast<double>(mine.samples),
                               static_cast<double>(mine.tokens)};
    values.insert(values.end(), mine.metrics.begin(), mine.metrics.end());
    auto sums = torch::tensor(values, torch::kFloat64);
    data_parallel_->group().all_reduce_sum_(sums);
    const auto* total = sums.data_ptr<double>();
    MetricSums global;
    global.loss = total[0];
    global.samples = std::llround(total[1]);
    global.tokens = std::llround(total[2]);
    global.metrics.assign(total + 3, total + values.size());
    auto outputs = std::move(result.outputs);
    result = task_->averages(std::move(global));
    result.outputs = std::move(outputs);
  }
  return result;
}

TrainResult Trainer::fit(BatchSource& train, BatchSource& test,
                         const std::vector<TrainerCallback*>& callbacks) {
  const auto& cfg = config_;
  // A step is accumulation_steps batches: an epoch's last incomplete step is left out.
  const int64_t accumulation = cfg.accumulation_steps;
  const int64_t per_epoch = train.batches_per_epoch() / accumulation;
  if (per_epoch == 0) {
    throw InputError("train.batch_size = " + std::to_string(cfg.batch_size) +
                     (accumulation > 1
                          ? " × train.accumulation_steps = " + std::to_string(accumulation)
                          : std::string()) +
                     ": the training set has " + std::to_string(train.size()) +
                     " samples, fewer than one step's, so no step would run");
  }
  const int64_t epoch_batches = per_epoch * accumulation;  // the batches an epoch's steps read
  const int64_t schedule_steps = per_epoch * cfg.epochs;
  const int64_t total_steps =
      cfg.max_steps > 0 ? std::min(cfg.max_steps, schedule_steps) : schedule_steps;
  const auto schedule = schedule_of(cfg, per_epoch);
  for (auto* callback : callbacks) {
    callback->on_train_begin(*this, {step_, total_steps, cfg.epochs});
  }
  model_->train();
  // Every rank stops at the same point, whichever rank was asked to.
  const auto wants_stop = [&] {
    const bool wants =
        std::any_of(callbacks.begin(), callbacks.end(),
                    [](const TrainerCallback* callback) { return callback->wants_stop(); });
    return data_parallel_ ? data_parallel_->group().agree_to_stop(wants) : wants;
  };
  const int64_t ranks = data_parallel_ ? data_parallel_->group().size() : 1;

  using Clock = std::chrono::steady_clock;
  auto window_start = Clock::now();
  // Training time is wall time outside the evaluations, callbacks included, as before a resume.
  auto timed_since = window_start;
  const auto add_train_time = [&] {
    const auto now = Clock::now();
    progress_.train_seconds += std::chrono::duration<double>(now - timed_since).count();
    timed_since = now;
  };
  int64_t window_samples_timed = 0;  // the window's samples since this process timed it
  // The open window's sums stay on the device between windows; restored from progress_.
  const auto f64 = torch::TensorOptions(device_).dtype(torch::kFloat64);
  const bool counts_tokens = task_->metrics().counts_tokens();
  auto window_loss = torch::full({}, progress_.window_loss_sum, f64);
  auto window_metrics = torch::tensor(progress_.window_metric_sums, torch::kFloat64).to(device_);
  auto window_tokens = torch::full({}, static_cast<double>(progress_.window_tokens), f64);
  window_sums_ = [&](TrainProgress& progress) {
    progress.window_loss_sum = window_loss.item<double>();
    progress.window_metric_sums = host_values(window_metrics);
    progress.window_tokens = std::llround(window_tokens.item<double>());
  };
  // The sums above are this call's locals: state() must not reach them after it returns.
  struct ForgetWindowOnExit {
    std::function<void(TrainProgress&)>& sums;
    ~ForgetWindowOnExit() { sums = nullptr; }
  } forget_window{window_sums_};
  TrainResult result;

  while (epoch_ < cfg.epochs && step_ < total_steps && !result.interrupted) {
    train.start_epoch(epoch_, batch_in_epoch_);
    while (step_ < total_steps) {
      if (batch_in_epoch_ >= epoch_batches) break;
      std::vector<Batch> micro_batches;
      while (static_cast<int64_t>(micro_batches.size()) < accumulation) {
        auto batch = train.next();
        if (!batch) break;
        micro_batches.push_back(std::move(*batch));
      }
      if (static_cast<int64_t>(micro_batches.size()) < accumulation) break;
      int64_t step_samples = 0, step_tokens = 0, step_skipped = 0;
      for (const auto& batch : micro_batches) {
        step_samples += batch.size();
        step_tokens += batch.tokens;
        step_skipped += batch.skipped;
      }
      const double lr = schedule.lr_at(step_);
      optimizer_.set_lr(lr);
      auto [loss, metric_sums] = step(micro_batches);
      batch_in_epoch_ += accumulation;
      // A fill, not a copy: the count travels as a kernel argument, with no synchronisation.
      auto tokens =
          counts_tokens ? torch::full({1}, static_cast<double>(step_tokens), f64) : torch::Tensor();
      if (data_parallel_) {
        // The global batch's loss and sums: the ranks' logs, and checkpoints, agree.
        // Skipped samples only where they can happen: their count is a host value, and its
        // copy and read-back would cost every step a synchronisation.
        const bool skips = train.may_skip();
        std::vector<torch::Tensor> values{loss.to(torch::kFloat64).reshape({1}), metric_sums};
        if (counts_tokens) values.push_back(tokens);
        if (skips) values.push_back(torch::full({1}, static_cast<double>(step_skipped), f64));
        auto sums = torch::cat(values);
        data_parallel_->group().all_reduce_sum_(sums);
        const auto metric_count = metric_sums.size(0);
        loss = sums[0] / static_cast<double>(ranks);
        metric_sums = sums.slice(0, 1, 1 + metric_count);
        if (counts_tokens) tokens = sums.slice(0, 1 + metric_count, 2 + metric_count);
        if (skips) progress_.skipped_samples += std::llround(sums[-1].item<double>());
      } else {
        progress_.skipped_samples += step_skipped;
      }
      window_loss += loss.to(torch::kFloat64);
      window_metrics += metric_sums;
      if (counts_tokens) window_tokens += tokens.reshape({});
      progress_.window_samples += step_samples * ranks;
      window_samples_timed += step_samples * ranks;
      ++progress_.window_steps;
      const bool closes = step_ % cfg.log_every == 0 || step_ == total_steps;
      TrainWindow closed;
      if (closes) {
        // The only host synchronisation of the loop: once per logging window.
        const auto now = Clock::now();
        closed.steps = progress_.window_steps;
        closed.samples = progress_.window_samples;
        closed.loss = window_loss.item<double>() / static_cast<double>(closed.steps);
        // Read back only where the task counts tokens: one host sync fewer per window otherwise.
        closed.tokens = counts_tokens ? std::llround(window_tokens.item<double>()) : 0;
        const auto sums = host_values(window_metrics);
        closed.metrics = task_->window_values(closed.loss, sums, closed.samples, closed.tokens);
        closed.samples_per_s = static_cast<double>(window_samples_timed) /
                               std::chrono::duration<double>(now - window_start).count();
        // The window's tokens per sample at the rate its samples were timed at.
        closed.tokens_per_s = closed.samples_per_s * static_cast<double>(closed.tokens) /
                              static_cast<double>(closed.samples);
        if (!std::isfinite(closed.loss)) {
          throw InputError("training diverged: the mean loss of steps " +
                           std::to_string(step_ - closed.steps + 1) + "-" + std::to_string(step_) +
                           " is " + std::to_string(closed.loss) +
                           "; nothing was exported (a smaller train.lr than " +
                           config::detail::number_text(cfg.lr) + " or train.clip_grad may help)");
        }
        progress_.last_loss = closed.loss;
        progress_.last_metrics.clear();
        for (const auto* spec : task_->metrics().summed()) {
          progress_.last_metrics.push_back(closed.metrics.at(spec->name));
        }
        // Closed before the callbacks run, so a checkpoint taken now holds an empty window.
        window_loss.zero_();
        window_metrics.zero_();
        window_tokens.zero_();
        progress_.window_steps = progress_.window_samples = progress_.window_tokens = 0;
        window_samples_timed = 0;
      }
      add_train_time();
      closed.elapsed_s = progress_.train_seconds;
      if (train.may_skip()) closed.skipped_samples = progress_.skipped_samples;
      const bool ends_epoch = batch_in_epoch_ >= epoch_batches || step_ == total_steps;
      const StepEvent event{step_, epoch_, lr, closes ? &closed : nullptr, ends_epoch};
      for (auto* callback : callbacks) callback->on_step(*this, event);
      if (closes) window_start = Clock::now();
      // A stop asked at an epoch's last step waits for the epoch's end: a state saved between
      // the two could not be resumed at the run's last step (no step is left to reach it).
      if (!ends_epoch && wants_stop()) {
        result.interrupted = true;
        break;
      }
    }
    add_train_time();
    if (result.interrupted) break;
    // An epoch ends at its last batch, or where max_steps stopped it.
    const auto eval = evaluate(test, /*keep_outputs=*/false);
    progress_.eval_seconds += std::chrono::duration<double>(Clock::now() - timed_since).count();
    timed_since = Clock::now();
    const EvalEvent eval_event{step_, epoch_, eval};
    for (auto* callback : callbacks) callback->on_eval(*this, eval_event);
    if (batch_in_epoch_ >= epoch_batches) {
      ++epoch_;
      batch_in_epoch_ = 0;
    }
    for (auto* callback : callbacks) callback->on_epoch_end(*this, eval_event.epoch);
    window_start = Clock::now();
    window_samples_timed = 0;
    result.interrupted = wants_stop();
  }
  add_train_time();
  window_sums_(progress_);
  result.steps = step_;
  result.eval_seconds = progress_.eval_seconds;
  result.train_seconds = progress_.train_seconds;
  result.last_loss = progress_.last_loss;
  result.last_metrics = task_->values_of(progress_.last_loss, progress_.last_metrics);
  for (auto* callback : callbacks) callback->on_train_end(*this, result);
  return result;
}

TrainingState Trainer::state(const RunConfig& run) const {
  TrainingState state;
  state.config = run;
  for (const auto& [name, tensor] : module_tensors(*model_)) state.model.emplace(name, tensor);
  for (const auto& [name, tensor] : optimizer_.state()) state.optimizer.emplace(name, tensor);
  state.step = step_;
  state.epoch = epoch_;
  state.batch_in_epoch = batch_in_epoch_;
  state.progress = progress_;
  for (size_t i = 0; i < kFastPaths.size(); ++i) {
    state.fast_path_calls[i] = fast_paths_.counters->calls(kFastPaths[i]);
  }
  if (window_sums_) window_sums_(state.progress);  // inside fit: the window is on the device
  state.world_size = data_parallel_ ? data_parallel_->group().size() : 1;
  state.cpu_rng = at::detail::getDefaultCPUGenerator().get_state();
  if (device_.is_cuda()) state.cuda_rng = at::globalContext().defaultGenerator(device_).get_state();
  return state;
}

void Trainer::restore(const TrainingState& state) {
  if (!state.resumable()) {
    throw InputError("a format " + std::to_string(state.format) +
                     " training state holds no data position or RNG state: it cannot resume");
  }
  if (state.progress.metric_names != progress_.metric_names) {
    throw InputError(
        "the training state's window sums the metrics " +
        nlohmann::json(state.progress.metric_names).dump() + ", and this run's task declares " +
        nlohmann::json(progress_.metric_names).dump() + ": it was written for another task");
  }
  const int64_t ranks = data_parallel_ ? data_parallel_->group().size() : 1;
  if (state.world_size != ranks) {
    throw InputError("the training state was written by a run of " +
                     std::to_string(state.world_size) +
                     " data-parallel rank(s), and this run has " + std::to_string(ranks) +
                     ": train.batch_size is per rank, so its global batch, " +
                     "data position and schedule would differ; resume it with " +
                     std::to_string(state.world_size) + " rank(s) (torchrun --nproc-per-node)");
  }
  SafetensorsFile file;
  file.tensors = state.model;
  load_module_tensors(*model_, file, "the training state");
  optimizer_.load_state(state.optimizer);
  step_ = state.step;
  epoch_ = state.epoch;
  batch_in_epoch_ = state.batch_in_epoch;
  progress_ = state.progress;
  for (size_t i = 0; i < kFastPaths.size(); ++i) {
    fast_paths_.counters->set(kFastPaths[i], state.fast_path_calls[i]);
  }
  auto cpu_generator = at::detail::getDefaultCPUGenerator();
  cpu_generator.set_state(state.cpu_rng);
  if (device_.is_cuda() && state.cuda_rng.defined()) {
    auto cuda_generator = at::globalContext().defaultGenerator(device_);
    cuda_generator.set_state(state.cuda_rng);
  }
}

}  // namespace exfusion
