// The command line (see cli.h): CLI11 parses into the pipeline's structs, config shortcuts
// become `--set key=value` assignments, and `exfusion config` prints every key's declaration.
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
#include "exfusion/text/corpus_encoding.h"
#include "exfusion/text/text_corpus.h"
#include "exfusion/text/tokenizer.h"
#include "exfusion/train/initialization.h"
#include "exfusion/upcycling/upcycle.h"
#include "exfusion/util/error.h"
#include "exfusion/util/interrupt_guard.h"
#include "exfusion/workflows/checkpoint_table.h"
#include "exfusion/workflows/compress.h"
#include "exfusion/workflows/data_inspection.h"
#include "exfusion/workflows/evaluate.h"
#include "exfusion/workflows/export_mixture.h"
#include "exfusion/workflows/fuse.h"
#include "exfusion/workflows/generate.h"
#include "exfusion/workflows/import.h"
#include "exfusion/workflows/info.h"
#include "exfusion/workflows/step_benchmark.h"
#include "exfusion/workflows/train.h"
#include "exfusion/workflows/train_request.h"
#include "exfusion/workflows/upcycle.h"

namespace exfusion {
namespace {

// (config key, value) of each shortcut; a deque, because CLI11 keeps a reference to each
// value and appending to a deque never moves the elements already there.
using ShortcutValues = std::deque<std::pair<std::string, std::string>>;

// Every key of the config with its type, default and help, from the fields' declarations.
std::vector<config::FieldHelp> config_keys() { return config::describe(default_run_config(), ""); }

// Typed shortcuts for the most used config keys; each becomes a `--set key=value`, and its help
// is the key's declared help.
void add_config_shortcuts(CLI::App& command, ShortcutValues& values) {
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
      {"--share-rate", "ffn.share_rate"},
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
  for (const auto& [flag, key] : shortcuts) {
    std::string help;
    for (const auto& field : keys) {
      if (field.path == key) {
        help = field.help;
        break;
      }
    }
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

void print_json(const nlohmann::json& json) { std::cout << json.dump(2) << std::endl; }

// Each command: its options, and a callback that turns them into one library call. The option
// values live in a struct the callback shares, so they outlive this function.

void add_train(CLI::App& app) {
  struct Args {
    TrainRequest request;
    ShortcutValues shortcuts;
  };
  auto args = std::make_shared<Args>();
  auto& r = args->request;
  auto* train = app.add_subcommand(
      "train",
      "Train a model (default: ViT with ExFusion-mb, N=4, δ=0.95 on Fashion-MNIST), evaluate it, "
      "fuse it and evaluate the fused model");
  train->add_option("--config", r.config_file, "config file (YAML or JSON) laid over the defaults")
      ->check(CLI::ExistingFile);
  train->add_option("--out", r.out, "run directory (default: runs/<kind>-<time>)");
  train->add_option("--data", r.data_dir,
                    "the data directory, sets data.dir (default: the task's, for images "
                    "/usr/share/datasets/fashion-mnist)");
  train
      ->add_option("--set", r.assignments,
                   "override any config key: key.path=value (`exfusion config` lists them)")
      ->take_all();
  train->add_flag("--force", r.force, "replace the outputs of an existing run directory");
  train->add_option("--resume", r.resume_dir,
                    "continue a run directory from its newest whole checkpoint, with its saved "
                    "config (no other option)");
  train->add_option("--init", r.init_dir,
                    "start from a directory `exfusion upcycle` wrote: its config.yaml is the "
                    "config (under --set) and its init.safetensors the weights");
  add_config_shortcuts(*train, args->shortcuts);
  train->callback([args] {
    prepend_shortcuts(args->shortcuts, args->request.assignments);
    run_training(resolve_train_request(args->request), std::cout, std::cerr);
  });
}

void add_upcycle(CLI::App& app) {
  struct Args {
    UpcycleRun run;
    std::string dense, out, method, ratio, seed;
  };
  auto args = std::make_shared<Args>();
  auto* upcycle = app.add_subcommand(
      "upcycle",
      "Turn a dense checkpoint's FFNs into experts (sparse upcycling, Drop-Upcycling or noise "
      "upcycling) of a top-k MoE or an ExFusion model, for exfusion train --init");
  upcycle->add_option("dense", args->dense, "dense checkpoint (.safetensors) or run directory")
      ->required();
  const auto expert_kinds = ffn_kinds_with_experts();
  upcycle
      ->add_option("--to", args->run.to,
                   "the FFN kind with experts to upcycle into: " + config::join_or(expert_kinds) +
                       " (ders-*: DeRS upcycling, a shared base and per-expert deltas); ders is "
                       "ders-moe")
      ->required()
      ->transform(CLI::Transformer(std::map<std::string, std::string>{{"ders", "ders-moe"}}))
      ->check(CLI::IsMember(expert_kinds));
  upcycle->add_option("--method", args->method, "copy, drop or noise (sets init.method)");
  upcycle->add_option("--ratio", args->ratio, "share of hidden units dropped (sets init.ratio)");
  upcycle->add_option("--seed", args->seed, "seed of the drawn units (sets init.seed)");
  upcycle->add_option("--out", args->out, "directory for init.safetensors and config.yaml")
      ->required();
  upcycle
      ->add_option("--set", args->run.assignments,
                   "any config key over the dense run's config: ffn.num_experts=8, "
                   "init.independent_indices=true, train.epochs=3, ...")
      ->take_all();
  upcycle->add_flag("--force", args->run.force, "replace an existing init.safetensors");
  upcycle->callback([args] {
    auto& run = args->run;
    run.dense = args->dense;
    run.out = args->out;
    const std::vector<std::pair<std::string, std::string>> shortcuts = {
        {"init.method", args->method}, {"init.ratio", args->ratio}, {"init.seed", args->seed}};
    for (auto it = shortcuts.rbegin(); it != shortcuts.rend(); ++it) {
      if (!it->second.empty()) {
        run.assignments.insert(run.assignments.begin(), it->first + "=" + it->second);
      }
    }
    print_json(upcycle_checkpoint(run, std::cerr));
  });
}

void add_compress(CLI::App& app) {
  struct Args {
    CompressRun run;
    std::string path, method, out;
  };
  auto args = std::make_shared<Args>();
  auto& run = args->run;
  auto* compress = app.add_subcommand(
      "compress",
      "DeRS compression of a MoE or unfused ExFusion run's experts: a shared base plus sparse or "
      "quantised deltas, in one file that eval, info and train --set init.from read");
  compress->add_option("run", args->path, "run directory, state.safetensors or training state")
      ->required();
  compress->add_option("--method", args->method, "drop, topk or quant")->required();
  compress->add_option("--ratio", run.options.ratio,
                       "drop, topk: share p of each expert's delta entries dropped, in [0, 1) "
                       "(default 0.5)");
  compress->add_option("--bits", run.options.bits, "quant: 8, 4, 2 or 1 (default 8)");
  compress->add_option("--seed", run.options.seed, "drop: seed of the dropped entries");
  compress->add_option("--out", args->out, "the compressed .safetensors file")->required();
  compress->add_option("--data", run.data_dir, "the data directory (default: the run's test data)");
  compress->add_flag("--force", run.force, "overwrite an existing output");
  compress->callback([args] {
    args->run.path = args->path;
    args->run.out = args->out;
    args->run.options.method = parse_ders_method(args->method);
    print_json(compress_checkpoint(args->run, std::cerr));
  });
}

void add_sweep(CLI::App& app) {
  struct Args {
    SweepRun run;
    std::string file, out, data;
  };
  auto args = std::make_shared<Args>();
  auto* sweep = app.add_subcommand(
      "sweep",
      "Run a sweep file's configurations x seeds one after another (resumable) and write the "
      "table: mean ± std over seeds, the difference to the baseline and its Welch p-value");
  sweep->add_option("file", args->file, "sweep file (YAML or JSON; configs/sweeps/*.yaml)")
      ->required();
  sweep->add_option("--out", args->out, "sweep directory (default runs/sweeps/<file's stem>)");
  sweep->add_option("--data", args->data, "the data directory (sets data.dir), for every run");
  sweep->add_option("--set", args->run.assignments, "config keys laid over every run")->take_all();
  sweep->add_flag("--dry-run", args->run.dry_run,
                  "list the runs, their directories, state and commands; run nothing");
  sweep->callback([args] {
    auto& run = args->run;
    run.file = args->file;
    run.out = args->out;
    if (!args->data.empty())
      run.assignments.insert(run.assignments.begin(), "data.dir=" + args->data);
    const auto result = run_sweep(run, std::cout, std::cerr);
    if (run.dry_run) print_json(result);
  });
}

void add_eval(CLI::App& app) {
  struct Args {
    EvalRun run;
    std::string path, logits;
  };
  auto args = std::make_shared<Args>();
  auto& run = args->run;
  auto* eval = app.add_subcommand("eval", "Evaluate a checkpoint on the test set");
  eval->add_option("path", args->path, "run directory or .safetensors checkpoint")->required();
  eval->add_option("--config", run.config_file,
                   "config file (YAML or JSON) laid over the checkpoint's own");
  eval->add_option("--data", run.data_dir, "the data directory (default: the run's)");
  eval->add_option("--device", run.device, "auto, cpu, cuda or cuda:N");
  eval->add_option("--save-logits", args->logits,
                   "write test logits and labels (and the inputs, where the task holds them) "
                   "to this .safetensors file");
  eval->add_flag("--unfused", run.unfused,
                 "in a run directory, evaluate the training state instead of the fused model");
  eval->add_flag("--force", run.force, "overwrite an existing --save-logits file");
  eval->callback([args] {
    args->run.path = args->path;
    args->run.save_logits = args->logits;
    print_json(evaluate_checkpoint(args->run));
  });
}

void add_fuse(CLI::App& app) {
  struct Args {
    FuseRun run;
    std::string path, out;
  };
  auto args = std::make_shared<Args>();
  auto* fuse = app.add_subcommand("fuse", "Fuse a training state into a dense checkpoint");
  fuse->add_option("path", args->path, "run directory or state.safetensors")->required();
  fuse->add_option("--out", args->out, "output file (default: model.safetensors beside it)");
  fuse->add_option("--format", args->run.format,
                   "an export format of the model's kind (default: its first; timm for a ViT, "
                   "exfusion for any)");
  fuse->add_flag("--force", args->run.force, "overwrite an existing output");
  fuse->callback([args] {
    args->run.path = args->path;
    args->run.out = args->out;
    print_json(fuse_checkpoint(args->run));
  });
}

void add_export(CLI::App& app) {
  struct Args {
    ExportMixtureRun run;
    std::string path, out;
  };
  auto args = std::make_shared<Args>();
  auto* command = app.add_subcommand(
      "export",
      "Write a trained mixture of experts in its model kind's sparse format (a Llama's top-k "
      "MoE: a MixtralForCausalLM directory)");
  command->add_option("path", args->path, "run directory or state.safetensors")->required();
  command->add_option("--out", args->out, "output directory (default: hf/ beside the state)");
  command->add_flag("--force", args->run.force, "overwrite an existing output");
  command->callback([args] {
    args->run.path = args->path;
    args->run.out = args->out;
    print_json(export_mixture(args->run));
  });
}

void add_generate(CLI::App& app) {
  struct Args {
    GenerateRun run;
    std::string path, tokenizer;
  };
  auto args = std::make_shared<Args>();
  auto* command = app.add_subcommand(
      "generate",
      "Continue a prompt with a decoder language model (Llama: dense, fused or MoE) through its "
      "key/value cache");
  command->add_option("path", args->path, "run directory or checkpoint")->required();
  command->add_option("--prompt", args->run.prompt, "the text to continue")->required();
  command->add_option("--max-new-tokens", args->run.max_new_tokens,
                      "tokens to generate at most (EOS stops sooner; default 64)");
  command->add_option("--temperature", args->run.sampling.temperature,
                      "0 (default): greedy, the most likely token; above 0: sampled from the "
                      "softmax of the logits over it");
  command->add_option("--top-k", args->run.sampling.top_k,
                      "sample among the k most likely tokens (0, default: all)");
  command->add_option("--top-p", args->run.sampling.top_p,
                      "sample among the most likely tokens whose probabilities reach p "
                      "(default 1: all)");
  command->add_option("--seed", args->run.sampling.seed, "seed of the sampling (default 0)");
  command->add_option("--tokenizer", args->tokenizer,
                      "SentencePiece model (default: the run's data.tokenizer)");
  command->add_flag("--ignore-eos", args->run.ignore_eos,
                    "go on past EOS to --max-new-tokens (for timing)");
  command->callback([args] {
    args->run.path = args->path;
    args->run.tokenizer = args->tokenizer;
    print_json(generate_text(args->run));
  });
}

void add_import(CLI::App& app) {
  struct Args {
    ImportRun run;
    std::string source, out;
  };
  auto args = std::make_shared<Args>();
  auto* import_command = app.add_subcommand(
      "import",
      "Make one of our dense checkpoints from a dense model from outside: ours or a format a "
      "model kind registers (" +
          config::join_or(import_formats().names()) + ")");
  import_command
      ->add_option("source", args->source,
                   "run directory, .safetensors file, or Hugging Face save_pretrained directory "
                   "(its config.json beside the weights)")
      ->required();
  import_command
      ->add_option("--out", args->out, "the dense checkpoint to write (its .json beside it)")
      ->required();
  import_command->add_option("--from", args->run.from,
                             config::join_or(import_formats().names()) +
                                 " (auto: ours by its metadata, else the format that "
                                 "recognises the file)");
  import_command
      ->add_option("--set", args->run.assignments,
                   "model.key=value over the architecture read (model.num_heads=N for a timm "
                   "file of a non-standard width); data.mean=[...] data.std=[...]")
      ->take_all();
  import_command->add_option("--format", args->run.format,
                             "the export format written (default: the model kind's first)");
  import_command->add_flag("--force", args->run.force, "overwrite an existing output");
  import_command->callback([args] {
    args->run.source = args->source;
    args->run.out = args->out;
    print_json(import_checkpoint(args->run));
  });
}

void add_info(CLI::App& app) {
  struct Args {
    std::string path;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  auto* info = app.add_subcommand(
      "info", "Describe a checkpoint: architecture, parameters, FLOPs, each FFN and its weights");
  info->add_option("path", args->path, "run directory or .safetensors checkpoint")->required();
  info->add_flag("--json", args->json, "print the description as JSON (for scripts)");
  info->callback([args] {
    const auto described = describe_checkpoint(args->path);
    if (args->json) {
      print_json(described);
    } else {
      std::cout << format_checkpoint_description(described);
    }
  });
}

void add_config(CLI::App& app) {
  auto layers = std::make_shared<ConfigLayers>();
  auto* config_command = app.add_subcommand(
      "config",
      "List every config key: its type, default (the main job's, or with --config/--set that "
      "config's: --set task=<task> lists the task's data keys) and what it does");
  config_command->add_option("--config", layers->file, "config file (YAML or JSON) to list")
      ->check(CLI::ExistingFile);
  config_command
      ->add_option("--set", layers->assignments, "config keys to set first: key.path=value")
      ->take_all();
  config_command->callback([layers] {
    const auto listed = build_run_config(default_run_config(), *layers);
    std::cout << config::format_help(config::describe(listed, ""));
  });
}

void add_bench(CLI::App& app) {
  struct Args {
    BenchArgs bench;
    ShortcutValues shortcuts;
  };
  auto args = std::make_shared<Args>();
  auto& bench_args = args->bench;
  auto* bench = app.add_subcommand(
      "bench",
      "Time training steps on synthetic data (default ViT-B/16, 224 px, 1000 classes) and print "
      "one JSON line: images/s, ms/step, peak memory, TFLOP/s, MFU");
  bench
      ->add_option("--config", bench_args.config_file,
                   "config file (YAML or JSON) laid over the bench defaults")
      ->check(CLI::ExistingFile);
  bench->add_option("--warmup", bench_args.warmup_steps, "untimed steps first (default 5)");
  bench->add_option("--steps", bench_args.timed_steps, "timed steps (default 20)");
  bench->add_option("--profile", bench_args.profile_trace,
                    "also profile 3 more steps and write a Chrome trace here "
                    "(summarise with bench/trace_summary.py)");
  bench->add_option("--set", bench_args.assignments, "override any config key: key.path=value")
      ->take_all();
  add_config_shortcuts(*bench, args->shortcuts);
  bench->callback([args] {
    prepend_shortcuts(args->shortcuts, args->bench.assignments);
    run_bench(args->bench, std::cout, std::cerr);
  });
}

void add_data(CLI::App& app) {
  struct Args {
    DataRun run;
    ConfigLayers layers;
    std::string dir;
    ShortcutValues shortcuts;
  };
  auto args = std::make_shared<Args>();
  auto& run = args->run;
  auto* data_command = app.add_subcommand(
      "data",
      "Read a run's data as training would (decoding, augmentation, workers) and print one JSON "
      "line: samples/s, per worker; --save keeps the batches to look at");
  data_command
      ->add_option("--config", args->layers.file,
                   "config file (YAML or JSON) laid over the defaults")
      ->check(CLI::ExistingFile);
  data_command->add_option("--data", args->dir, "the data directory (sets data.dir)");
  data_command->add_option("--split", run.split, "train (augmented) or val (default train)");
  data_command->add_option("--batches", run.batches, "batches to read (default 20)");
  data_command->add_option("--epoch", run.epoch, "the epoch whose order and draws to read");
  data_command->add_option("--save", run.save,
                           "write the batches read as safetensors (inputs, targets)");
  data_command
      ->add_option("--set", args->layers.assignments, "override any config key: key.path=value")
      ->take_all();
  add_config_shortcuts(*data_command, args->shortcuts);
  data_command->callback([args] {
    auto& assignments = args->layers.assignments;
    prepend_shortcuts(args->shortcuts, assignments);
    if (!args->dir.empty()) assignments.insert(assignments.begin(), "data.dir=" + args->dir);
    args->run.config = build_run_config(default_run_config(), args->layers);
    std::cout << inspect_data(args->run, std::cerr).dump() << std::endl;
  });
}

// The value `option` names among `choices`; InputError listing them otherwise.
template <class T>
T choice_of(const config::Choices<T>& choices, const std::string& option, const std::string& name) {
  std::vector<std::string> names;
  for (const auto& [choice, value] : choices.names) {
    if (choice == name) return value;
    names.push_back(choice);
  }
  throw InputError(option + " " + name + ": expected " + config::join_or(names));
}

// How the tokenizer commands read a corpus: the options both take, and their values.
struct CorpusReadingArgs {
  std::string format = "auto", documents = "blank_line";

  void add_to(CLI::App& command, TextReaderOptions& reading) {
    command.add_option("--format", format, "auto, text or jsonl (default auto)");
    command.add_option("--documents", documents,
                       "plain text: file, blank_line, line or separator (default blank_line)");
    command.add_option("--separator", reading.separator, "the line between documents (default %)");
    command.add_option("--text-field", reading.text_field,
                       "JSON Lines: the text's key (default text)");
    command.add_flag("--skip-bad-records", reading.skip_bad_records,
                     "skip bad records instead of stopping");
  }
  // The parsed names into `reading`; InputError naming the option for an unknown one.
  void apply(TextReaderOptions& reading) const {
    reading.format = choice_of(text_format_names(), "--format", format);
    reading.documents = choice_of(document_split_names(), "--documents", documents);
  }
};

void add_tokenizer_encode(CLI::App& tokenizer) {
  struct Args {
    CorpusEncoding encoding;
    CorpusReadingArgs reading;
    std::string out, tokenizer, dtype = "uint16";
  };
  auto args = std::make_shared<Args>();
  auto& encoding = args->encoding;
  auto* encode = tokenizer.add_subcommand(
      "encode",
      "Tokenise a corpus once into a token file (uint16/uint32 ids, EOS after each document, "
      "as nanoGPT's .bin) that data.train reads without tokenising; prints one JSON line");
  encode->add_option("corpus", encoding.corpus, "files, folders or globs (text or JSON Lines)")
      ->required();
  encode->add_option("--tokenizer", args->tokenizer, "the SentencePiece model")->required();
  encode->add_option("--out", args->out, "the token file to write (name it .bin)")->required();
  encode->add_option("--dtype", args->dtype, "uint16 (default) or uint32");
  encode->add_option("--workers", encoding.workers, "tokenising threads (default 1)");
  args->reading.add_to(*encode, encoding.reading);
  encode->add_flag("--force", encoding.force, "replace an existing --out");
  encode->callback([args] {
    auto& encoding = args->encoding;
    encoding.out = args->out;
    encoding.tokenizer = args->tokenizer;
    encoding.dtype = choice_of(token_dtype_names(), "--dtype", args->dtype);
    args->reading.apply(encoding.reading);
    if (encoding.workers < 1) throw InputError("--workers: expected at least 1");
    const auto encoded = encode_corpus(encoding);
    std::cout << nlohmann::json{{"out", encoding.out.string()},
                                {"files", encoded.files},
                                {"documents", encoded.documents},
                                {"tokens", encoded.tokens},
                                {"skipped", encoded.skipped}}
                     .dump()
              << std::endl;
  });
}

void add_tokenizer(CLI::App& app) {
  struct Args {
    TokenizerTraining training;
    CorpusReadingArgs reading;
    std::string out;
  };
  auto args = std::make_shared<Args>();
  auto& training = args->training;
  auto* tokenizer = app.add_subcommand("tokenizer", "Tokenizers for the text tasks");
  tokenizer->require_subcommand(1);
  auto* train = tokenizer->add_subcommand(
      "train",
      "Train a SentencePiece unigram tokenizer as T5's (pad 0, EOS 1, unknown 2, byte fallback) "
      "on a corpus and print one JSON line");
  train->add_option("corpus", training.corpus, "files, folders or globs (text or JSON Lines)")
      ->required();
  train->add_option("--vocab-size", training.vocab_size, "pieces (default 32000, as T5's)");
  train->add_option("--out", args->out, "the .model file to write")->required();
  args->reading.add_to(*train, training.reading);
  train->add_option("--max-documents", training.max_documents,
                    "documents read at most, the first ones (default 1000000)");
  train->callback([args] {
    auto& training = args->training;
    training.out = args->out;
    args->reading.apply(training.reading);
    const auto trained = train_tokenizer(training);
    std::cout << nlohmann::json{{"model", trained.model.string()},
                                {"vocab_size", trained.vocab_size},
                                {"documents", trained.documents}}
                     .dump()
              << std::endl;
  });
  add_tokenizer_encode(*tokenizer);
}

int parse_and_run(int argc, const char* const* argv) {
  CLI::App app{
      "exfusion: multi-expert fusion training for Transformers.\n"
      "Train with N experts per FFN, fuse them into one dense FFN, export for timm."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "exfusion 0.1.0");
  for (const auto add :
       {add_train, add_upcycle, add_compress, add_sweep, add_eval, add_fuse, add_export,
        add_generate, add_import, add_info, add_config, add_bench, add_data, add_tokenizer}) {
    add(app);
  }
  try {
    // The parsed command's callback runs inside: its errors propagate to run_cli.
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  return 0;
}

// Too large a model, batch or data set for this machine is the config's to fix, not a bug.
constexpr const char* kOutOfMemory =
    "out of memory: the config asks for more than this machine has (model size, batch size, "
    "experts or data); make them smaller";

}  // namespace

int run_cli(int argc, const char* const* argv) {
  try {
    return parse_and_run(argc, argv);
  } catch (const InputError& e) {
    std::cerr << "exfusion: error: " << e.what() << std::endl;
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    std::cerr << "exfusion: error: " << e.what() << std::endl;
    return 2;
  } catch (const Interrupted& e) {
    return exit_code_for_signal(e.signal());
  } catch (const PeerFailure& e) {
    // Not this rank's fault, nor the input's: another data-parallel rank stopped.
    std::cerr << "exfusion: error: " << e.what() << std::endl;
    return 3;
  } catch (const std::bad_alloc&) {
    std::cerr << "exfusion: error: " << kOutOfMemory << std::endl;
    return 2;
  } catch (const c10::OutOfMemoryError& e) {
    std::cerr << "exfusion: error: " << kOutOfMemory << " (" << e.what_without_backtrace() << ")"
              << std::endl;
    return 2;
  } catch (const c10::Error& e) {
    // LibTorch's CPU allocator reports a failed allocation as a plain c10::Error.
    if (std::string(e.what_without_backtrace()).find("can't allocate memory") !=
        std::string::npos) {
      std::cerr << "exfusion: error: " << kOutOfMemory << " (" << e.what_without_backtrace() << ")"
                << std::endl;
      return 2;
    }
    std::cerr << "exfusion: internal error: " << e.what_without_backtrace() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "exfusion: internal error: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace exfusion
