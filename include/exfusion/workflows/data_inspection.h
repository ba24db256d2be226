// `exfusion data`: a run's data pipeline alone, as training would read it: how fast its
// workers decode and augment (the JSON it prints), and optionally the batches themselves in a
// safetensors file, to look at what the model would be fed.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "exfusion/train/run_config.h"

namespace exfusion {

struct DataRun {
  RunConfig config;
  std::string split = "train";  // train or val
  int64_t batches = 20;         // at most; the split's epoch may be shorter
  int64_t epoch = 0;
  // Safetensors of the batches read ("inputs", "targets", and "decoder_inputs" for an
  // encoder-decoder's task), when set.
  std::string save;
};

// Reads the batches and returns {split, format, workers, batch_size, batches, samples,
// seconds, images_per_s, images_per_s_per_worker, skipped}.
nlohmann::json inspect_data(const DataRun& run, std::ostream& progress);

}  // namespace exfusion
