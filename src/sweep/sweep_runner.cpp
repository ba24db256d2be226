// Running a sweep's runs as child processes of this executable (see sweep_runner.h).
#include "exfusion/sweep/sweep_runner.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>

#include "exfusion/io/run_names.h"
#include "exfusion/sweep/results_table.h"
#include "exfusion/sweep/sweep_plan.h"
#include "exfusion/util/atomic_file.h"
#include "exfusion/util/error.h"
#include "exfusion/util/interrupt_guard.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

enum class RunState { kFinished, kStarted, kNew };

RunState state_of(const SweepRunSpec& run) {
  if (fs::exists(run.dir / kSummaryFile)) return RunState::kFinished;
  if (fs::exists(run.dir / kConfigFile)) return RunState::kStarted;
  return RunState::kNew;
}

const char* state_name(RunState state) {
  switch (state) {
    case RunState::kFinished:
      return "finished";
    case RunState::kStarted:
      return "started: resume";
    case RunState::kNew:
      return "to run";
  }
  return "";
}

std::vector<std::string> train_arguments(const SweepRunSpec& run, RunState state) {
  if (state == RunState::kStarted) return {"train", "--resume", run.dir.string()};
  std::vector<std::string> args{"train"};
  if (!run.base_config.empty()) args.insert(args.end(), {"--config", run.base_config.string()});
  args.emplace_back("--set");
  args.insert(args.end(), run.assignments.begin(), run.assignments.end());
  // --force: a directory left by a run killed before it saved its config holds nothing of use.
  args.insert(args.end(), {"--out", run.dir.string(), "--force"});
  return args;
}

std::string duration_text(double seconds) {
  const auto total = std::llround(seconds);
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof text, "%lldh%02lldm", static_cast<long long>(total / 3600),
                  static_cast<long long>(total / 60 % 60));
  } else {
    std::snprintf(text, sizeof text, "%lldm%02llds", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  }
  return text;
}

struct ChildResult {
  int status = 0;
  double peak_rss_mib = 0.0;
};

// Runs this executable with `args`, its output appended to `log`; a signal this process gets
// is passed on to the child once (it then checkpoints and exits), and the child dies with
// this process if this one is killed.
ChildResult run_child(const std::vector<std::string>& args, const fs::path& log) {
  const auto self = fs::read_symlink("/proc/self/exe");
  std::vector<std::string> all{self.string()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(all.size() + 1);
  for (auto& arg : all) argv.push_back(arg.data());
  argv.push_back(nullptr);
  fs::create_directories(log.parent_path());
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw InputError(log.string() + ": cannot open the run's log for writing");
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    throw std::runtime_error("fork failed");
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  ChildResult result;
  rusage usage{};
  bool forwarded = false;
  while (true) {
    const pid_t done = ::wait4(pid, &result.status, 0, &usage);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) throw std::runtime_error("waiting for a sweep run failed");
    if (InterruptGuard::pending() != 0 && !forwarded) {
      ::kill(pid, InterruptGuard::pending());
      forwarded = true;
    }
  }
  result.peak_rss_mib = static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB on Linux
  return result;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

void write_table(const SweepPlan& plan, const SweepTable& table) {
  write_text_atomically(plan.out / "table.md", table.markdown);
  write_text_atomically(plan.out / "table.csv", table.csv);
  write_text_atomically(plan.out / "results.json", table.rows.dump(2) + "\n");
}

}  // namespace

json run_sweep(const SweepRun& run, std::ostream& report, std::ostream& progress) {
  const auto out = run.out.empty() ? fs::path("runs") / "sweeps" / run.file.stem() : run.out;
  const auto plan = read_sweep_plan(run.file, out, run.assignments);
  const auto total = static_cast<int64_t>(plan.runs.size());
  if (run.dry_run) {
    json listed = json::array();
    for (const auto& spec : plan.runs) {
      const auto state = state_of(spec);
      std::string command = "exfusion";
      for (const auto& arg : train_arguments(spec, state)) command += " " + arg;
      listed.push_back({{"configuration", spec.configuration},
                        {"seed", spec.seed},
                        {"dir", spec.dir.string()},
                        {"state", state_name(state)},
                        {"command", command}});
    }
    return {{"sweep", run.file.string()},
            {"out", out.string()},
            {"baseline", plan.baseline},
            {"runs", listed}};
  }

  fs::create_directories(out);
  InterruptGuard interrupts;
  const auto started = std::chrono::steady_clock::now();
  int64_t ran = 0;
  for (int64_t i = 0; i < total; ++i) {
    const auto& spec = plan.runs[static_cast<size_t>(i)];
    const auto state = state_of(spec);
    const std::string label = "sweep: run " + std::to_string(i + 1) + "/" + std::to_string(total) +
                              " " + spec.configuration + " seed " + std::to_string(spec.seed);
    if (state == RunState::kFinished) {
      progress << label << ": finished earlier, skipped" << std::endl;
      continue;
    }
    const auto to_run = std::count_if(plan.runs.begin() + i, plan.runs.end(), [](const auto& r) {
      return state_of(r) != RunState::kFinished;
    });
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    progress << label << (state == RunState::kStarted ? " (resumed)" : "");
    if (ran > 0) {
      progress << ", ETA "
               << duration_text(elapsed / static_cast<double>(ran) * static_cast<double>(to_run));
    }
    progress << std::endl;
    const auto log =
        out / "logs" / (spec.configuration + "-seed-" + std::to_string(spec.seed) + ".log");
    const auto result = run_child(train_arguments(spec, state), log);
    if (WIFEXITED(result.status) && WEXITSTATUS(result.status) == 0) {
      write_text_atomically(spec.dir / kSweepResourcesFile,
                            json{{"peak_rss_mib", result.peak_rss_mib}}.dump() + "\n");
      ++ran;
      continue;
    }
    if (const int signal = InterruptGuard::pending()) {
      progress << "exfusion sweep: stopped by signal " << signal
               << "; the run checkpointed. Continue with: exfusion sweep " << run.file.string()
               << " --out " << out.string() << std::endl;
      throw Interrupted(signal);
    }
    throw InputError("sweep run " + spec.configuration + " seed " + std::to_string(spec.seed) +
                     " failed (" + describe_status(result.status) + "); its log: " + log.string() +
                     ". Rerunning the sweep continues it.");
  }
  const auto table = sweep_table(plan);
  write_table(plan, table);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  report << table.markdown << "\n"
         << total << " runs (" << ran << " run now) in " << duration_text(elapsed) << "; "
         << (out / "table.md").string() << ", " << (out / "table.csv").string() << std::endl;
  return {{"sweep", run.file.string()}, {"out", out.string()}, {"rows", table.rows}};
}

}  // namespace exfusion
