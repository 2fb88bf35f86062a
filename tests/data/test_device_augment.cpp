// [Device augment] on the CPU: a deferred batch (pixels and transforms) augmented by the
// DeviceAugmenter equals, bit for bit and stride for stride, the batch the loader augments itself,
// over every option the augmentation has (tests/gpu repeats this on a GPU).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "common/data/device_augment.h"
#include "common/data/loader.h"
#include "common/util/error.h"
#include "data_test_util.h"

using namespace rx::data;

namespace {

struct Case {
  std::string name;
  int channels, height, width;
  AugmentOptions options;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }  // gtest's name for a failing case

AugmentOptions cifar() { return {}; }  // crop 4, flip, CIFAR mean/std
AugmentOptions fashion() {             // configs/fashion_mnist_*.json: grey 28 -> 32, three channels
  auto a = AugmentOptions::half_normalised();
  a.pad_to = 32;
  a.replicate_channels = 3;
  return a;
}
AugmentOptions upscale_erasing() {  // the 224 fine-tune's shape of work, smaller: crop, flip, resize, erase
  AugmentOptions a;
  a.resize = 75;
  a.erasing = 0.7f;
  return a;
}
AugmentOptions downscale_odd_pad() {  // 25 -> pad 30 (odd margins) -> 17, grey kept
  auto a = AugmentOptions::half_normalised();
  a.pad_to = 30;
  a.resize = 17;
  a.crop_padding = 3;
  a.erasing = 1;
  return a;
}
AugmentOptions evaluation() {
  auto a = upscale_erasing();
  a.train = false;
  return a;
}

class DeviceAugmentTest : public ::testing::TestWithParam<std::tuple<Case, bool>> {};

TEST_P(DeviceAugmentTest, EqualsTheLoadersAugmentation) {
  const auto& [c, channels_last] = GetParam();
  const Dataset data = test_util::random_dataset(40, c.channels, c.height, c.width, 10, 7);
  std::vector<int64_t> order;
  for (int64_t i = 39; i >= 0; i -= 2) order.push_back(i);
  LoaderOptions o;
  o.batch_size = 8;
  o.num_threads = 0;
  o.channels_last = channels_last;
  o.seed = 3;
  o.epoch = 2;
  Loader host(data, order, c.options, o);
  o.defer_augment = true;
  Loader deferred(data, order, c.options, o);
  const DeviceAugmenter device(deferred.augmenter(), torch::kCPU);
  int batches = 0, flipped = 0, shifted = 0, erased = 0;
  while (auto want = host.next()) {
    auto got = deferred.next();
    ASSERT_TRUE(got.has_value());
    EXPECT_FALSE(got->images.defined());
    EXPECT_EQ(got->pixels.scalar_type(), torch::kUInt8);
    EXPECT_EQ(got->indices, want->indices);
    EXPECT_TRUE(torch::equal(got->labels, want->labels));
    const auto images = device.images(*got, channels_last);
    EXPECT_EQ(images.sizes(), want->images.sizes());
    EXPECT_EQ(images.strides(), want->images.strides()) << "the layout the loader's batches have";
    EXPECT_TRUE(torch::equal(images, want->images))
        << "batch " << batches << ": max |difference| " << (images - want->images).abs().max().item<float>();
    const auto t = got->transforms;
    flipped += t.select(1, 2).sum().item<int>();
    shifted += t.narrow(1, 0, 2).ne(0).any(1).sum().item<int>();
    erased += t.select(1, 5).gt(0).sum().item<int>();
    ++batches;
  }
  EXPECT_EQ(batches, 3);
  EXPECT_FALSE(deferred.next().has_value());
  // The comparison covers the random parts only if they happened.
  if (c.options.train) {
    EXPECT_GT(flipped, 0);
    EXPECT_GT(shifted, 0);
    if (c.options.erasing > 0) {
      EXPECT_GT(erased, 0);
    }
  } else {
    EXPECT_EQ(flipped + shifted + erased, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Options, DeviceAugmentTest,
    ::testing::Combine(::testing::Values(Case{"cifar", 3, 32, 32, cifar()},
                                         Case{"fashion", 1, 28, 28, fashion()},
                                         Case{"upscale_erasing", 3, 32, 32, upscale_erasing()},
                                         Case{"downscale_odd_pad", 1, 25, 25, downscale_odd_pad()},
                                         Case{"evaluation", 3, 32, 32, evaluation()}),
                       ::testing::Bool()),
    [](const auto& info) {
      return std::get<0>(info.param).name + (std::get<1>(info.param) ? "_channels_last" : "_contiguous");
    });

// Inputs that do not fit the tables, and transforms outside the options' bounds, are refused with an
// Error (on a GPU an index out of bounds would be a device-side assert that ends the process).
TEST(DeviceAugment, RefusesMismatchedInputs) {
  const Dataset data = test_util::random_dataset(4, 3, 32, 32, 10, 1);
  Loader loader(data, {0, 1, 2, 3}, cifar(), LoaderOptions{});
  const DeviceAugmenter device(loader.augmenter(), torch::kCPU);
  const auto t = torch::zeros({4, kTransformFields}, torch::kInt32);
  EXPECT_THROW(device.apply(torch::zeros({4, 1, 32, 32}, torch::kUInt8), t, false), rx::Error);
  EXPECT_THROW(device.apply(torch::zeros({4, 3, 32, 32}, torch::kFloat32), t, false), rx::Error);
  EXPECT_THROW(device.apply(torch::zeros({4, 3, 32, 32}, torch::kUInt8), t.narrow(0, 0, 3), false),
               rx::Error);
  const auto b = loader.next();
  ASSERT_TRUE(b.has_value());
  EXPECT_THROW(device.images(*b, false), rx::Error) << "a batch the loader augmented already";
  LoaderOptions deferred_options;
  deferred_options.defer_augment = true;
  Loader deferred(data, {0, 1, 2, 3}, cifar(), deferred_options);
  auto d = deferred.next();
  ASSERT_TRUE(d.has_value());
  EXPECT_NO_THROW(device.images(*d, false));
  for (const auto& [field, value] : std::vector<std::pair<int, int>>{{0, 5}, {1, -5}, {2, 2}, {5, 40}}) {
    auto bad = *d;
    bad.transforms = d->transforms.clone();
    bad.transforms[2][field] = value;  // crop_padding is 4; the output is 32x32
    if (field == 5) bad.transforms[2][6] = 3;
    EXPECT_THROW(device.images(bad, false), rx::Error) << "field " << field << " = " << value;
  }
}

}  // namespace
