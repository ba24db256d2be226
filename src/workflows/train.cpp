// `exfusion train` (see train.h): the run resolved (run_start.h), then four steps, one function
// each: set up the run (task, data, model, trainer), open its outputs (the run directory, the
// logs and every registered callback), train, and finish it (evaluate, fuse, export, summary).
#include "exfusion/workflows/train.h"

#include <torch/utils.h>

#include <cmath>
#include <csignal>
#include <iomanip>
#include <optional>

#include "exfusion/dist/process_group.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/models/export_formats.h"
#include "exfusion/models/model.h"
#include "exfusion/train/initialization.h"
#include "exfusion/train/metrics.h"
#include "exfusion/train/replica_sync.h"
#include "exfusion/train/run_callbacks.h"
#include "exfusion/train/run_files.h"
#include "exfusion/train/standard_callbacks.h"
#include "exfusion/train/trainer.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/device.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fault_injection.h"
#include "exfusion/util/interrupt_guard.h"
#include "exfusion/workflows/run_start.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Whether every FFN of the model has a dense form, so the model fuses.
bool fuses(const torch::nn::Module& model) {
  bool all = true;
  for_each_capable<FeedForwardImpl>(model, [&](const std::string&, const FeedForwardImpl& ffn) {
    all = all && dynamic_cast<const HasDenseForm*>(&ffn) != nullptr;
  });
  return all;
}

void stop_if_interrupted(const fs::path& out, std::ostream& progress) {
  const int signal = InterruptGuard::pending();
  if (signal == 0) return;
  progress << "exfusion train: stopped by " << (signal == SIGINT ? "SIGINT" : "SIGTERM")
           << "; resume with: exfusion train --resume " << out.string() << std::endl;
  throw Interrupted(signal);
}

// The device of this rank: cuda (or auto on a CUDA machine) becomes cuda:LOCAL_RANK.
torch::Device rank_device(const std::string& name, const LaunchEnvironment& launch) {
  auto device = resolve_device(name);
  if (launch.distributed() && device.is_cuda() && !device.has_index()) {
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(launch.local_rank));
  }
  return device;
}

// A run set up to train: its task and data, its model (initialised or restored) and trainer.
struct PreparedRun {
  std::shared_ptr<const Task> task;
  std::optional<TaskData> data;
  ModelPtr model;
  std::unique_ptr<Trainer> trainer;
  torch::Device device{torch::kCPU};
  nlohmann::json initialized;  // where a fresh run's weights came from, when not fresh
  int64_t params_train = 0;
};

PreparedRun prepare(RunStart& start, const LaunchEnvironment& launch,
                    const std::shared_ptr<DistributedGroup>& group) {
  const bool writer = !group || group->writer();
  auto& config = start.config;
  PreparedRun run;
  // Everything that can refuse this run is checked before the run directory is touched.
  // This rank's part, free of collectives: under data parallelism it runs inside a gate, which
  // a collective would keep from ever hearing of another rank's refusal.
  const auto set_up = [&] {
    run.device = rank_device(config.train.device, launch);
    use_bf16(config.train.precision, run.device);  // rejects bf16 without CUDA before any work
    if (config.train.threads > 0) torch::set_num_threads(static_cast<int>(config.train.threads));
    // Each rank reads its shard: its part of every global batch.
    const auto shard = group ? DataShard{group->rank(), group->size()} : DataShard{};
    run.task = make_task(config, shard);
    run.data = run.task->load_data(config.data, *config.model.options, /*with_train=*/true);
    torch::manual_seed(static_cast<uint64_t>(config.train.seed));
    run.model = build_model(config.model, config.ffn);
    // Rank 0's weights reach the others through synchronize_replicas.
    if (!start.resumed && !config.init.from.empty() && writer) {
      run.initialized = initialize_model(*run.model, config);
    }
    run.params_train = count_parameters(*run.model);
  };
  const auto restore = [&] {
    if (start.resumed) run.trainer->restore(*start.resumed);
  };
  if (group) {
    group->gate("set up training", set_up);
    group->connect(run.device, std::chrono::seconds(config.train.dist_timeout_s));
    // Its DataParallel checks, collectively, that every rank built the same parameters.
    run.trainer = std::make_unique<Trainer>(config.train, run.model, run.task, run.device, group);
    group->gate("restore the checkpoint", restore);
    synchronize_replicas(*run.trainer, config, *group);
  } else {
    set_up();
    run.trainer = std::make_unique<Trainer>(config.train, run.model, run.task, run.device, group);
    restore();
  }
  return run;
}

// What the writing rank records while training: the run directory's files, metrics.jsonl, the
// registered callbacks (TensorBoard) and the checkpointer; every rank has the progress bar and
// the signal handling.
class RunOutputs {
 public:
  RunOutputs(const RunStart& start, const PreparedRun& run,
             const std::shared_ptr<DistributedGroup>& group, std::ostream& progress)
      : bar_(progress) {
    if (group && !group->writer()) {
      callbacks_ = {&stop_on_signal_};
      return;
    }
    const auto& config = start.config;
    const auto& out = start.out;
    fs::create_directories(out / kCheckpointDir);
    remove_atomic_write_leftovers(out);
    remove_atomic_write_leftovers(out / kCheckpointDir);
    if (start.replace_outputs) remove_previous_outputs(out);
    if (!fs::exists(out / kConfigFile)) {
      write_text_atomically(out / kConfigFile, to_json(config).dump(2) + "\n");
    }
    if (!run.data->class_names.empty()) {
      write_text_atomically(out / kClassesFile,
                            nlohmann::json(run.data->class_names).dump(2) + "\n");
    }
    progress << "exfusion train: " << config.ffn.run_name() << " on " << run.device;
    if (group) progress << " × " << group->size() << " ranks (" << group->backend() << ")";
    progress << ", run directory " << out.string() << "\n";
    if (!run.initialized.is_null()) {
      progress << "exfusion train: weights from " << run.initialized["from"].get<std::string>()
               << " (" << run.initialized["method"].get<std::string>() << ")\n";
    }
    open_log(start, run, group);
    std::vector<const ResumableOutput*> outputs{&*jsonl_};
    callbacks_.push_back(&*jsonl_);
    registered_ = run_callbacks().make({config, out});
    for (const auto& callback : registered_) {
      if (auto* output = dynamic_cast<ResumableOutput*>(callback.get())) {
        if (start.resumed) rewind(*output, *start.resumed);
        outputs.push_back(output);
      }
      callbacks_.push_back(callback.get());
    }
    checkpointer_.emplace(config, out / kCheckpointDir, config.train.checkpoint_every,
                          config.train.keep_checkpoints, outputs);
    callbacks_.insert(callbacks_.end(), {&bar_, &*checkpointer_, &stop_on_signal_});
  }

  const std::vector<TrainerCallback*>& callbacks() const { return callbacks_; }
  const CheckpointCallback* checkpointer() const {
    return checkpointer_ ? &*checkpointer_ : nullptr;
  }
  // The run's final summary to every callback that takes it, to `file` (summary.json, whose
  // presence marks the run finished) and then to metrics.jsonl.
  void record_summary(int64_t step, const nlohmann::json& summary, const fs::path& file) {
    for (auto* callback : callbacks_) {
      if (auto* receiver = dynamic_cast<ReceivesRunSummary*>(callback)) {
        receiver->on_run_summary(step, summary);
      }
    }
    write_text_atomically(file, summary.dump(2) + "\n");
    log_->write({{"event", "summary"}, {"summary", summary}});
  }

 private:
  static void rewind(ResumableOutput& output, const TrainingState& resumed) {
    const auto position = resumed.outputs.find(output.output_name());
    if (position != resumed.outputs.end()) output.rewind_output(*position);
  }
  void open_log(const RunStart& start, const PreparedRun& run,
                const std::shared_ptr<DistributedGroup>& group) {
    log_.emplace(start.out / kMetricsFile);
    jsonl_.emplace(*log_);
    if (start.resumed) {
      rewind(*jsonl_, *start.resumed);
      log_->write({{"event", "resume"}, {"step", start.resumed->step}});
      return;
    }
    nlohmann::json start_line = {{"event", "start"},
                                 {"config", to_json(start.config)},
                                 {"params", run.params_train},
                                 {"device", run.device.str()}};
    if (group) start_line["world_size"] = group->size();
    if (!run.initialized.is_null()) start_line["init"] = run.initialized;
    log_->write(start_line);
  }

  ProgressBarCallback bar_;
  InterruptGuard interrupts_;
  InterruptCallback stop_on_signal_;
  std::optional<MetricsLog> log_;
  std::optional<JsonlMetricsCallback> jsonl_;
  std::vector<std::unique_ptr<TrainerCallback>> registered_;
  std::optional<CheckpointCallback> checkpointer_;
  std::vector<TrainerCallback*> callbacks_;
};

// After the last step: the trained model evaluated, then (where every FFN has a dense form)
// fused, evaluated again and exported; summary.json written. Returns the summary.
nlohmann::json finish(const RunStart& start, PreparedRun& run, const TrainResult& result,
                      RunOutputs& outputs, const std::shared_ptr<DistributedGroup>& group,
                      std::ostream& report, std::ostream& progress) {
  const bool writer = !group || group->writer();
  const auto& config = start.config;
  const auto& out = start.out;
  auto& trainer = *run.trainer;
  const auto& metrics = run.task->metrics();
  // The training run's fast-path calls, before the final evaluations add theirs.
  const auto path_calls = trainer.fast_path_calls().to_json();
  progress << trainer.fast_path_calls().fallbacks_message();
  const auto trained = trainer.evaluate(*run.data->test, /*keep_outputs=*/true);
  // The loop checks each logging window's loss, which is taken before that step's update: the
  // last update can still make the weights non-finite, and such a model is not exported.
  if (!std::isfinite(trained.loss)) {
    throw InputError("training diverged: after the last step (" + std::to_string(result.steps) +
                     ") the model's test loss is " + std::to_string(trained.loss) +
                     "; nothing was exported (a smaller train.lr than " +
                     config::detail::number_text(config.train.lr) +
                     " or train.clip_grad may help)");
  }
  nlohmann::json summary = {
      {"headline_metric", headline_description(metrics)},
      {"params_train", run.params_train},
      {"params_stored", count_stored_values(*run.model)},
      {"flops_per_sample", config.model.options->forward_flops_per_sample(config.ffn)},
      {"train_seconds", result.train_seconds},
      {"eval_seconds", result.eval_seconds},
      {"steps", result.steps},
      {"device", run.device.str()},
      {"precision", trainer.bf16() ? "bf16" : "fp32"},
      {"fast_path_calls", path_calls},
      {"run_dir", out.string()}};
  if (group) {
    const auto* parallel = trainer.data_parallel();
    summary["data_parallel"] = {{"world_size", group->size()},
                                {"backend", group->backend()},
                                {"global_batch", config.train.batch_size * group->size()},
                                {"gradient_bytes", parallel->gradient_bytes()},
                                {"gradient_allreduce_ms", parallel->time_gradient_allreduce(5)},
                                {"replicas", compare_replicas(trainer, *group)}};
  }
  if (const double tokens = run.task->tokens_per_sample(*config.model.options); tokens > 0) {
    summary["flops_per_token"] = summary["flops_per_sample"].get<double>() / tokens;
  }
  for (const auto& [name, value] : trained.metrics.items()) summary["test_" + name] = value;
  for (const auto& [name, value] : result.last_metrics.items()) {
    summary["final_train_" + name] = value;
  }
  const auto model_metrics = collect_metrics(*run.model);
  for (const auto& [group_name, values] : model_metrics.items()) summary[group_name] = values;
  const auto& headline = metrics.at(metrics.headline);
  report << "test " << headline.name << " (trained, " << config.ffn.run_name()
         << "): " << metric_text(headline, trained.metrics.at(headline.name)) << "\n";
  if (!fuses(*run.model)) {
    // A mixture of experts has no dense form: the run keeps its training state only.
    if (writer) outputs.record_summary(result.steps, summary, out / kSummaryFile);
    report << std::fixed << std::setprecision(1) << "parameters: " << run.params_train
           << "; trained in " << result.train_seconds
           << " s\noutputs: " << (out / kStateFile).string() << " (" << config.ffn.run_name()
           << ", no dense export; exfusion eval " << out.string() << " --unfused), "
           << (out / kSummaryFile).string() << std::endl;
    return summary;
  }
  if (!group) stop_if_interrupted(out, progress);
  auto fused = fuse_model(config.model, *run.model);
  fault_point("fuse");
  const auto fused_eval = trainer.evaluate(*run.data->test, /*keep_outputs=*/true, fused.get());
  if (writer) {
    save_dense_model(out / kModelFile, module_tensors(*fused), dense_twin(config),
                     run.data->class_names);
  }
  if (!group) stop_if_interrupted(out, progress);
  const auto export_format = export_formats().find(config.model.kind, "");
  const auto export_directory = export_format.format->directory();
  auto logit_diff =
      torch::tensor(max_abs_diff(trained.outputs, fused_eval.outputs), torch::kFloat64);
  if (group) group->all_reduce_max_(logit_diff);
  for (const auto& [name, value] : fused_eval.metrics.items())
    summary["fused_test_" + name] = value;
  summary["fused_max_abs_logit_diff"] = logit_diff.item<double>();
  summary["params_fused"] = count_parameters(*fused);
  const auto twin = dense_twin(config);
  summary["fused_flops_per_sample"] = twin.model.options->forward_flops_per_sample(twin.ffn);
  if (writer) outputs.record_summary(result.steps, summary, out / kSummaryFile);
  report << "test " << headline.name
         << " (fused, dense):     " << metric_text(headline, fused_eval.metrics.at(headline.name))
         << "\n"
         << std::scientific << std::setprecision(3) << "max |logit difference|:            "
         << summary["fused_max_abs_logit_diff"].get<double>() << "\n"
         << std::fixed << std::setprecision(1) << "parameters: " << run.params_train
         << " while training, " << summary["params_fused"].get<int64_t>() << " fused; trained in "
         << result.train_seconds << " s\n"
         << "outputs: " << (out / kModelFile).string() << " (fused, " << export_format.name
         << " format" << (export_directory.empty() ? "" : ": " + (out / export_directory).string())
         << "), " << (out / kSummaryFile).string() << std::endl;
  return summary;
}

nlohmann::json train_from(RunStart start, const LaunchEnvironment& launch,
                          const std::shared_ptr<DistributedGroup>& group, std::ostream& report,
                          std::ostream& progress) {
  const bool writer = !group || group->writer();
  auto run = prepare(start, launch, group);
  RunOutputs outputs(start, run, group, progress);
  const auto result = run.trainer->fit(*run.data->train, *run.data->test, outputs.callbacks());
  if (result.interrupted) {
    if (writer) {
      progress << "exfusion train: checkpoint " << outputs.checkpointer()->last_written().string()
               << "\n";
    }
    stop_if_interrupted(start.out, progress);
    // Only under data parallelism: another rank was signalled, and every rank stopped with it.
    progress << "exfusion train: stopped with another rank; resume with: torchrun ... "
             << "exfusion train --resume " << start.out.string() << std::endl;
    throw Interrupted(SIGTERM);
  }
  if (writer) run.trainer->state(start.config).save(start.out / kStateFile);
  // Ranks stop together, at agreed points only: after training they finish the run.
  if (!group) stop_if_interrupted(start.out, progress);
  return finish(start, run, result, outputs, group, report, progress);
}

}  // namespace

nlohmann::json run_training(const TrainRun& run, std::ostream& report, std::ostream& progress) {
  const auto launch = launch_environment();
  if (!launch.distributed()) {
    auto start = resolve_run(run, report, progress);
    if (start.finished) return *start.finished;
    return train_from(std::move(start), launch, nullptr, report, progress);
  }
  // Rank 0 alone reports; the others stay quiet unless they fail.
  std::ostream quiet(nullptr);
  auto& rank_report = launch.rank == 0 ? report : quiet;
  auto& rank_progress = launch.rank == 0 ? progress : quiet;
  auto group = std::make_shared<DistributedGroup>(
      launch, ProcessGroupOptions{std::chrono::seconds(run.config.train.dist_timeout_s)});
  try {
    auto start = resolve_distributed_run(run, *group, rank_report, rank_progress);
    if (start.finished) return *start.finished;
    return train_from(std::move(start), launch, group, rank_report, rank_progress);
  } catch (const InputError&) {
    throw;
  } catch (const Interrupted&) {
    throw;
  } catch (const PeerFailure&) {
    throw;
  } catch (const std::exception& error) {
    // A collective that failed because another rank stopped says so, naming the rank.
    if (auto failure = group->peer_failure(error)) throw *failure;
    throw;
  }
}

}  // namespace exfusion
