// TensorBoard scalars of a run, written live to `<run>/tb/events.out.tfevents.<time>.<host>`
// (`tensorboard --logdir RUN/tb`). Each tag is the JSON path of the value in metrics.jsonl,
// so the two can be matched: train/loss, eval/test_accuracy, fusion_weights/blocks.0/m/3, ...
#pragma once
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "exfusion/io/tensorboard_events.h"
#include "exfusion/train/callbacks.h"
#include "exfusion/train/run_callbacks.h"

namespace exfusion {

// At each logging window: train/loss, train/<metric> for each the task declares (accuracy),
// train/lr, train/<unit>_per_s (images_per_s) and the model's metrics
// (fusion_weights/<layer>/<name>/<expert>, routing/<layer>/<value>); at each evaluation:
// eval/test_<metric> (test_accuracy, test_loss); after training, on_run_summary's summary/<key>.
// Each write is flushed, so TensorBoard reads the file while the run goes on. As a ResumableOutput
// its position is {"file": name, "bytes": n}: a resumed run cuts that same file back and appends to
// it, so every step's scalars are in it exactly once.
class TensorBoardCallback : public TrainerCallback,
                            public ResumableOutput,
                            public ReceivesRunSummary {
 public:
  // Events go to `dir` (created when missing): to the file rewind_output names, or else to a
  // new one that on_train_begin opens.
  explicit TensorBoardCallback(std::filesystem::path dir);
  void on_train_begin(const Trainer& trainer, const TrainBegin& begin) override;
  void on_step(const Trainer& trainer, const StepEvent& event) override;
  void on_eval(const Trainer& trainer, const EvalEvent& event) override;
  // The final evaluations of summary.json (test_<metric> and, for a model that fuses,
  // fused_test_<metric>: test_accuracy, fused_test_loss, ...) as summary/<key> at `step`.
  void on_run_summary(int64_t step, const nlohmann::json& summary) override;
  std::string output_name() const override;
  nlohmann::json output_position() const override;
  void rewind_output(const nlohmann::json& position) override;

 private:
  TensorBoardWriter& writer();

  std::filesystem::path dir_;
  std::unique_ptr<TensorBoardWriter> writer_;
};

}  // namespace exfusion
