// The command line (see cli.h): CLI11 parses into the pipeline's structs,
// config shortcuts become `--set key=value` assignments, and `exfusion config`
// prints every key's declaration.
#include "exfusion/cli/cli.h"

#include <CLI/CLI.hpp>

#include <c10/util/Exception.h>

#include <deque>
#include <iostream>
#include <map>
#include <new>
#include <string>

#include "exfusion/config/fields.h"
#include "exfusion/dist/process_group.h"
#include "exfusion/models/model_formats.h"
#include "exfusion/sweep/sweep_runner.h"
#include "exfusion/train/initialization.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/error.h"
#include "exfusion/util/interrupt_guard.h"
#include "exfusion/workflows/checkpoint_table.h"
#include "exfusion/workflows/compress.h"
#include "exfusion/workflows/data_inspection.h"
#include "exfusion/workflows/evaluate.h"
#include "exfusion/workflows/fuse.h"
#include "exfusion/workflows/import.h"
#include "exfusion/workflows/info.h"
#include "exfusion/workflows/step_benchmark.h"
#include "exfusion/workflows/train.h"
#include "exfusion/workflows/train_request.h"

namespace exfusion {
namespace {

// (config key, value) of each shortcut; a deque, because CLI11 keeps a
// reference to each value and appending to a deque never moves the elements
// already there.
using ShortcutValues = std::deque<std::pair<std::string, std::string>>;

// Every key of the config with its type, default and help, from the fields'
// declarations.
std::vector<config::FieldHelp> config_keys() {
  return config::describe(default_run_config(), "");
}

// Typed shortcuts for the most used config keys; each becomes a `--set
// key=value`, and its help is the key's declared help.
void add_config_shortcuts(CLI::App &command, ShortcutValues &values) {
  const std::vector<std::pair<std::string, std::string>> shortcuts = {
      {"--ffn", "ffn.kind"},
      {"--variant", "ffn.variant"},
      {"--experts", "ffn.num_experts"},
      {"--momentum", "ffn.momentum"},
      {"--bank-init", "ffn.bank_init"},
      {"--router", "ffn.router"},
      {"--expert-init", "ffn.expert_init"},
      {"--top-k", "ffn.top_k"},
      {"--capacity-factor", "ffn.capacity_factor"},
      {"--aux-loss-coef", "ffn.aux_loss_coef"},
      {"--layers", "ffn.layers"},
      {"--preset", "model.preset"},
      {"--epochs", "train.epochs"},
      {"--max-steps", "train.max_steps"},
      {"--batch-size", "train.batch_size"},
      {"--lr", "train.lr"},
      {"--seed", "train.seed"},
      {"--device", "train.device"},
      {"--precision", "train.precision"},
      {"--threads", "train.threads"},
      {"--cuda-graph", "train.cuda_graph"},
  };
  const auto keys = config_keys();
  for (const auto &[flag, key] : shortcuts) {
    std::string help;
    for (const auto &field : keys) {
      if (field.path == key) {
        help = field.help;
        break;
      }
    }
    values.emplace_back(key, "");
    command.add_option(flag, values.back().second,
                       help + " (sets " + key + ")");
  }
}

// Shortcuts go first so that an explicit --set of the same key wins.
void prepend_shortcuts(const ShortcutValues &values,
                       std::vector<std::string> &assignments) {
  std::vector<std::string> given;
  for (const auto &[key, value] : values) {
    if (!value.empty())
      given.push_back(key + "=" + value);
  }
  assignments.insert(assignments.begin(), given.begin(), given.end());
}

void print_json(const nlohmann::json &json) {
  std::cout << json.dump(2) << std::endl;
}

int parse_and_run(int argc, const char *const *argv) {
  CLI::App app{"exfusion: multi-expert fusion training for Transformers.\n"
               "Train with N experts per FFN, fuse them into one dense FFN, "
               "export for timm."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "exfusion 0.1.0");

  std::string train_config, train_out, train_data;
  std::vector<std::string> train_sets;
  bool train_force = false;
  ShortcutValues shortcut_values;
  auto *train = app.add_subcommand(
      "train", "Train a model (default: ViT with ExFusion-mb, N=4, δ=0.95 on "
               "Fashion-MNIST), evaluate it, "
               "fuse it and evaluate the fused model");
  train
      ->add_option("--config", train_config,
                   "config file (YAML or JSON) laid over the defaults")
      ->check(CLI::ExistingFile);
  train->add_option("--out", train_out,
                    "run directory (default: runs/<kind>-<time>)");
  train->add_option("--data", train_data,
                    "directory with the IDX files (default: "
                    "/usr/share/datasets/fashion-mnist)");
  train
      ->add_option("--set", train_sets,
                   "override any config key: key.path=value (`exfusion config` "
                   "lists them)")
      ->take_all();
  train->add_flag("--force", train_force,
                  "replace the outputs of an existing run directory");
  std::string train_resume;
  train->add_option("--resume", train_resume,
                    "continue a run directory from its newest whole "
                    "checkpoint, with its saved "
                    "config (no other option)");
  std::string train_init;
  train->add_option(
      "--init", train_init,
      "start from a directory `exfusion upcycle` wrote: its config.yaml is the "
      "config (under --set) and its init.safetensors the weights");
  add_config_shortcuts(*train, shortcut_values);

  UpcycleRun upcycle_run;
  std::string upcycle_dense, upcycle_out, upcycle_method, upcycle_ratio,
      upcycle_seed;
  auto *upcycle = app.add_subcommand(
      "upcycle", "Turn a dense checkpoint's FFNs into experts (sparse "
                 "upcycling, Drop-Upcycling or noise "
                 "upcycling) of a top-k MoE or an ExFusion model, for exfusion "
                 "train --init");
  upcycle
      ->add_option("dense", upcycle_dense,
                   "dense checkpoint (.safetensors) or run directory")
      ->required();
  const auto expert_kinds = ffn_kinds_with_experts();
  upcycle
      ->add_option("--to", upcycle_run.to,
                   "the FFN kind with experts to upcycle into: " +
                       config::join_or(expert_kinds) +
                       " (ders-*: DeRS upcycling, a shared base and per-expert "
                       "deltas); ders is "
                       "ders-moe")
      ->required()
      ->transform(CLI::Transformer(
          std::map<std::string, std::string>{{"ders", "ders-moe"}}))
      ->check(CLI::IsMember(expert_kinds));
  upcycle->add_option("--method", upcycle_method,
                      "copy, drop or noise (sets init.method)");
  upcycle->add_option("--ratio", upcycle_ratio,
                      "share of hidden units dropped (sets init.ratio)");
  upcycle->add_option("--seed", upcycle_seed,
                      "seed of the drawn units (sets init.seed)");
  upcycle
      ->add_option("--out", upcycle_out,
                   "directory for init.safetensors and config.yaml")
      ->required();
  upcycle
      ->add_option(
          "--set", upcycle_run.assignments,
          "any config key over the dense run's config: ffn.num_experts=8, "
          "init.independent_indices=true, train.epochs=3, ...")
      ->take_all();
  upcycle->add_flag("--force", upcycle_run.force,
                    "replace an existing init.safetensors");

  CompressRun compress_run;
  std::string compress_path, compress_method, compress_out;
  auto *compress = app.add_subcommand(
      "compress", "DeRS compression of a MoE or unfused ExFusion run's "
                  "experts: a shared base plus sparse or "
                  "quantised deltas, in one file that eval, info and train "
                  "--set init.from read");
  compress
      ->add_option("run", compress_path,
                   "run directory, state.safetensors or training state")
      ->required();
  compress->add_option("--method", compress_method, "drop, topk or quant")
      ->required();
  compress->add_option(
      "--ratio", compress_run.options.ratio,
      "drop, topk: share p of each expert's delta entries dropped, in [0, 1) "
      "(default 0.5)");
  compress->add_option("--bits", compress_run.options.bits,
                       "quant: 8, 4, 2 or 1 (default 8)");
  compress->add_option("--seed", compress_run.options.seed,
                       "drop: seed of the dropped entries");
  compress
      ->add_option("--out", compress_out, "the compressed .safetensors file")
      ->required();
  compress->add_option(
      "--data", compress_run.data_dir,
      "directory with the IDX files (default: the run's test data)");
  compress->add_flag("--force", compress_run.force,
                     "overwrite an existing output");

  SweepRun sweep_run;
  std::string sweep_file, sweep_out, sweep_data;
  auto *sweep = app.add_subcommand(
      "sweep", "Run a sweep file's configurations x seeds one after another "
               "(resumable) and write the "
               "table: mean ± std over seeds, the difference to the baseline "
               "and its Welch p-value");
  sweep
      ->add_option("file", sweep_file,
                   "sweep file (YAML or JSON; configs/sweeps/*.yaml)")
      ->required();
  sweep->add_option("--out", sweep_out,
                    "sweep directory (default runs/sweeps/<file's stem>)");
  sweep->add_option("--data", sweep_data,
                    "directory with the IDX files, for every run");
  sweep
      ->add_option("--set", sweep_run.assignments,
                   "config keys laid over every run")
      ->take_all();
  sweep->add_flag(
      "--dry-run", sweep_run.dry_run,
      "list the runs, their directories, state and commands; run nothing");

  EvalRun eval_run;
  std::string eval_path, eval_logits;
  auto *eval =
      app.add_subcommand("eval", "Evaluate a checkpoint on the test set");
  eval->add_option("path", eval_path,
                   "run directory or .safetensors checkpoint")
      ->required();
  eval->add_option("--config", eval_run.config_file,
                   "config file (YAML or JSON) laid over the checkpoint's own");
  eval->add_option("--data", eval_run.data_dir, "directory with the IDX files");
  eval->add_option("--device", eval_run.device, "auto, cpu, cuda or cuda:N");
  eval->add_option("--save-logits", eval_logits,
                   "write test logits and labels to this .safetensors file");
  eval->add_flag("--unfused", eval_run.unfused,
                 "in a run directory, evaluate the training state instead of "
                 "the fused model");
  eval->add_flag("--force", eval_run.force,
                 "overwrite an existing --save-logits file");

  FuseRun fuse_run;
  std::string fuse_path, fuse_out;
  auto *fuse = app.add_subcommand(
      "fuse", "Fuse a training state into a dense timm checkpoint");
  fuse->add_option("path", fuse_path, "run directory or state.safetensors")
      ->required();
  fuse->add_option("--out", fuse_out,
                   "output file (default: model.safetensors beside it)");
  fuse->add_flag("--force", fuse_run.force, "overwrite an existing output");

  ImportRun import_run;
  std::string import_source, import_out;
  auto *import_command =
      app.add_subcommand("import", "Make one of our dense checkpoints from a "
                                   "dense ViT: ours, timm's or Hugging Face's");
  import_command
      ->add_option("source", import_source,
                   "run directory, .safetensors file, or Hugging Face "
                   "save_pretrained directory "
                   "(its config.json beside the weights)")
      ->required();
  import_command
      ->add_option("--out", import_out,
                   "the dense checkpoint to write (its .json beside it)")
      ->required();
  import_command->add_option(
      "--from", import_run.from,
      config::join_or(import_formats().names()) +
          " (auto: ours by its metadata, else the format that "
          "recognises the file)");
  import_command
      ->add_option(
          "--set", import_run.assignments,
          "model.key=value over the architecture read (model.num_heads=N for a "
          "timm "
          "file of a non-standard width); data.mean=[...] data.std=[...]")
      ->take_all();
  import_command->add_flag("--force", import_run.force,
                           "overwrite an existing output");

  std::string info_path;
  bool info_json = false;
  auto *info =
      app.add_subcommand("info", "Describe a checkpoint: architecture, "
                                 "parameters, FLOPs, each FFN and its weights");
  info->add_option("path", info_path,
                   "run directory or .safetensors checkpoint")
      ->required();
  info->add_flag("--json", info_json,
                 "print the description as JSON (for scripts)");

  auto *config_command = app.add_subcommand(
      "config", "List every config key: its type, default (the main job's, or "
                "with --config/--set that "
                "config's: --set task=<task> lists the task's data keys) and "
                "what it does");
  std::string listed_config;
  std::vector<std::string> listed_sets;
  config_command
      ->add_option("--config", listed_config,
                   "config file (YAML or JSON) to list")
      ->check(CLI::ExistingFile);
  config_command
      ->add_option("--set", listed_sets,
                   "config keys to set first: key.path=value")
      ->take_all();

  BenchArgs bench_args;
  ShortcutValues bench_shortcuts;
  auto *bench = app.add_subcommand(
      "bench", "Time training steps on synthetic data (default ViT-B/16, 224 "
               "px, 1000 classes) and print "
               "one JSON line: images/s, ms/step, peak memory, TFLOP/s, MFU");
  bench
      ->add_option("--config", bench_args.config_file,
                   "config file (YAML or JSON) laid over the bench defaults")
      ->check(CLI::ExistingFile);
  bench->add_option("--warmup", bench_args.warmup_steps,
                    "untimed steps first (default 5)");
  bench->add_option("--steps", bench_args.timed_steps,
                    "timed steps (default 20)");
  bench->add_option("--profile", bench_args.profile_trace,
                    "also profile 3 more steps and write a Chrome trace here "
                    "(summarise with bench/trace_summary.py)");
  bench
      ->add_option("--set", bench_args.assignments,
                   "override any config key: key.path=value")
      ->take_all();
  add_config_shortcuts(*bench, bench_shortcuts);

  std::string data_config, data_dir;
  std::vector<std::string> data_sets;
  ShortcutValues data_shortcuts;
  DataRun data_run;
  auto *data_command = app.add_subcommand(
      "data",
      "Read a run's data as training would (decoding, augmentation, workers) "
      "and print one JSON "
      "line: images/s, per worker; --save keeps the batches to look at");
  data_command
      ->add_option("--config", data_config,
                   "config file (YAML or JSON) laid over the defaults")
      ->check(CLI::ExistingFile);
  data_command->add_option("--data", data_dir,
                           "the data directory (sets data.dir)");
  data_command->add_option("--split", data_run.split,
                           "train (augmented) or val (default train)");
  data_command->add_option("--batches", data_run.batches,
                           "batches to read (default 20)");
  data_command->add_option("--epoch", data_run.epoch,
                           "the epoch whose order and draws to read");
  data_command->add_option(
      "--save", data_run.save,
      "write the batches read as safetensors (inputs, targets)");
  data_command
      ->add_option("--set", data_sets,
                   "override any config key: key.path=value")
      ->take_all();
  add_config_shortcuts(*data_command, data_shortcuts);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    app.exit(e);
    return 2;
  }

  if (train->parsed()) {
    prepend_shortcuts(shortcut_values, train_sets);
    const TrainRequest request{train_config, train_sets, train_data, train_init,
                               train_resume, train_out,  train_force};
    run_training(resolve_train_request(request), std::cout, std::cerr);
  } else if (upcycle->parsed()) {
    upcycle_run.dense = upcycle_dense;
    upcycle_run.out = upcycle_out;
    const std::vector<std::pair<std::string, std::string>> shortcuts = {
        {"init.method", upcycle_method},
        {"init.ratio", upcycle_ratio},
        {"init.seed", upcycle_seed}};
    for (auto it = shortcuts.rbegin(); it != shortcuts.rend(); ++it) {
      if (!it->second.empty()) {
        upcycle_run.assignments.insert(upcycle_run.assignments.begin(),
                                       it->first + "=" + it->second);
      }
    }
    print_json(upcycle_checkpoint(upcycle_run, std::cerr));
  } else if (sweep->parsed()) {
    sweep_run.file = sweep_file;
    sweep_run.out = sweep_out;
    if (!sweep_data.empty()) {
      sweep_run.assignments.insert(sweep_run.assignments.begin(),
                                   "data.dir=" + sweep_data);
    }
    const auto result = run_sweep(sweep_run, std::cout, std::cerr);
    if (sweep_run.dry_run)
      print_json(result);
  } else if (compress->parsed()) {
    compress_run.path = compress_path;
    compress_run.out = compress_out;
    compress_run.options.method = parse_ders_method(compress_method);
    print_json(compress_checkpoint(compress_run, std::cerr));
  } else if (data_command->parsed()) {
    prepend_shortcuts(data_shortcuts, data_sets);
    ConfigLayers layers{data_config, {}};
    if (!data_dir.empty())
      layers.assignments.push_back("data.dir=" + data_dir);
    layers.assignments.insert(layers.assignments.end(), data_sets.begin(),
                              data_sets.end());
    data_run.config = build_run_config(default_run_config(), layers);
    std::cout << inspect_data(data_run, std::cerr).dump() << std::endl;
  } else if (bench->parsed()) {
    prepend_shortcuts(bench_shortcuts, bench_args.assignments);
    run_bench(bench_args, std::cout, std::cerr);
  } else if (eval->parsed()) {
    eval_run.path = eval_path;
    eval_run.save_logits = eval_logits;
    print_json(evaluate_checkpoint(eval_run));
  } else if (fuse->parsed()) {
    fuse_run.path = fuse_path;
    fuse_run.out = fuse_out;
    print_json(fuse_checkpoint(fuse_run));
  } else if (import_command->parsed()) {
    import_run.source = import_source;
    import_run.out = import_out;
    print_json(import_checkpoint(import_run));
  } else if (info->parsed()) {
    const auto described = describe_checkpoint(info_path);
    if (info_json) {
      print_json(described);
    } else {
      std::cout << format_checkpoint_description(described);
    }
  } else if (config_command->parsed()) {
    const auto listed = build_run_config(
        default_run_config(), ConfigLayers{listed_config, listed_sets});
    std::cout << config::format_help(config::describe(listed, ""));
  }
  return 0;
}

// Too large a model, batch or data set for this machine is the config's to fix,
// not a bug.
constexpr const char *kOutOfMemory =
    "out of memory: the config asks for more than this machine has (model "
    "size, batch size, "
    "experts or data); make them smaller";

} // namespace

int run_cli(int argc, const char *const *argv) {
  try {
    return parse_and_run(argc, argv);
  } catch (const InputError &e) {
    std::cerr << "exfusion: error: " << e.what() << std::endl;
    return 2;
  } catch (const std::filesystem::filesystem_error &e) {
    std::cerr << "exfusion: error: " << e.what() << std::endl;
    return 2;
  } catch (const Interrupted &e) {
    return exit_code_for_signal(e.signal());
  } catch (const PeerFailure &e) {
    // Not this rank's fault, nor the input's: another data-parallel rank
    // stopped.
    std::cerr << "exfusion: error: " << e.what() << std::endl;
    return 3;
  } catch (const std::bad_alloc &) {
    std::cerr << "exfusion: error: " << kOutOfMemory << std::endl;
    return 2;
  } catch (const c10::OutOfMemoryError &e) {
    std::cerr << "exfusion: error: " << kOutOfMemory << " ("
              << e.what_without_backtrace() << ")" << std::endl;
    return 2;
  } catch (const c10::Error &e) {
    // LibTorch's CPU allocator reports a failed allocation as a plain
    // c10::Error.
    if (std::string(e.what_without_backtrace()).find("can't allocate memory") !=
        std::string::npos) {
      std::cerr << "exfusion: error: " << kOutOfMemory << " ("
                << e.what_without_backtrace() << ")" << std::endl;
      return 2;
    }
    std::cerr << "exfusion: internal error: " << e.what_without_backtrace()
              << std::endl;
    return 1;
  } catch (const std::exception &e) {
    std::cerr << "exfusion: internal error: " << e.what() << std::endl;
    return 1;
  }
}

} // namespace exfusion
