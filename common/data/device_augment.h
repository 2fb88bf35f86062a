#pragma once
// [Device augment] data.augment.on_device: the loader's threads only copy each sample's uint8 pixels
// and draw its SampleTransform (Batch::pixels, Batch::transforms), and the augmentation itself runs
// on the training device after the host-to-device copy, as a few batched tensor operations. Why: at
// 224x224 the bilinear resize costs a CPU core ~0.25 ms per image (issue 11 measured ~3,900 images/s
// per core), so a GPU that trains faster than its share of cores can resize starves; moved to the
// GPU, the loader threads do a memcpy per sample, and the host-to-device copy carries the stored
// uint8 image instead of the float result (3 KB instead of 600 KB for CIFAR resized to 224x224).
//
// [Same as the loader] The result is the one Augmenter::apply gives, bit for bit:
// - the random choices are the loader's own (Augmenter::draw, per (seed, epoch, sample));
// - normalisation reads the same per-channel 256-entry table;
// - crop, flip and both paddings are an integer gather from a zero-padded canvas (a zero pixel is
//   the table's entry 0, as in the loader);
// - the resize takes the same taps and weights and computes r0 + w * (r1 - r0) as three separate
//   elementwise operations, so no fused multiply-add changes a rounding;
// - erasing writes 0 after normalisation.
// tests/data/test_device_augment.cpp checks equality on the CPU; tests/gpu checks it on a GPU.
#include <torch/torch.h>

#include "common/data/augment.h"
#include "common/data/loader.h"

namespace rx::data {

class DeviceAugmenter {
 public:
  // Copies `augmenter`'s tables to `device`.
  DeviceAugmenter(const Augmenter& augmenter, const torch::Device& device);

  // pixels: uint8 [B, C, H, W] (the dataset's geometry), transforms: int32 [B, kTransformFields],
  // both on the device. Returns float [B, C', H', W'] (Augmenter::shape()), channels-last strides when
  // asked, as the loader's batches have.
  torch::Tensor apply(const torch::Tensor& pixels, const torch::Tensor& transforms, bool channels_last) const;
  // A deferred batch's images on the device: its transforms checked against the options (on the host:
  // a bad one is an Error here, not a device-side assert), pixels and transforms copied there
  // (asynchronously from pinned memory), then apply().
  torch::Tensor images(const Batch& batch, bool channels_last) const;

 private:
  AugmentOptions options_;
  std::array<int, 3> in_;   // C, H, W of the dataset
  std::array<int, 3> out_;  // C', H', W'
  int canvas_h_, canvas_w_;
  int off_y_, off_x_;  // where the input sits inside the pad_to canvas
  torch::Device device_;
  torch::Tensor lut_;             // float [C' * 256]
  torch::Tensor channel_base_;    // int64 [C']: c * 256
  torch::Tensor tx0_, tx1_, wx_;  // horizontal taps: [W'] indices, [1, 1, W', 1] weights
  torch::Tensor ty0_, ty1_, wy_;  // vertical taps: [H'] indices, [1, H', 1, 1] weights
};

}  // namespace rx::data
