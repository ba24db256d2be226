// Resolving where a training run starts (see run_start.h).
#include "exfusion/workflows/run_start.h"

#include <ctime>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "exfusion/config/config_file.h"
#include "exfusion/train/run_files.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"
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

}  // namespace

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

}  // namespace exfusion
