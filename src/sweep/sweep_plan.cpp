// Reading a sweep file into its runs (see sweep_plan.h).
#include "exfusion/sweep/sweep_plan.h"

#include <nlohmann/json.hpp>
#include <set>

#include "exfusion/config/config_file.h"
#include "exfusion/train/run_config.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kMaxRuns = 10000;

// "ffn.num_experts" and 8 as the --set assignment "ffn.num_experts=8".
std::string assignment(const std::string& key, const json& value) {
  return key + "=" + value.dump();
}

std::vector<std::string> assignments_of(const json& set, const std::string& where) {
  if (!set.is_object()) {
    throw InputError(where + ": expected a mapping of config keys to values (ffn.kind: dense)");
  }
  std::vector<std::string> out;
  for (const auto& [key, value] : set.items()) out.push_back(assignment(key, value));
  return out;
}

// A name that is also a directory name.
void check_name(const std::string& name, const std::string& where) {
  const bool fine = !name.empty() && name != "." && name != ".." &&
                    name.find_first_not_of(
                        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789._=+,-") == std::string::npos;
  if (!fine) {
    throw InputError(where + ": configuration name '" + name +
                     "': expected letters, digits and . _ = + , - only (it names a directory)");
  }
}

std::string short_key(const std::string& key) {
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

std::string value_text(const json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

struct Configuration {
  std::string name;
  std::vector<std::string> assignments;
  std::string base;      // its own config file, relative to the sweep file; empty: the sweep's
  std::string baseline;  // the configuration it is compared with; empty: the sweep's baseline
};

std::vector<Configuration> grid_configurations(const json& grid, const std::string& where) {
  if (!grid.is_object() || grid.empty()) {
    throw InputError(where + ": expected a mapping of config keys to lists of values");
  }
  std::vector<Configuration> out{{"", {}, {}, {}}};
  for (const auto& [key, values] : grid.items()) {
    if (!values.is_array() || values.empty()) {
      throw InputError(where + "." + key + ": expected a non-empty list of values");
    }
    std::vector<Configuration> next;
    for (const auto& partial : out) {
      for (const auto& value : values) {
        auto grown = partial;
        grown.name += (grown.name.empty() ? "" : ",") + short_key(key) + "=" + value_text(value);
        grown.assignments.push_back(assignment(key, value));
        next.push_back(std::move(grown));
      }
    }
    out = std::move(next);
    if (static_cast<int64_t>(out.size()) > kMaxRuns) {
      throw InputError(where + ": more than " + std::to_string(kMaxRuns) + " configurations");
    }
  }
  return out;
}

std::vector<Configuration> listed_configurations(const json& list, const std::string& where) {
  if (!list.is_array() || list.empty()) {
    throw InputError(where + ": expected a non-empty list of {name, set}");
  }
  std::vector<Configuration> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto at = where + "[" + std::to_string(i) + "]";
    const auto& item = list[i];
    if (!item.is_object() || !item.contains("name") || !item["name"].is_string()) {
      throw InputError(at + ": expected {name: ..., set: {...}}");
    }
    for (const auto& [key, value] : item.items()) {
      if (key != "name" && key != "set" && key != "base" && key != "baseline") {
        throw InputError(at + "." + key + ": unknown key (expected name, set, base, baseline)");
      }
    }
    Configuration configuration{item["name"].get<std::string>(), {}, {}, {}};
    if (item.contains("set")) configuration.assignments = assignments_of(item["set"], at + ".set");
    if (item.contains("base")) {
      if (!item["base"].is_string()) throw InputError(at + ".base: expected a config file");
      configuration.base = item["base"].get<std::string>();
    }
    if (item.contains("baseline")) {
      if (!item["baseline"].is_string()) {
        throw InputError(at + ".baseline: expected the name of a configuration");
      }
      configuration.baseline = item["baseline"].get<std::string>();
    }
    out.push_back(std::move(configuration));
  }
  return out;
}

std::vector<int64_t> seeds_of(const json& seeds, const std::string& where) {
  std::vector<int64_t> out;
  if (seeds.is_number_integer()) {
    const auto count = seeds.get<int64_t>();
    if (count < 1 || count > kMaxRuns) throw InputError(where + ": expected 1 or more seeds");
    for (int64_t seed = 1; seed <= count; ++seed) out.push_back(seed);
  } else if (seeds.is_array() && !seeds.empty()) {
    std::set<int64_t> seen;
    for (const auto& seed : seeds) {
      if (!seed.is_number_integer() || !seen.insert(seed.get<int64_t>()).second) {
        throw InputError(where + ": expected distinct integer seeds");
      }
      out.push_back(seed.get<int64_t>());
    }
  } else {
    throw InputError(where + ": expected a count (3) or a list of seeds ([1, 2, 3])");
  }
  return out;
}

}  // namespace

const std::string& SweepPlan::baseline_of(const std::string& configuration) const {
  const auto own = own_baselines.find(configuration);
  return own != own_baselines.end() ? own->second : baseline;
}

SweepPlan read_sweep_plan(const fs::path& file, const fs::path& out,
                          const std::vector<std::string>& extra) {
  const auto sweep = config::read_config_file(file);
  const auto where = file.string();
  if (!sweep.is_object()) throw InputError(where + ": expected a mapping at the top");
  for (const auto& [key, value] : sweep.items()) {
    static const std::set<std::string> known{
        "base", "set", "seeds", "baseline", "compare_also", "configurations", "grid"};
    if (known.count(key) == 0) {
      throw InputError(where + ": unknown key '" + key +
                       "' (expected base, set, seeds, baseline, compare_also, configurations or "
                       "grid)");
    }
  }
  SweepPlan plan;
  plan.file = file;
  plan.out = out;
  if (sweep.contains("base")) {
    if (!sweep["base"].is_string()) throw InputError(where + ": base: expected a config file");
    plan.base_config = file.parent_path() / sweep["base"].get<std::string>();
  }
  const auto common = sweep.contains("set") ? assignments_of(sweep["set"], where + ": set")
                                            : std::vector<std::string>{};
  if (!sweep.contains("seeds")) throw InputError(where + ": no seeds (a count, or a list)");
  plan.seeds = seeds_of(sweep["seeds"], where + ": seeds");
  if (sweep.contains("configurations") == sweep.contains("grid")) {
    throw InputError(where + ": expected either configurations (a list) or grid (a mapping)");
  }
  const auto configurations =
      sweep.contains("grid")
          ? grid_configurations(sweep["grid"], where + ": grid")
          : listed_configurations(sweep["configurations"], where + ": configurations");
  std::set<std::string> names;
  for (const auto& configuration : configurations) {
    check_name(configuration.name, where);
    if (!names.insert(configuration.name).second) {
      throw InputError(where + ": configuration '" + configuration.name + "' named twice");
    }
    plan.configurations.push_back(configuration.name);
  }
  plan.baseline = plan.configurations.front();
  if (sweep.contains("baseline")) {
    if (!sweep["baseline"].is_string() || names.count(sweep["baseline"].get<std::string>()) == 0) {
      throw InputError(where + ": baseline: expected the name of one of its configurations");
    }
    plan.baseline = sweep["baseline"].get<std::string>();
  }
  if (sweep.contains("compare_also")) {
    auto listed = sweep["compare_also"];
    if (listed.is_string()) listed = json::array({listed});
    for (const auto& name : listed) {
      if (!name.is_string() || names.count(name.get<std::string>()) == 0) {
        throw InputError(where + ": compare_also: expected names of its configurations, got " +
                         name.dump());
      }
      plan.compare_also.push_back(name.get<std::string>());
    }
  }
  for (const auto& configuration : configurations) {
    if (configuration.baseline.empty()) continue;
    if (names.count(configuration.baseline) == 0) {
      throw InputError(where + ": configuration '" + configuration.name + "': baseline '" +
                       configuration.baseline + "' is not one of its configurations");
    }
    plan.own_baselines[configuration.name] = configuration.baseline;
  }
  if (static_cast<int64_t>(configurations.size() * plan.seeds.size()) > kMaxRuns) {
    throw InputError(where + ": more than " + std::to_string(kMaxRuns) + " runs");
  }
  for (const auto seed : plan.seeds) {
    for (const auto& configuration : configurations) {
      SweepRunSpec run;
      run.configuration = configuration.name;
      run.seed = seed;
      run.assignments = common;
      run.assignments.insert(run.assignments.end(), configuration.assignments.begin(),
                             configuration.assignments.end());
      run.assignments.push_back("train.seed=" + std::to_string(seed));
      run.assignments.insert(run.assignments.end(), extra.begin(), extra.end());
      run.dir = out / "runs" / configuration.name / ("seed-" + std::to_string(seed));
      run.base_config =
          configuration.base.empty() ? plan.base_config : file.parent_path() / configuration.base;
      try {
        build_run_config(default_run_config(), {run.base_config.string(), run.assignments});
      } catch (const InputError& error) {
        throw InputError(where + ": configuration '" + configuration.name + "': " + error.what());
      }
      plan.runs.push_back(std::move(run));
    }
  }
  return plan;
}

}  // namespace exfusion
