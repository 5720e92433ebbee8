// Per-pixel arithmetic of the preprocess op, shared by the CPU and CUDA kernels.
//
// Resampling follows Pillow's ImagingResample (libImaging/Resample.c), which open_clip's PIL transform
// uses: a separable convolution whose filter is widened by the scale factor when downscaling (this is the
// antialiasing), weights normalised to sum to one, bicubic with a = -0.5, bilinear = triangle filter.
#pragma once

#include <cmath>
#include <cstdint>

#include "hd.h"

namespace vlmreward {

enum Interpolation : int { kBilinear = 0, kBicubic = 1 };
enum ResizeMode : int { kShortest = 0, kLongest = 1, kSquash = 2 };

VLM_HD double filter_support(int interpolation) { return interpolation == kBicubic ? 2.0 : 1.0; }

VLM_HD double filter_weight(int interpolation, double x) {
  x = x < 0 ? -x : x;
  if (interpolation == kBilinear) return x < 1.0 ? 1.0 - x : 0.0;
  constexpr double a = -0.5;  // Pillow's bicubic
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Taps of output sample `out_index` when resampling `in_size` samples to `out_size` (Pillow's
// precompute_coeffs). Writes the normalised weights to w[0..n) and returns n; *start = first input index.
VLM_HD int resample_coeffs(int interpolation, int in_size, int out_size, int out_index, int* start, float* w) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale > 1.0 ? scale : 1.0;
  const double support = filter_support(interpolation) * filterscale;
  const double center = (out_index + 0.5) * scale;
  int xmin = static_cast<int>(center - support + 0.5);
  if (xmin < 0) xmin = 0;
  int xmax = static_cast<int>(center + support + 0.5);
  if (xmax > in_size) xmax = in_size;
  const int n = xmax - xmin;
  double total = 0.0;  // two passes instead of a scratch array: no limit on the filter width
  for (int i = 0; i < n; ++i) total += filter_weight(interpolation, (i + xmin - center + 0.5) / filterscale);
  for (int i = 0; i < n; ++i) {
    const double k = filter_weight(interpolation, (i + xmin - center + 0.5) / filterscale);
    w[i] = static_cast<float>(total != 0.0 ? k / total : 0.0);
  }
  *start = xmin;
  return n;
}

// Pillow stores each pass's result as uint8: clip to [0, 255] and round half up. Reproducing this after
// the horizontal pass matters: bicubic overshoot clipped there changes upscaled images by up to 8/255.
VLM_HD float clip_round(float acc) {
  acc = acc < 0.f ? 0.f : (acc > 255.f ? 255.f : acc);
  return static_cast<float>(static_cast<int>(acc + 0.5f));  // == floorf(acc + 0.5f) for acc >= 0, no libm call
}

// A resampled value in [0, 255] pixel units -> the model's input: uint8 as Pillow, then ToTensor's / 255
// and Normalize's (x - mean) / std folded into one multiply-add.
VLM_HD float normalise_pixel(float acc, float scale, float shift) { return clip_round(acc) * scale + shift; }

// One output channel value computed directly in 2-D from the uint8 HWC frame, in Pillow's order. The CUDA kernel runs this per
// pixel; the CPU runs it in `_preprocess_pointwise`, so CPU tests exercise the CUDA arithmetic.
VLM_HD float resample_pixel_2d(const uint8_t* frame, int64_t row_stride, int channel, int y0, int ny,
                               const float* wy, int x0, int nx, const float* wx) {
  float acc = 0.f;
  for (int i = 0; i < ny; ++i) {
    const uint8_t* row = frame + (y0 + i) * row_stride + 3 * x0 + channel;
    float racc = 0.f;
    for (int j = 0; j < nx; ++j) racc += wx[j] * static_cast<float>(row[3 * j]);
    acc += wy[i] * clip_round(racc);  // Pillow: horizontal pass first, stored as uint8
  }
  return acc;
}

}  // namespace vlmreward
