// The names of a run directory's files and of the metadata our safetensors files describe
// themselves with, in one place: the run's files (train/run_files.h), the readers of our
// checkpoints below train/ (models/model_formats) and the sweep (sweep/) all spell them so.
#pragma once

namespace exfusion {

inline constexpr const char* kConfigFile = "config.json";
inline constexpr const char* kStateFile = "state.safetensors";
inline constexpr const char* kModelFile = "model.safetensors";
inline constexpr const char* kModelConfigFile = "model.json";
inline constexpr const char* kMetricsFile = "metrics.jsonl";
inline constexpr const char* kSummaryFile = "summary.json";
// The class names of data that has them (an image folder, CIFAR's name files): a JSON list.
inline constexpr const char* kClassesFile = "classes.json";
inline constexpr const char* kCheckpointDir = "checkpoints";
inline constexpr const char* kTensorBoardDir = "tb";  // TensorBoard event files
inline constexpr const char* kConfigMetadataKey = "exfusion.config";
inline constexpr const char* kKindMetadataKey = "exfusion.kind";
inline constexpr const char* kFormatMetadataKey = "exfusion.format";
// The format of the model files (dense, upcycled, compressed): unchanged since format 3, when
// training states and model files shared one number; training states went on to 4.
inline constexpr const char* kModelFileFormat = "3";
// The newest format any of our checkpoints is written in (TrainingState::kFormatVersion).
inline constexpr long long kNewestCheckpointFormat = 4;
// The values of kKindMetadataKey: a training state (model, optimizer, data position), a dense
// model (a fused export), and `exfusion upcycle`'s init.safetensors, a model under "model."
// that no step has trained yet (and the dense base under "dense_base.").
inline constexpr const char* kTrainingStateKind = "training-state";
inline constexpr const char* kDenseModelKind = "dense-model";
inline constexpr const char* kUpcycledKind = "upcycled-model";

}  // namespace exfusion
