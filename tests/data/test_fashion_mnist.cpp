// IDX reader against the real Fashion-MNIST files shipped at /usr/share/datasets/fashion-mnist.
#include <gtest/gtest.h>

#include <array>
#include <filesystem>

#include "common/data/augment.h"
#include "common/data/dataset.h"

using namespace rx::data;

namespace {
const char* kDir = "/usr/share/datasets/fashion-mnist";

void expect_fashion(const Dataset& d, int64_t count) {
  ASSERT_EQ(d.count, count);
  EXPECT_EQ(d.channels, 1);
  EXPECT_EQ(d.height, 28);
  EXPECT_EQ(d.width, 28);
  EXPECT_EQ(d.num_classes, 10);
  ASSERT_EQ(static_cast<int64_t>(d.pixels.size()), count * 28 * 28);
  std::array<int64_t, 10> hist{};
  for (int32_t l : d.labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    ++hist[l];
  }
  for (int k = 0; k < 10; ++k) EXPECT_EQ(hist[k], count / 10) << "class " << k;
  // Real images: not blank, and both black background and bright pixels occur.
  int64_t zeros = 0, bright = 0;
  for (uint8_t p : d.pixels) zeros += p == 0, bright += p > 200;
  EXPECT_GT(zeros, count * 100);
  EXPECT_GT(bright, count * 10);
}
}  // namespace

TEST(FashionMnist, TrainSplit) {
  ASSERT_TRUE(std::filesystem::exists(kDir)) << kDir << " is missing (Debian dataset package not installed?)";
  const Dataset d = read_fashion_mnist(kDir, Split::kTrain);
  expect_fashion(d, 60000);
  EXPECT_NE(d.source.find("train-images-idx3-ubyte.gz"), std::string::npos);
}

TEST(FashionMnist, TestSplitViaLoadDataset) {
  ASSERT_TRUE(std::filesystem::exists(kDir)) << kDir << " is missing";
  const Dataset d = load_dataset("idx", kDir, Split::kTest);
  expect_fashion(d, 10000);
  // Usable by CIFAR models: padded to 32 and replicated to 3 channels.
  AugmentOptions o;
  o.pad_to = 32;
  o.replicate_channels = 3;
  EXPECT_EQ(output_shape(d, o), (std::array<int64_t, 3>{3, 32, 32}));
  o.pad_to = 0;
  o.replicate_channels = 0;
  EXPECT_EQ(output_shape(d, o), (std::array<int64_t, 3>{1, 28, 28}));
}
