// `exfusion compress` (see compression.h): the run's model and recorded dense base in, the
// compressed file out, and both evaluated the way `exfusion eval` evaluates a checkpoint.
#include "exfusion/workflows/compress.h"

#include <iomanip>
#include <sstream>

#include "exfusion/train/initialization.h"
#include "exfusion/train/run_files.h"
#include "exfusion/train/training_state.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"
#include "exfusion/workflows/evaluate.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

// The dense FFN weights the run's experts came from, by their dense names: those an upcycled
// init file records, or the dense checkpoint itself that a run upcycled in one command names;
// empty when the run did not start from one (or the file is gone).
DenseTensors recorded_dense_base(const std::string& init_from) {
  DenseTensors base;
  std::error_code error;
  if (init_from.empty() || !fs::exists(init_from, error)) return base;
  if (fs::is_regular_file(init_from, error)) {
    const std::string prefix = kDenseBasePrefix;
    for (const auto& [name, tensor] : load_safetensors(init_from).tensors) {
      if (name.rfind(prefix, 0) == 0) base.emplace(name.substr(prefix.size()), tensor);
    }
  }
  if (base.empty()) {
    if (auto dense = dense_tensors_if_dense(init_from)) base = std::move(*dense);
  }
  return base;
}

}  // namespace

nlohmann::json compress_checkpoint(const CompressRun& run, std::ostream& report) {
  run.options.validate();
  if (run.out.empty()) throw InputError("compress: --out names the compressed file to write");
  refuse_overwrite(run.out, run.force);
  const auto path = checkpoint_path(run.path, /*prefer_state=*/true);
  const auto checkpoint = load_checkpoint(path);
  if (!checkpoint.is_training_state) {
    throw InputError(path.string() + ": not a training state; DeRS compresses the experts of a " +
                     "MoE or unfused ExFusion run (its state.safetensors)");
  }
  const auto model = model_from_checkpoint(checkpoint, path);
  const auto base = recorded_dense_base(checkpoint.config.init.from);
  const auto compressed = [&] {
    try {
      return compress_model(*model, base, run.options);
    } catch (const InputError& e) {
      throw InputError(path.string() + ": " + e.what());
    }
  }();

  if (run.out.has_parent_path()) fs::create_directories(run.out.parent_path());
  save_safetensors(run.out, compressed.tensors,
                   {{kConfigMetadataKey, to_json(checkpoint.config).dump()},
                    {kKindMetadataKey, kDersCompressedKind},
                    {kFormatMetadataKey, kModelFileFormat},
                    {kDersMetadataKey, run.options.to_json().dump()},
                    {"exfusion.compressed_from", fs::absolute(path).string()}});

  int64_t params_before = 0, bytes_before = 0, params_after = 0, bytes_after = 0;
  for (const auto& [name, tensor] : checkpoint.file.tensors) {
    if (name.rfind("model.", 0) != 0) continue;
    params_before += tensor.numel();
    bytes_before += static_cast<int64_t>(tensor.nbytes());
  }
  for (const auto& [name, tensor] : compressed.tensors) {
    bytes_after += static_cast<int64_t>(tensor.nbytes());
    if (name.rfind("model.", 0) == 0) params_after += tensor.numel();
  }
  int64_t expert_params_before = 0, expert_params_after = 0, expert_bytes_before = 0,
          expert_bytes_after = 0, from_dense = 0;
  for (const auto& bank : compressed.report["banks"]) {
    expert_params_before += bank["params_before"].get<int64_t>();
    expert_params_after += bank["params_after"].get<int64_t>();
    expert_bytes_before += bank["bytes_before"].get<int64_t>();
    expert_bytes_after += bank["bytes_after"].get<int64_t>();
    if (bank["base"] == "dense_base") ++from_dense;
  }
  params_after += expert_params_after;

  EvalRun original;
  original.path = path;
  original.data_dir = run.data_dir;
  EvalRun synthesised = original;
  synthesised.path = run.out;
  const auto before = evaluate_checkpoint(original);
  const auto after = evaluate_checkpoint(synthesised);
  const auto banks = static_cast<int64_t>(compressed.report["banks"].size());
  nlohmann::json summary = {
      {"checkpoint", path.string()},
      {"compressed", run.out.string()},
      {"method", run.options.to_json()},
      {"banks", banks},
      {"base", {{"dense_base", from_dense}, {"expert_mean", banks - from_dense}}},
      {"params_before", params_before},
      {"params_after", params_after},
      {"bytes_before", bytes_before},
      {"bytes_after", bytes_after},
      {"expert_params_before", expert_params_before},
      {"expert_params_after", expert_params_after},
      {"expert_bytes_before", expert_bytes_before},
      {"expert_bytes_after", expert_bytes_after},
      {"samples", after["samples"]},
      {"per_bank", compressed.report["banks"]}};
  // Every metric the task declares, before and after: test_accuracy_before, test_loss_after...
  for (const auto& [key, value] : before.items()) {
    if (key.rfind("test_", 0) == 0) {
      summary[key + "_before"] = value;
      summary[key + "_after"] = after.at(key);
    }
  }
  const auto& headline = before.at("headline_metric");
  const auto shown = [&](const nlohmann::json& evaluation) {
    const auto value = evaluation.at("test_" + headline.at("name").get<std::string>());
    std::ostringstream text;
    text << std::fixed << std::setprecision(headline.at("fraction").get<bool>() ? 2 : 4)
         << (headline.at("fraction").get<bool>() ? 100.0 : 1.0) * value.get<double>()
         << (headline.at("fraction").get<bool>() ? "%" : "");
    return text.str();
  };
  report << std::fixed << std::setprecision(2) << "DeRS " << to_string(run.options.method) << ": "
         << banks << " expert banks (" << from_dense << " against the recorded dense base), "
         << bytes_before << " -> " << bytes_after << " bytes ("
         << 100.0 * static_cast<double>(bytes_after) / static_cast<double>(bytes_before)
         << "%), test " << headline.at("name").get<std::string>() << " " << shown(before) << " -> "
         << shown(after) << "\n";
  return summary;
}

}  // namespace exfusion
