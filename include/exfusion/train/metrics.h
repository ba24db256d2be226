// What a run tells a person: metrics as JSON lines (one object per line, appended, so a
// resumed run continues its log) and a progress bar with loss, accuracy, images/s and ETA
// that turns into an occasional plain line when the output is a log file rather than a terminal.
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "exfusion/util/append_only_file.h"

namespace exfusion {

class MetricsLog {
 public:
  // Creates the file or appends to it; throws InputError when it cannot be opened.
  explicit MetricsLog(const std::filesystem::path& path);

  // Appends `record` as one line with a single unbuffered write, so a crash never leaves
  // half a line behind. Throws InputError when the write fails (a full disk).
  void write(const nlohmann::json& record);
  // The file's size in bytes, and cutting it back to `bytes` (what a resumed run does, to the
  // size a checkpoint recorded). Throws InputError when the file is shorter than `bytes`.
  int64_t size() const { return file_.size(); }
  void truncate(int64_t bytes) { file_.truncate(bytes); }
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  AppendOnlyFile file_;
};

bool stderr_is_terminal();

// "1h02m", "3m05s", "42s"; "?" for a negative or non-finite duration.
std::string format_duration(double seconds);

// `label [#####.....] step/total 45% | loss 0.512 | acc 83.1% | 1234 img/s | ETA 1m23s`.
// Interactive: one line redrawn in place at most 10 times a second. Otherwise a full line at
// most every `plain_interval_s` seconds, plus the first and the last step.
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total_steps, std::ostream& out = std::cerr,
              bool interactive = stderr_is_terminal(), double plain_interval_s = 10.0);

  // `step` is the number of steps done; `fields` are printed in order as "name value", then
  // the rate in `rate_unit` (the task's: img/s, tok/s).
  void update(int64_t step, const std::vector<std::pair<std::string, std::string>>& fields,
              double items_per_s, const std::string& rate_unit = "img/s");
  // Prints the last update if it was held back and ends the interactive line.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  std::string render(int64_t step, const std::vector<std::pair<std::string, std::string>>& fields,
                     double items_per_s, const std::string& rate_unit, Clock::time_point now) const;
  void print(const std::string& line, Clock::time_point now);

  std::string label_;
  int64_t total_;
  std::ostream& out_;
  bool interactive_;
  double interval_s_;
  int64_t first_step_ = -1;
  Clock::time_point first_time_, last_print_;
  bool printed_ = false;
  std::string held_back_;  // the latest line not printed yet
};

}  // namespace exfusion
