#include "common/data/augment.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/util/error.h"
#include "common/util/rng.h"

namespace rx::data {
namespace {

constexpr int kMaxSide = 4096;
constexpr int kMaxPadding = 64;
constexpr int kMaxChannels = 16;

std::string str(int64_t v) { return std::to_string(v); }

int out_channels(int c, const AugmentOptions& o) {
  return o.replicate_channels > 0 ? o.replicate_channels : c;
}

// One output row: dst[x * xs] = lut[src[sx]] with sx = base + dir * x, and the padding value where sx
// falls outside [0, w). dir is +1 (no flip) or -1 (flip).
template <int kDir>
inline void map_row(const uint8_t* src_row, int w, int out_w, int base, const float* lut, float* dst,
                    int64_t xs) {
  // Valid x: 0 <= base + kDir * x < w.
  int lo, hi;  // [lo, hi)
  if (kDir > 0) {
    lo = std::max(0, -base);
    hi = std::min(out_w, w - base);
  } else {
    lo = std::max(0, base - w + 1);
    hi = std::min(out_w, base + 1);
  }
  if (hi < lo) hi = lo;
  const float pad = lut[0];
  int x = 0;
  for (; x < lo; ++x) dst[x * xs] = pad;
  const uint8_t* s = src_row + base + kDir * lo;
  if (xs == 1) {
    float* d = dst + lo;
    for (int i = 0, n = hi - lo; i < n; ++i) d[i] = lut[s[kDir * i]];
  } else {
    for (int i = 0, n = hi - lo; i < n; ++i) dst[(lo + i) * xs] = lut[s[kDir * i]];
  }
  for (x = hi; x < out_w; ++x) dst[x * xs] = pad;
}

}  // namespace

AugmentOptions AugmentOptions::half_normalised() {
  AugmentOptions o;
  o.mean = {0.5f};
  o.std = {0.5f};
  return o;
}

std::array<int64_t, 3> output_shape(const Dataset& d, const AugmentOptions& o) {
  const int c = out_channels(d.channels, o);
  if (o.resize > 0) return {c, o.resize, o.resize};
  return {c, std::max(d.height, o.pad_to), std::max(d.width, o.pad_to)};
}

void validate(const AugmentOptions& o, int channels, int height, int width) {
  RX_CHECK(channels > 0 && height > 0 && width > 0,
           "empty input geometry " << channels << "x" << height << "x" << width);
  if (o.replicate_channels < 0 || o.replicate_channels > kMaxChannels)
    throw ConfigError("data.augment.replicate_channels",
                      "must be in [0, " + str(kMaxChannels) + "], got " + str(o.replicate_channels));
  if (o.replicate_channels > 0 && channels != 1 && o.replicate_channels != channels)
    throw ConfigError(
        "data.augment.replicate_channels",
        "can only replicate a single-channel dataset, this one has " + str(channels) + " channels");
  if (o.pad_to < 0 || o.pad_to > kMaxSide)
    throw ConfigError("data.augment.pad_to", "must be in [0, " + str(kMaxSide) + "], got " + str(o.pad_to));
  if (o.pad_to > 0 && (o.pad_to < height || o.pad_to < width))
    throw ConfigError("data.augment.pad_to", "must be >= the image size " + str(height) + "x" + str(width) +
                                                 ", got " + str(o.pad_to));
  if (o.crop_padding < 0 || o.crop_padding > kMaxPadding)
    throw ConfigError("data.augment.crop_padding",
                      "must be in [0, " + str(kMaxPadding) + "], got " + str(o.crop_padding));
  if (o.resize < 0 || o.resize > kMaxSide)
    throw ConfigError("data.augment.resize", "must be in [0, " + str(kMaxSide) + "], got " + str(o.resize));
  const int c = out_channels(channels, o);
  const auto check_size = [&](const std::vector<float>& v, const char* field) {
    if (v.size() != 1 && v.size() != static_cast<size_t>(c))
      throw ConfigError(field, "needs 1 or " + str(c) + " values (output channels), got " + str(v.size()));
    for (float x : v)
      if (!std::isfinite(x)) throw ConfigError(field, "values must be finite");
  };
  check_size(o.mean, "data.augment.mean");
  check_size(o.std, "data.augment.std");
  for (float s : o.std)
    if (!(s > 0)) throw ConfigError("data.augment.std", "values must be > 0, got " + std::to_string(s));
  if (!(o.erasing >= 0 && o.erasing <= 1))
    throw ConfigError("data.augment.erasing", "is a probability, must be in [0, 1]");
  const auto [s0, s1] = o.erasing_scale;
  if (!(s0 > 0 && s0 <= s1 && s1 <= 1))
    throw ConfigError("data.augment.erasing_scale", "must be [min, max] with 0 < min <= max <= 1");
  const auto [r0, r1] = o.erasing_ratio;
  if (!(r0 > 0 && r0 <= r1 && std::isfinite(r1)))
    throw ConfigError("data.augment.erasing_ratio", "must be [min, max] with 0 < min <= max");
}

Augmenter::Augmenter(int channels, int height, int width, AugmentOptions o) : o_(std::move(o)) {
  validate(o_, channels, height, width);
  in_c_ = channels;
  in_h_ = height;
  in_w_ = width;
  ph_ = std::max(height, o_.pad_to);
  pw_ = std::max(width, o_.pad_to);
  off_y_ = (ph_ - height) / 2;
  off_x_ = (pw_ - width) / 2;
  out_c_ = out_channels(channels, o_);
  out_h_ = o_.resize > 0 ? o_.resize : ph_;
  out_w_ = o_.resize > 0 ? o_.resize : pw_;

  lut_.resize(static_cast<size_t>(out_c_) * 256);
  for (int c = 0; c < out_c_; ++c) {
    const double mean = o_.mean.size() == 1 ? o_.mean[0] : o_.mean[c];
    const double sd = o_.std.size() == 1 ? o_.std[0] : o_.std[c];
    for (int v = 0; v < 256; ++v) lut_[c * 256 + v] = static_cast<float>((v / 255.0 - mean) / sd);
  }

  // Bilinear, align_corners = false (torch.nn.functional.interpolate / torchvision Resize without
  // antialiasing): source coordinate (i + 0.5) * in / out - 0.5, clamped at the edges.
  const auto make_taps = [](int in, int out) {
    std::vector<Tap> taps(static_cast<size_t>(out));
    const double scale = static_cast<double>(in) / out;
    for (int i = 0; i < out; ++i) {
      const double s = std::max(0.0, (i + 0.5) * scale - 0.5);
      const int i0 = std::min(static_cast<int>(s), in - 1);
      taps[i] = {i0, std::min(i0 + 1, in - 1), static_cast<float>(s - i0)};
    }
    return taps;
  };
  if (o_.resize > 0) {
    taps_y_ = make_taps(ph_, out_h_);
    taps_x_ = make_taps(pw_, out_w_);
  }
}

void pack(const SampleTransform& t, int32_t* out) {
  const int32_t v[kTransformFields] = {t.shift_y, t.shift_x, t.flip ? 1 : 0, t.erase_y,
                                       t.erase_x, t.erase_h, t.erase_w};
  std::copy(v, v + kTransformFields, out);
}

SampleTransform Augmenter::draw(uint64_t seed, int64_t epoch, int64_t sample_index) const {
  SampleTransform t;
  if (!o_.train) return t;
  Rng rng(mix_seed({seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(sample_index)}));
  if (o_.crop_padding > 0) {
    const uint64_t span = 2 * static_cast<uint64_t>(o_.crop_padding) + 1;
    t.shift_y = static_cast<int>(rng.below(span)) - o_.crop_padding;
    t.shift_x = static_cast<int>(rng.below(span)) - o_.crop_padding;
  }
  if (o_.flip) t.flip = rng.coin();
  if (o_.erasing > 0 && rng.uniform() < o_.erasing) {  // [Random erasing]
    const double area = static_cast<double>(out_h_) * out_w_;
    const double log_r0 = std::log(o_.erasing_ratio[0]), log_r1 = std::log(o_.erasing_ratio[1]);
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target =
          area * (o_.erasing_scale[0] + (o_.erasing_scale[1] - o_.erasing_scale[0]) * rng.uniform());
      const double aspect = std::exp(log_r0 + (log_r1 - log_r0) * rng.uniform());
      const int h = static_cast<int>(std::lround(std::sqrt(target * aspect)));
      const int w = static_cast<int>(std::lround(std::sqrt(target / aspect)));
      if (h < 1 || w < 1 || h >= out_h_ || w >= out_w_) continue;
      t.erase_y = static_cast<int>(rng.below(static_cast<uint64_t>(out_h_ - h + 1)));
      t.erase_x = static_cast<int>(rng.below(static_cast<uint64_t>(out_w_ - w + 1)));
      t.erase_h = h;
      t.erase_w = w;
      break;
    }
  }
  return t;
}

void Augmenter::crop_normalise(const uint8_t* src, const SampleTransform& t, float* dst, int64_t cs,
                               int64_t ys, int64_t xs) const {
  const int64_t plane = int64_t{in_h_} * in_w_;
  // Output (y, x) reads padded-canvas pixel (y + shift_y, x' + shift_x) with x' = flip ? pw-1-x : x,
  // i.e. input pixel (y + shift_y - off_y, x' + shift_x - off_x).
  const int base = t.flip ? pw_ - 1 + t.shift_x - off_x_ : t.shift_x - off_x_;
  for (int c = 0; c < out_c_; ++c) {
    const uint8_t* sp = src + (in_c_ == 1 ? 0 : c) * plane;
    const float* lut = lut_.data() + c * 256;
    for (int y = 0; y < ph_; ++y) {
      float* d = dst + c * cs + y * ys;
      const int sy = y + t.shift_y - off_y_;
      if (sy < 0 || sy >= in_h_) {
        for (int x = 0; x < pw_; ++x) d[x * xs] = lut[0];
      } else if (t.flip) {
        map_row<-1>(sp + int64_t{sy} * in_w_, in_w_, pw_, base, lut, d, xs);
      } else {
        map_row<1>(sp + int64_t{sy} * in_w_, in_w_, pw_, base, lut, d, xs);
      }
    }
  }
}

void Augmenter::resize_into(const float* chw, float* dst, int64_t cs, int64_t ys, int64_t xs) const {
  // Separable: resize each of the ph_ input rows horizontally once (ph_ x out_w_), then blend row
  // pairs vertically; the second pass is a contiguous, vectorisable loop.
  thread_local std::vector<float> wide;
  wide.resize(static_cast<size_t>(ph_) * out_w_);
  for (int c = 0; c < out_c_; ++c) {
    const float* plane = chw + int64_t{c} * ph_ * pw_;
    for (int y = 0; y < ph_; ++y) {
      const float* r = plane + int64_t{y} * pw_;
      float* w = wide.data() + int64_t{y} * out_w_;
      for (int x = 0; x < out_w_; ++x) {
        const Tap tx = taps_x_[x];
        w[x] = r[tx.i0] + tx.w1 * (r[tx.i1] - r[tx.i0]);
      }
    }
    for (int y = 0; y < out_h_; ++y) {
      const Tap ty = taps_y_[y];
      const float* r0 = wide.data() + int64_t{ty.i0} * out_w_;
      const float* r1 = wide.data() + int64_t{ty.i1} * out_w_;
      float* d = dst + c * cs + y * ys;
      if (xs == 1) {
        for (int x = 0; x < out_w_; ++x) d[x] = r0[x] + ty.w1 * (r1[x] - r0[x]);
      } else {
        for (int x = 0; x < out_w_; ++x) d[x * xs] = r0[x] + ty.w1 * (r1[x] - r0[x]);
      }
    }
  }
}

void Augmenter::erase(const SampleTransform& t, float* dst, int64_t cs, int64_t ys, int64_t xs) const {
  for (int c = 0; c < out_c_; ++c)
    for (int y = t.erase_y; y < t.erase_y + t.erase_h; ++y) {
      float* d = dst + c * cs + y * ys;
      for (int x = t.erase_x; x < t.erase_x + t.erase_w; ++x) d[x * xs] = 0.0f;
    }
}

void Augmenter::apply(const uint8_t* src, const SampleTransform& t, float* dst, bool channels_last) const {
  RX_CHECK(std::abs(t.shift_y) <= o_.crop_padding && std::abs(t.shift_x) <= o_.crop_padding,
           "shift " << t.shift_y << "," << t.shift_x << " exceeds crop_padding " << o_.crop_padding);
  RX_CHECK(t.erase_h == 0 || (t.erase_h > 0 && t.erase_w > 0 && t.erase_y >= 0 && t.erase_x >= 0 &&
                              t.erase_y + t.erase_h <= out_h_ && t.erase_x + t.erase_w <= out_w_),
           "erased rectangle " << t.erase_h << "x" << t.erase_w << " at " << t.erase_y << "," << t.erase_x
                               << " is outside the " << out_h_ << "x" << out_w_ << " output");
  const int64_t oc = out_c_, oh = out_h_, ow = out_w_;
  const int64_t cs = channels_last ? 1 : oh * ow, ys = channels_last ? ow * oc : ow,
                xs = channels_last ? oc : 1;
  if (o_.resize == 0) {
    crop_normalise(src, t, dst, cs, ys, xs);
  } else {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(out_c_) * ph_ * pw_);
    crop_normalise(src, t, scratch.data(), int64_t{ph_} * pw_, pw_, 1);
    resize_into(scratch.data(), dst, cs, ys, xs);
  }
  if (t.erase_h > 0) erase(t, dst, cs, ys, xs);
}

}  // namespace rx::data
