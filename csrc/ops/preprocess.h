// The preprocess op: uint8 frames (B,H,W,3) -> normalised model input (B,3,S,S) in one pass.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <string_view>
#include <vector>

#include "preprocess_math.h"

namespace vlmreward {

// One axis of open_clip's resize: in_size samples resized to `resized`, canvas index j reads resized index
// j + offset (outside [0, resized): padding); `taps` bounds the taps of any index.
struct AxisGeometry {
  int in_size = 0;
  int64_t resized = 0, offset = 0;
  int taps = 0;
};

// Everything the kernels need besides the pixels and the taps: the geometry of open_clip's resize mode,
// Pillow's pass order and the per-channel affine map of Normalize.
struct PreprocessGeometry {
  int64_t batch = 0, height = 0, width = 0, size = 0;
  int interpolation = kBicubic;
  bool vertical_first = false;
  AxisGeometry gy, gx;
  std::array<float, 3> scale{}, shift{};  // value = pixel * scale + shift
  std::array<float, 3> fill{};            // padded canvas value (open_clip pads with pixel value 0)
};

// Validates every argument (raising c10::Error subclasses with a message naming the problem) and computes
// the geometry. Reads only metadata and host scalars: no allocation, no device access.
PreprocessGeometry check_preprocess(const at::Tensor& frames, int64_t image_size, at::ArrayRef<double> mean,
                                    at::ArrayRef<double> std, std::string_view resize_mode,
                                    std::string_view interpolation, at::ScalarType dtype);

// Host-side taps of one axis of the canvas (plan_entry for every index), weights stored `taps` apart.
struct AxisPlan {
  int taps = 0;
  std::vector<int32_t> start, count;
  std::vector<float> weights;
};
AxisPlan plan_axis(int interpolation, const AxisGeometry& g, int64_t canvas);

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
