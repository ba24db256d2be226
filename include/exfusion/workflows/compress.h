// `exfusion compress`: DeRS compression (upcycling/ders_compression.h) of a trained MoE or
// unfused ExFusion run into one safetensors file that eval, info and train --set init.from read,
// with the parameters, bytes and test accuracy before and after.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "exfusion/upcycling/ders_compression.h"

namespace exfusion {

struct CompressRun {
  std::filesystem::path path;  // a run directory, its state.safetensors or a training state
  DersOptions options;
  std::filesystem::path out;  // the compressed .safetensors file
  std::string data_dir;       // test data other than the run's (as eval --data)
  bool force = false;
};

// Writes run.out: the model's tensors other than the expert banks' weights under "model.", each
// bank's base W_b (the `dense_base.` tensor of the init file the run's config names in
// init.from, else the experts' mean) and compressed deltas, the run's config and the options in
// its metadata. Evaluates the original and the compressed model on the test data and returns
// {"params_before", "params_after", "bytes_before", "bytes_after", "test_accuracy_before",
// "test_accuracy_after", ...}; bytes are the tensors' stored bytes (the file minus its header).
nlohmann::json compress_checkpoint(const CompressRun& run, std::ostream& report);

}  // namespace exfusion
