// The rules of `exfusion train`'s options, in the library (train/train_request.h): --resume
// takes no other option, --init takes its config from the upcycled directory and no --config,
// --data comes before every --set, and a plain request builds its config from the layers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "../support/cli.h"
#include "exfusion/data/image_data_config.h"
#include "exfusion/util/error.h"
#include "exfusion/workflows/train_request.h"

namespace exfusion {
namespace {

std::string error_of(const TrainRequest& request) {
  try {
    resolve_train_request(request);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(TrainRequest, ResumeTakesNoOtherOption) {
  TrainRequest request;
  request.resume_dir = "runs/r";
  const auto run = resolve_train_request(request);
  EXPECT_EQ(run.resume, std::filesystem::path("runs/r"));
  for (const auto& other : {TrainRequest{"c.yaml", {}, "", "", "runs/r", "", false},
                            TrainRequest{"", {"train.lr=0.1"}, "", "", "runs/r", "", false},
                            TrainRequest{"", {}, "d", "", "runs/r", "", false},
                            TrainRequest{"", {}, "", "", "runs/r", "out", false},
                            TrainRequest{"", {}, "", "", "runs/r", "", true}}) {
    EXPECT_NE(error_of(other).find("--resume runs/r continues the run"), std::string::npos)
        << error_of(other);
  }
}

TEST(TrainRequest, InitTakesTheUpcycledConfigAndNoConfigFile) {
  const auto dir = testing::fresh_temp_dir("train-request-init");
  EXPECT_NE(error_of({"", {}, "", dir.string(), "", "", false}).find("no such file"),
            std::string::npos);
  std::ofstream(dir / "config.yaml") << "train: {lr: 0.125}\n";
  EXPECT_NE(error_of({"c.yaml", {}, "", dir.string(), "", "", false}).find("rather than --config"),
            std::string::npos);
  const auto run = resolve_train_request({"", {"train.epochs=2"}, "", dir.string(), "", "o", true});
  EXPECT_DOUBLE_EQ(run.config.train.lr, 0.125);
  EXPECT_EQ(run.config.train.epochs, 2);
  EXPECT_EQ(run.out, std::filesystem::path("o"));
  EXPECT_TRUE(run.force);
  testing::remove_tree(dir);
}

TEST(TrainRequest, DataComesBeforeEverySet) {
  EXPECT_EQ(resolve_train_request({"", {}, "mine", "", "", "", false})
                .config.data.as<ImageDataConfig>()
                ->dir,
            "mine");
  EXPECT_EQ(resolve_train_request({"", {"data.dir=theirs"}, "mine", "", "", "", false})
                .config.data.as<ImageDataConfig>()
                ->dir,
            "theirs");
}

}  // namespace
}  // namespace exfusion
