// The preprocess op: uint8 frames (B,H,W,3) -> normalised model input (B,3,S,S) in one pass.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "preprocess_math.h"

namespace vlmreward {

// Resampling taps of one axis of the output canvas. Canvas index j reads resized index j + offset; a
// canvas index outside the resized image is padding (count 0). Weights are stored `taps` apart.
struct AxisPlan {
  int taps = 0;
  std::vector<int32_t> start, count;
  std::vector<float> weights;
};

// Everything the kernels need besides the pixels: geometry of open_clip's resize mode, both axes' taps and
// the per-channel affine map of Normalize.
struct PreprocessPlan {
  int64_t batch = 0, height = 0, width = 0, size = 0;
  AxisPlan rows, cols;
  std::array<float, 3> scale{}, shift{};  // value = pixel * scale + shift
  std::array<float, 3> fill{};            // padded canvas value (open_clip pads with pixel value 0)
};

// Validates the arguments (raising c10::Error with a message naming the problem) and builds the plan.
PreprocessPlan make_preprocess_plan(const at::Tensor& frames, int64_t image_size, at::ArrayRef<double> mean,
                                    at::ArrayRef<double> std, const std::string& resize_mode,
                                    const std::string& interpolation, at::ScalarType dtype);

at::Tensor preprocess_cpu(const at::Tensor& frames, int64_t image_size, at::ArrayRef<double> mean,
                          at::ArrayRef<double> std, std::string_view resize_mode,
                          std::string_view interpolation, at::ScalarType dtype);
at::Tensor preprocess_pointwise_cpu(const at::Tensor& frames, int64_t image_size, at::ArrayRef<double> mean,
                                    at::ArrayRef<double> std, std::string_view resize_mode,
                                    std::string_view interpolation, at::ScalarType dtype);
#ifdef VLMREWARD_WITH_CUDA
at::Tensor preprocess_cuda(const at::Tensor& frames, int64_t image_size, at::ArrayRef<double> mean,
                           at::ArrayRef<double> std, std::string_view resize_mode,
                           std::string_view interpolation, at::ScalarType dtype);
#endif

}  // namespace vlmreward
