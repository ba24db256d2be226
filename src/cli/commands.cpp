// train, eval, fuse and info (see commands.h): each builds what it needs from the config
// and the run directory, calls the library, and writes its outputs atomically.
#include "exfusion/cli/commands.h"

#include <ctime>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "exfusion/cli/run_files.h"
#include "exfusion/data/idx.h"
#include "exfusion/data/loader.h"
#include "exfusion/fusion/fuse.h"
#include "exfusion/train/checkpoint.h"
#include "exfusion/train/device.h"
#include "exfusion/train/evaluate.h"
#include "exfusion/train/metrics.h"
#include "exfusion/train/step_benchmark.h"
#include "exfusion/train/trainer.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"
#include "exfusion/util/fast_paths.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

RunConfig build_run_config(const TrainArgs& args) {
  auto json = default_run_config_json();
  std::string source = "defaults";
  if (!args.config_file.empty()) {
    merge_config(json, read_json_file(args.config_file), args.config_file);
    source = args.config_file;
  }
  if (!args.data_dir.empty()) json["data"]["dir"] = args.data_dir;
  for (const auto& assignment : args.assignments) {
    merge_config(json, parse_assignment(assignment), "--set " + assignment);
  }
  return run_config_from_json(json, source);
}

IdxPaths data_paths(const DataConfig& data) {
  if (!data.train_images.empty()) {
    return {data.train_images, data.train_labels, data.test_images, data.test_labels};
  }
  return idx_paths_in(data.dir);
}

void check_images_fit(const ImageDataset& dataset, const VisionTransformerOptions& model,
                      const fs::path& file) {
  const auto sizes = dataset.images.sizes();
  if (sizes[1] != model.in_chans || sizes[2] != model.img_size || sizes[3] != model.img_size) {
    std::ostringstream message;
    message << file.string() << ": images are " << sizes[1] << "×" << sizes[2] << "×" << sizes[3]
            << " (channels×height×width), the model expects " << model.in_chans << "×"
            << model.img_size << "×" << model.img_size << " (model.in_chans, model.img_size)";
    throw InputError(message.str());
  }
  const auto max_label = dataset.labels.max().item<int64_t>();
  if (dataset.labels.min().item<int64_t>() < 0 || max_label >= model.num_classes) {
    throw InputError(file.string() + ": label " + std::to_string(max_label) +
                     " is outside model.num_classes = " + std::to_string(model.num_classes));
  }
}

LoaderOptions loader_options(const RunConfig& config, bool training) {
  LoaderOptions options;
  options.batch_size = config.train.batch_size;
  options.shuffle = training;
  options.drop_last = training;
  options.seed = static_cast<uint64_t>(config.train.seed);
  options.augment = training && config.data.augment;
  options.crop_padding = config.data.crop_padding;
  options.horizontal_flip = config.data.horizontal_flip;
  options.mean.assign(config.data.mean.begin(), config.data.mean.end());
  options.std.assign(config.data.std.begin(), config.data.std.end());
  options.prefetch = config.data.prefetch;
  return options;
}

std::string timestamp() {
  const auto now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::ostringstream out;
  out << std::put_time(&local, "%Y%m%d-%H%M%S");
  return out.str();
}

std::string run_name(const VisionTransformerOptions& model) {
  if (model.ffn.kind == FfnKind::kDense) return "dense";
  if (model.ffn.kind == FfnKind::kMoE) {
    return "moe-n" + std::to_string(model.ffn.moe.num_experts()) + "-k" +
           std::to_string(model.ffn.moe.top_k());
  }
  return "exfusion-" + to_string(model.ffn.exfusion.variant()) + "-n" +
         std::to_string(model.ffn.exfusion.num_experts());
}

void print_json(const nlohmann::json& json) { std::cout << json.dump(2) << std::endl; }

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

VisionTransformer model_from_checkpoint(const Checkpoint& checkpoint, const fs::path& path) {
  VisionTransformer model(checkpoint.config.model);
  load_module_tensors(*model, checkpoint.file, path, checkpoint.is_training_state ? "model." : "");
  return model;
}

}  // namespace

void run_train(const TrainArgs& args) {
  auto config = build_run_config(args);
  const fs::path out = args.out_dir.empty()
                           ? fs::path("runs") / (run_name(config.model) + "-" + timestamp())
                           : fs::path(args.out_dir);
  for (const auto* name :
       {kConfigFile, kStateFile, kModelFile, kModelConfigFile, kMetricsFile, kSummaryFile}) {
    refuse_overwrite(out / name, args.force);
  }
  const auto device = resolve_device(config.train.device);
  use_bf16(config.train.precision, device);  // rejects bf16 without CUDA before any work
  if (config.train.threads > 0) torch::set_num_threads(static_cast<int>(config.train.threads));

  const auto paths = data_paths(config.data);
  auto train_set = load_idx_pair(paths.train_images, paths.train_labels);
  auto test_set = load_idx_pair(paths.test_images, paths.test_labels);
  check_images_fit(train_set, config.model, paths.train_images);
  check_images_fit(test_set, config.model, paths.test_images);
  if (config.data.mean.empty() || config.data.std.empty()) {
    const auto [mean, std] = channel_mean_std(train_set.images);
    config.data.mean.assign(mean.begin(), mean.end());
    config.data.std.assign(std.begin(), std.end());
  }

  fs::create_directories(out);
  if (args.force) fs::remove(out / kMetricsFile);
  write_text_atomically(out / kConfigFile, to_json(config).dump(2) + "\n");
  std::cerr << "exfusion train: " << run_name(config.model) << " on " << device
            << ", run directory " << out.string() << "\n";

  torch::manual_seed(static_cast<uint64_t>(config.train.seed));
  VisionTransformer model(config.model);
  const int64_t params_train = count_parameters(*model);
  BatchLoader train_loader(std::move(train_set), loader_options(config, true));
  BatchLoader test_loader(std::move(test_set), loader_options(config, false));
  MetricsLog log(out / kMetricsFile);
  log.write({{"event", "start"},
             {"config", to_json(config)},
             {"params", params_train},
             {"device", device.str()}});

  Trainer trainer(config, model, device);
  const auto result = trainer.fit(train_loader, test_loader, log, std::cerr, [&](int64_t) {
    save_training_state(out / kStateFile, trainer.training_state(), config);
  });
  const auto path_calls = trainer.fast_path_calls().to_json();
  std::cerr << trainer.fast_path_calls().fallbacks_message();
  // The evaluations and the fusion below take the run's fast paths too (uncounted).
  const FastPathScope fast_paths(fast_path_policy(config.train));

  const bool bf16 = trainer.bf16();
  const auto trained = evaluate(model, test_loader, device, bf16, /*keep_logits=*/true);
  nlohmann::json summary = {{"test_accuracy", trained.accuracy},
                            {"test_loss", trained.loss},
                            {"params_train", params_train},
                            {"flops_per_image", forward_flops_per_image(config.model)},
                            {"train_seconds", result.train_seconds},
                            {"steps", result.steps},
                            {"final_train_loss", result.last_loss},
                            {"final_train_accuracy", result.last_train_accuracy},
                            {"device", device.str()},
                            {"precision", bf16 ? "bf16" : "fp32"},
                            {"fusion_weights", fusion_weights_json(model)},
                            {"fast_path_calls", path_calls},
                            {"run_dir", out.string()}};
  std::cout << std::fixed << std::setprecision(2) << "test accuracy (trained, "
            << run_name(config.model) << "): " << 100.0 * trained.accuracy << "%\n";
  if (config.model.ffn.kind == FfnKind::kMoE) {
    // A mixture of experts has no dense form: the run keeps its training state only.
    summary["routing"] = routing_json(model);
    write_text_atomically(out / kSummaryFile, summary.dump(2) + "\n");
    log.write({{"event", "summary"}, {"summary", summary}});
    std::cout << std::setprecision(1) << "parameters: " << params_train << "; trained in "
              << result.train_seconds << " s\noutputs: " << (out / kStateFile).string()
              << " (MoE, no dense export; exfusion eval " << out.string() << " --unfused), "
              << (out / kSummaryFile).string() << std::endl;
    return;
  }
  auto fused = fuse(model);
  const auto fused_eval = evaluate(fused, test_loader, device, bf16, /*keep_logits=*/true);
  auto dense_config = config;
  dense_config.model.ffn = FfnOptions{};
  save_dense_model(out / kModelFile, module_tensors(*fused), dense_config);
  summary["fused_test_accuracy"] = fused_eval.accuracy;
  summary["fused_max_abs_logit_diff"] = max_abs_diff(trained.logits, fused_eval.logits);
  summary["fused_test_loss"] = fused_eval.loss;
  summary["params_fused"] = count_parameters(*fused);
  write_text_atomically(out / kSummaryFile, summary.dump(2) + "\n");
  log.write({{"event", "summary"}, {"summary", summary}});

  std::cout << "test accuracy (fused, dense):     " << 100.0 * fused_eval.accuracy << "%\n"
            << std::scientific << std::setprecision(3) << "max |logit difference|:            "
            << summary["fused_max_abs_logit_diff"].get<double>() << "\n"
            << std::fixed << std::setprecision(1) << "parameters: " << params_train
            << " while training, " << summary["params_fused"].get<int64_t>()
            << " fused; trained in " << result.train_seconds << " s\n"
            << "outputs: " << (out / kModelFile).string() << " (fused, timm names), "
            << (out / kSummaryFile).string() << std::endl;
}

void run_eval(const EvalArgs& args) {
  const auto path = checkpoint_path(args.path, args.unfused);
  if (!args.save_logits.empty()) refuse_overwrite(args.save_logits, args.force);
  auto checkpoint = load_checkpoint(path, args.config_file);
  auto& config = checkpoint.config;
  if (!args.data_dir.empty()) {
    config.data.dir = args.data_dir;
    config.data.train_images.clear();
  }
  const auto device = resolve_device(args.device);
  auto model = model_from_checkpoint(checkpoint, path);
  if (config.data.mean.empty() || config.data.std.empty()) {
    throw InputError(path.string() + ": its config has no data.mean/data.std normalisation");
  }
  model->to(device);
  const auto paths = data_paths(config.data);
  auto test_set = load_idx_pair(paths.test_images, paths.test_labels);
  check_images_fit(test_set, config.model, paths.test_images);
  const auto labels = test_set.labels;
  BatchLoader loader(std::move(test_set), loader_options(config, false));
  // The run's own fast paths: its train.layer_norm_kernels=false holds here too.
  const FastPathScope fast_paths(fast_path_policy(config.train));
  const auto result = evaluate(model, loader, device, use_bf16(config.train.precision, device),
                               !args.save_logits.empty());
  if (!args.save_logits.empty()) {
    save_safetensors(args.save_logits, {{"logits", result.logits}, {"labels", labels}});
  }
  print_json({{"checkpoint", path.string()},
              {"test_accuracy", result.accuracy},
              {"test_loss", result.loss},
              {"samples", result.samples}});
}

void run_fuse(const FuseArgs& args) {
  const auto path = checkpoint_path(args.path, /*prefer_state=*/true);
  const fs::path out = args.out.empty() ? path.parent_path() / kModelFile : fs::path(args.out);
  refuse_overwrite(out, args.force);
  auto checkpoint = load_checkpoint(path);
  if (!checkpoint.is_training_state) {
    throw InputError(path.string() + ": not a training state (already a dense model?)");
  }
  auto model = model_from_checkpoint(checkpoint, path);
  model->eval();
  auto fused = fuse(model);
  auto dense_config = checkpoint.config;
  dense_config.model.ffn = FfnOptions{};
  save_dense_model(out, module_tensors(*fused), dense_config);
  print_json({{"fused", out.string()},
              {"params_train", count_parameters(*model)},
              {"params_fused", count_parameters(*fused)},
              {"fusion_weights", fusion_weights_json(model)}});
}

void run_info(const InfoArgs& args) {
  const auto path = checkpoint_path(args.path, /*prefer_state=*/false);
  auto checkpoint = load_checkpoint(path);
  auto model = model_from_checkpoint(checkpoint, path);
  const auto& options = checkpoint.config.model;
  nlohmann::json info = {{"checkpoint", path.string()},
                         {"kind", checkpoint.is_training_state ? "training-state" : "dense-model"},
                         {"architecture", model_to_json(options)},
                         {"params", count_parameters(*model)},
                         {"forward_gflops_per_image", forward_flops_per_image(options) / 1e9},
                         {"tensors", checkpoint.file.tensors.size()},
                         {"fusion_weights", fusion_weights_json(model)}};
  if (checkpoint.is_training_state) {
    const auto step = checkpoint.file.tensors.find("trainer.step");
    if (step != checkpoint.file.tensors.end()) info["step"] = step->second.item<int64_t>();
  }
  print_json(info);
}

void run_bench(const BenchArgs& args) {
  if (args.warmup_steps < 0 || args.timed_steps < 1) {
    throw InputError("bench: --warmup must be >= 0 and --steps >= 1");
  }
  auto json = default_run_config_json();
  json["model"] = model_to_json(vit_preset("base"))["model"];
  std::string source = "bench defaults";
  if (!args.config_file.empty()) {
    merge_config(json, read_json_file(args.config_file), args.config_file);
    source = args.config_file;
  }
  for (const auto& assignment : args.assignments) {
    merge_config(json, parse_assignment(assignment), "--set " + assignment);
  }
  const auto config = run_config_from_json(json, source);
  BenchmarkOptions options;
  options.warmup_steps = args.warmup_steps;
  options.timed_steps = args.timed_steps;
  options.profile_trace = args.profile_trace;
  const auto result = benchmark_training_step(config, options);
  std::cout << result.dump() << std::endl;
  std::cerr << fast_path_fallbacks_message(result["fast_path_calls"]);
}

}  // namespace exfusion
