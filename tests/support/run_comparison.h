// Whether a run that was stopped and resumed ended as the uninterrupted one did: its state
// tensors, exports, summary (times aside) and metrics log line for line, with no temporary file
// left behind. The kill-and-resume tests of every task share it.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.h"
#include "training_states.h"

namespace exfusion::testing {

// The train and eval lines of a run's metrics.jsonl without their wall-clock readings, which
// differ between any two runs (elapsed_s and every rate: images_per_s, tokens_per_s, ...).
inline std::vector<nlohmann::json> logged_steps(const std::filesystem::path& run) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto record = nlohmann::json::parse(line);
    if (record["event"] != "train" && record["event"] != "eval") continue;
    record.erase("elapsed_s");
    for (auto it = record.begin(); it != record.end();) {
      const auto& key = it.key();
      const bool rate = key.size() > 6 && key.compare(key.size() - 6, 6, "_per_s") == 0;
      it = rate ? record.erase(it) : std::next(it);
    }
    lines.push_back(record);
  }
  return lines;
}

inline nlohmann::json summary_without_times(const std::filesystem::path& run) {
  auto summary = nlohmann::json::parse(read_text(run / "summary.json"));
  for (const auto* key : {"train_seconds", "eval_seconds", "run_dir"}) summary.erase(key);
  return summary;
}

// The resumed run equals the uninterrupted one: state tensors, the fused export and its
// model.json, the summary (times aside), and the metrics log line for line.
inline void expect_same_run(const std::filesystem::path& reference,
                            const std::filesystem::path& resumed) {
  namespace fs = std::filesystem;
  expect_same_training_state(reference / "state.safetensors", resumed / "state.safetensors");
  EXPECT_EQ(fs::exists(reference / "model.safetensors"), fs::exists(resumed / "model.safetensors"));
  if (fs::exists(reference / "model.safetensors")) {
    EXPECT_EQ(read_text(reference / "model.safetensors"), read_text(resumed / "model.safetensors"));
    EXPECT_EQ(read_text(reference / "model.json"), read_text(resumed / "model.json"));
  }
  EXPECT_EQ(summary_without_times(reference), summary_without_times(resumed));
  const auto expected = logged_steps(reference), got = logged_steps(resumed);
  ASSERT_EQ(expected.size(), got.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(expected[i], got[i]) << "line " << i;
  EXPECT_TRUE(temp_files_in(resumed).empty());
}

}  // namespace exfusion::testing
