// `exfusion train` as a library call: train -> evaluate -> fuse -> evaluate the fused model ->
// export -> summary. The CLI turns its arguments into a TrainRun (workflows/train_request.h)
// and calls run_training; it holds no workflow of its own.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>

#include "exfusion/train/run_config.h"

namespace exfusion {

struct TrainRun {
  RunConfig config;
  std::filesystem::path out;  // empty: runs/<run name>-<time>
  bool force = false;         // replace an existing run directory's outputs
  // A run directory to continue: from its newest checkpoint that reads back whole, with the
  // config saved in it (`config` and `out` are then not used).
  std::filesystem::path resume;
};

// Trains, evaluates, fuses (where every FFN has a dense form), evaluates the fused model and
// writes the run directory; reports on `report` (stdout) and shows progress on `progress`.
// Returns summary.json's content. Checkpoints go to <out>/checkpoints (train.checkpoint_every,
// each epoch's end, the end); a run killed at any point and resumed (`resume`) ends with the
// uninterrupted run's weights, exports and summary, and logs every step once. SIGINT/SIGTERM
// stop it after the current step with a checkpoint: Interrupted (util/interrupt_guard.h) is
// thrown. Everything that can refuse a run is checked before its directory is touched. Under
// torchrun, every rank calls it (data parallelism, dist/).
nlohmann::json run_training(const TrainRun& run, std::ostream& report, std::ostream& progress);

}  // namespace exfusion
