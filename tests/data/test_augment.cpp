// Properties of the augmentation fast path, checked against naive reference code and LibTorch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

#include "common/data/augment.h"
#include "common/util/error.h"
#include "data_test_util.h"

using namespace rx::data;
using rx::data::test_util::random_dataset;

namespace {

// mean 0, std 1/255: the output equals the raw pixel value, so geometry can be checked exactly.
AugmentOptions raw_options(int padding = 4) {
  AugmentOptions o;
  o.crop_padding = padding;
  o.mean = {0.0f};
  o.std = {1.0f / 255.0f};
  return o;
}

std::vector<float> run(const Augmenter& a, const uint8_t* src, SampleTransform t,
                       bool channels_last = false) {
  // One extra guard element on each side catches writes outside the sample.
  std::vector<float> out(static_cast<size_t>(a.output_size()) + 2, -12345.0f);
  a.apply(src, t, out.data() + 1, channels_last);
  EXPECT_EQ(out.front(), -12345.0f);
  EXPECT_EQ(out.back(), -12345.0f);
  return std::vector<float>(out.begin() + 1, out.end() - 1);
}

std::vector<uint8_t> to_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b;
  for (float x : v) {
    EXPECT_NEAR(x, std::round(x), 1e-3);
    b.push_back(static_cast<uint8_t>(std::lround(x)));
  }
  return b;
}

// Naive reference: value of output (c, y, x) before normalisation, -1 for zero padding.
int reference(const Dataset& d, int i, const AugmentOptions& o, SampleTransform t, int c, int y, int x) {
  const int ph = std::max(d.height, o.pad_to), pw = std::max(d.width, o.pad_to);
  const int cy = y + t.shift_y, cx = (t.flip ? pw - 1 - x : x) + t.shift_x;  // padded-canvas coords
  const int sy = cy - (ph - d.height) / 2, sx = cx - (pw - d.width) / 2;
  if (sy < 0 || sy >= d.height || sx < 0 || sx >= d.width) return -1;
  const int sc = d.channels == 1 ? 0 : c;
  return d.sample(i)[(sc * d.height + sy) * d.width + sx];
}

}  // namespace

TEST(Augment, IdentityTransformCopiesPixels) {
  const Dataset d = random_dataset(1, 3, 32, 32, 10, 1);
  const Augmenter a(d, raw_options());
  EXPECT_EQ(to_bytes(run(a, d.sample(0), {0, 0, false})),
            std::vector<uint8_t>(d.pixels.begin(), d.pixels.end()));
}

TEST(Augment, FlipTwiceIsIdentityAndMirrors) {
  const Dataset d = random_dataset(1, 3, 32, 32, 10, 2);
  const Augmenter a(d, raw_options());
  const auto once = to_bytes(run(a, d.sample(0), {0, 0, true}));
  EXPECT_NE(once, d.pixels);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        ASSERT_EQ(once[(c * 32 + y) * 32 + x], d.pixels[(c * 32 + y) * 32 + 31 - x]);
  EXPECT_EQ(to_bytes(run(a, once.data(), {0, 0, true})), d.pixels);
}

TEST(Augment, CropShiftFlipMatchesReferenceAndKeepsShape) {
  const Dataset d = random_dataset(1, 3, 32, 32, 10, 3);
  const AugmentOptions o = raw_options(4);
  const Augmenter a(d, o);
  EXPECT_EQ(a.shape(), (std::array<int64_t, 3>{3, 32, 32}));
  for (int sy = -4; sy <= 4; ++sy)
    for (int sx = -4; sx <= 4; ++sx)
      for (bool flip : {false, true}) {
        const SampleTransform t{sy, sx, flip};
        const auto out = run(a, d.sample(0), t);
        ASSERT_EQ(static_cast<int64_t>(out.size()), 3 * 32 * 32);
        for (int c = 0; c < 3; ++c)
          for (int y = 0; y < 32; ++y)
            for (int x = 0; x < 32; ++x) {
              const int want = reference(d, 0, o, t, c, y, x);
              ASSERT_NEAR(out[(c * 32 + y) * 32 + x], want < 0 ? 0.0f : static_cast<float>(want), 1e-3)
                  << "shift " << sy << "," << sx << " flip " << flip << " at " << c << "," << y << "," << x;
            }
      }
}

TEST(Augment, CropWithPaddingAndZeroShiftIsIdentity) {
  const Dataset d = random_dataset(1, 3, 32, 32, 10, 4);
  for (int p : {0, 1, 4, 16}) {
    const Augmenter a(d, raw_options(p));
    EXPECT_EQ(to_bytes(run(a, d.sample(0), {0, 0, false})), d.pixels) << "padding " << p;
  }
}

TEST(Augment, NormalisingConstantImageGivesExpectedConstant) {
  Dataset d = random_dataset(1, 3, 8, 8, 10, 5);
  std::fill(d.pixels.begin(), d.pixels.end(), 128);
  const AugmentOptions o;  // CIFAR mean/std
  const Augmenter a(d, o);
  const auto out = run(a, d.sample(0), {0, 0, true});
  for (int c = 0; c < 3; ++c) {
    const float want = (128.0f / 255.0f - o.mean[c]) / o.std[c];
    for (int p = 0; p < 64; ++p) ASSERT_NEAR(out[c * 64 + p], want, 1e-5) << "channel " << c;
  }
  // Zero padding is pixel 0 before normalisation.
  const auto shifted = run(a, d.sample(0), {-2, 0, false});
  EXPECT_NEAR(shifted[0], (0.0f - o.mean[0]) / o.std[0], 1e-5);
  EXPECT_NEAR(shifted[2 * 8], (128.0f / 255.0f - o.mean[0]) / o.std[0], 1e-5);

  const Augmenter half(d, AugmentOptions::half_normalised());
  std::fill(d.pixels.begin(), d.pixels.end(), 255);
  for (float v : run(half, d.sample(0), {0, 0, false})) ASSERT_NEAR(v, 1.0f, 1e-6);
  std::fill(d.pixels.begin(), d.pixels.end(), 0);
  for (float v : run(half, d.sample(0), {0, 0, false})) ASSERT_NEAR(v, -1.0f, 1e-6);
}

TEST(Augment, PadToAndReplicateGreyToThreeChannels) {
  const Dataset d = random_dataset(1, 1, 28, 28, 10, 6);
  AugmentOptions o = raw_options(4);
  o.pad_to = 32;
  o.replicate_channels = 3;
  const Augmenter a(d, o);
  ASSERT_EQ(a.shape(), (std::array<int64_t, 3>{3, 32, 32}));
  for (const SampleTransform t : {SampleTransform{0, 0, false}, SampleTransform{3, -4, true}}) {
    const auto out = run(a, d.sample(0), t);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) {
          const int want = reference(d, 0, o, t, c, y, x);
          ASSERT_NEAR(out[(c * 32 + y) * 32 + x], want < 0 ? 0.0f : static_cast<float>(want), 1e-3);
        }
    if (!t.flip) {
      EXPECT_EQ(out[0], 0.0f);                                     // border
      EXPECT_NEAR(out[2 * 32 + 2], d.pixels[0], 1e-3);             // input (0,0) sits at (2,2)
      EXPECT_NEAR(out[2 * 1024 + 2 * 32 + 2], d.pixels[0], 1e-3);  // in every channel
    }
  }
}

TEST(Augment, ChannelsLastIsPermutedChw) {
  const Dataset d = random_dataset(1, 3, 16, 12, 10, 7);
  const Augmenter a(d, AugmentOptions{});
  for (const SampleTransform t : {SampleTransform{1, -3, true}, SampleTransform{0, 2, false}}) {
    const auto chw = run(a, d.sample(0), t, false);
    const auto hwc = run(a, d.sample(0), t, true);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 16; ++y)
        for (int x = 0; x < 12; ++x) ASSERT_EQ(hwc[(y * 12 + x) * 3 + c], chw[(c * 16 + y) * 12 + x]);
  }
}

TEST(Augment, ResizeMatchesTorchBilinear) {
  const Dataset d = random_dataset(1, 3, 32, 32, 10, 8);
  for (int side : {224, 48, 20}) {
    AugmentOptions o;
    o.resize = side;
    const Augmenter a(d, o);
    ASSERT_EQ(a.shape(), (std::array<int64_t, 3>{3, side, side}));
    const SampleTransform t{2, -1, true};
    const auto out = run(a, d.sample(0), t);
    AugmentOptions no_resize = o;
    no_resize.resize = 0;
    const auto small = run(Augmenter(d, no_resize), d.sample(0), t);
    const auto ref = torch::nn::functional::interpolate(
        torch::from_blob(const_cast<float*>(small.data()), {1, 3, 32, 32}).clone(),
        torch::nn::functional::InterpolateFuncOptions()
            .size(std::vector<int64_t>{side, side})
            .mode(torch::kBilinear)
            .align_corners(false));
    const auto got = torch::from_blob(const_cast<float*>(out.data()), {1, 3, side, side});
    EXPECT_TRUE(torch::allclose(got, ref, 1e-4, 1e-4))
        << "side " << side << " max diff " << (got - ref).abs().max().item<float>();
  }
}

TEST(Augment, DrawTransformDeterministicAndCoversRange) {
  AugmentOptions o;
  o.crop_padding = 2;
  const Augmenter a(3, 32, 32, o);
  int flips = 0;
  std::set<std::pair<int, int>> shifts;
  int changed = 0;
  for (int64_t i = 0; i < 2000; ++i) {
    const SampleTransform t = a.draw(7, 3, i);
    const SampleTransform again = a.draw(7, 3, i);
    ASSERT_EQ(t.shift_y, again.shift_y);
    ASSERT_EQ(t.shift_x, again.shift_x);
    ASSERT_EQ(t.flip, again.flip);
    ASSERT_EQ(t.erase_h, 0) << "erasing is off by default";
    ASSERT_LE(std::abs(t.shift_y), 2);
    ASSERT_LE(std::abs(t.shift_x), 2);
    flips += t.flip;
    shifts.insert({t.shift_y, t.shift_x});
    const SampleTransform other = a.draw(7, 4, i);
    changed += other.shift_y != t.shift_y || other.shift_x != t.shift_x || other.flip != t.flip;
  }
  EXPECT_EQ(shifts.size(), 25u);
  EXPECT_GT(flips, 850);
  EXPECT_LT(flips, 1150);
  EXPECT_GT(changed, 1800) << "a different epoch must give different transforms";
  o.train = false;
  o.erasing = 1;
  const SampleTransform eval = Augmenter(3, 32, 32, o).draw(7, 3, 5);
  EXPECT_EQ(eval.shift_y, 0);
  EXPECT_EQ(eval.shift_x, 0);
  EXPECT_FALSE(eval.flip);
  EXPECT_EQ(eval.erase_h, 0);
}

// [Random erasing] Drawn after crop and flip from the same per-sample generator: turning it on keeps
// every sample's crop and flip; the rectangles follow the configured area and aspect ranges, appear
// with the configured probability, and the erased pixels (only those) become 0 after normalisation.
TEST(Augment, RandomErasingDrawsAndErases) {
  AugmentOptions o = raw_options(2);
  const Augmenter plain(1, 28, 28, o);
  o.erasing = 0.5f;
  o.erasing_scale = {0.05f, 0.3f};
  o.erasing_ratio = {0.5f, 2.0f};
  const Augmenter erasing(1, 28, 28, o);
  const auto sample = random_dataset(1, 1, 28, 28, 10, 3);
  int erased = 0;
  for (int64_t i = 0; i < 4000; ++i) {
    const SampleTransform p = plain.draw(5, 1, i), e = erasing.draw(5, 1, i);
    ASSERT_EQ(p.shift_y, e.shift_y);
    ASSERT_EQ(p.shift_x, e.shift_x);
    ASSERT_EQ(p.flip, e.flip);
    ASSERT_EQ(p.erase_h, 0);
    if (e.erase_h == 0) continue;
    ++erased;
    const double area = static_cast<double>(e.erase_h) * e.erase_w / (28.0 * 28.0);
    // Rounding h and w to whole pixels moves the area a little outside the drawn range.
    ASSERT_GE(area, 0.05 * 0.75) << i;
    ASSERT_LE(area, 0.3 * 1.25) << i;
    const double aspect = static_cast<double>(e.erase_h) / e.erase_w;
    ASSERT_GE(aspect, 0.5 * 0.7) << i;
    ASSERT_LE(aspect, 2.0 / 0.7) << i;
    ASSERT_GE(e.erase_y, 0);
    ASSERT_GE(e.erase_x, 0);
    ASSERT_LT(e.erase_y + e.erase_h, 29);
    ASSERT_LT(e.erase_x + e.erase_w, 29);
    if (i < 50) {  // pixels: the erased rectangle is 0, everything else as without erasing
      for (bool cl : {false, true}) {
        const auto with = run(erasing, sample.sample(0), e, cl);
        const auto without = run(plain, sample.sample(0), p, cl);
        for (int y = 0; y < 28; ++y)
          for (int x = 0; x < 28; ++x) {
            const size_t k = static_cast<size_t>(y * 28 + x);  // one channel: CHW == HWC
            const bool inside =
                y >= e.erase_y && y < e.erase_y + e.erase_h && x >= e.erase_x && x < e.erase_x + e.erase_w;
            ASSERT_EQ(with[k], inside ? 0.0f : without[k]) << "sample " << i << " y " << y << " x " << x;
          }
      }
    }
  }
  EXPECT_GT(erased, 1800) << "probability 0.5 of 4000 draws";
  EXPECT_LT(erased, 2200);
}

TEST(Augment, RandomErasingMultiChannelChannelsLast) {
  AugmentOptions o = raw_options(0);
  o.flip = false;
  o.erasing = 1;
  const Augmenter a(3, 32, 32, o);
  const auto data = random_dataset(1, 3, 32, 32, 10, 9);
  SampleTransform t;
  t.erase_y = 3, t.erase_x = 5, t.erase_h = 4, t.erase_w = 7;
  const auto chw = run(a, data.sample(0), t, false);
  const auto hwc = run(a, data.sample(0), t, true);
  int zeros = 0;
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) {
        const float v = chw[static_cast<size_t>((c * 32 + y) * 32 + x)];
        ASSERT_EQ(v, hwc[static_cast<size_t>((y * 32 + x) * 3 + c)]);
        const bool inside = y >= 3 && y < 7 && x >= 5 && x < 12;
        if (inside) {
          ASSERT_EQ(v, 0.0f);
        }
        zeros += inside;
      }
  EXPECT_EQ(zeros, 3 * 4 * 7);
  t.erase_x = 30;  // sticks out of the image: a bug in the caller, not silently clipped
  EXPECT_THROW(run(a, data.sample(0), t, false), rx::InternalError);
}

TEST(Augment, InvalidOptionsNameTheConfigField) {
  const auto field_of = [](AugmentOptions o, int channels) -> std::string {
    try {
      Augmenter a(channels, 28, 28, o);
    } catch (const rx::ConfigError& e) {
      return e.field();
    }
    return "(no error)";
  };
  AugmentOptions o;
  EXPECT_EQ(field_of(o, 3), "(no error)");
  o.mean = {0.1f, 0.2f};
  EXPECT_EQ(field_of(o, 3), "data.augment.mean");
  o = {};
  o.std = {0.2f, 0.0f, 0.2f};
  EXPECT_EQ(field_of(o, 3), "data.augment.std");
  o = {};
  o.std = {0.5f, 0.5f};
  EXPECT_EQ(field_of(o, 3), "data.augment.std");
  o = {};
  o.crop_padding = 65;
  EXPECT_EQ(field_of(o, 3), "data.augment.crop_padding");
  o.crop_padding = -1;
  EXPECT_EQ(field_of(o, 3), "data.augment.crop_padding");
  o = {};
  o.pad_to = 20;
  EXPECT_EQ(field_of(o, 3), "data.augment.pad_to");
  o = {};
  o.replicate_channels = 3;
  EXPECT_EQ(field_of(o, 2), "data.augment.replicate_channels");
  o = {};
  o.resize = -3;
  EXPECT_EQ(field_of(o, 3), "data.augment.resize");
  o = {};  // 3 means for one grey channel replicated to 3: fine
  o.replicate_channels = 3;
  EXPECT_EQ(field_of(o, 1), "(no error)");
  o.replicate_channels = 0;  // ... but not for a plain grey output
  EXPECT_EQ(field_of(o, 1), "data.augment.mean");
  o = {};
  o.erasing = 1.5f;
  EXPECT_EQ(field_of(o, 3), "data.augment.erasing");
  o = {};
  o.erasing_scale = {0.4f, 0.1f};
  EXPECT_EQ(field_of(o, 3), "data.augment.erasing_scale");
  o = {};
  o.erasing_ratio = {0.0f, 1.0f};
  EXPECT_EQ(field_of(o, 3), "data.augment.erasing_ratio");
}
