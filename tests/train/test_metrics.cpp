// JSON-lines metrics that append across runs, and the progress bar's lines, throttling and
// duration format as a log file or a terminal shows them.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "../support/cli.h"
#include "exfusion/train/metrics.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::vector<std::string> read_lines(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(MetricsLog, WritesOneJsonObjectPerLineAndAppends) {
  const auto dir = testing::fresh_temp_dir("metrics");
  const auto path = dir / "metrics.jsonl";
  {
    MetricsLog log(path);
    log.write({{"step", 1}, {"loss", 2.5}});
    log.write({{"step", 2}, {"note", "a\nb"}});
  }
  MetricsLog(path).write({{"step", 3}, {"m", {0.25, 0.75}}});
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  std::vector<nlohmann::json> records;
  for (const auto& line : lines) records.push_back(nlohmann::json::parse(line));
  EXPECT_EQ(records[0]["loss"], 2.5);
  EXPECT_EQ(records[1]["note"], "a\nb");
  EXPECT_EQ(records[2]["step"], 3);
  EXPECT_EQ(records[2]["m"][1], 0.75);
  testing::remove_tree(dir);
}

TEST(MetricsLog, StartsAFreshLineAfterACutOffOne) {
  const auto dir = testing::fresh_temp_dir("metrics-cut");
  const auto path = dir / "metrics.jsonl";
  std::ofstream(path) << "{\"step\": 1}\n{\"step\": 2, \"lo";
  MetricsLog(path).write({{"step", 3}});
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(lines[2])["step"], 3);
  testing::remove_tree(dir);
}

TEST(MetricsLog, UnopenablePathIsAnInputError) {
  EXPECT_THROW(MetricsLog("/nonexistent-dir/metrics.jsonl"), InputError);
}

TEST(ProgressBar, PlainLinesCarryFieldsAndEta) {
  std::ostringstream out;
  ProgressBar bar("train", 10, out, /*interactive=*/false, /*plain_interval_s=*/0.0);
  bar.update(1, {{"loss", "0.512"}, {"acc", "83.1%"}}, 1234.0);
  bar.update(5, {{"loss", "0.400"}}, 1500.0);
  bar.update(10, {{"loss", "0.300"}}, 1500.0);
  bar.finish();
  const auto text = out.str();
  EXPECT_NE(text.find("train [##"), std::string::npos) << text;
  EXPECT_NE(text.find("] 1/10 10% | loss 0.512 | acc 83.1% | 1234 img/s"), std::string::npos)
      << text;
  EXPECT_NE(text.find("5/10 50% | loss 0.400 | 1500 img/s | ETA "), std::string::npos) << text;
  EXPECT_NE(text.find("[####################] 10/10 100%"), std::string::npos) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(\| ETA (\d+h\d\dm|\d+m\d\ds|\d+s)\n)")))
      << text;
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
}

TEST(ProgressBar, PlainOutputIsThrottledButKeepsFirstAndLast) {
  std::ostringstream out;
  ProgressBar bar("train", 10, out, /*interactive=*/false, /*plain_interval_s=*/3600.0);
  for (int64_t step = 1; step <= 10; ++step) bar.update(step, {}, 100.0);
  bar.finish();
  const auto text = out.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2) << text;
  EXPECT_NE(text.find(" 1/10 "), std::string::npos) << text;
  EXPECT_NE(text.find(" 10/10 "), std::string::npos) << text;
}

TEST(ProgressBar, FinishPrintsAHeldBackLastUpdate) {
  std::ostringstream out;
  ProgressBar bar("eval", 10, out, /*interactive=*/false, /*plain_interval_s=*/3600.0);
  bar.update(1, {}, 0.0);
  bar.update(3, {{"acc", "50.0%"}}, 0.0);
  bar.finish();
  const auto text = out.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2) << text;
  EXPECT_NE(text.find("3/10 30% | acc 50.0% | ETA"), std::string::npos) << text;
  EXPECT_EQ(text.find("img/s"), std::string::npos) << text;
}

TEST(ProgressBar, InteractiveRedrawsOneLine) {
  std::ostringstream out;
  ProgressBar bar("train", 10, out, /*interactive=*/true);
  for (int64_t step = 1; step <= 10; ++step) bar.update(step, {{"loss", "1.0"}}, 10.0);
  bar.finish();
  const auto text = out.str();
  // Ten updates within microseconds: the first and the last are drawn, few in between.
  EXPECT_LT(std::count(text.begin(), text.end(), '\r'), 10) << text;
  EXPECT_EQ(text.rfind("\rtrain [##", 0), 0u) << text;
  EXPECT_NE(text.find("\rtrain [####################] 10/10 100%"), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_EQ(text.back(), '\n');
}

TEST(ProgressBar, FormatsDurations) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(42.2), "42s");
  EXPECT_EQ(format_duration(59.6), "1m00s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3599), "59m59s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(90061), "25h01m");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "?");
}

}  // namespace
}  // namespace exfusion
