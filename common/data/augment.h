#pragma once
// Per-sample augmentation from uint8 CHW pixels straight into float batch memory.
//
// [Order] pad_to (centered zero pad, e.g. 28 -> 32) -> replicate grey to N channels -> random crop
// with zero padding -> horizontal flip -> bilinear resize -> per-channel normalise -> random erasing.
// This is what torchvision's Pad, Grayscale(3), RandomCrop(padding), RandomHorizontalFlip, Resize,
// ToTensor, Normalize, RandomErasing(value=0) compute. Zero padding means pixel value 0 *before*
// normalisation (-mean/std after); an erased rectangle is 0 *after* it (the per-channel mean).
//
// [Random erasing] Zhong et al. 2017, as torchvision draws it: with probability `erasing`, up to 10
// attempts of an area uniform in erasing_scale (fractions of the output image) and an aspect ratio
// (height / width) log-uniform in erasing_ratio; the first that fits strictly inside the image is
// placed uniformly, and none is erased when no attempt fits.
//
// [Determinism] The random choices for a sample come from Rng(mix_seed({seed, epoch, sample_index})),
// never from a shared generator, so a sample's augmentation does not depend on the rank, the batch
// that holds it, or thread scheduling.
//
// [Fast path] Augmenter::apply is one pass of table look-ups (uint8 -> normalised float, one 256-entry
// table per channel) over shifted/mirrored row ranges; no torch ops. Normalising before the bilinear
// resize is exact because normalisation is affine per channel and bilinear weights sum to 1.
#include <array>
#include <cstdint>
#include <vector>

#include "common/data/dataset.h"

namespace rx::data {

struct AugmentOptions {
  int crop_padding = 4;  // 0 = no random crop
  bool flip = true;
  std::vector<float> mean = {0.4914f, 0.4822f, 0.4465f};  // broadcast if size 1 and channels > 1
  std::vector<float> std = {0.2470f, 0.2435f, 0.2616f};
  int resize = 0;              // 0 = keep; else square output side after crop (bilinear)
  int pad_to = 0;              // 0 = keep; else zero-pad (centered) to pad_to x pad_to before crop (28 -> 32)
  int replicate_channels = 0;  // 0 = keep; 3 = copy a grey channel into 3
  float erasing = 0;           // probability of erasing one rectangle ([Random erasing]); 0 = off
  std::array<float, 2> erasing_scale = {0.02f, 0.4f};  // area, as fractions of the output image
  std::array<float, 2> erasing_ratio = {0.3f, 3.3f};   // aspect ratio h/w, drawn log-uniformly
  bool train = true;  // false: no crop/flip/erasing (evaluation), only pad/replicate/resize/normalise

  // mean = std = {0.5} (maps [0, 1] to [-1, 1]).
  static AugmentOptions half_normalised();
};

// Output geometry after pad/replicate/resize: {C, H, W}. Does not validate.
std::array<int64_t, 3> output_shape(const Dataset& d, const AugmentOptions& o);

// Throws ConfigError naming the job-config field ("data.augment.mean", ".std", ".crop_padding",
// ".resize", ".pad_to", ".replicate_channels", ".erasing", ".erasing_scale", ".erasing_ratio") for
// options that do not fit a C x H x W input.
void validate(const AugmentOptions& o, int channels, int height, int width);

// The random part of one sample's augmentation. shift_y/shift_x in [-crop_padding, crop_padding] are
// the crop window's offset from the centre of the padded image; erase_h x erase_w at (erase_y,
// erase_x) is the erased rectangle of the output image (erase_h == 0: none). {} is the identity.
struct SampleTransform {
  int shift_y = 0;
  int shift_x = 0;
  bool flip = false;
  int erase_y = 0, erase_x = 0, erase_h = 0, erase_w = 0;
};

// A SampleTransform as int32 values in this order (shift_y, shift_x, flip, erase_y, erase_x, erase_h,
// erase_w): one row of a deferred batch's transforms ([Device augment] in device_augment.h).
constexpr int kTransformFields = 7;
void pack(const SampleTransform& t, int32_t* out);

class DeviceAugmenter;

class Augmenter {
 public:
  // Validates (see validate()) and precomputes normalisation tables and resize weights.
  Augmenter(int channels, int height, int width, AugmentOptions o);
  Augmenter(const Dataset& d, AugmentOptions o) : Augmenter(d.channels, d.height, d.width, std::move(o)) {}

  std::array<int64_t, 3> shape() const { return {out_c_, out_h_, out_w_}; }
  // Identity when !options().train; otherwise drawn from Rng(mix_seed({seed, epoch, sample_index})) in
  // a fixed order (crop shift, flip, erasing), each only when enabled, so turning erasing on leaves
  // every sample's crop and flip as they were.
  SampleTransform draw(uint64_t seed, int64_t epoch, int64_t sample_index) const;
  int64_t output_size() const { return int64_t{out_c_} * out_h_ * out_w_; }
  const AugmentOptions& options() const { return o_; }

  // Writes one sample (src: C*H*W uint8, CHW) to dst as shape() floats, CHW order, or HWC when
  // channels_last. Thread-safe (the resize path uses a thread-local scratch buffer).
  void apply(const uint8_t* src, const SampleTransform& t, float* dst, bool channels_last) const;

 private:
  // Crop/flip/normalise at the padded size (ph_ x pw_) into dst with element strides.
  void crop_normalise(const uint8_t* src, const SampleTransform& t, float* dst, int64_t cs, int64_t ys,
                      int64_t xs) const;
  void resize_into(const float* chw, float* dst, int64_t cs, int64_t ys, int64_t xs) const;
  void erase(const SampleTransform& t, float* dst, int64_t cs, int64_t ys, int64_t xs) const;

  friend class DeviceAugmenter;  // the same tables and geometry, on a device
  AugmentOptions o_;
  int in_c_, in_h_, in_w_;
  int ph_, pw_;        // after pad_to (crop keeps this size)
  int off_y_, off_x_;  // where the input sits inside the pad_to canvas
  int out_c_, out_h_, out_w_;
  std::vector<float> lut_;  // out_c_ x 256: normalised value of each uint8 per output channel
  struct Tap {
    int i0, i1;
    float w1;  // value = (1 - w1) * v[i0] + w1 * v[i1]
  };
  std::vector<Tap> taps_y_, taps_x_;  // resize only
};

}  // namespace rx::data
