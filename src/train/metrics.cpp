// JSON-lines metrics and the progress bar (see metrics.h). The log is an AppendOnlyFile: one
// write() per record leaves no buffered half line to lose.
#include "exfusion/train/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace exfusion {
MetricsLog::MetricsLog(const std::filesystem::path& path) : file_(path, "the metrics log") {
  // A machine that went down mid-write may have left a partial last line: start a fresh one
  // so at most that record is lost.
  if (file_.last_byte() != '\n') file_.append("\n");
}

void MetricsLog::write(const nlohmann::json& record) {
  // Replacing invalid UTF-8 rather than throwing: a bad label must not end a training run.
  file_.append(record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<long long>(std::llround(seconds));
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof text, "%lldh%02lldm", total / 3600, total % 3600 / 60);
  } else if (total >= 60) {
    std::snprintf(text, sizeof text, "%lldm%02llds", total / 60, total % 60);
  } else {
    std::snprintf(text, sizeof text, "%llds", total);
  }
  return text;
}

ProgressBar::ProgressBar(std::string label, int64_t total_steps, std::ostream& out,
                         bool interactive, double plain_interval_s)
    : label_(std::move(label)),
      total_(std::max<int64_t>(1, total_steps)),
      out_(out),
      interactive_(interactive),
      interval_s_(interactive ? 0.1 : plain_interval_s) {}

std::string ProgressBar::render(int64_t step,
                                const std::vector<std::pair<std::string, std::string>>& fields,
                                double items_per_s, const std::string& rate_unit,
                                Clock::time_point now) const {
  constexpr int kWidth = 20;
  const double fraction =
      std::clamp(static_cast<double>(step) / static_cast<double>(total_), 0.0, 1.0);
  const int filled = static_cast<int>(fraction * kWidth);
  std::string line = label_ + " [" + std::string(filled, '#') + std::string(kWidth - filled, '.') +
                     "] " + std::to_string(step) + "/" + std::to_string(total_) + " " +
                     std::to_string(static_cast<int>(fraction * 100)) + "%";
  for (const auto& [name, value] : fields) line += " | " + name + " " + value;
  if (items_per_s > 0) {
    char rate[48];
    std::snprintf(rate, sizeof rate, " | %.0f ", items_per_s);
    line += rate + rate_unit;
  }
  if (step > first_step_) {
    // Timed from the first update on, so the first step's warm-up does not count.
    const double per_step = std::chrono::duration<double>(now - first_time_).count() /
                            static_cast<double>(step - first_step_);
    line += " | ETA " +
            format_duration(per_step * static_cast<double>(std::max<int64_t>(0, total_ - step)));
  }
  return line;
}

void ProgressBar::print(const std::string& line, Clock::time_point now) {
  if (interactive_) {
    out_ << '\r' << line << "\033[K" << std::flush;
  } else {
    out_ << line << '\n' << std::flush;
  }
  printed_ = true;
  last_print_ = now;
  held_back_.clear();
}

void ProgressBar::update(int64_t step,
                         const std::vector<std::pair<std::string, std::string>>& fields,
                         double items_per_s, const std::string& rate_unit) {
  const auto now = Clock::now();
  if (first_step_ < 0) {
    first_step_ = step;
    first_time_ = now;
  }
  auto line = render(step, fields, items_per_s, rate_unit, now);
  const bool due = !printed_ || step >= total_ ||
                   std::chrono::duration<double>(now - last_print_).count() >= interval_s_;
  if (due) {
    print(line, now);
  } else {
    held_back_ = std::move(line);
  }
}

void ProgressBar::finish() {
  if (!held_back_.empty()) print(held_back_, Clock::now());
  if (interactive_ && printed_) out_ << '\n' << std::flush;
  printed_ = false;
}

}  // namespace exfusion
