// The worker-pool image loader: the same batches whatever the worker count, every sample once
// per epoch (or repeated as asked), exact skipping for resumes, shards that add up to one
// process's batch, bad files named or skipped and counted, and the decoder's refusals.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <unistd.h>

#include "../support/batches.h"
#include "exfusion/data/image_decode.h"
#include "exfusion/data/image_folder.h"
#include "exfusion/data/image_loader.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

// 12×12 RGB images whose pixels encode their index, so batches can be told apart.
ImageDataset dataset(int64_t n) {
  auto images =
      (torch::arange(n).view({n, 1, 1, 1}) * 7 + torch::arange(3 * 12 * 12).view({1, 3, 12, 12}))
          .remainder(256)
          .to(torch::kUInt8);
  return {images, torch::arange(n).remainder(5)};
}

// A source whose samples listed in `bad` cannot be read, like a damaged file.
class FlakySource : public ImageSource {
 public:
  FlakySource(ImageDataset data, std::set<int64_t> bad)
      : inner_(std::move(data)), bad_(std::move(bad)) {}
  int64_t size() const override { return inner_.size(); }
  int64_t label(int64_t index) const override { return inner_.label(index); }
  Image load(int64_t index) const override {
    if (bad_.count(index)) throw InputError("image" + std::to_string(index) + ".jpg: damaged");
    return inner_.load(index);
  }

 private:
  TensorImageSource inner_;
  std::set<int64_t> bad_;
};

ImageLoaderOptions deit_like(int64_t workers) {
  ImageLoaderOptions o;
  o.batch_size = 8;
  o.seed = 11;
  o.workers = workers;
  o.pipeline.train = true;
  o.pipeline.size = 8;
  o.pipeline.channels = 3;
  o.pipeline.random_resized_crop = true;
  o.pipeline.horizontal_flip = true;
  o.pipeline.rand_augment = RandAugmentOptions{};
  o.pipeline.random_erasing = 0.25;
  o.pipeline.mean = {0.5f, 0.5f, 0.5f};
  o.pipeline.std = {0.25f, 0.25f, 0.25f};
  o.mixing.mixup_alpha = 0.8;
  o.mixing.cutmix_alpha = 1.0;
  o.classes = 5;
  return o;
}

std::vector<Batch> epoch(ImageLoader& loader, int64_t e, int64_t skip = 0) {
  std::vector<Batch> batches;
  loader.start_epoch(e, skip);
  while (auto batch = loader.next()) batches.push_back(*batch);
  return batches;
}

using testing::expect_same_batches;

TEST(ImageLoader, GivesTheSameBatchesWithOneAndFourWorkers) {
  const auto source = std::make_shared<TensorImageSource>(dataset(37));
  ImageLoader one(source, deit_like(1)), four(source, deit_like(4));
  const auto a = epoch(one, 2), b = epoch(four, 2);
  ASSERT_EQ(a.size(), 5u);  // 37 samples, batch 8, no drop_last
  expect_same_batches(a, b);
  EXPECT_EQ(a[0].inputs.sizes(), (std::vector<int64_t>{8, 3, 8, 8}));
  EXPECT_EQ(a[0].targets.sizes(), (std::vector<int64_t>{8, 5}));     // soft targets
  EXPECT_FALSE(torch::equal(a[0].inputs, epoch(one, 3)[0].inputs));  // another epoch, other draws
  // A resumed epoch starts at its batch 3 with the batches the whole epoch had there.
  const auto resumed = epoch(four, 2, 3);
  ASSERT_EQ(resumed.size(), 2u);
  EXPECT_TRUE(torch::equal(resumed[0].inputs, a[3].inputs));
}

TEST(ImageLoader, ReadsEverySampleOnceOrRepeatedAsAsked) {
  auto options = deit_like(3);
  options.mixing = {};
  options.pipeline = ImagePipelineOptions{};
  options.pipeline.size = 12;
  options.pipeline.mean = {0, 0, 0};
  options.pipeline.std = {1, 1, 1};
  const auto source = std::make_shared<TensorImageSource>(dataset(30));
  ImageLoader loader(source, options);
  auto order = loader.epoch_order(0);
  EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 30u);
  options.repeats = 3;
  ImageLoader repeated(source, options);
  order = repeated.epoch_order(0);
  ASSERT_EQ(order.size(), 30u);  // the epoch keeps its length: 10 images, 3 times each
  EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 10u);
  for (size_t i = 0; i < order.size(); i += 3) {
    EXPECT_EQ(order[i], order[i + 1]);
    EXPECT_EQ(order[i], order[i + 2]);
  }
  // Without augmentation the pixels are the source's: sample order[0] at row 0, x / 255.
  const auto batches = epoch(loader, 0);
  const auto first = loader.epoch_order(0)[0];
  const auto expected = dataset(30).images[first].to(torch::kFloat32) / 255.0;
  EXPECT_TRUE(torch::allclose(batches[0].inputs[0], expected, 0, 1e-6));
  EXPECT_EQ(batches[0].targets[0].item<int64_t>(), first % 5);
}

TEST(ImageLoader, ShardsTogetherAreOneProcesssBatch) {
  auto options = deit_like(2);
  options.mixing = {};  // Mixup pairs within a rank's batch (as timm under DDP)
  const auto source = std::make_shared<TensorImageSource>(dataset(32));
  ImageLoader whole(source, options);
  const auto all = epoch(whole, 1);
  std::vector<std::vector<Batch>> parts;
  for (int64_t rank = 0; rank < 2; ++rank) {
    auto sharded = options;
    sharded.shard = {rank, 2};
    ImageLoader loader(source, sharded);
    parts.push_back(epoch(loader, 1));
  }
  for (size_t b = 0; b < all.size(); ++b) {
    EXPECT_TRUE(torch::equal(torch::cat({parts[0][b].inputs, parts[1][b].inputs}), all[b].inputs));
    EXPECT_TRUE(
        torch::equal(torch::cat({parts[0][b].targets, parts[1][b].targets}), all[b].targets));
  }
}

TEST(ImageLoader, NamesABadFileOrSkipsAndCountsIt) {
  auto options = deit_like(2);
  options.shuffle = false;
  options.mixing = {};
  const auto source = std::make_shared<FlakySource>(dataset(20), std::set<int64_t>{3, 17});
  ImageLoader strict(source, options);
  strict.start_epoch(0);
  try {
    while (strict.next()) {
    }
    FAIL() << "a damaged sample went unnoticed";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("image3.jpg: damaged"), std::string::npos);
  }
  options.skip_bad_images = true;
  ImageLoader lenient(source, options);
  const auto batches = epoch(lenient, 0);
  int64_t samples = 0, skipped = 0;
  for (const auto& batch : batches) {
    samples += batch.size();
    skipped += batch.skipped;
    EXPECT_EQ(batch.inputs.size(0), batch.size());
  }
  EXPECT_EQ(skipped, 2);
  EXPECT_EQ(samples, 18);
}

TEST(ImageDecode, RefusesWhatIsNotAnImageNamingIt) {
  const auto message = [](const std::string& bytes) {
    try {
      decode_image(bytes, "cat/1.jpg");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message("GIF89a....").find("cat/1.jpg: neither a JPEG nor a PNG file"),
            std::string::npos);
  EXPECT_NE(message("").find("cat/1.jpg"), std::string::npos);
  // A JPEG signature and nothing after it, a PNG signature and a cut header.
  const auto jpeg = message(std::string("\xFF\xD8\xFF\xE0\x00\x10JFIF", 10));
  EXPECT_NE(jpeg.find("cat/1.jpg"), std::string::npos);
  EXPECT_EQ(jpeg.find("(no error)"), std::string::npos);
  const auto png = message(std::string("\x89PNG\r\n\x1A\n\x00\x00\x00\x0DIHDR", 16));
  EXPECT_NE(png.find("cat/1.jpg"), std::string::npos);
  EXPECT_EQ(png.find("(no error)"), std::string::npos);
}

TEST(ImageDecode, ConvertsChannelsAsPillowDoes) {
  Image rgba(1, 2, 4);
  rgba.pixels = {255, 0, 0, 10, 10, 200, 30, 255};
  const auto grey = convert_channels(rgba, 1);
  // Pillow's L: (19595 R + 38470 G + 7471 B + 32768) >> 16.
  EXPECT_EQ(grey.pixels[0], (19595 * 255 + 32768) >> 16);
  EXPECT_EQ(grey.pixels[1], (19595 * 10 + 38470 * 200 + 7471 * 30 + 32768) >> 16);
  const auto rgb = convert_channels(rgba, 3);  // alpha dropped, not composited
  EXPECT_EQ(rgb.pixels, (std::vector<uint8_t>{255, 0, 0, 10, 200, 30}));
  const auto back = convert_channels(grey, 3);
  EXPECT_EQ(back.pixels[3], grey.pixels[1]);
  EXPECT_EQ(back.pixels[5], grey.pixels[1]);
}

TEST(ImageFolder, ListsSortedClassesAndNamesWhatIsMissing) {
  namespace fs = std::filesystem;
  const auto root = fs::temp_directory_path() / ("exfusion-folder-" + std::to_string(::getpid()));
  fs::remove_all(root);
  for (const auto* name : {"zebra/b.png", "zebra/a.JPG", "ant/x.jpeg", "ant/notes.txt"}) {
    fs::create_directories((root / name).parent_path());
    std::ofstream(root / name) << "x";
  }
  const auto listing = list_image_folder(root);
  EXPECT_EQ(listing.classes, (std::vector<std::string>{"ant", "zebra"}));
  ASSERT_EQ(listing.files.size(), 3u);  // notes.txt is not an image
  EXPECT_EQ(listing.files[1].filename(), "a.JPG");
  EXPECT_EQ(listing.labels, (std::vector<int64_t>{0, 1, 1}));
  const std::vector<std::string> only_ant{"ant"};
  try {
    list_image_folder(root, &only_ant);
    FAIL() << "a class outside the training split's went unnoticed";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("zebra: a class the training split does not have"),
              std::string::npos);
  }
  fs::create_directories(root / "empty");
  try {
    list_image_folder(root);
    FAIL() << "an empty class folder went unnoticed";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("empty: a class folder without"), std::string::npos);
  }
  fs::remove_all(root);
}

}  // namespace
}  // namespace exfusion
