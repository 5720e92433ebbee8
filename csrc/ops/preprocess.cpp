// Argument checks and resampling plans of the preprocess op (host code shared by the CPU and CUDA kernels).
#include "preprocess.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace vlmreward {
namespace {

// Python's round(): half to even (std::nearbyint in the default rounding mode).
int round_half_even(double x) { return static_cast<int>(std::nearbyint(x)); }

AxisPlan plan_axis(int interpolation, int in_size, int resized, int canvas, int offset) {
  AxisPlan p;
  if (in_size == resized) {  // no resampling on this axis (Pillow skips the pass): one tap of weight 1
    p.taps = 1;
    p.start.assign(canvas, 0);
    p.count.assign(canvas, 0);
    p.weights.assign(canvas, 1.f);
    for (int j = 0; j < canvas; ++j) {
      const int r = j + offset;
      if (r >= 0 && r < resized) p.start[j] = r, p.count[j] = 1;
    }
    return p;
  }
  const double filterscale = std::max(1.0, static_cast<double>(in_size) / resized);
  p.taps = static_cast<int>(std::ceil(filter_support(interpolation) * filterscale)) * 2 + 1;
  p.start.assign(canvas, 0);
  p.count.assign(canvas, 0);
  p.weights.assign(static_cast<size_t>(canvas) * p.taps, 0.f);
  for (int j = 0; j < canvas; ++j) {
    const int r = j + offset;
    if (r < 0 || r >= resized) continue;  // padding
    p.count[j] = resample_coeffs(interpolation, in_size, resized, r, &p.start[j], &p.weights[size_t(j) * p.taps]);
  }
  return p;
}

}  // namespace

PreprocessPlan make_preprocess_plan(const at::Tensor& frames, int64_t image_size, at::ArrayRef<double> mean,
                                    at::ArrayRef<double> std, const std::string& resize_mode,
                                    const std::string& interpolation, at::ScalarType dtype) {
  TORCH_CHECK_TYPE(frames.scalar_type() == at::kByte, "preprocess: frames must be uint8 RGB images, got ",
                   frames.scalar_type(), " (convert float images with (x * 255).round().to(torch.uint8))");
  TORCH_CHECK_VALUE(frames.dim() == 4, "preprocess: frames must have shape (B, H, W, 3), got ", frames.sizes());
  TORCH_CHECK_VALUE(frames.size(3) == 3, "preprocess: frames must have 3 (RGB) channels in the last dimension, got ",
                    frames.size(3), " (shape ", frames.sizes(), "); drop alpha with frames[..., :3]");
  TORCH_CHECK_VALUE(frames.size(0) > 0, "preprocess: empty batch (B = 0)");
  TORCH_CHECK_VALUE(frames.size(1) > 0 && frames.size(2) > 0, "preprocess: frames have zero height or width: ",
                    frames.sizes());
  TORCH_CHECK_VALUE(image_size > 0 && image_size <= 4096, "preprocess: image_size must be in [1, 4096], got ",
                    image_size);
  TORCH_CHECK_VALUE(mean.size() == 3 && std.size() == 3, "preprocess: mean and std need 3 values (RGB), got ",
                    mean.size(), " and ", std.size());
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
                   "preprocess: dtype must be float32, float16, bfloat16 or float64, got ", dtype);
  int interp;
  if (interpolation == "bicubic") interp = kBicubic;
  else if (interpolation == "bilinear") interp = kBilinear;
  else TORCH_CHECK_VALUE(false, "preprocess: interpolation must be 'bicubic' or 'bilinear', got '", interpolation, "'");

  PreprocessPlan plan;
  plan.batch = frames.size(0);
  plan.height = frames.size(1);
  plan.width = frames.size(2);
  plan.size = image_size;
  const int H = static_cast<int>(plan.height), W = static_cast<int>(plan.width), S = static_cast<int>(image_size);
  int rh, rw, off_y = 0, off_x = 0;  // resized size; canvas index j reads resized index j + off
  if (resize_mode == "shortest") {  // torchvision Resize(S) (shorter side -> S) + CenterCrop(S)
    const int shorter = std::min(H, W), longer = std::max(H, W);
    const int new_long = static_cast<int>(static_cast<double>(S) * longer / shorter);
    rh = W <= H ? new_long : S;
    rw = W <= H ? S : new_long;
    off_y = round_half_even((rh - S) / 2.0);
    off_x = round_half_even((rw - S) / 2.0);
  } else if (resize_mode == "longest") {  // open_clip ResizeKeepRatio(longest=1) + CenterCropOrPad(fill=0)
    const double ratio = std::max(double(H) / S, double(W) / S);
    rh = std::max(1, round_half_even(H / ratio));
    rw = std::max(1, round_half_even(W / ratio));
    off_y = rh < S ? -((S - rh) / 2) : static_cast<int>((rh - S) / 2.0);
    off_x = rw < S ? -((S - rw) / 2) : static_cast<int>((rw - S) / 2.0);
  } else if (resize_mode == "squash") {  // torchvision Resize((S, S))
    rh = rw = S;
  } else {
    TORCH_CHECK_VALUE(false, "preprocess: resize_mode must be 'shortest', 'longest' or 'squash', got '",
                      resize_mode, "'");
  }
  plan.rows = plan_axis(interp, H, rh, S, off_y);
  plan.cols = plan_axis(interp, W, rw, S, off_x);
  for (int c = 0; c < 3; ++c) {
    TORCH_CHECK_VALUE(std::isfinite(mean[c]) && std::isfinite(std[c]) && std[c] > 0,
                      "preprocess: mean must be finite and std positive, got mean ", mean, ", std ", std);
    plan.scale[c] = static_cast<float>(1.0 / (255.0 * std[c]));
    plan.shift[c] = static_cast<float>(-mean[c] / std[c]);
    plan.fill[c] = plan.shift[c];
  }
  return plan;
}

}  // namespace vlmreward
