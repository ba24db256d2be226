// `exfusion data` (see data_inspection.h): the task opens the data exactly as `train` does;
// the clock runs from the epoch's start to its last batch read, so the workers' start-up and
// the queue's filling are counted, as a training run would meet them.
#include "exfusion/workflows/data_inspection.h"

#include <chrono>

#include "exfusion/io/safetensors.h"
#include "exfusion/tasks/task.h"
#include "exfusion/util/error.h"

namespace exfusion {

nlohmann::json inspect_data(const DataRun& run, std::ostream& progress) {
  if (run.split != "train" && run.split != "val") {
    throw InputError("--split " + run.split + ": expected train or val");
  }
  if (run.batches < 1) throw InputError("--batches: expected at least 1");
  auto config = run.config;
  const auto task = make_task(config);
  auto data = task->load_data(config.data, *config.model.options, /*with_train=*/true);
  BatchSource& source = run.split == "train" ? *data.train : *data.test;
  progress << "exfusion data: " << run.split << " split, " << source.size() << " samples, "
           << data.workers << " workers\n";
  std::vector<torch::Tensor> inputs, targets, decoder_inputs;
  int64_t batches = 0, samples = 0, skipped = 0;
  const auto start = std::chrono::steady_clock::now();
  source.start_epoch(run.epoch);
  while (batches < run.batches) {
    auto batch = source.next();
    if (!batch) break;
    ++batches;
    samples += batch->size();
    skipped += batch->skipped;
    if (!run.save.empty()) {
      inputs.push_back(batch->inputs);
      targets.push_back(batch->targets);
      if (batch->decoder_inputs.defined()) decoder_inputs.push_back(batch->decoder_inputs);
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!run.save.empty() && batches > 0) {
    NamedTensors saved{{"inputs", torch::cat(inputs)}, {"targets", torch::cat(targets)}};
    if (!decoder_inputs.empty()) saved.emplace_back("decoder_inputs", torch::cat(decoder_inputs));
    save_safetensors(run.save, saved);
  }
  const double per_s = seconds > 0 ? static_cast<double>(samples) / seconds : 0.0;
  const auto& unit = task->metrics().sample_unit;
  auto inspected = data.description;
  inspected.update(
      nlohmann::json{{"split", run.split},
                     {"batch_size", config.train.batch_size},
                     {"batches", batches},
                     {"samples", samples},
                     {"skipped", skipped},
                     {"seconds", seconds},
                     {unit + "_per_s", per_s},
                     {unit + "_per_s_per_worker", per_s / static_cast<double>(data.workers)}});
  return inspected;
}

}  // namespace exfusion
