#include "common/data/device_augment.h"

#include <cstdlib>
#include <vector>

#include "common/util/error.h"

namespace rx::data {

namespace {
torch::Tensor on(const std::vector<int64_t>& v, const torch::Device& d) {
  return torch::tensor(v, torch::kInt64).to(d);
}
}  // namespace

DeviceAugmenter::DeviceAugmenter(const Augmenter& a, const torch::Device& device)
    : options_(a.o_),
      in_{a.in_c_, a.in_h_, a.in_w_},
      out_{a.out_c_, a.out_h_, a.out_w_},
      canvas_h_(a.ph_),
      canvas_w_(a.pw_),
      off_y_(a.off_y_),
      off_x_(a.off_x_),
      device_(device) {
  lut_ = torch::tensor(a.lut_, torch::kFloat32).to(device);
  channel_base_ = torch::arange(int64_t{out_[0]}, torch::kInt64).mul(256).to(device);
  if (options_.resize > 0) {
    const auto taps = [&](const std::vector<Augmenter::Tap>& t, torch::Tensor& i0, torch::Tensor& i1,
                          torch::Tensor& w, std::vector<int64_t> shape) {
      std::vector<int64_t> a0, a1;
      std::vector<float> w1;
      for (const auto& tap : t) {
        a0.push_back(tap.i0);
        a1.push_back(tap.i1);
        w1.push_back(tap.w1);
      }
      i0 = on(a0, device);
      i1 = on(a1, device);
      w = torch::tensor(w1, torch::kFloat32).view(shape).to(device);
    };
    taps(a.taps_x_, tx0_, tx1_, wx_, {1, 1, out_[2], 1});
    taps(a.taps_y_, ty0_, ty1_, wy_, {1, out_[1], 1, 1});
  }
}

torch::Tensor DeviceAugmenter::apply(const torch::Tensor& pixels, const torch::Tensor& transforms,
                                     bool channels_last) const {
  RX_CHECK(pixels.dim() == 4 && pixels.scalar_type() == torch::kUInt8 && pixels.size(1) == in_[0] &&
               pixels.size(2) == in_[1] && pixels.size(3) == in_[2],
           "device augmentation: pixels " << pixels.sizes() << " " << pixels.scalar_type()
                                          << ", expected uint8 [B, " << in_[0] << ", " << in_[1] << ", "
                                          << in_[2] << "]");
  const int64_t n = pixels.size(0);
  RX_CHECK(transforms.dim() == 2 && transforms.size(0) == n && transforms.size(1) == kTransformFields,
           "device augmentation: transforms " << transforms.sizes() << " for " << n << " samples");
  RX_CHECK(pixels.device().type() == device_.type() && transforms.device().type() == device_.type(),
           "device augmentation: inputs on " << pixels.device() << " and " << transforms.device()
                                             << ", tables on " << device_);
  const auto t = transforms.to(torch::kInt64);
  const int64_t pad = options_.crop_padding, ch = canvas_h_, cw = canvas_w_;
  const auto ints = torch::TensorOptions().dtype(torch::kInt64).device(device_);

  // Crop, flip, pad_to and the crop's zero padding as one gather from a zero-padded canvas: output
  // (y, x) reads canvas row y + shift_y + pad and column x' + shift_x + pad, x' = flip ? cw-1-x : x
  // (Augmenter::crop_normalise's mapping, moved by the margin).
  const auto canvas = torch::constant_pad_nd(
      pixels, {off_x_ + pad, cw - in_[2] - off_x_ + pad, off_y_ + pad, ch - in_[1] - off_y_ + pad}, 0);
  const auto ys = torch::arange(ch, ints).unsqueeze(0), xs = torch::arange(cw, ints).unsqueeze(0);
  const auto rows = ys + t.select(1, 0).unsqueeze(1) + pad;  // [B, ch]
  const auto flip = t.select(1, 2).unsqueeze(1).to(torch::kBool);
  const auto cols = torch::where(flip, (cw - 1) - xs, xs) + t.select(1, 1).unsqueeze(1) + pad;  // [B, cw]
  const auto batch = torch::arange(n, ints).view({n, 1, 1});
  auto values = canvas.permute({0, 2, 3, 1})
                    .index({batch, rows.view({n, ch, 1}), cols.view({n, 1, cw})})  // [B, ch, cw, C] uint8
                    .to(torch::kInt64);
  if (values.size(3) != out_[0]) values = values.expand({n, ch, cw, out_[0]});  // replicate_channels
  auto x = lut_.take(values + channel_base_);  // normalised through the loader's table

  if (options_.resize > 0) {  // r0 + w * (r1 - r0), horizontally, then vertically
    auto r0 = x.index_select(2, tx0_), r1 = x.index_select(2, tx1_);
    x = r0 + (r1 - r0) * wx_;
    r0 = x.index_select(1, ty0_);
    r1 = x.index_select(1, ty1_);
    x = r0 + (r1 - r0) * wy_;
  }
  if (options_.train && options_.erasing > 0) {  // [Random erasing], after normalisation
    const auto oy = torch::arange(int64_t{out_[1]}, ints).unsqueeze(0);
    const auto ox = torch::arange(int64_t{out_[2]}, ints).unsqueeze(0);
    const auto ey = t.select(1, 3).unsqueeze(1), ex = t.select(1, 4).unsqueeze(1);
    const auto in_y = (oy >= ey) & (oy < ey + t.select(1, 5).unsqueeze(1));  // [B, H']
    const auto in_x = (ox >= ex) & (ox < ex + t.select(1, 6).unsqueeze(1));  // [B, W']
    x = x.masked_fill(in_y.view({n, out_[1], 1, 1}) & in_x.view({n, 1, out_[2], 1}), 0.0);
  }
  auto out =
      torch::empty({n, out_[0], out_[1], out_[2]}, x.options(),
                   channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous);
  out.copy_(x.permute({0, 3, 1, 2}));
  return out;
}

torch::Tensor DeviceAugmenter::images(const Batch& batch, bool channels_last) const {
  RX_CHECK(batch.pixels.defined() && batch.transforms.defined(),
           "device augmentation of a batch the loader already augmented");
  RX_CHECK(batch.transforms.dim() == 2 && batch.transforms.size(1) == kTransformFields &&
               batch.transforms.scalar_type() == torch::kInt32 && batch.transforms.device().is_cpu(),
           "device augmentation: transforms " << batch.transforms.sizes() << " "
                                              << batch.transforms.scalar_type());
  const auto t = batch.transforms.accessor<int32_t, 2>();
  const int pad = options_.crop_padding;
  for (int64_t i = 0; i < t.size(0); ++i) {  // the bounds Augmenter::apply checks per sample
    const int32_t sy = t[i][0], sx = t[i][1], flip = t[i][2], ey = t[i][3], ex = t[i][4], eh = t[i][5],
                  ew = t[i][6];
    RX_CHECK(std::abs(sy) <= pad && std::abs(sx) <= pad && (flip == 0 || flip == 1),
             "device augmentation: sample " << i << " has shift " << sy << "," << sx << " flip " << flip
                                            << " (crop_padding " << pad << ")");
    RX_CHECK(eh == 0 || (eh > 0 && ew > 0 && ey >= 0 && ex >= 0 && ey + eh <= out_[1] && ex + ew <= out_[2]),
             "device augmentation: sample " << i << " erases " << eh << "x" << ew << " at " << ey << "," << ex
                                            << ", outside the " << out_[1] << "x" << out_[2] << " output");
  }
  return apply(batch.pixels.to(device_, /*non_blocking=*/true), batch.transforms.to(device_, true),
               channels_last);
}

}  // namespace rx::data
