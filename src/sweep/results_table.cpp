// The sweep table (see results_table.h).
#include "exfusion/sweep/results_table.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "exfusion/io/run_names.h"
#include "exfusion/sweep/statistics.h"
#include "exfusion/util/json_input.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// What the runs' summaries lead with (summary.json's headline_metric); summaries from before
// tasks declared their metrics hold accuracy.
struct Headline {
  std::string name = "accuracy";
  bool higher_is_better = true;
  bool fraction = true;  // shown in percent, differences in points
};

struct RunResult {
  Headline headline;
  double value = 0.0;  // the headline metric, in percent for a fraction
  double ms_per_step = 0.0;
  int64_t params_train = 0, params_deployed = 0;
  double gflops_deployed = -1.0;  // the deployed model's forward per sample; unknown
  double peak_rss_mib = -1.0;     // unknown
};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::optional<RunResult> read_result(const SweepRunSpec& run) {
  const auto path = run.dir / kSummaryFile;
  if (!fs::exists(path)) return std::nullopt;
  const auto summary = parse_json_input(read_text(path), path.string());
  RunResult result;
  if (summary.contains("headline_metric")) {
    const auto& headline = summary["headline_metric"];
    result.headline = {headline.at("name").get<std::string>(),
                       headline.at("higher_is_better").get<bool>(),
                       headline.at("fraction").get<bool>()};
  }
  const auto fused_key = "fused_test_" + result.headline.name;
  const auto& value =
      summary.contains(fused_key) ? summary[fused_key] : summary.at("test_" + result.headline.name);
  result.value = (result.headline.fraction ? 100.0 : 1.0) * value.get<double>();
  const auto steps = summary.value("steps", int64_t{0});
  result.ms_per_step =
      steps > 0 ? 1000.0 * summary.value("train_seconds", 0.0) / static_cast<double>(steps) : 0.0;
  result.params_train = summary.value("params_train", int64_t{0});
  result.params_deployed = summary.value("params_fused", result.params_train);
  const auto flops =
      summary.value("fused_flops_per_sample", summary.value("flops_per_sample", -1.0));
  if (flops >= 0) result.gflops_deployed = flops / 1e9;
  const auto resources = run.dir / kSweepResourcesFile;
  if (fs::exists(resources)) {
    result.peak_rss_mib =
        parse_json_input(read_text(resources), resources.string()).value("peak_rss_mib", -1.0);
  }
  return result;
}

std::string format(const char* pattern, double value) {
  char text[64];
  std::snprintf(text, sizeof text, pattern, value);
  return text;
}

std::string mean_std(const SampleSummary& s, const char* pattern) {
  if (s.n == 0) return "—";
  return format(pattern, s.mean) + " ± " + format(pattern, s.std);
}

// A row's seeds against another row's: the difference of the means, Welch's test and the seeds a
// side a gap that size needs for 80 % power, each empty where undefined.
struct Comparison {
  std::optional<double> delta;
  std::optional<WelchTest> welch;
  std::optional<int64_t> seeds_for_power;
};

Comparison compare(const std::vector<double>& values, const std::vector<double>& reference) {
  if (values.empty() || reference.empty()) return {};
  return {summarize(values).mean - summarize(reference).mean, welch_t_test(values, reference),
          seeds_for_power(values, reference)};
}

}  // namespace

SweepTable sweep_table(const SweepPlan& plan) {
  std::map<std::string, std::vector<RunResult>> results;
  std::map<std::string, int64_t> planned;
  for (const auto& run : plan.runs) {
    ++planned[run.configuration];
    if (auto result = read_result(run)) results[run.configuration].push_back(*result);
  }
  const auto values_of = [&](const std::string& name) {
    std::vector<double> values;
    for (const auto& result : results[name]) values.push_back(result.value);
    return values;
  };
  Headline headline;
  for (const auto& [name, runs] : results) {
    if (!runs.empty()) headline = runs.front().headline;
  }
  const auto mean_key = headline.name + "_mean", std_key = headline.name + "_std";

  SweepTable table;
  table.metric = headline.name;
  table.rows = json::array();
  std::ostringstream md, csv;
  md << "| configuration | seeds | test " << headline.name << (headline.fraction ? " (%)" : "")
     << " | Δ vs " << (plan.own_baselines.empty() ? plan.baseline : "its baseline")
     << (headline.fraction ? " (points)" : "") << " | p (Welch) | seeds for 80 % power";
  for (const auto& other : plan.compare_also) md << " | Δ vs " << other << " | p vs " << other;
  md << " | trainable params | deployed params | deployed GFLOPs | ms/step | peak RSS (MiB) |\n|";
  for (size_t column = 0; column < 11 + 2 * plan.compare_also.size(); ++column) md << "---|";
  md << "\n";
  csv << "configuration,seeds,planned_seeds," << mean_key << "," << std_key
      << ",delta_vs_baseline,p_welch,seeds_for_80pct_power,";
  for (const auto& other : plan.compare_also) {
    csv << "delta_vs_" << other << ",p_welch_vs_" << other << ",";
  }
  csv << "params_train,params_deployed,gflops_deployed,ms_per_step_mean,ms_per_step_std,"
         "peak_rss_mib_max\n";
  for (const auto& name : plan.configurations) {
    const auto& runs = results[name];
    const auto metric = summarize(values_of(name));
    std::vector<double> ms;
    double peak = -1.0;
    int64_t params_train = 0, params_deployed = 0;
    double gflops = -1.0;
    for (const auto& result : runs) {
      ms.push_back(result.ms_per_step);
      peak = std::max(peak, result.peak_rss_mib);
      params_train = result.params_train;
      params_deployed = result.params_deployed;
      gflops = result.gflops_deployed;
    }
    const auto step = summarize(ms);
    json row = {{"configuration", name},
                {"seeds", metric.n},
                {"planned_seeds", planned[name]},
                {mean_key, metric.mean},
                {std_key, metric.std},
                {"params_train", params_train},
                {"params_deployed", params_deployed},
                {"gflops_deployed", gflops >= 0 ? json(gflops) : json(nullptr)},
                {"ms_per_step_mean", step.mean},
                {"ms_per_step_std", step.std},
                {"peak_rss_mib_max", peak >= 0 ? json(peak) : json(nullptr)},
                {"baseline", name == plan.baseline_of(name)},
                {"compared_with", plan.baseline_of(name)}};
    const auto values = values_of(name);
    const auto baseline = values_of(plan.baseline_of(name));
    std::string delta = "—", p = "—", seeds_needed = "—";
    if (name == plan.baseline_of(name)) {
      delta = "(baseline)";
    } else if (const auto against = compare(values, baseline); against.delta) {
      row["delta_vs_baseline"] = *against.delta;
      delta = format("%+.2f", *against.delta);
      if (!plan.own_baselines.empty()) delta += " (vs " + plan.baseline_of(name) + ")";
      if (against.welch) {
        row["p_welch"] = against.welch->p;
        row["t_welch"] = against.welch->t;
        row["df_welch"] = against.welch->df;
        p = format("%.3g", against.welch->p);
      }
      // Seeds a side for a gap this size to reach p < 0.05 four times in five.
      if (against.seeds_for_power) {
        row["seeds_for_80pct_power"] = *against.seeds_for_power;
        seeds_needed = std::to_string(*against.seeds_for_power);
      } else if (metric.n >= 2 && baseline.size() >= 2) {
        seeds_needed = "> 10000";
      }
    }
    md << "| " << name << " | " << metric.n << "/" << planned[name] << " | "
       << mean_std(metric, "%.2f") << " | " << delta << " | " << p << " | " << seeds_needed
       << " | ";
    // The same comparison against each of compare_also, in "compared_also" of the row.
    auto also = json::object();
    for (const auto& other : plan.compare_also) {
      std::string other_delta = "—", other_p = "—";
      json comparison = json::object();
      if (name == other) {
        other_delta = "(itself)";
      } else if (const auto against = compare(values, values_of(other)); against.delta) {
        comparison["delta"] = *against.delta;
        other_delta = format("%+.2f", *against.delta);
        if (against.welch) {
          comparison["p_welch"] = against.welch->p;
          comparison["t_welch"] = against.welch->t;
          comparison["df_welch"] = against.welch->df;
          other_p = format("%.3g", against.welch->p);
        }
        if (against.seeds_for_power) comparison["seeds_for_80pct_power"] = *against.seeds_for_power;
      }
      also[other] = comparison;
      md << other_delta << " | " << other_p << " | ";
    }
    if (!plan.compare_also.empty()) row["compared_also"] = also;
    md << (metric.n > 0 ? std::to_string(params_train) : "—") << " | "
       << (metric.n > 0 ? std::to_string(params_deployed) : "—") << " | "
       << (gflops >= 0 ? format("%.4g", gflops) : "—") << " | " << mean_std(step, "%.1f") << " | "
       << (peak >= 0 ? format("%.0f", peak) : "—") << " |\n";
    const auto field = [&](const char* key) {
      return row.contains(key) && !row[key].is_null() ? row[key].dump() : std::string();
    };
    csv << name << "," << metric.n << "," << planned[name] << "," << field(mean_key.c_str()) << ","
        << field(std_key.c_str()) << "," << field("delta_vs_baseline") << "," << field("p_welch")
        << "," << field("seeds_for_80pct_power") << ",";
    for (const auto& other : plan.compare_also) {
      const auto& comparison = also[other];
      for (const char* key : {"delta", "p_welch"}) {
        csv << (comparison.contains(key) ? comparison[key].dump() : std::string()) << ",";
      }
    }
    csv << params_train << "," << params_deployed << "," << field("gflops_deployed") << ","
        << field("ms_per_step_mean") << "," << field("ms_per_step_std") << ","
        << field("peak_rss_mib_max") << "\n";
    table.rows.push_back(row);
  }
  table.markdown = md.str();
  table.csv = csv.str();
  return table;
}

}  // namespace exfusion
