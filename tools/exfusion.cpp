// exfusion: train Vision Transformers with multi-expert fusion, fuse them into dense
// models, evaluate and inspect checkpoints. Parses arguments, then calls the library;
// bad input exits with code 2 and one message, a bug with code 1.
#include <CLI/CLI.hpp>

#include <c10/util/Exception.h>

#include <deque>
#include <iostream>

#include "exfusion/cli/commands.h"
#include "exfusion/util/error.h"

namespace {

// (config key, value) of each shortcut; a deque, because CLI11 keeps a reference to each
// value and appending to a deque never moves the elements already there.
using ShortcutValues = std::deque<std::pair<std::string, std::string>>;

// Typed shortcuts for the most used config keys; each becomes a `--set key=value`.
void add_config_shortcuts(CLI::App& command, ShortcutValues& values) {
  const std::vector<std::tuple<std::string, std::string, std::string>> shortcuts = {
      {"--ffn", "ffn.kind", "FFN kind: dense, exfusion or moe (top-k MoE baseline)"},
      {"--variant", "ffn.variant", "ExFusion weights: sw (static), dw (learned), mb (memory bank)"},
      {"--experts", "ffn.num_experts", "number of experts N (>= 1)"},
      {"--momentum", "ffn.momentum", "memory-bank momentum δ in [0, 1)"},
      {"--bank-init", "ffn.bank_init", "initial value of the memory bank M"},
      {"--router", "ffn.router", "mb router: shared (one per layer) or per-set"},
      {"--expert-init", "ffn.expert_init", "independent, copy or copy+noise"},
      {"--top-k", "ffn.top_k", "MoE: experts per token k (1..N)"},
      {"--capacity-factor", "ffn.capacity_factor", "MoE: capacity factor, 0 = no token dropping"},
      {"--aux-loss-coef", "ffn.aux_loss_coef", "MoE: load-balancing loss coefficient"},
      {"--layers", "ffn.layers", "blocks whose FFN is replaced, JSON list, e.g. [0,2]; [] = all"},
      {"--preset", "model.preset", "ViT size preset: tiny, small or base"},
      {"--epochs", "train.epochs", "training epochs"},
      {"--max-steps", "train.max_steps", "stop after this many steps (0 = no limit)"},
      {"--batch-size", "train.batch_size", "batch size"},
      {"--lr", "train.lr", "peak learning rate"},
      {"--seed", "train.seed", "random seed (init, data order, augmentation)"},
      {"--device", "train.device", "auto, cpu, cuda or cuda:N"},
      {"--precision", "train.precision", "auto, fp32 or bf16"},
      {"--threads", "train.threads", "CPU threads (0 = LibTorch's default)"},
      {"--cuda-graph", "train.cuda_graph",
       "true: capture the training step in a CUDA graph and replay it (CUDA only)"},
  };
  for (const auto& [flag, key, help] : shortcuts) {
    values.emplace_back(key, "");
    command.add_option(flag, values.back().second, help + " (sets " + key + ")");
  }
}

// Shortcuts go first so that an explicit --set of the same key wins.
void prepend_shortcuts(const ShortcutValues& values, std::vector<std::string>& assignments) {
  std::vector<std::string> given;
  for (const auto& [key, value] : values) {
    if (!value.empty()) given.push_back(key + "=" + value);
  }
  assignments.insert(assignments.begin(), given.begin(), given.end());
}

int run(int argc, char** argv) {
  CLI::App app{
      "exfusion: multi-expert fusion training for Vision Transformers.\n"
      "Train with N experts per FFN, fuse them into one dense FFN, export for timm."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "exfusion 0.1.0");

  exfusion::TrainArgs train_args;
  ShortcutValues shortcut_values;
  auto* train = app.add_subcommand(
      "train",
      "Train a model (default: ViT with ExFusion-mb, N=4, δ=0.95 on Fashion-MNIST), evaluate it, "
      "fuse it and evaluate the fused model");
  train->add_option("--config", train_args.config_file, "JSON config laid over the defaults")
      ->check(CLI::ExistingFile);
  train->add_option("--out", train_args.out_dir, "run directory (default: runs/<kind>-<time>)");
  train->add_option("--data", train_args.data_dir,
                    "directory with the IDX files (default: /usr/share/datasets/fashion-mnist)");
  train->add_option("--set", train_args.assignments, "override any config key: key.path=value")
      ->take_all();
  train->add_flag("--force", train_args.force,
                  "overwrite the outputs of an existing run directory");
  add_config_shortcuts(*train, shortcut_values);

  exfusion::EvalArgs eval_args;
  auto* eval = app.add_subcommand("eval", "Evaluate a checkpoint on the test set");
  eval->add_option("path", eval_args.path, "run directory or .safetensors checkpoint")->required();
  eval->add_option("--config", eval_args.config_file,
                   "model config JSON to use instead of the checkpoint's own");
  eval->add_option("--data", eval_args.data_dir, "directory with the IDX files");
  eval->add_option("--device", eval_args.device, "auto, cpu, cuda or cuda:N");
  eval->add_option("--save-logits", eval_args.save_logits,
                   "write test logits and labels to this .safetensors file");
  eval->add_flag("--unfused", eval_args.unfused,
                 "in a run directory, evaluate the training state instead of the fused model");
  eval->add_flag("--force", eval_args.force, "overwrite an existing --save-logits file");

  exfusion::FuseArgs fuse_args;
  auto* fuse = app.add_subcommand("fuse", "Fuse a training state into a dense timm checkpoint");
  fuse->add_option("path", fuse_args.path, "run directory or state.safetensors")->required();
  fuse->add_option("--out", fuse_args.out, "output file (default: model.safetensors beside it)");
  fuse->add_flag("--force", fuse_args.force, "overwrite an existing output");

  exfusion::InfoArgs info_args;
  auto* info =
      app.add_subcommand("info", "Describe a checkpoint: architecture, size, fusion weights");
  info->add_option("path", info_args.path, "run directory or .safetensors checkpoint")->required();

  exfusion::BenchArgs bench_args;
  ShortcutValues bench_shortcuts;
  auto* bench = app.add_subcommand(
      "bench",
      "Time training steps on synthetic data (default ViT-B/16, 224 px, 1000 classes) and print "
      "one JSON line: images/s, ms/step, peak memory, TFLOP/s, MFU");
  bench->add_option("--config", bench_args.config_file, "JSON config laid over the bench defaults")
      ->check(CLI::ExistingFile);
  bench->add_option("--warmup", bench_args.warmup_steps, "untimed steps first (default 5)");
  bench->add_option("--steps", bench_args.timed_steps, "timed steps (default 20)");
  bench->add_option("--profile", bench_args.profile_trace,
                    "also profile 3 more steps and write a Chrome trace here "
                    "(summarise with bench/trace_summary.py)");
  bench->add_option("--set", bench_args.assignments, "override any config key: key.path=value")
      ->take_all();
  add_config_shortcuts(*bench, bench_shortcuts);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }

  if (train->parsed()) {
    prepend_shortcuts(shortcut_values, train_args.assignments);
    exfusion::run_train(train_args);
  } else if (bench->parsed()) {
    prepend_shortcuts(bench_shortcuts, bench_args.assignments);
    exfusion::run_bench(bench_args);
  } else if (eval->parsed()) {
    exfusion::run_eval(eval_args);
  } else if (fuse->parsed()) {
    exfusion::run_fuse(fuse_args);
  } else if (info->parsed()) {
    exfusion::run_info(info_args);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const exfusion::InputError& e) {
    std::cerr << "exfusion: error: " << e.what() << std::endl;
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    std::cerr << "exfusion: error: " << e.what() << std::endl;
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "exfusion: internal error: " << e.what_without_backtrace() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "exfusion: internal error: " << e.what() << std::endl;
    return 1;
  }
}
