// Where `exfusion train` starts: a fresh run's directory (refusing to overwrite another run's
// files), a resumed run's newest whole checkpoint (a damaged one set aside), a run killed before
// its first checkpoint started over from its saved config, or a finished run left alone; under
// data parallelism rank 0 decides and the other ranks follow.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>

#include "exfusion/dist/process_group.h"
#include "exfusion/train/run_config.h"
#include "exfusion/train/training_state.h"
#include "exfusion/workflows/train.h"

namespace exfusion {

// Where a run starts: its config and directory, the state it resumes from, or the summary of a
// run that already finished (nothing to do).
struct RunStart {
  RunConfig config;
  std::filesystem::path out;
  bool replace_outputs = false;  // from step 0 in a directory holding an earlier attempt's files
  std::optional<TrainingState> resumed;
  std::optional<nlohmann::json> finished;
};

RunStart resolve_run(const TrainRun& run, std::ostream& report, std::ostream& progress);
// Rank 0 resolves the run and every other rank follows its decision: the same config (a fresh
// run's must equal each rank's own), the same directory.
RunStart resolve_distributed_run(const TrainRun& run, DistributedGroup& group, std::ostream& report,
                                 std::ostream& progress);

// A run directory's outputs, which --force replaces: removed once the new run has passed every
// check, so that no file of the old run is left beside the new run's.
void remove_previous_outputs(const std::filesystem::path& out);

}  // namespace exfusion
