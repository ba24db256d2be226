// The command workflows (see pipeline.h).
#include "exfusion/train/pipeline.h"

#include <torch/utils.h>

#include <cmath>
#include <csignal>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "exfusion/config/config_file.h"
#include "exfusion/config/fields.h"
#include "exfusion/dist/process_group.h"
#include "exfusion/fusion/fuse.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/models/model.h"
#include "exfusion/models/model_formats.h"
#include "exfusion/train/initialization.h"
#include "exfusion/train/metrics.h"
#include "exfusion/train/replica_sync.h"
#include "exfusion/train/run_files.h"
#include "exfusion/train/standard_callbacks.h"
#include "exfusion/train/tensorboard_callback.h"
#include "exfusion/train/trainer.h"
#include "exfusion/upcycling/ders_compression.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/device.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fault_injection.h"
#include "exfusion/util/interrupt_guard.h"
#include "exfusion/util/json_input.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

std::string timestamp() {
  const auto now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::ostringstream out;
  out << std::put_time(&local, "%Y%m%d-%H%M%S");
  return out.str();
}

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

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

RunConfig dense_twin(const RunConfig& config) {
  auto dense = config;
  dense.ffn = FfnConfig{};
  return dense;
}

// The newest checkpoint in `dir` that reads back whole; a damaged one is reported on
// `progress`, renamed to *.damaged (out of the rotation, kept for a look) and the one before
// it tried.
std::pair<TrainingState, fs::path> newest_whole_checkpoint(const fs::path& run_dir,
                                                           std::ostream& progress) {
  const auto dir = run_dir / kCheckpointDir;
  const auto found = list_checkpoints(dir);
  if (found.empty()) {
    throw InputError(run_dir.string() + ": no checkpoints in " + dir.string() +
                     " to resume from (is it a run directory of exfusion train?)");
  }
  for (const auto& entry : found) {
    try {
      auto state = TrainingState::load(entry.path);
      if (!state.resumable()) {
        throw InputError(entry.path.string() + ": a format " + std::to_string(state.format) +
                         " state, which holds no data position");
      }
      return {std::move(state), entry.path};
    } catch (const InputError& e) {
      progress << "exfusion train: warning: " << e.what()
               << "; resuming from the checkpoint before it" << std::endl;
      std::error_code ignored;
      fs::rename(entry.path, entry.path.string() + ".damaged", ignored);
    }
  }
  throw InputError(run_dir.string() + ": none of its " + std::to_string(found.size()) +
                   " checkpoints reads back whole (see the warnings above)");
}

// A run directory's outputs, which --force replaces: removed once the new run has passed every
// check, so that no file of the old run is left beside the new run's.
void remove_previous_outputs(const fs::path& out) {
  for (const auto* name : {kConfigFile, kStateFile, kModelFile, kModelConfigFile, kMetricsFile,
                           kSummaryFile, kClassesFile}) {
    fs::remove(out / name);
  }
  for (const auto& entry : list_checkpoints(out / kCheckpointDir)) fs::remove(entry.path);
  if (fs::is_directory(out / kTensorBoardDir)) {
    std::vector<fs::path> event_files;
    for (const auto& entry : fs::directory_iterator(out / kTensorBoardDir)) {
      event_files.push_back(entry.path());
    }
    for (const auto& file : event_files) fs::remove(file);
    fs::remove(out / kTensorBoardDir);
  }
}

void stop_if_interrupted(const fs::path& out, std::ostream& progress) {
  const int signal = InterruptGuard::pending();
  if (signal == 0) return;
  progress << "exfusion train: stopped by " << (signal == SIGINT ? "SIGINT" : "SIGTERM")
           << "; resume with: exfusion train --resume " << out.string() << std::endl;
  throw Interrupted(signal);
}

// Where a run starts: its config and directory, the state it resumes from, or the summary of a
// run that already finished (nothing to do).
struct RunStart {
  RunConfig config;
  fs::path out;
  bool replace_outputs = false;  // from step 0 in a directory holding an earlier attempt's files
  std::optional<TrainingState> resumed;
  std::optional<nlohmann::json> finished;
};

RunStart resolve_run(const TrainRun& run, std::ostream& report, std::ostream& progress) {
  RunStart start;
  bool resuming = !run.resume.empty();
  start.replace_outputs = run.force && !resuming;
  start.config = run.config;
  auto& out = start.out;
  out = resuming ? run.resume : run.out;
  if (resuming) {
    if (!fs::is_directory(out)) throw InputError(out.string() + ": no such run directory");
    if (fs::exists(out / kSummaryFile)) {
      report << out.string() << ": the run finished (" << kSummaryFile
             << " exists); nothing to resume" << std::endl;
      // Read as every other input is: a damaged or absurdly nested summary is an error naming it.
      start.finished =
          parse_json_input(read_text_file(out / kSummaryFile), (out / kSummaryFile).string());
      return start;
    }
  }
  if (resuming && list_checkpoints(out / kCheckpointDir).empty() && fs::exists(out / kConfigFile) &&
      !fs::exists(out / kStateFile)) {
    // Killed before its first checkpoint was whole: nothing is lost by starting it over from
    // the config it saved at its start, which ends as the uninterrupted run would.
    start.config = run_config_from_json(config::read_config_file(out / kConfigFile),
                                        (out / kConfigFile).string());
    progress << "exfusion train: " << out.string()
             << " was stopped before its first checkpoint; starting it over from its "
             << kConfigFile << std::endl;
    resuming = false;
    start.replace_outputs = true;
  }
  if (resuming) {
    auto [state, from] = newest_whole_checkpoint(out, progress);
    start.config = state.config;
    progress << "exfusion train: resuming from " << from.string() << " (step " << state.step << ")"
             << std::endl;
    start.resumed = std::move(state);
  } else {
    if (out.empty()) out = fs::path("runs") / (start.config.ffn.run_name() + "-" + timestamp());
    for (const auto* name : {kConfigFile, kStateFile, kModelFile, kModelConfigFile, kMetricsFile,
                             kSummaryFile, kClassesFile}) {
      refuse_overwrite(out / name, start.replace_outputs);
    }
    if (!start.replace_outputs && !list_checkpoints(out / kCheckpointDir).empty()) {
      throw InputError((out / kCheckpointDir).string() +
                       ": holds checkpoints of an earlier run; exfusion train --resume " +
                       out.string() + " continues it, --force replaces it");
    }
  }
  return start;
}

// Under data parallelism rank 0 resolves the run and every other rank follows its decision:
// the same config (a fresh run's must equal each rank's own), the same directory.
RunStart resolve_distributed_run(const TrainRun& run, DistributedGroup& group, std::ostream& report,
                                 std::ostream& progress) {
  auto asked = run.resume.empty() ? to_json(run.config) : nlohmann::json::object();
  asked["--resume"] = run.resume.string();
  group.gate("agree on the config", [&] { group.require_same_config(asked); });
  RunStart start;
  group.gate("open the run directory", [&] {
    if (group.writer()) start = resolve_run(run, report, progress);
  });
  nlohmann::json decision;
  if (group.writer()) {
    decision = {{"config", to_json(start.config)},
                {"out", start.out.string()},
                {"finished", start.finished.has_value()}};
  }
  decision = nlohmann::json::parse(group.broadcast_text("run", decision.dump()));
  if (!group.writer()) {
    start.config = run_config_from_json(decision["config"], "rank 0's config");
    start.out = decision["out"].get<std::string>();
    if (decision["finished"].get<bool>()) start.finished = nlohmann::json::object();
  }
  return start;
}

// The device of this rank: cuda (or auto on a CUDA machine) becomes cuda:LOCAL_RANK.
torch::Device rank_device(const std::string& name, const LaunchEnvironment& launch) {
  auto device = resolve_device(name);
  if (launch.distributed() && device.is_cuda() && !device.has_index()) {
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(launch.local_rank));
  }
  return device;
}

nlohmann::json train_from(RunStart start, const LaunchEnvironment& launch,
                          const std::shared_ptr<DistributedGroup>& group, std::ostream& report,
                          std::ostream& progress) {
  const bool writer = !group || group->writer();
  auto& config = start.config;
  const auto& out = start.out;
  const auto& resumed = start.resumed;
  std::shared_ptr<const Task> task;
  std::optional<TaskData> data;
  ModelPtr model;
  nlohmann::json initialized;
  int64_t params_train = 0;
  std::unique_ptr<Trainer> trainer;
  torch::Device device(torch::kCPU);
  // Everything that can refuse this run is checked before the run directory is touched.
  // This rank's part, free of collectives: under data parallelism it runs inside a gate, which
  // a collective would keep from ever hearing of another rank's refusal.
  const auto set_up = [&] {
    device = rank_device(config.train.device, launch);
    use_bf16(config.train.precision, device);  // rejects bf16 without CUDA before any work
    if (config.train.threads > 0) torch::set_num_threads(static_cast<int>(config.train.threads));
    // Each rank reads its shard: its part of every global batch.
    const auto shard = group ? DataShard{group->rank(), group->size()} : DataShard{};
    task = make_task(config, shard);
    data = task->load_data(config.data, *config.model.options, /*with_train=*/true);
    torch::manual_seed(static_cast<uint64_t>(config.train.seed));
    model = build_model(config.model, config.ffn);
    // Rank 0's weights reach the others through synchronize_replicas.
    if (!resumed && !config.init.from.empty() && writer) {
      initialized = initialize_model(*model, config);
    }
    params_train = count_parameters(*model);
  };
  const auto restore = [&] {
    if (resumed) trainer->restore(*resumed);
  };
  if (group) {
    group->gate("set up training", set_up);
    group->connect(device, std::chrono::seconds(config.train.dist_timeout_s));
    // Its DataParallel checks, collectively, that every rank built the same parameters.
    trainer = std::make_unique<Trainer>(config, model, task, device, group);
    group->gate("restore the checkpoint", restore);
    synchronize_replicas(*trainer, *group);
  } else {
    set_up();
    trainer = std::make_unique<Trainer>(config, model, task, device, group);
    restore();
  }

  std::optional<MetricsLog> log;
  std::optional<JsonlMetricsCallback> jsonl;
  std::optional<TensorBoardCallback> tensorboard;
  std::optional<CheckpointCallback> checkpointer;
  ProgressBarCallback bar(progress);
  InterruptGuard interrupts;
  InterruptCallback stop_on_signal;
  std::vector<TrainerCallback*> callbacks;
  if (writer) {
    fs::create_directories(out / kCheckpointDir);
    remove_atomic_write_leftovers(out);
    remove_atomic_write_leftovers(out / kCheckpointDir);
    if (start.replace_outputs) remove_previous_outputs(out);
    if (!fs::exists(out / kConfigFile)) {
      write_text_atomically(out / kConfigFile, to_json(config).dump(2) + "\n");
    }
    if (!data->class_names.empty()) {
      write_text_atomically(out / kClassesFile, nlohmann::json(data->class_names).dump(2) + "\n");
    }
    progress << "exfusion train: " << config.ffn.run_name() << " on " << device;
    if (group) progress << " × " << group->size() << " ranks (" << group->backend() << ")";
    progress << ", run directory " << out.string() << "\n";
    if (!initialized.is_null()) {
      progress << "exfusion train: weights from " << initialized["from"].get<std::string>() << " ("
               << initialized["method"].get<std::string>() << ")\n";
    }
    log.emplace(out / kMetricsFile);
    jsonl.emplace(*log);
    if (resumed) {
      const auto position = resumed->outputs.find(jsonl->output_name());
      if (position != resumed->outputs.end()) jsonl->rewind_output(*position);
      log->write({{"event", "resume"}, {"step", resumed->step}});
    } else {
      nlohmann::json start_line = {{"event", "start"},
                                   {"config", to_json(config)},
                                   {"params", params_train},
                                   {"device", device.str()}};
      if (group) start_line["world_size"] = group->size();
      if (!initialized.is_null()) start_line["init"] = initialized;
      log->write(start_line);
    }
    callbacks.push_back(&*jsonl);
    std::vector<const ResumableOutput*> outputs{&*jsonl};
    if (config.train.tensorboard) {
      tensorboard.emplace(out / kTensorBoardDir);
      if (resumed) {
        const auto position = resumed->outputs.find(tensorboard->output_name());
        if (position != resumed->outputs.end()) tensorboard->rewind_output(*position);
      }
      callbacks.push_back(&*tensorboard);
      outputs.push_back(&*tensorboard);
    }
    checkpointer.emplace(out / kCheckpointDir, config.train.checkpoint_every,
                         config.train.keep_checkpoints, outputs);
    callbacks.insert(callbacks.end(), {&bar, &*checkpointer});
  }
  callbacks.push_back(&stop_on_signal);
  const auto result = trainer->fit(*data->train, *data->test, callbacks);
  if (result.interrupted) {
    if (writer) {
      progress << "exfusion train: checkpoint " << checkpointer->last_written().string() << "\n";
    }
    stop_if_interrupted(out, progress);
    // Only under data parallelism: another rank was signalled, and every rank stopped with it.
    progress << "exfusion train: stopped with another rank; resume with: torchrun ... "
             << "exfusion train --resume " << out.string() << std::endl;
    throw Interrupted(SIGTERM);
  }
  if (writer) trainer->state().save(out / kStateFile);
  // Ranks stop together, at agreed points only: after training they finish the run.
  if (!group) stop_if_interrupted(out, progress);

  const bool bf16 = trainer->bf16();
  // The training run's fast-path calls, before the final evaluations add theirs.
  const auto path_calls = trainer->fast_path_calls().to_json();
  progress << trainer->fast_path_calls().fallbacks_message();
  const auto trained = trainer->evaluate(*data->test, /*keep_outputs=*/true);
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
      {"headline_metric", headline_description(task->metrics())},
      {"params_train", params_train},
      {"params_stored", count_stored_values(*model)},
      {"flops_per_image", config.model.options->forward_flops_per_sample(config.ffn)},
      {"train_seconds", result.train_seconds},
      {"eval_seconds", result.eval_seconds},
      {"steps", result.steps},
      {"device", device.str()},
      {"precision", bf16 ? "bf16" : "fp32"},
      {"fast_path_calls", path_calls},
      {"run_dir", out.string()}};
  if (group) {
    const auto* parallel = trainer->data_parallel();
    summary["data_parallel"] = {{"world_size", group->size()},
                                {"backend", group->backend()},
                                {"global_batch", config.train.batch_size * group->size()},
                                {"gradient_bytes", parallel->gradient_bytes()},
                                {"gradient_allreduce_ms", parallel->time_gradient_allreduce(5)},
                                {"replicas", compare_replicas(*trainer, *group)}};
  }
  for (const auto& [name, value] : trained.metrics.items()) summary["test_" + name] = value;
  for (const auto& [name, value] : result.last_metrics.items()) {
    summary["final_train_" + name] = value;
  }
  const auto model_metrics = collect_metrics(*model);
  for (const auto& [group_name, values] : model_metrics.items()) summary[group_name] = values;
  const auto& headline = task->metrics().at(task->metrics().headline);
  report << "test " << headline.name << " (trained, " << config.ffn.run_name()
         << "): " << metric_text(headline, trained.metrics.at(headline.name)) << "\n";
  if (!fuses(*model)) {
    // A mixture of experts has no dense form: the run keeps its training state only.
    if (writer) {
      if (tensorboard) tensorboard->write_summary(result.steps, summary);
      write_text_atomically(out / kSummaryFile, summary.dump(2) + "\n");
      log->write({{"event", "summary"}, {"summary", summary}});
    }
    report << std::fixed << std::setprecision(1) << "parameters: " << params_train
           << "; trained in " << result.train_seconds
           << " s\noutputs: " << (out / kStateFile).string() << " (" << config.ffn.run_name()
           << ", no dense export; exfusion eval " << out.string() << " --unfused), "
           << (out / kSummaryFile).string() << std::endl;
    return summary;
  }
  const auto dense_config = dense_twin(config);
  if (!group) stop_if_interrupted(out, progress);
  auto fused = fuse_model(config.model, *model);
  fault_point("fuse");
  const auto fused_eval = trainer->evaluate(*data->test, /*keep_outputs=*/true, fused.get());
  if (writer) {
    save_dense_model(out / kModelFile, module_tensors(*fused), dense_config, data->class_names);
  }
  if (!group) stop_if_interrupted(out, progress);
  auto logit_diff =
      torch::tensor(max_abs_diff(trained.outputs, fused_eval.outputs), torch::kFloat64);
  if (group) group->all_reduce_max_(logit_diff);
  for (const auto& [name, value] : fused_eval.metrics.items())
    summary["fused_test_" + name] = value;
  summary["fused_max_abs_logit_diff"] = logit_diff.item<double>();
  summary["params_fused"] = count_parameters(*fused);
  if (writer) {
    if (tensorboard) tensorboard->write_summary(result.steps, summary);
    write_text_atomically(out / kSummaryFile, summary.dump(2) + "\n");
    log->write({{"event", "summary"}, {"summary", summary}});
  }

  report << "test " << headline.name
         << " (fused, dense):     " << metric_text(headline, fused_eval.metrics.at(headline.name))
         << "\n"
         << std::scientific << std::setprecision(3) << "max |logit difference|:            "
         << summary["fused_max_abs_logit_diff"].get<double>() << "\n"
         << std::fixed << std::setprecision(1) << "parameters: " << params_train
         << " while training, " << summary["params_fused"].get<int64_t>() << " fused; trained in "
         << result.train_seconds << " s\n"
         << "outputs: " << (out / kModelFile).string() << " (fused, timm names), "
         << (out / kSummaryFile).string() << std::endl;
  return summary;
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

nlohmann::json evaluate_checkpoint(const EvalRun& run) {
  const auto path = checkpoint_path(run.path, run.unfused);
  if (!run.save_logits.empty()) refuse_overwrite(run.save_logits, run.force);
  auto checkpoint = load_checkpoint(path, run.config_file);
  auto& config = checkpoint.config;
  const auto task = make_task(config);
  if (!run.data_dir.empty()) {
    apply_config(config, {{"data", task->data_dir_patch(run.data_dir)}},
                 "--data-dir " + run.data_dir);
  }
  const auto missing = config.data.options->missing_for_evaluation();
  if (!missing.empty()) throw InputError(path.string() + ": its config states no " + missing);
  const auto device = resolve_device(run.device);
  auto model = model_from_checkpoint(checkpoint, path);
  model->to(device);
  auto data = task->load_data(config.data, *config.model.options, /*with_train=*/false);
  EvalResult result;
  {
    // The run's own fast-path settings, as in training.
    const FastPathScope fast_paths(fast_path_policy(config.train));
    result = task->evaluate(*model, *data.test, device, use_bf16(config.train.precision, device),
                            !run.save_logits.empty());
  }
  if (!run.save_logits.empty()) {
    save_safetensors(run.save_logits, {{"logits", result.outputs}, {"labels", data.test_targets}});
  }
  if (!std::isfinite(result.loss)) {
    std::cerr << "exfusion eval: warning: the test loss is " << result.loss
              << ": the model's outputs are not finite (a diverged run?)" << std::endl;
  }
  nlohmann::json evaluation = {{"checkpoint", path.string()},
                               {"samples", result.samples()},
                               {"headline_metric", headline_description(task->metrics())}};
  for (const auto& [name, value] : result.metrics.items()) evaluation["test_" + name] = value;
  if (task->metrics().counts_tokens()) evaluation["tokens"] = result.sums.tokens;
  return evaluation;
}

nlohmann::json fuse_checkpoint(const FuseRun& run) {
  const auto path = checkpoint_path(run.path, /*prefer_state=*/true);
  const fs::path out = run.out.empty() ? path.parent_path() / kModelFile : run.out;
  refuse_overwrite(out, run.force);
  refuse_overwrite(model_description_path(out), run.force);
  auto checkpoint = load_checkpoint(path);
  if (!checkpoint.is_training_state) {
    throw InputError(path.string() + ": not a training state (already a dense model?)");
  }
  auto model = model_from_checkpoint(checkpoint, path);
  model->eval();
  auto fused = fuse_model(checkpoint.config.model, *model);
  save_dense_model(out, module_tensors(*fused), dense_twin(checkpoint.config),
                   run_class_names(path));
  nlohmann::json result = {{"fused", out.string()},
                           {"params_train", count_parameters(*model)},
                           {"params_fused", count_parameters(*fused)}};
  const auto model_metrics = collect_metrics(*model);
  for (const auto& [group, values] : model_metrics.items()) result[group] = values;
  return result;
}

nlohmann::json import_checkpoint(const ImportRun& run) {
  refuse_overwrite(run.out, run.force);
  refuse_overwrite(model_description_path(run.out), run.force);
  // model.* is read with the tensors (it can contradict them); the rest goes into the config.
  auto model_patch = nlohmann::json::object();
  std::vector<std::pair<nlohmann::json, std::string>> config_patches;
  for (const auto& assignment : run.assignments) {
    auto patch = config::parse_assignment(assignment);
    if (patch.contains("ffn")) {
      throw InputError("--set " + assignment + ": an import writes a dense model (ffn.kind dense)");
    }
    if (patch.contains("model")) {
      model_patch.merge_patch(patch["model"]);
      patch.erase("model");
    }
    if (!patch.empty()) config_patches.emplace_back(std::move(patch), "--set " + assignment);
  }
  const auto imported = import_dense_model(run.source, model_patch, run.from);

  auto config = default_run_config();
  config.model = imported.model;
  config.ffn = FfnConfig{};
  if (imported.stored_config.is_object()) {  // ours: its normalisation and train section
    auto kept = imported.stored_config;
    kept.erase("model");
    kept.erase("ffn");
    apply_config(config, kept, imported.file.string() + " (metadata " + kConfigMetadataKey + ")");
  }
  for (const auto& [patch, source] : config_patches) apply_config(config, patch, source);
  config.validate({"", ""});
  const auto missing = config.data.options->missing_for_evaluation();
  if (!missing.empty()) {
    throw InputError(imported.file.string() + ": a " + imported.format + " checkpoint states no " +
                     missing);
  }
  // Loading into the model the config builds is the check that eval will read the file.
  auto model = build_model(config.model, config.ffn);
  SafetensorsFile loaded;
  for (const auto& [name, tensor] : imported.tensors) loaded.tensors.emplace(name, tensor);
  load_module_tensors(*model, loaded, imported.file);
  if (run.out.has_parent_path()) fs::create_directories(run.out.parent_path());
  save_dense_model(run.out, module_tensors(*model), config);
  return {{"imported", run.out.string()},
          {"source", imported.file.string()},
          {"from", imported.format},
          {"architecture", config.model.to_json()},
          {"params", count_parameters(*model)}};
}

nlohmann::json describe_checkpoint(const fs::path& run_path) {
  // A run directory without a dense model (an MoE run's) is described by its training state.
  const bool only_state = fs::is_directory(run_path) && !fs::exists(run_path / kModelFile) &&
                          fs::exists(run_path / kStateFile);
  const auto path = checkpoint_path(run_path, /*prefer_state=*/only_state);
  auto checkpoint = load_checkpoint(path);
  auto model = model_from_checkpoint(checkpoint, path);
  const auto& config = checkpoint.config;
  const auto stored_kind = checkpoint.file.metadata.find(kKindMetadataKey);
  const bool is_upcycled_init =
      stored_kind != checkpoint.file.metadata.end() && stored_kind->second == kUpcycledKind;
  nlohmann::json info = {
      {"checkpoint", path.string()},
      {"kind", !checkpoint.is_training_state ? kDenseModelKind
               : is_upcycled_init            ? kUpcycledKind
                                             : kTrainingStateKind},
      {"format", checkpoint.format},
      {"architecture", {{"model", config.model.to_json()}, {"ffn", config.ffn.to_json()}}},
      {"params", count_parameters(*model)},
      {"params_stored", count_stored_values(*model)},
      {"params_deployed", dense_model_parameters(*config.model.options)},
      {"forward_gflops_per_image",
       config.model.options->forward_flops_per_sample(config.ffn) / 1e9},
      {"tensors", checkpoint.file.tensors.size()}};
  auto sites = nlohmann::json::array();
  for (const auto& site : config.model.options->ffn_sites()) {
    sites.push_back({{"path", site.path},
                     {"kind", config.ffn.replaces(site.index) ? config.ffn.kind : "dense"},
                     {"dim", site.dim},
                     {"hidden", site.hidden},
                     {"gated", site.form.gated}});
  }
  info["ffn_sites"] = sites;
  const auto ders = checkpoint.file.metadata.find(kDersMetadataKey);
  if (ders != checkpoint.file.metadata.end()) {  // read (and checked) by load_checkpoint
    info["kind"] = kDersCompressedKind;
    info["ders"] = nlohmann::json::parse(ders->second);
  }
  const auto model_metrics = collect_metrics(*model);
  for (const auto& [group, values] : model_metrics.items()) info[group] = values;
  if (checkpoint.is_training_state) {
    // Read through the state's own loader: its checksum and the shapes of its scalars checked.
    if (checkpoint.file.tensors.count("trainer.step") != 0) {
      info["step"] = TrainingState::load(path).step;
    }
  }
  return info;
}

}  // namespace exfusion
