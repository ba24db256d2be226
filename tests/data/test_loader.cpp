// Batch loader: every sample once per epoch, deterministic order and augmentation from
// (seed, epoch, batch) whatever the prefetch depth, exact skipping for resumes,
// normalisation, and crops/flips that are what they claim.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <vector>

#include "exfusion/data/loader.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

// Image i holds pixel values 1 + (i + position) % 200: distinct within an image and never 0,
// so a crop's zero padding and its shift can be told apart from the image itself.
ImageDataset numbered_dataset(int64_t n, int64_t side = 6, int64_t channels = 1) {
  const auto positions = torch::arange(channels * side * side).view({1, channels, side, side});
  auto images = (torch::arange(n).view({n, 1, 1, 1}) + positions).remainder(200).add(1);
  return {images.to(torch::kUInt8), torch::arange(n)};
}

std::vector<Batch> run_epoch(BatchLoader& loader, int64_t e, int64_t skip = 0) {
  std::vector<Batch> batches;
  loader.start_epoch(e, skip);
  while (auto batch = loader.next()) batches.push_back(*batch);
  return batches;
}

torch::Tensor scaled(const torch::Tensor& images_u8) { return images_u8.to(torch::kFloat32) / 255; }

TEST(BatchLoader, EverySampleOncePerEpoch) {
  for (bool shuffle : {false, true}) {
    LoaderOptions options;
    options.batch_size = 8;
    options.shuffle = shuffle;
    const auto data = numbered_dataset(30);
    BatchLoader loader(data, options);
    EXPECT_EQ(loader.size(), 30);
    EXPECT_EQ(loader.batches_per_epoch(), 4);
    std::multiset<int64_t> seen;
    std::vector<int64_t> order;
    for (const auto& batch : run_epoch(loader, 0)) {
      EXPECT_EQ(batch.inputs.scalar_type(), torch::kFloat32);
      EXPECT_EQ(batch.targets.scalar_type(), torch::kInt64);
      for (int64_t i = 0; i < batch.targets.size(0); ++i) {
        const auto label = batch.targets[i].item<int64_t>();
        seen.insert(label);
        order.push_back(label);
        EXPECT_TRUE(torch::equal(batch.inputs[i], scaled(data.images[label])));
      }
    }
    EXPECT_EQ(seen.size(), 30u);
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 30u);
    EXPECT_EQ(std::is_sorted(order.begin(), order.end()), !shuffle);
  }
}

TEST(BatchLoader, OrderDependsOnSeedAndEpochOnly) {
  LoaderOptions options;
  options.batch_size = 10;
  options.seed = 5;
  options.augment = true;
  BatchLoader a(numbered_dataset(40), options), b(numbered_dataset(40), options);
  const auto first = run_epoch(a, 1), again = run_epoch(b, 1);
  ASSERT_EQ(first.size(), again.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_TRUE(torch::equal(first[i].targets, again[i].targets));
    EXPECT_TRUE(torch::equal(first[i].inputs, again[i].inputs));
  }
  EXPECT_TRUE(torch::equal(first[0].inputs, run_epoch(a, 1)[0].inputs));
  EXPECT_FALSE(torch::equal(first[0].targets, run_epoch(a, 2)[0].targets));
  options.seed = 6;
  BatchLoader c(numbered_dataset(40), options);
  EXPECT_FALSE(torch::equal(first[0].targets, run_epoch(c, 1)[0].targets));
}

TEST(BatchLoader, SkippingGivesTheTailOfTheEpoch) {
  LoaderOptions options;
  options.batch_size = 7;
  options.augment = true;
  BatchLoader loader(numbered_dataset(50), options);
  const auto full = run_epoch(loader, 3);
  ASSERT_EQ(full.size(), 8u);
  for (size_t skip : {1u, 4u, 7u}) {
    const auto tail = run_epoch(loader, 3, static_cast<int64_t>(skip));
    ASSERT_EQ(tail.size(), full.size() - skip);
    for (size_t i = 0; i < tail.size(); ++i) {
      EXPECT_TRUE(torch::equal(tail[i].inputs, full[i + skip].inputs)) << skip << " " << i;
      EXPECT_TRUE(torch::equal(tail[i].targets, full[i + skip].targets)) << skip << " " << i;
    }
  }
  EXPECT_TRUE(run_epoch(loader, 3, 8).empty());
  EXPECT_TRUE(run_epoch(loader, 3, 20).empty());
}

TEST(BatchLoader, DropLastAndRestartMidEpoch) {
  LoaderOptions options;
  options.batch_size = 8;
  options.shuffle = false;
  options.prefetch = 1;
  options.drop_last = true;
  BatchLoader dropping(numbered_dataset(30), options);
  EXPECT_EQ(dropping.batches_per_epoch(), 3);
  const auto kept = run_epoch(dropping, 0);
  ASSERT_EQ(kept.size(), 3u);
  for (const auto& batch : kept) EXPECT_EQ(batch.targets.size(0), 8);

  options.drop_last = false;
  BatchLoader keeping(numbered_dataset(30), options);
  const auto all = run_epoch(keeping, 0);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all.back().targets.size(0), 6);

  // An epoch abandoned with its worker blocked on a full queue leaves nothing behind.
  keeping.start_epoch(0);
  ASSERT_TRUE(keeping.next().has_value());
  const auto restarted = run_epoch(keeping, 0);
  ASSERT_EQ(restarted.size(), 4u);
  EXPECT_TRUE(torch::equal(restarted[0].targets, all[0].targets));
  keeping.start_epoch(1);  // the destructor must cancel this one
}

TEST(BatchLoader, NormalisesWithPerChannelMeanAndStd) {
  LoaderOptions options;
  options.batch_size = 4;
  options.shuffle = false;
  options.mean = {0.5f, 0.25f, 0.f};
  options.std = {0.25f, 0.5f, 2.f};
  const auto data = numbered_dataset(4, 5, 3);
  BatchLoader loader(data, options);
  const auto batch = run_epoch(loader, 0)[0];
  ASSERT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{4, 3, 5, 5}));
  for (int64_t c = 0; c < 3; ++c) {
    const auto expected =
        (data.images.select(1, c).to(torch::kFloat32) / 255.0 - options.mean[c]) / options.std[c];
    EXPECT_TRUE(torch::allclose(batch.inputs.select(1, c), expected, 1e-6, 1e-6)) << c;
  }
}

TEST(BatchLoader, RejectsOptionsThatDoNotFitTheData) {
  LoaderOptions options;
  options.mean = {0.f, 0.f};
  options.std = {1.f, 1.f};
  EXPECT_THROW(BatchLoader(numbered_dataset(4), options), InputError);
  options = LoaderOptions{};
  options.prefetch = 0;
  EXPECT_THROW(BatchLoader(numbered_dataset(4), options), InputError);
  options = LoaderOptions{};
  options.std = {0.f};
  EXPECT_THROW(BatchLoader(numbered_dataset(4), options), InputError);
}

TEST(BatchLoader, FlipOnlyGivesOriginalsOrMirrors) {
  LoaderOptions options;
  options.batch_size = 32;
  options.shuffle = false;
  options.augment = true;
  options.crop_padding = 0;
  const auto data = numbered_dataset(32);
  BatchLoader loader(data, options);
  const auto images = run_epoch(loader, 0)[0].inputs;
  const auto original = scaled(data.images);
  int flipped = 0;
  for (int64_t i = 0; i < 32; ++i) {
    const bool same = torch::equal(images[i], original[i]);
    const bool mirror = torch::equal(images[i], original[i].flip({2}));
    EXPECT_TRUE(same || mirror) << i;
    flipped += mirror;
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 32);
}

TEST(BatchLoader, CropIsAShiftOfTheZeroPaddedImage) {
  constexpr int64_t kSide = 6, kPad = 2, kCount = 16;
  LoaderOptions options;
  options.batch_size = kCount;
  options.shuffle = false;
  options.augment = true;
  options.horizontal_flip = false;
  options.crop_padding = kPad;
  const auto data = numbered_dataset(kCount, kSide);
  BatchLoader loader(data, options);
  const auto images = run_epoch(loader, 0)[0].inputs;
  int shifted = 0;
  for (int64_t i = 0; i < kCount; ++i) {
    const auto out = (images[i][0] * 255).round().to(torch::kInt64);
    const auto in = data.images[i][0].to(torch::kInt64).contiguous();
    const auto source = in.accessor<int64_t, 2>();
    // Every shift the padding allows, each built pixel by pixel, zero where it leaves the image.
    bool matched = false;
    for (int64_t dy = -kPad; dy <= kPad && !matched; ++dy) {
      for (int64_t dx = -kPad; dx <= kPad && !matched; ++dx) {
        auto manual = torch::zeros({kSide, kSide}, torch::kInt64);
        auto target = manual.accessor<int64_t, 2>();
        for (int64_t y = 0; y < kSide; ++y) {
          for (int64_t x = 0; x < kSide; ++x) {
            const int64_t sy = y + dy, sx = x + dx;
            if (sy >= 0 && sy < kSide && sx >= 0 && sx < kSide) target[y][x] = source[sy][sx];
          }
        }
        matched = torch::equal(out, manual);
        if (matched && (dy != 0 || dx != 0)) ++shifted;
      }
    }
    EXPECT_TRUE(matched) << "sample " << i << ":\n" << out;
  }
  EXPECT_GT(shifted, 0);
}

TEST(BatchLoader, PrefetchDepthDoesNotChangeBatches) {
  LoaderOptions options;
  options.batch_size = 5;
  options.augment = true;
  options.seed = 11;
  options.prefetch = 1;
  BatchLoader shallow(numbered_dataset(40), options);
  options.prefetch = 4;
  BatchLoader deep(numbered_dataset(40), options);
  const auto a = run_epoch(shallow, 2), b = run_epoch(deep, 2);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].inputs, b[i].inputs)) << i;
    EXPECT_TRUE(torch::equal(a[i].targets, b[i].targets)) << i;
  }
}

// Data parallelism: K shards of each global batch, put side by side, are the batch one process
// reads, augmentation included, down to the last (uneven) batch of an epoch.
TEST(BatchLoader, ShardsOfAGlobalBatchAreTheOneProcessBatch) {
  LoaderOptions options;
  options.batch_size = 12;  // the global batch
  options.augment = true;
  options.seed = 3;
  BatchLoader whole(numbered_dataset(40), options);
  const auto reference = run_epoch(whole, 1);
  for (const int64_t shards : {2, 3, 5}) {
    std::vector<std::vector<Batch>> parts;
    for (int64_t index = 0; index < shards; ++index) {
      options.shard = {index, shards};
      BatchLoader part(numbered_dataset(40), options);
      parts.push_back(run_epoch(part, 1));
      ASSERT_EQ(parts.back().size(), reference.size());
    }
    for (size_t b = 0; b < reference.size(); ++b) {
      std::vector<torch::Tensor> inputs, targets;
      for (const auto& part : parts) {
        inputs.push_back(part[b].inputs);
        targets.push_back(part[b].targets);
        // Equal parts where the batch divides; at most one sample apart where it does not.
        EXPECT_LE(std::abs(part[b].size() - reference[b].size() / shards), 1) << b;
      }
      EXPECT_TRUE(torch::equal(torch::cat(inputs), reference[b].inputs)) << shards << " " << b;
      EXPECT_TRUE(torch::equal(torch::cat(targets), reference[b].targets)) << shards << " " << b;
    }
  }
}

}  // namespace
}  // namespace exfusion
