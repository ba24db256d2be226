// What a run directory must never suffer: a refused run leaves nothing behind (so the corrected
// rerun is not blocked); --force leaves no file of the old run beside the new one's; fuse --out
// does not overwrite another file's description; temporaries are created exclusively (a planted
// symlink is not followed) and a killed write's leftovers are removed; runs that would train
// nothing or diverge say so instead of exporting.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>

#include "../support/cli.h"
#include "../support/processes.h"
#include "exfusion/util/atomic_file.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;

const std::string kFourStepTinyRun =
    "--set model.embed_dim=16 model.depth=1 model.num_heads=2 train.max_steps=4 "
    "train.batch_size=8 train.epochs=1 --threads 1";

class RunDirectory : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    testing::write_toy_idx_dataset(dir_, 64, 32);
  }
  void TearDown() override { testing::remove_tree(dir_); }
  std::string train(const std::string& extra, const std::string& out = "run") {
    return "train --data " + dir_.string() + " --out " + (dir_ / out).string() + " " +
           kFourStepTinyRun + " " + extra;
  }
  fs::path dir_;
};

TEST_F(RunDirectory, ARefusedRunLeavesNoDirectoryBehind) {
  // Refused after the config was read: CUDA graphs on the CPU (the trainer refuses it).
  const auto refused = run_cli(train("--set train.cuda_graph=true train.device=cpu"));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("train.cuda_graph"), std::string::npos) << refused.output;
  EXPECT_FALSE(fs::exists(dir_ / "run"));
  const auto corrected = run_cli(train(""));
  EXPECT_EQ(corrected.exit_code, 0) << corrected.output;
}

TEST_F(RunDirectory, ARefusedForcedRunLeavesTheOldRunUntouched) {
  ASSERT_EQ(run_cli(train("")).exit_code, 0);
  const auto config = testing::read_text(dir_ / "run" / "config.json");
  const auto metrics = testing::read_text(dir_ / "run" / "metrics.jsonl");
  const auto refused = run_cli(train("--force --set train.cuda_graph=true train.device=cpu"));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_EQ(testing::read_text(dir_ / "run" / "config.json"), config);
  EXPECT_EQ(testing::read_text(dir_ / "run" / "metrics.jsonl"), metrics);
}

TEST_F(RunDirectory, AForcedRunKilledMidwayLeavesNoFileOfTheOldRun) {
  ASSERT_EQ(run_cli(train("")).exit_code, 0);
  auto child = testing::spawn_cli(train("--force --variant dw --set train.checkpoint_every=1"),
                                  dir_ / "out.txt", "EXFUSION_KILL_AT=step:2");
  ASSERT_EQ(testing::wait_for(child), 128 + SIGKILL);
  for (const auto* name :
       {"model.safetensors", "model.json", "state.safetensors", "summary.json"}) {
    EXPECT_FALSE(fs::exists(dir_ / "run" / name)) << name;
  }
  EXPECT_NE(testing::read_text(dir_ / "run" / "config.json").find("\"dw\""), std::string::npos);
  const auto eval = run_cli("eval " + (dir_ / "run").string());
  EXPECT_EQ(eval.exit_code, 2);
  EXPECT_NE(eval.output.find("exfusion train --resume"), std::string::npos) << eval.output;
}

TEST_F(RunDirectory, FuseOutRefusesToOverwriteAnotherDescription) {
  ASSERT_EQ(run_cli(train("")).exit_code, 0);
  const auto target = dir_ / "export" / "model.safetensors";
  fs::create_directories(target.parent_path());
  std::ofstream(dir_ / "export" / "model.json") << "someone else's file\n";
  const auto refused = run_cli("fuse " + (dir_ / "run").string() + " --out " + target.string());
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.output.find((dir_ / "export" / "model.json").string() + ": already exists"),
            std::string::npos)
      << refused.output;
  EXPECT_EQ(testing::read_text(dir_ / "export" / "model.json"), "someone else's file\n");
  EXPECT_FALSE(fs::exists(target));
  // Another name gets its own description beside it; the run's model.json is left alone.
  const auto run_description = testing::read_text(dir_ / "run" / "model.json");
  const auto other = dir_ / "export" / "tiny.safetensors";
  ASSERT_EQ(run_cli("fuse " + (dir_ / "run").string() + " --out " + other.string()).exit_code, 0);
  EXPECT_TRUE(fs::exists(dir_ / "export" / "tiny.json"));
  EXPECT_NE(testing::read_text(dir_ / "export" / "tiny.json").find("\"tiny.safetensors\""),
            std::string::npos);
  EXPECT_EQ(testing::read_text(dir_ / "run" / "model.json"), run_description);
}

TEST(AtomicFile, ATemporaryIsCreatedExclusivelyAndAPlantedSymlinkIsNotFollowed) {
  const auto dir = testing::fresh_temp_dir("atomic-symlink");
  const auto victim = dir / "victim.txt";
  std::ofstream(victim) << "precious\n";
  // Every name of the old scheme (<file>.tmp.<pid>) and a few of the new one planted.
  const auto target = dir / "out.txt";
  fs::create_symlink(victim, dir / ("out.txt.tmp." + std::to_string(::getpid())));
  write_text_atomically(target, "new\n");
  EXPECT_EQ(testing::read_text(victim), "precious\n");
  EXPECT_EQ(testing::read_text(target), "new\n");
  EXPECT_TRUE(fs::is_symlink(dir / ("out.txt.tmp." + std::to_string(::getpid()))));
  testing::remove_tree(dir);
}

TEST(AtomicFile, LeftoversOfKilledWritesAreRecognisedAndRemoved) {
  const auto dir = testing::fresh_temp_dir("atomic-leftovers");
  std::ofstream(dir / "model.safetensors.tmp.Ab3xYz") << "half a model";
  std::ofstream(dir / "notes.tmp.txt") << "not ours";
  std::ofstream(dir / "model.safetensors") << "whole";
  EXPECT_TRUE(is_atomic_write_temporary("model.safetensors.tmp.Ab3xYz"));
  EXPECT_FALSE(is_atomic_write_temporary("notes.tmp.txt"));
  EXPECT_FALSE(is_atomic_write_temporary(".tmp.Ab3xYz"));
  EXPECT_EQ(remove_atomic_write_leftovers(dir), 1);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.tmp.Ab3xYz"));
  EXPECT_TRUE(fs::exists(dir / "notes.tmp.txt"));
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  testing::remove_tree(dir);
}

// A temporary whose writer is alive holds its lock: neither a write of the same target nor a
// directory's cleanup removes it; once the lock is gone, both do. Other targets' temporaries are
// left to their own writes.
TEST(AtomicFile, OnlyAbandonedTemporariesAreRemoved) {
  const auto dir = testing::fresh_temp_dir("atomic-live");
  std::ofstream(dir / "out.txt.tmp.Ab3xYz") << "killed write";
  std::ofstream(dir / "other.txt.tmp.Ab3xYz") << "another target's killed write";
  const auto live = dir / "out.txt.tmp.Live01";
  std::ofstream(live) << "being written";
  const int writer = ::open(live.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  ASSERT_EQ(::flock(writer, LOCK_EX), 0);
  write_text_atomically(dir / "out.txt", "new\n");
  EXPECT_FALSE(fs::exists(dir / "out.txt.tmp.Ab3xYz"));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(dir / "other.txt.tmp.Ab3xYz"));
  EXPECT_EQ(remove_atomic_write_leftovers(dir), 1);
  EXPECT_TRUE(fs::exists(live));
  ::close(writer);
  EXPECT_EQ(remove_atomic_write_leftovers(dir), 1);
  EXPECT_FALSE(fs::exists(live));
  EXPECT_EQ(testing::read_text(dir / "out.txt"), "new\n");
  testing::remove_tree(dir);
}

TEST_F(RunDirectory, AResumedRunRemovesTheLeftoversOfItsKilledWrites) {
  auto child = testing::spawn_cli(train("--set train.checkpoint_every=1"), dir_ / "out.txt",
                                  "EXFUSION_KILL_AT=safetensors-write:2");
  ASSERT_EQ(testing::wait_for(child), 128 + SIGKILL);
  EXPECT_EQ(testing::temp_files_in(dir_ / "run").size(), 1u);
  const auto resumed = run_cli("train --resume " + (dir_ / "run").string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(testing::temp_files_in(dir_ / "run").empty());
}

TEST_F(RunDirectory, ATrainingSetSmallerThanABatchIsAnError) {
  const auto result = run_cli(train("--set train.batch_size=65"));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("train.batch_size = 65: the training set has 64 samples"),
            std::string::npos)
      << result.output;
  EXPECT_FALSE(fs::exists(dir_ / "run" / "model.safetensors"));
}

TEST_F(RunDirectory, ADivergedRunStopsWithoutExporting) {
  const auto result =
      run_cli(train("--set train.lr=1e30 train.min_lr=0 train.clip_grad=0 train.log_every=1"));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("training diverged"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(dir_ / "run" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "run" / "summary.json"));
}

// The check above reads each logging window's loss, taken before that step's update: here the
// one step's update (lr = 1e300) makes the weights non-finite, and the test loss after training
// catches it.
TEST_F(RunDirectory, DivergenceInTheLastUpdateIsNotExported) {
  const auto result = run_cli(
      train("--set train.lr=1e300 train.warmup_epochs=0 train.max_steps=1 train.log_every=1"));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("training diverged: after the last step (1)"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("train.lr than 1e+300"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(dir_ / "run" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "run" / "summary.json"));
}

// Outside run directories too (fuse --out, eval --save-logits, import, upcycle, compress): a
// write clears its own target's leftovers.
TEST_F(RunDirectory, AWriteOutsideARunClearsItsKilledPredecessorsLeftovers) {
  ASSERT_EQ(run_cli(train("")).exit_code, 0);
  const auto out = dir_ / "exported.safetensors";
  std::ofstream(dir_ / "exported.safetensors.tmp.Ab3xYz") << "half a model";
  const auto fuse = run_cli("fuse " + (dir_ / "run").string() + " --out " + out.string());
  ASSERT_EQ(fuse.exit_code, 0) << fuse.output;
  EXPECT_TRUE(fs::exists(out));
  EXPECT_FALSE(fs::exists(dir_ / "exported.safetensors.tmp.Ab3xYz"));
}

TEST_F(RunDirectory, AnMoeRunIsDescribedByItsStateAndEvalPointsToUnfused) {
  ASSERT_EQ(run_cli(train("--set ffn.kind=moe")).exit_code, 0);
  const auto eval = run_cli("eval " + (dir_ / "run").string());
  EXPECT_EQ(eval.exit_code, 2);
  EXPECT_NE(eval.output.find("pass --unfused"), std::string::npos) << eval.output;
  const auto info = run_cli("info --json " + (dir_ / "run").string());
  EXPECT_EQ(info.exit_code, 0) << info.output;
  EXPECT_NE(info.output.find("\"training-state\""), std::string::npos) << info.output;
  // Without --json, a person's page: the sites with their kind (an MoE reports its routing
  // only after a forward pass, which describing a checkpoint does not run).
  const auto page = run_cli("info " + (dir_ / "run").string());
  EXPECT_EQ(page.exit_code, 0) << page.output;
  for (const auto* expected : {"checkpoint", "(training-state", "FFN", "blocks.0.mlp", "moe"}) {
    EXPECT_NE(page.output.find(expected), std::string::npos) << expected << "\n" << page.output;
  }
}

}  // namespace
}  // namespace exfusion
