// Per-pixel arithmetic of the preprocess op, shared by the CPU and CUDA kernels.
//
// Resampling follows Pillow's ImagingResample (libImaging/Resample.c), which open_clip's PIL transform
// uses: a separable convolution whose filter is widened by the scale factor when downscaling (this is the
// antialiasing), weights normalised to sum to one, bicubic with a = -0.5, bilinear = triangle filter.
// Every float/double operation goes through the rounded helpers of hd.h, so the CUDA build and the CPU
// build compute the same bits (no FMA contraction on either side).
#pragma once

#include <cstdint>

#include "hd.h"

namespace vlmreward {

enum Interpolation : int { kBilinear = 0, kBicubic = 1 };
enum ResizeMode : int { kShortest = 0, kLongest = 1, kSquash = 2 };

VLM_HD double filter_support(int interpolation) { return interpolation == kBicubic ? 2.0 : 1.0; }

VLM_HD double filter_weight(int interpolation, double x) {
  x = x < 0 ? -x : x;
  if (interpolation == kBilinear) return x < 1.0 ? add_rn(1.0, -x) : 0.0;
  // Pillow's bicubic, a = -0.5: ((a + 2) x - (a + 3)) x x + 1 and (((x - 5) x + 8) x - 4) a
  if (x < 1.0) return add_rn(mul_rn(mul_rn(add_rn(mul_rn(1.5, x), -2.5), x), x), 1.0);
  if (x < 2.0) return mul_rn(add_rn(mul_rn(add_rn(mul_rn(add_rn(x, -5.0), x), 8.0), x), -4.0), -0.5);
  return 0.0;
}

// Taps of canvas index j of one axis (Pillow's precompute_coeffs for resized index r = j + offset, resampling
// in_size samples to `resized`): *start = first input index, *count = number of taps (0: a padded index),
// w[0..taps) = normalised weights, zero past *count. resized and offset are 64-bit: "shortest" resizes a
// 1 x 10^7 strip to 224 x 2.24e9 before its centre crop.
VLM_HD void plan_entry(int interpolation, int in_size, int64_t resized, int64_t offset, int taps, int64_t j,
                       int32_t* start, int32_t* count, float* w) {
  for (int t = 0; t < taps; ++t) w[t] = 0.f;
  *start = 0;
  *count = 0;
  const int64_t r = j + offset;
  if (r < 0 || r >= resized) return;  // padding
  if (in_size == resized) {  // no resampling on this axis (Pillow skips the pass): one tap of weight 1
    *start = static_cast<int32_t>(r);
    *count = 1;
    w[0] = 1.f;
    return;
  }
  const double scale = div_rn(static_cast<double>(in_size), static_cast<double>(resized));
  const double filterscale = scale > 1.0 ? scale : 1.0;
  const double support = mul_rn(filter_support(interpolation), filterscale);
  const double center = mul_rn(add_rn(static_cast<double>(r), 0.5), scale);
  int xmin = static_cast<int>(add_rn(add_rn(center, -support), 0.5));
  if (xmin < 0) xmin = 0;
  int xmax = static_cast<int>(add_rn(add_rn(center, support), 0.5));
  if (xmax > in_size) xmax = in_size;
  int n = xmax - xmin;
  if (n > taps) n = taps;  // cannot happen (taps = 2 ceil(support) + 1); keeps the writes in bounds
  double total = 0.0;  // two passes instead of a scratch array: no limit on the filter width
  for (int i = 0; i < n; ++i)
    total = add_rn(total, filter_weight(interpolation, div_rn(add_rn(add_rn(double(i + xmin), -center), 0.5),
                                                              filterscale)));
  for (int i = 0; i < n; ++i) {
    const double k = filter_weight(interpolation, div_rn(add_rn(add_rn(double(i + xmin), -center), 0.5),
                                                         filterscale));
    w[i] = static_cast<float>(total != 0.0 ? div_rn(k, total) : 0.0);
  }
  *start = xmin;
  *count = n;
}

// Pillow stores each pass's result as uint8: clip to [0, 255] and round half up. Reproducing this between
// the passes matters: bicubic overshoot clipped there changes upscaled images by up to 8/255.
VLM_HD float clip_round(float acc) {
  acc = acc < 0.f ? 0.f : (acc > 255.f ? 255.f : acc);
  return static_cast<float>(static_cast<int>(add_rn(acc, 0.5f)));  // == floorf(acc + 0.5f) for acc >= 0
}

// A resampled value in [0, 255] pixel units -> the model's input: uint8 as Pillow, then ToTensor's / 255
// and Normalize's (x - mean) / std folded into one multiply and one add (rounded separately).
VLM_HD float normalise_pixel(float acc, float scale, float shift) {
  return add_rn(mul_rn(clip_round(acc), scale), shift);
}

// One output channel value computed directly in 2-D from the uint8 HWC frame, in Pillow's pass order: the
// first pass's sums are clip-rounded (Pillow's uint8 intermediate), the second pass's are returned
// unrounded. Horizontal first, unless `vertical_first` (Pillow 13 runs the vertical pass first when it
// shrinks and the horizontal one enlarges). The CUDA kernel runs this per pixel; the CPU runs it in
// `_preprocess_pointwise`, so CPU tests exercise the CUDA arithmetic.
VLM_HD float resample_pixel_2d(const uint8_t* frame, int64_t row_stride, int channel, int y0, int ny,
                               const float* wy, int x0, int nx, const float* wx, bool vertical_first) {
  const uint8_t* base = frame + int64_t(y0) * row_stride + 3 * int64_t(x0) + channel;
  float acc = 0.f;
  if (vertical_first) {
    for (int j = 0; j < nx; ++j) {
      float cacc = 0.f;
      for (int i = 0; i < ny; ++i) cacc = add_rn(cacc, mul_rn(wy[i], static_cast<float>(base[i * row_stride + 3 * j])));
      acc = add_rn(acc, mul_rn(wx[j], clip_round(cacc)));
    }
    return acc;
  }
  for (int i = 0; i < ny; ++i) {
    const uint8_t* row = base + i * row_stride;
    float racc = 0.f;
    for (int j = 0; j < nx; ++j) racc = add_rn(racc, mul_rn(wx[j], static_cast<float>(row[3 * j])));
    acc = add_rn(acc, mul_rn(wy[i], clip_round(racc)));
  }
  return acc;
}

}  // namespace vlmreward
