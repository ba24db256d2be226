// A sweep file (`exfusion sweep FILE`): a base config, a list or a grid of named
// configurations (each a set of config overrides), seeds, and the baseline the table compares
// with; expanded into one run per configuration and seed, each checked as a run config before
// anything trains.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace exfusion {

struct SweepRunSpec {
  std::string configuration;  // its name in the table
  int64_t seed = 0;
  // `--set` assignments of this run, in order: the sweep's own, the configuration's,
  // train.seed, then the command line's.
  std::vector<std::string> assignments;
  std::filesystem::path dir;  // <out>/runs/<configuration>/seed-<seed>
  // Its config file: the configuration's own base, else the sweep's; empty: the default run.
  std::filesystem::path base_config;
};

struct SweepPlan {
  // The configuration a row is compared with: its own baseline, else the sweep's.
  const std::string& baseline_of(const std::string& configuration) const;

  std::filesystem::path file;
  std::filesystem::path base_config;        // empty: the default run
  std::vector<std::string> configurations;  // names, in the file's order
  std::string baseline;                     // one of them (default: the first)
  // Each configuration's own baseline where it names one (several models in one sweep, each
  // against its own dense run); the others compare with `baseline`.
  std::map<std::string, std::string> own_baselines;
  // Configurations every row is also compared with, each in two columns of its own (Δ and
  // Welch's p): ExFusion against its prior art beside against dense, say.
  std::vector<std::string> compare_also;
  std::vector<int64_t> seeds;
  std::filesystem::path out;
  std::vector<SweepRunSpec> runs;  // seed-major: every configuration of seed 1, then seed 2, …
};

// Reads a sweep file (YAML or JSON):
//   base: ../fmnist-vit-mb.yaml       # optional, relative to the sweep file
//   set: {train.epochs: 1}            # optional, every run
//   seeds: 3                          # 1, 2, 3; or a list [1, 7, 9]
//   baseline: dense                   # optional: the first configuration
//   compare_also: [ewa]               # optional: more configurations every row is compared with
//   configurations:                   # a list ...
//     - {name: dense, set: {ffn.kind: dense}}
//     - {name: swin, base: ../fmnist-swin-mb.yaml, baseline: swin-dense}  # its own base (another
//       model) and its own baseline (a configuration naming itself is a baseline)
//   grid: {ffn.num_experts: [2, 4]}   # ... or a grid: one configuration per combination,
//                                     # named "num_experts=2" (the keys' last parts)
// `extra` assignments (the command line's --set) go last in every run. Every run's config is
// built once here, so a bad key fails before the first run, naming the file and configuration.
// Throws InputError naming the file and the field.
SweepPlan read_sweep_plan(const std::filesystem::path& file, const std::filesystem::path& out,
                          const std::vector<std::string>& extra = {});

}  // namespace exfusion
