// The CLI's subcommands as library functions: tools/exfusion.cpp parses arguments into
// these structs and calls them. User errors surface as InputError (exit code 2).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace exfusion {

struct TrainArgs {
  std::string config_file;               // JSON overlay on the defaults; empty: defaults
  std::string out_dir;                   // run directory; empty: runs/<kind>-<time>
  std::string data_dir;                  // overrides data.dir
  std::vector<std::string> assignments;  // key.path=value overrides, applied last
  bool force = false;                    // overwrite an existing run directory's outputs
};

struct EvalArgs {
  std::string path;         // a run directory or a .safetensors checkpoint
  std::string config_file;  // model config to use instead of the checkpoint's own
  std::string data_dir;
  std::string device = "auto";
  std::string save_logits;  // write logits and labels as safetensors here
  bool unfused = false;     // in a run directory: the training state, not the fused model
  bool force = false;
};

struct FuseArgs {
  std::string path;  // a run directory or its state.safetensors
  std::string out;   // default: model.safetensors beside the state
  bool force = false;
};

struct BenchArgs {
  std::string config_file;               // JSON overlay; the model defaults to ViT-B/16 at 224 px
  std::vector<std::string> assignments;  // key.path=value overrides, applied last
  int64_t warmup_steps = 5;
  int64_t timed_steps = 20;
  std::string profile_trace;  // Chrome trace of a few extra steps, when set
};

struct InfoArgs {
  std::string path;  // a run directory or a .safetensors checkpoint
};

void run_train(const TrainArgs& args);
void run_eval(const EvalArgs& args);
void run_fuse(const FuseArgs& args);
void run_info(const InfoArgs& args);
void run_bench(const BenchArgs& args);

}  // namespace exfusion
