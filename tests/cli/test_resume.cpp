// Exact resume: a run killed at any point (inside a step, a checkpoint write, an evaluation, the
// final fuse and export; by SIGKILL at chosen points and at random moments) and resumed as often
// as it is killed ends with the uninterrupted run's weights, exports and summary, bit for bit on
// the CPU, and logs every step exactly once. SIGTERM/SIGINT stop a run with a checkpoint.
#include <gtest/gtest.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "../support/cli.h"
#include "../support/processes.h"
#include "../support/run_comparison.h"
#include "../support/training_states.h"

namespace exfusion {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// 128 training images in batches of 16: 8 steps an epoch, 3 epochs, a checkpoint every 2 steps.
std::string run_args(const fs::path& data, const std::string& ffn) {
  return "--data " + data.string() + " --threads 1 " + ffn +
         " --set model.embed_dim=16 model.depth=2 model.num_heads=2 train.batch_size=16 "
         "train.epochs=3 train.seed=5 train.log_every=3 train.checkpoint_every=2";
}

using testing::expect_same_run;

struct ResumeCase {
  const char* name;
  const char* ffn;
};

class KillAndResume : public ::testing::TestWithParam<ResumeCase> {};

// Killed inside a step, inside a checkpoint write, at an evaluation, again inside a step, after
// the fuse, inside the export's write, and then left to finish.
TEST_P(KillAndResume, AtEveryKindOfPointEqualsTheUninterruptedRun) {
  const auto dir = testing::fresh_temp_dir(std::string("resume-") + GetParam().name);
  testing::write_toy_idx_dataset(dir, 128, 32);
  const auto args = run_args(dir, GetParam().ffn);
  const auto reference = testing::run_cli("train " + args + " --out " + (dir / "ref").string());
  ASSERT_EQ(reference.exit_code, 0) << reference.output;

  const auto run = dir / "killed";
  auto first = testing::spawn_cli("train " + args + " --out " + run.string(), dir / "out.txt",
                                  "EXFUSION_KILL_AT=step:5");
  ASSERT_EQ(testing::wait_for(first), 128 + SIGKILL) << testing::read_text(dir / "out.txt");
  const bool fuses = std::string(GetParam().ffn).find("moe") == std::string::npos;
  std::vector<std::string> kills = {"safetensors-write:3", "eval:1", "step:7"};
  if (fuses) kills.push_back("fuse:1");
  // The final state is written first; the export's write is the second after the resume.
  kills.push_back(fuses ? "safetensors-write:2" : "safetensors-write:1");
  for (const auto& kill : kills) {
    auto child = testing::spawn_cli("train --resume " + run.string(), dir / "out.txt",
                                    "EXFUSION_KILL_AT=" + kill);
    EXPECT_EQ(testing::wait_for(child), 128 + SIGKILL)
        << kill << ": " << testing::read_text(dir / "out.txt");
  }
  const auto last = testing::run_cli("train --resume " + run.string());
  ASSERT_EQ(last.exit_code, 0) << last.output;
  expect_same_run(dir / "ref", run);
  testing::remove_tree(dir);
}

INSTANTIATE_TEST_SUITE_P(
    EveryFfnKind, KillAndResume,
    ::testing::Values(ResumeCase{"dense", "--set ffn.kind=dense"},
                      ResumeCase{"sw", "--variant sw --experts 3"},
                      ResumeCase{"dw", "--variant dw --experts 3"},
                      ResumeCase{"mb", "--variant mb --experts 3"},
                      ResumeCase{"moe", "--set ffn.kind=moe ffn.num_experts=4"},
                      ResumeCase{"ewa", "--set ffn.kind=ewa ffn.num_experts=3"},
                      ResumeCase{"ders_exfusion",
                                 "--set ffn.kind=ders-exfusion "
                                 "ffn.num_experts=3 ffn.delta_keep=0.2"}),
    [](const auto& info) { return std::string(info.param.name); });

// SIGKILL at random moments, as often as it takes for the run to finish.
// A run of `ffn` stopped once by `kill` (EXFUSION_KILL_AT) with `exit_code`, then resumed to
// the end, equals the uninterrupted run.
void expect_one_stop_and_resume_exact(const std::string& name, const std::string& ffn,
                                      const std::string& kill, int exit_code) {
  const auto dir = testing::fresh_temp_dir(name);
  testing::write_toy_idx_dataset(dir, 128, 32);
  const auto args = run_args(dir, ffn);
  ASSERT_EQ(testing::run_cli("train " + args + " --out " + (dir / "ref").string()).exit_code, 0);
  const auto run = dir / "stopped";
  auto child = testing::spawn_cli("train " + args + " --out " + run.string(), dir / "out.txt",
                                  "EXFUSION_KILL_AT=" + kill);
  ASSERT_EQ(testing::wait_for(child), exit_code) << testing::read_text(dir / "out.txt");
  const auto resumed = testing::run_cli("train --resume " + run.string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  expect_same_run(dir / "ref", run);
  testing::remove_tree(dir);
}

// Killed in the last evaluation, after the last step (a checkpoint step too): the resumed run
// still evaluates and ends its last epoch. A checkpoint from between that step and the
// epoch's end would have no step left to run and would skip both.
TEST(Resume, KilledInTheLastEvaluationEndsTheLastEpoch) {
  expect_one_stop_and_resume_exact("resume-last-eval", "--variant mb --experts 3", "eval:3",
                                   128 + SIGKILL);
}

// SIGTERM at the last step: the run stops after its last epoch's end, not before it.
TEST(Resume, AStopAskedAtTheLastStepWaitsForTheEpochsEnd) {
  expect_one_stop_and_resume_exact("resume-last-step", "--variant dw --experts 3", "step:24:TERM",
                                   128 + SIGTERM);
}

// Killed inside its first checkpoint's write: no checkpoint is whole, so --resume starts the
// run over from the config it saved, replacing the killed attempt's log and events.
TEST(Resume, KilledBeforeItsFirstCheckpointStartsOverFromItsConfig) {
  expect_one_stop_and_resume_exact("resume-first-checkpoint", "--variant sw --experts 3",
                                   "safetensors-write:1", 128 + SIGKILL);
}

TEST(Resume, KilledAtRandomMomentsUntilItFinishesEqualsTheUninterruptedRun) {
  const auto dir = testing::fresh_temp_dir("resume-random");
  testing::write_toy_idx_dataset(dir, 128, 32);
  const auto args = run_args(dir, "--variant mb --experts 3");
  const auto reference = testing::run_cli("train " + args + " --out " + (dir / "ref").string());
  ASSERT_EQ(reference.exit_code, 0) << reference.output;
  const auto run = dir / "killed";
  std::mt19937 rng(11);
  // Short first (most attempts die in start-up or a few steps in), then longer, so that the run
  // finishes on any machine however slow.
  std::uniform_int_distribution<int> delay_ms(30, 200);
  int kills = 0, code = -1;
  for (int attempt = 0; attempt < 60 && code != 0; ++attempt) {
    // Once the run has saved its config, --resume continues it from any point, before its
    // first checkpoint too; until then there is no run to resume.
    const auto command = fs::exists(run / "config.json")
                             ? "train --resume " + run.string()
                             : "train " + args + " --out " + run.string() + " --force";
    auto child = testing::spawn_cli(command, dir / "out.txt");
    int status = 0;
    const bool ended =
        testing::wait_until([&] { return ::waitpid(child.pid, &status, WNOHANG) == child.pid; },
                            std::chrono::milliseconds(delay_ms(rng) + 50 * attempt));
    if (!ended) {
      ::kill(child.pid, SIGKILL);
      testing::wait_for(child);
      ++kills;
      continue;
    }
    code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    ASSERT_EQ(code, 0) << testing::read_text(dir / "out.txt");
  }
  ASSERT_EQ(code, 0) << "the run never finished between kills";
  EXPECT_GT(kills, 0);
  std::cout << "killed " << kills << " times before it finished\n";

  expect_same_run(dir / "ref", run);
  testing::remove_tree(dir);
}

// A damaged newest checkpoint (a flipped byte in its data, then a truncated one) is reported by
// name and skipped for the one before; the run still ends exactly as the uninterrupted one.
TEST(Resume, ADamagedNewestCheckpointFallsBackToTheOneBefore) {
  const auto dir = testing::fresh_temp_dir("resume-damaged");
  testing::write_toy_idx_dataset(dir, 128, 32);
  const auto args = run_args(dir, "--variant dw --experts 3") + " train.keep_checkpoints=3";
  ASSERT_EQ(testing::run_cli("train " + args + " --out " + (dir / "ref").string()).exit_code, 0);
  const auto run = dir / "killed";
  auto child = testing::spawn_cli("train " + args + " --out " + run.string(), dir / "out.txt",
                                  "EXFUSION_KILL_AT=step:7");
  ASSERT_EQ(testing::wait_for(child), 128 + SIGKILL);
  const auto newest = run / "checkpoints" / "step-000000006.safetensors";
  const auto before = run / "checkpoints" / "step-000000004.safetensors";
  ASSERT_TRUE(fs::exists(newest) && fs::exists(before));
  {
    std::fstream file(newest, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(fs::file_size(newest) - 100));
    file.put('\x5a');
  }
  fs::resize_file(before, fs::file_size(before) / 2);
  const auto resumed = testing::run_cli("train --resume " + run.string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("warning: " + newest.string() +
                                ": damaged: its tensors do not match the checksum"),
            std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("warning: " + before.string()), std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("resuming from " +
                                (run / "checkpoints" / "step-000000002.safetensors").string()),
            std::string::npos)
      << resumed.output;
  expect_same_run(dir / "ref", run);
  testing::remove_tree(dir);
}

// SIGTERM (here raised inside step 5): the step finishes, a checkpoint is written, the run says
// how to resume and exits 143; resuming from it is exact.
TEST(Resume, SigtermCheckpointsExits143AndResumesExactly) {
  const auto dir = testing::fresh_temp_dir("resume-sigterm");
  testing::write_toy_idx_dataset(dir, 128, 32);
  const auto args = run_args(dir, "--variant mb --experts 3");
  ASSERT_EQ(testing::run_cli("train " + args + " --out " + (dir / "ref").string()).exit_code, 0);
  const auto run = dir / "stopped";
  auto child = testing::spawn_cli("train " + args + " --out " + run.string(), dir / "out.txt",
                                  "EXFUSION_KILL_AT=step:5:TERM");
  EXPECT_EQ(testing::wait_for(child), 143);
  const auto output = testing::read_text(dir / "out.txt");
  EXPECT_NE(output.find("stopped by SIGTERM; resume with: exfusion train --resume " + run.string()),
            std::string::npos)
      << output;
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step-000000005.safetensors")) << output;
  EXPECT_FALSE(fs::exists(run / "summary.json"));
  const auto resumed = testing::run_cli("train --resume " + run.string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("step-000000005.safetensors (step 5)"), std::string::npos);
  expect_same_run(dir / "ref", run);
  // A finished run has nothing to resume.
  const auto again = testing::run_cli("train --resume " + run.string());
  EXPECT_EQ(again.exit_code, 0);
  EXPECT_NE(again.output.find("the run finished"), std::string::npos) << again.output;
  testing::remove_tree(dir);
}

// One SIGINT (raised inside step 5), for an MoE run: as SIGTERM, but exit 130. The checkpoints
// every 2 steps and at the epoch's end rotate: exactly train.keep_checkpoints stay, the newest.
TEST(Resume, OneSigintCheckpointsExits130KeepsTheNewestAndResumesExactly) {
  const auto dir = testing::fresh_temp_dir("resume-sigint");
  testing::write_toy_idx_dataset(dir, 128, 32);
  const auto args = run_args(dir, "--set ffn.kind=moe ffn.num_experts=4") +
                    " train.keep_checkpoints=2 train.checkpoint_every=1";
  ASSERT_EQ(testing::run_cli("train " + args + " --out " + (dir / "ref").string()).exit_code, 0);
  const auto run = dir / "stopped";
  auto child = testing::spawn_cli("train " + args + " --out " + run.string(), dir / "out.txt",
                                  "EXFUSION_KILL_AT=step:5:INT");
  EXPECT_EQ(testing::wait_for(child), 130);
  const auto output = testing::read_text(dir / "out.txt");
  EXPECT_NE(output.find("stopped by SIGINT; resume with: exfusion train --resume " + run.string()),
            std::string::npos)
      << output;
  EXPECT_EQ(testing::list_files(run / "checkpoints", "step-"),
            (std::vector<std::string>{"step-000000004.safetensors", "step-000000005.safetensors"}))
      << output;
  const auto resumed = testing::run_cli("train --resume " + run.string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("step-000000005.safetensors (step 5)"), std::string::npos);
  expect_same_run(dir / "ref", run);
  EXPECT_EQ(testing::list_files(run / "checkpoints", "step-"),
            (std::vector<std::string>{"step-000000023.safetensors", "step-000000024.safetensors"}));
  testing::remove_tree(dir);
}

// Signals from outside, while the run trains: SIGTERM exits 143 with a checkpoint; two SIGINTs
// exit 130 at once, and the last checkpoint written still resumes.
TEST(Resume, SignalsFromOutsideStopTheRunWithAValidCheckpoint) {
  const auto dir = testing::fresh_temp_dir("resume-signals");
  testing::write_toy_idx_dataset(dir, 128, 32);
  const auto args = run_args(dir, "--variant mb --experts 3") + " train.epochs=400";
  for (const int signal : {SIGTERM, SIGINT}) {
    const auto run = dir / (signal == SIGTERM ? "term" : "int");
    auto child = testing::spawn_cli("train " + args + " --out " + run.string(), dir / "out.txt");
    ASSERT_TRUE(testing::wait_until(
        [&] { return !testing::list_files(run / "checkpoints", "step-").empty(); },
        std::chrono::seconds(60)));
    ::kill(child.pid, signal);
    if (signal == SIGINT) ::kill(child.pid, SIGINT);
    EXPECT_EQ(testing::wait_for(child), 128 + signal) << testing::read_text(dir / "out.txt");
    EXPECT_FALSE(fs::exists(run / "summary.json"));
    const auto info = testing::run_cli("info --json " + (run / "checkpoints").string() + "/" +
                                       testing::list_files(run / "checkpoints", "step-").back());
    EXPECT_EQ(info.exit_code, 0) << info.output;
  }
  testing::remove_tree(dir);
}

TEST(Resume, ResumeRefusesOtherOptionsAndMissingCheckpoints) {
  const auto dir = testing::fresh_temp_dir("resume-refused");
  const auto with_set = testing::run_cli("train --resume " + dir.string() + " --set train.lr=1");
  EXPECT_EQ(with_set.exit_code, 2);
  EXPECT_NE(with_set.output.find("cannot be given with it"), std::string::npos) << with_set.output;
  const auto empty = testing::run_cli("train --resume " + dir.string());
  EXPECT_EQ(empty.exit_code, 2);
  EXPECT_NE(empty.output.find("no checkpoints in"), std::string::npos) << empty.output;
  const auto missing = testing::run_cli("train --resume " + (dir / "nothing").string());
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.output.find("no such run directory"), std::string::npos) << missing.output;
  testing::remove_tree(dir);
}

}  // namespace
}  // namespace exfusion
