// Argument checks, geometry and host-side resampling plans of the preprocess op (shared by the CPU and CUDA
// kernels).
#include "preprocess.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace vlmreward {
namespace {

// Python's round(): half to even (std::nearbyint in the default rounding mode).
int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

AxisGeometry axis(int interpolation, int64_t in_size, int64_t resized, int64_t offset, int64_t canvas) {
  AxisGeometry g;
  g.in_size = static_cast<int>(in_size);
  g.resized = resized;
  g.offset = offset;
  if (in_size == resized) {
    g.taps = 1;
    return g;
  }
  const double filterscale = std::max(1.0, static_cast<double>(in_size) / resized);
  const double taps = std::ceil(filter_support(interpolation) * filterscale) * 2 + 1;
  // The plan holds canvas x taps weights; past 2^28 (1 GiB) the downscale factor is absurd, not a frame.
  TORCH_CHECK_VALUE(taps * canvas <= double(1 << 28), "preprocess: downscaling ", in_size, " pixels to ", resized,
                    " needs ", int64_t(taps), " filter taps per output pixel; the frame is too large for image_size ",
                    canvas);
  g.taps = static_cast<int>(taps);
  return g;
}

}  // namespace

PreprocessGeometry check_preprocess(const at::Tensor& frames, int64_t image_size, at::ArrayRef<double> mean,
                                    at::ArrayRef<double> std, std::string_view resize_mode,
                                    std::string_view interpolation, at::ScalarType dtype) {
  TORCH_CHECK_TYPE(frames.scalar_type() == at::kByte, "preprocess: frames must be uint8 RGB images, got ",
                   frames.scalar_type(), " (convert float images with (x * 255).round().to(torch.uint8))");
  TORCH_CHECK_VALUE(frames.dim() == 4, "preprocess: frames must have shape (B, H, W, 3), got ", frames.sizes());
  TORCH_CHECK_VALUE(frames.size(3) == 3, "preprocess: frames must have 3 (RGB) channels in the last dimension, got ",
                    frames.size(3), " (shape ", frames.sizes(), "); drop alpha with frames[..., :3]");
  TORCH_CHECK_VALUE(frames.size(0) > 0, "preprocess: empty batch (B = 0)");
  TORCH_CHECK_VALUE(frames.size(1) > 0 && frames.size(2) > 0, "preprocess: frames have zero height or width: ",
                    frames.sizes());
  constexpr int64_t kMaxSide = std::numeric_limits<int32_t>::max() / 4;
  TORCH_CHECK_VALUE(frames.size(1) <= kMaxSide && frames.size(2) <= kMaxSide, "preprocess: frame sides must be < ",
                    kMaxSide, ", got ", frames.sizes());
  TORCH_CHECK_VALUE(image_size > 0 && image_size <= 4096, "preprocess: image_size must be in [1, 4096], got ",
                    image_size);
  TORCH_CHECK_VALUE(mean.size() == 3 && std.size() == 3, "preprocess: mean and std need 3 values (RGB), got ",
                    mean.size(), " and ", std.size());
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
                   "preprocess: dtype must be float32, float16, bfloat16 or float64, got ", dtype);
  PreprocessGeometry g;
  if (interpolation == "bicubic") g.interpolation = kBicubic;
  else if (interpolation == "bilinear") g.interpolation = kBilinear;
  else TORCH_CHECK_VALUE(false, "preprocess: interpolation must be 'bicubic' or 'bilinear', got '", interpolation, "'");
  for (int c = 0; c < 3; ++c) {
    TORCH_CHECK_VALUE(std::isfinite(mean[c]) && std::isfinite(std[c]) && std[c] > 0,
                      "preprocess: mean must be finite and std positive, got mean ", mean, ", std ", std);
    g.scale[c] = static_cast<float>(1.0 / (255.0 * std[c]));
    g.shift[c] = static_cast<float>(-mean[c] / std[c]);
    g.fill[c] = g.shift[c];
  }

  g.batch = frames.size(0);
  g.height = frames.size(1);
  g.width = frames.size(2);
  g.size = image_size;
  const int64_t H = g.height, W = g.width, S = image_size;
  int64_t rh, rw, off_y = 0, off_x = 0;  // resized size; canvas index j reads resized index j + off
  if (resize_mode == "shortest") {  // torchvision Resize(S) (shorter side -> S) + CenterCrop(S)
    const int64_t shorter = std::min(H, W), longer = std::max(H, W);
    // int(S * long / short) as Python computes it (exact product, one rounding): up to 4096 * 2^29, 64-bit.
    const int64_t new_long = static_cast<int64_t>(static_cast<double>(S * longer) / shorter);
    rh = W <= H ? new_long : S;
    rw = W <= H ? S : new_long;
    off_y = round_half_even((rh - S) / 2.0);
    off_x = round_half_even((rw - S) / 2.0);
  } else if (resize_mode == "longest") {  // open_clip ResizeKeepRatio(longest=1) + CenterCropOrPad(fill=0)
    const double ratio = std::max(double(H) / S, double(W) / S);
    rh = std::max<int64_t>(1, round_half_even(H / ratio));
    rw = std::max<int64_t>(1, round_half_even(W / ratio));
    off_y = rh < S ? -((S - rh) / 2) : static_cast<int64_t>((rh - S) / 2.0);
    off_x = rw < S ? -((S - rw) / 2) : static_cast<int64_t>((rw - S) / 2.0);
  } else if (resize_mode == "squash") {  // torchvision Resize((S, S))
    rh = rw = S;
  } else {
    TORCH_CHECK_VALUE(false, "preprocess: resize_mode must be 'shortest', 'longest' or 'squash', got '",
                      resize_mode, "'");
  }
  g.gy = axis(g.interpolation, H, rh, off_y, S);
  g.gx = axis(g.interpolation, W, rw, off_x, S);
  // Pillow 13's ImagingResample runs the vertical pass first when it shrinks and the horizontal pass
  // enlarges (fewer pixels in its uint8 intermediate); otherwise horizontal first, as every older Pillow.
  g.vertical_first = rh < H && rw > W;
  return g;
}

AxisPlan plan_axis(int interpolation, const AxisGeometry& g, int64_t canvas) {
  AxisPlan p;
  p.taps = g.taps;
  p.start.assign(canvas, 0);
  p.count.assign(canvas, 0);
  p.weights.assign(static_cast<size_t>(canvas) * g.taps, 0.f);
  for (int64_t j = 0; j < canvas; ++j)
    plan_entry(interpolation, g.in_size, g.resized, g.offset, g.taps, j, &p.start[j], &p.count[j],
               &p.weights[size_t(j) * g.taps]);
  return p;
}

}  // namespace vlmreward
